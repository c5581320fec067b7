//! The run loop: a frame source feeding the engine, and on ticks the outputs — SQLite,
//! EVE JSON and HTTP — plus signals (SIGINT/SIGTERM stop cleanly, SIGHUP reloads).
//! Also the glue that loads rules, intel and the model from the config.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

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
use crate::syslog::{Syslog, SyslogError, SyslogStats};
use crate::writer::{Writer, Written};

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
    #[error(transparent)]
    Syslog(#[from] SyslogError),
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
    e.set_rules(det.rules);
    e.intel = det.intel;
    e.set_model(det.model);
    e
}

pub fn store_options(cfg: &Config) -> StoreOptions {
    // 0 means no row bound, as for max_bytes (it used to mean "keep 0 rows": every
    // retention pass emptied the database).
    let rows = (cfg.retention.max_rows > 0).then_some(cfg.retention.max_rows);
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
    /// Alerts and verdicts to a syslog collector (config `[syslog]`).
    pub syslog: Option<Syslog>,
    batch: Batch,
    write_flows: bool,
    scratch: String,
    json: String,
    pub store_failures: u64,
    pub last_store_error: Option<String>,
    last_error_log: Option<Instant>,
    pub flushes: u64,
    /// A database that could not be opened yet (live mode keeps watching and retries).
    pending_store: Option<(PathBuf, StoreOptions, Instant)>,
    /// Config `[output] writer_thread`: batches are written by [`Writer`] (None: inline, on
    /// the loop, through `store`; also the fallback when the thread cannot start).
    use_writer: bool,
    pub writer: Option<Writer>,
    /// A written batch, cleared, waiting to become the next `batch`.
    spare: Option<Batch>,
    /// Wait for the writer rather than let the batch overflow (replay: nothing may be lost;
    /// live: the loop never waits on the disk, rows over the bound are dropped and counted).
    pub wait_for_writer: bool,
    /// Rows dropped by batches that have since changed hands.
    dropped_before: u64,
    /// Most rows held at once, gathered and in flight together (8 × outbox).
    bound: usize,
    /// With `wait_for_writer`: gathered rows at which the loop waits for a busy writer.
    wait_at: usize,
}

/// How often a database that could not be opened is tried again.
const STORE_RETRY: Duration = Duration::from_secs(10);

fn open_store(path: &Path, opts: &StoreOptions) -> Result<Store, StoreError> {
    let mut s = Store::open(path, opts)?;
    s.set_meta("phantomnet_version", env!("CARGO_PKG_VERSION"))?;
    s.set_meta("schema", crate::features::SCHEMA_NAME)?;
    s.set_meta("schema_hash", &crate::features::schema_hash())?;
    Ok(s)
}

/// The writer thread, on a second connection to the (already opened and migrated) database.
/// None, with a warning, if it cannot start: batches are then written on the loop. `live`:
/// nothing waits for the writer (live capture), so it keeps a fair share of the CPU
/// (SCHED_BATCH); otherwise (replay) the loop waits for it once it is behind, and it takes
/// only what the loop and the judge leave (SCHED_IDLE).
fn start_writer(path: &Path, opts: &StoreOptions, live: bool) -> Option<Writer> {
    let policy = if live {
        crate::sched::Policy::Batch
    } else {
        crate::sched::Policy::Idle
    };
    let started = Store::open(path, opts)
        .map_err(|e| e.to_string())
        .and_then(|s| Writer::start(s, policy).map_err(|e| format!("cannot start a thread: {e}")));
    match started {
        Ok(w) => Some(w),
        Err(e) => {
            warn!("database writer thread: {e}; writing on the packet loop instead");
            None
        }
    }
}

impl Outputs {
    /// Opens the outputs; a database that cannot be opened is an error.
    pub fn open(cfg: &Config, db: Option<&Path>, eve: Option<&Path>) -> Result<Outputs, RunError> {
        Outputs::open_with(cfg, db, eve, false)
    }

    /// Opens the outputs. With `retry_store`, a database that cannot be opened (full disk,
    /// read-only directory) is logged and retried every 10 s while rows wait in the bounded
    /// backlog: a live detector keeps watching.
    pub fn open_with(
        cfg: &Config,
        db: Option<&Path>,
        eve: Option<&Path>,
        retry_store: bool,
    ) -> Result<Outputs, RunError> {
        let opts = store_options(cfg);
        let mut pending_store = None;
        let mut last_store_error = None;
        let use_writer = cfg.output.writer_thread;
        let mut writer = None;
        let store = match db {
            Some(p) => {
                match open_store(p, &opts) {
                    Ok(s) => {
                        if use_writer {
                            // Live exactly when the loop will not wait for the writer (as below).
                            writer = start_writer(p, &opts, retry_store);
                        }
                        Some(s)
                    }
                    Err(e) if retry_store => {
                        warn!("{e}; watching anyway, keeping results in memory and retrying every 10 s");
                        last_store_error = Some(e.to_string());
                        pending_store = Some((p.to_path_buf(), opts.clone(), Instant::now()));
                        None
                    }
                    Err(e) => return Err(e.into()),
                }
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
        let syslog = if cfg.syslog.enabled {
            let s = Syslog::open(&cfg.syslog, &appliance_name(cfg))?;
            info!("syslog: sending events to {}", s.describe());
            Some(s)
        } else {
            None
        };
        Ok(Outputs {
            store,
            eve,
            syslog,
            batch: Batch::new(cfg.tables.outbox * 8),
            bound: cfg.tables.outbox * 8,
            wait_at: cfg.tables.outbox * 2,
            write_flows: cfg.output.flows,
            scratch: String::with_capacity(256),
            json: String::with_capacity(4096),
            store_failures: 0,
            last_store_error,
            last_error_log: None,
            flushes: 0,
            pending_store,
            use_writer,
            writer,
            spare: None,
            wait_for_writer: !retry_store,
            dropped_before: 0,
        })
    }

    /// Drains the engine's outbox into EVE and one SQLite transaction. A failed write keeps
    /// the rows (bounded) for the next tick; nothing stored before is touched.
    pub fn flush(&mut self, engine: &mut Engine) {
        let t = Instant::now();
        self.flushes += 1;
        let storing = self.store.is_some() || self.pending_store.is_some();
        let ob = std::mem::take(&mut engine.outbox.alerts);
        for a in &ob {
            let row = engine.alert_row(a, &mut self.scratch);
            if let Some(e) = &mut self.eve {
                if let Err(err) = e.alert(&row) {
                    warn_eve(&err);
                }
            }
            if let Some(s) = &mut self.syslog {
                s.alert(&row);
            }
            if storing {
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
            if let Some(s) = &mut self.syslog {
                s.verdict(&row);
            }
            if storing {
                let _ = self.batch.verdict(&row);
            }
        }
        engine.outbox.verdicts = ob;
        if self.write_flows {
            if let Some(e) = &mut self.eve {
                for f in &engine.outbox.flows {
                    if let Err(err) = e.flow(f) {
                        warn_eve(&err);
                    }
                }
            }
            if storing {
                self.batch.flows_from(&engine.outbox.flows);
            }
        }
        if storing {
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
        if let Some(s) = &mut self.syslog {
            s.drain(Instant::now());
        }
        if let Some((path, opts, tried)) = &mut self.pending_store {
            if tried.elapsed() >= STORE_RETRY {
                *tried = Instant::now();
                match open_store(path, opts) {
                    Ok(s) => {
                        info!(
                            "database {} is writable again; writing {} held rows",
                            path.display(),
                            self.batch.len()
                        );
                        if self.use_writer {
                            self.writer = start_writer(path, opts, !self.wait_for_writer);
                        }
                        self.store = Some(s);
                    }
                    Err(e) => {
                        self.store_failures += 1;
                        self.last_store_error = Some(e.to_string());
                    }
                }
            }
        }
        if self.store.is_some() {
            self.pending_store = None;
        }
        if self.writer.is_some() {
            self.hand_over();
        } else if let Some(store) = &mut self.store {
            if !self.batch.is_empty() {
                match store.write(&self.batch) {
                    Ok(()) => {
                        self.batch.clear();
                        self.last_store_error = None;
                    }
                    Err(err) => self.write_failed(err.to_string(), self.batch.len()),
                }
            }
        }
        engine
            .stats
            .record(Stage::Store, t.elapsed().as_nanos() as u64);
    }

    fn write_failed(&mut self, msg: String, rows: usize) {
        self.store_failures += 1;
        let due = self
            .last_error_log
            .is_none_or(|t| t.elapsed() > Duration::from_secs(60));
        if due {
            warn!("database write failed ({msg}); keeping {rows} rows in memory and retrying");
            self.last_error_log = Some(Instant::now());
        }
        self.last_store_error = Some(msg);
    }

    /// Collects the writer's last batch if it is back and hands it the gathered rows if it
    /// is idle. Waits for it only when rows must not be dropped (`wait_for_writer`) and
    /// `wait_at` rows are already waiting.
    fn hand_over(&mut self) {
        let Some(w) = &self.writer else {
            return;
        };
        let wait = !w.is_idle() && self.wait_for_writer && self.batch.len() >= self.wait_at;
        self.collect(wait);
        let Some(w) = &mut self.writer else {
            return;
        };
        if !w.is_idle() {
            return;
        }
        self.batch.set_max_rows(self.bound);
        if self.batch.is_empty() {
            return;
        }
        let next = self.spare.take().unwrap_or_else(|| Batch::new(self.bound));
        let mut full = std::mem::replace(&mut self.batch, next);
        self.dropped_before += full.take_dropped();
        // The rows in flight count against the bound until they are written.
        let sent = full.len();
        match w.send(full) {
            None => self.batch.set_max_rows(self.bound.saturating_sub(sent)),
            Some(mut back) => {
                // The thread is gone: keep the rows and write on the loop from now on.
                log::error!("database writer thread stopped; writing on the packet loop instead");
                self.writer = None;
                back.set_max_rows(self.bound);
                let newer = std::mem::replace(&mut self.batch, back);
                self.batch.append(&newer);
            }
        }
    }

    /// Time the loop has waited for the writer thread (None without one).
    pub fn writer_waited(&self) -> Option<Duration> {
        self.writer.as_ref().map(|w| w.waited)
    }

    /// Takes back the batch in flight once written (with `wait`, waits for it).
    fn collect(&mut self, wait: bool) {
        let Some(w) = &mut self.writer else {
            return;
        };
        let rows = w.in_flight();
        match w.poll(wait) {
            Ok(None) => {}
            Ok(Some(Written {
                mut batch, result, ..
            })) => match result {
                Ok(()) => {
                    batch.clear();
                    self.spare = Some(batch);
                    self.batch.set_max_rows(self.bound);
                    self.last_store_error = None;
                }
                Err(msg) => {
                    // Unwritten: its rows go first, then those gathered meanwhile.
                    self.write_failed(msg, batch.len() + self.batch.len());
                    batch.set_max_rows(self.bound);
                    batch.append(&self.batch);
                    self.dropped_before += self.batch.take_dropped();
                    let mut newer = std::mem::replace(&mut self.batch, batch);
                    newer.clear();
                    self.spare = Some(newer);
                }
            },
            Err(_gone) => {
                log::error!(
                    "database writer thread stopped; {rows} rows in flight lost; writing on the packet loop instead"
                );
                self.dropped_before += rows as u64;
                self.writer = None;
                self.batch.set_max_rows(self.bound);
            }
        }
    }

    /// Waits until every gathered row has been written (or its write has failed and it is
    /// held for a retry): the end of a run, and tests that read the database next.
    pub fn sync(&mut self) {
        if self.writer.is_none() {
            return;
        }
        self.collect(true);
        self.hand_over();
        self.collect(true);
    }

    /// Rows not yet in the database: gathered, being written, or held after a failed write.
    pub fn backlog(&self) -> usize {
        self.batch.len() + self.writer.as_ref().map_or(0, Writer::in_flight)
    }

    pub fn dropped(&self) -> u64 {
        self.dropped_before + self.batch.dropped()
    }

    /// Syslog output counters (None when `[syslog]` is off).
    pub fn syslog_stats(&self) -> Option<SyslogStats> {
        self.syslog.as_ref().map(Syslog::stats)
    }

    /// Before the process ends: give the syslog queue a bounded grace to reach the
    /// collector, then log what was delivered and dropped.
    pub fn flush_before_exit(&mut self) {
        if let Some(s) = &mut self.syslog {
            s.flush_before_exit();
            let st = s.stats();
            info!(
                "syslog: {} events sent to {}, {} dropped (queue full {}, oversize {}, send failed {}, at exit {})",
                st.sent,
                s.describe(),
                st.dropped(),
                st.dropped_full,
                st.dropped_oversize,
                st.dropped_send,
                st.dropped_at_exit
            );
        }
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
    /// Learning-mode progress (None when learning is off).
    pub learning: Option<LearningStatus>,
}

/// Learning mode as /api/status shows it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LearningStatus {
    /// "learning", "done" or "failed".
    pub state: String,
    /// Packet time learning started (Unix s).
    pub started: f64,
    /// Seconds to learn.
    pub duration: u64,
    /// Seconds learned so far.
    pub elapsed: f64,
    /// Share done, 0..1.
    pub progress: f64,
    /// Where the learned model is written.
    pub model: String,
    pub message: String,
}

/// Where learning mode writes its model: next to the configured one.
pub fn learned_model_path(cfg: &Config) -> PathBuf {
    let base = if cfg.detection.model.as_os_str().is_empty() {
        cfg.output
            .db
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    } else {
        cfg.detection
            .model
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    };
    base.join("learned.json")
}

/// Starts or resumes learning mode from what the database remembers (meta keys
/// `learning_state`, `learning_started`); a finished run loads the learned model.
pub fn start_learning(p: &mut Pipeline) {
    if !p.cfg.learning.enabled {
        return;
    }
    let Some(store) = &mut p.outputs.store else {
        warn!("learning mode needs a database; learning is off");
        return;
    };
    let path = learned_model_path(&p.cfg);
    let state = store.get_meta("learning_state").ok().flatten();
    let started = store
        .get_meta("learning_started")
        .ok()
        .flatten()
        .and_then(|s| s.parse::<f64>().ok());
    let mut status = LearningStatus {
        state: "learning".into(),
        started: started.unwrap_or(0.0),
        duration: p.cfg.learning.duration,
        elapsed: 0.0,
        progress: 0.0,
        model: path.display().to_string(),
        message: String::new(),
    };
    if state.as_deref() == Some("done") {
        match Model::load(&path) {
            Ok(m) => {
                info!(
                    "learning: already done; using the learned model {}",
                    path.display()
                );
                p.engine.set_model(Some(m));
                status.state = "done".into();
                status.progress = 1.0;
                p.info.learning = Some(status);
                return;
            }
            Err(e) => warn!("learning: the learned model cannot be loaded ({e}); learning again"),
        }
    }
    if started.is_some() && state.as_deref() == Some("learning") {
        info!("learning: resuming (started at {})", status.started);
    } else {
        status.started = 0.0;
    }
    p.engine.set_collect_samples(true);
    p.info.learning = Some(status);
}

/// On ticks: records learning progress and, once the period is over, trains on the stored
/// samples, writes the model atomically, switches to it and records that in `meta`.
fn advance_learning(p: &mut Pipeline) {
    let Some(status) = &mut p.info.learning else {
        return;
    };
    if status.state != "learning" {
        return;
    }
    let Some(store) = &mut p.outputs.store else {
        return;
    };
    let now = p.engine.now() as f64 / 1e6;
    if p.engine.now() == i64::MIN {
        return;
    }
    if status.started == 0.0 {
        // Learning starts with the first frame seen.
        status.started = p.engine.stats.first_ts as f64 / 1e6;
        let _ = store.set_meta("learning_state", "learning");
        let _ = store.set_meta("learning_started", &format!("{:.6}", status.started));
    }
    status.elapsed = (now - status.started).max(0.0);
    status.progress = (status.elapsed / status.duration.max(1) as f64).min(1.0);
    if status.elapsed < status.duration as f64 {
        return;
    }
    let samples = match store.feature_samples(status.started, u32::MAX) {
        Ok(s) => s,
        Err(e) => {
            status.message = format!("cannot read samples: {e}");
            return;
        }
    };
    let vectors: Vec<_> = samples.iter().map(|s| s.features).collect();
    let l = &p.cfg.learning;
    let params = crate::model::TrainParams {
        n_trees: l.trees,
        max_samples: l.samples,
        seed: l.seed,
    };
    let path = PathBuf::from(&status.model);
    let result = crate::model::train(
        &vectors,
        &params,
        &["live learning".to_string()],
        training_time(),
    )
    .and_then(|m| m.save(&path).map(|()| m));
    match result {
        Ok(m) => {
            info!(
                "learning: trained on {} samples; switched to {}",
                vectors.len(),
                path.display()
            );
            p.engine.set_model(Some(m));
            p.engine.set_collect_samples(false);
            let _ = store.set_meta("learning_state", "done");
            let _ = store.set_meta("learned_model", &status.model);
            let _ = store.set_meta("learned_at", &format!("{now:.6}"));
            let _ = store.set_meta("learned_samples", &vectors.len().to_string());
            status.state = "done".into();
            status.progress = 1.0;
            status.message = format!("trained on {} samples", vectors.len());
        }
        Err(e) => {
            // Not enough or unusable samples: keep learning and try again on a later tick.
            warn!("learning: training failed ({e}); still learning");
            status.message = e.to_string();
        }
    }
}

/// Reloads rules, intel and model after SIGHUP; a bad file keeps the old one.
fn reload(cfg: &Config, engine: &mut Engine) {
    info!("SIGHUP: reloading rules, intel and model");
    // Files that now yield nothing (garbage, truncated) count as bad when the old set had
    // something: detection must not silently stop.
    match load_rules(cfg) {
        Ok(Some(r)) if r.is_empty() && engine.rules().is_some_and(|o| !o.is_empty()) => {
            warn!("reload: keeping the old rules: no rule loaded from the new files")
        }
        Ok(r) => engine.set_rules(r),
        Err(e) => warn!("reload: keeping the old rules: {e}"),
    }
    match load_intel(cfg) {
        Ok(Some(i)) if i.is_empty() && engine.intel.as_ref().is_some_and(|o| !o.is_empty()) => {
            warn!("reload: keeping the old intel lists: no entry loaded from the new lists")
        }
        Ok(i) => engine.intel = i,
        Err(e) => warn!("reload: keeping the old intel lists: {e}"),
    }
    match load_model(cfg) {
        Ok(m) => engine.set_model(m),
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
    /// When outputs were last flushed and HTTP polled. Kept across sources, so a replay of
    /// many small captures still ticks every `FLUSH_EVERY`.
    pub last_tick: Instant,
}

impl Pipeline {
    /// Builds the engine from the detectors and starts (or resumes) learning mode.
    pub fn new(
        cfg: Config,
        det: Detectors,
        outputs: Outputs,
        server: Option<Server>,
        mode: &'static str,
        source: String,
    ) -> Pipeline {
        let info = RunInfo {
            mode,
            source,
            started: Instant::now(),
            started_unix: unix_now(),
            appliance: appliance_name(&cfg),
            rules_loaded: det.rules.as_ref().map_or(0, |r| r.len()),
            intel_entries: det.intel.as_ref().map_or(0, intel_size),
            capture_done: false,
            kernel_drops: 0,
            learning: None,
        };
        let mut engine = build_engine(&cfg, det, false);
        // One core: the thread could only take turns with the loop, so judge on the loop.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cfg.detection.judge_thread && cores == 1 {
            info!("one CPU core: hosts are judged on the packet loop ([detection] judge_thread)");
        }
        if cfg.detection.judge_thread && cores > 1 {
            match engine.start_judge_thread() {
                Ok(()) => engine.set_judge_eager(mode == "live"),
                Err(e) => {
                    warn!("cannot start the host judge thread ({e}); judging on the packet loop")
                }
            }
        }
        let mut p = Pipeline {
            cfg,
            engine,
            outputs,
            server,
            info,
            signals: Signals::install(),
            last_tick: Instant::now(),
        };
        start_learning(&mut p);
        p
    }

    /// Runs one source to its end (or a stop). Returns false if stopped by a signal.
    pub fn run_source(&mut self, src: &mut dyn FrameSource) -> Result<bool, RunError> {
        loop {
            let next = src.next_frame()?;
            match next {
                Next::Frame(f) => {
                    self.engine.process_frame(f.ts, f.link, f.data, f.wire_len);
                }
                Next::Idle(now) => {
                    self.engine.tick(now);
                }
                Next::End => break,
            }
            if self.engine.outbox.pressing()
                || self.engine.judged_pressing()
                || (self.engine.stats.frames % 1024 == 0 && self.last_tick.elapsed() >= FLUSH_EVERY)
            {
                self.tick_outputs(src);
                self.last_tick = Instant::now();
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
        self.engine.sync_judged(false);
        self.outputs.flush(&mut self.engine);
        advance_learning(self);
        self.poll_http();
        if self.signals.reload.swap(false, Ordering::Relaxed) {
            reload(&self.cfg, &mut self.engine);
            // As Suricata does on SIGHUP: reopen the EVE file so log rotation works.
            if let Some(e) = &mut self.outputs.eve {
                if let Err(err) = e.reopen() {
                    warn!("EVE output: cannot reopen after SIGHUP: {err}");
                }
            }
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
        self.engine.sync_judged(true);
        // The table can hold more flows than the outbox: drain in steps, flushing between.
        while !self.engine.drain_flows() {
            self.outputs.flush(&mut self.engine);
        }
        self.outputs.flush(&mut self.engine);
        self.outputs.sync();
        advance_learning(self);
        self.outputs.flush_before_exit();
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
    let outputs = Outputs::open(&cfg, plan.db.as_deref(), plan.eve.as_deref())?;
    let server = match &plan.serve {
        Some(addr) => Some(Server::bind(addr, &cfg.http.token)?),
        None => None,
    };
    let source = plan
        .pcaps
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let mut p = Pipeline::new(cfg, det, outputs, server, "replay", source);
    let t = Instant::now();
    for path in &plan.pcaps {
        let before = p.engine.stats.frames;
        let result = capture::open_file(path)
            .map_err(RunError::from)
            .and_then(|mut src| p.run_source(src.as_mut()));
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
    let read = t.elapsed().as_secs_f64();
    let writer_waited = p.outputs.writer_waited();
    p.finish();
    let secs = t.elapsed().as_secs_f64();
    debug!(
        "replay: captures read in {read:.3} s, the last second closed and everything stored in {:.3} s more",
        secs - read
    );
    let (spent, helped) = p.engine.judge_help();
    debug!(
        "replay: the loop spent {:.0} ms on the judge thread's work (applying {helped} batches of host events itself, and waiting for its buffers)",
        spent.as_secs_f64() * 1e3
    );
    if let Some(w) = writer_waited {
        debug!(
            "replay: the loop waited {:.0} ms for the database writer while reading (replay keeps every row)",
            w.as_secs_f64() * 1e3
        );
    }
    crate::stats::log_thread_times();
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
    let opts = capture::live::LiveOptions {
        promiscuous: cfg.capture.promiscuous,
        read_timeout: Duration::from_millis(cfg.capture.read_timeout_ms),
        ring_mb: if cfg.capture.ring {
            cfg.capture.ring_mb
        } else {
            0
        },
        ..capture::live::LiveOptions::default()
    };
    let mut src = capture::open_live(iface, &opts)?;
    // Root is needed for the capture socket only: switch to [service] user from here on.
    crate::privdrop::drop_privileges(&cfg.service, &cfg.origin)?;
    let db = cfg.output.db.clone();
    let eve = (!cfg.output.eve.as_os_str().is_empty()).then(|| cfg.output.eve.clone());
    let outputs = Outputs::open_with(&cfg, Some(&db), eve.as_deref(), true)?;
    let server = if cfg.http.enabled {
        Some(Server::bind(&cfg.http.bind, &cfg.http.token)?)
    } else {
        None
    };
    let mut p = Pipeline::new(cfg, det, outputs, server, "live", iface.to_string());
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
        if p.engine.outbox.pressing()
            || p.engine.judged_pressing()
            || last_flush.elapsed() >= FLUSH_EVERY
        {
            // Live: packet time follows the wall clock; close seconds even when quiet.
            p.engine.tick(unix_now_micros());
            p.tick_outputs(src.as_ref());
            last_flush = Instant::now();
        }
    }
    info!("stopping: flushing pending results");
    p.finish();
    crate::stats::log_thread_times();
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
