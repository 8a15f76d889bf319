//! Where a plan's run state lives: the journal and the rollout lock.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where the journal and the rollout lock live. Without it: the journal in `.planrun/`
/// beside the plan and the lock on the fleet (see `lock`).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StateSettings {
    /// # PostgreSQL state
    ///
    /// Keep the journal and the lock in a PostgreSQL database shared by every operator
    /// and CI runner: `planrun status`, `apply --resume` and `planrun runs` then work
    /// from any machine with the same plan, and the lock is a PostgreSQL advisory lock
    /// that the server frees when a killed planrun's session ends. planrun creates and
    /// migrates its tables itself, in the schema `planrun`. Replaces `lock`.
    pub postgres: PostgresState,
}

/// The PostgreSQL database holding the journal and the lock.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresState {
    /// # Database URL variable
    ///
    /// The environment variable holding the database's URL,
    /// `postgres://USER:PASSWORD@HOST:PORT/DATABASE?sslmode=require` (or the key-value
    /// form, `host=… user=… dbname=…`). It must be set when the plan is applied; its
    /// value is a secret and never printed. TLS is used when the server offers it
    /// (`sslmode=require` insists), with the certificate checked against the system's
    /// trusted roots.
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"), example = &"PLANRUN_DATABASE_URL")]
    pub url_env: String,
}

pub fn state_example() -> serde_json::Value {
    serde_json::json!({ "postgres": { "url_env": "PLANRUN_DATABASE_URL" } })
}
