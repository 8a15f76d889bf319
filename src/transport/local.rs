use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::mpsc::Sender;

use super::{Exit, LineSplitter, OutputLine, Stream, TransportError};

pub(super) const TARGET: &str = "local";

/// How long to wait for output readers after the process group was killed. A process
/// that left the group (`setsid`) may keep the pipes open forever.
const DRAIN_AFTER_KILL: Duration = Duration::from_secs(1);

/// Runs commands on this machine with `sh -c`.
#[derive(Debug, Clone, Default)]
pub struct LocalTransport;

impl LocalTransport {
    pub fn new() -> Self {
        LocalTransport
    }

    pub(super) async fn exec(
        &self,
        command: &str,
        timeout: Option<Duration>,
        lines: Sender<OutputLine>,
    ) -> Result<Exit, TransportError> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a timeout can kill everything the command
            // started, not just the shell.
            .process_group(0)
            .spawn()
            .map_err(|e| TransportError::Spawn {
                target: TARGET.to_string(),
                reason: format!("cannot start `sh`: {e}"),
            })?;
        let guard = child.id().map(GroupGuard);

        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(tokio::spawn(forward_lines(out, Stream::Stdout, lines.clone())));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(tokio::spawn(forward_lines(err, Stream::Stderr, lines)));
        }

        // Output must be fully read before the command counts as finished, like ssh,
        // which waits for EOF on both streams.
        let run = async {
            let status = child.wait().await;
            for reader in readers.iter_mut() {
                let _ = reader.await;
            }
            status
        };
        let outcome = match timeout {
            Some(limit) => tokio::time::timeout(limit, run).await.ok(),
            None => Some(run.await),
        };

        match outcome {
            Some(status) => {
                if let Some(guard) = guard {
                    guard.disarm();
                }
                let status = status.map_err(|e| TransportError::Spawn {
                    target: TARGET.to_string(),
                    reason: format!("waiting for `sh` failed: {e}"),
                })?;
                Ok(Exit {
                    code: status.code().and_then(|c| u32::try_from(c).ok()),
                    signal: status.signal().map(signal_name),
                })
            }
            None => {
                // Dropping the guard kills the whole group.
                drop(guard);
                let _ = child.wait().await;
                let drain = async {
                    for reader in readers.iter_mut() {
                        let _ = reader.await;
                    }
                };
                if tokio::time::timeout(DRAIN_AFTER_KILL, drain).await.is_err() {
                    for reader in &readers {
                        reader.abort();
                    }
                }
                Err(TransportError::Timeout { target: TARGET.to_string(), after: timeout.unwrap_or_default() })
            }
        }
    }
}

/// Kills the command's process group when dropped: on timeout, and also when the
/// executor drops the `exec` future (second Ctrl-C), so no command outlives its step.
struct GroupGuard(u32);

impl GroupGuard {
    fn disarm(self) {
        std::mem::forget(self);
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0) {
            // ESRCH (group already gone) is the common, harmless case.
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

fn signal_name(signal: i32) -> String {
    match Signal::try_from(signal) {
        Ok(s) => s.as_str().trim_start_matches("SIG").to_string(),
        Err(_) => signal.to_string(),
    }
}

async fn forward_lines(mut reader: impl AsyncRead + Unpin, stream: Stream, lines: Sender<OutputLine>) {
    let mut splitter = LineSplitter::new(stream);
    let mut buf = vec![0u8; 8192];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                for line in splitter.push(&buf[..n]) {
                    // Waits while the consumer is behind: the command then waits on
                    // its full pipe. A dropped receiver means nobody wants the output;
                    // keep draining so the command does not block on a full pipe.
                    let _ = lines.send(line).await;
                }
            }
        }
    }
    if let Some(line) = splitter.finish() {
        let _ = lines.send(line).await;
    }
}
