//! Cache prefetch hints for the per-frame path. Under a flood of spoofed sources nearly every
//! frame needs table entries nobody touched for a while (a new flow's and host's index lines,
//! the least recently used entries they evict); waiting for them one after another was the
//! largest share of the `state` stage. Hinting all of them as soon as a frame's addresses are
//! known lets the memory system fetch them together, while the frame is being processed.
//!
//! A prefetch is only a hint: it never faults, whatever the address, and changes nothing a
//! program can observe except timing. It is the crate's third `unsafe` exception
//! (docs/DECISIONS.md), confined to [`hint`]. On targets without a stable prefetch it does
//! nothing.

/// Hints that `s[i]` (its first cache line) will be read soon. `i` may be out of bounds: the
/// address is only computed (wrapping), never dereferenced.
#[inline(always)]
pub fn prefetch<T>(s: &[T], i: usize) {
    hint(s.as_ptr().wrapping_add(i).cast::<u8>());
}

/// Hints that the `line`-th cache line (64 bytes) of `v` will be read soon.
#[inline(always)]
pub fn prefetch_line<T>(v: &T, line: usize) {
    hint((v as *const T).cast::<u8>().wrapping_add(line * 64));
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
#[inline(always)]
fn hint(p: *const u8) {
    use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    // SAFETY: PREFETCHT0 is a hint that never faults, for any address, and changes no
    // architectural state; `p` is never dereferenced.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>()) }
}

#[cfg(target_arch = "aarch64")]
#[allow(unsafe_code)]
#[inline(always)]
fn hint(p: *const u8) {
    // SAFETY: PRFM is a hint that never faults, for any address, and changes no
    // architectural state (nor flags, nor the stack); `p` is never dereferenced.
    unsafe {
        core::arch::asm!(
            "prfm pldl1keep, [{0}]",
            in(reg) p,
            options(nostack, preserves_flags, readonly)
        )
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
#[inline(always)]
fn hint(_p: *const u8) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_any_address_without_effect() {
        let v = vec![1u64, 2, 3];
        // In bounds, one past the end and far beyond: none of them may fault.
        for i in [0, 2, 3, 1 << 40, usize::MAX] {
            prefetch(&v, i);
        }
        prefetch_line(&v[0], 0);
        prefetch_line(&v[0], 1 << 50);
        assert_eq!(v, [1, 2, 3]);
    }
}
