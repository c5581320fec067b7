//! The `phantomnet.iforest.v1` model file: human-readable JSON, validated completely on
//! load (a bad model must fail at start-up, naming what is wrong, never at scoring time),
//! written deterministically and atomically.
//!
//! Layout (every tree as flat per-node arrays, node 0 the root):
//!
//! ```json
//! {
//!   "format": "phantomnet.iforest.v1",
//!   "schema": { "name": "phantomnet.features.v1", "hash": "…", "features": ["pkt_rate_out", …] },
//!   "n_trees": 100, "max_samples": 256, "c_psi": 10.244770920119917,
//!   "trained": { "when": 1700000000, "on": ["home.pcap"], "samples": 10000, "seed": 1 },
//!   "calibration": {
//!     "score": { "p50": …, "p90": …, "p99": …, "p99_9": …, "max": … },
//!     "features": { "min": [15], "p50": [15], "p99": [15], "max": [15], "mean": [15], "std": [15] }
//!   },
//!   "trees": [ { "feature": [], "threshold": [], "left": [], "right": [], "n_samples": [] } ]
//! }
//! ```
//!
//! A leaf has `left = right = feature = -1` (its threshold is ignored and written as -2.0,
//! scikit-learn's placeholder). A split sends `x[feature] <= threshold` to `left`.
//! Thresholds are f64 and round-trip exactly (serde_json's `float_roundtrip`).

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::score::{f32_at_or_below, Forest, Node, LEAF};
use super::{
    average_path_length, Calibration, FeatureStats, Model, ModelError, ScoreQuantiles, TrainedInfo,
    FORMAT,
};
use crate::features::{schema_hash, FEATURE_NAMES, N_FEATURES, SCHEMA_NAME};

/// Threshold written for leaves (scikit-learn's `TREE_UNDEFINED`).
const LEAF_THRESHOLD: f64 = -2.0;

/// Relative tolerance when checking `c_psi` against c(max_samples).
const C_PSI_TOLERANCE: f64 = 1e-9;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileModel {
    format: String,
    schema: FileSchema,
    n_trees: u64,
    max_samples: u64,
    c_psi: f64,
    trained: FileTrained,
    calibration: FileCalibration,
    trees: Vec<RawTree>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSchema {
    name: String,
    hash: String,
    features: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTrained {
    when: i64,
    on: Vec<String>,
    samples: u64,
    seed: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCalibration {
    score: FileScoreQuantiles,
    features: FileFeatureStats,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileScoreQuantiles {
    p50: f64,
    p90: f64,
    p99: f64,
    p99_9: f64,
    max: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFeatureStats {
    min: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    max: Vec<f64>,
    mean: Vec<f64>,
    std: Vec<f64>,
}

/// One tree as stored in the file (and as the trainer produces it), indices relative to
/// the tree.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTree {
    pub feature: Vec<i64>,
    pub threshold: Vec<f64>,
    pub left: Vec<i64>,
    pub right: Vec<i64>,
    pub n_samples: Vec<u64>,
}

impl Model {
    /// Reads and validates a model file; every error names `path`.
    pub fn load(path: &Path) -> Result<Model, ModelError> {
        let text = fs::read_to_string(path).map_err(|source| ModelError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Model::from_json(&text, &path.display().to_string())
    }

    /// Parses and validates a model from JSON text; `origin` (a file name) prefixes errors.
    pub fn from_json(text: &str, origin: &str) -> Result<Model, ModelError> {
        let file: FileModel = serde_json::from_str(text).map_err(|source| ModelError::Json {
            origin: origin.to_string(),
            source,
        })?;
        if file.format != FORMAT {
            return Err(ModelError::Format {
                origin: origin.to_string(),
                found: file.format,
                expected: FORMAT,
            });
        }
        check_schema(&file.schema, origin)?;
        let max_samples = check_max_samples(file.max_samples, file.c_psi, origin)?;
        if file.n_trees != file.trees.len() as u64 || file.trees.is_empty() {
            return Err(ModelError::TreeCount {
                origin: origin.to_string(),
                declared: file.n_trees,
                found: file.trees.len(),
            });
        }
        let forest = compile_forest(&file.trees, max_samples, origin)?;
        let calibration = check_calibration(&file.calibration, origin)?;
        let info = TrainedInfo {
            when_unix: file.trained.when,
            on: file.trained.on,
            samples: file.trained.samples,
            seed: file.trained.seed,
            n_trees: forest.n_trees(),
            max_samples,
        };
        Ok(Model {
            forest,
            calibration,
            info,
        })
    }

    /// Writes the model atomically: a temporary file in the same directory, fsync, rename
    /// over `path`, then fsync of the directory (best effort). Errors name the file.
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        let write_err = |p: &Path| {
            let p = p.to_path_buf();
            move |source| ModelError::Write { path: p, source }
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model.json".to_string());
        let tmp: PathBuf = path.with_file_name(format!(".{name}.tmp.{}", std::process::id()));
        let text = self.to_json();
        let result = (|| {
            let mut file = fs::File::create(&tmp).map_err(write_err(&tmp))?;
            file.write_all(text.as_bytes()).map_err(write_err(&tmp))?;
            file.sync_all().map_err(write_err(&tmp))?;
            fs::rename(&tmp, path).map_err(write_err(path))
        })();
        if result.is_err() {
            // Leave no half-written temporary behind; the original file is untouched.
            let _ = fs::remove_file(&tmp);
            return result;
        }
        if let Some(dir) = path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            // Makes the rename durable on Linux; not every platform can open a directory.
            if let Ok(d) = fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }

    /// The model file's text. Deterministic: the same model always gives the same bytes.
    /// Arrays of numbers stay on one line each so the file is compact yet diffable.
    pub fn to_json(&self) -> String {
        let f = &self.forest;
        let mut s = String::with_capacity(64 + f.nodes.len() * 40);
        s.push_str("{\n");
        push_kv_str(&mut s, 1, "format", FORMAT);
        s.push_str("  \"schema\": {\n");
        push_kv_str(&mut s, 2, "name", SCHEMA_NAME);
        push_kv_str(&mut s, 2, "hash", &schema_hash());
        s.push_str("    \"features\": [");
        for (i, name) in FEATURE_NAMES.iter().enumerate() {
            if i > 0 {
                s.push_str(", ");
            }
            push_json_str(&mut s, name);
        }
        s.push_str("]\n  },\n");
        let _ = writeln!(s, "  \"n_trees\": {},", f.n_trees());
        let _ = writeln!(s, "  \"max_samples\": {},", f.max_samples);
        s.push_str("  \"c_psi\": ");
        push_f64(&mut s, f.c_psi);
        s.push_str(",\n");

        let info = &self.info;
        s.push_str("  \"trained\": {\n");
        let _ = writeln!(s, "    \"when\": {},", info.when_unix);
        s.push_str("    \"on\": [");
        for (i, on) in info.on.iter().enumerate() {
            if i > 0 {
                s.push_str(", ");
            }
            push_json_str(&mut s, on);
        }
        s.push_str("],\n");
        let _ = writeln!(s, "    \"samples\": {},", info.samples);
        let _ = writeln!(s, "    \"seed\": {}", info.seed);
        s.push_str("  },\n");

        let c = &self.calibration;
        s.push_str("  \"calibration\": {\n    \"score\": {");
        let q = [
            ("p50", c.score.p50),
            ("p90", c.score.p90),
            ("p99", c.score.p99),
            ("p99_9", c.score.p99_9),
            ("max", c.score.max),
        ];
        for (i, (k, v)) in q.iter().enumerate() {
            if i > 0 {
                s.push_str(", ");
            }
            let _ = write!(s, "\"{k}\": ");
            push_f64(&mut s, *v);
        }
        s.push_str("},\n    \"features\": {\n");
        let fs_ = &c.features;
        let arrays: [(&str, &[f64; N_FEATURES]); 6] = [
            ("min", &fs_.min),
            ("p50", &fs_.p50),
            ("p99", &fs_.p99),
            ("max", &fs_.max),
            ("mean", &fs_.mean),
            ("std", &fs_.std),
        ];
        for (i, (k, arr)) in arrays.iter().enumerate() {
            let _ = write!(s, "      \"{k}\": ");
            push_f64_array(&mut s, arr.iter().copied());
            s.push_str(if i + 1 < arrays.len() { ",\n" } else { "\n" });
        }
        s.push_str("    }\n  },\n");

        s.push_str("  \"trees\": [\n");
        for t in 0..f.n_trees() {
            let range = f.tree_range(t);
            let base = range.start as i64;
            let nodes = &f.nodes[range.clone()];
            let values = &f.value[range.clone()];
            let counts = &f.n_samples[range];
            let is_leaf = |n: &Node| n.feature == LEAF;
            s.push_str("    {\n      \"feature\": ");
            push_i64_array(
                &mut s,
                nodes
                    .iter()
                    .map(|n| if is_leaf(n) { -1 } else { i64::from(n.feature) }),
            );
            s.push_str(",\n      \"threshold\": ");
            push_f64_array(
                &mut s,
                nodes
                    .iter()
                    .zip(values)
                    .map(|(n, &v)| if is_leaf(n) { LEAF_THRESHOLD } else { v }),
            );
            s.push_str(",\n      \"left\": ");
            push_i64_array(
                &mut s,
                nodes.iter().map(|n| {
                    if is_leaf(n) {
                        -1
                    } else {
                        i64::from(n.left) - base
                    }
                }),
            );
            s.push_str(",\n      \"right\": ");
            push_i64_array(
                &mut s,
                nodes.iter().map(|n| {
                    if is_leaf(n) {
                        -1
                    } else {
                        i64::from(n.right) - base
                    }
                }),
            );
            s.push_str(",\n      \"n_samples\": ");
            push_i64_array(&mut s, counts.iter().map(|&n| i64::from(n)));
            s.push_str(if t + 1 < f.n_trees() {
                "\n    },\n"
            } else {
                "\n    }\n"
            });
        }
        s.push_str("  ]\n}\n");
        s
    }
}

fn check_schema(schema: &FileSchema, origin: &str) -> Result<(), ModelError> {
    let ours_hash = schema_hash();
    if schema.name != SCHEMA_NAME || schema.hash != ours_hash {
        return Err(ModelError::Schema {
            origin: origin.to_string(),
            model_name: schema.name.clone(),
            model_hash: schema.hash.clone(),
            ours_name: SCHEMA_NAME,
            ours_hash,
        });
    }
    if schema.features.len() != N_FEATURES {
        return Err(ModelError::FeatureCount {
            origin: origin.to_string(),
            found: schema.features.len(),
            expected: N_FEATURES,
        });
    }
    for (index, (found, expected)) in schema.features.iter().zip(FEATURE_NAMES).enumerate() {
        if found != expected {
            return Err(ModelError::FeatureName {
                origin: origin.to_string(),
                index,
                found: found.clone(),
                expected,
            });
        }
    }
    Ok(())
}

fn check_max_samples(max_samples: u64, c_psi: f64, origin: &str) -> Result<usize, ModelError> {
    if !(2..=u64::from(u32::MAX)).contains(&max_samples) {
        return Err(ModelError::MaxSamples {
            origin: origin.to_string(),
            found: max_samples,
        });
    }
    let expected = average_path_length(max_samples);
    let consistent = (c_psi - expected).abs() <= C_PSI_TOLERANCE * expected;
    if !consistent {
        return Err(ModelError::CPsi {
            origin: origin.to_string(),
            found: c_psi,
            expected,
            max_samples,
        });
    }
    usize::try_from(max_samples).map_err(|_| ModelError::MaxSamples {
        origin: origin.to_string(),
        found: max_samples,
    })
}

/// Validates the trees and lays them out in one flat array. Checks, per tree: equal array
/// lengths, at least one node, leaf/split shape, child indices in range, feature indices,
/// finite thresholds, every node reached exactly once from the root (no cycles, no shared
/// or orphan nodes), n_samples ≥ 1, the root holding `max_samples` and every split's
/// n_samples equal to its children's sum. The forest then scores without any checks.
pub(crate) fn compile_forest(
    trees: &[RawTree],
    max_samples: usize,
    origin: &str,
) -> Result<Forest, ModelError> {
    let total: usize = trees.iter().map(|t| t.feature.len()).sum();
    if total >= LEAF as usize {
        return Err(ModelError::TooManyNodes {
            origin: origin.to_string(),
            found: total,
            max: LEAF as usize - 1,
        });
    }
    let mut forest = Forest {
        nodes: Vec::with_capacity(total),
        value: Vec::with_capacity(total),
        n_samples: Vec::with_capacity(total),
        roots: Vec::with_capacity(trees.len()),
        max_samples,
        c_psi: average_path_length(max_samples as u64),
    };
    // Scratch reused across trees.
    let mut depth: Vec<u32> = Vec::new();
    let mut stack: Vec<usize> = Vec::new();
    for (t, tree) in trees.iter().enumerate() {
        let base = forest.nodes.len();
        forest.roots.push(base as u32);
        compile_tree(tree, t, origin, &mut forest, &mut depth, &mut stack)?;
    }
    Ok(forest)
}

/// Validates tree `t` and appends it to `forest`.
fn compile_tree(
    tree: &RawTree,
    t: usize,
    origin: &str,
    forest: &mut Forest,
    depth: &mut Vec<u32>,
    stack: &mut Vec<usize>,
) -> Result<(), ModelError> {
    let max_samples = forest.max_samples;
    let base = forest.nodes.len();
    let n = tree.feature.len();
    let lengths: [(&'static str, usize); 4] = [
        ("threshold", tree.threshold.len()),
        ("left", tree.left.len()),
        ("right", tree.right.len()),
        ("n_samples", tree.n_samples.len()),
    ];
    for (array, len) in lengths {
        if len != n {
            return Err(ModelError::ArrayLength {
                origin: origin.to_string(),
                tree: t,
                array,
                len,
                expected: n,
            });
        }
    }
    if n == 0 {
        return Err(ModelError::EmptyTree {
            origin: origin.to_string(),
            tree: t,
        });
    }
    let shape = |node: usize, what: String| ModelError::NodeShape {
        origin: origin.to_string(),
        tree: t,
        node,
        what,
    };

    // Shape of every node on its own.
    for i in 0..n {
        let (f, l, r) = (tree.feature[i], tree.left[i], tree.right[i]);
        if tree.n_samples[i] == 0 {
            return Err(ModelError::NSamples {
                origin: origin.to_string(),
                tree: t,
                node: i,
                found: 0,
                expected: "at least 1".to_string(),
            });
        }
        if l == -1 {
            if r != -1 || f != -1 {
                return Err(shape(
                    i,
                    format!(
                        "a leaf (left = -1) must have right = -1 and feature = -1, found right = {r}, feature = {f}"
                    ),
                ));
            }
            continue;
        }
        if r == -1 {
            return Err(shape(
                i,
                format!("a split node (left = {l}) must have a right child, found right = -1"),
            ));
        }
        for (which, child) in [("left", l), ("right", r)] {
            if child < 0 || child >= n as i64 {
                return Err(ModelError::ChildOutOfRange {
                    origin: origin.to_string(),
                    tree: t,
                    node: i,
                    which,
                    child,
                    n_nodes: n,
                });
            }
        }
        if f < 0 || f >= N_FEATURES as i64 {
            return Err(ModelError::FeatureIndex {
                origin: origin.to_string(),
                tree: t,
                node: i,
                feature: f,
                max: N_FEATURES,
            });
        }
        if !tree.threshold[i].is_finite() {
            return Err(ModelError::Threshold {
                origin: origin.to_string(),
                tree: t,
                node: i,
                threshold: tree.threshold[i],
            });
        }
    }

    // Every node reached exactly once from the root; record depths (edges).
    const UNSEEN: u32 = u32::MAX;
    depth.clear();
    depth.resize(n, UNSEEN);
    stack.clear();
    depth[0] = 0;
    stack.push(0);
    while let Some(i) = stack.pop() {
        if tree.left[i] == -1 {
            continue;
        }
        for child in [tree.left[i] as usize, tree.right[i] as usize] {
            if depth[child] != UNSEEN {
                return Err(ModelError::Cycle {
                    origin: origin.to_string(),
                    tree: t,
                    node: child,
                });
            }
            depth[child] = depth[i] + 1;
            stack.push(child);
        }
    }
    if let Some(orphan) = depth.iter().position(|&d| d == UNSEEN) {
        return Err(ModelError::Unreachable {
            origin: origin.to_string(),
            tree: t,
            node: orphan,
        });
    }

    // Sample counts: the root holds ψ, splits partition their samples.
    if tree.n_samples[0] != max_samples as u64 {
        return Err(ModelError::NSamples {
            origin: origin.to_string(),
            tree: t,
            node: 0,
            found: tree.n_samples[0],
            expected: format!("max_samples ({max_samples}) at the root"),
        });
    }
    for i in 0..n {
        if tree.left[i] == -1 {
            continue;
        }
        let (l, r) = (tree.left[i] as usize, tree.right[i] as usize);
        let sum = tree.n_samples[l].saturating_add(tree.n_samples[r]);
        if tree.n_samples[i] != sum {
            return Err(ModelError::NSamples {
                origin: origin.to_string(),
                tree: t,
                node: i,
                found: tree.n_samples[i],
                expected: format!(
                    "the sum of its children's ({l}: {}, {r}: {})",
                    tree.n_samples[l], tree.n_samples[r]
                ),
            });
        }
    }

    for (i, &d) in depth.iter().enumerate() {
        // n_samples ≤ root's ψ ≤ u32::MAX by the checks above.
        forest.n_samples.push(tree.n_samples[i] as u32);
        if tree.left[i] == -1 {
            // A leaf's children are itself: interleaved scoring steps a finished walk in place.
            let me = (base + i) as u32;
            forest.nodes.push(Node {
                threshold32: 0.0,
                feature: LEAF,
                left: me,
                right: me,
            });
            forest
                .value
                .push(f64::from(d) + average_path_length(tree.n_samples[i]));
        } else {
            forest.nodes.push(Node {
                threshold32: f32_at_or_below(tree.threshold[i]),
                feature: tree.feature[i] as u32,
                left: (base + tree.left[i] as usize) as u32,
                right: (base + tree.right[i] as usize) as u32,
            });
            forest.value.push(tree.threshold[i]);
        }
    }
    Ok(())
}

fn check_calibration(c: &FileCalibration, origin: &str) -> Result<Calibration, ModelError> {
    let err = |field: &str, what: String| ModelError::Calibration {
        origin: origin.to_string(),
        field: field.to_string(),
        what,
    };
    let q = &c.score;
    let named = [
        ("score.p50", q.p50),
        ("score.p90", q.p90),
        ("score.p99", q.p99),
        ("score.p99_9", q.p99_9),
        ("score.max", q.max),
    ];
    for (field, v) in named {
        if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
            return Err(err(field, format!("{v} is not a score, expected 0..=1")));
        }
    }
    for pair in named.windows(2) {
        if pair[0].1 > pair[1].1 {
            return Err(err(
                pair[1].0,
                format!(
                    "{} is below {} = {}; expected non-decreasing quantiles",
                    pair[1].1, pair[0].0, pair[0].1
                ),
            ));
        }
    }

    let array = |field: &str, v: &[f64]| -> Result<[f64; N_FEATURES], ModelError> {
        let arr: [f64; N_FEATURES] = v.try_into().map_err(|_| {
            err(
                field,
                format!("has {} values, expected {N_FEATURES}", v.len()),
            )
        })?;
        if let Some(i) = arr.iter().position(|x| !x.is_finite()) {
            return Err(err(
                &format!("{field}[{i}]"),
                format!("{} is not finite", arr[i]),
            ));
        }
        Ok(arr)
    };
    let f = &c.features;
    let stats = FeatureStats {
        min: array("features.min", &f.min)?,
        p50: array("features.p50", &f.p50)?,
        p99: array("features.p99", &f.p99)?,
        max: array("features.max", &f.max)?,
        mean: array("features.mean", &f.mean)?,
        std: array("features.std", &f.std)?,
    };
    for (i, name) in FEATURE_NAMES.iter().enumerate() {
        let chain = [
            ("min", stats.min[i]),
            ("p50", stats.p50[i]),
            ("p99", stats.p99[i]),
            ("max", stats.max[i]),
        ];
        for pair in chain.windows(2) {
            if pair[0].1 > pair[1].1 {
                return Err(err(
                    &format!("features.{}[{i}]", pair[1].0),
                    format!(
                        "{} is below features.{}[{i}] = {} ({}); expected min <= p50 <= p99 <= max",
                        pair[1].1, pair[0].0, pair[0].1, name
                    ),
                ));
            }
        }
        if stats.std[i] < 0.0 {
            return Err(err(
                &format!("features.std[{i}]"),
                format!("{} is negative ({name})", stats.std[i]),
            ));
        }
    }
    Ok(Calibration {
        score: ScoreQuantiles {
            p50: q.p50,
            p90: q.p90,
            p99: q.p99,
            p99_9: q.p99_9,
            max: q.max,
        },
        features: stats,
    })
}

fn push_kv_str(s: &mut String, indent: usize, key: &str, value: &str) {
    for _ in 0..indent {
        s.push_str("  ");
    }
    push_json_str(s, key);
    s.push_str(": ");
    push_json_str(s, value);
    s.push_str(",\n");
}

fn push_json_str(s: &mut String, v: &str) {
    s.push('"');
    for ch in v.chars() {
        match ch {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(s, "\\u{:04x}", c as u32);
            }
            c => s.push(c),
        }
    }
    s.push('"');
}

/// Shortest representation that parses back to the same f64 (ryu, through serde_json).
fn push_f64(s: &mut String, v: f64) {
    match serde_json::Number::from_f64(v) {
        Some(n) => {
            let _ = write!(s, "{n}");
        }
        // Unreachable for a validated model: every stored float is checked finite.
        None => s.push_str("null"),
    }
}

fn push_f64_array(s: &mut String, values: impl Iterator<Item = f64>) {
    s.push('[');
    for (i, v) in values.enumerate() {
        if i > 0 {
            s.push(',');
        }
        push_f64(s, v);
    }
    s.push(']');
}

fn push_i64_array(s: &mut String, values: impl Iterator<Item = i64>) {
    s.push('[');
    for (i, v) in values.enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{v}");
    }
    s.push(']');
}
