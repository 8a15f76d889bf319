//! The human output users read whole, pinned as insta snapshots: the rendered errors of a
//! plan with five mistakes, `planrun plan`, the summary of a failed run and
//! `planrun status` after it, `planrun runs`, `planrun exec`'s blocks and summary. Local transport and a
//! `command` balancer: no sshd needed.
//!
//! After an intended change of wording: `cargo insta review` (or `INSTA_UPDATE=always
//! cargo test --test snapshots`), then read the `.snap` diff before committing it.

mod common;

use common::{APPLY, Planrun, TempDir, local_servers, pool_in_rotation};

/// Replaces what changes from run to run: the temporary directory, times of day,
/// durations, run ids and timestamps.
fn settings(dir: &std::path::Path) -> insta::Settings {
    settings_with(dir, &[])
}

/// [`settings`], with `first` filters applied before its own.
fn settings_with(dir: &std::path::Path, first: &[(&str, &str)]) -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    for (pattern, replacement) in first {
        settings.add_filter(pattern, *replacement);
    }
    settings.set_prepend_module_to_snapshot(false);
    settings.add_filter(&escape(&dir.display().to_string()), "[DIR]");
    settings.add_filter(r"\b\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ-\d+\b", "[RUN_ID]");
    settings.add_filter(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?", "[TIMESTAMP]");
    settings.add_filter(r"\b\d\d:\d\d:\d\d\.\d+\b", "[TIME]");
    settings.add_filter(r"\b\d+(\.\d+)?(ms|µs|s)\b", "[DURATION]");
    settings
}

fn escape(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_alphanumeric() || c == '/' || c == '-' || c == '_' { c.to_string() } else { format!("\\{c}") })
        .collect()
}

/// Exit code and both streams, as one text.
fn shown(out: &common::Output) -> String {
    format!("exit code: {}\n--- stdout\n{}--- stderr\n{}", out.code, out.stdout, out.stderr)
}

#[test]
fn validate_renders_five_mistakes() {
    // The width the help text wraps at, whatever terminal the suite runs under.
    let out = Planrun::new().plan(common::FIVE_MISTAKES).args(&["validate", "plan.yaml"]).env("COLUMNS", "80").run();
    out.code(2);
    settings(out.path()).bind(|| insta::assert_snapshot!("validate_five_mistakes", shown(&out)));
}

/// Three local hosts behind a `command` balancer whose pool is a folder; the restart
/// fails on the host named by `vars.fail`.
fn small_plan(dir: &TempDir) -> String {
    pool_in_rotation(dir.path(), 3);
    let root = dir.path().display();
    format!(
        "version: 1
application: shop
vars:
  fail: none
servers:
{servers}balancers:
  pool:
    kind: command
    reject: rm -f {root}/pool/{{{{node}}}}
    accept: touch {root}/pool/{{{{node}}}}
    status: test -e {root}/pool/{{{{node}}}}
lock: {{ path: {root}/lock }}
rollout:
  select: {{ roles: [app] }}
  batch_size: 1
  steps:
    - name: reject
      balancer: {{ use: pool, action: reject, node: \"{{{{host.name}}}}\" }}
    - name: restart
      run: echo restarting {{{{host.name}}}} && test {{{{host.name}}}} != {{{{vars.fail}}}}
      timeout: 20s
    - name: accept
      balancer: {{ use: pool, action: accept, node: \"{{{{host.name}}}}\" }}
",
        servers = local_servers(3)
    )
}

#[test]
fn plan_text_of_a_small_plan() {
    let dir = TempDir::new("snap-plan");
    dir.write("plan.yaml", small_plan(&dir));
    let out = Planrun::in_dir(&dir).args(&["plan", "plan.yaml"]).run();
    out.code(0);
    settings(dir.path()).bind(|| insta::assert_snapshot!("plan_small", shown(&out)));
}

/// Its own test: the table's format may change on another branch, and this snapshot is
/// re-accepted when it does.
#[test]
fn summary_of_a_failed_local_run() {
    let dir = TempDir::new("snap-summary");
    dir.write("plan.yaml", small_plan(&dir));
    // Not a terminal: the table is laid out for `COLUMNS` when it is set.
    let out = Planrun::in_dir(&dir).args(APPLY).args(&["--var", "fail=h2"]).env("COLUMNS", "100").run();
    out.code(1);
    table_settings(dir.path()).bind(|| insta::assert_snapshot!("summary_failed_run", shown(&out)));
}

/// The table's columns are as wide as their cells: a duration is `0.0s` to `9.9s` here
/// (these steps take well under a second), pinned as `#.#s` so the layout stays as drawn.
fn table_settings(dir: &std::path::Path) -> insta::Settings {
    settings_with(dir, &[(r"\b\d\.\ds\b", "#.#s")])
}

/// Four hosts, steps with long names; the restart fails where a file `fail-HOST` exists
/// in the plan's folder (a relative path: the snapshot's layout must not depend on the
/// temporary folder's name), so a test can make a host fail, then resume without it.
fn long_plan(dir: &TempDir) -> String {
    pool_in_rotation(dir.path(), 4);
    let root = dir.path().display();
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
lock: {{ path: {root}/lock }}
rollout:
  select: {{ roles: [app] }}
  batch_size: 1
  steps:
    - name: take-out-of-rotation
      balancer: {{ use: pool, action: reject, node: \"{{{{host.name}}}}\" }}
    - name: restart-the-application-service
      run: test ! -e fail-{{{{host.name}}}}
      timeout: 20s
    - name: put-back-into-rotation
      balancer: {{ use: pool, action: accept, node: \"{{{{host.name}}}}\" }}
",
        servers = local_servers(4)
    )
}

/// A run halted at its second host, laid out for 60 columns: every host has its row in
/// plan order, the two never started say so, and no line is wider than 60 columns.
#[test]
fn summary_of_a_halted_run_at_60_columns() {
    let dir = TempDir::new("snap-60");
    dir.write("plan.yaml", long_plan(&dir));
    dir.write("fail-h2", "");
    let out = Planrun::in_dir(&dir).args(APPLY).env("COLUMNS", "60").run();
    out.code(1);
    // The timestamped lines before it are a log, kept whole; the summary is laid out.
    let summary = out.stdout.split("run finished").nth(1).expect("a summary");
    let wide: Vec<&str> = summary.lines().skip(1).filter(|l| l.chars().count() > 60).collect();
    assert!(wide.is_empty(), "lines wider than 60 columns: {wide:#?}\n{}", out.stdout);
    table_settings(dir.path()).bind(|| insta::assert_snapshot!("summary_halted_60_columns", shown(&out)));
}

/// A resume's table has the plan's step order, not the order steps happened to finish in
/// (h2 resumes at its restart, h3 starts at its reject).
#[test]
fn summary_of_a_resume_keeps_the_plan_s_step_order() {
    let dir = TempDir::new("snap-resume");
    dir.write("plan.yaml", long_plan(&dir));
    dir.write("fail-h2", "");
    Planrun::in_dir(&dir).args(APPLY).run().code(1);
    std::fs::remove_file(dir.path().join("fail-h2")).unwrap();
    let out = Planrun::in_dir(&dir).args(APPLY).args(&["--resume"]).env("COLUMNS", "100").run();
    out.code(0);
    let header = out.stdout.lines().find(|l| l.starts_with("│ host")).unwrap_or_default();
    let at = |step: &str| header.find(step).unwrap_or_else(|| panic!("no column {step}: {}", out.stdout));
    assert!(at("take-out") < at("restart-the") && at("restart-the") < at("put-back"), "{}", out.stdout);
    table_settings(dir.path()).bind(|| insta::assert_snapshot!("summary_resume", shown(&out)));
}

#[test]
fn status_after_a_halted_run() {
    let dir = TempDir::new("snap-status");
    dir.write("plan.yaml", small_plan(&dir));
    Planrun::in_dir(&dir).args(APPLY).args(&["--var", "fail=h2"]).run().code(1);
    let out = Planrun::in_dir(&dir).args(&["status", "plan.yaml"]).run();
    out.code(0);
    settings(dir.path()).bind(|| insta::assert_snapshot!("status_halted", shown(&out)));
}

/// `planrun exec`: a block per host, then the summary of exit codes. Batches of one keep
/// the blocks in plan order.
#[test]
fn exec_blocks_and_summary() {
    let plan = format!(
        "version: 1
application: shop
env:
  HOST: \"{{{{host.name}}}}\"
servers:
{}rollout:
  select: {{ roles: [app] }}
  steps:
    - {{ name: restart, run: echo restart }}
",
        local_servers(3)
    );
    let out = Planrun::new()
        .plan(plan)
        .args(&["exec", "plan.yaml", "--batch-size", "1", "--", "echo active $HOST; test $HOST != h3 || exit 3"])
        .run();
    out.code(1);
    settings(out.path()).bind(|| insta::assert_snapshot!("exec_blocks_and_summary", shown(&out)));
}

/// A plan whose servers come from a file and a command, with mistakes in both: each
/// problem at its position in the file or in the command's output, named as such.
#[test]
fn validate_renders_mistakes_in_inventories() {
    let out = Planrun::new()
        .plan(
            "version: 1
application: shop
servers:
  - { host: 10.0.0.1, name: app1, roles: [app] }
servers_from:
  - file: inventory.yaml
  - command: cat hosts.json
  - command: echo 'no token in LINODE_TOKEN' >&2; exit 3
rollout:
  select: { roles: [app] }
  steps:
    - { name: restart, run: systemctl restart shop }
",
        )
        .file("inventory.yaml", "- { host: 10.0.0.2, name: app2, roles: [app], port: 22 }\n")
        .file(
            "hosts.json",
            "[\n  {\"host\": \"10.0.0.3\", \"name\": \"app1\", \"roles\": [\"app\"]},\n  {\"host\": \"\", \"name\": \"app4\", \"roles\": [\"app\"]}\n]\n",
        )
        .args(&["validate", "plan.yaml"])
        .env("COLUMNS", "80")
        .run();
    out.code(2);
    settings(out.path()).bind(|| insta::assert_snapshot!("validate_inventory_mistakes", shown(&out)));
}

/// `rollout.on_failure` puts h2 back after its restart fails: the lines above the summary
/// and the summary say it was restored, the host still counts as failed (issue 18).
#[test]
fn summary_of_a_run_whose_failed_host_on_failure_restored() {
    let dir = TempDir::new("snap-on-failure");
    let plan = small_plan(&dir)
        + "  on_failure:
    - name: restart-previous
      run: echo previous release on {{host.name}}
    - name: accept
      balancer: { use: pool, action: accept, node: \"{{host.name}}\" }
";
    dir.write("plan.yaml", plan);
    let out = Planrun::in_dir(&dir).args(APPLY).args(&["--var", "fail=h2"]).env("COLUMNS", "100").run();
    out.code(1);
    table_settings(dir.path()).bind(|| insta::assert_snapshot!("summary_on_failure_restored", shown(&out)));
}

/// `planrun runs`: a halted run, then a fresh one that succeeded. Column widths follow
/// the user and machine names, so runs of `─` and of spaces are squeezed to one.
#[test]
fn runs_after_a_halted_and_a_good_run() {
    let dir = TempDir::new("snap-runs");
    dir.write("plan.yaml", small_plan(&dir));
    Planrun::in_dir(&dir).args(APPLY).args(&["--var", "fail=h2"]).run().code(1);
    // The halted run left h2 out of rotation.
    dir.write("pool/h2", "");
    Planrun::in_dir(&dir).args(APPLY).run().code(0);
    let out = Planrun::in_dir(&dir).args(&["runs", "plan.yaml"]).run();
    out.code(0);
    let by = out.stdout.lines().nth(3).and_then(|l| l.split('┆').nth(2)).map(str::trim).unwrap_or("?").to_string();
    settings_with(dir.path(), &[(&escape(&by), "[USER]@[MACHINE]")]).bind(|| {
        let mut settings = insta::Settings::clone_current();
        settings.add_filter("─+", "─");
        settings.add_filter("═+", "═");
        settings.add_filter(" +", " ");
        settings.bind(|| insta::assert_snapshot!("runs_halted_then_good", shown(&out)));
    });
}
