//! The admin HTTP server (`--admin`): `GET /metrics`, `GET /healthz`, `GET /pools`,
//! `POST /reload`. Minimal HTTP/1.1: one request per connection, bounded head, `Connection: close`.
//!
//! With a [`Token`] (`--admin-token FILE`) every endpoint but `/healthz` wants
//! `Authorization: Bearer <token>`; the file is read again for each request, so a rotated
//! secret takes effect without a restart. Limits keep a slow or hostile client from holding
//! the server: a request head of 8 KiB, 5 s to send it, 5 s to read the answer, 64 requests at
//! once (a slowloris connection costs one of the 64 slots for at most 5 s).

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::{Metrics, CONTENT_TYPE};

/// Largest request head (request line + headers) accepted.
const MAX_HEAD: usize = 8 * 1024;
/// Largest request body read (and discarded: no route takes a body).
const MAX_BODY: usize = 64 * 1024;
/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client may take to read the response.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to drain a client's unread input after an error response.
const LINGER: Duration = Duration::from_secs(1);
/// Connections served at once; further ones wait in the listen backlog.
const MAX_CONNECTIONS: usize = 64;
/// Back-off after a failed accept (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// The shortest token accepted: a guessable secret is no protection.
const MIN_TOKEN_LEN: usize = 16;

/// The admin server's bearer token, kept as the file that holds it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    path: PathBuf,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The path only: the secret never reaches a log.
        f.debug_struct("Token").field("path", &self.path).finish()
    }
}

impl Token {
    /// A token read from `path` (surrounding whitespace trimmed); checked now so that a missing,
    /// empty or short token stops the start.
    ///
    /// # Errors
    /// The file cannot be read, or its token is shorter than 16 characters or holds whitespace.
    pub fn load(path: &Path) -> std::io::Result<Token> {
        read_token(path)?;
        Ok(Token {
            path: path.to_owned(),
        })
    }

    /// Whether an `Authorization` header value carries this token, read afresh from its file.
    ///
    /// # Errors
    /// The file can no longer be read, or no longer holds a valid token.
    fn admits(&self, authorization: Option<&str>) -> std::io::Result<bool> {
        let token = read_token(&self.path)?;
        let offered = authorization
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map_or("", |(_, token)| token.trim());
        Ok(same_secret(offered.as_bytes(), token.as_bytes()))
    }
}

/// The token in `path`, validated.
fn read_token(path: &Path) -> std::io::Result<String> {
    let invalid = |why: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("admin token file {}: {why}", path.display()),
        )
    };
    let text = std::fs::read_to_string(path).map_err(|error| {
        std::io::Error::new(
            error.kind(),
            format!("admin token file {}: {error}", path.display()),
        )
    })?;
    let token = text.trim();
    if token.len() < MIN_TOKEN_LEN {
        return Err(invalid(&format!(
            "the token must be at least {MIN_TOKEN_LEN} characters"
        )));
    }
    if token
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(invalid(
            "the token must be one word of printable characters",
        ));
    }
    Ok(token.to_owned())
}

/// Compares two secrets in time that depends on their lengths only, not on where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// The future `POST /reload` awaits: the reload's report, or why nothing changed.
pub type ReloadFuture = Pin<Box<dyn Future<Output = Result<String, Rejected>> + Send>>;

/// Why a reload changed nothing, by whose fault; each answers its own status with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejected {
    /// The config file is invalid (or there is none): 422.
    Invalid(String),
    /// A Sentinel or cluster the config needs is unreachable: 503.
    Unavailable(String),
    /// The config could not be applied here (a listener could not be bound): 500.
    Failed(String),
}

impl Rejected {
    /// The HTTP status and body of the answer.
    fn response(&self) -> (u16, &str) {
        match self {
            Rejected::Invalid(reason) => (422, reason),
            Rejected::Unavailable(reason) => (503, reason),
            Rejected::Failed(reason) => (500, reason),
        }
    }
}

/// What the admin server serves.
#[derive(Clone)]
pub struct Admin {
    /// Rendered by `GET /metrics`.
    pub metrics: Arc<Metrics>,
    /// `GET /pools`: the live shard maps as a JSON document.
    pub pools: Arc<dyn Fn() -> String + Send + Sync>,
    /// `POST /reload`: `Ok(report)` → 200 with the report, `Err(rejected)` → 422, 503 or 500
    /// with the reason (see [`Rejected`]).
    pub reload: Arc<dyn Fn() -> ReloadFuture + Send + Sync>,
    /// The bearer token every endpoint but `/healthz` requires; `None`: open.
    pub token: Option<Token>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").finish_non_exhaustive()
    }
}

/// Serves admin requests on `listener` until `shutdown`, then waits for the requests in flight.
pub async fn serve(listener: TcpListener, admin: Admin, shutdown: CancellationToken) {
    let admin = Arc::new(admin);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let connections = TaskTracker::new();
    loop {
        let slot = tokio::select! {
            () = shutdown.cancelled() => break,
            slot = Arc::clone(&slots).acquire_owned() => slot,
        };
        let Ok(slot) = slot else { break };
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "admin: accept failed");
                    crate::timer::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let admin = Arc::clone(&admin);
        connections.spawn(async move {
            handle(stream, &admin).await;
            drop(slot);
        });
    }
    connections.close();
    connections.wait().await;
}

/// A response: status, content type, body, and extra header lines (`Name: value\r\n`).
#[derive(Debug, PartialEq, Eq)]
struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
    extra: &'static str,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
            extra: "",
        }
    }

    fn unauthorized() -> Response {
        Response {
            extra: "WWW-Authenticate: Bearer realm=\"keyway\"\r\n",
            ..Response::text(401, "a valid Authorization: Bearer token is required\n")
        }
    }

    fn not_allowed(allow: &'static str) -> Response {
        Response {
            extra: allow,
            ..Response::text(405, "method not allowed\n")
        }
    }

    fn encode(&self) -> Vec<u8> {
        let head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}Connection: close\r\n\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len(),
            self.extra,
        );
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(self.body.as_bytes());
        bytes
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        422 => "Unprocessable Content",
        503 => "Service Unavailable",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        505 => "HTTP Version Not Supported",
        _ => "Internal Server Error",
    }
}

async fn handle((mut stream, peer): (TcpStream, SocketAddr), admin: &Admin) {
    let response = match crate::timer::timeout(READ_TIMEOUT, read_request(&mut stream)).await {
        Err(_) => Some(Response::text(408, "request timeout\n")),
        Ok(Err(response)) => Some(response),
        Ok(Ok(None)) => None,
        Ok(Ok(Some(request))) => Some(match authorize(&request, admin, peer) {
            Some(refused) => refused,
            None => route(&request, admin, peer).await,
        }),
    };
    let Some(response) = response else { return };
    let write = async {
        stream.write_all(&response.encode()).await?;
        stream.shutdown().await
    };
    match crate::timer::timeout(WRITE_TIMEOUT, write).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%error, "admin: write failed"),
        Err(_) => tracing::debug!("admin: client too slow, closed"),
    }
    if response.status >= 400 {
        linger(&mut stream).await;
    }
}

/// After an error response the client may still be sending (an oversized head, say): closing
/// with unread input would reset the connection and could destroy the response in flight, so
/// drain a bounded amount for a short while first.
async fn linger(stream: &mut TcpStream) {
    let drain = async {
        let mut chunk = [0u8; 1024];
        let mut left = MAX_BODY;
        while left > 0 {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = crate::timer::timeout(LINGER, drain).await;
}

/// A parsed request: only what routing and the token check need.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    method: String,
    path: String,
    /// The `Authorization` header's value.
    authorization: Option<String>,
}

/// The refusal for a request the token does not admit; `None` lets it through. `/healthz`
/// stays open so that load balancers and orchestrators need no secret.
fn authorize(request: &Request, admin: &Admin, peer: SocketAddr) -> Option<Response> {
    let token = admin.token.as_ref()?;
    if request.path == "/healthz" {
        return None;
    }
    match token.admits(request.authorization.as_deref()) {
        Ok(true) => None,
        Ok(false) => {
            tracing::warn!(%peer, path = %request.path, "admin: request without a valid token refused");
            Some(Response::unauthorized())
        }
        Err(error) => {
            tracing::error!(%error, "admin: the token cannot be read; refusing every request");
            Some(Response::text(503, "the admin token cannot be read\n"))
        }
    }
}

/// Reads one request head (and any declared body, discarded). `Ok(None)`: the client closed
/// before sending a complete head, so there is no one to answer. `Err`: the error response.
async fn read_request(stream: &mut TcpStream) -> Result<Option<Request>, Response> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let head_end = loop {
        if let Some(end) = find_head_end(&buf) {
            break end;
        }
        if buf.len() >= MAX_HEAD {
            return Err(Response::text(431, "request head too large\n"));
        }
        let room = (MAX_HEAD - buf.len()).min(chunk.len());
        match stream.read(chunk.get_mut(..room).unwrap_or_default()).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
        }
    };
    let head = buf.get(..head_end).unwrap_or_default();
    let (request, body_len) = parse_head(head)?;
    // Read the body so that closing does not reset the connection under the response.
    let mut remaining = body_len.saturating_sub(buf.len().saturating_sub(head_end));
    while remaining > 0 {
        let room = remaining.min(chunk.len());
        match stream.read(chunk.get_mut(..room).unwrap_or_default()).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(n) => remaining = remaining.saturating_sub(n),
        }
    }
    Ok(Some(request))
}

/// Where the head ends (after its blank line), accepting bare LF line ends as RFC 9112 allows.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    let lf = memchr::memmem::find(buf, b"\n\n").map(|i| i + 2);
    let crlf = memchr::memmem::find(buf, b"\n\r\n").map(|i| i + 3);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Parses the request line and headers; returns the request and its body length.
fn parse_head(head: &[u8]) -> Result<(Request, usize), Response> {
    let bad = |why: &str| Response::text(400, format!("bad request: {why}\n"));
    let head = std::str::from_utf8(head).map_err(|_| bad("not UTF-8"))?;
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let line = lines.next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("request line is not METHOD TARGET VERSION"));
    };
    if method.is_empty() || !method.bytes().all(is_token) {
        return Err(bad("invalid method"));
    }
    if !target.starts_with('/') || target.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(bad("invalid target"));
    }
    match version {
        "HTTP/1.1" | "HTTP/1.0" => {}
        v if v.starts_with("HTTP/") && v.len() == 8 => {
            return Err(Response::text(505, "only HTTP/1.x is served\n"))
        }
        _ => return Err(bad("invalid HTTP version")),
    }
    let mut body_len: Option<usize> = None;
    let mut authorization = None;
    for header in lines.take_while(|l| !l.is_empty()) {
        let Some((name, value)) = header.split_once(':') else {
            return Err(bad("header without ':'"));
        };
        if name.is_empty() || !name.bytes().all(is_token) {
            return Err(bad("invalid header name"));
        }
        let value = value.trim_matches([' ', '\t']);
        if name.eq_ignore_ascii_case("authorization") {
            if authorization.is_some() {
                return Err(bad("more than one authorization header"));
            }
            authorization = Some(value.to_string());
        }
        if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(Response::text(501, "transfer-encoding is not supported\n"));
        }
        if name.eq_ignore_ascii_case("content-length") {
            let len: usize = value
                .parse()
                .ok()
                .filter(|_| value.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| bad("invalid content-length"))?;
            if body_len.is_some_and(|previous| previous != len) {
                return Err(bad("conflicting content-length"));
            }
            body_len = Some(len);
        }
    }
    let body_len = body_len.unwrap_or(0);
    if body_len > MAX_BODY {
        return Err(Response::text(413, "request body too large\n"));
    }
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    Ok((
        Request {
            method: method.to_string(),
            path: path.to_string(),
            authorization,
        },
        body_len,
    ))
}

/// RFC 9110 `tchar`.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

async fn route(request: &Request, admin: &Admin, peer: SocketAddr) -> Response {
    let method = request.method.as_str();
    match (request.path.as_str(), method) {
        ("/metrics", "GET") => Response {
            content_type: CONTENT_TYPE,
            ..Response::text(200, admin.metrics.render())
        },
        ("/healthz", "GET") => Response::text(200, "ok"),
        ("/pools", "GET") => Response {
            content_type: "application/json",
            ..Response::text(200, (admin.pools)())
        },
        ("/reload", "POST") => {
            // The audit trail: who asked for each reload, and what came of it.
            tracing::info!(%peer, "admin: reload requested");
            match (admin.reload)().await {
                Ok(report) => Response::text(200, report),
                Err(rejected) => {
                    let (status, reason) = rejected.response();
                    tracing::warn!(%peer, reason, "admin: reload rejected");
                    Response::text(status, reason)
                }
            }
        }
        ("/metrics" | "/healthz" | "/pools", _) => Response::not_allowed("Allow: GET\r\n"),
        ("/reload", _) => Response::not_allowed("Allow: POST\r\n"),
        _ => Response::text(404, "not found\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A parsed response: status, headers (lower-case names), body.
    #[derive(Debug)]
    struct Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Reply {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        }
    }

    fn parse_reply(raw: &[u8]) -> Reply {
        let text = std::str::from_utf8(raw).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let mut parts = status_line.splitn(3, ' ');
        assert_eq!(parts.next(), Some("HTTP/1.1"));
        let status: u16 = parts.next().unwrap().parse().unwrap();
        assert_eq!(parts.next(), Some(reason(status)));
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l.split_once(": ").unwrap();
                (n.to_ascii_lowercase(), v.to_string())
            })
            .collect();
        let reply = Reply {
            status,
            headers,
            body: body.to_string(),
        };
        assert_eq!(reply.header("connection"), Some("close"));
        let len: usize = reply.header("content-length").unwrap().parse().unwrap();
        assert_eq!(len, reply.body.len());
        reply
    }

    struct Server {
        addr: SocketAddr,
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<()>,
        metrics: Arc<Metrics>,
        reloads: Arc<AtomicUsize>,
    }

    impl Server {
        async fn start() -> Server {
            Server::start_with(None).await
        }

        async fn start_with(token: Option<Token>) -> Server {
            let metrics = Metrics::new();
            let reloads = Arc::new(AtomicUsize::new(0));
            let counter = Arc::clone(&reloads);
            let admin = Admin {
                metrics: Arc::clone(&metrics),
                pools: Arc::new(|| "{\"alpha\":[]}".to_string()),
                reload: Arc::new(move || {
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    Box::pin(async move {
                        if n == 0 {
                            Ok("reloaded: generation 1".to_string())
                        } else {
                            Err(Rejected::Invalid("pool 'alpha': bad hash".to_string()))
                        }
                    })
                }),
                token,
            };
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let shutdown = CancellationToken::new();
            let task = tokio::spawn(serve(listener, admin, shutdown.clone()));
            Server {
                addr,
                shutdown,
                task,
                metrics,
                reloads,
            }
        }

        /// Sends `raw`, reads until the server closes.
        async fn raw(&self, raw: &[u8]) -> Vec<u8> {
            let mut stream = TcpStream::connect(self.addr).await.unwrap();
            stream.write_all(raw).await.unwrap();
            let mut out = Vec::new();
            stream.read_to_end(&mut out).await.unwrap();
            out
        }

        async fn request(&self, method: &str, path: &str) -> Reply {
            let raw = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
            parse_reply(&self.raw(raw.as_bytes()).await)
        }

        async fn stop(self) {
            self.shutdown.cancel();
            crate::timer::timeout(Duration::from_secs(10), self.task)
                .await
                .unwrap()
                .unwrap();
        }
    }

    #[tokio::test]
    async fn metrics_serves_the_prometheus_text() {
        let server = Server::start().await;
        let pool = server.metrics.pool("alpha", &["s0".to_string()]);
        let mut tally = pool.tally(0);
        tally.request(1);
        tally.flush();
        let reply = server.request("GET", "/metrics").await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.header("content-type"),
            Some("text/plain; version=0.0.4")
        );
        assert!(reply
            .body
            .contains("# TYPE keyway_requests_total counter\n"));
        assert!(reply
            .body
            .contains("keyway_requests_total{backend=\"s0\",pool=\"alpha\"} 1\n"));
        let with_query = server.request("GET", "/metrics?name[]=x").await;
        assert_eq!(with_query.status, 200);
        server.stop().await;
    }

    #[tokio::test]
    async fn healthz_says_ok() {
        let server = Server::start().await;
        let reply = server.request("GET", "/healthz").await;
        assert_eq!((reply.status, reply.body.as_str()), (200, "ok"));
        server.stop().await;
    }

    #[tokio::test]
    async fn pools_serves_the_callbacks_json() {
        let server = Server::start().await;
        let reply = server.request("GET", "/pools").await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert_eq!(reply.body, "{\"alpha\":[]}");
        server.stop().await;
    }

    #[tokio::test]
    async fn reload_answers_200_with_the_report_then_422_with_the_error() {
        let server = Server::start().await;
        let ok = server.request("POST", "/reload").await;
        assert_eq!(
            (ok.status, ok.body.as_str()),
            (200, "reloaded: generation 1")
        );
        let raw = b"POST /reload HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
        let error = parse_reply(&server.raw(raw).await);
        assert_eq!(
            (error.status, error.body.as_str()),
            (422, "pool 'alpha': bad hash")
        );
        assert_eq!(server.reloads.load(Ordering::SeqCst), 2);
        server.stop().await;
    }

    #[tokio::test]
    async fn unknown_paths_are_404_and_wrong_methods_405() {
        let server = Server::start().await;
        assert_eq!(server.request("GET", "/").await.status, 404);
        assert_eq!(server.request("GET", "/metricsx").await.status, 404);
        assert_eq!(server.request("POST", "/nowhere").await.status, 404);
        for path in ["/metrics", "/healthz", "/pools"] {
            let reply = server.request("POST", path).await;
            assert_eq!(reply.status, 405, "{path}");
            assert_eq!(reply.header("allow"), Some("GET"));
        }
        let reply = server.request("GET", "/reload").await;
        assert_eq!((reply.status, reply.header("allow")), (405, Some("POST")));
        assert_eq!(
            server.reloads.load(Ordering::SeqCst),
            0,
            "GET never reloads"
        );
        server.stop().await;
    }

    #[tokio::test]
    async fn malformed_requests_are_400() {
        let server = Server::start().await;
        let cases: [&[u8]; 9] = [
            b"GARBAGE\r\n\r\n",
            b"GET /metrics\r\n\r\n",
            b"GET  /metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/1.1 extra\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"G(T /metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics FTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
            b"POST /reload HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        ];
        for raw in cases {
            let reply = parse_reply(&server.raw(raw).await);
            assert_eq!(reply.status, 400, "{:?}", raw.escape_ascii().to_string());
        }
        let conflicting =
            b"POST /reload HTTP/1.1\r\nContent-Length: 1\r\ncontent-length: 2\r\n\r\n";
        assert_eq!(parse_reply(&server.raw(conflicting).await).status, 400);
        assert_eq!(server.reloads.load(Ordering::SeqCst), 0);
        server.stop().await;
    }

    #[tokio::test]
    async fn bare_lf_and_http_1_0_are_accepted() {
        let server = Server::start().await;
        let reply = parse_reply(&server.raw(b"GET /healthz HTTP/1.0\nHost: x\n\n").await);
        assert_eq!(reply.status, 200);
        server.stop().await;
    }

    #[tokio::test]
    async fn unsupported_versions_and_framings_are_refused() {
        let server = Server::start().await;
        let v2 = parse_reply(&server.raw(b"GET /healthz HTTP/2.0\r\n\r\n").await);
        assert_eq!(v2.status, 505);
        let chunked = b"POST /reload HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(parse_reply(&server.raw(chunked).await).status, 501);
        let big = format!(
            "POST /reload HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert_eq!(parse_reply(&server.raw(big.as_bytes()).await).status, 413);
        assert_eq!(server.reloads.load(Ordering::SeqCst), 0);
        server.stop().await;
    }

    #[tokio::test]
    async fn oversized_heads_are_431() {
        let server = Server::start().await;
        let mut raw = b"GET /healthz HTTP/1.1\r\n".to_vec();
        while raw.len() <= MAX_HEAD {
            raw.extend_from_slice(
                b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
            );
        }
        raw.extend_from_slice(b"\r\n");
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        // The server answers once it has read MAX_HEAD bytes; the rest may be refused.
        let _ = stream.write_all(&raw).await;
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out).await;
        assert_eq!(parse_reply(&out).status, 431);
        // A head just under the limit is fine.
        let mut fits = b"GET /healthz HTTP/1.1\r\nX-Filler: ".to_vec();
        fits.resize(MAX_HEAD - 4, b'a');
        fits.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse_reply(&server.raw(&fits).await).status, 200);
        server.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_gets_408_after_the_read_timeout() {
        let server = Server::start().await;
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        stream.read_to_end(&mut out).await.unwrap();
        assert_eq!(parse_reply(&out).status, 408);
        server.stop().await;
    }

    #[tokio::test]
    async fn a_client_closing_early_gets_nothing_and_the_server_goes_on() {
        let server = Server::start().await;
        for sent in [&b""[..], b"GET /healthz HTTP/1.1\r\n"] {
            let mut stream = TcpStream::connect(server.addr).await.unwrap();
            stream.write_all(sent).await.unwrap();
            stream.shutdown().await.unwrap();
            let mut out = Vec::new();
            stream.read_to_end(&mut out).await.unwrap();
            assert!(out.is_empty(), "{out:?}");
        }
        let mut half = TcpStream::connect(server.addr).await.unwrap();
        half.write_all(b"GET /hea").await.unwrap();
        drop(half);
        assert_eq!(server.request("GET", "/healthz").await.status, 200);
        server.stop().await;
    }

    /// A token file in a fresh temp dir, holding `text`; the dir is removed when it drops.
    fn token_file(name: &str, text: &str) -> TokenFile {
        let dir = std::env::temp_dir().join(format!("keyway-admin-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, text).unwrap();
        TokenFile(path)
    }

    /// A test's token file (see [`token_file`]).
    struct TokenFile(PathBuf);

    impl std::ops::Deref for TokenFile {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl AsRef<Path> for TokenFile {
        fn as_ref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TokenFile {
        fn drop(&mut self) {
            if let Some(dir) = self.0.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    #[tokio::test]
    async fn a_token_guards_every_endpoint_but_healthz_and_is_reread() {
        let path = token_file("guard", "0123456789abcdef-first\n");
        let server = Server::start_with(Some(Token::load(&path).unwrap())).await;
        let with = |auth: &str, method: &str, path: &str| {
            format!("{method} {path} HTTP/1.1\r\nAuthorization: {auth}\r\n\r\n")
        };
        for (method, target) in [("GET", "/metrics"), ("GET", "/pools"), ("POST", "/reload")] {
            let bare = server.request(method, target).await;
            assert_eq!(bare.status, 401, "{target}");
            assert_eq!(
                bare.header("www-authenticate"),
                Some("Bearer realm=\"keyway\"")
            );
            for wrong in [
                "Bearer 0123456789abcdef-firsT",
                "Basic 0123456789abcdef-first",
                "Bearer",
            ] {
                let reply = parse_reply(&server.raw(with(wrong, method, target).as_bytes()).await);
                assert_eq!(reply.status, 401, "{target} with {wrong}");
            }
        }
        assert_eq!(
            server.reloads.load(Ordering::SeqCst),
            0,
            "no reload without the token"
        );
        let good = with("Bearer 0123456789abcdef-first", "GET", "/pools");
        assert_eq!(parse_reply(&server.raw(good.as_bytes()).await).status, 200);
        let scheme_case = with("bearer 0123456789abcdef-first", "POST", "/reload");
        assert_eq!(
            parse_reply(&server.raw(scheme_case.as_bytes()).await).status,
            200
        );
        assert_eq!(server.request("GET", "/healthz").await.status, 200);
        // Rotated in place: the old token stops working, the new one works.
        std::fs::write(&path, "0123456789abcdef-second").unwrap();
        assert_eq!(parse_reply(&server.raw(good.as_bytes()).await).status, 401);
        let rotated = with("Bearer 0123456789abcdef-second", "GET", "/pools");
        assert_eq!(
            parse_reply(&server.raw(rotated.as_bytes()).await).status,
            200
        );
        // Gone: every guarded request is refused, not let through.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            parse_reply(&server.raw(rotated.as_bytes()).await).status,
            503
        );
        assert_eq!(server.request("GET", "/healthz").await.status, 200);
        let twice =
            "GET /pools HTTP/1.1\r\nAuthorization: Bearer a\r\nAuthorization: Bearer b\r\n\r\n";
        assert_eq!(parse_reply(&server.raw(twice.as_bytes()).await).status, 400);
        server.stop().await;
    }

    #[test]
    fn tokens_must_be_long_single_words_and_never_show_in_debug() {
        let short = token_file("short", "tooshort\n");
        let error = Token::load(&short).unwrap_err().to_string();
        assert!(error.contains("at least 16 characters"), "{error}");
        assert!(error.contains(&short.display().to_string()), "{error}");
        let spaced = token_file("spaced", "0123456789 abcdef0123");
        assert!(Token::load(&spaced).is_err());
        let missing = Token::load(Path::new("/nonexistent/keyway-token")).unwrap_err();
        assert!(
            missing.to_string().contains("/nonexistent/keyway-token"),
            "{missing}"
        );
        let secret = token_file("debug", "s3cret-s3cret-s3cret");
        let shown = format!("{:?}", Token::load(&secret).unwrap());
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(same_secret(b"abc", b"abc") && !same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd") && !same_secret(b"", b"a"));
    }

    #[tokio::test]
    async fn slow_clients_do_not_hold_back_a_scrape() {
        let server = Server::start().await;
        // Slowloris: connections that send part of a head and then trickle.
        let mut slow = Vec::new();
        for _ in 0..(MAX_CONNECTIONS / 2) {
            let mut stream = TcpStream::connect(server.addr).await.unwrap();
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ")
                .await
                .unwrap();
            slow.push(stream);
        }
        let scrape = crate::timer::timeout(READ_TIMEOUT / 2, server.request("GET", "/metrics"));
        assert_eq!(
            scrape.await.expect("a scrape beside slow clients").status,
            200
        );
        drop(slow);
        server.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_house_of_slow_clients_is_timed_out_then_a_scrape_is_served() {
        let server = Server::start().await;
        let mut slow = Vec::new();
        for _ in 0..(MAX_CONNECTIONS * 2) {
            let mut stream = TcpStream::connect(server.addr).await.unwrap();
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\n")
                .await
                .unwrap();
            slow.push(stream);
        }
        // Every slot is taken; each slow client is cut off after READ_TIMEOUT, so the scrape
        // behind them is served within two timeouts, not never.
        let scrape = crate::timer::timeout(READ_TIMEOUT * 3, server.request("GET", "/metrics"));
        assert_eq!(
            scrape
                .await
                .expect("served once the slow ones time out")
                .status,
            200
        );
        drop(slow);
        server.stop().await;
    }

    #[test]
    fn head_parsing_table() {
        let ok = |raw: &str| parse_head(raw.as_bytes()).map(|(r, len)| (r.method, r.path, len));
        assert_eq!(
            ok("GET /pools?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Ok(("GET".into(), "/pools".into(), 0))
        );
        assert_eq!(
            ok("POST /reload HTTP/1.1\r\ncontent-length:  12 \r\n\r\n"),
            Ok(("POST".into(), "/reload".into(), 12))
        );
        let status = |raw: &str| parse_head(raw.as_bytes()).map(|_| ()).map_err(|r| r.status);
        assert_eq!(status("GET /\u{7f} HTTP/1.1\r\n\r\n"), Err(400));
        assert_eq!(status("GET / HTTP/1.1\r\n: empty\r\n\r\n"), Err(400));
        assert_eq!(status("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n"), Err(400));
        assert_eq!(
            status("GET / HTTP/1.1\r\nContent-Length: +3\r\n\r\n"),
            Err(400)
        );
        assert_eq!(
            status("GET / HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\n"),
            Err(400)
        );
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r\nrest"), Some(18));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\n\nrest"), Some(16));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n"), None);
    }
}
