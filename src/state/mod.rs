//! Where a plan's run state lives — its journal and its rollout lock — chosen from the
//! plan's `state`: the journal in `.planrun/` beside the plan and the lock on the fleet
//! (the default), or both in a PostgreSQL database every operator shares (`postgres`).
//! The executor and the reporter never know which: they write through a
//! [`journal::Writer`], whose records go to the file or to a [`journal::Store`].

pub mod postgres;

use std::path::{Path, PathBuf};

use crate::exit;
use crate::journal::{self, Journal};
use crate::model::Plan;

/// A plan's state backend.
pub enum Backend {
    /// `.planrun/` beside the plan; the lock on the fleet.
    Files {
        dir: PathBuf,
    },
    Postgres(Box<postgres::Database>),
}

/// Why the state backend cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "error: the environment variable `{0}` must be set: the plan keeps its journal and lock in the PostgreSQL database whose URL it holds (`state.postgres.url_env`); nothing was executed"
    )]
    UrlUnset(String),
    #[error(
        "error: the environment variable `{env}` does not hold a PostgreSQL URL: {reason}; nothing was executed\n  help: set it to `postgres://USER:PASSWORD@HOST:PORT/DATABASE`"
    )]
    BadUrl { env: String, reason: String },
    #[error(
        "error: cannot reach the PostgreSQL database `{at}` that keeps the plan's journal and lock: {reason}; nothing was changed"
    )]
    Unreachable { at: String, reason: String },
    #[error("error: the PostgreSQL database `{at}`: {reason}; nothing was changed")]
    Failed { at: String, reason: String },
    #[error("error: cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

impl StateError {
    /// A URL that is missing or malformed is bad input (2); a database that cannot be
    /// reached or used is the environment not being ready (1), like an unreachable host.
    pub fn code(&self) -> i32 {
        match self {
            StateError::UrlUnset(_) | StateError::BadUrl { .. } => exit::INVALID_INPUT,
            StateError::Unreachable { .. } | StateError::Failed { .. } | StateError::Runtime(_) => exit::ROLLOUT_FAILED,
        }
    }
}

impl Backend {
    /// The backend of the plan at `path`. PostgreSQL's URL is read from its variable
    /// here, so that a missing one is found before anything runs.
    pub fn of(path: &Path, plan: &Plan) -> Result<Backend, StateError> {
        match plan.state.as_ref() {
            Some(state) => {
                postgres::Database::of(&state.postgres, plan, path).map(|db| Backend::Postgres(Box::new(db)))
            }
            None => Ok(Backend::Files { dir: journal::state_dir(path) }),
        }
    }

    /// Where the journal is, for messages: `plans/.planrun` or
    /// `PostgreSQL 127.0.0.1:5432/planrun (shop/production.yaml)`.
    pub fn describe(&self) -> String {
        match self {
            Backend::Files { dir } => dir.display().to_string(),
            Backend::Postgres(db) => format!("PostgreSQL {} ({})", db.at, db.key),
        }
    }

    /// Every record of the plan (`plan` is the journal's key, [`journal::plan_key`]).
    /// Outside an async runtime: PostgreSQL is read on a runtime of its own.
    pub fn read(&self, plan: &str) -> Result<Journal, StateError> {
        match self {
            Backend::Files { dir } => Ok(journal::read(dir, plan)),
            Backend::Postgres(db) => {
                let runtime =
                    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(StateError::Runtime)?;
                runtime.block_on(async {
                    let mut session = db.connect().await?;
                    session.migrate().await?;
                    session.read().await
                })
            }
        }
    }
}
