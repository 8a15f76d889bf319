//! `planrun plan PLAN --out FILE` and `planrun apply FILE`: saving an execution plan, and
//! checking a saved one before it runs.

use std::path::{Path, PathBuf};

use super::args::GraphArgs;
use super::print::report;
use crate::exit;
use crate::graph::{self, BuildOptions};
use crate::journal::Inputs;
use crate::saved::{self, SAVED_PLAN_VERSION, SavedPlan};
use crate::validate;

pub fn save(plans: &[PathBuf], graph_args: &GraphArgs, out: &Path, color: bool) -> i32 {
    let [plan] = plans else {
        eprintln!(
            "error: `--out` saves one plan; name one plan file\n  help: run `planrun plan PLAN --out FILE` once per plan"
        );
        return exit::INVALID_INPUT;
    };
    // Loaded by its absolute path, as `apply FILE` loads it from anywhere: the files'
    // names the inputs record are then the same.
    let absolute = std::fs::canonicalize(plan).unwrap_or_else(|_| plan.clone());
    let loaded = match validate::load_plan(&absolute) {
        Ok(loaded) => loaded,
        Err(errors) => {
            report(&errors, color);
            return exit::INVALID_INPUT;
        }
    };
    crate::redact::install_plan(&loaded.plan);
    let build = graph_args.build_options();
    let exec = match graph::build(&loaded, &build) {
        Ok(exec) => exec,
        Err(errors) => {
            report(&errors, color);
            return exit::INVALID_INPUT;
        }
    };
    let balancers = saved::balancer_view(&loaded, &exec, &build);
    let doc = SavedPlan {
        planrun_saved_plan: SAVED_PLAN_VERSION,
        plan: absolute,
        named: plan.display().to_string(),
        inputs: Inputs::of(&loaded, &build),
        execution: saved::execution_json(&loaded, &exec, build.batch_size.as_ref()),
        balancers,
        file: out.to_path_buf(),
    };
    let text = match serde_json::to_string_pretty(&doc) {
        Ok(text) => text + "\n",
        Err(e) => {
            eprintln!("error: cannot write the saved plan: {e}");
            return exit::INVALID_INPUT;
        }
    };
    if let Err(e) = std::fs::write(out, text) {
        eprintln!("error: cannot write `{}`: {e}", out.display());
        return exit::INVALID_INPUT;
    }
    if doc.balancers.is_none() {
        eprintln!(
            "warning: the balancers could not be read: `{}` holds no balancer view, and `apply` will rely on its own pre-flight",
            out.display()
        );
    }
    println!(
        "saved the plan of {} host{} in {} batch{} to {}; run it with `planrun apply {}`",
        exec.hosts.len(),
        if exec.hosts.len() == 1 { "" } else { "s" },
        exec.batches.len(),
        if exec.batches.len() == 1 { "" } else { "es" },
        out.display(),
        crate::graph::shell::shell_quote(&out.display().to_string())
    );
    exit::SUCCESS
}

/// For `apply PATH`: `Ok(None)` when PATH is a plan file; the plan, the build options
/// and the saved plan (which `apply` checks once it loaded the plan) when it is a saved
/// plan; the exit code (2, with the reason printed) when it cannot be one, or when the
/// command line also gives inputs.
pub fn resolve(
    path: &Path,
    resume: bool,
    graph_args: &GraphArgs,
) -> Result<Option<(PathBuf, BuildOptions, SavedPlan)>, i32> {
    let saved = match saved::read(path) {
        None => return Ok(None),
        Some(Ok(saved)) => saved,
        Some(Err(e)) => {
            eprintln!("error: {e}; nothing was executed");
            return Err(exit::INVALID_INPUT);
        }
    };
    if resume || graph_args.limit.is_some() || graph_args.batch_size.is_some() || !graph_args.vars.is_empty() {
        eprintln!(
            "error: `{}` is a saved plan: it runs with the `--var`, `--limit` and `--batch-size` it was saved with, and takes none (nor `--resume`); nothing was executed\n  help: save another with `planrun plan {} --out FILE` and those options, or resume the plan file itself",
            path.display(),
            crate::graph::shell::shell_quote(&saved.named)
        );
        return Err(exit::INVALID_INPUT);
    }
    Ok(Some((saved.plan.clone(), saved.inputs.build_options(), saved)))
}
