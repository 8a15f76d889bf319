//! A real PostgreSQL server for one test: `initdb` into a temporary directory, then
//! `pg_ctl` starting it on a free loopback port (`listen_addresses = '127.0.0.1'`, its
//! unix socket in the same directory), stopped when dropped.
//!
//! The Debian binaries live in `/usr/lib/postgresql/VERSION/bin` (package `postgresql`),
//! outside `PATH`. `initdb` and `postgres` refuse to run as root, and the suite runs as
//! root under CI: then every PostgreSQL command runs as the unprivileged `nobody`
//! (`CommandExt::uid`/`gid`, no `su`, `runuser` or `sudo` needed), and the data
//! directory is handed to it with `chown`. The temporary directory sits under the
//! system's temporary folder, which `nobody` can traverse (`/tmp`, or `.ci/run`'s 1777
//! suite folder).

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// The newest `/usr/lib/postgresql/*/bin` holding `initdb`, `pg_ctl` and `postgres`.
pub fn bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse::<u32>().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| ["initdb", "pg_ctl", "postgres"].iter().all(|t| bin.join(t).is_file()))
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, bin)| bin)
}

/// Panics naming the package when PostgreSQL is not installed; see `support::require`.
pub fn require() -> PathBuf {
    bin_dir().unwrap_or_else(|| {
        let why = if std::env::var_os("CI").is_some() { "CI needs it" } else { "this test needs it" };
        panic!("PostgreSQL is not installed but {why}: apt-get install -y postgresql (or run `bash .ci/run` as root)")
    })
}

pub struct Postgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    pub port: u16,
    /// `nobody`'s uid and gid when the test runs as root.
    user: Option<(u32, u32)>,
}

impl Postgres {
    /// A fresh cluster, started, with the superuser `postgres` trusted on loopback.
    pub fn start() -> Self {
        let bin = require();
        let dir = tempfile::TempDir::new().expect("a temporary directory");
        let user = nix::unistd::geteuid().is_root().then(|| {
            let nobody = nix::unistd::User::from_name("nobody").ok().flatten().expect("the user nobody");
            (nobody.uid.as_raw(), nobody.gid.as_raw())
        });
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("hand the directory to nobody");
        }
        let mut pg = Postgres { bin, dir, port: 0, user };
        pg.run(
            "initdb",
            &[
                "-D",
                &pg.data().display().to_string(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ],
        );
        std::fs::write(
            pg.data().join("postgresql.auto.conf"),
            format!(
                "listen_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\nlogging_collector = off\n",
                pg.dir.path().display()
            ),
        )
        .expect("write the server's settings");
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(pg.data().join("postgresql.auto.conf"), Some(uid), Some(gid)).unwrap();
        }
        // A port found free can be taken before the server binds it: tried again.
        for attempt in 0.. {
            pg.port = super::haproxy::free_port();
            if pg.try_start() {
                break;
            }
            assert!(attempt < 3, "PostgreSQL did not start:\n{}", pg.log());
        }
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The server's log, for a failed assertion's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn command(&self, tool: &str) -> Command {
        let mut command = Command::new(self.bin.join(tool));
        command.current_dir(self.dir.path()).env_remove("PGDATA");
        if let Some((uid, gid)) = self.user {
            command.uid(uid).gid(gid);
        }
        command
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self.command(tool).args(args).output().unwrap_or_else(|e| panic!("{tool} runs: {e}"));
        assert!(
            out.status.success(),
            "{tool} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn try_start(&self) -> bool {
        let data = self.data().display().to_string();
        let log = self.log_path().display().to_string();
        let options = format!("-p {}", self.port);
        self.command("pg_ctl")
            .args(["start", "-w", "-t", "60", "-D", &data, "-l", &log, "-o", &options])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// Starts the server again after [`Postgres::stop`], on the same port.
    pub fn restart(&self) {
        assert!(self.try_start(), "PostgreSQL did not start again:\n{}", self.log());
        self.wait_ready();
    }

    /// Stops the server at once (`-m immediate`): its sessions end as in a crash.
    pub fn stop(&self) {
        let data = self.data().display().to_string();
        let _ = self.command("pg_ctl").args(["stop", "-w", "-m", "immediate", "-D", &data]).output();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "PostgreSQL is not accepting connections:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The URL planrun is given.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable", self.port)
    }

    /// Runs SQL with psql and returns its unaligned output (`|` between columns).
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new(psql())
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", "postgres", "-c", sql])
            .output()
            .expect("psql runs");
        assert!(out.status.success(), "psql failed on {sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// The cluster binaries' own `psql`: Debian's `/usr/bin/psql` is a wrapper that looks
/// for the system's clusters.
fn psql() -> PathBuf {
    require().join("psql")
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
