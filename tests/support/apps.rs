//! Little HTTP backends, one per "host": `python3 -m http.server` bound to the host's
//! loopback address, serving a directory with a `health` file. Each host gets an `app`
//! script (`start`, `stop`, `restart`) that plans call through SSH or the local
//! transport, so a restart really stops the server (for `DOWN_FOR` at least) and starts
//! it again. Every stop and start is appended, with a timestamp, to a shared record.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a restart keeps the app down: long enough for a request to hit it.
pub const DOWN_FOR: &str = "0.5";

pub struct Apps {
    pub dirs: Vec<PathBuf>,
    pub addrs: Vec<String>,
    pub port: u16,
    pub record: PathBuf,
}

/// The app script. It detaches the server (`setsid`, no inherited descriptors) so an SSH
/// session or planrun's local transport returns at once, and waits on `/proc` for a
/// stopped server to be gone or a zombie (PID 1 here reaps only every ~2 s).
fn script(python: &str, addr: &str, port: u16, dir: &Path, name: &str, record: &Path) -> String {
    let d = dir.display();
    let r = record.display();
    format!(
        r#"#!/bin/sh
set -u
stop() {{
  if [ -f {d}/app.pid ]; then
    p=$(cat {d}/app.pid)
    kill "$p" 2>/dev/null
    while [ -e /proc/$p ] && ! grep -q '^[0-9]* ([^)]*) Z' /proc/$p/stat 2>/dev/null; do sleep 0.02; done
    rm -f {d}/app.pid
  fi
  echo "stop {name} $(date +%Y-%m-%dT%H:%M:%S.%6N%:z)" >> {r}
}}
start() {{
  echo "start {name} $(date +%Y-%m-%dT%H:%M:%S.%6N%:z)" >> {r}
  if [ -e {d}/fail-on-start ]; then
    cd {d}/www && setsid {python} {d}/failing.py {port} {addr} >/dev/null 2>&1 </dev/null &
  else
    cd {d}/www && setsid {python} -m http.server {port} --bind {addr} >/dev/null 2>&1 </dev/null &
  fi
  echo $! > {d}/app.pid
}}
case "$1" in
  start) start ;;
  stop) stop ;;
  restart) stop; sleep {DOWN_FOR}; start ;;
  *) echo "usage: app start|stop|restart" >&2; exit 2 ;;
esac
"#
    )
}

/// The app once it is broken (`Apps::fail_from_next_start`): `/health` still answers
/// 200, as a shallow health check would, and every other request 500.
const FAILING_APP: &str = r#"import http.server, sys
class Failing(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path == "/health"
        body = b"ok\n" if ok else b"broken\n"
        self.send_response(200 if ok else 500)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer((sys.argv[2], int(sys.argv[1])), Failing).serve_forever()
"#;

impl Apps {
    /// Writes the scripts into `dirs` (one per host) and starts every app, waiting
    /// until each answers.
    pub fn start(dirs: Vec<PathBuf>, addrs: Vec<String>, port: u16, record: PathBuf) -> Apps {
        let python = ["/usr/bin/python3", "/usr/local/bin/python3"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("python3 is installed (apt-get install -y python3)");
        for (i, (dir, addr)) in dirs.iter().zip(&addrs).enumerate() {
            std::fs::create_dir_all(dir.join("www")).unwrap();
            std::fs::write(dir.join("www/health"), "ok\n").unwrap();
            std::fs::write(dir.join("failing.py"), FAILING_APP).unwrap();
            let path = dir.join("app");
            std::fs::write(&path, script(python, addr, port, dir, &format!("h{}", i + 1), &record)).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            // An app an earlier run left on this address would answer for this one.
            kill_apps_on(addr, port);
            let ok = std::process::Command::new(&path).arg("start").status().unwrap().success();
            assert!(ok, "app start failed");
        }
        let apps = Apps { dirs, addrs, port, record };
        for addr in &apps.addrs {
            wait_answers(addr, port, Duration::from_secs(10));
        }
        // The test's own starts are not part of what it checks.
        let _ = std::fs::remove_file(&apps.record);
        apps
    }

    /// The record of stops and starts: `(event, host, ISO timestamp)`, timestamps in
    /// HAProxy's log format so the two sort together.
    pub fn record(&self) -> Vec<(String, String, String)> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut f = l.split(' ');
                Some((f.next()?.to_string(), f.next()?.to_string(), f.next()?.to_string()))
            })
            .collect()
    }

    /// From its next start on, host `i`'s app (0-based) answers 500 to everything but
    /// `/health`: a release that broke the service but not its health check.
    pub fn fail_from_next_start(&self, i: usize) {
        std::fs::write(self.dirs[i].join("fail-on-start"), "").unwrap();
    }

    /// Restarts host `i`'s app now (as the test, not the plan).
    pub fn restart(&self, i: usize) {
        let ok = std::process::Command::new(self.dirs[i].join("app")).arg("restart").status().unwrap().success();
        assert!(ok, "app restart failed");
        wait_answers(&self.addrs[i], self.port, Duration::from_secs(10));
    }

    /// The pid of host `i`'s app (0-based), to tell whether it was restarted.
    pub fn pid(&self, i: usize) -> String {
        std::fs::read_to_string(self.dirs[i].join("app.pid")).unwrap_or_default().trim().to_string()
    }
}

impl Drop for Apps {
    fn drop(&mut self) {
        for (dir, addr) in self.dirs.iter().zip(&self.addrs) {
            let _ = std::process::Command::new(dir.join("app")).arg("stop").status();
            // When the folder went first (a struct that drops its TempDir before its
            // Apps), the script and the pid file are gone: find the app by its command line.
            kill_apps_on(addr, self.port);
        }
    }
}

/// Kills every test app (`http.server` or `failing.py`, as `script` starts them)
/// serving `addr:port`, found by command line in /proc.
fn kill_apps_on(addr: &str, port: u16) {
    let port = port.to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else { return };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let has = |w: &str| args.contains(&w.as_bytes());
        let ours = (has("http.server") && has("--bind") && has(addr) && has(&port))
            || (args.iter().any(|a| a.ends_with(b"/failing.py")) && has(addr) && has(&port));
        if ours {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

pub fn wait_answers(addr: &str, port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    while std::net::TcpStream::connect((addr, port)).is_err() {
        assert!(Instant::now() < deadline, "the app on {addr}:{port} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A steady HTTP load on loopback: `threads` clients each send `GET path` in a loop,
/// one connection per request, until `stop` is set, `max_requests` were sent in total,
/// or `max_time` passed. Counts requests and failures (anything but a 200, or a
/// connection error).
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handles: Vec<std::thread::JoinHandle<(u64, u64, Vec<String>)>>,
}

pub struct LoadResult {
    pub sent: u64,
    pub failed: u64,
    /// A few failure descriptions, for the test's message.
    pub examples: Vec<String>,
}

impl Load {
    pub fn start(port: u16, path: &str, threads: usize, max_requests: u64, max_time: Duration) -> Load {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let budget = Arc::new(AtomicU64::new(max_requests));
        let until = Instant::now() + max_time;
        let handles = (0..threads)
            .map(|_| {
                let (stop, budget, path) = (stop.clone(), budget.clone(), path.to_string());
                std::thread::spawn(move || {
                    let (mut sent, mut failed, mut examples) = (0u64, 0u64, Vec::new());
                    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                        if budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1)).is_err() {
                            break;
                        }
                        sent += 1;
                        if let Err(e) = get(port, &path) {
                            failed += 1;
                            if examples.len() < 5 {
                                examples.push(e);
                            }
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    (sent, failed, examples)
                })
            })
            .collect();
        Load { stop, handles }
    }

    pub fn finish(self) -> LoadResult {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut result = LoadResult { sent: 0, failed: 0, examples: Vec::new() };
        for h in self.handles {
            let (sent, failed, examples) = h.join().unwrap();
            result.sent += sent;
            result.failed += failed;
            result.examples.extend(examples);
        }
        result
    }
}

/// One `GET path` through 127.0.0.1:`port`; `Err` describes anything but a 200.
pub fn get(port: u16, path: &str) -> Result<(), String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: app\r\n\r\n").as_bytes()).map_err(|e| format!("write: {e}"))?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).map_err(|e| format!("read: {e}"))?;
    let head = String::from_utf8_lossy(&answer[..answer.len().min(64)]).to_string();
    if head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(head.lines().next().unwrap_or("empty answer").to_string())
    }
}
