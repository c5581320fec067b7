//! The helper threads run under Linux's non-interactive policies. The host judge runs under
//! SCHED_BATCH: the same fair share of the CPU as any thread, but a helper that wakes up
//! does not preempt the thread running on that core. On two cores the packet loop was being
//! preempted by a helper just woken on its core, up to a couple of thousand times a second
//! (the judge wakes for every batch of host events), and the loop is what the wall time of
//! a replay and the drops of a live capture depend on.
//!
//! In a replay the database writer and the WAL checkpointer run under SCHED_IDLE: they take
//! whatever CPU the loop and the judge leave, and a judge woken while one of them runs
//! preempts it at once. Under SCHED_BATCH a judge woken behind a writer or a checkpoint
//! waited for the end of its time slice (~180 ms a benchmark run, over ~1,300 wake-ups)
//! while its four buffers filled, and then the loop applied batches itself or waited. The
//! loop of a replay waits for the writer once it is behind, which frees a core for it. A
//! live capture waits for nothing, so there they stay under SCHED_BATCH and keep their fair
//! share: under SCHED_IDLE rows piled up to the batch bound on a busy core (peak RSS 29
//! against 19 MB at top speed).
//! docs/DECISIONS.md has the measurements ("Fifth `unsafe` exception").

use std::io;

/// A scheduling policy for a helper thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// SCHED_BATCH: a fair share, without preempting at wake-up.
    Batch,
    /// SCHED_IDLE: what the other threads leave (and a small share of a busy CPU).
    Idle,
}

impl Policy {
    fn name(self) -> &'static str {
        match self {
            Policy::Batch => "SCHED_BATCH",
            Policy::Idle => "SCHED_IDLE",
        }
    }
}

/// Puts the calling thread under `policy` (a no-op where there is no such policy).
pub fn set_this_thread(policy: Policy) -> io::Result<()> {
    sys::set_this_thread(policy)
}

/// Calls `set_this_thread` and logs (debug) if the kernel refused.
pub fn set_this_thread_or_log(policy: Policy) {
    if let Err(e) = set_this_thread(policy) {
        let name = std::thread::current().name().unwrap_or("?").to_string();
        log::debug!(
            "{name}: cannot set {} ({e}); it keeps the default policy",
            policy.name()
        );
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

    pub fn set_this_thread(policy: super::Policy) -> io::Result<()> {
        let param = SchedParam { priority: 0 };
        let policy = match policy {
            super::Policy::Batch => libc::SCHED_BATCH,
            super::Policy::Idle => libc::SCHED_IDLE,
        };
        // SAFETY: sched_setscheduler(0 = the calling thread, SCHED_BATCH or SCHED_IDLE,
        // &param) only reads `param`, a live `struct sched_param` of the kernel's layout for
        // the duration of the call; neither policy needs privilege to enter, and priority 0
        // is their only valid value.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_sched_setscheduler,
                0 as libc::pid_t,
                policy,
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
    pub fn set_this_thread(_: super::Policy) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::Policy;

    fn policy() -> Option<String> {
        std::fs::read_to_string("/proc/thread-self/sched")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("policy"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|v| v.trim().to_string())
            })
    }

    /// The policy is set on the calling thread only, and the kernel reports it back.
    #[test]
    fn a_thread_can_put_itself_under_each_policy() {
        let before = policy();
        // The kernel's numbers: 3 = SCHED_BATCH, 5 = SCHED_IDLE.
        for (p, number) in [(Policy::Batch, "3"), (Policy::Idle, "5")] {
            let inner = std::thread::spawn(move || super::set_this_thread(p).map(|()| policy()))
                .join()
                .expect("thread");
            match inner {
                // Where /proc/.../sched is missing (no CONFIG_SCHED_DEBUG) only the call's
                // success is checked.
                Ok(after) => {
                    if let Some(after) = after {
                        assert_eq!(after, number, "{p:?}");
                    }
                }
                Err(e) => panic!("sched_setscheduler({p:?}) failed: {e}"),
            }
        }
        // The calling thread is untouched.
        assert_eq!(policy(), before);
    }
}
