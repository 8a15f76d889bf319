//! Waits are checks, not sleeps: each polls until it passes `successes` times in a row
//! (and keeps passing for `stable_for`), or fails the host at its timeout.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Ctx;
use crate::balancer::Status;
use crate::events::StepOutput;
use crate::graph::{Check, WaitCheck};
use crate::transport::Transport;

pub(crate) async fn wait(
    ctx: &Arc<Ctx>,
    w: &WaitCheck,
    host: Option<&Transport>,
    output: &mut StepOutput,
) -> Result<(), String> {
    if let Check::Sleep { duration } = &w.check {
        tokio::time::sleep(*duration).await;
        return Ok(());
    }
    let started = Instant::now();
    let deadline = started + w.timeout;
    let mut in_a_row = 0u32;
    let mut stable_since: Option<Instant> = None;
    let mut last_failure = String::from("no check completed");
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        // One check never outlives the wait, nor takes longer than a few intervals.
        let budget = remaining.min(w.interval.max(Duration::from_secs(5)));
        match tokio::time::timeout(budget, check_once(ctx, &w.check, host)).await {
            Ok(Ok(())) => {
                in_a_row += 1;
                if in_a_row >= w.successes {
                    let since = *stable_since.get_or_insert_with(Instant::now);
                    match w.stable_for {
                        Some(stable) if since.elapsed() < stable => {}
                        _ => return Ok(()),
                    }
                }
            }
            Ok(Err(why)) => {
                if in_a_row > 0 || stable_since.is_some() {
                    output.note(format!("check failed after {in_a_row} success(es): {why}"));
                }
                in_a_row = 0;
                stable_since = None;
                last_failure = why;
            }
            Err(_) => {
                in_a_row = 0;
                stable_since = None;
                last_failure = format!("the check took longer than {}", humantime::format_duration(budget));
            }
        }
        if Instant::now() + w.interval > deadline {
            return Err(format!(
                "{} did not pass within {}: {last_failure}",
                crate::graph::describe::check_line(&w.check),
                humantime::format_duration(w.timeout)
            ));
        }
        tokio::time::sleep(w.interval).await;
    }
}

async fn check_once(ctx: &Arc<Ctx>, check: &Check, host: Option<&Transport>) -> Result<(), String> {
    match check {
        Check::Sleep { .. } => Ok(()),
        Check::Http { url, status } => {
            let response =
                ctx.http.get(url).send().await.map_err(|e| format!("GET {url}: {}", crate::text::error_chain(&e)))?;
            let got = response.status().as_u16();
            if got == *status { Ok(()) } else { Err(format!("GET {url} answered {got}, expected {status}")) }
        }
        Check::Tcp { address } => tokio::net::TcpStream::connect(address.as_str())
            .await
            .map(|_| ())
            .map_err(|e| format!("connect to {address}: {e}")),
        Check::Command { command } => {
            let transport = host.ok_or_else(|| "no connection to this host".to_string())?;
            // The check's own output is noise while it fails; its exit status is the answer.
            match transport.exec_lines(command, None, &mut ()).await {
                Ok(exit) if exit.success() => Ok(()),
                Ok(exit) => {
                    Err(format!("`{command}` exited with {}", exit.code.map_or("a signal".into(), |c| c.to_string())))
                }
                Err(e) => Err(e.to_string()),
            }
        }
        Check::BalancerUp { balancer, node, status_command, status_request } => {
            let target = Status { node, command: status_command.as_deref(), request: status_request.as_deref() };
            match ctx.balancers.is_up(balancer, &target).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(format!("`{balancer}` does not report {node} up yet")),
                Err(e) => Err(e),
            }
        }
    }
}
