//! A counting global allocator, shared by the zero-allocation test and the pipeline
//! benchmark: proof that the per-frame path does not allocate. The one place with `unsafe`
//! (implementing `GlobalAlloc` by delegating to the system allocator).
#![allow(unsafe_code)]
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Counts allocations made by threads that switched counting on (the test harness runs
/// other tests, and tiny_http or SQLite may run threads, so counting is per thread).
struct Counting;

static COUNTED: AtomicU64 = AtomicU64::new(0);
/// Count every allocation of every thread but the one that called [`count_other_threads`]
/// (a thread of the engine's own, e.g. the host judge, whose work is per-frame too).
static COUNT_OTHERS: AtomicBool = AtomicBool::new(false);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    /// Set while a backtrace of an allocation is being taken (which itself allocates).
    static TRACING: Cell<bool> = const { Cell::new(false) };
    static FIRST_SITES: Cell<u32> = const { Cell::new(0) };
    /// Allocations may be traced (off for regions allowed to allocate, e.g. flushes).
    static TRACEABLE: Cell<bool> = const { Cell::new(true) };
    /// This thread measures (with `counted`); `COUNT_OTHERS` does not apply to it.
    static MEASURER: Cell<bool> = const { Cell::new(false) };
}

fn note_allocation() {
    let counting = COUNTING.try_with(Cell::get).unwrap_or(false)
        || (COUNT_OTHERS.load(Ordering::Relaxed) && !MEASURER.try_with(Cell::get).unwrap_or(true));
    if !counting {
        return;
    }
    COUNTED.fetch_add(1, Ordering::Relaxed);
    // With PHANTOMNET_ALLOC_TRACE set, print where the first few allocations came from.
    let busy = TRACING.try_with(Cell::get).unwrap_or(true)
        || !TRACEABLE.try_with(Cell::get).unwrap_or(false);
    let shown = FIRST_SITES.try_with(Cell::get).unwrap_or(u32::MAX);
    if !busy && shown < 5 {
        let _ = TRACING.try_with(|t| t.set(true));
        let _ = COUNTING.try_with(|c| c.set(false));
        if std::env::var_os("PHANTOMNET_ALLOC_TRACE").is_some() {
            eprintln!(
                "allocation on the per-frame path:\n{}",
                std::backtrace::Backtrace::force_capture()
            );
        }
        let _ = FIRST_SITES.try_with(|c| c.set(shown + 1));
        let _ = COUNTING.try_with(|c| c.set(true));
        let _ = TRACING.try_with(|t| t.set(false));
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; the bookkeeping above
// touches only atomics and const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` with allocation counting on for this thread; returns what it allocated.
pub fn counted<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let before = COUNTED.load(Ordering::Relaxed);
    COUNTING.with(|c| c.set(true));
    let r = f();
    COUNTING.with(|c| c.set(false));
    (r, COUNTED.load(Ordering::Relaxed) - before)
}

/// Like `counted`, for regions that may allocate (never traced).
pub fn counted_quiet<R>(f: impl FnOnce() -> R) -> (R, u64) {
    TRACEABLE.with(|c| c.set(false));
    let r = counted(f);
    TRACEABLE.with(|c| c.set(true));
    r
}

/// Counts (or stops counting) the allocations of every other thread, whatever it does: for
/// a run where the only other threads are the engine's per-frame ones (a test binary
/// without the test harness's threads).
pub fn count_other_threads(on: bool) {
    MEASURER.with(|m| m.set(true));
    COUNT_OTHERS.store(on, Ordering::SeqCst);
}

/// Allocations counted so far, all threads.
pub fn allocations() -> u64 {
    COUNTED.load(Ordering::SeqCst)
}
