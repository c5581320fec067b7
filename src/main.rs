//! Thin entry point: parse the command line, run, map errors to an exit code.

fn main() {
    println!("phantomnet {}", env!("CARGO_PKG_VERSION"));
}
