//! Frame builders for tests: well-formed Ethernet/IP/TCP/UDP/ICMP/ARP frames (checksums
//! filled in by etherparse), exotic framings (VLAN, PPPoE, Linux SLL/SLL2, BSD loopback,
//! raw IP, IPv6 extension headers, IPv4 options and fragments) and application payloads
//! (DNS queries, HTTP requests), so decoder, pipeline and demo-capture tests share one source.
//!
//! Every builder returns the complete frame as a `Vec<u8>`. Addresses are plain arrays:
//! MACs `[u8; 6]`, IPv4 `[u8; 4]`, IPv6 `[u8; 16]`. TCP flags use the wire bits of
//! `phantomnet::decode::tcp_flags` (SYN = 0x02, ACK = 0x10, ...).
//! Builders panic on impossible input (a test bug), never on a valid one.
// Not every test binary uses every builder; a builder handed an impossible frame is a test
// bug, so it panics with a message instead of returning errors.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use etherparse::{PacketBuilder, TcpHeader, TcpOptionElement};

pub type Mac = [u8; 6];

/// Two locally administered unicast MACs and the broadcast address.
pub const MAC_A: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x0a];
pub const MAC_B: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x0b];
pub const MAC_BROADCAST: Mac = [0xff; 6];

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_QINQ: u16 = 0x88a8;

/// Length of an untagged Ethernet II header.
pub const ETH_LEN: usize = 14;

const TTL: u8 = 64;
const WINDOW: u16 = 64240;

fn tcp_header(sport: u16, dport: u16, flags: u8, seq: u32, ack: u32) -> TcpHeader {
    let mut h = TcpHeader::new(sport, dport, seq, WINDOW);
    h.fin = flags & 0x01 != 0;
    h.syn = flags & 0x02 != 0;
    h.rst = flags & 0x04 != 0;
    h.psh = flags & 0x08 != 0;
    h.ack = flags & 0x10 != 0;
    h.urg = flags & 0x20 != 0;
    h.ece = flags & 0x40 != 0;
    h.cwr = flags & 0x80 != 0;
    h.acknowledgment_number = ack;
    h
}

fn write(builder: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    builder(&mut out);
    out
}

/// Ethernet II / IPv4 (TTL 64) / TCP (window 64240) with `payload`.
#[allow(clippy::too_many_arguments)]
pub fn eth_ipv4_tcp(
    src_mac: Mac,
    dst_mac: Mac,
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    flags: u8,
    seq: u32,
    ack: u32,
    payload: &[u8],
) -> Vec<u8> {
    write(|out| {
        PacketBuilder::ethernet2(src_mac, dst_mac)
            .ipv4(src, dst, TTL)
            .tcp_header(tcp_header(sport, dport, flags, seq, ack))
            .write(out, payload)
            .expect("valid TCP/IPv4 frame")
    })
}

/// Like `eth_ipv4_tcp`, with a TCP MSS option (kind 2, length 4) — e.g. a SYN.
#[allow(clippy::too_many_arguments)]
pub fn eth_ipv4_tcp_mss(
    src_mac: Mac,
    dst_mac: Mac,
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    flags: u8,
    seq: u32,
    ack: u32,
    mss: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut h = tcp_header(sport, dport, flags, seq, ack);
    h.set_options(&[
        TcpOptionElement::MaximumSegmentSize(mss),
        TcpOptionElement::Noop,
        TcpOptionElement::WindowScale(7),
        TcpOptionElement::SelectiveAcknowledgementPermitted,
    ])
    .expect("options fit");
    write(|out| {
        PacketBuilder::ethernet2(src_mac, dst_mac)
            .ipv4(src, dst, TTL)
            .tcp_header(h)
            .write(out, payload)
            .expect("valid TCP/IPv4 frame")
    })
}

/// Ethernet II / IPv4 / UDP with `payload`.
pub fn eth_ipv4_udp(
    src_mac: Mac,
    dst_mac: Mac,
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    write(|out| {
        PacketBuilder::ethernet2(src_mac, dst_mac)
            .ipv4(src, dst, TTL)
            .udp(sport, dport)
            .write(out, payload)
            .expect("valid UDP/IPv4 frame")
    })
}

/// Ethernet II / IPv4 / ICMP echo request (`reply = false`, type 8) or reply (type 0).
#[allow(clippy::too_many_arguments)]
pub fn eth_ipv4_icmp_echo(
    src_mac: Mac,
    dst_mac: Mac,
    src: [u8; 4],
    dst: [u8; 4],
    reply: bool,
    id: u16,
    seq: u16,
    payload: &[u8],
) -> Vec<u8> {
    write(|out| {
        let b = PacketBuilder::ethernet2(src_mac, dst_mac).ipv4(src, dst, TTL);
        let b = if reply {
            b.icmpv4_echo_reply(id, seq)
        } else {
            b.icmpv4_echo_request(id, seq)
        };
        b.write(out, payload).expect("valid ICMP frame")
    })
}

/// Ethernet II / IPv4 / any ICMP message: `typ`, `code`, the 4 header bytes after the
/// checksum (`rest`, e.g. zeros for destination unreachable) and `payload` (for errors:
/// the quoted IP header + 8 bytes).
#[allow(clippy::too_many_arguments)]
pub fn eth_ipv4_icmp(
    src_mac: Mac,
    dst_mac: Mac,
    src: [u8; 4],
    dst: [u8; 4],
    typ: u8,
    code: u8,
    rest: [u8; 4],
    payload: &[u8],
) -> Vec<u8> {
    let mut body = vec![typ, code, 0, 0];
    body.extend_from_slice(&rest);
    body.extend_from_slice(payload);
    let sum = internet_checksum(&body, 0);
    body[2..4].copy_from_slice(&sum.to_be_bytes());
    ethernet(
        src_mac,
        dst_mac,
        ETHERTYPE_IPV4,
        &ipv4_packet(src, dst, 1, TTL, 0x1234, false, 0, &[], &body),
    )
}

/// Ethernet II / IPv6 (hop limit 64) / TCP.
#[allow(clippy::too_many_arguments)]
pub fn eth_ipv6_tcp(
    src_mac: Mac,
    dst_mac: Mac,
    src: [u8; 16],
    dst: [u8; 16],
    sport: u16,
    dport: u16,
    flags: u8,
    seq: u32,
    ack: u32,
    payload: &[u8],
) -> Vec<u8> {
    write(|out| {
        PacketBuilder::ethernet2(src_mac, dst_mac)
            .ipv6(src, dst, TTL)
            .tcp_header(tcp_header(sport, dport, flags, seq, ack))
            .write(out, payload)
            .expect("valid TCP/IPv6 frame")
    })
}

/// Ethernet II / IPv6 / UDP.
pub fn eth_ipv6_udp(
    src_mac: Mac,
    dst_mac: Mac,
    src: [u8; 16],
    dst: [u8; 16],
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    write(|out| {
        PacketBuilder::ethernet2(src_mac, dst_mac)
            .ipv6(src, dst, TTL)
            .udp(sport, dport)
            .write(out, payload)
            .expect("valid UDP/IPv6 frame")
    })
}

/// Ethernet II / IPv6 / ICMPv6 echo request (type 128) or reply (`reply = true`, 129).
#[allow(clippy::too_many_arguments)]
pub fn eth_ipv6_icmpv6_echo(
    src_mac: Mac,
    dst_mac: Mac,
    src: [u8; 16],
    dst: [u8; 16],
    reply: bool,
    id: u16,
    seq: u16,
    payload: &[u8],
) -> Vec<u8> {
    write(|out| {
        let b = PacketBuilder::ethernet2(src_mac, dst_mac).ipv6(src, dst, TTL);
        let b = if reply {
            b.icmpv6_echo_reply(id, seq)
        } else {
            b.icmpv6_echo_request(id, seq)
        };
        b.write(out, payload).expect("valid ICMPv6 frame")
    })
}

/// Ethernet II / ARP (Ethernet/IPv4, 28 bytes) with operation `op` (1 request, 2 reply).
#[allow(clippy::too_many_arguments)]
pub fn eth_arp(
    src_mac: Mac,
    dst_mac: Mac,
    op: u16,
    sender_mac: Mac,
    sender_ip: [u8; 4],
    target_mac: Mac,
    target_ip: [u8; 4],
) -> Vec<u8> {
    let mut arp = Vec::with_capacity(28);
    arp.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
    arp.extend_from_slice(&op.to_be_bytes());
    arp.extend_from_slice(&sender_mac);
    arp.extend_from_slice(&sender_ip);
    arp.extend_from_slice(&target_mac);
    arp.extend_from_slice(&target_ip);
    ethernet(src_mac, dst_mac, ETHERTYPE_ARP, &arp)
}

/// Broadcast "who has `target_ip`? tell `sender_ip`".
pub fn arp_request(sender_mac: Mac, sender_ip: [u8; 4], target_ip: [u8; 4]) -> Vec<u8> {
    eth_arp(
        sender_mac,
        MAC_BROADCAST,
        1,
        sender_mac,
        sender_ip,
        [0; 6],
        target_ip,
    )
}

/// Unicast "`sender_ip` is at `sender_mac`" to the asker. Spoofing tests send these
/// unsolicited with a changed `sender_mac`.
pub fn arp_reply(
    sender_mac: Mac,
    sender_ip: [u8; 4],
    target_mac: Mac,
    target_ip: [u8; 4],
) -> Vec<u8> {
    eth_arp(
        sender_mac, target_mac, 2, sender_mac, sender_ip, target_mac, target_ip,
    )
}

/// Ethernet II header + `payload` (no padding added).
pub fn ethernet(src_mac: Mac, dst_mac: Mac, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETH_LEN + payload.len());
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// RFC 1071 checksum of `data`, starting from the partial sum `initial`.
pub fn internet_checksum(data: &[u8], initial: u32) -> u16 {
    let mut sum = initial;
    for pair in data.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 packet (header checksum filled in): `options` are appended to the 20-byte header
/// (their length must be a multiple of 4), `more_fragments`/`frag_offset` (bytes, multiple
/// of 8) set the fragment fields, `payload` follows (an L4 header is not added).
#[allow(clippy::too_many_arguments)]
pub fn ipv4_packet(
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    ttl: u8,
    id: u16,
    more_fragments: bool,
    frag_offset: u16,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    assert!(
        options.len() % 4 == 0 && options.len() <= 40,
        "IPv4 options"
    );
    assert!(frag_offset % 8 == 0, "fragment offset is in 8-byte units");
    let hlen = 20 + options.len();
    let total = u16::try_from(hlen + payload.len()).expect("IPv4 packet fits 64 KiB");
    let frag = (frag_offset / 8) | if more_fragments { 0x2000 } else { 0 };
    let mut p = Vec::with_capacity(hlen + payload.len());
    p.push(0x40 | (hlen / 4) as u8);
    p.push(0);
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&frag.to_be_bytes());
    p.extend_from_slice(&[ttl, proto, 0, 0]);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(options);
    let sum = internet_checksum(&p, 0);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// An IPv6 packet whose first next-header is `next_header`; `payload` is everything after
/// the fixed header (extension headers built with `ipv6_ext`/`ipv6_frag`, then L4).
pub fn ipv6_packet(
    src: [u8; 16],
    dst: [u8; 16],
    next_header: u8,
    hop_limit: u8,
    payload: &[u8],
) -> Vec<u8> {
    let plen = u16::try_from(payload.len()).expect("IPv6 payload fits 64 KiB");
    let mut p = Vec::with_capacity(40 + payload.len());
    p.extend_from_slice(&[0x60, 0, 0, 0]);
    p.extend_from_slice(&plen.to_be_bytes());
    p.push(next_header);
    p.push(hop_limit);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(payload);
    p
}

/// A generic IPv6 extension header in 8-octet units (hop-by-hop 0, routing 43, destination
/// options 60, mobility 135, ...): `body` is zero-padded so the header is a multiple of 8.
pub fn ipv6_ext(next_header: u8, body: &[u8]) -> Vec<u8> {
    let len = (2 + body.len()).div_ceil(8) * 8;
    let mut e = vec![0u8; len];
    e[0] = next_header;
    e[1] = u8::try_from(len / 8 - 1).expect("extension header fits 2 KiB");
    e[2..2 + body.len()].copy_from_slice(body);
    e
}

/// An IPv6 Authentication Header (51) with `icv_words` 4-byte words of integrity value.
pub fn ipv6_ah(next_header: u8, spi: u32, seq: u32, icv_words: u8) -> Vec<u8> {
    let len = 12 + 4 * usize::from(icv_words);
    let mut e = vec![0u8; len];
    e[0] = next_header;
    e[1] = u8::try_from(len / 4 - 2).expect("AH fits");
    e[4..8].copy_from_slice(&spi.to_be_bytes());
    e[8..12].copy_from_slice(&seq.to_be_bytes());
    e
}

/// An IPv6 Fragment header (44): `offset` in bytes (multiple of 8).
pub fn ipv6_frag(next_header: u8, offset: u16, more: bool, id: u32) -> Vec<u8> {
    assert!(offset % 8 == 0, "fragment offset is in 8-byte units");
    let field = offset | u16::from(more);
    let mut e = vec![next_header, 0];
    e.extend_from_slice(&field.to_be_bytes());
    e.extend_from_slice(&id.to_be_bytes());
    e
}

/// A bare TCP header (+ raw `options`, padded to 4 bytes) and payload; checksum left zero
/// (PhantomNet does not verify checksums). For IPv6 extension-header and IPv4-option tests.
pub fn tcp_segment(
    sport: u16,
    dport: u16,
    flags: u8,
    seq: u32,
    ack: u32,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let hlen = 20 + options.len().div_ceil(4) * 4;
    assert!(hlen <= 60, "TCP options fit 40 bytes");
    let mut s = Vec::with_capacity(hlen + payload.len());
    s.extend_from_slice(&sport.to_be_bytes());
    s.extend_from_slice(&dport.to_be_bytes());
    s.extend_from_slice(&seq.to_be_bytes());
    s.extend_from_slice(&ack.to_be_bytes());
    s.push(((hlen / 4) as u8) << 4);
    s.push(flags);
    s.extend_from_slice(&WINDOW.to_be_bytes());
    s.extend_from_slice(&[0, 0, 0, 0]);
    s.extend_from_slice(options);
    s.resize(hlen, 0);
    s.extend_from_slice(payload);
    s
}

/// A bare UDP header + payload; checksum left zero.
pub fn udp_datagram(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(8 + payload.len()).expect("UDP datagram fits 64 KiB");
    let mut d = Vec::with_capacity(8 + payload.len());
    d.extend_from_slice(&sport.to_be_bytes());
    d.extend_from_slice(&dport.to_be_bytes());
    d.extend_from_slice(&len.to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(payload);
    d
}

/// Inserts VLAN tags after the MAC addresses of an Ethernet `frame`, outermost first:
/// each tag is (TPID, VLAN id), e.g. `&[(ETHERTYPE_QINQ, 100), (ETHERTYPE_VLAN, 20)]`.
pub fn with_vlan_tags(frame: &[u8], tags: &[(u16, u16)]) -> Vec<u8> {
    let mut f = Vec::with_capacity(frame.len() + 4 * tags.len());
    f.extend_from_slice(&frame[..12]);
    for &(tpid, vid) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
    }
    f.extend_from_slice(&frame[12..]);
    f
}

/// Ethernet II / PPPoE session (0x8864, version 1 type 1) / PPP carrying `ip_packet`
/// (PPP protocol 0x0021 or 0x0057 chosen by its version nibble).
pub fn pppoe_session(src_mac: Mac, dst_mac: Mac, session_id: u16, ip_packet: &[u8]) -> Vec<u8> {
    let ppp_proto: u16 = if ip_packet.first().map(|b| b >> 4) == Some(6) {
        0x0057
    } else {
        0x0021
    };
    let len = u16::try_from(ip_packet.len() + 2).expect("PPPoE payload fits");
    let mut p = vec![0x11, 0x00];
    p.extend_from_slice(&session_id.to_be_bytes());
    p.extend_from_slice(&len.to_be_bytes());
    p.extend_from_slice(&ppp_proto.to_be_bytes());
    p.extend_from_slice(ip_packet);
    ethernet(src_mac, dst_mac, 0x8864, &p)
}

/// The bytes after the Ethernet header of an untagged `frame` (a raw IP packet).
pub fn strip_ethernet(frame: &[u8]) -> Vec<u8> {
    frame[ETH_LEN..].to_vec()
}

/// LINKTYPE_LINUX_SLL (16-byte cooked header, packet type 4 "outgoing", ARPHRD_ETHER)
/// around `payload` with protocol `ethertype`.
pub fn linux_sll(src_mac: Mac, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0, 4, 0, 1, 0, 6];
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// LINKTYPE_LINUX_SLL2 (20-byte cooked header, interface index 2, ARPHRD_ETHER, packet
/// type 0 "to us").
pub fn linux_sll2(src_mac: Mac, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(20 + payload.len());
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 1, 0, 6]);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

/// BSD loopback (LINKTYPE_NULL): 4-byte address `family` (2 IPv4; 24, 28 or 30 IPv6) in
/// big- or little-endian order, then `payload`.
pub fn null_loopback(family: u32, big_endian: bool, payload: &[u8]) -> Vec<u8> {
    let mut f = if big_endian {
        family.to_be_bytes().to_vec()
    } else {
        family.to_le_bytes().to_vec()
    };
    f.extend_from_slice(payload);
    f
}

/// A DNS query message (RD set, one question of class IN) for the dotted `qname`
/// ("" is the root). Panics on a label longer than 63 bytes.
pub fn dns_query(id: u16, qname: &str, qtype: u16) -> Vec<u8> {
    let mut m = Vec::with_capacity(18 + qname.len());
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    m.extend_from_slice(&encode_name(qname));
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&[0, 1]);
    m
}

/// A DNS name in wire form (length-prefixed labels, zero terminator).
pub fn encode_name(name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        assert!(label.len() <= 63, "DNS label over 63 bytes: {label}");
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

/// A DNS message framed for TCP (2-byte length prefix).
pub fn dns_over_tcp(msg: &[u8]) -> Vec<u8> {
    let len = u16::try_from(msg.len()).expect("DNS message fits 64 KiB");
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(msg);
    out
}

/// An HTTP/1.1 GET request payload for `host` and `path`.
pub fn http_get(host: &str, path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: phantomnet-test\r\nAccept: */*\r\n\r\n"
    )
    .into_bytes()
}

/// A classic pcap file (little-endian, microsecond timestamps, snaplen 262144) holding
/// `frames` as (timestamp in µs since the Unix epoch, bytes) with link type `linktype`
/// (1 = Ethernet). Write it to a temporary file to replay a built scenario.
pub fn pcap_file(linktype: u32, frames: &[(i64, &[u8])]) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + frames.iter().map(|(_, f)| 16 + f.len()).sum::<usize>());
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&262_144u32.to_le_bytes());
    out.extend_from_slice(&linktype.to_le_bytes());
    for &(ts, frame) in frames {
        let len = u32::try_from(frame.len()).expect("frame fits a pcap record");
        let secs =
            u32::try_from(ts.div_euclid(1_000_000)).expect("timestamp after 1970, before 2106");
        out.extend_from_slice(&secs.to_le_bytes());
        out.extend_from_slice(&(ts.rem_euclid(1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(frame);
    }
    out
}
