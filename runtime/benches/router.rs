//! `Router::lookup` on route tables shaped like real APIs, from 10 to 10,000 routes.
//!
//! Run with `cargo bench -p specgate-runtime --bench router`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::Method;
use specgate_runtime::router::{Lookup, Part, Pattern, RouteSpec, Router, Seg};

/// Patterns must be `&'static` (the generator emits them as constants), so the benchmark's
/// generated ones are leaked once at start-up.
fn leak<T>(v: Vec<T>) -> &'static [T] {
    Box::leak(v.into_boxed_slice())
}

fn leak_str(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn segments(method: &'static str, segs: Vec<Seg>) -> RouteSpec {
    RouteSpec {
        method,
        pattern: Pattern::Segments(leak(segs)),
        params: &[],
    }
}

/// `n` routes: per resource a CRUD set, a `.json` variant (Mixed), a nested catch-all
/// (Rest), a regex route every tenth resource, and one route with a leading parameter at
/// the end (it sits at the trie's root, so every lookup has to consider it).
fn api(n: usize) -> &'static [RouteSpec] {
    const JSON: &[Part] = &[Part::Param, Part::Lit(".json")];
    let mut routes = Vec::with_capacity(n + 8);
    let mut i = 0;
    while routes.len() + 1 < n.max(2) {
        let res = leak_str(format!("resource{i}"));
        let base = || vec![Seg::Lit("v1"), Seg::Lit(res)];
        let with = |extra: &[Seg]| {
            let mut segs = base();
            segs.extend_from_slice(extra);
            segs
        };
        routes.push(segments("GET", base()));
        routes.push(segments("POST", base()));
        routes.push(segments("GET", with(&[Seg::Mixed(JSON)])));
        routes.push(segments("GET", with(&[Seg::Param])));
        routes.push(segments("PUT", with(&[Seg::Param])));
        routes.push(segments("DELETE", with(&[Seg::Param])));
        routes.push(segments(
            "GET",
            with(&[Seg::Param, Seg::Lit("sub"), Seg::Rest]),
        ));
        if i % 10 == 9 {
            routes.push(RouteSpec {
                method: "GET",
                pattern: Pattern::Regex {
                    regex: leak_str(format!(r"^/v1/{res}/search/(\d+)(?:/(.*))?$")),
                    prefix: leak(vec!["v1", res, "search"]),
                },
                params: &[],
            });
        }
        i += 1;
    }
    routes.truncate(n.max(2) - 1);
    routes.push(segments("GET", vec![Seg::Param, Seg::Lit("status")]));
    leak(routes)
}

/// The resource index of the last complete `/{id}/sub/{+rest}` route in the table.
fn last_rest_resource(routes: &[RouteSpec]) -> Option<&'static str> {
    routes.iter().rev().find_map(|r| match r.pattern {
        Pattern::Segments(
            [
                Seg::Lit("v1"),
                Seg::Lit(res),
                Seg::Param,
                Seg::Lit("sub"),
                Seg::Rest,
            ],
        ) => Some(*res),
        _ => None,
    })
}

/// A named lookup and the outcome it must have (checked once, so the numbers are for the
/// intended code path).
type Case<'p> = (&'static str, Method, &'p str, fn(&Lookup<'_>) -> bool);

fn bench_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("router_lookup");
    for n in [10, 1_000, 10_000] {
        let routes = api(n);
        let router = match Router::new(routes) {
            Ok(router) => router,
            Err(e) => panic!("route table: {e}"),
        };
        let late_res = last_rest_resource(routes).unwrap_or("resource0");
        let late = format!("/v1/{late_res}/12345/sub/a/b/c");
        let cases: [Case<'_>; 5] = [
            ("early_hit", Method::GET, "/v1/resource0/42", |l| {
                matches!(l, Lookup::Found { route: 3, .. })
            }),
            (
                "late_hit",
                Method::GET,
                &late,
                |l| matches!(l, Lookup::Found { params, .. } if params.raw(1) == Some("a/b/c")),
            ),
            ("mixed_hit", Method::GET, "/v1/resource0/42.json", |l| {
                matches!(l, Lookup::Found { route: 2, .. })
            }),
            ("miss_404", Method::GET, "/v1/nothing/here/at/all", |l| {
                matches!(l, Lookup::NotFound)
            }),
            ("method_405", Method::PATCH, "/v1/resource0/42", |l| {
                matches!(l, Lookup::MethodNotAllowed { .. })
            }),
        ];
        for (name, method, path, check) in &cases {
            let outcome = router.lookup(method, path);
            assert!(
                check(&outcome),
                "{name} with {n} routes: {path} gave {outcome:?}"
            );
            group.bench_with_input(BenchmarkId::new(*name, n), path, |b, path| {
                b.iter(|| router.lookup(black_box(method), black_box(path)));
            });
        }
    }
    group.finish();

    // Start-up cost, for context (it is paid once per process).
    let mut group = c.benchmark_group("router_new");
    group.sample_size(10);
    let routes = api(10_000);
    group.bench_function("10000", |b| b.iter(|| Router::new(black_box(routes))));
    group.finish();
}

criterion_group!(benches, bench_lookup);
criterion_main!(benches);
