//! Turns the event stream into what an operator reads: one plain line per event, a log
//! file per host, and the summary at the end.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::events::{Event, Outcome, RunOutcome};
use crate::execute::RunResult;
use crate::graph::{ExecutionPlan, Phase};

pub struct Reporter {
    exec: Arc<ExecutionPlan>,
    log_dir: PathBuf,
    dry_run: bool,
    started: Instant,
    logs: HashMap<String, Option<File>>,
    summary: Summary,
}

/// What the summary table needs, gathered from the events.
#[derive(Default)]
pub struct Summary {
    /// host → step → (outcome, duration), in the order they ran.
    cells: IndexMap<String, IndexMap<String, (Outcome, Duration)>>,
    steps: Vec<String>,
    dry_run: bool,
}

impl Reporter {
    pub fn new(exec: Arc<ExecutionPlan>, log_dir: PathBuf, dry_run: bool) -> Self {
        Reporter {
            exec,
            log_dir,
            dry_run,
            started: Instant::now(),
            logs: HashMap::new(),
            summary: Summary { dry_run, ..Summary::default() },
        }
    }

    pub async fn consume(mut self, mut events: UnboundedReceiver<Event>) -> Summary {
        let mut stdout = std::io::stdout();
        while let Some(event) = events.recv().await {
            self.log(&event);
            if let Some(line) = self.line(&event) {
                let _ = writeln!(stdout, "[{:>7.1}s] {line}", self.started.elapsed().as_secs_f64());
            }
            self.record(&event);
        }
        let _ = stdout.flush();
        self.summary
    }

    fn line(&self, event: &Event) -> Option<String> {
        let who = |host: &Option<String>| host.clone().unwrap_or_else(|| "local".into());
        Some(match event {
            Event::RunStarted { plan, application, hosts, batches, dry_run, .. } => format!(
                "{}{plan}: rolling `{application}` on {hosts} host{} in {batches} batch{}",
                if *dry_run { "dry run of " } else { "apply " },
                if *hosts == 1 { "" } else { "s" },
                if *batches == 1 { "" } else { "es" }
            ),
            Event::PhaseStarted { phase } => format!("{} steps", phase_name(*phase)),
            Event::BatchStarted { batch, hosts } => {
                format!("batch {}/{}: {}", batch + 1, self.exec.batches.len(), hosts.join(", "))
            }
            Event::StepStarted { host, step, description, .. } => {
                format!("{} {step}: {}{description}", who(host), if self.dry_run { "would " } else { "" })
            }
            Event::Output { host, line, .. } => format!("{} | {line}", who(host)),
            Event::StepRetry { host, step, attempt, reason } => {
                format!("{} {step}: retrying (attempt {attempt}): {reason}", who(host))
            }
            Event::StepFinished { host, step, outcome, duration, error, .. } => match outcome {
                Outcome::Skipped => return None,
                Outcome::Ok => format!("{} {step}: ok in {}", who(host), secs(*duration)),
                Outcome::FailedIgnored => format!(
                    "{} {step}: failed in {}, continuing (continue_on_error): {}",
                    who(host),
                    secs(*duration),
                    error.as_deref().unwrap_or("")
                ),
                Outcome::Failed => {
                    format!("{} {step}: FAILED in {}: {}", who(host), secs(*duration), error.as_deref().unwrap_or(""))
                }
                Outcome::Cancelled => format!("{} {step}: cancelled after {}", who(host), secs(*duration)),
            },
            Event::HostFailed { host, step, .. } => format!("{host}: failed at `{step}`; left as it is"),
            Event::Stopping { reason } => format!("stopping: {reason}"),
            Event::RunFinished { .. } => return None,
        })
    }

    /// Each host's events also go to `.planrun/runs/RUN/HOST.log`, so the output of a
    /// long rollout can be read per host afterwards.
    fn log(&mut self, event: &Event) {
        if self.dry_run {
            return;
        }
        let host = match event {
            Event::StepStarted { host: Some(h), .. }
            | Event::Output { host: Some(h), .. }
            | Event::StepFinished { host: Some(h), .. }
            | Event::StepRetry { host: Some(h), .. } => h.clone(),
            Event::HostFailed { host, .. } => host.clone(),
            _ => return,
        };
        let Some(line) = self.line(event) else { return };
        let dir = self.log_dir.clone();
        let file = self.logs.entry(host.clone()).or_insert_with(|| {
            std::fs::create_dir_all(&dir).ok()?;
            File::create(dir.join(format!("{}.log", file_name(&host)))).ok()
        });
        if let Some(f) = file {
            let _ = writeln!(f, "[{:>7.1}s] {line}", self.started.elapsed().as_secs_f64());
        }
    }

    fn record(&mut self, event: &Event) {
        if let Event::StepFinished { host: Some(host), step, phase: Phase::Rollout, outcome, duration, .. } = event {
            if !self.summary.steps.contains(step) {
                self.summary.steps.push(step.clone());
            }
            self.summary.cells.entry(host.clone()).or_default().insert(step.clone(), (*outcome, *duration));
        }
    }
}

impl Summary {
    pub fn render(&self, result: &RunResult, plan: &Path, log_dir: &Path) -> String {
        let mut out = String::new();
        if !self.cells.is_empty() && !self.dry_run {
            out.push('\n');
            out.push_str(&self.table());
        }
        out.push('\n');
        let failed = result.failures.len();
        let verdict = match result.outcome {
            RunOutcome::Succeeded if self.dry_run => "dry run complete: nothing was changed".to_string(),
            RunOutcome::Succeeded => "rollout succeeded".to_string(),
            RunOutcome::CompletedWithFailures => {
                format!("rollout completed with {failed} failed host{} (within max_failed_hosts)", plural(failed))
            }
            RunOutcome::Halted => format!("rollout HALTED: {failed} host{} failed", plural(failed)),
            RunOutcome::Interrupted => "rollout INTERRUPTED: nothing new was started after the interrupt".to_string(),
        };
        out.push_str(&format!("{verdict} in {}\n", secs(result.duration)));
        for f in &result.failures {
            out.push_str(&format!("  {} failed at `{}`: {}\n", f.host, f.step, f.error));
            for line in &f.last_lines {
                out.push_str(&format!("    | {line}\n"));
            }
        }
        if !result.failures.is_empty() {
            out.push_str(
                "  failed hosts were left where they failed: check them before putting them back in rotation\n",
            );
        }
        if !result.cancelled_hosts.is_empty() {
            out.push_str(&format!(
                "  cancelled mid-step, may be between states: {}\n",
                result.cancelled_hosts.join(", ")
            ));
        }
        if !self.dry_run && result.outcome != RunOutcome::Succeeded {
            out.push_str(&format!("  logs: {}\n", log_dir.display()));
            let _ = plan;
        }
        out
    }

    /// Hosts × steps with outcome and duration.
    fn table(&self) -> String {
        let mut rows = vec![std::iter::once("host".to_string()).chain(self.steps.iter().cloned()).collect::<Vec<_>>()];
        for (host, cells) in &self.cells {
            let mut row = vec![host.clone()];
            for step in &self.steps {
                row.push(match cells.get(step) {
                    Some((Outcome::Ok, d)) => format!("ok {}", secs(*d)),
                    Some((Outcome::Failed, d)) => format!("FAILED {}", secs(*d)),
                    Some((Outcome::FailedIgnored, d)) => format!("failed* {}", secs(*d)),
                    Some((Outcome::Cancelled, d)) => format!("cancelled {}", secs(*d)),
                    Some((Outcome::Skipped, _)) => "skipped".into(),
                    None => "-".into(),
                });
            }
            rows.push(row);
        }
        let columns = rows[0].len();
        let widths: Vec<usize> = (0..columns)
            .map(|c| rows.iter().map(|r| r.get(c).map_or(0, |s| s.chars().count())).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for row in rows {
            let cells: Vec<String> = row.iter().enumerate().map(|(c, s)| format!("{s:<w$}", w = widths[c])).collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
        }
        out
    }
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Before => "before",
        Phase::Rollout => "rollout",
        Phase::After => "after",
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// Host names come from plans; keep log file names to safe characters.
fn file_name(host: &str) -> String {
    host.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' }).collect()
}
