//! http-deprecation-outbound: `Deprecation` (RFC 9745), `Sunset` (RFC 8594) and a
//! `Link; rel="deprecation"`.

use http::header::{HeaderName, HeaderValue, LINK};
use serde::Deserialize;

use crate::policy::{FromOptions, Outbound};
use crate::{Context, RequestHead, Response};

const DEPRECATION: HeaderName = HeaderName::from_static("deprecation");
const SUNSET: HeaderName = HeaderName::from_static("sunset");

/// The `deprecation` option: `true`, an ISO 8601 date or date-time, or a Unix timestamp.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum DeprecationValue {
    /// `true`: deprecated, no date. `false` sends no `Deprecation` header (handy with
    /// `$env(...)`), while `sunset` and `link` still apply.
    Flag(bool),
    /// Unix time in seconds.
    Timestamp(serde_json::Number),
    /// `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM[:SS[.fff]]` with `Z` or `±HH:MM`.
    Date(String),
}

/// Options of http-deprecation-outbound.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpDeprecationOptions {
    /// When the route was or will be deprecated. Required.
    pub deprecation: DeprecationValue,
    /// An ISO 8601 date or date-time when the route goes away (optional).
    #[serde(default)]
    pub sunset: Option<String>,
    /// A URL documenting the deprecation or the migration (optional).
    #[serde(default)]
    pub link: Option<String>,
}

/// `HttpDeprecationOutboundPolicy`: adds deprecation headers to every response of the route.
///
/// * `deprecation: true` → `Deprecation: true`. RFC 9745 only defines a date; Zuplo's `true`
///   ("already deprecated, no date") maps to the boolean form of the earlier drafts, which
///   clients written against them understand and RFC 9745 clients treat as present.
/// * a date or timestamp → `Deprecation: @<unix seconds>` (an RFC 9651 structured date).
/// * `sunset` → `Sunset: <IMF-fixdate>`, e.g. `Sun, 30 Jun 2025 23:59:59 GMT`.
/// * `link` → `Link: <url>; rel="deprecation"; type="text/html"`, added next to any `Link`
///   the response already has.
///
/// All values are computed at start-up.
#[derive(Debug, Clone)]
pub struct HttpDeprecationOutbound {
    deprecation: Option<HeaderValue>,
    sunset: Option<HeaderValue>,
    link: Option<HeaderValue>,
}

impl FromOptions for HttpDeprecationOutbound {
    type Options = HttpDeprecationOptions;
    fn from_options(options: Self::Options, name: &str) -> Result<Self, String> {
        let (deprecation, deprecated_at) = match options.deprecation {
            DeprecationValue::Flag(true) => (Some("true".to_owned()), None),
            DeprecationValue::Flag(false) => (None, None),
            DeprecationValue::Timestamp(n) => {
                let secs = match (n.as_i64(), n.as_f64()) {
                    (Some(i), _) => i,
                    // Fractions of a second cannot be expressed in a structured date.
                    (None, Some(f)) if f.is_finite() && f.abs() < 1e15 => f.floor() as i64,
                    _ => return Err(format!("deprecation: {n} is not a usable Unix timestamp")),
                };
                (Some(format!("@{secs}")), Some(secs))
            }
            DeprecationValue::Date(s) if s.trim().eq_ignore_ascii_case("true") => (Some("true".to_owned()), None),
            DeprecationValue::Date(s) => {
                // A timestamp written as a string (`"1688169599"`) means the same as the number.
                let secs = match s.trim().parse::<i64>() {
                    Ok(secs) => secs,
                    Err(_) => parse_iso8601(&s).map_err(|why| format!("deprecation: `{s}` {why}"))?,
                };
                (Some(format!("@{secs}")), Some(secs))
            }
        };
        let sunset = match options.sunset.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => {
                let secs = parse_iso8601(s).map_err(|why| format!("sunset: `{s}` {why}"))?;
                if let Some(d) = deprecated_at
                    && secs < d
                {
                    // RFC 9745 says the sunset should not precede the deprecation; Zuplo
                    // accepts it, so warn rather than refuse to start.
                    tracing::warn!(policy = name, "the sunset date is earlier than the deprecation date");
                }
                Some(http_date(secs).ok_or_else(|| format!("sunset: `{s}` is outside the years 0000 to 9999"))?)
            }
        };
        let link = match options.link.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            None => None,
            Some(url) => {
                // `<` `>` `"` or whitespace would end the URI reference early and let the rest
                // be read as more link parameters or links.
                if url.bytes().any(|b| b.is_ascii_control() || b.is_ascii_whitespace() || matches!(b, b'<' | b'>' | b'"')) || !url.is_ascii() {
                    return Err(format!("link: `{url}` is not a valid URL (percent-encode spaces and special characters)"));
                }
                Some(format!("<{url}>; rel=\"deprecation\"; type=\"text/html\""))
            }
        };
        let value = |s: Option<String>| -> Result<Option<HeaderValue>, String> {
            s.map(|s| HeaderValue::from_str(&s).map_err(|_| format!("`{s}` is not a valid header value"))).transpose()
        };
        Ok(HttpDeprecationOutbound { deprecation: value(deprecation)?, sunset: value(sunset)?, link: value(link)? })
    }
}

impl Outbound for HttpDeprecationOutbound {
    async fn on_response(&self, mut resp: Response, _req: &RequestHead, _cx: &mut Context) -> Response {
        let h = resp.headers_mut();
        if let Some(v) = &self.deprecation {
            h.insert(DEPRECATION, v.clone());
        }
        if let Some(v) = &self.sunset {
            h.insert(SUNSET, v.clone());
        }
        if let Some(v) = &self.link {
            h.append(LINK, v.clone());
        }
        resp
    }
}

/// Days from 1970-01-01 to the civil date (Howard Hinnant's algorithm, proleptic Gregorian).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count from 1970-01-01 (inverse of [`days_from_civil`]).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

/// A cursor over ASCII digits and separators.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn digits(&mut self, n: usize) -> Option<u32> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        if !head.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.0 = rest;
        Some(head.iter().fold(0, |acc, b| acc * 10 + u32::from(b - b'0')))
    }

    fn eat(&mut self, any_of: &[u8]) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        if any_of.contains(&b) {
            self.0 = rest;
            Some(b)
        } else {
            None
        }
    }
}

/// Parses `YYYY-MM-DD` (midnight UTC) or `YYYY-MM-DDTHH:MM[:SS[.fff]]` followed by `Z` or
/// `±HH:MM` into Unix seconds (fractions dropped). A date-time without a zone is refused:
/// JavaScript would read it in the server's local time zone, which is ambiguous.
fn parse_iso8601(s: &str) -> Result<i64, &'static str> {
    const BAD: &str = "is not an ISO 8601 date (YYYY-MM-DD) or date-time (YYYY-MM-DDTHH:MM:SSZ)";
    let mut c = Cursor(s.trim().as_bytes());
    let y = c.digits(4).ok_or(BAD)?;
    c.eat(b"-").ok_or(BAD)?;
    let mo = c.digits(2).ok_or(BAD)?;
    c.eat(b"-").ok_or(BAD)?;
    let d = c.digits(2).ok_or(BAD)?;
    let y = i64::from(y);
    if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y, mo) {
        return Err("is not a valid calendar date");
    }
    let days = days_from_civil(y, mo, d);
    if c.0.is_empty() {
        return Ok(days * 86_400);
    }
    c.eat(b"Tt").ok_or(BAD)?;
    let h = c.digits(2).ok_or(BAD)?;
    c.eat(b":").ok_or(BAD)?;
    let mi = c.digits(2).ok_or(BAD)?;
    let mut sec = 0;
    if c.eat(b":").is_some() {
        sec = c.digits(2).ok_or(BAD)?;
        if c.eat(b".").is_some() {
            if c.digits(1).is_none() {
                return Err(BAD);
            }
            while c.digits(1).is_some() {}
        }
    }
    if h > 23 || mi > 59 || sec > 59 {
        return Err("has an invalid time of day");
    }
    let offset = match c.eat(b"Zz+-") {
        Some(b'Z' | b'z') => 0,
        Some(sign) => {
            let oh = c.digits(2).ok_or(BAD)?;
            c.eat(b":").ok_or(BAD)?;
            let om = c.digits(2).ok_or(BAD)?;
            if oh > 23 || om > 59 {
                return Err("has an invalid UTC offset");
            }
            let o = i64::from(oh * 3600 + om * 60);
            if sign == b'-' { -o } else { o }
        }
        None => return Err("has no time zone (add Z or an offset such as +02:00)"),
    };
    if !c.0.is_empty() {
        return Err(BAD);
    }
    Ok(days * 86_400 + i64::from(h * 3600 + mi * 60 + sec) - offset)
}

/// Formats Unix seconds as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`); `None` outside
/// the four-digit years the format allows.
fn http_date(secs: i64) -> Option<String> {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    if !(0..=9999).contains(&y) {
        return None;
    }
    // 1970-01-01 was a Thursday.
    let weekday = DAYS.get(usize::try_from(days.rem_euclid(7)).ok()?)?;
    let month = MONTHS.get(usize::try_from(m).ok()?.checked_sub(1)?)?;
    Some(format!("{weekday}, {d:02} {month} {y:04} {:02}:{:02}:{:02} GMT", rem / 3600, (rem % 3600) / 60, rem % 60))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policies::test_context;
    use crate::policies::test_util::{build, must, request, response};
    use serde_json::json;

    async fn headers(p: &HttpDeprecationOutbound, resp: Response) -> http::HeaderMap {
        let mut cx = test_context();
        let head = request("GET", "/a", "").head();
        p.on_response(resp, &head, &mut cx).await.headers().clone()
    }

    #[test]
    fn parses_iso_8601() {
        assert_eq!(parse_iso8601("1970-01-01"), Ok(0));
        assert_eq!(parse_iso8601("2023-06-30T23:59:59Z"), Ok(1_688_169_599));
        assert_eq!(parse_iso8601("2023-07-01T01:59:59+02:00"), Ok(1_688_169_599));
        assert_eq!(parse_iso8601("2023-06-30T18:59:59.999-05:00"), Ok(1_688_169_599));
        assert_eq!(parse_iso8601("2023-06-30T23:59z"), Ok(1_688_169_540));
        assert_eq!(parse_iso8601("2000-02-29"), Ok(951_782_400));
        assert_eq!(parse_iso8601("1969-12-31T23:59:59Z"), Ok(-1));
        for bad in [
            "2023-02-29", "1900-02-29", "2023-13-01", "2023-00-10", "2023-04-31", "2023-06-30T24:00:00Z",
            "2023-06-30T12:60Z", "2023-06-30T12:00:60Z", "2023-06-30T12:00:00", "2023-06-30T12:00:00.Z",
            "2023-06-30T12:00:00+0200", "2023-06-30T12:00:00+24:00", "2023-6-30", "30/06/2023", "",
            "2023-06-30Z", "2023-06-30T12:00:00Zjunk",
        ] {
            assert!(parse_iso8601(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_http_dates() {
        assert_eq!(http_date(0).as_deref(), Some("Thu, 01 Jan 1970 00:00:00 GMT"));
        assert_eq!(http_date(784_111_777).as_deref(), Some("Sun, 06 Nov 1994 08:49:37 GMT"));
        assert_eq!(http_date(1_751_327_999).as_deref(), Some("Mon, 30 Jun 2025 23:59:59 GMT"));
        assert_eq!(http_date(951_782_400).as_deref(), Some("Tue, 29 Feb 2000 00:00:00 GMT"));
        assert_eq!(http_date(-86_400).as_deref(), Some("Wed, 31 Dec 1969 00:00:00 GMT"));
        assert_eq!(http_date(253_402_300_800), None);
        for days in (-800_000..3_000_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[tokio::test]
    async fn true_with_sunset_and_link() {
        let p: HttpDeprecationOutbound = must(build(json!({
            "deprecation": true,
            "sunset": "2025-06-30T23:59:59Z",
            "link": "https://example.com/docs/v2-migration"
        })));
        let h = headers(&p, response(200, &[("link", "<https://example.com/next>; rel=\"next\"")], "")).await;
        assert_eq!(h["deprecation"], "true");
        assert_eq!(h["sunset"], "Mon, 30 Jun 2025 23:59:59 GMT");
        let links: Vec<_> = h.get_all("link").iter().filter_map(|v| v.to_str().ok()).collect();
        assert_eq!(
            links,
            ["<https://example.com/next>; rel=\"next\"", "<https://example.com/docs/v2-migration>; rel=\"deprecation\"; type=\"text/html\""]
        );
    }

    #[tokio::test]
    async fn dates_and_timestamps_become_structured_dates() {
        let p: HttpDeprecationOutbound = must(build(json!({"deprecation": "2023-06-30T23:59:59Z"})));
        let h = headers(&p, response(500, &[("deprecation", "old")], "")).await;
        assert_eq!(h["deprecation"], "@1688169599");
        assert_eq!(h.get_all("deprecation").iter().count(), 1);
        assert!(h.get("sunset").is_none() && h.get("link").is_none());

        let p: HttpDeprecationOutbound = must(build(json!({"deprecation": 1_688_169_599})));
        assert_eq!(headers(&p, response(200, &[], "")).await["deprecation"], "@1688169599");
        let p: HttpDeprecationOutbound = must(build(json!({"deprecation": "1688169599"})));
        assert_eq!(headers(&p, response(200, &[], "")).await["deprecation"], "@1688169599");
        let p: HttpDeprecationOutbound = must(build(json!({"deprecation": 1_688_169_599.75})));
        assert_eq!(headers(&p, response(200, &[], "")).await["deprecation"], "@1688169599");
        let p: HttpDeprecationOutbound = must(build(json!({"deprecation": "2024-01-01", "sunset": "2024-12-31"})));
        let h = headers(&p, response(200, &[], "")).await;
        assert_eq!(h["deprecation"], "@1704067200");
        assert_eq!(h["sunset"], "Tue, 31 Dec 2024 00:00:00 GMT");
    }

    #[tokio::test]
    async fn false_sends_no_deprecation_header() {
        let p: HttpDeprecationOutbound = must(build(json!({"deprecation": false, "sunset": "2030-01-01"})));
        let h = headers(&p, response(200, &[], "")).await;
        assert!(h.get("deprecation").is_none());
        assert_eq!(h["sunset"], "Tue, 01 Jan 2030 00:00:00 GMT");
    }

    #[test]
    fn bad_options_stop_start_up() {
        assert!(build::<HttpDeprecationOutbound>(json!({})).is_err());
        assert!(build::<HttpDeprecationOutbound>(json!({"deprecation": "soon"})).is_err());
        assert!(build::<HttpDeprecationOutbound>(json!({"deprecation": true, "sunset": "2025-06-31"})).is_err());
        assert!(build::<HttpDeprecationOutbound>(json!({"deprecation": true, "sunset": "10000-01-01"})).is_err());
        for bad in ["https://x.example/a b", "https://x.example/>; rel=\"x\"", "https://x.example/\r\nX: 1", "https://x.example/é"] {
            assert!(build::<HttpDeprecationOutbound>(json!({"deprecation": true, "link": bad})).is_err(), "{bad}");
        }
        assert!(build::<HttpDeprecationOutbound>(json!({"deprecation": true, "extra": 1})).is_err());
    }
}
