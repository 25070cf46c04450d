// Copied by specgate from the project's modules/limits.rs: edit that file, not this copy.
//! Dynamic limits per customer (the seed's "dynamic rate limiting"): gold customers get more
//! requests per window than the others; requests without a customer are not limited here.

use specgate_runtime::policies::RateLimitKey;
use specgate_runtime::prelude::*;

pub async fn by_customer(request: &RequestHead, _context: &Context, _policy_name: &str) -> Option<RateLimitKey> {
    let customer = request.header("x-customer")?.to_owned();
    let requests_allowed = if customer == "gold" { 6 } else { 2 };
    Some(RateLimitKey { key: customer, requests_allowed: Some(requests_allowed), time_window_minutes: None })
}
