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

/// Map and Parallel run their iterations and branches as child records of the execution: these
/// tests hold what the conformance cases cannot see (scale, concurrency, callbacks, restarts).
mod branches {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use serde_json::{Value, json};

    use selfheal::domain::TaskToken;
    use selfheal::engine::{TaskDispatcher, TaskFailure, TaskInvocation, TaskOutcome};

    use super::*;

    /// Answers `work` tasks after a short real-time pause, tracking how many run at once, and
    /// parks `.waitForTaskToken` tasks, keeping their tokens by item.
    #[derive(Default)]
    struct Worker {
        in_flight: AtomicUsize,
        most_in_flight: AtomicUsize,
        calls: AtomicUsize,
        tokens: Mutex<HashMap<i64, TaskToken>>,
    }

    #[async_trait]
    impl TaskDispatcher for Worker {
        async fn invoke(&self, invocation: TaskInvocation) -> Result<TaskOutcome, TaskFailure> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if let Some(token) = invocation.token {
                let item = invocation.parameters["item"].as_i64().unwrap_or(-1);
                self.tokens.lock().unwrap_or_else(|p| p.into_inner()).insert(item, token);
                return Ok(TaskOutcome::AwaitCallback);
            }
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_in_flight.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            Ok(TaskOutcome::Completed(json!({ "done": invocation.parameters["item"] })))
        }
    }

    fn map_of(max_concurrency: u64, resource: &str) -> StateMachine {
        StateMachine::from_value(&json!({
            "StartAt": "Each",
            "States": {"Each": {
                "Type": "Map",
                "ItemsPath": "$.items",
                "MaxConcurrency": max_concurrency,
                "ItemSelector": {"item.$": "$$.Map.Item.Value", "index.$": "$$.Map.Item.Index"},
                "ItemProcessor": {"StartAt": "Work", "States": {"Work": {
                    "Type": "Task", "Resource": resource, "Parameters": {"item.$": "$.item"}, "End": true}}},
                "End": true
            }}
        }))
        .expect("the Map definition parses")
    }

    fn engine_on(table: Arc<MemoryTable>, machine: StateMachine, worker: Arc<Worker>) -> Arc<Engine> {
        let engine = Engine::new(table, Arc::new(VirtualClock::starting_at(chrono::Utc::now())));
        engine.register("map", machine);
        engine.set_dispatcher(worker);
        engine
    }

    fn items(n: usize) -> String {
        json!({ "items": (0..n).collect::<Vec<_>>() }).to_string()
    }

    async fn wait_for_tokens(worker: &Worker, n: usize) {
        for _ in 0..500 {
            if worker.tokens.lock().unwrap_or_else(|p| p.into_inner()).len() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the iterations did not all reach their callback task");
    }

    #[tokio::test]
    async fn a_map_over_1000_items_keeps_the_item_order() {
        let machine = StateMachine::from_value(&json!({
            "StartAt": "Each",
            "States": {"Each": {
                "Type": "Map",
                "ItemSelector": {"v.$": "$$.Map.Item.Value", "i.$": "$$.Map.Item.Index"},
                "ItemProcessor": {"StartAt": "Twice", "States": {"Twice": {
                    "Type": "Pass", "Parameters": {"i.$": "$.i", "sum.$": "States.MathAdd($.v, $.v)"}, "End": true}}},
                "End": true
            }}
        }))
        .expect("parses");
        let engine = engine_on(Arc::new(MemoryTable::new()), machine, Arc::new(Worker::default()));
        let input: Vec<i64> = (0..1000).collect();
        engine.start("map", "big", &json!(input).to_string()).await.expect("start");
        let rec = engine.wait_for("big", Duration::from_secs(120)).await.expect("wait");
        assert_eq!(rec.status, ExecutionStatus::Succeeded, "{:?} {:?}", rec.error, rec.cause);
        let out = rec.output.expect("output");
        let out = out.as_array().expect("an array");
        assert_eq!(out.len(), 1000);
        for (i, o) in out.iter().enumerate() {
            assert_eq!(o, &json!({"i": i, "sum": 2 * i}), "item {i}");
        }
        // Iterations are not executions of their own.
        assert_eq!(engine.list_executions().await.expect("list").len(), 1);
    }

    #[tokio::test]
    async fn max_concurrency_bounds_the_iterations_in_flight() {
        for (max, items_n, bound) in [(3u64, 24usize, 3usize), (0, 90, 40)] {
            let worker = Arc::new(Worker::default());
            let engine = engine_on(Arc::new(MemoryTable::new()), map_of(max, "work"), worker.clone());
            engine.start("map", "bounded", &items(items_n)).await.expect("start");
            let rec = engine.wait_for("bounded", Duration::from_secs(60)).await.expect("wait");
            assert_eq!(rec.status, ExecutionStatus::Succeeded, "{:?} {:?}", rec.error, rec.cause);
            assert_eq!(worker.calls.load(Ordering::SeqCst), items_n);
            let most = worker.most_in_flight.load(Ordering::SeqCst);
            assert!(most <= bound, "MaxConcurrency {max}: {most} ran at once, more than {bound}");
            assert!(most >= 2, "MaxConcurrency {max}: the iterations never overlapped");
        }
    }

    #[tokio::test]
    async fn a_callback_inside_an_iteration_resumes_the_map() {
        let worker = Arc::new(Worker::default());
        let engine = engine_on(Arc::new(MemoryTable::new()), map_of(0, "wait.waitForTaskToken"), worker.clone());
        engine.start("map", "callbacks", &items(5)).await.expect("start");
        wait_for_tokens(&worker, 5).await;
        let tokens: Vec<(i64, TaskToken)> =
            worker.tokens.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(k, v)| (*k, v.clone())).collect();
        for (item, token) in tokens {
            engine.send_task_success(&token, &json!({ "approved": item })).await.expect("callback");
        }
        let rec = engine.wait_for("callbacks", Duration::from_secs(30)).await.expect("wait");
        assert_eq!(rec.status, ExecutionStatus::Succeeded, "{:?} {:?}", rec.error, rec.cause);
        let want: Vec<Value> = (0..5).map(|i| json!({ "approved": i })).collect();
        assert_eq!(rec.output, Some(Value::Array(want)));
    }

    #[tokio::test]
    async fn stopping_the_execution_stops_its_iterations() {
        let worker = Arc::new(Worker::default());
        let engine = engine_on(Arc::new(MemoryTable::new()), map_of(0, "wait.waitForTaskToken"), worker.clone());
        engine.start("map", "stopped", &items(3)).await.expect("start");
        wait_for_tokens(&worker, 3).await;
        engine.stop("stopped", "operator").await.expect("stop");
        let token = worker.tokens.lock().unwrap_or_else(|p| p.into_inner()).get(&1).cloned().expect("a token");
        let late = engine.send_task_success(&token, &json!({})).await;
        assert!(late.is_err(), "an iteration of a stopped execution still took its callback");
        let rec = engine.wait_for("stopped", Duration::from_secs(5)).await.expect("wait");
        assert_eq!(rec.status, ExecutionStatus::Aborted);
    }

    #[tokio::test]
    async fn a_restarted_engine_finishes_a_map_in_flight() {
        let table = Arc::new(MemoryTable::new());
        let worker = Arc::new(Worker::default());
        let first = engine_on(table.clone(), map_of(2, "wait.waitForTaskToken"), worker.clone());
        first.start("map", "restart", &items(4)).await.expect("start");
        // MaxConcurrency 2: two iterations wait for their callback, two are queued.
        wait_for_tokens(&worker, 2).await;
        drop(first);

        let second = engine_on(table, map_of(2, "wait.waitForTaskToken"), worker.clone());
        assert!(second.resume_open_executions().await.expect("resume") >= 1);
        let mut answered = std::collections::BTreeSet::new();
        for _ in 0..4 {
            let pending: Vec<(i64, TaskToken)> = {
                let tokens = worker.tokens.lock().unwrap_or_else(|p| p.into_inner());
                tokens.iter().filter(|(k, _)| !answered.contains(*k)).map(|(k, v)| (*k, v.clone())).collect()
            };
            for (item, token) in pending {
                second.send_task_success(&token, &json!({ "item": item })).await.expect("callback");
                answered.insert(item);
            }
            if answered.len() == 4 {
                break;
            }
            wait_for_tokens(&worker, answered.len() + 1).await;
        }
        let rec = second.wait_for("restart", Duration::from_secs(30)).await.expect("wait");
        assert_eq!(rec.status, ExecutionStatus::Succeeded, "{:?} {:?}", rec.error, rec.cause);
        let want: Vec<Value> = (0..4).map(|i| json!({ "item": i })).collect();
        assert_eq!(rec.output, Some(Value::Array(want)));
    }

    /// A JSONata `TimeoutSeconds` expression is the task's timeout: a callback nobody answers
    /// ends in States.Timeout after that many (virtual) seconds.
    #[tokio::test]
    async fn a_jsonata_timeout_expression_bounds_a_callback_task() {
        let machine = StateMachine::from_value(&json!({
            "QueryLanguage": "JSONata",
            "StartAt": "Approve",
            "States": {"Approve": {
                "Type": "Task", "Resource": "approve.waitForTaskToken",
                "TimeoutSeconds": "{% $states.input.t %}", "Arguments": {"item": 1}, "End": true}}
        }))
        .expect("parses");
        let worker = Arc::new(Worker::default());
        let engine = engine_on(Arc::new(MemoryTable::new()), machine, worker.clone());
        engine.start("map", "timed", &json!({"t": 5}).to_string()).await.expect("start");
        let rec = engine.wait_for("timed", Duration::from_secs(30)).await.expect("wait");
        assert_eq!(rec.status, ExecutionStatus::Failed, "{:?} {:?}", rec.error, rec.cause);
        assert_eq!(rec.error.as_deref(), Some("States.Timeout"));
        assert_eq!(worker.tokens.lock().unwrap_or_else(|p| p.into_inner()).len(), 1, "the task never ran");
        let waited = rec.stopped_at.expect("stopped") - rec.started_at;
        assert!(waited >= chrono::Duration::seconds(5), "timed out after {waited}, not 5 s");
        assert!(waited < chrono::Duration::seconds(60), "timed out after {waited}, not 5 s");
    }

    /// The iteration that ends lets the next queued one run: first it counts it in the run's
    /// tally, then it releases it. A crash in between must not leave the queued one waiting
    /// forever: resumed, it sees the tally and lets itself run.
    #[tokio::test]
    async fn a_release_lost_in_a_crash_is_made_on_resume() {
        use selfheal::store::DocTable;
        let table = Arc::new(MemoryTable::new());
        let worker = Arc::new(Worker::default());
        let first = engine_on(table.clone(), map_of(1, "wait.waitForTaskToken"), worker.clone());
        first.start("map", "lost", &items(2)).await.expect("start");
        wait_for_tokens(&worker, 1).await;
        drop(first);
        // As the first iteration would leave it had it died right after counting the second one
        // as let run.
        let now = chrono::Utc::now().timestamp();
        let (sk, tally) =
            table.query("EXEC#lost", "RUN#", "RUN#~", now).await.expect("query").pop().expect("the run's tally");
        assert_eq!(tally.doc["released"], json!(1), "{}", tally.doc);
        let mut doc = tally.doc.clone();
        doc["released"] = json!(2);
        assert!(table.put_if("EXEC#lost", &sk, &doc, Some(tally.rev), None, now).await.expect("write"));
        assert_eq!(worker.tokens.lock().unwrap_or_else(|p| p.into_inner()).len(), 1, "the second ran early");

        let second = engine_on(table, map_of(1, "wait.waitForTaskToken"), worker.clone());
        second.resume_open_executions().await.expect("resume");
        wait_for_tokens(&worker, 2).await;
    }

    #[tokio::test]
    async fn a_failed_branch_fails_the_parallel_state_and_catch_sees_its_error() {
        struct Thrower;
        #[async_trait]
        impl TaskDispatcher for Thrower {
            async fn invoke(&self, _: TaskInvocation) -> Result<TaskOutcome, TaskFailure> {
                Err(TaskFailure::new("Boom", "branch two broke"))
            }
        }
        let machine = StateMachine::from_value(&json!({
            "StartAt": "Both",
            "States": {
                "Both": {"Type": "Parallel", "Branches": [
                    {"StartAt": "One", "States": {"One": {"Type": "Pass", "End": true}}},
                    {"StartAt": "Two", "States": {"Two": {"Type": "Task", "Resource": "x", "End": true}}}
                ], "Catch": [{"ErrorEquals": ["Boom"], "ResultPath": "$.error", "Next": "Handled"}], "End": true},
                "Handled": {"Type": "Pass", "End": true}
            }
        }))
        .expect("parses");
        let engine = Engine::new(Arc::new(MemoryTable::new()), Arc::new(VirtualClock::starting_at(chrono::Utc::now())));
        engine.register("p", machine);
        engine.set_dispatcher(Arc::new(Thrower));
        engine.start("p", "par", "{\"k\": 1}").await.expect("start");
        let rec = engine.wait_for("par", Duration::from_secs(10)).await.expect("wait");
        assert_eq!(rec.status, ExecutionStatus::Succeeded, "{:?} {:?}", rec.error, rec.cause);
        assert_eq!(rec.output, Some(json!({"k": 1, "error": {"Error": "Boom", "Cause": "branch two broke"}})));
        assert_eq!(rec.path, vec!["Both", "Handled"]);
    }
}
