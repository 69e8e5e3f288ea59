//! Redis's glob patterns (`stringmatchlen` in `util.c`): `*`, `?`, `[abc]`, `[^a-z]` and `\`
//! escapes, byte for byte as Redis matches key and channel patterns. Compiled once at config
//! load: the common shapes (`*`, `prefix*`, an exact name) match without the general matcher.

/// A compiled pattern.
#[derive(Clone, PartialEq, Eq)]
pub struct Glob {
    source: Box<[u8]>,
    shape: Shape,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// `*`: everything.
    All,
    /// `literal*`: the source without its trailing stars.
    Prefix(usize),
    /// No special character: the source itself.
    Exact,
    /// Anything else: Redis's matcher.
    General,
}

impl std::fmt::Debug for Glob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Glob({:?})", String::from_utf8_lossy(&self.source))
    }
}

impl Glob {
    /// Compiles `pattern`.
    ///
    /// ```
    /// use keyway::acl::glob::Glob;
    /// let glob = Glob::new(b"app:*");
    /// assert!(glob.matches(b"app:1"));
    /// assert!(!glob.matches(b"other"));
    /// assert!(Glob::new(b"h[^e]llo").matches(b"hallo"));
    /// ```
    pub fn new(pattern: &[u8]) -> Glob {
        let special = |c: &u8| matches!(c, b'*' | b'?' | b'[' | b'\\');
        let literal = pattern.iter().take_while(|c| !special(c)).count();
        let shape = if literal == pattern.len() {
            Shape::Exact
        } else if pattern.iter().skip(literal).all(|&c| c == b'*') {
            if literal == 0 {
                Shape::All
            } else {
                Shape::Prefix(literal)
            }
        } else {
            Shape::General
        };
        Glob {
            source: pattern.into(),
            shape,
        }
    }

    /// The pattern as written.
    pub fn source(&self) -> &[u8] {
        &self.source
    }

    /// Whether the pattern matches everything (`*`).
    pub fn is_all(&self) -> bool {
        self.shape == Shape::All
    }

    /// Whether `text` matches, as Redis's `stringmatchlen` (case-sensitive) decides.
    #[inline]
    pub fn matches(&self, text: &[u8]) -> bool {
        match self.shape {
            Shape::All => true,
            Shape::Prefix(n) => self
                .source
                .get(..n)
                .is_some_and(|prefix| text.starts_with(prefix)),
            Shape::Exact => *self.source == *text,
            Shape::General => {
                let mut skip_longer = false;
                string_match(&self.source, text, &mut skip_longer)
            }
        }
    }
}

/// `stringmatchlen_impl`, index for pointer. Redis reads the byte past the end of the
/// pattern (its terminating NUL) in two places; `at` returns 0 there, as C does.
fn string_match(pattern: &[u8], text: &[u8], skip_longer: &mut bool) -> bool {
    let at = |s: &[u8], i: usize| s.get(i).copied().unwrap_or(0);
    let (mut p, mut t) = (0, 0);
    while p < pattern.len() && t < text.len() {
        match at(pattern, p) {
            b'*' => {
                while p + 1 < pattern.len() && at(pattern, p + 1) == b'*' {
                    p += 1;
                }
                if p + 1 == pattern.len() {
                    return true;
                }
                let rest = pattern.get(p + 1..).unwrap_or_default();
                while t < text.len() {
                    if string_match(rest, text.get(t..).unwrap_or_default(), skip_longer) {
                        return true;
                    }
                    if *skip_longer {
                        return false;
                    }
                    t += 1;
                }
                *skip_longer = true;
                return false;
            }
            b'?' => t += 1,
            b'[' => {
                p += 1;
                let not = at(pattern, p) == b'^';
                if not {
                    p += 1;
                }
                let c = at(text, t);
                let mut matched = false;
                loop {
                    let left = pattern.len().saturating_sub(p);
                    if at(pattern, p) == b'\\' && left >= 2 {
                        p += 1;
                        if at(pattern, p) == c {
                            matched = true;
                        }
                    } else if at(pattern, p) == b']' && left > 0 {
                        break;
                    } else if left == 0 {
                        // An unterminated class: Redis steps back onto its last byte.
                        p = p.saturating_sub(1);
                        break;
                    } else if left >= 3 && at(pattern, p + 1) == b'-' {
                        // C's `char` is signed: ranges compare bytes as `i8`.
                        let (mut start, mut end) =
                            (signed(at(pattern, p)), signed(at(pattern, p + 2)));
                        if start > end {
                            std::mem::swap(&mut start, &mut end);
                        }
                        p += 2;
                        if (start..=end).contains(&signed(c)) {
                            matched = true;
                        }
                    } else if at(pattern, p) == c {
                        matched = true;
                    }
                    p += 1;
                }
                if not {
                    matched = !matched;
                }
                if !matched {
                    return false;
                }
                t += 1;
            }
            first => {
                let mut literal = first;
                if first == b'\\' && pattern.len() - p >= 2 {
                    p += 1;
                    literal = at(pattern, p);
                }
                if literal != at(text, t) {
                    return false;
                }
                t += 1;
            }
        }
        p += 1;
        if t == text.len() {
            while at(pattern, p) == b'*' && p < pattern.len() {
                p += 1;
            }
            break;
        }
    }
    p >= pattern.len() && t == text.len()
}

fn signed(byte: u8) -> i8 {
    i8::from_ne_bytes([byte])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A plain backtracking reading of the same rules, without Redis's early exit.
    fn reference(p: &[u8], t: &[u8]) -> bool {
        let Some((&first, rest)) = p.split_first() else {
            return t.is_empty();
        };
        match first {
            b'*' => (0..=t.len()).any(|i| reference(rest, &t[i..])),
            _ if t.is_empty() => false,
            b'?' => reference(rest, &t[1..]),
            b'[' => {
                let (matched, after) = class(rest, t[0]);
                matched && reference(after, &t[1..])
            }
            b'\\' if !rest.is_empty() => rest[0] == t[0] && reference(&rest[1..], &t[1..]),
            c => c == t[0] && reference(rest, &t[1..]),
        }
    }

    /// A class's verdict for `c` and the pattern after it (`p` starts after the `[`).
    fn class(mut p: &[u8], c: u8) -> (bool, &[u8]) {
        let not = p.first() == Some(&b'^');
        if not {
            p = &p[1..];
        }
        let mut matched = false;
        loop {
            match p {
                [b'\\', x, rest @ ..] => {
                    matched |= *x == c;
                    p = rest;
                }
                [b']', rest @ ..] => {
                    p = rest;
                    break;
                }
                [] => break,
                [a, b'-', b, rest @ ..] => {
                    let (lo, hi) = (signed(*a).min(signed(*b)), signed(*a).max(signed(*b)));
                    matched |= (lo..=hi).contains(&signed(c));
                    p = rest;
                }
                [x, rest @ ..] => {
                    matched |= *x == c;
                    p = rest;
                }
            }
        }
        (matched != not, p)
    }

    #[test]
    fn redis_examples() {
        for (pattern, text, expected) in [
            (&b"*"[..], &b""[..], true),
            (b"*", b"anything", true),
            (b"app:*", b"app:", true),
            (b"app:*", b"app", false),
            (b"app:**", b"app:x", true),
            (b"h?llo", b"hello", true),
            (b"h?llo", b"hllo", false),
            (b"h*llo", b"heeeello", true),
            (b"h[ae]llo", b"hallo", true),
            (b"h[ae]llo", b"hillo", false),
            (b"h[^e]llo", b"hallo", true),
            (b"h[^e]llo", b"hello", false),
            (b"h[a-b]llo", b"hbllo", true),
            (b"h[b-a]llo", b"hbllo", true),
            (b"h[a-b]llo", b"hcllo", false),
            (b"a\\*b", b"a*b", true),
            (b"a\\*b", b"axb", false),
            (b"a[\\]]b", b"a]b", true),
            (b"exact", b"exact", true),
            (b"exact", b"exact2", false),
            (b"a[", b"ab", false),
            (b"a[^", b"ab", true),
            (b"*a*b", b"xxaxxb", true),
            (b"*a*b", b"xxaxxc", false),
        ] {
            assert_eq!(
                Glob::new(pattern).matches(text),
                expected,
                "{pattern:?} {text:?}"
            );
        }
    }

    #[test]
    fn shapes_are_found() {
        assert_eq!(Glob::new(b"*").shape, Shape::All);
        assert_eq!(Glob::new(b"**").shape, Shape::All);
        assert_eq!(Glob::new(b"ab*").shape, Shape::Prefix(2));
        assert_eq!(Glob::new(b"ab").shape, Shape::Exact);
        assert_eq!(Glob::new(b"a?*").shape, Shape::General);
        assert_eq!(Glob::new(b"a\\*").shape, Shape::General);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        #[test]
        fn matches_like_the_reference(
            pattern in proptest::collection::vec(prop::sample::select(b"ab*?[]^-\\".to_vec()), 0..8),
            text in proptest::collection::vec(prop::sample::select(b"ab]-^*".to_vec()), 0..8),
        ) {
            prop_assert_eq!(
                Glob::new(&pattern).matches(&text),
                reference(&pattern, &text),
                "{:?} {:?}", String::from_utf8_lossy(&pattern), String::from_utf8_lossy(&text)
            );
        }
    }
}
