//! Route lookup: from a normalized request path and method to the first matching route.
//!
//! Generated crates describe their routes as a `&'static [RouteSpec]` (patterns are parsed at
//! generation time); `Router::new` indexes them once at start-up so that a lookup never scans
//! every route.

/// One piece of a path segment that mixes literals and captures, e.g. `get(` `{id}` `)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Literal text that must appear verbatim (already in normalized form).
    Lit(&'static str),
    /// A capture of one or more characters (never `/`).
    Param,
}

/// One `/`-separated segment of an open-api mode pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seg {
    /// A literal segment.
    Lit(&'static str),
    /// `{name}`: the whole segment, one or more characters.
    Param,
    /// `{+name}`: the rest of the path, slashes included (zero or more characters).
    Rest,
    /// A segment mixing literals and captures: `get({id})`, `{a}-{b}.json`.
    Mixed(&'static [Part]),
}

/// A route pattern as the generator emits it.
#[derive(Debug, Clone, Copy)]
pub enum Pattern {
    /// open-api mode: the pattern's segments after the leading `/`.
    Segments(&'static [Seg]),
    /// url-pattern mode, compiled by the generator to an anchored regular expression whose
    /// capture groups, in order, are the route's parameters. `prefix` holds the literal
    /// segments the pattern starts with (used to index the route).
    Regex {
        /// The anchored regular expression (`^...$`).
        regex: &'static str,
        /// Leading literal segments.
        prefix: &'static [&'static str],
    },
}

/// A route as the generator describes it.
#[derive(Debug, Clone, Copy)]
pub struct RouteSpec {
    /// Upper-case HTTP method (`GET`, `POST`, ...).
    pub method: &'static str,
    /// The path pattern.
    pub pattern: Pattern,
    /// Parameter names in capture order.
    pub params: &'static [&'static str],
}

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use http::Method;
use regex::Regex;

use crate::path::percent_decode;

/// Why [`Router::new`] rejected a route table (a start-up error, never a request error).
#[derive(Debug)]
pub enum RouterError {
    /// The route's regular expression does not compile.
    Regex {
        /// Index of the route in the table.
        route: usize,
        /// The pattern as the generator emitted it.
        regex: &'static str,
        /// What the `regex` crate reported.
        source: regex::Error,
    },
    /// A `Seg::Rest` that is not the pattern's last segment.
    RestNotLast {
        /// Index of the route in the table.
        route: usize,
    },
    /// The route's method is not a valid HTTP method token.
    InvalidMethod {
        /// Index of the route in the table.
        route: usize,
        /// The method as the generator emitted it.
        method: &'static str,
    },
}

impl fmt::Display for RouterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Regex {
                route,
                regex,
                source,
            } => {
                write!(
                    f,
                    "route {route}: invalid regular expression `{regex}`: {source}"
                )
            }
            Self::RestNotLast { route } => {
                write!(
                    f,
                    "route {route}: a `{{+rest}}` parameter must be the last segment"
                )
            }
            Self::InvalidMethod { route, method } => {
                write!(f, "route {route}: `{method}` is not a valid HTTP method")
            }
        }
    }
}

// The cause is already part of the message (people log `{err}`), so `source` stays `None`
// to keep error chains from printing it twice.
impl std::error::Error for RouterError {}

/// The outcome of [`Router::lookup`].
#[derive(Debug)]
pub enum Lookup<'a> {
    /// The first route (in table order) whose method and path match.
    Found {
        /// Index of the route in the table given to [`Router::new`].
        route: usize,
        /// The route's parameters, in capture order.
        params: Params<'a>,
    },
    /// Some routes match the path, none the method: answer 405 with this `Allow` list
    /// (distinct methods in route order, `HEAD` appended when `GET` is there).
    MethodNotAllowed {
        /// The methods the path accepts.
        allow: Vec<&'static str>,
    },
    /// No route matches the path.
    NotFound,
}

/// A byte range of the request path.
type Span = (usize, usize);

/// The parameters captured by a route: ranges into the request path, so capturing does not
/// allocate (up to four parameters are kept inline).
#[derive(Clone)]
pub struct Params<'a> {
    path: &'a str,
    spans: SmallBuf<Span, 4>,
}

impl<'a> Params<'a> {
    fn new(path: &'a str) -> Self {
        Self {
            path,
            spans: SmallBuf::new(),
        }
    }

    /// The `i`-th parameter, percent-decoded (lossy UTF-8); borrowed when nothing is encoded.
    pub fn get(&self, i: usize) -> Option<Cow<'a, str>> {
        self.raw(i).map(percent_decode)
    }

    /// The `i`-th parameter as it appears in the (normalized) path.
    pub fn raw(&self, i: usize) -> Option<&'a str> {
        let &(start, end) = self.spans.as_slice().get(i)?;
        self.path.get(start..end)
    }

    /// The number of parameters.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether the route captured no parameter.
    pub fn is_empty(&self) -> bool {
        self.spans.len() == 0
    }
}

impl fmt::Debug for Params<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries((0..self.len()).filter_map(|i| self.raw(i)))
            .finish()
    }
}

/// Indexes a route table for lookups that only test the routes that can possibly match.
///
/// The index is a trie over the literal segments patterns start with; every route hangs at
/// the node where its literal prefix ends. A lookup walks the trie along the path's
/// segments and tests only the routes hanging on that walk, in ascending route index, so
/// the first match in table order wins without scanning the table.
///
/// A regex route hangs at the node of its `prefix`, so it is only tried on paths whose
/// leading segments are exactly those literals: the generator must only put whole segments
/// the expression requires there. Routes whose first segment is dynamic hang at the root and
/// are tried on every lookup (cheaply rejected by method and segment count).
pub struct Router {
    routes: &'static [RouteSpec],
    compiled: Vec<Compiled>,
    nodes: Vec<Node>,
}

/// A route prepared for matching.
struct Compiled {
    method: Method,
    /// How many leading segments the trie has already compared (literal prefix length).
    depth: usize,
    matcher: Matcher,
}

enum Matcher {
    Segments {
        /// All segments; the first `depth` are literals the trie checked.
        segs: &'static [Seg],
        /// Without a `Rest`, the path must have exactly `segs.len()` segments.
        exact: bool,
    },
    /// Anchored at both ends when compiled.
    Regex(Regex),
}

struct Node {
    children: HashMap<&'static str, usize, BuildHasherDefault<FxHasher>>,
    /// Routes whose literal prefix ends here, ascending.
    routes: Vec<usize>,
}

impl Node {
    fn new() -> Self {
        Self {
            children: HashMap::default(),
            routes: Vec::new(),
        }
    }
}

/// Returns the child of `node` for the segment `lit`, creating it if needed.
fn descend(nodes: &mut Vec<Node>, node: usize, lit: &'static str) -> usize {
    let next = nodes.len();
    match nodes
        .get_mut(node)
        .map(|n| *n.children.entry(lit).or_insert(next))
    {
        Some(child) if child == next => {
            nodes.push(Node::new());
            child
        }
        Some(child) => child,
        // Unreachable: `node` always comes from this function or is the root.
        None => node,
    }
}

/// The pattern `/`: one empty segment, the same way the path `/` splits.
static ROOT_SEGS: [Seg; 1] = [Seg::Lit("")];

impl Router {
    /// Compiles regular expressions and builds the index.
    pub fn new(routes: &'static [RouteSpec]) -> Result<Router, RouterError> {
        let mut compiled = Vec::with_capacity(routes.len());
        let mut nodes = vec![Node::new()];
        for (route, spec) in routes.iter().enumerate() {
            let method = Method::from_bytes(spec.method.as_bytes()).map_err(|_| {
                RouterError::InvalidMethod {
                    route,
                    method: spec.method,
                }
            })?;
            let mut node = 0;
            let (depth, matcher) = match spec.pattern {
                Pattern::Segments(segs) => {
                    let segs: &'static [Seg] = if segs.is_empty() { &ROOT_SEGS } else { segs };
                    let exact = match segs.iter().position(|s| matches!(s, Seg::Rest)) {
                        None => true,
                        Some(p) if p + 1 == segs.len() => false,
                        Some(_) => return Err(RouterError::RestNotLast { route }),
                    };
                    let mut depth = 0;
                    for seg in segs {
                        let Seg::Lit(lit) = seg else { break };
                        node = descend(&mut nodes, node, lit);
                        depth += 1;
                    }
                    (depth, Matcher::Segments { segs, exact })
                }
                Pattern::Regex { regex, prefix } => {
                    // `\A(?:...)\z` makes "matched against the whole path" hold even if the
                    // generator forgot an anchor; group numbering is unchanged.
                    let re = Regex::new(&format!(r"\A(?:{regex})\z")).map_err(|source| {
                        RouterError::Regex {
                            route,
                            regex,
                            source,
                        }
                    })?;
                    for lit in prefix {
                        node = descend(&mut nodes, node, lit);
                    }
                    (prefix.len(), Matcher::Regex(re))
                }
            };
            if let Some(n) = nodes.get_mut(node) {
                n.routes.push(route);
            }
            compiled.push(Compiled {
                method,
                depth,
                matcher,
            });
        }
        Ok(Router {
            routes,
            compiled,
            nodes,
        })
    }

    /// The route table this router indexes.
    pub fn routes(&self) -> &'static [RouteSpec] {
        self.routes
    }

    /// Finds the first route (in table order) matching `method` and `path`, which must be
    /// normalized (see [`crate::path::normalize_path`]). `HEAD` falls back to `GET` routes.
    pub fn lookup<'p>(&self, method: &Method, path: &'p str) -> Lookup<'p> {
        if !path.starts_with('/') {
            return Lookup::NotFound;
        }
        // Each segment starts after a `/`, so this is the path's segment count.
        let nsegs = path.bytes().filter(|&b| b == b'/').count();
        let lists = self.candidates(path);
        let mut params = Params::new(path);

        let is_head = *method == Method::HEAD;
        let mut head_get = None;
        let mut merge = Merge::new(lists.as_slice());
        while let Some((route, off)) = merge.next() {
            let Some(c) = self.compiled.get(route) else {
                continue;
            };
            // The method check is cheaper than the pattern test, so it comes first.
            if c.method == *method {
                if c.matches(path, off, nsegs, &mut params.spans) {
                    return Lookup::Found { route, params };
                }
            } else if is_head
                && head_get.is_none()
                && c.method == Method::GET
                && c.matches(path, off, nsegs, &mut params.spans)
            {
                // Keep looking: an explicit HEAD route later in the table still wins.
                head_get = Some((route, off));
            }
        }
        if let Some((route, off)) = head_get
            && let Some(c) = self.compiled.get(route)
            && c.matches(path, off, nsegs, &mut params.spans)
        {
            return Lookup::Found { route, params };
        }

        // No match: 405 if other methods accept the path, else 404.
        let mut allow: Vec<&'static str> = Vec::new();
        merge.restart();
        while let Some((route, off)) = merge.next() {
            let (Some(c), Some(spec)) = (self.compiled.get(route), self.routes.get(route)) else {
                continue;
            };
            // Routes with the request's method were all tested above and failed.
            if c.method == *method || allow.contains(&spec.method) {
                continue;
            }
            if c.matches(path, off, nsegs, &mut params.spans) {
                allow.push(spec.method);
            }
        }
        if allow.is_empty() {
            return Lookup::NotFound;
        }
        if allow.contains(&"GET") && !allow.contains(&"HEAD") {
            allow.push("HEAD");
        }
        Lookup::MethodNotAllowed { allow }
    }

    /// Calls `f` with every route whose pattern matches `path` (normalized), whatever its
    /// method, in table order, until `f` returns true; returns whether it did. CORS uses it to
    /// learn which routes share a path (preflights name a method that is not the request's).
    pub fn any_route_at(&self, path: &str, mut f: impl FnMut(usize) -> bool) -> bool {
        if !path.starts_with('/') {
            return false;
        }
        let nsegs = path.bytes().filter(|&b| b == b'/').count();
        let lists = self.candidates(path);
        let mut spans = SmallBuf::new();
        let mut merge = Merge::new(lists.as_slice());
        while let Some((route, off)) = merge.next() {
            if let Some(c) = self.compiled.get(route)
                && c.matches(path, off, nsegs, &mut spans)
                && f(route)
            {
                return true;
            }
        }
        false
    }

    /// Walks the trie along the path's leading segments and returns the route lists met on
    /// the way, each with the byte offset of the first segment its routes still have to test.
    fn candidates(&self, path: &str) -> SmallBuf<(&[usize], usize), 8> {
        let mut lists = SmallBuf::new();
        let Some(mut node) = self.nodes.first() else {
            return lists;
        };
        let mut off = 1;
        loop {
            if !node.routes.is_empty() {
                lists.push((node.routes.as_slice(), off));
            }
            if node.children.is_empty() {
                break;
            }
            // `off` is past the end once the path has no segment left at this depth.
            let Some(rest) = path.get(off..) else { break };
            let len = rest.bytes().position(|b| b == b'/').unwrap_or(rest.len());
            let Some(seg) = rest.get(..len) else { break };
            match node
                .children
                .get(seg)
                .and_then(|&child| self.nodes.get(child))
            {
                Some(child) => {
                    node = child;
                    off += len + 1;
                }
                None => break,
            }
        }
        lists
    }
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("routes", &self.routes.len())
            .field("trie_nodes", &self.nodes.len())
            .finish()
    }
}

/// A k-way merge of the sorted route lists met along the trie walk, yielding route indices
/// in ascending order (k is the trie depth reached, so small), each with the offset of the
/// list it came from. It only moves cursors, so it can be restarted for a second pass.
struct Merge<'l, 'r> {
    lists: &'l [(&'r [usize], usize)],
    cursors: SmallBuf<usize, 8>,
}

impl<'l, 'r> Merge<'l, 'r> {
    fn new(lists: &'l [(&'r [usize], usize)]) -> Self {
        let mut cursors = SmallBuf::new();
        for _ in lists {
            cursors.push(0);
        }
        Self { lists, cursors }
    }

    fn restart(&mut self) {
        self.cursors.as_mut_slice().fill(0);
    }

    fn next(&mut self) -> Option<(usize, usize)> {
        let mut best: Option<(usize, usize)> = None;
        for (i, ((list, _), &cursor)) in self.lists.iter().zip(self.cursors.as_slice()).enumerate()
        {
            if let Some(&route) = list.get(cursor)
                && best.is_none_or(|(_, b)| route < b)
            {
                best = Some((i, route));
            }
        }
        let (i, route) = best?;
        let cursor = self.cursors.as_mut_slice().get_mut(i)?;
        *cursor += 1;
        Some((route, self.lists.get(i)?.1))
    }
}

impl Compiled {
    /// Tests the pattern; on success `spans` holds the captures. `off` is the byte offset of
    /// segment `depth` (the trie already compared the ones before), `nsegs` the path's
    /// segment count.
    fn matches(&self, path: &str, off: usize, nsegs: usize, spans: &mut SmallBuf<Span, 4>) -> bool {
        spans.truncate(0);
        match &self.matcher {
            Matcher::Segments { segs, exact } => {
                let count_ok = if *exact {
                    nsegs == segs.len()
                } else {
                    // A trailing Rest needs its slash, though it may capture nothing.
                    nsegs >= segs.len()
                };
                count_ok
                    && match_segments(path, segs.get(self.depth..).unwrap_or_default(), off, spans)
            }
            Matcher::Regex(re) => match_regex(re, path, spans),
        }
    }
}

/// Matches `segs` against the path from byte `pos` on; the segment count was checked.
fn match_segments(path: &str, segs: &[Seg], mut pos: usize, spans: &mut SmallBuf<Span, 4>) -> bool {
    for seg in segs {
        if let Seg::Rest = seg {
            if pos > path.len() {
                return false;
            }
            spans.push((pos, path.len()));
            return true;
        }
        let Some(rest) = path.get(pos..) else {
            return false;
        };
        let end = pos + rest.bytes().position(|b| b == b'/').unwrap_or(rest.len());
        let Some(segment) = path.get(pos..end) else {
            return false;
        };
        let ok = match seg {
            Seg::Lit(lit) => segment == *lit,
            Seg::Param => {
                let ok = !segment.is_empty();
                if ok {
                    spans.push((pos, end));
                }
                ok
            }
            Seg::Mixed(parts) => match_mixed(segment, pos, parts, spans),
            Seg::Rest => false,
        };
        if !ok {
            return false;
        }
        pos = end + 1;
    }
    true
}

fn match_regex(re: &Regex, path: &str, spans: &mut SmallBuf<Span, 4>) -> bool {
    // `is_match` needs no allocation, so candidates that fail stay cheap.
    if !re.is_match(path) {
        return false;
    }
    if re.captures_len() <= 1 {
        return true;
    }
    let mut locs = re.capture_locations();
    if re.captures_read(&mut locs, path).is_none() {
        return false;
    }
    for group in 1..locs.len() {
        // A group that did not participate captures the empty string.
        spans.push(locs.get(group).unwrap_or((0, 0)));
    }
    true
}

/// Matches one segment against literal and parameter parts: parameters take one or more
/// characters, as few as possible except the last part, which takes the rest; the first
/// successful assignment in that order wins (`{a}-{b}` on `x-y-z` gives `x`, `y-z`).
fn match_mixed(segment: &str, base: usize, parts: &[Part], spans: &mut SmallBuf<Span, 4>) -> bool {
    let mark = spans.len();
    // `failed[j] = p`: parameter part `j` cannot start a match at `p` or later (if it can't
    // end well starting at `p`, a later start only has fewer choices). Memoizing this keeps
    // backtracking polynomial instead of exponential in the number of parameters.
    let mut inline = [usize::MAX; 8];
    let mut heap = Vec::new();
    let failed: &mut [usize] = match inline.get_mut(..parts.len()) {
        Some(failed) => failed,
        None => {
            heap.resize(parts.len(), usize::MAX);
            &mut heap
        }
    };
    let ok = mixed_from(segment, base, parts, 0, 0, failed, spans);
    if !ok {
        spans.truncate(mark);
    }
    ok
}

fn mixed_from(
    segment: &str,
    base: usize,
    parts: &[Part],
    mut j: usize,
    mut p: usize,
    failed: &mut [usize],
    spans: &mut SmallBuf<Span, 4>,
) -> bool {
    while let Some(Part::Lit(lit)) = parts.get(j) {
        match segment.get(p..) {
            Some(rest) if rest.starts_with(lit) => {
                p += lit.len();
                j += 1;
            }
            _ => return false,
        }
    }
    if j >= parts.len() {
        return p == segment.len();
    }
    // `parts[j]` is a parameter.
    if failed.get(j).is_some_and(|&f| p >= f) {
        return false;
    }
    let Some(tail) = segment.get(p..) else {
        return false;
    };
    if j + 1 == parts.len() {
        if !tail.is_empty() {
            spans.push((base + p, base + segment.len()));
            return true;
        }
    } else {
        let mark = spans.len();
        for (k, ch) in tail.char_indices() {
            let end = p + k + ch.len_utf8();
            spans.push((base + p, base + end));
            if mixed_from(segment, base, parts, j + 1, end, failed, spans) {
                return true;
            }
            spans.truncate(mark);
        }
    }
    if let Some(f) = failed.get_mut(j) {
        *f = p;
    }
    false
}

/// A vector that keeps its first `N` elements inline, so the common case never allocates.
/// Invariant: it is in heap mode iff `heap` is non-empty, and then `len == heap.len()`.
#[derive(Clone)]
struct SmallBuf<T: Copy + Default, const N: usize> {
    inline: [T; N],
    len: usize,
    heap: Vec<T>,
}

impl<T: Copy + Default, const N: usize> SmallBuf<T, N> {
    fn new() -> Self {
        Self {
            inline: [T::default(); N],
            len: 0,
            heap: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn push(&mut self, value: T) {
        if self.heap.is_empty() {
            if let Some(slot) = self.inline.get_mut(self.len) {
                *slot = value;
                self.len += 1;
                return;
            }
            self.heap.extend_from_slice(&self.inline);
        }
        self.heap.push(value);
        self.len = self.heap.len();
    }

    fn truncate(&mut self, len: usize) {
        if len < self.len {
            self.len = len;
            self.heap.truncate(len);
        }
    }

    fn as_slice(&self) -> &[T] {
        if self.heap.is_empty() {
            self.inline.get(..self.len).unwrap_or_default()
        } else {
            &self.heap
        }
    }

    fn as_mut_slice(&mut self) -> &mut [T] {
        if self.heap.is_empty() {
            self.inline.get_mut(..self.len).unwrap_or_default()
        } else {
            &mut self.heap
        }
    }
}

/// FxHash (as in rustc): the trie's keys are the route table's own literals, not
/// attacker-chosen, so a fast non-keyed hash is safe and SipHash would dominate lookups.
#[derive(Default, Clone, Copy)]
struct FxHasher {
    hash: u64,
}

/// Little-endian `u64` from the first 8 bytes (0 if there are fewer).
fn read_u64(bytes: &[u8]) -> u64 {
    bytes
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_le_bytes)
}

/// Little-endian `u32` from the first 4 bytes (0 if there are fewer), widened.
fn read_u32(bytes: &[u8]) -> u64 {
    bytes
        .get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, |b| u64::from(u32::from_le_bytes(b)))
}

const FX_SEED: u64 = 0xf135_7aea_2e62_a9c5;

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.hash = (self.hash ^ word).wrapping_mul(FX_SEED).rotate_left(5);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Whole words, then the tail as one overlapping load: copying a short tail into a
        // zeroed buffer costs a `memcpy` call and a store-forwarding stall, which showed up
        // as a quarter of a lookup's time.
        let n = bytes.len();
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(read_u64(chunk));
        }
        let tail = match chunks.remainder().len() {
            0 => return,
            _ if n >= 8 => read_u64(bytes.get(n - 8..).unwrap_or_default()),
            4.. => {
                let lo = read_u32(bytes.get(..4).unwrap_or_default());
                let hi = read_u32(bytes.get(n - 4..).unwrap_or_default());
                lo | (hi << 32)
            }
            _ => {
                let at = |i: usize| u64::from(bytes.get(i).copied().unwrap_or_default());
                at(0) | (at(n / 2) << 8) | (at(n - 1) << 16)
            }
        };
        // The overlapping reads can coincide for different lengths; the length tells them apart.
        self.add(tail ^ ((n as u64) << 56));
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        // hashbrown takes the bucket from the low bits and a tag from the top 7; the
        // multiply mixes upward, so fold the well-mixed high bits down.
        self.hash.rotate_left(26)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_at_a_path_whatever_the_method() {
        let r = router(vec![
            route("GET", seg(&[Seg::Lit("items"), Seg::Param])),
            route("POST", seg(&[Seg::Lit("items")])),
            route("PUT", seg(&[Seg::Param, Seg::Param])),
            route("DELETE", seg(&[Seg::Lit("items"), Seg::Lit("x")])),
        ]);
        let mut seen = Vec::new();
        assert!(!r.any_route_at("/items/x", |i| {
            seen.push(i);
            false
        }));
        assert_eq!(seen, [0, 2, 3]);
        assert!(r.any_route_at("/items/x", |i| i == 2));
        assert!(!r.any_route_at("/nothing/here/at/all", |_| true));
        assert!(!r.any_route_at("relative", |_| true));
    }

    fn seg(pattern: &'static [Seg]) -> Pattern {
        Pattern::Segments(pattern)
    }

    fn route(method: &'static str, pattern: Pattern) -> RouteSpec {
        RouteSpec {
            method,
            pattern,
            params: &[],
        }
    }

    fn leak<T>(v: Vec<T>) -> &'static [T] {
        Box::leak(v.into_boxed_slice())
    }

    fn router(routes: Vec<RouteSpec>) -> Router {
        match Router::new(leak(routes)) {
            Ok(r) => r,
            Err(e) => panic!("router: {e}"),
        }
    }

    /// `Some((route, raw params))` for a match, `None` otherwise.
    fn found(r: &Router, method: Method, path: &str) -> Option<(usize, Vec<String>)> {
        match r.lookup(&method, path) {
            Lookup::Found { route, params } => Some((
                route,
                (0..params.len())
                    .map(|i| params.raw(i).unwrap_or("<missing>").to_owned())
                    .collect(),
            )),
            _ => None,
        }
    }

    fn hit(route: usize, params: &[&str]) -> Option<(usize, Vec<String>)> {
        Some((route, params.iter().map(|s| (*s).to_owned()).collect()))
    }

    #[test]
    fn literal_and_param_routes_keep_table_order() {
        let r = router(vec![
            route("GET", seg(&[Seg::Lit("users"), Seg::Param])),
            route("GET", seg(&[Seg::Lit("users"), Seg::Lit("me")])),
        ]);
        assert_eq!(found(&r, Method::GET, "/users/me"), hit(0, &["me"]));
        let r = router(vec![
            route("GET", seg(&[Seg::Lit("users"), Seg::Lit("me")])),
            route("GET", seg(&[Seg::Lit("users"), Seg::Param])),
        ]);
        assert_eq!(found(&r, Method::GET, "/users/me"), hit(0, &[]));
        assert_eq!(found(&r, Method::GET, "/users/42"), hit(1, &["42"]));
    }

    #[test]
    fn interleaved_literal_and_dynamic_routes() {
        let r = router(vec![
            route("GET", seg(&[Seg::Lit("a"), Seg::Param])),
            route("GET", seg(&[Seg::Lit("a"), Seg::Lit("b")])),
        ]);
        assert_eq!(found(&r, Method::GET, "/a/b"), hit(0, &["b"]));
        let r = router(vec![
            route("GET", seg(&[Seg::Lit("a"), Seg::Lit("b")])),
            route("GET", seg(&[Seg::Lit("a"), Seg::Param])),
        ]);
        assert_eq!(found(&r, Method::GET, "/a/b"), hit(0, &[]));
        let r = router(vec![
            route("GET", seg(&[Seg::Lit("a"), Seg::Lit("b"), Seg::Lit("c")])),
            route("GET", seg(&[Seg::Param, Seg::Lit("b"), Seg::Param])),
            route("GET", seg(&[Seg::Lit("a"), Seg::Param, Seg::Lit("c")])),
            route("GET", seg(&[Seg::Lit("a"), Seg::Lit("b"), Seg::Param])),
        ]);
        assert_eq!(found(&r, Method::GET, "/a/b/c"), hit(0, &[]));
        assert_eq!(found(&r, Method::GET, "/a/b/d"), hit(1, &["a", "d"]));
        assert_eq!(found(&r, Method::GET, "/a/x/c"), hit(2, &["x"]));
        assert_eq!(found(&r, Method::GET, "/a/x/d"), None);
    }

    #[test]
    fn root_and_trailing_slash() {
        let r = router(vec![
            route("GET", seg(&[])),
            route("GET", seg(&[Seg::Lit("users")])),
        ]);
        assert_eq!(found(&r, Method::GET, "/"), hit(0, &[]));
        assert_eq!(found(&r, Method::GET, "/users"), hit(1, &[]));
        assert_eq!(found(&r, Method::GET, "/users/"), None);
        assert_eq!(found(&r, Method::GET, "//"), None);
        assert_eq!(found(&r, Method::GET, ""), None);
        assert_eq!(found(&r, Method::GET, "users"), None);
        let r = router(vec![route("GET", seg(&[Seg::Lit("users"), Seg::Lit("")]))]);
        assert_eq!(found(&r, Method::GET, "/users/"), hit(0, &[]));
        assert_eq!(found(&r, Method::GET, "/users"), None);
    }

    #[test]
    fn params_must_be_non_empty() {
        let r = router(vec![route("GET", seg(&[Seg::Lit("users"), Seg::Param]))]);
        assert_eq!(found(&r, Method::GET, "/users/"), None);
        assert_eq!(found(&r, Method::GET, "/users/a/b"), None);
        assert_eq!(found(&r, Method::GET, "/users/a"), hit(0, &["a"]));
    }

    #[test]
    fn mixed_segments() {
        const A_DASH_B: &[Part] = &[Part::Param, Part::Lit("-"), Part::Param];
        const GET_CALL: &[Part] = &[Part::Lit("get("), Part::Param, Part::Lit(")")];
        const JSON: &[Part] = &[Part::Param, Part::Lit(".json")];
        let r = router(vec![
            route("GET", seg(&[Seg::Lit("m"), Seg::Mixed(A_DASH_B)])),
            route("GET", seg(&[Seg::Lit("f"), Seg::Mixed(GET_CALL)])),
            route("GET", seg(&[Seg::Lit("j"), Seg::Mixed(JSON)])),
        ]);
        assert_eq!(found(&r, Method::GET, "/m/x-y-z"), hit(0, &["x", "y-z"]));
        assert_eq!(found(&r, Method::GET, "/m/x-y"), hit(0, &["x", "y"]));
        assert_eq!(found(&r, Method::GET, "/m/-x-"), None);
        assert_eq!(found(&r, Method::GET, "/m/-x"), None);
        assert_eq!(found(&r, Method::GET, "/m/x-"), None);
        assert_eq!(found(&r, Method::GET, "/m/xy"), None);
        assert_eq!(found(&r, Method::GET, "/f/get(42)"), hit(1, &["42"]));
        assert_eq!(found(&r, Method::GET, "/f/get(a)b)"), hit(1, &["a)b"]));
        assert_eq!(found(&r, Method::GET, "/f/get()"), None);
        assert_eq!(found(&r, Method::GET, "/f/get(42"), None);
        assert_eq!(found(&r, Method::GET, "/j/a.b.json"), hit(2, &["a.b"]));
        assert_eq!(found(&r, Method::GET, "/j/.json"), None);
        assert_eq!(found(&r, Method::GET, "/j/é.json"), hit(2, &["é"]));
    }

    #[test]
    fn mixed_backtracking_stays_polynomial() {
        const MANY: &[Part] = &[
            Part::Param,
            Part::Lit("-"),
            Part::Param,
            Part::Lit("-"),
            Part::Param,
            Part::Lit("-"),
            Part::Param,
            Part::Lit("-"),
            Part::Param,
        ];
        const ADJACENT: &[Part] = &[Part::Param, Part::Param, Part::Param, Part::Lit("!")];
        let r = router(vec![
            route("GET", seg(&[Seg::Mixed(MANY), Seg::Lit("end")])),
            route("GET", seg(&[Seg::Lit("adj"), Seg::Mixed(ADJACENT)])),
        ]);
        // Exponential backtracking would never finish on these.
        let long = "-".repeat(4000);
        assert_eq!(
            found(&r, Method::GET, &format!("/{long}/end")),
            hit(0, &["-", "-", "-", "-", &"-".repeat(3992)])
        );
        assert_eq!(found(&r, Method::GET, &format!("/{long}x/nope")), None);
        let many = format!("/adj/{}", "a".repeat(3000));
        assert_eq!(found(&r, Method::GET, &many), None);
        assert_eq!(
            found(&r, Method::GET, "/adj/abcd!"),
            hit(1, &["a", "b", "cd"])
        );
    }

    #[test]
    fn rest_segments() {
        let r = router(vec![
            route("GET", seg(&[Seg::Lit("files"), Seg::Rest])),
            route("GET", seg(&[Seg::Rest])),
        ]);
        assert_eq!(found(&r, Method::GET, "/files/"), hit(0, &[""]));
        assert_eq!(found(&r, Method::GET, "/files/a/b"), hit(0, &["a/b"]));
        assert_eq!(found(&r, Method::GET, "/files/a/"), hit(0, &["a/"]));
        assert_eq!(found(&r, Method::GET, "/files"), hit(1, &["files"]));
        assert_eq!(found(&r, Method::GET, "/"), hit(1, &[""]));
        let r = router(vec![route(
            "GET",
            seg(&[Seg::Lit("files"), Seg::Param, Seg::Rest]),
        )]);
        assert_eq!(found(&r, Method::GET, "/files/x/"), hit(0, &["x", ""]));
        assert_eq!(found(&r, Method::GET, "/files/x"), None);
        assert!(matches!(
            Router::new(leak(vec![route("GET", seg(&[Seg::Rest, Seg::Lit("x")]))])),
            Err(RouterError::RestNotLast { route: 0 })
        ));
    }

    #[test]
    fn regex_routes() {
        let r = router(vec![
            route(
                "GET",
                Pattern::Regex {
                    regex: r"^/v1/items/(\d+)(?:/(\w+))?$",
                    prefix: &["v1", "items"],
                },
            ),
            route(
                "GET",
                Pattern::Regex {
                    regex: r"/(a|b)/(x)?(y)?",
                    prefix: &[],
                },
            ),
            route("GET", seg(&[Seg::Lit("v1"), Seg::Lit("items"), Seg::Param])),
        ]);
        assert_eq!(found(&r, Method::GET, "/v1/items/42"), hit(0, &["42", ""]));
        assert_eq!(
            found(&r, Method::GET, "/v1/items/42/abc"),
            hit(0, &["42", "abc"])
        );
        assert_eq!(found(&r, Method::GET, "/v1/items/x"), hit(2, &["x"]));
        // The anchors are added when the generator left them out.
        assert_eq!(found(&r, Method::GET, "/a/y"), hit(1, &["a", "", "y"]));
        assert_eq!(found(&r, Method::GET, "/b/"), hit(1, &["b", "", ""]));
        assert_eq!(found(&r, Method::GET, "/zz/a/xy"), None);
        assert_eq!(found(&r, Method::GET, "/a/xyz"), None);
        let bad = Router::new(leak(vec![
            route("GET", seg(&[])),
            route(
                "GET",
                Pattern::Regex {
                    regex: "(",
                    prefix: &[],
                },
            ),
        ]));
        assert!(matches!(bad, Err(RouterError::Regex { route: 1, .. })));
        assert!(
            bad.err()
                .is_some_and(|e| e.to_string().starts_with("route 1:"))
        );
    }

    #[test]
    fn method_not_allowed_lists_methods_in_route_order() {
        let r = router(vec![
            route("POST", seg(&[Seg::Lit("users")])),
            route("GET", seg(&[Seg::Lit("users"), Seg::Param])),
            route("DELETE", seg(&[Seg::Lit("users"), Seg::Param])),
            route("GET", seg(&[Seg::Lit("users")])),
            route("POST", seg(&[Seg::Param])),
            route("PUT", seg(&[Seg::Lit("other")])),
        ]);
        let allow = |m: Method, p: &str| match r.lookup(&m, p) {
            Lookup::MethodNotAllowed { allow } => Some(allow),
            _ => None,
        };
        assert_eq!(
            allow(Method::DELETE, "/users"),
            Some(vec!["POST", "GET", "HEAD"])
        );
        assert_eq!(
            allow(Method::PUT, "/users/1"),
            Some(vec!["GET", "DELETE", "HEAD"])
        );
        assert_eq!(allow(Method::GET, "/x"), Some(vec!["POST"]));
        assert!(matches!(
            r.lookup(&Method::GET, "/nope/nope"),
            Lookup::NotFound
        ));
        let odd = Method::from_bytes(b"PURGE").unwrap_or_default();
        assert_eq!(allow(odd, "/other"), Some(vec!["POST", "PUT"]));
    }

    #[test]
    fn head_is_served_by_get_routes() {
        let r = router(vec![
            route("GET", seg(&[Seg::Lit("a")])),
            route("HEAD", seg(&[Seg::Param])),
            route("GET", seg(&[Seg::Lit("b")])),
            route("HEAD", seg(&[Seg::Lit("c"), Seg::Lit("d")])),
        ]);
        // An explicit HEAD route wins even when it comes later than the GET route.
        assert_eq!(found(&r, Method::HEAD, "/a"), hit(1, &["a"]));
        assert_eq!(found(&r, Method::HEAD, "/c/x"), None);
        let r = router(vec![
            route("POST", seg(&[Seg::Lit("a")])),
            route("GET", seg(&[Seg::Lit("a"), Seg::Param])),
            route("GET", seg(&[Seg::Lit("a"), Seg::Lit("x")])),
        ]);
        assert_eq!(found(&r, Method::HEAD, "/a/x"), hit(1, &["x"]));
        assert!(matches!(
            r.lookup(&Method::HEAD, "/a"),
            Lookup::MethodNotAllowed { allow } if allow == ["POST"]
        ));
        // Allow lists that already name HEAD do not repeat it.
        let r = router(vec![
            route("HEAD", seg(&[Seg::Lit("a")])),
            route("GET", seg(&[Seg::Lit("a")])),
        ]);
        assert!(matches!(
            r.lookup(&Method::POST, "/a"),
            Lookup::MethodNotAllowed { allow } if allow == ["HEAD", "GET"]
        ));
    }

    #[test]
    fn params_are_percent_decoded() {
        let r = router(vec![
            route("GET", seg(&[Seg::Lit("users"), Seg::Param])),
            route("GET", seg(&[Seg::Lit("files"), Seg::Rest])),
        ]);
        let Lookup::Found { route: 0, params } = r.lookup(&Method::GET, "/users/a%20b") else {
            panic!("no match");
        };
        assert_eq!(params.len(), 1);
        assert!(!params.is_empty());
        assert_eq!(params.raw(0), Some("a%20b"));
        assert_eq!(params.get(0).as_deref(), Some("a b"));
        assert_eq!(params.get(1), None);
        assert_eq!(params.raw(1), None);
        let Lookup::Found { route: 1, params } = r.lookup(&Method::GET, "/files/a%2Fb/c%C3%A9")
        else {
            panic!("no match");
        };
        assert_eq!(params.get(0).as_deref(), Some("a/b/cé"));
        assert!(matches!(params.get(0), Some(Cow::Owned(_))));
        let Lookup::Found { params, .. } = r.lookup(&Method::GET, "/users/plain") else {
            panic!("no match");
        };
        assert!(matches!(params.get(0), Some(Cow::Borrowed("plain"))));
    }

    #[test]
    fn many_params_spill_to_the_heap() {
        static EIGHT: [Seg; 8] = [Seg::Param; 8];
        let r = router(vec![route("GET", seg(&EIGHT))]);
        let Lookup::Found { params, .. } = r.lookup(&Method::GET, "/1/2/3/4/5/6/7/8") else {
            panic!("no match");
        };
        let got: Vec<_> = (0..params.len()).filter_map(|i| params.raw(i)).collect();
        assert_eq!(got, ["1", "2", "3", "4", "5", "6", "7", "8"]);
        assert_eq!(
            format!("{params:?}"),
            r#"["1", "2", "3", "4", "5", "6", "7", "8"]"#
        );
    }

    #[test]
    fn deep_literal_prefixes() {
        static DEEP: [Seg; 12] = [Seg::Lit("x"); 12];
        static DEEP_P: [Seg; 13] = [
            Seg::Lit("x"),
            Seg::Lit("x"),
            Seg::Lit("x"),
            Seg::Lit("x"),
            Seg::Lit("x"),
            Seg::Lit("x"),
            Seg::Lit("x"),
            Seg::Lit("x"),
            Seg::Lit("x"),
            Seg::Lit("x"),
            Seg::Lit("x"),
            Seg::Lit("x"),
            Seg::Param,
        ];
        let mut routes = vec![route("GET", seg(&[Seg::Rest]))];
        for n in 1..=12 {
            routes.push(route("GET", seg(&DEEP[..n])));
        }
        routes.push(route("POST", seg(&DEEP_P)));
        let r = router(routes);
        let path = "/x".repeat(12);
        assert_eq!(found(&r, Method::GET, &path), hit(0, &[&path[1..]]));
        assert_eq!(
            found(&r, Method::POST, &format!("{path}/y")),
            hit(13, &["y"])
        );
    }

    #[test]
    fn invalid_method_is_rejected() {
        assert!(matches!(
            Router::new(leak(vec![route("GE T", seg(&[]))])),
            Err(RouterError::InvalidMethod { route: 0, .. })
        ));
    }

    // ----- randomized comparison with a naive linear scan -----

    /// SplitMix64: deterministic and dependency-free.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn pick<T: Copy>(&mut self, items: &[T]) -> T {
            items[self.below(items.len())]
        }
    }

    #[derive(Debug, PartialEq)]
    enum Expected {
        Found(usize, Vec<String>),
        NotAllowed(Vec<&'static str>),
        NotFound,
    }

    fn naive_mixed(s: &str, parts: &[Part]) -> Option<Vec<String>> {
        match parts.split_first() {
            None => s.is_empty().then(Vec::new),
            Some((Part::Lit(lit), rest)) => s.strip_prefix(lit).and_then(|s| naive_mixed(s, rest)),
            Some((Part::Param, [])) => (!s.is_empty()).then(|| vec![s.to_owned()]),
            Some((Part::Param, rest)) => {
                s.char_indices()
                    .map(|(i, c)| i + c.len_utf8())
                    .find_map(|end| {
                        naive_mixed(&s[end..], rest).map(|mut v| {
                            v.insert(0, s[..end].to_owned());
                            v
                        })
                    })
            }
        }
    }

    fn naive_match(spec: &RouteSpec, path: &str) -> Option<Vec<String>> {
        match spec.pattern {
            Pattern::Segments(segs) => {
                let segs: &[Seg] = if segs.is_empty() {
                    &[Seg::Lit("")]
                } else {
                    segs
                };
                let parts: Vec<&str> = path[1..].split('/').collect();
                let mut caps = Vec::new();
                for (k, seg) in segs.iter().enumerate() {
                    if let Seg::Rest = seg {
                        return (k < parts.len()).then(|| {
                            caps.push(parts[k..].join("/"));
                            caps
                        });
                    }
                    let s = parts.get(k)?;
                    match seg {
                        Seg::Lit(lit) if s == lit => {}
                        Seg::Param if !s.is_empty() => caps.push((*s).to_owned()),
                        Seg::Mixed(p) => caps.extend(naive_mixed(s, p)?),
                        _ => return None,
                    }
                }
                (parts.len() == segs.len()).then_some(caps)
            }
            Pattern::Regex { regex, .. } => {
                // Compiling is what makes this reference slow; the tables reuse few regexes.
                thread_local! {
                    static CACHE: std::cell::RefCell<HashMap<&'static str, Regex>> = Default::default();
                }
                let re = CACHE.with(|cache| {
                    let mut cache = cache.borrow_mut();
                    if !cache.contains_key(regex) {
                        cache.insert(regex, Regex::new(&format!("^(?:{regex})$")).ok()?);
                    }
                    cache.get(regex).cloned()
                })?;
                let c = re.captures(path)?;
                Some(
                    (1..c.len())
                        .map(|i| c.get(i).map_or("", |m| m.as_str()).to_owned())
                        .collect(),
                )
            }
        }
    }

    fn naive_lookup(routes: &[RouteSpec], method: &str, path: &str) -> Expected {
        let matching: Vec<(usize, &RouteSpec, Vec<String>)> = routes
            .iter()
            .enumerate()
            .filter_map(|(i, r)| naive_match(r, path).map(|c| (i, r, c)))
            .collect();
        if let Some((i, _, c)) = matching.iter().find(|(_, r, _)| r.method == method) {
            return Expected::Found(*i, c.clone());
        }
        if method == "HEAD"
            && let Some((i, _, c)) = matching.iter().find(|(_, r, _)| r.method == "GET")
        {
            return Expected::Found(*i, c.clone());
        }
        let mut allow: Vec<&'static str> = Vec::new();
        for (_, r, _) in &matching {
            if !allow.contains(&r.method) {
                allow.push(r.method);
            }
        }
        if allow.is_empty() {
            return Expected::NotFound;
        }
        if allow.contains(&"GET") && !allow.contains(&"HEAD") {
            allow.push("HEAD");
        }
        Expected::NotAllowed(allow)
    }

    fn actual(r: &Router, method: &str, path: &str) -> Expected {
        let method = Method::from_bytes(method.as_bytes()).unwrap_or_default();
        match r.lookup(&method, path) {
            Lookup::Found { route, params } => Expected::Found(
                route,
                (0..params.len())
                    .map(|i| params.raw(i).unwrap_or("<missing>").to_owned())
                    .collect(),
            ),
            Lookup::MethodNotAllowed { allow } => Expected::NotAllowed(allow),
            Lookup::NotFound => Expected::NotFound,
        }
    }

    const LITS: [&str; 5] = ["a", "b", "c", "a-b", ""];
    const PATH_SEGS: [&str; 12] = [
        "a", "b", "c", "a-b", "a-b-c", "xa", "x", "", "-", "a.json", "%20z", "é-x",
    ];
    const METHODS: [&str; 4] = ["GET", "POST", "HEAD", "PUT"];
    static MIXED: [&[Part]; 4] = [
        &[Part::Param, Part::Lit("-"), Part::Param],
        &[Part::Lit("x"), Part::Param],
        &[Part::Param, Part::Lit(".json")],
        &[Part::Param, Part::Param, Part::Lit("-"), Part::Param],
    ];
    const REGEX_TAILS: [&str; 5] = ["/([^/]+)", "(?:/([^/]+))?", "/(.*)", "(?:/(x)|/(a))", "/"];

    fn random_route(rng: &mut Rng) -> RouteSpec {
        let method = rng.pick(&METHODS);
        if rng.below(8) == 0 {
            let prefix: Vec<&'static str> = (0..rng.below(3))
                .map(|_| rng.pick(&["a", "b", "c"]))
                .collect();
            let regex: String =
                prefix.iter().map(|p| format!("/{p}")).collect::<String>() + rng.pick(&REGEX_TAILS);
            return route(
                method,
                Pattern::Regex {
                    regex: Box::leak(format!("^{regex}$").into_boxed_str()),
                    prefix: leak(prefix),
                },
            );
        }
        let n = rng.below(5);
        let segs: Vec<Seg> = (0..n)
            .map(|k| match rng.below(10) {
                0..=4 => Seg::Lit(rng.pick(&LITS)),
                5 | 6 => Seg::Param,
                7 => Seg::Mixed(rng.pick(&MIXED)),
                _ if k + 1 == n => Seg::Rest,
                _ => Seg::Lit(rng.pick(&LITS)),
            })
            .collect();
        route(method, Pattern::Segments(leak(segs)))
    }

    #[test]
    fn randomized_against_linear_scan() {
        let mut rng = Rng(0x5eed);
        let mut outcomes = [0usize; 3];
        for _ in 0..3000 {
            let routes = leak(
                (0..1 + rng.below(7))
                    .map(|_| random_route(&mut rng))
                    .collect(),
            );
            let r = match Router::new(routes) {
                Ok(r) => r,
                Err(e) => panic!("{e}"),
            };
            for _ in 0..24 {
                let path = format!(
                    "/{}",
                    (0..rng.below(5))
                        .map(|_| rng.pick(&PATH_SEGS))
                        .collect::<Vec<_>>()
                        .join("/")
                );
                let method = rng.pick(&["GET", "HEAD", "POST", "DELETE"]);
                let want = naive_lookup(routes, method, &path);
                let got = actual(&r, method, &path);
                assert_eq!(got, want, "{method} {path} on {routes:#?}");
                outcomes[match want {
                    Expected::Found(..) => 0,
                    Expected::NotAllowed(_) => 1,
                    Expected::NotFound => 2,
                }] += 1;
            }
        }
        // Make sure the generator exercises every outcome, not just 404s.
        assert!(outcomes.iter().all(|&n| n > 2000), "{outcomes:?}");
    }
}
