//! Opt-in live capture through a TPACKET_V3 memory-mapped receive ring (`capture.ring`):
//! the kernel packs frames into blocks of memory shared with us, so the loop makes no
//! system call per frame (pnet makes a poll and a recvfrom per frame: about two thirds of
//! PhantomNet's CPU time at 100 k frames/s, README "Performance") and the ring holds
//! megabytes of burst where a socket's receive queue holds a few hundred frames.
//!
//! The crate denies `unsafe`; the exception is the small `sys` module below (socket options,
//! bind, poll, mmap and the blocks' shared status words), recorded in docs/DECISIONS.md.
//! Everything else reads a block we own as a plain byte slice, bounds-checked.
//!
//! Limits: as with pnet, frames whose 802.1Q tag the NIC stripped (VLAN offload) arrive
//! untagged; a frame reaches the loop when its block fills or at most `BLOCK_TIMEOUT_MS`
//! after the block's first frame.

use std::io;
use std::os::fd::AsFd;

use socket2::{Domain, Protocol, Socket, Type};

use super::live::{
    check_timeout, find_interface, is_permission, now_micros, permission_error, Counters,
};
use super::{CaptureError, Frame, FrameSource, LiveOptions, Next, SourceStats};
use crate::decode::{LinkType, Micros};

/// Bytes per block: a multiple of every page size (4, 16 and 64 KiB), with room for a
/// 64 KiB GSO frame.
const BLOCK_SIZE: usize = 256 * 1024;
/// The slot size the kernel checks the ring layout against (V3 packs frames of any length;
/// this only fixes tp_frame_nr). A multiple of TPACKET_ALIGNMENT (16).
const FRAME_SIZE: usize = 2048;
/// The kernel hands a block over when it is full or this long after its first frame.
const BLOCK_TIMEOUT_MS: u32 = 20;
/// Largest ring accepted, MiB (`capture.ring_mb`).
pub const MAX_RING_MB: usize = 1024;

/// tpacket_block_desc: version u32, offset_to_priv u32, then tpacket_hdr_v1 whose
/// block_status, num_pkts and offset_to_first_pkt are these byte offsets.
const BLOCK_STATUS: usize = 8;
const BLOCK_NUM_PKTS: usize = 12;
const BLOCK_FIRST_PKT: usize = 16;
/// tpacket3_hdr fields (byte offsets from the frame's header).
const PKT_NEXT: usize = 0;
const PKT_SEC: usize = 4;
const PKT_NSEC: usize = 8;
const PKT_SNAPLEN: usize = 12;
const PKT_LEN: usize = 16;
const PKT_MAC: usize = 24;
const PKT_HDR_LEN: usize = 48;

/// The only unsafe code of the capture path: thin wrappers over the system calls a
/// TPACKET_V3 ring needs, and the shared mapping.
#[allow(unsafe_code)]
mod sys {
    use std::io;
    use std::os::fd::{AsRawFd, BorrowedFd};
    use std::ptr::NonNull;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::BLOCK_STATUS;

    /// `setsockopt(SOL_PACKET, opt, value)` for a plain-data option value.
    fn set_packet_option<T: Copy>(
        fd: BorrowedFd<'_>,
        opt: libc::c_int,
        value: &T,
    ) -> io::Result<()> {
        // SAFETY: `value` points to a live, initialised `T` (plain data: an int or a C struct
        // from libc) for the duration of the call, and the length passed is its exact size;
        // the kernel only reads it.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                opt,
                std::ptr::from_ref(value).cast::<libc::c_void>(),
                std::mem::size_of::<T>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    pub fn set_version_v3(fd: BorrowedFd<'_>) -> io::Result<()> {
        let v = libc::tpacket_versions::TPACKET_V3 as libc::c_int;
        set_packet_option(fd, libc::PACKET_VERSION, &v)
    }

    pub fn set_rx_ring(fd: BorrowedFd<'_>, req: &libc::tpacket_req3) -> io::Result<()> {
        set_packet_option(fd, libc::PACKET_RX_RING, req)
    }

    pub fn add_promiscuous(fd: BorrowedFd<'_>, ifindex: i32) -> io::Result<()> {
        let mreq = libc::packet_mreq {
            mr_ifindex: ifindex,
            mr_type: libc::PACKET_MR_PROMISC as libc::c_ushort,
            mr_alen: 0,
            mr_address: [0; 8],
        };
        set_packet_option(fd, libc::PACKET_ADD_MEMBERSHIP, &mreq)
    }

    /// Binds to one interface, every protocol (htons(ETH_P_ALL)).
    pub fn bind(fd: BorrowedFd<'_>, ifindex: i32) -> io::Result<()> {
        let sll = libc::sockaddr_ll {
            sll_family: libc::AF_PACKET as libc::c_ushort,
            sll_protocol: (libc::ETH_P_ALL as u16).to_be(),
            sll_ifindex: ifindex,
            sll_hatype: 0,
            sll_pkttype: 0,
            sll_halen: 0,
            sll_addr: [0; 8],
        };
        // SAFETY: `sll` is a live, initialised sockaddr_ll and the length passed is its size;
        // the kernel only reads it during the call.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                std::ptr::from_ref(&sll).cast::<libc::sockaddr>(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Waits up to `timeout_ms` for the socket to become readable; true if it reports an
    /// error or hang-up (e.g. the interface went away).
    pub fn poll_in(fd: BorrowedFd<'_>, timeout_ms: i32) -> io::Result<bool> {
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `p` is one live pollfd and the count passed is 1.
        let rc = unsafe { libc::poll(&mut p, 1, timeout_ms) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(p.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0)
        }
    }

    /// The ring mapped into our memory: `blocks` blocks of `block_size` bytes.
    pub struct Ring {
        base: NonNull<u8>,
        block_size: usize,
        blocks: usize,
    }

    impl Ring {
        /// Maps the ring set up on `fd` with PACKET_RX_RING (block_size × blocks bytes).
        pub fn map(fd: BorrowedFd<'_>, block_size: usize, blocks: usize) -> io::Result<Ring> {
            let len = block_size
                .checked_mul(blocks)
                .ok_or_else(|| io::Error::other("ring size overflows"))?;
            // SAFETY: a fresh shared mapping chosen by the kernel (null hint), of the ring the
            // kernel allocated for `fd`; nothing else in the process aliases it. It is unmapped
            // exactly once, in Drop.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd.as_raw_fd(),
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            let base = NonNull::new(p.cast::<u8>())
                .ok_or_else(|| io::Error::other("mmap returned a null pointer"))?;
            Ok(Ring {
                base,
                block_size,
                blocks,
            })
        }

        /// Block `i`'s status word, which the kernel and we hand the block over with.
        fn status(&self, i: usize) -> &AtomicU32 {
            let i = i % self.blocks;
            // SAFETY: block i (< blocks) starts at i × block_size inside the mapping, which
            // lives as long as `&self`; the status word at byte 8 of the block is 4-byte
            // aligned (the mapping is page aligned, block_size a multiple of the page size).
            // The kernel writes it only to hand a block to us (with a write barrier before),
            // we only to hand it back: the handover protocol of TPACKET rings.
            unsafe {
                AtomicU32::from_ptr(
                    self.base
                        .as_ptr()
                        .add(i * self.block_size + BLOCK_STATUS)
                        .cast(),
                )
            }
        }

        /// Block `i` as bytes, if the kernel has handed it to us.
        pub fn user_block(&self, i: usize) -> Option<&[u8]> {
            let i = i % self.blocks;
            if self.status(i).load(Ordering::Acquire) & libc::TP_STATUS_USER == 0 {
                return None;
            }
            // SAFETY: the block lies inside the mapping, which lives as long as `&self`. While
            // its status has TP_STATUS_USER the kernel does not write to it; we give it back
            // only through `release`, which takes `&mut self`, so no slice from here is alive
            // then.
            Some(unsafe {
                std::slice::from_raw_parts(
                    self.base.as_ptr().add(i * self.block_size),
                    self.block_size,
                )
            })
        }

        /// Hands block `i` back to the kernel.
        pub fn release(&mut self, i: usize) {
            self.status(i)
                .store(libc::TP_STATUS_KERNEL, Ordering::Release);
        }
    }

    impl Drop for Ring {
        fn drop(&mut self) {
            // SAFETY: the mapping made in `map`, of this length, unmapped only here; no slice
            // into it can outlive `self`.
            unsafe {
                libc::munmap(
                    self.base.as_ptr().cast::<libc::c_void>(),
                    self.block_size * self.blocks,
                );
            }
        }
    }
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    let bytes = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_ne_bytes(bytes.try_into().ok()?))
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    let bytes = b.get(off..off.checked_add(2)?)?;
    Some(u16::from_ne_bytes(bytes.try_into().ok()?))
}

/// A block's frame count and the offset of its first frame header.
fn block_header(b: &[u8]) -> Option<(u32, usize)> {
    let n = u32_at(b, BLOCK_NUM_PKTS)?;
    let first = usize::try_from(u32_at(b, BLOCK_FIRST_PKT)?).ok()?;
    Some((n, first))
}

/// One frame in a block: where its bytes are and where the next header is.
#[derive(Debug, PartialEq, Eq)]
struct Packet {
    /// Offset of the next frame header from this one (0 on the block's last frame).
    next: usize,
    ts: Micros,
    start: usize,
    end: usize,
    wire_len: u32,
}

/// The frame whose tpacket3_hdr starts at `off` in block `b` (None if it does not fit).
fn packet_at(b: &[u8], off: usize) -> Option<Packet> {
    let hdr = b.get(off..off.checked_add(PKT_HDR_LEN)?)?;
    let snap = usize::try_from(u32_at(hdr, PKT_SNAPLEN)?).ok()?;
    let start = off.checked_add(usize::from(u16_at(hdr, PKT_MAC)?))?;
    let end = start.checked_add(snap)?;
    if end > b.len() {
        return None;
    }
    let ts =
        i64::from(u32_at(hdr, PKT_SEC)?) * 1_000_000 + i64::from(u32_at(hdr, PKT_NSEC)?) / 1_000;
    Some(Packet {
        next: usize::try_from(u32_at(hdr, PKT_NEXT)?).ok()?,
        ts,
        start,
        end,
        wire_len: u32_at(hdr, PKT_LEN)?,
    })
}

/// Frames from a live interface through a TPACKET_V3 ring (see the module documentation).
pub struct RingSource {
    name: String,
    // Declared before `sock`: unmapped before the socket closes.
    ring: sys::Ring,
    sock: Socket,
    blocks: usize,
    /// The block being read, or the next one the kernel will hand over.
    block: usize,
    /// `block` is ours (TP_STATUS_USER) and not yet given back.
    held: bool,
    /// Frames of the held block not yet handed out, and where the next one's header is.
    left: u32,
    next: usize,
    timeout_ms: i32,
    stats: SourceStats,
    kernel: Counters,
    promiscuous: bool,
}

impl std::fmt::Debug for RingSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingSource")
            .field("name", &self.name)
            .field("blocks", &self.blocks)
            .field("stats", &self.stats)
            .field("promiscuous", &self.promiscuous)
            .finish()
    }
}

impl RingSource {
    /// Opens `iface` with a ring of `opts.ring_mb` MiB. Errors as `LiveSource::open`, plus
    /// a ring size out of range or one the kernel refuses (it names `capture.ring_mb`).
    pub fn open(iface: &str, opts: &LiveOptions) -> Result<RingSource, CaptureError> {
        check_timeout(iface, opts.read_timeout)?;
        let err = |what: String| CaptureError::Live {
            iface: iface.to_string(),
            what,
        };
        if !(1..=MAX_RING_MB).contains(&opts.ring_mb) {
            return Err(err(format!(
                "ring of {} MiB is out of range (capture.ring_mb: 1 ..= {MAX_RING_MB})",
                opts.ring_mb
            )));
        }
        let ni = find_interface(iface)?;
        let ifindex = i32::try_from(ni.index)
            .map_err(|_| err(format!("interface index {} out of range", ni.index)))?;
        // Protocol 0: nothing is queued until the bind below names the interface.
        let sock =
            Socket::new(Domain::PACKET, Type::RAW, Some(Protocol::from(0))).map_err(|e| {
                if is_permission(&e) {
                    permission_error(iface, &e)
                } else {
                    err(format!("cannot open a capture socket: {e}"))
                }
            })?;
        sys::set_version_v3(sock.as_fd())
            .map_err(|e| err(format!("cannot select TPACKET_V3 (needs Linux 3.2): {e}")))?;
        let blocks = opts.ring_mb * (1 << 20) / BLOCK_SIZE;
        let req = libc::tpacket_req3 {
            tp_block_size: BLOCK_SIZE as u32,
            tp_block_nr: blocks as u32,
            tp_frame_size: FRAME_SIZE as u32,
            tp_frame_nr: (blocks * (BLOCK_SIZE / FRAME_SIZE)) as u32,
            tp_retire_blk_tov: BLOCK_TIMEOUT_MS,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        sys::set_rx_ring(sock.as_fd(), &req).map_err(|e| {
            err(format!(
                "cannot set up a {} MiB receive ring (capture.ring_mb): {e}",
                opts.ring_mb
            ))
        })?;
        let ring = sys::Ring::map(sock.as_fd(), BLOCK_SIZE, blocks)
            .map_err(|e| err(format!("cannot map the receive ring: {e}")))?;
        sys::bind(sock.as_fd(), ifindex)
            .map_err(|e| err(format!("cannot bind the capture socket: {e}")))?;
        let mut promiscuous = opts.promiscuous;
        if promiscuous {
            if let Err(e) = sys::add_promiscuous(sock.as_fd(), ifindex) {
                if is_permission(&e) {
                    return Err(permission_error(iface, &e));
                }
                log::warn!(
                    "interface {iface}: promiscuous mode refused ({e}); capturing without it \
                     (only frames to, from or broadcast past this host)"
                );
                promiscuous = false;
            }
        }
        let src = RingSource {
            name: iface.to_string(),
            ring,
            sock,
            blocks,
            block: 0,
            held: false,
            left: 0,
            next: 0,
            timeout_ms: i32::try_from(opts.read_timeout.as_millis()).unwrap_or(i32::MAX),
            stats: SourceStats::default(),
            kernel: Counters::default(),
            promiscuous,
        };
        src.kernel.start(iface, src.sock.as_fd());
        log::info!(
            "interface {iface}: TPACKET_V3 ring of {} blocks × {} KiB",
            blocks,
            BLOCK_SIZE / 1024
        );
        Ok(src)
    }

    /// Whether the interface is in promiscuous mode (false after a refusal).
    pub fn promiscuous(&self) -> bool {
        self.promiscuous
    }

    fn malformed(&self, what: &str) -> CaptureError {
        CaptureError::Live {
            iface: self.name.clone(),
            what: format!(
                "malformed ring block {} ({what}, frame offset {})",
                self.block, self.next
            ),
        }
    }
}

impl Drop for RingSource {
    fn drop(&mut self) {
        self.kernel
            .log_totals(&self.name, self.stats.frames, Some(self.sock.as_fd()));
    }
}

impl FrameSource for RingSource {
    fn next_frame(&mut self) -> Result<Next<'_>, CaptureError> {
        let mut polled = false;
        loop {
            if self.held {
                if self.left > 0 {
                    break;
                }
                self.ring.release(self.block);
                self.held = false;
                self.block = (self.block + 1) % self.blocks;
            }
            if let Some(b) = self.ring.user_block(self.block) {
                let (n, first) = block_header(b).ok_or_else(|| self.malformed("header"))?;
                self.held = true;
                self.left = n;
                self.next = first;
                continue;
            }
            if polled {
                return Ok(Next::Idle(now_micros()));
            }
            match sys::poll_in(self.sock.as_fd(), self.timeout_ms) {
                Ok(false) => polled = true,
                // As a failed recvfrom ends pnet's capture: the service manager restarts us.
                Ok(true) => {
                    let what = match self.sock.take_error() {
                        Ok(Some(e)) => format!("receive failed: {e}"),
                        Ok(None) => "receive failed: the socket hung up".to_string(),
                        Err(e) => format!("receive failed: {e}"),
                    };
                    return Err(CaptureError::Live {
                        iface: self.name.clone(),
                        what,
                    });
                }
                // A signal (SIGINT/SIGHUP): let the loop tick.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    return Ok(Next::Idle(now_micros()))
                }
                Err(e) => {
                    return Err(CaptureError::Live {
                        iface: self.name.clone(),
                        what: format!("poll failed: {e}"),
                    })
                }
            }
        }
        let Some(b) = self.ring.user_block(self.block) else {
            return Err(self.malformed("taken back by the kernel"));
        };
        let Some(p) = packet_at(b, self.next) else {
            return Err(self.malformed("frame beyond the block"));
        };
        self.left -= 1;
        if self.left > 0 && p.next == 0 {
            return Err(self.malformed("no next frame"));
        }
        self.next += p.next;
        self.stats.frames += 1;
        Ok(Next::Frame(Frame {
            ts: p.ts,
            link: LinkType::Ethernet,
            data: &b[p.start..p.end],
            wire_len: p.wire_len,
        }))
    }

    fn describe(&self) -> &str {
        &self.name
    }

    /// Reads the kernel's counters (one getsockopt; the loop calls this on ticks).
    fn stats(&self) -> SourceStats {
        let k = self.kernel.on_tick(&self.name, Some(self.sock.as_fd()));
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
    use std::time::Duration;

    /// A block laid out as the kernel writes it: frames (header, 2 bytes of padding to the
    /// MAC offset, data) at 16-byte-aligned offsets.
    fn block(frames: &[(&[u8], u32, u32)]) -> Vec<u8> {
        let mut b = vec![0u8; 4096];
        b[BLOCK_NUM_PKTS..BLOCK_NUM_PKTS + 4].copy_from_slice(&(frames.len() as u32).to_ne_bytes());
        let first = 48usize;
        b[BLOCK_FIRST_PKT..BLOCK_FIRST_PKT + 4].copy_from_slice(&(first as u32).to_ne_bytes());
        let mut off = first;
        for (i, (data, sec, nsec)) in frames.iter().enumerate() {
            let mac = PKT_HDR_LEN + 2;
            let len = (mac + data.len()).div_ceil(16) * 16;
            let next = if i + 1 == frames.len() { 0 } else { len as u32 };
            let put = |b: &mut Vec<u8>, at: usize, v: u32| {
                b[off + at..off + at + 4].copy_from_slice(&v.to_ne_bytes())
            };
            put(&mut b, PKT_NEXT, next);
            put(&mut b, PKT_SEC, *sec);
            put(&mut b, PKT_NSEC, *nsec);
            put(&mut b, PKT_SNAPLEN, data.len() as u32);
            put(&mut b, PKT_LEN, data.len() as u32 + 100);
            b[off + PKT_MAC..off + PKT_MAC + 2].copy_from_slice(&(mac as u16).to_ne_bytes());
            b[off + mac..off + mac + data.len()].copy_from_slice(data);
            off += len;
        }
        b
    }

    #[test]
    fn frames_are_walked_through_a_block() {
        let b = block(&[(&[1, 2, 3], 1_700_000_000, 123_456_789), (&[9; 60], 5, 999)]);
        let (n, first) = block_header(&b).unwrap();
        assert_eq!((n, first), (2, 48));
        let p = packet_at(&b, first).unwrap();
        assert_eq!(&b[p.start..p.end], &[1, 2, 3]);
        assert_eq!(p.ts, 1_700_000_000_123_456);
        assert_eq!(p.wire_len, 103);
        assert_eq!(p.next, 64);
        let q = packet_at(&b, first + p.next).unwrap();
        assert_eq!(&b[q.start..q.end], &[9; 60]);
        assert_eq!(q.ts, 5_000_000);
        assert_eq!(q.wire_len, 160);
        assert_eq!(q.next, 0);
    }

    #[test]
    fn frames_that_do_not_fit_the_block_are_refused() {
        let mut b = block(&[(&[7; 40], 1, 0)]);
        // Snap length beyond the block's end.
        b[48 + PKT_SNAPLEN..48 + PKT_SNAPLEN + 4].copy_from_slice(&5000u32.to_ne_bytes());
        assert_eq!(packet_at(&b, 48), None);
        // A header that starts too close to the end.
        assert_eq!(packet_at(&b, b.len() - 20), None);
        assert_eq!(packet_at(&b, usize::MAX - 2), None);
        assert_eq!(block_header(&b[..10]), None);
    }

    #[test]
    fn ring_size_is_checked() {
        for mb in [0, MAX_RING_MB + 1] {
            let opts = LiveOptions {
                ring_mb: mb,
                ..LiveOptions::default()
            };
            let e = RingSource::open("lo", &opts)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains("capture.ring_mb: 1 ..= 1024"), "{e}");
        }
        let opts = LiveOptions {
            ring_mb: 1,
            read_timeout: Duration::ZERO,
            ..LiveOptions::default()
        };
        let e = RingSource::open("lo", &opts)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("shorter than 1 ms"), "{e}");
    }

    #[test]
    fn a_real_ring_opens_ticks_and_counts() {
        // Needs CAP_NET_RAW; tests/live.rs runs the ring against real traffic in namespaces.
        let opts = LiveOptions {
            ring_mb: 1,
            promiscuous: false,
            read_timeout: Duration::from_millis(5),
            ..LiveOptions::default()
        };
        let mut src = match RingSource::open("lo", &opts) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("skipped: cannot open a capture ring on lo ({e})");
                return;
            }
        };
        assert_eq!(src.blocks, 4);
        for _ in 0..3 {
            match src.next_frame() {
                Ok(Next::Frame(f)) => assert!(f.wire_len as usize >= f.data.len()),
                Ok(Next::Idle(_)) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        let st = src.stats();
        assert!(st.kernel_drops <= st.kernel_packets);
        assert!(!src.kernel.failed());
        assert_eq!(src.describe(), "lo");
    }
}
