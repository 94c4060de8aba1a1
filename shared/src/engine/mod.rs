//! The local engine: an interpreter for the subset of Amazon States Language that
//! `statemachine/incident.asl.json` uses, with durable executions, task tokens, an injectable
//! clock, AWS-style history and Step Functions Local's mock-config format.

pub mod asl;
pub mod inprocess;
pub mod interpreter;
pub mod jsonata;
pub mod mock;
pub mod path;

pub use asl::StateMachine;
pub use interpreter::*;

use std::sync::Arc;

use crate::adapters::sqlite::SqliteTable;
use crate::ports::{Clock, VirtualClock};
use crate::store::DocTable;

/// What `selfheal run-state-machine` prints.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MockRunReport {
    pub status: String,
    pub path: Vec<String>,
    pub output: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    pub execution: String,
    pub transitions: u32,
    pub max_payload_bytes: usize,
    /// The AWS-style event history (`selfheal history` prints it; not part of the summary).
    #[serde(skip)]
    pub history: Vec<HistoryEvent>,
}

#[derive(Debug, thiserror::Error)]
pub enum MockRunError {
    #[error(transparent)]
    Definition(#[from] asl::DefinitionError),
    #[error(transparent)]
    Mock(#[from] mock::MockError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("could not start the execution: {0}")]
    Start(String),
    #[error("the execution did not finish (still in state {0:?})")]
    Unfinished(Option<String>),
}

/// Run one MockConfigFile test case through the interpreter on simulated time, persisting into
/// `table` (so `selfheal history` can show it afterwards).
pub async fn run_mock_case(
    definition: &str,
    mock_config: &str,
    state_machine: &str,
    test_case: &str,
    input: &str,
    table: Option<Arc<dyn DocTable>>,
) -> Result<MockRunReport, MockRunError> {
    let machine = StateMachine::parse(definition)?;
    let config = mock::MockConfig::parse(mock_config)?;
    let dispatcher = config.dispatcher(state_machine, test_case)?;
    let table: Arc<dyn DocTable> = match table {
        Some(t) => t,
        None => Arc::new(SqliteTable::in_memory().map_err(EngineError::from)?),
    };
    let clock: Arc<dyn Clock> = Arc::new(VirtualClock::starting_at(chrono::Utc::now()));
    let engine = Engine::new(table, clock);
    engine.register(state_machine, machine);
    engine.set_dispatcher(Arc::new(dispatcher));
    let case_slug: String = test_case
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' })
        .take(40)
        .collect();
    let name = format!("test-{case_slug}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    engine.start(state_machine, &name, input).await.map_err(|e| MockRunError::Start(e.to_string()))?;
    let rec = engine.wait_for(&name, std::time::Duration::from_secs(60)).await?;
    if rec.is_open() {
        return Err(MockRunError::Unfinished(rec.current_state().map(str::to_string)));
    }
    Ok(MockRunReport {
        status: match rec.status {
            ExecutionStatus::Succeeded => "SUCCEEDED",
            ExecutionStatus::Failed => "FAILED",
            ExecutionStatus::TimedOut => "TIMED_OUT",
            ExecutionStatus::Aborted => "ABORTED",
            ExecutionStatus::Running => "RUNNING",
        }
        .to_string(),
        path: rec.path.clone(),
        output: rec.output.clone().unwrap_or(serde_json::Value::Null),
        error: rec.error.clone(),
        cause: rec.cause.clone(),
        execution: rec.name.clone(),
        transitions: rec.transitions,
        max_payload_bytes: rec.max_payload_bytes,
        history: engine.history(&rec.name).await?,
    })
}
