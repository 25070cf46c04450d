//! A small bearer-key check standing in front of the routing policies: it sets
//! `request.user` {sub, data} from config/consumers.json, as an API-key policy would from its
//! key store. Keys are compared in constant time.

use specgate_runtime::prelude::*;
use std::sync::OnceLock;

#[derive(Deserialize)]
pub struct Options {
    /// Name of the consumers file under config/ (kept for documentation; the file is compiled in).
    #[serde(rename = "consumersFile")]
    pub consumers_file: String,
}

#[derive(Deserialize)]
struct Consumer {
    key: String,
    sub: String,
    data: Value,
}

fn consumers() -> &'static [Consumer] {
    static CONSUMERS: OnceLock<Vec<Consumer>> = OnceLock::new();
    CONSUMERS.get_or_init(|| {
        serde_json::from_str(include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/config/consumers.json"))).unwrap_or_default()
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub async fn default(mut request: Request, context: &mut Context, options: &Options, _policy_name: &str) -> Flow {
    let key = request.header("authorization").and_then(|h| h.strip_prefix("Bearer ")).unwrap_or("").to_owned();
    // Every entry is compared so the time taken does not tell which keys exist.
    let mut found = None;
    for c in consumers() {
        if constant_time_eq(c.key.as_bytes(), key.as_bytes()) {
            found = Some(c);
        }
    }
    match found {
        Some(c) => {
            request.user = Some(User { sub: c.sub.clone(), data: c.data.clone() });
            Flow::Continue(request)
        }
        None => {
            context.log.warn(format!("rejected a request without a valid key ({})", options.consumers_file));
            Flow::Problem(Problem::new(specgate_runtime::http::StatusCode::UNAUTHORIZED).with_detail("a valid Bearer key is required"))
        }
    }
}
