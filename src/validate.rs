//! From a path to a plan that is safe to build a graph from: read, parse, schema,
//! semantics, each problem at its position, all of them in one run.
//!
//! Nothing here runs a command or opens a connection: validation is pure, so
//! `planrun validate` is safe anywhere and `apply` refuses before touching anything.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use crate::diagnostic::{PlanErrors, Problem, SourceFile};
use crate::model::select::{self, Selection};
use crate::model::{BalancerAction, Plan, Step};
use crate::schema;
use crate::text::{backticked_list, did_you_mean, plural};
use crate::yaml::{self, FileId, Limits, Node, Span};

/// A plan that passed every check, with what is needed to point into its source later.
#[derive(Debug)]
pub struct LoadedPlan {
    /// The plan first, then the bases it `extends`; a span's `file` indexes this.
    pub files: Vec<Arc<SourceFile>>,
    /// The plan merged over its bases.
    pub root: Node,
    pub plan: Plan,
    pub selection: Selection,
}

impl LoadedPlan {
    /// The plan file that was asked for (not one of its bases).
    pub fn source(&self) -> &Arc<SourceFile> {
        &self.files[0]
    }
}

/// The largest plan file planrun reads. A real plan of 100,000 servers is ~11 MB; past
/// this, something is wrong with the file, and reading it would only cost memory: the
/// worst 16 MiB file (millions of one-character keys) peaks near 350 MB.
pub const MAX_PLAN_BYTES: usize = 16 * 1024 * 1024;

/// The most YAML values a plan may expand to. The YAML loader's default (1,000,000) is
/// reached by a plain plan of ~77,000 servers (13 values each: the map, `host`, `name`,
/// two roles, an option, and their keys); 3,000,000 takes 100,000 servers with room for
/// richer entries, while an alias bomb still stops at a few hundred MB of tree.
pub const MAX_PLAN_VALUES: usize = 3_000_000;

/// The longest chain of `extends` (a plan, its base, the base's base...). Two levels
/// cover every layout seen in practice; the bound keeps a generated chain from reading
/// thousands of files.
pub const MAX_EXTENDS: usize = 16;

pub fn limits() -> Limits {
    Limits { max_bytes: MAX_PLAN_BYTES, max_nodes: MAX_PLAN_VALUES, ..Limits::default() }
}

/// Reads and checks one plan file, merged over the bases it `extends`.
pub fn load_plan(path: &Path) -> Result<LoadedPlan, PlanErrors> {
    let bytes = read_bounded(path, MAX_PLAN_BYTES, None).map_err(|p| PlanErrors::about_path(path, *p))?;
    load_plan_bytes(path, &bytes)
}

/// Checks plan text that was already read; `path` is only used to name it.
pub fn load_plan_bytes(path: &Path, bytes: &[u8]) -> Result<LoadedPlan, PlanErrors> {
    // Problems before the text is known to be UTF-8 point at the file, so the source is
    // the lossy text: only positions are drawn from it.
    let text = String::from_utf8_lossy(bytes).into_owned();
    let mut files = vec![Arc::new(SourceFile { path: path.to_path_buf(), text })];

    let root = match yaml::load(bytes, &limits()) {
        Ok(root) => root,
        Err(e) => return Err(PlanErrors::new(files[0].clone(), vec![load_problem(&e)])),
    };
    // Only a plan that extends another pays for reading and merging: one file is the
    // common case, and the one a 100,000-server benchmark measures.
    let root = if root.pointer("/extends").is_some() {
        match extend(root, &mut files) {
            Ok(root) => root,
            Err(problem) => return Err(PlanErrors::in_files(files, vec![*problem])),
        }
    } else {
        root
    };
    let fail = |problems: Vec<Problem>| Err(PlanErrors::in_files(files.clone(), problems));
    let doc = root.to_json();

    let mut problems = schema::check(&doc, &root);
    let plan = if problems.is_empty() {
        serde_json::from_value::<Plan>(doc).map_err(|e| {
            // The schema accepted what the types refuse: a planrun bug, reported rather
            // than panicked on.
            Problem::at(root.span, format!("internal error: the schema and the plan types disagree: {e}"))
                .help("please report this with the plan attached")
        })
    } else {
        lenient(doc).ok_or_else(|| problems[0].clone())
    };
    let plan = match plan {
        Ok(plan) => plan,
        Err(problem) => {
            if problems.is_empty() {
                problems.push(problem);
            }
            return fail(problems);
        }
    };

    let (selection, mut semantic) = check_semantics(&plan, &root);
    problems.append(&mut semantic);
    if !problems.is_empty() {
        return fail(problems);
    }
    Ok(LoadedPlan { files, root, plan, selection })
}

/// Reads the chain of bases `root` extends and merges it under `root`. Each base is pushed
/// onto `files` as it is read, so a problem inside a base points into it; a problem with an
/// `extends` itself (a missing file, a cycle) points at that `extends`.
fn extend(root: Node, files: &mut Vec<Arc<SourceFile>>) -> Result<Node, Box<Problem>> {
    // Canonical paths, to tell `base.yaml` and `./base.yaml` apart from two files.
    let identity = |path: &Path| std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    // The bases in the order they were read: `bases[i]` is in `files[i + 1]`.
    let mut bases: Vec<Node> = Vec::new();
    let mut seen: Vec<PathBuf> = vec![identity(&files[0].path)];
    let mut bytes_read = files[0].text.len();
    let mut values = root.count();
    loop {
        let current = bases.len();
        let Some(extends) = bases.last().unwrap_or(&root).pointer("/extends") else { break };
        // Anything but a file name is the schema's to report, with the rest of the plan.
        let yaml::Value::String(name) = &extends.value else { break };
        let at = extends.span;
        let referrer = files[current].path.clone();
        let path = referrer.parent().unwrap_or(Path::new("")).join(name);
        if bases.len() >= MAX_EXTENDS {
            return Err(Box::new(
                Problem::at(at, format!("the chain of `extends` is longer than {MAX_EXTENDS} bases"))
                    .label("one base too many")
                    .help("merge some of these bases into one: each plan should need one or two"),
            ));
        }
        let id = identity(&path);
        if let Some(first) = seen.iter().position(|p| *p == id) {
            let mut names: Vec<String> = files[first..].iter().map(|f| format!("`{}`", f.display_name())).collect();
            names.push(format!("`{}`", path.display()));
            return Err(Box::new(Problem::at(at, format!("`extends` makes a cycle: {}", names.join(" extends ")))
                .label("extends a plan that extends this one")
                .help("remove this `extends`: a base must not extend, directly or through other bases, a plan built on it")));
        }
        let bytes = read_bounded(&path, MAX_PLAN_BYTES, Some(at))?;
        bytes_read += bytes.len();
        if bytes_read > MAX_PLAN_BYTES {
            return Err(Box::new(
                Problem::at(
                    at,
                    format!("the plan and its bases are more than the {MAX_PLAN_BYTES} bytes a plan may have together"),
                )
                .label("this base goes past the limit")
                .help("a plan file holds servers and steps; check that this is the right file"),
            ));
        }
        let file = files.len() as FileId;
        files.push(Arc::new(SourceFile { path: path.clone(), text: String::from_utf8_lossy(&bytes).into_owned() }));
        // The bases share the plan's budget of values, so a chain cannot multiply it.
        let limits = Limits { max_nodes: MAX_PLAN_VALUES.saturating_sub(values), ..limits() };
        let base = yaml::load_file(&bytes, &limits, file).map_err(|e| Box::new(match e.span() {
            Some(_) => load_problem(&e),
            // A base that is empty has no place of its own to point at: the `extends` is.
            None => Problem::at(at, format!("the base plan `{}` is empty", path.display()))
                .label("empty base")
                .help("write the parts the plans share into it (`version`, `application`, `rollout`), or remove this `extends`"),
        }))?;
        if !matches!(base.value, yaml::Value::Map(_)) {
            return Err(Box::new(
                Problem::at(base.span, format!("the base plan `{}` is not a map of fields", path.display()))
                    .label("expected fields such as `rollout:`")
                    .help(
                        "a base plan is a plan without its servers: fields such as `version`, `application`, `rollout`",
                    ),
            ));
        }
        values += base.count();
        seen.push(id);
        bases.push(base);
    }
    // The deepest base first, each plan laid over the bases below it.
    Ok(match bases.into_iter().rev().reduce(yaml::overlay) {
        Some(base) => yaml::overlay(base, root),
        None => root,
    })
}

/// Drops what the schema refused and deserializes the rest, so semantic checks still
/// run and an operator sees every problem of the plan at once. `None` when what is left
/// is not a plan (a required field itself was wrong).
fn lenient(mut doc: Value) -> Option<Plan> {
    let mut refused = schema::refused_paths(&doc);
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

/// Reads a file of at most `limit` bytes. `at` is the `extends` that names it, for a base:
/// a problem with a base file is reported there, where the user can fix the name.
fn read_bounded(path: &Path, limit: usize, at: Option<Span>) -> Result<Vec<u8>, Box<Problem>> {
    let about = |message: String, help: &str| {
        let problem = match at {
            Some(span) => Problem::at(span, message).label("base plan"),
            None => Problem::whole_file(message),
        };
        Err(Box::new(problem.help(help)))
    };
    let what = if at.is_some() { "base plan" } else { "plan file" };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let help = if at.is_some() {
                "`extends` is relative to the folder of the plan it is written in; check the file name"
            } else {
                "check the path to the plan file"
            };
            return about(format!("the {what} `{}` does not exist", path.display()), help);
        }
        Err(e) => return about(format!("cannot read `{}`: {e}", path.display()), "check the file's permissions"),
    };
    if meta.is_dir() {
        let help = if at.is_some() {
            "name a base plan file, such as `extends: base.yaml`"
        } else {
            "name a plan file, such as `plans/production.yaml`"
        };
        return about(format!("`{}` is a directory, not a {what}", path.display()), help);
    }
    if meta.len() > limit as u64 {
        return about(
            format!("`{}` is {} bytes, more than the {} a plan may have", path.display(), meta.len(), limit),
            "a plan file holds servers and steps; check that this is the right file",
        );
    }
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return about(format!("cannot read `{}`: {e}", path.display()), "check the file's permissions"),
    };
    // Bounded even when the metadata lies (a FIFO, /dev/zero).
    let mut bytes = Vec::new();
    if let Err(e) = file.take(limit as u64 + 1).read_to_end(&mut bytes) {
        return about(format!("cannot read `{}`: {e}", path.display()), "check the file");
    }
    if bytes.len() > limit {
        return about(
            format!("`{}` is more than the {limit} bytes a plan may have", path.display()),
            "a plan file holds servers and steps; check that this is the right file",
        );
    }
    Ok(bytes)
}

fn load_problem(e: &yaml::LoadError) -> Problem {
    use yaml::LoadError as E;
    match e {
        E::Syntax { message, span } => Problem::at(*span, format!("invalid YAML: {message}"))
            .label("here")
            .help("check the indentation and quoting around this position"),
        E::TooLarge { size, limit } => {
            Problem::whole_file(format!("the plan is {size} bytes, more than the {limit} allowed"))
                .help("a plan file holds servers and steps; check that this is the right file")
        }
        E::TooDeep { limit, span } => Problem::at(*span, format!("the plan nests deeper than {limit} levels"))
            .label("too deep")
            .help("a plan needs a handful of levels; check for runaway brackets or indentation"),
        E::TooManyNodes { limit, span } => Problem::at(*span, format!("the plan expands to more than {limit} values"))
            .label("expanding this alias went past the limit")
            .help("aliases that refer to aliases multiply; a plan that large is almost certainly an alias bomb"),
        E::DuplicateKey { key, span, first } => Problem::at(*span, format!("duplicate key `{key}`"))
            .label("second definition")
            .related(*first, "first defined here")
            .help("remove one of them: YAML keeps only one, silently"),
        E::NonScalarKey { span } => Problem::at(*span, "a key must be a plain name, not a list or a map")
            .label("complex key")
            .help("write keys as plain words, such as `host:`"),
        E::UnknownAnchor { span } => Problem::at(*span, "this alias refers to an anchor that is not defined before it")
            .label("unknown anchor")
            .help("define the anchor with `&name` before using `*name`"),
        E::MultipleDocuments { span } => {
            Problem::at(*span, "a plan file holds one YAML document, this is a second one")
                .label("second document")
                .help("remove the `---` separator or move the second document into its own file")
        }
        E::NotUtf8 { file, offset, line, column } => Problem::at(
            Span { file: *file, offset: *offset, len: 1, line: *line, column: *column },
            "the plan is not valid UTF-8",
        )
        .label("invalid byte")
        .help("save the file as UTF-8"),
        E::InvalidMerge { span } => Problem::at(*span, "a `<<` merge key takes a map or a list of maps")
            .label("not a map")
            .help("merge an anchored map, such as `<<: *defaults`"),
        E::UnsupportedTag { tag, span } => Problem::at(*span, format!("the tag `{tag}` is not supported"))
            .label("unsupported tag")
            .help("remove it: a plan needs plain values, and allows only core tags such as `!!str`"),
        E::TagMismatch { tag, span } => Problem::at(*span, format!("the value does not match its tag `{tag}`"))
            .label(format!("not a `{tag}`"))
            .help("fix the value, or remove the tag"),
        E::Empty => Problem::whole_file("the plan is empty")
            .help("start from `planrun init`, or write at least `version`, `application`, `servers` and `rollout`"),
        #[allow(unreachable_patterns)]
        other => Problem::whole_file(other.to_string()),
    }
}

/// The checks a schema cannot express: references between parts of the plan.
fn check_semantics(plan: &Plan, root: &Node) -> (Selection, Vec<Problem>) {
    let mut problems = Vec::new();
    let span = |pointer: &str| root.span_at(pointer);

    // Servers must be told apart: `--limit`, the journal and the output name them. A
    // server is known by its `name`, else by its `host`, so two app instances on one
    // machine are fine when they are named.
    let mut first_seen: HashMap<&str, usize> = HashMap::new();
    for (i, server) in plan.servers.iter().enumerate() {
        let (id, field, what) = match &server.name {
            Some(name) => (name.as_str(), "name", "server name"),
            None => (server.host.as_str(), "host", "host"),
        };
        if let Some(&j) = first_seen.get(id) {
            let first_field = if plan.servers[j].name.is_some() { "name" } else { "host" };
            problems.push(
                Problem::at(span(&format!("/servers/{i}/{field}")), format!("duplicate {what} `{id}`"))
                    .label("listed a second time")
                    .related(span(&format!("/servers/{j}/{first_field}")), "first listed here")
                    .help("list each server once and give it several `roles`; two servers on one address need distinct `name`s"),
            );
        } else {
            first_seen.insert(id, i);
        }
    }

    // Roles in the selection must exist: a typo would silently select nothing.
    let known_roles: Vec<&str> = {
        let mut seen = HashSet::new();
        plan.servers.iter().flat_map(|s| s.roles.iter().map(String::as_str)).filter(|r| seen.insert(*r)).collect()
    };
    let mut role_error = false;
    for (i, role) in plan.rollout.select.roles.iter().enumerate() {
        if !known_roles.contains(&role.as_str()) {
            role_error = true;
            let help = match did_you_mean(role, known_roles.iter().copied()) {
                Some(best) => format!("did you mean `{best}`?"),
                None => format!("the roles in this plan are {}", backticked_list(&known_roles)),
            };
            problems.push(
                Problem::at(span(&format!("/rollout/select/roles/{i}")), format!("no server has the role `{role}`"))
                    .label("unknown role")
                    .help(help),
            );
        }
    }

    let selection = select::select(plan);
    if selection.hosts.is_empty() && !role_error {
        problems.push(
            Problem::at(span("/rollout/select"), "`rollout.select` matches no server")
                .label("matches nothing")
                .help("every server with these roles is excluded; loosen `exclude` or add servers"),
        );
    }

    if let Some(host) = plan.lock.as_ref().and_then(|l| l.host.as_deref())
        && host != "local"
        && !plan.servers.iter().any(|s| s.name.as_deref() == Some(host) || s.host == host)
    {
        let names: Vec<&str> = plan.servers.iter().map(|s| s.name.as_deref().unwrap_or(&s.host)).collect();
        let help = match did_you_mean(host, names.iter().copied()) {
            Some(best) => format!("did you mean `{best}`?"),
            None => "name one of the plan's servers, or `local` for the machine running planrun".to_string(),
        };
        problems.push(
            Problem::at(span("/lock/host"), format!("the lock is on `{host}`, which is not a server of this plan"))
                .label("unknown server")
                .help(help),
        );
    }

    for (list, steps) in [("/before", &plan.before), ("/rollout/steps", &plan.rollout.steps), ("/after", &plan.after)] {
        check_steps(plan, list, steps, root, &mut problems);
    }

    // Jump specs are checked here, at their position, rather than at connect time.
    let ssh_settings = std::iter::once(("/ssh".to_string(), Some(&plan.ssh)))
        .chain(plan.servers.iter().enumerate().map(|(i, s)| (format!("/servers/{i}/ssh"), s.ssh.as_ref())));
    for (at, settings) in ssh_settings {
        let Some(jump) = settings.and_then(|s| s.jump.as_ref()) else { continue };
        for (k, hop) in jump.hops().into_iter().enumerate() {
            if hop.eq_ignore_ascii_case("none") && jump.hops().len() == 1 {
                continue;
            }
            if let Err(why) = crate::ssh_settings::parse_hop(hop) {
                let pointer = match jump {
                    crate::model::Jump::One(_) => format!("{at}/jump"),
                    crate::model::Jump::Chain(_) => format!("{at}/jump/{k}"),
                };
                let (message, help) = why.split_once("; ").unwrap_or((&why, "write `[user@]host[:port]`"));
                problems.push(
                    Problem::at(span(&pointer), format!("jump host `{hop}`: {message}"))
                        .label("invalid jump host")
                        .help(help.to_string()),
                );
            }
        }
    }
    (selection, problems)
}

fn check_steps(plan: &Plan, list: &str, steps: &[Step], root: &Node, problems: &mut Vec<Problem>) {
    let span = |pointer: &str| root.span_at(pointer);
    let in_rollout = list == "/rollout/steps";
    let mut names: HashMap<&str, usize> = HashMap::new();

    for (i, step) in steps.iter().enumerate() {
        let at = format!("{list}/{i}");
        if let Some(&j) = names.get(step.name.as_str()) {
            problems.push(
                Problem::at(span(&format!("{at}/name")), format!("duplicate step name `{}`", step.name))
                    .label("used a second time")
                    .related(span(&format!("{list}/{j}/name")), "first used here")
                    .help("give every step in a list its own name: output and `--resume` refer to steps by name"),
            );
        } else {
            names.insert(&step.name, i);
        }

        let kinds = step.kinds();
        if kinds.len() != 1 {
            let message = if kinds.is_empty() {
                format!("step `{}` does nothing", step.name)
            } else {
                format!("step `{}` sets {}; a step does one thing", step.name, backticked_list(&kinds))
            };
            problems.push(Problem::at(span(&at), message).label("this step").help(
                "give it exactly one of `run`, `local`, `balancer` or `wait`; split it into several steps to do more",
            ));
        }

        if let Some(b) = &step.balancer {
            unknown_balancer(plan, step, &b.balancer, root.span_at(&format!("{at}/balancer/use")), problems);
            if !in_rollout {
                problems.push(
                    Problem::at(
                        span(&format!("{at}/balancer")),
                        format!("step `{}` changes a balancer outside the rollout", step.name),
                    )
                    .label("balancer step")
                    .help("balancer steps take one host's node out of rotation: put them in `rollout.steps`"),
                );
            } else if matches!(b.action, BalancerAction::Reject | BalancerAction::Drain)
                && plan.balancers.contains_key(&b.balancer)
            {
                let put_back = steps[i + 1..].iter().any(|later| {
                    later
                        .balancer
                        .as_ref()
                        .is_some_and(|l| l.balancer == b.balancer && l.action == BalancerAction::Accept)
                });
                if !put_back {
                    problems.push(
                        Problem::at(
                            span(&format!("{at}/balancer/action")),
                            format!("step `{}` takes the node out of `{}` and no later step puts it back", step.name, b.balancer),
                        )
                        .label(format!("`{}` without a later `accept`", b.action.as_str()))
                        .help(format!(
                            "add a later step `balancer: {{ use: {}, action: accept, node: ... }}`, or every host would stay out of rotation",
                            b.balancer
                        )),
                    );
                }
            }
        }

        if let Some(wait) = &step.wait {
            let wait_at = format!("{at}/wait");
            let kinds = wait.kinds();
            if kinds.len() != 1 {
                let message = if kinds.is_empty() {
                    format!("the wait of step `{}` checks nothing", step.name)
                } else {
                    format!(
                        "the wait of step `{}` sets {}; a wait checks one thing",
                        step.name,
                        backticked_list(&kinds)
                    )
                };
                problems.push(
                    Problem::at(span(&wait_at), message)
                        .label("this wait")
                        .help("give it exactly one of `sleep`, `http`, `tcp`, `command` or `balancer_up`"),
                );
            }
            if let Some(name) = &wait.balancer_up {
                unknown_balancer(plan, step, name, root.span_at(&format!("{wait_at}/balancer_up")), problems);
                if wait.node.is_none() {
                    problems.push(
                        Problem::at(
                            span(&format!("{wait_at}/balancer_up")),
                            format!("the `balancer_up` wait of step `{}` names no node", step.name),
                        )
                        .label("which node?")
                        .help("add `node:`, such as `node: \"{{host.options.private_ip}}:80\"`"),
                    );
                }
            }
            if wait.http.is_none() && wait.status.is_some() {
                problems.push(
                    Problem::at(span(&format!("{wait_at}/status")), "`status` only applies to an `http` wait")
                        .label("ignored")
                        .help("remove `status`, or make this an `http` wait"),
                );
            }
            if wait.node.is_some() && wait.balancer_up.is_none() {
                problems.push(
                    Problem::at(span(&format!("{wait_at}/node")), "`node` only applies to a `balancer_up` wait")
                        .label("ignored")
                        .help("remove `node`, or make this a `balancer_up` wait"),
                );
            }
        }
    }
}

fn unknown_balancer(plan: &Plan, step: &Step, name: &str, at: yaml::Span, problems: &mut Vec<Problem>) {
    if plan.balancers.contains_key(name) {
        return;
    }
    let names: Vec<&str> = plan.balancers.keys().map(String::as_str).collect();
    let help = match did_you_mean(name, names.iter().copied()) {
        Some(best) => format!("did you mean `{best}`?"),
        None if names.is_empty() => "define it under `balancers:` at the top level".to_string(),
        None => format!("the balancers of this plan are {}", backticked_list(&names)),
    };
    problems.push(
        Problem::at(at, format!("step `{}` uses the balancer `{name}`, which is not defined", step.name))
            .label("unknown balancer")
            .help(help),
    );
}

/// A one-line account of what a valid plan holds, for `planrun validate`.
pub fn summary(loaded: &LoadedPlan) -> String {
    let plan = &loaded.plan;
    let mut roles: Vec<&str> = Vec::new();
    for r in plan.servers.iter().flat_map(|s| s.roles.iter()) {
        if !roles.contains(&r.as_str()) {
            roles.push(r);
        }
    }
    format!(
        "{}: valid: {} ({}), {} selected, {} per host, {}",
        loaded.source().display_name(),
        plural(plan.servers.len(), "server", "servers"),
        if roles.is_empty() { "no roles".to_string() } else { format!("roles {}", roles.join(", ")) },
        plural(loaded.selection.hosts.len(), "host", "hosts"),
        plural(plan.rollout.steps.len(), "step", "steps"),
        plural(plan.balancers.len(), "balancer", "balancers"),
    )
}
