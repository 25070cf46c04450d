//! mock-api-inbound: answers with an example response from the route's OpenAPI operation.

use axum::body::Body;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::StatusCode;
use serde::Deserialize;

use super::de;
use crate::policy::{Flow, FromOptions, Inbound};
use crate::{Context, Problem, Request, Response};

/// One example of an operation's responses, emitted by the generator as a constant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MockExample {
    /// The response status (`responses` key).
    pub status: u16,
    /// The media type (`content` key), sent as `Content-Type`.
    pub content_type: &'static str,
    /// The key under `examples`, or `""` for a single `example`.
    pub name: &'static str,
    /// The example serialized as it is sent (JSON text for JSON media types).
    pub body: &'static str,
}

fn default_prefix() -> String {
    "2".to_owned()
}

/// Options of mock-api-inbound.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MockApiOptions {
    /// Pick a random matching example instead of the first (default false).
    #[serde(default)]
    pub random: bool,
    /// Only responses whose status starts with this (default `"2"`; `X` matches any digit,
    /// so `"2XX"` works too).
    #[serde(default = "default_prefix", deserialize_with = "de::text")]
    pub response_prefix_filter: String,
    /// Only examples of this media type (parameters and case ignored). Optional.
    #[serde(default, deserialize_with = "de::opt_text")]
    pub content_type: Option<String>,
    /// Only the example with this name. Optional.
    #[serde(default, deserialize_with = "de::opt_text")]
    pub example_name: Option<String>,
}

/// A matching example, ready to send.
#[derive(Debug, Clone)]
struct Prepared {
    status: StatusCode,
    content_type: Option<HeaderValue>,
    body: &'static str,
}

/// `MockApiInboundPolicy`: short-circuits with an example response.
///
/// The generator builds it with `from_options` and then [`MockApiInbound::with_examples`];
/// the filters are applied there, once. With no matching example every request gets a 500
/// problem saying so.
#[derive(Debug, Clone)]
pub struct MockApiInbound {
    options: MockApiOptions,
    matches: Vec<Prepared>,
}

impl FromOptions for MockApiInbound {
    type Options = MockApiOptions;
    fn from_options(options: Self::Options, _name: &str) -> Result<Self, String> {
        Ok(MockApiInbound { options, matches: Vec::new() })
    }
}

/// The media type without parameters, lower-cased.
fn essence(media_type: &str) -> String {
    media_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

fn status_matches(prefix: &str, status: u16) -> bool {
    let code = status.to_string();
    prefix.len() <= code.len()
        && prefix.bytes().zip(code.bytes()).all(|(p, c)| p == c || p.eq_ignore_ascii_case(&b'x'))
}

impl MockApiInbound {
    /// Sets the operation's examples and selects those that pass the filters.
    pub fn with_examples(mut self, examples: &'static [MockExample]) -> Self {
        let prefix = self.options.response_prefix_filter.trim();
        let content_type = self.options.content_type.as_deref().map(essence);
        self.matches = examples
            .iter()
            .filter(|e| status_matches(prefix, e.status))
            .filter(|e| content_type.as_ref().is_none_or(|ct| essence(e.content_type) == *ct))
            .filter(|e| self.options.example_name.as_deref().is_none_or(|n| e.name == n))
            .filter_map(|e| {
                Some(Prepared {
                    // A status hyper cannot send (outside 100-999) is no usable example.
                    status: StatusCode::from_u16(e.status).ok()?,
                    content_type: Some(e.content_type)
                        .filter(|ct| !ct.is_empty())
                        .and_then(|ct| HeaderValue::from_str(ct).ok()),
                    body: e.body,
                })
            })
            .collect();
        self
    }

    fn pick(&self) -> Option<&Prepared> {
        if self.options.random && self.matches.len() > 1 {
            self.matches.get(fastrand::usize(..self.matches.len()))
        } else {
            self.matches.first()
        }
    }
}

impl Inbound for MockApiInbound {
    async fn on_request(&self, _req: Request, _cx: &mut Context) -> Flow {
        let Some(example) = self.pick() else {
            return Flow::Problem(Problem::internal(
                "no example response of this operation matches the mock policy's filters",
            ));
        };
        // A `&'static str` body is sent without copying.
        let mut resp = Response::new(Body::from(example.body));
        *resp.status_mut() = example.status;
        if let Some(ct) = &example.content_type {
            resp.headers_mut().insert(CONTENT_TYPE, ct.clone());
        }
        Flow::Respond(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policies::test_context;
    use crate::policies::test_util::{body_text, build, must, problem_status, request};
    use serde_json::json;

    static EXAMPLES: &[MockExample] = &[
        MockExample { status: 400, content_type: "application/problem+json", name: "", body: "{\"bad\":1}" },
        MockExample { status: 200, content_type: "application/json", name: "first", body: "{\"n\":1}" },
        MockExample { status: 200, content_type: "application/json", name: "second", body: "{\"n\":2}" },
        MockExample { status: 201, content_type: "text/plain; charset=utf-8", name: "", body: "created" },
        MockExample { status: 404, content_type: "application/json", name: "missing", body: "{}" },
    ];

    async fn answer(p: &MockApiInbound) -> Result<(u16, Option<String>, String), Option<u16>> {
        let mut cx = test_context();
        match p.on_request(request("GET", "/a", ""), &mut cx).await {
            Flow::Respond(r) => {
                let ct = r.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
                Ok((r.status().as_u16(), ct, body_text(r.into_body()).await))
            }
            other => Err(problem_status(&other)),
        }
    }

    fn policy(options: serde_json::Value) -> MockApiInbound {
        must(build::<MockApiInbound>(options)).with_examples(EXAMPLES)
    }

    #[tokio::test]
    async fn first_2xx_example_by_default() {
        let got = answer(&policy(json!({}))).await;
        assert_eq!(got, Ok((200, Some("application/json".to_owned()), "{\"n\":1}".to_owned())));
    }

    #[tokio::test]
    async fn filters_by_status_prefix_media_type_and_name() {
        let got = answer(&policy(json!({"responsePrefixFilter": "4"}))).await;
        assert_eq!(got, Ok((400, Some("application/problem+json".to_owned()), "{\"bad\":1}".to_owned())));
        let got = answer(&policy(json!({"responsePrefixFilter": "4XX", "contentType": "application/json"}))).await;
        assert_eq!(got.map(|g| g.0), Ok(404));
        let got = answer(&policy(json!({"responsePrefixFilter": 201}))).await;
        assert_eq!(got.map(|g| g.2), Ok("created".to_owned()));
        let got = answer(&policy(json!({"contentType": "TEXT/PLAIN"}))).await;
        assert_eq!(got, Ok((201, Some("text/plain; charset=utf-8".to_owned()), "created".to_owned())));
        let got = answer(&policy(json!({"exampleName": "second"}))).await;
        assert_eq!(got.map(|g| g.2), Ok("{\"n\":2}".to_owned()));
    }

    #[tokio::test]
    async fn no_match_is_a_500_problem() {
        assert_eq!(answer(&policy(json!({"exampleName": "nope"}))).await, Err(Some(500)));
        assert_eq!(answer(&policy(json!({"responsePrefixFilter": "5"}))).await, Err(Some(500)));
        assert_eq!(answer(&policy(json!({"contentType": "application/xml"}))).await, Err(Some(500)));
        // Built without examples (only from options).
        let bare: MockApiInbound = must(build(json!({})));
        assert_eq!(answer(&bare).await, Err(Some(500)));
    }

    #[tokio::test]
    async fn random_picks_among_the_matches_only() {
        let p = policy(json!({"random": true, "responsePrefixFilter": "200"}));
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let got = answer(&p).await;
            assert!(matches!(&got, Ok((200, _, _))), "{got:?}");
            if let Ok((_, _, body)) = got {
                seen.insert(body);
            }
        }
        assert_eq!(seen.len(), 2, "both 200 examples are picked: {seen:?}");
    }

    #[test]
    fn unknown_options_are_refused() {
        assert!(build::<MockApiInbound>(json!({"randomize": true})).is_err());
    }
}
