//! `planrun apply` over the local transport: the order of steps and balancer calls, the
//! failure rules, timeouts, retries, Ctrl-C, confirmation and dry runs, as an operator
//! sees them (exit code, output, and what the "servers" and the "balancer" recorded).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Output, TempDir, planrun_env, planrun_in};

/// A plan of `hosts` local servers `h1`…`hN`. The `command` balancer and every step
/// append to `record` what they did, so the test reads back the real order; the pool
/// directory holds a file per node in rotation, every node in rotation to begin with, as
/// pre-flight reads it before `before` runs.
fn plan(dir: &TempDir, hosts: usize, rollout_extra: &str, restart: &str) -> String {
    std::fs::create_dir_all(dir.path().join("pool")).unwrap();
    for i in 1..=hosts {
        std::fs::write(dir.path().join("pool").join(format!("h{i}")), "").unwrap();
    }
    let root = dir.path().display();
    let mut servers = String::new();
    for i in 1..=hosts {
        servers.push_str(&format!("  - {{ host: 127.0.0.1, name: h{i}, transport: local, roles: [app] }}\n"));
    }
    let pool: Vec<String> = (1..=hosts).map(|i| format!("{root}/pool/h{i}")).collect();
    format!(
        "version: 1
application: shop
vars:
  fail: none
servers:
{servers}balancers:
  pool:
    kind: command
    reject: echo \"reject {{{{node}}}}\" >> {root}/record && rm -f {root}/pool/{{{{node}}}}
    accept: echo \"accept {{{{node}}}}\" >> {root}/record && touch {root}/pool/{{{{node}}}}
    status: test -e {root}/pool/{{{{node}}}}
lock: {{ path: {root}/lock }}
before:
  - name: prepare
    local: mkdir -p {root}/pool && touch {pool} {root}/prepared
rollout:
  select: {{ roles: [app] }}
{rollout_extra}
  steps:
    - name: reject
      balancer: {{ use: pool, action: reject, node: \"{{{{host.name}}}}\" }}
    - name: restart
      run: {restart}
      timeout: 20s
    - name: accept
      balancer: {{ use: pool, action: accept, node: \"{{{{host.name}}}}\" }}
",
        pool = pool.join(" ")
    )
}

const RESTART: &str = "echo \"restart {{host.name}}\" >> RECORD && echo \"restarting {{host.name}}\" && test \"{{host.name}}\" != \"{{vars.fail}}\"";

fn restart(dir: &TempDir) -> String {
    RESTART.replace("RECORD", &format!("{}/record", dir.path().display()))
}

fn record(dir: &TempDir) -> Vec<String> {
    std::fs::read_to_string(dir.path().join("record")).unwrap_or_default().lines().map(String::from).collect()
}

fn apply(dir: &TempDir, extra: &[&str]) -> Output {
    let mut args = vec!["apply", "plan.yaml", "--yes"];
    args.extend_from_slice(extra);
    planrun_in(dir.path(), &args)
}

fn in_pool(dir: &TempDir, host: &str) -> bool {
    dir.path().join("pool").join(host).exists()
}

/// The most nodes out of rotation at once, from the balancer's own record.
fn max_out(record: &[String]) -> usize {
    let (mut out, mut max) = (0i32, 0i32);
    for line in record {
        if line.starts_with("reject ") {
            out += 1;
        } else if line.starts_with("accept ") {
            out -= 1;
        }
        max = max.max(out);
    }
    max as usize
}

#[test]
fn batch_size_one_rolls_hosts_one_after_another() {
    let dir = TempDir::new("apply-order");
    dir.write("plan.yaml", plan(&dir, 3, "  batch_size: 1", &restart(&dir)));
    let out = apply(&dir, &["-v"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        record(&dir),
        [
            "reject h1",
            "restart h1",
            "accept h1",
            "reject h2",
            "restart h2",
            "accept h2",
            "reject h3",
            "restart h3",
            "accept h3"
        ]
    );
    assert!(
        out.stdout.contains("h2 | restarting h2"),
        "with -v, command output is streamed with the host:\n{}",
        out.stdout
    );
    assert!(out.stdout.contains("rollout succeeded"), "{}", out.stdout);
    for h in ["h1", "h2", "h3"] {
        assert!(in_pool(&dir, h));
    }
}

#[test]
fn batch_size_two_never_takes_more_than_two_out() {
    let dir = TempDir::new("apply-batch2");
    dir.write("plan.yaml", plan(&dir, 5, "  batch_size: 2", &restart(&dir)));
    let out = apply(&dir, &[]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let rec = record(&dir);
    assert_eq!(rec.len(), 15, "{rec:?}");
    assert!(max_out(&rec) <= 2, "{rec:?}");
    // Batch 2 (h3, h4) starts only after batch 1 (h1, h2) finished, and h5 after both.
    let last = |needle: &str| rec.iter().rposition(|l| l.ends_with(needle)).unwrap();
    let first = |needle: &str| rec.iter().position(|l| l.ends_with(needle)).unwrap();
    assert!(last(" h1").max(last(" h2")) < first(" h3").min(first(" h4")), "{rec:?}");
    assert!(last(" h3").max(last(" h4")) < first(" h5"), "{rec:?}");
}

#[test]
fn batch_size_override_and_ramp_from_the_command_line() {
    let dir = TempDir::new("apply-ramp");
    dir.write("plan.yaml", plan(&dir, 5, "  batch_size: 1", &restart(&dir)));
    let out = apply(&dir, &["--batch-size", "1,50%"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    // A canary, then half of the 5 hosts (rounded up) per batch.
    assert!(out.stdout.contains("batch 1/3: h1\n"), "{}", out.stdout);
    assert!(out.stdout.contains("batch 2/3: h2, h3, h4\n"), "{}", out.stdout);
    assert!(out.stdout.contains("batch 3/3: h5\n"), "{}", out.stdout);
    // Hosts of a batch run side by side, but may not overlap in time: the promise is the
    // upper bound.
    assert!(max_out(&record(&dir)) <= 3, "{:?}", record(&dir));
}

#[test]
fn a_failing_restart_on_host_two_halts_with_host_three_untouched() {
    let dir = TempDir::new("apply-fail");
    dir.write("plan.yaml", plan(&dir, 3, "", &restart(&dir)));
    let out = apply(&dir, &["--var", "fail=h2"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert_eq!(record(&dir), ["reject h1", "restart h1", "accept h1", "reject h2", "restart h2"]);
    // h2 is unhealthy: left out of rotation; h3 was never touched.
    assert!(in_pool(&dir, "h1"));
    assert!(!in_pool(&dir, "h2"));
    assert!(in_pool(&dir, "h3"));
    assert!(!out.stdout.contains("h3 reject"), "{}", out.stdout);
    assert!(out.stdout.contains("rollout HALTED: 1 host failed"), "{}", out.stdout);
    assert!(out.stdout.contains("h2 failed at `restart`: `echo"), "{}", out.stdout);
    assert!(out.stdout.contains("    | restarting h2"), "the summary shows the last lines:\n{}", out.stdout);
}

/// Issue 12, reproduction 2: with batch size 1, a failed host left out of rotation uses
/// up the whole budget, so the next batch must not take another host out.
#[test]
fn failed_hosts_count_against_the_batch_size() {
    let dir = TempDir::new("apply-budget");
    dir.write("plan.yaml", plan(&dir, 3, "  max_failed_hosts: 1", &restart(&dir)));
    let out = apply(&dir, &["--var", "fail=h2"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert_eq!(record(&dir), ["reject h1", "restart h1", "accept h1", "reject h2", "restart h2"]);
    assert!(!in_pool(&dir, "h2"));
    assert!(in_pool(&dir, "h3"));
    assert!(out.stdout.contains("rollout HALTED: 1 host failed"), "{}", out.stdout);
    assert!(
        out.stdout.contains(
            "batch 3 of 3 not started: it would have 2 nodes of `pool` out of rotation, more than its batch size 1, \
             because h2 is out of rotation or down"
        ),
        "{}",
        out.stdout
    );
}

#[test]
fn a_step_that_outlives_its_timeout_is_killed_and_fails_the_host() {
    let dir = TempDir::new("apply-timeout");
    let marker = dir.path().join("finished");
    let slow = format!("sleep 5 && touch {}", marker.display());
    let text = plan(&dir, 2, "", &slow).replace("timeout: 20s", "timeout: 1s");
    dir.write("plan.yaml", text);
    let started = Instant::now();
    let out = apply(&dir, &[]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(started.elapsed() < Duration::from_secs(4), "the step was not stopped at its timeout");
    assert!(out.stdout.contains("h1 failed at `restart`"), "{}", out.stdout);
    assert!(out.stdout.contains("timed out after 1s"), "{}", out.stdout);
    std::thread::sleep(Duration::from_secs(5));
    assert!(!marker.exists(), "the timed-out command kept running");
}

#[test]
fn retries_run_a_failing_step_again() {
    let dir = TempDir::new("apply-retry");
    let counter = dir.path().join("tries");
    // Fails on the first try of each host, succeeds on the second.
    let flaky = format!(
        "echo x >> {c}-{{{{host.name}}}} && test $(wc -l < {c}-{{{{host.name}}}}) -ge 2",
        c = counter.display()
    );
    let text = plan(&dir, 2, "", &flaky).replace("timeout: 20s", "timeout: 20s\n      retries: 1");
    dir.write("plan.yaml", text);
    let out = apply(&dir, &[]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("h1 restart: retrying (attempt 2)"), "{}", out.stdout);
}

/// Sends `signal` to an apply while h1's slow restart runs; returns its exit code, output
/// and the balancer record.
fn interrupt_mid_step(tag: &str, signal: &str) -> (Option<i32>, String, String, Vec<String>) {
    let dir = TempDir::new(tag);
    let slow = format!("sleep 1.5 && echo \"restart {{{{host.name}}}}\" >> {}/record", dir.path().display());
    dir.write("plan.yaml", plan(&dir, 3, "", &slow));
    let child = Command::new(env!("CARGO_BIN_EXE_planrun"))
        .args(["apply", "plan.yaml", "--yes"])
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until h1's restart is running, then interrupt.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !record(&dir).contains(&"reject h1".to_string()) {
        assert!(Instant::now() < deadline, "the rollout never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let status = Command::new("kill").args([&format!("-{signal}"), &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code(), stdout, stderr, record(&dir))
}

#[test]
fn ctrl_c_lets_the_running_step_finish_and_starts_nothing_new() {
    let (code, stdout, stderr, rec) = interrupt_mid_step("apply-sigint", "INT");
    assert_eq!(code, Some(130), "{stdout}{stderr}");
    // The running step finished, and the host's chain with it (it is put back); nothing
    // new started.
    assert_eq!(rec, ["reject h1", "restart h1", "accept h1"], "{stdout}");
    assert!(stderr.contains("interrupt: starting nothing new"), "{stderr}");
    assert!(stdout.contains("rollout INTERRUPTED"), "{stdout}");
}

/// Issue 12, reproduction 4: a CI runner cancelling its job sends SIGTERM; it used to
/// kill planrun at once with h1 out of rotation.
#[test]
fn sigterm_finishes_the_window_and_reports() {
    let (code, stdout, stderr, rec) = interrupt_mid_step("apply-sigterm", "TERM");
    assert_eq!(code, Some(143), "{stdout}{stderr}");
    assert_eq!(rec, ["reject h1", "restart h1", "accept h1"], "{stdout}");
    assert!(stderr.contains("interrupt: starting nothing new; running steps finish (SIGTERM again"), "{stderr}");
    assert!(stdout.contains("rollout INTERRUPTED"), "{stdout}");
}

#[test]
fn sighup_finishes_the_window_and_reports() {
    let (code, stdout, stderr, rec) = interrupt_mid_step("apply-sighup", "HUP");
    assert_eq!(code, Some(129), "{stdout}{stderr}");
    assert_eq!(rec, ["reject h1", "restart h1", "accept h1"], "{stdout}");
    assert!(stdout.contains("rollout INTERRUPTED"), "{stdout}");
}

#[test]
fn without_a_terminal_apply_requires_yes() {
    let dir = TempDir::new("apply-yes");
    dir.write("plan.yaml", plan(&dir, 2, "", &restart(&dir)));
    let out = planrun_in(dir.path(), &["apply", "plan.yaml"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("refusing to apply without a terminal to confirm on; pass `--yes`"), "{}", out.stderr);
    assert!(record(&dir).is_empty());
    assert!(!dir.path().join("prepared").exists(), "nothing may run, not even `before`");
}

#[test]
fn dry_run_walks_everything_and_changes_nothing() {
    let dir = TempDir::new("apply-dry");
    dir.write("plan.yaml", plan(&dir, 2, "", &restart(&dir)));
    let out = planrun_in(dir.path(), &["apply", "plan.yaml", "--dry-run"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(record(&dir).is_empty());
    assert!(!dir.path().join("prepared").exists());
    assert!(out.stdout.contains("h2 restart: would run: echo \"restart h2\""), "{}", out.stdout);
    assert!(out.stdout.contains("h1 reject: would balancer pool: reject h1"), "{}", out.stdout);
    assert!(out.stdout.contains("dry run complete: nothing was changed"), "{}", out.stdout);
}

#[test]
fn limit_and_var_narrow_and_override() {
    let dir = TempDir::new("apply-limit");
    dir.write("plan.yaml", plan(&dir, 3, "", &restart(&dir)));
    let out = apply(&dir, &["--limit", "h2,h3", "--var", "fail=h3"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert_eq!(record(&dir), ["reject h2", "restart h2", "accept h2", "reject h3", "restart h3"]);
}

#[test]
fn an_unset_secret_is_refused_before_anything_runs() {
    let dir = TempDir::new("apply-secret");
    let text = plan(&dir, 2, "", &restart(&dir)).replace("vars:", "secret_env: [PLANRUN_TEST_UNSET_SECRET]\nvars:");
    dir.write("plan.yaml", text);
    let out = apply(&dir, &[]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("the environment variable `PLANRUN_TEST_UNSET_SECRET` must be set"), "{}", out.stderr);
    assert!(!dir.path().join("prepared").exists());
}

#[test]
fn an_invalid_plan_is_refused_with_exit_2() {
    let dir = TempDir::new("apply-invalid");
    dir.write("plan.yaml", plan(&dir, 2, "", &restart(&dir)).replace("application:", "aplication:"));
    let out = apply(&dir, &[]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("error: plan.yaml:2:1: unknown field `aplication` in the plan"), "{}", out.stderr);
    assert!(out.stderr.contains("nothing was executed"), "{}", out.stderr);
}

#[test]
fn each_host_gets_a_log_file_for_the_run() {
    let dir = TempDir::new("apply-logs");
    dir.write("plan.yaml", plan(&dir, 2, "", &restart(&dir)));
    let out = apply(&dir, &[]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let runs: Vec<_> = std::fs::read_dir(dir.path().join(".planrun/runs")).unwrap().flatten().collect();
    assert_eq!(runs.len(), 1);
    let journal = std::fs::read_to_string(dir.path().join(".planrun/journal.jsonl")).unwrap();
    let preflight = journal.lines().find(|l| l.contains(r#""type":"preflight""#)).expect("the pre-flight is journaled");
    assert!(preflight.contains("pool: h1: in rotation"), "{preflight}");
    let log = std::fs::read_to_string(runs[0].path().join("h2.log")).unwrap();
    assert!(log.contains("h2 | restarting h2"), "{log}");
    assert!(!log.contains("h1"), "{log}");
}

#[test]
fn the_quick_start_example_runs_twice_from_a_fresh_checkout() {
    // The README's quick start as a new user runs it: the example file exactly as in the
    // repository, in a directory nothing has run in, with a `HOME` and `TMPDIR` of its own.
    let dir = TempDir::new("quick-start");
    let example = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/localhost.yaml")).unwrap();
    std::fs::create_dir_all(dir.path().join("examples")).unwrap();
    dir.write("examples/localhost.yaml", &example);
    for fresh in ["home", "tmp"] {
        std::fs::create_dir_all(dir.path().join(fresh)).unwrap();
    }
    let env = [("HOME", dir.path().join("home")), ("TMPDIR", dir.path().join("tmp"))];
    for run in ["first", "second"] {
        let out = planrun_env(dir.path(), &["apply", "examples/localhost.yaml", "--yes"], &env);
        assert_eq!(out.code, 0, "{run} run:\n{}{}", out.stdout, out.stderr);
        for node in ["web1", "web2", "web3"] {
            assert!(out.stderr.contains(&format!("pool: {node}: in rotation")), "{run} run:\n{}", out.stderr);
        }
        assert!(out.stdout.contains("example release '2' rolled on 3 hosts"), "{run} run:\n{}", out.stdout);
        assert!(out.stdout.contains("rollout succeeded"), "{run} run:\n{}", out.stdout);
    }
    // What the example wrote is in the directory it ran in, every node back in rotation,
    // and its lock released.
    let state = dir.path().join(".planrun/example");
    for node in ["web1", "web2", "web3"] {
        let running = std::fs::read_to_string(state.join(node).join("running")).unwrap();
        assert!(running.starts_with("release=2 "), "{node}: {running}");
        assert!(!state.join("pool").join(format!("{node}.out")).exists(), "{node} left out of rotation");
    }
    assert!(!dir.path().join(".planrun-example.lock").exists(), "the lock is released");
}

#[test]
fn output_is_streamed_only_with_verbose_and_quiet_shows_only_failures() {
    let dir = TempDir::new("apply-verbosity");
    dir.write("plan.yaml", plan(&dir, 2, "", &restart(&dir)));
    let out = apply(&dir, &[]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(!out.stdout.contains("| restarting"), "{}", out.stdout);
    assert!(out.stdout.contains("h1 restart: ok in"), "{}", out.stdout);
    // Plain lines carry a time of day.
    let first = out.stdout.lines().next().unwrap();
    assert!(first.as_bytes()[2] == b':' && first.as_bytes()[5] == b':' && first.as_bytes()[8] == b'.', "{first}");

    let out = apply(&dir, &["-q", "--var", "fail=h2"]);
    assert_eq!(out.code, 1);
    assert!(!out.stdout.contains("h1 restart: ok"), "{}", out.stdout);
    assert!(out.stdout.contains("h2 restart: FAILED"), "{}", out.stdout);
    assert!(out.stdout.contains("rollout HALTED"), "{}", out.stdout);
}

#[test]
fn a_closed_output_pipe_does_not_stop_the_rollout() {
    // `planrun apply … | head` must not leave hosts out of rotation when head exits.
    let dir = TempDir::new("apply-pipe");
    dir.write("plan.yaml", plan(&dir, 3, "", &restart(&dir)));
    let mut child = Command::new(env!("CARGO_BIN_EXE_planrun"))
        .args(["apply", "plan.yaml", "--yes"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(record(&dir).last().map(String::as_str), Some("accept h3"));
}

/// Issue 12, reproduction 7: a failed `after` step on the control machine used to end
/// in "rollout HALTED: 0 hosts failed" without saying what failed.
#[test]
fn a_failed_after_step_is_named_in_the_summary() {
    let dir = TempDir::new("apply-after");
    let text =
        plan(&dir, 2, "", &restart(&dir)) + "after:\n  - { name: notify, local: \"echo no route >&2; exit 7\" }\n";
    dir.write("plan.yaml", text);
    let out = apply(&dir, &[]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("rollout HALTED: 0 hosts failed"), "{}", out.stdout);
    assert!(
        out.stdout.contains("  `after` step `notify` failed: `echo no route >&2; exit 7` exited with 7\n"),
        "{}",
        out.stdout
    );
}
