//! The incident report an incident review starts from: every field the review needs, in the
//! Markdown and in the HTML, and the HTML read back by the real browser (Lightpanda, started by
//! scripts/test.sh) as a DOM, not as a string.

use selfheal::adapters::lightpanda::LightpandaBrowser;
use selfheal::domain::{ApprovalStatus, PlannedAction, VerificationPhase};
use selfheal::ports::{Browser, CheckSpec};
use selfheal_cli::demo::{self, Scenario};

fn lightpanda() -> String {
    std::env::var("SELFHEAL_LIGHTPANDA_WS")
        .expect("SELFHEAL_LIGHTPANDA_WS is not set: run the tests through scripts/test.sh, which starts Lightpanda")
}

/// A check that passes only if `selector` is in the page's DOM and `text` in its rendered text.
fn dom(url: &str, selector: &str, text: &str) -> CheckSpec {
    CheckSpec {
        name: format!("{selector} shows {text:?}"),
        url: url.into(),
        expect_status: 200,
        expect_text: Some(text.into()),
        expect_selector: Some(selector.into()),
        steps: Vec::new(),
        max_latency_ms: None,
        deadline_ms: 8000,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_report_says_what_ran_who_approved_and_what_the_checks_saw() {
    let dir = std::env::temp_dir().join(format!("selfheal-report-{}", uuid::Uuid::new_v4().simple()));
    let mut out = Vec::new();
    let run = demo::run(Scenario::Approval, &dir, &mut out).await.unwrap();
    demo::check(Scenario::Approval, &run.record).unwrap();
    let md = std::fs::read_to_string(&run.report_md).unwrap();
    let html_path = run.report_md.with_extension("html");
    let html = std::fs::read_to_string(&html_path).unwrap();

    let i = &run.incident;
    let plan = i.plan.as_ref().expect("planned");
    let script = plan.script.as_deref().expect("a rendered script");
    let PlannedAction::Catalog { runbook_id, action, parameters } = &plan.action else { panic!("catalog action") };
    let approval = i.approval.as_ref().expect("approved");
    assert_eq!(approval.status, ApprovalStatus::Approved);
    let approver = approval.decided_by.as_ref().unwrap().to_string();
    let remediation = i.remediation.as_ref().expect("executed");
    let before = i.verifications.iter().find(|v| v.phase == VerificationPhase::Preflight).unwrap();
    let after = i.verifications.iter().rev().find(|v| v.phase == VerificationPhase::Postflight).unwrap();
    let decision = i.decision.as_ref().unwrap();
    let script_line = script.lines().find(|l| !l.trim().is_empty() && !l.starts_with('#')).unwrap().trim();
    let log_line = remediation.log_excerpt.lines().rev().find(|l| !l.trim().is_empty()).expect("workspace output");

    // Markdown and HTML carry the same facts.
    let facts: Vec<(&str, String)> = vec![
        ("action", format!("{runbook_id} / {action}")),
        ("parameters", selfheal::domain::canonical_json(parameters)),
        ("script line", script_line.to_string()),
        ("script hash", selfheal::sha256_hex(script.as_bytes())),
        ("plan hash", plan.hash.clone()),
        ("workspace", remediation.workspace_name.clone()),
        ("workspace output", log_line.trim().to_string()),
        ("check before", before.checks[0].name.clone()),
        ("check after", after.checks[0].name.clone()),
        (
            "failing step before",
            before.checks.iter().find_map(|c| c.failing_step.clone()).expect("the baseline failed"),
        ),
        ("decision rule", decision.rule.clone()),
        ("approver", approver.clone()),
        ("approval time", approval.decided_at.unwrap().format("%Y-%m-%d %H:%M:%S").to_string()),
        ("execution", i.execution_id.clone().expect("an execution")),
    ];
    let html_text = html
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    for (what, fact) in &facts {
        assert!(md.contains(fact.as_str()), "Markdown lacks the {what} ({fact:?}):\n{md}");
        assert!(html_text.contains(fact.as_str()), "HTML lacks the {what} ({fact:?})");
    }
    if let Some(url) = i.html_url.as_deref() {
        assert!(md.contains(url) && html.contains(&format!("href=\"{url}\"")), "the PagerDuty link");
    }
    for decision_input in decision.inputs.as_object().unwrap().keys() {
        assert!(md.contains(decision_input.as_str()), "the decision's input {decision_input}");
    }
    for c in before.checks.iter().chain(&after.checks) {
        assert!(md.contains(&format!("{} ms", c.latency_ms)), "each check's timing");
    }

    // The HTML stands on its own in a real browser: each section is in the DOM with its content.
    let (base, _server) = selfheal_testkit::spawn(
        axum::Router::new().route("/report", axum::routing::get(move || async move { axum::response::Html(html) })),
        0,
    )
    .await
    .unwrap();
    let url = format!("{base}/report");
    let browser = LightpandaBrowser::new(&lightpanda(), None).unwrap();
    for spec in [
        dom(&url, "section#plan pre#script", script_line),
        dom(&url, "section#approval", &approver),
        dom(&url, "section#execution pre#workspace-log", log_line.trim()),
        dom(&url, "section#checks-before table#checks-before-table", "failing"),
        dom(&url, "section#checks-after table#checks-after-table", &after.checks[0].name),
        dom(&url, "section#decision pre#decision-inputs", &decision.rule),
        dom(&url, "section#timeline table#timeline-table", "approval_decided"),
    ] {
        let seen = browser.check(&spec).await.unwrap();
        assert!(seen.ok, "{}: {seen:?}", spec.name);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
