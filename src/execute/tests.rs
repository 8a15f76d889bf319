//! The executor's rules on small local plans: no SSH, a `command` balancer whose pool is a
//! directory, the clock paused where a test would otherwise wait.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::redact::Redactor;
use crate::transport::{LocalTransport, Transport};

use crate::testing::{ROLLING, build};

async fn run_plan(exec: ExecutionPlan, balancers: &crate::balancer::Balancers) -> RunResult {
    let exec = Arc::new(exec);
    let mut hosts = std::collections::HashMap::new();
    for i in 0..exec.hosts.len() {
        hosts.insert(i, Arc::new(Transport::Local(LocalTransport::new())));
    }
    let transports = Transports { hosts, local: Arc::new(Transport::Local(LocalTransport::new())) };
    let (events, _rx) = crate::events::channel();
    let settings = Settings {
        run_id: "test".into(),
        plan_name: "plan.yaml".into(),
        max_failed_hosts: 0,
        dry_run: false,
        fan_out: 4,
        resume_of: None,
        batch_size: crate::model::BatchSize::One("1".parse().unwrap()),
        force: false,
        whole: exec.clone(),
        pause_after: Default::default(),
    };
    run(exec, transports, balancers.clone(), Emitter::new(events, Redactor::default()), Control::default(), settings)
        .await
}

fn balancers(exec: &ExecutionPlan, dir: &Path) -> crate::balancer::Balancers {
    let _ = exec;
    let loaded = crate::validate::load_plan(&dir.join("plan.yaml")).unwrap();
    crate::balancer::Balancers::new(&loaded.plan.balancers, None).unwrap()
}

fn in_pool(dir: &Path, host: &str) -> bool {
    dir.join("pool").join(host).exists()
}

/// Issue 12, reproduction 1: a host's task that panics (here: a timeout no clock can
/// add) must fail its host and the run, never end as "succeeded".
#[tokio::test]
async fn a_panicking_host_task_fails_its_host_and_halts() {
    let dir = tempfile::tempdir().unwrap();
    let mut exec = build(dir.path(), ROLLING);
    let restart = &mut exec.batches[0].hosts[0].steps[1];
    assert_eq!(restart.step, "restart");
    restart.timeout = Duration::MAX;
    let balancers = balancers(&exec, dir.path());
    let result = run_plan(exec, &balancers).await;
    assert_eq!(result.outcome, RunOutcome::Halted);
    assert_eq!(result.failures.len(), 1, "{:?}", result.failures);
    assert_eq!(result.failures[0].host, "h1");
    assert!(result.failures[0].error.contains("panicked"), "{}", result.failures[0].error);
    // h1 was taken out before its task panicked; nothing else was touched.
    assert!(!in_pool(dir.path(), "h1"));
    assert!(in_pool(dir.path(), "h2") && in_pool(dir.path(), "h3"));
}

/// Issue 12, reproduction 3: an `accept` that fails with `continue_on_error` leaves the
/// node out; the host's window must end as a failure, not a success.
#[tokio::test]
async fn a_node_left_out_at_the_end_of_its_window_fails_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let mut exec = build(dir.path(), ROLLING);
    for batch in &mut exec.batches {
        for host in &mut batch.hosts {
            let accept = host.steps.last_mut().unwrap();
            if let Action::Balancer { command, .. } = &mut accept.action {
                *command = Some("false".into());
            }
            accept.continue_on_error = true;
        }
    }
    let balancers = balancers(&exec, dir.path());
    let result = run_plan(exec, &balancers).await;
    assert_eq!(result.outcome, RunOutcome::Halted);
    assert_eq!(result.failures.len(), 1, "{:?}", result.failures);
    assert_eq!(result.failures[0].host, "h1");
    assert!(result.failures[0].error.contains("h1 on `pool` still out of rotation"), "{}", result.failures[0].error);
    assert!(in_pool(dir.path(), "h2"), "the run stopped before h2");
}

/// A wait that never passes fails at its timeout; the paused clock makes an hour instant.
/// (No commands here: a paused clock jumps ahead while a child process runs.)
#[tokio::test(start_paused = true)]
async fn a_wait_that_never_passes_fails_at_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let wait = format!("    - {{ name: healthy, wait: {{ tcp: \"{closed}\", interval: 10s, timeout: 1h }} }}\n");
    let wait = wait.as_str();
    let exec = build(dir.path(), wait);
    let balancers = balancers(&exec, dir.path());
    let result = run_plan(exec, &balancers).await;
    assert_eq!(result.outcome, RunOutcome::Halted);
    assert_eq!(result.failures[0].step, "healthy");
    assert!(result.failures[0].error.contains("did not pass within 1h"), "{}", result.failures[0].error);
}

/// Issue 18: `on_failure` runs on the failed host only; putting its node back restores
/// it, and without an `accept` there the node stays out and the recovery says so. The
/// host counts as failed either way.
#[tokio::test]
async fn on_failure_restores_the_failed_host_only_when_its_node_is_back() {
    let failing = r#"    - { name: reject, balancer: { use: pool, action: reject, node: "{{host.name}}" } }
    - { name: restart, run: "test {{host.name}} != h1" }
    - { name: accept, balancer: { use: pool, action: accept, node: "{{host.name}}", wait_up: false } }
"#;
    for (on_failure, restored) in [
        (
            "    - { name: put-back, balancer: { use: pool, action: accept, node: \"{{host.name}}\", wait_up: false } }\n",
            true,
        ),
        ("    - { name: look, run: \"true\" }\n", false),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let exec = build(dir.path(), &format!("{failing}  on_failure:\n{on_failure}"));
        let balancers = balancers(&exec, dir.path());
        let result = run_plan(exec, &balancers).await;
        assert_eq!(result.outcome, RunOutcome::Halted, "a restored host still counts as failed");
        assert_eq!(result.failures.len(), 1);
        let recovery = result.failures[0].recovery.clone();
        if restored {
            assert_eq!(recovery, Some(Recovery::Restored));
        } else {
            assert_eq!(recovery, Some(Recovery::StillOut("h1 on `pool`".into())));
        }
        assert_eq!(in_pool(dir.path(), "h1"), restored);
        assert!(in_pool(dir.path(), "h2") && in_pool(dir.path(), "h3"), "the run halted before h2");
    }
}
