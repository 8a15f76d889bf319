//! planrun: a declarative rollout engine.
//!
//! The data flows one way. `yaml` turns text into a positioned tree; `validate` reads a
//! plan and its bases with bounds, checks it against the schema generated from `model`
//! and runs every semantic check, reporting each problem at its position; `graph` turns
//! the `LoadedPlan` into the `ExecutionPlan` (hosts, batches, rendered steps, the DAG).
//! `cli::apply` connects (`transport`), takes the `lock`, lets `preflight` judge the
//! balancers' view, and hands the plan to `execute`, which drives `transport` and
//! `balancer` and emits `events`; `report` and `journal` consume them; `state` chooses where the journal and the lock
//! live (files and the fleet, or PostgreSQL). `cli` is the only
//! face: it parses arguments, prints, and chooses exit codes.

// First: its `println!`/`eprintln!`/`print!`/`eprint!` shadow std's in every module
// below, so everything the crate prints goes through the process-wide redactor.
#[macro_use]
pub mod redact;

pub mod balancer;
pub mod bounded;
pub mod cli;
pub mod diagnostic;
pub mod discover;
pub mod events;
pub mod execute;
pub mod exit;
pub mod graph;
pub mod guard;
pub mod init;
pub mod inventory;
pub mod journal;
pub mod lock;
pub mod model;
pub mod preflight;
pub mod preview;
pub mod report;
pub mod rollback;
pub mod saved;
pub mod ssh_settings;
pub mod state;
pub mod text;
pub mod transport;
pub mod validate;
pub mod yaml;

#[cfg(test)]
mod testing;
