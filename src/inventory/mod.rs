//! Inventories from elsewhere: running a `servers_from` command (with a timeout, its
//! output bounded), and `planrun inventory linode`, a command that lists Linode instances
//! in the plan's server shape.
//!
//! This is the one command a plan makes planrun run while loading it: `validate` calls
//! `run_command` for each `servers_from` command, since without its servers the plan
//! cannot be checked.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub mod linode;

/// How long an inventory command may run unless its `timeout` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How much of a failed command's standard error is kept for the message: its end,
/// where the reason usually is.
const STDERR_TAIL: usize = 4096;

/// Why an inventory command gave no list.
#[derive(Debug)]
pub enum Failure {
    Spawn(std::io::Error),
    /// Exited non-zero, or was killed by a signal.
    Exit {
        status: ExitStatus,
        stderr: String,
    },
    TimedOut {
        timeout: Duration,
        stderr: String,
    },
    /// Printed more than `limit` bytes; it was killed.
    TooLarge {
        limit: usize,
    },
}

/// Runs `command` with `sh -c` in `dir`, standard input closed, and returns what it
/// printed on standard output. The command and whatever it starts are in a process group
/// of their own, killed as a whole on a timeout or too much output.
pub fn run_command(command: &str, dir: &Path, timeout: Duration, limit: usize) -> Result<Vec<u8>, Failure> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(Failure::Spawn)?;
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    let kill = move || {
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    };
    let (mut stdout, mut stderr) = (child.stdout.take(), child.stderr.take());

    let (out_tx, out_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(out) = stdout.as_mut() {
            let _ = out.take(limit as u64 + 1).read_to_end(&mut buf);
        }
        if buf.len() > limit {
            kill();
        }
        let _ = out_tx.send(buf);
    });
    let (err_tx, err_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut tail: Vec<u8> = Vec::new();
        let mut chunk = [0u8; 8192];
        while let Some(Ok(n @ 1..)) = stderr.as_mut().map(|e| e.read(&mut chunk)) {
            tail.extend_from_slice(&chunk[..n]);
            if tail.len() > STDERR_TAIL {
                tail.drain(..tail.len() - STDERR_TAIL);
            }
        }
        let _ = err_tx.send(String::from_utf8_lossy(&tail).trim().to_string());
    });
    let (wait_tx, wait_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = wait_tx.send(child.wait());
    });

    // The command is done when it exited and both of its outputs ended (a process it left
    // behind may still hold them), all within the timeout.
    let deadline = Instant::now() + timeout;
    let left = || deadline.saturating_duration_since(Instant::now());
    let status = wait_rx.recv_timeout(left());
    let out = out_rx.recv_timeout(left());
    let err = err_rx.recv_timeout(left());
    let (status, out, err) = match (status, out, err) {
        (Ok(status), Ok(out), Ok(err)) => (status, out, err),
        _ => {
            kill();
            let stderr = err_rx.recv_timeout(Duration::from_secs(2)).unwrap_or_default();
            return Err(Failure::TimedOut { timeout, stderr });
        }
    };
    if out.len() > limit {
        return Err(Failure::TooLarge { limit });
    }
    let status = status.map_err(Failure::Spawn)?;
    if !status.success() {
        return Err(Failure::Exit { status, stderr: err });
    }
    Ok(out)
}

impl Failure {
    /// What went wrong, for a message that already names the command.
    pub fn reason(&self) -> String {
        use std::os::unix::process::ExitStatusExt;
        match self {
            Failure::Spawn(e) => format!("could not be started: {e}"),
            Failure::Exit { status, .. } => match (status.code(), status.signal()) {
                (Some(code), _) => format!("exited with status {code}"),
                (None, Some(signal)) => format!("was killed by signal {signal}"),
                (None, None) => "failed".into(),
            },
            Failure::TimedOut { timeout, .. } => {
                format!("did not finish within {} and was killed", humantime::format_duration(*timeout))
            }
            Failure::TooLarge { limit } => {
                format!("printed more than {} and was killed", crate::bounded::size_text(*limit as u64))
            }
        }
    }

    /// The end of what it printed on standard error, if anything.
    pub fn stderr(&self) -> Option<&str> {
        match self {
            Failure::Exit { stderr, .. } | Failure::TimedOut { stderr, .. } if !stderr.is_empty() => Some(stderr),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(command: &str, timeout: Duration, limit: usize) -> Result<Vec<u8>, Failure> {
        run_command(command, Path::new("."), timeout, limit)
    }

    #[test]
    fn output_past_the_limit_kills_the_command() {
        // `yes` never ends on its own: only the limit stops it.
        let failure = run("yes", Duration::from_secs(60), 1000).unwrap_err();
        assert!(matches!(failure, Failure::TooLarge { limit: 1000 }), "{failure:?}");
        assert_eq!(failure.reason(), "printed more than 1000 bytes and was killed");
    }

    #[test]
    fn a_failure_keeps_the_end_of_standard_error() {
        let failure = run(
            "i=0; while [ $i -lt 2000 ]; do echo line $i >&2; i=$((i+1)); done; exit 4",
            Duration::from_secs(60),
            1000,
        )
        .unwrap_err();
        assert_eq!(failure.reason(), "exited with status 4");
        let stderr = failure.stderr().unwrap();
        assert!(stderr.len() <= STDERR_TAIL && stderr.ends_with("line 1999"), "{stderr}");
    }

    #[test]
    fn a_background_child_holding_the_output_counts_against_the_timeout() {
        let failure = run("sleep 30 & echo started", Duration::from_millis(500), 1000).unwrap_err();
        assert!(matches!(failure, Failure::TimedOut { .. }), "{failure:?}");
        assert_eq!(run("echo '[]'", Duration::from_secs(60), 1000).unwrap(), b"[]\n");
    }
}
