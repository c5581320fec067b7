//! Raw frame bytes → `PacketMeta`, a small `Copy` summary every later stage reads.
//!
//! Decoding never allocates and never panics: every field access is preceded by a length
//! check. A truncated or malformed layer stops decoding at that layer, records a
//! `DecodeError` in the meta (what was decoded above it stays usable) and is counted by
//! kind in the engine's statistics. Checksums are not verified: offload makes bad ones
//! common on the capturing host.
//!
//! Layers: Ethernet II (802.3/LLC frames end at `L3::None`), stacked VLAN tags (0x8100,
//! 0x88a8, 0x9100), PPPoE sessions, Linux SLL/SLL2, raw IP, BSD loopback; ARP
//! (Ethernet/IPv4 only, other ARP is `L3::Other(0x0806)`); IPv4 (options, fragments, Ethernet
//! padding trimmed to the total length, snaplen-cut packets decoded as far as they go);
//! IPv6 with up to `MAX_IPV6_EXT_HEADERS` extension headers; TCP (MSS option), UDP,
//! ICMP/ICMPv6; the first question of DNS/mDNS/LLMNR messages over UDP and TCP.
//!
//! Choices worth knowing:
//! - IPv4 total length 0 is TCP segmentation offload on the capturing host, not an error:
//!   the packet runs to the end of the capture. Likewise IPv6 payload length 0.
//! - Only a non-first fragment (offset > 0) goes without L4; the first fragment's L4 header
//!   is decoded. An IPv6 "atomic" fragment (offset 0, M clear) is not `is_fragment`, but its
//!   identification is in `ip_id`.
//! - A DNS message without a question (mDNS announcements) gives `dns: None` and no error.
//!   The entropy is over raw bytes, so case matters ("0x20" randomised names score higher).
//! - Non-first TCP segments of a DNS-over-TCP stream are parsed as if they started a
//!   message; they end in `DnsMalformed` (counted, nothing else lost).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

/// Packet time: microseconds since the Unix epoch, taken from the frame's timestamp.
pub type Micros = i64;

/// Link-layer framing of a capture or a live socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkType {
    /// DLT_EN10MB (1).
    Ethernet,
    /// LINKTYPE_LINUX_SLL (113): 16-byte "cooked" header.
    LinuxSll,
    /// LINKTYPE_LINUX_SLL2 (276): 20-byte "cooked" header.
    LinuxSll2,
    /// LINKTYPE_RAW (101) / DLT_RAW (12 or 14): IPv4 or IPv6 by version nibble.
    RawIp,
    /// LINKTYPE_IPV4 (228).
    Ipv4,
    /// LINKTYPE_IPV6 (229).
    Ipv6,
    /// LINKTYPE_NULL (0) / LINKTYPE_LOOP (108): 4-byte address family (BSD loopback).
    Null,
}

impl LinkType {
    /// Maps a pcap/pcapng link-type number; `None` for link types we do not decode.
    pub fn from_pcap(linktype: u32) -> Option<LinkType> {
        match linktype {
            1 => Some(LinkType::Ethernet),
            113 => Some(LinkType::LinuxSll),
            276 => Some(LinkType::LinuxSll2),
            101 | 12 | 14 => Some(LinkType::RawIp),
            228 => Some(LinkType::Ipv4),
            229 => Some(LinkType::Ipv6),
            0 | 108 => Some(LinkType::Null),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            LinkType::Ethernet => "Ethernet",
            LinkType::LinuxSll => "Linux SLL",
            LinkType::LinuxSll2 => "Linux SLL2",
            LinkType::RawIp => "raw IP",
            LinkType::Ipv4 => "raw IPv4",
            LinkType::Ipv6 => "raw IPv6",
            LinkType::Null => "BSD loopback",
        }
    }
}

/// Why decoding stopped early. Tiny and `Copy`: counted, never formatted per packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    LinkTruncated,
    VlanTruncated,
    PppoeTruncated,
    ArpTruncated,
    Ipv4Truncated,
    Ipv4BadHeader,
    Ipv6Truncated,
    Ipv6ExtTruncated,
    TcpTruncated,
    TcpBadOffset,
    UdpTruncated,
    IcmpTruncated,
    DnsMalformed,
    /// An IPv6 header whose version nibble is not 6 (e.g. under EtherType 0x86DD).
    Ipv6BadHeader,
}

impl DecodeError {
    pub const COUNT: usize = 14;
    pub const ALL: [DecodeError; DecodeError::COUNT] = [
        DecodeError::LinkTruncated,
        DecodeError::VlanTruncated,
        DecodeError::PppoeTruncated,
        DecodeError::ArpTruncated,
        DecodeError::Ipv4Truncated,
        DecodeError::Ipv4BadHeader,
        DecodeError::Ipv6Truncated,
        DecodeError::Ipv6ExtTruncated,
        DecodeError::TcpTruncated,
        DecodeError::TcpBadOffset,
        DecodeError::UdpTruncated,
        DecodeError::IcmpTruncated,
        DecodeError::DnsMalformed,
        DecodeError::Ipv6BadHeader,
    ];

    /// Stable index for counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Stable snake_case name used in /metrics, /api/status and logs.
    pub fn name(self) -> &'static str {
        match self {
            DecodeError::LinkTruncated => "link_truncated",
            DecodeError::VlanTruncated => "vlan_truncated",
            DecodeError::PppoeTruncated => "pppoe_truncated",
            DecodeError::ArpTruncated => "arp_truncated",
            DecodeError::Ipv4Truncated => "ipv4_truncated",
            DecodeError::Ipv4BadHeader => "ipv4_bad_header",
            DecodeError::Ipv6Truncated => "ipv6_truncated",
            DecodeError::Ipv6ExtTruncated => "ipv6_ext_truncated",
            DecodeError::TcpTruncated => "tcp_truncated",
            DecodeError::TcpBadOffset => "tcp_bad_offset",
            DecodeError::UdpTruncated => "udp_truncated",
            DecodeError::IcmpTruncated => "icmp_truncated",
            DecodeError::DnsMalformed => "dns_malformed",
            DecodeError::Ipv6BadHeader => "ipv6_bad_header",
        }
    }
}

/// What sits above the link layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum L3 {
    /// Nothing decodable (truncated link header, or LLC/STP and the like).
    #[default]
    None,
    Arp,
    Ipv4,
    Ipv6,
    /// An EtherType we do not decode.
    Other(u16),
}

/// TCP flag bits as on the wire (byte 13 of the header).
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TcpInfo {
    pub flags: u8,
    pub seq: u32,
    pub ack: u32,
    pub window: u16,
    /// MSS option value; `None` when the segment carries no MSS option.
    pub mss: Option<u16>,
    /// Header length in bytes (data offset × 4).
    pub header_len: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct IcmpInfo {
    pub typ: u8,
    pub code: u8,
    /// Identifier and sequence of echo request/reply (0 for other types).
    pub id: u16,
    pub seq: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpInfo {
    pub op: u16,
    pub sender_mac: [u8; 6],
    pub sender_ip: Ipv4Addr,
    pub target_mac: [u8; 6],
    pub target_ip: Ipv4Addr,
}

impl Default for ArpInfo {
    fn default() -> Self {
        ArpInfo {
            op: 0,
            sender_mac: [0; 6],
            sender_ip: Ipv4Addr::UNSPECIFIED,
            target_mac: [0; 6],
            target_ip: Ipv4Addr::UNSPECIFIED,
        }
    }
}

/// The question of a DNS message (UDP or TCP port 53, also mDNS/LLMNR ports).
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct DnsInfo {
    pub id: u16,
    pub is_response: bool,
    pub qtype: u16,
    /// Offset of the encoded QNAME within the frame (use `dns_qname` to read it).
    pub qname_off: u32,
    /// Length of the name in dotted text form ("www.example.com" = 15).
    pub qname_len: u16,
    pub labels: u8,
    /// Shannon entropy (bits per character) of the name's characters, dots excluded.
    pub qname_entropy: f32,
}

/// Fragment information of an IPv4 packet or an IPv6 packet with a Fragment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FragInfo {
    /// True when this packet is part of a fragmented datagram.
    pub is_fragment: bool,
    pub more_fragments: bool,
    /// Offset in bytes.
    pub offset: u32,
}

/// Everything later stages need from one frame. `Copy`, no borrowed data: payload bytes are
/// addressed by offsets into the frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PacketMeta {
    /// Frame length on the wire (may exceed the captured length).
    pub wire_len: u32,
    /// Captured length (the slice decoded).
    pub cap_len: u32,
    /// Ethernet addresses; zero where the link type has none (SLL has only the source).
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// Outermost 802.1Q VLAN id; 0 when untagged.
    pub vlan: u16,
    /// Number of VLAN tags (2 for QinQ).
    pub vlan_depth: u8,
    pub pppoe: bool,
    pub l3: L3,
    /// IP addresses (`0.0.0.0` unless `l3` is Ipv4/Ipv6).
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Offset of the IP header in the frame.
    pub l3_off: u32,
    /// Upper-layer protocol after IPv6 extension headers.
    pub ip_proto: u8,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// IPv4 identification, or IPv6 fragment identification.
    pub ip_id: u32,
    /// IPv4 header has options.
    pub ip_options: bool,
    /// Number of IPv6 extension headers walked.
    pub ipv6_ext_headers: u8,
    pub frag: FragInfo,
    /// Offset of the L4 header in the frame (0 if none decoded).
    pub l4_off: u32,
    /// L4 ports (0 when the protocol has none).
    pub src_port: u16,
    pub dst_port: u16,
    pub tcp: TcpInfo,
    pub icmp: IcmpInfo,
    pub arp: ArpInfo,
    pub dns: Option<DnsInfo>,
    /// L4 payload location in the frame (TCP/UDP data, ICMP body after the 8-byte header).
    pub payload_off: u32,
    pub payload_len: u32,
    /// Why decoding stopped early, if it did.
    pub error: Option<DecodeError>,
}

impl Default for PacketMeta {
    fn default() -> Self {
        PacketMeta {
            wire_len: 0,
            cap_len: 0,
            src_mac: [0; 6],
            dst_mac: [0; 6],
            vlan: 0,
            vlan_depth: 0,
            pppoe: false,
            l3: L3::None,
            src: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            l3_off: 0,
            ip_proto: 0,
            ttl: 0,
            ip_id: 0,
            ip_options: false,
            ipv6_ext_headers: 0,
            frag: FragInfo::default(),
            l4_off: 0,
            src_port: 0,
            dst_port: 0,
            tcp: TcpInfo::default(),
            icmp: IcmpInfo::default(),
            arp: ArpInfo::default(),
            dns: None,
            payload_off: 0,
            payload_len: 0,
            error: None,
        }
    }
}

impl PacketMeta {
    /// True for IPv4 and IPv6 packets.
    pub fn is_ip(&self) -> bool {
        matches!(self.l3, L3::Ipv4 | L3::Ipv6)
    }

    /// The L4 payload bytes of `frame` (the frame this meta was decoded from).
    pub fn payload<'a>(&self, frame: &'a [u8]) -> &'a [u8] {
        let start = self.payload_off as usize;
        let end = start.saturating_add(self.payload_len as usize);
        frame.get(start..end).unwrap_or(&[])
    }

    /// True for a TCP segment with SYN set and ACK clear.
    pub fn is_syn_only(&self) -> bool {
        self.ip_proto == IPPROTO_TCP
            && self.tcp.flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN
    }
}

/// Most IPv6 extension headers walked before giving up. Real traffic carries one or two;
/// a longer chain is an evasion or DoS attempt (RFC 7112 lets middleboxes drop it). Beyond the
/// bound decoding stops with `Ipv6ExtTruncated`, `ip_proto` names the header it stopped at and
/// no L4 is decoded.
pub const MAX_IPV6_EXT_HEADERS: u8 = 16;

/// UDP/TCP ports whose payload is parsed as DNS: DNS, mDNS, LLMNR.
pub const DNS_PORTS: [u16; 3] = [53, 5353, 5355];

/// Longest encoded DNS name (RFC 1035 §2.3.4), including the root label's zero byte.
const DNS_MAX_NAME: usize = 255;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_PPPOE_SESSION: u16 = 0x8864;
const PPP_IPV4: u16 = 0x0021;
const PPP_IPV6: u16 = 0x0057;

type Layer = Result<(), DecodeError>;

/// Decodes one frame of the given link type. Never panics, never allocates.
///
/// Every field of the returned meta is filled as far as the frame allows; `error` names the
/// layer where decoding stopped early (a truncated or malformed header), with everything
/// decoded above that layer kept. Unknown protocols are not errors: they end decoding with
/// `L3::Other`/`L3::None` or an `ip_proto` without L4 details.
///
/// The packet loop uses [`decode_into`] instead: returned by value, even inlined, the
/// 160-byte `PacketMeta` was still copied once more on every frame (a `memcpy` call).
#[inline]
pub fn decode(link: LinkType, frame: &[u8], wire_len: u32) -> PacketMeta {
    let mut m = PacketMeta::default();
    decode_into(link, frame, wire_len, &mut m);
    m
}

/// As [`decode`], into the caller's `m` (everything in it is replaced).
#[inline]
pub fn decode_into(link: LinkType, frame: &[u8], wire_len: u32, m: &mut PacketMeta) {
    *m = PacketMeta {
        wire_len,
        cap_len: u32::try_from(frame.len()).unwrap_or(u32::MAX),
        ..PacketMeta::default()
    };
    decode_layers(link, frame, m);
}

/// Fills `m` (fresh, lengths set) from the frame's layers.
fn decode_layers(link: LinkType, frame: &[u8], m: &mut PacketMeta) {
    let res = match link {
        LinkType::Ethernet => ethernet(m, frame),
        LinkType::LinuxSll => linux_sll(m, frame),
        LinkType::LinuxSll2 => linux_sll2(m, frame),
        LinkType::RawIp => raw_ip(m, frame),
        LinkType::Ipv4 => ipv4(m, frame, 0),
        LinkType::Ipv6 => ipv6(m, frame, 0),
        LinkType::Null => null_loopback(m, frame),
    };
    if let Err(e) = res {
        m.error = Some(e);
    }
}

/// Writes the DNS query name of `dns` (decoded from `frame`) in dotted text form into `out`
/// and returns the written part. Labels are copied as raw bytes; compression pointers are
/// not followed (a query's name is never compressed). Never panics.
pub fn dns_qname<'a>(frame: &[u8], dns: &DnsInfo, out: &'a mut [u8; 256]) -> &'a [u8] {
    let mut pos = dns.qname_off as usize;
    let mut n = 0usize;
    while let Some(&len) = frame.get(pos) {
        if len == 0 || len & 0xc0 != 0 {
            break;
        }
        let len = usize::from(len);
        let Some(label) = frame.get(pos + 1..pos + 1 + len) else {
            break;
        };
        let dot = usize::from(n > 0);
        if n + dot + len > out.len() {
            break;
        }
        if let Some(d) = out.get_mut(n).filter(|_| dot == 1) {
            *d = b'.';
        }
        for (d, &c) in out.iter_mut().skip(n + dot).zip(label) {
            *d = c;
        }
        n += dot + len;
        pos += 1 + len;
    }
    out.get(..n).unwrap_or(&[])
}

// ---- bounds-checked reads: a fixed-size view or nothing ----

/// The `N` bytes of `b` at `off`, or `None` when they are not all there. Indexing the
/// returned array with constants cannot panic (out-of-range constants do not compile).
#[inline(always)]
fn chunk<const N: usize>(b: &[u8], off: usize) -> Option<&[u8; N]> {
    b.get(off..)?.first_chunk::<N>()
}

#[inline(always)]
fn be16(hi: u8, lo: u8) -> u16 {
    u16::from_be_bytes([hi, lo])
}

#[inline(always)]
fn mac_at(b: &[u8], off: usize) -> [u8; 6] {
    chunk::<6>(b, off).copied().unwrap_or([0; 6])
}

#[inline(always)]
fn off32(off: usize) -> u32 {
    u32::try_from(off).unwrap_or(u32::MAX)
}

// ---- link layer ----

fn ethernet(m: &mut PacketMeta, f: &[u8]) -> Layer {
    let h = chunk::<14>(f, 0).ok_or(DecodeError::LinkTruncated)?;
    m.dst_mac = mac_at(h, 0);
    m.src_mac = mac_at(h, 6);
    ether_payload(m, f, 14, be16(h[12], h[13]))
}

/// LINKTYPE_LINUX_SLL: packet type(2) ARPHRD(2) address length(2) address(8) protocol(2).
fn linux_sll(m: &mut PacketMeta, f: &[u8]) -> Layer {
    let h = chunk::<16>(f, 0).ok_or(DecodeError::LinkTruncated)?;
    if be16(h[4], h[5]) == 6 {
        m.src_mac = mac_at(h, 6);
    }
    ether_payload(m, f, 16, be16(h[14], h[15]))
}

/// LINKTYPE_LINUX_SLL2: protocol(2) reserved(2) ifindex(4) ARPHRD(2) packet type(1)
/// address length(1) address(8).
fn linux_sll2(m: &mut PacketMeta, f: &[u8]) -> Layer {
    let h = chunk::<20>(f, 0).ok_or(DecodeError::LinkTruncated)?;
    if h[11] == 6 {
        m.src_mac = mac_at(h, 12);
    }
    ether_payload(m, f, 20, be16(h[0], h[1]))
}

fn raw_ip(m: &mut PacketMeta, f: &[u8]) -> Layer {
    match f.first().map(|b| b >> 4) {
        None => Err(DecodeError::LinkTruncated),
        Some(4) => ipv4(m, f, 0),
        Some(6) => ipv6(m, f, 0),
        Some(_) => Ok(()),
    }
}

/// BSD loopback: a 4-byte address family in the capturing host's byte order.
fn null_loopback(m: &mut PacketMeta, f: &[u8]) -> Layer {
    let h = chunk::<4>(f, 0).ok_or(DecodeError::LinkTruncated)?;
    let le = u32::from_le_bytes(*h);
    let be = u32::from_be_bytes(*h);
    if le == 2 || be == 2 {
        ipv4(m, f, 4)
    } else if matches!(le, 24 | 28 | 30) || matches!(be, 24 | 28 | 30) {
        ipv6(m, f, 4)
    } else {
        Ok(())
    }
}

/// Whatever follows an EtherType (or SLL protocol) field at `off`: VLAN tags, then the
/// network layer.
fn ether_payload(m: &mut PacketMeta, f: &[u8], mut off: usize, mut ethertype: u16) -> Layer {
    // 802.1Q, 802.1ad and the pre-standard 0x9100 QinQ tag; each tag consumes 4 bytes, so
    // the loop ends with the frame.
    while matches!(ethertype, 0x8100 | 0x88a8 | 0x9100) {
        let t = chunk::<4>(f, off).ok_or(DecodeError::VlanTruncated)?;
        if m.vlan_depth == 0 {
            m.vlan = be16(t[0], t[1]) & 0x0fff;
        }
        m.vlan_depth = m.vlan_depth.saturating_add(1);
        ethertype = be16(t[2], t[3]);
        off += 4;
    }
    match ethertype {
        ETHERTYPE_IPV4 => ipv4(m, f, off),
        ETHERTYPE_IPV6 => ipv6(m, f, off),
        ETHERTYPE_ARP => arp(m, f, off),
        ETHERTYPE_PPPOE_SESSION => pppoe_session(m, f, off),
        // An 802.3 length field (LLC/SNAP: STP, CDP, ...) or an SLL pseudo-protocol.
        t if t < 0x0600 => Ok(()),
        t => {
            m.l3 = L3::Other(t);
            Ok(())
        }
    }
}

/// PPPoE session header (ver/type, code, session id, length) then the PPP protocol.
fn pppoe_session(m: &mut PacketMeta, f: &[u8], off: usize) -> Layer {
    m.pppoe = true;
    let h = chunk::<8>(f, off).ok_or(DecodeError::PppoeTruncated)?;
    match be16(h[6], h[7]) {
        PPP_IPV4 => ipv4(m, f, off + 8),
        PPP_IPV6 => ipv6(m, f, off + 8),
        // LCP, IPCP, CHAP and friends.
        _ => {
            m.l3 = L3::Other(ETHERTYPE_PPPOE_SESSION);
            Ok(())
        }
    }
}

fn arp(m: &mut PacketMeta, f: &[u8], off: usize) -> Layer {
    m.l3 = L3::Arp;
    m.l3_off = off32(off);
    let h = chunk::<8>(f, off).ok_or(DecodeError::ArpTruncated)?;
    // Only Ethernet/IPv4 ARP has the fixed 28-byte layout; anything else is just counted.
    if be16(h[0], h[1]) != 1 || be16(h[2], h[3]) != ETHERTYPE_IPV4 || h[4] != 6 || h[5] != 4 {
        m.l3 = L3::Other(ETHERTYPE_ARP);
        return Ok(());
    }
    let a = chunk::<28>(f, off).ok_or(DecodeError::ArpTruncated)?;
    m.arp = ArpInfo {
        op: be16(a[6], a[7]),
        sender_mac: mac_at(a, 8),
        sender_ip: Ipv4Addr::new(a[14], a[15], a[16], a[17]),
        target_mac: mac_at(a, 18),
        target_ip: Ipv4Addr::new(a[24], a[25], a[26], a[27]),
    };
    Ok(())
}

// ---- network layer ----

fn ipv4(m: &mut PacketMeta, f: &[u8], off: usize) -> Layer {
    m.l3 = L3::Ipv4;
    m.l3_off = off32(off);
    let h = chunk::<20>(f, off).ok_or(DecodeError::Ipv4Truncated)?;
    let ihl = usize::from(h[0] & 0x0f) * 4;
    let total = usize::from(be16(h[2], h[3]));
    // Total length 0 is what TCP segmentation offload leaves in frames captured on the
    // sending host: the packet is as long as the capture says.
    if h[0] >> 4 != 4 || ihl < 20 || (total < ihl && total != 0) {
        return Err(DecodeError::Ipv4BadHeader);
    }
    m.src = IpAddr::V4(Ipv4Addr::new(h[12], h[13], h[14], h[15]));
    m.dst = IpAddr::V4(Ipv4Addr::new(h[16], h[17], h[18], h[19]));
    m.ttl = h[8];
    m.ip_proto = h[9];
    m.ip_id = u32::from(be16(h[4], h[5]));
    m.ip_options = ihl > 20;
    let frag = be16(h[6], h[7]);
    let more = frag & 0x2000 != 0;
    let offset = u32::from(frag & 0x1fff) * 8;
    m.frag = FragInfo {
        is_fragment: more || offset > 0,
        more_fragments: more,
        offset,
    };
    let l4 = off + ihl;
    if l4 > f.len() {
        return Err(DecodeError::Ipv4Truncated);
    }
    if offset > 0 {
        // Only the first fragment carries the L4 header.
        return Ok(());
    }
    // Trim Ethernet padding; a packet cut by the snaplen is decoded as far as it goes.
    let end = if total == 0 {
        f.len()
    } else {
        f.len().min(off + total)
    };
    transport(m, f, l4, end, h[9])
}

fn is_ipv6_ext(next: u8) -> bool {
    matches!(next, 0 | 43 | 44 | 51 | 60 | 135 | 139 | 140)
}

fn ipv6(m: &mut PacketMeta, f: &[u8], off: usize) -> Layer {
    m.l3 = L3::Ipv6;
    m.l3_off = off32(off);
    let h = chunk::<40>(f, off).ok_or(DecodeError::Ipv6Truncated)?;
    if h[0] >> 4 != 6 {
        return Err(DecodeError::Ipv6BadHeader);
    }
    let addr = |at: usize| {
        IpAddr::V6(Ipv6Addr::from(
            chunk::<16>(h, at).copied().unwrap_or([0; 16]),
        ))
    };
    m.src = addr(8);
    m.dst = addr(24);
    m.ttl = h[7];
    let plen = usize::from(be16(h[4], h[5]));
    // Payload length 0 means a jumbogram (or offload): take what was captured.
    let end = if plen == 0 {
        f.len()
    } else {
        f.len().min(off + 40 + plen)
    };
    let mut next = h[6];
    let mut pos = off + 40;
    m.ip_proto = next;
    while is_ipv6_ext(next) {
        if m.ipv6_ext_headers == MAX_IPV6_EXT_HEADERS {
            return Err(DecodeError::Ipv6ExtTruncated);
        }
        // Every extension header is at least 8 bytes long.
        let e = f
            .get(pos..end)
            .and_then(|s| s.first_chunk::<8>())
            .ok_or(DecodeError::Ipv6ExtTruncated)?;
        let len = match next {
            51 => (usize::from(e[1]) + 2) * 4,
            44 => 8,
            _ => (usize::from(e[1]) + 1) * 8,
        };
        if pos + len > end {
            return Err(DecodeError::Ipv6ExtTruncated);
        }
        m.ipv6_ext_headers += 1;
        if next == 44 {
            let frag = be16(e[2], e[3]);
            let more = frag & 1 != 0;
            let offset = u32::from(frag >> 3) * 8;
            m.frag = FragInfo {
                is_fragment: more || offset > 0,
                more_fragments: more,
                offset,
            };
            m.ip_id = u32::from_be_bytes([e[4], e[5], e[6], e[7]]);
            if offset > 0 {
                m.ip_proto = e[0];
                return Ok(());
            }
        }
        next = e[0];
        pos += len;
        m.ip_proto = next;
    }
    // 59 (no next header) and unknown protocols fall through `transport` untouched.
    transport(m, f, pos, end, next)
}

// ---- transport layer ----

/// Decodes the L4 header of the segment `f[start..end]`.
fn transport(m: &mut PacketMeta, f: &[u8], start: usize, end: usize, proto: u8) -> Layer {
    let seg = f.get(start..end).unwrap_or(&[]);
    match proto {
        IPPROTO_TCP => tcp(m, f, seg, start),
        IPPROTO_UDP => udp(m, f, seg, start),
        IPPROTO_ICMP | IPPROTO_ICMPV6 => icmp(m, seg, start, proto),
        _ => Ok(()),
    }
}

fn is_dns_port(m: &PacketMeta) -> bool {
    DNS_PORTS.contains(&m.src_port) || DNS_PORTS.contains(&m.dst_port)
}

fn tcp(m: &mut PacketMeta, f: &[u8], seg: &[u8], start: usize) -> Layer {
    let h = chunk::<20>(seg, 0).ok_or(DecodeError::TcpTruncated)?;
    let doff = h[12] >> 4;
    if doff < 5 {
        return Err(DecodeError::TcpBadOffset);
    }
    let hlen = usize::from(doff) * 4;
    let opts = seg.get(20..hlen).ok_or(DecodeError::TcpTruncated)?;
    m.l4_off = off32(start);
    m.src_port = be16(h[0], h[1]);
    m.dst_port = be16(h[2], h[3]);
    m.tcp = TcpInfo {
        flags: h[13],
        seq: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
        ack: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
        window: be16(h[14], h[15]),
        mss: tcp_mss(opts),
        header_len: doff * 4,
    };
    let payload_off = start + hlen;
    let payload_len = seg.len().saturating_sub(hlen);
    m.payload_off = off32(payload_off);
    m.payload_len = off32(payload_len);
    if payload_len > 0 && is_dns_port(m) {
        // DNS over TCP: a 2-byte length prefix, then the message.
        let prefix = chunk::<2>(f, payload_off).ok_or(DecodeError::DnsMalformed)?;
        let msg_len = usize::from(be16(prefix[0], prefix[1]));
        let msg_end = (payload_off + payload_len).min(payload_off + 2 + msg_len);
        dns(m, f, payload_off + 2, msg_end)?;
    }
    Ok(())
}

/// The MSS option, if present. EOL, NOP and well-formed options are walked; a bad length
/// ends the walk quietly (the segment itself is still usable).
fn tcp_mss(opts: &[u8]) -> Option<u16> {
    let mut i = 0usize;
    while let Some(&kind) = opts.get(i) {
        match kind {
            0 => break,
            1 => i += 1,
            _ => {
                let len = usize::from(*opts.get(i + 1)?);
                if len < 2 || i + len > opts.len() {
                    break;
                }
                if kind == 2 && len == 4 {
                    let v = chunk::<2>(opts, i + 2)?;
                    return Some(be16(v[0], v[1]));
                }
                i += len;
            }
        }
    }
    None
}

fn udp(m: &mut PacketMeta, f: &[u8], seg: &[u8], start: usize) -> Layer {
    let h = chunk::<8>(seg, 0).ok_or(DecodeError::UdpTruncated)?;
    m.l4_off = off32(start);
    m.src_port = be16(h[0], h[1]);
    m.dst_port = be16(h[2], h[3]);
    let ulen = usize::from(be16(h[4], h[5]));
    let captured = seg.len().saturating_sub(8);
    // A length below the header size (0 in jumbograms) says nothing: use what is there.
    let payload_len = if ulen >= 8 {
        captured.min(ulen - 8)
    } else {
        captured
    };
    let payload_off = start + 8;
    m.payload_off = off32(payload_off);
    m.payload_len = off32(payload_len);
    if payload_len > 0 && is_dns_port(m) {
        dns(m, f, payload_off, payload_off + payload_len)?;
    }
    Ok(())
}

fn icmp(m: &mut PacketMeta, seg: &[u8], start: usize, proto: u8) -> Layer {
    let h = chunk::<8>(seg, 0).ok_or(DecodeError::IcmpTruncated)?;
    m.l4_off = off32(start);
    let echo = if proto == IPPROTO_ICMP {
        matches!(h[0], 0 | 8)
    } else {
        matches!(h[0], 128 | 129)
    };
    m.icmp = IcmpInfo {
        typ: h[0],
        code: h[1],
        id: if echo { be16(h[4], h[5]) } else { 0 },
        seq: if echo { be16(h[6], h[7]) } else { 0 },
    };
    m.payload_off = off32(start + 8);
    m.payload_len = off32(seg.len() - 8);
    Ok(())
}

// ---- DNS ----

/// `c·log2(c)` for every possible byte count c (index 256 exists so that `k + 1` for a u8
/// `k` is always in range). Computed once; a static, so no allocation.
fn clog_table() -> &'static [f64; 257] {
    static TABLE: OnceLock<[f64; 257]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = [0.0f64; 257];
        for (c, v) in t.iter_mut().enumerate().skip(2) {
            let c = c as f64;
            *v = c * c.log2();
        }
        t
    })
}

/// Parses the header and first question of the DNS message `f[off..end]`. A message
/// without questions (common in mDNS responses) leaves `dns` as `None`.
fn dns(m: &mut PacketMeta, f: &[u8], off: usize, end: usize) -> Layer {
    let msg = f.get(off..end).unwrap_or(&[]);
    let h = chunk::<12>(msg, 0).ok_or(DecodeError::DnsMalformed)?;
    if be16(h[4], h[5]) == 0 {
        return Ok(());
    }
    // Occurrences of each byte value (a name has at most 253 characters, so a u8 count
    // cannot saturate) and the running Σ c·log2(c) over them: raising a count from k to
    // k + 1 adds clog[k + 1] - clog[k].
    let clog = clog_table();
    let mut counts = [0u8; 256];
    let mut sum = 0.0f64;
    let mut pos = 12usize;
    let mut chars = 0usize;
    let mut labels = 0u8;
    loop {
        let len = *msg.get(pos).ok_or(DecodeError::DnsMalformed)?;
        if len == 0 {
            break;
        }
        // Compression pointers (0xc0) and the reserved 0x40/0x80 label types have no
        // place in a question; what remains is ≤ 63.
        if len & 0xc0 != 0 {
            return Err(DecodeError::DnsMalformed);
        }
        let len = usize::from(len);
        // Encoded length so far, counting this label and the final root byte.
        if pos + 1 + len + 1 - 12 > DNS_MAX_NAME {
            return Err(DecodeError::DnsMalformed);
        }
        let label = msg
            .get(pos + 1..pos + 1 + len)
            .ok_or(DecodeError::DnsMalformed)?;
        for &c in label {
            let k = &mut counts[usize::from(c)];
            let before = usize::from(*k);
            sum += clog[before + 1] - clog[before];
            *k = k.saturating_add(1);
        }
        chars += len;
        labels += 1;
        pos += 1 + len;
    }
    // QTYPE and QCLASS complete the question.
    let qt = chunk::<4>(msg, pos + 1).ok_or(DecodeError::DnsMalformed)?;

    // H = log2(n) - (1/n) Σ c·log2(c).
    let entropy = if chars > 0 {
        let n = chars as f64;
        (n.log2() - sum / n).max(0.0) as f32
    } else {
        0.0
    };

    m.dns = Some(DnsInfo {
        id: be16(h[0], h[1]),
        is_response: h[2] & 0x80 != 0,
        qtype: be16(qt[0], qt[1]),
        qname_off: off32(off + 12),
        qname_len: u16::try_from(chars + usize::from(labels.saturating_sub(1))).unwrap_or(u16::MAX),
        labels,
        qname_entropy: entropy,
    });
    Ok(())
}

/// The shared test-frame builders (tests/util/frames.rs); the path is relative to src/.
#[cfg(test)]
#[path = "../tests/util/frames.rs"]
mod frames;

#[cfg(test)]
mod tests {
    use super::frames::*;
    use super::{
        decode, dns_qname, tcp_flags, tcp_mss, ArpInfo, DecodeError, DnsInfo, FragInfo, IcmpInfo,
        LinkType, PacketMeta, TcpInfo, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, L3,
        MAX_IPV6_EXT_HEADERS,
    };
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    const A4: [u8; 4] = [192, 168, 1, 10];
    const B4: [u8; 4] = [93, 184, 216, 34];
    const A6: [u8; 16] = [
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a,
    ];
    const B6: [u8; 16] = [
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0b,
    ];

    fn eth(frame: &[u8]) -> PacketMeta {
        decode(LinkType::Ethernet, frame, frame.len() as u32)
    }

    fn v4(a: [u8; 4]) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(a))
    }

    fn v6(a: [u8; 16]) -> IpAddr {
        IpAddr::V6(Ipv6Addr::from(a))
    }

    /// Shannon entropy from a by-hand list of character counts.
    fn entropy_of(counts: &[u32]) -> f32 {
        let n: u32 = counts.iter().sum();
        -counts
            .iter()
            .map(|&c| {
                let p = c as f64 / n as f64;
                p * p.log2()
            })
            .sum::<f64>() as f32
    }

    fn qname(frame: &[u8], m: &PacketMeta) -> Vec<u8> {
        let mut buf = [0u8; 256];
        dns_qname(frame, m.dns.as_ref().unwrap(), &mut buf).to_vec()
    }

    // ---- Ethernet / IPv4 / TCP ----

    #[test]
    fn ipv4_tcp_every_field() {
        let f = eth_ipv4_tcp(
            MAC_A,
            MAC_B,
            A4,
            B4,
            40000,
            443,
            tcp_flags::PSH | tcp_flags::ACK,
            1000,
            2000,
            b"hello",
        );
        let m = decode(LinkType::Ethernet, &f, 1500);
        assert_eq!(m.error, None);
        assert_eq!(m.wire_len, 1500);
        assert_eq!(m.cap_len as usize, f.len());
        assert_eq!(m.src_mac, MAC_A);
        assert_eq!(m.dst_mac, MAC_B);
        assert_eq!((m.vlan, m.vlan_depth, m.pppoe), (0, 0, false));
        assert_eq!(m.l3, L3::Ipv4);
        assert_eq!(m.l3_off, 14);
        assert_eq!((m.src, m.dst), (v4(A4), v4(B4)));
        assert_eq!((m.ip_proto, m.ttl, m.ip_options), (IPPROTO_TCP, 64, false));
        assert_eq!(m.frag, FragInfo::default());
        assert_eq!(m.l4_off, 34);
        assert_eq!((m.src_port, m.dst_port), (40000, 443));
        assert_eq!(
            m.tcp,
            TcpInfo {
                flags: tcp_flags::PSH | tcp_flags::ACK,
                seq: 1000,
                ack: 2000,
                window: 64240,
                mss: None,
                header_len: 20,
            }
        );
        assert_eq!((m.payload_off, m.payload_len), (54, 5));
        assert_eq!(m.payload(&f), b"hello");
        assert_eq!(m.dns, None);
        assert!(m.is_ip() && !m.is_syn_only());
    }

    #[test]
    fn tcp_syn_with_mss_option() {
        let f = eth_ipv4_tcp_mss(
            MAC_A,
            MAC_B,
            A4,
            B4,
            40000,
            80,
            tcp_flags::SYN,
            7,
            0,
            1460,
            b"",
        );
        let m = eth(&f);
        assert_eq!(m.error, None);
        assert_eq!(m.tcp.mss, Some(1460));
        assert_eq!(m.tcp.header_len, 32);
        assert_eq!((m.payload_off, m.payload_len), (66, 0));
        assert!(m.is_syn_only());
    }

    #[test]
    fn tcp_options_walk_is_robust() {
        // NOPs then MSS: found.
        assert_eq!(tcp_mss(&[1, 1, 2, 4, 0x05, 0xb4, 0, 0]), Some(1460));
        // EOL before MSS: stop.
        assert_eq!(tcp_mss(&[0, 2, 4, 0x05, 0xb4]), None);
        // A zero-length option would loop forever if trusted: stop quietly.
        assert_eq!(tcp_mss(&[8, 0, 2, 4, 0x05, 0xb4]), None);
        // An option running past the header: stop.
        assert_eq!(tcp_mss(&[3, 9, 7]), None);
        // MSS with a wrong length is skipped, not read.
        assert_eq!(tcp_mss(&[2, 3, 9, 1, 1, 1, 1]), None);
        // Timestamps (kind 8, len 10) then MSS.
        assert_eq!(
            tcp_mss(&[8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 2, 4, 0x02, 0x18]),
            Some(536)
        );
        // Truncated length byte.
        assert_eq!(tcp_mss(&[2]), None);
        // Bad options do not turn into a decode error.
        let seg = tcp_segment(1, 2, tcp_flags::SYN, 0, 0, &[2, 1, 0, 0], b"");
        let ip = ipv4_packet(A4, B4, 6, 64, 1, false, 0, &[], &seg);
        let m = eth(&ethernet(MAC_A, MAC_B, ETHERTYPE_IPV4, &ip));
        assert_eq!((m.error, m.tcp.mss, m.tcp.header_len), (None, None, 24));
    }

    #[test]
    fn tcp_bad_data_offset() {
        let mut seg = tcp_segment(1, 2, tcp_flags::SYN, 0, 0, &[], b"");
        seg[12] = 4 << 4;
        let ip = ipv4_packet(A4, B4, 6, 64, 1, false, 0, &[], &seg);
        let m = eth(&ethernet(MAC_A, MAC_B, ETHERTYPE_IPV4, &ip));
        assert_eq!(m.error, Some(DecodeError::TcpBadOffset));
        assert_eq!((m.l3, m.src, m.ip_proto), (L3::Ipv4, v4(A4), 6));
        assert_eq!((m.l4_off, m.src_port), (0, 0));
        // Data offset beyond the segment: truncated.
        seg[12] = 15 << 4;
        let ip = ipv4_packet(A4, B4, 6, 64, 1, false, 0, &[], &seg);
        let m = eth(&ethernet(MAC_A, MAC_B, ETHERTYPE_IPV4, &ip));
        assert_eq!(m.error, Some(DecodeError::TcpTruncated));
    }

    #[test]
    fn ethernet_padding_is_trimmed() {
        let mut f = eth_ipv4_udp(MAC_A, MAC_B, A4, B4, 5000, 6000, b"ab");
        assert_eq!(f.len(), 44);
        f.resize(60, 0xee);
        let m = eth(&f);
        assert_eq!(m.error, None);
        assert_eq!((m.payload_off, m.payload_len), (42, 2));
        // Same for TCP: padding after a bare ACK is not payload.
        let mut f = eth_ipv4_tcp(MAC_A, MAC_B, A4, B4, 1, 2, tcp_flags::ACK, 1, 1, b"");
        f.resize(60, 0);
        assert_eq!(eth(&f).payload_len, 0);
    }

    #[test]
    fn snaplen_cut_decodes_what_is_there() {
        let f = eth_ipv4_tcp(MAC_A, MAC_B, A4, B4, 1, 2, tcp_flags::ACK, 1, 1, &[7; 1000]);
        let m = decode(LinkType::Ethernet, &f[..96], f.len() as u32);
        assert_eq!(m.error, None);
        assert_eq!((m.wire_len as usize, m.cap_len), (f.len(), 96));
        assert_eq!((m.payload_off, m.payload_len), (54, 42));
    }

    #[test]
    fn ipv4_options_and_fragments() {
        let opts = [0x94, 0x04, 0, 0]; // router alert
        let udp = udp_datagram(1234, 9999, &[1; 16]);
        let first = ipv4_packet(A4, B4, 17, 3, 0xbeef, true, 0, &opts, &udp);
        let m = eth(&ethernet(MAC_A, MAC_B, ETHERTYPE_IPV4, &first));
        assert_eq!(m.error, None);
        assert!(m.ip_options);
        assert_eq!((m.ttl, m.ip_id), (3, 0xbeef));
        assert_eq!(
            m.frag,
            FragInfo {
                is_fragment: true,
                more_fragments: true,
                offset: 0
            }
        );
        assert_eq!((m.l4_off, m.src_port, m.dst_port), (38, 1234, 9999));
        assert_eq!((m.payload_off, m.payload_len), (46, 16));

        let later = ipv4_packet(A4, B4, 17, 3, 0xbeef, false, 1480, &[], &[9; 24]);
        let m = eth(&ethernet(MAC_A, MAC_B, ETHERTYPE_IPV4, &later));
        assert_eq!(m.error, None);
        assert_eq!(
            m.frag,
            FragInfo {
                is_fragment: true,
                more_fragments: false,
                offset: 1480
            }
        );
        assert_eq!(m.ip_proto, 17);
        assert_eq!((m.l4_off, m.src_port, m.payload_len), (0, 0, 0));
    }

    #[test]
    fn ipv4_bad_headers() {
        let good = ipv4_packet(A4, B4, 17, 64, 1, false, 0, &[], &udp_datagram(1, 2, b"x"));
        let check = |edit: fn(&mut Vec<u8>), want: Option<DecodeError>| {
            let mut p = good.clone();
            edit(&mut p);
            let m = eth(&ethernet(MAC_A, MAC_B, ETHERTYPE_IPV4, &p));
            assert_eq!(m.error, want);
            assert_eq!(m.l3, L3::Ipv4);
            m
        };
        let m = check(|p| p[0] = 0x44, Some(DecodeError::Ipv4BadHeader));
        assert_eq!(m.src, v4([0; 4]));
        check(|p| p[0] = 0x55, Some(DecodeError::Ipv4BadHeader));
        check(
            |p| p[2..4].copy_from_slice(&19u16.to_be_bytes()),
            Some(DecodeError::Ipv4BadHeader),
        );
        // IHL 6 = 24 bytes of header but only 22 bytes captured.
        let m = check(
            |p| {
                p[0] = 0x46;
                p.truncate(22);
            },
            Some(DecodeError::Ipv4Truncated),
        );
        assert_eq!(m.src, v4(A4));
        // Total length 0 (TSO on the capturing host): decoded to the end of the capture.
        let m = check(|p| p[2..4].copy_from_slice(&[0, 0]), None);
        assert_eq!((m.src_port, m.payload_len), (1, 1));
    }

    #[test]
    fn udp_length_bounds_payload() {
        let mut ip = ipv4_packet(
            A4,
            B4,
            17,
            64,
            1,
            false,
            0,
            &[],
            &udp_datagram(7, 8, &[5; 10]),
        );
        ip[24..26].copy_from_slice(&11u16.to_be_bytes()); // UDP says 3 bytes of payload
        let m = eth(&ethernet(MAC_A, MAC_B, ETHERTYPE_IPV4, &ip));
        assert_eq!((m.error, m.payload_len), (None, 3));
        ip[24..26].copy_from_slice(&400u16.to_be_bytes()); // more than captured
        let m = eth(&ethernet(MAC_A, MAC_B, ETHERTYPE_IPV4, &ip));
        assert_eq!((m.error, m.payload_len), (None, 10));
        ip[24..26].copy_from_slice(&0u16.to_be_bytes()); // meaningless: use what is there
        assert_eq!(
            eth(&ethernet(MAC_A, MAC_B, ETHERTYPE_IPV4, &ip)).payload_len,
            10
        );
    }

    // ---- ICMP ----

    #[test]
    fn icmp_echo_and_errors() {
        let f = eth_ipv4_icmp_echo(MAC_A, MAC_B, A4, B4, false, 0x1234, 7, b"ping!");
        let m = eth(&f);
        assert_eq!(m.error, None);
        assert_eq!(m.ip_proto, IPPROTO_ICMP);
        assert_eq!(
            m.icmp,
            IcmpInfo {
                typ: 8,
                code: 0,
                id: 0x1234,
                seq: 7
            }
        );
        assert_eq!((m.l4_off, m.payload_off, m.payload_len), (34, 42, 5));
        assert_eq!((m.src_port, m.dst_port), (0, 0));

        let f = eth_ipv4_icmp_echo(MAC_B, MAC_A, B4, A4, true, 0x1234, 7, b"ping!");
        assert_eq!(
            eth(&f).icmp,
            IcmpInfo {
                typ: 0,
                code: 0,
                id: 0x1234,
                seq: 7
            }
        );

        let quoted = [0x45u8; 28];
        let f = eth_ipv4_icmp(
            MAC_B,
            MAC_A,
            B4,
            A4,
            3,
            3,
            [0xaa, 0xbb, 0xcc, 0xdd],
            &quoted,
        );
        let m = eth(&f);
        assert_eq!(
            m.icmp,
            IcmpInfo {
                typ: 3,
                code: 3,
                id: 0,
                seq: 0
            }
        );
        assert_eq!(m.payload_len, 28);

        let f = eth_ipv6_icmpv6_echo(MAC_A, MAC_B, A6, B6, false, 9, 10, b"abc");
        let m = eth(&f);
        assert_eq!(
            (m.error, m.l3, m.ip_proto),
            (None, L3::Ipv6, IPPROTO_ICMPV6)
        );
        assert_eq!(
            m.icmp,
            IcmpInfo {
                typ: 128,
                code: 0,
                id: 9,
                seq: 10
            }
        );
        assert_eq!((m.l4_off, m.payload_off, m.payload_len), (54, 62, 3));
        let f = eth_ipv6_icmpv6_echo(MAC_A, MAC_B, A6, B6, true, 9, 10, b"abc");
        assert_eq!(eth(&f).icmp.typ, 129);
        // ICMPv4 type numbers 0/8 mean nothing to ICMPv6.
        let mut body = vec![8u8, 0, 0, 0, 0, 5, 0, 6];
        let f = ethernet(
            MAC_A,
            MAC_B,
            ETHERTYPE_IPV6,
            &ipv6_packet(A6, B6, 58, 64, &body),
        );
        assert_eq!(
            eth(&f).icmp,
            IcmpInfo {
                typ: 8,
                code: 0,
                id: 0,
                seq: 0
            }
        );
        body.truncate(7);
        let f = ethernet(
            MAC_A,
            MAC_B,
            ETHERTYPE_IPV6,
            &ipv6_packet(A6, B6, 58, 64, &body),
        );
        assert_eq!(eth(&f).error, Some(DecodeError::IcmpTruncated));
    }

    // ---- IPv6 ----

    #[test]
    fn ipv6_tcp_and_udp() {
        let f = eth_ipv6_tcp(MAC_A, MAC_B, A6, B6, 5555, 22, tcp_flags::SYN, 1, 0, b"");
        let m = eth(&f);
        assert_eq!(m.error, None);
        assert_eq!(
            (m.l3, m.l3_off, m.src, m.dst),
            (L3::Ipv6, 14, v6(A6), v6(B6))
        );
        assert_eq!(
            (m.ip_proto, m.ttl, m.ipv6_ext_headers),
            (IPPROTO_TCP, 64, 0)
        );
        assert_eq!((m.l4_off, m.src_port, m.dst_port), (54, 5555, 22));
        assert!(m.is_syn_only());
        let f = eth_ipv6_udp(MAC_A, MAC_B, A6, B6, 546, 547, &[1, 2, 3]);
        let m = eth(&f);
        assert_eq!(
            (m.error, m.ip_proto, m.payload_off, m.payload_len),
            (None, 17, 62, 3)
        );
    }

    #[test]
    fn ipv6_extension_chain_with_fragment_header() {
        let dns = dns_query(0x4242, "ipv6.example.net", 28);
        let udp = udp_datagram(33333, 53, &dns);
        let mut chain = ipv6_ext(43, &[5, 1, 0, 0]); // hop-by-hop → routing
        chain.extend(ipv6_ext(60, &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0])); // routing → dest opts (16 bytes)
        chain.extend(ipv6_ext(51, &[])); // dest opts → AH
        chain.extend(ipv6_ah(44, 0x100, 1, 3)); // AH (24 bytes) → fragment
        chain.extend(ipv6_frag(17, 0, true, 0xdead_beef)); // fragment → UDP
        let ext_len = chain.len();
        assert_eq!(ext_len, 8 + 16 + 8 + 24 + 8);
        chain.extend(&udp);
        let f = ethernet(
            MAC_A,
            MAC_B,
            ETHERTYPE_IPV6,
            &ipv6_packet(A6, B6, 0, 255, &chain),
        );
        let m = eth(&f);
        assert_eq!(m.error, None);
        assert_eq!(
            (m.ipv6_ext_headers, m.ip_proto, m.ttl),
            (5, IPPROTO_UDP, 255)
        );
        assert_eq!(m.ip_id, 0xdead_beef);
        assert_eq!(
            m.frag,
            FragInfo {
                is_fragment: true,
                more_fragments: true,
                offset: 0
            }
        );
        assert_eq!(m.l4_off as usize, 54 + ext_len);
        assert_eq!((m.src_port, m.dst_port), (33333, 53));
        let d = m.dns.expect("DNS in first fragment");
        assert_eq!((d.id, d.qtype, d.qname_len, d.labels), (0x4242, 28, 16, 3));
        assert_eq!(qname(&f, &m), b"ipv6.example.net");

        // A later fragment has no L4 header.
        let mut chain = ipv6_ext(44, &[0; 6]);
        chain.extend(ipv6_frag(17, 1232, false, 77));
        chain.extend([0xab; 40]);
        let f = ethernet(
            MAC_A,
            MAC_B,
            ETHERTYPE_IPV6,
            &ipv6_packet(A6, B6, 60, 64, &chain),
        );
        let m = eth(&f);
        assert_eq!(m.error, None);
        assert_eq!((m.ipv6_ext_headers, m.ip_proto, m.ip_id), (2, 17, 77));
        assert_eq!(
            m.frag,
            FragInfo {
                is_fragment: true,
                more_fragments: false,
                offset: 1232
            }
        );
        assert_eq!((m.l4_off, m.src_port, m.payload_len), (0, 0, 0));
    }

    #[test]
    fn ipv6_no_next_header_mobility_and_bounds() {
        let chain = ipv6_ext(59, &[0; 4]);
        let f = ethernet(
            MAC_A,
            MAC_B,
            ETHERTYPE_IPV6,
            &ipv6_packet(A6, B6, 60, 64, &chain),
        );
        let m = eth(&f);
        assert_eq!(
            (m.error, m.ipv6_ext_headers, m.ip_proto, m.l4_off),
            (None, 1, 59, 0)
        );

        // Mobility (135), HIP (139) and shim6 (140) are walked like the others.
        let mut chain = ipv6_ext(139, &[]);
        chain.extend(ipv6_ext(140, &[]));
        chain.extend(ipv6_ext(6, &[]));
        chain.extend(tcp_segment(1, 2, tcp_flags::RST, 0, 0, &[], b""));
        let f = ethernet(
            MAC_A,
            MAC_B,
            ETHERTYPE_IPV6,
            &ipv6_packet(A6, B6, 135, 64, &chain),
        );
        let m = eth(&f);
        assert_eq!((m.error, m.ipv6_ext_headers, m.ip_proto), (None, 3, 6));
        assert_eq!(m.tcp.flags, tcp_flags::RST);

        // 16 headers are walked; a 17th stops decoding.
        let build = |n: usize| {
            let mut chain = Vec::new();
            for i in 0..n {
                chain.extend(ipv6_ext(if i + 1 == n { 17 } else { 60 }, &[]));
            }
            chain.extend(udp_datagram(1, 2, b"z"));
            ethernet(
                MAC_A,
                MAC_B,
                ETHERTYPE_IPV6,
                &ipv6_packet(A6, B6, 60, 64, &chain),
            )
        };
        let m = eth(&build(16));
        assert_eq!(
            (m.error, m.ipv6_ext_headers, m.ip_proto, m.src_port),
            (None, 16, 17, 1)
        );
        let m = eth(&build(17));
        assert_eq!(m.error, Some(DecodeError::Ipv6ExtTruncated));
        assert_eq!((m.ipv6_ext_headers, m.ip_proto, m.l4_off), (16, 60, 0));

        // Extension header longer than the payload length says.
        let mut p = ipv6_packet(A6, B6, 0, 64, &ipv6_ext(59, &[0; 20]));
        p[4..6].copy_from_slice(&16u16.to_be_bytes());
        let m = eth(&ethernet(MAC_A, MAC_B, ETHERTYPE_IPV6, &p));
        assert_eq!(m.error, Some(DecodeError::Ipv6ExtTruncated));

        // Wrong version nibble under the IPv6 EtherType.
        let mut p = ipv6_packet(A6, B6, 59, 64, &[]);
        p[0] = 0x40;
        let m = eth(&ethernet(MAC_A, MAC_B, ETHERTYPE_IPV6, &p));
        assert_eq!(
            (m.error, m.l3),
            (Some(DecodeError::Ipv6BadHeader), L3::Ipv6)
        );
    }

    // ---- link layers ----

    #[test]
    fn vlan_and_qinq() {
        let inner = eth_ipv4_udp(MAC_A, MAC_B, A4, B4, 1, 2, b"v");
        let f = with_vlan_tags(&inner, &[(ETHERTYPE_VLAN, 42)]);
        let m = eth(&f);
        assert_eq!((m.error, m.vlan, m.vlan_depth, m.l3_off), (None, 42, 1, 18));
        assert_eq!((m.src_port, m.payload_len), (1, 1));

        let f = with_vlan_tags(&inner, &[(ETHERTYPE_QINQ, 100), (ETHERTYPE_VLAN, 4095)]);
        let m = eth(&f);
        assert_eq!(
            (m.error, m.vlan, m.vlan_depth, m.l3_off),
            (None, 100, 2, 22)
        );
        assert_eq!((m.l3, m.src, m.src_mac), (L3::Ipv4, v4(A4), MAC_A));

        let f = with_vlan_tags(&inner, &[(0x9100, 7), (0x9100, 8), (ETHERTYPE_VLAN, 9)]);
        let m = eth(&f);
        assert_eq!((m.error, m.vlan, m.vlan_depth, m.l3_off), (None, 7, 3, 26));

        // Priority bits are not part of the id.
        let mut f = with_vlan_tags(&inner, &[(ETHERTYPE_VLAN, 5)]);
        f[14] |= 0xe0;
        assert_eq!(eth(&f).vlan, 5);
    }

    #[test]
    fn pppoe_session_and_discovery() {
        let ip = strip_ethernet(&eth_ipv4_tcp(MAC_A, MAC_B, A4, B4, 1, 80, 2, 0, 0, b""));
        let f = pppoe_session(MAC_A, MAC_B, 0x11, &ip);
        let m = eth(&f);
        assert_eq!(
            (m.error, m.pppoe, m.l3, m.l3_off),
            (None, true, L3::Ipv4, 22)
        );
        assert_eq!((m.dst_port, m.l4_off), (80, 42));

        let ip6 = strip_ethernet(&eth_ipv6_udp(MAC_A, MAC_B, A6, B6, 1, 2, b"x"));
        let m = eth(&pppoe_session(MAC_A, MAC_B, 0x11, &ip6));
        assert_eq!(
            (m.error, m.pppoe, m.l3, m.src),
            (None, true, L3::Ipv6, v6(A6))
        );

        // Inside a VLAN, as many ISPs deliver it.
        let f = with_vlan_tags(&pppoe_session(MAC_A, MAC_B, 1, &ip), &[(ETHERTYPE_VLAN, 7)]);
        let m = eth(&f);
        assert_eq!((m.error, m.vlan, m.pppoe, m.l3_off), (None, 7, true, 26));

        // LCP inside the session.
        let mut f = pppoe_session(MAC_A, MAC_B, 1, &[1, 1, 0, 4]);
        f[20..22].copy_from_slice(&0xc021u16.to_be_bytes());
        let m = eth(&f);
        assert_eq!((m.error, m.pppoe, m.l3), (None, true, L3::Other(0x8864)));

        // Discovery (PADI) is just another EtherType.
        let m = eth(&ethernet(
            MAC_A,
            MAC_BROADCAST,
            0x8863,
            &[0x11, 0x09, 0, 0, 0, 0],
        ));
        assert_eq!((m.error, m.pppoe, m.l3), (None, false, L3::Other(0x8863)));
    }

    #[test]
    fn llc_and_unknown_ethertypes() {
        // 802.3 length field + LLC (spanning tree).
        let m = eth(&ethernet(
            MAC_A,
            [0x01, 0x80, 0xc2, 0, 0, 0],
            38,
            &[0x42, 0x42, 3, 0, 0],
        ));
        assert_eq!((m.error, m.l3), (None, L3::None));
        let m = eth(&ethernet(MAC_A, MAC_B, 0x88cc, &[0; 30])); // LLDP
        assert_eq!((m.error, m.l3, m.src_mac), (None, L3::Other(0x88cc), MAC_A));
    }

    #[test]
    fn arp_request_reply_and_other_hardware() {
        let f = arp_request(MAC_A, A4, [192, 168, 1, 1]);
        let m = eth(&f);
        assert_eq!((m.error, m.l3, m.dst_mac), (None, L3::Arp, MAC_BROADCAST));
        assert_eq!(
            m.arp,
            ArpInfo {
                op: 1,
                sender_mac: MAC_A,
                sender_ip: Ipv4Addr::from(A4),
                target_mac: [0; 6],
                target_ip: Ipv4Addr::new(192, 168, 1, 1),
            }
        );
        assert!(!m.is_ip());
        let f = arp_reply(MAC_B, [192, 168, 1, 1], MAC_A, A4);
        let m = eth(&f);
        assert_eq!(
            (m.arp.op, m.arp.sender_mac, m.arp.target_mac),
            (2, MAC_B, MAC_A)
        );
        assert_eq!(m.arp.target_ip, Ipv4Addr::from(A4));
        // ARP over something other than Ethernet/IPv4 (here: hardware type 6, IEEE 802).
        let mut f = arp_request(MAC_A, A4, B4);
        f[15] = 6;
        let m = eth(&f);
        assert_eq!(
            (m.error, m.l3, m.arp),
            (None, L3::Other(0x0806), ArpInfo::default())
        );
    }

    #[test]
    fn cooked_raw_and_loopback_links() {
        let eth_frame = eth_ipv4_udp(MAC_A, MAC_B, A4, B4, 1111, 2222, b"xyz");
        let ip = strip_ethernet(&eth_frame);
        let ip6 = strip_ethernet(&eth_ipv6_tcp(MAC_A, MAC_B, A6, B6, 1, 2, 0x12, 0, 1, b""));
        let check = |link: LinkType, f: &[u8], l3: L3, l3_off: u32, src_mac: Mac| {
            let m = decode(link, f, f.len() as u32);
            assert_eq!(m.error, None, "{}", link.name());
            assert_eq!(
                (m.l3, m.l3_off, m.src_mac),
                (l3, l3_off, src_mac),
                "{}",
                link.name()
            );
            assert_eq!(m.dst_mac, [0; 6]);
            m
        };
        let m = check(
            LinkType::LinuxSll,
            &linux_sll(MAC_A, ETHERTYPE_IPV4, &ip),
            L3::Ipv4,
            16,
            MAC_A,
        );
        assert_eq!((m.src_port, m.payload_len), (1111, 3));
        check(
            LinkType::LinuxSll,
            &linux_sll(MAC_A, ETHERTYPE_IPV6, &ip6),
            L3::Ipv6,
            16,
            MAC_A,
        );
        let mut f = linux_sll(MAC_A, ETHERTYPE_IPV4, &ip);
        f[5] = 0; // address length 0 (e.g. tun): no source MAC
        check(LinkType::LinuxSll, &f, L3::Ipv4, 16, [0; 6]);
        let m = check(
            LinkType::LinuxSll2,
            &linux_sll2(MAC_B, ETHERTYPE_IPV4, &ip),
            L3::Ipv4,
            20,
            MAC_B,
        );
        assert_eq!(m.dst_port, 2222);
        check(
            LinkType::LinuxSll2,
            &linux_sll2(MAC_B, ETHERTYPE_IPV6, &ip6),
            L3::Ipv6,
            20,
            MAC_B,
        );
        let arp = strip_ethernet(&arp_request(MAC_A, A4, B4));
        let m = check(
            LinkType::LinuxSll,
            &linux_sll(MAC_A, ETHERTYPE_ARP, &arp),
            L3::Arp,
            16,
            MAC_A,
        );
        assert_eq!(m.arp.target_ip, Ipv4Addr::from(B4));

        check(LinkType::RawIp, &ip, L3::Ipv4, 0, [0; 6]);
        let m = check(LinkType::RawIp, &ip6, L3::Ipv6, 0, [0; 6]);
        assert_eq!(m.tcp.flags, 0x12);
        check(LinkType::Ipv4, &ip, L3::Ipv4, 0, [0; 6]);
        check(LinkType::Ipv6, &ip6, L3::Ipv6, 0, [0; 6]);
        let m = decode(LinkType::RawIp, &[0x00, 1, 2, 3], 4);
        assert_eq!((m.error, m.l3), (None, L3::None));
        assert_eq!(
            decode(LinkType::RawIp, &[], 0).error,
            Some(DecodeError::LinkTruncated)
        );

        for be in [false, true] {
            check(
                LinkType::Null,
                &null_loopback(2, be, &ip),
                L3::Ipv4,
                4,
                [0; 6],
            );
            for fam in [24, 28, 30] {
                check(
                    LinkType::Null,
                    &null_loopback(fam, be, &ip6),
                    L3::Ipv6,
                    4,
                    [0; 6],
                );
            }
            let m = decode(LinkType::Null, &null_loopback(17, be, &ip), 0);
            assert_eq!((m.error, m.l3), (None, L3::None));
        }
    }

    // ---- DNS ----

    #[test]
    fn dns_query_over_udp() {
        let q = dns_query(0xabcd, "www.example.com", 1);
        let f = eth_ipv4_udp(MAC_A, MAC_B, A4, [8, 8, 8, 8], 50000, 53, &q);
        let m = eth(&f);
        assert_eq!(m.error, None);
        let d = m.dns.unwrap();
        assert_eq!((d.id, d.is_response, d.qtype), (0xabcd, false, 1));
        assert_eq!((d.qname_off, d.qname_len, d.labels), (42 + 12, 15, 3));
        // "wwwexamplecom": w×3, e×2, m×2, x a p l c o ×1 — 13 characters.
        let want = entropy_of(&[3, 2, 2, 1, 1, 1, 1, 1, 1]);
        assert!(
            (d.qname_entropy - want).abs() < 1e-5,
            "{} vs {want}",
            d.qname_entropy
        );
        assert!((want - 3.0270).abs() < 1e-3);
        assert_eq!(qname(&f, &m), b"www.example.com");

        // Responses set QR; source port 53 counts too.
        let mut r = q.clone();
        r[2] |= 0x80;
        let m = eth(&eth_ipv4_udp(MAC_B, MAC_A, [8, 8, 8, 8], A4, 53, 50000, &r));
        assert_eq!(m.dns.map(|d| d.is_response), Some(true));
    }

    #[test]
    fn dns_query_over_tcp_and_other_ports() {
        let q = dns_query(7, "a.bb.ccc", 16);
        let f = eth_ipv4_tcp(
            MAC_A,
            MAC_B,
            A4,
            B4,
            40000,
            53,
            tcp_flags::PSH | tcp_flags::ACK,
            1,
            1,
            &dns_over_tcp(&q),
        );
        let m = eth(&f);
        assert_eq!(m.error, None);
        let d = m.dns.unwrap();
        assert_eq!((d.id, d.qtype, d.qname_len, d.labels), (7, 16, 8, 3));
        assert_eq!(d.qname_off, 54 + 2 + 12);
        // a×1, b×2, c×3 over 6 characters: -(1/6·log2(1/6) + 2/6·log2(2/6) + 3/6·log2(3/6)).
        let by_hand = -((1.0f64 / 6.0) * (1.0f64 / 6.0).log2()
            + (2.0 / 6.0) * (2.0f64 / 6.0).log2()
            + 0.5 * 0.5f64.log2()) as f32;
        assert!((d.qname_entropy - by_hand).abs() < 1e-5);
        assert_eq!(qname(&f, &m), b"a.bb.ccc");

        // mDNS over IPv6, LLMNR over IPv4.
        let q = dns_query(0, "printer.local", 12);
        let m = eth(&eth_ipv6_udp(MAC_A, MAC_B, A6, B6, 5353, 5353, &q));
        assert_eq!(
            m.dns.map(|d| (d.qname_len, d.labels, d.qtype)),
            Some((13, 2, 12))
        );
        let q = dns_query(1, "nas", 1);
        let m = eth(&eth_ipv4_udp(MAC_A, MAC_B, A4, B4, 60000, 5355, &q));
        let d = m.dns.unwrap();
        assert_eq!((d.qname_len, d.labels), (3, 1));
        assert!((d.qname_entropy - 3f32.log2()).abs() < 1e-6);
        // Not a DNS port: not parsed.
        assert_eq!(
            eth(&eth_ipv4_udp(MAC_A, MAC_B, A4, B4, 60000, 54, &q)).dns,
            None
        );
        // A bare TCP handshake to port 53 has no message.
        let f = eth_ipv4_tcp(MAC_A, MAC_B, A4, B4, 40000, 53, tcp_flags::SYN, 1, 0, b"");
        assert_eq!((eth(&f).error, eth(&f).dns), (None, None));
    }

    #[test]
    fn dns_edge_names() {
        let udp = |q: &[u8]| eth(&eth_ipv4_udp(MAC_A, MAC_B, A4, B4, 1000, 53, q));
        // Root name.
        let d = udp(&dns_query(1, "", 2)).dns.unwrap();
        assert_eq!((d.qname_len, d.labels, d.qname_entropy), (0, 0, 0.0));
        // One repeated character: no uncertainty.
        let d = udp(&dns_query(1, "aaaa.aa", 1)).dns.unwrap();
        assert_eq!((d.qname_len, d.labels, d.qname_entropy), (7, 2, 0.0));
        // 64 distinct characters: 6 bits each.
        let name: String = (0..64u8)
            .map(|i| {
                b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"[i as usize]
                    as char
            })
            .collect();
        let dotted = format!("{}.{}", &name[..32], &name[32..]);
        let d = udp(&dns_query(1, &dotted, 1)).dns.unwrap();
        assert_eq!((d.qname_len, d.labels), (65, 2));
        assert!((d.qname_entropy - 6.0).abs() < 1e-5);
        // Longest legal name: 253 characters (encoded 255).
        let long = [
            &"x".repeat(63)[..],
            &"y".repeat(63),
            &"z".repeat(63),
            &"w".repeat(61),
        ]
        .join(".");
        let f = eth_ipv4_udp(MAC_A, MAC_B, A4, B4, 1000, 53, &dns_query(1, &long, 1));
        let m = eth(&f);
        assert_eq!(m.error, None);
        assert_eq!(m.dns.map(|d| (d.qname_len, d.labels)), Some((253, 4)));
        assert_eq!(qname(&f, &m), long.as_bytes());
        // One byte longer is malformed.
        let long = [
            &"x".repeat(63)[..],
            &"y".repeat(63),
            &"z".repeat(63),
            &"w".repeat(62),
        ]
        .join(".");
        let m = udp(&dns_query(1, &long, 1));
        assert_eq!((m.error, m.dns), (Some(DecodeError::DnsMalformed), None));
        // No question (mDNS announcements): nothing to report, nothing wrong.
        let mut q = dns_query(1, "x", 1);
        q[5] = 0;
        let m = udp(&q);
        assert_eq!((m.error, m.dns), (None, None));
    }

    #[test]
    fn dns_malformed_keeps_the_rest() {
        let check = |payload: &[u8]| {
            let f = eth_ipv4_udp(MAC_A, MAC_B, A4, B4, 1000, 53, payload);
            let m = eth(&f);
            assert_eq!(m.error, Some(DecodeError::DnsMalformed), "{payload:?}");
            assert_eq!(m.dns, None);
            assert_eq!((m.l3, m.src_port, m.dst_port), (L3::Ipv4, 1000, 53));
            assert_eq!(
                (m.payload_off as usize, m.payload_len as usize),
                (42, payload.len())
            );
        };
        let q = dns_query(1, "abc.de", 1);
        // A compression pointer in the question.
        let mut p = q[..12].to_vec();
        p.extend_from_slice(&[3, b'a', b'b', b'c', 0xc0, 0x0c, 0, 1, 0, 1]);
        check(&p);
        // Reserved label types 0x40 and 0x80 (a "label" of 64 or more).
        p[16] = 0x40;
        check(&p);
        p[16] = 0x80;
        check(&p);
        // Short header, name running off the end, missing qtype.
        check(&q[..11]);
        check(&q[..15]);
        check(&q[..q.len() - 4]);
        // TCP: length prefix without a full header.
        let f = eth_ipv4_tcp(
            MAC_A,
            MAC_B,
            A4,
            B4,
            1,
            53,
            tcp_flags::ACK,
            1,
            1,
            &[0, 30, 1, 2],
        );
        let m = eth(&f);
        assert_eq!(
            (m.error, m.src_port, m.payload_len),
            (Some(DecodeError::DnsMalformed), 1, 4)
        );
    }

    #[test]
    fn dns_qname_never_overruns() {
        let mut out = [0u8; 256];
        // Offset past the frame, and a label running past it.
        let d = DnsInfo {
            qname_off: 1000,
            ..DnsInfo::default()
        };
        assert_eq!(dns_qname(&[1, 2, 3], &d, &mut out), b"");
        let d = DnsInfo {
            qname_off: 0,
            ..DnsInfo::default()
        };
        assert_eq!(dns_qname(&[2, b'a', b'b', 5, b'c'], &d, &mut out), b"ab");
        // More than 256 bytes of labels: stops at the buffer's end.
        let mut big = Vec::new();
        for _ in 0..10 {
            big.push(63);
            big.extend([b'q'; 63]);
        }
        let name = dns_qname(&big, &d, &mut out);
        assert!(name.len() <= 256);
        assert_eq!(name.len(), 63 * 4 + 3);
    }

    // ---- truncation at every prefix ----

    /// Decodes every prefix of `frame` and checks the error: `layers` lists, in order, the
    /// byte offset where each layer ends and the error a cut before that offset gives. A
    /// cut at or past the last offset decodes cleanly.
    fn check_prefixes(link: LinkType, frame: &[u8], layers: &[(usize, Option<DecodeError>)]) {
        let full = decode(link, frame, frame.len() as u32);
        assert_eq!(full.error, None, "full frame");
        for cut in 0..=frame.len() {
            let m = decode(link, &frame[..cut], frame.len() as u32);
            let want = layers
                .iter()
                .find(|(end, _)| cut < *end)
                .and_then(|&(_, e)| e);
            assert_eq!(
                m.error,
                want,
                "{} cut at {cut} of {}",
                link.name(),
                frame.len()
            );
            assert_eq!(m.cap_len as usize, cut);
            assert!(m.payload_off as usize + m.payload_len as usize <= cut);
            // What was decoded above the cut layer is kept.
            if cut >= 14 && link == LinkType::Ethernet {
                assert_eq!((m.src_mac, m.dst_mac), (full.src_mac, full.dst_mac));
            }
        }
    }

    #[test]
    fn truncation_at_every_prefix() {
        use DecodeError::*;
        let dns = dns_query(3, "cut.example", 1);
        let f = eth_ipv4_udp(MAC_A, MAC_B, A4, B4, 999, 53, &dns);
        check_prefixes(
            LinkType::Ethernet,
            &f,
            &[
                (14, Some(LinkTruncated)),
                (34, Some(Ipv4Truncated)),
                (42, Some(UdpTruncated)),
                (43, None),
                (f.len(), Some(DnsMalformed)),
            ],
        );

        let f = eth_ipv4_tcp(
            MAC_A,
            MAC_B,
            A4,
            B4,
            1,
            53,
            tcp_flags::ACK,
            1,
            1,
            &dns_over_tcp(&dns),
        );
        check_prefixes(
            LinkType::Ethernet,
            &f,
            &[
                (14, Some(LinkTruncated)),
                (34, Some(Ipv4Truncated)),
                (54, Some(TcpTruncated)),
                (55, None),
                (f.len(), Some(DnsMalformed)),
            ],
        );

        let f = eth_ipv4_tcp_mss(
            MAC_A,
            MAC_B,
            A4,
            B4,
            1,
            80,
            tcp_flags::SYN,
            1,
            0,
            1400,
            b"GET",
        );
        check_prefixes(
            LinkType::Ethernet,
            &f,
            &[
                (14, Some(LinkTruncated)),
                (34, Some(Ipv4Truncated)),
                (66, Some(TcpTruncated)),
            ],
        );

        let opts = [0x94, 0x04, 0, 0];
        let ip = ipv4_packet(
            A4,
            B4,
            1,
            64,
            5,
            false,
            0,
            &opts,
            &[8, 0, 0, 0, 0, 1, 0, 2, 0xaa],
        );
        let f = ethernet(MAC_A, MAC_B, ETHERTYPE_IPV4, &ip);
        check_prefixes(
            LinkType::Ethernet,
            &f,
            &[
                (14, Some(LinkTruncated)),
                (38, Some(Ipv4Truncated)),
                (46, Some(IcmpTruncated)),
            ],
        );

        let f = with_vlan_tags(
            &eth_ipv4_udp(MAC_A, MAC_B, A4, B4, 1, 2, b"q"),
            &[(ETHERTYPE_QINQ, 1), (ETHERTYPE_VLAN, 2)],
        );
        check_prefixes(
            LinkType::Ethernet,
            &f,
            &[
                (14, Some(LinkTruncated)),
                (22, Some(VlanTruncated)),
                (42, Some(Ipv4Truncated)),
                (50, Some(UdpTruncated)),
            ],
        );

        let ip = strip_ethernet(&eth_ipv4_udp(MAC_A, MAC_B, A4, B4, 1, 2, b"q"));
        let f = pppoe_session(MAC_A, MAC_B, 1, &ip);
        check_prefixes(
            LinkType::Ethernet,
            &f,
            &[
                (14, Some(LinkTruncated)),
                (22, Some(PppoeTruncated)),
                (42, Some(Ipv4Truncated)),
                (50, Some(UdpTruncated)),
            ],
        );

        let f = arp_request(MAC_A, A4, B4);
        check_prefixes(
            LinkType::Ethernet,
            &f,
            &[(14, Some(LinkTruncated)), (42, Some(ArpTruncated))],
        );

        let mut chain = ipv6_ext(44, &[0; 6]);
        chain.extend(ipv6_frag(6, 0, true, 1));
        chain.extend(tcp_segment(
            1,
            2,
            tcp_flags::SYN,
            0,
            0,
            &[2, 4, 5, 0xb4],
            b"",
        ));
        let f = ethernet(
            MAC_A,
            MAC_B,
            ETHERTYPE_IPV6,
            &ipv6_packet(A6, B6, 0, 64, &chain),
        );
        check_prefixes(
            LinkType::Ethernet,
            &f,
            &[
                (14, Some(LinkTruncated)),
                (54, Some(Ipv6Truncated)),
                (70, Some(Ipv6ExtTruncated)),
                (94, Some(TcpTruncated)),
            ],
        );

        let f = eth_ipv6_icmpv6_echo(MAC_A, MAC_B, A6, B6, false, 1, 2, b"xx");
        check_prefixes(
            LinkType::Ethernet,
            &f,
            &[
                (14, Some(LinkTruncated)),
                (54, Some(Ipv6Truncated)),
                (62, Some(IcmpTruncated)),
            ],
        );

        check_prefixes(
            LinkType::LinuxSll,
            &linux_sll(MAC_A, ETHERTYPE_IPV4, &ip),
            &[
                (16, Some(LinkTruncated)),
                (36, Some(Ipv4Truncated)),
                (44, Some(UdpTruncated)),
            ],
        );
        check_prefixes(
            LinkType::LinuxSll2,
            &linux_sll2(MAC_A, ETHERTYPE_IPV4, &ip),
            &[
                (20, Some(LinkTruncated)),
                (40, Some(Ipv4Truncated)),
                (48, Some(UdpTruncated)),
            ],
        );
        check_prefixes(
            LinkType::Null,
            &null_loopback(2, false, &ip),
            &[
                (4, Some(LinkTruncated)),
                (24, Some(Ipv4Truncated)),
                (32, Some(UdpTruncated)),
            ],
        );
        check_prefixes(
            LinkType::RawIp,
            &ip,
            &[
                (1, Some(LinkTruncated)),
                (20, Some(Ipv4Truncated)),
                (28, Some(UdpTruncated)),
            ],
        );
        check_prefixes(
            LinkType::Ipv4,
            &ip,
            &[(20, Some(Ipv4Truncated)), (28, Some(UdpTruncated))],
        );
    }

    // ---- random bytes ----

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    /// Properties every decode result has, whatever the input.
    fn check_invariants(link: LinkType, f: &[u8]) {
        let m = decode(link, f, f.len() as u32);
        let cap = f.len();
        assert_eq!(m.cap_len as usize, cap);
        assert!(
            m.payload_off as usize + m.payload_len as usize <= cap,
            "{link:?} {f:?}"
        );
        assert!(m.l4_off as usize <= cap && m.l3_off as usize <= cap);
        if m.l4_off > 0 {
            assert!(m.l4_off > m.l3_off);
        }
        assert!(m.ipv6_ext_headers <= MAX_IPV6_EXT_HEADERS);
        if let Some(d) = m.dns {
            let mut out = [0u8; 256];
            let name = dns_qname(f, &d, &mut out);
            assert_eq!(name.len(), usize::from(d.qname_len), "{f:?}");
            assert_eq!(
                name.split(|&b| b == b'.')
                    .count()
                    .min(usize::from(d.labels.max(1))),
                usize::from(d.labels.max(1))
            );
            assert!(d.qname_entropy.is_finite() && (0.0..=8.0).contains(&d.qname_entropy));
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        const LINKS: [LinkType; 7] = [
            LinkType::Ethernet,
            LinkType::LinuxSll,
            LinkType::LinuxSll2,
            LinkType::RawIp,
            LinkType::Ipv4,
            LinkType::Ipv6,
            LinkType::Null,
        ];
        // Valid frames to mutate, so random changes reach deep layers too.
        let seeds: Vec<(LinkType, Vec<u8>)> = vec![
            (
                LinkType::Ethernet,
                eth_ipv4_udp(
                    MAC_A,
                    MAC_B,
                    A4,
                    B4,
                    1,
                    53,
                    &dns_query(1, "a.example.org", 1),
                ),
            ),
            (
                LinkType::Ethernet,
                eth_ipv4_tcp(
                    MAC_A,
                    MAC_B,
                    A4,
                    B4,
                    1,
                    53,
                    0x18,
                    1,
                    1,
                    &dns_over_tcp(&dns_query(1, "b.example", 1)),
                ),
            ),
            (
                LinkType::Ethernet,
                eth_ipv4_tcp_mss(MAC_A, MAC_B, A4, B4, 1, 80, 2, 1, 0, 1460, b""),
            ),
            (
                LinkType::Ethernet,
                with_vlan_tags(
                    &eth_ipv6_udp(
                        MAC_A,
                        MAC_B,
                        A6,
                        B6,
                        5353,
                        5353,
                        &dns_query(0, "x.local", 1),
                    ),
                    &[(ETHERTYPE_VLAN, 3)],
                ),
            ),
            (
                LinkType::Ethernet,
                ethernet(
                    MAC_A,
                    MAC_B,
                    ETHERTYPE_IPV6,
                    &ipv6_packet(
                        A6,
                        B6,
                        0,
                        64,
                        &[
                            ipv6_ext(44, &[]),
                            ipv6_frag(17, 0, true, 9),
                            udp_datagram(1, 53, &dns_query(2, "frag.test", 1)),
                        ]
                        .concat(),
                    ),
                ),
            ),
            (
                LinkType::Ethernet,
                pppoe_session(
                    MAC_A,
                    MAC_B,
                    1,
                    &strip_ethernet(&eth_ipv4_icmp_echo(MAC_A, MAC_B, A4, B4, false, 1, 1, b"x")),
                ),
            ),
            (LinkType::Ethernet, arp_request(MAC_A, A4, B4)),
            (
                LinkType::LinuxSll2,
                linux_sll2(
                    MAC_A,
                    ETHERTYPE_IPV4,
                    &strip_ethernet(&eth_ipv4_udp(
                        MAC_A,
                        MAC_B,
                        A4,
                        B4,
                        1,
                        53,
                        &dns_query(1, "c.c", 1),
                    )),
                ),
            ),
        ];
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut buf = [0u8; 256];
        let mut dns_seen = 0u32;
        for i in 0..100_000u32 {
            let r = rng.next();
            if i % 2 == 0 {
                // Pure noise, with a plausible first byte half the time.
                let link = LINKS[(r % 7) as usize];
                let len = ((r >> 8) % 160) as usize;
                for b in buf[..len].iter_mut() {
                    *b = rng.next() as u8;
                }
                if r & (1 << 40) != 0 && len > 0 {
                    buf[0] = if r & (1 << 41) != 0 { 0x45 } else { 0x60 };
                }
                check_invariants(link, &buf[..len]);
            } else {
                // A valid frame with a few random bytes changed, maybe cut short.
                let (link, seed) = &seeds[(r % seeds.len() as u64) as usize];
                let mut f = seed.clone();
                for _ in 0..1 + (r >> 8) % 4 {
                    let x = rng.next();
                    let at = (x % f.len() as u64) as usize;
                    f[at] = (x >> 32) as u8;
                }
                let cut = if r & (1 << 50) != 0 {
                    ((r >> 20) % (f.len() as u64 + 1)) as usize
                } else {
                    f.len()
                };
                check_invariants(*link, &f[..cut]);
                dns_seen += decode(*link, &f[..cut], 0).dns.is_some() as u32;
            }
        }
        // The mutated frames really did exercise the deepest layer.
        assert!(dns_seen > 5_000, "{dns_seen}");
    }
}
