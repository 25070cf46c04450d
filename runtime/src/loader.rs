//! `BackgroundLoader`: keeps a value loaded by an async function fresh without making requests
//! wait. Returns the cached value at once while it is fresh; after `ttl` it still returns the
//! stale value and refreshes it in the background (stale-while-revalidate); only an empty or
//! expired-and-failed entry makes a caller wait. At most one load per key is in flight.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

type LoadFn<T> = dyn Fn(String) -> Pin<Box<dyn Future<Output = Result<T, String>> + Send>> + Send + Sync;

/// Loads values by key in the background, as Zuplo's `BackgroundLoader` does.
pub struct BackgroundLoader<T> {
    load: Arc<LoadFn<T>>,
    ttl: Duration,
    timeout: Duration,
    state: Arc<Mutex<HashMap<String, Slot<T>>>>,
}

impl<T> std::fmt::Debug for BackgroundLoader<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackgroundLoader").field("ttl", &self.ttl).field("timeout", &self.timeout).finish()
    }
}

struct Slot<T> {
    value: Option<(T, Instant)>,
    /// Set while a load runs; waiters subscribe to learn when it ends.
    loading: Option<watch::Receiver<bool>>,
}

impl<T: Clone + Send + Sync + 'static> BackgroundLoader<T> {
    /// A loader calling `load(key)`; values are fresh for `ttl`, a load may take `timeout`.
    pub fn new<F, Fut>(load: F, ttl: Duration, timeout: Duration) -> Self
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, String>> + Send + 'static,
    {
        BackgroundLoader {
            load: Arc::new(move |k| Box::pin(load(k))),
            ttl,
            timeout,
            state: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The value for `key`: cached (possibly stale, then refreshed in the background), or
    /// loaded now when there is none.
    pub async fn get(&self, key: &str) -> Result<T, String> {
        loop {
            let wait = {
                let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                let slot = state.entry(key.to_owned()).or_insert(Slot { value: None, loading: None });
                match (&slot.value, &slot.loading) {
                    (Some((v, at)), _) if at.elapsed() < self.ttl => return Ok(v.clone()),
                    (Some((v, _)), Some(_)) => return Ok(v.clone()),
                    (Some((v, _)), None) => {
                        let v = v.clone();
                        slot.loading = Some(self.start(key));
                        return Ok(v);
                    }
                    (None, Some(rx)) => rx.clone(),
                    (None, None) => {
                        let rx = self.start(key);
                        slot.loading = Some(rx.clone());
                        rx
                    }
                }
            };
            let mut wait = wait;
            // Wait for the load in flight to finish, then look again.
            while !*wait.borrow() {
                if wait.changed().await.is_err() {
                    break;
                }
            }
            let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            match state.get(key) {
                Some(Slot { value: Some((v, _)), .. }) => return Ok(v.clone()),
                Some(Slot { loading: None, value: None }) => return Err(format!("loading `{key}` failed")),
                _ => {}
            }
        }
    }

    fn start(&self, key: &str) -> watch::Receiver<bool> {
        let (tx, rx) = watch::channel(false);
        let load = self.load.clone();
        let state = self.state.clone();
        let timeout = self.timeout;
        let key = key.to_owned();
        tokio::spawn(async move {
            let result = tokio::time::timeout(timeout, load(key.clone())).await;
            let mut map = state.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(slot) = map.get_mut(&key) {
                match result {
                    Ok(Ok(v)) => slot.value = Some((v, Instant::now())),
                    Ok(Err(e)) => tracing::warn!(key = %key, error = %e, "background load failed; keeping the previous value"),
                    Err(_) => tracing::warn!(key = %key, "background load timed out; keeping the previous value"),
                }
                slot.loading = None;
            }
            let _ = tx.send(true);
        });
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn one_load_in_flight_and_stale_while_revalidate() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let loader = Arc::new(BackgroundLoader::new(
            move |k: String| {
                let c = c.clone();
                async move {
                    let n = c.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    Ok::<_, String>(format!("{k}-{n}"))
                }
            },
            Duration::from_millis(100),
            Duration::from_secs(5),
        ));
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let l = loader.clone();
            tasks.push(tokio::spawn(async move { l.get("a").await }));
        }
        for t in tasks {
            assert_eq!(t.await.ok().and_then(Result::ok).as_deref(), Some("a-0"));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "concurrent misses share one load");
        tokio::time::sleep(Duration::from_millis(120)).await;
        // Stale: answered at once with the old value, refreshed in the background.
        assert_eq!(loader.get("a").await.ok().as_deref(), Some("a-0"));
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(loader.get("a").await.ok().as_deref(), Some("a-1"));
    }

    #[tokio::test]
    async fn failures_are_reported_and_timeouts_bounded() {
        let loader = BackgroundLoader::new(
            |_k: String| async { Err::<String, _>("boom".to_owned()) },
            Duration::from_secs(1),
            Duration::from_secs(1),
        );
        assert!(loader.get("x").await.is_err());
        let slow = BackgroundLoader::new(
            |_k: String| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok::<_, String>(1)
            },
            Duration::from_secs(1),
            Duration::from_millis(50),
        );
        assert!(slow.get("x").await.is_err());
    }
}
