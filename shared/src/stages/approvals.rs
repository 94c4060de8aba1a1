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
        // A click may have decided this approval already (between the post and here): keep it.
        if i.approval.as_ref().is_some_and(|a| a.approval_id == approval.id && a.status != ApprovalStatus::Pending) {
            i.stage = "request_approval".into();
            return Ok(());
        }
        i.approval = Some(ApprovalDecision {
            approval_id: approval.id.clone(),
            status: ApprovalStatus::Pending,
            decided_by: None,
            decided_at: None,
            plan_hash: plan.hash.clone(),
            reason: None,
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
    trigger_id: Option<String>,
    /// A dialog's submission (`view_submission`).
    view: Option<SubmittedView>,
}

#[derive(Debug, Deserialize)]
struct SubmittedView {
    #[serde(default)]
    callback_id: String,
    #[serde(default)]
    private_metadata: String,
    #[serde(default)]
    state: Value,
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
pub enum FollowUp {
    /// Through the click's `response_url`.
    Respond { response_url: String, message: ChatMessage, replace_original: bool, ephemeral: bool },
    /// Open a dialog for the clicker (its `trigger_id` lives 3 s: right after the answer); if
    /// Slack will not, say so through the click's `response_url` (`fallback`).
    OpenView { trigger_id: String, view: Value, fallback: Option<String> },
    /// Replace the approval message itself (a dialog's submission has no `response_url`).
    Update { at: MessageRef, message: ChatMessage },
}

impl FollowUp {
    fn replace(response_url: &str, message: ChatMessage) -> Self {
        Self::Respond { response_url: response_url.to_string(), message, replace_original: true, ephemeral: false }
    }

    fn ephemeral(response_url: &str, text: &str) -> Self {
        Self::Respond {
            response_url: response_url.to_string(),
            message: messages::plain(text),
            replace_original: false,
            ephemeral: true,
        }
    }

    /// Send it. The decision is already stored and resumed, so a failure here only leaves the
    /// message as it was: logged, not retried further.
    pub async fn send(self, deps: &Deps) {
        let sent = match &self {
            FollowUp::Respond { response_url, message, replace_original, ephemeral } => {
                deps.chat.respond(response_url, message, *replace_original, *ephemeral).await
            }
            FollowUp::OpenView { trigger_id, view, fallback } => {
                let opened = deps.chat.open_view(trigger_id, view).await;
                if let (Err(e), Some(url)) = (&opened, fallback) {
                    let text = format!(
                        "Could not open the dialog ({}); nothing was decided. Use Reject, or try again.",
                        messages::flat(&e.to_string())
                    );
                    let _ = deps.chat.respond(url, &messages::plain(&text), false, true).await;
                }
                opened
            }
            FollowUp::Update { at, message } => deps.chat.update(at, message).await,
        };
        if let Err(e) = sent {
            tracing::warn!(error = %e, "could not send the answer after the acknowledgement");
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
    match interaction.kind.as_str() {
        "block_actions" => {}
        "view_submission" => return submit_reason(deps, &interaction).await,
        _ => return Acknowledged::now(HttpResponse::json(200, json!({"status": "ignored"}))),
    }
    let Some(action) = interaction.actions.first() else {
        return Acknowledged::now(HttpResponse::message(400, "no action"));
    };
    let decision = match action.action_id.as_str() {
        "approve" => ApprovalStatus::Approved,
        "reject" | messages::REJECT_WITH_REASON => ApprovalStatus::Rejected,
        _ => return Acknowledged::now(HttpResponse::json(200, json!({"status": "ignored"}))),
    };
    let Some(approval_id) = action.value.as_deref().and_then(|v| ApprovalId::parse(v).ok()) else {
        return Acknowledged::now(HttpResponse::message(400, "the button carries no valid approval id"));
    };
    let url = interaction.response_url.as_deref();
    let reply = |text: &str| url.map(|u| FollowUp::ephemeral(u, text));
    let answer = |status: &str| HttpResponse::json(200, json!({ "status": status }));
    if action.action_id == messages::REJECT_WITH_REASON {
        return ask_reason(deps, &interaction, &approval_id).await;
    }
    match decide(deps, &approval_id, decision, &interaction.user.id, None).await {
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
    Ok(approval_rights(deps, incident_id).await?.approvers)
}

/// Who may decide, read once per click: the approvers, and the escalation policy whose
/// first-level on-call may approve too (when the service's settings say so and it is known).
struct ApprovalRights {
    approvers: Vec<String>,
    oncall_policy: Option<String>,
}

async fn approval_rights(deps: &Deps, incident_id: &IncidentId) -> Result<ApprovalRights, StageError> {
    let global = || deps.settings.slack.approvers.clone();
    let Some(incident) = deps.store.get_incident(incident_id).await? else {
        return Ok(ApprovalRights { approvers: global(), oncall_policy: None });
    };
    let settings = super::action::stored_settings(deps, &incident).await?;
    let approvers = settings.as_ref().map(|s| s.approvers.clone()).filter(|a| !a.is_empty()).unwrap_or_else(global);
    let oncall_policy = incident.escalation_policy_id.filter(|_| settings.is_some_and(|s| s.oncall_may_approve));
    Ok(ApprovalRights { approvers, oncall_policy })
}

async fn decide(
    deps: &Deps,
    approval_id: &ApprovalId,
    decision: ApprovalStatus,
    user: &str,
    reason: Option<String>,
) -> Result<Decided, StageError> {
    let pending = deps.store.get_approval(approval_id).await?;
    if !may_decide(deps, pending.as_ref(), user).await? {
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
            // The click that decided may have died after storing the decision and before
            // binding it to the incident or resuming the run (a crash, a lost connection): this
            // click completes both, as the decider would have. Once complete, both are no-ops
            // (the binding is unchanged, the spent token refuses a second resume).
            if matches!(a.status, ApprovalStatus::Approved | ApprovalStatus::Rejected) {
                let decider = a.decided_by.clone().unwrap_or_else(|| who.clone());
                bind_decision(deps, &a, &decider, a.decided_at.unwrap_or(now), None, Binding::Repair).await?;
                let _ = deps.orchestrator.send_task_success(&a.task_token, &resume_output(&a)).await;
            }
            return Ok(Decided::Before(a));
        }
        DecideOutcome::Expired(_) => return Ok(Decided::TooLate { resolved_by_a_person: false }),
        DecideOutcome::NotFound => return Ok(Decided::Unknown),
    };
    let incident = bind_decision(deps, &approval, &who, now, reason, Binding::Decided).await?;
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

/// Why a decision is being bound to its incident.
#[derive(Clone, Copy, PartialEq)]
enum Binding {
    /// The click that decided.
    Decided,
    /// A later click completing what a decider's click did not finish: only while the incident
    /// still waits on this approval (or on none), never over a newer one.
    Repair,
}

/// Bind a stored decision to its incident (the plan hash the approver saw, which the execution
/// gate checks) and audit it, once: when the incident already carries this decision, nothing
/// is written.
async fn bind_decision(
    deps: &Deps,
    approval: &Approval,
    who: &UserId,
    at: chrono::DateTime<chrono::Utc>,
    reason: Option<String>,
    binding: Binding,
) -> Result<Incident, StageError> {
    let id = approval.incident_id.clone();
    let (incident, newly_bound) = update(deps, &id, |i| {
        let bound = i.approval.as_ref().is_some_and(|d| d.approval_id == approval.id && d.status == approval.status);
        let moved_on = binding == Binding::Repair && i.approval.as_ref().is_some_and(|d| d.approval_id != approval.id);
        if !bound && !moved_on {
            i.approval = Some(ApprovalDecision {
                approval_id: approval.id.clone(),
                status: approval.status,
                decided_by: Some(who.clone()),
                decided_at: Some(at),
                plan_hash: approval.plan_hash.clone(),
                reason: reason.clone(),
            });
        }
        Ok(!bound && !moved_on)
    })
    .await?;
    if newly_bound {
        let mut detail =
            json!({"approval_id": approval.id, "decision": approval.status, "plan_hash": approval.plan_hash});
        if let Some(reason) = &reason {
            detail["reason"] = json!(reason);
        }
        audit_decision(deps, &id, &format!("slack:{who}"), "approval_decided", detail.clone(), &detail).await?;
    }
    Ok(incident)
}

/// May `user` decide `pending`: one of its incident's approvers, or (where the service allows it)
/// its on-call? A refusal is audited on the incident.
async fn may_decide(deps: &Deps, pending: Option<&Approval>, user: &str) -> Result<bool, StageError> {
    let Some(a) = pending else { return Ok(deps.settings.slack.approvers.iter().any(|u| u == user)) };
    let rights = approval_rights(deps, &a.incident_id).await?;
    if rights.approvers.iter().any(|u| u == user) {
        return Ok(true);
    }
    if let Some(policy) = &rights.oncall_policy
        && oncall_may_approve(deps, a, policy, user).await?
    {
        return Ok(true);
    }
    refuse(deps, a, user).await?;
    Ok(false)
}

/// Audit that `user`, not an approver, tried to decide `approval`.
async fn refuse(deps: &Deps, approval: &Approval, user: &str) -> Result<(), StageError> {
    audit(
        deps,
        &approval.incident_id,
        &format!("slack:{user}"),
        "approval_refused",
        json!({"reason": "not an approver", "approval_id": approval.id}),
    )
    .await
}

/// May `user` decide because they are on call at the first level of `policy` (the incident's
/// escalation policy, for a service whose settings allow it)? Their Slack account's email must
/// be a level-1 on-call user's PagerDuty email. A lookup that fails answers no (audited): nobody
/// gets approval rights from an outage.
async fn oncall_may_approve(deps: &Deps, approval: &Approval, policy: &str, user: &str) -> Result<bool, StageError> {
    let looked_up = async {
        let email = deps.chat.user_email(user).await?;
        let oncall = deps.source.first_oncall_emails(policy).await?;
        Ok::<_, crate::error::ClientError>(email.filter(|e| oncall.contains(e)))
    };
    let actor = format!("slack:{user}");
    match looked_up.await {
        Ok(Some(_)) => {
            let detail = json!({"approval_id": approval.id, "escalation_policy": policy, "level": 1});
            audit(deps, &approval.incident_id, &actor, "approver_on_call", detail).await?;
            Ok(true)
        }
        Ok(None) => Ok(false),
        Err(e) => {
            let detail = json!({"approval_id": approval.id, "escalation_policy": policy, "error": e.to_string()});
            audit(deps, &approval.incident_id, &actor, "oncall_lookup_failed", detail).await?;
            Ok(false)
        }
    }
}

/// "Reject with reason…": for an approver of a pending approval, open the dialog that asks why
/// (its submission decides, [`submit_reason`]); anyone else is told, as on a click.
async fn ask_reason(deps: &Deps, interaction: &Interaction, approval_id: &ApprovalId) -> Acknowledged {
    let url = interaction.response_url.as_deref();
    let reply = |text: &str| url.map(|u| FollowUp::ephemeral(u, text));
    let answer = |status: &str| HttpResponse::json(200, json!({ "status": status }));
    let Some(trigger_id) = interaction.trigger_id.clone() else {
        return Acknowledged::now(HttpResponse::message(400, "the click carries no trigger_id"));
    };
    let asked = async {
        let Some(a) = deps.store.get_approval(approval_id).await? else {
            return Ok::<_, StageError>(Acknowledged {
                response: answer("unknown"),
                follow_up: reply("This approval is unknown."),
            });
        };
        // The trigger id lives 3 s: only the cheap check here (the listed approvers, or a
        // service whose on-call may approve). The submission is authorised in full by `decide`.
        let rights = approval_rights(deps, &a.incident_id).await?;
        let listed = rights.approvers.iter().any(|u| u == &interaction.user.id);
        if !listed && rights.oncall_policy.is_none() {
            refuse(deps, &a, &interaction.user.id).await?;
            return Ok(Acknowledged {
                response: answer("not_allowed"),
                follow_up: reply("You are not allowed to approve selfheal plans."),
            });
        }
        if a.status != ApprovalStatus::Pending || a.expires_at <= deps.clock.now() {
            let text = format!("This plan can no longer be rejected: it is {:?}.", a.status).to_lowercase();
            return Ok(Acknowledged { response: answer("already_decided"), follow_up: reply(&text) });
        }
        let incident = load(deps, &a.incident_id).await?;
        let view = messages::reject_view(&incident, approval_id);
        let fallback = url.map(str::to_string);
        Ok(Acknowledged {
            response: answer("reason_asked"),
            follow_up: Some(FollowUp::OpenView { trigger_id, view, fallback }),
        })
    };
    match asked.await {
        Ok(ack) => ack,
        Err(e) => {
            tracing::error!(error = %e, "could not ask for a rejection reason");
            Acknowledged::now(HttpResponse::message(500, "temporary failure, try again"))
        }
    }
}

/// The rejection dialog submitted: reject once, with the reason if one was given. The dialog
/// closes on success; otherwise it shows why under the reason field (Slack's `errors`).
async fn submit_reason(deps: &Deps, interaction: &Interaction) -> Acknowledged {
    let ignored = || Acknowledged::now(HttpResponse::json(200, json!({"status": "ignored"})));
    let Some(view) = interaction.view.as_ref().filter(|v| v.callback_id == messages::REJECT_VIEW) else {
        return ignored();
    };
    let Ok(approval_id) = ApprovalId::parse(&view.private_metadata) else {
        return Acknowledged::now(HttpResponse::message(400, "the dialog carries no valid approval id"));
    };
    let reason = view
        .state
        .pointer(&format!("/values/{0}/{0}/value", messages::REASON_BLOCK))
        .and_then(Value::as_str)
        .map(|r| messages::clip(r.trim(), messages::REASON_MAX))
        .filter(|r| !r.is_empty());
    let user = &interaction.user.id;
    let refuse = |text: &str| {
        Acknowledged::now(HttpResponse::json(
            200,
            json!({"response_action": "errors", "errors": {messages::REASON_BLOCK: text}}),
        ))
    };
    match decide(deps, &approval_id, ApprovalStatus::Rejected, user, reason).await {
        Ok(Decided::Now { incident, approval }) => {
            let at = deps.clock.now();
            let follow_up =
                approval.slack_channel.clone().zip(approval.slack_ts.clone()).map(|(channel, ts)| FollowUp::Update {
                    at: MessageRef { channel, ts },
                    message: messages::approval_decided(&incident, approval.status, user, &at),
                });
            Acknowledged { response: HttpResponse::json(200, json!({"response_action": "clear"})), follow_up }
        }
        Ok(Decided::Before(a)) => refuse(&format!("This plan was already {:?}.", a.status).to_lowercase()),
        Ok(Decided::TooLate { .. }) => refuse("This approval has expired; nothing will run."),
        Ok(Decided::NotAllowed) => refuse("You are not allowed to approve selfheal plans."),
        Ok(Decided::Unknown) => refuse("This approval is unknown."),
        Err(e) => {
            tracing::error!(error = %e, "rejection with a reason failed");
            Acknowledged::now(HttpResponse::message(500, "temporary failure, try again"))
        }
    }
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
