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
