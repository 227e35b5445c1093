//! Per-source watermarks with idleness.
//!
//! Each source's watermark is its latest event time minus its out-of-orderness
//! delay; the engine's watermark is the minimum over sources that spoke within the
//! idle timeout, so a silent feed never stalls alerts (a re-send of an event
//! already seen is not a sign of life: it carries no new event time, and
//! Alertmanager re-notifies firing alerts for as long as they fire). When every
//! source is idle,
//! the watermark moves to the latest event time seen, so nothing waits forever.
//! Processing time is used only to judge idleness, and while the engine is behind
//! the log it is the log's arrival time, not the wall clock ([`LogClock`]).
//!
//! A source that is late by nature (cost records arrive hours or a day after the
//! usage they bill) does not drive the watermark at all: its events are always
//! behind it, and are applied as they arrive within their allowed lateness, each
//! updating its incident as a new version.

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
    /// Whether this source's progress holds the watermark back (false for feeds
    /// that are always behind, like cost).
    #[serde(default = "yes")]
    pub drives_watermark: bool,
}

fn yes() -> bool {
    true
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
            drives_watermark: true,
        };
        // Seconds of delay for alerts, minutes for audit logs and CloudTrail
        // (delivered in batches every few minutes), hours for cost. Alerts may
        // still be 10 minutes late: Alertmanager sends a resolution at the next
        // `group_interval` (5 minutes by default) after it ends.
        WatermarkConfig {
            idle_timeout: Duration::from_secs(2),
            default: s(10, 600),
            sources: [
                ("alertmanager".to_owned(), s(5, 600)),
                ("github".to_owned(), s(30, 3600)),
                ("argocd".to_owned(), s(10, 600)),
                ("k8s_audit".to_owned(), s(10, 600)),
                ("k8s_event".to_owned(), s(10, 600)),
                ("cloudtrail".to_owned(), s(60, 1800)),
                (
                    "cost".to_owned(),
                    SourceTiming {
                        delay: Duration::ZERO,
                        allowed_lateness: Duration::from_secs(72 * 3600),
                        drives_watermark: false,
                    },
                ),
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
        let driving = |s: &String| config.timing(s).drives_watermark;
        // All idle: the newest event time of the driving sources; with none at all
        // (a cost import alone), of every source.
        self.holder(config, now)
            .map(|(_, w)| w)
            .or_else(|| {
                self.clocks
                    .iter()
                    .filter(|(s, _)| driving(s))
                    .map(|(_, c)| c.max_time)
                    .max()
            })
            .or_else(|| self.clocks.values().map(|c| c.max_time).max())
    }

    /// The active source holding the watermark at `now` and its watermark (none
    /// when every driving source is idle).
    pub fn holder(
        &self,
        config: &WatermarkConfig,
        now: ProcessingTime,
    ) -> Option<(&str, EventTime)> {
        let idle_before = now.minus(config.idle_timeout);
        self.clocks
            .iter()
            .filter(|(s, c)| config.timing(s).drives_watermark && c.last_seen > idle_before)
            .map(|(s, c)| (s.as_str(), c.max_time.minus(config.timing(s).delay)))
            .min_by_key(|(_, w)| *w)
    }
}

/// The processing time the engine judges idleness by.
///
/// Live, that is the wall clock. While the engine works through a backlog (a big
/// import, a restart after downtime) the wall clock runs ahead of the log: judged
/// by it, a rare source would look idle between two of its events only because
/// the engine is slow to reach the next one, and the watermark would leave its
/// events behind as too late — more of them the slower the machine. So while
/// behind, the clock is the newest arrival time of what the engine reads (when the
/// log received it): never ahead of the wall clock, never going back.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogClock {
    last: Option<ProcessingTime>,
}

impl LogClock {
    /// The time for a batch whose events arrived at `arrivals`; `behind` when the
    /// read was cut at its size limit (more is waiting in the log).
    pub fn now(
        &mut self,
        arrivals: impl IntoIterator<Item = ProcessingTime>,
        behind: bool,
        wall: ProcessingTime,
    ) -> ProcessingTime {
        let now = if behind {
            let newest = arrivals.into_iter().max();
            match (self.last, newest) {
                (Some(last), Some(n)) => last.max(n.min(wall)),
                (Some(last), None) => last,
                (None, Some(n)) => n.min(wall),
                (None, None) => wall,
            }
        } else {
            wall.max(self.last.unwrap_or(ProcessingTime::MIN))
        };
        self.last = Some(now);
        now
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
        w.observe("k8s_audit", at(100), now(0));
        w.observe("alertmanager", at(1000), now(0));
        assert_eq!(w.watermark(&cfg, now(1)), Some(at(90)));
        w.observe("alertmanager", at(1100), now(5));
        assert_eq!(w.watermark(&cfg, now(5)), Some(at(1095)));
        assert_eq!(w.watermark(&cfg, now(60)), Some(at(1100)));
    }

    #[test]
    fn a_feed_late_by_nature_never_holds_the_watermark() {
        let cfg = WatermarkConfig::default();
        let mut w = WatermarkTracker::default();
        w.observe("alertmanager", at(100_000), now(0));
        w.observe("cost", at(10), now(0));
        assert_eq!(w.watermark(&cfg, now(0)), Some(at(99_995)));
        assert!(cfg.timing("cost").allowed_lateness >= Duration::from_secs(86_400));
        let mut only_cost = WatermarkTracker::default();
        only_cost.observe("cost", at(10), now(0));
        assert_eq!(only_cost.watermark(&cfg, now(0)), Some(at(10)));
    }

    #[test]
    fn behind_the_log_idleness_is_judged_by_arrival_not_by_the_wall_clock() {
        let mut clock = LogClock::default();
        // Caught up: the wall clock.
        assert_eq!(clock.now([], false, now(10)), now(10));
        // A backlog that arrived at 5..8 is read at wall 20..40: the clock stays
        // at 10 (never back), so no source goes idle while the engine catches up.
        assert_eq!(clock.now([now(5), now(8)], true, now(20)), now(10));
        assert_eq!(clock.now([now(12)], true, now(30)), now(12));
        // Never ahead of the wall clock, even if a sender's stamp is.
        assert_eq!(clock.now([now(99)], true, now(40)), now(40));
        // Caught up again: the wall clock, which lets silent sources go idle.
        assert_eq!(clock.now([now(41)], false, now(41)), now(41));
        let cfg = WatermarkConfig::default();
        let mut w = WatermarkTracker::default();
        let mut clock = LogClock::default();
        let t = clock.now([now(0)], true, now(0));
        w.observe("k8s_audit", at(100), t);
        // 10 minutes of wall clock spent on alerts of the same import.
        let t = clock.now([now(0)], true, now(600));
        w.observe("alertmanager", at(1000), t);
        assert_eq!(
            w.watermark(&cfg, t),
            Some(at(100).minus(cfg.timing("k8s_audit").delay)),
            "the audit feed still holds the watermark"
        );
    }
}
