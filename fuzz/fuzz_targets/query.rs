//! Fuzzes the HTTP API's query-string parser with every endpoint's allowed parameters.
#![no_main]

use libfuzzer_sys::fuzz_target;
use phantomnet::serve::parse_query;

fuzz_target!(|data: &[u8]| {
    let Ok(q) = std::str::from_utf8(data) else {
        return;
    };
    for allowed in [
        &["min", "since", "limit"][..],
        &["since", "limit", "sid"][..],
        &["since", "limit"][..],
    ] {
        if let Ok(parsed) = parse_query(q, allowed) {
            assert!(parsed.limit >= 1);
            assert!(parsed.since.is_finite());
        }
    }
});
