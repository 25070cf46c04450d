//! set-query-params-inbound, remove-query-params-inbound, query-param-to-header-inbound.

use http::header::{HeaderName, HeaderValue};
use serde::Deserialize;

use super::de;
use crate::policy::{Flow, FromOptions, Inbound};
use crate::{Context, Problem, Request};

fn yes() -> bool {
    true
}

/// One parameter of `params: [{name, value, overwrite}]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct QueryParamSpec {
    /// Parameter name. Required.
    #[serde(deserialize_with = "de::text")]
    pub name: String,
    /// Parameter value (plain text; it is encoded when the URL is rebuilt). Required.
    #[serde(deserialize_with = "de::text")]
    pub value: String,
    /// Replace an existing parameter of that name (default true); otherwise keep it.
    #[serde(default = "yes")]
    pub overwrite: bool,
}

/// Options of set-query-params-inbound.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SetQueryParamsOptions {
    /// Parameters to set. Required.
    pub params: Vec<QueryParamSpec>,
}

/// `SetQueryParamsInboundPolicy`: adds or replaces query parameters on the request URL.
///
/// Overwriting replaces the first occurrence in place (so parameter order is kept) and drops
/// repeated occurrences, leaving exactly one value, as `URLSearchParams.set` does.
#[derive(Debug, Clone)]
pub struct SetQueryParamsInbound(Vec<QueryParamSpec>);

impl FromOptions for SetQueryParamsInbound {
    type Options = SetQueryParamsOptions;
    fn from_options(options: Self::Options, _name: &str) -> Result<Self, String> {
        if let Some(p) = options.params.iter().find(|p| p.name.is_empty()) {
            return Err(format!("params: a parameter has an empty name (value `{}`)", p.value));
        }
        Ok(SetQueryParamsInbound(options.params))
    }
}

impl Inbound for SetQueryParamsInbound {
    async fn on_request(&self, mut req: Request, _cx: &mut Context) -> Flow {
        let mut pairs = req.query_pairs();
        for spec in &self.0 {
            match pairs.iter().position(|(k, _)| *k == spec.name) {
                Some(_) if !spec.overwrite => {}
                Some(first) => {
                    let mut i = 0;
                    pairs.retain(|(k, _)| {
                        let keep = i <= first || *k != spec.name;
                        i += 1;
                        keep
                    });
                    if let Some(pair) = pairs.get_mut(first) {
                        pair.1.clone_from(&spec.value);
                    }
                }
                None => pairs.push((spec.name.clone(), spec.value.clone())),
            }
        }
        match req.set_query_pairs(&pairs) {
            Ok(()) => Flow::Continue(req),
            Err(p) => Flow::Problem(p),
        }
    }
}

/// Options of remove-query-params-inbound.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RemoveQueryParamsOptions {
    /// Names of the parameters to remove (every occurrence). Required.
    #[serde(deserialize_with = "de::texts")]
    pub params: Vec<String>,
}

/// `RemoveQueryParamsInboundPolicy`: removes query parameters from the request URL.
#[derive(Debug, Clone)]
pub struct RemoveQueryParamsInbound(Vec<String>);

impl FromOptions for RemoveQueryParamsInbound {
    type Options = RemoveQueryParamsOptions;
    fn from_options(options: Self::Options, _name: &str) -> Result<Self, String> {
        Ok(RemoveQueryParamsInbound(options.params))
    }
}

impl Inbound for RemoveQueryParamsInbound {
    async fn on_request(&self, mut req: Request, _cx: &mut Context) -> Flow {
        let mut pairs = req.query_pairs();
        let before = pairs.len();
        pairs.retain(|(k, _)| !self.0.contains(k));
        // Untouched URLs keep their original encoding byte for byte.
        if pairs.len() == before {
            return Flow::Continue(req);
        }
        match req.set_query_pairs(&pairs) {
            Ok(()) => Flow::Continue(req),
            Err(p) => Flow::Problem(p),
        }
    }
}

/// Options of query-param-to-header-inbound.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct QueryParamToHeaderOptions {
    /// The query parameter to read. Required.
    #[serde(deserialize_with = "de::text")]
    pub query_param: String,
    /// The header to set. Required.
    pub header_name: String,
    /// The header value; `{value}` is replaced by the parameter's value. Required.
    #[serde(deserialize_with = "de::text")]
    pub header_value: String,
    /// Remove the parameter from the URL afterwards (default true).
    #[serde(default = "yes")]
    pub remove_from_url: bool,
}

/// `QueryParamToHeaderInboundPolicy`: copies a query parameter into a header (for example an
/// API key passed as `?key=` into `Authorization: Bearer ...`). Requests without the
/// parameter pass unchanged.
#[derive(Debug, Clone)]
pub struct QueryParamToHeaderInbound {
    param: String,
    header: HeaderName,
    /// The template split at each `{value}`: the value goes between consecutive pieces.
    pieces: Vec<String>,
    remove_from_url: bool,
}

impl FromOptions for QueryParamToHeaderInbound {
    type Options = QueryParamToHeaderOptions;
    fn from_options(o: Self::Options, _name: &str) -> Result<Self, String> {
        if o.query_param.is_empty() {
            return Err("queryParam must not be empty".to_owned());
        }
        let header = HeaderName::from_bytes(o.header_name.trim().as_bytes())
            .map_err(|_| format!("headerName: `{}` is not a valid header name", o.header_name))?;
        // The literal parts must be valid on their own so that only the request's value can
        // make a header invalid.
        if HeaderValue::from_str(&o.header_value.replace("{value}", "")).is_err() {
            return Err(format!("headerValue: `{}` is not a valid header value", o.header_value));
        }
        let pieces = o.header_value.split("{value}").map(str::to_owned).collect();
        Ok(QueryParamToHeaderInbound { param: o.query_param, header, pieces, remove_from_url: o.remove_from_url })
    }
}

impl Inbound for QueryParamToHeaderInbound {
    async fn on_request(&self, mut req: Request, _cx: &mut Context) -> Flow {
        let Some(value) = req.query(&self.param).map(|v| v.into_owned()) else {
            return Flow::Continue(req);
        };
        let mut text = String::with_capacity(self.pieces.iter().map(String::len).sum::<usize>() + value.len());
        for (i, piece) in self.pieces.iter().enumerate() {
            if i > 0 {
                text.push_str(&value);
            }
            text.push_str(piece);
        }
        // The value is client-controlled and already percent-decoded: a `%0D%0A` would try to
        // start a new header line. `HeaderValue` refuses control characters, so that is a 400.
        // Bytes above ASCII (UTF-8 text) are legal header octets and pass as they are.
        let Ok(header_value) = HeaderValue::from_bytes(text.as_bytes()) else {
            return Flow::Problem(Problem::bad_request(format!(
                "the query parameter `{}` is not usable as a header value",
                self.param
            )));
        };
        req.headers_mut().insert(self.header.clone(), header_value);
        if self.remove_from_url {
            let mut pairs = req.query_pairs();
            pairs.retain(|(k, _)| *k != self.param);
            if let Err(p) = req.set_query_pairs(&pairs) {
                return Flow::Problem(p);
            }
        }
        Flow::Continue(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policies::test_context;
    use crate::policies::test_util::{build, continued, must, problem_status, request};
    use serde_json::json;

    async fn run(p: &impl Inbound, uri: &str) -> Flow {
        let mut cx = test_context();
        p.on_request(request("GET", uri, ""), &mut cx).await
    }

    #[tokio::test]
    async fn sets_adds_and_keeps_query_params() {
        let p: SetQueryParamsInbound = must(build(json!({"params": [
            {"name": "limit", "value": 50},
            {"name": "sort", "value": "name asc", "overwrite": false},
            {"name": "api-key", "value": "k&v=1"},
        ]})));
        let req = must(continued(run(&p, "/items?limit=10&x=1&limit=20&sort=date").await));
        assert_eq!(req.uri().to_string(), "/items?limit=50&x=1&sort=date&api-key=k%26v%3D1");
        assert_eq!(req.query("api-key").as_deref(), Some("k&v=1"));

        // overwrite=false still adds a missing parameter.
        let req = must(continued(run(&p, "/items").await));
        assert_eq!(req.query("sort").as_deref(), Some("name asc"));
        assert_eq!(req.query("limit").as_deref(), Some("50"));
    }

    #[test]
    fn set_query_params_requires_params() {
        assert!(build::<SetQueryParamsInbound>(json!({})).is_err());
        assert!(build::<SetQueryParamsInbound>(json!({"params": [{"name": "a"}]})).is_err(), "value is required");
        assert!(build::<SetQueryParamsInbound>(json!({"params": [{"name": "", "value": "v"}]})).is_err());
    }

    #[tokio::test]
    async fn removes_query_params() {
        let p: RemoveQueryParamsInbound = must(build(json!({"params": ["secret", "debug"]})));
        let req = must(continued(run(&p, "/a?secret=1&keep=2&secret=3&debug").await));
        assert_eq!(req.uri().to_string(), "/a?keep=2");
        let req = must(continued(run(&p, "/a?secret=1").await));
        assert_eq!(req.uri().to_string(), "/a");
        // Nothing to remove: the URL is left exactly as sent.
        let req = must(continued(run(&p, "/a?q=a+b%2Fc").await));
        assert_eq!(req.uri().to_string(), "/a?q=a+b%2Fc");
    }

    #[tokio::test]
    async fn moves_a_query_param_into_a_header() {
        let p: QueryParamToHeaderInbound = must(build(json!({
            "queryParam": "apiKey", "headerName": "Authorization", "headerValue": "Bearer {value}"
        })));
        let req = must(continued(run(&p, "/a?x=1&apiKey=abc%20123&y=2").await));
        assert_eq!(req.header("authorization"), Some("Bearer abc 123"));
        assert_eq!(req.uri().to_string(), "/a?x=1&y=2");

        // Absent: unchanged.
        let req = must(continued(run(&p, "/a?x=1").await));
        assert!(req.headers().get("authorization").is_none());
        assert_eq!(req.uri().to_string(), "/a?x=1");
    }

    #[tokio::test]
    async fn keeps_the_param_when_asked_and_repeats_the_value() {
        let p: QueryParamToHeaderInbound = must(build(json!({
            "queryParam": "k", "headerName": "x-k", "headerValue": "{value}:{value}", "removeFromUrl": false
        })));
        let req = must(continued(run(&p, "/a?k=v").await));
        assert_eq!(req.header("x-k"), Some("v:v"));
        assert_eq!(req.uri().to_string(), "/a?k=v");
    }

    #[tokio::test]
    async fn refuses_header_injection() {
        let p: QueryParamToHeaderInbound = must(build(json!({
            "queryParam": "k", "headerName": "x-k", "headerValue": "Bearer {value}"
        })));
        for bad in ["/a?k=abc%0D%0AX-Admin:%20true", "/a?k=abc%0Ax", "/a?k=%00", "/a?k=%7F"] {
            assert_eq!(problem_status(&run(&p, bad).await), Some(400), "{bad}");
        }
        // UTF-8 text is not an injection: it goes through as raw octets.
        let req = must(continued(run(&p, "/a?k=caf%C3%A9").await));
        assert_eq!(req.headers().get("x-k").map(|v| v.as_bytes()), Some("Bearer café".as_bytes()));
    }

    #[test]
    fn query_param_to_header_options_are_checked() {
        assert!(build::<QueryParamToHeaderInbound>(json!({"queryParam": "k", "headerName": "x"})).is_err());
        assert!(build::<QueryParamToHeaderInbound>(json!({"queryParam": "k", "headerName": "bad name", "headerValue": "{value}"})).is_err());
        assert!(build::<QueryParamToHeaderInbound>(json!({"queryParam": "k", "headerName": "x", "headerValue": "a\nb{value}"})).is_err());
    }
}
