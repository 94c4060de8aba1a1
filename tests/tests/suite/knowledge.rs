//! Runbooks and past resolutions kept apart in Senso (issue 16, item 4): runbooks go into the
//! runbooks' folder and retrieval searches only their documents; resolutions go into their own
//! folder and never stand in for a runbook, however many repeat the next query's words; what a
//! resolution says about a runbook's effectiveness counts through the catalog's discount.

use chrono::Utc;
use secrecy::SecretString;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;

use selfheal::adapters::senso::SensoKb;
use selfheal::config::{SensoApi, Settings};
use selfheal::domain::*;
use selfheal::error::ClientError;
use selfheal::ports::*;
use selfheal::stages::closing::resolution_document;
use selfheal::stages::{self, Deps, Function};
use selfheal::wiring::build_deps;
use selfheal::{adapters::memory::MemoryTable, store::TableStore};
use selfheal_testkit::sim::{Knobs, SENSO_RESOLUTIONS_FOLDER, SENSO_RUNBOOKS_FOLDER, Sim, SimCredentials};

struct World {
    deps: Deps,
    sim: Arc<Sim>,
}

async fn world() -> World {
    let creds = SimCredentials::default();
    let sim = Sim::new(creds.clone(), Knobs::default());
    let (base, _task) = selfheal_testkit::spawn(sim.router(), 0).await.unwrap();
    let mut settings = Settings::from_sources(None, |_| None).unwrap();
    settings.senso.api_base = format!("{base}/senso");
    settings.senso.runbooks_folder = SENSO_RUNBOOKS_FOLDER.into();
    settings.senso.resolutions_folder = SENSO_RESOLUTIONS_FOLDER.into();
    let secrets = selfheal::config::Secrets {
        senso_api_key: Some(SecretString::from(creds.senso_key.clone())),
        ..Default::default()
    };
    let store: Arc<dyn IncidentStore> = Arc::new(TableStore::new(MemoryTable::new()));
    let deps = build_deps(
        settings,
        secrets,
        store,
        Arc::new(selfheal::wiring::Unconfigured("orchestrator")),
        Arc::new(selfheal::ports::SystemClock::real()),
    );
    World { deps, sim }
}

fn shipped_runbooks() -> Vec<selfheal::runbooks::Runbook> {
    selfheal::runbooks::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/runbooks")).unwrap()
}

async fn push_runbooks(w: &World) {
    let pushed = selfheal::runbooks::push(
        w.deps.kb.as_ref(),
        w.deps.store.as_ref(),
        &shipped_runbooks(),
        std::time::Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert!(pushed.iter().all(|p| p.status == IngestStatus::Complete), "{pushed:?}");
}

const ROOT_CAUSE: &str = "Redis maxmemory reached with noeviction: writes fail with OOM command not allowed";

/// An incident on `checkout` whose investigator blamed Redis memory.
async fn incident(w: &World, id: &str) -> IncidentId {
    let id = IncidentId::parse(id).unwrap();
    let mut incident = Incident::new(
        id.clone(),
        "checkout errors: OOM command not allowed".into(),
        ServiceRef { id: ServiceId::parse("PSVC1").unwrap(), name: ServiceName::parse("checkout").unwrap() },
        Urgency::High,
        Utc::now(),
    );
    incident.hypothesis = Some(Hypothesis {
        root_cause: ROOT_CAUSE.into(),
        confidence: Some(Confidence::parse(0.9).unwrap()),
        evidence: vec!["used_memory equals maxmemory".into()],
        alternatives: vec![],
        services: vec!["redis".into()],
    });
    w.deps.store.create_incident(&incident).await.unwrap();
    id
}

/// A resolved incident with the same root cause, fixed with the Redis runbook, as knowledge.
async fn ingest_past_resolution(w: &World, n: usize, effectiveness: Effectiveness) {
    let id = incident(w, &format!("QPAST{n}")).await;
    let mut past = w.deps.store.get_incident(&id).await.unwrap().unwrap();
    past.effectiveness = Some(effectiveness);
    past.plan = Some(Plan {
        analysis: format!("{ROOT_CAUSE}; raised maxmemory and evicted volatile keys (incident {n})"),
        runbook_sources: vec![],
        risks: vec![],
        risk: RiskLevel::Low,
        hash: String::new(),
        action: PlannedAction::Catalog {
            runbook_id: RunbookId::parse("redis-maxmemory").unwrap(),
            action: ActionName::parse("redis.raise_maxmemory").unwrap(),
            parameters: json!({}),
        },
        rollback: "none".into(),
        expected_outcome: "writes succeed".into(),
        verification_hints: vec![],
        script: None,
        catalog_version: None,
        model_chosen: vec![],
    });
    let (title, text) = resolution_document(&past);
    w.deps.kb.ingest(DocumentKind::Resolution, &title, &text).await.unwrap();
}

async fn lookup(w: &World, id: &IncidentId) -> (Incident, Value) {
    stages::handle(&w.deps, Function::Senso, json!({"op": "lookup_runbooks", "incident_id": id.as_str()}))
        .await
        .unwrap();
    let incident = w.deps.store.get_incident(id).await.unwrap().unwrap();
    let trail = w.deps.store.audit_trail(id).await.unwrap();
    let matched = trail.iter().rev().find(|e| e.kind == "runbooks_matched").unwrap().detail.clone();
    (incident, matched)
}

/// Wait until Senso has processed everything ingested so far (it is asynchronous).
async fn processed() {
    tokio::time::sleep(std::time::Duration::from_millis(80)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resolutions_never_crowd_runbooks_out_of_retrieval() {
    let w = world().await;
    push_runbooks(&w).await;
    let first = incident(&w, "QNOW1").await;
    processed().await;
    let (before, _) = lookup(&w, &first).await;
    let m = before.match_score.unwrap().value();
    assert!(before.runbooks.iter().any(|r| r.runbook_id.as_ref().map(|r| r.as_str()) == Some("redis-maxmemory")));
    assert!(m > 0.0);

    // Many past resolutions later, each repeating the query's words more closely than any runbook.
    for n in 0..25 {
        ingest_past_resolution(&w, n, Effectiveness::Effective).await;
    }
    processed().await;
    let later = incident(&w, "QNOW2").await;
    let (after, matched) = lookup(&w, &later).await;
    assert_eq!(after.match_score.unwrap().value(), m, "the same runbooks, the same match");
    assert_eq!(after.runbooks, before.runbooks.clone(), "{matched}");
    assert!(after.runbooks.iter().all(|r| r.runbook_id.is_some() && !r.title.starts_with("Resolution")));
    assert_eq!(matched["searched"]["runbook_documents"], shipped_runbooks().len());

    // Each kind sits in its own folder.
    for (title, folder) in w.sim.senso_folders() {
        let expected = if title.starts_with("Resolution ") { SENSO_RESOLUTIONS_FOLDER } else { SENSO_RUNBOOKS_FOLDER };
        assert_eq!(folder.as_deref(), Some(expected), "{title}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fix_that_did_not_hold_lowers_its_runbooks_match_not_a_resolution_document() {
    let w = world().await;
    push_runbooks(&w).await;
    processed().await;
    let first = incident(&w, "QDISC1").await;
    let m = lookup(&w, &first).await.0.match_score.unwrap().value();
    // The resolution says it did not hold; the catalog counts it (as `check_refire` does).
    ingest_past_resolution(&w, 1, Effectiveness::Ineffective).await;
    let (runbook, action) =
        (RunbookId::parse("redis-maxmemory").unwrap(), ActionName::parse("redis.raise_maxmemory").unwrap());
    w.deps.store.record_action_outcome(&runbook, &action, Effectiveness::Ineffective).await.unwrap();
    processed().await;
    let second = incident(&w, "QDISC2").await;
    let (after, _) = lookup(&w, &second).await;
    let discounted = after.match_score.unwrap().value();
    assert!((discounted - m * 0.75).abs() < 1e-9, "{discounted} vs {m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pushing_again_searches_the_new_document_only() {
    let w = world().await;
    push_runbooks(&w).await;
    push_runbooks(&w).await;
    processed().await;
    let docs = w.deps.store.runbook_documents().await.unwrap();
    assert!(docs.iter().all(|d| d.superseded.len() == 1), "{docs:?}");
    let id = incident(&w, "QAGAIN1").await;
    let (incident, _) = lookup(&w, &id).await;
    let mut ids: Vec<_> = incident.runbooks.iter().filter_map(|r| r.content_id.clone()).collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "no runbook twice");
    assert!(ids.iter().all(|c| docs.iter().any(|d| &d.content_id == c)), "only current documents");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_catalog_without_recorded_documents_still_skips_resolutions() {
    let w = world().await;
    // A catalog pushed by an older version: actions and documents, but no document ids recorded.
    for rb in shipped_runbooks() {
        for a in &rb.actions {
            w.deps.store.put_catalog_action(a).await.unwrap();
        }
        w.deps
            .kb
            .ingest(DocumentKind::Runbook, &format!("{}: {}", rb.id, rb.title), &rb.knowledge_text())
            .await
            .unwrap();
    }
    for n in 0..5 {
        ingest_past_resolution(&w, n, Effectiveness::Effective).await;
    }
    processed().await;
    let id = incident(&w, "QOLD1").await;
    let (incident, matched) = lookup(&w, &id).await;
    assert!(matched["searched"].as_str().unwrap().contains("selfheal runbooks push"), "{matched}");
    assert!(matched["resolutions_skipped"].as_u64().unwrap() > 0, "{matched}");
    assert!(incident.runbooks.iter().all(|r| !r.title.starts_with("Resolution")));
    assert!(incident.runbooks.iter().any(|r| r.runbook_id.as_ref().map(|r| r.as_str()) == Some("redis-maxmemory")));
}

#[tokio::test]
async fn senso_refuses_a_folder_it_does_not_have_and_the_scope_is_kept() {
    let sim = Sim::new(SimCredentials::default(), Knobs::default());
    let (base, _task) = selfheal_testkit::spawn(sim.router(), 0).await.unwrap();
    let key = || SecretString::from(sim.creds.senso_key.clone());
    let wrong = SensoKb::new(&format!("{base}/senso"), key(), SensoApi::Org).unwrap().with_folders("nope", "");
    let err = wrong.ingest(DocumentKind::Runbook, "x: y", "text").await.unwrap_err();
    assert!(matches!(err, ClientError::Status { status: 404, retryable: false, .. }), "{err:?}");
    // The root (no folder) is fine; a scoped search returns only the scope's documents.
    let kb = SensoKb::new(&format!("{base}/senso"), key(), SensoApi::Org).unwrap();
    let a = kb.ingest(DocumentKind::Runbook, "a: redis memory", "redis maxmemory noeviction").await.unwrap();
    let b = kb.ingest(DocumentKind::Resolution, "Resolution X: redis", "redis maxmemory noeviction oom").await.unwrap();
    processed().await;
    let all = kb.search("redis maxmemory noeviction", 5, &SearchScope::default()).await.unwrap();
    assert_eq!(all.hits.len(), 2);
    let scoped =
        kb.search("redis maxmemory noeviction", 5, &SearchScope { content_ids: vec![a.clone()] }).await.unwrap();
    assert_eq!(scoped.hits.iter().map(|h| h.content_id.clone()).collect::<Vec<_>>(), [a]);
    // A scope that matches nothing returns nothing: no fallback to the rest of the base (which
    // Senso does unless `require_scoped_ids` is set).
    kb.ingest(DocumentKind::Runbook, "c: postgres", "postgres blocking query").await.unwrap();
    processed().await;
    let none = kb.search("postgres blocking query", 5, &SearchScope { content_ids: vec![b.clone()] }).await.unwrap();
    assert!(none.hits.is_empty(), "{none:?}");
}
