//! Custom handlers.

use specgate_runtime::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};

static AFTER_RESPONSE: AtomicUsize = AtomicUsize::new(0);

/// Returns a serializable value: sent as JSON.
pub async fn hello(request: Request, context: &mut Context) -> Json<Value> {
    let name = request.params.get("name").unwrap_or("world").to_owned();
    // Work that runs after the response is sent.
    context.wait_until(async {
        AFTER_RESPONSE.fetch_add(1, Ordering::SeqCst);
    });
    Json(json!({ "hello": name, "requestId": context.request_id, "hooked": context.custom.get("hooked") }))
}

/// How many responses the final hook has seen.
pub async fn stats(_request: Request, _context: &mut Context) -> Json<Value> {
    Json(json!({
        "finalHookCalls": crate::modules::runtime::final_calls(),
        "afterResponse": AFTER_RESPONSE.load(Ordering::SeqCst),
    }))
}
