//! The one way the runtime connects to Redis (rate limits, quotas, API keys, response cache):
//! a lazy [`ConnectionManager`], so the gateway starts while Redis is down and reconnects in
//! the background, with short timeouts, so a request never waits long on a dead Redis.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// How a connection fails fast.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FailFast {
    /// Connect and response timeout.
    pub(crate) timeout: Duration,
    /// Reconnect attempts per failed command.
    pub(crate) retries: usize,
    /// The longest pause between reconnect attempts.
    pub(crate) max_delay: Duration,
}

/// Why a connection could not be prepared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SetupError {
    /// The URL does not parse.
    InvalidUrl(String),
    /// No Tokio runtime, or the manager could not be built.
    Unavailable(String),
}

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SetupError::InvalidUrl(m) | SetupError::Unavailable(m) => f.write_str(m),
        }
    }
}

impl From<SetupError> for String {
    fn from(e: SetupError) -> String {
        e.to_string()
    }
}

/// Prepares a connection to `url` for `what` (named in errors) without connecting. With
/// `readiness`, the connection is also checked by the readiness endpoint under that name.
/// Needs a Tokio runtime.
pub(crate) fn lazy(url: &str, what: &str, settings: FailFast, readiness: Option<&str>) -> Result<ConnectionManager, SetupError> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(SetupError::Unavailable(format!("the Redis {what} needs a Tokio runtime")));
    }
    let client = redis::Client::open(url).map_err(|e| SetupError::InvalidUrl(format!("invalid Redis URL for the {what}: {e}")))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(settings.timeout))
        .set_response_timeout(Some(settings.timeout))
        .set_number_of_retries(settings.retries)
        .set_max_delay(settings.max_delay);
    let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(|e| SetupError::Unavailable(format!("Redis: {e}")))?;
    if let Some(name) = readiness {
        crate::health::register(name, crate::health::redis_check(conn.clone()));
    }
    Ok(conn)
}
