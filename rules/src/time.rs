//! Event time and processing time, kept apart by type.
//!
//! Correlation runs on [`EventTime`] only: when something happened according to its
//! source. [`ProcessingTime`] is when Causeway saw it; it drives idleness and
//! metrics, never the outcome of correlation. Both are microseconds since the Unix
//! epoch, UTC, which is also their Arrow representation.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// When an event happened, by its source's clock.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventTime(i64);

/// When Causeway handled something, by its own clock.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProcessingTime(i64);

macro_rules! micros_time {
    ($ty:ident) => {
        impl $ty {
            /// The earliest representable instant; used as "no time yet".
            pub const MIN: $ty = $ty(i64::MIN);

            /// From microseconds since the Unix epoch.
            pub const fn from_micros(micros: i64) -> Self {
                Self(micros)
            }

            /// Microseconds since the Unix epoch.
            pub const fn as_micros(self) -> i64 {
                self.0
            }

            /// From a chrono UTC timestamp.
            pub fn from_datetime(dt: DateTime<Utc>) -> Self {
                Self(dt.timestamp_micros())
            }

            /// As a chrono UTC timestamp (saturating at chrono's range).
            pub fn to_datetime(self) -> DateTime<Utc> {
                Utc.timestamp_micros(self.0)
                    .single()
                    .unwrap_or(DateTime::<Utc>::MIN_UTC)
            }

            /// Parses RFC 3339 (`2024-05-01T10:00:00.123Z`, any offset).
            pub fn parse_rfc3339(value: &str) -> Result<Self> {
                DateTime::parse_from_rfc3339(value)
                    .map(|dt| Self(dt.with_timezone(&Utc).timestamp_micros()))
                    .map_err(|e| Error::InvalidTime {
                        value: value.to_owned(),
                        reason: e.to_string(),
                    })
            }

            /// RFC 3339 with as many sub-second digits as needed.
            pub fn to_rfc3339(self) -> String {
                self.to_datetime()
                    .to_rfc3339_opts(SecondsFormat::AutoSi, true)
            }

            /// This instant plus a duration (saturating).
            pub fn plus(self, d: Duration) -> Self {
                Self(self.0.saturating_add(duration_micros(d)))
            }

            /// This instant minus a duration (saturating).
            pub fn minus(self, d: Duration) -> Self {
                Self(self.0.saturating_sub(duration_micros(d)))
            }

            /// Seconds from `earlier` to `self` (negative when `earlier` is later).
            pub fn seconds_since(self, earlier: Self) -> f64 {
                (self.0.saturating_sub(earlier.0)) as f64 / 1_000_000.0
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($ty), self.to_rfc3339())
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_rfc3339())
            }
        }
    };
}

micros_time!(EventTime);
micros_time!(ProcessingTime);

impl ProcessingTime {
    /// The current wall clock. Only the engine's driver and the receivers call this;
    /// the correlation core never does.
    pub fn now() -> Self {
        Self(Utc::now().timestamp_micros())
    }
}

/// A duration in whole microseconds, saturating.
pub fn duration_micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_with_offsets_normalised_to_utc() {
        let t = EventTime::parse_rfc3339("2024-05-01T12:00:00.5+02:00").expect("valid");
        assert_eq!(t.to_rfc3339(), "2024-05-01T10:00:00.500Z");
        assert_eq!(EventTime::parse_rfc3339(&t.to_rfc3339()).expect("valid"), t);
    }

    #[test]
    fn garbage_timestamps_are_errors_not_panics() {
        assert!(EventTime::parse_rfc3339("yesterday").is_err());
        assert!(EventTime::parse_rfc3339("").is_err());
    }
}
