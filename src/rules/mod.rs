//! The Suricata-subset signature engine: loads rule files into groups by protocol and
//! destination port, prefilters content rules with one Aho-Corasick automaton per group, and
//! matches each packet on its own (no stream reassembly) without allocating.
//!
//! See rules/README.md for the supported subset and how it differs from Suricata.

pub mod addr;
pub mod classify;
pub mod matcher;
pub mod parse;
mod pre;
pub mod threshold;

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};

use crate::decode::{Micros, PacketMeta, L3};
use addr::{addr_key, Kind, VarTable};
use matcher::match_payload;
use parse::{flowc, FbOp, FlowbitNames, HdrBuf, Proto, Rule};
use pre::Pre;
use threshold::{check_rule, Ends, RuleThresh, ThreshKind, Thresholds, Track, Tracker};

pub use parse::Action;

/// Errors that stop loading: an unreadable file or a bad variable. Bad rules are not
/// errors: they are skipped and listed in the `LoadReport`.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("{path}: cannot read rule file: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("rule variable {name} = `{value}`: {reason}")]
    Var {
        name: String,
        value: String,
        reason: String,
    },
}

/// Address groups (`HOME_NET`, `EXTERNAL_NET`, ...) and port groups (`HTTP_PORTS`, ...).
#[derive(Clone, Debug)]
pub struct RuleVars {
    table: VarTable,
}

/// Suricata's default address groups that simply alias `$HOME_NET`.
const HOME_ALIASES: &[&str] = &[
    "HTTP_SERVERS",
    "SMTP_SERVERS",
    "SQL_SERVERS",
    "DNS_SERVERS",
    "TELNET_SERVERS",
    "AIM_SERVERS",
    "DC_SERVERS",
    "DNP3_SERVER",
    "DNP3_CLIENT",
    "MODBUS_CLIENT",
    "MODBUS_SERVER",
    "ENIP_CLIENT",
    "ENIP_SERVER",
];

const DEFAULT_PORTS: &[(&str, &str)] = &[
    ("HTTP_PORTS", "[80,81,591,8000,8008,8080,8081,8088,8888]"),
    ("SHELLCODE_PORTS", "!80"),
    ("ORACLE_PORTS", "1521"),
    ("SSH_PORTS", "[22,2222]"),
    ("TELNET_PORTS", "[23,2323]"),
    ("FTP_PORTS", "21"),
    ("DNS_PORTS", "53"),
    ("DNP3_PORTS", "20000"),
    ("MODBUS_PORTS", "502"),
    ("FILE_DATA_PORTS", "[$HTTP_PORTS,110,143]"),
    ("GENEVE_PORTS", "6081"),
    ("VXLAN_PORTS", "4789"),
    ("TEREDO_PORTS", "3544"),
];

impl RuleVars {
    /// The defaults of `default_home()` with the given variables added or replaced (names
    /// without `$`). Every variable is checked; an error names it, its value and the fault.
    pub fn new(
        addr: &[(String, String)],
        ports: &[(String, String)],
    ) -> Result<RuleVars, RulesError> {
        let mut v = RuleVars::default_home();
        for (name, value) in addr {
            v.table
                .addr
                .insert(name.trim_start_matches('$').to_string(), value.clone());
        }
        for (name, value) in ports {
            v.table
                .port
                .insert(name.trim_start_matches('$').to_string(), value.clone());
        }
        for (kind, map) in [(Kind::Addr, &v.table.addr), (Kind::Port, &v.table.port)] {
            let mut names: Vec<&String> = map.keys().collect();
            names.sort();
            for name in names {
                let value = &map[name];
                v.table
                    .parse(kind, value)
                    .map_err(|reason| RulesError::Var {
                        name: format!("${name}"),
                        value: value.clone(),
                        reason,
                    })?;
            }
        }
        Ok(v)
    }

    /// HOME_NET = RFC 1918 + IPv4/IPv6 link-local + IPv6 ULA, EXTERNAL_NET = !$HOME_NET,
    /// Suricata's server groups = $HOME_NET, and the usual port groups.
    pub fn default_home() -> RuleVars {
        let mut addr = HashMap::new();
        addr.insert(
            "HOME_NET".to_string(),
            "[10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,169.254.0.0/16,fc00::/7,fe80::/10]"
                .to_string(),
        );
        addr.insert("EXTERNAL_NET".to_string(), "!$HOME_NET".to_string());
        for a in HOME_ALIASES {
            addr.insert((*a).to_string(), "$HOME_NET".to_string());
        }
        let port = DEFAULT_PORTS
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        RuleVars {
            table: VarTable { addr, port },
        }
    }
}

/// A rule that was not loaded, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub file: String,
    pub line: usize,
    /// The rule's sid when it could be read.
    pub sid: Option<u32>,
    pub reason: String,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.sid {
            Some(sid) => write!(
                f,
                "{}:{}: rule sid {} skipped: {}",
                self.file, self.line, sid, self.reason
            ),
            None => write!(
                f,
                "{}:{}: rule skipped: {}",
                self.file, self.line, self.reason
            ),
        }
    }
}

/// What loading did.
#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    pub loaded: usize,
    pub skipped: Vec<Skipped>,
}

/// Description of one loaded rule, for alerts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleInfo<'a> {
    pub gid: u32,
    pub sid: u32,
    pub rev: u32,
    pub msg: &'a str,
    pub classtype: &'a str,
    /// Classtype description ("Attempted Information Leak"), "" without classtype.
    pub category: &'a str,
    /// 1 (highest) .. ; 3 when neither priority nor classtype says otherwise.
    pub priority: u8,
    pub action: Action,
    /// The rule's alerts speak about the packet's destination, not its sender: it alerts
    /// because of a count per destination (`threshold` of type `threshold` or `both`, or
    /// `detection_filter`, with `track by_dst`), as rules for floods against one host from
    /// many (often spoofed) sources do; the sender of the packet that crossed the count is
    /// one of many. (A `limit` only rate-limits what the match itself says.)
    pub about_dst: bool,
}

/// One packet as the engine hands it to `inspect`.
#[derive(Clone, Copy, Debug)]
pub struct PacketCtx<'a> {
    pub ts: Micros,
    pub meta: &'a PacketMeta,
    pub frame: &'a [u8],
    /// The packet belongs to a tracked flow.
    pub has_flow: bool,
    /// The packet comes from the side that opened the flow.
    pub to_server: bool,
    /// TCP: three-way handshake completed; UDP/ICMP: packets seen both ways.
    pub established: bool,
    /// TCP: sequence space used by (client, server) so far, this packet included (the
    /// `stream_size` keyword); zeros without a flow.
    pub stream: [u32; 2],
}

/// Per-flow rule state, kept by the engine in each flow entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowRuleState {
    pub flowbits: u128,
    /// A `pass` rule matched on this flow: nothing more is inspected or alerted.
    pub passed: bool,
}

/// A matched rule that alerts. `rule` is the index for `RuleSet::info`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleHit {
    pub rule: u32,
    /// The rule has a threshold the rule set did not check: its [`Thresholds`] were taken
    /// ([`RuleSet::take_thresholds`]), and whoever holds them must check this match, in
    /// order with the others, before it alerts.
    pub deferred: bool,
    /// (Deferred hits only.) A later `pass` rule matched the packet: the threshold still
    /// counts the match, but it never alerts.
    pub silent: bool,
}

impl RuleHit {
    fn alert(rule: u32) -> RuleHit {
        RuleHit {
            rule,
            deferred: false,
            silent: false,
        }
    }
}

/// A rule of a group with its pre-check inline, so rejecting it reads no `Rule`.
#[derive(Clone, Copy, Debug)]
struct Cand {
    pre: Pre,
    rule: u32,
}

/// Rules sharing a protocol class and destination port, with their prefilter.
#[derive(Debug, Default)]
struct Group {
    ac: Option<AhoCorasick>,
    /// The same (lowercased) patterns, case-sensitive and leftmost-first, run over the
    /// lowercased payload to ask only "is any there?". Unlike the case-insensitive
    /// automaton it gets aho-corasick's SIMD prefilter (Teddy or rare bytes), so a payload
    /// without any fast pattern — most of them — costs a fraction of a byte-by-byte walk.
    pre: Option<AhoCorasick>,
    /// Pattern id → rules (in rule order).
    pat_rules: Vec<Vec<Cand>>,
    /// What every rule with a fast pattern needs: a packet failing it skips the payload
    /// search (lowercasing, prefilter, automaton) of the group.
    pat_pre: Pre,
    /// Shortest fast pattern: a shorter payload cannot hold any.
    min_pat: usize,
    /// Rules without a fast pattern, in rule order: pre-checked for every packet of the
    /// group.
    plain: Vec<Cand>,
    /// Rules without a payload fast pattern but with one in `dns.query`: a case-insensitive
    /// automaton over those patterns, run on a DNS request's query name, and pattern id →
    /// rules. Domain rule sets have thousands; none is looked at for other names.
    dns_ac: Option<AhoCorasick>,
    dns_rules: Vec<Vec<Cand>>,
}

/// Per protocol class (TCP, UDP, ICMP, other IP): groups by destination port and the group
/// of rules that may match any port.
#[derive(Debug, Default)]
struct Class {
    /// Looked up for every packet: a multiply-fold hash, not SipHash (keys come from rules).
    ports: HashMap<u16, u32, threshold::KeyHash>,
    /// One bit per port that `ports` holds (8 KiB; empty when it holds none): most packets
    /// go to a port no rule names, and the bit answers that for less than the hash lookup.
    port_bits: Vec<u64>,
    wide: u32,
}

impl Class {
    /// The group of rules indexed under destination port `port`, if any.
    #[inline]
    fn port_group(&self, port: u16) -> Option<u32> {
        let bits = self
            .port_bits
            .get(usize::from(port >> 6))
            .copied()
            .unwrap_or(0);
        if bits & (1 << (port & 63)) == 0 {
            return None;
        }
        self.ports.get(&port).copied()
    }
}

/// Rules whose destination port set is at most this large are indexed per port.
const MAX_INDEXED_PORTS: u128 = 64;

/// A loaded, compiled rule set with its scratch space and threshold state.
#[derive(Debug)]
pub struct RuleSet {
    rules: Vec<Rule>,
    origins: Vec<String>,
    groups: Vec<Group>,
    classes: [Class; 4],
    /// The thresholded rules and their tracking table; `None` once taken
    /// ([`RuleSet::take_thresholds`]): thresholded matches are then returned deferred.
    thresholds: Option<Thresholds>,
    cands: Vec<u32>,
    seen: Vec<bool>,
    touched: Vec<u32>,
    /// The payload lowercased for the `pre` automata (capacity reserved once).
    lower: Vec<u8>,
    /// Some rule uses `dns.query`: DNS requests' names are decoded for it.
    dns_query: bool,
}

/// Adds the rules of the patterns an automaton found to the candidates: each pattern once
/// per buffer, each rule only if its pre-check passes.
struct PatternHits<'a> {
    cands: &'a mut Vec<u32>,
    seen: &'a mut Vec<bool>,
    touched: &'a mut Vec<u32>,
    word: u32,
    dsize: u32,
}

impl PatternHits<'_> {
    /// Returns the number of runs of candidates added (each in rule order).
    fn add(&mut self, ids: impl Iterator<Item = usize>, rules_of: &[Vec<Cand>]) -> u32 {
        let mut runs = 0;
        for id in ids {
            let Some(s) = self.seen.get_mut(id) else {
                continue;
            };
            if *s {
                continue;
            }
            *s = true;
            self.touched.push(id as u32);
            if let Some(rs) = rules_of.get(id) {
                let before = self.cands.len();
                for c in rs {
                    if c.pre.passes(self.word, self.dsize) {
                        self.cands.push(c.rule);
                    }
                }
                runs += u32::from(self.cands.len() > before);
            }
        }
        for &t in self.touched.iter() {
            if let Some(s) = self.seen.get_mut(t as usize) {
                *s = false;
            }
        }
        self.touched.clear();
        runs
    }
}

/// Longest payload lowercased for the prefilter; longer ones (never seen from a capture
/// whose frames fit the read buffer) go straight to the full walk.
const LOWER_MAX: usize = 65_536 + 256;

/// `dst = src` with ASCII letters lowercased, eight bytes per step (SWAR): the shipping
/// profile optimises for size, so a byte loop is not vectorised and cost as much as the
/// automaton walk it replaces. `dst` must have the capacity (no allocation).
fn lowercase_into(dst: &mut Vec<u8>, src: &[u8]) {
    // A copy (memcpy) and one pass in place over whole words: zeroing `dst` first and
    // walking two chunk iterators in step cost ~40% more instructions (callgrind).
    // Two words per step: the loop's own counting and bounds checks cost as much as a
    // word's arithmetic (callgrind: ~15 instructions per word at one word a step).
    dst.clear();
    dst.extend_from_slice(src);
    let mut pairs = dst.chunks_exact_mut(16);
    for p in &mut pairs {
        let (a, b) = p.split_at_mut(8);
        let x = u64::from_le_bytes(<[u8; 8]>::try_from(&*a).unwrap_or([0; 8]));
        let y = u64::from_le_bytes(<[u8; 8]>::try_from(&*b).unwrap_or([0; 8]));
        a.copy_from_slice(&lower8(x).to_le_bytes());
        b.copy_from_slice(&lower8(y).to_le_bytes());
    }
    let rest = pairs.into_remainder();
    let mut words = rest.chunks_exact_mut(8);
    for w in &mut words {
        let x = u64::from_le_bytes(<[u8; 8]>::try_from(&*w).unwrap_or([0; 8]));
        w.copy_from_slice(&lower8(x).to_le_bytes());
    }
    words.into_remainder().make_ascii_lowercase();
}

/// Eight bytes with their ASCII capitals lowercased, without a branch.
#[inline(always)]
fn lower8(x: u64) -> u64 {
    const LO7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HI: u64 = 0x8080_8080_8080_8080;
    const ONES: u64 = 0x0101_0101_0101_0101;
    let low7 = x & LO7;
    // High bit of each byte: low7 >= 'A', and low7 > 'Z' (no carries: low7 < 0x80).
    let ge_a = low7 + ONES * (0x80 - u64::from(b'A'));
    let gt_z = low7 + ONES * (0x80 - u64::from(b'Z') - 1);
    let upper = ge_a & !gt_z & !x & HI;
    x | (upper >> 2)
}

fn class_of(ip_proto: u8) -> usize {
    match ip_proto {
        6 => 0,
        17 => 1,
        1 | 58 => 2,
        _ => 3,
    }
}

/// Joins continuation lines and drops comments; yields (first line number, rule text).
fn logical_rules(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut start = 0;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if cur.is_empty() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            start = i + 1;
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                cur.push_str(part);
            }
            None => {
                cur.push_str(line);
                out.push((start, std::mem::take(&mut cur)));
            }
        }
    }
    if !cur.is_empty() {
        out.push((start, cur));
    }
    out
}

/// Reads `sid:N` from rule text that failed to parse, for the report.
fn sniff_sid(text: &str) -> Option<u32> {
    let i = text.find("sid:")?;
    let rest = &text[i + 4..];
    let end = rest.find(';').unwrap_or(rest.len());
    rest[..end].trim().parse().ok()
}

impl RuleSet {
    /// Loads rule files. `Err` only for an unreadable file; bad rules are skipped and
    /// reported. `max_tracked` bounds the threshold/detection_filter table.
    pub fn load_files(
        paths: &[PathBuf],
        vars: &RuleVars,
        max_tracked: usize,
    ) -> Result<(RuleSet, LoadReport), RulesError> {
        let mut sources = Vec::with_capacity(paths.len());
        for p in paths {
            let text = std::fs::read_to_string(p).map_err(|source| RulesError::Read {
                path: p.display().to_string(),
                source,
            })?;
            sources.push((p.display().to_string(), text));
        }
        Ok(RuleSet::build(&sources, vars, max_tracked))
    }

    /// Parses rules from text; `origin` names it in the report (e.g. a file name).
    pub fn parse_str(
        text: &str,
        origin: &str,
        vars: &RuleVars,
        max_tracked: usize,
    ) -> (RuleSet, LoadReport) {
        RuleSet::build(&[(origin.to_string(), text.to_string())], vars, max_tracked)
    }

    fn build(
        sources: &[(String, String)],
        vars: &RuleVars,
        max_tracked: usize,
    ) -> (RuleSet, LoadReport) {
        let mut report = LoadReport::default();
        let mut names = FlowbitNames::default();
        let mut rules: Vec<Rule> = Vec::new();
        let mut sids: HashMap<(u32, u32), (usize, usize)> = HashMap::new();
        for (oi, (origin, text)) in sources.iter().enumerate() {
            for (line, rule_text) in logical_rules(text) {
                match parse::parse_rule(&rule_text, &vars.table, &mut names, oi as u32, line as u32)
                {
                    Ok(rule) => {
                        if let Some(&(o, l)) = sids.get(&(rule.gid, rule.sid)) {
                            report.skipped.push(Skipped {
                                file: origin.clone(),
                                line,
                                sid: Some(rule.sid),
                                reason: format!(
                                    "duplicate gid:sid {}:{} (first at {}:{})",
                                    rule.gid, rule.sid, sources[o].0, l
                                ),
                            });
                            continue;
                        }
                        sids.insert((rule.gid, rule.sid), (oi, line));
                        rules.push(rule);
                    }
                    Err(reason) => report.skipped.push(Skipped {
                        file: origin.clone(),
                        line,
                        sid: sniff_sid(&rule_text),
                        reason,
                    }),
                }
            }
        }
        // Suricata's order: action (pass first), flowbits writers before readers, priority,
        // then file order. Rule indices are positions in this order.
        rules.sort_by_key(|r| (r.action, r.flowbits_class(), r.priority, r.origin, r.line));
        report.loaded = rules.len();
        let unique = rules
            .iter()
            .any(|r| r.thresh.is_some_and(|t| t.unique_on.is_some()));
        let mut set = RuleSet {
            origins: sources.iter().map(|s| s.0.clone()).collect(),
            groups: Vec::new(),
            classes: Default::default(),
            thresholds: None,
            cands: Vec::with_capacity(rules.len()),
            seen: Vec::new(),
            touched: Vec::new(),
            lower: Vec::new(),
            dns_query: false,
            rules,
        };
        let thresholded = (0..set.rules.len() as u32)
            .filter_map(|i| {
                let r = &set.rules[i as usize];
                Some(RuleThresh {
                    rule: i,
                    thresh: r.thresh?,
                    limit: r.limit,
                    about_dst: set.info(i).about_dst,
                    priority: r.priority,
                })
            })
            .collect();
        set.thresholds = Some(Thresholds::new(
            thresholded,
            set.rules.len(),
            Tracker::new(max_tracked, unique),
        ));
        set.build_groups();
        (set, report)
    }

    fn build_groups(&mut self) {
        // Members of each group before compiling: (class, Some(port) | None for wide).
        let mut members: Vec<Vec<u32>> = Vec::new();
        let new_group = |members: &mut Vec<Vec<u32>>| {
            members.push(Vec::new());
            (members.len() - 1) as u32
        };
        let mut classes: [Class; 4] = Default::default();
        for c in classes.iter_mut() {
            c.wide = new_group(&mut members);
        }
        let dns_ports = crate::decode::DNS_PORTS.map(|p| (u128::from(p), u128::from(p)));
        for (i, r) in self.rules.iter().enumerate() {
            let i = i as u32;
            let cls: &[usize] = match r.proto {
                Proto::Ip => &[0, 1, 2, 3],
                Proto::Tcp => &[0],
                Proto::Udp => &[1],
                Proto::Dns => &[0, 1],
                Proto::Icmp | Proto::Icmp4 | Proto::Icmp6 => &[2],
            };
            // `dns` rules see messages sent to a DNS port: with any destination port they
            // are indexed under those ports.
            let dns_any = r.proto == Proto::Dns && r.dport_any && !r.bidir;
            let indexed = dns_any
                || (matches!(r.proto, Proto::Tcp | Proto::Udp | Proto::Dns)
                    && !r.bidir
                    && !r.dport_any
                    && r.dport.count() <= MAX_INDEXED_PORTS);
            for &c in cls {
                if indexed {
                    let ranges = if dns_any {
                        &dns_ports[..]
                    } else {
                        r.dport.ranges()
                    };
                    for &(lo, hi) in ranges {
                        for p in lo..=hi {
                            let p = p as u16;
                            let g = match classes[c].ports.get(&p) {
                                Some(&g) => g,
                                None => {
                                    let g = new_group(&mut members);
                                    classes[c].ports.insert(p, g);
                                    g
                                }
                            };
                            members[g as usize].push(i);
                        }
                    }
                } else {
                    let w = classes[c].wide;
                    members[w as usize].push(i);
                }
            }
        }
        for c in classes.iter_mut() {
            if !c.ports.is_empty() {
                c.port_bits = vec![0; (1 << 16) / 64];
                for &p in c.ports.keys() {
                    c.port_bits[usize::from(p >> 6)] |= 1 << (p & 63);
                }
            }
        }
        for m in members.iter_mut() {
            // Rules were pushed in index order; a rule listed twice (overlapping port
            // ranges) would be inspected twice.
            m.dedup();
        }
        let mut max_pats = 0;
        self.groups = members.iter().map(|m| self.compile_group(m)).collect();
        for g in &self.groups {
            max_pats = max_pats.max(g.pat_rules.len()).max(g.dns_rules.len());
        }
        self.classes = classes;
        self.dns_query = self.rules.iter().any(|r| !r.dns_query.is_empty());
        self.seen = vec![false; max_pats];
        if max_pats > 0 && self.lower.capacity() < LOWER_MAX {
            self.lower = Vec::with_capacity(LOWER_MAX);
        }
        self.touched = Vec::with_capacity(max_pats);
        // A packet gathers candidates from two groups (any-port and its port's), each at
        // most its plain rules plus every pattern's rules, before dedup: reserve that much
        // so `inspect` never grows the vector (the benchmark caught it growing).
        let bound = |g: &Group| {
            g.plain.len()
                + g.pat_rules.iter().map(Vec::len).sum::<usize>()
                + g.dns_rules.iter().map(Vec::len).sum::<usize>()
        };
        let most = self.groups.iter().map(bound).max().unwrap_or(0);
        let need = (2 * most).max(self.rules.len());
        if self.cands.capacity() < need {
            self.cands = Vec::with_capacity(need);
        }
    }

    fn compile_group(&self, members: &[u32]) -> Group {
        // One case-insensitive automaton over every fast pattern of the group: a single pass
        // over the payload; case-sensitive contents are confirmed by the full rule check.
        let mut pats: Vec<Vec<u8>> = Vec::new();
        let mut pat_rules: Vec<Vec<Cand>> = Vec::new();
        let mut idx: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut plain = Vec::new();
        let mut dns_pats: Vec<Vec<u8>> = Vec::new();
        let mut dns_rules: Vec<Vec<Cand>> = Vec::new();
        let mut dns_idx: HashMap<Vec<u8>, usize> = HashMap::new();
        for &i in members {
            let r = &self.rules[i as usize];
            let cand = Cand {
                pre: Pre::of(r),
                rule: i,
            };
            let content = r.fast.and_then(|f| match r.payload.get(f) {
                Some(matcher::PMatch::Content(c)) => Some(c),
                _ => None,
            });
            let Some(c) = content else {
                let dns = r.dns_fast.and_then(|f| match r.dns_query.get(f) {
                    Some(matcher::PMatch::Content(c)) => Some(c),
                    _ => None,
                });
                match dns {
                    Some(c) => {
                        let key = c.pat.to_ascii_lowercase();
                        let id = *dns_idx.entry(key.clone()).or_insert_with(|| {
                            dns_pats.push(key);
                            dns_rules.push(Vec::new());
                            dns_pats.len() - 1
                        });
                        dns_rules[id].push(cand);
                    }
                    None => plain.push(cand),
                }
                continue;
            };
            let key = c.pat.to_ascii_lowercase();
            let id = *idx.entry(key.clone()).or_insert_with(|| {
                pats.push(key);
                pat_rules.push(Vec::new());
                pats.len() - 1
            });
            pat_rules[id].push(cand);
        }
        let pat_pre = Pre::common(pat_rules.iter().flatten().map(|c| &c.pre));
        let min_pat = pats.iter().map(Vec::len).min().unwrap_or(0);
        let mut ac = None;
        let mut pre = None;
        if !pats.is_empty() {
            let total: usize = pats.iter().map(Vec::len).sum();
            // A full DFA is fastest but costs ~1 KiB per state: only for small groups.
            let kind = if total <= 4096 {
                AhoCorasickKind::DFA
            } else {
                AhoCorasickKind::ContiguousNFA
            };
            ac = AhoCorasickBuilder::new()
                .match_kind(MatchKind::Standard)
                .ascii_case_insensitive(true)
                .kind(Some(kind))
                .build(&pats)
                .ok();
            if ac.is_none() {
                // It cannot fail for plain byte patterns, but never lose rules over it.
                plain.extend(pat_rules.iter().flatten().copied());
                plain.sort_by_key(|c| c.rule);
                pat_rules.clear();
            }
            pre = AhoCorasickBuilder::new()
                .match_kind(MatchKind::LeftmostFirst)
                .kind(Some(kind))
                .build(&pats)
                .ok();
        }
        let mut dns_ac = None;
        if !dns_pats.is_empty() {
            dns_ac = AhoCorasickBuilder::new()
                .match_kind(MatchKind::Standard)
                .ascii_case_insensitive(true)
                .kind(Some(AhoCorasickKind::ContiguousNFA))
                .build(&dns_pats)
                .ok();
            if dns_ac.is_none() {
                // Never lose rules over it: check them for every packet instead.
                plain.extend(dns_rules.iter().flatten().copied());
                plain.sort_by_key(|c| c.rule);
                dns_rules.clear();
            }
        }
        Group {
            ac,
            pre,
            pat_rules,
            pat_pre,
            min_pat,
            plain,
            dns_ac,
            dns_rules,
        }
    }

    /// Number of loaded rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Describes rule `rule` (an index from a `RuleHit`); an out-of-range index gives an
    /// empty description with sid 0.
    pub fn info(&self, rule: u32) -> RuleInfo<'_> {
        match self.rules.get(rule as usize) {
            Some(r) => RuleInfo {
                gid: r.gid,
                sid: r.sid,
                rev: r.rev,
                msg: &r.msg,
                classtype: &r.classtype,
                category: r.category,
                priority: r.priority,
                action: r.action,
                about_dst: r
                    .thresh
                    .is_some_and(|t| t.track == Track::ByDst && t.kind != ThreshKind::Limit),
            },
            None => RuleInfo {
                gid: 0,
                sid: 0,
                rev: 0,
                msg: "",
                classtype: "",
                category: "",
                priority: 3,
                action: Action::Alert,
                about_dst: false,
            },
        }
    }

    /// Where rule `rule` was defined: (file, line).
    pub fn origin(&self, rule: u32) -> Option<(&str, u32)> {
        let r = self.rules.get(rule as usize)?;
        Some((self.origins.get(r.origin as usize)?.as_str(), r.line))
    }

    /// Threshold-table entries evicted because the table was full (0 once the thresholds
    /// are taken: ask their holder).
    pub fn tracker_evictions(&self) -> u64 {
        self.thresholds.as_ref().map_or(0, |t| t.tracker_counts().0)
    }

    /// Threshold keys matched once whose first sighting was replaced before a second match.
    pub fn tracker_first_dropped(&self) -> u64 {
        self.thresholds.as_ref().map_or(0, |t| t.tracker_counts().1)
    }

    /// Matches kept from alerting by a threshold or detection_filter since the last call
    /// (the engine adds them to its `alerts_suppressed` counter, which outlives a reload).
    pub fn take_suppressed(&mut self) -> u64 {
        self.thresholds
            .as_mut()
            .map_or(0, Thresholds::take_suppressed)
    }

    /// Takes the threshold state off the set, for another thread to check thresholded
    /// matches (the host judge): from now on `inspect` returns them as deferred hits instead
    /// of checking them. `None` when no rule has a threshold or they were taken already.
    pub fn take_thresholds(&mut self) -> Option<Thresholds> {
        if self.thresholds.as_ref().is_some_and(|t| t.is_empty()) {
            return None;
        }
        self.thresholds.take()
    }

    /// The thresholds were taken: thresholded matches come back deferred.
    pub fn defers_thresholds(&self) -> bool {
        self.thresholds.is_none()
    }

    /// Number of rule groups (for diagnostics and the scaling test).
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// Per packet: appends the alerting rules to `out` (cleared first). Never allocates in
    /// steady state: scratch space is owned by the set, `out` comes with capacity.
    pub fn inspect(
        &mut self,
        pkt: &PacketCtx<'_>,
        flow: &mut FlowRuleState,
        out: &mut Vec<RuleHit>,
    ) {
        out.clear();
        let m = pkt.meta;
        if !m.is_ip() || self.rules.is_empty() || (pkt.has_flow && flow.passed) {
            return;
        }
        let payload = m.payload(pkt.frame);
        let class = &self.classes[class_of(m.ip_proto)];
        let port_group = if class_of(m.ip_proto) <= 1 && m.l4_off != 0 {
            class.port_group(m.dst_port)
        } else {
            None
        };
        let word = pre::word(m, pkt.has_flow, pkt.to_server, pkt.established);
        let dsize = m.payload_len;
        // A DNS request's query name, for `dns.query` (decoded once per packet).
        // (The buffer is only filled, and zeroed, when some rule needs it and the packet is a
        // DNS request: zeroing it for every packet showed in the loop's profile.)
        let mut name_buf: Option<[u8; 256]> = None;
        let name = if self.dns_query && m.dns.is_some_and(|d| !d.is_response) {
            dns_request_name(pkt, name_buf.insert([0; 256]))
        } else {
            None
        };
        self.cands.clear();
        // Each group adds its candidates in rule order, and no rule is in both groups nor
        // twice in one: sorting is needed only when more than one run was added.
        let mut runs = 0u32;
        let mut lowered = false;
        // The any-port group, then the port's. (Not `[..].into_iter().flatten()`: that
        // iterator's bookkeeping cost ~27 instructions a packet.)
        for step in 0..2 {
            let g = match (step, port_group) {
                (0, _) => class.wide,
                (_, Some(g)) => g,
                (_, None) => break,
            };
            let Some(group) = self.groups.get(g as usize) else {
                continue;
            };
            let mut hits = PatternHits {
                cands: &mut self.cands,
                seen: &mut self.seen,
                touched: &mut self.touched,
                word,
                dsize,
            };
            let before = hits.cands.len();
            for c in &group.plain {
                if c.pre.passes(word, dsize) {
                    hits.cands.push(c.rule);
                }
            }
            runs += u32::from(hits.cands.len() > before);
            if let (Some(dac), Some(name)) = (&group.dns_ac, name) {
                let ids = dac
                    .find_overlapping_iter(name)
                    .map(|m| m.pattern().as_usize());
                runs += hits.add(ids, &group.dns_rules);
            }
            if payload.len() < group.min_pat.max(1)
                || group.ac.is_none()
                || !group.pat_pre.passes(word, dsize)
            {
                continue;
            }
            if let (Some(pre), true) = (&group.pre, payload.len() <= LOWER_MAX) {
                if !lowered {
                    lowercase_into(&mut self.lower, payload);
                    lowered = true;
                }
                if !pre.is_match(&self.lower[..]) {
                    continue;
                }
            }
            if let Some(ac) = &group.ac {
                let ids = ac
                    .find_overlapping_iter(payload)
                    .map(|m| m.pattern().as_usize());
                runs += hits.add(ids, &group.pat_rules);
            }
        }
        if runs > 1 {
            self.cands.sort_unstable();
        }
        self.run_cands(pkt, flow, payload, name, out);
    }

    /// Checks the candidates in `cands` (in rule order) and applies what matches: flowbits,
    /// `pass`, thresholds; alerts go to `out`.
    fn run_cands(
        &mut self,
        pkt: &PacketCtx<'_>,
        flow: &mut FlowRuleState,
        payload: &[u8],
        name: Option<&[u8]>,
        out: &mut Vec<RuleHit>,
    ) {
        let m = pkt.meta;
        for ci in 0..self.cands.len() {
            let ri = self.cands[ci];
            let Some(r) = self.rules.get(ri as usize) else {
                continue;
            };
            if !rule_matches(r, pkt, flow, payload, name) {
                continue;
            }
            if pkt.has_flow {
                for op in &r.flowbits {
                    match *op {
                        FbOp::Set(b) => flow.flowbits |= b,
                        FbOp::Unset(b) => flow.flowbits &= !b,
                        FbOp::Toggle(b) => flow.flowbits ^= b,
                        _ => {}
                    }
                }
            }
            if r.action == Action::Pass {
                if pkt.has_flow {
                    flow.passed = true;
                }
                // Nothing before it alerts. A threshold counted the matches it checked; the
                // deferred ones are still to be counted, silently.
                out.retain_mut(|h| {
                    h.silent = true;
                    h.deferred
                });
                return;
            }
            if r.noalert {
                continue;
            }
            if let Some(spec) = r.thresh {
                let Some(t) = &mut self.thresholds else {
                    out.push(RuleHit {
                        rule: ri,
                        deferred: true,
                        silent: false,
                    });
                    continue;
                };
                let (limit, ends) = (r.limit.as_ref(), Ends::of(m));
                let (tracker, suppressed) = (&mut t.tracker, &mut t.suppressed);
                if !check_rule(tracker, suppressed, ri, &spec, limit, pkt.ts, &ends) {
                    continue;
                }
            }
            out.push(RuleHit::alert(ri));
        }
    }
}

fn side_matches(r: &Rule, s: u128, sp: u16, d: u128, dp: u16) -> bool {
    (r.sport_any || r.sport.contains(u128::from(sp)))
        && (r.dport_any || r.dport.contains(u128::from(dp)))
        && (r.src_any || r.src.contains(s))
        && (r.dst_any || r.dst.contains(d))
}

fn rule_matches(
    r: &Rule,
    pkt: &PacketCtx<'_>,
    flow: &FlowRuleState,
    payload: &[u8],
    name: Option<&[u8]>,
) -> bool {
    let m = pkt.meta;
    if !r.proto.matches(m.ip_proto) {
        return false;
    }
    // L4 rules need the L4 header (a non-first fragment has none).
    if r.proto != Proto::Ip && (m.l4_off == 0 || (m.frag.is_fragment && m.frag.offset > 0)) {
        return false;
    }
    // `dns` rules see DNS messages; with any destination port, those sent to a DNS port.
    if r.proto == Proto::Dns
        && (m.dns.is_none()
            || (r.dport_any && !r.bidir && !crate::decode::DNS_PORTS.contains(&m.dst_port)))
    {
        return false;
    }
    // Cheap per-packet tests first (flow state, flags, sizes, flowbits), the address and
    // port sets (range searches) after: plain rules such as SYN-scan detectors are
    // candidates for every packet of their group, and most packets fail their flags.
    if r.flow != 0 {
        if r.flow & flowc::NEEDS_FLOW != 0 && !pkt.has_flow {
            return false;
        }
        if (r.flow & flowc::TO_SERVER != 0 && !pkt.to_server)
            || (r.flow & flowc::TO_CLIENT != 0 && pkt.to_server)
            || (r.flow & flowc::ESTABLISHED != 0 && !pkt.established)
            || (r.flow & flowc::NOT_ESTABLISHED != 0 && pkt.established)
        {
            return false;
        }
    }
    if !r.conds.iter().all(|c| c.test(m, pkt.frame)) {
        return false;
    }
    if let Some((side, cmp)) = r.stream_size {
        if !pkt.has_flow || m.ip_proto != 6 || !side.test(cmp, pkt.stream) {
            return false;
        }
    }
    for op in &r.flowbits {
        let bits = flow.flowbits;
        let ok = match *op {
            FbOp::IsSetAny(b) => pkt.has_flow && bits & b != 0,
            FbOp::IsSetAll(b) => pkt.has_flow && bits & b == b,
            FbOp::IsNotSetAny(b) => pkt.has_flow && bits & b != b,
            FbOp::IsNotSetAll(b) => pkt.has_flow && bits & b == 0,
            _ => true,
        };
        if !ok {
            return false;
        }
    }
    let (s, d) = (addr_key(m.src), addr_key(m.dst));
    let reverse = || r.bidir && side_matches(r, d, m.dst_port, s, m.src_port);
    if !(side_matches(r, s, m.src_port, d, m.dst_port) || reverse()) {
        return false;
    }
    (r.payload.is_empty() || match_payload(&r.payload, payload))
        && (r.dns_query.is_empty() || name.is_some_and(|n| match_payload(&r.dns_query, n)))
        && r.hdrs
            .iter()
            .all(|(b, list)| header(*b, m, pkt.frame).is_some_and(|h| match_payload(list, h)))
}

/// The bytes of a header buffer in `frame` (None when the packet has no such header).
fn header<'f>(b: HdrBuf, m: &PacketMeta, frame: &'f [u8]) -> Option<&'f [u8]> {
    let (at, len) = match b {
        HdrBuf::Ipv4 if m.l3 == L3::Ipv4 => {
            let at = m.l3_off as usize;
            (at, usize::from(frame.get(at)? & 0x0f) * 4)
        }
        HdrBuf::Ipv6 if m.l3 == L3::Ipv6 => (m.l3_off as usize, 40),
        HdrBuf::Tcp if m.ip_proto == 6 && m.l4_off != 0 => {
            (m.l4_off as usize, usize::from(m.tcp.header_len))
        }
        HdrBuf::Udp if m.ip_proto == 17 && m.l4_off != 0 => (m.l4_off as usize, 8),
        _ => return None,
    };
    frame.get(at..at + len)
}

/// The `dns.query` buffer: the query name of a DNS request, as dotted text (None for
/// anything else).
fn dns_request_name<'b>(pkt: &PacketCtx<'_>, buf: &'b mut [u8; 256]) -> Option<&'b [u8]> {
    let d = pkt.meta.dns.filter(|d| !d.is_response)?;
    Some(crate::decode::dns_qname(pkt.frame, &d, buf))
}

#[cfg(test)]
impl RuleSet {
    /// Every rule in order through the full check: the meaning `inspect` must keep while it
    /// skips rules (groups, prefilters, pre-checks) for speed.
    fn inspect_every_rule(
        &mut self,
        pkt: &PacketCtx<'_>,
        flow: &mut FlowRuleState,
        out: &mut Vec<RuleHit>,
    ) {
        out.clear();
        let m = pkt.meta;
        if !m.is_ip() || self.rules.is_empty() || (pkt.has_flow && flow.passed) {
            return;
        }
        let payload = m.payload(pkt.frame);
        // (The buffer is only filled, and zeroed, when some rule needs it.)
        let mut name_buf: Option<[u8; 256]> = None;
        let name = if self.dns_query {
            dns_request_name(pkt, name_buf.insert([0; 256]))
        } else {
            None
        };
        self.cands.clear();
        self.cands.extend(0..self.rules.len() as u32);
        self.run_cands(pkt, flow, payload, name, out);
    }
}

#[cfg(test)]
mod tests {
    use super::lowercase_into;
    use super::{FlowRuleState, PacketCtx, RuleSet, RuleVars};
    use crate::decode::{decode, LinkType};

    /// Rules beyond the defaults that exercise every pre-check form: flag modes with an
    /// ignore mask, size bounds, ICMP type and code, flow direction and state, `ip` rules,
    /// bidirectional and wide port sets, `pass` and flowbits.
    const EXTRA_RULES: &str = r#"
alert tcp any any -> any any (msg:"flags any"; flags:*SF; sid:1;)
alert tcp any any -> any any (msg:"flags not"; flags:!A; dsize:0; sid:2;)
alert tcp any any -> any any (msg:"flags exact ignore"; flags:PA,U; dsize:>2; sid:3;)
alert tcp any any -> any any (msg:"flags all"; flags:R+; sid:4;)
alert tcp any any -> any any (msg:"two flags"; flags:S; flags:!S; sid:5;)
alert tcp any any -> any 1000:2000 (msg:"wide range"; flow:to_client; dsize:<5; sid:6;)
alert tcp any any <> any 80 (msg:"bidir"; flow:established; content:"get"; nocase; sid:7;)
alert udp any any -> any any (msg:"dsize range"; dsize:3<>9; sid:8;)
alert udp any any -> any any (msg:"dsize ne"; dsize:!4; content:"ab"; sid:9;)
alert icmp any any -> any any (msg:"itype gt"; itype:>3; icode:0; sid:10;)
alert icmp any any -> any any (msg:"itype eq"; itype:0; sid:11;)
alert ip any any -> any any (msg:"ip proto"; ip_proto:17; dsize:>=6; sid:12;)
alert ip any any -> any any (msg:"ttl"; ttl:<3; sid:13;)
alert tcp any any -> any any (msg:"not established"; flow:not_established,to_server; flags:S,12; sid:14;)
alert tcp any any -> any 80 (msg:"set bit"; flow:to_server; content:"POST"; flowbits:set,post; flowbits:noalert; sid:15;)
alert tcp any 80 -> any any (msg:"read bit"; flowbits:isset,post; content:"200"; sid:16;)
pass tcp any any -> any 8080 (msg:"pass"; content:"ok"; sid:17;)
alert tcp any any -> any 8080 (msg:"after pass"; content:"o"; sid:18;)
alert udp any any -> any 53 (msg:"dns dsize"; dsize:>40; content:"|00 01|"; sid:19;)
alert icmp any any -> any any (msg:"icmp6 echo"; itype:128; dsize:<100; sid:20;)
alert tcp any any -> any any (msg:"window"; window:!0; flags:F+; sid:21;)
alert tcp any any -> any [21,22,23] (msg:"ports flow"; flow:to_client,not_established; sid:22;)
alert tcp any any -> any any (msg:"empty dsize"; dsize:<0; sid:23;)
alert ip any any -> any any (msg:"lsrr"; ipopts:lsrr; sid:24;)
alert tcp any any -> any 80 (msg:"any opt"; ipopts:any; flags:S; sid:25;)
alert tcp any any -> any any (msg:"stream"; stream_size:either,>,1500; flow:established; sid:26;)
alert dns any any -> any any (msg:"dns q"; dns.query; content:"EXAMPLE"; nocase; sid:27;)
alert ip any any -> any any (msg:"v4 hdr"; ipv4.hdr; content:"|06|"; offset:9; depth:1; sid:28;)
alert tcp any any -> any any (msg:"tcp hdr"; tcp.hdr; content:"|50|"; offset:12; depth:1; pkt_data; content:"GET"; sid:29;)
"#;

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
            &xs[self.below(xs.len())]
        }
    }

    const PAYLOADS: &[&[u8]] = &[
        b"",
        b"ok",
        b"o",
        b"ab",
        b"abcd",
        b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /gate.php HTTP/1.1\r\nHost: 10.1.2.3\r\n\r\nid=1",
        b"HTTP/1.1 200 OK\r\n\r\nMZ....This program cannot",
        b"${jndi:ldap://x/a}",
        b"${${lower:j}ndi:x}",
        b"530 Login incorrect",
        b"USER anonymous\r\n",
        b"PASS secret\r\n",
        b"id=1' OR 1=1 --",
        b"a UNION ALL SELECT 1",
        b"{\"method\":\"login\",\"agent\":\"xmrig\"}",
        b"mining.subscribe",
        b"login: ",
        b"\x18\x03\x02\x00\x03\x01\x40\x00",
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x0a\x00\x01",
        b"\x12\x35\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www\x07example\x03com\x00\x00\x01\x00\x01",
        b"EHLO [1.2.3.4]",
        b"eth_submitWork",
        b"Authorization: Basic Zm9v",
    ];

    /// A random frame with random flow facts, `ts` moved on by up to `max_step` µs.
    struct Sample {
        frame: Vec<u8>,
        meta: crate::decode::PacketMeta,
        ts: i64,
        has_flow: bool,
        to_server: bool,
        established: bool,
        stream: [u32; 2],
    }

    impl Sample {
        fn new(rng: &mut Rng, ts: &mut i64, max_step: usize) -> Sample {
            let frame = frame(rng);
            let meta = decode(LinkType::Ethernet, &frame, frame.len() as u32);
            *ts += rng.below(max_step) as i64;
            Sample {
                meta,
                ts: *ts,
                has_flow: rng.below(4) != 0,
                to_server: rng.below(2) == 0,
                established: rng.below(2) == 0,
                stream: [rng.below(3000) as u32, rng.below(3000) as u32],
                frame,
            }
        }

        fn ctx(&self) -> PacketCtx<'_> {
            PacketCtx {
                ts: self.ts,
                meta: &self.meta,
                frame: &self.frame,
                has_flow: self.has_flow,
                to_server: self.to_server,
                established: self.established,
                stream: self.stream,
            }
        }
    }

    /// An Ethernet frame: IPv4 or IPv6, then TCP, UDP or ICMP with the given fields.
    fn frame(rng: &mut Rng) -> Vec<u8> {
        let addrs: [[u8; 4]; 4] = [[192, 168, 1, 5], [8, 8, 8, 8], [10, 0, 0, 1], [1, 2, 3, 4]];
        let ports = [
            21u16, 22, 23, 25, 53, 67, 68, 80, 110, 443, 1500, 3389, 8080, 40000,
        ];
        let proto = *rng.pick(&[6u8, 6, 6, 17, 17, 1, 58, 47]);
        let v6 = proto == 58 || (proto != 1 && rng.below(6) == 0);
        let mut payload: Vec<u8> = rng.pick(PAYLOADS).to_vec();
        if rng.below(4) == 0 {
            payload.make_ascii_uppercase();
        }
        if rng.below(5) == 0 {
            let n = rng.below(300);
            payload.extend((0..n).map(|_| rng.next() as u8));
        }
        let mut l4 = Vec::new();
        let (sp, dp) = (*rng.pick(&ports), *rng.pick(&ports));
        match proto {
            6 => {
                l4.extend_from_slice(&sp.to_be_bytes());
                l4.extend_from_slice(&dp.to_be_bytes());
                l4.extend_from_slice(&(rng.next() as u32).to_be_bytes());
                l4.extend_from_slice(&(rng.next() as u32).to_be_bytes());
                let flags = *rng.pick(&[0x02u8, 0x12, 0x10, 0x18, 0x11, 0x04, 0x00, 0x29, 0xc2]);
                let flags = if rng.below(8) == 0 {
                    rng.next() as u8
                } else {
                    flags
                };
                l4.extend_from_slice(&[0x50, flags]);
                l4.extend_from_slice(&(rng.below(2) as u16 * 512).to_be_bytes());
                l4.extend_from_slice(&[0, 0, 0, 0]);
            }
            17 => {
                l4.extend_from_slice(&sp.to_be_bytes());
                l4.extend_from_slice(&dp.to_be_bytes());
                l4.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
                l4.extend_from_slice(&[0, 0]);
            }
            1 | 58 => {
                let typ = *rng.pick(&[0u8, 3, 8, 11, 128, 129]);
                l4.extend_from_slice(&[typ, rng.below(2) as u8, 0, 0]);
                l4.extend_from_slice(&(rng.next() as u32).to_be_bytes());
            }
            _ => {}
        }
        l4.extend_from_slice(&payload);
        let (src, dst) = (*rng.pick(&addrs), *rng.pick(&addrs));
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
        if v6 {
            f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
            f.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            f.extend_from_slice(&[proto, 1 + rng.below(64) as u8]);
            for a in [src, dst] {
                f.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
                f.extend_from_slice(&a);
            }
        } else {
            // One in eight a later fragment (no usable L4 header).
            let frag: u16 = if rng.below(8) == 0 { 0x0010 } else { 0 };
            // One in six with IP options: none named, loose source route, record route.
            let opts: &[u8] = match rng.below(12) {
                0 => &[1, 1, 1, 0],
                1 => &[131, 7, 4, 10, 0, 0, 1, 0],
                _ => &[],
            };
            f.extend_from_slice(&[0x08, 0x00, 0x45 + (opts.len() / 4) as u8, 0]);
            f.extend_from_slice(&((20 + opts.len() + l4.len()) as u16).to_be_bytes());
            f.extend_from_slice(&[0, 1]);
            f.extend_from_slice(&frag.to_be_bytes());
            f.extend_from_slice(&[1 + rng.below(64) as u8, proto, 0, 0]);
            f.extend_from_slice(&src);
            f.extend_from_slice(&dst);
            f.extend_from_slice(opts);
        }
        f.extend_from_slice(&l4);
        f
    }

    /// The fast path (groups, prefilters, pre-checks, merged candidate runs) alerts exactly
    /// as checking every rule in order would, flowbits, `pass` and thresholds included.
    #[test]
    fn inspect_equals_checking_every_rule() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
        let mut text = String::from(EXTRA_RULES);
        for f in ["phantomnet.rules", "phantomnet-threats.rules"] {
            text.push_str(&std::fs::read_to_string(dir.join(f)).unwrap());
        }
        let vars = RuleVars::default_home();
        let (mut fast, rep) = RuleSet::parse_str(&text, "t.rules", &vars, 64);
        assert!(rep.skipped.is_empty(), "{:?}", rep.skipped);
        let (mut every, _) = RuleSet::parse_str(&text, "t.rules", &vars, 64);
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let mut flows_fast = [FlowRuleState::default(); 8];
        let mut flows_every = flows_fast;
        let (mut out_fast, mut out_every) = (Vec::with_capacity(64), Vec::with_capacity(64));
        let (mut alerts, mut ts) = (0, 0i64);
        let mut hit = std::collections::BTreeSet::new();
        for step in 0..40_000 {
            let sample = Sample::new(&mut rng, &mut ts, 300_000);
            let (pkt, meta) = (sample.ctx(), &sample.meta);
            let fi = rng.below(8);
            if rng.below(200) == 0 {
                flows_fast[fi] = FlowRuleState::default();
                flows_every[fi] = FlowRuleState::default();
            }
            fast.inspect(&pkt, &mut flows_fast[fi], &mut out_fast);
            every.inspect_every_rule(&pkt, &mut flows_every[fi], &mut out_every);
            assert_eq!(out_fast, out_every, "step {step}: {meta:?}");
            assert_eq!(flows_fast[fi], flows_every[fi], "step {step}");
            alerts += out_fast.len();
            hit.extend(out_fast.iter().map(|h| fast.info(h.rule).sid));
        }
        // The traffic must reach many rules for the comparison to mean anything.
        println!("{alerts} alerts from {} rules: {hit:?}", hit.len());
        assert!(alerts > 2_000, "only {alerts} alerts");
        assert!(hit.len() >= 25, "only {} rules alerted: {hit:?}", hit.len());
        // The header and stream keywords took part.
        for sid in [24, 25, 26, 27, 28, 29] {
            assert!(hit.contains(&sid), "sid {sid} never alerted: {hit:?}");
        }
    }

    /// Thresholds of every `track`, with small counts, for the deferred-check test.
    const THRESH_RULES: &str = r#"
alert tcp any any -> any any (msg:"t flow"; flags:S; threshold:type both, track by_flow, count 2, seconds 60; sid:40;)
alert ip any any -> any any (msg:"t both"; threshold:type threshold, track by_both, count 3, seconds 5; sid:41;)
alert udp any any -> any any (msg:"t rule"; threshold:type limit, track by_rule, count 2, seconds 1; sid:42;)
alert tcp any any -> any any (msg:"t dst"; flags:R; detection_filter:track by_dst, count 2, seconds 10; sid:43;)
alert tcp any any -> any any (msg:"t uniq"; detection_filter:track by_src, count 3, seconds 10, unique_on src_port; threshold:type limit, track by_dst, count 1, seconds 3; sid:44;)
"#;

    /// With its thresholds taken (the judge thread checks them), a set returns thresholded
    /// matches deferred. Checked in order on the taken [`Thresholds`] from the ends a host
    /// event carries (addresses in 16-byte form), they alert exactly where the set checking
    /// them itself alerts, and count the same suppressed matches: IPv4 and IPv6, every
    /// `track`, `limit` and distinct ports.
    #[test]
    fn deferred_thresholds_alert_as_checked_on_the_loop() {
        use super::threshold::Ends;
        use crate::flow::addr16;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
        let mut text = format!("{EXTRA_RULES}{THRESH_RULES}");
        for f in ["phantomnet.rules", "phantomnet-threats.rules"] {
            text.push_str(&std::fs::read_to_string(dir.join(f)).unwrap());
        }
        let vars = RuleVars::default_home();
        let (mut inline, _) = RuleSet::parse_str(&text, "t.rules", &vars, 64);
        let (mut deferring, _) = RuleSet::parse_str(&text, "t.rules", &vars, 64);
        assert!(!deferring.defers_thresholds());
        let mut th = deferring.take_thresholds().expect("thresholded rules");
        assert!(deferring.defers_thresholds());
        assert!(deferring.take_thresholds().is_none());
        let mut rng = Rng(0x51_7cc1_b727_220a);
        let mut flows_a = [FlowRuleState::default(); 8];
        let mut flows_b = flows_a;
        let (mut out_a, mut out_b) = (Vec::with_capacity(64), Vec::with_capacity(64));
        let (mut deferred, mut alerted, mut suppressed, mut ts) = (0, 0, 0, 0i64);
        let mut sids = std::collections::BTreeSet::new();
        for step in 0..40_000 {
            let sample = Sample::new(&mut rng, &mut ts, 100_000);
            let (pkt, meta) = (sample.ctx(), &sample.meta);
            let fi = rng.below(8);
            inline.inspect(&pkt, &mut flows_a[fi], &mut out_a);
            deferring.inspect(&pkt, &mut flows_b[fi], &mut out_b);
            assert!(out_a.iter().all(|h| !h.deferred), "step {step}");
            let ends = Ends {
                src: u128::from_be_bytes(addr16(meta.src)),
                dst: u128::from_be_bytes(addr16(meta.dst)),
                src_port: meta.src_port,
                dst_port: meta.dst_port,
                proto: meta.ip_proto,
            };
            let mut resolved = Vec::new();
            for h in &out_b {
                if !h.deferred {
                    resolved.push(h.rule);
                    continue;
                }
                deferred += 1;
                if th.check(h.rule, ts, &ends).is_some() && !h.silent {
                    resolved.push(h.rule);
                    alerted += 1;
                    sids.insert(inline.info(h.rule).sid);
                }
            }
            let want: Vec<u32> = out_a.iter().map(|h| h.rule).collect();
            assert_eq!(resolved, want, "step {step}: {meta:?}");
            let n = inline.take_suppressed();
            assert_eq!(th.take_suppressed(), n, "step {step}");
            assert_eq!(deferring.take_suppressed(), 0);
            suppressed += n;
        }
        println!("{deferred} deferred, {alerted} alerted, {suppressed} suppressed: {sids:?}");
        assert!(deferred > 5_000 && alerted > 500 && suppressed > 2_000);
        for sid in 40..=44 {
            assert!(sids.contains(&sid), "sid {sid} never alerted: {sids:?}");
        }
    }

    /// Thousands of domain rules: a DNS request is checked against the rules whose
    /// `dns.query` pattern its name holds, not against all of them.
    #[test]
    fn dns_query_rules_are_prefiltered_by_the_name() {
        let mut text = String::new();
        for i in 0..5000 {
            text.push_str(&format!(
                "alert dns any any -> any any (msg:\"d{i}\"; dns.query; content:\"host{i}.bad.example\"; nocase; endswith; sid:{};)\n",
                100 + i
            ));
        }
        // And one without a usable fast pattern (a pcre alone): checked for every request.
        text.push_str("alert dns any any -> any any (dns.query; pcre:\"/^x/\"; sid:9;)\n");
        let (mut set, rep) = RuleSet::parse_str(&text, "t.rules", &RuleVars::default_home(), 64);
        assert!(rep.skipped.is_empty(), "{:?}", rep.skipped);
        let query = |name: &str| {
            let mut msg = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
            for l in name.split('.') {
                msg.push(l.len() as u8);
                msg.extend_from_slice(l.as_bytes());
            }
            msg.extend_from_slice(&[0, 0, 1, 0, 1]);
            let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00, 0x45, 0];
            f.extend_from_slice(&((28 + msg.len()) as u16).to_be_bytes());
            f.extend_from_slice(&[0, 1, 0, 0, 64, 17, 0, 0, 192, 168, 1, 5, 8, 8, 8, 8]);
            f.extend_from_slice(&40000u16.to_be_bytes());
            f.extend_from_slice(&53u16.to_be_bytes());
            f.extend_from_slice(&((8 + msg.len()) as u16).to_be_bytes());
            f.extend_from_slice(&[0, 0]);
            f.extend_from_slice(&msg);
            f
        };
        let mut out = Vec::with_capacity(16);
        let mut flow = FlowRuleState::default();
        for (name, want) in [
            ("www.HOST4242.bad.example", vec![4342]),
            ("xhost17.bad.example", vec![9, 117]),
            ("harmless.example.org", vec![]),
        ] {
            let f = query(name);
            let meta = decode(LinkType::Ethernet, &f, f.len() as u32);
            let pkt = PacketCtx {
                ts: 0,
                meta: &meta,
                frame: &f,
                has_flow: false,
                to_server: true,
                established: false,
                stream: [0; 2],
            };
            set.inspect(&pkt, &mut flow, &mut out);
            let mut sids: Vec<u32> = out.iter().map(|h| set.info(h.rule).sid).collect();
            sids.sort_unstable();
            assert_eq!(sids, want, "{name}");
            // The pcre rule plus the few whose pattern the name holds.
            assert!(
                set.cands.len() <= 3,
                "{name}: {} candidates",
                set.cands.len()
            );
        }
    }

    #[test]
    fn swar_lowercase_matches_std_for_every_byte_and_tail() {
        let all: Vec<u8> = (0..=255u8).collect();
        let mut dst = Vec::with_capacity(600);
        // Every byte value at every position of a word, and every tail length (after
        // whole 16-byte steps: none, one word, bytes, a word and bytes).
        for shift in 0..8 {
            for len in [0, 1, 7, 8, 9, 15, 16, 17, 23, 24, 25, 31, 255, 256 - shift] {
                let src: Vec<u8> = all.iter().cycle().skip(shift).take(len).copied().collect();
                lowercase_into(&mut dst, &src);
                assert_eq!(dst, src.to_ascii_lowercase(), "shift {shift} len {len}");
            }
        }
    }
}
