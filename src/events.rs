//! What happens during an apply, as one stream of typed events.
//!
//! The executor only emits events; every output (the plain log, the summary, log files
//! per host) consumes this one stream, so they can never disagree about what happened.

use std::collections::VecDeque;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;

use crate::graph::Phase;
use crate::redact::Redactor;
use crate::transport::{OutputLine, Stream};

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Failed,
    /// Failed, but the step has `continue_on_error`.
    FailedIgnored,
    /// `--dry-run`: rendered and walked, not run.
    Skipped,
    /// Cancelled by a second Ctrl-C.
    Cancelled,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    Succeeded,
    /// More hosts failed than `max_failed_hosts`, or `before`/`after` failed.
    Halted,
    /// Some hosts failed, no more than `max_failed_hosts`.
    CompletedWithFailures,
    Interrupted,
    /// Stopped at a `pause_after` batch, every node back in rotation: `--resume` goes on.
    Paused,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        run_id: String,
        plan: String,
        application: String,
        hosts: usize,
        batches: usize,
        /// Step instances this run will run (after `--resume` left out what was done).
        steps: usize,
        dry_run: bool,
        /// The run this one resumes.
        resume_of: Option<String>,
    },
    PhaseStarted {
        phase: Phase,
    },
    BatchStarted {
        batch: usize,
        hosts: Vec<String>,
    },
    StepStarted {
        /// `None` for `local` steps of `before` and `after`.
        host: Option<String>,
        step: String,
        phase: Phase,
        /// The step's position in its list of the plan.
        index: usize,
        /// What runs, for the log: the command, the balancer call or the check.
        description: String,
    },
    Output {
        host: Option<String>,
        step: String,
        stream: &'static str,
        line: String,
    },
    /// A retry of a failing step.
    StepRetry {
        host: Option<String>,
        step: String,
        attempt: u32,
        reason: String,
    },
    StepFinished {
        host: Option<String>,
        step: String,
        phase: Phase,
        index: usize,
        outcome: Outcome,
        #[serde(serialize_with = "secs")]
        duration: Duration,
        exit_code: Option<u32>,
        /// Why it failed, for people.
        error: Option<String>,
    },
    HostFailed {
        host: String,
        step: String,
        error: String,
        /// The last lines the failing step printed.
        last_lines: Vec<String>,
    },
    /// The run stopped at a pause after batch `after_batch` (1-based) of `batches`.
    Paused {
        after_batch: usize,
        batches: usize,
    },
    /// First Ctrl-C: nothing new starts.
    Stopping {
        reason: String,
    },
    RunFinished {
        outcome: RunOutcome,
        #[serde(serialize_with = "secs")]
        duration: Duration,
        failed_hosts: Vec<String>,
    },
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1000.0).round() / 1000.0)
}

/// The version of the JSON event shape (`--output json`); bumped on any change that is
/// not a new optional field.
pub const EVENT_VERSION: u32 = 1;

impl Event {
    /// Masks secrets in every text the event carries.
    pub fn redact(&mut self, r: &Redactor) {
        if r.is_empty() {
            return;
        }
        let texts: Vec<&mut String> = match self {
            Event::RunStarted { plan, application, .. } => vec![plan, application],
            Event::PhaseStarted { .. } | Event::Paused { .. } | Event::RunFinished { .. } => vec![],
            Event::BatchStarted { hosts, .. } => hosts.iter_mut().collect(),
            Event::StepStarted { description, .. } => vec![description],
            Event::Output { line, .. } => vec![line],
            Event::StepRetry { reason, .. } => vec![reason],
            Event::StepFinished { error, .. } => error.iter_mut().collect(),
            Event::HostFailed { error, last_lines, .. } => {
                std::iter::once(error).chain(last_lines.iter_mut()).collect()
            }
            Event::Stopping { reason } => vec![reason],
        };
        for t in texts {
            r.redact_in_place(t);
        }
    }

    /// The line `--output json` prints: `{"v":1,"ts":"…","event":"…",…}`.
    pub fn to_json_line(&self, at: std::time::SystemTime) -> String {
        let mut line = serde_json::Map::new();
        line.insert("v".into(), EVENT_VERSION.into());
        line.insert("ts".into(), humantime::format_rfc3339_millis(at).to_string().into());
        if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(self) {
            line.extend(fields);
        }
        serde_json::Value::Object(line).to_string()
    }
}

/// The one way events leave the executor and the balancers: every event is redacted
/// here, at its source, so no consumer can forget to mask a secret.
#[derive(Clone)]
pub struct Emitter {
    sender: UnboundedSender<Event>,
    redactor: Redactor,
}

impl Emitter {
    pub fn new(sender: UnboundedSender<Event>, redactor: Redactor) -> Self {
        Emitter { sender, redactor }
    }

    pub fn emit(&self, mut event: Event) {
        event.redact(&self.redactor);
        // A reporter that went away must not stop a rollout halfway.
        let _ = self.sender.send(event);
    }

    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// Where the output of one step goes.
    pub fn step_output(&self, host: Option<String>, step: String) -> StepOutput {
        StepOutput { emitter: self.clone(), host, step, last: VecDeque::new() }
    }
}

/// How many output lines of a failing step the summary shows.
const LAST_LINES: usize = 10;

/// The output of one step: forwarded as events, the last lines kept for the summary.
pub struct StepOutput {
    emitter: Emitter,
    host: Option<String>,
    step: String,
    last: VecDeque<String>,
}

impl StepOutput {
    pub fn line(&mut self, mut line: OutputLine) {
        // Masked before it is kept: the summary's last lines do not travel as events.
        self.emitter.redactor.redact_in_place(&mut line.line);
        if self.last.len() == LAST_LINES {
            self.last.pop_front();
        }
        self.last.push_back(line.line.clone());
        self.emitter.emit(Event::Output {
            host: self.host.clone(),
            step: self.step.clone(),
            stream: match line.stream {
                Stream::Stdout => "stdout",
                Stream::Stderr => "stderr",
            },
            line: line.line,
        });
    }

    /// A line planrun itself says about the step (a failed check, a balancer answer).
    pub fn note(&mut self, text: String) {
        self.line(OutputLine { stream: Stream::Stderr, line: text });
    }

    pub fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }

    /// Whether one of the last lines contains `text`.
    pub fn last_lines_contain(&self, text: &str) -> bool {
        self.last.iter().any(|line| line.contains(text))
    }

    pub fn last_lines(&self) -> Vec<String> {
        self.last.iter().cloned().collect()
    }
}
