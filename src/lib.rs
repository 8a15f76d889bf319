//! planrun: a declarative rollout engine.
//!
//! The data flows one way: `yaml` (text → positioned tree) → `schema` and `validate`
//! (every problem at its position) → `model` (typed plan) → `select` … → `cli` prints.

// First: its `println!`/`eprintln!`/`print!`/`eprint!` shadow std's in every module
// below, so everything the crate prints goes through the process-wide redactor.
#[macro_use]
pub mod redact;

pub mod balancer;
pub mod cli;
pub mod diagnostic;
pub mod discover;
pub mod events;
pub mod execute;
pub mod exit;
pub mod graph;
pub mod init;
pub mod journal;
pub mod lock;
pub mod model;
pub mod preflight;
pub mod preview;
pub mod report;
pub mod ssh_settings;
pub mod text;
pub mod transport;
pub mod validate;
pub mod yaml;

#[cfg(test)]
mod testing;
