//! Act: browser verification before and after, and the fix inside an ephemeral Coder
//! workspace that is deleted on every path. The execution gate is re-checked here, right
//! before anything runs, whatever the state machine says.

use base64::Engine as _;
use serde_json::{Value, json};

use super::{Deps, audit, cognition, load, update};
use crate::adapters::coder::workspace_name;
use crate::adapters::lightpanda::run_checks;
use crate::domain::*;
use crate::error::StageError;
use crate::ports::{CheckSpec, WorkspaceHandle, WorkspaceProgress, WorkspaceRequest};

const LOG_BYTES: usize = 4000;

fn checks_for(deps: &Deps, incident: &Incident) -> Vec<CheckSpec> {
    let c = &deps.settings.checks;
    c.get(incident.service.id.as_str()).or_else(|| c.get(incident.service.name.as_str())).cloned().unwrap_or_default()
}

async fn verify(deps: &Deps, incident: &Incident, phase: VerificationPhase) -> Result<Verification, StageError> {
    let specs = checks_for(deps, incident);
    if specs.is_empty() {
        return Err(StageError::InvalidInput(format!(
            "no browser checks are configured for service {} ({}): the baseline cannot be confirmed",
            incident.service.name, incident.service.id
        )));
    }
    let results = run_checks(deps.browser.as_ref(), &specs, deps.settings.browser.max_concurrent_checks).await;
    // A check the browser could not run observed nothing: it must neither confirm the failure
    // (which would let a fix run blind) nor fail the post-flight. Retry later, then escalate.
    if let Some(r) = results.iter().find(|r| r.failing_step.as_deref().is_some_and(|s| s.starts_with("browser:"))) {
        let why = r.failing_step.clone().unwrap_or_default();
        audit(deps, &incident.id, "verify", "browser_unavailable", json!({"check": r.name, "why": why})).await?;
        return Err(StageError::Transient(format!("the browser could not run check {}: {why}", r.name)));
    }
    let healthy = results.iter().all(|r| r.ok);
    let verification = Verification { phase, healthy, at: deps.clock.now(), checks: results };
    let v = verification.clone();
    update(deps, &incident.id, |i| {
        i.verifications.push(v.clone());
        Ok(())
    })
    .await?;
    let summary: Vec<Value> = verification
        .checks
        .iter()
        .map(|c| json!({"check": c.name, "ok": c.ok, "status": c.status, "latency_ms": c.latency_ms, "failing_step": c.failing_step}))
        .collect();
    audit(
        deps,
        &incident.id,
        "verify",
        &format!("{phase:?}").to_lowercase(),
        json!({"healthy": healthy, "checks": summary}),
    )
    .await?;
    Ok(verification)
}

/// The baseline must show the failure; a healthy service means no user-visible impact.
pub async fn preflight(deps: &Deps, id: &IncidentId) -> Result<Value, StageError> {
    let incident = load(deps, id).await?;
    super::ensure_autonomy_allowed(&incident)?;
    let v = verify(deps, &incident, VerificationPhase::Preflight).await?;
    Ok(json!({"healthy": v.healthy}))
}

/// After the fix: `StillFailing` makes the state machine retry with back-off.
pub async fn postflight(deps: &Deps, id: &IncidentId) -> Result<Value, StageError> {
    let incident = load(deps, id).await?;
    let v = verify(deps, &incident, VerificationPhase::Postflight).await?;
    if !v.healthy {
        let failing: Vec<String> = v
            .checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| format!("{}: {}", c.name, c.failing_step.clone().unwrap_or_default()))
            .collect();
        return Err(StageError::StillFailing(failing.join("; ")));
    }
    Ok(json!({"healthy": true}))
}

/// The execution gate: only an auto decision on a valid catalog action, or a human approval
/// bound to this exact plan, with the kill switch off and nobody having taken over.
async fn authorised_script(deps: &Deps, incident: &Incident) -> Result<String, StageError> {
    super::ensure_autonomy_allowed(incident)?;
    if deps.store.kill_switch().await? {
        return Err(StageError::Stopped("the kill switch is on".into()));
    }
    let plan = incident.plan.as_ref().ok_or_else(|| StageError::Stopped("no plan".into()))?;
    if let Some(problem) = &incident.plan_problem {
        return Err(StageError::Stopped(format!("the plan failed validation: {problem}")));
    }
    let decision = incident.decision.as_ref().ok_or_else(|| StageError::Stopped("no policy decision".into()))?;
    match decision.route {
        Route::Auto => {
            if !matches!(plan.action, PlannedAction::Catalog { .. }) {
                return Err(StageError::Stopped("auto-execution is for catalog actions only".into()));
            }
        }
        Route::Approval => {
            let approved = incident
                .approval
                .as_ref()
                .is_some_and(|a| a.status == ApprovalStatus::Approved && a.plan_hash == plan.hash);
            if !approved {
                return Err(StageError::Stopped("no approval bound to this plan".into()));
            }
        }
        Route::Escalate | Route::Shadow => {
            return Err(StageError::Stopped(format!("route {} never executes", decision.route.as_str())));
        }
    }
    if Plan::action_hash(&plan.action) != plan.hash {
        return Err(StageError::Stopped("the plan changed after it was hashed".into()));
    }
    match cognition::planned_script(deps, incident).await? {
        Some(Ok(script)) => Ok(script),
        Some(Err(e)) => Err(StageError::Stopped(format!("cannot render the script: {e}"))),
        None => Err(StageError::Stopped("no plan".into())),
    }
}

fn handle_output(handle: &WorkspaceHandle, state: &str, polls: u64, agent_id: Option<&str>, detail: &str) -> Value {
    json!({"id": handle.id, "name": handle.name, "build_id": handle.build_id, "state": state, "polls": polls, "agent_id": agent_id, "detail": detail})
}

pub async fn provision_workspace(deps: &Deps, id: &IncidentId) -> Result<Value, StageError> {
    let incident = load(deps, id).await?;
    // A retried task must not create a second workspace.
    if let Some(r) = incident.remediation.as_ref().filter(|r| !r.deleted) {
        let handle = WorkspaceHandle {
            id: r.workspace_id.clone(),
            name: r.workspace_name.clone(),
            build_id: r.build_id.clone(),
        };
        return Ok(handle_output(&handle, "pending", 0, None, "already provisioned"));
    }
    let script = match authorised_script(deps, &incident).await {
        Ok(s) => s,
        Err(e) => {
            audit(deps, id, "remediate", "execution_refused", json!({"reason": e.to_string()})).await?;
            return Err(e);
        }
    };
    let plan_hash = incident.plan.as_ref().map(|p| p.hash.clone()).unwrap_or_default();
    let target = checks_for(deps, &incident).first().map(|c| c.url.clone()).unwrap_or_default();
    let request = WorkspaceRequest {
        name: workspace_name(id.as_str(), &plan_hash),
        incident_id: id.clone(),
        service: incident.service.name.to_string(),
        severity: match incident.urgency {
            Urgency::High => "high".into(),
            Urgency::Low => "low".into(),
        },
        script_b64: base64::engine::general_purpose::STANDARD.encode(script.as_bytes()),
        target,
    };
    // A previous attempt may have created the workspace and died before recording it: adopt it
    // (the name is deterministic per incident and plan) instead of leaking it.
    let (handle, adopted) = match deps.workspaces.find(&request.name).await? {
        Some(existing) => (existing, true),
        None => (deps.workspaces.create(&request).await?, false),
    };
    // Record the workspace before anything else, so every later path can delete it.
    let h = handle.clone();
    update(deps, id, |i| {
        i.status = IncidentStatus::Remediating;
        i.stage = "provision_workspace".into();
        i.remediation = Some(RemediationResult {
            workspace_id: h.id.clone(),
            workspace_name: h.name.clone(),
            build_id: h.build_id.clone(),
            succeeded: false,
            lifecycle_state: "provisioning".into(),
            log_excerpt: String::new(),
            deleted: false,
        });
        Ok(())
    })
    .await?;
    audit(
        deps,
        id,
        "remediate",
        if adopted { "workspace_adopted" } else { "workspace_created" },
        json!({"workspace": handle.name, "id": handle.id, "script_sha256": crate::sha256_hex(script.as_bytes())}),
    )
    .await?;
    Ok(handle_output(&handle, "pending", 0, None, "created"))
}

fn handle_from(payload: &Value) -> Result<(WorkspaceHandle, u64), StageError> {
    let w = payload.get("workspace").ok_or_else(|| StageError::InvalidInput("no workspace".into()))?;
    let s = |k: &str| {
        w.get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| StageError::InvalidInput(format!("workspace.{k} missing")))
    };
    Ok((
        WorkspaceHandle { id: s("id")?, name: s("name")?, build_id: s("build_id")? },
        w.get("polls").and_then(Value::as_u64).unwrap_or(0),
    ))
}

pub async fn poll_workspace(deps: &Deps, _id: &IncidentId, payload: &Value) -> Result<Value, StageError> {
    let (handle, polls) = handle_from(payload)?;
    let polls = polls + 1;
    Ok(match deps.workspaces.progress(&handle).await? {
        WorkspaceProgress::Pending { detail } => handle_output(&handle, "pending", polls, None, &detail),
        WorkspaceProgress::Ready { agent_id } => handle_output(&handle, "ready", polls, Some(&agent_id), "ready"),
        WorkspaceProgress::Failed { reason, agent_id } => {
            handle_output(&handle, "failed", polls, agent_id.as_deref(), &reason)
        }
    })
}

pub async fn collect_result(deps: &Deps, id: &IncidentId, payload: &Value) -> Result<Value, StageError> {
    let w = payload.get("workspace").cloned().unwrap_or(Value::Null);
    let state = w.get("state").and_then(Value::as_str).unwrap_or("unknown").to_string();
    let detail = w.get("detail").and_then(Value::as_str).unwrap_or_default().to_string();
    let succeeded = state == "ready";
    let logs = match w.get("agent_id").and_then(Value::as_str) {
        Some(agent) => {
            deps.workspaces.agent_logs(agent, LOG_BYTES).await.unwrap_or_else(|e| format!("(logs unavailable: {e})"))
        }
        None => String::new(),
    };
    let lifecycle = if state == "pending" { "timed out waiting for the workspace".to_string() } else { detail.clone() };
    update(deps, id, |i| {
        if let Some(r) = i.remediation.as_mut() {
            r.succeeded = succeeded;
            r.lifecycle_state = lifecycle.clone();
            r.log_excerpt = logs.clone();
        }
        i.stage = "collect_result".into();
        Ok(())
    })
    .await?;
    // Logs are untrusted output: stored and shown, never interpreted.
    audit(
        deps,
        id,
        "remediate",
        "fix_result",
        json!({"succeeded": succeeded, "state": state, "detail": detail, "log_bytes": logs.len()}),
    )
    .await?;
    Ok(json!({"succeeded": succeeded}))
}

/// Delete the incident's workspace, whatever path led here. No workspace: nothing to do.
pub async fn destroy_workspace(deps: &Deps, id: &IncidentId) -> Result<Value, StageError> {
    let incident = load(deps, id).await?;
    let Some(r) = incident.remediation.clone().filter(|r| !r.deleted) else {
        return Ok(json!({"deleted": false, "reason": "no workspace"}));
    };
    deps.workspaces.delete(&r.workspace_id).await?;
    update(deps, id, |i| {
        if let Some(r) = i.remediation.as_mut() {
            r.deleted = true;
        }
        Ok(())
    })
    .await?;
    audit(deps, id, "remediate", "workspace_deleted", json!({"workspace": r.workspace_name})).await?;
    Ok(json!({"deleted": true}))
}
