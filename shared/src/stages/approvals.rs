//! Human approval in Slack: the request (task token stored in the store, a short approval id in
//! the buttons) and the interactivity callback (signed, authorised, decided exactly once).

use serde::Deserialize;
use serde_json::{Value, json};

use super::http::{HttpRequest, HttpResponse};
use super::{Deps, audit, audit_decision, cognition, load, messages, update};
use crate::domain::*;
use crate::error::{OrchestratorError, StageError};
use crate::ports::{Created, DecideOutcome, MessageRef};
use crate::signature;
use secrecy::ExposeSecret;

pub async fn request_approval(deps: &Deps, id: &IncidentId, payload: &Value) -> Result<Value, StageError> {
    let incident = load(deps, id).await?;
    super::ensure_autonomy_allowed(&incident)?;
    let token = super::task_token(payload)?;
    let plan = incident.plan.clone().ok_or_else(|| StageError::InvalidInput("no plan to approve".into()))?;
    let now = deps.clock.now();
    let secrets = deps.secrets.current().await;
    let key = secrets.slack_signing_secret.as_ref().map(|k| k.expose_secret().as_bytes().to_vec());
    let approval = Approval {
        id: ApprovalId::for_plan(key.as_deref().unwrap_or_default(), id, &plan.hash),
        incident_id: id.clone(),
        task_token: token,
        plan_hash: plan.hash.clone(),
        status: ApprovalStatus::Pending,
        created_at: now,
        expires_at: now + chrono::Duration::seconds(deps.settings.timeouts.approval_secs as i64),
        decided_by: None,
        decided_at: None,
        slack_channel: None,
        slack_ts: None,
    };
    let mut existing = None;
    if deps.store.create_approval(&approval).await? == Created::AlreadyExists {
        // The step ran before for this plan (re-invoked after a crash or a retry): the request
        // goes to Slack once, and the new task token takes over from the dead one.
        let current = deps.store.rebind_approval_token(&approval.id, &approval.task_token).await?;
        if matches!(current.status, ApprovalStatus::Approved | ApprovalStatus::Rejected) {
            // Decided while the step was being re-run: resume with the decision as it stands.
            match deps.orchestrator.send_task_success(&current.task_token, &resume_output(&current)).await {
                Ok(()) | Err(OrchestratorError::TaskClosed) => {}
                Err(e) => return Err(e.into()),
            }
            return Ok(json!({"posted": false, "approval_id": current.id, "already": "decided"}));
        }
        existing = current.slack_channel.clone().zip(current.slack_ts.clone());
        if existing.is_none() {
            // The last run may have died between Slack accepting the post and the store
            // recording it: look before posting again. Reading back needs a history scope; when
            // it fails, posting again (same approval id, decided once) beats staying silent.
            match deps.chat.find_posted(current.created_at, &format!("approval-{}", current.id)).await {
                Ok(Some(found)) => {
                    deps.store.set_approval_message(&current.id, &found.channel, &found.ts).await?;
                    existing = Some((found.channel, found.ts));
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "could not read back the approval channel; posting again"),
            }
        }
    }
    let posted = match existing {
        Some((channel, ts)) => MessageRef { channel, ts },
        None => {
            let script = cognition::planned_script(deps, &incident).await?.and_then(Result::ok);
            let message = messages::approval_request(&incident, &approval.id, script.as_deref());
            let posted = deps.chat.post(&message).await?;
            deps.store.set_approval_message(&approval.id, &posted.channel, &posted.ts).await?;
            posted
        }
    };
    update(deps, id, |i| {
        i.approval = Some(ApprovalDecision {
            approval_id: approval.id.clone(),
            status: ApprovalStatus::Pending,
            decided_by: None,
            decided_at: None,
            plan_hash: plan.hash.clone(),
        });
        i.stage = "request_approval".into();
        Ok(())
    })
    .await?;
    audit(
        deps,
        id,
        "approval",
        "approval_requested",
        json!({"approval_id": approval.id, "plan_hash": plan.hash, "channel": posted.channel, "ts": posted.ts}),
    )
    .await?;
    Ok(json!({"posted": true, "approval_id": approval.id}))
}

pub async fn shadow_report(deps: &Deps, id: &IncidentId) -> Result<Value, StageError> {
    let incident = load(deps, id).await?;
    let script = cognition::planned_script(deps, &incident).await?.and_then(Result::ok);
    deps.chat.post(&messages::shadow_report(&incident, script.as_deref())).await?;
    update(deps, id, |i| {
        i.outcome = Some(Outcome::Shadowed);
        i.stage = "shadow_report".into();
        Ok(())
    })
    .await?;
    audit(
        deps,
        id,
        "approval",
        "shadow_reported",
        json!({"would_route": incident.decision.as_ref().map(|d| d.rule.clone())}),
    )
    .await?;
    Ok(json!({"posted": true}))
}

#[derive(Debug, Deserialize)]
struct Interaction {
    #[serde(rename = "type")]
    kind: String,
    user: SlackUser,
    #[serde(default)]
    actions: Vec<SlackAction>,
    response_url: Option<String>,
}

#[derive(Debug, Deserialize)]
struct SlackUser {
    id: String,
}

#[derive(Debug, Deserialize)]
struct SlackAction {
    action_id: String,
    value: Option<String>,
}

/// `POST /slack/interactions`. Always answers 200 to a valid, signed request (Slack shows an
/// error otherwise); the outcome goes back to the clicker through `response_url`.
pub async fn handle_interaction(deps: &Deps, req: &HttpRequest) -> HttpResponse {
    let secrets = deps.secrets.current().await;
    let Some(secret) = secrets.slack_signing_secret.as_ref().map(|s| s.expose_secret().as_bytes()) else {
        // Our misconfiguration, not a bad request: 5xx, never 401 (which reads as "forged").
        tracing::error!(
            missing_secret_key = "slack_signing_secret",
            "no Slack signing secret is configured: put the app's signing secret in the Slack secret; clicks are answered 503"
        );
        return HttpResponse::message(
            503,
            "selfheal cannot verify Slack requests yet: slack_signing_secret is not configured",
        );
    };
    // Slack's replay window is about real time, whatever the engine's clock does.
    let now = chrono::Utc::now().timestamp();
    if let Err(e) = signature::verify_slack(
        secret,
        req.header("x-slack-request-timestamp"),
        req.header("x-slack-signature"),
        &req.body,
        now,
    ) {
        tracing::warn!(reason = %e, "slack signature refused");
        return HttpResponse::message(401, &format!("invalid signature: {e}"));
    }
    let form: Vec<(String, String)> = match serde_urlencoded::from_bytes(&req.body) {
        Ok(f) => f,
        Err(_) => return HttpResponse::message(400, "body is not form-encoded"),
    };
    let Some(payload) = form.iter().find(|(k, _)| k == "payload").map(|(_, v)| v) else {
        return HttpResponse::message(400, "no payload field");
    };
    let interaction: Interaction = match serde_json::from_str(payload) {
        Ok(i) => i,
        Err(e) => return HttpResponse::message(400, &format!("payload is not an interaction: {e}")),
    };
    if interaction.kind != "block_actions" {
        return HttpResponse::json(200, json!({"status": "ignored"}));
    }
    let Some(action) = interaction.actions.first() else { return HttpResponse::message(400, "no action") };
    let decision = match action.action_id.as_str() {
        "approve" => ApprovalStatus::Approved,
        "reject" => ApprovalStatus::Rejected,
        _ => return HttpResponse::json(200, json!({"status": "ignored"})),
    };
    let Some(approval_id) = action.value.as_deref().and_then(|v| ApprovalId::parse(v).ok()) else {
        return HttpResponse::message(400, "the button carries no valid approval id");
    };
    let url = interaction.response_url.as_deref();
    match decide(deps, &approval_id, decision, &interaction.user.id).await {
        Ok(Decided::Now { incident, approval }) => {
            let at = deps.clock.now().format("%Y-%m-%d %H:%M:%S UTC").to_string();
            if let Some(url) = &interaction.response_url {
                let msg = messages::approval_decided(&incident, approval.status, &interaction.user.id, &at);
                if let Err(e) = deps.chat.respond(url, &msg, true, false).await {
                    tracing::warn!(error = %e, "could not update the approval message");
                }
            }
            HttpResponse::json(200, json!({"status": "decided", "decision": approval.status}))
        }
        Ok(Decided::Before(a)) => {
            reply(
                deps,
                url,
                format!(
                    "This plan was already {:?} by {}.",
                    a.status,
                    a.decided_by.map_or("someone".to_string(), |u| format!("<@{u}>"))
                )
                .to_lowercase(),
            )
            .await;
            HttpResponse::json(200, json!({"status": "already_decided"}))
        }
        Ok(Decided::TooLate) => {
            reply(deps, url, "This approval has expired; the incident was escalated.".into()).await;
            HttpResponse::json(200, json!({"status": "expired"}))
        }
        Ok(Decided::NotAllowed) => {
            reply(deps, url, "You are not allowed to approve selfheal plans.".into()).await;
            HttpResponse::json(200, json!({"status": "not_allowed"}))
        }
        Ok(Decided::Unknown) => {
            reply(deps, url, "This approval is unknown.".into()).await;
            HttpResponse::json(200, json!({"status": "unknown"}))
        }
        Err(e) => {
            tracing::error!(error = %e, "approval failed");
            HttpResponse::message(500, "temporary failure, try again")
        }
    }
}

/// An ephemeral answer to the clicker only.
async fn reply(deps: &Deps, url: Option<&str>, text: String) {
    if let Some(url) = url
        && let Err(e) = deps.chat.respond(url, &messages::plain(&text), false, true).await
    {
        tracing::warn!(error = %e, "could not answer through response_url");
    }
}

enum Decided {
    Now { incident: Box<Incident>, approval: Approval },
    Before(Approval),
    TooLate,
    NotAllowed,
    Unknown,
}

async fn decide(
    deps: &Deps,
    approval_id: &ApprovalId,
    decision: ApprovalStatus,
    user: &str,
) -> Result<Decided, StageError> {
    if !deps.settings.slack.approvers.iter().any(|a| a == user) {
        if let Some(a) = deps.store.get_approval(approval_id).await? {
            audit(
                deps,
                &a.incident_id,
                &format!("slack:{user}"),
                "approval_refused",
                json!({"reason": "not an approver", "approval_id": approval_id}),
            )
            .await?;
        }
        return Ok(Decided::NotAllowed);
    }
    let who = UserId::parse(user)?;
    let now = deps.clock.now();
    let approval = match deps.store.decide_approval(approval_id, decision, &who, now).await? {
        DecideOutcome::Decided(a) => a,
        DecideOutcome::AlreadyDecided(a) => {
            // If the first click's resume failed after the decision was stored, this click
            // completes it; if it succeeded, the spent token makes this a no-op.
            if matches!(a.status, ApprovalStatus::Approved | ApprovalStatus::Rejected) {
                let _ = deps.orchestrator.send_task_success(&a.task_token, &resume_output(&a)).await;
            }
            return Ok(Decided::Before(a));
        }
        DecideOutcome::Expired(_) => return Ok(Decided::TooLate),
        DecideOutcome::NotFound => return Ok(Decided::Unknown),
    };
    let id = approval.incident_id.clone();
    // The decision is bound to the plan hash the approver saw.
    let (incident, _) = update(deps, &id, |i| {
        i.approval = Some(ApprovalDecision {
            approval_id: approval.id.clone(),
            status: approval.status,
            decided_by: Some(who.clone()),
            decided_at: Some(now),
            plan_hash: approval.plan_hash.clone(),
        });
        Ok(())
    })
    .await?;
    let detail = json!({"approval_id": approval.id, "decision": approval.status, "plan_hash": approval.plan_hash});
    audit_decision(deps, &id, &format!("slack:{user}"), "approval_decided", detail.clone(), &detail).await?;
    match deps.orchestrator.send_task_success(&approval.task_token, &resume_output(&approval)).await {
        // The task timed out or was already answered: the run has moved on without us.
        Ok(()) | Err(OrchestratorError::TaskClosed) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Decided::Now { incident: Box::new(incident), approval })
}

/// What the RequestApproval task receives.
fn resume_output(a: &Approval) -> Value {
    json!({
        "status": if a.status == ApprovalStatus::Approved { "approved" } else { "rejected" },
        "decided_by": a.decided_by,
        "approval_id": a.id,
        "plan_hash": a.plan_hash,
    })
}
