//! What a graph is made of: the execution plan, its step instances with every
//! template rendered, and the DAG's nodes. The executor, the journal, the report and the
//! preview all read these, so they stand apart from how they are built.

use std::time::Duration;

use serde::Serialize;

use crate::model::BalancerAction;

/// A step's timeout when the plan gives none.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// A wait's timeout when the plan gives none.
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(60);
/// Time between two checks of a wait when the plan gives none.
pub const DEFAULT_WAIT_INTERVAL: Duration = Duration::from_secs(1);

/// Everything `apply` runs, in order.
#[derive(Debug, Clone, Serialize)]
pub struct ExecutionPlan {
    pub application: String,
    /// The selected hosts, in rollout order.
    pub hosts: Vec<HostRef>,
    /// Steps of the plan's `before` list: each `run` step once per selected host (fanned
    /// out, bounded), each `local` step once.
    pub before: Vec<StepInstance>,
    /// Batches in order; batch k+1 starts only after batch k finished.
    pub batches: Vec<Batch>,
    /// Steps of the plan's `after` list, as for `before`.
    pub after: Vec<StepInstance>,
    /// How many hosts a `before`/`after` step runs on at once (`rollout.fan_out`).
    pub fan_out: usize,
}

/// A selected host.
#[derive(Debug, Clone, Serialize)]
pub struct HostRef {
    /// Index into `plan.servers`.
    pub server: usize,
    /// `name`, or `host` when the server has no name.
    pub name: String,
    /// The address to connect to.
    pub address: String,
}

/// Hosts that are in the rolling window together.
#[derive(Debug, Clone, Serialize)]
pub struct Batch {
    /// 0-based.
    pub index: usize,
    pub hosts: Vec<HostSteps>,
}

/// One host's chain of steps inside a batch.
#[derive(Debug, Clone, Serialize)]
pub struct HostSteps {
    /// Index into `ExecutionPlan::hosts`.
    pub host: usize,
    pub steps: Vec<StepInstance>,
    /// `rollout.on_failure` for this host: run when one of `steps` fails.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub on_failure: Vec<StepInstance>,
}

/// Which list of the plan a step comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Before,
    Rollout,
    /// `rollout.on_failure`, on a host whose rollout steps failed.
    OnFailure,
    After,
    /// `rollback.steps`, run by `planrun rollback`.
    Rollback,
}

impl Phase {
    /// The steps of a host's rolling window: the summary's table and the live view
    /// follow them per host.
    pub fn in_window(self) -> bool {
        matches!(self, Phase::Rollout | Phase::Rollback)
    }

    /// The phase's name as plans write it.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Before => "before",
            Phase::Rollout => "rollout",
            Phase::OnFailure => "on_failure",
            Phase::After => "after",
            Phase::Rollback => "rollback",
        }
    }
}

/// A step for one host (or for the control machine), rendered.
#[derive(Debug, Clone, Serialize)]
pub struct StepInstance {
    pub phase: Phase,
    /// The step's name in the plan.
    pub step: String,
    /// Index of the step in its list (`before`, `rollout.steps` or `after`), which is also
    /// its JSON pointer index: `/rollout/steps/{index}`.
    pub index: usize,
    /// Index into `ExecutionPlan::hosts`; `None` for `local` steps of `before`/`after`.
    pub host: Option<usize>,
    pub action: Action,
    #[serde(with = "humantime_serde_compat")]
    pub timeout: Duration,
    pub retries: u32,
    pub continue_on_error: bool,
}

/// What a step instance does, with its templates rendered.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// A command on the host through its transport.
    Run { command: String },
    /// A command on the control machine.
    Local { command: String },
    /// A balancer action on the host's node.
    Balancer {
        balancer: String,
        action: BalancerAction,
        node: String,
        /// For `accept`: wait until the balancer reports the node up.
        wait_up: bool,
        /// For `command` balancers: the action's command, rendered for this host.
        #[serde(skip_serializing_if = "Option::is_none")]
        command: Option<String>,
        /// For `command` balancers with `status`: the status command, rendered. Rendered
        /// for every action, not only `accept`, since pre-flight reads every node's state.
        #[serde(skip_serializing_if = "Option::is_none")]
        status_command: Option<String>,
        /// For `http` balancers: the action's request, rendered for this host.
        #[serde(skip_serializing_if = "Option::is_none")]
        request: Option<Box<HttpCall>>,
        /// For `http` balancers with `status`: the status request, rendered.
        #[serde(skip_serializing_if = "Option::is_none")]
        status_request: Option<Box<HttpCall>>,
    },
    /// A check to wait for.
    Wait(WaitCheck),
}

/// A rendered wait.
#[derive(Debug, Clone, Serialize)]
pub struct WaitCheck {
    pub check: Check,
    /// Consecutive passes required.
    pub successes: u32,
    #[serde(with = "humantime_serde_compat")]
    pub interval: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub timeout: Duration,
    /// Once passing, must keep passing this long.
    #[serde(with = "humantime_serde_compat::option")]
    pub stable_for: Option<Duration>,
}

/// The check of a wait.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Check {
    Sleep {
        #[serde(with = "humantime_serde_compat")]
        duration: Duration,
    },
    Http {
        url: String,
        status: u16,
    },
    Tcp {
        address: String,
    },
    Command {
        command: String,
    },
    BalancerUp {
        balancer: String,
        node: String,
        /// For `command` balancers: the status command, rendered for this host.
        #[serde(skip_serializing_if = "Option::is_none")]
        status_command: Option<String>,
        /// For `http` balancers: the status request, rendered for this host.
        #[serde(skip_serializing_if = "Option::is_none")]
        status_request: Option<Box<HttpCall>>,
    },
}

/// An `http` balancer's request with its templates rendered for one host. Boxed in
/// `Action` and `Check`: most steps have none, and every step instance would otherwise
/// carry the room for two (a 100,000-host plan has 400,000 instances).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HttpCall {
    pub method: String,
    pub url: String,
    pub headers: indexmap::IndexMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// A node of the DAG.
#[derive(Debug, Clone)]
pub enum GraphNode {
    Start,
    /// A step instance; the indices locate it in `ExecutionPlan`.
    Step(StepRef),
    /// Everything of `before` finished: one barrier, so that `before` steps fanned out to
    /// n hosts gate the first batch with n edges rather than n × batch size.
    BeforeDone,
    /// Everything of batch `k` finished.
    BatchDone(usize),
    End,
}

/// Where a step instance lives in `ExecutionPlan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepRef {
    Before(usize),
    /// batch, position of the host in the batch, position of the step in the host's chain
    Rollout(usize, usize, usize),
    After(usize),
}

/// Durations serialize as humantime strings (`"1m 30s"`), as plans write them.
mod humantime_serde_compat {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    pub mod option {
        use std::time::Duration;

        pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => s.collect_str(&humantime::format_duration(*d)),
                None => s.serialize_none(),
            }
        }
    }
}

/// What the command line may change about the graph.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// `--batch-size`, overriding `rollout.batch_size`.
    pub batch_size: Option<crate::model::BatchSize>,
    /// `--var NAME=VALUE`, overriding `vars`.
    pub vars: Vec<(String, String)>,
    /// `--limit`: only the selected hosts these entries choose (names, addresses, globs,
    /// `role:NAME`, `!` to leave out), as given, comma-split.
    pub limit: Option<Vec<String>>,
}

impl ExecutionPlan {
    /// The instance a graph node stands for.
    pub fn instance(&self, at: StepRef) -> &StepInstance {
        match at {
            StepRef::Before(i) => &self.before[i],
            StepRef::Rollout(b, h, s) => &self.batches[b].hosts[h].steps[s],
            StepRef::After(i) => &self.after[i],
        }
    }

    /// Every step instance, in the order they run.
    pub fn instances(&self) -> impl Iterator<Item = &StepInstance> {
        self.before
            .iter()
            .chain(self.batches.iter().flat_map(|b| b.hosts.iter().flat_map(|h| h.steps.iter())))
            .chain(self.after.iter())
    }

    /// Whether this is a `planrun rollback`: its hosts go through `rollback.steps`.
    pub fn is_rollback(&self) -> bool {
        self.batches.iter().flat_map(|b| &b.hosts).flat_map(|h| &h.steps).any(|s| s.phase == Phase::Rollback)
    }

    pub fn step_count(&self) -> usize {
        self.instances().count()
    }

    /// Leaves out the instances `done` says are complete (for `--resume`), and the hosts
    /// and batches left with nothing to do. The DAG in `graph` is not rebuilt: only
    /// previews draw it, and they show the plan, not a resume.
    pub fn retain_undone(&mut self, done: impl Fn(&StepInstance, Option<&str>) -> bool) {
        let name = |i: &StepInstance| i.host.map(|h| self.hosts[h].name.clone());
        let keep = |i: &StepInstance| !done(i, name(i).as_deref());
        let before: Vec<StepInstance> = self.before.iter().filter(|i| keep(i)).cloned().collect();
        let after: Vec<StepInstance> = self.after.iter().filter(|i| keep(i)).cloned().collect();
        let mut batches = Vec::new();
        for batch in &self.batches {
            let hosts: Vec<HostSteps> = batch
                .hosts
                .iter()
                .map(|h| HostSteps {
                    host: h.host,
                    steps: h.steps.iter().filter(|i| keep(i)).cloned().collect(),
                    on_failure: h.on_failure.clone(),
                })
                .filter(|h| !h.steps.is_empty())
                .collect();
            if !hosts.is_empty() {
                batches.push(Batch { index: batch.index, hosts });
            }
        }
        self.before = before;
        self.after = after;
        self.batches = batches;
    }
}
