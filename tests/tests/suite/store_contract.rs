//! One contract suite, run identically against every IncidentStore backend.

use chrono::{Duration, TimeZone, Utc};
use futures::future::join_all;
use serde_json::json;
use std::sync::Arc;

use selfheal::domain::*;
use selfheal::error::StoreError;
use selfheal::ports::*;

fn incident(id: &str) -> Incident {
    Incident::new(
        IncidentId::parse(id).unwrap(),
        "checkout p99 latency".into(),
        ServiceRef { id: ServiceId::parse("PSVC001").unwrap(), name: ServiceName::parse("checkout").unwrap() },
        Urgency::High,
        Utc::now(),
    )
}

fn note(id: &str, text: &str) -> InvestigatorNote {
    InvestigatorNote {
        note_id: NoteId::parse(id).unwrap(),
        author: UserId::parse("PCLERIC").unwrap(),
        content: text.into(),
        received_at: Utc::now(),
    }
}

fn token(t: &str) -> TaskToken {
    TaskToken::parse(t).unwrap()
}

fn approval(id: &ApprovalId, expires_in: Duration) -> Approval {
    let now = Utc::now();
    Approval {
        id: id.clone(),
        incident_id: IncidentId::parse("INC1").unwrap(),
        task_token: token("approval-token-1"),
        plan_hash: "abc123".into(),
        status: ApprovalStatus::Pending,
        created_at: now,
        expires_at: now + expires_in,
        decided_by: None,
        decided_at: None,
        slack_channel: None,
        slack_ts: None,
    }
}

fn catalog_action(name: &str) -> CatalogAction {
    CatalogAction {
        runbook_id: RunbookId::parse("postgres-blocking-query").unwrap(),
        name: ActionName::parse(name).unwrap(),
        description: "terminate a blocking backend".into(),
        parameters: json!({"type": "object", "properties": {"pid": {"type": "integer"}}}),
        script_template: "psql -c 'select pg_terminate_backend({{pid}})'".into(),
        risk: RiskLevel::Low,
        ineffective_count: 0,
        effective_count: 0,
    }
}

async fn incidents_are_created_once_and_versioned(store: Arc<dyn IncidentStore>) {
    let inc = incident("INC-CREATE");
    assert_eq!(store.create_incident(&inc).await.unwrap(), Created::New);
    assert_eq!(store.create_incident(&inc).await.unwrap(), Created::AlreadyExists);
    let mut loaded = store.get_incident(&inc.id).await.unwrap().expect("stored");
    assert_eq!(loaded.version, 1);
    assert_eq!(loaded.title, inc.title);
    loaded.stage = "cleric".into();
    let saved = store.save_incident(&loaded).await.unwrap();
    assert_eq!(saved.version, 2);
    // A writer holding the old version loses.
    let err = store.save_incident(&loaded).await.unwrap_err();
    assert!(matches!(err, StoreError::VersionConflict(_)), "{err:?}");
    let reloaded = store.get_incident(&inc.id).await.unwrap().unwrap();
    assert_eq!(reloaded.stage, "cleric");
    assert_eq!(reloaded.version, 2);
    assert!(store.get_incident(&IncidentId::parse("NOPE").unwrap()).await.unwrap().is_none());
}

/// The idempotency matrix, in the spirit of Powertools for AWS Lambda: first / in progress /
/// processed / conflicting payload / released after a failure / in-progress expiry after a crash.
async fn webhooks_dedupe_with_payload_check_and_ttl(store: Arc<dyn IncidentStore>) {
    let id = WebhookId::parse("01HWEBHOOK").unwrap();
    let t0 = Utc::now() - Duration::hours(2);
    assert_eq!(store.record_webhook(&id, "h1", t0, 60).await.unwrap(), Dedupe::First);
    // Same payload while the first is still being processed: retry later, not "done".
    assert_eq!(store.record_webhook(&id, "h1", t0 + Duration::seconds(5), 60).await.unwrap(), Dedupe::InProgress);
    // Same id, different payload: refused whether in progress or processed.
    assert_eq!(store.record_webhook(&id, "h2", t0 + Duration::seconds(5), 60).await.unwrap(), Dedupe::Conflict);
    store.settle_webhook(&id, t0 + Duration::seconds(6), 3600).await.unwrap();
    assert_eq!(store.record_webhook(&id, "h1", t0 + Duration::seconds(7), 60).await.unwrap(), Dedupe::Duplicate);
    assert_eq!(store.record_webhook(&id, "h2", t0 + Duration::seconds(7), 60).await.unwrap(), Dedupe::Conflict);
    // A delivery whose processing failed is released: its retry is processed.
    let failed = WebhookId::parse("01HFAILED").unwrap();
    let now = Utc::now();
    assert_eq!(store.record_webhook(&failed, "h", now, 120).await.unwrap(), Dedupe::First);
    store.settle_webhook(&failed, now, -1).await.unwrap();
    assert_eq!(store.record_webhook(&failed, "h", now, 120).await.unwrap(), Dedupe::First);
    // A processed one is kept past its in-flight TTL.
    store.settle_webhook(&failed, now, 7 * 86_400).await.unwrap();
    assert_eq!(store.record_webhook(&failed, "h", now + Duration::seconds(600), 120).await.unwrap(), Dedupe::Duplicate);
    // In-progress expiry: the process handling it died (never settled); after the in-flight TTL
    // the next retry is processed.
    let crashed = WebhookId::parse("01HCRASHED").unwrap();
    assert_eq!(store.record_webhook(&crashed, "h", now, 30).await.unwrap(), Dedupe::First);
    assert_eq!(store.record_webhook(&crashed, "h", now + Duration::seconds(29), 30).await.unwrap(), Dedupe::InProgress);
    assert_eq!(store.record_webhook(&crashed, "h", now + Duration::seconds(31), 30).await.unwrap(), Dedupe::First);
    // After the TTL of a processed id the id may be used again.
    assert_eq!(store.record_webhook(&id, "h3", t0 + Duration::seconds(3700), 60).await.unwrap(), Dedupe::First);
}

async fn audit_is_append_only_and_ordered(store: Arc<dyn IncidentStore>) {
    let id = IncidentId::parse("INC-AUDIT").unwrap();
    let base = Utc.with_ymd_and_hms(2026, 11, 28, 10, 0, 0).unwrap();
    for (i, kind) in ["incident_created", "hypothesis", "decision"].iter().enumerate() {
        let ev = AuditEvent::new(base + Duration::seconds(i as i64), "test", *kind, json!({"i": i}));
        store.append_audit(&id, &ev).await.unwrap();
    }
    // Two events in the same microsecond both survive.
    let same = AuditEvent::new(base + Duration::seconds(3), "test", "same", json!({}));
    store.append_audit(&id, &same).await.unwrap();
    store.append_audit(&id, &same).await.unwrap();
    let trail = store.audit_trail(&id).await.unwrap();
    let kinds: Vec<_> = trail.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["incident_created", "hypothesis", "decision", "same", "same"]);
}

async fn handoff_token_then_note(store: Arc<dyn IncidentStore>) {
    let id = IncidentId::parse("INC-T1").unwrap();
    let exp = Utc::now() + Duration::hours(1);
    assert_eq!(store.offer_wait_token(&id, &token("tok-1"), exp).await.unwrap(), HandOff::Stored);
    assert_eq!(store.waiting_token(&id).await.unwrap(), Some(token("tok-1")));
    assert_eq!(
        store.offer_note(&id, &note("N1", "root cause: x")).await.unwrap(),
        HandOff::TokenWaiting(token("tok-1"))
    );
    assert_eq!(store.waiting_token(&id).await.unwrap(), None, "resumed: nothing waits any more");
    // Later notes and repeated token offers resume nothing.
    assert_eq!(store.offer_note(&id, &note("N2", "more")).await.unwrap(), HandOff::AlreadyResumed);
    assert_eq!(store.offer_wait_token(&id, &token("tok-1"), exp).await.unwrap(), HandOff::AlreadyResumed);
    assert_eq!(store.investigator_note(&id).await.unwrap().unwrap().note_id.as_str(), "N1");
}

async fn handoff_note_then_token(store: Arc<dyn IncidentStore>) {
    let id = IncidentId::parse("INC-N1").unwrap();
    let exp = Utc::now() + Duration::hours(1);
    assert_eq!(store.offer_note(&id, &note("N1", "early")).await.unwrap(), HandOff::Stored);
    // A newer note before anyone waits replaces the earlier one.
    assert_eq!(store.offer_note(&id, &note("N2", "better")).await.unwrap(), HandOff::Stored);
    match store.offer_wait_token(&id, &token("tok-1"), exp).await.unwrap() {
        HandOff::NoteWaiting(n) => assert_eq!(n.note_id.as_str(), "N2"),
        other => panic!("expected NoteWaiting, got {other:?}"),
    }
    assert_eq!(store.offer_wait_token(&id, &token("tok-1"), exp).await.unwrap(), HandOff::AlreadyResumed);
    // A retried wait task (new token, the old one died) is resumed again.
    assert!(matches!(store.offer_wait_token(&id, &token("tok-2"), exp).await.unwrap(), HandOff::NoteWaiting(_)));
}

async fn approvals_are_decided_once(store: Arc<dyn IncidentStore>) {
    let id = ApprovalId::generate();
    let a = approval(&id, Duration::hours(1));
    assert_eq!(store.create_approval(&a).await.unwrap(), Created::New);
    assert_eq!(store.create_approval(&a).await.unwrap(), Created::AlreadyExists);
    store.set_approval_message(&id, "C123", "1700000000.000100").await.unwrap();
    let alice = UserId::parse("UALICE").unwrap();
    let bob = UserId::parse("UBOB").unwrap();
    match store.decide_approval(&id, ApprovalStatus::Approved, &alice, Utc::now()).await.unwrap() {
        DecideOutcome::Decided(d) => {
            assert_eq!(d.status, ApprovalStatus::Approved);
            assert_eq!(d.decided_by, Some(alice.clone()));
            assert_eq!(d.slack_ts.as_deref(), Some("1700000000.000100"));
            assert_eq!(d.task_token, token("approval-token-1"));
        }
        other => panic!("{other:?}"),
    }
    match store.decide_approval(&id, ApprovalStatus::Rejected, &bob, Utc::now()).await.unwrap() {
        DecideOutcome::AlreadyDecided(d) => {
            assert_eq!(d.status, ApprovalStatus::Approved);
            assert_eq!(d.decided_by, Some(alice));
        }
        other => panic!("{other:?}"),
    }
    let missing = ApprovalId::generate();
    assert_eq!(
        store.decide_approval(&missing, ApprovalStatus::Approved, &bob, Utc::now()).await.unwrap(),
        DecideOutcome::NotFound
    );

    let late = ApprovalId::generate();
    store.create_approval(&approval(&late, Duration::seconds(1))).await.unwrap();
    let after = Utc::now() + Duration::seconds(5);
    assert!(matches!(
        store.decide_approval(&late, ApprovalStatus::Approved, &bob, after).await.unwrap(),
        DecideOutcome::Expired(_)
    ));
    let stored = store.get_approval(&late).await.unwrap().unwrap();
    assert_eq!(stored.status, ApprovalStatus::Pending);
}

async fn service_history_and_catalog(store: Arc<dyn IncidentStore>) {
    let svc = ServiceId::parse("PSVC001").unwrap();
    let base = Utc::now() - Duration::hours(3);
    for (i, kind) in ["triggered", "resolved_by_selfheal", "triggered"].iter().enumerate() {
        let ev = ServiceEvent {
            service: svc.clone(),
            at: base + Duration::hours(i as i64),
            incident_id: IncidentId::parse(format!("INC{i}")).unwrap(),
            kind: kind.to_string(),
        };
        store.record_service_event(&ev).await.unwrap();
        store.record_service_event(&ev).await.unwrap(); // idempotent
    }
    let since = store.service_events_since(&svc, base + Duration::minutes(30)).await.unwrap();
    assert_eq!(since.len(), 2);
    assert_eq!(since[0].kind, "resolved_by_selfheal");
    assert_eq!(since[1].incident_id.as_str(), "INC2");

    let a = catalog_action("postgres.terminate_backend");
    store.put_catalog_action(&a).await.unwrap();
    store.put_catalog_action(&catalog_action("postgres.cancel_query")).await.unwrap();
    store.record_action_outcome(&a.runbook_id, &a.name, Effectiveness::Ineffective).await.unwrap();
    // Re-pushing the runbook keeps the outcome history.
    store.put_catalog_action(&a).await.unwrap();
    let got = store.get_catalog_action(&a.runbook_id, &a.name).await.unwrap().unwrap();
    assert_eq!(got.ineffective_count, 1);
    let all = store.catalog_actions(&a.runbook_id).await.unwrap();
    let names: Vec<_> = all.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["postgres.cancel_query", "postgres.terminate_backend"]);
}

async fn runbook_documents_are_replaced_and_listed(store: Arc<dyn IncidentStore>) {
    let pg = RunbookId::parse("postgres-blocking-query").unwrap();
    let redis = RunbookId::parse("redis-maxmemory").unwrap();
    let t0 = Utc::now();
    store.put_runbook_document(&redis, "doc-r1", t0).await.unwrap();
    store.put_runbook_document(&pg, "doc-p1", t0).await.unwrap();
    // The same document again changes nothing; a new push supersedes the old document.
    let same = store.put_runbook_document(&pg, "doc-p1", t0 + Duration::minutes(1)).await.unwrap();
    assert_eq!((same.content_id.as_str(), same.pushed_at, same.superseded.len()), ("doc-p1", t0, 0));
    let next = store.put_runbook_document(&pg, "doc-p2", t0 + Duration::minutes(2)).await.unwrap();
    assert_eq!(next.superseded, ["doc-p1"]);
    let all = store.runbook_documents().await.unwrap();
    let listed: Vec<_> = all.iter().map(|d| (d.runbook_id.as_str(), d.content_id.as_str())).collect();
    assert_eq!(listed, [("postgres-blocking-query", "doc-p2"), ("redis-maxmemory", "doc-r1")]);
    // Only the latest superseded ids are kept.
    for i in 0..30 {
        store.put_runbook_document(&redis, &format!("doc-r{}", i + 2), t0).await.unwrap();
    }
    let r = store.runbook_documents().await.unwrap().into_iter().find(|d| d.runbook_id == redis).unwrap();
    assert_eq!(r.content_id, "doc-r31");
    assert_eq!(r.superseded.len(), RunbookDocument::KEEP_SUPERSEDED);
    assert_eq!(r.superseded.last().map(String::as_str), Some("doc-r30"));
}

async fn kill_switch_and_budget(store: Arc<dyn IncidentStore>) {
    assert!(!store.kill_switch().await.unwrap());
    store.set_kill_switch(true, "test", Utc::now()).await.unwrap();
    assert!(store.kill_switch().await.unwrap());
    store.set_kill_switch(false, "test", Utc::now()).await.unwrap();
    assert!(!store.kill_switch().await.unwrap());

    let svc = ServiceId::parse("PBUDGET").unwrap();
    let hour = Utc.with_ymd_and_hms(2030, 1, 1, 10, 5, 0).unwrap();
    assert!(store.take_autonomy_budget(&svc, hour, 2).await.unwrap());
    assert!(store.take_autonomy_budget(&svc, hour, 2).await.unwrap());
    assert!(!store.take_autonomy_budget(&svc, hour, 2).await.unwrap());
    assert!(store.take_autonomy_budget(&svc, hour + Duration::hours(1), 2).await.unwrap());
    assert!(!store.take_autonomy_budget(&svc, hour, 0).await.unwrap());
}

fn service_settings(service: &str, url: &str) -> ServiceSettings {
    ServiceSettings {
        service: service.into(),
        checks: vec![CheckSpec {
            name: "health".into(),
            url: url.into(),
            expect_status: 200,
            expect_text: Some("healthy".into()),
            expect_selector: None,
            steps: vec![JourneyStep::Navigate { url: url.into() }],
            max_latency_ms: Some(2000),
            deadline_ms: 8000,
        }],
        target: None,
        auto_execute: false,
        parameters: Default::default(),
        approvers: vec!["U123".into()],
        oncall_may_approve: false,
        // Whole microseconds: what survives the JSON round trip on every backend.
        updated_at: Utc.with_ymd_and_hms(2030, 1, 1, 10, 0, 0).unwrap(),
        updated_by: "tester".into(),
    }
}

async fn service_settings_are_replaced_listed_and_validated(store: Arc<dyn IncidentStore>) {
    assert!(store.get_service_settings("PSVC001").await.unwrap().is_none());
    assert!(store.list_service_settings().await.unwrap().is_empty());

    let first = service_settings("PSVC001", "http://127.0.0.1:8081/health");
    store.put_service_settings(&first).await.unwrap();
    assert_eq!(store.get_service_settings("PSVC001").await.unwrap().as_ref(), Some(&first));
    // Keys are exact: an id is not found by another spelling.
    assert!(store.get_service_settings("psvc001").await.unwrap().is_none());

    // A second push replaces the whole record.
    let mut second = service_settings("PSVC001", "https://checkout.example.com/health");
    second.auto_execute = true;
    second.target = Some("https://checkout.example.com".into());
    second.approvers.clear();
    store.put_service_settings(&second).await.unwrap();
    assert_eq!(store.get_service_settings("PSVC001").await.unwrap().as_ref(), Some(&second));

    // Names with spaces, punctuation and non-ASCII characters are keys of their own.
    let names = ["checkout api", "checkout/api", "~tilde", "Caisse épicerie ✓"];
    for name in names {
        store.put_service_settings(&service_settings(name, "http://127.0.0.1:8081/health")).await.unwrap();
    }
    for name in names {
        assert_eq!(store.get_service_settings(name).await.unwrap().map(|s| s.service).as_deref(), Some(name));
    }
    let listed: Vec<String> = store.list_service_settings().await.unwrap().into_iter().map(|s| s.service).collect();
    let mut expected: Vec<String> = names.iter().map(|s| s.to_string()).chain(["PSVC001".to_string()]).collect();
    expected.sort();
    assert_eq!(listed, expected);

    // Invalid settings never reach the table.
    let mut no_checks = service_settings("PBROKEN", "http://127.0.0.1/");
    no_checks.checks.clear();
    let mut bad_url = service_settings("PBROKEN", "file:///etc/passwd");
    bad_url.target = Some("http://127.0.0.1/".into());
    let mut dup = service_settings("PBROKEN", "http://127.0.0.1/");
    dup.checks.push(dup.checks[0].clone());
    for bad in [no_checks, bad_url, dup] {
        let err = store.put_service_settings(&bad).await.unwrap_err();
        assert!(matches!(err, StoreError::Misconfigured(_)), "{err:?}");
    }
    assert!(store.get_service_settings("PBROKEN").await.unwrap().is_none());
}

const RACERS: usize = 32;

async fn race_create_incident(store: Arc<dyn IncidentStore>) {
    let inc = incident("INC-RACE");
    let results = join_all((0..RACERS).map(|_| {
        let (store, inc) = (store.clone(), inc.clone());
        tokio::spawn(async move { store.create_incident(&inc).await.unwrap() })
    }))
    .await;
    let new = results.iter().filter(|r| *r.as_ref().unwrap() == Created::New).count();
    assert_eq!(new, 1);
}

async fn race_webhook_dedupe(store: Arc<dyn IncidentStore>) {
    let id = WebhookId::parse("RACE-HOOK").unwrap();
    let now = Utc::now();
    let results = join_all((0..RACERS).map(|_| {
        let (store, id) = (store.clone(), id.clone());
        tokio::spawn(async move { store.record_webhook(&id, "same", now, 3600).await.unwrap() })
    }))
    .await;
    let results: Vec<Dedupe> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(results.iter().filter(|r| **r == Dedupe::First).count(), 1);
    assert_eq!(results.iter().filter(|r| **r == Dedupe::InProgress).count(), RACERS - 1, "the rest retry later");
}

async fn race_approval_decisions(store: Arc<dyn IncidentStore>) {
    let id = ApprovalId::generate();
    store.create_approval(&approval(&id, Duration::hours(1))).await.unwrap();
    let results = join_all((0..RACERS).map(|i| {
        let (store, id) = (store.clone(), id.clone());
        tokio::spawn(async move {
            let decision = if i % 2 == 0 { ApprovalStatus::Approved } else { ApprovalStatus::Rejected };
            let who = UserId::parse(format!("U{i}")).unwrap();
            store.decide_approval(&id, decision, &who, Utc::now()).await.unwrap()
        })
    }))
    .await;
    let results: Vec<DecideOutcome> = results.into_iter().map(Result::unwrap).collect();
    let decided: Vec<_> =
        results.iter().filter_map(|r| if let DecideOutcome::Decided(a) = r { Some(a) } else { None }).collect();
    assert_eq!(decided.len(), 1, "exactly one click wins");
    let winner = decided[0];
    for r in &results {
        if let DecideOutcome::AlreadyDecided(a) = r {
            assert_eq!(a.status, winner.status);
            assert_eq!(a.decided_by, winner.decided_by);
        }
    }
    assert_eq!(results.iter().filter(|r| matches!(r, DecideOutcome::AlreadyDecided(_))).count(), RACERS - 1);
}

async fn race_handoff(store: Arc<dyn IncidentStore>) {
    // Half the racers deliver the note (duplicate webhooks), half are wait-task attempts with the
    // same token: exactly one of them must resume the execution.
    let id = IncidentId::parse("INC-RACE-HANDOFF").unwrap();
    let exp = Utc::now() + Duration::hours(1);
    let results = join_all((0..RACERS).map(|i| {
        let (store, id) = (store.clone(), id.clone());
        tokio::spawn(async move {
            if i % 2 == 0 {
                store.offer_note(&id, &note("N1", "root cause")).await.unwrap()
            } else {
                store.offer_wait_token(&id, &token("tok-race"), exp).await.unwrap()
            }
        })
    }))
    .await;
    let resumes = results
        .iter()
        .filter(|r| matches!(r.as_ref().unwrap(), HandOff::TokenWaiting(_) | HandOff::NoteWaiting(_)))
        .count();
    assert_eq!(resumes, 1);
}

async fn race_budget(store: Arc<dyn IncidentStore>) {
    let svc = ServiceId::parse("PRACE").unwrap();
    let now = Utc::now();
    let results = join_all((0..RACERS).map(|_| {
        let (store, svc) = (store.clone(), svc.clone());
        tokio::spawn(async move { store.take_autonomy_budget(&svc, now, 5).await.unwrap() })
    }))
    .await;
    assert_eq!(results.iter().filter(|r| *r.as_ref().unwrap()).count(), 5);
}

macro_rules! contract_suite {
    ($backend:ident, $make:path) => {
        mod $backend {
            contract_suite!(@tests $make;
                incidents_are_created_once_and_versioned,
                webhooks_dedupe_with_payload_check_and_ttl,
                audit_is_append_only_and_ordered,
                handoff_token_then_note,
                handoff_note_then_token,
                approvals_are_decided_once,
                service_history_and_catalog,
                runbook_documents_are_replaced_and_listed,
                kill_switch_and_budget,
                service_settings_are_replaced_listed_and_validated,
                race_create_incident,
                race_webhook_dedupe,
                race_approval_decisions,
                race_handoff,
                race_budget
            );
        }
    };
    (@tests $make:path; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                super::$name($make().await).await;
            }
        )*
    };
}

contract_suite!(sqlite, selfheal_tests::sqlite_store);
contract_suite!(dynamodb, selfheal_tests::dynamodb_store);

/// The document-table operations the engine's hot path uses, on every backend: a record written
/// with its log items, log items never overwritten, and projections that carry only the fields
/// asked for (null where absent), in key order.
async fn doc_table_log_and_projection(table: Arc<dyn selfheal::store::DocTable>) {
    use selfheal::store::JsonText;
    let now = Utc::now().timestamp();
    let text = |v: serde_json::Value| JsonText::of(&v).unwrap();
    let log = |ids: &[u32]| -> Vec<(String, JsonText)> {
        ids.iter()
            .map(|i| {
                (
                    format!("EVT#{i:08}"),
                    text(json!({"type": format!("T{i}"), "state": "S", "details": {"big": [1, 2, 3]}})),
                )
            })
            .collect()
    };
    assert!(table.put_if_with_log("P", "META", text(json!({"v": 1})), None, None, log(&[1, 2]), now).await.unwrap());
    // A stale revision writes neither the record nor its log.
    assert!(!table.put_if_with_log("P", "META", text(json!({"v": 9})), None, None, log(&[3]), now).await.unwrap());
    assert!(table.get("P", "EVT#00000003", now).await.unwrap().is_none());
    // An existing log item is left as it is.
    let mut again = log(&[2, 3]);
    again[0].1 = text(json!({"type": "overwritten"}));
    assert!(table.put_if_with_log("P", "META", text(json!({"v": 2})), Some(1), None, again, now).await.unwrap());
    let meta = table.get("P", "META", now).await.unwrap().unwrap();
    assert_eq!((meta.doc, meta.rev), (json!({"v": 2}), 2));
    let event = table.get("P", "EVT#00000002", now).await.unwrap().unwrap();
    assert_eq!(event.doc["type"], json!("T2"));
    let rows = table.query_fields("P", "EVT#", "EVT#~", &["type", "missing", "state"], now).await.unwrap();
    let want: Vec<(String, Vec<serde_json::Value>)> = (1..=3)
        .map(|i| (format!("EVT#{i:08}"), vec![json!(format!("T{i}")), serde_json::Value::Null, json!("S")]))
        .collect();
    assert_eq!(rows, want);
    let full = table.query("P", "EVT#", "EVT#~", now).await.unwrap();
    assert_eq!(full.len(), 3);
    assert_eq!(full[0].1.doc["details"], json!({"big": [1, 2, 3]}));
}

#[tokio::test]
async fn doc_table_log_and_projection_memory() {
    doc_table_log_and_projection(Arc::new(selfheal::adapters::memory::MemoryTable::new())).await;
}

#[tokio::test]
async fn doc_table_log_and_projection_sqlite() {
    let path = std::env::temp_dir().join("selfheal-tests").join(format!("{}.sqlite", uuid::Uuid::new_v4().simple()));
    doc_table_log_and_projection(Arc::new(selfheal::adapters::sqlite::SqliteTable::open(path).unwrap())).await;
}

#[tokio::test]
async fn doc_table_log_and_projection_dynamodb() {
    use selfheal::adapters::dynamodb::DynamoTable;
    let config = selfheal::aws::emulator_config(&selfheal_tests::moto_endpoint()).await;
    let client = aws_sdk_dynamodb::Client::new(&config);
    let name = format!("selfheal-doctable-{}", uuid::Uuid::new_v4().simple());
    DynamoTable::create_table(&client, &name).await.expect("create table on moto");
    doc_table_log_and_projection(Arc::new(DynamoTable::new(client, name))).await;
}
