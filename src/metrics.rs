//! Metrics of the binary's own stages (runbook actions), in the default registry.

use std::sync::LazyLock;

use prometheus::{IntCounterVec, Opts, register_int_counter_vec};

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register_int_counter_vec!(Opts::new(name, help), labels).unwrap_or_else(|_| {
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
    })
}

/// Runbook decisions, by decision kind (a fixed set of nine).
pub(crate) static ACTION_DECISIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "causeway_actions_decisions_total",
        "Runbook decisions, by decision",
        &["decision"],
    )
});

/// Webhook deliveries that ended, by outcome (delivered, failed, killed).
pub(crate) static ACTION_DELIVERIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "causeway_actions_deliveries_total",
        "Runbook webhook deliveries that ended, by outcome",
        &["outcome"],
    )
});

/// Touches every metric so it is exported from the start.
pub(crate) fn init() {
    LazyLock::force(&ACTION_DECISIONS);
    LazyLock::force(&ACTION_DELIVERIES);
}
