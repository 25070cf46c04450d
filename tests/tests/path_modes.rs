//! The path-modes example: open-api and url-pattern paths, first-match order, redirects.

use specgate_tests::{Gateway, Upstream, gateway_binary, get, send};

async fn setup() -> (Upstream, Gateway) {
    let api = Upstream::start("api").await;
    let gw = Gateway::start(&gateway_binary("path-modes"), &[("API_URL", api.url())]).await;
    (api, gw)
}

#[tokio::test]
async fn open_api_paths_route_in_document_order() {
    let (api, gw) = setup().await;
    let cases = [
        ("/users/get(42)", "/users/42"),
        ("/users/me", "/users/current"),
        ("/users/7", "/users/7"),
        ("/users/7/avatar.png", "/avatars/7?format=png"),
        ("/users/a%20b/avatar.x.webp", "/avatars/a%20b?format=x.webp"),
        ("/files/docs/2024/report.pdf?ignored=1", "/storage/docs/2024/report.pdf"),
    ];
    for (path, upstream) in cases {
        let r = get(&gw.url(path)).await.expect("request");
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(api.last().target, upstream, "{path}");
    }
    // PUT on the same path is another route: a plain forward of the whole path.
    send("PUT", &gw.url("/users/9"), &[], "{}").await.expect("request");
    assert_eq!((api.last().method.as_str(), api.last().target.as_str()), ("PUT", "/users/9"));
    // `{id}` needs a non-empty segment; `/users/` has none.
    assert_eq!(get(&gw.url("/users/")).await.expect("request").status, 404);
}

#[tokio::test]
async fn url_pattern_paths() {
    let (api, gw) = setup().await;
    let cases = [
        ("/v1/books/123", "/books/123"),
        ("/v1/books/dune", "/books/by-slug/dune"),
        ("/v1/static/css/site.css", "/cdn/v1/static/css/site.css"),
        ("/v1/reports", "/reports"),
        ("/v1/reports/", "/reports"),
    ];
    for (path, upstream) in cases {
        let r = get(&gw.url(path)).await.expect("request");
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(api.last().target, upstream, "{path}");
    }
    assert_eq!(get(&gw.url("/v1/reports/x")).await.expect("request").status, 404);
}

#[tokio::test]
async fn redirects() {
    let (api, gw) = setup().await;
    let r = get(&gw.url("/docs")).await.expect("request");
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("https://docs.example.com/api"));
    let r = get(&gw.url("/old/users/5")).await.expect("request");
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), Some("/users/5"));
    // A client value stays one encoded segment in the location.
    let r = get(&gw.url("/old/users/a%2F..%2Fadmin")).await.expect("request");
    assert_eq!(r.header("location"), Some("/users/a%2F..%2Fadmin"));
    assert!(api.seen().is_empty(), "redirects never call the upstream");
}
