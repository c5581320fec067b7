//! The one integration-test binary (ripgrep-style): each file in tests/ is a module here.

mod util;

mod capture;
mod decode;
mod rules;
