//! The checked-in schema is what editors load: it must be exactly what the types generate.

mod common;

#[test]
fn the_checked_in_schema_matches_the_types() {
    let checked_in = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/plan.schema.json"))
        .expect("schemas/plan.schema.json exists");
    let generated = planrun::validate::schema::plan_schema_text();
    assert!(
        checked_in == generated,
        "schemas/plan.schema.json is out of date: run `cargo run -- schema --output schemas/plan.schema.json`"
    );
}

#[test]
fn planrun_schema_prints_the_same_schema() {
    let out = common::planrun(&["schema"]);
    assert_eq!(out.code, 0);
    assert_eq!(out.stdout, planrun::validate::schema::plan_schema_text());
}

/// Editors show the title, the description and an example of what an operator is typing,
/// taken from the innermost schema the value matched: every property a plan author writes
/// has all three, and each branch of it (a count or a percentage, a duration or nothing) the
/// property's own title and description, so hover never falls back to "planrun plan".
#[test]
fn every_property_has_a_title_a_description_and_an_example_on_every_branch() {
    let schema = planrun::validate::schema::plan_schema();
    let mut missing = Vec::new();
    walk(&schema, &schema, "", &mut missing);
    assert!(missing.is_empty(), "properties without a title, a description or an example:\n{}", missing.join("\n"));
}

fn walk(root: &serde_json::Value, node: &serde_json::Value, at: &str, missing: &mut Vec<String>) {
    let Some(obj) = node.as_object() else { return };
    if let Some(props) = obj.get("properties").and_then(|p| p.as_object()) {
        for (name, prop) in props {
            // `false`: a field forbidden beside another (a step's second kind), not one to write.
            if prop.as_bool() == Some(false) {
                continue;
            }
            let resolved = resolve(root, prop);
            let has = |key: &str| prop.get(key).is_some() || resolved.get(key).is_some();
            let at = format!("{at}/{name}");
            if !(has("title") && has("description") && (has("examples") || is_object(resolved))) {
                missing.push(at.clone());
                continue;
            }
            let title = &prop["title"];
            let description = prop["description"].as_str().unwrap_or_default();
            for (i, leaf) in leaves(prop).into_iter().enumerate() {
                let words = leaf.get("description").and_then(|d| d.as_str()).unwrap_or_default();
                if leaf.get("title") != Some(title) || !words.starts_with(description) {
                    missing.push(format!("{at} (branch {i}: {leaf})"));
                }
            }
        }
    }
    for (key, child) in obj {
        match child {
            // The condition on `extends` names the field only to test it, and `else` only
            // requires fields that the top-level properties document.
            serde_json::Value::Object(_) if key == "if" || key == "else" => {}
            serde_json::Value::Object(_) => walk(root, child, &format!("{at}/{key}"), missing),
            serde_json::Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    walk(root, item, &format!("{at}/{key}/{i}"), missing);
                }
            }
            _ => {}
        }
    }
}

/// The branches a value of `prop` can match, innermost, without `null`; none when `prop`
/// has no branches.
fn leaves(prop: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut out = Vec::new();
    for key in ["anyOf", "oneOf"] {
        for branch in prop.get(key).and_then(|b| b.as_array()).into_iter().flatten() {
            if branch.get("type").and_then(|t| t.as_str()) == Some("null") {
                continue;
            }
            let inner = leaves(branch);
            if inner.is_empty() {
                out.push(branch);
            } else {
                out.extend(inner);
            }
        }
    }
    out
}

/// Object-valued properties are documented by their own fields' examples.
fn is_object(node: &serde_json::Value) -> bool {
    node.get("properties").is_some() || node.get("oneOf").is_some()
}

fn resolve<'a>(root: &'a serde_json::Value, node: &'a serde_json::Value) -> &'a serde_json::Value {
    let target = node
        .get("$ref")
        .or_else(|| {
            ["anyOf", "oneOf", "allOf"]
                .iter()
                .find_map(|k| node.get(*k).and_then(|a| a.get(0)).and_then(|b| b.get("$ref")))
        })
        .and_then(|r| r.as_str())
        .and_then(|r| r.strip_prefix('#'))
        .and_then(|p| root.pointer(p));
    target.unwrap_or(node)
}

/// A plan that `extends` a base requires nothing its base may supply (the editor shows no
/// red on an environment plan); a plan without `extends` is checked in full; a misspelt
/// field is flagged in both.
#[test]
fn a_plan_that_extends_a_base_requires_nothing_the_base_supplies() {
    use serde_json::json;
    let schema = planrun::validate::schema::plan_schema();
    let validator = jsonschema::validator_for(&schema).expect("the published schema compiles");
    let environment = json!({
        "extends": "base.yaml",
        "servers": [{ "host": "10.0.0.2", "roles": ["web"] }],
        "balancers": { "lb": { "label": "staging" } },
        "rollout": { "batch_size": 1 }
    });
    let errors: Vec<String> = validator.iter_errors(&environment).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "an environment plan is flagged: {errors:?}");

    let mut misspelt = environment.clone();
    misspelt["rollot"] = json!({});
    assert!(!validator.is_valid(&misspelt), "a misspelt field in an environment plan is not flagged");

    let mut alone = environment.clone();
    alone.as_object_mut().unwrap().remove("extends");
    assert!(!validator.is_valid(&alone), "a plan without `extends` is not checked in full");
    let mut null_extends = environment.clone();
    null_extends["extends"] = serde_json::Value::Null;
    assert!(!validator.is_valid(&null_extends), "`extends: null` is not a base");

    // A server in an environment plan's list is still checked in full: lists replace the base's.
    let mut serverless = environment;
    serverless["servers"] = json!([{ "roles": ["web"] }]);
    assert!(!validator.is_valid(&serverless), "a server without `host` is not flagged");
}

/// The plan an editor inserts into an empty file (the schema's top-level
/// `defaultSnippets`), its placeholders filled in with their defaults, is a plan that
/// `planrun validate` accepts; each placeholder is numbered once, so tabbing visits each.
#[test]
fn the_top_level_snippet_inserts_a_plan_that_validates() {
    let schema = planrun::validate::schema::plan_schema();
    let snippets = schema["defaultSnippets"].as_array().expect("the schema has top-level defaultSnippets");
    assert!(!snippets.is_empty());
    let dir = common::TempDir::new("snippet");
    for (i, snippet) in snippets.iter().enumerate() {
        let body = serde_json::to_string_pretty(&snippet["body"]).unwrap();
        let numbers: Vec<&str> = body
            .match_indices("${")
            .map(|(at, _)| {
                let rest = &body[at + 2..];
                &rest[..rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len())]
            })
            .collect();
        let mut unique = numbers.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(numbers.len(), unique.len(), "a placeholder is used twice: {body}");
        // JSON is YAML: the body, placeholders expanded, as the plan file.
        let name = format!("snippet{i}.yaml");
        dir.write(&name, common::expand_placeholders(&body));
        common::planrun_in(dir.path(), &["validate", &name]).code(0);
    }
}

/// "Exactly one of `run`, `local`, `balancer` or `wait`" is a schema rule, for editors;
/// planrun's own check says it better (it names the step), so the CLI reports each such
/// mistake once, in the check's words, and still runs every other check.
#[test]
fn a_step_or_wait_without_exactly_one_kind_is_reported_once_by_the_cli() {
    let dir = common::TempDir::new("kinds");
    dir.write(
        "plan.yaml",
        "\
version: 1
application: shop
servers:
  - { host: 10.0.0.2, roles: [app] }
rollout:
  select: { roles: [ap] }
  steps:
    - name: nothing
      timeout: 1m
    - name: two
      run: echo one
      local: echo two
    - name: check
      wait: {}
",
    );
    let out = common::planrun_in(dir.path(), &["validate", "plan.yaml"]);
    out.code(2);
    let errors: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(
        errors,
        [
            "error: plan.yaml:6:21: no server has the role `ap`",
            "error: plan.yaml:8:7: step `nothing` does nothing",
            "error: plan.yaml:10:7: step `two` sets `run` or `local`; a step does one thing",
            "error: plan.yaml:14:13: the wait of step `check` checks nothing",
        ],
        "{}",
        out.stderr
    );
}

/// A duration without a unit and a batch size that is neither a count nor a percentage:
/// the CLI says where, and what a good value looks like.
#[test]
fn the_cli_explains_durations_and_batch_sizes() {
    let dir = common::TempDir::new("patterns");
    dir.write(
        "plan.yaml",
        "\
version: 1
application: shop
servers:
  - { host: 10.0.0.2, roles: [app] }
rollout:
  select: { roles: [app] }
  batch_size: lots
  steps:
    - { name: restart, run: restart, timeout: 90 }
    - { name: later, run: restart, timeout: 90 seconds please }
",
    );
    let out = common::planrun_in(dir.path(), &["validate", "plan.yaml"]);
    out.code(2)
        .stderr_has("error: plan.yaml:7:15: `lots` is not a valid value for `rollout.batch_size`")
        .stderr_has("help: a count of hosts such as `2`, or a percentage of the selected hosts such as `25%`")
        .stderr_has("error: plan.yaml:9:47: `90` is not a valid value for `rollout.steps[0].timeout`")
        .stderr_has("help: a duration with a unit: `500ms`, `90s`, `2m`, `1h 30m`")
        .stderr_has("error: plan.yaml:10:45: `90 seconds please` is not a valid value for `rollout.steps[1].timeout`")
        .stderr_has("help: a duration with a unit, like `90s` or `2m`");
}

/// Without `extends` a plan is checked in full, down to what the maps it could merge
/// require: a balancer's `kind` and its kind's fields, a request's `url`, the rollout's
/// `select.roles`.
#[test]
fn a_plan_without_extends_is_checked_in_full() {
    use serde_json::json;
    let schema = planrun::validate::schema::plan_schema();
    let validator = jsonschema::validator_for(&schema).expect("the published schema compiles");
    let base = json!({
        "version": 1,
        "application": "shop",
        "balancers": { "lb": { "kind": "linode", "token_env": "T", "label": "x", "port": 80 } },
        "rollout": { "select": { "roles": ["app"] }, "steps": [{ "name": "restart", "run": "restart" }] }
    });
    let errors: Vec<String> = validator.iter_errors(&base).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "a base plan is flagged: {errors:?}");
    for (pointer, broken) in [
        ("/balancers/lb", json!({ "label": "x" })),
        ("/balancers/lb", json!({ "kind": "linode", "label": "x", "port": 80 })),
        ("/balancers/lb", json!({ "kind": "http", "reject": {}, "accept": { "url": "u" } })),
        ("/rollout/select", json!({})),
        ("/rollout", json!({ "select": { "roles": ["app"] } })),
    ] {
        let mut plan = base.clone();
        *plan.pointer_mut(pointer).unwrap() = broken.clone();
        assert!(!validator.is_valid(&plan), "`{pointer}: {broken}` is not flagged without `extends`");
        plan["extends"] = json!("base.yaml");
        assert!(validator.is_valid(&plan), "`{pointer}: {broken}` is flagged with `extends`");
    }
}
