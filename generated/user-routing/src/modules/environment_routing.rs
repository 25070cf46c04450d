// Copied by specgate from the project's modules/environment_routing.rs: edit that file, not this copy.
//! Use case 1: Stripe-style keys. The consumer's `environment` metadata picks the sandbox or
//! the production backend.

use specgate_runtime::prelude::*;

pub async fn default(request: Request, context: &mut Context, _options: &Value, _policy_name: &str) -> Result<Flow, String> {
    // Get the environment from API key metadata or JWT claims
    let user_environment = request.user.as_ref().and_then(|u| u.data_text("environment")).map(|e| e.into_owned());

    match user_environment.as_deref() {
        Some("sandbox") => {
            context.custom.insert("downstreamUrl".into(), json!(environment("SANDBOX_BACKEND_URL")));
            context.log.info("Routing to sandbox environment");
        }
        Some("production") => {
            context.custom.insert("downstreamUrl".into(), json!(environment("PRODUCTION_BACKEND_URL")));
            context.log.info("Routing to production environment");
        }
        _ => return Err("Unknown environment in user data".to_owned()),
    }
    Ok(Flow::Continue(request))
}
