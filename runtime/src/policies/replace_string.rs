//! replace-string-outbound: string or regular-expression replacement in the response body.

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, ETAG, HeaderMap, HeaderValue, TRANSFER_ENCODING};
use http::{Method, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, BodyStream, StreamBody};
use regex::{Captures, Regex, RegexBuilder, Replacer};
use serde::Deserialize;

use super::de;
use crate::policy::{FromOptions, Outbound};
use crate::{Context, RequestHead, Response};

/// The largest body that is rewritten; larger bodies pass through unchanged.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// How `match` is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplaceMode {
    /// `match` is literal text; every occurrence is replaced.
    String,
    /// `match` is a JavaScript regular expression literal (`/(\d+)/g`) or a bare pattern.
    Regexp,
}

/// Options of replace-string-outbound.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReplaceStringOptions {
    /// `"string"` or `"regexp"`. Required.
    pub mode: ReplaceMode,
    /// The text or pattern to find (JSON name `match`). Required.
    #[serde(rename = "match", deserialize_with = "de::text")]
    pub pattern: String,
    /// The replacement, with JavaScript's `$` patterns. Required.
    #[serde(deserialize_with = "de::text")]
    pub replace_with: String,
}

/// One part of a replacement, following JavaScript's `GetSubstitution`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    /// `$&` (group 0) or `$1`..`$99`.
    Group(usize),
    /// `$<name>`.
    Named(String),
    /// `` $` ``: the text before the match.
    Before,
    /// `$'`: the text after the match.
    After,
}

/// `ReplaceStringOutboundPolicy`: rewrites the response body.
///
/// * `mode: "string"` replaces every occurrence of `match`.
/// * `mode: "regexp"` takes a JavaScript literal `/pattern/flags` — `g` replaces every match
///   (else only the first), `i` ignores case, `m` makes `^`/`$` match at line breaks, `s`
///   lets `.` match newlines, `u` is accepted (patterns are always Unicode-aware); other
///   flags stop start-up — or a bare pattern, which replaces every match. Patterns use the
///   `regex` crate's syntax, which covers JavaScript's common subset but has no look-around
///   or backreferences (those stop start-up), and its `\d` `\w` `\b` are Unicode-aware.
/// * `replaceWith` understands JavaScript's patterns in both modes: `$$`, `$&`, `` $` ``,
///   `$'`, `$1`..`$99` (`$1a` is group 1 then `a`; a group that does not exist stays
///   literal) and `$<name>`.
///
/// The body is buffered (at most 16 MiB). It passes through unchanged, with a warning, when
/// it is larger (what was read is sent followed by the rest of the stream, so nothing is lost
/// and memory stays bounded), is not UTF-8, or has a `Content-Encoding` other than `identity`
/// (compressed bytes cannot be searched and must not be corrupted). Responses to `HEAD`, and
/// 1xx, 204, 206 and 304 responses, are left alone. When the body changed, `Content-Length`
/// is set to the new length and a strong `ETag` becomes weak.
#[derive(Debug, Clone)]
pub struct ReplaceStringOutbound {
    regex: Regex,
    /// Replace every match (`g`, string mode, bare patterns) or only the first.
    all: bool,
    pieces: Vec<Piece>,
}

/// Splits `/pattern/flags` into its parts; `None` when `s` is not such a literal (then it
/// is a bare pattern: `/api/v1` has "flags" that are not flags, so it is a pattern).
fn split_literal(s: &str) -> Option<(&str, &str)> {
    let rest = s.strip_prefix('/')?;
    let end = rest.rfind('/')?;
    let (pattern, flags) = (rest.get(..end)?, rest.get(end + 1..)?);
    flags.bytes().all(|b| b"dgimsuvy".contains(&b)).then_some((pattern, flags))
}

fn compile_regexp(s: &str) -> Result<(Regex, bool), String> {
    let (pattern, flags) = split_literal(s).unwrap_or((s, "g"));
    let mut builder = RegexBuilder::new(pattern);
    let mut all = false;
    let mut seen = String::new();
    for f in flags.chars() {
        if seen.contains(f) {
            return Err(format!("match: the flag `{f}` appears twice in `{s}`"));
        }
        seen.push(f);
        match f {
            'g' => all = true,
            'i' => {
                builder.case_insensitive(true);
            }
            'm' => {
                builder.multi_line(true);
            }
            's' => {
                builder.dot_matches_new_line(true);
            }
            'u' => {}
            other => return Err(format!("match: the flag `{other}` of `{s}` is not supported (use g, i, m, s)")),
        }
    }
    if pattern.is_empty() {
        return Err("match: the pattern is empty".to_owned());
    }
    let regex = builder.build().map_err(|e| format!("match: `{s}` is not a supported regular expression: {e}"))?;
    Ok((regex, all))
}

/// Parses a JavaScript replacement string for a pattern with `groups` numbered groups.
fn parse_replacement(s: &str, groups: usize, has_names: bool) -> Vec<Piece> {
    let mut out: Vec<Piece> = Vec::new();
    let mut lit = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    let digit = |j: usize| b.get(j).filter(|c| c.is_ascii_digit()).map(|c| usize::from(c - b'0'));
    // Ends the pending literal, then adds `piece`.
    fn flush(lit: &mut String, out: &mut Vec<Piece>, piece: Piece) {
        if !lit.is_empty() {
            out.push(Piece::Literal(std::mem::take(lit)));
        }
        out.push(piece);
    }
    while let Some(rel) = s.get(i..).and_then(|r| r.find('$')) {
        lit.push_str(s.get(i..i + rel).unwrap_or(""));
        i += rel;
        // `i` is at a `$`; every branch consumes it and what it introduces.
        match b.get(i + 1) {
            Some(b'$') => {
                lit.push('$');
                i += 2;
            }
            Some(b'&') => {
                flush(&mut lit, &mut out, Piece::Group(0));
                i += 2;
            }
            Some(b'`') => {
                flush(&mut lit, &mut out, Piece::Before);
                i += 2;
            }
            Some(b'\'') => {
                flush(&mut lit, &mut out, Piece::After);
                i += 2;
            }
            Some(c) if c.is_ascii_digit() => {
                let one = usize::from(c - b'0');
                match digit(i + 2).map(|d| one * 10 + d) {
                    Some(two) if (1..=groups).contains(&two) => {
                        flush(&mut lit, &mut out, Piece::Group(two));
                        i += 3;
                    }
                    _ if (1..=groups).contains(&one) => {
                        flush(&mut lit, &mut out, Piece::Group(one));
                        i += 2;
                    }
                    _ => {
                        lit.push('$');
                        i += 1;
                    }
                }
            }
            Some(b'<') if has_names => match s.get(i + 2..).and_then(|r| r.find('>')) {
                Some(end) => {
                    let name = s.get(i + 2..i + 2 + end).unwrap_or("").to_owned();
                    flush(&mut lit, &mut out, Piece::Named(name));
                    i += 3 + end;
                }
                None => {
                    lit.push('$');
                    i += 1;
                }
            },
            _ => {
                lit.push('$');
                i += 1;
            }
        }
    }
    lit.push_str(s.get(i..).unwrap_or(""));
    if !lit.is_empty() {
        out.push(Piece::Literal(lit));
    }
    out
}

/// Expands the pieces for one match; `haystack` is the whole body (for `` $` `` and `$'`).
struct JsReplacer<'a> {
    pieces: &'a [Piece],
    haystack: &'a str,
}

impl Replacer for JsReplacer<'_> {
    fn replace_append(&mut self, caps: &Captures<'_>, dst: &mut String) {
        for piece in self.pieces {
            match piece {
                Piece::Literal(s) => dst.push_str(s),
                // A group that did not take part in the match is empty, as in JavaScript.
                Piece::Group(n) => dst.push_str(caps.get(*n).map_or("", |m| m.as_str())),
                Piece::Named(n) => dst.push_str(caps.name(n).map_or("", |m| m.as_str())),
                Piece::Before => {
                    let start = caps.get(0).map_or(0, |m| m.start());
                    dst.push_str(self.haystack.get(..start).unwrap_or(""));
                }
                Piece::After => {
                    let end = caps.get(0).map_or(self.haystack.len(), |m| m.end());
                    dst.push_str(self.haystack.get(end..).unwrap_or(""));
                }
            }
        }
    }
}

impl FromOptions for ReplaceStringOutbound {
    type Options = ReplaceStringOptions;
    fn from_options(options: Self::Options, _name: &str) -> Result<Self, String> {
        let (regex, all) = match options.mode {
            ReplaceMode::String => {
                if options.pattern.is_empty() {
                    return Err("match must not be empty".to_owned());
                }
                let regex = Regex::new(&regex::escape(&options.pattern)).map_err(|e| format!("match: {e}"))?;
                (regex, true)
            }
            ReplaceMode::Regexp => compile_regexp(&options.pattern)?,
        };
        let has_names = regex.capture_names().flatten().next().is_some();
        let pieces = parse_replacement(&options.replace_with, regex.captures_len().saturating_sub(1), has_names);
        Ok(ReplaceStringOutbound { regex, all, pieces })
    }
}

impl ReplaceStringOutbound {
    /// The rewritten text, or `None` when nothing matched.
    fn replace<'t>(&self, text: &'t str) -> Option<std::borrow::Cow<'t, str>> {
        let rep = JsReplacer { pieces: &self.pieces, haystack: text };
        let out = self.regex.replacen(text, if self.all { 0 } else { 1 }, rep);
        matches!(out, std::borrow::Cow::Owned(_)).then_some(out)
    }
}

/// What reading the body gave.
enum Read {
    /// The whole body (and trailers, if any).
    Whole(Bytes, Option<HeaderMap>),
    /// Given up (too large or a read error): this body replays what was read, then the rest.
    PassThrough(Body),
}

async fn read_bounded(body: Body, limit: usize) -> Read {
    let mut body = body;
    let mut buf = BytesMut::new();
    let mut trailers: Option<HeaderMap> = None;
    loop {
        let Some(frame) = body.frame().await else {
            return Read::Whole(buf.freeze(), trailers);
        };
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                // Replay what arrived, then the same error: the client sees the broken body
                // it would have seen without this policy.
                let head = futures_util::stream::iter([Ok(Frame::data(buf.freeze())), Err(e)]);
                return Read::PassThrough(Body::new(StreamBody::new(head)));
            }
        };
        match frame.into_data() {
            Ok(data) if buf.len() + data.len() > limit => {
                let head = futures_util::stream::iter([Ok(Frame::data(buf.freeze())), Ok(Frame::data(data))]);
                let rest = BodyStream::new(body);
                return Read::PassThrough(Body::new(StreamBody::new(head.chain(rest))));
            }
            Ok(data) => buf.extend_from_slice(&data),
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers.get_or_insert_with(HeaderMap::new).extend(t);
                }
            }
        }
    }
}

/// A body of these bytes followed by these trailers.
fn body_of(data: Bytes, trailers: Option<HeaderMap>) -> Body {
    match trailers {
        None => Body::from(data),
        Some(t) => {
            let frames = [Ok::<_, std::convert::Infallible>(Frame::data(data)), Ok(Frame::trailers(t))];
            Body::new(StreamBody::new(futures_util::stream::iter(frames)))
        }
    }
}

fn is_identity(encoding: &HeaderValue) -> bool {
    encoding.to_str().is_ok_and(|e| e.trim().is_empty() || e.trim().eq_ignore_ascii_case("identity"))
}

impl Outbound for ReplaceStringOutbound {
    async fn on_response(&self, resp: Response, req: &RequestHead, cx: &mut Context) -> Response {
        let status = resp.status();
        if req.method == Method::HEAD
            || status.is_informational()
            || matches!(status, StatusCode::NO_CONTENT | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED)
            || resp.headers().get_all(CONTENT_ENCODING).iter().any(|e| !is_identity(e))
        {
            return resp;
        }
        let declared = resp.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
        let hinted = http_body::Body::size_hint(resp.body()).lower();
        if declared.unwrap_or(0).max(hinted) > MAX_BODY as u64 {
            cx.log.warn(format_args!("replace-string: the response body is larger than {MAX_BODY} bytes; sent unchanged"));
            return resp;
        }
        let (mut parts, body) = resp.into_parts();
        let (bytes, trailers) = match read_bounded(body, MAX_BODY).await {
            Read::Whole(b, t) => (b, t),
            Read::PassThrough(body) => {
                cx.log.warn(format_args!(
                    "replace-string: the response body is larger than {MAX_BODY} bytes or could not be read; sent unchanged"
                ));
                return Response::from_parts(parts, body);
            }
        };
        let Ok(text) = std::str::from_utf8(&bytes) else {
            cx.log.warn("replace-string: the response body is not UTF-8 text; sent unchanged");
            return Response::from_parts(parts, body_of(bytes, trailers));
        };
        let Some(new) = self.replace(text) else {
            return Response::from_parts(parts, body_of(bytes, trailers));
        };
        let new = Bytes::from(new.into_owned());
        parts.headers.remove(TRANSFER_ENCODING);
        if trailers.is_some() {
            // Trailers need chunked encoding, which a fixed length would rule out.
            parts.headers.remove(CONTENT_LENGTH);
        } else {
            parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(new.len()));
        }
        // A strong validator promises byte-identical content, which no longer holds.
        if let Some(tag) = parts.headers.get(ETAG)
            && !tag.as_bytes().starts_with(b"W/")
            && let Ok(weak) = HeaderValue::from_bytes(&[b"W/", tag.as_bytes()].concat())
        {
            parts.headers.insert(ETAG, weak);
        }
        Response::from_parts(parts, body_of(new, trailers))
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;
    use crate::policies::test_context;
    use crate::policies::test_util::{body_text, build, must, request, response};
    use serde_json::json;

    fn policy(mode: &str, pattern: &str, with: &str) -> ReplaceStringOutbound {
        must(build(json!({"mode": mode, "match": pattern, "replaceWith": with})))
    }

    fn apply(p: &ReplaceStringOutbound, text: &str) -> String {
        p.replace(text).map_or_else(|| text.to_owned(), |c| c.into_owned())
    }

    async fn run(p: &ReplaceStringOutbound, method: &str, resp: Response) -> Response {
        let mut cx = test_context();
        let head = request(method, "/a", "").head();
        p.on_response(resp, &head, &mut cx).await
    }

    #[test]
    fn string_mode_replaces_every_occurrence() {
        let p = policy("string", "a.b", "[x]");
        assert_eq!(apply(&p, "a.b axb a.b"), "[x] axb [x]");
        let p = policy("string", "(", "$$ $& $1 $0");
        assert_eq!(apply(&p, "f(x)"), "f$ ( $1 $0x)");
        assert!(p.replace("none here").is_none());
    }

    #[test]
    fn regexp_flags() {
        let p = policy("regexp", "/(\\d+)/g", "<$1>");
        assert_eq!(apply(&p, "a1 b22 c333"), "a<1> b<22> c<333>");
        let p = policy("regexp", "/(\\d+)/", "<$1>");
        assert_eq!(apply(&p, "a1 b22 c333"), "a<1> b22 c333");
        let p = policy("regexp", "/abc/gi", "x");
        assert_eq!(apply(&p, "ABC abc aBc"), "x x x");
        let p = policy("regexp", "/abc/g", "x");
        assert_eq!(apply(&p, "ABC abc"), "ABC x");
        let p = policy("regexp", "/^a/gm", "b");
        assert_eq!(apply(&p, "a1\na2"), "b1\nb2");
        let p = policy("regexp", "/^a/g", "b");
        assert_eq!(apply(&p, "a1\na2"), "b1\na2");
        let p = policy("regexp", "/a.b/gs", "x");
        assert_eq!(apply(&p, "a\nb"), "x");
        let p = policy("regexp", "/a.b/g", "x");
        assert_eq!(apply(&p, "a\nb"), "a\nb");
        // A bare pattern replaces every match.
        let p = policy("regexp", "o+", "0");
        assert_eq!(apply(&p, "foo boo"), "f0 b0");
        // Slashes that do not form a literal are part of a bare pattern.
        let p = policy("regexp", "/api/users", "/v2/users");
        assert_eq!(apply(&p, "see /api/users and /api/users"), "see /v2/users and /v2/users");
    }

    #[test]
    fn js_replacement_patterns() {
        let p = policy("regexp", "/(\\d+)/g", "$1a");
        assert_eq!(apply(&p, "x12y"), "x12ay");
        let p = policy("regexp", "/\\d+/g", "[$&]");
        assert_eq!(apply(&p, "a1b22"), "a[1]b[22]");
        let p = policy("regexp", "/(\\w)(\\w)/", "$2$1 $3 $$1 $0");
        assert_eq!(apply(&p, "ab"), "ba $3 $1 $0");
        let p = policy("regexp", "/b/", "[$`|$']");
        assert_eq!(apply(&p, "abc"), "a[a|c]c");
        let p = policy("regexp", "/(?<year>\\d{4})-(?<m>\\d\\d)/", "$<m>/$<year> $<none>");
        assert_eq!(apply(&p, "on 2024-05"), "on 05/2024 ");
        // Without named groups `$<` is literal.
        let p = policy("regexp", "/x/", "$<y>");
        assert_eq!(apply(&p, "x"), "$<y>");
        // Two-digit groups when they exist, else one digit and a literal digit.
        let p = policy("regexp", "/(a)(b)(c)(d)(e)(f)(g)(h)(i)(j)(k)/", "$11-$10-$12");
        assert_eq!(apply(&p, "abcdefghijk"), "k-j-a2");
        // A group that did not take part is empty; a trailing `$` is literal.
        let p = policy("regexp", "/(x)?y/", "[$1]$");
        assert_eq!(apply(&p, "y"), "[]$");
    }

    #[test]
    fn bad_patterns_stop_start_up() {
        for (mode, pattern) in [("regexp", "/a/gg"), ("regexp", "/a/y"), ("regexp", "/(?=a)/g"), ("regexp", "/(/"), ("regexp", "//g"), ("string", ""), ("regexp", "")] {
            let r = build::<ReplaceStringOutbound>(json!({"mode": mode, "match": pattern, "replaceWith": ""}));
            assert!(r.is_err(), "{mode} {pattern}");
        }
        assert!(build::<ReplaceStringOutbound>(json!({"mode": "glob", "match": "a", "replaceWith": ""})).is_err());
        assert!(build::<ReplaceStringOutbound>(json!({"mode": "string", "match": "a"})).is_err());
    }

    #[tokio::test]
    async fn rewrites_the_body_and_fixes_headers() {
        let p = policy("string", "secret", "[redacted]");
        let resp = response(200, &[("content-length", "17"), ("etag", "\"v1\""), ("content-type", "text/plain")], "a secret b secret");
        let resp = run(&p, "GET", resp).await;
        assert_eq!(resp.headers()["content-length"], "25");
        assert_eq!(resp.headers()["etag"], "W/\"v1\"");
        assert_eq!(resp.headers()["content-type"], "text/plain");
        assert_eq!(body_text(resp.into_body()).await, "a [redacted] b [redacted]");
    }

    #[tokio::test]
    async fn leaves_unmatched_compressed_and_bodiless_responses_alone() {
        let p = policy("string", "a", "b");
        let resp = run(&p, "GET", response(200, &[("content-length", "3"), ("etag", "\"v\"")], "xyz")).await;
        assert_eq!(resp.headers()["etag"], "\"v\"");
        assert_eq!(resp.headers()["content-length"], "3");
        assert_eq!(body_text(resp.into_body()).await, "xyz");

        let gz: &[u8] = &[0x1f, 0x8b, 0x08, b'a', b'a', 0xff];
        let resp = run(&p, "GET", response(200, &[("content-encoding", "gzip")], Bytes::from_static(gz))).await;
        let body = resp.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
        assert_eq!(&body[..], gz);

        let resp = run(&p, "GET", response(200, &[("content-encoding", "identity")], "aa")).await;
        assert_eq!(body_text(resp.into_body()).await, "bb");

        let resp = run(&p, "HEAD", response(200, &[("content-length", "100")], "")).await;
        assert_eq!(resp.headers()["content-length"], "100");
        let resp = run(&p, "GET", response(206, &[], "aaa")).await;
        assert_eq!(body_text(resp.into_body()).await, "aaa");
    }

    #[tokio::test]
    async fn non_utf8_bodies_pass_unchanged() {
        let p = policy("string", "a", "b");
        let bytes: &[u8] = &[b'a', 0xff, 0xfe, b'a'];
        let resp = run(&p, "GET", response(200, &[("content-length", "4")], Bytes::from_static(bytes))).await;
        assert_eq!(resp.headers()["content-length"], "4");
        let body = resp.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
        assert_eq!(&body[..], bytes);
    }

    #[tokio::test]
    async fn streamed_bodies_are_rewritten_and_trailers_kept() {
        let p = policy("regexp", "/b+/g", "X");
        // Matches across chunk boundaries are found because the whole body is buffered.
        let frames = [
            Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"abb"))),
            Ok(Frame::data(Bytes::from_static(b"bbc"))),
            Ok(Frame::trailers({
                let mut t = HeaderMap::new();
                t.insert("x-checksum", HeaderValue::from_static("1"));
                t
            })),
        ];
        let body = Body::new(StreamBody::new(futures_util::stream::iter(frames)));
        let resp = run(&p, "GET", response(200, &[("transfer-encoding", "chunked")], body)).await;
        assert!(resp.headers().get("content-length").is_none());
        assert!(resp.headers().get("transfer-encoding").is_none());
        let collected = must(resp.into_body().collect().await);
        assert_eq!(collected.trailers().and_then(|t| t.get("x-checksum")).map(|v| v.as_bytes()), Some(&b"1"[..]));
        assert_eq!(&collected.to_bytes()[..], b"aXc");
    }

    #[tokio::test]
    async fn over_the_cap_the_whole_body_still_arrives_unchanged() {
        // A small cap keeps the test fast; `on_response` uses the same reader with 16 MiB.
        let chunks: Vec<Result<Bytes, Infallible>> = (0..10).map(|i| Ok(Bytes::from(format!("chunk{i};")))).collect();
        let body = Body::from_stream(futures_util::stream::iter(chunks));
        let Read::PassThrough(body) = read_bounded(body, 20).await else {
            panic!("the cap was not noticed");
        };
        let expected: String = (0..10).map(|i| format!("chunk{i};")).collect();
        assert_eq!(body_text(body).await, expected);

        let Read::Whole(b, None) = read_bounded(Body::from("small"), 20).await else {
            panic!("a small body was not read whole");
        };
        assert_eq!(&b[..], b"small");
    }

    #[tokio::test]
    async fn declared_length_over_the_cap_is_not_read() {
        let p = policy("string", "a", "b");
        let big = (MAX_BODY + 1).to_string();
        let resp = run(&p, "GET", response(200, &[("content-length", big.as_str())], "aaa")).await;
        assert_eq!(resp.headers()["content-length"], big.as_str());
        assert_eq!(body_text(resp.into_body()).await, "aaa");
    }
}
