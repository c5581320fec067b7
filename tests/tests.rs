//! One integration-test binary (ripgrep-style): each module covers one part of PhantomNet.

mod capture;
