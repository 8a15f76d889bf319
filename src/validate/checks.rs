//! The checks a schema cannot express: references between the parts of a plan, and
//! fields that mean nothing where they are written. Every such check of a plan is here,
//! so a plan that loads is one the graph can be built from.

use crate::model::duration::MAX_DURATION;
use std::collections::{HashMap, HashSet};

use crate::diagnostic::Problem;
use crate::model::duration::HumanDuration;
use crate::model::select::{self, SelectedHosts};
use crate::model::{BalancerAction, Plan, SingleHost, Step};
use crate::text::{backticked_list, did_you_mean, pointer_escape};
use crate::yaml::{self, Tree};

/// The checks a schema cannot express: references between parts of the plan. `refused`
/// are the paths the schema refused and that were left out of `plan`: a step that does
/// nothing because its misspelt `rnu` was left out is that one problem, not two.
pub(crate) fn check_semantics(plan: &Plan, root: &Tree, refused: &[String]) -> (SelectedHosts, Vec<Problem>) {
    let mut problems = Vec::new();
    let span = |pointer: &str| root.span_at(pointer);

    // Servers must be told apart: `--limit`, the journal and the output name them. A
    // server is known by its `name`, else by its `host`, so two app instances on one
    // machine are fine when they are named.
    let mut first_seen: HashMap<&str, usize> = HashMap::new();
    for (i, server) in plan.servers.iter().enumerate() {
        let (id, field, what) = match &server.name {
            Some(name) => (name.as_str(), "name", "server name"),
            None => (server.host.as_str(), "host", "host"),
        };
        if let Some(&j) = first_seen.get(id) {
            let first_field = if plan.servers[j].name.is_some() { "name" } else { "host" };
            problems.push(
                Problem::at(span(&format!("/servers/{i}/{field}")), format!("duplicate {what} `{id}`"))
                    .label("listed a second time")
                    .related(span(&format!("/servers/{j}/{first_field}")), "first listed here")
                    .help("list each server once and give it several `roles`; two servers on one address need distinct `name`s"),
            );
        } else {
            first_seen.insert(id, i);
        }
    }

    // Roles in the selection must exist: a typo would silently select nothing.
    let known_roles: Vec<&str> = {
        let mut seen = HashSet::new();
        plan.servers.iter().flat_map(|s| s.roles.iter().map(String::as_str)).filter(|r| seen.insert(*r)).collect()
    };
    let mut role_error = false;
    for (i, role) in plan.rollout.select.roles.iter().enumerate() {
        if !known_roles.contains(&role.as_str()) {
            role_error = true;
            let help = match did_you_mean(role, known_roles.iter().copied()) {
                Some(best) => format!("did you mean `{best}`?"),
                None => format!("the roles in this plan are {}", backticked_list(&known_roles)),
            };
            problems.push(
                Problem::at(span(&format!("/rollout/select/roles/{i}")), format!("no server has the role `{role}`"))
                    .label("unknown role")
                    .help(help),
            );
        }
    }

    let selection = select::select(plan);
    if selection.hosts.is_empty() && !role_error {
        problems.push(
            Problem::at(span("/rollout/select"), "`rollout.select` matches no server")
                .label("matches nothing")
                .help("every server with these roles is excluded; loosen `exclude` or add servers"),
        );
    }

    if let Some(host) = plan.lock.as_ref().and_then(|l| l.host.as_deref())
        && host != "local"
        && !plan.servers.iter().any(|s| s.name.as_deref() == Some(host) || s.host == host)
    {
        let names: Vec<&str> = plan.servers.iter().map(|s| s.name.as_deref().unwrap_or(&s.host)).collect();
        let help = match did_you_mean(host, names.iter().copied()) {
            Some(best) => format!("did you mean `{best}`?"),
            None => "name one of the plan's servers, or `local` for the machine running planrun".to_string(),
        };
        problems.push(
            Problem::at(span("/lock/host"), format!("the lock is on `{host}`, which is not a server of this plan"))
                .label("unknown server")
                .help(help),
        );
    }

    if plan.lock.is_some() && plan.state.is_some() {
        problems.push(
            Problem::at(span("/lock"), "`lock` has no effect: the lock is in PostgreSQL (`state.postgres`)")
                .label("not used")
                .help("remove `lock`; with `state`, the lock is a PostgreSQL advisory lock"),
        );
    }

    for (list, steps) in plan.step_lists() {
        check_steps(plan, list, steps, root, refused, &mut problems);
    }
    check_durations(plan, root, &mut problems);
    crate::validate::guard::check_guard(plan, root, &mut problems);
    crate::validate::values::check_plan_values(plan, root, &mut problems);

    // Jump specs are checked here, at their position, rather than at connect time.
    let ssh_settings = std::iter::once(("/ssh".to_string(), Some(&plan.ssh)))
        .chain(plan.servers.iter().enumerate().map(|(i, s)| (format!("/servers/{i}/ssh"), s.ssh.as_ref())));
    for (at, settings) in ssh_settings {
        let Some(jump) = settings.and_then(|s| s.jump.as_ref()) else { continue };
        for (k, hop) in jump.hops().into_iter().enumerate() {
            if hop.eq_ignore_ascii_case("none") && jump.hops().len() == 1 {
                continue;
            }
            if let Err(why) = crate::model::parse_hop(hop) {
                let pointer = match jump {
                    crate::model::Jump::One(_) => format!("{at}/jump"),
                    crate::model::Jump::Chain(_) => format!("{at}/jump/{k}"),
                };
                let (message, help) = why.split_once("; ").unwrap_or((&why, "write `[user@]host[:port]`"));
                problems.push(
                    Problem::at(span(&pointer), format!("jump host `{hop}`: {message}"))
                        .label("invalid jump host")
                        .help(help.to_string()),
                );
            }
        }
    }
    (selection, problems)
}

/// `env` names, and `sudo` and `env` where a step runs no command of the host. These
/// were once found while building the graph, which reports its problems by position;
/// they keep that order among themselves, and come after the plan's other problems
/// are fixed, as they always have.
pub(crate) fn check_wrapping(plan: &Plan, root: &Tree, selection: &SelectedHosts) -> Vec<Problem> {
    let skip_balancer = plan.rollout.single_host == SingleHost::SkipBalancer && selection.hosts.len() == 1;
    let mut problems = Vec::new();
    for name in plan.env.keys() {
        check_env_name(root, "/env", name, "plan `env`", &mut problems);
    }
    for (list, steps) in plan.step_lists() {
        for (index, step) in steps.iter().enumerate() {
            // `single_host: skip_balancer` leaves these steps out of the rollout unread.
            if skip_balancer && crate::model::in_window(list) && step.uses_balancer() {
                continue;
            }
            let at = format!("{list}/{index}");
            let owner = format!("step `{}`", step.name);
            if step.run.is_none() && step.local.is_none() {
                refuse_wrapping(root, &at, &owner, step, &mut problems);
                continue;
            }
            for name in step.env.keys() {
                check_env_name(root, &format!("{at}/env"), name, &owner, &mut problems);
            }
            if step.local.is_some() && step.run.is_none() && step.sudo.as_ref().is_some_and(|s| s.sudo().is_some()) {
                problems.push(
                    Problem::at(
                        root.span_at(&format!("{at}/sudo")),
                        format!("{owner}: `sudo` applies to `run` steps only"),
                    )
                    .label("a `local` step")
                    .help(
                        "a `local` step runs on the machine running planrun; put `sudo` in its command if it needs it",
                    ),
                );
            }
        }
    }
    problems.sort_by_key(|p| p.span.map(|s| s.offset));
    problems
}

fn check_env_name(root: &Tree, at: &str, name: &str, owner: &str, problems: &mut Vec<Problem>) {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        let key = format!("{at}/{}", pointer_escape(name));
        let span = root.key_span(&key).unwrap_or_else(|| root.span_at(at));
        problems.push(
            Problem::at(span, format!("{owner}: `{name}` is not a valid environment variable name"))
                .label("invalid name")
                .help("use letters, digits and `_`, not starting with a digit: `RAILS_ENV`"),
        );
    }
}

/// `sudo` and `env` only mean something for commands; elsewhere they would be
/// silently ignored, so they are refused.
fn refuse_wrapping(root: &Tree, at: &str, owner: &str, step: &Step, problems: &mut Vec<Problem>) {
    if step.sudo.as_ref().is_some_and(|s| s.sudo().is_some()) {
        problems.push(
            Problem::at(root.span_at(&format!("{at}/sudo")), format!("{owner}: `sudo` applies to `run` steps only"))
                .label("not a `run` step")
                .help("remove `sudo`, or make this a `run` step"),
        );
    }
    if !step.env.is_empty() {
        problems.push(
            Problem::at(
                root.span_at(&format!("{at}/env")),
                format!("{owner}: `env` applies to `run` and `local` steps only"),
            )
            .label("not a command step")
            .help("remove `env`, or move it to the step that runs the command"),
        );
    }
}

fn check_steps(plan: &Plan, list: &str, steps: &[Step], root: &Tree, refused: &[String], problems: &mut Vec<Problem>) {
    let span = |pointer: &str| root.span_at(pointer);
    let in_rollout = crate::model::in_window(list);
    let mut names: HashMap<&str, usize> = HashMap::new();

    for (i, step) in steps.iter().enumerate() {
        let at = format!("{list}/{i}");
        if let Some(&j) = names.get(step.name.as_str()) {
            problems.push(
                Problem::at(span(&format!("{at}/name")), format!("duplicate step name `{}`", step.name))
                    .label("used a second time")
                    .related(span(&format!("{list}/{j}/name")), "first used here")
                    .help("give every step in a list its own name: output and `--resume` refer to steps by name"),
            );
        } else {
            names.insert(&step.name, i);
        }

        let kinds = step.kinds();
        let lost_a_part =
            |at: &str| refused.iter().any(|p| p.strip_prefix(at).is_some_and(|rest| rest.starts_with('/')));
        if kinds.len() != 1 && !(kinds.is_empty() && lost_a_part(&at)) {
            let message = if kinds.is_empty() {
                format!("step `{}` does nothing", step.name)
            } else {
                format!("step `{}` sets {}; a step does one thing", step.name, backticked_list(&kinds))
            };
            problems.push(Problem::at(span(&at), message).label("this step").help(
                "give it exactly one of `run`, `local`, `balancer` or `wait`; split it into several steps to do more",
            ));
        }

        if !in_rollout && step.local.is_some() && step.when.is_some() {
            problems.push(
                Problem::at(
                    span(&format!("{at}/when")),
                    format!("`when` on the `local` step `{}` outside the rollout", step.name),
                )
                .label("no host to match")
                .help("a `local` step in `before` or `after` runs once, for no host: remove `when`"),
            );
        }
        if let Some(b) = &step.balancer {
            unknown_balancer(plan, step, &b.balancer, || root.span_at(&format!("{at}/balancer/use")), problems);
            if b.action == BalancerAction::Accept
                && b.wait_up == Some(true)
                && let Some(balancer) = plan.balancers.get(&b.balancer)
                && !can_report_up(balancer)
            {
                problems.push(
                    Problem::at(
                        span(&format!("{at}/balancer/wait_up")),
                        format!(
                            "the `{}` balancer `{}` has no `status`, so `wait_up` can never pass",
                            balancer.kind(),
                            b.balancer
                        ),
                    )
                    .label("cannot be read")
                    .help(format!("add `status` to the balancer `{}`, or remove `wait_up`", b.balancer)),
                );
            }
            if b.action == BalancerAction::Accept && step.continue_on_error {
                problems.push(
                    Problem::at(
                        span(&format!("{at}/continue_on_error")),
                        format!("`continue_on_error` on the `accept` of step `{}`", step.name),
                    )
                    .label("would leave the node out")
                    .help("remove `continue_on_error`: an `accept` that fails would leave the node out of rotation while the run goes on"),
                );
            }
            if !in_rollout {
                problems.push(
                    Problem::at(
                        span(&format!("{at}/balancer")),
                        format!("step `{}` changes a balancer outside the rollout", step.name),
                    )
                    .label("balancer step")
                    .help("balancer steps take one host's node out of rotation: put them in `rollout.steps`"),
                );
            } else if matches!(b.action, BalancerAction::Reject | BalancerAction::Drain)
                && plan.balancers.contains_key(&b.balancer)
            {
                let put_back = steps.iter().enumerate().skip(i + 1).find(|(_, later)| {
                    later
                        .balancer
                        .as_ref()
                        .is_some_and(|l| l.balancer == b.balancer && l.action == BalancerAction::Accept)
                });
                if let Some((j, accept)) = put_back {
                    let when_of = |s: &Step| s.when.as_ref().map(|w| serde_json::to_value(w).ok());
                    if when_of(accept) != when_of(step) {
                        let pointer =
                            if accept.when.is_some() { format!("{list}/{j}/when") } else { format!("{list}/{j}/name") };
                        problems.push(
                            Problem::at(
                                span(&pointer),
                                format!(
                                    "step `{}` puts the node back under a different `when` than step `{}` took it out",
                                    accept.name, step.name
                                ),
                            )
                            .label("the `accept` could be skipped")
                            .related(span(&format!("{at}/balancer/action")), "taken out here")
                            .help(format!(
                                "give the `accept` the same `when` as the `{}` (or none on both): a host whose `accept` is skipped stays out of rotation",
                                b.action.as_str()
                            )),
                        );
                    }
                } else {
                    problems.push(
                        Problem::at(
                            span(&format!("{at}/balancer/action")),
                            format!("step `{}` takes the node out of `{}` and no later step puts it back", step.name, b.balancer),
                        )
                        .label(format!("`{}` without a later `accept`", b.action.as_str()))
                        .help(format!(
                            "add a later step `balancer: {{ use: {}, action: accept, node: ... }}`, or every host would stay out of rotation",
                            b.balancer
                        )),
                    );
                }
            }
        }

        if let Some(wait) = &step.wait {
            let wait_at = format!("{at}/wait");
            let kinds = wait.kinds();
            if kinds.len() != 1 && !(kinds.is_empty() && lost_a_part(&wait_at)) {
                let message = if kinds.is_empty() {
                    format!("the wait of step `{}` checks nothing", step.name)
                } else {
                    format!(
                        "the wait of step `{}` sets {}; a wait checks one thing",
                        step.name,
                        backticked_list(&kinds)
                    )
                };
                problems.push(
                    Problem::at(span(&wait_at), message)
                        .label("this wait")
                        .help("give it exactly one of `sleep`, `http`, `tcp`, `command` or `balancer_up`"),
                );
            }
            if let Some(name) = &wait.balancer_up {
                unknown_balancer(plan, step, name, || root.span_at(&format!("{wait_at}/balancer_up")), problems);
                if wait.node.is_none() {
                    problems.push(
                        Problem::at(
                            span(&format!("{wait_at}/balancer_up")),
                            format!("the `balancer_up` wait of step `{}` names no node", step.name),
                        )
                        .label("which node?")
                        .help("add `node:`, such as `node: \"{{host.options.private_ip}}:80\"`"),
                    );
                }
            }
            let timeout = wait.timeout.or(step.timeout).map_or(crate::graph::DEFAULT_WAIT_TIMEOUT, HumanDuration::get);
            let interval = wait.interval.map_or(crate::graph::DEFAULT_WAIT_INTERVAL, HumanDuration::get);
            let timeout_text = humantime::format_duration(timeout);
            if wait.sleep.is_none() {
                if let Some(stable) = wait.stable_for
                    && stable.get() >= timeout
                    && stable.get() <= MAX_DURATION
                {
                    problems.push(
                        Problem::at(
                            span(&format!("{wait_at}/stable_for")),
                            format!("the wait of step `{}` can never pass: `stable_for` is not shorter than its timeout of {timeout_text}", step.name),
                        )
                        .label("never reached")
                        .help("make `stable_for` shorter than the wait's `timeout`, or the `timeout` longer"),
                    );
                }
                let successes = wait.successes.unwrap_or(1);
                if successes > 1
                    && interval <= MAX_DURATION
                    && timeout <= MAX_DURATION
                    && interval.saturating_mul(successes - 1) > timeout
                {
                    problems.push(
                        Problem::at(
                            span(&format!("{wait_at}/successes")),
                            format!(
                                "the wait of step `{}` can never pass: {successes} checks {} apart take longer than its timeout of {timeout_text}",
                                step.name,
                                humantime::format_duration(interval)
                            ),
                        )
                        .label("never reached")
                        .help("lower `successes` or `interval`, or make the `timeout` longer"),
                    );
                }
            }
            if let Some(name) = &wait.balancer_up
                && let Some(balancer) = plan.balancers.get(name)
                && !can_report_up(balancer)
            {
                problems.push(
                    Problem::at(
                        span(&format!("{wait_at}/balancer_up")),
                        format!(
                            "the `{}` balancer `{name}` has no `status`, so a `balancer_up` wait can never pass",
                            balancer.kind()
                        ),
                    )
                    .label("cannot be read")
                    .help(format!("add `status` to the balancer `{name}`, or wait with `http` or `tcp` instead")),
                );
            }
            if wait.http.is_none() && wait.status.is_some() {
                problems.push(
                    Problem::at(span(&format!("{wait_at}/status")), "`status` only applies to an `http` wait")
                        .label("ignored")
                        .help("remove `status`, or make this an `http` wait"),
                );
            }
            if wait.node.is_some() && wait.balancer_up.is_none() {
                problems.push(
                    Problem::at(span(&format!("{wait_at}/node")), "`node` only applies to a `balancer_up` wait")
                        .label("ignored")
                        .help("remove `node`, or make this a `balancer_up` wait"),
                );
            }
        }
    }
}

/// `at` gives the position only when there is a problem: finding it may rebuild the tree.
fn unknown_balancer(
    plan: &Plan,
    step: &Step,
    name: &str,
    at: impl FnOnce() -> yaml::Span,
    problems: &mut Vec<Problem>,
) {
    if plan.balancers.contains_key(name) {
        return;
    }
    let names: Vec<&str> = plan.balancers.keys().map(String::as_str).collect();
    let help = match did_you_mean(name, names.iter().copied()) {
        Some(best) => format!("did you mean `{best}`?"),
        None if names.is_empty() => "define it under `balancers:` at the top level".to_string(),
        None => format!("the balancers of this plan are {}", backticked_list(&names)),
    };
    problems.push(
        Problem::at(at(), format!("step `{}` uses the balancer `{name}`, which is not defined", step.name))
            .label("unknown balancer")
            .help(help),
    );
}

/// Every duration of a plan is bounded, so it can be added to a clock; a step's and a
/// wait's `timeout` and a wait's `interval` must also be more than zero.
fn check_durations(plan: &Plan, root: &Tree, problems: &mut Vec<Problem>) {
    let mut check = |pointer: String, d: Option<HumanDuration>, zero_ok: bool| {
        let Some(d) = d else { return };
        let field = pointer.rsplit('/').next().unwrap_or_default().to_string();
        if d.get() > MAX_DURATION {
            problems.push(
                Problem::at(root.span_at(&pointer), format!("`{field}` is longer than 30 days"))
                    .label("too long")
                    .help("durations are at most `30d`; write a shorter one, such as `10m`"),
            );
        } else if !zero_ok && d.get().is_zero() {
            problems.push(
                Problem::at(root.span_at(&pointer), format!("`{field}` is zero"))
                    .label("zero")
                    .help("nothing can finish in no time: give it a positive duration, such as `30s`"),
            );
        }
    };
    for (list, steps) in plan.step_lists() {
        for (i, step) in steps.iter().enumerate() {
            let at = format!("{list}/{i}");
            check(format!("{at}/timeout"), step.timeout, false);
            if let Some(wait) = &step.wait {
                check(format!("{at}/wait/sleep"), wait.sleep, true);
                check(format!("{at}/wait/interval"), wait.interval, false);
                check(format!("{at}/wait/timeout"), wait.timeout, false);
                check(format!("{at}/wait/stable_for"), wait.stable_for, true);
            }
        }
    }
    let ssh = std::iter::once(("/ssh".to_string(), Some(&plan.ssh)))
        .chain(plan.servers.iter().enumerate().map(|(i, s)| (format!("/servers/{i}/ssh"), s.ssh.as_ref())));
    for (at, settings) in ssh {
        if let Some(settings) = settings {
            check(format!("{at}/connect_timeout"), settings.connect_timeout, false);
        }
    }
    for (name, balancer) in &plan.balancers {
        if let crate::model::Balancer::Linode(l) = balancer {
            check(format!("/balancers/{}/drain_timeout", pointer_escape(name)), l.drain_timeout, true);
        }
    }
}

/// Whether a balancer can tell planrun that a node is up.
fn can_report_up(balancer: &crate::model::Balancer) -> bool {
    match balancer {
        crate::model::Balancer::Http(h) => h.status.is_some(),
        crate::model::Balancer::Command(c) => c.status.is_some(),
        _ => true,
    }
}
