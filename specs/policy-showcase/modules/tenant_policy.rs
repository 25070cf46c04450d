//! A custom inbound policy with typed options: the `{tenant}` path parameter must be one of
//! `allowedTenants`; the tenant's slug goes to `context.custom` for the rewrite and its plan
//! to a header for the upstream.

use specgate_runtime::prelude::*;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Options {
    pub allowed_tenants: Vec<String>,
    pub header: String,
}

pub async fn default(mut request: Request, context: &mut Context, options: &Options, policy_name: &str) -> Result<Flow, Problem> {
    let tenant = request.params.get("tenant").unwrap_or("").to_owned();
    if !options.allowed_tenants.contains(&tenant) {
        context.log.info(format!("{policy_name}: tenant {tenant} refused"));
        return Ok(Problem::new(specgate_runtime::http::StatusCode::FORBIDDEN).with_detail(format!("unknown tenant {tenant}")).into());
    }
    context.custom.insert("tenantSlug".into(), json!(format!("t-{tenant}")));
    request.set_header(&options.header, "gold")?;
    Ok(request.into())
}

/// Appends `policy` to `x-trace`, after what the request hook wrote there: proves the order.
pub async fn trace(mut request: Request, _context: &mut Context, _options: &Value, _policy_name: &str) -> Result<Flow, Problem> {
    let before = request.header("x-trace").unwrap_or("").to_owned();
    request.set_header("x-trace", &format!("{before},policy"))?;
    Ok(request.into())
}
