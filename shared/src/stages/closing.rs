//! Close the loop: resolve with a summary, watch the stability window, learn from the outcome,
//! or hand everything learned to a person.

use serde_json::{Value, json};

use super::{Deps, audit, emit_metric, load, messages, update};
use crate::domain::*;
use crate::error::StageError;
use crate::ports::{DocumentKind, ServiceEvent};

/// One line of outside text for a plain-text document: control characters (newlines included)
/// become spaces, so it cannot forge the document's own lines.
fn clip_line(s: &str, max: usize) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).take(max).collect()
}

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
    let resolved_at = incident.resolved_at.unwrap_or(now);
    // The stability window starts now: a trigger of the same alert from here on is a re-fire,
    // and intake can only see that once this event is recorded. Keyed by the first resolution
    // time, so a retried step writes the same event.
    deps.store
        .record_service_event(&ServiceEvent {
            service: incident.service.id.clone(),
            at: resolved_at,
            incident_id: id.clone(),
            kind: RESOLVED_BY_SELFHEAL.into(),
        })
        .await?;
    let trail = deps.store.audit_trail(id).await?;
    let summary = messages::pagerduty_summary(&incident, RESOLVED_HEADLINE, &trail);
    let action = match incident.plan.as_ref().map(|p| &p.action) {
        Some(PlannedAction::Catalog { runbook_id, action, .. }) => format!("{runbook_id}/{action}"),
        _ => "a reviewed script".into(),
    };
    // A step re-run after a crash between the note and its record must not add it again: look
    // first. If the notes cannot be read, writing it twice beats not writing it.
    let headline = format!("[selfheal] {RESOLVED_HEADLINE}");
    let written = match tokio::time::timeout(READ_BACK_DEADLINE, deps.source.list_notes(id)).await {
        Ok(Ok(notes)) => notes.iter().any(|n| n.content.starts_with(&headline)),
        Ok(Err(e)) => {
            tracing::warn!(incident_id = %id, error = %e, "could not read the notes back; writing the summary");
            false
        }
        Err(_) => {
            tracing::warn!(incident_id = %id, "reading the notes back took too long; writing the summary");
            false
        }
    };
    if !written {
        deps.source.add_note(id, &summary).await?;
    }
    deps.source.resolve(id, &format!("selfheal applied {action}; post-flight checks pass.")).await?;
    audit(deps, id, "pagerduty", "incident_resolved", json!({"action": action})).await?;
    let route = incident.decision.as_ref().map_or("unknown", |d| d.route.as_str());
    emit_metric(
        incident.service.name.as_str(),
        &[("TimeToResolve", minutes_since(incident.created_at, now) * 60.0, "Seconds"), ("Resolved", 1.0, "Count")],
        &[("Route", route)],
    );
    Ok(json!({"resolved": true}))
}

/// How long the resolution may spend reading the notes back (it writes the summary anyway after).
pub const READ_BACK_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// The headline of the resolution summary on the PagerDuty incident.
const RESOLVED_HEADLINE: &str = "Resolved automatically: the fix was verified.";

/// The service event that opens a stability window.
const RESOLVED_BY_SELFHEAL: &str = "resolved_by_selfheal";
/// How many recent fixes of a service a re-fire check reads (see `fixes_in_window`).
pub const MAX_FIXES_IN_WINDOW: usize = 5;
/// How many later triggers the end-of-window check reads.
pub const MAX_TRIGGERS_CHECKED: usize = 10;

/// Count an outcome against the catalog action that was applied.
pub async fn record_effectiveness(deps: &Deps, incident: &Incident, e: Effectiveness) -> Result<(), StageError> {
    if let Some(PlannedAction::Catalog { runbook_id, action, .. }) = incident.plan.as_ref().map(|p| &p.action) {
        deps.store.record_action_outcome(runbook_id, action, e).await?;
    }
    Ok(())
}

/// Incidents selfheal resolved on `service` whose stability window is still open at `now`.
async fn fixes_in_window(deps: &Deps, service: &ServiceId) -> Result<Vec<Incident>, StageError> {
    let now = deps.clock.now();
    let window = chrono::Duration::seconds(deps.settings.timeouts.stability_window_secs as i64);
    let events = deps.store.service_events_since(service, now - window).await?;
    // Newest first, and only the last few: each costs a read, and a service with more fixes
    // inside one window than this is already over its autonomy budget.
    let mut ids: Vec<&IncidentId> = Vec::new();
    for e in events.iter().rev().filter(|e| e.kind == RESOLVED_BY_SELFHEAL) {
        if !ids.contains(&&e.incident_id) {
            ids.push(&e.incident_id);
        }
        if ids.len() == MAX_FIXES_IN_WINDOW {
            break;
        }
    }
    let mut out = Vec::new();
    for id in ids {
        if let Some(i) = deps.store.get_incident(id).await?
            && i.outcome == Some(Outcome::Resolved)
            && i.resolved_at.is_some_and(|at| at + window > now)
        {
            out.push(i);
        }
    }
    Ok(out)
}

fn catalog_key(i: &Incident) -> Option<(&RunbookId, &ActionName)> {
    match i.plan.as_ref().map(|p| &p.action) {
        Some(PlannedAction::Catalog { runbook_id, action, .. }) => Some((runbook_id, action)),
        _ => None,
    }
}

/// The incident whose fix, by the same catalog action on the same service, is still inside its
/// stability window: while it is, the action may not run again without a person (if it did not
/// hold, running it again is the loop that hides the real cause).
pub async fn same_fix_in_window(deps: &Deps, incident: &Incident) -> Result<Option<IncidentId>, StageError> {
    let Some(key) = catalog_key(incident) else { return Ok(None) };
    Ok(fixes_in_window(deps, &incident.service.id)
        .await?
        .into_iter()
        .find(|earlier| earlier.id != incident.id && catalog_key(earlier) == Some(key))
        .map(|earlier| earlier.id))
}

/// Is `later` the same failure as `earlier` firing again: the same alert (PagerDuty's
/// incident key), or the same root cause by fingerprint? Says why, when it is.
fn same_failure(earlier: &Incident, later: &Incident) -> Option<String> {
    if let (Some(a), Some(b)) = (&earlier.alert_key, &later.alert_key)
        && a == b
    {
        return Some(format!("the same alert (incident key) fired again as incident {}", later.id));
    }
    let fingerprint = |i: &Incident| i.hypothesis.as_ref().and_then(|h| root_cause_fingerprint(&h.root_cause));
    match (fingerprint(earlier), fingerprint(later)) {
        (Some(a), Some(b)) if a == b => {
            Some(format!("incident {} on the same service has the same root cause", later.id))
        }
        _ => None,
    }
}

/// Mark `earlier`'s fix ineffective because `later` is the same failure again: at once, counted
/// once against the action, audited on both incidents. The ingest at the end of the window
/// carries the verdict and its reason into the knowledge base.
async fn mark_refired(deps: &Deps, earlier: &IncidentId, later: &IncidentId, because: &str) -> Result<(), StageError> {
    let (incident, changed) = update(deps, earlier, |i| {
        if i.effectiveness == Some(Effectiveness::Ineffective) {
            return Ok(false);
        }
        i.effectiveness = Some(Effectiveness::Ineffective);
        i.ineffective_because = Some(because.to_string());
        i.refired_as = Some(later.clone());
        Ok(true)
    })
    .await?;
    if !changed {
        return Ok(());
    }
    record_effectiveness(deps, &incident, Effectiveness::Ineffective).await?;
    audit(deps, earlier, "pagerduty", "refired", json!({"by": later, "because": because})).await?;
    audit(deps, later, "pagerduty", "refire_of", json!({"incident": earlier, "because": because})).await?;
    emit_metric(incident.service.name.as_str(), &[("IneffectiveFix", 1.0, "Count")], &[]);
    Ok(())
}

/// A new trigger: is it an alert selfheal fixed inside its stability window firing again?
/// Called by intake as the incident is created.
pub async fn refire_on_trigger(deps: &Deps, incident: &Incident) -> Result<(), StageError> {
    if incident.alert_key.is_none() {
        return Ok(());
    }
    for earlier in fixes_in_window(deps, &incident.service.id).await? {
        if earlier.id != incident.id
            && let Some(because) = same_failure(&earlier, incident)
        {
            mark_refired(deps, &earlier.id, &incident.id, &because).await?;
        }
    }
    Ok(())
}

/// Once an incident's root cause is known: the same cause on the same service inside a fix's
/// stability window means the fix did not hold.
pub async fn refire_by_fingerprint(deps: &Deps, incident: &Incident) -> Result<(), StageError> {
    for earlier in fixes_in_window(deps, &incident.service.id).await? {
        if earlier.id != incident.id
            && let Some(because) = same_failure(&earlier, incident)
        {
            mark_refired(deps, &earlier.id, &incident.id, &because).await?;
        }
    }
    Ok(())
}

/// At the end of the stability window: the verdict. A re-fire was recorded the moment it
/// arrived; this step also catches one whose trigger raced the resolution, and a reopen.
pub async fn check_refire(deps: &Deps, id: &IncidentId) -> Result<Value, StageError> {
    let incident = load(deps, id).await?;
    let since = incident.resolved_at.unwrap_or(incident.updated_at);
    let events = deps.store.service_events_since(&incident.service.id, since).await?;
    for e in events.iter().filter(|e| e.kind == "triggered" && e.incident_id != *id).take(MAX_TRIGGERS_CHECKED) {
        if let Some(later) = deps.store.get_incident(&e.incident_id).await?
            && let Some(because) = same_failure(&incident, &later)
        {
            mark_refired(deps, id, &later.id, &because).await?;
        }
    }
    let reopened = events.iter().find(|e| e.kind == "reopened" && e.incident_id == *id);
    let (incident, counted_now) = update(deps, id, |i| {
        i.stage = "check_refire".into();
        // Already ineffective: counted when it was marked.
        if i.effectiveness == Some(Effectiveness::Ineffective) {
            return Ok(None);
        }
        let verdict = if let Some(e) = reopened {
            i.ineffective_because = Some(format!("the incident was reopened at {}", e.at.to_rfc3339()));
            Effectiveness::Ineffective
        } else {
            Effectiveness::Effective
        };
        i.effectiveness = Some(verdict);
        Ok(Some(verdict))
    })
    .await?;
    if let Some(verdict) = counted_now {
        record_effectiveness(deps, &incident, verdict).await?;
    }
    let effectiveness = incident.effectiveness.unwrap_or(Effectiveness::Effective);
    let refired = effectiveness == Effectiveness::Ineffective;
    let mut refires = Vec::new();
    if let Some(later) = &incident.refired_as {
        refires.push(json!({"incident": later, "kind": "refired"}));
    }
    if let Some(e) = reopened {
        refires.push(json!({"incident": id, "kind": "reopened", "at": e.at}));
    }
    audit(
        deps,
        id,
        "pagerduty",
        "stability_checked",
        json!({"effectiveness": effectiveness, "because": incident.ineffective_because, "refires": refires}),
    )
    .await?;
    if counted_now == Some(Effectiveness::Effective) {
        emit_metric(incident.service.name.as_str(), &[("EffectiveFix", 1.0, "Count")], &[]);
    }
    Ok(json!({"refired": refired, "effectiveness": effectiveness}))
}

/// The resolution as knowledge: what happened, what was done, whether it held.
pub fn resolution_document(i: &Incident) -> (String, String) {
    let effectiveness = match (i.effectiveness, &i.ineffective_because) {
        (Some(Effectiveness::Effective), _) => "effective".to_string(),
        (Some(Effectiveness::Ineffective), Some(why)) => format!("ineffective ({})", clip_line(why, 300)),
        (Some(Effectiveness::Ineffective), None) => {
            "ineffective (the alert fired again inside the stability window)".into()
        }
        (None, _) => "unknown".into(),
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
    // Into the resolutions' folder: retrieval never returns it as a runbook; what it teaches
    // about the runbook's effectiveness is counted in the catalog (`record_action_outcome`).
    let content_id = deps.kb.ingest(DocumentKind::Resolution, &title, &text).await?;
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
    let reason = incident.approval.as_ref().and_then(|a| a.reason.clone());
    let headline = match &reason {
        // Quoted on the headline's own line: the approver's words cannot pass for ours.
        Some(r) => format!(
            "Plan rejected by {who} in Slack; nothing was executed. Reason: \"{}\"",
            messages::clip(&messages::flat(r), messages::REASON_MAX)
        ),
        None => format!("Plan rejected by {who} in Slack; nothing was executed."),
    };
    let note = messages::pagerduty_summary(&incident, &headline, &trail);
    deps.source.add_note(id, &note).await?;
    audit(deps, id, "pagerduty", "rejection_recorded", json!({"by": who, "reason": reason})).await?;
    emit_metric(incident.service.name.as_str(), &[("Rejected", 1.0, "Count")], &[]);
    Ok(json!({"noted": true}))
}

/// Why the run ended up here, from the state the state machine passed along.
/// Why a run escalated, as a short name from a closed set (the state machine's reason codes and
/// the error names stages return): a metric dimension and a `selfheal stats` key, so never
/// free text.
pub fn escalation_code(state: &Value) -> String {
    let raw = state
        .pointer("/reason/code")
        .and_then(Value::as_str)
        .or_else(|| state.pointer("/error/Error").and_then(Value::as_str))
        .unwrap_or("unknown");
    let code: String =
        raw.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')).take(64).collect();
    if code.is_empty() { "unknown".into() } else { code }
}

fn escalation_reason(state: &Value) -> String {
    let reason = if let Some(m) = state.pointer("/reason/message").and_then(Value::as_str) {
        m.to_string()
    } else if let Some(e) = state.get("error") {
        caught_error(e)
    } else {
        "the run could not continue safely".into()
    };
    // The cleanup after an error failed too: the people must know a workspace may be left.
    match state.get("destroy_error") {
        Some(e) => format!(
            "{reason}; and the remediation workspace could not be confirmed deleted ({}): the scheduled cleanup (`selfheal workspaces gc`) retries it",
            caught_error(e)
        ),
        None => reason,
    }
}

/// A Catch's `{Error, Cause}` as one line.
fn caught_error(e: &Value) -> String {
    let name = e.get("Error").and_then(Value::as_str).unwrap_or("error");
    let cause = e.get("Cause").and_then(Value::as_str).unwrap_or("");
    // Lambda causes are JSON ({"errorMessage": …}); show the message.
    let cause = serde_json::from_str::<Value>(cause)
        .ok()
        .and_then(|c| c.get("errorMessage").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| cause.to_string());
    format!("{name}: {}", cause.chars().take(600).collect::<String>())
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
    emit_metric("unknown", &[("Escalated", 1.0, "Count")], &[("Reason", "store_unavailable")]);
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

/// A person resolved the incident while its approval waited: intake expired the approval in the
/// store (it acknowledges PagerDuty first and calls no SaaS), so the Slack buttons go here. An
/// approval intake could not reach (it failed mid-way) is expired now. Best effort: the run is
/// over either way, and a click on a leftover button is told the approval expired.
async fn retire_approval_message(deps: &Deps, id: &IncidentId, incident: &Incident) {
    let Some(decision) = incident.approval.as_ref() else { return };
    let approval = match deps.store.get_approval(&decision.approval_id).await {
        Ok(Some(a)) => a,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the approval to retire its message");
            return;
        }
    };
    if approval.status == ApprovalStatus::Pending {
        let Ok(pagerduty) = UserId::parse("pagerduty") else { return };
        match deps.store.decide_approval(&approval.id, ApprovalStatus::Expired, &pagerduty, deps.clock.now()).await {
            Ok(crate::ports::DecideOutcome::Decided(_)) => {}
            // A click won the race: its own reply tells the clicker what happened.
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, "could not expire the pending approval");
                return;
            }
        }
    } else if approval.status != ApprovalStatus::Expired {
        return;
    }
    if let (Some(channel), Some(ts)) = (approval.slack_channel, approval.slack_ts) {
        let text =
            format!("Approval expired for {id}: a person resolved the incident in PagerDuty, so nothing was executed.");
        let at = crate::ports::MessageRef { channel, ts };
        match deps.chat.update(&at, &messages::plain(&text)).await {
            Ok(_) => {
                let _ =
                    audit(deps, id, "approval", "approval_message_retired", json!({"approval_id": approval.id})).await;
            }
            Err(e) => tracing::warn!(error = %e, "could not mark the approval message expired"),
        }
    }
}

pub async fn escalate(deps: &Deps, id: &IncidentId, payload: &Value) -> Result<Value, StageError> {
    let state = payload.get("state").cloned().unwrap_or(Value::Null);
    let reason = escalation_reason(&state);
    let code = escalation_code(&state);
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
        retire_approval_message(deps, id, &incident).await;
        return Ok(json!({"outcome": "resolved_by_human"}));
    }
    let (incident, _) = update(deps, id, |i| {
        i.outcome = Some(Outcome::Escalated);
        i.status = IncidentStatus::Escalated;
        i.stage = "escalate".into();
        Ok(())
    })
    .await?;
    // The run is over, so an approval still pending (the approval timed out, or the run failed
    // around it) is expired: in the store, so a late click is told so and resumes nothing, and
    // in Slack, where the buttons go. Both are repeated safely when this step is retried.
    let mut incident = incident;
    if let Some(pending) = incident.approval.clone().filter(|a| a.status == ApprovalStatus::Pending) {
        let selfheal = UserId::parse("selfheal")?;
        let now = deps.clock.now();
        let decided = deps.store.decide_approval(&pending.approval_id, ApprovalStatus::Expired, &selfheal, now).await;
        let expired = match decided {
            Ok(crate::ports::DecideOutcome::Decided(a)) => {
                audit(deps, id, "approval", "approval_expired", json!({"approval_id": a.id})).await?;
                Some(a)
            }
            Ok(crate::ports::DecideOutcome::AlreadyDecided(a))
                if a.status == ApprovalStatus::Expired && a.decided_by.as_ref() == Some(&selfheal) =>
            {
                Some(a)
            }
            // Decided by a click that raced the timeout (the run has moved on without it), or gone.
            Ok(_) => None,
            // The escalation matters more than the bookkeeping: go on and tell the people.
            Err(e) => {
                tracing::warn!(error = %e, "could not mark the pending approval expired");
                None
            }
        };
        if let Some(a) = expired {
            (incident, _) = update(deps, id, |i| {
                if let Some(d) = i.approval.as_mut().filter(|d| d.approval_id == a.id) {
                    d.status = ApprovalStatus::Expired;
                    d.decided_by = Some(selfheal.clone());
                    d.decided_at = a.decided_at;
                }
                Ok(())
            })
            .await?;
            if let (Some(channel), Some(ts)) = (a.slack_channel.clone(), a.slack_ts.clone()) {
                let why = if state.pointer("/reason/code").and_then(Value::as_str) == Some("approval_timeout") {
                    "nobody approved or rejected the plan in time"
                } else {
                    "the run stopped before a decision"
                };
                let text = format!("Approval expired for {id}: {why}, so it went to a person. Nothing was executed.");
                let at = crate::ports::MessageRef { channel, ts };
                if let Err(e) = deps.chat.update(&at, &messages::plain(&text)).await {
                    tracing::warn!(error = %e, "could not mark the approval message expired");
                }
            }
        }
    }
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
        json!({"reason": reason, "reason_code": code, "pagerduty_note": pd.is_ok(), "slack": slack.is_ok()}),
    )
    .await?;
    emit_metric(incident.service.name.as_str(), &[("Escalated", 1.0, "Count")], &[("Reason", &code)]);
    Ok(json!({"outcome": "escalated"}))
}
