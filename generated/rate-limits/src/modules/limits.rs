// Copied by specgate from the project's modules/limits.rs: edit that file, not this copy.
//! Dynamic limits per customer (the seed's "dynamic rate limiting"): gold customers get more
//! requests per window than the others; requests without a customer are not limited here.
//! Quotas per plan, and a meter of what each request cost.

use specgate_runtime::policies::{ComplexRateLimitInbound, QuotaDetail, QuotaInbound, RateLimitKey};
use specgate_runtime::prelude::*;

pub async fn by_customer(request: &RequestHead, _context: &Context, _policy_name: &str) -> Option<RateLimitKey> {
    let customer = request.header("x-customer")?.to_owned();
    let requests_allowed = if customer == "gold" { 6 } else { 2 };
    Some(RateLimitKey { key: customer, requests_allowed: Some(requests_allowed), time_window_minutes: None })
}

/// Quota per plan (`quotaBy: function`): the `x-plan` header names the customer's plan; the
/// free plan gets 2 requests a month, others the policy's allowances. No plan: no quota.
pub async fn quota_by_plan(request: &RequestHead, _context: &Context, _policy_name: &str) -> Option<QuotaDetail> {
    let plan = request.header("x-plan")?.to_owned();
    let allowances = (plan == "free").then(|| [("requests".to_owned(), 2)].into_iter().collect());
    Some(QuotaDetail { key: plan, allowances })
}

/// Meters what a request cost once it has been answered (the upstream's cost is stood in for
/// by the `x-tokens` request header), for the `tokens` allowance of the plan quota.
pub async fn count_tokens(response: Response, request: &RequestHead, context: &mut Context, _options: &Value, _policy_name: &str) -> Response {
    let tokens = request.header("x-tokens").and_then(|t| t.parse().ok()).unwrap_or(0);
    QuotaInbound::set_meters(context, [("tokens", tokens)]);
    response
}

/// Counts the tokens the upstream reports it used (`x-tokens-used` on its response) against
/// the `tokens` counter of the complex rate limits on the route; the `requests` counter keeps
/// its default increment of 1.
pub async fn count_upstream_tokens(response: Response, _request: &RequestHead, context: &mut Context, _options: &Value, _policy_name: &str) -> Response {
    let tokens = response.headers().get("x-tokens-used").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
    ComplexRateLimitInbound::set_increments(context, [("tokens", tokens)]);
    response
}
