//! What runs is exactly what a runbook declared and a person (or the policy) approved, whatever
//! the model or the text says. Stage-level, over the PagerDuty and Slack simulators:
//! - the runbook's declared risk is a floor the model cannot talk down;
//! - an approval binds the rendered script and the catalog version: a `runbooks push` or a
//!   settings change after it refuses the run;
//! - a fix's target comes from the service's settings, never from the model;
//! - approvers see the whole script, escaped, inline or as a file, or cannot approve;
//! - a resolved incident is never fixed (a fresh read at the gate; resolved-before-triggered);
//! - a replayed body under a new `X-Webhook-Id` is a duplicate;
//! - a re-fire is the same alert or root cause, counts at once, and blocks the same action.

use async_trait::async_trait;
use chrono::Utc;
use secrecy::SecretString;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use selfheal::config::{Secrets, Settings};
use selfheal::domain::*;
use selfheal::error::{ClientError, OrchestratorError, StageError};
use selfheal::ports::*;
use selfheal::signature::sign_pagerduty;
use selfheal::stages::http::HttpRequest;
use selfheal::stages::{self, Deps, Function, intake};
use selfheal::wiring::build_deps;
use selfheal::{adapters::memory::MemoryTable, store::TableStore};
use selfheal_testkit::sim::{Knobs, Sim, SimCredentials};

#[derive(Default)]
struct Recorder {
    starts: Mutex<Vec<String>>,
}

#[async_trait]
impl Orchestrator for Recorder {
    async fn start_execution(&self, name: &str, _input: &str) -> Result<ExecutionRef, OrchestratorError> {
        let mut starts = self.starts.lock().unwrap();
        starts.push(name.to_string());
        Ok(ExecutionRef { execution_id: format!("arn:exec:{name}"), newly_started: starts.len() == 1 })
    }
    async fn send_task_success(&self, _: &TaskToken, _: &Value) -> Result<(), OrchestratorError> {
        Ok(())
    }
    async fn send_task_failure(&self, _: &TaskToken, _: &str, _: &str) -> Result<(), OrchestratorError> {
        Ok(())
    }
    async fn stop_execution(&self, _: &str, _: &str) -> Result<(), OrchestratorError> {
        Ok(())
    }
}

#[derive(Default)]
struct FixedPlanner(Mutex<Option<Plan>>);

#[async_trait]
impl Planner for FixedPlanner {
    async fn plan(&self, _: &PlanRequest) -> Result<Plan, ClientError> {
        Ok(self.0.lock().unwrap().clone().expect("a plan was set"))
    }
}

#[derive(Default)]
struct RecordingWorkspaces(Mutex<Vec<String>>);

#[async_trait]
impl Workspaces for RecordingWorkspaces {
    async fn create(&self, r: &WorkspaceRequest) -> Result<WorkspaceHandle, ClientError> {
        use base64::Engine as _;
        let script = base64::engine::general_purpose::STANDARD.decode(&r.script_b64).unwrap();
        self.0.lock().unwrap().push(String::from_utf8(script).unwrap());
        Ok(WorkspaceHandle { id: format!("ws-{}", r.name), name: r.name.clone(), build_id: "b".into() })
    }
    async fn progress(&self, _: &WorkspaceHandle) -> Result<WorkspaceProgress, ClientError> {
        Ok(WorkspaceProgress::Pending { detail: String::new() })
    }
    async fn agent_logs(&self, _: &str, _: usize) -> Result<String, ClientError> {
        Ok(String::new())
    }
    async fn delete(&self, _: &str) -> Result<(), ClientError> {
        Ok(())
    }
    async fn find(&self, _: &str) -> Result<Option<WorkspaceHandle>, ClientError> {
        Ok(None)
    }
}

const RUNBOOK_HIGH: &str = r#"+++
id = "db-failover"
title = "Database: promote the replica"
[[actions]]
name = "db.promote_replica"
description = "Promote the replica"
risk = "high"
script = "pg_ctl promote -D /var/lib/postgresql/data"
+++
Promote only when the primary is gone.
"#;
const PG: &str = include_str!("../../../infra/runbooks/postgres-blocking-query.md");
const RUNBOOKS: &[&str] = &[
    include_str!("../../../infra/runbooks/demo-service-fault.md"),
    include_str!("../../../infra/runbooks/kubernetes/pod-oom-after-deploy.md"),
    PG,
    RUNBOOK_HIGH,
];

struct World {
    deps: Deps,
    sim: Arc<Sim>,
    planner: Arc<FixedPlanner>,
    ws: Arc<RecordingWorkspaces>,
    orchestrator: Arc<Recorder>,
}

fn service_settings(namespace: &str) -> ServiceSettings {
    ServiceSettings {
        service: "PSVC1".into(),
        checks: vec![CheckSpec {
            name: "health".into(),
            url: "http://checkout.test/health".into(),
            expect_status: 200,
            expect_text: None,
            expect_selector: None,
            steps: vec![],
            max_latency_ms: None,
            deadline_ms: 1000,
        }],
        target: None,
        auto_execute: true,
        approvers: vec![],
        oncall_may_approve: false,
        parameters: BTreeMap::from([
            ("namespace".to_string(), namespace.to_string()),
            ("deployment".to_string(), "checkout-api".to_string()),
        ]),
        updated_at: Utc::now(),
        updated_by: "test".into(),
    }
}

async fn push(store: &dyn IncidentStore, text: &str) {
    for a in selfheal::runbooks::parse_runbook("rb.md", text).unwrap().actions {
        store.put_catalog_action(&a).await.unwrap();
    }
}

async fn world_with(knobs: Knobs) -> World {
    let creds = SimCredentials::default();
    let sim = Sim::new(creds.clone(), knobs);
    let (base, _task) = selfheal_testkit::spawn(sim.router(), 0).await.unwrap();
    *sim.base.lock().unwrap() = base.clone();
    let mut settings = Settings::from_sources(None, |_| None).unwrap();
    settings.pagerduty.api_base = format!("{base}/pagerduty");
    settings.slack.api_base = format!("{base}/slack/api");
    settings.slack.channel = Some("C1".into());
    settings.slack.approvers = vec!["UALICE".into()];
    settings.senso.api_base = format!("{base}/senso");
    settings.timeouts.stability_window_secs = 3600;
    let s = |v: &str| Some(SecretString::from(v.to_string()));
    let secrets = Secrets {
        pagerduty_webhook_secrets: vec![SecretString::from(creds.webhook_secret.clone())],
        pagerduty_api_token: s(&creds.pagerduty_token),
        pagerduty_from_email: Some("selfheal@example.com".into()),
        slack_bot_token: s(&creds.slack_bot_token),
        slack_signing_secret: s(&creds.slack_signing_secret),
        senso_api_key: s(&creds.senso_key),
        ..Default::default()
    };
    let store: Arc<dyn IncidentStore> = Arc::new(TableStore::new(MemoryTable::new()));
    for text in RUNBOOKS {
        push(store.as_ref(), text).await;
    }
    store.put_service_settings(&service_settings("checkout")).await.unwrap();
    let orchestrator = Arc::new(Recorder::default());
    let mut deps = build_deps(settings, secrets, store, orchestrator.clone(), Arc::new(SystemClock::real()));
    let planner = Arc::new(FixedPlanner::default());
    let ws = Arc::new(RecordingWorkspaces::default());
    deps.planner = planner.clone();
    deps.workspaces = ws.clone();
    World { deps, sim, planner, ws, orchestrator }
}

async fn world() -> World {
    world_with(Knobs::default()).await
}

fn catalog(runbook: &str, action: &str, parameters: Value) -> PlannedAction {
    PlannedAction::Catalog {
        runbook_id: RunbookId::parse(runbook).unwrap(),
        action: ActionName::parse(action).unwrap(),
        parameters,
    }
}

/// A plan as the adapter hands it over (before the planning stage renders and binds it).
fn proposed(action: PlannedAction, risk: RiskLevel) -> Plan {
    Plan {
        analysis: "a".into(),
        runbook_sources: vec![],
        risks: vec![],
        risk,
        hash: Plan::action_hash(&action),
        action,
        rollback: "none".into(),
        expected_outcome: "healthy".into(),
        verification_hints: vec![],
        script: None,
        catalog_version: None,
        model_chosen: vec![],
    }
}

/// A confident investigator, a strong runbook match, PagerDuty saying triggered.
async fn incident(w: &World, id: &str, title: &str, root_cause: &str) -> IncidentId {
    let id = IncidentId::parse(id).unwrap();
    let mut incident = Incident::new(
        id.clone(),
        title.into(),
        ServiceRef { id: ServiceId::parse("PSVC1").unwrap(), name: ServiceName::parse("checkout").unwrap() },
        Urgency::High,
        Utc::now(),
    );
    incident.number = Some(7);
    incident.hypothesis = Some(Hypothesis {
        root_cause: root_cause.into(),
        confidence: Some(Confidence::parse(0.97).unwrap()),
        evidence: vec![],
        alternatives: vec![],
        services: vec![],
    });
    incident.runbooks = ["demo-service-fault", "pod-oom-after-deploy", "postgres-blocking-query", "db-failover"]
        .iter()
        .map(|rb| RunbookMatch {
            runbook_id: Some(RunbookId::parse(*rb).unwrap()),
            title: rb.to_string(),
            content_id: None,
            score: Confidence::parse(0.95).unwrap(),
            excerpt: String::new(),
        })
        .collect();
    incident.match_score = Some(Confidence::parse(0.95).unwrap());
    w.deps.store.create_incident(&incident).await.unwrap();
    w.sim.set_incident_status(id.as_str(), "triggered");
    id
}

async fn op(w: &World, f: Function, op: &str, id: &IncidentId) -> Result<Value, StageError> {
    stages::handle(&w.deps, f, json!({"op": op, "incident_id": id.as_str()})).await
}

async fn plan_and_decide(w: &World, id: &IncidentId, plan: Plan) -> Decision {
    *w.planner.0.lock().unwrap() = Some(plan);
    op(w, Function::Planner, "plan_remediation", id).await.unwrap();
    op(w, Function::Planner, "decide", id).await.unwrap();
    load(w, id).await.decision.unwrap()
}

async fn load(w: &World, id: &IncidentId) -> Incident {
    w.deps.store.get_incident(id).await.unwrap().unwrap()
}

async fn approve(w: &World, id: &IncidentId) {
    let hash = load(w, id).await.plan.unwrap().hash;
    stages::update(&w.deps, id, |i| {
        i.approval = Some(ApprovalDecision {
            approval_id: ApprovalId::parse("abcdefgh12345678").unwrap(),
            status: ApprovalStatus::Approved,
            decided_by: Some(UserId::parse("UALICE").unwrap()),
            decided_at: Some(Utc::now()),
            plan_hash: hash.clone(),
            reason: None,
        });
        Ok(())
    })
    .await
    .unwrap();
}

async fn execute(w: &World, id: &IncidentId) -> Result<Value, StageError> {
    op(w, Function::Remediate, "provision_workspace", id).await
}

async fn refusals(w: &World, id: &IncidentId) -> Vec<String> {
    w.deps
        .store
        .audit_trail(id)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.kind == "execution_refused")
        .map(|e| e.detail["reason"].as_str().unwrap_or_default().to_string())
        .collect()
}

// ------------------------------------------------------------------------------ 1. risk

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_runbooks_declared_risk_rules_not_the_models() {
    let w = world().await;
    let id = incident(&w, "QRISK1", "db down", "primary lost").await;
    let d = plan_and_decide(&w, &id, proposed(catalog("db-failover", "db.promote_replica", json!({})), RiskLevel::Low))
        .await;
    assert_eq!((d.route, d.rule.as_str()), (Route::Approval, "high_risk"), "{}", d.explanation);
    assert!(d.explanation.contains("declared by the runbook; the model said low"), "{}", d.explanation);
    assert_eq!(d.inputs["declared_risk"], "high");
    assert_eq!(d.inputs["model_risk"], "low");
    assert_eq!(execute(&w, &id).await.unwrap_err().error_name(), "Stopped");
    assert!(w.ws.0.lock().unwrap().is_empty());

    // A medium action the model calls low runs as medium, and the decision says so.
    let id = incident(&w, "QRISK2", "checkout OOM", "memory regression").await;
    let d = plan_and_decide(
        &w,
        &id,
        proposed(catalog("pod-oom-after-deploy", "k8s.rollout_undo", json!({})), RiskLevel::Low),
    )
    .await;
    assert_eq!(d.route, Route::Auto);
    assert!(d.explanation.contains("medium (declared by the runbook; the model said low)"), "{}", d.explanation);
}

// ------------------------------------------------------------------------------ 2. binding

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_approval_binds_the_rendered_script_and_the_catalog_version() {
    let w = world().await;
    let id = incident(&w, "QBIND1", "writes time out", "a blocking query").await;
    let d = plan_and_decide(
        &w,
        &id,
        proposed(catalog("postgres-blocking-query", "postgres.cancel_query", json!({"pid": 4242})), RiskLevel::Low),
    )
    .await;
    assert_eq!(d.route, Route::Approval);
    let plan = load(&w, &id).await.plan.unwrap();
    let script = plan.script.clone().unwrap();
    assert!(script.contains("pg_cancel_backend(4242)"));
    assert_eq!(plan.hash, Plan::binding_hash(&plan.action, Some(&script), plan.catalog_version.as_deref()));
    assert_ne!(plan.hash, Plan::action_hash(&plan.action), "the hash covers the script and the catalog version");
    approve(&w, &id).await;

    // A push between the approval and the execution changes what would run: refused.
    push(w.deps.store.as_ref(), &PG.replace("pg_cancel_backend", "pg_terminate_backend")).await;
    let err = execute(&w, &id).await.unwrap_err();
    assert_eq!(err.error_name(), "Stopped");
    assert!(err.to_string().contains("changed since the plan was approved"), "{err}");
    assert!(refusals(&w, &id).await.iter().any(|r| r.contains("catalog action is now version")), "audited");
    assert!(w.ws.0.lock().unwrap().is_empty(), "nothing ran under the old approval");

    // The catalog as it was approved: exactly the approved script runs.
    push(w.deps.store.as_ref(), PG).await;
    execute(&w, &id).await.unwrap();
    assert_eq!(w.ws.0.lock().unwrap().clone(), vec![script]);

    // A value from the service's settings changed after the approval: refused too.
    let id = incident(&w, "QBIND2", "checkout OOM", "memory regression").await;
    plan_and_decide(&w, &id, proposed(catalog("pod-oom-after-deploy", "k8s.rollout_undo", json!({})), RiskLevel::High))
        .await;
    approve(&w, &id).await;
    w.deps.store.put_service_settings(&service_settings("checkout-canary")).await.unwrap();
    let err = execute(&w, &id).await.unwrap_err();
    assert!(err.to_string().contains("rendered script is now"), "{err}");
    assert_eq!(w.ws.0.lock().unwrap().len(), 1, "still only the first fix ran");
}

// ------------------------------------------------------------------------------ 3. targets

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_target_comes_from_the_service_never_from_the_model() {
    let w = world().await;
    let id = incident(&w, "QTGT1", "checkout OOM", "memory regression").await;
    let steered = catalog(
        "pod-oom-after-deploy",
        "k8s.rollout_undo",
        json!({"namespace": "kube-system", "deployment": "coredns"}),
    );
    let d = plan_and_decide(&w, &id, proposed(steered, RiskLevel::Low)).await;
    assert_eq!((d.route, d.rule.as_str()), (Route::Escalate, "plan_rejected"));
    assert!(d.explanation.contains("service's settings"), "{}", d.explanation);
    assert_eq!(execute(&w, &id).await.unwrap_err().error_name(), "Stopped");

    let id = incident(&w, "QTGT2", "checkout OOM", "memory regression").await;
    let d = plan_and_decide(
        &w,
        &id,
        proposed(catalog("pod-oom-after-deploy", "k8s.rollout_undo", json!({})), RiskLevel::Low),
    )
    .await;
    assert_eq!(d.route, Route::Auto);
    execute(&w, &id).await.unwrap();
    let ran = w.ws.0.lock().unwrap().clone();
    assert!(ran[0].contains("kubectl -n 'checkout' rollout undo deployment/'checkout-api'"), "{}", ran[0]);

    // Free text the model chose goes to a person, highlighted in the message.
    let id = incident(&w, "QTGT3", "writes time out", "a blocking query").await;
    let d = plan_and_decide(
        &w,
        &id,
        proposed(catalog("postgres-blocking-query", "postgres.terminate_backend", json!({"pid": 77})), RiskLevel::Low),
    )
    .await;
    assert_eq!((d.route, d.rule.as_str()), (Route::Approval, "model_chosen_parameters"));
    stages::handle(
        &w.deps,
        Function::Approval,
        json!({"op": "request_approval", "incident_id": id.as_str(), "task_token": "tok-1"}),
    )
    .await
    .unwrap();
    let posted = w.sim.slack_messages().into_iter().find(|m| Sim::approval_id_of(m).is_some()).unwrap();
    let blocks = posted.blocks.to_string();
    assert!(blocks.contains("Chosen by the model") && blocks.contains("`pid` = `77`"), "{blocks}");
}

// ------------------------------------------------------------------------------ 5. Slack

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn approvers_see_the_whole_script_escaped_or_cannot_approve() {
    let w = world().await;
    let hostile = "<!channel> URGENT <https://evil.example/approve|Approve here> & *bold*";
    let id = incident(&w, "QSLACK1", hostile, hostile).await;
    stages::update(&w.deps, &id, |i| {
        i.html_url = Some("https://evil.example/incidents/QSLACK1".into());
        Ok(())
    })
    .await
    .unwrap();
    // A script far longer than a message: it goes as a file, whole.
    let long: String = (0..400).map(|i| format!("echo step {i} && sleep 0\n")).collect();
    let plan = proposed(PlannedAction::Script { language: "bash".into(), body: long.clone() }, RiskLevel::Low);
    plan_and_decide(&w, &id, plan).await;
    stages::handle(
        &w.deps,
        Function::Approval,
        json!({"op": "request_approval", "incident_id": id.as_str(), "task_token": "tok-1"}),
    )
    .await
    .unwrap();
    let files = w.sim.slack_files();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].content.as_deref(), Some(long.as_str()), "the file is the whole script");
    assert_eq!(files[0].channel.as_deref(), Some("C1"), "shared into the channel");
    let posted = w.sim.slack_messages().into_iter().find(|m| Sim::approval_id_of(m).is_some()).unwrap();
    let blocks = posted.blocks.to_string();
    assert!(blocks.contains(&files[0].id), "the message points at the file");
    assert!(blocks.contains(&selfheal::sha256_hex(long.as_bytes())), "with the script's hash");
    for forbidden in ["<!channel>", "<https://evil", "evil.example/incidents"] {
        assert!(!blocks.contains(forbidden) && !posted.text.contains(forbidden), "{forbidden} got through: {blocks}");
    }
    assert!(blocks.contains("&lt;!channel&gt;"), "shown, escaped: {blocks}");

    // Uploads refused: the request fails, nothing with buttons is posted.
    let w = world_with(Knobs { slack_uploads_disabled: true, ..Knobs::default() }).await;
    let id = incident(&w, "QSLACK2", "t", "r").await;
    plan_and_decide(&w, &id, proposed(PlannedAction::Script { language: "bash".into(), body: long }, RiskLevel::Low))
        .await;
    let err = stages::handle(
        &w.deps,
        Function::Approval,
        json!({"op": "request_approval", "incident_id": id.as_str(), "task_token": "tok-2"}),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("cannot be approved"), "{err}");
    assert!(w.sim.slack_messages().iter().all(|m| Sim::approval_id_of(m).is_none()), "no approvable message");
}

// ------------------------------------------------------------------------------ 6. resolved

fn envelope(event_id: &str, event_type: &str, data: Value) -> Vec<u8> {
    json!({"event": {"id": event_id, "event_type": event_type, "resource_type": "incident",
        "occurred_at": "2026-11-28T10:00:00.000Z", "agent": {"id": "PHUMAN", "type": "user_reference"},
        "client": null, "data": data}})
    .to_string()
    .into_bytes()
}

fn signed(w: &World, body: &[u8], webhook_id: &str) -> HttpRequest {
    HttpRequest::new(
        vec![
            ("X-PagerDuty-Signature".into(), sign_pagerduty(w.sim.creds.webhook_secret.as_bytes(), body)),
            ("X-Webhook-Id".into(), webhook_id.into()),
            ("Content-Type".into(), "application/json".into()),
        ],
        body.to_vec(),
    )
}

fn trigger(id: &str, alert_key: &str) -> Value {
    let mut data = Sim::incident_data(id, 7, "checkout down", "PSVC1", "checkout");
    data["incident_key"] = json!(alert_key);
    data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resolved_incident_is_never_fixed() {
    let w = world().await;
    // Resolved in PagerDuty, its webhook not (yet) here: the gate's fresh read refuses.
    let id = incident(&w, "QRES1", "checkout 504", "fault flag").await;
    let d = plan_and_decide(
        &w,
        &id,
        proposed(catalog("demo-service-fault", "demo.clear_fault", json!({})), RiskLevel::Low),
    )
    .await;
    assert_eq!(d.route, Route::Auto);
    w.sim.set_incident_status(id.as_str(), "resolved");
    let err = execute(&w, &id).await.unwrap_err();
    assert!(err.to_string().contains("PagerDuty reports the incident resolved"), "{err}");
    assert!(refusals(&w, &id).await.iter().any(|r| r.contains("resolved")));
    assert_eq!(load(&w, &id).await.status, IncidentStatus::ResolvedByHuman);
    assert!(w.ws.0.lock().unwrap().is_empty());
    // PagerDuty does not know it (or cannot say): nothing runs either.
    let id = incident(&w, "QRES2", "checkout 504", "fault flag").await;
    plan_and_decide(&w, &id, proposed(catalog("demo-service-fault", "demo.clear_fault", json!({})), RiskLevel::Low))
        .await;
    w.sim.pd.lock().unwrap().status.remove("QRES2");
    assert!(execute(&w, &id).await.is_err());
    assert!(w.ws.0.lock().unwrap().is_empty());

    // Resolved before its trigger arrived: the trigger starts nothing.
    let resolved = envelope("01RESOLVED", "incident.resolved", trigger("QRES3", "k3"));
    assert_eq!(
        intake::handle_webhook(&w.deps, &signed(&w, &resolved, "wh-r")).await.body["status"],
        "resolved_before_triggered"
    );
    let triggered = envelope("01TRIGGERED", "incident.triggered", trigger("QRES3", "k3"));
    let r = intake::handle_webhook(&w.deps, &signed(&w, &triggered, "wh-t")).await;
    assert_eq!(r.body["status"], "already_resolved");
    assert!(w.orchestrator.starts.lock().unwrap().is_empty(), "no execution");
    let stored = load(&w, &IncidentId::parse("QRES3").unwrap()).await;
    assert_eq!(stored.status, IncidentStatus::ResolvedByHuman);
    let trail = w.deps.store.audit_trail(&stored.id).await.unwrap();
    assert!(trail.iter().any(|e| e.kind == "resolved_before_triggered"));
}

// ------------------------------------------------------------------------------ 7. replays

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replayed_body_under_a_new_webhook_id_is_a_duplicate() {
    let w = world().await;
    let body = envelope("01EVTREPLAY", "incident.triggered", trigger("QREPLAY1", "k1"));
    let first = intake::handle_webhook(&w.deps, &signed(&w, &body, "wh-1")).await;
    assert_eq!((first.status, first.body["status"].as_str()), (202, Some("incident_created")));
    // X-Webhook-Id is not signed: the same signed body under another id is the same event.
    let replay = intake::handle_webhook(&w.deps, &signed(&w, &body, "wh-2")).await;
    assert_eq!((replay.status, replay.body["status"].as_str()), (202, Some("duplicate")));
    assert_eq!(w.orchestrator.starts.lock().unwrap().len(), 1, "processed once");
    // The same event id on another signed body: refused.
    let other = envelope("01EVTREPLAY", "incident.triggered", trigger("QREPLAY2", "k2"));
    assert_eq!(intake::handle_webhook(&w.deps, &signed(&w, &other, "wh-3")).await.status, 409);
    assert!(w.deps.store.get_incident(&IncidentId::parse("QREPLAY2").unwrap()).await.unwrap().is_none());
}

// ------------------------------------------------------------------------------ 8. re-fires

/// An incident selfheal fixed with `demo.clear_fault` and resolved (its window now open).
async fn fixed(w: &World, id: &str, alert_key: &str, root_cause: &str) -> IncidentId {
    fixed_with(w, id, alert_key, root_cause, catalog("demo-service-fault", "demo.clear_fault", json!({}))).await
}

/// An incident selfheal fixed with `action` and resolved.
async fn fixed_with(w: &World, id: &str, alert_key: &str, root_cause: &str, action: PlannedAction) -> IncidentId {
    let body = envelope(&format!("01EVT{id}"), "incident.triggered", trigger(id, alert_key));
    assert_eq!(intake::handle_webhook(&w.deps, &signed(w, &body, &format!("wh-{id}"))).await.status, 202);
    let id = IncidentId::parse(id).unwrap();
    stages::update(&w.deps, &id, |i| {
        i.hypothesis = Some(Hypothesis {
            root_cause: root_cause.into(),
            confidence: Some(Confidence::parse(0.97).unwrap()),
            evidence: vec![],
            alternatives: vec![],
            services: vec![],
        });
        i.runbooks = ["demo-service-fault", "pod-oom-after-deploy"]
            .iter()
            .map(|rb| RunbookMatch {
                runbook_id: Some(RunbookId::parse(*rb).unwrap()),
                title: rb.to_string(),
                content_id: None,
                score: Confidence::parse(0.95).unwrap(),
                excerpt: String::new(),
            })
            .collect();
        i.match_score = Some(Confidence::parse(0.95).unwrap());
        Ok(())
    })
    .await
    .unwrap();
    let d = plan_and_decide(w, &id, proposed(action, RiskLevel::Low)).await;
    assert_eq!(d.route, Route::Auto);
    op(w, Function::PagerDuty, "resolve_incident", &id).await.unwrap();
    id
}

async fn ineffective_count(w: &World) -> u32 {
    let (runbook, action) =
        (RunbookId::parse("demo-service-fault").unwrap(), ActionName::parse("demo.clear_fault").unwrap());
    w.deps.store.get_catalog_action(&runbook, &action).await.unwrap().unwrap().ineffective_count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_alert_again_is_a_refire_at_once_and_blocks_the_same_fix() {
    let w = world().await;
    let a = fixed(&w, "QFIRE1", "alert-checkout-504", "upstream fault flag left set").await;
    // Another alert on the same service is not a re-fire.
    let body = envelope("01EVTOTHER", "incident.triggered", trigger("QOTHER1", "alert-disk-full"));
    intake::handle_webhook(&w.deps, &signed(&w, &body, "wh-other")).await;
    assert_eq!(load(&w, &a).await.effectiveness, None, "another alert on the service is not the fix failing");
    // The same alert again: ineffective at once, counted once, audited on both.
    let body = envelope("01EVTAGAIN", "incident.triggered", trigger("QFIRE2", "alert-checkout-504"));
    assert_eq!(intake::handle_webhook(&w.deps, &signed(&w, &body, "wh-again")).await.status, 202);
    let earlier = load(&w, &a).await;
    assert_eq!(earlier.effectiveness, Some(Effectiveness::Ineffective));
    assert!(earlier.ineffective_because.as_deref().unwrap().contains("QFIRE2"));
    assert_eq!(ineffective_count(&w).await, 1);
    assert!(w.deps.store.audit_trail(&a).await.unwrap().iter().any(|e| e.kind == "refired"));
    let later = IncidentId::parse("QFIRE2").unwrap();
    assert!(w.deps.store.audit_trail(&later).await.unwrap().iter().any(|e| e.kind == "refire_of"));
    // The end of the window keeps the verdict, counts nothing twice, and the ingest says why.
    let out = op(&w, Function::PagerDuty, "check_refire", &a).await.unwrap();
    assert_eq!(out["effectiveness"], "ineffective");
    assert_eq!(ineffective_count(&w).await, 1);
    op(&w, Function::Senso, "ingest_resolution", &a).await.unwrap();
    let docs = w.sim.senso_documents();
    assert!(
        docs.iter().any(|(_, t)| t
            .contains("effectiveness: ineffective (the same alert (incident key) fired again as incident QFIRE2)")),
        "{docs:?}"
    );

    // While the window is open the same action cannot auto-run on the service.
    stages::update(&w.deps, &later, |i| {
        i.hypothesis = Some(Hypothesis {
            root_cause: "upstream fault flag left set".into(),
            confidence: Some(Confidence::parse(0.97).unwrap()),
            evidence: vec![],
            alternatives: vec![],
            services: vec![],
        });
        i.runbooks = load_runbooks();
        i.match_score = Some(Confidence::parse(0.95).unwrap());
        Ok(())
    })
    .await
    .unwrap();
    let d = plan_and_decide(
        &w,
        &later,
        proposed(catalog("demo-service-fault", "demo.clear_fault", json!({})), RiskLevel::Low),
    )
    .await;
    assert_eq!((d.route, d.rule.as_str()), (Route::Approval, "fix_in_stability_window"), "{}", d.explanation);
    assert!(d.explanation.contains("QFIRE1"));
    // Once the window is over, it may again.
    stages::update(&w.deps, &a, |i| {
        i.resolved_at = Some(Utc::now() - chrono::Duration::hours(2));
        Ok(())
    })
    .await
    .unwrap();
    let d = plan_and_decide(
        &w,
        &later,
        proposed(catalog("demo-service-fault", "demo.clear_fault", json!({})), RiskLevel::Low),
    )
    .await;
    assert_eq!(d.route, Route::Auto, "{}", d.explanation);
}

fn load_runbooks() -> Vec<RunbookMatch> {
    vec![RunbookMatch {
        runbook_id: Some(RunbookId::parse("demo-service-fault").unwrap()),
        title: "demo".into(),
        content_id: None,
        score: Confidence::parse(0.95).unwrap(),
        excerpt: String::new(),
    }]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_root_cause_again_is_a_refire_and_another_cause_is_not() {
    let w = world().await;
    let a = fixed(&w, "QROOT1", "alert-1", "Upstream fault flag left set on checkout (since 10:02)").await;
    let b = fixed_with(
        &w,
        "QROOT2",
        "alert-2",
        "Pods OOMKilled after the deploy",
        catalog("pod-oom-after-deploy", "k8s.rollout_undo", json!({})),
    )
    .await;
    // A new incident, another alert key, the same cause in other words and numbers.
    let body = envelope("01EVTROOT3", "incident.triggered", trigger("QROOT3", "alert-3"));
    intake::handle_webhook(&w.deps, &signed(&w, &body, "wh-root3")).await;
    let c = IncidentId::parse("QROOT3").unwrap();
    stages::update(&w.deps, &c, |i| {
        i.hypothesis = Some(Hypothesis {
            root_cause: "checkout: upstream FAULT flag left set (since 11:40)".into(),
            confidence: Some(Confidence::parse(0.9).unwrap()),
            evidence: vec![],
            alternatives: vec![],
            services: vec![],
        });
        i.runbooks = load_runbooks();
        i.match_score = Some(Confidence::parse(0.95).unwrap());
        Ok(())
    })
    .await
    .unwrap();
    plan_and_decide(&w, &c, proposed(catalog("demo-service-fault", "demo.clear_fault", json!({})), RiskLevel::Low))
        .await;
    assert_eq!(load(&w, &a).await.effectiveness, Some(Effectiveness::Ineffective), "same cause: re-fire");
    // The other fix held: its window ends effective (before, any trigger on the service counted).
    assert_eq!(op(&w, Function::PagerDuty, "check_refire", &b).await.unwrap()["effectiveness"], "effective");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resolved_before_triggered_is_remembered_on_every_backend() {
    for (backend, store) in
        [("sqlite", selfheal_tests::sqlite_store().await), ("dynamodb", selfheal_tests::dynamodb_store().await)]
    {
        let id = IncidentId::parse("QEARLY1").unwrap();
        assert_eq!(store.resolved_early(&id).await.unwrap(), None, "{backend}");
        let at = Utc::now();
        store.remember_resolved(&id, at, 48 * 3600).await.unwrap();
        // A redelivery later does not move the first report.
        store.remember_resolved(&id, at + chrono::Duration::minutes(30), 48 * 3600).await.unwrap();
        let seen = store.resolved_early(&id).await.unwrap().expect("remembered");
        assert_eq!(seen.timestamp(), at.timestamp(), "{backend}");
        // Past what it was kept for, it is forgotten.
        let old = IncidentId::parse("QEARLY2").unwrap();
        store.remember_resolved(&old, Utc::now() - chrono::Duration::hours(2), 60).await.unwrap();
        assert_eq!(store.resolved_early(&old).await.unwrap(), None, "{backend}");
    }
}
