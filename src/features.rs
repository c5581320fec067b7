//! FEATURE SCHEMA v1: the 15 per-host behavioural features, a contract with every model file.
//!
//! The names, their order and their formulas are frozen once a model ships; the schema's
//! name and the hash of its ordered names travel in every model file, and a model built for
//! another schema is refused. The exact formulas are documented in docs/FEATURES.md.

/// Number of features in schema v1.
pub const N_FEATURES: usize = 15;

/// Schema name carried by every model file.
pub const SCHEMA_NAME: &str = "phantomnet.features.v1";

/// Ordered feature names of schema v1.
pub const FEATURE_NAMES: [&str; N_FEATURES] = [
    "pkt_rate_out",
    "pkt_len_mean_out",
    "busiest_service_flows",
    "dst_hosts",
    "dst_ports",
    "syn_ratio_out",
    "unanswered_ratio",
    "icmp_share_out",
    "pkt_rate_in",
    "syn_rate_in",
    "syn_ratio_in",
    "out_in_ratio",
    "dns_qname_len",
    "dns_qname_entropy",
    "pkt_rate_z",
];

/// How the range guard treats a feature (see engine::evaluate).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guard {
    /// `ln(1 + count or rate)`: compared in raw units.
    LogCount,
    /// Unbounded linear value: compared in units of its training range.
    Linear,
    /// A share in [0, 1]: "beyond the training maximum" means nothing for it.
    Ratio,
}

/// The range guard's view of each feature of schema v1.
pub const GUARD: [Guard; N_FEATURES] = {
    use Guard::*;
    [
        LogCount, Linear, LogCount, LogCount, LogCount, Ratio, Ratio, Ratio, LogCount, LogCount,
        Ratio, Linear, Linear, Linear, Linear,
    ]
};

/// One host-window's feature vector.
pub type FeatureVector = [f32; N_FEATURES];

/// Hash of the ordered feature names: FNV-1a 64 over the names joined by '\n', as 16 hex
/// digits. Any rename, insertion or reordering changes it.
pub fn schema_hash() -> String {
    format!("{:016x}", schema_hash_u64())
}

/// The numeric form of `schema_hash`.
pub fn schema_hash_u64() -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, name) in FEATURE_NAMES.iter().enumerate() {
        if i > 0 {
            h ^= u64::from(b'\n');
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        for b in name.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

use crate::host::{Host, Sketch, WINDOW_SECS};

/// Raw totals of one host over the window, before scaling (also used for plain-words
/// explanations).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct WindowTotals {
    pub pkts_out: u64,
    pub bytes_out: u64,
    pub pkts_in: u64,
    pub bytes_in: u64,
    pub tcp_out: u64,
    pub syn_out: u64,
    pub tcp_in: u64,
    pub syn_in: u64,
    pub icmp_out: u64,
    pub flows_init: u64,
    pub flows_answered: u64,
    pub busiest_service_flows: u64,
    pub dst_hosts: f64,
    pub dst_ports: f64,
    pub dns_queries: u64,
    pub dns_len_sum: u64,
    pub dns_entropy_sum: f64,
}

impl WindowTotals {
    /// Sums the host's buckets within the window ending at second `sec`.
    pub fn of(host: &Host, sec: i64) -> WindowTotals {
        let mut t = WindowTotals::default();
        let mut hosts = Sketch::default();
        let mut ports = Sketch::default();
        // Merge the per-second top-2 service counters: equal services add up.
        let mut svc: [(u32, u64); 2 * WINDOW_SECS] = [(0, 0); 2 * WINDOW_SECS];
        let mut n_svc = 0;
        for b in host.window(sec) {
            t.pkts_out += u64::from(b.pkts_out);
            t.bytes_out += b.bytes_out;
            t.pkts_in += u64::from(b.pkts_in);
            t.bytes_in += b.bytes_in;
            t.tcp_out += u64::from(b.tcp_out);
            t.syn_out += u64::from(b.syn_out);
            t.tcp_in += u64::from(b.tcp_in);
            t.syn_in += u64::from(b.syn_in);
            t.icmp_out += u64::from(b.icmp_out);
            t.flows_init += u64::from(b.flows_init);
            t.flows_answered += u64::from(b.flows_answered);
            t.dns_queries += u64::from(b.dns_queries);
            t.dns_len_sum += u64::from(b.dns_len_sum);
            t.dns_entropy_sum += f64::from(b.dns_entropy_sum);
            hosts.union(&b.dst_hosts);
            ports.union(&b.dst_ports);
            for &(h, c) in &b.services {
                if c == 0 {
                    continue;
                }
                match svc[..n_svc].iter_mut().find(|(sh, _)| *sh == h) {
                    Some(e) => e.1 += u64::from(c),
                    None => {
                        svc[n_svc] = (h, u64::from(c));
                        n_svc += 1;
                    }
                }
            }
        }
        t.busiest_service_flows = svc[..n_svc].iter().map(|e| e.1).max().unwrap_or(0);
        t.dst_hosts = if hosts == Sketch::default() {
            0.0
        } else {
            hosts.estimate()
        };
        t.dst_ports = if ports == Sketch::default() {
            0.0
        } else {
            ports.estimate()
        };
        t
    }

    /// Packets sent and received.
    pub fn packets(&self) -> u64 {
        self.pkts_out + self.pkts_in
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        (a as f64 / b as f64).clamp(0.0, 1.0)
    }
}

/// Computes schema v1 from window totals and the packet-rate z-score (see docs/FEATURES.md).
pub fn compute(t: &WindowTotals, z: f64) -> FeatureVector {
    let w = WINDOW_SECS as f64;
    let mean = |sum: f64, n: u64| if n == 0 { 0.0 } else { sum / n as f64 };
    let unanswered = if t.flows_init == 0 {
        0.0
    } else {
        ((t.flows_init.saturating_sub(t.flows_answered)) as f64 / t.flows_init as f64)
            .clamp(0.0, 1.0)
    };
    let f = [
        (t.pkts_out as f64 / w).ln_1p(),
        mean(t.bytes_out as f64, t.pkts_out),
        (t.busiest_service_flows as f64).ln_1p(),
        t.dst_hosts.ln_1p(),
        t.dst_ports.ln_1p(),
        ratio(t.syn_out, t.tcp_out),
        unanswered,
        ratio(t.icmp_out, t.pkts_out),
        (t.pkts_in as f64 / w).ln_1p(),
        (t.syn_in as f64 / w).ln_1p(),
        ratio(t.syn_in, t.tcp_in),
        ((t.bytes_out as f64 + 1.0) / (t.bytes_in as f64 + 1.0)).log2(),
        mean(t.dns_len_sum as f64, t.dns_queries),
        mean(t.dns_entropy_sum, t.dns_queries),
        z.signum() * z.abs().ln_1p(),
    ];
    let mut out = [0f32; N_FEATURES];
    for (o, v) in out.iter_mut().zip(f) {
        *o = if v.is_finite() { v as f32 } else { 0.0 };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::Host;

    #[test]
    fn schema_hash_is_stable() {
        // Changing this value means changing the schema: bump SCHEMA_NAME and retrain.
        assert_eq!(schema_hash().len(), 16);
        assert_eq!(schema_hash(), format!("{:016x}", schema_hash_u64()));
    }

    #[test]
    fn features_from_hand_built_window() {
        let mut h = Host::default();
        // Second 100: 20 SYNs out to 20 ports on one host, 10 RST back; 2 DNS queries.
        {
            let b = h.bucket(100);
            b.pkts_out = 22;
            b.bytes_out = 22 * 60;
            b.tcp_out = 20;
            b.syn_out = 20;
            b.pkts_in = 10;
            b.bytes_in = 10 * 54;
            b.tcp_in = 10;
            b.flows_init = 20;
            b.flows_answered = 0;
            b.flows_rejected = 10;
            b.dns_queries = 2;
            b.dns_len_sum = 30;
            b.dns_entropy_sum = 6.0;
            b.dst_hosts.insert(1 << 56);
            for p in 0..20u64 {
                b.dst_ports.insert(p << 56);
            }
            for _ in 0..5 {
                b.add_service(7);
            }
        }
        // Second 95 also counts; second 80 is outside the window.
        h.bucket(95).pkts_out = 8;
        // Second 89 (its own ring slot) is older than the window and must not count.
        h.bucket(89).pkts_out = 1000;
        let t = WindowTotals::of(&h, 100);
        assert_eq!(t.pkts_out, 30);
        assert_eq!(t.busiest_service_flows, 5);
        let f = compute(&t, 3.0);
        let close = |a: f32, b: f64| (f64::from(a) - b).abs() < 1e-5;
        assert!(close(f[0], (30.0f64 / 10.0).ln_1p()));
        assert!(close(f[1], 22.0 * 60.0 / 30.0));
        assert!(close(f[2], 5.0f64.ln_1p()));
        assert!(close(f[3], (256.0f64 * (256.0f64 / 255.0).ln()).ln_1p()));
        let ports = 256.0f64 * (256.0f64 / 236.0).ln();
        assert!(close(f[4], ports.ln_1p()), "{} vs {}", f[4], ports.ln_1p());
        assert!(close(f[5], 1.0));
        assert!(close(f[6], 1.0));
        assert!(close(f[7], 0.0));
        assert!(close(f[8], 1.0f64.ln_1p()));
        assert!(close(f[9], 0.0));
        assert!(close(f[10], 0.0));
        assert!(close(f[11], ((1320.0f64 + 1.0) / (540.0 + 1.0)).log2()));
        assert!(close(f[12], 15.0));
        assert!(close(f[13], 3.0));
        assert!(close(f[14], 3.0f64.ln_1p()));
    }
}
