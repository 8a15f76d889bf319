//! Fault injection for `tests/faults.rs`: a sampler of HAProxy's view, a relay in front
//! of HAProxy's runtime API that can be made to stop answering, `planrun apply` as a
//! child the test can signal, and killing sshd sessions.
//!
//! Everything is bounded: the sampler by a sample count, the relay's held connections by
//! a time, a planrun child by a deadline after which it is killed and the test fails.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most samples a sampler takes: 50 ms apart, that is 5 minutes.
const MAX_SAMPLES: usize = 6000;

/// One look at HAProxy's `show stat`: when (since the sampler started), and the servers
/// not in rotation (any status but `UP…`). `None` when the runtime API did not answer.
#[derive(Clone, Debug)]
pub struct Sample {
    pub at: Duration,
    pub out: Option<BTreeSet<String>>,
}

/// Polls `show stat` on HAProxy's runtime API every 50 ms from its own thread, for the
/// whole run, and records each sample's set of servers out of rotation.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    pub fn start(admin_port: u16) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (s, out) = (stop.clone(), samples.clone());
        let handle = std::thread::spawn(move || {
            let started = Instant::now();
            while !s.load(Ordering::Relaxed) && out.lock().unwrap().len() < MAX_SAMPLES {
                let states = super::haproxy::states_at(admin_port);
                let not_in_rotation = if states.is_empty() {
                    None
                } else {
                    Some(states.into_iter().filter(|(_, st)| !st.starts_with("UP")).map(|(n, _)| n).collect())
                };
                out.lock().unwrap().push(Sample { at: started.elapsed(), out: not_in_rotation });
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Sampler { stop, samples, handle: Some(handle) }
    }

    /// The samples so far, while it keeps sampling.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().unwrap().clone()
    }

    /// Whether some sample so far has `node` out of rotation.
    pub fn seen_out(&self, node: &str) -> bool {
        self.samples().iter().any(|s| s.out.as_ref().is_some_and(|o| o.contains(node)))
    }

    pub fn finish(mut self) -> Timeline {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().unwrap();
        }
        Timeline(self.samples.lock().unwrap().clone())
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Every sample of a run.
pub struct Timeline(pub Vec<Sample>);

impl Timeline {
    /// The most servers out of rotation in any one sample.
    pub fn max_out(&self) -> usize {
        self.0.iter().filter_map(|s| s.out.as_ref().map(BTreeSet::len)).max().unwrap_or(0)
    }

    /// Every server that was out of rotation in some sample.
    pub fn ever_out(&self) -> BTreeSet<String> {
        self.0.iter().filter_map(|s| s.out.clone()).flatten().collect()
    }

    /// The changes only: one line per sample whose set differs from the one before.
    pub fn render(&self) -> String {
        let mut text = String::new();
        let mut last: Option<Option<BTreeSet<String>>> = None;
        for s in &self.0 {
            if last.as_ref() != Some(&s.out) {
                let what = match &s.out {
                    None => "(runtime API did not answer)".to_string(),
                    Some(o) if o.is_empty() => "all in rotation".to_string(),
                    Some(o) => format!("out: {}", o.iter().cloned().collect::<Vec<_>>().join(", ")),
                };
                text.push_str(&format!("  {:>7.2}s  {what}\n", s.at.as_secs_f64()));
                last = Some(s.out.clone());
            }
        }
        text.push_str(&format!("  ({} samples)\n", self.0.len()));
        text
    }
}

/// A relay in front of HAProxy's runtime API (one command per connection). Once
/// [`Relay::mute`] is called it still accepts connections but never answers them, the
/// way a wedged or unreachable socket behaves; held connections are closed after
/// `HOLD` at most.
pub struct Relay {
    pub port: u16,
    muted: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

const HOLD: Duration = Duration::from_secs(60);

impl Relay {
    pub fn start(target_port: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let muted = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, s) = (muted.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        let (m, s) = (m.clone(), s.clone());
                        std::thread::spawn(move || relay_one(client, target_port, &m, &s));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Relay { port, muted, stop }
    }

    pub fn socket(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// From now on, accept and never answer.
    pub fn mute(&self) {
        self.muted.store(true, Ordering::Relaxed);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn relay_one(mut client: TcpStream, target_port: u16, muted: &AtomicBool, stop: &AtomicBool) {
    let _ = client.set_read_timeout(Some(Duration::from_millis(200)));
    let until = Instant::now() + HOLD;
    if muted.load(Ordering::Relaxed) {
        // Swallow whatever comes, answer nothing, until the client gives up.
        let mut buf = [0u8; 1024];
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            match client.read(&mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => return,
            }
        }
        return;
    }
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", target_port)) else { return };
    let _ = server.set_read_timeout(Some(Duration::from_secs(15)));
    let (Ok(mut client_read), Ok(mut server_write)) = (client.try_clone(), server.try_clone()) else { return };
    let _ = client_read.set_read_timeout(Some(Duration::from_secs(15)));
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_read, &mut server_write);
        let _ = server_write.shutdown(std::net::Shutdown::Write);
    });
    let _ = std::io::copy(&mut server, &mut client);
    let _ = client.shutdown(std::net::Shutdown::Both);
    let _ = up.join();
}

/// `planrun apply …` as a child of the test, its output collected by threads, so the
/// test can signal it mid-run. Killed at `deadline` if still running.
pub struct Run {
    child: Child,
    stdout: Option<std::thread::JoinHandle<String>>,
    stderr: Option<std::thread::JoinHandle<String>>,
    deadline: Instant,
}

/// How a [`Run`] ended. `code` is `None` when planrun died of a signal (as today's
/// planrun does on SIGTERM), `Some(n)` when it exited with `n`.
pub struct Ran {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
    /// From the call to [`Run::wait`] (right after the test's last injection) to the end.
    pub took: Duration,
}

impl Ran {
    /// The summary planrun prints at the end: from the verdict line (`rollout …` or
    /// `run …`, after the hosts × steps table) to the end of stdout, where the balancer
    /// state of the touched nodes is.
    pub fn summary(&self) -> &str {
        let mut start = None;
        let mut at = 0;
        for line in self.stdout.split_inclusive('\n') {
            if line.starts_with("rollout ") || line.starts_with("dry run ") {
                start = Some(at);
            }
            at += line.len();
        }
        start.map_or("", |s| &self.stdout[s..])
    }

    pub fn all(&self) -> String {
        format!(
            "exit {:?} (signal {:?}, timed out: {}, {:.1}s)\n--- stdout\n{}--- stderr\n{}",
            self.code,
            self.signal,
            self.timed_out,
            self.took.as_secs_f64(),
            self.stdout,
            self.stderr
        )
    }
}

impl Run {
    pub fn start(dir: &Path, args: &[&str], deadline: Duration) -> Run {
        let mut child = Command::new(env!("CARGO_BIN_EXE_planrun"))
            .args(args)
            .current_dir(dir)
            .env("NO_COLOR", "1")
            .env_remove("SSH_AUTH_SOCK")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("planrun starts");
        let mut out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = out.read_to_end(&mut s);
            String::from_utf8_lossy(&s).into_owned()
        });
        let stderr = std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = err.read_to_end(&mut s);
            String::from_utf8_lossy(&s).into_owned()
        });
        Run { child, stdout: Some(stdout), stderr: Some(stderr), deadline: Instant::now() + deadline }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `signal` (e.g. `nix::sys::signal::Signal::SIGTERM`) to planrun.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal);
    }

    /// Whether planrun is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for planrun to end, killing it at the deadline.
    pub fn wait(mut self) -> Ran {
        use std::os::unix::process::ExitStatusExt;
        let started = Instant::now();
        let mut timed_out = false;
        let status = loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                break status;
            }
            if Instant::now() > self.deadline {
                timed_out = true;
                let _ = self.child.kill();
                break self.child.wait().expect("planrun reaped");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Ran {
            code: status.code(),
            signal: status.signal(),
            stdout: self.stdout.take().unwrap().join().unwrap_or_default(),
            stderr: self.stderr.take().unwrap().join().unwrap_or_default(),
            timed_out,
            took: started.elapsed(),
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits until `path` exists; panics with `what` after `within`.
pub fn wait_for_file(path: &Path, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    while !path.exists() {
        assert!(Instant::now() < deadline, "{what}: {} did not appear within {within:?}", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `done()` holds; panics with `what` after `within`.
pub fn wait_until(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what} did not happen within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every live descendant of `pid`, from `/proc` (children before grandchildren).
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(p) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else { continue };
            // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { continue };
            let mut fields = rest.split_whitespace();
            let state = fields.next().unwrap_or("");
            let Some(ppid) = fields.next().and_then(|f| f.parse().ok()) else { continue };
            if state != "Z" {
                parents.push((p, ppid));
            }
        }
    }
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(parents.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    found.remove(0);
    found
}

/// SIGKILLs every process below `pid` (an sshd listener's sessions), not `pid` itself.
/// Returns how many it killed.
pub fn kill_descendants(pid: u32) -> usize {
    let victims = descendants(pid);
    for p in &victims {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*p as i32), nix::sys::signal::Signal::SIGKILL);
    }
    victims.len()
}
