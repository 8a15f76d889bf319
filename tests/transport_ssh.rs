//! The SSH transport against real OpenSSH servers (see `support::fleet`).

mod support;

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use planrun::transport::{HostKeyChecking, SshSession, Stream, Transport, TransportError};
use support::{Fleet, exec_collect, lines_of};

async fn connect(fleet: &Fleet, index: usize) -> Transport {
    let target = fleet.target(index);
    match SshSession::connect(&target).await {
        Ok(session) => Transport::Ssh(session),
        Err(e) => panic!("connect to host {index}: {e}\n{}", fleet.host(index).log()),
    }
}

#[tokio::test]
#[cfg_attr(no_sshd, ignore = "needs sshd: apt-get install openssh-server")]
async fn exec_returns_output_lines_and_exit_code() {
    if !support::require("sshd") {
        return;
    }
    let fleet = Fleet::start(1);
    let host = connect(&fleet, 1).await;

    let (result, lines) =
        exec_collect(&host, "echo one; echo err1 >&2; echo two; echo err2 >&2; printf partial", None).await;
    let exit = result.expect("exec");
    assert!(exit.success(), "{exit:?}");
    assert_eq!(lines_of(&lines, Stream::Stdout), ["one", "two", "partial"]);
    assert_eq!(lines_of(&lines, Stream::Stderr), ["err1", "err2"]);

    let exit = exec_collect(&host, "echo nope; exit 3", None).await.0.expect("exec");
    assert_eq!(exit.code, Some(3));
    assert!(!exit.success());

    let exit = exec_collect(&host, "kill -9 $$", None).await.0.expect("exec");
    assert_eq!(exit.code, None);
    assert_eq!(exit.signal.as_deref(), Some("KILL"));

    host.close().await;
}

#[tokio::test]
#[cfg_attr(no_sshd, ignore = "needs sshd: apt-get install openssh-server")]
async fn streams_lines_while_the_command_runs() {
    if !support::require("sshd") {
        return;
    }
    let fleet = Fleet::start(1);
    let host = connect(&fleet, 1).await;
    let (tx, mut rx) = tokio::sync::mpsc::channel(planrun::transport::LINES_AHEAD);
    let start = Instant::now();
    let exec = host.exec("echo first; sleep 1; echo second", None, tx);
    let watch = async {
        let first = rx.recv().await.expect("first line");
        (first.line, start.elapsed())
    };
    let (exit, (first, first_at)) = tokio::join!(exec, watch);
    assert!(exit.expect("exec").success());
    assert_eq!(first, "first");
    assert!(
        first_at < Duration::from_millis(800),
        "the first line came only after {first_at:?}, when the command ended"
    );
}

#[tokio::test]
#[cfg_attr(no_sshd, ignore = "needs sshd: apt-get install openssh-server")]
async fn timeout_kills_the_remote_command_and_its_children() {
    if !support::require("sshd") {
        return;
    }
    let fleet = Fleet::start(1);
    let host = connect(&fleet, 1).await;
    let dir = &fleet.host(1).dir;
    let (started, marker) = (dir.join("started"), dir.join("marker"));
    // A background child as well as the shell's own next command: closing the channel
    // alone would let both run on.
    let command = format!(
        "touch {started}; (sleep 1; touch {marker}) & sleep 1; touch {marker}",
        started = started.display(),
        marker = marker.display()
    );
    let start = Instant::now();
    let (result, _) = exec_collect(&host, &command, Some(Duration::from_millis(500))).await;
    match result {
        Err(e @ TransportError::Timeout { .. }) => {
            let message = e.to_string();
            assert!(
                message.starts_with("command timed out after 500ms on `root@127.")
                    || message.contains("command timed out after 500ms on `"),
                "{message}"
            );
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(3), "{:?}", start.elapsed());
    assert!(started.exists(), "the command never ran");

    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!marker.exists(), "the timed-out command (or its child) kept running and wrote the marker");

    // The session survives a timed-out command.
    let exit = exec_collect(&host, "true", None).await.0.expect("exec");
    assert!(exit.success());
}

#[tokio::test]
#[cfg_attr(no_sshd, ignore = "needs sshd: apt-get install openssh-server")]
async fn cancelled_exec_kills_the_remote_command() {
    if !support::require("sshd") {
        return;
    }
    let fleet = Fleet::start(1);
    let host = connect(&fleet, 1).await;
    let dir = &fleet.host(1).dir;
    let (started, marker) = (dir.join("started"), dir.join("marker"));
    let command = format!("touch {}; sleep 1; touch {}", started.display(), marker.display());
    let (tx, _rx) = tokio::sync::mpsc::channel(planrun::transport::LINES_AHEAD);
    // Dropping the future is how an executor cancels a step (second Ctrl-C).
    let cancelled = tokio::time::timeout(Duration::from_millis(400), host.exec(&command, None, tx)).await;
    assert!(cancelled.is_err(), "the command should still be running");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(started.exists(), "the command never ran");
    assert!(!marker.exists(), "the cancelled command kept running");
}

#[tokio::test]
#[cfg_attr(no_sshd, ignore = "needs sshd: apt-get install openssh-server")]
async fn remote_stdin_is_closed() {
    if !support::require("sshd") {
        return;
    }
    let fleet = Fleet::start(1);
    let host = connect(&fleet, 1).await;
    let (result, lines) = exec_collect(&host, "cat; echo done", Some(Duration::from_secs(5))).await;
    assert!(result.expect("a command reading stdin must get EOF").success());
    assert_eq!(lines_of(&lines, Stream::Stdout), ["done"]);
}

#[tokio::test]
#[cfg_attr(no_sshd, ignore = "needs sshd: apt-get install openssh-server")]
async fn three_hosts_in_parallel() {
    if !support::require("sshd") {
        return;
    }
    let fleet = Fleet::start(3);
    let (a, b, c) = tokio::join!(connect(&fleet, 1), connect(&fleet, 2), connect(&fleet, 3));
    let hosts = [a, b, c];
    // `SSH_CONNECTION` ends with the server's address and port: proof of which
    // host answered.
    let command = "sleep 0.5; echo $SSH_CONNECTION";
    let start = Instant::now();
    let results = futures_join_all(hosts.iter().map(|h| exec_collect(h, command, None))).await;
    let elapsed = start.elapsed();
    for (i, (result, lines)) in results.into_iter().enumerate() {
        assert!(result.expect("exec").success());
        let expected = format!("{} 2222", fleet.host(i + 1).addr);
        let out = lines_of(&lines, Stream::Stdout);
        assert!(out[0].ends_with(&expected), "{out:?} vs {expected}");
    }
    assert!(elapsed < Duration::from_millis(1400), "three 0.5 s commands took {elapsed:?}: not in parallel");
}

/// `join_all` without pulling in the futures crate: spawn-free, polls all at once.
async fn futures_join_all<F: Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    let mut outputs: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, out) in set.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *out = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

#[tokio::test]
#[cfg_attr(no_sshd, ignore = "needs sshd: apt-get install openssh-server")]
async fn one_connection_serves_many_execs() {
    if !support::require("sshd") {
        return;
    }
    let fleet = Fleet::start(1);
    let host = connect(&fleet, 1).await;
    for i in 0..20 {
        let (result, lines) = exec_collect(&host, &format!("echo {i}"), None).await;
        assert!(result.expect("exec").success());
        assert_eq!(lines_of(&lines, Stream::Stdout), [i.to_string()]);
    }
    // Concurrent channels on the same connection.
    let start = Instant::now();
    let commands: Vec<String> = (0..5).map(|i| format!("sleep 0.5; echo c{i}")).collect();
    let runs = futures_join_all(commands.iter().map(|c| exec_collect(&host, c, None))).await;
    for (i, (result, lines)) in runs.into_iter().enumerate() {
        assert!(result.expect("exec").success());
        assert_eq!(lines_of(&lines, Stream::Stdout), [format!("c{i}")]);
    }
    assert!(start.elapsed() < Duration::from_millis(1400), "{:?}", start.elapsed());

    let h = fleet.host(1);
    assert_eq!(h.accepted_logins(), 1, "{}", h.log());
    assert_eq!(h.connections(), 1, "{}", h.log());
    host.close().await;
}

#[tokio::test]
#[cfg_attr(no_sshd, ignore = "needs sshd: apt-get install openssh-server")]
async fn unknown_host_key_is_refused_when_strict() {
    if !support::require("sshd") {
        return;
    }
    let fleet = Fleet::start(1);
    let mut target = fleet.target(1);
    target.known_hosts = fleet.dir().join("empty_known_hosts");
    let err = SshSession::connect(&target).await.expect_err("an unknown host key must be refused");
    assert!(matches!(err, TransportError::HostKeyUnknown { .. }), "{err:?}");
    let message = err.to_string();
    let addr = &fleet.host(1).addr;
    assert!(message.contains(&format!("`root@{addr}:2222`")), "{message}");
    assert!(message.contains(&format!("ssh-keyscan -p 2222 {addr} >> {}", target.known_hosts.display())), "{message}");
    assert!(message.contains("host_key_checking: accept-new"), "{message}");
    assert!(message.contains("SHA256:"), "{message}");
}

#[tokio::test]
#[cfg_attr(no_sshd, ignore = "needs sshd: apt-get install openssh-server")]
async fn accept_new_records_the_key_for_later_strict_connections() {
    if !support::require("sshd") {
        return;
    }
    let fleet = Fleet::start(1);
    let mut target = fleet.target(1);
    target.known_hosts = fleet.dir().join("fresh").join("known_hosts");
    target.host_key_checking = HostKeyChecking::AcceptNew;
    let session = SshSession::connect(&target).await.expect("accept-new");
    session.close().await;

    let recorded = std::fs::read_to_string(&target.known_hosts).expect("known_hosts written");
    let key = fleet.host(1).host_public_key.split(' ').nth(1).expect("key");
    assert!(recorded.contains(&format!("[{}]:2222 ssh-ed25519 {key}", fleet.host(1).addr)), "{recorded}");
    // russh starts a new file with an empty line; OpenSSH ignores it.
    assert_eq!(recorded.lines().filter(|l| !l.is_empty()).count(), 1, "{recorded}");

    target.host_key_checking = HostKeyChecking::Strict;
    let session = SshSession::connect(&target).await.expect("strict after accept-new");
    session.close().await;
    let recorded_again = std::fs::read_to_string(&target.known_hosts).expect("read");
    assert_eq!(recorded, recorded_again, "a known key must not be appended again");
}

#[tokio::test]
#[cfg_attr(no_sshd, ignore = "needs sshd: apt-get install openssh-server")]
async fn changed_host_key_is_refused_even_with_accept_new() {
    if !support::require("sshd") {
        return;
    }
    let fleet = Fleet::start(2);
    // Host 1's name with host 2's key: what a reinstalled (or impersonated) host looks like.
    let known_hosts = fleet.dir().join("stale_known_hosts");
    std::fs::write(&known_hosts, format!("[{}]:2222 {}\n", fleet.host(1).addr, fleet.host(2).host_public_key))
        .expect("write");
    let mut target = fleet.target(1);
    target.known_hosts = known_hosts.clone();
    target.host_key_checking = HostKeyChecking::AcceptNew;
    let err = SshSession::connect(&target).await.expect_err("a changed host key must be refused");
    assert!(matches!(err, TransportError::HostKeyChanged { line: 1, .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(&format!("ssh-keygen -R '[{}]:2222' -f {}", fleet.host(1).addr, known_hosts.display())),
        "{message}"
    );
    // Nothing was appended.
    assert_eq!(std::fs::read_to_string(&known_hosts).expect("read").lines().count(), 1);
}

#[tokio::test]
#[cfg_attr(no_sshd, ignore = "needs sshd: apt-get install openssh-server")]
async fn host_key_checking_off_accepts_any_key() {
    if !support::require("sshd") {
        return;
    }
    let fleet = Fleet::start(1);
    let mut target = fleet.target(1);
    target.known_hosts = fleet.dir().join("no_known_hosts");
    target.host_key_checking = HostKeyChecking::Off;
    let session = SshSession::connect(&target).await.expect("off");
    session.close().await;
    assert!(!target.known_hosts.exists(), "`off` must not record keys");
}

#[tokio::test]
#[cfg_attr(no_sshd, ignore = "needs sshd: apt-get install openssh-server")]
async fn wrong_client_key_lists_what_was_tried() {
    if !support::require("sshd") {
        return;
    }
    let fleet = Fleet::start(1);
    let stranger = fleet.generate_key("stranger_key");
    let mut target = fleet.target(1);
    target.identity_files = vec![stranger.clone()];
    let err = SshSession::connect(&target).await.expect_err("an unauthorized key must fail");
    let message = err.to_string();
    assert!(matches!(err, TransportError::AuthFailed { .. }), "{err:?}");
    assert!(
        message.starts_with(&format!(
            "authentication to `root@{}:2222` failed; tried: `{}` (ssh-ed25519 SHA256:",
            fleet.host(1).addr,
            stranger.display()
        )),
        "{message}"
    );
    assert!(message.contains("the server accepts: publickey"), "{message}");
}

#[tokio::test]
#[cfg_attr(no_sshd, ignore = "needs sshd: apt-get install openssh-server")]
async fn encrypted_key_without_terminal_says_how_to_fix() {
    if !support::require("sshd") || std::io::stdin().is_terminal() {
        // On a terminal the transport would (rightly) prompt for the passphrase.
        return;
    }
    let fleet = Fleet::start(1);
    let key = fleet.dir().join("encrypted_key");
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "secret", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen");
    assert!(status.success());
    let mut target = fleet.target(1);
    target.identity_files = vec![key.clone()];
    let err = SshSession::connect(&target).await.expect_err("encrypted");
    assert!(matches!(err, TransportError::KeyEncrypted { .. }), "{err:?}");
    assert!(err.to_string().contains(&format!("ssh-add {}", key.display())), "{err}");
}

#[tokio::test]
#[cfg_attr(no_sshd, ignore = "needs sshd: apt-get install openssh-server")]
async fn closed_port_fails_fast_and_clearly() {
    if !support::require("sshd") {
        return;
    }
    let fleet = Fleet::start(1);
    let mut target = fleet.target(1);
    target.port = 2223;
    target.connect_timeout = Duration::from_secs(2);
    let start = Instant::now();
    let err = SshSession::connect(&target).await.expect_err("closed port");
    assert!(start.elapsed() < target.connect_timeout);
    assert!(matches!(err, TransportError::ConnectionRefused { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "cannot connect to `root@{}:2223`: connection refused; is sshd running and listening on port 2223?",
            fleet.host(1).addr
        )
    );
}

#[tokio::test]
async fn silent_server_times_out_within_connect_timeout() {
    // A listener that accepts TCP but never speaks SSH, like a wedged host.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let accept = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let mut target = planrun::transport::SshTarget::new("127.0.0.1", "root");
    target.port = port;
    target.connect_timeout = Duration::from_millis(500);
    let start = Instant::now();
    let err = SshSession::connect(&target).await.expect_err("silent server");
    let elapsed = start.elapsed();
    assert!(matches!(err, TransportError::ConnectTimeout { .. }), "{err:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    assert!(
        err.to_string().starts_with(&format!("connecting to `root@127.0.0.1:{port}` timed out after 500ms")),
        "{err}"
    );
    accept.abort();
}

#[tokio::test]
#[cfg_attr(no_sshd, ignore = "needs sshd: apt-get install openssh-server")]
async fn lost_connection_is_reported() {
    if !support::require("sshd") {
        return;
    }
    let fleet = Fleet::start(1);
    let host = connect(&fleet, 1).await;
    // The shell's parent is the sshd process serving this connection.
    let (result, _) = exec_collect(&host, "kill -9 $PPID; sleep 5", Some(Duration::from_secs(10))).await;
    match result {
        Err(e @ TransportError::ConnectionLost { .. }) => {
            assert!(e.to_string().starts_with("connection to `root@"), "{e}")
        }
        other => panic!("expected a lost connection, got {other:?}"),
    }
    // Later commands fail the same way instead of hanging.
    let (result, _) = exec_collect(&host, "true", Some(Duration::from_secs(5))).await;
    assert!(matches!(result, Err(TransportError::ConnectionLost { .. })), "{result:?}");
}

/// Not a check: prints connection and exec latencies for the report.
/// `cargo test --test transport_ssh -- --ignored --nocapture measure`
#[tokio::test]
#[ignore]
async fn measure_latency() {
    if !support::require("sshd") {
        return;
    }
    let fleet = Fleet::start(1);
    for _ in 0..3 {
        let start = Instant::now();
        let host = connect(&fleet, 1).await;
        let connected = start.elapsed();
        exec_collect(&host, "true", None).await.0.expect("exec");
        let first = start.elapsed();
        let start = Instant::now();
        let n = 50;
        for _ in 0..n {
            exec_collect(&host, "true", None).await.0.expect("exec");
        }
        let per_exec = start.elapsed() / n;
        eprintln!("connect+handshake+auth {connected:?}, +first exec {first:?}, reused exec {per_exec:?}");
        host.close().await;
    }
}

/// Takes each line slowly: a consumer that is behind (a blocked terminal).
struct Slow(usize);

impl planrun::transport::OnLine for Slow {
    async fn line(&mut self, _: planrun::transport::OutputLine) {
        self.0 += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Issue 14: output waits for its consumer, so at a timeout the channel of a chatty
/// command is full; the kill must still get through the connection, and quickly.
#[tokio::test]
#[cfg_attr(no_sshd, ignore = "needs sshd: apt-get install openssh-server")]
async fn a_chatty_command_behind_a_slow_consumer_is_killed_at_its_timeout() {
    if !support::require("sshd") {
        return;
    }
    let fleet = Fleet::start(1);
    let host = connect(&fleet, 1).await;
    let marker = fleet.host(1).dir.join("marker");
    let command = format!("(sleep 3; touch {}) & yes planrun-chatty", marker.display());
    let start = Instant::now();
    let mut slow = Slow(0);
    let result = host.exec_lines(&command, Some(Duration::from_millis(500)), &mut slow).await;
    assert!(matches!(result, Err(TransportError::Timeout { .. })), "{result:?}");
    assert!(start.elapsed() < Duration::from_secs(3), "the kill waited: {:?}", start.elapsed());
    assert!(slow.0 > 0, "the consumer got lines");
    // The connection still works, and the command's group is gone.
    let (again, _) = exec_collect(&host, "true", Some(Duration::from_secs(5))).await;
    assert!(again.expect("the connection still works").success());
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(!marker.exists(), "the command's background child kept running");
}
