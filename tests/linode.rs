//! The Linode client against a local server speaking the documented Linode API v4
//! NodeBalancer endpoints (tests/support/linode.rs): the real Linode API cannot be
//! reached from here. What is asserted: the exit code and output a user sees, the order
//! of mode changes the "API" received, and that the token is never printed.

mod common;
mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Output, TempDir, planrun_env};
use support::apps::Apps;
use support::linode::Linode;
use support::{Fleet, require};

const TOKEN: &str = "s3cr3t-linode-token-4f9a";

fn addrs() -> Vec<String> {
    (1..=3).map(|i| format!("127.0.55.{i}:80")).collect()
}

/// Three local hosts rolled through the `nodebalancer` balancer; restarts append to
/// `record`, which the mock appends its mode changes to as well.
fn plan(dir: &TempDir, api: &str, label: &str, node_port: u16, extra: &str) -> String {
    let record = dir.path().join("record");
    let servers: String = (1..=3)
        .map(|i| {
            format!(
                "  - {{ host: 127.0.0.1, name: app{i}, transport: local, roles: [app], options: {{ private_ip: 127.0.55.{i} }} }}\n"
            )
        })
        .collect();
    format!(
        "version: 1
application: shop
{lock}servers:
{servers}balancers:
  nodebalancer:
    kind: linode
    token_env: LINODE_TOKEN
    label: {label}
    port: 80
    api_url: {api}
{extra}rollout:
  select: {{ roles: [app] }}
  batch_size: 1
  steps:
    - name: reject
      balancer: {{ use: nodebalancer, action: reject, node: \"{{{{host.options.private_ip}}}}:{node_port}\" }}
    - name: restart
      run: echo \"restart {{{{host.name}}}}\" >> {record}
    - name: accept
      balancer: {{ use: nodebalancer, action: accept, node: \"{{{{host.options.private_ip}}}}:{node_port}\" }}
",
        record = record.display(),
        lock = support::lock_line()
    )
}

fn apply(dir: &TempDir, token: &str, extra: &[&str]) -> Output {
    let mut args = vec!["apply", "plan.yaml", "--yes"];
    args.extend_from_slice(extra);
    planrun_env(dir.path(), &args, &[("LINODE_TOKEN", token)])
}

/// Everything the user could see: stdout, stderr and the run's log files.
fn everything_printed(dir: &TempDir, out: &Output) -> String {
    let mut text = format!("{}{}", out.stdout, out.stderr);
    let mut stack = vec![dir.path().join(".planrun")];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().flatten().map(|e| e.path()));
        } else {
            text.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
        }
    }
    text
}

fn record(dir: &TempDir) -> Vec<String> {
    std::fs::read_to_string(dir.path().join("record")).unwrap_or_default().lines().map(String::from).collect()
}

#[test]
fn a_rollout_sets_modes_in_order_and_looks_the_node_balancer_up_once() {
    let dir = TempDir::new("linode-order");
    let api = Linode::start(TOKEN, "NodebalancerConfiguration", &addrs());
    api.record_to(dir.path().join("record"));
    dir.write("plan.yaml", plan(&dir, &api.url, "NodebalancerConfiguration", 80, ""));
    let out = apply(&dir, TOKEN, &[]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("nodebalancer: app1 (127.0.55.1:80): in rotation (mode accept, status UP)"),
        "the pre-flight view:\n{}",
        out.stderr
    );
    assert_eq!(
        record(&dir),
        [
            "reject 127.0.55.1:80",
            "restart app1",
            "accept 127.0.55.1:80",
            "reject 127.0.55.2:80",
            "restart app2",
            "accept 127.0.55.2:80",
            "reject 127.0.55.3:80",
            "restart app3",
            "accept 127.0.55.3:80"
        ]
    );
    let requests = api.requests();
    let count = |prefix: &str| requests.iter().filter(|r| r.starts_with(prefix)).count();
    // Cached for the run: one lookup of the label and one of the configs, however many
    // actions; the nodes list (3 nodes, 2 per page) is followed to its second page.
    assert_eq!(count("GET /v4/nodebalancers?"), 1, "{requests:#?}");
    assert_eq!(count("GET /v4/nodebalancers/4242/configs?"), 1, "{requests:#?}");
    assert!(requests.iter().any(|r| r.contains("/nodes?page=2")), "{requests:#?}");
    assert!(!everything_printed(&dir, &out).contains(TOKEN));
}

#[test]
fn rate_limits_and_server_errors_are_retried() {
    let dir = TempDir::new("linode-retry");
    let api = Linode::start(TOKEN, "NodebalancerConfiguration", &addrs());
    api.fault(429, Some(1));
    api.fault(503, None);
    api.fault(503, None);
    dir.write("plan.yaml", plan(&dir, &api.url, "NodebalancerConfiguration", 80, ""));
    let started = Instant::now();
    let out = apply(&dir, TOKEN, &[]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(started.elapsed() >= Duration::from_secs(1), "Retry-After: 1 must be honoured");
    let requests = api.requests();
    // The first call was answered 429, 503, 503, then went through.
    assert_eq!(requests[..4].iter().collect::<std::collections::HashSet<_>>().len(), 1, "{requests:#?}");
    assert_eq!(api.changes().len(), 6);
}

#[test]
fn a_server_that_keeps_failing_gives_up_with_linode_s_reason() {
    let dir = TempDir::new("linode-giveup");
    let api = Linode::start(TOKEN, "NodebalancerConfiguration", &addrs());
    for _ in 0..200 {
        api.fault(429, Some(120));
    }
    dir.write("plan.yaml", plan(&dir, &api.url, "NodebalancerConfiguration", 80, ""));
    let out = apply(&dir, TOKEN, &["--dry-run"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("429 Too Many Requests"), "{}", out.stderr);
    assert!(out.stderr.contains("longer than the retry budget"), "{}", out.stderr);
}

#[test]
fn dry_run_finds_an_unknown_label_before_anything_changes() {
    let dir = TempDir::new("linode-label");
    let api = Linode::start(TOKEN, "NodebalancerConfiguration", &addrs());
    dir.write("plan.yaml", plan(&dir, &api.url, "NodebalancerConfig", 80, ""));
    let out = apply(&dir, TOKEN, &["--dry-run"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("linode `nodebalancer`: no NodeBalancer labelled `NodebalancerConfig`; help: check `label`"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("nothing was changed"), "{}", out.stderr);
    assert!(api.changes().is_empty());
    assert!(api.requests().iter().all(|r| r.starts_with("GET ")), "{:#?}", api.requests());
}

#[test]
fn a_node_address_that_matches_no_node_is_named() {
    let dir = TempDir::new("linode-node");
    let api = Linode::start(TOKEN, "NodebalancerConfiguration", &addrs());
    dir.write("plan.yaml", plan(&dir, &api.url, "NodebalancerConfiguration", 8080, ""));
    let out = apply(&dir, TOKEN, &[]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("no node `127.0.55.1:8080` in the port 80 config of NodeBalancer `NodebalancerConfiguration`"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("known: 127.0.55.1:80, 127.0.55.2:80, 127.0.55.3:80"), "{}", out.stderr);
    assert!(api.changes().is_empty());
    assert!(record(&dir).is_empty());
}

#[test]
fn a_wrong_token_is_refused_with_linode_s_reason_and_never_printed() {
    let dir = TempDir::new("linode-token");
    let api = Linode::start(TOKEN, "NodebalancerConfiguration", &addrs());
    dir.write("plan.yaml", plan(&dir, &api.url, "NodebalancerConfiguration", 80, ""));
    let wrong = "wrong-token-7c1e0d";
    let out = apply(&dir, wrong, &[]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("answered 401 Unauthorized: Invalid Token"), "{}", out.stderr);
    assert!(out.stderr.contains("help: the token in `token_env` was refused"), "{}", out.stderr);
    let printed = everything_printed(&dir, &out);
    assert!(!printed.contains(wrong) && !printed.contains(TOKEN), "{printed}");
    // The token went where Linode wants it, and only there.
    assert!(api.state.lock().unwrap().auth_headers.iter().all(|h| h == &format!("Bearer {wrong}")));
    assert!(api.changes().is_empty());
}

#[test]
fn pre_flight_counts_a_node_linode_already_rejects() {
    let dir = TempDir::new("linode-preflight");
    let api = Linode::start(TOKEN, "NodebalancerConfiguration", &addrs());
    api.set_mode("127.0.55.3:80", "reject");
    dir.write("plan.yaml", plan(&dir, &api.url, "NodebalancerConfiguration", 80, ""));
    let out = apply(&dir, TOKEN, &[]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("app3 (127.0.55.3:80): OUT of rotation (mode reject, status UP)"), "{}", out.stderr);
    assert!(out.stderr.contains("because app3 (127.0.55.3:80) is already out of rotation or down"), "{}", out.stderr);
    assert!(api.changes().is_empty());

    // --force goes on, loudly.
    let forced = apply(&dir, TOKEN, &["--force"]);
    assert_eq!(forced.code, 0, "{}{}", forced.stdout, forced.stderr);
    assert!(forced.stderr.contains("warning: --force: going on although pre-flight refuses"), "{}", forced.stderr);
    assert_eq!(api.changes().len(), 6);
}

#[test]
fn drain_on_linode_lasts_its_drain_timeout_then_rejects() {
    let dir = TempDir::new("linode-drain");
    let api = Linode::start(TOKEN, "NodebalancerConfiguration", &addrs());
    let text = plan(&dir, &api.url, "NodebalancerConfiguration", 80, "")
        .replace("    api_url:", "    drain_timeout: 300ms\n    api_url:")
        .replace("action: reject", "action: drain");
    dir.write("plan.yaml", text);
    let out = apply(&dir, TOKEN, &["-v", "--limit", "app1"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(api.changes(), ["127.0.55.1:80 drain", "127.0.55.1:80 reject", "127.0.55.1:80 accept"]);
    assert!(out.stdout.contains("draining 127.0.55.1:80 for 300ms"), "{}", out.stdout);
}

#[test]
#[cfg_attr(any(no_sshd, no_python3), ignore = "needs sshd and python3: apt-get install openssh-server python3")]
fn the_production_plan_runs_end_to_end_over_ssh_against_the_local_api() {
    if !require("sshd") {
        return;
    }
    let fleet = Fleet::start(3);
    let dir = TempDir::new("linode-production");
    let addrs: Vec<String> = fleet.hosts().iter().map(|h| h.addr.clone()).collect();
    let dirs: Vec<PathBuf> = fleet.hosts().iter().map(|h| h.dir.clone()).collect();
    // The recipe's apps listen on port 80 of their private address.
    let apps = Apps::start(dirs.clone(), addrs.clone(), 80, dir.path().join("record"));
    for d in &dirs {
        std::os::unix::fs::symlink(d.join("app"), d.join("rainbows_shop")).unwrap();
    }
    let nodes: Vec<String> = addrs.iter().map(|a| format!("{a}:80")).collect();
    let api = Linode::start(TOKEN, "NodebalancerConfiguration", &nodes);

    // plans/production.yaml and the base it extends, with the servers moved onto the
    // fleet, the init script into each host's directory, and the API onto the local
    // server; the steps are the same.
    let adapt = |mut text: String| {
        for (i, (addr, d)) in addrs.iter().zip(&dirs).enumerate() {
            text = text.replace(&format!("host: 10.0.0.{}", i + 2), &format!("host: {addr}")).replace(
                &format!("options: {{ private_ip: 192.168.0.{} }}", i + 1),
                &format!("options: {{ private_ip: {addr}, dir: \"{}\" }}", d.display()),
            );
        }
        let text = text
            .replace("host: 10.0.0.5", "host: 127.0.0.1")
            .replace("user: deploy", &format!("user: {}", fleet.user))
            .replace("port: 20022", &format!("port: 2222\n  identity_file: \"{}\"", fleet.client_key.display()))
            .replace(
                "host_key_checking: strict",
                &format!("host_key_checking: strict\n  known_hosts: \"{}\"", fleet.known_hosts.display()),
            )
            .replace(
                "run: /etc/init.d/rainbows_{{application}} restart",
                "run: \"{{host.options.dir}}/rainbows_{{application}} restart\"",
            )
            .replace("    port: 80\n", &format!("    port: 80\n    api_url: {}\n", api.url))
            .replace("interval: 2s", "interval: 200ms");
        assert!(!text.contains("10.0.0.") && !text.contains("192.168."), "{text}");
        text
    };
    let plans = concat!(env!("CARGO_MANIFEST_DIR"), "/plans/");
    let base = adapt(std::fs::read_to_string(format!("{plans}base.yaml")).unwrap());
    let production = adapt(std::fs::read_to_string(format!("{plans}production.yaml")).unwrap());
    assert!(base.contains("api_url") && production.contains("known_hosts"), "{base}\n{production}");
    let production =
        production.replace("extends: base.yaml\n", &format!("extends: base.yaml\n{}", support::lock_line()));
    dir.write("base.yaml", &base);
    dir.write("production.yaml", &production);
    let out = planrun_env(dir.path(), &["apply", "production.yaml", "--yes"], &[("LINODE_TOKEN", TOKEN)]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("rollout succeeded"), "{}", out.stdout);
    let expected: Vec<String> = nodes.iter().flat_map(|n| [format!("{n} reject"), format!("{n} accept")]).collect();
    assert_eq!(api.changes(), expected);
    let restarted: Vec<String> =
        apps.record().into_iter().filter(|(e, _, _)| e == "start").map(|(_, h, _)| h).collect();
    assert_eq!(restarted, ["h1", "h2", "h3"]);
    assert!(!everything_printed(&dir, &out).contains(TOKEN));
}

/// Issue 14: an API error whose `reason` echoes the token — at pre-flight (a wrong
/// token) and mid-run (a refused mode change) — never shows the token, in the human
/// output, `--output json`, the journal or the per-host logs.
#[test]
fn a_reason_that_echoes_the_token_is_masked_everywhere() {
    for json in [false, true] {
        let extra: &[&str] = if json { &["--output", "json"] } else { &[] };

        let dir = TempDir::new("linode-echo-wrong");
        let api = Linode::start(TOKEN, "NodebalancerConfiguration", &addrs());
        api.echo_token_in_errors(false);
        dir.write("plan.yaml", plan(&dir, &api.url, "NodebalancerConfiguration", 80, ""));
        let wrong = "wrong-token-7c1e0d";
        let out = apply(&dir, wrong, extra);
        assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
        assert!(out.stderr.contains("Invalid Token: ***"), "the reason is shown, masked: {}", out.stderr);
        let printed = everything_printed(&dir, &out);
        assert!(!printed.contains(wrong), "{printed}");

        let dir = TempDir::new("linode-echo-run");
        let api = Linode::start(TOKEN, "NodebalancerConfiguration", &addrs());
        api.echo_token_in_errors(true);
        dir.write("plan.yaml", plan(&dir, &api.url, "NodebalancerConfiguration", 80, ""));
        let out = apply(&dir, TOKEN, extra);
        assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
        let printed = everything_printed(&dir, &out);
        assert!(printed.contains("Node updates are disabled for token ***"), "the reason is shown, masked: {printed}");
        assert!(!printed.contains(TOKEN), "{printed}");
        assert!(dir.path().join(".planrun/journal.jsonl").exists(), "the journal was written and searched");
    }
}

/// Issue 17: `--dry-run` against an API that cannot be reached sat silent for minutes,
/// retrying. A refused connection cannot pass on another try: it fails at once, naming
/// where it went.
#[test]
fn a_refused_connection_fails_at_once_naming_the_host() {
    let dir = TempDir::new("linode-refused");
    // A loopback port nothing listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let api = format!("http://127.0.0.1:{port}/v4");
    dir.write("plan.yaml", plan(&dir, &api, "NodebalancerConfiguration", 80, ""));
    let started = Instant::now();
    let out = apply(&dir, TOKEN, &["--dry-run"]);
    let took = started.elapsed();
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains(&format!("cannot connect to 127.0.0.1:{port}")), "{}", out.stderr);
    assert!(!out.stderr.contains("retrying"), "{}", out.stderr);
    // Said once for the balancer, not once per node (it was seven copies), and the help is
    // about reaching it, not about `--batch-size`.
    assert_eq!(out.stderr.matches("cannot connect to").count(), 1, "{}", out.stderr);
    assert!(out.stderr.contains("help: check that the balancer can be reached"), "{}", out.stderr);
    assert!(!out.stderr.contains("--batch-size"), "{}", out.stderr);
    // Before, each call was retried for a minute; the margin is for a loaded machine.
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

/// A 503 can pass on another try: retried with backoff, and the operator is told.
#[test]
fn a_server_error_is_retried_and_said_so() {
    let dir = TempDir::new("linode-503");
    let api = Linode::start(TOKEN, "NodebalancerConfiguration", &addrs());
    api.fault(503, None);
    api.fault(503, None);
    dir.write("plan.yaml", plan(&dir, &api.url, "NodebalancerConfiguration", 80, ""));
    let out = apply(&dir, TOKEN, &[]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("answered 503 Service Unavailable"), "{}", out.stderr);
    assert!(out.stderr.contains("retrying (1/5)"), "{}", out.stderr);
    assert!(out.stderr.contains("retrying (2/5)"), "{}", out.stderr);
    assert!(!out.stderr.contains("retrying (3/5)"), "{}", out.stderr);
    assert_eq!(api.changes().len(), 6);
}
