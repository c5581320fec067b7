//! Counters and fixed-bucket latency histograms per pipeline stage: what /api/status and
//! /metrics report, and how the retrospective's "measure latency" is kept. Nothing here
//! allocates after start-up.

use crate::decode::DecodeError;

/// Pipeline stages timed by the engine and the loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Decode,
    State,
    Detect,
    Score,
    Correlate,
    Store,
    /// From a frame's arrival to the verdict that judged its second.
    FrameToVerdict,
}

impl Stage {
    pub const COUNT: usize = 7;
    pub const ALL: [Stage; Stage::COUNT] = [
        Stage::Decode,
        Stage::State,
        Stage::Detect,
        Stage::Score,
        Stage::Correlate,
        Stage::Store,
        Stage::FrameToVerdict,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::State => "state",
            Stage::Detect => "detect",
            Stage::Score => "score",
            Stage::Correlate => "correlate",
            Stage::Store => "store",
            Stage::FrameToVerdict => "frame_to_verdict",
        }
    }
}

/// Number of histogram buckets; bucket i holds durations < 2^(i+6) ns (64 ns .. ~73 min).
pub const HIST_BUCKETS: usize = 36;

/// Log2-bucketed latency histogram.
#[derive(Clone, Copy, Debug)]
pub struct Histogram {
    pub counts: [u64; HIST_BUCKETS],
    pub sum_ns: u64,
    pub count: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: [0; HIST_BUCKETS],
            sum_ns: 0,
            count: 0,
        }
    }
}

impl Histogram {
    /// Upper bound in ns of bucket `i`.
    pub fn bound_ns(i: usize) -> u64 {
        1u64 << (i + 6).min(63)
    }

    #[inline]
    pub fn record(&mut self, ns: u64) {
        let i = (64 - ns.leading_zeros() as usize)
            .saturating_sub(6)
            .min(HIST_BUCKETS - 1);
        // leading-zeros bucketing: ns < 64 → 0, 64..127 → 1, ...
        let i = if ns < Self::bound_ns(i) {
            i
        } else {
            (i + 1).min(HIST_BUCKETS - 1)
        };
        self.counts[i] += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
        self.count += 1;
    }

    /// Approximate quantile (upper bound of the bucket holding it), in ns.
    pub fn quantile_ns(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let target = ((self.count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= target {
                return Self::bound_ns(i);
            }
        }
        Self::bound_ns(HIST_BUCKETS - 1)
    }

    /// Cumulative counts in bucket order, paired with each bucket's upper bound in ns; the
    /// last bucket also holds everything beyond its bound (`+Inf` in Prometheus terms).
    pub fn cumulative(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.counts.iter().enumerate().scan(0u64, |acc, (i, c)| {
            *acc += c;
            Some((Self::bound_ns(i), *acc))
        })
    }

    /// Adds `other`'s counts to this histogram.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
        self.count += other.count;
    }

    pub fn mean_ns(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum_ns as f64 / self.count as f64
        }
    }
}

/// One frame in this many has its stages timed (timing every frame would cost more than
/// the stages themselves).
pub const TIMING_SAMPLE: u64 = 64;

#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub frames: u64,
    pub bytes: u64,
    pub decode_errors: [u64; DecodeError::COUNT],
    pub non_ip: u64,
    pub arp: u64,
    pub ipv4: u64,
    pub ipv6: u64,
    pub fragments: u64,
    pub alerts: u64,
    pub alerts_suppressed: u64,
    pub verdicts: [u64; 4],
    pub windows: u64,
    pub outbox_drops: u64,
    pub latency: [Histogram; Stage::COUNT],
    /// Packet time of the first and latest frame (µs).
    pub first_ts: i64,
    pub last_ts: i64,
    /// Turns latency timing off (no clock reads at all): only for measuring what the
    /// timing itself costs. Counters are kept either way.
    pub timing_disabled: bool,
}

impl Stats {
    pub fn decode_errors_total(&self) -> u64 {
        self.decode_errors.iter().sum()
    }

    /// Whether the frame just counted in `frames` has its stages timed: one in
    /// [`TIMING_SAMPLE`], unless timing is disabled.
    #[inline]
    pub fn time_this_frame(&self) -> bool {
        !self.timing_disabled && self.frames % TIMING_SAMPLE == 0
    }

    /// Whether per-second work (scoring, correlation, frame-to-verdict) is timed.
    #[inline]
    pub fn timing(&self) -> bool {
        !self.timing_disabled
    }

    #[inline]
    pub fn record(&mut self, stage: Stage, ns: u64) {
        self.latency[stage as usize].record(ns);
    }

    /// Moves what host judging counts (windows, verdicts, drops, thresholded alerts, and the
    /// score, correlate and frame-to-verdict timings) from `other`, the judge thread's counters, into these.
    pub fn absorb_judged(&mut self, other: &mut Stats) {
        self.windows += std::mem::take(&mut other.windows);
        for (a, b) in self.verdicts.iter_mut().zip(other.verdicts.iter_mut()) {
            *a += std::mem::take(b);
        }
        self.outbox_drops += std::mem::take(&mut other.outbox_drops);
        // Alerts of thresholded rules, which the judge checks when it has a thread.
        self.alerts += std::mem::take(&mut other.alerts);
        self.alerts_suppressed += std::mem::take(&mut other.alerts_suppressed);
        for st in [Stage::Score, Stage::Correlate, Stage::FrameToVerdict] {
            let h = std::mem::take(&mut other.latency[st as usize]);
            self.latency[st as usize].merge(&h);
        }
    }
}

/// Logs (at debug level, as a thread ends its work) how long the calling thread ran on a
/// core and how long it was runnable but waiting for one, from the kernel's
/// `/proc/thread-self/schedstat`: on two cores, whether the packet loop is held up by its
/// own work or by the helper threads taking its core. Nothing is read unless debug logging
/// is on; where the file is missing (not Linux, no schedstats) nothing is logged.
pub fn log_thread_times() {
    if !log::log_enabled!(log::Level::Debug) {
        return;
    }
    let Ok(text) = std::fs::read_to_string("/proc/thread-self/schedstat") else {
        return;
    };
    let mut fields = text.split_ascii_whitespace().map(str::parse::<u64>);
    if let (Some(Ok(run)), Some(Ok(wait)), Some(Ok(slices))) =
        (fields.next(), fields.next(), fields.next())
    {
        // The packet loop runs on the process's main thread.
        let name = std::thread::current()
            .name()
            .filter(|n| *n != "main")
            .unwrap_or("packet loop")
            .to_string();
        log::debug!(
            "{name}: {:.0} ms on a core, {:.0} ms runnable and waiting for one, {slices} time slices",
            run as f64 / 1e6,
            wait as f64 / 1e6
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_and_quantiles() {
        let mut h = Histogram::default();
        for ns in [10, 63, 64, 100, 127, 128, 1000] {
            h.record(ns);
        }
        assert_eq!(h.counts[0], 2); // 10, 63
        assert_eq!(h.counts[1], 3); // 64, 100, 127
        assert_eq!(h.counts[2], 1); // 128
        assert_eq!(h.count, 7);
        assert_eq!(h.quantile_ns(0.5), 128);
        assert_eq!(h.quantile_ns(1.0), 1024);
        h.record(u64::MAX);
        assert_eq!(h.counts[HIST_BUCKETS - 1], 1);
    }
}
