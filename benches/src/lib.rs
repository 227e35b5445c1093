//! A seeded workload generator shared by benchmarks and tests: a realistic mix of
//! deploys and alerts over many services, with Alertmanager-style re-sends, some
//! deploy regressions and background noise. The same seed gives the same events.

use causeway_engine::{Operator, WatermarkConfig};
use causeway_rules::{
    Catalog, CorrelatorConfig, Event, EventKind, EventTime, ProcessingTime, RulePack, Severity,
};

/// Shape of a generated workload.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    pub seed: u64,
    pub events: usize,
    pub services: usize,
    /// Fraction of events that are deploys.
    pub deploy_ratio: f64,
    /// Fraction of alerts that are re-sends of an earlier alert.
    pub resend_ratio: f64,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            seed: 42,
            events: 100_000,
            services: 200,
            deploy_ratio: 0.02,
            resend_ratio: 0.3,
        }
    }
}

/// A small, fast, seeded PRNG (xorshift64*): benchmark inputs must not depend on
/// a library's algorithm changes.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

const ALERTS: [&str; 6] = [
    "HighErrorRate",
    "HighLatencyP99",
    "KubePodCrashLooping",
    "KubeContainerOOMKilled",
    "SaturationHigh",
    "QueueBacklog",
];

/// Events in event-time order (a second apart on average), as receivers would
/// produce them.
pub fn generate(w: &Workload) -> Vec<Event> {
    let mut rng = Rng::new(w.seed);
    let start = 1_700_000_000_000_000i64;
    let mut t = start;
    let mut out: Vec<Event> = Vec::with_capacity(w.events);
    let mut fired: Vec<usize> = Vec::new();
    for i in 0..w.events {
        t += (rng.below(2_000) as i64) * 1_000;
        let service = format!("svc-{:04}", rng.below(w.services as u64));
        if rng.chance(w.deploy_ratio) {
            let sha = format!("{:040x}", rng.next_u64());
            let id = format!("{}", 10_000 + i);
            out.push(Event {
                id: Event::derive_id("github", &id, "success"),
                source: "github".into(),
                source_event_id: id,
                kind: EventKind::Deploy,
                time: EventTime::from_micros(t),
                ingested_at: ProcessingTime::from_micros(t),
                scope: "prod".into(),
                entity: service.clone(),
                severity: Severity::None,
                status: "success".into(),
                summary: format!("deploy {service} {}", &sha[..7]),
                attributes: [("sha".to_owned(), sha)].into(),
                raw: "{}".into(),
            });
            continue;
        }
        if !fired.is_empty() && rng.chance(w.resend_ratio) {
            let idx = fired[rng.below(fired.len() as u64) as usize];
            let mut again = out[idx].clone();
            again.ingested_at = ProcessingTime::from_micros(t);
            out.push(again);
            continue;
        }
        let name = ALERTS[rng.below(ALERTS.len() as u64) as usize];
        let sid = format!("{:016x}@{t}", rng.next_u64());
        fired.push(out.len());
        out.push(Event {
            id: Event::derive_id("alertmanager", &sid, "firing"),
            source: "alertmanager".into(),
            source_event_id: sid,
            kind: EventKind::Alert,
            time: EventTime::from_micros(t),
            ingested_at: ProcessingTime::from_micros(t),
            scope: "prod".into(),
            entity: service,
            severity: if rng.chance(0.3) {
                Severity::Critical
            } else {
                Severity::Warning
            },
            status: "firing".into(),
            summary: format!("{name} firing"),
            attributes: [("alertname".to_owned(), name.to_owned())].into(),
            raw: "{}".into(),
        });
    }
    out
}

/// The correlation operator as the engine runs it on one partition: the built-in
/// pack, default correlator and watermark settings.
pub fn operator_for(_w: &Workload) -> Operator {
    let pack = RulePack::builtin().expect("the built-in pack is valid");
    Operator::new(
        &pack,
        &Catalog::default(),
        CorrelatorConfig::default(),
        WatermarkConfig::default(),
    )
    .expect("the built-in pack compiles")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_events() {
        let w = Workload {
            events: 1000,
            ..Workload::default()
        };
        assert_eq!(generate(&w), generate(&w));
        let other = generate(&Workload { seed: 7, ..w });
        assert_ne!(generate(&w), other);
        assert!(generate(&w).iter().any(|e| e.kind == EventKind::Deploy));
    }
}
