//! planrun: a declarative rollout engine.
