//! Request ids: accepted from the client when well-formed, minted otherwise, echoed back.

use http::HeaderMap;

/// The header that carries the request id in both directions.
pub const HEADER: &str = "x-request-id";

/// The longest client-supplied id accepted; longer ones are replaced (they end up in logs).
const MAX_LEN: usize = 200;

/// Returns the client's id when it is safe to log and forward, or a fresh UUID v4.
pub fn accept_or_mint(headers: &HeaderMap) -> String {
    if let Some(v) = headers.get(HEADER).and_then(|v| v.to_str().ok())
        && is_acceptable(v) {
            return v.to_owned();
        }
    uuid::Uuid::new_v4().to_string()
}

fn is_acceptable(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=@".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn accepts_sane_ids_and_replaces_others() {
        let mut h = HeaderMap::new();
        h.insert(HEADER, HeaderValue::from_static("abc-123"));
        assert_eq!(accept_or_mint(&h), "abc-123");
        h.insert(HEADER, HeaderValue::from_static("has space"));
        assert_eq!(accept_or_mint(&h).len(), 36);
        h.insert(HEADER, HeaderValue::from_str(&"a".repeat(201)).unwrap_or(HeaderValue::from_static("")));
        assert_eq!(accept_or_mint(&h).len(), 36);
    }
}
