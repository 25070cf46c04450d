//! Kept-alive HTTP/1 connections to plain-`http` upstreams, one pool per worker.
//!
//! hyper-util's pooled client costs about 5,000 instructions per exchange on the forward path
//! (it hashes the `(scheme, authority)` key byte by byte twice, boxes a 3 KB request future,
//! spawns a task per response to wait for the connection to become idle again). For plain
//! HTTP this module drives hyper's HTTP/1 client connections directly instead:
//!
//! - **Checkout:** the worker's idle list for the upstream's authority is searched from the
//!   most recently returned connection; closed and expired connections are dropped on the way.
//!   A connection is used only once hyper reports it ready for the next request, so a
//!   connection still busy (an upstream that answered before reading the whole request body)
//!   is never waited on.
//! - **Return:** the response body hands its connection back when it has been read to the end.
//!   A body dropped before its end leaves the connection to hyper, which closes it.
//! - **Retry:** a request that a reused connection gives back unsent (the upstream closed the
//!   idle connection just before) is sent on another connection, as hyper-util does.
//! - **Expiry:** connections idle longer than the pool's idle timeout are dropped at checkout,
//!   on return, and by a sweep that runs every few seconds on the worker while its pool has
//!   idle connections; at most `max_idle` stay per authority.
//!
//! HTTPS upstreams (TLS, HTTP/2 by ALPN) and WebSocket upgrades stay on hyper-util's client.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{Request, Response, Uri};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;

/// Why an exchange failed before a response head arrived.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No connection could be made (resolution, TCP connect, connect timeout).
    Connect(std::io::Error),
    /// The exchange on a connection failed.
    Http(hyper::Error),
}

impl SendError {
    pub(crate) fn is_connect(&self) -> bool {
        matches!(self, SendError::Connect(_))
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Connect(_) => f.write_str("tcp connect error"),
            SendError::Http(_) => f.write_str("http/1 exchange failed"),
        }
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SendError::Connect(e) => Some(e),
            SendError::Http(e) => Some(e),
        }
    }
}

/// The HTTP/1 pools of an [`crate::proxy::Upstream`], one per worker.
#[derive(Debug)]
pub(crate) struct H1Pools {
    shards: Box<[Arc<Shard>]>,
    connect_timeout: Duration,
}

impl H1Pools {
    pub(crate) fn new(workers: usize, connect_timeout: Duration, idle_timeout: Duration, max_idle: usize) -> H1Pools {
        let shards = (0..workers.max(1))
            .map(|_| {
                Arc::new(Shard {
                    state: Mutex::new(State::default()),
                    idle_timeout,
                    max_idle: max_idle.max(1),
                })
            })
            .collect();
        H1Pools { shards, connect_timeout }
    }

    /// Sends `req` (absolute `http://` URI) over a kept-alive connection of worker `worker`'s
    /// pool, or a new one. The response body returns the connection to the pool.
    pub(crate) async fn send(&self, worker: usize, mut req: Request<Body>) -> Result<Response<PooledBody>, SendError> {
        let shard = self.shards.get(worker).or_else(|| self.shards.first()).unwrap_or_else(|| unreachable!("at least one shard"));
        let uri = std::mem::take(req.uri_mut());
        let Some(authority) = uri.authority().cloned() else {
            return Err(SendError::Connect(std::io::Error::new(std::io::ErrorKind::InvalidInput, "the upstream URL has no host")));
        };
        if !req.headers().contains_key(header::HOST) {
            // Host without the default port, as hyper-util's client writes it.
            let value = match authority.port_u16() {
                Some(80) => HeaderValue::from_str(authority.host()),
                _ => HeaderValue::from_str(authority.as_str()),
            };
            if let Ok(v) = value {
                req.headers_mut().insert(header::HOST, v);
            }
        }
        *req.uri_mut() = origin_form(uri);
        loop {
            let (mut sender, reused) = match shard.take(authority.as_str()) {
                Some(s) => (s, true),
                None => (self.connect(&authority).await?, false),
            };
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    let (parts, body) = resp.into_parts();
                    let back = Return { sender, shard: shard.clone(), authority };
                    let body = PooledBody::new(body, back);
                    return Ok(Response::from_parts(parts, body));
                }
                Err(mut e) => match e.take_message() {
                    // Never written: the connection closed while it sat idle. Another one.
                    Some(unsent) if reused => {
                        tracing::debug!("pooled upstream connection closed before the request was sent; retrying");
                        req = unsent;
                    }
                    _ => return Err(SendError::Http(e.into_error())),
                },
            }
        }
    }

    /// Opens a connection to `authority` (every resolved address in turn, within the connect
    /// timeout) and starts its HTTP/1 task on the current runtime.
    async fn connect(&self, authority: &Authority) -> Result<SendRequest<Body>, SendError> {
        let deadline = tokio::time::Instant::now() + self.connect_timeout;
        let timed_out = || SendError::Connect(std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"));
        let host = authority.host().trim_start_matches('[').trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(80);
        let addrs = match tokio::time::timeout_at(deadline, tokio::net::lookup_host((host, port))).await {
            Err(_) => return Err(timed_out()),
            Ok(Err(e)) => return Err(SendError::Connect(e)),
            Ok(Ok(a)) => a,
        };
        let mut last = None;
        let mut stream = None;
        for addr in addrs {
            match tokio::time::timeout_at(deadline, tokio::net::TcpStream::connect(addr)).await {
                Err(_) => return Err(timed_out()),
                Ok(Ok(s)) => {
                    stream = Some(s);
                    break;
                }
                Ok(Err(e)) => last = Some(e),
            }
        }
        let stream = match stream {
            Some(s) => s,
            None => {
                let e = last.unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("`{host}` resolved to no address")));
                return Err(SendError::Connect(e));
            }
        };
        let _ = stream.set_nodelay(true);
        let io = hyper_util::rt::TokioIo::new(stream);
        let (sender, conn) = hyper::client::conn::http1::Builder::new().handshake(io).await.map_err(SendError::Http)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(sender)
    }

    /// Authorities with idle connections, over every worker (for tests).
    #[cfg(test)]
    pub(crate) fn authority_count(&self) -> usize {
        self.shards.iter().map(|s| s.lock().lists.len()).sum()
    }

    /// Idle connections of every worker (for tests and diagnostics).
    #[cfg(test)]
    pub(crate) fn idle_count(&self) -> usize {
        self.shards.iter().map(|s| s.lock().lists.values().map(Vec::len).sum::<usize>()).sum()
    }
}

/// The request target of an absolute URI for HTTP/1 (`/path?query`).
fn origin_form(uri: Uri) -> Uri {
    let mut parts = uri.into_parts();
    parts.scheme = None;
    parts.authority = None;
    if parts.path_and_query.as_ref().is_none_or(|p| p.as_str().is_empty()) {
        parts.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"))
}

/// One worker's idle connections, by authority.
#[derive(Debug)]
struct Shard {
    state: Mutex<State>,
    idle_timeout: Duration,
    max_idle: usize,
}

#[derive(Default)]
struct State {
    /// Idle connections per authority, oldest first. An authority is here only while it has
    /// idle connections (the sweep removes empty lists): a URL template may take the host from
    /// the request, so the set of authorities is not bounded by the configuration. The hasher
    /// is seeded per process for the same reason.
    lists: HashMap<Box<str>, Vec<Idle>, foldhash::fast::RandomState>,
    sweeping: bool,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").field("authorities", &self.lists.len()).finish_non_exhaustive()
    }
}

struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

impl Shard {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The most recently returned connection to `authority` that is ready for a request.
    fn take(&self, authority: &str) -> Option<SendRequest<Body>> {
        let mut state = self.lock();
        let list = state.lists.get_mut(authority)?;
        let now = Instant::now();
        let mut busy = Vec::new();
        let mut found = None;
        while let Some(idle) = list.pop() {
            if idle.sender.is_closed() || now.saturating_duration_since(idle.since) >= self.idle_timeout {
                continue;
            }
            if idle.sender.is_ready() {
                found = Some(idle.sender);
                break;
            }
            // Still finishing its previous exchange: left for a later checkout.
            busy.push(idle);
        }
        // Back in their order (the list is oldest first).
        list.extend(busy.into_iter().rev());
        found
    }

    fn give_back(self: &Arc<Self>, authority: &str, sender: SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut state = self.lock();
        if !state.sweeping {
            self.start_sweeper(&mut state);
        }
        let list = match state.lists.get_mut(authority) {
            Some(list) => list,
            None => state.lists.entry(authority.into()).or_default(),
        };
        let expired = list.iter().take_while(|i| now.saturating_duration_since(i.since) >= self.idle_timeout).count();
        if expired > 0 {
            list.drain(..expired);
        }
        if list.len() >= self.max_idle {
            list.remove(0);
        }
        list.push(Idle { sender, since: now });
    }

    /// Drops closed and expired idle connections; tells whether any remain.
    fn sweep(&self) -> bool {
        let now = Instant::now();
        let mut state = self.lock();
        state.lists.retain(|_, list| {
            list.retain(|i| !i.sender.is_closed() && now.saturating_duration_since(i.since) < self.idle_timeout);
            !list.is_empty()
        });
        let any = !state.lists.is_empty();
        if !any {
            state.sweeping = false;
        }
        any
    }

    /// Starts the sweep on the current runtime (when there is one); it stops when the pool
    /// has no idle connection left (the next return starts it again) or is dropped.
    fn start_sweeper(self: &Arc<Self>, state: &mut State) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        state.sweeping = true;
        let every = (self.idle_timeout / 2).clamp(Duration::from_millis(100), Duration::from_secs(5));
        let weak: Weak<Shard> = Arc::downgrade(self);
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(shard) = weak.upgrade() else { break };
                if !shard.sweep() {
                    break;
                }
            }
        });
    }
}

/// What a response body needs to hand its connection back.
struct Return {
    sender: SendRequest<Body>,
    shard: Arc<Shard>,
    authority: Authority,
}

/// An upstream response body that returns its connection to the pool once read to the end.
pub(crate) struct PooledBody {
    inner: Incoming,
    back: Option<Return>,
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody").field("pooled", &self.back.is_some()).finish_non_exhaustive()
    }
}

impl PooledBody {
    fn new(inner: Incoming, back: Return) -> PooledBody {
        PooledBody { inner, back: Some(back) }
    }

    fn release(&mut self) {
        if let Some(r) = self.back.take() {
            r.shard.give_back(r.authority.as_str(), r.sender);
        }
    }
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.release(),
            Poll::Ready(Some(Err(_))) => this.back = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // A body with nothing left to read (an empty one, or one read to its last byte) leaves
        // a reusable connection; otherwise hyper closes the connection.
        if self.inner.is_end_stream() {
            self.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A loopback HTTP/1 server that answers every request with `body` and counts the
    /// connections it accepted; `close_after` closes each connection after that many answers.
    async fn upstream(body: &'static str, close_after: Option<usize>) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else { return };
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut answered = 0;
                    let mut chunk = [0u8; 4096];
                    loop {
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            let resp = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                            if s.write_all(resp.as_bytes()).await.is_err() {
                                return;
                            }
                            answered += 1;
                            if close_after.is_some_and(|n| answered >= n) {
                                return;
                            }
                        }
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    fn get(addr: std::net::SocketAddr, path: &str) -> Request<Body> {
        let mut req = Request::new(Body::empty());
        *req.uri_mut() = format!("http://{addr}{path}").parse::<Uri>().unwrap_or_else(|e| panic!("{e}"));
        req
    }

    fn pools(idle_timeout: Duration) -> H1Pools {
        H1Pools::new(1, Duration::from_secs(2), idle_timeout, 16)
    }

    #[tokio::test]
    async fn sequential_requests_share_one_connection() {
        let (addr, accepted) = upstream("hello", None).await;
        let pools = pools(Duration::from_secs(30));
        for _ in 0..20 {
            let resp = pools.send(0, get(addr, "/x")).await.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(resp.status(), 200);
            let body = resp.into_body().collect().await.unwrap_or_else(|e| panic!("{e}")).to_bytes();
            assert_eq!(&body[..], b"hello");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "every request after the first reuses the connection");
        assert_eq!(pools.idle_count(), 1);
    }

    #[tokio::test]
    async fn a_body_dropped_unread_does_not_return_its_connection() {
        let (addr, accepted) = upstream("a body that nobody reads", None).await;
        let pools = pools(Duration::from_secs(30));
        for _ in 0..3 {
            let resp = pools.send(0, get(addr, "/")).await.unwrap_or_else(|e| panic!("{e}"));
            drop(resp);
        }
        assert_eq!(pools.idle_count(), 0);
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn connections_closed_by_the_upstream_are_replaced() {
        // The upstream closes after each answer: every request must still succeed.
        let (addr, accepted) = upstream("bye", Some(1)).await;
        let pools = pools(Duration::from_secs(30));
        for _ in 0..10 {
            let resp = pools.send(0, get(addr, "/")).await.unwrap_or_else(|e| panic!("{e}"));
            let body = resp.into_body().collect().await.unwrap_or_else(|e| panic!("{e}")).to_bytes();
            assert_eq!(&body[..], b"bye");
            // Let the connection task see the close.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 10);
    }

    #[tokio::test]
    async fn idle_connections_expire() {
        let (addr, accepted) = upstream("hi", None).await;
        let pools = pools(Duration::from_millis(150));
        let resp = pools.send(0, get(addr, "/")).await.unwrap_or_else(|e| panic!("{e}"));
        resp.into_body().collect().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pools.idle_count(), 1);
        // The sweep (every 100 ms here) drops it once it has been idle 150 ms.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(pools.idle_count(), 0);
        let resp = pools.send(0, get(addr, "/")).await.unwrap_or_else(|e| panic!("{e}"));
        resp.into_body().collect().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn authorities_leave_the_pool_with_their_last_idle_connection() {
        // A URL template may take the host from the request: every authority seen must not
        // stay in the pool for good. Six upstreams, one request each, then the idle timeout.
        let pools = pools(Duration::from_millis(150));
        for _ in 0..6 {
            let (addr, _) = upstream("x", None).await;
            let resp = pools.send(0, get(addr, "/")).await.unwrap_or_else(|e| panic!("{e}"));
            resp.into_body().collect().await.unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!((pools.authority_count(), pools.idle_count()), (6, 6));
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!((pools.authority_count(), pools.idle_count()), (0, 0));
    }

    #[tokio::test]
    async fn refused_connection_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        drop(listener);
        let Err(err) = pools(Duration::from_secs(30)).send(0, get(addr, "/")).await else { panic!("a refused connection answered") };
        assert!(err.is_connect(), "{err:?}");
    }

    #[tokio::test]
    async fn host_and_request_target_are_origin_form() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let seen = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap_or_else(|e| panic!("{e}"));
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut chunk).await.unwrap_or_else(|e| panic!("{e}"));
                buf.extend_from_slice(&chunk[..n]);
            }
            s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await.unwrap_or_else(|e| panic!("{e}"));
            String::from_utf8(buf).unwrap_or_else(|e| panic!("{e}"))
        });
        let resp = pools(Duration::from_secs(30)).send(0, get(addr, "/a/b?c=d")).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status(), 204);
        let head = seen.await.unwrap_or_else(|e| panic!("{e}"));
        assert!(head.starts_with("GET /a/b?c=d HTTP/1.1\r\n"), "{head}");
        assert!(head.to_ascii_lowercase().contains(&format!("host: {addr}\r\n")), "{head}");
    }

    #[test]
    fn origin_form_of_a_bare_authority_is_slash() {
        assert_eq!(origin_form(Uri::from_static("http://example.com")), "/");
        assert_eq!(origin_form(Uri::from_static("http://example.com/x?y")), "/x?y");
    }
}
