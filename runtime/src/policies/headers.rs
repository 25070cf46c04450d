//! set-headers-inbound / set-headers-outbound.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

use crate::policy::{FromOptions, Flow, Inbound, Outbound};
use crate::{Context, Request, RequestHead, Response};

/// One header of `headers: [{name, value, overwrite}]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderSpec {
    /// Header name.
    pub name: String,
    /// Header value (`$env(X)` resolved at start-up).
    pub value: String,
    /// Replace an existing value (default true); otherwise only set when absent.
    #[serde(default = "yes")]
    pub overwrite: bool,
}

fn yes() -> bool {
    true
}

/// Options of the set-headers policies.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetHeadersOptions {
    /// Headers to set.
    pub headers: Vec<HeaderSpec>,
}

#[derive(Debug, Clone)]
struct Prepared(Vec<(HeaderName, HeaderValue, bool)>);

impl Prepared {
    fn new(opts: SetHeadersOptions) -> Result<Self, String> {
        let mut out = Vec::with_capacity(opts.headers.len());
        for h in opts.headers {
            let (n, v) = crate::request::header_pair(&h.name, &h.value).map_err(|p| p.detail().unwrap_or("invalid header").to_owned())?;
            out.push((n, v, h.overwrite));
        }
        Ok(Prepared(out))
    }

    fn apply(&self, headers: &mut HeaderMap) {
        for (n, v, overwrite) in &self.0 {
            if *overwrite || !headers.contains_key(n) {
                headers.insert(n.clone(), v.clone());
            }
        }
    }
}

/// `SetHeadersInboundPolicy`: sets headers on the request.
#[derive(Debug, Clone)]
pub struct SetHeadersInbound(Prepared);

impl FromOptions for SetHeadersInbound {
    type Options = SetHeadersOptions;
    fn from_options(options: Self::Options, _name: &str) -> Result<Self, String> {
        Prepared::new(options).map(SetHeadersInbound)
    }
}

impl Inbound for SetHeadersInbound {
    async fn on_request(&self, mut req: Request, _cx: &mut Context) -> Flow {
        self.0.apply(req.headers_mut());
        Flow::Continue(req)
    }
}

/// `SetHeadersOutboundPolicy`: sets headers on the response.
#[derive(Debug, Clone)]
pub struct SetHeadersOutbound(Prepared);

impl FromOptions for SetHeadersOutbound {
    type Options = SetHeadersOptions;
    fn from_options(options: Self::Options, _name: &str) -> Result<Self, String> {
        Prepared::new(options).map(SetHeadersOutbound)
    }
}

impl Outbound for SetHeadersOutbound {
    async fn on_response(&self, mut resp: Response, _req: &RequestHead, _cx: &mut Context) -> Response {
        self.0.apply(resp.headers_mut());
        resp
    }
}
