//! The exit codes planrun documents, in one place.

/// Everything went as planned.
pub const SUCCESS: i32 = 0;
/// The rollout ran and failed, or was halted.
pub const ROLLOUT_FAILED: i32 = 1;
/// Invalid input (plan, arguments, missing secret): nothing was executed.
pub const INVALID_INPUT: i32 = 2;
/// Paused after a `pause_after` batch, every node back in rotation: `apply --resume`
/// goes on with the next batch.
pub const PAUSED: i32 = 3;
/// Interrupted by Ctrl-C. A run stopped by SIGTERM or SIGHUP exits 128 + the signal
/// (143, 129), as shells report a process killed by it.
pub const INTERRUPTED: i32 = 130;
