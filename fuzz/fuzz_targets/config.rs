//! Fuzzes the TOML config loader: any text yields a validated config or an error that
//! names where it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use phantomnet::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, "fuzz.toml") {
        Ok(cfg) => assert!(cfg.validate().is_ok()),
        Err(e) => assert!(e.to_string().contains("fuzz.toml"), "{e}"),
    }
});
