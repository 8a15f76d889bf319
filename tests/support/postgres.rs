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
        Postgres::start_with(false)
    }

    /// [`Postgres::start`], accepting TLS connections only, with a certificate for
    /// `127.0.0.1` signed by a CA of its own ([`Postgres::ca`]), made with `openssl`
    /// (which Debian's postgresql pulls in, through ssl-cert).
    pub fn start_tls() -> Self {
        Postgres::start_with(true)
    }

    /// The CA that signed a [`Postgres::start_tls`] server's certificate, in PEM.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn start_with(tls: bool) -> Self {
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
        let mut settings = format!(
            "listen_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\nlogging_collector = off\n",
            pg.dir.path().display()
        );
        if tls {
            pg.make_certificates();
            let (cert, key) = (pg.dir.path().join("server.pem"), pg.dir.path().join("server.key"));
            settings.push_str(&format!(
                "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
                cert.display(),
                key.display()
            ));
            // Loopback clients only over TLS: a connection that works proves TLS was used.
            pg.write_owned("data/pg_hba.conf", "local all all trust\nhostssl all all 127.0.0.1/32 trust\n");
        }
        pg.write_owned("data/postgresql.auto.conf", &settings);
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

    /// Writes a file of the temporary directory, owned by the server's user.
    fn write_owned(&self, name: &str, text: &str) {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        if let Some((uid, gid)) = self.user {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).expect("hand the file to nobody");
        }
    }

    /// `ca.pem` and the server's `server.pem` and `server.key` (for `127.0.0.1`, mode
    /// 0600 as the server demands), in the temporary directory.
    fn make_certificates(&self) {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.dir.path();
        self.write_owned(
            "server.ext",
            "subjectAltName = IP:127.0.0.1\nbasicConstraints = CA:FALSE\nextendedKeyUsage = serverAuth\n",
        );
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=planrun test CA"],
            ]
            .concat(),
        );
        openssl(
            &[&["req"][..], &ec, &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]].concat(),
        );
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ]);
        let key = dir.join("server.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        if let Some((uid, gid)) = self.user {
            std::os::unix::fs::chown(&key, Some(uid), Some(gid)).expect("hand the key to nobody");
        }
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

    /// The URL planrun is given: `sslmode` left at its default, `prefer` (this server offers
    /// no TLS, so the connection is plain).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
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
