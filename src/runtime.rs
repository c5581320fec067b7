//! The run loop: a frame source feeding the engine, and on ticks the outputs — SQLite,
//! EVE JSON and HTTP — plus signals (SIGINT/SIGTERM stop cleanly, SIGHUP reloads).
//! Also the glue that loads rules, intel and the model from the config.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{info, warn};

use crate::capture::{self, CaptureError, FrameSource, Next};
use crate::config::{Config, ConfigError};
use crate::engine::{Engine, EngineOptions};
use crate::eve::{EveError, EveWriter};
use crate::intel::{IntelError, IntelSet};
use crate::model::{Model, ModelError};
use crate::rules::{RuleSet, RuleVars, RulesError};
use crate::serve::Server;
use crate::stats::Stage;
use crate::store::{Batch, MaxRows, Store, StoreError, StoreOptions};

/// Everything that stops PhantomNet from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Eve(#[from] EveError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Rules(#[from] RulesError),
    #[error(transparent)]
    Intel(#[from] IntelError),
    #[error("{0}")]
    Other(String),
}

/// Finds the config: the given file, else ./config/phantomnet.toml, else
/// /etc/phantomnet/phantomnet.toml, else built-in defaults (paths relative to the CWD).
pub fn load_config(path: Option<&Path>) -> Result<Config, RunError> {
    if let Some(p) = path {
        return Ok(Config::load(p)?);
    }
    for p in ["config/phantomnet.toml", "/etc/phantomnet/phantomnet.toml"] {
        let p = Path::new(p);
        if p.exists() {
            info!("using config {}", p.display());
            return Ok(Config::load(p)?);
        }
    }
    info!("no config file found; using built-in defaults");
    Ok(Config {
        origin: "built-in defaults".into(),
        ..Config::default()
    })
}

/// Rules, intel and model as the config names them.
pub struct Detectors {
    pub rules: Option<RuleSet>,
    pub intel: Option<IntelSet>,
    pub model: Option<Model>,
}

pub fn rule_vars(cfg: &Config) -> Result<RuleVars, RunError> {
    let addr: Vec<(String, String)> = cfg
        .vars
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let ports: Vec<(String, String)> = cfg
        .port_vars
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(RuleVars::new(&addr, &ports)?)
}

pub fn load_rules(cfg: &Config) -> Result<Option<RuleSet>, RunError> {
    if cfg.detection.rules.is_empty() {
        return Ok(None);
    }
    let vars = rule_vars(cfg)?;
    let (set, report) = RuleSet::load_files(&cfg.detection.rules, &vars, cfg.tables.tracked)?;
    for s in &report.skipped {
        warn!("{s}");
    }
    info!(
        "rules: {} loaded, {} skipped from {}",
        report.loaded,
        report.skipped.len(),
        cfg.detection
            .rules
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(Some(set))
}

pub fn load_intel(cfg: &Config) -> Result<Option<IntelSet>, RunError> {
    if cfg.detection.intel.is_empty() {
        return Ok(None);
    }
    let lists: Vec<(String, PathBuf)> = cfg
        .detection
        .intel
        .iter()
        .map(|p| {
            (
                p.file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                p.clone(),
            )
        })
        .collect();
    let t = Instant::now();
    let (set, report) = IntelSet::load(&lists)?;
    info!(
        "intel: {} entries from {} lists ({} bad lines skipped) in {:.1} ms",
        report.entries(),
        report.lists.len(),
        report.bad_lines(),
        t.elapsed().as_secs_f64() * 1e3
    );
    Ok(Some(set))
}

pub fn load_model(cfg: &Config) -> Result<Option<Model>, RunError> {
    if cfg.detection.model.as_os_str().is_empty() {
        return Ok(None);
    }
    let m = Model::load(&cfg.detection.model)?;
    info!("model: {}", describe_model(&m));
    Ok(Some(m))
}

/// Address ranges an intel set holds (after merging).
pub fn intel_size(i: &IntelSet) -> usize {
    let (v4, v6) = i.range_counts();
    v4 + v6
}

/// One line about a model: schema, trees, training data.
pub fn describe_model(m: &Model) -> String {
    let i = m.info();
    format!(
        "{} trees, ψ={}, {} samples, trained {} on {}",
        i.n_trees,
        i.max_samples,
        i.samples,
        i.when_unix,
        if i.on.len() > 3 {
            format!("{} and {} more", i.on[..3].join(", "), i.on.len() - 3)
        } else {
            i.on.join(", ")
        }
    )
}

/// The model as /api/status shows it.
pub fn model_json(m: &Model) -> serde_json::Value {
    let i = m.info();
    let q = m.calibration().score;
    serde_json::json!({
        "schema": crate::features::SCHEMA_NAME,
        "schema_hash": crate::features::schema_hash(),
        "trees": i.n_trees,
        "max_samples": i.max_samples,
        "trained_unix": i.when_unix,
        "trained_on": i.on,
        "samples": i.samples,
        "seed": i.seed,
        "score_p99": q.p99,
        "score_p99_9": q.p99_9,
        "score_max": q.max,
    })
}

pub fn load_detectors(cfg: &Config) -> Result<Detectors, RunError> {
    Ok(Detectors {
        rules: load_rules(cfg)?,
        intel: load_intel(cfg)?,
        model: load_model(cfg)?,
    })
}

/// Builds an engine with the config's tables and the given detectors.
pub fn build_engine(cfg: &Config, det: Detectors, collect_samples: bool) -> Engine {
    let mut opts = EngineOptions::from_config(cfg);
    opts.collect_samples = collect_samples;
    let mut e = Engine::new(opts);
    e.rules = det.rules;
    e.intel = det.intel;
    e.model = det.model;
    e
}

pub fn store_options(cfg: &Config) -> StoreOptions {
    let rows = Some(cfg.retention.max_rows);
    StoreOptions {
        max_rows: MaxRows {
            alerts: rows,
            verdicts: rows,
            flows: rows,
            feature_samples: rows,
            window_counts: rows,
        },
        max_bytes: (cfg.retention.max_bytes > 0).then_some(cfg.retention.max_bytes),
        ..StoreOptions::default()
    }
}

/// Where the engine's results go on every tick.
pub struct Outputs {
    pub store: Option<Store>,
    pub eve: Option<EveWriter>,
    batch: Batch,
    write_flows: bool,
    scratch: String,
    json: String,
    pub store_failures: u64,
    pub last_store_error: Option<String>,
    last_error_log: Option<Instant>,
    pub flushes: u64,
}

impl Outputs {
    pub fn open(cfg: &Config, db: Option<&Path>, eve: Option<&Path>) -> Result<Outputs, RunError> {
        let store = match db {
            Some(p) => {
                let mut s = Store::open(p, &store_options(cfg))?;
                s.set_meta("phantomnet_version", env!("CARGO_PKG_VERSION"))?;
                s.set_meta("schema", crate::features::SCHEMA_NAME)?;
                s.set_meta("schema_hash", &crate::features::schema_hash())?;
                Some(s)
            }
            None => None,
        };
        let eve = match eve {
            Some(p) => {
                let mut w = EveWriter::open(p)?;
                let name = appliance_name(cfg);
                w.set_sensor_name(Some(&name));
                Some(w)
            }
            None => None,
        };
        Ok(Outputs {
            store,
            eve,
            batch: Batch::new(cfg.tables.outbox * 8),
            write_flows: cfg.output.flows,
            scratch: String::with_capacity(256),
            json: String::with_capacity(4096),
            store_failures: 0,
            last_store_error: None,
            last_error_log: None,
            flushes: 0,
        })
    }

    /// Drains the engine's outbox into EVE and one SQLite transaction. A failed write keeps
    /// the rows (bounded) for the next tick; nothing stored before is touched.
    pub fn flush(&mut self, engine: &mut Engine) {
        let t = Instant::now();
        self.flushes += 1;
        let ob = std::mem::take(&mut engine.outbox.alerts);
        for a in &ob {
            let row = engine.alert_row(a, &mut self.scratch);
            if let Some(e) = &mut self.eve {
                if let Err(err) = e.alert(&row) {
                    warn_eve(&err);
                }
            }
            if self.store.is_some() {
                let _ = self.batch.alert(&row);
            }
        }
        engine.outbox.alerts = ob;
        let ob = std::mem::take(&mut engine.outbox.verdicts);
        for v in &ob {
            let row = engine.verdict_row(v, &mut self.json);
            if let Some(e) = &mut self.eve {
                if let Err(err) = e.verdict(&row) {
                    warn_eve(&err);
                }
            }
            if self.store.is_some() {
                let _ = self.batch.verdict(&row);
            }
        }
        engine.outbox.verdicts = ob;
        if self.write_flows {
            for f in &engine.outbox.flows {
                if let Some(e) = &mut self.eve {
                    if let Err(err) = e.flow(f) {
                        warn_eve(&err);
                    }
                }
                if self.store.is_some() {
                    let _ = self.batch.flow(f);
                }
            }
        }
        if self.store.is_some() {
            for &(ts, counts) in &engine.outbox.windows {
                let _ = self.batch.window_counts(ts, counts);
            }
            for s in &engine.outbox.samples {
                let _ = self.batch.feature_sample(s.ts, s.host, &s.features);
            }
        }
        engine.outbox.clear();
        if let Some(e) = &mut self.eve {
            if let Err(err) = e.flush() {
                warn_eve(&err);
            }
        }
        if let Some(store) = &mut self.store {
            if !self.batch.is_empty() {
                match store.write(&self.batch) {
                    Ok(()) => {
                        self.batch.clear();
                        self.last_store_error = None;
                    }
                    Err(err) => {
                        self.store_failures += 1;
                        let msg = err.to_string();
                        let due = self
                            .last_error_log
                            .is_none_or(|t| t.elapsed() > Duration::from_secs(60));
                        if due {
                            warn!(
                                "database write failed ({msg}); keeping {} rows in memory and retrying",
                                self.batch.len()
                            );
                            self.last_error_log = Some(Instant::now());
                        }
                        self.last_store_error = Some(msg);
                    }
                }
            }
        }
        engine
            .stats
            .record(Stage::Store, t.elapsed().as_nanos() as u64);
    }

    /// Rows waiting for a retry after a failed write.
    pub fn backlog(&self) -> usize {
        self.batch.len()
    }

    pub fn dropped(&self) -> u64 {
        self.batch.dropped()
    }
}

fn warn_eve(err: &EveError) {
    warn!("EVE output: {err}");
}

/// The appliance name: config, else the host name, else "phantomnet".
pub fn appliance_name(cfg: &Config) -> String {
    if !cfg.output.appliance.is_empty() {
        return cfg.output.appliance.clone();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "phantomnet".into())
}

/// Shutdown and reload requests from signals.
#[derive(Clone, Default)]
pub struct Signals {
    pub stop: Arc<AtomicBool>,
    pub reload: Arc<AtomicBool>,
}

impl Signals {
    /// Registers SIGINT/SIGTERM (stop) and SIGHUP (reload).
    pub fn install() -> Signals {
        let s = Signals::default();
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            if let Err(e) = signal_hook::flag::register(sig, Arc::clone(&s.stop)) {
                warn!("cannot watch signal {sig}: {e}");
            }
        }
        if let Err(e) =
            signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&s.reload))
        {
            warn!("cannot watch SIGHUP: {e}");
        }
        s
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// What the status page shows about the run.
#[derive(Clone, Debug)]
pub struct RunInfo {
    pub mode: &'static str,
    pub source: String,
    pub started: Instant,
    pub started_unix: f64,
    pub appliance: String,
    pub rules_loaded: usize,
    pub intel_entries: usize,
    pub capture_done: bool,
    pub kernel_drops: u64,
}

/// Reloads rules, intel and model after SIGHUP; a bad file keeps the old one.
fn reload(cfg: &Config, engine: &mut Engine) {
    info!("SIGHUP: reloading rules, intel and model");
    match load_rules(cfg) {
        Ok(r) => engine.rules = r,
        Err(e) => warn!("reload: keeping the old rules: {e}"),
    }
    match load_intel(cfg) {
        Ok(i) => engine.intel = i,
        Err(e) => warn!("reload: keeping the old intel lists: {e}"),
    }
    match load_model(cfg) {
        Ok(m) => engine.model = m,
        Err(e) => warn!("reload: keeping the old model: {e}"),
    }
}

/// How often outputs are flushed and HTTP is polled, in wall time.
const FLUSH_EVERY: Duration = Duration::from_millis(250);

/// The loop shared by replay and live capture. Returns when the source ends or a stop
/// signal arrives; flushes everything before returning.
pub struct Pipeline {
    pub cfg: Config,
    pub engine: Engine,
    pub outputs: Outputs,
    pub server: Option<Server>,
    pub info: RunInfo,
    pub signals: Signals,
}

impl Pipeline {
    /// Runs one source to its end (or a stop). Returns false if stopped by a signal.
    pub fn run_source(&mut self, src: &mut dyn FrameSource) -> Result<bool, RunError> {
        let mut last_flush = Instant::now();
        let mut n: u64 = 0;
        loop {
            let next = src.next_frame();
            let next = match next {
                Ok(x) => x,
                Err(e) => return Err(e.into()),
            };
            match next {
                Next::Frame(f) => {
                    self.engine.process_frame(f.ts, f.link, f.data, f.wire_len);
                    n += 1;
                }
                Next::Idle(now) => {
                    self.engine.tick(now);
                }
                Next::End => break,
            }
            if self.engine.outbox.pressing()
                || (n % 1024 == 0 && last_flush.elapsed() >= FLUSH_EVERY)
            {
                self.tick_outputs(src);
                last_flush = Instant::now();
                if self.signals.stopping() {
                    return Ok(false);
                }
            }
        }
        self.info.kernel_drops = src.stats().kernel_drops;
        Ok(true)
    }

    /// Output work of a tick: flush, answer HTTP, reload on SIGHUP.
    pub fn tick_outputs(&mut self, src: &dyn FrameSource) {
        self.info.kernel_drops = src.stats().kernel_drops;
        self.outputs.flush(&mut self.engine);
        self.poll_http();
        if self.signals.reload.swap(false, Ordering::Relaxed) {
            reload(&self.cfg, &mut self.engine);
        }
    }

    pub fn poll_http(&mut self) {
        if let Some(s) = &mut self.server {
            s.poll(&self.engine, &self.outputs, &self.info);
        }
    }

    /// Closes the last second, ends all flows and writes everything.
    pub fn finish(&mut self) {
        self.engine.finish_second();
        self.engine.drain_flows();
        self.outputs.flush(&mut self.engine);
        self.info.capture_done = true;
    }
}

/// `replay`: the whole pipeline over capture files.
pub struct ReplayPlan {
    pub pcaps: Vec<PathBuf>,
    pub db: Option<PathBuf>,
    pub eve: Option<PathBuf>,
    pub serve: Option<String>,
}

pub fn replay(cfg: Config, det: Detectors, plan: &ReplayPlan) -> Result<Pipeline, RunError> {
    let rules_loaded = det.rules.as_ref().map_or(0, |r| r.len());
    let intel_entries = det.intel.as_ref().map_or(0, intel_size);
    let engine = build_engine(&cfg, det, cfg.learning.enabled);
    let outputs = Outputs::open(&cfg, plan.db.as_deref(), plan.eve.as_deref())?;
    let server = match &plan.serve {
        Some(addr) => Some(Server::bind(addr, &cfg.http.token)?),
        None => None,
    };
    let info = RunInfo {
        mode: "replay",
        source: plan
            .pcaps
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        started: Instant::now(),
        started_unix: unix_now(),
        appliance: appliance_name(&cfg),
        rules_loaded,
        intel_entries,
        capture_done: false,
        kernel_drops: 0,
    };
    let signals = Signals::install();
    let mut p = Pipeline {
        cfg,
        engine,
        outputs,
        server,
        info,
        signals,
    };
    let t = Instant::now();
    for path in &plan.pcaps {
        let before = p.engine.stats.frames;
        let result = capture::open_file(path).map_err(RunError::from).and_then(|mut src| p.run_source(src.as_mut()));
        let finished = match result {
            Ok(f) => f,
            Err(e) => {
                // Keep everything read before the bad record: finish and store it, then fail.
                p.finish();
                return Err(e);
            }
        };
        info!(
            "{}: {} frames",
            path.display(),
            p.engine.stats.frames - before
        );
        if !finished {
            break;
        }
    }
    p.finish();
    let secs = t.elapsed().as_secs_f64();
    let s = &p.engine.stats;
    info!(
        "replayed {} frames in {:.3} s ({:.0} frames/s); {} alerts; verdicts: {} warning, {} high, {} critical; {} decode errors",
        s.frames,
        secs,
        s.frames as f64 / secs.max(1e-9),
        s.alerts,
        s.verdicts[1],
        s.verdicts[2],
        s.verdicts[3],
        s.decode_errors_total()
    );
    if p.server.is_some() {
        info!("captures done; still serving until interrupted");
        while !p.signals.stopping() {
            p.poll_http();
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(p)
}

/// `run`: live capture until SIGINT/SIGTERM (or `duration`).
pub fn run_live(
    cfg: Config,
    det: Detectors,
    iface: &str,
    duration: Option<Duration>,
) -> Result<Pipeline, RunError> {
    let rules_loaded = det.rules.as_ref().map_or(0, |r| r.len());
    let intel_entries = det.intel.as_ref().map_or(0, intel_size);
    let opts = capture::live::LiveOptions {
        promiscuous: cfg.capture.promiscuous,
        read_timeout: Duration::from_millis(cfg.capture.read_timeout_ms),
        ..capture::live::LiveOptions::default()
    };
    let mut src = capture::open_live(iface, &opts)?;
    let engine = build_engine(&cfg, det, cfg.learning.enabled);
    let db = cfg.output.db.clone();
    let eve = (!cfg.output.eve.as_os_str().is_empty()).then(|| cfg.output.eve.clone());
    let outputs = Outputs::open(&cfg, Some(&db), eve.as_deref())?;
    let server = if cfg.http.enabled {
        Some(Server::bind(&cfg.http.bind, &cfg.http.token)?)
    } else {
        None
    };
    let info = RunInfo {
        mode: "live",
        source: iface.to_string(),
        started: Instant::now(),
        started_unix: unix_now(),
        appliance: appliance_name(&cfg),
        rules_loaded,
        intel_entries,
        capture_done: false,
        kernel_drops: 0,
    };
    let signals = Signals::install();
    let mut p = Pipeline {
        cfg,
        engine,
        outputs,
        server,
        info,
        signals,
    };
    info!("watching {iface}");
    let started = Instant::now();
    let mut last_flush = Instant::now();
    loop {
        if p.signals.stopping() || duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        match src.next_frame()? {
            Next::Frame(f) => p.engine.process_frame(f.ts, f.link, f.data, f.wire_len),
            Next::Idle(now) => p.engine.tick(now),
            Next::End => break,
        }
        if p.engine.outbox.pressing() || last_flush.elapsed() >= FLUSH_EVERY {
            // Live: packet time follows the wall clock; close seconds even when quiet.
            p.engine.tick(unix_now_micros());
            p.tick_outputs(src.as_ref());
            last_flush = Instant::now();
        }
    }
    info!("stopping: flushing pending results");
    p.finish();
    Ok(p)
}

pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

pub fn unix_now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Replays each capture with fresh state and returns every judged host-window's features,
/// sorted by time, then host (so a seed gives the same model on every run).
pub fn extract_samples(
    cfg: &Config,
    pcaps: &[PathBuf],
) -> Result<Vec<crate::engine::SampleRec>, RunError> {
    let mut all = Vec::new();
    for p in pcaps {
        let mut e = build_engine(
            cfg,
            Detectors {
                rules: None,
                intel: None,
                model: None,
            },
            true,
        );
        let mut src = capture::open_file(p)?;
        loop {
            match src.next_frame()? {
                Next::Frame(f) => e.process_frame(f.ts, f.link, f.data, f.wire_len),
                Next::Idle(now) => e.tick(now),
                Next::End => break,
            }
            if e.outbox.pressing() {
                all.append(&mut e.outbox.samples);
                e.outbox.clear();
            }
        }
        e.finish_second();
        all.append(&mut e.outbox.samples);
    }
    all.sort_by(|a, b| a.ts.cmp(&b.ts).then(a.host.cmp(&b.host)));
    Ok(all)
}

/// "When" a model was trained: SOURCE_DATE_EPOCH if set (reproducible builds), else now.
pub fn training_time() -> i64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(unix_now() as i64)
}

/// `train`: a model from captures of normal traffic, or from samples stored in SQLite.
pub fn train(
    cfg: &Config,
    pcaps: &[PathBuf],
    db: Option<&Path>,
    trees: usize,
    samples: usize,
    seed: u64,
) -> Result<Model, RunError> {
    let (vectors, on): (Vec<crate::features::FeatureVector>, Vec<String>) = match db {
        Some(db) => {
            let store = Store::open(db, &store_options(cfg))?;
            let rows = store.feature_samples(f64::MIN, u32::MAX)?;
            (
                rows.iter().map(|r| r.features).collect(),
                vec![format!("live learning ({})", db.display())],
            )
        }
        None => {
            if pcaps.is_empty() {
                return Err(RunError::Other(
                    "train needs capture files or --db FILE".into(),
                ));
            }
            let s = extract_samples(cfg, pcaps)?;
            let names = pcaps
                .iter()
                .map(|p| {
                    p.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                })
                .collect();
            (s.iter().map(|r| r.features).collect(), names)
        }
    };
    if vectors.len() < 2 {
        return Err(RunError::Other(format!(
            "only {} feature sample(s) to train on: give more normal traffic",
            vectors.len()
        )));
    }
    let params = crate::model::TrainParams {
        n_trees: trees,
        max_samples: samples,
        seed,
    };
    let t = Instant::now();
    let m = crate::model::train(&vectors, &params, &on, training_time())?;
    info!(
        "trained on {} samples in {:.2} s",
        vectors.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(m)
}
