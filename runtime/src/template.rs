//! Pieces that compiled URL templates call to append substituted values.
//!
//! The generator decides, for every `${...}` of a template, which part of the URL it lands in
//! and emits a call to the matching function here. Values that come from the client are
//! encoded so that they can never leave the place the template author put them in: a path
//! segment cannot climb (`..`) or add segments (`/`), a query value cannot add parameters, a
//! host label cannot change the host, and nothing can inject CR or LF.

use crate::Problem;

/// Characters `encodeURIComponent` leaves alone: `A-Z a-z 0-9 - _ . ! ~ * ' ( )`.
fn is_component_safe(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')')
}

/// Appends `value` percent-encoded as JavaScript's `encodeURIComponent` does.
pub fn push_component(buf: &mut String, value: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = value.as_bytes();
    // Runs of safe bytes are copied whole. A non-empty run starts and ends at ASCII bytes, so
    // on char boundaries (an empty one may sit inside a multi-byte char: not sliced).
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if is_component_safe(b) {
            continue;
        }
        if run < i {
            buf.push_str(&value[run..i]);
        }
        buf.push('%');
        buf.push(char::from(HEX[usize::from(b >> 4)]));
        buf.push(char::from(HEX[usize::from(b & 0x0f)]));
        run = i + 1;
    }
    if run < bytes.len() {
        buf.push_str(&value[run..]);
    }
}

/// `encodeURIComponent(value)` as a new string (for explicit calls in templates).
pub fn encode_uri_component(value: &str) -> String {
    let mut s = String::with_capacity(value.len());
    push_component(&mut s, value);
    s
}

/// Appends a client-supplied value as (part of) one path segment.
///
/// `/` is encoded, and a value that would form a whole `.` or `..` segment is refused: many
/// upstreams decode `%2E%2E` back into a dot segment, so encoding alone is not enough.
pub fn push_path_segment(buf: &mut String, value: &str) -> Result<(), Problem> {
    if value == "." || value == ".." {
        return Err(traversal(value));
    }
    push_component(buf, value);
    Ok(())
}

/// Appends a client-supplied multi-segment value (a `{+rest}` capture): slashes are kept,
/// each segment is encoded, dot segments are refused.
pub fn push_path_rest(buf: &mut String, value: &str) -> Result<(), Problem> {
    for (i, seg) in value.split('/').enumerate() {
        if i > 0 {
            buf.push('/');
        }
        push_path_segment(buf, seg)?;
    }
    Ok(())
}

/// Appends a client-supplied value inside the query string (one key or value).
pub fn push_query(buf: &mut String, value: &str) {
    push_component(buf, value);
}

/// Appends a client-supplied value that lands in the host: only letters, digits, `-` and
/// inner dots are allowed, anything else answers 400.
pub fn push_host(buf: &mut String, value: &str) -> Result<(), Problem> {
    let ok = !value.is_empty()
        && value.len() <= 253
        && !value.starts_with('.')
        && !value.ends_with('.')
        && !value.contains("..")
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !ok {
        return Err(Problem::bad_request("a request value cannot be used as an upstream host name"));
    }
    buf.push_str(value);
    Ok(())
}

/// Appends an operator-supplied value (environment, custom code, configuration) as it is.
/// Control characters and spaces are refused: no value may inject a header line.
pub fn push_trusted(buf: &mut String, value: &str) -> Result<(), Problem> {
    if value.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(Problem::internal("a configured value in the upstream URL contains control characters or spaces"));
    }
    buf.push_str(value);
    Ok(())
}

/// Appends an already-encoded piece of the incoming URL (`${pathname}`, `${search}`, ...).
/// The gateway normalized it, so it is kept as it is.
pub fn push_url_piece(buf: &mut String, value: &str) {
    buf.push_str(value);
}

/// The value of a request header as text (`""` when absent or not visible ASCII).
pub fn header<'a>(req: &'a crate::Request, name: &str) -> &'a str {
    req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// `${query.x}`: the first value, decoded (`""` when absent).
pub fn query<'a>(req: &'a crate::Request, name: &str) -> std::borrow::Cow<'a, str> {
    req.query(name).unwrap_or_default()
}

/// `${search}`: `?query` or `""`.
pub fn search(req: &crate::Request) -> String {
    match req.uri().query() {
        Some(q) if !q.is_empty() => format!("?{q}"),
        _ => String::new(),
    }
}

/// `${url}`: the full incoming URL with the normalized path.
pub fn url(req: &crate::Request, cx: &crate::Context) -> String {
    format!("{}{}{}", cx.origin(), cx.pathname, search(req))
}

/// `${request.user.sub}` (`""` without a user).
pub fn user_sub(req: &crate::Request) -> &str {
    req.user.as_ref().map(|u| u.sub.as_str()).unwrap_or("")
}

/// `${request.user.data.x}` (`""` when absent).
pub fn user_data<'a>(req: &'a crate::Request, key: &str) -> std::borrow::Cow<'a, str> {
    req.user.as_ref().and_then(|u| u.data_text(key)).unwrap_or_default()
}

fn traversal(value: &str) -> Problem {
    Problem::bad_request(format!("the path parameter value `{value}` is not allowed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_encode_like_javascript() {
        assert_eq!(encode_uri_component("a b/c?d=e&f#g"), "a%20b%2Fc%3Fd%3De%26f%23g");
        assert_eq!(encode_uri_component("-_.!~*'()"), "-_.!~*'()");
        assert_eq!(encode_uri_component("é"), "%C3%A9");
        assert_eq!(encode_uri_component("\r\n"), "%0D%0A");
    }

    #[test]
    fn runs_of_safe_bytes_and_multi_byte_chars_mix() {
        // Against the byte-at-a-time definition, on values where safe runs begin and end
        // next to multi-byte chars.
        let reference = |v: &str| -> String {
            v.bytes().map(|b| if is_component_safe(b) { char::from(b).to_string() } else { format!("%{b:02X}") }).collect()
        };
        for v in ["", "a", "é", "aé", "éa", "aéb", "日本語", "x日y本z", "a b/é?日=1&", "%", "é%é", "ab\u{1F600}cd", "\u{1F600}"] {
            assert_eq!(encode_uri_component(v), reference(v), "{v:?}");
        }
    }

    #[test]
    fn path_segments_cannot_escape() {
        let mut s = String::from("/items/");
        assert!(push_path_segment(&mut s, "..").is_err());
        assert!(push_path_segment(&mut s, ".").is_err());
        push_path_segment(&mut s, "../../admin").ok();
        assert_eq!(s, "/items/..%2F..%2Fadmin");
        let mut s = String::new();
        push_path_segment(&mut s, "%2e%2e").ok();
        assert_eq!(s, "%252e%252e");
    }

    #[test]
    fn rest_keeps_slashes_and_refuses_dot_segments() {
        let mut s = String::new();
        assert!(push_path_rest(&mut s, "a/b c/d").is_ok());
        assert_eq!(s, "a/b%20c/d");
        assert!(push_path_rest(&mut String::new(), "a/../b").is_err());
        assert!(push_path_rest(&mut String::new(), "./b").is_err());
    }

    #[test]
    fn hosts_and_trusted_values() {
        let mut s = String::new();
        assert!(push_host(&mut s, "tenant-1").is_ok());
        assert!(push_host(&mut s, "evil.com/x").is_err());
        assert!(push_host(&mut s, "a@b").is_err());
        assert!(push_trusted(&mut s, "http://x\r\nHost: y").is_err());
        assert!(push_trusted(&mut s, "http://up:8080/base").is_ok());
    }
}
