//! `servers_from` on the real binary: servers read from a file and from a command's
//! output, merged after the plan's own, checked with positions into them; a command that
//! fails stops planrun before anything runs; a resume sees a changed inventory. The
//! `planrun inventory linode` source against the tests' local Linode API, and one fleet
//! of real sshd servers listed by an inventory file and a command.

mod common;
mod support;

use common::{Planrun, TempDir};
use support::linode::Linode;

/// A plan whose own server is `h1` and whose `servers_from` is `sources` (YAML list lines);
/// its lock and its `before` marker are in `dir`, and its one step fails on `vars.fail`.
fn plan(dir: &TempDir, sources: &str) -> String {
    let root = dir.path().display();
    format!(
        "version: 1
application: shop
vars:
  fail: none
lock: {{ path: {root}/lock }}
servers:
  - {{ host: 127.0.0.1, name: h1, transport: local, roles: [app] }}
servers_from:
{sources}before:
  - name: prepare
    local: touch {root}/prepared
rollout:
  select: {{ roles: [app] }}
  batch_size: 1
  steps:
    - name: restart
      run: echo \"restart {{{{host.name}}}} {{{{default host.options.private_ip 'none'}}}}\" && test {{{{host.name}}}} != {{{{vars.fail}}}}
"
    )
}

const INVENTORY: &str = "# servers of the shop
- { host: 127.0.0.1, name: h2, transport: local, roles: [app], options: { private_ip: 10.0.0.2 } }
";

/// A command that prints `json` (written to a file beside it).
fn list_hosts(dir: &TempDir, json: &str) {
    dir.write("hosts.json", json);
    dir.write("list-hosts", "#!/bin/sh\ncat hosts.json\n");
    std::fs::set_permissions(dir.path().join("list-hosts"), std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .unwrap();
}

const HOSTS_JSON: &str = r#"[
  {"host": "127.0.0.1", "name": "h3", "transport": "local", "roles": ["app"], "options": {"private_ip": "10.0.0.3"}},
  {"host": "127.0.0.1", "name": "h4", "transport": "local", "roles": ["app"]}
]
"#;

const BOTH: &str = "  - file: inventory.yaml\n  - command: ./list-hosts\n";

#[test]
fn servers_from_a_file_and_a_command_follow_the_plans_own_in_order() {
    let dir = TempDir::new("inventory-merge");
    dir.write("plan.yaml", plan(&dir, BOTH));
    dir.write("inventory.yaml", INVENTORY);
    list_hosts(&dir, HOSTS_JSON);
    let out = Planrun::in_dir(&dir).args(&["plan", "plan.yaml", "--list-hosts"]).run();
    out.code(0);
    assert_eq!(out.stdout, "h1\nh2\nh3\nh4\n", "{}", out.dump());
    // Their options reach templates like the plan's own servers'.
    let out = Planrun::in_dir(&dir).args(&["plan", "plan.yaml"]).run();
    out.code(0).stdout_has("restart h2 10.0.0.2").stdout_has("restart h3 10.0.0.3").stdout_has("restart h4 none");
    let out = Planrun::in_dir(&dir).args(&["exec", "plan.yaml", "--", "echo hello"]).run();
    out.code(0).stdout_has("=== h4: exit code 0\nhello\n").stdout_has("exec: ok on 4 hosts\n");
    // `validate` runs the command too, and an inventory is not a base of the plan.
    let out = Planrun::in_dir(&dir).args(&["validate", "--format", "json", "plan.yaml"]).run();
    out.code(0);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc["plans"][0]["bases"], serde_json::json!([]), "{}", out.stdout);
}

#[test]
fn an_inventory_is_checked_like_the_plans_servers_with_positions_into_it() {
    let dir = TempDir::new("inventory-checks");
    dir.write("plan.yaml", plan(&dir, BOTH));
    dir.write("inventory.yaml", INVENTORY);
    list_hosts(
        &dir,
        r#"[
  {"host": "127.0.0.1", "name": "h2", "transport": "local", "roles": ["app"]},
  {"host": "127.0.0.1", "name": "h5", "transport": "lcal", "roles": ["app"], "optons": {}}
]
"#,
    );
    let out = Planrun::in_dir(&dir).args(&["apply", "plan.yaml", "--yes"]).run();
    out.code(2);
    out.stderr_has("error: output of `./list-hosts`:2:33: duplicate server name `h2`\n");
    out.stderr_has("  note: inventory.yaml:2:28: first listed here\n");
    out.stderr_has("error: output of `./list-hosts`:3:78: unknown field `optons` in `servers[3]`\n");
    out.stderr_has("error: output of `./list-hosts`:3:52: `lcal` is not a valid value for `servers[3].transport`\n");
    out.stderr_has("plan.yaml: 3 problems found; nothing was executed\n");
    assert!(!dir.path().join("prepared").exists(), "nothing ran");

    // Output that is not a list of servers.
    list_hosts(&dir, "{\"host\": \"127.0.0.1\"}\n");
    let out = Planrun::in_dir(&dir).args(&["validate", "plan.yaml"]).run();
    out.code(2)
        .stderr_has("error: output of `./list-hosts`:1:1: the inventory command's output is not a list of servers\n");
    // A file that is missing is named where it is written.
    dir.write("plan.yaml", plan(&dir, "  - file: missing.yaml\n"));
    let out = Planrun::in_dir(&dir).args(&["validate", "plan.yaml"]).run();
    out.code(2).stderr_has("error: plan.yaml:9:11: the inventory file `");
}

#[test]
fn a_failing_or_hanging_command_stops_planrun_before_anything_runs() {
    let dir = TempDir::new("inventory-fails");
    dir.write("plan.yaml", plan(&dir, "  - command: echo starting; echo 'no token in LINODE_TOKEN' >&2; exit 3\n"));
    let out = Planrun::in_dir(&dir).args(&["apply", "plan.yaml", "--yes"]).run();
    out.code(2);
    out.stderr_has("error: plan.yaml:9:14: the inventory command exited with status 3\n");
    out.stderr_has("help: its standard error ends with: no token in LINODE_TOKEN\n");
    assert!(!dir.path().join("prepared").exists(), "nothing ran");

    // A command that outlives its timeout is killed with whatever it started.
    dir.write(
        "plan.yaml",
        plan(
            &dir,
            &format!("  - {{ command: \"sleep 60 & echo $! > {}/pid; wait\", timeout: 1s }}\n", dir.path().display()),
        ),
    );
    let out = Planrun::in_dir(&dir).args(&["exec", "plan.yaml", "--", "true"]).run();
    out.code(2).stderr_has("the inventory command did not finish within 1s and was killed\n");
    let pid: i32 = std::fs::read_to_string(dir.path().join("pid")).unwrap().trim().parse().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z ")
    {
        assert!(std::time::Instant::now() < deadline, "the command's `sleep` was left running");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn a_resume_refuses_an_inventory_whose_servers_changed_but_not_its_comments() {
    let dir = TempDir::new("inventory-resume");
    dir.write("plan.yaml", plan(&dir, BOTH));
    dir.write("inventory.yaml", INVENTORY);
    list_hosts(&dir, HOSTS_JSON);
    let out = Planrun::in_dir(&dir).args(&["apply", "plan.yaml", "--yes", "--var", "fail=h3"]).run();
    out.code(1);
    // Only a comment changed: the servers are the same, the resume goes on (and h3
    // fails again).
    dir.write("inventory.yaml", format!("# reordered by a tool\n{INVENTORY}"));
    let out = Planrun::in_dir(&dir).args(&["apply", "plan.yaml", "--yes", "--resume"]).run();
    out.code(1).stderr_lacks("changed");
    // The command now lists another server: the resume is refused, naming the output.
    list_hosts(&dir, &HOSTS_JSON.replace("\"h4\"", "\"h9\""));
    let out = Planrun::in_dir(&dir).args(&["apply", "plan.yaml", "--yes", "--resume"]).run();
    out.code(2).stderr_has("`output of `./list-hosts`` changed");
    out.stderr_has("pass `--resume-changed`");
}

const TOKEN: &str = "inventory-token-77c1";

fn linode() -> Linode {
    let api = Linode::start(TOKEN, "unused", &[]);
    api.add_instance("web-1", &["shop", "app"], &["127.0.61.1", "192.168.130.1"]);
    api.add_instance("db-1", &["other"], &["127.0.61.9", "192.168.130.9"]);
    api.add_instance("web-2", &["app", "shop"], &["192.168.130.2", "127.0.61.2"]);
    api.add_instance("web-3", &["shop"], &["127.0.61.3", "192.168.130.3"]);
    api.add_instance("web-4", &["shop", "app"], &["127.0.61.4", "192.168.130.4"]);
    api
}

#[test]
fn inventory_linode_lists_the_tagged_instances_over_every_page() {
    let api = linode();
    let dir = TempDir::new("inventory-linode");
    let out = Planrun::in_dir(&dir)
        .env("LINODE_TOKEN", TOKEN)
        .args(&["inventory", "linode", "--tag", "shop", "--api-url", &api.url])
        .run();
    out.code(0);
    let servers: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let names: Vec<&str> = servers.as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["web-1", "web-2", "web-3", "web-4"], "{}", out.stdout);
    assert_eq!(servers[1]["host"], "127.0.61.2");
    assert_eq!(servers[1]["options"]["private_ip"], "192.168.130.2");
    assert_eq!(servers[1]["options"]["linode_id"], 31002);
    assert_eq!(servers[0]["roles"], serde_json::json!(["shop", "app"]));
    // Four instances at two a page: two pages, each asked with the tag's filter.
    let state = api.state.lock().unwrap();
    let pages: Vec<&String> = state.requests.iter().filter(|r| r.contains("/linode/instances")).collect();
    assert_eq!(pages.len(), 2, "{pages:?}");
    assert!(pages[1].contains("page=2"), "{pages:?}");
    assert!(
        state.filters.iter().all(|f| f.ends_with(r#" {"tags":"shop"}"#)) && state.filters.len() == 2,
        "{:?}",
        state.filters
    );
    drop(state);

    // `--address private` connects over the private network; `--role` names the roles.
    let out = Planrun::in_dir(&dir)
        .env("LINODE_TOKEN", TOKEN)
        .args(&["inventory", "linode", "--tag", "shop", "--api-url", &api.url, "--address", "private", "--role", "web"])
        .run();
    out.code(0);
    let servers: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(servers[0]["host"], "192.168.130.1");
    assert_eq!(servers[3]["roles"], serde_json::json!(["web"]));
}

#[test]
fn inventory_linode_as_a_plans_command_and_its_failures() {
    let api = linode();
    let dir = TempDir::new("inventory-linode-plan");
    let command =
        format!("{} inventory linode --tag shop --api-url {} --role app", env!("CARGO_BIN_EXE_planrun"), api.url);
    dir.write(
        "plan.yaml",
        format!(
            "version: 1
application: shop
servers_from:
  - command: {command}
rollout:
  select: {{ roles: [app] }}
  steps:
    - name: restart
      run: echo \"restart {{{{host.name}}}} via {{{{host.options.private_ip}}}}\"
"
        ),
    );
    let out = Planrun::in_dir(&dir).env("LINODE_TOKEN", TOKEN).args(&["plan", "plan.yaml"]).run();
    out.code(0).stdout_has("restart web-1 via 192.168.130.1").stdout_has("restart web-4 via 192.168.130.4");
    out.stdout_lacks("db-1");

    // A refused token: the command fails, planrun stops, the token is never shown.
    let out = Planrun::in_dir(&dir).env("LINODE_TOKEN", "wrong-token-5a5a").args(&["plan", "plan.yaml"]).run();
    out.code(2).stderr_has("plan.yaml:4:14: the inventory command exited with status 1\n");
    out.stderr_has("401");
    // No token at all: said by the command, exit 2 for it.
    let out = Planrun::in_dir(&dir).env("LINODE_TOKEN", "").args(&["inventory", "linode", "--tag", "shop"]).run();
    out.code(2).stderr_has("the environment variable `LINODE_TOKEN` is not set");
}

/// Over real sshd: a fleet whose servers come from an inventory file and from a
/// command, with no `servers:` in the plan; `exec` reaches every one of them.
#[test]
#[cfg_attr(no_sshd, ignore = "needs sshd: apt-get install openssh-server")]
fn exec_reaches_an_sshd_fleet_listed_by_a_file_and_a_command() {
    if !support::require("sshd") {
        return;
    }
    let fleet = support::Fleet::start(3);
    for host in fleet.hosts() {
        std::fs::write(host.dir.join("name"), format!("I am host-{}\n", host.index)).unwrap();
    }
    let lines: Vec<String> = fleet.servers_yaml().lines().map(|l| l.trim_start().to_string() + "\n").collect();
    let dir = TempDir::new("inventory-ssh");
    dir.write("inventory.yaml", &lines[0]);
    dir.write("more.yaml", lines[1..].concat());
    dir.write(
        "plan.yaml",
        format!(
            "version: 1
application: shop
{ssh}  connect_timeout: 5s
env:
  DIR: \"{{{{host.options.dir}}}}\"
servers_from:
  - file: inventory.yaml
  - command: cat more.yaml
rollout:
  select: {{ roles: [app] }}
  steps:
    - {{ name: restart, run: echo restart }}
",
            ssh = fleet.ssh_yaml()
        ),
    );
    let out = Planrun::in_dir(&dir).args(&["exec", "plan.yaml", "--", "cat \"$DIR/name\""]).run();
    out.code(0);
    for host in fleet.hosts() {
        out.stdout_has(&format!("=== h{0}: exit code 0\nI am host-{0}\n", host.index));
    }
    out.stdout_has("exec: ok on 3 hosts\n");
}

/// A failing command's standard error is shown masked: the plan's secrets are not yet
/// installed when its inventory fails, and a token is what such a command prints.
#[test]
fn a_failing_commands_standard_error_is_shown_with_the_plans_secrets_masked() {
    let dir = TempDir::new("inventory-secret");
    let text = plan(&dir, "  - command: echo \"token $INVENTORY_TOKEN refused\" >&2; exit 1\n")
        .replace("vars:\n", "secret_env: [INVENTORY_TOKEN]\nvars:\n");
    dir.write("plan.yaml", text);
    let out = Planrun::in_dir(&dir).env("INVENTORY_TOKEN", "tok-8c1e29f0aa").args(&["validate", "plan.yaml"]).run();
    out.code(2).stderr_has("help: its standard error ends with: token *** refused\n").stderr_lacks("tok-8c1e29f0aa");
}
