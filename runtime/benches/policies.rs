//! Each built-in policy alone, built from its `policies.json` options the way generated code
//! builds it (`FromOptions`) and called on a request the way a route function calls it: API key
//! (file store, warm cache), JWT (HS256 secret; RS256 from a JWKS served on loopback, keys
//! cached), rate limit (in-process backend), set/remove/clear headers, query parameters, CORS
//! preflight, IP restriction, request size limit, require-origin and request validation.
//!
//! Run with `cargo bench -p specgate-runtime --bench policies`.
//!
//! Every policy call runs in `block_on` of a current-thread Tokio runtime; the `baseline`
//! entry (a future that returns at once, the same request and context) is that overhead.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::header::HeaderValue;
use http::{Method, Request as HttpRequest};
use specgate_runtime::cors::CorsPolicy;
use specgate_runtime::keys::{CreateKey, KeyStore, StoreConfig};
use specgate_runtime::policies::{
    ApiKeyInbound, ApiKeyInboundOptions, ClearHeadersInbound, IpAddressRestrictionInbound, OpenIdJwtInbound,
    RateLimitInbound, RemoveHeadersInbound, RequestSizeLimitInbound, RequestValidationInbound, RequireOriginInbound,
    SetHeadersInbound, SetHeadersOutbound, SetQueryParamsInbound, bench_context,
};
use specgate_runtime::policy::{Flow, FromOptions, Inbound, Outbound};
use specgate_runtime::validation as v;
use specgate_runtime::{Body, Context, Request, Response};

/// A test-only RSA key (`openssl genpkey -algorithm RSA`, 2048 bits) made for this benchmark;
/// it protects nothing.
const RSA_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC/wqNEEhZrAMVx
ogH4YvMoQiTgZETV58GYLL39J1k/0VzTupsXRvoHqlKeITimzA41ho5byxRYxn6R
v09Yj9CAQZApc2wl320G57NZFLuPppLwbfRJp0fIRbkYaZCV6vejpDYIS9nEd8zt
lAGml7H0THF5L58xJLDNf2MOJEPz/n/bQ/Duxu8fKyuUW2UcWFOTSGMEMoluz1cA
U1V+0amnTqlFuiG4uDluIqasg1qEWoQk7joOx1GdTf3ZYAtD+PMP44CZGWi6pVB6
sTgGPOR1ov/XtAH+rCfFgKrtmQ6VL+WHRWhnuJ+XhibpRAcbZUXRoPHvkFrYMisR
fWkQeAahAgMBAAECggEAAzkgvIbbjbtAxlf/VZsHrGU+uI8U5V3IsC+t1pbKCi+h
Il2uSEwRDS6OppHnQW33/ewz4bz6S8Lz2wwqt7HMotA/TaQPFPyiOPHNbt2RaMDn
cr89YjzLoQUTfzKci5mMRanPnvBz8ciD9zkT9UZy1zju9hcP42ADEQQvcHwZcI0e
x43EtJ5npq1NVI9VQqFBoBh18y3v52p4Jic7Ur1rYniFW0u4Z32FtsAGl2Q/56Ei
HWipVNdOt8mG+gAWxoDxKwQtuWwlTaUdo6/1AeE9z+9FhuKAoPVNL6Qn+8JbgFMz
Ks93XXSmfg67ZFN2g0ZX5paarD9zkbWAotb4nKpCgQKBgQDrl20rViSkBdYsjgJZ
5ovCMaI/FVN7P84WS6QVIIltCEqwusm57JVi0rkTCAzOF+WNtDS/V0AVh6jGV+o8
bqBCoYf6xr89kKZCjnZZb9zsFVeGbq2OEszxowbLANtQr2jMQ69ltABxEtx7ioih
ABbD0uh5eMmKOxP8suddr0OwwQKBgQDQXzFNi7XTGtp9/ULKPBWgZBVrQs61ymgH
o2nI4RC80E4/UjsW1KZxoBPJUPt4C103RPSCsMGnhGX1QGceC3V+3hbLIAvxjJSf
fiNwdFunwGLWz+XP+WzeGTeCyD+MNZalS6F5Mvt8voGuB3UBZPdnvEhsaehlLg8Y
x1ff+hft4QKBgEzq6pysilf3A98WGlRpvhWQCO3Zs6DYyxtiZNb1AYlUnLYotfX6
9ScHr580EKI1ESB7xoD2Jpkg6oyfZX2HjNFUVcYdn5ClKnMuehtnN1To/uOIPSfW
oYz+8hfTVsd4DZorOxfUdhR02QGI0GToV4Zl1LrcIcj80uC9NGbU8x/BAoGAD2HX
m+fiZlEnLAHUOmWxGwQIaMCnzdfBUj8IAiJLQAUIobgKUKcmGmE81LG7vqLoILpg
an1t7lXhyPcWJaum4tS2TgxxlUVRe2yuZRDR61JSeZUjW/UHymWGKYtq1YjnNBCf
PPk8g3r0y8oVIyM2+Ft35Tj0RPPffW7J1+j4d0ECgYEAzj+65WS4elUL2jZUE8sh
27Ye/bAdCX/ZWU8+fZOkOL1vFUxgd3TklWRsCmon2JgRQtEICyu4EzocKi7lxhFu
QhNJhLpBF/BUPzvwKu2DEVY8p2fGbNmkIwPo4Lw4b7+wBtmdgzRpjk/69jdTRrVn
39pMTRnxplIsk3Ncr8JWZBM=
-----END PRIVATE KEY-----
";
/// Its modulus, base64url (the JWK `n`).
const RSA_N: &str = "v8KjRBIWawDFcaIB-GLzKEIk4GRE1efBmCy9_SdZP9Fc07qbF0b6B6pSniE4pswONYaOW8sUWMZ-kb9PWI_QgEGQKXNsJd9tBuezWRS7j6aS8G30SadHyEW5GGmQler3o6Q2CEvZxHfM7ZQBppex9ExxeS-fMSSwzX9jDiRD8_5_20Pw7sbvHysrlFtlHFhTk0hjBDKJbs9XAFNVftGpp06pRbohuLg5biKmrINahFqEJO46DsdRnU392WALQ_jzD-OAmRlouqVQerE4BjzkdaL_17QB_qwnxYCq7ZkOlS_lh0VoZ7ifl4Ym6UQHG2VF0aDx75Ba2DIrEX1pEHgGoQ";
const ISSUER: &str = "https://issuer.bench/";
const SECRET: &str = "bench-secret-of-at-least-32-bytes!!";

/// Builds a policy from its options as `policies.json` spells them.
fn policy<P: FromOptions>(json: &str) -> P {
    let options = serde_json::from_str::<P::Options>(json).unwrap_or_else(|e| panic!("options {json}: {e}"));
    P::from_options(options, "bench").unwrap_or_else(|e| panic!("policy {json}: {e}"))
}

/// A typical browser-ish request: a handful of headers, a query string.
fn request(method: &str, uri: &str, headers: &[(&str, &str)], body: &'static str) -> Request {
    let mut b = HttpRequest::builder()
        .method(method)
        .uri(uri)
        .header("host", "api.example.com")
        .header("user-agent", "Mozilla/5.0 (X11; Linux x86_64) bench")
        .header("accept", "application/json")
        .header("accept-encoding", "gzip, br")
        .header("x-request-id", "bench-0001");
    for (k, val) in headers {
        b = b.header(*k, *val);
    }
    Request::from(b.body(Body::from(body)).unwrap_or_else(|e| panic!("request: {e}")))
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap_or_else(|e| panic!("runtime: {e}"))
}

/// Whether the policy let the request through (checked once per case before measuring).
fn continued(flow: &Flow) -> bool {
    matches!(flow, Flow::Continue(_))
}

/// Measures `p.on_request` on fresh copies of the request and context (made outside the
/// timing, dropped outside it too), after checking that the outcome is the intended one.
fn inbound<P: Inbound>(c: &mut Criterion, rt: &tokio::runtime::Runtime, name: &str, p: &P, make: impl Fn() -> Request, expect: fn(&Flow) -> bool) {
    let _guard = rt.enter();
    let mut cx = bench_context();
    let flow = rt.block_on(p.on_request(make(), &mut cx));
    assert!(expect(&flow), "{name}: unexpected outcome {flow:?}");
    c.bench_function(name, |b| {
        b.iter_batched(
            || (make(), bench_context()),
            |(req, mut cx)| {
                let flow = rt.block_on(p.on_request(black_box(req), &mut cx));
                (flow, cx)
            },
            BatchSize::SmallInput,
        )
    });
}

fn response() -> Response {
    let mut r = Response::new(Body::from("hello"));
    let h = r.headers_mut();
    h.insert("content-type", HeaderValue::from_static("text/plain"));
    h.insert("content-length", HeaderValue::from_static("5"));
    h.insert("date", HeaderValue::from_static("Mon, 23 Nov 2026 05:00:00 GMT"));
    h.insert("x-upstream-internal", HeaderValue::from_static("1"));
    r
}

fn outbound<P: Outbound>(c: &mut Criterion, rt: &tokio::runtime::Runtime, name: &str, p: &P) {
    let _guard = rt.enter();
    let head = request("GET", "/test", &[], "").head();
    c.bench_function(name, |b| {
        b.iter_batched(
            || (response(), bench_context()),
            |(resp, mut cx)| {
                let resp = rt.block_on(p.on_response(black_box(resp), &head, &mut cx));
                (resp, cx)
            },
            BatchSize::SmallInput,
        )
    });
}

/// A no-op inbound step: the cost of the harness itself.
struct Noop;

impl Inbound for Noop {
    async fn on_request(&self, req: Request, _cx: &mut Context) -> Flow {
        Flow::Continue(req)
    }
}

/// Serves `doc` at `http://127.0.0.1:PORT/jwks` on `rt` (driven while `block_on` runs).
fn jwks_server(rt: &tokio::runtime::Runtime, doc: serde_json::Value) -> String {
    rt.block_on(async move {
        let app = axum::Router::new().route("/jwks", axum::routing::get(move || async move { axum::Json(doc.clone()) }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("addr: {e}"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://{addr}/jwks")
    })
}

fn token(alg: jsonwebtoken::Algorithm, kid: Option<&str>, key: &jsonwebtoken::EncodingKey) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = serde_json::json!({"iss": ISSUER, "aud": "api", "sub": "user-1", "email": "a@example.com", "role": "admin", "iat": now, "exp": now + 3600});
    let mut header = jsonwebtoken::Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, &claims, key).unwrap_or_else(|e| panic!("sign: {e}"))
}

static PET_OPERATION: v::Operation = v::Operation {
    parameters: &[v::Parameter {
        name: "limit",
        location: v::In::Query,
        required: false,
        style: v::Style::Form,
        explode: true,
        schema: v::ParamSchema::Simple(v::Simple {
            ty: v::SimpleType::Integer,
            enumeration: &[],
            minimum: Some(1.0),
            maximum: Some(100.0),
            exclusive_minimum: None,
            exclusive_maximum: None,
            multiple_of: None,
            min_length: None,
            max_length: None,
            pattern: None,
            format: None,
        }),
    }],
    body: Some(v::RequestBody {
        required: true,
        content: &[v::MediaType {
            media_type: "application/json",
            schema: Some(r##"{"$ref":"#/$defs/Pet","$defs":{"customer":{"type":"object","required":["email"],"properties":{"email":{"type":"string","format":"email"},"name":{"type":"string","maxLength":80}}},"Pet":{"type":"object","required":["name"],"properties":{"name":{"type":"string","minLength":1},"tag":{"type":["string","null"]},"age":{"type":"integer","exclusiveMinimum":0},"owner":{"$ref":"#/$defs/customer"}}}}}"##),
        }],
    }),
};

fn bench_policies(c: &mut Criterion) {
    let rt = rt();
    let _guard = rt.enter();

    inbound(c, &rt, "baseline (harness only)", &Noop, || request("GET", "/test", &[], ""), continued);

    // API key: the file store with one consumer; the look-up is cached after the first call.
    let dir = std::env::temp_dir().join(format!("specgate-bench-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let store = KeyStore::open(&StoreConfig::File(dir.join("api-keys.json")), "default").unwrap_or_else(|e| panic!("{e}"));
    let mut metadata = serde_json::Map::new();
    metadata.insert("plan".into(), serde_json::json!("gold"));
    let key = rt
        .block_on(store.create_key(CreateKey { consumer: "acme".into(), metadata: Some(metadata), ..CreateKey::default() }))
        .unwrap_or_else(|e| panic!("{e}"));
    let options: ApiKeyInboundOptions = serde_json::from_str("{}").unwrap_or_else(|e| panic!("{e}"));
    let api_key = ApiKeyInbound::new(options, Arc::new(store), "bench").unwrap_or_else(|e| panic!("{e}"));
    let bearer = format!("Bearer {}", key.key);
    inbound(c, &rt, "api-key-inbound (valid key, warm cache)", &api_key, || request("GET", "/test", &[("authorization", &bearer)], ""), continued);
    inbound(c, &rt, "api-key-inbound (malformed key)", &api_key, || request("GET", "/test", &[("authorization", "Bearer nope")], ""), |f| matches!(f, Flow::Problem(_)));
    let _ = std::fs::remove_dir_all(&dir);

    // JWT, HS256 with a shared secret.
    let hs = policy::<OpenIdJwtInbound>(&format!(r#"{{"issuer":"{ISSUER}","audience":"api","secret":"{SECRET}"}}"#));
    let hs_token = format!("Bearer {}", token(jsonwebtoken::Algorithm::HS256, None, &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes())));
    inbound(c, &rt, "open-id-jwt-auth-inbound HS256", &hs, || request("GET", "/test", &[("authorization", &hs_token)], ""), continued);

    // JWT, RS256 with the key from a JWKS (fetched once, then cached).
    let jwks = serde_json::json!({"keys": [{"kty": "RSA", "kid": "rsa-1", "use": "sig", "alg": "RS256", "n": RSA_N, "e": "AQAB"}]});
    let url = jwks_server(&rt, jwks);
    let rs = policy::<OpenIdJwtInbound>(&format!(r#"{{"issuer":"{ISSUER}","audience":"api","jwkUrl":"{url}"}}"#));
    let rsa = jsonwebtoken::EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let rs_token = format!("Bearer {}", token(jsonwebtoken::Algorithm::RS256, Some("rsa-1"), &rsa));
    inbound(c, &rt, "open-id-jwt-auth-inbound RS256 (JWKS cached)", &rs, || request("GET", "/test", &[("authorization", &rs_token)], ""), continued);

    // Rate limit by IP, in process, never reached.
    let limit = policy::<RateLimitInbound>(r#"{"rateLimitBy":"ip","requestsAllowed":1000000000,"timeWindowMinutes":1}"#);
    inbound(c, &rt, "rate-limit-inbound (in-memory, admitted)", &limit, || request("GET", "/test", &[], ""), continued);

    let set_in = policy::<SetHeadersInbound>(r#"{"headers":[{"name":"x-gateway-secret","value":"s3cret"},{"name":"x-kept","value":"gateway","overwrite":false}]}"#);
    inbound(c, &rt, "set-headers-inbound (2 headers)", &set_in, || request("GET", "/test", &[], ""), continued);
    let remove_in = policy::<RemoveHeadersInbound>(r#"{"headers":["x-remove-me","Cookie"]}"#);
    inbound(c, &rt, "remove-headers-inbound (2 names)", &remove_in, || request("GET", "/test", &[("cookie", "a=1"), ("x-remove-me", "1")], ""), continued);
    let clear_in = policy::<ClearHeadersInbound>(r#"{"exclude":["x-keep","accept"]}"#);
    inbound(c, &rt, "clear-headers-inbound", &clear_in, || request("GET", "/test", &[("x-keep", "1")], ""), continued);
    let set_query = policy::<SetQueryParamsInbound>(r#"{"params":[{"name":"api-version","value":"2024-01-01"},{"name":"page","value":"1","overwrite":false}]}"#);
    inbound(c, &rt, "set-query-params-inbound (2 params)", &set_query, || request("GET", "/test?q=shoes&page=3", &[], ""), continued);

    let set_out = policy::<SetHeadersOutbound>(r#"{"headers":[{"name":"x-powered-by","value":"specgate"}]}"#);
    outbound(c, &rt, "set-headers-outbound (1 header)", &set_out);
    let remove_out = policy::<specgate_runtime::policies::RemoveHeadersOutbound>(r#"{"headers":["x-upstream-internal"]}"#);
    outbound(c, &rt, "remove-headers-outbound (1 name)", &remove_out);

    let ip = policy::<IpAddressRestrictionInbound>(r#"{"allow":["10.0.0.0/8","192.168.0.0/16","127.0.0.0/8","::1"]}"#);
    inbound(c, &rt, "ip-restriction-inbound (allow list of 4, allowed)", &ip, || request("GET", "/test", &[], ""), continued);
    let size = policy::<RequestSizeLimitInbound>(r#"{"maxSizeInBytes":1024}"#);
    inbound(c, &rt, "request-size-limit-inbound (declared 13 bytes)", &size, || request("POST", "/test", &[("content-length", "13")], "{\"a\":\"hello\"}"), continued);
    let origin = policy::<RequireOriginInbound>(r#"{"origins":"https://app.example.com, https://admin.example.com"}"#);
    inbound(c, &rt, "require-origin-inbound (allowed)", &origin, || request("GET", "/test", &[("origin", "https://admin.example.com")], ""), continued);

    let validation = policy::<RequestValidationInbound>(r#"{"validateBody":"reject-and-log","validateQueryParameters":"reject-and-log","validatePathParameters":"reject-and-log","validateHeaders":"reject-and-log"}"#)
        .with_operation(&PET_OPERATION)
        .unwrap_or_else(|e| panic!("{e}"));
    let pet = r#"{"name":"Rex","tag":null,"age":3,"owner":{"email":"ada@example.com","name":"Ada"}}"#;
    inbound(
        c,
        &rt,
        "request-validation-inbound (query + 80-byte JSON body)",
        &validation,
        || request("POST", "/test?limit=10", &[("content-type", "application/json"), ("content-length", "80")], pet),
        continued,
    );

    // CORS preflight, decided by the policy (the server's look-up of the route is not included).
    let cors = policy::<CorsPolicy>(r#"{"allowedOrigins":["https://app.example.com","https://*.example.org"],"allowedMethods":["GET","POST","PUT"],"allowedHeaders":["content-type","authorization"],"maxAge":600,"allowCredentials":true}"#);
    let origin = HeaderValue::from_static("https://shop.example.org");
    let requested = HeaderValue::from_static("content-type, authorization");
    assert!(cors.preflight(&origin, &Method::PUT, Some(&requested), &[]).is_some_and(|r| r.status() == 200));
    c.bench_function("cors preflight (wildcard origin, 2 headers)", |b| {
        b.iter(|| cors.preflight(black_box(&origin), black_box(&Method::PUT), Some(black_box(&requested)), &[]))
    });
    let mut resp = response();
    cors.apply(Some(&origin), &mut resp);
    assert!(resp.headers().contains_key("access-control-allow-origin"));
    c.bench_function("cors apply on a simple response", |b| {
        b.iter_batched(response, |mut r| {
            cors.apply(Some(&origin), &mut r);
            r
        }, BatchSize::SmallInput)
    });
}

criterion_group!(benches, bench_policies);
criterion_main!(benches);
