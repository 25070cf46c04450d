//! Start-up and shutdown: environment errors, graceful shutdown, and a crate generated outside
//! the workspace that builds on its own.

use std::process::Command;
use std::time::Duration;

use specgate_tests::{Gateway, Upstream, gateway_binary, get, target_dir, workspace_root};

#[test]
fn missing_variables_stop_start_up_and_are_all_named() {
    let out = Command::new(gateway_binary("multi-backend"))
        .env("PORT", specgate_tests::free_port().to_string())
        .env("HOST", "127.0.0.1")
        .env("USERS_URL", "http://127.0.0.1:1")
        .env_remove("ORDERS_URL")
        .env_remove("CATALOG_URL")
        .current_dir(std::env::temp_dir())
        .output()
        .expect("run gateway");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing environment variables: CATALOG_URL, ORDERS_URL"), "{err}");
}

#[test]
fn unusable_values_stop_start_up() {
    let out = Command::new(gateway_binary("multi-backend"))
        .env("PORT", "not-a-port")
        .env("USERS_URL", "http://127.0.0.1:1")
        .env("ORDERS_URL", "http://127.0.0.1:1")
        .env("CATALOG_URL", "ftp://files.example.com")
        .current_dir(std::env::temp_dir())
        .output()
        .expect("run gateway");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("PORT=\"not-a-port\" is not a port number"), "{err}");

    let out = Command::new(gateway_binary("multi-backend"))
        .env("PORT", specgate_tests::free_port().to_string())
        .env("USERS_URL", "http://127.0.0.1:1")
        .env("ORDERS_URL", "http://127.0.0.1:1")
        .env("CATALOG_URL", "ftp://files.example.com")
        .current_dir(std::env::temp_dir())
        .output()
        .expect("run gateway");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("baseUrl of catalog is `ftp://files.example.com`: it is not an absolute http(s)://, ws(s):// or local:// URL"), "{err}");
}

#[test]
fn dotenv_in_the_working_directory_is_read() {
    let dir = std::env::temp_dir().join(format!("specgate-dotenv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join(".env"), "USERS_URL=http://127.0.0.1:1\nORDERS_URL=http://127.0.0.1:1\n").expect("write");
    let out = Command::new(gateway_binary("multi-backend"))
        .env("PORT", "not-a-port-either")
        .env_remove("USERS_URL")
        .env_remove("ORDERS_URL")
        .env_remove("CATALOG_URL")
        .current_dir(&dir)
        .output()
        .expect("run gateway");
    let err = String::from_utf8_lossy(&out.stderr);
    // PORT fails first; set a good one and only CATALOG_URL is missing.
    assert!(err.contains("PORT"), "{err}");
    let out = Command::new(gateway_binary("multi-backend"))
        .env("PORT", specgate_tests::free_port().to_string())
        .env_remove("USERS_URL")
        .env_remove("ORDERS_URL")
        .env_remove("CATALOG_URL")
        .current_dir(&dir)
        .output()
        .expect("run gateway");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing environment variable: CATALOG_URL"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish() {
    let up = Upstream::start("slow").await;
    let mut gw = Gateway::start(
        &gateway_binary("multi-backend"),
        &[("USERS_URL", up.url()), ("ORDERS_URL", up.url()), ("CATALOG_URL", up.url())],
    )
    .await;
    let url = gw.url("/catalog/slow/1500");
    let pending = tokio::spawn(async move { get(&url).await });
    // Wait until the request reached the upstream, then ask the gateway to stop.
    for _ in 0..200 {
        if !up.seen().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The upstream records a request when its body is read, before the delay.
    assert_eq!(up.seen().len(), 1);
    let killed = Command::new("kill").args(["-TERM", &gw.pid().to_string()]).status().expect("kill");
    assert!(killed.success());
    let r = pending.await.expect("join").expect("in-flight request completes");
    assert_eq!(r.status, 200);
    let code = tokio::task::spawn_blocking(move || gw.wait_exit(Duration::from_secs(10))).await.expect("join");
    assert_eq!(code, Some(0), "the gateway exits cleanly after draining");
}

/// `--out` outside the workspace: the crate declares its own workspace, points at the runtime
/// by a relative path, and builds with a plain `cargo build`. Its project references two
/// custom modules that do not exist: without `--stub-missing` that is an error printing the
/// signatures to write; with it, stubs answer 501 and the rest of the gateway works.
#[tokio::test]
async fn crate_generated_outside_the_workspace_builds_and_serves() {
    let out = std::env::temp_dir().join(format!("specgate-standalone-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let project = workspace_root().join("tests/fixtures/standalone");
    let mut opts = specgate::generate::Options { name: Some("Standalone GW".into()), out: out.clone(), runtime_path: None, stub_missing: false };
    let (output, diags, files) = specgate::generate::generate(&project, &opts);
    assert!(output.is_none());
    let text = diags.render(&files.unwrap_or_default(), false);
    assert!(text.contains("module `$import(./modules/audit-log)` not found"), "{text}");
    assert!(text.contains("pub async fn audit(request: Request, context: &mut Context"), "{text}");
    assert!(text.contains("pub async fn default(request: Request, context: &mut Context) -> Response"), "{text}");
    assert!(text.contains("module: $import(./modules/reports/monthly-report)"), "the error points at the module: {text}");
    opts.stub_missing = true;
    let (output, diags, _) = specgate::generate::generate(&project, &opts);
    let output = output.unwrap_or_else(|| panic!("generation failed: {diags:?}"));
    specgate::generate::write(&output, &out).expect("write");
    let cargo_toml = std::fs::read_to_string(out.join("Cargo.toml")).expect("Cargo.toml");
    assert!(cargo_toml.contains("name = \"standalone-gw\""), "{cargo_toml}");
    assert!(cargo_toml.contains("[workspace]"), "{cargo_toml}");
    // Reuse the workspace's resolved versions and compiled dependencies.
    std::fs::copy(workspace_root().join("Cargo.lock"), out.join("Cargo.lock")).expect("lock");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--quiet", "--offline"])
        .current_dir(&out)
        .env("CARGO_TARGET_DIR", target_dir())
        .status()
        .expect("cargo build");
    assert!(status.success(), "the standalone crate builds");

    let up = Upstream::start("standalone").await;
    let gw = Gateway::start(&target_dir().join("debug/standalone-gw"), &[("BACKEND", up.url())]).await;
    let r = get(&gw.url("/hello/world")).await.expect("request");
    assert_eq!(r.status, 200);
    assert_eq!(up.last().target, "/greetings/world");
    let r = get(&gw.url("/reports/7")).await.expect("request");
    assert_eq!(r.status, 501);
    assert!(r.json()["detail"].as_str().is_some_and(|d| d.contains("$import(./modules/audit-log)")), "{}", r.text());
    let _ = std::fs::remove_dir_all(&out);
}

#[tokio::test]
async fn container_recipe_and_health_check_command() {
    // The emitted Dockerfile builds this crate from the workspace and runs it unprivileged with
    // a health check that needs nothing but the binary.
    let dockerfile = std::fs::read_to_string(workspace_root().join("generated/multi-backend/Dockerfile")).expect("Dockerfile");
    assert!(dockerfile.contains("cargo build --release --locked -p multi-backend"), "{dockerfile}");
    assert!(dockerfile.contains("docker build -f Dockerfile -t multi-backend ../.."), "{dockerfile}");
    assert!(dockerfile.contains("USER 10001:10001"));
    assert!(dockerfile.contains(r#"HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["/usr/local/bin/gateway", "health-check"]"#));
    assert_eq!(dockerfile.matches("\nFROM ").count(), 2, "two stages");
    let bin = gateway_binary("multi-backend");
    let api = Upstream::start("api").await;
    let env = [("USERS_URL", api.url()), ("ORDERS_URL", api.url()), ("CATALOG_URL", api.url())];
    let gw = Gateway::start(&bin, &env).await;
    let check = |port: u16| {
        Command::new(&bin)
            .arg("health-check")
            .env("PORT", port.to_string())
            .env("USERS_URL", "http://127.0.0.1:1")
            .output()
            .expect("run health-check")
    };
    let healthy = check(gw.addr.port());
    assert!(healthy.status.success(), "{}", String::from_utf8_lossy(&healthy.stderr));
    let nobody = check(specgate_tests::free_port());
    assert!(!nobody.status.success());
    assert!(String::from_utf8_lossy(&nobody.stderr).contains("unhealthy"));
    // The health check answers without starting a second gateway on the port.
    assert_eq!(get(&gw.url("/__zuplo/ping")).await.expect("ping").status, 200);
}

/// A response that is still streaming when SIGTERM arrives is finished, not cut: its last
/// chunk, sent by the upstream only after the signal, reaches the client, and the gateway then
/// exits cleanly.
#[tokio::test]
async fn sigterm_during_a_streaming_response_completes_it() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = Upstream::start("stream").await;
    let mut gw = Gateway::start(
        &gateway_binary("multi-backend"),
        &[("USERS_URL", up.url()), ("ORDERS_URL", up.url()), ("CATALOG_URL", up.url())],
    )
    .await;
    let mut conn = tokio::net::TcpStream::connect(gw.addr).await.expect("connect");
    conn.write_all(b"GET /catalog/stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.expect("write");
    // Read until the first chunk has arrived.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("first;") {
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf)).await.expect("first chunk in time").expect("read");
        assert!(n > 0, "closed before the first chunk: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let killed = Command::new("kill").args(["-TERM", &gw.pid().to_string()]).status().expect("kill");
    assert!(killed.success());
    // Give the gateway time to act on the signal, then let the upstream send the rest.
    tokio::time::sleep(Duration::from_millis(300)).await;
    up.release();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut got)).await.expect("rest in time").expect("read");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("second"), "the chunk sent after SIGTERM arrived: {text}");
    assert!(text.ends_with("0\r\n\r\n"), "the chunked body is complete: {text:?}");
    let code = tokio::task::spawn_blocking(move || gw.wait_exit(Duration::from_secs(10))).await.expect("join");
    assert_eq!(code, Some(0), "the gateway exits cleanly after the stream ends");
}
