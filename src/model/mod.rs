//! The Isolation Forest that turns a host window's feature vector into an anomaly score,
//! with the calibration, explanations and range guard the verdict logic needs.
//!
//! - [`format`]: the `phantomnet.iforest.v1` JSON file — load, validate, save.
//! - [`score`]: allocation-free scoring (equal to scikit-learn's `score_samples`, negated),
//!   per-feature explanations, z-scores and the range guard.
//! - [`train`]: a deterministic trainer (same samples + seed → byte-identical file).
//!
//! The forest is stored as one flat, contiguous node array (all trees back to back); a
//! model is built once at start-up and only read afterwards.

use std::path::PathBuf;

use crate::features::N_FEATURES;

pub mod format;
pub mod score;
pub mod train;

pub use train::{train, TrainParams};

/// The `format` string of every model file this build reads and writes.
pub const FORMAT: &str = "phantomnet.iforest.v1";

/// Euler–Mascheroni constant, as numpy's `np.euler_gamma`.
const EULER_GAMMA: f64 = 0.577_215_664_901_532_9;

/// Average path length of an unsuccessful search in a binary search tree of `n` nodes,
/// the Isolation Forest normaliser: c(n) = 2(ln(n−1) + γ) − 2(n−1)/n for n > 2, c(2) = 1,
/// c(n ≤ 1) = 0 (as scikit-learn's `_average_path_length`).
pub fn average_path_length(n: u64) -> f64 {
    match n {
        0 | 1 => 0.0,
        2 => 1.0,
        _ => {
            let n = n as f64;
            2.0 * ((n - 1.0).ln() + EULER_GAMMA) - 2.0 * (n - 1.0) / n
        }
    }
}

/// A loaded or freshly trained Isolation Forest with its calibration and provenance.
#[derive(Clone, Debug)]
pub struct Model {
    pub(crate) forest: score::Forest,
    pub(crate) calibration: Calibration,
    pub(crate) info: TrainedInfo,
}

impl Model {
    /// Calibration measured on the training data: score quantiles and per-feature statistics.
    pub fn calibration(&self) -> &Calibration {
        &self.calibration
    }

    /// When and on what the model was trained, and with which parameters.
    pub fn info(&self) -> &TrainedInfo {
        &self.info
    }

    /// Number of trees.
    pub fn n_trees(&self) -> usize {
        self.forest.n_trees()
    }

    /// Subsample size ψ each tree was grown on.
    pub fn max_samples(&self) -> usize {
        self.forest.max_samples
    }

    /// The normaliser c(ψ).
    pub fn c_psi(&self) -> f64 {
        self.forest.c_psi
    }

    /// Total number of nodes over all trees.
    pub fn n_nodes(&self) -> usize {
        self.forest.nodes.len()
    }
}

/// Anomaly-score quantiles of the training samples (linear interpolation, as numpy's
/// default `quantile`). "Anomalous" thresholds are set against these, so that a level means
/// "rarer than normal on this network".
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct ScoreQuantiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
}

/// Per-feature statistics of the training samples, indexed like `FEATURE_NAMES`.
/// `std` is the population standard deviation (numpy's default `ddof = 0`).
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct FeatureStats {
    pub min: [f64; N_FEATURES],
    pub p50: [f64; N_FEATURES],
    pub p99: [f64; N_FEATURES],
    pub max: [f64; N_FEATURES],
    pub mean: [f64; N_FEATURES],
    pub std: [f64; N_FEATURES],
}

/// What the model knows about its training data, stored in the model file.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct Calibration {
    pub score: ScoreQuantiles,
    pub features: FeatureStats,
}

/// Provenance of a model: the file's `trained` object plus the forest's shape.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct TrainedInfo {
    /// Training time, Unix seconds.
    pub when_unix: i64,
    /// Capture file names, or "live learning".
    pub on: Vec<String>,
    /// Number of training samples (host windows).
    pub samples: u64,
    /// Seed of the trainer's random generator.
    pub seed: u64,
    /// Number of trees.
    pub n_trees: usize,
    /// Subsample size ψ.
    pub max_samples: usize,
}

/// Everything that can go wrong loading, validating, saving or training a model. Every
/// message names the file (or "training"), and where it applies the tree and node index.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: cannot read model file: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: cannot write model file: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: not a valid model file: {source}")]
    Json {
        origin: String,
        source: serde_json::Error,
    },
    #[error("{origin}: `format` is `{found}`, expected `{expected}`")]
    Format {
        origin: String,
        found: String,
        expected: &'static str,
    },
    #[error(
        "{origin}: model was built for feature schema `{model_name}` (hash {model_hash}), \
         but this build uses feature schema `{ours_name}` (hash {ours_hash}); retrain the model"
    )]
    Schema {
        origin: String,
        model_name: String,
        model_hash: String,
        ours_name: &'static str,
        ours_hash: String,
    },
    #[error("{origin}: `schema.features` has {found} names, expected {expected}")]
    FeatureCount {
        origin: String,
        found: usize,
        expected: usize,
    },
    #[error("{origin}: `schema.features[{index}]` is `{found}`, expected `{expected}`")]
    FeatureName {
        origin: String,
        index: usize,
        found: String,
        expected: &'static str,
    },
    #[error("{origin}: `max_samples` is {found}, expected an integer from 2 to 4294967295")]
    MaxSamples { origin: String, found: u64 },
    #[error("{origin}: `c_psi` is {found}, expected {expected} (c(max_samples = {max_samples}))")]
    CPsi {
        origin: String,
        found: f64,
        expected: f64,
        max_samples: u64,
    },
    #[error("{origin}: `n_trees` is {declared} but `trees` holds {found} trees; expected equal and at least 1")]
    TreeCount {
        origin: String,
        declared: u64,
        found: usize,
    },
    #[error("{origin}: tree {tree}: `{array}` has {len} entries, expected {expected} (the length of `feature`)")]
    ArrayLength {
        origin: String,
        tree: usize,
        array: &'static str,
        len: usize,
        expected: usize,
    },
    #[error("{origin}: tree {tree} has no nodes, expected at least a root")]
    EmptyTree { origin: String, tree: usize },
    #[error("{origin}: forest has {found} nodes, more than the {max} supported")]
    TooManyNodes {
        origin: String,
        found: usize,
        max: usize,
    },
    #[error("{origin}: tree {tree} node {node}: {what}")]
    NodeShape {
        origin: String,
        tree: usize,
        node: usize,
        what: String,
    },
    #[error("{origin}: tree {tree} node {node}: `{which}` child {child} is out of range, expected 0..{n_nodes}")]
    ChildOutOfRange {
        origin: String,
        tree: usize,
        node: usize,
        which: &'static str,
        child: i64,
        n_nodes: usize,
    },
    #[error("{origin}: tree {tree} node {node} is reached twice from the root (a cycle or a shared child); expected a tree")]
    Cycle {
        origin: String,
        tree: usize,
        node: usize,
    },
    #[error("{origin}: tree {tree} node {node} is not reachable from the root (node 0)")]
    Unreachable {
        origin: String,
        tree: usize,
        node: usize,
    },
    #[error("{origin}: tree {tree} node {node}: feature index {feature} is out of range, expected 0..{max} on a split node")]
    FeatureIndex {
        origin: String,
        tree: usize,
        node: usize,
        feature: i64,
        max: usize,
    },
    #[error("{origin}: tree {tree} node {node}: threshold {threshold} is not finite")]
    Threshold {
        origin: String,
        tree: usize,
        node: usize,
        threshold: f64,
    },
    #[error("{origin}: tree {tree} node {node}: `n_samples` is {found}, expected {expected}")]
    NSamples {
        origin: String,
        tree: usize,
        node: usize,
        found: u64,
        expected: String,
    },
    #[error("{origin}: `calibration.{field}`: {what}")]
    Calibration {
        origin: String,
        field: String,
        what: String,
    },
    #[error("cannot train a model: {what}")]
    Train { what: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_path_length_matches_sklearn_values() {
        assert_eq!(average_path_length(0), 0.0);
        assert_eq!(average_path_length(1), 0.0);
        assert_eq!(average_path_length(2), 1.0);
        // sklearn: _average_path_length([3, 256]) = [1.207392357589623, 10.244770920119917]
        assert!((average_path_length(3) - 1.207_392_357_589_623).abs() < 1e-15);
        assert!((average_path_length(256) - 10.244_770_920_119_917).abs() < 1e-12);
    }
}
