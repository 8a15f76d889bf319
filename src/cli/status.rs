//! `planrun status` (the journal's view of the last run, and what a resume would do) and
//! `planrun lock status|release`.

use std::collections::HashMap;
use std::path::Path;

use super::args::LockAction;
use super::print::report;
use crate::events::RunOutcome;
use crate::exit;
use crate::graph::{self, BuildOptions, Phase};
use crate::journal::{self, plan_key};
use crate::lock::{self, LockState};
use crate::state::Backend;
use crate::transport::Transports;
use crate::validate::{self, LoadedPlan};

fn load(plan: &Path, color: bool) -> Result<LoadedPlan, i32> {
    validate::load_plan(plan).map_err(|errors| {
        report(&errors, color);
        exit::INVALID_INPUT
    })
}

pub fn status(plan: &Path, color: bool) -> i32 {
    let loaded = match load(plan, color) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let backend = match Backend::of(plan, &loaded.plan) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{e}");
            return e.code();
        }
    };
    let journal = match backend.read(&plan_key(plan)) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("{e}");
            return e.code();
        }
    };
    super::print::warn_unreadable(&journal, plan);
    let Some(campaign) = journal::campaign(&journal.records) else {
        println!("{}: never applied (no journal in {})", plan.display(), backend.describe());
        return exit::SUCCESS;
    };
    let ago = journal::age(&campaign.last_started)
        .map(|d| format!(" ({} ago)", humantime::format_duration(std::time::Duration::from_secs(d.as_secs()))))
        .unwrap_or_default();
    let paused = campaign.paused_after.map(|(after, of)| format!("paused after batch {after} of {of}"));
    let outcome = match campaign.last_outcome {
        Some(RunOutcome::Paused) => paused.as_deref().unwrap_or("paused"),
        Some(RunOutcome::Succeeded) => "succeeded",
        Some(RunOutcome::Halted) => "halted",
        Some(RunOutcome::CompletedWithFailures) => "completed with failed hosts",
        Some(RunOutcome::Interrupted) => "interrupted",
        None => "did not finish (killed, or still running)",
    };
    println!("{}: last run {} started {}{ago}: {outcome}", plan.display(), campaign.last_run, campaign.last_started);
    if campaign.runs > 1 {
        println!("  it resumed an earlier run; {} runs since the last fresh apply", campaign.runs);
    }
    if journal::plan_hash(&loaded) != campaign.plan_hash {
        let now = journal::Inputs::of(&loaded, &campaign.inputs.build_options());
        let changes = campaign.inputs.plan_differences(&now);
        let what = if changes.is_empty() { String::new() } else { format!(" ({})", changes.join("; ")) };
        println!("  the plan changed since{what}: `--resume` refuses unless `--resume-changed`");
    }
    if let Some(by) = &campaign.rolled_back_by {
        println!("  rolled back by run {by} (`planrun rollback`)");
    }
    if !campaign.resumable() {
        println!("  nothing to resume");
        return exit::SUCCESS;
    }
    // The resume continues with the run's own overrides: `--limit` and `--var` included.
    let Ok(mut exec) = graph::build(&loaded, &campaign.inputs.build_options()) else {
        println!("  the plan no longer builds: run `planrun validate {}`", plan.display());
        return exit::INVALID_INPUT;
    };
    let total = exec.step_count();
    exec.retain_undone(|i, host| campaign.is_done(i, host));
    let left = exec.step_count();
    println!("  `{}` would run {left} of {total} steps:", journal::resume_command(plan, &campaign.inputs));
    let mut by_host: Vec<(String, Vec<String>)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for i in exec.instances() {
        let who = match (i.phase, i.host) {
            (_, Some(h)) => exec.hosts[h].name.clone(),
            (Phase::Before, None) => "before (local)".into(),
            (_, None) => "after (local)".into(),
        };
        let at = *index.entry(who.clone()).or_insert_with(|| {
            by_host.push((who.clone(), vec![]));
            by_host.len() - 1
        });
        by_host[at].1.push(i.step.clone());
    }
    for (who, steps) in by_host {
        println!("    {who}: {}", steps.join(" → "));
    }
    exit::SUCCESS
}

pub fn lock(action: LockAction, plan: &Path, color: bool) -> i32 {
    let loaded = match load(plan, color) {
        Ok(l) => l,
        Err(code) => return code,
    };
    match Backend::of(plan, &loaded.plan) {
        Ok(Backend::Postgres(db)) => return super::state::lock(action, &db),
        Ok(Backend::Files { .. }) => {}
        Err(e) => {
            eprintln!("{e}");
            return e.code();
        }
    }
    let Ok(exec) = graph::build(&loaded, &BuildOptions::default()) else {
        eprintln!("error: the plan does not build: run `planrun validate {}`", plan.display());
        return exit::INVALID_INPUT;
    };
    let place = lock::place(&loaded.plan, &loaded.selection.hosts);
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return exit::ROLLOUT_FAILED;
        }
    };
    runtime.block_on(async {
        let transport = match lock::transport(
            &loaded.plan,
            &place,
            &exec,
            &Transports::local_only(),
            super::print::notices(),
        )
        .await
        {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: cannot reach the lock `{}`: {e}", place.display);
                return exit::ROLLOUT_FAILED;
            }
        };
        let held = match lock::status(&transport, &place).await {
            Ok(h) => h,
            Err(e) => {
                eprintln!("error: cannot read the lock `{}`: {e}", place.display);
                return exit::ROLLOUT_FAILED;
            }
        };
        let holder = match &held {
            LockState::Free => "free".to_string(),
            LockState::Held(h) if h.provably_gone() => {
                format!("held by {}; that process is gone (it ran on this machine, in this boot)", h.describe())
            }
            LockState::Held(h) => format!("held by {}", h.describe()),
            LockState::HeldUnknown => "held, holder unknown (the lock has no readable holder file)".to_string(),
        };
        match action {
            LockAction::Status => {
                println!("lock `{}`: {holder}", place.display);
                exit::SUCCESS
            }
            LockAction::Release => {
                if held == LockState::Free {
                    println!("lock `{}`: already free", place.display);
                    return exit::SUCCESS;
                }
                match lock::remove(&transport, &place, None).await {
                    Ok(()) => {
                        println!("lock `{}`: released (it was {holder})", place.display);
                        exit::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("error: cannot release the lock `{}`: {e}", place.display);
                        exit::ROLLOUT_FAILED
                    }
                }
            }
        }
    })
}
