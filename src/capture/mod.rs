//! Frame sources: capture files (pcap, pcapng) and live interfaces (pnet_datalink, or a
//! TPACKET_V3 memory-mapped ring), behind
//! one pull interface so the engine loop does not care where frames come from.

use std::path::Path;

use crate::decode::{LinkType, Micros};

pub mod live;
pub mod pcap;
pub mod ring;

pub use live::{KernelCounts, LiveOptions, LiveSource};
pub use pcap::{PcapReader, PcapWriter, ReadMode};
pub use ring::RingSource;

/// Opens a capture file (pcap or pcapng, found by its magic number) as a frame source.
pub fn open_file(path: &Path) -> Result<Box<dyn FrameSource>, CaptureError> {
    Ok(Box::new(PcapReader::open(path)?))
}

/// Opens a live interface as a frame source (needs CAP_NET_RAW): through a memory-mapped
/// ring when `opts.ring_mb` > 0, else through pnet.
pub fn open_live(iface: &str, opts: &LiveOptions) -> Result<Box<dyn FrameSource>, CaptureError> {
    if opts.ring_mb > 0 {
        return Ok(Box::new(RingSource::open(iface, opts)?));
    }
    Ok(Box::new(LiveSource::open(iface, opts)?))
}

/// One frame borrowed from the source's reused buffer.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    /// Capture timestamp (packet time), microseconds since the Unix epoch.
    pub ts: Micros,
    pub link: LinkType,
    /// Captured bytes.
    pub data: &'a [u8],
    /// Length on the wire (≥ `data.len()` when the capture was truncated by snaplen).
    pub wire_len: u32,
}

/// What a source hands the loop.
#[derive(Debug)]
pub enum Next<'a> {
    Frame(Frame<'a>),
    /// No frame within the read timeout (live only): the current time, so the loop ticks.
    Idle(Micros),
    /// The capture is exhausted.
    End,
}

/// Counters a source keeps about itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// Frames handed out.
    pub frames: u64,
    /// Frames the kernel dropped (live, where known).
    pub kernel_drops: u64,
    /// Frames the kernel offered the capture socket, dropped ones included (live, where
    /// known); `kernel_packets - kernel_drops` were queued for us.
    pub kernel_packets: u64,
}

/// A pull-based source of frames.
pub trait FrameSource {
    /// The next frame, an idle tick, or the end. Errors name the file/interface and where.
    fn next_frame(&mut self) -> Result<Next<'_>, CaptureError>;
    /// What is being watched, for logs and the status page ("eth0", "capture.pcap").
    fn describe(&self) -> &str;
    fn stats(&self) -> SourceStats;
}

/// Capture errors; each names the file or interface and, for files, the byte offset.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{path}: cannot open: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: read error at byte {offset}: {source}")]
    Io {
        path: String,
        offset: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a pcap or pcapng file (magic {magic:#010x} at byte 0)")]
    NotACapture { path: String, magic: u32 },
    #[error("{path}: unsupported link type {linktype} ({name}) at byte {offset}; supported: Ethernet (1), Linux SLL (113), Linux SLL2 (276), raw IP (101, 228, 229), BSD loopback (0, 108)")]
    UnsupportedLinkType {
        path: String,
        linktype: u32,
        name: &'static str,
        offset: u64,
    },
    #[error("{path}: malformed capture at byte {offset}: {what}")]
    Malformed {
        path: String,
        offset: u64,
        what: &'static str,
    },
    #[error("{path}: capture ends in the middle of a record at byte {offset} (truncated file)")]
    Truncated { path: String, offset: u64 },
    #[error("interface {iface}: {what}")]
    Live { iface: String, what: String },
}
