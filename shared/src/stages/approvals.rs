//! Human approval in Slack: the request (task token stored in the store, a short approval id in
//! the buttons) and the interactivity callback (signed, authorised, decided exactly once).

use serde::Deserialize;
use serde_json::{Value, json};

use super::http::{HttpRequest, HttpResponse};
use super::{Deps, audit, audit_decision, cognition, emit_metric, load, messages, update};
use crate::domain::*;
use crate::error::{OrchestratorError, StageError};
use crate::ports::{ChatMessage, Created, DecideOutcome, MessageRef};
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
            let message = messages::approval_message(deps, &incident, &approval.id).await?;
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

/// What the callback still owes the clicker once Slack has its answer: the approval message
/// replaced (buttons removed), or an ephemeral reply, through the click's `response_url`.
/// Slack shows an error unless the click is answered within 3 s, and `response_url` may take
/// longer than that, so the caller sends this after answering: `selfheal serve` in a spawned
/// task, the Lambda function in its after-response layer (`stages::http::AfterResponse`).
#[derive(Debug, Clone)]
pub struct FollowUp {
    response_url: String,
    message: ChatMessage,
    replace_original: bool,
    ephemeral: bool,
}

impl FollowUp {
    fn replace(response_url: &str, message: ChatMessage) -> Self {
        Self { response_url: response_url.to_string(), message, replace_original: true, ephemeral: false }
    }

    fn ephemeral(response_url: &str, text: &str) -> Self {
        Self {
            response_url: response_url.to_string(),
            message: messages::plain(text),
            replace_original: false,
            ephemeral: true,
        }
    }

    /// Send it. The decision is already stored and resumed, so a failure here only leaves the
    /// message as it was: logged, not retried further.
    pub async fn send(self, deps: &Deps) {
        if let Err(e) =
            deps.chat.respond(&self.response_url, &self.message, self.replace_original, self.ephemeral).await
        {
            tracing::warn!(error = %e, "could not answer through response_url");
        }
    }
}

/// The answer to a click, and what to send after it.
#[derive(Debug)]
pub struct Acknowledged {
    pub response: HttpResponse,
    pub follow_up: Option<FollowUp>,
}

impl Acknowledged {
    fn now(response: HttpResponse) -> Self {
        Self { response, follow_up: None }
    }
}

/// `POST /slack/interactions` for callers that cannot run work after answering (tests, the fuzz
/// oracles): the follow-up is sent before returning. Servers use [`acknowledge_interaction`].
pub async fn handle_interaction(deps: &Deps, req: &HttpRequest) -> HttpResponse {
    let ack = acknowledge_interaction(deps, req).await;
    if let Some(follow_up) = ack.follow_up {
        follow_up.send(deps).await;
    }
    ack.response
}

/// `POST /slack/interactions`: verify, decide once, resume the run, and return the answer with
/// the `response_url` follow-up left for after it. Always answers 200 to a valid, signed request
/// (Slack shows an error otherwise); the outcome reaches the clicker through the follow-up.
pub async fn acknowledge_interaction(deps: &Deps, req: &HttpRequest) -> Acknowledged {
    // Before any hashing: what an unsigned request may cost is bounded by this size.
    if req.body.len() > super::intake::MAX_BODY {
        return Acknowledged::now(HttpResponse::message(413, "payload too large"));
    }
    let secrets = deps.secrets.current().await;
    let Some(secret) = secrets.slack_signing_secret.as_ref().map(|s| s.expose_secret().as_bytes()) else {
        // Our misconfiguration, not a bad request: 5xx, never 401 (which reads as "forged").
        tracing::error!(
            missing_secret_key = "slack_signing_secret",
            "no Slack signing secret is configured: put the app's signing secret in the Slack secret; clicks are answered 503"
        );
        return Acknowledged::now(HttpResponse::message(
            503,
            "selfheal cannot verify Slack requests yet: slack_signing_secret is not configured",
        ));
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
        return Acknowledged::now(HttpResponse::message(401, &format!("invalid signature: {e}")));
    }
    let form: Vec<(String, String)> = match serde_urlencoded::from_bytes(&req.body) {
        Ok(f) => f,
        Err(_) => return Acknowledged::now(HttpResponse::message(400, "body is not form-encoded")),
    };
    let Some(payload) = form.iter().find(|(k, _)| k == "payload").map(|(_, v)| v) else {
        return Acknowledged::now(HttpResponse::message(400, "no payload field"));
    };
    let interaction: Interaction = match serde_json::from_str(payload) {
        Ok(i) => i,
        Err(e) => return Acknowledged::now(HttpResponse::message(400, &format!("payload is not an interaction: {e}"))),
    };
    if interaction.kind != "block_actions" {
        return Acknowledged::now(HttpResponse::json(200, json!({"status": "ignored"})));
    }
    let Some(action) = interaction.actions.first() else {
        return Acknowledged::now(HttpResponse::message(400, "no action"));
    };
    let decision = match action.action_id.as_str() {
        "approve" => ApprovalStatus::Approved,
        "reject" => ApprovalStatus::Rejected,
        _ => return Acknowledged::now(HttpResponse::json(200, json!({"status": "ignored"}))),
    };
    let Some(approval_id) = action.value.as_deref().and_then(|v| ApprovalId::parse(v).ok()) else {
        return Acknowledged::now(HttpResponse::message(400, "the button carries no valid approval id"));
    };
    let url = interaction.response_url.as_deref();
    let reply = |text: &str| url.map(|u| FollowUp::ephemeral(u, text));
    let answer = |status: &str| HttpResponse::json(200, json!({ "status": status }));
    match decide(deps, &approval_id, decision, &interaction.user.id).await {
        Ok(Decided::Now { incident, approval }) => {
            let at = deps.clock.now();
            let follow_up = url.map(|u| {
                FollowUp::replace(u, messages::approval_decided(&incident, approval.status, &interaction.user.id, &at))
            });
            Acknowledged {
                response: HttpResponse::json(200, json!({"status": "decided", "decision": approval.status})),
                follow_up,
            }
        }
        Ok(Decided::Before(a)) => {
            let text = format!(
                "This plan was already {:?} by {}.",
                a.status,
                a.decided_by.map_or("someone".to_string(), |u| format!("<@{u}>"))
            )
            .to_lowercase();
            Acknowledged { response: answer("already_decided"), follow_up: reply(&text) }
        }
        Ok(Decided::TooLate { resolved_by_a_person }) => {
            let text = if resolved_by_a_person {
                "This approval has expired: a person resolved the incident in PagerDuty, so nothing will run."
            } else {
                "This approval has expired: nobody decided in time and the incident was escalated to a person. \
                 Nothing will run."
            };
            Acknowledged { response: answer("expired"), follow_up: reply(text) }
        }
        Ok(Decided::NotAllowed) => Acknowledged {
            response: answer("not_allowed"),
            follow_up: reply("You are not allowed to approve selfheal plans."),
        },
        Ok(Decided::Unknown) => {
            Acknowledged { response: answer("unknown"), follow_up: reply("This approval is unknown.") }
        }
        Err(e) => {
            tracing::error!(error = %e, "approval failed");
            Acknowledged::now(HttpResponse::message(500, "temporary failure, try again"))
        }
    }
}

enum Decided {
    Now {
        incident: Box<Incident>,
        approval: Approval,
    },
    Before(Approval),
    /// Timed out (escalated), or stopped because a person resolved the incident.
    TooLate {
        resolved_by_a_person: bool,
    },
    NotAllowed,
    Unknown,
}

/// Who may decide an incident's approval: the service's own approvers when the operator stored
/// some (`selfheal services push`), otherwise the global list (`SELFHEAL_SLACK_APPROVERS`).
/// A service list replaces the global one: a team that names its approvers means only them.
pub async fn approvers_for(deps: &Deps, incident_id: &IncidentId) -> Result<Vec<String>, StageError> {
    let Some(incident) = deps.store.get_incident(incident_id).await? else {
        return Ok(deps.settings.slack.approvers.clone());
    };
    match super::action::stored_settings(deps, &incident).await? {
        Some(s) if !s.approvers.is_empty() => Ok(s.approvers),
        _ => Ok(deps.settings.slack.approvers.clone()),
    }
}

async fn decide(
    deps: &Deps,
    approval_id: &ApprovalId,
    decision: ApprovalStatus,
    user: &str,
) -> Result<Decided, StageError> {
    let pending = deps.store.get_approval(approval_id).await?;
    let allowed = match &pending {
        Some(a) => approvers_for(deps, &a.incident_id).await?,
        None => deps.settings.slack.approvers.clone(),
    };
    if !allowed.iter().any(|a| a == user) {
        if let Some(a) = &pending {
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
        DecideOutcome::AlreadyDecided(a) if a.status == ApprovalStatus::Expired => {
            // Marked expired by the escalation after the timeout, or by intake when a person
            // resolved the incident (decided by "pagerduty").
            let by_pagerduty = a.decided_by.as_ref().is_some_and(|u| u.as_str() == "pagerduty");
            return Ok(Decided::TooLate { resolved_by_a_person: by_pagerduty });
        }
        DecideOutcome::AlreadyDecided(a) => {
            // If the first click's resume failed after the decision was stored, this click
            // completes it; if it succeeded, the spent token makes this a no-op.
            if matches!(a.status, ApprovalStatus::Approved | ApprovalStatus::Rejected) {
                let _ = deps.orchestrator.send_task_success(&a.task_token, &resume_output(&a)).await;
            }
            return Ok(Decided::Before(a));
        }
        DecideOutcome::Expired(_) => return Ok(Decided::TooLate { resolved_by_a_person: false }),
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
    // Counted once: only the click that decided gets here (decide_approval is decide-once).
    let outcome = if approval.status == ApprovalStatus::Approved { "Approved" } else { "Rejected" };
    let waited = (now - approval.created_at).num_milliseconds().max(0) as f64 / 1000.0;
    emit_metric(
        incident.service.name.as_str(),
        &[(outcome, 1.0, "Count"), ("ApprovalLatency", waited, "Seconds")],
        &[],
    );
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
