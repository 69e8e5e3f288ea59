// The command-family conformance suite: each family runs a sequence of commands against the
// proxy under test and against one direct redis-server, and the replies must be byte-for-byte
// equal. Co-located multi-key commands use `{tag}` keys. Included (with `include!`) by
// tests/commands.rs (a sharded pool) and tests/cluster.rs (a Redis Cluster pool); the includer
// provides `Client`, `Reply` and friends from tests/common.

/// The proxy under test and a reference redis, fed the same commands.
pub struct Diff {
    _keep: Vec<Box<dyn std::any::Any>>,
    proxy: Client,
    direct: Client,
}

impl Diff {
    /// Compares `proxy` with `direct`; `keep` holds the processes behind them.
    pub fn new(proxy: Client, direct: Client, keep: Vec<Box<dyn std::any::Any>>) -> Diff {
        Diff {
            _keep: keep,
            proxy,
            direct,
        }
    }

    pub fn both(&mut self, args: &[&str]) -> (Reply, Reply) {
        let expected = self.direct.cmd(args);
        let got = self.proxy.cmd(args);
        (expected, got)
    }

    /// Same reply through the proxy as from Redis, and not an error (a typo in the test
    /// would otherwise compare two identical errors).
    pub fn same(&mut self, args: &[&str]) -> Reply {
        let (expected, got) = self.both(args);
        assert_eq!(
            got, expected,
            "{args:?}: proxy replied {got:?}, redis {expected:?}"
        );
        assert!(
            !expected.is_error(),
            "{args:?}: redis itself says {expected:?}: fix the test"
        );
        got
    }

    /// Same error through the proxy as from Redis (WRONGTYPE, not an integer...).
    pub fn same_error(&mut self, args: &[&str]) {
        let (expected, got) = self.both(args);
        assert!(
            expected.is_error(),
            "{args:?}: redis replied {expected:?}, not an error: fix the test"
        );
        assert_eq!(got, expected, "{args:?}");
    }

    /// Same reply up to the order of array items, for replies whose order Redis leaves undefined
    /// (set members come out in hash-table order, which is seeded per process).
    pub fn same_unordered(&mut self, args: &[&str]) {
        let (expected, got) = self.both(args);
        assert!(
            !expected.is_error(),
            "{args:?}: redis itself says {expected:?}: fix the test"
        );
        assert_eq!(got.sorted(), expected.sorted(), "{args:?}");
    }

    pub fn script(&mut self, commands: &[&[&str]]) {
        for c in commands {
            self.same(c);
        }
    }
}


/// One family: commands run through [`Diff`].
pub type Family = fn(&mut Diff);

/// Every family, by name.
pub const FAMILIES: &[(&str, Family)] = &[
    ("string_commands_reply_as_redis", string_commands_reply_as_redis),
    ("string_commands_added_in_redis_6_and_7_reply_as_redis", string_commands_added_in_redis_6_and_7_reply_as_redis),
    ("hash_commands_reply_as_redis", hash_commands_reply_as_redis),
    ("list_commands_reply_as_redis", list_commands_reply_as_redis),
    ("list_commands_added_in_redis_6_reply_as_redis", list_commands_added_in_redis_6_reply_as_redis),
    ("set_commands_reply_as_redis", set_commands_reply_as_redis),
    ("set_commands_added_in_redis_6_and_7_reply_as_redis", set_commands_added_in_redis_6_and_7_reply_as_redis),
    ("sorted_set_commands_reply_as_redis", sorted_set_commands_reply_as_redis),
    ("sorted_set_commands_added_in_redis_6_reply_as_redis", sorted_set_commands_added_in_redis_6_reply_as_redis),
    ("hyperloglog_commands_reply_as_redis", hyperloglog_commands_reply_as_redis),
    ("bitmap_commands_reply_as_redis", bitmap_commands_reply_as_redis),
    ("bitmap_commands_added_in_redis_6_and_7_reply_as_redis", bitmap_commands_added_in_redis_6_and_7_reply_as_redis),
    ("geo_commands_reply_as_redis", geo_commands_reply_as_redis),
    ("geo_search_commands_reply_as_redis", geo_search_commands_reply_as_redis),
    ("stream_commands_on_one_stream_reply_as_redis", stream_commands_on_one_stream_reply_as_redis),
    ("keyspace_commands_reply_as_redis", keyspace_commands_reply_as_redis),
    ("eval_with_keys_on_one_shard_replies_as_redis", eval_with_keys_on_one_shard_replies_as_redis),
];

pub fn string_commands_reply_as_redis(d: &mut Diff) {
    d.script(&[
        &["SET", "str:a", "hello"],
        &["GET", "str:a"],
        &["GET", "str:missing"],
        &["GETSET", "str:a", "world"],
        &["APPEND", "str:a", " and more"],
        &["APPEND", "str:new", "fresh"],
        &["STRLEN", "str:a"],
        &["STRLEN", "str:missing"],
        &["GETRANGE", "str:a", "0", "3"],
        &["GETRANGE", "str:a", "-4", "-1"],
        &["SETRANGE", "str:a", "2", "XY"],
        &["SETRANGE", "str:pad", "5", "z"],
        &["GET", "str:pad"],
        &["GET", "str:a"],
        &["SET", "str:n", "10"],
        &["INCR", "str:n"],
        &["INCRBY", "str:n", "32"],
        &["DECR", "str:n"],
        &["DECRBY", "str:n", "100"],
        &["INCR", "str:counter"],
        &["INCRBYFLOAT", "str:f", "1.5"],
        &["INCRBYFLOAT", "str:f", "0.25"],
        &["INCRBYFLOAT", "str:f", "-3e2"],
        &["SETNX", "str:a", "x"],
        &["SETNX", "str:nx", "x"],
        &["SETEX", "str:ex", "1000", "v"],
        &["TTL", "str:ex"],
        &["PSETEX", "str:px", "1000000", "v"],
        &["GET", "str:px"],
        &["SET", "str:opt", "v", "NX"],
        &["SET", "str:opt", "w", "NX"],
        &["SET", "str:opt", "w", "XX"],
        &["SET", "str:opt", "w2", "XX", "EX", "1000"],
        &["TTL", "str:opt"],
        &["SET", "str:opt", "w3", "KEEPTTL"],
        &["TTL", "str:opt"],
        &["GET", "str:opt"],
        &["MSET", "str:m", "single"],
        &["MGET", "str:m"],
        &["MSETNX", "{str}x", "1", "{str}y", "2"],
        &["MSETNX", "{str}y", "3", "{str}z", "4"],
        &["GET", "{str}y"],
    ]);
    d.same_error(&["INCR", "str:a"]);
    d.same_error(&["INCRBYFLOAT", "str:a", "1"]);
    d.same_error(&["SETEX", "str:bad", "-1", "v"]);
    d.same(&["RPUSH", "str:list", "x"]);
    d.same_error(&["GET", "str:list"]);
}

pub fn string_commands_added_in_redis_6_and_7_reply_as_redis(d: &mut Diff) {
    d.script(&[
        &["SET", "s7:a", "hello"],
        &["SET", "s7:a", "again", "GET"],
        &["SET", "s7:b", "v", "GET"],
        &["GETDEL", "s7:b"],
        &["GETDEL", "s7:b"],
        &["GETEX", "s7:a", "EX", "1000"],
        &["TTL", "s7:a"],
        &["GETEX", "s7:a", "PERSIST"],
        &["TTL", "s7:a"],
        &["SET", "s7:px", "v", "PXAT", "99999999999999"],
        &["SET", "{lcs}1", "ohmytext"],
        &["SET", "{lcs}2", "mynewtext"],
        &["LCS", "{lcs}1", "{lcs}2"],
        &["LCS", "{lcs}1", "{lcs}2", "LEN"],
    ]);
}

pub fn hash_commands_reply_as_redis(d: &mut Diff) {
    d.script(&[
        &["HSET", "h:1", "f1", "v1", "f2", "v2", "f3", "3"],
        &["HSET", "h:1", "f1", "changed"],
        &["HGET", "h:1", "f1"],
        &["HGET", "h:1", "nope"],
        &["HMGET", "h:1", "f1", "nope", "f2"],
        &["HGETALL", "h:1"],
        &["HKEYS", "h:1"],
        &["HVALS", "h:1"],
        &["HLEN", "h:1"],
        &["HEXISTS", "h:1", "f2"],
        &["HEXISTS", "h:1", "nope"],
        &["HSTRLEN", "h:1", "f1"],
        &["HINCRBY", "h:1", "f3", "39"],
        &["HINCRBYFLOAT", "h:1", "fl", "2.5"],
        &["HSETNX", "h:1", "f1", "x"],
        &["HSETNX", "h:1", "new", "x"],
        &["HMSET", "h:1", "a", "1", "b", "2"],
        &["HDEL", "h:1", "f2", "nope", "a"],
        &["HGETALL", "h:1"],
        &["HSCAN", "h:1", "0"],
        &["HGETALL", "h:missing"],
        &["HLEN", "h:missing"],
    ]);
    d.same_error(&["HINCRBY", "h:1", "f1", "1"]);
    d.same_error(&["HSET", "h:1", "odd"]);
}

pub fn list_commands_reply_as_redis(d: &mut Diff) {
    d.script(&[
        &["RPUSH", "l:1", "a", "b", "c", "d", "e"],
        &["LPUSH", "l:1", "z", "y"],
        &["LRANGE", "l:1", "0", "-1"],
        &["LLEN", "l:1"],
        &["LINDEX", "l:1", "2"],
        &["LINDEX", "l:1", "100"],
        &["LSET", "l:1", "0", "Y"],
        &["LINSERT", "l:1", "BEFORE", "c", "bc"],
        &["LINSERT", "l:1", "AFTER", "nope", "x"],
        &["RPUSH", "l:1", "a", "a"],
        &["LREM", "l:1", "2", "a"],
        &["LRANGE", "l:1", "0", "-1"],
        &["LTRIM", "l:1", "1", "-2"],
        &["LRANGE", "l:1", "0", "-1"],
        &["LPOP", "l:1"],
        &["RPOP", "l:1"],
        &["LPUSHX", "l:1", "px"],
        &["LPUSHX", "l:missing", "px"],
        &["RPUSHX", "l:1", "rx"],
        &["LRANGE", "l:1", "0", "-1"],
        &["LRANGE", "l:missing", "0", "-1"],
        &["LPOP", "l:missing"],
        &["RPUSH", "{l}src", "1", "2", "3"],
        &["RPOPLPUSH", "{l}src", "{l}dst"],
        &["LRANGE", "{l}dst", "0", "-1"],
    ]);
    d.same_error(&["LSET", "l:1", "100", "x"]);
    d.same_error(&["LSET", "l:missing", "0", "x"]);
}

pub fn list_commands_added_in_redis_6_reply_as_redis(d: &mut Diff) {
    d.script(&[
        &["RPUSH", "l6:1", "a", "b", "c", "b", "a"],
        &["LPOS", "l6:1", "b"],
        &["LPOS", "l6:1", "b", "RANK", "2"],
        &["LPOS", "l6:1", "a", "COUNT", "0"],
        &["LPOP", "l6:1", "2"],
        &["RPOP", "l6:1", "2"],
        &["RPUSH", "{l6}a", "1", "2", "3"],
        &["LMOVE", "{l6}a", "{l6}b", "LEFT", "RIGHT"],
        &["LMOVE", "{l6}a", "{l6}b", "RIGHT", "LEFT"],
        &["LRANGE", "{l6}b", "0", "-1"],
        &["LMPOP", "2", "{l6}nope", "{l6}a", "LEFT", "COUNT", "5"],
    ]);
}

pub fn set_commands_reply_as_redis(d: &mut Diff) {
    d.script(&[
        &["SADD", "set:1", "a", "b", "c", "d"],
        &["SADD", "set:1", "a", "e"],
        &["SREM", "set:1", "d", "nope"],
        &["SISMEMBER", "set:1", "a"],
        &["SISMEMBER", "set:1", "d"],
        &["SCARD", "set:1"],
        &["SADD", "{s}a", "1", "2", "3", "x"],
        &["SADD", "{s}b", "2", "3", "4", "x"],
        &["SADD", "set:ints", "3", "1", "2"],
        &["SMEMBERS", "set:ints"],
        &["SINTERSTORE", "{s}inter", "{s}a", "{s}b"],
        &["SUNIONSTORE", "{s}union", "{s}a", "{s}b"],
        &["SDIFFSTORE", "{s}diff", "{s}a", "{s}b"],
        &["SCARD", "{s}union"],
        &["SMOVE", "{s}a", "{s}b", "1"],
        &["SMOVE", "{s}a", "{s}b", "nope"],
        &["SISMEMBER", "{s}b", "1"],
    ]);
    for c in [
        &["SMEMBERS", "set:1"][..],
        &["SINTER", "{s}a", "{s}b"],
        &["SUNION", "{s}a", "{s}b"],
        &["SDIFF", "{s}a", "{s}b"],
        &["SMEMBERS", "{s}inter"],
        &["SMEMBERS", "{s}union"],
        &["SMEMBERS", "{s}diff"],
    ] {
        d.same_unordered(c);
    }
    d.same(&["SET", "set:str", "x"]);
    d.same_error(&["SADD", "set:str", "x"]);
}

pub fn set_commands_added_in_redis_6_and_7_reply_as_redis(d: &mut Diff) {
    d.script(&[
        &["SADD", "{s7}a", "1", "2", "3"],
        &["SADD", "{s7}b", "2", "3", "4"],
        &["SMISMEMBER", "{s7}a", "1", "4", "3"],
        &["SINTERCARD", "2", "{s7}a", "{s7}b"],
        &["SINTERCARD", "2", "{s7}a", "{s7}b", "LIMIT", "1"],
    ]);
}

pub fn sorted_set_commands_reply_as_redis(d: &mut Diff) {
    d.script(&[
        &[
            "ZADD", "z:1", "1", "one", "2", "two", "3", "three", "4.5", "four",
        ],
        &["ZADD", "z:1", "NX", "10", "one", "5", "five"],
        &["ZADD", "z:1", "XX", "CH", "1.5", "one"],
        &["ZSCORE", "z:1", "one"],
        &["ZSCORE", "z:1", "nope"],
        &["ZINCRBY", "z:1", "0.5", "two"],
        &["ZCARD", "z:1"],
        &["ZCOUNT", "z:1", "2", "(4.5"],
        &["ZRANGE", "z:1", "0", "-1", "WITHSCORES"],
        &["ZREVRANGE", "z:1", "0", "2"],
        &[
            "ZRANGEBYSCORE",
            "z:1",
            "-inf",
            "+inf",
            "WITHSCORES",
            "LIMIT",
            "1",
            "2",
        ],
        &["ZREVRANGEBYSCORE", "z:1", "4", "1"],
        &["ZRANK", "z:1", "three"],
        &["ZREVRANK", "z:1", "three"],
        &["ZRANK", "z:1", "nope"],
        &["ZREM", "z:1", "five", "nope"],
        &["ZADD", "z:lex", "0", "a", "0", "b", "0", "c", "0", "d"],
        &["ZLEXCOUNT", "z:lex", "[b", "+"],
        &["ZRANGEBYLEX", "z:lex", "-", "(c"],
        &["ZREMRANGEBYLEX", "z:lex", "[a", "[b"],
        &["ZPOPMIN", "z:1"],
        &["ZPOPMAX", "z:1", "2"],
        &["ZADD", "z:2", "1", "a", "2", "b", "3", "c", "4", "d"],
        &["ZREMRANGEBYRANK", "z:2", "0", "0"],
        &["ZREMRANGEBYSCORE", "z:2", "4", "+inf"],
        &["ZRANGE", "z:2", "0", "-1", "WITHSCORES"],
        &["ZADD", "{z}a", "1", "x", "2", "y"],
        &["ZADD", "{z}b", "10", "y", "20", "z"],
        &[
            "ZUNIONSTORE",
            "{z}u",
            "2",
            "{z}a",
            "{z}b",
            "WEIGHTS",
            "1",
            "2",
        ],
        &[
            "ZINTERSTORE",
            "{z}i",
            "2",
            "{z}a",
            "{z}b",
            "AGGREGATE",
            "MAX",
        ],
        &["ZRANGE", "{z}u", "0", "-1", "WITHSCORES"],
        &["ZRANGE", "{z}i", "0", "-1", "WITHSCORES"],
    ]);
    d.same_error(&["ZADD", "z:1", "notafloat", "m"]);
}

pub fn sorted_set_commands_added_in_redis_6_reply_as_redis(d: &mut Diff) {
    d.script(&[
        &["ZADD", "{z6}a", "1", "a", "2", "b", "3", "c", "4", "d"],
        &["ZADD", "{z6}b", "3", "c", "5", "e"],
        &["ZMSCORE", "{z6}a", "a", "nope", "c"],
        &["ZRANGE", "{z6}a", "2", "3", "BYSCORE", "WITHSCORES"],
        &[
            "ZRANGE", "{z6}a", "(4", "-inf", "BYSCORE", "REV", "LIMIT", "0", "2",
        ],
        &["ZRANGE", "{z6}a", "[b", "[c", "BYLEX"],
        &["ZRANGESTORE", "{z6}dst", "{z6}a", "1", "2"],
        &["ZRANGE", "{z6}dst", "0", "-1", "WITHSCORES"],
        &["ZUNION", "2", "{z6}a", "{z6}b", "WITHSCORES"],
        &["ZINTER", "2", "{z6}a", "{z6}b", "WITHSCORES"],
        &["ZDIFF", "2", "{z6}a", "{z6}b"],
        &["ZDIFFSTORE", "{z6}d", "2", "{z6}a", "{z6}b"],
        &["ZINTERCARD", "2", "{z6}a", "{z6}b"],
        &["ZMPOP", "1", "{z6}a", "MIN", "COUNT", "2"],
    ]);
}

pub fn hyperloglog_commands_reply_as_redis(d: &mut Diff) {
    d.script(&[
        &["PFADD", "hll:1", "a", "b", "c", "d"],
        &["PFADD", "hll:1", "a"],
        &["PFCOUNT", "hll:1"],
        &["PFADD", "{hll}a", "1", "2", "3"],
        &["PFADD", "{hll}b", "3", "4", "5", "6"],
        &["PFCOUNT", "{hll}a", "{hll}b"],
        &["PFMERGE", "{hll}m", "{hll}a", "{hll}b"],
        &["PFCOUNT", "{hll}m"],
        &["GET", "{hll}m"],
    ]);
}

pub fn bitmap_commands_reply_as_redis(d: &mut Diff) {
    d.script(&[
        &["SETBIT", "bits:1", "7", "1"],
        &["SETBIT", "bits:1", "7", "0"],
        &["SETBIT", "bits:1", "100", "1"],
        &["GETBIT", "bits:1", "100"],
        &["GETBIT", "bits:1", "99999"],
        &["BITCOUNT", "bits:1"],
        &["SET", "bits:2", "foobar"],
        &["BITCOUNT", "bits:2", "1", "1"],
        &["BITPOS", "bits:2", "1"],
        &["BITPOS", "bits:2", "0", "2"],
        &[
            "BITFIELD", "bits:3", "SET", "u8", "0", "255", "GET", "u8", "0", "INCRBY", "u8", "0",
            "10",
        ],
        &[
            "BITFIELD", "bits:3", "OVERFLOW", "SAT", "INCRBY", "i8", "8", "1000",
        ],
        &["GET", "bits:3"],
        &["SET", "{bits}a", "abc"],
        &["SET", "{bits}b", "ab\u{7f}"],
        &["BITOP", "AND", "{bits}and", "{bits}a", "{bits}b"],
        &["BITOP", "XOR", "{bits}xor", "{bits}a", "{bits}b"],
        &["BITOP", "NOT", "{bits}not", "{bits}a"],
        &["GET", "{bits}and"],
        &["GET", "{bits}xor"],
        &["GET", "{bits}not"],
    ]);
    d.same_error(&["SETBIT", "bits:1", "1", "2"]);
}

pub fn bitmap_commands_added_in_redis_6_and_7_reply_as_redis(d: &mut Diff) {
    d.script(&[
        &["SET", "b7:1", "foobar"],
        &["BITFIELD_RO", "b7:1", "GET", "u8", "8"],
        &["BITCOUNT", "b7:1", "5", "30", "BIT"],
        &["BITPOS", "b7:1", "1", "7", "15", "BIT"],
    ]);
}

pub fn geo_commands_reply_as_redis(d: &mut Diff) {
    d.script(&[
        &[
            "GEOADD",
            "geo:1",
            "13.361389",
            "38.115556",
            "Palermo",
            "15.087269",
            "37.502669",
            "Catania",
        ],
        &["GEOADD", "geo:1", "NX", "2.349014", "48.864716", "Paris"],
        &["GEODIST", "geo:1", "Palermo", "Catania"],
        &["GEODIST", "geo:1", "Palermo", "Catania", "km"],
        &["GEODIST", "geo:1", "Palermo", "nope"],
        &["GEOPOS", "geo:1", "Palermo", "nope", "Catania"],
        &["GEOHASH", "geo:1", "Palermo", "Catania"],
        &[
            "GEORADIUS",
            "geo:1",
            "15",
            "37",
            "200",
            "km",
            "WITHDIST",
            "ASC",
        ],
        &["GEORADIUSBYMEMBER", "geo:1", "Palermo", "300", "km", "ASC"],
        &["ZRANGE", "geo:1", "0", "-1", "WITHSCORES"],
    ]);
}

pub fn geo_search_commands_reply_as_redis(d: &mut Diff) {
    d.script(&[
        &[
            "GEOADD",
            "{geo}1",
            "13.361389",
            "38.115556",
            "Palermo",
            "15.087269",
            "37.502669",
            "Catania",
        ],
        &[
            "GEOSEARCH",
            "{geo}1",
            "FROMLONLAT",
            "15",
            "37",
            "BYRADIUS",
            "200",
            "km",
            "ASC",
            "WITHCOORD",
            "WITHDIST",
        ],
        &[
            "GEOSEARCH",
            "{geo}1",
            "FROMMEMBER",
            "Palermo",
            "BYBOX",
            "400",
            "400",
            "km",
            "DESC",
            "COUNT",
            "1",
        ],
        &[
            "GEOSEARCHSTORE",
            "{geo}dst",
            "{geo}1",
            "FROMLONLAT",
            "15",
            "37",
            "BYRADIUS",
            "200",
            "km",
            "ASC",
        ],
        &["ZRANGE", "{geo}dst", "0", "-1", "WITHSCORES"],
    ]);
}

pub fn stream_commands_on_one_stream_reply_as_redis(d: &mut Diff) {
    d.script(&[
        &["XADD", "st:1", "1-1", "field", "a"],
        &["XADD", "st:1", "2-1", "field", "b", "other", "x"],
        &["XADD", "st:1", "3-0", "field", "c"],
        &["XADD", "st:1", "4-0", "field", "d"],
        &["XLEN", "st:1"],
        &["XRANGE", "st:1", "-", "+"],
        &["XRANGE", "st:1", "2", "+", "COUNT", "1"],
        &["XREVRANGE", "st:1", "+", "-", "COUNT", "2"],
        &["XDEL", "st:1", "1-1", "9-9"],
        &["XTRIM", "st:1", "MAXLEN", "2"],
        &["XLEN", "st:1"],
        &["XGROUP", "CREATE", "st:1", "grp", "0"],
        &[
            "XREADGROUP",
            "GROUP",
            "grp",
            "alice",
            "COUNT",
            "10",
            "STREAMS",
            "st:1",
            ">",
        ],
        &["XACK", "st:1", "grp", "3-0"],
        &["XPENDING", "st:1", "grp"],
        &["XREAD", "COUNT", "10", "STREAMS", "st:1", "0"],
        &["XADD", "st:1", "MAXLEN", "1", "5-0", "field", "e"],
        &["XRANGE", "st:1", "-", "+"],
    ]);
    d.same_error(&["XADD", "st:1", "1-0", "field", "old"]);
    d.same_error(&["XGROUP", "CREATE", "st:1", "grp", "0"]);
}

pub fn keyspace_commands_reply_as_redis(d: &mut Diff) {
    d.script(&[
        &["SET", "ks:a", "v"],
        &["TTL", "ks:a"],
        &["PTTL", "ks:missing"],
        &["EXPIRE", "ks:a", "1000"],
        &["TTL", "ks:a"],
        &["PERSIST", "ks:a"],
        &["PERSIST", "ks:a"],
        &["TTL", "ks:a"],
        &["EXPIREAT", "ks:a", "99999999999"],
        &["EXPIRETIME", "ks:a"],
        &["PEXPIREAT", "ks:a", "99999999999000"],
        &["PEXPIRETIME", "ks:a"],
        &["EXPIRE", "ks:missing", "10"],
        &["TYPE", "ks:a"],
        &["TYPE", "ks:missing"],
        &["LPUSH", "ks:list", "x"],
        &["TYPE", "ks:list"],
        &["HSET", "ks:hash", "f", "v"],
        &["TYPE", "ks:hash"],
        &["SADD", "ks:set", "m"],
        &["TYPE", "ks:set"],
        &["ZADD", "ks:zset", "1", "m"],
        &["TYPE", "ks:zset"],
        &["XADD", "ks:stream", "1-0", "f", "v"],
        &["TYPE", "ks:stream"],
        &["EXISTS", "ks:a"],
        &["DEL", "ks:a"],
        &["EXISTS", "ks:a"],
        &["SET", "{ks}a", "1"],
        &["RENAME", "{ks}a", "{ks}b"],
        &["RENAMENX", "{ks}b", "{ks}c"],
        &["SET", "{ks}d", "2"],
        &["RENAMENX", "{ks}c", "{ks}d"],
        &["GET", "{ks}c"],
        &["COPY", "{ks}c", "{ks}e"],
        &["GET", "{ks}e"],
        &["DUMP", "{ks}e"],
    ]);
    d.same_error(&["RENAME", "{ks}missing", "{ks}x"]);
}

pub fn eval_with_keys_on_one_shard_replies_as_redis(d: &mut Diff) {
    d.script(&[
        &["EVAL", "return redis.call('SET', KEYS[1], ARGV[1])", "1", "ev:a", "value"],
        &["EVAL", "return redis.call('GET', KEYS[1])", "1", "ev:a"],
        &["EVAL", "return {KEYS[1], ARGV[1], 42, redis.call('INCR', KEYS[1])}", "1", "ev:n", "arg"],
        &[
            "EVAL",
            "redis.call('SET', KEYS[1], ARGV[1]); redis.call('SET', KEYS[2], ARGV[2]); return redis.call('MGET', KEYS[1], KEYS[2])",
            "2",
            "{ev}1",
            "{ev}2",
            "one",
            "two",
        ],
        &["GET", "{ev}2"],
        &["EVAL", "return redis.status_reply('FINE')", "1", "ev:x"],
    ]);
    d.same_error(&[
        "EVAL",
        "return redis.error_reply('MYERR custom')",
        "1",
        "ev:x",
    ]);
    d.same_error(&["EVAL", "return redis.call('INCR', KEYS[1])", "1", "ev:a"]);
}
