//! Threat-intel IP/CIDR lists: loaded once at start-up into sorted, non-overlapping address
//! ranges per family, so the per-packet lookup is a binary search that never allocates.
//!
//! Formats are recognised per line, so lists can be concatenated or mixed:
//! - one address, `a.b.c.d/len` CIDR or `a-b` range per line (IPv4 or IPv6), FireHOL
//!   netsets included; `#` starts a comment, blank lines are ignored;
//! - Spamhaus DROP/EDROP: `1.2.3.0/24 ; SBL123` (the text after `;` is kept as the note);
//! - Suricata iprep CSV: `address,category,score` (category kept as text, score 0–255).
//!
//! Overlapping entries are resolved at load time: each address is attributed to the entry
//! with the highest score (entries without a score rank below any scored one), ties going
//! to the entry loaded first (earlier list, then earlier line). Adjacent ranges with the
//! same attribution are merged. Bad lines are skipped with a warning naming `file:line`
//! and counted in the [`IntelReport`]; an unreadable file is an error naming it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

/// Warnings kept (and logged) per list; the rest are only counted.
const MAX_WARNINGS: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum IntelError {
    #[error("cannot read intel list `{name}` from {}: {source}", path.display())]
    Read {
        name: String,
        path: PathBuf,
        source: io::Error,
    },
}

/// What a lookup found: which list, and the entry's iprep category, score and note.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntelHit<'a> {
    /// Index of the list (order of loading); its name is [`IntelSet::list_name`].
    pub list: usize,
    /// iprep category ("" when the format has none).
    pub category: &'a str,
    /// iprep score (None when the format has none).
    pub score: Option<u8>,
    /// Trailing comment, e.g. Spamhaus' `SBL123` ("" when none).
    pub note: &'a str,
}

/// Per-list load summary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListReport {
    pub name: String,
    /// File path or other origin used in warnings.
    pub origin: String,
    /// Entries accepted.
    pub entries: usize,
    /// Lines skipped as malformed.
    pub bad_lines: usize,
    /// The first few warnings, `origin:line: what was wrong`.
    pub warnings: Vec<String>,
}

/// Load summary of a whole set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IntelReport {
    pub lists: Vec<ListReport>,
    /// Non-overlapping ranges after merging.
    pub v4_ranges: usize,
    pub v6_ranges: usize,
}

impl IntelReport {
    pub fn entries(&self) -> usize {
        self.lists.iter().map(|l| l.entries).sum()
    }

    pub fn bad_lines(&self) -> usize {
        self.lists.iter().map(|l| l.bad_lines).sum()
    }
}

/// One line for logs and `phantomnet check`.
impl std::fmt::Display for IntelReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} intel list(s), {} entries",
            self.lists.len(),
            self.entries()
        )?;
        if self.bad_lines() > 0 {
            write!(f, " ({} bad lines skipped)", self.bad_lines())?;
        }
        write!(
            f,
            " -> {} IPv4 + {} IPv6 ranges",
            self.v4_ranges, self.v6_ranges
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    start: u32,
    len: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Attr {
    list: u32,
    score: Option<u8>,
    category: Span,
    note: Span,
}

#[derive(Clone, Copy, Debug)]
struct Range<T> {
    start: T,
    end: T,
    attr: u32,
}

/// Immutable, sorted reputation ranges. Lookups borrow; nothing allocates after `build`.
#[derive(Clone, Debug, Default)]
pub struct IntelSet {
    v4: Vec<Range<u32>>,
    v6: Vec<Range<u128>>,
    attrs: Vec<Attr>,
    text: String,
    lists: Vec<String>,
}

impl IntelSet {
    /// Loads lists `(name, path)` in order (earlier lists win ties).
    pub fn load(lists: &[(String, PathBuf)]) -> Result<(IntelSet, IntelReport), IntelError> {
        let mut b = IntelBuilder::new();
        for (name, path) in lists {
            b.add_file(name, path)?;
        }
        Ok(b.build())
    }

    /// Parses one list from text; `origin` names it in warnings (e.g. the file path).
    pub fn parse_str(name: &str, text: &str, origin: &str) -> (IntelSet, IntelReport) {
        let mut b = IntelBuilder::new();
        b.add_list(name, text, origin);
        b.build()
    }

    /// The attribution of `ip`, if any list covers it. IPv4-mapped IPv6 addresses
    /// (`::ffff:a.b.c.d`) are looked up as IPv4 first.
    pub fn lookup(&self, ip: IpAddr) -> Option<IntelHit<'_>> {
        let attr = match ip {
            IpAddr::V4(a) => find(&self.v4, u32::from(a)),
            IpAddr::V6(a) => a
                .to_ipv4_mapped()
                .and_then(|m| find(&self.v4, u32::from(m)))
                .or_else(|| find(&self.v6, u128::from(a))),
        }?;
        let a = self.attrs.get(attr as usize)?;
        Some(IntelHit {
            list: a.list as usize,
            category: self.span(a.category),
            score: a.score,
            note: self.span(a.note),
        })
    }

    pub fn list_name(&self, idx: usize) -> &str {
        self.lists.get(idx).map_or("", String::as_str)
    }

    pub fn list_count(&self) -> usize {
        self.lists.len()
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Non-overlapping ranges held (IPv4, IPv6).
    pub fn range_counts(&self) -> (usize, usize) {
        (self.v4.len(), self.v6.len())
    }

    fn span(&self, s: Span) -> &str {
        let a = s.start as usize;
        self.text.get(a..a + s.len as usize).unwrap_or("")
    }
}

fn find<T: Ord + Copy>(ranges: &[Range<T>], ip: T) -> Option<u32> {
    let i = ranges.partition_point(|r| r.start <= ip);
    let r = ranges.get(i.checked_sub(1)?)?;
    (r.end >= ip).then_some(r.attr)
}

/// One accepted entry before overlaps are resolved.
#[derive(Clone, Copy, Debug)]
struct Entry {
    start: u128,
    end: u128,
    attr: u32,
    /// Load order: lower wins ties.
    order: u32,
}

/// Collects lists, then resolves overlaps into an [`IntelSet`].
#[derive(Debug, Default)]
pub struct IntelBuilder {
    v4: Vec<Entry>,
    v6: Vec<Entry>,
    attrs: Vec<Attr>,
    text: String,
    lists: Vec<String>,
    reports: Vec<ListReport>,
}

/// One parsed line.
#[derive(Debug, PartialEq, Eq)]
struct Line<'a> {
    v6: bool,
    start: u128,
    end: u128,
    category: &'a str,
    score: Option<u8>,
    note: &'a str,
}

impl IntelBuilder {
    pub fn new() -> IntelBuilder {
        IntelBuilder::default()
    }

    /// Reads and parses the list file at `path`; returns the list's index.
    pub fn add_file(&mut self, name: &str, path: &Path) -> Result<usize, IntelError> {
        let bytes = std::fs::read(path).map_err(|source| IntelError::Read {
            name: name.to_string(),
            path: path.to_path_buf(),
            source,
        })?;
        let origin = path.display().to_string();
        Ok(self.add_bytes(name, &bytes, &origin))
    }

    /// Parses one list from text; returns the list's index.
    pub fn add_list(&mut self, name: &str, text: &str, origin: &str) -> usize {
        self.add_bytes(name, text.as_bytes(), origin)
    }

    fn add_bytes(&mut self, name: &str, bytes: &[u8], origin: &str) -> usize {
        let list = self.lists.len();
        self.lists.push(name.to_string());
        let mut report = ListReport {
            name: name.to_string(),
            origin: origin.to_string(),
            ..ListReport::default()
        };
        let mut data_lines = 0usize;
        for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
            let parsed = match std::str::from_utf8(raw) {
                Ok(s) => parse_line(s),
                Err(e) => Err(format!("not UTF-8 (byte {} of the line)", e.valid_up_to())),
            };
            match parsed {
                Ok(None) => {}
                Ok(Some(l)) => {
                    data_lines += 1;
                    self.push(list, &l);
                    report.entries += 1;
                }
                Err(msg) => {
                    data_lines += 1;
                    // A CSV header such as `ip,category,score` on the first data line.
                    if data_lines == 1 && is_csv_header(raw) {
                        continue;
                    }
                    report.bad_lines += 1;
                    if report.warnings.len() < MAX_WARNINGS {
                        let w = format!("{origin}:{}: {msg}; line skipped", i + 1);
                        log::warn!("intel list `{name}`: {w}");
                        report.warnings.push(w);
                    }
                }
            }
        }
        if report.bad_lines > report.warnings.len() {
            log::warn!(
                "intel list `{name}` ({origin}): {} more bad lines skipped",
                report.bad_lines - report.warnings.len()
            );
        }
        self.reports.push(report);
        list
    }

    fn push(&mut self, list: usize, l: &Line<'_>) {
        let category = self.intern(l.category);
        let note = self.intern(l.note);
        let attr = Attr {
            list: list as u32,
            score: l.score,
            category,
            note,
        };
        // Consecutive entries usually share attributes (a plain list: all of them).
        let same = self.attrs.last().is_some_and(|last| {
            last.list == attr.list
                && last.score == attr.score
                && self.span_text(last.category) == l.category
                && self.span_text(last.note) == l.note
        });
        if same {
            // Undo the text just interned; reuse the previous attribute.
            self.text.truncate(category.start as usize);
        } else {
            self.attrs.push(attr);
        }
        let e = Entry {
            start: l.start,
            end: l.end,
            attr: (self.attrs.len() - 1) as u32,
            order: (self.v4.len() + self.v6.len()) as u32,
        };
        if l.v6 {
            self.v6.push(e);
        } else {
            self.v4.push(e);
        }
    }

    fn intern(&mut self, s: &str) -> Span {
        let start = self.text.len() as u32;
        self.text.push_str(s);
        Span {
            start,
            len: s.len() as u32,
        }
    }

    fn span_text(&self, s: Span) -> &str {
        let a = s.start as usize;
        self.text.get(a..a + s.len as usize).unwrap_or("")
    }

    /// Resolves overlaps and returns the lookup set with its report.
    pub fn build(mut self) -> (IntelSet, IntelReport) {
        let v4: Vec<Range<u32>> = resolve(&mut self.v4, &self.attrs)
            .into_iter()
            .map(|r| Range {
                start: r.start as u32,
                end: r.end as u32,
                attr: r.attr,
            })
            .collect();
        let v6 = resolve(&mut self.v6, &self.attrs);
        let report = IntelReport {
            lists: self.reports,
            v4_ranges: v4.len(),
            v6_ranges: v6.len(),
        };
        let mut set = IntelSet {
            v4,
            v6,
            attrs: self.attrs,
            text: self.text,
            lists: self.lists,
        };
        set.v4.shrink_to_fit();
        set.v6.shrink_to_fit();
        set.text.shrink_to_fit();
        (set, report)
    }
}

/// Sweeps entries in address order with a heap of the covering entries ranked by
/// (score, earlier load order), emitting each stretch of addresses with its winner.
/// O(n log n) whatever the nesting.
fn resolve(entries: &mut [Entry], attrs: &[Attr]) -> Vec<Range<u128>> {
    entries.sort_unstable_by_key(|e| (e.start, e.order));
    let rank = |e: &Entry| {
        let score = attrs
            .get(e.attr as usize)
            .and_then(|a| a.score)
            .map_or(-1, i16::from);
        (score, Reverse(e.order), e.end, e.attr)
    };
    let mut out: Vec<Range<u128>> = Vec::with_capacity(entries.len());
    let mut heap = BinaryHeap::new();
    let mut i = 0;
    let mut pos: u128 = 0;
    loop {
        while let Some(e) = entries.get(i).filter(|e| e.start <= pos) {
            heap.push(rank(e));
            i += 1;
        }
        while heap.peek().is_some_and(|top| top.2 < pos) {
            heap.pop();
        }
        let Some(&(_, _, top_end, attr)) = heap.peek() else {
            match entries.get(i) {
                Some(e) => {
                    pos = e.start;
                    continue;
                }
                None => break,
            }
        };
        // The winner holds until it ends or another entry starts (which may outrank it).
        let seg_end = match entries.get(i) {
            Some(e) => top_end.min(e.start - 1),
            None => top_end,
        };
        match out.last_mut() {
            Some(last) if last.attr == attr && last.end.checked_add(1) == Some(pos) => {
                last.end = seg_end;
            }
            _ => out.push(Range {
                start: pos,
                end: seg_end,
                attr,
            }),
        }
        match seg_end.checked_add(1) {
            Some(p) => pos = p,
            None => break,
        }
    }
    out
}

/// `ip,category,score` and the like: a first CSV field made of words, not an address.
fn is_csv_header(raw: &[u8]) -> bool {
    match raw.iter().position(|&b| b == b',') {
        Some(comma) => {
            let first = raw[..comma].trim_ascii();
            !first.is_empty()
                && first
                    .iter()
                    .all(|b| b.is_ascii_alphabetic() || matches!(b, b'_' | b' '))
        }
        None => false,
    }
}

/// Parses one line: `Ok(None)` for blank and comment lines.
fn parse_line(line: &str) -> Result<Option<Line<'_>>, String> {
    let line = line.trim_end_matches('\r');
    let (body, note) = match line.find(['#', ';']) {
        Some(i) => (&line[..i], line[i + 1..].trim()),
        None => (line, ""),
    };
    let body = body.trim();
    if body.is_empty() {
        return Ok(None);
    }
    let (addr, category, score) = if body.contains(',') {
        let mut f = body.split(',').map(str::trim);
        let (Some(addr), Some(cat), Some(score), None) = (f.next(), f.next(), f.next(), f.next())
        else {
            return Err(format!(
                "expected iprep CSV `address,category,score`, found `{body}`"
            ));
        };
        let score: u8 = score
            .parse()
            .map_err(|_| format!("iprep score `{score}` is not an integer 0-255"))?;
        (addr, cat, Some(score))
    } else {
        (body, "", None)
    };
    let (v6, start, end) = parse_addr(addr)?;
    Ok(Some(Line {
        v6,
        start,
        end,
        category,
        score,
        note,
    }))
}

/// `a`, `a/len` or `a-b` → (is IPv6, first, last) as integers.
fn parse_addr(s: &str) -> Result<(bool, u128, u128), String> {
    if let Some((a, b)) = s.split_once('-') {
        let (Ok(a), Ok(b)) = (ip(a.trim()), ip(b.trim())) else {
            return Err(expected(s));
        };
        return match (a, b) {
            (IpAddr::V4(a), IpAddr::V4(b)) if a <= b => {
                Ok((false, u32::from(a).into(), u32::from(b).into()))
            }
            (IpAddr::V6(a), IpAddr::V6(b)) if a <= b => Ok((true, a.into(), b.into())),
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                Err(format!("range `{s}` ends below its start"))
            }
            _ => Err(format!("range `{s}` mixes IPv4 and IPv6")),
        };
    }
    if let Some((a, len)) = s.split_once('/') {
        let a = ip(a.trim())?;
        let bits = if a.is_ipv4() { 32 } else { 128 };
        let len: u32 = len
            .trim()
            .parse()
            .ok()
            .filter(|&l| l <= bits)
            .ok_or_else(|| format!("prefix length `{len}` is not 0-{bits}"))?;
        return Ok(match a {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
                let start = u32::from(a) & mask;
                (false, start.into(), (start | !mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
                let start = u128::from(a) & mask;
                (true, start, start | !mask)
            }
        });
    }
    if let Some(extra) = s.split_whitespace().nth(1) {
        return Err(format!(
            "unexpected `{extra}` after the address (comments start with # or ;)"
        ));
    }
    Ok(match ip(s)? {
        IpAddr::V4(a) => (false, u32::from(a).into(), u32::from(a).into()),
        IpAddr::V6(a) => (true, a.into(), a.into()),
    })
}

fn ip(s: &str) -> Result<IpAddr, String> {
    if s.contains(':') {
        s.parse::<Ipv6Addr>().map(IpAddr::V6)
    } else {
        s.parse::<Ipv4Addr>().map(IpAddr::V4)
    }
    .map_err(|_| expected(s))
}

fn expected(s: &str) -> String {
    format!(
        "expected an IPv4/IPv6 address, CIDR (a/len), range (a-b) or iprep CSV \
         (address,category,score), found `{s}`"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        IpAddr::V4(s.parse().unwrap())
    }
    fn v6(s: &str) -> IpAddr {
        IpAddr::V6(s.parse().unwrap())
    }

    #[test]
    fn plain_lines_cidrs_and_comments() {
        let text =
            "# FireHOL level1\n#\n\n10.0.0.1\n192.168.0.0/16\r\n  172.16.0.0/12  # private\n";
        let (set, rep) = IntelSet::parse_str("fh", text, "fh.netset");
        assert_eq!(rep.lists[0].entries, 3);
        assert_eq!(rep.lists[0].bad_lines, 0);
        assert_eq!(
            rep.to_string(),
            "1 intel list(s), 3 entries -> 3 IPv4 + 0 IPv6 ranges"
        );
        assert_eq!(set.lookup(v4("10.0.0.1")).unwrap().list, 0);
        assert!(set.lookup(v4("10.0.0.2")).is_none());
        assert!(set.lookup(v4("10.0.0.0")).is_none());
        assert!(set.lookup(v4("192.167.255.255")).is_none());
        assert!(set.lookup(v4("192.168.0.0")).is_some());
        assert!(set.lookup(v4("192.168.255.255")).is_some());
        assert!(set.lookup(v4("192.169.0.0")).is_none());
        assert!(set.lookup(v4("172.31.255.255")).is_some());
        assert!(set.lookup(v4("172.32.0.0")).is_none());
        assert_eq!(set.list_name(0), "fh");
        let hit = set.lookup(v4("172.20.1.1")).unwrap();
        assert_eq!(hit.note, "private");
        assert_eq!(hit.score, None);
        assert_eq!(hit.category, "");
    }

    #[test]
    fn spamhaus_drop_keeps_the_sbl_reference() {
        let text = "; Spamhaus DROP List 2024/01/01\n; Last-Modified: x\n1.10.16.0/20 ; SBL256894\n1.19.0.0/16 ; SBL434604\n";
        let (set, rep) = IntelSet::parse_str("drop", text, "drop.txt");
        assert_eq!(rep.entries(), 2);
        let hit = set.lookup(v4("1.10.31.255")).unwrap();
        assert_eq!(hit.note, "SBL256894");
        assert_eq!(set.lookup(v4("1.19.200.1")).unwrap().note, "SBL434604");
        assert!(set.lookup(v4("1.10.32.0")).is_none());
        assert_eq!(rep.v4_ranges, 2);
    }

    #[test]
    fn iprep_csv_keeps_category_and_score() {
        let text = "ip,category,score\n1.2.3.4,1,101\n1.2.3.0/24, 4, 20\n2001:db8::1,2,127\n";
        let (set, rep) = IntelSet::parse_str("iprep", text, "rep.csv");
        assert_eq!(rep.lists[0].bad_lines, 0, "{:?}", rep.lists[0].warnings);
        assert_eq!(rep.entries(), 3);
        let hit = set.lookup(v4("1.2.3.4")).unwrap();
        assert_eq!((hit.category, hit.score), ("1", Some(101)));
        let hit = set.lookup(v4("1.2.3.5")).unwrap();
        assert_eq!((hit.category, hit.score), ("4", Some(20)));
        let hit = set.lookup(v6("2001:db8::1")).unwrap();
        assert_eq!((hit.category, hit.score), ("2", Some(127)));
        // The /24 split around the higher-scored host: three ranges.
        assert_eq!(rep.v4_ranges, 3);
    }

    #[test]
    fn ranges_and_ipv6() {
        let text = "10.0.0.5 - 10.0.0.9\n2001:db8::/32\nfe80::1-fe80::ff\n::/0 ; everything\n";
        let (set, rep) = IntelSet::parse_str("r", text, "r.txt");
        assert_eq!(rep.bad_lines(), 0, "{:?}", rep.lists[0].warnings);
        assert!(set.lookup(v4("10.0.0.4")).is_none());
        assert!(set.lookup(v4("10.0.0.5")).is_some());
        assert!(set.lookup(v4("10.0.0.9")).is_some());
        assert!(set.lookup(v4("10.0.0.10")).is_none());
        assert_eq!(set.lookup(v6("2001:db8:ffff::1")).unwrap().note, "");
        assert_eq!(set.lookup(v6("2001:db9::")).unwrap().note, "everything");
        assert_eq!(set.lookup(v6("fe80::ff")).unwrap().note, "");
        assert_eq!(set.lookup(v6("fe80::100")).unwrap().note, "everything");
        assert_eq!(
            set.lookup(v6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"))
                .unwrap()
                .note,
            "everything"
        );
        assert_eq!(set.lookup(v6("::")).unwrap().note, "everything");
    }

    #[test]
    fn whole_ipv4_space_and_edges() {
        let (set, _) = IntelSet::parse_str("all", "0.0.0.0/0\n", "x");
        assert!(set.lookup(v4("0.0.0.0")).is_some());
        assert!(set.lookup(v4("255.255.255.255")).is_some());
        assert!(set.lookup(v6("2001:db8::1")).is_none());
        let (set, _) = IntelSet::parse_str("top", "255.255.255.255\n0.0.0.0\n", "x");
        assert!(set.lookup(v4("255.255.255.255")).is_some());
        assert!(set.lookup(v4("255.255.255.254")).is_none());
        assert!(set.lookup(v4("0.0.0.0")).is_some());
        assert!(set.lookup(v4("0.0.0.1")).is_none());
    }

    #[test]
    fn mapped_ipv6_looks_up_ipv4() {
        let (set, _) = IntelSet::parse_str("l", "198.51.100.0/24\n", "x");
        assert!(set.lookup(v6("::ffff:198.51.100.7")).is_some());
        assert!(set.lookup(v6("::ffff:198.51.101.7")).is_none());
    }

    #[test]
    fn bad_lines_are_counted_with_file_and_line() {
        let text = "1.2.3.4\nnot-an-ip\n1.2.3.0/33\n5.6.7.8 9.9.9.9\n1.2.3.9-1.2.3.1\n1.1.1.1-::1\n1.2.3.4,cat,999\n\n2.2.2.2\n";
        let (set, rep) = IntelSet::parse_str("bad", text, "lists/bad.txt");
        let l = &rep.lists[0];
        assert_eq!(l.entries, 2);
        assert_eq!(l.bad_lines, 6);
        assert!(
            l.warnings[0].starts_with("lists/bad.txt:2: "),
            "{}",
            l.warnings[0]
        );
        assert!(l.warnings[0].contains("`not-an-ip`"));
        assert!(l.warnings[1].starts_with("lists/bad.txt:3: prefix length `33`"));
        assert!(l.warnings[2].contains("unexpected `9.9.9.9`"));
        assert!(l.warnings[3].contains("ends below its start"));
        assert!(l.warnings[4].contains("mixes IPv4 and IPv6"));
        assert!(l.warnings[5].starts_with("lists/bad.txt:7: iprep score `999`"));
        assert!(set.lookup(v4("2.2.2.2")).is_some());
        assert!(rep.to_string().contains("(6 bad lines skipped)"), "{rep}");
    }

    #[test]
    fn overlaps_keep_first_list_and_highest_score() {
        let mut b = IntelBuilder::new();
        b.add_list("wide", "10.0.0.0/8\n", "a");
        b.add_list("narrow", "10.1.0.0/16\n10.2.3.4\n", "b");
        b.add_list("scored", "10.1.2.0/24,7,50\n", "c");
        let (set, rep) = b.build();
        // The first list wins over later unscored ones; a scored entry beats unscored.
        assert_eq!(set.lookup(v4("10.1.0.1")).unwrap().list, 0);
        assert_eq!(set.lookup(v4("10.2.3.4")).unwrap().list, 0);
        let hit = set.lookup(v4("10.1.2.200")).unwrap();
        assert_eq!((hit.list, hit.score), (2, Some(50)));
        assert_eq!(set.lookup(v4("10.1.3.0")).unwrap().list, 0);
        assert_eq!(set.lookup(v4("10.255.255.255")).unwrap().list, 0);
        assert_eq!(set.list_name(2), "scored");
        // 10.0.0.0-10.1.1.255, 10.1.2.0/24, 10.1.3.0-10.255.255.255.
        assert_eq!(rep.v4_ranges, 3);
    }

    #[test]
    fn higher_score_wins_then_first_on_ties() {
        let text = "10.0.0.0/24,1,10\n10.0.0.128/25,2,90\n10.0.0.0/30,3,90\n10.0.0.2,4,90\n";
        let (set, rep) = IntelSet::parse_str("s", text, "s.csv");
        let cat = |ip: &str| set.lookup(v4(ip)).unwrap().category;
        assert_eq!(cat("10.0.0.0"), "3");
        assert_eq!(cat("10.0.0.2"), "3");
        assert_eq!(cat("10.0.0.3"), "3");
        assert_eq!(cat("10.0.0.4"), "1");
        assert_eq!(cat("10.0.0.127"), "1");
        assert_eq!(cat("10.0.0.128"), "2");
        assert_eq!(cat("10.0.0.255"), "2");
        assert!(set.lookup(v4("10.0.1.0")).is_none());
        assert_eq!(rep.v4_ranges, 3);
    }

    #[test]
    fn adjacent_entries_merge_into_one_range() {
        let text = "10.0.0.0/25\n10.0.0.128/25\n10.0.1.0\n10.0.0.5\n";
        let (set, rep) = IntelSet::parse_str("m", text, "m");
        assert_eq!(rep.v4_ranges, 1);
        assert!(set.lookup(v4("10.0.1.0")).is_some());
        assert!(set.lookup(v4("10.0.1.1")).is_none());
    }

    #[test]
    fn host_bits_in_a_cidr_are_masked() {
        let (set, _) = IntelSet::parse_str("h", "192.0.2.77/24\n", "h");
        assert!(set.lookup(v4("192.0.2.0")).is_some());
        assert!(set.lookup(v4("192.0.2.255")).is_some());
        assert!(set.lookup(v4("192.0.3.0")).is_none());
    }

    #[test]
    fn sweep_matches_brute_force_on_random_overlaps() {
        // Deterministic xorshift; small space so overlaps are dense.
        let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let mut text = String::new();
        let mut entries = Vec::new();
        for _ in 0..300 {
            let a = (next() % 1000) as u32;
            let b = a + (next() % 120) as u32;
            let score = (next() % 4) as u8;
            text.push_str(&format!(
                "{}-{},c,{score}\n",
                Ipv4Addr::from(a),
                Ipv4Addr::from(b)
            ));
            entries.push((a, b, score));
        }
        let (set, _) = IntelSet::parse_str("r", &text, "r");
        for ip in 0..1200u32 {
            // Brute force: highest score, then first line.
            let mut best: Option<(usize, u8)> = None;
            for (i, &(a, b, sc)) in entries.iter().enumerate() {
                if a <= ip && ip <= b && best.is_none_or(|(_, bs)| sc > bs) {
                    best = Some((i, sc));
                }
            }
            let got = set.lookup(IpAddr::V4(Ipv4Addr::from(ip))).map(|h| h.score);
            assert_eq!(got, best.map(|(_, sc)| Some(sc)), "ip {ip}");
        }
    }

    #[test]
    fn unreadable_file_is_an_error_naming_it() {
        let err = IntelSet::load(&[(
            "missing".to_string(),
            PathBuf::from("/nonexistent/phantomnet/intel.txt"),
        )])
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/nonexistent/phantomnet/intel.txt"), "{msg}");
        assert!(msg.contains("`missing`"), "{msg}");
    }
}
