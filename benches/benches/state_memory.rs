//! Correlation state memory per buffered event, measured with a counting
//! allocator (every byte the correlator's state holds, not an estimate):
//!
//! - `reorder buffer`: events pushed with the watermark held back, so each waits
//!   in the reorder buffer as it would during the watermark delay;
//! - `join state`: the realistic mix run normally (watermark moving), with a late
//!   cause window of an hour: applied effects stay buffered for causes that arrive
//!   late, causes for their windows, plus remembered ids and incidents.
//!
//! Run: `cargo bench --profile release -p causeway -p causeway-benches --bench state_memory` (prints a table;
//! `STATE_EVENTS=1000000` to size it).

use std::alloc::System;
use std::time::{Duration, Instant};

use causeway_benches::{Workload, catalog, generate};
use causeway_engine::schema::events_batch;
use causeway_engine::{Operator, SourceTiming, WatermarkConfig};
use causeway_rules::{CorrelatorConfig, Output, ProcessingTime, RulePack};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn net_bytes(region: &Region<'_, System>) -> i64 {
    let c = region.change();
    // `bytes_allocated` already counts what a realloc grew by.
    c.bytes_allocated as i64 - c.bytes_deallocated as i64
}

fn measure(name: &str, w: &Workload, timing: WatermarkConfig, config: CorrelatorConfig) {
    let events = generate(w);
    let batches: Vec<_> = events
        .chunks(4096)
        .map(|c| {
            let now = c.last().map_or(ProcessingTime::MIN, |e| e.ingested_at);
            (events_batch(c).expect("batch"), now)
        })
        .collect();
    let pack = RulePack::builtin().expect("pack");
    let cat = catalog(w);
    // Outputs are dropped as they come: only the state stays allocated.
    let region = Region::new(GLOBAL);
    let mut op = Operator::new(&pack, &cat, config, timing).expect("operator");
    let started = Instant::now();
    for (batch, now) in &batches {
        let mut out = Output::default();
        op.push_batch(batch, *now, &mut out).expect("push");
    }
    let elapsed = started.elapsed();
    let bytes = net_bytes(&region);
    let stats = op.correlator().stats();
    let buffered = stats.buffered().max(1);
    println!(
        "| {name} | {} | {} | {} | {} | {} | {} | {:.1} MiB | **{} B** | {:.0} k ev/s |",
        events.len(),
        stats.pending,
        stats.causes,
        stats.effects,
        stats.remembered_ids,
        stats.incidents,
        bytes as f64 / (1 << 20) as f64,
        bytes / buffered as i64,
        events.len() as f64 / elapsed.as_secs_f64() / 1e3,
    );
    drop(op);
}

fn main() {
    let n: usize = std::env::var("STATE_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500_000);
    let w = Workload {
        events: n,
        ..Workload::default()
    };
    println!(
        "| state | events | reorder buffer | causes | effects | remembered ids | incidents | state bytes | per buffered event | push rate |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    // Hold the watermark: a day of delay for every source, never idle.
    let held = SourceTiming {
        delay: Duration::from_secs(86_400 * 365),
        allowed_lateness: Duration::from_secs(86_400),
        drives_watermark: true,
    };
    let hold = WatermarkConfig {
        idle_timeout: Duration::from_secs(86_400 * 365),
        default: held,
        sources: Default::default(),
    };
    measure("reorder buffer", &w, hold, CorrelatorConfig::default());
    let config = CorrelatorConfig {
        effect_retention: Duration::from_secs(3600),
        max_buffered: usize::MAX,
        ..CorrelatorConfig::default()
    };
    measure("join state", &w, WatermarkConfig::default(), config);
}
