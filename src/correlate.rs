//! Correlation: evidence (anomaly, range guard, signatures, intel, ARP) → risk → verdict.
//!
//! Three separate steps, as the prototype's retrospective asked:
//! 1. `Evidence` is gathered by the detectors (engine) — nothing here detects;
//! 2. `score_risk` turns evidence into risk points (weights from the config);
//! 3. `map_verdict` turns risk and the kinds of evidence into a level, enforcing the policy:
//!    a mildly rare window alone is at most WARNING; HIGH needs an extreme anomaly / range
//!    breach, a top-priority signature, or two independent kinds; CRITICAL needs strong
//!    evidence of two kinds.

use heapless::Vec as HVec;

use crate::config::VerdictConfig;
use crate::events::Level;
use crate::features::N_FEATURES;
use crate::flow::Addr16;
use crate::host::Evidence;

/// How rare the model finds a window, against the training calibration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum AnomalyLevel {
    #[default]
    Normal,
    /// Score at or above the training p99.
    Rare,
    /// At or above the training p99.9.
    VeryRare,
    /// Above the highest training score.
    Extreme,
}

impl AnomalyLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyLevel::Normal => "normal",
            AnomalyLevel::Rare => "rare",
            AnomalyLevel::VeryRare => "very_rare",
            AnomalyLevel::Extreme => "extreme",
        }
    }
}

/// A feature that pushed the anomaly: its value and how unusual it is.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct FeatureDriver {
    pub feature: u8,
    pub value: f32,
    /// z-score against the training distribution.
    pub z: f32,
    /// Share of the forest's isolation credited to this feature (0..1).
    pub contribution: f32,
}

/// A feature far beyond anything seen in training.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct RangeBreach {
    pub feature: u8,
    pub value: f32,
    pub train_max: f32,
}

/// What the model says about one host-window.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct AnomalyEvidence {
    pub score: f64,
    pub level: AnomalyLevel,
    /// How far past the rarity threshold the score sits, 0..1 (for confidence).
    pub margin: f64,
    /// Share of trees whose path was shorter than the expected path (agreement).
    pub agreement: f64,
    pub drivers: [FeatureDriver; 3],
    pub n_drivers: u8,
    pub breaches: [RangeBreach; 4],
    pub n_breaches: u8,
}

/// One piece of evidence behind a verdict.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Reason {
    Anomaly {
        score: f32,
        level: AnomalyLevel,
        drivers: [FeatureDriver; 3],
        n_drivers: u8,
    },
    RangeGuard(RangeBreach),
    /// A rule (index into the rule set) or built-in detector hit.
    Signature {
        rule: u32,
        hits: u32,
        priority: u8,
    },
    Intel {
        list: u16,
        addr: Addr16,
    },
    ArpChange {
        old_mac: [u8; 6],
        new_mac: [u8; 6],
    },
}

/// Maximum reasons kept per verdict.
pub const MAX_REASONS: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Kinds {
    pub anomaly: bool,
    /// Extreme anomaly or a range-guard breach.
    pub anomaly_strong: bool,
    pub signature: bool,
    /// Signature of priority 1.
    pub signature_strong: bool,
    pub intel: bool,
    pub arp: bool,
}

impl Kinds {
    pub fn count(&self) -> u32 {
        u32::from(self.anomaly)
            + u32::from(self.signature)
            + u32::from(self.intel)
            + u32::from(self.arp)
    }

    pub fn strong_count(&self) -> u32 {
        u32::from(self.anomaly_strong)
            + u32::from(self.signature_strong)
            + u32::from(self.intel)
            + u32::from(self.arp)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Assessment {
    pub level: Level,
    pub risk: u8,
    pub confidence: f64,
    pub kinds: Kinds,
    pub reasons: HVec<Reason, MAX_REASONS>,
}

/// Step 2: risk points and evidence kinds.
pub fn score_risk(
    cfg: &VerdictConfig,
    anomaly: Option<&AnomalyEvidence>,
    ev: &Evidence,
) -> (u32, Kinds) {
    let mut risk = 0u32;
    let mut k = Kinds::default();
    if let Some(a) = anomaly {
        let pts = match a.level {
            AnomalyLevel::Normal => 0,
            AnomalyLevel::Rare => cfg.anomaly_rare,
            AnomalyLevel::VeryRare => cfg.anomaly_very_rare,
            AnomalyLevel::Extreme => cfg.anomaly_extreme,
        };
        let breach = if a.n_breaches > 0 {
            cfg.range_breach + 5 * u32::from(a.n_breaches - 1)
        } else {
            0
        };
        let pts = pts.max(breach);
        if pts > 0 {
            risk += pts;
            k.anomaly = true;
            k.anomaly_strong = a.level == AnomalyLevel::Extreme || a.n_breaches > 0;
        }
    }
    if ev.sig.hits > 0 {
        let p = match ev.sig.best_priority {
            1 => cfg.signature_p1,
            2 => cfg.signature_p2,
            3 => cfg.signature_p3,
            _ => cfg.signature_p4,
        };
        risk += p + cfg.extra_signature * u32::from(ev.sig.n_rules.saturating_sub(1));
        k.signature = true;
        k.signature_strong = ev.sig.best_priority == 1;
    }
    if ev.intel_hits > 0 {
        risk += cfg.intel;
        k.intel = true;
    }
    if ev.arp_change {
        risk += cfg.arp_change;
        k.arp = true;
    }
    (risk.min(100), k)
}

/// Step 3: the level, from risk thresholds capped by the evidence policy.
pub fn map_verdict(cfg: &VerdictConfig, risk: u32, k: &Kinds) -> Level {
    let by_risk = if risk >= cfg.critical_risk {
        Level::Critical
    } else if risk >= cfg.high_risk {
        Level::High
    } else if risk >= cfg.warning_risk {
        Level::Warning
    } else {
        Level::Safe
    };
    let cap = if k.count() >= 2 && k.strong_count() >= 2 {
        Level::Critical
    } else if k.count() >= 2 || k.anomaly_strong || k.signature_strong || k.arp {
        Level::High
    } else {
        Level::Warning
    };
    by_risk.min(cap)
}

/// Confidence 0..1: independent pieces of evidence combine as 1 − Π(1 − cᵢ).
pub fn confidence(anomaly: Option<&AnomalyEvidence>, ev: &Evidence, k: &Kinds) -> f64 {
    let mut miss = 1.0f64;
    if let Some(a) = anomaly.filter(|_| k.anomaly) {
        let base = match a.level {
            AnomalyLevel::Normal => 0.3,
            AnomalyLevel::Rare => 0.35,
            AnomalyLevel::VeryRare => 0.5,
            AnomalyLevel::Extreme => 0.65,
        };
        let breach = if a.n_breaches > 0 {
            0.6 + 0.1 * f64::from(a.n_breaches.min(3))
        } else {
            0.0
        };
        let c = (base + 0.3 * a.margin.clamp(0.0, 1.0)).max(breach)
            * (0.5 + 0.5 * a.agreement.clamp(0.0, 1.0));
        miss *= 1.0 - c.clamp(0.0, 0.95);
    }
    if k.signature {
        let c = match ev.sig.best_priority {
            1 => 0.8,
            2 => 0.65,
            3 => 0.5,
            _ => 0.35,
        } + 0.05 * f64::from(ev.sig.n_rules.saturating_sub(1));
        miss *= 1.0 - f64::min(c, 0.95);
    }
    if k.intel {
        miss *= 1.0 - 0.7;
    }
    if k.arp {
        miss *= 1.0 - 0.75;
    }
    ((1.0 - miss) * 1000.0).round() / 1000.0
}

/// Steps 2 and 3 together, with the reasons listed strongest first.
pub fn assess(cfg: &VerdictConfig, anomaly: Option<&AnomalyEvidence>, ev: &Evidence) -> Assessment {
    let (risk, kinds) = score_risk(cfg, anomaly, ev);
    let level = map_verdict(cfg, risk, &kinds);
    let mut reasons: HVec<Reason, MAX_REASONS> = HVec::new();
    if ev.arp_change {
        let _ = reasons.push(Reason::ArpChange {
            old_mac: ev.arp_old_mac,
            new_mac: ev.arp_new_mac,
        });
    }
    if ev.intel_hits > 0 && ev.intel_list > 0 {
        let _ = reasons.push(Reason::Intel {
            list: ev.intel_list - 1,
            addr: ev.intel_addr,
        });
    }
    for &rule in &ev.sig.rules[..usize::from(ev.sig.n_rules)] {
        let _ = reasons.push(Reason::Signature {
            rule,
            hits: ev.sig.hits,
            priority: ev.sig.best_priority,
        });
    }
    if let Some(a) = anomaly.filter(|_| kinds.anomaly) {
        for b in &a.breaches[..usize::from(a.n_breaches)] {
            let _ = reasons.push(Reason::RangeGuard(*b));
        }
        let _ = reasons.push(Reason::Anomaly {
            score: a.score as f32,
            level: a.level,
            drivers: a.drivers,
            n_drivers: a.n_drivers,
        });
    }
    Assessment {
        level,
        risk: risk as u8,
        confidence: if level == Level::Safe {
            0.0
        } else {
            confidence(anomaly, ev, &kinds)
        },
        kinds,
        reasons,
    }
}

/// Feature index sanity for drivers and breaches.
pub fn valid_feature(f: u8) -> bool {
    usize::from(f) < N_FEATURES
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anomaly(level: AnomalyLevel, breaches: u8) -> AnomalyEvidence {
        AnomalyEvidence {
            score: 0.7,
            level,
            margin: 0.5,
            agreement: 0.8,
            n_breaches: breaches,
            ..Default::default()
        }
    }

    fn sig(priority: u8) -> Evidence {
        let mut e = Evidence::default();
        e.add_signature(1, priority);
        e
    }

    #[test]
    fn verdict_mapping_table() {
        let cfg = VerdictConfig::default();
        let none = Evidence::default();
        let intel = Evidence {
            intel_hits: 1,
            intel_list: 1,
            ..Evidence::default()
        };
        let arp = Evidence {
            arp_change: true,
            ..Evidence::default()
        };
        let mut sig_intel = sig(2);
        sig_intel.intel_hits = 1;
        sig_intel.intel_list = 1;
        let cases: Vec<(&str, Option<AnomalyEvidence>, Evidence, Level)> = vec![
            ("nothing", None, none, Level::Safe),
            (
                "normal window",
                Some(anomaly(AnomalyLevel::Normal, 0)),
                none,
                Level::Safe,
            ),
            (
                "rare window alone",
                Some(anomaly(AnomalyLevel::Rare, 0)),
                none,
                Level::Warning,
            ),
            (
                "very rare window alone stays WARNING",
                Some(anomaly(AnomalyLevel::VeryRare, 0)),
                none,
                Level::Warning,
            ),
            (
                "extreme anomaly alone is HIGH",
                Some(anomaly(AnomalyLevel::Extreme, 0)),
                none,
                Level::High,
            ),
            (
                "range breach alone is HIGH",
                Some(anomaly(AnomalyLevel::Normal, 1)),
                none,
                Level::High,
            ),
            ("priority-3 signature alone", None, sig(3), Level::Warning),
            (
                "priority-1 signature alone is HIGH",
                None,
                sig(1),
                Level::High,
            ),
            ("intel alone", None, intel, Level::Warning),
            ("ARP change alone is HIGH", None, arp, Level::High),
            (
                "rare + priority-2 signature",
                Some(anomaly(AnomalyLevel::Rare, 0)),
                sig(2),
                Level::High,
            ),
            ("signature + intel", None, sig_intel, Level::High),
            (
                "breach + priority-1 signature",
                Some(anomaly(AnomalyLevel::Normal, 1)),
                sig(1),
                Level::Critical,
            ),
            (
                "extreme + intel",
                Some(anomaly(AnomalyLevel::Extreme, 0)),
                intel,
                Level::Critical,
            ),
        ];
        for (name, a, ev, want) in cases {
            let got = assess(&cfg, a.as_ref(), &ev);
            assert_eq!(
                got.level, want,
                "{name}: risk {} kinds {:?}",
                got.risk, got.kinds
            );
            if want == Level::Safe {
                assert_eq!(got.confidence, 0.0, "{name}");
                assert!(got.reasons.is_empty(), "{name}");
            } else {
                assert!(got.confidence > 0.0 && got.confidence <= 1.0, "{name}");
                assert!(!got.reasons.is_empty(), "{name}");
            }
        }
    }

    #[test]
    fn more_independent_evidence_means_more_confidence() {
        let cfg = VerdictConfig::default();
        let a = anomaly(AnomalyLevel::Rare, 0);
        let one = assess(&cfg, Some(&a), &Evidence::default());
        let two = assess(&cfg, Some(&a), &sig(2));
        assert!(two.confidence > one.confidence);
        assert!(two.risk > one.risk);
    }
}
