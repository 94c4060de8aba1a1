//! Cost per state transition of the local engine: the HappyAuto incident (mocked tasks, every
//! transition persisted to SQLite) end to end, and a Choice/Pass loop of 1k and 10k transitions
//! (cost per transition must not grow with the execution's length), and an Inline Map over 100
//! and 1,000 items (cost per item must not grow with the number of items).
//! Run: `cargo bench -p selfheal --bench engine` (`-- loop` for the loop alone).

/// The allocator of the `selfheal` binary, which runs the local engine.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::sync::Arc;

use selfheal::adapters::sqlite::SqliteTable;
use selfheal::engine::{Engine, StateMachine, mock::MockConfig};
use selfheal::ports::VirtualClock;
use selfheal::{adapters::memory::MemoryTable, store::DocTable};

const DEFINITION: &str = include_str!("../../statemachine/incident.asl.json");
const MOCKS: &str = include_str!("../../statemachine/test/MockConfigFile.json");
const INPUT: &str = include_str!("../../statemachine/test/input.json");
const LOOP: &str = include_str!("fixtures/loop.asl.json");
const LOOP_MOCKS: &str = include_str!("fixtures/loop.mock.json");
const MAP: &str = include_str!("fixtures/map.asl.json");

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

/// The loop of `rounds` rounds (2 × rounds + 3 transitions) on a fresh table per iteration.
fn bench_loop(c: &mut Criterion, store: &str, make_table: &dyn Fn() -> Arc<dyn DocTable>) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let machine = StateMachine::parse(LOOP).unwrap();
    let mocks = MockConfig::parse(LOOP_MOCKS).unwrap();
    let mut group = c.benchmark_group("engine_loop");
    group.sample_size(10);
    for rounds in [500u64, 5000] {
        let transitions = 2 * rounds + 3;
        let input = format!("{{\"n\": {rounds}}}");
        let fresh = || {
            let engine = Engine::new(make_table(), Arc::new(VirtualClock::starting_at(chrono::Utc::now())));
            engine.register("loop", machine.clone());
            engine.set_dispatcher(Arc::new(mocks.dispatcher("loop", "Loop").unwrap()));
            engine
        };
        // The engine is handed back so criterion drops it (and its store) outside the timing.
        let run = |engine: Arc<Engine>| {
            rt.block_on(async {
                engine.start("loop", "bench", &input).await.unwrap();
                // The outcome, as aws-local-stepfunctions gives it (not the path, read from the
                // whole history: `wait_for`).
                let rec = engine.wait_until_done("bench", std::time::Duration::from_secs(120)).await.unwrap();
                assert_eq!(rec.transitions as u64, transitions, "{:?}", rec.cause);
            });
            engine
        };
        group.throughput(Throughput::Elements(transitions));
        group.bench_function(format!("{store}/{transitions}_transitions"), |b| {
            b.iter_batched(fresh, run, BatchSize::PerIteration)
        });
    }
    group.finish();
}

fn loop_memory(c: &mut Criterion) {
    bench_loop(c, "memory", &|| Arc::new(MemoryTable::new()));
}

/// Durable as `selfheal run-state-machine --db` is: a SQLite file (WAL, synchronous=NORMAL).
fn loop_sqlite_file(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("selfheal-bench-loop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let counter = std::sync::atomic::AtomicU32::new(0);
    bench_loop(c, "sqlite_file", &|| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Arc::new(SqliteTable::open(dir.join(format!("{n}.sqlite"))).unwrap())
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// The Map fixture over `items` items on a fresh table per iteration (each item is a child
/// record: created, run, reported to the parent).
fn bench_map(c: &mut Criterion, store: &str, make_table: &dyn Fn() -> Arc<dyn DocTable>) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let machine = StateMachine::parse(MAP).unwrap();
    let mut group = c.benchmark_group("engine_map");
    group.sample_size(10);
    for items in [100usize, 1000] {
        let input = serde_json::json!({ "items": (0..items).collect::<Vec<_>>() }).to_string();
        let fresh = || {
            let engine = Engine::new(make_table(), Arc::new(VirtualClock::starting_at(chrono::Utc::now())));
            engine.register("map", machine.clone());
            engine
        };
        let run = |engine: Arc<Engine>| {
            rt.block_on(async {
                engine.start("map", "bench", &input).await.unwrap();
                let rec = engine.wait_until_done("bench", std::time::Duration::from_secs(120)).await.unwrap();
                let doubled = rec.output.as_ref().and_then(|o| o["doubled"].as_array()).map(Vec::len);
                assert_eq!(doubled, Some(items), "{:?}", rec.cause);
            });
            engine
        };
        group.throughput(Throughput::Elements(items as u64));
        group.bench_function(format!("{store}/{items}_items"), |b| b.iter_batched(fresh, run, BatchSize::PerIteration));
    }
    group.finish();
}

fn map_memory(c: &mut Criterion) {
    bench_map(c, "memory", &|| Arc::new(MemoryTable::new()));
}

fn map_sqlite(c: &mut Criterion) {
    bench_map(c, "sqlite", &|| Arc::new(SqliteTable::in_memory().unwrap()));
}

criterion_group!(benches, interpreter, durable, loop_memory, loop_sqlite_file, map_memory, map_sqlite);
criterion_main!(benches);
