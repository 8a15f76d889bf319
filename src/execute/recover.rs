//! `rollout.on_failure`: the steps that bring a failed host back, run on it at once,
//! inside its rolling window, so the batch (and a halt) waits for them.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::{Ctx, nodes_text, step, track_nodes};
use crate::events::{Event, Outcome};
use crate::graph::StepInstance;

/// What a failed host's `on_failure` steps did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// Every step succeeded and every node the host took out is back in rotation.
    Restored,
    /// A step failed (or was cancelled): the host stays out of rotation where it is.
    Failed { step: String, error: String },
    /// Every step succeeded, but these nodes are still out of rotation.
    StillOut(String),
}

/// Runs `steps` on the failed `host`, whose chain left `taken_out` out of rotation, and
/// records what came of it on the host's failure. They run after a first Ctrl-C too:
/// they finish the host's window, as the step that failed would have.
pub(super) async fn on_failure(
    ctx: &Arc<Ctx>,
    host: usize,
    steps: &[StepInstance],
    mut taken_out: BTreeSet<(String, String)>,
) {
    if steps.is_empty() {
        return;
    }
    let mut failed = None;
    for instance in steps {
        let result = step::run(ctx, instance).await;
        track_nodes(ctx, &mut taken_out, instance, result.outcome);
        match result.outcome {
            Outcome::Ok | Outcome::Skipped | Outcome::FailedIgnored => {}
            Outcome::Cancelled => {
                if let Ok(mut c) = ctx.cancelled_hosts.lock() {
                    c.push(ctx.exec.hosts[host].name.clone());
                }
                failed = Some((instance.step.clone(), "cancelled".to_string()));
                break;
            }
            Outcome::Failed => {
                let error = ctx.emitter.redactor().redact(result.error.as_deref().unwrap_or("failed"));
                failed = Some((instance.step.clone(), error));
                break;
            }
        }
    }
    let recovery = match failed {
        Some((step, error)) => Recovery::Failed { step, error },
        None if taken_out.is_empty() => Recovery::Restored,
        None => Recovery::StillOut(nodes_text(&taken_out)),
    };
    let name = ctx.exec.hosts[host].name.clone();
    ctx.emitter.emit(Event::OnFailureFinished {
        host: name.clone(),
        restored: recovery == Recovery::Restored,
        error: recovery.why_not(),
    });
    if let Ok(mut failures) = ctx.failures.lock()
        && let Some(failure) = failures.iter_mut().rev().find(|f| f.host == name)
    {
        failure.recovery = Some(recovery);
    }
}

impl Recovery {
    /// Why the host was not restored, for people; `None` when it was.
    pub fn why_not(&self) -> Option<String> {
        match self {
            Recovery::Restored => None,
            Recovery::Failed { step, error } => Some(format!("on_failure step `{step}` failed: {error}")),
            Recovery::StillOut(nodes) => Some(format!("on_failure left {nodes} out of rotation")),
        }
    }
}
