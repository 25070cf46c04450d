//! require-origin-inbound.

use http::StatusCode;
use serde::Deserialize;

use super::de;
use crate::policy::{Flow, FromOptions, Inbound};
use crate::{Context, Problem, Request};

/// `origins`: a comma-separated string (as Zuplo documents it) or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Origins {
    /// `"https://a.example, https://b.example"`.
    Csv(String),
    /// `["https://a.example", "https://b.example"]`.
    List(Vec<String>),
}

/// Options of require-origin-inbound.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequireOriginOptions {
    /// The allowed origins. Required.
    pub origins: Origins,
    /// The problem detail sent with the 403 (optional).
    #[serde(default, deserialize_with = "de::opt_text")]
    pub failure_detail: Option<String>,
}

/// `RequireOriginInboundPolicy`: only requests whose `Origin` header is one of `origins`
/// continue; the others (header missing included) get a 403 problem.
///
/// Origins compare after trimming, without a trailing `/` and ignoring ASCII case (an origin
/// is only scheme, host and port, all case-insensitive).
#[derive(Debug, Clone)]
pub struct RequireOriginInbound {
    allowed: Vec<String>,
    detail: String,
}

fn normalize(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

impl FromOptions for RequireOriginInbound {
    type Options = RequireOriginOptions;
    fn from_options(options: Self::Options, _name: &str) -> Result<Self, String> {
        let raw: Vec<String> = match options.origins {
            Origins::Csv(s) => s.split(',').map(str::to_owned).collect(),
            Origins::List(v) => v,
        };
        let allowed: Vec<String> = raw.iter().map(|o| normalize(o)).filter(|o| !o.is_empty()).collect();
        if allowed.is_empty() {
            return Err("origins lists no origin".to_owned());
        }
        let detail = options.failure_detail.unwrap_or_else(|| "the request's origin is not allowed".to_owned());
        Ok(RequireOriginInbound { allowed, detail })
    }
}

impl Inbound for RequireOriginInbound {
    async fn on_request(&self, req: Request, _cx: &mut Context) -> Flow {
        let ok = req.header("origin").map(normalize).is_some_and(|o| !o.is_empty() && self.allowed.contains(&o));
        if ok {
            Flow::Continue(req)
        } else {
            Flow::Problem(Problem::new(StatusCode::FORBIDDEN).with_detail(self.detail.clone()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policies::test_context;
    use crate::policies::test_util::{build, must, request};
    use serde_json::json;

    async fn check(p: &RequireOriginInbound, origin: Option<&str>) -> Result<(), (u16, String)> {
        let mut req = request("GET", "/a", "");
        if let Some(o) = origin {
            req.headers_mut().insert("origin", http::HeaderValue::from_str(o).unwrap_or(http::HeaderValue::from_static("x")));
        }
        let mut cx = test_context();
        match p.on_request(req, &mut cx).await {
            Flow::Continue(_) => Ok(()),
            Flow::Problem(p) => Err((p.status().as_u16(), p.detail().unwrap_or("").to_owned())),
            Flow::Respond(r) => Err((r.status().as_u16(), String::new())),
        }
    }

    #[tokio::test]
    async fn allows_listed_origins_from_a_comma_separated_string() {
        let p: RequireOriginInbound = must(build(json!({
            "origins": "https://app.example.com, http://localhost:3000/ ,",
            "failureDetail": "go away"
        })));
        assert_eq!(check(&p, Some("https://app.example.com")).await, Ok(()));
        assert_eq!(check(&p, Some("HTTPS://App.Example.com/")).await, Ok(()));
        assert_eq!(check(&p, Some("http://localhost:3000")).await, Ok(()));
        assert_eq!(check(&p, Some("http://localhost:3001")).await, Err((403, "go away".to_owned())));
        assert_eq!(check(&p, Some("https://app.example.com.evil.com")).await, Err((403, "go away".to_owned())));
        assert_eq!(check(&p, Some("http://app.example.com")).await, Err((403, "go away".to_owned())));
        assert_eq!(check(&p, None).await, Err((403, "go away".to_owned())));
        assert_eq!(check(&p, Some("null")).await, Err((403, "go away".to_owned())));
    }

    #[tokio::test]
    async fn accepts_a_list_and_has_a_default_detail() {
        let p: RequireOriginInbound = must(build(json!({"origins": ["https://a.example"]})));
        assert_eq!(check(&p, Some("https://a.example")).await, Ok(()));
        let err = check(&p, Some("https://b.example")).await;
        assert!(matches!(err, Err((403, ref d)) if !d.is_empty()), "{err:?}");
    }

    #[test]
    fn origins_are_required() {
        assert!(build::<RequireOriginInbound>(json!({})).is_err());
        assert!(build::<RequireOriginInbound>(json!({"origins": " , "})).is_err());
        assert!(build::<RequireOriginInbound>(json!({"origins": []})).is_err());
    }
}
