//! A real Postgres server for one test: `initdb` into a temporary directory,
//! `pg_ctl start` on a free port, stopped (and removed) when dropped. Run
//! as root, the server runs as the `postgres` user, since Postgres refuses
//! root.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where Debian's Postgres keeps its programs, tried after the PATH.
const DEBIAN_BIN: &str = "/usr/lib/postgresql";

pub struct PostgresServer {
    pub port: u16,
    bin: PathBuf,
    dir: tempfile::TempDir,
    running: bool,
}

impl PostgresServer {
    /// Starts one; `None` (with the reason printed) when Postgres is not
    /// installed, unless `CI` is set, where that fails the test.
    pub fn start() -> Option<PostgresServer> {
        let Some(bin) = find_bin() else {
            let message = "initdb/pg_ctl not found: install PostgreSQL \
                           (apt-get install postgresql) to run the Postgres tests";
            assert!(std::env::var_os("CI").is_none(), "{message}");
            eprintln!("skipped: {message}");
            return None;
        };
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let root = is_root();
        if root {
            chown_postgres(dir.path());
        }
        let data = dir.path().join("data");
        let status = as_owner(root, &bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "-D"])
            .arg(&data)
            .output()
            .unwrap_or_else(|e| panic!("cannot run initdb: {e}"));
        assert!(
            status.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        let mut server = PostgresServer {
            port: super::net::free_port(),
            bin,
            dir,
            running: false,
        };
        server.start_again();
        Some(server)
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the stopped server again on the same port and data.
    pub fn start_again(&mut self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        let output = as_owner(is_root(), &self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-o", &options, "-l"])
            .arg(self.dir.path().join("log"))
            .args(["-w", "start"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run pg_ctl: {e}"));
        assert!(
            output.status.success(),
            "pg_ctl start failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        self.running = true;
    }

    /// Stops it (fast: open connections are cut).
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        let _ = as_owner(is_root(), &self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        self.running = false;
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn find_bin() -> Option<PathBuf> {
    let on_path = Command::new("sh")
        .args(["-c", "command -v pg_ctl"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|p| PathBuf::from(p.trim()))
        .and_then(|p| std::fs::canonicalize(p).ok())
        .and_then(|p| p.parent().map(Path::to_path_buf));
    if let Some(dir) = on_path.filter(|d| d.join("initdb").exists()) {
        return Some(dir);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir(DEBIAN_BIN)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .is_some_and(|o| o.stdout.trim_ascii() == b"0")
}

fn chown_postgres(dir: &Path) {
    let status = Command::new("chown")
        .args(["-R", "postgres"])
        .arg(dir)
        .status()
        .unwrap_or_else(|e| panic!("cannot run chown: {e}"));
    assert!(status.success(), "chown postgres failed");
}

/// `program`, run as the `postgres` user when this process is root.
fn as_owner(root: bool, program: &Path) -> Command {
    if root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}
