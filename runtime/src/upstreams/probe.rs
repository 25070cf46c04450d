//! Active health checks: one background task per upstream set with a `healthCheck`, probing
//! every upstream with `GET base + path` each interval. A probe passes on 2xx or 3xx within
//! the probe timeout; thresholds of consecutive results move an upstream out of the rotation
//! and back (see [`UpstreamPool::record_probe`]).

use std::sync::Arc;

use super::UpstreamPool;
use crate::proxy::Upstream;

/// Starts probing `pool` with `client` (no-op without a health check). Call inside the
/// runtime that should run the probes; the task lives as long as that runtime.
pub(crate) fn spawn(pool: Arc<UpstreamPool>, client: Upstream) {
    let Some(hc) = pool.health_check().cloned() else { return };
    let urls: Vec<String> = pool.targets().iter().map(|t| format!("{}{}", t.base(), hc.path)).collect();
    tracing::info!(pool = pool.label(), upstreams = urls.len(), interval = ?hc.interval, "active health checks started");
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(hc.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let probes = urls.iter().map(|url| client.probe(url, hc.timeout));
            let results = futures_util::future::join_all(probes).await;
            for (i, result) in results.into_iter().enumerate() {
                match result {
                    Ok(status) if status.is_success() || status.is_redirection() => pool.record_probe(i, true, ""),
                    Ok(status) => pool.record_probe(i, false, &format!("health check answered {}", status.as_u16())),
                    Err(why) => pool.record_probe(i, false, &why),
                }
            }
        }
    });
}
