//! URL templates (`baseUrl`, `rewritePattern`, `location`): JavaScript template literals in
//! Zuplo, here a small expression language parsed at generation time and compiled to Rust
//! that appends pieces to one string.
//!
//! Every `${...}` is placed in the part of the URL it lands in (scheme/host, path, query), so
//! the emitted code can encode client-supplied values for exactly that place.

use crate::pattern::ParamDef;

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// Literal text and substitutions, in order.
    pub parts: Vec<Part>,
}

/// A piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Text copied as it is.
    Lit(String),
    /// A substitution and where in the URL it lands.
    Expr {
        /// What is substituted.
        expr: Expr,
        /// Where it lands.
        place: Place,
    },
}

/// Where in a URL a substitution lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Scheme, host or port (before the path).
    Host,
    /// The path.
    Path,
    /// The query string or fragment.
    Query,
}

/// A substitution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// `params.x`: index into the route's parameters and whether it spans segments.
    Param {
        /// Capture index.
        index: usize,
        /// `{+x}`-style capture.
        multi_segment: bool,
    },
    /// `query.x`.
    Query(String),
    /// `headers.get("x")`.
    Header(String),
    /// `env.X` or `$env(X)`.
    Env(String),
    /// `context.custom.x`.
    Custom(String),
    /// `request.user.sub`.
    UserSub,
    /// `request.user.data.x`.
    UserData(String),
    /// `url`, `host`, `hostname`, `pathname`, `port`, `search`, `method`, `origin`, `protocol`.
    Url(UrlPiece),
    /// `encodeURIComponent(...)` or `e(...)`.
    Encode(Box<Expr>),
}

/// A piece of the incoming request's URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlPiece {
    /// `url`.
    Url,
    /// `host`.
    Host,
    /// `hostname`.
    Hostname,
    /// `pathname`.
    Pathname,
    /// `port`.
    Port,
    /// `search`.
    Search,
    /// `method`.
    Method,
    /// `origin`.
    Origin,
    /// `protocol`.
    Protocol,
}

impl Expr {
    /// Whether the value comes from the operator (environment, custom code), not the client.
    pub fn is_trusted(&self) -> bool {
        matches!(self, Expr::Env(_) | Expr::Custom(_))
    }

    /// Whether the value is fixed once the gateway has started.
    pub fn is_static(&self) -> bool {
        matches!(self, Expr::Env(_))
    }
}

impl Template {
    /// Environment variables the template reads.
    pub fn env_vars(&self) -> Vec<&str> {
        let mut out = Vec::new();
        for p in &self.parts {
            if let Part::Expr { expr, .. } = p {
                collect_env(expr, &mut out);
            }
        }
        out
    }

    /// Whether the rendered value is the same for every request (literals and `env` only).
    pub fn is_static(&self) -> bool {
        self.parts.iter().all(|p| match p {
            Part::Lit(_) => true,
            Part::Expr { expr, .. } => expr.is_static(),
        })
    }
}

fn collect_env<'a>(e: &'a Expr, out: &mut Vec<&'a str>) {
    match e {
        Expr::Env(n) => out.push(n),
        Expr::Encode(inner) => collect_env(inner, out),
        _ => {}
    }
}

/// A problem at a byte range of the template text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Start offset in the template.
    pub offset: usize,
    /// Length.
    pub len: usize,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub help: Option<String>,
}

/// Result of parsing: the template (when there were no errors), errors and warnings.
#[derive(Debug, Default)]
pub struct Parsed {
    /// The template, `None` when there are errors.
    pub template: Option<Template>,
    /// Errors.
    pub errors: Vec<Issue>,
    /// Warnings.
    pub warnings: Vec<Issue>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Base,
    AfterBase,
    Authority,
    Path,
    Query,
}

impl State {
    fn place(self) -> Place {
        match self {
            State::Base | State::Authority => Place::Host,
            State::AfterBase | State::Path => Place::Path,
            State::Query => Place::Query,
        }
    }

    fn advance(mut self, text: &str) -> State {
        let mut rest = text;
        while !rest.is_empty() {
            match self {
                State::Base | State::AfterBase => {
                    if rest.starts_with("://") {
                        self = State::Authority;
                        rest = &rest[3..];
                        continue;
                    }
                    match rest.as_bytes()[0] {
                        b'/' => self = State::Path,
                        b'?' | b'#' => self = State::Query,
                        _ => {}
                    }
                }
                State::Authority => match rest.as_bytes()[0] {
                    b'/' => self = State::Path,
                    b'?' | b'#' => self = State::Query,
                    _ => {}
                },
                State::Path => {
                    if matches!(rest.as_bytes()[0], b'?' | b'#') {
                        self = State::Query;
                    }
                }
                State::Query => return self,
            }
            let n = rest.chars().next().map_or(1, char::len_utf8);
            rest = &rest[n..];
        }
        self
    }
}

/// Parses `text` for a route with parameters `params`.
pub fn parse(text: &str, params: &[ParamDef]) -> Parsed {
    let mut out = Parsed::default();
    let mut parts = Vec::new();
    let mut state = State::Base;
    let mut lit = String::new();
    let mut i = 0;
    let bytes = text.as_bytes();
    while i < bytes.len() {
        if text[i..].starts_with("${") {
            let Some(close) = text[i + 2..].find('}') else {
                out.errors.push(issue(i, text.len() - i, "unterminated `${` in template", Some("close the substitution with `}`")));
                break;
            };
            state = state.advance(&lit);
            if !lit.is_empty() {
                parts.push(Part::Lit(std::mem::take(&mut lit)));
            }
            let inner_start = i + 2;
            let inner = &text[inner_start..inner_start + close];
            match parse_expr(inner, inner_start, params) {
                Ok(expr) => {
                    let place = state.place();
                    if state == State::Base && expr.is_trusted() {
                        state = State::AfterBase;
                    }
                    parts.push(Part::Expr { expr, place });
                }
                Err(e) => out.errors.push(e),
            }
            i = inner_start + close + 1;
        } else if text[i..].starts_with("$env(") {
            let Some(close) = text[i..].find(')') else {
                out.errors.push(issue(i, text.len() - i, "unterminated `$env(` in template", None));
                break;
            };
            let name = &text[i + 5..i + close];
            if !is_env_name(name) {
                out.errors.push(issue(i + 5, name.len(), format!("`{name}` is not a valid environment variable name"), Some(ENV_NAME_HELP)));
            } else {
                out.warnings.push(issue(
                    i,
                    close + 1,
                    format!("`$env({name})` inside a URL template"),
                    Some(&format!("write `${{env.{name}}}` instead")),
                ));
                state = state.advance(&lit);
                if !lit.is_empty() {
                    parts.push(Part::Lit(std::mem::take(&mut lit)));
                }
                let place = state.place();
                if state == State::Base {
                    state = State::AfterBase;
                }
                parts.push(Part::Expr { expr: Expr::Env(name.to_owned()), place });
            }
            i += close + 1;
        } else {
            let c = text[i..].chars().next().unwrap_or('\0');
            if c == '\r' || c == '\n' {
                out.errors.push(issue(i, 1, "line breaks are not allowed in a URL template", None));
            }
            lit.push(c);
            i += c.len_utf8().max(1);
        }
    }
    if !lit.is_empty() {
        parts.push(Part::Lit(lit));
    }
    if out.errors.is_empty() {
        out.template = Some(Template { parts });
    }
    out
}

fn issue(offset: usize, len: usize, message: impl Into<String>, help: Option<&str>) -> Issue {
    Issue { offset, len: len.max(1), message: message.into(), help: help.map(str::to_owned) }
}

fn is_env_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !s.starts_with(|c: char| c.is_ascii_digit())
}

const ENV_NAME_HELP: &str = "environment variable names hold ASCII letters, digits and `_` and do not start with a digit";

const SUPPORTED: &str = "supported: params.x, query.x, headers.get(\"x\"), env.X, context.custom.x, \
request.user.sub, request.user.data.x, url, host, hostname, pathname, port, search, method, origin, \
protocol, encodeURIComponent(...), e(...)";

fn parse_expr(raw: &str, offset: usize, params: &[ParamDef]) -> Result<Expr, Issue> {
    let lead = raw.len() - raw.trim_start().len();
    let s = raw.trim();
    let at = offset + lead;
    let unsupported = |msg: String| issue(at, s.len(), msg, Some(SUPPORTED));
    if s.is_empty() {
        return Err(issue(offset.saturating_sub(2), raw.len() + 3, "empty substitution `${}`", None));
    }
    for f in ["encodeURIComponent(", "e("] {
        if let Some(inner) = s.strip_prefix(f).and_then(|r| r.strip_suffix(')')) {
            let inner_off = at + f.len();
            let e = parse_expr(inner, inner_off, params)?;
            return Ok(Expr::Encode(Box::new(e)));
        }
    }
    // `env.API-URL` would otherwise read as "not a supported expression": name the real problem.
    if let Some(name) = s.strip_prefix("env.").filter(|n| !n.is_empty() && !n.contains(['.', '[', '(', ' ']))
        && !is_env_name(name) {
            return Err(issue(at + 4, name.len(), format!("`{name}` is not a valid environment variable name"), Some(ENV_NAME_HELP)));
        }
    let path = split_member_path(s).ok_or_else(|| unsupported(format!("`{s}` is not a supported template expression")))?;
    let names: Vec<&str> = path.iter().map(String::as_str).collect();
    let piece = |p| Ok(Expr::Url(p));
    match names.as_slice() {
        ["params", name] | ["request", "params", name] => {
            match params.iter().position(|p| p.name == *name) {
                Some(index) => Ok(Expr::Param { index, multi_segment: params[index].multi_segment }),
                None => {
                    let known: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
                    let help = if known.is_empty() {
                        "this route's path captures no parameters".to_owned()
                    } else {
                        format!("this route's path captures: {}", known.join(", "))
                    };
                    Err(Issue { offset: at, len: s.len(), message: format!("unknown path parameter `{name}`"), help: Some(help) })
                }
            }
        }
        ["query", name] | ["request", "query", name] => Ok(Expr::Query((*name).to_owned())),
        ["headers", "get", name] | ["request", "headers", "get", name] => Ok(Expr::Header(name.to_ascii_lowercase())),
        ["env", name] | ["environment", name] => {
            if is_env_name(name) {
                Ok(Expr::Env((*name).to_owned()))
            } else {
                Err(issue(at, s.len(), format!("`{name}` is not a valid environment variable name"), Some(ENV_NAME_HELP)))
            }
        }
        ["context", "custom", name] => Ok(Expr::Custom((*name).to_owned())),
        ["request", "user", "sub"] => Ok(Expr::UserSub),
        ["request", "user", "data", name] => Ok(Expr::UserData((*name).to_owned())),
        ["url"] | ["request", "url"] => piece(UrlPiece::Url),
        ["host"] => piece(UrlPiece::Host),
        ["hostname"] => piece(UrlPiece::Hostname),
        ["pathname"] => piece(UrlPiece::Pathname),
        ["port"] => piece(UrlPiece::Port),
        ["search"] => piece(UrlPiece::Search),
        ["method"] | ["request", "method"] => piece(UrlPiece::Method),
        ["origin"] => piece(UrlPiece::Origin),
        ["protocol"] => piece(UrlPiece::Protocol),
        _ => Err(unsupported(format!("`{s}` is not a supported template expression"))),
    }
}

/// Splits `a.b["c"].get("d")` into `[a, b, c, get, d]`; `None` for anything else.
fn split_member_path(s: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    let ident = |i: &mut usize| -> Option<String> {
        let start = *i;
        while *i < b.len() && (b[*i].is_ascii_alphanumeric() || b[*i] == b'_' || b[*i] == b'$' || b[*i] == b'-') {
            *i += 1;
        }
        (start < *i).then(|| s[start..*i].to_owned())
    };
    let string = |i: &mut usize| -> Option<String> {
        let q = *b.get(*i)?;
        if q != b'"' && q != b'\'' && q != b'`' {
            return None;
        }
        let end = s[*i + 1..].find(q as char)? + *i + 1;
        let v = s[*i + 1..end].to_owned();
        *i = end + 1;
        Some(v)
    };
    out.push(ident(&mut i)?);
    while i < b.len() {
        match b[i] {
            b'.' => {
                i += 1;
                out.push(ident(&mut i)?);
            }
            b'?' if b.get(i + 1) == Some(&b'.') => {
                // Optional chaining reads the same here: a missing value renders empty.
                i += 2;
                out.push(ident(&mut i)?);
            }
            b'[' => {
                i += 1;
                out.push(string(&mut i)?);
                if b.get(i) != Some(&b']') {
                    return None;
                }
                i += 1;
            }
            b'(' if out.last().is_some_and(|l| l == "get") => {
                i += 1;
                let v = string(&mut i)?;
                if b.get(i) != Some(&b')') {
                    return None;
                }
                i += 1;
                out.push(v);
            }
            _ => return None,
        }
    }
    // A hyphen is only valid inside bracket strings; in dotted names it is an operator.
    if s.contains('-') && !s.contains('[') && !s.contains("get(") {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Vec<ParamDef> {
        vec![
            ParamDef { name: "id".into(), multi_segment: false },
            ParamDef { name: "path".into(), multi_segment: true },
        ]
    }

    fn ok(t: &str) -> Template {
        let p = parse(t, &params());
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        p.template.unwrap_or(Template { parts: vec![] })
    }

    fn places(t: &str) -> Vec<Place> {
        ok(t).parts.iter().filter_map(|p| match p { Part::Expr { place, .. } => Some(*place), _ => None }).collect()
    }

    #[test]
    fn places_follow_the_url_structure() {
        assert_eq!(places("${env.BASE}/v2/items/${params.id}?q=${query.q}"), [Place::Host, Place::Path, Place::Query]);
        assert_eq!(places("https://${params.id}.example.com/${params.path}"), [Place::Host, Place::Path]);
        assert_eq!(places("/new/${params.id}"), [Place::Path]);
        assert_eq!(places("${context.custom.downstreamUrl}${pathname}"), [Place::Host, Place::Path]);
        assert_eq!(places("${env.SCHEME}://${env.HOST}/${params.id}"), [Place::Host, Place::Host, Place::Path]);
    }

    #[test]
    fn expressions() {
        let t = ok(r#"x${headers.get("X-Tenant")}${request.user.data.plan}${e(query["a b"])}${params.path}"#);
        let exprs: Vec<Expr> = t.parts.into_iter().filter_map(|p| match p { Part::Expr { expr, .. } => Some(expr), _ => None }).collect();
        assert_eq!(
            exprs,
            vec![
                Expr::Header("x-tenant".into()),
                Expr::UserData("plan".into()),
                Expr::Encode(Box::new(Expr::Query("a b".into()))),
                Expr::Param { index: 1, multi_segment: true },
            ]
        );
        assert!(ok("https://a.b/${env.X}").env_vars() == ["X"]);
        assert!(ok("${env.A}/x").is_static());
        assert!(!ok("${env.A}/${params.id}").is_static());
    }

    #[test]
    fn errors_point_into_the_template() {
        let p = parse("${env.BASE}/x/${params.nope}", &params());
        assert_eq!(p.errors.len(), 1);
        assert_eq!((p.errors[0].offset, p.errors[0].len), (16, 11));
        assert!(p.errors[0].message.contains("unknown path parameter `nope`"));
        let p = parse("/a/${params.id + 1}", &params());
        assert_eq!(p.errors[0].offset, 5);
        assert!(parse("/a/${query.x", &params()).errors[0].message.contains("unterminated"));
        assert!(!parse("/a/${}", &params()).errors.is_empty());
        assert!(!parse("/a/${window.location}", &params()).errors.is_empty());
        assert!(!parse("/a/${a-b}", &params()).errors.is_empty());
    }

    #[test]
    fn dollar_env_is_accepted_with_a_warning() {
        let p = parse("$env(BASE_URL)/v1", &params());
        assert!(p.errors.is_empty());
        assert_eq!(p.warnings.len(), 1);
        assert_eq!(p.template.map(|t| t.env_vars().iter().map(|s| s.to_string()).collect::<Vec<_>>()), Some(vec!["BASE_URL".to_owned()]));
    }
}
