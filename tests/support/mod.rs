//! Helpers shared by the integration tests. Each test binary includes this with
//! `mod support;` and uses only part of it, hence the blanket allowances.
#![allow(dead_code, unused_imports)]

pub mod apps;
pub mod faults;
pub mod fleet;
pub mod haproxy;
pub mod linode;
pub mod postgres;

use std::path::{Path, PathBuf};

pub use fleet::{Fleet, Host};

/// Fails the test, naming the package to install, when `tool` is not installed; returns
/// `true` otherwise (callers read `if !require("sshd") { return; }`).
///
/// A test that needs a tool also carries `#[cfg_attr(no_TOOL, ignore = "needs …")]`:
/// `build.rs` sets that cfg when it does not find the tool, so plain `cargo test` lists
/// the test as ignored with its reason. A test that gets here without its tool is one
/// that should run: under CI (env `CI` set, where `build.rs` marks nothing missing), or
/// with `--ignored`; it fails rather than passing without having run.
pub fn require(tool: &str) -> bool {
    if find_tool(tool).is_some() {
        return true;
    }
    let install = match package_of(tool) {
        Some(package) => format!("apt-get install -y {package}"),
        None => format!("install `{tool}`"),
    };
    let why = if std::env::var_os("CI").is_some() { "CI needs it" } else { "this test needs it" };
    panic!("`{tool}` is not installed but {why}: {install} (or run `bash .ci/run` as root)");
}

/// Full path of `tool`, looking in `PATH` and in the sbin directories that a non-login
/// root shell may leave out.
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

fn package_of(tool: &str) -> Option<&'static str> {
    Some(match tool {
        "sshd" => "openssh-server",
        "ssh" | "ssh-keygen" | "ssh-keyscan" | "ssh-agent" | "ssh-add" => "openssh-client",
        "haproxy" => "haproxy",
        "wrk" => "wrk",
        "curl" => "curl",
        "sudo" | "visudo" => "sudo",
        "useradd" | "usermod" | "userdel" => "passwd",
        _ => return None,
    })
}

use std::time::Duration;

use planrun::transport::{Exit, OutputLine, Stream, Transport, TransportError};

/// Runs `command` and collects every output line it sent.
pub async fn exec_collect(
    transport: &Transport,
    command: &str,
    timeout: Option<Duration>,
) -> (Result<Exit, TransportError>, Vec<OutputLine>) {
    let mut lines = Vec::new();
    let result = transport.exec_lines(command, timeout, &mut lines).await;
    (result, lines)
}

/// The lines of one stream, in order.
pub fn lines_of(lines: &[OutputLine], stream: Stream) -> Vec<String> {
    lines.iter().filter(|l| l.stream == stream).map(|l| l.line.clone()).collect()
}

/// A lock path of its own for each plan a test writes: tests run in parallel, and the
/// default lock (`/tmp/planrun-APPLICATION.lock` on the first host, which for loopback
/// fleets is this machine) would make them refuse each other.
pub fn lock_line() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "planrun-test-lock-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    format!("lock: {{ path: \"{}\" }}\n", path.display())
}
