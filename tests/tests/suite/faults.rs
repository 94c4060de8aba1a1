//! Fault matrix (first rows): a dependency that keeps failing makes the run retry with bounded
//! back-off, then escalate with a clear reason — nothing executed without a verified baseline,
//! every workspace deleted, nothing resolved. Faults come from simulator knobs, time from an
//! accelerated clock (so the state machine's back-offs pass quickly), not from sleeps.

use std::time::Duration;

use selfheal::domain::IncidentId;
use selfheal_cli::demo::{HarnessOptions, Scenario, harness_with};
use selfheal_testkit::sim::Knobs;

async fn run(id: &str, options: HarnessOptions) -> (serde_json::Value, selfheal_cli::demo::Harness) {
    let mut out = Vec::new();
    let h = harness_with(Scenario::Auto, HarnessOptions { speedup: Some(50.0), ..options }, &mut out).await.unwrap();
    selfheal_tests::start_demo_incident(&h, id).await;
    let rec = h.stack.engine.wait_for(&format!("inc-{id}-incident"), Duration::from_secs(60)).await.unwrap();
    assert!(!rec.is_open(), "{id}: still running in {:?}", rec.current_state());
    let inc = h.stack.store.get_incident(&IncidentId::parse(id).unwrap()).await.unwrap().unwrap();
    let trail = h.stack.store.audit_trail(&inc.id).await.unwrap();
    let reason = trail.iter().find(|e| e.kind == "escalated").map(|e| e.detail["reason"].clone()).unwrap_or_default();
    (serde_json::json!({"outcome": inc.outcome, "reason": reason, "path": rec.path}), h)
}

fn assert_escalated_safely(id: &str, r: &serde_json::Value, h: &selfheal_cli::demo::Harness, mentions: &str) {
    assert_eq!(r["outcome"], "escalated", "{id}: {r}");
    let reason = r["reason"].as_str().unwrap_or_default().to_lowercase();
    assert!(reason.contains(mentions), "{id}: the reason should name {mentions}: {reason}");
    let (created, deleted) = h.sim.workspace_counts();
    assert_eq!(created, deleted, "{id}: every workspace deleted");
    assert!(!h.sim.calls().iter().any(|c| c.api == "pagerduty" && c.method == "PUT"), "{id}: never resolved");
    assert!(
        h.sim.calls().iter().any(|c| c.api == "pagerduty" && c.method == "POST" && c.path.ends_with("/notes")),
        "{id}: escalation note"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn anthropic_keeps_overloading() {
    let (r, h) = run(
        "QFAULTA",
        HarnessOptions { knobs: Some(Knobs { anthropic_overloads: 1000, ..Knobs::default() }), ..Default::default() },
    )
    .await;
    assert_escalated_safely("anthropic", &r, &h, "anthropic");
    assert_eq!(h.sim.workspace_counts(), (0, 0));
    // Bounded: the client's 2 retries × the state machine's 1 + 3 attempts.
    let calls = h.sim.calls().iter().filter(|c| c.api == "anthropic").count();
    assert_eq!(calls, 12, "bounded retries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn senso_keeps_rate_limiting() {
    let (r, h) = run(
        "QFAULTS",
        HarnessOptions { knobs: Some(Knobs { senso_rate_limits: 1000, ..Knobs::default() }), ..Default::default() },
    )
    .await;
    assert_escalated_safely("senso", &r, &h, "senso");
    assert_eq!(h.sim.workspace_counts(), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coder_keeps_failing() {
    let (r, h) = run(
        "QFAULTC",
        HarnessOptions { knobs: Some(Knobs { coder_unavailable: 1000, ..Knobs::default() }), ..Default::default() },
    )
    .await;
    assert_escalated_safely("coder", &r, &h, "coder");
    let path: Vec<&str> = r["path"].as_array().unwrap().iter().filter_map(|p| p.as_str()).collect();
    assert!(path.contains(&"DestroyWorkspaceAfterError"), "the error path still tries to delete: {path:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_browser_never_counts_as_a_confirmed_failure() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (r, h) = run(
        "QFAULTB",
        HarnessOptions { browser_endpoint: Some(format!("ws://127.0.0.1:{closed}/")), ..Default::default() },
    )
    .await;
    assert_escalated_safely("browser", &r, &h, "browser");
    assert_eq!(h.sim.workspace_counts(), (0, 0), "no fix runs on an unobserved baseline");
}

fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn anthropic_refuses_connections() {
    let port = closed_port();
    let change: selfheal_cli::demo::SettingsChange =
        std::sync::Arc::new(move |s| s.anthropic.api_base = format!("http://127.0.0.1:{port}"));
    let (r, h) = run("QFAULTR", HarnessOptions { settings: Some(change), ..Default::default() }).await;
    assert_escalated_safely("anthropic refused", &r, &h, "anthropic");
    assert_eq!(h.sim.workspace_counts(), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pushing_runbooks_to_an_unreachable_senso_is_a_clear_error() {
    let port = closed_port();
    let change: selfheal_cli::demo::SettingsChange =
        std::sync::Arc::new(move |s| s.senso.api_base = format!("http://127.0.0.1:{port}"));
    let mut out = Vec::new();
    let result = harness_with(
        Scenario::Auto,
        HarnessOptions { settings: Some(change), speedup: Some(50.0), ..Default::default() },
        &mut out,
    )
    .await;
    assert!(result.is_err(), "pushing runbooks to an unreachable Senso is a clear error");
    assert!(result.err().unwrap().to_lowercase().contains("senso"));
}
