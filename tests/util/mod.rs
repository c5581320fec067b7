//! Shared test helpers: frame builders, traffic scenarios, running the built binary.
#![allow(dead_code)]

pub mod frames;
pub mod scenario;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A fresh temporary directory for one test (removed on drop).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let p =
            std::env::temp_dir().join(format!("phantomnet-test-{}-{}", name, std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self, f: &str) -> PathBuf {
        self.0.join(f)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes frames as a classic Ethernet pcap.
pub fn write_pcap(path: &Path, frames: &[(i64, Vec<u8>)]) {
    let mut w = phantomnet::capture::pcap::PcapWriter::create(path, 1).unwrap();
    for (ts, f) in frames {
        w.write(*ts, f, f.len() as u32).unwrap();
    }
    w.finish().unwrap();
}

/// The phantomnet binary under test.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_phantomnet"));
    c.current_dir(repo());
    c
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the binary, panicking with its stderr if it fails.
pub fn run_ok(args: &[&str]) -> Output {
    let out = bin().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "phantomnet {:?} failed: {}\n{}",
        args,
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `phantomnet --log warn replay PCAP -c CFG --db DB`, panicking with its stderr if it fails.
pub fn replay_ok(pcap: &Path, cfg: &Path, db: &Path) -> Output {
    run_ok(&[
        "--log",
        "warn",
        "replay",
        pcap.to_str().unwrap(),
        "-c",
        cfg.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
    ])
}

/// Parses an EVE file into JSON values.
pub fn read_eve(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad EVE line {l}: {e}")))
        .collect()
}

/// Directory of the shared captures, if the environment names one.
pub fn shared_pcaps() -> Option<PathBuf> {
    std::env::var_os("PHANTOMNET_PCAPS")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
}
