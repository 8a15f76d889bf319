//! `extends`: a plan laid over a base plan. These tests pin the merge rules (maps merge,
//! lists replace, the plan wins) and where problems are reported: inside a base file, at
//! its own line and column; at the `extends` when the base itself cannot be used.

mod common;

use common::{Output, TempDir, planrun_in};

fn error_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.starts_with("error: ")).collect()
}

fn refused(out: &Output) -> Vec<&str> {
    assert_eq!(out.code, 2, "stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    error_lines(&out.stderr)
}

const BASE: &str = "\
version: 1
application: shop
vars: { branch: main, region: eu }
ssh: { user: deploy, port: 22 }
servers:
  - { host: 10.0.0.1, roles: [app] }
  - { host: 10.0.0.2, roles: [app] }
rollout:
  select: { roles: [app] }
  steps:
    - name: restart
      run: restart {{application}} {{vars.branch}} {{vars.region}}
    - name: check
      run: check
";

#[test]
fn maps_merge_lists_replace_and_the_plan_wins() {
    let dir = TempDir::new("extends-merge");
    dir.write("base.yaml", BASE);
    dir.write(
        "prod.yaml",
        "extends: base.yaml\nvars: { branch: production }\nservers:\n  - { host: 10.0.9.9, name: prod1, roles: [app] }\n",
    );
    let out = planrun_in(dir.path(), &["plan", "prod.yaml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // `vars` merged: the plan's `branch`, the base's `region`; `servers` replaced whole.
    assert!(out.stdout.contains("restart shop production eu"), "{}", out.stdout);
    assert!(out.stdout.contains("prod1"), "{}", out.stdout);
    assert!(!out.stdout.contains("10.0.0.1"), "{}", out.stdout);

    // A list in the plan replaces the base's list: one step left, not three.
    dir.write("one-step.yaml", "extends: base.yaml\nrollout:\n  steps:\n    - { name: only, run: only }\n");
    let out = planrun_in(dir.path(), &["validate", "one-step.yaml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout.trim(),
        "one-step.yaml: valid: 2 servers (roles app), 2 hosts selected, 1 step per host, 0 balancers"
    );
}

#[test]
fn chains_of_bases_merge_in_order_relative_to_each_file() {
    let dir = TempDir::new("extends-chain");
    std::fs::create_dir_all(dir.0.join("plans/shared")).unwrap();
    dir.write("plans/shared/root.yaml", BASE);
    // Relative to its own folder, not to where planrun runs.
    dir.write("plans/base.yaml", "extends: shared/root.yaml\nvars: { region: us }\n");
    dir.write("plans/prod.yaml", "extends: base.yaml\nvars: { branch: production }\n");
    let out = planrun_in(dir.path(), &["plan", "plans/prod.yaml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("restart shop production us"), "{}", out.stdout);
}

#[test]
fn a_problem_in_a_base_points_into_the_base() {
    let dir = TempDir::new("extends-base-error");
    dir.write("base.yaml", BASE.replace("ssh: { user: deploy, port: 22 }", "ssh: { user: deploy, prot: 22 }"));
    dir.write(
        "prod.yaml",
        "# production\nextends: base.yaml\nvars: { branch: production }\nrollout:\n  select: { roles: [ap] }\n",
    );
    let out = planrun_in(dir.path(), &["validate", "prod.yaml"]);
    assert_eq!(
        refused(&out),
        // The plan's own problems first, then its base's: the files in `extends` order.
        ["error: prod.yaml:5:21: no server has the role `ap`", "error: base.yaml:4:22: unknown field `prot` in `ssh`"]
    );
    // The snippet is drawn from the base's text, not the plan's.
    assert!(out.stderr.contains("╭─[base.yaml:4:22]"), "{}", out.stderr);
    assert!(out.stderr.contains("4 │ ssh: { user: deploy, prot: 22 }"), "{}", out.stderr);
    assert!(out.stderr.contains("prod.yaml: 2 problems found; nothing was executed"), "{}", out.stderr);

    // The same through `--format json`: each problem names its own file.
    let out = planrun_in(dir.path(), &["validate", "--format", "json", "prod.yaml"]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(v["problems"][0]["file"], "prod.yaml");
    assert_eq!(v["problems"][1]["file"], "base.yaml");
    assert_eq!((v["problems"][1]["line"].as_u64(), v["problems"][1]["column"].as_u64()), (Some(4), Some(22)));
}

#[test]
fn a_yaml_error_in_a_base_points_into_the_base() {
    let dir = TempDir::new("extends-base-syntax");
    dir.write("base.yaml", "version: 1\napplication: \"shop\n");
    dir.write("prod.yaml", "extends: base.yaml\n");
    let out = planrun_in(dir.path(), &["validate", "prod.yaml"]);
    let errors = refused(&out);
    assert_eq!(errors.len(), 1, "{}", out.stderr);
    assert!(errors[0].starts_with("error: base.yaml:2:14: invalid YAML"), "{}", out.stderr);
}

#[test]
fn a_template_problem_in_a_base_points_at_the_expression_in_the_base() {
    let dir = TempDir::new("extends-template");
    dir.write("base.yaml", BASE.replace("{{vars.region}}", "{{vars.regoin}}"));
    dir.write("prod.yaml", "extends: base.yaml\n");
    let out = planrun_in(dir.path(), &["validate", "prod.yaml"]);
    let errors = refused(&out).join("\n");
    assert!(errors.starts_with("error: base.yaml:12:52: "), "{errors}");
    assert!(errors.contains("`{{vars.regoin}}` does not resolve"), "{errors}");
}

#[test]
fn a_missing_base_is_reported_at_the_extends() {
    let dir = TempDir::new("extends-missing");
    dir.write("prod.yaml", "# production\nextends: nope.yaml\n");
    let out = planrun_in(dir.path(), &["validate", "prod.yaml"]);
    assert_eq!(refused(&out), ["error: prod.yaml:2:10: the base plan `nope.yaml` does not exist"]);
    assert!(
        out.stderr.contains("help: `extends` is relative to the folder of the plan it is written in"),
        "{}",
        out.stderr
    );

    std::fs::create_dir(dir.0.join("dir")).unwrap();
    dir.write("d.yaml", "extends: dir\n");
    let out = planrun_in(dir.path(), &["validate", "d.yaml"]);
    assert_eq!(refused(&out), ["error: d.yaml:1:10: `dir` is a directory, not a base plan"]);

    dir.write("empty.yaml", "# nothing yet\n");
    dir.write("e.yaml", "extends: empty.yaml\n");
    let out = planrun_in(dir.path(), &["validate", "e.yaml"]);
    assert_eq!(refused(&out), ["error: e.yaml:1:10: the base plan `empty.yaml` is empty"]);

    dir.write("list.yaml", "- a\n");
    dir.write("l.yaml", "extends: list.yaml\n");
    let out = planrun_in(dir.path(), &["validate", "l.yaml"]);
    assert_eq!(refused(&out), ["error: list.yaml:1:1: the base plan `list.yaml` is not a map of fields"]);
}

#[test]
fn a_cycle_is_reported_at_the_extends_that_closes_it() {
    let dir = TempDir::new("extends-cycle");
    dir.write("a.yaml", "extends: b.yaml\n");
    dir.write("b.yaml", "version: 1\nextends: ./a.yaml\n");
    let out = planrun_in(dir.path(), &["validate", "a.yaml"]);
    assert_eq!(
        refused(&out),
        ["error: b.yaml:2:10: `extends` makes a cycle: `a.yaml` extends `b.yaml` extends `./a.yaml`"]
    );
    assert!(out.stderr.contains("help: remove this `extends`"), "{}", out.stderr);

    dir.write("self.yaml", "extends: self.yaml\n");
    let out = planrun_in(dir.path(), &["validate", "self.yaml"]);
    assert_eq!(refused(&out), ["error: self.yaml:1:10: `extends` makes a cycle: `self.yaml` extends `self.yaml`"]);
}

#[test]
fn a_chain_100_deep_stops_at_the_limit() {
    let dir = TempDir::new("extends-deep");
    for i in 0..100 {
        dir.write(&format!("p{i}.yaml"), format!("extends: p{}.yaml\n", i + 1));
    }
    dir.write("p100.yaml", BASE);
    let out = planrun_in(dir.path(), &["validate", "p0.yaml"]);
    assert_eq!(refused(&out), ["error: p16.yaml:1:10: the chain of `extends` is longer than 16 bases"]);
}

#[test]
fn extends_must_name_a_file() {
    let dir = TempDir::new("extends-type");
    dir.write("base.yaml", BASE);
    dir.write("p.yaml", "extends: [base.yaml]\n");
    let out = planrun_in(dir.path(), &["validate", "p.yaml"]);
    let errors = refused(&out);
    assert!(errors.contains(&"error: p.yaml:1:10: `extends` must be a string, not a list"), "{}", out.stderr);
}
