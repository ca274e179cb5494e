//! The contract's exit codes (design.md), named once: the runner decides them, the CLI returns
//! them.

/// Every required phase succeeded.
pub const OK: i32 = 0;
/// A required phase failed, or the run was interrupted.
pub const FAILED: i32 = 1;
/// Usage, config or environment error found before anything changed.
pub const INVALID: i32 = 2;
