//! Kill -9 the engine in the middle of the 24 h stability window (accelerated) and restart it:
//! the execution resumes from its last state, the Wait only waits for its remaining time, and the
//! outcome is the one an uninterrupted run has.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use selfheal::adapters::sqlite::SqliteTable;
use selfheal::engine::{Engine, ExecutionRecord};
use selfheal::ports::SystemClock;

const WORKER: &str = env!("CARGO_BIN_EXE_durable-worker");
// 86,400 s of stability window pass in 3 s of real time.
const SPEEDUP: &str = "28800";

fn worker(db: &str, mode: &str, origin: &str) -> std::process::Child {
    Command::new(WORKER)
        .args([db, mode, "HappyAuto", origin, SPEEDUP])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn worker")
}

async fn current_state(db: &str) -> Option<String> {
    let table = Arc::new(SqliteTable::open(db).ok()?);
    let engine = Engine::new(table, Arc::new(SystemClock::real()));
    engine.describe("durable-run").await.ok()?.and_then(|r| r.current_state().map(str::to_string))
}

#[tokio::test]
async fn killed_engine_resumes_open_executions_with_the_remaining_wait() {
    let dir = std::env::temp_dir().join("selfheal-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join(format!("durable-{}.sqlite", uuid::Uuid::new_v4().simple()));
    let db = db.to_str().unwrap().to_string();
    let origin = chrono::Utc::now().to_rfc3339();

    let mut first = worker(&db, "start", &origin);
    // Wait until the execution sits in the stability window, then let some of it pass.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if current_state(&db).await.as_deref() == Some("StabilityWindow") {
            break;
        }
        assert!(Instant::now() < deadline, "never reached StabilityWindow");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    first.kill().expect("kill -9"); // SIGKILL: no cleanup, no flush
    let status = first.wait().unwrap();
    assert!(!status.success(), "worker must have been killed, not finished");
    assert_eq!(current_state(&db).await.as_deref(), Some("StabilityWindow"), "killed mid-wait");

    let restarted = Instant::now();
    let second = worker(&db, "resume", &origin);
    let out = second.wait_with_output().unwrap();
    let took = restarted.elapsed();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rec: ExecutionRecord = serde_json::from_slice(&out.stdout).unwrap();

    assert_eq!(rec.status, selfheal::engine::ExecutionStatus::Succeeded);
    assert_eq!(
        rec.output.unwrap(),
        serde_json::json!({"incident_id": "PINC0042", "outcome": "resolved", "route": "auto", "effectiveness": "effective"})
    );
    // Nothing before the wait ran twice.
    let entered = |s: &str| rec.path.iter().filter(|p| *p == s).count();
    assert_eq!(entered("ResolveIncident"), 1);
    assert_eq!(entered("ProvisionWorkspace"), 1);
    assert_eq!(entered("StabilityWindow"), 1);
    // It waited the remainder (about 1.8 s of the 3 s), not the whole window again, and not zero.
    assert!(took < Duration::from_millis(2900), "resumed wait took {took:?}: the full window again?");
    assert!(took > Duration::from_millis(900), "resumed wait took {took:?}: it did not wait at all");
}
