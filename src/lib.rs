//! PhantomNet: a network intrusion and anomaly detector in one synchronous, low-allocation
//! loop — frames → decode → flow & host state → detectors → features → Isolation Forest →
//! correlation → verdicts → SQLite / EVE JSON / HTTP.

pub mod arpwatch;
pub mod capture;
pub mod cli;
pub mod config;
pub mod correlate;
pub mod decode;
pub mod engine;
pub mod eval;
pub mod eve;
pub mod events;
pub mod features;
pub mod flow;
pub mod host;
pub mod intel;
pub mod judge;
pub mod metrics;
pub mod model;
pub mod page;
pub mod prefetch;
pub mod privdrop;
pub mod rules;
pub mod runtime;
pub mod sched;
pub mod serve;
pub mod stats;
pub mod store;
pub mod syslog;
pub mod table;
pub mod writer;
