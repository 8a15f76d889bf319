//! `planrun apply` over the local transport: the order of steps and balancer calls, the
//! failure rules, timeouts, retries, Ctrl-C, confirmation and dry runs, as an operator
//! sees them (exit code, output, and what the "servers" and the "balancer" recorded).

mod common;

use std::time::{Duration, Instant};

use common::{APPLY, Planrun, TempDir, local_servers, pool_in_rotation};

/// A plan of `hosts` local servers `h1`…`hN`. The `command` balancer and every step
/// append to `record` what they did, so the test reads back the real order; the pool
/// directory holds a file per node in rotation, every node in rotation to begin with, as
/// pre-flight reads it before `before` runs.
fn plan(dir: &TempDir, hosts: usize, rollout_extra: &str, restart: &str) -> String {
    pool_in_rotation(dir.path(), hosts);
    let root = dir.path().display();
    let servers = local_servers(hosts);
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

/// `planrun apply plan.yaml --yes` and `extra` in `dir`.
fn apply(dir: &TempDir, extra: &[&str]) -> Planrun {
    Planrun::in_dir(dir).args(APPLY).args(extra)
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
    let out = apply(&dir, &["-v"]).run();
    out.code(0);
    assert_eq!(
        dir.lines("record"),
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
    // With -v, command output is streamed with the host.
    out.stdout_has("h2 | restarting h2").stdout_has("rollout succeeded");
    for h in ["h1", "h2", "h3"] {
        assert!(in_pool(&dir, h));
    }
}

#[test]
fn batch_size_two_never_takes_more_than_two_out() {
    let dir = TempDir::new("apply-batch2");
    dir.write("plan.yaml", plan(&dir, 5, "  batch_size: 2", &restart(&dir)));
    apply(&dir, &[]).run().code(0);
    let rec = dir.lines("record");
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
    apply(&dir, &["--batch-size", "1,50%"])
        .run()
        .code(0)
        // A canary, then half of the 5 hosts (rounded up) per batch.
        .stdout_has("batch 1/3: h1\n")
        .stdout_has("batch 2/3: h2, h3, h4\n")
        .stdout_has("batch 3/3: h5\n");
    // Hosts of a batch run side by side, but may not overlap in time: the promise is the
    // upper bound.
    assert!(max_out(&dir.lines("record")) <= 3, "{:?}", dir.lines("record"));
}

#[test]
fn a_failing_restart_on_host_two_halts_with_host_three_untouched() {
    let dir = TempDir::new("apply-fail");
    dir.write("plan.yaml", plan(&dir, 3, "", &restart(&dir)));
    let out = apply(&dir, &["--var", "fail=h2"]).run();
    out.code(1);
    assert_eq!(dir.lines("record"), ["reject h1", "restart h1", "accept h1", "reject h2", "restart h2"]);
    // h2 is unhealthy: left out of rotation; h3 was never touched.
    assert!(in_pool(&dir, "h1"));
    assert!(!in_pool(&dir, "h2"));
    assert!(in_pool(&dir, "h3"));
    out.stdout_lacks("h3 reject")
        .stdout_has("rollout HALTED: 1 host failed")
        .stdout_has("h2 failed at `restart`: `echo")
        // The summary shows the last lines.
        .stdout_has("    | restarting h2");
}

/// Issue 12, reproduction 2: with batch size 1, a failed host left out of rotation uses
/// up the whole budget, so the next batch must not take another host out.
#[test]
fn failed_hosts_count_against_the_batch_size() {
    let dir = TempDir::new("apply-budget");
    dir.write("plan.yaml", plan(&dir, 3, "  max_failed_hosts: 1", &restart(&dir)));
    let out = apply(&dir, &["--var", "fail=h2"]).run();
    out.code(1);
    assert_eq!(dir.lines("record"), ["reject h1", "restart h1", "accept h1", "reject h2", "restart h2"]);
    assert!(!in_pool(&dir, "h2"));
    assert!(in_pool(&dir, "h3"));
    out.stdout_has("rollout HALTED: 1 host failed").stdout_has(
        "batch 3 of 3 not started: it would have 2 nodes of `pool` out of rotation, more than its batch size 1, \
         because h2 is out of rotation or down",
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
    let out = apply(&dir, &[]).run();
    out.code(1);
    assert!(started.elapsed() < Duration::from_secs(4), "the step was not stopped at its timeout");
    out.stdout_has("h1 failed at `restart`").stdout_has("timed out after 1s");
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
    apply(&dir, &[]).run().code(0).stdout_has("h1 restart: retrying (attempt 2)");
}

/// Sends `signal` to an apply while h1's slow restart runs; returns its exit code, output
/// and the balancer record.
fn interrupt_mid_step(tag: &str, signal: &str, extra: &[&str]) -> (Option<i32>, String, String, Vec<String>) {
    let dir = TempDir::new(tag);
    let slow = format!("sleep 1.5 && echo \"restart {{{{host.name}}}}\" >> {}/record", dir.path().display());
    dir.write("plan.yaml", plan(&dir, 3, "", &slow));
    let child = apply(&dir, extra).spawn();
    // Wait until h1's restart is running, then interrupt.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dir.lines("record").contains(&"reject h1".to_string()) {
        assert!(Instant::now() < deadline, "the rollout never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let status =
        std::process::Command::new("kill").args([&format!("-{signal}"), &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code(), stdout, stderr, dir.lines("record"))
}

#[test]
fn ctrl_c_lets_the_running_step_finish_and_starts_nothing_new() {
    let (code, stdout, stderr, rec) = interrupt_mid_step("apply-sigint", "INT", &[]);
    assert_eq!(code, Some(130), "{stdout}{stderr}");
    // The running step finished, and the host's chain with it (it is put back); nothing
    // new started.
    assert_eq!(rec, ["reject h1", "restart h1", "accept h1"], "{stdout}");
    assert!(stderr.contains("interrupt: starting nothing new"), "{stderr}");
    assert!(stdout.contains("rollout INTERRUPTED"), "{stdout}");
    // The plain log says when the stop came: while h1's restart ran.
    let at = |needle: &str| stdout.find(needle).unwrap_or_else(|| panic!("no {needle:?} in\n{stdout}"));
    assert!(
        at("h1 restart: run:") < at("stopping: a stop signal") && at("stopping:") < at("h1 restart: ok"),
        "{stdout}"
    );
}

/// `--output json` has the stop as an event, at the moment it came.
#[test]
fn ctrl_c_is_a_stopping_event_in_json() {
    let (code, stdout, stderr, _) = interrupt_mid_step("apply-sigint-json", "INT", &["--output", "json"]);
    assert_eq!(code, Some(130), "{stdout}{stderr}");
    let events: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let names: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    let stopping =
        names.iter().position(|&e| e == "stopping").unwrap_or_else(|| panic!("no stopping event: {names:?}"));
    let restart_done = events
        .iter()
        .position(|e| e["event"] == "step_finished" && e["step"] == "restart")
        .unwrap_or_else(|| panic!("no restart finished: {names:?}"));
    assert!(stopping < restart_done, "{names:?}");
    assert_eq!(names.last(), Some(&"run_finished"), "{names:?}");
}

/// Issue 12, reproduction 4: a CI runner cancelling its job sends SIGTERM; it used to
/// kill planrun at once with h1 out of rotation.
#[test]
fn sigterm_finishes_the_window_and_reports() {
    let (code, stdout, stderr, rec) = interrupt_mid_step("apply-sigterm", "TERM", &[]);
    assert_eq!(code, Some(143), "{stdout}{stderr}");
    assert_eq!(rec, ["reject h1", "restart h1", "accept h1"], "{stdout}");
    assert!(stderr.contains("interrupt: starting nothing new; running steps finish (send SIGTERM again"), "{stderr}");
    assert!(stdout.contains("rollout INTERRUPTED"), "{stdout}");
}

#[test]
fn sighup_finishes_the_window_and_reports() {
    let (code, stdout, stderr, rec) = interrupt_mid_step("apply-sighup", "HUP", &[]);
    assert_eq!(code, Some(129), "{stdout}{stderr}");
    assert_eq!(rec, ["reject h1", "restart h1", "accept h1"], "{stdout}");
    assert!(stdout.contains("rollout INTERRUPTED"), "{stdout}");
}

#[test]
fn without_a_terminal_apply_requires_yes() {
    let dir = TempDir::new("apply-yes");
    dir.write("plan.yaml", plan(&dir, 2, "", &restart(&dir)));
    Planrun::in_dir(&dir)
        .args(&["apply", "plan.yaml"])
        .run()
        .code(2)
        .stderr_has("refusing to apply without a terminal to confirm on; pass `--yes`");
    assert!(dir.lines("record").is_empty());
    assert!(!dir.path().join("prepared").exists(), "nothing may run, not even `before`");
}

#[test]
fn dry_run_walks_everything_and_changes_nothing() {
    let dir = TempDir::new("apply-dry");
    dir.write("plan.yaml", plan(&dir, 2, "", &restart(&dir)));
    let out = Planrun::in_dir(&dir).args(&["apply", "plan.yaml", "--dry-run"]).run();
    out.code(0);
    assert!(dir.lines("record").is_empty());
    assert!(!dir.path().join("prepared").exists());
    out.stdout_has("h2 restart: would run: echo \"restart h2\"")
        .stdout_has("h1 reject: would balancer pool: reject h1")
        .stdout_has("dry run complete: nothing was changed");
}

#[test]
fn limit_and_var_narrow_and_override() {
    let dir = TempDir::new("apply-limit");
    dir.write("plan.yaml", plan(&dir, 3, "", &restart(&dir)));
    apply(&dir, &["--limit", "h2,h3", "--var", "fail=h3"]).run().code(1);
    assert_eq!(dir.lines("record"), ["reject h2", "restart h2", "accept h2", "reject h3", "restart h3"]);
}

#[test]
fn an_unset_secret_is_refused_before_anything_runs() {
    let dir = TempDir::new("apply-secret");
    let text = plan(&dir, 2, "", &restart(&dir)).replace("vars:", "secret_env: [PLANRUN_TEST_UNSET_SECRET]\nvars:");
    dir.write("plan.yaml", text);
    apply(&dir, &[]).run().code(2).stderr_has("the environment variable `PLANRUN_TEST_UNSET_SECRET` must be set");
    assert!(!dir.path().join("prepared").exists());
}

#[test]
fn an_invalid_plan_is_refused_with_exit_2() {
    let dir = TempDir::new("apply-invalid");
    dir.write("plan.yaml", plan(&dir, 2, "", &restart(&dir)).replace("application:", "aplication:"));
    apply(&dir, &[])
        .run()
        .code(2)
        .stderr_has("error: plan.yaml:2:1: unknown field `aplication` in the plan")
        .stderr_has("nothing was executed");
}

#[test]
fn each_host_gets_a_log_file_for_the_run() {
    let dir = TempDir::new("apply-logs");
    dir.write("plan.yaml", plan(&dir, 2, "", &restart(&dir)));
    apply(&dir, &[]).run().code(0);
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
    for run in ["first", "second"] {
        let out = Planrun::in_dir(&dir)
            .args(&["apply", "examples/localhost.yaml", "--yes"])
            .env("HOME", dir.path().join("home"))
            .env("TMPDIR", dir.path().join("tmp"))
            .run();
        assert_eq!(out.code, 0, "{run} run:\n{}", out.dump());
        for node in ["web1", "web2", "web3"] {
            out.stderr_has(&format!("pool: {node}: in rotation"));
        }
        out.stdout_has("example release 2 rolled on 3 hosts").stdout_has("rollout succeeded");
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
    let out = apply(&dir, &[]).run();
    out.code(0).stdout_lacks("| restarting").stdout_has("h1 restart: ok in");
    // Plain lines carry a time of day.
    let first = out.stdout.lines().next().unwrap();
    assert!(first.as_bytes()[2] == b':' && first.as_bytes()[5] == b':' && first.as_bytes()[8] == b'.', "{first}");

    apply(&dir, &["-q", "--var", "fail=h2"])
        .run()
        .code(1)
        .stdout_lacks("h1 restart: ok")
        .stdout_has("h2 restart: FAILED")
        .stdout_has("rollout HALTED");
}

#[test]
fn a_closed_output_pipe_does_not_stop_the_rollout() {
    // `planrun apply … | head` must not leave hosts out of rotation when head exits.
    let dir = TempDir::new("apply-pipe");
    dir.write("plan.yaml", plan(&dir, 3, "", &restart(&dir)));
    let mut child = apply(&dir, &[]).spawn();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(dir.lines("record").last().map(String::as_str), Some("accept h3"));
}

/// Issue 12, reproduction 7: a failed `after` step on the control machine used to end
/// in "rollout HALTED: 0 hosts failed" without saying what failed.
#[test]
fn a_failed_after_step_is_named_in_the_summary() {
    let dir = TempDir::new("apply-after");
    let text =
        plan(&dir, 2, "", &restart(&dir)) + "after:\n  - { name: notify, local: \"echo no route >&2; exit 7\" }\n";
    dir.write("plan.yaml", text);
    apply(&dir, &[])
        .run()
        .code(1)
        .stdout_has("rollout HALTED: 0 hosts failed")
        .stdout_has("  `after` step `notify` failed: `echo no route >&2; exit 7` exited with 7\n");
}

/// `rollout.fan_out` bounds how many hosts a `before` step runs on at once: each copy of
/// the step records how many copies were running when it started.
#[test]
fn fan_out_bounds_a_before_step() {
    let yaml = format!(
        r#"version: 1
application: fan
servers:
{servers}before:
  - name: prepare
    run: "mkdir -p running && touch running/{{{{host.name}}}} && ls running | wc -l >> seen && sleep 0.3 && rm running/{{{{host.name}}}}"
rollout:
  select: {{ roles: [app] }}
  fan_out: 2
  steps:
    - {{ name: restart, run: "true" }}
"#,
        servers = common::local_servers(6)
    );
    let run = Planrun::new().plan(yaml).args(common::APPLY).run();
    run.code(0);
    let seen: Vec<usize> = common::lines(&run.path().join("seen")).iter().map(|l| l.trim().parse().unwrap()).collect();
    assert_eq!(seen.len(), 6, "the step ran once per host: {seen:?}");
    assert!(seen.iter().all(|&n| n <= 2), "never more than fan_out at once: {seen:?}");
    assert!(seen.contains(&2), "two at once when the width allows: {seen:?}");
}
