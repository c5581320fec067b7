//! Raw frame bytes → `PacketMeta`, a small `Copy` summary every later stage reads.
//!
//! Decoding never allocates and never panics: every field access is preceded by a length
//! check. A truncated or malformed layer stops decoding at that layer, records a
//! `DecodeError` in the meta (what was decoded above it stays usable) and is counted by
//! kind in the engine's statistics. Checksums are not verified: offload makes bad ones
//! common on the capturing host.

use std::net::{IpAddr, Ipv4Addr};

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
}

impl DecodeError {
    pub const COUNT: usize = 13;
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

/// Decodes one frame of the given link type. Never panics, never allocates.
pub fn decode(link: LinkType, frame: &[u8], wire_len: u32) -> PacketMeta {
    // Placeholder until the full decoder lands: records sizes only.
    let _ = link;
    PacketMeta {
        wire_len,
        cap_len: frame.len() as u32,
        error: Some(DecodeError::LinkTruncated),
        ..PacketMeta::default()
    }
}

/// Writes the DNS query name of `dns` (decoded from `frame`) in dotted text form into `out`
/// and returns the written part. Labels are copied as raw bytes; compression pointers are
/// not followed (a query's name is never compressed). Never panics.
pub fn dns_qname<'a>(frame: &[u8], dns: &DnsInfo, out: &'a mut [u8; 256]) -> &'a [u8] {
    let _ = (frame, dns);
    &out[..0]
}
