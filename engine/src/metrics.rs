//! All engine metrics, registered once in the default Prometheus registry.

use std::sync::LazyLock;

use prometheus::{
    Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, register_gauge,
    register_histogram, register_int_counter, register_int_counter_vec, register_int_gauge,
};

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register_int_counter_vec!(Opts::new(name, help), labels).unwrap_or_else(|_| {
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
    })
}

fn counter(name: &str, help: &str) -> IntCounter {
    register_int_counter!(name, help)
        .unwrap_or_else(|_| IntCounter::new(name, help).expect("valid metric"))
}

fn gauge(name: &str, help: &str) -> IntGauge {
    register_int_gauge!(name, help)
        .unwrap_or_else(|_| IntGauge::new(name, help).expect("valid metric"))
}

fn float_gauge(name: &str, help: &str) -> Gauge {
    register_gauge!(name, help).unwrap_or_else(|_| Gauge::new(name, help).expect("valid metric"))
}

/// Events offered to the correlator, by source and outcome
/// (buffered, applied_late, duplicate, too_late).
pub static EVENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "causeway_engine_events_total",
        "Events offered to the correlator, by source and outcome",
        &["source", "outcome"],
    )
});

/// Incident versions emitted.
pub static INCIDENT_VERSIONS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "causeway_engine_incident_versions_total",
        "Incident versions emitted",
    )
});

/// Events waiting for the watermark.
pub static PENDING_EVENTS: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "causeway_engine_pending_events",
        "Events buffered until the watermark passes them",
    )
});

/// Incidents held in correlation state.
pub static OPEN_INCIDENTS: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "causeway_engine_state_incidents",
        "Incidents held in correlation state",
    )
});

/// Causes buffered for linking.
pub static BUFFERED_CAUSES: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "causeway_engine_state_causes",
        "Cause events buffered for linking",
    )
});

/// Effects buffered for late causes and thresholds.
pub static BUFFERED_EFFECTS: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "causeway_engine_state_effects",
        "Applied effects buffered for causes that arrive late and for thresholds",
    )
});

/// Join keys with buffered events.
pub static OPEN_KEYS: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "causeway_engine_state_keys",
        "Join keys (rule and key, or subject) with buffered events",
    )
});

/// Event ids remembered for de-duplication.
pub static REMEMBERED_IDS: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "causeway_engine_state_remembered_ids",
        "Event ids remembered to count re-sends and redeliveries once",
    )
});

/// Join records evicted, by reason (expired, cap).
pub static EVICTIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "causeway_engine_state_evictions_total",
        "Buffered join records evicted, by reason (expired: aged out; cap: the hard cap was reached)",
        &["reason"],
    )
});

/// Events applied before the watermark reached them because the cap was reached.
pub static FORCED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "causeway_engine_forced_events_total",
        "Events applied before the watermark passed them because the reorder buffer reached the cap",
    )
});

/// Correlation state discarded because the rules changed.
pub static STATE_RESETS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "causeway_engine_state_resets_total",
        "Partition correlation states restarted because the rule pack changed since the checkpoint",
    )
});

/// Watermark, seconds since the epoch (microsecond resolution: a latency
/// dashboard compares it with the wall clock).
pub static WATERMARK: LazyLock<Gauge> = LazyLock::new(|| {
    float_gauge(
        "causeway_engine_watermark_seconds",
        "Event-time watermark, seconds since the Unix epoch",
    )
});

/// Events per call of `Engine::process`: how well the engine batches its input
/// (tiny batches under load mean per-batch costs dominate).
pub static BATCH_EVENTS: LazyLock<Histogram> = LazyLock::new(|| {
    let opts = HistogramOpts::new(
        "causeway_engine_batch_events",
        "Events correlated per engine batch",
    )
    .buckets(vec![1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0]);
    register_histogram!(opts.clone())
        .unwrap_or_else(|_| Histogram::with_opts(opts).expect("valid metric"))
});

/// Time to flush history and write a checkpoint.
pub static COMMIT_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    let opts = HistogramOpts::new(
        "causeway_history_commit_duration_seconds",
        "Time to write pending history as Parquet and checkpoint the engine",
    );
    register_histogram!(opts.clone())
        .unwrap_or_else(|_| Histogram::with_opts(opts).expect("valid metric"))
});

/// History rows written to Parquet, by table.
pub static HISTORY_ROWS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "causeway_history_rows_total",
        "Rows committed to the Parquet history, by table",
        &["table"],
    )
});

/// SQL queries, by surface outcome (ok, rejected, timeout, error).
pub static QUERIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "causeway_sql_queries_total",
        "SQL queries over the history, by outcome",
        &["outcome"],
    )
});

/// History files removed by retention.
pub static HISTORY_FILES_DROPPED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "causeway_history_retention_dropped_files_total",
        "History files removed because their day is older than the retention",
    )
});

/// History files merged away by compaction.
pub static HISTORY_FILES_COMPACTED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "causeway_history_compacted_files_total",
        "Small history files merged into one per table and day",
    )
});
