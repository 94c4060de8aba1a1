//! The Step Functions API served from the local engine, driven by the real `aws-sdk-sfn` client
//! (and the AWS CLI when one is installed): state machines, executions, history, callbacks,
//! idempotent starts and IAM checks.

use async_trait::async_trait;
use aws_sdk_sfn::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sfn::error::ProvideErrorMetadata;
use aws_sdk_sfn::types::{ExecutionStatus, HistoryEventType};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use selfheal::adapters::sqlite::SqliteTable;
use selfheal::domain::TaskToken;
use selfheal::engine::{Engine, TaskDispatcher, TaskFailure, TaskInvocation, TaskOutcome};
use selfheal::ports::SystemClock;
use selfheal_cli::stack::iam::{AllowAll, Authorizer, Identity, Policies};
use selfheal_cli::stack::sfn_api::SfnApi;

const ADMIN_KEY: &str = "AKIAADMIN";

/// Starts callback tasks and remembers their tokens, like the approval Lambda posting to Slack.
#[derive(Default)]
struct Callbacks(Mutex<Vec<TaskToken>>);

#[async_trait]
impl TaskDispatcher for Callbacks {
    async fn invoke(&self, inv: TaskInvocation) -> Result<TaskOutcome, TaskFailure> {
        match inv.token {
            Some(token) => {
                self.0.lock().unwrap().push(token);
                Ok(TaskOutcome::AwaitCallback)
            }
            None => Ok(TaskOutcome::Completed(json!({"Payload": {"ok": true}}))),
        }
    }
}

impl Callbacks {
    /// The `n`th token issued (0-based), waiting for it to arrive.
    async fn token(&self, n: usize) -> String {
        for _ in 0..200 {
            if let Some(t) = self.0.lock().unwrap().get(n) {
                return t.expose().to_string();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no task token #{n} was issued");
    }
}

struct Server {
    url: String,
    callbacks: Arc<Callbacks>,
}

async fn serve(authorizer: Arc<dyn Authorizer>) -> Server {
    let engine = Engine::new(Arc::new(SqliteTable::in_memory().unwrap()), Arc::new(SystemClock::real()));
    let callbacks = Arc::new(Callbacks::default());
    engine.set_dispatcher(callbacks.clone());
    let api = SfnApi::new(engine, authorizer);
    let (url, _handle) = selfheal_testkit::spawn(api.router(), 0).await.unwrap();
    Server { url, callbacks }
}

fn client(url: &str, access_key: &str) -> aws_sdk_sfn::Client {
    let config = aws_sdk_sfn::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(access_key, "secret", None, None, "test"))
        .endpoint_url(url)
        .build();
    aws_sdk_sfn::Client::from_conf(config)
}

fn flow_definition() -> String {
    json!({
        "StartAt": "Greet",
        "States": {
            "Greet": {"Type": "Pass", "Result": "hello", "ResultPath": "$.greeting", "Next": "Nap"},
            "Nap": {"Type": "Wait", "Seconds": 1, "Next": "Route"},
            "Route": {"Type": "Choice",
                      "Choices": [{"And": [{"Variable": "$.n", "IsPresent": true},
                                           {"Variable": "$.n", "NumericGreaterThan": 10}],
                                   "Next": "Big"}],
                      "Default": "Small"},
            "Big": {"Type": "Pass", "Result": "big", "ResultPath": "$.size", "End": true},
            "Small": {"Type": "Pass", "Result": "small", "ResultPath": "$.size", "End": true}
        }
    })
    .to_string()
}

fn callback_definition() -> String {
    json!({
        "StartAt": "AwaitApproval",
        "States": {
            "AwaitApproval": {
                "Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke.waitForTaskToken",
                "Parameters": {"FunctionName": "approval", "Payload": {"token.$": "$$.Task.Token"}},
                "TimeoutSeconds": 3600,
                "ResultPath": "$.approval",
                "End": true
            }
        }
    })
    .to_string()
}

async fn create(sfn: &aws_sdk_sfn::Client, name: &str, definition: &str) -> String {
    let out = sfn
        .create_state_machine()
        .name(name)
        .definition(definition)
        .role_arn("arn:aws:iam::123456789012:role/sfn")
        .send()
        .await
        .unwrap();
    out.state_machine_arn().to_string()
}

async fn wait_closed(
    sfn: &aws_sdk_sfn::Client,
    execution_arn: &str,
) -> aws_sdk_sfn::operation::describe_execution::DescribeExecutionOutput {
    for _ in 0..250 {
        let d = sfn.describe_execution().execution_arn(execution_arn).send().await.unwrap();
        if *d.status() != ExecutionStatus::Running {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{execution_arn} is still running");
}

/// The service error code the SDK parsed from a failed call.
fn code<T: std::fmt::Debug, E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(
    result: Result<T, aws_sdk_sfn::error::SdkError<E, R>>,
) -> String {
    let err = result.expect_err("the call should have failed");
    err.code().map(str::to_string).unwrap_or_else(|| panic!("no error code in {err:?}"))
}

#[tokio::test]
async fn state_machines_run_pass_wait_choice_through_the_sdk() {
    let server = serve(Arc::new(AllowAll)).await;
    let sfn = client(&server.url, ADMIN_KEY);
    let arn = create(&sfn, "flow", &flow_definition()).await;
    assert_eq!(arn, SfnApi::state_machine_arn("flow"));
    assert_eq!(arn, "arn:aws:states:us-east-1:123456789012:stateMachine:flow");

    // Same definition again: the same machine. A different one under the name: refused.
    assert_eq!(create(&sfn, "flow", &flow_definition()).await, arn);
    let other = json!({"StartAt": "A", "States": {"A": {"Type": "Succeed"}}}).to_string();
    let r = sfn
        .create_state_machine()
        .name("flow")
        .definition(&other)
        .role_arn("arn:aws:iam::123456789012:role/sfn")
        .send()
        .await;
    assert_eq!(code(r), "StateMachineAlreadyExists");
    let r = sfn
        .create_state_machine()
        .name("broken")
        .definition(r#"{"StartAt": "Nowhere", "States": {}}"#)
        .role_arn("r")
        .send()
        .await;
    assert_eq!(code(r), "InvalidDefinition");
    let r = sfn.create_state_machine().name("bad name").definition(&other).role_arn("r").send().await;
    assert_eq!(code(r), "InvalidName");

    let described = sfn.describe_state_machine().state_machine_arn(&arn).send().await.unwrap();
    assert_eq!(described.name(), "flow");
    assert_eq!(described.definition(), flow_definition());
    assert_eq!(described.role_arn(), "arn:aws:iam::123456789012:role/sfn");
    let listed = sfn.list_state_machines().send().await.unwrap();
    let names: Vec<&str> = listed.state_machines().iter().map(|m| m.name()).collect();
    assert_eq!(names, ["flow"]);
    let r = sfn.describe_state_machine().state_machine_arn(SfnApi::state_machine_arn("nope")).send().await;
    assert_eq!(code(r), "StateMachineDoesNotExist");
    let r = sfn.describe_state_machine().state_machine_arn("not-an-arn").send().await;
    assert_eq!(code(r), "InvalidArn");

    let big = sfn.start_execution().state_machine_arn(&arn).name("big-1").input(r#"{"n": 42}"#).send().await.unwrap();
    assert_eq!(big.execution_arn(), SfnApi::execution_arn("flow", "big-1"));
    // No name: the API picks one; no input: "{}".
    let small = sfn.start_execution().state_machine_arn(&arn).send().await.unwrap();
    let running =
        sfn.list_executions().state_machine_arn(&arn).status_filter(ExecutionStatus::Running).send().await.unwrap();
    assert_eq!(running.executions().len(), 2);

    let done = wait_closed(&sfn, big.execution_arn()).await;
    assert_eq!(*done.status(), ExecutionStatus::Succeeded);
    let output: Value = serde_json::from_str(done.output().unwrap()).unwrap();
    assert_eq!(output, json!({"n": 42, "greeting": "hello", "size": "big"}));
    assert_eq!(done.input(), Some(r#"{"n": 42}"#));
    assert!(done.stop_date().unwrap().as_secs_f64() >= done.start_date().as_secs_f64() + 1.0, "the Wait lasted 1 s");
    let small_done = wait_closed(&sfn, small.execution_arn()).await;
    assert_eq!(small_done.input(), Some("{}"));
    assert!(small_done.output().unwrap().contains(r#""size":"small""#));

    let succeeded =
        sfn.list_executions().state_machine_arn(&arn).status_filter(ExecutionStatus::Succeeded).send().await.unwrap();
    assert_eq!(succeeded.executions().len(), 2);
    assert!(succeeded.executions().iter().all(|e| e.state_machine_arn() == arn && e.stop_date().is_some()));
    let running =
        sfn.list_executions().state_machine_arn(&arn).status_filter(ExecutionStatus::Running).send().await.unwrap();
    assert!(running.executions().is_empty());

    let history = sfn.get_execution_history().execution_arn(big.execution_arn()).send().await.unwrap();
    let events = history.events();
    let kinds: Vec<&HistoryEventType> = events.iter().map(|e| e.r#type()).collect();
    use HistoryEventType as H;
    assert_eq!(
        kinds,
        [
            &H::ExecutionStarted,
            &H::PassStateEntered,
            &H::PassStateExited,
            &H::WaitStateEntered,
            &H::WaitStateExited,
            &H::ChoiceStateEntered,
            &H::ChoiceStateExited,
            &H::PassStateEntered,
            &H::PassStateExited,
            &H::ExecutionSucceeded
        ]
    );
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.id(), i as i64 + 1);
        assert_eq!(e.previous_event_id(), i as i64);
    }
    assert!(events.windows(2).all(|w| w[0].timestamp().as_secs_f64() <= w[1].timestamp().as_secs_f64()));
    let started = events[0].execution_started_event_details().unwrap();
    assert_eq!(serde_json::from_str::<Value>(started.input().unwrap()).unwrap(), json!({"n": 42}));
    let entered = events[5].state_entered_event_details().unwrap();
    assert_eq!(entered.name(), "Route");
    assert_eq!(serde_json::from_str::<Value>(entered.input().unwrap()).unwrap(), json!({"n": 42, "greeting": "hello"}));
    assert_eq!(events[8].state_exited_event_details().unwrap().name(), "Big");
    let finished = events[9].execution_succeeded_event_details().unwrap();
    assert_eq!(serde_json::from_str::<Value>(finished.output().unwrap()).unwrap(), output);

    // Paging and reverse order; without execution data no payloads are sent.
    let page = sfn
        .get_execution_history()
        .execution_arn(big.execution_arn())
        .max_results(4)
        .reverse_order(true)
        .send()
        .await
        .unwrap();
    assert_eq!(page.events().iter().map(|e| e.id()).collect::<Vec<_>>(), [10, 9, 8, 7]);
    let rest = sfn
        .get_execution_history()
        .execution_arn(big.execution_arn())
        .max_results(4)
        .reverse_order(true)
        .next_token(page.next_token().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(rest.events().iter().map(|e| e.id()).collect::<Vec<_>>(), [6, 5, 4, 3]);
    let bare = sfn
        .get_execution_history()
        .execution_arn(big.execution_arn())
        .include_execution_data(false)
        .send()
        .await
        .unwrap();
    assert!(bare.events()[0].execution_started_event_details().unwrap().input().is_none());
    assert_eq!(bare.events()[5].state_entered_event_details().unwrap().name(), "Route");
}

#[tokio::test]
async fn callback_tasks_take_success_failure_and_heartbeat() {
    let server = serve(Arc::new(AllowAll)).await;
    let sfn = client(&server.url, ADMIN_KEY);
    let arn = create(&sfn, "approvals", &callback_definition()).await;

    let approved = sfn
        .start_execution()
        .state_machine_arn(&arn)
        .name("approve-me")
        .input(r#"{"incident": "P1"}"#)
        .send()
        .await
        .unwrap();
    let token = server.callbacks.token(0).await;
    sfn.send_task_heartbeat().task_token(&token).send().await.unwrap();
    sfn.send_task_success().task_token(&token).output(r#"{"approved": true}"#).send().await.unwrap();
    let done = wait_closed(&sfn, approved.execution_arn()).await;
    assert_eq!(*done.status(), ExecutionStatus::Succeeded);
    let output: Value = serde_json::from_str(done.output().unwrap()).unwrap();
    assert_eq!(output, json!({"incident": "P1", "approval": {"approved": true}}));
    // A second answer to the same task: "already decided", as Step Functions says it.
    let r = sfn.send_task_success().task_token(&token).output("{}").send().await;
    assert_eq!(code(r), "TaskTimedOut");
    let r = sfn.send_task_heartbeat().task_token(&token).send().await;
    assert_eq!(code(r), "TaskTimedOut");
    let r = sfn.send_task_success().task_token("never-issued").output("{}").send().await;
    assert_eq!(code(r), "InvalidToken");

    let history = sfn.get_execution_history().execution_arn(approved.execution_arn()).send().await.unwrap();
    let scheduled = history.events().iter().find_map(|e| e.task_scheduled_event_details()).unwrap();
    assert_eq!(scheduled.resource_type(), "lambda");
    assert_eq!(scheduled.resource(), "invoke.waitForTaskToken");
    assert_eq!(scheduled.region(), "us-east-1");
    let parameters: Value = serde_json::from_str(scheduled.parameters()).unwrap();
    assert_eq!(parameters["Payload"]["token"], json!(token));
    let succeeded = history.events().iter().find_map(|e| e.task_succeeded_event_details()).unwrap();
    assert_eq!(succeeded.resource(), "invoke.waitForTaskToken");
    assert_eq!(serde_json::from_str::<Value>(succeeded.output().unwrap()).unwrap(), json!({"approved": true}));

    let denied = sfn.start_execution().state_machine_arn(&arn).name("deny-me").send().await.unwrap();
    let token = server.callbacks.token(1).await;
    let r = sfn.send_task_success().task_token(&token).output("not json").send().await;
    assert_eq!(code(r), "InvalidOutput");
    sfn.send_task_failure().task_token(&token).error("Rejected").cause("a human said no").send().await.unwrap();
    let done = wait_closed(&sfn, denied.execution_arn()).await;
    assert_eq!(*done.status(), ExecutionStatus::Failed);
    assert_eq!(done.error(), Some("Rejected"));
    assert_eq!(done.cause(), Some("a human said no"));
    let r = sfn.send_task_failure().task_token(&token).send().await;
    assert_eq!(code(r), "TaskTimedOut");
    let history = sfn.get_execution_history().execution_arn(denied.execution_arn()).send().await.unwrap();
    let failed = history.events().iter().find_map(|e| e.task_failed_event_details()).unwrap();
    assert_eq!((failed.resource_type(), failed.error()), ("lambda", Some("Rejected")));
    let last = history.events().last().unwrap();
    assert_eq!(last.r#type(), &HistoryEventType::ExecutionFailed);
    assert_eq!(last.execution_failed_event_details().unwrap().cause(), Some("a human said no"));
}

#[tokio::test]
async fn starts_are_idempotent_and_stops_abort() {
    let server = serve(Arc::new(AllowAll)).await;
    let sfn = client(&server.url, ADMIN_KEY);
    let arn = create(&sfn, "approvals", &callback_definition()).await;

    let first =
        sfn.start_execution().state_machine_arn(&arn).name("inc-P7").input(r#"{"id": "P7"}"#).send().await.unwrap();
    let again =
        sfn.start_execution().state_machine_arn(&arn).name("inc-P7").input(r#"{"id": "P7"}"#).send().await.unwrap();
    assert_eq!(again.execution_arn(), first.execution_arn());
    assert_eq!(again.start_date(), first.start_date());
    let r = sfn.start_execution().state_machine_arn(&arn).name("inc-P7").input(r#"{"id": "P8"}"#).send().await;
    assert_eq!(code(r), "ExecutionAlreadyExists");
    let listed = sfn.list_executions().state_machine_arn(&arn).send().await.unwrap();
    assert_eq!(listed.executions().len(), 1);

    let r = sfn.start_execution().state_machine_arn(&arn).name("x").input("{not json").send().await;
    assert_eq!(code(r), "InvalidExecutionInput");
    let r = sfn.start_execution().state_machine_arn(&arn).name("a/b").send().await;
    assert_eq!(code(r), "InvalidName");
    let r = sfn.start_execution().state_machine_arn(SfnApi::state_machine_arn("nope")).send().await;
    assert_eq!(code(r), "StateMachineDoesNotExist");
    let r = sfn.describe_execution().execution_arn(SfnApi::execution_arn("approvals", "nope")).send().await;
    assert_eq!(code(r), "ExecutionDoesNotExist");
    // The right name under another machine is not that execution.
    let r = sfn.describe_execution().execution_arn(SfnApi::execution_arn("other", "inc-P7")).send().await;
    assert_eq!(code(r), "ExecutionDoesNotExist");
    let r = sfn.list_executions().state_machine_arn(&arn).status_filter(ExecutionStatus::PendingRedrive).send().await;
    assert_eq!(code(r), "ValidationException");

    let token = server.callbacks.token(0).await;
    let stopped = sfn
        .stop_execution()
        .execution_arn(first.execution_arn())
        .error("Operator")
        .cause("taken over")
        .send()
        .await
        .unwrap();
    let d = sfn.describe_execution().execution_arn(first.execution_arn()).send().await.unwrap();
    assert_eq!(*d.status(), ExecutionStatus::Aborted);
    assert_eq!(d.stop_date(), Some(stopped.stop_date()));
    assert_eq!(d.cause(), Some("taken over"));
    // The stopped execution's task is closed, and a closed name stays taken.
    let r = sfn.send_task_success().task_token(&token).output("{}").send().await;
    assert_eq!(code(r), "TaskTimedOut");
    let r = sfn.start_execution().state_machine_arn(&arn).name("inc-P7").input(r#"{"id": "P7"}"#).send().await;
    assert_eq!(code(r), "ExecutionAlreadyExists");
    let aborted =
        sfn.list_executions().state_machine_arn(&arn).status_filter(ExecutionStatus::Aborted).send().await.unwrap();
    assert_eq!(aborted.executions()[0].name(), "inc-P7");
    let history =
        sfn.get_execution_history().execution_arn(first.execution_arn()).reverse_order(true).send().await.unwrap();
    let last = &history.events()[0];
    assert_eq!(last.r#type(), &HistoryEventType::ExecutionAborted);
    assert_eq!(last.execution_aborted_event_details().unwrap().cause(), Some("taken over"));
}

#[tokio::test]
async fn access_is_checked_per_action_and_resource() {
    let machine_arn = SfnApi::state_machine_arn("approvals");
    let execution_arns = "arn:aws:states:us-east-1:123456789012:execution:approvals:*";
    let starter = Identity {
        name: "intake".into(),
        statements: vec![
            json!({"Effect": "Allow", "Action": "states:StartExecution", "Resource": machine_arn}),
            json!({"Effect": "Allow", "Action": "states:DescribeExecution", "Resource": execution_arns}),
        ],
    };
    let callback = Identity {
        name: "slack-callback".into(),
        statements: vec![
            json!({"Effect": "Allow", "Action": ["states:SendTaskSuccess", "states:SendTaskFailure"], "Resource": machine_arn}),
        ],
    };
    let policies = Policies {
        by_access_key: BTreeMap::from([("AKIASTARTER".to_string(), starter), ("AKIACALLBACK".to_string(), callback)]),
        admin_keys: vec![ADMIN_KEY.to_string()],
    };
    let server = serve(Arc::new(policies)).await;
    let admin = client(&server.url, ADMIN_KEY);
    let starter = client(&server.url, "AKIASTARTER");
    let callback = client(&server.url, "AKIACALLBACK");
    let stranger = client(&server.url, "AKIASTRANGER");

    let r =
        starter.create_state_machine().name("approvals").definition(callback_definition()).role_arn("r").send().await;
    assert_eq!(code(r), "AccessDeniedException");
    let arn = create(&admin, "approvals", &callback_definition()).await;

    let started = starter.start_execution().state_machine_arn(&arn).name("e1").send().await.unwrap();
    starter.describe_execution().execution_arn(started.execution_arn()).send().await.unwrap();
    let err = starter.list_executions().state_machine_arn(&arn).send().await.expect_err("not allowed");
    assert_eq!(err.code(), Some("AccessDeniedException"));
    assert_eq!(
        err.message(),
        Some(
            format!("User: AKIASTARTER is not authorized to perform: states:ListExecutions on resource: {arn}")
                .as_str()
        )
    );
    let r = starter.stop_execution().execution_arn(started.execution_arn()).send().await;
    assert_eq!(code(r), "AccessDeniedException");
    let r = stranger.start_execution().state_machine_arn(&arn).name("e2").send().await;
    assert_eq!(code(r), "AccessDeniedException");

    // SendTask* is checked against the machine the token's execution runs on.
    let token = server.callbacks.token(0).await;
    let r = starter.send_task_success().task_token(&token).output("{}").send().await;
    assert_eq!(code(r), "AccessDeniedException");
    let r = callback.send_task_heartbeat().task_token(&token).send().await;
    assert_eq!(code(r), "AccessDeniedException");
    // An unknown token is checked against "*", which the scoped policy does not grant.
    let r = callback.send_task_success().task_token("unknown-token").output("{}").send().await;
    assert_eq!(code(r), "AccessDeniedException");
    callback.send_task_success().task_token(&token).output(r#"{"ok": true}"#).send().await.unwrap();
    let done = wait_closed(&starter, started.execution_arn()).await;
    assert_eq!(*done.status(), ExecutionStatus::Succeeded);
}

#[tokio::test]
async fn protocol_errors_use_aws_json_error_shapes() {
    let server = serve(Arc::new(AllowAll)).await;
    let http = reqwest::Client::new();
    let post = |target: &str, body: &str| {
        http.post(format!("{}/", server.url))
            .header("content-type", "application/x-amz-json-1.0")
            .header("x-amz-target", target.to_string())
            .body(body.to_string())
            .send()
    };
    let r = post("AWSStepFunctions.DeleteEverything", "{}").await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["x-amzn-errortype"], "UnknownOperationException");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["__type"], "com.amazonaws.swf.service.v2.model#UnknownOperationException");
    assert!(body["message"].as_str().unwrap().contains("DeleteEverything"));

    let r = post("AWSStepFunctions.StartExecution", "{oops").await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["x-amzn-errortype"], "SerializationException");
    let r = post("AWSStepFunctions.StartExecution", "{}").await.unwrap();
    assert_eq!(r.headers()["x-amzn-errortype"], "ValidationException");

    // Empty body = no parameters; the answer is AWS JSON with absent fields omitted.
    let r = post("AWSStepFunctions.ListStateMachines", "").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-amz-json-1.0");
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"stateMachines": []}));
}

/// Where the AWS CLI is: the project's venv first, then PATH.
fn aws_cli() -> Option<std::path::PathBuf> {
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/aws");
    if venv.is_file() {
        return Some(venv);
    }
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join("aws")).find(|p| p.is_file())
}

#[tokio::test]
async fn aws_cli_lists_executions() {
    let Some(aws) = aws_cli() else {
        eprintln!(
            "skipped: no `aws` executable in .venv/bin or on PATH (pip install -r scripts/requirements-test.txt)"
        );
        return;
    };
    let server = serve(Arc::new(AllowAll)).await;
    let sfn = client(&server.url, ADMIN_KEY);
    let arn = create(&sfn, "flow", &flow_definition()).await;
    let started =
        sfn.start_execution().state_machine_arn(&arn).name("cli-1").input(r#"{"n": 1}"#).send().await.unwrap();

    let out = tokio::process::Command::new(&aws)
        .args(["stepfunctions", "list-executions", "--endpoint-url", &server.url, "--state-machine-arn", &arn])
        .args(["--output", "json"])
        .env("AWS_ACCESS_KEY_ID", ADMIN_KEY)
        .env("AWS_SECRET_ACCESS_KEY", "secret")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        // Keep the developer's own profile and pager out of it.
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_PAGER", "")
        .env_remove("AWS_PROFILE")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "aws failed: {stderr}");
    let listed: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("aws printed no JSON ({e}): {stderr}"));
    let executions = listed["executions"].as_array().unwrap();
    assert_eq!(executions.len(), 1);
    let e = &executions[0];
    assert_eq!(e["executionArn"], json!(started.execution_arn()));
    assert_eq!(e["stateMachineArn"], json!(arn));
    assert_eq!(e["name"], "cli-1");
    assert!(matches!(e["status"].as_str(), Some("RUNNING" | "SUCCEEDED")), "{e}");
    // AWS CLI v1 prints the wire's epoch seconds as they are; v2 turns them into ISO dates.
    let start = &e["startDate"];
    assert!(start.as_f64().is_some_and(|t| t > 1.7e9) || start.as_str().is_some_and(|d| d.starts_with("20")), "{e}");
}
