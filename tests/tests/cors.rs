//! The web-api example: CORS policies `none`, `anything-goes` and two named ones (credentials
//! with a wildcard subdomain; origins from the environment), preflights, CORS headers on
//! responses made by policies and by the proxy, and a real browser reading what CORS allows.

use std::convert::Infallible;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use specgate_tests::{Gateway, Got, Upstream, free_port, gateway_binary, send};

const APP: &str = "https://shop.example.com";
const PARTNER: &str = "https://partner.example.net";

fn env_for(api: &Upstream, web_app_origin: &str) -> Vec<(&'static str, String)> {
    vec![
        ("API_URL", api.url()),
        // Nothing listens there: the reports backend is down.
        ("REPORTS_URL", format!("http://127.0.0.1:{}", free_port())),
        ("WEB_PASSWORD", "pw".to_owned()),
        ("WEB_APP_ORIGIN", web_app_origin.to_owned()),
        ("PARTNER_ORIGINS", format!("{PARTNER}, https://*.partner.example.org")),
        ("PARTNER_PREFLIGHT_MAX_AGE", "120".to_owned()),
        ("UPSTREAM_TIMEOUT_SECONDS", "1".to_owned()),
    ]
}

async fn setup() -> (Upstream, Gateway) {
    let api = Upstream::start("api").await;
    let gw = Gateway::start(&gateway_binary("web-api"), &env_for(&api, "http://localhost:3000")).await;
    (api, gw)
}

async fn req(gw: &Gateway, method: &str, path: &str, headers: &[(&str, &str)]) -> Got {
    send(method, &gw.url(path), headers, "").await.unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

async fn preflight(gw: &Gateway, path: &str, origin: &str, method: &str, headers: Option<&str>) -> Got {
    let mut h = vec![("origin", origin), ("access-control-request-method", method)];
    if let Some(v) = headers {
        h.push(("access-control-request-headers", v));
    }
    req(gw, "OPTIONS", path, &h).await
}

fn cors_headers(r: &Got) -> Vec<&str> {
    let mut names: Vec<&str> = r.headers.keys().map(String::as_str).filter(|k| k.starts_with("access-control-")).collect();
    names.sort_unstable();
    names
}

fn assert_problem(r: &Got, status: u16) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(r.json()["status"], status);
}

#[tokio::test]
async fn none_strips_the_upstreams_cors_headers_and_refuses_preflights() {
    let (api, gw) = setup().await;
    for path in ["/legacy/cors-headers", "/internal/status"] {
        let r = req(&gw, "GET", path, &[("origin", APP)]).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(cors_headers(&r).is_empty(), "{path}: {:?}", r.headers);
    }
    let r = req(&gw, "GET", "/legacy/cors-headers", &[("origin", APP)]).await;
    assert_eq!(r.header("vary"), Some("Accept-Encoding"), "no CORS: Vary left alone");
    assert_eq!(r.header("x-hidden"), Some("hidden-value"));

    let before = api.seen().len();
    let r = preflight(&gw, "/internal/status", APP, "GET", None).await;
    assert_problem(&r, 404);
    assert!(cors_headers(&r).is_empty());
    assert_eq!(api.seen().len(), before, "preflights never reach the upstream");
    // Not a preflight, on a path without CORS: routed as usual.
    let r = req(&gw, "OPTIONS", "/internal/status", &[]).await;
    assert_problem(&r, 405);
    // A preflight for a path no route matches.
    assert_problem(&preflight(&gw, "/nowhere", APP, "GET", None).await, 404);
}

#[tokio::test]
async fn anything_goes_reflects_the_origin_with_credentials() {
    let (api, gw) = setup().await;
    let origin = "http://any-site.test:8080";
    let r = req(&gw, "GET", "/open/cors-headers", &[("origin", origin)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some(origin));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    let exposed = r.header("access-control-expose-headers").unwrap_or_default();
    assert!(exposed.contains("x-exposed") && exposed.contains("x-hidden"), "every header is exposed: {exposed}");
    assert!(!exposed.contains('*'), "`*` means nothing with credentials: {exposed}");
    assert_eq!(r.header("vary"), Some("Accept-Encoding, Origin"), "appended to the upstream's Vary");

    let r = preflight(&gw, "/open/items", origin, "PUT", Some("authorization, x-custom")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some(origin));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(r.header("access-control-allow-headers"), Some("authorization, x-custom"));
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    let methods: Vec<&str> = r.header("access-control-allow-methods").unwrap_or_default().split(", ").collect();
    for m in ["GET", "POST", "PUT"] {
        assert!(methods.contains(&m), "{methods:?}");
    }
    assert!(!methods.contains(&"DELETE"), "DELETE on this path has no CORS: {methods:?}");
    assert!(r.header("vary").is_some_and(|v| v.contains("Origin")));

    // DELETE is routed, but that route's policy is none.
    assert_problem(&preflight(&gw, "/open/items", origin, "DELETE", None).await, 404);
    // The opaque origin is never reflected with credentials.
    assert_problem(&preflight(&gw, "/open/items", "null", "PUT", None).await, 404);
    let r = req(&gw, "GET", "/open/items", &[("origin", "null")]).await;
    assert_eq!(r.header("access-control-allow-origin"), None);

    // The project declares OPTIONS here: OPTIONS requests that are not preflights reach it.
    let before = api.seen().len();
    let r = req(&gw, "OPTIONS", "/open/items", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["upstream"], "api");
    let r = req(&gw, "OPTIONS", "/open/items", &[("origin", origin)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some(origin));
    assert_eq!(api.seen().len(), before + 2);
    assert!(api.seen().iter().skip(before).all(|s| s.method == "OPTIONS"));
}

#[tokio::test]
async fn named_policy_with_credentials_and_a_wildcard_subdomain() {
    let (_api, gw) = setup().await;
    let r = req(&gw, "GET", "/app/cors-headers", &[("origin", APP)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(r.header("access-control-expose-headers"), Some("x-exposed, x-request-id, retry-after"));
    assert_eq!(r.header("vary"), Some("Accept-Encoding, Origin"));
    assert_eq!(
        cors_headers(&r),
        ["access-control-allow-credentials", "access-control-allow-origin", "access-control-expose-headers"],
        "the upstream's CORS headers are replaced, not merged"
    );

    // From $env(WEB_APP_ORIGIN).
    let r = req(&gw, "GET", "/app/items", &[("origin", "http://localhost:3000")]).await;
    assert_eq!(r.header("access-control-allow-origin"), Some("http://localhost:3000"));

    for refused in [
        "https://a.b.example.com",
        "https://example.com",
        "https://evil-example.com",
        "http://shop.example.com",
        "https://shop.example.com.evil.test",
        "https://shop.example.com:8443",
        "http://localhost:3001",
    ] {
        let r = req(&gw, "GET", "/app/cors-headers", &[("origin", refused)]).await;
        assert_eq!(r.status, 200, "the request itself is served");
        assert!(cors_headers(&r).is_empty(), "{refused}: {:?}", r.headers);
        assert_eq!(r.header("vary"), Some("Accept-Encoding, Origin"), "{refused}");
        assert_problem(&preflight(&gw, "/app/items", refused, "PUT", None).await, 404);
    }
    // No Origin: nothing to allow, but the answer depends on it.
    let r = req(&gw, "GET", "/app/items", &[]).await;
    assert!(cors_headers(&r).is_empty());
    assert_eq!(r.header("vary"), Some("Origin"));

    let r = preflight(&gw, "/app/items", APP, "PUT", Some("content-type, x-client-version")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    assert_eq!(r.header("access-control-allow-methods"), Some("GET, POST, PUT, DELETE"));
    assert_eq!(r.header("access-control-allow-headers"), Some("content-type, authorization, x-client-version"));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(r.header("access-control-max-age"), Some("3600"));
    assert_eq!(r.header("access-control-expose-headers"), None);
    assert_eq!(r.header("vary"), Some("Origin"));
    assert_eq!(preflight(&gw, "/app/items", APP, "DELETE", None).await.status, 200);
    // PATCH is routed but not in allowedMethods.
    assert_problem(&preflight(&gw, "/app/items", APP, "PATCH", None).await, 404);

    // OPTIONS on a CORS path that is not a preflight.
    assert_problem(&req(&gw, "OPTIONS", "/app/items", &[]).await, 400);
    assert_problem(&req(&gw, "OPTIONS", "/app/items", &[("origin", APP)]).await, 400);
    assert_problem(&req(&gw, "OPTIONS", "/app/items", &[("access-control-request-method", "GET")]).await, 400);
}

#[tokio::test]
async fn policy_with_origins_from_the_environment() {
    let (_api, gw) = setup().await;
    for origin in [PARTNER, "https://eu.partner.example.org"] {
        let r = req(&gw, "GET", "/partners/cors-headers", &[("origin", origin)]).await;
        assert_eq!(r.header("access-control-allow-origin"), Some(origin));
        assert_eq!(r.header("access-control-allow-credentials"), None);
        assert_eq!(r.header("access-control-expose-headers"), Some("x-exposed"));
    }
    let r = req(&gw, "GET", "/partners/cors-headers", &[("origin", APP)]).await;
    assert!(cors_headers(&r).is_empty());

    let r = preflight(&gw, "/partners/orders", PARTNER, "POST", Some("x-partner-id, authorization")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-methods"), Some("GET, POST"));
    assert_eq!(r.header("access-control-allow-headers"), Some("x-partner-id, authorization"), "`*` reflects");
    assert_eq!(r.header("access-control-max-age"), Some("120"), "from $env(PARTNER_PREFLIGHT_MAX_AGE)");
    assert_eq!(r.header("access-control-allow-credentials"), None);
    assert!(r.header("vary").is_some_and(|v| v.contains("Origin") && v.contains("Access-Control-Request-Headers")));
    // No PUT route on this path.
    assert_problem(&preflight(&gw, "/partners/orders", PARTNER, "PUT", None).await, 404);
}

#[tokio::test]
async fn responses_made_by_policies_and_the_proxy_carry_cors_headers() {
    let (_api, gw) = setup().await;
    let check = |r: &Got, status: u16| {
        assert_eq!(r.status, status, "{}", r.text());
        assert_eq!(r.header("access-control-allow-origin"), Some(APP), "{status}");
        assert_eq!(r.header("access-control-allow-credentials"), Some("true"), "{status}");
        assert!(r.header("vary").is_some_and(|v| v.contains("Origin")), "{status}");
    };
    let r = req(&gw, "GET", "/account/me", &[("origin", APP)]).await;
    check(&r, 401);
    assert_eq!(r.json()["title"], "Unauthorized");
    let r = req(&gw, "GET", "/account/me", &[("origin", APP), ("authorization", "Basic d2ViOnB3")]).await;
    check(&r, 200);

    check(&req(&gw, "GET", "/limited", &[("origin", APP)]).await, 200);
    let r = req(&gw, "GET", "/limited", &[("origin", APP)]).await;
    check(&r, 429);
    assert!(r.header("retry-after").is_some());
    assert!(r.header("access-control-expose-headers").is_some_and(|v| v.contains("retry-after")));

    check(&req(&gw, "GET", "/reports/daily", &[("origin", APP)]).await, 502);
    check(&req(&gw, "GET", "/app/slow/3000", &[("origin", APP)]).await, 504);
    // A disallowed origin still gets the error, without CORS headers.
    let r = req(&gw, "GET", "/reports/daily", &[("origin", "https://evil.test")]).await;
    assert_eq!(r.status, 502);
    assert!(cors_headers(&r).is_empty());
}

#[tokio::test]
async fn bad_cors_configuration_stops_start_up() {
    let api = Upstream::start("api").await;
    let run = |overrides: &[(&'static str, &str)], remove: &[&str]| {
        let mut env = env_for(&api, "http://localhost:3000");
        env.retain(|(k, _)| !remove.contains(k) && !overrides.iter().any(|(o, _)| o == k));
        env.extend(overrides.iter().map(|(k, v)| (*k, (*v).to_owned())));
        let mut cmd = Command::new(gateway_binary("web-api"));
        cmd.env_clear()
            .env("PORT", free_port().to_string())
            .env("HOST", "127.0.0.1")
            .current_dir(std::env::temp_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run the gateway");
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (ok, err) = run(&[], &["PARTNER_ORIGINS", "WEB_APP_ORIGIN"]);
    assert!(!ok);
    assert!(err.contains("PARTNER_ORIGINS") && err.contains("WEB_APP_ORIGIN"), "{err}");
    let (ok, err) = run(&[("WEB_APP_ORIGIN", "localhost:3000")], &[]);
    assert!(!ok);
    assert!(err.contains("web-app") && err.contains("localhost:3000"), "{err}");
    let (ok, err) = run(&[("PARTNER_ORIGINS", "https://a.*.example.com")], &[]);
    assert!(!ok);
    assert!(err.contains("partners"), "{err}");
    let (ok, err) = run(&[("PARTNER_PREFLIGHT_MAX_AGE", "soon")], &[]);
    assert!(!ok);
    assert!(err.contains("partners") && err.contains("soon"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// A real browser.

/// The Chromium binary: `SPECGATE_CHROMIUM`, else `chromium` / `chromium-browser` /
/// `google-chrome` on PATH.
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SPECGATE_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser", "google-chrome"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// The page: runs each cross-origin call against the gateway and writes what it could read
/// into `<pre id="out">` as JSON.
fn page(gateway: &str) -> String {
    format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>cors</title></head>
<body><pre id="out">pending</pre>
<script>
const gw = "{gateway}";
async function attempt(f) {{
  try {{ return await f(); }} catch (e) {{ return "blocked:" + e.name; }}
}}
(async () => {{
  const out = {{}};
  out.simple = await attempt(async () => {{
    const r = await fetch(gw + "/app/cors-headers", {{ credentials: "include" }});
    const body = await r.json();
    return {{ status: r.status, upstream: body.upstream, exposed: r.headers.get("x-exposed"), hidden: r.headers.get("x-hidden") }};
  }});
  out.preflighted = await attempt(async () => {{
    const r = await fetch(gw + "/app/items/7", {{
      method: "PUT",
      credentials: "include",
      headers: {{ "content-type": "application/json", "x-client-version": "2" }},
      body: JSON.stringify({{ name: "seven" }}),
    }});
    const body = await r.json();
    return {{ status: r.status, path: body.path }};
  }});
  out.patch = await attempt(async () => (await fetch(gw + "/app/items/7", {{ method: "PATCH" }})).status);
  out.anything = await attempt(async () => {{
    const r = await fetch(gw + "/open/cors-headers", {{ credentials: "include" }});
    return {{ status: r.status, hidden: r.headers.get("x-hidden") }};
  }});
  out.disallowed = await attempt(async () => (await fetch(gw + "/partners/items")).status);
  out.none = await attempt(async () => (await fetch(gw + "/legacy/cors-headers")).status);
  out.unauthorized = await attempt(async () => {{
    const r = await fetch(gw + "/account/me");
    const body = await r.json();
    return {{ status: r.status, title: body.title, problem: r.headers.get("content-type") }};
  }});
  document.getElementById("out").textContent = JSON.stringify(out);
}})();
</script></body></html>"#
    )
}

/// Serves `html` at every path of `127.0.0.1:port` until the task is aborted.
async fn serve_page(html: String) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.expect("bind page server");
    let port = listener.local_addr().expect("page addr").port();
    let html = Bytes::from(html);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { break };
            let html = html.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let html = html.clone();
                    async move {
                        let mut resp = hyper::Response::new(Full::new(if req.uri().path() == "/" { html } else { Bytes::new() }));
                        if req.uri().path() == "/" {
                            resp.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static("text/html; charset=utf-8"));
                        } else {
                            *resp.status_mut() = hyper::StatusCode::NOT_FOUND;
                        }
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (port, task)
}

/// Runs headless Chromium on `url` and returns the DOM it ended with.
fn dump_dom(browser: &std::path::Path, url: &str) -> String {
    let profile = std::env::temp_dir().join(format!("specgate-chromium-{}-{}", std::process::id(), free_port()));
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--virtual-time-budget=15000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", browser.display()));
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = std::fs::remove_dir_all(&profile);
                panic!("chromium did not finish within 90 s");
            }
        }
    }
    let mut dom = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = std::io::Read::read_to_string(&mut out, &mut dom);
    }
    let _ = std::fs::remove_dir_all(&profile);
    dom
}

/// The JSON the page wrote, from the dumped DOM.
fn page_result(dom: &str) -> serde_json::Value {
    let start = dom.find("<pre id=\"out\">").map(|i| i + "<pre id=\"out\">".len());
    let text = start.and_then(|s| dom.get(s..)).and_then(|rest| rest.split("</pre>").next()).unwrap_or_default();
    let text = text.replace("&quot;", "\"").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("the page wrote no result ({e}); DOM:\n{dom}"))
}

#[tokio::test]
async fn a_browser_reads_only_what_cors_allows() {
    let Some(browser) = chromium() else {
        if std::env::var("SPECGATE_SKIP_BROWSER").is_ok_and(|v| v == "1") {
            eprintln!("skipped: no chromium on PATH (SPECGATE_SKIP_BROWSER=1)");
            return;
        }
        panic!("chromium is not installed (apt-get install chromium); set SPECGATE_SKIP_BROWSER=1 to skip this test locally");
    };
    let api = Upstream::start("api").await;
    // The page and the gateway are different origins: 127.0.0.1:A and localhost:B.
    let gw_port = free_port();
    let (page_port, page_task) = serve_page(page(&format!("http://localhost:{gw_port}"))).await;
    let page_origin = format!("http://127.0.0.1:{page_port}");
    let mut env = env_for(&api, &page_origin);
    env.retain(|(k, _)| *k != "PARTNER_ORIGINS");
    env.push(("PARTNER_ORIGINS", PARTNER.to_owned()));
    let gw = Gateway::start_on(&gateway_binary("web-api"), gw_port, &env).await;

    let url = format!("{page_origin}/");
    let dom = tokio::task::spawn_blocking(move || dump_dom(&browser, &url)).await.expect("browser task");
    page_task.abort();
    let out = page_result(&dom);
    let log = gw.log_text();

    // A simple request with credentials: body and the exposed header readable, the header the
    // upstream tried to expose is not.
    assert_eq!(out["simple"]["status"], 200, "{out}\n{log}");
    assert_eq!(out["simple"]["upstream"], "api");
    assert_eq!(out["simple"]["exposed"], "exposed-value");
    assert_eq!(out["simple"]["hidden"], serde_json::Value::Null);
    // Preflighted PUT with a custom header reached the upstream.
    assert_eq!(out["preflighted"]["status"], 200, "{out}");
    assert_eq!(out["preflighted"]["path"], "/app/items/7");
    let put = api.seen().into_iter().find(|s| s.method == "PUT").expect("the PUT reached the upstream");
    assert_eq!(put.header("x-client-version"), Some("2"));
    assert_eq!(&put.body[..], br#"{"name":"seven"}"#);
    // PATCH is not allowed by the policy: the browser stops at the preflight.
    assert_eq!(out["patch"], "blocked:TypeError", "{out}");
    assert!(api.seen().iter().all(|s| s.method != "PATCH"));
    // anything-goes: readable with credentials, every header exposed.
    assert_eq!(out["anything"]["status"], 200, "{out}");
    assert_eq!(out["anything"]["hidden"], "hidden-value");
    // An origin the partners policy does not list, and a route without CORS.
    assert_eq!(out["disallowed"], "blocked:TypeError", "{out}");
    assert_eq!(out["none"], "blocked:TypeError", "{out}");
    // The 401 of the auth policy is readable, body included.
    assert_eq!(out["unauthorized"]["status"], 401, "{out}");
    assert_eq!(out["unauthorized"]["title"], "Unauthorized");
    assert_eq!(out["unauthorized"]["problem"], "application/problem+json");
}

/// CORS, request validation and caching together on one route chain: what a browser page on
/// an allowed origin gets back from each.
#[tokio::test]
async fn validation_errors_and_cache_hits_carry_each_callers_cors_headers() {
    let (api, gw) = setup().await;
    let other = "https://admin.example.com";

    // A body that breaks the schema: 400 listing the violations, readable by the page.
    let body = r#"{"title": "", "tags": [1], "extra": true}"#;
    let r = send("POST", &gw.url("/notes?draft=maybe"), &[("origin", APP), ("content-type", "application/json")], body).await.expect("request");
    assert_problem(&r, 400);
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    let errors = r.json()["errors"].as_array().cloned().unwrap_or_default();
    let places: Vec<String> = errors.iter().map(|e| format!("{}:{}", e["in"].as_str().unwrap_or(""), e["pointer"].as_str().or(e["name"].as_str()).unwrap_or(""))).collect();
    assert!(places.iter().any(|p| p == "query:draft"), "{places:?}");
    assert!(places.iter().any(|p| p.starts_with("body:/title") || p == "body:"), "{places:?}");
    assert!(places.iter().any(|p| p.starts_with("body:/tags/0")), "{places:?}");
    assert!(api.seen().iter().all(|s| s.target != "/notes?draft=maybe"), "an invalid request never reaches the upstream");

    // A valid one is forwarded byte for byte, with the CORS headers on the way back.
    let body = r#"{"title":"Groceries","tags":["home"]}"#;
    let r = send("POST", &gw.url("/notes?draft=true"), &[("origin", APP), ("content-type", "application/json")], body).await.expect("request");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    assert_eq!(api.last().body, Bytes::from(body));

    // Cached: the second caller is served from the cache, but with its own origin reflected.
    let before = api.seen().len();
    let first = req(&gw, "GET", "/catalog/7", &[("origin", APP)]).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("access-control-allow-origin"), Some(APP));
    let second = req(&gw, "GET", "/catalog/7", &[("origin", other)]).await;
    assert_eq!(second.status, 200);
    assert!(second.header("cache-status").is_some_and(|c| c.contains("hit")), "{:?}", second.header("cache-status"));
    assert_eq!(second.header("access-control-allow-origin"), Some(other), "a hit must not replay the first caller's origin");
    assert!(second.header("vary").is_some_and(|v| v.to_ascii_lowercase().contains("origin")));
    let third = req(&gw, "GET", "/catalog/7", &[("origin", "https://evil.example.net")]).await;
    assert_eq!(third.status, 200);
    assert_eq!(third.header("access-control-allow-origin"), None, "a disallowed origin gets no CORS headers, cached or not");
    assert_eq!(api.seen().len(), before + 1, "one upstream request for three callers");

    // A path parameter under its minimum: 400 with CORS headers, nothing cached or forwarded.
    let r = req(&gw, "GET", "/catalog/0", &[("origin", APP)]).await;
    assert_problem(&r, 400);
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    assert_eq!(api.seen().len(), before + 1);
}
