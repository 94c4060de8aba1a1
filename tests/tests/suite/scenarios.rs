//! The whole loop, black-box, per scenario: PagerDuty and Slack drive it over HTTP, the demo
//! service really breaks and heals, Lightpanda (started by scripts/test.sh) checks it.

use selfheal_cli::demo::{self, Scenario};
use serde_json::Value;

async fn run(scenario: Scenario) -> demo::DemoRun {
    assert!(
        std::env::var("SELFHEAL_LIGHTPANDA_WS").is_ok(),
        "SELFHEAL_LIGHTPANDA_WS is not set: run the tests through scripts/test.sh, which starts Lightpanda"
    );
    let dir = std::env::temp_dir().join("selfheal-test-reports");
    let mut out = Vec::new();
    let run = demo::run(scenario, &dir, &mut out).await.unwrap_or_else(|e| panic!("{}: {e}", scenario.name()));
    let printed = String::from_utf8_lossy(&out);
    assert!(printed.contains("browser Lightpanda (CDP)"), "the real browser must be used:\n{printed}");
    if let Err(e) = demo::check(scenario, &run.record) {
        panic!("{}: {e}\n{printed}", scenario.name());
    }
    assert!(run.report_md.exists());
    run
}

fn kinds(run: &demo::DemoRun) -> Vec<&str> {
    run.trail.iter().map(|e| e.kind.as_str()).collect()
}

fn calls(run: &demo::DemoRun, api: &str, method: &str, path_part: &str) -> usize {
    run.sim.calls().iter().filter(|c| c.api == api && c.method == method && c.path.contains(path_part)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auto_resolves_and_learns() {
    let run = run(Scenario::Auto).await;
    let k = kinds(&run);
    for expected in [
        "incident_created",
        "hypothesis_parsed",
        "runbooks_matched",
        "plan_proposed",
        "decision",
        "preflight",
        "workspace_created",
        "fix_result",
        "workspace_deleted",
        "postflight",
        "incident_resolved",
        "stability_checked",
        "resolution_ingested",
    ] {
        assert!(k.contains(&expected), "missing {expected} in {k:?}");
    }
    // The non-investigator note was ignored, the progress note did not count as a hypothesis.
    assert!(k.contains(&"note_ignored") && k.contains(&"progress_note"));
    // The long note arrived trimmed: intake fetched the full note from PagerDuty.
    assert_eq!(calls(&run, "pagerduty", "GET", "/notes"), 1);
    assert_eq!(calls(&run, "pagerduty", "PUT", "/incidents/"), 1, "resolved once");
    assert!(calls(&run, "pagerduty", "POST", "/notes") >= 1, "summary note posted");
    assert_eq!(run.sim.workspace_counts(), (1, 1));
    let ws = &run.sim.workspaces()[0];
    for p in ["incident_id", "service", "severity", "fix_script_b64", "target"] {
        assert!(ws.parameters.contains_key(p), "rich parameter {p} missing");
    }
    assert_eq!(ws.lifecycle, "off");
    // The resolution went back into the knowledge base with its effectiveness.
    let docs = run.sim.senso_documents();
    assert!(docs.iter().any(|(t, text)| t.starts_with("Resolution") && text.contains("effectiveness: effective")));
    assert!(run.sim.slack_messages().is_empty(), "auto route posts nothing to Slack");
    let path: Vec<&str> =
        run.record["execution"]["path"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(path.last(), Some(&"Resolved"));
    assert!(run.record["execution"]["max_payload_bytes"].as_u64().unwrap() < 32 * 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn approval_resolves_after_a_signed_click() {
    let run = run(Scenario::Approval).await;
    let slack = run.sim.slack_messages();
    let request = slack.iter().find(|m| demo_has_buttons(m)).expect("approval message with buttons");
    assert!(request.text.contains("Approval needed"));
    // The button carries the short approval id, never the task token.
    let id = selfheal_testkit::sim::Sim::approval_id_of(request).unwrap();
    assert!(id.len() <= 32);
    assert!(slack.iter().any(|m| m.kind == "response" && m.text.contains("Approved by <@UAPPROVER1>")));
    assert!(kinds(&run).contains(&"approval_decided"));
    assert_eq!(run.incident.approval.as_ref().unwrap().decided_by.as_ref().unwrap().as_str(), "UAPPROVER1");
    assert_eq!(run.sim.workspace_counts(), (1, 1));
}

fn demo_has_buttons(m: &selfheal_testkit::sim::SlackMessage) -> bool {
    selfheal_testkit::sim::Sim::approval_id_of(m).is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rejection_executes_nothing() {
    let run = run(Scenario::Rejection).await;
    assert_eq!(run.sim.workspace_counts(), (0, 0));
    assert!(kinds(&run).contains(&"rejection_recorded"));
    assert!(run.sim.slack_messages().iter().any(|m| m.text.contains("Rejected by <@UAPPROVER1>")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn low_confidence_escalates_with_what_we_know() {
    let run = run(Scenario::LowConfidence).await;
    assert_eq!(run.record["rule"], "confidence_too_low");
    assert_eq!(run.sim.workspace_counts(), (0, 0));
    let escalation =
        run.sim.slack_messages().into_iter().find(|m| m.text.contains("escalated")).expect("escalation in Slack");
    assert!(escalation.blocks.to_string().contains("Hypothesis"));
    assert!(calls(&run, "pagerduty", "POST", "/notes") >= 1, "escalation note on PagerDuty");
    // The reason is recorded as a code from the state machine, which stats and the Escalated
    // metric's Reason dimension use.
    let escalated = run.trail.iter().rev().find(|e| e.kind == "escalated").expect("escalated");
    assert_eq!(escalated.detail["reason_code"], "policy", "{}", escalated.detail);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn injection_is_routed_to_a_human_and_never_auto_executed() {
    let run = run(Scenario::Injection).await;
    assert_eq!(run.sim.workspace_counts(), (0, 0), "nothing ran");
    let decision = run.trail.iter().find(|e| e.kind == "decision").unwrap();
    assert_eq!(decision.detail["route"], "approval");
    assert_eq!(decision.detail["rule"], "free_form_script");
    let tripwires = decision.detail["inputs"]["tripwires"].as_array().unwrap();
    assert!(!tripwires.is_empty(), "the destructive script tripped the denylist");
    // The injected "confidence 100%" did not override the parsed one.
    assert!(run.incident.hypothesis.as_ref().unwrap().confidence.unwrap().value() < 0.99);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_fix_escalates_and_still_deletes_the_workspace() {
    let run = run(Scenario::FailedFix).await;
    assert_eq!(run.sim.workspace_counts(), (1, 1));
    let result = run.trail.iter().find(|e| e.kind == "fix_result").unwrap();
    assert_eq!(result.detail["succeeded"], false);
    assert!(kinds(&run).contains(&"workspace_deleted"));
    assert_eq!(calls(&run, "pagerduty", "PUT", "/incidents/"), 0, "not resolved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refire_inside_the_window_is_ineffective_and_ingested_as_such() {
    let run = run(Scenario::Refire).await;
    let docs = run.sim.senso_documents();
    assert!(docs.iter().any(|(t, text)| t.starts_with("Resolution") && text.contains("effectiveness: ineffective")));
    let check = run.trail.iter().find(|e| e.kind == "stability_checked").unwrap();
    assert_eq!(check.detail["refires"].as_array().unwrap().len(), 1);
}
