//! Runs an `ExecutionPlan`: `before`, the batches in order, `after`, with the failure and
//! interrupt rules operators rely on.
//!
//! Invariants:
//! - At most one batch is in its rolling window at a time, so never more hosts are out of
//!   rotation than the batch size allows.
//! - Once more hosts than `max_failed_hosts` have failed (counted over the whole run), no
//!   new batch starts. Hosts already in their rolling window finish their chain, so a
//!   failure on one host never leaves another host out of rotation.
//! - A failed host stays where it failed: it is unhealthy, so it is not put back, unless
//!   its `rollout.on_failure` steps (run at once, inside its window) put it back.
//! - The executor only emits events; it prints nothing itself.

mod guard;
mod recover;
mod step;
mod wait;

pub use recover::Recovery;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::balancer::Balancers;
use crate::events::{Emitter, Event, Outcome, RunOutcome};
use crate::graph::{Action, ExecutionPlan, Phase, StepInstance};
use crate::model::{BalancerAction, BatchSize};
use crate::transport::Transports;

/// Signals from the operator, and from the run's own records, to a running apply.
#[derive(Clone, Default)]
pub struct Control {
    /// First Ctrl-C: start nothing new; running steps finish.
    pub stop: CancellationToken,
    /// Second Ctrl-C: cancel running steps.
    pub cancel: CancellationToken,
    /// Halt before the next batch, for a reason that is not a host's: the journal
    /// cannot be written.
    pub halt: Halt,
    /// Asked at each `pause_after` batch whether to go on; without it a pause stops the
    /// run. A channel, so the executor need not know who answers (a terminal, a test).
    pub pause: Option<tokio::sync::mpsc::UnboundedSender<PauseQuestion>>,
    /// The traffic guard, probing since the pre-flight: asked before each batch.
    pub guard: Option<crate::guard::Guard>,
}

/// A pause between batches: the batch just finished, and where to send yes or no.
#[derive(Debug)]
pub struct PauseQuestion {
    /// The batch just finished, 1-based.
    pub after_batch: usize,
    /// The batches of the whole run.
    pub batches: usize,
    /// The hosts of the batch just finished, and those of them that failed.
    pub hosts: Vec<String>,
    pub failed: Vec<String>,
    /// What the traffic guard saw so far, as the summary says it; empty without one.
    pub guard: Vec<String>,
    /// `true`: go on with the next batch.
    pub answer: tokio::sync::oneshot::Sender<bool>,
}

/// A request to halt before the next batch, with its reason; the first one wins.
#[derive(Clone, Default)]
pub struct Halt(Arc<Mutex<Option<String>>>);

impl Halt {
    pub fn request(&self, reason: String) {
        if let Ok(mut r) = self.0.lock()
            && r.is_none()
        {
            *r = Some(reason);
        }
    }

    pub fn reason(&self) -> Option<String> {
        self.0.lock().ok().and_then(|r| r.clone())
    }
}

/// Settings of one apply.
#[derive(Debug, Clone)]
pub struct Settings {
    pub run_id: String,
    pub plan_name: String,
    pub max_failed_hosts: u32,
    pub dry_run: bool,
    /// How many hosts a `before`/`after` fan-out runs on at once.
    pub fan_out: usize,
    /// The run this one resumes.
    pub resume_of: Option<String>,
    /// The batch sizes in force: the budget each batch must fit when it starts.
    pub batch_size: BatchSize,
    /// `--force`: the operator accepted a budget that does not hold; batches start
    /// without the check.
    pub force: bool,
    /// The plan before `--limit` and a resume trimmed it, for the budget's pool.
    pub whole: Arc<ExecutionPlan>,
    /// Batch numbers (1-based) to pause after; empty with `--no-pause`.
    pub pause_after: BTreeSet<usize>,
}

/// A host that failed, and where.
#[derive(Debug, Clone)]
pub struct HostFailure {
    pub host: String,
    pub step: String,
    pub error: String,
    pub last_lines: Vec<String>,
    /// What its `rollout.on_failure` steps did; `None` when it has none (or they did
    /// not run).
    pub recovery: Option<Recovery>,
}

/// How a run ended, for the summary and the exit code.
#[derive(Debug)]
pub struct RunResult {
    pub outcome: RunOutcome,
    pub failures: Vec<HostFailure>,
    /// Why the run halted when no host's failure says it: a `before`/`after` step on the
    /// control machine, or a batch that did not fit the budget.
    pub halt_reason: Option<String>,
    /// Hosts whose step was cancelled by a second Ctrl-C: they may be between states.
    pub cancelled_hosts: Vec<String>,
    /// The batch the run paused after, and the run's batches (both 1-based counts).
    pub paused_after: Option<(usize, usize)>,
    pub duration: Duration,
}

/// Everything a step needs, shared by every task of the run.
pub(crate) struct Ctx {
    pub exec: Arc<ExecutionPlan>,
    pub transports: Transports,
    pub balancers: Balancers,
    pub emitter: Emitter,
    pub control: Control,
    pub settings: Settings,
    pub http: reqwest::Client,
    failures: Mutex<Vec<HostFailure>>,
    cancelled_hosts: Mutex<Vec<String>>,
    halt_reason: Mutex<Option<String>>,
    paused_after: Mutex<Option<(usize, usize)>>,
}

impl Ctx {
    pub fn host_name(&self, host: Option<usize>) -> Option<String> {
        host.map(|h| self.exec.hosts[h].name.clone())
    }

    /// The first reason given wins: it is the cause, later ones are consequences.
    fn set_halt_reason(&self, reason: String) {
        if let Ok(mut r) = self.halt_reason.lock()
            && r.is_none()
        {
            *r = Some(self.emitter.redactor().redact(&reason));
        }
    }

    fn failed_count(&self) -> usize {
        self.failures.lock().map(|f| f.len()).unwrap_or(usize::MAX)
    }

    fn over_budget(&self) -> bool {
        self.failed_count() > self.settings.max_failed_hosts as usize
    }
}

/// Runs the plan to its end, a halt or an interrupt.
pub async fn run(
    exec: Arc<ExecutionPlan>,
    transports: Transports,
    balancers: Balancers,
    emitter: Emitter,
    control: Control,
    settings: Settings,
) -> RunResult {
    let started = Instant::now();
    let ctx = Arc::new(Ctx {
        exec: exec.clone(),
        transports,
        balancers,
        emitter,
        control,
        settings,
        http: reqwest::Client::builder().no_proxy().connect_timeout(Duration::from_secs(5)).build().unwrap_or_default(),
        failures: Mutex::new(Vec::new()),
        cancelled_hosts: Mutex::new(Vec::new()),
        halt_reason: Mutex::new(None),
        paused_after: Mutex::new(None),
    });
    ctx.emitter.emit(Event::RunStarted {
        run_id: ctx.settings.run_id.clone(),
        plan: ctx.settings.plan_name.clone(),
        application: exec.application.clone(),
        hosts: exec.hosts.len(),
        batches: exec.batches.len(),
        steps: exec.step_count(),
        dry_run: ctx.settings.dry_run,
        resume_of: ctx.settings.resume_of.clone(),
        rollback: exec.is_rollback(),
    });

    // The stop's notice goes to the terminal at once; this puts it in the event stream
    // too (`--output json`, the journal) at the moment it happened.
    let stopping = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            ctx.control.stop.cancelled().await;
            ctx.emitter
                .emit(Event::Stopping { reason: "a stop signal: nothing new starts; running steps finish".into() });
        })
    };
    let outcome = guard::at_the_end(&ctx, run_phases(&ctx).await);
    stopping.abort();
    let failures = ctx.failures.lock().map(|f| f.clone()).unwrap_or_default();
    let cancelled_hosts = ctx.cancelled_hosts.lock().map(|c| c.clone()).unwrap_or_default();
    let halt_reason = ctx.halt_reason.lock().ok().and_then(|r| r.clone());
    let paused_after = ctx.paused_after.lock().ok().and_then(|p| *p);
    let duration = started.elapsed();
    ctx.emitter.emit(Event::RunFinished {
        outcome,
        duration,
        failed_hosts: failures.iter().map(|f| f.host.clone()).collect(),
    });
    RunResult { outcome, failures, halt_reason, cancelled_hosts, paused_after, duration }
}

async fn run_phases(ctx: &Arc<Ctx>) -> RunOutcome {
    let exec = ctx.exec.clone();
    if !exec.before.is_empty() {
        ctx.emitter.emit(Event::PhaseStarted { phase: Phase::Before });
        if !run_fan_out(ctx, &exec.before).await {
            return stopped_or(ctx, RunOutcome::Halted);
        }
    }

    for batch in &exec.batches {
        if ctx.control.stop.is_cancelled() {
            return RunOutcome::Interrupted;
        }
        if ctx.over_budget() {
            return RunOutcome::Halted;
        }
        if let Some(reason) = ctx.control.halt.reason() {
            ctx.set_halt_reason(reason);
            return RunOutcome::Halted;
        }
        if let Some(reason) = guard::halts(ctx, batch) {
            ctx.set_halt_reason(reason);
            return RunOutcome::Halted;
        }
        if let Some(reason) = batch_refused(ctx, batch.index).await {
            ctx.set_halt_reason(reason);
            return RunOutcome::Halted;
        }
        ctx.emitter.emit(Event::BatchStarted {
            batch: batch.index,
            hosts: batch.hosts.iter().map(|h| exec.hosts[h.host].name.clone()).collect(),
        });
        guard::batch_started(ctx);
        let mut tasks = tokio::task::JoinSet::new();
        let mut task_hosts = HashMap::new();
        for host in batch.hosts.iter().cloned() {
            let ctx = ctx.clone();
            let (index, first_step) = (host.host, host.steps.first().cloned());
            let task = tasks.spawn(async move { run_host_chain(&ctx, host.host, &host.steps, &host.on_failure).await });
            task_hosts.insert(task.id(), (index, first_step));
        }
        while let Some(done) = tasks.join_next_with_id().await {
            // A task that ends without an outcome (a panic: a bug) must fail its host as
            // loudly as a failed step: the host may be out of rotation.
            if let Err(e) = done
                && let Some((host, Some(step))) = task_hosts.remove(&e.id())
            {
                fail_host_without_outcome(ctx, host, &step, &e);
            }
        }
        guard::batch_finished(ctx, batch);
        if !pass_pause(ctx, batch).await {
            return RunOutcome::Paused;
        }
    }
    if ctx.control.stop.is_cancelled() {
        return RunOutcome::Interrupted;
    }
    if ctx.over_budget() {
        return RunOutcome::Halted;
    }
    if let Some(reason) = guard::halts_after(ctx) {
        ctx.set_halt_reason(reason);
        return RunOutcome::Halted;
    }

    if !exec.after.is_empty() {
        ctx.emitter.emit(Event::PhaseStarted { phase: Phase::After });
        if !run_fan_out(ctx, &exec.after).await {
            return stopped_or(ctx, RunOutcome::Halted);
        }
    }
    if ctx.failed_count() > 0 { RunOutcome::CompletedWithFailures } else { RunOutcome::Succeeded }
}

/// The budget as a run-time invariant: the balancers are read again right before each
/// batch, since hosts failed, and nodes outside the rollout fall over, while it runs.
async fn batch_refused(ctx: &Ctx, index: usize) -> Option<String> {
    if ctx.settings.dry_run || ctx.settings.force || ctx.balancers.is_empty() {
        return None;
    }
    let view = crate::preflight::read(&ctx.exec, &ctx.settings.whole, &ctx.balancers).await;
    crate::preflight::judge_batch(&view, &ctx.exec, &ctx.settings.batch_size, index)
}

/// Between batches, every host's window closed: at a `pause_after` batch with a batch
/// still to come, asks whether to go on. False: the run stops here, paused.
async fn pass_pause(ctx: &Ctx, batch: &crate::graph::Batch) -> bool {
    let number = batch.index + 1;
    let last = ctx.exec.batches.last().map_or(0, |b| b.index + 1);
    // A stop, a halt or a failure over budget ends the run on its own terms next.
    if !ctx.settings.pause_after.contains(&number)
        || number >= last
        || ctx.control.stop.is_cancelled()
        || ctx.over_budget()
        || ctx.control.halt.reason().is_some()
        || guard::tripped(ctx)
    {
        return true;
    }
    let hosts: Vec<String> = batch.hosts.iter().map(|h| ctx.exec.hosts[h.host].name.clone()).collect();
    let failed: Vec<String> = ctx
        .failures
        .lock()
        .map(|f| f.iter().filter(|f| hosts.contains(&f.host)).map(|f| f.host.clone()).collect())
        .unwrap_or_default();
    let go_on = match &ctx.control.pause {
        Some(asker) => {
            let (answer, reply) = tokio::sync::oneshot::channel();
            let guard = guard::summary(ctx);
            let question = PauseQuestion { after_batch: number, batches: last, hosts, failed, guard, answer };
            // A stop while the question waits is answered like "no": nothing new starts.
            asker.send(question).is_ok()
                && tokio::select! {
                    yes = reply => yes.unwrap_or(false),
                    () = ctx.control.stop.cancelled() => false,
                }
        }
        None => false,
    };
    if go_on || ctx.control.stop.is_cancelled() {
        return true;
    }
    if let Ok(mut p) = ctx.paused_after.lock() {
        *p = Some((number, last));
    }
    ctx.emitter.emit(Event::Paused { after_batch: number, batches: last });
    false
}

fn stopped_or(ctx: &Ctx, otherwise: RunOutcome) -> RunOutcome {
    if ctx.control.stop.is_cancelled() { RunOutcome::Interrupted } else { otherwise }
}

/// One host's steps, in order; the first failure (without `continue_on_error`) ends the
/// chain, and the host's `on_failure` steps run (none: it is left where it is). A chain that ends with a node it took out of
/// rotation not put back has failed, whatever its steps said: the plan skipped or
/// ignored the `accept`.
async fn run_host_chain(ctx: &Arc<Ctx>, host: usize, steps: &[StepInstance], on_failure: &[StepInstance]) {
    let mut taken_out: BTreeSet<(String, String)> = BTreeSet::new();
    let mut checked = false;
    for instance in steps {
        if !checked && takes_out(instance) {
            checked = true;
            if let Err(error) = reachable(ctx, host, instance).await {
                fail_host(ctx, host, instance, step::StepResult::failed(error));
                return;
            }
        }
        let result = step::run(ctx, instance).await;
        track_nodes(ctx, &mut taken_out, instance, result.outcome);
        match result.outcome {
            Outcome::Ok | Outcome::Skipped | Outcome::FailedIgnored => continue,
            Outcome::Cancelled => {
                if let Ok(mut c) = ctx.cancelled_hosts.lock() {
                    c.push(ctx.exec.hosts[host].name.clone());
                }
                return;
            }
            Outcome::Failed => {
                fail_host(ctx, host, instance, result);
                recover::on_failure(ctx, host, on_failure, taken_out).await;
                return;
            }
        }
    }
    if let (Some(last), false) = (steps.last(), taken_out.is_empty()) {
        let error = format!(
            "its steps ended with {} still out of rotation: the `accept` that puts it back did not succeed",
            nodes_text(&taken_out)
        );
        fail_host(ctx, host, last, step::StepResult::failed(error));
        recover::on_failure(ctx, host, on_failure, taken_out).await;
    }
}

/// The nodes a host took out and has not put back, after `instance` ended with `outcome`.
fn track_nodes(ctx: &Ctx, taken_out: &mut BTreeSet<(String, String)>, instance: &StepInstance, outcome: Outcome) {
    if let Action::Balancer { balancer, node, action, .. } = &instance.action
        && outcome != Outcome::Skipped
    {
        let key = (balancer.clone(), node.clone());
        match action {
            // Taken out even when the call failed: it may have happened.
            BalancerAction::Reject | BalancerAction::Drain => {
                taken_out.insert(key);
            }
            BalancerAction::Accept if outcome == Outcome::Ok => {
                guard::came_back(ctx, balancer, node);
                taken_out.remove(&key);
            }
            BalancerAction::Accept => {}
        }
    }
}

fn nodes_text(nodes: &BTreeSet<(String, String)>) -> String {
    nodes.iter().map(|(b, n)| format!("{n} on `{b}`")).collect::<Vec<_>>().join(", ")
}

fn takes_out(instance: &StepInstance) -> bool {
    matches!(&instance.action, Action::Balancer { action: BalancerAction::Reject | BalancerAction::Drain, .. })
}

/// Right before a host's first balancer change: is its connection still there? A host
/// that cannot be reached must fail while it is still in rotation, not after.
async fn reachable(ctx: &Ctx, host: usize, instance: &StepInstance) -> Result<(), String> {
    if ctx.settings.dry_run {
        return Ok(());
    }
    let Some(transport) = ctx.transports.hosts.get(&host) else { return Ok(()) };
    match transport.ensure_alive().await {
        Ok(false) => Ok(()),
        Ok(true) => {
            let mut output = ctx.emitter.step_output(ctx.host_name(Some(host)), instance.step.clone());
            output.note("the connection to this host had closed; reconnected before taking it out".into());
            Ok(())
        }
        Err(e) => Err(format!("cannot reach the host before taking it out of rotation: {e}; it was left in rotation")),
    }
}

/// A host whose task ended without an outcome (it panicked).
fn fail_host_without_outcome(ctx: &Ctx, host: usize, step: &StepInstance, e: &tokio::task::JoinError) {
    let why = if e.is_panic() { "panicked" } else { "was cancelled" };
    let error = format!(
        "planrun's task for this host {why} (a bug in planrun; please report it); the host may be out of rotation"
    );
    fail_host(ctx, host, step, step::StepResult::failed(error));
}

fn fail_host(ctx: &Ctx, host: usize, instance: &StepInstance, result: step::StepResult) {
    let redact = |text: &str| ctx.emitter.redactor().redact(text);
    let failure = HostFailure {
        host: ctx.exec.hosts[host].name.clone(),
        step: instance.step.clone(),
        error: redact(result.error.as_deref().unwrap_or("failed")),
        last_lines: result.last_lines.iter().map(|l| redact(l)).collect(),
        recovery: None,
    };
    ctx.emitter.emit(Event::HostFailed {
        host: failure.host.clone(),
        step: failure.step.clone(),
        error: failure.error.clone(),
        last_lines: failure.last_lines.clone(),
    });
    if let Ok(mut f) = ctx.failures.lock() {
        f.push(failure);
    }
}

/// `before`/`after`: steps in order; each step's instances (one per host, or one local)
/// run side by side, bounded by `fan_out`. Returns false when the phase failed.
async fn run_fan_out(ctx: &Arc<Ctx>, instances: &[StepInstance]) -> bool {
    let limit = Arc::new(tokio::sync::Semaphore::new(ctx.settings.fan_out.max(1)));
    let mut start = 0;
    while start < instances.len() {
        if ctx.control.stop.is_cancelled() {
            return false;
        }
        let step_index = instances[start].index;
        let end = instances[start..].iter().position(|i| i.index != step_index).map_or(instances.len(), |p| start + p);
        let mut tasks = tokio::task::JoinSet::new();
        let mut task_steps = HashMap::new();
        for instance in instances[start..end].iter().cloned() {
            let ctx = ctx.clone();
            let limit = limit.clone();
            let task_instance = instance.clone();
            let task = tasks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                if ctx.control.stop.is_cancelled() {
                    return true;
                }
                let result = step::run(&ctx, &instance).await;
                match (result.outcome, instance.host) {
                    (Outcome::Failed, Some(host)) => {
                        fail_host(&ctx, host, &instance, result);
                        false
                    }
                    (Outcome::Failed, None) => {
                        let phase = phase_name(instance.phase);
                        let error = result.error.as_deref().unwrap_or("failed");
                        ctx.set_halt_reason(format!("`{phase}` step `{}` failed: {error}", instance.step));
                        false
                    }
                    (Outcome::Cancelled, _) => false,
                    _ => true,
                }
            });
            task_steps.insert(task.id(), task_instance);
        }
        let mut ok = true;
        while let Some(done) = tasks.join_next_with_id().await {
            match done {
                Ok((_, passed)) => ok &= passed,
                Err(e) => {
                    ok = false;
                    match task_steps.get(&e.id()) {
                        Some(instance @ StepInstance { host: Some(host), .. }) => {
                            fail_host_without_outcome(ctx, *host, instance, &e)
                        }
                        Some(instance) => ctx.set_halt_reason(format!(
                            "`{}` step `{}`: planrun's task panicked (a bug in planrun; please report it)",
                            phase_name(instance.phase),
                            instance.step
                        )),
                        None => {}
                    }
                }
            }
        }
        if !ok {
            return false;
        }
        start = end;
    }
    true
}

fn phase_name(phase: Phase) -> &'static str {
    phase.name()
}

#[cfg(test)]
mod tests;
