//! The engine on long executions: a Choice/Pass loop (the fixture the `engine` benchmark and
//! `scripts/bench-engine-loop.sh` run) and Step Functions' quota of 25,000 history events.
//! Run: `cargo test -p selfheal --features full --test engine_loop`.

use std::sync::Arc;
use std::time::Duration;

use selfheal::adapters::memory::MemoryTable;
use selfheal::engine::{Engine, ExecutionStatus, MAX_HISTORY_EVENTS, StateMachine, mock::MockConfig};
use selfheal::ports::VirtualClock;

const LOOP: &str = include_str!("../benches/fixtures/loop.asl.json");
const LOOP_MOCKS: &str = include_str!("../benches/fixtures/loop.mock.json");

async fn run_loop(rounds: u64) -> (selfheal::engine::ExecutionRecord, Vec<selfheal::engine::HistoryEvent>) {
    let engine = Engine::new(Arc::new(MemoryTable::new()), Arc::new(VirtualClock::starting_at(chrono::Utc::now())));
    engine.register("loop", StateMachine::parse(LOOP).expect("the loop fixture parses"));
    let mocks = MockConfig::parse(LOOP_MOCKS).expect("mock config");
    engine.set_dispatcher(Arc::new(mocks.dispatcher("loop", "Loop").expect("test case")));
    let name = format!("loop-{rounds}");
    engine.start("loop", &name, &format!("{{\"n\": {rounds}}}")).await.expect("start");
    let rec = engine.wait_for(&name, Duration::from_secs(120)).await.expect("wait");
    let history = engine.history(&name).await.expect("history");
    (rec, history)
}

/// Events of the loop with `rounds` rounds: ExecutionStarted, Init (2), 2 × Check + Increment
/// per round (4), the last Check (2), Done (2), ExecutionSucceeded.
fn events_for(rounds: u64) -> u64 {
    4 * rounds + 8
}

#[tokio::test]
async fn loop_runs_to_the_end_and_keeps_its_path() {
    let (rec, history) = run_loop(50).await;
    assert_eq!(rec.status, ExecutionStatus::Succeeded);
    assert_eq!(rec.output, Some(serde_json::json!({"n": 50, "i": 50})));
    assert_eq!(rec.transitions, 2 * 50 + 3);
    assert_eq!(history.len() as u64, events_for(50));
    // The path is not stored in the record any more; it is read back from the history.
    assert_eq!(rec.path.len(), rec.transitions as usize);
    assert_eq!(rec.path.first().map(String::as_str), Some("Init"));
    assert_eq!(rec.path.last().map(String::as_str), Some("Done"));
    assert_eq!(rec.path.iter().filter(|s| *s == "Increment").count(), 50);
}

#[tokio::test]
async fn a_history_of_exactly_the_quota_succeeds() {
    // 4 × 6248 + 8 = 25,000 events: the last one, ExecutionSucceeded, is the 25,000th.
    let rounds = 6248;
    assert_eq!(events_for(rounds), u64::from(MAX_HISTORY_EVENTS));
    let (rec, history) = run_loop(rounds).await;
    assert_eq!(rec.status, ExecutionStatus::Succeeded, "{:?} {:?}", rec.error, rec.cause);
    assert_eq!(history.len(), MAX_HISTORY_EVENTS as usize);
}

#[tokio::test]
async fn an_execution_past_the_history_quota_fails_with_states_runtime() {
    let (rec, history) = run_loop(6249).await;
    assert_eq!(rec.status, ExecutionStatus::Failed);
    assert_eq!(rec.error.as_deref(), Some("States.Runtime"));
    assert!(rec.cause.as_deref().unwrap_or_default().contains("25000"), "{:?}", rec.cause);
    assert_eq!(history.len(), MAX_HISTORY_EVENTS as usize, "the history never holds more than the quota");
    let last = history.last().expect("events");
    assert_eq!(last.kind, "ExecutionFailed");
    assert_eq!(last.id, MAX_HISTORY_EVENTS);
    let ids: Vec<u32> = history.iter().map(|e| e.id).collect();
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "event ids stay consecutive");
}
