//! Writes the bundled demo capture (tests/data/demo.pcap): a minute of a small home LAN
//! with a port scan, SSH brute force, a DNS tunnel, a SQL injection and ARP spoofing.
//! Deterministic: the same bytes every run.
//!
//! usage: cargo run --example make_demo_pcap -- tests/data/demo.pcap

#[path = "../tests/util/frames.rs"]
mod frames;
#[path = "../tests/util/scenario.rs"]
mod scenario;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "tests/data/demo.pcap".into());
    let c = scenario::demo();
    let mut w = phantomnet::capture::pcap::PcapWriter::create(std::path::Path::new(&out), 1)?;
    for (ts, f) in &c.frames {
        w.write(*ts, f, f.len() as u32)?;
    }
    w.finish()?;
    println!("{out}: {} frames", c.len());
    Ok(())
}
