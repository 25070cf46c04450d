//! `specgate dev`: the development loop as a user runs it.
//!
//! A copy of `specs/path-modes` (its upstream named in the project's `.env`) is run with
//! `specgate dev` as a real process; the test edits the project the way an editor would and
//! talks to the gateway over loopback. The dev build goes to this workspace's target directory
//! from a project at a stable path inside it, so a later run rebuilds only the gateway crate.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use specgate_tests::{Upstream, free_port, get, specgate_binary, target_dir, workspace_root};

/// The first build in a fresh target directory compiles the runtime's dependency tree once
/// more: a standalone crate unifies features differently from the workspace, so little of the
/// workspace's own build is reused (later runs reuse this one: the project's path is stable).
const FIRST_BUILD: Duration = Duration::from_secs(600);
/// A rebuild compiles the gateway crate only.
const REBUILD: Duration = Duration::from_secs(180);
/// Regeneration without a build (a broken project).
const REGENERATE: Duration = Duration::from_secs(30);

/// A running `specgate dev`, with everything it (and the gateway it runs) printed.
struct Dev {
    child: Child,
    output: Arc<Mutex<String>>,
}

impl Dev {
    fn start(project: &Path, port: u16) -> Dev {
        let mut child = Command::new(specgate_binary())
            .args(["dev", "--port", &port.to_string()])
            .arg(project)
            .env("CARGO_TARGET_DIR", target_dir())
            .env("LOG_LEVEL", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start specgate dev");
        let output = Arc::new(Mutex::new(String::new()));
        for stream in [child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>), child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>)]
            .into_iter()
            .flatten()
        {
            let out = output.clone();
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut o) = out.lock() {
                        o.push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                }
            });
        }
        Dev { child, output }
    }

    fn output(&self) -> String {
        self.output.lock().map(|o| o.clone()).unwrap_or_default()
    }

    /// Waits until the output after byte `from` contains `what`; returns that part of the output.
    async fn wait_output(&mut self, from: usize, what: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.output();
            let tail = out.get(from..).unwrap_or("").to_owned();
            if tail.contains(what) {
                return tail;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("specgate dev exited ({status}) before printing {what:?}; its output:\n{out}");
            }
            assert!(Instant::now() < deadline, "no {what:?} within {timeout:?}; the output:\n{out}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `url` answers `status`.
    async fn wait_status(&mut self, url: &str, status: u16, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let got = get(url).await;
            if got.as_ref().is_ok_and(|g| g.status == status) {
                return;
            }
            if let Ok(Some(s)) = self.child.try_wait() {
                panic!("specgate dev exited ({s}); {url} answered {got:?}; its output:\n{}", self.output());
            }
            assert!(Instant::now() < deadline, "{url} did not answer {status} within {timeout:?} (last: {got:?}); the output:\n{}", self.output());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGTERM (as Ctrl-C would) and the exit code.
    fn terminate(&mut self) -> Option<i32> {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() && self.terminate().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `config/routes.oas.json:LINE:COL` somewhere in `text`.
fn has_position(text: &str, file: &str) -> bool {
    text.match_indices(&format!("{file}:")).any(|(i, m)| {
        let rest = &text[i + m.len()..];
        let line: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let after = &rest[line.len()..];
        !line.is_empty() && after.starts_with(':') && after[1..].starts_with(|c: char| c.is_ascii_digit())
    })
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            copy_dir(&path, &to.join(entry.file_name()));
        } else {
            std::fs::copy(&path, to.join(entry.file_name())).expect("copy file");
        }
    }
}

/// Adds a route forwarding to `${env.<base_var>}` to the OpenAPI document.
fn with_route(doc: &Value, path: &str, base_var: &str, extra: Option<(&str, Value)>) -> Value {
    let mut doc = doc.clone();
    let mut route = json!({
        "handler": {
            "export": "urlForwardHandler",
            "module": "$import(@zuplo/runtime)",
            "options": { "baseUrl": format!("${{env.{base_var}}}") }
        }
    });
    if let Some((k, v)) = extra {
        route[k] = v;
    }
    doc["paths"][path] = json!({ "get": { "operationId": path.trim_start_matches('/').replace('-', "_"), "x-zuplo-route": route } });
    doc
}

fn write_json(path: &Path, v: &Value) {
    std::fs::write(path, serde_json::to_string_pretty(v).expect("json")).expect("write spec");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_rebuilds_on_change_and_keeps_the_last_good_gateway_serving() {
    let upstream = Upstream::start("api").await;
    // Inside the target directory: a stable path, so the dev crate's build is reused by the
    // next run of this test.
    let project: PathBuf = target_dir().join("specgate-dev-test").join("dev-loop");
    let _ = std::fs::remove_dir_all(&project);
    copy_dir(&workspace_root().join("specs/path-modes/config"), &project.join("config"));
    std::fs::write(project.join(".env"), format!("# read by the gateway from its working directory\nAPI_URL={}\n", upstream.url())).expect("write .env");
    let spec = project.join("config/routes.oas.json");
    let original: Value = serde_json::from_str(&std::fs::read_to_string(&spec).expect("read spec")).expect("spec is JSON");

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut dev = Dev::start(&project, port);

    // First generation and build: the gateway serves the project's routes, its upstream
    // taken from the project's .env.
    dev.wait_status(&format!("{base}/users/me"), 200, FIRST_BUILD).await;
    let out = dev.wait_output(0, "serving on http://127.0.0.1:", Duration::from_secs(5)).await;
    assert!(out.contains(&format!(":{port}: 12 routes")), "summary line with the route count and port: {out}");
    assert_eq!(upstream.last().target, "/users/current");
    assert_eq!(get(&format!("{base}/dev-added")).await.expect("request").status, 404);
    assert!(project.join(".specgate/.gitignore").exists(), "the build cache ignores itself");

    // A new route: served after the rebuild.
    let mark = dev.output().len();
    write_json(&spec, &with_route(&original, "/dev-added", "API_URL", None));
    dev.wait_status(&format!("{base}/dev-added"), 200, REBUILD).await;
    assert_eq!(upstream.last().target, "/dev-added");
    let out = dev.wait_output(mark, "13 routes", Duration::from_secs(5)).await;
    assert!(out.contains("changed:") && out.contains("routes.oas.json"), "the changed file is named: {out}");
    let good = with_route(&original, "/dev-added", "API_URL", None);

    // A syntax error: the diagnostic with file:line:col, and the last good gateway still serves.
    let mark = dev.output().len();
    let text = serde_json::to_string_pretty(&good).expect("json");
    std::fs::write(&spec, text.replacen("\"paths\": {", "\"paths\": {{", 1)).expect("write broken spec");
    let out = dev.wait_output(mark, "the project has errors", REGENERATE).await;
    assert!(has_position(&out, "config/routes.oas.json"), "diagnostic with file:line:col: {out}");
    assert!(out.contains("the previous gateway keeps serving"), "{out}");
    let got = get(&format!("{base}/dev-added")).await.expect("the old gateway answers");
    assert_eq!(got.status, 200, "{got:?}");

    // An unknown policy: the same.
    let mark = dev.output().len();
    write_json(&spec, &with_route(&good, "/dev-policy", "API_URL", Some(("policies", json!({ "inbound": ["no-such-policy"] })))));
    let out = dev.wait_output(mark, "the project has errors", REGENERATE).await;
    assert!(out.contains("no-such-policy") && has_position(&out, "config/routes.oas.json"), "diagnostic names the policy and where: {out}");
    assert_eq!(get(&format!("{base}/dev-added")).await.expect("the old gateway answers").status, 200);
    assert_eq!(get(&format!("{base}/dev-policy")).await.expect("request").status, 404, "the broken route is not served");

    // A route whose upstream variable is not set yet: the new binary exits at start-up and
    // the previous one takes the port back; setting the variable in .env starts the new one.
    let mark = dev.output().len();
    write_json(&spec, &with_route(&good, "/dev-later", "DEV_LATER_URL", None));
    let out = dev.wait_output(mark, "the previous gateway serves again", REBUILD).await;
    assert!(out.contains("DEV_LATER_URL"), "the gateway's own message is forwarded: {out}");
    assert_eq!(get(&format!("{base}/dev-added")).await.expect("the old gateway answers").status, 200);
    assert_eq!(get(&format!("{base}/dev-later")).await.expect("request").status, 404);
    let dotenv = std::fs::read_to_string(project.join(".env")).expect("read .env");
    std::fs::write(project.join(".env"), format!("{dotenv}DEV_LATER_URL={}/later\n", upstream.url())).expect("write .env");
    dev.wait_status(&format!("{base}/dev-later"), 200, REBUILD).await;
    assert_eq!(upstream.last().target, "/later/dev-later");

    // Fixed: served again, with the fixed route.
    write_json(&spec, &with_route(&good, "/dev-fixed", "API_URL", None));
    dev.wait_status(&format!("{base}/dev-fixed"), 200, REBUILD).await;
    assert_eq!(get(&format!("{base}/dev-added")).await.expect("request").status, 200);

    // Ctrl-C (SIGTERM here): the gateway stops with it.
    assert_eq!(dev.terminate(), Some(0), "clean exit; output:\n{}", dev.output());
    assert!(get(&format!("{base}/dev-added")).await.is_err(), "the gateway stopped with specgate dev");
    let _ = std::fs::remove_dir_all(project.join("config"));
}
