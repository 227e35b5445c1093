//! Hot paths of correlation, as events per second:
//! - `arrow_batch`: events → Arrow record batch;
//! - `predicates`: the default pack's compiled predicates over a batch;
//! - `correlator`: the pure state machine, push + watermark advance;
//! - `operator`: all three together, as the engine runs them (without history).
//!
//! Run: `cargo bench -p causeway-benches --bench correlation`

use std::time::Duration;

use causeway_benches::{Workload, generate};
use causeway_engine::predicate::CompiledRules;
use causeway_engine::schema::events_batch;
use causeway_rules::{Correlator, CorrelatorConfig, Matches, Output, RulePack};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

const BATCH: usize = 4096;

fn bench(c: &mut Criterion) {
    let w = Workload::default();
    let events = generate(&w);
    let pack = RulePack::builtin().expect("built-in pack");
    let compiled = CompiledRules::compile(&pack).expect("compiles");
    let batches: Vec<_> = events
        .chunks(BATCH)
        .map(|c| events_batch(c).expect("batch"))
        .collect();
    let matches: Vec<Matches> = batches
        .iter()
        .flat_map(|b| compiled.evaluate(b).expect("eval"))
        .collect();

    let mut g = c.benchmark_group("correlation");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));

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
    g.bench_function("correlator", |b| {
        b.iter_batched(
            || events.clone(),
            |input| {
                let mut c = Correlator::new(pack.rules(), CorrelatorConfig::default());
                let mut out = Output::default();
                for (chunk, m) in input.chunks(BATCH).zip(matches.chunks(BATCH)) {
                    let mut last = None;
                    for (e, m) in chunk.iter().cloned().zip(m.iter().copied()) {
                        last = Some(e.time);
                        c.push(e, m, Duration::from_secs(600), &mut out);
                    }
                    if let Some(t) = last {
                        c.advance(t.minus(Duration::from_secs(10)), &mut out);
                    }
                }
                std::hint::black_box(out.incidents.len())
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("operator", |b| {
        b.iter_batched(
            || events.clone(),
            |input| {
                let mut c = Correlator::new(pack.rules(), CorrelatorConfig::default());
                let mut out = Output::default();
                for chunk in input.chunks(BATCH) {
                    let batch = events_batch(chunk).expect("batch");
                    let m = compiled.evaluate(&batch).expect("eval");
                    let mut last = None;
                    for (e, m) in chunk.iter().cloned().zip(m) {
                        last = Some(e.time);
                        c.push(e, m, Duration::from_secs(600), &mut out);
                    }
                    if let Some(t) = last {
                        c.advance(t.minus(Duration::from_secs(10)), &mut out);
                    }
                }
                std::hint::black_box(out.incidents.len())
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
