//! The plan's JSON schema: generated from the types in `model`, checked in at
//! `schemas/plan.schema.json` for editors, and applied to every plan with `jsonschema`.
//!
//! jsonschema's errors name JSON pointers and keywords; this module turns them into
//! problems an operator can act on: the position of the offending key or value, the
//! field it probably meant, and an example of what is expected.

use std::sync::OnceLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{ValidationError, Validator};
use serde_json::Value;

use crate::diagnostic::Problem;
use crate::model::{CHECKED_BY_PLANRUN, Plan};
use crate::text::{backticked_list, did_you_mean, pointer_escape};
use crate::yaml::Tree;

/// The schema as editors and `planrun schema` see it: the plan's schema, except that
/// `servers` is not required at the top level. Editors check one file at a time, and a base
/// plan (the steps, shared by the plans that `extends` it) has no servers: flagging every
/// base as broken would teach people to ignore the editor. planrun itself checks the
/// merged plan against `strict_schema`, where `servers` is required.
///
/// A plan that `extends` a base is checked as a partial plan: whatever its base may supply
/// (the top-level fields, and the fields of the maps it merges field by field, such as
/// `rollout` and its `select`) is not required. Lists replace the base's, so what a list
/// holds (a server, a step) is still checked in full. A plan without `extends` is checked in
/// full: the `else` branch of an `if` on `extends` requires what the partial plan leaves
/// out, and only that (`required_fields`), so no value is checked twice.
pub fn plan_schema() -> Value {
    let mut value = strict_schema();
    let required = match value.as_object_mut().and_then(|obj| obj.remove("required")) {
        Some(Value::Array(mut required)) => {
            required.retain(|name| name != "servers");
            required
        }
        _ => Vec::new(),
    };
    let mut full_properties = serde_json::Map::new();
    let defs = value.get("$defs").cloned().unwrap_or(Value::Null);
    let mut partial_defs = serde_json::Map::new();
    if let Some(Value::Object(props)) = value.get_mut("properties") {
        for (name, prop) in props.iter_mut() {
            let original = prop.clone();
            if partialize(&defs, prop, &mut partial_defs)
                && let Some(fields) = required_fields(&defs, &original, 0)
            {
                full_properties.insert(name.clone(), fields);
            }
        }
    }
    if let Some(Value::Object(defs)) = value.get_mut("$defs") {
        defs.extend(partial_defs);
    }
    if let Some(obj) = value.as_object_mut() {
        // `extends: null` is no base: the condition is a string there. Only the condition:
        // the field's title and examples would show twice on hover.
        obj.insert(
            "if".into(),
            serde_json::json!({ "required": ["extends"], "properties": { "extends": { "type": "string" } } }),
        );
        let mut full = serde_json::Map::new();
        full.insert("required".into(), Value::Array(required));
        if !full_properties.is_empty() {
            full.insert("properties".into(), Value::Object(full_properties));
        }
        obj.insert("else".into(), Value::Object(full));
    }
    value
}

/// What `partialize` relaxed in `node`, and nothing else: the `required` fields of the
/// maps in it, through `$ref`s, `properties`, a map's values and the variants of a tagged
/// union (each behind an `if` on its tag). Everything else is checked by the partial schema
/// already; checked here again, an editor would show its hover examples and its errors
/// twice. `required` and `properties` constrain only maps, so a value of another type
/// passes. `None` when nothing is required. Lists are left alone, as in `partialize`.
///
/// Every property here is `doNotSuggest`: the top-level properties already offer it, and
/// offered here with its required fields, yaml-language-server would complete a skeleton
/// that is no plan.
fn required_fields(defs: &Value, node: &Value, depth: usize) -> Option<Value> {
    // The plan's maps nest four deep at most (`balancers.NAME.reject.url`).
    if depth > 8 {
        return None;
    }
    let node = match node.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/$defs/")) {
        Some(name) => defs.get(name)?,
        None => node,
    };
    let mut out = serde_json::Map::new();
    if let Some(Value::Array(required)) = node.get("required")
        && !required.is_empty()
    {
        out.insert("required".into(), Value::Array(required.clone()));
    }
    if let Some(Value::Object(props)) = node.get("properties") {
        let fields: serde_json::Map<String, Value> = props
            .iter()
            .filter_map(|(name, prop)| Some((name.clone(), required_fields(defs, prop, depth + 1)?)))
            .collect();
        if !fields.is_empty() {
            out.insert("properties".into(), Value::Object(fields));
        }
    }
    if node.get("properties").is_none()
        && let Some(values) = node.get("additionalProperties").filter(|v| v.is_object())
        && let Some(fields) = required_fields(defs, values, depth + 1)
    {
        out.insert("additionalProperties".into(), fields);
    }
    if let Some(Value::Array(branches)) = node.get("oneOf").or_else(|| node.get("anyOf")) {
        let deref_branch = |b: &'_ Value| -> Option<Value> {
            match b.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/$defs/")) {
                Some(name) => defs.get(name).cloned(),
                None => Some(b.clone()),
            }
        };
        let branches: Vec<Value> = branches.iter().filter_map(deref_branch).collect();
        let tags: Vec<Option<(String, Value)>> = branches.iter().map(tag).collect();
        if let Some(Some((name, _))) = tags.first()
            && tags.iter().all(|t| t.as_ref().is_some_and(|(n, _)| n == name))
        {
            // A tagged union: its tag, and each variant's fields when the tag says it is
            // that variant (an unknown tag is the partial schema's to report).
            let mut rules = Vec::new();
            for (branch, tag) in branches.iter().zip(&tags) {
                if let (Some(then), Some((_, value))) = (required_fields(defs, branch, depth + 1), tag) {
                    rules.push(serde_json::json!({
                        "if": { "required": [name], "properties": { name.as_str(): { "const": value } } },
                        "then": then,
                    }));
                }
            }
            let mut required = out.get("required").and_then(Value::as_array).cloned().unwrap_or_default();
            if !required.contains(&Value::String(name.clone())) {
                required.push(Value::String(name.clone()));
            }
            out.insert("required".into(), Value::Array(required));
            if !rules.is_empty() {
                out.insert("allOf".into(), Value::Array(rules));
            }
        } else {
            // A value or `null`, a flag or a map: when one branch alone has fields to
            // require, they apply to maps only, so they can stand for the union. Untagged
            // maps that require different fields are left to `planrun validate`.
            let fields: Vec<Value> = branches.iter().filter_map(|b| required_fields(defs, b, depth + 1)).collect();
            if let [Value::Object(only)] = fields.as_slice() {
                for (key, value) in only {
                    out.entry(key.clone()).or_insert_with(|| value.clone());
                }
            }
        }
    }
    if out.is_empty() {
        return None;
    }
    out.insert("doNotSuggest".into(), Value::Bool(true));
    Some(Value::Object(out))
}

/// The tag of a tagged union's variant: its property with a `const` value.
fn tag(branch: &Value) -> Option<(String, Value)> {
    let props = branch.get("properties")?.as_object()?;
    props.iter().find_map(|(name, prop)| Some((name.clone(), prop.get("const")?.clone())))
}

/// Drops `required` from `node` and the branches in it (not from `items`), and turns
/// `oneOf` into `anyOf`: without their required tags, a partial value may fit several
/// branches. True when anything changed.
fn relax(node: &mut Value) -> bool {
    let mut changed = false;
    if let Value::Object(obj) = node {
        changed |= obj.remove("required").is_some();
        if let Some(branches) = obj.remove("oneOf") {
            obj.insert("anyOf".into(), branches);
            changed = true;
        }
        for (key, child) in obj.iter_mut() {
            if key == "items" || key == "properties" {
                continue;
            }
            match child {
                Value::Array(items) => {
                    for item in items {
                        changed |= relax(item);
                    }
                }
                Value::Object(_) => changed |= relax(child),
                _ => {}
            }
        }
    }
    changed
}

/// Points the references in `node` that lead, through maps, to a definition with required
/// fields at a `Partial…` copy of it without them; true when anything changed. `items` are
/// left alone: a list in a plan replaces its base's whole.
fn partialize(defs: &Value, node: &mut Value, partial_defs: &mut serde_json::Map<String, Value>) -> bool {
    let mut changed = false;
    match node {
        Value::Object(obj) => {
            if let Some(Value::String(reference)) = obj.get("$ref").cloned()
                && let Some(name) = reference.strip_prefix("#/$defs/")
            {
                let partial_name = format!("Partial{name}");
                if partial_defs.contains_key(&partial_name) {
                    obj.insert("$ref".into(), Value::String(format!("#/$defs/{partial_name}")));
                    changed = true;
                } else if let Some(def) = defs.get(name) {
                    let mut copy = def.clone();
                    let mut inner = relax(&mut copy);
                    // Reserve the name first: a definition may refer to itself.
                    partial_defs.insert(partial_name.clone(), Value::Null);
                    inner |= partialize(defs, &mut copy, partial_defs);
                    if inner {
                        partial_defs.insert(partial_name.clone(), copy);
                        obj.insert("$ref".into(), Value::String(format!("#/$defs/{partial_name}")));
                        changed = true;
                    } else {
                        partial_defs.remove(&partial_name);
                    }
                }
            }
            for (key, child) in obj.iter_mut() {
                if key == "items" || key == "$ref" {
                    continue;
                }
                changed |= partialize(defs, child, partial_defs);
            }
        }
        Value::Array(items) => {
            for item in items {
                changed |= partialize(defs, item, partial_defs);
            }
        }
        _ => {}
    }
    changed
}

/// The schema every merged plan must pass, as the types generate it, with every
/// property's title and description on each of its branches (`document_branches`).
fn strict_schema() -> Value {
    let schema = schemars::schema_for!(Plan);
    let mut value = schema.to_value();
    if let Some(obj) = value.as_object_mut() {
        obj.insert("$id".into(), Value::String("https://planrun.dev/schemas/plan.schema.json".into()));
    }
    let defs = value.get("$defs").cloned().unwrap_or(Value::Null);
    document_branches(&mut value, &defs);
    as_markdown(&mut value);
    value
}

/// Doc comments are Markdown wrapped at 100 columns; editors treat each line break in a
/// `description` as a paragraph and show its backticks as they are. So every description
/// is unwrapped (paragraphs stay), and also given as `markdownDescription`, which
/// yaml-language-server and VS Code render as Markdown.
fn as_markdown(node: &mut Value) {
    match node {
        Value::Object(obj) => {
            if let Some(Value::String(text)) = obj.get("description") {
                let text: Vec<String> =
                    text.split("\n\n").map(|p| p.split('\n').collect::<Vec<_>>().join(" ")).collect();
                let text = Value::String(text.join("\n\n"));
                obj.insert("description".into(), text.clone());
                obj.insert("markdownDescription".into(), text);
            }
            for (key, child) in obj.iter_mut() {
                // An example or a snippet is a value, not a schema: its fields are data.
                if key != "examples" && key != "defaultSnippets" && key != "default" {
                    as_markdown(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(as_markdown),
        _ => {}
    }
}

/// Gives every branch of every property the property's title and description.
///
/// An editor's hover shows the innermost schema that matched the value: for `timeout: 2m`
/// that is the `Duration` branch of `anyOf: [Duration, null]`, for `batch_size: 2` the
/// count branch of `BatchSize`, each with its own generic description and no title (so the
/// editor falls back to the plan's title). So the property's title goes on each branch,
/// and its description too, before what the branch itself says. A referenced definition
/// that has branches of its own is copied into the property, so its branches can carry
/// that property's words; a referenced definition without branches gets them beside the
/// `$ref`, where draft 2020-12 allows them and they win over the definition's.
fn document_branches(node: &mut Value, defs: &Value) {
    match node {
        Value::Object(obj) => {
            if let Some(Value::Object(props)) = obj.get_mut("properties") {
                for prop in props.values_mut() {
                    let title = prop.get("title").cloned();
                    let description = prop.get("description").and_then(Value::as_str).map(String::from);
                    if let (Some(title), Some(description)) = (title, description) {
                        spread(prop, defs, &title, &description, 0);
                    }
                }
            }
            for child in obj.values_mut() {
                document_branches(child, defs);
            }
        }
        Value::Array(items) => {
            for item in items {
                document_branches(item, defs);
            }
        }
        _ => {}
    }
}

/// Puts `title` and `description` on each branch under `node` (a property's schema, or one
/// of its branches), copying in referenced definitions that have branches.
fn spread(node: &mut Value, defs: &Value, title: &Value, description: &str, depth: usize) {
    // Generated definitions nest branches two deep at most (`Option<Sudo>`).
    if depth > 4 {
        return;
    }
    let Some(obj) = node.as_object_mut() else { return };
    let target = obj
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"))
        .and_then(|name| defs.get(name))
        .and_then(Value::as_object);
    if let Some(target) = target
        && (target.contains_key("anyOf") || target.contains_key("oneOf"))
    {
        obj.remove("$ref");
        for (key, value) in target {
            // The definition's own words are generic: the property's stand.
            if key != "title" && key != "description" {
                obj.entry(key.clone()).or_insert_with(|| value.clone());
            }
        }
    }
    // The branches of a property are disjoint (a value or `null`, a string or a list), so
    // `oneOf` means the same as `anyOf`; yaml-language-server's hover joins the titles and
    // descriptions of an `anyOf`'s branches into "Step timeout || Step timeout".
    if let Some(branches) = obj.remove("anyOf") {
        obj.insert("oneOf".into(), branches);
    }
    if let Some(Value::Array(branches)) = obj.get_mut("oneOf") {
        for branch in branches {
            if branch.get("type").and_then(Value::as_str) != Some("null") {
                spread(branch, defs, title, description, depth + 1);
            }
        }
        return;
    }
    if depth == 0 {
        return;
    }
    // A leaf branch: the property's words, then the branch's own when it says more.
    let own = obj.get("description").and_then(Value::as_str).unwrap_or_default();
    let text = match own {
        "" => description.to_string(),
        own if own.starts_with(description) => own.to_string(),
        own => format!("{description}\n\n{own}"),
    };
    obj.insert("title".into(), title.clone());
    obj.insert("description".into(), Value::String(text));
    // Hover lists the examples of every schema that matched: the property's are enough,
    // and an empty list here keeps the definition's from being merged in beside them.
    if obj.contains_key("$ref") {
        obj.entry("examples").or_insert_with(|| Value::Array(Vec::new()));
    }
}

/// The schema as pretty JSON with a trailing newline: the exact bytes of the checked-in file.
pub fn plan_schema_text() -> String {
    let mut text = serde_json::to_string_pretty(&plan_schema()).unwrap_or_default();
    text.push('\n');
    text
}

struct Compiled {
    schema: Value,
    validator: Validator,
}

fn compiled() -> &'static Compiled {
    static COMPILED: OnceLock<Compiled> = OnceLock::new();
    COMPILED.get_or_init(|| {
        let schema = strict_schema();
        // The schema is generated from our own types; failing to compile it is a bug in
        // planrun, not a problem with anyone's plan.
        let validator = jsonschema::validator_for(&schema).expect("the generated plan schema compiles");
        Compiled { schema, validator }
    })
}

/// Every place where `doc` breaks the schema, as problems pointing into `root`.
pub fn check(doc: &Value, root: &Tree) -> Vec<Problem> {
    let compiled = compiled();
    let mut problems = Vec::new();
    for error in compiled.validator.iter_errors(doc) {
        if !left_to_checks(&compiled.schema, &error) {
            translate(&compiled.schema, &error, root, &mut problems);
        }
    }
    dedup(&mut problems);
    problems
}

/// JSON pointers of the instances the schema refused, for pruning them before a lenient
/// deserialization.
pub fn refused_paths(doc: &Value) -> Vec<String> {
    refused(doc).into_iter().map(|(path, _)| path).collect()
}

/// The paths the schema refuses, each with whether it is a string the plan's types
/// still accept as it is (a name that breaks its pattern): such a value can be kept for
/// the other checks, where leaving out a required field would leave no plan at all.
fn refused(doc: &Value) -> Vec<(String, bool)> {
    let compiled = compiled();
    compiled
        .validator
        .iter_errors(doc)
        .filter(|e| !left_to_checks(&compiled.schema, e))
        .flat_map(|e| {
            let path = e.instance_path().to_string();
            match e.kind() {
                ValidationErrorKind::AdditionalProperties { unexpected }
                | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
                    unexpected.iter().map(|u| (format!("{path}/{}", pointer_escape(u)), false)).collect()
                }
                ValidationErrorKind::Pattern { .. }
                | ValidationErrorKind::MinLength { .. }
                | ValidationErrorKind::MaxLength { .. }
                    if e.instance().is_string() =>
                {
                    vec![(path, true)]
                }
                _ => vec![(path, false)],
            }
        })
        .collect()
}

/// Whether `error` comes from a rule that `validate::checks` makes too, with the step's
/// name and a better message (a step with no kind or two, a wait with no check or two):
/// the schema has the rule for editors, and reporting it here would say it twice. Nor is
/// the value pruned for it, so the checks see what the plan says.
fn left_to_checks(schema: &Value, error: &ValidationError<'_>) -> bool {
    match error.kind() {
        // A value that fits a branch but for such a rule (`wait: {}` in `anyOf: [Wait, null]`).
        ValidationErrorKind::AnyOf { context } | ValidationErrorKind::OneOfNotValid { context } => {
            context.iter().any(|branch| !branch.is_empty() && branch.iter().all(|e| left_to_checks(schema, e)))
        }
        _ => under_checked_rule(schema, &error.schema_path().to_string()),
    }
}

/// Whether the schema path passes through a rule marked `CHECKED_BY_PLANRUN`.
fn under_checked_rule(schema: &Value, pointer: &str) -> bool {
    let mut node = schema;
    for segment in pointer.split('/').skip(1) {
        if node.get("$comment").and_then(Value::as_str) == Some(CHECKED_BY_PLANRUN) {
            return true;
        }
        let segment = crate::text::pointer_unescape(segment);
        if segment == "$ref" {
            node = deref(schema, node);
            continue;
        }
        node = match node {
            Value::Object(o) => match o.get(&segment) {
                Some(next) => next,
                None => return false,
            },
            Value::Array(a) => match segment.parse::<usize>().ok().and_then(|i| a.get(i)) {
                Some(next) => next,
                None => return false,
            },
            _ => return false,
        };
    }
    false
}

fn dedup(problems: &mut Vec<Problem>) {
    let mut seen = Vec::new();
    problems.retain(|p| {
        let key = (p.span, p.message.clone());
        if seen.contains(&key) {
            false
        } else {
            seen.push(key);
            true
        }
    });
}

fn translate(schema: &Value, error: &ValidationError<'_>, root: &Tree, out: &mut Vec<Problem>) {
    let path = error.instance_path().to_string();
    let schema_path = error.schema_path().to_string();
    let here = schema_at(schema, &parent_pointer(&schema_path));
    let instance = error.instance();
    let span = root.span_at(&path);
    let place = describe_path(&path);

    match error.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected }
        | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
            let allowed = allowed_properties(schema, here);
            for name in unexpected {
                let key_pointer = format!("{path}/{}", pointer_escape(name));
                let span = root.key_span(&key_pointer).unwrap_or(span);
                let help = match did_you_mean(name, allowed.iter().map(String::as_str)) {
                    Some(best) => format!("did you mean `{best}`?"),
                    None if allowed.is_empty() => "remove it".to_string(),
                    None => format!("the fields of {place} are {}", backticked_list(&allowed)),
                };
                out.push(
                    Problem::at(span, format!("unknown field `{name}` in {place}")).label("unknown field").help(help),
                );
            }
        }
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            let prop_schema = here.and_then(|h| property_schema(schema, h, name));
            let example = prop_schema.and_then(|s| first_example(schema, s));
            let mut help = format!("add `{name}:`");
            if let Some(ex) = example {
                help.push_str(&format!(", for example `{name}: {ex}`"));
            }
            if let Some(desc) = prop_schema.and_then(|s| description(schema, s)) {
                help.push_str(&format!(" ({desc})"));
            }
            let span = if path.is_empty() { first_line_span(root) } else { span };
            out.push(Problem::at(span, format!("missing field `{name}` in {place}")).label("here").help(help));
        }
        ValidationErrorKind::Type { kind } => {
            let expected = match kind {
                TypeKind::Single(t) => type_name(t.as_str()).to_string(),
                TypeKind::Multiple(set) => {
                    // `null` is how schemars spells an optional field; operators leave such
                    // fields out rather than write them empty, so it is no help to name it.
                    let names: Vec<&str> =
                        set.iter().filter(|t| t.as_str() != "null").map(|t| type_name(t.as_str())).collect();
                    names.join(" or ")
                }
            };
            out.push(
                Problem::at(span, format!("{place} must be {expected}, not {}", found(instance)))
                    .label(format!("expected {expected}"))
                    .maybe_help(example_help(schema, here)),
            );
        }
        ValidationErrorKind::Enum { options } => {
            let options: Vec<String> = options
                .as_array()
                .map(|a| a.iter().map(|v| v.as_str().map(String::from).unwrap_or_else(|| v.to_string())).collect())
                .unwrap_or_default();
            out.push(enum_problem(span, &place, instance, &options));
        }
        ValidationErrorKind::Constant { expected_value } => {
            let options = vec![expected_value.as_str().map(String::from).unwrap_or_else(|| expected_value.to_string())];
            out.push(enum_problem(span, &place, instance, &options));
        }
        ValidationErrorKind::OneOfNotValid { context } | ValidationErrorKind::AnyOf { context } => {
            one_of(schema, error, context, root, out);
        }
        ValidationErrorKind::Pattern { .. } => {
            // The message written for editors says what the pattern means; the field's
            // description, or an example, where there is none.
            let written = here.and_then(|h| h.get("patternErrorMessage")).and_then(Value::as_str).map(String::from);
            out.push(
                Problem::at(span, format!("{} is not a valid value for {place}", found_value(instance)))
                    .label("not valid here")
                    .maybe_help(
                        written
                            .or_else(|| description(schema, here.unwrap_or(&Value::Null)))
                            .or_else(|| example_help(schema, here)),
                    ),
            );
        }
        ValidationErrorKind::Minimum { limit } | ValidationErrorKind::ExclusiveMinimum { limit } => {
            out.push(
                Problem::at(
                    span,
                    format!("{} is too small for {place}: the minimum is {limit}", found_value(instance)),
                )
                .label("too small")
                .maybe_help(description(schema, here.unwrap_or(&Value::Null))),
            );
        }
        ValidationErrorKind::Maximum { limit } | ValidationErrorKind::ExclusiveMaximum { limit } => {
            out.push(
                Problem::at(
                    span,
                    format!("{} is too large for {place}: the maximum is {limit}", found_value(instance)),
                )
                .label("too large")
                .maybe_help(description(schema, here.unwrap_or(&Value::Null))),
            );
        }
        ValidationErrorKind::MinLength { .. } => {
            out.push(
                Problem::at(span, format!("{place} must not be empty"))
                    .label("empty")
                    .help(example_help(schema, here).unwrap_or_else(|| "write a value, or remove the field".into())),
            );
        }
        ValidationErrorKind::MinItems { limit } => {
            let what = if *limit == 1 { "at least one entry".to_string() } else { format!("at least {limit} entries") };
            out.push(
                Problem::at(span, format!("{place} needs {what}"))
                    .label("too few entries")
                    .maybe_help(example_help(schema, here)),
            );
        }
        _ => {
            // A keyword planrun's own types do not generate today: say what jsonschema says,
            // and where the field is documented.
            out.push(
                Problem::at(span, format!("{place}: {}", lowercase_first(&error.to_string())))
                    .label("here")
                    .help("see the field's description in `schemas/plan.schema.json`, or hover it in your editor"),
            );
        }
    }
}

/// `oneOf`/`anyOf` failures say only "valid under none": find the branch the author meant
/// (the one whose type and discriminating `kind` fit) and report that branch's errors.
fn one_of(
    schema: &Value,
    error: &ValidationError<'_>,
    branches: &[Vec<ValidationError<'static>>],
    root: &Tree,
    out: &mut Vec<Problem>,
) {
    let path = error.instance_path().to_string();
    let span = root.span_at(&path);
    let place = describe_path(&path);
    let ruled_out = |errors: &Vec<ValidationError<'static>>| {
        errors.iter().any(|e| {
            let p = e.instance_path().to_string();
            match e.kind() {
                ValidationErrorKind::Type { .. } => p == path,
                ValidationErrorKind::Constant { .. } | ValidationErrorKind::Enum { .. } => {
                    p == path || p.strip_prefix(&path).is_some_and(|rest| rest.matches('/').count() == 1)
                }
                ValidationErrorKind::Required { property } => p == path && property.as_str() == Some("kind"),
                _ => false,
            }
        })
    };
    let candidates: Vec<&Vec<ValidationError<'static>>> = branches.iter().filter(|b| !ruled_out(b)).collect();
    if let [only] = candidates.as_slice() {
        for e in only.iter().filter(|e| !left_to_checks(schema, e)) {
            translate(schema, e, root, out);
        }
        return;
    }

    let constants_at = |at: &str| -> Vec<String> {
        branches
            .iter()
            .flatten()
            .filter_map(|e| match e.kind() {
                ValidationErrorKind::Constant { expected_value } if e.instance_path().to_string() == at => {
                    expected_value.as_str().map(String::from)
                }
                _ => None,
            })
            .collect()
    };
    let instance = error.instance();

    // An enum whose variants are documented one by one: a list of constants.
    let values = constants_at(&path);
    if !values.is_empty() && values.len() == branches.len() {
        out.push(enum_problem(span, &place, instance, &values));
        return;
    }

    // A tagged union with an unknown or missing tag: name the tags there are.
    let kinds: Vec<String> = branches
        .iter()
        .flatten()
        .filter_map(|e| match e.kind() {
            ValidationErrorKind::Constant { expected_value }
                if e.instance_path().to_string() == format!("{path}/kind") =>
            {
                expected_value.as_str().map(String::from)
            }
            _ => None,
        })
        .collect();
    if !kinds.is_empty() {
        match instance.get("kind") {
            Some(kind) => {
                let kind_span = root.span_at(&format!("{path}/kind"));
                out.push(enum_problem(kind_span, &format!("`kind` of {place}"), kind, &kinds));
            }
            None => out.push(
                Problem::at(span, format!("missing field `kind` in {place}"))
                    .label("here")
                    .help(format!("add `kind:` with one of {}", backticked_list(&kinds))),
            ),
        }
        return;
    }

    // Nothing fits: describe what would, from the first branch that is not `null` (an
    // optional field's other branch), since that is the type the field really has.
    let alternatives = schema_at(schema, &error.schema_path().to_string());
    let meant = alternatives
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|b| b.get("type").and_then(Value::as_str) != Some("null")));
    let help = meant.and_then(|b| description(schema, b)).or_else(|| {
        schema_at(schema, &parent_pointer(&error.schema_path().to_string())).and_then(|h| description(schema, h))
    });
    out.push(
        Problem::at(span, format!("{} is not a valid value for {place}", found_value(instance)))
            .label("not valid here")
            .maybe_help(help),
    );
}

fn enum_problem(span: crate::yaml::Span, place: &str, instance: &Value, options: &[String]) -> Problem {
    let given = instance.as_str().map(String::from).unwrap_or_else(|| instance.to_string());
    let help = match did_you_mean(&given, options.iter().map(String::as_str)) {
        Some(best) => format!("did you mean `{best}`?"),
        None => format!("use {}", backticked_list(options)),
    };
    Problem::at(span, format!("`{given}` is not a valid value for {place}"))
        .label(format!("expected {}", backticked_list(options)))
        .help(help)
}

/// The properties an object schema allows, following `$ref`s and `oneOf` branches.
fn allowed_properties(root: &Value, here: Option<&Value>) -> Vec<String> {
    let Some(node) = here.map(|h| deref(root, h)) else { return vec![] };
    let mut names: Vec<String> =
        node.get("properties").and_then(Value::as_object).map(|o| o.keys().cloned().collect()).unwrap_or_default();
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(branches) = node.get(key).and_then(Value::as_array) {
            for b in branches {
                for name in allowed_properties(root, Some(b)) {
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
            }
        }
    }
    names
}

fn property_schema<'a>(root: &'a Value, object: &'a Value, name: &str) -> Option<&'a Value> {
    deref(root, object).get("properties")?.get(name).map(|s| deref(root, s))
}

fn deref<'a>(root: &'a Value, node: &'a Value) -> &'a Value {
    let mut node = node;
    // Bounded: generated schemas never chain more than a couple of refs.
    for _ in 0..8 {
        match node.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix('#')) {
            Some(pointer) => match root.pointer(pointer) {
                Some(target) => node = target,
                None => break,
            },
            None => break,
        }
    }
    node
}

/// The schema node at a jsonschema schema path, where `$ref` segments jump to their target.
fn schema_at<'a>(root: &'a Value, pointer: &str) -> Option<&'a Value> {
    let mut node = root;
    for segment in pointer.split('/').skip(1) {
        let segment = crate::text::pointer_unescape(segment);
        if segment == "$ref" {
            node = deref(root, node);
            continue;
        }
        node = match node {
            Value::Object(o) => o.get(&segment)?,
            Value::Array(a) => a.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(node)
}

fn parent_pointer(pointer: &str) -> String {
    match pointer.rfind('/') {
        Some(i) => pointer[..i].to_string(),
        None => String::new(),
    }
}

fn description(root: &Value, node: &Value) -> Option<String> {
    let node = deref(root, node);
    let text = node.get("description").and_then(Value::as_str)?;
    // The first sentence: the rest of a field's documentation belongs in the editor.
    let first = text.split_inclusive(". ").next().unwrap_or(text).trim().trim_end_matches('.');
    let mut first = first.replace('\n', " ");
    if let Some(c) = first.get(..1) {
        first = c.to_lowercase() + &first[1..];
    }
    Some(first)
}

fn first_example(root: &Value, node: &Value) -> Option<String> {
    let node = deref(root, node);
    let example = node.get("examples").and_then(Value::as_array)?.first()?;
    Some(match example {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

fn example_help(root: &Value, here: Option<&Value>) -> Option<String> {
    first_example(root, here?).map(|e| format!("for example `{e}`"))
}

fn first_line_span(root: &Tree) -> crate::yaml::Span {
    let mut s = root.span;
    s.len = s.len.min(1);
    s
}

fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |c| c.to_lowercase().chain(chars).collect())
}

fn type_name(t: &str) -> &'static str {
    match t {
        "array" => "a list",
        "boolean" => "`true` or `false`",
        "integer" => "a whole number",
        "null" => "empty",
        "number" => "a number",
        "object" => "a map of fields",
        "string" => "a string",
        _ => "another type",
    }
}

fn found(v: &Value) -> String {
    match v {
        Value::Null => "empty".into(),
        Value::Bool(_) => "a boolean".into(),
        Value::Number(n) if n.is_i64() || n.is_u64() => "a whole number".into(),
        Value::Number(_) => "a number".into(),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a map".into(),
    }
}

fn found_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("`{s}`"),
        Value::Array(_) | Value::Object(_) => found(v),
        other => format!("`{other}`"),
    }
}

/// `/rollout/steps/1/wait` → "`rollout.steps[1].wait`", the spelling operators see in
/// their editor's breadcrumbs.
pub fn describe_path(pointer: &str) -> String {
    if pointer.is_empty() {
        return "the plan".into();
    }
    let mut out = String::new();
    for segment in pointer.split('/').skip(1) {
        let segment = crate::text::pointer_unescape(segment);
        if segment.parse::<usize>().is_ok() {
            out.push_str(&format!("[{segment}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&segment);
        }
    }
    format!("`{out}`")
}

/// Drops what the schema refused and deserializes the rest, so semantic checks still
/// run and an operator sees every problem of the plan at once. When that leaves no plan
/// (a required field was refused), strings the types accept as written are kept (a step
/// `name` that breaks its pattern). `None` when neither is a plan.
pub(crate) fn lenient(doc: Value) -> Option<Plan> {
    let refused = refused(&doc);
    let all: Vec<&str> = refused.iter().map(|(p, _)| p.as_str()).collect();
    let structural: Vec<&str> = refused.iter().filter(|(_, kept)| !kept).map(|(p, _)| p.as_str()).collect();
    let retry = structural.len() < all.len();
    without(doc.clone(), all).or_else(|| if retry { without(doc, structural) } else { None })
}

fn without(mut doc: Value, mut refused: Vec<&str>) -> Option<Plan> {
    // Deepest first, so removing a key never shifts a path still to be removed.
    refused.sort_by_key(|p| std::cmp::Reverse(p.matches('/').count()));
    for path in refused {
        let (parent, last) = path.rsplit_once('/')?;
        let key = crate::text::pointer_unescape(last);
        match doc.pointer_mut(parent) {
            Some(Value::Object(map)) => {
                map.shift_remove(&key);
            }
            // Removing a list item would shift the positions of its siblings.
            _ => return None,
        }
    }
    serde_json::from_value(doc).ok()
}
