//! Jedis's client-side sharding ring (`redis.clients.util.Sharded`, `ShardedJedis`), so that an
//! application sharding with Jedis moves behind Keyway with every key where it already is.

use super::hash::murmur64a;
use super::points::Points;
use super::ShardSpec;

/// Points per unit of weight (Jedis's `160 * weight`).
const POINTS_PER_WEIGHT: u64 = 160;

/// How a named shard's points are named: Jedis changed it in 2.10.0 (unnamed shards hash
/// `SHARD-<i>-NODE-<n>` in every version).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JedisNames {
    /// `name + "*" + weight + n` as one string (`cache1*10` for weight 1, point 0): Jedis
    /// 2.0.0 to 2.9.x.
    Weighted,
    /// `name + "*" + n`: Jedis 2.10.0 to 3.x (the last with `ShardedJedis`).
    Plain,
}

impl JedisNames {
    /// The setting named `name` in the config file: `weighted` or `plain`.
    pub fn parse(name: &str) -> Option<JedisNames> {
        match name {
            "weighted" => Some(JedisNames::Weighted),
            "plain" => Some(JedisNames::Plain),
            _ => None,
        }
    }
}

/// The ring: signed 64-bit points in ascending order, each owned by a shard. A hash belongs
/// to the first point at or above it, wrapping to the first (Jedis's `tailMap(hash)`).
///
/// ```
/// use keyway::route::jedis::{JedisNames, Ring};
/// use keyway::route::ShardSpec;
///
/// let shards = [ShardSpec::unnamed(1), ShardSpec::unnamed(2)];
/// let ring = Ring::new(&shards, &[], JedisNames::Plain);
/// assert_eq!(ring.len(), 480);
/// assert!(ring.dispatch(keyway::route::hash::murmur64a(b"foo")).is_some());
/// ```
pub type Ring = Points<i64>;

impl Points<i64> {
    /// The ring of the live shards (`live[i]`; a missing entry counts as live), shard `i`
    /// being the i-th in the config's list, as Jedis takes its list. A shard without a name
    /// ([`ShardSpec::named`] false) hashes `SHARD-<i>-NODE-<n>`, a named one as `names`
    /// says. An ejected shard's points leave the ring; the others keep theirs.
    ///
    /// Jedis fills a `TreeMap` in shard and point order, so where two points collide the
    /// later one wins; so it does here.
    pub fn new(shards: &[ShardSpec], live: &[bool], names: JedisNames) -> Ring {
        let mut points: Vec<(i64, u32)> = Vec::new();
        for (index, shard) in shards.iter().enumerate() {
            if !live.get(index).copied().unwrap_or(true) {
                continue;
            }
            let Ok(owner) = u32::try_from(index) else {
                break;
            };
            let count = POINTS_PER_WEIGHT * u64::from(shard.weight);
            for n in 0..count {
                let name = match (shard.named, names) {
                    (false, _) => format!("SHARD-{index}-NODE-{n}"),
                    (true, JedisNames::Weighted) => format!("{}*{}{n}", shard.name, shard.weight),
                    (true, JedisNames::Plain) => format!("{}*{n}", shard.name),
                };
                points.push((murmur64a(name.as_bytes()), owner));
            }
        }
        // Stable: equal points keep insertion order, and the last of each run is kept.
        points.sort_by_key(|&(value, _)| value);
        let mut kept: Vec<(i64, u32)> = Vec::with_capacity(points.len());
        for point in points {
            match kept.last_mut() {
                Some(last) if last.0 == point.0 => *last = point,
                _ => kept.push(point),
            }
        }
        Points::from_sorted(kept)
    }
}

/// The part of `key` Jedis hashes with its default key-tag pattern `\{(.+?)\}`: from the first
/// `{` at which the pattern matches, the shortest run of at least one character up to a `}`
/// (a `}` may be its first character: `k{}}` hashes `}`). Java's `.` stops at line
/// terminators (`\n`, `\r`, U+0085, U+2028, U+2029), so a run holding one fails there and the
/// search moves on to the next `{`. No match: the whole key.
pub fn key_tag(key: &[u8]) -> &[u8] {
    let mut from = 0;
    while let Some(open) = key
        .get(from..)
        .and_then(|rest| rest.iter().position(|&b| b == b'{'))
    {
        let start = from + open + 1;
        let rest = key.get(start..).unwrap_or_default();
        let mut at = 0;
        while let Some(&byte) = rest.get(at) {
            if is_line_terminator(rest.get(at..).unwrap_or_default()) {
                break;
            }
            if byte == b'}' && at > 0 {
                return rest.get(..at).unwrap_or(key);
            }
            at += 1;
        }
        from = start;
    }
    key
}

/// Whether `bytes` starts with a Java line terminator (in UTF-8).
fn is_line_terminator(bytes: &[u8]) -> bool {
    matches!(
        bytes,
        [b'\n' | b'\r', ..] | [0xc2, 0x85, ..] | [0xe2, 0x80, 0xa8 | 0xa9, ..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shard `i` of each of the first 1000 keys `key:0` ... `key:999` over s0 (unnamed, weight
    /// 1), s1 (`cache-b`, 2), s2 (unnamed, 3), s3 (`cache-a`, 1), as Jedis's own `Sharded`
    /// placed them: the 2.9.0 and 2.10.0 sources compiled with OpenJDK 17, shards given as a
    /// `ShardInfo` with that name and weight, `getShardInfo("key:" + n)`.
    const JEDIS_2_9_0: &str = "0111332122132123120223122112222210222221301312312222210112223030331320232112210201322212220233200220312010121311123112323222132222112111202332221221103130311200223220231322031133233102212222122201102231233332311112222022223221120110121132332232222220223331220221220222221122112330111202132220012123221232101211211112222232122222323332303203203021331213321122102222131203222223222122010123111311230001112022202222230200112101202221132222121022230122022101021231010323111221023221012312011102201231012221222220222321212312112222201111121113332230022222113303223331111312232221231222321320130321123211212311232202112202212220212022322311130021111020120221212120321232120121012100010220222232022311133113112222231023120121212333311232211201022111231121023031322021201123212002202211021112111222320321122100121322310201013221022021321222121332002210221320002122230001211223131022012010010021223321322112213223130322132111201220122012222313101112112332210031232310111122222212311320312120222323033022232121";
    const JEDIS_2_10_0: &str = "1112132212222131221213122312222200222210301332312221210132222030112320232222221201122112220221200120312020121130123212123221332212131311202122323223201320130230221121231322011133211102211221222202202232212223332132221012220222220310221212132222222220211333220231220211222122122110213202311220012330223212131132111121122232022222222132301201203021132220121222202223113101222222212322000123202321331002132122212222230200011201103221112232121022210322022102122231320321110222121223012112133102230233012121212220222222212312111213202212122112332111022222123301223203132113233221200221121120110112020221202132222202322302111220112022122133330331133020110220232020122222220221011000030210221232011313230113122222123021220323232013112112212231021021211021023031122311101123212001101221122312112212120123322100121322110201011223022021111222121312102230221320101122230003131323211022012130031023221321113322211223310322132132212210222122221313303112122312213033212110101222221222301210112220222121021012132222";

    fn shards() -> Vec<ShardSpec> {
        vec![
            ShardSpec::unnamed(1),
            ShardSpec::new("cache-b", 2),
            ShardSpec::unnamed(3),
            ShardSpec::new("cache-a", 1),
        ]
    }

    fn placement(names: JedisNames) -> String {
        let ring = Ring::new(&shards(), &[], names);
        (0..1000)
            .map(|n| {
                let key = format!("key:{n}");
                let shard = ring.dispatch(murmur64a(key.as_bytes())).unwrap();
                char::from(b'0' + shard as u8)
            })
            .collect()
    }

    #[test]
    fn places_keys_as_jedis_2_9_does() {
        assert_eq!(placement(JedisNames::Weighted), JEDIS_2_9_0);
    }

    #[test]
    fn places_keys_as_jedis_2_10_does() {
        assert_eq!(placement(JedisNames::Plain), JEDIS_2_10_0);
    }

    #[test]
    fn ring_has_160_points_per_weight() {
        assert_eq!(Ring::new(&shards(), &[], JedisNames::Plain).len(), 160 * 7);
        let ring = Ring::new(&shards(), &[true, false, true, false], JedisNames::Plain);
        assert_eq!(ring.len(), 160 * 4);
        assert!(Ring::new(&shards(), &[false; 4], JedisNames::Plain)
            .dispatch(0)
            .is_none());
    }

    /// `Sharded.getKeyTag` as Jedis printed it for these keys (and its own `checkKeyTags`).
    #[test]
    fn key_tags_follow_jedis_default_pattern() {
        for (key, tag) in [
            ("foo", "foo"),
            ("foo{bar}", "bar"),
            ("foo{bar}}", "bar"),
            ("{bar}foo", "bar"),
            ("f{bar}oo", "bar"),
            ("user:{42}:name", "42"),
            ("a{}b{c}", "}b{c"),
            ("x{\n}y{z}", "z"),
            ("k{}}", "}"),
            ("ключ:{тег}", "тег"),
            ("{}", "{}"),
            ("{", "{"),
            ("", ""),
            ("a{b\u{2028}}{c}", "c"),
        ] {
            assert_eq!(key_tag(key.as_bytes()), tag.as_bytes(), "{key:?}");
        }
    }
}
