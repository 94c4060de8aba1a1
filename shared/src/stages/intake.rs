//! PagerDuty v3 webhook intake: verify, dedupe, act, answer fast. Never calls Claude, Senso,
//! Coder or PagerDuty's REST API: PagerDuty waits 5 s for the answer. Valid deliveries get 2xx;
//! transient failures get 500 so PagerDuty retries (every step is idempotent, and a failed
//! delivery's id is released so the retry is processed).

use serde::Deserialize;
use serde_json::{Value, json};

use super::http::{HttpRequest, HttpResponse};
use super::{Deps, audit, execution_input, update};
use crate::domain::*;
use crate::error::{OrchestratorError, StageError};
use crate::ports::{Created, Dedupe, HandOff, ServiceEvent};
use crate::signature;

/// PagerDuty guarantees delivery up to 56 KB; anything over 256 KB is not a PagerDuty webhook.
pub const MAX_BODY: usize = 256 * 1024;
/// How long a processed delivery id is remembered (PagerDuty retries for up to 48 h).
const KEEP_DELIVERY_SECS: i64 = 7 * 24 * 3600;
/// How long an in-flight delivery blocks its duplicates (a crash releases it after this).
/// API Gateway stops waiting for an integration after 29 s, so no delivery is legitimately still
/// being handled after 30 s; its retries are answered 503 until then, and processed after.
const IN_FLIGHT_SECS: i64 = 30;

#[derive(Debug, Deserialize)]
struct Envelope {
    event: Event,
}

#[derive(Debug, Deserialize)]
struct Event {
    id: String,
    event_type: String,
    #[serde(default)]
    agent: Option<Reference>,
    #[serde(default)]
    data: Value,
}

#[derive(Debug, Deserialize)]
struct Reference {
    id: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// What intake did with a delivery (also the 2xx body).
fn accepted(what: &str) -> HttpResponse {
    HttpResponse::json(202, json!({ "status": what }))
}

/// 503 for a delivery that cannot be verified because no webhook secret is configured.
fn not_configured() -> HttpResponse {
    tracing::error!(
        missing_secret_key = "pagerduty_webhook_secrets",
        "no PagerDuty webhook secret is configured: put the subscription's secret in the PagerDuty secret; deliveries are answered 503 so PagerDuty retries them"
    );
    super::emit_metric("intake", &[("WebhookSecretMissing", 1.0, "Count")], &[]);
    HttpResponse::message(
        503,
        "selfheal cannot verify webhooks yet: pagerduty_webhook_secrets is not configured; retry later",
    )
}

pub async fn handle_webhook(deps: &Deps, req: &HttpRequest) -> HttpResponse {
    if req.body.len() > MAX_BODY {
        return HttpResponse::message(413, "payload too large");
    }
    let secrets = deps.secrets.current().await;
    let keys = secrets.webhook_secret_bytes();
    // Our own misconfiguration (e.g. a fresh stack whose secret is still the placeholder) must
    // never be answered 4xx: PagerDuty drops 4xx deliveries and disables the subscription after
    // three. A 5xx is retried for 48 h, long enough for someone to fill in the secret.
    if keys.is_empty() {
        return not_configured();
    }
    match signature::verify_pagerduty(&keys, req.header("x-pagerduty-signature"), &req.body) {
        Ok(()) => {}
        Err(signature::SignatureError::NoSecret) => return not_configured(),
        Err(e) => {
            tracing::warn!(reason = %e, "webhook signature refused");
            // Alarmed on: a rotated or wrong secret must page someone, not go quiet.
            super::emit_metric("intake", &[("SignatureRejected", 1.0, "Count")], &[]);
            return HttpResponse::message(401, &format!("invalid signature: {e}"));
        }
    }
    let envelope: Envelope = match serde_json::from_slice(&req.body) {
        Ok(e) => e,
        Err(e) => return HttpResponse::message(400, &format!("malformed webhook envelope: {e}")),
    };
    let delivery = req.header("x-webhook-id").unwrap_or(&envelope.event.id).to_string();
    let Ok(delivery) = WebhookId::parse(delivery) else {
        return HttpResponse::message(400, "invalid webhook id");
    };
    let now = deps.clock.now();
    let payload_hash = crate::sha256_hex(&req.body);
    match deps.store.record_webhook(&delivery, &payload_hash, now, IN_FLIGHT_SECS).await {
        Ok(Dedupe::First) => {}
        Ok(Dedupe::Duplicate) => return accepted("duplicate"),
        Ok(Dedupe::InProgress) => {
            // Never 2xx: if the first attempt dies (a crash), this answer is what keeps PagerDuty
            // redelivering until the id is released.
            tracing::info!(webhook_id = %delivery, "delivery still in progress: asked to retry");
            return HttpResponse::message(503, "this delivery is still being processed, retry later");
        }
        Ok(Dedupe::Conflict) => {
            tracing::warn!(webhook_id = %delivery, "same webhook id with a different payload: refused");
            return HttpResponse::message(409, "webhook id already used for a different payload");
        }
        Err(e) => {
            tracing::error!(error = %e, "dedupe failed");
            return HttpResponse::message(500, "temporary failure, retry");
        }
    }
    // `X-Webhook-Id` is not signed: the same signed body replayed under a new id must still be
    // a duplicate. `event.id` is inside the signed body, so it is claimed as well.
    let Ok(event_key) = WebhookId::parse(format!("event:{}", envelope.event.id)) else {
        let _ = deps.store.settle_webhook(&delivery, now, -1).await;
        return HttpResponse::message(400, "invalid event id");
    };
    let early = match deps.store.record_webhook(&event_key, &payload_hash, now, IN_FLIGHT_SECS).await {
        Ok(Dedupe::First) => None,
        Ok(Dedupe::Duplicate) => Some((KEEP_DELIVERY_SECS, accepted("duplicate"))),
        Ok(Dedupe::InProgress) => {
            Some((-1, HttpResponse::message(503, "this event is still being processed, retry later")))
        }
        Ok(Dedupe::Conflict) => {
            tracing::warn!(webhook_id = %delivery, event_id = %event_key, "same event id with a different payload: refused");
            Some((KEEP_DELIVERY_SECS, HttpResponse::message(409, "event id already used for a different payload")))
        }
        Err(e) => {
            tracing::error!(error = %e, "dedupe failed");
            Some((-1, HttpResponse::message(500, "temporary failure, retry")))
        }
    };
    if let Some((keep, answer)) = early {
        if keep > 0 {
            tracing::info!(webhook_id = %delivery, event_id = %event_key, "event already seen under another delivery id");
        }
        if let Err(e) = deps.store.settle_webhook(&delivery, now, keep).await {
            tracing::error!(error = %e, "could not settle the webhook id");
        }
        return answer;
    }
    let outcome = route(deps, &envelope.event).await;
    let settle = match &outcome {
        Ok(_) => KEEP_DELIVERY_SECS,
        Err(_) => -1,
    };
    for key in [&delivery, &event_key] {
        if let Err(e) = deps.store.settle_webhook(key, now, settle).await {
            tracing::error!(error = %e, "could not settle the webhook id");
        }
    }
    match outcome {
        Ok(what) => accepted(what),
        Err(e) => failure_response(&envelope.event.event_type, e),
    }
}

/// The answer to a verified delivery we could not process, by what PagerDuty will do with it:
/// a 4xx is dropped for good (three in a row disable the subscription), a 5xx is redelivered
/// for 48 h. Only a delivery that can never succeed gets a 4xx; everything on our side —
/// the store, the orchestrator, a permission or setting we lack — is a 5xx, so the deliveries
/// wait for the fix instead of being lost.
fn failure_response(event_type: &str, e: StageError) -> HttpResponse {
    match e {
        StageError::InvalidInput(m) => {
            tracing::warn!(event_type, reason = %m, "webhook refused: the delivery itself is invalid");
            HttpResponse::message(400, &m)
        }
        e => {
            tracing::error!(event_type, error = %e, kind = e.error_name(), "webhook processing failed");
            HttpResponse::message(500, "temporary failure, retry")
        }
    }
}

async fn route(deps: &Deps, event: &Event) -> Result<&'static str, StageError> {
    match event.event_type.as_str() {
        "pagey.ping" => Ok("pong"),
        "incident.triggered" => triggered(deps, event).await,
        "incident.annotated" => annotated(deps, event).await,
        "incident.resolved" => resolved(deps, event).await,
        "incident.reopened" => reopened(deps, event).await,
        _ => Ok("ignored"),
    }
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

async fn triggered(deps: &Deps, event: &Event) -> Result<&'static str, StageError> {
    let d = &event.data;
    let id =
        IncidentId::parse(str_at(d, "/id").ok_or_else(|| StageError::InvalidInput("incident without id".into()))?)?;
    let service = ServiceRef {
        id: ServiceId::parse(
            str_at(d, "/service/id").ok_or_else(|| StageError::InvalidInput("incident without service".into()))?,
        )?,
        name: ServiceName::parse(str_at(d, "/service/summary").unwrap_or("unknown service"))
            .unwrap_or_else(|_| ServiceName::parse("unknown service").unwrap_or_else(|_| unreachable!())),
    };
    let urgency = if str_at(d, "/urgency") == Some("low") { Urgency::Low } else { Urgency::High };
    let title: String = str_at(d, "/title").unwrap_or("(untitled)").chars().take(1024).collect();
    let now = deps.clock.now();
    let mut incident = Incident::new(id.clone(), title, service.clone(), urgency, now);
    incident.number = d.get("number").and_then(Value::as_u64);
    incident.html_url = str_at(d, "/html_url").map(str::to_string);
    // A PagerDuty object id (alphanumeric); anything else is not one and is dropped.
    incident.escalation_policy_id = str_at(d, "/escalation_policy/id")
        .filter(|ep| !ep.is_empty() && ep.len() <= 32 && ep.chars().all(|c| c.is_ascii_alphanumeric()))
        .map(str::to_string);
    incident.alert_key = str_at(d, "/incident_key").map(|k| k.chars().take(255).collect());
    let resolved_early = deps.store.resolved_early(&id).await?;
    if resolved_early.is_some() {
        incident.status = IncidentStatus::ResolvedByHuman;
        incident.outcome = Some(Outcome::ResolvedByHuman);
    }
    let created = deps.store.create_incident(&incident).await?;
    if created == Created::New {
        audit(deps, &id, "pagerduty", "incident_created", json!({"title": incident.title, "service": service.id}))
            .await?;
        deps.store
            .record_service_event(&ServiceEvent {
                service: service.id.clone(),
                at: now,
                incident_id: id.clone(),
                kind: "triggered".into(),
            })
            .await?;
    }
    if let Some(at) = resolved_early {
        // Already resolved in PagerDuty: nothing to fix, no execution.
        if created == Created::New {
            audit(deps, &id, "pagerduty", "resolved_before_triggered", json!({"resolved_at": at})).await?;
        }
        return Ok("already_resolved");
    }
    // Every time, not only on create: a delivery that failed after the create is redelivered,
    // and marking a re-fire twice changes nothing.
    super::closing::refire_on_trigger(deps, &incident).await?;
    // Always (re)issue StartExecution: after a crash between create and start this starts it;
    // otherwise the same name with identical input is a no-op.
    let stored = super::load(deps, &id).await?;
    let name = execution_name(&id, "incident");
    match deps.orchestrator.start_execution(&name, &execution_input(&deps.settings, &stored)).await {
        Ok(exec) => {
            if stored.execution_id.as_deref() != Some(exec.execution_id.as_str()) {
                update(deps, &id, |i| {
                    i.execution_id = Some(exec.execution_id.clone());
                    Ok(())
                })
                .await?;
                audit(deps, &id, "intake", "execution_started", json!({"execution": exec.execution_id})).await?;
            }
            Ok(if created == Created::New { "incident_created" } else { "duplicate_incident" })
        }
        Err(OrchestratorError::ExecutionAlreadyExists(_)) => Ok("duplicate_incident"),
        Err(e) => Err(e.into()),
    }
}

async fn annotated(deps: &Deps, event: &Event) -> Result<&'static str, StageError> {
    let d = &event.data;
    let author = event.agent.as_ref().and_then(|a| a.id.clone()).unwrap_or_default();
    let Some(incident_raw) = str_at(d, "/incident/id") else {
        return Err(StageError::InvalidInput("note without incident".into()));
    };
    let id = IncidentId::parse(incident_raw)?;
    if !deps.settings.pagerduty.investigator_ids.contains(&author) {
        if deps.store.get_incident(&id).await?.is_some() {
            audit(
                deps,
                &id,
                "intake",
                "note_ignored",
                json!({"author": author, "reason": "not a configured investigator"}),
            )
            .await?;
        }
        return Ok("note_ignored");
    }
    if deps.store.get_incident(&id).await?.is_none() {
        return Ok("unknown_incident");
    }
    let note_id = NoteId::parse(str_at(d, "/id").ok_or_else(|| StageError::InvalidInput("note without id".into()))?)?;
    let content = str_at(d, "/content").unwrap_or_default().to_string();
    // A trimmed note is handed off as it came: PagerDuty gives us 5 s to answer, and its REST
    // API may take longer or refuse us (a revoked token would turn into 48 h of redeliveries).
    // ParseHypothesis fetches the full note with the state machine's retries, and escalates
    // with the reason when it cannot. Without the full text a trimmed note cannot be told from
    // a progress note, so an investigator's trimmed note counts as its hypothesis.
    let trimmed = d.get("trimmed").and_then(Value::as_bool) == Some(true);
    // A note that states a confidence but no root cause the rules can read is handed off when
    // the model fallback may read it; otherwise it is progress (keep waiting).
    let rules = crate::notes::parse_note(&content);
    let finding = rules.root_cause.is_some() || (deps.settings.notes.model_fallback && rules.confidence.is_some());
    if !trimmed && !finding {
        audit(deps, &id, "intake", "progress_note", json!({"note_id": note_id})).await?;
        return Ok("progress_note");
    }
    let note = InvestigatorNote {
        note_id: note_id.clone(),
        author: UserId::parse(author)?,
        content,
        received_at: deps.clock.now(),
    };
    // `trimmed` here is what tells ParseHypothesis to fetch the full note.
    audit(
        deps,
        &id,
        "intake",
        "hypothesis_received",
        json!({"note_id": note_id, "author": note.author, "trimmed": trimmed}),
    )
    .await?;
    match deps.store.offer_note(&id, &note).await? {
        HandOff::TokenWaiting(token) => {
            match deps.orchestrator.send_task_success(&token, &json!({"note_id": note_id, "received": true})).await {
                Ok(()) | Err(OrchestratorError::TaskClosed) => Ok("hypothesis_resumed"),
                Err(e) => Err(e.into()),
            }
        }
        HandOff::Stored | HandOff::NoteWaiting(_) => Ok("hypothesis_stored"),
        HandOff::AlreadyResumed => Ok("hypothesis_already_received"),
    }
}

async fn resolved(deps: &Deps, event: &Event) -> Result<&'static str, StageError> {
    let Some(raw) = str_at(&event.data, "/id") else {
        return Err(StageError::InvalidInput("incident without id".into()));
    };
    let id = IncidentId::parse(raw)?;
    let Some(incident) = deps.store.get_incident(&id).await? else {
        // Resolved before its trigger reached us (deliveries can overtake each other across
        // retries): remember it past PagerDuty's 48 h retry horizon, so the trigger, whenever
        // it comes, starts nothing.
        deps.store.remember_resolved(&id, deps.clock.now(), KEEP_DELIVERY_SECS).await?;
        return Ok("resolved_before_triggered");
    };
    // Our own resolution (outcome already recorded) or a run that already executed: nothing to stop.
    if incident.outcome.is_some() || incident.remediation.is_some() {
        return Ok("ignored");
    }
    let by = event.agent.as_ref().and_then(|a| a.id.clone()).unwrap_or_else(|| "unknown".into());
    update(deps, &id, |i| {
        if i.outcome.is_none() && i.remediation.is_none() {
            i.status = IncidentStatus::ResolvedByHuman;
        }
        Ok(())
    })
    .await?;
    audit(
        deps,
        &id,
        &format!("pagerduty:{by}"),
        "resolved_by_human",
        json!({"agent_type": event.agent.as_ref().and_then(|a| a.kind.clone())}),
    )
    .await?;
    // Wake whatever the execution waits on, so it stops now instead of at a timeout.
    if let Some(token) = deps.store.waiting_token(&id).await? {
        let _ = deps.orchestrator.send_task_failure(&token, "Stopped", "a person resolved the incident").await;
    }
    if let Some(approval) = incident.approval.as_ref().filter(|a| a.status == ApprovalStatus::Pending) {
        let who = UserId::parse("pagerduty").unwrap_or_else(|_| unreachable!());
        if let crate::ports::DecideOutcome::Decided(a) =
            deps.store.decide_approval(&approval.approval_id, ApprovalStatus::Expired, &who, deps.clock.now()).await?
        {
            let _ =
                deps.orchestrator.send_task_failure(&a.task_token, "Stopped", "a person resolved the incident").await;
        }
    }
    Ok("autonomy_stopped")
}

async fn reopened(deps: &Deps, event: &Event) -> Result<&'static str, StageError> {
    let Some(raw) = str_at(&event.data, "/id") else {
        return Err(StageError::InvalidInput("incident without id".into()));
    };
    let id = IncidentId::parse(raw)?;
    let Some(incident) = deps.store.get_incident(&id).await? else { return Ok("unknown_incident") };
    let now = deps.clock.now();
    deps.store
        .record_service_event(&ServiceEvent {
            service: incident.service.id.clone(),
            at: now,
            incident_id: id.clone(),
            kind: "reopened".into(),
        })
        .await?;
    audit(deps, &id, "pagerduty", "incident_reopened", json!({})).await?;
    // After the stability window the verdict was already written: correct it now.
    if incident.effectiveness == Some(Effectiveness::Effective) {
        update(deps, &id, |i| {
            i.effectiveness = Some(Effectiveness::Ineffective);
            Ok(())
        })
        .await?;
        super::closing::record_effectiveness(deps, &incident, Effectiveness::Ineffective).await?;
    }
    Ok("reopen_recorded")
}
