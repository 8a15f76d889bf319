//! `planrun exec` and `--limit` patterns on the real binary: local servers for the
//! behaviour, one fleet of real sshd servers for the transport.

mod common;
mod support;

use std::time::{Duration, Instant};

use common::{Planrun, TempDir, local_servers};

/// `hosts` local servers `h1`…`hN` whose commands see their own name as `$HOST`.
fn plan(hosts: usize) -> String {
    format!(
        "version: 1
application: shop
env:
  HOST: \"{{{{host.name}}}}\"
servers:
{servers}rollout:
  select: {{ roles: [app] }}
  steps:
    - name: restart
      run: echo restart
",
        servers = local_servers(hosts)
    )
}

/// A mixed fleet for `--limit`: three web servers, three app servers, a database the
/// rollout does not select.
const MIXED: &str = "version: 1
application: shop
servers:
  - { host: 10.0.0.1, name: web1, transport: local, roles: [web] }
  - { host: 10.0.0.2, name: web2, transport: local, roles: [web] }
  - { host: 10.0.0.3, name: web3, transport: local, roles: [web] }
  - { host: 10.0.1.1, name: app1, transport: local, roles: [app] }
  - { host: 10.0.1.2, name: app2, transport: local, roles: [app] }
  - { host: 10.0.1.3, name: app3, transport: local, roles: [app, web] }
  - { host: 10.0.2.1, name: db1, transport: local, roles: [db] }
rollout:
  select: { roles: [web, app] }
  steps:
    - { name: restart, run: echo restart }
";

fn exec(yaml: &str, args: &[&str]) -> common::Output {
    Planrun::new().plan(yaml).args(&["exec", "plan.yaml"]).args(args).run()
}

fn list_hosts(limit: &str) -> common::Output {
    Planrun::new().plan(MIXED).args(&["plan", "plan.yaml", "--list-hosts", "--limit", limit]).run()
}

/// The lines of host `name`'s block: from its `=== name:` header to the blank line.
fn block<'a>(out: &'a common::Output, name: &str) -> Vec<&'a str> {
    let header = format!("=== {name}: ");
    let lines: Vec<&str> = out.stdout.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with(&header))
        .unwrap_or_else(|| panic!("no block of {name}\n{}", out.dump()));
    lines[start..].iter().take_while(|l| !l.is_empty()).copied().collect()
}

#[test]
fn each_host_prints_one_block_and_a_failure_exits_1() {
    let out = exec(&plan(3), &["--", "echo one $HOST; sleep 0.2; echo two $HOST; test $HOST != h2"]);
    out.code(1);
    // The hosts ran at once, and still each block is whole.
    assert_eq!(block(&out, "h1"), ["=== h1: exit code 0", "one h1", "two h1"], "{}", out.stdout);
    assert_eq!(block(&out, "h2"), ["=== h2: FAILED: exit code 1", "one h2", "two h2"], "{}", out.stdout);
    assert_eq!(block(&out, "h3"), ["=== h3: exit code 0", "one h3", "two h3"], "{}", out.stdout);
    out.stdout_has("│ h2   ┆ FAILED: exit code 1 ┆");
    out.stdout_has("│ h3   ┆ exit code 0         ┆");
    out.stdout_has("exec FAILED on 1 of 3 hosts: h2\n");
}

#[test]
fn every_host_succeeding_exits_0_and_words_arrive_as_typed() {
    let out = exec(&plan(2), &["--", "echo", "a b", "c  d", "$HOST", "it's"]);
    out.code(0);
    // Quoted: the two spaces survive, `$HOST` is not expanded, the `'` does not open a quote.
    assert_eq!(block(&out, "h1"), ["=== h1: exit code 0", "a b c  d $HOST it's"], "{}", out.stdout);
    assert_eq!(block(&out, "h2"), ["=== h2: exit code 0", "a b c  d $HOST it's"]);
    out.stdout_has("exec: ok on 2 hosts\n");
}

#[test]
fn verbose_streams_each_line_with_its_host() {
    let out = exec(&plan(2), &["-v", "--", "echo one $HOST; echo two $HOST >&2"]);
    out.code(0);
    // Hosts run at once, and a command's stdout and stderr are two pipes: only each
    // host's own end line is ordered after its lines.
    let stdout = &out.stdout;
    let at =
        |line: &str| stdout.lines().position(|l| l == line).unwrap_or_else(|| panic!("no {line:?}\n{}", out.dump()));
    for host in ["h1", "h2"] {
        let end = at(&format!("=== {host}: exit code 0"));
        assert!(at(&format!("{host} | one {host}")) < end, "{}", out.dump());
        assert!(at(&format!("{host} | two {host}")) < end, "{}", out.dump());
    }
    out.stdout_lacks("\none h1\n");
}

/// Each command writes `+` when it starts and `-` when it ends; the most `+` ahead of
/// the `-` is how many ran at once.
fn most_at_once(log: &[String]) -> usize {
    let (mut now, mut most) = (0usize, 0usize);
    for mark in log {
        if mark == "+" {
            now += 1;
            most = most.max(now);
        } else {
            now -= 1;
        }
    }
    most
}

#[test]
fn fan_out_bounds_the_hosts_at_once() {
    let dir = TempDir::new("exec-fan-out");
    let log = dir.path().join("log");
    let command = format!("echo + >> {0}; sleep 0.4; echo - >> {0}", log.display());
    let out = Planrun::in_dir(&dir).plan(plan(5)).args(&["exec", "plan.yaml", "--fan-out", "2", "--", &command]).run();
    out.code(0);
    let marks = common::lines(&log);
    assert_eq!(marks.len(), 10, "every host ran: {marks:?}");
    assert_eq!(most_at_once(&marks), 2, "{marks:?}");
}

#[test]
fn a_failed_batch_stops_the_batches_after_it() {
    let dir = TempDir::new("exec-batches");
    let log = dir.path().join("log");
    let command = format!("echo $HOST >> {}; test $HOST != h2", log.display());
    let out =
        Planrun::in_dir(&dir).plan(plan(5)).args(&["exec", "plan.yaml", "--batch-size", "2", "--", &command]).run();
    out.code(1);
    let mut ran = common::lines(&log);
    ran.sort();
    assert_eq!(ran, ["h1", "h2"], "the second batch must not start\n{}", out.dump());
    out.stdout_has("│ h3   ┆ not started ");
    out.stdout_has("exec FAILED on 1 of 5 hosts: h2; not started: h3, h4, h5\n");
}

#[test]
fn a_command_past_its_timeout_is_killed_and_fails_its_host() {
    let started = Instant::now();
    let out = exec(&plan(2), &["--timeout", "1s", "--", "if test $HOST = h2; then sleep 30; fi; echo done $HOST"]);
    out.code(1);
    assert!(started.elapsed() < Duration::from_secs(20), "the timeout did not stop it");
    assert_eq!(block(&out, "h1"), ["=== h1: exit code 0", "done h1"]);
    out.stdout_has("=== h2: FAILED: timed out\nerror: command timed out after 1s on `local` and was killed\n");
    out.stdout_has("exec FAILED on 1 of 2 hosts: h2\n");
}

#[test]
fn secrets_are_masked_in_what_hosts_print() {
    let yaml = plan(1).replace("env:\n", "secret_env: [SHOP_TOKEN]\nenv:\n");
    let out = Planrun::new()
        .plan(yaml)
        .env("SHOP_TOKEN", "s3cret-value")
        .args(&["exec", "plan.yaml", "--", "echo token=$SHOP_TOKEN"])
        .run();
    out.code(0);
    out.stdout_has("token=***\n").stdout_lacks("s3cret-value");

    let missing = exec(&plan(1).replace("env:\n", "secret_env: [SHOP_TOKEN]\nenv:\n"), &["--", "true"]);
    missing.code(2);
    missing.stderr_has("the environment variable `SHOP_TOKEN` must be set");
}

/// `--sudo` sends the command through `sudo -n`, the plan's `env` after it (sudo clears
/// the environment). A `sudo` on `PATH` that prints its arguments shows what was sent.
#[test]
fn sudo_sends_the_command_through_sudo_with_the_env() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("exec-sudo");
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let sudo = bin.join("sudo");
    std::fs::write(&sudo, "#!/bin/sh\necho \"sudo $*\"\n").unwrap();
    std::fs::set_permissions(&sudo, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let out = Planrun::in_dir(&dir)
        .plan(plan(1))
        .env("PATH", path)
        .args(&["exec", "plan.yaml", "--sudo", "--", "systemctl", "status", "shop"])
        .run();
    out.code(0);
    assert_eq!(block(&out, "h1"), ["=== h1: exit code 0", "sudo -n -- env HOST=h1 systemctl status shop"]);
}

#[test]
fn limit_takes_names_addresses_globs_roles_and_exclusions_in_plan_order() {
    for (limit, hosts) in [
        ("app[2-3],web*,!web2", "web1\nweb3\napp2\napp3\n"),
        ("role:web", "web1\nweb2\nweb3\napp3\n"),
        ("role:app,!app3", "app1\napp2\n"),
        ("!role:web", "app1\napp2\n"),
        ("10.0.1.*", "app1\napp2\napp3\n"),
        ("app1, 10.0.0.2", "web2\napp1\n"),
        ("w?b1", "web1\n"),
    ] {
        let out = list_hosts(limit);
        out.code(0);
        assert_eq!(out.stdout, hosts, "--limit {limit:?}\n{}", out.dump());
        assert!(out.stderr.is_empty(), "{}", out.dump());
    }
    let all = Planrun::new().plan(MIXED).args(&["plan", "plan.yaml", "--list-hosts"]).run();
    all.code(0);
    assert_eq!(all.stdout, "web1\nweb2\nweb3\napp1\napp2\napp3\n");
}

#[test]
fn a_limit_entry_that_matches_nothing_is_refused_with_did_you_mean() {
    for (limit, expected) in [
        ("wbe*", "`--limit` entry `wbe*` matches no server of this plan\n  help: did you mean `web*`?"),
        (
            "role:ap",
            "`--limit` entry `role:ap` names a role no server of this plan has\n  help: did you mean `role:app`?",
        ),
        (
            "role:app,!web9",
            "`--limit` names `!web9`, which is not a server of this plan\n  help: did you mean `!web1`?",
        ),
        ("db1", "`--limit` names `db1`, which the rollout does not select"),
        ("role:db", "`--limit` entry `role:db` matches only servers the rollout does not select"),
        ("web1,!web1", "`--limit web1,!web1` selects no host"),
        ("web1,", "`--limit` has an empty entry"),
        ("app[1", "`--limit` entry `app[1` is not a glob"),
    ] {
        let out = list_hosts(limit);
        out.code(2);
        out.stderr_has(expected);
        assert!(out.stdout.is_empty(), "{}", out.dump());
    }
}

/// The same limit, refused the same way by every command, before anything runs.
#[test]
fn plan_apply_and_exec_refuse_a_bad_limit_before_anything_runs() {
    let dir = TempDir::new("exec-bad-limit");
    let record = dir.path().join("record");
    let yaml = MIXED.replace("run: echo restart", &format!("run: echo ran >> {}", record.display()));
    dir.write("plan.yaml", &yaml);
    for command in [
        &["plan", "plan.yaml", "--limit", "role:app,!ap1"][..],
        &["apply", "plan.yaml", "--yes", "--limit", "role:app,!ap1"],
        &["exec", "plan.yaml", "--limit", "role:app,!ap1", "--", "echo ran >> record"],
    ] {
        let out = Planrun::in_dir(&dir).args(command).run();
        out.code(2);
        out.stderr_has("`--limit` names `!ap1`, which is not a server of this plan\n  help: did you mean `!app1`?");
        assert!(!record.exists() && !dir.path().join("record").exists(), "{command:?} ran something");
    }
}

#[test]
fn exec_with_a_limit_runs_on_those_hosts_only() {
    let out = exec(MIXED, &["--limit", "app*,!app2", "--", "echo hello"]);
    out.code(0);
    assert_eq!(block(&out, "app1"), ["=== app1: exit code 0", "hello"]);
    assert_eq!(block(&out, "app3"), ["=== app3: exit code 0", "hello"]);
    out.stdout_lacks("web1").stdout_lacks("=== app2");
    out.stdout_has("exec: ok on 2 hosts\n");
}

/// Over real sshd: each host's output comes from that host, and a host whose sshd is
/// gone fails alone, named, while the others' output is still shown.
#[test]
#[cfg_attr(no_sshd, ignore = "needs sshd: apt-get install openssh-server")]
fn exec_over_ssh_runs_on_each_host_and_names_the_unreachable_one() {
    if !support::require("sshd") {
        return;
    }
    let fleet = support::Fleet::start(4);
    for host in fleet.hosts() {
        std::fs::write(host.dir.join("name"), format!("I am host-{}\n", host.index)).unwrap();
    }
    let dir = TempDir::new("exec-ssh");
    dir.write(
        "plan.yaml",
        format!(
            "version: 1
application: shop
{ssh}  connect_timeout: 3s
env:
  DIR: \"{{{{host.options.dir}}}}\"
servers:
{servers}rollout:
  select: {{ roles: [app] }}
  steps:
    - {{ name: restart, run: echo restart }}
",
            ssh = fleet.ssh_yaml(),
            servers = fleet.servers_yaml()
        ),
    );
    // h4's sshd is stopped: nothing listens at its address any more.
    let listener = fleet.host(4).sshd_pid();
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(listener as i32), nix::sys::signal::Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect((fleet.host(4).addr.as_str(), fleet.host(4).port)).is_ok() {
        assert!(Instant::now() < deadline, "h4's sshd did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }

    let out =
        Planrun::in_dir(&dir).args(&["exec", "plan.yaml", "--", "cat \"$DIR/name\"; echo \"$SSH_CONNECTION\""]).run();
    out.code(1);
    for host in &fleet.hosts()[..3] {
        let name = format!("h{}", host.index);
        let lines = block(&out, &name);
        assert_eq!(
            lines[..2],
            [format!("=== {name}: exit code 0"), format!("I am host-{}", host.index)],
            "{}",
            out.dump()
        );
        // sshd's view of the connection: the server end is this host's address.
        let server_addr = lines[2].split_whitespace().nth(2);
        assert_eq!(server_addr, Some(host.addr.as_str()), "{}", out.dump());
    }
    let h4 = block(&out, "h4");
    assert_eq!(h4[0], "=== h4: FAILED: unreachable", "{}", out.dump());
    assert!(h4[1].starts_with("error: cannot connect to `") && h4[1].contains("connection refused"), "{}", out.dump());
    out.stdout_has("exec FAILED on 1 of 4 hosts: h4\n");
}

/// Ctrl-C kills the commands still running (their process groups) and exits 130.
#[test]
fn ctrl_c_kills_the_running_commands_and_exits_130() {
    let dir = TempDir::new("exec-ctrl-c");
    dir.write("plan.yaml", plan(2));
    let pids = dir.path().join("pids");
    let command = format!("echo $$ >> {}; exec sleep 60", pids.display());
    let child = Planrun::in_dir(&dir).args(&["exec", "plan.yaml", "--", &command]).spawn();
    let deadline = Instant::now() + Duration::from_secs(20);
    while common::lines(&pids).len() < 2 {
        assert!(Instant::now() < deadline, "the commands did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let planrun = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(planrun, nix::sys::signal::Signal::SIGINT).unwrap();
    let out = common::Output::from(child.wait_with_output().unwrap());
    out.code(130);
    out.stdout_has("FAILED: interrupted");
    for pid in common::lines(&pids) {
        let pid = nix::unistd::Pid::from_raw(pid.parse().unwrap());
        assert!(nix::sys::signal::kill(pid, None).is_err(), "the command {pid} outlived planrun\n{}", out.dump());
    }
}
