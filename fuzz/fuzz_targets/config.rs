//! The config parser and validator on any bytes: never a panic, and every error it reports
//! carries a line and column inside the text (what `validate` prints).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = emrboot_config::parse("fuzz.toml", text) {
        assert!(!e.errors.is_empty(), "an error without a diagnostic");
        let lines = text.split('\n').count().max(1);
        for d in &e.errors {
            assert!(d.line >= 1 && d.line <= lines, "line {} of {lines}", d.line);
            assert!(d.col >= 1, "column {}", d.col);
        }
    }
});
