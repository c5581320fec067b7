//! Thin entry point: parse the command line, run, map errors to an exit code.

use std::process::ExitCode;
use std::time::Duration;

use phantomnet::cli::{Cli, Command};
use phantomnet::runtime::{self, RunError};

fn main() -> ExitCode {
    let cli: Cli = argh::from_env();
    let env = env_logger::Env::default().default_filter_or(cli.log.as_str());
    env_logger::Builder::from_env(env)
        .format_target(false)
        .init();
    match dispatch(cli.cmd) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("phantomnet: error: {e}");
            ExitCode::from(2)
        }
    }
}

fn dispatch(cmd: Command) -> Result<ExitCode, RunError> {
    match cmd {
        Command::Run(a) => {
            let mut cfg = runtime::load_config(a.config.as_deref())?;
            if let Some(db) = a.db {
                cfg.output.db = db;
            }
            if let Some(eve) = a.eve {
                cfg.output.eve = eve;
            }
            if let Some(addr) = a.serve {
                cfg.http.enabled = true;
                cfg.http.bind = addr;
            }
            let iface = a.interface.unwrap_or_else(|| cfg.capture.interface.clone());
            if iface.is_empty() {
                return Err(RunError::Other(
                    "no interface to watch: give -i IFACE or set capture.interface in the config"
                        .into(),
                ));
            }
            cfg.validate()?;
            let det = runtime::load_detectors(&cfg)?;
            runtime::run_live(cfg, det, &iface, a.duration.map(Duration::from_secs))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay(a) => {
            if a.pcaps.is_empty() {
                return Err(RunError::Other(
                    "replay needs at least one capture file".into(),
                ));
            }
            let mut cfg = runtime::load_config(a.config.as_deref())?;
            if !a.rules.is_empty() {
                cfg.detection.rules = a.rules;
            }
            if !a.intel.is_empty() {
                cfg.detection.intel = a.intel;
            }
            if let Some(m) = a.model {
                cfg.detection.model = m;
            }
            if a.no_model {
                cfg.detection.model = Default::default();
            }
            let det = runtime::load_detectors(&cfg)?;
            let plan = runtime::ReplayPlan {
                pcaps: a.pcaps,
                db: Some(a.db.unwrap_or_else(|| cfg.output.db.clone())),
                eve: a.eve.or_else(|| {
                    (!cfg.output.eve.as_os_str().is_empty()).then(|| cfg.output.eve.clone())
                }),
                serve: a.serve,
            };
            runtime::replay(cfg, det, &plan)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check(a) => {
            let cfg = runtime::load_config(a.config.as_deref())?;
            let det = runtime::load_detectors(&cfg)?;
            println!("config {}: ok", cfg.origin);
            println!(
                "rules: {} loaded",
                det.rules.as_ref().map_or(0, |r| r.len())
            );
            println!(
                "intel: {} entries",
                det.intel.as_ref().map_or(0, runtime::intel_size)
            );
            match &det.model {
                Some(m) => println!("model: {}", runtime::describe_model(m)),
                None => println!("model: none"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Train(a) => {
            let cfg = runtime::load_config(a.config.as_deref())?;
            let model =
                runtime::train(&cfg, &a.pcaps, a.db.as_deref(), a.trees, a.samples, a.seed)?;
            model.save(&a.out)?;
            println!(
                "model written to {}: {}",
                a.out.display(),
                runtime::describe_model(&model)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval(a) => {
            let cfg = runtime::load_config(a.config.as_deref())?;
            phantomnet::eval::run(cfg, &a)
        }
    }
}
