//! One integration test binary (ripgrep-style): each module below is a test file in tests/.

mod model;
