//! Intake and Slack approvals through the real handlers, with a recording orchestrator that
//! follows Step Functions' semantics (same name + same input = same execution; a spent token
//! answers TaskTimedOut), on the embedded store, against the PagerDuty simulator.

use async_trait::async_trait;
use futures::future::join_all;
use secrecy::SecretString;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use selfheal::config::{Secrets, Settings};
use selfheal::domain::*;
use selfheal::error::OrchestratorError;
use selfheal::ports::*;
use selfheal::signature::{sign_pagerduty, sign_slack};
use selfheal::stages::http::HttpRequest;
use selfheal::stages::{self, Deps, Function, approvals, intake};
use selfheal_testkit::sim::{Knobs, Sim, SimCredentials};

#[derive(Default)]
struct Recorder {
    executions: Mutex<BTreeMap<String, String>>,
    resumes: Mutex<Vec<(String, Value)>>,
    failures: Mutex<Vec<(String, String)>>,
    closed: Mutex<HashSet<String>>,
}

#[async_trait]
impl Orchestrator for Recorder {
    async fn start_execution(&self, name: &str, input: &str) -> Result<ExecutionRef, OrchestratorError> {
        let mut ex = self.executions.lock().unwrap();
        match ex.get(name) {
            Some(existing) if existing != input => Err(OrchestratorError::ExecutionAlreadyExists(name.into())),
            Some(_) => Ok(ExecutionRef { execution_id: format!("arn:exec:{name}"), newly_started: false }),
            None => {
                ex.insert(name.into(), input.into());
                Ok(ExecutionRef { execution_id: format!("arn:exec:{name}"), newly_started: true })
            }
        }
    }
    async fn send_task_success(&self, token: &TaskToken, output: &Value) -> Result<(), OrchestratorError> {
        if !self.closed.lock().unwrap().insert(token.expose().to_string()) {
            return Err(OrchestratorError::TaskClosed);
        }
        self.resumes.lock().unwrap().push((token.expose().to_string(), output.clone()));
        Ok(())
    }
    async fn send_task_failure(&self, token: &TaskToken, error: &str, _cause: &str) -> Result<(), OrchestratorError> {
        if !self.closed.lock().unwrap().insert(token.expose().to_string()) {
            return Err(OrchestratorError::TaskClosed);
        }
        self.failures.lock().unwrap().push((token.expose().to_string(), error.into()));
        Ok(())
    }
    async fn stop_execution(&self, _: &str, _: &str) -> Result<(), OrchestratorError> {
        Ok(())
    }
}

const OLD_SECRET: &str = "whsec-old-secret";
const INVESTIGATOR: &str = "PCLERIC01";

struct Env {
    deps: Arc<Deps>,
    rec: Arc<Recorder>,
    sim: Arc<Sim>,
    creds: SimCredentials,
    _server: tokio::task::JoinHandle<()>,
}

async fn env(store: Arc<dyn IncidentStore>) -> Env {
    env_with(store, |_| {}).await
}

/// [`env`] with the secrets changed (a revoked token, say) before the dependencies are built.
async fn env_with(store: Arc<dyn IncidentStore>, change: impl FnOnce(&mut Secrets)) -> Env {
    let creds = SimCredentials::default();
    let sim = Sim::new(creds.clone(), Knobs::default());
    let (sim_base, server) = selfheal_testkit::spawn(sim.router(), 0).await.unwrap();
    *sim.base.lock().unwrap() = sim_base.clone();
    let mut settings = Settings::from_sources(None, |_| None).unwrap();
    settings.pagerduty.api_base = format!("{sim_base}/pagerduty");
    settings.pagerduty.investigator_ids = vec![INVESTIGATOR.into()];
    settings.slack.api_base = format!("{sim_base}/slack/api");
    settings.slack.channel = Some("C1".into());
    settings.slack.approvers = vec!["UALICE".into(), "UBOB".into()];
    let mut secrets = Secrets {
        pagerduty_webhook_secrets: vec![
            SecretString::from(creds.webhook_secret.clone()),
            SecretString::from(OLD_SECRET.to_string()),
        ],
        pagerduty_api_token: Some(SecretString::from(creds.pagerduty_token.clone())),
        pagerduty_from_email: Some("selfheal@example.com".into()),
        slack_bot_token: Some(SecretString::from(creds.slack_bot_token.clone())),
        slack_signing_secret: Some(SecretString::from(creds.slack_signing_secret.clone())),
        ..Default::default()
    };
    change(&mut secrets);
    let rec = Arc::new(Recorder::default());
    let deps =
        Arc::new(selfheal::wiring::build_deps(settings, secrets, store, rec.clone(), Arc::new(SystemClock::real())));
    Env { deps, rec, sim, creds, _server: server }
}

fn envelope(event_type: &str, data: Value, agent: Option<&str>) -> Vec<u8> {
    json!({"event": {"id": format!("01{}", uuid::Uuid::new_v4().simple()), "event_type": event_type, "resource_type": "incident",
        "occurred_at": "2026-11-28T10:00:00.000Z", "agent": agent.map(|a| json!({"id": a, "type": "user_reference"})),
        "client": null, "data": data}})
    .to_string()
    .into_bytes()
}

fn signed(secret: &str, body: Vec<u8>, webhook_id: &str) -> HttpRequest {
    HttpRequest::new(
        vec![
            ("X-PagerDuty-Signature".into(), sign_pagerduty(secret.as_bytes(), &body)),
            ("X-Webhook-Id".into(), webhook_id.into()),
            ("Content-Type".into(), "application/json".into()),
        ],
        body,
    )
}

fn trigger(id: &str) -> Vec<u8> {
    envelope("incident.triggered", Sim::incident_data(id, 7, "checkout down", "PSVC1", "checkout"), None)
}

async fn stores() -> Vec<(&'static str, Arc<dyn IncidentStore>)> {
    vec![("sqlite", selfheal_tests::sqlite_store().await), ("dynamodb", selfheal_tests::dynamodb_store().await)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhook_signatures_shapes_and_sizes() {
    for (backend, store) in stores().await {
        let e = env(store).await;
        let s = e.creds.webhook_secret.clone();
        let status = |r: selfheal::stages::http::HttpResponse| r.status;
        assert_eq!(
            status(intake::handle_webhook(&e.deps, &signed(&s, trigger("PA1"), "w1")).await),
            202,
            "{backend}: valid"
        );
        // Rotated secret: a delivery signed with the previous secret still verifies.
        assert_eq!(status(intake::handle_webhook(&e.deps, &signed(OLD_SECRET, trigger("PA2"), "w2")).await), 202);
        // A header with both signatures (PagerDuty during rotation).
        let body = trigger("PA3");
        let both = format!("{},{}", sign_pagerduty(OLD_SECRET.as_bytes(), &body), sign_pagerduty(s.as_bytes(), &body));
        let req =
            HttpRequest::new(vec![("x-pagerduty-signature".into(), both), ("x-webhook-id".into(), "w3".into())], body);
        assert_eq!(status(intake::handle_webhook(&e.deps, &req).await), 202);
        // Forged, missing, tampered.
        assert_eq!(status(intake::handle_webhook(&e.deps, &signed("whsec-forged", trigger("PF1"), "w4")).await), 401);
        let missing = HttpRequest::new(vec![("x-webhook-id".into(), "w5".into())], trigger("PF2"));
        assert_eq!(status(intake::handle_webhook(&e.deps, &missing).await), 401);
        let mut tampered = signed(&s, trigger("PF3"), "w6");
        tampered.body = trigger("PF4");
        assert_eq!(status(intake::handle_webhook(&e.deps, &tampered).await), 401);
        // Signature headers over the bounds are refused before any hashing, even with the genuine
        // entry among them: too many entries, or too long.
        let body = trigger("PF5");
        let genuine = sign_pagerduty(s.as_bytes(), &body);
        let many = (0..selfheal::signature::MAX_SIGNATURE_ENTRIES).map(|i| format!("v1={i:064x}")).collect::<Vec<_>>();
        let header = format!("{},{genuine}", many.join(","));
        let req = HttpRequest::new(
            vec![("x-pagerduty-signature".into(), header), ("x-webhook-id".into(), "w11".into())],
            body.clone(),
        );
        assert_eq!(status(intake::handle_webhook(&e.deps, &req).await), 401, "{backend}: too many entries");
        let padded = format!("{genuine}{}", " ".repeat(selfheal::signature::MAX_SIGNATURE_HEADER_BYTES));
        let req = HttpRequest::new(
            vec![("x-pagerduty-signature".into(), padded), ("x-webhook-id".into(), "w12".into())],
            body.clone(),
        );
        assert_eq!(status(intake::handle_webhook(&e.deps, &req).await), 401, "{backend}: header too long");
        // At the cap, the genuine entry is found.
        let at_cap = format!("{},{genuine}", many[1..].join(","));
        let req = HttpRequest::new(
            vec![("x-pagerduty-signature".into(), at_cap), ("x-webhook-id".into(), "w13".into())],
            body,
        );
        assert_eq!(status(intake::handle_webhook(&e.deps, &req).await), 202, "{backend}: at the cap");
        // Malformed JSON (correctly signed) and an oversized body.
        assert_eq!(status(intake::handle_webhook(&e.deps, &signed(&s, b"{not json".to_vec(), "w7")).await), 400);
        let big = vec![b' '; 300 * 1024];
        assert_eq!(status(intake::handle_webhook(&e.deps, &signed(&s, big, "w8")).await), 413);
        // Ping and unknown event types are acknowledged and ignored.
        let ping = intake::handle_webhook(&e.deps, &signed(&s, envelope("pagey.ping", json!({}), None), "w9")).await;
        assert_eq!((ping.status, ping.body["status"].as_str()), (202, Some("pong")));
        let other =
            intake::handle_webhook(&e.deps, &signed(&s, envelope("service.updated", json!({}), None), "w10")).await;
        assert_eq!((other.status, other.body["status"].as_str()), (202, Some("ignored")));
        // Nothing from the refused deliveries reached the store or the orchestrator.
        assert!(e.deps.store.get_incident(&IncidentId::parse("PF1").unwrap()).await.unwrap().is_none());
        assert_eq!(e.rec.executions.lock().unwrap().len(), 4, "{backend}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicates_sequential_and_concurrent_start_one_execution() {
    for (backend, store) in stores().await {
        let e = env(store).await;
        let s = e.creds.webhook_secret.clone();
        // PagerDuty retries a delivery byte for byte, with the same X-Webhook-Id.
        let body = trigger("PDUP1");
        let first = intake::handle_webhook(&e.deps, &signed(&s, body.clone(), "same")).await;
        let again = intake::handle_webhook(&e.deps, &signed(&s, body, "same")).await;
        assert_eq!(first.body["status"], "incident_created");
        assert_eq!(again.body["status"], "duplicate", "{backend}");
        // Same webhook id, different payload: refused.
        let conflict = intake::handle_webhook(&e.deps, &signed(&s, trigger("PDUP-OTHER"), "same")).await;
        assert_eq!(conflict.status, 409);

        // 32 concurrent copies of one delivery, and 32 deliveries of one incident.
        let copy = trigger("PDUP2");
        let copies = join_all((0..32).map(|_| {
            let (deps, s, body) = (e.deps.clone(), s.clone(), copy.clone());
            tokio::spawn(async move { intake::handle_webhook(&deps, &signed(&s, body, "copy")).await })
        }))
        .await;
        let retries = join_all((0..32).map(|i| {
            let (deps, s) = (e.deps.clone(), s.clone());
            tokio::spawn(async move {
                intake::handle_webhook(&deps, &signed(&s, trigger("PDUP3"), &format!("retry-{i}"))).await
            })
        }))
        .await;
        // Copies of one delivery racing the first: each is told "done" (202) or, while the first
        // is still being processed, "retry later" (503) — never a second execution.
        for r in &copies {
            assert!(matches!(r.as_ref().unwrap().status, 202 | 503), "{backend}: {:?}", r.as_ref().unwrap());
        }
        assert!(copies.iter().any(|r| r.as_ref().unwrap().status == 202), "{backend}");
        for r in &retries {
            assert!(r.as_ref().unwrap().status == 202, "{backend}: {:?}", r.as_ref().unwrap());
        }
        for id in ["PDUP2", "PDUP3"] {
            let trail = e.deps.store.audit_trail(&IncidentId::parse(id).unwrap()).await.unwrap();
            assert_eq!(trail.iter().filter(|a| a.kind == "incident_created").count(), 1, "{backend} {id}");
        }
        let ex = e.rec.executions.lock().unwrap();
        assert_eq!(ex.len(), 3, "{backend}: one execution per incident");
    }
}

async fn incident(deps: &Deps, id: &str) {
    let s = deps.secrets.snapshot().pagerduty_webhook_secrets[0].clone();
    let r = intake::handle_webhook(
        deps,
        &signed(secrecy::ExposeSecret::expose_secret(&s), trigger(id), &format!("t-{id}")),
    )
    .await;
    assert_eq!(r.status, 202);
}

fn note_event(incident: &str, note_id: &str, content: &str, trimmed: bool, author: &str) -> Vec<u8> {
    envelope(
        "incident.annotated",
        json!({"incident": {"id": incident, "type": "incident_reference"}, "id": note_id, "content": content, "trimmed": trimmed, "type": "incident_note"}),
        Some(author),
    )
}

const NOTE: &str = "Root cause: connection pool exhausted on checkout-db\nConfidence: 92%\nEvidence:\n- pool at 100%";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn investigator_hand_off_both_orders_and_trimmed_notes() {
    for (backend, store) in stores().await {
        let e = env(store).await;
        let s = e.creds.webhook_secret.clone();
        // Token first, then the note: the note resumes the execution with the token.
        incident(&e.deps, "PH1").await;
        let token = TaskToken::parse(format!("token-{backend}-1")).unwrap();
        let waited = stages::handle(
            &e.deps,
            Function::Cleric,
            json!({"op": "await_hypothesis", "incident_id": "PH1", "task_token": token.expose()}),
        )
        .await;
        assert_eq!(waited.unwrap()["waiting"], true);
        let r = intake::handle_webhook(&e.deps, &signed(&s, note_event("PH1", "N1", NOTE, false, INVESTIGATOR), "n1"))
            .await;
        assert_eq!(r.body["status"], "hypothesis_resumed", "{backend}");
        assert_eq!(e.rec.resumes.lock().unwrap().iter().filter(|(t, _)| t == token.expose()).count(), 1);

        // Note first, then the token: the wait is skipped (NoteAlreadyArrived), no callback.
        incident(&e.deps, "PH2").await;
        let r = intake::handle_webhook(&e.deps, &signed(&s, note_event("PH2", "N2", NOTE, false, INVESTIGATOR), "n2"))
            .await;
        assert_eq!(r.body["status"], "hypothesis_stored");
        let token2 = TaskToken::parse(format!("token-{backend}-2")).unwrap();
        let err = stages::handle(
            &e.deps,
            Function::Cleric,
            json!({"op": "await_hypothesis", "incident_id": "PH2", "task_token": token2.expose()}),
        )
        .await
        .unwrap_err();
        assert_eq!(err.error_name(), "NoteAlreadyArrived");
        assert!(e.rec.resumes.lock().unwrap().iter().all(|(t, _)| t != token2.expose()));
        let parsed = stages::handle(&e.deps, Function::Cleric, json!({"op": "parse_hypothesis", "incident_id": "PH2"}))
            .await
            .unwrap();
        assert_eq!(parsed["usable"], true);
        assert_eq!(parsed["confidence"], 0.92);

        // A note from someone else is ignored; a progress note keeps waiting.
        incident(&e.deps, "PH3").await;
        let r =
            intake::handle_webhook(&e.deps, &signed(&s, note_event("PH3", "N3", NOTE, false, "PSOMEONE"), "n3")).await;
        assert_eq!(r.body["status"], "note_ignored");
        let r = intake::handle_webhook(
            &e.deps,
            &signed(&s, note_event("PH3", "N4", "Still investigating, more soon.", false, INVESTIGATOR), "n4"),
        )
        .await;
        assert_eq!(r.body["status"], "progress_note");
        assert!(e.deps.store.investigator_note(&IncidentId::parse("PH3").unwrap()).await.unwrap().is_none());

        // A trimmed note is handed off as it came, without a call to PagerDuty (intake answers
        // within PagerDuty's 5 s whatever its REST API does); ParseHypothesis reads it in full.
        incident(&e.deps, "PH4").await;
        e.sim.pd.lock().unwrap().notes.entry("PH4".into()).or_default().push(selfheal_testkit::sim::PdNote {
            id: "N5".into(),
            user_id: INVESTIGATOR.into(),
            content: NOTE.into(),
        });
        let fetched = |sim: &Sim| {
            sim.calls().iter().any(|c| c.api == "pagerduty" && c.method == "GET" && c.path == "/incidents/PH4/notes")
        };
        // Cut before the confidence: alone it would parse without one.
        let r = intake::handle_webhook(
            &e.deps,
            &signed(
                &s,
                note_event("PH4", "N5", "Root cause: connection pool exhausted on chec", true, INVESTIGATOR),
                "n5",
            ),
        )
        .await;
        assert_eq!(r.body["status"], "hypothesis_stored", "{backend}: {:?}", r.body);
        assert!(!fetched(&e.sim), "{backend}: intake must not wait on PagerDuty's REST API");
        let parsed = stages::handle(&e.deps, Function::Cleric, json!({"op": "parse_hypothesis", "incident_id": "PH4"}))
            .await
            .unwrap();
        assert_eq!((parsed["usable"].as_bool(), parsed["confidence"].as_f64()), (Some(true), Some(0.92)), "{backend}");
        assert!(fetched(&e.sim), "{backend}: the full note was read by ParseHypothesis");

        // A trimmed note PagerDuty does not list yet: a transient failure the state machine
        // retries, never a guess from the trimmed text.
        incident(&e.deps, "PH5").await;
        let r = intake::handle_webhook(
            &e.deps,
            &signed(&s, note_event("PH5", "N6", "Root cause: disk full on", true, INVESTIGATOR), "n6"),
        )
        .await;
        assert_eq!(r.body["status"], "hypothesis_stored", "{backend}");
        let err = stages::handle(&e.deps, Function::Cleric, json!({"op": "parse_hypothesis", "incident_id": "PH5"}))
            .await
            .unwrap_err();
        assert_eq!(err.error_name(), "Transient", "{backend}: {err}");
    }
}

/// PagerDuty's REST API refuses our token (revoked, or without access): the webhook is still
/// answered 202 at once (a 5xx would be redelivered for 48 h, to no avail), and the run
/// escalates with a reason that names the credential, instead of retrying.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_pagerduty_token_escalates_with_the_reason_and_never_fails_the_webhook() {
    for (backend, store) in stores().await {
        let e = env_with(store, |s| s.pagerduty_api_token = Some(SecretString::from("pd-revoked".to_string()))).await;
        let s = e.creds.webhook_secret.clone();
        incident(&e.deps, "PT1").await;
        let r = intake::handle_webhook(
            &e.deps,
            &signed(&s, note_event("PT1", "N1", "Root cause: connection pool exh", true, INVESTIGATOR), "t1"),
        )
        .await;
        assert_eq!((r.status, r.body["status"].as_str()), (202, Some("hypothesis_stored")), "{backend}");
        let err = stages::handle(&e.deps, Function::Cleric, json!({"op": "parse_hypothesis", "incident_id": "PT1"}))
            .await
            .unwrap_err();
        // Not `Transient`: the state machine's retries would only repeat the refusal.
        assert_eq!(err.error_name(), "UpstreamRejected", "{backend}: {err}");
        let message = err.to_string();
        assert!(message.contains("401") && message.contains("pagerduty_api_token"), "{backend}: {message}");
        // What the state machine's Catch hands to Escalate.
        let diagnostic = lambda_runtime::Diagnostic::from(err);
        let state = json!({"error": {"Error": diagnostic.error_type,
            "Cause": json!({"errorMessage": diagnostic.error_message}).to_string()}});
        let out = stages::handle(
            &e.deps,
            Function::PagerDuty,
            json!({"op": "escalate", "incident_id": "PT1", "state": state}),
        )
        .await
        .unwrap();
        assert_eq!(out["outcome"], "escalated", "{backend}");
        // PagerDuty refuses the note too; Slack carries the escalation with the reason.
        let escalation =
            e.sim.slack_messages().into_iter().find(|m| m.text.contains("PT1") || m.blocks.to_string().contains("PT1"));
        let escalation = escalation.unwrap_or_else(|| panic!("{backend}: no Slack escalation"));
        assert!(escalation.blocks.to_string().contains("pagerduty_api_token"), "{backend}: {}", escalation.blocks);
    }
}

fn click(creds: &SimCredentials, approval: &str, action: &str, user: &str, ts: i64) -> HttpRequest {
    let payload = json!({"type": "block_actions", "user": {"id": user}, "actions": [{"action_id": action, "value": approval, "type": "button"}],
                         "response_url": null});
    signed_interaction(creds, &payload, ts)
}

/// A signed interaction request carrying `payload`, as Slack sends it.
fn signed_interaction(creds: &SimCredentials, payload: &Value, ts: i64) -> HttpRequest {
    let body = serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap().into_bytes();
    HttpRequest::new(
        vec![
            ("X-Slack-Request-Timestamp".into(), ts.to_string()),
            ("X-Slack-Signature".into(), sign_slack(creds.slack_signing_secret.as_bytes(), ts, &body)),
        ],
        body,
    )
}

fn reason_click(approval: &str, user: &str, trigger_id: &str) -> Value {
    json!({"type": "block_actions", "user": {"id": user}, "trigger_id": trigger_id, "response_url": null,
           "actions": [{"action_id": "reject_with_reason", "value": approval, "type": "button"}]})
}

fn reason_submitted(approval: &str, user: &str, reason: Option<&str>) -> Value {
    json!({"type": "view_submission", "user": {"id": user},
           "view": {"id": "V1", "type": "modal", "callback_id": "selfheal_reject_reason", "private_metadata": approval,
                    "state": {"values": {"reason": {"reason": {"type": "plain_text_input", "value": reason}}}}}})
}

/// "Reject with reason…": the dialog opens for approvers of a pending plan only, within the
/// trigger's 3 s; its submission rejects once, with the reason, as the person who submitted it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_rejection_dialog_opens_for_approvers_and_decides_once() {
    for (backend, store) in stores().await {
        let e = env(store).await;
        let now = chrono::Utc::now().timestamp();
        let a = pending_approval(&e.deps, "PDLG1", "tok-dialog", chrono::Duration::hours(1)).await;
        let handle = |payload: Value| {
            let (deps, req) = (e.deps.clone(), signed_interaction(&e.creds, &payload, now));
            async move { approvals::handle_interaction(&deps, &req).await }
        };
        // Not an approver: no dialog, the refusal audited.
        let t = e.sim.issue_trigger("UMALLORY", Duration::ZERO);
        let r = handle(reason_click(a.as_str(), "UMALLORY", &t)).await;
        assert_eq!(r.body["status"], "not_allowed", "{backend}");
        assert!(e.sim.opened_views().is_empty());
        // An approver: the dialog opens (the plan is not decided yet).
        let t = e.sim.issue_trigger("UALICE", Duration::ZERO);
        let r = handle(reason_click(a.as_str(), "UALICE", &t)).await;
        assert_eq!((r.status, r.body["status"].as_str()), (200, Some("reason_asked")), "{backend}");
        let views = e.sim.opened_views();
        assert_eq!(views.len(), 1, "{backend}");
        assert_eq!(views[0].view["private_metadata"], a.as_str());
        assert!(e.rec.resumes.lock().unwrap().iter().all(|(t, _)| t != "tok-dialog"));
        // A trigger older than 3 s: Slack refuses to open it, nothing else happens.
        let stale = e.sim.issue_trigger("UALICE", Duration::from_secs(4));
        handle(reason_click(a.as_str(), "UALICE", &stale)).await;
        assert_eq!(e.sim.opened_views().len(), 1, "{backend}");
        // A submission by someone else is refused inside the dialog.
        let r = handle(reason_submitted(a.as_str(), "UMALLORY", Some("because"))).await;
        assert_eq!(r.body["response_action"], "errors", "{backend}");
        assert!(e.rec.resumes.lock().unwrap().iter().all(|(t, _)| t != "tok-dialog"));
        // The approver's submission rejects, once, with the reason.
        let r = handle(reason_submitted(a.as_str(), "UALICE", Some("  <!channel> the PID is wrong  "))).await;
        assert_eq!(r.body["response_action"], "clear", "{backend}");
        let resumes: Vec<_> =
            e.rec.resumes.lock().unwrap().iter().filter(|(t, _)| t == "tok-dialog").cloned().collect();
        assert_eq!(resumes.len(), 1);
        assert_eq!(
            (resumes[0].1["status"].as_str(), resumes[0].1["decided_by"].as_str()),
            (Some("rejected"), Some("UALICE"))
        );
        let incident = e.deps.store.get_incident(&IncidentId::parse("PDLG1").unwrap()).await.unwrap().unwrap();
        assert_eq!(incident.approval.unwrap().reason.as_deref(), Some("<!channel> the PID is wrong"));
        let r = handle(reason_submitted(a.as_str(), "UBOB", None)).await;
        assert_eq!(r.body["response_action"], "errors");
        assert!(r.body["errors"]["reason"].as_str().unwrap().contains("already rejected"), "{}", r.body);
        assert_eq!(e.rec.resumes.lock().unwrap().iter().filter(|(t, _)| t == "tok-dialog").count(), 1);
    }
}

async fn pending_approval(deps: &Deps, incident_id: &str, token: &str, expires_in: chrono::Duration) -> ApprovalId {
    incident(deps, incident_id).await;
    let id = ApprovalId::generate();
    let now = chrono::Utc::now();
    deps.store
        .create_approval(&Approval {
            id: id.clone(),
            incident_id: IncidentId::parse(incident_id).unwrap(),
            task_token: TaskToken::parse(token).unwrap(),
            plan_hash: "plan-hash-1".into(),
            status: ApprovalStatus::Pending,
            created_at: now,
            expires_at: now + expires_in,
            decided_by: None,
            decided_at: None,
            slack_channel: None,
            slack_ts: None,
        })
        .await
        .unwrap();
    id
}

/// The click that decided died after storing the decision, before binding it to the incident
/// and resuming the run (found by the SIGKILL test): the next click completes both, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_decision_whose_click_died_is_bound_and_resumed_by_the_next_click() {
    for (backend, store) in stores().await {
        let e = env(store).await;
        let now = chrono::Utc::now().timestamp();
        let a = pending_approval(&e.deps, "PDIED1", "tok-died", chrono::Duration::hours(1)).await;
        let alice = UserId::parse("UALICE").unwrap();
        e.deps.store.decide_approval(&a, ApprovalStatus::Approved, &alice, chrono::Utc::now()).await.unwrap();
        let id = IncidentId::parse("PDIED1").unwrap();
        assert!(e.deps.store.get_incident(&id).await.unwrap().unwrap().approval.is_none());

        for clicker in ["UBOB", "UALICE"] {
            let r = approvals::handle_interaction(&e.deps, &click(&e.creds, a.as_str(), "approve", clicker, now)).await;
            assert_eq!(r.body["status"], "already_decided", "{backend}");
        }
        let bound = e.deps.store.get_incident(&id).await.unwrap().unwrap().approval.expect("bound to the incident");
        assert_eq!(
            (bound.status, bound.decided_by.as_ref().map(|u| u.as_str()), bound.plan_hash.as_str()),
            (ApprovalStatus::Approved, Some("UALICE"), "plan-hash-1"),
            "{backend}"
        );
        let trail = e.deps.store.audit_trail(&id).await.unwrap();
        assert_eq!(trail.iter().filter(|t| t.kind == "approval_decided").count(), 1, "{backend}: audited once");
        let resumes: Vec<_> = e.rec.resumes.lock().unwrap().iter().filter(|(t, _)| t == "tok-died").cloned().collect();
        assert!(!resumes.is_empty(), "{backend}: the run was resumed");
        assert!(resumes.iter().all(|(_, out)| out["status"] == "approved" && out["decided_by"] == "UALICE"));
    }
}

/// A late click on an older approval, decided long ago, never rebinds an incident that now
/// waits on a newer one (the execution gate would refuse the newer plan).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_click_on_an_old_approval_leaves_the_newer_one_bound() {
    for (backend, store) in stores().await {
        let e = env(store).await;
        let now = chrono::Utc::now().timestamp();
        let old = pending_approval(&e.deps, "PSTALE1", "tok-old", chrono::Duration::hours(1)).await;
        let alice = UserId::parse("UALICE").unwrap();
        e.deps.store.decide_approval(&old, ApprovalStatus::Approved, &alice, chrono::Utc::now()).await.unwrap();
        let newer = ApprovalId::generate();
        let id = IncidentId::parse("PSTALE1").unwrap();
        let mut incident = e.deps.store.get_incident(&id).await.unwrap().unwrap();
        incident.approval = Some(ApprovalDecision {
            approval_id: newer.clone(),
            status: ApprovalStatus::Pending,
            decided_by: None,
            decided_at: None,
            plan_hash: "plan-hash-2".into(),
            reason: None,
        });
        e.deps.store.save_incident(&incident).await.unwrap();

        let r = approvals::handle_interaction(&e.deps, &click(&e.creds, old.as_str(), "approve", "UBOB", now)).await;
        assert_eq!(r.body["status"], "already_decided", "{backend}");
        let bound = e.deps.store.get_incident(&id).await.unwrap().unwrap().approval.expect("still bound");
        assert_eq!((bound.approval_id, bound.status), (newer, ApprovalStatus::Pending), "{backend}");
        let trail = e.deps.store.audit_trail(&id).await.unwrap();
        assert!(trail.iter().all(|t| t.kind != "approval_decided"), "{backend}: nothing newly decided");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slack_approvals_are_decided_once_by_allowed_people() {
    for (backend, store) in stores().await {
        let e = env(store).await;
        let now = chrono::Utc::now().timestamp();
        let hour = chrono::Duration::hours(1);

        // Approve, then a double click.
        let a = pending_approval(&e.deps, "PS1", "tok-approve", hour).await;
        let r = approvals::handle_interaction(&e.deps, &click(&e.creds, a.as_str(), "approve", "UALICE", now)).await;
        assert_eq!((r.status, r.body["status"].as_str()), (200, Some("decided")), "{backend}");
        let r = approvals::handle_interaction(&e.deps, &click(&e.creds, a.as_str(), "approve", "UBOB", now)).await;
        assert_eq!(r.body["status"], "already_decided");
        let resumes: Vec<_> =
            e.rec.resumes.lock().unwrap().iter().filter(|(t, _)| t == "tok-approve").cloned().collect();
        assert_eq!(resumes.len(), 1);
        assert_eq!(resumes[0].1["status"], "approved");
        assert_eq!(resumes[0].1["decided_by"], "UALICE");
        assert_eq!(resumes[0].1["plan_hash"], "plan-hash-1");

        // Three concurrent approvals: exactly one resume.
        let c = pending_approval(&e.deps, "PS2", "tok-race", hour).await;
        let results = join_all((0..3).map(|_| {
            let (deps, req) = (e.deps.clone(), click(&e.creds, c.as_str(), "approve", "UALICE", now));
            tokio::spawn(async move { approvals::handle_interaction(&deps, &req).await })
        }))
        .await;
        let decided = results.iter().filter(|r| r.as_ref().unwrap().body["status"] == "decided").count();
        assert_eq!(decided, 1, "{backend}");
        assert_eq!(e.rec.resumes.lock().unwrap().iter().filter(|(t, _)| t == "tok-race").count(), 1);

        // Reject.
        let rj = pending_approval(&e.deps, "PS3", "tok-reject", hour).await;
        approvals::handle_interaction(&e.deps, &click(&e.creds, rj.as_str(), "reject", "UBOB", now)).await;
        let out = e.rec.resumes.lock().unwrap().iter().find(|(t, _)| t == "tok-reject").cloned().unwrap();
        assert_eq!(out.1["status"], "rejected");

        // Not an approver: nothing resumes.
        let na = pending_approval(&e.deps, "PS4", "tok-mallory", hour).await;
        let r = approvals::handle_interaction(&e.deps, &click(&e.creds, na.as_str(), "approve", "UMALLORY", now)).await;
        assert_eq!(r.body["status"], "not_allowed");
        assert!(e.rec.resumes.lock().unwrap().iter().all(|(t, _)| t != "tok-mallory"));
        let trail = e.deps.store.audit_trail(&IncidentId::parse("PS4").unwrap()).await.unwrap();
        assert!(trail.iter().any(|t| t.kind == "approval_refused"));

        // A click after the approval expired.
        let late = pending_approval(&e.deps, "PS5", "tok-late", chrono::Duration::seconds(-1)).await;
        let r = approvals::handle_interaction(&e.deps, &click(&e.creds, late.as_str(), "approve", "UALICE", now)).await;
        assert_eq!(r.body["status"], "expired");
        assert!(e.rec.resumes.lock().unwrap().iter().all(|(t, _)| t != "tok-late"));

        // Stale timestamp, forged signature, garbage payload.
        let p = pending_approval(&e.deps, "PS6", "tok-stale", hour).await;
        let r =
            approvals::handle_interaction(&e.deps, &click(&e.creds, p.as_str(), "approve", "UALICE", now - 301)).await;
        assert_eq!(r.status, 401);
        let mut forged = click(&e.creds, p.as_str(), "approve", "UALICE", now);
        forged.headers.retain(|(k, _)| k != "x-slack-signature");
        forged.headers.push(("x-slack-signature".into(), sign_slack(b"wrong-secret", now, &forged.body)));
        assert_eq!(approvals::handle_interaction(&e.deps, &forged).await.status, 401);
        let body = b"payload=%7Bnot-json".to_vec();
        let garbage = HttpRequest::new(
            vec![
                ("x-slack-request-timestamp".into(), now.to_string()),
                ("x-slack-signature".into(), sign_slack(e.creds.slack_signing_secret.as_bytes(), now, &body)),
            ],
            body,
        );
        assert_eq!(approvals::handle_interaction(&e.deps, &garbage).await.status, 400);
        assert!(e.rec.resumes.lock().unwrap().iter().all(|(t, _)| t != "tok-stale"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_person_resolving_stops_autonomous_work_and_a_reopen_is_recorded() {
    let e = env(selfheal_tests::sqlite_store().await).await;
    let s = e.creds.webhook_secret.clone();
    incident(&e.deps, "PR1").await;
    let token = TaskToken::parse("tok-human").unwrap();
    stages::handle(
        &e.deps,
        Function::Cleric,
        json!({"op": "await_hypothesis", "incident_id": "PR1", "task_token": "tok-human"}),
    )
    .await
    .unwrap();
    let resolved = envelope(
        "incident.resolved",
        Sim::incident_data("PR1", 7, "checkout down", "PSVC1", "checkout"),
        Some("PHUMAN"),
    );
    let r = intake::handle_webhook(&e.deps, &signed(&s, resolved, "res-1")).await;
    assert_eq!(r.body["status"], "autonomy_stopped");
    // The waiting execution is failed with Stopped at once, not left to time out.
    assert_eq!(e.rec.failures.lock().unwrap().clone(), vec![(token.expose().to_string(), "Stopped".to_string())]);
    let inc = e.deps.store.get_incident(&IncidentId::parse("PR1").unwrap()).await.unwrap().unwrap();
    assert_eq!(inc.status, IncidentStatus::ResolvedByHuman);
    // Every later autonomous stage refuses, and escalation records who ended it.
    for op in ["plan_remediation", "decide", "preflight", "provision_workspace"] {
        let f = Function::for_op(op).unwrap();
        let err = stages::handle(&e.deps, f, json!({"op": op, "incident_id": "PR1"})).await.unwrap_err();
        assert!(matches!(err.error_name(), "Stopped" | "InvalidInput"), "{op}: {err}");
    }
    let out =
        stages::handle(&e.deps, Function::PagerDuty, json!({"op": "escalate", "incident_id": "PR1", "state": {}}))
            .await
            .unwrap();
    assert_eq!(out["outcome"], "resolved_by_human");

    // A reopen after selfheal's own resolution is recorded against the service.
    incident(&e.deps, "PR2").await;
    stages::update(&e.deps, &IncidentId::parse("PR2").unwrap(), |i| {
        i.outcome = Some(Outcome::Resolved);
        i.effectiveness = Some(Effectiveness::Effective);
        Ok(())
    })
    .await
    .unwrap();
    let reopened = envelope(
        "incident.reopened",
        Sim::incident_data("PR2", 8, "checkout down", "PSVC1", "checkout"),
        Some("PHUMAN"),
    );
    let r = intake::handle_webhook(&e.deps, &signed(&s, reopened, "reo-1")).await;
    assert_eq!(r.body["status"], "reopen_recorded");
    let inc = e.deps.store.get_incident(&IncidentId::parse("PR2").unwrap()).await.unwrap().unwrap();
    assert_eq!(inc.effectiveness, Some(Effectiveness::Ineffective), "a reopen after the window flips the verdict");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_deliveries_half_duplicates_at_32_way() {
    use rand::seq::SliceRandom;
    for (backend, store) in stores().await {
        let e = env(store).await;
        // 500 incidents, each delivered twice byte for byte (a PagerDuty retry), shuffled.
        let mut deliveries: Vec<(String, Vec<u8>)> =
            (0..500).map(|i| (format!("k-{i}"), trigger(&format!("PK{i:04}")))).collect();
        deliveries.extend(deliveries.clone());
        deliveries.shuffle(&mut rand::rng());
        // Through the local server (the API Gateway stand-in), over HTTP on loopback.
        let (engine_base, _engine) =
            selfheal_testkit::spawn(selfheal_cli::server::router(e.deps.clone()), 0).await.unwrap();
        *e.sim.engine_base.lock().unwrap() = engine_base;
        let queue = Arc::new(tokio::sync::Mutex::new(deliveries));
        let workers: Vec<_> = (0..32)
            .map(|_| {
                let (queue, sim) = (queue.clone(), e.sim.clone());
                tokio::spawn(async move {
                    let mut statuses = Vec::new();
                    loop {
                        let Some((id, body)) = queue.lock().await.pop() else { break };
                        // PagerDuty redelivers a 503 ("still in progress") later.
                        let mut status = sim.post_signed_webhook(&body, &id).await.unwrap();
                        while status == 503 {
                            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                            status = sim.post_signed_webhook(&body, &id).await.unwrap();
                        }
                        statuses.push(status);
                    }
                    statuses
                })
            })
            .collect();
        let mut statuses = Vec::new();
        for w in workers {
            statuses.extend(w.await.unwrap());
        }
        assert_eq!(statuses.len(), 1000);
        assert!(
            statuses.iter().all(|s| *s == 202),
            "{backend}: {:?}",
            statuses.iter().filter(|s| **s != 202).collect::<Vec<_>>()
        );
        assert_eq!(e.rec.executions.lock().unwrap().len(), 500, "{backend}: exactly one execution per incident");
    }
}

/// An incident with a free-form plan, ready for the approval step.
async fn incident_awaiting_approval(deps: &Deps, id: &str) -> IncidentId {
    incident(deps, id).await;
    let id = IncidentId::parse(id).unwrap();
    let plan = selfheal::adapters::anthropic::plan_from_tool_input(&json!({
        "analysis": "a", "runbook_correlation": "b", "runbook_sources": [], "risks": ["r"], "rollback": "none",
        "expected_outcome": "ok", "verification_hints": [], "risk_level": "medium",
        "script": {"language": "bash", "body": "systemctl restart checkout"}
    }))
    .unwrap();
    // Planning renders the script once and binds approvals to it.
    let mut plan = plan;
    plan.script = Some("systemctl restart checkout".into());
    plan.hash = Plan::binding_hash(&plan.action, plan.script.as_deref(), None);
    stages::update(deps, &id, |i| {
        i.plan = Some(plan.clone());
        Ok(())
    })
    .await
    .unwrap();
    id
}

/// The approval step re-invoked for the same plan (the engine died while it ran, or a retry with
/// a fresh token): one Slack message, one approval, and the click resumes the live token.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_re_invoked_approval_step_posts_once_and_resumes_the_live_token() {
    for (backend, store) in stores().await {
        let e = env(store).await;
        let id = incident_awaiting_approval(&e.deps, "PREINV1").await;
        let first =
            approvals::request_approval(&e.deps, &id, &json!({"task_token": "tok-first-invocation"})).await.unwrap();
        let again =
            approvals::request_approval(&e.deps, &id, &json!({"task_token": "tok-second-invocation"})).await.unwrap();
        assert_eq!(first["approval_id"], again["approval_id"], "{backend}: one approval per plan");
        let posts =
            e.sim.slack_messages().iter().filter(|m| m.kind == "post" && Sim::approval_id_of(m).is_some()).count();
        assert_eq!(posts, 1, "{backend}: the request is posted once");

        let approval = first["approval_id"].as_str().unwrap();
        let now = chrono::Utc::now().timestamp();
        let r = approvals::handle_interaction(&e.deps, &click(&e.creds, approval, "approve", "UALICE", now)).await;
        assert_eq!(r.body["status"], "decided", "{backend}");
        let resumed: Vec<String> = e.rec.resumes.lock().unwrap().iter().map(|(t, _)| t.clone()).collect();
        assert_eq!(resumed, vec!["tok-second-invocation".to_string()], "{backend}: the live token is resumed");

        // Re-invoked once more after the decision: resumes at once with it, posts nothing.
        let late =
            approvals::request_approval(&e.deps, &id, &json!({"task_token": "tok-third-invocation"})).await.unwrap();
        assert_eq!(late["already"], "decided");
        let resumed: Vec<String> = e.rec.resumes.lock().unwrap().iter().map(|(t, _)| t.clone()).collect();
        assert_eq!(resumed.last().map(String::as_str), Some("tok-third-invocation"), "{backend}");
        let posts =
            e.sim.slack_messages().iter().filter(|m| m.kind == "post" && Sim::approval_id_of(m).is_some()).count();
        assert_eq!(posts, 1, "{backend}");
    }
}

/// Slack accepts the post, then the process dies before the store records it.
struct PostsThenDies(Arc<dyn selfheal::ports::ChatOps>);

#[async_trait]
impl selfheal::ports::ChatOps for PostsThenDies {
    async fn post(
        &self,
        message: &selfheal::ports::ChatMessage,
    ) -> Result<selfheal::ports::MessageRef, selfheal::error::ClientError> {
        self.0.post(message).await?;
        Err(selfheal::error::ClientError::Connect { service: "slack", detail: "the process died".into() })
    }
    async fn update(
        &self,
        at: &selfheal::ports::MessageRef,
        message: &selfheal::ports::ChatMessage,
    ) -> Result<(), selfheal::error::ClientError> {
        self.0.update(at, message).await
    }
    async fn respond(
        &self,
        url: &str,
        message: &selfheal::ports::ChatMessage,
        replace: bool,
        ephemeral: bool,
    ) -> Result<(), selfheal::error::ClientError> {
        self.0.respond(url, message, replace, ephemeral).await
    }
}

/// The narrowest crash window: Slack has the approval request, the store does not know. The
/// re-invoked step reads the channel back and adopts the message instead of posting again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_posted_just_before_a_crash_is_found_not_posted_again() {
    for (backend, store) in stores().await {
        let e = env(store).await;
        let id = incident_awaiting_approval(&e.deps, "PREPOST1").await;
        let mut dying = selfheal::wiring::build_deps(
            e.deps.settings.clone(),
            e.deps.secrets.clone(),
            e.deps.store.clone(),
            e.rec.clone(),
            Arc::new(SystemClock::real()),
        );
        dying.chat = Arc::new(PostsThenDies(e.deps.chat.clone()));
        let first = approvals::request_approval(&dying, &id, &json!({"task_token": "tok-died-after-post"})).await;
        assert!(first.is_err(), "{backend}: the first run died");
        let again = approvals::request_approval(&e.deps, &id, &json!({"task_token": "tok-re-invoked"})).await.unwrap();
        let posts: Vec<_> = e
            .sim
            .slack_messages()
            .into_iter()
            .filter(|m| m.kind == "post" && Sim::approval_id_of(m).is_some())
            .collect();
        assert_eq!(posts.len(), 1, "{backend}: found in the channel, not posted again");
        let approval_id = ApprovalId::parse(again["approval_id"].as_str().unwrap()).unwrap();
        let approval = e.deps.store.get_approval(&approval_id).await.unwrap().unwrap();
        assert_eq!(
            approval.slack_ts.as_deref(),
            Some(posts[0].ts.as_str()),
            "{backend}: the found message is recorded"
        );
        assert!(e.sim.calls().iter().any(|c| c.path == "/api/conversations.history"), "{backend}");
    }
}

/// JSON log lines of everything the current thread logs while the guard lives.
fn capture_logs() -> (selfheal_tests::CapturedLogs, tracing::subscriber::DefaultGuard) {
    let captured = selfheal_tests::CapturedLogs::default();
    let subscriber = tracing_subscriber::fmt().json().with_writer(captured.clone()).finish();
    (captured.clone(), tracing::subscriber::set_default(subscriber))
}

fn errors_naming(logs: &str, key: &str) -> usize {
    logs.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["level"] == "ERROR" && l["fields"]["missing_secret_key"] == key)
        .count()
}

/// A fresh stack: the PagerDuty and Slack secrets still hold their empty placeholders. That is
/// our misconfiguration, so it must be a 5xx, which PagerDuty retries for 48 h. A 4xx counts as a
/// dropped delivery, and three drops disable the subscription for 24 h. The answer is 503 with
/// an ERROR that names the missing key. Once the secrets are configured, a forged signature is 401.
#[tokio::test]
async fn missing_webhook_or_signing_secrets_are_503_never_4xx() {
    let (logs, _guard) = capture_logs();
    let store = selfheal_tests::sqlite_store().await;
    let placeholders: Vec<(String, SecretString)> = ["pagerduty", "slack"]
        .into_iter()
        .map(|i| (i.to_string(), SecretString::from(selfheal::config::placeholder_json(i).unwrap())))
        .collect();
    let docs: Vec<(&str, &SecretString)> = placeholders.iter().map(|(i, d)| (i.as_str(), d)).collect();
    let unconfigured = selfheal::secrets::merge_documents(&docs).unwrap();
    let mut settings = Settings::from_sources(None, |_| None).unwrap();
    settings.slack.approvers = vec!["UALICE".into()];
    let rec = Arc::new(Recorder::default());
    let deps = selfheal::wiring::build_deps(
        settings.clone(),
        unconfigured,
        store.clone(),
        rec.clone(),
        Arc::new(SystemClock::real()),
    );
    let creds = SimCredentials::default();

    let signed_delivery = intake::handle_webhook(&deps, &signed(&creds.webhook_secret, trigger("PCFG1"), "c1")).await;
    assert_eq!(signed_delivery.status, 503, "{signed_delivery:?}");
    assert!(signed_delivery.body["message"].as_str().unwrap().contains("pagerduty_webhook_secrets"));
    let unsigned = HttpRequest::new(vec![("x-webhook-id".into(), "c2".into())], trigger("PCFG2"));
    assert_eq!(intake::handle_webhook(&deps, &unsigned).await.status, 503);
    let forged = intake::handle_webhook(&deps, &signed("whsec-forged", trigger("PCFG3"), "c3")).await;
    assert_eq!(forged.status, 503, "nothing can be verified, so nothing is called forged");
    assert!(store.get_incident(&IncidentId::parse("PCFG1").unwrap()).await.unwrap().is_none());
    assert!(rec.executions.lock().unwrap().is_empty());

    let now = chrono::Utc::now().timestamp();
    let slack =
        approvals::handle_interaction(&deps, &click(&creds, "abcdefgh12345678", "approve", "UALICE", now)).await;
    assert_eq!(slack.status, 503, "{slack:?}");
    assert!(slack.body["message"].as_str().unwrap().contains("slack_signing_secret"));

    // Secrets set in code with blank entries are not configured either.
    let blank = Secrets { pagerduty_webhook_secrets: vec![SecretString::from(" ".to_string())], ..Default::default() };
    let blank = selfheal::wiring::build_deps(
        settings.clone(),
        blank,
        store.clone(),
        rec.clone(),
        Arc::new(SystemClock::real()),
    );
    assert_eq!(intake::handle_webhook(&blank, &signed(" ", trigger("PCFG4"), "c4")).await.status, 503);

    let text = logs.text();
    assert_eq!(errors_naming(&text, "pagerduty_webhook_secrets"), 4, "{text}");
    assert_eq!(errors_naming(&text, "slack_signing_secret"), 1, "{text}");

    // Configured: a forged signature is refused as before (401), a valid one accepted.
    let configured = Secrets {
        pagerduty_webhook_secrets: vec![SecretString::from(creds.webhook_secret.clone())],
        slack_signing_secret: Some(SecretString::from(creds.slack_signing_secret.clone())),
        ..Default::default()
    };
    let deps = selfheal::wiring::build_deps(settings, configured, store, rec, Arc::new(SystemClock::real()));
    assert_eq!(intake::handle_webhook(&deps, &signed("whsec-forged", trigger("PCFG5"), "c5")).await.status, 401);
    assert_eq!(intake::handle_webhook(&deps, &signed(&creds.webhook_secret, trigger("PCFG6"), "c6")).await.status, 202);
    let mut forged_click = click(&creds, "abcdefgh12345678", "approve", "UALICE", now);
    forged_click.body.extend_from_slice(b"&x=1");
    assert_eq!(approvals::handle_interaction(&deps, &forged_click).await.status, 401);
}

/// Nobody decided in time: the state machine's Escalate marks the approval expired, in the
/// store and on the Slack message (buttons removed), and a late click is told so. Before, the
/// approval stayed `pending` and a late click was told nothing useful.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_approval_that_timed_out_is_expired_in_the_store_and_in_slack() {
    for (backend, store) in stores().await {
        let e = env(store).await;
        let id = incident_awaiting_approval(&e.deps, "PEXP1").await;
        let asked = approvals::request_approval(&e.deps, &id, &json!({"task_token": "tok-expiring"})).await.unwrap();
        let approval_id = ApprovalId::parse(asked["approval_id"].as_str().unwrap()).unwrap();
        let posted = e.deps.store.get_approval(&approval_id).await.unwrap().unwrap();
        assert_eq!(posted.status, ApprovalStatus::Pending);

        // What the state machine passes after RequestApproval's States.Timeout (ApprovalTimedOut).
        let state =
            json!({"reason": {"code": "approval_timeout", "message": "Nobody approved or rejected the plan in time."}});
        let escalate = json!({"op": "escalate", "incident_id": "PEXP1", "state": state});
        let out = stages::handle(&e.deps, Function::PagerDuty, escalate.clone()).await.unwrap();
        assert_eq!(out["outcome"], "escalated", "{backend}");
        let stored = e.deps.store.get_approval(&approval_id).await.unwrap().unwrap();
        assert_eq!(stored.status, ApprovalStatus::Expired, "{backend}: expired in the store");
        let incident = e.deps.store.get_incident(&id).await.unwrap().unwrap();
        assert_eq!(
            incident.approval.map(|a| a.status),
            Some(ApprovalStatus::Expired),
            "{backend}: and on the incident"
        );
        let update = e
            .sim
            .slack_messages()
            .into_iter()
            .find(|m| m.kind == "update" && Some(&m.ts) == posted.slack_ts.as_ref())
            .unwrap_or_else(|| panic!("{backend}: the approval message was not updated"));
        assert!(Sim::approval_id_of(&update).is_none(), "{backend}: buttons removed: {}", update.blocks);
        assert!(update.text.contains("expired"), "{backend}: {}", update.text);

        // Retried (Step Functions may run a task twice): same result, one audit record.
        stages::handle(&e.deps, Function::PagerDuty, escalate).await.unwrap();
        let trail = e.deps.store.audit_trail(&id).await.unwrap();
        assert_eq!(trail.iter().filter(|a| a.kind == "approval_expired").count(), 1, "{backend}");

        // A late click resumes nothing and says why, through response_url.
        let url = format!("{}/slack/response/late-{backend}", e.sim.base.lock().unwrap());
        let now = chrono::Utc::now().timestamp();
        let payload = json!({"type": "block_actions", "user": {"id": "UALICE"}, "response_url": url,
            "actions": [{"action_id": "approve", "value": approval_id.as_str(), "type": "button"}]});
        let body = serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap().into_bytes();
        let late = HttpRequest::new(
            vec![
                ("x-slack-request-timestamp".into(), now.to_string()),
                ("x-slack-signature".into(), sign_slack(e.creds.slack_signing_secret.as_bytes(), now, &body)),
            ],
            body,
        );
        let r = approvals::handle_interaction(&e.deps, &late).await;
        assert_eq!((r.status, r.body["status"].as_str()), (200, Some("expired")), "{backend}");
        assert!(e.rec.resumes.lock().unwrap().iter().all(|(t, _)| t != "tok-expiring"), "{backend}");
        let reply =
            e.sim.slack_messages().into_iter().find(|m| m.kind == "ephemeral" && m.ts == format!("late-{backend}"));
        let reply = reply.unwrap_or_else(|| panic!("{backend}: no answer to the late click"));
        assert!(reply.text.contains("expired"), "{backend}: {}", reply.text);
    }
}

/// A person resolves the incident in PagerDuty while the approval waits: the execution stops,
/// and the approval message loses its buttons, saying why, so nobody clicks a dead approval.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_person_resolving_while_an_approval_waits_retires_its_slack_buttons() {
    for (backend, store) in stores().await {
        let e = env(store).await;
        let id = incident_awaiting_approval(&e.deps, "PRETIRE1").await;
        let requested = approvals::request_approval(&e.deps, &id, &json!({"task_token": "tok-retire"})).await.unwrap();
        let approval_id = ApprovalId::parse(requested["approval_id"].as_str().unwrap()).unwrap();
        let posted = e.deps.store.get_approval(&approval_id).await.unwrap().unwrap();
        let resolved = envelope(
            "incident.resolved",
            Sim::incident_data("PRETIRE1", 7, "checkout down", "PSVC1", "checkout"),
            Some("PHUMAN"),
        );
        let r = intake::handle_webhook(&e.deps, &signed(&e.creds.webhook_secret, resolved, "res-retire")).await;
        assert_eq!(r.body["status"], "autonomy_stopped", "{backend}");
        assert!(
            e.rec.failures.lock().unwrap().iter().any(|(t, err)| t == "tok-retire" && err == "Stopped"),
            "{backend}: the approval's task is failed with Stopped"
        );
        let out = stages::handle(
            &e.deps,
            Function::PagerDuty,
            json!({"op": "escalate", "incident_id": "PRETIRE1", "state": {"error": {"Error": "Stopped"}}}),
        )
        .await
        .unwrap();
        assert_eq!(out["outcome"], "resolved_by_human", "{backend}");
        let updates: Vec<_> = e
            .sim
            .slack_messages()
            .into_iter()
            .filter(|m| m.kind == "update" && Some(&m.ts) == posted.slack_ts.as_ref())
            .collect();
        assert_eq!(updates.len(), 1, "{backend}: the approval message is replaced once");
        assert!(
            updates[0].text.contains("a person resolved the incident in PagerDuty"),
            "{backend}: {}",
            updates[0].text
        );
        assert!(!updates[0].blocks.to_string().contains("\"actions\""), "{backend}: no buttons left");
        let stored = e.deps.store.get_approval(&approval_id).await.unwrap().unwrap();
        assert_eq!(stored.status, ApprovalStatus::Expired, "{backend}");
        // A late click on a cached copy of the message resumes nothing.
        let now = chrono::Utc::now().timestamp();
        let late =
            approvals::handle_interaction(&e.deps, &click(&e.creds, approval_id.as_str(), "approve", "UALICE", now))
                .await;
        assert_eq!(late.body["status"], "expired", "{backend}");
        assert!(e.rec.resumes.lock().unwrap().iter().all(|(t, _)| t != "tok-retire"), "{backend}");
    }
}

/// The checkout service's stored settings with these approvers (one check, as a push requires).
fn checkout_settings(approvers: Vec<String>) -> ServiceSettings {
    ServiceSettings {
        service: "PSVC1".into(),
        checks: vec![CheckSpec {
            name: "health".into(),
            url: "http://checkout.test/health".into(),
            expect_status: 200,
            expect_text: None,
            expect_selector: None,
            steps: Vec::new(),
            max_latency_ms: None,
            deadline_ms: 1000,
        }],
        target: None,
        auto_execute: false,
        approvers,
        oncall_may_approve: false,
        parameters: BTreeMap::new(),
        updated_at: chrono::Utc::now(),
        updated_by: "test".into(),
    }
}

/// A service that names its own approvers (`selfheal services push`) is approved by them only;
/// a service without a list falls back to the global approvers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_services_own_approvers_replace_the_global_list() {
    for (backend, store) in stores().await {
        let e = env(store).await;
        let id = incident_awaiting_approval(&e.deps, "PAPPR1").await;
        e.deps.store.put_service_settings(&checkout_settings(vec!["UCAROL".into()])).await.unwrap();
        assert_eq!(approvals::approvers_for(&e.deps, &id).await.unwrap(), vec!["UCAROL".to_string()]);
        let requested =
            approvals::request_approval(&e.deps, &id, &json!({"task_token": "tok-service-approvers"})).await.unwrap();
        let approval_id = requested["approval_id"].as_str().unwrap().to_string();
        let now = chrono::Utc::now().timestamp();
        // UALICE is a global approver, but not one of this service's.
        let refused =
            approvals::handle_interaction(&e.deps, &click(&e.creds, &approval_id, "approve", "UALICE", now)).await;
        assert_eq!(refused.body["status"], "not_allowed", "{backend}");
        assert!(e.rec.resumes.lock().unwrap().iter().all(|(t, _)| t != "tok-service-approvers"), "{backend}");
        let trail = e.deps.store.audit_trail(&id).await.unwrap();
        assert!(trail.iter().any(|t| t.kind == "approval_refused" && t.actor == "slack:UALICE"), "{backend}");
        let decided =
            approvals::handle_interaction(&e.deps, &click(&e.creds, &approval_id, "approve", "UCAROL", now)).await;
        assert_eq!(decided.body["status"], "decided", "{backend}");
        assert!(e.rec.resumes.lock().unwrap().iter().any(|(t, _)| t == "tok-service-approvers"), "{backend}");

        // Another incident on a service without its own list: the global approvers decide.
        let other = incident_awaiting_approval(&e.deps, "PAPPR2").await;
        e.deps.store.put_service_settings(&checkout_settings(Vec::new())).await.unwrap();
        assert_eq!(approvals::approvers_for(&e.deps, &other).await.unwrap(), vec!["UALICE", "UBOB"], "{backend}");
    }
}

/// A service whose settings let its on-call approve: the person on call at the first level of
/// the incident's escalation policy (PagerDuty, found across pages) may decide from Slack, matched
/// by email; someone on call at level 2, or on another policy, may not; a failed lookup grants
/// nothing; with the setting off nobody on call is asked about.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_on_call_may_approve_when_the_service_says_so() {
    use selfheal_testkit::sim::SimOncall;
    let (_, store) = stores().await.remove(0);
    let e = env(store).await;
    {
        let mut knobs = e.sim.knobs.lock().unwrap();
        // 120 entries on the policy (two pages of 100): Carol, on call now at level 1, is on the
        // second page; Dave is at level 2; Erin at level 1 of another policy.
        for n in 0..118 {
            knobs.oncalls.push(SimOncall {
                escalation_policy: "PEP1".into(),
                level: 1 + (n % 3),
                user_id: format!("PU{n:03}"),
                email: format!("person{n}@example.com"),
            });
        }
        for (policy, level, user, email) in [
            ("PEP1", 1, "PCAROL", "Carol@Example.com"),
            ("PEP1", 2, "PDAVE", "dave@example.com"),
            ("PEP9", 1, "PERIN", "erin@example.com"),
        ] {
            knobs.oncalls.push(SimOncall {
                escalation_policy: policy.into(),
                level,
                user_id: user.into(),
                email: email.into(),
            });
        }
        for (slack, email) in
            [("UCAROL", "carol@example.com"), ("UDAVE", "dave@example.com"), ("UERIN", "erin@example.com")]
        {
            knobs.slack_user_emails.insert(slack.into(), email.into());
        }
    }
    let now = chrono::Utc::now().timestamp();
    let mut settings = checkout_settings(vec!["UALICE".into()]);
    let request = |id: IncidentId, token: &'static str| {
        let deps = e.deps.clone();
        async move {
            let r = approvals::request_approval(&deps, &id, &json!({"task_token": token})).await.unwrap();
            r["approval_id"].as_str().unwrap().to_string()
        }
    };

    // The setting off: Carol is on call but not an approver.
    let off = incident_awaiting_approval(&e.deps, "PONC1").await;
    e.deps.store.put_service_settings(&settings).await.unwrap();
    let a = request(off.clone(), "tok-oncall-off").await;
    let r = approvals::handle_interaction(&e.deps, &click(&e.creds, &a, "approve", "UCAROL", now)).await;
    assert_eq!(r.body["status"], "not_allowed");
    assert!(!e.sim.calls().iter().any(|c| c.path == "/oncalls"), "nobody on call is looked up when the setting is off");

    // The setting on.
    settings.oncall_may_approve = true;
    e.deps.store.put_service_settings(&settings).await.unwrap();
    let on = incident_awaiting_approval(&e.deps, "PONC2").await;
    let a = request(on.clone(), "tok-oncall-on").await;
    for user in ["UDAVE", "UERIN", "UMALLORY"] {
        let r = approvals::handle_interaction(&e.deps, &click(&e.creds, &a, "approve", user, now)).await;
        assert_eq!(r.body["status"], "not_allowed", "{user}");
    }
    let r = approvals::handle_interaction(&e.deps, &click(&e.creds, &a, "approve", "UCAROL", now)).await;
    assert_eq!(r.body["status"], "decided");
    let resumed = e.rec.resumes.lock().unwrap().iter().find(|(t, _)| t == "tok-oncall-on").cloned().unwrap();
    assert_eq!(resumed.1["decided_by"], "UCAROL");
    let trail = e.deps.store.audit_trail(&on).await.unwrap();
    let oncall = trail.iter().find(|t| t.kind == "approver_on_call").expect("audited as the on-call");
    assert_eq!((oncall.actor.as_str(), oncall.detail["escalation_policy"].as_str()), ("slack:UCAROL", Some("PEP1")));
    let pages = e.sim.calls().iter().filter(|c| c.path == "/oncalls").count();
    assert!(pages >= 2, "the on-call list was read across its pages ({pages} calls)");

    // Without the email scope the lookup fails: audited, and nobody gains approval rights.
    e.sim.knobs.lock().unwrap().slack_no_email_scope = true;
    let scoped = incident_awaiting_approval(&e.deps, "PONC3").await;
    let a = request(scoped.clone(), "tok-oncall-scope").await;
    let r = approvals::handle_interaction(&e.deps, &click(&e.creds, &a, "approve", "UCAROL", now)).await;
    assert_eq!(r.body["status"], "not_allowed");
    let trail = e.deps.store.audit_trail(&scoped).await.unwrap();
    let failed = trail.iter().find(|t| t.kind == "oncall_lookup_failed").expect("the failed lookup is audited");
    assert!(failed.detail["error"].as_str().unwrap().contains("missing_scope"), "{}", failed.detail);
}
