//! planrun: a declarative rollout engine.
pub mod yaml;
