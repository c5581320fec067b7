//! A deterministic Isolation Forest trainer: the same samples in the same order and the same
//! seed give a byte-identical model file on every machine and every run.
//!
//! Input order matters (it decides which rows each tree draws): callers MUST sort training
//! samples by window time, then by host, before calling [`train`].
//!
//! Per tree: ψ = min(max_samples, n) rows drawn without replacement (a partial
//! Fisher–Yates shuffle of one index pool that carries over between trees); the tree grows
//! to height ceil(log2 ψ). At each node a feature is drawn uniformly among those not
//! constant in the node (all constant → leaf) and the threshold uniformly in [min, max) of
//! that feature's f32 values in the node, stored as f64 (a draw that rounds to max falls
//! back to min, as scikit-learn does). Leaves record their sample counts. Randomness comes
//! from xoshiro256** seeded through SplitMix64 — no external crate, stable across versions.
//! Then the training samples' scores and feature distributions become the calibration.

use super::format::{compile_forest, RawTree};
use super::{Calibration, FeatureStats, Model, ModelError, ScoreQuantiles, TrainedInfo};
use crate::features::{FeatureVector, FEATURE_NAMES, N_FEATURES};

/// Forest shape and seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrainParams {
    /// Number of trees (scikit-learn's `n_estimators`).
    pub n_trees: usize,
    /// Subsample size ψ per tree (capped at the number of samples).
    pub max_samples: usize,
    /// Seed of the random generator.
    pub seed: u64,
}

impl Default for TrainParams {
    /// The Isolation Forest paper's (and scikit-learn's) defaults: 100 trees, ψ = 256.
    fn default() -> Self {
        TrainParams {
            n_trees: 100,
            max_samples: 256,
            seed: 1,
        }
    }
}

/// Trains a forest on `samples` (sorted by time, then host — see the module docs) and
/// calibrates it on the same samples. `trained_on` names the sources (capture file names,
/// or "live learning"); `when_unix` is stored as the training time (the caller passes it,
/// so tests and replays stay deterministic).
pub fn train(
    samples: &[FeatureVector],
    params: &TrainParams,
    trained_on: &[String],
    when_unix: i64,
) -> Result<Model, ModelError> {
    let fail = |what: String| Err(ModelError::Train { what });
    if params.n_trees == 0 {
        return fail("n_trees is 0, expected at least 1".to_string());
    }
    if params.max_samples < 2 {
        return fail(format!(
            "max_samples is {}, expected at least 2",
            params.max_samples
        ));
    }
    if samples.len() < 2 {
        return fail(format!(
            "{} training samples, expected at least 2",
            samples.len()
        ));
    }
    if samples.len() > u32::MAX as usize {
        return fail(format!(
            "{} training samples, expected at most {}",
            samples.len(),
            u32::MAX
        ));
    }
    for (i, x) in samples.iter().enumerate() {
        if let Some(f) = x.iter().position(|v| !v.is_finite()) {
            return fail(format!(
                "sample {i}: feature {f} ({}) is {}, expected a finite value",
                FEATURE_NAMES[f], x[f]
            ));
        }
    }

    let psi = params.max_samples.min(samples.len());
    // ceil(log2 ψ) for ψ ≥ 2: the bit length of ψ − 1.
    let height_limit = usize::BITS - (psi - 1).leading_zeros();
    let mut grower = Grower {
        samples,
        rng: Rng::new(params.seed),
        height_limit,
    };
    let mut pool: Vec<u32> = (0..samples.len() as u32).collect();
    let mut rows: Vec<u32> = Vec::with_capacity(psi);
    let mut trees = Vec::with_capacity(params.n_trees);
    for _ in 0..params.n_trees {
        for i in 0..psi {
            let j = i + grower.rng.below(samples.len() - i);
            pool.swap(i, j);
        }
        rows.clear();
        rows.extend_from_slice(&pool[..psi]);
        let mut tree = RawTree::default();
        grower.grow(&mut tree, &mut rows, 0);
        trees.push(tree);
    }

    let forest = compile_forest(&trees, psi, "training")?;
    let mut model = Model {
        forest,
        calibration: Calibration::default(),
        info: TrainedInfo {
            when_unix,
            on: trained_on.to_vec(),
            samples: samples.len() as u64,
            seed: params.seed,
            n_trees: params.n_trees,
            max_samples: psi,
        },
    };
    model.calibration = calibrate(&model, samples);
    Ok(model)
}

struct Grower<'a> {
    samples: &'a [FeatureVector],
    rng: Rng,
    height_limit: u32,
}

impl Grower<'_> {
    /// Grows the subtree over `rows` in pre-order (a node, then its left subtree, then its
    /// right), returning the node's index. Recursion depth is bounded by `height_limit`.
    fn grow(&mut self, tree: &mut RawTree, rows: &mut [u32], depth: u32) -> i64 {
        let id = tree.feature.len();
        tree.feature.push(-1);
        tree.threshold.push(-2.0);
        tree.left.push(-1);
        tree.right.push(-1);
        tree.n_samples.push(rows.len() as u64);
        if depth >= self.height_limit || rows.len() <= 1 {
            return id as i64;
        }

        let mut lo = [f32::INFINITY; N_FEATURES];
        let mut hi = [f32::NEG_INFINITY; N_FEATURES];
        for &r in rows.iter() {
            let x = &self.samples[r as usize];
            for f in 0..N_FEATURES {
                lo[f] = lo[f].min(x[f]);
                hi[f] = hi[f].max(x[f]);
            }
        }
        let mut candidates = [0usize; N_FEATURES];
        let mut k = 0;
        for f in 0..N_FEATURES {
            if lo[f] < hi[f] {
                candidates[k] = f;
                k += 1;
            }
        }
        if k == 0 {
            return id as i64;
        }
        let f = candidates[self.rng.below(k)];
        let (a, b) = (f64::from(lo[f]), f64::from(hi[f]));
        let mut threshold = a + self.rng.unit() * (b - a);
        if threshold >= b {
            threshold = a;
        }

        // Partition: rows with x[f] <= threshold first. The minimum goes left and the
        // maximum right, so both sides are non-empty.
        let mut split = 0;
        for i in 0..rows.len() {
            if f64::from(self.samples[rows[i] as usize][f]) <= threshold {
                rows.swap(i, split);
                split += 1;
            }
        }
        let (left_rows, right_rows) = rows.split_at_mut(split);
        let left = self.grow(tree, left_rows, depth + 1);
        let right = self.grow(tree, right_rows, depth + 1);
        tree.feature[id] = f as i64;
        tree.threshold[id] = threshold;
        tree.left[id] = left;
        tree.right[id] = right;
        id as i64
    }
}

/// Score quantiles and per-feature statistics of the training samples.
fn calibrate(model: &Model, samples: &[FeatureVector]) -> Calibration {
    let mut scores: Vec<f64> = samples.iter().map(|x| model.score(x)).collect();
    scores.sort_by(f64::total_cmp);
    let score = ScoreQuantiles {
        p50: quantile(&scores, 0.5),
        p90: quantile(&scores, 0.9),
        p99: quantile(&scores, 0.99),
        p99_9: quantile(&scores, 0.999),
        max: quantile(&scores, 1.0),
    };

    let mut features = FeatureStats::default();
    let mut column: Vec<f64> = Vec::with_capacity(samples.len());
    let n = samples.len() as f64;
    for f in 0..N_FEATURES {
        column.clear();
        column.extend(samples.iter().map(|x| f64::from(x[f])));
        column.sort_by(f64::total_cmp);
        features.min[f] = quantile(&column, 0.0);
        features.p50[f] = quantile(&column, 0.5);
        features.p99[f] = quantile(&column, 0.99);
        features.max[f] = quantile(&column, 1.0);
        let mean = column.iter().sum::<f64>() / n;
        let var = column.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        // Clamp: the mean of equal values can round a hair outside [min, max].
        features.mean[f] = mean.clamp(features.min[f], features.max[f]);
        features.std[f] = var.sqrt();
    }
    Calibration { score, features }
}

/// Quantile `q` of sorted, non-empty `v` with linear interpolation between closest ranks
/// (numpy's default method), clamped to the two neighbours so quantiles never decrease.
pub(crate) fn quantile(v: &[f64], q: f64) -> f64 {
    let Some(&last) = v.last() else {
        return 0.0;
    };
    let h = (v.len() - 1) as f64 * q;
    let lo = (h.floor() as usize).min(v.len() - 1);
    let hi = (lo + 1).min(v.len() - 1);
    if lo == v.len() - 1 {
        return last;
    }
    let (a, b) = (v[lo], v[hi]);
    (a + (h - lo as f64) * (b - a)).clamp(a, b)
}

/// xoshiro256** (Blackman & Vigna), seeded by SplitMix64 as its authors recommend.
pub(crate) struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        let mut sm = seed;
        let mut s = [0u64; 4];
        for word in &mut s {
            *word = splitmix64(&mut sm);
        }
        Rng { s }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, n) without modulo bias (Lemire's method); `n` ≥ 1.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        let n = n as u64;
        loop {
            let m = u128::from(self.next_u64()) * u128::from(n);
            let low = m as u64;
            if low < n {
                let threshold = n.wrapping_neg() % n;
                if low < threshold {
                    continue;
                }
            }
            return (m >> 64) as usize;
        }
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_reference_output() {
        // Reference: Vigna's splitmix64.c with x = 0.
        let mut s = 0u64;
        assert_eq!(splitmix64(&mut s), 0xe220_a839_7b1d_cdaf);
        assert_eq!(splitmix64(&mut s), 0x6e78_9e6a_a1b9_65f4);
    }

    #[test]
    fn rng_below_stays_in_range_and_covers_it() {
        let mut rng = Rng::new(7);
        let mut seen = [0u32; 7];
        for _ in 0..7000 {
            seen[rng.below(7)] += 1;
        }
        assert!(seen.iter().all(|&c| (800..1200).contains(&c)), "{seen:?}");
        for _ in 0..1000 {
            let u = rng.unit();
            assert!((0.0..1.0).contains(&u));
        }
    }

    #[test]
    fn quantile_interpolates_like_numpy() {
        let v = [1.0, 2.0, 4.0, 8.0];
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(quantile(&v, 1.0), 8.0);
        assert_eq!(quantile(&v, 0.5), 3.0);
        // numpy.quantile([1, 2, 4, 8], 0.9) = 6.8
        assert!((quantile(&v, 0.9) - 6.8).abs() < 1e-12);
        assert_eq!(quantile(&[5.0], 0.99), 5.0);
    }

    #[test]
    fn trained_trees_respect_height_limit_and_sample_counts() {
        let samples: Vec<FeatureVector> = (0..1000)
            .map(|i| {
                let mut x = [0.0f32; N_FEATURES];
                x[0] = (i % 97) as f32;
                x[3] = (i % 13) as f32 * 0.5;
                x
            })
            .collect();
        let params = TrainParams {
            n_trees: 10,
            max_samples: 100,
            seed: 3,
        };
        let model = train(&samples, &params, &[], 0).unwrap();
        let f = &model.forest;
        assert_eq!(f.n_trees(), 10);
        for t in 0..f.n_trees() {
            let range = f.tree_range(t);
            assert_eq!(f.n_samples[range.start], 100);
            // ceil(log2 100) = 7: a leaf's value is depth + c(n), depth ≤ 7.
            for i in range {
                let node = f.nodes[i];
                if node.feature != super::super::score::LEAF {
                    assert!(
                        node.feature == 0 || node.feature == 3,
                        "constant feature split"
                    );
                } else {
                    let depth =
                        f.value[i] - super::super::average_path_length(f.n_samples[i].into());
                    assert!(depth <= 7.0 + 1e-9, "depth {depth}");
                }
            }
        }
    }
}
