mod support;

use std::time::{Duration, Instant};

use planrun::transport::{LocalTransport, Stream, Transport, TransportError};
use support::{exec_collect, lines_of};

fn local() -> Transport {
    Transport::Local(LocalTransport::new())
}

#[tokio::test]
async fn separates_streams_and_keeps_order() {
    let (result, lines) =
        exec_collect(&local(), "echo one; echo err1 >&2; echo two; echo err2 >&2; printf partial", None).await;
    let exit = result.expect("exec");
    assert!(exit.success(), "{exit:?}");
    assert_eq!(lines_of(&lines, Stream::Stdout), ["one", "two", "partial"]);
    assert_eq!(lines_of(&lines, Stream::Stderr), ["err1", "err2"]);
}

#[tokio::test]
async fn reports_exit_codes_and_signals() {
    let exit = exec_collect(&local(), "exit 7", None).await.0.expect("exec");
    assert_eq!(exit.code, Some(7));
    assert!(!exit.success());

    let exit = exec_collect(&local(), "kill -9 $$", None).await.0.expect("exec");
    assert_eq!(exit.code, None);
    assert_eq!(exit.signal.as_deref(), Some("KILL"));
}

#[tokio::test]
async fn streams_lines_while_the_command_runs() {
    let (tx, mut rx) = tokio::sync::mpsc::channel(planrun::transport::LINES_AHEAD);
    let start = Instant::now();
    let exec = tokio::spawn(async move { local().exec("echo first; sleep 1; echo second", None, tx).await });
    let first = rx.recv().await.expect("first line");
    let first_at = start.elapsed();
    assert_eq!(first.line, "first");
    let exit = exec.await.expect("join").expect("exec");
    assert!(exit.success());
    assert!(
        first_at < Duration::from_millis(800),
        "the first line came only after {first_at:?}, when the command ended"
    );
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("marker");
    let command = format!("(sleep 1; touch {}) & sleep 10", marker.display());
    let start = Instant::now();
    let (result, _) = exec_collect(&local(), &command, Some(Duration::from_millis(300))).await;
    match result {
        Err(TransportError::Timeout { after, .. }) => {
            assert_eq!(after, Duration::from_millis(300))
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(3), "{:?}", start.elapsed());
    let message = TransportError::Timeout { target: "local".into(), after: Duration::from_millis(300) }.to_string();
    assert_eq!(message, "command timed out after 300ms on `local` and was killed");

    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!marker.exists(), "a child of the timed-out shell survived and wrote {}", marker.display());
}

#[tokio::test]
async fn stdin_is_empty() {
    let (result, lines) = exec_collect(&local(), "cat; echo done", Some(Duration::from_secs(5))).await;
    assert!(result.expect("exec").success());
    assert_eq!(lines_of(&lines, Stream::Stdout), ["done"]);
}

#[tokio::test]
async fn cancelled_exec_kills_the_process_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("marker");
    let command = format!("sleep 1; touch {}", marker.display());
    let (tx, _rx) = tokio::sync::mpsc::channel(planrun::transport::LINES_AHEAD);
    let transport = local();
    let cancelled = tokio::time::timeout(Duration::from_millis(300), transport.exec(&command, None, tx)).await;
    assert!(cancelled.is_err(), "the command should still be running");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!marker.exists(), "the cancelled command kept running");
}
