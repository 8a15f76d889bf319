//! What happens during an apply, as one stream of typed events.
//!
//! The executor only emits events; every output (the plain log, the summary, log files
//! per host) consumes this one stream, so they can never disagree about what happened.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::graph::Phase;
use crate::redact::Redactor;
use crate::transport::{OnLine, OutputLine, Stream};

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
        /// `planrun rollback`; absent for an apply.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        rollback: bool,
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
    /// A failed host's `rollout.on_failure` steps ended: `restored` when they all
    /// succeeded and every node the host took out is back in rotation.
    OnFailureFinished {
        host: String,
        restored: bool,
        /// Why it was not restored: the step that failed, or the nodes still out.
        error: Option<String>,
    },
    /// The run stopped at a pause after batch `after_batch` (1-based) of `batches`.
    Paused {
        after_batch: usize,
        batches: usize,
    },
    /// The traffic guard's numbers: at the end of a batch (`batch`, 0-based, as in
    /// `batch_started`), or of the whole run (`batch` null); `halt` when it halts the run.
    Guard {
        batch: Option<usize>,
        #[serde(flatten)]
        counts: Counts,
        halt: Option<String>,
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
            Event::OnFailureFinished { error, .. } => error.iter_mut().collect(),
            Event::Guard { halt, .. } => halt.iter_mut().collect(),
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

/// How many bytes of command output may wait for the reporter. A command printing
/// faster than the reporter writes (a terminal, a disk) waits for it, instead of
/// gigabytes queueing in memory: 1 GB of lines through a step peaked at 2.6 GB before.
pub const OUTPUT_BUDGET: usize = 4 * 1024 * 1024;

/// What one queued output line costs of [`OUTPUT_BUDGET`]: its text and the event's
/// other fields, roughly.
fn cost(line: &str) -> u32 {
    (line.len() + 128).min(OUTPUT_BUDGET) as u32
}

/// An event on its way, with the budget its output line holds until it is received.
struct Queued {
    event: Event,
    _budget: Option<OwnedSemaphorePermit>,
}

/// The stream of a run's events: one queue, so the reporter sees them in the order
/// they happened. Output lines wait for room in the [`OUTPUT_BUDGET`]; every other
/// event (a few per step) is queued at once and never lost, so the executor's state
/// changes never wait on a slow terminal.
pub fn channel() -> (EventSender, EventReceiver) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    (EventSender { tx, budget: Arc::new(Semaphore::new(OUTPUT_BUDGET)) }, EventReceiver { rx })
}

#[derive(Clone)]
pub struct EventSender {
    tx: UnboundedSender<Queued>,
    budget: Arc<Semaphore>,
}

pub struct EventReceiver {
    rx: UnboundedReceiver<Queued>,
}

impl EventReceiver {
    /// The next event; `None` once every sender is gone. Receiving frees the budget
    /// its line held: the reporter never waits on anything the executor does.
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await.map(|queued| queued.event)
    }

    /// Whether the reporter has caught up: nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

/// The one way events leave the executor and the balancers: every event is redacted
/// here, at its source, so no consumer can forget to mask a secret.
#[derive(Clone)]
pub struct Emitter {
    sender: EventSender,
    redactor: Redactor,
}

impl Emitter {
    pub fn new(sender: EventSender, redactor: Redactor) -> Self {
        Emitter { sender, redactor }
    }

    /// Queues an event at once (not an output line of a command: those wait for room).
    pub fn emit(&self, mut event: Event) {
        event.redact(&self.redactor);
        // A reporter that went away must not stop a rollout halfway.
        let _ = self.sender.tx.send(Queued { event, _budget: None });
    }

    /// Queues a command's output line, masked already, once the reporter has room for it.
    async fn emit_output(&self, event: Event) {
        let Event::Output { line, .. } = &event else { return self.emit(event) };
        // The semaphore is never closed; without a permit the line is queued anyway.
        let budget = self.sender.budget.clone().acquire_many_owned(cost(line)).await.ok();
        let _ = self.sender.tx.send(Queued { event, _budget: budget });
    }

    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// Where the output of one step goes.
    pub fn step_output(&self, host: Option<String>, step: String) -> StepOutput {
        StepOutput { emitter: self.clone(), host, step, last: VecDeque::new() }
    }
}

impl OnLine for StepOutput {
    async fn line(&mut self, line: OutputLine) {
        StepOutput::line(self, line).await;
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
    /// A line the command printed; waits while the reporter is [`OUTPUT_BUDGET`] behind.
    pub async fn line(&mut self, line: OutputLine) {
        let event = self.event(line);
        self.emitter.emit_output(event).await;
    }

    /// A line planrun itself says about the step (a failed check, a balancer answer):
    /// one of a few, queued at once.
    pub fn note(&mut self, text: String) {
        let event = self.event(OutputLine::new(Stream::Stderr, text));
        self.emitter.emit(event);
    }

    fn event(&mut self, mut line: OutputLine) -> Event {
        // Masked before it is kept: the summary's last lines do not travel as events.
        match line.cut_at {
            // A secret cut by the cap would otherwise show its first characters.
            Some(at) if line.line.is_char_boundary(at) && !self.emitter.redactor.is_empty() => {
                let more = line.line.split_off(at);
                line.line = self.emitter.redactor.redact_cut(&line.line) + &more;
            }
            _ => self.emitter.redactor.redact_in_place(&mut line.line),
        }
        if self.last.len() == LAST_LINES {
            self.last.pop_front();
        }
        self.last.push_back(line.line.clone());
        Event::Output {
            host: self.host.clone(),
            step: self.step.clone(),
            stream: match line.stream {
                Stream::Stdout => "stdout",
                Stream::Stderr => "stderr",
            },
            line: line.line,
        }
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

/// The guard's numbers at one moment, for an event, the journal and the summary.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Counts {
    /// Probes sent and failed during the batch (the whole run for the run's counts).
    pub probes: u64,
    pub failed: u64,
    pub total_probes: u64,
    pub total_failed: u64,
    /// With `guard.balancer`: the rolled nodes' responses and 5xx since each came back,
    /// and the rest of the pool's since the guard started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balancer: Option<BalancerCounts>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct BalancerCounts {
    pub balancer: String,
    pub rolled: Vec<String>,
    pub rolled_responses: u64,
    pub rolled_errors: u64,
    pub rest_responses: u64,
    pub rest_errors: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stopping(reason: &str) -> Event {
        Event::Stopping { reason: reason.into() }
    }

    /// Issue 14: 1 GB of output through one step peaked at 2.6 GB, queued for a slower
    /// reporter. Output now waits once the budget is queued; other events never wait
    /// and are never lost; receiving makes room; the order is kept.
    #[tokio::test]
    async fn output_waits_for_a_reporter_that_is_behind_and_nothing_else_does() {
        let (sender, mut receiver) = channel();
        let emitter = Emitter::new(sender, Redactor::default());
        let mut output = emitter.step_output(Some("h1".into()), "flood".into());
        let line = "x".repeat(1000);
        let mut queued = 0;
        loop {
            let send = output.line(OutputLine::new(Stream::Stdout, line.clone()));
            match tokio::time::timeout(Duration::from_millis(50), send).await {
                Ok(()) => queued += 1,
                Err(_) => break,
            }
            assert!(queued <= OUTPUT_BUDGET / 1000, "{queued} lines queued, past the budget");
        }
        assert_eq!(queued, OUTPUT_BUDGET / cost(&line) as usize, "the budget fills before output waits");
        emitter.emit(stopping("control events do not wait"));

        let Some(Event::Output { .. }) = receiver.recv().await else { panic!("the first line comes first") };
        // One line received: room for one more.
        let send = output.line(OutputLine::new(Stream::Stdout, line.clone()));
        tokio::time::timeout(Duration::from_secs(5), send).await.expect("room after a receive");
        drop((output, emitter));
        let mut rest = Vec::new();
        while let Some(event) = receiver.recv().await {
            rest.push(event);
        }
        assert_eq!(rest.len(), queued + 1);
        assert!(matches!(&rest[queued - 1], Event::Stopping { .. }), "in the order emitted");
        assert!(matches!(&rest[queued], Event::Output { .. }));
    }
}
