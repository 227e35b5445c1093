//! All connector metrics, registered once in the default Prometheus registry.
//! Labels are bounded: `source` is a receiver name, `reason` a fixed vocabulary.

use std::sync::LazyLock;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    register_histogram, register_histogram_vec, register_int_counter_vec, register_int_gauge,
    register_int_gauge_vec,
};

/// Requests refused by a receiver, by source and reason.
pub static REJECTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let opts = Opts::new(
        "causeway_receiver_rejected_requests_total",
        "Requests refused by a receiver, by source and reason",
    );
    register_int_counter_vec!(opts.clone(), &["source", "reason"])
        .unwrap_or_else(|_| IntCounterVec::new(opts, &["source", "reason"]).expect("valid metric"))
});

/// Events accepted (durably appended) by a receiver, by source.
pub static ACCEPTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let opts = Opts::new(
        "causeway_receiver_accepted_events_total",
        "Events durably appended to the event log by a receiver, by source",
    );
    register_int_counter_vec!(opts.clone(), &["source"])
        .unwrap_or_else(|_| IntCounterVec::new(opts, &["source"]).expect("valid metric"))
});

/// Items of accepted payloads that produce no event by design, by source and reason.
pub static SKIPPED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let opts = Opts::new(
        "causeway_receiver_skipped_items_total",
        "Items of accepted payloads that produce no event by design, by source and reason",
    );
    register_int_counter_vec!(opts.clone(), &["source", "reason"])
        .unwrap_or_else(|_| IntCounterVec::new(opts, &["source", "reason"]).expect("valid metric"))
});

/// Receiver request latency, by source.
pub static REQUEST_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    let opts = HistogramOpts::new(
        "causeway_receiver_request_duration_seconds",
        "Time from request to answer, by source",
    );
    register_histogram_vec!(opts.clone(), &["source"])
        .unwrap_or_else(|_| HistogramVec::new(opts, &["source"]).expect("valid metric"))
});

/// Records appended to the embedded log.
pub static LOG_APPENDED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let opts = Opts::new(
        "causeway_eventlog_appended_records_total",
        "Records appended to the event log, by log kind",
    );
    register_int_counter_vec!(opts.clone(), &["log"])
        .unwrap_or_else(|_| IntCounterVec::new(opts, &["log"]).expect("valid metric"))
});

/// Time of one group commit (write + fsync) of the embedded log.
pub static LOG_SYNC_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    let opts = HistogramOpts::new(
        "causeway_eventlog_sync_duration_seconds",
        "Time to write and fsync one group commit of the embedded log",
    );
    register_histogram!(opts.clone())
        .unwrap_or_else(|_| Histogram::with_opts(opts).expect("valid metric"))
});

/// Messages Causeway failed to get acknowledged, by stream (events, incidents, late).
pub static KAFKA_PRODUCE_FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let opts = Opts::new(
        "causeway_kafka_produce_failures_total",
        "Messages not acknowledged by the broker, by stream",
    );
    register_int_counter_vec!(opts.clone(), &["stream"])
        .unwrap_or_else(|_| IntCounterVec::new(opts, &["stream"]).expect("valid metric"))
});

/// Kafka records refused by a decoder and skipped, by format and reason.
pub static KAFKA_REJECTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let opts = Opts::new(
        "causeway_kafka_rejected_records_total",
        "Kafka records refused by a decoder and skipped, by format and reason",
    );
    register_int_counter_vec!(opts.clone(), &["format", "reason"])
        .unwrap_or_else(|_| IntCounterVec::new(opts, &["format", "reason"]).expect("valid metric"))
});

/// Consumer group rebalances seen by this engine, by kind (assign, revoke).
pub static KAFKA_REBALANCES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let opts = Opts::new(
        "causeway_kafka_rebalances_total",
        "Consumer group rebalances seen by this engine, by kind",
    );
    register_int_counter_vec!(opts.clone(), &["kind"])
        .unwrap_or_else(|_| IntCounterVec::new(opts, &["kind"]).expect("valid metric"))
});

/// Records of the events topic not yet consumed, per owned partition: the broker's
/// high offset minus the group's committed offset, from librdkafka's statistics
/// (every 5 s). Events that wait here are not correlated yet, whatever the watermark.
pub static KAFKA_CONSUMER_LAG: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    let opts = Opts::new(
        "causeway_kafka_consumer_lag_records",
        "Records of the events topic behind the group's committed offset, per owned partition",
    );
    register_int_gauge_vec!(opts.clone(), &["partition"])
        .unwrap_or_else(|_| IntGaugeVec::new(opts, &["partition"]).expect("valid metric"))
});

/// Partitions of the events topic this engine currently owns.
pub static KAFKA_ASSIGNED_PARTITIONS: LazyLock<IntGauge> = LazyLock::new(|| {
    let opts = Opts::new(
        "causeway_kafka_assigned_partitions",
        "Partitions of the events topic this engine currently owns",
    );
    register_int_gauge!(opts.clone())
        .unwrap_or_else(|_| IntGauge::with_opts(opts).expect("valid metric"))
});
