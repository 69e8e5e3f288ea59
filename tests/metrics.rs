//! The Prometheus metrics measure what their help texts say, through the real binary and real
//! backends: request latency from arrival to reply (timeouts included), per-backend latency,
//! clients refused at `client_connections`.
// Helpers outside `#[test]` fns fail the test by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

use common::{http, wait_until, Client, Reply, Setup};

/// Generous bound for a metric to show what was just done (the proxy flushes per poll).
const SETTLE: Duration = Duration::from_secs(10);

/// The value of the sample `series` (name with its labels as rendered) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().unwrap())
    })
}

fn metrics(setup: &Setup) -> String {
    let (status, body) = http(setup.proxy.admin_port(), "GET", "/metrics");
    assert_eq!(status, 200, "{body}");
    body
}

/// `series` once it reaches at least `min`, or the last value seen (None if never present).
fn wait_for(setup: &Setup, series: &str, min: f64) -> Option<f64> {
    let mut last = None;
    wait_until(SETTLE, || {
        last = sample(&metrics(setup), series);
        last.is_some_and(|v| v >= min)
    });
    last
}

#[test]
fn a_timed_out_request_counts_in_the_pool_latency_histogram() {
    let setup = Setup::new(1, &[("timeout", "300")]);
    let count = "keyway_request_duration_seconds_count{pool=\"alpha\"}";
    let fast = "keyway_request_duration_seconds_bucket{pool=\"alpha\",le=\"0.25\"}";
    let all = "keyway_request_duration_seconds_bucket{pool=\"alpha\",le=\"+Inf\"}";
    // The start-up probe's PINGs count too: start from what is there.
    let before = metrics(&setup);
    let (count0, fast0, all0) = (
        sample(&before, count).unwrap(),
        sample(&before, fast).unwrap(),
        sample(&before, all).unwrap(),
    );
    setup.shards[0].pause();
    let mut client = setup.client();
    let reply = client.cmd(&["GET", "k"]);
    setup.shards[0].resume();
    assert_eq!(reply, Reply::Error("ERR Connection timed out".into()));
    let counted = wait_for(&setup, count, count0 + 1.0);
    assert_eq!(counted, Some(count0 + 1.0), "{}", metrics(&setup));
    let after = metrics(&setup);
    // It waited the whole timeout (300 ms) before its reply was ready: never in a fast bucket.
    assert_eq!(sample(&after, fast), Some(fast0), "{after}");
    assert_eq!(sample(&after, all), Some(all0 + 1.0), "{after}");
    // The backend never replied: nothing in its own histogram.
    let backend = "keyway_backend_request_duration_seconds_count{backend=\"s0\",pool=\"alpha\"}";
    assert_eq!(sample(&after, backend), Some(0.0), "{after}");
}

#[test]
fn locally_answered_and_backend_requests_count_in_the_pool_latency() {
    let setup = Setup::new(1, &[]);
    let count = "keyway_request_duration_seconds_count{pool=\"alpha\"}";
    let count0 = sample(&metrics(&setup), count).unwrap();
    let mut client = setup.client();
    assert_eq!(client.cmd(&["PING"]), Reply::Simple("PONG".into()));
    assert_eq!(client.cmd(&["SET", "k", "v"]), Reply::Simple("OK".into()));
    // A request the proxy refuses still gets its reply, and is counted.
    assert!(matches!(client.cmd(&["NOSUCHCOMMAND"]), Reply::Error(_)));
    assert_eq!(wait_for(&setup, count, count0 + 3.0), Some(count0 + 3.0));
}

#[test]
fn every_backend_has_a_latency_histogram_that_counts_its_replies() {
    let setup = Setup::new(2, &[]);
    let mut client = setup.client();
    let keys: Vec<String> = (0..40).map(|i| format!("key:{i}")).collect();
    for key in &keys {
        assert_eq!(client.cmd(&["SET", key, "v"]), Reply::Simple("OK".into()));
    }
    let on = |b: &str| {
        let series = format!(
            "keyway_backend_request_duration_seconds_count{{backend=\"{b}\",pool=\"alpha\"}}"
        );
        let text = metrics(&setup);
        (
            sample(&text, &series),
            sample(
                &text,
                &format!("keyway_responses_total{{backend=\"{b}\",pool=\"alpha\"}}"),
            ),
        )
    };
    let mut counted = (None, None);
    wait_until(SETTLE, || {
        counted = (on("s0").0, on("s1").0);
        counted.0.unwrap_or(0.0) + counted.1.unwrap_or(0.0) >= keys.len() as f64
    });
    let (s0, s1) = counted;
    let (s0, s1) = (s0.expect("s0's series"), s1.expect("s1's series"));
    assert!(s0 >= 1.0 && s1 >= 1.0, "both backends got keys: {s0} {s1}");
    assert!(s0 + s1 >= keys.len() as f64, "{s0} + {s1}");
    // One observation per reply the backend sent.
    for b in ["s0", "s1"] {
        let (latencies, responses) = on(b);
        assert_eq!(latencies, responses, "{b}");
    }
}

/// Whether the proxy served this connection (it answers PING) or closed it at once.
fn served(addr: &str) -> (TcpStream, bool) {
    let stream = TcpStream::connect(addr).unwrap();
    let mut client = Client::from_stream(stream.try_clone().unwrap());
    let ok = client.try_send_raw(b"PING\r\n").is_ok()
        && matches!(client.try_read_reply(), Ok(Reply::Simple(s)) if s == "PONG");
    (stream, ok)
}

#[test]
fn clients_past_client_connections_are_refused_and_counted() {
    let setup = Setup::new(1, &[("client_connections", "2")]);
    let refused = "keyway_client_refused_total{pool=\"alpha\"}";
    assert_eq!(sample(&metrics(&setup), refused), Some(0.0));
    let mut open = Vec::new();
    let mut turned_away = 0;
    for _ in 0..5 {
        let (stream, ok) = served(setup.proxy.addr());
        if ok {
            open.push(stream);
        } else {
            turned_away += 1;
            // Closed by the proxy: the read ends (end of stream or reset), it never hangs.
            let mut stream = stream;
            stream.set_read_timeout(Some(SETTLE)).unwrap();
            let mut rest = Vec::new();
            let ended = stream.read_to_end(&mut rest);
            assert!(ended.map_or(true, |_| rest.is_empty()), "{rest:?}");
        }
    }
    assert!(
        open.len() <= 2,
        "{} clients served past the limit",
        open.len()
    );
    assert!(turned_away >= 3, "{turned_away}");
    assert_eq!(
        wait_for(&setup, refused, turned_away as f64),
        Some(turned_away as f64)
    );
}
