//! Per-source watermarks with idleness.
//!
//! Each source's watermark is its latest event time minus its out-of-orderness
//! delay; the engine's watermark is the minimum over sources that spoke within the
//! idle timeout, so a silent cost feed never stalls alerts. When every source is
//! idle, the watermark moves to the latest event time seen, so nothing waits
//! forever. Processing time is used only to judge idleness.

use std::collections::BTreeMap;
use std::time::Duration;

use causeway_rules::{EventTime, ProcessingTime};
use serde::{Deserialize, Serialize};

/// Timing of one source.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceTiming {
    /// How far behind the newest event of this source others may arrive and still
    /// be ordered exactly.
    #[serde(with = "humantime_serde")]
    pub delay: Duration,
    /// How far behind the watermark an event may arrive and still update its
    /// incident (as a new version); further behind it is too late.
    #[serde(with = "humantime_serde")]
    pub allowed_lateness: Duration,
}

/// Watermark settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatermarkConfig {
    /// A source silent this long (processing time) stops holding the watermark.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Timing of sources not listed below.
    pub default: SourceTiming,
    /// Timing per source name (`alertmanager`, `github`, `cloudtrail`, `cost`, …).
    #[serde(default)]
    pub sources: BTreeMap<String, SourceTiming>,
}

impl Default for WatermarkConfig {
    fn default() -> Self {
        let s = |delay: u64, late: u64| SourceTiming {
            delay: Duration::from_secs(delay),
            allowed_lateness: Duration::from_secs(late),
        };
        WatermarkConfig {
            idle_timeout: Duration::from_secs(2),
            default: s(10, 600),
            sources: [
                ("alertmanager".to_owned(), s(10, 600)),
                ("github".to_owned(), s(30, 3600)),
            ]
            .into(),
        }
    }
}

impl WatermarkConfig {
    /// The timing of a source.
    pub fn timing(&self, source: &str) -> SourceTiming {
        self.sources.get(source).copied().unwrap_or(self.default)
    }

    /// The largest allowed lateness of any source.
    pub fn max_lateness(&self) -> Duration {
        self.sources
            .values()
            .map(|s| s.allowed_lateness)
            .chain([self.default.allowed_lateness])
            .max()
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct SourceClock {
    max_time: EventTime,
    #[serde(skip, default = "never")]
    last_seen: ProcessingTime,
}

fn never() -> ProcessingTime {
    ProcessingTime::MIN
}

/// Tracks each source's progress.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WatermarkTracker {
    clocks: BTreeMap<String, SourceClock>,
}

impl WatermarkTracker {
    /// Notes an event of `source` at `time`, seen at `now`.
    pub fn observe(&mut self, source: &str, time: EventTime, now: ProcessingTime) {
        match self.clocks.get_mut(source) {
            Some(c) => {
                c.max_time = c.max_time.max(time);
                c.last_seen = now;
            }
            None => {
                self.clocks.insert(
                    source.to_owned(),
                    SourceClock {
                        max_time: time,
                        last_seen: now,
                    },
                );
            }
        }
    }

    /// The watermark at `now`, or none before any event.
    pub fn watermark(&self, config: &WatermarkConfig, now: ProcessingTime) -> Option<EventTime> {
        let idle_before = now.minus(config.idle_timeout);
        let active = self
            .clocks
            .iter()
            .filter(|(_, c)| c.last_seen > idle_before)
            .map(|(s, c)| c.max_time.minus(config.timing(s).delay))
            .min();
        active.or_else(|| self.clocks.values().map(|c| c.max_time).max())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> EventTime {
        EventTime::from_micros(s * 1_000_000)
    }

    fn now(s: i64) -> ProcessingTime {
        ProcessingTime::from_micros(s * 1_000_000)
    }

    #[test]
    fn a_silent_source_stops_holding_the_watermark() {
        let cfg = WatermarkConfig::default();
        let mut w = WatermarkTracker::default();
        w.observe("cost", at(100), now(0));
        w.observe("alertmanager", at(1000), now(0));
        assert_eq!(w.watermark(&cfg, now(1)), Some(at(90)));
        w.observe("alertmanager", at(1100), now(5));
        assert_eq!(w.watermark(&cfg, now(5)), Some(at(1090)));
        assert_eq!(w.watermark(&cfg, now(60)), Some(at(1100)));
    }
}
