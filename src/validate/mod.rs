//! From a path to a plan that is safe to build a graph from: read, parse, schema,
//! semantics, each problem at its position, all of them in one run.
//!
//! Nothing here opens a connection, and the only commands run are a plan's
//! `servers_from` commands (through `inventory`), whose output is part of the plan:
//! `apply` still refuses before touching any host.

use std::path::Path;
use std::sync::Arc;

use crate::diagnostic::{Origin, PlanErrors, Problem, SourceFile};
use crate::model::Plan;
use crate::model::select::SelectedHosts;
use crate::validate::checks::{check_semantics, check_wrapping};
use crate::validate::extends::extend;
use crate::validate::read::{load_problem, read_bounded};
use crate::validate::schema::lenient;
use crate::yaml::{self, Tree};

mod checks;
mod extends;
mod guard;
mod inventory;
mod read;
pub mod schema;
pub mod values;

pub use read::{MAX_EXTENDS, MAX_PLAN_BYTES, MAX_PLAN_VALUES, limits};

/// A plan that passed every check, with what is needed to point into its source later.
#[derive(Debug)]
pub struct LoadedPlan {
    /// The plan first, then the bases it `extends`; a span's `file` indexes this.
    pub files: Vec<Arc<SourceFile>>,
    /// The plan merged over its bases, for pointing into it.
    pub root: Tree,
    pub plan: Plan,
    pub selection: SelectedHosts,
}

impl LoadedPlan {
    /// The plan file that was asked for (not one of its bases).
    pub fn source(&self) -> &Arc<SourceFile> {
        &self.files[0]
    }
}

/// Reads and checks one plan file, merged over the bases it `extends`.
pub fn load_plan(path: &Path) -> Result<LoadedPlan, PlanErrors> {
    let bytes = read_bounded(path, MAX_PLAN_BYTES, None).map_err(|p| PlanErrors::about_path(path, *p))?;
    load_plan_owned(path, bytes)
}

/// Checks plan text that was already read; `path` is only used to name it.
pub fn load_plan_bytes(path: &Path, bytes: &[u8]) -> Result<LoadedPlan, PlanErrors> {
    load_plan_owned(path, bytes.to_vec())
}

fn load_plan_owned(path: &Path, bytes: Vec<u8>) -> Result<LoadedPlan, PlanErrors> {
    // The text becomes the source file as it is, not a copy: 10 MB for 100,000 servers,
    // alive for the whole load. Problems before the text is known to be UTF-8 point at
    // the file, so a file that is not has the lossy text as its source (only positions
    // are drawn from it) and is loaded from its bytes, which say where it breaks.
    let (text, not_utf8) = match String::from_utf8(bytes) {
        Ok(text) => (text, None),
        Err(e) => {
            let bytes = e.into_bytes();
            (String::from_utf8_lossy(&bytes).into_owned(), Some(bytes))
        }
    };
    let mut files = vec![Arc::new(SourceFile { path: path.to_path_buf(), text, origin: Origin::Plan })];

    let loaded = yaml::load(not_utf8.as_deref().unwrap_or(files[0].text.as_bytes()), &limits());
    let root = match loaded {
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
    // Only a plan with `servers_from` runs a command or reads an inventory.
    let mut root = root;
    let has_inventory = root.pointer("/servers_from").is_some();
    let mut problems = if has_inventory { inventory::merge(&mut root, &mut files) } else { Vec::new() };
    // A plan that is one file moves its tree into the JSON document and rebuilds it from
    // the text if a problem needs a position: the tree, the document and the typed plan
    // of 100,000 servers are never all alive. A merged tree (bases, inventories) cannot
    // be rebuilt from one text, and is kept.
    let (doc, root) = if files.len() == 1 && !has_inventory {
        let file = files[0].clone();
        (root.into_json(), Tree::rebuilt(move || yaml::load(file.text.as_bytes(), &limits()).ok()))
    } else {
        (root.to_json(), Tree::held(root))
    };
    let fail = |problems: Vec<Problem>| Err(PlanErrors::in_files(files.clone(), problems));

    problems.extend(schema::check(&doc, &root));
    let refused = if problems.is_empty() { Vec::new() } else { schema::refused_paths(&doc) };
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
    let mut plan = match plan {
        Ok(plan) => plan,
        Err(problem) => {
            if problems.is_empty() {
                problems.push(problem);
            }
            return fail(problems);
        }
    };

    // Deserializing grows the list by doubling: 100,000 servers had room for 131,072.
    plan.servers.shrink_to_fit();
    let (selection, mut semantic) = check_semantics(&plan, &root, &refused);
    problems.append(&mut semantic);
    problems.append(&mut check_wrapping(&plan, &root, &selection));
    if !problems.is_empty() {
        // A plan with problems is not built into a graph, so its templates are checked
        // here, on the parts that loaded, to show every problem at once. A selection
        // that matches nothing (an unknown role) still has its templates checked, on
        // every server.
        let servers: Vec<usize> =
            if selection.hosts.is_empty() { (0..plan.servers.len()).collect() } else { selection.hosts.clone() };
        problems.extend(crate::graph::template_problems(&plan, &root, &files, &servers));
        return fail(problems);
    }
    Ok(LoadedPlan { files, root, plan, selection })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tree of a valid one-file plan is rebuilt only for a problem's position: a
    /// check or a render that asks for a span up front would rebuild it for every plan,
    /// and hold it beside the plan (100,000 servers: ~100 MB).
    #[test]
    fn a_valid_plan_never_rebuilds_its_tree() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let guarded = "version: 1
application: shop
servers:
  - { host: 127.0.0.1, name: h1, roles: [app], options: { dir: /srv } }
  - { host: 127.0.0.2, name: h2, roles: [app], options: { dir: /srv } }
balancers:
  edge: { kind: haproxy, socket: \"unix:///run/haproxy.sock\", backend: app }
guard: { balancer: edge, max_error_rate: 1%, interval: 200ms }
rollout:
  select: { roles: [app] }
  batch_size: 1
  steps:
    - name: reject
      balancer: { use: edge, action: reject, node: \"{{host.name}}\" }
    - name: restart
      run: \"{{host.options.dir}}/app restart\"
      env: { RELEASE: \"{{host.index}}\" }
    - name: accept
      balancer: { use: edge, action: accept, node: \"{{host.name}}\" }
    - name: ready
      wait: { http: \"http://{{host.address}}:8080/ready\", timeout: 10s }
";
        let mut plans = vec![("guarded.yaml".to_string(), guarded.as_bytes().to_vec())];
        for example in ["examples/localhost.yaml", "examples/haproxy.yaml", "examples/release.yaml"] {
            plans.push((example.to_string(), std::fs::read(root.join(example)).expect("the example is there")));
        }
        for (name, bytes) in plans {
            let loaded = load_plan_bytes(Path::new(&name), &bytes).unwrap_or_else(|e| panic!("{name}: {e:?}"));
            crate::graph::build(&loaded, &crate::graph::BuildOptions::default())
                .unwrap_or_else(|e| panic!("{name}: {e:?}"));
            assert!(!loaded.root.is_built(), "{name}: validating or building it rebuilt the tree");
        }
    }

    #[test]
    fn a_problem_in_a_valid_looking_plan_still_points_at_its_line() {
        let text = "version: 1
application: shop
servers:
  - { host: 127.0.0.1, roles: [app] }
rollout:
  select: { roles: [app] }
  steps:
    - name: restart
      run: \"{{host.options.dri}} restart\"
";
        let errors = load_plan_bytes(Path::new("p.yaml"), text.as_bytes())
            .and_then(|loaded| crate::graph::build(&loaded, &crate::graph::BuildOptions::default()).map(|_| ()))
            .expect_err("the template names an option the server does not have");
        let span = errors.problems[0].span.expect("a position");
        assert_eq!((span.line, span.column), (9, 13), "{:?}", errors.problems[0]);
    }
}
