//! Runs the real `planrun` binary the way a user does and captures what they see.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn planrun(args: &[&str]) -> Output {
    planrun_in(Path::new(env!("CARGO_MANIFEST_DIR")), args)
}

pub fn planrun_in(dir: &Path, args: &[&str]) -> Output {
    planrun_env::<&str>(dir, args, &[])
}

/// Runs planrun with these environment variables (a balancer's token, `HOME`) set for it alone, so tests that point
/// `HOME` or `SSH_AUTH_SOCK` elsewhere do not race the other tests of their binary. The
/// caller's ssh-agent is never inherited: a test says which agent it means.
pub fn planrun_env<V: AsRef<std::ffi::OsStr>>(dir: &Path, args: &[&str], env: &[(&str, V)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_planrun"));
    command.args(args).current_dir(dir).env("NO_COLOR", "1").env_remove("SSH_AUTH_SOCK").stdin(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    let out = command.output().expect("planrun runs");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "planrun-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    pub fn write(&self, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, content).expect("write temp file");
        path
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
