//! `planrun apply`: everything between a validated plan and a finished rollout —
//! confirmation, secrets, pre-flight connections, the executor, the reporter, Ctrl-C.

use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::balancer::Balancers;
use crate::execute::{self, Control, Settings, Transports};
use crate::exit;
use crate::graph::{self, BuildOptions, ExecutionPlan};
use crate::model::{self, Plan, Server, TransportKind};
use crate::report::Reporter;
use crate::transport::{HostKeyChecking, LocalTransport, SshSession, SshTarget, Transport};
use crate::validate::{self, LoadedPlan};

/// What the command line asked of `apply`.
#[derive(Debug, Clone, Default)]
pub struct ApplyArgs {
    pub plan: PathBuf,
    pub yes: bool,
    pub dry_run: bool,
    pub build: BuildOptions,
    pub color: bool,
}

/// How many hosts planrun connects to, or fans a `before` step out to, at once.
const FAN_OUT: usize = 16;

pub fn apply(args: ApplyArgs) -> i32 {
    let loaded = match validate::load_plan(&args.plan) {
        Ok(l) => l,
        Err(errors) => {
            crate::cli::report(&errors, args.color);
            return exit::INVALID_INPUT;
        }
    };
    let exec = match graph::build(&loaded, &args.build) {
        Ok(e) => Arc::new(e),
        Err(errors) => {
            crate::cli::report(&errors, args.color);
            return exit::INVALID_INPUT;
        }
    };
    let balancers = match Balancers::new(&loaded.plan.balancers) {
        Ok(b) => b,
        Err(u) => {
            eprintln!(
                "error: balancer `{}` is of kind `{}`, which this version of planrun cannot drive yet; nothing was executed",
                u.balancer, u.kind
            );
            eprintln!("  help: use a `command` balancer that calls your balancer's CLI, or run with `--dry-run`");
            return exit::INVALID_INPUT;
        }
    };
    if let Err(message) = check_secrets(&loaded.plan) {
        eprintln!("error: {message}; nothing was executed");
        return exit::INVALID_INPUT;
    }

    if !args.dry_run {
        match confirm(&loaded, &exec, args.yes) {
            Ok(true) => {}
            Ok(false) => {
                eprintln!("apply cancelled; nothing was executed");
                return exit::INVALID_INPUT;
            }
            Err(message) => {
                eprintln!("error: {message}");
                return exit::INVALID_INPUT;
            }
        }
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return exit::ROLLOUT_FAILED;
        }
    };
    runtime.block_on(run(loaded, exec, balancers, args))
}

async fn run(loaded: LoadedPlan, exec: Arc<ExecutionPlan>, balancers: Balancers, args: ApplyArgs) -> i32 {
    let run_id = run_id();
    let state_dir = state_dir(&args.plan);
    let log_dir = state_dir.join("runs").join(&run_id);
    let (events, rx) = tokio::sync::mpsc::unbounded_channel();
    let reporter = Reporter::new(exec.clone(), log_dir.clone(), args.dry_run);
    let reporting = tokio::spawn(reporter.consume(rx));

    let control = Control::default();
    let interrupts = tokio::spawn(watch_interrupts(control.clone()));

    let transports = if args.dry_run {
        Transports { hosts: HashMap::new(), local: Arc::new(Transport::Local(LocalTransport::new())) }
    } else {
        match connect_all(&loaded.plan, &exec).await {
            Ok(t) => t,
            Err(failures) => {
                eprintln!(
                    "error: pre-flight: cannot reach {} of {} hosts; nothing was changed",
                    failures.len(),
                    exec.hosts.len()
                );
                for (host, why) in failures {
                    eprintln!("  {host}: {why}");
                }
                interrupts.abort();
                return exit::ROLLOUT_FAILED;
            }
        }
    };

    let settings = Settings {
        run_id,
        plan_name: args.plan.display().to_string(),
        max_failed_hosts: loaded.plan.rollout.max_failed_hosts,
        dry_run: args.dry_run,
        fan_out: FAN_OUT,
    };
    let result = execute::run(exec.clone(), transports, balancers, events, control, settings).await;
    interrupts.abort();
    let summary = reporting.await.ok();
    if let Some(summary) = summary {
        print!("{}", summary.render(&result, &args.plan, &log_dir));
    }
    match result.outcome {
        crate::events::RunOutcome::Succeeded => exit::SUCCESS,
        crate::events::RunOutcome::Interrupted => exit::INTERRUPTED,
        _ => exit::ROLLOUT_FAILED,
    }
}

/// First Ctrl-C stops new work; the second cancels running steps.
async fn watch_interrupts(control: Control) {
    if tokio::signal::ctrl_c().await.is_err() {
        return;
    }
    eprintln!("\ninterrupt: starting nothing new; running steps finish (press Ctrl-C again to cancel them)");
    control.stop.cancel();
    if tokio::signal::ctrl_c().await.is_err() {
        return;
    }
    eprintln!("\ninterrupt: cancelling running steps");
    control.cancel.cancel();
}

/// Opens one connection per selected host before anything changes: an unreachable host
/// is found while every host is still in rotation.
async fn connect_all(plan: &Plan, exec: &ExecutionPlan) -> Result<Transports, Vec<(String, String)>> {
    let limit = Arc::new(tokio::sync::Semaphore::new(FAN_OUT));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, host) in exec.hosts.iter().enumerate() {
        let server = plan.servers[host.server].clone();
        let target = ssh_target(plan, &server);
        let limit = limit.clone();
        let name = host.name.clone();
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let transport = match server.transport {
                TransportKind::Local => Ok(Transport::Local(LocalTransport::new())),
                TransportKind::Ssh => SshSession::connect(&target).await.map(Transport::Ssh).map_err(|e| e.to_string()),
            };
            (i, name, transport)
        });
    }
    let mut hosts = HashMap::new();
    let mut failures = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok((i, _, Ok(t))) => {
                hosts.insert(i, Arc::new(t));
            }
            Ok((_, name, Err(e))) => failures.push((name, e)),
            Err(e) => failures.push(("?".into(), e.to_string())),
        }
    }
    if failures.is_empty() {
        Ok(Transports { hosts, local: Arc::new(Transport::Local(LocalTransport::new())) })
    } else {
        failures.sort();
        Err(failures)
    }
}

/// The server's SSH settings over the plan's, over OpenSSH's defaults.
pub fn ssh_target(plan: &Plan, server: &Server) -> SshTarget {
    let own = server.ssh.clone().unwrap_or_default();
    let all = &plan.ssh;
    let user = own.user.or_else(|| all.user.clone()).unwrap_or_else(current_user);
    let mut target = SshTarget::new(server.host.clone(), user);
    if let Some(port) = own.port.or(all.port) {
        target.port = port;
    }
    if let Some(file) = own.identity_file.as_ref().or(all.identity_file.as_ref()) {
        target.identity_file = Some(expand_home(file));
    }
    if let Some(file) = own.known_hosts.as_ref().or(all.known_hosts.as_ref()) {
        target.known_hosts = expand_home(file);
    }
    if let Some(policy) = own.host_key_checking.or(all.host_key_checking) {
        target.host_key_checking = match policy {
            model::HostKeyChecking::Strict => HostKeyChecking::Strict,
            model::HostKeyChecking::AcceptNew => HostKeyChecking::AcceptNew,
            model::HostKeyChecking::Off => HostKeyChecking::Off,
        };
    }
    if let Some(t) = own.connect_timeout.or(all.connect_timeout) {
        target.connect_timeout = t.get();
    }
    target
}

fn current_user() -> String {
    std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "root".into())
}

fn expand_home(path: &str) -> PathBuf {
    match path.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default().join(rest),
        None => PathBuf::from(path),
    }
}

/// Secrets the plan names must be set before anything runs: a rollout that stops at its
/// first balancer step for want of a token has already taken a host out.
fn check_secrets(plan: &Plan) -> Result<(), String> {
    let mut names: Vec<&str> = plan.secret_env.iter().map(String::as_str).collect();
    for balancer in plan.balancers.values() {
        if let model::Balancer::Linode(l) = balancer {
            names.push(&l.token_env);
        }
    }
    let missing: Vec<&str> = names.into_iter().filter(|n| std::env::var_os(n).is_none_or(|v| v.is_empty())).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the environment variable{} {} must be set: the plan reads {} from it",
            if missing.len() == 1 { "" } else { "s" },
            crate::diagnostic::backticked_list(&missing),
            if missing.len() == 1 { "a secret" } else { "secrets" }
        ))
    }
}

/// On a terminal, asks; without one, requires `--yes`, since nobody can answer.
fn confirm(loaded: &LoadedPlan, exec: &ExecutionPlan, yes: bool) -> Result<bool, String> {
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        return Err("refusing to apply without a terminal to confirm on; pass `--yes` to apply unattended \
                    (nothing was executed)"
            .into());
    }
    let mut stderr = std::io::stderr();
    let _ = write!(
        stderr,
        "apply {} to {} host{} of `{}` in {} batch{}? [y/N] ",
        loaded.source().display_name(),
        exec.hosts.len(),
        if exec.hosts.len() == 1 { "" } else { "s" },
        exec.application,
        exec.batches.len(),
        if exec.batches.len() == 1 { "" } else { "es" },
    );
    let _ = stderr.flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).map_err(|e| format!("cannot read the answer: {e}"))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

/// `.planrun/` beside the plan: the journal and the logs of every run of that plan.
pub fn state_dir(plan: &Path) -> PathBuf {
    plan.parent().map(Path::to_path_buf).unwrap_or_default().join(".planrun")
}

fn run_id() -> String {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    // Sortable and safe in file names: 2026-11-27T19-01-02Z-1234.
    format!("{}-{}", now.replace(':', "-"), std::process::id())
}
