//! `/metrics`: the loop's counters, gauges and per-stage latency histograms in the
//! Prometheus text exposition format (version 0.0.4), so any scraper can watch PhantomNet.

use std::fmt::Write as _;

use crate::decode::DecodeError;
use crate::engine::Engine;
use crate::events::Level;
use crate::runtime::{Outputs, RunInfo};
use crate::stats::{Histogram, Stage, HIST_BUCKETS, TIMING_SAMPLE};

/// Content type Prometheus expects for the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Counters the HTTP side keeps about itself (read from its I/O thread's atomics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HttpCounters {
    pub connections: u64,
    pub refused: u64,
    pub open: u64,
    pub requests: u64,
    pub unauthorized: u64,
    pub bad_requests: u64,
    pub timeouts: u64,
    pub busy: u64,
}

/// Builds one exposition document. Families are written whole, one after another.
pub struct Exposition {
    out: String,
}

impl Default for Exposition {
    fn default() -> Self {
        Exposition::new()
    }
}

#[derive(Clone, Copy)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

impl Exposition {
    pub fn new() -> Exposition {
        Exposition {
            out: String::with_capacity(32 * 1024),
        }
    }

    /// Starts a metric family: `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let _ = write!(self.out, "# HELP {name} ");
        for c in help.chars() {
            match c {
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                c => self.out.push(c),
            }
        }
        let _ = writeln!(self.out, "\n# TYPE {name} {}", kind.as_str());
    }

    /// One sample line; label values are escaped.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"");
                for c in v.chars() {
                    match c {
                        '\\' => self.out.push_str("\\\\"),
                        '"' => self.out.push_str("\\\""),
                        '\n' => self.out.push_str("\\n"),
                        c => self.out.push(c),
                    }
                }
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        push_value(&mut self.out, value);
        self.out.push('\n');
    }

    /// A family with a single unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// The `_bucket`/`_sum`/`_count` samples of one latency histogram (ns recorded, seconds
    /// exposed). Buckets are cumulative; the last one is `+Inf`.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) {
        let bucket = format!("{name}_bucket");
        let mut le = String::new();
        for (i, (bound, cum)) in h.cumulative().enumerate() {
            if i + 1 == HIST_BUCKETS {
                break;
            }
            le.clear();
            push_value(&mut le, bound as f64 / 1e9);
            let mut lab: Vec<(&str, &str)> = labels.to_vec();
            lab.push(("le", le.as_str()));
            self.sample(&bucket, &lab, cum as f64);
        }
        let mut lab: Vec<(&str, &str)> = labels.to_vec();
        lab.push(("le", "+Inf"));
        self.sample(&bucket, &lab, h.count as f64);
        self.sample(&format!("{name}_sum"), labels, h.sum_ns as f64 / 1e9);
        self.sample(&format!("{name}_count"), labels, h.count as f64);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// Prometheus float syntax: integers without a fraction, `+Inf`/`-Inf`/`NaN` spelled out.
fn push_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 9.007_199_254_740_992e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v}");
    }
}

/// The whole `/metrics` document.
pub fn render(
    engine: &Engine,
    outputs: &Outputs,
    info: &RunInfo,
    http: &HttpCounters,
    http_poll: &Histogram,
) -> String {
    use Kind::{Counter, Gauge, Histogram as Hist};
    let s = &engine.stats;
    let mut m = Exposition::new();
    m.family(
        "phantomnet_build_info",
        Gauge,
        "Always 1; the labels say which build and mode is running.",
    );
    m.sample(
        "phantomnet_build_info",
        &[("version", env!("CARGO_PKG_VERSION")), ("mode", info.mode)],
        1.0,
    );
    m.single(
        "phantomnet_uptime_seconds",
        Gauge,
        "Seconds since PhantomNet started.",
        info.started.elapsed().as_secs_f64(),
    );
    m.single(
        "phantomnet_capture_done",
        Gauge,
        "1 once a replayed capture has been read to its end.",
        f64::from(u8::from(info.capture_done)),
    );
    m.single(
        "phantomnet_frames_total",
        Counter,
        "Frames read from the capture source.",
        s.frames as f64,
    );
    m.single(
        "phantomnet_bytes_total",
        Counter,
        "Bytes on the wire of the frames read.",
        s.bytes as f64,
    );
    m.family(
        "phantomnet_frames_by_network_total",
        Counter,
        "Frames by network-layer protocol.",
    );
    for (proto, n) in [
        ("ipv4", s.ipv4),
        ("ipv6", s.ipv6),
        ("arp", s.arp),
        ("other", s.non_ip),
    ] {
        m.sample(
            "phantomnet_frames_by_network_total",
            &[("network", proto)],
            n as f64,
        );
    }
    m.single(
        "phantomnet_ip_fragments_total",
        Counter,
        "IP fragments seen (not reassembled).",
        s.fragments as f64,
    );
    m.family(
        "phantomnet_decode_errors_total",
        Counter,
        "Frames the decoder could not fully parse, by kind.",
    );
    for e in DecodeError::ALL {
        m.sample(
            "phantomnet_decode_errors_total",
            &[("kind", e.name())],
            s.decode_errors[e.index()] as f64,
        );
    }
    m.single(
        "phantomnet_kernel_drops_total",
        Counter,
        "Frames the kernel dropped before PhantomNet read them (PACKET_STATISTICS; 0 on replay).",
        info.kernel_drops as f64,
    );
    m.single(
        "phantomnet_flows_active",
        Gauge,
        "Flows in the flow table.",
        engine.flows.len() as f64,
    );
    m.single(
        "phantomnet_flows_capacity",
        Gauge,
        "Size of the flow table.",
        engine.flows.table.capacity() as f64,
    );
    m.single(
        "phantomnet_flows_created_total",
        Counter,
        "Flows created.",
        engine.flows.created as f64,
    );
    m.single(
        "phantomnet_flows_evicted_total",
        Counter,
        "Flows evicted because the table was full.",
        engine.flows.evicted as f64,
    );
    m.single(
        "phantomnet_flows_expired_total",
        Counter,
        "Flows ended by an idle timeout.",
        engine.flows.expired as f64,
    );
    // One snapshot for all the host figures, so they agree with each other.
    let hosts = engine.host_counts();
    m.single(
        "phantomnet_hosts_active",
        Gauge,
        "Hosts in the host table.",
        hosts.active as f64,
    );
    m.single(
        "phantomnet_hosts_capacity",
        Gauge,
        "Size of the host table.",
        hosts.capacity as f64,
    );
    m.single(
        "phantomnet_hosts_evicted_total",
        Counter,
        "Hosts evicted because the table was full.",
        hosts.evicted as f64,
    );
    m.single(
        "phantomnet_hosts_held",
        Gauge,
        "Addresses seen once, held until they show up again before they get a host.",
        hosts.held as f64,
    );
    m.single(
        "phantomnet_hosts_held_dropped_total",
        Counter,
        "Addresses seen once and dropped before they showed up again (spoofed floods).",
        hosts.held_dropped as f64,
    );
    m.single(
        "phantomnet_hosts_expired_total",
        Counter,
        "Hosts forgotten after an idle timeout.",
        hosts.expired as f64,
    );
    m.single(
        "phantomnet_rules_loaded",
        Gauge,
        "Signatures loaded.",
        info.rules_loaded as f64,
    );
    // Since the rules were (re)loaded: a reload starts a new table.
    let (evicted, dropped) = engine.threshold_counts();
    m.single(
        "phantomnet_threshold_evicted_total",
        Counter,
        "Rule threshold entries evicted because the table was full (since the rules were loaded).",
        evicted as f64,
    );
    m.single(
        "phantomnet_threshold_first_dropped_total",
        Counter,
        "Rule threshold keys matched once and dropped before a second match (spoofed floods; since the rules were loaded).",
        dropped as f64,
    );
    m.single(
        "phantomnet_intel_entries",
        Gauge,
        "Address ranges in the threat-intel lists.",
        info.intel_entries as f64,
    );
    m.single(
        "phantomnet_model_loaded",
        Gauge,
        "1 if an Isolation Forest model is scoring host windows.",
        f64::from(u8::from(engine.model().is_some())),
    );
    m.single(
        "phantomnet_alerts_total",
        Counter,
        "Signature, intel and ARP-watch alerts raised.",
        s.alerts as f64,
    );
    m.single(
        "phantomnet_alerts_suppressed_total",
        Counter,
        "Alerts suppressed by rule thresholds.",
        s.alerts_suppressed as f64,
    );
    m.family(
        "phantomnet_verdicts_total",
        Counter,
        "Host windows judged, by verdict level.",
    );
    for l in Level::ALL {
        m.sample(
            "phantomnet_verdicts_total",
            &[("level", l.as_str())],
            s.verdicts[l.index()] as f64,
        );
    }
    let help = format!(
        "Wall time spent per pipeline stage. Per-frame stages (decode, state, detect) time one \
         frame in {TIMING_SAMPLE}; score and correlate are per closed second; store per flush; \
         frame_to_verdict from a second's first frame to its verdicts."
    );
    m.family("phantomnet_stage_latency_seconds", Hist, &help);
    for st in Stage::ALL {
        m.histogram(
            "phantomnet_stage_latency_seconds",
            &[("stage", st.name())],
            &s.latency[st as usize],
        );
    }
    m.single(
        "phantomnet_outbox_drops_total",
        Counter,
        "Records dropped because the engine's outbox was full between flushes.",
        s.outbox_drops as f64,
    );
    m.single(
        "phantomnet_store_backlog_rows",
        Gauge,
        "Rows waiting for a retry after a failed database write.",
        outputs.backlog() as f64,
    );
    m.single(
        "phantomnet_store_dropped_rows_total",
        Counter,
        "Rows dropped because the write backlog was full.",
        outputs.dropped() as f64,
    );
    m.single(
        "phantomnet_store_write_failures_total",
        Counter,
        "Database transactions that failed.",
        outputs.store_failures as f64,
    );
    m.family(
        "phantomnet_http_loop_seconds",
        Hist,
        "Wall time the detection loop spent answering HTTP, per tick that answered something.",
    );
    m.histogram("phantomnet_http_loop_seconds", &[], http_poll);
    m.single(
        "phantomnet_http_connections_total",
        Counter,
        "HTTP connections accepted.",
        http.connections as f64,
    );
    m.single(
        "phantomnet_http_connections_refused_total",
        Counter,
        "HTTP connections refused because too many were open.",
        http.refused as f64,
    );
    m.single(
        "phantomnet_http_connections_open",
        Gauge,
        "HTTP connections open now.",
        http.open as f64,
    );
    m.single(
        "phantomnet_http_requests_total",
        Counter,
        "HTTP requests answered by the loop.",
        http.requests as f64,
    );
    m.single(
        "phantomnet_http_unauthorized_total",
        Counter,
        "HTTP requests refused for a missing or wrong token.",
        http.unauthorized as f64,
    );
    m.single(
        "phantomnet_http_bad_requests_total",
        Counter,
        "HTTP requests refused as malformed, too large or not GET/HEAD.",
        http.bad_requests as f64,
    );
    m.single(
        "phantomnet_http_timeouts_total",
        Counter,
        "HTTP connections closed because the client was too slow.",
        http.timeouts as f64,
    );
    m.single(
        "phantomnet_http_busy_total",
        Counter,
        "HTTP requests answered 503 because too many were in flight.",
        http.busy as f64,
    );
    m.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_labels_are_spelled_as_prometheus_reads_them() {
        let mut m = Exposition::new();
        m.family("x_total", Kind::Counter, "a \\ b\nc");
        m.sample("x_total", &[("k", "q\"u\\o\nte")], 3.0);
        m.sample("x_total", &[], 0.25);
        m.sample("x_total", &[], f64::INFINITY);
        m.sample("x_total", &[], f64::NAN);
        let s = m.finish();
        assert_eq!(
            s,
            "# HELP x_total a \\\\ b\\nc\n# TYPE x_total counter\n\
             x_total{k=\"q\\\"u\\\\o\\nte\"} 3\nx_total 0.25\nx_total +Inf\nx_total NaN\n"
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_in_inf() {
        let mut h = Histogram::default();
        for ns in [10, 100, 100, 5000, u64::MAX] {
            h.record(ns);
        }
        let mut m = Exposition::new();
        m.family("lat_seconds", Kind::Histogram, "h");
        m.histogram("lat_seconds", &[("stage", "decode")], &h);
        let s = m.finish();
        assert!(s.contains("lat_seconds_bucket{stage=\"decode\",le=\"0.000000064\"} 1\n"));
        assert!(s.contains("lat_seconds_bucket{stage=\"decode\",le=\"0.000000128\"} 3\n"));
        assert!(s.contains("lat_seconds_bucket{stage=\"decode\",le=\"0.000008192\"} 4\n"));
        // u64::MAX lands in the last bucket, which only +Inf covers.
        assert!(s.contains("lat_seconds_bucket{stage=\"decode\",le=\"+Inf\"} 5\n"));
        assert!(s.contains("lat_seconds_count{stage=\"decode\"} 5\n"));
        let buckets = s.lines().filter(|l| l.contains("_bucket")).count();
        assert_eq!(buckets, HIST_BUCKETS);
    }
}
