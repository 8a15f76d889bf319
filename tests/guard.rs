//! The traffic guard (issue 19) on real components: HAProxy in front of real HTTP
//! backends that the plan really restarts, under a bounded load. A backend made to
//! answer 500 after its restart (its `/health` still 200, as a shallow health check
//! would) halts the rollout before the next batch, seen by the HTTP probe through the
//! frontend and by the balancer analysis of HAProxy's per-server counters; a healthy run
//! reports its probes; a service failing before the first batch refuses the run. The
//! guard's checks of a plan are here too.

mod common;
mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::{Planrun, TempDir, planrun_in};
use support::apps::{Apps, Load};
use support::haproxy::Haproxy;
use support::require;

const APP_PORT: u16 = 8080;

/// A loopback block of its own for each test of this binary.
fn addrs(n: usize) -> Vec<String> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let block = (std::process::id() * 7 + NEXT.fetch_add(1, Ordering::Relaxed)) % 250 + 1;
    (1..=n).map(|i| format!("127.67.{block}.{i}")).collect()
}

/// Three backends behind HAProxy, every server UP.
/// Fields drop in order: the apps stop before their folder goes.
struct Service {
    apps: Apps,
    haproxy: Haproxy,
    dir: TempDir,
}

impl Service {
    fn start(tag: &str) -> Service {
        let dir = TempDir::new(tag);
        let addrs = addrs(3);
        let dirs: Vec<PathBuf> = (1..=3).map(|i| dir.path().join(format!("host-{i}"))).collect();
        let apps = Apps::start(dirs, addrs.clone(), APP_PORT, dir.path().join("record"));
        let servers: Vec<(String, String, u16)> =
            addrs.iter().enumerate().map(|(i, a)| (format!("h{}", i + 1), a.clone(), APP_PORT)).collect();
        let haproxy = Haproxy::start(&servers);
        haproxy.wait_all_up(Duration::from_secs(10));
        Service { dir, apps, haproxy }
    }

    /// The plan: each host rejected, restarted, accepted (HAProxy reports it UP) and
    /// left to soak for 3 s in rotation, one host per batch; `guard` is the plan's.
    fn plan(&self, guard: &str) {
        let servers: String = self
            .apps
            .addrs
            .iter()
            .zip(&self.apps.dirs)
            .enumerate()
            .map(|(i, (a, d))| {
                format!(
                    "  - {{ host: {a}, name: h{}, transport: local, roles: [app], options: {{ dir: \"{}\" }} }}\n",
                    i + 1,
                    d.display()
                )
            })
            .collect();
        let plan = format!(
            "version: 1
application: shop
lock: {{ path: \"{root}/lock\" }}
servers:
{servers}balancers:
  edge: {{ kind: haproxy, socket: \"{socket}\", backend: app }}
guard: {guard}
rollout:
  select: {{ roles: [app] }}
  batch_size: 1
  steps:
    - name: reject
      balancer: {{ use: edge, action: reject, node: \"{{{{host.name}}}}\" }}
    - name: restart
      run: \"{{{{host.options.dir}}}}/app restart\"
      timeout: 30s
    - name: accept
      balancer: {{ use: edge, action: accept, node: \"{{{{host.name}}}}\" }}
      timeout: 30s
    - name: soak
      run: sleep 3
",
            root = self.dir.path().display(),
            socket = self.haproxy.socket(),
        );
        self.dir.write("plan.yaml", plan);
    }

    /// The guard's URL: the service as users reach it, through the frontend.
    fn url(&self) -> String {
        self.haproxy.url("/")
    }

    fn apply(&self, extra: &[&str]) -> common::Output {
        let mut args = vec!["apply", "plan.yaml", "--yes"];
        args.extend_from_slice(extra);
        let out = planrun_in(self.dir.path(), &args);
        println!("{}", out.dump());
        out
    }

    fn restarted(&self) -> Vec<String> {
        self.apps.record().into_iter().filter(|(e, _, _)| e == "start").map(|(_, host, _)| host).collect()
    }

    #[track_caller]
    fn assert_all_up_and_unlocked(&self) {
        self.haproxy.wait_all_up(Duration::from_secs(10));
        assert!(!self.dir.path().join("lock").exists(), "the lock is released");
    }

    fn journal(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(".planrun/journal.jsonl")).unwrap_or_default()
    }
}

/// The lines after the table: the verdict, the reason and the guard's numbers, with
/// what changes from run to run (counts, durations, ports, paths) replaced.
fn verdict(stdout: &str, dir: &Path) -> String {
    let text: String = stdout
        .lines()
        .skip_while(|l| !l.starts_with("rollout "))
        .take_while(|l| !l.starts_with("  logs:"))
        .map(|l| format!("{l}\n"))
        .collect();
    text.replace(&dir.display().to_string(), "[DIR]")
}

fn snapshot(name: &str, text: &str) {
    let mut settings = insta::Settings::clone_current();
    settings.set_prepend_module_to_snapshot(false);
    settings.add_filter(r"127\.0\.0\.1:\d+", "127.0.0.1:[PORT]");
    settings.add_filter(r"\b\d+(\.\d+)?s\b", "[DURATION]");
    settings.add_filter(r"\(\d+\.\d%\)", "([RATE])");
    settings.add_filter(r"\b\d[\d,]*\b", "[N]");
    settings.bind(|| insta::assert_snapshot!(name, text));
}

#[test]
#[cfg_attr(any(no_haproxy, no_python3), ignore = "needs haproxy and python3: apt-get install haproxy python3")]
fn a_healthy_rollout_reports_the_guards_probes() {
    if !require("haproxy") {
        return;
    }
    let service = Service::start("guard-healthy");
    service.plan(&format!("{{ http: \"{}\", interval: 100ms, timeout: 2s, max_failed: 0 }}", service.url()));
    let load = Load::start(service.haproxy.frontend_port, "/health", 2, 20_000, Duration::from_secs(90));
    let out = service.apply(&[]);
    let load = load.finish();
    out.code(0).stdout_has("rollout succeeded").stderr_has("guard: ok, probing http://127.0.0.1:");
    assert_eq!(load.failed, 0, "the load saw failures: {:?}", load.examples);
    assert!(out.stdout.contains("  guard: 0 failed of "), "{}", out.dump());
    let probes: u64 = out
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("guard: 0 failed of "))
        .and_then(|rest| rest.strip_suffix(" probes"))
        .map(|n| n.replace(',', "").parse().unwrap())
        .expect("the summary counts the probes");
    // Three hosts, each out for its restart and in for 3 s of soak, probed every 100 ms.
    assert!(probes > 30, "{probes} probes in a run of more than 9 s");
    snapshot("guard_healthy_summary", &verdict(&out.stdout, service.dir.path()));
    assert_eq!(service.restarted(), ["h1", "h2", "h3"]);
    service.assert_all_up_and_unlocked();

    // The journal holds the counts of each batch and of the run.
    let journal = service.journal();
    let guards: Vec<serde_json::Value> = journal
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["type"] == "guard")
        .collect();
    let batches: Vec<&serde_json::Value> = guards.iter().map(|g| &g["batch"]).collect();
    assert_eq!(
        batches,
        [&serde_json::json!(0), &serde_json::json!(1), &serde_json::json!(2), &serde_json::Value::Null]
    );
    assert!(guards.iter().all(|g| g["failed"] == 0 && g["probes"].as_u64().unwrap() > 0), "{journal}");
    assert_eq!(guards[3]["total_probes"].as_u64(), Some(probes), "{journal}");

    // A dry run says it does not probe.
    let dry = planrun_in(service.dir.path(), &["apply", "plan.yaml", "--dry-run"]);
    dry.code(0).stderr_has("guard: not probed in a dry run");
}

#[test]
#[cfg_attr(any(no_haproxy, no_python3), ignore = "needs haproxy and python3: apt-get install haproxy python3")]
fn the_http_guard_halts_the_rollout_before_the_next_batch() {
    if !require("haproxy") {
        return;
    }
    let service = Service::start("guard-http-halts");
    service.plan(&format!("{{ http: \"{}\", interval: 100ms, timeout: 2s, max_failed: 0 }}", service.url()));
    service.apps.fail_from_next_start(0);
    let pids: Vec<String> = (0..3).map(|i| service.apps.pid(i)).collect();
    let load = Load::start(service.haproxy.frontend_port, "/health", 2, 20_000, Duration::from_secs(90));
    let out = service.apply(&[]);
    load.finish();
    out.code(1).stdout_has("rollout HALTED");
    out.stdout_has("the guard halted the rollout: ").stdout_has(&format!(
        "probes of {} failed, more than `max_failed: 0` (HTTP 500 Internal Server Error",
        service.url()
    ));
    out.stdout_has("no new batch was started");
    assert_eq!(service.restarted(), ["h1"], "only the canary was rolled");
    assert_eq!(service.apps.pid(1), pids[1], "h2 was not restarted");
    assert_eq!(service.apps.pid(2), pids[2], "h3 was not restarted");
    // The canary finished its window: back in rotation, like every node.
    service.assert_all_up_and_unlocked();
    snapshot("guard_http_halted_summary", &verdict(&out.stdout, service.dir.path()));
    assert!(service.journal().contains(r#""outcome":"halted""#));
}

#[test]
#[cfg_attr(any(no_haproxy, no_python3), ignore = "needs haproxy and python3: apt-get install haproxy python3")]
fn the_balancer_analysis_halts_the_rollout_on_the_canarys_errors() {
    if !require("haproxy") {
        return;
    }
    let service = Service::start("guard-balancer-halts");
    service.plan("{ balancer: edge, max_error_rate: 1%, interval: 200ms }");
    service.apps.fail_from_next_start(0);
    // The analysis compares what users were answered: a load on `/`, which the broken
    // release answers with 500.
    let load = Load::start(service.haproxy.frontend_port, "/", 2, 20_000, Duration::from_secs(90));
    let out = service.apply(&["--output", "json"]);
    load.finish();
    out.code(1)
        .stderr_has("rollout HALTED")
        .stderr_has("the guard halted the rollout: on `edge`, the rolled nodes (h1) answered ");
    out.stderr_has("no new batch was started");
    assert_eq!(service.restarted(), ["h1"], "only the canary was rolled");
    service.assert_all_up_and_unlocked();
    snapshot("guard_balancer_halted_summary", &verdict(&out.stderr, service.dir.path()));

    // `--output json`: the batch's numbers, then the halt.
    let guards: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "guard")
        .collect();
    assert!(guards.len() >= 2, "{}", out.stdout);
    assert_eq!(guards[0]["batch"], 0);
    let halt = guards.iter().find(|g| g["halt"].is_string()).expect("a guard event with the halt");
    let balancer = &halt["balancer"];
    assert_eq!(balancer["rolled"], serde_json::json!(["h1"]));
    assert!(balancer["rolled_errors"].as_u64().unwrap() > 0, "{halt}");
    assert_eq!(balancer["rest_errors"], 0, "{halt}");
}

#[test]
#[cfg_attr(any(no_haproxy, no_python3), ignore = "needs haproxy and python3: apt-get install haproxy python3")]
fn a_service_failing_before_the_first_batch_refuses_the_run() {
    if !require("haproxy") {
        return;
    }
    let service = Service::start("guard-refuses");
    service.plan(&format!("{{ http: \"{}\", interval: 100ms }}", service.url()));
    for i in 0..3 {
        service.apps.fail_from_next_start(i);
        service.apps.restart(i);
    }
    service.haproxy.wait_all_up(Duration::from_secs(10));
    let before = service.restarted();
    let pids: Vec<String> = (0..3).map(|i| service.apps.pid(i)).collect();
    let out = service.apply(&[]);
    out.code(1).stderr_has(&format!(
        "error: the service is already failing: the guard's probe of {} failed (HTTP 500 Internal Server Error); nothing was changed",
        service.url()
    ));
    assert_eq!(service.restarted(), before, "nothing was restarted");
    assert_eq!((0..3).map(|i| service.apps.pid(i)).collect::<Vec<_>>(), pids);
    service.assert_all_up_and_unlocked();
    assert!(!service.journal().contains("run_started"), "no run was recorded: {}", service.journal());
}

fn validate(guard: &str, balancer: &str) -> common::Output {
    let plan = format!(
        "version: 1
application: shop
servers:
  - {{ host: 127.0.0.1, name: h1, transport: local, roles: [app] }}
balancers:
  pool: {balancer}
guard: {guard}
rollout:
  select: {{ roles: [app] }}
  steps:
    - name: restart
      run: \"true\"
"
    );
    Planrun::new().plan(plan).args(&["validate", "plan.yaml"]).run()
}

#[test]
fn a_balancer_guard_needs_per_node_counters() {
    let out = validate("{ balancer: pool }", "{ kind: command, reject: \"true\", accept: \"true\" }");
    out.code(2).stderr_has("the balancer `pool` is of kind `command`, which reports no per-node responses");
    out.stderr_has("plan.yaml:7:").stderr_has("name an `haproxy` balancer");
    let out = validate("{ balancer: poll }", "{ kind: haproxy, socket: \"tcp://127.0.0.1:9\", backend: app }");
    out.code(2)
        .stderr_has("the guard analyses the balancer `poll`, which is not defined")
        .stderr_has("did you mean `pool`?");
}

#[test]
fn the_guards_limits_and_url_are_checked() {
    let out = validate(
        "{ http: \"ftp://shop/\", max_failed: 1, max_failed_rate: 2% }",
        "{ kind: haproxy, socket: \"tcp://127.0.0.1:9\", backend: app }",
    );
    out.code(2).stderr_has("the guard's `http`: `ftp://shop/` is not an `http` or `https` URL");
    out.stderr_has("the guard has both `max_failed` and `max_failed_rate`");
    let out = validate("{ interval: 1s }", "{ kind: haproxy, socket: \"tcp://127.0.0.1:9\", backend: app }");
    out.code(2).stderr_has("the guard watches nothing");
    let out =
        validate("{ balancer: pool, max_failed: 2 }", "{ kind: haproxy, socket: \"tcp://127.0.0.1:9\", backend: app }");
    out.code(2).stderr_has("`max_failed` is about the guard's probes, but it has no `http`");
    let out = validate(
        "{ http: \"http://127.0.0.1:1/\", max_failed_rate: 1 }",
        "{ kind: haproxy, socket: \"tcp://127.0.0.1:9\", backend: app }",
    );
    out.code(2).stderr_has("plan.yaml:7:");
}

#[test]
#[cfg_attr(any(no_haproxy, no_python3), ignore = "needs haproxy and python3: apt-get install haproxy python3")]
fn a_paused_canary_shows_the_guards_numbers_and_resume_promotes() {
    if !require("haproxy") {
        return;
    }
    let service = Service::start("guard-pause");
    service.plan(&format!("{{ http: \"{}\", interval: 100ms }}", service.url()));
    let load = Load::start(service.haproxy.frontend_port, "/health", 2, 20_000, Duration::from_secs(90));
    let paused = service.apply(&["--pause-after", "1"]);
    paused.code(3).stdout_has("rollout PAUSED after batch 1 of 3: every node is in rotation");
    paused.stdout_has("  guard: 0 failed of ");
    assert_eq!(service.restarted(), ["h1"]);
    service.assert_all_up_and_unlocked();

    let promoted = service.apply(&["--resume"]);
    let load = load.finish();
    promoted.code(0).stdout_has("rollout succeeded").stdout_has("  guard: 0 failed of ");
    assert_eq!(service.restarted(), ["h1", "h2", "h3"]);
    assert_eq!(load.failed, 0, "the load saw failures: {:?}", load.examples);
    service.assert_all_up_and_unlocked();
}
