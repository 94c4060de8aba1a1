//! Cost per state transition of the local engine: the HappyAuto incident (mocked tasks, every
//! transition persisted to SQLite) end to end. Run: `cargo bench -p selfheal --bench engine`.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::sync::Arc;

use selfheal::adapters::sqlite::SqliteTable;
use selfheal::engine::{Engine, StateMachine, mock::MockConfig};
use selfheal::ports::VirtualClock;
use selfheal::{adapters::memory::MemoryTable, store::DocTable};

const DEFINITION: &str = include_str!("../../statemachine/incident.asl.json");
const MOCKS: &str = include_str!("../../statemachine/test/MockConfigFile.json");
const INPUT: &str = include_str!("../../statemachine/test/input.json");

fn engine_on(table: Arc<dyn DocTable>, machine: &StateMachine, mocks: &MockConfig) -> Arc<Engine> {
    let engine = Engine::new(table, Arc::new(VirtualClock::starting_at(chrono::Utc::now())));
    engine.register("incident", machine.clone());
    engine.set_dispatcher(Arc::new(mocks.dispatcher("incident", "HappyAuto").unwrap()));
    engine
}

/// One HappyAuto incident per iteration, each on a fresh store (created outside the timing), so
/// the figure does not drift with a store that grows across thousands of iterations.
fn bench_incident(c: &mut Criterion, label: &str, make_table: fn() -> Arc<dyn DocTable>) {
    // One core, as the target is stated per core.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let machine = StateMachine::parse(DEFINITION).unwrap();
    let mocks = MockConfig::parse(MOCKS).unwrap();
    let run = |engine: Arc<Engine>| {
        rt.block_on(async move {
            engine.start("incident", "bench", INPUT).await.unwrap();
            let rec = engine.wait_for("bench", std::time::Duration::from_secs(10)).await.unwrap();
            assert!(!rec.is_open());
            rec.transitions
        })
    };
    let per_run = run(engine_on(make_table(), &machine, &mocks));
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(u64::from(per_run)));
    group.bench_function(label, |b| {
        b.iter_batched(|| engine_on(make_table(), &machine, &mocks), &run, BatchSize::SmallInput)
    });
    group.finish();
    eprintln!("{label}: {per_run} transitions per incident");
}

/// The interpreter's own cost: paths, templates, choices, retries, history, on a memory table.
fn interpreter(c: &mut Criterion) {
    bench_incident(c, "happy_auto_incident/memory", || Arc::new(MemoryTable::new()));
}

/// The durable engine as `selfheal serve` runs it: every transition committed to SQLite.
fn durable(c: &mut Criterion) {
    bench_incident(c, "happy_auto_incident/sqlite", || Arc::new(SqliteTable::in_memory().unwrap()));
}

criterion_group!(benches, interpreter, durable);
criterion_main!(benches);
