//! Helpers for the end-to-end tests: a recording upstream on loopback, building and starting
//! generated gateways, and a plain HTTP client.
//!
//! Gateways are the crates checked in under `generated/`; they are built once per test run with
//! the workspace's target directory (the same build `cargo build --workspace` makes).

pub mod redis;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::{Notify, mpsc};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The target directory cargo uses for this workspace.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"))
}

static BUILT: OnceLock<Result<(), String>> = OnceLock::new();

/// Builds every gateway under `generated/` (once per process) and returns the binary of `name`.
pub fn gateway_binary(name: &str) -> PathBuf {
    let result = BUILT.get_or_init(|| {
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.current_dir(workspace_root()).args(["build", "--quiet", "-p", "specgate"]);
        for entry in std::fs::read_dir(workspace_root().join("generated")).into_iter().flatten().flatten() {
            if entry.path().join("Cargo.toml").exists() {
                cmd.args(["-p", &entry.file_name().to_string_lossy()]);
            }
        }
        let out = cmd.output().map_err(|e| e.to_string())?;
        if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
    });
    if let Err(e) = result {
        panic!("building the generated gateways failed:\n{e}");
    }
    target_dir().join("debug").join(name)
}

/// A request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method.
    pub method: String,
    /// Path and query as received.
    pub target: String,
    /// Headers (lower-case names; repeated headers joined with `, `).
    pub headers: HashMap<String, String>,
    /// The body.
    pub body: Bytes,
    /// The HTTP version (`HTTP/1.1`, `HTTP/2.0`).
    pub version: String,
}

impl Seen {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// A real HTTP server on loopback that records every request and answers by path:
/// `/status/NNN` answers NNN, `/slow/MS` waits, `/redirect` answers 302 to `/redirected`,
/// `?redirect-to=X` answers 307 to X, `/stream` streams two chunks (the second after [`Upstream::release`]), `/hop` answers with a
/// hop-by-hop header named in `Connection`; `/cors-headers` answers with `Access-Control-*` headers
/// of its own, `Vary: Accept-Encoding`, `x-exposed` and `x-hidden`; `/bytes/N` answers N bytes;
/// `/sse` answers `text/event-stream` with event 1 at once, then one more event after each
/// [`Upstream::release`] (3 in all); `/large/N` streams N MiB in 64 KiB chunks, the first at once
/// and the rest after one [`Upstream::release`];
/// anything else answers 200 with `{"upstream": name}`.
/// Every response carries `x-upstream-seq` (1 for the first request received, 2 for the
/// next, ...) and, for each query parameter `h-NAME=VALUE`, a header `NAME: VALUE`
/// (percent-decoded).
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    release: Arc<Notify>,
    first_chunk: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    /// Starts an upstream that tags its answers with `name`.
    pub async fn start(name: &str) -> Upstream {
        Self::start_full(name, 0, None).await
    }

    /// Starts an upstream on a fixed loopback port (for configurations that name one).
    pub async fn start_on(name: &str, port: u16) -> Upstream {
        Self::start_full(name, port, None).await
    }

    /// Starts an upstream answering every request with `body` as JSON.
    pub async fn start_with_body(name: &str, body: &str) -> Upstream {
        Self::start_full(name, 0, Some(Bytes::from(body.to_owned()))).await
    }

    /// Starts an HTTPS upstream (HTTP/2 and HTTP/1.1 through ALPN) with a certificate for
    /// `localhost` and 127.0.0.1 issued by a fresh test CA; returns it with the CA's PEM.
    pub async fn start_tls(name: &str) -> (Upstream, String) {
        let (tls, ca_pem) = test_tls_config();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let up = Self::start_inner(name, 0, None, Some(acceptor)).await;
        (up, ca_pem)
    }

    async fn start_full(name: &str, port: u16, fixed: Option<Bytes>) -> Upstream {
        Self::start_inner(name, port, fixed, None).await
    }

    async fn start_inner(name: &str, port: u16, fixed: Option<Bytes>, tls: Option<tokio_rustls::TlsAcceptor>) -> Upstream {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let release = Arc::new(Notify::new());
        let first_chunk = Arc::new(Notify::new());
        let (s, r, f, n) = (seen.clone(), release.clone(), first_chunk.clone(), Arc::<str>::from(name));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { break };
                let (s, r, f, n, x) = (s.clone(), r.clone(), f.clone(), n.clone(), fixed.clone());
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| answer(req, s.clone(), r.clone(), f.clone(), n.clone(), x.clone()));
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                        }
                        Some(acceptor) => {
                            // A failed handshake (an untrusting client) just ends the connection.
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                            }
                        }
                    }
                });
            }
        });
        Upstream { addr, seen, release, first_chunk, task }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The last request received.
    pub fn last(&self) -> Seen {
        self.seen().pop().expect("the upstream received no request")
    }

    /// Lets a `/stream` response send its second chunk.
    pub fn release(&self) {
        self.release.notify_one();
    }

    /// Resolves when a streaming request body's first chunk has arrived at `/upload-stream`.
    pub async fn first_chunk_arrived(&self) {
        self.first_chunk.notified().await;
    }
}

/// A fresh test PKI: a root CA, an intermediate CA it signed, and a leaf for `localhost` and
/// 127.0.0.1 signed by the intermediate.
pub struct TestPki {
    /// The root CA certificate (what clients trust), PEM.
    pub ca_pem: String,
    /// The leaf and the intermediate, leaf first, PEM (what a server sends).
    pub chain_pem: String,
    /// The leaf's private key, PKCS#8 PEM.
    pub key_pem: String,
    leaf_der: rustls::pki_types::CertificateDer<'static>,
    intermediate_der: rustls::pki_types::CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl TestPki {
    /// Generates the three certificates.
    pub fn generate() -> TestPki {
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "specgate test CA");
        ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
        let ca = rcgen::Issuer::new(ca_params, ca_key);
        let mid_key = rcgen::KeyPair::generate().expect("intermediate key");
        let mut mid_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("intermediate params");
        mid_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        mid_params.distinguished_name.push(rcgen::DnType::CommonName, "specgate test intermediate");
        mid_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let mid_cert = mid_params.signed_by(&mid_key, &ca).expect("intermediate certificate");
        let mid = rcgen::Issuer::new(mid_params, mid_key);
        let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
        let mut leaf_params = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).expect("leaf params");
        leaf_params.distinguished_name.push(rcgen::DnType::CommonName, "localhost");
        let leaf = leaf_params.signed_by(&leaf_key, &mid).expect("leaf certificate");
        TestPki {
            ca_pem: ca_cert.pem(),
            chain_pem: format!("{}{}", leaf.pem(), mid_cert.pem()),
            key_pem: leaf_key.serialize_pem(),
            leaf_der: leaf.der().clone(),
            intermediate_der: mid_cert.der().clone(),
            key_der: leaf_key.serialize_der(),
        }
    }

    /// A server configuration sending the leaf and the intermediate, ALPN h2 and http/1.1.
    pub fn server_config(&self) -> rustls::ServerConfig {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![self.leaf_der.clone(), self.intermediate_der.clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(self.key_der.clone().into()),
            )
            .expect("server certificate");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config
    }

    /// Writes `cert.pem` (chain) and `key.pem` into a fresh directory; returns their paths.
    pub fn write_files(&self, tag: &str) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("specgate-tls-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("TLS dir");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, &self.chain_pem).expect("write cert");
        std::fs::write(&key, &self.key_pem).expect("write key");
        (cert, key)
    }
}

/// A server configuration for `localhost`/127.0.0.1 signed by a fresh CA, and the CA in PEM.
fn test_tls_config() -> (rustls::ServerConfig, String) {
    let pki = TestPki::generate();
    (pki.server_config(), pki.ca_pem)
}

/// A TLS client configuration trusting only the CA in `ca_pem`, offering `alpn`.
pub fn tls_client_config(ca_pem: &str, alpn: &[&[u8]]) -> rustls::ClientConfig {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// One request over TLS to `addr` (server name `localhost`) with a client trusting `ca_pem`:
/// HTTP/2 when `http2`, else HTTP/1.1 (each offered alone through ALPN). Returns the response
/// and the HTTP version it came in.
pub async fn send_tls(addr: SocketAddr, ca_pem: &str, http2: bool, method: &str, path: &str, headers: &[(&str, &str)]) -> Result<(Got, hyper::Version), String> {
    let alpn: &[&[u8]] = if http2 { &[b"h2"] } else { &[b"http/1.1"] };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_client_config(ca_pem, alpn)));
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let stream = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .map_err(|_| "TLS handshake timed out".to_owned())?
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let negotiated = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let mut b = Request::builder().method(method).uri(format!("https://localhost:{}{path}", addr.port()));
    if !http2 {
        b = b.header("host", format!("localhost:{}", addr.port()));
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Full::new(Bytes::new())).map_err(|e| e.to_string())?;
    let io = TokioIo::new(stream);
    let resp = if http2 {
        if negotiated.as_deref() != Some(b"h2") {
            return Err(format!("ALPN negotiated {negotiated:?}, not h2"));
        }
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        sender.send_request(req).await.map_err(|e| e.to_string())?
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        sender.send_request(req).await.map_err(|e| e.to_string())?
    };
    let version = resp.version();
    let status = resp.status().as_u16();
    let mut hs: HashMap<String, String> = HashMap::new();
    for (k, v) in resp.headers() {
        hs.entry(k.as_str().to_owned()).or_insert_with(|| String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((Got { status, headers: hs, body }, version))
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

async fn answer(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
    release: Arc<Notify>,
    first_chunk: Arc<Notify>,
    name: Arc<str>,
    fixed: Option<Bytes>,
) -> Result<Response<Body>, Infallible> {
    let (parts, mut body) = req.into_parts();
    let target = parts.uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let path = parts.uri.path().to_owned();
    let mut headers: HashMap<String, String> = HashMap::new();
    for (k, v) in &parts.headers {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        headers.entry(k.as_str().to_owned()).and_modify(|e| { e.push_str(", "); e.push_str(&v) }).or_insert(v);
    }
    let mut collected = Vec::new();
    if path.ends_with("/upload-stream") {
        // Signal as soon as the first piece of the body is here: proves the gateway streams.
        if let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                collected.extend_from_slice(&data);
            }
            first_chunk.notify_one();
        }
    }
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            collected.extend_from_slice(&data);
        }
    }
    let seq = match seen.lock() {
        Ok(mut s) => {
            s.push(Seen { method: parts.method.to_string(), target, headers, body: Bytes::from(collected), version: format!("{:?}", parts.version) });
            s.len()
        }
        Err(_) => 0,
    };
    let mut extra = vec![("x-upstream-seq".to_owned(), seq.to_string())];
    for pair in parts.uri.query().unwrap_or("").split('&') {
        if let Some((k, v)) = pair.split_once('=')
            && let Some(name) = k.strip_prefix("h-")
        {
            extra.push((name.to_owned(), percent_decode(v)));
        }
    }
    let mut resp = answer_by_path(&parts, &path, release, name, fixed).await;
    for (k, v) in extra {
        if let (Ok(k), Ok(v)) = (hyper::header::HeaderName::from_bytes(k.as_bytes()), v.parse()) {
            resp.headers_mut().append(k, v);
        }
    }
    Ok(resp)
}

/// `%XX` sequences decoded (invalid ones kept as they are).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn answer_by_path(
    parts: &hyper::http::request::Parts,
    path: &str,
    release: Arc<Notify>,
    name: Arc<str>,
    fixed: Option<Bytes>,
) -> Response<Body> {
    if let Some(body) = fixed {
        let mut resp = Response::new(full(body));
        resp.headers_mut().insert("content-type", "application/json".parse().expect("static header"));
        return resp;
    }
    let mut resp = Response::new(full(format!("{{\"upstream\":\"{name}\",\"path\":{:?}}}", path)));
    resp.headers_mut().insert("content-type", "application/json".parse().expect("static header"));
    // `/tokens/N`: the upstream reports a usage of N tokens (for weighted rate limits).
    if let Some(n) = path.rsplit_once("/tokens/").and_then(|(_, n)| n.parse::<u64>().ok()) {
        resp.headers_mut().insert("x-tokens-used", n.into());
    }
    if let Some(code) = path.rsplit_once("/status/").and_then(|(_, c)| c.parse::<u16>().ok()) {
        *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
        *resp.body_mut() = full(format!("upstream says {code}"));
        resp.headers_mut().insert("content-type", "text/plain".parse().expect("static header"));
    } else if let Some(ms) = path.rsplit_once("/slow/").and_then(|(_, c)| c.parse::<u64>().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    } else if let Some(to) = parts.uri.query().and_then(|q| q.strip_prefix("redirect-to=")) {
        *resp.status_mut() = StatusCode::TEMPORARY_REDIRECT;
        resp.headers_mut().insert("location", to.parse().expect("location"));
    } else if path.ends_with("/redirect") {
        *resp.status_mut() = StatusCode::FOUND;
        resp.headers_mut().insert("location", "/redirected".parse().expect("static header"));
    } else if path.ends_with("/stream") {
        let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(2);
        tokio::spawn(async move {
            let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"first;")))).await;
            release.notified().await;
            let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"second")))).await;
        });
        let stream = tokio_stream_from(rx);
        *resp.body_mut() = StreamBody::new(stream).boxed();
    } else if path.ends_with("/sse") {
        let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
        tokio::spawn(async move {
            for i in 1..=3 {
                if i > 1 {
                    release.notified().await;
                }
                let event = format!("id: {i}\nevent: tick\ndata: {{\"n\":{i}}}\n\n");
                if tx.send(Ok(Frame::data(Bytes::from(event)))).await.is_err() {
                    return;
                }
            }
        });
        *resp.body_mut() = StreamBody::new(tokio_stream_from(rx)).boxed();
        let h = resp.headers_mut();
        h.insert("content-type", "text/event-stream".parse().expect("static header"));
        h.insert("cache-control", "no-cache".parse().expect("static header"));
    } else if let Some(mib) = path.rsplit_once("/large/").and_then(|(_, n)| n.parse::<usize>().ok()) {
        // A channel of one chunk: the upstream only produces as fast as the gateway reads.
        let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
        tokio::spawn(async move {
            let chunk = Bytes::from(vec![b'z'; 64 * 1024]);
            for i in 0..mib * 16 {
                if i == 1 {
                    release.notified().await;
                }
                if tx.send(Ok(Frame::data(chunk.clone()))).await.is_err() {
                    return;
                }
            }
        });
        *resp.body_mut() = StreamBody::new(tokio_stream_from(rx)).boxed();
        resp.headers_mut().insert("content-type", "application/octet-stream".parse().expect("static header"));
    } else if path.ends_with("/cors-headers") {
        // An upstream with CORS opinions of its own, which the gateway must replace.
        let h = resp.headers_mut();
        h.insert("access-control-allow-origin", "*".parse().expect("static header"));
        h.insert("access-control-allow-credentials", "true".parse().expect("static header"));
        h.insert("access-control-expose-headers", "x-hidden".parse().expect("static header"));
        h.insert("vary", "Accept-Encoding".parse().expect("static header"));
        h.insert("x-exposed", "exposed-value".parse().expect("static header"));
        h.insert("x-hidden", "hidden-value".parse().expect("static header"));
    } else if path.ends_with("/hop") {
        let h = resp.headers_mut();
        h.insert("connection", "x-upstream-private".parse().expect("static header"));
        h.insert("x-upstream-private", "secret".parse().expect("static header"));
        h.insert("keep-alive", "timeout=5".parse().expect("static header"));
        h.insert("x-upstream-public", "yes".parse().expect("static header"));
    } else if let Some(n) = path.rsplit_once("/bytes/").and_then(|(_, n)| n.parse::<usize>().ok()) {
        *resp.body_mut() = full(vec![b'x'; n]);
        resp.headers_mut().insert("content-type", "application/octet-stream".parse().expect("static header"));
    }
    resp
}

/// A `Stream` over an mpsc receiver (no extra crate needed).
fn tokio_stream_from<T: Send + 'static>(mut rx: mpsc::Receiver<T>) -> impl futures_core::Stream<Item = T> + Send {
    struct S<T>(mpsc::Receiver<T>);
    impl<T> futures_core::Stream for S<T> {
        type Item = T;
        fn poll_next(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<T>> {
            self.0.poll_recv(cx)
        }
    }
    let _ = &mut rx;
    S(rx)
}

/// A running gateway process, killed on drop.
pub struct Gateway {
    /// Where it listens.
    pub addr: SocketAddr,
    child: Child,
    log: PathBuf,
}

/// A free loopback port (the listener is closed before the port is used; good enough on loopback).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// The `specgate` CLI binary of this workspace (built with the gateways).
pub fn specgate_binary() -> PathBuf {
    let _ = gateway_binary("specgate");
    target_dir().join("debug").join("specgate")
}

impl Gateway {
    /// Starts the gateway binary `bin` with `env` and waits until `/__zuplo/ping` answers.
    pub async fn start(bin: &Path, env: &[(&str, String)]) -> Gateway {
        Self::start_on(bin, free_port(), env).await
    }

    /// [`Gateway::start`] on a given port (when another process must know it in advance).
    pub async fn start_on(bin: &Path, port: u16, env: &[(&str, String)]) -> Gateway {
        let gw = Self::spawn(bin, port, env);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = get(&gw.url("/__zuplo/ping")).await
                && r.status == 200 {
                    return gw;
                }
            if Instant::now() > deadline {
                panic!("gateway did not start; its log:\n{}", gw.log_text());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts the process without waiting for it to serve.
    pub fn spawn(bin: &Path, port: u16, env: &[(&str, String)]) -> Gateway {
        let log = std::env::temp_dir().join(format!("specgate-gw-{port}-{}.log", std::process::id()));
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(bin);
        cmd.env("PORT", port.to_string())
            .env("HOST", "127.0.0.1")
            .env("LOG_LEVEL", "info")
            .current_dir(std::env::temp_dir())
            .stdout(Stdio::null())
            .stderr(log_file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        Gateway { addr: SocketAddr::from(([127, 0, 0, 1], port)), child, log }
    }

    /// Sends SIGTERM (graceful shutdown).
    pub fn terminate(&self) {
        let ok = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().expect("kill");
        assert!(ok.success(), "kill -TERM failed");
    }

    /// The process's peak resident memory so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Starts a gateway that terminates TLS and waits until `/__zuplo/ping` answers over
    /// HTTPS to a client trusting `ca_pem`.
    pub async fn start_https(bin: &Path, env: &[(&str, String)], ca_pem: &str) -> Gateway {
        let gw = Self::spawn(bin, free_port(), env);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((r, _)) = send_tls(gw.addr, ca_pem, false, "GET", "/__zuplo/ping", &[]).await
                && r.status == 200
            {
                return gw;
            }
            if Instant::now() > deadline {
                panic!("gateway did not start; its log:\n{}", gw.log_text());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// What the gateway logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit (at most `timeout`) and returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A response as the client got it.
#[derive(Debug)]
pub struct Got {
    /// Status code.
    pub status: u16,
    /// Headers (lower-case names, repeated ones joined with `, `).
    pub headers: HashMap<String, String>,
    /// Body.
    pub body: Bytes,
}

impl Got {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends a request with a real HTTP/1.1 client (one connection per call).
pub async fn send(method: &str, url: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Result<Got, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{e}"))?;
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Full::new(body.into())).map_err(|e| e.to_string())?;
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .map_err(|_| "client timeout".to_owned())?
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let mut hs: HashMap<String, String> = HashMap::new();
    for (k, v) in resp.headers() {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        hs.entry(k.as_str().to_owned()).and_modify(|e| { e.push_str(", "); e.push_str(&v) }).or_insert(v);
    }
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Got { status, headers: hs, body })
}

/// `GET url`.
pub async fn get(url: &str) -> Result<Got, String> {
    send("GET", url, &[], Bytes::new()).await
}

/// Writes raw bytes to `addr` and returns everything read until the server closes or
/// `timeout` passes (for requests no well-behaved client would send).
pub async fn raw_exchange(addr: SocketAddr, request: &[u8], timeout: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else { return String::new() };
    let _ = s.write_all(request).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(timeout, s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}
