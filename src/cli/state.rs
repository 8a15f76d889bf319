//! The face of the PostgreSQL state backend (`state::postgres`): taking, releasing and
//! showing its lock, with the wording of the fleet lock's (`lock`, `status`).

use std::sync::Arc;
use std::time::Duration;

use super::args::LockAction;
use super::print::ApplyError;
use crate::exit;
use crate::journal;
use crate::lock::{Holder, LockError};
use crate::state::postgres::{Database, LockState, Session, Store};

/// The lock a run holds in PostgreSQL: its session, and a second session for the
/// journal, so that a journal write never waits behind a lock query.
pub(super) struct PgLock {
    lock: Session,
    journal: Arc<Session>,
    /// Halts the run when the lock's session ends before the run does.
    watcher: tokio::task::JoinHandle<()>,
    pub place: String,
}

impl PgLock {
    /// The journal's writer for this run.
    pub fn journal(&self, run_id: &str, plan_key: &str) -> journal::Writer {
        let store = Store::new(self.journal.clone(), tokio::runtime::Handle::current());
        journal::Writer::to_store(Box::new(store), run_id, plan_key)
    }
}

/// How often `--lock-wait` asks whether the lock is free.
const LOCK_POLL: Duration = Duration::from_secs(2);

/// Connects, migrates the schema and takes the lock, waiting up to `wait` for a holder
/// to finish. A database that cannot be reached stops the run here, before anything
/// changed.
pub(super) async fn take_lock(
    db: &Database,
    me: &Holder,
    wait: Option<Duration>,
    halt: crate::execute::Halt,
    plan: &str,
) -> Result<PgLock, ApplyError> {
    let place = db.place();
    let mut lock = db.connect().await.map_err(ApplyError::State)?;
    lock.migrate().await.map_err(ApplyError::State)?;
    let journal = Arc::new(db.connect().await.map_err(ApplyError::State)?);
    let deadline = wait.map(|wait| tokio::time::Instant::now() + wait);
    let mut shown: Option<Holder> = None;
    // The moment between another run taking the lock and writing its row, or between
    // a holder letting go and our asking who holds it: asked again, a few times.
    let mut unsettled = 0;
    loop {
        let waiting = deadline.is_some_and(|d| tokio::time::Instant::now() < d);
        match lock.try_lock(me).await.map_err(ApplyError::State)? {
            None => break,
            Some(LockState::Held { holder: Some(holder), .. }) if waiting => {
                if shown.as_ref() != Some(&holder) {
                    eprintln!("waiting for the lock `{place}`: held by {}", holder.describe());
                    shown = Some(holder);
                }
                tokio::time::sleep(LOCK_POLL).await;
            }
            Some(LockState::Held { holder: Some(holder), .. }) => {
                return Err(ApplyError::Lock { place, plan: plan.into(), error: Box::new(LockError::Held(holder)) });
            }
            Some(_) if unsettled < 10 || waiting => {
                unsettled += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Some(_) => {
                return Err(ApplyError::Lock {
                    place: place.clone(),
                    plan: plan.into(),
                    error: Box::new(LockError::Unknown(place)),
                });
            }
        }
    }
    let ended = lock.ended();
    let lost = place.clone();
    let watcher = tokio::spawn(async move {
        ended.cancelled().await;
        let reason = format!(
            "the PostgreSQL session holding the lock `{lost}` ended (the database went away, or `planrun lock release`): nothing new is started, since another apply may now take the lock"
        );
        crate::report::notice(&format!("error: {reason}"));
        halt.request(reason);
    });
    Ok(PgLock { lock, journal, watcher, place })
}

/// Frees the lock at the end of the run. A session that already ended has lost the
/// lock to the server, which freed it: nothing is left to release.
pub(super) async fn release(held: &PgLock, run_id: &str) -> Result<(), String> {
    held.watcher.abort();
    if held.lock.ended().is_cancelled() {
        return Ok(());
    }
    held.lock.unlock(run_id).await.map_err(|e| e.to_string())
}

/// `planrun lock status|release` for a plan whose lock is in PostgreSQL.
pub(super) fn lock(action: LockAction, db: &Database) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return exit::ROLLOUT_FAILED;
        }
    };
    let place = db.place();
    runtime.block_on(async {
        let result = async {
            let mut session = db.connect().await?;
            session.migrate().await?;
            let state = session.lock_state().await?;
            let holder = describe(&state);
            match action {
                LockAction::Status => println!("lock `{place}`: {holder}"),
                LockAction::Release => match &state {
                    LockState::Free { last: None } => println!("lock `{place}`: already free"),
                    LockState::Free { last: Some(_) } => {
                        session.break_lock().await?;
                        println!("lock `{place}`: already free; removed the row of its last holder ({holder})");
                    }
                    LockState::Held { .. } => {
                        session.break_lock().await?;
                        println!(
                            "lock `{place}`: released (it was {holder}); that session was ended, so its apply halts before its next batch"
                        );
                    }
                },
            }
            Ok::<_, crate::state::StateError>(())
        }
        .await;
        match result {
            Ok(()) => exit::SUCCESS,
            Err(e) => {
                eprintln!("{e}");
                e.code()
            }
        }
    })
}

fn describe(state: &LockState) -> String {
    match state {
        LockState::Free { last: None } => "free".into(),
        LockState::Free { last: Some(h) } => {
            format!("free; its last holder, {}, is gone (its database session ended)", h.describe())
        }
        LockState::Held { holder: Some(h), backend } => {
            format!("held by {} (PostgreSQL session {backend})", h.describe())
        }
        LockState::Held { holder: None, backend } => {
            format!("held by PostgreSQL session {backend}, holder unknown (it has not written its row)")
        }
    }
}
