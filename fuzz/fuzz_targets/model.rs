//! Fuzzes the model loader: a model that loads must score any feature vector without
//! panicking or looping, and give a score in [0, 1] (NaN only for NaN inputs).
#![no_main]

use libfuzzer_sys::fuzz_target;
use phantomnet::features::N_FEATURES;
use phantomnet::model::Model;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(m) = Model::from_json(text, "fuzz.json") else {
        return;
    };
    for v in [0.0f32, 1.0, -1.0, 1e30, f32::MAX, f32::MIN] {
        let x = [v; N_FEATURES];
        let s = m.score(&x);
        assert!((0.0..=1.0).contains(&s), "score {s} for {v}");
        let _ = m.tree_agreement(&x);
        let mut out = [0.0f64; N_FEATURES];
        m.explain(&x, &mut out);
        let _ = m.feature_z(&x);
        let _ = m.range_excess(&x, &mut out);
    }
    // Saving and loading again gives the same model.
    let again = Model::from_json(&m.to_json(), "fuzz-resaved.json").expect("re-save loads");
    assert_eq!(again.to_json(), m.to_json());
});
