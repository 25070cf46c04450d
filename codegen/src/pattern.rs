//! Route path patterns: both path modes parsed at generation time.
//!
//! open-api mode (`/users/{id}`, `/users/get({id})`, `/files/{+path}`) becomes a list of
//! segments that the runtime matches without regular expressions; url-pattern mode (the
//! URLPattern subset real projects use: `:name`, `:name(\d+)`, `? * +`, `(.*)`, `{/}?`)
//! becomes one anchored regular expression.

use std::fmt::Write as _;

/// A parsed route path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedPath {
    /// How the runtime matches it.
    pub matcher: Matcher,
    /// Parameters in capture order.
    pub params: Vec<ParamDef>,
}

/// A captured parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamDef {
    /// Its name (`id` for `{id}` or `:id`; `0`, `1`, ... for unnamed URLPattern groups).
    pub name: String,
    /// Whether the value may contain `/` (`{+x}`, `:x*`, `:x+`, `(.*)`).
    pub multi_segment: bool,
}

/// How a route's path is matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    /// open-api mode segments (after the leading `/`).
    Segments(Vec<SegDef>),
    /// url-pattern mode: anchored regex and its leading literal segments.
    Regex {
        /// The regular expression, `^...$`.
        regex: String,
        /// Literal segments every match starts with.
        prefix: Vec<String>,
    },
}

/// One open-api mode segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegDef {
    /// Literal, normalized.
    Lit(String),
    /// `{x}`.
    Param,
    /// `{+x}`.
    Rest,
    /// Literals and captures in one segment.
    Mixed(Vec<PartDef>),
}

/// Piece of a mixed segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartDef {
    /// Literal, normalized.
    Lit(String),
    /// A capture.
    Param,
}

/// A problem in a path, at a byte offset of the path string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    /// Offset of the offending text in the path.
    pub offset: usize,
    /// Length of the offending text.
    pub len: usize,
    /// What is wrong.
    pub message: String,
}

fn err(offset: usize, len: usize, message: impl Into<String>) -> PatternError {
    PatternError { offset, len: len.max(1), message: message.into() }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '$'
}

/// Parses an open-api mode path.
pub fn parse_open_api(path: &str) -> Result<ParsedPath, PatternError> {
    if !path.starts_with('/') {
        return Err(err(0, 1, "a route path must start with `/`"));
    }
    let mut segs = Vec::new();
    let mut params: Vec<ParamDef> = Vec::new();
    let mut offset = 1;
    let body = &path[1..];
    let pieces: Vec<&str> = if body.is_empty() { Vec::new() } else { body.split('/').collect() };
    let count = pieces.len();
    for (i, seg) in pieces.into_iter().enumerate() {
        let parts = split_segment(seg, offset)?;
        let seg_def = match parts.as_slice() {
            [] => SegDef::Lit(String::new()),
            [Piece::Lit(l)] => SegDef::Lit(normalize_literal(l)),
            [Piece::Param { name, rest, at }] => {
                if *rest && i + 1 != count {
                    return Err(err(*at, name.len() + 3, "`{+name}` must be the last segment of the path"));
                }
                add_param(&mut params, name, *rest, *at)?;
                if *rest { SegDef::Rest } else { SegDef::Param }
            }
            many => {
                let mut out = Vec::new();
                let mut prev_param = false;
                for p in many {
                    match p {
                        Piece::Lit(l) => {
                            out.push(PartDef::Lit(normalize_literal(l)));
                            prev_param = false;
                        }
                        Piece::Param { name, rest, at } => {
                            if *rest {
                                return Err(err(*at, name.len() + 3, "`{+name}` must be a whole path segment"));
                            }
                            if prev_param {
                                return Err(err(*at, name.len() + 2, "two parameters next to each other cannot be told apart; put literal text between them"));
                            }
                            add_param(&mut params, name, false, *at)?;
                            out.push(PartDef::Param);
                            prev_param = true;
                        }
                    }
                }
                SegDef::Mixed(out)
            }
        };
        segs.push(seg_def);
        offset += seg.len() + 1;
    }
    Ok(ParsedPath { matcher: Matcher::Segments(segs), params })
}

enum Piece<'a> {
    Lit(&'a str),
    Param { name: &'a str, rest: bool, at: usize },
}

fn split_segment(seg: &str, base: usize) -> Result<Vec<Piece<'_>>, PatternError> {
    let mut out = Vec::new();
    let mut rest = seg;
    let mut pos = base;
    while !rest.is_empty() {
        match rest.find(['{', '}']) {
            None => {
                out.push(Piece::Lit(rest));
                break;
            }
            Some(i) if rest.as_bytes()[i] == b'}' => {
                return Err(err(pos + i, 1, "unmatched `}` in path"));
            }
            Some(i) => {
                if i > 0 {
                    out.push(Piece::Lit(&rest[..i]));
                }
                let after = &rest[i + 1..];
                let Some(close) = after.find('}') else {
                    return Err(err(pos + i, after.len() + 1, "unclosed `{` in path"));
                };
                let inner = &after[..close];
                let (is_rest, name) = match inner.strip_prefix('+') {
                    Some(n) => (true, n),
                    None => (false, inner),
                };
                if name.is_empty() || !name.chars().all(is_name_char) || name.contains('{') {
                    return Err(err(pos + i, close + 2, format!("`{{{inner}}}` is not a valid parameter")));
                }
                out.push(Piece::Param { name, rest: is_rest, at: pos + i });
                let consumed = i + 1 + close + 1;
                rest = &rest[consumed..];
                pos += consumed;
            }
        }
    }
    Ok(out)
}

fn add_param(params: &mut Vec<ParamDef>, name: &str, multi: bool, at: usize) -> Result<(), PatternError> {
    if params.iter().any(|p| p.name == name) {
        return Err(err(at, name.len() + 2, format!("parameter `{name}` appears twice in the path")));
    }
    params.push(ParamDef { name: name.to_owned(), multi_segment: multi });
    Ok(())
}

/// Puts literal path text in the form the runtime's path normalization produces: characters
/// a client has to percent-encode are encoded, encoded unreserved characters decoded, hex
/// digits upper-cased.
pub fn normalize_literal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' && i + 2 < bytes.len() {
            let hex = [bytes[i + 1], bytes[i + 2]];
            let decoded = std::str::from_utf8(&hex).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(v) = decoded {
                if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') {
                    out.push(v as char);
                } else {
                    let _ = write!(out, "%{v:02X}");
                }
                i += 3;
                continue;
            }
        }
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
        i += 1;
    }
    out
}

/// Parses a url-pattern mode path (the URLPattern pathname syntax).
pub fn parse_url_pattern(path: &str) -> Result<ParsedPath, PatternError> {
    if !path.starts_with('/') {
        return Err(err(0, 1, "a route path must start with `/`"));
    }
    let mut p = UrlPatternParser { src: path, pos: 0, params: Vec::new(), unnamed: 0 };
    let body = p.sequence(false)?;
    let regex = format!("^{body}$");
    if let Err(e) = regex::Regex::new(&regex) {
        return Err(err(0, path.len(), format!("the pattern does not compile to a regular expression: {}", first_line(&e.to_string()))));
    }
    // Leading literal segments, each terminated by `/`, index the route.
    let special = path.find([':', '(', '*', '{', '\\', '?', '+']).unwrap_or(path.len());
    let literal = &path[..special];
    let mut prefix: Vec<String> = literal[1..].split('/').map(normalize_literal).collect();
    if special < path.len() || !literal.ends_with('/') {
        // The last piece may continue past the literal text.
        prefix.pop();
    }
    if special == path.len() {
        // Fully literal: every segment is fixed.
        prefix = if path == "/" { Vec::new() } else { path[1..].split('/').map(normalize_literal).collect() };
    }
    Ok(ParsedPath { matcher: Matcher::Regex { regex, prefix }, params: p.params })
}

struct UrlPatternParser<'a> {
    src: &'a str,
    pos: usize,
    params: Vec<ParamDef>,
    unnamed: usize,
}

impl UrlPatternParser<'_> {
    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    /// Parses until the end, or until `}` when inside a group.
    fn sequence(&mut self, in_group: bool) -> Result<String, PatternError> {
        let mut out = String::new();
        let mut literal = String::new();
        while let Some(c) = self.peek() {
            match c {
                '}' if in_group => break,
                '}' => return Err(err(self.pos, 1, "unmatched `}` in pattern")),
                '\\' => {
                    self.bump();
                    match self.bump() {
                        Some(e) => literal.push(e),
                        None => return Err(err(self.pos - 1, 1, "`\\` at the end of the pattern")),
                    }
                }
                ':' | '(' | '*' => {
                    let start = self.pos;
                    let (name, inner, wildcard) = self.group_token()?;
                    let modifier = self.modifier();
                    let inner = inner.unwrap_or_else(|| if wildcard { ".*".to_owned() } else { "[^/]+?".to_owned() });
                    let multi = wildcard || inner.contains(".*") || inner.contains(".+") || matches!(modifier, Some('*' | '+'));
                    let name = match name {
                        Some(n) => n,
                        None => {
                            let n = self.unnamed.to_string();
                            self.unnamed += 1;
                            n
                        }
                    };
                    if self.params.iter().any(|p| p.name == name) {
                        return Err(err(start, self.pos - start, format!("parameter `{name}` appears twice in the pattern")));
                    }
                    self.params.push(ParamDef { name, multi_segment: multi });
                    // URLPattern: a `/` right before a modified group belongs to the group.
                    let slash = modifier.is_some() && literal.ends_with('/');
                    if slash {
                        literal.pop();
                    }
                    out.push_str(&regex::escape(&normalize_literal(&literal)));
                    literal.clear();
                    let pre = if slash { "/" } else { "" };
                    match modifier {
                        None => { let _ = write!(out, "({inner})"); }
                        Some('?') => { let _ = write!(out, "(?:{pre}({inner}))?"); }
                        Some('*') if slash => { let _ = write!(out, "(?:/((?:{inner})(?:/(?:{inner}))*))?"); }
                        Some('+') if slash => { let _ = write!(out, "(?:/((?:{inner})(?:/(?:{inner}))*))"); }
                        Some('*') => { let _ = write!(out, "((?:{inner})*)"); }
                        Some(_) => { let _ = write!(out, "((?:{inner})+)"); }
                    }
                }
                '{' => {
                    let start = self.pos;
                    self.bump();
                    if in_group {
                        return Err(err(start, 1, "groups `{...}` cannot be nested"));
                    }
                    out.push_str(&regex::escape(&normalize_literal(&literal)));
                    literal.clear();
                    let inner = self.sequence(true)?;
                    if self.bump() != Some('}') {
                        return Err(err(start, self.pos - start, "unclosed `{` in pattern"));
                    }
                    match self.modifier() {
                        None => out.push_str(&format!("(?:{inner})")),
                        Some(m) => out.push_str(&format!("(?:{inner}){m}")),
                    }
                }
                '?' | '+' => return Err(err(self.pos, 1, format!("`{c}` must follow a parameter, group or wildcard"))),
                _ => {
                    self.bump();
                    literal.push(c);
                }
            }
        }
        out.push_str(&regex::escape(&normalize_literal(&literal)));
        Ok(out)
    }

    /// `:name`, `:name(regex)`, `(regex)` or `*`.
    fn group_token(&mut self) -> Result<(Option<String>, Option<String>, bool), PatternError> {
        let start = self.pos;
        match self.bump() {
            Some('*') => Ok((None, None, true)),
            Some(':') => {
                let name_start = self.pos;
                while self.peek().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
                    self.bump();
                }
                let name = self.src[name_start..self.pos].to_owned();
                if name.is_empty() {
                    return Err(err(start, 1, "`:` must be followed by a parameter name"));
                }
                let inner = if self.peek() == Some('(') { Some(self.regex_group()?) } else { None };
                Ok((Some(name), inner, false))
            }
            _ => {
                self.pos = start;
                Ok((None, Some(self.regex_group()?), false))
            }
        }
    }

    fn regex_group(&mut self) -> Result<String, PatternError> {
        let start = self.pos;
        self.bump(); // (
        let mut depth = 1;
        let mut inner = String::new();
        while let Some(c) = self.bump() {
            match c {
                '\\' => {
                    inner.push('\\');
                    if let Some(n) = self.bump() {
                        inner.push(n);
                    }
                    continue;
                }
                '(' => {
                    if self.peek() != Some('?') {
                        return Err(err(self.pos - 1, 1, "capturing groups are not allowed inside a regular expression group; use `(?:...)`"));
                    }
                    depth += 1;
                }
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        if inner.is_empty() {
                            return Err(err(start, self.pos - start, "empty regular expression group"));
                        }
                        if let Err(e) = regex::Regex::new(&format!("^(?:{inner})$")) {
                            return Err(err(start, self.pos - start, format!("invalid regular expression: {}", first_line(&e.to_string()))));
                        }
                        return Ok(inner);
                    }
                }
                _ => {}
            }
            inner.push(c);
        }
        Err(err(start, self.src.len() - start, "unclosed `(` in pattern"))
    }

    fn modifier(&mut self) -> Option<char> {
        match self.peek() {
            Some(m @ ('?' | '*' | '+')) => {
                self.bump();
                Some(m)
            }
            _ => None,
        }
    }
}

fn first_line(s: &str) -> String {
    let line = s.lines().rev().find(|l| l.starts_with("error:")).unwrap_or(s.lines().next().unwrap_or(s));
    line.strip_prefix("error:").unwrap_or(line).trim().to_owned()
}

/// Whether every path `later` matches is matched by `earlier` (so `later` is unreachable for
/// the same method). Conservative: `false` when unsure.
pub fn covers(earlier: &ParsedPath, later: &ParsedPath) -> bool {
    match (&earlier.matcher, &later.matcher) {
        (Matcher::Segments(a), Matcher::Segments(b)) => segments_cover(a, b),
        (Matcher::Regex { regex: ra, .. }, Matcher::Regex { regex: rb, .. }) => ra == rb,
        (Matcher::Regex { regex, .. }, Matcher::Segments(b)) => match literal_path(b) {
            Some(p) => regex::Regex::new(regex).is_ok_and(|r| r.is_match(&p)),
            None => false,
        },
        (Matcher::Segments(a), Matcher::Regex { regex, .. }) => {
            // A fully literal url-pattern route is a single path.
            let lit = regex.strip_prefix('^').and_then(|r| r.strip_suffix('$')).map(unescape_literal_regex);
            match lit {
                Some(Some(p)) => {
                    let segs: Vec<SegDef> = if p == "/" { Vec::new() } else { p[1..].split('/').map(|s| SegDef::Lit(s.to_owned())).collect() };
                    segments_cover(a, &segs)
                }
                _ => false,
            }
        }
    }
}

fn literal_path(segs: &[SegDef]) -> Option<String> {
    let mut p = String::new();
    for s in segs {
        match s {
            SegDef::Lit(l) => {
                p.push('/');
                p.push_str(l);
            }
            _ => return None,
        }
    }
    if p.is_empty() { Some("/".into()) } else { Some(p) }
}

/// The literal a regex matches when it has no metacharacters (after unescaping).
fn unescape_literal_regex(r: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = r.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '(' | ')' | '[' | ']' | '?' | '*' | '+' | '{' | '}' | '|' | '^' | '$' | '.' => return None,
            _ => out.push(c),
        }
    }
    Some(out)
}

fn segments_cover(a: &[SegDef], b: &[SegDef]) -> bool {
    for (i, sa) in a.iter().enumerate() {
        if *sa == SegDef::Rest {
            return true;
        }
        let Some(sb) = b.get(i) else { return false };
        let ok = match (sa, sb) {
            (SegDef::Lit(x), SegDef::Lit(y)) => x == y,
            (SegDef::Param, SegDef::Lit(y)) => !y.is_empty(),
            (SegDef::Param, SegDef::Param | SegDef::Mixed(_)) => true,
            (SegDef::Mixed(x), SegDef::Mixed(y)) => x == y,
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    a.len() == b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(p: &str) -> Vec<SegDef> {
        match parse_open_api(p).map(|p| p.matcher) {
            Ok(Matcher::Segments(s)) => s,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn open_api_segments() {
        assert_eq!(segs("/"), vec![]);
        assert_eq!(segs("/users/{id}"), vec![SegDef::Lit("users".into()), SegDef::Param]);
        assert_eq!(
            segs("/users/get({id})"),
            vec![SegDef::Lit("users".into()), SegDef::Mixed(vec![PartDef::Lit("get(".into()), PartDef::Param, PartDef::Lit(")".into())])]
        );
        assert_eq!(segs("/files/{+path}"), vec![SegDef::Lit("files".into()), SegDef::Rest]);
        assert_eq!(segs("/a b/%7e"), vec![SegDef::Lit("a%20b".into()), SegDef::Lit("~".into())]);
        let p = parse_open_api("/x/{a}-{b}.json").unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(p.params.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn open_api_errors_point_at_the_problem() {
        let e = parse_open_api("/users/{id").err().map(|e| (e.offset, e.message));
        assert_eq!(e, Some((7, "unclosed `{` in path".into())));
        assert_eq!(parse_open_api("/a/{+rest}/b").err().map(|e| e.offset), Some(3));
        assert_eq!(parse_open_api("/a/{x}/{x}").err().map(|e| e.offset), Some(7));
        assert_eq!(parse_open_api("/a/{x}{y}").err().map(|e| e.offset), Some(6));
        assert!(parse_open_api("users").is_err());
        assert!(parse_open_api("/a/{}").is_err());
        assert!(parse_open_api("/a/b}").is_err());
    }

    fn rx(p: &str) -> (String, Vec<String>, Vec<String>) {
        match parse_url_pattern(p) {
            Ok(ParsedPath { matcher: Matcher::Regex { regex, prefix }, params }) => {
                (regex, prefix, params.into_iter().map(|p| p.name).collect())
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn url_patterns_compile_to_regexes() {
        let (r, prefix, params) = rx("/api/users/:id(\\d+)");
        assert_eq!(r, "^/api/users/(\\d+)$");
        assert_eq!(prefix, ["api", "users"]);
        assert_eq!(params, ["id"]);
        let re = |p: &str| regex::Regex::new(&rx(p).0).unwrap_or_else(|e| panic!("{e}"));
        let optional = re("/books/:id?");
        assert!(optional.is_match("/books") && optional.is_match("/books/1") && !optional.is_match("/books/"));
        let slash = re("/v1{/}?");
        assert!(slash.is_match("/v1") && slash.is_match("/v1/"));
        let star = re("/files/:path*");
        assert!(star.is_match("/files") && star.is_match("/files/a/b"));
        let wild = re("/static/*");
        assert!(wild.is_match("/static/x/y.css"));
        assert_eq!(rx("/static/*").2, ["0"]);
        assert_eq!(rx("/v1{/}?").1, Vec::<String>::new());
    }

    #[test]
    fn url_pattern_errors() {
        assert!(parse_url_pattern("/a/:").is_err());
        assert!(parse_url_pattern("/a/(\\d+").is_err());
        assert!(parse_url_pattern("/a/(a(b))").is_err());
        assert!(parse_url_pattern("/a/?").is_err());
        assert!(parse_url_pattern("/a/:x/:x").is_err());
        assert!(parse_url_pattern("/a/(?<=x)y").is_err());
    }

    #[test]
    fn shadowing() {
        let p = |s| parse_open_api(s).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(covers(&p("/a/{x}"), &p("/a/b")));
        assert!(covers(&p("/a/{x}"), &p("/a/{y}")));
        assert!(!covers(&p("/a/b"), &p("/a/{x}")));
        assert!(covers(&p("/a/{+rest}"), &p("/a/b/c")));
        assert!(!covers(&p("/a/{x}"), &p("/a/{+rest}")));
        assert!(!covers(&p("/a/{x}"), &p("/a/b/c")));
        let u = |s| parse_url_pattern(s).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(covers(&u("/a/:x"), &p("/a/b")));
        assert!(covers(&p("/a/{x}"), &u("/a/b")));
        assert!(!covers(&u("/a/:x(\\d+)"), &p("/a/b")));
    }
}
