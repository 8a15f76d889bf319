//! Resume and records after an interruption (issue 13): a resume continues the run it
//! resumes, with the same inputs; a torn journal loses one line, not the campaign; the
//! lock can always be read and broken. Local transport and a `command` balancer whose
//! pool is a directory: nothing here needs SSH.

mod common;

use std::path::Path;

use common::{Output, TempDir, planrun_in};

/// `hosts` local hosts; the restart records `restart HOST RELEASE` and fails on the host
/// named by the file `fail` in the plan's folder (so a fault can be fixed between runs).
fn plan(dir: &Path, hosts: usize) -> String {
    std::fs::create_dir_all(dir.join("pool")).unwrap();
    let mut servers = String::new();
    for i in 1..=hosts {
        std::fs::write(dir.join("pool").join(format!("h{i}")), "").unwrap();
        servers.push_str(&format!("  - {{ host: 127.0.0.1, name: h{i}, transport: local, roles: [app] }}\n"));
    }
    let root = dir.display();
    format!(
        "version: 1
application: shop
vars:
  release: \"1\"
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
  steps:
    - name: reject
      balancer: {{ use: pool, action: reject, node: \"{{{{host.name}}}}\" }}
    - name: restart
      run: \"test \\\"$(cat {root}/fail 2>/dev/null)\\\" != {{{{host.name}}}} && echo 'restart {{{{host.name}}}} {{{{vars.release}}}}' >> {root}/record\"
    - name: accept
      balancer: {{ use: pool, action: accept, node: \"{{{{host.name}}}}\", wait_up: false }}
"
    )
}

fn record(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("record")).unwrap_or_default().lines().map(String::from).collect()
}

fn apply(dir: &Path, plan: &str, extra: &[&str]) -> Output {
    let mut args = vec!["apply", plan, "--yes"];
    args.extend_from_slice(extra);
    planrun_in(dir, &args)
}

fn fail_on(dir: &Path, host: &str) {
    std::fs::write(dir.join("fail"), host).unwrap();
}

fn fix(dir: &Path) {
    let _ = std::fs::remove_file(dir.join("fail"));
}

#[test]
fn a_resume_continues_with_the_vars_of_the_run_it_resumes() {
    let dir = TempDir::new("resume-vars");
    dir.write("v.yaml", plan(dir.path(), 3));
    fail_on(dir.path(), "h2");
    let out = apply(dir.path(), "v.yaml", &["--var", "release=2"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("to continue where it stopped: planrun apply v.yaml --resume --var 'release=2'\n"),
        "the printed command is complete:\n{}",
        out.stdout
    );
    fix(dir.path());

    let other = apply(dir.path(), "v.yaml", &["--resume", "--var", "release=3"]);
    assert_eq!(other.code, 2, "{}{}", other.stdout, other.stderr);
    assert!(
        other.stderr.contains("`--var`: the run had `release=2`, this resume gives `release=3`"),
        "{}",
        other.stderr
    );
    assert_eq!(record(dir.path()), ["restart h1 2"], "a refused resume runs nothing");

    let out = apply(dir.path(), "v.yaml", &["--resume"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(record(dir.path()), ["restart h1 2", "restart h2 2", "restart h3 2"], "no mixed fleet");
}

#[test]
fn a_resume_keeps_the_limit_of_the_run_it_resumes() {
    let dir = TempDir::new("resume-limit");
    dir.write("v.yaml", plan(dir.path(), 4));
    fail_on(dir.path(), "h2");
    assert_eq!(apply(dir.path(), "v.yaml", &["--limit", "h1,h2"]).code, 1);
    fix(dir.path());
    let refused = apply(dir.path(), "v.yaml", &["--resume", "--limit", "h3"]);
    assert_eq!(refused.code, 2, "{}{}", refused.stdout, refused.stderr);
    assert!(refused.stderr.contains("`--limit`: the run had `h1,h2`, this resume gives `h3`"), "{}", refused.stderr);

    let status = planrun_in(dir.path(), &["status", "v.yaml"]);
    assert!(
        status.stdout.contains("`planrun apply v.yaml --resume --limit 'h1,h2'` would run 2 of 6 steps"),
        "{}",
        status.stdout
    );

    let out = apply(dir.path(), "v.yaml", &["--resume"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(record(dir.path()), ["restart h1 1", "restart h2 1"], "h3 and h4 are not part of that run");
}

#[test]
fn the_resume_command_quotes_a_plan_path_with_spaces_and_semicolons() {
    let dir = TempDir::new("resume-quote");
    dir.write("my plan;x.yaml", plan(dir.path(), 2));
    fail_on(dir.path(), "h1");
    let out = apply(dir.path(), "my plan;x.yaml", &[]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("planrun apply 'my plan;x.yaml' --resume\n"), "{}", out.stdout);
}

/// Issue 13, item 3: a `command` balancer cannot list its pool; the pool is every node the
/// whole plan names, so `--limit h1` of a healthy pool is not "the last healthy node".
#[test]
fn limit_behind_a_command_balancer_counts_the_whole_pool() {
    let dir = TempDir::new("resume-pool");
    dir.write("v.yaml", plan(dir.path(), 4));
    let out = apply(dir.path(), "v.yaml", &["--limit", "h1"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(record(dir.path()), ["restart h1 1"]);
    assert!(out.stderr.contains("pre-flight: ok"), "{}", out.stderr);
}

/// Issue 13, item 4: a crash mid-write tears the journal's last line. The next run starts
/// on a line of its own, the torn line is reported once, and finished hosts stay done.
#[test]
fn a_torn_journal_line_loses_only_that_line() {
    let dir = TempDir::new("resume-torn");
    dir.write("v.yaml", plan(dir.path(), 3));
    fail_on(dir.path(), "h2");
    assert_eq!(apply(dir.path(), "v.yaml", &[]).code, 1);
    fix(dir.path());
    let journal = dir.path().join(".planrun/journal.jsonl");
    let mut text = std::fs::read_to_string(&journal).unwrap();
    // Tear the last record (the run's end) in the middle.
    let cut = text.trim_end().rfind('\n').unwrap() + 10;
    text.truncate(cut);
    std::fs::write(&journal, &text).unwrap();

    let out = apply(dir.path(), "v.yaml", &["--resume"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(out.stderr.matches("1 line of the journal").count(), 1, "{}", out.stderr);
    assert_eq!(record(dir.path()), ["restart h1 1", "restart h2 1", "restart h3 1"], "h1 is not redone");
    let status = planrun_in(dir.path(), &["status", "v.yaml"]);
    assert!(status.stdout.contains(": succeeded"), "{}", status.stdout);
}

/// Issue 13, item 4: a journal that cannot be written stops the run before anything
/// changes; planrun cannot resume what it cannot record.
#[test]
fn an_unwritable_journal_stops_the_run_before_it_starts() {
    let dir = TempDir::new("resume-unwritable");
    dir.write("v.yaml", plan(dir.path(), 2));
    // A file where the state folder should be: nothing can be written inside it.
    std::fs::write(dir.path().join(".planrun"), "").unwrap();
    let out = apply(dir.path(), "v.yaml", &[]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("error: cannot write the journal"), "{}", out.stderr);
    assert!(out.stderr.contains("nothing was changed"), "{}", out.stderr);
    assert!(record(dir.path()).is_empty());
    assert!(dir.path().join("pool/h1").exists() && dir.path().join("pool/h2").exists());
    assert!(!dir.path().join("lock").exists(), "the lock is released");
}

/// Issue 13, item 5: a lock folder without its holder file (a crash between `mkdir` and
/// writing it) can be read and broken.
#[test]
fn a_lock_without_a_holder_can_be_inspected_and_released() {
    let dir = TempDir::new("resume-lock");
    dir.write("v.yaml", plan(dir.path(), 2));
    std::fs::create_dir(dir.path().join("lock")).unwrap();
    let status = planrun_in(dir.path(), &["lock", "status", "v.yaml"]);
    assert_eq!(status.code, 0, "{}{}", status.stdout, status.stderr);
    assert!(status.stdout.contains("held, holder unknown"), "{}", status.stdout);
    let refused = apply(dir.path(), "v.yaml", &[]);
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("exists but does not say who holds it"), "{}", refused.stderr);
    let released = planrun_in(dir.path(), &["lock", "release", "v.yaml"]);
    assert_eq!(released.code, 0, "{}{}", released.stdout, released.stderr);
    assert!(!dir.path().join("lock").exists());
    assert_eq!(apply(dir.path(), "v.yaml", &[]).code, 0);
}

/// Issue 13, item 7: `--lock-wait` waits for a held lock, naming its holder and its
/// `--message`, instead of refusing.
#[test]
fn lock_wait_waits_for_the_holder_and_shows_its_message() {
    let dir = TempDir::new("resume-lock-wait");
    // The first apply holds the lock for about two seconds.
    let slow = plan(dir.path(), 1).replace("&& echo 'restart", "&& sleep 2 && echo 'restart");
    dir.write("slow.yaml", &slow);
    dir.write("v.yaml", plan(dir.path(), 1));
    let first = std::process::Command::new(env!("CARGO_BIN_EXE_planrun"))
        .args(["apply", "slow.yaml", "--yes", "--message", "hotfix 12"])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !dir.path().join("lock/holder").exists() {
        assert!(std::time::Instant::now() < deadline, "the first apply never took the lock");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let status = planrun_in(dir.path(), &["lock", "status", "v.yaml"]);
    assert!(status.stdout.contains(": \"hotfix 12\""), "{}", status.stdout);
    let refused = apply(dir.path(), "v.yaml", &[]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(refused.stderr.contains("\"hotfix 12\""), "a refused apply shows the message:\n{}", refused.stderr);

    let waited = apply(dir.path(), "v.yaml", &["--lock-wait", "20s"]);
    assert_eq!(waited.code, 0, "{}{}", waited.stdout, waited.stderr);
    assert!(waited.stderr.contains("waiting for the lock `local:"), "{}", waited.stderr);
    let mut first = first;
    assert!(first.wait().unwrap().success());
}
