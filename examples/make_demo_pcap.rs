//! Writes the bundled demo capture (tests/data/demo.pcap): a minute of a small home LAN
//! with a port scan, SSH brute force, a DNS tunnel, a SQL injection and ARP spoofing.
//! Deterministic: the same bytes every run.
//!
//! With `--flood` it writes the training capture of profile-guided release builds
//! (packaging/pgo.sh) instead: the demo with a spoofed-source SYN flood woven in, so the
//! profile also covers the paths a flood takes once the flow and host tables are full
//! (eviction, a new host per packet, threshold-table turnover). Those are the paths where
//! speed matters most: an attack is when a router's detector must keep up.
//!
//! usage: cargo run --example make_demo_pcap -- [--flood] [OUT.pcap]

#[path = "../tests/util/frames.rs"]
mod frames;
#[path = "../tests/util/scenario.rs"]
mod scenario;

use scenario::{Rng, NAS, SEC, T0};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut flood = false;
    let mut out = None;
    for a in std::env::args().skip(1) {
        match a.as_str() {
            "--flood" => flood = true,
            _ if a.starts_with('-') => {
                return Err(format!(
                    "unknown option {a} (usage: make_demo_pcap [--flood] [OUT.pcap])"
                )
                .into())
            }
            _ => out = Some(a),
        }
    }
    let out = out.unwrap_or_else(|| "tests/data/demo.pcap".into());
    let mut c = scenario::demo();
    if flood {
        // 30 s at 4,000 packets/s: 120,000 spoofed sources, far past the default tables
        // (16,384 flows, 2,048 hosts).
        let mut rng = Rng(0x5eed_cafe_f00d_0002);
        scenario::syn_flood(&mut c, &mut rng, T0 + 20 * SEC, 120_000, 4_000, NAS, 80);
        c.sort();
    }
    let mut w = phantomnet::capture::pcap::PcapWriter::create(std::path::Path::new(&out), 1)?;
    for (ts, f) in &c.frames {
        w.write(*ts, f, f.len() as u32)?;
    }
    w.finish()?;
    println!("{out}: {} frames", c.len());
    Ok(())
}
