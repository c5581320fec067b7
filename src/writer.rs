//! The database writer thread: writes each tick's [`Batch`] through its own SQLite
//! connection while the packet loop goes on.
//!
//! Why a thread (docs/DECISIONS.md, "The database writer thread"): a commit ends in a WAL
//! append and, every few MB, a checkpoint with fsyncs. On an SD card or a router's flash an
//! fsync can take tens to hundreds of milliseconds, and while the loop waits on it the
//! socket buffer overflows and the kernel drops frames. The loop hands over whole batches
//! and never waits for them, except where nothing may be lost (replay) and 2 × `outbox` rows
//! are already waiting for the next batch. Detection stays in the one loop: nothing the
//! writer does feeds back into verdicts.
//!
//! Checkpoints are handed to a second thread with a connection of its own
//! (`pn-checkpoint`): the writer's commits only append to the WAL, and once the WAL holds
//! [`CHECKPOINT_BYTES`] the writer nudges the checkpointer, which copies them into the
//! database file and fsyncs while the writer goes on. Should the WAL still reach twice that
//! (writes without pause), the writer checkpoints itself, as SQLite would have at every
//! 1000 pages.
//!
//! Exactly one batch is in flight at a time. Batches travel back and forth, so in steady
//! state no buffer is allocated. A batch whose write failed comes back unwritten, with the
//! error; the loop puts the rows it gathered meanwhile behind it and hands it over again on
//! a later tick (the same retry the inline writer does).

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::sched::Policy;
use crate::store::{Batch, Checkpointer, Store};

/// WAL bytes after which the checkpointer is nudged: SQLite's own auto-checkpoint point
/// (1000 pages of its default 4 KiB), whatever the database's page size.
pub const CHECKPOINT_BYTES: i64 = 4000 << 10;

/// WAL pages after which the checkpointer is nudged, for pages of `page_size` bytes. Twice
/// as many make the writer checkpoint itself (about 8 MB): a checkpoint that runs while the
/// writer appends copies all but the newest frames, and the WAL only starts over from its
/// beginning once every frame is copied, so under writes without pause the checkpointer
/// never quite finishes, and this bounds the WAL. The writer's own checkpoint then has
/// little left to copy.
pub fn checkpoint_frames(page_size: i64) -> i64 {
    (CHECKPOINT_BYTES / page_size.max(512)).max(16)
}

/// A batch back from the writer.
#[derive(Debug)]
pub struct Written {
    pub batch: Batch,
    /// `Err` holds the error's text; the batch is then unwritten and unchanged.
    pub result: Result<(), String>,
    /// Time the write took on the writer thread.
    pub took: Duration,
}

/// The writer thread has ended (it can only panic out of its loop).
#[derive(Debug, Clone, Copy)]
pub struct WriterGone;

/// The loop's handle on the writer thread.
#[derive(Debug)]
pub struct Writer {
    to_writer: Option<SyncSender<Batch>>,
    from_writer: Receiver<Written>,
    thread: Option<JoinHandle<()>>,
    /// Rows of the batch being written (0 when idle).
    in_flight: usize,
    /// Batches written, and the time spent writing them (on the writer thread).
    pub writes: u64,
    pub busy: Duration,
    /// Time the loop spent waiting for a batch to be written.
    pub waited: Duration,
    /// Checkpoints run by the checkpoint thread, and by the writer as a backstop.
    checkpoints: Arc<AtomicU64>,
    backstops: Arc<AtomicU64>,
}

/// Stack of the writer thread. SQLite's deepest paths (checkpoint, B-tree rebalancing) use
/// tens of KiB; only touched pages count towards RSS.
const STACK: usize = 512 << 10;

impl Writer {
    /// Moves `store` (a connection of its own, not the loop's) onto a new thread, which
    /// runs (with its checkpoint thread) under `policy`: SCHED_IDLE where the loop waits
    /// for the writer once it is behind (replay), SCHED_BATCH where it must keep up on its
    /// own (live capture; see `crate::sched`).
    pub fn start(mut store: Store, policy: Policy) -> io::Result<Writer> {
        let (to_writer, jobs) = sync_channel::<Batch>(1);
        let (done, from_writer) = sync_channel::<Written>(1);
        let checkpoints = Arc::new(AtomicU64::new(0));
        let backstops = Arc::new(AtomicU64::new(0));
        let (ck_count, bs_count) = (Arc::clone(&checkpoints), Arc::clone(&backstops));
        let checkpointer = match store.hand_off_checkpoints() {
            Ok(c) => c,
            Err(e) => {
                log::warn!("{e}; the writer thread checkpoints on its own");
                None
            }
        };
        let checkpoint_frames = checkpoint_frames(store.page_size().unwrap_or(4096));
        let thread = std::thread::Builder::new()
            .name("pn-writer".into())
            .stack_size(STACK)
            .spawn(move || {
                crate::sched::set_this_thread_or_log(policy);
                // The writer's backstop takes the checkpointer's lock first: SQLite refuses a
                // second checkpoint while one runs, without waiting.
                let checkpointer = checkpointer.map(|c| Arc::new(Mutex::new(c)));
                let started = checkpointer
                    .as_ref()
                    .map(|c| start_checkpointer(Arc::clone(c), ck_count, policy));
                let (nudge, ck_thread) = match started {
                    Some(Ok((n, t))) => (Some(n), Some(t)),
                    Some(Err(e)) => {
                        log::warn!("no checkpoint thread ({e}); the writer checkpoints on its own");
                        (None, None)
                    }
                    None => (None, None),
                };
                while let Ok(batch) = jobs.recv() {
                    let t = Instant::now();
                    let result = store.write(&batch).map_err(|e| e.to_string());
                    let took = t.elapsed();
                    if done
                        .send(Written {
                            batch,
                            result,
                            took,
                        })
                        .is_err()
                    {
                        break;
                    }
                    let frames = store.wal_frames();
                    if frames < checkpoint_frames {
                        continue;
                    }
                    // A full queue means the checkpointer is at work and will see these
                    // frames too.
                    if let Some(n) = &nudge {
                        let _ = n.try_send(());
                    }
                    if nudge.is_none() || frames >= 2 * checkpoint_frames {
                        let _running = checkpointer.as_deref().map(lock);
                        if matches!(store.checkpoint(), Ok(true)) {
                            bs_count.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                drop(nudge);
                if let Some(t) = ck_thread {
                    let _ = t.join();
                }
                crate::stats::log_thread_times();
            })?;
        Ok(Writer {
            to_writer: Some(to_writer),
            from_writer,
            thread: Some(thread),
            in_flight: 0,
            writes: 0,
            busy: Duration::ZERO,
            waited: Duration::ZERO,
            checkpoints,
            backstops,
        })
    }

    /// Checkpoints run so far: (by the checkpoint thread, by the writer as a backstop).
    pub fn checkpoints(&self) -> (u64, u64) {
        (
            self.checkpoints.load(Ordering::Relaxed),
            self.backstops.load(Ordering::Relaxed),
        )
    }

    /// True when no batch is being written.
    pub fn is_idle(&self) -> bool {
        self.in_flight == 0
    }

    /// Rows being written now.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Hands `batch` to the writer. Call only when idle. Gives the batch back (`Some`) if
    /// the thread is gone.
    pub fn send(&mut self, batch: Batch) -> Option<Batch> {
        debug_assert!(self.is_idle());
        let rows = batch.len();
        match &self.to_writer {
            Some(tx) => match tx.send(batch) {
                Ok(()) => {
                    self.in_flight = rows.max(1);
                    None
                }
                Err(e) => Some(e.0),
            },
            None => Some(batch),
        }
    }

    /// The batch in flight, once written: waits for it with `wait`, else only looks.
    /// `Err(WriterGone)` when the thread is gone (it panicked): its batch is lost.
    pub fn poll(&mut self, wait: bool) -> Result<Option<Written>, WriterGone> {
        if self.in_flight == 0 {
            return Ok(None);
        }
        let got = if wait {
            let t = Instant::now();
            let got = self.from_writer.recv().map_err(|_| WriterGone);
            self.waited += t.elapsed();
            got
        } else {
            match self.from_writer.try_recv() {
                Ok(w) => Ok(w),
                Err(TryRecvError::Empty) => return Ok(None),
                Err(TryRecvError::Disconnected) => Err(WriterGone),
            }
        };
        self.in_flight = 0;
        let w = got?;
        self.writes += 1;
        self.busy += w.took;
        Ok(Some(w))
    }
}

/// Starts the checkpoint thread: one passive checkpoint per nudge (nudges that arrive while
/// it works collapse into one). It ends when the writer drops the sender.
fn start_checkpointer(
    ck: Arc<Mutex<Checkpointer>>,
    count: Arc<AtomicU64>,
    policy: Policy,
) -> io::Result<(SyncSender<()>, JoinHandle<()>)> {
    let (nudge, nudges) = sync_channel::<()>(1);
    let thread = std::thread::Builder::new()
        .name("pn-checkpoint".into())
        .stack_size(STACK)
        .spawn(move || {
            crate::sched::set_this_thread_or_log(policy);
            let mut last_error: Option<Instant> = None;
            while nudges.recv().is_ok() {
                let result = lock(&ck).run();
                match result {
                    Ok(_) => {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        // Retried at the next nudge; the WAL keeps every frame meanwhile.
                        if last_error.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                            log::warn!("{e}");
                            last_error = Some(Instant::now());
                        }
                    }
                }
            }
            crate::stats::log_thread_times();
        })?;
    Ok((nudge, thread))
}

/// The checkpointer's lock. A panic while it was held leaves nothing half-done on our side
/// (SQLite's own state is consistent after any error), so a poisoned lock is taken anyway.
fn lock(c: &Mutex<Checkpointer>) -> MutexGuard<'_, Checkpointer> {
    c.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Drop for Writer {
    /// Closes the queue and waits for the batch in flight to be written.
    fn drop(&mut self) {
        self.to_writer = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
