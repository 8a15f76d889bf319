//! One step instance: its attempts, its timeout, its output, its outcome.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{Ctx, wait};
use crate::balancer::Call;
use crate::events::{Event, Outcome, StepOutput};
use crate::graph::{Action, StepInstance};
use crate::transport::Transport;

/// How long past its timeout a step may take to stop what it runs.
const KILL_GRACE: Duration = Duration::from_secs(5);

pub(crate) struct StepResult {
    pub outcome: Outcome,
    pub exit_code: Option<u32>,
    pub error: Option<String>,
    pub last_lines: Vec<String>,
}

impl StepResult {
    /// A failure the executor itself found, outside any attempt.
    pub fn failed(error: String) -> Self {
        StepResult { outcome: Outcome::Failed, exit_code: None, error: Some(error), last_lines: vec![] }
    }
}

/// What one attempt reports back.
pub(crate) struct Attempt {
    pub exit_code: Option<u32>,
    pub result: Result<(), String>,
}

pub(crate) async fn run(ctx: &Arc<Ctx>, instance: &StepInstance) -> StepResult {
    let host = ctx.host_name(instance.host);
    ctx.emitter.emit(Event::StepStarted {
        host: host.clone(),
        step: instance.step.clone(),
        phase: instance.phase,
        index: instance.index,
        description: crate::graph::describe::action_line(&instance.action),
    });
    let started = Instant::now();
    let mut output = ctx.emitter.step_output(host.clone(), instance.step.clone());

    let result = if ctx.settings.dry_run {
        StepResult { outcome: Outcome::Skipped, exit_code: None, error: None, last_lines: vec![] }
    } else {
        attempts(ctx, instance, &mut output).await
    };

    ctx.emitter.emit(Event::StepFinished {
        host,
        step: instance.step.clone(),
        phase: instance.phase,
        index: instance.index,
        outcome: result.outcome,
        duration: started.elapsed(),
        exit_code: result.exit_code,
        error: result.error.clone(),
    });
    result
}

async fn attempts(ctx: &Arc<Ctx>, instance: &StepInstance, output: &mut StepOutput) -> StepResult {
    // The timeout bounds the step as a whole, retries included: an operator reads
    // `timeout: 2m` as "this host gets two minutes".
    let deadline = Instant::now() + instance.timeout;
    let mut attempt_no = 0;
    loop {
        attempt_no += 1;
        // Whole milliseconds: the remaining time shows in messages ("timed out after 1s").
        let remaining = if attempt_no == 1 {
            instance.timeout
        } else {
            Duration::from_millis(deadline.saturating_duration_since(Instant::now()).as_millis() as u64)
        };
        let attempt = tokio::select! {
            biased;
            _ = ctx.control.cancel.cancelled() => {
                return StepResult {
                    outcome: Outcome::Cancelled,
                    exit_code: None,
                    error: Some("cancelled by a second interrupt".into()),
                    last_lines: output.last_lines(),
                };
            }
            // Commands, checks and balancer calls each stop themselves at `remaining`, a
            // command killing its process group first; this outer bound only catches one
            // that does not. Dropping a command's future kills it from a background task,
            // which a run that ends right after may never let run.
            a = tokio::time::timeout(remaining + KILL_GRACE, once(ctx, instance, remaining, output)) => a.unwrap_or_else(|_| Attempt {
                exit_code: None,
                result: Err(format!("timed out after {}", humantime::format_duration(instance.timeout))),
            }),
        };
        match attempt.result {
            Ok(()) => {
                return StepResult {
                    outcome: Outcome::Ok,
                    exit_code: attempt.exit_code,
                    error: None,
                    last_lines: vec![],
                };
            }
            Err(error) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if attempt_no <= instance.retries && !left.is_zero() && !ctx.control.stop.is_cancelled() {
                    ctx.emitter.emit(Event::StepRetry {
                        host: ctx.host_name(instance.host),
                        step: instance.step.clone(),
                        attempt: attempt_no + 1,
                        reason: error,
                    });
                    // A short pause, growing with each attempt, so a retry does not hit
                    // the same transient state at once.
                    let pause = Duration::from_secs(attempt_no as u64).min(left);
                    tokio::time::sleep(pause).await;
                    continue;
                }
                let outcome = if instance.continue_on_error { Outcome::FailedIgnored } else { Outcome::Failed };
                return StepResult {
                    outcome,
                    exit_code: attempt.exit_code,
                    error: Some(error),
                    last_lines: output.last_lines(),
                };
            }
        }
    }
}

async fn once(ctx: &Arc<Ctx>, instance: &StepInstance, remaining: Duration, output: &mut StepOutput) -> Attempt {
    match &instance.action {
        Action::Run { command } => {
            let Some(transport) = instance.host.and_then(|h| ctx.transports.hosts.get(&h)) else {
                return Attempt { exit_code: None, result: Err("no connection to this host".into()) };
            };
            exec(transport, command, remaining, output).await
        }
        Action::Local { command } => exec(&ctx.transports.local, command, remaining, output).await,
        Action::Balancer { balancer, action, node, wait_up, command, status_command, request, status_request } => {
            let host = ctx.host_name(instance.host);
            let call = Call {
                balancer,
                action: *action,
                node,
                host: host.as_deref(),
                wait_up: *wait_up,
                command: command.as_deref(),
                status_command: status_command.as_deref(),
                request: request.as_deref(),
                status_request: status_request.as_deref(),
            };
            let result = ctx.balancers.apply(&call, remaining, output).await;
            Attempt { exit_code: None, result }
        }
        Action::Wait(check) => {
            let transport = instance.host.and_then(|h| ctx.transports.hosts.get(&h)).cloned();
            let result = wait::wait(ctx, check, transport.as_deref(), output).await;
            Attempt { exit_code: None, result }
        }
    }
}

/// Runs a command and streams its lines as events.
async fn exec(transport: &Transport, command: &str, timeout: Duration, output: &mut StepOutput) -> Attempt {
    match transport.exec_lines(command, Some(timeout), output).await {
        Ok(exit) if exit.success() => Attempt { exit_code: exit.code, result: Ok(()) },
        Ok(exit) if exit.code == Some(1) && output.last_lines_contain(SUDO_PASSWORD) => Attempt {
            exit_code: exit.code,
            result: Err(sudo_password_error(output.host(), transport.target(), command)),
        },
        Ok(exit) => Attempt { exit_code: exit.code, result: Err(exit.failure(command)) },
        Err(e) => Attempt { exit_code: None, result: Err(e.to_string()) },
    }
}

/// `sudo -n` exits 1 with this when the sudoers rule that matches wants a password.
const SUDO_PASSWORD: &str = "sudo: a password is required";

/// What to do when sudo wants a password: planrun cannot type one, sudoers must change.
fn sudo_password_error(host: Option<&str>, target: &str, command: &str) -> String {
    let (user, address) = target.split_once('@').unwrap_or(("USER", target));
    let host = host.unwrap_or(address);
    // The command as `graph::wrap_command` wrote it: `sudo -n [-u 'U'] -- PROGRAM ...`.
    let rest = command.strip_prefix("sudo -n ").unwrap_or(command);
    let (runas, rest) = match rest.strip_prefix("-u '").and_then(|r| r.split_once("' ")) {
        Some((runas, rest)) => (runas, rest),
        None => ("root", rest),
    };
    let program = rest.strip_prefix("-- ").unwrap_or(rest).split_whitespace().next().unwrap_or("COMMAND");
    format!(
        "sudo on `{host}` wants a password for `{command}`; planrun runs sudo with `-n` and cannot type one. \
         help: let `{user}` run it without a password with a sudoers drop-in such as \
         `{user} ALL=({runas}) NOPASSWD: /full/path/of/{program}` in `/etc/sudoers.d/planrun` \
         (`command -v {program}` on the host gives the path; check the file with `visudo -c`)"
    )
}
