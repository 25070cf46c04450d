//! Start-up and the request loop: configuration from the environment, logging, routing,
//! system routes, request ids, access logs and graceful shutdown.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use http::{HeaderValue, Method, StatusCode, header};
use tokio::sync::Notify;

use crate::context::{Log, RouteInfo};
use crate::cors::CorsPolicy;
use crate::env::Environment;
use crate::hooks::{FormatProblem, Hooks};
use crate::policy::Flow;
use crate::request::Params;
use crate::path::normalize_path;
use crate::proxy::{Upstream, UpstreamConfig};
use crate::router::{Lookup, Router};
use crate::{Context, Gateway, Problem, Request, Response};

/// Settings of the server, read from the environment at start-up.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on (`HOST`, default `0.0.0.0`).
    pub host: IpAddr,
    /// Port to listen on (`PORT`, default 9000).
    pub port: u16,
    /// Tokio worker threads (`WORKER_THREADS`, default: one per core).
    pub worker_threads: Option<usize>,
    /// How long in-flight requests may run after SIGTERM (`SHUTDOWN_TIMEOUT_SECONDS`, 30).
    pub shutdown_timeout: Duration,
    /// One log line per request (`ACCESS_LOG`, default on).
    pub access_log: bool,
    /// Upstream settings (`UPSTREAM_TIMEOUT_SECONDS` 30, `UPSTREAM_CONNECT_TIMEOUT_SECONDS` 10,
    /// `TRUSTED_PROXY_HOPS` 0).
    pub upstream: UpstreamConfig,
    /// A separate listener for `GET /metrics` (`METRICS_ADDR`, e.g. `127.0.0.1:9464`; off by
    /// default).
    pub metrics_addr: Option<SocketAddr>,
    /// A path on the main listener serving the metrics (`METRICS_PATH`, e.g.
    /// `/__specgate/metrics`; off by default).
    pub metrics_path: Option<String>,
    /// Limits against abusive clients.
    pub limits: Limits,
    /// The readiness endpoint also requires every upstream fixed at start-up to accept a TCP
    /// connection (`READINESS_CHECK_UPSTREAMS`, default off).
    pub check_upstreams: bool,
    /// Trace propagation and OTLP export (`OTEL_*`).
    pub tracing: crate::trace::TracingConfig,
    /// HTTPS on the main listener (`TLS_CERT_FILE`, `TLS_KEY_FILE`); plain HTTP when `None`.
    pub tls: Option<crate::tls::TlsConfig>,
}

/// Limits that keep one client from exhausting the gateway.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The largest request head, request line and headers together (`MAX_HEADER_BYTES`,
    /// 65536; at least 8192): larger heads get 431.
    pub max_header_bytes: usize,
    /// The most header fields in a request (`MAX_HEADERS`, 100): more get 431.
    pub max_headers: usize,
    /// How long a client may take to send a request head (`HEADER_READ_TIMEOUT_SECONDS`, 10);
    /// slower connections are closed (slowloris).
    pub header_read_timeout: Duration,
    /// How long an idle keep-alive connection stays open (`KEEPALIVE_TIMEOUT_SECONDS`, 75,
    /// nginx's default). Idle plain-text HTTP/1 connections hold no buffers meanwhile.
    pub keep_alive_timeout: Duration,
    /// Open client connections per process (`MAX_CONNECTIONS`, 20000); connections over the
    /// limit are closed at once.
    pub max_connections: usize,
    /// The largest request body (`MAX_REQUEST_BODY_BYTES`, 10 MiB; 0 = no limit): a declared
    /// length over it gets 413 before anything is read, a streamed body is cut off there.
    pub max_body_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 65536,
            max_headers: 100,
            header_read_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(75),
            max_connections: 20_000,
            max_body_bytes: 10 * 1024 * 1024,
        }
    }
}

impl ServerConfig {
    /// Reads the settings; every malformed value is reported.
    pub fn from_env(env: &Environment) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        let parse = |name: &str, default: &str| -> String {
            env.get(name).unwrap_or_else(|| default.to_owned())
        };
        let host_s = parse("HOST", "0.0.0.0");
        let port_s = parse("PORT", "9000");
        let threads_s = parse("WORKER_THREADS", "");
        let shutdown_s = parse("SHUTDOWN_TIMEOUT_SECONDS", "30");
        let access_s = parse("ACCESS_LOG", "on");
        let timeout_s = parse("UPSTREAM_TIMEOUT_SECONDS", "30");
        let connect_s = parse("UPSTREAM_CONNECT_TIMEOUT_SECONDS", "10");
        let hops_s = parse("TRUSTED_PROXY_HOPS", "0");
        let metrics_addr_s = parse("METRICS_ADDR", "");
        let check_upstreams_s = parse("READINESS_CHECK_UPSTREAMS", "off");
        let check_upstreams = match check_upstreams_s.to_ascii_lowercase().as_str() {
            "on" | "true" | "1" | "yes" => true,
            "off" | "false" | "0" | "no" => false,
            _ => {
                errors.push(format!("READINESS_CHECK_UPSTREAMS={check_upstreams_s:?} is neither on nor off"));
                false
            }
        };
        let ca_file_s = parse("UPSTREAM_CA_FILE", "");
        let extra_roots = match ca_file_s.trim() {
            "" => Vec::new(),
            path => crate::proxy::read_ca_file(path).unwrap_or_else(|e| {
                errors.push(e);
                Vec::new()
            }),
        };
        let mut limits = Limits::default();
        let mut number = |name: &str, default: u64, min: u64| -> u64 {
            let v = parse(name, &default.to_string());
            match v.trim().parse::<u64>() {
                Ok(n) if n >= min => n,
                _ => {
                    errors.push(format!("{name}={v:?} is not a whole number of at least {min}"));
                    default
                }
            }
        };
        limits.max_header_bytes = usize::try_from(number("MAX_HEADER_BYTES", 65536, 8192)).unwrap_or(65536);
        limits.max_headers = usize::try_from(number("MAX_HEADERS", 100, 1)).unwrap_or(100);
        limits.header_read_timeout = Duration::from_secs(number("HEADER_READ_TIMEOUT_SECONDS", 10, 1));
        limits.keep_alive_timeout = Duration::from_secs(number("KEEPALIVE_TIMEOUT_SECONDS", 75, 1));
        limits.max_connections = usize::try_from(number("MAX_CONNECTIONS", 20_000, 1)).unwrap_or(20_000);
        limits.max_body_bytes = number("MAX_REQUEST_BODY_BYTES", 10 * 1024 * 1024, 0);
        let metrics_path_s = parse("METRICS_PATH", "");
        let tracing = crate::trace::TracingConfig::from_env(env).unwrap_or_else(|e| {
            errors.extend(e);
            crate::trace::TracingConfig::default()
        });
        let tls = crate::tls::TlsConfig::from_env(env).unwrap_or_else(|e| {
            errors.extend(e);
            None
        });

        let host = host_s.parse::<IpAddr>().unwrap_or_else(|_| {
            errors.push(format!("HOST={host_s:?} is not an IP address"));
            Ipv4Addr::UNSPECIFIED.into()
        });
        let port = port_s.parse::<u16>().unwrap_or_else(|_| {
            errors.push(format!("PORT={port_s:?} is not a port number"));
            9000
        });
        let worker_threads = if threads_s.is_empty() {
            None
        } else {
            match threads_s.parse::<usize>() {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    errors.push(format!("WORKER_THREADS={threads_s:?} is not a positive number"));
                    None
                }
            }
        };
        let mut seconds = |name: &str, s: &str| match s.parse::<f64>() {
            Ok(v) if v.is_finite() && v > 0.0 => Duration::from_secs_f64(v),
            _ => {
                errors.push(format!("{name}={s:?} is not a positive number of seconds"));
                Duration::from_secs(30)
            }
        };
        let shutdown_timeout = seconds("SHUTDOWN_TIMEOUT_SECONDS", &shutdown_s);
        let timeout = seconds("UPSTREAM_TIMEOUT_SECONDS", &timeout_s);
        let connect_timeout = seconds("UPSTREAM_CONNECT_TIMEOUT_SECONDS", &connect_s);
        let access_log = match access_s.to_ascii_lowercase().as_str() {
            "on" | "true" | "1" | "yes" => true,
            "off" | "false" | "0" | "no" => false,
            _ => {
                errors.push(format!("ACCESS_LOG={access_s:?} is neither on nor off"));
                true
            }
        };
        let trusted_proxy_hops = hops_s.parse::<usize>().unwrap_or_else(|_| {
            errors.push(format!("TRUSTED_PROXY_HOPS={hops_s:?} is not a number"));
            0
        });
        let metrics_addr = match metrics_addr_s.trim() {
            "" => None,
            a => match a.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    errors.push(format!("METRICS_ADDR={a:?} is not an address with a port (e.g. 127.0.0.1:9464)"));
                    None
                }
            },
        };
        let metrics_path = match metrics_path_s.trim() {
            "" => None,
            p if p.starts_with('/') && normalize_path(p).is_ok_and(|n| n == p) => Some(p.to_owned()),
            p => {
                errors.push(format!("METRICS_PATH={p:?} is not a normalized absolute path (e.g. /__specgate/metrics)"));
                None
            }
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(ServerConfig {
            tracing,
            tls,
            check_upstreams,
            limits,
            metrics_addr,
            metrics_path,
            host,
            port,
            worker_threads,
            shutdown_timeout,
            access_log,
            upstream: UpstreamConfig { timeout, connect_timeout, trusted_proxy_hops, extra_roots, ..UpstreamConfig::default() },
        })
    }
}

/// Shared state of the running gateway that handlers reach through the [`Context`].
pub struct Runtime {
    upstream: Upstream,
    access_log: bool,
    formatter: &'static dyn FormatProblem,
    background: Background,
    pub(crate) tracing: crate::trace::Tracing,
    /// The listener terminates TLS.
    pub(crate) https: bool,
    /// The gateway's name.
    gateway: &'static str,
    /// The gateway's metrics, when they are on.
    metrics: Option<&'static crate::metrics::Metrics>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("upstream", &self.upstream).finish_non_exhaustive()
    }
}

impl Runtime {
    /// The pooled upstream client.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// The name of the gateway this runtime serves.
    pub fn gateway(&self) -> &'static str {
        self.gateway
    }

    /// The gateway's metrics, when they are on.
    pub fn metrics(&self) -> Option<&'static crate::metrics::Metrics> {
        self.metrics
    }

    pub(crate) fn format_problem(&self, problem: Problem, instance: &str, request_id: &str) -> Response {
        self.formatter.format(problem, instance, request_id)
    }

    pub(crate) fn error_problem(&self, problem: Problem) -> Problem {
        self.formatter.on_error(problem)
    }

    pub(crate) fn spawn_background(&self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        self.background.spawn(work);
    }

    /// A leaked runtime with default settings and no hooks, so unit tests can build a
    /// [`Context`] (which needs a `&'static Runtime`); benchmarks too. Call inside a Tokio
    /// runtime.
    pub(crate) fn for_tests() -> &'static Runtime {
        Box::leak(Box::new(Runtime {
            upstream: Upstream::new(UpstreamConfig::default()),
            access_log: false,
            formatter: &crate::hooks::NoHooks,
            background: Background::default(),
            tracing: crate::trace::Tracing::propagation_only(),
            https: false,
            gateway: "test",
            metrics: None,
        }))
    }
}

/// Work started with `context.wait_until`: counted so that shutdown can wait for it.
#[derive(Debug, Default, Clone)]
struct Background {
    running: Arc<AtomicUsize>,
    idle: Arc<Notify>,
}

impl Background {
    /// The process's one set (every gateway of a federated build shares it, so shutdown waits
    /// for all of their work).
    fn process() -> Self {
        static SHARED: std::sync::OnceLock<Background> = std::sync::OnceLock::new();
        SHARED.get_or_init(Background::default).clone()
    }

    fn spawn(&self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        self.running.fetch_add(1, Ordering::SeqCst);
        let this = self.clone();
        tokio::spawn(async move {
            work.await;
            if this.running.fetch_sub(1, Ordering::SeqCst) == 1 {
                this.idle.notify_waiters();
            }
        });
    }

    async fn drained(&self) {
        loop {
            let notified = self.idle.notified();
            if self.running.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

struct App<G: Gateway> {
    gateway: G,
    hooks: &'static G::Hooks,
    runtime: Runtime,
    router: Router,
    metrics: Option<&'static crate::metrics::Metrics>,
    metrics_path: Option<String>,
    /// Permits for open client connections (shared by every worker).
    connections: Arc<tokio::sync::Semaphore>,
    max_body_bytes: u64,
    /// The certificate and handshake settings when the listener terminates TLS.
    tls: Option<Tls>,
}

/// TLS termination state shared by every worker.
struct Tls {
    acceptor: tokio_rustls::TlsAcceptor,
    certs: Arc<crate::tls::CertStore>,
}

/// Entry point of a generated gateway's `main`. With the argument `health-check`, asks the
/// gateway running on `HOST`/`PORT` for `/__zuplo/ping` instead (for container health checks)
/// and exits 0 when it answers 200.
pub fn run<G: Gateway>() -> ExitCode {
    run_federated::<G>(&[])
}

/// Another gateway of a federated build (see [`run_federated`]).
pub struct Member {
    name: &'static str,
    start: fn(&Environment, &ServerConfig) -> Result<&'static dyn crate::federation::Local, String>,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member").field("name", &self.name).finish_non_exhaustive()
    }
}

/// The gateway `G` as a member of a federated build.
pub fn member<G: Gateway>() -> Member {
    Member { name: G::NAME, start: start_member::<G> }
}

/// Configures and builds a member (inside the main runtime: policies may start tasks).
fn start_member<G: Gateway>(env: &Environment, config: &ServerConfig) -> Result<&'static dyn crate::federation::Local, String> {
    let gateway = configure::<G>(env, true)?;
    let app: &'static App<G> = build::<G>(gateway, config)?;
    Ok(app)
}

/// Reads `G`'s configuration; in a federated build, `NAME__VAR` wins over `VAR` (NAME as
/// [`crate::federation::env_name`] writes the gateway's name).
fn configure<G: Gateway>(env: &Environment, federated: bool) -> Result<G, String> {
    let scope = crate::federation::env_name(G::NAME);
    let mut reader = if federated { env.scoped_reader(&scope) } else { env.reader() };
    let gateway = G::configure(&mut reader);
    let result = match (reader.finish(), gateway) {
        (Ok(()), Some(g)) => Ok(g),
        (Err(e), _) => Err(e.to_string()),
        (Ok(()), None) => Err("the gateway configuration could not be built".to_owned()),
    };
    if federated { result.map_err(|e| format!("gateway `{}`: {e}", G::NAME)) } else { result }
}

/// [`run`] for a federated build: `G` listens on `HOST`/`PORT`; it and every member are
/// reachable from each other's routes as `local://NAME`, in process. Each gateway reads its
/// own variables (`NAME__VAR` before `VAR`) and keeps its own routes, policies, CORS, hooks and
/// metrics (labelled `gateway="NAME"`); the server settings are the process's.
pub fn run_federated<G: Gateway>(members: &[Member]) -> ExitCode {
    let env = Environment::load();
    if std::env::args().nth(1).as_deref() == Some("health-check") {
        return health_check(&env);
    }
    init_logging(&env);
    crate::env::set_global(env.clone());
    let config = match ServerConfig::from_env(&env) {
        Ok(c) => c,
        Err(errors) => {
            for e in errors {
                eprintln!("error: {e}");
            }
            return ExitCode::FAILURE;
        }
    };
    // One current-thread runtime per worker, each accepting on its own SO_REUSEPORT listener
    // (the kernel spreads connections), the way nginx runs one event loop per worker: no
    // work-stealing and no cross-thread wake-ups on the request path. Measured against a
    // multi-thread runtime in docs/benchmarks.md.
    let workers = config
        .worker_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
        .max(1);
    crate::proxy::set_worker_count(workers);
    let rt = match current_thread_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Configuration is read inside the main runtime: policies may start background tasks,
    // which keep running on it (it also serves as worker 0).
    let federated = !members.is_empty();
    let built = rt.block_on(async {
        let mut errors = Vec::new();
        let entry = configure::<G>(&env, federated).and_then(|g| build::<G>(g, &config));
        let mut local: Vec<(&'static str, &'static dyn crate::federation::Local)> = Vec::new();
        for m in members {
            match (m.start)(&env, &config) {
                Ok(l) => local.push((m.name, l)),
                Err(e) => errors.push(e),
            }
        }
        match entry {
            Ok(app) if errors.is_empty() => {
                local.insert(0, (G::NAME, app));
                Ok((app, local))
            }
            Ok(_) => Err(errors),
            Err(e) => {
                errors.insert(0, e);
                Err(errors)
            }
        }
    });
    let (app, members) = match built {
        Ok((app, local)) => {
            let members: Vec<&'static Runtime> = local.iter().skip(1).map(|(_, l)| l.runtime()).collect();
            if federated {
                let names: Vec<&str> = local.iter().map(|(n, _)| *n).collect();
                tracing::info!(entry = G::NAME, "gateways of this process, reachable as local://NAME: {}", names.join(", "));
            }
            crate::federation::install(local);
            (app, members)
        }
        Err(errors) => {
            for e in errors {
                eprintln!("error: {e}");
            }
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        let addr = SocketAddr::new(config.host, config.port);
        let listener = bind(addr, workers > 1).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        let scheme = if app.tls.is_some() { "https" } else { "http" };
        tracing::info!(gateway = G::NAME, routes = G::ROUTES.len(), workers, "listening on {scheme}://{local}");
        if let Some(tls) = &app.tls {
            reload_on_sighup(tls.certs.clone());
        }
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        if let (Some(addr), Some(_)) = (config.metrics_addr, app.metrics) {
            serve_metrics(addr, stop_rx.clone()).await?;
        }
        let mut threads = Vec::new();
        for i in 1..workers {
            let rx = stop_rx.clone();
            let cfg = config.clone();
            let spawned = std::thread::Builder::new().name(format!("specgate-worker-{i}")).spawn(move || -> Result<(), String> {
                crate::proxy::set_worker_index(i);
                let rt = current_thread_runtime().map_err(|e| e.to_string())?;
                rt.block_on(async move {
                    let listener = bind(local, true).map_err(|e| format!("cannot listen on {local}: {e}"))?;
                    serve_listener::<G>(app, listener, &cfg, stopped(rx)).await
                })
            });
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => return Err(format!("cannot start worker thread: {e}")),
            }
        }
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutting down: finishing in-flight requests");
            let _ = stop_tx.send(true);
        });
        let first = serve_listener::<G>(app, listener, &config, stopped(stop_rx)).await;
        app.runtime.background.drained().await;
        Ok((first, threads, app))
    });
    let (first, threads, app) = match result {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut outcome = first;
    for t in threads {
        match t.join() {
            Ok(r) => outcome = outcome.and(r),
            Err(_) => outcome = Err("a worker thread panicked".to_owned()),
        }
    }
    // Every request has ended: export the spans still queued, every gateway's.
    app.runtime.tracing.shutdown(Duration::from_secs(5));
    for runtime in members {
        runtime.tracing.shutdown(Duration::from_secs(5));
    }
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn health_check(env: &Environment) -> ExitCode {
    use std::io::{Read, Write};
    let port = env.get("PORT").and_then(|p| p.parse::<u16>().ok()).unwrap_or(9000);
    let host = env.get("HOST").and_then(|h| h.parse::<IpAddr>().ok()).filter(|h| !h.is_unspecified()).unwrap_or(Ipv4Addr::LOCALHOST.into());
    let addr = SocketAddr::new(host, port);
    // Over TLS when the gateway terminates it, trusting exactly its own certificate.
    let tls = match crate::tls::TlsConfig::from_env(env) {
        Ok(Some(t)) => match crate::tls::pinned_client_config(&t.cert_file) {
            Ok(c) => Some(Arc::new(c)),
            Err(e) => {
                eprintln!("unhealthy: {e}");
                return ExitCode::FAILURE;
            }
        },
        Ok(None) => None,
        Err(errors) => {
            eprintln!("unhealthy: {}", errors.join("; "));
            return ExitCode::FAILURE;
        }
    };
    let request = b"GET /__zuplo/ping HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let answer = (|| -> std::io::Result<String> {
        let s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.set_write_timeout(Some(Duration::from_secs(2)))?;
        let mut buf = Vec::new();
        match tls {
            None => {
                let mut s = s;
                s.write_all(request)?;
                s.read_to_end(&mut buf)?;
            }
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from("localhost").map_err(std::io::Error::other)?;
                let conn = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
                let mut s = rustls::StreamOwned::new(conn, s);
                s.write_all(request)?;
                s.flush()?;
                // A peer closing without close_notify after a complete answer is fine here.
                if let Err(e) = s.read_to_end(&mut buf)
                    && buf.is_empty()
                {
                    return Err(e);
                }
            }
        }
        Ok(String::from_utf8_lossy(&buf).into_owned())
    })();
    match answer {
        Ok(a) if a.starts_with("HTTP/1.1 200") => ExitCode::SUCCESS,
        Ok(a) => {
            eprintln!("unhealthy: {}", a.lines().next().unwrap_or(""));
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("unhealthy: {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn current_thread_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()
}

/// A listening socket; with `shared`, SO_REUSEPORT so that every worker binds the same port.
fn bind(addr: SocketAddr, shared: bool) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    #[cfg(unix)]
    if shared {
        socket.set_reuseport(true)?;
    }
    #[cfg(not(unix))]
    let _ = shared;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Reads the certificate files again on every SIGHUP; a failed reload keeps the certificate
/// in force.
fn reload_on_sighup(certs: Arc<crate::tls::CertStore>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP: the certificate will not be reloaded");
            return;
        };
        while hup.recv().await.is_some() {
            match certs.reload() {
                Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
                Err(e) => tracing::error!("SIGHUP: TLS certificate not reloaded, the previous one stays in use: {e}"),
            }
        }
    });
    #[cfg(not(unix))]
    let _ = certs;
}

/// Resolves once the stop flag is raised.
async fn stopped(mut rx: tokio::sync::watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Applies the default request-body limit: a declared length over `max` is refused before
/// anything is read (hyper holds HTTP/1 bodies to their declared length); a body without one
/// is cut off after `max` bytes, which the proxy answers with 413. A refusal comes with the
/// request's path (the problem's instance).
#[allow(clippy::result_large_err)]
fn limit_body(req: http::Request<Body>, max: u64) -> Result<http::Request<Body>, (Problem, String)> {
    use http_body::Body as _;
    if max == 0 || req.body().is_end_stream() {
        return Ok(req);
    }
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(n) if n > max => Err((
            Problem::new(StatusCode::PAYLOAD_TOO_LARGE).with_detail(format!("the request body is larger than {max} bytes")),
            req.uri().path().to_owned(),
        )),
        Some(_) => Ok(req),
        None => {
            let max = usize::try_from(max).unwrap_or(usize::MAX);
            Ok(req.map(|b| Body::new(http_body_util::Limited::new(b, max))))
        }
    }
}

/// The HTTP/1 and HTTP/2 connection settings, limits included.
/// The HTTP/1 side of plain-text connections ([`crate::conn`] applies the header-read
/// timeout itself, with no timer per request).
fn http1_builder(limits: &Limits) -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.max_buf_size(limits.max_header_bytes).max_headers(limits.max_headers);
    b
}

fn connection_builder(limits: &Limits) -> hyper_util::server::conn::auto::Builder<TokioExecutor> {
    let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes)
        .max_headers(limits.max_headers);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256);
    b
}

/// Serves one listener until `stop`, then drains its connections (at most the shutdown
/// timeout).
///
/// Each accepted connection takes a permit of the process-wide connection limit (over it, the
/// connection is closed at once, as nginx does when `worker_connections` run out) and is
/// served by hyper directly: requests go straight to [`dispatch`], with no router layer in
/// between.
async fn serve_listener<G: Gateway>(
    app: &'static App<G>,
    listener: tokio::net::TcpListener,
    config: &ServerConfig,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let builder = Arc::new(connection_builder(&config.limits));
    let http1 = Arc::new(http1_builder(&config.limits));
    let timeouts = crate::conn::Timeouts { header_read: config.limits.header_read_timeout, keep_alive: config.limits.keep_alive_timeout };
    // Every connection holds a receiver: shutdown sends `true`, then waits until all are gone.
    let (drain_tx, drain_rx) = tokio::sync::watch::channel(false);
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    crate::ratelimit::warn_throttled("accepting a connection failed", &e);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = app.connections.clone().try_acquire_owned() else {
            crate::ratelimit::warn_throttled("connection limit reached (MAX_CONNECTIONS); closing new connections", &"over the limit");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        if let Some(m) = app.metrics {
            m.count_connection();
        }
        let drain = drain_rx.clone();
        let builder = builder.clone();
        let Some(tls) = &app.tls else {
            if G::WEBSOCKETS {
                // WebSocket upgrades need hyper's upgrade support, which cannot hand the socket
                // back between requests: such gateways keep their connections whole.
                tokio::spawn(async move {
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service(app, peer)).into_owned();
                    watch(conn, drain).await;
                    drop(permit);
                });
                continue;
            }
            let http1 = http1.clone();
            tokio::spawn(async move {
                let make = move |activity: Arc<crate::conn::Activity>| {
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        use futures_util::FutureExt as _;
                        activity.request_started();
                        let done = activity.clone();
                        boxed(|| serve_request::<G>(app, req.map(Body::new), Some(peer))).map(move |resp| {
                            done.response_ready();
                            Ok::<_, std::convert::Infallible>(resp)
                        })
                    })
                };
                if let crate::conn::Served::NotHttp1(stream) = crate::conn::serve(stream, &http1, make, timeouts, drain.clone()).await {
                    // HTTP/2 with prior knowledge. Boxed: a parked HTTP/1 connection's task
                    // stays small.
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service(app, peer)).into_owned();
                    Box::pin(watch(conn, drain)).await;
                }
                drop(permit);
            });
            continue;
        };
        // The handshake runs in the connection's task, so a slow or failing client never
        // holds up the accept loop; it is bounded by the handshake timeout.
        let acceptor = tls.acceptor.clone();
        let timeout = tls.certs.handshake_timeout();
        tokio::spawn(async move {
            match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service(app, peer)).into_owned();
                    watch(conn, drain).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
            drop(permit);
        });
    }
    drop(listener);
    drop(drain_rx);
    let _ = drain_tx.send(true);
    tokio::select! {
        () = drain_tx.closed() => Ok(()),
        () = tokio::time::sleep(config.shutdown_timeout) => {
            tracing::warn!("shutdown timeout reached; closing remaining connections");
            Ok(())
        }
    }
}

/// The request loop as a hyper service for `peer`'s connection. The peer goes to the request
/// loop as an argument: inserting it into the request's extensions would cost three
/// allocations per request.
fn service<G: Gateway>(
    app: &'static App<G>,
    peer: SocketAddr,
) -> impl hyper::service::Service<http::Request<hyper::body::Incoming>, Response = Response, Error = std::convert::Infallible, Future: Send> + Clone {
    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let req = req.map(Body::new);
        // Boxed, so that hyper moves a pointer, not the request's whole state machine.
        let fut = boxed(|| serve_request::<G>(app, req, Some(peer)));
        async move { Ok::<_, std::convert::Infallible>(fut.await) }
    })
}

/// `Box::pin(make())` without the copy: `Box::pin` builds the future on the stack and copies
/// it whole (several KB for a request) into the allocation; making it only once the box
/// exists lets the compiler build it in place.
#[inline(always)]
pub(crate) fn boxed<F>(make: impl FnOnce() -> F) -> std::pin::Pin<Box<F>> {
    let slot = Box::new_uninit();
    Box::into_pin(Box::write(slot, make()))
}

/// Drives `conn` until it ends; once `drain` changes (shutdown), lets its in-flight requests
/// finish and closes it.
async fn watch<C: hyper_util::server::graceful::GracefulConnection>(conn: C, mut drain: tokio::sync::watch::Receiver<bool>) {
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = drain.changed() => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// Binds, serves until `shutdown` resolves, then lets in-flight requests and `wait_until`
/// work finish (for at most the configured shutdown timeout).
pub async fn serve<G: Gateway>(
    gateway: G,
    config: ServerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let app = build::<G>(gateway, &config)?;
    let addr = SocketAddr::new(config.host, config.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let scheme = if app.tls.is_some() { "https" } else { "http" };
    tracing::info!(gateway = G::NAME, routes = G::ROUTES.len(), "listening on {scheme}://{local}");

    let stop = async move {
        shutdown.await;
        tracing::info!("shutting down: finishing in-flight requests");
    };
    let r = serve_listener::<G>(app, listener, &config, stop).await;
    let _ = tokio::time::timeout(config.shutdown_timeout, app.runtime.background.drained()).await;
    app.runtime.tracing.shutdown(Duration::from_secs(5));
    r
}

/// Builds the axum router of a gateway without binding (for in-process tests).
pub fn router<G: Gateway>(gateway: G, config: &ServerConfig) -> Result<axum::Router, String> {
    let app = build::<G>(gateway, config)?;
    Ok(axum::Router::new().fallback(dispatch::<G>).with_state(app))
}

fn build<G: Gateway>(gateway: G, config: &ServerConfig) -> Result<&'static App<G>, String> {
    let router = Router::new(G::ROUTES).map_err(|e| e.to_string())?;
    // The gateway lives as long as the process; leaking it gives every request a plain
    // `&'static` instead of reference counting on the hot path.
    let hooks: &'static G::Hooks = Box::leak(Box::new(G::hooks()));
    let tls = match &config.tls {
        None => None,
        Some(t) => {
            let certs = Arc::new(crate::tls::CertStore::new(t.clone())?);
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(certs.server_config()?));
            Some(Tls { acceptor, certs })
        }
    };
    let metrics = (config.metrics_addr.is_some() || config.metrics_path.is_some()).then(|| crate::metrics::enable(G::NAME, G::ROUTE_INFO));
    let runtime = Runtime {
        upstream: Upstream::new(config.upstream.clone()),
        access_log: config.access_log,
        formatter: hooks,
        background: Background::process(),
        tracing: crate::trace::Tracing::start(&config.tracing, G::NAME)?,
        https: tls.is_some(),
        gateway: G::NAME,
        metrics,
    };
    let metrics_path = config.metrics_path.clone();
    let connections = Arc::new(tokio::sync::Semaphore::new(config.limits.max_connections.min(tokio::sync::Semaphore::MAX_PERMITS)));
    let max_body_bytes = config.limits.max_body_bytes;
    let app: &'static App<G> = Box::leak(Box::new(App { gateway, hooks, runtime, router, metrics, metrics_path, connections, max_body_bytes, tls }));
    start_upstream_sets::<G>(app);
    if config.check_upstreams {
        let mut seen = std::collections::BTreeSet::new();
        // local:// targets are gateways of this process (or reached through a mapping that
        // may change at run time): only network upstreams are checked.
        for url in app.gateway.upstream_urls().into_iter().filter(|u| !crate::federation::is_local(u)) {
            if let Some(check) = crate::health::tcp_check(url)
                && let Ok(uri) = url.parse::<http::Uri>()
                && let Some(authority) = uri.authority()
                && seen.insert(authority.to_string())
            {
                crate::health::register(format!("upstream {authority}"), check);
            }
        }
    }
    Ok(app)
}

/// Prepares the routes' upstream settings, starts the active health checks of their upstream
/// sets (once per set, on the current runtime) and hands the sets to the metrics.
fn start_upstream_sets<G: Gateway>(app: &'static App<G>) {
    let routes = app.gateway.route_upstreams();
    let mut pools: Vec<Arc<crate::upstreams::UpstreamPool>> = Vec::new();
    for route in routes {
        route.prepare(&app.runtime.upstream);
        if let Some(pool) = route.pool()
            && !pools.iter().any(|p| Arc::ptr_eq(p, pool))
        {
            pools.push(pool.clone());
        }
    }
    for pool in &pools {
        crate::upstreams::probe::spawn(pool.clone(), app.runtime.upstream.clone());
    }
    if let Some(m) = app.metrics {
        m.set_pools(pools);
    }
}

/// Serves `GET /metrics` (every gateway of the process) on its own listener until `stop`
/// turns true.
async fn serve_metrics(addr: SocketAddr, stop: tokio::sync::watch::Receiver<bool>) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on METRICS_ADDR {addr}: {e}"))?;
    tracing::info!("metrics on http://{}/metrics", listener.local_addr().map_err(|e| e.to_string())?);
    let app = axum::Router::new().route("/metrics", axum::routing::get(move || async move { metrics_response() }));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stopped(stop)).await {
            tracing::error!(error = %e, "metrics listener failed");
        }
    });
    Ok(())
}

fn metrics_response() -> Response {
    let mut resp = Response::new(Body::from(crate::metrics::render_all()));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The request id header, as a name that costs nothing to insert.
const REQUEST_ID: http::HeaderName = http::HeaderName::from_static(crate::request_id::HEADER);

/// A request that did not come from the listener (the in-process router, a `local://` call):
/// the peer is in its extensions, if anywhere.
async fn dispatch<G: Gateway>(State(app): State<&'static App<G>>, req: http::Request<Body>) -> Response {
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    serve_request::<G>(app, req, peer).await
}

async fn serve_request<G: Gateway>(app: &'static App<G>, req: http::Request<Body>, peer: Option<SocketAddr>) -> Response {
    let started = Instant::now();
    let request_id = crate::request_id::accept_or_mint(req.headers());
    // The id is made of visible ASCII (checked or minted), so the header value always exists;
    // it is made once, before the id moves into the request's context.
    let request_id_value = HeaderValue::from_str(&request_id).ok();
    let scheme = if app.runtime.https { "https" } else { "http" };
    let (trace, span) = app.runtime.tracing.start_request(&req, scheme, peer.map(|p| p.ip()));
    let trace_id = trace.trace_id();
    let method = req.method().clone();
    // Only the access log needs the raw path after routing.
    let path = app.runtime.access_log.then(|| req.uri().path().to_owned());
    let in_flight = app.metrics.map(|m| m.start());
    let mut matched: Option<&'static RouteInfo> = None;
    let mut route_label = "";
    let mut resp = match limit_body(req, app.max_body_bytes) {
        Ok(req) => route::<G>(app, req, peer, request_id, trace, &mut route_label, &mut matched).await,
        Err((p, raw_path)) => app.runtime.format_problem(p, &raw_path, &request_id),
    };
    let request_id = request_id_value.as_ref().and_then(|v| v.to_str().ok()).unwrap_or_default();
    if let Some(span) = span {
        span.finish(&method, matched.map(|r| r.path), resp.status().as_u16(), request_id);
    }
    if let Some(m) = app.metrics {
        m.finish(matched.map(|r| r.index), resp.status().as_u16(), started.elapsed());
    }
    drop(in_flight);
    if let Some(v) = request_id_value.clone() {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    if app.runtime.access_log {
        tracing::info!(
            target: "specgate::access",
            gateway = G::NAME,
            request_id = %request_id,
            trace_id = %trace_id,
            method = %method,
            path = %path.as_deref().unwrap_or_default(),
            route = route_label,
            status = resp.status().as_u16(),
            duration_us = started.elapsed().as_micros() as u64,
        );
    }
    resp
}

async fn route<G: Gateway>(
    app: &'static App<G>,
    req: http::Request<Body>,
    peer: Option<SocketAddr>,
    id: String,
    trace: crate::trace::TraceContext,
    label: &mut &'static str,
    matched: &mut Option<&'static RouteInfo>,
) -> Response {
    let req = if G::HAS_HOOKS {
        match app.hooks.pre_routing(req).await {
            Ok(r) => r,
            Err(resp) => return resp,
        }
    } else {
        req
    };
    let request_id = id.as_str();
    let raw_path = req.uri().path();
    if raw_path == "/__zuplo/ping" && (req.method() == Method::GET || req.method() == Method::HEAD) {
        *label = "__zuplo/ping";
        let mut resp = Response::new(Body::from("ok"));
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        return resp;
    }
    if raw_path == "/__specgate/ready" && (req.method() == Method::GET || req.method() == Method::HEAD) {
        *label = "__specgate/ready";
        let failures = crate::health::failures().await;
        if failures.is_empty() {
            let mut resp = Response::new(Body::from("ready"));
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return resp;
        }
        tracing::warn!(?failures, "not ready");
        let p = Problem::new(StatusCode::SERVICE_UNAVAILABLE)
            .with_detail(format!("not ready: {}", failures.join("; ")))
            .with_header(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return app.runtime.format_problem(p, raw_path, request_id);
    }
    if let (Some(_), Some(p)) = (app.metrics, app.metrics_path.as_deref())
        && raw_path == p
        && req.method() == Method::GET
    {
        *label = "metrics";
        return metrics_response();
    }
    // JWKS of the upstream JWT policy: only served when a policy published a key, so gateways
    // without that policy route this path like any other.
    if raw_path == "/.well-known/jwks.json"
        && (req.method() == Method::GET || req.method() == Method::HEAD)
        && let Some(jwks) = crate::policies::published_jwks()
    {
        *label = "well-known/jwks.json";
        let mut resp = Response::new(Body::from(jwks.to_string()));
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=300"));
        return resp;
    }
    let pathname = match normalize_path(raw_path) {
        Ok(p) => p.into_owned(),
        Err(e) => {
            let p = Problem::bad_request(format!("the request path is not acceptable: {e}"));
            return app.runtime.format_problem(p, raw_path, request_id);
        }
    };
    if req.method() == Method::OPTIONS
        && let Some(resp) = cors_options::<G>(app, req.headers(), &pathname, request_id)
    {
        *label = "cors-preflight";
        return resp;
    }
    let (route, values) = match app.router.lookup(req.method(), &pathname) {
        Lookup::Found { route, params } => {
            let values: Vec<String> = (0..params.len()).filter_map(|i| params.get(i)).map(|c| c.into_owned()).collect();
            (route, values)
        }
        Lookup::MethodNotAllowed { allow } => {
            let allow = allow.join(", ");
            let mut p = Problem::new(StatusCode::METHOD_NOT_ALLOWED)
                .with_detail(format!("{} is not allowed on this path", req.method()));
            if let Ok(v) = HeaderValue::from_str(&allow) {
                p = p.with_header(header::ALLOW, v);
            }
            return app.runtime.format_problem(p, &pathname, request_id);
        }
        Lookup::NotFound => {
            let p = app.hooks.not_found(Problem::not_found("no route matches this path"));
            return app.runtime.format_problem(p, &pathname, request_id);
        }
    };
    let (Some(info), Some(spec)) = (G::ROUTE_INFO.get(route), G::ROUTES.get(route)) else {
        return app.runtime.format_problem(Problem::internal("route table mismatch"), &pathname, request_id);
    };
    *label = info.label;
    *matched = Some(info);
    let peer = peer.unwrap_or_else(|| SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0));
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_owned))
        .unwrap_or_default();
    if !is_valid_host(&host) {
        let p = Problem::bad_request("the Host header is not a valid host name");
        return app.runtime.format_problem(p, &pathname, request_id);
    }
    // A request handed over by a gateway of this process comes with the client address that
    // gateway determined; the hop itself has no address of its own.
    let (local_hops, local_client) = crate::federation::arrived_hops(&req);
    let client_ip = match local_client {
        Some(ip) => ip,
        None => crate::proxy::client_ip(peer.ip(), req.headers(), app.runtime.upstream.config().trusted_proxy_hops),
    };
    let mut cx = Context {
        log: Log { request_id: id.clone(), route: info.label },
        request_id: id,
        route: info,
        pathname,
        host,
        peer,
        client_ip,
        custom: serde_json::Map::new(),
        runtime: &app.runtime,
        after: Vec::new(),
        trace,
        local_hops,
    };
    let cors = app.gateway.cors(route);
    // Cloning a header value only bumps a reference count.
    let origin = cors.and_then(|_| req.headers().get(header::ORIGIN).cloned());
    let req = Request::new(req, Params::new(spec.params, values));
    if !G::HAS_HOOKS {
        let resp = app.gateway.handle(route, req, &mut cx).await;
        let resp = cx.finish_response(resp);
        return with_cors(cors, origin.as_ref(), resp);
    }
    let head = req.head();
    let resp = match app.hooks.on_request(req, &mut cx).await {
        Flow::Continue(req) => app.gateway.handle(route, req, &mut cx).await,
        Flow::Respond(resp) => resp,
        Flow::Problem(p) => cx.problem(p),
    };
    let resp = cx.finish_response(resp);
    let resp = with_cors(cors, origin.as_ref(), resp);
    let resp = app.hooks.on_response(resp, &head, &mut cx).await;
    app.hooks.on_response_final(resp.status(), resp.headers(), &head, &cx).await;
    resp
}

impl<G: Gateway> crate::federation::Local for App<G> {
    fn call(&'static self, req: http::Request<Body>) -> crate::federation::Call {
        Box::pin(dispatch::<G>(State(self), req))
    }

    fn runtime(&'static self) -> &'static Runtime {
        &self.runtime
    }
}

/// The route's CORS headers on its response, whoever produced it; without a policy, the
/// upstream's `Access-Control-*` headers are removed.
fn with_cors(cors: Option<&CorsPolicy>, origin: Option<&HeaderValue>, mut resp: Response) -> Response {
    match cors {
        Some(policy) => policy.apply(origin, &mut resp),
        None => crate::cors::strip(resp.headers_mut()),
    }
    resp
}

/// Answers an `OPTIONS` request before routing when CORS decides it; `None` routes it as
/// usual.
///
/// - A preflight (`Origin` and `Access-Control-Request-Method`) goes to the route that the
///   requested method would reach: 200 with the `Access-Control-Allow-*` headers when that
///   route's CORS policy allows the origin and the method, else a 404 problem. A path none of
///   whose routes has a CORS policy leaves preflights to the project's own `OPTIONS` route, if
///   it declares one.
/// - Any other `OPTIONS` request goes to the project's `OPTIONS` route when there is one, and
///   gets a 400 problem on a path with CORS (it can only be a broken preflight).
fn cors_options<G: Gateway>(app: &'static App<G>, headers: &http::HeaderMap, pathname: &str, request_id: &str) -> Option<Response> {
    let gateway: &'static G = &app.gateway;
    let has_options_route = matches!(app.router.lookup(&Method::OPTIONS, pathname), Lookup::Found { .. });
    let cors_path = app.router.any_route_at(pathname, |r| gateway.cors(r).is_some());
    let (Some(origin), Some(requested)) = (headers.get(header::ORIGIN), headers.get(crate::cors::REQUEST_METHOD)) else {
        if has_options_route || !cors_path {
            return None;
        }
        let p = Problem::bad_request(
            "an OPTIONS request to this path must be a CORS preflight with Origin and Access-Control-Request-Method",
        );
        return Some(app.runtime.format_problem(p, pathname, request_id));
    };
    if !cors_path && has_options_route {
        return None;
    }
    let answer = Method::from_bytes(requested.as_bytes()).ok().and_then(|method| {
        let Lookup::Found { route, .. } = app.router.lookup(&method, pathname) else { return None };
        let policy = gateway.cors(route)?;
        let mut methods: Vec<&'static str> = Vec::new();
        if policy.methods_from_routes() {
            app.router.any_route_at(pathname, |r| {
                if let (Some(p), Some(spec)) = (gateway.cors(r), G::ROUTES.get(r))
                    && std::ptr::eq(p, policy)
                    && !methods.contains(&spec.method)
                {
                    methods.push(spec.method);
                }
                false
            });
        }
        policy.preflight(origin, &method, headers.get(crate::cors::REQUEST_HEADERS), &methods)
    });
    Some(answer.unwrap_or_else(|| {
        let p = Problem::not_found("no route of this path accepts this cross-origin request");
        app.runtime.format_problem(p, pathname, request_id)
    }))
}

/// Host names, IPv4 and bracketed IPv6 literals, with an optional port. The Host header is
/// client-supplied and reaches templates (`${host}`) and `X-Forwarded-Host`, so anything else
/// is refused before routing.
fn is_valid_host(host: &str) -> bool {
    host.len() <= 255
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']' | b'_'))
}

/// The static facts of the routes of `G` (for tools and tests).
pub fn route_info<G: Gateway>() -> &'static [RouteInfo] {
    G::ROUTE_INFO
}

fn init_logging(env: &Environment) {
    use tracing_subscriber::EnvFilter;
    let filter = env
        .get("RUST_LOG")
        .or_else(|| env.get("LOG_LEVEL"))
        .unwrap_or_else(|| "info".to_owned());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let json = env.get("LOG_FORMAT").is_some_and(|f| f.eq_ignore_ascii_case("json"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr);
    let _ = if json { builder.json().flatten_event(true).try_init() } else { builder.try_init() };
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
