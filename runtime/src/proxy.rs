//! The streaming reverse proxy: one pooled HTTP client, header hygiene, error mapping.
//!
//! Bodies are streamed both ways (never buffered whole, except a request body that may have to
//! be replayed for a 307/308 redirect when `followRedirects` is on). The gateway answers for
//! itself only when the exchange with the upstream fails: connect failure → 502, no response
//! head in time → 504. Any HTTP response of the upstream, 4xx and 5xx included, passes through.

use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::metrics::UpstreamOutcome;
use crate::{Context, Problem, Response};

type Request = http::Request<Body>;

/// The most idle connections kept per upstream authority and worker.
const MAX_IDLE_PER_HOST: usize = 1024;
/// The most redirects followed for one request.
const MAX_REDIRECTS: usize = 10;
/// The largest request body kept in memory to replay it on a 307/308 redirect.
const MAX_REPLAY_BODY: usize = 8 * 1024 * 1024;

/// Settings of the upstream side.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// How long to wait for the upstream's response head (connect included).
    pub timeout: Duration,
    /// How long to wait for a TCP connection.
    pub connect_timeout: Duration,
    /// How long an idle pooled connection is kept.
    pub pool_idle_timeout: Duration,
    /// How many proxies in front of the gateway are trusted to set `X-Forwarded-*`.
    pub trusted_proxy_hops: usize,
    /// Certificate authorities trusted for HTTPS upstreams besides the platform's
    /// (`UPSTREAM_CA_FILE`: PEM, for private upstreams).
    pub extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            pool_idle_timeout: Duration::from_secs(90),
            trusted_proxy_hops: 0,
            extra_roots: Vec::new(),
        }
    }
}

/// The pooled upstream client shared by every route.
///
/// Each worker thread has its own connection pool: a pooled connection is driven by a task of
/// the runtime that opened it, so handing it to another worker's request would cost two
/// cross-thread wake-ups per exchange.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// hyper-util's clients (HTTPS upstreams, WebSocket upgrades, health probes).
    clients: std::sync::Arc<[Client<LeanConnector, Body>]>,
    /// The connections to plain-`http` upstreams (see [`crate::h1pool`]).
    h1: std::sync::Arc<crate::h1pool::H1Pools>,
    config: UpstreamConfig,
}

impl Upstream {
    /// Builds the client. Must be called inside a Tokio runtime.
    pub fn new(config: UpstreamConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.enforce_http(false);
        // HTTPS with rustls: the platform's roots plus UPSTREAM_CA_FILE; HTTP/2 when the
        // upstream offers it through ALPN, HTTP/1.1 otherwise; plain http passes through.
        let tls = tls_config(&config.extra_roots);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(connector);
        let connector = LeanConnector(connector);
        let clients = (0..worker_count())
            .map(|_| {
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(config.pool_idle_timeout)
                    .pool_max_idle_per_host(MAX_IDLE_PER_HOST)
                    .build(connector.clone())
            })
            .collect();
        let h1 = crate::h1pool::H1Pools::new(worker_count(), config.connect_timeout, config.pool_idle_timeout, MAX_IDLE_PER_HOST);
        Upstream { clients, h1: std::sync::Arc::new(h1), config }
    }

    /// The client (connection pool) of the calling worker thread.
    fn client(&self) -> &Client<LeanConnector, Body> {
        let i = WORKER.with(std::cell::Cell::get);
        self.clients.get(i).or_else(|| self.clients.first()).unwrap_or_else(|| unreachable!("an upstream has at least one client"))
    }

    /// The settings in force.
    pub fn config(&self) -> &UpstreamConfig {
        &self.config
    }

    /// The same client settings with another connect timeout (a separate connection pool:
    /// the connect timeout belongs to the connector).
    pub fn with_connect_timeout(&self, connect_timeout: Duration) -> Upstream {
        Upstream::new(UpstreamConfig { connect_timeout, ..self.config.clone() })
    }

    /// Sends `req` to `url` and returns the upstream's response, or the problem response that
    /// stands for a failed exchange.
    pub async fn send(&self, req: Request, cx: &Context, url: &str, follow_redirects: bool) -> Response {
        self.send_owned(req, cx, url.to_owned(), follow_redirects).await
    }

    /// [`Upstream::send`] with a URL the caller built for this request: the `Uri` takes its
    /// buffer over instead of copying it.
    pub(crate) async fn send_owned(&self, req: Request, cx: &Context, url: String, follow_redirects: bool) -> Response {
        match self.try_send(req, cx, url, follow_redirects).await {
            Ok(resp) => resp,
            Err(problem) => problem_response(problem, cx),
        }
    }

    async fn try_send(&self, req: Request, cx: &Context, url: String, follow_redirects: bool) -> Result<Response, Problem> {
        let uri = parse_upstream_uri_owned(url)?;
        let (parts, body) = req.into_parts();
        let mut headers = parts.headers;
        prepare_request_headers(&mut headers, cx, self.config.trusted_proxy_hops);
        if !follow_redirects {
            let wait = Wait::from_now(self.config.timeout);
            return self.exchange(parts.method, uri, headers, body, cx, wait).await.map_err(|f| f.problem);
        }
        let replay = collect_replayable(body).await?;
        self.follow(parts.method, uri, headers, replay, cx, None).await.map_err(|f| f.problem)
    }

    /// Sends a request and follows the upstream's redirects (at most [`MAX_REDIRECTS`]),
    /// replaying `replay` where the redirect keeps the body. Each exchange waits until
    /// `deadline`, or, without one, for the configured timeout.
    pub(crate) async fn follow(
        &self,
        mut method: Method,
        mut uri: Uri,
        mut headers: HeaderMap,
        replay: Option<Bytes>,
        cx: &Context,
        deadline: Option<Wait>,
    ) -> Result<Response, Failure> {
        let mut body = replay.clone().map(Body::from).unwrap_or_else(Body::empty);
        for _ in 0..MAX_REDIRECTS {
            let wait = deadline.unwrap_or_else(|| Wait::from_now(self.config.timeout));
            let resp = self.exchange(method.clone(), uri.clone(), headers.clone(), body, cx, wait).await?;
            let Some(next) = redirect_target(&resp, &uri) else { return Ok(resp) };
            match resp.status() {
                StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT => {
                    body = replay.clone().map(Body::from).unwrap_or_else(Body::empty);
                }
                StatusCode::SEE_OTHER if method != Method::HEAD => {
                    method = Method::GET;
                    drop_body_headers(&mut headers);
                    body = Body::empty();
                }
                _ if method == Method::POST => {
                    // What browsers do for 301/302 after a POST.
                    method = Method::GET;
                    drop_body_headers(&mut headers);
                    body = Body::empty();
                }
                _ => body = replay.clone().map(Body::from).unwrap_or_else(Body::empty),
            }
            uri = next;
        }
        // A loop of redirects is the upstream's answer, not a failure to reach it.
        Err(Failure {
            problem: Problem::bad_gateway(format!("the upstream redirected more than {MAX_REDIRECTS} times")),
            stage: Stage::Local,
        })
    }

    /// One exchange: sends the request and waits for the response head until `wait` ends;
    /// a `local://` URL goes to a gateway of this process (see [`crate::federation`]).
    pub(crate) async fn exchange(&self, method: Method, uri: Uri, headers: HeaderMap, body: Body, cx: &Context, wait: Wait) -> Result<Response, Failure> {
        // Both are boxed (in place, see [`crate::server::boxed`]): their state (client span,
        // timer, the client's response future) is several KB, and every future that awaits
        // them inline would grow by that much.
        if uri.scheme_str().is_some_and(|s| s.eq_ignore_ascii_case(crate::federation::SCHEME)) {
            return crate::server::boxed(|| crate::federation::exchange(self, method, uri, headers, body, cx, wait)).await;
        }
        crate::server::boxed(|| self.exchange_http(method, uri, headers, body, cx, wait)).await
    }

    /// One HTTP exchange with the upstream at `uri` (headers already prepared).
    pub(crate) async fn exchange_http(&self, method: Method, uri: Uri, mut headers: HeaderMap, body: Body, cx: &Context, wait: Wait) -> Result<Response, Failure> {
        let span = cx.runtime.tracing.client_span(&cx.trace, &method, &uri);
        cx.trace.inject(&mut headers, span.span_id());
        let mut out = http::Request::new(body);
        *out.method_mut() = method;
        *out.uri_mut() = uri;
        *out.headers_mut() = headers;
        let fut = async {
            if out.uri().scheme() == Some(&http::uri::Scheme::HTTP) {
                let worker = WORKER.with(std::cell::Cell::get);
                self.h1.send(worker, out).await.map(|r| r.map(Body::new)).map_err(ExchangeError::Pool)
            } else {
                self.client().request(out).await.map(|r| r.map(Body::new)).map_err(ExchangeError::Client)
            }
        };
        let metrics = cx.runtime().metrics();
        let sent = metrics.map(|_| std::time::Instant::now());
        let record = |outcome| {
            if let (Some(m), Some(t)) = (metrics, sent) {
                crate::metrics::upstream(m, cx.route.index, outcome, t.elapsed());
            }
        };
        let resp = match tokio::time::timeout_at(wait.deadline, fut).await {
            Err(_) => {
                record(UpstreamOutcome::TimedOut);
                span.failed("timeout", "the upstream did not answer in time");
                tracing::warn!(request_id = %cx.request_id, "upstream did not answer within {:?}", wait.timeout);
                return Err(Failure { problem: Problem::gateway_timeout("the upstream did not answer in time"), stage: Stage::TimedOut });
            }
            Ok(Err(e)) => {
                let failure = classify(e.error(), e.is_connect(), cx);
                let timed_out = failure.problem.status() == StatusCode::GATEWAY_TIMEOUT;
                record(if timed_out { UpstreamOutcome::TimedOut } else { UpstreamOutcome::ConnectError });
                let kind = if timed_out {
                    "timeout"
                } else if e.is_connect() {
                    "connect_error"
                } else {
                    "response_error"
                };
                span.failed(kind, &chain_text(e.error()));
                return Err(failure);
            }
            Ok(Ok(resp)) => {
                record(UpstreamOutcome::Answered);
                span.answered(resp.status().as_u16());
                resp
            }
        };
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, body))
    }

    /// `GET url` for an active health check: the status, or why there is none within `timeout`.
    pub(crate) async fn probe(&self, url: &str, timeout: Duration) -> Result<StatusCode, String> {
        let uri = parse_upstream_uri(url).map_err(|_| format!("`{url}` is not an absolute http(s) URL"))?;
        let mut req = http::Request::new(Body::empty());
        *req.uri_mut() = uri;
        req.headers_mut().insert(header::USER_AGENT, HeaderValue::from_static("specgate-health-check"));
        let exchange = async {
            let resp = self.client().request(req).await.map_err(|e| chain_text(&e))?;
            let status = resp.status();
            // Read (a bounded part of) the body so that the connection can be reused.
            let _ = http_body_util::Limited::new(resp.into_body(), 64 * 1024).collect().await;
            Ok(status)
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {timeout:?}")),
        }
    }
}

/// How many worker threads serve requests (set once at start-up, before any [`Upstream`] is
/// built): one connection pool per worker.
static WORKERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

thread_local! {
    /// The index of the worker the current thread runs (0 for every other thread).
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Sets how many workers serve requests (before building any [`Upstream`]).
pub(crate) fn set_worker_count(n: usize) {
    WORKERS.store(n.max(1), std::sync::atomic::Ordering::Relaxed);
}

fn worker_count() -> usize {
    WORKERS.load(std::sync::atomic::Ordering::Relaxed).max(1)
}

/// Marks the current thread as worker `i` (its requests use pool `i`).
pub(crate) fn set_worker_index(i: usize) {
    WORKER.with(|w| w.set(i));
}

/// The HTTPS-or-HTTP connector without the connection details (`HttpInfo`, the addresses)
/// that the plain connector attaches: the client would copy them into the extensions of every
/// response, three allocations per request that nothing reads.
#[derive(Debug, Clone)]
struct LeanConnector(hyper_rustls::HttpsConnector<HttpConnector>);

type Stream = hyper_rustls::MaybeHttpsStream<hyper_util::rt::TokioIo<tokio::net::TcpStream>>;

impl tower::Service<Uri> for LeanConnector {
    type Response = LeanStream;
    type Error = <hyper_rustls::HttpsConnector<HttpConnector> as tower::Service<Uri>>::Error;
    type Future = futures_util::future::MapOk<
        <hyper_rustls::HttpsConnector<HttpConnector> as tower::Service<Uri>>::Future,
        fn(Stream) -> LeanStream,
    >;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        use futures_util::TryFutureExt as _;
        self.0.call(uri).map_ok(LeanStream as fn(Stream) -> LeanStream)
    }
}

/// An upstream connection that reports only what the pool needs (HTTP/2 negotiated, proxied).
#[derive(Debug)]
struct LeanStream(Stream);

impl hyper_util::client::legacy::connect::Connection for LeanStream {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        let full = self.0.connected();
        let lean = hyper_util::client::legacy::connect::Connected::new().proxy(full.is_proxied());
        if full.is_negotiated_h2() { lean.negotiated_h2() } else { lean }
    }
}

impl hyper::rt::Read for LeanStream {
    fn poll_read(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>, buf: hyper::rt::ReadBufCursor<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for LeanStream {
    fn poll_write(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>, buf: &[u8]) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
}

/// How long an exchange may wait for the upstream's response head.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Wait {
    /// When to give up.
    pub(crate) deadline: tokio::time::Instant,
    /// The configured timeout (for messages).
    pub(crate) timeout: Duration,
}

impl Wait {
    /// A wait of `timeout` from now.
    pub(crate) fn from_now(timeout: Duration) -> Wait {
        Wait { deadline: tokio::time::Instant::now() + timeout, timeout }
    }
}

/// A failed exchange: the problem to answer with, and how far the request got.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) problem: Problem,
    pub(crate) stage: Stage,
}

/// How far a failed exchange got, which decides whether it may be retried and whether it
/// counts against the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// No connection was made (refused, unreachable, connect timeout, TLS handshake): nothing
    /// of the request reached the upstream, so any method may be retried.
    NotSent,
    /// The request was sent, or part of it, and no response head came back (reset, closed,
    /// invalid answer): only an idempotent request with a replayable body may be retried.
    Sent,
    /// No response head before the deadline.
    TimedOut,
    /// The gateway's or the client's side failed (a body over the limit, a client that stopped
    /// sending, a redirect loop): says nothing about the upstream, never retried.
    Local,
}

impl Upstream {
    /// Passes a WebSocket handshake through to `url` (`ws:`/`wss:` or `http:`/`https:`) and,
    /// when the upstream switches protocols, splices the two upgraded connections together
    /// until either side closes. A request that is not a WebSocket upgrade gets 426.
    pub async fn websocket(&self, req: Request, cx: &Context, url: &str) -> Response {
        match self.try_websocket(req, cx, url).await {
            Ok(resp) => resp,
            Err(problem) => problem_response(problem, cx),
        }
    }

    async fn try_websocket(&self, mut req: Request, cx: &Context, url: &str) -> Result<Response, Problem> {
        // The client's side of the upgrade resolves once our 101 has been sent.
        let client_side = hyper::upgrade::on(&mut req);
        let (mut parts, _body) = req.into_parts();
        let upgrade_ok = parts.method == Method::GET
            && header_has_token(&parts.headers, &header::CONNECTION, "upgrade")
            && header_has_token(&parts.headers, &header::UPGRADE, "websocket");
        if !upgrade_ok {
            return Err(Problem::new(StatusCode::UPGRADE_REQUIRED)
                .with_detail("this route expects a WebSocket handshake (GET with Connection: upgrade, Upgrade: websocket)")
                .with_header(header::UPGRADE, HeaderValue::from_static("websocket")));
        }
        if crate::federation::is_local(url) {
            return Err(Problem::bad_gateway("a WebSocket handshake cannot be passed to a local:// gateway"));
        }
        let http_url = if let Some(rest) = url.strip_prefix("ws://") {
            format!("http://{rest}")
        } else if let Some(rest) = url.strip_prefix("wss://") {
            format!("https://{rest}")
        } else {
            url.to_owned()
        };
        let uri = parse_upstream_uri(&http_url)?;
        let mut headers = std::mem::take(&mut parts.headers);
        prepare_request_headers(&mut headers, cx, self.config.trusted_proxy_hops);
        cx.trace.inject(&mut headers, cx.trace.span_id());
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        let mut out = http::Request::new(Body::empty());
        *out.uri_mut() = uri;
        *out.headers_mut() = headers;
        let sent = tokio::time::timeout(self.config.timeout, self.client().request(out)).await;
        let mut resp = match sent {
            Err(_) => return Err(Problem::gateway_timeout("the upstream did not answer the WebSocket handshake in time")),
            Ok(Err(e)) => return Err(classify(&e, e.is_connect(), cx).problem),
            Ok(Ok(r)) => r,
        };
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            // A refusal (401, 404, …) passes through like any response.
            let (mut p, incoming) = resp.into_parts();
            strip_hop_by_hop(&mut p.headers);
            return Ok(Response::from_parts(p, Body::new(incoming)));
        }
        let upstream_side = hyper::upgrade::on(&mut resp);
        let request_id = cx.request_id.clone();
        cx.wait_until(async move {
            let (client, upstream) = match tokio::join!(client_side, upstream_side) {
                (Ok(c), Ok(u)) => (c, u),
                (c, u) => {
                    tracing::warn!(request_id = %request_id, client = c.is_ok(), upstream = u.is_ok(), "WebSocket upgrade failed");
                    return;
                }
            };
            let mut client = hyper_util::rt::TokioIo::new(client);
            let mut upstream = hyper_util::rt::TokioIo::new(upstream);
            if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                tracing::debug!(request_id = %request_id, error = %e, "WebSocket connection ended");
            }
        });
        // Our 101 carries the upstream's handshake answer (accept key, protocol, extensions).
        let mut out = Response::new(Body::empty());
        *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        for (name, value) in resp.headers() {
            if name.as_str().starts_with("sec-websocket-") {
                out.headers_mut().append(name.clone(), value.clone());
            }
        }
        out.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        out.headers_mut().insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        Ok(out)
    }
}

/// Whether a comma-separated header lists `token` (case-insensitively).
fn header_has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The platform's root certificates, read once per process.
fn native_roots() -> &'static [rustls::pki_types::CertificateDer<'static>] {
    static ROOTS: std::sync::OnceLock<Vec<rustls::pki_types::CertificateDer<'static>>> = std::sync::OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        if let Some(e) = found.errors.first() {
            tracing::warn!(error = %e, "some platform root certificates could not be read");
        }
        found.certs
    })
}

/// The TLS settings for upstreams: TLS 1.2 and 1.3, ALPN h2 and http/1.1.
fn tls_config(extra: &[rustls::pki_types::CertificateDer<'static>]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(native_roots().iter().cloned());
    tracing::debug!(added, ignored, "platform root certificates");
    for cert in extra {
        if let Err(e) = roots.add(cert.clone()) {
            tracing::warn!(error = %e, "a certificate of UPSTREAM_CA_FILE is not a usable trust anchor");
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = match rustls::ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions() {
        Ok(b) => b,
        // aws-lc-rs supports TLS 1.2 and 1.3, so this cannot happen.
        Err(e) => panic!("the TLS provider supports no default protocol version: {e}"),
    };
    builder.with_root_certificates(roots).with_no_client_auth()
}

/// Reads the PEM certificates of `UPSTREAM_CA_FILE`.
pub fn read_ca_file(path: &str) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let certs: Result<Vec<_>, _> = rustls::pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("UPSTREAM_CA_FILE={path:?} cannot be read: {e}"))?
        .collect();
    let certs = certs.map_err(|e| format!("UPSTREAM_CA_FILE={path:?} is not valid PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!("UPSTREAM_CA_FILE={path:?} contains no certificate"));
    }
    Ok(certs)
}

/// Renders a problem for the request in `cx`.
pub fn problem_response(problem: Problem, cx: &Context) -> Response {
    cx.problem(problem)
}

pub(crate) fn parse_upstream_uri(url: &str) -> Result<Uri, Problem> {
    let uri: Uri = url
        .parse()
        .map_err(|_| Problem::internal("the upstream URL built for this route is not a valid URL"))?;
    check_upstream_uri(uri)
}

/// [`parse_upstream_uri`] taking the string's buffer over (no copy).
pub(crate) fn parse_upstream_uri_owned(url: String) -> Result<Uri, Problem> {
    let uri = Uri::try_from(url).map_err(|_| Problem::internal("the upstream URL built for this route is not a valid URL"))?;
    check_upstream_uri(uri)
}

fn check_upstream_uri(uri: Uri) -> Result<Uri, Problem> {
    match uri.scheme_str() {
        Some("http" | "https") if uri.authority().is_some() => Ok(uri),
        Some(s) if s.eq_ignore_ascii_case(crate::federation::SCHEME) && uri.host().is_some_and(|h| !h.is_empty()) => Ok(uri),
        _ => Err(Problem::internal("the upstream URL built for this route is not an absolute http(s) or local:// URL")),
    }
}

/// Why an exchange failed, from either client.
#[derive(Debug)]
enum ExchangeError {
    Client(hyper_util::client::legacy::Error),
    Pool(crate::h1pool::SendError),
}

impl ExchangeError {
    fn is_connect(&self) -> bool {
        match self {
            ExchangeError::Client(e) => e.is_connect(),
            ExchangeError::Pool(e) => e.is_connect(),
        }
    }

    fn error(&self) -> &(dyn std::error::Error + 'static) {
        match self {
            ExchangeError::Client(e) => e,
            ExchangeError::Pool(e) => e,
        }
    }
}

fn classify(e: &(dyn std::error::Error + 'static), is_connect: bool, cx: &Context) -> Failure {
    if source_chain(e).any(|s| s.is::<http_body_util::LengthLimitError>()) {
        let problem = Problem::new(StatusCode::PAYLOAD_TOO_LARGE).with_detail("the request body is larger than the gateway accepts");
        return Failure { problem, stage: Stage::Local };
    }
    let timed_out = source_chain(e).any(|s| {
        s.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
            || s.to_string().contains("timed out")
    });
    if timed_out {
        tracing::warn!(request_id = %cx.request_id, error = %chain_text(e), "upstream connect timed out");
        let stage = if is_connect { Stage::NotSent } else { Stage::TimedOut };
        return Failure { problem: Problem::gateway_timeout("the upstream did not accept a connection in time"), stage };
    }
    if is_connect {
        tracing::warn!(request_id = %cx.request_id, error = %chain_text(e), "upstream unreachable");
        return Failure { problem: Problem::bad_gateway("the upstream could not be reached"), stage: Stage::NotSent };
    }
    tracing::warn!(request_id = %cx.request_id, error = %chain_text(e), "upstream exchange failed");
    // hyper's "user" errors are ours or the client's: a request body stream that failed, a
    // request hyper cannot send.
    let local = source_chain(e).any(|s| s.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_user));
    Failure {
        problem: Problem::bad_gateway("the upstream closed the connection or sent an invalid response"),
        stage: if local { Stage::Local } else { Stage::Sent },
    }
}

fn source_chain<'a>(e: &'a (dyn std::error::Error + 'static)) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |e| e.source())
}

fn chain_text(e: &(dyn std::error::Error + 'static)) -> String {
    source_chain(e).map(|s| s.to_string()).collect::<Vec<_>>().join(": ")
}

pub(crate) async fn collect_replayable(body: Body) -> Result<Option<Bytes>, Problem> {
    let limited = http_body_util::Limited::new(body, MAX_REPLAY_BODY);
    match limited.collect().await {
        Ok(c) => {
            let b = c.to_bytes();
            Ok(if b.is_empty() { None } else { Some(b) })
        }
        Err(_) => Err(Problem::new(StatusCode::PAYLOAD_TOO_LARGE)
            .with_detail("the request body is too large to be replayed across upstream redirects")),
    }
}

fn drop_body_headers(headers: &mut HeaderMap) {
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::CONTENT_TYPE);
}

fn redirect_target(resp: &Response, current: &Uri) -> Option<Uri> {
    if !matches!(resp.status().as_u16(), 301 | 302 | 303 | 307 | 308) {
        return None;
    }
    let location = resp.headers().get(header::LOCATION)?.to_str().ok()?;
    resolve_location(current, location)
}

/// Resolves a `Location` against the URL that produced it (absolute URLs, absolute paths and
/// relative paths; scheme-relative `//host` too).
fn resolve_location(base: &Uri, location: &str) -> Option<Uri> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.parse().ok();
    }
    let scheme = base.scheme_str()?;
    if let Some(rest) = location.strip_prefix("//") {
        return format!("{scheme}://{rest}").parse().ok();
    }
    let authority = base.authority()?.as_str();
    if location.starts_with('/') {
        return format!("{scheme}://{authority}{location}").parse().ok();
    }
    let dir = base.path().rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    format!("{scheme}://{authority}{dir}/{location}").parse().ok()
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including every header the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the (few) names is cheaper than a look-up of
    // each hop-by-hop name.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(&name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REQUEST_ID: HeaderName = HeaderName::from_static(crate::request_id::HEADER);

/// Prepares the client's headers for the upstream: hop-by-hop removed, `Host` left to the
/// client (it sets the upstream's), `X-Forwarded-*` and the request id set. The trace context
/// is set per exchange.
pub(crate) fn prepare_request_headers(headers: &mut HeaderMap, cx: &Context, trusted_hops: usize) {
    strip_hop_by_hop(headers);
    let host = headers.remove(header::HOST);
    // Set again only on a local:// call that goes over HTTP.
    headers.remove(crate::federation::HOPS_HEADER);
    // The peer's address, formatted on the stack (at most 45 characters for IPv6).
    let mut buf = [0u8; 64];
    let peer = format_ip(cx.peer.ip(), &mut buf);
    // Forwarded headers from the client are kept only when a trusted proxy put them there.
    let prior_for = if trusted_hops > 0 { joined(headers, &X_FORWARDED_FOR) } else { None };
    let xff = match prior_for {
        Some(prior) => HeaderValue::from_str(&format!("{prior}, {peer}")),
        None => HeaderValue::from_str(peer),
    };
    if let Ok(v) = xff {
        headers.insert(X_FORWARDED_FOR, v);
    }
    if trusted_hops == 0 || !headers.contains_key(&X_FORWARDED_PROTO) {
        let proto = if cx.runtime.https { "https" } else { "http" };
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if trusted_hops == 0 || !headers.contains_key(&X_FORWARDED_HOST) {
        // The client's Host header is the usual source of `cx.host`: its value is shared, not
        // copied.
        let value = match host {
            Some(h) if h.as_bytes() == cx.host.as_bytes() => Ok(h),
            _ => HeaderValue::from_str(&cx.host),
        };
        match value {
            Ok(v) => {
                headers.insert(X_FORWARDED_HOST, v);
            }
            Err(_) => {
                headers.remove(X_FORWARDED_HOST);
            }
        }
    }
    if let Ok(v) = HeaderValue::from_str(&cx.request_id) {
        headers.insert(X_REQUEST_ID, v);
    }
}

/// Writes `ip` into `buf` and returns the text. IPv4 (dotted decimal) is written by hand:
/// `Display` for addresses goes through the formatter's padding path, about 1,000
/// instructions, on every forwarded request.
fn format_ip(ip: std::net::IpAddr, buf: &mut [u8; 64]) -> &str {
    let len = match ip {
        std::net::IpAddr::V4(v4) => {
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    buf[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    buf[n] = b'0' + (octet / 10) % 10;
                    n += 1;
                }
                buf[n] = b'0' + octet % 10;
                n += 1;
            }
            n
        }
        std::net::IpAddr::V6(_) => {
            use std::io::Write as _;
            let mut cursor = std::io::Cursor::new(&mut buf[..]);
            let _ = write!(cursor, "{ip}");
            usize::try_from(cursor.position()).unwrap_or(0)
        }
    };
    std::str::from_utf8(&buf[..len]).unwrap_or_default()
}

fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let parts: Vec<&str> = headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect();
    if parts.is_empty() { None } else { Some(parts.join(", ")) }
}

/// The client address once `trusted_hops` proxies in front of the gateway are accounted for:
/// with n trusted proxies, the n-th address from the right of `X-Forwarded-For` is the client.
pub fn client_ip(peer: std::net::IpAddr, headers: &HeaderMap, trusted_hops: usize) -> std::net::IpAddr {
    if trusted_hops == 0 {
        return peer;
    }
    let list: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    if list.is_empty() {
        return peer;
    }
    let idx = list.len().saturating_sub(trusted_hops);
    list[idx].parse().unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_addresses_like_display() {
        let mut buf = [0u8; 64];
        for text in ["0.0.0.0", "127.0.0.1", "10.9.99.100", "255.255.255.255", "192.168.1.20", "::1", "2001:db8::8a2e:370:7334", "::ffff:10.0.0.1"] {
            let ip: std::net::IpAddr = text.parse().unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(format_ip(ip, &mut buf), ip.to_string());
        }
        for a in 0..=255u8 {
            let ip = std::net::IpAddr::V4(std::net::Ipv4Addr::new(a, 255 - a, a / 3, a % 7));
            assert_eq!(format_ip(ip, &mut buf), ip.to_string());
        }
    }

    #[test]
    fn strips_hop_by_hop_and_connection_named() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn client_ip_honours_trusted_hops() {
        let peer: std::net::IpAddr = "10.0.0.9".parse().unwrap_or(std::net::Ipv4Addr::LOCALHOST.into());
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("6.6.6.6, 1.2.3.4, 10.0.0.2"));
        assert_eq!(client_ip(peer, &h, 0), peer);
        assert_eq!(client_ip(peer, &h, 1).to_string(), "10.0.0.2");
        assert_eq!(client_ip(peer, &h, 2).to_string(), "1.2.3.4");
        assert_eq!(client_ip(peer, &h, 9).to_string(), "6.6.6.6");
    }

    #[test]
    fn resolves_locations() {
        let base: Uri = "http://up:8080/a/b?x=1".parse().unwrap_or_default();
        let r = |l| resolve_location(&base, l).map(|u| u.to_string());
        assert_eq!(r("/c").as_deref(), Some("http://up:8080/c"));
        assert_eq!(r("c").as_deref(), Some("http://up:8080/a/c"));
        assert_eq!(r("http://other/x").as_deref(), Some("http://other/x"));
        assert_eq!(r("//h2/y").as_deref(), Some("http://h2/y"));
    }
}
