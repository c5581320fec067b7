//! Command-line structs (argh) only: parsed here, validated into a `Config` by the runtime.

use std::path::PathBuf;

use argh::FromArgs;

/// PhantomNet: network intrusion and anomaly detection for home routers and small boxes.
#[derive(FromArgs, Debug)]
pub struct Cli {
    /// log level: error, warn, info, debug, trace (default info; RUST_LOG also works)
    #[argh(option, default = "String::from(\"info\")")]
    pub log: String,
    #[argh(subcommand)]
    pub cmd: Command,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum Command {
    Run(RunArgs),
    Replay(ReplayArgs),
    Check(CheckArgs),
    Train(TrainArgs),
    Eval(EvalArgs),
}

/// Watch a live interface (needs CAP_NET_RAW).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "run")]
pub struct RunArgs {
    /// config file (default: ./config/phantomnet.toml, then /etc/phantomnet/phantomnet.toml)
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
    /// interface to watch (overrides capture.interface)
    #[argh(option, short = 'i')]
    pub interface: Option<String>,
    /// database file (overrides output.db)
    #[argh(option)]
    pub db: Option<PathBuf>,
    /// EVE JSON file (overrides output.eve)
    #[argh(option)]
    pub eve: Option<PathBuf>,
    /// HTTP bind address (overrides http.bind)
    #[argh(option)]
    pub serve: Option<String>,
    /// stop after this many seconds (for tests and measurements)
    #[argh(option)]
    pub duration: Option<u64>,
}

/// Run the same pipeline over capture files (pcap or pcapng).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "replay")]
pub struct ReplayArgs {
    /// capture files, replayed in order as one continuous stream
    #[argh(positional)]
    pub pcaps: Vec<PathBuf>,
    /// config file
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
    /// rule file (repeatable; replaces the configured rule files)
    #[argh(option)]
    pub rules: Vec<PathBuf>,
    /// threat-intel list (repeatable; replaces the configured lists)
    #[argh(option)]
    pub intel: Vec<PathBuf>,
    /// model file (overrides detection.model)
    #[argh(option)]
    pub model: Option<PathBuf>,
    /// run without the anomaly model
    #[argh(switch)]
    pub no_model: bool,
    /// database file (overrides output.db)
    #[argh(option)]
    pub db: Option<PathBuf>,
    /// EVE JSON file (overrides output.eve)
    #[argh(option)]
    pub eve: Option<PathBuf>,
    /// serve the status page and API on this address, and keep serving after the captures
    /// end until interrupted
    #[argh(option)]
    pub serve: Option<String>,
}

/// Validate config, rules, intel and model, then exit.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "check")]
pub struct CheckArgs {
    /// config file
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
}

/// Train an Isolation Forest from captures or from feature samples stored in SQLite.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "train")]
pub struct TrainArgs {
    /// capture files of normal traffic
    #[argh(positional)]
    pub pcaps: Vec<PathBuf>,
    /// read feature samples from this database instead of captures
    #[argh(option)]
    pub db: Option<PathBuf>,
    /// where to write the model
    #[argh(option)]
    pub out: PathBuf,
    /// number of trees (default 100)
    #[argh(option, default = "100")]
    pub trees: usize,
    /// samples per tree, ψ (default 256)
    #[argh(option, default = "256")]
    pub samples: usize,
    /// random seed (default 1)
    #[argh(option, default = "1")]
    pub seed: u64,
    /// config file (tables and timeouts used while extracting features)
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
}

/// Detection table over labelled captures.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "eval")]
pub struct EvalArgs {
    /// TSV with columns file, label (benign|attack), attack_kind
    #[argh(positional)]
    pub labels: PathBuf,
    /// config file
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
    /// model file (overrides detection.model)
    #[argh(option)]
    pub model: Option<PathBuf>,
    /// run without the anomaly model (signatures only)
    #[argh(switch)]
    pub no_model: bool,
    /// run without rules (model only)
    #[argh(switch)]
    pub no_rules: bool,
    /// score each benign capture with a model trained on the other benign captures
    #[argh(switch)]
    pub leave_one_out: bool,
    /// print JSON instead of a table
    #[argh(switch)]
    pub json: bool,
}
