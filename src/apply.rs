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
use crate::journal;
use crate::lock;
use crate::model::{self, Plan, TransportKind};
use crate::redact::Redactor;
use crate::report::{Mode, Reporter, Verbosity};
use crate::ssh_settings::Resolver;
use crate::transport::{Connector, LocalTransport, SshTarget, Transport};
use crate::validate::{self, LoadedPlan};

/// What the command line asked of `apply`.
#[derive(Debug, Clone)]
pub struct ApplyArgs {
    pub plan: PathBuf,
    pub yes: bool,
    pub dry_run: bool,
    pub resume: bool,
    /// `--force`: go on when pre-flight refuses, or resume a changed plan.
    pub force: bool,
    pub build: BuildOptions,
    pub color: bool,
    pub json: bool,
    pub verbosity: Verbosity,
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
    let mut exec = match graph::build(&loaded, &args.build) {
        Ok(e) => e,
        Err(errors) => {
            crate::cli::report(&errors, args.color);
            return exit::INVALID_INPUT;
        }
    };
    let balancers = match Balancers::new(&loaded.plan.balancers) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: balancer `{}`: {}; nothing was executed", e.balancer, e.message);
            return exit::INVALID_INPUT;
        }
    };
    if let Err(message) = check_secrets(&loaded.plan) {
        eprintln!("error: {message}; nothing was executed");
        return exit::INVALID_INPUT;
    }
    let redactor = Redactor::from_plan(&loaded.plan);

    let resume_of = if args.resume {
        match resume(&args, &loaded, &mut exec) {
            Ok(Some(run)) => Some(run),
            Ok(None) => return exit::SUCCESS,
            Err(message) => {
                eprintln!("{}", redactor.redact(&message));
                return exit::INVALID_INPUT;
            }
        }
    } else {
        None
    };

    // Before confirmation: a broken ssh config or jump spec is bad input, found while
    // nothing has run, not a host that cannot be reached.
    let targets = match resolve_targets(&loaded.plan, &exec) {
        Ok(targets) => targets,
        Err(failures) => {
            eprintln!(
                "error: cannot work out how to reach {} of {} hosts; nothing was executed",
                failures.len(),
                exec.hosts.len()
            );
            for (host, why) in failures {
                eprintln!("  {host}: {why}");
            }
            return exit::INVALID_INPUT;
        }
    };

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
    runtime.block_on(run(loaded, Arc::new(exec), targets, balancers, redactor, resume_of, args))
}

/// Leaves out of `exec` what the runs since the last fresh one completed; `Ok(None)` when
/// nothing is left to do.
fn resume(args: &ApplyArgs, loaded: &LoadedPlan, exec: &mut ExecutionPlan) -> Result<Option<String>, String> {
    let plan_key = plan_key(&args.plan);
    let records = journal::read(&state_dir(&args.plan), &plan_key);
    let Some(campaign) = journal::campaign(&records) else {
        return Err(format!(
            "error: there is no earlier run of `{}` to resume; nothing was executed\n  help: run it without `--resume`",
            args.plan.display()
        ));
    };
    if !campaign.resumable() {
        return Err(format!(
            "error: the last run of `{}` ({}) succeeded: there is nothing to resume; nothing was executed\n  help: run it without `--resume` to roll again",
            args.plan.display(),
            campaign.last_run
        ));
    }
    let hash = journal::plan_hash(loaded);
    if hash != campaign.plan_hash {
        if !args.force {
            return Err(format!(
                "error: `{}` changed since run {} started; a resume would mix two plans; nothing was executed\n  help: restore the plan, or pass `--force` to resume with the plan as it is now",
                args.plan.display(),
                campaign.last_run
            ));
        }
        eprintln!(
            "warning: `{}` changed since run {}; resuming anyway (--force)",
            args.plan.display(),
            campaign.last_run
        );
    }
    exec.retain_undone(|instance, host| campaign.is_done(instance, host));
    if exec.step_count() == 0 {
        let _ = writeln!(std::io::stdout(), "every step of run {} is done: nothing left to resume", campaign.last_run);
        return Ok(None);
    }
    Ok(Some(campaign.last_run))
}

async fn run(
    loaded: LoadedPlan,
    exec: Arc<ExecutionPlan>,
    targets: Vec<Option<SshTarget>>,
    balancers: Balancers,
    redactor: Redactor,
    resume_of: Option<String>,
    args: ApplyArgs,
) -> i32 {
    let run_id = run_id();
    let state_dir = state_dir(&args.plan);
    let log_dir = state_dir.join("runs").join(&run_id);
    let plan_name = args.plan.display().to_string();

    let control = Control::default();
    let interrupts = tokio::spawn(watch_interrupts(control.clone()));

    let (transports, lock) = if args.dry_run {
        (Transports { hosts: HashMap::new(), local: Arc::new(Transport::Local(LocalTransport::new())) }, None)
    } else {
        let transports = match connect_all(&exec, targets).await {
            Ok(t) => t,
            Err(failures) => {
                eprintln!(
                    "error: pre-flight: cannot reach {} of {} hosts; nothing was changed",
                    failures.len(),
                    exec.hosts.len()
                );
                for (host, why) in failures {
                    eprintln!("  {host}: {}", redactor.redact(&why));
                }
                interrupts.abort();
                return exit::ROLLOUT_FAILED;
            }
        };
        match take_lock(&loaded, &exec, &transports, &plan_name, &run_id).await {
            Ok(lock) => (transports, Some(lock)),
            Err(message) => {
                eprintln!("{message}");
                interrupts.abort();
                return exit::ROLLOUT_FAILED;
            }
        }
    };

    let batch_size = args.build.batch_size.as_ref().unwrap_or(&loaded.plan.rollout.batch_size);
    let preflight = match crate::preflight::check(&exec, &balancers, batch_size, args.force).await {
        Ok(lines) => lines,
        Err(code) => {
            if let Some((transport, place)) = &lock {
                let _ = lock::remove(transport, place, Some(&run_id)).await;
            }
            interrupts.abort();
            return code;
        }
    };

    let journal = (!args.dry_run).then(|| {
        let mut writer = journal::Writer::open(&state_dir, &run_id, &plan_key(&args.plan));
        let me = lock::Holder::me(&plan_name, &run_id);
        writer.write(&journal::Record::RunStarted {
            v: journal::JOURNAL_VERSION,
            run_id: run_id.clone(),
            plan: plan_key(&args.plan),
            plan_hash: journal::plan_hash(&loaded),
            resume_of: resume_of.clone(),
            user: me.user,
            machine: me.machine,
            pid: me.pid,
            at: journal::stamp(std::time::SystemTime::now()),
        });
        if !preflight.is_empty() {
            writer.write(&journal::Record::Preflight {
                v: journal::JOURNAL_VERSION,
                run_id: run_id.clone(),
                plan: plan_key(&args.plan),
                nodes: preflight.iter().map(|l| redactor.redact(l.trim())).collect(),
                forced: args.force,
            });
        }
        writer
    });

    let mode = if args.json {
        Mode::Json
    } else if std::io::stdout().is_terminal() {
        Mode::Live
    } else {
        Mode::Plain
    };
    let (events, rx) = tokio::sync::mpsc::unbounded_channel();
    let reporter =
        Reporter::new(exec.clone(), mode, args.verbosity, args.color, log_dir.clone(), journal, args.dry_run);
    let reporting = tokio::spawn(reporter.consume(rx));

    let settings = Settings {
        run_id: run_id.clone(),
        plan_name,
        max_failed_hosts: loaded.plan.rollout.max_failed_hosts,
        dry_run: args.dry_run,
        fan_out: FAN_OUT,
        redactor,
        resume_of,
    };
    let lock_transport = lock.as_ref().map(|(t, _)| t.clone());
    let result = execute::run(exec.clone(), transports, balancers.clone(), events, control, settings).await;
    interrupts.abort();
    if !result.cancelled_hosts.is_empty() {
        // Cancelled commands are killed by background tasks (remote: a `kill` over the
        // host's connection); leaving now would end the runtime before they ran.
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
    if let (Some((_, place)), Some(transport)) = (&lock, lock_transport)
        && let Err(e) = lock::remove(&transport, place, Some(&run_id)).await
    {
        eprintln!("warning: could not release the lock `{}`: {e}", place.display);
        eprintln!("  help: `planrun lock release {}`", args.plan.display());
    }
    let summary = reporting.await.ok();
    if let Some(summary) = summary {
        let hint = format!("planrun apply {} --resume", args.plan.display());
        let text = summary.render(&result, Some(&hint), &log_dir);
        // A closed pipe (`| head`) must not panic: by now the rollout has happened.
        if mode == Mode::Json {
            let _ = std::io::stderr().write_all(text.as_bytes());
        } else {
            let _ = std::io::stdout().write_all(text.as_bytes());
        }
    }
    if result.outcome != crate::events::RunOutcome::Succeeded && !args.dry_run {
        let states = crate::preflight::touched_states(&balancers).await;
        let _ = if mode == Mode::Json {
            std::io::stderr().write_all(states.as_bytes())
        } else {
            std::io::stdout().write_all(states.as_bytes())
        };
    }
    match result.outcome {
        crate::events::RunOutcome::Succeeded => exit::SUCCESS,
        crate::events::RunOutcome::Interrupted => exit::INTERRUPTED,
        _ => exit::ROLLOUT_FAILED,
    }
}

/// Takes the rollout lock, over the connection the run already has to the lock's host
/// where it can. Errors are the full message for the operator.
async fn take_lock(
    loaded: &LoadedPlan,
    exec: &ExecutionPlan,
    transports: &Transports,
    plan_name: &str,
    run_id: &str,
) -> Result<(Arc<Transport>, lock::LockPlace), String> {
    let place = lock::place(&loaded.plan, &loaded.selection.hosts);
    let transport = lock_transport(&loaded.plan, &place, exec, transports)
        .await
        .map_err(|e| format!("error: cannot reach the lock `{}`: {e}; nothing was changed", place.display))?;
    let me = lock::Holder::me(plan_name, run_id);
    match lock::acquire(&transport, &place, &me).await {
        Ok(lock::Acquired::Taken) => Ok((transport, place)),
        Ok(lock::Acquired::TakenOver(old)) => {
            eprintln!("note: took over the lock `{}` from {}: that process is gone", place.display, old.describe());
            Ok((transport, place))
        }
        Err(lock::LockError::Held(holder)) => Err(format!(
            "error: another apply holds the lock `{}`: {}; nothing was changed\n  help: wait for it to finish; if it is gone for good, `planrun lock release {}`",
            place.display,
            holder.describe(),
            plan_name
        )),
        Err(lock::LockError::Unknown(at)) => Err(format!(
            "error: the lock `{at}` exists but does not say who holds it; nothing was changed\n  help: if no apply is running, `planrun lock release {plan_name}`"
        )),
        Err(lock::LockError::Failed(e)) => {
            Err(format!("error: cannot take the lock `{}`: {e}; nothing was changed", place.display))
        }
    }
}

/// The lock's host: the run's own connection to it, the control machine, or a new
/// connection when `--limit` left that host out of the run.
pub async fn lock_transport(
    plan: &Plan,
    place: &lock::LockPlace,
    exec: &ExecutionPlan,
    transports: &Transports,
) -> Result<Arc<Transport>, String> {
    if let Some(host) = lock::connected_host(exec, place)
        && let Some(t) = transports.hosts.get(&host)
    {
        return Ok(t.clone());
    }
    if lock::is_local(plan, place) {
        return Ok(transports.local.clone());
    }
    let server = place.server.map(|s| &plan.servers[s]).ok_or("no lock host")?;
    let target = Resolver::new().resolve(plan, server)?.target;
    Connector::new().connect(&target).await.map(|s| Arc::new(Transport::Ssh(s))).map_err(|e| e.to_string())
}

/// The journal names plans by file name: plans in one folder share `.planrun/`.
pub fn plan_key(plan: &Path) -> String {
    plan.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| plan.display().to_string())
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

/// How to reach each selected host, in `exec.hosts` order: `None` for a local one.
fn resolve_targets(plan: &Plan, exec: &ExecutionPlan) -> Result<Vec<Option<SshTarget>>, Vec<(String, String)>> {
    let mut resolver = Resolver::new();
    let mut targets = Vec::with_capacity(exec.hosts.len());
    let mut failures = Vec::new();
    for host in &exec.hosts {
        let server = &plan.servers[host.server];
        match server.transport {
            TransportKind::Local => targets.push(None),
            TransportKind::Ssh => match resolver.resolve(plan, server) {
                Ok(resolved) => targets.push(Some(resolved.target)),
                Err(e) => failures.push((host.name.clone(), e)),
            },
        }
    }
    if failures.is_empty() { Ok(targets) } else { Err(failures) }
}

/// Opens one connection per selected host before anything changes: an unreachable host
/// is found while every host is still in rotation.
async fn connect_all(
    exec: &ExecutionPlan,
    targets: Vec<Option<SshTarget>>,
) -> Result<Transports, Vec<(String, String)>> {
    let limit = Arc::new(tokio::sync::Semaphore::new(FAN_OUT));
    // Shared: every host behind one bastion goes through one connection to it.
    let connector = Arc::new(Connector::new());
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (host, target)) in exec.hosts.iter().zip(targets).enumerate() {
        let limit = limit.clone();
        let connector = connector.clone();
        let name = host.name.clone();
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let transport = match target {
                None => Ok(Transport::Local(LocalTransport::new())),
                Some(target) => connector.connect(&target).await.map(Transport::Ssh).map_err(|e| e.to_string()),
            };
            (i, name, transport)
        });
    }
    let mut failures = Vec::new();
    let mut hosts = HashMap::new();
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
