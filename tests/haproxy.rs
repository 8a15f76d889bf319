//! Rolling restarts behind a real HAProxy (Debian's haproxy, started by the test on
//! loopback) in front of real HTTP backends that the plan really stops and starts.
//! What is asserted comes from what users and HAProxy see: requests served through the
//! frontend, HAProxy's own server states polled from its runtime API, the exit code and
//! the output of `planrun apply`.

mod common;
mod support;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::{TempDir, planrun_in};
use support::apps::{Apps, Load};
use support::haproxy::Haproxy;
use support::{Fleet, require};

const APP_PORT: u16 = 8080;

/// The rollout's steps, in the order the issue asks: reject → restart → accept (which
/// waits until HAProxy reports the node UP) → the app answers.
const BALANCED_STEPS: &str = r#"    - name: reject
      balancer: { use: edge, action: reject, node: "{{host.name}}" }
    - name: restart
      run: "{{host.options.dir}}/app restart"
      timeout: 30s
    - name: accept
      balancer: { use: edge, action: accept, node: "{{host.name}}" }
      timeout: 30s
    - name: wait
      wait: { http: "http://{{host.address}}:8080/health", status: 200, successes: 2, interval: 200ms, timeout: 30s }
"#;

/// The same rollout without the balancer: restart, then wait until the app answers.
const UNBALANCED_STEPS: &str = r#"    - name: restart
      run: "{{host.options.dir}}/app restart"
      timeout: 30s
    - name: wait
      wait: { http: "http://{{host.address}}:8080/health", status: 200, successes: 2, interval: 200ms, timeout: 30s }
"#;

fn plan(servers: &str, ssh: &str, socket: &str, steps: &str) -> String {
    format!(
        "version: 1
application: shop
{lock}{ssh}servers:
{servers}balancers:
  edge: {{ kind: haproxy, socket: \"{socket}\", backend: app }}
rollout:
  select: {{ roles: [app] }}
  batch_size: 1
  single_host: roll
  steps:
{steps}",
        lock = support::lock_line()
    )
}

/// HAProxy's view over time: every change of a server's status, with its time, and the
/// most servers that were not UP at once.
struct Watch {
    stop: Arc<AtomicBool>,
    changes: Arc<Mutex<Vec<(f64, String, String)>>>,
    max_not_up: Arc<Mutex<usize>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

fn now() -> f64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs_f64()
}

impl Watch {
    fn start(port: u16) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let changes = Arc::new(Mutex::new(Vec::new()));
        let max_not_up = Arc::new(Mutex::new(0));
        let (s, c, m) = (stop.clone(), changes.clone(), max_not_up.clone());
        let handle = std::thread::spawn(move || {
            let mut last: std::collections::HashMap<String, String> = Default::default();
            while !s.load(Ordering::Relaxed) {
                let states = support::haproxy::states_at(port);
                let not_up = states.iter().filter(|(_, st)| st != "UP").count();
                let mut max = m.lock().unwrap();
                *max = (*max).max(not_up);
                for (name, status) in states {
                    if last.get(&name) != Some(&status) {
                        c.lock().unwrap().push((now(), name.clone(), status.clone()));
                        last.insert(name, status);
                    }
                }
                drop(max);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Watch { stop, changes, max_not_up, handle: Some(handle) }
    }

    fn finish(mut self) -> (Vec<(f64, String, String)>, usize) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().unwrap();
        }
        let changes = self.changes.lock().unwrap().clone();
        let max = *self.max_not_up.lock().unwrap();
        (changes, max)
    }
}

/// A loopback block of its own for each local-transport test of this binary.
fn local_addrs(n: usize) -> Vec<String> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // The process id keeps parallel test binaries apart, the counter this binary's tests.
    let block = (std::process::id() * 7 + NEXT.fetch_add(1, Ordering::Relaxed)) % 250 + 1;
    (1..=n).map(|i| format!("127.66.{block}.{i}")).collect()
}

fn local_servers(addrs: &[String], dirs: &[PathBuf]) -> String {
    addrs
        .iter()
        .zip(dirs)
        .enumerate()
        .map(|(i, (a, d))| {
            format!(
                "  - {{ host: {a}, name: h{}, transport: local, roles: [app], options: {{ dir: \"{}\" }} }}\n",
                i + 1,
                d.display()
            )
        })
        .collect()
}

fn backends(addrs: &[String]) -> Vec<(String, String, u16)> {
    addrs.iter().enumerate().map(|(i, a)| (format!("h{}", i + 1), a.clone(), APP_PORT)).collect()
}

#[test]
#[cfg_attr(
    any(no_sshd, no_haproxy, no_python3),
    ignore = "needs sshd, haproxy and python3: apt-get install openssh-server haproxy python3"
)]
fn a_rolling_restart_behind_haproxy_over_ssh_serves_every_request() {
    if !require("sshd") || !require("haproxy") {
        return;
    }
    let fleet = Fleet::start(3);
    let dir = TempDir::new("haproxy-load");
    let addrs: Vec<String> = fleet.hosts().iter().map(|h| h.addr.clone()).collect();
    let dirs: Vec<PathBuf> = fleet.hosts().iter().map(|h| h.dir.clone()).collect();
    let apps = Apps::start(dirs.clone(), addrs.clone(), APP_PORT, dir.path().join("record"));
    let haproxy = Haproxy::start(&backends(&addrs));
    haproxy.wait_all_up(Duration::from_secs(10));

    let ssh = format!(
        "ssh: {{ user: {}, port: 2222, identity_file: \"{}\", known_hosts: \"{}\" }}\n",
        fleet.user,
        fleet.client_key.display(),
        fleet.known_hosts.display()
    );
    let servers: String = addrs
        .iter()
        .zip(&dirs)
        .enumerate()
        .map(|(i, (a, d))| {
            format!("  - {{ host: {a}, name: h{}, roles: [app], options: {{ dir: \"{}\" }} }}\n", i + 1, d.display())
        })
        .collect();

    // With the balancer steps: zero failed requests.
    dir.write("plan.yaml", plan(&servers, &ssh, &haproxy.socket(), BALANCED_STEPS));
    let watch = Watch::start(haproxy.admin_port);
    let load = Load::start(haproxy.frontend_port, "/health", 2, 20_000, Duration::from_secs(90));
    std::thread::sleep(Duration::from_millis(300));
    let out = planrun_in(dir.path(), &["apply", "plan.yaml", "--yes"]);
    std::thread::sleep(Duration::from_millis(300));
    let with = load.finish();
    let (changes, max_not_up) = watch.finish();
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("pre-flight: ok"), "{}", out.stderr);
    println!("with balancer steps: {} requests sent, {} failed", with.sent, with.failed);
    assert!(with.sent > 200, "the load must really run during the rollout: {} requests", with.sent);
    assert_eq!(with.failed, 0, "failed requests: {:?}\nHAProxy:\n{changes:?}", with.examples);
    assert_eq!(max_not_up, 1, "HAProxy must have had exactly one node out at a time: {changes:?}");

    // Per host, from HAProxy's own log and the apps' record: MAINT, then the app stops
    // and starts, then UP, and only then does the next host go into MAINT.
    let mut timeline: Vec<(String, String)> = haproxy.events();
    timeline.extend(apps.record().into_iter().map(|(e, h, t)| (t, format!("{e} {h}"))));
    timeline.sort();
    let events: Vec<&str> = timeline
        .iter()
        .map(|(_, e)| e.as_str())
        .filter(|e| {
            e.starts_with("MAINT ") || e.starts_with("UP ") || e.starts_with("stop ") || e.starts_with("start ")
        })
        .collect();
    assert_eq!(
        events,
        [
            "MAINT h1", "stop h1", "start h1", "UP h1", "MAINT h2", "stop h2", "start h2", "UP h2", "MAINT h3",
            "stop h3", "start h3", "UP h3"
        ],
        "{timeline:#?}"
    );
    // No moment with more than one server out, from the same log.
    let mut out = std::collections::BTreeSet::new();
    let mut most = 0;
    for (_, e) in &timeline {
        let (what, server) = e.split_once(' ').unwrap();
        match what {
            "MAINT" | "DOWN" | "DRAIN" => {
                out.insert(server.to_string());
            }
            "UP" => {
                out.remove(server);
            }
            _ => {}
        }
        most = most.max(out.len());
    }
    assert_eq!(most, 1, "{timeline:#?}");

    // The same rollout without the balancer steps: HAProxy keeps sending requests to a
    // stopped backend until its checks notice, and users see errors.
    dir.write("plan.yaml", plan(&servers, &ssh, &haproxy.socket(), UNBALANCED_STEPS));
    haproxy.wait_all_up(Duration::from_secs(10));
    let load = Load::start(haproxy.frontend_port, "/health", 2, 20_000, Duration::from_secs(90));
    std::thread::sleep(Duration::from_millis(300));
    let out = planrun_in(dir.path(), &["apply", "plan.yaml", "--yes"]);
    std::thread::sleep(Duration::from_millis(300));
    let without = load.finish();
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    println!(
        "without balancer steps: {} requests sent, {} failed (e.g. {:?})",
        without.sent,
        without.failed,
        without.examples.first()
    );
    assert!(without.failed > 0, "without the balancer steps requests must fail, or the test proves nothing");
}

#[test]
#[cfg_attr(any(no_haproxy, no_python3), ignore = "needs haproxy and python3: apt-get install haproxy python3")]
fn pre_flight_refuses_when_a_backend_is_already_in_maintenance() {
    if !require("haproxy") {
        return;
    }
    let dir = TempDir::new("haproxy-preflight");
    let addrs = local_addrs(3);
    let dirs: Vec<PathBuf> = (1..=3).map(|i| dir.path().join(format!("host-{i}"))).collect();
    let apps = Apps::start(dirs.clone(), addrs.clone(), APP_PORT, dir.path().join("record"));
    let haproxy = Haproxy::start(&backends(&addrs));
    haproxy.wait_all_up(Duration::from_secs(10));
    haproxy.command("set server app/h2 state maint");
    let pids: Vec<String> = (0..3).map(|i| apps.pid(i)).collect();

    dir.write("plan.yaml", plan(&local_servers(&addrs, &dirs), "", &haproxy.socket(), BALANCED_STEPS));
    let out = planrun_in(dir.path(), &["apply", "plan.yaml", "--yes"]);
    println!("{}{}", out.stdout, out.stderr);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("edge: h2: OUT of rotation (MAINT"), "{}", out.stderr);
    assert!(
        out.stderr.contains("error: pre-flight: `edge`: batch 1 would have 2 nodes out of rotation"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("because h2 is already out of rotation or down"), "{}", out.stderr);
    assert!(out.stderr.contains("nothing was changed"), "{}", out.stderr);
    assert!(out.stderr.contains("--force"), "{}", out.stderr);
    // Nothing changed: HAProxy's states and the apps are as they were.
    let states = haproxy.states();
    assert_eq!(
        states,
        [("h1".into(), "UP".into()), ("h2".into(), "MAINT".into()), ("h3".into(), "UP".into())],
        "{states:?}"
    );
    assert!(apps.record().is_empty(), "{:?}", apps.record());
    assert_eq!((0..3).map(|i| apps.pid(i)).collect::<Vec<_>>(), pids);

    // --dry-run reads the same and refuses the same way, still changing nothing.
    let dry = planrun_in(dir.path(), &["apply", "plan.yaml", "--dry-run"]);
    assert_eq!(dry.code, 1, "{}{}", dry.stdout, dry.stderr);
    assert!(dry.stderr.contains("because h2 is already out"), "{}", dry.stderr);
}

/// A saved plan holds HAProxy's view when it was saved: a node in rotation then and in
/// maintenance now refuses `apply FILE` (exit 2), naming it, before anything changes.
#[test]
#[cfg_attr(any(no_haproxy, no_python3), ignore = "needs haproxy and python3: apt-get install haproxy python3")]
fn a_saved_plan_is_refused_when_haproxy_took_a_node_out_since() {
    if !require("haproxy") {
        return;
    }
    let dir = TempDir::new("haproxy-saved");
    let addrs = local_addrs(3);
    let dirs: Vec<PathBuf> = (1..=3).map(|i| dir.path().join(format!("host-{i}"))).collect();
    let apps = Apps::start(dirs.clone(), addrs.clone(), APP_PORT, dir.path().join("record"));
    let haproxy = Haproxy::start(&backends(&addrs));
    haproxy.wait_all_up(Duration::from_secs(10));
    dir.write("plan.yaml", plan(&local_servers(&addrs, &dirs), "", &haproxy.socket(), BALANCED_STEPS));
    let out = planrun_in(dir.path(), &["plan", "plan.yaml", "--out", "run.plan"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("run.plan")).unwrap()).unwrap();
    assert_eq!(
        saved["balancers"][1],
        serde_json::json!({ "balancer": "edge", "node": "h2", "in_rotation": true }),
        "{saved:#}"
    );

    haproxy.command("set server app/h2 state maint");
    let out = planrun_in(dir.path(), &["apply", "run.plan", "--yes"]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains(
            "error: `run.plan` is no longer the plan it saved: balancer `edge`: node `h2` was in rotation when the plan was saved and is out now; nothing was executed"
        ),
        "{}",
        out.stderr
    );
    let states = haproxy.states();
    assert_eq!(
        states,
        [("h1".into(), "UP".into()), ("h2".into(), "MAINT".into()), ("h3".into(), "UP".into())],
        "{states:?}"
    );
    assert!(apps.record().is_empty(), "{:?}", apps.record());
}

#[test]
#[cfg_attr(any(no_haproxy, no_python3), ignore = "needs haproxy and python3: apt-get install haproxy python3")]
fn a_failing_restart_halts_and_the_summary_shows_the_node_still_out() {
    if !require("haproxy") {
        return;
    }
    let dir = TempDir::new("haproxy-halt");
    let addrs = local_addrs(3);
    let dirs: Vec<PathBuf> = (1..=3).map(|i| dir.path().join(format!("host-{i}"))).collect();
    let _apps = Apps::start(dirs.clone(), addrs.clone(), APP_PORT, dir.path().join("record"));
    let haproxy = Haproxy::start(&backends(&addrs));
    haproxy.wait_all_up(Duration::from_secs(10));
    let steps = BALANCED_STEPS.replace(
        "run: \"{{host.options.dir}}/app restart\"",
        "run: \"test {{host.name}} != h2 && {{host.options.dir}}/app restart\"",
    );
    // This one talks to HAProxy over its unix socket.
    dir.write("plan.yaml", plan(&local_servers(&addrs, &dirs), "", &haproxy.unix_socket(), &steps));
    let out = planrun_in(dir.path(), &["apply", "plan.yaml", "--yes"]);
    println!("{}{}", out.stdout, out.stderr);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("rollout HALTED: 1 host failed"), "{}", out.stdout);
    assert!(out.stdout.contains("balancer state of the nodes this run touched:"), "{}", out.stdout);
    assert!(out.stdout.contains("edge: h1: in rotation (UP"), "{}", out.stdout);
    assert!(out.stdout.contains("edge: h2: OUT of rotation (MAINT"), "{}", out.stdout);
    let touched = out.stdout.split("balancer state of the nodes this run touched:").nth(1).unwrap_or_default();
    assert!(!touched.contains("edge: h3:"), "h3 was never touched:\n{}", out.stdout);
    let states = haproxy.states();
    assert_eq!(states[1], ("h2".into(), "MAINT".into()), "{states:?}");
    assert_eq!(states[2], ("h3".into(), "UP".into()), "{states:?}");
}

#[test]
#[cfg_attr(any(no_haproxy, no_python3), ignore = "needs haproxy and python3: apt-get install haproxy python3")]
fn servers_without_health_checks_go_back_in_rotation() {
    if !require("haproxy") {
        return;
    }
    // In DRAIN, HAProxy shows such a server as `DRAIN`, not `no check`: an accept that
    // took that for a checked server marked it down, and it never came back.
    let dir = TempDir::new("haproxy-unchecked");
    let addrs = local_addrs(2);
    let dirs: Vec<PathBuf> = (1..=2).map(|i| dir.path().join(format!("host-{i}"))).collect();
    let _apps = Apps::start(dirs.clone(), addrs.clone(), APP_PORT, dir.path().join("record"));
    let haproxy = Haproxy::start_unchecked(&backends(&addrs));
    dir.write("plan.yaml", plan(&local_servers(&addrs, &dirs), "", &haproxy.socket(), BALANCED_STEPS));
    let out = planrun_in(dir.path(), &["apply", "plan.yaml", "--yes"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("rollout succeeded"), "{}", out.stdout);
    let states = haproxy.states();
    assert_eq!(states, [("h1".into(), "no check".into()), ("h2".into(), "no check".into())], "{states:?}");
}

/// A backend whose `GET /slow` takes `SLOW`, so a request can be in flight on a node
/// while it drains. HAProxy's checks here are TCP connects, answered at once.
fn slow_backend(addr: &str) {
    let listener = std::net::TcpListener::bind((addr, APP_PORT)).expect("bind the slow backend");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                use std::io::{BufRead, BufReader, Write};
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut first = String::new();
                let _ = reader.read_line(&mut first);
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 && line.trim() != "" {
                    line.clear();
                }
                if first.starts_with("GET /slow") {
                    std::thread::sleep(SLOW);
                }
                let mut out = stream;
                let _ = out.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n");
            });
        }
    });
}

const SLOW: Duration = Duration::from_millis(1500);

#[test]
#[cfg_attr(no_haproxy, ignore = "needs haproxy: apt-get install haproxy")]
fn drain_waits_for_open_connections_then_takes_the_node_out() {
    if !require("haproxy") {
        return;
    }
    let dir = TempDir::new("haproxy-drain");
    let addrs = local_addrs(2);
    for a in &addrs {
        slow_backend(a);
    }
    let haproxy = Haproxy::start(&backends(&addrs));
    haproxy.wait_all_up(Duration::from_secs(10));
    // Two slow requests: round robin gives each server one.
    let port = haproxy.frontend_port;
    let slow: Vec<_> = (0..2).map(|_| std::thread::spawn(move || support::apps::get(port, "/slow"))).collect();
    std::thread::sleep(Duration::from_millis(300));
    let steps = r#"    - name: drain
      balancer: { use: edge, action: drain, node: "{{host.name}}" }
    - name: accept
      balancer: { use: edge, action: accept, node: "{{host.name}}" }
"#;
    let dirs: Vec<PathBuf> = (1..=2).map(|i| dir.path().join(format!("host-{i}"))).collect();
    dir.write("plan.yaml", plan(&local_servers(&addrs, &dirs), "", &haproxy.socket(), steps));
    let started = std::time::Instant::now();
    let out = planrun_in(dir.path(), &["apply", "plan.yaml", "--yes", "-v", "--limit", "h1"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("draining h1: 1 connection(s) open"), "{}", out.stdout);
    assert!(started.elapsed() >= SLOW - Duration::from_millis(300), "the drain must wait for the open request");
    for t in slow {
        assert_eq!(t.join().unwrap(), Ok(()), "the request in flight during the drain must finish");
    }
    // HAProxy's own record: drain, then maintenance, then back up.
    let h1: Vec<String> =
        haproxy.events().into_iter().map(|(_, e)| e).filter(|e| e.ends_with(" h1") && e != "DOWN h1").collect();
    assert_eq!(h1.first().map(String::as_str), Some("DRAIN h1"), "{h1:?}\n{}", haproxy.log());
    assert!(h1.iter().any(|e| e == "MAINT h1"), "{h1:?}\n{}", haproxy.log());
    assert_eq!(h1.last().map(String::as_str), Some("UP h1"), "{h1:?}\n{}", haproxy.log());
}

#[test]
#[cfg_attr(any(no_haproxy, no_python3), ignore = "needs haproxy and python3: apt-get install haproxy python3")]
fn the_haproxy_example_plan_runs_end_to_end() {
    if !require("haproxy") {
        return;
    }
    let dir = TempDir::new("haproxy-example");
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/haproxy.yaml")).unwrap();
    // The example's app directory layout; its socket, addresses and lock are this test's
    // own, so that another run of the suite on this machine cannot answer in their place.
    let addrs = local_addrs(3);
    let dirs: Vec<PathBuf> = (1..=3).map(|i| dir.path().join(format!("web{i}"))).collect();
    let apps = Apps::start(dirs, addrs.clone(), APP_PORT, dir.path().join("record"));
    let servers: Vec<(String, String, u16)> =
        addrs.iter().enumerate().map(|(i, a)| (format!("web{}", i + 1), a.clone(), APP_PORT)).collect();
    let haproxy = Haproxy::start(&servers);
    haproxy.wait_all_up(Duration::from_secs(10));
    let example = example.replace("application: shop\n", &format!("application: shop\n{}", support::lock_line()));
    let mut example = example.replace("tcp://127.0.0.1:9999", &haproxy.socket());
    for (i, addr) in addrs.iter().enumerate() {
        let theirs = format!("host: 127.0.80.{}, ", i + 1);
        assert!(example.contains(&theirs), "{example}");
        example = example.replace(&theirs, &format!("host: {addr}, "));
    }
    dir.write("haproxy.yaml", example);
    let apps_var = format!("apps={}", dir.path().display());
    let out = planrun_in(dir.path(), &["apply", "haproxy.yaml", "--yes", "--var", &apps_var]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("rollout succeeded"), "{}", out.stdout);
    let restarted: Vec<String> =
        apps.record().into_iter().filter(|(e, _, _)| e == "start").map(|(_, h, _)| h).collect();
    assert_eq!(restarted, ["h1", "h2", "h3"]);
}
