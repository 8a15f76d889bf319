//! The checks a schema cannot express: references between the parts of a plan, and
//! fields that mean nothing where they are written. Every such check of a plan is here,
//! so a plan that loads is one the graph can be built from.

use std::collections::{HashMap, HashSet};

use crate::diagnostic::Problem;
use crate::model::select::{self, SelectedHosts};
use crate::model::{BalancerAction, Plan, Step};
use crate::text::{backticked_list, did_you_mean};
use crate::yaml::{self, Node};

/// The checks a schema cannot express: references between parts of the plan.
pub(crate) fn check_semantics(plan: &Plan, root: &Node) -> (SelectedHosts, Vec<Problem>) {
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

    for (list, steps) in [("/before", &plan.before), ("/rollout/steps", &plan.rollout.steps), ("/after", &plan.after)] {
        check_steps(plan, list, steps, root, &mut problems);
    }

    // Jump specs are checked here, at their position, rather than at connect time.
    let ssh_settings = std::iter::once(("/ssh".to_string(), Some(&plan.ssh)))
        .chain(plan.servers.iter().enumerate().map(|(i, s)| (format!("/servers/{i}/ssh"), s.ssh.as_ref())));
    for (at, settings) in ssh_settings {
        let Some(jump) = settings.and_then(|s| s.jump.as_ref()) else { continue };
        for (k, hop) in jump.hops().into_iter().enumerate() {
            if hop.eq_ignore_ascii_case("none") && jump.hops().len() == 1 {
                continue;
            }
            if let Err(why) = crate::ssh_settings::parse_hop(hop) {
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

fn check_steps(plan: &Plan, list: &str, steps: &[Step], root: &Node, problems: &mut Vec<Problem>) {
    let span = |pointer: &str| root.span_at(pointer);
    let in_rollout = list == "/rollout/steps";
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
        if kinds.len() != 1 {
            let message = if kinds.is_empty() {
                format!("step `{}` does nothing", step.name)
            } else {
                format!("step `{}` sets {}; a step does one thing", step.name, backticked_list(&kinds))
            };
            problems.push(Problem::at(span(&at), message).label("this step").help(
                "give it exactly one of `run`, `local`, `balancer` or `wait`; split it into several steps to do more",
            ));
        }

        if let Some(b) = &step.balancer {
            unknown_balancer(plan, step, &b.balancer, root.span_at(&format!("{at}/balancer/use")), problems);
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
                let put_back = steps[i + 1..].iter().any(|later| {
                    later
                        .balancer
                        .as_ref()
                        .is_some_and(|l| l.balancer == b.balancer && l.action == BalancerAction::Accept)
                });
                if !put_back {
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
            if kinds.len() != 1 {
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
                unknown_balancer(plan, step, name, root.span_at(&format!("{wait_at}/balancer_up")), problems);
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

fn unknown_balancer(plan: &Plan, step: &Step, name: &str, at: yaml::Span, problems: &mut Vec<Problem>) {
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
        Problem::at(at, format!("step `{}` uses the balancer `{name}`, which is not defined", step.name))
            .label("unknown balancer")
            .help(help),
    );
}
