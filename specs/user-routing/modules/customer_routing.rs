//! Use case 2a: each customer's backend from config/customers.json (compiled into the gateway).

use specgate_runtime::prelude::*;
use std::sync::OnceLock;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CustomerConfig {
    customer_id: String,
    #[allow(dead_code)]
    environment_name: String,
    backend_url: String,
}

fn customers() -> &'static [CustomerConfig] {
    static CUSTOMERS: OnceLock<Vec<CustomerConfig>> = OnceLock::new();
    CUSTOMERS.get_or_init(|| {
        serde_json::from_str(include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/config/customers.json"))).unwrap_or_default()
    })
}

pub async fn default(request: Request, context: &mut Context, _options: &Value, _policy_name: &str) -> Flow {
    // Get customer ID from API key metadata or JWT claims
    let Some(customer_id) = request.user.as_ref().and_then(|u| u.data_text("customerId")).map(|c| c.into_owned()) else {
        context.log.warn("No customer ID found in user data");
        return Problem::new(specgate_runtime::http::StatusCode::UNAUTHORIZED)
            .with_detail("Customer identification required")
            .into();
    };

    // Find the customer's routing configuration
    let Some(customer) = customers().iter().find(|c| c.customer_id == customer_id) else {
        context.log.error(format!("Customer configuration not found: {customer_id}"));
        return Problem::new(specgate_runtime::http::StatusCode::FORBIDDEN).with_detail("Customer not configured").into();
    };

    // Set the downstream URL for use by the handler
    context.custom.insert("downstreamUrl".into(), json!(customer.backend_url));
    context.log.info(format!("Routing request to customer backend {customer_id} at {}", customer.backend_url));
    request.into()
}
