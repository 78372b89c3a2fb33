//! rpcapd.ini text from anywhere (an operator's typo, a generated file) into
//! `Config::parse`: it never panics, every diagnostic names a line of the
//! file, and a file that parses renders (`--check-config`) to a text that
//! parses back to the same configuration, rendered the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xrpcapd::settings::Config;

fuzz_target!(|data: &[u8]| {
    // The daemon reads the file as UTF-8 (`read_to_string`) and stops on
    // anything else before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = text.lines().count();
    let parsed = match Config::parse(text, "fuzz.ini") {
        Ok(p) => p,
        Err(e) => {
            assert!(!e.errors.is_empty());
            for d in &e.errors {
                assert!(d.line >= 1 && d.line <= lines, "{d}");
            }
            return;
        }
    };
    for w in &parsed.warnings {
        assert!(w.line >= 1 && w.line <= lines, "{w}");
    }
    let shown = parsed.config.to_string();
    let again = match Config::parse(&shown, "check-config") {
        Ok(p) => p,
        Err(e) => panic!("--check-config output does not parse: {e}\n{shown}"),
    };
    assert_eq!(again.config, parsed.config, "{shown}");
    assert_eq!(again.config.to_string(), shown);
});
