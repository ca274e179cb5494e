//! emrboot's config: a TOML file checked against the schema of design.md.
//!
//! Every error is reported with its line and column, and all of them at once, so an operator
//! fixes a config in one round. A config that parses is fully typed: phases never re-check it.

mod diag;
mod names;
mod parse;
mod schema;
pub mod values;
mod walker;

pub use diag::{ConfigErrors, Diagnostic};
pub use names::{PhaseName, Role};
pub use parse::{DEFAULT_EFS_TIMEOUT_SECS, DEFAULT_STEP_TIMEOUT_SECS, MAX_TAGS};
pub use schema::*;

use std::path::Path;

/// A config is a few KB; past this it is not one, and parsing it would only waste the node's time.
pub const MAX_SIZE: usize = 1 << 20;

/// Parses and validates config text. `file` is only used to label errors.
pub fn parse(file: &str, text: &str) -> Result<Config, ConfigErrors> {
    if text.len() > MAX_SIZE {
        return Err(too_large(file));
    }
    let fail = |errors| ConfigErrors {
        file: file.to_string(),
        errors,
    };
    let doc = match toml_edit::Document::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let mut w = walker::Walker::new(text);
            w.error(e.span(), format!("TOML syntax: {}", e.message().trim()));
            return Err(fail(w.errors));
        }
    };
    let mut w = walker::Walker::new(text);
    let cfg = parse::config(&mut w, doc.as_item());
    if w.errors.is_empty() && PhaseName::ORDER.iter().all(|&p| cfg.common(p).is_none()) {
        // A zero-length download or a truncated file must not pass as a bootstrap that did
        // nothing successfully.
        w.errors.push(Diagnostic {
            line: 1,
            col: 1,
            message: "no phase table ([install], [tags], [efs], [ip_takeover]): nothing to do; \
                      is the file empty or truncated?"
                .into(),
        });
    }
    if w.errors.is_empty() {
        Ok(cfg)
    } else {
        w.errors.sort_by_key(|d| (d.line, d.col));
        Err(fail(w.errors))
    }
}

/// Reads and validates a config file. A file that cannot be read is one error at 1:1.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    let bytes = read_limited(path, MAX_SIZE as u64)
        .map_err(|e| one_error(&file, format!("cannot read: {e}")))?;
    if bytes.len() > MAX_SIZE {
        return Err(too_large(&file));
    }
    let text =
        String::from_utf8(bytes).map_err(|_| one_error(&file, "not UTF-8 text".to_string()))?;
    parse(&file, &text)
}

/// Reads at most `max + 1` bytes of a regular file (so the caller can tell it is too large).
/// Anything else is refused without blocking: opening a FIFO with no writer would wait for
/// ever, and a device or directory is never a config or an info file.
pub fn read_limited(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)?;
    let kind = f.metadata()?.file_type();
    if !kind.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let mut bytes = Vec::new();
    f.take(max + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}

pub fn too_large(file: &str) -> ConfigErrors {
    one_error(
        file,
        format!("larger than {MAX_SIZE} bytes: not an emrboot config"),
    )
}

pub fn one_error(file: &str, message: String) -> ConfigErrors {
    ConfigErrors {
        file: file.to_string(),
        errors: vec![Diagnostic {
            line: 1,
            col: 1,
            message,
        }],
    }
}

#[cfg(test)]
mod tests;
