//! SaaS adapters against the simulators: Coder lifecycle outcomes, retries on 429/529, and the
//! planner's plans checked against the catalog end to end.

use secrecy::SecretString;
use serde_json::json;
use std::time::Duration;

use selfheal::adapters::anthropic::AnthropicPlanner;
use selfheal::adapters::coder::{CoderApi, TemplateRef};
use selfheal::adapters::senso::SensoKb;
use selfheal::config::SensoApi;
use selfheal::domain::*;
use selfheal::error::ClientError;
use selfheal::ports::*;
use selfheal_testkit::sim::{CoderMode, Knobs, PlannerMode, Sim, SimCredentials};

async fn sim(knobs: Knobs) -> (std::sync::Arc<Sim>, String) {
    let sim = Sim::new(SimCredentials::default(), knobs);
    let (base, _t) = selfheal_testkit::spawn(sim.router(), 0).await.unwrap();
    *sim.base.lock().unwrap() = base.clone();
    (sim, base)
}

fn request(name: &str, script: &str) -> WorkspaceRequest {
    use base64::Engine as _;
    WorkspaceRequest {
        name: name.into(),
        incident_id: IncidentId::parse("PINC1").unwrap(),
        service: "checkout".into(),
        severity: "high".into(),
        script_b64: base64::engine::general_purpose::STANDARD.encode(script),
        target: "http://127.0.0.1:9/health".into(),
    }
}

async fn settle(coder: &CoderApi, h: &WorkspaceHandle) -> WorkspaceProgress {
    for _ in 0..200 {
        match coder.progress(h).await.unwrap() {
            WorkspaceProgress::Pending { .. } => tokio::time::sleep(Duration::from_millis(20)).await,
            other => return other,
        }
    }
    panic!("workspace never settled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coder_lifecycle_outcomes_and_cleanup() {
    for (mode, script, expect) in [
        (CoderMode::Normal, "echo fixed-it", "ready"),
        (CoderMode::Normal, "echo nope >&2; exit 3", "start_error"),
        (CoderMode::BuildFails, "true", "build failed"),
        (CoderMode::StartTimeout, "true", "start_timeout"),
        (CoderMode::NoProvisioners, "true", "no provisioner"),
    ] {
        let (sim, base) = sim(Knobs { coder: mode, ..Knobs::default() }).await;
        let coder = CoderApi::new(
            &format!("{base}/coder"),
            SecretString::from(sim.creds.coder_token.clone()),
            "me",
            TemplateRef::Version("tv-1".into()),
        )
        .unwrap();
        let h = coder.create(&request("fix-pinc1-abc", script)).await.unwrap();
        let outcome = settle(&coder, &h).await;
        match (&outcome, expect) {
            (WorkspaceProgress::Ready { agent_id }, "ready") => {
                assert!(coder.agent_logs(agent_id, 1000).await.unwrap().contains("fixed-it"));
            }
            (WorkspaceProgress::Failed { reason, agent_id }, e) => {
                assert!(reason.contains(e), "{mode:?}: {reason}");
                if let Some(agent) = agent_id.as_deref().filter(|_| e == "start_error") {
                    assert!(coder.agent_logs(agent, 1000).await.unwrap().contains("nope"));
                }
            }
            other => panic!("{mode:?}: unexpected {other:?}"),
        }
        coder.delete(&h.id).await.unwrap();
        coder.delete(&h.id).await.unwrap(); // already gone: still success
        assert_eq!(sim.workspace_counts(), (1, 1), "{mode:?}: every workspace created is deleted");
    }
}

fn coder_for(sim: &Sim, base: &str) -> CoderApi {
    CoderApi::new(
        &format!("{base}/coder"),
        SecretString::from(sim.creds.coder_token.clone()),
        "me",
        TemplateRef::Version("tv-1".into()),
    )
    .unwrap()
}

/// Real Coder refuses a build while another is active (409); the delete cancels the active
/// build, waits for it to settle, deletes and confirms the workspace is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coder_delete_cancels_an_active_build_and_confirms_the_workspace_is_gone() {
    let (sim, base) = sim(Knobs { coder: CoderMode::SlowBuild, ..Knobs::default() }).await;
    let coder = coder_for(&sim, &base);
    let h = coder.create(&request("fix-pinc1-slow", "true")).await.unwrap();
    // What a naive client meets: 409 while the start build runs.
    let raw = reqwest::Client::new()
        .post(format!("{base}/coder/api/v2/workspaces/{}/builds", h.id))
        .header("Coder-Session-Token", &sim.creds.coder_token)
        .json(&json!({"transition": "delete"}))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status().as_u16(), 409);
    assert!(raw.text().await.unwrap().contains("A workspace build is already active"));
    coder.delete(&h.id).await.unwrap();
    let ws = sim.workspaces().into_iter().find(|w| w.id == h.id).unwrap();
    assert!(ws.deleted, "gone");
    let jobs: Vec<(String, String)> = ws.builds.iter().map(|b| (b.transition.clone(), b.job_status.clone())).collect();
    assert_eq!(jobs, [("start".into(), "canceled".into()), ("delete".into(), "succeeded".into())]);
    assert_eq!(sim.coder_edges().0, 1, "only the naive post met a 409");
    // Gone: 410 by id, 404 by name, and a second delete is success.
    assert_eq!(coder.find("fix-pinc1-slow").await.unwrap(), None);
    coder.delete(&h.id).await.unwrap();
    assert_eq!(sim.workspace_counts(), (1, 1));
}

/// A delete build slower than the delete's deadline: a retryable error, and the next call
/// waits for the same delete build instead of posting another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_delete_is_resumed_not_repeated() {
    let (sim, base) = sim(Knobs { coder_delete_ms: 1200, ..Knobs::default() }).await;
    let coder = coder_for(&sim, &base).with_settle_deadline(Duration::from_millis(400), Duration::from_millis(50));
    let h = coder.create(&request("fix-pinc1-slowdel", "true")).await.unwrap();
    settle(&coder, &h).await;
    let err = coder.delete(&h.id).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains("not deleted yet"), "{err}");
    let mut attempts = 0;
    loop {
        attempts += 1;
        match coder.delete(&h.id).await {
            Ok(()) => break,
            Err(e) if e.is_retryable() && attempts < 10 => continue,
            Err(e) => panic!("{e}"),
        }
    }
    let delete_posts =
        sim.calls().iter().filter(|c| c.method == "POST" && c.path.ends_with("/builds") && c.status == 201).count();
    assert_eq!(delete_posts, 1, "one delete build, waited for across calls");
    assert!(sim.live_workspaces().is_empty());
}

/// A create whose answer was lost is adopted on the retry (409: the name is taken).
#[tokio::test]
async fn a_create_that_conflicts_adopts_the_existing_workspace() {
    let (sim, base) = sim(Knobs::default()).await;
    let coder = coder_for(&sim, &base);
    let first = coder.create(&request("fix-pinc1-adopt", "true")).await.unwrap();
    let again = coder.create(&request("fix-pinc1-adopt", "true")).await.unwrap();
    assert_eq!(first.id, again.id);
    assert_eq!(sim.workspace_counts().0, 1);
    // Parameters the template does not declare are refused, as Coder refuses them.
    let url = format!("{base}/coder/api/v2/users/me/workspaces");
    let body = json!({"name": "fix-extra", "template_version_id": "tv-1", "rich_parameter_values": [
        {"name": "incident_id", "value": "PINC1"}, {"name": "service", "value": "x"},
        {"name": "fix_script_b64", "value": ""}, {"name": "fix_script_sha256", "value": "0".repeat(64)},
        {"name": "target", "value": "http://t"}, {"name": "shell", "value": "rm -rf /"}]});
    let raw = reqwest::Client::new()
        .post(url)
        .header("Coder-Session-Token", &sim.creds.coder_token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status().as_u16(), 400);
    assert!(raw.text().await.unwrap().contains("not present in the template"));
}

#[tokio::test]
async fn coder_503_and_429_are_retried_on_create_and_delete() {
    let (sim, base) = sim(Knobs { coder_unavailable: 1, coder_rate_limits: 1, ..Knobs::default() }).await;
    let coder = CoderApi::new(
        &format!("{base}/coder"),
        SecretString::from(sim.creds.coder_token.clone()),
        "me",
        TemplateRef::Version("v".into()),
    )
    .unwrap();
    let h = coder.create(&request("fix-retry-1", "true")).await.unwrap();
    sim.knobs.lock().unwrap().coder_unavailable = 2;
    coder.delete(&h.id).await.unwrap();
    let statuses: Vec<u16> =
        sim.calls().iter().filter(|c| c.api == "coder" && c.method == "POST").map(|c| c.status).collect();
    assert_eq!(statuses, [503, 429, 201, 503, 503, 201]);
    assert_eq!(sim.workspace_counts(), (1, 1));
    // Past the retry budget the error stays retryable, so the state machine retries later.
    sim.knobs.lock().unwrap().coder_unavailable = 10;
    let err = coder.create(&request("fix-retry-2", "true")).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
}

#[tokio::test]
async fn coder_refuses_invalid_names_and_bad_tokens() {
    let (sim, base) = sim(Knobs::default()).await;
    let ok = CoderApi::new(
        &format!("{base}/coder"),
        SecretString::from(sim.creds.coder_token.clone()),
        "me",
        TemplateRef::Version("v".into()),
    )
    .unwrap();
    assert!(matches!(ok.create(&request("fix_with_underscore", "true")).await, Err(ClientError::Invalid { .. })));
    let bad = CoderApi::new(
        &format!("{base}/coder"),
        SecretString::from("wrong".to_string()),
        "me",
        TemplateRef::Version("v".into()),
    )
    .unwrap();
    let err = bad.create(&request("fix-1", "true")).await.unwrap_err();
    assert!(matches!(err, ClientError::Status { status: 401, retryable: false, .. }), "{err:?}");
    assert_eq!(sim.workspace_counts(), (0, 0));
}

#[tokio::test]
async fn senso_429_is_retried_honouring_retry_after() {
    let (sim, base) = sim(Knobs { senso_rate_limits: 2, ..Knobs::default() }).await;
    let kb =
        SensoKb::new(&format!("{base}/senso"), SecretString::from(sim.creds.senso_key.clone()), SensoApi::Org).unwrap();
    let id =
        kb.ingest(DocumentKind::Runbook, "demo: a runbook", "runbook-id: demo\nupstream fault flag").await.unwrap();
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(kb.ingest_status(&id).await.unwrap(), IngestStatus::Complete);
    let results = kb.search("upstream fault flag", 5, &SearchScope::default()).await.unwrap();
    assert_eq!(results.hits.len(), 1);
    let statuses: Vec<u16> = sim.calls().iter().filter(|c| c.path == "/org/search").map(|c| c.status).collect();
    assert_eq!(statuses, [429, 429, 200]);
    let bad = SensoKb::new(&format!("{base}/senso"), SecretString::from("nope".to_string()), SensoApi::Org).unwrap();
    assert!(matches!(
        bad.search("x", 1, &SearchScope::default()).await,
        Err(ClientError::Status { status: 401, retryable: false, .. })
    ));
}

/// A plan request with one catalog action (shared with the Bedrock tests).
pub(crate) fn plan_request() -> PlanRequest {
    PlanRequest {
        incident_title: "checkout 504".into(),
        service: "checkout".into(),
        hypothesis: Hypothesis {
            root_cause: "upstream fault flag".into(),
            confidence: Some(Confidence::parse(0.95).unwrap()),
            evidence: vec!["/health answers 504".into()],
            alternatives: vec![],
            services: vec![],
        },
        runbooks: vec![RunbookMatch {
            runbook_id: Some(RunbookId::parse("demo-service-fault").unwrap()),
            title: "demo".into(),
            content_id: None,
            score: Confidence::parse(0.9).unwrap(),
            excerpt: "clear the flag".into(),
        }],
        catalog: vec![CatalogAction {
            runbook_id: RunbookId::parse("demo-service-fault").unwrap(),
            name: ActionName::parse("demo.clear_fault").unwrap(),
            description: "clear".into(),
            parameters: json!({"type": "object", "properties": {}}),
            script_template: "true".into(),
            risk: RiskLevel::Low,
            ineffective_count: 0,
            effective_count: 0,
        }],
    }
}

#[tokio::test]
async fn anthropic_overload_is_retried_then_gives_up_as_retryable() {
    let (sim, base) = sim(Knobs { anthropic_overloads: 2, ..Knobs::default() }).await;
    let planner = AnthropicPlanner::new(
        &format!("{base}/anthropic"),
        SecretString::from(sim.creds.anthropic_key.clone()),
        "claude-sonnet-4-5",
        2048,
    )
    .unwrap();
    let plan = planner.plan(&plan_request()).await.unwrap();
    assert!(matches!(plan.action, PlannedAction::Catalog { ref action, .. } if action.as_str() == "demo.clear_fault"));
    let statuses: Vec<u16> = sim.calls().iter().filter(|c| c.api == "anthropic").map(|c| c.status).collect();
    assert_eq!(statuses, [529, 529, 200]);

    sim.knobs.lock().unwrap().anthropic_overloads = 10;
    let err = planner.plan(&plan_request()).await.unwrap_err();
    assert!(err.is_retryable(), "overload after the retry budget stays retryable for the state machine: {err:?}");

    let unauthorised =
        AnthropicPlanner::new(&format!("{base}/anthropic"), SecretString::from("sk-wrong".to_string()), "m", 1024)
            .unwrap();
    let err = unauthorised.plan(&plan_request()).await.unwrap_err();
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("authentication_error"), "{err}");
}

/// Run one incident on a demo harness with the given planner behaviour.
async fn incident_with(planner: PlannerMode, until_end: bool) -> (serde_json::Value, std::sync::Arc<Sim>) {
    let mut out = Vec::new();
    let h = selfheal_cli::demo::harness(selfheal_cli::demo::Scenario::Auto, &mut out).await.unwrap();
    h.sim.knobs.lock().unwrap().planner = planner;
    let id = "QPLAN1";
    selfheal_tests::start_demo_incident(&h, id).await;
    let iid = IncidentId::parse(id).unwrap();
    if until_end {
        let rec = h.stack.engine.wait_for("inc-QPLAN1-incident", Duration::from_secs(30)).await.unwrap();
        assert!(!rec.is_open());
    } else {
        // Until the approval request is out (the run then waits for a person).
        for _ in 0..200 {
            let trail = h.stack.store.audit_trail(&iid).await.unwrap();
            if trail.iter().any(|e| e.kind == "approval_requested") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let inc = h.stack.store.get_incident(&iid).await.unwrap().unwrap();
    (json!({"outcome": inc.outcome, "rule": inc.decision.map(|d| d.rule), "problem": inc.plan_problem}), h.sim.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plan_outside_the_catalog_is_rejected_and_escalated() {
    let (r, sim) = incident_with(PlannerMode::OutsideCatalog, true).await;
    assert_eq!(r["outcome"], "escalated");
    assert_eq!(r["rule"], "plan_rejected");
    assert!(r["problem"].as_str().unwrap().contains("not in the retrieved runbooks' catalog"));
    assert_eq!(sim.workspace_counts(), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_free_form_script_never_auto_executes() {
    let (r, sim) = incident_with(PlannerMode::FreeFormScript, false).await;
    assert_eq!(r["rule"], "free_form_script");
    assert!(sim.slack_messages().iter().any(|m| Sim::approval_id_of(m).is_some()), "an approval request was posted");
    // Nobody approves (no auto-click): the approval is pending until its timeout; nothing ran.
    assert_eq!(sim.workspace_counts(), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_kill_switch_routes_to_a_person_and_blocks_execution() {
    let mut out = Vec::new();
    let h = selfheal_cli::demo::harness(selfheal_cli::demo::Scenario::Auto, &mut out).await.unwrap();
    h.stack.store.set_kill_switch(true, "test", chrono::Utc::now()).await.unwrap();
    let id = "QKILL1";
    selfheal_tests::start_demo_incident(&h, id).await;
    let iid = IncidentId::parse(id).unwrap();
    let mut decision = None;
    for _ in 0..200 {
        if let Some(d) = h.stack.store.get_incident(&iid).await.unwrap().and_then(|i| i.decision) {
            decision = Some(d);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let d = decision.expect("a decision");
    assert_eq!((d.route, d.rule.as_str()), (Route::Approval, "kill_switch"));
    // Even an explicit attempt to provision is refused while the switch is on.
    let err = selfheal::stages::handle(
        &h.stack.deps,
        selfheal::stages::Function::Remediate,
        json!({"op": "provision_workspace", "incident_id": id}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.error_name(), "Stopped");
    assert_eq!(h.sim.workspace_counts(), (0, 0));
    let trail = h.stack.store.audit_trail(&iid).await.unwrap();
    assert!(trail.iter().any(|e| e.kind == "execution_refused"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stats_reflect_resolved_incidents() {
    let mut out = Vec::new();
    let h = selfheal_cli::demo::harness(selfheal_cli::demo::Scenario::Auto, &mut out).await.unwrap();
    let id = "QSTATS1";
    selfheal_tests::start_demo_incident(&h, id).await;
    let rec = h.stack.engine.wait_for("inc-QSTATS1-incident", Duration::from_secs(30)).await.unwrap();
    assert!(!rec.is_open());
    let stats = selfheal_cli::stats::collect(&h.stack.engine, h.stack.store.as_ref(), None).await.unwrap();
    assert_eq!(stats["incidents"], 1);
    assert_eq!(stats["by_outcome"]["resolved"], 1);
    assert_eq!(stats["by_route"]["auto"], 1);
    assert_eq!(stats["auto_executed"], 1, "{stats}");
    assert_eq!(stats["remediation_failures"], 0, "{stats}");
    assert_eq!(stats["budget_exhausted"], 0, "{stats}");
    assert_eq!(stats["escalated_by_reason"], json!({}), "{stats}");
    assert!(stats["time_to_resolve_seconds"]["median"].as_f64().unwrap() > 0.0);
    let later = selfheal_cli::stats::collect(
        &h.stack.engine,
        h.stack.store.as_ref(),
        Some(chrono::Utc::now() + chrono::Duration::hours(1)),
    )
    .await
    .unwrap();
    assert_eq!(later["incidents"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_workspace_created_before_a_crash_is_adopted_not_leaked() {
    use base64::Engine as _;
    let mut out = Vec::new();
    let h = selfheal_cli::demo::harness(selfheal_cli::demo::Scenario::Auto, &mut out).await.unwrap();
    let id = "QADOPT1";
    // What the first (crashed) provisioning attempt created: same name, same script, same target.
    let rb = selfheal::runbooks::parse_runbook("d.md", include_str!("../../../infra/runbooks/demo-service-fault.md"))
        .unwrap();
    let action = PlannedAction::Catalog {
        runbook_id: RunbookId::parse("demo-service-fault").unwrap(),
        action: ActionName::parse("demo.clear_fault").unwrap(),
        parameters: json!({}),
    };
    let name = selfheal::adapters::coder::workspace_name(id, &Plan::action_hash(&action));
    let script = selfheal::runbooks::render_script(&rb.actions[0], &json!({})).unwrap();
    let coder = CoderApi::new(
        &format!("{}/coder", h.sim_base),
        SecretString::from(h.creds.coder_token.clone()),
        "me",
        TemplateRef::Version("v".into()),
    )
    .unwrap();
    coder
        .create(&WorkspaceRequest {
            name: name.clone(),
            incident_id: IncidentId::parse(id).unwrap(),
            service: "checkout".into(),
            severity: "high".into(),
            script_b64: base64::engine::general_purpose::STANDARD.encode(script),
            target: format!("{}/health", h.demo_base),
        })
        .await
        .unwrap();

    selfheal_tests::start_demo_incident(&h, id).await;
    let rec = h.stack.engine.wait_for("inc-QADOPT1-incident", Duration::from_secs(30)).await.unwrap();
    assert!(!rec.is_open());
    let trail = h.stack.store.audit_trail(&IncidentId::parse(id).unwrap()).await.unwrap();
    assert!(trail.iter().any(|e| e.kind == "workspace_adopted"), "adopted");
    assert!(!trail.iter().any(|e| e.kind == "workspace_created"), "not created twice");
    assert_eq!(h.sim.workspace_counts(), (1, 1), "the one workspace was deleted");
    let inc = h.stack.store.get_incident(&IncidentId::parse(id).unwrap()).await.unwrap().unwrap();
    assert_eq!(inc.outcome, Some(Outcome::Resolved));
}
