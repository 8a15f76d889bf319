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
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn apply(
        &self,
        ctx: &Arc<Ctx>,
        name: &str,
        action: BalancerAction,
        node: &str,
        wait_up: bool,
        timeout: Duration,
        output: &mut Output,
    ) -> Result<(), String> {
        let started = Instant::now();
        match self.client(name)? {
            Client::Command(c) => {
                let template = match action {
                    BalancerAction::Reject => &c.reject,
                    BalancerAction::Drain => c.drain.as_ref().unwrap_or(&c.reject),
                    BalancerAction::Accept => &c.accept,
                };
                let command = render_node(template, node)?;
                step::exec(&ctx.transports.local, &command, timeout, output).await.result?;
            }
        }
        if action == BalancerAction::Accept && wait_up && self.can_report(name) {
            loop {
                if self.is_up(ctx, name, node).await? {
                    return Ok(());
                }
                if started.elapsed() + UP_POLL >= timeout {
                    return Err(format!("`{name}` did not report {node} up within {}", humantime::format_duration(timeout)));
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
    pub(crate) async fn is_up(&self, ctx: &Arc<Ctx>, name: &str, node: &str) -> Result<bool, String> {
        match self.client(name)? {
            Client::Command(c) => {
                let Some(status) = &c.status else {
                    return Err(format!("`{name}` has no `status` command, so it cannot report whether a node is up"));
                };
                let command = render_node(status, node)?;
                let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
                let exit = ctx.transports.local.exec(&command, Some(Duration::from_secs(30)), tx).await.map_err(|e| e.to_string())?;
                Ok(exit.success())
            }
        }
    }
}

/// Balancer templates see `{{node}}`.
fn render_node(template: &str, node: &str) -> Result<String, String> {
    let mut hb = handlebars::Handlebars::new();
    hb.set_strict_mode(true);
    hb.register_escape_fn(handlebars::no_escape);
    hb.render_template(template, &serde_json::json!({ "node": node })).map_err(|e| format!("cannot render `{template}`: {e}"))
}
