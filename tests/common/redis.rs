//! A real `redis-server` child process on a free port, for the tests that
//! need one. Killed on drop. The one copy of it: every integration test
//! binary has it as `common::redis`, and the Redis tier's unit tests in
//! src/cache/redis/tests.rs include this file (and its sibling net.rs) by
//! path.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::net::free_port;

pub struct RedisServer {
    child: Child,
    pub port: u16,
}

impl RedisServer {
    /// Starts redis-server on a free port; `None` (with the reason printed)
    /// when it is not installed, a failure instead when `CI` is set.
    pub fn start() -> Option<RedisServer> {
        let installed = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok();
        if !installed {
            assert!(
                std::env::var_os("CI").is_none(),
                "redis-server is not on PATH: install it (apt-get install redis-server)"
            );
            eprintln!("skipping: redis-server is not on PATH (apt-get install redis-server)");
            return None;
        }
        Some(RedisServer::start_on(free_port()))
    }

    /// Whether redis-server can be run here (with the same CI rule as `start`).
    pub fn available() -> bool {
        RedisServer::start().is_some()
    }

    pub fn start_on(port: u16) -> RedisServer {
        RedisServer::start_with(port, &[])
    }

    /// A node for a Redis Cluster, its cluster state file in `dir`.
    pub fn start_cluster_node(port: u16, dir: &std::path::Path) -> RedisServer {
        let conf = dir.join(format!("nodes-{port}.conf"));
        let conf = conf.to_string_lossy().into_owned();
        RedisServer::start_with(
            port,
            &["--cluster-enabled", "yes", "--cluster-config-file", &conf],
        )
    }

    fn start_with(port: u16, extra: &[&str]) -> RedisServer {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server: {e}"));
        let server = RedisServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if server.query::<String>(&["PING"]).is_some() {
                return server;
            }
            #[expect(
                clippy::disallowed_methods,
                reason = "a plain thread waiting for a child process, outside any runtime"
            )]
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("redis-server on port {port} did not start");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A fresh blocking connection to it.
    pub fn raw(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url())?.get_connection_with_timeout(Duration::from_secs(1))
    }

    /// Sends the process `signal` (`-STOP`, `-CONT`): a Redis that hangs
    /// without closing its connections.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap_or_else(|e| panic!("cannot run kill: {e}"));
        assert!(status.success(), "kill {signal} failed");
    }

    /// Runs one command on a fresh connection; `None` on any failure.
    pub fn query<T: redis::FromRedisValue>(&self, args: &[&str]) -> Option<T> {
        let mut conn = self.raw().ok()?;
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query(&mut conn).ok()
    }

    /// Stops it; returns the port so it can be started there again.
    pub fn stop(mut self) -> u16 {
        self.kill();
        self.port
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
