//! The file as written: each pool's keys (known from the [`Key`] table) with their values as
//! nutcracker sees them (the raw scalar text), plus the structural checks nutcracker makes
//! before it looks at any value.

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_yaml_ng::Value;

use super::keys::{Key, Origin, Shape};
use super::Problem;

/// One scalar value exactly as written: `None` when the key is absent.
///
/// Read through `String` so that serde_yaml_ng hands over the scalar's text unresolved:
/// nutcracker compares raw text (`redis: True` is not `true` to it, `redis_auth: ~` is the
/// password `~`, and `timeout:` is the empty string), and so does Keyway.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Scalar(pub(crate) Option<String>);

/// One value as written, in the shape its key's [`Shape`] gives.
#[derive(Debug, PartialEq, Eq)]
enum RawValue {
    Scalar(String),
    Lines(Vec<String>),
    Slots(RawMap),
    Fields(RawMap),
}

/// One pool as written: the keys present, each with its value, in file order. Defaults live in
/// `validate`, which knows which keys were set.
#[derive(Debug, Default)]
pub(crate) struct RawPool {
    values: Vec<(Key, RawValue)>,
}

impl RawPool {
    /// Whether `key` is written.
    pub(crate) fn has(&self, key: Key) -> bool {
        self.values.iter().any(|(k, _)| *k == key)
    }

    fn take(&mut self, key: Key) -> Option<RawValue> {
        let index = self.values.iter().position(|(k, _)| *k == key)?;
        Some(self.values.remove(index).1)
    }

    /// Takes the text of scalar key `key`.
    pub(crate) fn scalar(&mut self, key: Key) -> Scalar {
        match self.take(key) {
            Some(RawValue::Scalar(text)) => Scalar(Some(text)),
            _ => Scalar(None),
        }
    }

    /// Takes the lines of list key `key` (`servers`, `sentinels`, `cluster`).
    pub(crate) fn lines(&mut self, key: Key) -> Option<Vec<String>> {
        match self.take(key)? {
            RawValue::Lines(lines) => Some(lines),
            _ => None,
        }
    }

    /// Takes the settings of mapping key `key` (a [`Shape::Fields`] key), in file order.
    #[expect(
        dead_code,
        reason = "the first Fields keys (tls, server_tls, migration) land next"
    )]
    pub(crate) fn fields(&mut self, key: Key) -> Option<RawMap> {
        match self.take(key)? {
            RawValue::Fields(fields) => Some(fields),
            _ => None,
        }
    }

    /// Takes the `slots` mapping.
    pub(crate) fn slots(&mut self) -> Option<RawMap> {
        match self.take(Key::Slots)? {
            RawValue::Slots(slots) => Some(slots),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for RawPool {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PoolVisitor;

        impl<'de> Visitor<'de> for PoolVisitor {
            type Value = RawPool;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a mapping of pool settings")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawPool, A::Error> {
                let mut pool = RawPool::default();
                while let Some(name) = map.next_key::<String>()? {
                    // The first pass has reported unknown keys already; this only keeps the
                    // typed pass from guessing.
                    let key =
                        Key::named(&name).ok_or_else(|| de::Error::unknown_field(&name, &[]))?;
                    if pool.has(key) {
                        return Err(de::Error::duplicate_field(key.name()));
                    }
                    // Each key's value is read in its declared shape; through `String`, a
                    // scalar keeps the text nutcracker sees.
                    let value = match key.shape() {
                        Shape::Scalar => RawValue::Scalar(map.next_value()?),
                        Shape::Lines { .. } => RawValue::Lines(map.next_value()?),
                        Shape::Slots => RawValue::Slots(map.next_value()?),
                        Shape::Fields { .. } => RawValue::Fields(map.next_value()?),
                    };
                    pool.values.push((key, value));
                }
                Ok(pool)
            }
        }

        deserializer.deserialize_map(PoolVisitor)
    }
}

/// A mapping of single values as written, `(name, text)` pairs in file order: `slots` (server
/// name → ranges) and the settings of a [`Shape::Fields`] key.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct RawMap(pub(crate) Vec<(String, String)>);

impl<'de> Deserialize<'de> for RawMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SlotsVisitor;

        impl<'de> Visitor<'de> for SlotsVisitor {
            type Value = RawMap;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a mapping of names to single values")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawMap, A::Error> {
                let mut entries = Vec::new();
                // Through `String`, as `Scalar`: `6000` stays the text "6000".
                while let Some(entry) = map.next_entry::<String, String>()? {
                    entries.push(entry);
                }
                Ok(RawMap(entries))
            }
        }

        deserializer.deserialize_map(SlotsVisitor)
    }
}

/// The whole file: pools in file order.
#[derive(Debug, Default)]
pub(crate) struct RawConfig {
    pub(crate) pools: Vec<(String, RawPool)>,
}

impl<'de> Deserialize<'de> for RawConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PoolsVisitor;

        impl<'de> Visitor<'de> for PoolsVisitor {
            type Value = RawConfig;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a mapping of pool name to pool settings")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawConfig, A::Error> {
                let mut pools = Vec::new();
                while let Some((name, pool)) = map.next_entry::<String, RawPool>()? {
                    pools.push((name, pool));
                }
                Ok(RawConfig { pools })
            }
        }

        deserializer.deserialize_map(PoolsVisitor)
    }
}

/// Parses `text` into raw pools, or reports every structural problem: YAML syntax, a root that
/// is not a mapping of pools, a pool that is not a mapping, unknown keys, and values of the wrong
/// shape (a list where a single value belongs, or `servers` not a list of lines).
pub(crate) fn parse(text: &str) -> Result<RawConfig, Vec<Problem>> {
    // First pass over a generic tree: it survives every shape problem, so all of them are
    // reported together, where a typed deserializer would stop at the first.
    let tree: Value = serde_yaml_ng::from_str(text).map_err(|e| vec![syntax(&e)])?;
    let problems = check_structure(&tree);
    if !problems.is_empty() {
        return Err(problems);
    }
    // Second pass, typed, over the text itself so that scalars keep the text nutcracker sees.
    serde_yaml_ng::from_str(text).map_err(|e| vec![syntax(&e)])
}

fn syntax(error: &serde_yaml_ng::Error) -> Problem {
    Problem::Syntax {
        message: error.to_string(),
        line: error.location().map(|l| l.line()),
    }
}

fn check_structure(tree: &Value) -> Vec<Problem> {
    let mut problems = Vec::new();
    let pools = match tree {
        Value::Mapping(pools) => pools,
        Value::Null => {
            problems.push(Problem::File(
                "the file is empty (expected a mapping of pool name to pool settings)".into(),
            ));
            return problems;
        }
        other => {
            problems.push(Problem::File(format!(
                "the top level must be a mapping of pool name to pool settings, found {}",
                kind(other)
            )));
            return problems;
        }
    };
    if pools.is_empty() {
        problems.push(Problem::File("the file has no pools".into()));
    }
    for (name, settings) in pools {
        let Some(name) = scalar_text(name) else {
            problems.push(Problem::File(format!(
                "a pool name must be a single value, found {}",
                kind(name)
            )));
            continue;
        };
        check_pool(&name, settings, &mut problems);
    }
    problems
}

fn check_pool(pool: &str, settings: &Value, problems: &mut Vec<Problem>) {
    let settings = match settings {
        Value::Mapping(settings) => settings,
        other => {
            problems.push(Problem::Pool {
                pool: pool.to_owned(),
                message: format!("must be a mapping of settings, found {}", kind(other)),
            });
            return;
        }
    };
    for (key, value) in settings {
        let Some(key) = scalar_text(key) else {
            problems.push(Problem::Pool {
                pool: pool.to_owned(),
                message: format!("a key must be a single value, found {}", kind(key)),
            });
            continue;
        };
        let problem = |message: String| Problem::Key {
            pool: pool.to_owned(),
            key: key.clone(),
            message,
        };
        match Key::named(&key).map(Key::shape) {
            None => problems.push(problem(format!(
                "unknown key (expected one of {}, or Keyway's {})",
                Key::names(Origin::Nutcracker).join(" "),
                Key::names(Origin::Keyway).join(" ")
            ))),
            Some(Shape::Lines { one, many }) => {
                check_lines(value, (one, many), &problem, problems);
            }
            Some(Shape::Slots) => check_slots(value, &problem, problems),
            Some(Shape::Fields { fields }) => check_fields(value, fields, &problem, problems),
            Some(Shape::Scalar) => {
                if scalar_text(value).is_none() {
                    problems.push(problem(format!(
                        "must be a single value, found {}",
                        kind(value)
                    )));
                }
            }
        }
    }
}

/// `servers`, `sentinels` and `cluster` must be lists of single values; `(one, many)` names the entries.
fn check_lines(
    value: &Value,
    (one, many): (&str, &str),
    problem: &dyn Fn(String) -> Problem,
    problems: &mut Vec<Problem>,
) {
    match value {
        Value::Sequence(lines) => {
            for (i, line) in lines.iter().enumerate() {
                if scalar_text(line).is_none() {
                    problems.push(problem(format!(
                        "entry {} must be a {one}, found {}",
                        i + 1,
                        kind(line)
                    )));
                }
            }
        }
        other => problems.push(problem(format!(
            "must be a list of {many}, found {}",
            kind(other)
        ))),
    }
}

/// `slots` must map single values (server names) to single values (slot ranges).
fn check_slots(value: &Value, problem: &dyn Fn(String) -> Problem, problems: &mut Vec<Problem>) {
    let Value::Mapping(entries) = value else {
        problems.push(problem(format!(
            "must be a mapping of server name to slot ranges (e.g. 's1: 0-5460'), found {}",
            kind(value)
        )));
        return;
    };
    for (name, ranges) in entries {
        match (scalar_text(name), scalar_text(ranges)) {
            (None, _) => problems.push(problem(format!(
                "a server name must be a single value, found {}",
                kind(name)
            ))),
            (Some(name), None) => problems.push(problem(format!(
                "server '{name}': slot ranges must be a single value such as '0-5460,6000', found {}",
                kind(ranges)
            ))),
            (Some(_), Some(_)) => {}
        }
    }
}

/// A [`Shape::Fields`] key must map some of its `fields` to single values.
fn check_fields(
    value: &Value,
    fields: &[&str],
    problem: &dyn Fn(String) -> Problem,
    problems: &mut Vec<Problem>,
) {
    let Value::Mapping(entries) = value else {
        problems.push(problem(format!(
            "must be a mapping of settings ({}), found {}",
            fields.join(", "),
            kind(value)
        )));
        return;
    };
    for (name, setting) in entries {
        match scalar_text(name) {
            Some(name) if fields.contains(&name.as_str()) => {
                if scalar_text(setting).is_none() {
                    problems.push(problem(format!(
                        "'{name}' must be a single value, found {}",
                        kind(setting)
                    )));
                }
            }
            Some(name) => problems.push(problem(format!(
                "unknown setting '{name}' (expected one of {})",
                fields.join(", ")
            ))),
            None => problems.push(problem(format!(
                "a setting name must be a single value, found {}",
                kind(name)
            ))),
        }
    }
}

/// The text of a scalar node; `None` for lists, mappings and tagged values (nutcracker rejects
/// YAML tags).
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => Some(String::new()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        Value::Sequence(_) | Value::Mapping(_) | Value::Tagged(_) => None,
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) | Value::Number(_) | Value::String(_) => "a single value",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value (YAML tags are not supported)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        match parse(text) {
            Ok(_) => Vec::new(),
            Err(problems) => problems.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn scalars_keep_the_text_nutcracker_sees() {
        let mut raw = parse(
            "a:\n  listen: 127.0.0.1:1\n  redis: True\n  redis_auth: ~\n  timeout:\n  \
             backlog: 0x10\n  hash_tag: \"{}\"\n  servers:\n   - 127.0.0.1:6379:1\n",
        )
        .unwrap();
        let (name, pool) = &mut raw.pools[0];
        assert_eq!(name, "a");
        assert_eq!(pool.scalar(Key::Redis).0.as_deref(), Some("True"));
        assert_eq!(pool.scalar(Key::RedisAuth).0.as_deref(), Some("~"));
        assert_eq!(pool.scalar(Key::Timeout).0.as_deref(), Some(""));
        assert_eq!(pool.scalar(Key::Backlog).0.as_deref(), Some("0x10"));
        assert_eq!(pool.scalar(Key::HashTag).0.as_deref(), Some("{}"));
        assert_eq!(pool.scalar(Key::Hash).0, None);
        assert_eq!(
            pool.lines(Key::Servers).as_deref(),
            Some(&["127.0.0.1:6379:1".to_owned()][..])
        );
    }

    #[test]
    fn fields_take_only_their_settings_as_single_values() {
        let check = |yaml: &str| {
            let value: Value = serde_yaml_ng::from_str(yaml).unwrap();
            let mut problems = Vec::new();
            let problem = |message: String| Problem::Key {
                pool: "p".into(),
                key: "tls".into(),
                message,
            };
            check_fields(&value, &["cert", "key"], &problem, &mut problems);
            problems.iter().map(ToString::to_string).collect::<Vec<_>>()
        };
        assert!(check("{cert: a.pem, key: a.key}").is_empty());
        assert!(check("{cert: a.pem}").is_empty());
        let wrong = check("{cert: [a], pass: x}").join("\n");
        assert!(wrong.contains("'cert' must be a single value"), "{wrong}");
        assert!(
            wrong.contains("unknown setting 'pass' (expected one of cert, key)"),
            "{wrong}"
        );
        let flat = check("a.pem").join("");
        assert!(
            flat.contains("must be a mapping of settings (cert, key)"),
            "{flat}"
        );
    }

    #[test]
    fn pools_keep_file_order() {
        let raw = parse("z:\n  listen: a:1\nb:\n  listen: a:2\nm:\n  listen: a:3\n").unwrap();
        let names: Vec<_> = raw.pools.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["z", "b", "m"]);
    }

    #[test]
    fn numeric_pool_names_are_text() {
        let raw = parse("123:\n  listen: a:1\n").unwrap();
        assert_eq!(raw.pools[0].0, "123");
    }

    #[test]
    fn empty_file_is_rejected() {
        assert_eq!(
            problems(""),
            ["the file is empty (expected a mapping of pool name to pool settings)"]
        );
        assert_eq!(problems("# only a comment\n").len(), 1);
    }

    #[test]
    fn non_mapping_root_is_rejected() {
        assert_eq!(
            problems("- a\n- b\n"),
            ["the top level must be a mapping of pool name to pool settings, found a list"]
        );
        assert_eq!(problems("hello\n").len(), 1);
    }

    #[test]
    fn empty_mapping_root_is_rejected() {
        assert_eq!(problems("{}\n"), ["the file has no pools"]);
    }

    #[test]
    fn pool_that_is_not_a_mapping_is_rejected() {
        assert_eq!(
            problems("a: x\nb:\n"),
            [
                "pool 'a': must be a mapping of settings, found a single value",
                "pool 'b': must be a mapping of settings, found nothing"
            ]
        );
    }

    #[test]
    fn unknown_keys_are_all_reported_with_pool_and_key() {
        let found = problems("a:\n  foo: 1\n  listen: x:1\nb:\n  bar: 2\n  baz: 3\n");
        assert_eq!(found.len(), 3);
        assert!(found[0].starts_with("pool 'a': key 'foo': unknown key (expected one of listen"));
        assert!(found[1].starts_with("pool 'b': key 'bar': unknown key"));
        assert!(found[2].starts_with("pool 'b': key 'baz': unknown key"));
    }

    #[test]
    fn list_where_a_value_belongs_is_rejected() {
        assert_eq!(
            problems("a:\n  hash:\n   - md5\n"),
            ["pool 'a': key 'hash': must be a single value, found a list"]
        );
    }

    #[test]
    fn mapping_where_a_value_belongs_is_rejected() {
        assert_eq!(
            problems("a:\n  hash:\n    x: y\n"),
            ["pool 'a': key 'hash': must be a single value, found a mapping"]
        );
    }

    #[test]
    fn servers_must_be_a_list_of_lines() {
        assert_eq!(
            problems("a:\n  servers: 127.0.0.1:6379:1\n"),
            ["pool 'a': key 'servers': must be a list of server lines, found a single value"]
        );
        assert_eq!(
            problems("a:\n  servers:\n   - [x]\n"),
            ["pool 'a': key 'servers': entry 1 must be a server line, found a list"]
        );
    }

    #[test]
    fn slots_keep_file_order_and_text() {
        let mut raw =
            parse("a:\n  slots:\n    s2: 0-5460, 6000\n    1: 6001\n    s0: ~\n").unwrap();
        let slots = raw.pools[0].1.slots().unwrap();
        assert_eq!(
            slots.0,
            [
                ("s2".to_owned(), "0-5460, 6000".to_owned()),
                ("1".to_owned(), "6001".to_owned()),
                ("s0".to_owned(), "~".to_owned())
            ]
        );
    }

    #[test]
    fn slots_must_be_a_mapping_of_single_values() {
        assert_eq!(
            problems("a:\n  slots: 0-16383\n"),
            ["pool 'a': key 'slots': must be a mapping of server name to slot ranges (e.g. 's1: 0-5460'), found a single value"]
        );
        assert_eq!(
            problems("a:\n  slots:\n    s1: [0-5460, 6000]\n"),
            ["pool 'a': key 'slots': server 's1': slot ranges must be a single value such as '0-5460,6000', found a list"]
        );
        assert_eq!(
            problems("a:\n  slots:\n    [s1]: 0\n"),
            ["pool 'a': key 'slots': a server name must be a single value, found a list"]
        );
    }

    #[test]
    fn sentinels_must_be_a_list_of_addresses() {
        let mut raw =
            parse("a:\n  sentinels:\n   - 10.0.0.5:26379\n  sentinel_auth: pw\n").unwrap();
        let pool = &mut raw.pools[0].1;
        assert_eq!(
            pool.lines(Key::Sentinels).as_deref(),
            Some(&["10.0.0.5:26379".to_owned()][..])
        );
        assert_eq!(pool.scalar(Key::SentinelAuth).0.as_deref(), Some("pw"));
        assert_eq!(
            problems("a:\n  sentinels:\n   - [x]\n"),
            ["pool 'a': key 'sentinels': entry 1 must be a Sentinel address, found a list"]
        );
    }

    #[test]
    fn tags_are_rejected() {
        assert_eq!(problems("a:\n  timeout: !foo 400\n").len(), 1);
    }

    #[test]
    fn duplicate_keys_are_rejected_with_line() {
        let err = parse("a:\n  hash: md5\n  hash: md5\n").unwrap_err();
        assert!(
            matches!(err[0], Problem::Syntax { line: Some(_), .. }),
            "{err:?}"
        );
        let err = parse("a:\n  listen: x:1\na:\n  listen: x:2\n").unwrap_err();
        assert!(err[0].to_string().contains("duplicate"), "{err:?}");
    }

    #[test]
    fn syntax_errors_carry_the_line() {
        let err = parse("a:\n  servers: [1\n").unwrap_err();
        assert!(
            matches!(err[0], Problem::Syntax { line: Some(3), .. }),
            "{err:?}"
        );
        assert!(err[0].to_string().contains("line 3"));
    }

    #[test]
    fn multiple_documents_are_rejected() {
        assert!(parse("a:\n  listen: x:1\n---\nb:\n  listen: x:2\n").is_err());
    }
}
