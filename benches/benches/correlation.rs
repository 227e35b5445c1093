//! Hot paths of correlation, as events per second, on the seeded realistic mix with
//! the built-in rule pack:
//! - `arrow_batch`: events → Arrow record batch;
//! - `predicates`: the pack's compiled predicates (and rule values) over a batch;
//! - `predicates_small_batches`: the same over 32-event batches, as a receiver's
//!   live traffic arrives;
//! - `operator`: the correlation operator — Arrow batches in, links and incident
//!   versions out: predicates, the keyed interval joins, chain assembly and the
//!   incident lifecycle, with the watermark advanced per batch;
//! - `joins_and_chains`: the same without the predicates (each batch evaluated
//!   once, before timing): the keyed interval joins, chain assembly and lifecycle
//!   of the pure correlator, reading rows from the batches;
//! - `joins_and_chains_dense`: that over a mix dense in causal chains (~10 k
//!   scenarios in 100 k events, little background noise): about half the edges
//!   are causal links, so joins link, chains grow and incidents merge throughout.
//!
//! Run: `cargo bench --profile release -p causeway -p causeway-benches --bench correlation`
//! (with the root package, the features match the release binaries' build).
//!
//! With `CAUSEWAY_OPERATOR_ONCE=1` the binary instead drives the operator once over
//! the workload, as the `operator` case does, prints what came out and exits:
//! `benches/instructions.sh` counts that pass's instructions under callgrind, a
//! figure this VM's ±30 % swings in speed do not blur. `CAUSEWAY_OPERATOR_ONCE=dense`
//! does the same over the chain-dense mix.

use std::time::Duration;

use arrow::record_batch::RecordBatch;
use causeway_benches::{Workload, catalog, generate, operator_for};
use causeway_engine::WatermarkConfig;
use causeway_engine::operator::{BatchView, advance_from_clocks, push_rows};
use causeway_engine::predicate::{CompiledRules, Evaluated};
use causeway_engine::schema::events_batch;
use causeway_engine::watermark::WatermarkTracker;
use causeway_rules::{Correlator, CorrelatorConfig, Output, OutputSize, ProcessingTime, RulePack};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

/// The binary's allocator, so the operator is measured as it runs in `causeway`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: usize = 4096;
/// About what the engine correlates per batch under 15 k webhooks/s.
const SMALL_BATCH: usize = 32;

/// The chain-dense mix of `joins_and_chains_dense`, from the default one `w`: a
/// causal scenario starts at three in ten moments of the stream (over ten times as
/// many services, so they seldom wait for one another), with a tenth of the healthy
/// deploys and re-sends: ~10 k chains in 100 k events, and about half the edges
/// that come out are causal links rather than alert groups.
fn dense_mix(w: &Workload) -> Workload {
    Workload {
        services: w.services * 10,
        scenarios_per_hour: 3600.0 * w.rate * 0.3,
        deploys_per_hour: w.deploys_per_hour / 10.0,
        resend_ratio: w.resend_ratio / 10.0,
        ..*w
    }
}

/// The events in batches of [`BATCH`], and each batch's processing time (its
/// newest event's time), as the benchmarks feed them.
fn batches_and_clock(events: &[causeway_rules::Event]) -> (Vec<RecordBatch>, Vec<ProcessingTime>) {
    let batches = events
        .chunks(BATCH)
        .map(|c| events_batch(c).expect("batch"))
        .collect();
    let clock = events
        .chunks(BATCH)
        .map(|c| ProcessingTime::from_micros(c.last().map_or(0, |e| e.time.as_micros())))
        .collect();
    (batches, clock)
}

fn bench(c: &mut Criterion) {
    let once = std::env::var("CAUSEWAY_OPERATOR_ONCE").ok();
    let w = match once.as_deref() {
        Some("dense") => dense_mix(&Workload::default()),
        _ => Workload::default(),
    };
    let events = generate(&w);
    let pack = RulePack::builtin().expect("built-in pack");
    let compiled = CompiledRules::compile(&pack).expect("compiles");
    let (batches, clock) = batches_and_clock(&events);

    if once.is_some() {
        operator_once(&w, &events, &batches, &clock);
        return;
    }
    let mut g = c.benchmark_group("correlation");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(8));

    g.bench_function("arrow_batch", |b| {
        b.iter(|| {
            for chunk in events.chunks(BATCH) {
                std::hint::black_box(events_batch(chunk).expect("batch"));
            }
        })
    });
    g.bench_function("predicates", |b| {
        b.iter(|| {
            for batch in &batches {
                std::hint::black_box(compiled.evaluate(batch).expect("eval"));
            }
        })
    });
    // The live path: receivers hand the engine a few dozen events per batch.
    let small: Vec<_> = events
        .chunks(SMALL_BATCH)
        .map(|c| events_batch(c).expect("batch"))
        .collect();
    g.bench_function("predicates_small_batches", |b| {
        b.iter(|| {
            for batch in &small {
                std::hint::black_box(compiled.evaluate(batch).expect("eval"));
            }
        })
    });
    g.bench_function("operator", |b| {
        b.iter_batched(
            || operator_for(&w),
            |mut op| {
                // As the engine driver does: each batch gets a fresh output,
                // sized like the previous one's and handed on (here: counted
                // and dropped) before the next.
                let (mut versions, mut edges) = (0, 0);
                let mut size = OutputSize::default();
                for (batch, now) in batches.iter().zip(&clock) {
                    let mut out = Output::sized_like(&size);
                    op.push_batch(batch, *now, &mut out).expect("push");
                    size = out.size();
                    versions += out.incidents.len();
                    edges += out.edges.len();
                }
                std::hint::black_box((versions, edges))
            },
            BatchSize::LargeInput,
        )
    });
    let evaluated: Vec<Evaluated> = batches
        .iter()
        .map(|b| compiled.evaluate(b).expect("eval"))
        .collect();
    g.bench_function("joins_and_chains", |b| {
        b.iter_batched(
            || Correlator::new(pack.rules(), &catalog(&w), CorrelatorConfig::default()),
            |mut correlator| correlate(&mut correlator, &batches, &evaluated, &clock),
            BatchSize::LargeInput,
        )
    });
    let dense = dense_mix(&w);
    let dense_events = generate(&dense);
    let (dense_batches, dense_clock) = batches_and_clock(&dense_events);
    let dense_evaluated: Vec<Evaluated> = dense_batches
        .iter()
        .map(|b| compiled.evaluate(b).expect("eval"))
        .collect();
    g.throughput(Throughput::Elements(dense_events.len() as u64));
    g.bench_function("joins_and_chains_dense", |b| {
        b.iter_batched(
            || Correlator::new(pack.rules(), &catalog(&dense), CorrelatorConfig::default()),
            |mut correlator| {
                correlate(
                    &mut correlator,
                    &dense_batches,
                    &dense_evaluated,
                    &dense_clock,
                )
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// The correlator over evaluated batches, as the operator drives it after its
/// predicates: rows pushed, the watermark advanced from the clocks per batch.
/// Returns the versions and edges that came out.
fn correlate(
    correlator: &mut Correlator,
    batches: &[RecordBatch],
    evaluated: &[Evaluated],
    clock: &[ProcessingTime],
) -> (usize, usize) {
    let timing = WatermarkConfig::default();
    let mut clocks = WatermarkTracker::default();
    let (mut versions, mut edges) = (0, 0);
    let mut size = OutputSize::default();
    let mut outcomes = Vec::new();
    for ((batch, evaluated), now) in batches.iter().zip(evaluated).zip(clock) {
        let view = BatchView::new(batch).expect("view");
        let mut out = Output::sized_like(&size);
        outcomes.clear();
        outcomes.resize(view.len(), None);
        push_rows(
            correlator,
            &mut clocks,
            &timing,
            &view,
            evaluated,
            (0..view.len()).map(|i| (i, i as u64)),
            *now,
            &mut out,
            &mut outcomes,
        );
        advance_from_clocks(correlator, &clocks, &timing, *now, usize::MAX, &mut out);
        size = out.size();
        versions += out.incidents.len();
        edges += out.edges.len();
    }
    std::hint::black_box((versions, edges))
}

/// One pass of the operator over the workload, batch by batch as in the
/// `operator` case (`Operator::push_batch` is what callgrind counts), and a
/// summary of its output and state.
fn operator_once(
    w: &Workload,
    events: &[causeway_rules::Event],
    batches: &[arrow::record_batch::RecordBatch],
    clock: &[ProcessingTime],
) {
    let mut op = operator_for(w);
    let (mut versions, mut edges) = (0, 0);
    let mut opened = std::collections::BTreeMap::<String, usize>::new();
    let mut size = OutputSize::default();
    for (batch, now) in batches.iter().zip(clock) {
        let mut out = Output::sized_like(&size);
        op.push_batch(batch, *now, &mut out).expect("push");
        size = out.size();
        versions += out.incidents.len();
        edges += out.edges.len();
        for v in out.incidents.iter().filter(|v| v.version == 1) {
            *opened.entry(v.rule_id.to_string()).or_default() += 1;
        }
    }
    println!(
        "operator once: {} events, {versions} incident versions, {edges} edges; opened by rule {opened:?}; state {:?}",
        events.len(),
        op.correlator().stats()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
