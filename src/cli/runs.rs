//! `planrun runs PLAN [--last N]`: the past runs of a plan from its journal (the file
//! beside the plan, or PostgreSQL), one row each: who, when, outcome, hosts.

use std::io::{IsTerminal, Write};
use std::path::Path;

use crate::events::{Outcome, RunOutcome};
use crate::exit;
use crate::journal::{self, Record};
use crate::state::Backend;

/// One run, gathered from its records.
struct Run {
    id: String,
    started: String,
    by: String,
    resume_of: Option<String>,
    outcome: Option<RunOutcome>,
    paused_after: Option<(usize, usize)>,
    /// Hosts in the order their first step was recorded, and whether one of their steps failed.
    hosts: Vec<(String, bool)>,
}

pub fn runs(plan: &Path, last: Option<usize>, color: bool) -> i32 {
    let loaded = match crate::validate::load_plan(plan) {
        Ok(l) => l,
        Err(errors) => {
            super::print::report(&errors, color);
            return exit::INVALID_INPUT;
        }
    };
    let backend = match Backend::of(plan, &loaded.plan) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{e}");
            return e.code();
        }
    };
    let journal = match backend.read(&journal::plan_key(plan)) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("{e}");
            return e.code();
        }
    };
    super::print::warn_unreadable(&journal, plan);
    let mut runs = gather(&journal.records);
    if runs.is_empty() {
        println!("{}: never applied (no runs in {})", plan.display(), backend.describe());
        return exit::SUCCESS;
    }
    let total = runs.len();
    if let Some(last) = last {
        runs.drain(..total.saturating_sub(last));
    }
    let mut text = table(&runs, crate::report::output_width(std::io::stdout().is_terminal()));
    text.push_str(&format!(
        "{} of {} in {}\n",
        crate::text::plural(runs.len(), "run", "runs"),
        plan.display(),
        backend.describe()
    ));
    if runs.len() < total {
        text.push_str(&format!("({} earlier not shown)\n", total - runs.len()));
    }
    let _ = crate::redact::stdout().write_all(text.as_bytes());
    exit::SUCCESS
}

fn gather(records: &[Record]) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    let find = |runs: &mut Vec<Run>, id: &str| runs.iter().position(|r| r.id == id);
    for record in records {
        match record {
            Record::RunStarted { run_id, resume_of, user, machine, at, .. } => runs.push(Run {
                id: run_id.clone(),
                started: at.clone(),
                by: format!("{user}@{machine}"),
                resume_of: resume_of.clone(),
                outcome: None,
                paused_after: None,
                hosts: Vec::new(),
            }),
            Record::Step { run_id, host: Some(host), outcome, .. } => {
                if let Some(i) = find(&mut runs, run_id) {
                    let failed = matches!(outcome, Outcome::Failed | Outcome::Cancelled);
                    match runs[i].hosts.iter_mut().find(|(h, _)| h == host) {
                        Some(entry) => entry.1 |= failed,
                        None => runs[i].hosts.push((host.clone(), failed)),
                    }
                }
            }
            Record::Paused { run_id, after_batch, batches, .. } => {
                if let Some(i) = find(&mut runs, run_id) {
                    runs[i].paused_after = Some((*after_batch, *batches));
                }
            }
            Record::RunFinished { run_id, outcome, .. } => {
                if let Some(i) = find(&mut runs, run_id) {
                    runs[i].outcome = Some(*outcome);
                }
            }
            Record::Step { .. } | Record::Preflight { .. } | Record::Guard { .. } => {}
        }
    }
    runs
}

fn table(runs: &[Run], width: Option<u16>) -> String {
    let mut table = comfy_table::Table::new();
    table.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
    match width {
        Some(width) => {
            table.set_content_arrangement(comfy_table::ContentArrangement::Dynamic).set_width(width);
        }
        None => {
            table.set_content_arrangement(comfy_table::ContentArrangement::Disabled);
        }
    }
    table.set_header(["run", "started", "by", "outcome", "hosts"]);
    for run in runs {
        let outcome = match (run.outcome, run.paused_after) {
            (Some(RunOutcome::Paused), Some((after, of))) => format!("paused after batch {after} of {of}"),
            (Some(RunOutcome::Paused), None) => "paused".into(),
            (Some(RunOutcome::Succeeded), _) => "succeeded".into(),
            (Some(RunOutcome::Halted), _) => "halted".into(),
            (Some(RunOutcome::CompletedWithFailures), _) => "completed with failed hosts".into(),
            (Some(RunOutcome::Interrupted), _) => "interrupted".into(),
            (None, _) => "did not finish".into(),
        };
        let outcome = match &run.resume_of {
            Some(of) => format!("{outcome} (resumed {of})"),
            None => outcome,
        };
        let hosts = if run.hosts.is_empty() {
            "none".to_string()
        } else {
            run.hosts
                .iter()
                .map(|(h, failed)| if *failed { format!("{h} (failed)") } else { h.clone() })
                .collect::<Vec<_>>()
                .join(", ")
        };
        table.add_row([run.id.clone(), run.started.clone(), run.by.clone(), outcome, hosts]);
    }
    let mut text = table.to_string();
    text.push('\n');
    text
}
