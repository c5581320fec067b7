//! Fuzzes the Suricata-subset rule parser and compiler: any text is skipped line by line
//! with a report, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use phantomnet::rules::{RuleSet, RuleVars};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let vars = RuleVars::default_home();
    let (set, report) = RuleSet::parse_str(text, "fuzz.rules", &vars, 64);
    let _ = (set.len(), set.group_count());
    let _ = report;
});
