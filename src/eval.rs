//! `phantomnet eval`: replays labelled captures with fresh state each and measures what
//! reaches WARNING and HIGH — per capture, per attack kind, and for benign traffic — so
//! detection is a number, not a feeling.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Serialize;

use crate::capture::{self, Next};
use crate::cli::EvalArgs;
use crate::config::Config;
use crate::events::Level;
use crate::model::Model;
use crate::runtime::{self, Detectors, RunError};

/// One row of the labels file.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Labelled {
    pub file: String,
    pub path: PathBuf,
    pub label: String,
    pub kind: String,
}

/// Reads a TSV whose columns are found by header name (`file`, `label`, `attack_kind`);
/// other columns are ignored and paths are relative to the TSV.
pub fn read_labels(path: &Path) -> Result<Vec<Labelled>, RunError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| RunError::Other(format!("{}: cannot read labels: {e}", path.display())))?;
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'));
    let Some((_, header)) = lines.next() else {
        return Err(RunError::Other(format!(
            "{}: empty labels file",
            path.display()
        )));
    };
    let cols: Vec<&str> = header.split('\t').map(str::trim).collect();
    let col = |name: &str| cols.iter().position(|c| *c == name);
    let (Some(fc), Some(lc)) = (col("file"), col("label")) else {
        return Err(RunError::Other(format!(
            "{}: line 1: the header needs columns `file` and `label` (found: {})",
            path.display(),
            cols.join(", ")
        )));
    };
    let kc = col("attack_kind");
    let base = path.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for (i, line) in lines {
        let f: Vec<&str> = line.split('\t').collect();
        let get = |c: usize| f.get(c).map(|s| s.trim()).unwrap_or("");
        let (file, label) = (get(fc), get(lc));
        if file.is_empty() {
            return Err(RunError::Other(format!(
                "{}: line {}: empty `file` column",
                path.display(),
                i + 1
            )));
        }
        if label != "benign" && label != "attack" {
            return Err(RunError::Other(format!(
                "{}: line {}: label `{label}` is not benign or attack",
                path.display(),
                i + 1
            )));
        }
        let kind = kc
            .map(get)
            .filter(|k| !k.is_empty() && *k != "-")
            .unwrap_or(if label == "benign" { "-" } else { "unknown" });
        out.push(Labelled {
            file: file.to_string(),
            path: base.join(file),
            label: label.to_string(),
            kind: kind.to_string(),
        });
    }
    Ok(out)
}

/// What one capture produced.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CaptureResult {
    pub file: String,
    pub label: String,
    pub kind: String,
    pub highest: Level,
    /// Seconds from the capture's first frame to the first WARNING-or-higher verdict.
    pub first_warning_s: Option<f64>,
    /// Host-windows at WARNING or above.
    pub flagged_windows: u64,
    pub windows: u64,
    pub hosts: Vec<String>,
    pub frames: u64,
    pub alerts: u64,
}

/// Replays one capture with fresh state and the given detectors.
pub fn evaluate_capture(
    cfg: &Config,
    item: &Labelled,
    det: Detectors,
) -> Result<CaptureResult, RunError> {
    let mut e = runtime::build_engine(cfg, det, false);
    let mut src = capture::open_file(&item.path)?;
    let mut highest = Level::Safe;
    let mut first: Option<i64> = None;
    let mut flagged = 0u64;
    let mut hosts = BTreeSet::new();
    let mut consume = |e: &mut crate::engine::Engine| {
        for v in &e.outbox.verdicts {
            highest = highest.max(v.level);
            if v.level >= Level::Warning {
                flagged += 1;
                first = Some(first.map_or(v.ts, |f| f.min(v.ts)));
                hosts.insert(v.host.to_string());
            }
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
            consume(&mut e);
        }
    }
    e.finish_second();
    consume(&mut e);
    let start = e.stats.first_ts;
    Ok(CaptureResult {
        file: item.file.clone(),
        label: item.label.clone(),
        kind: item.kind.clone(),
        highest,
        first_warning_s: first.map(|f| ((f - start) as f64 / 1e6 * 10.0).round() / 10.0),
        flagged_windows: flagged,
        windows: e.stats.windows,
        hosts: hosts.into_iter().collect(),
        frames: e.stats.frames,
        alerts: e.stats.alerts,
    })
}

/// Rates over a set of captures.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Rates {
    pub captures: usize,
    pub warning: usize,
    pub high: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    pub attack: Rates,
    pub attack_by_kind: BTreeMap<String, Rates>,
    pub benign: Rates,
    pub benign_windows: u64,
    pub benign_flagged_windows: u64,
    /// Share of benign host-windows at WARNING or above.
    pub benign_window_fp_rate: f64,
}

pub fn summarize(results: &[CaptureResult]) -> Summary {
    let mut s = Summary::default();
    for r in results {
        let add = |x: &mut Rates| {
            x.captures += 1;
            x.warning += usize::from(r.highest >= Level::Warning);
            x.high += usize::from(r.highest >= Level::High);
        };
        if r.label == "attack" {
            add(&mut s.attack);
            add(s.attack_by_kind.entry(r.kind.clone()).or_default());
        } else {
            add(&mut s.benign);
            s.benign_windows += r.windows;
            s.benign_flagged_windows += r.flagged_windows;
        }
    }
    s.benign_window_fp_rate = if s.benign_windows == 0 {
        0.0
    } else {
        s.benign_flagged_windows as f64 / s.benign_windows as f64
    };
    s
}

fn pct(n: usize, d: usize) -> String {
    if d == 0 {
        "-".into()
    } else {
        format!("{}/{} ({:.0}%)", n, d, 100.0 * n as f64 / d as f64)
    }
}

/// The human-readable table and summary.
pub fn render_table(
    results: &[CaptureResult],
    s: &Summary,
    loo: Option<(&[CaptureResult], &Summary)>,
) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<48} {:<7} {:<18} {:<9} {:>8} {:>8}  {}\n",
        "file", "label", "kind", "highest", "first_s", "flagged", "hosts"
    ));
    for r in results {
        let hosts = if r.hosts.len() > 4 {
            format!("{} (+{} more)", r.hosts[..4].join(" "), r.hosts.len() - 4)
        } else {
            r.hosts.join(" ")
        };
        out.push_str(&format!(
            "{:<48} {:<7} {:<18} {:<9} {:>8} {:>8}  {}\n",
            r.file,
            r.label,
            r.kind,
            r.highest.as_str(),
            r.first_warning_s.map_or("-".into(), |x| format!("{x:.1}")),
            r.flagged_windows,
            hosts
        ));
    }
    out.push_str("\nsummary\n");
    out.push_str(&format!(
        "attack captures reaching WARNING: {}   HIGH: {}\n",
        pct(s.attack.warning, s.attack.captures),
        pct(s.attack.high, s.attack.captures)
    ));
    for (k, r) in &s.attack_by_kind {
        out.push_str(&format!(
            "  {:<20} WARNING {:<14} HIGH {}\n",
            k,
            pct(r.warning, r.captures),
            pct(r.high, r.captures)
        ));
    }
    out.push_str(&format!(
        "benign captures reaching WARNING: {}   HIGH: {}\n",
        pct(s.benign.warning, s.benign.captures),
        pct(s.benign.high, s.benign.captures)
    ));
    out.push_str(&format!(
        "benign host-windows at WARNING or above: {}/{} ({:.2}%)\n",
        s.benign_flagged_windows,
        s.benign_windows,
        100.0 * s.benign_window_fp_rate
    ));
    if let Some((rows, ls)) = loo {
        out.push_str(
            "\nleave-one-out (each benign capture scored by a model trained on the others)\n",
        );
        for r in rows {
            out.push_str(&format!(
                "  {:<48} {:<9} flagged {}/{}\n",
                r.file,
                r.highest.as_str(),
                r.flagged_windows,
                r.windows
            ));
        }
        out.push_str(&format!(
            "benign captures reaching WARNING: {}   HIGH: {}\nbenign host-windows at WARNING or above: {}/{} ({:.2}%)\n",
            pct(ls.benign.warning, ls.benign.captures),
            pct(ls.benign.high, ls.benign.captures),
            ls.benign_flagged_windows,
            ls.benign_windows,
            100.0 * ls.benign_window_fp_rate
        ));
    }
    out
}

/// Runs the whole evaluation as the CLI asks.
pub fn run(mut cfg: Config, a: &EvalArgs) -> Result<ExitCode, RunError> {
    if let Some(m) = &a.model {
        cfg.detection.model = m.clone();
    }
    if a.no_model {
        cfg.detection.model = PathBuf::new();
    }
    if a.no_rules {
        cfg.detection.rules.clear();
    }
    let items = read_labels(&a.labels)?;
    let model = runtime::load_model(&cfg)?;
    let mut results = Vec::new();
    for item in &items {
        let det = Detectors {
            rules: runtime::load_rules(&cfg)?,
            intel: runtime::load_intel(&cfg)?,
            model: model.clone(),
        };
        results.push(evaluate_capture(&cfg, item, det)?);
    }
    let summary = summarize(&results);
    let loo = if a.leave_one_out {
        Some(leave_one_out(&cfg, &items, model.as_ref())?)
    } else {
        None
    };
    let loo_summary = loo.as_ref().map(|r| summarize(r));
    if a.json {
        let v = serde_json::json!({
            "captures": results,
            "summary": summary,
            "leave_one_out": loo.as_ref().map(|r| serde_json::json!({"captures": r, "summary": loo_summary})),
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        print!(
            "{}",
            render_table(&results, &summary, loo.as_deref().zip(loo_summary.as_ref()))
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// For each benign capture: train on the other benign captures (same trees, ψ and seed as
/// the configured model, or the learning defaults) and score it with that model.
pub fn leave_one_out(
    cfg: &Config,
    items: &[Labelled],
    base: Option<&Model>,
) -> Result<Vec<CaptureResult>, RunError> {
    let benign: Vec<&Labelled> = items.iter().filter(|i| i.label == "benign").collect();
    let mut per: Vec<Vec<crate::engine::SampleRec>> = Vec::new();
    for b in &benign {
        per.push(runtime::extract_samples(
            cfg,
            std::slice::from_ref(&b.path),
        )?);
    }
    let (trees, samples, seed) = match base {
        Some(m) => (m.info().n_trees, m.info().max_samples, m.info().seed),
        None => (cfg.learning.trees, cfg.learning.samples, cfg.learning.seed),
    };
    let mut out = Vec::new();
    for (i, item) in benign.iter().enumerate() {
        let mut train: Vec<crate::engine::SampleRec> = per
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .flat_map(|(_, s)| s.iter().copied())
            .collect();
        train.sort_by(|a, b| a.ts.cmp(&b.ts).then(a.host.cmp(&b.host)));
        let vectors: Vec<_> = train.iter().map(|s| s.features).collect();
        let on: Vec<String> = benign
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, b)| b.file.clone())
            .collect();
        let params = crate::model::TrainParams {
            n_trees: trees,
            max_samples: samples,
            seed,
        };
        let m = crate::model::train(&vectors, &params, &on, runtime::training_time())?;
        let det = Detectors {
            rules: runtime::load_rules(cfg)?,
            intel: runtime::load_intel(cfg)?,
            model: Some(m),
        };
        out.push(evaluate_capture(cfg, item, det)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_by_header_name_and_errors() {
        let dir = std::env::temp_dir().join(format!("pn-eval-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("l.tsv");
        std::fs::write(
            &p,
            "notes\tlabel\tfile\tattack_kind\nx\tattack\ta.pcap\tportscan\ny\tbenign\tb.pcap\t-\n",
        )
        .unwrap();
        let l = read_labels(&p).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].path, dir.join("a.pcap"));
        assert_eq!(l[0].kind, "portscan");
        assert_eq!(l[1].kind, "-");
        std::fs::write(&p, "file\tlabel\na.pcap\tmaybe\n").unwrap();
        let e = read_labels(&p).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("maybe"), "{e}");
        std::fs::write(&p, "name\tlabel\n").unwrap();
        let e = read_labels(&p).unwrap_err().to_string();
        assert!(e.contains("`file`"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn summary_counts() {
        let r = |label: &str, kind: &str, highest, windows, flagged| CaptureResult {
            file: "f".into(),
            label: label.into(),
            kind: kind.into(),
            highest,
            first_warning_s: None,
            flagged_windows: flagged,
            windows,
            hosts: vec![],
            frames: 0,
            alerts: 0,
        };
        let s = summarize(&[
            r("attack", "scan", Level::High, 5, 2),
            r("attack", "scan", Level::Warning, 5, 1),
            r("attack", "flood", Level::Safe, 5, 0),
            r("benign", "-", Level::Warning, 100, 1),
            r("benign", "-", Level::Safe, 100, 0),
        ]);
        assert_eq!(
            s.attack,
            Rates {
                captures: 3,
                warning: 2,
                high: 1
            }
        );
        assert_eq!(
            s.attack_by_kind["scan"],
            Rates {
                captures: 2,
                warning: 2,
                high: 1
            }
        );
        assert_eq!(
            s.benign,
            Rates {
                captures: 2,
                warning: 1,
                high: 0
            }
        );
        assert!((s.benign_window_fp_rate - 0.005).abs() < 1e-12);
    }
}
