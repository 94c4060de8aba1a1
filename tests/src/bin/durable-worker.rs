//! Test helper process for the kill-and-resume test: runs (or resumes) one mocked execution of
//! the incident state machine on a SQLite file with an accelerated clock, then prints the final
//! execution record as JSON.
//!
//! usage: durable-worker DB start|resume TEST_CASE ORIGIN_RFC3339 SPEEDUP

use std::sync::Arc;

use selfheal::adapters::sqlite::SqliteTable;
use selfheal::engine::{Engine, StateMachine, mock::MockConfig};
use selfheal::ports::SystemClock;

const DEFINITION: &str = include_str!("../../../statemachine/incident.asl.json");
const MOCKS: &str = include_str!("../../../statemachine/test/MockConfigFile.json");
const INPUT: &str = include_str!("../../../statemachine/test/input.json");

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, db, mode, case, origin, speedup] = args.as_slice() else {
        eprintln!("usage: durable-worker DB start|resume TEST_CASE ORIGIN SPEEDUP");
        std::process::exit(2);
    };
    let origin = chrono::DateTime::parse_from_rfc3339(origin).expect("origin").with_timezone(&chrono::Utc);
    let speedup: f64 = speedup.parse().expect("speedup");
    let table = Arc::new(SqliteTable::open(db).expect("db"));
    let engine = Engine::new(table, Arc::new(SystemClock::accelerated_since(origin, speedup)));
    engine.register("incident", StateMachine::parse(DEFINITION).expect("definition"));
    let mocks = MockConfig::parse(MOCKS).expect("mocks");
    engine.set_dispatcher(Arc::new(mocks.dispatcher("incident", case).expect("case")));
    let name = "durable-run";
    match mode.as_str() {
        "start" => {
            engine.start("incident", name, INPUT).await.expect("start");
        }
        "resume" => {
            let n = engine.resume_open_executions().await.expect("resume");
            eprintln!("resumed {n} open executions");
        }
        other => panic!("unknown mode {other}"),
    }
    let rec = engine.wait_for(name, std::time::Duration::from_secs(60)).await.expect("wait");
    println!("{}", serde_json::to_string(&rec).expect("json"));
}
