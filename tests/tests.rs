//! The one integration-test binary (ripgrep-style): each file in tests/ is a module here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod util;

mod capture;
mod decode;
mod model;
mod pipeline;
mod rules;
mod store;
