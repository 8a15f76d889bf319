//! Load balancers: take a node out of rotation, put it back, and read the balancer's own
//! view of a node.
//!
//! Each kind of the plan (`model::Balancer`) has a client in its own file; this module
//! dispatches by balancer name, so the executor and pre-flight never see the kind.

mod command;
mod haproxy;
mod http;
pub(crate) mod linode;
pub(crate) mod retry;

pub use haproxy::Responses;

pub use retry::Notices;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indexmap::IndexMap;

use crate::events::StepOutput;
use crate::graph::HttpCall;
use crate::model::{self, BalancerAction};

/// How often an `accept` asks the balancer whether the node is up again, by kind: the
/// sooner planrun notices, the sooner the next host starts. HAProxy's runtime API is a
/// local socket and cheap to ask; a command is a process; an HTTP hook or the Linode API
/// is a remote call under a rate limit (two a second per accept in flight: 120 a minute,
/// and a 429 is answered by the client's own back-off).
fn up_poll(client: &Client) -> Duration {
    Duration::from_millis(match client {
        Client::Haproxy(_) => 25,
        Client::Command(_) => 100,
        Client::Http(_) => 250,
        Client::Linode(_) => 500,
    })
}

/// The balancers of a plan, by name. Cheap to clone: pre-flight, the executor and the
/// summary share one set of clients, so Linode lookups are made once per run.
#[derive(Clone)]
pub struct Balancers {
    inner: Arc<Inner>,
}

struct Inner {
    clients: IndexMap<String, Client>,
    /// Every node a balancer step of this run called, in order, for the summary.
    touched: Mutex<Vec<NodeRef>>,
}

enum Client {
    Command(command::Command),
    Http(http::Http),
    Haproxy(haproxy::Haproxy),
    Linode(linode::Linode),
}

/// A balancer that cannot be set up, found before anything runs.
#[derive(Debug)]
pub struct SetupError {
    pub balancer: String,
    pub message: String,
}

/// Whether the balancer sends new connections to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    In,
    Out,
    /// The balancer has no way to tell (a `command` or `http` balancer without `status`).
    Unknown,
}

/// The balancer's own view of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    pub rotation: Rotation,
    /// Whether the balancer's health checks pass; `None` when it does not say.
    pub up: Option<bool>,
    /// Open connections, where the balancer reports them (HAProxy's `scur`).
    pub connections: Option<u64>,
    /// The balancer's own words: `MAINT`, `mode reject, status UP`.
    pub detail: String,
}

impl NodeState {
    /// Out of rotation, or in rotation but failing the balancer's checks: either way it
    /// serves no traffic, so it uses up room in the batch budget.
    pub fn serves_no_traffic(&self) -> bool {
        self.rotation == Rotation::Out || self.up == Some(false)
    }

    pub fn describe(&self) -> String {
        let what = match (self.rotation, self.up) {
            (Rotation::Out, _) => "OUT of rotation",
            (Rotation::In, Some(false)) => "in rotation but DOWN",
            (Rotation::In, _) => "in rotation",
            (Rotation::Unknown, _) => "unknown",
        };
        let mut text = format!("{what} ({}", self.detail);
        if let Some(c) = self.connections {
            text.push_str(&format!(", {c} connection{}", if c == 1 { "" } else { "s" }));
        }
        text.push(')');
        text
    }
}

/// A node of a balancer, with what is needed to read its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRef {
    pub balancer: String,
    pub node: String,
    /// The host whose node this is, for messages.
    pub host: Option<String>,
    pub status_command: Option<String>,
    pub status_request: Option<HttpCall>,
}

impl Balancers {
    /// Clients for the balancers the plan defines; `notices` hears their retries.
    pub fn new(balancers: &IndexMap<String, model::Balancer>, notices: Option<Notices>) -> Result<Self, SetupError> {
        let mut clients = IndexMap::new();
        for (name, balancer) in balancers {
            let fail = |message: String| SetupError { balancer: name.clone(), message };
            let client = match balancer {
                model::Balancer::Command(_) => Client::Command(command::Command::new()),
                model::Balancer::Http(_) => Client::Http(http::Http::new(name, notices.clone()).map_err(fail)?),
                model::Balancer::Haproxy(h) => Client::Haproxy(haproxy::Haproxy::new(name, h).map_err(fail)?),
                model::Balancer::Linode(l) => {
                    Client::Linode(linode::Linode::new(name, l, notices.clone()).map_err(fail)?)
                }
            };
            clients.insert(name.clone(), client);
        }
        Ok(Balancers { inner: Arc::new(Inner { clients, touched: Mutex::new(Vec::new()) }) })
    }

    pub fn is_empty(&self) -> bool {
        self.inner.clients.is_empty()
    }

    fn client(&self, name: &str) -> Result<&Client, String> {
        self.inner.clients.get(name).ok_or_else(|| format!("no balancer named `{name}`"))
    }

    /// Sets `node`'s state; for `accept` with `wait_up`, also waits until the balancer
    /// reports it up, since apps answer before balancers re-admit them.
    pub(crate) async fn apply(
        &self,
        call: &Call<'_>,
        timeout: Duration,
        output: &mut StepOutput,
    ) -> Result<(), String> {
        // The step's timeout bounds the call whatever the client's own limits: a balancer
        // that stops answering fails the step in its time, not the client's.
        match tokio::time::timeout(timeout, self.apply_unbounded(call, timeout, output)).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "`{}` did not answer the {} of {} within {}",
                call.balancer,
                call.action.as_str(),
                call.node,
                humantime::format_duration(timeout)
            )),
        }
    }

    async fn apply_unbounded(&self, call: &Call<'_>, timeout: Duration, output: &mut StepOutput) -> Result<(), String> {
        let started = Instant::now();
        self.touch(call);
        match self.client(call.balancer)? {
            Client::Command(c) => {
                let command = call.command.ok_or_else(|| format!("no command rendered for `{}`", call.balancer))?;
                c.run(command, timeout, output).await?;
            }
            Client::Http(h) => {
                let request = call.request.ok_or_else(|| format!("no request rendered for `{}`", call.balancer))?;
                h.send(request).await?;
            }
            Client::Haproxy(h) => h.set(call.node, call.action, timeout, output).await?,
            Client::Linode(l) => l.set(call.node, call.action, timeout, output).await?,
        }
        if call.action == BalancerAction::Accept && call.wait_up && self.can_report(call.balancer) {
            let target = Status { node: call.node, command: call.status_command, request: call.status_request };
            loop {
                let state = self.state(call.balancer, &target).await?;
                if state.rotation != Rotation::Out && state.up != Some(false) {
                    return Ok(());
                }
                let poll = up_poll(self.client(call.balancer)?);
                if started.elapsed() + poll >= timeout {
                    return Err(format!(
                        "`{}` did not report {} up within {}: {}",
                        call.balancer,
                        call.node,
                        humantime::format_duration(timeout),
                        state.describe()
                    ));
                }
                tokio::time::sleep(poll).await;
            }
        }
        Ok(())
    }

    fn touch(&self, call: &Call<'_>) {
        let Ok(mut touched) = self.inner.touched.lock() else { return };
        if touched.iter().any(|t| t.balancer == call.balancer && t.node == call.node) {
            return;
        }
        touched.push(NodeRef {
            balancer: call.balancer.to_string(),
            node: call.node.to_string(),
            host: call.host.map(String::from),
            status_command: call.status_command.map(String::from),
            status_request: call.status_request.cloned(),
        });
    }

    /// The nodes balancer steps of this run called, in the order they were first called.
    pub fn touched(&self) -> Vec<NodeRef> {
        self.inner.touched.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// Whether the balancer has a way to report a node's state.
    pub fn can_report(&self, name: &str) -> bool {
        match self.inner.clients.get(name) {
            Some(Client::Command(_) | Client::Http(_)) => {
                // Known per node: whether the plan gave a `status` was rendered into the
                // call; `state` answers `Unknown` without one.
                true
            }
            Some(Client::Haproxy(_) | Client::Linode(_)) => true,
            None => false,
        }
    }

    /// The balancer's own view of `node`. Read-only.
    pub async fn state(&self, name: &str, target: &Status<'_>) -> Result<NodeState, String> {
        match self.client(name)? {
            Client::Command(c) => Ok(match target.command {
                Some(command) => c.state(command).await?,
                None => unknown("no `status` command"),
            }),
            Client::Http(h) => Ok(match target.request {
                Some(request) => h.state(request).await?,
                None => unknown("no `status` request"),
            }),
            Client::Haproxy(h) => h.state(target.node).await,
            Client::Linode(l) => l.state(target.node).await,
        }
    }

    /// Every node of the balancer's pool with its state, where the balancer can list them
    /// (HAProxy's backend, the Linode config); `None` for kinds that only know the nodes
    /// the plan names.
    pub async fn pool(&self, name: &str) -> Option<Result<Vec<(String, NodeState)>, String>> {
        match self.client(name) {
            Ok(Client::Haproxy(h)) => Some(h.pool().await),
            Ok(Client::Linode(l)) => Some(l.pool().await),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// The HTTP responses each server of the balancer's pool sent, for the guard's
    /// analysis; `None` for kinds that report no per-node responses.
    pub async fn responses(&self, name: &str) -> Option<Result<Vec<(String, Responses)>, String>> {
        match self.client(name) {
            Ok(Client::Haproxy(h)) => Some(h.responses().await),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// Whether `node` is up for a `balancer_up` wait.
    pub(crate) async fn is_up(&self, name: &str, target: &Status<'_>) -> Result<bool, String> {
        let state = self.state(name, target).await?;
        if state.rotation == Rotation::Unknown {
            return Err(format!("`{name}` cannot report whether {} is up: {}", target.node, state.detail));
        }
        Ok(state.rotation == Rotation::In && state.up != Some(false))
    }
}

fn unknown(why: &str) -> NodeState {
    NodeState { rotation: Rotation::Unknown, up: None, connections: None, detail: why.to_string() }
}

/// What a status read needs: the node, and for `command`/`http` balancers the rendered
/// status command or request.
pub struct Status<'a> {
    pub node: &'a str,
    pub command: Option<&'a str>,
    pub request: Option<&'a HttpCall>,
}

impl<'a> Status<'a> {
    pub fn of(node: &'a NodeRef) -> Self {
        Status { node: &node.node, command: node.status_command.as_deref(), request: node.status_request.as_ref() }
    }
}

/// One balancer step, as the graph rendered it.
pub(crate) struct Call<'a> {
    pub balancer: &'a str,
    pub action: BalancerAction,
    pub node: &'a str,
    pub host: Option<&'a str>,
    pub wait_up: bool,
    pub command: Option<&'a str>,
    pub status_command: Option<&'a str>,
    pub request: Option<&'a HttpCall>,
    pub status_request: Option<&'a HttpCall>,
}
