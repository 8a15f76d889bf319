//! Running commands on a host: locally through `sh -c`, or remotely over one SSH
//! connection per host with a channel per command.
//!
//! Both transports stream output line by line as it arrives, so the executor can
//! prefix and log it live instead of after the command finished.

mod host_key;
mod local;
mod ssh;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::{self, Sender};

pub use host_key::{HostKeyChecking, Notices};
pub use local::LocalTransport;
pub use ssh::{Connector, SshSession, SshTarget};

/// Which output stream of a command a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One line of a command's output, without its line terminator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputLine {
    pub stream: Stream,
    pub line: String,
    /// For a line longer than [`MAX_LINE`]: where its kept bytes end and the
    /// ` … N more bytes` planrun added begins (the redactor masks a secret cut there).
    pub cut_at: Option<usize>,
}

impl OutputLine {
    pub fn new(stream: Stream, line: String) -> Self {
        OutputLine { stream, line, cut_at: None }
    }
}

/// Where [`Transport::exec_lines`] hands a command's lines, one at a time: a line is
/// handed on once the previous one was taken.
pub trait OnLine: Send {
    fn line(&mut self, line: OutputLine) -> impl Future<Output = ()> + Send;
}

/// Collects every line.
impl OnLine for Vec<OutputLine> {
    async fn line(&mut self, line: OutputLine) {
        self.push(line);
    }
}

/// Discards the output: a check whose exit status is the answer.
impl OnLine for () {
    async fn line(&mut self, _: OutputLine) {}
}

/// How many lines a command's reader may be ahead of the one handling them; a reader
/// that is further ahead waits, and so does the command (its pipe or SSH window full).
pub const LINES_AHEAD: usize = 64;

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// `None` when the command was killed by a signal (or the server reported no status).
    pub code: Option<u32>,
    /// Signal name without the `SIG` prefix (`KILL`, `TERM`), as SSH reports it.
    pub signal: Option<String>,
}

impl Exit {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Why `command` failed, for people: "`make` exited with 2".
    pub fn failure(&self, command: &str) -> String {
        match (self.code, &self.signal) {
            (Some(code), _) => format!("`{command}` exited with {code}"),
            (None, Some(signal)) => format!("`{command}` was killed by signal {signal}"),
            (None, None) => format!("`{command}` ended without an exit status"),
        }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.code, &self.signal) {
            (Some(code), _) => write!(f, "exit code {code}"),
            (None, Some(signal)) => write!(f, "killed by signal {signal}"),
            (None, None) => write!(f, "no exit status"),
        }
    }
}

fn fmt_duration(d: &Duration) -> String {
    humantime::format_duration(*d).to_string()
}

/// Errors of both transports. `target` is `user@host:port` for SSH and `local` for the
/// local transport, so every message names the host it is about.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum TransportError {
    #[error("cannot resolve the address of `{target}`: {reason}; check the host name")]
    Resolve { target: String, reason: String },

    #[error("cannot connect to `{target}`: connection refused; is sshd running and listening on port {port}?")]
    ConnectionRefused { target: String, port: u16 },

    #[error("cannot connect to `{target}`: {reason}")]
    Connect { target: String, reason: String },

    #[error(
        "connecting to `{target}` timed out after {}; check the address, the port and any firewall, or raise `connect_timeout`",
        fmt_duration(after)
    )]
    ConnectTimeout { target: String, after: Duration },

    #[error("cannot reach `{target}` through jump host `{jump}`: {reason}")]
    Jump { target: String, jump: String, reason: String },

    #[error("ssh handshake with `{target}` failed: {reason}")]
    Handshake { target: String, reason: String },

    #[error(
        "host key of `{target}` is unknown ({fingerprint}, not in `{}`); add it with `ssh-keyscan -p {port} {host} >> {}` or set `host_key_checking: accept-new`",
        known_hosts.display(),
        known_hosts.display()
    )]
    HostKeyUnknown { target: String, host: String, port: u16, known_hosts: PathBuf, fingerprint: String },

    #[error(
        "host key of `{target}` has changed: the server offered {fingerprint}, line {line} of `{}` records another key; this could be a man-in-the-middle attack. if the host was reinstalled, remove the old key with `ssh-keygen -R '{host_pattern}' -f {}` and connect again",
        known_hosts.display(),
        known_hosts.display()
    )]
    HostKeyChanged { target: String, host_pattern: String, known_hosts: PathBuf, line: usize, fingerprint: String },

    #[error("cannot use known hosts file `{}` for `{target}`: {reason}", path.display())]
    KnownHosts { target: String, path: PathBuf, reason: String },

    #[error(
        "authentication to `{target}` failed; tried: {}; the server accepts: {}. add one of these public keys to `~/.ssh/authorized_keys` of `{target}`, set `identity_file` (or `IdentityFile` in the ssh config), or load the right key into ssh-agent",
        if tried.is_empty() { "no keys (no ssh-agent, no `identity_file`, no `~/.ssh/id_ed25519` or `~/.ssh/id_rsa`)".to_string() } else { tried.join(", ") },
        if accepted.is_empty() { "nothing more (it may have closed the connection after too many attempts)".to_string() } else { accepted.join(", ") }
    )]
    AuthFailed { target: String, tried: Vec<String>, accepted: Vec<String> },

    #[error(
        "key `{}` is encrypted and there is no terminal to ask for its passphrase; load it into ssh-agent with `ssh-add {}` or use an unencrypted deploy key",
        path.display(),
        path.display()
    )]
    KeyEncrypted { path: PathBuf },

    #[error("cannot load key `{}`: {reason}", path.display())]
    KeyLoad { path: PathBuf, reason: String },

    #[error("connection to `{target}` was lost: {reason}")]
    ConnectionLost { target: String, reason: String },

    #[error("cannot start a command on `{target}`: {reason}")]
    Channel { target: String, reason: String },

    #[error("command timed out after {} on `{target}` and was killed", fmt_duration(after))]
    Timeout { target: String, after: Duration },

    #[error("cannot run a command on `{target}`: {reason}")]
    Spawn { target: String, reason: String },
}

/// Where commands run. The executor holds one per host for the whole run.
pub enum Transport {
    Local(LocalTransport),
    Ssh(SshSession),
}

impl Transport {
    /// Runs `command` through `sh -c` (local) or an exec channel (ssh). Each complete
    /// output line is sent to `lines` as it arrives (a partial last line is flushed at
    /// the end). On timeout the command is killed (local: its process group; ssh: its
    /// remote process group, then the channel is closed) and
    /// [`TransportError::Timeout`] is returned.
    pub async fn exec(
        &self,
        command: &str,
        timeout: Option<Duration>,
        lines: Sender<OutputLine>,
    ) -> Result<Exit, TransportError> {
        match self {
            Transport::Local(local) => local.exec(command, timeout, lines).await,
            Transport::Ssh(ssh) => ssh.exec(command, timeout, lines).await,
        }
    }

    /// Runs `command` like [`Transport::exec`], handing each output line to `on_line` as
    /// it arrives, in order. While `on_line` waits, the command's output waits too (at
    /// most [`LINES_AHEAD`] lines are read ahead), so a slow consumer bounds memory.
    pub async fn exec_lines(
        &self,
        command: &str,
        timeout: Option<Duration>,
        on_line: &mut impl OnLine,
    ) -> Result<Exit, TransportError> {
        let (tx, mut rx) = mpsc::channel(LINES_AHEAD);
        let run = self.exec(command, timeout, tx);
        tokio::pin!(run);
        let result = loop {
            tokio::select! {
                r = &mut run => break r,
                Some(line) = rx.recv() => on_line.line(line).await,
            }
        };
        while let Ok(line) = rx.try_recv() {
            on_line.line(line).await;
        }
        result
    }

    /// Makes sure the connection still works, reconnecting once if it does not; see
    /// [`SshSession::ensure_alive`]. `Ok(true)`: it reconnected.
    pub async fn ensure_alive(&self) -> Result<bool, TransportError> {
        match self {
            Transport::Local(_) => Ok(false),
            Transport::Ssh(ssh) => ssh.ensure_alive().await,
        }
    }

    /// `local` or `user@host:port`, for prefixing output and messages.
    pub fn target(&self) -> &str {
        match self {
            Transport::Local(_) => local::TARGET,
            Transport::Ssh(ssh) => ssh.target(),
        }
    }

    pub async fn close(self) {
        match self {
            Transport::Local(_) => {}
            Transport::Ssh(ssh) => ssh.close().await,
        }
    }
}

/// Where commands run: a transport per selected host (by index into the plan's hosts),
/// and the control machine.
pub struct Transports {
    pub hosts: HashMap<usize, Arc<Transport>>,
    pub local: Arc<Transport>,
}

impl Transports {
    /// Only the control machine: for dry runs and for commands that reach no host.
    pub fn local_only() -> Self {
        Transports { hosts: HashMap::new(), local: Arc::new(Transport::Local(LocalTransport::new())) }
    }
}

/// The longest line kept: the rest of a longer line is counted, not kept ("… N more
/// bytes"), so a command printing gigabytes without a newline cannot exhaust memory.
pub const MAX_LINE: usize = 64 * 1024;

/// Splits a byte stream into lines, in time linear in its length. Bytes are kept until
/// their line is complete, so a multi-byte character split across two reads still
/// decodes; a line keeps at most [`MAX_LINE`] bytes.
struct LineSplitter {
    stream: Stream,
    pending: Vec<u8>,
    /// Bytes of the current line beyond [`MAX_LINE`], counted.
    dropped: usize,
}

impl LineSplitter {
    fn new(stream: Stream) -> Self {
        LineSplitter { stream, pending: Vec::new(), dropped: 0 }
    }

    /// Appends `data` and returns the lines it completed. Each byte is looked at once.
    fn push(&mut self, data: &[u8]) -> Vec<OutputLine> {
        let mut lines = Vec::new();
        let mut rest = data;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            self.keep(&rest[..pos]);
            lines.push(self.take());
            rest = &rest[pos + 1..];
        }
        self.keep(rest);
        lines
    }

    /// The unterminated last line, if any.
    fn finish(&mut self) -> Option<OutputLine> {
        if self.pending.is_empty() && self.dropped == 0 {
            return None;
        }
        Some(self.take())
    }

    fn keep(&mut self, bytes: &[u8]) {
        let room = MAX_LINE.saturating_sub(self.pending.len()).min(bytes.len());
        self.pending.extend_from_slice(&bytes[..room]);
        self.dropped += bytes.len() - room;
    }

    fn take(&mut self) -> OutputLine {
        // Output from Windows tools or `printf '\r\n'` keeps its CR; it is part of the
        // terminator, not of the line.
        let bytes = if self.dropped == 0 {
            self.pending.strip_suffix(b"\r").unwrap_or(&self.pending)
        } else {
            &self.pending[..]
        };
        let mut line = String::from_utf8_lossy(bytes).into_owned();
        let mut cut_at = None;
        if self.dropped > 0 {
            cut_at = Some(line.len());
            line.push_str(&format!(" … {} more bytes", self.dropped));
        }
        self.pending.clear();
        self.dropped = 0;
        OutputLine { stream: self.stream, line, cut_at }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_across_chunks() {
        let mut s = LineSplitter::new(Stream::Stdout);
        assert!(s.push(b"he").is_empty());
        let lines = s.push(b"llo\r\nwor");
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].line, "hello");
        let lines = s.push(b"ld\n\nlast");
        assert_eq!(lines.iter().map(|l| l.line.as_str()).collect::<Vec<_>>(), ["world", ""]);
        assert_eq!(s.finish().map(|l| l.line), Some("last".to_string()));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn keeps_split_utf8_together() {
        let mut s = LineSplitter::new(Stream::Stderr);
        let bytes = "é\n".as_bytes();
        assert!(s.push(&bytes[..1]).is_empty());
        let lines = s.push(&bytes[1..]);
        assert_eq!(lines[0].line, "é");
        assert_eq!(lines[0].stream, Stream::Stderr);
    }

    #[test]
    fn caps_a_long_line_and_counts_the_rest() {
        let mut s = LineSplitter::new(Stream::Stdout);
        let chunk = vec![b'x'; 1000];
        for _ in 0..100 {
            assert!(s.push(&chunk).is_empty());
        }
        let lines = s.push(b"\nnext\n");
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].line, format!("{} … {} more bytes", "x".repeat(MAX_LINE), 100_000 - MAX_LINE));
        assert_eq!(lines[1].line, "next");
        assert!(s.push(&vec![b'y'; MAX_LINE + 5]).is_empty());
        assert_eq!(s.finish().map(|l| l.line), Some(format!("{} … 5 more bytes", "y".repeat(MAX_LINE))));
    }

    #[test]
    fn exit_success_only_for_zero() {
        assert!(Exit { code: Some(0), signal: None }.success());
        assert!(!Exit { code: Some(1), signal: None }.success());
        assert!(!Exit { code: None, signal: Some("KILL".into()) }.success());
    }
}
