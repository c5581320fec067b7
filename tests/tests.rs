//! The integration test binary: runs the built `phantomnet` and the library end to end.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod store;
