//! How a command ends: the contract's exit codes with a message.

use std::fmt::Display;

pub use emrboot_runner::exit_code::{FAILED, INVALID, OK};

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
