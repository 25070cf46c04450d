//! A real redis-server for the tests of shared state, on a free loopback port.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running redis-server, stopped on drop.
pub struct RedisServer {
    /// `redis://127.0.0.1:PORT`.
    pub url: String,
    /// Its port.
    pub port: u16,
    child: Child,
}

impl RedisServer {
    /// Starts redis-server without persistence. Panics when it is not installed (CI installs
    /// it; run `apt-get install -y redis-server` locally).
    pub fn start() -> RedisServer {
        Self::start_on(crate::free_port())
    }

    /// Starts redis-server on a given port (to bring a stopped one back).
    pub fn start_on(port: u16) -> RedisServer {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed for these tests (apt-get install -y redis-server)");
        let server = RedisServer { url: format!("redis://127.0.0.1:{port}"), port, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// Stops the server (to test what happens when Redis goes away).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
