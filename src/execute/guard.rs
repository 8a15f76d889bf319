//! Where the executor asks the traffic guard (`crate::guard`): before each batch and
//! before `after`, whether to go on; at each batch's end and the run's, its numbers as
//! `guard` events; a node back in rotation, for the balancer analysis.

use super::Ctx;
use crate::events::{Event, RunOutcome};
use crate::graph::Batch;

/// Before `batch`: why the guard halts the run. The first batch of the run is where a
/// failure seen since the pre-flight refuses it.
pub(super) fn halts(ctx: &Ctx, batch: &Batch) -> Option<String> {
    let guard = ctx.control.guard.as_ref()?;
    let first = ctx.exec.batches.first().is_some_and(|b| b.index == batch.index);
    let reason = guard.halts(first)?;
    ctx.emitter.emit(Event::Guard { batch: None, counts: guard.counts(false), halt: Some(reason.clone()) });
    Some(reason)
}

/// After the last batch, before `after`.
pub(super) fn halts_after(ctx: &Ctx) -> Option<String> {
    let guard = ctx.control.guard.as_ref()?;
    let reason = guard.halts(false)?;
    ctx.emitter.emit(Event::Guard { batch: None, counts: guard.counts(false), halt: Some(reason.clone()) });
    Some(reason)
}

/// Whether the guard has seen enough to halt: a pause then would only ask to go on
/// into a halt.
pub(super) fn tripped(ctx: &Ctx) -> bool {
    ctx.control.guard.as_ref().is_some_and(|g| g.halts(false).is_some())
}

/// The guard's numbers so far, for the question at a pause.
pub(super) fn summary(ctx: &Ctx) -> Vec<String> {
    ctx.control.guard.as_ref().map(|g| crate::guard::summary_lines(&g.counts(false))).unwrap_or_default()
}

pub(super) fn batch_started(ctx: &Ctx) {
    if let Some(guard) = &ctx.control.guard {
        guard.batch_started();
    }
}

/// The batch's probe counts, for the journal and `--output json`.
pub(super) fn batch_finished(ctx: &Ctx, batch: &Batch) {
    if let Some(guard) = &ctx.control.guard {
        ctx.emitter.emit(Event::Guard { batch: Some(batch.index), counts: guard.counts(true), halt: None });
    }
}

pub(super) fn came_back(ctx: &Ctx, balancer: &str, node: &str) {
    if let Some(guard) = &ctx.control.guard {
        guard.came_back(balancer, node);
    }
}

/// The run's numbers, last; a guard that tripped during the last batch or `after`
/// halts a run that would otherwise have succeeded: the service failed while it rolled.
pub(super) fn at_the_end(ctx: &Ctx, outcome: RunOutcome) -> RunOutcome {
    let Some(guard) = &ctx.control.guard else { return outcome };
    let reason = guard.halts(false);
    guard.stop();
    ctx.emitter.emit(Event::Guard { batch: None, counts: guard.counts(false), halt: None });
    match (outcome, reason) {
        (RunOutcome::Succeeded | RunOutcome::CompletedWithFailures, Some(reason)) => {
            ctx.set_halt_reason(reason);
            RunOutcome::Halted
        }
        (outcome, _) => outcome,
    }
}
