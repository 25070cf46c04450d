//! Environment variables: `.env` files, `$env(X)` / `${env.X}` resolution at start-up.
//!
//! Values are read once when the gateway starts and never baked into the binary. A missing
//! variable does not stop the read: every missing name is collected so the operator sees the
//! whole list in one message.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

static GLOBAL: std::sync::OnceLock<Environment> = std::sync::OnceLock::new();

/// A variable as custom code reads it (`environment.X` in Zuplo): the process environment,
/// then the `.env` files the gateway read at start-up.
pub fn var(name: &str) -> Option<String> {
    match GLOBAL.get() {
        Some(env) => env.get(name),
        None => std::env::var(name).ok(),
    }
}

/// Makes `env` the one [`var`] reads (done once at start-up).
pub fn set_global(env: Environment) {
    let _ = GLOBAL.set(env);
}

/// The variables visible to the gateway: the process environment over `.env` values.
#[derive(Debug, Default, Clone)]
pub struct Environment {
    dotenv: HashMap<String, String>,
    loaded_from: Vec<PathBuf>,
}

impl Environment {
    /// Reads `.env` from the working directory and from the executable's directory (the
    /// working directory's file wins on conflicts; the process environment wins over both).
    pub fn load() -> Self {
        let mut env = Environment::default();
        let mut candidates = Vec::new();
        if let Ok(cwd) = std::env::current_dir() {
            candidates.push(cwd.join(".env"));
        }
        if let Some(dir) = std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf)) {
            candidates.push(dir.join(".env"));
        }
        for path in candidates {
            if env.loaded_from.contains(&path) {
                continue;
            }
            if let Ok(text) = std::fs::read_to_string(&path) {
                for (k, v) in parse_dotenv(&text) {
                    env.dotenv.entry(k).or_insert(v);
                }
                env.loaded_from.push(path);
            }
        }
        env
    }

    /// An environment with only the given `.env`-style values (tests).
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Environment {
            dotenv: pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
            loaded_from: Vec::new(),
        }
    }

    /// The `.env` files that were read.
    pub fn loaded_from(&self) -> &[PathBuf] {
        &self.loaded_from
    }

    /// Looks a variable up: process environment first, then `.env`.
    pub fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().or_else(|| self.dotenv.get(name).cloned())
    }

    /// Starts a start-up read that collects every missing variable.
    pub fn reader(&self) -> Reader<'_> {
        Reader { env: self, scope: None, missing: BTreeSet::new(), invalid: Vec::new() }
    }

    /// A start-up read for one gateway of a federated build: `SCOPE__NAME` (e.g.
    /// `ORDERS__BACKEND_URL` for the gateway `orders`) wins over `NAME`, so gateways that use
    /// the same variable name can be given different values.
    pub fn scoped_reader(&self, scope: &str) -> Reader<'_> {
        Reader { env: self, scope: Some(format!("{scope}__")), missing: BTreeSet::new(), invalid: Vec::new() }
    }
}

/// Reads the variables a gateway needs, remembering the ones that are missing.
#[derive(Debug)]
pub struct Reader<'a> {
    env: &'a Environment,
    /// `SCOPE__` of a federated build's gateway, tried before each plain name.
    scope: Option<String>,
    missing: BTreeSet<String>,
    invalid: Vec<String>,
}

impl Reader<'_> {
    fn get(&self, name: &str) -> Option<String> {
        if let Some(scope) = &self.scope
            && let Some(v) = self.env.get(&format!("{scope}{name}"))
        {
            return Some(v);
        }
        self.env.get(name)
    }

    /// A required variable. When missing, records it and returns an empty value so that the
    /// rest of the configuration can still be read and every missing name reported at once.
    pub fn required(&mut self, name: &str) -> Arc<str> {
        match self.get(name) {
            Some(v) => Arc::from(v),
            None => {
                self.missing.insert(name.to_owned());
                Arc::from("")
            }
        }
    }

    /// An optional variable.
    pub fn optional(&self, name: &str) -> Option<String> {
        self.get(name)
    }

    /// Checks a start-up value that must be an absolute `http://` or `https://` URL
    /// (an upstream base or a rewrite target made of literals and variables).
    pub fn check_upstream_url(&mut self, what: &str, value: &str) {
        if self.missing.is_empty()
            && let Err(why) = check_url(value) {
                self.invalid.push(format!("{what} is `{value}`: {why}"));
            }
    }

    /// Checks a start-up value that is sent as a header value (a redirect location).
    pub fn check_header_value(&mut self, what: &str, value: &str) {
        if value.bytes().any(|b| b.is_ascii_control()) {
            self.invalid.push(format!("{what} contains control characters"));
        }
    }

    /// Policy options as `policies.json` wrote them (JSON text emitted by the generator), with
    /// every `$env(NAME)` inside a string replaced by the variable's value. A string that is
    /// only `$env(NAME)` may also become a number or a boolean (`"$env(LIMIT)"` → `100`) so
    /// typed options can come from the environment.
    pub fn resolve_options(&mut self, json: &str) -> serde_json::Value {
        let mut value: serde_json::Value = serde_json::from_str(json).unwrap_or(serde_json::Value::Null);
        self.resolve_value(&mut value);
        value
    }

    fn resolve_value(&mut self, v: &mut serde_json::Value) {
        use serde_json::Value;
        match v {
            Value::String(s) if s.contains("$env(") => {
                let whole = s.strip_prefix("$env(").and_then(|r| r.strip_suffix(')')).filter(|n| !n.contains(['(', ')']));
                let replaced = substitute(s, |name| self.lookup(name));
                *v = match whole {
                    Some(_) => match serde_json::from_str::<Value>(&replaced) {
                        Ok(n @ (Value::Number(_) | Value::Bool(_))) => n,
                        _ => Value::String(replaced),
                    },
                    None => Value::String(replaced),
                };
            }
            Value::Array(items) => items.iter_mut().for_each(|i| self.resolve_value(i)),
            Value::Object(map) => map.values_mut().for_each(|i| self.resolve_value(i)),
            _ => {}
        }
    }

    fn lookup(&mut self, name: &str) -> String {
        match self.get(name) {
            Some(v) => v,
            None => {
                self.missing.insert(name.to_owned());
                String::new()
            }
        }
    }

    /// Builds a built-in policy from its options (after `$env` resolution). Problems are
    /// recorded and reported with the policy name at the end of start-up.
    pub fn policy<T: crate::policy::FromOptions>(&mut self, name: &str, json: &str) -> Option<T> {
        let value = self.resolve_options(json);
        if !self.missing.is_empty() {
            return None;
        }
        let options = match serde_json::from_value::<T::Options>(value) {
            Ok(o) => o,
            Err(e) => {
                self.invalid.push(format!("options of policy `{name}`: {e}"));
                return None;
            }
        };
        match T::from_options(options, name) {
            Ok(p) => Some(p),
            Err(e) => {
                self.invalid.push(format!("policy `{name}`: {e}"));
                None
            }
        }
    }

    /// The value of a start-up step that may fail (e.g. compiling a policy's schemas); a
    /// failure is recorded for policy `name` and reported with the others.
    pub fn check<T>(&mut self, name: &str, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.invalid.push(format!("policy `{name}`: {e}"));
                None
            }
        }
    }

    /// Deserializes the options of custom code once at start-up (after `$env` resolution).
    pub fn options<T: serde::de::DeserializeOwned>(&mut self, name: &str, json: &str) -> Option<T> {
        let value = self.resolve_options(json);
        match serde_json::from_value::<T>(value) {
            Ok(o) => Some(o),
            Err(e) => {
                self.invalid.push(format!("options of `{name}`: {e}"));
                None
            }
        }
    }

    /// Ends the read: an error naming every missing variable and invalid value, if any.
    pub fn finish(self) -> Result<(), StartupError> {
        if self.missing.is_empty() && self.invalid.is_empty() {
            Ok(())
        } else {
            Err(StartupError { missing: self.missing.into_iter().collect(), invalid: self.invalid })
        }
    }
}

/// Replaces every `$env(NAME)` in `s` with `lookup(NAME)`.
fn substitute(s: &str, mut lookup: impl FnMut(&str) -> String) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("$env(") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 5..];
        match after.find(')') {
            Some(end) if !after[..end].is_empty() && after[..end].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') => {
                out.push_str(&lookup(&after[..end]));
                rest = &after[end + 1..];
            }
            _ => {
                out.push_str("$env(");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn check_url(value: &str) -> Result<(), &'static str> {
    if value.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err("it contains spaces or control characters");
    }
    let uri: http::Uri = value.parse().map_err(|_| "it is not a valid URL")?;
    match uri.scheme_str() {
        Some("http" | "https" | "ws" | "wss") if uri.authority().is_some() => Ok(()),
        Some(s) if s.eq_ignore_ascii_case(crate::federation::SCHEME) && uri.host().is_some_and(|h| !h.is_empty()) => Ok(()),
        _ => Err("it is not an absolute http(s)://, ws(s):// or local:// URL"),
    }
}

/// Start-up failed: variables are not set or values are unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupError {
    /// The missing names, sorted.
    pub missing: Vec<String>,
    /// Descriptions of unusable values.
    pub invalid: Vec<String>,
}

impl std::fmt::Display for StartupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.missing.is_empty() {
            write!(
                f,
                "missing environment variable{}: {} (set them in the environment or in a .env file)",
                if self.missing.len() == 1 { "" } else { "s" },
                self.missing.join(", ")
            )?;
        }
        for (i, inv) in self.invalid.iter().enumerate() {
            if i > 0 || !self.missing.is_empty() {
                f.write_str("; ")?;
            }
            write!(f, "invalid configuration: {inv}")?;
        }
        Ok(())
    }
}

impl std::error::Error for StartupError {}

/// Parses `.env` text: `KEY=VALUE` lines, optional `export `, `#` comments, single or double
/// quotes (double quotes understand `\n`, `\"` and `\\`).
pub fn parse_dotenv(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else { continue };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let value = value.trim();
        let value = if let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            let mut s = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    match chars.next() {
                        Some('n') => s.push('\n'),
                        Some('r') => s.push('\r'),
                        Some('t') => s.push('\t'),
                        Some(o) => s.push(o),
                        None => s.push('\\'),
                    }
                } else {
                    s.push(c);
                }
            }
            s
        } else if let Some(inner) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
            inner.to_owned()
        } else {
            // An unquoted value ends at an inline comment.
            match value.find(" #") {
                Some(i) => value[..i].trim_end().to_owned(),
                None => value.to_owned(),
            }
        };
        out.push((key.to_owned(), value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dotenv_forms() {
        let parsed = parse_dotenv(
            "# comment\nA=1\nexport B = two words # note\nC=\"line\\nbreak\"\nD='$raw'\nbad line\n=x\n",
        );
        assert_eq!(
            parsed,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "line\nbreak".into()),
                ("D".into(), "$raw".into()),
            ]
        );
    }

    #[test]
    fn reader_reports_every_missing_variable() {
        let env = Environment::from_pairs([("SPECGATE_TEST_PRESENT", "yes")]);
        let mut r = env.reader();
        assert_eq!(&*r.required("SPECGATE_TEST_PRESENT"), "yes");
        r.required("SPECGATE_TEST_MISSING_B");
        r.required("SPECGATE_TEST_MISSING_A");
        let err = r.finish().err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(
            err,
            "missing environment variables: SPECGATE_TEST_MISSING_A, SPECGATE_TEST_MISSING_B \
             (set them in the environment or in a .env file)"
        );
    }
}

#[cfg(test)]
mod scope_tests {
    use super::*;

    #[test]
    fn a_scoped_name_wins_over_the_plain_one() {
        let env = Environment::from_pairs([("SPECGATE_T_URL", "plain"), ("ORDERS__SPECGATE_T_URL", "scoped"), ("SPECGATE_T_OTHER", "o")]);
        let mut r = env.scoped_reader("ORDERS");
        assert_eq!(&*r.required("SPECGATE_T_URL"), "scoped");
        assert_eq!(&*r.required("SPECGATE_T_OTHER"), "o");
        assert_eq!(r.resolve_options(r#""$env(SPECGATE_T_URL)""#), "scoped");
        let mut plain = env.reader();
        assert_eq!(&*plain.required("SPECGATE_T_URL"), "plain");
        r.required("SPECGATE_T_MISSING");
        assert_eq!(r.finish().err().map(|e| e.missing).unwrap_or_default(), ["SPECGATE_T_MISSING"]);
    }
}

#[cfg(test)]
mod url_tests {
    use super::*;

    #[test]
    fn startup_urls_are_checked() {
        let env = Environment::from_pairs([("X", "1")]);
        let mut r = env.reader();
        r.check_upstream_url("baseUrl of a", "http://127.0.0.1:8080/base");
        r.check_upstream_url("baseUrl of b", "localhost:8080");
        r.check_upstream_url("baseUrl of c", "http://x\r\nHost: y");
        r.check_upstream_url("baseUrl of d", "local://orders");
        r.check_upstream_url("baseUrl of e", "local://orders/v2");
        let err = r.finish().err().map(|e| e.invalid).unwrap_or_default();
        assert_eq!(err.len(), 2);
        assert!(err[0].starts_with("baseUrl of b"));
    }
}

#[cfg(test)]
mod option_tests {
    use super::*;

    #[test]
    fn env_references_in_options_resolve_at_any_depth() {
        let env = Environment::from_pairs([("SECRET", "s3cr3t"), ("LIMIT", "100"), ("FLAG", "true")]);
        let mut r = env.reader();
        let v = r.resolve_options(r#"{"headers":[{"name":"x","value":"Bearer $env(SECRET)"}],"n":"$env(LIMIT)","b":"$env(FLAG)","keep":"$env(","s":"$env(LIMIT)x"}"#);
        assert_eq!(v["headers"][0]["value"], "Bearer s3cr3t");
        assert_eq!(v["n"], 100);
        assert_eq!(v["b"], true);
        assert_eq!(v["keep"], "$env(");
        assert_eq!(v["s"], "100x");
        r.resolve_options(r#"["$env(NOPE_A)", {"x": "$env(NOPE_B)"}]"#);
        let err = r.finish().err().map(|e| e.missing).unwrap_or_default();
        assert_eq!(err, ["NOPE_A", "NOPE_B"]);
    }
}
