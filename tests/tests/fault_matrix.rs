//! The fault matrix: every dependency (PagerDuty REST, Slack, Senso, Anthropic, Coder, the
//! Lightpanda browser, the DynamoDB store) × every fault (timeout, 500, 429 with Retry-After,
//! malformed body, connection refused, slow trickle), injected by a fault proxy in front of the
//! real simulator, browser or moto — knobs, not sleeps.
//!
//! Persistent faults: bounded retries, then an escalation with a reason in a channel that still
//! works; no workspace left behind, nothing executed, nothing resolved, no panic. Transient faults
//! (one bad connection): the run absorbs them and ends as it would have without the fault. The
//! store is the one dependency an escalation cannot route around: there, the webhook is refused
//! with a retryable 500, nothing is started or half-written, and PagerDuty's redelivery after the
//! store recovers runs the incident to the normal outcome.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use selfheal::domain::IncidentId;
use selfheal_cli::demo::{HarnessOptions, Scenario, harness_with};
use selfheal_testkit::faults::{Dependency, FaultKind, UNTIL_CLEARED};
use selfheal_testkit::sim::{Click, Knobs, Sim};

static PANICS: AtomicU32 = AtomicU32::new(0);

fn count_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // This file's own assertions are not the system panicking.
            if info.location().is_none_or(|l| !l.file().ends_with("fault_matrix.rs")) {
                PANICS.fetch_add(1, Ordering::SeqCst);
            }
            default(info);
        }));
    });
}

/// What one run of the matrix observed.
#[derive(Debug)]
struct Observed {
    cell: String,
    trigger_statuses: Vec<u16>,
    outcome: Value,
    route: Value,
    reason: String,
    kinds: Vec<String>,
    workspaces: (u32, u32),
    resolved_in_pagerduty: bool,
    pagerduty_escalation_note: bool,
    slack_escalation: bool,
    faulted: u32,
    path: Vec<String>,
}

impl Observed {
    fn visited(&self, state: &str) -> bool {
        self.path.iter().any(|p| p == state)
    }
}

/// Run one incident with `dependency` faulted for `connections` connections. The approval
/// scenario is used so that every dependency, Slack included, is on the path.
async fn run(dependency: Dependency, kind: FaultKind, connections: u32) -> Observed {
    let cell = format!(
        "{} × {} × {}",
        dependency.name(),
        kind.name(),
        if connections == UNTIL_CLEARED { "persistent" } else { "transient" }
    );
    let change: selfheal_cli::demo::SettingsChange = std::sync::Arc::new(|s| {
        // Short per-attempt timeouts so timeouts and trickles cost seconds, not minutes.
        s.timeouts.api_request_ms = Some(700);
        // 12 s at this speed-up: long enough for a note delivery to fail its retries first.
        s.timeouts.hypothesis_secs = 600;
        for checks in s.checks.values_mut() {
            for c in checks {
                c.deadline_ms = 2500;
            }
        }
    });
    let options = HarnessOptions {
        speedup: Some(50.0),
        fault_proxies: true,
        settings: Some(change),
        knobs: Some(Knobs {
            auto_click: Some((Click::Approve, selfheal_cli::demo::APPROVER.into())),
            ..Knobs::default()
        }),
        dynamodb_endpoint: (dependency == Dependency::Store).then(selfheal_tests::moto_endpoint),
        ..Default::default()
    };
    let mut out = Vec::new();
    let h =
        harness_with(Scenario::Approval, options, &mut out).await.unwrap_or_else(|e| panic!("{cell}: harness: {e}"));
    h.inject(dependency, kind, connections).await.unwrap();

    let id = format!("QM{}", uuid::Uuid::new_v4().simple().to_string()[..10].to_uppercase());
    let data = Sim::incident_data(
        &id,
        7,
        "Checkout /health failing: 504 Gateway Timeout",
        selfheal_cli::demo::SERVICE_ID,
        "checkout",
    );
    let body =
        json!({"event": {"id": format!("01EVT{id}"), "event_type": "incident.triggered", "resource_type": "incident",
        "occurred_at": chrono::Utc::now().to_rfc3339(), "agent": null, "client": null, "data": data}})
        .to_string();
    let webhook_id = format!("whk-{id}");
    // PagerDuty redelivers on 5xx; the last redelivery comes after the dependency recovered.
    let mut trigger_statuses = Vec::new();
    for attempt in 0..4 {
        if attempt == 3 {
            h.heal().await.unwrap();
        }
        let status = h.sim.post_signed_webhook(body.as_bytes(), &webhook_id).await.unwrap();
        trigger_statuses.push(status);
        if status < 500 {
            break;
        }
    }
    if trigger_statuses.last() == Some(&202) {
        // In the background: while PagerDuty is failing, its redeliveries of the note go on.
        let (sim, incident) = (h.sim.clone(), id.clone());
        tokio::spawn(async move {
            sim.post_note(&incident, selfheal_cli::demo::INVESTIGATOR, &selfheal_cli::demo::investigator_note("80%"))
                .await
        });
    }
    let execution = format!("inc-{id}-incident");
    let finished = h.stack.engine.wait_for(&execution, Duration::from_secs(120)).await;
    let (outcome, route, reason, kinds, path) = match finished {
        Ok(rec) => {
            assert!(!rec.is_open(), "{cell}: still running in {:?}", rec.current_state());
            let iid = IncidentId::parse(&id).unwrap();
            let inc = h.stack.store.get_incident(&iid).await.unwrap().unwrap();
            let trail = h.stack.store.audit_trail(&iid).await.unwrap();
            let reason = trail
                .iter()
                .find(|e| e.kind == "escalated")
                .and_then(|e| e.detail["reason"].as_str().map(str::to_string))
                .unwrap_or_default();
            (
                serde_json::to_value(inc.outcome).unwrap(),
                serde_json::to_value(inc.decision.map(|d| d.route)).unwrap(),
                reason,
                trail.iter().map(|e| e.kind.clone()).collect(),
                rec.path,
            )
        }
        Err(_) => (Value::Null, Value::Null, String::new(), Vec::new(), Vec::new()),
    };
    let calls = h.sim.calls();
    let notes = h.sim.pd.lock().unwrap().notes.get(&id).cloned().unwrap_or_default();
    Observed {
        cell,
        trigger_statuses,
        outcome,
        route,
        reason,
        kinds,
        workspaces: h.sim.workspace_counts(),
        resolved_in_pagerduty: calls.iter().any(|c| c.api == "pagerduty" && c.method == "PUT" && c.status == 200),
        pagerduty_escalation_note: notes.iter().any(|n| n.user_id == "PSELFHEAL" && n.content.contains("Escalated")),
        slack_escalation: h.sim.slack_messages().iter().any(|m| m.text.contains("escalated")),
        faulted: h.faulted(dependency),
        path: path.iter().map(|p| p.to_string()).collect(),
    }
}

/// A persistent fault: bounded, escalated with a reason in a channel that works, nothing run.
fn assert_escalated_safely(o: &Observed, dependency: Dependency) {
    let cell = &o.cell;
    assert_eq!(o.outcome, "escalated", "{cell}: {o:#?}");
    assert!(!o.reason.is_empty(), "{cell}: the escalation carries a reason");
    assert!(o.reason.to_lowercase().contains(dependency.name()), "{cell}: the reason names what failed: {}", o.reason);
    if dependency == Dependency::PagerDuty {
        assert!(o.slack_escalation, "{cell}: escalated in Slack while PagerDuty is down");
    } else {
        assert!(o.pagerduty_escalation_note, "{cell}: escalation note on the PagerDuty incident");
    }
    assert!(!o.resolved_in_pagerduty, "{cell}: never resolved");
    assert_eq!(o.workspaces, (0, 0), "{cell}: no workspace for an unverified or unplanned fix");
    assert!(
        !o.kinds.iter().any(|k| k == "fix_result" || k == "workspace_created"),
        "{cell}: nothing executed: {:?}",
        o.kinds
    );
    // Each call makes at most 4 attempts and each state at most 4 tries; a PagerDuty webhook
    // redelivery is one more call (11 deliveries × 4 + 16 for the PagerDuty row).
    assert!(o.faulted <= 64, "{cell}: bounded retries, {} faulted connections", o.faulted);
    if dependency == Dependency::Coder {
        assert!(o.visited("DestroyWorkspaceAfterError"), "{cell}: the error path still deletes: {:?}", o.path);
    }
}

/// A transient fault: absorbed, same outcome as without it.
fn assert_recovered(o: &Observed) {
    let cell = &o.cell;
    assert_eq!((o.outcome.as_str(), o.route.as_str()), (Some("resolved"), Some("approval")), "{cell}: {o:#?}");
    assert!(o.faulted >= 1 || o.cell.contains(FaultKind::ConnectionRefused.name()), "{cell}: the fault was met");
    assert!(o.resolved_in_pagerduty, "{cell}");
    assert_eq!(o.workspaces.0, o.workspaces.1, "{cell}: every workspace deleted");
    assert!(o.workspaces.0 >= 1, "{cell}: the fix ran in a workspace");
    let approved = o.kinds.iter().position(|k| k == "approval_decided");
    let created = o.kinds.iter().position(|k| k == "workspace_created");
    assert!(approved.is_some() && approved < created, "{cell}: the gate came first: {:?}", o.kinds);
}

async fn matrix_row(dependency: Dependency) {
    count_panics();
    let mut cells: Vec<(FaultKind, u32)> = FaultKind::ALL.iter().map(|k| (*k, UNTIL_CLEARED)).collect();
    cells.extend(FaultKind::ALL.iter().filter(|k| **k != FaultKind::ConnectionRefused).map(|k| (*k, 1)));
    let observed: Vec<Observed> =
        futures::stream::iter(cells).map(|(kind, n)| run(dependency, kind, n)).buffer_unordered(4).collect().await;
    for o in &observed {
        eprintln!(
            "{:<45} trigger {:?} outcome {} faulted {} reason {:?}",
            o.cell, o.trigger_statuses, o.outcome, o.faulted, o.reason
        );
    }
    for o in &observed {
        let persistent = o.cell.ends_with("persistent");
        if dependency == Dependency::Store {
            // The store: refused with a retryable 500 while down (nothing started), then the
            // redelivery runs normally.
            if persistent {
                // 500 from the handler, or 503 from the server's request timeout when the store
                // does not answer at all: both retryable, neither a 2xx for unstored work.
                let retryable = o.trigger_statuses[..3].iter().all(|s| matches!(s, 500 | 503));
                assert!(retryable, "{}: {:?}", o.cell, o.trigger_statuses);
            }
            assert_eq!(o.trigger_statuses.last(), Some(&202), "{}", o.cell);
            assert_recovered(o);
        } else if persistent {
            assert_escalated_safely(o, dependency);
        } else if o.cell.contains(FaultKind::MalformedBody.name()) && dependency == Dependency::Slack {
            // The first call to meet it has an effect (posting the approval request): a
            // 2xx whose body does not parse is an unexpected response, never retried blindly (it
            // may have had its effect), so the run escalates with the reason. Side-effect-free
            // calls (reads, searches, planning; Coder's first call looks the workspace up by
            // name) retry it instead, and recover below.
            assert!(o.reason.contains("unexpected"), "{}: {}", o.cell, o.reason);
            assert_escalated_safely(o, dependency);
        } else {
            assert_recovered(o);
        }
    }
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "no panics anywhere");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pagerduty() {
    matrix_row(Dependency::PagerDuty).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slack() {
    matrix_row(Dependency::Slack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn senso() {
    matrix_row(Dependency::Senso).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn anthropic() {
    matrix_row(Dependency::Anthropic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coder() {
    matrix_row(Dependency::Coder).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn browser() {
    matrix_row(Dependency::Browser).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn store() {
    matrix_row(Dependency::Store).await;
}

/// The store fails in the middle of a run (after intake accepted the trigger): the run cannot
/// record anything, yet the humans are told, in both channels, that it stopped and why.
async fn store_outage_mid_run(kind: FaultKind) {
    count_panics();
    let change: selfheal_cli::demo::SettingsChange = std::sync::Arc::new(|s| s.timeouts.hypothesis_secs = 600);
    let options = HarnessOptions {
        speedup: Some(50.0),
        fault_proxies: true,
        settings: Some(change),
        dynamodb_endpoint: Some(selfheal_tests::moto_endpoint()),
        knobs: Some(Knobs {
            auto_click: Some((Click::Approve, selfheal_cli::demo::APPROVER.into())),
            ..Knobs::default()
        }),
        ..Default::default()
    };
    let mut out = Vec::new();
    let h = harness_with(Scenario::Approval, options, &mut out).await.unwrap();
    let id = format!("QO{}", uuid::Uuid::new_v4().simple().to_string()[..10].to_uppercase());
    let data = Sim::incident_data(
        &id,
        8,
        "Checkout /health failing: 504 Gateway Timeout",
        selfheal_cli::demo::SERVICE_ID,
        "checkout",
    );
    assert_eq!(h.sim.deliver_webhook("incident.triggered", data, None).await.unwrap(), 202);
    h.inject(Dependency::Store, kind, UNTIL_CLEARED).await.unwrap();
    let (sim, incident) = (h.sim.clone(), id.clone());
    tokio::spawn(async move {
        sim.post_note(&incident, selfheal_cli::demo::INVESTIGATOR, &selfheal_cli::demo::investigator_note("80%")).await
    });
    let rec = h.stack.engine.wait_for(&format!("inc-{id}-incident"), Duration::from_secs(120)).await.unwrap();
    let cell = format!("store outage mid-run × {}", kind.name());
    assert!(!rec.is_open(), "{cell}: still running in {:?}", rec.current_state());
    assert!(
        rec.path.iter().any(|p| p == "Escalated"),
        "{cell}: ended escalated: {}",
        serde_json::to_string(&rec).unwrap()
    );
    let notes = h.sim.pd.lock().unwrap().notes.get(&id).cloned().unwrap_or_default();
    assert!(
        notes.iter().any(|n| n.user_id == "PSELFHEAL" && n.content.contains("store is unavailable")),
        "{cell}: PagerDuty note says why"
    );
    assert!(h.sim.slack_messages().iter().any(|m| m.text.contains("store is unavailable")), "{cell}: Slack too");
    assert_eq!(h.sim.workspace_counts(), (0, 0), "{cell}");
    assert!(!h.sim.calls().iter().any(|c| c.api == "pagerduty" && c.method == "PUT"), "{cell}: never resolved");
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "no panics anywhere");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn store_outage_in_the_middle_of_a_run() {
    futures::future::join_all([FaultKind::ServerError, FaultKind::ConnectionRefused].map(store_outage_mid_run)).await;
}

// ------------------------------------------------------------------ Coder lifecycle edges

/// What one run against a Coder edge left behind.
struct Edge {
    cell: &'static str,
    outcome: Value,
    reason: String,
    kinds: Vec<Value>,
    /// Workspaces whose delete never succeeded.
    leaked: Vec<String>,
    counts: (u32, u32),
    /// (builds answered 409, delete builds that failed).
    edges: (u32, u32),
    cancels: usize,
    sim: std::sync::Arc<Sim>,
    sim_base: String,
    /// Kept alive: the simulator serves until the harness drops.
    _harness: selfheal_cli::demo::Harness,
}

/// One approval-scenario incident with the Coder simulator behaving as `knobs` say.
async fn run_edge(cell: &'static str, knobs: Knobs, max_polls: Option<u32>) -> Edge {
    count_panics();
    let change: selfheal_cli::demo::SettingsChange = std::sync::Arc::new(move |s| {
        s.timeouts.hypothesis_secs = 600;
        if let Some(n) = max_polls {
            s.timeouts.max_polls = n;
        }
    });
    let options = HarnessOptions {
        speedup: Some(50.0),
        settings: Some(change),
        knobs: Some(Knobs { auto_click: Some((Click::Approve, selfheal_cli::demo::APPROVER.into())), ..knobs }),
        ..Default::default()
    };
    let mut out = Vec::new();
    let h =
        harness_with(Scenario::Approval, options, &mut out).await.unwrap_or_else(|e| panic!("{cell}: harness: {e}"));
    let id = format!("QE{}", uuid::Uuid::new_v4().simple().to_string()[..10].to_uppercase());
    let data = Sim::incident_data(
        &id,
        9,
        "Checkout /health failing: 504 Gateway Timeout",
        selfheal_cli::demo::SERVICE_ID,
        "checkout",
    );
    assert_eq!(h.sim.deliver_webhook("incident.triggered", data, None).await.unwrap(), 202, "{cell}");
    h.sim
        .post_note(&id, selfheal_cli::demo::INVESTIGATOR, &selfheal_cli::demo::investigator_note("80%"))
        .await
        .unwrap();
    let rec = h.stack.engine.wait_for(&format!("inc-{id}-incident"), Duration::from_secs(120)).await;
    let rec = rec.unwrap_or_else(|e| panic!("{cell}: {e:?}"));
    assert!(!rec.is_open(), "{cell}: still running in {:?}", rec.current_state());
    let iid = IncidentId::parse(&id).unwrap();
    let inc = h.stack.store.get_incident(&iid).await.unwrap().unwrap();
    let trail = h.stack.store.audit_trail(&iid).await.unwrap();
    let reason = trail
        .iter()
        .find(|e| e.kind == "escalated")
        .and_then(|e| e.detail["reason"].as_str().map(str::to_string))
        .unwrap_or_default();
    Edge {
        cell,
        outcome: serde_json::to_value(inc.outcome).unwrap(),
        reason,
        kinds: trail.iter().map(|e| json!({"kind": e.kind, "detail": e.detail})).collect(),
        leaked: h.sim.live_workspaces().into_iter().map(|w| w.name).collect(),
        counts: h.sim.workspace_counts(),
        edges: h.sim.coder_edges(),
        cancels: h.sim.calls().iter().filter(|c| c.api == "coder" && c.method == "PATCH" && c.status == 200).count(),
        sim: h.sim.clone(),
        sim_base: h.sim_base.clone(),
        _harness: h,
    }
}

fn has_kind(e: &Edge, kind: &str) -> bool {
    e.kinds.iter().any(|k| k["kind"] == kind)
}

/// Real Coder's lifecycle edges (409 while a build is active, a slow delete, a failed delete
/// build, an agent that never connects, a build still running when the run gives up, a create
/// whose answer was lost): whatever the outcome, no workspace is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coder_lifecycle_edges_leak_no_workspace() {
    use selfheal_testkit::sim::CoderMode;
    let cells = [
        ("409: an autostop build races the delete", Knobs { coder_racing_builds: 1, ..Knobs::default() }, None),
        ("slow delete build (2 s)", Knobs { coder_delete_ms: 2000, ..Knobs::default() }, None),
        ("failed delete build", Knobs { coder_delete_failures: 1, ..Knobs::default() }, None),
        ("agent never connects", Knobs { coder: CoderMode::AgentNeverConnects, ..Knobs::default() }, None),
        (
            "start build still running when polling gives up",
            Knobs { coder: CoderMode::SlowBuild, ..Knobs::default() },
            Some(1),
        ),
        ("create's answer lost after creating", Knobs { coder_create_garbled: 1, ..Knobs::default() }, None),
    ];
    let observed: Vec<Edge> = futures::stream::iter(cells)
        .map(|(cell, knobs, polls)| run_edge(cell, knobs, polls))
        .buffer_unordered(3)
        .collect()
        .await;
    for e in &observed {
        eprintln!(
            "{:<50} outcome {} counts {:?} edges {:?} cancels {} reason {:?}",
            e.cell, e.outcome, e.counts, e.edges, e.cancels, e.reason
        );
    }
    for e in &observed {
        let cell = e.cell;
        assert!(e.leaked.is_empty(), "{cell}: leaked {:?}: {:#?}", e.leaked, e.kinds);
        assert_eq!(e.counts.0, e.counts.1, "{cell}: every workspace created was deleted");
        assert_eq!(e.counts.0, 1, "{cell}: one workspace");
        assert!(has_kind(e, "workspace_deleted"), "{cell}: the deletion is audited");
        match cell {
            c if c.starts_with("409") => {
                assert_eq!(e.outcome, "resolved", "{cell}");
                assert_eq!(e.edges.0, 1, "{cell}: Coder answered 409 once");
                assert!(e.cancels >= 1, "{cell}: the racing build was canceled");
            }
            c if c.starts_with("slow delete") => assert_eq!(e.outcome, "resolved", "{cell}"),
            c if c.starts_with("failed delete") => {
                assert_eq!(e.outcome, "resolved", "{cell}");
                assert_eq!(e.edges.1, 1, "{cell}: one delete build failed, the next succeeded");
            }
            c if c.starts_with("agent never") => {
                assert_eq!(e.outcome, "escalated", "{cell}");
                let fix = e.kinds.iter().find(|k| k["kind"] == "fix_result").expect("fix_result");
                assert!(
                    fix["detail"]["detail"].as_str().unwrap_or_default().contains("never connected"),
                    "{cell}: {fix}"
                );
            }
            c if c.starts_with("start build") => {
                assert_eq!(e.outcome, "escalated", "{cell}");
                assert!(e.cancels >= 1, "{cell}: the active start build was canceled before the delete");
            }
            _ => {
                assert_eq!(e.outcome, "escalated", "{cell}");
                let deleted = e.kinds.iter().find(|k| k["kind"] == "workspace_deleted").expect("deleted");
                assert_eq!(deleted["detail"]["found_by"], "name", "{cell}: found by its deterministic name");
            }
        }
    }
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "no panics anywhere");
}

/// A delete build that keeps failing: the run escalates saying the workspace may be left, and
/// the cleanup (`selfheal workspaces gc`, scheduled hourly when deployed) removes it once Coder
/// can delete again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_workspace_that_cannot_be_deleted_is_escalated_then_collected() {
    let e = run_edge("delete keeps failing", Knobs { coder_delete_failures: 1000, ..Knobs::default() }, None).await;
    assert_eq!(e.outcome, "escalated", "{:#?}", e.kinds);
    assert!(e.reason.contains("delete builds did not succeed"), "{}", e.reason);
    assert!(has_kind(&e, "workspace_delete_failed"), "{:#?}", e.kinds);
    assert_eq!(e.leaked.len(), 1, "the workspace is still there");
    assert_eq!(e.edges.1, selfheal::adapters::coder::MAX_DELETE_BUILDS, "bounded delete attempts");

    use secrecy::SecretString;
    use selfheal::adapters::coder::{CoderApi, TemplateRef};
    let coder = CoderApi::new(
        &format!("{}/coder", e.sim_base),
        SecretString::from(e.sim.creds.coder_token.clone()),
        "me",
        TemplateRef::Version("tv-1".into()),
    )
    .unwrap();
    let cleanup = |dry_run| {
        selfheal::stages::action::clean_up_workspaces(
            &coder,
            chrono::Utc::now(),
            chrono::Duration::hours(6),
            dry_run,
            Duration::from_secs(60),
        )
    };
    // Too young: left alone.
    let report = cleanup(false).await.unwrap();
    assert_eq!((report.seen, report.stale.len()), (1, 0), "{report:?}");
    e.sim.knobs.lock().unwrap().coder_delete_failures = 0;
    e.sim.age_workspaces(chrono::Duration::hours(7));
    let report = cleanup(true).await.unwrap();
    assert_eq!((report.stale.len(), report.deleted), (1, 0), "dry run deletes nothing: {report:?}");
    assert_eq!(e.sim.live_workspaces().len(), 1);
    let report = cleanup(false).await.unwrap();
    assert_eq!((report.stale.len(), report.deleted, report.failed), (1, 1, 0), "{report:?}");
    assert!(e.sim.live_workspaces().is_empty(), "collected");
}
