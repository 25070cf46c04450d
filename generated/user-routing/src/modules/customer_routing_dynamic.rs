// Copied by specgate from the project's modules/customer_routing_dynamic.rs: edit that file, not this copy.
//! Use case 2b: each customer's backend from a config service, through a background loader:
//! cached for five minutes, refreshed in the background, one load in flight.

use specgate_runtime::prelude::*;
use std::sync::OnceLock;
use std::time::Duration;

#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CustomerConfig {
    customer_id: String,
    backend_url: String,
}

// Create the background loader once, at first use.
fn loader() -> &'static BackgroundLoader<Vec<CustomerConfig>> {
    static LOADER: OnceLock<BackgroundLoader<Vec<CustomerConfig>>> = OnceLock::new();
    LOADER.get_or_init(|| {
        BackgroundLoader::new(
            |_key: String| async move {
                let url = environment("CUSTOMER_CONFIG_API_URL").ok_or("CUSTOMER_CONFIG_API_URL is not set")?;
                let token = environment("CONFIG_API_TOKEN").unwrap_or_default();
                let response = specgate_runtime::reqwest::Client::new()
                    .get(url)
                    .bearer_auth(token)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if !response.status().is_success() {
                    return Err(format!("Failed to load customer config: {}", response.status()));
                }
                response.json::<Vec<CustomerConfig>>().await.map_err(|e| e.to_string())
            },
            Duration::from_secs(300), // Cache for 5 minutes
            Duration::from_secs(10),  // loader timeout
        )
    })
}

pub async fn default(request: Request, context: &mut Context, _options: &Value, _policy_name: &str) -> Flow {
    let Some(customer_id) = request.user.as_ref().and_then(|u| u.data_text("customerId")).map(|c| c.into_owned()) else {
        return Problem::new(specgate_runtime::http::StatusCode::UNAUTHORIZED).with_detail("Customer identification required").into();
    };

    // Load customer configurations (returns cached data immediately if available)
    let customers = match loader().get("customers").await {
        Ok(c) => c,
        Err(e) => {
            context.log.error(format!("customer configuration unavailable: {e}"));
            return Problem::new(specgate_runtime::http::StatusCode::SERVICE_UNAVAILABLE)
                .with_detail("Customer configuration unavailable")
                .into();
        }
    };
    let Some(customer) = customers.iter().find(|c| c.customer_id == customer_id) else {
        context.log.error(format!("Customer not found: {customer_id}"));
        return Problem::new(specgate_runtime::http::StatusCode::FORBIDDEN).with_detail("Customer not configured").into();
    };

    context.custom.insert("downstreamUrl".into(), json!(customer.backend_url));
    request.into()
}
