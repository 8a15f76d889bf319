//! Resume and records after an interruption (issue 13): a resume continues the run it
//! resumes, with the same inputs; a torn journal loses one line, not the campaign; the
//! lock can always be read and broken. Local transport and a `command` balancer whose
//! pool is a directory: nothing here needs SSH.

mod common;

use std::path::Path;

use common::{Planrun, TempDir, lines, local_servers, pool_in_rotation};

/// `hosts` local hosts; the restart records `restart HOST RELEASE` and fails on the host
/// named by the file `fail` in the plan's folder (so a fault can be fixed between runs).
fn plan(dir: &Path, hosts: usize) -> String {
    pool_in_rotation(dir, hosts);
    let servers = local_servers(hosts);
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
    lines(&dir.join("record"))
}

/// `planrun apply PLAN --yes` and `extra`, run in `dir`.
fn apply(dir: &Path, plan: &str, extra: &[&str]) -> common::Output {
    Planrun::at(dir).args(&["apply", plan, "--yes"]).args(extra).run()
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
    out.code(1);
    assert!(
        out.stdout.contains("to continue where it stopped: planrun apply v.yaml --resume --var 'release=2'\n"),
        "the printed command is complete:\n{}",
        out.stdout
    );
    fix(dir.path());

    let other = apply(dir.path(), "v.yaml", &["--resume", "--var", "release=3"]);
    other.code(2);
    assert!(
        other.stderr.contains("`--var`: the run had `release=2`, this resume gives `release=3`"),
        "{}",
        other.stderr
    );
    assert_eq!(record(dir.path()), ["restart h1 2"], "a refused resume runs nothing");

    let out = apply(dir.path(), "v.yaml", &["--resume"]);
    out.code(0);
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
    refused.code(2);
    refused.stderr_has("`--limit`: the run had `h1,h2`, this resume gives `h3`");

    let status = Planrun::in_dir(&dir).args(&["status", "v.yaml"]).run();
    assert!(
        status.stdout.contains("`planrun apply v.yaml --resume --limit 'h1,h2'` would run 2 of 6 steps"),
        "{}",
        status.stdout
    );

    let out = apply(dir.path(), "v.yaml", &["--resume"]);
    out.code(0);
    assert_eq!(record(dir.path()), ["restart h1 1", "restart h2 1"], "h3 and h4 are not part of that run");
}

/// A limit of patterns and exclusions is recorded as written: the resume command repeats
/// it, a resume giving the same text is accepted, and the resume rolls the same hosts.
#[test]
fn a_resume_accepts_the_same_limit_of_patterns_and_exclusions() {
    let dir = TempDir::new("resume-limit-patterns");
    dir.write("v.yaml", plan(dir.path(), 4));
    fail_on(dir.path(), "h3");
    let first = apply(dir.path(), "v.yaml", &["--limit", "h[1-3],!h2"]);
    first.code(1);
    first.stdout_has("planrun apply v.yaml --resume --limit 'h[1-3],!h2'");
    assert_eq!(record(dir.path()), ["restart h1 1"], "h2 is left out and h3 fails");
    fix(dir.path());

    let other = apply(dir.path(), "v.yaml", &["--resume", "--limit", "role:app,!h2"]);
    other.code(2);
    other.stderr_has("`--limit`: the run had `h[1-3],!h2`, this resume gives `role:app,!h2`");

    let out = apply(dir.path(), "v.yaml", &["--resume", "--limit", "h[1-3],!h2"]);
    out.code(0);
    assert_eq!(record(dir.path()), ["restart h1 1", "restart h3 1"], "h3 is rolled, h2 and h4 are not");
}

#[test]
fn the_resume_command_quotes_a_plan_path_with_spaces_and_semicolons() {
    let dir = TempDir::new("resume-quote");
    dir.write("my plan;x.yaml", plan(dir.path(), 2));
    fail_on(dir.path(), "h1");
    let out = apply(dir.path(), "my plan;x.yaml", &[]);
    out.code(1);
    out.stdout_has("planrun apply 'my plan;x.yaml' --resume\n");
}

/// Issue 13, item 3: a `command` balancer cannot list its pool; the pool is every node the
/// whole plan names, so `--limit h1` of a healthy pool is not "the last healthy node".
#[test]
fn limit_behind_a_command_balancer_counts_the_whole_pool() {
    let dir = TempDir::new("resume-pool");
    dir.write("v.yaml", plan(dir.path(), 4));
    let out = apply(dir.path(), "v.yaml", &["--limit", "h1"]);
    out.code(0);
    assert_eq!(record(dir.path()), ["restart h1 1"]);
    out.stderr_has("pre-flight: ok");
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
    out.code(0);
    assert_eq!(out.stderr.matches("1 line of the journal").count(), 1, "{}", out.stderr);
    assert_eq!(record(dir.path()), ["restart h1 1", "restart h2 1", "restart h3 1"], "h1 is not redone");
    let status = Planrun::in_dir(&dir).args(&["status", "v.yaml"]).run();
    status.stdout_has(": succeeded");
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
    out.code(1);
    out.stderr_has("error: cannot write the journal");
    out.stderr_has("nothing was changed");
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
    let status = Planrun::in_dir(&dir).args(&["lock", "status", "v.yaml"]).run();
    status.code(0);
    status.stdout_has("held, holder unknown");
    let refused = apply(dir.path(), "v.yaml", &[]);
    assert_eq!(refused.code, 1);
    refused.stderr_has("exists but does not say who holds it");
    let released = Planrun::in_dir(&dir).args(&["lock", "release", "v.yaml"]).run();
    released.code(0);
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
    let first = Planrun::in_dir(&dir).args(&["apply", "slow.yaml", "--yes", "--message", "hotfix 12"]).spawn();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !dir.path().join("lock/holder").exists() {
        assert!(std::time::Instant::now() < deadline, "the first apply never took the lock");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let status = Planrun::in_dir(&dir).args(&["lock", "status", "v.yaml"]).run();
    status.stdout_has(": \"hotfix 12\"");
    let refused = apply(dir.path(), "v.yaml", &[]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(refused.stderr.contains("\"hotfix 12\""), "a refused apply shows the message:\n{}", refused.stderr);

    let waited = apply(dir.path(), "v.yaml", &["--lock-wait", "20s"]);
    waited.code(0);
    waited.stderr_has("waiting for the lock `local:");
    let mut first = first;
    assert!(first.wait().unwrap().success());
}
