//! Callback tasks in the local engine: TimeoutSeconds, HeartbeatSeconds, late callbacks and
//! the execution-name rules, on accelerated time.

use async_trait::async_trait;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

use selfheal::adapters::sqlite::SqliteTable;
use selfheal::domain::TaskToken;
use selfheal::engine::{Engine, StateMachine, TaskDispatcher, TaskFailure, TaskInvocation, TaskOutcome};
use selfheal::error::OrchestratorError;
use selfheal::ports::SystemClock;

/// Starts the callback and remembers its token, like a Lambda that posts to Slack.
#[derive(Default)]
struct Remember(std::sync::Mutex<Vec<TaskToken>>);

#[async_trait]
impl TaskDispatcher for Remember {
    async fn invoke(&self, inv: TaskInvocation) -> Result<TaskOutcome, TaskFailure> {
        if let Some(t) = inv.token {
            self.0.lock().unwrap().push(t);
            return Ok(TaskOutcome::AwaitCallback);
        }
        Ok(TaskOutcome::Completed(json!({"ok": true})))
    }
}

fn machine(extra: Value) -> StateMachine {
    let mut task = json!({
        "Type": "Task", "Resource": "arn:aws:states:::lambda:invoke.waitForTaskToken",
        "Parameters": {"FunctionName": "f", "Payload": {"token.$": "$$.Task.Token"}},
        "ResultPath": "$.answer",
        "Catch": [{"ErrorEquals": ["States.Timeout"], "ResultPath": "$.error", "Next": "TimedOut"},
                  {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Failed"}],
        "Next": "Done"
    });
    for (k, v) in extra.as_object().unwrap() {
        task[k] = v.clone();
    }
    StateMachine::from_value(&json!({"StartAt": "Wait", "States": {
        "Wait": task,
        "Done": {"Type": "Pass", "End": true},
        "TimedOut": {"Type": "Pass", "End": true},
        "Failed": {"Type": "Pass", "End": true}
    }}))
    .unwrap()
}

async fn engine(m: StateMachine) -> (Arc<Engine>, Arc<Remember>) {
    // 1000× time: a 60 s timeout passes in 60 ms.
    let engine = Engine::new(Arc::new(SqliteTable::in_memory().unwrap()), Arc::new(SystemClock::accelerated(1000.0)));
    engine.register("m", m);
    let d = Arc::new(Remember::default());
    engine.set_dispatcher(d.clone());
    (engine, d)
}

async fn token(d: &Remember) -> TaskToken {
    for _ in 0..200 {
        if let Some(t) = d.0.lock().unwrap().last().cloned() {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("no token issued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_success_then_late_callbacks_are_closed() {
    let (engine, d) = engine(machine(json!({"TimeoutSeconds": 3600}))).await;
    engine.start("m", "ok-run", "{}").await.unwrap();
    let t = token(&d).await;
    engine.send_task_success(&t, &json!({"status": "approved"})).await.unwrap();
    let rec = engine.wait_for("ok-run", Duration::from_secs(5)).await.unwrap();
    assert_eq!(rec.path, ["Wait", "Done"]);
    assert_eq!(rec.output.unwrap()["answer"]["status"], "approved");
    // A second click: the token is spent.
    assert!(matches!(engine.send_task_success(&t, &json!({})).await, Err(OrchestratorError::TaskClosed)));
    let fake = TaskToken::parse("not-a-token").unwrap();
    assert!(matches!(engine.send_task_success(&fake, &json!({})).await, Err(OrchestratorError::InvalidToken)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_seconds_fires_and_closes_the_token() {
    let (engine, d) = engine(machine(json!({"TimeoutSeconds": 60}))).await;
    engine.start("m", "timeout-run", "{}").await.unwrap();
    let t = token(&d).await;
    let rec = engine.wait_for("timeout-run", Duration::from_secs(5)).await.unwrap();
    assert_eq!(rec.path, ["Wait", "TimedOut"]);
    assert_eq!(rec.output.unwrap()["error"]["Error"], "States.Timeout");
    // A click after the timeout is "already decided".
    assert!(matches!(engine.send_task_success(&t, &json!({})).await, Err(OrchestratorError::TaskClosed)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_heartbeats_fail_the_task_and_heartbeats_keep_it_alive() {
    let (engine, d) = engine(machine(json!({"TimeoutSeconds": 3600, "HeartbeatSeconds": 100}))).await;
    engine.start("m", "hb-missed", "{}").await.unwrap();
    let rec = engine.wait_for("hb-missed", Duration::from_secs(5)).await.unwrap();
    // HeartbeatTimeout is matched by States.Timeout catchers, as in AWS.
    assert_eq!(rec.path, ["Wait", "TimedOut"]);
    assert_eq!(rec.output.unwrap()["error"]["Error"], "States.HeartbeatTimeout");
    d.0.lock().unwrap().clear();

    engine.start("m", "hb-kept", "{}").await.unwrap();
    let t = token(&d).await;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(50)).await; // 50 s of engine time
        engine.send_task_heartbeat(&t).await.unwrap();
    }
    engine.send_task_success(&t, &json!({"done": true})).await.unwrap();
    let rec = engine.wait_for("hb-kept", Duration::from_secs(5)).await.unwrap();
    assert_eq!(rec.path, ["Wait", "Done"], "heartbeats every 50 s kept a 100 s heartbeat alive for 300 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_callbacks_and_execution_names() {
    let (engine, d) = engine(machine(json!({"TimeoutSeconds": 3600}))).await;
    engine.start("m", "fail-run", "{}").await.unwrap();
    let t = token(&d).await;
    engine.send_task_failure(&t, "Rejected", "rejected in Slack").await.unwrap();
    let rec = engine.wait_for("fail-run", Duration::from_secs(5)).await.unwrap();
    assert_eq!(rec.path, ["Wait", "Failed"]);
    // Same name + same input while running = the same execution; different input is refused.
    engine.start("m", "same", "{\"a\":1}").await.unwrap();
    assert!(!engine.start("m", "same", "{\"a\":1}").await.unwrap().newly_started);
    assert!(matches!(engine.start("m", "same", "{\"a\":2}").await, Err(OrchestratorError::ExecutionAlreadyExists(_))));
    assert!(engine.start("m", "bad name", "{}").await.is_err());
    assert!(engine.start("m", &"x".repeat(81), "{}").await.is_err());
    assert!(engine.start("m", "not-json", "{").await.is_err());
}

/// A handler that never returns: the process running it dies mid-invocation.
#[derive(Default)]
struct DiesMidHandler(std::sync::Mutex<Vec<TaskToken>>);

#[async_trait]
impl TaskDispatcher for DiesMidHandler {
    async fn invoke(&self, inv: TaskInvocation) -> Result<TaskOutcome, TaskFailure> {
        if let Some(t) = inv.token {
            self.0.lock().unwrap().push(t);
        }
        std::future::pending().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_handler_cut_off_by_a_crash_is_invoked_again_on_restart() {
    let path = std::env::temp_dir().join(format!("selfheal-redispatch-{}.sqlite", uuid::Uuid::new_v4().simple()));
    let first = Engine::new(Arc::new(SqliteTable::open(&path).unwrap()), Arc::new(SystemClock::real()));
    first.register("m", machine(json!({"TimeoutSeconds": 3600})));
    let dying = Arc::new(DiesMidHandler::default());
    first.set_dispatcher(dying.clone());
    first.start("m", "cut-off", "{}").await.unwrap();
    for _ in 0..200 {
        if !dying.0.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let issued = dying.0.lock().unwrap().first().cloned().expect("the handler was invoked");

    // "Restart": a new engine on the same store, as `selfheal serve` does after a kill.
    let second = Engine::new(Arc::new(SqliteTable::open(&path).unwrap()), Arc::new(SystemClock::real()));
    second.register("m", machine(json!({"TimeoutSeconds": 3600})));
    let d = Arc::new(Remember::default());
    second.set_dispatcher(d.clone());
    assert_eq!(second.resume_open_executions().await.unwrap(), 1);
    let again = token(&d).await;
    assert_eq!(again.expose(), issued.expose(), "re-invoked with the same token");
    second.send_task_success(&again, &json!({"status": "approved"})).await.unwrap();
    let rec = second.wait_for("cut-off", Duration::from_secs(5)).await.unwrap();
    assert_eq!(rec.path, ["Wait", "Done"]);

    // A handler that did return is not invoked again by a later restart.
    let third = Engine::new(Arc::new(SqliteTable::open(&path).unwrap()), Arc::new(SystemClock::real()));
    third.register("m", machine(json!({"TimeoutSeconds": 3600})));
    let idle = Arc::new(Remember::default());
    third.set_dispatcher(idle.clone());
    assert_eq!(third.resume_open_executions().await.unwrap(), 0);
    assert!(idle.0.lock().unwrap().is_empty());
    let _ = std::fs::remove_file(&path);
}
