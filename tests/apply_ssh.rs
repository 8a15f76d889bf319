//! `planrun apply` against real OpenSSH servers on loopback: each host its own sshd and
//! its own little app, restarted by the plan.

mod common;
mod support;

use std::time::{Duration, Instant};

use common::{APPLY, Planrun, TempDir};
use support::Fleet;

/// A plan over the fleet's hosts. Each host's app is a script in its directory that
/// records its restarts; the `command` balancer records its calls on the control machine.
fn plan(fleet: &Fleet, dir: &TempDir, ssh_extra: &str, restart: &str) -> String {
    let root = dir.path().display();
    format!(
        "version: 1
application: shop
vars:
  fail: none
{ssh}  connect_timeout: 3s
{ssh_extra}
lock: {{ path: {root}/lock }}
servers:
{servers}balancers:
  pool:
    kind: command
    reject: echo \"reject {{{{node}}}}\" >> {root}/record
    accept: echo \"accept {{{{node}}}}\" >> {root}/record
rollout:
  select: {{ roles: [app] }}
  steps:
    - name: reject
      balancer: {{ use: pool, action: reject, node: \"{{{{host.name}}}}\" }}
    - name: restart
      run: {restart}
      timeout: 5s
    - name: accept
      balancer: {{ use: pool, action: accept, node: \"{{{{host.name}}}}\" }}
    - name: healthy
      wait: {{ command: \"test -f {{{{host.options.dir}}}}/running\", interval: 100ms, timeout: 5s }}
",
        ssh = fleet.ssh_yaml(),
        servers = fleet.servers_yaml(),
    )
}

/// The app's restart: stop (remove the running marker), record, fail on the chosen host,
/// start again.
const RESTART: &str = "\"rm -f {{host.options.dir}}/running && echo restart >> {{host.options.dir}}/restarts && \
                       echo 'app {{host.name}} restarting' && test {{host.name}} != {{vars.fail}} && \
                       touch {{host.options.dir}}/running\"";

fn restarts(host: &support::Host) -> usize {
    std::fs::read_to_string(host.dir.join("restarts")).unwrap_or_default().lines().count()
}

/// `planrun apply plan.yaml --yes` and `extra` in `dir`.
fn apply(dir: &TempDir, extra: &[&str]) -> common::Output {
    Planrun::in_dir(dir).args(APPLY).args(extra).run()
}

#[test]
#[cfg_attr(no_sshd, ignore = "needs sshd: apt-get install openssh-server")]
fn a_rollout_over_ssh_runs_each_host_in_order_on_one_connection() {
    if !support::require("sshd") {
        return;
    }
    let fleet = Fleet::start(3);
    let dir = TempDir::new("ssh-order");
    dir.write("plan.yaml", plan(&fleet, &dir, "", RESTART));
    let out = apply(&dir, &["--verbose"]);
    out.code(0);
    assert_eq!(
        dir.lines("record"),
        ["reject h1", "accept h1", "reject h2", "accept h2", "reject h3", "accept h3"],
        "{}",
        out.stdout
    );
    for host in fleet.hosts() {
        assert_eq!(restarts(host), 1, "host {} restarted once", host.index);
        assert!(host.dir.join("running").exists());
        // Every step of the host (the restart and each health check) went over one
        // connection, opened in the pre-flight.
        assert_eq!(host.accepted_logins(), 1, "{}", host.log());
    }
    out.stdout_has("h2 | app h2 restarting");
    // Steps of h2 start only after h1's last step finished.
    let pos = |needle: &str| out.stdout.find(needle).unwrap_or_else(|| panic!("no {needle:?} in\n{}", out.stdout));
    assert!(pos("h1 healthy: ok") < pos("h2 reject: balancer"), "{}", out.stdout);
}

#[test]
#[cfg_attr(no_sshd, ignore = "needs sshd: apt-get install openssh-server")]
fn a_failing_restart_on_host_two_halts_with_host_three_untouched() {
    if !support::require("sshd") {
        return;
    }
    let fleet = Fleet::start(3);
    let dir = TempDir::new("ssh-fail");
    dir.write("plan.yaml", plan(&fleet, &dir, "", RESTART));
    let out = apply(&dir, &["--var", "fail=h2"]);
    out.code(1);
    assert_eq!(dir.lines("record"), ["reject h1", "accept h1", "reject h2"], "{}", out.stdout);
    assert_eq!(restarts(fleet.host(1)), 1);
    assert_eq!(restarts(fleet.host(2)), 1);
    assert_eq!(restarts(fleet.host(3)), 0, "host 3 must not be touched");
    out.stdout_has("h2 failed at `restart`");
    out.stdout_has("    | app h2 restarting");
    out.stdout_has("rollout HALTED: 1 host failed");
}

#[test]
#[cfg_attr(no_sshd, ignore = "needs sshd: apt-get install openssh-server")]
fn an_unknown_host_key_is_refused_under_strict_and_recorded_under_accept_new() {
    if !support::require("sshd") {
        return;
    }
    let fleet = Fleet::start(2);
    let dir = TempDir::new("ssh-hostkey");
    let empty_known = dir.path().join("known_hosts");
    std::fs::write(&empty_known, "").unwrap();
    let text = plan(&fleet, &dir, "", RESTART)
        .replace(&fleet.known_hosts.display().to_string(), &empty_known.display().to_string());
    dir.write("plan.yaml", &text);

    let out = apply(&dir, &[]);
    out.code(1);
    out.stderr_has("pre-flight: cannot reach 2 of 2 hosts; nothing was changed");
    assert!(out.stderr.contains("host_key_checking: accept-new"), "the error says how to fix it:\n{}", out.stderr);
    assert!(dir.lines("record").is_empty(), "nothing may change when a host is refused");

    dir.write(
        "plan.yaml",
        text.replace("  connect_timeout: 3s", "  connect_timeout: 3s\n  host_key_checking: accept-new"),
    );
    let out = apply(&dir, &[]);
    out.code(0);
    let known = std::fs::read_to_string(&empty_known).unwrap();
    for host in fleet.hosts() {
        assert!(known.contains(&format!("[{}]:{}", host.addr, host.port)), "{known}");
    }

    // Recorded keys are now checked strictly.
    dir.write("plan.yaml", &text);
    let out = apply(&dir, &[]);
    out.code(0);
}

#[test]
#[cfg_attr(no_sshd, ignore = "needs sshd: apt-get install openssh-server")]
fn a_refused_connection_fails_the_pre_flight_cleanly() {
    if !support::require("sshd") {
        return;
    }
    let fleet = Fleet::start(2);
    let dir = TempDir::new("ssh-refused");
    // A third server on an address where nothing listens.
    let dead = fleet.host(2).addr.rsplit_once('.').map(|(net, _)| format!("{net}.250")).unwrap();
    let text = plan(&fleet, &dir, "", RESTART).replace(
        "balancers:",
        &format!("  - {{ host: \"{dead}\", name: h9, roles: [app], options: {{ dir: /nonexistent }} }}\nbalancers:"),
    );
    dir.write("plan.yaml", text);
    let started = Instant::now();
    let out = apply(&dir, &[]);
    out.code(1);
    assert!(started.elapsed() < Duration::from_secs(10));
    out.stderr_has("pre-flight: cannot reach 1 of 3 hosts; nothing was changed");
    out.stderr_has("h9: ");
    out.stderr_has("refused");
    assert!(dir.lines("record").is_empty());
    assert_eq!(restarts(fleet.host(1)), 0);
}

#[test]
#[cfg_attr(no_sshd, ignore = "needs sshd: apt-get install openssh-server")]
fn a_command_timeout_over_ssh_fails_the_host_and_kills_the_command() {
    if !support::require("sshd") {
        return;
    }
    let fleet = Fleet::start(2);
    let dir = TempDir::new("ssh-timeout");
    let slow = "\"sleep 4 && touch {{host.options.dir}}/late\"";
    dir.write(
        "plan.yaml",
        plan(&fleet, &dir, "", slow).replace("timeout: 5s\n    - name: accept", "timeout: 1s\n    - name: accept"),
    );
    let started = Instant::now();
    let out = apply(&dir, &[]);
    out.code(1);
    assert!(started.elapsed() < Duration::from_secs(4), "the step outlived its timeout");
    out.stdout_has("h1 failed at `restart`");
    out.stdout_has("timed out after 1s");
    assert_eq!(dir.lines("record"), ["reject h1"]);
    std::thread::sleep(Duration::from_secs(4));
    assert!(!fleet.host(1).dir.join("late").exists(), "the remote command kept running after its timeout");
}
