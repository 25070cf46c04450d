// Copied by specgate from the project's modules/route_by_tier.rs: edit that file, not this copy.
//! Routes each consumer to an inner gateway chosen from its API key metadata (the seed's
//! "route to backends based on user identity"): `tier: enterprise` goes to the dedicated inner
//! gateway, everyone else to the shared one.

use specgate_runtime::prelude::*;

pub async fn default(request: Request, context: &mut Context, _options: &Value, _policy_name: &str) -> Flow {
    let tier = request.user.as_ref().and_then(|u| u.data_text("tier")).map(|t| t.into_owned());
    let inner = match tier.as_deref() {
        Some("enterprise") => environment("DEDICATED_INNER_URL"),
        _ => environment("INNER_URL"),
    };
    let Some(inner) = inner else {
        context.log.error("no inner gateway configured for this consumer");
        return Problem::new(specgate_runtime::http::StatusCode::BAD_GATEWAY).with_detail("no inner gateway configured").into();
    };
    context.custom.insert("innerUrl".into(), json!(inner));
    request.into()
}
