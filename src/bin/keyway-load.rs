//! `keyway-load`: the load generator `scripts/bench.sh` runs for the workloads redis-benchmark
//! cannot drive, against Keyway or one Redis alike (RESP2, one address, loopback):
//!
//! - `pubsub`: subscribers on channels, publishers sending request-reply `PUBLISH`es; reports
//!   the publish rate, the delivery rate and the publish → delivery latency.
//! - `blpop`: producer/consumer pairs on lists, each consumer blocked in `BLPOP`, each
//!   producer pushing its next item once the last one was popped; reports pops per second and
//!   the push → pop latency (the wake-up of a blocked client).
//!
//! Every loop is bounded by a count and by `--max-seconds`. A run that loses, duplicates or
//! reorders a message or item exits 1 with what went wrong, so a proxy answering errors never
//! posts good numbers. One line of `key=value` results goes to stdout.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use clap::{Parser, Subcommand};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(about = "pub/sub and blocking-pop load for scripts/bench.sh")]
struct Cli {
    /// Address to load (Keyway's listen address or a Redis).
    #[arg(long, default_value = "127.0.0.1:6379")]
    addr: String,
    /// Hard bound on the measured phase; what is left undone then is reported as missing.
    #[arg(long, default_value_t = 30)]
    max_seconds: u64,
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Subcommand)]
enum Workload {
    /// Publishers and subscribers: publish rate, deliveries, publish → delivery latency.
    Pubsub {
        /// Subscriber connections, each on one channel (round robin).
        #[arg(long, default_value_t = 50)]
        subscribers: usize,
        /// Channels.
        #[arg(long, default_value_t = 10)]
        channels: usize,
        /// Publisher connections, each waiting for its PUBLISH reply before the next.
        #[arg(long, default_value_t = 4)]
        publishers: usize,
        /// Messages published in all.
        #[arg(long, default_value_t = 50000)]
        messages: usize,
        /// Payload bytes per message (at least the header: publisher, sequence, timestamp).
        #[arg(long, default_value_t = 64)]
        size: usize,
    },
    /// Producer/consumer pairs: pops per second and push → pop latency of a blocked BLPOP.
    Blpop {
        /// Producer/consumer pairs, each on its own list.
        #[arg(long, default_value_t = 20)]
        pairs: usize,
        /// Items pushed and popped in all.
        #[arg(long, default_value_t = 50000)]
        items: usize,
    },
}

// ---------------------------------------------------------------------------------- RESP

/// A RESP2 reply, as far as these workloads need it (texts are read through `Debug`, in
/// error messages).
#[derive(Debug)]
#[allow(dead_code)]
enum Value {
    Simple(Vec<u8>),
    Error(Vec<u8>),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Value>>),
}

/// One CRLF-terminated line at `at`: its text and the offset after it.
fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(at..)?;
    let end = memchr::memmem::find(rest, b"\r\n")?;
    Some((rest.get(..end)?, at + end + 2))
}

fn number(text: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad number in reply: {:?}", String::from_utf8_lossy(text)))
}

/// Parses one reply starting at `at`: `Ok(None)` while incomplete, else the value and the
/// offset after it.
fn parse(buf: &[u8], at: usize) -> Result<Option<(Value, usize)>, String> {
    let Some(&kind) = buf.get(at) else {
        return Ok(None);
    };
    let Some((text, next)) = line(buf, at + 1) else {
        return Ok(None);
    };
    Ok(Some(match kind {
        b'+' => (Value::Simple(text.to_vec()), next),
        b'-' => (Value::Error(text.to_vec()), next),
        b':' => (Value::Int(number(text)?), next),
        b'$' => {
            let n = number(text)?;
            if n < 0 {
                return Ok(Some((Value::Bulk(None), next)));
            }
            let end = next + usize::try_from(n).map_err(|e| e.to_string())?;
            match buf.get(next..end) {
                Some(data) if buf.get(end..end + 2).is_some() => {
                    (Value::Bulk(Some(data.to_vec())), end + 2)
                }
                _ => return Ok(None),
            }
        }
        b'*' => {
            let n = number(text)?;
            if n < 0 {
                return Ok(Some((Value::Array(None), next)));
            }
            let mut items = Vec::new();
            let mut at = next;
            for _ in 0..n {
                match parse(buf, at)? {
                    Some((item, after)) => {
                        items.push(item);
                        at = after;
                    }
                    None => return Ok(None),
                }
            }
            (Value::Array(Some(items)), at)
        }
        other => return Err(format!("unexpected reply type byte {other:#04x}")),
    }))
}

fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// One client connection: requests out, replies (or pushed messages) in.
struct Conn {
    stream: TcpStream,
    input: BytesMut,
    output: Vec<u8>,
}

impl Conn {
    async fn open(addr: &str) -> Result<Conn, String> {
        let stream = keyway::timer::timeout(Duration::from_secs(5), TcpStream::connect(addr))
            .await
            .map_err(|_| format!("connect to {addr}: timed out"))?
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        Ok(Conn {
            stream,
            input: BytesMut::with_capacity(64 * 1024),
            output: Vec::with_capacity(1024),
        })
    }

    async fn send(&mut self, args: &[&[u8]]) -> Result<(), String> {
        self.output.clear();
        encode(&mut self.output, args);
        self.stream
            .write_all(&self.output)
            .await
            .map_err(|e| format!("write: {e}"))
    }

    /// The next value; an error reply is an error.
    async fn read(&mut self) -> Result<Value, String> {
        loop {
            if let Some((value, used)) = parse(&self.input, 0)? {
                self.input.advance(used);
                if let Value::Error(text) = &value {
                    return Err(format!("error reply: {}", String::from_utf8_lossy(text)));
                }
                return Ok(value);
            }
            if self.input.capacity() - self.input.len() < 16 * 1024 {
                self.input.reserve(64 * 1024);
            }
            let n = self
                .stream
                .read_buf(&mut self.input)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("connection closed".into());
            }
        }
    }

    async fn call(&mut self, args: &[&[u8]]) -> Result<Value, String> {
        self.send(args).await?;
        self.read().await
    }
}

// ------------------------------------------------------------------------------ results

/// Nanoseconds since `origin`, the clock every task of the run shares.
fn nanos_since(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// p50 and p99 of `samples` (nanoseconds) in milliseconds.
fn percentiles(samples: &mut [u64]) -> (f64, f64) {
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples.get(i).map_or(0.0, |ns| *ns as f64 / 1e6)
    };
    (at(0.50), at(0.99))
}

/// `<publisher or pair>:<sequence>:<nanos>:` padded to `size` bytes.
fn payload(who: usize, seq: usize, sent: u64, size: usize) -> Vec<u8> {
    let mut p = format!("{who}:{seq}:{sent}:").into_bytes();
    if p.len() < size {
        p.resize(size, b'x');
    }
    p
}

fn parse_payload(p: &[u8]) -> Result<(usize, usize, u64), String> {
    let bad = || format!("foreign payload {:?}", String::from_utf8_lossy(p));
    let mut fields = p.split(|b| *b == b':');
    let mut next = || -> Result<u64, String> {
        let field = fields.next().ok_or_else(bad)?;
        number(field)
            .ok()
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(bad)
    };
    let who = usize::try_from(next()?).map_err(|e| e.to_string())?;
    let seq = usize::try_from(next()?).map_err(|e| e.to_string())?;
    Ok((who, seq, next()?))
}

// ------------------------------------------------------------------------------ pub/sub

/// What one subscriber saw.
struct Seen {
    latencies: Vec<u64>,
    problems: Vec<String>,
}

async fn subscriber(
    mut conn: Conn,
    publishers: usize,
    origin: Instant,
    delivered: Arc<AtomicU64>,
    stop: CancellationToken,
) -> Seen {
    let mut seen = Seen {
        latencies: Vec::new(),
        problems: Vec::new(),
    };
    let mut last = vec![None::<usize>; publishers];
    loop {
        let value = tokio::select! {
            v = conn.read() => v,
            () = stop.cancelled() => break,
        };
        let message = match value {
            Ok(Value::Array(Some(items))) => items,
            Ok(other) => {
                seen.problems.push(format!("unexpected push {other:?}"));
                break;
            }
            Err(e) => {
                seen.problems.push(e);
                break;
            }
        };
        let data = match message.as_slice() {
            [Value::Bulk(Some(kind)), _, Value::Bulk(Some(data))] if kind == b"message" => data,
            other => {
                seen.problems.push(format!("unexpected message {other:?}"));
                break;
            }
        };
        match parse_payload(data) {
            Ok((who, seq, sent)) => {
                seen.latencies
                    .push(nanos_since(origin).saturating_sub(sent));
                delivered.fetch_add(1, Ordering::Relaxed);
                match last.get_mut(who) {
                    Some(prev) if prev.is_some_and(|p| p >= seq) => {
                        seen.problems.push(format!(
                            "publisher {who}: message {seq} after {prev:?} (duplicate or reordered)"
                        ));
                    }
                    Some(prev) => *prev = Some(seq),
                    None => seen.problems.push(format!("unknown publisher {who}")),
                }
            }
            Err(e) => seen.problems.push(e),
        }
    }
    seen
}

struct Published {
    count: usize,
    receivers: u64,
    elapsed: Duration,
}

#[allow(clippy::too_many_arguments)] // one publisher's share of the run, spelled out
async fn publisher(
    addr: String,
    who: usize,
    publishers: usize,
    channels: Vec<Vec<u8>>,
    messages: usize,
    size: usize,
    origin: Instant,
    deadline: Instant,
) -> Result<Published, String> {
    let mut conn = Conn::open(&addr).await?;
    let start = Instant::now();
    let mut count = 0;
    let mut receivers = 0u64;
    for seq in (who..messages).step_by(publishers) {
        if Instant::now() >= deadline {
            break;
        }
        let channel = channels
            .get(seq % channels.len())
            .ok_or("no channel")?
            .clone();
        let data = payload(who, seq, nanos_since(origin), size);
        match conn.call(&[b"PUBLISH", &channel, &data]).await? {
            Value::Int(n) => receivers += u64::try_from(n).map_err(|e| e.to_string())?,
            other => return Err(format!("PUBLISH answered {other:?}")),
        }
        count += 1;
    }
    Ok(Published {
        count,
        receivers,
        elapsed: start.elapsed(),
    })
}

async fn pubsub(
    addr: &str,
    limit: Duration,
    subscribers: usize,
    channels: usize,
    publishers: usize,
    messages: usize,
    size: usize,
) -> Result<String, String> {
    if subscribers == 0 || channels == 0 || publishers == 0 {
        return Err("subscribers, channels and publishers must be at least 1".into());
    }
    let names: Vec<Vec<u8>> = (0..channels)
        .map(|c| format!("bench-channel-{c}").into_bytes())
        .collect();
    let origin = Instant::now();
    let stop = CancellationToken::new();
    let delivered = Arc::new(AtomicU64::new(0));
    let mut listening = Vec::new();
    for s in 0..subscribers {
        let mut conn = Conn::open(addr).await?;
        let channel = names.get(s % channels).ok_or("no channel")?;
        match conn.call(&[b"SUBSCRIBE", channel]).await? {
            Value::Array(Some(items)) if items.len() == 3 => {}
            other => return Err(format!("SUBSCRIBE answered {other:?}")),
        }
        listening.push(tokio::spawn(subscriber(
            conn,
            publishers,
            origin,
            delivered.clone(),
            stop.clone(),
        )));
    }
    let deadline = Instant::now() + limit;
    let start = Instant::now();
    let tasks: Vec<_> = (0..publishers)
        .map(|who| {
            tokio::spawn(publisher(
                addr.to_string(),
                who,
                publishers,
                names.clone(),
                messages,
                size,
                origin,
                deadline,
            ))
        })
        .collect();
    let (mut published, mut receivers, mut publish_time) = (0, 0u64, Duration::ZERO);
    for task in tasks {
        let p = task.await.map_err(|e| e.to_string())??;
        published += p.count;
        receivers += p.receivers;
        publish_time = publish_time.max(p.elapsed);
    }
    // Deliveries still in flight arrive within a moment (5 s at most); then the subscribers stop.
    let expected: u64 = (0..published)
        .map(|seq| {
            ((0..subscribers)
                .filter(|s| s % channels == seq % channels)
                .count()) as u64
        })
        .sum();
    let wait_until = Instant::now() + Duration::from_secs(5);
    while delivered.load(Ordering::Relaxed) < expected && Instant::now() < wait_until {
        keyway::timer::sleep(Duration::from_millis(10)).await;
    }
    let end = start.elapsed();
    stop.cancel();
    let mut seen = Vec::new();
    for task in listening {
        seen.push(task.await.map_err(|e| e.to_string())?);
    }
    let delivered: u64 = seen.iter().map(|s| s.latencies.len() as u64).sum();
    let problems: Vec<String> = seen.iter().flat_map(|s| s.problems.clone()).collect();
    let mut latencies: Vec<u64> = seen.into_iter().flat_map(|s| s.latencies).collect();
    let (p50, p99) = percentiles(&mut latencies);
    let summary = format!(
        "workload=pubsub subscribers={subscribers} channels={channels} publishers={publishers} \
         published={published} of={messages} publish_per_sec={:.0} receivers={receivers} \
         expected={expected} delivered={delivered} deliver_per_sec={:.0} p50_ms={p50:.3} \
         p99_ms={p99:.3} elapsed_s={:.3}",
        published as f64 / publish_time.as_secs_f64(),
        delivered as f64 / end.as_secs_f64(),
        end.as_secs_f64(),
    );
    if let Some(first) = problems.first() {
        return Err(format!(
            "{summary}\n{} problems, first: {first}",
            problems.len()
        ));
    }
    if published < messages || receivers != expected || delivered != expected {
        return Err(format!(
            "{summary}\nincomplete: published {published} of {messages}, PUBLISH counted \
             {receivers} receivers, {delivered} delivered, {expected} expected"
        ));
    }
    Ok(summary)
}

// ------------------------------------------------------------------------- blocking pops

/// One consumer: BLPOP until the producer's stop item; each popped item's latency.
async fn consumer(
    addr: String,
    pair: usize,
    key: Vec<u8>,
    origin: Instant,
    popped: mpsc::Sender<()>,
) -> Result<Vec<u64>, String> {
    let mut conn = Conn::open(&addr).await?;
    let mut latencies = Vec::new();
    let mut next = 0;
    conn.send(&[b"BLPOP", &key, b"10"]).await?;
    loop {
        let value = conn.read().await?;
        let data = match value {
            Value::Array(Some(items)) => match items.as_slice() {
                [Value::Bulk(Some(_)), Value::Bulk(Some(data))] => data.clone(),
                other => return Err(format!("BLPOP answered {other:?}")),
            },
            Value::Array(None) | Value::Bulk(None) => {
                return Err(format!("pair {pair}: BLPOP timed out after 10 s"))
            }
            other => return Err(format!("BLPOP answered {other:?}")),
        };
        if data == b"stop" {
            return Ok(latencies);
        }
        let (who, seq, sent) = parse_payload(&data)?;
        latencies.push(nanos_since(origin).saturating_sub(sent));
        if who != pair || seq != next {
            return Err(format!(
                "pair {pair}: popped item {who}:{seq}, expected {pair}:{next}"
            ));
        }
        next += 1;
        // The next BLPOP is on the wire before the producer is told to push again.
        conn.send(&[b"BLPOP", &key, b"10"]).await?;
        popped
            .send(())
            .await
            .map_err(|_| "producer gone".to_string())?;
    }
}

/// One producer: LPUSH an item, wait until it was popped, repeat; then the stop item.
async fn producer(
    addr: String,
    pair: usize,
    key: Vec<u8>,
    items: usize,
    origin: Instant,
    deadline: Instant,
    mut popped: mpsc::Receiver<()>,
) -> Result<usize, String> {
    let mut conn = Conn::open(&addr).await?;
    let mut pushed = 0;
    for seq in 0..items {
        if Instant::now() >= deadline {
            break;
        }
        let data = payload(pair, seq, nanos_since(origin), 16);
        match conn.call(&[b"LPUSH", &key, &data]).await? {
            Value::Int(_) => {}
            other => return Err(format!("LPUSH answered {other:?}")),
        }
        pushed += 1;
        keyway::timer::timeout(Duration::from_secs(10), popped.recv())
            .await
            .map_err(|_| format!("pair {pair}: item {seq} not popped within 10 s"))?
            .ok_or("consumer gone")?;
    }
    conn.call(&[b"LPUSH", &key, b"stop"]).await?;
    Ok(pushed)
}

async fn blpop(addr: &str, limit: Duration, pairs: usize, items: usize) -> Result<String, String> {
    if pairs == 0 {
        return Err("pairs must be at least 1".into());
    }
    let origin = Instant::now();
    let mut cleanup = Conn::open(addr).await?;
    let keys: Vec<Vec<u8>> = (0..pairs)
        .map(|p| format!("bench-list-{p}").into_bytes())
        .collect();
    for key in &keys {
        cleanup.call(&[b"DEL", key]).await?;
    }
    let mut consumers = Vec::new();
    let mut producers = Vec::new();
    let deadline = Instant::now() + limit;
    let start = Instant::now();
    for (pair, key) in keys.iter().enumerate() {
        let (tx, rx) = mpsc::channel(1);
        consumers.push(tokio::spawn(consumer(
            addr.to_string(),
            pair,
            key.clone(),
            origin,
            tx,
        )));
        let share = items / pairs + usize::from(pair < items % pairs);
        producers.push(tokio::spawn(producer(
            addr.to_string(),
            pair,
            key.clone(),
            share,
            origin,
            deadline,
            rx,
        )));
    }
    // A consumer's error (say, the BLPOP's error reply) is the cause of its producer's, so it
    // is the one reported.
    let mut pushed = 0;
    let mut producer_error = None;
    for task in producers {
        match task.await.map_err(|e| e.to_string())? {
            Ok(n) => pushed += n,
            Err(e) => producer_error = producer_error.or(Some(e)),
        }
    }
    let mut latencies = Vec::new();
    for task in consumers {
        latencies.extend(task.await.map_err(|e| e.to_string())??);
    }
    if let Some(e) = producer_error {
        return Err(e);
    }
    let end = start.elapsed();
    let popped = latencies.len();
    let (p50, p99) = percentiles(&mut latencies);
    let summary = format!(
        "workload=blpop pairs={pairs} pushed={pushed} of={items} popped={popped} \
         pop_per_sec={:.0} p50_ms={p50:.3} p99_ms={p99:.3} elapsed_s={:.3}",
        popped as f64 / end.as_secs_f64(),
        end.as_secs_f64()
    );
    if pushed < items || popped != pushed {
        return Err(format!(
            "{summary}\nincomplete: pushed {pushed} of {items}, popped {popped}"
        ));
    }
    Ok(summary)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("keyway-load: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let limit = Duration::from_secs(cli.max_seconds);
    let result = runtime.block_on(async {
        match cli.workload {
            Workload::Pubsub {
                subscribers,
                channels,
                publishers,
                messages,
                size,
            } => {
                pubsub(
                    &cli.addr,
                    limit,
                    subscribers,
                    channels,
                    publishers,
                    messages,
                    size,
                )
                .await
            }
            Workload::Blpop { pairs, items } => blpop(&cli.addr, limit, pairs, items).await,
        }
    });
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("keyway-load: {e}");
            ExitCode::FAILURE
        }
    }
}
