//! The stats JSON has nutcracker's shape: the real `nutcracker` runs on a one-pool config, its
//! stats port is read, and Keyway's `metrics::stats::render` for the same pool and server names
//! must have the same keys, in the same order, with the same value types and separators.
// Helpers outside `#[test]` fns (the JSON parser, readers) fail the test by panicking.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::io::Read;
use std::net::TcpStream;

use common::{pool_yaml, server_line, start_redis_servers, Proxy, ProxyKind, READ_TIMEOUT};
use keyway::metrics::{stats, Metrics};

/// A JSON value, objects keeping their key order (and duplicates).
#[derive(Debug, Clone, PartialEq)]
enum Json {
    Str(String),
    Int(i64),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn fields(&self) -> &[(String, Json)] {
        match self {
            Json::Obj(fields) => fields,
            other => panic!("{other:?} is not an object"),
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.fields().iter().map(|(k, _)| k.as_str()).collect()
    }

    fn get(&self, key: &str) -> &Json {
        &self
            .fields()
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("no key {key:?} in {self:?}"))
            .1
    }

    /// The value's shape: objects by their keys (in order) and their values' shapes.
    fn shape(&self) -> String {
        match self {
            Json::Str(_) => "string".into(),
            Json::Int(_) => "integer".into(),
            Json::Obj(fields) => {
                let inner: Vec<String> = fields
                    .iter()
                    .map(|(k, v)| format!("{k:?}: {}", v.shape()))
                    .collect();
                format!("{{{}}}", inner.join(", "))
            }
        }
    }
}

/// A strict parser for what stats documents use (objects, strings, integers); `Err` on anything
/// that is not valid JSON.
fn parse(text: &str) -> Result<Json, String> {
    let b = text.as_bytes();
    let mut pos = 0;
    let value = value(b, &mut pos)?;
    skip_ws(b, &mut pos);
    if pos != b.len() {
        return Err(format!("trailing bytes at {pos}"));
    }
    Ok(value)
}

fn skip_ws(b: &[u8], pos: &mut usize) {
    while b.get(*pos).is_some_and(u8::is_ascii_whitespace) {
        *pos += 1;
    }
}

fn byte(b: &[u8], pos: &mut usize) -> Result<u8, String> {
    let c = *b.get(*pos).ok_or("unexpected end")?;
    *pos += 1;
    Ok(c)
}

fn value(b: &[u8], pos: &mut usize) -> Result<Json, String> {
    skip_ws(b, pos);
    match b.get(*pos).copied().ok_or("unexpected end")? {
        b'{' => {
            *pos += 1;
            let mut fields = Vec::new();
            skip_ws(b, pos);
            if b.get(*pos) == Some(&b'}') {
                *pos += 1;
                return Ok(Json::Obj(fields));
            }
            loop {
                skip_ws(b, pos);
                let Json::Str(key) = value(b, pos)? else {
                    return Err(format!("object key is not a string at {pos}"));
                };
                skip_ws(b, pos);
                if byte(b, pos)? != b':' {
                    return Err(format!("expected ':' at {}", *pos - 1));
                }
                fields.push((key, value(b, pos)?));
                skip_ws(b, pos);
                match byte(b, pos)? {
                    b',' => {}
                    b'}' => return Ok(Json::Obj(fields)),
                    other => return Err(format!("unexpected {:?} at {}", other as char, *pos - 1)),
                }
            }
        }
        b'"' => {
            *pos += 1;
            let mut s = Vec::new();
            loop {
                match byte(b, pos)? {
                    b'"' => {
                        return String::from_utf8(s)
                            .map(Json::Str)
                            .map_err(|e| e.to_string())
                    }
                    b'\\' => match byte(b, pos)? {
                        e @ (b'"' | b'\\' | b'/') => s.push(e),
                        b'n' => s.push(b'\n'),
                        b'r' => s.push(b'\r'),
                        b't' => s.push(b'\t'),
                        b'u' => {
                            let hex = b.get(*pos..*pos + 4).ok_or("short \\u")?;
                            *pos += 4;
                            let code = u32::from_str_radix(std::str::from_utf8(hex).unwrap(), 16)
                                .map_err(|e| e.to_string())?;
                            let c = char::from_u32(code).ok_or("bad \\u")?;
                            s.extend_from_slice(c.to_string().as_bytes());
                        }
                        other => return Err(format!("bad escape {:?}", other as char)),
                    },
                    c if c < 0x20 => return Err("raw control byte in a string".into()),
                    c => s.push(c),
                }
            }
        }
        _ => {
            let start = *pos;
            if b.get(*pos) == Some(&b'-') {
                *pos += 1;
            }
            while b.get(*pos).is_some_and(u8::is_ascii_digit) {
                *pos += 1;
            }
            let text = std::str::from_utf8(&b[start..*pos]).unwrap();
            text.parse()
                .map(Json::Int)
                .map_err(|_| format!("not an integer at {start}: {text:?}"))
        }
    }
}

/// Everything the stats port writes before closing.
fn read_stats(port: u16) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the stats port");
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .expect("read the stats JSON");
    text
}

/// The document with every integer replaced by 0 and the host name by `HOST`: what remains is
/// keys, order and separators.
fn skeleton(text: &str, host: &str) -> String {
    let text = text.replace(&format!("\"source\":\"{host}\""), "\"source\":\"HOST\"");
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if in_string {
            in_string = escaped || c != '"';
            escaped = !escaped && c == '\\';
            out.push(c);
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if c.is_ascii_digit() || c == '-' {
            while chars.peek().is_some_and(char::is_ascii_digit) {
                chars.next();
            }
            out.push('0');
        } else {
            out.push(c);
        }
    }
    out
}

fn source(doc: &Json) -> String {
    match doc.get("source") {
        Json::Str(host) => host.clone(),
        other => panic!("source is {other:?}"),
    }
}

/// Keyway's document for the pools and server names (in order) of `nutcracker`'s document.
fn keyway_twin(nutcracker: &Json) -> String {
    let metrics = Metrics::new();
    let top_level = 7;
    for (pool, body) in nutcracker.fields().iter().skip(top_level) {
        let servers: Vec<String> = body
            .fields()
            .iter()
            .filter(|(_, v)| matches!(v, Json::Obj(_)))
            .map(|(k, _)| k.clone())
            .collect();
        metrics.pool(pool, &servers);
    }
    stats::render(&metrics)
}

#[test]
fn stats_json_has_nutcrackers_shape() {
    let backends = start_redis_servers(2);
    let servers = vec![
        server_line(&backends[0], 1, Some("s0")),
        server_line(&backends[1], 1, None),
    ];
    let nutcracker = Proxy::start_on_free_port(ProxyKind::Nutcracker, |port| {
        pool_yaml(port, &servers, &[("timeout", "5000")])
    });
    let mut client = nutcracker.client();
    for i in 0..20 {
        client.cmd(&["SET", &format!("key:{i}"), "v"]);
    }

    let theirs_text = read_stats(nutcracker.stats_port());
    let theirs = parse(&theirs_text).expect("nutcracker's JSON parses with plain names");
    let unnamed = format!("127.0.0.1:{}", backends[1].port());
    // nutcracker names an unnamed server host:port (its ketama name), without the weight.
    let mut server_names = theirs.get("alpha").keys()[6..].to_vec();
    server_names.sort_unstable();
    assert_eq!(server_names, [unnamed.as_str(), "s0"]);

    let ours_text = keyway_twin(&theirs);
    let ours = parse(&ours_text).expect("Keyway's JSON is valid");
    assert_eq!(ours.shape(), theirs.shape());
    assert_eq!(ours.get("service"), theirs.get("service"));
    assert_eq!(ours.get("version"), theirs.get("version"));
    assert_eq!(ours.get("service"), &Json::Str("nutcracker".into()));
    assert_eq!(ours.get("version"), &Json::Str("0.5.0".into()));
    assert_eq!(source(&ours), source(&theirs), "both report the host name");
    assert!(ours_text.ends_with("}\n") && theirs_text.ends_with("}\n"));
    assert_eq!(
        skeleton(&ours_text, &source(&ours)),
        skeleton(&theirs_text, &source(&theirs)),
        "same keys, order and separators"
    );
}

#[test]
fn nutcracker_writes_names_unescaped_keyway_escapes_them() {
    let backends = start_redis_servers(1);
    // The YAML scalar keeps the quotes and the backslash: the server's name is "we\"ird".
    let servers = vec![server_line(&backends[0], 1, Some(r#""we\"ird""#))];
    let nutcracker =
        Proxy::start_on_free_port(ProxyKind::Nutcracker, |port| pool_yaml(port, &servers, &[]));
    let theirs = read_stats(nutcracker.stats_port());
    assert!(theirs.contains(r#", ""we\"ird"": {"#), "{theirs}");
    assert!(parse(&theirs).is_err(), "nutcracker's quirk: invalid JSON");

    let metrics = Metrics::new();
    metrics.pool("alpha", &[r#""we\"ird""#.to_string()]);
    let ours = parse(&stats::render(&metrics)).expect("Keyway escapes names");
    assert_eq!(ours.get("alpha").keys()[6..], [r#""we\"ird""#]);
}

/// A proxy process started with a short stats interval, so its counters are fresh.
struct StatsProxy {
    child: std::process::Child,
    listen: u16,
    stats: u16,
    _dir: common::TempDir,
}

impl StatsProxy {
    fn start(
        binary: std::path::PathBuf,
        yaml_of: impl Fn(u16) -> String,
        extra: &[&str],
    ) -> StatsProxy {
        let dir = common::TempDir::new("stats");
        let (listen, stats) = (common::free_port(), common::free_port());
        let conf = dir.path().join("nutcracker.yml");
        std::fs::write(&conf, yaml_of(listen)).unwrap();
        let child = std::process::Command::new(binary)
            .arg("-c")
            .arg(&conf)
            .args([
                "-s",
                &stats.to_string(),
                "-a",
                "127.0.0.1",
                "-i",
                "100",
                "-v",
                "3",
            ])
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let up = common::wait_until(common::START_TIMEOUT, || {
            TcpStream::connect(("127.0.0.1", listen)).is_ok()
                && TcpStream::connect(("127.0.0.1", stats)).is_ok()
        });
        assert!(up, "proxy did not start");
        StatsProxy {
            child,
            listen,
            stats,
            _dir: dir,
        }
    }
}

impl Drop for StatsProxy {
    fn drop(&mut self) {
        common::signal(self.child.id(), "KILL");
        let _ = self.child.wait();
    }
}

/// An integer field of an object.
fn int(doc: &Json, key: &str) -> i64 {
    match doc.get(key) {
        Json::Int(n) => *n,
        other => panic!("{key} is {other:?}"),
    }
}

#[test]
fn the_same_traffic_gives_the_same_counters_as_nutcracker() {
    // Each proxy gets its own two backends, named alike, so both place every key alike.
    let run = |binary: std::path::PathBuf, extra: &[&str]| -> Json {
        let backends = start_redis_servers(2);
        let servers = vec![
            server_line(&backends[0], 1, Some("s0")),
            server_line(&backends[1], 1, Some("s1")),
        ];
        let proxy = StatsProxy::start(
            binary,
            |port| pool_yaml(port, &servers, &[("timeout", "5000")]),
            extra,
        );
        // The start-up probe's connection counts as one client EOF: take a settled baseline.
        std::thread::sleep(std::time::Duration::from_millis(300));
        let baseline = int(
            parse(&read_stats(proxy.stats)).unwrap().get("alpha"),
            "client_eof",
        );
        let mut client = common::Client::connect(&format!("127.0.0.1:{}", proxy.listen));
        for i in 0..50 {
            let key = format!("key:{i}:{}", i * 7919);
            client.cmd(&["SET", key.as_str(), "value"]);
            client.cmd(&["GET", key.as_str()]);
        }
        drop(client);
        // nutcracker aggregates every -i ms: wait until a read shows the whole run.
        let mut doc = parse(&read_stats(proxy.stats)).unwrap();
        let settled = common::wait_until(std::time::Duration::from_secs(10), || {
            doc = parse(&read_stats(proxy.stats)).unwrap();
            let pool = doc.get("alpha");
            int(pool.get("s0"), "requests") + int(pool.get("s1"), "requests") == 100
                && int(pool, "client_eof") == baseline + 1
        });
        assert!(settled, "counters never showed the run: {doc:?}");
        doc
    };
    let theirs = run(common::nutcracker_bin(), &[]);
    let ours = run(
        common::keyway_bin(),
        &[
            "--threads",
            "1",
            "--admin",
            &format!("127.0.0.1:{}", common::free_port()),
        ],
    );
    let (theirs, ours) = (theirs.get("alpha"), ours.get("alpha"));
    for pool_field in [
        "client_err",
        "client_connections",
        "server_ejects",
        "forward_error",
        "fragments",
    ] {
        assert_eq!(
            int(ours, pool_field),
            int(theirs, pool_field),
            "pool field {pool_field}"
        );
    }
    for server in ["s0", "s1"] {
        for field in [
            "requests",
            "request_bytes",
            "responses",
            "response_bytes",
            "server_eof",
            "server_err",
            "server_timedout",
            "server_ejected_at",
        ] {
            assert_eq!(
                int(ours.get(server), field),
                int(theirs.get(server), field),
                "server {server} field {field}"
            );
        }
    }
}
