//! Fuzzes the frame decoder: every link type, any bytes, any wire length; then the DNS name
//! reader and payload slicing on whatever the decoder reported.
#![no_main]

use libfuzzer_sys::fuzz_target;
use phantomnet::decode::{decode, dns_qname, LinkType};

const LINKS: [LinkType; 7] = [
    LinkType::Ethernet,
    LinkType::LinuxSll,
    LinkType::LinuxSll2,
    LinkType::RawIp,
    LinkType::Ipv4,
    LinkType::Ipv6,
    LinkType::Null,
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, frame)) = data.split_first() else {
        return;
    };
    let link = LINKS[usize::from(sel) % LINKS.len()];
    // The high bits pick a wire length: as captured, longer (snaplen cut) or bogus shorter.
    let wire_len = match sel >> 6 {
        0 => frame.len() as u32,
        1 => frame.len() as u32 + 1500,
        2 => (frame.len() as u32) / 2,
        _ => u32::MAX,
    };
    let meta = decode(link, frame, wire_len);
    let _ = meta.payload(frame);
    let _ = meta.is_syn_only();
    if let Some(dns) = meta.dns {
        let mut out = [0u8; 256];
        let name = dns_qname(frame, &dns, &mut out);
        assert!(name.len() <= 256);
    }
});
