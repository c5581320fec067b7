//! Scoring on the per-window path: anomaly score, per-feature explanation, z-scores and the
//! range guard, all over the flat node array and all without allocating.
//!
//! The score equals scikit-learn's `IsolationForest.score_samples(X)` negated, for the same
//! trees: per tree h = (edges from the root to the reached leaf) + c(leaf n_samples), and
//! score = 2^(−mean_trees(h) / c(ψ)). A feature goes left when `f64::from(x[f]) <= threshold`
//! (scikit-learn casts X to float32 first; our features already are f32), evaluated as an
//! equivalent f32 comparison against the threshold rounded down to f32. A NaN feature goes
//! right.

use super::{average_path_length, Model};
use crate::features::{FeatureVector, N_FEATURES};

/// Marks a leaf in [`Node::feature`].
pub(crate) const LEAF: u32 = u32::MAX;

/// Trees walked at once by [`Forest::total_path_length`].
const LANES: usize = 8;
/// The feature vector's length padded for [`Forest::total_path_length`]: a power of two
/// with at least one spare slot.
const PAD: usize = (N_FEATURES + 1).next_power_of_two();

/// Smallest spread used as a denominator by [`Model::feature_z`] and [`Model::range_excess`].
/// Features are log-scaled counts or shares, so 0.001 is a small step on every one of them;
/// a feature that never varied in training still yields a finite (large) value.
pub const SPREAD_FLOOR: f64 = 1e-3;

/// One node of the flat forest: 16 bytes, so four share a cache line on the hot path.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Node {
    /// The largest f32 not above the f64 threshold ([`f32_at_or_below`]). Features are f32,
    /// so `x <= threshold32` in f32 decides exactly as `f64::from(x) <= threshold` does,
    /// with half the bytes.
    pub threshold32: f32,
    /// Feature index for splits, [`LEAF`] for leaves.
    pub feature: u32,
    /// Absolute index of the left child in `Forest::nodes` (a leaf's own index on leaves).
    pub left: u32,
    /// Absolute index of the right child (a leaf's own index on leaves).
    pub right: u32,
}

/// All trees back to back in one contiguous array; `roots[t]` is tree t's root index and
/// tree t's nodes are `roots[t]..roots[t + 1]` (or to the end). Cold per-node data sits in
/// parallel arrays, read once per tree or only when saving.
#[derive(Clone, Debug)]
pub(crate) struct Forest {
    pub nodes: Vec<Node>,
    /// Split nodes: the exact f64 threshold (as written to the file). Leaves: the path
    /// length depth + c(n_samples), precomputed so scoring adds it without a logarithm.
    pub value: Vec<f64>,
    /// Training samples that reached each node.
    pub n_samples: Vec<u32>,
    pub roots: Vec<u32>,
    pub max_samples: usize,
    pub c_psi: f64,
}

impl Forest {
    pub fn n_trees(&self) -> usize {
        self.roots.len()
    }

    /// The node range of tree `t`.
    pub fn tree_range(&self, t: usize) -> std::ops::Range<usize> {
        let start = self.roots.get(t).map_or(self.nodes.len(), |&r| r as usize);
        let end = self
            .roots
            .get(t + 1)
            .map_or(self.nodes.len(), |&r| r as usize);
        start..end
    }

    /// Index of the leaf `x` reaches from `root`.
    #[inline]
    fn leaf(&self, root: u32, x: &FeatureVector) -> usize {
        let mut i = root as usize;
        loop {
            let node = &self.nodes[i];
            if node.feature == LEAF {
                return i;
            }
            i = if x[node.feature as usize] <= node.threshold32 {
                node.left as usize
            } else {
                node.right as usize
            };
        }
    }

    /// Sum over trees of the path length h(x), added in tree order.
    ///
    /// Trees are walked [`LANES`] at a time, one step of each per round, so their node loads
    /// (cache misses on a forest of ~800 KiB) overlap instead of queueing behind each other,
    /// and each step is a select, not a branch on the split. A leaf points to itself (see
    /// [`Node`]), so walks that finish early stay put until the slowest one ends. The leaf
    /// values are then added in tree order: the sum is bit for bit the one-tree-at-a-time sum.
    #[inline]
    fn total_path_length(&self, x: &FeatureVector) -> f64 {
        let mut total = 0.0;
        // Padded to a power of two: `feature & (PAD - 1)` is in bounds without a check, and
        // a leaf's LEAF (all ones) lands on the padding.
        let mut xp = [0f32; PAD];
        xp[..N_FEATURES].copy_from_slice(x);
        let mut groups = self.roots.chunks_exact(LANES);
        for roots in &mut groups {
            let mut at = [0usize; LANES];
            for (a, &r) in at.iter_mut().zip(roots) {
                *a = r as usize;
            }
            loop {
                let mut all_leaves = LEAF;
                for a in at.iter_mut() {
                    let node = &self.nodes[*a];
                    all_leaves &= node.feature;
                    // Leaves read some feature and go to themselves either way.
                    let v = xp[node.feature as usize & (PAD - 1)];
                    *a = if v <= node.threshold32 {
                        node.left
                    } else {
                        node.right
                    } as usize;
                }
                // Feature indices are small, so the AND is LEAF only when every node was one.
                if all_leaves == LEAF {
                    break;
                }
            }
            for &a in &at {
                total += self.value[a];
            }
        }
        for &root in groups.remainder() {
            total += self.value[self.leaf(root, x)];
        }
        total
    }
}

/// The largest f32 that is `<= t` (−∞ if none). For every f32 `x`,
/// `x <= f32_at_or_below(t)` exactly when `f64::from(x) <= t`, NaN included (both false).
pub(crate) fn f32_at_or_below(t: f64) -> f32 {
    let f = t as f32; // round to nearest; saturates to ±∞ beyond the f32 range
    if f64::from(f) <= t || f.is_nan() {
        return f;
    }
    // One step down from a value above t (f > t ≥ −f32::MAX, so f > −∞ and f is not NaN).
    if f == 0.0 {
        return -f32::from_bits(1); // the negative subnormal closest to zero
    }
    let bits = f.to_bits();
    f32::from_bits(if f > 0.0 { bits - 1 } else { bits + 1 })
}

impl Model {
    /// Anomaly score in (0, 1]; higher is more anomalous, 0.5 is "average". Equals
    /// scikit-learn's `-score_samples(x)` for the same trees. Never allocates.
    pub fn score(&self, x: &FeatureVector) -> f64 {
        let f = &self.forest;
        let denominator = f.roots.len() as f64 * f.c_psi;
        (-f.total_path_length(x) / denominator).exp2()
    }

    /// Mean path length E[h(x)] over the trees (edges + c(leaf size)), the score's raw form.
    pub fn mean_path_length(&self, x: &FeatureVector) -> f64 {
        self.forest.total_path_length(x) / self.forest.roots.len() as f64
    }

    /// Share of trees in which `x` is isolated faster than an average point (h(x) < c(ψ)):
    /// 1.0 when every tree agrees the window is unusual, near 0.5 for a typical one. A
    /// measure of confidence for verdicts. Never allocates.
    pub fn tree_agreement(&self, x: &FeatureVector) -> f64 {
        let f = &self.forest;
        let short = f
            .roots
            .iter()
            .filter(|&&root| f.value[f.leaf(root, x)] < f.c_psi)
            .count();
        short as f64 / f.roots.len() as f64
    }

    /// Per-feature contribution to the score, written to `out` (indexed like
    /// `FEATURE_NAMES`). Never allocates.
    ///
    /// Method (a telescoping path decomposition): at a split node with n samples, an average
    /// point still needs c(n) edges to be isolated; after following the split into a child
    /// with m samples it needs 1 + c(m). The split's feature is credited with the difference
    /// c(n) − 1 − c(m): positive when the split cut `x` off from most of the node's samples,
    /// negative when `x` went with the crowd. Along a path the credits sum to
    /// c(ψ) − h(x). Credits are averaged over trees and divided by c(ψ), so
    ///
    /// `score(x) == 2^(sum(out) − 1)`
    ///
    /// exactly (up to rounding): `sum(out)` is 0 for a point of average depth (score 0.5) and
    /// the features with the largest entries are the ones that isolated `x`.
    pub fn explain(&self, x: &FeatureVector, out: &mut [f64; N_FEATURES]) {
        *out = [0.0; N_FEATURES];
        let f = &self.forest;
        for &root in &f.roots {
            let mut i = root as usize;
            loop {
                let node = &f.nodes[i];
                if node.feature == LEAF {
                    break;
                }
                let next = if x[node.feature as usize] <= node.threshold32 {
                    node.left as usize
                } else {
                    node.right as usize
                };
                let c_here = average_path_length(u64::from(f.n_samples[i]));
                let c_next = average_path_length(u64::from(f.n_samples[next]));
                out[node.feature as usize] += c_here - 1.0 - c_next;
                i = next;
            }
        }
        let scale = f.roots.len() as f64 * f.c_psi;
        for v in out.iter_mut() {
            *v /= scale;
        }
    }

    /// z-score of every feature against the training mean and standard deviation:
    /// (x − mean) / max(std, [`SPREAD_FLOOR`]). Never allocates.
    pub fn feature_z(&self, x: &FeatureVector) -> [f64; N_FEATURES] {
        let s = &self.calibration.features;
        let mut z = [0.0; N_FEATURES];
        for (i, zi) in z.iter_mut().enumerate() {
            *zi = (f64::from(x[i]) - s.mean[i]) / s.std[i].max(SPREAD_FLOOR);
        }
        z
    }

    /// The range guard: how far each feature lies outside the training range, in units of
    /// that feature's training range (max − min, at least [`SPREAD_FLOOR`]). Positive above
    /// the training maximum, negative below the training minimum, 0 inside. For a feature
    /// whose training minimum is 0 (most counts and shares), `out[f] > 1` means "more than
    /// twice the training maximum". Returns the largest positive excess (0 if none). A
    /// forest cannot split outside the training range, so this is the evidence that catches
    /// floods and tunnels the score alone rates like the busiest benign window.
    /// Never allocates.
    pub fn range_excess(&self, x: &FeatureVector, out: &mut [f64; N_FEATURES]) -> f64 {
        let s = &self.calibration.features;
        let mut worst = 0.0_f64;
        for (i, o) in out.iter_mut().enumerate() {
            let v = f64::from(x[i]);
            let spread = (s.max[i] - s.min[i]).max(SPREAD_FLOOR);
            *o = if v > s.max[i] {
                (v - s.max[i]) / spread
            } else if v < s.min[i] {
                (v - s.min[i]) / spread
            } else {
                0.0
            };
            worst = worst.max(*o);
        }
        worst
    }
}

#[cfg(test)]
mod tests {
    use super::f32_at_or_below;
    use crate::features::{FeatureVector, N_FEATURES};
    use crate::model::train::{train, TrainParams};
    use crate::model::Model;

    /// One tree at a time, in tree order: what the interleaved walk must equal bit for bit.
    fn one_by_one(m: &Model, x: &FeatureVector) -> f64 {
        let f = &m.forest;
        let mut total = 0.0;
        for &root in &f.roots {
            total += f.value[f.leaf(root, x)];
        }
        total
    }

    fn points(seed: u64, n: usize) -> Vec<FeatureVector> {
        let mut s = seed;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        (0..n)
            .map(|i| {
                let mut x = [0f32; N_FEATURES];
                for v in x.iter_mut() {
                    *v = (next() % 10_000) as f32 / 1000.0 - 2.0;
                }
                // Edges: NaN goes right, infinities go to the extreme leaves.
                match i % 50 {
                    0 => x[i % N_FEATURES] = f32::NAN,
                    1 => x[i % N_FEATURES] = f32::INFINITY,
                    2 => x = [f32::NEG_INFINITY; N_FEATURES],
                    _ => {}
                }
                x
            })
            .collect()
    }

    #[test]
    fn interleaved_walk_sums_exactly_like_one_tree_at_a_time() {
        let default: Model =
            Model::from_json(include_str!("../../models/default.json"), "default.json").unwrap();
        let mut train_on = points(7, 600);
        train_on.retain(|x| x.iter().all(|v| v.is_finite()));
        // Tree counts below, at and off a multiple of the lane count (remainder walks).
        let mut models = vec![default];
        for n_trees in [1, 3, 4, 9, 13] {
            let p = TrainParams {
                n_trees,
                max_samples: 64,
                seed: n_trees as u64,
            };
            models.push(train(&train_on, &p, &[], 0).unwrap());
        }
        for m in &models {
            for x in points(99, 2_000) {
                let want = one_by_one(m, &x);
                assert_eq!(m.forest.total_path_length(&x).to_bits(), want.to_bits());
                let score = (-want / (m.forest.roots.len() as f64 * m.forest.c_psi)).exp2();
                assert_eq!(m.score(&x).to_bits(), score.to_bits());
            }
        }
    }

    #[test]
    fn f32_rounding_down_keeps_the_split_rule_exact() {
        let thresholds = [
            0.1,
            -0.1,
            0.0,
            -0.0,
            1.0,
            1e-45,
            -1e-45,
            1e-50,
            -1e-50,
            3.4e38,
            3.5e38,
            -3.5e38,
            f64::from(f32::MAX),
            f64::from(0.3f32) + 1e-12,
            f64::from(0.3f32) - 1e-12,
            f64::from(-7.25f32),
        ];
        let probes = [
            0.0f32,
            -0.0,
            0.1,
            -0.1,
            1.0,
            0.3,
            -7.25,
            f32::MAX,
            -f32::MAX,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            1e-45,
            -1e-45,
        ];
        for &t in &thresholds {
            let t32 = f32_at_or_below(t);
            assert!(f64::from(t32) <= t, "{t}: {t32}");
            let mut near = probes.to_vec();
            for d in [-2i32, -1, 0, 1, 2] {
                if t32.is_finite() {
                    near.push(f32::from_bits(t32.to_bits().wrapping_add_signed(d)));
                }
            }
            for &x in &near {
                assert_eq!(
                    x <= t32,
                    f64::from(x) <= t,
                    "x = {x:e}, t = {t:e}, t32 = {t32:e}"
                );
            }
        }
    }
}
