//! Lenient deserializers for text options.
//!
//! Start-up resolution turns a string that is exactly `$env(NAME)` into a number or a boolean
//! when the variable looks like one (so numeric options can come from the environment). A
//! text option such as a query parameter value or a body then arrives as `12345` or `true`;
//! these helpers take it back as text instead of failing start-up.

use serde::{Deserialize, Deserializer};

#[derive(Deserialize)]
#[serde(untagged)]
enum Text {
    Str(String),
    Num(serde_json::Number),
    Bool(bool),
}

impl From<Text> for String {
    fn from(t: Text) -> Self {
        match t {
            Text::Str(s) => s,
            Text::Num(n) => n.to_string(),
            Text::Bool(b) => b.to_string(),
        }
    }
}

/// A string, number or boolean, as text.
pub(super) fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Text::deserialize(d).map(String::from)
}

/// An optional [`text`] (use with `#[serde(default)]`).
pub(super) fn opt_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Option::<Text>::deserialize(d).map(|t| t.map(String::from))
}

/// A list of [`text`] items.
pub(super) fn texts<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Vec::<Text>::deserialize(d).map(|v| v.into_iter().map(String::from).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct T {
        #[serde(deserialize_with = "text")]
        a: String,
        #[serde(default, deserialize_with = "opt_text")]
        b: Option<String>,
        #[serde(deserialize_with = "texts")]
        c: Vec<String>,
    }

    #[test]
    fn numbers_and_booleans_become_text() {
        let t: Result<T, _> = serde_json::from_value(serde_json::json!({"a": 12345, "c": ["x", 1, false]}));
        let t = t.map_err(|e| e.to_string());
        assert!(t.is_ok(), "{:?}", t.as_ref().err());
        if let Ok(t) = t {
            assert_eq!(t.a, "12345");
            assert_eq!(t.b, None);
            assert_eq!(t.c, vec!["x", "1", "false"]);
        }
        let t: Result<T, _> = serde_json::from_value(serde_json::json!({"a": "s", "b": true, "c": []}));
        assert_eq!(t.ok().and_then(|t| t.b).as_deref(), Some("true"));
        let t: Result<T, _> = serde_json::from_value(serde_json::json!({"a": {"x": 1}, "c": []}));
        assert!(t.is_err());
    }
}
