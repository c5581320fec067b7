//! PhantomNet: a network intrusion and anomaly detector in one synchronous, low-allocation
//! loop — frames → decode → flow & host state → detectors → features → Isolation Forest →
//! correlation → verdicts → SQLite / EVE JSON / HTTP.

pub mod capture;
pub mod decode;
pub mod events;
pub mod features;
pub mod rules;
