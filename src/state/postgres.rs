//! The journal and the rollout lock in PostgreSQL (`state: { postgres: … }`).
//!
//! - Tables live in the schema `planrun`, created and migrated by planrun: versioned
//!   migrations ([`MIGRATIONS`]), each applied once, in one transaction that holds an
//!   advisory lock, so two planruns migrating at once apply each migration once.
//! - A journal record is a row of `planrun.records`: the record as JSONB plus indexed
//!   columns (plan key, run id, host, step, outcome, times), inserted in the order the
//!   file journal appends lines, at the same moments, each insert committed before the
//!   run goes on.
//! - The lock is a session-level advisory lock, keyed by the plan key's hash, held for
//!   the whole run on a session of its own, plus a row of `planrun.locks` naming the
//!   holder. When a planrun dies its session ends and the server frees the lock: there
//!   are no stale locks, only stale rows, which read as a lock whose holder is gone.
//!
//! Runs are keyed by `APPLICATION/FILE` (`shop/production.yaml`): the same plan has the
//! same key on every machine, wherever its folder is.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio_postgres::{Client, Config, config::Host};
use tokio_util::sync::CancellationToken;

use super::StateError;
use crate::journal::{self, Journal, Record, WriteError};
use crate::lock::Holder;
use crate::model::{Plan, PostgresState};

/// The schema's migrations, in order: version, SQL. Never edit one that shipped; add
/// the next.
pub const MIGRATIONS: &[(i32, &str)] = &[(
    1,
    "CREATE TABLE planrun.records (
        id bigserial PRIMARY KEY,
        plan_key text NOT NULL,
        run_id text NOT NULL,
        kind text NOT NULL,
        host text,
        step text,
        phase text,
        outcome text,
        started_at timestamptz,
        ended_at timestamptz,
        recorded_at timestamptz NOT NULL DEFAULT now(),
        record jsonb NOT NULL
    );
    CREATE INDEX records_by_plan ON planrun.records (plan_key, id);
    CREATE INDEX records_by_run ON planrun.records (run_id);
    CREATE INDEX records_by_host ON planrun.records (plan_key, host);
    CREATE TABLE planrun.locks (
        plan_key text PRIMARY KEY,
        backend_pid integer NOT NULL,
        user_name text NOT NULL,
        machine text NOT NULL,
        machine_id text NOT NULL,
        pid bigint NOT NULL,
        started text NOT NULL,
        plan text NOT NULL,
        run_id text NOT NULL,
        message text NOT NULL,
        taken_at timestamptz NOT NULL DEFAULT now()
    );",
)];

/// How long one statement may take: a database that stops answering (a network that
/// drops packets) must not hang a run forever.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Without `connect_timeout` in the URL.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The database of a plan, and the plan's key in it.
#[derive(Clone)]
pub struct Database {
    config: Config,
    /// `HOST:PORT/DATABASE`, for messages: never the URL, which may hold a password.
    pub at: String,
    /// `APPLICATION/FILE`.
    pub key: String,
}

impl Database {
    pub fn of(settings: &PostgresState, plan: &Plan, path: &Path) -> Result<Self, StateError> {
        let env = &settings.url_env;
        let url = std::env::var(env).ok().filter(|v| !v.is_empty()).ok_or_else(|| StateError::UrlUnset(env.clone()))?;
        let mut config: Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| StateError::BadUrl { env: env.clone(), reason: e.to_string() })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("planrun");
        }
        let key = format!("{}/{}", plan.application, journal::plan_key(path));
        Ok(Database { at: display(&config), config, key })
    }

    /// The lock's place in messages, like a fleet lock's `app1:/tmp/planrun-shop.lock`.
    pub fn place(&self) -> String {
        format!("postgres:{}:{}", self.at, self.key)
    }

    /// A new session; its connection is driven by a task of the current runtime.
    pub async fn connect(&self) -> Result<Session, StateError> {
        let tls = tls().map_err(|reason| StateError::Failed { at: self.at.clone(), reason })?;
        let (client, connection) = self
            .config
            .connect(tls)
            .await
            .map_err(|e| StateError::Unreachable { at: self.at.clone(), reason: error_text(&e) })?;
        let ended = CancellationToken::new();
        let guard = ended.clone().drop_guard();
        tokio::spawn(async move {
            let _ended = guard;
            let _ = connection.await;
        });
        Ok(Session { client, ended, at: self.at.clone(), key: self.key.clone() })
    }
}

/// `HOST:PORT/DATABASE` of a connection config, without user or password.
fn display(config: &Config) -> String {
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match host {
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(dir) => format!("{}:{port}", dir.display()),
            }
        })
        .collect();
    let hosts = if hosts.is_empty() { "localhost:5432".to_string() } else { hosts.join(",") };
    let database = config.get_dbname().or(config.get_user()).unwrap_or("postgres");
    format!("{hosts}/{database}")
}

/// rustls, with the certificate checked against the system's trusted roots; used when
/// the server offers TLS (`sslmode=prefer`, the default) or demands it (`require`).
fn tls() -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    use rustls_platform_verifier::ConfigVerifierExt;
    let config = rustls::ClientConfig::with_platform_verifier().map_err(|e| format!("cannot set up TLS: {e}"))?;
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// The error and its causes: tokio-postgres puts the server's own words in a cause.
fn error_text(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!("{}: {}", db.severity(), db.message());
    }
    crate::text::error_chain(error)
}

/// A 64-bit advisory lock key: the first bytes of a SHA-256, so every planrun derives
/// the same key from the same name.
fn advisory_key(name: &str) -> i64 {
    let digest = Sha256::digest(name.as_bytes());
    i64::from_be_bytes(digest[..8].try_into().unwrap_or([0; 8]))
}

/// One session with the database.
pub struct Session {
    client: Client,
    ended: CancellationToken,
    at: String,
    key: String,
}

/// The lock as the database has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockState {
    /// No session holds it; `last` is the row of a holder whose session ended without
    /// removing it (a killed planrun).
    Free { last: Option<Holder> },
    /// Held by the session of backend `backend`; `holder` is `None` in the moment between
    /// taking the lock and writing its row.
    Held { holder: Option<Holder>, backend: i32 },
}

impl Session {
    /// Cancelled when the session ends: the server went away, or someone ended it.
    pub fn ended(&self) -> CancellationToken {
        self.ended.clone()
    }

    fn failed(&self, e: &tokio_postgres::Error) -> StateError {
        if self.client.is_closed() {
            StateError::Unreachable { at: self.at.clone(), reason: error_text(e) }
        } else {
            StateError::Failed { at: self.at.clone(), reason: error_text(e) }
        }
    }

    fn timed_out(&self) -> StateError {
        StateError::Failed { at: self.at.clone(), reason: format!("no answer within {}s", STATEMENT_TIMEOUT.as_secs()) }
    }

    async fn bounded<T>(
        &self,
        query: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, StateError> {
        match tokio::time::timeout(STATEMENT_TIMEOUT, query).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(self.failed(&e)),
            Err(_) => Err(self.timed_out()),
        }
    }

    /// Creates the schema `planrun` and applies the migrations it lacks. Idempotent; two
    /// planruns migrating at once wait for each other on a transaction's advisory lock.
    pub async fn migrate(&mut self) -> Result<(), StateError> {
        let latest = MIGRATIONS.last().map_or(0, |m| m.0);
        let at = self.at.clone();
        let result = tokio::time::timeout(STATEMENT_TIMEOUT * 2, async {
            let tx = self.client.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&advisory_key("planrun migrations")]).await?;
            tx.batch_execute(
                "CREATE SCHEMA IF NOT EXISTS planrun;
                 CREATE TABLE IF NOT EXISTS planrun.migrations (
                     version integer PRIMARY KEY,
                     applied_at timestamptz NOT NULL DEFAULT now()
                 );",
            )
            .await?;
            let row = tx.query_one("SELECT coalesce(max(version), 0) FROM planrun.migrations", &[]).await?;
            let current: i32 = row.get(0);
            if current > latest {
                return Ok(Some(current));
            }
            for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
                tx.batch_execute(sql).await?;
                tx.execute("INSERT INTO planrun.migrations (version) VALUES ($1)", &[version]).await?;
            }
            tx.commit().await?;
            Ok::<_, tokio_postgres::Error>(None)
        })
        .await;
        match result {
            Ok(Ok(None)) => Ok(()),
            Ok(Ok(Some(newer))) => Err(StateError::Failed {
                at,
                reason: format!(
                    "its schema `planrun` is at version {newer}, made by a newer planrun; this one knows versions up to {latest}: upgrade planrun"
                ),
            }),
            Ok(Err(e)) => Err(self.failed(&e)),
            Err(_) => Err(self.timed_out()),
        }
    }

    /// Every record of the plan, in the order written. Rows this planrun cannot read (a
    /// newer planrun's record types) are counted, as the file journal counts torn lines.
    pub async fn read(&self) -> Result<Journal, StateError> {
        let rows = self
            .bounded(
                self.client.query("SELECT record FROM planrun.records WHERE plan_key = $1 ORDER BY id", &[&self.key]),
            )
            .await?;
        let mut unreadable = 0;
        let records = rows
            .iter()
            .filter_map(|row| {
                let record = serde_json::from_value::<Record>(row.get(0)).ok();
                unreadable += usize::from(record.is_none());
                record
            })
            .collect();
        Ok(Journal { records, unreadable })
    }

    /// Appends one record, committed before it returns.
    pub async fn insert(&self, record: &Record) -> Result<(), StateError> {
        let value = serde_json::to_value(record)
            .map_err(|e| StateError::Failed { at: self.at.clone(), reason: format!("cannot encode a record: {e}") })?;
        let text = |name: &str| value.get(name).and_then(|v| v.as_str()).map(str::to_string);
        let kind = text("type").unwrap_or_default();
        let at = text("at");
        let started = text("start").or_else(|| if kind == "run_started" { at.clone() } else { None });
        let ended = text("end").or_else(|| if kind == "run_started" { None } else { at.clone() });
        let outcome = value.get("outcome").and_then(|o| o.as_str().map(String::from).or_else(|| Some(o.to_string())));
        self.bounded(self.client.execute(
            "INSERT INTO planrun.records
                 (plan_key, run_id, kind, host, step, phase, outcome, started_at, ended_at, record)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::timestamptz, $9::text::timestamptz, $10)",
            &[
                &self.key,
                &text("run_id").unwrap_or_default(),
                &kind,
                &text("host"),
                &text("step"),
                &text("phase"),
                &outcome,
                &started,
                &ended,
                &value,
            ],
        ))
        .await
        .map(|_| ())
    }

    /// Takes the lock for this session if it is free: `Ok(None)`; otherwise what holds it.
    pub async fn try_lock(&self, me: &Holder) -> Result<Option<LockState>, StateError> {
        let key = advisory_key(&self.key);
        let row = self.bounded(self.client.query_one("SELECT pg_try_advisory_lock($1)", &[&key])).await?;
        if !row.get::<_, bool>(0) {
            return self.lock_state().await.map(Some);
        }
        let written = self
            .bounded(self.client.execute(
                "INSERT INTO planrun.locks
                     (plan_key, backend_pid, user_name, machine, machine_id, pid, started, plan, run_id, message)
                 VALUES ($1, pg_backend_pid(), $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (plan_key) DO UPDATE SET
                     backend_pid = excluded.backend_pid, user_name = excluded.user_name,
                     machine = excluded.machine, machine_id = excluded.machine_id, pid = excluded.pid,
                     started = excluded.started, plan = excluded.plan, run_id = excluded.run_id,
                     message = excluded.message, taken_at = now()",
                &[
                    &self.key,
                    &me.user,
                    &me.machine,
                    &me.machine_id,
                    &i64::from(me.pid),
                    &me.started,
                    &me.plan,
                    &me.run,
                    &me.message,
                ],
            ))
            .await;
        if let Err(e) = written {
            let _ = self.bounded(self.client.execute("SELECT pg_advisory_unlock($1)", &[&key])).await;
            return Err(e);
        }
        Ok(None)
    }

    /// Who holds the lock, from the server's own lock table and the holder row.
    pub async fn lock_state(&self) -> Result<LockState, StateError> {
        let key = advisory_key(&self.key) as u64;
        // A one-bigint advisory lock shows in pg_locks as classid (high half), objid
        // (low half) and objsubid 1.
        let (high, low) = ((key >> 32) as i64, (key & 0xffff_ffff) as i64);
        let holders = self
            .bounded(self.client.query(
                "SELECT pid FROM pg_locks
                 WHERE locktype = 'advisory' AND granted AND objsubid = 1
                   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                   AND classid = $1::bigint::oid AND objid = $2::bigint::oid",
                &[&high, &low],
            ))
            .await?;
        let backend: Option<i32> = holders.first().map(|row| row.get(0));
        let row = self
            .bounded(self.client.query_opt(
                "SELECT user_name, machine, machine_id, pid, started, plan, run_id, message, backend_pid
                 FROM planrun.locks WHERE plan_key = $1",
                &[&self.key],
            ))
            .await?;
        let holder = row.as_ref().map(|row| Holder {
            user: row.get(0),
            machine: row.get(1),
            machine_id: row.get(2),
            pid: u32::try_from(row.get::<_, i64>(3)).unwrap_or(0),
            started: row.get(4),
            plan: row.get(5),
            run: row.get(6),
            message: row.get(7),
        });
        let row_backend: Option<i32> = row.as_ref().map(|row| row.get(8));
        Ok(match backend {
            None => LockState::Free { last: holder },
            Some(backend) => LockState::Held { holder: holder.filter(|_| row_backend == Some(backend)), backend },
        })
    }

    /// Frees the lock this session holds for `run`: its row, then the advisory lock.
    pub async fn unlock(&self, run: &str) -> Result<(), StateError> {
        self.bounded(self.client.execute(
            "DELETE FROM planrun.locks WHERE plan_key = $1 AND run_id = $2 AND backend_pid = pg_backend_pid()",
            &[&self.key, &run],
        ))
        .await?;
        self.bounded(self.client.execute("SELECT pg_advisory_unlock($1)", &[&advisory_key(&self.key)])).await?;
        Ok(())
    }

    /// Breaks the lock: ends the session holding it (the server then frees it; that
    /// planrun can no longer write its journal and halts before its next batch), and
    /// removes the holder row. Ending another role's session takes a superuser or the
    /// role `pg_signal_backend`.
    pub async fn break_lock(&self) -> Result<(), StateError> {
        if let LockState::Held { backend, .. } = self.lock_state().await? {
            let ended = self.bounded(self.client.query_one("SELECT pg_terminate_backend($1)", &[&backend])).await?;
            if !ended.get::<_, bool>(0) {
                return Err(StateError::Failed {
                    at: self.at.clone(),
                    reason: format!("the server did not end session {backend}, which holds the lock"),
                });
            }
            // pg_terminate_backend only signals: wait for the session to let go.
            for _ in 0..50 {
                if matches!(self.lock_state().await?, LockState::Free { .. }) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        self.bounded(self.client.execute("DELETE FROM planrun.locks WHERE plan_key = $1", &[&self.key])).await?;
        Ok(())
    }
}

/// The journal's records as rows: a [`journal::Store`] for the [`journal::Writer`].
/// Its writes block the calling thread (the reporter's), so that, as with the file,
/// a record is stored before the next event is handled; the caller must be on a
/// multi-threaded runtime, or on none.
pub struct Store {
    session: Arc<Session>,
    handle: tokio::runtime::Handle,
}

impl Store {
    pub fn new(session: Arc<Session>, handle: tokio::runtime::Handle) -> Self {
        Store { session, handle }
    }
}

impl journal::Store for Store {
    fn append(&mut self, record: &Record) -> Result<(), WriteError> {
        let session = self.session.clone();
        let insert = async move { session.insert(record).await };
        let result = match tokio::runtime::Handle::try_current() {
            Ok(_) => tokio::task::block_in_place(|| self.handle.block_on(insert)),
            Err(_) => self.handle.block_on(insert),
        };
        result.map_err(|e| WriteError {
            path: format!("PostgreSQL {} ({})", self.session.at, self.session.key),
            source: std::io::Error::other(match e {
                StateError::Unreachable { reason, .. } | StateError::Failed { reason, .. } => reason,
                other => other.to_string(),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_display_never_shows_the_password() {
        let config: Config = "postgres://alice:hunter22@db.example:6543/deploys".parse().unwrap();
        assert_eq!(display(&config), "db.example:6543/deploys");
        let config: Config = "host=/run/postgresql user=bob".parse().unwrap();
        assert_eq!(display(&config), "/run/postgresql:5432/bob");
    }

    #[test]
    fn advisory_keys_are_stable() {
        assert_eq!(advisory_key("shop/production.yaml"), advisory_key("shop/production.yaml"));
        assert_ne!(advisory_key("shop/production.yaml"), advisory_key("shop/staging.yaml"));
    }
}
