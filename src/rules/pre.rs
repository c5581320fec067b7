//! A per-rule pre-check on fixed header facts (protocol, L4 present, TCP flags, ICMP type,
//! flow direction and state, payload size) packed so that "this rule cannot apply" costs a
//! mask, a compare and a range test before the full `rule_matches`.
//!
//! The pre-check is only ever a necessary condition: every packet a rule matches passes its
//! pre-check, so skipping the rules that fail it changes no result. Anything it cannot
//! express (negated sizes, `flags:*`, address sets) is left to the full check.

use crate::decode::PacketMeta;

use super::matcher::{Cond, FlagMode, UCmp};
use super::parse::{flowc, Proto, Rule};

/// Bits of the packet word (`word`).
mod bit {
    /// TCP flags (bits 0..8), meaningful with `TCP_L4`.
    pub const TCP_FLAGS_SHIFT: u32 = 0;
    /// ICMP type (bits 8..16), meaningful with `ICMP_L4`.
    pub const ICMP_TYPE_SHIFT: u32 = 8;
    /// TCP with its header decoded.
    pub const TCP_L4: u32 = 1 << 16;
    /// ICMP or ICMPv6 with its header decoded.
    pub const ICMP_L4: u32 = 1 << 17;
    /// An L4 header a port/protocol rule can use (decoded, and not a later fragment).
    pub const L4: u32 = 1 << 18;
    pub const HAS_FLOW: u32 = 1 << 19;
    pub const TO_SERVER: u32 = 1 << 20;
    pub const ESTABLISHED: u32 = 1 << 21;
    /// Never set in a packet word: a rule requiring it can never match.
    pub const NEVER: u32 = 1 << 22;
    /// The IP protocol number (bits 24..32).
    pub const PROTO_SHIFT: u32 = 24;
}

/// A rule's necessary condition: `word & mask == value` and the payload length in
/// `lo ..= lo + span`. 16 bytes, so four share a cache line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pre {
    mask: u32,
    value: u32,
    lo: u32,
    span: u32,
}

impl Default for Pre {
    /// Passes every packet.
    fn default() -> Pre {
        Pre {
            mask: 0,
            value: 0,
            lo: 0,
            span: u32::MAX,
        }
    }
}

/// The per-packet facts the pre-checks test, computed once per packet.
#[inline]
pub(crate) fn word(m: &PacketMeta, has_flow: bool, to_server: bool, established: bool) -> u32 {
    let l4 = m.l4_off != 0;
    let mut w = u32::from(m.ip_proto) << bit::PROTO_SHIFT;
    if l4 && !(m.frag.is_fragment && m.frag.offset > 0) {
        w |= bit::L4;
    }
    if l4 && m.ip_proto == 6 {
        w |= bit::TCP_L4 | (u32::from(m.tcp.flags) << bit::TCP_FLAGS_SHIFT);
    }
    if l4 && (m.ip_proto == 1 || m.ip_proto == 58) {
        w |= bit::ICMP_L4 | (u32::from(m.icmp.typ) << bit::ICMP_TYPE_SHIFT);
    }
    if has_flow {
        w |= bit::HAS_FLOW;
    }
    if to_server {
        w |= bit::TO_SERVER;
    }
    if established {
        w |= bit::ESTABLISHED;
    }
    w
}

impl Pre {
    #[inline]
    pub(crate) fn passes(&self, word: u32, dsize: u32) -> bool {
        word & self.mask == self.value && dsize.wrapping_sub(self.lo) <= self.span
    }

    /// Adds the requirement `word & mask == value`; contradicting an earlier one makes the
    /// rule impossible (it stays so: the full check would refuse every packet too).
    fn need(&mut self, mask: u32, value: u32) {
        let value = value & mask;
        if (self.value ^ value) & self.mask & mask != 0 {
            self.mask |= bit::NEVER;
            self.value |= bit::NEVER;
        }
        self.mask |= mask;
        self.value |= value;
    }

    /// Narrows the payload length to `lo ..= hi` (both inclusive).
    fn size(&mut self, lo: u64, hi: u64) {
        let cur_hi = u64::from(self.lo) + u64::from(self.span);
        let lo = lo.max(u64::from(self.lo));
        let hi = hi.min(cur_hi);
        if lo > hi {
            self.need(bit::NEVER, bit::NEVER);
            return;
        }
        // hi <= cur_hi <= u32::MAX, so both fit.
        self.lo = lo as u32;
        self.span = (hi - lo) as u32;
    }

    /// The checks of `rule_matches` and `Cond::test` that fit a mask and a range.
    pub(crate) fn of(r: &Rule) -> Pre {
        let mut p = Pre::default();
        let proto = |n: u8| (0xff << bit::PROTO_SHIFT, u32::from(n) << bit::PROTO_SHIFT);
        match r.proto {
            // Dns: TCP or UDP (the DNS check itself is in `rule_matches`).
            Proto::Ip | Proto::Icmp | Proto::Dns => {}
            Proto::Tcp => p.need(proto(6).0, proto(6).1),
            Proto::Udp => p.need(proto(17).0, proto(17).1),
            Proto::Icmp4 => p.need(proto(1).0, proto(1).1),
            Proto::Icmp6 => p.need(proto(58).0, proto(58).1),
        }
        if r.proto != Proto::Ip {
            p.need(bit::L4, bit::L4);
        }
        if r.flow & flowc::NEEDS_FLOW != 0 {
            p.need(bit::HAS_FLOW, bit::HAS_FLOW);
        }
        if r.flow & flowc::TO_SERVER != 0 {
            p.need(bit::TO_SERVER, bit::TO_SERVER);
        }
        if r.flow & flowc::TO_CLIENT != 0 {
            p.need(bit::TO_SERVER, 0);
        }
        if r.flow & flowc::ESTABLISHED != 0 {
            p.need(bit::ESTABLISHED, bit::ESTABLISHED);
        }
        if r.flow & flowc::NOT_ESTABLISHED != 0 {
            p.need(bit::ESTABLISHED, 0);
        }
        for c in &r.conds {
            match *c {
                Cond::Dsize(cmp) => {
                    if let Some((lo, hi)) = bounds(cmp) {
                        p.size(lo, hi);
                    }
                }
                Cond::IpProto(UCmp::Eq(v)) => match u8::try_from(v) {
                    Ok(n) => p.need(proto(n).0, proto(n).1),
                    Err(_) => p.need(bit::NEVER, bit::NEVER),
                },
                Cond::Itype(cmp) => {
                    p.need(bit::ICMP_L4, bit::ICMP_L4);
                    if let UCmp::Eq(v) = cmp {
                        match u8::try_from(v) {
                            Ok(t) => p.need(
                                0xff << bit::ICMP_TYPE_SHIFT,
                                u32::from(t) << bit::ICMP_TYPE_SHIFT,
                            ),
                            Err(_) => p.need(bit::NEVER, bit::NEVER),
                        }
                    }
                }
                Cond::Icode(_) => p.need(bit::ICMP_L4, bit::ICMP_L4),
                Cond::Mss(_) => p.need(proto(6).0, proto(6).1),
                Cond::Seq(_) | Cond::Ack(_) | Cond::Window { .. } => {
                    p.need(bit::TCP_L4, bit::TCP_L4)
                }
                Cond::Flags { mode, bits, ignore } => {
                    p.need(bit::TCP_L4, bit::TCP_L4);
                    let care = u32::from(!ignore) << bit::TCP_FLAGS_SHIFT;
                    let bits = u32::from(bits) << bit::TCP_FLAGS_SHIFT;
                    match mode {
                        // (flags & !ignore) == bits
                        FlagMode::Exact => p.need(care, bits),
                        // (flags & !ignore) has all of bits
                        FlagMode::All => p.need(bits & care, bits & care),
                        // (flags & !ignore) has none of bits
                        FlagMode::Not => p.need(bits & care, 0),
                        FlagMode::Any => {}
                    }
                }
                _ => {}
            }
        }
        p
    }

    /// What every one of `pres` needs (for skipping a whole group's payload search): the
    /// requirements they agree on, and the union of their size ranges.
    pub(crate) fn common<'a>(pres: impl IntoIterator<Item = &'a Pre>) -> Pre {
        let mut it = pres.into_iter();
        let Some(first) = it.next() else {
            return Pre::default();
        };
        let mut c = *first;
        for p in it {
            c.mask &= p.mask & !(c.value ^ p.value);
            c.value &= c.mask;
            let hi = (u64::from(c.lo) + u64::from(c.span)).max(u64::from(p.lo) + u64::from(p.span));
            c.lo = c.lo.min(p.lo);
            c.span = (hi - u64::from(c.lo)).min(u64::from(u32::MAX)) as u32;
        }
        c
    }
}

/// Inclusive bounds of the values `cmp` accepts, when they are one interval (all but `!=`).
fn bounds(cmp: UCmp) -> Option<(u64, u64)> {
    const NONE: (u64, u64) = (1, 0);
    Some(match cmp {
        UCmp::Eq(v) => (v, v),
        UCmp::Ne(_) => return None,
        UCmp::Lt(0) => NONE,
        UCmp::Lt(v) => (0, v - 1),
        UCmp::Le(v) => (0, v),
        UCmp::Gt(u64::MAX) => NONE,
        UCmp::Gt(v) => (v + 1, u64::MAX),
        UCmp::Ge(v) => (v, u64::MAX),
        UCmp::Range(a, b) if b <= a.saturating_add(1) => NONE,
        UCmp::Range(a, b) => (a + 1, b - 1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_agree_with_ucmp_test() {
        let cmps = [
            UCmp::Eq(5),
            UCmp::Lt(0),
            UCmp::Lt(5),
            UCmp::Le(5),
            UCmp::Gt(5),
            UCmp::Ge(5),
            UCmp::Range(3, 4),
            UCmp::Range(3, 9),
            UCmp::Range(9, 3),
        ];
        for cmp in cmps {
            let (lo, hi) = bounds(cmp).unwrap_or((0, u64::MAX));
            for x in 0..20u64 {
                assert_eq!(cmp.test(x), lo <= x && x <= hi, "{cmp:?} at {x}");
            }
        }
        assert_eq!(bounds(UCmp::Ne(3)), None);
    }

    #[test]
    fn contradictions_make_the_rule_impossible() {
        let mut p = Pre::default();
        p.need(bit::TO_SERVER, bit::TO_SERVER);
        p.need(bit::TO_SERVER, 0);
        assert!(!p.passes(!bit::NEVER, 0));
        let mut q = Pre::default();
        q.size(10, 20);
        q.size(30, 40);
        assert!(!q.passes(0, 35) && !q.passes(0, 15));
        let mut s = Pre::default();
        s.size(10, 20);
        s.size(0, 15);
        assert!(s.passes(0, 10) && s.passes(0, 15) && !s.passes(0, 16) && !s.passes(0, 9));
    }

    #[test]
    fn common_keeps_only_shared_requirements() {
        let mut a = Pre::default();
        a.need(bit::TO_SERVER | bit::L4, bit::TO_SERVER | bit::L4);
        a.size(5, 10);
        let mut b = Pre::default();
        b.need(bit::TO_SERVER | bit::L4, bit::L4);
        b.size(20, 30);
        let c = Pre::common([&a, &b]);
        assert!(c.passes(bit::L4, 7) && c.passes(bit::L4 | bit::TO_SERVER, 25));
        assert!(!c.passes(0, 7) && !c.passes(bit::L4, 31) && !c.passes(bit::L4, 4));
        assert_eq!(Pre::common([]), Pre::default());
    }
}
