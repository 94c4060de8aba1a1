//! The local engine: embedded store, the ASL interpreter running the real state machine, the
//! stage handlers in-process, and the HTTP routes API Gateway would have.

use std::path::Path;
use std::sync::Arc;

use selfheal::adapters::sqlite::SqliteTable;
use selfheal::config::{Secrets, Settings};
use selfheal::engine::inprocess::{InProcessDispatcher, LOCAL_SUBSTITUTIONS, substitute};
use selfheal::engine::{Engine, LocalOrchestrator, StateMachine};
use selfheal::ports::{Clock, IncidentStore};
use selfheal::stages::Deps;
use selfheal::store::TableStore;
use selfheal::wiring::build_deps;

/// The state machine shipped with this binary.
pub const INCIDENT_ASL: &str = include_str!("../../statemachine/incident.asl.json");
pub const MACHINE: &str = "incident";

pub struct LocalStack {
    pub engine: Arc<Engine>,
    pub deps: Arc<Deps>,
    pub store: Arc<dyn IncidentStore>,
}

/// Start the engine on the SQLite file `db`; incidents live there too unless `store` is given
/// (e.g. DynamoDB).
pub async fn start(
    settings: Settings,
    secrets: Secrets,
    db: &Path,
    store: Option<Arc<dyn IncidentStore>>,
    clock: Arc<dyn Clock>,
) -> Result<LocalStack, String> {
    let table = SqliteTable::open(db).map_err(|e| format!("cannot open {}: {e}", db.display()))?;
    let store: Arc<dyn IncidentStore> = store.unwrap_or_else(|| Arc::new(TableStore::new(table.clone())));
    let engine = Engine::new(Arc::new(table), clock.clone());
    let definition = StateMachine::parse(&substitute(INCIDENT_ASL, LOCAL_SUBSTITUTIONS)).map_err(|e| e.to_string())?;
    engine.register(MACHINE, definition);
    let orchestrator = Arc::new(LocalOrchestrator::new(&engine, MACHINE));
    let deps = Arc::new(build_deps(settings, secrets, store.clone(), orchestrator, clock));
    engine.set_dispatcher(Arc::new(InProcessDispatcher::new(deps.clone())));
    let resumed = engine.resume_open_executions().await.map_err(|e| e.to_string())?;
    if resumed > 0 {
        tracing::info!(resumed, "resumed open executions");
    }
    Ok(LocalStack { engine, deps, store })
}
