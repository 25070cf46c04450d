//! Custom code that fails: a panic must become a 500 problem for this request only.

use specgate_runtime::prelude::*;

pub async fn default(request: Request, _context: &mut Context, _options: &Value, _policy_name: &str) -> Flow {
    if request.header("x-no-panic").is_none() {
        panic!("this policy always panics");
    }
    request.into()
}

/// Short-circuits with 401: the handler and the outbound chain must not run.
pub async fn deny(_request: Request, _context: &mut Context, _options: &Value, _policy_name: &str) -> Flow {
    Problem::new(specgate_runtime::http::StatusCode::UNAUTHORIZED).with_detail("no entry").into()
}
