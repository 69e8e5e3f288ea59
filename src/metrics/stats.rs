//! nutcracker's stats JSON, read from the same [`Metrics`] as the Prometheus text, and the stats
//! port that writes it to each client and closes (`-s`/`-a`), so twemproxy exporters keep working;
//! also `-D`'s description of the same fields ([`describe`]). Both list the stats the metric
//! table marks as nutcracker's, in its order.
//!
//! The document has nutcracker 0.5's exact shape, key names, key order and separators:
//!
//! ```text
//! {"service":"nutcracker", "source":"HOST", "version":"0.5.0", "uptime":S, "timestamp":S,
//!  "total_connections":N, "curr_connections":N, "POOL": {"client_eof":N, ..., "fragments":N,
//!  "SERVER": {"server_eof":N, ..., "out_queue_bytes":N},"SERVER": {...}},"POOL": {...}}\n
//! ```
//!
//! `version` is nutcracker's `"0.5.0"`, not Keyway's: exporters check it. Two nutcracker quirks
//! are deliberately *not* copied: it writes pool and server names unescaped (a name holding `"`
//! or `\` makes its output invalid JSON) and lists pools and servers in an order that does not
//! always follow the config; Keyway escapes names and keeps config order. Like nutcracker, a pool
//! or server whose name equals a sibling key (`"service"`, `"client_eof"`...) yields a duplicate
//! key.

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::table::{Stat, POOL_STATS, SERVER_STATS};
use super::{Metrics, PoolMetrics};

/// The `service` value.
pub const SERVICE: &str = "nutcracker";
/// The `version` value: nutcracker's version, so exporters that check it keep working.
pub const VERSION: &str = "0.5.0";
/// How long one stats client may take to read the document.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Back-off after a failed accept (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Documents being written at once; further clients wait in the listen backlog, so a flood of
/// connections that never read holds at most this many documents for `WRITE_TIMEOUT`.
const MAX_WRITERS: usize = 64;

/// The host name for `source`, read once like nutcracker's `gethostname` at start.
pub fn hostname() -> &'static str {
    static HOSTNAME: OnceLock<String> = OnceLock::new();
    HOSTNAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            // nutcracker's own fallback when gethostname fails
            .unwrap_or_else(|| "unknown".to_string())
    })
}

/// The stats JSON for `metrics` now, every value live.
pub fn render(metrics: &Metrics) -> String {
    let pools = metrics.pools();
    let mut out = header(metrics, &pools);
    out.push_str(&render_pools(&pools));
    out.push_str("}\n");
    out
}

/// The top-level fields. Connection counts follow nutcracker, which counts every connection
/// object: one listener per pool, plus clients, plus backend connections (attempts included in
/// `total_connections`); the stats connection itself is not counted.
fn header(metrics: &Metrics, pools: &[Arc<PoolMetrics>]) -> String {
    let listeners = pools.len() as u64;
    let mut total = listeners;
    let mut current = listeners as i64;
    for pool in pools {
        total = total.saturating_add(pool.client_connections_total.get());
        current = current.saturating_add(pool.client_connections.get());
        for backend in &pool.backends {
            total = total.saturating_add(backend.connections_total.get());
            current = current.saturating_add(backend.connections.get());
        }
    }
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut out = String::with_capacity(256);
    out.push_str("{\"service\":");
    push_str(&mut out, SERVICE);
    out.push_str(", \"source\":");
    push_str(&mut out, hostname());
    out.push_str(", \"version\":");
    push_str(&mut out, VERSION);
    let _ = write!(
        out,
        ", \"uptime\":{}, \"timestamp\":{timestamp}, \"total_connections\":{total}, \
         \"curr_connections\":{}",
        metrics.uptime().as_secs(),
        current.max(0),
    );
    out
}

/// Every pool object, each preceded by its separator (`, ` before the first, `,` after).
fn render_pools(pools: &[Arc<PoolMetrics>]) -> String {
    let mut out = String::with_capacity(pools.len() * 1024);
    for (i, pool) in pools.iter().enumerate() {
        out.push_str(if i == 0 { ", " } else { "," });
        push_str(&mut out, &pool.name);
        out.push_str(": {");
        push_fields(&mut out, POOL_STATS, pool);
        for (j, backend) in pool.backends.iter().enumerate() {
            out.push_str(if j == 0 { ", " } else { "," });
            push_str(&mut out, &backend.name);
            out.push_str(": {");
            push_fields(&mut out, SERVER_STATS, backend);
            out.push('}');
        }
        out.push('}');
    }
    out
}

/// `"key":value` for each stat, separated by `, ` as nutcracker does.
fn push_fields<M>(out: &mut String, stats: &[Stat<M>], metrics: &M) {
    for (i, stat) in stats.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "\"{}\":{}", stat.key, (stat.value)(metrics));
    }
}

/// nutcracker's `-D` (`--describe-stats`) text: each pool and server stat with its
/// description, in nutcracker's words and layout.
pub fn describe() -> String {
    let mut out = String::from("pool stats:\n");
    push_descriptions(&mut out, POOL_STATS);
    out.push_str("\nserver stats:\n");
    push_descriptions(&mut out, SERVER_STATS);
    out
}

fn push_descriptions<M>(out: &mut String, stats: &[Stat<M>]) {
    for stat in stats {
        let _ = writeln!(out, "  {:<20}\"{}\"", stat.key, stat.description);
    }
}

/// Appends `s` as a JSON string literal.
pub(crate) fn push_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Serves the stats port until `shutdown`: writes the JSON to each client, then closes, as
/// nutcracker does (whatever the client sends is ignored).
///
/// `interval` is nutcracker's `-i`/`--stats-interval`. nutcracker aggregates its counters every
/// `interval`, so its per-pool figures are up to `interval` old while the top-level fields
/// (uptime, timestamp, connection counts) are read live; Keyway does the same, re-reading the
/// pools at most once per `interval`. `Duration::ZERO` reads everything live on each connection.
pub async fn serve_stats(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let writers = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(MAX_WRITERS));
    let mut pools_json: Option<(Instant, String)> = None;
    loop {
        let slot = tokio::select! {
            () = shutdown.cancelled() => break,
            slot = Arc::clone(&slots).acquire_owned() => slot,
        };
        let Ok(slot) = slot else { break };
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "stats port: accept failed");
                    crate::timer::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let pools = metrics.pools();
        let fresh = match &pools_json {
            Some((at, json)) if !interval.is_zero() && at.elapsed() < interval => json.clone(),
            _ => {
                let json = render_pools(&pools);
                pools_json = Some((Instant::now(), json.clone()));
                json
            }
        };
        let mut document = header(&metrics, &pools);
        document.push_str(&fresh);
        document.push_str("}\n");
        writers.spawn(async move {
            write_and_close(stream, document).await;
            drop(slot);
        });
    }
    writers.close();
    writers.wait().await;
}

async fn write_and_close(mut stream: TcpStream, document: String) {
    let write = async {
        stream.write_all(document.as_bytes()).await?;
        stream.shutdown().await
    };
    match crate::timer::timeout(WRITE_TIMEOUT, write).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%error, "stats port: write failed"),
        Err(_) => tracing::debug!("stats port: client too slow, closed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use tokio::io::AsyncReadExt;

    /// A JSON value, objects keeping their key order (and duplicates).
    #[derive(Debug, Clone, PartialEq)]
    enum Json {
        Str(String),
        Int(i64),
        Obj(Vec<(String, Json)>),
    }

    impl Json {
        fn get(&self, key: &str) -> &Json {
            match self {
                Json::Obj(fields) => &fields.iter().find(|(k, _)| k == key).unwrap().1,
                other => panic!("{other:?} is not an object"),
            }
        }

        fn keys(&self) -> Vec<&str> {
            match self {
                Json::Obj(fields) => fields.iter().map(|(k, _)| k.as_str()).collect(),
                other => panic!("{other:?} is not an object"),
            }
        }

        fn int(&self) -> i64 {
            match self {
                Json::Int(i) => *i,
                other => panic!("{other:?} is not an integer"),
            }
        }
    }

    /// A strict parser for the subset the stats document uses: objects, strings, integers.
    fn parse(text: &str) -> Json {
        let bytes = text.as_bytes();
        let mut pos = 0;
        let value = parse_value(bytes, &mut pos);
        skip_ws(bytes, &mut pos);
        assert_eq!(pos, bytes.len(), "trailing bytes in {text}");
        value
    }

    fn skip_ws(b: &[u8], pos: &mut usize) {
        while b.get(*pos).is_some_and(|c| c.is_ascii_whitespace()) {
            *pos += 1;
        }
    }

    fn expect(b: &[u8], pos: &mut usize, c: u8) {
        skip_ws(b, pos);
        assert_eq!(
            b.get(*pos),
            Some(&c),
            "at {pos} of {:?}",
            std::str::from_utf8(b)
        );
        *pos += 1;
    }

    fn parse_value(b: &[u8], pos: &mut usize) -> Json {
        skip_ws(b, pos);
        match b[*pos] {
            b'{' => {
                *pos += 1;
                let mut fields = Vec::new();
                skip_ws(b, pos);
                if b[*pos] == b'}' {
                    *pos += 1;
                    return Json::Obj(fields);
                }
                loop {
                    skip_ws(b, pos);
                    let Json::Str(key) = parse_value(b, pos) else {
                        panic!("object key is not a string at {pos}")
                    };
                    expect(b, pos, b':');
                    fields.push((key, parse_value(b, pos)));
                    skip_ws(b, pos);
                    *pos += 1;
                    match b[*pos - 1] {
                        b',' => {}
                        b'}' => return Json::Obj(fields),
                        other => panic!("unexpected {:?} at {pos}", other as char),
                    }
                }
            }
            b'"' => {
                *pos += 1;
                let mut s = String::new();
                loop {
                    let c = b[*pos];
                    *pos += 1;
                    match c {
                        b'"' => return Json::Str(s),
                        b'\\' => {
                            let e = b[*pos];
                            *pos += 1;
                            match e {
                                b'"' | b'\\' | b'/' => s.push(e as char),
                                b'n' => s.push('\n'),
                                b'r' => s.push('\r'),
                                b't' => s.push('\t'),
                                b'u' => {
                                    let hex = std::str::from_utf8(&b[*pos..*pos + 4]).unwrap();
                                    *pos += 4;
                                    let code = u32::from_str_radix(hex, 16).unwrap();
                                    s.push(char::from_u32(code).unwrap());
                                }
                                other => panic!("bad escape {:?}", other as char),
                            }
                        }
                        c if c < 0x20 => panic!("raw control byte in string"),
                        _ => {
                            // copy the whole UTF-8 sequence
                            let start = *pos - 1;
                            let mut end = *pos;
                            while end < b.len() && (b[end] & 0xC0) == 0x80 {
                                end += 1;
                            }
                            s.push_str(std::str::from_utf8(&b[start..end]).unwrap());
                            *pos = end;
                        }
                    }
                }
            }
            _ => {
                let start = *pos;
                if b[*pos] == b'-' {
                    *pos += 1;
                }
                while b.get(*pos).is_some_and(u8::is_ascii_digit) {
                    *pos += 1;
                }
                let text = std::str::from_utf8(&b[start..*pos]).unwrap();
                Json::Int(
                    text.parse()
                        .unwrap_or_else(|_| panic!("not an integer: {text:?}")),
                )
            }
        }
    }

    const POOL_KEYS: [&str; 6] = [
        "client_eof",
        "client_err",
        "client_connections",
        "server_ejects",
        "forward_error",
        "fragments",
    ];
    const SERVER_KEYS: [&str; 13] = [
        "server_eof",
        "server_err",
        "server_timedout",
        "server_connections",
        "server_ejected_at",
        "requests",
        "request_bytes",
        "responses",
        "response_bytes",
        "in_queue",
        "in_queue_bytes",
        "out_queue",
        "out_queue_bytes",
    ];

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn document_has_nutcrackers_keys_in_its_order() {
        let metrics = Metrics::new();
        metrics.pool("alpha", &names(&["s0", "127.0.0.1:6380"]));
        metrics.pool("beta", &names(&["b0"]));
        let text = render(&metrics);
        assert!(text.ends_with("}\n"));
        let doc = parse(&text);
        assert_eq!(
            doc.keys(),
            [
                "service",
                "source",
                "version",
                "uptime",
                "timestamp",
                "total_connections",
                "curr_connections",
                "alpha",
                "beta"
            ]
        );
        assert_eq!(doc.get("service"), &Json::Str("nutcracker".into()));
        assert_eq!(doc.get("version"), &Json::Str("0.5.0".into()));
        assert_eq!(doc.get("source"), &Json::Str(hostname().into()));
        assert!(doc.get("timestamp").int() > 1_600_000_000);
        let alpha = doc.get("alpha");
        let mut keys: Vec<&str> = POOL_KEYS.to_vec();
        keys.extend(["s0", "127.0.0.1:6380"]);
        assert_eq!(alpha.keys(), keys);
        assert_eq!(alpha.get("s0").keys(), SERVER_KEYS);
        for key in SERVER_KEYS {
            assert_eq!(alpha.get("127.0.0.1:6380").get(key).int(), 0, "{key}");
        }
    }

    #[test]
    fn describe_is_nutcrackers_text() {
        let expected = "\
pool stats:
  client_eof          \"# eof on client connections\"
  client_err          \"# errors on client connections\"
  client_connections  \"# active client connections\"
  server_ejects       \"# times backend server was ejected\"
  forward_error       \"# times we encountered a forwarding error\"
  fragments           \"# fragments created from a multi-vector request\"

server stats:
  server_eof          \"# eof on server connections\"
  server_err          \"# errors on server connections\"
  server_timedout     \"# timeouts on server connections\"
  server_connections  \"# active server connections\"
  server_ejected_at   \"timestamp when server was ejected in usec since epoch\"
  requests            \"# requests\"
  request_bytes       \"total request bytes\"
  responses           \"# responses\"
  response_bytes      \"total response bytes\"
  in_queue            \"# requests in incoming queue\"
  in_queue_bytes      \"current request bytes in incoming queue\"
  out_queue           \"# requests in outgoing queue\"
  out_queue_bytes     \"current request bytes in outgoing queue\"
";
        assert_eq!(describe(), expected);
    }

    #[test]
    fn describe_and_the_document_list_the_same_keys() {
        let metrics = Metrics::new();
        metrics.pool("p", &names(&["s"]));
        let doc = parse(&render(&metrics));
        let text = describe();
        let (pool, server) = text.split_once("\n\n").unwrap();
        let keys = |section: &str| -> Vec<String> {
            section
                .lines()
                .skip(1)
                .map(|l| l.split_whitespace().next().unwrap().to_string())
                .collect()
        };
        let mut pool_keys = keys(pool);
        pool_keys.push("s".into());
        assert_eq!(doc.get("p").keys(), pool_keys);
        assert_eq!(doc.get("p").get("s").keys(), keys(server));
    }

    #[test]
    fn separators_match_nutcracker_byte_for_byte() {
        let metrics = Metrics::new();
        metrics.pool("a", &names(&["x", "y"]));
        metrics.pool("b", &names(&["z"]));
        let text = render(&metrics);
        let server = "{\"server_eof\":0, \"server_err\":0, \"server_timedout\":0, \
                      \"server_connections\":0, \"server_ejected_at\":0, \"requests\":0, \
                      \"request_bytes\":0, \"responses\":0, \"response_bytes\":0, \
                      \"in_queue\":0, \"in_queue_bytes\":0, \"out_queue\":0, \
                      \"out_queue_bytes\":0}";
        let pool = "{\"client_eof\":0, \"client_err\":0, \"client_connections\":0, \
                    \"server_ejects\":0, \"forward_error\":0, \"fragments\":0";
        let tail = format!(
            ", \"total_connections\":2, \"curr_connections\":2, \"a\": {pool}, \"x\": {server},\
             \"y\": {server}}},\"b\": {pool}, \"z\": {server}}}}}\n"
        );
        assert!(text.ends_with(&tail), "{text}\n{tail}");
        assert!(text.starts_with(&format!(
            "{{\"service\":\"nutcracker\", \"source\":\"{}\", \"version\":\"0.5.0\", \"uptime\":",
            hostname()
        )));
    }

    #[test]
    fn values_come_from_the_shared_metrics() {
        let metrics = Metrics::new();
        let pool = metrics.pool("alpha", &names(&["s0", "s1"]));
        pool.client_connections_total.inc_by(3);
        pool.client_connections.inc();
        pool.client_eof.inc_by(2);
        pool.client_err.inc();
        pool.forward_error.inc_by(4);
        pool.fragments.inc_by(5);
        pool.eject(1);
        let mut tally = pool.tally(1);
        tally.request(23);
        tally.response(5, 0.000_100);
        tally.flush();
        let s1 = &pool.backends[1];
        s1.server_eof.inc();
        s1.server_err.inc_by(2);
        s1.server_timedout.inc_by(3);
        s1.connections.inc();
        s1.connections_total.inc_by(4);
        s1.in_queue.inc();
        s1.in_queue_bytes.add(9);
        s1.out_queue.add(2);
        s1.out_queue_bytes.add(11);
        let doc = parse(&render(&metrics));
        // 1 listener + 1 client + 1 backend connection; 1 + 3 + 4
        assert_eq!(doc.get("curr_connections").int(), 3);
        assert_eq!(doc.get("total_connections").int(), 8);
        let alpha = doc.get("alpha");
        let pool_values: Vec<i64> = POOL_KEYS.iter().map(|k| alpha.get(k).int()).collect();
        assert_eq!(pool_values, [2, 1, 1, 1, 4, 5]);
        let server = alpha.get("s1");
        let at = server.get("server_ejected_at").int();
        assert_eq!(at, s1.ejected_at_usec.load(Ordering::Relaxed));
        assert!(at > 0);
        let values: Vec<i64> = SERVER_KEYS.iter().map(|k| server.get(k).int()).collect();
        assert_eq!(values, [1, 2, 3, 1, at, 1, 23, 1, 5, 1, 9, 2, 11]);
        assert_eq!(alpha.get("s0").get("requests").int(), 0);
    }

    #[test]
    fn forgotten_pools_leave_the_document() {
        let metrics = Metrics::new();
        metrics.pool("alpha", &names(&["s0"]));
        metrics.pool("beta", &names(&["s0"]));
        metrics.forget_pool("alpha");
        let doc = parse(&render(&metrics));
        assert_eq!(doc.keys().last(), Some(&"beta"));
        assert!(!doc.keys().contains(&"alpha"));
        assert_eq!(doc.get("curr_connections").int(), 1);
    }

    #[test]
    fn names_are_escaped_into_valid_json() {
        // nutcracker would write `""we\"ird""` here: invalid JSON.
        let metrics = Metrics::new();
        metrics.pool(
            "p\\1",
            &names(&["\"we\\\"ird\"", "tab\there", "nl\nbell\u{7}é"]),
        );
        let doc = parse(&render(&metrics));
        let pool = doc.get("p\\1");
        assert_eq!(
            &pool.keys()[POOL_KEYS.len()..],
            ["\"we\\\"ird\"", "tab\there", "nl\nbell\u{7}é"]
        );
    }

    #[test]
    fn a_pool_without_backends_is_still_valid_json() {
        let metrics = Metrics::new();
        metrics.pool("empty", &[]);
        let doc = parse(&render(&metrics));
        assert_eq!(doc.get("empty").keys(), POOL_KEYS);
        let none = Metrics::new();
        assert_eq!(parse(&render(&none)).keys().len(), 7);
    }

    async fn read_stats(addr: std::net::SocketAddr) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).await.unwrap();
        text
    }

    #[tokio::test]
    async fn stats_port_writes_the_document_and_closes() {
        let metrics = Metrics::new();
        let pool = metrics.pool("alpha", &names(&["s0"]));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve_stats(
            listener,
            Arc::clone(&metrics),
            Duration::ZERO,
            shutdown.clone(),
        ));
        let first = parse(&read_stats(addr).await);
        assert_eq!(first.get("alpha").get("s0").get("requests").int(), 0);
        let mut tally = pool.tally(0);
        tally.request(3);
        tally.flush();
        let second = parse(&read_stats(addr).await);
        assert_eq!(second.get("alpha").get("s0").get("requests").int(), 1);
        shutdown.cancel();
        crate::timer::timeout(Duration::from_secs(10), server)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn stats_port_refreshes_pools_once_per_interval_and_header_live() {
        let metrics = Metrics::new();
        let pool = metrics.pool("alpha", &names(&["s0"]));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve_stats(
            listener,
            Arc::clone(&metrics),
            Duration::from_secs(3600),
            shutdown.clone(),
        ));
        let _ = read_stats(addr).await;
        let mut tally = pool.tally(0);
        tally.request(3);
        tally.flush();
        pool.client_connections.inc();
        let doc = parse(&read_stats(addr).await);
        assert_eq!(doc.get("alpha").get("s0").get("requests").int(), 0);
        assert_eq!(doc.get("alpha").get("client_connections").int(), 0);
        assert_eq!(doc.get("curr_connections").int(), 2, "header is live");
        shutdown.cancel();
        crate::timer::timeout(Duration::from_secs(10), server)
            .await
            .unwrap()
            .unwrap();
    }
}
