//! Turns the one event stream of a run into everything an operator reads: the live view
//! on a terminal, timestamped plain lines without one, JSON lines for machines, a log
//! file per host, the journal, and the summary at the end.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use indexmap::IndexMap;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::events::{Event, Outcome, RunOutcome};
use crate::execute::RunResult;
use crate::graph::{ExecutionPlan, Phase};
use crate::journal;
use crate::text::plural;

/// How the run is shown on standard output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A terminal: progress bar, a line per host in flight, the summary table.
    Live,
    /// Not a terminal: one timestamped line per event.
    Plain,
    /// `--output json`: one JSON object per line per event.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    /// `-q`: failures and the summary.
    Quiet,
    Normal,
    /// `-v`: also every line the commands print.
    Verbose,
}

pub struct Reporter {
    exec: Arc<ExecutionPlan>,
    mode: Mode,
    verbosity: Verbosity,
    color: bool,
    log_dir: PathBuf,
    dry_run: bool,
    logs: HashMap<String, Option<File>>,
    /// Host → its log's file name, one per host (see `log_file_names`).
    log_names: HashMap<String, String>,
    journal: Option<journal::Writer>,
    /// Asked to halt the run when the journal cannot be written.
    halt: Option<crate::execute::Halt>,
    /// A per-host log file could not be written: said once.
    log_warned: bool,
    live: Option<Live>,
    batch_position: usize,
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
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        exec: Arc<ExecutionPlan>,
        mode: Mode,
        verbosity: Verbosity,
        color: bool,
        log_dir: PathBuf,
        journal: Option<journal::Writer>,
        dry_run: bool,
    ) -> Self {
        let live = (mode == Mode::Live).then(|| Live::new(&exec));
        let log_names = log_file_names(exec.hosts.iter().map(|h| h.name.as_str()));
        Reporter {
            exec,
            mode,
            verbosity,
            color,
            log_dir,
            dry_run,
            logs: HashMap::new(),
            log_names,
            journal,
            halt: None,
            log_warned: false,
            live,
            batch_position: 0,
            summary: Summary { dry_run, ..Summary::default() },
        }
    }

    /// A journal that cannot be written halts the run before its next batch.
    pub fn halting_on_journal_failure(mut self, halt: crate::execute::Halt) -> Self {
        self.halt = Some(halt);
        self
    }

    pub async fn consume(mut self, mut events: UnboundedReceiver<Event>) -> Summary {
        let mut stdout = crate::redact::stdout();
        while let Some(event) = events.recv().await {
            let now = SystemTime::now();
            if let Some(j) = &mut self.journal
                && let Err(e) = j.event(&event, now)
            {
                self.journal = None;
                let reason =
                    format!("{e}: nothing new is started, since a run planrun cannot record is one it cannot resume");
                eprintln!("error: {reason}");
                if let Some(halt) = &self.halt {
                    halt.request(reason);
                }
            }
            if let Event::BatchStarted { .. } = event {
                self.batch_position += 1;
            }
            self.log(&event, now);
            match self.mode {
                Mode::Json => {
                    let _ = writeln!(stdout, "{}", event.to_json_line(now));
                }
                Mode::Plain => {
                    if self.shows(&event)
                        && let Some(line) = self.line(&event)
                    {
                        let _ = writeln!(stdout, "{} {line}", clock(now));
                    }
                }
                Mode::Live => {
                    let line = if self.shows_live(&event) { self.line(&event) } else { None };
                    if let Some(live) = &mut self.live {
                        live.update(&event);
                        if let Some(line) = line {
                            live.println(&paint(&line, &event, self.color));
                        }
                    }
                }
            }
            self.record(&event);
        }
        if let Some(live) = self.live.take() {
            live.finish();
        }
        let _ = stdout.flush();
        self.summary
    }

    fn shows(&self, event: &Event) -> bool {
        match self.verbosity {
            Verbosity::Verbose => true,
            Verbosity::Normal => !matches!(event, Event::Output { .. }),
            Verbosity::Quiet => matches!(
                event,
                Event::HostFailed { .. }
                    | Event::Stopping { .. }
                    | Event::StepFinished { outcome: Outcome::Failed | Outcome::Cancelled, .. }
            ),
        }
    }

    /// The live view shows progress in its bars; above them only what needs reading.
    fn shows_live(&self, event: &Event) -> bool {
        match event {
            Event::Output { .. } => self.verbosity == Verbosity::Verbose,
            Event::StepStarted { .. } | Event::PhaseStarted { .. } => self.verbosity == Verbosity::Verbose,
            Event::StepFinished { outcome: Outcome::Ok | Outcome::Skipped, .. } => self.verbosity == Verbosity::Verbose,
            Event::RunFinished { .. } => false,
            _ => self.shows(event),
        }
    }

    fn line(&self, event: &Event) -> Option<String> {
        let who = |host: &Option<String>| host.clone().unwrap_or_else(|| "local".into());
        Some(match event {
            Event::RunStarted { plan, application, hosts, batches, steps, dry_run, resume_of, .. } => format!(
                "{}{plan}: `{application}` on {} in {}, {}{}",
                if *dry_run { "dry run of " } else { "apply " },
                plural(*hosts, "host", "hosts"),
                plural(*batches, "batch", "batches"),
                plural(*steps, "step", "steps"),
                resume_of.as_ref().map(|r| format!(", resuming run {r}")).unwrap_or_default()
            ),
            Event::PhaseStarted { phase } => format!("{} steps", phase_name(*phase)),
            Event::BatchStarted { hosts, .. } => {
                format!("batch {}/{}: {}", self.batch_position, self.exec.batches.len(), hosts.join(", "))
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
            Event::RunFinished { outcome, duration, .. } => {
                format!("run finished: {} in {}", outcome_name(*outcome), secs(*duration))
            }
        })
    }

    /// Each host's events also go to `.planrun/runs/RUN/HOST.log`, command output
    /// included, so a long rollout can be read per host afterwards.
    fn log(&mut self, event: &Event, now: SystemTime) {
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
        let mut failure = None;
        let name = self.log_names.get(&host).cloned().unwrap_or_else(|| file_name(&host));
        let file = self.logs.entry(host.clone()).or_insert_with(|| {
            let path = dir.join(format!("{name}.log"));
            match std::fs::create_dir_all(&dir).and_then(|()| File::create(&path)) {
                Ok(f) => Some(f),
                Err(e) => {
                    failure = Some(format!("cannot write `{}`: {e}", path.display()));
                    None
                }
            }
        });
        if let Some(f) = file
            && let Err(e) = writeln!(f, "{} {line}", clock(now))
        {
            failure = Some(format!("cannot write the log of {host}: {e}"));
            self.logs.insert(host.clone(), None);
        }
        if let Some(why) = failure
            && !self.log_warned
        {
            self.log_warned = true;
            eprintln!("warning: {why}; per-host logs may be incomplete (the journal is unaffected)");
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

/// The terminal view: an overall bar and a line per host in flight.
struct Live {
    multi: MultiProgress,
    overall: ProgressBar,
    hosts: HashMap<String, (ProgressBar, usize)>,
    total_hosts: usize,
    hosts_done: usize,
    /// Rollout steps per host, to know when a host is done.
    per_host: HashMap<String, usize>,
}

impl Live {
    fn new(exec: &ExecutionPlan) -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        let overall = multi.add(ProgressBar::new(exec.step_count() as u64));
        overall.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30.cyan/blue}] {pos}/{len} steps · {msg} · eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        let mut per_host = HashMap::new();
        for batch in &exec.batches {
            for h in &batch.hosts {
                per_host.insert(exec.hosts[h.host].name.clone(), h.steps.len());
            }
        }
        let total_hosts = per_host.len();
        overall.set_message(format!("0/{total_hosts} hosts done"));
        overall.enable_steady_tick(Duration::from_millis(200));
        Live { multi, overall, hosts: HashMap::new(), total_hosts, hosts_done: 0, per_host }
    }

    fn println(&self, line: &str) {
        let _ = self.multi.println(line);
    }

    fn update(&mut self, event: &Event) {
        match event {
            Event::StepStarted { host: Some(host), step, phase: Phase::Rollout, .. } => {
                let entry = self.hosts.entry(host.clone()).or_insert_with(|| {
                    let bar = self.multi.add(ProgressBar::new_spinner());
                    bar.set_style(
                        ProgressStyle::with_template("  {spinner} {prefix:<16} {msg:<20} {elapsed}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    bar.set_prefix(host.clone());
                    bar.enable_steady_tick(Duration::from_millis(120));
                    (bar, 0)
                });
                entry.0.set_message(step.clone());
                // The time shown is the current step's: a long one is what needs noticing.
                entry.0.reset_elapsed();
            }
            Event::StepFinished { host, phase, outcome, .. } => {
                self.overall.inc(1);
                let Some(host) = host else { return };
                if *phase != Phase::Rollout {
                    return;
                }
                let failed = matches!(outcome, Outcome::Failed | Outcome::Cancelled);
                let finished = match self.hosts.get_mut(host) {
                    Some((bar, done)) => {
                        *done += 1;
                        let all = self.per_host.get(host).copied().unwrap_or(0);
                        if failed || *done >= all {
                            bar.finish_and_clear();
                            true
                        } else {
                            false
                        }
                    }
                    None => false,
                };
                if finished {
                    if let Some((bar, _)) = self.hosts.remove(host) {
                        self.multi.remove(&bar);
                    }
                    self.hosts_done += 1;
                    self.overall.set_message(format!("{}/{} hosts done", self.hosts_done, self.total_hosts));
                }
            }
            _ => {}
        }
    }

    fn finish(self) {
        for (bar, _) in self.hosts.values() {
            bar.finish_and_clear();
        }
        self.overall.finish_and_clear();
        let _ = self.multi.clear();
    }
}

/// Failures in red on a terminal that wants color.
fn paint(line: &str, event: &Event, color: bool) -> String {
    let bad = matches!(
        event,
        Event::HostFailed { .. } | Event::StepFinished { outcome: Outcome::Failed | Outcome::Cancelled, .. }
    );
    if color && bad { format!("\x1b[31m{line}\x1b[0m") } else { line.to_string() }
}

impl Summary {
    pub fn render(&self, result: &RunResult, resume_hint: Option<&str>, log_dir: &Path) -> String {
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
                format!(
                    "rollout completed with {} (within max_failed_hosts)",
                    plural(failed, "failed host", "failed hosts")
                )
            }
            RunOutcome::Halted => format!("rollout HALTED: {} failed", plural(failed, "host", "hosts")),
            RunOutcome::Interrupted => "rollout INTERRUPTED: nothing new was started after the interrupt".to_string(),
        };
        out.push_str(&format!("{verdict} in {}\n", secs(result.duration)));
        if let Some(reason) = &result.halt_reason {
            out.push_str(&format!("  {reason}\n"));
        }
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
            if let Some(hint) = resume_hint {
                out.push_str(&format!("  to continue where it stopped: {hint}\n"));
            }
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

fn outcome_name(outcome: RunOutcome) -> &'static str {
    match outcome {
        RunOutcome::Succeeded => "succeeded",
        RunOutcome::Halted => "halted",
        RunOutcome::CompletedWithFailures => "completed with failures",
        RunOutcome::Interrupted => "interrupted",
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// `18:58:12.345`, UTC: plain lines are for logs, where a fixed zone reads best.
fn clock(at: SystemTime) -> String {
    let stamp = humantime::format_rfc3339_millis(at).to_string();
    stamp.get(11..23).unwrap_or(&stamp).to_string()
}

/// Host names come from plans; keep log file names to safe characters.
/// A log file name for each host, no two alike (nor alike but for case, for the file
/// systems that ignore it): `app/1`, `app_1` and `app:1` would all be `app_1`. A name
/// that is already a safe file name keeps it; the others (and any still taken) get a
/// short hash of the host's name, stable from run to run: `app_1-5d41402a`.
fn log_file_names<'a>(hosts: impl Iterator<Item = &'a str>) -> HashMap<String, String> {
    use sha2::{Digest, Sha256};
    // Far below the 255 bytes a file name may have, with room for the hash and `.log`.
    const MAX_STEM: usize = 200;
    let hosts: Vec<&str> = hosts.collect();
    let mut taken = std::collections::HashSet::new();
    let mut names = HashMap::with_capacity(hosts.len());
    let mut renamed = Vec::new();
    for host in &hosts {
        let safe = file_name(host);
        if safe == *host && safe.len() <= MAX_STEM && taken.insert(safe.to_lowercase()) {
            names.insert(host.to_string(), safe);
        } else {
            renamed.push(*host);
        }
    }
    for host in renamed {
        let mut stem = file_name(host);
        let mut cut = stem.len().min(MAX_STEM);
        while !stem.is_char_boundary(cut) {
            cut -= 1;
        }
        stem.truncate(cut);
        let hash = Sha256::digest(host.as_bytes());
        let mut name = format!("{stem}-{:02x}{:02x}{:02x}{:02x}", hash[0], hash[1], hash[2], hash[3]);
        let mut n = 2;
        while !taken.insert(name.to_lowercase()) {
            name = format!("{stem}-{:02x}{:02x}{:02x}{:02x}-{n}", hash[0], hash[1], hash[2], hash[3]);
            n += 1;
        }
        names.insert(host.to_string(), name);
    }
    names
}

fn file_name(host: &str) -> String {
    host.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' }).collect()
}
