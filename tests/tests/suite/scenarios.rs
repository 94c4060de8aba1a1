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
    // Each milestone was noted once on the PagerDuty incident, in order (no approval on this
    // route), before the closing summary.
    let notes = selfheal_notes(&run);
    assert_eq!(
        headlines(&notes),
        [
            "[selfheal] Investigation received: looking for a runbook",
            "[selfheal] Plan and decision: the fix runs automatically",
            "[selfheal] Fix started in an ephemeral Coder workspace",
            "[selfheal] Verification after the fix: the service is healthy",
        ],
        "{notes:#?}"
    );
    assert!(
        notes[0].contains("Confidence: 94%") && notes[0].contains("Root cause (investigator): \"Upstream fault flag")
    );
    assert!(notes[1].contains("Action: demo-service-fault/demo.clear_fault") && notes[1].contains("Decision: auto"));
    assert!(notes[2].contains("Workspace: fix-") && notes[2].contains("Script sha256: "));
    assert!(notes[3].contains("Check \"checkout health\": passed (HTTP 200"), "{}", notes[3]);
    let noted = kinds(&run).iter().filter(|k| **k == "milestone_noted").count();
    assert_eq!(noted, 4);
    // The non-investigator note was ignored, the progress note did not count as a hypothesis.
    assert!(k.contains(&"note_ignored") && k.contains(&"progress_note"));
    // The long note arrived trimmed: the full note was fetched from PagerDuty once; the
    // resolution read the notes back once before writing its summary.
    assert_eq!(calls(&run, "pagerduty", "GET", "/notes"), 2);
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
    // PagerDuty's responders saw each milestone once, in order; the approval note links the
    // Slack message.
    let notes = selfheal_notes(&run);
    assert_eq!(
        headlines(&notes),
        [
            "[selfheal] Investigation received: looking for a runbook",
            "[selfheal] Plan and decision: the fix waits for a person's approval",
            "[selfheal] Approval requested in Slack: nothing runs until an approver decides",
            "[selfheal] Fix started in an ephemeral Coder workspace",
            "[selfheal] Verification after the fix: the service is healthy",
        ],
        "{notes:#?}"
    );
    let link = format!("https://selfheal-sim.slack.com/archives/{}/p{}", request.channel, request.ts.replace('.', ""));
    assert!(notes[2].contains(&format!("Approve or reject: {link}")), "{}", notes[2]);
    assert!(notes[1].contains("Decision: approval by rule between_thresholds"), "{}", notes[1]);
    // The approvers follow the fix in the approval message's thread, with Slack's local dates.
    let thread: Vec<&str> =
        slack.iter().filter(|m| m.thread_ts.as_deref() == Some(request.ts.as_str())).map(|m| m.text.as_str()).collect();
    assert_eq!(thread.len(), 3, "{thread:#?}");
    assert!(thread[0].contains("Fix started in Coder workspace `fix-"), "{}", thread[0]);
    assert!(thread[1].contains("Verified after the fix: the service is healthy"), "{}", thread[1]);
    assert!(thread[1].contains("✓ `checkout health`"), "{}", thread[1]);
    assert!(thread[2].contains("Resolved"), "{}", thread[2]);
    let blocks = slack.iter().filter(|m| m.thread_ts.is_some()).map(|m| m.blocks.to_string()).collect::<String>();
    assert_eq!(blocks.matches("<!date^").count(), 3, "{blocks}");
}

/// The notes selfheal wrote on the incident, milestone notes first; without the closing summary.
fn selfheal_notes(run: &demo::DemoRun) -> Vec<String> {
    run.sim
        .pagerduty_notes(run.incident.id.as_str())
        .into_iter()
        .filter(|(author, text)| author == "PSELFHEAL" && !text.contains("Timeline:"))
        .map(|(_, text)| text)
        .collect()
}

fn headlines(notes: &[String]) -> Vec<&str> {
    notes.iter().map(|n| n.lines().next().unwrap_or_default()).collect()
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
    // The approver said why in the dialog: the reason is in the decision's audit record, on the
    // PagerDuty incident, and on the approval message, each escaped for where it lands.
    let reason = selfheal_testkit::sim::AUTO_REJECT_REASON;
    let views = run.sim.opened_views();
    assert_eq!(views.len(), 1, "one dialog, for the approver");
    assert_eq!(
        (views[0].user.as_str(), views[0].view["callback_id"].as_str()),
        ("UAPPROVER1", Some("selfheal_reject_reason"))
    );
    let decided = run.trail.iter().find(|e| e.kind == "approval_decided").expect("decided");
    assert_eq!(decided.detail["reason"], reason);
    assert_eq!(run.incident.approval.as_ref().unwrap().reason.as_deref(), Some(reason));
    let notes = run.sim.pagerduty_notes(run.incident.id.as_str());
    assert!(
        notes.iter().any(|(_, n)| n.lines().next().unwrap_or_default().ends_with(&format!("Reason: \"{reason}\""))),
        "{notes:#?}"
    );
    let updated =
        run.sim.slack_messages().into_iter().find(|m| m.kind == "update").expect("the approval message updated");
    let blocks = updated.blocks.to_string();
    assert!(
        blocks.contains("Reason: `Wrong PID: 4242 is the ˋvacuumˋ worker &lt;@U0EVIL&gt; *not* the blocker`"),
        "{blocks}"
    );
    assert!(!blocks.contains("<@U0EVIL>") && !blocks.contains("\"actions\""), "no mention, no buttons left: {blocks}");
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

/// The script the scenario's workspace was given (decoded from its rich parameter).
fn workspace_script(run: &demo::DemoRun) -> String {
    use base64::Engine as _;
    let ws = run.sim.workspaces();
    assert_eq!(ws.len(), 1, "one workspace");
    let b64 = ws[0].parameters.get("fix_script_b64").expect("fix_script_b64");
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).unwrap()).unwrap()
}

fn catalog_action(run: &demo::DemoRun) -> (String, String, Value) {
    match &run.incident.plan.as_ref().expect("a plan").action {
        selfheal::domain::PlannedAction::Catalog { runbook_id, action, parameters } => {
            (runbook_id.to_string(), action.to_string(), parameters.clone())
        }
        other => panic!("expected a catalog action, got {other:?}"),
    }
}

fn checks_saw(run: &demo::DemoRun, kind: &str) -> Vec<bool> {
    run.trail.iter().filter(|e| e.kind == kind).filter_map(|e| e.detail["healthy"].as_bool()).collect()
}

/// A real Redis at maxmemory with noeviction (the checkout page's cart writes fail with OOM) is
/// fixed by the shipped runbook: its host and port from the service's settings, the size the
/// model chose within the runbook's bounds, the password from the service's mounted secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_redis_is_really_fixed_by_its_runbook() {
    let run = run(Scenario::RedisMaxmemory).await;
    assert_eq!((checks_saw(&run, "preflight"), checks_saw(&run, "postflight")), (vec![false], vec![true]));
    let target = &run.record["target"];
    assert_eq!(target["maxmemory"], "268435456", "{target}");
    assert_eq!(target["write"], "OK", "{target}");
    let (runbook, action, parameters) = catalog_action(&run);
    assert_eq!((runbook.as_str(), action.as_str()), ("redis-maxmemory", "redis.raise_maxmemory"));
    assert_eq!(parameters["megabytes"], 256, "{parameters}");
    let script = workspace_script(&run);
    let port = target["port"].as_u64().unwrap();
    assert!(script.contains(&format!("redis-cli -h '127.0.0.1' -p {port} CONFIG SET maxmemory 256mb")), "{script}");
    assert!(script.contains("$SELFHEAL_TARGET_SECRETS/redis_password") && !script.contains("REDISCLI_AUTH=target-"));
}

/// A real PostgreSQL where one session holds the orders table's lock (inserts time out): the
/// runbook cancels exactly the backend the investigator named, and the waiting insert lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_blocking_postgres_session_is_really_ended_by_its_runbook() {
    let run = run(Scenario::PostgresBlockingQuery).await;
    assert_eq!((checks_saw(&run, "preflight"), checks_saw(&run, "postflight")), (vec![false], vec![true]));
    let target = &run.record["target"];
    assert_eq!(target["blocker_alive"], false, "{target}");
    assert!(target["orders"].as_str().unwrap().parse::<u32>().unwrap() >= 2, "the waiting insert and a check landed");
    let (runbook, action, parameters) = catalog_action(&run);
    assert_eq!((runbook.as_str(), action.as_str()), ("postgres-blocking-query", "postgres.cancel_query"));
    assert_eq!(parameters["pid"], target["blocker_pid"], "the backend the investigator named");
    // The model chose the PID: a person confirmed it.
    assert_eq!(run.record["rule"], "model_chosen_parameters");
    let script = workspace_script(&run);
    assert!(script.contains(&format!("pg_cancel_backend({})", target["blocker_pid"])), "{script}");
}
