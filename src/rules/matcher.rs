//! Compiled rule conditions and the per-packet payload matcher: content with relative
//! modifiers (with Suricata-style backtracking), pcre, byte_test/byte_jump/byte_extract and
//! isdataat. Evaluation works on borrowed bytes and a fixed variable array: no allocation.

use memchr::memmem;
use regex::bytes::Regex;

use crate::decode::{PacketMeta, L3};

/// Most byte_extract variables a rule may define.
pub const MAX_VARS: usize = 8;
/// Match attempts one rule may spend backtracking on one packet (Suricata's default
/// inspection recursion limit is 3000).
const BUDGET: u32 = 3000;

/// A number in a rule option: literal, or a byte_extract variable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Val {
    Lit(i64),
    Var(u8),
}

impl Val {
    fn get(self, vars: &[i64; MAX_VARS]) -> i64 {
        match self {
            Val::Lit(v) => v,
            Val::Var(i) => vars[usize::from(i) % MAX_VARS],
        }
    }
}

/// Unsigned comparison as Suricata's integer keywords write it (`5`, `<5`, `>=5`, `!5`,
/// `1<>9` and `1-9` exclusive ranges).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UCmp {
    Eq(u64),
    Ne(u64),
    Lt(u64),
    Le(u64),
    Gt(u64),
    Ge(u64),
    /// Exclusive on both ends.
    Range(u64, u64),
}

impl UCmp {
    pub fn test(self, x: u64) -> bool {
        match self {
            UCmp::Eq(v) => x == v,
            UCmp::Ne(v) => x != v,
            UCmp::Lt(v) => x < v,
            UCmp::Le(v) => x <= v,
            UCmp::Gt(v) => x > v,
            UCmp::Ge(v) => x >= v,
            UCmp::Range(a, b) => x > a && x < b,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagMode {
    /// Exactly these (outside the ignore mask).
    Exact,
    /// At least these (`+`).
    All,
    /// Any of these (`*`).
    Any,
    /// None of these (`!`).
    Not,
}

/// Packet header conditions, checked before any payload work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cond {
    Dsize(UCmp),
    Ttl(UCmp),
    IpProto(UCmp),
    Itype(UCmp),
    Icode(UCmp),
    IcmpId(u16),
    IcmpSeq(u16),
    Mss(UCmp),
    Flags {
        mode: FlagMode,
        bits: u8,
        ignore: u8,
    },
    Seq(u32),
    Ack(u32),
    Window {
        negated: bool,
        value: u16,
    },
    IpId(u32),
    SameIp,
    /// IPv4 fragment bits (R=0x80, D=0x40, M=0x20 of the flags byte).
    Fragbits {
        mode: FlagMode,
        bits: u8,
    },
    Fragoffset {
        negated: bool,
        cmp: UCmp,
    },
    Tos {
        negated: bool,
        value: u8,
    },
    /// `ipopts`: the IPv4 header carries this option (an [`ipopt`] bit), or any option.
    IpOpts(u16),
}

/// IPv4 options `ipopts` names, as bits of [`ipv4_options`]'s result (Suricata's list).
pub mod ipopt {
    pub const EOL: u16 = 1 << 0;
    pub const NOP: u16 = 1 << 1;
    pub const RR: u16 = 1 << 2;
    pub const TS: u16 = 1 << 3;
    pub const SEC: u16 = 1 << 4;
    pub const ESEC: u16 = 1 << 5;
    pub const LSRR: u16 = 1 << 6;
    pub const SSRR: u16 = 1 << 7;
    pub const SATID: u16 = 1 << 8;
    /// Any option at all, named or not.
    pub const ANY: u16 = 1 << 15;

    /// The keyword's names and bits.
    pub const NAMES: [(&str, u16); 10] = [
        ("eol", EOL),
        ("nop", NOP),
        ("rr", RR),
        ("ts", TS),
        ("sec", SEC),
        ("esec", ESEC),
        ("lsrr", LSRR),
        ("ssrr", SSRR),
        ("satid", SATID),
        ("any", ANY),
    ];
}

/// The options present in an IPv4 header's option area, as [`ipopt`] bits (`ANY` when the
/// area holds anything). Walked as Suricata does: EOL ends the list, NOP is one byte, every
/// other option has a length byte; a length below 2 or past the area ends the walk, keeping
/// what was found before it.
pub fn ipv4_options(opts: &[u8]) -> u16 {
    let mut set = if opts.is_empty() { 0 } else { ipopt::ANY };
    let mut i = 0;
    while let Some(&t) = opts.get(i) {
        match t {
            0 => return set | ipopt::EOL,
            1 => {
                set |= ipopt::NOP;
                i += 1;
                continue;
            }
            _ => {}
        }
        let len = usize::from(opts.get(i + 1).copied().unwrap_or(0));
        if len < 2 || i + len > opts.len() {
            break;
        }
        set |= match t {
            7 => ipopt::RR,
            68 => ipopt::TS,
            130 => ipopt::SEC,
            133 => ipopt::ESEC,
            131 => ipopt::LSRR,
            137 => ipopt::SSRR,
            136 => ipopt::SATID,
            _ => 0,
        };
        i += len;
    }
    set
}

fn icmp_has_id(typ: u8, ipv6: bool) -> bool {
    if ipv6 {
        matches!(typ, 128 | 129)
    } else {
        matches!(typ, 0 | 8 | 13 | 14 | 15 | 16 | 17 | 18)
    }
}

fn flag_test(mode: FlagMode, value: u8, bits: u8, ignore: u8) -> bool {
    let v = value & !ignore;
    match mode {
        FlagMode::Exact => v == bits,
        FlagMode::All => v & bits == bits,
        FlagMode::Any => v & bits != 0,
        FlagMode::Not => v & bits == 0,
    }
}

impl Cond {
    /// Not inlined: inlined into the rule loop, LLVM computed every arm's packet test
    /// ahead of the match (about 96 instructions, spilled to the stack) for each
    /// candidate rule, though a rule has one or two conditions (issue 7).
    #[inline(never)]
    pub fn test(&self, m: &PacketMeta, frame: &[u8]) -> bool {
        let is_icmp = m.ip_proto == 1 || m.ip_proto == 58;
        match *self {
            Cond::Dsize(c) => c.test(u64::from(m.payload_len)),
            Cond::Ttl(c) => c.test(u64::from(m.ttl)),
            Cond::IpProto(c) => c.test(u64::from(m.ip_proto)),
            Cond::Itype(c) => is_icmp && m.l4_off != 0 && c.test(u64::from(m.icmp.typ)),
            Cond::Icode(c) => is_icmp && m.l4_off != 0 && c.test(u64::from(m.icmp.code)),
            Cond::IcmpId(v) => {
                is_icmp && icmp_has_id(m.icmp.typ, m.ip_proto == 58) && m.icmp.id == v
            }
            Cond::IcmpSeq(v) => {
                is_icmp && icmp_has_id(m.icmp.typ, m.ip_proto == 58) && m.icmp.seq == v
            }
            Cond::Mss(c) => m.ip_proto == 6 && m.tcp.mss.is_some_and(|v| c.test(u64::from(v))),
            Cond::Flags { mode, bits, ignore } => {
                m.ip_proto == 6 && m.l4_off != 0 && flag_test(mode, m.tcp.flags, bits, ignore)
            }
            Cond::Seq(v) => m.ip_proto == 6 && m.l4_off != 0 && m.tcp.seq == v,
            Cond::Ack(v) => m.ip_proto == 6 && m.l4_off != 0 && m.tcp.ack == v,
            Cond::Window { negated, value } => {
                m.ip_proto == 6 && m.l4_off != 0 && ((m.tcp.window == value) != negated)
            }
            Cond::IpId(v) => m.l3 == L3::Ipv4 && m.ip_id == v,
            Cond::SameIp => m.src == m.dst,
            Cond::Fragbits { mode, bits } => {
                m.l3 == L3::Ipv4
                    && frame
                        .get(m.l3_off as usize + 6)
                        .is_some_and(|&b| flag_test(mode, b & 0xe0, bits, 0))
            }
            Cond::Fragoffset { negated, cmp } => {
                m.l3 == L3::Ipv4 && (cmp.test(u64::from(m.frag.offset / 8)) != negated)
            }
            Cond::Tos { negated, value } => {
                m.l3 == L3::Ipv4
                    && frame
                        .get(m.l3_off as usize + 1)
                        .is_some_and(|&b| (b == value) != negated)
            }
            Cond::IpOpts(bit) => {
                let at = m.l3_off as usize;
                m.l3 == L3::Ipv4
                    && m.ip_options
                    && frame.get(at).is_some_and(|&vihl| {
                        let end = at + usize::from(vihl & 0x0f) * 4;
                        frame
                            .get(at + 20..end.min(frame.len()))
                            .is_some_and(|o| ipv4_options(o) & bit != 0)
                    })
            }
        }
    }
}

/// A `content` option with its modifiers.
#[derive(Clone, Debug)]
pub struct Content {
    /// The bytes; lowercased when `nocase`.
    pub pat: Vec<u8>,
    pub nocase: bool,
    pub negated: bool,
    pub offset: Option<Val>,
    pub depth: Option<Val>,
    pub distance: Option<Val>,
    pub within: Option<Val>,
    pub endswith: bool,
    pub fast_pattern: bool,
    pub finder: Option<memmem::Finder<'static>>,
}

impl Content {
    pub fn new(pat: Vec<u8>, negated: bool) -> Content {
        Content {
            pat,
            nocase: false,
            negated,
            offset: None,
            depth: None,
            distance: None,
            within: None,
            endswith: false,
            fast_pattern: false,
            finder: None,
        }
    }

    pub fn is_relative(&self) -> bool {
        self.distance.is_some() || self.within.is_some()
    }

    /// Builds the searcher once the modifiers are known.
    pub fn finish(&mut self) {
        if self.nocase {
            self.pat.make_ascii_lowercase();
            self.finder = None;
        } else {
            self.finder = Some(memmem::Finder::new(&self.pat).into_owned());
        }
    }

    fn find(&self, hay: &[u8]) -> Option<usize> {
        if self.pat.is_empty() {
            return Some(0);
        }
        match &self.finder {
            Some(f) => f.find(hay),
            None => hay
                .windows(self.pat.len())
                .position(|w| w.eq_ignore_ascii_case(&self.pat)),
        }
    }

    /// Search window `[start, end)` in the buffer for this content, relative to `prev`.
    fn window(&self, prev: usize, len: usize, vars: &[i64; MAX_VARS]) -> Option<(usize, usize)> {
        let len_i = len as i64;
        let (start, mut end) = if self.is_relative() {
            let dist = self.distance.map_or(0, |v| v.get(vars));
            let start = prev as i64 + dist;
            let end = match self.within {
                Some(w) => start + w.get(vars),
                None => len_i,
            };
            (start.max(0), end)
        } else {
            let off = self.offset.map_or(0, |v| v.get(vars)).max(0);
            let end = match self.depth {
                Some(d) => off + d.get(vars),
                None => len_i,
            };
            (off, end)
        };
        end = end.min(len_i);
        if start > end {
            return None;
        }
        Some((start as usize, end as usize))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteOp {
    Lt,
    Gt,
    Eq,
    Le,
    Ge,
    And,
    Xor,
}

/// How byte_test/byte_jump/byte_extract read a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NumFormat {
    pub big: bool,
    /// `Some(base)` for ASCII numbers (string, hex|dec|oct).
    pub string_base: Option<u32>,
    pub bitmask: Option<u64>,
}

/// One payload option, in rule order. Built once at load, so variant sizes do not matter.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum PMatch {
    Content(Content),
    Pcre {
        re: Regex,
        negated: bool,
        relative: bool,
    },
    ByteTest {
        nbytes: u8,
        op: ByteOp,
        negated: bool,
        value: Val,
        offset: Val,
        relative: bool,
        fmt: NumFormat,
    },
    ByteJump {
        nbytes: Val,
        offset: Val,
        relative: bool,
        multiplier: u64,
        fmt: NumFormat,
        align: bool,
        from_beginning: bool,
        from_end: bool,
        post_offset: i64,
    },
    ByteExtract {
        nbytes: u8,
        offset: i64,
        var: u8,
        relative: bool,
        multiplier: u64,
        fmt: NumFormat,
        align: u8,
    },
    IsDataAt {
        n: Val,
        relative: bool,
        negated: bool,
    },
    /// `bsize`: the buffer's whole length compared (sticky buffers, as in Suricata).
    Bsize(UCmp),
}

impl PMatch {
    /// True when the option's position depends on the previous match.
    pub fn is_relative(&self) -> bool {
        match self {
            PMatch::Content(c) => c.is_relative(),
            PMatch::Pcre { relative, .. }
            | PMatch::ByteTest { relative, .. }
            | PMatch::ByteJump { relative, .. }
            | PMatch::ByteExtract { relative, .. }
            | PMatch::IsDataAt { relative, .. } => *relative,
            PMatch::Bsize(_) => false,
        }
    }
}

/// Reads `n` bytes at `pos` as a number. `None` when out of bounds or not a number.
fn read_num(buf: &[u8], pos: i64, n: usize, fmt: NumFormat) -> Option<u64> {
    if pos < 0 {
        return None;
    }
    let pos = pos as usize;
    let bytes = buf.get(pos..pos.checked_add(n)?)?;
    let mut v: u64 = 0;
    match fmt.string_base {
        Some(base) => {
            if n == 0 || n > 20 {
                return None;
            }
            // Suricata parses the leading digits; at least one is required.
            let mut any = false;
            for &b in bytes {
                let Some(d) = (b as char).to_digit(base) else {
                    break;
                };
                v = v.checked_mul(u64::from(base))?.checked_add(u64::from(d))?;
                any = true;
            }
            if !any {
                return None;
            }
        }
        None => {
            if n == 0 || n > 8 {
                return None;
            }
            if fmt.big {
                for &b in bytes {
                    v = (v << 8) | u64::from(b);
                }
            } else {
                for &b in bytes.iter().rev() {
                    v = (v << 8) | u64::from(b);
                }
            }
        }
    }
    if let Some(mask) = fmt.bitmask {
        v &= mask;
        if mask != 0 {
            v >>= mask.trailing_zeros();
        }
    }
    Some(v)
}

struct Eval<'a> {
    buf: &'a [u8],
    vars: [i64; MAX_VARS],
    budget: u32,
}

/// Runs the payload options against `buf`. No allocation.
pub fn match_payload(items: &[PMatch], buf: &[u8]) -> bool {
    let mut ev = Eval {
        buf,
        vars: [0; MAX_VARS],
        budget: BUDGET,
    };
    run(items, 0, 0, &mut ev)
}

fn run(items: &[PMatch], i: usize, prev: usize, ev: &mut Eval<'_>) -> bool {
    let Some(item) = items.get(i) else {
        return true;
    };
    if ev.budget == 0 {
        return false;
    }
    ev.budget -= 1;
    // Later options anchored to this one's position make a retry at the next occurrence
    // worthwhile (Suricata's "relative next" backtracking).
    let next_relative = items.get(i + 1).is_some_and(PMatch::is_relative);
    let buf = ev.buf;
    let len = buf.len();
    match item {
        PMatch::Content(c) => {
            let Some((start, end)) = c.window(prev, len, &ev.vars) else {
                return c.negated && run(items, i + 1, prev, ev);
            };
            if c.negated {
                let found = if c.endswith {
                    end == len && found_at_end(c, buf, start, end)
                } else {
                    c.find(&buf[start..end]).is_some()
                };
                return !found && run(items, i + 1, prev, ev);
            }
            if c.endswith {
                return end == len
                    && found_at_end(c, buf, start, end)
                    && run(items, i + 1, len, ev);
            }
            let mut from = start;
            while from <= end {
                let Some(p) = c.find(&buf[from..end]) else {
                    return false;
                };
                let mend = from + p + c.pat.len();
                if run(items, i + 1, mend, ev) {
                    return true;
                }
                if !next_relative || ev.budget == 0 {
                    return false;
                }
                from = from + p + 1;
            }
            false
        }
        PMatch::Pcre {
            re,
            negated,
            relative,
        } => {
            let base = if *relative { prev.min(len) } else { 0 };
            if *negated {
                return !re.is_match(&buf[base..]) && run(items, i + 1, prev, ev);
            }
            let mut from = base;
            while from <= len {
                let Some(m) = re.find(&buf[from..]) else {
                    return false;
                };
                if run(items, i + 1, from + m.end(), ev) {
                    return true;
                }
                if !next_relative || ev.budget == 0 {
                    return false;
                }
                from += m.start() + 1;
            }
            false
        }
        PMatch::ByteTest {
            nbytes,
            op,
            negated,
            value,
            offset,
            relative,
            fmt,
        } => {
            let base = if *relative { prev as i64 } else { 0 };
            let pos = base + offset.get(&ev.vars);
            let Some(v) = read_num(buf, pos, usize::from(*nbytes), *fmt) else {
                return false;
            };
            let want = value.get(&ev.vars) as u64;
            let r = match op {
                ByteOp::Lt => v < want,
                ByteOp::Gt => v > want,
                ByteOp::Eq => v == want,
                ByteOp::Le => v <= want,
                ByteOp::Ge => v >= want,
                ByteOp::And => v & want != 0,
                ByteOp::Xor => v ^ want != 0,
            };
            r != *negated && run(items, i + 1, prev, ev)
        }
        PMatch::ByteJump {
            nbytes,
            offset,
            relative,
            multiplier,
            fmt,
            align,
            from_beginning,
            from_end,
            post_offset,
        } => {
            let n = nbytes.get(&ev.vars);
            if !(0..=10).contains(&n) {
                return false;
            }
            let base = if *relative { prev as i64 } else { 0 };
            let pos = base + offset.get(&ev.vars);
            // A byte count of 0 (only possible through a variable) reads nothing: the jump
            // value is 0, as in Suricata (detect-bytejump-02).
            let v = if n == 0 {
                0
            } else {
                match read_num(buf, pos, n as usize, *fmt) {
                    Some(v) => v,
                    None => return false,
                }
            };
            let mut v = (v as i64).saturating_mul(*multiplier as i64);
            if *align && v % 4 != 0 {
                v += 4 - v % 4;
            }
            let mut target = if *from_beginning {
                v
            } else if *from_end {
                len as i64 + v
            } else {
                pos + n + v
            };
            target += post_offset;
            if target < 0 || target > len as i64 {
                return false;
            }
            run(items, i + 1, target as usize, ev)
        }
        PMatch::ByteExtract {
            nbytes,
            offset,
            var,
            relative,
            multiplier,
            fmt,
            align,
        } => {
            let base = if *relative { prev as i64 } else { 0 };
            let pos = base + offset;
            let Some(v) = read_num(buf, pos, usize::from(*nbytes), *fmt) else {
                return false;
            };
            let mut v = (v as i64).saturating_mul(*multiplier as i64);
            let a = i64::from(*align);
            if a > 1 && v % a != 0 {
                v += a - v % a;
            }
            let slot = usize::from(*var) % MAX_VARS;
            let old = ev.vars[slot];
            ev.vars[slot] = v;
            let after = (pos + i64::from(*nbytes)) as usize;
            if run(items, i + 1, after, ev) {
                return true;
            }
            ev.vars[slot] = old;
            false
        }
        PMatch::IsDataAt {
            n,
            relative,
            negated,
        } => {
            let base = if *relative { prev as i64 } else { 0 };
            let at = base + n.get(&ev.vars);
            let has = at >= 0 && (at as usize) < len;
            has != *negated && run(items, i + 1, prev, ev)
        }
        PMatch::Bsize(cmp) => cmp.test(len as u64) && run(items, i + 1, prev, ev),
    }
}

fn found_at_end(c: &Content, buf: &[u8], start: usize, end: usize) -> bool {
    let n = c.pat.len();
    if end < start + n {
        return false;
    }
    let w = &buf[end - n..end];
    if c.nocase {
        w.eq_ignore_ascii_case(&c.pat)
    } else {
        w == c.pat.as_slice()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(p: &[u8]) -> Content {
        let mut c = Content::new(p.to_vec(), false);
        c.finish();
        c
    }

    #[test]
    fn relative_content_backtracks_to_a_later_occurrence() {
        // First "ab" is followed by "x", the second by "cd": distance 0 within 2 needs the
        // second occurrence.
        let mut second = Content::new(b"cd".to_vec(), false);
        second.distance = Some(Val::Lit(0));
        second.within = Some(Val::Lit(2));
        second.finish();
        let items = vec![PMatch::Content(content(b"ab")), PMatch::Content(second)];
        assert!(match_payload(&items, b"abx..abcd"));
        assert!(!match_payload(&items, b"abx..ab.cd"));
    }

    #[test]
    fn byte_values_and_formats() {
        let f = NumFormat {
            big: true,
            string_base: None,
            bitmask: None,
        };
        assert_eq!(read_num(&[1, 2], 0, 2, f), Some(0x0102));
        let le = NumFormat { big: false, ..f };
        assert_eq!(read_num(&[1, 2], 0, 2, le), Some(0x0201));
        let dec = NumFormat {
            string_base: Some(10),
            ..f
        };
        assert_eq!(read_num(b"13x", 0, 2, dec), Some(13));
        assert_eq!(read_num(b"x1", 0, 2, dec), None);
        let hex = NumFormat {
            string_base: Some(16),
            ..f
        };
        assert_eq!(read_num(b"ff", 0, 2, hex), Some(255));
        let masked = NumFormat {
            bitmask: Some(0xf0),
            ..f
        };
        assert_eq!(read_num(&[0xab], 0, 1, masked), Some(0xa));
        assert_eq!(read_num(&[1], 0, 2, f), None);
        assert_eq!(read_num(&[1], -1, 1, f), None);
    }

    #[test]
    fn ucmp_forms() {
        assert!(UCmp::Range(7, 20).test(8) && !UCmp::Range(7, 20).test(7));
        assert!(UCmp::Ne(3).test(4) && !UCmp::Ne(3).test(3));
        assert!(UCmp::Le(3).test(3) && UCmp::Ge(3).test(3) && !UCmp::Gt(3).test(3));
    }
}
