//! `specgate dev`: generate, build and run a project's gateway, and do it again whenever the
//! project changes.
//!
//! The loop is deliberately plain: one thread polls the project's files, the build is a
//! `cargo build` child process and the gateway another child process. Polling (every
//! [`POLL`]) instead of file-system events works the same on every platform, in containers
//! and on network mounts, and a project is a few dozen small files. A change is acted on once
//! the files have been quiet for [`QUIET`], so an editor's several writes make one rebuild.
//!
//! The running gateway is replaced only by one that generated, built and started: a project
//! with errors or a build that fails leaves the last good gateway serving, and a new binary
//! that exits during start-up (a missing variable, say) gives the port back to the previous
//! binary, which is kept as a copy for that reason.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};

use crate::generate::{self, Options};

/// How often the project's files are looked at.
const POLL: Duration = Duration::from_millis(250);
/// How long the files must stay unchanged before a change is acted on.
const QUIET: Duration = Duration::from_millis(200);
/// A project that never stops changing (a log file inside it) is acted on after this anyway.
const MAX_SETTLE: Duration = Duration::from_secs(3);
/// How long a stopped gateway may take to finish its in-flight requests before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a new gateway may take to answer `/__zuplo/ping`.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// When stderr is not a terminal, a line this often tells that a long build is still going.
const HEARTBEAT: Duration = Duration::from_secs(20);
/// The default port, as with `zuplo dev`.
const DEFAULT_PORT: u16 = 9000;

/// Options of `specgate dev`.
#[derive(clap::Args, Debug)]
pub struct DevArgs {
    /// The project folder.
    pub project: PathBuf,
    /// Port of the gateway (default: `PORT` from the environment or the project's `.env`, else 9000).
    #[arg(long)]
    pub port: Option<u16>,
    /// The directory of the generated crate (default: `<project>/.specgate/dev`, which ignores
    /// itself in git). Its `target/` holds the build unless `CARGO_TARGET_DIR` is set.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Build with the release profile (slower builds, faster gateway; debug by default).
    #[arg(long)]
    pub release: bool,
    /// Generate, build and run once, without watching the project (exit status: the
    /// gateway's, or 1 when the project or the build fails).
    #[arg(long)]
    pub once: bool,
    /// Write stubs answering 501 for missing custom modules (as `generate --stub-missing`).
    #[arg(long)]
    pub stub_missing: bool,
    /// Path of the specgate-runtime crate (default: the one next to this generator's sources).
    #[arg(long)]
    pub runtime_path: Option<PathBuf>,
    /// Variables for the gateway, over the environment and the project's `.env`.
    #[arg(last = true, value_name = "KEY=VALUE")]
    pub env: Vec<String>,
}

/// Runs `specgate dev`.
pub fn main(args: &DevArgs) -> ExitCode {
    let stop = match watch_signals() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot watch for Ctrl-C: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut dev = match Dev::new(args, stop) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.once { dev.run_once() } else { dev.run_watching() }
}

/// Raises the flag on Ctrl-C (SIGINT) or SIGTERM. The handlers are installed before this
/// returns, so a signal can never hit the default action (which would orphan the gateway).
fn watch_signals() -> std::io::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    #[cfg(unix)]
    let (mut int, mut term) = {
        use tokio::signal::unix::{SignalKind, signal};
        let _guard = rt.enter();
        (signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?)
    };
    let f = flag.clone();
    std::thread::Builder::new().name("specgate-dev-signals".into()).spawn(move || {
        rt.block_on(async {
            #[cfg(unix)]
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            #[cfg(not(unix))]
            let _ = tokio::signal::ctrl_c().await;
        });
        f.store(true, Ordering::SeqCst);
    })?;
    Ok(flag)
}

/// One line of the loop's own output (the gateway's and cargo's lines are forwarded as they are).
macro_rules! say {
    ($($arg:tt)*) => {{
        eprintln!("[specgate] {}", format_args!($($arg)*));
    }};
}

struct Dev {
    /// The project folder as given (for messages).
    shown: String,
    /// The project folder, canonical.
    root: PathBuf,
    crate_dir: PathBuf,
    /// Crate and binary name.
    name: String,
    opts: Options,
    release: bool,
    overrides: Vec<(String, String)>,
    port_flag: Option<u16>,
    color: bool,
    stop: Arc<AtomicBool>,
    /// Files of the project as last acted upon.
    baseline: Snapshot,
    /// Numbering of the binary copies.
    builds: u32,
    running: Option<Running>,
}

/// A started gateway.
struct Running {
    /// `None` once it exited.
    child: Option<Child>,
    /// The copy of the binary it runs (kept to start it again if its successor fails).
    binary: PathBuf,
    /// What it was built and started from.
    stamp: String,
}

/// How a cycle ended.
enum Cycle {
    /// A new gateway is serving.
    Started,
    /// The gateway stays as it was (errors, no change, or a failed start).
    Kept,
    /// Ctrl-C during the cycle.
    Stopped,
}

impl Dev {
    fn new(args: &DevArgs, stop: Arc<AtomicBool>) -> Result<Self, String> {
        let root = args
            .project
            .canonicalize()
            .map_err(|e| format!("cannot open the project folder {}: {e}", args.project.display()))?;
        if !root.is_dir() {
            return Err(format!("{} is not a folder", args.project.display()));
        }
        let folder = root.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "gateway".to_owned());
        // cargo identifies a standalone crate by its name and version, not its path: two
        // projects named alike would share one build (and one could run the other's binary)
        // in a shared CARGO_TARGET_DIR. A hash of the project's path keeps them apart.
        let path_hash: String = Sha256::digest(root.to_string_lossy().as_bytes()).iter().take(4).map(|b| format!("{b:02x}")).collect();
        let name = generate::crate_name(&format!("{folder}-{path_hash}"));
        let crate_dir = match &args.out {
            Some(out) => absolute(out),
            None => {
                let cache = root.join(".specgate");
                std::fs::create_dir_all(&cache).map_err(|e| format!("cannot create {}: {e}", cache.display()))?;
                // The build is nobody's source: keep it out of git without touching the
                // project's own .gitignore.
                let ignore = cache.join(".gitignore");
                if !ignore.exists() {
                    std::fs::write(&ignore, "# Build cache of `specgate dev`.\n*\n").map_err(|e| format!("cannot write {}: {e}", ignore.display()))?;
                }
                cache.join("dev")
            }
        };
        std::fs::create_dir_all(&crate_dir).map_err(|e| format!("cannot create {}: {e}", crate_dir.display()))?;
        let mut overrides = Vec::new();
        for kv in &args.env {
            match kv.split_once('=') {
                Some((k, v)) if !k.is_empty() && !k.contains(char::is_whitespace) => overrides.push((k.to_owned(), v.to_owned())),
                _ => return Err(format!("`{kv}` is not KEY=VALUE (variables for the gateway come after `--`)")),
            }
        }
        let opts = Options { name: Some(name.clone()), out: crate_dir.clone(), runtime_path: args.runtime_path.clone(), stub_missing: args.stub_missing };
        // Old binary copies of an earlier session are of no use.
        let _ = std::fs::remove_dir_all(crate_dir.join("run"));
        Ok(Dev {
            shown: args.project.display().to_string(),
            baseline: Snapshot::take(&root, &crate_dir),
            root,
            crate_dir,
            name,
            opts,
            release: args.release,
            overrides,
            port_flag: args.port,
            color: std::io::stderr().is_terminal(),
            stop,
            builds: 0,
            running: None,
        })
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn run_once(&mut self) -> ExitCode {
        if !matches!(self.cycle(), Cycle::Started) {
            self.shut_down();
            return ExitCode::FAILURE;
        }
        loop {
            if self.stopped() {
                self.shut_down();
                return ExitCode::SUCCESS;
            }
            if let Some(status) = self.poll_exit() {
                return ExitCode::from(u8::try_from(status.code().unwrap_or(1)).unwrap_or(1));
            }
            std::thread::sleep(POLL);
        }
    }

    fn run_watching(&mut self) -> ExitCode {
        if matches!(self.cycle(), Cycle::Stopped) {
            self.shut_down();
            return ExitCode::SUCCESS;
        }
        say!("watching {} for changes (Ctrl-C stops)", self.shown);
        loop {
            if self.stopped() {
                self.shut_down();
                return ExitCode::SUCCESS;
            }
            if let Some(status) = self.poll_exit() {
                say!("the gateway exited ({}); it starts again when the project changes", describe(status));
            }
            let now = Snapshot::take(&self.root, &self.crate_dir);
            if now != self.baseline {
                let settled = self.settle(now);
                let changed = self.baseline.changes(&settled, &self.root);
                self.baseline = settled;
                say!("changed: {changed}");
                if matches!(self.cycle(), Cycle::Stopped) {
                    self.shut_down();
                    return ExitCode::SUCCESS;
                }
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits until the files stay the same for [`QUIET`] (bounded by [`MAX_SETTLE`]).
    fn settle(&self, mut now: Snapshot) -> Snapshot {
        let start = Instant::now();
        loop {
            std::thread::sleep(QUIET);
            let again = Snapshot::take(&self.root, &self.crate_dir);
            if again == now || start.elapsed() > MAX_SETTLE || self.stopped() {
                return again;
            }
            now = again;
        }
    }

    /// The exit status of the running gateway, once, when it has exited.
    fn poll_exit(&mut self) -> Option<ExitStatus> {
        let running = self.running.as_mut()?;
        let child = running.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                running.child = None;
                Some(status)
            }
            _ => None,
        }
    }

    /// Generate, build, swap. Every failure leaves the current gateway as it is.
    fn cycle(&mut self) -> Cycle {
        let (output, diags, files) = generate::generate(&self.root, &self.opts);
        let rendered = diags.render(&files.unwrap_or_default(), self.color);
        eprint!("{rendered}");
        let Some(output) = output else {
            say!("the project has errors; {}", self.keeping());
            return Cycle::Kept;
        };
        if let Err(e) = self.write(&output) {
            say!("cannot write the crate into {}: {e}; {}", self.crate_dir.display(), self.keeping());
            return Cycle::Kept;
        }
        let stamp = self.stamp(&output);
        if let Some(r) = &self.running
            && r.child.is_some()
            && r.stamp == stamp
        {
            say!("no change to the gateway");
            return Cycle::Kept;
        }
        let before = self.baseline.clone();
        let started = Instant::now();
        let binary = match self.build() {
            Build::Built(b) => b,
            Build::Failed => {
                say!("the build failed (compiler messages above); {}", self.keeping());
                return Cycle::Kept;
            }
            Build::Stopped => return Cycle::Stopped,
        };
        let build_time = started.elapsed();
        if Snapshot::take(&self.root, &self.crate_dir) != before {
            say!("the project changed during the build; building again");
            return Cycle::Kept;
        }
        self.builds += 1;
        let copy = self.crate_dir.join("run").join(format!("{}-{}{}", self.name, self.builds, std::env::consts::EXE_SUFFIX));
        let binary = match std::fs::create_dir_all(self.crate_dir.join("run")).and_then(|()| std::fs::copy(&binary, &copy)) {
            Ok(_) => copy,
            // Running the build output itself still works; only the fallback is lost when
            // the next build overwrites it.
            Err(_) => binary,
        };
        let routes = crate::project::load_with(&self.root, None, self.opts.stub_missing).0.map(|p| p.routes.len()).unwrap_or(0);
        let mut previous = self.running.take();
        if let Some(prev) = previous.as_mut()
            && let Some(child) = prev.child.as_mut()
        {
            say!("stopping the previous gateway");
            stop_child(child);
            prev.child = None;
        }
        self.start_after(binary, stamp, previous, routes, build_time)
    }

    /// Starts the new binary; if it does not come up, starts the previous one again.
    fn start_after(&mut self, binary: PathBuf, stamp: String, previous: Option<Running>, routes: usize, build_time: Duration) -> Cycle {
        let profile = if self.release { "release" } else { "debug" };
        match self.start(&binary) {
            Start::Ready(child, addr) => {
                if let Some(prev) = &previous
                    && prev.binary != binary
                {
                    let _ = std::fs::remove_file(&prev.binary);
                }
                self.running = Some(Running { child: Some(child), binary, stamp });
                let host = match addr.ip() {
                    IpAddr::V6(ip) => format!("[{ip}]"),
                    IpAddr::V4(ip) => ip.to_string(),
                };
                say!(
                    "gateway `{}` serving on http://{host}:{}: {routes} route{}, built in {:.1} s ({profile})",
                    self.name,
                    addr.port(),
                    if routes == 1 { "" } else { "s" },
                    build_time.as_secs_f64()
                );
                Cycle::Started
            }
            Start::Stopped => Cycle::Stopped,
            Start::Failed(why) => {
                say!("the new gateway did not start ({why})");
                let _ = std::fs::remove_file(&binary);
                let Some(prev) = previous else {
                    say!("fix the project or its .env; the gateway starts when a file changes");
                    return Cycle::Kept;
                };
                match self.start(&prev.binary) {
                    Start::Ready(child, _) => {
                        say!("the previous gateway serves again");
                        self.running = Some(Running { child: Some(child), ..prev });
                        Cycle::Kept
                    }
                    Start::Stopped => Cycle::Stopped,
                    Start::Failed(why) => {
                        say!("the previous gateway did not start again either ({why})");
                        self.running = Some(Running { child: None, ..prev });
                        Cycle::Kept
                    }
                }
            }
        }
    }

    /// What happens to the gateway now that a cycle failed.
    fn keeping(&self) -> &'static str {
        match &self.running {
            Some(Running { child: Some(_), .. }) => "the previous gateway keeps serving",
            _ => "no gateway is running",
        }
    }

    /// Writes the crate (only the files that changed, so cargo rebuilds only what it must)
    /// and removes sources a previous generation wrote that are no longer generated.
    fn write(&self, output: &generate::Output) -> std::io::Result<()> {
        generate::write(output, &self.crate_dir)?;
        for extra in generate::check(output, &self.crate_dir).extra {
            if extra.starts_with("src/") || extra.starts_with("config/") {
                let _ = std::fs::remove_file(self.crate_dir.join(&extra));
            }
        }
        // The first build of a crate next to a specgate checkout uses the checkout's
        // dependency versions: nothing new to download, and a shared CARGO_TARGET_DIR reuses
        // the artifacts already built.
        let lock = self.crate_dir.join("Cargo.lock");
        if !lock.exists() {
            let runtime = self.opts.runtime_path.clone().unwrap_or_else(generate::default_runtime_path);
            if let Some(ws_lock) = runtime.parent().map(|p| p.join("Cargo.lock")).filter(|p| p.exists()) {
                let _ = std::fs::copy(ws_lock, &lock);
            }
        }
        Ok(())
    }

    /// What a gateway is built and started from: the generated files and the `.env` it reads.
    fn stamp(&self, output: &generate::Output) -> String {
        let mut h = Sha256::new();
        for (rel, content) in &output.files {
            h.update(rel.as_bytes());
            h.update([0]);
            h.update(u64::try_from(content.len()).unwrap_or(u64::MAX).to_le_bytes());
            h.update(content);
        }
        h.update(std::fs::read(self.root.join(".env")).unwrap_or_default());
        h.update([u8::from(self.release)]);
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// `cargo build` of the crate, cargo's progress and messages going to our stderr.
    fn build(&mut self) -> Build {
        let profile = if self.release { "release" } else { "debug" };
        say!("building `{}` ({profile})", self.name);
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(&self.crate_dir)
            .args(["build", "--message-format=json-render-diagnostics", "--manifest-path"])
            .arg(self.crate_dir.join("Cargo.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if self.release {
            cmd.arg("--release");
        }
        if self.color {
            cmd.arg("--color=always");
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                say!("cannot run cargo: {e}");
                return Build::Failed;
            }
        };
        // The JSON messages on stdout name the binary wherever the target directory is.
        let reader = child.stdout.take().map(|out| std::thread::spawn(move || executable(out, "compiler-artifact")));
        let started = Instant::now();
        let mut beat = started + HEARTBEAT;
        let status = loop {
            if self.stopped() {
                let _ = child.kill();
                let _ = child.wait();
                return Build::Stopped;
            }
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => {}
                Err(e) => {
                    say!("cannot wait for cargo: {e}");
                    return Build::Failed;
                }
            }
            if !self.color && Instant::now() >= beat {
                say!("still building ({} s)", started.elapsed().as_secs());
                beat += HEARTBEAT;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let exe = reader.and_then(|r| r.join().ok()).unwrap_or_default();
        if !status.success() {
            return Build::Failed;
        }
        match exe.into_iter().find(|p| file_stem(p) == self.name) {
            Some(p) => Build::Built(p),
            None => {
                say!("cargo reported no binary named `{}`", self.name);
                Build::Failed
            }
        }
    }

    /// Starts `binary` in the project folder (so that it reads the project's `.env`) and
    /// waits until it answers `/__zuplo/ping`.
    fn start(&mut self, binary: &Path) -> Start {
        let dotenv = std::fs::read_to_string(self.root.join(".env"))
            .map(|t| specgate_runtime::env::parse_dotenv(&t))
            .unwrap_or_default();
        let lookup = |name: &str| -> Option<String> {
            self.overrides
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .or_else(|| std::env::var(name).ok())
                .or_else(|| dotenv.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
        };
        let port = self.port_flag.or_else(|| lookup("PORT").and_then(|p| p.trim().parse().ok())).unwrap_or(DEFAULT_PORT);
        // A development gateway listens on loopback unless told otherwise.
        let host = lookup("HOST");
        let ip = host.as_deref().and_then(|h| h.trim().parse::<IpAddr>().ok()).unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let mut cmd = Command::new(binary);
        cmd.current_dir(&self.root).stdin(Stdio::null()).stdout(Stdio::inherit()).stderr(Stdio::inherit());
        for (k, v) in &self.overrides {
            cmd.env(k, v);
        }
        cmd.env("PORT", port.to_string());
        if host.is_none() {
            cmd.env("HOST", ip.to_string());
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return Start::Failed(format!("cannot run {}: {e}", binary.display())),
        };
        let probe = SocketAddr::new(
            match ip {
                IpAddr::V4(v) if v.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(v) if v.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
                other => other,
            },
            port,
        );
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.stopped() {
                stop_child(&mut child);
                return Start::Stopped;
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Start::Failed(format!("it exited during start-up, {}; its messages are above", describe(status)));
            }
            if ping(probe) {
                return Start::Ready(child, SocketAddr::new(ip, port));
            }
            if Instant::now() > deadline {
                say!("the gateway does not answer /__zuplo/ping on {probe} after {} s; leaving it running", START_TIMEOUT.as_secs());
                return Start::Ready(child, SocketAddr::new(ip, port));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Ctrl-C: stop the gateway and go.
    fn shut_down(&mut self) {
        if let Some(mut r) = self.running.take() {
            if let Some(child) = r.child.as_mut() {
                say!("stopping the gateway");
                stop_child(child);
            }
            let _ = std::fs::remove_file(&r.binary);
        }
    }
}

enum Build {
    Built(PathBuf),
    Failed,
    Stopped,
}

enum Start {
    Ready(Child, SocketAddr),
    Failed(String),
    Stopped,
}

/// The executables named by cargo's JSON messages (the rendered diagnostics go to stderr).
fn executable(out: impl Read, reason: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for line in std::io::BufReader::new(out).lines() {
        let Ok(line) = line else { break };
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
        if msg.get("reason").and_then(|r| r.as_str()) == Some(reason)
            && let Some(exe) = msg.get("executable").and_then(|e| e.as_str())
        {
            found.push(PathBuf::from(exe));
        }
    }
    found
}

fn file_stem(p: &Path) -> String {
    p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

/// SIGTERM (the gateway finishes its in-flight requests), then SIGKILL after [`STOP_TIMEOUT`].
fn stop_child(child: &mut Child) {
    #[cfg(unix)]
    {
        let pid = rustix::process::Pid::from_child(child);
        if rustix::process::kill_process(pid, rustix::process::Signal::TERM).is_ok() {
            let deadline = Instant::now() + STOP_TIMEOUT;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            say!("the gateway did not stop within {} s; killing it", STOP_TIMEOUT.as_secs());
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Whether `GET /__zuplo/ping` answers 200 at `addr`.
fn ping(addr: SocketAddr) -> bool {
    let answer = (|| -> std::io::Result<Vec<u8>> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.set_write_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"GET /__zuplo/ping HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)?;
        Ok(buf)
    })();
    answer.is_ok_and(|a| a.starts_with(b"HTTP/1.1 200"))
}

fn describe(status: ExitStatus) -> String {
    match status.code() {
        Some(c) => format!("exit status {c}"),
        None => status.to_string(),
    }
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() { p.to_path_buf() } else { std::env::current_dir().unwrap_or_default().join(p) }
}

/// The project's files with their sizes and modification times.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Snapshot {
    files: BTreeMap<PathBuf, (u64, Option<SystemTime>)>,
}

/// Bounds of the walk: a project is a few dozen files; a dependency folder that slipped past
/// the ignore list must not make every poll slow.
const MAX_DEPTH: usize = 12;
const MAX_FILES: usize = 20_000;

impl Snapshot {
    /// Every file under `root` except hidden folders (`.git`, `.specgate`, editors' folders),
    /// `node_modules`, `target`, the crate directory and editors' swap files.
    fn take(root: &Path, crate_dir: &Path) -> Snapshot {
        let mut snap = Snapshot::default();
        snap.walk(root, crate_dir, 0);
        snap
    }

    fn walk(&mut self, dir: &Path, skip: &Path, depth: usize) {
        if depth > MAX_DEPTH || dir == skip {
            return;
        }
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        for entry in rd.flatten() {
            if self.files.len() >= MAX_FILES {
                return;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(kind) = entry.file_type() else { continue };
            let path = entry.path();
            if kind.is_dir() {
                if !(name.starts_with('.') || name == "node_modules" || name == "target") {
                    self.walk(&path, skip, depth + 1);
                }
            } else if !is_scratch(&name) {
                // Follows a symlinked file (its target's changes count); symlinked folders are
                // not entered (no cycles).
                let meta = std::fs::metadata(&path).ok();
                let len = meta.as_ref().map_or(0, std::fs::Metadata::len);
                let modified = meta.and_then(|m| m.modified().ok());
                self.files.insert(path, (len, modified));
            }
        }
    }

    /// The files that differ, relative to the project folder, for the "changed:" line.
    fn changes(&self, now: &Snapshot, root: &Path) -> String {
        let rel = |p: &Path| p.strip_prefix(root).unwrap_or(p).to_string_lossy().replace('\\', "/");
        let mut names: Vec<String> = Vec::new();
        for (path, meta) in &now.files {
            if self.files.get(path) != Some(meta) {
                names.push(rel(path));
            }
        }
        for path in self.files.keys() {
            if !now.files.contains_key(path) {
                names.push(format!("{} (removed)", rel(path)));
            }
        }
        match names.len() {
            0 => "files touched".to_owned(),
            1..=3 => names.join(", "),
            n => format!("{} and {} more", names[..3].join(", "), n - 3),
        }
    }
}

/// Editors' temporary files: writing them is not a change of the project.
fn is_scratch(name: &str) -> bool {
    name.starts_with(".#")
        || name.ends_with('~')
        || name.ends_with(".swp")
        || name.ends_with(".swx")
        || name.ends_with(".swo")
        || name.ends_with(".tmp")
        || name == "4913"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_see_edits_and_skip_build_and_scratch_files() {
        let dir = std::env::temp_dir().join(format!("specgate-dev-snap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("config")).expect("temp dir");
        std::fs::create_dir_all(dir.join(".specgate/dev/src")).expect("temp dir");
        std::fs::create_dir_all(dir.join("node_modules/x")).expect("temp dir");
        std::fs::write(dir.join("config/routes.oas.json"), "{}").expect("write");
        std::fs::write(dir.join(".env"), "A=1\n").expect("write");
        let crate_dir = dir.join(".specgate/dev");
        let first = Snapshot::take(&dir, &crate_dir);
        assert_eq!(first.files.len(), 2, "{first:?}");

        std::fs::write(dir.join(".specgate/dev/src/main.rs"), "fn main() {}").expect("write");
        std::fs::write(dir.join("node_modules/x/index.js"), "").expect("write");
        std::fs::write(dir.join("config/.routes.oas.json.swp"), "").expect("write");
        std::fs::write(dir.join("config/routes.oas.json~"), "").expect("write");
        assert_eq!(Snapshot::take(&dir, &crate_dir), first, "build output, dependencies and swap files are not changes");

        std::fs::write(dir.join("config/routes.oas.json"), "{ }").expect("write");
        let edited = Snapshot::take(&dir, &crate_dir);
        assert_ne!(edited, first, "a size change is a change");
        assert_eq!(first.changes(&edited, &dir), "config/routes.oas.json");

        std::fs::remove_file(dir.join(".env")).expect("remove");
        let removed = Snapshot::take(&dir, &crate_dir);
        assert_eq!(edited.changes(&removed, &dir), ".env (removed)");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn cargo_messages_name_the_executables() {
        let messages = concat!(
            "{\"reason\":\"compiler-artifact\",\"target\":{\"name\":\"specgate_runtime\"},\"executable\":null}\n",
            "not json\n",
            "{\"reason\":\"compiler-artifact\",\"target\":{\"name\":\"gw\"},\"executable\":\"/t/debug/gw\"}\n",
            "{\"reason\":\"build-finished\",\"success\":true}\n",
        );
        let found = executable(messages.as_bytes(), "compiler-artifact");
        assert_eq!(found, vec![PathBuf::from("/t/debug/gw")]);
    }
}
