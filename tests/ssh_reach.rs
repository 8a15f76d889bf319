//! Reaching servers the way operators do, against real sshd on loopback: aliases and a
//! bastion from an ssh config, sudo, an agent-only key, a refused key.
//!
//! Every test runs the real binary with its own `HOME` and `SSH_AUTH_SOCK` (set on the
//! child only), so nothing here changes this process's environment.

mod common;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{TempDir, planrun_env};
use support::Fleet;

/// A home with an empty `.ssh`: the ssh config and keys of whoever runs the tests must
/// not take part.
fn empty_home(dir: &TempDir) -> PathBuf {
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".ssh")).expect("home");
    home
}

/// An ssh config in the style of an operator's: aliases for the apps and the bastion,
/// the apps behind the bastion, the key and known_hosts for everything.
fn ssh_config(fleet: &Fleet) -> String {
    format!(
        "\
# bastion and apps of the test fleet
Host bastion
  HostName {bastion}
Host app1
  HostName {app1}
Host app2
  HostName {app2}
Host app*
  ProxyJump bastion
Host *
  Port 2222
  User {user}
  IdentityFile {key}
  IdentitiesOnly yes
  UserKnownHostsFile {known}
  StrictHostKeyChecking yes
  ConnectTimeout 5
  ForwardAgent no
",
        bastion = fleet.host(1).addr,
        app1 = fleet.host(2).addr,
        app2 = fleet.host(3).addr,
        user = fleet.user,
        key = fleet.client_key.display(),
        known = fleet.known_hosts.display(),
    )
}

#[test]
#[cfg_attr(no_sshd, ignore = "needs sshd: apt-get install openssh-server")]
fn a_rollout_goes_through_the_bastion_named_in_the_ssh_config() {
    if !support::require("sshd") {
        return;
    }
    // Host 1 is the bastion, 2 and 3 the apps; the bastion logs channel requests.
    let fleet = Fleet::start_with_debug(3, &[1]);
    let dir = TempDir::new("reach-bastion");
    let home = empty_home(&dir);
    let config = dir.write("ssh_config", ssh_config(&fleet));
    let lock = support::lock_line();
    let plan = format!(
        r#"version: 1
application: shop
{lock}env: {{ GREETING: "it's {{{{application}}}}" }}
ssh: {{ config_file: {config} }}
servers:
  - {{ host: app1, roles: [app] }}
  - {{ host: app2, roles: [app] }}
rollout:
  select: {{ roles: [app] }}
  steps:
    - {{ name: stop, run: "echo \"$GREETING\"" }}
    - {{ name: start, run: "echo started {{{{host.name}}}} as $SPEAKER", env: {{ SPEAKER: "{{{{host.name}}}}'s planrun" }} }}
    - {{ name: check, run: "true" }}
"#,
        config = config.display()
    );
    let plan_path = dir.write("plan.yaml", plan);
    let env = [("HOME", home.as_os_str())];

    let shown = planrun_env(dir.path(), &["plan", "--verbose", plan_path.to_str().unwrap()], &env);
    assert_eq!(shown.code, 0, "{}{}", shown.stdout, shown.stderr);
    let app1 = fleet.host(2).addr.clone();
    let bastion = fleet.host(1).addr.clone();
    let user = &fleet.user;
    for expected in [
        format!("app1 ({user}@{app1}:2222):"),
        format!("address            {app1}"),
        format!("jump               {user}@{bastion}:2222"),
        format!("jump host 1 ({user}@{bastion}:2222):"),
    ] {
        assert!(shown.stdout.contains(&expected), "`{expected}` missing from:\n{}", shown.stdout);
    }
    let address_line = shown.stdout.lines().find(|l| l.trim_start().starts_with("address")).unwrap();
    assert!(address_line.ends_with("ssh config"), "{address_line}");
    let config_line = shown.stdout.lines().find(|l| l.trim_start().starts_with("config_file")).unwrap();
    assert!(
        config_line.contains(&config.display().to_string()) && config_line.ends_with("plan `ssh`"),
        "{config_line}"
    );

    let out = planrun_env(dir.path(), &["apply", "--yes", "-v", plan_path.to_str().unwrap()], &env);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    for expected in [
        "app1 | it's shop",
        "app2 | it's shop",
        "app1 | started app1 as app1's planrun",
        "app2 | started app2 as app2's planrun",
    ] {
        assert!(out.stdout.contains(expected), "`{expected}` missing from:\n{}", out.stdout);
    }

    // Both apps were reached through the bastion, over one connection to it, and each
    // over one connection of its own for all three steps.
    let bastion_log = fleet.host(1).log();
    for app in [2, 3] {
        let forwarded = format!("target {} port 2222", fleet.host(app).addr);
        assert!(
            bastion_log.lines().any(|l| l.contains("server_request_direct_tcpip") && l.contains(&forwarded)),
            "no direct-tcpip request for host {app} in the bastion's log:\n{bastion_log}"
        );
        assert_eq!(fleet.host(app).accepted_logins(), 1, "host {app}:\n{}", fleet.host(app).log());
    }
    assert_eq!(fleet.host(1).accepted_logins(), 1, "{bastion_log}");
}

#[test]
#[cfg_attr(no_sshd, ignore = "needs sshd: apt-get install openssh-server")]
fn a_bastion_with_an_unknown_host_key_is_refused() {
    if !support::require("sshd") {
        return;
    }
    let fleet = Fleet::start(2);
    let dir = TempDir::new("reach-bastion-key");
    let home = empty_home(&dir);
    // The app's key is known, the bastion's is not.
    let app = fleet.host(2);
    let known = dir.write("known_hosts", format!("[{}]:2222 {}\n", app.addr, app.host_public_key));
    let lock = support::lock_line();
    let plan = format!(
        "version: 1
application: shop
{lock}ssh:
  port: 2222
  jump: {bastion}:2222
  identity_file: {key}
  known_hosts: {known}
  config_file: /dev/null
servers:
  - {{ host: {app}, name: app1, roles: [app] }}
rollout:
  select: {{ roles: [app] }}
  steps: [{{ name: hello, run: \"true\" }}]
",
        bastion = fleet.host(1).addr,
        key = fleet.client_key.display(),
        known = known.display(),
        app = app.addr,
    );
    let plan_path = dir.write("plan.yaml", plan);
    let out =
        planrun_env(dir.path(), &["apply", "--yes", "-v", plan_path.to_str().unwrap()], &[("HOME", home.as_os_str())]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let bastion = format!("{}@{}:2222", fleet.user, fleet.host(1).addr);
    let expected = format!(
        "app1: cannot reach `{}@{}:2222` through jump host `{bastion}`: host key of `{bastion}` is unknown",
        fleet.user, app.addr
    );
    assert!(out.stderr.contains(&expected), "{}", out.stderr);
    assert_eq!(app.connections(), 0, "{}", app.log());
}

#[test]
fn a_missing_ssh_config_is_bad_input_found_before_anything_runs() {
    let dir = TempDir::new("reach-no-config");
    let home = empty_home(&dir);
    let plan = "version: 1
application: shop
ssh: { config_file: ./missing_config, jump: \"ops@bastion:22\" }
servers: [{ host: app1, roles: [app] }]
rollout: { select: { roles: [app] }, steps: [{ name: hello, run: \"true\" }] }
";
    let plan_path = dir.write("plan.yaml", plan);
    let out =
        planrun_env(dir.path(), &["apply", "--yes", "-v", plan_path.to_str().unwrap()], &[("HOME", home.as_os_str())]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.starts_with(
            "error: cannot work out how to reach 1 of 1 hosts; nothing was executed\n  app1: cannot read the ssh config `./missing_config`: "
        ),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("fix `ssh.config_file` or create the file"), "{}", out.stderr);
}

#[test]
#[cfg_attr(no_sshd, ignore = "needs sshd: apt-get install openssh-server")]
fn an_agent_only_key_authenticates() {
    if !support::require("sshd") || !support::require("ssh-agent") || !support::require("ssh-add") {
        return;
    }
    let fleet = Fleet::start(1);
    let dir = TempDir::new("reach-agent");
    let home = empty_home(&dir);
    let agent = Agent::start(dir.path());
    agent.add(&fleet.client_key);
    // No identity file anywhere: not in the plan, no ssh config, none in `~/.ssh`.
    let plan_path =
        dir.write("plan.yaml", direct_plan(&fleet, "", "[{ name: hello, run: \"echo hello from $USER\" }]"));
    let env = [("HOME", home.as_os_str()), ("SSH_AUTH_SOCK", agent.socket.as_os_str())];
    let out = planrun_env(dir.path(), &["apply", "--yes", "-v", plan_path.to_str().unwrap()], &env);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains(&format!("h1 | hello from {}", fleet.user)), "{}", out.stdout);
    assert!(fleet.host(1).log().contains("Accepted publickey"), "{}", fleet.host(1).log());
}

#[test]
#[cfg_attr(no_sshd, ignore = "needs sshd: apt-get install openssh-server")]
fn a_refused_key_lists_every_method_tried() {
    if !support::require("sshd") || !support::require("ssh-agent") || !support::require("ssh-add") {
        return;
    }
    let fleet = Fleet::start(1);
    let dir = TempDir::new("reach-refused");
    let home = empty_home(&dir);
    let agent = Agent::start(dir.path());
    agent.add(&fleet.generate_key("agent_stranger"));
    let default_key = home.join(".ssh/id_ed25519");
    std::fs::copy(fleet.generate_key("home_stranger"), &default_key).expect("copy key");
    let plan_path = dir.write("plan.yaml", direct_plan(&fleet, "", "[{ name: hello, run: \"true\" }]"));
    let env = [("HOME", home.as_os_str()), ("SSH_AUTH_SOCK", agent.socket.as_os_str())];
    let out = planrun_env(dir.path(), &["apply", "--yes", "-v", plan_path.to_str().unwrap()], &env);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let target = format!("{}@{}:2222", fleet.user, fleet.host(1).addr);
    assert!(out.stderr.contains("error: pre-flight: cannot reach 1 of 1 hosts; nothing was changed"), "{}", out.stderr);
    // The agent's key first, then the default identity file, as OpenSSH tries them.
    let tried =
        format!("authentication to `{target}` failed; tried: ssh-agent key `agent_stranger` (ssh-ed25519 SHA256:");
    assert!(out.stderr.contains(&tried), "{}", out.stderr);
    assert!(out.stderr.contains(&format!("), `{}` (ssh-ed25519 SHA256:", default_key.display())), "{}", out.stderr);
    assert!(out.stderr.contains("the server accepts: publickey"), "{}", out.stderr);
}

#[test]
#[cfg_attr(no_sshd, ignore = "needs sshd: apt-get install openssh-server")]
fn an_encrypted_key_from_the_ssh_config_is_skipped_clearly_without_a_terminal() {
    if !support::require("sshd") || !support::require("ssh-keygen") {
        return;
    }
    let fleet = Fleet::start(1);
    let dir = TempDir::new("reach-encrypted");
    let home = empty_home(&dir);
    let key = dir.path().join("encrypted_key");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "secret", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen");
    assert!(status.success());
    let config = dir.write("ssh_config", format!("Host *\n  IdentityFile {}\n", key.display()));
    let plan = direct_plan(&fleet, "", "[{ name: hello, run: \"true\" }]")
        .replace("config_file: /dev/null", &format!("config_file: {}", config.display()));
    let plan_path = dir.write("plan.yaml", plan);
    // stdin is not a terminal (the helper gives the child /dev/null), so nobody can be asked.
    let out =
        planrun_env(dir.path(), &["apply", "--yes", "-v", plan_path.to_str().unwrap()], &[("HOME", home.as_os_str())]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let expected = format!(
        "tried: `{key}` (skipped: key `{key}` is encrypted and there is no terminal to ask for its passphrase; load it into ssh-agent with `ssh-add {key}`",
        key = key.display()
    );
    assert!(out.stderr.contains(&expected), "{}", out.stderr);
}

#[test]
#[cfg_attr(any(no_sshd, no_sudo), ignore = "needs sshd and sudo: apt-get install openssh-server sudo")]
fn sudo_runs_what_sudoers_allows_and_explains_a_password_prompt() {
    if !support::require("sshd") || !support::require("sudo") || !support::require("useradd") {
        return;
    }
    let fleet = Fleet::start(1);
    let user = SudoUser::create();
    let dir = TempDir::new("reach-sudo");
    let home = empty_home(&dir);
    let env = [("HOME", home.as_os_str())];
    let ssh = format!("  user: {}\n  identity_file: {}\n", user.name, fleet.client_key.display());

    let allowed = dir.write(
        "allowed.yaml",
        direct_plan(
            &fleet,
            &ssh,
            "[{ name: who, run: \"echo as $(id -un)\" }, { name: root, run: \"id -un\", sudo: true }]",
        ),
    );
    let out = planrun_env(dir.path(), &["apply", "--yes", "-v", allowed.to_str().unwrap()], &env);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains(&format!("h1 | as {}", user.name)), "{}", out.stdout);
    assert!(out.stdout.contains("h1 root: run: sudo -n -- id -un"), "{}", out.stdout);
    assert!(out.stdout.contains("h1 | root"), "{}", out.stdout);

    let refused = dir.write("refused.yaml", direct_plan(&fleet, &ssh, "[{ name: who, run: whoami, sudo: true }]"));
    let out = planrun_env(dir.path(), &["apply", "--yes", "-v", refused.to_str().unwrap()], &env);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(
        all.contains(
            "sudo on `h1` wants a password for `sudo -n -- whoami`; planrun runs sudo with `-n` and cannot type one"
        ),
        "{all}"
    );
    assert!(all.contains(&format!("`{} ALL=(root) NOPASSWD: /full/path/of/whoami`", user.name)), "{all}");
}

/// A plan for host 1 of the fleet, reached directly with the fleet's known_hosts.
fn direct_plan(fleet: &Fleet, extra_ssh: &str, steps: &str) -> String {
    let lock = support::lock_line();
    format!(
        "version: 1
application: shop
{lock}ssh:
  port: 2222
  known_hosts: {known}
  config_file: /dev/null
{extra_ssh}servers:
  - {{ host: {addr}, name: h1, roles: [app] }}
rollout:
  select: {{ roles: [app] }}
  steps: {steps}
",
        known = fleet.known_hosts.display(),
        addr = fleet.host(1).addr,
    )
}

/// An ssh-agent of the test's own, stopped on drop.
struct Agent {
    socket: PathBuf,
    child: std::process::Child,
}

impl Agent {
    fn start(dir: &Path) -> Agent {
        let socket = dir.join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .spawn()
            .expect("ssh-agent starts");
        for _ in 0..200 {
            if socket.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Agent { socket, child }
    }

    fn add(&self, key: &Path) {
        let status = Command::new("ssh-add")
            .arg(key)
            .env("SSH_AUTH_SOCK", &self.socket)
            .stderr(Stdio::null())
            .status()
            .expect("ssh-add runs");
        assert!(status.success(), "ssh-add {}", key.display());
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A login user with a sudoers drop-in: `id` without a password, `whoami` only with one
/// (which it does not have). Both are removed on drop.
struct SudoUser {
    name: String,
    sudoers: PathBuf,
}

impl SudoUser {
    fn create() -> SudoUser {
        let name = format!("planrun{}", std::process::id());
        let sudoers = PathBuf::from(format!("/etc/sudoers.d/planrun-test-{}", std::process::id()));
        run("useradd", &["-M", "-d", "/nonexistent", "-s", "/bin/sh", &name]);
        // Not `!` (useradd's default): sshd without PAM refuses a locked account; `*`
        // matches no password, so sudo still cannot be given one.
        run("usermod", &["-p", "*", &name]);
        let user = SudoUser { name, sudoers };
        let id = support::find_tool("id").expect("id");
        let whoami = support::find_tool("whoami").expect("whoami");
        let rules = format!(
            "{name} ALL=(root) NOPASSWD: {id}\n{name} ALL=(root) {whoami}\n",
            name = user.name,
            id = id.display(),
            whoami = whoami.display()
        );
        let draft = std::env::temp_dir().join(format!("planrun-sudoers-{}", std::process::id()));
        std::fs::write(&draft, rules).expect("write sudoers draft");
        run("visudo", &["-c", "-q", "-f", draft.to_str().unwrap()]);
        std::fs::copy(&draft, &user.sudoers).expect("install sudoers drop-in");
        let _ = std::fs::remove_file(&draft);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&user.sudoers, std::fs::Permissions::from_mode(0o440)).expect("chmod sudoers");
        user
    }
}

impl Drop for SudoUser {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.sudoers);
        let _ = Command::new("userdel").arg(&self.name).stderr(Stdio::null()).status();
    }
}

fn run(tool: &str, args: &[&str]) {
    let path = support::find_tool(tool).unwrap_or_else(|| panic!("`{tool}` is not installed"));
    let out = Command::new(path).args(args).output().unwrap_or_else(|e| panic!("{tool}: {e}"));
    assert!(out.status.success(), "{tool} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Wall time of `apply` for 20 hosts reached directly and through one bastion (one
/// `true` step, all hosts in one batch). Run with `cargo test --test ssh_reach -- --ignored
/// --nocapture`; it prints the times and checks only that both runs succeed.
#[test]
#[ignore]
fn measure_direct_and_through_a_bastion() {
    if !support::require("sshd") {
        return;
    }
    const APPS: usize = 20;
    let fleet = Fleet::start(APPS + 1);
    let dir = TempDir::new("reach-measure");
    let home = empty_home(&dir);
    let servers: String = (2..=APPS + 1)
        .map(|i| format!("  - {{ host: {}, name: app{i}, roles: [app] }}\n", fleet.host(i).addr))
        .collect();
    for (label, jump) in [("direct", String::new()), ("bastion", format!("  jump: {}:2222\n", fleet.host(1).addr))] {
        let lock = support::lock_line();
        let plan = format!(
            "version: 1\napplication: shop\n{lock}ssh:\n  port: 2222\n  identity_file: {key}\n  known_hosts: {known}\n  config_file: /dev/null\n{jump}servers:\n{servers}rollout:\n  select: {{ roles: [app] }}\n  batch_size: 100%\n  steps: [{{ name: hello, run: \"true\" }}]\n",
            key = fleet.client_key.display(),
            known = fleet.known_hosts.display(),
        );
        let plan_path = dir.write(&format!("{label}.yaml"), plan);
        let started = std::time::Instant::now();
        let out = planrun_env(
            dir.path(),
            &["apply", "--yes", "-v", plan_path.to_str().unwrap()],
            &[("HOME", home.as_os_str())],
        );
        let took = started.elapsed();
        assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
        eprintln!("{label}: {APPS} hosts in {took:.2?}");
    }
}
