//! TLS termination on the gateway: HTTP/1.1 and HTTP/2 through ALPN for clients trusting the
//! test CA, refused handshakes for the others, plain HTTP on the TLS port, the limits, the
//! health check, bad certificate files, and a certificate reload on SIGHUP.

use std::process::Command;
use std::time::{Duration, Instant};

use specgate_tests::{Gateway, TestPki, Upstream, gateway_binary, send_tls};

fn upstream_env(users: &Upstream) -> Vec<(&'static str, String)> {
    vec![("USERS_URL", users.url()), ("ORDERS_URL", users.url()), ("CATALOG_URL", format!("{}/", users.url()))]
}

fn tls_env(cert: &std::path::Path, key: &std::path::Path) -> Vec<(&'static str, String)> {
    vec![("TLS_CERT_FILE", cert.display().to_string()), ("TLS_KEY_FILE", key.display().to_string())]
}

#[tokio::test]
async fn https_over_http1_and_http2_for_clients_trusting_the_ca() {
    let users = Upstream::start("users").await;
    let pki = TestPki::generate();
    let (cert, key) = pki.write_files("serve");
    let mut env = upstream_env(&users);
    env.extend(tls_env(&cert, &key));
    let gw = Gateway::start_https(&gateway_binary("multi-backend"), &env, &pki.ca_pem).await;
    assert!(gw.log_text().contains(&format!("listening on https://{}", gw.addr)), "{}", gw.log_text());

    let (r, version) = send_tls(gw.addr, &pki.ca_pem, false, "GET", "/api/users/5", &[]).await.expect("HTTP/1.1 over TLS");
    assert_eq!((r.status, version), (200, hyper::Version::HTTP_11));
    assert_eq!(r.json()["upstream"], "users");
    let seen = users.last();
    assert_eq!(seen.target, "/users/5");
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));

    let (r, version) = send_tls(gw.addr, &pki.ca_pem, true, "GET", "/api/users/6", &[]).await.expect("HTTP/2 over TLS");
    assert_eq!((r.status, version), (200, hyper::Version::HTTP_2));
    assert_eq!(users.last().target, "/users/6");
    assert!(r.header("x-request-id").is_some());

    // A client that does not trust the CA refuses the handshake.
    let stranger = TestPki::generate();
    let err = send_tls(gw.addr, &stranger.ca_pem, false, "GET", "/__zuplo/ping", &[]).await.expect_err("untrusted");
    assert!(err.contains("TLS handshake"), "{err}");

    // Plain HTTP on the TLS port gets no HTTP answer, and the server keeps serving.
    let answer = specgate_tests::raw_exchange(gw.addr, b"GET /__zuplo/ping HTTP/1.1\r\nHost: localhost\r\n\r\n", Duration::from_secs(3)).await;
    assert!(!answer.contains("200"), "{answer:?}");
    let (r, _) = send_tls(gw.addr, &pki.ca_pem, true, "GET", "/__zuplo/ping", &[]).await.expect("still serving");
    assert_eq!(r.status, 200);

    // `gateway health-check` talks TLS to its own listener.
    let out = Command::new(gateway_binary("multi-backend"))
        .arg("health-check")
        .env("PORT", gw.addr.port().to_string())
        .env("HOST", "127.0.0.1")
        .env("TLS_CERT_FILE", &cert)
        .env("TLS_KEY_FILE", &key)
        .output()
        .expect("health-check");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Without the certificate it would speak plain HTTP, which the listener does not answer.
    let out = Command::new(gateway_binary("multi-backend"))
        .arg("health-check")
        .env("PORT", gw.addr.port().to_string())
        .env("HOST", "127.0.0.1")
        .env_remove("TLS_CERT_FILE")
        .env_remove("TLS_KEY_FILE")
        .current_dir(std::env::temp_dir())
        .output()
        .expect("health-check");
    assert!(!out.status.success());
}

#[tokio::test]
async fn handshake_timeout_header_timeout_and_connection_limit_apply_over_tls() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let users = Upstream::start("users").await;
    let pki = TestPki::generate();
    let (cert, key) = pki.write_files("limits");
    let mut env = upstream_env(&users);
    env.extend(tls_env(&cert, &key));
    env.push(("TLS_HANDSHAKE_TIMEOUT_SECONDS", "1".to_owned()));
    env.push(("HEADER_READ_TIMEOUT_SECONDS", "1".to_owned()));
    env.push(("MAX_CONNECTIONS", "2".to_owned()));
    let gw = Gateway::start_https(&gateway_binary("multi-backend"), &env, &pki.ca_pem).await;

    // A client that never starts the handshake is closed after the handshake timeout.
    let started = Instant::now();
    let mut silent = tokio::net::TcpStream::connect(gw.addr).await.expect("connect");
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf)).await.expect("closed within 5 s");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    assert!(started.elapsed() >= Duration::from_millis(900), "{:?}", started.elapsed());
    drop(silent);

    // After the handshake, a request head that never completes is cut after the header timeout.
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(specgate_tests::tls_client_config(&pki.ca_pem, &[b"http/1.1"])));
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.expect("connect");
    let mut tls = connector.connect(name.clone(), tcp).await.expect("handshake");
    tls.write_all(b"GET /__zuplo/ping HTTP/1.1\r\nHost: local").await.expect("write");
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the slow head was cut");
    let text = String::from_utf8_lossy(&out);
    assert!(!text.contains("200 OK"), "{text}");

    // Two open connections use up MAX_CONNECTIONS=2: a third is closed at once.
    let mut held = Vec::new();
    for _ in 0..2 {
        let tcp = tokio::net::TcpStream::connect(gw.addr).await.expect("connect");
        held.push(connector.connect(name.clone(), tcp).await.expect("handshake"));
    }
    let third = tokio::net::TcpStream::connect(gw.addr).await.expect("connect");
    let refused = tokio::time::timeout(Duration::from_secs(3), connector.connect(name.clone(), third)).await;
    assert!(matches!(refused, Ok(Err(_))), "the third connection is closed");
    drop(held);
    // Permits come back when connections close.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok((r, _)) = send_tls(gw.addr, &pki.ca_pem, false, "GET", "/__zuplo/ping", &[]).await {
            assert_eq!(r.status, 200);
            break;
        }
        assert!(Instant::now() < deadline, "connections were not released");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn bad_certificate_files_stop_start_up_with_a_clear_message() {
    let pki = TestPki::generate();
    let (cert, key) = pki.write_files("bad");
    let other = TestPki::generate();
    let (_, other_key) = other.write_files("bad-other");
    let garbage = cert.with_file_name("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    let missing = cert.with_file_name("missing.pem");
    let run = |env: &[(&str, &std::path::Path)]| {
        let mut cmd = Command::new(gateway_binary("multi-backend"));
        cmd.env("PORT", specgate_tests::free_port().to_string())
            .env("HOST", "127.0.0.1")
            .env("USERS_URL", "http://127.0.0.1:1")
            .env("ORDERS_URL", "http://127.0.0.1:1")
            .env("CATALOG_URL", "http://127.0.0.1:1")
            .env_remove("TLS_CERT_FILE")
            .env_remove("TLS_KEY_FILE")
            .current_dir(std::env::temp_dir());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run gateway");
        assert_eq!(out.status.code(), Some(1), "start-up must fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run(&[("TLS_CERT_FILE", &missing), ("TLS_KEY_FILE", &key)]);
    assert!(err.contains(&format!("TLS_CERT_FILE={:?} cannot be read", missing.display().to_string())), "{err}");
    let err = run(&[("TLS_CERT_FILE", &garbage), ("TLS_KEY_FILE", &key)]);
    assert!(err.contains("contains no certificate"), "{err}");
    let err = run(&[("TLS_CERT_FILE", &cert), ("TLS_KEY_FILE", &garbage)]);
    assert!(err.contains("contains no private key"), "{err}");
    let err = run(&[("TLS_CERT_FILE", &cert), ("TLS_KEY_FILE", &other_key)]);
    assert!(err.contains("do not go together"), "{err}");
    let err = run(&[("TLS_CERT_FILE", &cert)]);
    assert!(err.contains("TLS_CERT_FILE is set but TLS_KEY_FILE is not"), "{err}");
}

#[tokio::test]
async fn sighup_reloads_the_certificate_and_a_bad_one_is_ignored() {
    let users = Upstream::start("users").await;
    let first = TestPki::generate();
    let (cert, key) = first.write_files("reload");
    let mut env = upstream_env(&users);
    env.extend(tls_env(&cert, &key));
    let gw = Gateway::start_https(&gateway_binary("multi-backend"), &env, &first.ca_pem).await;
    let hup = || {
        let ok = Command::new("kill").args(["-HUP", &gw.pid().to_string()]).status().expect("kill");
        assert!(ok.success());
    };

    let second = TestPki::generate();
    std::fs::write(&cert, &second.chain_pem).expect("write cert");
    std::fs::write(&key, &second.key_pem).expect("write key");
    hup();
    let deadline = Instant::now() + Duration::from_secs(10);
    while send_tls(gw.addr, &second.ca_pem, false, "GET", "/__zuplo/ping", &[]).await.is_err() {
        assert!(Instant::now() < deadline, "the new certificate was not loaded: {}", gw.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(send_tls(gw.addr, &first.ca_pem, false, "GET", "/__zuplo/ping", &[]).await.is_err(), "the old certificate is gone");

    // A broken file on reload: logged, and the certificate in force stays.
    std::fs::write(&key, "broken\n").expect("write key");
    hup();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gw.log_text().contains("TLS certificate not reloaded") {
        assert!(Instant::now() < deadline, "{}", gw.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (r, _) = send_tls(gw.addr, &second.ca_pem, true, "GET", "/__zuplo/ping", &[]).await.expect("still the second certificate");
    assert_eq!(r.status, 200);
}
