//! Which plan files a command line names: each file as given, and every `*.yaml` (or
//! `*.yml`) directly inside each directory, so `planrun validate plans/` checks every
//! environment in one call.
//!
//! A directory of plans usually holds their base too (`plans/base.yaml`), which has no
//! servers and fails on its own. It is checked as part of every plan that extends it; the
//! caller skips it once the plans are loaded (`LoadedPlan::files` names the bases), so
//! finding bases costs no extra parse. A file named explicitly is always checked alone.

use std::path::{Path, PathBuf};

use crate::diagnostic::{PlanErrors, Problem};

/// A plan file to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub path: PathBuf,
    /// Found by listing a directory: skipped when another plan extends it.
    pub from_dir: bool,
}

/// The plans `args` name, in order; a directory that cannot be listed or holds no plan is
/// a problem in its place, so the other plans are still checked.
pub fn expand(args: &[PathBuf]) -> Vec<Result<Named, PlanErrors>> {
    let mut out = Vec::new();
    for arg in args {
        if !arg.is_dir() {
            // Missing files are reported by the loader, with the rest of the plan's checks.
            out.push(Ok(Named { path: arg.clone(), from_dir: false }));
            continue;
        }
        match plans_in(arg) {
            Ok(paths) if paths.is_empty() => out.push(Err(PlanErrors::about_path(
                arg,
                Problem::whole_file(format!("the folder `{}` holds no plan file (`*.yaml`)", arg.display()))
                    .help("name the folder that holds the plans, such as `plans/`, or create one with `planrun init`"),
            ))),
            Ok(paths) => out.extend(paths.into_iter().map(|path| Ok(Named { path, from_dir: true }))),
            Err(e) => out.push(Err(PlanErrors::about_path(
                arg,
                Problem::whole_file(format!("cannot list the folder `{}`: {e}", arg.display()))
                    .help("check the folder's permissions"),
            ))),
        }
    }
    out
}

/// The `*.yaml` and `*.yml` files directly in `dir`, sorted by name so the output is the
/// same on every machine. Subfolders are not searched: they tend to hold other things
/// (`.planrun/` run logs, shared fragments).
fn plans_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let is_yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
        if is_yaml && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths)
}

/// The same file whatever way it was named (`plans/base.yaml`, `./plans/base.yaml`).
pub fn identity(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}
