//! Turns the one event stream of a run into everything an operator reads: the live view
//! on a terminal, timestamped plain lines without one, JSON lines for machines, a log
//! file per host, the journal, and the summary at the end.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::events::{Event, EventReceiver, Outcome, RunOutcome};
use crate::execute::{Recovery, RunResult};
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
    /// Buffered, and flushed whenever the reporter has caught up: a line per write
    /// made 1 GB of output cost tens of millions of system calls.
    logs: HashMap<String, Option<BufWriter<File>>>,
    /// Host → its log's file name, one per host (see `log_file_names`).
    log_names: HashMap<String, String>,
    journal: Option<journal::Writer>,
    /// Asked to halt the run when the journal cannot be written.
    halt: Option<crate::execute::Halt>,
    /// A per-host log file could not be written: said once.
    log_warned: bool,
    live: Option<Live>,
    batch_position: usize,
    /// A host failed: a pause leaves it where it failed.
    hosts_failed: bool,
    summary: Summary,
}

/// What the summary table needs, gathered from the events.
#[derive(Default)]
pub struct Summary {
    /// host → step → (outcome, duration).
    cells: HashMap<String, HashMap<String, (Outcome, Duration)>>,
    /// The hosts this run visits, in rollout order: the table's rows, whether or not
    /// they started.
    hosts: Vec<String>,
    /// The rollout steps of this run, in the plan's order: the table's columns.
    steps: Vec<String>,
    dry_run: bool,
    /// "rollback" or "rollout": what the verdict calls the run.
    what: &'static str,
    /// The traffic guard's numbers for the whole run.
    guard: Option<crate::guard::Counts>,
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
        let summary = Summary::of(&exec, dry_run);
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
            hosts_failed: false,
            summary,
        }
    }

    /// A journal that cannot be written halts the run before its next batch.
    pub fn halting_on_journal_failure(mut self, halt: crate::execute::Halt) -> Self {
        self.halt = Some(halt);
        self
    }

    pub async fn consume(mut self, mut events: EventReceiver) -> Summary {
        let mut stdout = crate::redact::stdout();
        while let Some(event) = events.recv().await {
            let now = SystemTime::now();
            if let Some(j) = &mut self.journal
                && let Err(e) = j.event(&event, now)
            {
                self.journal = None;
                let reason =
                    format!("{e}: nothing new is started, since a run planrun cannot record is one it cannot resume");
                notice(&format!("error: {reason}"));
                if let Some(halt) = &self.halt {
                    halt.request(reason);
                }
            }
            if let Event::BatchStarted { .. } = event {
                self.batch_position += 1;
            }
            self.hosts_failed |= matches!(event, Event::HostFailed { .. });
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
            if events.is_empty() {
                self.flush_logs();
            }
        }
        self.flush_logs();
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
                    | Event::OnFailureFinished { .. }
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
            // Already on the screen, as the signal's notice.
            Event::Stopping { .. } => false,
            _ => self.shows(event),
        }
    }

    /// Whether `host` has `rollout.on_failure` steps to run when it fails.
    fn has_on_failure(&self, host: &str) -> bool {
        self.exec
            .batches
            .iter()
            .flat_map(|b| &b.hosts)
            .any(|h| !h.on_failure.is_empty() && self.exec.hosts[h.host].name == host)
    }

    fn line(&self, event: &Event) -> Option<String> {
        let who = |host: &Option<String>| host.clone().unwrap_or_else(|| "local".into());
        Some(match event {
            Event::RunStarted { plan, application, hosts, batches, steps, dry_run, resume_of, .. } => format!(
                "{}{plan}: `{application}` on {} in {}, {}{}",
                match (*dry_run, self.exec.is_rollback()) {
                    (true, false) => "dry run of ",
                    (true, true) => "dry run of the rollback of ",
                    (false, false) => "apply ",
                    (false, true) => "rollback ",
                },
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
            Event::HostFailed { host, step, .. } if self.has_on_failure(host) => {
                format!("{host}: failed at `{step}`; running its on_failure steps")
            }
            Event::HostFailed { host, step, .. } => format!("{host}: failed at `{step}`; left as it is"),
            Event::OnFailureFinished { host, restored: true, .. } => {
                format!("{host}: restored by on_failure: back in rotation")
            }
            Event::OnFailureFinished { host, error, .. } => {
                format!("{host}: not restored: {}; left as it is", error.as_deref().unwrap_or("on_failure failed"))
            }
            Event::Stopping { reason } => format!("stopping: {reason}"),
            Event::Paused { after_batch, batches } => {
                let but = if self.hosts_failed { " but the failed hosts'" } else { "" };
                format!("paused after batch {after_batch} of {batches}: every node is in rotation{but}")
            }
            Event::Guard { halt: Some(reason), .. } => reason.clone(),
            Event::Guard { batch: Some(batch), counts, .. } => {
                let mut lines = crate::guard::summary_lines(counts);
                if let Some(first) = lines.first_mut() {
                    let probes = crate::guard::grouped(counts.probes);
                    *first = format!(
                        "batch {}: guard: {} failed of {probes} probes during the batch",
                        batch + 1,
                        crate::guard::grouped(counts.failed)
                    );
                }
                lines.join("; ")
            }
            Event::Guard { .. } => return None,
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
            Event::HostFailed { host, .. } | Event::OnFailureFinished { host, .. } => host.clone(),
            _ => return,
        };
        let Some(line) = self.line(event) else { return };
        let dir = self.log_dir.clone();
        let mut failure = None;
        let name = self.log_names.get(&host).cloned().unwrap_or_else(|| file_name(&host));
        let file = self.logs.entry(host.clone()).or_insert_with(|| {
            let path = dir.join(format!("{name}.log"));
            match std::fs::create_dir_all(&dir).and_then(|()| File::create(&path)) {
                Ok(f) => Some(BufWriter::with_capacity(64 * 1024, f)),
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
            notice(&format!("warning: {why}; per-host logs may be incomplete (the journal is unaffected)"));
        }
    }

    fn flush_logs(&mut self) {
        let mut failed = None;
        for (host, log) in &mut self.logs {
            if let Some(f) = log
                && let Err(e) = f.flush()
            {
                failed = Some((host.clone(), e));
            }
        }
        if let Some((host, e)) = failed {
            self.logs.insert(host.clone(), None);
            if !self.log_warned {
                self.log_warned = true;
                eprintln!(
                    "warning: cannot write the log of {host}: {e}; per-host logs may be incomplete (the journal is unaffected)"
                );
            }
        }
    }

    fn record(&mut self, event: &Event) {
        if let Event::Guard { batch: None, counts, .. } = event {
            self.summary.guard = Some(counts.clone());
        }
        if let Event::StepFinished { host: Some(host), step, phase, outcome, duration, .. } = event
            && phase.in_window()
        {
            self.summary.cells.entry(host.clone()).or_default().insert(step.clone(), (*outcome, *duration));
        }
    }
}

/// The live view's bars, while one is on screen: notices printed meanwhile go above
/// them through indicatif, so they are neither overwritten nor leave a frozen copy of
/// the bars behind.
static ON_SCREEN: Mutex<Option<MultiProgress>> = Mutex::new(None);

/// A notice for the operator (an interrupt, a host key learned, a balancer retrying, a
/// log that cannot be written): above the live view while there is one, on standard
/// error otherwise. Masked like everything planrun prints.
pub fn notice(text: &str) {
    let live = ON_SCREEN.lock().ok().and_then(|multi| multi.clone());
    match live {
        Some(multi) => {
            let text = crate::redact::process().redact(text);
            for line in wrap(&text, Some(screen_width())) {
                let _ = multi.println(line);
            }
        }
        None => {
            let _ = writeln!(crate::redact::stderr(), "{text}");
        }
    }
}

/// A notice that answers a key the operator pressed (Ctrl-C): the terminal echoed `^C`
/// on the line the notice would start on, so without a live view it starts below.
pub fn notice_after_keypress(text: &str) {
    let live = ON_SCREEN.lock().is_ok_and(|multi| multi.is_some());
    if live || !std::io::stderr().is_terminal() {
        notice(text);
    } else {
        notice(&format!("\n{text}"));
    }
}

/// Asks the operator on the terminal and reads a line (`None`: no answer could be read).
/// The live view's bars are taken off the screen and the terminal's echo is on while
/// the question waits, so the answer is seen where it is typed; the bars come back after.
pub fn ask(question: &str) -> Option<String> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    let live = ON_SCREEN.lock().ok().and_then(|multi| multi.clone());
    if let Some(multi) = &live {
        let _ = multi.clear();
        multi.set_draw_target(ProgressDrawTarget::hidden());
    }
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin).ok();
    if let Some(saved) = &saved {
        let mut echo = saved.clone();
        echo.local_flags.insert(LocalFlags::ECHO);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &echo);
    }
    let mut stderr = crate::redact::stderr();
    let _ = write!(stderr, "{question}");
    let _ = stderr.flush();
    let mut answer = String::new();
    let read = std::io::BufRead::read_line(&mut stdin.lock(), &mut answer);
    if let Some(saved) = &saved {
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, saved);
    }
    if let Some(multi) = &live {
        multi.set_draw_target(ProgressDrawTarget::stdout());
    }
    match read {
        Ok(n) if n > 0 => Some(answer),
        _ => None,
    }
}

/// The width the run's closing text is laid out for: the terminal's when standard
/// output is one, else `COLUMNS` when set, else none (a file or pipe gets whole lines).
pub fn output_width(terminal: bool) -> Option<u16> {
    if terminal {
        return Some(screen_width());
    }
    std::env::var("COLUMNS").ok().and_then(|c| c.trim().parse::<u16>().ok()).filter(|w| *w > 0)
}

/// The terminal's width, as indicatif sees it (80 when it cannot tell).
fn screen_width() -> u16 {
    console::Term::stdout().size_checked().map_or(80, |(_, w)| w).max(20)
}

/// Lines of at most `width` columns, broken between words; a continuation is indented
/// two more than its line, so it reads as part of it.
fn wrap(text: &str, width: Option<u16>) -> Vec<String> {
    let Some(width) = width else { return text.lines().map(String::from).collect() };
    let mut lines = Vec::new();
    for line in text.split('\n') {
        let indent: String = line.chars().take_while(|c| *c == ' ').collect();
        let rest = format!("{indent}  ");
        let options = textwrap::Options::new(usize::from(width)).subsequent_indent(&rest);
        lines.extend(textwrap::wrap(line, options).into_iter().map(|l| l.into_owned()));
    }
    lines
}

/// The terminal's echo, off while the live view is on screen. indicatif leaves the
/// cursor at the end of its last line; a `^C` the terminal echoes there wraps onto a new
/// line, indicatif then redraws one line too low, and a frozen copy of the bar stays
/// above. Restored when the view ends (or is dropped).
struct EchoOff(Option<nix::sys::termios::Termios>);

impl EchoOff {
    fn new() -> Self {
        use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return EchoOff(None);
        }
        let Ok(saved) = tcgetattr(&stdin) else { return EchoOff(None) };
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO | LocalFlags::ECHOCTL);
        match tcsetattr(&stdin, SetArg::TCSANOW, &quiet) {
            Ok(()) => EchoOff(Some(saved)),
            Err(_) => EchoOff(None),
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(saved) = self.0.take() {
            let _ = nix::sys::termios::tcsetattr(std::io::stdin(), nix::sys::termios::SetArg::TCSANOW, &saved);
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
    _echo: EchoOff,
}

impl Live {
    fn new(exec: &ExecutionPlan) -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        let overall = multi.add(ProgressBar::new(exec.step_count() as u64));
        // `wide_bar`: the bar takes what the terminal has left, so the line never wraps.
        overall.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{wide_bar:.cyan/blue}] {pos}/{len} steps · {msg} · eta {eta}",
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
        if let Ok(mut on_screen) = ON_SCREEN.lock() {
            *on_screen = Some(multi.clone());
        }
        let echo = EchoOff::new();
        Live { multi, overall, hosts: HashMap::new(), total_hosts, hosts_done: 0, per_host, _echo: echo }
    }

    fn println(&self, line: &str) {
        for line in wrap(line, Some(screen_width())) {
            let _ = self.multi.println(line);
        }
    }

    fn update(&mut self, event: &Event) {
        match event {
            Event::StepStarted { host: Some(host), step, phase, .. } if phase.in_window() => {
                let entry = self.hosts.entry(host.clone()).or_insert_with(|| {
                    let bar = self.multi.add(ProgressBar::new_spinner());
                    // `wide_msg`: a long step name is cut, never wrapped onto a second line.
                    bar.set_style(
                        ProgressStyle::with_template("  {spinner} {prefix:<16} {wide_msg} {elapsed:>4}")
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
                // The bar counts the steps a run plans; on_failure runs only on a failure.
                if *phase != Phase::OnFailure {
                    self.overall.inc(1);
                }
                let Some(host) = host else { return };
                if !phase.in_window() {
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
        if let Ok(mut on_screen) = ON_SCREEN.lock() {
            *on_screen = None;
        }
        for (bar, _) in self.hosts.values() {
            bar.finish_and_clear();
        }
        self.overall.finish_and_clear();
        let _ = self.multi.clear();
    }
}

/// Failures in red, when colour is wanted (`--color`, `NO_COLOR`, a terminal).
fn paint(line: &str, event: &Event, color: bool) -> String {
    let bad = matches!(
        event,
        Event::HostFailed { .. }
            | Event::OnFailureFinished { restored: false, .. }
            | Event::StepFinished { outcome: Outcome::Failed | Outcome::Cancelled, .. }
    );
    if bad { console::style(line).red().force_styling(color).to_string() } else { line.to_string() }
}

impl Summary {
    /// Rows and columns from the plan, so the table reads the same from run to run:
    /// hosts in rollout order, steps in the plan's order (a resume's too).
    fn of(exec: &ExecutionPlan, dry_run: bool) -> Self {
        let mut steps: Vec<(usize, String)> = Vec::new();
        let mut in_run = vec![false; exec.hosts.len()];
        for batch in &exec.batches {
            for host in &batch.hosts {
                in_run[host.host] = true;
                for s in &host.steps {
                    if !steps.iter().any(|(i, _)| *i == s.index) {
                        steps.push((s.index, s.step.clone()));
                    }
                }
            }
        }
        steps.sort();
        let hosts = exec.hosts.iter().zip(in_run).filter(|(_, visited)| *visited).map(|(h, _)| h.name.clone());
        Summary {
            cells: HashMap::new(),
            hosts: hosts.collect(),
            steps: steps.into_iter().map(|(_, name)| name).collect(),
            dry_run,
            what: if exec.is_rollback() { "rollback" } else { "rollout" },
            guard: None,
        }
    }

    /// The closing text: the table, the verdict, what failed and how to go on, laid out
    /// for `width` columns when given.
    pub fn render(&self, result: &RunResult, resume_hint: Option<&str>, log_dir: &Path, width: Option<u16>) -> String {
        let mut out = String::new();
        if !self.cells.is_empty() && !self.dry_run {
            out.push('\n');
            out.push_str(&self.table(width));
        }
        out.push('\n');
        let mut text = String::new();
        let failed = result.failures.len();
        let verdict = match result.outcome {
            RunOutcome::Succeeded if self.dry_run => "dry run complete: nothing was changed".to_string(),
            RunOutcome::Succeeded => format!("{} succeeded", self.what),
            RunOutcome::CompletedWithFailures => {
                format!(
                    "{} completed with {} (within max_failed_hosts)",
                    self.what,
                    plural(failed, "failed host", "failed hosts")
                )
            }
            RunOutcome::Halted => format!("{} HALTED: {} failed", self.what, plural(failed, "host", "hosts")),
            RunOutcome::Interrupted => {
                format!("{} INTERRUPTED: nothing new was started after the interrupt", self.what)
            }
            RunOutcome::Paused => {
                // A failed host (within `max_failed_hosts`) stays where it failed.
                let nodes = if failed == 0 {
                    "every node is in rotation"
                } else {
                    "every node is in rotation but the failed hosts'"
                };
                match result.paused_after {
                    Some((after, of)) => format!("rollout PAUSED after batch {after} of {of}: {nodes}"),
                    None => format!("rollout PAUSED: {nodes}"),
                }
            }
        };
        text.push_str(&format!("{verdict} in {}\n", secs(result.duration)));
        if let Some(reason) = &result.halt_reason {
            text.push_str(&format!("  {reason}\n"));
        }
        if let Some(counts) = &self.guard {
            for line in crate::guard::summary_lines(counts) {
                text.push_str(&format!("  {line}\n"));
            }
        }
        for f in &result.failures {
            text.push_str(&format!("  {} failed at `{}`: {}\n", f.host, f.step, f.error));
            for line in &f.last_lines {
                text.push_str(&format!("    | {line}\n"));
            }
            match &f.recovery {
                Some(Recovery::Restored) => text.push_str("    restored by on_failure: back in rotation\n"),
                Some(other) => text.push_str(&format!("    not restored: {}\n", other.why_not().unwrap_or_default())),
                None => {}
            }
        }
        if result.failures.iter().any(|f| f.recovery != Some(Recovery::Restored)) {
            text.push_str(
                "  failed hosts were left where they failed: check them before putting them back in rotation\n",
            );
        }
        if !result.cancelled_hosts.is_empty() {
            text.push_str(&format!(
                "  cancelled mid-step, may be between states: {}\n",
                result.cancelled_hosts.join(", ")
            ));
        }
        if !self.dry_run && result.outcome != RunOutcome::Succeeded {
            text.push_str(&format!("  logs: {}\n", log_dir.display()));
            if let Some(hint) = resume_hint {
                let what =
                    if result.outcome == RunOutcome::Paused { "to promote it" } else { "to continue where it stopped" };
                text.push_str(&format!("  {what}: {hint}\n"));
            }
        }
        for line in wrap(text.trim_end_matches('\n'), width) {
            out.push_str(&line);
            out.push('\n');
        }
        out
    }

    /// Hosts × steps with outcome and duration; a host the run never reached says so.
    fn table(&self, width: Option<u16>) -> String {
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
        table.set_header(std::iter::once("host").chain(self.steps.iter().map(String::as_str)));
        for host in &self.hosts {
            let mut row = vec![host.clone()];
            match self.cells.get(host) {
                None => {
                    row.push("not started".into());
                    row.extend(self.steps.iter().skip(1).map(|_| String::new()));
                }
                Some(cells) => row.extend(self.steps.iter().map(|step| match cells.get(step) {
                    Some((Outcome::Ok, d)) => format!("ok {}", secs(*d)),
                    Some((Outcome::Failed, d)) => format!("FAILED {}", secs(*d)),
                    Some((Outcome::FailedIgnored, d)) => format!("failed* {}", secs(*d)),
                    Some((Outcome::Cancelled, d)) => format!("cancelled {}", secs(*d)),
                    Some((Outcome::Skipped, _)) => "skipped".into(),
                    None => "-".into(),
                })),
            }
            table.add_row(row);
        }
        let mut out = table.to_string();
        out.push('\n');
        out
    }
}

fn phase_name(phase: Phase) -> &'static str {
    phase.name()
}

fn outcome_name(outcome: RunOutcome) -> &'static str {
    match outcome {
        RunOutcome::Succeeded => "succeeded",
        RunOutcome::Halted => "halted",
        RunOutcome::CompletedWithFailures => "completed with failures",
        RunOutcome::Interrupted => "interrupted",
        RunOutcome::Paused => "paused",
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
