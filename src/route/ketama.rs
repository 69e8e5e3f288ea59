//! The ketama continuum, built and searched as nutcracker's `nc_ketama.c` does.

use super::hash::{md5_digest, md5_word};
use super::points::Points;
use super::ShardSpec;

/// Points per live shard of average weight.
const POINTS_PER_SHARD: f32 = 160.0;
/// Points taken from one MD5 digest.
const POINTS_PER_HASH: u32 = 4;
/// nutcracker formats point names into a `char[86]` (`KETAMA_MAX_HOSTLEN`) with `snprintf`.
const MAX_POINT_NAME: usize = 86;

/// nutcracker's continuum: 32-bit [`Points`], a hash belonging to the first point at or after
/// it, wrapping to the first point.
///
/// ```
/// use keyway::route::ketama::Continuum;
/// use keyway::route::ShardSpec;
///
/// let shards = [
///     ShardSpec::new("a", 1),
///     ShardSpec::new("b", 1),
/// ];
/// let continuum = Continuum::new(&shards, &[true, true]);
/// assert_eq!(continuum.len(), 320);
/// assert!(continuum.dispatch(0xdead_beef).is_some_and(|shard| shard < 2));
///
/// let one_live = Continuum::new(&shards, &[false, true]);
/// assert_eq!(one_live.dispatch(0xdead_beef), Some(1));
/// ```
pub type Continuum = Points<u32>;

impl Points<u32> {
    /// Builds the continuum of the live shards (`live[i]`; a missing entry counts as live),
    /// as `ketama_update` does: each live shard gets `floor(share * 40 * nlive) * 4` points,
    /// its share being its weight over the total weight of live shards only.
    // `ketama_update`'s `uint32_t` counts and indexes, as nutcracker computes them.
    #[allow(clippy::cast_possible_truncation)]
    pub fn new(shards: &[ShardSpec], live: &[bool]) -> Continuum {
        let is_live = |index: usize| live.get(index).copied().unwrap_or(true);
        let live_shards = || {
            shards
                .iter()
                .enumerate()
                .filter(move |&(index, _)| is_live(index))
        };
        let nlive = live_shards().count() as u32;
        // `uint32_t total_weight`: wraps like the C sum would.
        let total_weight = live_shards().fold(0u32, |sum, (_, s)| sum.wrapping_add(s.weight));

        let mut points: Vec<(u32, u32)> = Vec::new();
        for (index, shard) in live_shards() {
            let count = point_count(shard.weight, total_weight, nlive);
            points.reserve(count as usize);
            let mut name = Vec::with_capacity(shard.name.len() + 11);
            for group in 0..count / POINTS_PER_HASH {
                name.clear();
                name.extend_from_slice(shard.name.as_bytes());
                name.push(b'-');
                name.extend_from_slice(group.to_string().as_bytes());
                let digest = md5_digest(&snprintf_bytes(&name));
                for word in 0..POINTS_PER_HASH as usize {
                    points.push((md5_word(&digest, word), index as u32));
                }
            }
        }
        // nutcracker uses qsort; glibc's qsort is a stable merge sort for arrays this size, so
        // equal points keep shard order, and the search below finds the lowest shard's first.
        points.sort_by_key(|&(value, _)| value);
        Points::from_sorted(points)
    }
}

/// `ketama_update`'s points for one shard, with its float types: `pct` is a `float`, the
/// product is `float`, the `+ 0.0000000001` is a `double` literal (so the sum is a double,
/// rounded back to float before `floorf`).
// nutcracker's float-to-integer casts are the algorithm.
#[allow(clippy::cast_possible_truncation)]
fn point_count(weight: u32, total_weight: u32, nlive: u32) -> u32 {
    let pct = weight as f32 / total_weight as f32;
    let per_hash = (((pct * POINTS_PER_SHARD / POINTS_PER_HASH as f32 * nlive as f32) as f64
        + 0.000_000_000_1) as f32)
        .floor();
    // `(uint32_t)` of a NaN (total weight 0) is undefined in C; `as` gives 0 points.
    (per_hash * POINTS_PER_HASH as f32) as u32
}

/// The bytes nutcracker hashes for a point name: `snprintf` into `char[86]` truncates to 85
/// bytes plus NUL, but the returned (untruncated) length is what gets hashed. Up to 86 bytes
/// this is exact; beyond, nutcracker reads past its buffer (undefined), and zeros stand in.
fn snprintf_bytes(name: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if name.len() < MAX_POINT_NAME {
        return std::borrow::Cow::Borrowed(name);
    }
    let mut buffer = vec![0u8; name.len()];
    for (dst, src) in buffer.iter_mut().zip(name.iter().take(MAX_POINT_NAME - 1)) {
        *dst = *src;
    }
    std::borrow::Cow::Owned(buffer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::{Distribution, HashFn, ShardMap};

    fn unhex(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&hex[at..at + 2], 16).unwrap())
            .collect()
    }

    fn specs(shards: &[(&str, u32)]) -> Vec<ShardSpec> {
        shards
            .iter()
            .map(|&(name, weight)| ShardSpec::new(name, weight))
            .collect()
    }

    /// Keys routed by `ketama_update` + `ketama_dispatch` compiled with gcc from nc_ketama.c
    /// (glibc qsort), over `cache-a:6379` weight 1, `cache-b:6379` weight 2, `10.0.0.3` weight 3.
    #[rustfmt::skip]
    const KETAMA_KEYS: [&str; 50] = [
        "",
        "757365723a35313735303a6e616d65",
        "30bb1d",
        "757365723a36363531303a6d61696c",
        "757365723a343931343a6e616d65",
        "d6237b2ed91e3f721fcb19711744",
        "757365723a33373935393a78",
        "757365723a31383930373a6e616d65",
        "9d5c3460be31201e69fedaa0eee8b9997f5c7c",
        "757365723a31303732383a63617274",
        "757365723a36383833383a78",
        "e593253cd654af4dfad714",
        "757365723a38373538343a6e616d65",
        "757365723a37333134383a63617274",
        "b3fee9232f8af2211f9ee4",
        "757365723a33373330323a78",
        "757365723a38373634313a63617274",
        "ec",
        "757365723a34363539313a6d61696c",
        "757365723a38303037343a6e616d65",
        "1e6f93427ecbc8fe2955e5cd8e46dc8e",
        "757365723a39323538383a78",
        "757365723a34373032343a78",
        "4d2a5a4d767706f8",
        "757365723a37373231373a6d61696c",
        "757365723a33343433383a63617274",
        "4a",
        "757365723a35343931323a63617274",
        "757365723a37393932393a63617274",
        "1be9c8cbcc",
        "757365723a35313635383a6e616d65",
        "757365723a36333131343a78",
        "6122",
        "757365723a32373336333a78",
        "757365723a32313237333a6e616d65",
        "1a34004d33ba0d246ac04c",
        "757365723a38333135333a63617274",
        "757365723a34353533333a63617274",
        "3e3bf9eef5f79f2b4934af87f5520b69",
        "757365723a36393233393a63617274",
        "757365723a31393231353a6e616d65",
        "982e85bb55b672a872637acd7466fcb60e",
        "757365723a333636313a63617274",
        "757365723a36313839373a63617274",
        "b0e4b2ba297034",
        "757365723a32393733333a78",
        "757365723a32353738323a63617274",
        "f700f5b02b3dc6",
        "757365723a39333235363a6d61696c",
        "757365723a36323635363a6d61696c",
    ];
    /// (hash, live, points, shard of each key in KETAMA_KEYS) from nc_ketama.c compiled with gcc.
    #[rustfmt::skip]
    const KETAMA_VECTORS: [(HashFn, [bool; 3], usize, &str); 9] = [
        (HashFn::Fnv1a_64, [true, true, true], 480, "21012222101122222021112122012121221222211120021212"),
        (HashFn::Fnv1a_64, [true, false, true], 320, "22022222202222222022222022022222222222222220022222"),
        (HashFn::Fnv1a_64, [false, true, true], 320, "21212222121222222122122121122222221222211221121212"),
        (HashFn::Murmur, [true, true, true], 480, "21002020222102112222211112222102001222111221201011"),
        (HashFn::Murmur, [true, false, true], 320, "22002020222202222222222222222002002222222222202022"),
        (HashFn::Murmur, [false, true, true], 320, "21122122222122112122211112222122221221111221212211"),
        (HashFn::Md5, [true, true, true], 480, "21222202221121212101201212220222220212101112210011"),
        (HashFn::Md5, [true, false, true], 320, "22222202222022222202202222220222220222202222220022"),
        (HashFn::Md5, [false, true, true], 320, "21222122221121212121211212222222212212121112212111"),
    ];

    #[test]
    fn matches_nutcracker_continuum_with_unequal_weights_and_ejection() {
        let shards = specs(&[("cache-a:6379", 1), ("cache-b:6379", 2), ("10.0.0.3", 3)]);
        let keys: Vec<Vec<u8>> = KETAMA_KEYS.iter().map(|hex| unhex(hex)).collect();
        for (hash, live, points, expected) in KETAMA_VECTORS {
            let continuum = Continuum::new(&shards, &live);
            assert_eq!(continuum.len(), points, "{hash:?} {live:?}");
            let map = ShardMap::with_live(hash, Distribution::Ketama, None, &shards, &live);
            let got: String = keys
                .iter()
                .map(|key| map.route(key).unwrap().to_string())
                .collect();
            assert_eq!(got, expected, "{hash:?} {live:?}");
        }
    }

    #[test]
    fn point_counts_follow_nutcracker_float_arithmetic() {
        // (weight, total live weight, live shards, points) where f32 rounding loses a group
        // of 4 against exact arithmetic, as gcc-compiled ketama_update does.
        for (weight, total, nlive, points) in [(1, 25, 5, 28), (7, 12, 9, 836), (11, 14, 7, 876)] {
            assert_eq!(point_count(weight, total, nlive), points);
        }
        assert_eq!(point_count(1, 1, 1), 160);
        assert_eq!(point_count(2, 6, 3), 160);
        assert_eq!(point_count(3, 6, 3), 240);
        // Checksum of every count for total 1..=40, nlive 1..=12, weight 1..=total, from C.
        let mut acc = 0u32;
        for total in 1..=40 {
            for nlive in 1..=12 {
                for weight in 1..=total {
                    acc = acc.wrapping_mul(0x0100_0193) ^ point_count(weight, total, nlive);
                }
            }
        }
        assert_eq!(acc, 2_291_367_400);
    }

    #[test]
    fn equal_weights_give_160_points_except_where_f32_rounding_loses_a_group() {
        // gcc-compiled ketama_update gives 156 points each to 25, 47, 50... equal shards
        // (103 pool sizes up to 1000), as 1/n * 40 * n rounds below 40 in f32.
        let short: Vec<u32> = (1..=1000)
            .filter(|&n| point_count(1, n, n) != 160)
            .collect();
        assert_eq!(short.len(), 103);
        assert_eq!(short[..8], [25, 47, 50, 55, 61, 71, 94, 100]);
        assert!(short.iter().all(|&n| point_count(1, n, n) == 156));
    }

    #[test]
    fn zero_total_weight_gives_no_points() {
        let continuum = Continuum::new(&specs(&[("a", 0), ("b", 0)]), &[]);
        assert!(continuum.is_empty());
        assert_eq!(continuum.dispatch(7), None);
    }

    #[test]
    fn points_are_md5_words_of_name_dash_index() {
        let continuum = Continuum::new(&specs(&[("a", 1)]), &[]);
        assert_eq!(continuum.len(), 160);
        let digest = md5_digest(b"a-0");
        for word in 0..4 {
            let value = md5_word(&digest, word);
            assert!(continuum.points().any(|point| point == (value, 0)));
        }
        let values: Vec<u32> = continuum.points().map(|(value, _)| value).collect();
        assert!(values.windows(2).all(|pair| pair[0] <= pair[1]));
    }

    #[test]
    fn dispatch_takes_first_point_at_or_after_hash_and_wraps() {
        let continuum = Continuum::new(&specs(&[("a", 1), ("b", 1), ("c", 1)]), &[]);
        let points: Vec<(u32, usize)> = continuum.points().collect();
        let (first_value, first_shard) = points[0];
        let (last_value, last_shard) = points[points.len() - 1];
        assert_eq!(continuum.dispatch(0), Some(first_shard));
        assert_eq!(continuum.dispatch(first_value), Some(first_shard));
        assert_eq!(continuum.dispatch(last_value), Some(last_shard));
        if last_value < u32::MAX {
            assert_eq!(continuum.dispatch(last_value + 1), Some(first_shard));
        }
        let (value, shard) = points[100];
        let (previous, _) = points[99];
        if previous < value {
            assert_eq!(continuum.dispatch(previous + 1), Some(shard));
        }
    }

    #[test]
    fn equal_points_keep_shard_order() {
        // Two shards with the same name have identical points; glibc's stable qsort keeps the
        // lower shard first, and the search finds it.
        let continuum = Continuum::new(&specs(&[("same", 1), ("same", 1)]), &[]);
        assert_eq!(continuum.len(), 320);
        assert!((0..1000u32).all(|n| continuum.dispatch(n.wrapping_mul(0x9e37_79b9)) == Some(0)));
    }

    #[test]
    fn long_point_names_are_truncated_like_snprintf() {
        let name = vec![b'x'; 90];
        let bytes = snprintf_bytes(&name);
        assert_eq!(bytes.len(), 90);
        assert_eq!(&bytes[..85], &name[..85]);
        assert!(bytes[85..].iter().all(|&byte| byte == 0));
        assert_eq!(snprintf_bytes(&name[..85]).as_ref(), &name[..85]);
    }
}
