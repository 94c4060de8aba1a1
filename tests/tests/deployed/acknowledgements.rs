//! Acknowledge first, work after: with PagerDuty's REST API and Slack's `response_url` each held
//! for 10 s, the investigator's (trimmed) note is still acknowledged within PagerDuty's 5 s and
//! the approver's click within Slack's 3 s, and the held work is done afterwards: the full note
//! is read by the state machine's ParseHypothesis step, the approval message is updated once
//! `response_url` answers. Run in the local shape (`selfheal serve`'s routes, the local engine)
//! and in the deployed shape (`selfheal stack`: the HTTP API in front of the intake and
//! slack-callback Lambda functions). Needs `SELFHEAL_LIGHTPANDA_WS` or plain-HTTP checks; the
//! deployed shape needs `.venv` and the function binaries (`cargo build --workspace --bins`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use selfheal::domain::{IncidentId, Outcome};
use selfheal::ports::IncidentStore;
use selfheal_cli::demo::{self, HarnessOptions, Scenario};
use selfheal_testkit::sim::{Click, Knobs, Sim};

/// How long the slow upstream holds each call.
const HOLD: Duration = Duration::from_secs(10);

async fn wait_for<T>(what: &str, within: Duration, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One approval-route incident through a shape, with both upstreams slow. `shape` names it in
/// failures.
async fn acknowledged_before_slow_upstreams(shape: &str, sim: Arc<Sim>, store: Arc<dyn IncidentStore>) {
    // No automatic click: the test clicks, and times it.
    *sim.knobs.lock().unwrap() = Knobs::default();
    let incident = format!("QACK{}", &uuid::Uuid::new_v4().simple().to_string()[..8].to_uppercase());
    let id = IncidentId::parse(&incident).unwrap();
    let data = Sim::incident_data(&incident, 7, "Checkout /health failing: 504", demo::SERVICE_ID, "checkout");
    assert_eq!(sim.deliver_webhook("incident.triggered", data, None).await.unwrap(), 202, "{shape}");

    // PagerDuty's REST API is slow; the investigator's note is long, so its webhook is trimmed.
    sim.knobs.lock().unwrap().pagerduty_slow_until = Some(Instant::now() + HOLD);
    let note = demo::investigator_note("80%");
    assert!(note.chars().count() > 160, "the simulator trims notes over 160 characters");
    let started = Instant::now();
    let status = sim.post_note(&incident, demo::INVESTIGATOR, &note).await.unwrap();
    let note_ack = started.elapsed();
    assert_eq!(status, 202, "{shape}");
    assert!(
        note_ack < Duration::from_secs(5),
        "{shape}: the note was acknowledged after {note_ack:?} (PagerDuty allows 5 s)"
    );

    // The full note is read once PagerDuty answers, by ParseHypothesis; the plan goes to Slack.
    let approval = wait_for("the approval request", Duration::from_secs(90), async || {
        sim.slack_messages().iter().filter(|m| m.kind == "post").find_map(Sim::approval_id_of)
    })
    .await;
    let trail = store.audit_trail(&id).await.unwrap();
    let at = |kind: &str| {
        trail.iter().find(|e| e.kind == kind).map(|e| e.at).unwrap_or_else(|| panic!("{shape}: no {kind}"))
    };
    let waited = (at("hypothesis_parsed") - at("hypothesis_received")).to_std().unwrap_or_default();
    assert!(
        waited >= HOLD - Duration::from_secs(2),
        "{shape}: parsed {waited:?} after the hand-off: was the note read?"
    );
    assert!(sim.calls().iter().any(|c| c.api == "pagerduty" && c.path == format!("/incidents/{incident}/notes")));

    // Slack's response_url is slow; the click is answered anyway.
    sim.knobs.lock().unwrap().slack_response_slow_until = Some(Instant::now() + HOLD);
    let started = Instant::now();
    let (status, body) = sim.click(&approval, Click::Approve, demo::APPROVER).await.unwrap();
    let click_ack = started.elapsed();
    assert_eq!((status, body["status"].as_str()), (200, Some("decided")), "{shape}: {body}");
    assert!(
        click_ack < Duration::from_secs(3),
        "{shape}: the click was answered after {click_ack:?} (Slack allows 3 s)"
    );
    println!("{shape}: note acknowledged in {note_ack:?}, click in {click_ack:?}, upstreams held {HOLD:?}");

    // Nothing was lost: the run resolves, and the message update arrives once Slack answers.
    let outcome = wait_for("the outcome", Duration::from_secs(120), async || {
        store.get_incident(&id).await.ok().flatten().and_then(|i| i.outcome)
    })
    .await;
    assert_eq!(outcome, Outcome::Resolved, "{shape}");
    let update = wait_for("the approval message update", HOLD + Duration::from_secs(10), async || {
        sim.slack_messages().into_iter().find(|m| m.kind == "response")
    })
    .await;
    assert!(update.text.starts_with("Approved by"), "{shape}: {}", update.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_upstreams_do_not_delay_acknowledgements_in_the_local_shape() {
    let mut out = Vec::new();
    let options = HarnessOptions { knobs: Some(Knobs::default()), ..Default::default() };
    let h = demo::harness_with(Scenario::Approval, options, &mut out)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", String::from_utf8_lossy(&out)));
    acknowledged_before_slow_upstreams("local", h.sim.clone(), h.stack.store.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_upstreams_do_not_delay_acknowledgements_in_the_deployed_shape() {
    let mut out = Vec::new();
    let h = selfheal_cli::demo_deployed::harness(Scenario::Approval, &mut out)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", String::from_utf8_lossy(&out)));
    acknowledged_before_slow_upstreams("deployed", h.sim.clone(), h.store.clone()).await;
    h.stack.shutdown().await;
}

/// Nobody clicks: the approval times out, the run escalates, and the approval is expired in
/// the store and on the Slack message (buttons removed); a late click is told so.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unanswered_approval_expires_in_the_store_and_in_slack() {
    let mut out = Vec::new();
    let options = HarnessOptions {
        knobs: Some(Knobs::default()),
        settings: Some(Arc::new(|s: &mut selfheal::config::Settings| s.timeouts.approval_secs = 2)),
        ..Default::default()
    };
    let h = demo::harness_with(Scenario::Approval, options, &mut out)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", String::from_utf8_lossy(&out)));
    let data = Sim::incident_data("QEXPIRE1", 8, "Checkout /health failing: 504", demo::SERVICE_ID, "checkout");
    assert_eq!(h.sim.deliver_webhook("incident.triggered", data, None).await.unwrap(), 202);
    // 80 %: the approval route.
    h.sim.post_note("QEXPIRE1", demo::INVESTIGATOR, &demo::investigator_note("80%")).await.unwrap();
    let id = IncidentId::parse("QEXPIRE1").unwrap();
    let outcome = wait_for("the escalation", Duration::from_secs(90), async || {
        h.stack.store.get_incident(&id).await.ok().flatten().and_then(|i| i.outcome)
    })
    .await;
    assert_eq!(outcome, Outcome::Escalated);
    let incident = h.stack.store.get_incident(&id).await.unwrap().unwrap();
    let decision = incident.approval.expect("an approval was requested");
    assert_eq!(decision.status, selfheal::domain::ApprovalStatus::Expired);
    let approval = h.stack.store.get_approval(&decision.approval_id).await.unwrap().unwrap();
    assert_eq!(approval.status, selfheal::domain::ApprovalStatus::Expired);
    let updated = h
        .sim
        .slack_messages()
        .into_iter()
        .find(|m| m.kind == "update" && Some(&m.ts) == approval.slack_ts.as_ref())
        .expect("the approval message was updated");
    assert!(Sim::approval_id_of(&updated).is_none(), "buttons removed: {}", updated.blocks);
    let (status, body) = h.sim.click(approval.id.as_str(), Click::Approve, demo::APPROVER).await.unwrap();
    assert_eq!((status, body["status"].as_str()), (200, Some("expired")), "{body}");
    let reply = wait_for("the answer to the late click", Duration::from_secs(10), async || {
        h.sim.slack_messages().into_iter().find(|m| m.kind == "ephemeral")
    })
    .await;
    assert!(reply.text.contains("expired"), "{}", reply.text);
}
