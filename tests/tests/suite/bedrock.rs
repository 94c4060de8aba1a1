//! Claude on Amazon Bedrock (`selfheal::adapters::bedrock`) against the Bedrock Runtime
//! simulator (`testkit/CONTRACTS.md`, "Amazon Bedrock Runtime"): the real AWS SDK signs each
//! call with static test credentials and sends it to the simulator's `InvokeModel`.

use super::adapters::plan_request;
use aws_sdk_bedrockruntime::config::{BehaviorVersion, Credentials, Region};
use serde_json::{Value, json};
use std::sync::Arc;

use selfheal::adapters::bedrock::{ANTHROPIC_VERSION, BedrockError, BedrockNoteReader, BedrockPlanner, BedrockRuntime};
use selfheal::domain::*;
use selfheal::ports::*;
use selfheal_testkit::sim::{Knobs, NoteReaderMode, Sim, SimCredentials};

/// A Claude model Bedrock serves only through an inference profile, and that profile.
const MODEL: &str = "anthropic.claude-sonnet-4-5-20250929-v1:0";
const PROFILE: &str = "us.anthropic.claude-sonnet-4-5-20250929-v1:0";

async fn sim(knobs: Knobs) -> (Arc<Sim>, Arc<BedrockRuntime>) {
    let sim = Sim::new(SimCredentials::default(), knobs);
    let (base, _server) = selfheal_testkit::spawn(sim.router(), 0).await.unwrap();
    *sim.base.lock().unwrap() = base.clone();
    let config = aws_sdk_bedrockruntime::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AKIDSELFHEALTEST", "selfheal-test-secret", None, None, "test"))
        .endpoint_url(format!("{base}/bedrock"))
        .build();
    let runtime = BedrockRuntime::from_client(&aws_sdk_bedrockruntime::Client::from_conf(config));
    (sim, Arc::new(runtime))
}

fn statuses(sim: &Sim) -> Vec<u16> {
    sim.calls().iter().filter(|c| c.api == "bedrock").map(|c| c.status).collect()
}

#[tokio::test]
async fn the_planner_through_bedrock_returns_a_plan() {
    let (sim, runtime) = sim(Knobs::default()).await;
    let planner = BedrockPlanner::new(runtime, PROFILE, 2048).unwrap();
    let plan = planner.plan(&plan_request()).await.unwrap();
    assert!(
        matches!(plan.action, PlannedAction::Catalog { ref action, .. } if action.as_str() == "demo.clear_fault"),
        "{:?}",
        plan.action
    );
    assert_eq!(plan.risk, RiskLevel::Low);

    // What reached Bedrock: one signed call for the chosen profile, in Bedrock's body shape.
    let calls = sim.bedrock_invocations();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!((call.model_id.as_str(), call.status), (PROFILE, 200));
    assert!(call.credential_scope.ends_with("/us-east-1/bedrock/aws4_request"), "{}", call.credential_scope);
    assert_eq!(call.body["anthropic_version"], ANTHROPIC_VERSION);
    assert!(call.body.get("model").is_none(), "the model is in the path");
    assert_eq!(call.body["tool_choice"], json!({"type": "tool", "name": "submit_remediation_plan"}));
    let prompt = call.body["messages"][0]["content"].as_str().unwrap();
    assert!(prompt.contains("<untrusted_data source=\"investigator\">"), "outside text stays delimited");
    assert_eq!(sim.calls().iter().filter(|c| c.api == "anthropic").count(), 0);
}

#[tokio::test]
async fn the_note_fallback_through_bedrock_keeps_only_what_the_note_says() {
    use selfheal::stages::cognition::read_note;
    // Root cause and confidence in prose the rules do not read as fields.
    let note = "Checkout errors since 10:02.\nThe pool looks exhausted on checkout-db; I'm about 70% confident.\n";
    let (sim, runtime) = sim(Knobs::default()).await;
    let reader = BedrockNoteReader::new(runtime, PROFILE).unwrap();

    // A faithful model: both fields are spans of the note, so both are kept.
    let read = read_note(&reader, true, note).await;
    assert_eq!(read.checked.note.confidence, Some(0.7), "{}", read.model);
    assert!(read.checked.note.root_cause.as_deref().is_some_and(|r| r.contains("exhausted on checkout-db")));
    assert_eq!(sim.bedrock_invocations()[0].body["tool_choice"]["name"], "submit_note_fields");

    // A lying model: neither its root cause nor its 99% is in the note, so both are refused.
    sim.knobs.lock().unwrap().note_reader = NoteReaderMode::Liar;
    let read = read_note(&reader, true, note).await;
    assert_eq!((read.checked.note.root_cause.as_deref(), read.checked.note.confidence), (None, None));
    assert!(!read.checked.refused.is_empty(), "the refusal is recorded: {}", read.model);
    assert_eq!(read.model["answer"]["confidence"], 0.99, "the model was asked and answered");

    // A model that quotes the note's 70% but reports 0.99: refused, never raised.
    sim.knobs.lock().unwrap().note_reader = NoteReaderMode::Inflates;
    let read = read_note(&reader, true, note).await;
    assert_eq!(read.checked.note.confidence, None);
    assert_eq!(statuses(&sim), [200, 200, 200]);
}

#[tokio::test]
async fn throttling_and_a_model_not_ready_are_retried_then_succeed() {
    let (sim, runtime) = sim(Knobs { bedrock_throttles: 1, bedrock_not_ready: 1, ..Knobs::default() }).await;
    let planner = BedrockPlanner::new(runtime, PROFILE, 2048).unwrap();
    planner.plan(&plan_request()).await.unwrap();
    assert_eq!(statuses(&sim), [429, 429, 200]);

    // More than the retry budget (two retries): the error stays retryable for the state machine.
    sim.knobs.lock().unwrap().bedrock_unavailable = 6;
    let err = planner.invoke(&plan_request()).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(err.code(), Some("ServiceUnavailableException"));
    assert!(matches!(err, BedrockError::Unavailable { status: 503, .. }), "{err:?}");
    assert_eq!(statuses(&sim)[3..], [503, 503, 503]);
    let err = planner.plan(&plan_request()).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(
        selfheal::error::StageError::from(err).error_name(),
        "Transient",
        "the state machine retries the step later"
    );
}

#[tokio::test]
async fn a_refused_request_is_reported_as_not_retryable_and_not_repeated() {
    let (sim, runtime) = sim(Knobs::default()).await;
    // A model served only through an inference profile, called by its own id (a classic
    // misconfiguration): 400 ValidationException, once.
    let planner = BedrockPlanner::new(runtime.clone(), MODEL, 2048).unwrap();
    let err = planner.invoke(&plan_request()).await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert_eq!(err.code(), Some("ValidationException"));
    assert!(err.to_string().contains("inference profile"), "{err}");
    assert_eq!(statuses(&sim), [400]);
    let stage = selfheal::error::StageError::from(planner.plan(&plan_request()).await.unwrap_err());
    assert_eq!(stage.error_name(), "UpstreamRejected");

    // A model past its end of life: 404 ResourceNotFoundException, reported as NotFound.
    let retired = BedrockPlanner::new(runtime.clone(), "anthropic.claude-v2", 2048).unwrap();
    let err = retired.invoke(&plan_request()).await.unwrap_err();
    assert!(
        matches!(err, BedrockError::Rejected { status: 404, ref code, .. } if code == "ResourceNotFoundException"),
        "{err:?}"
    );
    let stage = selfheal::error::StageError::from(retired.plan(&plan_request()).await.unwrap_err());
    assert_eq!(stage.error_name(), "NotFound");

    // An id Bedrock does not know at all: 400 "The provided model identifier is invalid."
    let unknown = BedrockNoteReader::new(runtime, "anthropic.claude-nonexistent-v9:0").unwrap();
    let err = unknown.read_note("Root cause: x").await.unwrap_err();
    assert!(!err.is_retryable() && err.to_string().contains("model identifier is invalid"), "{err}");
    assert_eq!(statuses(&sim), [400, 400, 404, 404, 400], "none of them repeated");
}

/// The simulator refuses what Bedrock refuses; the adapter never sends it, so these are sent by
/// hand, to keep the simulator honest.
#[tokio::test]
async fn the_simulator_refuses_what_bedrock_refuses() {
    let (sim, runtime) = sim(Knobs::default()).await;
    let base = sim.base.lock().unwrap().clone();
    let http = reqwest::Client::new();
    let url = format!("{base}/bedrock/model/{}/invoke", PROFILE.replace(':', "%3A"));
    let unsigned = http.post(&url).header("content-type", "application/json").body("{}").send().await.unwrap();
    assert_eq!(unsigned.status(), 403);
    let kind = unsigned.headers()["x-amzn-errortype"].to_str().unwrap().to_string();
    assert!(kind.starts_with("MissingAuthenticationTokenException:"), "{kind}");

    let signed_for = |service: &str| {
        format!(
            "AWS4-HMAC-SHA256 Credential=AKIDSELFHEALTEST/20260101/us-east-1/{service}/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, Signature={}",
            "0".repeat(64)
        )
    };
    let send = |auth: String, body: Value| {
        http.post(&url)
            .header("authorization", auth)
            .header("x-amz-date", "20260101T000000Z")
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    let wrong_service = send(signed_for("bedrock-runtime"), json!({})).await.unwrap();
    assert_eq!(wrong_service.status(), 403);
    assert!(wrong_service.headers()["x-amzn-errortype"].to_str().unwrap().starts_with("InvalidSignatureException"));

    // Anthropic's own body (with `model`, without `anthropic_version`) is refused.
    let planner = BedrockPlanner::new(runtime, PROFILE, 1024).unwrap();
    let mut body = planner.request_body(&plan_request());
    body["model"] = json!(MODEL);
    let answer = send(signed_for("bedrock"), body.clone()).await.unwrap();
    assert_eq!(answer.status(), 400);
    assert!(answer.headers()["x-amzn-errortype"].to_str().unwrap().starts_with("ValidationException"));
    let message: Value = answer.json().await.unwrap();
    assert!(message["message"].as_str().unwrap().contains("extraneous key [model]"), "{message}");
    body.as_object_mut().unwrap().remove("model");
    body["tool_choice"]["disable_parallel_tool_use"] = json!(true);
    let answer = send(signed_for("bedrock"), body.clone()).await.unwrap();
    assert_eq!(answer.status(), 400, "Bedrock's documented tool_choice has only type and name");
    body["tool_choice"] = json!({"type": "tool", "name": "submit_remediation_plan"});
    body.as_object_mut().unwrap().remove("anthropic_version");
    assert_eq!(send(signed_for("bedrock"), body.clone()).await.unwrap().status(), 400);

    // The same body as the adapter sends it is answered with a tool call.
    body["anthropic_version"] = json!(ANTHROPIC_VERSION);
    let answer = send(signed_for("bedrock"), body).await.unwrap();
    assert_eq!(answer.status(), 200);
    assert!(answer.headers().contains_key("x-amzn-bedrock-output-token-count"));
    let message: Value = answer.json().await.unwrap();
    assert_eq!(
        (message["stop_reason"].as_str(), message["content"][0]["type"].as_str()),
        (Some("tool_use"), Some("tool_use"))
    );
    assert_eq!(message["model"], MODEL, "the profile routed to its model");
}

/// No credentials to sign with is a configuration error (not retried, nothing sent); a
/// connection that fails is retried within the budget and stays retryable.
#[tokio::test]
async fn unsigned_calls_are_never_sent_and_dropped_connections_are_retried() {
    let (sim, _) = sim(Knobs::default()).await;
    let base = sim.base.lock().unwrap().clone();
    let no_credentials = aws_sdk_bedrockruntime::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(format!("{base}/bedrock"))
        .build();
    let runtime = BedrockRuntime::from_client(&aws_sdk_bedrockruntime::Client::from_conf(no_credentials));
    let err = BedrockPlanner::new(Arc::new(runtime), PROFILE, 1024).unwrap().invoke(&plan_request()).await.unwrap_err();
    assert!(matches!(err, BedrockError::Misconfigured(_)), "{err:?}");
    assert!(!err.is_retryable());
    assert!(sim.bedrock_invocations().is_empty() && statuses(&sim).is_empty(), "nothing reached Bedrock");

    // A port nobody listens on: every attempt fails to connect.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let config = aws_sdk_bedrockruntime::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AKIDSELFHEALTEST", "selfheal-test-secret", None, None, "test"))
        .endpoint_url(format!("http://{closed}"))
        .build();
    let runtime = BedrockRuntime::from_client(&aws_sdk_bedrockruntime::Client::from_conf(config));
    let planner = BedrockPlanner::new(Arc::new(runtime), PROFILE, 1024).unwrap();
    let started = std::time::Instant::now();
    let err = planner.invoke(&plan_request()).await.unwrap_err();
    assert!(matches!(err, BedrockError::Connection(_)), "{err:?}");
    assert!(err.is_retryable());
    // Two back-offs (at least half of 250 ms and 500 ms) prove the retries happened.
    assert!(started.elapsed() >= std::time::Duration::from_millis(375), "{:?}", started.elapsed());
}
