//! The helper threads (database writer, WAL checkpointer, host judge) run under Linux's
//! SCHED_BATCH policy: the same fair share of the CPU as any thread, but a helper that
//! wakes up does not preempt the thread running on that core. On two cores the packet loop
//! was being preempted by a helper just woken on its core, up to a couple of thousand times
//! a second (the judge wakes for every batch of host events), and the loop is what the
//! wall time of a replay and the drops of a live capture depend on. Helpers still get
//! their share, so nothing starves (SCHED_IDLE would risk that on a busy router).
//! docs/DECISIONS.md has the measurements ("Fifth `unsafe` exception").

use std::io;

/// Puts the calling thread under SCHED_BATCH (a no-op where there is no such policy).
pub fn batch_this_thread() -> io::Result<()> {
    sys::batch_this_thread()
}

/// Calls `batch_this_thread` and logs (debug) if the kernel refused.
pub fn batch_this_thread_or_log() {
    if let Err(e) = batch_this_thread() {
        let name = std::thread::current().name().unwrap_or("?").to_string();
        log::debug!("{name}: cannot set SCHED_BATCH ({e}); it keeps the default policy");
    }
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod sys {
    use std::io;

    /// The kernel's `struct sched_param` (a lone `int`). Declared here because the raw system
    /// call is used: musl's `sched_setscheduler` always fails with ENOSYS (the call is
    /// per-thread on Linux, which POSIX does not allow for), and release builds use musl.
    #[repr(C)]
    struct SchedParam {
        priority: libc::c_int,
    }

    pub fn batch_this_thread() -> io::Result<()> {
        let param = SchedParam { priority: 0 };
        // SAFETY: sched_setscheduler(0 = the calling thread, SCHED_BATCH, &param) only reads
        // `param`, a live `struct sched_param` of the kernel's layout for the duration of the
        // call; SCHED_BATCH needs no privilege and priority 0 is its only valid value.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_sched_setscheduler,
                0 as libc::pid_t,
                libc::SCHED_BATCH,
                std::ptr::from_ref(&param),
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    pub fn batch_this_thread() -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    /// The policy is set on the calling thread only, and the kernel reports it back.
    #[test]
    fn a_thread_can_put_itself_under_sched_batch() {
        let policy = || {
            std::fs::read_to_string("/proc/thread-self/sched")
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("policy"))
                        .and_then(|l| l.split(':').nth(1))
                        .map(|v| v.trim().to_string())
                })
        };
        let before = policy();
        let inner = std::thread::spawn(move || super::batch_this_thread().map(|()| policy()))
            .join()
            .expect("thread");
        match inner {
            // 3 = SCHED_BATCH. Where /proc/.../sched is missing (no CONFIG_SCHED_DEBUG) only
            // the call's success is checked.
            Ok(after) => {
                if let Some(p) = after {
                    assert_eq!(p, "3");
                }
            }
            Err(e) => panic!("sched_setscheduler(SCHED_BATCH) failed: {e}"),
        }
        // The calling thread is untouched.
        assert_eq!(policy(), before);
    }
}
