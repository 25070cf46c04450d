// Copied by specgate from the project's modules/hybrid_routing.rs: edit that file, not this copy.
//! Use case 3: dedicated backends for premium customers, the shared multi-tenant backend for
//! everyone else.

use specgate_runtime::prelude::*;
use std::sync::OnceLock;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DedicatedCustomer {
    customer_id: String,
    backend_url: String,
}

fn dedicated_customers() -> &'static [DedicatedCustomer] {
    static DEDICATED: OnceLock<Vec<DedicatedCustomer>> = OnceLock::new();
    DEDICATED.get_or_init(|| {
        serde_json::from_str(include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/config/dedicated-customers.json"))).unwrap_or_default()
    })
}

pub async fn default(request: Request, context: &mut Context, _options: &Value, _policy_name: &str) -> Flow {
    let customer_id = request.user.as_ref().and_then(|u| u.data_text("customerId")).map(|c| c.into_owned());

    // Check if this customer has a dedicated backend
    let dedicated = dedicated_customers().iter().find(|c| Some(&c.customer_id) == customer_id.as_ref());

    if let Some(config) = dedicated {
        // Route to dedicated backend
        context.custom.insert("downstreamUrl".into(), json!(config.backend_url));
        context.log.info(format!("Routing to dedicated backend for {}", config.customer_id));
    } else {
        // Route to shared multi-tenant backend
        context.custom.insert("downstreamUrl".into(), json!(environment("MULTI_TENANT_BACKEND_URL")));
        context.log.info(format!("Routing to shared backend for {}", customer_id.as_deref().unwrap_or("anonymous")));
    }
    request.into()
}
