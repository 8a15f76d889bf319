//! `planrun rollback PLAN`: an apply of the plan's `rollback.steps` over the hosts the
//! last run changed. Everything else (pre-flight, budget, lock, journal, live view,
//! summary) is `apply`'s; this module only picks the run, the hosts and the steps.

use super::print::ApplyError;
use crate::graph::{self, BuildOptions, ExecutionPlan, RunSpec, RunValues, StepList};
use crate::journal;
use crate::rollback::Target;
use crate::validate::LoadedPlan;

/// The run `plan`'s rollback goes back from, or why there is none (exit 2).
pub(super) fn target(
    plan: &std::path::Path,
    loaded: &LoadedPlan,
    state: &crate::state::Backend,
) -> Result<Target, ApplyError> {
    let name = plan.display();
    if loaded.plan.rollback.is_none() {
        return Err(ApplyError::NothingToRollBack(format!(
            "error: `{name}` has no `rollback` steps; nothing was executed\n  help: add `rollback: {{ steps: [...] }}` to the plan: the steps that switch a host back"
        )));
    }
    // The runs are where the plan keeps them: `.planrun/` or its `state` database.
    let journal = state.read(&journal::plan_key(plan)).map_err(ApplyError::State)?;
    super::print::warn_unreadable(&journal, plan);
    let Some(target) = crate::rollback::target(&journal.records) else {
        return Err(ApplyError::NothingToRollBack(format!(
            "error: the journal has no run of `{name}` to go back from; nothing was executed\n  help: `planrun rollback` goes back from the last `planrun apply` of this plan, as its journal in `{}` records it",
            journal::state_dir(plan).display()
        )));
    };
    if target.hosts.is_empty() {
        return Err(ApplyError::NothingToRollBack(format!(
            "error: the last run of `{name}` ({}) changed no host: no rollout step completed; nothing to go back from, nothing was executed",
            target.run
        )));
    }
    Ok(target)
}

/// The build options of the rollback: the run's `--var`s, with the command line's over
/// them, and the command line's `--limit` and `--batch-size`.
pub(super) fn build_options(target: &Target, given: &BuildOptions) -> BuildOptions {
    let mut vars: Vec<(String, String)> = target
        .vars
        .iter()
        .filter(|(k, _)| !given.vars.iter().any(|(g, _)| g == *k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    vars.extend(given.vars.iter().cloned());
    BuildOptions { vars, ..given.clone() }
}

/// What the rollback's graph is built from.
pub(super) fn spec(target: &Target) -> RunSpec {
    RunSpec { run: RunValues::of(&target.run), list: StepList::Rollback, only: Some(target.hosts.clone()) }
}

/// The rollback's graph: the target's hosts (after `--limit`), less what earlier
/// rollbacks of the run finished; refused when nothing is left.
pub(super) fn build(
    plan: &std::path::Path,
    loaded: &LoadedPlan,
    target: &Target,
    options: &BuildOptions,
) -> Result<ExecutionPlan, ApplyError> {
    let mut exec = graph::build_run(loaded, options, &spec(target)).map_err(ApplyError::Plan)?;
    if exec.hosts.is_empty() {
        return Err(ApplyError::NothingToRollBack(format!(
            "error: `--limit` leaves none of the hosts run {} changed ({}); nothing was executed",
            target.run,
            target.hosts.join(", ")
        )));
    }
    exec.retain_undone(|i, host| target.done.contains(&(i.phase, i.index, host.map(String::from))));
    if exec.step_count() == 0 {
        return Err(ApplyError::NothingToRollBack(format!(
            "error: run {} of `{}` was already rolled back (by {}); nothing to go back from, nothing was executed\n  help: apply the plan to roll forward again",
            target.run,
            plan.display(),
            target.rollbacks.join(", ")
        )));
    }
    Ok(exec)
}

/// The command that continues a rollback that stopped: the same one again.
pub(super) fn command(plan: &std::path::Path) -> String {
    format!("planrun rollback {}", crate::graph::shell::shell_quote(&plan.display().to_string()))
}

/// `planrun plan PLAN --rollback`: the rollback's graph and a line saying what it goes
/// back from.
pub(super) fn preview(
    plan: &std::path::Path,
    loaded: &LoadedPlan,
    given: &BuildOptions,
) -> Result<(ExecutionPlan, String), ApplyError> {
    let state = crate::state::Backend::of(plan, &loaded.plan).map_err(ApplyError::State)?;
    let target = target(plan, loaded, &state)?;
    let exec = build(plan, loaded, &target, &build_options(&target, given))?;
    let heading = format!(
        "rollback of run {}: the hosts it changed, {}",
        target.run,
        exec.hosts.iter().map(|h| h.name.as_str()).collect::<Vec<_>>().join(", ")
    );
    Ok((exec, heading))
}
