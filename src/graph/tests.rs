//! The graph's tests: whole plans built and looked at.

use super::*;
use std::collections::HashMap;

use crate::model::{BatchSize, BatchStep, Sudo};
use crate::validate::LoadedPlan;

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
    let g = &plan.graph();
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
    let env = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
    assert_eq!(wrap_command("make", &[], None), "make");
    assert_eq!(
        wrap_command("cd /app && make", &env(&[("A", "it's"), ("B", "$HOME")]), None),
        r#"export A="it's" B='$HOME'; cd /app && make"#
    );
    assert_eq!(wrap_command("systemctl restart app", &[], Some(&Sudo::Root)), "sudo -n -- systemctl restart app");
    assert_eq!(
        wrap_command("cd /app && make", &env(&[("A", "1")]), Some(&Sudo::As("app".into()))),
        "sudo -n -u app -- env A=1 sh -c 'cd /app && make'"
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
    assert_eq!(command, "sudo -n -u app -- env A=10.0.0.1 B=b PORT=8080 restart");

    let bad = plan.replace("run: \"restart\"", "wait: { sleep: 1s }").replace("A: \"{{host", "1A: \"{{host");
    // Validation refuses what the graph could not honour.
    let errors = crate::validate::load_plan_bytes(std::path::Path::new("test.yaml"), bad.as_bytes()).unwrap_err();
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
    let plan = plan
        .replace("- { host: 10.0.0.1, roles: [app] }", "- { host: 10.0.0.1, roles: [app], options: { canary: true } }");
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
