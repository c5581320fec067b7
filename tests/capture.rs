//! Capture files and live capture: byte-exact reading of hand-built pcap and pcapng files
//! (both byte orders, resolutions, several interfaces and sections), truncation at every
//! offset, hostile lengths, the shared real captures (frame counts checked against an
//! independent parser), and a root-only loopback capture.

// Test helpers may fail loudly; the house lints target src/.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use phantomnet::capture::pcap::{ReadMode, MAX_RECORD};
use phantomnet::capture::{
    CaptureError, FrameSource, LiveOptions, LiveSource, Next, PcapReader, PcapWriter,
};
use phantomnet::decode::LinkType;

/// A file in the temp dir, unique per test process and call, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str) -> TempFile {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        TempFile(std::env::temp_dir().join(format!(
            "phantomnet-capture-{}-{n}-{name}",
            std::process::id()
        )))
    }

    fn with(name: &str, bytes: &[u8]) -> TempFile {
        let f = TempFile::new(name);
        f.write(bytes);
        f
    }

    fn write(&self, bytes: &[u8]) {
        std::fs::write(&self.0, bytes).unwrap();
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn name(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Got {
    ts: i64,
    link: LinkType,
    data: Vec<u8>,
    wire_len: u32,
}

/// Reads a whole file: the frames, then how it ended (Ok = clean End). The file is read
/// twice, through the read-ahead buffer and memory-mapped, and both must give the same
/// frames and the same end, error message included.
fn read_all(path: &Path) -> (Vec<Got>, Result<(), CaptureError>) {
    let (frames, end) = read_all_with(path, ReadMode::Buffered);
    let (mapped, mapped_end) = read_all_with(path, ReadMode::Mapped);
    assert_eq!(
        mapped,
        frames,
        "{}: mapped and buffered frames differ",
        path.display()
    );
    assert_eq!(
        mapped_end.as_ref().map_err(ToString::to_string),
        end.as_ref().map_err(ToString::to_string),
        "{}: mapped and buffered ends differ",
        path.display()
    );
    (frames, end)
}

fn read_all_with(path: &Path, mode: ReadMode) -> (Vec<Got>, Result<(), CaptureError>) {
    let mut frames = Vec::new();
    let mut r = match PcapReader::open_with(path, mode) {
        Ok(r) => r,
        Err(e) => return (frames, Err(e)),
    };
    loop {
        match r.next_frame() {
            Ok(Next::Frame(f)) => frames.push(Got {
                ts: f.ts,
                link: f.link,
                data: f.data.to_vec(),
                wire_len: f.wire_len,
            }),
            Ok(Next::End) => break,
            Ok(Next::Idle(t)) => panic!("a file source returned Idle({t})"),
            Err(e) => {
                // A finished reader stays finished.
                assert!(matches!(r.next_frame(), Ok(Next::End)));
                assert_eq!(r.stats().frames, frames.len() as u64);
                return (frames, Err(e));
            }
        }
    }
    assert_eq!(r.stats().frames, frames.len() as u64);
    assert!(matches!(r.next_frame(), Ok(Next::End)));
    (frames, Ok(()))
}

fn payload(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_add((i * 7) as u8)).collect()
}

/// Builds capture files in either byte order and remembers where each record starts.
struct Builder {
    be: bool,
    out: Vec<u8>,
    /// Start offset of every record/block, and whether it carries a packet.
    records: Vec<(usize, bool)>,
}

impl Builder {
    fn new(be: bool) -> Builder {
        Builder {
            be,
            out: Vec::new(),
            records: Vec::new(),
        }
    }
    fn u16(&mut self, v: u16) {
        let b = if self.be {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.out.extend_from_slice(&b);
    }
    fn u32(&mut self, v: u32) {
        let b = if self.be {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.out.extend_from_slice(&b);
    }
    fn u64(&mut self, v: u64) {
        let b = if self.be {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.out.extend_from_slice(&b);
    }

    // Classic pcap.
    fn classic_header(&mut self, nanos: bool, linktype: u32) {
        self.u32(if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 });
        self.u16(2);
        self.u16(4);
        self.u32(0);
        self.u32(0);
        self.u32(65535);
        self.u32(linktype);
    }
    fn classic_record(&mut self, sec: u32, frac: u32, data: &[u8], orig: u32) {
        self.records.push((self.out.len(), true));
        self.u32(sec);
        self.u32(frac);
        self.u32(data.len() as u32);
        self.u32(orig);
        self.out.extend_from_slice(data);
    }

    // pcapng: `body` is everything between the length and the trailing length.
    fn block(&mut self, typ: u32, body: &[u8], packet: bool) {
        assert_eq!(body.len() % 4, 0);
        self.records.push((self.out.len(), packet));
        let len = body.len() as u32 + 12;
        self.u32(typ);
        self.u32(len);
        self.out.extend_from_slice(body);
        self.u32(len);
    }
    /// Serialises fields in this builder's byte order.
    fn body(&self, f: impl FnOnce(&mut Builder)) -> Vec<u8> {
        let mut b = Builder::new(self.be);
        f(&mut b);
        while b.out.len() % 4 != 0 {
            b.out.push(0);
        }
        b.out
    }
    fn shb(&mut self) {
        let body = self.body(|b| {
            b.u32(0x1a2b_3c4d);
            b.u16(1);
            b.u16(0);
            b.u64(u64::MAX);
            // shb_userappl option, then end of options.
            b.u16(4);
            b.u16(5);
            b.out.extend_from_slice(b"tests\0\0\0");
            b.u16(0);
            b.u16(0);
        });
        self.block(0x0a0d_0d0a, &body, false);
    }
    fn idb(&mut self, linktype: u16, snaplen: u32, tsresol: Option<u8>, tsoffset: Option<u64>) {
        let body = self.body(|b| {
            b.u16(linktype);
            b.u16(0);
            b.u32(snaplen);
            // if_name first, to show options before if_tsresol are walked correctly.
            b.u16(2);
            b.u16(3);
            b.out.extend_from_slice(b"et0\0");
            if let Some(r) = tsresol {
                b.u16(9);
                b.u16(1);
                b.out.extend_from_slice(&[r, 0, 0, 0]);
            }
            if let Some(o) = tsoffset {
                b.u16(14);
                b.u16(8);
                b.u64(o);
            }
            b.u16(0);
            b.u16(0);
        });
        self.block(1, &body, false);
    }
    fn epb(&mut self, iface: u32, t: u64, data: &[u8], orig: u32, with_comment: bool) {
        let body = self.body(|b| {
            b.u32(iface);
            b.u32((t >> 32) as u32);
            b.u32(t as u32);
            b.u32(data.len() as u32);
            b.u32(orig);
            b.out.extend_from_slice(data);
            while b.out.len() % 4 != 0 {
                b.out.push(0);
            }
            if with_comment {
                b.u16(1);
                b.u16(7);
                b.out.extend_from_slice(b"comment\0");
                b.u16(0);
                b.u16(0);
            }
        });
        self.block(6, &body, true);
    }
    fn pb(&mut self, iface: u16, t: u64, data: &[u8], orig: u32) {
        let body = self.body(|b| {
            b.u16(iface);
            b.u16(0);
            b.u32((t >> 32) as u32);
            b.u32(t as u32);
            b.u32(data.len() as u32);
            b.u32(orig);
            b.out.extend_from_slice(data);
        });
        self.block(2, &body, true);
    }
    fn spb(&mut self, data: &[u8], orig: u32) {
        let body = self.body(|b| {
            b.u32(orig);
            b.out.extend_from_slice(data);
        });
        self.block(3, &body, true);
    }
    fn unknown(&mut self, typ: u32, len: usize) {
        let body = vec![0x5a; len];
        self.block(typ, &body, false);
    }
}

fn expect_frames(path: &Path, want: &[Got]) {
    let (got, end) = read_all(path);
    if let Err(e) = end {
        panic!("{}: unexpected error {e}", path.display());
    }
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g, w, "frame {i}");
    }
}

fn got(ts: i64, link: LinkType, data: &[u8], wire_len: u32) -> Got {
    Got {
        ts,
        link,
        data: data.to_vec(),
        wire_len,
    }
}

#[test]
fn classic_pcap_both_byte_orders_micro_and_nano() {
    for be in [false, true] {
        for nanos in [false, true] {
            let mut b = Builder::new(be);
            b.classic_header(nanos, 1);
            let d0 = payload(1, 60);
            let d1 = payload(2, 1514);
            let d2 = payload(3, 0);
            let scale = if nanos { 1000 } else { 1 };
            b.classic_record(1_700_000_000, 123_456 * scale + (scale - 1), &d0, 60);
            // Captured less than the wire length (snaplen).
            b.classic_record(1_700_000_001, 999_999 * scale, &d1, 9000);
            b.classic_record(4_000_000_000, 0, &d2, 0);
            let f = TempFile::with("classic.pcap", &b.out);
            let r = PcapReader::open(f.path()).unwrap();
            assert_eq!(r.link_type(), Some(LinkType::Ethernet));
            assert_eq!(r.describe(), f.name());
            expect_frames(
                f.path(),
                &[
                    got(1_700_000_000_123_456, LinkType::Ethernet, &d0, 60),
                    got(1_700_000_001_999_999, LinkType::Ethernet, &d1, 9000),
                    // ts_sec is unsigned: past 2038.
                    got(4_000_000_000_000_000, LinkType::Ethernet, &d2, 0),
                ],
            );
        }
    }
}

#[test]
fn classic_records_across_read_buffer_borders_read_exactly() {
    // Records are lent straight from the 128 KiB read-ahead buffer (or the 512 KiB mapped
    // window) when they lie wholly in it and copied when they straddle its end: sizes from 0
    // to beyond the buffer, so both paths and every border case occur, in both byte orders
    // and resolutions. The file (~5 MB) spans several windows, and records longer than the
    // 64 KiB the window keeps ahead of the reader land across their ends.
    for (be, nanos) in [(false, false), (true, true), (false, true)] {
        let mut b = Builder::new(be);
        b.classic_header(nanos, 1);
        let scale = if nanos { 1000 } else { 1 };
        let mut want = Vec::new();
        let mut len = 0usize;
        for i in 0..3000u32 {
            len = match i {
                1000 => 200_000,
                2000 => 262_144,
                _ if i % 97 == 0 => 70_000 + i as usize,
                _ => (len * 31 + 97) % 1601,
            };
            let d = payload(i as u8, len);
            let wire = len as u32 + (i % 3) * 10;
            b.classic_record(1_700_000_000 + i, (i % 1_000_000) * scale, &d, wire);
            want.push(got(
                (1_700_000_000 + i64::from(i)) * 1_000_000 + i64::from(i % 1_000_000),
                LinkType::Ethernet,
                &d,
                wire,
            ));
        }
        let f = TempFile::with("borders.pcap", &b.out);
        expect_frames(f.path(), &want);
    }
}

#[test]
fn classic_pcap_other_link_types_and_wire_len_never_below_captured() {
    let mut b = Builder::new(false);
    b.classic_header(false, 113);
    let d = payload(9, 44);
    // orig_len smaller than incl_len (broken writers do this).
    b.classic_record(10, 20, &d, 40);
    let f = TempFile::with("sll.pcap", &b.out);
    expect_frames(f.path(), &[got(10_000_020, LinkType::LinuxSll, &d, 44)]);
}

#[test]
fn modified_pcap_records_have_24_byte_headers() {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_cd34u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    let d = payload(4, 42);
    for (sec, usec) in [(5u32, 6u32), (7, 8)] {
        out.extend_from_slice(&sec.to_le_bytes());
        out.extend_from_slice(&usec.to_le_bytes());
        out.extend_from_slice(&42u32.to_le_bytes());
        out.extend_from_slice(&42u32.to_le_bytes());
        out.extend_from_slice(&[0, 0, 0, 2, 0, 8, 0, 0]);
        out.extend_from_slice(&d);
    }
    let f = TempFile::with("modified.pcap", &out);
    expect_frames(
        f.path(),
        &[
            got(5_000_006, LinkType::Ethernet, &d, 42),
            got(7_000_008, LinkType::Ethernet, &d, 42),
        ],
    );
}

/// One section: an Ethernet interface in ns, a Linux SLL interface in 2^-10 s units with
/// a 100 s offset, an unused radiotap interface; EPBs on both, a PB, an SPB, and blocks of
/// unknown and uninteresting types in between.
fn ng_section(b: &mut Builder, seed: u8) -> Vec<Got> {
    b.shb();
    b.unknown(0x0000_0bad, 16);
    b.idb(1, 0, Some(9), None);
    b.idb(113, 65535, Some(0x80 | 10), Some(100));
    b.idb(127, 0, None, None);
    let d0 = payload(seed, 61);
    let d1 = payload(seed + 1, 100);
    let d2 = payload(seed + 2, 3);
    let d3 = payload(seed + 3, 64);
    let d4 = payload(seed + 4, 1500);
    // Name resolution block and interface statistics block: skipped by length.
    b.unknown(4, 40);
    b.epb(0, 1_700_000_000_123_456_789, &d0, 61, false);
    b.unknown(5, 28);
    // 2^-10 s units: 3.5 s = 3584 units, plus the 100 s offset.
    b.epb(1, 3584, &d1, 200, true);
    b.spb(&d2, 3);
    b.pb(0, 1_700_000_002_000_000_999, &d3, 64);
    b.epb(0, 1_700_000_003_000_001_000, &d4, 1500, true);
    vec![
        got(1_700_000_000_123_456, LinkType::Ethernet, &d0, 61),
        got(103_500_000, LinkType::LinuxSll, &d1, 200),
        // SPB: interface 0, the last timestamp again.
        got(103_500_000, LinkType::Ethernet, &d2, 3),
        got(1_700_000_002_000_000, LinkType::Ethernet, &d3, 64),
        got(1_700_000_003_000_001, LinkType::Ethernet, &d4, 1500),
    ]
}

#[test]
fn pcapng_little_and_big_endian_interfaces_resolutions_and_block_kinds() {
    for be in [false, true] {
        let mut b = Builder::new(be);
        let want = ng_section(&mut b, 10);
        let f = TempFile::with("one.pcapng", &b.out);
        let r = PcapReader::open(f.path()).unwrap();
        assert_eq!(r.link_type(), None);
        expect_frames(f.path(), &want);
    }
}

#[test]
fn pcapng_blocks_across_mapped_window_ends_read_exactly() {
    // ~5 MB of blocks, several 512 KiB mapped windows: small packet blocks, and every 61st
    // one longer than the 64 KiB the window keeps ahead, so some lie across a window's end
    // and are read in pieces (read_all compares the mapped and buffered readers).
    for be in [false, true] {
        let mut b = Builder::new(be);
        b.shb();
        b.idb(1, 0, Some(9), None);
        let mut want = Vec::new();
        let mut len = 0usize;
        for i in 0..2500u32 {
            len = if i % 61 == 0 {
                65_536 + 7 * i as usize
            } else {
                (len * 31 + 97) % 1601
            };
            let d = payload(i as u8, len);
            let t = 1_700_000_000_000_000_000 + u64::from(i) * 1_000_000;
            b.epb(0, t, &d, len as u32, i % 5 == 0);
            want.push(got((t / 1000) as i64, LinkType::Ethernet, &d, len as u32));
        }
        assert!(b.out.len() > 3 * (512 << 10), "{} bytes", b.out.len());
        let f = TempFile::with("windows.pcapng", &b.out);
        expect_frames(f.path(), &want);
    }
}

#[test]
fn pcapng_sections_each_with_their_own_byte_order() {
    let mut le = Builder::new(false);
    let mut want = ng_section(&mut le, 20);
    let mut be = Builder::new(true);
    want.extend(ng_section(&mut be, 40));
    let mut out = le.out.clone();
    out.extend_from_slice(&be.out);
    let f = TempFile::with("two-sections.pcapng", &out);
    expect_frames(f.path(), &want);
}

#[test]
fn pcapng_new_section_forgets_the_previous_interfaces() {
    let mut b = Builder::new(false);
    b.shb();
    b.idb(1, 0, None, None);
    b.idb(1, 0, None, None);
    b.epb(1, 5, &[1, 2, 3], 3, false);
    b.shb();
    b.idb(1, 0, None, None);
    let epb_at = b.out.len();
    b.epb(1, 6, &[4, 5, 6], 3, false);
    let f = TempFile::with("sections.pcapng", &b.out);
    let (frames, end) = read_all(f.path());
    assert_eq!(frames, vec![got(5, LinkType::Ethernet, &[1, 2, 3], 3)]);
    let msg = end.unwrap_err().to_string();
    assert_eq!(
        msg,
        format!(
            "{}: malformed capture at byte {epb_at}: packet block refers to an interface \
             with no description block in its section",
            f.name()
        )
    );
}

#[test]
fn unsupported_link_type_names_the_number() {
    let mut b = Builder::new(false);
    b.classic_header(false, 105);
    b.classic_record(1, 2, &[0; 30], 30);
    let f = TempFile::with("wifi.pcap", &b.out);
    let err = PcapReader::open(f.path()).unwrap_err();
    assert!(matches!(
        err,
        CaptureError::UnsupportedLinkType {
            linktype: 105,
            offset: 20,
            ..
        }
    ));
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "{}: unsupported link type 105 (IEEE 802.11) at byte 20",
            f.name()
        )),
        "{msg}"
    );

    // pcapng: an unsupported interface is fine until a packet uses it.
    let mut b = Builder::new(true);
    b.shb();
    b.idb(1, 0, None, None);
    b.idb(127, 0, None, None);
    b.epb(0, 1, &[7; 14], 14, false);
    let at = b.out.len();
    b.epb(1, 2, &[8; 14], 14, false);
    let f = TempFile::with("radiotap.pcapng", &b.out);
    let (frames, end) = read_all(f.path());
    assert_eq!(frames.len(), 1);
    let msg = end.unwrap_err().to_string();
    assert!(
        msg.starts_with(&format!(
            "{}: unsupported link type 127 (IEEE 802.11 radiotap) at byte {at}",
            f.name()
        )),
        "{msg}"
    );
}

#[test]
fn not_a_capture_and_empty_files() {
    let f = TempFile::with("text.pcap", b"hello world, not a capture");
    let msg = PcapReader::open(f.path()).unwrap_err().to_string();
    assert_eq!(
        msg,
        format!(
            "{}: not a pcap or pcapng file (magic 0x68656c6c at byte 0)",
            f.name()
        )
    );
    let f = TempFile::with("empty.pcap", b"");
    let msg = PcapReader::open(f.path()).unwrap_err().to_string();
    assert!(msg.contains("at byte 0: empty file"), "{msg}");
    let missing = std::env::temp_dir().join("phantomnet-capture-does-not-exist.pcap");
    let msg = PcapReader::open(&missing).unwrap_err().to_string();
    assert!(
        msg.starts_with(&format!("{}: cannot open: ", missing.display())),
        "{msg}"
    );
}

/// A classic pcap and a pcapng file with many small records, for cutting.
fn cut_fixtures() -> Vec<(&'static str, Builder)> {
    let mut classic = Builder::new(false);
    classic.classic_header(true, 1);
    for i in 0..60u32 {
        let d = payload(i as u8, 10 + (i as usize * 13) % 90);
        classic.classic_record(1000 + i, i * 1000, &d, d.len() as u32);
    }
    let mut ng = Builder::new(true);
    for s in 0..2 {
        ng.shb();
        ng.idb(1, 0, Some(9), None);
        ng.idb(113, 0, None, None);
        for i in 0..25u32 {
            let d = payload((i + s) as u8, 10 + (i as usize * 17) % 80);
            match i % 5 {
                0 => ng.spb(&d, d.len() as u32),
                1 => ng.pb(1, u64::from(i) * 1_000_000, &d, 1000),
                2 => ng.unknown(0x4000_0001, 8),
                _ => ng.epb(i % 2, u64::from(i) * 1_000_000_000, &d, 2000, i % 3 == 0),
            }
        }
    }
    vec![("cut.pcap", classic), ("cut.pcapng", ng)]
}

#[test]
fn truncated_at_every_offset_never_panics_and_names_the_record() {
    for (name, b) in cut_fixtures() {
        let full = TempFile::with(name, &b.out);
        let (all, end) = read_all(full.path());
        end.unwrap();
        let packets = b.records.iter().filter(|r| r.1).count();
        assert_eq!(all.len(), packets);
        assert!(b.out.len() > 1024, "{name} is only {} bytes", b.out.len());

        let mut cuts: Vec<usize> = (0..=1024).collect();
        cuts.extend((1025..b.out.len()).step_by(97));
        cuts.extend(b.records.iter().map(|r| r.0));
        cuts.push(b.out.len());
        for cut in cuts {
            // A fresh file per cut: rewriting one in place makes ext4 flush it to disk
            // every time (auto_da_alloc), which is 30 times slower.
            let cut_file = TempFile::with(name, &b.out[..cut]);
            let (frames, end) = read_all(cut_file.path());
            // Records that end at or before the cut are read, whole and unchanged.
            let mut complete = 0;
            for (i, r) in b.records.iter().enumerate() {
                let next = b.records.get(i + 1).map_or(b.out.len(), |n| n.0);
                if next <= cut && r.1 {
                    complete += 1;
                }
            }
            assert_eq!(frames.len(), complete, "{name} cut at {cut}");
            assert_eq!(frames[..], all[..complete], "{name} cut at {cut}");
            let on_boundary = b.records.iter().any(|r| r.0 == cut) || cut == b.out.len();
            let header_end = b.records[0].0;
            match end {
                Ok(()) => assert!(
                    on_boundary && cut >= header_end.max(1),
                    "{name} cut at {cut}: clean end inside a record"
                ),
                Err(e) => {
                    let msg = e.to_string();
                    assert!(msg.starts_with(&cut_file.name()), "{msg}");
                    if cut == 0 {
                        assert!(msg.contains("empty file"), "{msg}");
                        continue;
                    }
                    assert!(
                        !on_boundary || cut < header_end,
                        "{name} cut at {cut}: error at a record boundary: {msg}"
                    );
                    // The record the cut falls in (the file header counts as one at 0).
                    let start = b
                        .records
                        .iter()
                        .map(|r| r.0)
                        .filter(|&s| s < cut)
                        .max()
                        .unwrap_or(0);
                    match e {
                        CaptureError::Truncated { offset, .. } => {
                            assert_eq!(offset, start as u64, "{name} cut at {cut}: {msg}")
                        }
                        other => panic!("{name} cut at {cut}: expected Truncated, got {other}"),
                    }
                }
            }
        }
    }
}

#[test]
fn hostile_lengths_are_malformed_errors_with_offsets() {
    // A classic record claiming more than MAX_RECORD bytes.
    let mut b = Builder::new(false);
    b.classic_header(false, 1);
    b.classic_record(1, 1, &[1; 20], 20);
    let at = b.out.len();
    b.u32(2);
    b.u32(0);
    b.u32(MAX_RECORD as u32 + 1);
    b.u32(MAX_RECORD as u32 + 1);
    b.out.extend_from_slice(&[0; 64]);
    let f = TempFile::with("huge.pcap", &b.out);
    let (frames, end) = read_all(f.path());
    assert_eq!(frames.len(), 1);
    assert_eq!(
        end.unwrap_err().to_string(),
        format!(
            "{}: malformed capture at byte {at}: record's captured length exceeds 262144 bytes",
            f.name()
        )
    );

    // The largest allowed record reads fine.
    let mut b = Builder::new(false);
    b.classic_header(false, 1);
    let big = payload(7, MAX_RECORD);
    b.classic_record(1, 1, &big, MAX_RECORD as u32);
    let f = TempFile::with("max.pcap", &b.out);
    expect_frames(
        f.path(),
        &[got(1_000_001, LinkType::Ethernet, &big, MAX_RECORD as u32)],
    );

    // pcapng: a length not a multiple of 4; a trailer that disagrees; an EPB whose
    // captured length runs past its block; a huge EPB.
    let mut base = Builder::new(false);
    base.shb();
    base.idb(1, 0, None, None);
    let at = base.out.len() as u64;
    let cases: Vec<(Vec<u8>, u64, &str)> = {
        let mut v = Vec::new();
        let mut b = Builder::new(false);
        b.out = base.out.clone();
        b.u32(6);
        b.u32(33);
        b.out.extend_from_slice(&[0; 40]);
        v.push((
            b.out,
            at + 4,
            "block length is not a multiple of 4 of at least 12",
        ));
        let mut b = Builder::new(false);
        b.out = base.out.clone();
        b.epb(0, 1, &[1; 8], 8, false);
        let n = b.out.len();
        b.out[n - 4] ^= 4;
        v.push((
            b.out,
            at,
            "block's trailing length differs from its leading length",
        ));
        let mut b = Builder::new(false);
        b.out = base.out.clone();
        b.epb(0, 1, &[1; 8], 8, false);
        b.out[at as usize + 20..at as usize + 24].copy_from_slice(&9u32.to_le_bytes());
        v.push((
            b.out,
            at,
            "packet's captured length runs past the end of its block",
        ));
        let mut b = Builder::new(false);
        b.out = base.out.clone();
        b.epb(0, 1, &vec![0; MAX_RECORD + 4], 8, false);
        v.push((b.out, at, "packet's captured length exceeds 262144 bytes"));
        v
    };
    for (bytes, offset, what) in cases {
        let f = TempFile::with("hostile.pcapng", &bytes);
        let (frames, end) = read_all(f.path());
        assert!(frames.is_empty());
        assert_eq!(
            end.unwrap_err().to_string(),
            format!("{}: malformed capture at byte {offset}: {what}", f.name())
        );
    }
}

#[test]
fn writer_round_trips_and_cuts_to_snaplen() {
    let f = TempFile::new("written.pcap");
    let mut w = PcapWriter::create_with_snaplen(f.path(), 1, 100).unwrap();
    let d0 = payload(1, 60);
    let d1 = payload(2, 150);
    w.write(1_700_000_000_000_001, &d0, 0).unwrap();
    w.write(1_700_000_000_999_999, &d1, 1500).unwrap();
    let err = w.write(-1, &d0, 60).unwrap_err().to_string();
    assert!(err.contains("timestamp outside 1970..2106"), "{err}");
    assert_eq!(w.offset(), 24 + 16 + 60 + 16 + 100);
    w.finish().unwrap();
    expect_frames(
        f.path(),
        &[
            got(1_700_000_000_000_001, LinkType::Ethernet, &d0, 60),
            got(1_700_000_000_999_999, LinkType::Ethernet, &d1[..100], 1500),
        ],
    );
    // Through the boxed helper too.
    let mut src = phantomnet::capture::open_file(f.path()).unwrap();
    assert!(matches!(src.next_frame(), Ok(Next::Frame(fr)) if fr.data == &d0[..]));
}

/// Frame count, captured bytes, first and last timestamp (µs) per shared capture, computed
/// once by an independent Python reader of the pcap and pcapng formats (counts agree with
/// MANIFEST.tsv's approx_packets).
const SHARED: &[(&str, u64, u64, i64, i64)] = &[
    (
        "attack_chrissanders_activeosfingerprinting.pcapng",
        48,
        4980,
        1278798210035265,
        1278798212112446,
    ),
    (
        "attack_chrissanders_arppoison.pcapng",
        165,
        62233,
        1279251572730147,
        1279251587122706,
    ),
    (
        "attack_chrissanders_cryptowall4_c2.pcapng",
        162,
        135019,
        1451924795521212,
        1451924841246962,
    ),
    (
        "attack_chrissanders_ek_to_cryptowall4.pcapng",
        653,
        629924,
        1451924754239580,
        1451924928212896,
    ),
    (
        "attack_chrissanders_http_dvwa_sqlinjection.pcapng",
        35,
        8564,
        1491423344641377,
        1491423389786264,
    ),
    (
        "attack_chrissanders_ratinfected.pcapng",
        779,
        558515,
        1279475104655731,
        1279475236785578,
    ),
    (
        "attack_chrissanders_synscan.pcapng",
        2011,
        116672,
        1278275056274870,
        1278275079360213,
    ),
    (
        "attack_ndpi_WebattackSQLinj.pcap",
        94,
        30008,
        1499348407419016,
        1499348519077716,
    ),
    (
        "attack_ndpi_dns-tunnel-iodine.pcap",
        438,
        70492,
        1282356640051082,
        1282356664538369,
    ),
    (
        "attack_ndpi_dns_exfiltration.pcap",
        300,
        73545,
        1580978146717893,
        1580978206707432,
    ),
    (
        "attack_ndpi_emotet.pcap",
        169,
        99244,
        1645830066121611,
        1650905518385458,
    ),
    (
        "attack_ndpi_icmp-tunnel.pcap",
        961,
        195808,
        1360227866458898,
        1360228988973740,
    ),
    (
        "attack_ndpi_log4j-webapp-exploit.pcap",
        426,
        34794,
        1639425815407353,
        1639425834697105,
    ),
    (
        "attack_ndpi_mining.pcapng",
        673,
        219078,
        1484655421797845,
        1514197279769698,
    ),
    (
        "attack_ndpi_trickbot.pcap",
        74,
        62002,
        1609266107551500,
        1609266115947521,
    ),
    (
        "attack_stopddos_amp_snmp.pcap",
        4373,
        1055847,
        1621090240035681,
        1621090240059178,
    ),
    (
        "attack_stopddos_amp_tcp_synack_reflection.pcap",
        8000,
        515475,
        1622865525551136,
        1622865525697945,
    ),
    (
        "attack_stopddos_synflood_spoofed.pcap",
        37841,
        2270460,
        1619605821099510,
        1619605844783363,
    ),
    (
        "attack_sv_ipv6-rsmurf.pcap",
        1000,
        78000,
        1538132221268696,
        1538132221276888,
    ),
    (
        "attack_sv_ipv6_dos_ext_headers_5.pcap",
        35720,
        3075614,
        1538129689303795,
        1538129694628055,
    ),
    (
        "attack_zeek_dhcp_flood.pcap",
        500,
        157750,
        1657805696943664,
        1657805701933642,
    ),
    (
        "attack_zeek_ftp_bruteforce.pcap",
        606,
        45447,
        1389721044820046,
        1389721103938346,
    ),
    (
        "attack_zeek_heartbleed-success.pcap",
        34,
        38956,
        1396976220644842,
        1396976220972329,
    ),
    (
        "attack_zeek_nmap-vsn.pcap",
        547,
        24420,
        1317146840497541,
        1317146842913053,
    ),
    (
        "attack_zeek_quic_merlinc2.pcapng",
        100,
        55462,
        1735767286951851,
        1735767471020007,
    ),
    (
        "attack_zeek_sshguess.pcap",
        431,
        84001,
        1427726689213953,
        1427726759306612,
    ),
    (
        "benign_chrissanders_http_espn.pcapng",
        956,
        652181,
        1270661369782934,
        1270661371830416,
    ),
    (
        "benign_ndpi_alexa-app.pcapng",
        3103,
        1171135,
        1490976022526783,
        1490976198776068,
    ),
    (
        "benign_ndpi_googledns_android10.pcap",
        532,
        132894,
        1592552824409182,
        1592553079303170,
    ),
    (
        "benign_ndpi_iphone.pcap",
        500,
        221902,
        1582454552576659,
        1582454600748726,
    ),
    (
        "benign_ndpi_netflix.pcap",
        1793,
        1006416,
        1484319030789585,
        1484319120726362,
    ),
    (
        "benign_ndpi_teams.pcap",
        1540,
        679515,
        1587041672419153,
        1587041698021081,
    ),
    (
        "benign_zeek_quic_win11_firefox_google.pcap",
        441,
        427135,
        1661248466067424,
        1661248484138526,
    ),
    (
        "benign_zeek_wikipedia.pcap",
        136,
        25260,
        1300475167096535,
        1300475173475401,
    ),
];

#[test]
fn shared_captures_read_to_the_end_with_independent_counts() {
    let Some(dir) = std::env::var_os("PHANTOMNET_PCAPS") else {
        eprintln!("skipped: PHANTOMNET_PCAPS is not set");
        return;
    };
    let dir = PathBuf::from(dir);
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.ends_with(".pcap") || name.ends_with(".pcapng")) {
            continue;
        }
        // Both ways of reading a file: through the read-ahead buffer and memory-mapped.
        let mut counts = Vec::new();
        for mode in [ReadMode::Buffered, ReadMode::Mapped] {
            let mut r = PcapReader::open_with(&path, mode).unwrap_or_else(|e| panic!("{e}"));
            let (mut frames, mut bytes, mut first, mut last) = (0u64, 0u64, None, 0i64);
            loop {
                match r.next_frame() {
                    Ok(Next::Frame(f)) => {
                        frames += 1;
                        bytes += f.data.len() as u64;
                        assert!(f.wire_len as usize >= f.data.len());
                        first.get_or_insert(f.ts);
                        last = f.ts;
                    }
                    Ok(Next::End) => break,
                    Ok(Next::Idle(_)) => panic!("{name}: Idle from a file"),
                    Err(e) => panic!("{e}"),
                }
            }
            counts.push((frames, bytes, first, last));
        }
        assert_eq!(
            counts[0], counts[1],
            "{name}: buffered and mapped reads differ"
        );
        let (frames, bytes, first, last) = counts[0];
        eprintln!("{name}: {frames} frames, {bytes} captured bytes");
        match SHARED.iter().find(|s| s.0 == name) {
            Some(&(_, n, b, t0, t1)) => {
                assert_eq!((frames, bytes, first, last), (n, b, Some(t0), t1), "{name}");
                seen += 1;
            }
            None => eprintln!("{name}: not in the table of independent counts"),
        }
    }
    assert!(
        seen > 0,
        "no capture of the table found in {}",
        dir.display()
    );
    eprintln!("{seen} shared captures matched their independent counts");
}

#[test]
fn live_loopback_sees_a_udp_datagram_when_root() {
    let opts = LiveOptions {
        read_timeout: std::time::Duration::from_millis(20),
        ..LiveOptions::default()
    };
    let mut src = match LiveSource::open("lo", &opts) {
        Ok(s) => s,
        Err(e) if e.to_string().contains("CAP_NET_RAW") => {
            eprintln!("skipped: not allowed to capture ({e})");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    assert_eq!(src.describe(), "lo");
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let marker = format!("phantomnet-live-test-{}", std::process::id());
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    sock.send_to(marker.as_bytes(), sock.local_addr().unwrap())
        .unwrap();
    let mut idles = 0;
    loop {
        match src.next_frame().unwrap() {
            Next::Frame(f) => {
                if f.data.windows(marker.len()).any(|w| w == marker.as_bytes()) {
                    assert_eq!(f.link, LinkType::Ethernet);
                    // Ethernet(14) + IPv4(20) + UDP(8) + payload.
                    assert_eq!(f.data.len(), 42 + marker.len());
                    assert!(f.ts >= before);
                    break;
                }
            }
            Next::Idle(t) => {
                assert!(t >= before);
                idles += 1;
                assert!(
                    idles < 100,
                    "datagram not seen on lo within 100 read timeouts"
                );
            }
            Next::End => panic!("live source ended"),
        }
    }
    assert!(src.stats().frames >= 1);
}

#[test]
fn pcapng_packet_options_longer_than_the_spare_room_are_streamed_past() {
    for be in [false, true] {
        let mut b = Builder::new(be);
        b.shb();
        b.idb(1, 0, None, None);
        let d = payload(5, 1514);
        let comment = vec![b'x'; 20_000];
        let body = b.body(|b| {
            b.u32(0);
            b.u32(0);
            b.u32(77);
            b.u32(d.len() as u32);
            b.u32(d.len() as u32);
            b.out.extend_from_slice(&d);
            while b.out.len() % 4 != 0 {
                b.out.push(0);
            }
            b.u16(1);
            b.u16(comment.len() as u16);
            b.out.extend_from_slice(&comment);
            b.u16(0);
            b.u16(0);
        });
        b.block(6, &body, true);
        b.epb(0, 78, &d[..60], 60, false);
        let f = TempFile::with("long-options.pcapng", &b.out);
        expect_frames(
            f.path(),
            &[
                got(77, LinkType::Ethernet, &d, 1514),
                got(78, LinkType::Ethernet, &d[..60], 60),
            ],
        );
        // Cut inside the long options: the block is reported as truncated.
        let cut = TempFile::with("long-options-cut.pcapng", &b.out[..b.records[2].0 + 10_000]);
        let (frames, end) = read_all(cut.path());
        assert!(frames.is_empty());
        assert!(
            matches!(end, Err(CaptureError::Truncated { offset, .. }) if offset == b.records[2].0 as u64)
        );
    }
}
