//! Stage handlers: the logic of every step of the loop. The same functions run inside the
//! Lambda functions (behind `lambda_runtime`/`lambda_http`) and inside the local engine.
//!
//! State-machine tasks call [`handle`] with `{"op": …, "incident_id": …, …}`; each Lambda only
//! accepts the operations of its [`Function`] (the table is in [`ops`]). HTTP entry points are
//! [`intake::handle_webhook`] and [`approvals::handle_interaction`].

pub mod action;
pub mod approvals;
pub mod closing;
pub mod cognition;
pub mod http;
pub mod intake;
pub mod messages;
pub mod narration;
pub mod ops;

pub use ops::{Capability, Function, Op};

use serde_json::{Value, json};
use std::sync::Arc;

use crate::config::Settings;
use crate::domain::{AuditEvent, Incident, IncidentId};
use crate::error::{StageError, StoreError};
use crate::ports::*;

/// Everything a stage may touch. Built once per process (Lambda init or the local engine).
pub struct Deps {
    pub settings: Settings,
    /// Read with `current().await` at the point of use: on Lambda the values refresh (TTL).
    pub secrets: crate::secrets::SecretsHandle,
    pub store: Arc<dyn IncidentStore>,
    pub orchestrator: Arc<dyn Orchestrator>,
    pub source: Arc<dyn IncidentSource>,
    pub kb: Arc<dyn KnowledgeBase>,
    pub planner: Arc<dyn Planner>,
    /// The model fallback of the note parser (`notes.model_fallback`).
    pub note_reader: Arc<dyn NoteReader>,
    pub browser: Arc<dyn Browser>,
    pub workspaces: Arc<dyn Workspaces>,
    pub chat: Arc<dyn ChatOps>,
    pub clock: Arc<dyn Clock>,
}

/// Run the operation named in `payload["op"]`, if `function` owns it.
pub async fn handle(deps: &Deps, function: Function, payload: Value) -> Result<Value, StageError> {
    let name = payload
        .get("op")
        .and_then(Value::as_str)
        .ok_or_else(|| StageError::InvalidInput("payload has no op".into()))?;
    // An unknown name and another function's op get the same answer: not this function's.
    let op = Op::parse(name).filter(|op| function.ops().contains(op)).ok_or_else(|| {
        StageError::InvalidInput(format!("operation {name} does not belong to the {function:?} function"))
    })?;
    // A scheduled op concerns no single incident; every other op names one.
    let id = if op.scheduled() { None } else { Some(incident_id(&payload)?) };
    let span = match &id {
        Some(id) => tracing::info_span!("stage", op = op.as_str(), incident_id = %id),
        None => tracing::info_span!("stage", op = op.as_str()),
    };
    let started = std::time::Instant::now();
    let work = async {
        match &id {
            Some(id) => dispatch(deps, op, id, &payload).await,
            None => dispatch_scheduled(deps, op, &payload).await,
        }
    };
    let result = tracing::Instrument::instrument(work, span.clone()).await;
    let _enter = span.enter();
    let elapsed_ms = started.elapsed().as_millis() as u64;
    match &result {
        Ok(_) => tracing::info!(op = op.as_str(), elapsed_ms, "stage done"),
        Err(e) => tracing::warn!(op = op.as_str(), elapsed_ms, error = e.error_name(), detail = %e, "stage failed"),
    }
    result
}

/// The ops no incident is part of ([`Op::scheduled`]).
async fn dispatch_scheduled(deps: &Deps, op: Op, payload: &Value) -> Result<Value, StageError> {
    match op {
        Op::CleanUpWorkspaces => action::scheduled_cleanup(deps, payload).await,
        other => Err(StageError::InvalidInput(format!("operation {other} needs an incident_id"))),
    }
}

/// Run the op, with its milestone notes before or after it ([`Op::narration`]).
async fn dispatch(deps: &Deps, op: Op, id: &IncidentId, payload: &Value) -> Result<Value, StageError> {
    use narration::Narration;
    let channels = op.narration_channels();
    if matches!(op.narration(), Narration::Before | Narration::Around) {
        narration::narrate(deps, id, channels).await;
    }
    let result = run_op(deps, op, id, payload).await;
    if matches!(op.narration(), Narration::After | Narration::Around) && result.is_ok() {
        narration::narrate(deps, id, channels).await;
    }
    result
}

async fn run_op(deps: &Deps, op: Op, id: &IncidentId, payload: &Value) -> Result<Value, StageError> {
    let (id, payload) = (id.clone(), payload.clone());
    match op {
        Op::AwaitHypothesis => cognition::await_hypothesis(deps, &id, &payload).await,
        Op::ParseHypothesis => cognition::parse_hypothesis(deps, &id).await,
        Op::LookupRunbooks => cognition::lookup_runbooks(deps, &id).await,
        Op::PlanRemediation => cognition::plan_remediation(deps, &id).await,
        Op::Decide => cognition::decide(deps, &id).await,
        Op::RequestApproval => approvals::request_approval(deps, &id, &payload).await,
        Op::ShadowReport => approvals::shadow_report(deps, &id).await,
        Op::Preflight => action::preflight(deps, &id).await,
        Op::Postflight => action::postflight(deps, &id).await,
        Op::ProvisionWorkspace => action::provision_workspace(deps, &id).await,
        Op::PollWorkspace => action::poll_workspace(deps, &id, &payload).await,
        Op::CollectResult => action::collect_result(deps, &id, &payload).await,
        Op::DestroyWorkspace => action::destroy_workspace(deps, &id).await,
        Op::CleanUpWorkspaces => action::scheduled_cleanup(deps, &payload).await,
        Op::ResolveIncident => closing::resolve_incident(deps, &id).await,
        Op::CheckRefire => closing::check_refire(deps, &id).await,
        Op::IngestResolution => closing::ingest_resolution(deps, &id).await,
        Op::RecordRejection => closing::record_rejection(deps, &id).await,
        Op::Escalate => closing::escalate(deps, &id, &payload).await,
    }
}

/// The `task_token` a callback task passes in its payload.
pub fn task_token(payload: &Value) -> Result<crate::domain::TaskToken, StageError> {
    let raw = payload
        .get("task_token")
        .and_then(Value::as_str)
        .ok_or_else(|| StageError::InvalidInput("no task_token".into()))?;
    Ok(crate::domain::TaskToken::parse(raw)?)
}

fn incident_id(payload: &Value) -> Result<IncidentId, StageError> {
    let raw = payload
        .get("incident_id")
        .and_then(Value::as_str)
        .ok_or_else(|| StageError::InvalidInput("no incident_id".into()))?;
    Ok(IncidentId::parse(raw)?)
}

/// Load an incident that must exist.
pub async fn load(deps: &Deps, id: &IncidentId) -> Result<Incident, StageError> {
    deps.store.get_incident(id).await?.ok_or_else(|| StageError::NotFound(format!("incident {id}")))
}

/// Read-modify-write with optimistic concurrency (retried on a lost race).
pub async fn update<R>(
    deps: &Deps,
    id: &IncidentId,
    mut change: impl FnMut(&mut Incident) -> Result<R, StageError>,
) -> Result<(Incident, R), StageError> {
    for attempt in 0..16u32 {
        let before = load(deps, id).await?;
        let mut incident = before.clone();
        let r = change(&mut incident)?;
        // Nothing changed (another writer got there first): no write, no contention.
        if incident == before {
            return Ok((incident, r));
        }
        incident.updated_at = deps.clock.now();
        match deps.store.save_incident(&incident).await {
            Ok(saved) => return Ok((saved, r)),
            Err(StoreError::VersionConflict(_)) => {
                let jitter = rand::random::<u64>() % (2 + u64::from(attempt) * 3);
                tokio::time::sleep(std::time::Duration::from_millis(jitter)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(StageError::Conflict(format!("incident {id} keeps changing")))
}

/// Append to the incident's audit trail.
pub async fn audit(deps: &Deps, id: &IncidentId, actor: &str, kind: &str, detail: Value) -> Result<(), StageError> {
    let event = AuditEvent::new(deps.clock.now(), actor, kind, detail);
    deps.store.append_audit(id, &event).await?;
    Ok(())
}

/// Audit a decision together with a hash of the inputs it saw.
pub async fn audit_decision(
    deps: &Deps,
    id: &IncidentId,
    actor: &str,
    kind: &str,
    detail: Value,
    inputs: &Value,
) -> Result<(), StageError> {
    let event = AuditEvent::new(deps.clock.now(), actor, kind, detail).with_inputs_hash(inputs);
    deps.store.append_audit(id, &event).await?;
    Ok(())
}

/// Stop autonomous work when a person resolved the incident or the kill switch is on.
pub fn ensure_autonomy_allowed(incident: &Incident) -> Result<(), StageError> {
    if incident.status == crate::domain::IncidentStatus::ResolvedByHuman {
        return Err(StageError::Stopped("a person resolved the incident".into()));
    }
    Ok(())
}

/// The execution input intake starts every incident with. Deterministic for an incident, so
/// StartExecution retries are byte-identical.
pub fn execution_input(settings: &Settings, incident: &Incident) -> String {
    let t = &settings.timeouts;
    json!({
        "incident_id": incident.id.as_str(),
        "service_id": incident.service.id.as_str(),
        "config": {
            "hypothesis_timeout_secs": t.hypothesis_secs.max(1),
            "approval_timeout_secs": t.approval_secs.max(1),
            "stability_window_secs": t.stability_window_secs,
            "poll_interval_secs": t.poll_interval_secs.max(1),
            "max_polls": t.max_polls.max(1),
        }
    })
    .to_string()
}

// The metrics emitter lives in telemetry; stages keep calling it by these names.
pub use crate::telemetry::{emit_metric, set_metrics_to_stdout};
