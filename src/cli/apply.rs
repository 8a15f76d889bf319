//! `planrun apply`: everything between a validated plan and a finished rollout —
//! confirmation, secrets, pre-flight connections, the lock, the executor, the reporter,
//! Ctrl-C. The stages run in order and each either hands the next what it needs or
//! stops the run with an [`ApplyError`], which `print` shows with its exit code.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

use super::print::{self, ApplyError, ResumeError};
use crate::balancer::Balancers;
use crate::events::{Emitter, RunOutcome};
use crate::execute::{self, Control, RunResult, Settings};
use crate::exit;
use crate::graph::{self, BuildOptions, ExecutionPlan};
use crate::journal;
use crate::lock;
use crate::model::{Plan, TransportKind};
use crate::preflight;
use crate::redact::Redactor;
use crate::report::{Mode, Reporter, Verbosity};
use crate::ssh_settings::Resolver;
use crate::transport::{Connector, LocalTransport, SshTarget, Transport, Transports};
use crate::validate::{self, LoadedPlan};

/// What the command line asked of `apply`.
#[derive(Debug, Clone)]
pub struct ApplyArgs {
    pub plan: PathBuf,
    pub yes: bool,
    pub dry_run: bool,
    pub resume: bool,
    /// `--force`: go on when pre-flight (or the budget check before a batch) refuses.
    pub force: bool,
    /// `--resume-changed`: resume although the plan's files changed since the run.
    pub resume_changed: bool,
    /// `--pause-after`: replaces the plan's `rollout.pause_after`.
    pub pause_after: Vec<std::num::NonZeroU32>,
    /// `--no-pause`: no pause at all.
    pub no_pause: bool,
    /// `--lock-wait`: how long to wait for a lock another apply holds.
    pub lock_wait: Option<std::time::Duration>,
    /// `--message`: why this run holds the lock, for `lock status` and refused applies.
    pub message: String,
    pub build: BuildOptions,
    /// `apply FILE` of a saved plan: the plan must still render to exactly that.
    pub saved: Option<Arc<crate::saved::SavedPlan>>,
    /// `planrun rollback`: the plan's `rollback.steps` over the hosts the last run changed.
    pub rollback: bool,
    pub color: bool,
    pub json: bool,
    pub verbosity: Verbosity,
}

/// How many SSH handshakes are in flight at once while connecting to every host.
const CONNECT_PARALLEL: usize = 16;

/// A plan checked and ready to run: everything that can be refused without touching a
/// host has been.
struct Prepared {
    loaded: LoadedPlan,
    exec: Arc<ExecutionPlan>,
    /// `exec` before `--limit` and a resume trimmed it.
    whole: Arc<ExecutionPlan>,
    targets: Vec<Option<SshTarget>>,
    balancers: Balancers,
    redactor: Redactor,
    /// The run this one resumes.
    resume_of: Option<String>,
    run_id: String,
    /// What this run rolls, beyond the plan's text: the journal's header records it.
    inputs: journal::Inputs,
    /// The batch numbers (1-based) to pause after.
    pause_after: BTreeSet<usize>,
    /// Where the journal and the lock live.
    state: crate::state::Backend,
}

/// The lock this run holds, and the connection to its host (or its database session).
enum HeldLock {
    Fleet { transport: Arc<Transport>, place: lock::LockPlace },
    Postgres(super::state::PgLock),
}

pub fn apply(args: ApplyArgs) -> i32 {
    let prepared = match prepare(&args) {
        Ok(Some(prepared)) => prepared,
        Ok(None) => return exit::SUCCESS,
        Err(e) => return print::apply_error(&e, args.color),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return print::apply_error(&ApplyError::Runtime(e), args.color),
    };
    let code = runtime.block_on(run(prepared, &args));
    // A question left unanswered by a Ctrl-C still blocks a thread reading the
    // terminal: the process exits without waiting for it.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    code
}

/// Everything before the first connection. `Ok(None)`: a resume found nothing left to do.
fn prepare(args: &ApplyArgs) -> Result<Option<Prepared>, ApplyError> {
    let loaded = validate::load_plan(&args.plan).map_err(ApplyError::Plan)?;
    // From here on, everything printed masks the plan's secrets, whatever it was built from.
    crate::redact::install_plan(&loaded.plan);
    let state = crate::state::Backend::of(&args.plan, &loaded.plan).map_err(ApplyError::State)?;
    // A resume continues the run it resumes: with its `--var`, `--limit` and batch sizes.
    let campaign = if args.resume { Some(campaign(args, &loaded, &state)?) } else { None };
    let target = if args.rollback { Some(super::rollback::target(&args.plan, &loaded, &state)?) } else { None };
    let build = match (&campaign, &target) {
        (Some(c), _) => c.inputs.build_options(),
        (None, Some(t)) => super::rollback::build_options(t, &args.build),
        (None, None) => args.build.clone(),
    };
    let run_id = journal::new_run_id();
    let (mut exec, spec) = match &target {
        Some(t) => (
            super::rollback::build(&args.plan, &loaded, t, &build)?,
            graph::RunSpec { only: None, ..super::rollback::spec(t) },
        ),
        None => {
            // A resume writes the release its first run started: `{{run.*}}` are that run's.
            let run = graph::RunValues::of(campaign.as_ref().map_or(&run_id, |c| &c.first_run));
            let spec = graph::RunSpec { run, ..Default::default() };
            (graph::build_run(&loaded, &build, &spec).map_err(ApplyError::Plan)?, spec)
        }
    };
    // The plan before `--limit` and the resume trim it: the pool of balancers that cannot
    // list theirs, so the budget counts the nodes the rollout does not visit now.
    let whole = match (&build.limit, &target) {
        (None, None) => exec.clone(),
        _ => graph::build_run(&loaded, &BuildOptions { limit: None, ..build.clone() }, &spec)
            .map_err(ApplyError::Plan)?,
    };
    if let Some(saved) = &args.saved {
        saved.check(&loaded, &exec).map_err(ApplyError::SavedPlan)?;
    }
    let pause_after = pause_points(args, &loaded.plan, exec.batches.len())?;
    let balancers = Balancers::new(&loaded.plan.balancers, Some(print::notices())).map_err(ApplyError::Balancer)?;
    check_secrets(&loaded.plan)?;
    let redactor = Redactor::from_plan(&loaded.plan);

    let resume_of = match &campaign {
        Some(campaign) => {
            exec.retain_undone(|instance, host| campaign.is_done(instance, host));
            if exec.step_count() == 0 {
                let _ = writeln!(
                    std::io::stdout(),
                    "every step of run {} is done: nothing left to resume",
                    campaign.last_run
                );
                return Ok(None);
            }
            Some(campaign.last_run.clone())
        }
        None => None,
    };

    // Before confirmation: a broken ssh config or jump spec is bad input, found while
    // nothing has run, not a host that cannot be reached.
    let targets = resolve_targets(&loaded.plan, &exec.hosts)
        .map_err(|failures| ApplyError::Unresolved { failures, hosts: exec.hosts.len() })?;

    // Without a terminal nobody can answer: refused now, before any connection. The
    // question itself comes after the pre-flight, with the plan, so it can be answered.
    if !args.dry_run && !args.yes && !std::io::stdin().is_terminal() {
        return Err(ApplyError::NoTerminal);
    }
    let inputs = journal::Inputs::of(&loaded, &build);
    Ok(Some(Prepared {
        loaded,
        exec: Arc::new(exec),
        whole: Arc::new(whole),
        targets,
        balancers,
        redactor,
        resume_of,
        run_id,
        inputs,
        pause_after,
        state,
    }))
}

/// The batches to pause after: `--pause-after`'s, else the plan's; none with
/// `--no-pause`. A number past the run's batches is refused before anything runs: the
/// batch count is known only once `--limit` and the batch sizes are applied.
fn pause_points(args: &ApplyArgs, plan: &Plan, batches: usize) -> Result<BTreeSet<usize>, ApplyError> {
    if args.no_pause || args.dry_run {
        return Ok(BTreeSet::new());
    }
    let (from, numbers) = if args.pause_after.is_empty() {
        ("`rollout.pause_after`", &plan.rollout.pause_after)
    } else {
        ("`--pause-after`", &args.pause_after)
    };
    let beyond: Vec<u32> = numbers.iter().map(|n| n.get()).filter(|n| *n as usize > batches).collect();
    if !beyond.is_empty() {
        return Err(ApplyError::PauseBeyondBatches { from, pauses: beyond, batches });
    }
    Ok(numbers.iter().map(|n| n.get() as usize).collect())
}

/// The runs a `--resume` continues, checked: there is one that did not succeed, the
/// plan is the one it ran (unless `--resume-changed`), and the command line's overrides
/// are the ones it ran with.
fn campaign(
    args: &ApplyArgs,
    loaded: &LoadedPlan,
    state: &crate::state::Backend,
) -> Result<journal::Campaign, ApplyError> {
    let plan = args.plan.display().to_string();
    let journal = state.read(&journal::plan_key(&args.plan)).map_err(ApplyError::State)?;
    super::print::warn_unreadable(&journal, &args.plan);
    let Some(campaign) = journal::campaign(&journal.records) else {
        return Err(ResumeError::NoEarlierRun { plan }.into());
    };
    if let Some(by) = campaign.rolled_back_by {
        return Err(ResumeError::RolledBack { plan, run: campaign.last_run, by }.into());
    }
    if !campaign.resumable() {
        return Err(ResumeError::Succeeded { plan, run: campaign.last_run }.into());
    }
    let now = journal::Inputs::of(loaded, &args.build);
    let differences = campaign.inputs.override_differences(&now);
    if !differences.is_empty() {
        let command = journal::resume_command(&args.plan, &campaign.inputs);
        return Err(ResumeError::OtherInputs { plan, run: campaign.last_run, differences, command }.into());
    }
    if journal::plan_hash(loaded) != campaign.plan_hash {
        let mut changes = campaign.inputs.plan_differences(&now);
        if changes.is_empty() {
            // A run recorded by an older planrun has no file hashes.
            changes.push(format!("`{plan}` or a base it extends changed"));
        }
        if !args.resume_changed {
            return Err(ResumeError::PlanChanged { plan, run: campaign.last_run, changes }.into());
        }
        eprintln!(
            "warning: the plan changed since run {} ({}); resuming anyway (--resume-changed)",
            campaign.last_run,
            changes.join("; ")
        );
    }
    Ok(campaign)
}

async fn run(prepared: Prepared, args: &ApplyArgs) -> i32 {
    let control = Control::default();
    let first_signal = Arc::new(AtomicI32::new(0));
    let interrupts = tokio::spawn(watch_interrupts(control.clone(), first_signal.clone()));
    let code = match rollout(prepared, args, control).await {
        Ok(code) if code == exit::INTERRUPTED => match first_signal.load(Ordering::SeqCst) {
            0 => code,
            signal => 128 + signal,
        },
        Ok(code) => code,
        Err(e) => {
            let code = print::apply_error(&e, args.color);
            // A question answered with Ctrl-C: the run was interrupted, as its code says.
            match (&e, first_signal.load(Ordering::SeqCst)) {
                (ApplyError::Declined, signal) if signal != 0 => 128 + signal,
                _ => code,
            }
        }
    };
    interrupts.abort();
    code
}

/// Connects, locks, checks the balancers, runs the plan and reports; the exit code of a
/// run that started.
async fn rollout(prepared: Prepared, args: &ApplyArgs, control: Control) -> Result<i32, ApplyError> {
    let Prepared { loaded, exec, whole, targets, balancers, redactor, resume_of, run_id, inputs, pause_after, state } =
        prepared;
    let plan_name = args.plan.display().to_string();

    let (transports, lock) = if args.dry_run {
        (Transports::local_only(), None)
    } else {
        let transports = connect_all(&exec, targets).await.map_err(|failures| ApplyError::Unreachable {
            failures: failures.into_iter().map(|(host, why)| (host, redactor.redact(&why))).collect(),
            hosts: exec.hosts.len(),
        })?;
        let lock = take_lock(&loaded, &exec, &transports, args, &run_id, &state, &control.halt).await?;
        (transports, Some(lock))
    };

    let batch_size = inputs.batch_size.as_ref().unwrap_or(&loaded.plan.rollout.batch_size);
    let verdict = preflight::judge(&preflight::read(&exec, &whole, &balancers).await, &exec, batch_size);
    if !show_preflight(&verdict, args.force) {
        release(lock.as_ref(), &run_id, args).await;
        return Err(ApplyError::PreflightRefused { unreadable: verdict.unreadable });
    }
    let guard = match start_guard(&loaded, &balancers, args.dry_run).await {
        Ok(guard) => guard,
        Err(e) => {
            release(lock.as_ref(), &run_id, args).await;
            return Err(e);
        }
    };
    if !args.dry_run && !args.yes {
        // Like `terraform apply`: the balancers' view and the plan first, then the question.
        let question = confirmation(&loaded, &exec, args.rollback);
        if let Err(e) = confirm(question, &control).await {
            guard.as_ref().inspect(|g| g.stop());
            release(lock.as_ref(), &run_id, args).await;
            return Err(e);
        }
    }

    let state_dir = journal::state_dir(&args.plan);
    let log_dir = state_dir.join("runs").join(&run_id);
    let journal = if args.dry_run {
        None
    } else {
        let header = Header {
            loaded: &loaded,
            run_id: &run_id,
            resume_of: &resume_of,
            inputs: &inputs,
            rollback: args.rollback,
        };
        match open_journal(args, &header, &verdict, &redactor, lock.as_ref()) {
            Ok(writer) => Some(writer),
            Err(e) => {
                guard.as_ref().inspect(|g| g.stop());
                release(lock.as_ref(), &run_id, args).await;
                return Err(e);
            }
        }
    };

    let mode = if args.json {
        Mode::Json
    } else if std::io::stdout().is_terminal() {
        Mode::Live
    } else {
        Mode::Plain
    };
    let (events, rx) = crate::events::channel();
    let reporter =
        Reporter::new(exec.clone(), mode, args.verbosity, args.color, log_dir.clone(), journal, args.dry_run);
    let reporting = tokio::spawn(reporter.halting_on_journal_failure(control.halt.clone()).consume(rx));

    let settings = Settings {
        run_id: run_id.clone(),
        plan_name,
        max_failed_hosts: loaded.plan.rollout.max_failed_hosts,
        dry_run: args.dry_run,
        fan_out: exec.fan_out,
        resume_of,
        batch_size: batch_size.clone(),
        force: args.force,
        whole,
        pause_after,
    };
    let emitter = Emitter::new(events, redactor);
    let mut control = control;
    control.guard = guard;
    let asking = (!settings.pause_after.is_empty() && std::io::stdin().is_terminal()).then(|| {
        let (asker, questions) = tokio::sync::mpsc::unbounded_channel();
        control.pause = Some(asker);
        tokio::spawn(answer_pauses(questions))
    });
    let result = execute::run(exec.clone(), transports, balancers.clone(), emitter, control, settings).await;
    if let Some(asking) = asking {
        asking.abort();
    }
    if !result.cancelled_hosts.is_empty() {
        // Cancelled commands are killed by background tasks (remote: a `kill` over the
        // host's connection); leaving now would end the runtime before they ran.
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
    release(lock.as_ref(), &run_id, args).await;
    if let Ok(summary) = reporting.await {
        // A rollback that stopped is continued by running it again.
        let hint = if args.rollback {
            super::rollback::command(&args.plan)
        } else {
            journal::resume_command(&args.plan, &inputs)
        };
        let width = crate::report::output_width(mode == Mode::Live);
        write_out(mode, &summary.render(&result, Some(&hint), &log_dir, width));
    }
    if result.outcome != RunOutcome::Succeeded && !args.dry_run {
        write_out(mode, &preflight::touched_states(&balancers).await);
    }
    Ok(exit_code(&result))
}

/// What the journal's first records of a run say.
struct Header<'a> {
    loaded: &'a LoadedPlan,
    run_id: &'a str,
    resume_of: &'a Option<String>,
    inputs: &'a journal::Inputs,
    rollback: bool,
}

/// Opens the journal and writes the run's header and the pre-flight view. A run planrun
/// cannot record is a run it cannot resume: it does not start.
fn open_journal(
    args: &ApplyArgs,
    header: &Header<'_>,
    verdict: &preflight::Verdict,
    redactor: &Redactor,
    lock: Option<&HeldLock>,
) -> Result<journal::Writer, ApplyError> {
    let state_dir = journal::state_dir(&args.plan);
    let plan_key = journal::plan_key(&args.plan);
    let (mut writer, error) = match lock {
        Some(HeldLock::Postgres(held)) => (held.journal(header.run_id, &plan_key), None),
        _ => journal::Writer::open(&state_dir, header.run_id, &plan_key),
    };
    if let Some(source) = error {
        return Err(ApplyError::Journal(journal::WriteError {
            path: journal::path(&state_dir).display().to_string(),
            source,
        }));
    }
    let me = lock::Holder::me(&args.plan.display().to_string(), header.run_id);
    writer
        .write(&journal::Record::RunStarted {
            v: journal::JOURNAL_VERSION,
            run_id: header.run_id.to_string(),
            plan: plan_key.clone(),
            plan_hash: journal::plan_hash(header.loaded),
            resume_of: header.resume_of.clone(),
            user: me.user,
            machine: me.machine,
            pid: me.pid,
            at: journal::stamp(std::time::SystemTime::now()),
            inputs: header.inputs.clone(),
            kind: if header.rollback { journal::RunKind::Rollback } else { journal::RunKind::Apply },
        })
        .map_err(ApplyError::Journal)?;
    if !verdict.lines.is_empty() {
        writer
            .write(&journal::Record::Preflight {
                v: journal::JOURNAL_VERSION,
                run_id: header.run_id.to_string(),
                plan: plan_key,
                nodes: verdict.lines.iter().map(|l| redactor.redact(l.trim())).collect(),
                forced: args.force,
            })
            .map_err(ApplyError::Journal)?;
    }
    Ok(writer)
}

fn exit_code(result: &RunResult) -> i32 {
    match result.outcome {
        RunOutcome::Succeeded => exit::SUCCESS,
        RunOutcome::Interrupted => exit::INTERRUPTED,
        RunOutcome::Paused => exit::PAUSED,
        _ => exit::ROLLOUT_FAILED,
    }
}

/// The run's closing text: on standard output, or on standard error when standard output
/// carries JSON lines. A closed pipe (`| head`) must not panic: by now the rollout has
/// happened.
fn write_out(mode: Mode, text: &str) {
    let _ = if mode == Mode::Json {
        crate::redact::stderr().write_all(text.as_bytes())
    } else {
        crate::redact::stdout().write_all(text.as_bytes())
    };
}

/// Shows the pre-flight verdict; false when the run must stop.
fn show_preflight(verdict: &preflight::Verdict, force: bool) -> bool {
    if verdict.nodes == 0 {
        return true;
    }
    // Standard error: standard output is the run's own stream (JSON lines with
    // `--output json`), and a closed stdout must not stop an apply.
    eprintln!("pre-flight: the balancers' view of {}:", crate::text::plural(verdict.nodes, "node", "nodes"));
    for line in &verdict.lines {
        eprintln!("{line}");
    }
    if verdict.problems.is_empty() {
        eprintln!("pre-flight: ok");
        return true;
    }
    if force {
        for p in &verdict.problems {
            eprintln!("warning: pre-flight: {p}");
        }
        eprintln!("warning: --force: going on although pre-flight refuses; nodes above may leave too few serving");
        return true;
    }
    for p in &verdict.problems {
        eprintln!("error: pre-flight: {p}");
    }
    false
}

/// Takes the rollout lock, over the connection the run already has to the lock's host
/// where it can; with `--lock-wait`, waits for a held lock, showing who holds it.
async fn take_lock(
    loaded: &LoadedPlan,
    exec: &ExecutionPlan,
    transports: &Transports,
    args: &ApplyArgs,
    run_id: &str,
    state: &crate::state::Backend,
    halt: &execute::Halt,
) -> Result<HeldLock, ApplyError> {
    let plan_name = args.plan.display().to_string();
    if let crate::state::Backend::Postgres(db) = state {
        let me = lock::Holder::me(&plan_name, run_id).with_message(&args.message);
        let held = super::state::take_lock(db, &me, args.lock_wait, halt.clone(), &plan_name).await?;
        return Ok(HeldLock::Postgres(held));
    }
    let place = lock::place(&loaded.plan, &loaded.selection.hosts);
    let transport = match lock::transport(&loaded.plan, &place, exec, transports, print::notices()).await {
        Ok(t) => t,
        Err(reason) => return Err(ApplyError::LockUnreachable { place: place.display, reason }),
    };
    let me = lock::Holder::me(&plan_name, run_id).with_message(&args.message);
    let deadline = args.lock_wait.map(|wait| tokio::time::Instant::now() + wait);
    let mut shown: Option<lock::Holder> = None;
    loop {
        match lock::acquire(&transport, &place, &me).await {
            Ok(lock::Acquired::Taken) => return Ok(HeldLock::Fleet { transport, place }),
            Ok(lock::Acquired::TakenOver(old)) => {
                eprintln!("note: took over the lock `{}` from {}: that process is gone", place.display, old.describe());
                return Ok(HeldLock::Fleet { transport, place });
            }
            Err(lock::LockError::Held(holder)) if deadline.is_some_and(|d| tokio::time::Instant::now() < d) => {
                if shown.as_ref() != Some(&holder) {
                    eprintln!("waiting for the lock `{}`: held by {}", place.display, holder.describe());
                    shown = Some(holder);
                }
                tokio::time::sleep(LOCK_POLL).await;
            }
            Err(error) => {
                return Err(ApplyError::Lock { place: place.display, plan: plan_name, error: Box::new(error) });
            }
        }
    }
}

/// How often `--lock-wait` asks whether the lock is free.
const LOCK_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// Releases the lock this run holds; a lock that cannot be released is named with how
/// to break it, and the run's outcome stands.
async fn release(lock: Option<&HeldLock>, run_id: &str, args: &ApplyArgs) {
    let (place, removed) = match lock {
        None => return,
        Some(HeldLock::Fleet { transport, place }) => {
            (place.display.clone(), lock::remove(transport, place, Some(run_id)).await)
        }
        Some(HeldLock::Postgres(held)) => (held.place.clone(), super::state::release(held, run_id).await),
    };
    if let Err(e) = removed {
        eprintln!("warning: could not release the lock `{place}`: {e}");
        eprintln!("  help: `planrun lock release {}`", args.plan.display());
    }
}

/// The signals that stop an apply like Ctrl-C: a CI runner cancelling its job sends
/// SIGTERM, a closed terminal SIGHUP.
struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// The next signal's number and how to name it.
    async fn next(&mut self) -> (i32, &'static str) {
        tokio::select! {
            _ = self.interrupt.recv() => (nix::sys::signal::Signal::SIGINT as i32, "Ctrl-C"),
            _ = self.terminate.recv() => (nix::sys::signal::Signal::SIGTERM as i32, "SIGTERM"),
            _ = self.hangup.recv() => (nix::sys::signal::Signal::SIGHUP as i32, "SIGHUP"),
        }
    }
}

/// The first stop signal starts nothing new (the hosts in their window finish it, the
/// run is journaled and summarized); the second cancels running steps. The first
/// signal's number is kept for the exit code: 128 + its number, as shells report it.
async fn watch_interrupts(control: Control, first: Arc<AtomicI32>) {
    let mut signals = match StopSignals::new() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("warning: cannot watch for Ctrl-C, SIGTERM or SIGHUP: {e}");
            return;
        }
    };
    let (number, name) = signals.next().await;
    first.store(number, Ordering::SeqCst);
    let again = if number == nix::sys::signal::Signal::SIGINT as i32 { "press" } else { "send" };
    crate::report::notice_after_keypress(&format!(
        "interrupt: starting nothing new; running steps finish ({again} {name} again to cancel them)"
    ));
    control.stop.cancel();
    let (_, name) = signals.next().await;
    crate::report::notice_after_keypress(&format!("interrupt: cancelling running steps ({name})"));
    control.cancel.cancel();
}

/// How to reach each of `hosts`, in their order: `None` for a local one.
pub(super) fn resolve_targets(
    plan: &Plan,
    hosts: &[graph::HostRef],
) -> Result<Vec<Option<SshTarget>>, Vec<(String, String)>> {
    let mut resolver = Resolver::new();
    let mut targets = Vec::with_capacity(hosts.len());
    let mut failures = Vec::new();
    for host in hosts {
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
    let limit = Arc::new(tokio::sync::Semaphore::new(CONNECT_PARALLEL));
    // Shared: every host behind one bastion goes through one connection to it.
    let connector = Arc::new(Connector::with_notices(super::print::notices()));
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
pub(super) fn check_secrets(plan: &Plan) -> Result<(), ApplyError> {
    let missing: Vec<String> = plan
        .secret_env_names()
        .into_iter()
        .filter(|n| std::env::var_os(n).is_none_or(|v| v.is_empty()))
        .map(str::to_string)
        .collect();
    if !missing.is_empty() {
        return Err(ApplyError::MissingSecrets(missing));
    }
    let short = crate::redact::too_short(plan);
    if short.is_empty() { Ok(()) } else { Err(ApplyError::SecretTooShort(short)) }
}

/// What the operator is asked to approve: the batches with their hosts and each host's
/// steps, short, then the question.
fn confirmation(loaded: &LoadedPlan, exec: &ExecutionPlan, rollback: bool) -> String {
    crate::preview::short(exec)
        + &format!(
            "{} {} {} {} of `{}` in {}? [y/N] ",
            if rollback { "roll back" } else { "apply" },
            loaded.source().display_name(),
            if rollback { "on" } else { "to" },
            crate::text::plural(exec.hosts.len(), "host", "hosts"),
            exec.application,
            crate::text::plural(exec.batches.len(), "batch", "batches"),
        )
}

/// Asks on the terminal; anything but yes declines. A stop signal while the question
/// waits declines too (the caller exits with the signal's code).
async fn confirm(question: String, control: &Control) -> Result<(), ApplyError> {
    let mut stderr = crate::redact::stderr();
    let _ = write!(stderr, "{question}");
    let _ = stderr.flush();
    let read = tokio::task::spawn_blocking(|| {
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer).map(|_| answer)
    });
    let answer = tokio::select! {
        answer = read => answer.map_err(|e| ApplyError::Answer(std::io::Error::other(e)))?.map_err(ApplyError::Answer)?,
        () = control.stop.cancelled() => return Err(ApplyError::Declined),
    };
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") { Ok(()) } else { Err(ApplyError::Declined) }
}

/// Answers the executor's pauses on the terminal: the batch's outcome, then the question;
/// anything but yes (or a closed input) stops the run, paused.
async fn answer_pauses(mut questions: tokio::sync::mpsc::UnboundedReceiver<execute::PauseQuestion>) {
    while let Some(q) = questions.recv().await {
        let outcome = if q.failed.is_empty() {
            format!("batch {} of {} done: {} ok", q.after_batch, q.batches, q.hosts.join(", "))
        } else {
            format!(
                "batch {} of {} done: {} FAILED ({})",
                q.after_batch,
                q.batches,
                q.failed.join(", "),
                q.hosts.join(", ")
            )
        };
        let guard: String = q.guard.iter().map(|line| format!("{line}\n")).collect();
        let question = format!("{outcome}\n{guard}continue with batch {} of {}? [y/N] ", q.after_batch + 1, q.batches);
        let yes = tokio::task::spawn_blocking(move || crate::report::ask(&question)).await.ok().flatten();
        let _ = q.answer.send(yes.is_some_and(|a| matches!(a.trim(), "y" | "Y" | "yes" | "YES" | "Yes")));
    }
}

/// Starts the plan's traffic guard at the pre-flight: a service failing already refuses
/// the run before anything changes. A dry run does not probe, and says so.
async fn start_guard(
    loaded: &LoadedPlan,
    balancers: &Balancers,
    dry_run: bool,
) -> Result<Option<crate::guard::Guard>, ApplyError> {
    let Some(settings) = &loaded.plan.guard else { return Ok(None) };
    if dry_run {
        eprintln!("guard: not probed in a dry run");
        return Ok(None);
    }
    let guard = crate::guard::Guard::start(settings, balancers).await.map_err(ApplyError::GuardRefused)?;
    let mut watching = Vec::new();
    if let Some(url) = &settings.http {
        watching.push(format!("probing {url}"));
    }
    if let Some(name) = &settings.balancer {
        watching.push(format!("comparing the error rates of `{name}`'s nodes"));
    }
    eprintln!("guard: ok, {}", watching.join(" and "));
    Ok(Some(guard))
}
