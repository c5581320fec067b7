//! Live capture from a network interface through pnet_datalink's Layer-2 (AF_PACKET on
//! Linux) channel: frames stamped with the wall clock at receive, and an idle tick on every
//! read timeout so the engine keeps its clock moving while the link is quiet.
//!
//! We open the AF_PACKET socket ourselves and hand pnet its descriptor, keeping a duplicate
//! to read the kernel's counters (PACKET_STATISTICS) whenever the loop asks for `stats()`,
//! which it does on ticks, not per frame. That read (`packet_statistics`, shared with the
//! ring) is one of the crate's two `unsafe` exceptions (docs/DECISIONS.md).
//!
//! Limits that come from pnet_datalink:
//! - one poll and one recvfrom per frame, and a receive queue of rmem_default (a few hundred
//!   frames): `capture.ring` swaps in the TPACKET_V3 ring of `super::ring` instead;
//! - frames longer than the read buffer are cut to it without notice (no MSG_TRUNC), so
//!   `wire_len` is the captured length; the default buffer holds a 64 KiB GSO frame;
//! - no PACKET_AUXDATA either: where the NIC strips 802.1Q tags (VLAN offload), frames
//!   arrive untagged;
//! - a receive error other than a timeout or an interrupted call (e.g. the interface went
//!   away) ends the capture with `CaptureError::Live`; the service manager restarts us.

use std::cell::Cell;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pnet_datalink::{Channel, Config, DataLinkReceiver, NetworkInterface};
use socket2::{Domain, Protocol, Socket, Type};

use super::{CaptureError, Frame, FrameSource, Next, SourceStats};
use crate::decode::{LinkType, Micros};

/// How to open an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveOptions {
    /// See every frame on the segment, not only those to and from this host. When the
    /// kernel refuses, capture goes on without it (with a warning).
    pub promiscuous: bool,
    /// Longest wait for a frame before the source hands the loop `Next::Idle(now)`.
    /// At least 1 ms.
    pub read_timeout: Duration,
    /// Receive buffer: the longest frame kept whole.
    pub read_buffer_size: usize,
    /// pnet's send buffer (allocated by pnet, unused by PhantomNet, so small).
    pub write_buffer_size: usize,
    /// Size of a TPACKET_V3 memory-mapped receive ring in MiB (`capture.ring_mb`), or 0 to
    /// read through pnet, one poll and recvfrom per frame. See `super::ring`.
    pub ring_mb: usize,
}

impl Default for LiveOptions {
    fn default() -> Self {
        LiveOptions {
            promiscuous: true,
            read_timeout: Duration::from_millis(200),
            // 64 KiB GSO/GRO super-frames plus link headers.
            read_buffer_size: 65_536 + 256,
            write_buffer_size: 256,
            ring_mb: 0,
        }
    }
}

/// Frames from a live interface. See the module documentation for what it cannot count.
pub struct LiveSource {
    name: String,
    rx: Box<dyn DataLinkReceiver>,
    stats: SourceStats,
    promiscuous: bool,
    /// A duplicate of the descriptor pnet reads from, for PACKET_STATISTICS (None for an
    /// injected receiver).
    counters: Option<Socket>,
    kernel: Counters,
}

impl std::fmt::Debug for LiveSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSource")
            .field("name", &self.name)
            .field("stats", &self.stats)
            .field("promiscuous", &self.promiscuous)
            .finish()
    }
}

/// Kernel counters of one socket, summed over reads (the kernel resets them on each read).
#[derive(Debug, Default)]
pub(super) struct Counters {
    sum: Cell<KernelCounts>,
    /// A read failed once: warned, not read again.
    failed: Cell<bool>,
}

impl Counters {
    /// Reads the kernel's counters and returns the sums so far.
    pub(super) fn read(&self, fd: BorrowedFd<'_>) -> io::Result<KernelCounts> {
        let sum = self.sum.get().add(packet_statistics(fd)?);
        self.sum.set(sum);
        Ok(sum)
    }

    /// At start-up: checks that the counters can be read (warns if not) and starts them
    /// from zero.
    pub(super) fn start(&self, iface: &str, fd: BorrowedFd<'_>) {
        if let Err(e) = packet_statistics(fd) {
            log::warn!(
                "interface {iface}: kernel drop counts unavailable (PACKET_STATISTICS: {e})"
            );
            self.failed.set(true);
        }
    }

    /// For `FrameSource::stats` (ticks, not per frame): reads unless a read failed before,
    /// warning once; the sums so far.
    pub(super) fn on_tick(&self, iface: &str, fd: Option<BorrowedFd<'_>>) -> KernelCounts {
        if let (Some(fd), false) = (fd, self.failed.get()) {
            if let Err(e) = self.read(fd) {
                log::warn!(
                    "interface {iface}: kernel drop counts unavailable from now on (PACKET_STATISTICS: {e})"
                );
                self.failed.set(true);
            }
        }
        self.sum.get()
    }

    /// When a source closes: one log line with its totals (the run's last word on drops).
    pub(super) fn log_totals(&self, iface: &str, frames: u64, fd: Option<BorrowedFd<'_>>) {
        let k = self.on_tick(iface, fd);
        if self.failed.get() {
            log::info!("interface {iface}: {frames} frames captured; kernel drops unknown");
            return;
        }
        let share = if k.packets > 0 {
            100.0 * k.drops as f64 / k.packets as f64
        } else {
            0.0
        };
        log::info!(
            "interface {iface}: {frames} frames captured; the kernel offered {} and dropped {} ({share:.2}%)",
            k.packets,
            k.drops
        );
    }

    #[cfg(test)]
    pub(super) fn failed(&self) -> bool {
        self.failed.get()
    }
}

/// The kernel's per-socket counters, summed since the socket was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelCounts {
    /// Frames the socket was offered (queued plus dropped).
    pub packets: u64,
    /// Frames dropped because the socket's receive queue was full.
    pub drops: u64,
}

impl KernelCounts {
    /// Adds one PACKET_STATISTICS read (frames offered, frames dropped).
    pub(super) fn add(self, (packets, drops): (u32, u32)) -> KernelCounts {
        // tp_packets already includes tp_drops (net/packet/af_packet.c, packet_getsockopt).
        KernelCounts {
            packets: self.packets + u64::from(packets),
            drops: self.drops + u64::from(drops),
        }
    }
}

/// Reads and resets the kernel's counters of an AF_PACKET socket
/// (`getsockopt(SOL_PACKET, PACKET_STATISTICS)`): (frames offered, frames dropped). A
/// TPACKET_V3 ring socket answers with the longer tpacket_stats_v3, others with
/// tpacket_stats; both start with those two fields.
#[allow(unsafe_code)]
pub(super) fn packet_statistics(fd: BorrowedFd<'_>) -> io::Result<(u32, u32)> {
    let mut st = libc::tpacket_stats_v3 {
        tp_packets: 0,
        tp_drops: 0,
        tp_freeze_q_cnt: 0,
    };
    let mut len = std::mem::size_of::<libc::tpacket_stats_v3>() as libc::socklen_t;
    // SAFETY: `fd` is an open descriptor for the borrow's lifetime; `st` is a live, writable
    // tpacket_stats_v3 and `len` its exact size, so the kernel writes at most `len` bytes
    // into it and stores the written length in `len`; neither pointer is kept past the call.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            std::ptr::addr_of_mut!(st).cast::<libc::c_void>(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if (len as usize) < std::mem::size_of::<libc::tpacket_stats>() {
        return Err(io::Error::other(format!(
            "PACKET_STATISTICS returned {len} bytes, expected at least {}",
            std::mem::size_of::<libc::tpacket_stats>()
        )));
    }
    Ok((st.tp_packets, st.tp_drops))
}

/// Wall-clock time in microseconds since the Unix epoch (0 if the clock is before 1970).
pub(super) fn now_micros() -> Micros {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A raw AF_PACKET socket that receives nothing until bound. pnet opens its own with
/// htons(ETH_P_ALL), which takes frames from every interface until its bind narrows it to
/// one; with protocol 0 the kernel hooks the socket up only at bind, where pnet passes
/// htons(ETH_P_ALL) and the interface, so no stray frame from another interface is queued.
fn packet_socket() -> io::Result<Socket> {
    Socket::new(Domain::PACKET, Type::RAW, Some(Protocol::from(0)))
}

/// Opens our own socket, hands pnet its descriptor (pnet binds it to the interface, sets
/// promiscuous mode and owns and closes it) and keeps a duplicate for the counters.
fn open_channel(
    iface: &NetworkInterface,
    config: Config,
) -> io::Result<(Box<dyn DataLinkReceiver>, Socket)> {
    let sock = packet_socket()?;
    let counters = sock.try_clone()?;
    let config = Config {
        socket_fd: Some(sock.into_raw_fd()),
        ..config
    };
    // From here pnet owns that descriptor: it closes it on every error path, and the
    // receiver closes it on drop.
    match pnet_datalink::channel(iface, config)? {
        Channel::Ethernet(_tx, rx) => Ok((rx, counters)),
        _ => Err(io::Error::other(
            "pnet returned a channel that is not Layer 2",
        )),
    }
}

pub(super) fn is_permission(e: &io::Error) -> bool {
    // EPERM and EACCES both map to PermissionDenied.
    e.kind() == io::ErrorKind::PermissionDenied
}

pub(super) fn permission_error(iface: &str, e: &io::Error) -> CaptureError {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "/path/to/phantomnet".to_string());
    CaptureError::Live {
        iface: iface.to_string(),
        what: format!(
            "cannot open a raw capture socket ({e}): live capture needs CAP_NET_RAW; \
             run as root, or grant it once with `setcap cap_net_raw,cap_net_admin+eip {exe}`"
        ),
    }
}

/// The interface named `iface`; the error lists the available ones.
pub(super) fn find_interface(iface: &str) -> Result<NetworkInterface, CaptureError> {
    let mut all = pnet_datalink::interfaces();
    match all.iter().position(|i| i.name == iface) {
        Some(i) => Ok(all.swap_remove(i)),
        None => {
            let mut names: Vec<&str> = all.iter().map(|i| i.name.as_str()).collect();
            names.sort_unstable();
            Err(CaptureError::Live {
                iface: iface.to_string(),
                what: format!(
                    "no such interface; available: {}",
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                ),
            })
        }
    }
}

/// Checks the read timeout the loop relies on to tick.
pub(super) fn check_timeout(iface: &str, timeout: Duration) -> Result<(), CaptureError> {
    if timeout < Duration::from_millis(1) {
        return Err(CaptureError::Live {
            iface: iface.to_string(),
            what: format!("read timeout {timeout:?} is shorter than 1 ms (the loop would spin)"),
        });
    }
    Ok(())
}

impl LiveSource {
    /// Opens `iface` for Layer-2 capture. Errors: unknown interface (the message lists the
    /// available ones), missing CAP_NET_RAW (the message says how to grant it), or any
    /// other socket error. If promiscuous mode is refused (e.g. os error 92 under
    /// qemu-user), logs a warning and captures without it.
    pub fn open(iface: &str, opts: &LiveOptions) -> Result<LiveSource, CaptureError> {
        check_timeout(iface, opts.read_timeout)?;
        let ni = &find_interface(iface)?;
        let config = Config {
            read_buffer_size: opts.read_buffer_size.max(64),
            write_buffer_size: opts.write_buffer_size.max(1),
            read_timeout: Some(opts.read_timeout),
            promiscuous: opts.promiscuous,
            ..Config::default()
        };
        let mut promiscuous = opts.promiscuous;
        let (rx, counters) = match open_channel(ni, config) {
            Ok(c) => c,
            Err(e) if is_permission(&e) => return Err(permission_error(iface, &e)),
            Err(e) if promiscuous => {
                log::warn!(
                    "interface {iface}: promiscuous mode refused ({e}); capturing without it \
                     (only frames to, from or broadcast past this host)"
                );
                promiscuous = false;
                let config = Config {
                    promiscuous: false,
                    ..config
                };
                open_channel(ni, config).map_err(|e| {
                    if is_permission(&e) {
                        permission_error(iface, &e)
                    } else {
                        CaptureError::Live {
                            iface: iface.to_string(),
                            what: format!("cannot open a capture socket: {e}"),
                        }
                    }
                })?
            }
            Err(e) => {
                return Err(CaptureError::Live {
                    iface: iface.to_string(),
                    what: format!("cannot open a capture socket: {e}"),
                })
            }
        };
        let mut src = LiveSource::from_receiver(iface, rx, promiscuous);
        src.kernel.start(iface, counters.as_fd());
        src.counters = Some(counters);
        Ok(src)
    }

    /// Wraps an already open receiver (tests feed fake frames this way).
    pub fn from_receiver(
        name: &str,
        rx: Box<dyn DataLinkReceiver>,
        promiscuous: bool,
    ) -> LiveSource {
        LiveSource {
            name: name.to_string(),
            rx,
            stats: SourceStats::default(),
            promiscuous,
            counters: None,
            kernel: Counters::default(),
        }
    }

    /// Reads the kernel's counters now and returns the sums since the socket was opened
    /// (all zero for an injected receiver). One getsockopt call: for ticks, not per frame.
    pub fn kernel_counts(&self) -> io::Result<KernelCounts> {
        match &self.counters {
            Some(sock) => self.kernel.read(sock.as_fd()),
            None => Ok(KernelCounts::default()),
        }
    }

    /// Whether the interface is in promiscuous mode (false after a refusal).
    pub fn promiscuous(&self) -> bool {
        self.promiscuous
    }
}

impl Drop for LiveSource {
    fn drop(&mut self) {
        if let Some(sock) = &self.counters {
            self.kernel
                .log_totals(&self.name, self.stats.frames, Some(sock.as_fd()));
        }
    }
}

impl FrameSource for LiveSource {
    fn next_frame(&mut self) -> Result<Next<'_>, CaptureError> {
        let LiveSource {
            name, rx, stats, ..
        } = self;
        match rx.next() {
            Ok(data) => {
                stats.frames += 1;
                Ok(Next::Frame(Frame {
                    ts: now_micros(),
                    link: LinkType::Ethernet,
                    wire_len: u32::try_from(data.len()).unwrap_or(u32::MAX),
                    data,
                }))
            }
            // A quiet link, or a signal arrived (SIGINT/SIGHUP): let the loop tick.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                        | io::ErrorKind::WouldBlock
                ) =>
            {
                Ok(Next::Idle(now_micros()))
            }
            Err(e) => Err(CaptureError::Live {
                iface: name.clone(),
                what: format!("receive failed: {e}"),
            }),
        }
    }

    fn describe(&self) -> &str {
        &self.name
    }

    /// Reads the kernel's counters (one getsockopt: call it on ticks, not per frame). If they
    /// cannot be read, warns once and reports what was summed so far.
    fn stats(&self) -> SourceStats {
        let k = self
            .kernel
            .on_tick(&self.name, self.counters.as_ref().map(|s| s.as_fd()));
        SourceStats {
            kernel_drops: k.drops,
            kernel_packets: k.packets,
            ..self.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// Replays scripted receive results, like bandwhich's fake input.
    struct FakeRx {
        script: VecDeque<io::Result<Vec<u8>>>,
        current: Vec<u8>,
    }

    impl DataLinkReceiver for FakeRx {
        fn next(&mut self) -> io::Result<&[u8]> {
            match self.script.pop_front() {
                Some(Ok(v)) => {
                    self.current = v;
                    Ok(&self.current)
                }
                Some(Err(e)) => Err(e),
                None => Err(io::Error::from_raw_os_error(19)),
            }
        }
    }

    #[test]
    fn frames_idle_ticks_and_fatal_errors() {
        let script = VecDeque::from(vec![
            Ok(vec![1, 2, 3, 4]),
            Err(io::Error::new(io::ErrorKind::TimedOut, "Timed out")),
            Err(io::Error::from(io::ErrorKind::Interrupted)),
            Ok(vec![9; 60]),
        ]);
        let rx = FakeRx {
            script,
            current: Vec::new(),
        };
        let mut src = LiveSource::from_receiver("fake0", Box::new(rx), true);
        let before = now_micros();
        match src.next_frame() {
            Ok(Next::Frame(f)) => {
                assert_eq!(f.data, &[1, 2, 3, 4]);
                assert_eq!(f.wire_len, 4);
                assert_eq!(f.link, LinkType::Ethernet);
                assert!(f.ts >= before && f.ts <= now_micros());
            }
            other => panic!("expected a frame, got {other:?}"),
        }
        assert!(matches!(src.next_frame(), Ok(Next::Idle(t)) if t >= before));
        assert!(matches!(src.next_frame(), Ok(Next::Idle(_))));
        assert!(matches!(src.next_frame(), Ok(Next::Frame(f)) if f.data.len() == 60));
        let err = src
            .next_frame()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.starts_with("interface fake0: receive failed"), "{err}");
        assert_eq!(src.stats().frames, 2);
        assert_eq!(src.stats().kernel_drops, 0);
        assert_eq!(src.describe(), "fake0");
    }

    #[test]
    fn unknown_interface_lists_the_available_ones() {
        let err = LiveSource::open("no-such-if0", &LiveOptions::default())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.starts_with("interface no-such-if0: no such interface; available: "),
            "{err}"
        );
        assert!(err.contains("lo"), "loopback should be listed: {err}");
    }

    #[test]
    fn zero_timeout_is_refused() {
        let opts = LiveOptions {
            read_timeout: Duration::ZERO,
            ..LiveOptions::default()
        };
        let err = LiveSource::open("lo", &opts)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("shorter than 1 ms"), "{err}");
    }

    #[test]
    fn kernel_counters_are_read_from_a_real_socket() {
        // Opening a capture socket needs CAP_NET_RAW; tests/live.rs checks the counts
        // against a flood (in namespaces of its own).
        let mut src = match LiveSource::open(
            "lo",
            &LiveOptions {
                promiscuous: false,
                ..LiveOptions::default()
            },
        ) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("skipped: cannot open a capture socket on lo ({e})");
                return;
            }
        };
        assert!(src.counters.is_some());
        let first = src.kernel_counts().unwrap();
        let second = src.kernel_counts().unwrap();
        // Sums only grow; drops are a part of what the kernel offered.
        assert!(second.packets >= first.packets && second.drops >= first.drops);
        assert!(second.drops <= second.packets);
        // Reading through the trait neither fails nor stops the counters.
        let _ = src.stats();
        assert!(!src.kernel.failed());
        let _ = src.next_frame().unwrap();
    }

    #[test]
    fn fake_receivers_report_zero_kernel_counts() {
        let rx = FakeRx {
            script: VecDeque::new(),
            current: Vec::new(),
        };
        let src = LiveSource::from_receiver("fake0", Box::new(rx), true);
        assert_eq!(src.kernel_counts().unwrap(), KernelCounts::default());
        assert_eq!(src.stats(), SourceStats::default());
    }

    #[test]
    fn kernel_counts_add_up() {
        let k = KernelCounts::default()
            .add((10, 3))
            .add((u32::MAX, u32::MAX));
        assert_eq!(k.packets, 10 + u64::from(u32::MAX));
        assert_eq!(k.drops, 3 + u64::from(u32::MAX));
    }

    #[test]
    fn permission_message_says_how_to_grant_it() {
        let e = io::Error::from_raw_os_error(1);
        assert!(is_permission(&e));
        assert!(is_permission(&io::Error::from_raw_os_error(13)));
        assert!(!is_permission(&io::Error::from_raw_os_error(92)));
        let msg = permission_error("eth0", &e).to_string();
        assert!(msg.starts_with("interface eth0: "), "{msg}");
        assert!(msg.contains("CAP_NET_RAW"), "{msg}");
        assert!(
            msg.contains("setcap cap_net_raw,cap_net_admin+eip "),
            "{msg}"
        );
    }
}
