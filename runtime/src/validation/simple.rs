//! Checks of simple parameter values (string, integer, number, boolean with their keywords)
//! from const data, without a JSON Schema validator.

use regex::Regex;

/// The type of a simple value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimpleType {
    /// Any text.
    String,
    /// A whole number.
    Integer,
    /// Any number.
    Number,
    /// `true` or `false`.
    Boolean,
}

/// A simple schema: a type with the keywords that apply to it, as the generator emits it.
#[derive(Debug, Clone, Copy)]
pub struct Simple {
    /// The type.
    pub ty: SimpleType,
    /// `enum`, each value as text (strings as they are, numbers and booleans as JSON).
    pub enumeration: &'static [&'static str],
    /// `minimum`.
    pub minimum: Option<f64>,
    /// `maximum`.
    pub maximum: Option<f64>,
    /// `exclusiveMinimum` (a number, as in JSON Schema 2020-12).
    pub exclusive_minimum: Option<f64>,
    /// `exclusiveMaximum`.
    pub exclusive_maximum: Option<f64>,
    /// `multipleOf`.
    pub multiple_of: Option<f64>,
    /// `minLength` (in characters).
    pub min_length: Option<u64>,
    /// `maxLength`.
    pub max_length: Option<u64>,
    /// `pattern` (must compile with the `regex` crate; the generator checks).
    pub pattern: Option<&'static str>,
    /// `format` (`int32`, `int64`, `date`, `date-time`, `uuid`, `email` are checked).
    pub format: Option<&'static str>,
}

impl Simple {
    /// A schema of type `ty` with no further keywords.
    pub const fn of(ty: SimpleType) -> Simple {
        Simple {
            ty,
            enumeration: &[],
            minimum: None,
            maximum: None,
            exclusive_minimum: None,
            exclusive_maximum: None,
            multiple_of: None,
            min_length: None,
            max_length: None,
            pattern: None,
            format: None,
        }
    }
}

/// A [`Simple`] with its pattern compiled.
#[derive(Debug)]
pub(crate) struct Compiled {
    spec: Simple,
    pattern: Option<Regex>,
}

impl Compiled {
    pub(crate) fn new(spec: &Simple) -> Result<Self, String> {
        let pattern = match spec.pattern {
            Some(p) => Some(Regex::new(p).map_err(|e| format!("pattern `{p}` does not compile: {e}"))?),
            None => None,
        };
        Ok(Compiled { spec: *spec, pattern })
    }

    /// Checks one value given as text; `Err` says what is wrong.
    pub(crate) fn check(&self, text: &str) -> Result<(), String> {
        let s = &self.spec;
        match s.ty {
            SimpleType::String => {
                let len = text.chars().count() as u64;
                if let Some(min) = s.min_length
                    && len < min
                {
                    return Err(format!("{text:?} is shorter than {min} characters"));
                }
                if let Some(max) = s.max_length
                    && len > max
                {
                    return Err(format!("{text:?} is longer than {max} characters"));
                }
                if let Some(re) = &self.pattern
                    && !re.is_match(text)
                {
                    return Err(format!("{text:?} does not match {:?}", re.as_str()));
                }
                if let Some(f) = s.format
                    && !format_ok(f, text)
                {
                    return Err(format!("{text:?} is not a \"{f}\""));
                }
                if !s.enumeration.is_empty() && !s.enumeration.contains(&text) {
                    return Err(format!("{text:?} is not one of {}", list(s.enumeration)));
                }
                Ok(())
            }
            SimpleType::Boolean => match text {
                "true" | "false" => {
                    if !s.enumeration.is_empty() && !s.enumeration.contains(&text) {
                        return Err(format!("{text} is not one of {}", list(s.enumeration)));
                    }
                    Ok(())
                }
                _ => Err(format!("{text:?} is not a boolean (true or false)")),
            },
            SimpleType::Integer | SimpleType::Number => {
                let Some(n) = parse_number(text) else {
                    let what = if s.ty == SimpleType::Integer { "an integer" } else { "a number" };
                    return Err(format!("{text:?} is not {what}"));
                };
                if s.ty == SimpleType::Integer && n.fract() != 0.0 {
                    return Err(format!("{text:?} is not an integer"));
                }
                if let Some(f) = s.format {
                    let (lo, hi) = match f {
                        "int32" => (f64::from(i32::MIN), f64::from(i32::MAX)),
                        "int64" => (i64::MIN as f64, i64::MAX as f64),
                        _ => (f64::NEG_INFINITY, f64::INFINITY),
                    };
                    if n < lo || n > hi {
                        return Err(format!("{text} is out of the range of {f}"));
                    }
                }
                if let Some(min) = s.minimum
                    && n < min
                {
                    return Err(format!("{text} is less than the minimum of {min}"));
                }
                if let Some(max) = s.maximum
                    && n > max
                {
                    return Err(format!("{text} is greater than the maximum of {max}"));
                }
                if let Some(min) = s.exclusive_minimum
                    && n <= min
                {
                    return Err(format!("{text} is less than or equal to the exclusive minimum of {min}"));
                }
                if let Some(max) = s.exclusive_maximum
                    && n >= max
                {
                    return Err(format!("{text} is greater than or equal to the exclusive maximum of {max}"));
                }
                if let Some(m) = s.multiple_of
                    && m > 0.0
                    && ((n / m) - (n / m).round()).abs() > 1e-9
                {
                    return Err(format!("{text} is not a multiple of {m}"));
                }
                if !s.enumeration.is_empty() && !s.enumeration.iter().any(|e| parse_number(e) == Some(n)) {
                    return Err(format!("{text} is not one of {}", list(s.enumeration)));
                }
                Ok(())
            }
        }
    }
}

fn list(values: &[&str]) -> String {
    values.iter().map(|v| format!("{v:?}")).collect::<Vec<_>>().join(", ")
}

/// A number written as JSON writes numbers (no `NaN`, `inf`, hex or leading `+`).
pub(crate) fn parse_number(text: &str) -> Option<f64> {
    let t = text.strip_prefix('-').unwrap_or(text);
    let ok = !t.is_empty()
        && t.starts_with(|c: char| c.is_ascii_digit())
        && t.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    if !ok {
        return None;
    }
    text.parse::<f64>().ok().filter(|n| n.is_finite())
}

/// The formats checked on simple values; unknown formats pass (they are annotations).
fn format_ok(format: &str, text: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match format {
        "date" => is_date(text),
        "date-time" => {
            let Some((date, time)) = text.split_once(['T', 't']) else { return false };
            if !is_date(date) {
                return false;
            }
            let (clock, zone_ok) = if let Some(c) = time.strip_suffix(['Z', 'z']) {
                (c, true)
            } else if let Some(i) = time.rfind(['+', '-']) {
                let zone = &time[i + 1..];
                let ok = zone.len() == 5 && zone.as_bytes()[2] == b':' && digits(&zone[..2]) && digits(&zone[3..]);
                (&time[..i], ok)
            } else {
                (time, false)
            };
            let hms = clock.split('.').next().unwrap_or("");
            let parts: Vec<&str> = hms.split(':').collect();
            zone_ok
                && parts.len() == 3
                && parts.iter().all(|p| p.len() == 2 && digits(p))
                && parts[0] < "24"
                && parts[1] < "60"
                && parts[2] <= "60"
                && clock.split_once('.').is_none_or(|(_, f)| digits(f))
        }
        "uuid" => {
            let b = text.as_bytes();
            b.len() == 36
                && b.iter().enumerate().all(|(i, c)| if matches!(i, 8 | 13 | 18 | 23) { *c == b'-' } else { c.is_ascii_hexdigit() })
        }
        "email" => text.split_once('@').is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.') && !d.ends_with('.') && !text.contains(char::is_whitespace)),
        _ => true,
    }
}

fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let num = |r: std::ops::Range<usize>| s.get(r).filter(|p| p.bytes().all(|c| c.is_ascii_digit())).and_then(|p| p.parse::<u32>().ok());
    let (Some(y), Some(m), Some(d)) = (num(0..4), num(5..7), num(8..10)) else { return false };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&d)
}
