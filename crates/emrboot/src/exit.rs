//! How a command ends: the contract's exit codes with a message.

use std::fmt::Display;

/// A required phase failed.
pub const FAILED: i32 = 1;
/// Usage, config or environment error found before anything changed.
pub const INVALID: i32 = 2;

#[derive(Debug)]
pub struct Exit {
    pub code: i32,
    pub message: String,
}

impl Exit {
    pub fn invalid(message: impl Display) -> Self {
        Exit {
            code: INVALID,
            message: message.to_string(),
        }
    }

    pub fn failed(message: impl Display) -> Self {
        Exit {
            code: FAILED,
            message: message.to_string(),
        }
    }
}

pub type CmdResult = Result<i32, Exit>;
