//! Runs the real `planrun` binary the way a user does and captures what they see.
//!
//! Most tests use the builder, in the style of casey/just's tests:
//!
//! ```text
//! Planrun::new().plan(yaml).args(&["validate", "plan.yaml"]).run().code(2).stderr_has("unknown field");
//! ```
//!
//! The assertions print the whole output when they fail. A test that runs planrun several
//! times in one directory (a run, then its resume) makes the [`TempDir`] itself and builds
//! each run with [`Planrun::in_dir`].
#![allow(dead_code)]

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// `apply plan.yaml --yes`: the arguments most apply tests start with.
pub const APPLY: &[&str] = &["apply", "plan.yaml", "--yes"];

/// One run of planrun being set up: its directory, files, arguments and environment.
pub struct Planrun {
    place: Place,
    args: Vec<String>,
    env: Vec<(String, OsString)>,
}

enum Place {
    /// A directory of its own, kept alive by the run's [`Output`].
    Owned(TempDir),
    /// A directory the test owns, for several runs in one place.
    At(PathBuf),
}

impl Default for Planrun {
    fn default() -> Self {
        Planrun::new()
    }
}

impl Planrun {
    /// A run in a fresh temporary directory, named after the test.
    pub fn new() -> Self {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("planrun").rsplit("::").next().unwrap_or("planrun");
        Planrun::with(Place::Owned(TempDir::new(name)))
    }

    /// A run in `dir`, which the test keeps (and may run in again).
    pub fn in_dir(dir: &TempDir) -> Self {
        Planrun::at(dir.path())
    }

    /// A run in any directory (the repository, a fleet's folder).
    pub fn at(dir: &Path) -> Self {
        Planrun::with(Place::At(dir.to_path_buf()))
    }

    fn with(place: Place) -> Self {
        Planrun { place, args: Vec::new(), env: Vec::new() }
    }

    /// The directory planrun runs in.
    pub fn path(&self) -> &Path {
        match &self.place {
            Place::Owned(dir) => dir.path(),
            Place::At(path) => path,
        }
    }

    /// Writes `yaml` as `plan.yaml`.
    pub fn plan(self, yaml: impl AsRef<str>) -> Self {
        self.file("plan.yaml", yaml.as_ref())
    }

    /// Writes a file (its folders made as needed) relative to the run's directory.
    pub fn file(self, name: &str, text: impl AsRef<[u8]>) -> Self {
        let path = self.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("make the file's folder");
        }
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        self
    }

    /// Appends arguments.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Sets an environment variable for this run alone.
    pub fn env(mut self, name: &str, value: impl Into<OsString>) -> Self {
        self.env.push((name.to_string(), value.into()));
        self
    }

    fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_planrun"));
        // The caller's ssh-agent is never inherited: a test says which agent it means.
        command.args(&self.args).current_dir(self.path()).env("NO_COLOR", "1").env_remove("SSH_AUTH_SOCK");
        command.stdin(Stdio::null());
        for (name, value) in &self.env {
            command.env(name, value);
        }
        command
    }

    /// Runs planrun to its end.
    pub fn run(self) -> Output {
        let out = self.command().output().expect("planrun runs");
        let mut output = Output::from(out);
        if let Place::Owned(dir) = self.place {
            output.dir = Some(dir);
        }
        output
    }

    /// Starts planrun with its stdout and stderr piped, for tests that interrupt it or run
    /// another planrun beside it. The directory must outlive the child: use
    /// [`Planrun::in_dir`].
    pub fn spawn(self) -> Child {
        assert!(matches!(self.place, Place::At(_)), "a spawned planrun needs a directory the test keeps");
        self.command().stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("planrun starts")
    }
}

/// What a run printed and how it ended.
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// The run's own directory, for [`Planrun::new`] runs: kept until the output drops.
    pub dir: Option<TempDir>,
}

impl From<std::process::Output> for Output {
    fn from(out: std::process::Output) -> Self {
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            dir: None,
        }
    }
}

impl Output {
    /// The directory of a [`Planrun::new`] run.
    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("a run made with Planrun::new has a directory of its own").path()
    }

    /// The whole output, for a failed assertion's message.
    pub fn dump(&self) -> String {
        let mut text = format!("exit code: {}\n", self.code);
        for (name, stream) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            let _ = writeln!(text, "--- {name} ---\n{stream}");
        }
        text
    }

    #[track_caller]
    pub fn code(&self, code: i32) -> &Self {
        assert!(self.code == code, "expected exit code {code}, got {}\n{}", self.code, self.dump());
        self
    }

    #[track_caller]
    pub fn stdout_has(&self, needle: &str) -> &Self {
        assert!(self.stdout.contains(needle), "stdout lacks {needle:?}\n{}", self.dump());
        self
    }

    #[track_caller]
    pub fn stdout_lacks(&self, needle: &str) -> &Self {
        assert!(!self.stdout.contains(needle), "stdout has {needle:?}\n{}", self.dump());
        self
    }

    #[track_caller]
    pub fn stderr_has(&self, needle: &str) -> &Self {
        assert!(self.stderr.contains(needle), "stderr lacks {needle:?}\n{}", self.dump());
        self
    }

    #[track_caller]
    pub fn stderr_lacks(&self, needle: &str) -> &Self {
        assert!(!self.stderr.contains(needle), "stderr has {needle:?}\n{}", self.dump());
        self
    }
}

pub fn planrun(args: &[&str]) -> Output {
    planrun_in(Path::new(env!("CARGO_MANIFEST_DIR")), args)
}

pub fn planrun_in(dir: &Path, args: &[&str]) -> Output {
    Planrun::at(dir).args(args).run()
}

/// Runs planrun with these environment variables (a balancer's token, `HOME`) set for it alone, so tests that point
/// `HOME` or `SSH_AUTH_SOCK` elsewhere do not race the other tests of their binary. The
/// caller's ssh-agent is never inherited: a test says which agent it means.
pub fn planrun_env<V: AsRef<std::ffi::OsStr>>(dir: &Path, args: &[&str], env: &[(&str, V)]) -> Output {
    let mut run = Planrun::at(dir).args(args);
    for (name, value) in env {
        run = run.env(name, value.as_ref());
    }
    run.run()
}

/// The lines of a file, none when it does not exist (yet): what a plan's commands
/// appended to their `record`.
pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(String::from).collect()
}

/// The servers `h1`…`hN` of a plan, all on the local transport with the role `app`, as
/// `servers:` list lines.
pub fn local_servers(hosts: usize) -> String {
    (1..=hosts).map(|i| format!("  - {{ host: 127.0.0.1, name: h{i}, transport: local, roles: [app] }}\n")).collect()
}

/// The pool of a `command` balancer kept as a folder, `pool/` in `root`: a file per node in
/// rotation, every node `h1`…`hN` in rotation to begin with.
pub fn pool_in_rotation(root: &Path, hosts: usize) {
    std::fs::create_dir_all(root.join("pool")).unwrap();
    for i in 1..=hosts {
        std::fs::write(root.join("pool").join(format!("h{i}")), "").unwrap();
    }
}

/// A snippet's text as inserted with every placeholder left at its default: `${1:shop}`
/// becomes `shop`, `$2` and `${3}` nothing.
pub fn expand_placeholders(snippet: &str) -> String {
    let mut out = String::new();
    let mut rest = snippet;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(inner) = after.strip_prefix('{')
            && let Some(end) = inner.find('}')
        {
            let placeholder = &inner[..end];
            out.push_str(placeholder.split_once(':').map_or("", |(_, default)| default));
            rest = &inner[end + 1..];
        } else {
            let digits = after.find(|c: char| !c.is_ascii_digit()).unwrap_or(after.len());
            if digits == 0 {
                out.push('$');
            }
            rest = &after[digits..];
        }
    }
    out.push_str(rest);
    out
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

    /// The lines of the file `name` in this directory, none when it does not exist.
    pub fn lines(&self, name: &str) -> Vec<String> {
        lines(&self.0.join(name))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A plan with five mistakes of different kinds, for the error-rendering tests.
pub const FIVE_MISTAKES: &str = "\
version: 1
application: shop
servers:
  - host: 10.0.0.2
    roles: [app]
    optons: { private_ip: 192.168.0.1 }
  - host: 10.0.0.3
    roles: [app]
    ssh: { port: twenty }
  - host: 10.0.0.2
    roles: [app]
balancers:
  lb: { kind: linode, token_env: LINODE_TOKEN, label: x, port: 80 }
rollout:
  select:
    roles: [ap]
  steps:
    - name: reject
      balancer: { use: nodebalancer, action: reject, node: \"x:80\" }
    - name: accept
      balancer: { use: lb, action: accept, node: \"x:80\" }
";
