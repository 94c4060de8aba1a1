//! The secrets sweep: every demo scenario end to end, then every SaaS dependency answering with an
//! error that echoes the request back (credentials included, as a debugging proxy would). Not one
//! known secret value may appear in the logs, audit records, Slack messages, PagerDuty notes,
//! execution records and history, the incident report, the console output or an error.

use std::time::Duration;

use selfheal::domain::IncidentId;
use selfheal_cli::demo::{APPROVER, HarnessOptions, INVESTIGATOR, SERVICE_ID, Scenario, harness_with};
use selfheal_testkit::faults::{Dependency, FaultKind, UNTIL_CLEARED};
use selfheal_testkit::sim::{Click, Knobs, Sim, SimCredentials};

fn secret_values(c: &SimCredentials) -> Vec<String> {
    vec![
        c.webhook_secret.clone(),
        c.slack_signing_secret.clone(),
        c.pagerduty_token.clone(),
        c.slack_bot_token.clone(),
        c.senso_key.clone(),
        c.anthropic_key.clone(),
        c.coder_token.clone(),
    ]
}

/// Everything one run produced that a person or a log pipeline could read.
fn outputs_of(sim: &Sim, incident: &str, trail: &[selfheal::domain::AuditEvent]) -> Vec<(String, String)> {
    let notes = sim.pd.lock().unwrap().notes.get(incident).cloned().unwrap_or_default();
    vec![
        ("audit".into(), serde_json::to_string(trail).unwrap()),
        ("slack".into(), serde_json::to_string(&sim.slack_messages()).unwrap()),
        ("pagerduty notes".into(), serde_json::to_string(&notes).unwrap()),
        ("pagerduty resolutions".into(), format!("{:?}", sim.pd.lock().unwrap().resolved)),
        ("senso documents".into(), format!("{:?}", sim.senso_documents())),
        ("coder workspaces".into(), serde_json::to_string(&sim.workspaces()).unwrap()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_known_secret_reaches_any_output() {
    let logs = selfheal_tests::CapturedLogs::default();
    selfheal::telemetry::init_with_writer(logs.clone(), |k| match k {
        "AWS_LAMBDA_LOG_LEVEL" => Some("DEBUG".into()),
        _ => None,
    });
    let mut secrets = Vec::new();
    let mut outputs: Vec<(String, String)> = Vec::new();

    // 1. Every scenario, end to end, with its report and console output.
    let reports = std::env::temp_dir().join(format!("selfheal-sweep-{}", uuid::Uuid::new_v4().simple()));
    let scenarios = [
        Scenario::Auto,
        Scenario::Approval,
        Scenario::Rejection,
        Scenario::LowConfidence,
        Scenario::Injection,
        Scenario::FailedFix,
        Scenario::Refire,
    ];
    let runs = futures::future::join_all(scenarios.map(|scenario| {
        let reports = reports.clone();
        async move {
            let mut console = Vec::new();
            let run = selfheal_cli::demo::run(scenario, &reports, &mut console).await.unwrap();
            (scenario, console, run)
        }
    }))
    .await;
    for (scenario, console, run) in runs {
        secrets.extend(secret_values(&run.sim.creds));
        let name = scenario.name();
        outputs.push((format!("{name}: console"), String::from_utf8_lossy(&console).into_owned()));
        outputs.push((format!("{name}: record"), run.record.to_string()));
        outputs.push((format!("{name}: report"), std::fs::read_to_string(&run.report_md).unwrap()));
        outputs.push((
            format!("{name}: html report"),
            std::fs::read_to_string(run.report_md.with_extension("html")).unwrap(),
        ));
        for (what, text) in outputs_of(&run.sim, run.incident.id.as_str(), &run.trail) {
            outputs.push((format!("{name}: {what}"), text));
        }
    }

    // 2. Each SaaS dependency fails with an error body that echoes our request, headers and all.
    let echoes = futures::future::join_all(
        [Dependency::PagerDuty, Dependency::Slack, Dependency::Senso, Dependency::Anthropic, Dependency::Coder]
            .map(echo_run),
    )
    .await;
    for (creds, produced) in echoes {
        secrets.extend(creds);
        outputs.extend(produced);
    }

    // 3. The same webhook id with a different payload: refused, and the refusal is in the log.
    let mut console = Vec::new();
    let h = harness_with(Scenario::Auto, HarnessOptions::default(), &mut console).await.unwrap();
    secrets.extend(secret_values(&h.creds));
    let ping = |n: u32| {
        format!(
            r#"{{"event":{{"id":"01PING{n}","event_type":"pagey.ping","resource_type":"pagey","occurred_at":"2026-11-28T10:00:00Z","agent":null,"client":null,"data":{{}}}}}}"#
        )
    };
    assert_eq!(h.sim.post_signed_webhook(ping(1).as_bytes(), "whk-reused").await.unwrap(), 202);
    assert_eq!(h.sim.post_signed_webhook(ping(2).as_bytes(), "whk-reused").await.unwrap(), 409);
    assert!(
        logs.text().lines().any(|l| l.contains("different payload") && l.contains("whk-reused")),
        "the refused replay is logged with its webhook id"
    );

    outputs.push(("logs".into(), logs.text()));
    assert!(outputs.iter().any(|(w, t)| w == "logs" && t.contains("api call")), "logs were captured");
    let mut leaks = Vec::new();
    for secret in &secrets {
        for (what, text) in &outputs {
            if text.contains(secret.as_str()) {
                leaks.push(what.clone());
            }
        }
    }
    assert!(leaks.is_empty(), "secret values found in: {leaks:?}");
    assert_eq!(secrets.len(), 13 * 7, "{} secrets checked", secrets.len());
}

/// One incident with `dependency` answering every call with an error that echoes the request.
async fn echo_run(dependency: Dependency) -> (Vec<String>, Vec<(String, String)>) {
    let options = HarnessOptions {
        speedup: Some(50.0),
        fault_proxies: true,
        knobs: Some(Knobs { auto_click: Some((Click::Approve, APPROVER.into())), ..Knobs::default() }),
        settings: Some(std::sync::Arc::new(|s| s.timeouts.hypothesis_secs = 600)),
        ..Default::default()
    };
    let mut console = Vec::new();
    let h = harness_with(Scenario::Approval, options, &mut console).await.unwrap();
    h.inject(dependency, FaultKind::EchoingServerError, UNTIL_CLEARED).await.unwrap();
    let id = format!("QS{}", uuid::Uuid::new_v4().simple().to_string()[..10].to_uppercase());
    let data = Sim::incident_data(&id, 3, "Checkout /health failing: 504 Gateway Timeout", SERVICE_ID, "checkout");
    assert_eq!(h.sim.deliver_webhook("incident.triggered", data, None).await.unwrap(), 202);
    let note = selfheal_cli::demo::investigator_note("80%");
    // Delivered in the background: with PagerDuty failing, its redeliveries go on for a while.
    let (sim, incident) = (h.sim.clone(), id.clone());
    tokio::spawn(async move { sim.post_note(&incident, INVESTIGATOR, &note).await });
    let execution = format!("inc-{id}-incident");
    let record = h.stack.engine.wait_for(&execution, Duration::from_secs(120)).await.unwrap();
    let iid = IncidentId::parse(&id).unwrap();
    let trail = h.stack.store.audit_trail(&iid).await.unwrap();
    let incident = h.stack.store.get_incident(&iid).await.unwrap().unwrap();
    let name = dependency.name();
    assert_eq!(serde_json::to_value(incident.outcome).unwrap(), "escalated", "{name}");
    // The probe worked: the echoed credential reached our error path and was scrubbed there.
    let reason = trail.iter().find(|e| e.kind == "escalated").map(|e| e.detail["reason"].to_string()).unwrap();
    assert!(reason.contains("[redacted]"), "{name}: the echo should have been scrubbed: {reason}");
    let mut produced = vec![
        (format!("echo {name}: console"), String::from_utf8_lossy(&console).into_owned()),
        (format!("echo {name}: execution"), serde_json::to_string(&record).unwrap()),
        (
            format!("echo {name}: history"),
            serde_json::to_string(&h.stack.engine.history(&execution).await.unwrap()).unwrap(),
        ),
        (format!("echo {name}: incident"), serde_json::to_string(&incident).unwrap()),
    ];
    for (what, text) in outputs_of(&h.sim, &id, &trail) {
        produced.push((format!("echo {name}: {what}"), text));
    }
    (secret_values(&h.creds), produced)
}
