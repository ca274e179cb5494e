use crate::exit::{CmdResult, INVALID, OK};
use std::path::Path;

/// Prints every error as FILE:LINE:COL: message; exit 2 if there is any.
pub fn validate(file: &Path) -> CmdResult {
    match emrboot_config::load(file) {
        Ok(_) => {
            println!("{}: valid", file.display());
            Ok(OK)
        }
        Err(errors) => {
            println!("{errors}");
            Ok(INVALID)
        }
    }
}
