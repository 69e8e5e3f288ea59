//! Redis Sentinel: asks the Sentinels where each master is (at start and on every reload), then
//! watches them — `+switch-master` messages, and a periodic re-check in case one was missed — and
//! re-points the shard through [`Control::repoint`] when a master moves.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::client::{unexpected, Access, Connection, Error, Value};
use super::{Control, ReloadError, ResolveError};
use crate::backend::pool::Pool;
use crate::config::{BackendAddr, Config, HostPort, SentinelConfig};
use crate::shutdown::Shutdown;

#[cfg(test)]
use super::client::parse_value;

/// Bound on connecting to a Sentinel and on each of its replies.
const TIMEOUT: Duration = Duration::from_secs(1);
/// How often each master's address is asked again, in case a `+switch-master` was missed.
const RECHECK: Duration = Duration::from_secs(5);
/// How often a subscribed connection is pinged, and how long it may stay silent before it is
/// taken for dead and reconnected.
const PING_EVERY: Duration = Duration::from_secs(5);
const SILENCE: Duration = Duration::from_secs(15);
/// First and largest pause between attempts to reach a Sentinel.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Largest reply accepted from a Sentinel; the few replies Keyway asks for are tiny.
const MAX_REPLY: usize = 64 * 1024;
/// The channel Sentinel announces failovers on.
const SWITCH_CHANNEL: &str = "+switch-master";

/// Connects to a Sentinel (over TLS and authenticating as `access` says).
async fn open(addr: &HostPort, access: &Access) -> Result<Connection, Error> {
    Connection::open(addr, access, TIMEOUT, MAX_REPLY).await
}

/// A `+switch-master` announcement: `<master> <old-ip> <old-port> <new-ip> <new-port>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switch {
    /// The master's name.
    pub master: String,
    /// Where it is now.
    pub addr: BackendAddr,
}

impl Switch {
    /// Parses a `+switch-master` message's payload; `None` when it is not one.
    ///
    /// ```
    /// use keyway::config::BackendAddr;
    /// use keyway::control::sentinel::Switch;
    /// let switch = Switch::parse(b"shard-1 127.0.0.1 7001 127.0.0.1 7002").unwrap();
    /// assert_eq!(switch.master, "shard-1");
    /// assert_eq!(switch.addr, BackendAddr::Tcp { host: "127.0.0.1".into(), port: 7002 });
    /// ```
    pub fn parse(payload: &[u8]) -> Option<Switch> {
        let text = std::str::from_utf8(payload).ok()?;
        let mut words = text.split_ascii_whitespace();
        let (master, _old_ip, _old_port, ip, port) = (
            words.next()?,
            words.next()?,
            words.next()?,
            words.next()?,
            words.next()?,
        );
        if words.next().is_some() {
            return None;
        }
        Some(Switch {
            master: master.to_owned(),
            addr: backend_addr(ip, port)?,
        })
    }
}

/// `ip` and `port` as Sentinel sends them, as a backend address.
fn backend_addr(ip: &str, port: &str) -> Option<BackendAddr> {
    let port: u16 = port.parse().ok().filter(|&p| p != 0)?;
    (!ip.is_empty()).then(|| BackendAddr::Tcp {
        host: ip.to_owned(),
        port,
    })
}

/// Asks one Sentinel where `master` is (`SENTINEL get-master-addr-by-name`).
///
/// # Errors
/// The Sentinel could not be reached, refused, or does not monitor `master`.
pub async fn master_addr(
    sentinel: &HostPort,
    access: &Access,
    master: &str,
) -> Result<BackendAddr, Error> {
    let mut connection = open(sentinel, access).await?;
    let reply = connection
        .call(&[b"SENTINEL", b"get-master-addr-by-name", master.as_bytes()])
        .await?;
    match reply {
        Value::Array(Some(items)) => match items.as_slice() {
            [Value::Bulk(Some(ip)), Value::Bulk(Some(port))] => {
                backend_addr(&String::from_utf8_lossy(ip), &String::from_utf8_lossy(port))
                    .ok_or_else(|| Error::Protocol("address is not ip and port".into()))
            }
            _ => Err(Error::Protocol(format!("{items:?}"))),
        },
        Value::Array(None) | Value::Bulk(None) => {
            Err(Error::Protocol("does not monitor this master".into()))
        }
        other => Err(unexpected(other)),
    }
}

/// Asks the Sentinels in turn, starting with the one at `*first` (the last that answered, so
/// an unreachable Sentinel costs one timeout per pool, not one per master), until one knows
/// where `master` is; `*first` then points at it.
async fn ask_any(
    sentinel: &SentinelConfig,
    access: &Access,
    master: &str,
    first: &mut usize,
) -> Result<BackendAddr, String> {
    let count = sentinel.sentinels.len();
    let mut failures = Vec::with_capacity(count);
    for index in (0..count).map(|i| (*first + i) % count) {
        let Some(addr) = sentinel.sentinels.get(index) else {
            continue;
        };
        match master_addr(addr, access, master).await {
            Ok(found) => {
                *first = index;
                return Ok(found);
            }
            Err(error) => failures.push(format!("{addr}: {error}")),
        }
    }
    Err(failures.join("; "))
}

/// Fills in the address of every Sentinel pool's backend, asking the Sentinels (any one that
/// answers is enough for a master). A config without Sentinel pools is left as it is.
///
/// # Errors
/// Every master no Sentinel could place, naming its pool; `config` may then be partly filled
/// in and must not be used.
pub async fn resolve(config: &mut Config) -> Result<(), ReloadError> {
    let mut problems = Vec::new();
    for pool in &mut config.pools {
        let Some(sentinel) = &pool.sentinel else {
            continue;
        };
        let mut first = 0;
        let access = Access::of(pool, sentinel.auth.as_deref());
        for server in &mut pool.servers {
            let master = server.ketama_name();
            match ask_any(sentinel, &access, &master, &mut first).await {
                Ok(addr) => {
                    tracing::info!(pool = %pool.name, master, addr = %addr, "Sentinel: master found");
                    server.addr = addr;
                }
                Err(cause) => problems.push(ResolveError::Sentinel {
                    pool: pool.name.clone(),
                    master,
                    cause,
                }),
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ReloadError::Resolve(problems))
    }
}

/// The Sentinel pools being watched: per pool its name, Sentinel settings, how they are
/// reached and master names.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Watched(Vec<(String, SentinelConfig, Access, Vec<String>)>);

impl Watched {
    /// The Sentinel pools of `pools`.
    pub fn of(pools: &[Arc<Pool>]) -> Watched {
        Watched(
            pools
                .iter()
                .filter_map(|pool| {
                    let config = pool.config();
                    let sentinel = config.sentinel.clone()?;
                    let masters = config.servers.iter().map(|s| s.ketama_name()).collect();
                    let access = Access::of(config, sentinel.auth.as_deref());
                    Some((config.name.clone(), sentinel, access, masters))
                })
                .collect(),
        )
    }
}

/// What the watchers of one Sentinel pool share.
struct Watch {
    control: Weak<Control>,
    pool: String,
    sentinel: SentinelConfig,
    access: Access,
    masters: Vec<String>,
    stop: Shutdown,
}

/// Starts watching every Sentinel pool of `pools`: one task per Sentinel subscribed to
/// `+switch-master`, and one per pool re-asking the addresses every `RECHECK`. They run until
/// `stop` is cancelled (the control cancels it when it installs another config).
pub fn watch(control: Weak<Control>, pools: &[Arc<Pool>], stop: &Shutdown) {
    for pool in pools {
        let config = pool.config();
        let Some(sentinel) = &config.sentinel else {
            continue;
        };
        let watch = Arc::new(Watch {
            control: control.clone(),
            pool: config.name.clone(),
            sentinel: sentinel.clone(),
            access: Access::of(config, sentinel.auth.as_deref()),
            masters: config.servers.iter().map(|s| s.ketama_name()).collect(),
            stop: stop.clone(),
        });
        for addr in &sentinel.sentinels {
            tokio::spawn(subscribe(Arc::clone(&watch), addr.clone()));
        }
        tokio::spawn(recheck(watch));
    }
}

/// Pauses between attempts to reach a Sentinel, doubling up to [`BACKOFF_MAX`].
struct Backoff(Duration);

impl Backoff {
    fn next(&mut self) -> Duration {
        let pause = self.0;
        self.0 = (self.0 * 2).min(BACKOFF_MAX);
        pause
    }

    fn reset(&mut self) {
        self.0 = BACKOFF_MIN;
    }
}

/// Stays subscribed to `+switch-master` on one Sentinel, reconnecting with backoff.
async fn subscribe(watch: Arc<Watch>, addr: HostPort) {
    let mut backoff = Backoff(BACKOFF_MIN);
    loop {
        let outcome = tokio::select! {
            () = watch.stop.cancelled() => return,
            outcome = listen(&watch, &addr, &mut backoff) => outcome,
        };
        match outcome {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(pool = %watch.pool, sentinel = %addr, %error, "Sentinel subscription lost; reconnecting");
            }
        }
        tokio::select! {
            () = watch.stop.cancelled() => return,
            () = crate::timer::sleep(backoff.next()) => {}
        }
    }
}

/// One subscription: applies each switch of a watched master until the connection fails.
/// `Ok` only when the control is gone.
async fn listen(watch: &Watch, addr: &HostPort, backoff: &mut Backoff) -> Result<(), Error> {
    let mut connection = open(addr, &watch.access).await?;
    match connection
        .call(&[b"SUBSCRIBE", SWITCH_CHANNEL.as_bytes()])
        .await?
    {
        Value::Array(Some(_)) => {}
        other => return Err(unexpected(other)),
    }
    backoff.reset();
    tracing::debug!(pool = %watch.pool, sentinel = %addr, "subscribed to +switch-master");
    let mut ping = crate::timer::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
    let mut heard = Instant::now();
    loop {
        tokio::select! {
            _ = ping.tick() => {
                if heard.elapsed() > SILENCE {
                    return Err(Error::Timeout);
                }
                connection.send(&[b"PING"]).await?;
            }
            value = connection.read() => {
                heard = Instant::now();
                let Some(switch) = switch_of(&value?) else {
                    continue;
                };
                if !watch.masters.contains(&switch.master) {
                    continue;
                }
                let Some(control) = watch.control.upgrade() else {
                    return Ok(());
                };
                apply(control, watch, switch, "+switch-master").await;
            }
        }
    }
}

/// The switch a pub/sub message announces, if it is one.
fn switch_of(value: &Value) -> Option<Switch> {
    let Value::Array(Some(items)) = value else {
        return None;
    };
    match items.as_slice() {
        [Value::Bulk(Some(kind)), Value::Bulk(Some(channel)), Value::Bulk(Some(payload))]
            if kind == b"message" && channel == SWITCH_CHANNEL.as_bytes() =>
        {
            Switch::parse(payload)
        }
        _ => None,
    }
}

/// Re-points `switch.master` of the watched pool through the control. The re-point runs as its
/// own task: a watcher stopped meanwhile (a reload) must not abandon it halfway through
/// installing.
async fn apply(control: Arc<Control>, watch: &Watch, switch: Switch, why: &'static str) {
    let pool = watch.pool.clone();
    let task = tokio::spawn(async move {
        match control
            .repoint(&pool, &switch.master, switch.addr.clone())
            .await
        {
            Ok(true) => {
                tracing::warn!(pool, master = %switch.master, addr = %switch.addr, source = why, "Sentinel: master moved, shard re-pointed");
            }
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(pool, master = %switch.master, %error, "Sentinel: cannot re-point");
            }
        }
    });
    let _ = task.await;
}

/// Every [`RECHECK`], asks every Sentinel where each master is and re-points a master to the
/// address of the newest configuration any of them holds (highest config epoch): a Sentinel
/// that has not caught up with a failover yet still gives the old address, with an older epoch.
async fn recheck(watch: Arc<Watch>) {
    let mut tick = crate::timer::interval_at(Instant::now() + RECHECK, RECHECK);
    loop {
        tokio::select! {
            () = watch.stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let newest = newest(&watch.sentinel, &watch.access, &watch.masters).await;
        let Some(control) = watch.control.upgrade() else {
            return;
        };
        if watch.stop.is_cancelled() {
            return;
        }
        for (master, addr) in newest {
            let switch = Switch { master, addr };
            apply(Arc::clone(&control), &watch, switch, "periodic check").await;
        }
    }
}

/// Asks one Sentinel, on one connection, for each master's address and config epoch
/// (`SENTINEL MASTER`); a master it does not know is left out.
async fn master_states(
    sentinel: &HostPort,
    access: &Access,
    masters: &[String],
) -> Result<Vec<(String, BackendAddr, u64)>, Error> {
    let mut connection = open(sentinel, access).await?;
    let mut states = Vec::with_capacity(masters.len());
    for master in masters {
        let reply = connection
            .call(&[b"SENTINEL", b"MASTER", master.as_bytes()])
            .await?;
        match reply {
            Value::Array(Some(items)) => {
                let (addr, epoch) = master_fields(&items)?;
                states.push((master.clone(), addr, epoch));
            }
            Value::Error(_) => {}
            other => return Err(unexpected(other)),
        }
    }
    Ok(states)
}

/// The address and config epoch in `SENTINEL MASTER`'s field/value list.
fn master_fields(items: &[Value]) -> Result<(BackendAddr, u64), Error> {
    let mut fields: HashMap<&[u8], &[u8]> = HashMap::new();
    for pair in items.chunks(2) {
        if let [Value::Bulk(Some(key)), Value::Bulk(Some(value))] = pair {
            fields.insert(key, value);
        }
    }
    let text = |key: &str| {
        fields
            .get(key.as_bytes())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let addr = backend_addr(
        &text("ip").unwrap_or_default(),
        &text("port").unwrap_or_default(),
    )
    .ok_or_else(|| Error::Protocol("SENTINEL MASTER gave no ip and port".into()))?;
    let epoch = text("config-epoch")
        .and_then(|e| e.parse().ok())
        .ok_or_else(|| Error::Protocol("SENTINEL MASTER gave no config-epoch".into()))?;
    Ok((addr, epoch))
}

/// Per master, the address of the highest config epoch the Sentinels (asked together) hold.
async fn newest(
    sentinel: &SentinelConfig,
    access: &Access,
    masters: &[String],
) -> HashMap<String, BackendAddr> {
    let asks: Vec<_> = sentinel
        .sentinels
        .iter()
        .map(|addr| {
            let (addr, access, masters) = (addr.clone(), access.clone(), masters.to_vec());
            tokio::spawn(async move { master_states(&addr, &access, &masters).await })
        })
        .collect();
    let mut best: HashMap<String, (BackendAddr, u64)> = HashMap::new();
    for ask in asks {
        let Ok(Ok(states)) = ask.await else {
            continue;
        };
        for (master, addr, epoch) in states {
            if best.get(&master).is_none_or(|(_, top)| epoch > *top) {
                best.insert(master, (addr, epoch));
            }
        }
    }
    best.into_iter()
        .map(|(master, (addr, _))| (master, addr))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16) -> BackendAddr {
        BackendAddr::Tcp {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn switch_payload_gives_the_new_address() {
        let switch = Switch::parse(b"mymaster-1 127.0.0.1 6379 10.0.0.7 6380").unwrap();
        assert_eq!(switch.master, "mymaster-1");
        assert_eq!(switch.addr, tcp("10.0.0.7", 6380));
        let v6 = Switch::parse(b"m ::1 6379 ::1 6380").unwrap();
        assert_eq!(v6.addr, tcp("::1", 6380));
    }

    #[test]
    fn malformed_switch_payloads_are_ignored() {
        for payload in [
            &b""[..],
            b"m 127.0.0.1 6379 127.0.0.1",
            b"m 127.0.0.1 6379 127.0.0.1 6380 extra",
            b"m 127.0.0.1 6379 127.0.0.1 port",
            b"m 127.0.0.1 6379 127.0.0.1 0",
            b"m 127.0.0.1 6379 127.0.0.1 70000",
            b"m 127.0.0.1 6379 \xff 6380",
        ] {
            assert_eq!(Switch::parse(payload), None, "{payload:?}");
        }
    }

    #[test]
    fn pubsub_message_carries_the_switch() {
        let frame = b"*3\r\n$7\r\nmessage\r\n$14\r\n+switch-master\r\n$31\r\nm 127.0.0.1 7001 127.0.0.1 7002\r\n";
        let (value, used) = parse_value(frame).unwrap();
        assert_eq!(used, frame.len());
        assert_eq!(
            switch_of(&value),
            Some(Switch {
                master: "m".into(),
                addr: tcp("127.0.0.1", 7002)
            })
        );
        let other = b"*3\r\n$7\r\nmessage\r\n$6\r\n+sdown\r\n$1\r\nx\r\n";
        assert_eq!(switch_of(&parse_value(other).unwrap().0), None);
    }

    #[test]
    fn sentinel_master_fields_give_address_and_epoch() {
        let bulk = |text: &str| Value::Bulk(Some(text.as_bytes().to_vec()));
        let items: Vec<Value> = [
            "name",
            "m",
            "ip",
            "10.0.0.7",
            "port",
            "6380",
            "flags",
            "master",
            "config-epoch",
            "3",
        ]
        .into_iter()
        .map(bulk)
        .collect();
        assert_eq!(master_fields(&items).unwrap(), (tcp("10.0.0.7", 6380), 3));
        assert!(master_fields(&items[..6]).is_err());
    }

    #[tokio::test]
    async fn unanswered_masters_fail_resolution_naming_pool_and_master() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let text = format!(
            "ha:\n  listen: 127.0.0.1:1\n  redis: true\n  sentinels:\n   - 127.0.0.1:{port}\n  servers:\n   - m1:1\n"
        );
        let mut config = Config::parse(&text).unwrap();
        let error = resolve(&mut config).await.unwrap_err();
        assert!(matches!(error, ReloadError::Resolve(_)), "{error}");
        assert!(
            error.to_string().starts_with(&format!(
                "pool 'ha': no Sentinel gave the address of master 'm1' (127.0.0.1:{port}: cannot connect: "
            )),
            "{error}"
        );
    }
}
