//! One `ACL SETUSER` rule applied to a user being compiled, with Redis 7.0's semantics
//! (`ACLSetUser`/`ACLSetSelector` in `acl.c`): keywords are case-insensitive, `+@all` is
//! `allcommands`, `~*` is `allkeys`, `&*` is `allchannels`, and a category or a container
//! command sets the bits of its subcommands too.

use super::glob::Glob;
use super::{digest, KeyPattern, User};
use crate::protocol::resp::command::{self, Access, Categories};

/// How a rule is shown in an error, quoted: a password rule only by its kind, and a rule right
/// after one not at all (it may be the rest of a password with a space), so that no secret
/// reaches a log.
pub(super) fn shown(rule: &str, previous: &str) -> String {
    if is_password(previous) {
        return "(redacted: it follows a password, and a password cannot contain spaces)".into();
    }
    match rule.chars().next() {
        Some(kind @ ('>' | '<' | '#' | '!')) => format!("'{kind}(redacted)'"),
        _ => format!("'{rule}'"),
    }
}

fn is_password(rule: &str) -> bool {
    rule.starts_with(['>', '<', '#', '!'])
}

/// Applies `rule` to `user`.
///
/// # Errors
/// What is wrong with the rule, in words close to Redis's.
pub(super) fn apply(user: &mut User, rule: &str) -> Result<(), String> {
    let lower = rule.to_ascii_lowercase();
    match lower.as_str() {
        "on" => user.enabled = true,
        "off" => user.enabled = false,
        "nopass" => {
            user.nopass = true;
            user.passwords.clear();
        }
        "resetpass" => {
            user.nopass = false;
            user.passwords.clear();
        }
        "allkeys" => {
            user.all_keys = true;
            user.keys.clear();
        }
        "resetkeys" => {
            user.all_keys = false;
            user.keys.clear();
        }
        "allchannels" => {
            user.all_channels = true;
            user.channels.clear();
        }
        "resetchannels" => {
            user.all_channels = false;
            user.channels.clear();
        }
        "allcommands" | "+@all" => user.set_all_commands(true),
        "nocommands" | "-@all" => user.set_all_commands(false),
        "reset" => {
            for step in ["resetpass", "resetkeys", "resetchannels", "off", "-@all"] {
                apply(user, step)?;
            }
        }
        "clearselectors" => return Err(SELECTORS.into()),
        _ => return apply_prefixed(user, rule),
    }
    Ok(())
}

const SELECTORS: &str = "selectors are not supported by Keyway";
const UNKNOWN: &str = "unknown command or category name";
const HASH: &str =
    "the password hash must be exactly 64 characters and contain only lowercase hexadecimal characters";

/// A rule with a prefix: `>pass <pass #hash !hash ~key %RW~key &channel +cmd -cmd +@cat -@cat`.
fn apply_prefixed(user: &mut User, rule: &str) -> Result<(), String> {
    let bytes = rule.as_bytes();
    let Some((&op, rest)) = bytes.split_first() else {
        return Err("syntax error".into());
    };
    match op {
        b'>' => {
            add_password(user, digest(rest));
        }
        b'#' => add_password(user, parse_hash(rest)?),
        b'<' => remove_password(user, &digest(rest))?,
        b'!' => remove_password(user, &parse_hash(rest)?)?,
        b'~' => add_key(user, rest, Access::READ_WRITE)?,
        b'%' => {
            let tilde = rest
                .iter()
                .position(|&c| c == b'~')
                .ok_or("syntax error: %R~, %W~ or %RW~ then a pattern")?;
            let (flags, pattern) = rest.split_at(tilde);
            let pattern = pattern.get(1..).unwrap_or_default();
            let mut access = Access::NONE;
            for flag in flags {
                match flag.to_ascii_uppercase() {
                    b'R' => access = access.union(Access::READ),
                    b'W' => access = access.union(Access::WRITE),
                    _ => return Err("syntax error: %R~, %W~ or %RW~ then a pattern".into()),
                }
            }
            if access == Access::NONE || pattern.is_empty() {
                return Err("syntax error: %R~, %W~ or %RW~ then a pattern".into());
            }
            add_key(user, pattern, access)?;
        }
        b'&' => {
            if user.all_channels {
                return Err("adding a pattern after the * pattern (or the 'allchannels' flag) has no effect: use 'resetchannels' first".into());
            }
            if rest == b"*" {
                user.all_channels = true;
                user.channels.clear();
            } else if !user.channels.iter().any(|g| g.source() == rest) {
                user.channels.push(Glob::new(rest));
            }
        }
        b'(' => return Err(SELECTORS.into()),
        b'+' | b'-' => {
            let allow = op == b'+';
            match rest.strip_prefix(b"@") {
                Some(category) => set_category(user, category, allow)?,
                None => set_command(user, rest, allow)?,
            }
        }
        _ => return Err("syntax error".into()),
    }
    Ok(())
}

fn add_password(user: &mut User, hash: [u8; 32]) {
    user.nopass = false;
    if !user.passwords.contains(&hash) {
        user.passwords.push(hash);
    }
}

fn remove_password(user: &mut User, hash: &[u8; 32]) -> Result<(), String> {
    let before = user.passwords.len();
    user.passwords.retain(|stored| stored != hash);
    if user.passwords.len() == before {
        return Err("the password to remove does not exist: it is not one of the user's".into());
    }
    user.nopass = false;
    Ok(())
}

/// 64 lowercase hexadecimal digits, as Redis requires of `#` and `!`.
fn parse_hash(text: &[u8]) -> Result<[u8; 32], String> {
    if text.len() != 64 {
        return Err(HASH.into());
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut hash = [0u8; 32];
    for (byte, pair) in hash.iter_mut().zip(text.chunks_exact(2)) {
        let (Some(high), Some(low)) = (
            pair.first().copied().and_then(digit),
            pair.get(1).copied().and_then(digit),
        ) else {
            return Err(HASH.into());
        };
        *byte = high << 4 | low;
    }
    Ok(hash)
}

fn add_key(user: &mut User, pattern: &[u8], access: Access) -> Result<(), String> {
    if user.all_keys {
        return Err("adding a pattern after the * pattern (or the 'allkeys' flag) has no effect: use 'resetkeys' first".into());
    }
    if pattern == b"*" && access == Access::READ_WRITE {
        user.all_keys = true;
        user.keys.clear();
        return Ok(());
    }
    match user.keys.iter_mut().find(|p| p.glob.source() == pattern) {
        Some(existing) => existing.access = existing.access.union(access),
        None => user.keys.push(KeyPattern {
            glob: Glob::new(pattern),
            access,
        }),
    }
    Ok(())
}

/// `+@cat` / `-@cat`: every command in the category with all its subcommands, then every
/// subcommand in it (Redis's `ACLSetSelectorCommandBitsForCategory`).
fn set_category(user: &mut User, name: &[u8], allow: bool) -> Result<(), String> {
    if name.eq_ignore_ascii_case(b"all") {
        user.set_all_commands(allow);
        return Ok(());
    }
    let category = Categories::named(name).ok_or(UNKNOWN)?;
    for command in command::all() {
        if command.categories.intersects(category) {
            set_container(user, command, allow);
        }
        for (id, sub) in command.subcommands() {
            if sub.categories.intersects(category) {
                user.set_bit(id, allow);
            }
        }
    }
    Ok(())
}

/// A command's bit and its subcommands' (Redis's `ACLChangeSelectorPerm`).
fn set_container(user: &mut User, command: &command::Command, allow: bool) {
    user.set_bit(command.id(), allow);
    for (id, _) in command.subcommands() {
        user.set_bit(id, allow);
    }
}

/// `+cmd`, `-cmd`, `+container|sub`, `-container|sub`.
fn set_command(user: &mut User, name: &[u8], allow: bool) -> Result<(), String> {
    let (name, sub) = match name.iter().position(|&c| c == b'|') {
        Some(bar) => (name.get(..bar).unwrap_or_default(), name.get(bar + 1..)),
        None => (name, None),
    };
    let command = command::lookup(name).ok_or(UNKNOWN)?;
    match sub {
        None => set_container(user, command, allow),
        Some(sub) => {
            if command.subcommands().next().is_none() {
                // Redis 7.0 allows a first argument of a plain command (`+select|0`).
                return Err(
                    "allowing one first argument of a command is not supported by Keyway".into(),
                );
            }
            let (id, _) = command
                .subcommands()
                .find(|(_, s)| s.name().as_bytes().eq_ignore_ascii_case(sub))
                .ok_or(UNKNOWN)?;
            user.set_bit(id, allow);
        }
    }
    Ok(())
}
