//! Close the loop: resolve with a summary, watch the stability window, learn from the outcome,
//! or hand everything learned to a person.

use serde_json::{Value, json};

use super::{Deps, audit, emit_metric, load, messages, update};
use crate::domain::*;
use crate::error::StageError;
use crate::ports::ServiceEvent;

fn minutes_since(from: chrono::DateTime<chrono::Utc>, to: chrono::DateTime<chrono::Utc>) -> f64 {
    (to - from).num_milliseconds().max(0) as f64 / 60_000.0
}

pub async fn resolve_incident(deps: &Deps, id: &IncidentId) -> Result<Value, StageError> {
    let now = deps.clock.now();
    // Record our outcome first: intake then knows the `incident.resolved` webhook is ours.
    let (incident, _) = update(deps, id, |i| {
        i.outcome = Some(Outcome::Resolved);
        i.status = IncidentStatus::Resolved;
        i.resolved_at.get_or_insert(now);
        i.stage = "resolve_incident".into();
        Ok(())
    })
    .await?;
    let trail = deps.store.audit_trail(id).await?;
    let summary = messages::pagerduty_summary(&incident, "Resolved automatically: the fix was verified.", &trail);
    let action = match incident.plan.as_ref().map(|p| &p.action) {
        Some(PlannedAction::Catalog { runbook_id, action, .. }) => format!("{runbook_id}/{action}"),
        _ => "a reviewed script".into(),
    };
    deps.source.add_note(id, &summary).await?;
    deps.source.resolve(id, &format!("selfheal applied {action}; post-flight checks pass.")).await?;
    deps.store
        .record_service_event(&ServiceEvent {
            service: incident.service.id.clone(),
            at: now,
            incident_id: id.clone(),
            kind: "resolved_by_selfheal".into(),
        })
        .await?;
    audit(deps, id, "pagerduty", "incident_resolved", json!({"action": action})).await?;
    let route = incident.decision.as_ref().map_or("unknown", |d| d.route.as_str());
    emit_metric(
        incident.service.name.as_str(),
        &[("TimeToResolve", minutes_since(incident.created_at, now) * 60.0, "Seconds"), ("Resolved", 1.0, "Count")],
        &[("Route", route)],
    );
    Ok(json!({"resolved": true}))
}

/// Count an outcome against the catalog action that was applied.
pub async fn record_effectiveness(deps: &Deps, incident: &Incident, e: Effectiveness) -> Result<(), StageError> {
    if let Some(PlannedAction::Catalog { runbook_id, action, .. }) = incident.plan.as_ref().map(|p| &p.action) {
        deps.store.record_action_outcome(runbook_id, action, e).await?;
    }
    Ok(())
}

/// After the stability window: did the alert fire again (a new trigger on the service) or was
/// this incident reopened?
pub async fn check_refire(deps: &Deps, id: &IncidentId) -> Result<Value, StageError> {
    let incident = load(deps, id).await?;
    let since = incident.resolved_at.unwrap_or(incident.updated_at);
    let events = deps.store.service_events_since(&incident.service.id, since).await?;
    let refires: Vec<&ServiceEvent> = events
        .iter()
        .filter(|e| (e.kind == "triggered" && e.incident_id != *id) || (e.kind == "reopened" && e.incident_id == *id))
        .collect();
    let effectiveness = if refires.is_empty() { Effectiveness::Effective } else { Effectiveness::Ineffective };
    update(deps, id, |i| {
        i.effectiveness = Some(effectiveness);
        i.stage = "check_refire".into();
        Ok(())
    })
    .await?;
    record_effectiveness(deps, &incident, effectiveness).await?;
    let seen: Vec<Value> =
        refires.iter().map(|e| json!({"incident": e.incident_id, "kind": e.kind, "at": e.at})).collect();
    audit(deps, id, "pagerduty", "stability_checked", json!({"effectiveness": effectiveness, "refires": seen})).await?;
    emit_metric(
        incident.service.name.as_str(),
        &[(if refires.is_empty() { "EffectiveFix" } else { "IneffectiveFix" }, 1.0, "Count")],
        &[],
    );
    Ok(json!({"refired": !refires.is_empty(), "effectiveness": effectiveness}))
}

/// The resolution as knowledge: what happened, what was done, whether it held.
pub fn resolution_document(i: &Incident) -> (String, String) {
    let effectiveness = match i.effectiveness {
        Some(Effectiveness::Effective) => "effective",
        Some(Effectiveness::Ineffective) => "ineffective (the alert fired again inside the stability window)",
        None => "unknown",
    };
    let (runbook, action) = match i.plan.as_ref().map(|p| &p.action) {
        Some(PlannedAction::Catalog { runbook_id, action, parameters }) => {
            (runbook_id.to_string(), format!("{action} {parameters}"))
        }
        Some(PlannedAction::Script { .. }) => ("none".into(), "reviewed free-form script".into()),
        None => ("none".into(), "none".into()),
    };
    let title = format!("Resolution {}: {}", i.id, i.title.chars().take(150).collect::<String>());
    let text = format!(
        "type: incident-resolution\nservice: {}\nincident: {}\noutcome: resolved\neffectiveness: {effectiveness}\n\
         resolved-with-runbook: {runbook}\naction: {action}\nerror tags: {}\n\n## Root cause\n{}\n\n## Evidence\n{}\n\n## What was done\n{}\n",
        i.service.name,
        i.id,
        i.hypothesis.as_ref().map(|h| h.services.join(", ")).unwrap_or_default(),
        i.hypothesis.as_ref().map_or("unknown", |h| h.root_cause.as_str()),
        i.hypothesis
            .as_ref()
            .map(|h| h.evidence.iter().map(|e| format!("- {e}")).collect::<Vec<_>>().join("\n"))
            .unwrap_or_default(),
        i.plan.as_ref().map_or("nothing", |p| p.analysis.as_str()),
    );
    (title, text)
}

pub async fn ingest_resolution(deps: &Deps, id: &IncidentId) -> Result<Value, StageError> {
    let incident = load(deps, id).await?;
    let (title, text) = resolution_document(&incident);
    let content_id = deps.kb.ingest(&title, &text).await?;
    audit(
        deps,
        id,
        "senso",
        "resolution_ingested",
        json!({"content_id": content_id, "effectiveness": incident.effectiveness}),
    )
    .await?;
    Ok(json!({"content_id": content_id}))
}

pub async fn record_rejection(deps: &Deps, id: &IncidentId) -> Result<Value, StageError> {
    let (incident, _) = update(deps, id, |i| {
        i.outcome = Some(Outcome::Rejected);
        i.status = IncidentStatus::Escalated;
        i.stage = "record_rejection".into();
        Ok(())
    })
    .await?;
    let trail = deps.store.audit_trail(id).await?;
    let who = incident
        .approval
        .as_ref()
        .and_then(|a| a.decided_by.clone())
        .map_or("an approver".to_string(), |u| u.to_string());
    let note = messages::pagerduty_summary(
        &incident,
        &format!("Plan rejected by {who} in Slack; nothing was executed."),
        &trail,
    );
    deps.source.add_note(id, &note).await?;
    audit(deps, id, "pagerduty", "rejection_recorded", json!({"by": who})).await?;
    emit_metric(incident.service.name.as_str(), &[("Rejected", 1.0, "Count")], &[]);
    Ok(json!({"noted": true}))
}

/// Why the run ended up here, from the state the state machine passed along.
fn escalation_reason(state: &Value) -> String {
    if let Some(m) = state.pointer("/reason/message").and_then(Value::as_str) {
        return m.to_string();
    }
    if let Some(e) = state.get("error") {
        let name = e.get("Error").and_then(Value::as_str).unwrap_or("error");
        let cause = e.get("Cause").and_then(Value::as_str).unwrap_or("");
        // Lambda causes are JSON ({"errorMessage": …}); show the message.
        let cause = serde_json::from_str::<Value>(cause)
            .ok()
            .and_then(|c| c.get("errorMessage").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| cause.to_string());
        return format!("{name}: {}", cause.chars().take(600).collect::<String>());
    }
    "the run could not continue safely".into()
}

async fn escalate_without_store(
    deps: &Deps,
    id: &IncidentId,
    reason: &str,
    store_error: &StageError,
) -> Result<Value, StageError> {
    let text = format!(
        "selfheal escalated {id} to a human: {reason}. Its store is unavailable ({store_error}), so the \
         incident's record and audit trail may be incomplete; nothing further will run automatically."
    );
    tracing::error!(incident_id = %id, error = %store_error, "escalating without the store");
    let pd = deps.source.add_note(id, &text).await;
    let message = messages::plain(&text);
    let slack = deps.chat.post(&message).await;
    if let (Err(a), Err(b)) = (&pd, &slack) {
        return Err(StageError::Transient(format!("could not escalate: PagerDuty: {a}; Slack: {b}")));
    }
    emit_metric("unknown", &[("Escalated", 1.0, "Count")], &[]);
    Ok(json!({"outcome": "escalated", "recorded": false}))
}

/// When the investigator's note arrived but could never be read, say so: "no hypothesis" alone
/// would send the on-call looking at the investigator instead of at PagerDuty's API.
fn with_unreadable_note(reason: String, trail: &[AuditEvent]) -> String {
    if trail.iter().any(|e| e.kind == "hypothesis_received") {
        return reason;
    }
    match trail.iter().rev().find(|e| e.kind == "note_unavailable") {
        Some(e) => format!(
            "{reason} (note {} arrived but could not be read: {})",
            e.detail["note_id"].as_str().unwrap_or("?"),
            e.detail["error"].as_str().unwrap_or("unknown error")
        ),
        None => reason,
    }
}

pub async fn escalate(deps: &Deps, id: &IncidentId, payload: &Value) -> Result<Value, StageError> {
    let state = payload.get("state").cloned().unwrap_or(Value::Null);
    let reason = escalation_reason(&state);
    let incident = match load(deps, id).await {
        Ok(incident) => incident,
        // The store is down (after the SDK's own retries): the humans hear it anyway, from what
        // the state machine carried. Not retried as a whole, which would repeat the notes.
        Err(e @ StageError::Transient(_)) => return escalate_without_store(deps, id, &reason, &e).await,
        Err(e) => return Err(e),
    };
    if incident.status == IncidentStatus::ResolvedByHuman {
        update(deps, id, |i| {
            i.outcome.get_or_insert(Outcome::ResolvedByHuman);
            Ok(())
        })
        .await?;
        audit(deps, id, "pagerduty", "stopped", json!({"reason": "a person resolved the incident"})).await?;
        return Ok(json!({"outcome": "resolved_by_human"}));
    }
    let (incident, _) = update(deps, id, |i| {
        i.outcome = Some(Outcome::Escalated);
        i.status = IncidentStatus::Escalated;
        i.stage = "escalate".into();
        Ok(())
    })
    .await?;
    let trail = deps.store.audit_trail(id).await?;
    let reason = with_unreadable_note(reason, &trail);
    let note = messages::pagerduty_summary(&incident, &format!("Escalated to a human: {reason}"), &trail);
    // Both channels are tried; one failing must not hide the escalation in the other.
    let pd = deps.source.add_note(id, &note).await;
    let slack = deps.chat.post(&messages::escalation(&incident, &reason)).await;
    if let (Err(a), Err(b)) = (&pd, &slack) {
        return Err(StageError::Transient(format!("could not escalate: PagerDuty: {a}; Slack: {b}")));
    }
    audit(
        deps,
        id,
        "pagerduty",
        "escalated",
        json!({"reason": reason, "pagerduty_note": pd.is_ok(), "slack": slack.is_ok()}),
    )
    .await?;
    emit_metric(incident.service.name.as_str(), &[("Escalated", 1.0, "Count")], &[]);
    Ok(json!({"outcome": "escalated"}))
}
