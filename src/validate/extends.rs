//! `extends`: the chain of base plans under a plan, each read as its own file so that a
//! problem in a base points into the base.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::diagnostic::{Origin, Problem, SourceFile};
use crate::validate::read::{MAX_EXTENDS, MAX_PLAN_BYTES, MAX_PLAN_VALUES, limits, load_problem, read_bounded};
use crate::yaml::{self, FileId, Limits, Node};

/// Reads the chain of bases `root` extends and merges it under `root`. Each base is pushed
/// onto `files` as it is read, so a problem inside a base points into it; a problem with an
/// `extends` itself (a missing file, a cycle) points at that `extends`.
pub(crate) fn extend(root: Node, files: &mut Vec<Arc<SourceFile>>) -> Result<Node, Box<Problem>> {
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
        files.push(Arc::new(SourceFile {
            path: path.clone(),
            text: String::from_utf8_lossy(&bytes).into_owned(),
            origin: Origin::Base,
        }));
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
