//! Building upstream URLs the way generated route functions do: the pieces of
//! `specgate_runtime::template` that compiled `rewritePattern`s call, and the string a
//! `urlForwardHandler` joins (`baseUrl` + normalized path + query), plus the `Uri` parse every
//! upstream URL goes through before it is sent.
//!
//! Run with `cargo bench -p specgate-runtime --bench template`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use specgate_runtime::template as t;
use specgate_runtime::{Body, Problem, Request};

const BASE: &str = "http://users.internal:8080/api";

/// What `handlers::url_forward` builds: base (trailing `/` trimmed) + path + `?query`.
fn forward(base: &str, pathname: &str, query: Option<&str>) -> String {
    let base = base.trim_end_matches('/');
    let mut url = String::with_capacity(base.len() + pathname.len() + query.map_or(0, |q| q.len() + 1));
    url.push_str(base);
    url.push_str(pathname);
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    url
}

/// What the generator emits for
/// `${env.USERS_URL}/users/${params.userId}/orders/${params.orderId}?expand=${query.expand}`.
fn rewrite(env_url: &str, req: &Request, user: &str, order: &str) -> Result<String, Problem> {
    let mut u = String::with_capacity(64);
    t::push_trusted(&mut u, env_url)?;
    u.push_str("/users/");
    t::push_path_segment(&mut u, user)?;
    u.push_str("/orders/");
    t::push_path_segment(&mut u, order)?;
    u.push_str("?expand=");
    t::push_query(&mut u, &t::query(req, "expand"));
    Ok(u)
}

fn bench_templates(c: &mut Criterion) {
    let mut group = c.benchmark_group("template");
    group.bench_function("forward base + path + query", |b| {
        b.iter(|| forward(black_box(BASE), black_box("/catalog/items/42"), black_box(Some("page=2&size=50"))))
    });
    let req = Request::from(
        http::Request::builder()
            .uri("/users/alice/orders/1234?expand=lines%2Cpayments&x=1")
            .body(Body::empty())
            .unwrap_or_else(|e| panic!("request: {e}")),
    );
    let url = rewrite(BASE, &req, "alice", "1234").unwrap_or_else(|p| panic!("{p}"));
    assert_eq!(url, "http://users.internal:8080/api/users/alice/orders/1234?expand=lines%2Cpayments");
    group.bench_function("rewrite two params + query value", |b| {
        b.iter(|| rewrite(black_box(BASE), black_box(&req), black_box("alice"), black_box("1234")))
    });
    // A client value trying to climb, add segments, add query parameters and inject a header.
    let hostile = "../../admin/%2e%2e?role=admin&x=<script>\r\nHost: evil.example#frag ünïcödé";
    let mut probe = String::new();
    assert!(t::push_path_segment(&mut probe, hostile).is_ok());
    assert!(!probe.contains('/') && !probe.contains('?') && !probe.contains('\r'));
    group.bench_function("encode hostile value as a path segment (70 bytes)", |b| {
        b.iter(|| {
            let mut s = String::with_capacity(160);
            let r = t::push_path_segment(&mut s, black_box(hostile));
            (r, s)
        })
    });
    group.bench_function("encode hostile value as a query value (70 bytes)", |b| {
        b.iter(|| {
            let mut s = String::with_capacity(160);
            t::push_query(&mut s, black_box(hostile));
            s
        })
    });
    group.bench_function("refuse a dot-segment in a {+rest} value", |b| {
        b.iter(|| t::push_path_rest(&mut String::new(), black_box("a/b/../../etc/passwd")).is_err())
    });
    group.bench_function("parse the upstream URL into an http::Uri", |b| {
        b.iter(|| black_box(&url).parse::<http::Uri>())
    });
    group.finish();
}

criterion_group!(benches, bench_templates);
criterion_main!(benches);
