//! The one integration-test binary (ripgrep-style): each file in tests/ is a module here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod util;

mod capture;
mod decode;
mod hardening;
mod intel;
mod judge;
mod live;
mod model;
mod outbox;
mod packaging;
mod pipeline;
mod reload;
mod rules;
mod serve;
mod store;
mod syslog;
mod writer;
