//! Deploys that can go back (issue 18), on the real binary over the local transport:
//! `{{run.id}}`/`{{run.started}}`, `rollout.on_failure`, `planrun rollback` and the
//! `examples/release.yaml` flow, checked by the release each host serves after each run.
//! The same flow over real sshd behind HAProxy under load is in `tests/faults.rs`
//! (`on_failure_restores_a_failing_host_under_load`).

mod common;

use std::path::Path;

use common::{APPLY, Planrun, TempDir, local_servers, pool_in_rotation};

/// A directory with `examples/release.yaml` copied in unchanged, and its own `HOME` and
/// `TMPDIR`, as the quick start runs.
fn release_dir() -> TempDir {
    let dir = TempDir::new("release");
    let example = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/release.yaml")).unwrap();
    std::fs::create_dir_all(dir.path().join("examples")).unwrap();
    dir.write("examples/release.yaml", &example);
    for fresh in ["home", "tmp"] {
        std::fs::create_dir_all(dir.path().join(fresh)).unwrap();
    }
    dir
}

fn run(dir: &TempDir, args: &[&str]) -> common::Output {
    Planrun::in_dir(dir).args(args).env("HOME", dir.path().join("home")).env("TMPDIR", dir.path().join("tmp")).run()
}

/// The release each of web1…web3 serves (`releases/STAMP`), as its "app" wrote it.
fn serving(dir: &TempDir) -> Vec<String> {
    ["web1", "web2", "web3"]
        .iter()
        .map(|h| {
            std::fs::read_to_string(dir.path().join(".planrun/release").join(h).join("serving"))
                .unwrap_or_else(|_| "nothing".into())
                .trim()
                .to_string()
        })
        .collect()
}

/// The `{{run.started}}` of the last run in the journal, from its `run_started` record.
fn last_run(dir: &Path) -> (String, String) {
    let journal = std::fs::read_to_string(dir.join("examples/.planrun/journal.jsonl")).unwrap();
    let line = journal.lines().rfind(|l| l.contains(r#""type":"run_started""#)).unwrap();
    let record: serde_json::Value = serde_json::from_str(line).unwrap();
    let id = record["run_id"].as_str().unwrap().to_string();
    // `2026-12-02T03-15-00Z-4242` → `20261202T031500Z`, as the README documents.
    let started = format!("{}Z", id.split('Z').next().unwrap().replace('-', ""));
    (id, started)
}

/// `{{run.started}}` has one-second steps: two applies in the same second would build one
/// release. A person never deploys twice a second; a test waits for the next one.
fn next_second() {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1050 - u64::from(now.subsec_millis())));
}

fn out_of_rotation(dir: &TempDir) -> Vec<String> {
    let pool = dir.path().join(".planrun/release/pool");
    let mut out: Vec<String> = std::fs::read_dir(pool)
        .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

#[test]
fn the_release_example_applies_rolls_back_and_restores_with_on_failure() {
    let dir = release_dir();
    let apply = ["apply", "examples/release.yaml", "--yes"];
    let rollback = ["rollback", "examples/release.yaml", "--yes"];

    // Nothing to go back from yet.
    let none = run(&dir, &rollback);
    none.code(2).stderr_has("the journal has no run of `examples/release.yaml` to go back from");

    // First release: built on every host in `before`, switched to in each host's window.
    run(&dir, &apply).code(0).stdout_has("rollout succeeded");
    let (id1, first) = last_run(dir.path());
    let first_release = format!("releases/{first}");
    assert_eq!(serving(&dir), [first_release.as_str(); 3]);
    let recorded = std::fs::read_to_string(dir.path().join(".planrun/release/web2").join(&first_release).join("RUN"));
    assert_eq!(recorded.unwrap().trim(), id1, "`{{{{run.id}}}}` is the journal's run id");
    assert!(first.len() == 16 && first.as_bytes()[8] == b'T' && first.ends_with('Z'), "{first}");

    next_second();
    run(&dir, &apply).code(0);
    let (_, second) = last_run(dir.path());
    let second_release = format!("releases/{second}");
    assert_ne!(first, second);
    assert_eq!(serving(&dir), [second_release.as_str(); 3]);

    // Rollback: every host the last run changed goes back to the release that run replaced.
    let preview = Planrun::in_dir(&dir).args(&["plan", "examples/release.yaml", "--rollback"]).run();
    preview.code(0).stdout_has("rollback of run").stdout_has("web1, web2, web3").stdout_has(&second);
    let back = run(&dir, &rollback);
    back.code(0).stdout_has("rollback examples/release.yaml").stdout_has("rollback succeeded");
    assert_eq!(serving(&dir), [first_release.as_str(); 3]);
    assert!(out_of_rotation(&dir).is_empty(), "{:?}", out_of_rotation(&dir));
    // Twice would go back past the release the run replaced: refused.
    run(&dir, &rollback).code(2).stderr_has("was already rolled back");
    run(&dir, &["apply", "examples/release.yaml", "--yes", "--resume"]).code(2).stderr_has("was rolled back by run");

    // A release that fails to start on web2: on_failure switches web2 back and puts it in
    // rotation; the rollout halts there, web3 untouched.
    next_second();
    let failing = run(&dir, &["apply", "examples/release.yaml", "--yes", "--var", "fail_on=web2"]);
    failing
        .code(1)
        .stdout_has("web2: failed at `restart`; running its on_failure steps")
        .stdout_has("web2: restored by on_failure: back in rotation")
        .stdout_has("rollout HALTED: 1 host failed")
        .stdout_has("    restored by on_failure: back in rotation")
        .stdout_lacks("failed hosts were left where they failed");
    let (_, third) = last_run(dir.path());
    assert_eq!(serving(&dir), [format!("releases/{third}"), first_release.clone(), first_release.clone()]);
    assert!(out_of_rotation(&dir).is_empty(), "web2 is back in rotation: {:?}", out_of_rotation(&dir));

    // Going back from the failed run: web1 and web2 changed (web2 is already back: the
    // example's switch-back names the release the run replaced, so it stays there).
    run(&dir, &rollback).code(0).stdout_has("2 hosts").stdout_has("rollback succeeded");
    assert_eq!(serving(&dir), [first_release.as_str(); 3]);
}

/// A plan of three local hosts whose restart fails while `broken` exists in the
/// directory; every step appends to `record`, and the build writes the release's name.
fn flaky_plan(dir: &TempDir, on_failure: &str) -> String {
    pool_in_rotation(dir.path(), 3);
    let root = dir.path().display();
    format!(
        "version: 1
application: shop
servers:
{servers}balancers:
  pool:
    kind: command
    reject: echo \"reject {{{{node}}}}\" >> {root}/record && rm -f {root}/pool/{{{{node}}}}
    accept: echo \"accept {{{{node}}}}\" >> {root}/record && touch {root}/pool/{{{{node}}}}
    status: test -e {root}/pool/{{{{node}}}}
lock: {{ path: {root}/lock }}
rollout:
  select: {{ roles: [app] }}
  steps:
    - name: reject
      balancer: {{ use: pool, action: reject, node: \"{{{{host.name}}}}\" }}
    - name: deploy
      run: echo \"{{{{host.name}}}} {{{{run.started}}}} {{{{run.id}}}}\" >> {root}/releases && test ! -e {root}/broken-{{{{host.name}}}}
    - name: accept
      balancer: {{ use: pool, action: accept, node: \"{{{{host.name}}}}\" }}
{on_failure}",
        servers = local_servers(3)
    )
}

const PUT_BACK: &str = "  on_failure:
    - name: put-back
      balancer: { use: pool, action: accept, node: \"{{host.name}}\" }
";

#[test]
fn a_resume_keeps_the_release_of_the_run_it_continues_and_reruns_a_restored_host_whole() {
    let dir = TempDir::new("release-resume");
    dir.write("plan.yaml", flaky_plan(&dir, PUT_BACK));
    dir.write("broken-h2", "");
    Planrun::in_dir(&dir).args(APPLY).run().code(1).stdout_has("h2: restored by on_failure: back in rotation");
    std::fs::remove_file(dir.path().join("broken-h2")).unwrap();
    next_second();
    Planrun::in_dir(&dir).args(&["apply", "plan.yaml", "--yes", "--resume"]).run().code(0);

    let releases = dir.lines("releases");
    let first = releases[0].split(' ').nth(1).unwrap().to_string();
    let id = releases[0].split(' ').nth(2).unwrap().to_string();
    assert_eq!(releases.len(), 4, "h1, h2 failing, h2 again, h3: {releases:?}");
    for line in &releases {
        assert!(line.ends_with(&format!(" {first} {id}")), "a resume renders the first run's values: {releases:?}");
    }
    // on_failure put h2 back, so its resume starts over from taking it out again.
    let record = dir.lines("record");
    assert_eq!(
        record,
        ["reject h1", "accept h1", "reject h2", "accept h2", "reject h2", "accept h2", "reject h3", "accept h3"]
    );
}

#[test]
fn a_failing_on_failure_leaves_the_host_out_and_named() {
    let dir = TempDir::new("release-on-failure-fails");
    let on_failure = "  on_failure:
    - name: switch-back
      run: echo no previous release; exit 3
    - name: put-back
      balancer: { use: pool, action: accept, node: \"{{host.name}}\" }
";
    dir.write("plan.yaml", flaky_plan(&dir, on_failure));
    dir.write("broken-h1", "");
    let out = Planrun::in_dir(&dir).args(APPLY).run();
    out.code(1)
        .stdout_has("h1: not restored: on_failure step `switch-back` failed")
        .stdout_has("failed hosts were left where they failed")
        .stdout_has("pool: h1: OUT of rotation");
    assert!(!dir.path().join("pool/h1").exists(), "h1 stays out of rotation");
    assert_eq!(dir.lines("record"), ["reject h1"], "nothing after the failed on_failure step, no other host");
}

#[test]
fn on_failure_and_rollback_steps_are_checked_like_rollout_steps() {
    let plan = "version: 1
application: shop
servers:
  - { host: 127.0.0.1, name: h1, transport: local, roles: [app] }
  - { host: 127.0.0.1, name: h2, transport: local, roles: [app] }
balancers:
  pool: { kind: command, reject: 'true', accept: 'true' }
rollout:
  select: { roles: [app] }
  steps:
    - { name: restart, run: 'true' }
  on_failure:
    - name: out-again
      balancer: { use: pool, action: reject, node: \"{{host.name}}\" }
    - { name: typo, run: 'echo {{host.nmae}}' }
rollback:
  steps:
    - name: back
      balancer: { use: pol, action: accept, node: \"{{host.name}}\" }
    - { name: stamp, run: 'echo {{run.startd}}' }
";
    let out = Planrun::new().plan(plan).args(&["validate", "plan.yaml"]).run();
    out.code(2)
        .stderr_has("plan.yaml:14:38: step `out-again` takes the node out of `pool` and no later step puts it back")
        .stderr_has("plan.yaml:15:26: step `typo`: `{{host.nmae}}` does not resolve for host `h1`")
        .stderr_has("plan.yaml:19:24: step `back` uses the balancer `pol`, which is not defined")
        .stderr_has("plan.yaml:20:27: step `stamp`: `{{run.startd}}` does not resolve")
        .stderr_has("did you mean `started`?");
}

#[test]
fn plan_shows_run_values_as_placeholders_and_rollback_needs_steps() {
    let dir = TempDir::new("release-placeholders");
    dir.write("plan.yaml", flaky_plan(&dir, PUT_BACK));
    Planrun::in_dir(&dir)
        .args(&["plan", "plan.yaml"])
        .run()
        .code(0)
        .stdout_has("YYYYMMDDTHHMMSSZ YYYY-MM-DDTHH-MM-SSZ-PID")
        .stdout_has("h1     on failure: put-back");
    Planrun::in_dir(&dir)
        .args(&["rollback", "plan.yaml", "--yes"])
        .run()
        .code(2)
        .stderr_has("`plan.yaml` has no `rollback` steps; nothing was executed");
}

const ROLLBACK: &str = "rollback:
  steps:
    - name: reject
      balancer: { use: pool, action: reject, node: \"{{host.name}}\" }
    - name: undeploy
      run: echo \"{{host.name}} back from {{run.started}}\" >> RECORD
    - name: accept
      balancer: { use: pool, action: accept, node: \"{{host.name}}\" }
";

#[test]
fn a_limited_rollback_is_continued_by_the_next_one_and_a_dry_run_changes_nothing() {
    let dir = TempDir::new("release-rollback-limit");
    let rollback = ROLLBACK.replace("RECORD", &format!("{}/back", dir.path().display()));
    dir.write("plan.yaml", flaky_plan(&dir, "") + &rollback);
    Planrun::in_dir(&dir).args(APPLY).run().code(0);
    let started = dir.lines("releases")[0].split(' ').nth(1).unwrap().to_string();

    Planrun::in_dir(&dir)
        .args(&["rollback", "plan.yaml", "--yes", "--dry-run"])
        .run()
        .code(0)
        .stdout_has("dry run of the rollback of plan.yaml");
    assert!(dir.lines("back").is_empty(), "a dry run changes nothing");

    Planrun::in_dir(&dir).args(&["rollback", "plan.yaml", "--yes", "--limit", "h2"]).run().code(0);
    assert_eq!(dir.lines("back"), [format!("h2 back from {started}")]);
    let status = Planrun::in_dir(&dir).args(&["status", "plan.yaml"]).run();
    status.code(0).stdout_has("rolled back by run").stdout_has("nothing to resume");

    // The next rollback goes on with the hosts the first one left, in the plan's order.
    let out = Planrun::in_dir(&dir).args(&["rollback", "plan.yaml", "--yes"]).run();
    out.code(0).stdout_has("rollback plan.yaml: `shop` on 3 hosts in 2 batches, 6 steps");
    assert_eq!(
        dir.lines("back"),
        [format!("h2 back from {started}"), format!("h1 back from {started}"), format!("h3 back from {started}")]
    );
    let journal = std::fs::read_to_string(dir.path().join(".planrun/journal.jsonl")).unwrap();
    assert_eq!(journal.matches(r#""kind":"rollback""#).count(), 2, "{journal}");
    Planrun::in_dir(&dir).args(&["rollback", "plan.yaml", "--yes"]).run().code(2).stderr_has("already rolled back");
}

#[test]
fn the_release_example_keeps_the_5_newest_releases() {
    let dir = release_dir();
    let old: Vec<String> = (0..7).map(|i| format!("20200101T00000{i}Z")).collect();
    for host in ["web1", "web2", "web3"] {
        let root = dir.path().join(".planrun/release").join(host);
        for release in &old {
            std::fs::create_dir_all(root.join("releases").join(release)).unwrap();
        }
        std::os::unix::fs::symlink(format!("releases/{}", old[6]), root.join("current")).unwrap();
    }
    run(&dir, &["apply", "examples/release.yaml", "--yes"]).code(0).stdout_has("releases kept:");
    let (_, started) = last_run(dir.path());
    for host in ["web1", "web2", "web3"] {
        let releases = dir.path().join(".planrun/release").join(host).join("releases");
        let mut kept: Vec<String> =
            std::fs::read_dir(&releases).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        kept.sort();
        assert_eq!(kept, [old[3].as_str(), &old[4], &old[5], &old[6], &started], "{host}");
        let previous = std::fs::read_to_string(releases.join(&started).join("PREVIOUS")).unwrap();
        assert_eq!(previous.trim(), format!("releases/{}", old[6]), "{host}: the release it replaced");
    }
}
