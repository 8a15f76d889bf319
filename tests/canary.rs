//! Canary control (issue 19): a rollout that pauses after a batch, stops cleanly without
//! a terminal (exit 3, every node in rotation, `status` says so) and is promoted by
//! `--resume`; `--no-pause` runs through; on a terminal the pause asks and "y" goes on.
//! Local transport and a `command` balancer whose pool is a folder: no sshd needed.

mod common;
mod support;

use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Planrun, TempDir, lines, local_servers, pool_in_rotation};
use portable_pty::{CommandBuilder, PtySize, native_pty_system};

/// `hosts` local hosts rolled one at a time, pausing after the batches `pause_after`
/// (YAML list text); each restart appends `restart HOST` to `record`.
fn plan(dir: &Path, hosts: usize, pause_after: &str) -> String {
    pool_in_rotation(dir, hosts);
    let servers = local_servers(hosts);
    let root = dir.display();
    format!(
        "version: 1
application: shop
servers:
{servers}balancers:
  pool:
    kind: command
    reject: rm -f {root}/pool/{{{{node}}}}
    accept: touch {root}/pool/{{{{node}}}}
    status: test -e {root}/pool/{{{{node}}}}
lock: {{ host: local, path: {root}/lock }}
rollout:
  select: {{ roles: [app] }}
  batch_size: 1
  pause_after: {pause_after}
  steps:
    - name: reject
      balancer: {{ use: pool, action: reject, node: \"{{{{host.name}}}}\" }}
    - name: restart
      run: echo restart {{{{host.name}}}} >> {root}/record
    - name: accept
      balancer: {{ use: pool, action: accept, node: \"{{{{host.name}}}}\", wait_up: false }}
"
    )
}

fn record(dir: &Path) -> Vec<String> {
    lines(&dir.join("record"))
}

#[track_caller]
fn assert_all_in_rotation(dir: &Path, hosts: usize) {
    for i in 1..=hosts {
        assert!(dir.join("pool").join(format!("h{i}")).exists(), "h{i} is out of rotation");
    }
}

fn apply(dir: &Path, extra: &[&str]) -> common::Output {
    Planrun::at(dir).args(&["apply", "c.yaml", "--yes"]).args(extra).run()
}

#[test]
fn a_pause_without_a_terminal_exits_3_and_resume_promotes() {
    let dir = TempDir::new("canary-pause");
    dir.write("c.yaml", plan(dir.path(), 5, "[1]"));

    let out = apply(dir.path(), &[]);
    out.code(3).stdout_has("rollout PAUSED after batch 1 of 5: every node is in rotation");
    out.stdout_has("to promote it: planrun apply c.yaml --resume");
    assert_eq!(record(dir.path()), ["restart h1"], "only the canary batch ran");
    assert_all_in_rotation(dir.path(), 5);
    assert!(!dir.path().join("lock").exists(), "the lock is released");
    let journal = std::fs::read_to_string(dir.path().join(".planrun/journal.jsonl")).unwrap();
    assert!(journal.contains(r#""type":"paused""#) && journal.contains(r#""after_batch":1,"batches":5"#), "{journal}");
    assert!(journal.contains(r#""outcome":"paused""#), "{journal}");

    let status = Planrun::at(dir.path()).args(&["status", "c.yaml"]).run();
    status.code(0).stdout_has(": paused after batch 1 of 5");

    let resumed = apply(dir.path(), &["--resume"]);
    resumed.code(0).stdout_has("rollout succeeded");
    assert_eq!(record(dir.path()), ["restart h1", "restart h2", "restart h3", "restart h4", "restart h5"]);
    assert_all_in_rotation(dir.path(), 5);
}

#[test]
fn a_second_pause_stops_the_resume_again() {
    let dir = TempDir::new("canary-two-pauses");
    dir.write("c.yaml", plan(dir.path(), 4, "[]"));
    apply(dir.path(), &["--pause-after", "1,3"]).code(3).stdout_has("PAUSED after batch 1 of 4");
    apply(dir.path(), &["--resume", "--pause-after", "1", "--pause-after", "3"])
        .code(3)
        .stdout_has("PAUSED after batch 3 of 4");
    assert_eq!(record(dir.path()), ["restart h1", "restart h2", "restart h3"]);
    Planrun::at(dir.path()).args(&["status", "c.yaml"]).run().stdout_has("paused after batch 3 of 4");
    apply(dir.path(), &["--resume", "--no-pause"]).code(0);
    assert_eq!(record(dir.path()).len(), 4);
}

#[test]
fn no_pause_runs_through_the_plans_pauses() {
    let dir = TempDir::new("canary-no-pause");
    dir.write("c.yaml", plan(dir.path(), 3, "[1, 2]"));
    apply(dir.path(), &["--no-pause"]).code(0).stdout_has("rollout succeeded");
    assert_eq!(record(dir.path()).len(), 3);
}

#[test]
fn a_pause_past_the_last_batch_is_refused_before_anything_runs() {
    let dir = TempDir::new("canary-beyond");
    dir.write("c.yaml", plan(dir.path(), 3, "[4]"));
    let out = apply(dir.path(), &[]);
    out.code(2).stderr_has(
        "error: `rollout.pause_after` pauses after batch 4, but this run has 3 batches; nothing was executed",
    );
    assert!(record(dir.path()).is_empty());
    apply(dir.path(), &["--pause-after", "0"]).code(2);
    apply(dir.path(), &["--pause-after", "9"])
        .code(2)
        .stderr_has("`--pause-after` pauses after batch 9, but this run has 3 batches");
}

#[test]
fn pause_after_zero_in_the_plan_is_bad_input() {
    let dir = TempDir::new("canary-zero");
    dir.write("c.yaml", plan(dir.path(), 2, "[0]"));
    let out = Planrun::at(dir.path()).args(&["validate", "c.yaml"]).run();
    out.code(2).stderr_has("c.yaml:");
}

/// planrun in a pseudo-terminal: what it wrote, and a way to answer.
struct Session {
    child: Box<dyn portable_pty::Child + Send + Sync>,
    input: Box<dyn Write + Send>,
    output: Arc<Mutex<Vec<u8>>>,
}

impl Session {
    fn start(dir: &Path, args: &[&str]) -> Session {
        let pair = native_pty_system()
            .openpty(PtySize { rows: 50, cols: 120, pixel_width: 0, pixel_height: 0 })
            .expect("open a pseudo-terminal");
        let mut command = CommandBuilder::new(env!("CARGO_BIN_EXE_planrun"));
        command.args(args);
        command.cwd(dir);
        command.env("TERM", "xterm-256color");
        command.env("NO_COLOR", "1");
        command.env_remove("SSH_AUTH_SOCK");
        let child = pair.slave.spawn_command(command).expect("planrun starts in the pty");
        drop(pair.slave);
        let mut reader = pair.master.try_clone_reader().expect("read the pty");
        let input = pair.master.take_writer().expect("write the pty");
        let output = Arc::new(Mutex::new(Vec::new()));
        let sink = output.clone();
        std::thread::spawn(move || {
            let _master = pair.master;
            let mut buffer = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buffer[..n]);
            }
        });
        Session { child, input, output }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    #[track_caller]
    fn wait_for(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.text().contains(needle) {
            assert!(Instant::now() < deadline, "the terminal never showed {needle:?}:\n{}", self.text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.input.write_all(bytes).unwrap();
        self.input.flush().unwrap();
    }

    fn exit_code(mut self) -> u32 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.exit_code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("planrun did not exit:\n{}", self.text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn a_pause_on_a_terminal_asks_and_yes_goes_on() {
    let dir = TempDir::new("canary-pty-yes");
    dir.write("c.yaml", plan(dir.path(), 3, "[1]"));
    // `--yes` skips the confirmation, not the pause.
    let mut session = Session::start(dir.path(), &["apply", "c.yaml", "--yes"]);
    session.wait_for("continue with batch 2 of 3? [y/N]");
    assert!(session.text().contains("batch 1 of 3 done: h1 ok"), "{}", session.text());
    assert_eq!(record(dir.path()), ["restart h1"], "nothing runs while the question waits");
    session.send(b"y\r");
    let text = {
        session.wait_for("rollout succeeded");
        session.text()
    };
    assert_eq!(session.exit_code(), 0, "{text}");
    assert_eq!(record(dir.path()), ["restart h1", "restart h2", "restart h3"]);
    assert_all_in_rotation(dir.path(), 3);
}

#[test]
fn a_pause_on_a_terminal_answered_no_stops_paused() {
    let dir = TempDir::new("canary-pty-no");
    dir.write("c.yaml", plan(dir.path(), 3, "[1]"));
    let mut session = Session::start(dir.path(), &["apply", "c.yaml", "--yes"]);
    session.wait_for("continue with batch 2 of 3? [y/N]");
    session.send(b"n\r");
    session.wait_for("rollout PAUSED after batch 1 of 3");
    assert_eq!(session.exit_code(), 3);
    assert_eq!(record(dir.path()), ["restart h1"]);
    assert_all_in_rotation(dir.path(), 3);
}

/// A host that failed within `max_failed_hosts` stays where it failed: the pause says so
/// rather than "every node is in rotation".
#[test]
fn a_pause_after_a_failed_host_does_not_claim_every_node_is_back() {
    let dir = TempDir::new("canary-pause-failed");
    let plan = plan(dir.path(), 3, "[1]")
        .replace("  batch_size: 1\n", "  batch_size: 1\n  max_failed_hosts: 1\n")
        .replace("run: echo restart", "run: test {{host.name}} != h1 && echo restart");
    dir.write("c.yaml", plan);
    let out = apply(dir.path(), &[]);
    out.code(3).stdout_has("rollout PAUSED after batch 1 of 3: every node is in rotation but the failed hosts'");
    out.stdout_has("paused after batch 1 of 3: every node is in rotation but the failed hosts'");
    assert!(!dir.path().join("pool/h1").exists(), "h1 failed out of rotation and stays there");
    assert!(dir.path().join("pool/h2").exists() && dir.path().join("pool/h3").exists());
    assert!(!dir.path().join("lock").exists(), "the lock is released");
}

/// At a pause on a terminal, the question comes with what the traffic guard saw so far:
/// the operator looks at the canary's numbers before promoting it. The guarded service is
/// a real HTTP backend.
#[test]
#[cfg_attr(no_python3, ignore = "needs python3: apt-get install python3")]
fn a_pause_on_a_terminal_shows_the_guards_numbers() {
    let dir = TempDir::new("canary-pty-guard");
    let block = std::process::id() % 250 + 1;
    let addr = format!("127.68.{block}.1");
    let _service = support::apps::Apps::start(
        vec![dir.path().join("service")],
        vec![addr.clone()],
        8080,
        dir.path().join("service-record"),
    );
    let plan = plan(dir.path(), 3, "[1]").replace(
        "rollout:\n",
        &format!("guard: {{ http: \"http://{addr}:8080/health\", interval: 100ms }}\nrollout:\n"),
    );
    dir.write("c.yaml", plan);
    let mut session = Session::start(dir.path(), &["apply", "c.yaml", "--yes"]);
    session.wait_for("continue with batch 2 of 3? [y/N]");
    let text = session.text();
    assert!(text.contains("batch 1 of 3 done: h1 ok"), "{text}");
    assert!(text.contains("guard: 0 failed of "), "the question shows the guard's numbers:\n{text}");
    session.send(b"y\r");
    session.wait_for("rollout succeeded");
    assert_eq!(session.exit_code(), 0);
    assert_eq!(record(dir.path()), ["restart h1", "restart h2", "restart h3"]);
}
