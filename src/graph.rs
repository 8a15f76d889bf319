//! The step graph: what will run, where, in which order, with every template rendered.
//!
//! Built from a validated plan without any I/O. The executor walks `before`, then
//! `batches` in order, then `after`; `graph` holds the same step instances as a petgraph
//! DAG ("must finish before" edges, batch barriers) for `planrun plan --format dot|mermaid`
//! and for checking the order.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use petgraph::graph::{DiGraph, NodeIndex};
use serde::Serialize;
use serde_json::Value;

use crate::diagnostic::{PlanErrors, Problem, SourceFile};
use crate::model::select;
use crate::model::{Balancer, BalancerAction, BatchSize, HttpRequest, Plan, Server, SingleHost, Step, Sudo, When};
use crate::template::{self, HostVars, RenderFailure, TemplateContext, TemplateId, Templates};
use crate::text::{backticked_list, did_you_mean, pointer_escape};
use crate::validate::LoadedPlan;
use crate::yaml::{self, Node};

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
    /// The same instances as a DAG; not serialized (the JSON shape is `before`, `batches`,
    /// `after`).
    #[serde(skip)]
    pub graph: DiGraph<GraphNode, ()>,
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
}

/// Which list of the plan a step comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Before,
    Rollout,
    After,
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
        request: Option<HttpCall>,
        /// For `http` balancers with `status`: the status request, rendered.
        #[serde(skip_serializing_if = "Option::is_none")]
        status_request: Option<HttpCall>,
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
        status_request: Option<HttpCall>,
    },
}

/// An `http` balancer's request with its templates rendered for one host.
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
    /// `--limit NAME,...`: only these selected hosts (by name or address).
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
                .map(|h| HostSteps { host: h.host, steps: h.steps.iter().filter(|i| keep(i)).cloned().collect() })
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

/// Whether `single_host: skip_balancer` applies: one host selected by the plan. A
/// `--limit` to one host of a larger fleet does not count: that host still serves
/// traffic beside the others, so it must leave the balancer before it restarts.
pub fn skips_balancer(loaded: &LoadedPlan) -> bool {
    loaded.plan.rollout.single_host == SingleHost::SkipBalancer && loaded.selection.hosts.len() == 1
}

/// Whether `single_host: skip_balancer` left steps out of this plan's rollout.
pub fn balancer_skipped(loaded: &LoadedPlan) -> bool {
    skips_balancer(loaded) && loaded.plan.rollout.steps.iter().any(is_balancer_step)
}

/// Whether a step is left out when the balancer is skipped: balancer steps, and waits
/// for the balancer to report the node up, which it never took out.
fn is_balancer_step(step: &Step) -> bool {
    step.balancer.is_some() || step.wait.as_ref().is_some_and(|w| w.balancer_up.is_some())
}

/// The step graph of a validated plan, with every template rendered for every host.
/// Every template problem of the plan comes back at once.
pub fn build(loaded: &LoadedPlan, options: &BuildOptions) -> Result<ExecutionPlan, PlanErrors> {
    let plan = &loaded.plan;
    let fail = |problems| PlanErrors::in_files(loaded.files.clone(), problems);

    let servers = limit(plan, &loaded.selection.hosts, options.limit.as_deref()).map_err(|p| fail(vec![*p]))?;
    let hosts: Vec<HostRef> = servers
        .iter()
        .map(|&i| {
            let s = &plan.servers[i];
            HostRef { server: i, name: server_name(s).to_string(), address: s.host.clone() }
        })
        .collect();
    let sizes = batch_sizes(options.batch_size.as_ref().unwrap_or(&plan.rollout.batch_size), hosts.len());

    let mut vars = serde_json::Map::new();
    for (k, v) in &plan.vars {
        vars.insert(k.clone(), v.clone());
    }
    for (k, v) in &options.vars {
        vars.insert(k.clone(), Value::String(v.clone()));
    }

    let mut b = Builder {
        plan,
        root: &loaded.root,
        files: &loaded.files,
        templates: Templates::new(),
        fields: Vec::new(),
        balancer_fields: HashMap::new(),
        ctx: TemplateContext::new(&plan.application, vars, hosts.len()),
        problems: Vec::new(),
        plan_env: Vec::new(),
    };
    for (name, value) in &plan.env {
        b.check_env_name("/env", name, "plan `env`");
        let pointer = format!("/env/{}", pointer_escape(name));
        let field = b.field(pointer, "plan `env`".into(), &value.source());
        b.plan_env.push((name.clone(), field));
    }
    let skip_balancer = skips_balancer(loaded);
    let before = b.compile_list(Phase::Before, "/before", &plan.before, false);
    let rollout = b.compile_list(Phase::Rollout, "/rollout/steps", &plan.rollout.steps, skip_balancer);
    let after = b.compile_list(Phase::After, "/after", &plan.after, false);

    let before = b.fan_out(&before, &hosts);
    let mut batches = Vec::with_capacity(sizes.len());
    let mut next = 0;
    for (k, size) in sizes.into_iter().enumerate() {
        b.ctx.set_batch(Some(k));
        let mut batch = Batch { index: k, hosts: Vec::with_capacity(size) };
        for h in next..next + size {
            b.set_host(&hosts, Some(h));
            let server = &plan.servers[hosts[h].server];
            let steps = rollout
                .iter()
                .filter(|c| applies(c.step.when.as_ref(), server))
                .map(|c| b.instance(c, Some(h), &hosts))
                .collect();
            batch.hosts.push(HostSteps { host: h, steps });
        }
        next += size;
        batches.push(batch);
    }
    b.ctx.set_batch(None);
    let after = b.fan_out(&after, &hosts);

    b.report_failures();
    if !b.problems.is_empty() {
        // Parse errors are found before render errors; an operator reads the file top down.
        b.problems.sort_by_key(|p| p.span.map(|s| s.offset));
        return Err(fail(b.problems));
    }
    let mut execution =
        ExecutionPlan { application: plan.application.clone(), hosts, before, batches, after, graph: DiGraph::new() };
    execution.graph = dag(&execution);
    Ok(execution)
}

/// `command` as sent: with `env` exported, and through `sudo -n` when `sudo` is set.
/// Values are shell-quoted, so they arrive as written.
///
/// Variables travel in the command because sshd refuses SSH `setenv` for all but a few
/// names by default (`AcceptEnv`). Under sudo they go through `env` after it, since
/// sudo resets the environment. A simple command is handed to sudo as written, so a
/// sudoers rule naming it matches; anything the shell must interpret runs as `sh -c`.
pub fn wrap_command(command: &str, env: &[(String, String)], sudo: Option<&Sudo>) -> String {
    let assignments: Vec<String> =
        env.iter().map(|(name, value)| format!("{name}={}", template::shell_quote(value))).collect();
    let Some(sudo) = sudo else {
        if assignments.is_empty() {
            return command.to_string();
        }
        // `export …;` rather than `NAME=v command`: a prefix assignment reaches only the
        // first command of `a && b`.
        return format!("export {}; {command}", assignments.join(" "));
    };
    let mut out = String::from("sudo -n");
    if let Sudo::As(user) = sudo {
        out.push_str(" -u ");
        out.push_str(&template::shell_quote(user));
    }
    out.push_str(" --");
    if !assignments.is_empty() {
        out.push_str(" env ");
        out.push_str(&assignments.join(" "));
    }
    if is_simple_command(command) {
        out.push(' ');
        out.push_str(command.trim());
    } else {
        out.push_str(" sh -c ");
        out.push_str(&template::shell_quote(command));
    }
    out
}

/// Whether `command` is one program with arguments, which sudo can run itself: no
/// operators, redirections, expansions or line breaks, no leading assignment, and not
/// a shell builtin or keyword (sudo cannot run `cd` or `if`).
fn is_simple_command(command: &str) -> bool {
    const BUILTINS: &[&str] = &[
        ".", ":", "alias", "break", "case", "cd", "command", "continue", "eval", "exec", "exit", "export", "for", "if",
        "read", "readonly", "return", "set", "shift", "source", "trap", "ulimit", "umask", "unset", "until", "wait",
        "while", "!", "{",
    ];
    let command = command.trim();
    let first = command.split_whitespace().next().unwrap_or_default();
    !command.is_empty()
        && !command.contains([';', '&', '|', '<', '>', '(', ')', '$', '`', '\n', '\r', '{', '}'])
        && !first.contains('=')
        && !BUILTINS.contains(&first)
}

/// `name`, or `host` when the server has none.
pub fn server_name(server: &Server) -> &str {
    server.name.as_deref().unwrap_or(&server.host)
}

fn applies(when: Option<&When>, server: &Server) -> bool {
    let Some(when) = when else { return true };
    when.roles.as_ref().is_none_or(|roles| server.roles.iter().any(|r| roles.contains(r)))
        && when.options.as_ref().is_none_or(|options| select::options_match(server, options.iter()))
}

/// The selected servers that `--limit` keeps, in rollout order.
fn limit(plan: &Plan, selected: &[usize], limit: Option<&[String]>) -> Result<Vec<usize>, Box<Problem>> {
    let Some(limit) = limit else { return Ok(selected.to_vec()) };
    let mut is_selected = vec![false; plan.servers.len()];
    for &i in selected {
        is_selected[i] = true;
    }
    let mut by_name: HashMap<&str, usize> = HashMap::with_capacity(plan.servers.len() * 2);
    for (i, s) in plan.servers.iter().enumerate() {
        by_name.entry(&s.host).or_insert(i);
        by_name.entry(server_name(s)).or_insert(i);
    }
    let selected_names = || -> Vec<&str> { selected.iter().map(|&i| server_name(&plan.servers[i])).collect() };
    let mut keep = vec![false; plan.servers.len()];
    for wanted in limit.iter().map(|w| w.trim()) {
        match by_name.get(wanted) {
            Some(&i) if is_selected[i] => keep[i] = true,
            Some(_) => {
                let problem = Problem::whole_file(format!(
                    "`--limit` names `{wanted}`, which the rollout does not select"
                ))
                .help(format!(
                    "`rollout.select` leaves it out (by role or `exclude`); the selected hosts are {}",
                    few(&selected_names())
                ));
                return Err(Box::new(problem));
            }
            None => {
                let names = selected_names();
                let help = match did_you_mean(wanted, names.iter().copied()) {
                    Some(best) => format!("did you mean `{best}`?"),
                    None => format!("the selected hosts are {}", few(&names)),
                };
                let what = if wanted.is_empty() { "an empty name".to_string() } else { format!("`{wanted}`") };
                let problem =
                    Problem::whole_file(format!("`--limit` names {what}, which is not a server of this plan"))
                        .help(help);
                return Err(Box::new(problem));
            }
        }
    }
    Ok(selected.iter().copied().filter(|&i| keep[i]).collect())
}

/// At most ten names, then how many more: a fleet of 10,000 is not a help text.
fn few(names: &[&str]) -> String {
    const SHOWN: usize = 10;
    if names.len() <= SHOWN {
        backticked_list(names)
    } else {
        format!("{} … and {} more", backticked_list(&names[..SHOWN]).replacen(" or ", ", ", 1), names.len() - SHOWN)
    }
}

/// The size of each batch for `hosts` hosts: a ramp's last entry repeats.
pub fn batch_sizes(size: &BatchSize, hosts: usize) -> Vec<usize> {
    let ramp: &[crate::model::BatchStep] = match size {
        BatchSize::One(step) => std::slice::from_ref(step),
        BatchSize::Ramp(steps) => steps,
    };
    let mut sizes = Vec::new();
    let mut left = hosts;
    let mut i = 0;
    while left > 0 {
        // Never 0, whatever reached here: a batch of 0 would loop forever.
        let n = ramp.get(i.min(ramp.len().saturating_sub(1))).map_or(1, |s| s.hosts(hosts)).clamp(1, left);
        sizes.push(n);
        left -= n;
        i += 1;
    }
    sizes
}

/// An `http` balancer's request from its rendered fields, in `compile_balancer`'s order:
/// method (if set), url, headers, body (if set). `None` when a template failed.
fn http_call(source: &HttpRequest, rendered: Vec<String>) -> Option<HttpCall> {
    let mut values = rendered.into_iter();
    let method = match &source.method {
        Some(_) => values.next()?,
        None => "POST".to_string(),
    };
    let url = values.next()?;
    let mut headers = indexmap::IndexMap::new();
    for name in source.headers.keys() {
        headers.insert(name.clone(), values.next()?);
    }
    let body = match &source.body {
        Some(_) => Some(values.next()?),
        None => None,
    };
    Some(HttpCall { method, url, headers, body })
}

/// A template field of a step, compiled once.
struct Field {
    /// `None` when it did not parse: that is reported once, and nothing renders.
    id: Option<TemplateId>,
    pointer: String,
    /// What to call the field's owner in messages: "step `restart`".
    owner: String,
    failure: Option<Failure>,
}

/// The first host a template failed for, and how many others it failed for.
struct Failure {
    host: Option<String>,
    failure: RenderFailure,
    help: String,
    more: usize,
    /// The host of the latest failure: a balancer's `status` template renders once per
    /// balancer step of a host, and a host counts once.
    last: Option<String>,
}

/// A `run` or `local` command with what wraps it: exported variables, sudo.
struct CompiledCommand {
    command: usize,
    /// Names with their value fields, the step's over the plan's.
    env: Vec<(String, usize)>,
    sudo: Option<Sudo>,
}

enum Compiled {
    Run(CompiledCommand),
    Local(CompiledCommand),
    Balancer { balancer: String, action: BalancerAction, node: usize, wait_up: bool },
    Wait { check: CompiledCheck, successes: u32, interval: Duration, timeout: Duration, stable_for: Option<Duration> },
}

enum CompiledCheck {
    Sleep(Duration),
    Http(usize, u16),
    Tcp(usize),
    Command(usize),
    BalancerUp(String, usize),
}

struct CompiledStep<'p> {
    step: &'p Step,
    phase: Phase,
    index: usize,
    what: Compiled,
    timeout: Duration,
}

struct Builder<'p> {
    plan: &'p Plan,
    root: &'p Node,
    /// The plan's files, to read back how a template was written.
    files: &'p [Arc<SourceFile>],
    templates: Templates,
    fields: Vec<Field>,
    /// The request templates of `http` and `command` balancers, compiled on first use.
    balancer_fields: HashMap<(String, &'static str), Vec<usize>>,
    ctx: TemplateContext,
    problems: Vec<Problem>,
    /// The plan's `env`, compiled once for every step.
    plan_env: Vec<(String, usize)>,
}

impl<'p> Builder<'p> {
    /// The env of a `run`/`local` step: the plan's, with the step's over it by name.
    fn compile_env(
        &mut self,
        at: &str,
        owner: &str,
        env: &'p indexmap::IndexMap<String, crate::model::EnvValue>,
    ) -> Vec<(String, usize)> {
        let mut merged = self.plan_env.clone();
        for (name, value) in env {
            self.check_env_name(&format!("{at}/env"), name, owner);
            let pointer = format!("{at}/env/{}", pointer_escape(name));
            let field = self.field(pointer, owner.to_string(), &value.source());
            match merged.iter_mut().find(|(n, _)| n == name) {
                Some(slot) => slot.1 = field,
                None => merged.push((name.clone(), field)),
            }
        }
        merged
    }

    fn check_env_name(&mut self, at: &str, name: &str, owner: &str) {
        let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            let key = format!("{at}/{}", pointer_escape(name));
            let span = self.root.key_span(&key).unwrap_or_else(|| self.root.span_at(at));
            self.problems.push(
                Problem::at(span, format!("{owner}: `{name}` is not a valid environment variable name"))
                    .label("invalid name")
                    .help("use letters, digits and `_`, not starting with a digit: `RAILS_ENV`"),
            );
        }
    }

    /// `sudo` and `env` only mean something for commands; elsewhere they would be
    /// silently ignored, so they are refused.
    fn refuse_wrapping(&mut self, at: &str, owner: &str, step: &Step) {
        if step.sudo.as_ref().is_some_and(|s| s.sudo().is_some()) {
            let span = self.root.span_at(&format!("{at}/sudo"));
            self.problems.push(
                Problem::at(span, format!("{owner}: `sudo` applies to `run` steps only"))
                    .label("not a `run` step")
                    .help("remove `sudo`, or make this a `run` step"),
            );
        }
        if !step.env.is_empty() {
            let span = self.root.span_at(&format!("{at}/env"));
            self.problems.push(
                Problem::at(span, format!("{owner}: `env` applies to `run` and `local` steps only"))
                    .label("not a command step")
                    .help("remove `env`, or move it to the step that runs the command"),
            );
        }
    }

    fn command(
        &mut self,
        at: &str,
        owner: String,
        step: &'p Step,
        source: &str,
        field: &str,
        sudo_ok: bool,
    ) -> CompiledCommand {
        let command = self.field(format!("{at}/{field}"), owner.clone(), source);
        let env = self.compile_env(at, &owner, &step.env);
        let sudo = step.sudo.as_ref().and_then(|s| s.sudo());
        if sudo.is_some() && !sudo_ok {
            let span = self.root.span_at(&format!("{at}/sudo"));
            self.problems.push(
                Problem::at(span, format!("{owner}: `sudo` applies to `run` steps only")).label("a `local` step").help(
                    "a `local` step runs on the machine running planrun; put `sudo` in its command if it needs it",
                ),
            );
        }
        CompiledCommand { command, env, sudo }
    }

    fn render_command(&mut self, c: &CompiledCommand, host: Option<&str>) -> String {
        let command = self.render(c.command, host);
        let env: Vec<(String, String)> =
            c.env.iter().map(|(name, field)| (name.clone(), self.render(*field, host))).collect();
        wrap_command(&command, &env, c.sudo.as_ref())
    }

    fn field(&mut self, pointer: String, owner: String, source: &str) -> usize {
        let id = match self.templates.compile(source) {
            Ok(id) => Some(id),
            Err(e) => {
                let span = self.narrow(&pointer, e.offset, source);
                self.problems.push(
                    Problem::at(span, format!("{owner}: the template does not parse: {}", e.message))
                        .label("invalid template")
                        .help("close every `{{` with `}}`; write `\\{{` for a literal `{{`"),
                );
                None
            }
        };
        self.fields.push(Field { id, pointer, owner, failure: None });
        self.fields.len() - 1
    }

    fn compile_list(
        &mut self,
        phase: Phase,
        list: &str,
        steps: &'p [Step],
        skip_balancer: bool,
    ) -> Vec<CompiledStep<'p>> {
        let mut out = Vec::with_capacity(steps.len());
        for (index, step) in steps.iter().enumerate() {
            if skip_balancer && is_balancer_step(step) {
                continue;
            }
            let at = format!("{list}/{index}");
            let owner = format!("step `{}`", step.name);
            let step_timeout = step.timeout.map(|t| t.get());
            if step.run.is_none() && step.local.is_none() {
                self.refuse_wrapping(&at, &owner, step);
            }
            let (what, timeout) = if let Some(command) = &step.run {
                (Compiled::Run(self.command(&at, owner, step, command, "run", true)), step_timeout)
            } else if let Some(command) = &step.local {
                (Compiled::Local(self.command(&at, owner, step, command, "local", false)), step_timeout)
            } else if let Some(b) = &step.balancer {
                let node = self.field(format!("{at}/balancer/node"), owner, &b.node);
                let wait_up = b.action == BalancerAction::Accept && b.wait_up.unwrap_or(true);
                (Compiled::Balancer { balancer: b.balancer.clone(), action: b.action, node, wait_up }, step_timeout)
            } else if let Some(w) = &step.wait {
                let w_at = format!("{at}/wait");
                let check = if let Some(d) = w.sleep {
                    CompiledCheck::Sleep(d.get())
                } else if let Some(url) = &w.http {
                    CompiledCheck::Http(self.field(format!("{w_at}/http"), owner, url), w.status.unwrap_or(200))
                } else if let Some(address) = &w.tcp {
                    CompiledCheck::Tcp(self.field(format!("{w_at}/tcp"), owner, address))
                } else if let Some(command) = &w.command {
                    CompiledCheck::Command(self.field(format!("{w_at}/command"), owner, command))
                } else if let (Some(balancer), Some(node)) = (&w.balancer_up, &w.node) {
                    CompiledCheck::BalancerUp(balancer.clone(), self.field(format!("{w_at}/node"), owner, node))
                } else {
                    // Validation refuses a wait that checks nothing; nothing to build.
                    continue;
                };
                // A wait's own timeout bounds its checks; the step's, when only that is
                // given, is what the operator meant for both.
                let wait_timeout = w.timeout.map(|t| t.get()).or(step_timeout).unwrap_or(DEFAULT_WAIT_TIMEOUT);
                let timeout = match check {
                    // A sleep longer than the default step timeout is what was asked for.
                    CompiledCheck::Sleep(d) => Some(step_timeout.unwrap_or(DEFAULT_STEP_TIMEOUT.max(d))),
                    _ => Some(step_timeout.unwrap_or(wait_timeout)),
                };
                let what = Compiled::Wait {
                    check,
                    successes: w.successes.unwrap_or(1),
                    interval: w.interval.map_or(DEFAULT_WAIT_INTERVAL, |d| d.get()),
                    timeout: wait_timeout,
                    stable_for: w.stable_for.map(|d| d.get()),
                };
                (what, timeout)
            } else {
                continue;
            };
            out.push(CompiledStep { step, phase, index, what, timeout: timeout.unwrap_or(DEFAULT_STEP_TIMEOUT) });
        }
        out
    }

    fn set_host(&mut self, hosts: &[HostRef], h: Option<usize>) {
        let plan = self.plan;
        self.ctx.set_host(h.map(|h| {
            let s = &plan.servers[hosts[h].server];
            HostVars { name: &hosts[h].name, address: &s.host, roles: &s.roles, options: &s.options, index: h }
        }));
    }

    /// `before`/`after`: each `run` step once per host, each `local` step once.
    fn fan_out(&mut self, steps: &[CompiledStep<'p>], hosts: &[HostRef]) -> Vec<StepInstance> {
        let mut out = Vec::new();
        for c in steps {
            if matches!(c.what, Compiled::Local(_)) {
                self.set_host(hosts, None);
                out.push(self.instance(c, None, hosts));
                continue;
            }
            for h in 0..hosts.len() {
                if applies(c.step.when.as_ref(), &self.plan.servers[hosts[h].server]) {
                    self.set_host(hosts, Some(h));
                    out.push(self.instance(c, Some(h), hosts));
                }
            }
        }
        out
    }

    /// Renders `field` for the current context; a failure is recorded and renders as "".
    fn render(&mut self, field: usize, host: Option<&str>) -> String {
        let f = &mut self.fields[field];
        let Some(id) = f.id else { return String::new() };
        match self.templates.render(id, &self.ctx) {
            Ok(text) => text,
            Err(failure) => {
                match &mut f.failure {
                    Some(first) => {
                        if first.last.as_deref() != host {
                            first.more += 1;
                            first.last = host.map(str::to_string);
                        }
                    }
                    None => {
                        let help = failure
                            .variable
                            .as_deref()
                            .map(|v| missing_help(v, self.ctx.data(), host))
                            .unwrap_or_else(|| "check the helper's arguments".into());
                        f.failure = Some(Failure {
                            host: host.map(str::to_string),
                            failure,
                            help,
                            more: 0,
                            last: host.map(str::to_string),
                        });
                    }
                }
                String::new()
            }
        }
    }

    fn instance(&mut self, c: &CompiledStep<'p>, host: Option<usize>, hosts: &[HostRef]) -> StepInstance {
        let name = host.map(|h| hosts[h].name.as_str());
        let action = match &c.what {
            Compiled::Run(c) => Action::Run { command: self.render_command(c, name) },
            Compiled::Local(c) => Action::Local { command: self.render_command(c, name) },
            Compiled::Balancer { balancer, action, node, wait_up } => {
                let node = self.render(*node, name);
                let (command, request) = self.balancer_call(balancer, action.as_str(), &node, name);
                let (status_command, status_request) = self.balancer_call(balancer, "status", &node, name);
                Action::Balancer {
                    balancer: balancer.clone(),
                    action: *action,
                    node,
                    wait_up: *wait_up,
                    command,
                    status_command,
                    request,
                    status_request,
                }
            }
            Compiled::Wait { check, successes, interval, timeout, stable_for } => {
                let check = match check {
                    CompiledCheck::Sleep(d) => Check::Sleep { duration: *d },
                    CompiledCheck::Http(f, status) => Check::Http { url: self.render(*f, name), status: *status },
                    CompiledCheck::Tcp(f) => Check::Tcp { address: self.render(*f, name) },
                    CompiledCheck::Command(f) => Check::Command { command: self.render(*f, name) },
                    CompiledCheck::BalancerUp(balancer, f) => {
                        let node = self.render(*f, name);
                        let (status_command, status_request) = self.balancer_call(balancer, "status", &node, name);
                        Check::BalancerUp { balancer: balancer.clone(), node, status_command, status_request }
                    }
                };
                Action::Wait(WaitCheck {
                    check,
                    successes: *successes,
                    interval: *interval,
                    timeout: *timeout,
                    stable_for: *stable_for,
                })
            }
        };
        StepInstance {
            phase: c.phase,
            step: c.step.name.clone(),
            index: c.index,
            host,
            action,
            timeout: c.timeout,
            retries: c.step.retries,
            continue_on_error: c.step.continue_on_error,
        }
    }

    /// `http` and `command` balancers template their requests with `{{node}}` and the
    /// host: render them here so a typo there is found now, not halfway through a run.
    /// The executor runs what is rendered here: the command of a `command` balancer or
    /// the request of an `http` balancer for `request`, whichever it is.
    fn balancer_call(
        &mut self,
        balancer: &str,
        request: &'static str,
        node: &str,
        host: Option<&str>,
    ) -> (Option<String>, Option<HttpCall>) {
        let rendered = self.render_balancer(balancer, request, node, host);
        match self.plan.balancers.get(balancer) {
            Some(Balancer::Command(_)) => (rendered.into_iter().next(), None),
            Some(Balancer::Http(http)) => {
                let source = match request {
                    "reject" => Some(&http.reject),
                    "drain" => Some(http.drain.as_ref().unwrap_or(&http.reject)),
                    "accept" => Some(&http.accept),
                    _ => http.status.as_ref(),
                };
                (None, source.and_then(|source| http_call(source, rendered)))
            }
            _ => (None, None),
        }
    }

    /// Renders the templates of `request` (`reject`, `drain`, `accept` or `status`) of
    /// `balancer` for the current host and `node`, compiling them on first use.
    fn render_balancer(
        &mut self,
        balancer: &str,
        request: &'static str,
        node: &str,
        host: Option<&str>,
    ) -> Vec<String> {
        let key = (balancer.to_string(), request);
        let fields = match self.balancer_fields.get(&key) {
            Some(fields) => fields.clone(),
            None => {
                let fields = self.compile_balancer(balancer, request);
                self.balancer_fields.insert(key, fields.clone());
                fields
            }
        };
        if fields.is_empty() {
            return Vec::new();
        }
        self.ctx.set_node(Some(node));
        let rendered = fields.into_iter().map(|f| self.render(f, host)).collect();
        self.ctx.set_node(None);
        rendered
    }

    fn compile_balancer(&mut self, name: &str, request: &'static str) -> Vec<usize> {
        let plan = self.plan;
        let Some(balancer) = plan.balancers.get(name) else { return Vec::new() };
        let owner = format!("balancer `{name}`");
        let at = format!("/balancers/{}", pointer_escape(name));
        let mut fields = Vec::new();
        match balancer {
            Balancer::Http(http) => {
                let (which, req): (&str, Option<&HttpRequest>) = match request {
                    "reject" => ("reject", Some(&http.reject)),
                    "drain" => http.drain.as_ref().map_or(("reject", Some(&http.reject)), |d| ("drain", Some(d))),
                    "accept" => ("accept", Some(&http.accept)),
                    _ => ("status", http.status.as_ref()),
                };
                let Some(req) = req else { return fields };
                let at = format!("{at}/{which}");
                if let Some(method) = &req.method {
                    fields.push(self.field(format!("{at}/method"), owner.clone(), method));
                }
                fields.push(self.field(format!("{at}/url"), owner.clone(), &req.url));
                for (header, value) in &req.headers {
                    let pointer = format!("{at}/headers/{}", pointer_escape(header));
                    fields.push(self.field(pointer, owner.clone(), value));
                }
                if let Some(body) = &req.body {
                    fields.push(self.field(format!("{at}/body"), owner.clone(), body));
                }
            }
            Balancer::Command(command) => {
                let (which, source) = match request {
                    "reject" => ("reject", Some(&command.reject)),
                    "drain" => command.drain.as_ref().map_or(("reject", Some(&command.reject)), |d| ("drain", Some(d))),
                    "accept" => ("accept", Some(&command.accept)),
                    _ => ("status", command.status.as_ref()),
                };
                if let Some(source) = source {
                    fields.push(self.field(format!("{at}/{which}"), owner, source));
                }
            }
            Balancer::Linode(_) | Balancer::Haproxy(_) => {}
        }
        fields
    }

    /// One problem per broken template, at its first failure.
    fn report_failures(&mut self) {
        for f in &mut self.fields {
            let Some(first) = f.failure.take() else { continue };
            let source = f.id.map_or("", |id| self.templates.source(id));
            let expression = expression_at(source, first.failure.offset, first.failure.variable.as_deref());
            let whom = match &first.host {
                Some(h) => format!(" for host `{h}`"),
                None => String::new(),
            };
            let more = match first.more {
                0 => String::new(),
                1 => " and 1 more host".into(),
                n => format!(" and {n} more hosts"),
            };
            let message = match &first.failure.variable {
                Some(_) => format!("{}: `{expression}` does not resolve{whom}{more}", f.owner),
                None => format!("{}: `{expression}` fails{whom}{more}: {}", f.owner, first.failure.message),
            };
            let span = narrow(self.root, self.files, &f.pointer, first.failure.offset, source);
            let label = if first.failure.variable.is_some() { "unknown variable" } else { "fails here" };
            self.problems.push(Problem::at(span, message).label(label).help(first.help));
        }
    }

    fn narrow(&self, pointer: &str, offset: Option<usize>, source: &str) -> yaml::Span {
        narrow(self.root, self.files, pointer, offset, source)
    }
}

/// The help for a variable that does not resolve: the likely intended name, or what
/// exists at that level.
fn missing_help(variable: &str, data: &Value, host: Option<&str>) -> String {
    let top = variable.split(['.', '/']).next().unwrap_or_default();
    if top == "host" && data.get("host").is_none() {
        return "a `local` step of `before` or `after` runs once, on the machine running planrun, so it has no \
                `host`; make it a `run` step to run it on every host"
            .into();
    }
    if top == "batch" && data.get("batch").is_none() {
        return "`batch` exists only in `rollout.steps`; `before` and `after` run outside the batches".into();
    }
    let Some((missing, keys)) = template::diagnose(variable, data) else {
        return "check the variable's name".into();
    };
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let parent = variable.strip_suffix(&missing).unwrap_or("").trim_end_matches(['.', '/']);
    if let Some(best) = did_you_mean(&missing, keys.iter().copied()) {
        return format!("did you mean `{best}`?");
    }
    let whose = match host {
        Some(h) if parent.starts_with("host") => format!(" for `{h}`"),
        _ => String::new(),
    };
    match (parent, keys.is_empty()) {
        ("", _) => format!("the variables are {}", backticked_list(&keys)),
        (p, true) => format!("`{p}` has no `{missing}`{whose}; `{{{{default {variable} VALUE}}}}` gives a fallback"),
        (p, false) => format!("`{p}` has {}{whose}; `{{{{default {variable} VALUE}}}}` gives a fallback", few(&keys)),
    }
}

/// The `{{...}}` expression at `offset` in a template, or the first one naming
/// `variable`, for quoting it in a message.
fn expression_at(source: &str, offset: Option<usize>, variable: Option<&str>) -> String {
    let start = offset.filter(|&o| source[o..].starts_with("{{")).or_else(|| {
        let variable = variable?;
        source
            .match_indices("{{")
            .map(|(i, _)| i)
            .find(|&i| source[i..].find("}}").is_some_and(|end| source[i..i + end].contains(variable)))
    });
    match start.and_then(|s| source[s..].find("}}").map(|e| &source[s..s + e + 2])) {
        Some(expression) => expression.to_string(),
        None => variable.map_or_else(|| source.to_string(), |v| format!("{{{{{v}}}}}")),
    }
}

/// The span of the template's string node at `pointer`, narrowed to the expression at
/// `offset` when the string appears verbatim in the source (plain, or quoted without
/// escapes): there, positions in the value are positions in the file.
fn narrow(root: &Node, files: &[Arc<SourceFile>], pointer: &str, offset: Option<usize>, source: &str) -> yaml::Span {
    let span = root.span_at(pointer);
    let Some(text) = files.get(span.file as usize).map(|f| f.text.as_str()) else { return span };
    let Some(offset) = offset.filter(|&o| o <= source.len() && !source[..o].contains('\n')) else {
        return span;
    };
    let Some(written) = text.get(span.offset..span.offset + span.len) else { return span };
    let lead = if written == source {
        0
    } else if written.len() == source.len() + 2
        && (written.starts_with('"') || written.starts_with('\''))
        && &written[1..written.len() - 1] == source
    {
        1
    } else {
        return span;
    };
    let len = source[offset..].find("}}").map_or(source.len() - offset, |e| e + 2);
    yaml::Span {
        offset: span.offset + lead + offset,
        len,
        column: span.column + lead + source[..offset].chars().count(),
        ..span
    }
}

/// The DAG of an execution plan: Start → before → BeforeDone → batch 1 → BatchDone(0) →
/// … → after → End. Edges are linear in the number of instances: phases meet at single
/// barrier nodes, never host × host.
fn dag(plan: &ExecutionPlan) -> DiGraph<GraphNode, ()> {
    let instances =
        plan.before.len() + plan.after.len() + plan.batches.iter().map(|b| b.hosts.len() * 4).sum::<usize>();
    let mut g = DiGraph::with_capacity(instances + plan.batches.len() + 3, instances * 2);
    let start = g.add_node(GraphNode::Start);
    let mut gate = chain_list(&mut g, &plan.before, start, plan.hosts.len(), StepRef::Before);
    if !plan.before.is_empty() {
        let done = g.add_node(GraphNode::BeforeDone);
        for n in gate {
            g.add_edge(n, done, ());
        }
        gate = vec![done];
    }
    for batch in &plan.batches {
        let done = g.add_node(GraphNode::BatchDone(batch.index));
        for (hi, host) in batch.hosts.iter().enumerate() {
            let mut prev = gate.clone();
            for si in 0..host.steps.len() {
                let n = g.add_node(GraphNode::Step(StepRef::Rollout(batch.index, hi, si)));
                for p in prev {
                    g.add_edge(p, n, ());
                }
                prev = vec![n];
            }
            for p in prev {
                g.add_edge(p, done, ());
            }
        }
        gate = vec![done];
    }
    let last = chain_list(&mut g, &plan.after, gate[0], plan.hosts.len(), StepRef::After);
    let end = g.add_node(GraphNode::End);
    for n in last {
        g.add_edge(n, end, ());
    }
    g
}

/// Nodes for a `before`/`after` list after `gate`: each host's instances chain in list
/// order; a `local` step waits for every host's chain and gates everything after it.
/// Returns the nodes whose completion ends the list.
fn chain_list(
    g: &mut DiGraph<GraphNode, ()>,
    instances: &[StepInstance],
    gate: NodeIndex,
    hosts: usize,
    at: fn(usize) -> StepRef,
) -> Vec<NodeIndex> {
    let mut gate = gate;
    let mut last: Vec<Option<NodeIndex>> = vec![None; hosts];
    let mut touched: Vec<usize> = Vec::new();
    for (i, instance) in instances.iter().enumerate() {
        let n = g.add_node(GraphNode::Step(at(i)));
        match instance.host {
            Some(h) => {
                let prev = match last[h] {
                    Some(p) => p,
                    None => {
                        touched.push(h);
                        gate
                    }
                };
                g.add_edge(prev, n, ());
                last[h] = Some(n);
            }
            None => {
                if touched.is_empty() {
                    g.add_edge(gate, n, ());
                }
                for h in touched.drain(..) {
                    if let Some(p) = last[h].take() {
                        g.add_edge(p, n, ());
                    }
                }
                gate = n;
            }
        }
    }
    if touched.is_empty() { vec![gate] } else { touched.iter().filter_map(|&h| last[h]).collect() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::BatchStep;

    fn load(yaml: &str) -> LoadedPlan {
        crate::validate::load_plan_bytes(std::path::Path::new("test.yaml"), yaml.as_bytes())
            .unwrap_or_else(|e| panic!("{}", e.render(false)))
    }

    const PLAN: &str = r#"
version: 1
application: shop
servers:
  - { host: 10.0.0.1, roles: [app] }
  - { host: 10.0.0.2, roles: [app] }
  - { host: 10.0.0.3, roles: [app] }
  - { host: 10.0.0.4, roles: [app] }
before:
  - { name: fetch, run: "git fetch" }
  - { name: announce, local: "echo {{rollout.hosts}} hosts" }
  - { name: migrate, run: "migrate {{host.index}}" }
rollout:
  select: { roles: [app] }
  batch_size: 2
  steps:
    - { name: restart, run: "restart {{batch.index}}" }
    - { name: check, wait: { tcp: "{{host.address}}:80" } }
after:
  - { name: notify, local: "echo done" }
"#;

    #[test]
    fn the_dag_orders_phases_with_linear_edges() {
        let plan = build(&load(PLAN), &BuildOptions::default()).unwrap();
        let g = &plan.graph;
        // start, 4 fetch + announce + 4 migrate, before done, 2 batches of 2 hosts × 2
        // steps, 2 batch barriers, notify, end.
        assert_eq!(g.node_count(), 1 + 9 + 1 + 8 + 2 + 1 + 1);
        // fetch ← start (4), announce ← fetch (4), migrate ← announce (4), before done ←
        // migrate (4), each batch 3 edges per host (6), notify ← batch 2, end ← notify.
        assert_eq!(g.edge_count(), 4 + 4 + 4 + 4 + 6 + 6 + 1 + 1);
        let order = petgraph::algo::toposort(g, None).expect("acyclic");
        assert!(matches!(g[order[0]], GraphNode::Start));
        assert!(matches!(g[*order.last().unwrap()], GraphNode::End));

        let position: HashMap<_, _> = order.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let find = |want: &dyn Fn(&GraphNode) -> bool| g.node_indices().find(|n| want(&g[*n])).unwrap();
        let before_done = find(&|n| matches!(n, GraphNode::BeforeDone));
        let batch0 = find(&|n| matches!(n, GraphNode::BatchDone(0)));
        let second_batch_first_step = find(&|n| matches!(n, GraphNode::Step(StepRef::Rollout(1, 0, 0))));
        assert!(position[&before_done] < position[&batch0]);
        assert!(position[&batch0] < position[&second_batch_first_step]);

        assert_eq!(plan.before.len(), 9);
        assert_eq!(plan.instance(StepRef::Before(4)).host, None);
        assert!(matches!(&plan.before[4].action, Action::Local { command } if command == "echo 4 hosts"));
        assert!(matches!(&plan.before[8].action, Action::Run { command } if command == "migrate 3"));
        let step = plan.instance(StepRef::Rollout(1, 1, 0));
        assert_eq!(step.host, Some(3));
        assert!(matches!(&step.action, Action::Run { command } if command == "restart 1"));
        assert_eq!(step.timeout, DEFAULT_STEP_TIMEOUT);
        let Action::Wait(wait) = &plan.instance(StepRef::Rollout(0, 1, 1)).action else { panic!() };
        assert!(matches!(&wait.check, Check::Tcp { address } if address == "10.0.0.2:80"));
        assert_eq!((wait.timeout, wait.interval, wait.successes), (DEFAULT_WAIT_TIMEOUT, DEFAULT_WAIT_INTERVAL, 1));
    }

    #[test]
    fn sudo_and_env_wrap_the_command_with_quoted_values() {
        let env =
            |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        assert_eq!(wrap_command("make", &[], None), "make");
        assert_eq!(
            wrap_command("cd /app && make", &env(&[("A", "it's"), ("B", "$HOME")]), None),
            r"export A='it'\''s' B='$HOME'; cd /app && make"
        );
        assert_eq!(wrap_command("systemctl restart app", &[], Some(&Sudo::Root)), "sudo -n -- systemctl restart app");
        assert_eq!(
            wrap_command("cd /app && make", &env(&[("A", "1")]), Some(&Sudo::As("app".into()))),
            "sudo -n -u 'app' -- env A='1' sh -c 'cd /app && make'"
        );
        assert_eq!(wrap_command("cd /app", &[], Some(&Sudo::Root)), "sudo -n -- sh -c 'cd /app'");
        assert_eq!(wrap_command("X=1 make", &[], Some(&Sudo::Root)), "sudo -n -- sh -c 'X=1 make'");
    }

    #[test]
    fn step_env_overrides_plan_env_and_sudo_is_for_run_steps() {
        let plan = r#"
version: 1
application: shop
env: { A: "plan {{application}}", B: b, PORT: 8080 }
servers: [{ host: 10.0.0.1, roles: [app] }]
rollout:
  select: { roles: [app] }
  steps:
    - { name: restart, run: "restart", env: { A: "{{host.address}}" }, sudo: { user: app } }
"#;
        let built = build(&load(plan), &BuildOptions::default()).unwrap();
        let Action::Run { command } = &built.batches[0].hosts[0].steps[0].action else { panic!() };
        assert_eq!(command, "sudo -n -u 'app' -- env A='10.0.0.1' B='b' PORT='8080' restart");

        let bad = plan.replace("run: \"restart\"", "wait: { sleep: 1s }").replace("A: \"{{host", "1A: \"{{host");
        let errors = build(&load(&bad), &BuildOptions::default()).unwrap_err();
        let messages: Vec<&str> = errors.problems.iter().map(|p| p.message.as_str()).collect();
        assert!(messages.contains(&"step `restart`: `sudo` applies to `run` steps only"), "{messages:?}");
        assert!(messages.contains(&"step `restart`: `env` applies to `run` and `local` steps only"), "{messages:?}");
    }

    #[test]
    fn batch_sizes_round_up_and_ramps_repeat_their_last_entry() {
        let one = |s| BatchSize::One(s);
        assert_eq!(batch_sizes(&one(BatchStep::Count(1)), 3), [1, 1, 1]);
        assert_eq!(batch_sizes(&one(BatchStep::Count(10)), 3), [3]);
        assert_eq!(batch_sizes(&one(BatchStep::Percent(50)), 5), [3, 2]);
        assert_eq!(batch_sizes(&one(BatchStep::Percent(1)), 3), [1, 1, 1]);
        assert_eq!(batch_sizes(&BatchSize::Ramp(vec![BatchStep::Count(1), BatchStep::Percent(50)]), 5), [1, 3, 1]);
        assert_eq!(batch_sizes(&BatchSize::Ramp(vec![]), 2), [1, 1]);
    }

    #[test]
    fn when_filters_steps_per_host() {
        let plan = PLAN.replace(
            "- { name: restart, run: \"restart {{batch.index}}\" }",
            "- { name: restart, run: \"restart\", when: { options: { canary: true } } }",
        );
        let plan = plan.replace(
            "- { host: 10.0.0.1, roles: [app] }",
            "- { host: 10.0.0.1, roles: [app], options: { canary: true } }",
        );
        let built = build(&load(&plan), &BuildOptions::default()).unwrap();
        let steps: Vec<usize> = built.batches.iter().flat_map(|b| b.hosts.iter().map(|h| h.steps.len())).collect();
        assert_eq!(steps, [2, 1, 1, 1]);
    }

    #[test]
    fn skip_balancer_drops_balancer_steps_and_balancer_up_waits() {
        let plan = r#"
version: 1
application: shop
servers: [{ host: 10.0.0.1, roles: [app] }]
balancers: { lb: { kind: linode, token_env: T, label: x, port: 80 } }
rollout:
  select: { roles: [app] }
  steps:
    - { name: reject, balancer: { use: lb, action: reject, node: "{{host.address}}:80" } }
    - { name: restart, run: restart }
    - { name: accept, balancer: { use: lb, action: accept, node: "{{host.address}}:80" } }
    - { name: up, wait: { balancer_up: lb, node: "{{host.address}}:80" } }
"#;
        let built = build(&load(plan), &BuildOptions::default()).unwrap();
        let names: Vec<&str> = built.batches[0].hosts[0].steps.iter().map(|s| s.step.as_str()).collect();
        assert_eq!(names, ["restart"]);
        let rolled = build(
            &load(&plan.replace("select: { roles: [app] }", "select: { roles: [app] }\n  single_host: roll")),
            &BuildOptions::default(),
        )
        .unwrap();
        assert_eq!(rolled.batches[0].hosts[0].steps.len(), 4);
        let Action::Balancer { wait_up, .. } = rolled.batches[0].hosts[0].steps[2].action else { panic!() };
        assert!(wait_up);
    }

    #[test]
    fn a_broken_status_template_counts_each_host_once() {
        let plan = r#"
version: 1
application: shop
servers: [{ host: 10.0.0.1, roles: [app] }, { host: 10.0.0.2, roles: [app] }]
balancers:
  lb: { kind: command, reject: "off {{node}}", accept: "on {{node}}", status: "st {{nod}}" }
rollout:
  select: { roles: [app] }
  steps:
    - { name: reject, balancer: { use: lb, action: reject, node: "{{host.address}}" } }
    - { name: accept, balancer: { use: lb, action: accept, node: "{{host.address}}" } }
"#;
        let errors = build(&load(plan), &BuildOptions::default()).unwrap_err();
        assert_eq!(errors.problems.len(), 1, "{}", errors.render(false));
        assert_eq!(
            errors.problems[0].message,
            "balancer `lb`: `{{nod}}` does not resolve for host `10.0.0.1` and 1 more host"
        );
    }

    #[test]
    fn http_balancer_templates_are_checked_per_host() {
        let plan = r#"
version: 1
application: shop
servers: [{ host: 10.0.0.1, roles: [app] }, { host: 10.0.0.2, roles: [app] }]
balancers:
  hook:
    kind: http
    reject: { url: "http://lb/{{node}}/off" }
    accept: { url: "http://lb/{{nod}}/on" }
rollout:
  select: { roles: [app] }
  steps:
    - { name: reject, balancer: { use: hook, action: reject, node: "{{host.address}}" } }
    - { name: accept, balancer: { use: hook, action: accept, node: "{{host.address}}" } }
"#;
        let errors = build(&load(plan), &BuildOptions::default()).unwrap_err();
        assert_eq!(errors.problems.len(), 1, "{}", errors.render(false));
        let p = &errors.problems[0];
        assert_eq!(p.message, "balancer `hook`: `{{nod}}` does not resolve for host `10.0.0.1` and 1 more host");
        assert_eq!(p.help.as_deref(), Some("did you mean `node`?"));
    }
}
