//! Isolation Forest: scikit-learn parity, loader validation (one test per error, each
//! checking the message names the thing), determinism, save/load, explanations.

// Helpers outside #[test] functions unwrap too; a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};

use phantomnet::features::{FeatureVector, FEATURE_NAMES, N_FEATURES};
use phantomnet::model::{train, Model, TrainParams};
use serde_json::Value;

fn fixture_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sklearn_parity.json")
}

fn fixture() -> Value {
    let text = std::fs::read_to_string(fixture_path()).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn points(v: &Value) -> Vec<FeatureVector> {
    v["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let row = row.as_array().unwrap();
            let mut x = [0f32; N_FEATURES];
            for (i, val) in row.iter().enumerate() {
                x[i] = val.as_f64().unwrap() as f32;
            }
            x
        })
        .collect()
}

/// Deterministic test data: SplitMix64 + Box–Muller.
struct TestRng(u64);

impl TestRng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        (-2.0 * self.unit().ln()).sqrt() * (std::f64::consts::TAU * self.unit()).cos()
    }
}

/// A Gaussian cloud in all 15 dimensions, plus two constant columns and some duplicates.
fn gaussian_cloud(n: usize, seed: u64) -> Vec<FeatureVector> {
    let mut rng = TestRng(seed);
    let mut out: Vec<FeatureVector> = (0..n)
        .map(|_| {
            let mut x = [0f32; N_FEATURES];
            for (i, v) in x.iter_mut().enumerate() {
                *v = match i {
                    7 => 0.0,
                    9 => 1.5,
                    _ => (2.0 + rng.normal()) as f32,
                };
            }
            x
        })
        .collect();
    for i in 0..n / 20 {
        out.push(out[i * 7 % n]);
    }
    out
}

fn small_model() -> Model {
    let params = TrainParams {
        n_trees: 3,
        max_samples: 16,
        seed: 5,
    };
    train(
        &gaussian_cloud(200, 9),
        &params,
        &["unit.pcap".to_string()],
        1_700_000_000,
    )
    .unwrap()
}

fn small_value() -> Value {
    serde_json::from_str(&small_model().to_json()).unwrap()
}

/// Loads a mutated model and returns its error message (the test fails if it loads).
fn load_err(v: &Value) -> String {
    match Model::from_json(&v.to_string(), "bad.json") {
        Ok(_) => panic!("a broken model loaded"),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.starts_with("bad.json"),
                "message must name the file: {msg}"
            );
            msg
        }
    }
}

fn assert_names(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "`{msg}` should mention `{p}`");
    }
}

#[test]
fn scores_equal_sklearn_score_samples() {
    let v = fixture();
    let model = Model::from_json(&v["model"].to_string(), "sklearn_parity.json").unwrap();
    assert_eq!(model.n_trees(), 100);
    assert_eq!(model.max_samples(), 256);
    let xs = points(&v);
    let expected: Vec<f64> = v["expected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_f64().unwrap())
        .collect();
    assert_eq!(xs.len(), expected.len());
    assert!(xs.len() >= 1000);
    let mut worst = 0.0f64;
    for (i, (x, want)) in xs.iter().zip(&expected).enumerate() {
        let got = model.score(x);
        assert!(
            (got - want).abs() < 1e-9,
            "point {i}: ours {got}, sklearn {want}"
        );
        worst = worst.max((got - want).abs());
    }
    // The fixture must reach beyond the training data, or it proves little.
    let max_cal = model.calibration().score.max;
    assert!(expected.iter().any(|&e| e > max_cal));
    eprintln!(
        "sklearn parity: {} points, max |diff| = {worst:e}",
        xs.len()
    );
}

#[test]
fn sklearn_model_round_trips_byte_identically() {
    let v = fixture();
    let model = Model::from_json(&v["model"].to_string(), "sklearn_parity.json").unwrap();
    let text = model.to_json();
    let again = Model::from_json(&text, "resaved").unwrap();
    assert_eq!(again.to_json(), text);
    // Every threshold survives: scores stay identical, not merely close.
    for x in points(&v).iter().take(300) {
        assert_eq!(model.score(x).to_bits(), again.score(x).to_bits());
    }
    // The re-saved file equals the exported one value for value (thresholds exact).
    let resaved: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(resaved["trees"], v["model"]["trees"]);
    assert_eq!(resaved["calibration"], v["model"]["calibration"]);
}

#[test]
fn training_is_deterministic_for_a_seed() {
    let data = gaussian_cloud(3000, 1);
    let params = TrainParams {
        n_trees: 50,
        max_samples: 256,
        seed: 42,
    };
    let on = vec!["a.pcap".to_string(), "b.pcap".to_string()];
    let a = train(&data, &params, &on, 1_700_000_000).unwrap().to_json();
    let b = train(&data, &params, &on, 1_700_000_000).unwrap().to_json();
    assert_eq!(a, b);
    let other = TrainParams { seed: 43, ..params };
    let c = train(&data, &other, &on, 1_700_000_000).unwrap().to_json();
    assert_ne!(a, c, "a different seed must give a different forest");
}

#[test]
fn trained_info_is_recorded() {
    let data = gaussian_cloud(100, 2);
    let params = TrainParams {
        n_trees: 4,
        max_samples: 256,
        seed: 8,
    };
    let model = train(&data, &params, &["live learning".to_string()], 123).unwrap();
    let info = model.info();
    assert_eq!(info.when_unix, 123);
    assert_eq!(info.on, vec!["live learning".to_string()]);
    assert_eq!(info.samples, data.len() as u64);
    assert_eq!(info.seed, 8);
    assert_eq!(info.n_trees, 4);
    // ψ is capped at the number of samples.
    assert_eq!(info.max_samples, data.len());
    assert_eq!(model.max_samples(), data.len());
}

#[test]
fn save_and_load_round_trip() {
    let model = small_model();
    let dir = std::env::temp_dir().join(format!("phantomnet-model-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.json");
    model.save(&path).unwrap();
    // Saving again replaces the file atomically.
    model.save(&path).unwrap();
    let loaded = Model::load(&path).unwrap();
    assert_eq!(loaded.to_json(), model.to_json());
    assert_eq!(loaded.info(), model.info());
    assert_eq!(loaded.calibration(), model.calibration());
    let x = [2.5f32; N_FEATURES];
    assert_eq!(loaded.score(&x).to_bits(), model.score(&x).to_bits());
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("m.json")]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn save_into_missing_directory_names_the_path() {
    let path = std::env::temp_dir().join("phantomnet-no-such-dir/sub/m.json");
    let msg = small_model().save(&path).unwrap_err().to_string();
    assert_names(&msg, &["phantomnet-no-such-dir", "cannot write"]);
}

#[test]
fn load_of_missing_file_names_the_path() {
    let msg = Model::load(Path::new("/nonexistent/phantomnet/model.json"))
        .unwrap_err()
        .to_string();
    assert_names(&msg, &["/nonexistent/phantomnet/model.json", "cannot read"]);
}

#[test]
fn outlier_scores_above_the_clouds_p99() {
    let data = gaussian_cloud(4000, 11);
    let model = train(&data, &TrainParams::default(), &[], 0).unwrap();
    let cal = *model.calibration();
    assert!(cal.score.p50 < cal.score.p90 && cal.score.p90 < cal.score.p99);
    assert!(cal.score.p99 <= cal.score.p99_9 && cal.score.p99_9 <= cal.score.max);

    // Displaced by 5 σ on five of the thirteen varying features. (An Isolation Forest on
    // a 13-dimensional cloud barely notices one or two displaced features: scikit-learn
    // rates such a point below its p99 too.)
    let displaced = [0usize, 3, 4, 11, 13];
    let mut outlier = [2.0f32; N_FEATURES];
    outlier[7] = 0.0;
    outlier[9] = 1.5;
    for (k, &f) in displaced.iter().enumerate() {
        outlier[f] = if k % 2 == 0 { 7.0 } else { -3.0 };
    }
    let s = model.score(&outlier);
    assert!(s > cal.score.p99, "outlier {s} vs p99 {}", cal.score.p99);
    let centre = {
        let mut c = [2.0f32; N_FEATURES];
        c[7] = 0.0;
        c[9] = 1.5;
        c
    };
    assert!(model.score(&centre) < cal.score.p50);

    // Explanation: the displaced features carry the most credit, and the credits
    // reconstruct the score exactly: score = 2^(sum - 1).
    let mut contrib = [0.0; N_FEATURES];
    model.explain(&outlier, &mut contrib);
    let mut order: Vec<usize> = (0..N_FEATURES).collect();
    order.sort_by(|&a, &b| contrib[b].total_cmp(&contrib[a]));
    let mut top: Vec<usize> = order[..displaced.len()].to_vec();
    top.sort_unstable();
    assert_eq!(top, displaced, "contributions {contrib:?}");
    let sum: f64 = contrib.iter().sum();
    assert!(((sum - 1.0).exp2() - s).abs() < 1e-12);
    // Constant columns are never split on, so never credited.
    assert_eq!(contrib[7], 0.0);
    assert_eq!(contrib[9], 0.0);

    // Trees agree on an outlier far more than on the centre.
    let (a_out, a_centre) = (
        model.tree_agreement(&outlier),
        model.tree_agreement(&centre),
    );
    eprintln!("tree agreement: outlier {a_out}, centre {a_centre}");
    assert!(
        a_out > 0.5 && a_centre < 0.2,
        "outlier {a_out}, centre {a_centre}"
    );

    // z-scores against the training distribution.
    let z = model.feature_z(&outlier);
    assert!((z[0] - 5.0).abs() < 0.3, "z0 = {}", z[0]);
    assert!((z[3] + 5.0).abs() < 0.3, "z3 = {}", z[3]);
    assert!(z[1].abs() < 0.2, "z1 = {}", z[1]);
}

#[test]
fn explain_reconstructs_sklearn_scores() {
    let v = fixture();
    let model = Model::from_json(&v["model"].to_string(), "sklearn_parity.json").unwrap();
    let mut contrib = [0.0; N_FEATURES];
    for x in points(&v).iter().step_by(37) {
        model.explain(x, &mut contrib);
        let sum: f64 = contrib.iter().sum();
        assert!(((sum - 1.0).exp2() - model.score(x)).abs() < 1e-12);
    }
}

#[test]
fn range_excess_measures_distance_beyond_training_range() {
    let data = gaussian_cloud(2000, 3);
    let model = train(&data, &TrainParams::default(), &[], 0).unwrap();
    let f = model.calibration().features;
    let mut x = [2.0f32; N_FEATURES];
    x[7] = 0.0;
    x[9] = 1.5;
    let mut out = [0.0; N_FEATURES];
    assert_eq!(model.range_excess(&x, &mut out), 0.0);
    assert!(out.iter().all(|&o| o == 0.0));

    let range0 = f.max[0] - f.min[0];
    x[0] = (f.max[0] + 2.0 * range0) as f32;
    x[5] = (f.min[5] - 0.5 * (f.max[5] - f.min[5])) as f32;
    x[9] = 2.5; // constant 1.5 in training: spread floored at 0.001
    let worst = model.range_excess(&x, &mut out);
    assert!((out[0] - 2.0).abs() < 1e-5, "{}", out[0]);
    assert!((out[5] + 0.5).abs() < 1e-5, "{}", out[5]);
    assert!((out[9] - 1000.0).abs() < 1e-6, "{}", out[9]);
    assert_eq!(worst, out[9]);
    // The forest alone rates a far-out value like the edge of the training data.
    let mut edge = [2.0f32; N_FEATURES];
    edge[7] = 0.0;
    edge[9] = 1.5;
    edge[0] = f.max[0] as f32;
    let mut far = edge;
    far[0] = (f.max[0] * 100.0) as f32;
    assert_eq!(model.score(&edge), model.score(&far));
}

#[test]
fn train_rejects_bad_input_with_reasons() {
    let data = gaussian_cloud(50, 4);
    let ok = TrainParams::default();
    let e = train(&data, &TrainParams { n_trees: 0, ..ok }, &[], 0).unwrap_err();
    assert_names(&e.to_string(), &["n_trees"]);
    let e = train(
        &data,
        &TrainParams {
            max_samples: 1,
            ..ok
        },
        &[],
        0,
    )
    .unwrap_err();
    assert_names(&e.to_string(), &["max_samples"]);
    let e = train(&data[..1], &ok, &[], 0).unwrap_err();
    assert_names(&e.to_string(), &["1 training samples"]);
    let mut bad = data.clone();
    bad[17][12] = f32::NAN;
    let e = train(&bad, &ok, &[], 0).unwrap_err();
    assert_names(&e.to_string(), &["sample 17", "dns_qname_len", "NaN"]);
}

// ---- Loader validation: one test per check ----

#[test]
fn small_model_loads() {
    let v = small_value();
    let model = Model::from_json(&v.to_string(), "ok.json").unwrap();
    assert_eq!(model.n_trees(), 3);
}

#[test]
fn rejects_malformed_json_with_position() {
    let msg = Model::from_json("{\"format\": ", "bad.json")
        .unwrap_err()
        .to_string();
    assert_names(&msg, &["bad.json", "line 1"]);
}

#[test]
fn rejects_unknown_field() {
    let mut v = small_value();
    v["comment"] = Value::from("x");
    assert_names(&load_err(&v), &["comment"]);
}

#[test]
fn rejects_wrong_format() {
    let mut v = small_value();
    v["format"] = Value::from("phantomnet.iforest.v0");
    assert_names(
        &load_err(&v),
        &["phantomnet.iforest.v0", "phantomnet.iforest.v1"],
    );
}

#[test]
fn rejects_other_schema_naming_both() {
    let mut v = small_value();
    v["schema"]["name"] = Value::from("phantomnet.features.v0");
    v["schema"]["hash"] = Value::from("0123456789abcdef");
    let msg = load_err(&v);
    assert_names(
        &msg,
        &[
            "phantomnet.features.v0",
            "0123456789abcdef",
            "phantomnet.features.v1",
            &phantomnet::features::schema_hash(),
        ],
    );
}

#[test]
fn rejects_same_schema_name_with_other_hash() {
    let mut v = small_value();
    v["schema"]["hash"] = Value::from("0000000000000000");
    assert_names(
        &load_err(&v),
        &["0000000000000000", &phantomnet::features::schema_hash()],
    );
}

#[test]
fn rejects_feature_name_list_of_wrong_length() {
    let mut v = small_value();
    v["schema"]["features"].as_array_mut().unwrap().pop();
    assert_names(&load_err(&v), &["schema.features", "14", "15"]);
}

#[test]
fn rejects_wrong_feature_name() {
    let mut v = small_value();
    v["schema"]["features"][3] = Value::from("dst_hostz");
    assert_names(
        &load_err(&v),
        &["schema.features[3]", "dst_hostz", FEATURE_NAMES[3]],
    );
}

#[test]
fn rejects_max_samples_below_two() {
    let mut v = small_value();
    v["max_samples"] = Value::from(1);
    assert_names(&load_err(&v), &["max_samples", "1"]);
}

#[test]
fn rejects_inconsistent_c_psi() {
    let mut v = small_value();
    v["c_psi"] = Value::from(3.5);
    assert_names(&load_err(&v), &["c_psi", "3.5", "max_samples = 16"]);
}

#[test]
fn rejects_tree_count_mismatch() {
    let mut v = small_value();
    v["n_trees"] = Value::from(4);
    assert_names(&load_err(&v), &["n_trees", "4", "3 trees"]);
    let mut v = small_value();
    v["n_trees"] = Value::from(0);
    v["trees"] = Value::Array(vec![]);
    assert_names(&load_err(&v), &["n_trees", "at least 1"]);
}

#[test]
fn rejects_unequal_array_lengths() {
    let mut v = small_value();
    v["trees"][1]["threshold"].as_array_mut().unwrap().pop();
    assert_names(&load_err(&v), &["tree 1", "`threshold`"]);
}

#[test]
fn rejects_empty_tree() {
    let mut v = small_value();
    for k in ["feature", "threshold", "left", "right", "n_samples"] {
        v["trees"][2][k] = Value::Array(vec![]);
    }
    assert_names(&load_err(&v), &["tree 2", "no nodes"]);
}

#[test]
fn rejects_child_out_of_range() {
    let mut v = small_value();
    let n = v["trees"][0]["left"].as_array().unwrap().len();
    v["trees"][0]["right"][0] = Value::from(n as i64 + 5);
    assert_names(
        &load_err(&v),
        &["tree 0 node 0", "`right` child", &format!("{}", n + 5)],
    );
}

/// Index of the first split node whose left child is a split node too.
fn split_with_split_child(v: &Value, t: usize) -> (usize, usize) {
    let left = v["trees"][t]["left"].as_array().unwrap();
    for (i, l) in left.iter().enumerate() {
        let l = l.as_i64().unwrap();
        if l >= 0 && left[l as usize].as_i64().unwrap() >= 0 {
            return (i, l as usize);
        }
    }
    panic!("no nested split in tree {t}");
}

#[test]
fn rejects_cycle() {
    let mut v = small_value();
    let (_, child) = split_with_split_child(&v, 0);
    // The child points back at the root.
    v["trees"][0]["left"][child] = Value::from(0);
    assert_names(&load_err(&v), &["tree 0 node 0", "reached twice"]);
}

#[test]
fn rejects_shared_child() {
    let mut v = small_value();
    let r = v["trees"][0]["right"][0].clone();
    v["trees"][0]["left"][0] = r;
    assert_names(&load_err(&v), &["tree 0 node", "reached twice"]);
}

#[test]
fn rejects_unreachable_node() {
    let mut v = small_value();
    let t = &mut v["trees"][1];
    let n = t["left"].as_array().unwrap().len();
    for (k, val) in [
        ("feature", Value::from(-1)),
        ("threshold", Value::from(-2.0)),
        ("left", Value::from(-1)),
        ("right", Value::from(-1)),
        ("n_samples", Value::from(1)),
    ] {
        t[k].as_array_mut().unwrap().push(val);
    }
    assert_names(
        &load_err(&v),
        &[&format!("tree 1 node {n}"), "not reachable"],
    );
}

#[test]
fn rejects_leaf_with_a_right_child() {
    let mut v = small_value();
    let left = v["trees"][0]["left"].as_array().unwrap().clone();
    let leaf = left.iter().position(|l| l.as_i64() == Some(-1)).unwrap();
    v["trees"][0]["right"][leaf] = Value::from(1);
    assert_names(
        &load_err(&v),
        &[&format!("tree 0 node {leaf}"), "leaf", "right = 1"],
    );
}

#[test]
fn rejects_split_without_right_child() {
    let mut v = small_value();
    v["trees"][0]["right"][0] = Value::from(-1);
    assert_names(&load_err(&v), &["tree 0 node 0", "right = -1"]);
}

#[test]
fn rejects_feature_index_out_of_range() {
    let mut v = small_value();
    v["trees"][2]["feature"][0] = Value::from(15);
    assert_names(
        &load_err(&v),
        &["tree 2 node 0", "feature index 15", "0..15"],
    );
    v["trees"][2]["feature"][0] = Value::from(-1);
    assert_names(&load_err(&v), &["tree 2 node 0", "feature index -1"]);
}

#[test]
fn rejects_threshold_that_is_not_a_finite_number() {
    // JSON has no NaN or infinity; an overflowing literal is refused by the parser, with
    // its position.
    let text = small_model().to_json();
    let pos = text.find("\"threshold\": [").unwrap() + "\"threshold\": [".len();
    let end = pos + text[pos..].find(',').unwrap();
    let bad = format!("{}1e400{}", &text[..pos], &text[end..]);
    let msg = Model::from_json(&bad, "bad.json").unwrap_err().to_string();
    assert_names(&msg, &["bad.json", "line"]);
    let mut v = small_value();
    v["trees"][0]["threshold"][0] = Value::Null;
    assert_names(&load_err(&v), &["null", "f64"]);
}

#[test]
fn rejects_zero_n_samples() {
    let mut v = small_value();
    let left = v["trees"][0]["left"].as_array().unwrap().clone();
    let leaf = left.iter().position(|l| l.as_i64() == Some(-1)).unwrap();
    v["trees"][0]["n_samples"][leaf] = Value::from(0);
    assert_names(
        &load_err(&v),
        &[&format!("tree 0 node {leaf}"), "n_samples", "at least 1"],
    );
}

#[test]
fn rejects_root_not_holding_max_samples() {
    let mut v = small_value();
    v["trees"][1]["n_samples"][0] = Value::from(15);
    assert_names(
        &load_err(&v),
        &["tree 1 node 0", "n_samples", "max_samples (16)"],
    );
}

#[test]
fn rejects_children_not_partitioning_samples() {
    let mut v = small_value();
    let (node, child) = split_with_split_child(&v, 0);
    let n = v["trees"][0]["n_samples"][child].as_i64().unwrap();
    v["trees"][0]["n_samples"][child] = Value::from(n + 1);
    // Either the child (now larger than its own children) or its parent is reported.
    let msg = load_err(&v);
    assert_names(&msg, &["tree 0 node", "n_samples", "sum of its children"]);
    assert!(msg.contains(&format!("node {node}:")) || msg.contains(&format!("node {child}:")));
}

#[test]
fn rejects_calibration_array_of_wrong_length() {
    let mut v = small_value();
    v["calibration"]["features"]["p99"]
        .as_array_mut()
        .unwrap()
        .pop();
    assert_names(
        &load_err(&v),
        &["calibration.features.p99", "14 values", "15"],
    );
}

#[test]
fn rejects_calibration_scores_out_of_order_or_range() {
    let mut v = small_value();
    v["calibration"]["score"]["p99"] = Value::from(0.0);
    assert_names(&load_err(&v), &["calibration.score.p99", "non-decreasing"]);
    let mut v = small_value();
    v["calibration"]["score"]["max"] = Value::from(1.5);
    assert_names(&load_err(&v), &["calibration.score.max", "1.5", "0..=1"]);
}

#[test]
fn rejects_calibration_features_inconsistent() {
    let mut v = small_value();
    v["calibration"]["features"]["max"][6] = Value::from(-100.0);
    assert_names(
        &load_err(&v),
        &["calibration.features.max[6]", FEATURE_NAMES[6]],
    );
    let mut v = small_value();
    v["calibration"]["features"]["std"][2] = Value::from(-1.0);
    assert_names(&load_err(&v), &["calibration.features.std[2]", "negative"]);
}
