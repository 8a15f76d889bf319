//! The plan as Rust types: the single source of truth for the plan format.
//!
//! The JSON schema in `schemas/plan.schema.json` is generated from these types, so doc
//! comments here are what an operator sees in their editor on hover: they are written for
//! operators, not for readers of the code. Every property carries an example for the same
//! reason.
//!
//! These types are only deserialized after the schema accepted the document, so serde's
//! own error messages never reach a user; the schema's do, with positions.

//!
//! One file per part of the plan, so each stays short; every type is re-exported here,
//! so `crate::model::Step` names it wherever it lives.

mod balancer;
pub mod duration;
mod examples;
mod guard;
mod inventory;
mod plan;
mod rollback;
mod rollout;
pub mod select;
mod server;
mod state;
mod step;

pub use balancer::*;
pub use guard::*;
pub use inventory::*;
pub use plan::*;
pub use rollback::*;
pub use rollout::*;
pub use server::*;
pub use state::*;
pub use step::*;
