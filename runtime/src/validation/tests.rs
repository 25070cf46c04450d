use axum::body::Body;

use super::*;
use crate::request::Params;

const fn int() -> Simple {
    Simple::of(SimpleType::Integer)
}

static PARAMS: &[Parameter] = &[
    Parameter { name: "id", location: In::Path, required: true, style: Style::Simple, explode: false, schema: ParamSchema::Simple(Simple { minimum: Some(1.0), ..int() }) },
    Parameter { name: "ids", location: In::Path, required: true, style: Style::Simple, explode: false, schema: ParamSchema::Array { items: int(), min_items: None, max_items: Some(3), unique_items: true } },
    Parameter { name: "tag", location: In::Query, required: false, style: Style::Form, explode: true, schema: ParamSchema::Array { items: Simple { enumeration: &["a", "b"], ..Simple::of(SimpleType::String) }, min_items: Some(1), max_items: None, unique_items: false } },
    Parameter { name: "cols", location: In::Query, required: false, style: Style::Form, explode: false, schema: ParamSchema::Array { items: int(), min_items: None, max_items: None, unique_items: false } },
    Parameter { name: "limit", location: In::Query, required: true, style: Style::Form, explode: true, schema: ParamSchema::Simple(Simple { maximum: Some(100.0), exclusive_minimum: Some(0.0), ..int() }) },
    Parameter { name: "flag", location: In::Query, required: false, style: Style::Form, explode: true, schema: ParamSchema::Simple(Simple::of(SimpleType::Boolean)) },
    Parameter { name: "code", location: In::Query, required: false, style: Style::Form, explode: true, schema: ParamSchema::Simple(Simple { pattern: Some("^[A-Z]{3}$"), min_length: Some(3), ..Simple::of(SimpleType::String) }) },
    Parameter { name: "filter", location: In::Query, required: false, style: Style::DeepObject, explode: true, schema: ParamSchema::Json { schema: r#"{"type":"object","properties":{"min":{"type":"integer"},"name":{"type":"string"}},"additionalProperties":false}"#, shape: Shape::Object } },
    Parameter { name: "x-version", location: In::Header, required: true, style: Style::Simple, explode: false, schema: ParamSchema::Simple(Simple { enumeration: &["1", "2"], ..int() }) },
    Parameter { name: "x-list", location: In::Header, required: false, style: Style::Simple, explode: false, schema: ParamSchema::Array { items: Simple { format: Some("uuid"), ..Simple::of(SimpleType::String) }, min_items: None, max_items: None, unique_items: false } },
];

static OP: Operation = Operation { parameters: PARAMS, body: None };

fn request(uri: &str, path: &[&str], headers: &[(&str, &str)]) -> Request {
    static NAMES: &[&str] = &["id", "ids"];
    let mut b = http::Request::builder().uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let inner = b.body(Body::empty()).unwrap_or_default();
    Request::new(inner, Params::new(NAMES, path.iter().map(|s| (*s).to_owned()).collect()))
}

fn check(req: &Request, location: In) -> Vec<(Option<String>, Option<String>)> {
    let op = CompiledOperation::compile(&OP).unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    op.check_params(req, location, &mut out);
    out.into_iter().map(|v| (v.name, v.pointer)).collect()
}

fn names(v: &[(Option<String>, Option<String>)]) -> Vec<&str> {
    v.iter().filter_map(|(n, _)| n.as_deref()).collect()
}

#[test]
fn valid_parameters_pass_in_every_style() {
    let req = request(
        "/x?limit=10&tag=a&tag=b&cols=1,2,3&flag=true&code=ABC&filter[min]=3&filter[name]=x",
        &["5", "1,2,3"],
        &[("x-version", "2"), ("x-list", "123e4567-e89b-12d3-a456-426614174000, 123e4567-e89b-12d3-a456-426614174001")],
    );
    assert_eq!(check(&req, In::Path), vec![]);
    assert_eq!(check(&req, In::Query), vec![]);
    assert_eq!(check(&req, In::Header), vec![]);
}

#[test]
fn path_values_are_coerced_and_checked() {
    let req = request("/x", &["0", "1,x,1,2"], &[]);
    let got = check(&req, In::Path);
    // id below the minimum; ids: too many items, duplicate, item 1 not an integer.
    assert_eq!(names(&got), vec!["id", "ids", "ids", "ids"]);
    assert!(got.contains(&(Some("ids".into()), Some("/1".into()))), "{got:?}");
}

#[test]
fn query_violations_name_the_parameter() {
    let req = request("/x?limit=0&tag=c&cols=1,two&flag=yes&code=abc&filter[min]=x&filter[other]=1", &["1", "1"], &[]);
    let got = check(&req, In::Query);
    let n = names(&got);
    assert!(n.contains(&"limit"), "exclusive minimum 0: {got:?}");
    assert!(got.contains(&(Some("tag".into()), Some("/0".into()))), "{got:?}");
    assert!(got.contains(&(Some("cols".into()), Some("/1".into()))), "{got:?}");
    assert!(n.contains(&"flag") && n.contains(&"code"), "{got:?}");
    assert!(got.contains(&(Some("filter".into()), Some("/min".into()))), "deepObject coerced by property type: {got:?}");
    assert_eq!(n.iter().filter(|x| **x == "filter").count(), 2, "additionalProperties too: {got:?}");
}

#[test]
fn required_parameters_must_be_present() {
    let req = request("/x?tag=a", &["1", "1"], &[]);
    assert_eq!(names(&check(&req, In::Query)), vec!["limit"]);
    assert_eq!(names(&check(&req, In::Header)), vec!["x-version"]);
}

#[test]
fn header_values_are_checked() {
    let req = request("/x", &["1", "1"], &[("x-version", "3"), ("x-list", "not-a-uuid")]);
    let got = check(&req, In::Header);
    assert_eq!(names(&got), vec!["x-version", "x-list"]);
}

#[test]
fn numbers_reject_what_json_would_not_write() {
    let s = simple::Compiled::new(&Simple::of(SimpleType::Number)).unwrap_or_else(|e| panic!("{e}"));
    for ok in ["1", "-2.5", "1e3", "0"] {
        assert!(s.check(ok).is_ok(), "{ok}");
    }
    for bad in ["NaN", "inf", "+1", "0x10", "", "1,5", " 1"] {
        assert!(s.check(bad).is_err(), "{bad}");
    }
    let i = simple::Compiled::new(&Simple { format: Some("int32"), ..int() }).unwrap_or_else(|e| panic!("{e}"));
    assert!(i.check("2147483647").is_ok());
    assert!(i.check("2147483648").is_err());
    assert!(i.check("1.5").is_err());
}

#[test]
fn formats_of_simple_strings() {
    let f = |format: &'static str| simple::Compiled::new(&Simple { format: Some(format), ..Simple::of(SimpleType::String) }).unwrap_or_else(|e| panic!("{e}"));
    assert!(f("date").check("2024-02-29").is_ok());
    assert!(f("date").check("2023-02-29").is_err());
    assert!(f("date-time").check("2024-01-02T03:04:05.123Z").is_ok());
    assert!(f("date-time").check("2024-01-02T03:04:05+01:00").is_ok());
    assert!(f("date-time").check("2024-01-02 03:04:05").is_err());
    assert!(f("email").check("a@b.co").is_ok());
    assert!(f("email").check("a@b").is_err());
    assert!(f("unknown-format").check("anything").is_ok());
}

#[test]
fn media_types_match_exactly_then_by_range() {
    let content = vec![
        CompiledMedia { media_type: "application/json", validator: None },
        CompiledMedia { media_type: "image/*", validator: None },
    ];
    assert_eq!(media_for(&content, "application/json; charset=utf-8").map(|m| m.media_type), Some("application/json"));
    assert_eq!(media_for(&content, "IMAGE/png").map(|m| m.media_type), Some("image/*"));
    assert!(media_for(&content, "text/plain").is_none());
    let any = vec![CompiledMedia { media_type: "*/*", validator: None }];
    assert!(media_for(&any, "text/plain").is_some());
}

#[test]
fn bad_patterns_fail_at_start_up_not_per_request() {
    static BAD: &[Parameter] = &[Parameter { name: "p", location: In::Query, required: false, style: Style::Form, explode: true, schema: ParamSchema::Simple(Simple { pattern: Some("(unclosed"), ..Simple::of(SimpleType::String) }) }];
    static BAD_OP: Operation = Operation { parameters: BAD, body: None };
    let e = CompiledOperation::compile(&BAD_OP).err().unwrap_or_default();
    assert!(e.contains("query parameter `p`"), "{e}");
}

#[tokio::test]
async fn read_limited_stops_after_the_limit_and_reassembles() {
    use futures_util::StreamExt;
    let stream = futures_util::stream::iter(0..100).map(|i| Ok::<_, std::convert::Infallible>(bytes::Bytes::from(format!("{i:02}"))));
    match read_limited(Body::from_stream(stream), 5).await {
        Buffered::TooLarge { prefix, rest } => {
            assert_eq!(prefix.len(), 3);
            let all = crate::policies::test_util::body_text(Buffered::reassemble(prefix, rest)).await;
            assert_eq!(all.len(), 200);
            assert!(all.starts_with("000102") && all.ends_with("9899"));
        }
        other => panic!("{other:?}"),
    }
}
