//! Outer gateway (API keys, basic auth, upstream JWT) in front of an inner gateway that
//! verifies the outer one's JWT through its published JWKS, against a real backend; the key
//! store as a file (reloaded while running) and in a real Redis shared by two replicas.

use std::process::Command;
use std::time::{Duration, Instant};

use specgate_tests::redis::RedisServer;
use specgate_tests::{Gateway, Got, Upstream, free_port, gateway_binary, get, send, specgate_binary};

fn keys(args: &[&str]) -> String {
    let out = Command::new(specgate_binary()).arg("keys").args(args).output().expect("specgate keys");
    assert!(out.status.success(), "specgate keys {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The key printed by `keys create`/`rotate`: the line that starts with the key prefix.
fn printed_key(stdout: &str) -> String {
    stdout.lines().map(str::trim).find(|l| l.starts_with("zpka_")).expect("a key is printed").to_owned()
}

async fn as_key(gw: &Gateway, path: &str, key: &str) -> Got {
    send("GET", &gw.url(path), &[("authorization", &format!("Bearer {key}"))], "").await.expect("request")
}

/// Polls until `check` holds (bounded): for changes that take effect within a cache TTL.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Pair {
    backend: Upstream,
    inner: Gateway,
    outer: Gateway,
}

async fn pair(store: &[(&str, String)]) -> Pair {
    let backend = Upstream::start("backend").await;
    // The outer gateway starts first: the inner one fetches the outer's JWKS when it starts.
    let (outer_port, inner_port) = (free_port(), free_port());
    let mut env = vec![
        ("INNER_URL", format!("http://127.0.0.1:{inner_port}")),
        ("DEDICATED_INNER_URL", backend.url()),
        ("PARTNER_BACKEND_URL", backend.url()),
        ("PARTNER_PASSWORD", "partner-pass".to_owned()),
        ("INNER_STATIC_KEY", "static-upstream-key".to_owned()),
        ("API_KEY_CACHE_TTL_SECONDS", "1".to_owned()),
    ];
    env.extend(store.iter().cloned());
    let outer = Gateway::start_on(&gateway_binary("outer-gateway"), outer_port, &env).await;
    let inner = Gateway::start_on(
        &gateway_binary("inner-gateway"),
        inner_port,
        &[
            ("BACKEND_URL", backend.url()),
            ("OUTER_JWKS_URL", format!("http://127.0.0.1:{outer_port}/.well-known/jwks.json")),
        ],
    )
    .await;
    Pair { backend, inner, outer }
}

#[tokio::test]
async fn api_keys_upstream_jwt_and_the_inner_gateway() {
    let dir = std::env::temp_dir().join(format!("specgate-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("api-keys.json");
    let f = file.to_string_lossy().into_owned();
    let standard = printed_key(&keys(&["create", "--file", &f, "--consumer", "globex", "--metadata", r#"{"tier":"standard"}"#]));
    let enterprise = printed_key(&keys(&["create", "--file", &f, "--consumer", "acme", "--metadata", r#"{"tier":"enterprise"}"#]));
    let stored = std::fs::read_to_string(&file).expect("key file");
    assert!(!stored.contains(&standard), "only hashes are stored");

    let p = pair(&[("API_KEYS_FILE", f.clone())]).await;

    // No key, a malformed key, an unknown well-formed key: 401 with WWW-Authenticate.
    let r = get(&p.outer.url("/api/orders/1")).await.expect("request");
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").is_some_and(|h| h.starts_with("Bearer")));
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(as_key(&p.outer, "/api/orders/1", "zpka_not-a-key").await.status, 401);
    let mut forged = standard.clone();
    forged.replace_range(8..9, if &standard[8..9] == "A" { "B" } else { "A" });
    assert_eq!(as_key(&p.outer, "/api/orders/1", &forged).await.status, 401);
    assert!(!p.outer.log_text().contains(&standard[5..]), "keys never appear in logs");

    // A standard consumer goes through the inner gateway, which verifies the outer's JWT.
    let r = as_key(&p.outer, "/api/orders/1?x=1", &standard).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = p.backend.last();
    assert_eq!(seen.target, "/orders/1?x=1");
    assert_eq!(seen.header("x-verified-by"), Some("inner-gateway"));
    let auth = seen.header("authorization").unwrap_or("");
    assert!(auth.starts_with("Bearer ey"), "the upstream JWT reaches the inner gateway and beyond: {auth}");
    assert!(!auth.contains(&standard));

    // The enterprise consumer is routed by its metadata elsewhere (here: the backend directly).
    let r = as_key(&p.outer, "/api/reports", &enterprise).await;
    assert_eq!(r.status, 200);
    assert_eq!(p.backend.last().target, "/reports");

    // The inner gateway refuses callers without the outer's token, and checks scopes.
    assert_eq!(get(&p.inner.url("/orders/1")).await.expect("request").status, 401);
    let r = send("GET", &p.inner.url("/orders/1"), &[("authorization", "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.")], "").await.expect("request");
    assert_eq!(r.status, 401, "alg none is refused");
    let r = as_key(&p.outer, "/api/../admin/x", &standard).await;
    assert!(r.status == 404 || r.status == 401, "no way around the outer gateway's routes");

    // Partner basic auth with a static upstream key.
    use base64_helper::encode;
    let good = format!("Basic {}", encode("partner:partner-pass"));
    let r = send("GET", &p.outer.url("/partner/feed"), &[("authorization", &good)], "").await.expect("request");
    assert_eq!(r.status, 200);
    let seen = p.backend.last();
    assert_eq!(seen.target, "/feeds/feed");
    assert_eq!(seen.header("x-api-key"), Some("static-upstream-key"));
    let bad = format!("Basic {}", encode("partner:nope"));
    let r = send("GET", &p.outer.url("/partner/feed"), &[("authorization", &bad)], "").await.expect("request");
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").is_some_and(|h| h.starts_with("Basic")));

    // Keys created and revoked while the gateway runs take effect without a restart.
    let late = printed_key(&keys(&["create", "--file", &f, "--consumer", "initech", "--metadata", r#"{"tier":"standard"}"#]));
    eventually("a new key is accepted", async || as_key(&p.outer, "/api/orders/2", &late).await.status == 200).await;
    keys(&["revoke", "--file", &f, "--consumer", "initech"]);
    eventually("a revoked key is refused", async || as_key(&p.outer, "/api/orders/2", &late).await.status == 401).await;
    assert_eq!(as_key(&p.outer, "/api/orders/3", &standard).await.status, 200, "other keys still work");

    // Rotation keeps the old key for the grace period and issues a new one.
    let rotated = printed_key(&keys(&["rotate", "--file", &f, "--consumer", "globex", "--grace", "1h"]));
    eventually("the rotated key is accepted", async || as_key(&p.outer, "/api/orders/4", &rotated).await.status == 200).await;
    assert_eq!(as_key(&p.outer, "/api/orders/5", &standard).await.status, 200, "the old key is valid during the grace period");
    let listed = keys(&["list", "--file", &f]);
    assert!(listed.contains("globex") && listed.contains("acme"), "{listed}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A signing key both replicas share (a test key, not used anywhere else).
const SHARED_SIGNING_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINkHzmAbt3/Z74wcjEoMJaTtS3MZdwShDnyngnj/3jsn\n-----END PRIVATE KEY-----\n";

#[tokio::test]
async fn redis_keys_are_shared_by_replicas_and_revocation_reaches_both() {
    let redis = RedisServer::start();
    let key = printed_key(&keys(&["create", "--redis", &redis.url, "--consumer", "globex", "--metadata", r#"{"tier":"standard"}"#]));
    let store = [("API_KEYS_REDIS_URL", redis.url.clone()), ("UPSTREAM_JWT_PRIVATE_KEY", SHARED_SIGNING_KEY.to_owned())];
    let a = pair(&store).await;
    let b = Gateway::start(
        &gateway_binary("outer-gateway"),
        &[
            ("INNER_URL", format!("http://{}", a.inner.addr)),
            ("DEDICATED_INNER_URL", a.backend.url()),
            ("PARTNER_BACKEND_URL", a.backend.url()),
            ("PARTNER_PASSWORD", "x".to_owned()),
            ("INNER_STATIC_KEY", "x".to_owned()),
            ("API_KEY_CACHE_TTL_SECONDS", "1".to_owned()),
            ("API_KEYS_REDIS_URL", redis.url.clone()),
            ("UPSTREAM_JWT_PRIVATE_KEY", SHARED_SIGNING_KEY.to_owned()),
        ],
    )
    .await;
    assert_eq!(as_key(&a.outer, "/api/orders/1", &key).await.status, 200);
    assert_eq!(as_key(&b, "/api/orders/2", &key).await.status, 200, "replica b shares keys and signing key");
    assert_eq!(a.backend.last().target, "/orders/2");
    keys(&["revoke", "--redis", &redis.url, "--consumer", "globex"]);
    eventually("replica a refuses the revoked key", async || as_key(&a.outer, "/api/orders/1", &key).await.status == 401).await;
    eventually("replica b refuses the revoked key", async || as_key(&b, "/api/orders/1", &key).await.status == 401).await;
}

mod base64_helper {
    /// Standard base64 with padding (for Basic credentials).
    pub(crate) fn encode(s: &str) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let b = s.as_bytes();
        let mut out = String::new();
        for chunk in b.chunks(3) {
            let n = (chunk[0] as u32) << 16 | (*chunk.get(1).unwrap_or(&0) as u32) << 8 | *chunk.get(2).unwrap_or(&0) as u32;
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}
