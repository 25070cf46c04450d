//! The one path normalization shared by routing, authorization and forwarding.
//!
//! Every component that looks at a request path must see the same string: if the router
//! matched `/admin` while the auth policy looked at `/%61dmin` (or `/x/../admin`), a request
//! could slip past a policy attached to a route. So the gateway normalizes the path once,
//! rejects anything ambiguous with a 400, and hands the normalized form to everyone.

use std::borrow::Cow;
use std::fmt;

/// Why a request path was rejected by [`normalize_path`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// The path does not start with `/` (e.g. an authority-form or asterisk-form target).
    NotAbsolute,
    /// A `%` that is not followed by two hexadecimal digits.
    InvalidPercentEncoding,
    /// An encoded NUL, CR or LF (`%00`, `%0D`, `%0A`), which upstreams may truncate or split on.
    ForbiddenEncodedByte,
    /// A raw control character or whitespace, which no valid request-target contains.
    ForbiddenCharacter,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotAbsolute => "request path must start with '/'",
            Self::InvalidPercentEncoding => {
                "request path contains a '%' not followed by two hex digits"
            }
            Self::ForbiddenEncodedByte => "request path contains an encoded NUL, CR or LF",
            Self::ForbiddenCharacter => "request path contains a control character or whitespace",
        })
    }
}

impl std::error::Error for PathError {}

/// Normalizes a request path (the request-target's path, without the query).
///
/// - it must start with `/`;
/// - percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded, every other
///   percent-encoding is kept with upper-case hex digits (`%2f` becomes `%2F`);
/// - a `%` without two hex digits, an encoded NUL/CR/LF and raw control characters or
///   whitespace are errors;
/// - dot segments (`.` and `..`, including ones spelled `%2e`) are removed as RFC 3986
///   §5.2.4 says, `..` never climbing above the root;
/// - everything else, including empty segments and a trailing slash, is kept.
///
/// Returns [`Cow::Borrowed`] when the path is already normal, so the common case does not
/// allocate.
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }

    // One validating pass that also finds out whether anything has to change, so that an
    // already-normal path is returned as is.
    let mut needs_rewrite = false;
    let mut has_dots = false;
    let mut non_ascii = false;
    let mut seg_start = 1;
    let mut i = 1;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let (hi, lo) = hex_pair(bytes, i)?;
                let value = (hi << 4) | lo;
                if matches!(value, 0x00 | 0x0A | 0x0D) {
                    return Err(PathError::ForbiddenEncodedByte);
                }
                if is_unreserved(value) || has_lower_hex(bytes, i) {
                    needs_rewrite = true;
                }
                i += 3;
                continue;
            }
            b'/' => {
                has_dots |= is_dot_segment(&raw[seg_start..i]);
                seg_start = i + 1;
            }
            0x00..=0x20 | 0x7F => return Err(PathError::ForbiddenCharacter),
            0x80.. => non_ascii = true,
            _ => {}
        }
        i += 1;
    }
    has_dots |= raw.get(seg_start..).is_some_and(is_dot_segment);

    // Raw non-ASCII is unusual in a request-target; when present, apply the same rule to
    // Unicode controls and whitespace (e.g. U+0085, U+2028) that upstreams may treat as
    // line breaks.
    if non_ascii && raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(PathError::ForbiddenCharacter);
    }

    if needs_rewrite {
        let decoded = rewrite_percent_encodings(raw);
        // Decoding `%2e` can create dot segments the raw scan did not see.
        if is_dot_segment_path(&decoded) {
            return Ok(Cow::Owned(remove_dot_segments(&decoded)));
        }
        return Ok(Cow::Owned(decoded));
    }
    if has_dots {
        return Ok(Cow::Owned(remove_dot_segments(raw)));
    }
    Ok(Cow::Borrowed(raw))
}

/// Percent-decodes every `%XX` of `s` (e.g. a path parameter's value); invalid UTF-8 in the
/// result is replaced with U+FFFD. A malformed `%` is kept literally.
///
/// Returns [`Cow::Borrowed`] when `s` contains nothing to decode.
pub fn percent_decode(s: &str) -> Cow<'_, str> {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy()
}

/// Reads the two hex digits after the `%` at `bytes[i]`.
fn hex_pair(bytes: &[u8], i: usize) -> Result<(u8, u8), PathError> {
    match (
        bytes.get(i + 1).copied().and_then(hex_value),
        bytes.get(i + 2).copied().and_then(hex_value),
    ) {
        (Some(hi), Some(lo)) => Ok((hi, lo)),
        _ => Err(PathError::InvalidPercentEncoding),
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Whether the escape at `bytes[i]` (already validated) spells a hex digit in lower case.
fn has_lower_hex(bytes: &[u8], i: usize) -> bool {
    bytes
        .get(i + 1..i + 3)
        .is_some_and(|pair| pair.iter().any(u8::is_ascii_lowercase))
}

/// RFC 3986 §2.3 unreserved characters: the ones whose encoding carries no meaning.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn is_dot_segment(segment: &str) -> bool {
    segment == "." || segment == ".."
}

/// Whether any `/`-separated segment of `path` (which starts with `/`) is `.` or `..`.
fn is_dot_segment_path(path: &str) -> bool {
    path.get(1..)
        .is_some_and(|rest| rest.split('/').any(is_dot_segment))
}

/// Decodes unreserved escapes and upper-cases the others; `raw` has been validated.
fn rewrite_percent_encodings(raw: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut run_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            i += 1;
            continue;
        }
        // `%` is ASCII, so `run_start..i` lies on character boundaries.
        out.push_str(&raw[run_start..i]);
        match hex_pair(bytes, i) {
            Ok((hi, lo)) => {
                let value = (hi << 4) | lo;
                if is_unreserved(value) {
                    out.push(char::from(value));
                } else {
                    out.push('%');
                    out.push(char::from(HEX[usize::from(hi)]));
                    out.push(char::from(HEX[usize::from(lo)]));
                }
                i += 3;
            }
            // Unreachable after validation; keeping the byte is the harmless fallback.
            Err(_) => {
                out.push('%');
                i += 1;
            }
        }
        run_start = i;
    }
    out.push_str(&raw[run_start..]);
    out
}

/// RFC 3986 §5.2.4 for an absolute path: `.` segments vanish, `..` drops the previous
/// segment (never above the root), and a dot segment at the end leaves a trailing slash.
fn remove_dot_segments(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let rest = path.get(1..).unwrap_or_default();
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        match segment {
            "." => {}
            ".." => {
                // `out` is a sequence of `/segment`, so the last one starts at the last `/`.
                let cut = out.rfind('/').unwrap_or(0);
                out.truncate(cut);
            }
            _ => {
                out.push('/');
                out.push_str(segment);
                continue;
            }
        }
        if last {
            // "/a/b/." and "/a/b/.." name a directory: keep the trailing slash.
            out.push('/');
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(raw: &str) -> Result<String, PathError> {
        normalize_path(raw).map(Cow::into_owned)
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for p in [
            "/", "/users", "/users/", "/a//b", "/a/b%2Fc", "/%20", "/a/...", "/.a/b.", "/é",
        ] {
            let out = normalize_path(p);
            assert!(
                matches!(out, Ok(Cow::Borrowed(s)) if s == p),
                "{p}: {out:?}"
            );
        }
    }

    #[test]
    fn must_start_with_slash() {
        assert_eq!(norm(""), Err(PathError::NotAbsolute));
        assert_eq!(norm("users"), Err(PathError::NotAbsolute));
        assert_eq!(norm("*"), Err(PathError::NotAbsolute));
        assert_eq!(norm("%2Fusers"), Err(PathError::NotAbsolute));
    }

    #[test]
    fn unreserved_escapes_are_decoded() {
        assert_eq!(norm("/%41").as_deref(), Ok("/A"));
        assert_eq!(norm("/%61%7a%30%2D%2e%5F%7E").as_deref(), Ok("/az0-._~"));
        assert_eq!(norm("/users/%6Aoe").as_deref(), Ok("/users/joe"));
    }

    #[test]
    fn other_escapes_are_upper_cased() {
        assert_eq!(norm("/a%2fb").as_deref(), Ok("/a%2Fb"));
        assert_eq!(norm("/%c3%a9").as_deref(), Ok("/%C3%A9"));
        assert_eq!(norm("/a%20b").as_deref(), Ok("/a%20b"));
        assert_eq!(norm("/%3f%41").as_deref(), Ok("/%3FA"));
    }

    #[test]
    fn malformed_escapes_are_errors() {
        for p in ["/%", "/%4", "/a%zz", "/%4g", "/a/%", "/%%41"] {
            assert_eq!(norm(p), Err(PathError::InvalidPercentEncoding), "{p}");
        }
    }

    #[test]
    fn encoded_nul_cr_lf_are_errors() {
        for p in ["/%00", "/a%0d", "/a%0Ab", "/%0D%0A"] {
            assert_eq!(norm(p), Err(PathError::ForbiddenEncodedByte), "{p}");
        }
        // Other encoded controls are legal data; they stay encoded.
        assert_eq!(norm("/%09").as_deref(), Ok("/%09"));
    }

    #[test]
    fn raw_controls_and_whitespace_are_errors() {
        for p in [
            "/a b",
            "/a\tb",
            "/a\nb",
            "/a\r",
            "/\0",
            "/a\x7f",
            "/a\u{85}",
            "/a\u{2028}",
            "/a\u{a0}",
        ] {
            assert_eq!(norm(p), Err(PathError::ForbiddenCharacter), "{p:?}");
        }
    }

    #[test]
    fn dot_segments_are_removed() {
        let cases = [
            ("/.", "/"),
            ("/..", "/"),
            ("/./", "/"),
            ("/../", "/"),
            ("/a/.", "/a/"),
            ("/a/..", "/"),
            ("/a/b/..", "/a/"),
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/../../a", "/a"),
            ("/a/b/c/./../../g", "/a/g"),
            ("/a//../b", "/a/b"),
            ("//..", "/"),
            ("/a/b/../../..", "/"),
            ("/a/.../b", "/a/.../b"),
            ("/a/..b/c", "/a/..b/c"),
        ];
        for (raw, want) in cases {
            assert_eq!(norm(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn encoded_dots_are_dot_segments() {
        assert_eq!(norm("/a/%2e%2e/b").as_deref(), Ok("/b"));
        assert_eq!(norm("/a/%2E/b").as_deref(), Ok("/a/b"));
        assert_eq!(norm("/a/.%2e").as_deref(), Ok("/"));
        assert_eq!(
            norm("/admin/%2e%2e%2fsecret").as_deref(),
            Ok("/admin/..%2Fsecret")
        );
    }

    #[test]
    fn encoded_slash_is_not_a_separator() {
        assert_eq!(norm("/a/..%2Fb").as_deref(), Ok("/a/..%2Fb"));
        assert_eq!(norm("/a/..%2fb").as_deref(), Ok("/a/..%2Fb"));
        assert_eq!(norm("/a/b%2F..").as_deref(), Ok("/a/b%2F.."));
    }

    #[test]
    fn empty_segments_and_trailing_slash_are_kept() {
        assert_eq!(norm("//a//b/").as_deref(), Ok("//a//b/"));
        assert_eq!(norm("/a/%7e/").as_deref(), Ok("/a/~/"));
    }

    #[test]
    fn normalization_is_idempotent() {
        for p in ["/a/%2e%2e/b", "/%41/./x/", "/a%2fb/../c", "/%c3%a9/%7E"] {
            let once = norm(p).unwrap_or_default();
            assert_eq!(norm(&once).as_deref(), Ok(once.as_str()), "{p}");
            assert!(matches!(normalize_path(&once), Ok(Cow::Borrowed(_))), "{p}");
        }
    }

    #[test]
    fn percent_decode_decodes_everything() {
        assert!(matches!(percent_decode("abc"), Cow::Borrowed("abc")));
        assert_eq!(percent_decode("a%20b"), "a b");
        assert_eq!(percent_decode("a%2Fb%2fc"), "a/b/c");
        assert_eq!(percent_decode("%C3%A9"), "é");
        assert_eq!(percent_decode("%FF"), "\u{FFFD}");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn display_is_meaningful() {
        assert!(PathError::InvalidPercentEncoding.to_string().contains('%'));
        let err: &dyn std::error::Error = &PathError::NotAbsolute;
        assert!(err.source().is_none());
    }
}
