//! Load balancers: take a node out of rotation, put it back, and ask whether it is up.
//!
//! Each kind of the plan (`model::Balancer`) becomes a client here. The executor calls
//! `apply` and `is_up` by balancer name and never sees the kind.

use std::sync::Arc;
use std::time::{Duration, Instant};

use indexmap::IndexMap;

use crate::execute::Ctx;
use crate::execute::step::{self, Output};
use crate::model::{self, BalancerAction};

/// How often an `accept` asks the balancer whether the node is up again.
const UP_POLL: Duration = Duration::from_millis(500);

/// The balancers of a plan, by name.
pub struct Balancers {
    clients: IndexMap<String, Client>,
}

enum Client {
    Command(model::CommandBalancer),
}

/// A balancer kind this build cannot drive yet, found before anything runs.
#[derive(Debug)]
pub struct Unsupported {
    pub balancer: String,
    pub kind: &'static str,
}

impl Balancers {
    /// Clients for the balancers the plan defines. Kinds without a client are refused up
    /// front, so a rollout never stops halfway at its first balancer step.
    pub fn new(balancers: &IndexMap<String, model::Balancer>) -> Result<Self, Unsupported> {
        let mut clients = IndexMap::new();
        for (name, balancer) in balancers {
            let client = match balancer {
                model::Balancer::Command(c) => Client::Command(c.clone()),
                other => return Err(Unsupported { balancer: name.clone(), kind: other.kind() }),
            };
            clients.insert(name.clone(), client);
        }
        Ok(Balancers { clients })
    }

    fn client(&self, name: &str) -> Result<&Client, String> {
        self.clients.get(name).ok_or_else(|| format!("no balancer named `{name}`"))
    }

    /// Sets `node`'s state; for `accept` with `wait_up`, also waits until the balancer
    /// reports it up, since apps answer before balancers re-admit them.
    pub(crate) async fn apply(
        &self,
        ctx: &Arc<Ctx>,
        call: &Call<'_>,
        timeout: Duration,
        output: &mut Output,
    ) -> Result<(), String> {
        let started = Instant::now();
        match self.client(call.balancer)? {
            Client::Command(_) => {
                let command = call.command.ok_or_else(|| format!("no command rendered for `{}`", call.balancer))?;
                step::exec(&ctx.transports.local, command, timeout, output).await.result?;
            }
        }
        if call.action == BalancerAction::Accept && call.wait_up && self.can_report(call.balancer) {
            loop {
                if self.is_up(ctx, call.balancer, call.node, call.status_command).await? {
                    return Ok(());
                }
                if started.elapsed() + UP_POLL >= timeout {
                    return Err(format!(
                        "`{}` did not report {} up within {}",
                        call.balancer,
                        call.node,
                        humantime::format_duration(timeout)
                    ));
                }
                tokio::time::sleep(UP_POLL).await;
            }
        }
        Ok(())
    }

    /// Whether the balancer has a way to report a node's state.
    pub fn can_report(&self, name: &str) -> bool {
        match self.clients.get(name) {
            Some(Client::Command(c)) => c.status.is_some(),
            None => false,
        }
    }

    /// Whether the balancer itself reports `node` up (its own view is what traffic follows).
    pub(crate) async fn is_up(
        &self,
        ctx: &Arc<Ctx>,
        name: &str,
        node: &str,
        status_command: Option<&str>,
    ) -> Result<bool, String> {
        match self.client(name)? {
            Client::Command(_) => {
                let Some(command) = status_command else {
                    return Err(format!("`{name}` has no `status` command, so it cannot report whether {node} is up"));
                };
                let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
                let exit = ctx
                    .transports
                    .local
                    .exec(command, Some(Duration::from_secs(30)), tx)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(exit.success())
            }
        }
    }
}

/// One balancer step, as the graph rendered it.
pub(crate) struct Call<'a> {
    pub balancer: &'a str,
    pub action: BalancerAction,
    pub node: &'a str,
    pub wait_up: bool,
    pub command: Option<&'a str>,
    pub status_command: Option<&'a str>,
}
