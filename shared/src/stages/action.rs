//! Act: browser verification before and after, and the fix inside an ephemeral Coder
//! workspace that is deleted on every path. The execution gate is re-checked here, right
//! before anything runs, whatever the state machine says.

use base64::Engine as _;
use serde_json::{Value, json};

use super::{Deps, audit, cognition, emit_metric, load, update};
use crate::domain::*;
use crate::error::StageError;
use crate::ports::{Browser, CheckSpec, SourceStatus, WorkspaceHandle, WorkspaceProgress, WorkspaceRequest};

const LOG_BYTES: usize = 4000;

/// The operator's settings for the incident's service (`selfheal services push`), looked up by
/// service id, then by name: the same order as the config file's `[checks]` map. Read at run
/// time, so a push takes effect on the next stage without a redeploy.
pub(crate) async fn stored_settings(deps: &Deps, incident: &Incident) -> Result<Option<ServiceSettings>, StageError> {
    if let Some(found) = deps.store.get_service_settings(incident.service.id.as_str()).await? {
        return Ok(Some(found));
    }
    Ok(deps.store.get_service_settings(incident.service.name.as_str()).await?)
}

/// The checks that judge the incident's service and the target its fix receives. Stored
/// settings win; the config file's `checks` stay the fallback so local set-ups keep working.
/// The target is the stored one, else the first check's URL (empty when there are no checks:
/// the pre-flight has already escalated such an incident).
async fn checks_for(deps: &Deps, incident: &Incident) -> Result<(Vec<CheckSpec>, String), StageError> {
    Ok(checks_from(deps, incident, stored_settings(deps, incident).await?))
}

/// [`checks_for`] with the stored settings already read.
fn checks_from(deps: &Deps, incident: &Incident, stored: Option<ServiceSettings>) -> (Vec<CheckSpec>, String) {
    let checks = match stored.as_ref().filter(|s| !s.checks.is_empty()) {
        Some(s) => s.checks.clone(),
        None => {
            let c = &deps.settings.checks;
            c.get(incident.service.id.as_str())
                .or_else(|| c.get(incident.service.name.as_str()))
                .cloned()
                .unwrap_or_default()
        }
    };
    let target = stored.and_then(|s| s.target).or_else(|| checks.first().map(|c| c.url.clone())).unwrap_or_default();
    (checks, target)
}

async fn verify(deps: &Deps, incident: &Incident, phase: VerificationPhase) -> Result<Verification, StageError> {
    let (specs, _) = checks_for(deps, incident).await?;
    if specs.is_empty() {
        return Err(StageError::InvalidInput(format!(
            "no browser checks are configured for service {name} ({id}): the baseline cannot be confirmed; \
             push them with `selfheal services push FILE` (or list them under [[checks.{id}]] in the config file)",
            name = incident.service.name,
            id = incident.service.id
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
    // The browser ran, but the page could not be reached (DNS, refused, TLS): nobody saw the
    // service fail, so no baseline is confirmed and no fix may run on it. Not retried: a
    // person decides whether the service or the check is wrong.
    let unreachable: Vec<&CheckResult> = results.iter().filter(|r| r.unreachable).collect();
    if phase == VerificationPhase::Preflight && !unreachable.is_empty() {
        let detail: Vec<String> = unreachable
            .iter()
            .map(|r| format!("{} ({})", r.name, r.failing_step.as_deref().unwrap_or("no answer")))
            .collect();
        audit(
            deps,
            &incident.id,
            "verify",
            "baseline_unobserved",
            json!({"unreachable": unreachable.iter().map(|r| json!({"check": r.name, "url": r.url, "why": r.failing_step})).collect::<Vec<_>>()}),
        )
        .await?;
        return Err(StageError::Stopped(format!(
            "the page could not be checked, so the failure was never observed and nothing runs: {}",
            detail.join("; ")
        )));
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

/// Run many checks at once (the swarm), at most `max_concurrent` connections at a time. A
/// check whose browser failed is reported as a failing check with the reason.
pub async fn run_checks(browser: &dyn Browser, specs: &[CheckSpec], max_concurrent: usize) -> Vec<CheckResult> {
    let gate = tokio::sync::Semaphore::new(max_concurrent.max(1));
    let checks: Vec<_> = specs.iter().map(|spec| check_one(browser, spec, &gate)).collect();
    futures::future::join_all(checks).await
}

async fn check_one(browser: &dyn Browser, spec: &CheckSpec, gate: &tokio::sync::Semaphore) -> CheckResult {
    let _permit = gate.acquire().await;
    match browser.check(spec).await {
        Ok(r) => r,
        Err(e) => CheckResult {
            name: spec.name.clone(),
            url: spec.url.clone(),
            status: None,
            latency_ms: 0,
            ok: false,
            failing_step: Some(format!("browser: {e}")),
            excerpt: String::new(),
            unreachable: false,
        },
    }
}

/// Why the execution gate refused, for the audit trail and the escalation. A refusal is final
/// for the run (the state machine escalates with it; it has no path back to approval), except
/// [`Refusal::SourceUnavailable`], which the state machine retries first.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("a person resolved the incident")]
    TakenOver,
    #[error("the kill switch is on")]
    KillSwitch,
    #[error("no plan")]
    NoPlan,
    #[error("the plan failed validation: {0}")]
    Invalid(String),
    #[error("no policy decision")]
    NoDecision,
    #[error("route {0} never executes")]
    NeverExecutes(&'static str),
    #[error("auto-execution is for catalog actions only")]
    AutoNeedsCatalog,
    #[error("auto-execution never runs a value the model chose ({0})")]
    AutoWithModelChoice(String),
    #[error("auto-execution never runs a high-risk action")]
    AutoHighRisk,
    #[error("no approval bound to this plan")]
    NotApproved,
    #[error(
        "what would run changed since the plan was {moment}: {what}; it needs a new {}",
        if *moment == "approved" { "approval" } else { "decision" }
    )]
    Changed { moment: &'static str, what: String },
    #[error("PagerDuty reports the incident {0}: nothing runs on it")]
    NotOpen(&'static str),
    #[error("PagerDuty could not confirm the incident is still open ({0}); nothing runs until it can")]
    SourceUnavailable(String),
    #[error("PagerDuty refused to say whether the incident is still open ({0}); nothing runs")]
    SourceRefused(String),
}

impl From<Refusal> for StageError {
    fn from(r: Refusal) -> Self {
        match r {
            // Worth asking again: the state machine retries Transient, then escalates.
            Refusal::SourceUnavailable(_) => StageError::Transient(r.to_string()),
            _ => StageError::Stopped(r.to_string()),
        }
    }
}

/// The execution gate, right before anything runs, whatever the state machine says:
/// - nobody took over, the kill switch is off;
/// - the plan is valid, and rendering it again from the catalog and the service's settings as
///   they are *now* gives exactly the script and catalog version its hash binds (a `runbooks
///   push` or a settings change after the approval refuses it);
/// - either `Route::Auto` on a catalog action with no model-chosen value and not high risk, or
///   an `Approved` approval with this exact plan hash;
/// - a fresh read from PagerDuty says the incident is not resolved.
///
/// `service_parameters` are the service's stored `parameters`, read once by the caller.
/// Returns the script to run.
async fn authorised_script(
    deps: &Deps,
    incident: &Incident,
    service_parameters: &std::collections::BTreeMap<String, String>,
) -> Result<String, Refusal> {
    if super::ensure_autonomy_allowed(incident).is_err() {
        return Err(Refusal::TakenOver);
    }
    let store = |e: crate::error::StoreError| Refusal::SourceUnavailable(format!("store: {e}"));
    if deps.store.kill_switch().await.map_err(store)? {
        return Err(Refusal::KillSwitch);
    }
    let plan = incident.plan.as_ref().ok_or(Refusal::NoPlan)?;
    if let Some(problem) = &incident.plan_problem {
        return Err(Refusal::Invalid(problem.clone()));
    }
    let decision = incident.decision.as_ref().ok_or(Refusal::NoDecision)?;
    let moment = match decision.route {
        Route::Auto => "decided",
        Route::Approval => "approved",
        Route::Escalate | Route::Shadow => return Err(Refusal::NeverExecutes(decision.route.as_str())),
    };

    // Render again, from the catalog and settings as they are now.
    let catalog =
        cognition::retrieved_catalog(deps, incident).await.map_err(|e| Refusal::SourceUnavailable(e.to_string()))?;
    let ctx = crate::runbooks::ParamContext { incident, service_parameters };
    let changed = |what: String| Refusal::Changed { moment, what };
    // The plan holds its resolved values; the settings and incident values are read afresh.
    let proposal = match &plan.action {
        PlannedAction::Catalog { runbook_id, action, parameters } => PlannedAction::Catalog {
            runbook_id: runbook_id.clone(),
            action: action.clone(),
            parameters: catalog
                .iter()
                .find(|a| a.runbook_id == *runbook_id && a.name == *action)
                .map_or_else(|| parameters.clone(), |a| crate::runbooks::model_values(a, parameters)),
        },
        script => script.clone(),
    };
    let now =
        cognition::prepare(&proposal, &catalog, &ctx).map_err(|e| changed(format!("it no longer renders: {e}")))?;
    if plan.catalog_version != now.catalog_version {
        return Err(changed(format!(
            "the catalog action is now version {} (was {})",
            short(now.catalog_version.as_deref()),
            short(plan.catalog_version.as_deref())
        )));
    }
    if plan.script.as_deref() != Some(now.script.as_str()) {
        return Err(changed(format!(
            "the rendered script is now sha256 {} (was {})",
            short(Some(&crate::sha256_hex(now.script.as_bytes()))),
            short(plan.script.as_deref().map(|s| crate::sha256_hex(s.as_bytes())).as_deref())
        )));
    }
    if now.hash() != plan.hash {
        return Err(changed("the plan no longer matches its hash".into()));
    }

    match decision.route {
        Route::Auto => {
            if !matches!(plan.action, PlannedAction::Catalog { .. }) {
                return Err(Refusal::AutoNeedsCatalog);
            }
            if !now.model_chosen.is_empty() {
                return Err(Refusal::AutoWithModelChoice(now.model_chosen.join(", ")));
            }
            if now.declared_risk.map_or(plan.risk, |d| d.max(plan.risk)) == RiskLevel::High {
                return Err(Refusal::AutoHighRisk);
            }
            // (A fix of the same action inside its stability window was ruled on by the
            // decision moments ago; re-reading the service's history here would not fit the
            // remediate function's time budget.)
        }
        _ => {
            let approved = incident
                .approval
                .as_ref()
                .is_some_and(|a| a.status == ApprovalStatus::Approved && a.plan_hash == plan.hash);
            if !approved {
                return Err(Refusal::NotApproved);
            }
        }
    }

    // Last, the system of record: a resolved incident is never fixed, whatever our store says
    // (its `incident.resolved` webhook may still be on its way, or lost).
    match deps.source.get_incident(&incident.id).await {
        Ok(s) if s.status == SourceStatus::Resolved => Err(Refusal::NotOpen("resolved")),
        Ok(_) => Ok(now.script),
        // Timeouts and 5xx are asked again by the state machine; an unknown incident or a
        // refused token will not get better.
        Err(e) if e.is_retryable() => Err(Refusal::SourceUnavailable(e.to_string())),
        Err(e) => Err(Refusal::SourceRefused(e.to_string())),
    }
}

fn short(hash: Option<&str>) -> String {
    hash.map_or_else(|| "none".into(), |h| h.chars().take(12).collect())
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
    let stored = stored_settings(deps, &incident).await?;
    let service_parameters = stored.as_ref().map(|s| s.parameters.clone()).unwrap_or_default();
    let script = match authorised_script(deps, &incident, &service_parameters).await {
        Ok(s) => s,
        Err(refusal) => {
            if let Refusal::NotOpen(_) = refusal {
                // Our record catches up with PagerDuty: later stages stop too.
                update(deps, id, |i| {
                    if i.outcome.is_none() {
                        i.status = IncidentStatus::ResolvedByHuman;
                    }
                    Ok(())
                })
                .await?;
            }
            audit(deps, id, "remediate", "execution_refused", json!({"reason": refusal.to_string()})).await?;
            return Err(refusal.into());
        }
    };
    let (_, target) = checks_from(deps, &incident, stored);
    let request = WorkspaceRequest {
        name: planned_workspace_name(&incident),
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

/// The workspace name of the incident's plan: stable per incident and proposed action, so a
/// retried step, and the cleanup after a failed one, find what it created.
fn planned_workspace_name(incident: &Incident) -> String {
    let suffix = incident.plan.as_ref().map(|p| Plan::action_hash(&p.action)).unwrap_or_default();
    workspace_name(incident.id.as_str(), &suffix)
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
    let (incident, _) = update(deps, id, |i| {
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
    // A fix that ran, by route: `FixExecuted` with Route=auto is the auto-executed count.
    let route = incident.decision.as_ref().map_or("unknown", |d| d.route.as_str());
    let mut counts = vec![("FixExecuted", 1.0, "Count")];
    if !succeeded {
        counts.push(("FixFailed", 1.0, "Count"));
    }
    emit_metric(incident.service.name.as_str(), &counts, &[("Route", route)]);
    Ok(json!({"succeeded": succeeded}))
}

/// Delete the incident's workspace, whatever path led here, and confirm it is gone. The record
/// names it; without a record (provisioning created it and then failed or timed out before
/// recording it) the plan's deterministic name finds it. No plan, or nothing by that name:
/// nothing to do.
pub async fn destroy_workspace(deps: &Deps, id: &IncidentId) -> Result<Value, StageError> {
    let incident = load(deps, id).await?;
    let (workspace_id, workspace, found_by) = match incident.remediation.clone() {
        Some(r) if r.deleted => return Ok(json!({"deleted": false, "reason": "already deleted"})),
        Some(r) => (r.workspace_id, r.workspace_name, "record"),
        None if incident.plan.is_none() => return Ok(json!({"deleted": false, "reason": "no workspace"})),
        None => {
            let name = planned_workspace_name(&incident);
            match deps.workspaces.find(&name).await? {
                Some(found) => (found.id, found.name, "name"),
                None => return Ok(json!({"deleted": false, "reason": "no workspace", "looked_up": name})),
            }
        }
    };
    if let Err(e) = deps.workspaces.delete(&workspace_id).await {
        if !e.is_retryable() {
            // The state machine escalates with this; the scheduled cleanup keeps trying.
            audit(
                deps,
                id,
                "remediate",
                "workspace_delete_failed",
                json!({"workspace": workspace, "found_by": found_by, "error": e.to_string()}),
            )
            .await?;
        }
        return Err(e.into());
    }
    update(deps, id, |i| {
        if let Some(r) = i.remediation.as_mut() {
            r.deleted = true;
        }
        Ok(())
    })
    .await?;
    audit(deps, id, "remediate", "workspace_deleted", json!({"workspace": workspace, "found_by": found_by})).await?;
    Ok(json!({"deleted": true, "found_by": found_by}))
}

/// The prefix every remediation workspace name starts with (`domain::workspace_name`).
pub const WORKSPACE_PREFIX: &str = "fix-";

/// What a cleanup run found and did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CleanupReport {
    pub dry_run: bool,
    pub older_than_secs: i64,
    /// Workspaces with our prefix.
    pub seen: usize,
    /// Older than the cut-off: deleted, or (dry run) would be.
    pub stale: Vec<StaleWorkspace>,
    pub deleted: usize,
    pub failed: usize,
    /// The run's deadline came before every stale workspace was handled.
    pub cut_short: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct StaleWorkspace {
    pub id: String,
    pub name: String,
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
    pub state: String,
    /// `deleted`, `would delete`, or the error.
    pub result: String,
}

/// How long one scheduled cleanup may run (`budget` counts it).
pub const CLEANUP_DEADLINE: std::time::Duration = std::time::Duration::from_secs(600);

/// Find remediation workspaces (by the deterministic name prefix) older than `older_than` and
/// delete them; a dry run only lists them. A workspace whose creation time is unknown counts as
/// stale only when it is already failed or stopped. Bounded by `deadline`: what is left is
/// handled by the next run.
pub async fn clean_up_workspaces(
    workspaces: &dyn crate::ports::Workspaces,
    now: chrono::DateTime<chrono::Utc>,
    older_than: chrono::Duration,
    dry_run: bool,
    deadline: std::time::Duration,
) -> Result<CleanupReport, crate::error::ClientError> {
    let until = tokio::time::Instant::now() + deadline;
    let listed = tokio::time::timeout_at(until, workspaces.list(WORKSPACE_PREFIX)).await.map_err(|_| {
        crate::error::ClientError::Lifecycle {
            service: "coder",
            detail: "listing workspaces outlasted the cleanup deadline".into(),
            retryable: true,
        }
    })??;
    let mut report =
        CleanupReport { dry_run, older_than_secs: older_than.num_seconds(), seen: listed.len(), ..Default::default() };
    for w in listed {
        if !crate::domain::valid_workspace_name(&w.name) {
            continue;
        }
        let gone = w.transition == "delete" && w.job_status == "succeeded";
        let old = match w.created_at {
            Some(at) => now - at >= older_than,
            None => matches!(w.job_status.as_str(), "failed" | "canceled") || w.transition == "stop",
        };
        if gone || !old {
            continue;
        }
        let state = format!("{} {}", w.transition, w.job_status);
        let result = if dry_run {
            "would delete".to_string()
        } else if report.cut_short {
            "left for the next run".to_string()
        } else {
            match tokio::time::timeout_at(until, workspaces.delete(&w.id)).await {
                Ok(Ok(())) => {
                    report.deleted += 1;
                    "deleted".to_string()
                }
                Ok(Err(e)) => {
                    report.failed += 1;
                    e.to_string()
                }
                Err(_) => {
                    report.cut_short = true;
                    "left for the next run".to_string()
                }
            }
        };
        tracing::info!(workspace = %w.name, state, result, dry_run, "stale workspace");
        report.stale.push(StaleWorkspace { id: w.id, name: w.name, created_at: w.created_at, state, result });
    }
    Ok(report)
}

/// The scheduled cleanup (an EventBridge rule invokes the remediate function with
/// `{"op": "clean_up_workspaces", "older_than_secs": N}`).
pub async fn scheduled_cleanup(deps: &Deps, payload: &Value) -> Result<Value, StageError> {
    let secs = payload.get("older_than_secs").and_then(Value::as_i64).unwrap_or(DEFAULT_STALE_SECS);
    if secs < MIN_STALE_SECS {
        return Err(StageError::InvalidInput(format!(
            "older_than_secs {secs} is below {MIN_STALE_SECS}: a live remediation could be deleted"
        )));
    }
    let report = clean_up_workspaces(
        deps.workspaces.as_ref(),
        deps.clock.now(),
        chrono::Duration::seconds(secs),
        payload.get("dry_run").and_then(Value::as_bool).unwrap_or(false),
        CLEANUP_DEADLINE,
    )
    .await?;
    super::emit_metric(
        "workspaces",
        &[
            ("StaleWorkspacesDeleted", report.deleted as f64, "Count"),
            ("StaleWorkspacesFailed", report.failed as f64, "Count"),
        ],
        &[],
    );
    serde_json::to_value(&report).map_err(|e| StageError::InvalidInput(e.to_string()))
}

/// A workspace lives at most as long as provisioning, `max_polls` polls and the destroy take
/// (40 × 15 s with the defaults, plus retries): six hours is well past any live remediation.
pub const DEFAULT_STALE_SECS: i64 = 6 * 3600;

/// Below this a cleanup could delete the workspace of a remediation still running.
pub const MIN_STALE_SECS: i64 = 3600;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::adapters::memory::MemoryTable;
    use crate::config::{Secrets, Settings};
    use crate::ports::{Browser, IncidentStore, SystemClock};
    use crate::store::TableStore;
    use crate::wiring::{Unconfigured, build_deps};
    use std::sync::{Arc, Mutex};

    /// A browser that records what it was asked to check and sees every page failing.
    #[derive(Default)]
    pub(crate) struct SeenBrowser(Mutex<Vec<String>>);

    #[async_trait::async_trait]
    impl Browser for SeenBrowser {
        async fn check(&self, spec: &CheckSpec) -> Result<CheckResult, crate::error::ClientError> {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).push(spec.url.clone());
            Ok(CheckResult {
                name: spec.name.clone(),
                url: spec.url.clone(),
                status: Some(504),
                latency_ms: 1,
                ok: false,
                failing_step: Some("status 504".into()),
                excerpt: String::new(),
                unreachable: false,
            })
        }
    }

    pub(crate) fn check(name: &str, url: &str) -> CheckSpec {
        CheckSpec {
            name: name.into(),
            url: url.into(),
            expect_status: 200,
            expect_text: None,
            expect_selector: None,
            steps: Vec::new(),
            max_latency_ms: None,
            deadline_ms: 1000,
        }
    }

    pub(crate) fn settings_for(service: &str, url: &str, auto_execute: bool) -> ServiceSettings {
        ServiceSettings {
            service: service.into(),
            checks: vec![check("health", url)],
            target: None,
            auto_execute,
            approvers: Vec::new(),
            oncall_may_approve: false,
            parameters: Default::default(),
            updated_at: chrono::Utc::now(),
            updated_by: "test".into(),
        }
    }

    /// Deps over an in-memory store holding one incident of service `PSVC1` / `checkout`.
    pub(crate) async fn deps_with(config_checks: &[(&str, &str)]) -> (Deps, Arc<SeenBrowser>, IncidentId) {
        let mut settings = Settings::from_sources(None, |_| None).unwrap();
        for (service, url) in config_checks {
            settings.checks.insert(service.to_string(), vec![check("config check", url)]);
        }
        let store: Arc<dyn IncidentStore> = Arc::new(TableStore::new(MemoryTable::new()));
        let mut deps = build_deps(
            settings,
            Secrets::default(),
            store,
            Arc::new(Unconfigured("orchestrator")),
            Arc::new(SystemClock::real()),
        );
        let browser = Arc::new(SeenBrowser::default());
        deps.browser = browser.clone();
        let id = IncidentId::parse("QSETTINGS1").unwrap();
        let incident = Incident::new(
            id.clone(),
            "checkout 504".into(),
            ServiceRef { id: ServiceId::parse("PSVC1").unwrap(), name: ServiceName::parse("checkout").unwrap() },
            Urgency::High,
            chrono::Utc::now(),
        );
        deps.store.create_incident(&incident).await.unwrap();
        (deps, browser, id)
    }

    fn seen(b: &SeenBrowser) -> Vec<String> {
        b.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    #[tokio::test]
    async fn the_scheduled_cleanup_needs_no_incident_and_refuses_a_short_cut_off() {
        use crate::stages::{Function, handle};
        let (deps, _, _) = deps_with(&[]).await;
        let short = json!({"op": "clean_up_workspaces", "older_than_secs": 60});
        let err = handle(&deps, Function::Remediate, short).await.unwrap_err();
        assert!(matches!(err, StageError::InvalidInput(_)) && err.to_string().contains("below"), "{err}");
        let err = handle(&deps, Function::Verify, json!({"op": "clean_up_workspaces"})).await.unwrap_err();
        assert!(err.to_string().contains("does not belong"), "{err}");
        // No incident id needed: with no Coder configured it fails naming Coder.
        let err = handle(&deps, Function::Remediate, json!({"op": "clean_up_workspaces"})).await.unwrap_err();
        assert!(err.to_string().contains("Coder"), "{err}");
    }

    #[tokio::test]
    async fn no_checks_anywhere_escalates_naming_the_fix() {
        let (deps, browser, id) = deps_with(&[]).await;
        let err = preflight(&deps, &id).await.unwrap_err();
        assert!(matches!(err, StageError::InvalidInput(_)), "{err:?}");
        assert!(err.to_string().contains("selfheal services push"), "{err}");
        assert!(seen(&browser).is_empty());
    }

    #[tokio::test]
    async fn config_checks_are_the_fallback() {
        let (deps, browser, id) = deps_with(&[("checkout", "http://config.test/health")]).await;
        assert_eq!(preflight(&deps, &id).await.unwrap()["healthy"], false);
        assert_eq!(seen(&browser), ["http://config.test/health"]);
        let incident = load(&deps, &id).await.unwrap();
        assert_eq!(checks_for(&deps, &incident).await.unwrap().1, "http://config.test/health");
    }

    #[tokio::test]
    async fn stored_settings_win_by_id_then_name() {
        let (deps, browser, id) = deps_with(&[("PSVC1", "http://config.test/health")]).await;
        // By name: wins over the config file's entry for the id.
        deps.store.put_service_settings(&settings_for("checkout", "http://by-name.test/health", false)).await.unwrap();
        preflight(&deps, &id).await.unwrap();
        assert_eq!(seen(&browser), ["http://by-name.test/health"]);
        // By id: wins over the name.
        let mut by_id = settings_for("PSVC1", "http://by-id.test/health", false);
        by_id.target = Some("http://fix-target.test".into());
        deps.store.put_service_settings(&by_id).await.unwrap();
        preflight(&deps, &id).await.unwrap();
        assert_eq!(seen(&browser)[1], "http://by-id.test/health");
        let incident = load(&deps, &id).await.unwrap();
        let (checks, target) = checks_for(&deps, &incident).await.unwrap();
        assert_eq!(checks.len(), 1);
        assert_eq!(target, "http://fix-target.test");
    }
}
