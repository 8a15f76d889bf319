//! The step graph: what will run, where, in which order, with every template rendered.
//!
//! Built from a validated plan without any I/O. The executor walks `before`, then
//! `batches` in order, then `after`; `graph` holds the same step instances as a petgraph
//! DAG ("must finish before" edges, batch barriers) for `planrun plan --format dot|mermaid`
//! and for checking the order.
//!
//! The stage from a `LoadedPlan` to an `ExecutionPlan`: `types` is what comes out,
//! `build` orders it, `render` fills in the templates (through `template`), `shell`
//! wraps commands, `dag` draws the order, `describe` words a step.

mod build;
mod dag;
pub mod describe;
mod limit;
mod render;
mod run;
pub mod shell;
pub mod template;
mod types;

pub use crate::model::select::server_name;
pub(crate) use build::template_problems;
pub use build::{AdHoc, RunSpec, StepList, ad_hoc, balancer_skipped, batch_sizes, build, build_run, skips_balancer};
pub use run::RunValues;
pub use shell::wrap_command;
pub use types::*;

#[cfg(test)]
mod tests;
