//! Saved plans on the real binary: `planrun plan PLAN --out FILE` and `planrun apply
//! FILE`, which runs exactly that plan or refuses (exit 2, naming what differs) when an
//! input, an inventory's servers or the balancers' view changed.

mod common;

use common::{Planrun, TempDir, local_servers, pool_in_rotation};

/// Three local servers behind a `command` balancer whose pool is a directory of one file
/// per node in rotation; each restart appends to `record`.
fn plan(dir: &TempDir, extra_servers: &str) -> String {
    pool_in_rotation(dir.path(), 3);
    let root = dir.path().display();
    format!(
        "version: 1
application: shop
vars:
  release: \"1\"
servers:
{servers}{extra_servers}balancers:
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
      run: echo \"restart {{{{host.name}}}} {{{{vars.release}}}}\" >> {root}/record
    - name: accept
      balancer: {{ use: pool, action: accept, node: \"{{{{host.name}}}}\" }}
",
        servers = local_servers(3)
    )
}

fn save(dir: &TempDir, extra: &[&str]) -> common::Output {
    Planrun::in_dir(dir).args(&["plan", "plan.yaml", "--out", "run.plan"]).args(extra).run()
}

fn apply_saved(dir: &TempDir) -> common::Output {
    Planrun::in_dir(dir).args(&["apply", "run.plan", "--yes"]).run()
}

#[test]
fn a_saved_plan_runs_with_the_inputs_it_was_saved_with() {
    let dir = TempDir::new("saved-runs");
    dir.write("plan.yaml", plan(&dir, ""));
    let out = save(&dir, &["--limit", "h1,h3", "--var", "release=7"]);
    out.code(0)
        .stdout_has("saved the plan of 2 hosts in 2 batches to run.plan; run it with `planrun apply run.plan`\n");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("run.plan")).unwrap()).unwrap();
    assert_eq!(doc["planrun_saved_plan"], 1);
    assert_eq!(doc["inputs"]["limit"], serde_json::json!(["h1", "h3"]));
    assert_eq!(doc["balancers"].as_array().map(Vec::len), Some(2), "{doc:#}");
    assert!(doc["inputs"]["files"][0]["hash"].as_str().unwrap().starts_with("sha256:"));

    let out = apply_saved(&dir);
    out.code(0);
    assert_eq!(dir.lines("record"), ["restart h1 7", "restart h3 7"], "{}", out.dump());

    // A saved plan takes no inputs of its own.
    let out = Planrun::in_dir(&dir).args(&["apply", "run.plan", "--yes", "--limit", "h2"]).run();
    out.code(2).stderr_has(
        "`run.plan` is a saved plan: it runs with the `--var`, `--limit` and `--batch-size` it was saved with",
    );
}

#[test]
fn a_saved_plan_whose_plan_changed_is_refused_naming_the_file() {
    let dir = TempDir::new("saved-changed");
    dir.write("plan.yaml", plan(&dir, ""));
    save(&dir, &[]).code(0);
    dir.write("plan.yaml", plan(&dir, "").replace("release: \"1\"", "release: \"2\""));
    let out = apply_saved(&dir);
    out.code(2).stderr_has("error: `run.plan` is no longer the plan it saved: `");
    out.stderr_has("plan.yaml` changed; `vars` changed: `release`; nothing was executed\n");
    assert!(!dir.path().join("record").exists(), "nothing ran");
}

#[test]
fn a_saved_plan_whose_inventory_lists_other_servers_is_refused() {
    let dir = TempDir::new("saved-inventory");
    dir.write("plan.yaml", plan(&dir, "servers_from:\n  - command: cat more.yaml\n"));
    dir.write("more.yaml", "- { host: 127.0.0.1, name: h9, transport: local, roles: [db] }\n");
    save(&dir, &[]).code(0);
    // A comment is not a server: still the same plan.
    dir.write("more.yaml", "# listed today\n- { host: 127.0.0.1, name: h9, transport: local, roles: [db] }\n");
    let out = apply_saved(&dir);
    out.code(0);
    dir.write("more.yaml", "- { host: 127.0.0.2, name: h9, transport: local, roles: [db] }\n");
    let out = apply_saved(&dir);
    out.code(2).stderr_has("`output of `cat more.yaml`` changed; nothing was executed\n");
}

#[test]
fn a_saved_plan_is_refused_when_a_node_in_rotation_then_is_out_now() {
    let dir = TempDir::new("saved-balancer");
    dir.write("plan.yaml", plan(&dir, ""));
    save(&dir, &[]).code(0);
    std::fs::remove_file(dir.path().join("pool/h2")).unwrap();
    let out = apply_saved(&dir);
    out.code(2).stderr_has(
        "balancer `pool`: node `h2` was in rotation when the plan was saved and is out now; nothing was executed\n",
    );
    assert!(!dir.path().join("record").exists(), "nothing ran");
}
