//! The one place errors are printed and their exit codes chosen: each error type says
//! what went wrong, and `code` maps it to the documented exit code (`exit`).

use std::io::Write;

use crate::balancer::SetupError;
use crate::diagnostic::PlanErrors;
use crate::exit;
use crate::lock::LockError;

/// Why an apply stopped before or instead of running its plan.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Problems of the plan, drawn at their positions by [`report`].
    #[error("the plan has problems")]
    Plan(PlanErrors),
    #[error("error: balancer `{}`: {}; nothing was executed", .0.balancer, .0.message)]
    Balancer(SetupError),
    #[error(
        "error: the environment variable{} {} must be set: the plan reads {} from it; nothing was executed",
        if .0.len() == 1 { "" } else { "s" },
        crate::diagnostic::backticked_list(.0),
        if .0.len() == 1 { "a secret" } else { "secrets" }
    )]
    MissingSecrets(Vec<String>),
    #[error("{}", too_short_message(.0))]
    SecretTooShort(Vec<crate::redact::TooShort>),
    #[error(transparent)]
    Resume(#[from] ResumeError),
    #[error(
        "error: cannot work out how to reach {} of {hosts} hosts; nothing was executed{}",
        failures.len(),
        host_lines(failures)
    )]
    Unresolved { failures: Vec<(String, String)>, hosts: usize },
    #[error(
        "error: refusing to apply without a terminal to confirm on; pass `--yes` to apply unattended (nothing was executed)"
    )]
    NoTerminal,
    #[error("error: cannot read the answer: {0}")]
    Answer(std::io::Error),
    #[error("apply cancelled; nothing was executed")]
    Declined,
    #[error("error: cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error(
        "error: pre-flight: cannot reach {} of {hosts} hosts; nothing was changed{}",
        failures.len(),
        host_lines(failures)
    )]
    Unreachable { failures: Vec<(String, String)>, hosts: usize },
    #[error("error: cannot reach the lock `{place}`: {reason}; nothing was changed")]
    LockUnreachable { place: String, reason: String },
    #[error("{}", lock_message(place, plan, error))]
    Lock { place: String, plan: String, error: Box<LockError> },
    #[error(
        "error: {0}; nothing was changed\n  help: planrun records every run so that it can be resumed; free space or fix the permissions of the folder, then apply again"
    )]
    Journal(crate::journal::WriteError),
    #[error(
        "pre-flight refused the run; nothing was changed\n  help: {}",
        if *unreadable {
            "check that the balancer can be reached from here (its address or `api_url`, the network, its credentials), then apply again"
        } else {
            "put the nodes back in rotation (or wait until they are up), use a smaller `--batch-size`, or pass `--force` to go on anyway"
        }
    )]
    PreflightRefused { unreadable: bool },
    #[error("error: {0}")]
    GuardRefused(String),
    #[error(
        "error: {from} pauses after batch {}, but this run has {}; nothing was executed\n  help: give batch numbers from 1 to {batches}, or pass `--no-pause`",
        pauses.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        crate::text::plural(*batches, "batch", "batches")
    )]
    PauseBeyondBatches { from: &'static str, pauses: Vec<u32>, batches: usize },
    /// A saved plan that is no longer what the plan renders to (`saved::SavedPlan::check`).
    #[error("{0}")]
    SavedPlan(String),
    /// `planrun rollback` has nothing to go back from; the message says why.
    #[error("{0}")]
    NothingToRollBack(String),
    /// The run state's backend (PostgreSQL) cannot be used.
    #[error(transparent)]
    State(crate::state::StateError),
}

/// Why `--resume` cannot continue.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error(
        "error: there is no earlier run of `{plan}` to resume; nothing was executed\n  help: run it without `--resume`"
    )]
    NoEarlierRun { plan: String },
    #[error(
        "error: the last run of `{plan}` ({run}) succeeded: there is nothing to resume; nothing was executed\n  help: run it without `--resume` to roll again"
    )]
    Succeeded { plan: String, run: String },
    #[error(
        "error: the last run of `{plan}` ({run}) was rolled back by run {by}: there is nothing to resume; nothing was executed\n  help: run it without `--resume` to roll again"
    )]
    RolledBack { plan: String, run: String, by: String },
    #[error(
        "error: the plan changed since run {run} started ({}); a resume would mix two plans; nothing was executed\n  help: restore the plan, or pass `--resume-changed` to resume `{plan}` as it is now",
        changes.join("; ")
    )]
    PlanChanged { plan: String, run: String, changes: Vec<String> },
    #[error(
        "error: a resume continues run {run} with the inputs it ran with, and this one differs: {}; nothing was executed\n  help: resume with `{command}` (or leave the overrides out: `--resume` reuses them)",
        differences.join("; ")
    )]
    OtherInputs { plan: String, run: String, differences: Vec<String>, command: String },
}

impl ApplyError {
    /// The documented exit code: bad input found before anything ran is 2; the fleet
    /// not being ready (unreachable, locked, refused by pre-flight) is 1, like a failed
    /// rollout, since the plan itself is fine.
    pub fn code(&self) -> i32 {
        match self {
            ApplyError::Plan(_)
            | ApplyError::Balancer(_)
            | ApplyError::MissingSecrets(_)
            | ApplyError::SecretTooShort(_)
            | ApplyError::Resume(_)
            | ApplyError::Unresolved { .. }
            | ApplyError::NoTerminal
            | ApplyError::Answer(_)
            | ApplyError::PauseBeyondBatches { .. }
            | ApplyError::SavedPlan(_)
            | ApplyError::NothingToRollBack(_)
            | ApplyError::Declined => exit::INVALID_INPUT,
            ApplyError::Runtime(_)
            | ApplyError::Unreachable { .. }
            | ApplyError::LockUnreachable { .. }
            | ApplyError::Lock { .. }
            | ApplyError::Journal(_)
            | ApplyError::PreflightRefused { .. }
            | ApplyError::GuardRefused(_) => exit::ROLLOUT_FAILED,
            ApplyError::State(e) => e.code(),
        }
    }
}

fn too_short_message(short: &[crate::redact::TooShort]) -> String {
    let each: Vec<String> = short
        .iter()
        .map(|s| {
            format!(
                "`{}` is {} character{}; a secret that short cannot be masked",
                s.name,
                s.len,
                if s.len == 1 { "" } else { "s" }
            )
        })
        .collect();
    format!(
        "error: {}; nothing was executed\n  help: a secret of at least {} characters can be masked in every output",
        each.join("; "),
        crate::redact::MIN_SECRET_LEN
    )
}

fn host_lines(failures: &[(String, String)]) -> String {
    failures.iter().map(|(host, why)| format!("\n  {host}: {why}")).collect()
}

fn lock_message(place: &str, plan: &str, error: &LockError) -> String {
    match error {
        LockError::Held(holder) => format!(
            "error: another apply holds the lock `{place}`: {}; nothing was changed\n  help: wait for it to finish; if it is gone for good, `planrun lock release {plan}`",
            holder.describe()
        ),
        LockError::Unknown(at) => format!(
            "error: the lock `{at}` exists but does not say who holds it; nothing was changed\n  help: if no apply is running, `planrun lock release {plan}`"
        ),
        LockError::Failed(e) => format!("error: cannot take the lock `{place}`: {e}; nothing was changed"),
    }
}

/// Prints why an apply stopped; returns its exit code.
pub fn apply_error(error: &ApplyError, color: bool) -> i32 {
    match error {
        ApplyError::Plan(errors) => report(errors, color),
        other => eprintln!("{other}"),
    }
    error.code()
}

/// Notices of the transport (a host key learned, checking turned off), as they happen:
/// above the live view while there is one, on standard error otherwise.
pub fn notices() -> crate::transport::Notices {
    std::sync::Arc::new(|text| crate::report::notice(&text))
}

/// The one place plan problems are printed.
pub fn report(errors: &PlanErrors, color: bool) {
    let text = errors.render(color);
    let count = errors.problems.len();
    let mut stderr = crate::redact::Redacting::new(std::io::stderr().lock());
    let _ = stderr.write_all(text.as_bytes());
    let _ = writeln!(
        stderr,
        "{}: {count} {} found; nothing was executed",
        errors.source().display_name(),
        if count == 1 { "problem" } else { "problems" }
    );
}

/// Says once that lines of the journal could not be read: a crash tore the last line
/// (that step is run again), or the file is damaged.
pub(super) fn warn_unreadable(journal: &crate::journal::Journal, plan: &std::path::Path) {
    if journal.unreadable > 0 {
        eprintln!(
            "warning: {} line{} of the journal in `{}` could not be read (a line torn by a crash, or damage); \
             the steps {} recorded count as not done",
            journal.unreadable,
            if journal.unreadable == 1 { "" } else { "s" },
            crate::journal::state_dir(plan).display(),
            if journal.unreadable == 1 { "it" } else { "they" }
        );
    }
}
