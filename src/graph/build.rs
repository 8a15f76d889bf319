//! Building the execution plan: `--limit`, the batch sizes, and the order in which the
//! renderer visits the plan's lists for each host.

use serde_json::Value;

use crate::diagnostic::{PlanErrors, Problem};
use crate::graph::limit::limit;
use crate::graph::render::Builder;
use crate::graph::types::{Batch, BuildOptions, ExecutionPlan, HostRef, HostSteps, Phase};
use crate::model::select::server_name;
use crate::model::{BatchSize, Plan, SingleHost, Sudo};
use crate::text::did_you_mean;
use crate::validate::LoadedPlan;

/// Whether `single_host: skip_balancer` applies: one host selected by the plan. A
/// `--limit` to one host of a larger fleet does not count: that host still serves
/// traffic beside the others, so it must leave the balancer before it restarts.
pub fn skips_balancer(loaded: &LoadedPlan) -> bool {
    loaded.plan.rollout.single_host == SingleHost::SkipBalancer && loaded.selection.hosts.len() == 1
}

/// Whether `single_host: skip_balancer` left steps out of this plan's rollout.
pub fn balancer_skipped(loaded: &LoadedPlan) -> bool {
    skips_balancer(loaded) && loaded.plan.rollout.steps.iter().any(crate::model::Step::uses_balancer)
}

/// Which list of the plan a run's hosts go through in their rolling window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StepList {
    /// `rollout.steps` (with `rollout.on_failure`), between `before` and `after`.
    #[default]
    Rollout,
    /// `rollback.steps`, alone: `planrun rollback`.
    Rollback,
}

/// What a run adds to the command line's options: its `{{run.*}}` values, the list its
/// hosts go through, and for a rollback the hosts it goes back on.
#[derive(Debug, Clone, Default)]
pub struct RunSpec {
    pub run: crate::graph::RunValues,
    pub list: StepList,
    /// Only the hosts of these names (after `--limit`); `None`: every selected host.
    pub only: Option<Vec<String>>,
}

/// The step graph of a validated plan, with every template rendered for every host
/// (`{{run.*}}` as placeholders). Every template problem of the plan comes back at once.
pub fn build(loaded: &LoadedPlan, options: &BuildOptions) -> Result<ExecutionPlan, PlanErrors> {
    build_run(loaded, options, &RunSpec::default())
}

/// The step graph of one run: `build` with the run's values, list and hosts.
pub fn build_run(loaded: &LoadedPlan, options: &BuildOptions, spec: &RunSpec) -> Result<ExecutionPlan, PlanErrors> {
    let plan = &loaded.plan;
    let fail = |problems| PlanErrors::in_files(loaded.files.clone(), problems);

    let mut servers = limit(plan, &loaded.selection.hosts, options.limit.as_deref()).map_err(fail)?;
    if let Some(only) = &spec.only {
        servers.retain(|&i| only.iter().any(|name| name == server_name(&plan.servers[i])));
    }
    let hosts = host_refs(plan, &servers);
    let sizes = batch_sizes(options.batch_size.as_ref().unwrap_or(&plan.rollout.batch_size), hosts.len());
    let vars = template_vars(plan, options).map_err(fail)?;

    let rendered = render(plan, &loaded.root, &loaded.files, vars, &hosts, sizes, skips_balancer(loaded), spec);
    let (before, batches, after) = rendered.map_err(fail)?;
    Ok(ExecutionPlan {
        application: plan.application.clone(),
        hosts,
        before,
        batches,
        after,
        fan_out: plan.rollout.fan_out as usize,
    })
}

/// The template problems of a plan that has other problems too, so that all of them
/// are shown at once: its templates rendered with the plan's own `vars` for `servers`
/// (the ones its selection matches, as far as that is sound).
pub(crate) fn template_problems(
    plan: &Plan,
    root: &crate::yaml::Tree,
    files: &[std::sync::Arc<crate::diagnostic::SourceFile>],
    servers: &[usize],
) -> Vec<Problem> {
    let hosts = host_refs(plan, servers);
    let sizes = batch_sizes(&plan.rollout.batch_size, hosts.len());
    let skip_balancer = plan.rollout.single_host == SingleHost::SkipBalancer && servers.len() == 1;
    render(plan, root, files, plan_vars(plan), &hosts, sizes, skip_balancer, &RunSpec::default())
        .err()
        .unwrap_or_default()
}

/// What `planrun exec` runs: the hosts `--limit` keeps, in rollout order, and the
/// command as sent to each.
#[derive(Debug, Clone)]
pub struct AdHoc {
    pub hosts: Vec<HostRef>,
    /// One per host, in `hosts` order.
    pub commands: Vec<String>,
}

/// The ad-hoc `command` for every host `--limit` keeps: the plan's `env` (with
/// `--var`) rendered for each host, and `sudo -n` when asked. The command itself is
/// sent as written.
pub fn ad_hoc(
    loaded: &LoadedPlan,
    options: &BuildOptions,
    command: &str,
    sudo: Option<&Sudo>,
) -> Result<AdHoc, PlanErrors> {
    let plan = &loaded.plan;
    let fail = |problems| PlanErrors::in_files(loaded.files.clone(), problems);
    let hosts = host_refs(plan, &limit(plan, &loaded.selection.hosts, options.limit.as_deref()).map_err(fail)?);
    let vars = template_vars(plan, options).map_err(fail)?;
    let mut b = Builder::new(plan, &loaded.root, &loaded.files, vars, hosts.len());
    let commands = (0..hosts.len()).map(|h| b.ad_hoc_command(command, sudo, h, &hosts)).collect();
    let problems = b.finish();
    if !problems.is_empty() {
        return Err(fail(problems));
    }
    Ok(AdHoc { hosts, commands })
}

/// The variables templates see: the plan's `vars`, with `--var` over them. A `--var`
/// the plan does not have is a problem (a typo would otherwise go unnoticed).
fn template_vars(plan: &Plan, options: &BuildOptions) -> Result<serde_json::Map<String, Value>, Vec<Problem>> {
    let mut vars = plan_vars(plan);
    let unknown: Vec<Problem> = options
        .vars
        .iter()
        .map(|(k, _)| k)
        .filter(|k| !plan.vars.contains_key(*k))
        .map(|k| {
            let help = match did_you_mean(k, plan.vars.keys().map(String::as_str)) {
                Some(best) => format!("did you mean `{best}`?"),
                None if plan.vars.is_empty() => "this plan has no `vars`; add it under `vars:` first".to_string(),
                None => format!(
                    "the plan's variables: {}",
                    plan.vars.keys().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
                ),
            };
            Problem::whole_file(format!("`--var {k}=…` names a variable the plan does not have")).help(help)
        })
        .collect();
    if !unknown.is_empty() {
        return Err(unknown);
    }
    for (k, v) in &options.vars {
        vars.insert(k.clone(), Value::String(v.clone()));
    }
    Ok(vars)
}

fn host_refs(plan: &Plan, servers: &[usize]) -> Vec<HostRef> {
    servers
        .iter()
        .map(|&i| {
            let s = &plan.servers[i];
            HostRef { server: i, name: server_name(s).to_string(), address: s.host.clone() }
        })
        .collect()
}

fn plan_vars(plan: &Plan) -> serde_json::Map<String, Value> {
    plan.vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

type Rendered = (Vec<crate::graph::types::StepInstance>, Vec<Batch>, Vec<crate::graph::types::StepInstance>);

/// Every step of the plan for every host, its templates rendered: `before`, the
/// batches of `sizes`, `after`; or every problem the rendering found. Every list is
/// rendered for every host whichever one the run goes through, so `validate`, `apply`
/// and `rollback` find the same problems.
#[allow(clippy::too_many_arguments)]
fn render(
    plan: &Plan,
    root: &crate::yaml::Tree,
    files: &[std::sync::Arc<crate::diagnostic::SourceFile>],
    vars: serde_json::Map<String, Value>,
    hosts: &[HostRef],
    sizes: Vec<usize>,
    skip_balancer: bool,
    spec: &RunSpec,
) -> Result<Rendered, Vec<Problem>> {
    let mut b = Builder::new(plan, root, files, vars, hosts.len());
    b.set_run(&spec.run);
    let before = b.compile_list(Phase::Before, "/before", &plan.before, false);
    let rollout = b.compile_list(Phase::Rollout, "/rollout/steps", &plan.rollout.steps, skip_balancer);
    let on_failure = b.compile_list(Phase::OnFailure, "/rollout/on_failure", &plan.rollout.on_failure, skip_balancer);
    let after = b.compile_list(Phase::After, "/after", &plan.after, false);
    let rollback_steps = plan.rollback.as_ref().map_or(&[][..], |r| &r.steps[..]);
    let rollback = b.compile_list(Phase::Rollback, "/rollback/steps", rollback_steps, skip_balancer);

    let before = b.fan_out(&before, hosts);
    let mut batches = Vec::with_capacity(sizes.len());
    let mut next = 0;
    for (k, size) in sizes.into_iter().enumerate() {
        b.set_batch(Some(k));
        let mut batch = Batch { index: k, hosts: Vec::with_capacity(size) };
        for h in next..next + size {
            b.enter_host(h, hosts);
            let rollout_steps = b.host_steps(&rollout, h, hosts);
            let on_failure = b.host_steps(&on_failure, h, hosts);
            let rollback_steps = b.host_steps(&rollback, h, hosts);
            batch.hosts.push(match spec.list {
                StepList::Rollout => HostSteps { host: h, steps: rollout_steps, on_failure },
                StepList::Rollback => HostSteps { host: h, steps: rollback_steps, on_failure: Vec::new() },
            });
        }
        next += size;
        batches.push(batch);
    }
    b.set_batch(None);
    let after = b.fan_out(&after, hosts);

    let problems = b.finish();
    if !problems.is_empty() {
        return Err(problems);
    }
    match spec.list {
        StepList::Rollout => Ok((before, batches, after)),
        // A rollback switches back what the run built: `before` and `after` are the run's.
        StepList::Rollback => Ok((Vec::new(), batches, Vec::new())),
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
