//! A real HAProxy on loopback in front of the tests' backends, with its runtime API on a
//! loopback TCP port at `level admin`.
//!
//! Health checks `inter 500ms rise 2 fall 1`, `retries 0` and no `redispatch`: a request
//! sent to a stopped backend is an error the client sees, so a test cannot pass by
//! accident. HAProxy runs in the foreground (`-db`) as our child, so drop kills and
//! reaps it: no daemon left behind, no zombie for PID 1 to find.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::find_tool;

pub struct Haproxy {
    child: Child,
    pub admin_port: u16,
    pub frontend_port: u16,
    pub backend: String,
    dir: tempfile::TempDir,
}

/// A free TCP port on 127.0.0.1. Another process may take it before we bind it; the
/// tests start few servers and retry at the HAProxy level would hide real problems.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

impl Haproxy {
    /// HAProxy with backend `app` of `servers` (name, address, port).
    pub fn start(servers: &[(String, String, u16)]) -> Haproxy {
        Haproxy::start_with(servers, "")
    }

    /// Like [`Haproxy::start`], with `backend_lines` (each ending in a newline) added to
    /// the backend before its servers, e.g. `  option httpchk GET /ready\n`.
    pub fn start_with(servers: &[(String, String, u16)], backend_lines: &str) -> Haproxy {
        Haproxy::start_servers(servers, backend_lines, " check inter 500ms rise 2 fall 1")
    }

    /// Like [`Haproxy::start`], with servers that have no health checks: HAProxy says
    /// `no check` for them, and `health` commands do not apply.
    pub fn start_unchecked(servers: &[(String, String, u16)]) -> Haproxy {
        Haproxy::start_servers(servers, "", "")
    }

    fn start_servers(servers: &[(String, String, u16)], backend_lines: &str, checks: &str) -> Haproxy {
        let bin = find_tool("haproxy").expect("haproxy is installed (apt-get install -y haproxy)");
        let dir = tempfile::Builder::new().prefix("planrun-haproxy-").tempdir().expect("temp dir");
        let (admin_port, frontend_port) = (free_port(), free_port());
        let unix = dir.path().join("admin.sock").display().to_string();
        let mut config = format!(
            "global
  stats socket ipv4@127.0.0.1:{admin_port} level admin
  stats socket {unix} level admin
  log stdout format iso local0
defaults
  mode http
  log global
  timeout connect 1s
  timeout client 10s
  timeout server 10s
  retries 0
frontend fe
  bind 127.0.0.1:{frontend_port}
  default_backend app
backend app
  balance roundrobin
{backend_lines}"
        );
        for (name, addr, port) in servers {
            config.push_str(&format!("  server {name} {addr}:{port}{checks}\n"));
        }
        let cfg = dir.path().join("haproxy.cfg");
        std::fs::write(&cfg, config).unwrap();
        let log = std::fs::File::create(dir.path().join("haproxy.log")).unwrap();
        let child = Command::new(bin)
            .args(["-db", "-f"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("haproxy starts");
        let haproxy = Haproxy { child, admin_port, frontend_port, backend: "app".into(), dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while haproxy.try_command("show info").is_err() {
            assert!(Instant::now() < deadline, "haproxy did not start:\n{}", haproxy.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        haproxy
    }

    /// The plan's `socket` for this HAProxy.
    pub fn socket(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.admin_port)
    }

    /// The same runtime API on a unix socket.
    pub fn unix_socket(&self) -> String {
        format!("unix://{}", self.dir.path().join("admin.sock").display())
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.frontend_port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("haproxy.log")).unwrap_or_default()
    }

    fn try_command(&self, command: &str) -> std::io::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.admin_port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(format!("{command}\n").as_bytes())?;
        let mut answer = String::new();
        s.read_to_string(&mut answer)?;
        Ok(answer)
    }

    /// HAProxy's own record of server state changes, from its log:
    /// `(ISO timestamp, "MAINT h1" | "UP h1" | "DOWN h1" | "DRAIN h1")`. `UP` is a server
    /// taking traffic again; leaving maintenance into `drain` is `DRAIN`.
    pub fn events(&self) -> Vec<(String, String)> {
        self.log()
            .lines()
            .filter_map(|line| {
                let (stamp, text) = line.split_once(' ')?;
                let rest = text.strip_prefix("Server app/")?;
                let (server, what) = rest.split_once(' ')?;
                let event = if what.contains("maintenance") && !what.contains("leaving") {
                    "MAINT"
                } else if what.starts_with("is UP/DRAIN") || what.starts_with("enters drain state") {
                    "DRAIN"
                } else if what.starts_with("is UP") {
                    "UP"
                } else if what.starts_with("is DOWN") {
                    "DOWN"
                } else {
                    return None;
                };
                Some((stamp.to_string(), format!("{event} {server}")))
            })
            .collect()
    }

    /// A runtime API command, as an operator would type it.
    pub fn command(&self, command: &str) -> String {
        self.try_command(command).unwrap_or_else(|e| panic!("haproxy runtime API: {e}"))
    }

    /// Every server of the backend with HAProxy's status (`UP`, `MAINT`, `DOWN`, …).
    pub fn states(&self) -> Vec<(String, String)> {
        parse_states(&self.try_command("show stat").unwrap_or_default())
    }

    /// Waits until every server is UP, as HAProxy's own checks say.
    pub fn wait_all_up(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let states = self.states();
            if !states.is_empty() && states.iter().all(|(_, s)| s == "UP") {
                return;
            }
            assert!(Instant::now() < deadline, "not every server came up: {states:?}\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `show stat` of the HAProxy whose runtime API is on `port`, for watcher threads that
/// do not own the `Haproxy`.
pub fn states_at(port: u16) -> Vec<(String, String)> {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return Vec::new() };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"show stat\n").is_err() {
        return Vec::new();
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    parse_states(&answer)
}

fn parse_states(answer: &str) -> Vec<(String, String)> {
    let mut lines = answer.lines();
    let Some(header) = lines.next().and_then(|h| h.strip_prefix("# ")) else { return Vec::new() };
    let columns: Vec<&str> = header.split(',').collect();
    let Some(col) =
        ["pxname", "svname", "status"].iter().map(|n| columns.iter().position(|c| c == n)).collect::<Option<Vec<_>>>()
    else {
        return Vec::new();
    };
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f.len() > col[2] && f[col[0]] == "app" && !matches!(f[col[1]], "BACKEND" | "FRONTEND"))
        .map(|f| (f[col[1]].to_string(), f[col[2]].to_string()))
        .collect()
}
