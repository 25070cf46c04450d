//! basic-auth-inbound: HTTP Basic authentication (RFC 7617) against accounts listed in the
//! policy options.

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use crate::context::User;
use crate::policy::{Flow, FromOptions, Inbound};
use crate::{Context, Problem, Request};

/// One account of `accounts: [{username, password, data}]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthAccount {
    /// The user name; becomes `request.user.sub`.
    #[serde(deserialize_with = "super::de::text")]
    pub username: String,
    /// The password (usually `$env(X)`, resolved at start-up).
    #[serde(deserialize_with = "super::de::text")]
    pub password: String,
    /// Metadata that becomes `request.user.data` (an empty object when absent).
    #[serde(default)]
    pub data: Option<Map<String, Value>>,
}

/// Options of `BasicAuthInboundPolicy`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BasicAuthOptions {
    /// The accounts that may sign in.
    pub accounts: Vec<BasicAuthAccount>,
    /// Let requests without valid credentials through without a user (default false), so
    /// that a later policy can try another way of authenticating.
    #[serde(default)]
    pub allow_unauthenticated_requests: bool,
}

/// An account as compared per request. Names and passwords are kept as SHA-256 digests so
/// every comparison covers 32 bytes whatever the lengths involved: comparing raw bytes would
/// leak the configured lengths through timing.
#[derive(Debug, Clone)]
struct Account {
    username: String,
    username_digest: [u8; 32],
    password_digest: [u8; 32],
    data: Value,
}

/// `BasicAuthInboundPolicy`: accepts `Authorization: Basic base64(user:password)` for one of
/// the configured accounts and sets `request.user`; anything else is a 401 with a
/// `WWW-Authenticate: Basic` challenge (unless unauthenticated requests are allowed).
#[derive(Debug, Clone)]
pub struct BasicAuthInbound {
    accounts: Vec<Account>,
    allow_unauthenticated: bool,
}

impl FromOptions for BasicAuthInbound {
    type Options = BasicAuthOptions;
    fn from_options(options: Self::Options, _name: &str) -> Result<Self, String> {
        if options.accounts.is_empty() {
            return Err("`accounts` must list at least one account".to_owned());
        }
        let mut accounts = Vec::with_capacity(options.accounts.len());
        for (i, a) in options.accounts.into_iter().enumerate() {
            if a.username.is_empty() {
                return Err(format!("account {i} has an empty username"));
            }
            // The client's credentials split at the first colon, so such a name could never match.
            if a.username.contains(':') {
                return Err(format!("the username of account {i} contains a colon"));
            }
            // An empty password usually means a variable resolved to nothing; refusing it
            // keeps a misconfiguration from opening the route to anyone knowing a username.
            if a.password.is_empty() {
                return Err(format!("the password of account `{}` is empty", a.username));
            }
            accounts.push(Account {
                username_digest: digest(a.username.as_bytes()),
                password_digest: digest(a.password.as_bytes()),
                data: Value::Object(a.data.unwrap_or_default()),
                username: a.username,
            });
        }
        Ok(BasicAuthInbound { accounts, allow_unauthenticated: options.allow_unauthenticated_requests })
    }
}

impl Inbound for BasicAuthInbound {
    async fn on_request(&self, mut req: Request, _cx: &mut Context) -> Flow {
        let failure = match decoded_credentials(&req) {
            // RFC 7617: the user name ends at the first colon; the password may contain colons.
            Ok(pair) => match pair.iter().position(|b| *b == b':').and_then(|i| self.find(&pair[..i], &pair[i + 1..])) {
                Some(account) => {
                    req.user = Some(User { sub: account.username.clone(), data: account.data.clone() });
                    return Flow::Continue(req);
                }
                None => "the credentials are not valid",
            },
            Err(why) => why,
        };
        if self.allow_unauthenticated {
            return Flow::Continue(req);
        }
        Flow::Problem(unauthorized(failure))
    }
}

impl BasicAuthInbound {
    /// The account these credentials belong to. Every account is compared, with no early
    /// exit, so the time taken does not tell which usernames exist.
    fn find(&self, username: &[u8], password: &[u8]) -> Option<&Account> {
        let user = digest(username);
        let pass = digest(password);
        let mut found = subtle::Choice::from(0);
        let mut index = 0u64;
        for (i, a) in self.accounts.iter().enumerate() {
            let hit = a.username_digest.ct_eq(&user) & a.password_digest.ct_eq(&pass);
            // Keep the first match: later duplicates of a username must not change the answer.
            let take = hit & !found;
            index = u64::conditional_select(&index, &(i as u64), take);
            found |= hit;
        }
        if bool::from(found) { usize::try_from(index).ok().and_then(|i| self.accounts.get(i)) } else { None }
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Base64 as clients send it: padding is optional in practice.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The decoded `user:password` of the `Authorization: Basic` header, or why there is none.
fn decoded_credentials(req: &Request) -> Result<Vec<u8>, &'static str> {
    let Some(value) = req.headers().get(AUTHORIZATION) else {
        return Err("the request has no Authorization header");
    };
    let value = value.to_str().map_err(|_| "the Authorization header is not valid")?;
    let (scheme, token) = value.trim().split_once(' ').ok_or("the Authorization header is not Basic credentials")?;
    // The scheme is case-insensitive (RFC 9110 section 11.1).
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err("the Authorization header is not Basic credentials");
    }
    let decoded = LENIENT.decode(token.trim()).map_err(|_| "the Basic credentials are not valid base64")?;
    if !decoded.contains(&b':') {
        return Err("the Basic credentials have no colon between user name and password");
    }
    Ok(decoded)
}

fn unauthorized(detail: &'static str) -> Problem {
    Problem::new(StatusCode::UNAUTHORIZED)
        .with_detail(detail)
        .with_header(WWW_AUTHENTICATE, HeaderValue::from_static(r#"Basic realm="api", charset="UTF-8""#))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policies::test_context;
    use crate::policies::test_util::{build, continued, must, problem_status, request};
    use serde_json::json;

    fn policy(allow: bool) -> BasicAuthInbound {
        must(build(json!({
            "accounts": [
                {"username": "alice", "password": "s3cret:with:colons", "data": {"plan": "gold"}},
                {"username": "bob", "password": "hunter2"}
            ],
            "allowUnauthenticatedRequests": allow
        })))
    }

    fn with_auth(value: &str) -> Request {
        let mut r = request("GET", "/test", "");
        if let Ok(v) = HeaderValue::from_str(value) {
            r.headers_mut().insert(AUTHORIZATION, v);
        }
        r
    }

    fn basic(user_pass: &str) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(user_pass))
    }

    async fn run(p: &BasicAuthInbound, req: Request) -> Flow {
        let mut cx = test_context();
        p.on_request(req, &mut cx).await
    }

    #[tokio::test]
    async fn valid_credentials_set_the_user() {
        let p = policy(false);
        let req = must(continued(run(&p, with_auth(&basic("alice:s3cret:with:colons"))).await));
        let user = req.user.unwrap_or_default();
        assert_eq!(user.sub, "alice");
        assert_eq!(user.data, json!({"plan": "gold"}));

        // Scheme in another case, no padding: still accepted.
        let unpadded = base64::engine::general_purpose::STANDARD_NO_PAD.encode("bob:hunter2");
        let req = must(continued(run(&p, with_auth(&format!("basic {unpadded}"))).await));
        let user = req.user.unwrap_or_default();
        assert_eq!(user.sub, "bob");
        assert_eq!(user.data, json!({}));
    }

    #[tokio::test]
    async fn wrong_password_and_unknown_user_are_401() {
        let p = policy(false);
        for creds in ["alice:wrong", "bob:s3cret:with:colons", "carol:hunter2", "alice:", ":hunter2"] {
            let flow = run(&p, with_auth(&basic(creds))).await;
            assert_eq!(problem_status(&flow), Some(401), "{creds}");
        }
    }

    #[tokio::test]
    async fn malformed_or_missing_credentials_are_401() {
        let p = policy(false);
        let cases = [
            None,
            Some("Basic !!!not-base64!!!".to_owned()),
            Some(basic("alice-without-colon")),
            Some("Bearer abc.def.ghi".to_owned()),
            Some("Basic".to_owned()),
        ];
        for case in cases {
            let req = match &case {
                Some(v) => with_auth(v),
                None => request("GET", "/test", ""),
            };
            let flow = run(&p, req).await;
            assert_eq!(problem_status(&flow), Some(401), "{case:?}");
        }
    }

    #[tokio::test]
    async fn failures_carry_the_basic_challenge() {
        let p = policy(false);
        let Flow::Problem(problem) = run(&p, with_auth(&basic("alice:wrong"))).await else {
            panic!("expected a problem");
        };
        let cx = test_context();
        let resp = cx.problem(problem);
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(resp.headers()[WWW_AUTHENTICATE], r#"Basic realm="api", charset="UTF-8""#);
        assert_eq!(resp.headers()[http::header::CONTENT_TYPE], crate::problem::CONTENT_TYPE);
    }

    #[tokio::test]
    async fn unauthenticated_requests_may_continue_without_a_user() {
        let p = policy(true);
        let req = must(continued(run(&p, request("GET", "/test", "")).await));
        assert!(req.user.is_none());
        let req = must(continued(run(&p, with_auth(&basic("alice:wrong"))).await));
        assert!(req.user.is_none());
        let req = must(continued(run(&p, with_auth(&basic("bob:hunter2"))).await));
        assert_eq!(req.user.map(|u| u.sub).as_deref(), Some("bob"));
    }

    #[test]
    fn options_are_checked_at_start_up() {
        assert!(build::<BasicAuthInbound>(json!({"accounts": []})).is_err());
        assert!(build::<BasicAuthInbound>(json!({"accounts": [{"username": "a", "password": ""}]})).is_err());
        assert!(build::<BasicAuthInbound>(json!({"accounts": [{"username": "a:b", "password": "x"}]})).is_err());
        assert!(build::<BasicAuthInbound>(json!({"accounts": [{"username": "a", "password": "x", "extra": 1}]})).is_err());
        assert!(build::<BasicAuthInbound>(json!({"accounts": [{"username": "a", "password": "x"}], "realm": "x"})).is_err());
        assert!(build::<BasicAuthInbound>(json!({})).is_err());
        // A password from `$env(X)` that looked like a number arrives as one.
        let p: BasicAuthInbound = must(build(json!({"accounts": [{"username": "a", "password": 12345}]})));
        assert!(p.find(b"a", b"12345").is_some());
    }
}
