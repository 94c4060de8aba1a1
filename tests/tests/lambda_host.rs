//! The Lambda host of `selfheal stack` (Runtime API emulator, Invoke API, Step Functions task
//! dispatcher) and the HTTP API in front of it, driven with a real `lambda_runtime` client: the
//! `test-lambda` binary of this package (cargo builds it for these tests).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use selfheal::engine::{TaskDispatcher, TaskInvocation, TaskOutcome};
use selfheal_cli::stack::AwsCredentials;
use selfheal_cli::stack::apigw::{self, HttpRoute};
use selfheal_cli::stack::lambda::{FunctionSpec, Invoked, LambdaHost, LambdaHostError, LambdaTaskDispatcher};

const MARKER: &str = "SELFHEAL_LAMBDA_HOST_TEST_MARKER";

/// Every test calls this first: the marker variable is set while no other test thread is past
/// this point (the others wait on the `Once`), so setting it cannot race a reader.
fn setup() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: see above; no other thread of this test binary is reading the environment.
        // The test's own environment must carry a marker the functions must not see.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var(MARKER, "must-not-leak")
        };
        let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("selfheal_cli=debug").try_init();
    });
}

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_test-lambda"))
}

fn spec(logical_id: &str, timeout_secs: u64, env: &[(&str, &str)]) -> FunctionSpec {
    let name = format!("selfheal-{logical_id}");
    FunctionSpec {
        logical_id: logical_id.to_string(),
        arn: format!("arn:aws:lambda:us-east-1:123456789012:function:{name}"),
        name,
        binary: binary(),
        env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        timeout_secs,
        memory_mb: 256,
        credentials: None,
    }
}

fn temp_dir(label: &str) -> PathBuf {
    let dir = std::env::temp_dir()
        .join("selfheal-tests")
        .join(format!("lambda-host-{label}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn platform_env() -> BTreeMap<String, String> {
    BTreeMap::from([("AWS_REGION".to_string(), "us-east-1".to_string())])
}

async fn start(functions: Vec<FunctionSpec>, label: &str) -> (Arc<LambdaHost>, PathBuf) {
    let logs = temp_dir(label);
    let host = LambdaHost::start(functions, platform_env(), &logs).await.expect("start the Lambda host");
    (host, logs)
}

async fn ok(host: &LambdaHost, function: &str, payload: Value) -> Value {
    match host.invoke(function, &payload).await.expect("invoke") {
        Invoked::Ok(value) => value,
        other => panic!("{function} {payload}: expected a result, got {other:?}"),
    }
}

async fn function_error(host: &LambdaHost, function: &str, payload: Value) -> (String, String) {
    match host.invoke(function, &payload).await.expect("invoke") {
        Invoked::FunctionError { error_type, error_message } => (error_type, error_message),
        other => panic!("{function} {payload}: expected a function error, got {other:?}"),
    }
}

fn pid(whoami: &Value) -> u64 {
    whoami["pid"].as_u64().expect("pid")
}

#[tokio::test]
async fn invokes_echo_by_name_arn_and_logical_id() {
    setup();
    let (host, _logs) = start(vec![spec("EchoFunction", 5, &[])], "echo").await;
    let payload = json!({"hello": "world", "n": [1, 2, 3], "nested": {"ok": true}});
    assert_eq!(ok(&host, "selfheal-EchoFunction", payload.clone()).await, payload);
    assert_eq!(ok(&host, "EchoFunction", payload.clone()).await, payload);
    let arn = "arn:aws:lambda:us-east-1:123456789012:function:selfheal-EchoFunction";
    assert_eq!(ok(&host, arn, payload.clone()).await, payload);
    assert_eq!(ok(&host, &format!("{arn}:$LATEST"), payload.clone()).await, payload);

    // The Runtime API's headers reach the function's context.
    let before_ms = chrono::Utc::now().timestamp_millis() as u64;
    let me = ok(&host, "EchoFunction", json!({"whoami": true})).await;
    assert_eq!(me["invoked_function_arn"], arn);
    assert_eq!(me["function_name"], "selfheal-EchoFunction");
    assert_eq!(me["memory"], 256);
    let deadline = me["deadline_ms"].as_u64().expect("deadline");
    assert!(deadline >= before_ms + 4_000 && deadline <= before_ms + 6_000, "deadline {deadline} vs now {before_ms}");
    assert!(me["trace_id"].as_str().is_some_and(|t| t.starts_with("Root=1-")), "{me}");
    assert!(uuid::Uuid::parse_str(me["request_id"].as_str().unwrap_or_default()).is_ok(), "{me}");

    assert!(matches!(
        host.invoke("NoSuchFunction", &json!({})).await,
        Err(LambdaHostError::UnknownFunction(name)) if name == "NoSuchFunction"
    ));
    host.shutdown().await;
    assert!(matches!(host.invoke("EchoFunction", &json!({})).await, Err(LambdaHostError::ShutDown)));
}

#[tokio::test]
async fn the_error_type_is_preserved() {
    setup();
    let (host, _logs) = start(vec![spec("FailFunction", 5, &[])], "fail").await;
    let (error_type, message) = function_error(&host, "FailFunction", json!({"fail": "CoderBuildFailed"})).await;
    assert_eq!(error_type, "CoderBuildFailed");
    assert_eq!(message, "asked to fail with CoderBuildFailed");
    // The environment survives a handled error.
    assert_eq!(ok(&host, "FailFunction", json!({"after": 1})).await, json!({"after": 1}));
}

#[tokio::test]
async fn a_timeout_kills_the_process_and_the_next_invoke_gets_a_fresh_one() {
    setup();
    let (host, logs) = start(vec![spec("SlowFunction", 1, &[])], "timeout").await;
    let first = pid(&ok(&host, "SlowFunction", json!({"whoami": true})).await);
    let started = Instant::now();
    let (error_type, message) = function_error(&host, "SlowFunction", json!({"sleep_ms": 5_000})).await;
    let took = started.elapsed();
    assert_eq!(error_type, "Sandbox.Timedout");
    assert_eq!(message, "Task timed out after 1 seconds");
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(4), "timed out after {took:?}");

    let second = pid(&ok(&host, "SlowFunction", json!({"whoami": true})).await);
    assert_ne!(first, second, "a timed-out environment is replaced");
    let log = std::fs::read_to_string(logs.join("SlowFunction.log")).expect("log");
    assert!(log.contains("Task timed out after 1.00 seconds"), "{log}");
    assert_eq!(host.invocations()["SlowFunction"], 3);
}

#[tokio::test]
async fn a_crash_mid_invocation_restarts_the_process() {
    setup();
    let (host, logs) = start(vec![spec("CrashFunction", 5, &[])], "crash").await;
    let first = pid(&ok(&host, "CrashFunction", json!({"whoami": true})).await);
    let (error_type, message) = function_error(&host, "CrashFunction", json!({"exit": 3})).await;
    assert_eq!(error_type, "Runtime.ExitError");
    assert!(message.contains("Runtime exited with error: exit status: 3"), "{message}");
    let second = pid(&ok(&host, "CrashFunction", json!({"whoami": true})).await);
    assert_ne!(first, second);

    // The process's own stdout and stderr, and the platform's lines, are in its log.
    let log = std::fs::read_to_string(logs.join("CrashFunction.log")).expect("log");
    for expected in ["test-lambda: exiting with 3", "test-lambda: handling ", "START RequestId: ", "REPORT RequestId: "]
    {
        assert!(log.contains(expected), "{expected:?} missing from the log:\n{log}");
    }
}

#[tokio::test]
async fn init_failures_are_init_errors_and_retried_on_the_next_invoke() {
    setup();
    let dir = temp_dir("init");
    let counter = dir.join("starts");
    let counter_path = counter.display().to_string();
    // The first two starts exit before polling: the one `start` makes, and one retry.
    let env = [("TEST_LAMBDA_INIT_COUNTER", counter_path.as_str()), ("TEST_LAMBDA_FAILING_INITS", "2")];
    let (host, _logs) = start(vec![spec("InitFunction", 5, &env)], "init").await;
    let (error_type, message) = function_error(&host, "InitFunction", json!({"n": 1})).await;
    assert_eq!(error_type, "Runtime.InitError");
    assert!(message.contains("exit status: 2"), "{message}");
    // Depending on whether the first start had already died when we invoked, one more
    // invocation may meet the second failing start; after that init succeeds.
    let mut answer = host.invoke("InitFunction", &json!({"n": 2})).await.expect("invoke");
    if let Invoked::FunctionError { error_type, .. } = &answer {
        assert_eq!(error_type, "Runtime.InitError");
        answer = host.invoke("InitFunction", &json!({"n": 3})).await.expect("invoke");
    }
    assert!(matches!(answer, Invoked::Ok(ref v) if v["n"].is_number()), "{answer:?}");
    assert_eq!(std::fs::read_to_string(&counter).expect("counter").trim(), "3");

    // A runtime that reports through POST /runtime/init/error (and then hangs).
    let (host, _logs) =
        start(vec![spec("InitReportFunction", 5, &[("TEST_LAMBDA_POST_INIT_ERROR", "1")])], "init-report").await;
    let started = Instant::now();
    let (error_type, message) = function_error(&host, "InitReportFunction", json!({})).await;
    assert_eq!(error_type, "Runtime.InitError");
    assert!(message.contains("TestInitFailure") && message.contains("configured to fail init"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(5), "the init error must not wait for a timeout");
}

#[tokio::test]
async fn the_environment_is_exactly_what_lambda_gives() {
    setup();
    assert!(std::env::var(MARKER).is_ok(), "the marker is set in the test process");
    let mut with_credentials =
        spec("EnvFunction", 5, &[("SELFHEAL_TABLE_NAME", "incidents"), ("SELFHEAL_MODE", "stack")]);
    with_credentials.credentials =
        Some(AwsCredentials { access_key_id: "AKIATESTKEY".into(), secret_access_key: "secret-of-test".into() });
    let (host, _logs) = start(vec![with_credentials, spec("BareFunction", 5, &[])], "env").await;

    let env = ok(&host, "EnvFunction", json!({"env": true})).await;
    let env: BTreeMap<String, String> = serde_json::from_value(env).expect("string map");
    let keys: BTreeSet<&str> = env
        .keys()
        .map(String::as_str)
        // The runtime client sets this inside the process for each invocation, as Lambda's do.
        .filter(|k| *k != "_X_AMZN_TRACE_ID")
        .collect();
    let expected: BTreeSet<&str> = [
        "SELFHEAL_TABLE_NAME",
        "SELFHEAL_MODE",
        "AWS_REGION",
        "AWS_LAMBDA_RUNTIME_API",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "_HANDLER",
        "LAMBDA_TASK_ROOT",
        "TZ",
        "PATH",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ]
    .into_iter()
    .collect();
    assert_eq!(keys, expected, "the whole environment: {env:#?}");
    assert!(!env.contains_key(MARKER) && !env.contains_key("HOME") && !env.contains_key("CARGO_MANIFEST_DIR"));
    assert_eq!(env["SELFHEAL_TABLE_NAME"], "incidents");
    assert_eq!(env["AWS_REGION"], "us-east-1");
    let runtime_api = &env["AWS_LAMBDA_RUNTIME_API"];
    let (ip, port) = runtime_api.split_once(':').expect("host:port");
    assert!(ip == "127.0.0.1" && port.parse::<u16>().is_ok(), "no scheme, loopback: {runtime_api}");
    assert_eq!(env["AWS_LAMBDA_FUNCTION_NAME"], "selfheal-EnvFunction");
    assert_eq!(env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"], "256");
    assert_eq!(env["AWS_LAMBDA_FUNCTION_VERSION"], "$LATEST");
    assert_eq!(env["AWS_LAMBDA_LOG_GROUP_NAME"], "/aws/lambda/selfheal-EnvFunction");
    assert!(env["AWS_LAMBDA_LOG_STREAM_NAME"].contains("/[$LATEST]"), "{}", env["AWS_LAMBDA_LOG_STREAM_NAME"]);
    assert_eq!(env["_HANDLER"], "bootstrap");
    assert_eq!(PathBuf::from(&env["LAMBDA_TASK_ROOT"]), binary().parent().expect("bin dir"));
    assert_eq!(env["TZ"], ":UTC");
    assert_eq!(env["PATH"], "/usr/local/bin:/usr/bin:/bin");
    assert_eq!(env["AWS_ACCESS_KEY_ID"], "AKIATESTKEY");
    assert_eq!(env["AWS_SECRET_ACCESS_KEY"], "secret-of-test");
    assert!(!env.contains_key("AWS_SESSION_TOKEN"));

    // Without credentials there are none, not even the parent's.
    let bare = ok(&host, "BareFunction", json!({"env": true})).await;
    assert!(bare.get("AWS_ACCESS_KEY_ID").is_none() && bare.get("AWS_SECRET_ACCESS_KEY").is_none(), "{bare}");
    assert!(bare.get(MARKER).is_none());
    // Each function has its own Runtime API endpoint.
    assert_ne!(bare["AWS_LAMBDA_RUNTIME_API"].as_str(), Some(runtime_api.as_str()));
}

#[tokio::test]
async fn invocations_run_one_at_a_time_and_are_counted() {
    setup();
    let (host, _logs) = start(vec![spec("QueueFunction", 10, &[]), spec("OtherFunction", 10, &[])], "queue").await;
    let started = Instant::now();
    let calls = (0..3).map(|_| {
        let host = host.clone();
        async move { ok(&host, "QueueFunction", json!({"whoami": true, "sleep_ms": 300})).await }
    });
    let results = futures::future::join_all(calls).await;
    assert!(started.elapsed() >= Duration::from_millis(900), "three 300 ms invocations ran concurrently");
    let mut spans: Vec<(u64, u64)> = results
        .iter()
        .map(|r| (r["started_ms"].as_u64().unwrap_or(0), r["finished_ms"].as_u64().unwrap_or(0)))
        .collect();
    spans.sort();
    for pair in spans.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "overlapping invocations: {spans:?}");
    }
    let pids: BTreeSet<u64> = results.iter().map(pid).collect();
    assert_eq!(pids.len(), 1, "one execution environment: {pids:?}");

    // Failed attempts count too.
    let _ = function_error(&host, "QueueFunction", json!({"fail": "Nope"})).await;
    assert_eq!(
        host.invocations(),
        BTreeMap::from([("OtherFunction".to_string(), 0), ("QueueFunction".to_string(), 4)])
    );
}

#[tokio::test]
async fn the_invoke_api_serves_results_and_function_errors() {
    setup();
    let (host, _logs) = start(vec![spec("ApiFunction", 5, &[])], "invoke-api").await;
    let client = reqwest::Client::new();
    let url = |function: &str| format!("{}/2015-03-31/functions/{function}/invocations", host.invoke_base_url());

    let r = client.post(url("selfheal-ApiFunction")).json(&json!({"a": 1})).send().await.expect("invoke");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers().get("x-amz-executed-version").and_then(|v| v.to_str().ok()), Some("$LATEST"));
    assert!(r.headers().get("x-amzn-requestid").is_some());
    assert!(r.headers().get("x-amz-function-error").is_none());
    assert_eq!(r.json::<Value>().await.expect("json"), json!({"a": 1}));

    // An ARN, percent-encoded as SDKs send it.
    let arn = "arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Aselfheal-ApiFunction";
    let r = client.post(url(arn)).json(&json!({"fail": "PlannerRejected"})).send().await.expect("invoke");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers().get("x-amz-function-error").and_then(|v| v.to_str().ok()), Some("Unhandled"));
    assert_eq!(
        r.json::<Value>().await.expect("json"),
        json!({"errorType": "PlannerRejected", "errorMessage": "asked to fail with PlannerRejected"})
    );

    let r = client.post(url("selfheal-Missing")).json(&json!({})).send().await.expect("invoke");
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers().get("x-amzn-errortype").and_then(|v| v.to_str().ok()), Some("ResourceNotFoundException"));

    let r = client.post(url("ApiFunction")).body("{not json").send().await.expect("invoke");
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.headers().get("x-amzn-errortype").and_then(|v| v.to_str().ok()),
        Some("InvalidRequestContentException")
    );

    let r = client.post(url("ApiFunction")).header("X-Amz-Invocation-Type", "DryRun").send().await.expect("invoke");
    assert_eq!(r.status(), 204);
    assert_eq!(host.invocations()["ApiFunction"], 2, "DryRun and rejected requests do not invoke");
}

#[tokio::test]
async fn the_task_dispatcher_wraps_results_as_step_functions_does() {
    setup();
    let (host, _logs) = start(vec![spec("TaskFunction", 5, &[])], "dispatcher").await;
    let dispatcher = LambdaTaskDispatcher::new(host.clone());
    let task = |resource: &str, parameters: Value| TaskInvocation {
        execution: "exec-1".into(),
        state: "Plan".into(),
        resource: resource.into(),
        parameters,
        invocation: 0,
        token: None,
    };
    let arn = "arn:aws:lambda:us-east-1:123456789012:function:selfheal-TaskFunction";

    let outcome = dispatcher
        .invoke(task("arn:aws:states:::lambda:invoke", json!({"FunctionName": arn, "Payload": {"incident": "P1"}})))
        .await
        .expect("completed");
    let TaskOutcome::Completed(output) = outcome else { panic!("expected a result, got {outcome:?}") };
    assert_eq!(output["Payload"], json!({"incident": "P1"}));
    assert_eq!(output["StatusCode"], 200);
    assert_eq!(output["ExecutedVersion"], "$LATEST");
    assert_eq!(output["SdkHttpMetadata"]["HttpStatusCode"], 200);
    let request_id = output["SdkResponseMetadata"]["RequestId"].as_str().expect("request id");
    assert_eq!(output["SdkHttpMetadata"]["HttpHeaders"]["x-amzn-RequestId"], request_id);

    let outcome = dispatcher
        .invoke(task(
            "arn:aws:states:::lambda:invoke.waitForTaskToken",
            json!({"FunctionName": "selfheal-TaskFunction", "Payload": {"taskToken": "t"}}),
        ))
        .await
        .expect("dispatched");
    assert_eq!(outcome, TaskOutcome::AwaitCallback);

    let failure = dispatcher
        .invoke(task(
            "arn:aws:states:::lambda:invoke",
            json!({"FunctionName": arn, "Payload": {"fail": "CoderBuildFailed"}}),
        ))
        .await
        .expect_err("function error");
    assert_eq!(failure.error, "CoderBuildFailed");
    let cause: Value = serde_json::from_str(&failure.cause).expect("cause is JSON");
    assert_eq!(cause, json!({"errorType": "CoderBuildFailed", "errorMessage": "asked to fail with CoderBuildFailed"}));

    let failure = dispatcher
        .invoke(task(
            "arn:aws:states:::lambda:invoke",
            json!({"FunctionName": "arn:aws:lambda:us-east-1:123456789012:function:nope"}),
        ))
        .await
        .expect_err("unknown function");
    assert_eq!(failure.error, "Lambda.ResourceNotFoundException");

    // A timeout or a crash is an unhandled error: Step Functions names it Lambda.Unknown (which
    // the state machine retries), with the runtime's own type in the cause.
    let failure = dispatcher
        .invoke(task("arn:aws:states:::lambda:invoke", json!({"FunctionName": arn, "Payload": {"exit": 3}})))
        .await
        .expect_err("crash");
    assert_eq!(failure.error, "Lambda.Unknown");
    assert!(failure.cause.contains("Runtime.ExitError"), "{}", failure.cause);

    let failure = dispatcher
        .invoke(task("arn:aws:states:::sqs:sendMessage", json!({"QueueUrl": "q"})))
        .await
        .expect_err("unsupported resource");
    assert_eq!(failure.error, "States.Runtime");
}

#[tokio::test]
async fn the_http_api_sends_v2_events_and_maps_responses() {
    setup();
    let functions = vec![spec("HttpFunction", 5, &[("TEST_LAMBDA_MODE", "http")]), spec("RawFunction", 5, &[])];
    let (host, _logs) = start(functions, "http-api").await;
    let routes = vec![
        HttpRoute {
            method: "POST".into(),
            path: "/webhooks/pagerduty".into(),
            function: "selfheal-HttpFunction".into(),
        },
        HttpRoute {
            method: "POST".into(),
            path: "/slack/interactions".into(),
            function: "arn:aws:lambda:us-east-1:123456789012:function:selfheal-HttpFunction".into(),
        },
        // The echo function answers with the raw event: the v2 shorthand response.
        HttpRoute { method: "POST".into(), path: "/raw/{kind}".into(), function: "selfheal-RawFunction".into() },
    ];
    let (base, server) = apigw::serve(routes, host.clone()).await.expect("serve");
    let client = reqwest::Client::new();

    // JSON through lambda_http, the parser our HTTP functions use.
    let body = r#"{"event":{"event_type":"incident.triggered"}}"#;
    let r = client
        .post(format!("{base}/webhooks/pagerduty?x=1"))
        .header("content-type", "application/json")
        .header("X-PagerDuty-Signature", "v1=abc")
        .header("X-Multi", "one")
        .header("X-Multi", "two")
        .body(body)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers().get("x-test-lambda").and_then(|v| v.to_str().ok()), Some("http"));
    assert!(r.headers().get("apigw-requestid").is_some());
    let echo: Value = r.json().await.expect("json");
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/webhooks/pagerduty");
    assert_eq!(echo["query"], "x=1");
    assert_eq!(echo["body_kind"], "text");
    assert_eq!(echo["body"], body);
    assert_eq!(echo["headers"]["x-pagerduty-signature"], "v1=abc");
    assert_eq!(echo["headers"]["x-multi"], "one,two");
    assert_eq!(echo["request_context"]["routeKey"], "POST /webhooks/pagerduty");
    assert_eq!(echo["request_context"]["stage"], "$default");

    // Slack's form body arrives base64 (lambda_http decodes it into binary): the bytes survive.
    let form = "payload=%7B%22type%22%3A%22block_actions%22%2C%22text%22%3A%22a%26b%20%3Cc%3E%22%7D";
    let r = client
        .post(format!("{base}/slack/interactions?status=201&cookie=seen%3D1"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", "a=1; b=2")
        .body(form)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers().get("set-cookie").and_then(|v| v.to_str().ok()), Some("seen=1"));
    let echo: Value = r.json().await.expect("json");
    assert_eq!(echo["body_kind"], "binary");
    assert_eq!(echo["body"], form);
    assert_eq!(echo["headers"]["cookie"], "a=1; b=2");

    // The raw event, as the function receives it.
    let r = client
        .post(format!("{base}/raw/form?a=1&a=2"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", "a=1; b=2")
        .body(form)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("application/json"));
    let event: Value = r.json().await.expect("json");
    assert_eq!(event["version"], "2.0");
    assert_eq!(event["routeKey"], "POST /raw/{kind}");
    assert_eq!(event["rawPath"], "/raw/form");
    assert_eq!(event["rawQueryString"], "a=1&a=2");
    assert_eq!(event["queryStringParameters"], json!({"a": "1,2"}));
    assert_eq!(event["pathParameters"], json!({"kind": "form"}));
    assert_eq!(event["cookies"], json!(["a=1", "b=2"]));
    assert_eq!(event["isBase64Encoded"], true);
    let decoded =
        base64::engine::general_purpose::STANDARD.decode(event["body"].as_str().unwrap_or_default()).expect("base64");
    assert_eq!(decoded, form.as_bytes());
    assert_eq!(event["requestContext"]["accountId"], "123456789012");
    assert_eq!(event["requestContext"]["http"]["sourceIp"], "127.0.0.1");
    assert_eq!(event["requestContext"]["http"]["protocol"], "HTTP/1.1");
    assert!(event["requestContext"]["timeEpoch"].as_i64().is_some_and(|t| t > 0));

    // API Gateway's own answers.
    let r = client.post(format!("{base}/nowhere")).body("x").send().await.expect("post");
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.expect("json"), json!({"message": "Not Found"}));
    let r = client.get(format!("{base}/webhooks/pagerduty")).send().await.expect("get");
    assert_eq!(r.status(), 404, "the route is POST only");
    let r = client.post(format!("{base}/webhooks/pagerduty?fail=1")).body("{}").send().await.expect("post");
    assert_eq!(r.status(), 500);
    assert_eq!(r.json::<Value>().await.expect("json"), json!({"message": "Internal Server Error"}));
    server.abort();

    // The integration timeout (29 s in API Gateway; shortened here).
    let routes = vec![HttpRoute { method: "ANY".into(), path: "$default".into(), function: "HttpFunction".into() }];
    let (base, server) =
        apigw::serve_with_timeout(routes, host.clone(), Duration::from_millis(500)).await.expect("serve");
    let r = client.post(format!("{base}/anything?sleep_ms=1500")).body("{}").send().await.expect("post");
    assert_eq!(r.status(), 503);
    assert_eq!(r.json::<Value>().await.expect("json"), json!({"message": "Service Unavailable"}));
    // The invocation carried on in the background, holding the function's one environment
    // (a request now would queue behind it); once it is done the function answers again.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let r = client.post(format!("{base}/anything")).body("{}").send().await.expect("post");
    assert_eq!(r.status(), 200);
    server.abort();

    let unknown = vec![HttpRoute { method: "POST".into(), path: "/x".into(), function: "selfheal-Nope".into() }];
    assert!(matches!(apigw::serve(unknown, host.clone()).await, Err(LambdaHostError::UnknownFunction(_))));
}
