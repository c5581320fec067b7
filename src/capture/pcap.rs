//! Capture files → frames: classic pcap (µs and ns, both byte orders, Kuznetzov's modified
//! format) and pcapng (several sections, interfaces with their own link type and timestamp
//! resolution), read in constant memory; plus a minimal classic pcap writer for tests and
//! generators.
//!
//! Everything decided per file (format, byte order, link type, resolution) is decided once,
//! when the file header, section header or interface description is read — never per
//! record. The reader maps a regular file of 1 MiB or more into memory (a 512 KiB window moved
//! along it) or else owns a `BufReader`, plus one record buffer allocated at
//! open; frames borrow the mapping or those buffers, so memory does not depend on the file
//! size (docs/DECISIONS.md, "Fourth `unsafe` exception"). Every error names the file and the
//! byte offset of the record (or header) at fault.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::Path;

use super::{CaptureError, Frame, FrameSource, Next, SourceStats};
use crate::decode::{LinkType, Micros};

/// Largest captured length accepted for one record (libpcap's own maximum snaplen).
/// Anything longer is treated as corruption, not as a frame.
pub const MAX_RECORD: usize = 256 * 1024;

/// Room in the record buffer for pcapng packet-block options read together with the data.
/// Longer option areas are streamed past without buffering.
const OPTIONS_ROOM: usize = 4 * 1024;

/// Size of the read-ahead buffer over the file.
const READ_AHEAD: usize = 128 * 1024;

/// Interfaces one pcapng section may describe; more is treated as a hostile file, so a
/// crafted capture cannot grow memory without bound.
pub const MAX_INTERFACES: usize = 1024;

const PCAPNG_SHB: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];
const PCAPNG_IDB: u32 = 1;
const PCAPNG_PB: u32 = 2;
const PCAPNG_SPB: u32 = 3;
const PCAPNG_EPB: u32 = 6;

/// A human name for a pcap link-type number, for error messages ("unknown" when we do not
/// know it). Covers the link types one meets when pointing a detector at the wrong capture.
pub fn linktype_name(linktype: u32) -> &'static str {
    if let Some(link) = LinkType::from_pcap(linktype) {
        return link.name();
    }
    match linktype {
        3 => "AX.25",
        6 => "IEEE 802.5 Token Ring",
        7 => "ARCNET",
        8 => "SLIP",
        9 => "PPP",
        10 => "FDDI",
        50 => "PPP in HDLC framing",
        51 => "PPPoE session (PPP_ETHER)",
        100 => "ATM RFC 1483",
        104 => "Cisco HDLC",
        105 => "IEEE 802.11",
        107 => "Frame Relay",
        114 => "LocalTalk",
        119 => "IEEE 802.11 Prism header",
        122 => "IP over Fibre Channel",
        127 => "IEEE 802.11 radiotap",
        143 => "DOCSIS",
        147..=162 => "user-defined (DLT_USER)",
        163 => "IEEE 802.11 AVS header",
        187 => "Bluetooth HCI H4",
        189 => "Linux USB",
        192 => "PPI (per-packet information)",
        195 => "IEEE 802.15.4",
        197 => "Endace ERF",
        201 => "Bluetooth HCI H4 with pseudo-header",
        215 => "IEEE 802.15.4 without FCS",
        220 => "Linux USB (memory-mapped)",
        227 => "SocketCAN",
        239 => "Linux netfilter NFLOG",
        249 => "USBPcap",
        251 => "Bluetooth LE link layer",
        252 => "Wireshark upper PDU",
        253 => "Linux netlink",
        254 => "Bluetooth Linux monitor",
        256 => "Bluetooth LE with pseudo-header",
        271 => "Linux vsock",
        272 => "Nordic BLE sniffer",
        274 => "Ethernet MAC merge (mPackets)",
        _ => "unknown",
    }
}

/// Reads a u16/u32 in the byte order decided for the file or section.
fn u16_at(b: &[u8], at: usize, be: bool) -> u16 {
    let mut a = [0u8; 2];
    if let Some(s) = b.get(at..at + 2) {
        a.copy_from_slice(s);
    }
    if be {
        u16::from_be_bytes(a)
    } else {
        u16::from_le_bytes(a)
    }
}

fn u32_at(b: &[u8], at: usize, be: bool) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        a.copy_from_slice(s);
    }
    if be {
        u32::from_be_bytes(a)
    } else {
        u32::from_le_bytes(a)
    }
}

fn u64_at(b: &[u8], at: usize, be: bool) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        a.copy_from_slice(s);
    }
    if be {
        u64::from_be_bytes(a)
    } else {
        u64::from_le_bytes(a)
    }
}

/// The four 32-bit words that open a classic record header (seconds, fraction, captured
/// and original length), from one 16-byte read: four `u32_at` calls, each with its own
/// bounds check, copy and byte-order branch, were a fifth of the reader's instructions.
#[inline]
fn record_header(b: &[u8], be: bool) -> Option<[u32; 4]> {
    let h: [u8; 16] = b.get(..16)?.try_into().ok()?;
    let x = u128::from_le_bytes(h);
    let w = [
        x as u32,
        (x >> 32) as u32,
        (x >> 64) as u32,
        (x >> 96) as u32,
    ];
    Some(if be { w.map(u32::swap_bytes) } else { w })
}

/// pcapng rounds every variable-length field up to 32 bits.
fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

/// How a capture file's bytes reach the reader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// Mapped into memory when it is a regular file of at least `MAP_MIN` bytes (records
    /// are lent straight from the page cache, no copy), read through a buffer otherwise.
    Auto,
    /// Always through the 128 KiB read-ahead buffer (`read` system calls).
    Buffered,
    /// Mapped whenever the file is a regular, non-empty file.
    Mapped,
}

/// Files smaller than this are read through the buffer: mapping them gains nothing.
const MAP_MIN: u64 = 1 << 20;

/// How much of a mapped file is mapped at a time: the window the reader's records are lent
/// from. Only this window counts in the resident set, whatever the file's size, and whatever
/// size of folio the page cache holds it in: a kernel that keeps a file in 2 MiB folios
/// maps a whole folio at a fault (fault-around), so a mapping of the whole file released
/// behind the reader still had 2 MiB of it resident at a time, and the peak RSS depended on
/// how the file had been read before (20.9 against 24.7 MB, the same binary).
const MAP_WINDOW: usize = 512 << 10;

/// The window moves on (to the page of the next unread byte) once fewer bytes than this are
/// left in it: records up to this long are always lent whole from the mapping. A longer one
/// that crosses the window's end is copied into the record buffer, as from the read-ahead
/// buffer (correct either way; 64 KiB is an IP packet's limit, GRO/TSO records aside).
const MAP_KEEP_AHEAD: usize = 64 << 10;

/// How far ahead of the reader the kernel is asked to have the file in the page cache
/// (`POSIX_FADV_WILLNEED`, renewed at every move of the window). Without it a page missing
/// from the cache is read at the fault, while the loop waits: a file that is mostly cached
/// but has holes (pages the kernel dropped, or never read) cost a disk read per hole, each
/// queued behind whatever the disk was busy writing (~0.1 s apiece right after another tool
/// had logged 400 MB). Asked ahead, the holes are read while the loop works on what is
/// already there. Only the page cache fills: nothing is mapped into the process.
const MAP_READ_AHEAD: usize = 16 << 20;

/// The bytes of a capture: a read-ahead buffer over the file, or a window mapped over it.
/// The same four operations as `BufRead` (`buffer`, `consume`, `fill_buf`, `read`).
enum Src {
    Buffered(BufReader<File>),
    Mapped {
        map: map::Mapping,
        /// Offset of the next unconsumed byte.
        pos: usize,
    },
}

impl Src {
    /// What is available without another read (the rest of the window when mapped).
    #[inline]
    fn buffer(&self) -> &[u8] {
        match self {
            Src::Buffered(rd) => rd.buffer(),
            Src::Mapped { map, pos } => map.from(*pos),
        }
    }

    #[inline]
    fn consume(&mut self, n: usize) {
        match self {
            Src::Buffered(rd) => rd.consume(n),
            Src::Mapped { map, pos } => {
                *pos = (*pos + n).min(map.len());
                // A failed move leaves no window: the next `fill_buf` or `read` tries again
                // and reports the error, with the file and offset, if it fails again.
                let _ = map.follow(*pos);
            }
        }
    }

    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        match self {
            Src::Buffered(rd) => rd.fill_buf(),
            Src::Mapped { map, pos } => {
                if map.from(*pos).is_empty() && *pos < map.len() {
                    map.move_to(*pos)?;
                }
                Ok(map.from(*pos))
            }
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Src::Buffered(rd) => rd.read(buf),
            Src::Mapped { .. } => {
                let avail = self.fill_buf()?;
                let n = avail.len().min(buf.len());
                buf[..n].copy_from_slice(&avail[..n]);
                self.consume(n);
                Ok(n)
            }
        }
    }
}

/// The one piece of unsafe code of the file reader: a read-only private mapping of a window
/// of a capture file, moved along the file as it is read.
#[allow(unsafe_code)]
mod map {
    use std::fs::File;
    use std::io;
    use std::os::fd::AsRawFd;
    use std::ptr::NonNull;

    use super::{MAP_KEEP_AHEAD, MAP_READ_AHEAD, MAP_WINDOW};

    pub struct Mapping {
        file: File,
        /// The file's length.
        len: usize,
        /// The kernel's page size (4 KiB on x86_64, 4 or 16 KiB on a Pi): windows start on
        /// a multiple of it.
        page: usize,
        /// The window: `wlen` bytes of the file from offset `start`, mapped at `ptr` (None
        /// before the first window and after a failed move).
        ptr: Option<NonNull<u8>>,
        start: usize,
        wlen: usize,
        /// Everything below this offset has been asked for with `POSIX_FADV_WILLNEED`.
        advised: usize,
    }

    // SAFETY: the window is a read-only mapping owned by one `Mapping`; nothing in it is
    // shared mutable state of this process.
    unsafe impl Send for Mapping {}

    impl Mapping {
        /// Maps the first window of `file` (`len` bytes, its size, checked by the caller to
        /// be non-zero). The mapping keeps a handle of its own on the file.
        pub fn new(file: &File, len: usize) -> io::Result<Mapping> {
            // SAFETY: sysconf reads a constant of the running kernel.
            let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
                .ok()
                .filter(|p| p.is_power_of_two())
                .unwrap_or(4096);
            let mut map = Mapping {
                file: file.try_clone()?,
                len,
                page,
                ptr: None,
                start: 0,
                wlen: 0,
                advised: 0,
            };
            map.move_to(0)?;
            Ok(map)
        }

        pub fn len(&self) -> usize {
            self.len
        }

        /// The window's bytes from file offset `pos` on (empty if `pos` is not in it).
        /// Another process rewriting the file while it is read changes these bytes (they are
        /// parsed as untrusted input either way); one truncating it ends the process with
        /// SIGBUS, as for any reader of a mapped file.
        #[inline]
        pub fn from(&self, pos: usize) -> &[u8] {
            match self.ptr {
                Some(p) if pos >= self.start && pos <= self.start + self.wlen => {
                    // SAFETY: `p` maps `wlen` readable bytes until the window moves, which
                    // takes `&mut self`; the slice borrows `self`.
                    unsafe {
                        std::slice::from_raw_parts(
                            p.as_ptr().add(pos - self.start),
                            self.start + self.wlen - pos,
                        )
                    }
                }
                _ => &[],
            }
        }

        /// Moves the window to `pos` once fewer than `MAP_KEEP_AHEAD` bytes are left in it
        /// (and the file goes on past it).
        #[inline]
        pub fn follow(&mut self, pos: usize) -> io::Result<()> {
            let end = self.start + self.wlen;
            if end.saturating_sub(pos) < MAP_KEEP_AHEAD && end < self.len {
                self.move_to(pos)
            } else {
                Ok(())
            }
        }

        /// Maps the window holding offset `pos` (from its page on), unmapping the old one.
        pub fn move_to(&mut self, pos: usize) -> io::Result<()> {
            let start = (pos & !(self.page - 1)).min(self.len);
            let wlen = MAP_WINDOW.min(self.len - start);
            self.unmap();
            if wlen == 0 {
                return Ok(());
            }
            let off = libc::off_t::try_from(start)
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            // SAFETY: a fresh read-only private mapping of part of our own file, placed by
            // the kernel; the pointer is checked before use, and slices of it borrow `self`,
            // so none outlives the window (moving or dropping it takes `&mut self`).
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    wlen,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE,
                    self.file.as_raw_fd(),
                    off,
                )
            };
            if ptr == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            self.ptr = Some(NonNull::new(ptr.cast::<u8>()).ok_or_else(io::Error::last_os_error)?);
            self.start = start;
            self.wlen = wlen;
            self.read_ahead(pos.saturating_add(MAP_READ_AHEAD));
            Ok(())
        }

        fn unmap(&mut self) {
            if let Some(p) = self.ptr.take() {
                // SAFETY: unmaps exactly the window `move_to` mapped; no slice of it is alive
                // (they borrow `self`, and this takes `&mut self`).
                unsafe {
                    libc::munmap(p.as_ptr().cast(), self.wlen);
                }
            }
        }

        /// Asks the kernel to read the file into the page cache up to `upto` (from where
        /// the last call stopped): it starts the reads and returns without waiting for them.
        pub fn read_ahead(&mut self, upto: usize) {
            let upto = upto.min(self.len);
            if upto <= self.advised {
                return;
            }
            let (Ok(off), Ok(n)) = (
                libc::off_t::try_from(self.advised),
                libc::off_t::try_from(upto - self.advised),
            ) else {
                self.advised = self.len;
                return;
            };
            // SAFETY: advice on our own open file; it only starts page-cache reads, and its
            // failure is harmless (the pages are then read at the fault, as without it).
            let rc = unsafe {
                libc::posix_fadvise(self.file.as_raw_fd(), off, n, libc::POSIX_FADV_WILLNEED)
            };
            self.advised = if rc == 0 { upto } else { self.len };
        }
    }

    impl Drop for Mapping {
        fn drop(&mut self) {
            self.unmap();
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use std::io::Write;

        fn temp_file(bytes: &[u8], name: &str) -> File {
            let path = std::env::temp_dir().join(format!("pn-map-{name}-{}", std::process::id()));
            File::create(&path).unwrap().write_all(bytes).unwrap();
            let file = File::open(&path).unwrap();
            std::fs::remove_file(&path).unwrap();
            file
        }

        #[test]
        fn the_window_follows_the_reader_and_lends_the_file_bytes() {
            // Two and a half windows and a ragged tail.
            let len = 2 * MAP_WINDOW + MAP_WINDOW / 2 + 123;
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let mut map = Mapping::new(&temp_file(&bytes, "follow"), len).unwrap();
            assert_eq!(map.from(0).len(), MAP_WINDOW);
            assert_eq!(
                map.advised, len,
                "the whole (small) file was asked for at once"
            );
            let mut pos = 0;
            let mut seen = Vec::new();
            let mut moves = 0;
            while pos < len {
                let avail = map.from(pos);
                assert!(!avail.is_empty(), "the window holds the next byte ({pos})");
                assert!(
                    avail.len() >= MAP_KEEP_AHEAD.min(len - pos),
                    "at least MAP_KEEP_AHEAD bytes are lent whole ({pos})"
                );
                // Steps of assorted sizes, never past what is lent.
                let step = avail.len().min(1 + (pos * 31 % 9000));
                seen.extend_from_slice(&avail[..step]);
                pos += step;
                let before = map.start;
                map.follow(pos).unwrap();
                moves += usize::from(map.start != before);
                assert_eq!(map.start % map.page, 0);
                assert!(map.wlen <= MAP_WINDOW);
            }
            assert_eq!(seen, bytes);
            // 0, ~448 KiB, then ~896 KiB, which reaches the end.
            assert_eq!(moves, 2, "the window moved along the file");
            assert!(map.from(len).is_empty());
            // Moving back works too (the buffered path never needs it, but nothing forbids it).
            map.move_to(10).unwrap();
            assert_eq!(map.from(10)[..5], bytes[10..15]);
        }

        #[test]
        fn read_ahead_asks_once_per_range_and_stops_at_the_end() {
            let len = 3 * 16384 + 8192 + 123;
            let bytes = vec![7u8; len];
            let mut map = Mapping::new(&temp_file(&bytes, "ahead"), len).unwrap();
            assert_eq!(map.advised, len);
            map.advised = 0;
            map.read_ahead(100);
            assert_eq!(map.advised, 100);
            map.read_ahead(50);
            assert_eq!(map.advised, 100, "nothing new asked below the mark");
            map.read_ahead(usize::MAX);
            assert_eq!(map.advised, len, "clamped to the file");
        }
    }
}

/// The file being read and how far we are into it.
struct Input {
    path: String,
    rd: Src,
    /// Offset of the next unread byte.
    offset: u64,
}

impl Input {
    /// Reads until `buf` is full or the file ends; returns the bytes read.
    fn read_some(&mut self, buf: &mut [u8]) -> Result<usize, CaptureError> {
        // Fast path: the whole piece is already buffered (nearly always), one copy.
        let avail = self.rd.buffer();
        if avail.len() >= buf.len() {
            buf.copy_from_slice(&avail[..buf.len()]);
            self.rd.consume(buf.len());
            self.offset += buf.len() as u64;
            return Ok(buf.len());
        }
        let mut n = 0;
        while n < buf.len() {
            match self.rd.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(CaptureError::Io {
                        path: self.path.clone(),
                        offset: self.offset + n as u64,
                        source,
                    })
                }
            }
        }
        self.offset += n as u64;
        Ok(n)
    }

    /// Reads the first bytes of a record: `false` when the file ends cleanly before it.
    fn read_start(&mut self, buf: &mut [u8], record: u64) -> Result<bool, CaptureError> {
        match self.read_some(buf)? {
            0 => Ok(false),
            n if n == buf.len() => Ok(true),
            _ => Err(self.truncated(record)),
        }
    }

    /// Reads the rest of a record; a short read means the file was cut inside it.
    fn read_rest(&mut self, buf: &mut [u8], record: u64) -> Result<(), CaptureError> {
        if self.read_some(buf)? == buf.len() {
            Ok(())
        } else {
            Err(self.truncated(record))
        }
    }

    /// Skips `n` bytes of a record without copying them anywhere.
    fn skip(&mut self, mut n: u64, record: u64) -> Result<(), CaptureError> {
        while n > 0 {
            let avail = match self.rd.fill_buf() {
                Ok(b) => b.len(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(CaptureError::Io {
                        path: self.path.clone(),
                        offset: self.offset,
                        source,
                    })
                }
            };
            if avail == 0 {
                return Err(self.truncated(record));
            }
            let k = avail.min(usize::try_from(n).unwrap_or(usize::MAX));
            self.rd.consume(k);
            self.offset += k as u64;
            n -= k as u64;
        }
        Ok(())
    }

    fn truncated(&self, offset: u64) -> CaptureError {
        CaptureError::Truncated {
            path: self.path.clone(),
            offset,
        }
    }

    fn malformed(&self, offset: u64, what: &'static str) -> CaptureError {
        CaptureError::Malformed {
            path: self.path.clone(),
            offset,
            what,
        }
    }

    fn unsupported(&self, linktype: u32, offset: u64) -> CaptureError {
        CaptureError::UnsupportedLinkType {
            path: self.path.clone(),
            linktype,
            name: linktype_name(linktype),
            offset,
        }
    }
}

/// Maps the file when `mode` asks for it and it is a regular file big enough; otherwise (a
/// pipe, a device, an empty or small file, or a kernel that refuses) the read-ahead buffer.
fn open_src(file: File, mode: ReadMode, path: &str) -> Result<Src, CaptureError> {
    let meta = file.metadata().map_err(|source| CaptureError::Open {
        path: path.to_string(),
        source,
    })?;
    let min = match mode {
        ReadMode::Buffered => u64::MAX,
        ReadMode::Auto => MAP_MIN,
        ReadMode::Mapped => 1,
    };
    if meta.is_file() && meta.len() >= min {
        if let Ok(len) = usize::try_from(meta.len()) {
            match map::Mapping::new(&file, len) {
                Ok(map) => return Ok(Src::Mapped { map, pos: 0 }),
                Err(e) => log::debug!("{path}: not mapped ({e}); reading it through a buffer"),
            }
        }
    }
    Ok(Src::Buffered(BufReader::with_capacity(READ_AHEAD, file)))
}

/// Classic pcap parameters, fixed by the file header.
#[derive(Clone, Copy, Debug)]
struct Classic {
    be: bool,
    nanos: bool,
    /// 16, or 24 for Kuznetzov's modified pcap (ifindex, protocol, packet type, padding).
    rec_hdr_len: usize,
    link: LinkType,
}

/// How one pcapng interface's timestamp units become microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TsScale {
    Micros,
    Mul(u64),
    Div(u64),
    /// Units of 2^-n seconds.
    Binary(u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TsConv {
    scale: TsScale,
    /// if_tsoffset, in microseconds.
    offset_us: i64,
}

impl TsConv {
    const DEFAULT: TsConv = TsConv {
        scale: TsScale::Micros,
        offset_us: 0,
    };

    /// From the if_tsresol option byte; `None` when finer than we can represent (10^-25,
    /// 2^-128), which no capture tool writes.
    fn from_tsresol(v: u8) -> Option<TsScale> {
        if v & 0x80 == 0 {
            let k = u32::from(v);
            if k == 6 {
                Some(TsScale::Micros)
            } else if k < 6 {
                Some(TsScale::Mul(10u64.pow(6 - k)))
            } else if k - 6 <= 19 {
                Some(TsScale::Div(10u64.pow(k - 6)))
            } else {
                None
            }
        } else {
            Some(TsScale::Binary(u32::from(v & 0x7f)))
        }
    }

    fn micros(self, t: u64) -> Micros {
        let us: u64 = match self.scale {
            TsScale::Micros => t,
            TsScale::Mul(m) => t.saturating_mul(m),
            TsScale::Div(d) => t / d,
            TsScale::Binary(n) => {
                let v = (u128::from(t) * 1_000_000) >> n;
                u64::try_from(v).unwrap_or(u64::MAX)
            }
        };
        i64::try_from(us)
            .unwrap_or(i64::MAX)
            .saturating_add(self.offset_us)
    }
}

/// One pcapng Interface Description Block, as much of it as frames need.
#[derive(Clone, Copy, Debug)]
struct Iface {
    linktype: u32,
    /// `None` when we do not decode this link type: an error only once a packet uses it.
    link: Option<LinkType>,
    snaplen: u32,
    ts: TsConv,
}

/// State of the pcapng section being read.
#[derive(Debug)]
struct Section {
    be: bool,
    ifaces: Vec<Iface>,
    /// Timestamp of the last packet with one, for Simple Packet Blocks (they carry none).
    last_ts: Micros,
}

#[derive(Debug)]
enum Format {
    Classic(Classic),
    Ng(Section),
}

/// Reads a pcap or pcapng file frame by frame. See the module documentation.
///
/// After an error the reader is finished: later calls return `Next::End`. Frames returned
/// before the error were complete records and stay valid.
pub struct PcapReader {
    input: Input,
    /// The one record buffer: `MAX_RECORD` plus room for pcapng options and padding.
    buf: Vec<u8>,
    format: Format,
    stats: SourceStats,
    finished: bool,
    /// Bytes of the last record, lent to the caller straight from the read-ahead buffer,
    /// still to be consumed (before the next read).
    lent: usize,
}

impl std::fmt::Debug for PcapReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcapReader")
            .field("path", &self.input.path)
            .field("offset", &self.input.offset)
            .field("format", &self.format)
            .field("stats", &self.stats)
            .finish()
    }
}

impl PcapReader {
    /// Opens a capture and reads its file header (classic) or first section header
    /// (pcapng). The format is found by the magic number, not by the file name.
    pub fn open(path: &Path) -> Result<PcapReader, CaptureError> {
        Self::open_with(path, ReadMode::Auto)
    }

    /// `open`, choosing how the bytes are read (the tests read every file both ways).
    pub fn open_with(path: &Path, mode: ReadMode) -> Result<PcapReader, CaptureError> {
        let name = path.display().to_string();
        let file = File::open(path).map_err(|source| CaptureError::Open {
            path: name.clone(),
            source,
        })?;
        let mut input = Input {
            rd: open_src(file, mode, &name)?,
            path: name,
            offset: 0,
        };
        let buf = vec![0u8; MAX_RECORD + OPTIONS_ROOM];

        let mut magic = [0u8; 4];
        match input.read_some(&mut magic)? {
            0 => return Err(input.malformed(0, "empty file; expected a pcap or pcapng header")),
            4 => {}
            _ => return Err(input.truncated(0)),
        }
        let format = if magic == PCAPNG_SHB {
            let mut head = [0u8; 8];
            head[..4].copy_from_slice(&magic);
            let mut len = [0u8; 4];
            input.read_rest(&mut len, 0)?;
            head[4..].copy_from_slice(&len);
            let mut section = Section {
                be: false,
                ifaces: Vec::with_capacity(4),
                last_ts: 0,
            };
            read_shb(&mut input, &mut section, head, 0)?;
            Format::Ng(section)
        } else {
            let (be, nanos, rec_hdr_len) = match u32::from_le_bytes(magic) {
                0xa1b2_c3d4 => (false, false, 16),
                0xd4c3_b2a1 => (true, false, 16),
                0xa1b2_3c4d => (false, true, 16),
                0x4d3c_b2a1 => (true, true, 16),
                0xa1b2_cd34 => (false, false, 24),
                0x34cd_b2a1 => (true, false, 24),
                _ => {
                    return Err(CaptureError::NotACapture {
                        path: input.path,
                        magic: u32::from_be_bytes(magic),
                    })
                }
            };
            let mut hdr = [0u8; 20];
            input.read_rest(&mut hdr, 0)?;
            if u16_at(&hdr, 0, be) != 2 {
                return Err(input.malformed(4, "unsupported pcap version; expected 2.x"));
            }
            // The upper bits of the link-type field carry FCS information (libpcap's
            // LT_LINKTYPE mask keeps the rest).
            let linktype = u32_at(&hdr, 16, be) & 0x03ff_ffff;
            let link =
                LinkType::from_pcap(linktype).ok_or_else(|| input.unsupported(linktype, 20))?;
            Format::Classic(Classic {
                be,
                nanos,
                rec_hdr_len,
                link,
            })
        };
        Ok(PcapReader {
            input,
            buf,
            format,
            stats: SourceStats::default(),
            finished: false,
            lent: 0,
        })
    }

    /// Byte offset of the next unread byte (for progress reports).
    pub fn offset(&self) -> u64 {
        self.input.offset
    }

    /// The link type frames carry, for classic pcap; `None` for pcapng, where it is per
    /// interface (each `Frame` carries its own).
    pub fn link_type(&self) -> Option<LinkType> {
        match &self.format {
            Format::Classic(c) => Some(c.link),
            Format::Ng(_) => None,
        }
    }

    fn read_next(&mut self) -> Result<Next<'_>, CaptureError> {
        let PcapReader {
            input,
            buf,
            format,
            stats,
            finished,
            lent,
        } = self;
        if *lent > 0 {
            input.rd.consume(*lent);
            *lent = 0;
        }
        if let Format::Classic(c) = format {
            // Fast path: a record wholly in the read-ahead buffer is lent from there, without
            // copying it into the record buffer (offsets as if read; consumed next call).
            // (The buffer is looked up twice, not three times: each lookup costs ~12
            // instructions a frame. Returning a slice of the first lookup would need the
            // borrow to end on the other path, which the borrow checker cannot see yet.)
            let hl = c.rec_hdr_len;
            let b = input.rd.buffer();
            let whole = record_header(b, c.be).and_then(|[sec, frac, incl, orig]| {
                let incl = incl as usize;
                let frac_us = if c.nanos { frac / 1000 } else { frac };
                let ts = i64::from(sec) * 1_000_000 + i64::from(frac_us);
                let wire_len = orig.max(incl as u32);
                (incl <= MAX_RECORD && b.len() >= hl + incl).then_some((incl, ts, wire_len))
            });
            if let Some((incl, ts, wire_len)) = whole {
                *lent = hl + incl;
                input.offset += *lent as u64;
                stats.frames += 1;
                return Ok(Next::Frame(Frame {
                    ts,
                    link: c.link,
                    data: input.rd.buffer().get(hl..hl + incl).unwrap_or(&[]),
                    wire_len,
                }));
            }
        }
        let frame = match format {
            Format::Classic(c) => next_classic(input, buf, *c),
            Format::Ng(s) => next_ng(input, buf, s),
        };
        match frame {
            Ok(Some((ts, link, len, wire_len))) => {
                stats.frames += 1;
                Ok(Next::Frame(Frame {
                    ts,
                    link,
                    data: buf.get(..len).unwrap_or(&[]),
                    wire_len,
                }))
            }
            Ok(None) => {
                *finished = true;
                Ok(Next::End)
            }
            Err(e) => {
                *finished = true;
                Err(e)
            }
        }
    }
}

/// (timestamp, link type, captured length in the record buffer, wire length)
type RawFrame = (Micros, LinkType, usize, u32);

fn next_classic(
    input: &mut Input,
    buf: &mut [u8],
    c: Classic,
) -> Result<Option<RawFrame>, CaptureError> {
    let start = input.offset;
    let mut h = [0u8; 24];
    if !input.read_start(&mut h[..c.rec_hdr_len], start)? {
        return Ok(None);
    }
    let sec = u32_at(&h, 0, c.be);
    let frac = u32_at(&h, 4, c.be);
    let incl = u32_at(&h, 8, c.be) as usize;
    let orig = u32_at(&h, 12, c.be);
    if incl > MAX_RECORD {
        return Err(input.malformed(start, "record's captured length exceeds 262144 bytes"));
    }
    let data = buf
        .get_mut(..incl)
        .ok_or_else(|| input.malformed(start, "record does not fit the record buffer"))?;
    input.read_rest(data, start)?;
    let frac_us = if c.nanos { frac / 1000 } else { frac };
    let ts = i64::from(sec) * 1_000_000 + i64::from(frac_us);
    Ok(Some((ts, c.link, incl, orig.max(incl as u32))))
}

/// Reads a Section Header Block whose type and length words are in `head` (already
/// consumed); resets the section's interfaces and byte order.
fn read_shb(
    input: &mut Input,
    section: &mut Section,
    head: [u8; 8],
    start: u64,
) -> Result<(), CaptureError> {
    let mut bom = [0u8; 4];
    input.read_rest(&mut bom, start)?;
    let be = match bom {
        [0x1a, 0x2b, 0x3c, 0x4d] => true,
        [0x4d, 0x3c, 0x2b, 0x1a] => false,
        _ => {
            return Err(input.malformed(
                start + 8,
                "section header has no byte-order magic 0x1a2b3c4d",
            ))
        }
    };
    let len = u32_at(&head, 4, be) as u64;
    if len < 28 || len % 4 != 0 {
        return Err(input.malformed(
            start + 4,
            "section header length is not a multiple of 4 of at least 28",
        ));
    }
    let mut fixed = [0u8; 12];
    input.read_rest(&mut fixed, start)?;
    if u16_at(&fixed, 0, be) != 1 {
        return Err(input.malformed(start + 12, "unsupported pcapng major version; expected 1"));
    }
    // Options are not needed: skip them, then check the trailing length.
    input.skip(len - 28, start)?;
    let mut trailer = [0u8; 4];
    input.read_rest(&mut trailer, start)?;
    if u64::from(u32_at(&trailer, 0, be)) != len {
        return Err(input.malformed(
            start,
            "section header's trailing length differs from its leading length",
        ));
    }
    section.be = be;
    section.ifaces.clear();
    Ok(())
}

fn next_ng(
    input: &mut Input,
    buf: &mut [u8],
    s: &mut Section,
) -> Result<Option<RawFrame>, CaptureError> {
    loop {
        let start = input.offset;
        let mut head = [0u8; 8];
        if !input.read_start(&mut head, start)? {
            return Ok(None);
        }
        if head[..4] == PCAPNG_SHB {
            read_shb(input, s, head, start)?;
            continue;
        }
        let be = s.be;
        let typ = u32_at(&head, 0, be);
        let len = u32_at(&head, 4, be) as usize;
        if len < 12 || len % 4 != 0 {
            return Err(input.malformed(
                start + 4,
                "block length is not a multiple of 4 of at least 12",
            ));
        }
        match typ {
            PCAPNG_IDB => read_idb(input, buf, s, len, start)?,
            PCAPNG_EPB | PCAPNG_PB => {
                return read_epb(input, buf, s, typ, len, start).map(Some);
            }
            PCAPNG_SPB => return read_spb(input, buf, s, len, start).map(Some),
            _ => {
                // Any other block (name resolution, statistics, custom, secrets...): skip
                // it by its length and check its trailer.
                input.skip(len as u64 - 12, start)?;
                let mut trailer = [0u8; 4];
                input.read_rest(&mut trailer, start)?;
                if u32_at(&trailer, 0, be) as usize != len {
                    return Err(input.malformed(
                        start,
                        "block's trailing length differs from its leading length",
                    ));
                }
            }
        }
    }
}

fn check_trailer(
    input: &Input,
    bytes: &[u8],
    at: usize,
    be: bool,
    len: usize,
    start: u64,
) -> Result<(), CaptureError> {
    if u32_at(bytes, at, be) as usize == len {
        Ok(())
    } else {
        Err(input.malformed(
            start,
            "block's trailing length differs from its leading length",
        ))
    }
}

fn read_idb(
    input: &mut Input,
    buf: &mut [u8],
    s: &mut Section,
    len: usize,
    start: u64,
) -> Result<(), CaptureError> {
    if len < 20 {
        return Err(input.malformed(
            start + 4,
            "interface description block shorter than 20 bytes",
        ));
    }
    if s.ifaces.len() >= MAX_INTERFACES {
        return Err(input.malformed(start, "more than 1024 interfaces in one pcapng section"));
    }
    // Body and trailer.
    let rest = len - 8;
    let body = buf.get_mut(..rest).ok_or_else(|| {
        input.malformed(start + 4, "interface description block longer than 260 KiB")
    })?;
    input.read_rest(body, start)?;
    let be = s.be;
    check_trailer(input, body, rest - 4, be, len, start)?;
    let linktype = u32::from(u16_at(body, 0, be));
    let snaplen = u32_at(body, 4, be);
    let mut ts = TsConv::DEFAULT;
    let opts = &body[8..rest - 4];
    let mut at = 0;
    while at + 4 <= opts.len() {
        let code = u16_at(opts, at, be);
        let olen = usize::from(u16_at(opts, at + 2, be));
        let value_at = at + 4;
        let opt_offset = start + 16 + at as u64;
        if code == 0 {
            break;
        }
        let value = opts.get(value_at..value_at + olen).ok_or_else(|| {
            input.malformed(
                opt_offset,
                "interface option runs past the end of its block",
            )
        })?;
        match (code, olen) {
            (9, 1) => {
                ts.scale = TsConv::from_tsresol(value[0]).ok_or_else(|| {
                    input.malformed(opt_offset, "if_tsresol finer than 10^-25 or 2^-127 s")
                })?;
            }
            (9, _) => {
                return Err(input.malformed(opt_offset, "if_tsresol option is not 1 byte long"))
            }
            (14, 8) => {
                let secs = u64_at(value, 0, be) as i64;
                ts.offset_us = secs.saturating_mul(1_000_000);
            }
            (14, _) => {
                return Err(input.malformed(opt_offset, "if_tsoffset option is not 8 bytes long"))
            }
            _ => {}
        }
        at = value_at + pad4(olen);
    }
    s.ifaces.push(Iface {
        linktype,
        link: LinkType::from_pcap(linktype),
        snaplen,
        ts,
    });
    Ok(())
}

/// The interface a packet block refers to, and its decodable link type.
fn iface_for(
    input: &Input,
    s: &Section,
    id: usize,
    start: u64,
) -> Result<(Iface, LinkType), CaptureError> {
    let iface = *s.ifaces.get(id).ok_or_else(|| {
        input.malformed(
            start,
            "packet block refers to an interface with no description block in its section",
        )
    })?;
    match iface.link {
        Some(link) => Ok((iface, link)),
        None => Err(input.unsupported(iface.linktype, start)),
    }
}

/// Enhanced Packet Block, or the obsolete Packet Block (same layout, 16-bit interface id
/// followed by a drop count).
fn read_epb(
    input: &mut Input,
    buf: &mut [u8],
    s: &mut Section,
    typ: u32,
    len: usize,
    start: u64,
) -> Result<RawFrame, CaptureError> {
    if len < 32 {
        return Err(input.malformed(start + 4, "packet block shorter than 32 bytes"));
    }
    let be = s.be;
    let mut fixed = [0u8; 20];
    input.read_rest(&mut fixed, start)?;
    let id = if typ == PCAPNG_EPB {
        u32_at(&fixed, 0, be) as usize
    } else {
        usize::from(u16_at(&fixed, 0, be))
    };
    let (iface, link) = iface_for(input, s, id, start)?;
    let t = (u64::from(u32_at(&fixed, 4, be)) << 32) | u64::from(u32_at(&fixed, 8, be));
    let cap = u32_at(&fixed, 12, be) as usize;
    let orig = u32_at(&fixed, 16, be);
    if cap > MAX_RECORD {
        return Err(input.malformed(start, "packet's captured length exceeds 262144 bytes"));
    }
    let padded = pad4(cap);
    // Data, padding, options and trailer.
    let rest = len - 28;
    if padded + 4 > rest {
        return Err(input.malformed(
            start,
            "packet's captured length runs past the end of its block",
        ));
    }
    if let Some(all) = buf.get_mut(..rest) {
        input.read_rest(all, start)?;
        check_trailer(input, all, rest - 4, be, len, start)?;
    } else {
        // Options longer than the spare room: stream past them.
        // `padded` ≤ MAX_RECORD (checked above) fits the buffer.
        let data = buf
            .get_mut(..padded)
            .ok_or_else(|| input.malformed(start, "packet does not fit the record buffer"))?;
        input.read_rest(data, start)?;
        input.skip((rest - padded - 4) as u64, start)?;
        let mut trailer = [0u8; 4];
        input.read_rest(&mut trailer, start)?;
        check_trailer(input, &trailer, 0, be, len, start)?;
    }
    let ts = iface.ts.micros(t);
    s.last_ts = ts;
    Ok((ts, link, cap, orig.max(cap as u32)))
}

/// Simple Packet Block: interface 0, no timestamp (the last one seen is reused), captured
/// length = min(original length, interface 0's snaplen, what the block holds).
fn read_spb(
    input: &mut Input,
    buf: &mut [u8],
    s: &mut Section,
    len: usize,
    start: u64,
) -> Result<RawFrame, CaptureError> {
    if len < 16 {
        return Err(input.malformed(start + 4, "simple packet block shorter than 16 bytes"));
    }
    let be = s.be;
    let (iface, link) = iface_for(input, s, 0, start)?;
    let rest = len - 8;
    let all = buf
        .get_mut(..rest)
        .ok_or_else(|| input.malformed(start, "simple packet block's data exceeds 262144 bytes"))?;
    input.read_rest(all, start)?;
    check_trailer(input, all, rest - 4, be, len, start)?;
    let orig = u32_at(all, 0, be);
    let mut cap = (orig as usize).min(rest - 8);
    if iface.snaplen != 0 {
        cap = cap.min(iface.snaplen as usize);
    }
    if cap > MAX_RECORD {
        return Err(input.malformed(start, "simple packet block's data exceeds 262144 bytes"));
    }
    // Move the data to the front so frames always start at the buffer's beginning.
    all.copy_within(4..4 + cap, 0);
    Ok((s.last_ts, link, cap, orig.max(cap as u32)))
}

impl FrameSource for PcapReader {
    fn next_frame(&mut self) -> Result<Next<'_>, CaptureError> {
        if self.finished {
            return Ok(Next::End);
        }
        self.read_next()
    }

    fn describe(&self) -> &str {
        &self.input.path
    }

    fn stats(&self) -> SourceStats {
        self.stats
    }
}

/// Writes classic pcap (microsecond timestamps, little-endian): test fixtures, the demo
/// capture generator and the hostile-traffic generator.
pub struct PcapWriter {
    path: String,
    w: BufWriter<File>,
    offset: u64,
    snaplen: u32,
}

impl PcapWriter {
    /// Creates (or truncates) `path` with link type `linktype` and a snaplen of
    /// `MAX_RECORD`.
    pub fn create(path: &Path, linktype: u32) -> Result<PcapWriter, CaptureError> {
        PcapWriter::create_with_snaplen(path, linktype, MAX_RECORD as u32)
    }

    /// As `create`, with a chosen snaplen: longer frames are cut to it when written.
    pub fn create_with_snaplen(
        path: &Path,
        linktype: u32,
        snaplen: u32,
    ) -> Result<PcapWriter, CaptureError> {
        let name = path.display().to_string();
        let file = File::create(path).map_err(|source| CaptureError::Open {
            path: name.clone(),
            source,
        })?;
        let mut w = PcapWriter {
            path: name,
            w: BufWriter::with_capacity(READ_AHEAD, file),
            offset: 0,
            snaplen,
        };
        let mut hdr = [0u8; 24];
        hdr[0..4].copy_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        hdr[4..6].copy_from_slice(&2u16.to_le_bytes());
        hdr[6..8].copy_from_slice(&4u16.to_le_bytes());
        hdr[16..20].copy_from_slice(&snaplen.to_le_bytes());
        hdr[20..24].copy_from_slice(&linktype.to_le_bytes());
        w.put(&hdr)?;
        Ok(w)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), CaptureError> {
        self.w.write_all(bytes).map_err(|source| CaptureError::Io {
            path: self.path.clone(),
            offset: self.offset,
            source,
        })?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// Appends one record: `data` (cut to the snaplen) captured at `ts` (µs since the Unix
    /// epoch, 1970..2106), `wire_len` bytes long on the wire (raised to `data.len()` if
    /// smaller).
    pub fn write(&mut self, ts: Micros, data: &[u8], wire_len: u32) -> Result<(), CaptureError> {
        let sec = u32::try_from(ts.div_euclid(1_000_000)).map_err(|_| CaptureError::Malformed {
            path: self.path.clone(),
            offset: self.offset,
            what: "timestamp outside 1970..2106 cannot be written to classic pcap",
        })?;
        let usec = ts.rem_euclid(1_000_000) as u32;
        let full = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let incl = full.min(self.snaplen);
        let data = data.get(..incl as usize).unwrap_or(data);
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&sec.to_le_bytes());
        h[4..8].copy_from_slice(&usec.to_le_bytes());
        h[8..12].copy_from_slice(&incl.to_le_bytes());
        h[12..16].copy_from_slice(&wire_len.max(full).to_le_bytes());
        self.put(&h)?;
        self.put(data)
    }

    /// Bytes written so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Flushes the file; errors that dropping would hide are reported here.
    pub fn finish(mut self) -> Result<(), CaptureError> {
        self.w.flush().map_err(|source| CaptureError::Io {
            path: self.path.clone(),
            offset: self.offset,
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsresol_decimal_and_binary() {
        assert_eq!(TsConv::from_tsresol(6), Some(TsScale::Micros));
        assert_eq!(TsConv::from_tsresol(9), Some(TsScale::Div(1000)));
        assert_eq!(TsConv::from_tsresol(3), Some(TsScale::Mul(1000)));
        assert_eq!(TsConv::from_tsresol(0), Some(TsScale::Mul(1_000_000)));
        assert_eq!(TsConv::from_tsresol(0x80 | 20), Some(TsScale::Binary(20)));
        assert_eq!(TsConv::from_tsresol(26), None);
        let ns = TsConv {
            scale: TsScale::Div(1000),
            offset_us: 0,
        };
        assert_eq!(ns.micros(1_700_000_000_123_456_789), 1_700_000_000_123_456);
        // 2^-20 s units: 2^20 units are one second; half a second more.
        let bin = TsConv {
            scale: TsScale::Binary(20),
            offset_us: 5_000_000,
        };
        assert_eq!(bin.micros((3 << 20) + (1 << 19)), 8_500_000);
        let ms = TsConv {
            scale: TsScale::Mul(1000),
            offset_us: 0,
        };
        assert_eq!(ms.micros(u64::MAX), i64::MAX);
    }

    #[test]
    fn linktype_names() {
        assert_eq!(linktype_name(105), "IEEE 802.11");
        assert_eq!(linktype_name(127), "IEEE 802.11 radiotap");
        assert_eq!(linktype_name(1), "Ethernet");
        assert_eq!(linktype_name(60000), "unknown");
    }
}
