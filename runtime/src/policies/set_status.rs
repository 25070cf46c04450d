//! set-status-outbound.

use http::StatusCode;
use serde::Deserialize;

use super::de;
use crate::policy::{FromOptions, Outbound};
use crate::{Context, RequestHead, Response};

/// Options of set-status-outbound.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SetStatusOptions {
    /// The new status code, 100 to 599. Required.
    pub status: u16,
    /// Accepted for compatibility and ignored: hyper sends the canonical reason phrase on
    /// HTTP/1.1 and HTTP/2 has none.
    #[serde(default, deserialize_with = "de::opt_text")]
    pub status_text: Option<String>,
}

/// `SetStatusOutboundPolicy`: sets the response status; headers and body are kept.
#[derive(Debug, Clone)]
pub struct SetStatusOutbound(StatusCode);

impl FromOptions for SetStatusOutbound {
    type Options = SetStatusOptions;
    fn from_options(options: Self::Options, _name: &str) -> Result<Self, String> {
        if !(100..=599).contains(&options.status) {
            return Err(format!("status {} is not between 100 and 599", options.status));
        }
        StatusCode::from_u16(options.status)
            .map(SetStatusOutbound)
            .map_err(|_| format!("status {} is not a valid status code", options.status))
    }
}

impl Outbound for SetStatusOutbound {
    async fn on_response(&self, mut resp: Response, _req: &RequestHead, _cx: &mut Context) -> Response {
        *resp.status_mut() = self.0;
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policies::test_context;
    use crate::policies::test_util::{body_text, build, must, request, response};
    use serde_json::json;

    #[tokio::test]
    async fn sets_the_status_and_keeps_the_rest() {
        let p: SetStatusOutbound = must(build(json!({"status": 418, "statusText": "I'm a teapot"})));
        let mut cx = test_context();
        let head = request("GET", "/a", "").head();
        let resp = p.on_response(response(200, &[("x-a", "1")], "body"), &head, &mut cx).await;
        assert_eq!(resp.status(), StatusCode::IM_A_TEAPOT);
        assert_eq!(resp.headers()["x-a"], "1");
        assert_eq!(body_text(resp.into_body()).await, "body");
    }

    #[test]
    fn status_must_be_in_range() {
        assert!(build::<SetStatusOutbound>(json!({"status": 100})).is_ok());
        assert!(build::<SetStatusOutbound>(json!({"status": 599})).is_ok());
        assert!(build::<SetStatusOutbound>(json!({"status": 99})).is_err());
        assert!(build::<SetStatusOutbound>(json!({"status": 600})).is_err());
        assert!(build::<SetStatusOutbound>(json!({"status": "200"})).is_err());
        assert!(build::<SetStatusOutbound>(json!({})).is_err());
    }
}
