use specgate_runtime::prelude::*;
pub async fn other(request: Request, _c: &mut Context, _o: &Value, _n: &str) -> Flow { request.into() }
