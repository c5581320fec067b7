//! Suricata rule text → compiled `Rule`. Every refusal is a message naming the keyword (the
//! caller adds file:line), so a rule we cannot honour is skipped, never half-applied.

use std::collections::HashMap;

use regex::bytes::RegexBuilder;

use super::addr::{Kind, Ranges, VarTable, ADDR_MAX, PORT_MAX};
use super::classify;
use super::matcher::{ByteOp, Cond, Content, FlagMode, NumFormat, PMatch, UCmp, Val, MAX_VARS};
use super::threshold::{ThreshKind, ThreshSpec, Track, UniqueOn, UNIQ_CAP};

/// What a rule does when it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Suppresses alerts for the packet and the rest of its flow.
    Pass,
    /// Alerts (we are an IDS: nothing is dropped); reported as "blocked" like Suricata IPS.
    Drop,
    /// Treated like drop.
    Reject,
    Alert,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pass => "pass",
            Action::Drop => "drop",
            Action::Reject => "reject",
            Action::Alert => "alert",
        }
    }

    /// The EVE `alert.action` value: "allowed" for alert, "blocked" for drop/reject.
    pub fn eve_action(self) -> &'static str {
        match self {
            Action::Alert | Action::Pass => "allowed",
            Action::Drop | Action::Reject => "blocked",
        }
    }
}

/// Protocol of a rule header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Ip,
    Tcp,
    Udp,
    /// ICMPv4 and ICMPv6, as Suricata's `icmp`.
    Icmp,
    Icmp4,
    Icmp6,
    /// DNS messages (UDP or TCP) the decoder recognised, sent to a DNS port (53, 5353,
    /// 5355): Suricata's `dns` app-layer protocol for requests.
    Dns,
}

impl Proto {
    pub fn matches(self, ip_proto: u8) -> bool {
        match self {
            Proto::Ip => true,
            Proto::Dns => ip_proto == 6 || ip_proto == 17,
            Proto::Tcp => ip_proto == 6,
            Proto::Udp => ip_proto == 17,
            Proto::Icmp => ip_proto == 1 || ip_proto == 58,
            Proto::Icmp4 => ip_proto == 1,
            Proto::Icmp6 => ip_proto == 58,
        }
    }
}

/// `flow:` conditions as bits.
pub mod flowc {
    pub const TO_SERVER: u8 = 1;
    pub const TO_CLIENT: u8 = 2;
    pub const ESTABLISHED: u8 = 4;
    pub const NOT_ESTABLISHED: u8 = 8;
    /// Any flow condition at all (stateless excluded): the packet needs a flow.
    pub const NEEDS_FLOW: u8 = 16;
}

/// Flowbit operations on a 128-bit set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FbOp {
    Set(u128),
    Unset(u128),
    Toggle(u128),
    IsSetAny(u128),
    IsSetAll(u128),
    IsNotSetAny(u128),
    IsNotSetAll(u128),
}

impl FbOp {
    pub fn is_read(self) -> bool {
        matches!(
            self,
            FbOp::IsSetAny(_) | FbOp::IsSetAll(_) | FbOp::IsNotSetAny(_) | FbOp::IsNotSetAll(_)
        )
    }
}

/// One compiled rule.
#[derive(Debug)]
pub struct Rule {
    pub gid: u32,
    pub sid: u32,
    pub rev: u32,
    pub msg: String,
    pub classtype: String,
    pub category: &'static str,
    pub priority: u8,
    pub action: Action,
    pub proto: Proto,
    pub src: Ranges,
    pub sport: Ranges,
    pub dst: Ranges,
    pub dport: Ranges,
    pub src_any: bool,
    pub dst_any: bool,
    pub sport_any: bool,
    pub dport_any: bool,
    pub bidir: bool,
    pub flow: u8,
    pub conds: Vec<Cond>,
    /// `stream_size`: which side's TCP sequence space, compared how.
    pub stream_size: Option<(StreamSide, UCmp)>,
    pub payload: Vec<PMatch>,
    /// Matches in the `dns.query` buffer (the query name as dotted text, requests only).
    pub dns_query: Vec<PMatch>,
    /// Matches in header buffers (`ipv4.hdr`, `ipv6.hdr`, `tcp.hdr`, `udp.hdr`).
    pub hdrs: Vec<(HdrBuf, Vec<PMatch>)>,
    pub flowbits: Vec<FbOp>,
    pub noalert: bool,
    pub thresh: Option<ThreshSpec>,
    /// A `threshold` that follows a `detection_filter` in the same rule (a PhantomNet
    /// extension: Suricata refuses the pair): it rate-limits the matches the filter lets
    /// through, e.g. "past 25 distinct ports, at most one alert a minute".
    pub limit: Option<ThreshSpec>,
    /// Index in `payload` of the content used as fast pattern.
    pub fast: Option<usize>,
    /// Index in `dns_query` of the content used as fast pattern there (chosen the same way).
    pub dns_fast: Option<usize>,
    /// Where it came from (index into the origins list, and line).
    pub origin: u32,
    pub line: u32,
}

impl Rule {
    /// Suricata's flowbits ordering class: rules that only write bits run first, then those
    /// that read and write, then readers, then rules without flowbits.
    pub fn flowbits_class(&self) -> u8 {
        let reads = self.flowbits.iter().any(|f| f.is_read());
        let writes = self.flowbits.iter().any(|f| !f.is_read());
        match (writes, reads) {
            (true, false) => 0,
            (true, true) => 1,
            (false, true) => 2,
            (false, false) => 3,
        }
    }
}

/// Names of flowbits, shared across a rule set (at most 128).
#[derive(Debug, Default)]
pub struct FlowbitNames {
    pub names: HashMap<String, u8>,
}

impl FlowbitNames {
    fn bit(&mut self, name: &str) -> Result<u128, String> {
        if let Some(&b) = self.names.get(name) {
            return Ok(1u128 << b);
        }
        let n = self.names.len();
        if n >= 128 {
            return Err(format!(
                "flowbits: more than 128 distinct flowbit names (`{name}` is the 129th)"
            ));
        }
        self.names.insert(name.to_string(), n as u8);
        Ok(1u128 << n)
    }
}

/// Splits the option text at `;` outside quotes, honouring backslash escapes.
fn split_options(s: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut in_q = false;
    let mut esc = false;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if esc {
            esc = false;
            continue;
        }
        match c {
            '\\' => esc = true,
            '"' => in_q = !in_q,
            ';' if !in_q => {
                out.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    if in_q {
        return Err("unterminated quoted string in options".into());
    }
    let rest = s[start..].trim();
    if !rest.is_empty() {
        return Err(format!(
            "option `{rest}` is not terminated by `;` before `)`"
        ));
    }
    Ok(out)
}

/// Removes surrounding quotes (if any).
fn unquote(v: &str) -> &str {
    let v = v.trim();
    if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
        &v[1..v.len() - 1]
    } else {
        v
    }
}

/// Unescapes `\x` → `x` (msg and content text).
fn unescape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut esc = false;
    for c in v.chars() {
        if esc {
            out.push(c);
            esc = false;
        } else if c == '\\' {
            esc = true;
        } else {
            out.push(c);
        }
    }
    out
}

/// Content text (`abc|0d 0a|\"`) → bytes.
fn content_bytes(v: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut in_hex = false;
    let mut esc = false;
    let mut hex_digit: Option<u8> = None;
    for c in v.chars() {
        if in_hex {
            if c == '|' {
                if hex_digit.is_some() {
                    return Err(format!("content `{v}`: odd number of hex digits"));
                }
                in_hex = false;
                continue;
            }
            if c.is_whitespace() {
                continue;
            }
            let d = c
                .to_digit(16)
                .ok_or_else(|| format!("content `{v}`: `{c}` is not a hex digit"))?
                as u8;
            match hex_digit.take() {
                Some(h) => out.push(h * 16 + d),
                None => hex_digit = Some(d),
            }
            continue;
        }
        if esc {
            let mut b = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            esc = false;
            continue;
        }
        match c {
            '\\' => esc = true,
            '|' => in_hex = true,
            _ => {
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
    if in_hex {
        return Err(format!("content `{v}`: unterminated |hex| block"));
    }
    if out.is_empty() {
        return Err("content is empty".into());
    }
    Ok(out)
}

fn parse_num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, String> {
    v.trim()
        .parse::<T>()
        .map_err(|_| format!("{key}: `{v}` is not a valid number"))
}

/// Which side(s) of a TCP stream `stream_size` compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamSide {
    Client,
    Server,
    Both,
    Either,
}

impl StreamSide {
    /// `sizes` is (client, server) sequence space used.
    pub fn test(self, cmp: UCmp, sizes: [u32; 2]) -> bool {
        let (c, s) = (cmp.test(u64::from(sizes[0])), cmp.test(u64::from(sizes[1])));
        match self {
            StreamSide::Client => c,
            StreamSide::Server => s,
            StreamSide::Both => c && s,
            StreamSide::Either => c || s,
        }
    }
}

/// `stream_size:<server|client|both|either>,<modifier>,<number>` with a modifier of
/// `>`, `<`, `=`, `!=`, `>=` or `<=` (Suricata's syntax).
fn parse_stream_size(v: &str) -> Result<(StreamSide, UCmp), String> {
    let parts: Vec<&str> = v.split(',').map(str::trim).collect();
    let [side, modifier, number] = parts[..] else {
        return Err(format!(
            "stream_size: `{v}` is not <server|client|both|either>,<modifier>,<number>"
        ));
    };
    let side = match side {
        "server" => StreamSide::Server,
        "client" => StreamSide::Client,
        "both" => StreamSide::Both,
        "either" => StreamSide::Either,
        _ => {
            return Err(format!(
                "stream_size: `{side}` is not server, client, both or either"
            ))
        }
    };
    if !matches!(modifier, ">" | "<" | "=" | "!=" | ">=" | "<=") {
        return Err(format!(
            "stream_size: modifier `{modifier}` is not one of > < = != >= <="
        ));
    }
    let n = parse_num::<u32>("stream_size", number)?;
    Ok((side, parse_ucmp("stream_size", &format!("{modifier}{n}"))?))
}

fn parse_ucmp(key: &str, v: &str) -> Result<UCmp, String> {
    let v = v.trim();
    let num = |s: &str| -> Result<u64, String> { parse_num::<u64>(key, s) };
    if let Some((a, b)) = v.split_once("<>") {
        let (a, b) = (num(a)?, num(b)?);
        if a >= b {
            return Err(format!("{key}: range `{v}` is empty"));
        }
        return Ok(UCmp::Range(a, b));
    }
    if let Some(r) = v.strip_prefix("<=") {
        return Ok(UCmp::Le(num(r)?));
    }
    if let Some(r) = v.strip_prefix(">=") {
        return Ok(UCmp::Ge(num(r)?));
    }
    if let Some(r) = v.strip_prefix("!=") {
        return Ok(UCmp::Ne(num(r)?));
    }
    if let Some(r) = v.strip_prefix('<') {
        return Ok(UCmp::Lt(num(r)?));
    }
    if let Some(r) = v.strip_prefix('>') {
        return Ok(UCmp::Gt(num(r)?));
    }
    if let Some(r) = v.strip_prefix('!') {
        return Ok(UCmp::Ne(num(r)?));
    }
    if let Some(r) = v.strip_prefix('=') {
        return Ok(UCmp::Eq(num(r)?));
    }
    if let Some((a, b)) = v.split_once('-') {
        let (a, b) = (num(a)?, num(b)?);
        if a >= b {
            return Err(format!("{key}: range `{v}` is empty"));
        }
        return Ok(UCmp::Range(a, b));
    }
    Ok(UCmp::Eq(num(v)?))
}

fn ucmp_max(c: UCmp) -> u64 {
    match c {
        UCmp::Eq(v) | UCmp::Ne(v) | UCmp::Lt(v) | UCmp::Le(v) | UCmp::Gt(v) | UCmp::Ge(v) => v,
        UCmp::Range(_, b) => b,
    }
}

fn parse_u8cmp(key: &str, v: &str) -> Result<UCmp, String> {
    let c = parse_ucmp(key, v)?;
    if ucmp_max(c) > 255 {
        return Err(format!("{key}: `{v}` is out of range 0-255"));
    }
    Ok(c)
}

fn tcp_flag_bit(c: char) -> Option<u8> {
    Some(match c.to_ascii_uppercase() {
        'F' => 0x01,
        'S' => 0x02,
        'R' => 0x04,
        'P' => 0x08,
        'A' => 0x10,
        'U' => 0x20,
        'E' | '2' => 0x40,
        'C' | '1' => 0x80,
        '0' => 0,
        _ => return None,
    })
}

fn parse_flags(v: &str) -> Result<Cond, String> {
    let (main, ignore_s) = match v.split_once(',') {
        Some((a, b)) => (a.trim(), Some(b.trim())),
        None => (v.trim(), None),
    };
    let mut mode = FlagMode::Exact;
    let mut bits = 0u8;
    for c in main.chars() {
        match c {
            '+' => mode = FlagMode::All,
            '*' => mode = FlagMode::Any,
            '!' => mode = FlagMode::Not,
            _ => {
                bits |= tcp_flag_bit(c)
                    .ok_or_else(|| format!("flags: `{c}` is not a TCP flag (FSRPAUCE0)"))?;
            }
        }
    }
    let mut ignore = 0u8;
    if let Some(ig) = ignore_s {
        for c in ig.chars() {
            ignore |= tcp_flag_bit(c)
                .ok_or_else(|| format!("flags: ignore mask `{c}` is not a TCP flag"))?;
        }
    }
    Ok(Cond::Flags { mode, bits, ignore })
}

fn parse_fragbits(v: &str) -> Result<Cond, String> {
    let mut mode = FlagMode::Exact;
    let mut bits = 0u8;
    for c in v.trim().chars() {
        match c.to_ascii_uppercase() {
            '+' => mode = FlagMode::All,
            '*' => mode = FlagMode::Any,
            '!' => mode = FlagMode::Not,
            'M' => bits |= 0x20,
            'D' => bits |= 0x40,
            'R' => bits |= 0x80,
            _ => return Err(format!("fragbits: `{c}` is not M, D or R")),
        }
    }
    Ok(Cond::Fragbits { mode, bits })
}

fn proto_number(name: &str) -> Option<u64> {
    Some(match name.to_ascii_lowercase().as_str() {
        "icmp" => 1,
        "igmp" => 2,
        "tcp" => 6,
        "udp" => 17,
        "gre" => 47,
        "esp" => 50,
        "ah" => 51,
        "ipv6-icmp" | "icmpv6" => 58,
        "sctp" => 132,
        _ => return None,
    })
}

/// A packet header as a sticky buffer: the bytes of that header, options included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HdrBuf {
    /// The IPv4 header (IHL × 4 bytes); IPv4 packets only.
    Ipv4,
    /// The 40-byte fixed IPv6 header; IPv6 packets only.
    Ipv6,
    /// The TCP header (data offset × 4 bytes).
    Tcp,
    /// The 8-byte UDP header.
    Udp,
}

/// The sticky buffer payload options go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cur {
    Payload,
    DnsQuery,
    /// Index into `Builder::hdrs`.
    Hdr(usize),
}

/// Per-rule parse state for payload options.
struct Builder<'n> {
    payload: Vec<PMatch>,
    dns_query: Vec<PMatch>,
    hdrs: Vec<(HdrBuf, Vec<PMatch>)>,
    /// The sticky buffer in force.
    cur: Cur,
    vars: Vec<String>,
    names: &'n mut FlowbitNames,
}

impl Builder<'_> {
    /// Where payload options go now: the sticky buffer's list or the packet payload's.
    fn list(&mut self) -> &mut Vec<PMatch> {
        match self.cur {
            Cur::Payload => &mut self.payload,
            Cur::DnsQuery => &mut self.dns_query,
            Cur::Hdr(i) => &mut self.hdrs[i].1,
        }
    }

    /// Makes `buf` the sticky buffer (a header named twice keeps one list).
    fn sticky_hdr(&mut self, buf: HdrBuf) {
        let i = match self.hdrs.iter().position(|(b, _)| *b == buf) {
            Some(i) => i,
            None => {
                self.hdrs.push((buf, Vec::new()));
                self.hdrs.len() - 1
            }
        };
        self.cur = Cur::Hdr(i);
    }

    fn last_content(&mut self, key: &str) -> Result<&mut Content, String> {
        match self.list().last_mut() {
            Some(PMatch::Content(c)) => Ok(c),
            _ => Err(format!("{key}: needs a preceding `content`")),
        }
    }

    fn val(&self, key: &str, s: &str) -> Result<Val, String> {
        let s = s.trim();
        if let Ok(n) = s.parse::<i64>() {
            return Ok(Val::Lit(n));
        }
        if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            if let Ok(n) = i64::from_str_radix(h, 16) {
                return Ok(Val::Lit(n));
            }
        }
        match self.vars.iter().position(|v| v == s) {
            Some(i) => Ok(Val::Var(i as u8)),
            None => Err(format!(
                "{key}: `{s}` is neither a number nor a byte_extract variable"
            )),
        }
    }
}

fn num_format(
    key: &str,
    opts: &[&str],
    big: &mut bool,
    base: &mut Option<u32>,
    bitmask: &mut Option<u64>,
    i: &mut usize,
) -> Result<bool, String> {
    let o = opts[*i];
    match o {
        "big" => *big = true,
        "little" => *big = false,
        "string" => {
            if base.is_none() {
                *base = Some(10);
            }
        }
        "hex" => *base = Some(16),
        "dec" => *base = Some(10),
        "oct" => *base = Some(8),
        "dce" => {
            return Err(format!(
                "{key}: `dce` needs DCERPC inspection (not supported)"
            ))
        }
        _ if o.starts_with("bitmask") => {
            let m = o["bitmask".len()..].trim();
            let m = m.trim_start_matches("0x").trim_start_matches("0X");
            *bitmask = Some(
                u64::from_str_radix(m, 16)
                    .map_err(|_| format!("{key}: bitmask `{o}` is not a hex number"))?,
            );
        }
        _ => return Ok(false),
    }
    Ok(true)
}

fn split_commas(v: &str) -> Vec<&str> {
    v.split(',').map(str::trim).collect()
}

fn parse_byte_test(b: &Builder<'_>, v: &str) -> Result<PMatch, String> {
    let key = "byte_test";
    let o = split_commas(v);
    if o.len() < 4 {
        return Err(format!(
            "{key}: expected `nbytes, op, value, offset[, ...]`, got `{v}`"
        ));
    }
    let nbytes: u8 = parse_num(key, o[0])?;
    let (negated, op_s) = match o[1].strip_prefix('!') {
        Some(r) => (true, r),
        None => (false, o[1]),
    };
    let (op, neg2) = match op_s {
        "<" => (ByteOp::Lt, false),
        ">" => (ByteOp::Gt, false),
        "=" => (ByteOp::Eq, false),
        "<=" => (ByteOp::Le, false),
        ">=" => (ByteOp::Ge, false),
        "&" => (ByteOp::And, false),
        "^" => (ByteOp::Xor, false),
        "!=" => (ByteOp::Eq, true),
        "" if negated => (ByteOp::Eq, false),
        _ => return Err(format!("{key}: `{}` is not an operator", o[1])),
    };
    let value = b.val(key, o[2])?;
    let offset = b.val(key, o[3])?;
    let (mut big, mut base, mut bitmask, mut relative) = (true, None, None, false);
    let mut i = 4;
    while i < o.len() {
        if o[i] == "relative" {
            relative = true;
        } else if !num_format(key, &o, &mut big, &mut base, &mut bitmask, &mut i)? {
            return Err(format!("{key}: unknown option `{}`", o[i]));
        }
        i += 1;
    }
    check_nbytes(key, nbytes, base)?;
    Ok(PMatch::ByteTest {
        nbytes,
        op,
        negated: negated ^ neg2,
        value,
        offset,
        relative,
        fmt: NumFormat {
            big,
            string_base: base,
            bitmask,
        },
    })
}

fn check_nbytes(key: &str, n: u8, base: Option<u32>) -> Result<(), String> {
    let max = if base.is_some() { 10 } else { 8 };
    if n == 0 || n > max {
        return Err(format!("{key}: nbytes {n} is out of range 1-{max}"));
    }
    Ok(())
}

fn parse_byte_jump(b: &Builder<'_>, v: &str) -> Result<PMatch, String> {
    let key = "byte_jump";
    let o = split_commas(v);
    if o.len() < 2 {
        return Err(format!(
            "{key}: expected `nbytes, offset[, ...]`, got `{v}`"
        ));
    }
    let nbytes = b.val(key, o[0])?;
    let offset = b.val(key, o[1])?;
    let (mut big, mut base, mut bitmask, mut relative) = (true, None, None, false);
    let (mut multiplier, mut align, mut from_beginning, mut from_end, mut post_offset) =
        (1u64, false, false, false, 0i64);
    let mut i = 2;
    while i < o.len() {
        let s = o[i];
        if s == "relative" {
            relative = true;
        } else if s == "align" {
            align = true;
        } else if s == "from_beginning" {
            from_beginning = true;
        } else if s == "from_end" {
            from_end = true;
        } else if let Some(m) = s.strip_prefix("multiplier") {
            multiplier = parse_num(key, m)?;
        } else if let Some(p) = s.strip_prefix("post_offset") {
            post_offset = parse_num(key, p)?;
        } else if !num_format(key, &o, &mut big, &mut base, &mut bitmask, &mut i)? {
            return Err(format!("{key}: unknown option `{s}`"));
        }
        i += 1;
    }
    if let Val::Lit(n) = nbytes {
        check_nbytes(key, u8::try_from(n).unwrap_or(0), base)?;
    }
    if from_beginning && from_end {
        return Err(format!("{key}: from_beginning and from_end together"));
    }
    Ok(PMatch::ByteJump {
        nbytes,
        offset,
        relative,
        multiplier,
        fmt: NumFormat {
            big,
            string_base: base,
            bitmask,
        },
        align,
        from_beginning,
        from_end,
        post_offset,
    })
}

fn parse_byte_extract(b: &mut Builder<'_>, v: &str) -> Result<PMatch, String> {
    let key = "byte_extract";
    let o = split_commas(v);
    if o.len() < 3 {
        return Err(format!(
            "{key}: expected `nbytes, offset, name[, ...]`, got `{v}`"
        ));
    }
    let nbytes: u8 = parse_num(key, o[0])?;
    let offset: i64 = parse_num(key, o[1])?;
    let name = o[2];
    if name.is_empty() || name.parse::<i64>().is_ok() {
        return Err(format!("{key}: `{name}` is not a variable name"));
    }
    let (mut big, mut base, mut bitmask, mut relative) = (true, None, None, false);
    let (mut multiplier, mut align) = (1u64, 0u8);
    let mut i = 3;
    while i < o.len() {
        let s = o[i];
        if s == "relative" {
            relative = true;
        } else if let Some(m) = s.strip_prefix("multiplier") {
            multiplier = parse_num(key, m)?;
        } else if let Some(a) = s.strip_prefix("align") {
            align = parse_num(key, a)?;
            if align != 2 && align != 4 {
                return Err(format!("{key}: align must be 2 or 4, got {align}"));
            }
        } else if !num_format(key, &o, &mut big, &mut base, &mut bitmask, &mut i)? {
            return Err(format!("{key}: unknown option `{s}`"));
        }
        i += 1;
    }
    check_nbytes(key, nbytes, base)?;
    let var = match b.vars.iter().position(|x| x == name) {
        Some(p) => p,
        None => {
            if b.vars.len() >= MAX_VARS {
                return Err(format!("{key}: more than {MAX_VARS} variables in one rule"));
            }
            b.vars.push(name.to_string());
            b.vars.len() - 1
        }
    };
    Ok(PMatch::ByteExtract {
        nbytes,
        offset,
        var: var as u8,
        relative,
        multiplier,
        fmt: NumFormat {
            big,
            string_base: base,
            bitmask,
        },
        align,
    })
}

fn parse_pcre(v: &str) -> Result<PMatch, String> {
    let v = v.trim();
    let (negated, rest) = match v.strip_prefix('!') {
        Some(r) => (true, r.trim()),
        None => (false, v),
    };
    let body = unquote(rest);
    // `\"` and `\;` are rule-level escapes; everything else belongs to the regex.
    let body = body.replace("\\\"", "\"").replace("\\;", ";");
    let open = body
        .find('/')
        .ok_or_else(|| format!("pcre: `{v}` does not start with `/`"))?;
    if open != 0 {
        return Err(format!("pcre: `{v}` does not start with `/`"));
    }
    let close = body
        .rfind('/')
        .filter(|&c| c > 0)
        .ok_or_else(|| format!("pcre: `{v}` has no closing `/`"))?;
    let pat = &body[1..close];
    let flags = &body[close + 1..];
    let mut rb = RegexBuilder::new(&pat.replace("\\Z", "\\n?\\z"));
    rb.unicode(false);
    let mut relative = false;
    let mut anchored = false;
    for f in flags.chars() {
        match f {
            'i' => {
                rb.case_insensitive(true);
            }
            's' => {
                rb.dot_matches_new_line(true);
            }
            'm' => {
                rb.multi_line(true);
            }
            'x' => {
                rb.ignore_whitespace(true);
            }
            'G' => {
                rb.swap_greed(true);
            }
            'R' => relative = true,
            'A' => anchored = true,
            'E' | 'O' => {}
            'U' | 'I' | 'P' | 'H' | 'D' | 'M' | 'C' | 'K' | 'S' | 'Y' | 'V' | 'W' | 'Z' | 'Q' => {
                return Err(format!(
                    "pcre: flag `{f}` inspects an HTTP/app-layer buffer (not supported)"
                ))
            }
            _ => return Err(format!("pcre: unknown flag `{f}`")),
        }
    }
    if anchored {
        let p = format!("\\A(?:{pat})");
        rb = RegexBuilder::new(&p);
        rb.unicode(false);
        for f in flags.chars() {
            match f {
                'i' => {
                    rb.case_insensitive(true);
                }
                's' => {
                    rb.dot_matches_new_line(true);
                }
                'm' => {
                    rb.multi_line(true);
                }
                'x' => {
                    rb.ignore_whitespace(true);
                }
                'G' => {
                    rb.swap_greed(true);
                }
                _ => {}
            }
        }
    }
    rb.size_limit(1 << 20);
    let re = rb.build().map_err(|e| {
        let first = e.to_string();
        let short = first.lines().last().unwrap_or("").trim().to_string();
        format!("pcre: `/{pat}/` cannot be compiled (backreferences, lookaround and the like are not supported): {short}")
    })?;
    // The regex's search cache is created on first use by a thread (which then owns it):
    // create it now, at load, on the thread that runs the loop, not on a later packet.
    let _ = re.is_match(b"");
    Ok(PMatch::Pcre {
        re,
        negated,
        relative,
    })
}

fn parse_threshold(key: &str, v: &str, df: bool) -> Result<ThreshSpec, String> {
    let mut kind = if df {
        Some(ThreshKind::DetectionFilter)
    } else {
        None
    };
    let (mut track, mut count, mut seconds, mut unique_on) = (None, None, None, None);
    for part in v.split(',') {
        let part = part.trim();
        let (k, val) = part
            .split_once(char::is_whitespace)
            .map(|(a, b)| (a.trim(), b.trim()))
            .ok_or_else(|| format!("{key}: `{part}` is not `name value`"))?;
        match k {
            "type" if !df => {
                kind = Some(match val {
                    "limit" => ThreshKind::Limit,
                    "threshold" => ThreshKind::Threshold,
                    "both" => ThreshKind::Both,
                    _ => {
                        return Err(format!(
                            "{key}: type `{val}` (expected limit, threshold or both)"
                        ))
                    }
                })
            }
            "track" => {
                track = Some(match val {
                    "by_src" => Track::BySrc,
                    "by_dst" => Track::ByDst,
                    "by_rule" => Track::ByRule,
                    "by_both" => Track::ByBoth,
                    "by_flow" => Track::ByFlow,
                    _ => {
                        return Err(format!(
                    "{key}: track `{val}` (expected by_src, by_dst, by_rule, by_both or by_flow)"
                ))
                    }
                })
            }
            "count" => count = Some(parse_num::<u32>(key, val)?),
            "seconds" => seconds = Some(parse_num::<u32>(key, val)?),
            "unique_on" if df => {
                unique_on = Some(match val {
                    "dst_port" => UniqueOn::DstPort,
                    "src_port" => UniqueOn::SrcPort,
                    _ => {
                        return Err(format!(
                            "{key}: unique_on `{val}` (expected src_port or dst_port)"
                        ))
                    }
                })
            }
            _ => return Err(format!("{key}: unknown setting `{k}`")),
        }
    }
    let spec = ThreshSpec {
        kind: kind.ok_or_else(|| format!("{key}: missing `type`"))?,
        track: track.ok_or_else(|| format!("{key}: missing `track`"))?,
        count: count.ok_or_else(|| format!("{key}: missing `count`"))?,
        seconds: seconds.ok_or_else(|| format!("{key}: missing `seconds`"))?,
        unique_on,
    };
    if spec.unique_on.is_some() && spec.count as usize >= UNIQ_CAP {
        return Err(format!(
            "{key}: unique_on with count {} (at most {} supported)",
            spec.count,
            UNIQ_CAP - 1
        ));
    }
    Ok(spec)
}

fn parse_flowbits(names: &mut FlowbitNames, v: &str) -> Result<Option<FbOp>, String> {
    let key = "flowbits";
    let (cmd, arg) = match v.split_once(',') {
        Some((a, b)) => (a.trim(), Some(b.trim())),
        None => (v.trim(), None),
    };
    if cmd == "noalert" {
        return Ok(None);
    }
    let arg = arg.ok_or_else(|| format!("{key}: `{cmd}` needs a flowbit name"))?;
    let (and, parts): (bool, Vec<&str>) = if arg.contains('&') {
        (true, arg.split('&').map(str::trim).collect())
    } else {
        (false, arg.split('|').map(str::trim).collect())
    };
    let mut mask = 0u128;
    for p in &parts {
        if p.is_empty() || p.contains(char::is_whitespace) {
            return Err(format!("{key}: `{p}` is not a flowbit name"));
        }
        mask |= names.bit(p)?;
    }
    let multi = parts.len() > 1;
    Ok(Some(match cmd {
        "set" if !multi || and => FbOp::Set(mask),
        "unset" if !multi || and => FbOp::Unset(mask),
        "toggle" if !multi || and => FbOp::Toggle(mask),
        "isset" if and => FbOp::IsSetAll(mask),
        "isset" => FbOp::IsSetAny(mask),
        "isnotset" if and => FbOp::IsNotSetAll(mask),
        "isnotset" => FbOp::IsNotSetAny(mask),
        "set" | "unset" | "toggle" => {
            return Err(format!("{key}: `{cmd}` takes `a&b` lists, not `a|b`"))
        }
        _ => return Err(format!("{key}: unknown command `{cmd}`")),
    }))
}

/// Splits a rule header into whitespace-separated tokens (brackets may hold spaces).
fn header_tokens(h: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0i32;
    for c in h.chars() {
        match c {
            '[' => {
                depth += 1;
                cur.push(c);
            }
            ']' => {
                depth -= 1;
                cur.push(c);
            }
            c if c.is_whitespace() && depth <= 0 => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c if c.is_whitespace() => {}
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

const IGNORED: &[&str] = &[
    "reference",
    "metadata",
    "rawbytes",
    "target",
    "tag",
    "prefilter",
    "requires",
];

/// Parses one rule (already joined across continuation lines).
pub fn parse_rule(
    text: &str,
    vars: &VarTable,
    names: &mut FlowbitNames,
    origin: u32,
    line: u32,
) -> Result<Rule, String> {
    let open = text.find('(').ok_or("missing `(` before the options")?;
    let close = text
        .rfind(')')
        .filter(|&c| c > open)
        .ok_or("missing `)` after the options")?;
    if !text[close + 1..].trim().is_empty() {
        return Err(format!(
            "unexpected text after `)`: `{}`",
            text[close + 1..].trim()
        ));
    }
    let head = header_tokens(&text[..open]);
    if head.len() != 7 {
        return Err(format!(
            "header needs 7 parts (action proto src sport dir dst dport), found {}: `{}`",
            head.len(),
            text[..open].trim()
        ));
    }
    let action = match head[0].as_str() {
        "alert" => Action::Alert,
        "drop" => Action::Drop,
        "reject" | "rejectsrc" | "rejectdst" | "rejectboth" => Action::Reject,
        "pass" => Action::Pass,
        a => {
            return Err(format!(
                "unknown action `{a}` (expected alert, drop, reject or pass)"
            ))
        }
    };
    let proto = match head[1].to_ascii_lowercase().as_str() {
        "ip" | "pkthdr" | "ipv4" | "ipv6" | "ip4" | "ip6" => Proto::Ip,
        "tcp" | "tcp-pkt" => Proto::Tcp,
        "udp" => Proto::Udp,
        "icmp" => Proto::Icmp,
        "icmpv4" => Proto::Icmp4,
        "icmpv6" => Proto::Icmp6,
        "dns" => Proto::Dns,
        p => {
            return Err(format!(
                "protocol `{p}` needs app-layer or stream inspection (supported: ip, tcp, udp, icmp, icmpv4, icmpv6, dns)"
            ))
        }
    };
    let addr = |s: &str, what: &str| {
        vars.parse(Kind::Addr, s)
            .map_err(|e| format!("{what} address `{s}`: {e}"))
    };
    let port = |s: &str, what: &str| {
        vars.parse(Kind::Port, s)
            .map_err(|e| format!("{what} port `{s}`: {e}"))
    };
    let src = addr(&head[2], "source")?;
    let sport = port(&head[3], "source")?;
    let bidir = match head[4].as_str() {
        "->" => false,
        "<>" => true,
        d => return Err(format!("direction `{d}` (expected -> or <>)")),
    };
    let dst = addr(&head[5], "destination")?;
    let dport = port(&head[6], "destination")?;

    let mut b = Builder {
        payload: Vec::new(),
        dns_query: Vec::new(),
        hdrs: Vec::new(),
        cur: Cur::Payload,
        vars: Vec::new(),
        names,
    };
    let (mut gid, mut sid, mut rev) = (1u32, None, 0u32);
    let mut msg = String::new();
    let mut classtype = String::new();
    let mut category = "";
    let mut class_prio = None;
    let mut priority = None;
    let mut flow = 0u8;
    let mut conds = Vec::new();
    let mut stream_size = None;
    let mut flowbits = Vec::new();
    let mut noalert = false;
    let mut thresh: Option<ThreshSpec> = None;
    let mut limit: Option<ThreshSpec> = None;

    for opt in split_options(&text[open + 1..close])? {
        if opt.is_empty() {
            continue;
        }
        let (key, val) = match opt.split_once(':') {
            Some((k, v)) => (k.trim(), v.trim()),
            None => (opt.trim(), ""),
        };
        match key {
            "msg" => msg = unescape(unquote(val)),
            "sid" => sid = Some(parse_num::<u32>(key, val)?),
            "rev" => rev = parse_num(key, val)?,
            "gid" => gid = parse_num(key, val)?,
            "classtype" => {
                let c = classify::lookup(val)
                    .ok_or_else(|| format!("classtype: unknown class `{val}`"))?;
                classtype = val.to_string();
                category = c.1;
                class_prio = Some(c.2);
            }
            "priority" => {
                let p: u8 = parse_num(key, val)?;
                if !(1..=255).contains(&p) {
                    return Err(format!("priority: `{val}` is out of range 1-255"));
                }
                priority = Some(p);
            }
            k if IGNORED.contains(&k) => {}
            "noalert" => noalert = true,
            "content" => {
                let (neg, body) = match val.strip_prefix('!') {
                    Some(r) => (true, r.trim()),
                    None => (false, val),
                };
                if !(body.starts_with('"') && body.ends_with('"') && body.len() >= 2) {
                    return Err(format!("content: `{val}` is not a quoted string"));
                }
                let bytes = content_bytes(&body[1..body.len() - 1])?;
                b.list().push(PMatch::Content(Content::new(bytes, neg)));
            }
            "nocase" => b.last_content(key)?.nocase = true,
            "offset" | "depth" | "distance" | "within" => {
                let v = b.val(key, val)?;
                let c = b.last_content(key)?;
                let slot = match key {
                    "offset" => &mut c.offset,
                    "depth" => &mut c.depth,
                    "distance" => &mut c.distance,
                    _ => &mut c.within,
                };
                if slot.is_some() {
                    return Err(format!("{key}: given twice for one content"));
                }
                *slot = Some(v);
                if (c.offset.is_some() || c.depth.is_some()) && c.is_relative() {
                    return Err(format!(
                        "{key}: offset/depth cannot be mixed with distance/within on one content"
                    ));
                }
                if let (Some(Val::Lit(w)), "within") = (c.within, key) {
                    if w < c.pat.len() as i64 {
                        return Err(format!("within: {w} is shorter than the content"));
                    }
                }
                if let (Some(Val::Lit(d)), "depth") = (c.depth, key) {
                    if d < c.pat.len() as i64 {
                        return Err(format!("depth: {d} is shorter than the content"));
                    }
                }
            }
            "startswith" => {
                let c = b.last_content(key)?;
                c.offset = Some(Val::Lit(0));
                c.depth = Some(Val::Lit(c.pat.len() as i64));
            }
            "endswith" => b.last_content(key)?.endswith = true,
            "fast_pattern" => b.last_content(key)?.fast_pattern = true,
            "pcre" => {
                let m = parse_pcre(val)?;
                b.list().push(m);
            }
            "dns.query" | "dns_query" => {
                if !matches!(proto, Proto::Dns | Proto::Udp | Proto::Tcp | Proto::Ip) {
                    return Err(format!("{key}: needs a dns, udp, tcp or ip rule"));
                }
                b.cur = Cur::DnsQuery;
            }
            "pkt_data" => b.cur = Cur::Payload,
            "bsize" => {
                if b.cur == Cur::Payload {
                    return Err("bsize: needs a sticky buffer before it (e.g. dns.query)".into());
                }
                let c = parse_ucmp(key, val)?;
                b.list().push(PMatch::Bsize(c));
            }
            "ipv4.hdr" => b.sticky_hdr(HdrBuf::Ipv4),
            "ipv6.hdr" => b.sticky_hdr(HdrBuf::Ipv6),
            "tcp.hdr" | "udp.hdr" => {
                let (buf, need) = if key == "tcp.hdr" {
                    (HdrBuf::Tcp, Proto::Tcp)
                } else {
                    (HdrBuf::Udp, Proto::Udp)
                };
                if proto != need && proto != Proto::Ip {
                    return Err(format!("{key}: needs a {} or ip rule", &key[..3]));
                }
                b.sticky_hdr(buf);
            }
            "byte_test" => {
                let m = parse_byte_test(&b, val)?;
                b.list().push(m);
            }
            "byte_jump" => {
                let m = parse_byte_jump(&b, val)?;
                b.list().push(m);
            }
            "byte_extract" => {
                let m = parse_byte_extract(&mut b, val)?;
                b.list().push(m);
            }
            "isdataat" => {
                let mut parts = val.split(',').map(str::trim);
                let first = parts.next().unwrap_or("");
                let (negated, n) = match first.strip_prefix('!') {
                    Some(r) => (true, r),
                    None => (false, first),
                };
                let n = b.val(key, n)?;
                let mut relative = false;
                for p in parts {
                    match p {
                        "relative" => relative = true,
                        "rawbytes" => {}
                        _ => return Err(format!("isdataat: unknown option `{p}`")),
                    }
                }
                b.list().push(PMatch::IsDataAt {
                    n,
                    relative,
                    negated,
                });
            }
            "dsize" => conds.push(Cond::Dsize(parse_ucmp(key, val)?)),
            "stream_size" => {
                if stream_size.is_some() {
                    return Err("`stream_size` given twice".into());
                }
                stream_size = Some(parse_stream_size(val)?);
            }
            "ttl" => conds.push(Cond::Ttl(parse_u8cmp(key, val)?)),
            "itype" => conds.push(Cond::Itype(parse_u8cmp(key, val)?)),
            "icode" => conds.push(Cond::Icode(parse_u8cmp(key, val)?)),
            "icmp_id" => conds.push(Cond::IcmpId(parse_num(key, val)?)),
            "icmp_seq" => conds.push(Cond::IcmpSeq(parse_num(key, val)?)),
            "tcp.mss" => {
                let c = parse_ucmp(key, val)?;
                if ucmp_max(c) > 65535 {
                    return Err(format!("tcp.mss: `{val}` is out of range 0-65535"));
                }
                conds.push(Cond::Mss(c));
            }
            "ip_proto" => {
                let v = val.trim();
                let (prefix, name) = match v.find(|c: char| c.is_ascii_alphanumeric()) {
                    Some(i) => v.split_at(i),
                    None => return Err(format!("ip_proto: `{v}` is not a protocol")),
                };
                let num = match proto_number(name) {
                    Some(n) => n,
                    None => parse_num::<u8>(key, name)
                        .map(u64::from)
                        .map_err(|_| format!("ip_proto: `{name}` is not a protocol name or number"))?,
                };
                conds.push(Cond::IpProto(parse_u8cmp(key, &format!("{prefix}{num}"))?));
            }
            "flags" | "tcp.flags" => conds.push(parse_flags(val)?),
            "seq" => conds.push(Cond::Seq(parse_num(key, val)?)),
            "ack" => conds.push(Cond::Ack(parse_num(key, val)?)),
            "window" => {
                let (negated, v) = match val.strip_prefix('!') {
                    Some(r) => (true, r),
                    None => (false, val),
                };
                conds.push(Cond::Window {
                    negated,
                    value: parse_num(key, v)?,
                });
            }
            "id" => conds.push(Cond::IpId(parse_num(key, val)?)),
            "sameip" => conds.push(Cond::SameIp),
            "ipopts" => {
                let name = val.trim();
                let bit = super::matcher::ipopt::NAMES
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|&(_, b)| b)
                    .ok_or_else(|| {
                        format!(
                            "ipopts: `{name}` is not one of rr, eol, nop, ts, sec, esec, lsrr, ssrr, satid, any"
                        )
                    })?;
                conds.push(Cond::IpOpts(bit));
            }
            "fragbits" => conds.push(parse_fragbits(val)?),
            "fragoffset" => {
                let (negated, v) = match val.strip_prefix('!') {
                    Some(r) => (true, r),
                    None => (false, val),
                };
                conds.push(Cond::Fragoffset {
                    negated,
                    cmp: parse_ucmp(key, v)?,
                });
            }
            "tos" => {
                let (negated, v) = match val.strip_prefix('!') {
                    Some(r) => (true, r),
                    None => (false, val),
                };
                let value = match v.strip_prefix('x').or_else(|| v.strip_prefix("0x")) {
                    Some(h) => u8::from_str_radix(h, 16)
                        .map_err(|_| format!("tos: `{val}` is not a byte"))?,
                    None => parse_num(key, v)?,
                };
                conds.push(Cond::Tos { negated, value });
            }
            "flow" => {
                for f in val.split(',').map(str::trim) {
                    flow |= match f {
                        "to_server" | "from_client" => flowc::TO_SERVER | flowc::NEEDS_FLOW,
                        "to_client" | "from_server" => flowc::TO_CLIENT | flowc::NEEDS_FLOW,
                        "established" => flowc::ESTABLISHED | flowc::NEEDS_FLOW,
                        "not_established" => flowc::NOT_ESTABLISHED | flowc::NEEDS_FLOW,
                        "stateless" | "no_stream" | "no_frag" => 0,
                        "only_stream" | "only_frag" => {
                            return Err(format!(
                                "flow: `{f}` needs stream reassembly (not supported)"
                            ))
                        }
                        _ => return Err(format!("flow: unknown option `{f}`")),
                    };
                }
                if flow & flowc::TO_SERVER != 0 && flow & flowc::TO_CLIENT != 0 {
                    return Err("flow: to_server and to_client together".into());
                }
                if flow & flowc::ESTABLISHED != 0 && flow & flowc::NOT_ESTABLISHED != 0 {
                    return Err("flow: established and not_established together".into());
                }
            }
            "flowbits" => match parse_flowbits(b.names, val)? {
                Some(op) => flowbits.push(op),
                None => noalert = true,
            },
            "threshold" | "detection_filter" => {
                let spec = parse_threshold(key, val, key == "detection_filter")?;
                let df = |t: &Option<ThreshSpec>| {
                    t.is_some_and(|t| t.kind == ThreshKind::DetectionFilter)
                };
                // One of each at most; with both, the detection_filter gates and the
                // threshold rate-limits what passes it.
                if limit.is_some() || (thresh.is_some() && df(&thresh) == df(&Some(spec))) {
                    return Err(format!(
                        "{key}: a rule may carry one threshold and one detection_filter at most"
                    ));
                }
                match thresh {
                    None => thresh = Some(spec),
                    Some(first) if first.kind == ThreshKind::DetectionFilter => {
                        limit = Some(spec)
                    }
                    Some(first) => {
                        thresh = Some(spec);
                        limit = Some(first);
                    }
                }
            }
            _ => {
                return Err(format!(
                    "unsupported keyword `{key}` (app-layer buffers, stream and other keywords outside the per-packet subset are not inspected)"
                ))
            }
        }
    }
    let sid = sid.ok_or("missing `sid`")?;
    let fast = finish_contents(&mut b.payload);
    let dns_fast = finish_contents(&mut b.dns_query);
    for (_, list) in b.hdrs.iter_mut() {
        finish_contents(list);
    }
    Ok(Rule {
        gid,
        sid,
        rev,
        msg,
        classtype,
        category,
        priority: priority.or(class_prio).unwrap_or(3),
        action,
        proto,
        src_any: src.is_all(ADDR_MAX),
        dst_any: dst.is_all(ADDR_MAX),
        sport_any: sport.is_all(PORT_MAX),
        dport_any: dport.is_all(PORT_MAX),
        src,
        sport,
        dst,
        dport,
        bidir,
        flow,
        conds,
        stream_size,
        payload: b.payload,
        dns_query: b.dns_query,
        hdrs: b.hdrs,
        flowbits,
        noalert,
        thresh,
        limit,
        fast,
        dns_fast,
        origin,
        line,
    })
}

/// Finishes a buffer's contents and picks its fast pattern: the content marked
/// `fast_pattern`, else the longest non-negated one.
fn finish_contents(list: &mut [PMatch]) -> Option<usize> {
    let mut fast = None;
    let mut best = (false, 0usize);
    for (i, m) in list.iter_mut().enumerate() {
        if let PMatch::Content(c) = m {
            c.finish();
            if c.negated {
                continue;
            }
            let score = (c.fast_pattern, c.pat.len());
            if fast.is_none() || score > best {
                best = score;
                fast = Some(i);
            }
        }
    }
    fast
}
