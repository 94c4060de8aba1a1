//! PagerDuty v3 webhook intake: verify, dedupe, act, answer fast. Never calls Claude, Senso or
//! Coder. Valid deliveries get 2xx; transient failures get 500 so PagerDuty retries (every step
//! is idempotent, and a failed delivery's id is released so the retry is processed).

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
    let outcome = route(deps, &envelope.event).await;
    let settle = match &outcome {
        Ok(_) => KEEP_DELIVERY_SECS,
        Err(_) => -1,
    };
    if let Err(e) = deps.store.settle_webhook(&delivery, now, settle).await {
        tracing::error!(error = %e, "could not settle the webhook id");
    }
    match outcome {
        Ok(what) => accepted(what),
        Err(StageError::InvalidInput(m)) => HttpResponse::message(400, &m),
        Err(e) => {
            tracing::error!(event_type = %envelope.event.event_type, error = %e, "webhook processing failed");
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
    let mut content = str_at(d, "/content").unwrap_or_default().to_string();
    if d.get("trimmed").and_then(Value::as_bool) == Some(true) {
        // The webhook carries a shortened note: fetch the full one.
        let notes = match deps.source.list_notes(&id).await {
            Ok(notes) => notes,
            Err(e) => {
                // Recorded so that an escalation for a missing hypothesis can say why; the 500
                // makes PagerDuty redeliver the webhook.
                audit(deps, &id, "intake", "note_unavailable", json!({"note_id": note_id, "error": e.to_string()}))
                    .await?;
                return Err(e.into());
            }
        };
        content = notes
            .into_iter()
            .find(|n| n.id == note_id)
            .map(|n| n.content)
            .ok_or_else(|| StageError::Transient(format!("note {note_id} not (yet) listed for {id}")))?;
    }
    let parsed = crate::notes::parse_note(&content);
    if parsed.root_cause.is_none() {
        audit(deps, &id, "intake", "progress_note", json!({"note_id": note_id})).await?;
        return Ok("progress_note");
    }
    let note = InvestigatorNote {
        note_id: note_id.clone(),
        author: UserId::parse(author)?,
        content,
        received_at: deps.clock.now(),
    };
    audit(deps, &id, "intake", "hypothesis_received", json!({"note_id": note_id, "author": note.author})).await?;
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
    let Some(incident) = deps.store.get_incident(&id).await? else { return Ok("unknown_incident") };
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
