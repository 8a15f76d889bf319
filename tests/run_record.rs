//! Every run recorded, resumable, locked: the journal, `--resume`, the rollout lock,
//! secrets kept out of every output, and the JSON event shape.

mod common;
mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{APPLY, Planrun, TempDir, lines};
use support::Fleet;

/// A plan over the fleet. A host's restart refuses while `broken` exists in its
/// directory, before doing anything, so a fixed fault can be resumed; the app records
/// each real restart, and the balancer records its calls.
fn plan(fleet: &Fleet, root: &Path, restart_extra: &str) -> String {
    let root = root.display();
    format!(
        "version: 1
application: shop
{ssh}lock: {{ path: {lock} }}
servers:
{servers}balancers:
  pool:
    kind: command
    reject: echo \"reject {{{{node}}}}\" >> {root}/record
    accept: echo \"accept {{{{node}}}}\" >> {root}/record
rollout:
  select: {{ roles: [app] }}
  steps:
    - name: reject
      balancer: {{ use: pool, action: reject, node: \"{{{{host.name}}}}\" }}
    - name: restart
      run: \"test ! -f {{{{host.options.dir}}}}/broken && {restart_extra}echo restart >> {{{{host.options.dir}}}}/restarts\"
      timeout: 10s
    - name: accept
      balancer: {{ use: pool, action: accept, node: \"{{{{host.name}}}}\" }}
",
        ssh = fleet.ssh_yaml(),
        servers = fleet.servers_yaml(),
        lock = fleet.dir().join("rollout.lock").display(),
    )
}

fn record(root: &Path) -> Vec<String> {
    lines(&root.join("record"))
}

fn restarts(host: &support::Host) -> usize {
    std::fs::read_to_string(host.dir.join("restarts")).unwrap_or_default().lines().count()
}

/// `planrun apply plan.yaml --yes` and `extra` in `dir`.
fn apply(dir: &Path, extra: &[&str]) -> common::Output {
    Planrun::at(dir).args(APPLY).args(extra).run()
}

fn spawn_apply(dir: &Path) -> std::process::Child {
    Planrun::at(dir).args(APPLY).spawn()
}

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
#[cfg_attr(no_sshd, ignore = "needs sshd: apt-get install openssh-server")]
fn a_failed_run_resumed_after_the_fix_does_every_host_exactly_once() {
    if !support::require("sshd") {
        return;
    }
    let fleet = Fleet::start(3);
    let dir = TempDir::new("resume");
    dir.write("plan.yaml", plan(&fleet, dir.path(), ""));
    std::fs::write(fleet.host(2).dir.join("broken"), "").unwrap();

    let out = apply(dir.path(), &[]);
    out.code(1);
    out.stdout_has("to continue where it stopped: planrun apply plan.yaml --resume");

    let status = Planrun::in_dir(&dir).args(&["status", "plan.yaml"]).run();
    assert_eq!(status.code, 0, "{}", status.stderr);
    status.stdout_has(": halted");
    status.stdout_has("would run 5 of 9 steps");
    status.stdout_has("    h2: restart → accept");
    status.stdout_has("    h3: reject → restart → accept");

    std::fs::remove_file(fleet.host(2).dir.join("broken")).unwrap();
    let out = apply(dir.path(), &["--resume"]);
    out.code(0);
    out.stdout_has("resuming run ");
    assert_eq!(record(dir.path()), ["reject h1", "accept h1", "reject h2", "accept h2", "reject h3", "accept h3"]);
    for host in fleet.hosts() {
        assert_eq!(restarts(host), 1, "h{} restarted once", host.index);
    }

    // Done: a second resume has nothing to do.
    let out = apply(dir.path(), &["--resume"]);
    out.code(2);
    out.stderr_has("succeeded: there is nothing to resume");
}

/// Issue 13, item 2: `--force` overrides pre-flight only; a changed plan is resumed
/// only with the explicit `--resume-changed`, and the refusal says which file changed.
#[test]
#[cfg_attr(no_sshd, ignore = "needs sshd: apt-get install openssh-server")]
fn resume_refuses_when_the_plan_changed_unless_resume_changed() {
    if !support::require("sshd") {
        return;
    }
    let fleet = Fleet::start(2);
    let dir = TempDir::new("resume-changed");
    let text = plan(&fleet, dir.path(), "");
    dir.write("plan.yaml", &text);
    std::fs::write(fleet.host(1).dir.join("broken"), "").unwrap();
    assert_eq!(apply(dir.path(), &[]).code, 1);
    std::fs::remove_file(fleet.host(1).dir.join("broken")).unwrap();

    dir.write("plan.yaml", text.replace("timeout: 10s", "timeout: 20s"));
    let out = apply(dir.path(), &["--resume"]);
    out.code(2);
    out.stderr_has("error: the plan changed since run ");
    out.stderr_has(" started (`plan.yaml` changed); a resume would mix two plans");
    out.stderr_has("pass `--resume-changed`");
    assert!(record(dir.path()) == ["reject h1"], "nothing ran: {:?}", record(dir.path()));

    let forced = apply(dir.path(), &["--resume", "--force"]);
    assert_eq!(forced.code, 2, "--force is for pre-flight, not for a changed plan:\n{}", forced.stderr);

    let out = apply(dir.path(), &["--resume", "--resume-changed"]);
    out.code(0);
    assert_eq!(record(dir.path()), ["reject h1", "accept h1", "reject h2", "accept h2"]);
}

#[test]
#[cfg_attr(no_sshd, ignore = "needs sshd: apt-get install openssh-server")]
fn a_second_apply_from_another_working_copy_is_refused_naming_the_holder() {
    if !support::require("sshd") {
        return;
    }
    let fleet = Fleet::start(2);
    // Two operators' checkouts of the same plan: the lock is on the fleet, not beside
    // either copy.
    let alice = TempDir::new("lock-a");
    let bob = TempDir::new("lock-b");
    let text = plan(&fleet, alice.path(), "sleep 1 && ");
    alice.write("plan.yaml", &text);
    bob.write("plan.yaml", &text);

    let first = spawn_apply(alice.path());
    wait_for("the first apply to start", || record(alice.path()).contains(&"reject h1".to_string()));
    let out = apply(bob.path(), &[]);
    out.code(1);
    out.stderr_has("another apply holds the lock `h1:");
    assert!(out.stderr.contains(&format!("(pid {})", first.id())), "the holder is named:\n{}", out.stderr);
    out.stderr_has("nothing was changed");

    let lock = Planrun::in_dir(&bob).args(&["lock", "status", "plan.yaml"]).run();
    lock.stdout_has("held by ");

    let done = first.wait_with_output().unwrap();
    assert_eq!(done.status.code(), Some(0), "{}", String::from_utf8_lossy(&done.stdout));
    let lock = Planrun::in_dir(&bob).args(&["lock", "status", "plan.yaml"]).run();
    assert!(lock.stdout.contains(": free"), "the lock is released after the run:\n{}", lock.stdout);
    for host in fleet.hosts() {
        assert_eq!(restarts(host), 1);
    }
}

#[test]
#[cfg_attr(no_sshd, ignore = "needs sshd: apt-get install openssh-server")]
fn a_run_killed_mid_rollout_is_completed_by_resume() {
    if !support::require("sshd") {
        return;
    }
    let fleet = Fleet::start(3);
    let dir = TempDir::new("sigkill");
    dir.write("plan.yaml", plan(&fleet, dir.path(), "sleep 0.5 && "));
    let mut child = spawn_apply(dir.path());
    wait_for("h2 to be taken out", || record(dir.path()).contains(&"reject h2".to_string()));
    child.kill().unwrap(); // SIGKILL: no cleanup, no journal end, the lock left behind
    let _ = child.wait();

    let out = apply(dir.path(), &["--resume"]);
    out.code(0);
    assert!(out.stderr.contains("took over the lock"), "the dead holder's lock is taken over:\n{}", out.stderr);
    let rec = record(dir.path());
    assert_eq!(rec.iter().filter(|l| l.starts_with("reject")).count(), 3, "{rec:?}");
    assert_eq!(rec.last().map(String::as_str), Some("accept h3"), "{rec:?}");
    assert_eq!(restarts(fleet.host(1)), 1, "h1 was done before the kill and is not restarted again");
    assert!(restarts(fleet.host(2)) >= 1);
    assert_eq!(restarts(fleet.host(3)), 1);
}

#[test]
fn a_secret_printed_by_a_command_never_reaches_any_output_or_file() {
    let dir = TempDir::new("secret");
    let root = dir.path().display();
    let secret = "s3cr3t-Zebra-4412";
    dir.write(
        "plan.yaml",
        format!(
            "version: 1
application: shop
secret_env: [PLANRUN_TEST_SECRET]
lock: {{ path: {root}/lock }}
servers:
  - {{ host: 127.0.0.1, name: h1, transport: local, roles: [app] }}
  - {{ host: 127.0.0.1, name: h2, transport: local, roles: [app] }}
rollout:
  select: {{ roles: [app] }}
  max_failed_hosts: 1
  steps:
    - name: leak
      run: echo \"token=$PLANRUN_TEST_SECRET\" && echo \"again $PLANRUN_TEST_SECRET\" >&2
    - name: fail
      run: echo \"failing with $PLANRUN_TEST_SECRET\" && test {{{{host.name}}}} = h1
"
        ),
    );
    let run = |extra: &[&str]| {
        let out = Planrun::in_dir(&dir).args(APPLY).args(extra).env("PLANRUN_TEST_SECRET", secret).run();
        (out.stdout, out.stderr)
    };
    let (human, human_err) = run(&["-v"]);
    assert!(human.contains("h1 | token=***"), "{human}");
    assert!(human.contains("    | failing with ***"), "the failure summary is masked too:\n{human}");
    let (json, json_err) = run(&["--output", "json"]);
    assert!(json.contains("token=***"), "{json}");
    for text in [&human, &human_err, &json, &json_err] {
        assert!(!text.contains(secret), "the secret leaked:\n{text}");
    }
    let written = files_under(&dir.path().join(".planrun"));
    assert!(written.len() >= 3, "journal and logs: {written:?}");
    for file in written {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(!text.contains(secret), "the secret leaked into {}:\n{text}", file.display());
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The documented shape of `--output json` (README, "JSON events"), pinned: a field
/// added, renamed or removed fails here.
mod shape {
    use serde::Deserialize;

    #[derive(Deserialize)]
    #[serde(tag = "event", rename_all = "snake_case", deny_unknown_fields)]
    #[allow(dead_code)]
    pub enum Event {
        RunStarted {
            run_id: String,
            plan: String,
            application: String,
            hosts: usize,
            batches: usize,
            steps: usize,
            dry_run: bool,
            resume_of: Option<String>,
        },
        PhaseStarted {
            phase: String,
        },
        BatchStarted {
            batch: usize,
            hosts: Vec<String>,
        },
        StepStarted {
            host: Option<String>,
            step: String,
            phase: String,
            index: usize,
            description: String,
        },
        Output {
            host: Option<String>,
            step: String,
            stream: String,
            line: String,
        },
        StepRetry {
            host: Option<String>,
            step: String,
            attempt: u32,
            reason: String,
        },
        StepFinished {
            host: Option<String>,
            step: String,
            phase: String,
            index: usize,
            outcome: String,
            duration: f64,
            exit_code: Option<u32>,
            error: Option<String>,
        },
        HostFailed {
            host: String,
            step: String,
            error: String,
            last_lines: Vec<String>,
        },
        Stopping {
            reason: String,
        },
        RunFinished {
            outcome: String,
            duration: f64,
            failed_hosts: Vec<String>,
        },
    }
}

#[test]
fn json_events_have_the_documented_shape() {
    let dir = TempDir::new("json-events");
    let root = dir.path().display();
    dir.write(
        "plan.yaml",
        format!(
            "version: 1
application: shop
lock: {{ path: {root}/lock }}
servers:
  - {{ host: 127.0.0.1, name: h1, transport: local, roles: [app] }}
  - {{ host: 127.0.0.1, name: h2, transport: local, roles: [app] }}
before:
  - {{ name: prepare, local: echo preparing }}
rollout:
  select: {{ roles: [app] }}
  steps:
    - name: restart
      run: echo restarting {{{{host.name}}}} && test {{{{host.name}}}} = h1
"
        ),
    );
    let out = Planrun::in_dir(&dir).args(&["apply", "plan.yaml", "--yes", "--output", "json"]).run();
    out.code(1);
    let mut kinds = Vec::new();
    for line in out.stdout.lines() {
        let mut value: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let fields = value.as_object_mut().unwrap();
        // The envelope first, then the event's own fields (serde cannot deny unknown
        // fields through `flatten`, so the two are checked apart).
        assert_eq!(fields.keys().take(3).collect::<Vec<_>>(), ["v", "ts", "event"], "{line}");
        assert_eq!(fields.remove("v"), Some(serde_json::json!(1)));
        let ts = fields.remove("ts").unwrap();
        assert!(humantime::parse_rfc3339(ts.as_str().unwrap()).is_ok(), "{ts}");
        kinds.push(fields["event"].as_str().unwrap().to_string());
        let _: shape::Event = serde_json::from_value(value).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
    let first = |k: &str| kinds.iter().position(|x| x == k).unwrap_or_else(|| panic!("no {k} in {kinds:?}"));
    assert_eq!(first("run_started"), 0);
    assert!(first("phase_started") < first("batch_started"));
    assert!(first("output") > first("step_started"));
    assert!(first("host_failed") > first("step_finished"));
    assert_eq!(kinds.last().map(String::as_str), Some("run_finished"));
    let last: serde_json::Value = serde_json::from_str(out.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["outcome"], "halted");
    assert_eq!(last["failed_hosts"], serde_json::json!(["h2"]));
}
