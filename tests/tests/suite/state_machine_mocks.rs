//! Every MockConfigFile test case runs through the local engine against the real
//! `statemachine/incident.asl.json`; the exact path of states and the outcome are asserted.

use selfheal::engine::{MockRunReport, run_mock_case};
use serde_json::{Value, json};

const DEFINITION: &str = include_str!("../../../statemachine/incident.asl.json");
const MOCKS: &str = include_str!("../../../statemachine/test/MockConfigFile.json");
const INPUT: &str = include_str!("../../../statemachine/test/input.json");

async fn run(case: &str) -> MockRunReport {
    run_mock_case(DEFINITION, MOCKS, "incident", case, INPUT, None).await.unwrap_or_else(|e| panic!("{case}: {e}"))
}

const HEAD: &[&str] =
    &["AwaitHypothesis", "ParseHypothesis", "HypothesisUsable", "LookupRunbooks", "PlanRemediation", "Decide", "Route"];
const EXECUTE: &[&str] = &[
    "PreflightCheck",
    "BaselineShowsFailure",
    "ProvisionWorkspace",
    "WaitForWorkspace",
    "PollWorkspace",
    "WorkspaceSettled",
    "WaitForWorkspace",
    "PollWorkspace",
    "WorkspaceSettled",
    "CollectResult",
    "DestroyWorkspace",
    "FixApplied",
];
const CLOSE: &[&str] =
    &["PostflightCheck", "ResolveIncident", "StabilityWindow", "CheckRefire", "IngestResolution", "Resolved"];

fn path(parts: &[&[&str]]) -> Vec<String> {
    parts.iter().flat_map(|p| p.iter().map(|s| s.to_string())).collect()
}

fn assert_case(report: &MockRunReport, expected_path: Vec<String>, outcome: &str) {
    assert_eq!(report.status, "SUCCEEDED", "{report:?}");
    assert_eq!(report.path, expected_path, "path of {}", report.execution);
    assert_eq!(report.output["outcome"], json!(outcome), "{:?}", report.output);
    // Safety invariant: every run that provisioned a workspace also destroyed it.
    if report.path.iter().any(|s| s == "ProvisionWorkspace") {
        assert!(
            report.path.iter().any(|s| s.starts_with("DestroyWorkspace")),
            "workspace not destroyed: {:?}",
            report.path
        );
    }
}

#[tokio::test]
async fn happy_auto_execution() {
    let r = run("HappyAuto").await;
    assert_case(&r, path(&[HEAD, EXECUTE, CLOSE]), "resolved");
    assert_eq!(
        r.output,
        json!({"incident_id": "PINC0042", "outcome": "resolved", "route": "auto", "effectiveness": "effective"})
    );
    assert!(r.transitions <= 40, "{} transitions", r.transitions);
}

#[tokio::test]
async fn note_that_arrived_before_the_wait_skips_it() {
    let r = run("NoteBeforeWait").await;
    assert_case(&r, path(&[HEAD, EXECUTE, CLOSE]), "resolved");
}

#[tokio::test]
async fn approval_approved() {
    let r = run("ApprovalApproved").await;
    assert_case(&r, path(&[HEAD, &["RequestApproval", "ApprovalDecided"], EXECUTE, CLOSE]), "resolved");
    assert_eq!(r.output["route"], json!("approval"));
}

#[tokio::test]
async fn approval_rejected() {
    let r = run("ApprovalRejected").await;
    assert_case(&r, path(&[HEAD, &["RequestApproval", "ApprovalDecided", "RecordRejection", "Rejected"]]), "rejected");
}

#[tokio::test]
async fn approval_timed_out() {
    let r = run("ApprovalTimedOut").await;
    assert_case(&r, path(&[HEAD, &["RequestApproval", "ApprovalTimedOut", "Escalate", "Escalated"]]), "escalated");
}

#[tokio::test]
async fn no_hypothesis_before_timeout() {
    let r = run("NoHypothesisBeforeTimeout").await;
    assert_case(&r, path(&[&["AwaitHypothesis", "NoHypothesis", "Escalate", "Escalated"]]), "escalated");
}

#[tokio::test]
async fn preflight_finds_the_service_healthy() {
    let r = run("PreflightHealthy").await;
    assert_case(
        &r,
        path(&[HEAD, &["PreflightCheck", "BaselineShowsFailure", "NoUserVisibleImpact", "Escalate", "Escalated"]]),
        "escalated",
    );
    assert!(!r.path.iter().any(|s| s == "ProvisionWorkspace"), "nothing may execute");
}

#[tokio::test]
async fn remediation_fails_and_the_workspace_is_still_destroyed() {
    let r = run("RemediationFailed").await;
    let execute = [
        "PreflightCheck",
        "BaselineShowsFailure",
        "ProvisionWorkspace",
        "WaitForWorkspace",
        "PollWorkspace",
        "WorkspaceSettled",
        "CollectResult",
        "DestroyWorkspace",
        "FixApplied",
        "FixFailed",
        "Escalate",
        "Escalated",
    ];
    assert_case(&r, path(&[HEAD, &execute]), "escalated");
}

#[tokio::test]
async fn postflight_still_failing_after_retries() {
    let r = run("PostflightStillFailing").await;
    assert_case(&r, path(&[HEAD, EXECUTE, &["PostflightCheck", "StillFailing", "Escalate", "Escalated"]]), "escalated");
    // One attempt plus the four retries the ASL allows for StillFailing.
    let attempts =
        r.history.iter().filter(|e| e.kind == "TaskScheduled" && e.state.as_deref() == Some("PostflightCheck")).count();
    assert_eq!(attempts, 5);
}

#[tokio::test]
async fn transient_error_is_retried_then_succeeds() {
    let r = run("TransientErrorRetried").await;
    assert_case(&r, path(&[HEAD, EXECUTE, CLOSE]), "resolved");
    let failures: Vec<_> = r
        .history
        .iter()
        .filter(|e| e.kind == "TaskFailed")
        .map(|e| (e.state.clone().unwrap_or_default(), e.details["error"].clone()))
        .collect();
    assert_eq!(failures, [("LookupRunbooks".to_string(), json!("Transient"))]);
}

#[tokio::test]
async fn refire_inside_the_stability_window_is_ineffective() {
    let r = run("RefireInsideStabilityWindow").await;
    assert_case(&r, path(&[HEAD, EXECUTE, CLOSE]), "resolved");
    assert_eq!(r.output["effectiveness"], json!("ineffective"));
}

#[tokio::test]
async fn shadow_mode_executes_nothing() {
    let r = run("ShadowMode").await;
    assert_case(&r, path(&[HEAD, &["ShadowReport", "Shadowed"]]), "shadowed");
}

#[tokio::test]
async fn every_mock_case_is_covered_by_a_test() {
    let cfg: Value = serde_json::from_str(MOCKS).unwrap();
    let mut cases: Vec<&str> =
        cfg["StateMachines"]["incident"]["TestCases"].as_object().unwrap().keys().map(String::as_str).collect();
    cases.sort();
    assert_eq!(
        cases,
        [
            "ApprovalApproved",
            "ApprovalRejected",
            "ApprovalTimedOut",
            "HappyAuto",
            "NoHypothesisBeforeTimeout",
            "NoteBeforeWait",
            "PostflightStillFailing",
            "PreflightHealthy",
            "RefireInsideStabilityWindow",
            "RemediationFailed",
            "ShadowMode",
            "TransientErrorRetried"
        ]
    );
}

#[tokio::test]
async fn an_unknown_test_case_is_a_clear_error() {
    let err = run_mock_case(DEFINITION, MOCKS, "incident", "Nope", INPUT, None).await.unwrap_err();
    assert!(err.to_string().contains("HappyAuto"), "{err}");
}
