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
    if w.errors.is_empty() {
        Ok(cfg)
    } else {
        w.errors.sort_by_key(|d| (d.line, d.col));
        Err(fail(w.errors))
    }
}

/// Reads and validates a config file. A file that cannot be read is one error at 1:1.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    use std::io::Read;
    let file = path.display().to_string();
    let cannot = |e: std::io::Error| one_error(&file, format!("cannot read: {e}"));
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_SIZE as u64 + 1).read_to_end(&mut bytes))
        .map_err(cannot)?;
    if bytes.len() > MAX_SIZE {
        return Err(too_large(&file));
    }
    let text =
        String::from_utf8(bytes).map_err(|_| one_error(&file, "not UTF-8 text".to_string()))?;
    parse(&file, &text)
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
