//! Key discovery without `identity_file`: ssh-agent, then `~/.ssh/id_ed25519`.
//!
//! Its own test binary with a single test, because it points the process-wide
//! `SSH_AUTH_SOCK` and `HOME` at the fleet's files.

mod support;

use std::process::{Command, Stdio};

use planrun::transport::{SshSession, TransportError};
use support::Fleet;

#[test]
#[cfg_attr(no_sshd, ignore = "needs sshd: apt-get install openssh-server")]
fn agent_keys_then_default_keys() {
    if !support::require("sshd") || !support::require("ssh-agent") {
        return;
    }
    let fleet = Fleet::start(1);
    let socket = fleet.dir().join("agent.sock");
    let home = fleet.dir().join("home");
    std::fs::create_dir_all(home.join(".ssh")).expect("home");
    let mut agent =
        Command::new("ssh-agent").arg("-D").arg("-a").arg(&socket).stdout(Stdio::null()).spawn().expect("ssh-agent");
    for _ in 0..100 {
        if socket.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // SAFETY: the only test of this binary, and no other thread runs yet: the runtime
    // is built below.
    unsafe {
        std::env::set_var("SSH_AUTH_SOCK", &socket);
        std::env::set_var("HOME", &home);
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let mut target = fleet.target(1);
    target.identity_files = Vec::new();
    target.identities_only = false;

    // An empty agent and no default keys: the message says so.
    let err = runtime.block_on(SshSession::connect(&target)).expect_err("no usable key");
    assert!(matches!(err, TransportError::AuthFailed { .. }), "{err:?}");
    assert!(err.to_string().contains("tried: ssh-agent (holds no keys)"), "{err}");

    // A stranger key in the agent is tried and listed; the authorized default key wins.
    let stranger = fleet.generate_key("stranger_key");
    let added = Command::new("ssh-add")
        .arg(&stranger)
        .env("SSH_AUTH_SOCK", &socket)
        .stderr(Stdio::null())
        .status()
        .expect("ssh-add");
    assert!(added.success());
    let err = runtime.block_on(SshSession::connect(&target)).expect_err("only a stranger key");
    assert!(err.to_string().contains("tried: ssh-agent key `stranger_key` (ssh-ed25519 SHA256:"), "{err}");
    std::fs::copy(&fleet.client_key, home.join(".ssh/id_ed25519")).expect("copy key");
    let session = runtime.block_on(SshSession::connect(&target)).expect("default key");
    runtime.block_on(session.close());

    // The authorized key in the agent is enough on its own.
    std::fs::remove_file(home.join(".ssh/id_ed25519")).expect("remove");
    let added = Command::new("ssh-add")
        .arg(&fleet.client_key)
        .env("SSH_AUTH_SOCK", &socket)
        .stderr(Stdio::null())
        .status()
        .expect("ssh-add");
    assert!(added.success());
    let session = runtime.block_on(SshSession::connect(&target)).expect("agent key");
    runtime.block_on(session.close());

    let _ = agent.kill();
    let _ = agent.wait();
}
