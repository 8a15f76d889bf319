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

/// Editors show the description and the example of what an operator is typing: every
/// property a plan author writes must have both.
#[test]
fn every_property_has_a_description_and_an_example() {
    let schema = planrun::validate::schema::plan_schema();
    let mut missing = Vec::new();
    walk(&schema, &schema, "", &mut missing);
    assert!(missing.is_empty(), "properties without a description or an example:\n{}", missing.join("\n"));
}

fn walk(root: &serde_json::Value, node: &serde_json::Value, at: &str, missing: &mut Vec<String>) {
    let Some(obj) = node.as_object() else { return };
    if let Some(props) = obj.get("properties").and_then(|p| p.as_object()) {
        for (name, prop) in props {
            let resolved = resolve(root, prop);
            let has = |key: &str| prop.get(key).is_some() || resolved.get(key).is_some();
            // `kind` of a balancer is a constant tag: its description is the variant's.
            if name != "kind" && !(has("description") && (has("examples") || is_object(resolved))) {
                missing.push(format!("{at}/{name}"));
            }
        }
    }
    for (key, child) in obj {
        match child {
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

/// Object-valued properties are documented by their own fields' examples.
fn is_object(node: &serde_json::Value) -> bool {
    node.get("properties").is_some() || node.get("oneOf").is_some()
}

fn resolve<'a>(root: &'a serde_json::Value, node: &'a serde_json::Value) -> &'a serde_json::Value {
    let target = node
        .get("$ref")
        .or_else(|| node.get("anyOf").and_then(|a| a.get(0)).and_then(|b| b.get("$ref")))
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
