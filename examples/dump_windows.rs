//! Development aid: prints every judged host-window of a capture with its features, the
//! model's score and level, range-guard excess and the verdict — to see why something is
//! or is not flagged.
//!
//! usage: cargo run --release --example dump_windows -- CAPTURE [MODEL] [HOST-SUBSTRING]

use phantomnet::capture::{self, Next};
use phantomnet::config::Config;
use phantomnet::engine::{self, Engine, EngineOptions};
use phantomnet::features::{FEATURE_NAMES, N_FEATURES};
use phantomnet::model::Model;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .ok_or("usage: dump_windows CAPTURE [MODEL] [HOST]")?;
    let model = Model::load(std::path::Path::new(
        args.get(2).map_or("models/default.json", |s| s.as_str()),
    ))?;
    let filter = args.get(3).cloned().unwrap_or_default();
    let cfg = Config::load(std::path::Path::new("config/phantomnet.toml"))?;
    let mut opts = EngineOptions::from_config(&cfg);
    opts.collect_samples = true;
    let mut e = Engine::new(opts);
    let mut src = capture::open_file(std::path::Path::new(path))?;
    let short: Vec<String> = FEATURE_NAMES
        .iter()
        .map(|n| n.chars().take(7).collect())
        .collect();
    println!(
        "{:>8} {:<26} {}  score  lvl excess",
        "t",
        "host",
        short.join(" ")
    );
    let mut t0 = None;
    let mut dump = |e: &mut Engine| {
        for s in e.outbox.samples.drain(..) {
            let h = s.host.to_string();
            if !h.contains(&filter) {
                continue;
            }
            let a = engine::evaluate(&model, &s.features, &cfg.verdict);
            let t = *t0.get_or_insert(s.ts);
            let mut ex = [0f64; N_FEATURES];
            model.range_excess(&s.features, &mut ex);
            let worst = ex
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, v)| format!("{}:{:.2}", short[i], v))
                .unwrap_or_default();
            let f: Vec<String> = s.features.iter().map(|v| format!("{v:7.2}")).collect();
            println!(
                "{:>8.1} {:<26} {}  {:.3}  {:?} {}",
                (s.ts - t) as f64 / 1e6,
                h,
                f.join(" "),
                a.score,
                a.level,
                worst
            );
        }
        e.outbox.clear();
    };
    loop {
        match src.next_frame()? {
            Next::Frame(f) => e.process_frame(f.ts, f.link, f.data, f.wire_len),
            Next::Idle(now) => e.tick(now),
            Next::End => break,
        }
        if e.outbox.pressing() {
            dump(&mut e);
        }
    }
    e.finish_second();
    dump(&mut e);
    Ok(())
}
