//! The one wording of a step: the plan preview and the run's log describe a step
//! instance in the same words, so what `planrun plan` shows is what a run says it does.

use std::time::Duration;

use crate::graph::types::{Action, Check, DEFAULT_STEP_TIMEOUT, StepInstance, WaitCheck};
use crate::text::plural;

/// One step instance in a line: what it does, rendered, and its settings that differ
/// from the defaults.
pub fn describe(s: &StepInstance) -> String {
    let mut text = action_line(&s.action);
    let mut extra = Vec::new();
    let is_wait = matches!(s.action, Action::Wait(_));
    if !is_wait && s.timeout != DEFAULT_STEP_TIMEOUT {
        extra.push(format!("timeout {}", human(s.timeout)));
    }
    if s.retries > 0 {
        extra.push(plural(s.retries as usize, "retry", "retries"));
    }
    if s.continue_on_error {
        extra.push("failure ignored".into());
    }
    if !extra.is_empty() {
        text.push_str(&format!("   ({})", extra.join(", ")));
    }
    text
}

/// What a step instance does, in a line: the plan preview and the run's log both say it
/// this way.
pub fn action_line(action: &Action) -> String {
    match action {
        Action::Run { command } => format!("run: {command}"),
        Action::Local { command } => format!("local: {command}"),
        Action::Balancer { balancer, action, node, wait_up, .. } => {
            let then = if *wait_up { ", until the balancer reports it up" } else { "" };
            format!("balancer {balancer}: {} {node}{then}", action.as_str())
        }
        Action::Wait(w) => describe_wait(w),
    }
}

/// The check of a wait alone, for messages about it.
pub fn check_line(check: &Check) -> String {
    match check {
        Check::Sleep { duration } => format!("sleep {}", human(*duration)),
        Check::Http { url, status } => format!("{url} answers {status}"),
        Check::Tcp { address } => format!("{address} accepts connections"),
        Check::Command { command } => format!("`{command}` succeeds"),
        Check::BalancerUp { balancer, node, .. } => format!("balancer {balancer} reports {node} up"),
    }
}

fn describe_wait(w: &WaitCheck) -> String {
    if let Check::Sleep { .. } = w.check {
        return check_line(&w.check);
    }
    let mut parts = vec![format!("wait: {}", check_line(&w.check))];
    if w.successes > 1 {
        parts.push(format!("{} in a row", w.successes));
    }
    parts.push(format!("every {}", human(w.interval)));
    if let Some(d) = w.stable_for {
        parts.push(format!("stable for {}", human(d)));
    }
    parts.push(format!("up to {}", human(w.timeout)));
    parts.join(", ")
}

pub(crate) fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}
