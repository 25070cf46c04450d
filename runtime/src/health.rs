//! Readiness: `GET /__specgate/ready` answers 200 when every dependency the gateway was
//! configured with answers, 503 (problem+json listing the failures) otherwise. Dependencies
//! register themselves when they are built (each Redis connection: a `PING`); with
//! `READINESS_CHECK_UPSTREAMS=on`, every upstream URL fixed at start-up must also accept a TCP
//! connection. `GET /__zuplo/ping` stays a pure liveness check.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// How long one check may take.
pub const CHECK_TIMEOUT: Duration = Duration::from_millis(800);

/// A readiness check: resolves to `Err(reason)` when the dependency is not usable.
pub type Check = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

static CHECKS: Mutex<Vec<(String, Check)>> = Mutex::new(Vec::new());

/// Registers a dependency under `name` (shown in failures).
pub fn register(name: impl Into<String>, check: Check) {
    CHECKS.lock().unwrap_or_else(PoisonError::into_inner).push((name.into(), check));
}

/// A check that sends `PING` on a Redis connection.
pub fn redis_check(conn: redis::aio::ConnectionManager) -> Check {
    Arc::new(move || {
        let mut conn = conn.clone();
        Box::pin(async move {
            redis::cmd("PING").query_async::<String>(&mut conn).await.map(drop).map_err(|e| e.to_string())
        })
    })
}

/// A check that opens (and closes) a TCP connection to the host and port of `url`.
pub fn tcp_check(url: &str) -> Option<Check> {
    let uri: http::Uri = url.parse().ok()?;
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
        Some("https" | "wss") => 443,
        _ => 80,
    });
    Some(Arc::new(move || {
        let host = host.clone();
        Box::pin(async move { tokio::net::TcpStream::connect((host.as_str(), port)).await.map(drop).map_err(|e| e.to_string()) })
    }))
}

/// Runs every registered check concurrently (each bounded by [`CHECK_TIMEOUT`]) and returns
/// the failures as `name: reason`.
pub async fn failures() -> Vec<String> {
    let checks: Vec<(String, Check)> = CHECKS.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let runs = checks.into_iter().map(|(name, check)| async move {
        match tokio::time::timeout(CHECK_TIMEOUT, check()).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("{name}: {e}")),
            Err(_) => Some(format!("{name}: no answer within {CHECK_TIMEOUT:?}")),
        }
    });
    futures_util::future::join_all(runs).await.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn failing_and_passing_checks() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
        let up = format!("http://{}", listener.local_addr().unwrap_or_else(|e| panic!("{e}")));
        let Some(ok) = tcp_check(&up) else { panic!("no check for {up}") };
        assert_eq!(ok().await, Ok(()));
        drop(listener);
        assert!(ok().await.is_err(), "closed port");
        assert!(tcp_check("not a url").is_none());
        register("slow", Arc::new(|| Box::pin(async { std::future::pending::<Result<(), String>>().await })));
        register("fine", Arc::new(|| Box::pin(async { Ok(()) })));
        let f = failures().await;
        assert!(f.iter().any(|m| m.starts_with("slow: no answer")), "{f:?}");
        assert!(!f.iter().any(|m| m.starts_with("fine")), "{f:?}");
    }
}
