//! The Step Functions adapter against moto's Step Functions API (interpreter mode), with a
//! callback task so real task tokens exist.

use aws_sdk_sfn::types::HistoryEventType;
use serde_json::json;

use selfheal::adapters::sfn::StepFunctions;
use selfheal::domain::{IncidentId, TaskToken, execution_name};
use selfheal::error::OrchestratorError;
use selfheal::ports::Orchestrator;

/// moto routes requests by the service named in the credential scope; it does not check the
/// signature itself.
fn auth(service: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=00"
    )
}

async fn moto_setup(endpoint: &str) -> String {
    let http = reqwest::Client::new();
    // Make moto run executions, without Docker for Lambda.
    let r = http
        .post(format!("{endpoint}/moto-api/config"))
        .json(&json!({"stepfunctions": {"execute_state_machine": true}, "lambda": {"use_docker": false}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "moto config: {}", r.status());
    let role = format!("selfheal-test-{}", uuid::Uuid::new_v4().simple());
    let r = http
        .post(format!("{endpoint}/"))
        .header("Authorization", auth("iam"))
        .form(&[
            ("Action", "CreateRole"),
            ("Version", "2010-05-08"),
            ("RoleName", role.as_str()),
            ("AssumeRolePolicyDocument", r#"{"Version":"2012-10-17","Statement":[]}"#),
        ])
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "CreateRole: {}", r.text().await.unwrap());
    let role_arn = format!("arn:aws:iam::123456789012:role/{role}");
    // An empty zip archive is enough: moto does not run the function without Docker.
    let empty_zip = [b"PK\x05\x06".as_slice(), &[0u8; 18]].concat();
    use base64::Engine as _;
    let function = format!("selfheal-approval-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let r = http
        .post(format!("{endpoint}/2015-03-31/functions"))
        .header("Authorization", auth("lambda"))
        .json(&json!({
            "FunctionName": function,
            "Runtime": "provided.al2023",
            "Role": role_arn,
            "Handler": "bootstrap",
            "Code": {"ZipFile": base64::engine::general_purpose::STANDARD.encode(&empty_zip)}
        }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "CreateFunction: {}", r.text().await.unwrap());
    let body: serde_json::Value = r.json().await.unwrap();
    let function_arn = body["FunctionArn"].as_str().unwrap().to_string();

    let config = selfheal::aws::emulator_config(endpoint).await;
    let sfn = aws_sdk_sfn::Client::new(&config);
    let definition = json!({
        "StartAt": "RequestApproval",
        "States": {"RequestApproval": {
            "Type": "Task",
            "Resource": "arn:aws:states:::lambda:invoke.waitForTaskToken",
            "Parameters": {"FunctionName": function_arn, "Payload": {"task_token.$": "$$.Task.Token", "incident_id.$": "$.incident_id"}},
            "TimeoutSeconds": 3600,
            "End": true
        }}
    });
    let out = sfn
        .create_state_machine()
        .name(format!("selfheal-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]))
        .definition(definition.to_string())
        .role_arn(role_arn)
        .send()
        .await
        .unwrap();
    out.state_machine_arn().to_string()
}

async fn token_of(sfn: &aws_sdk_sfn::Client, execution_arn: &str) -> TaskToken {
    for _ in 0..100 {
        let history = sfn.get_execution_history().execution_arn(execution_arn).send().await.unwrap();
        for event in history.events() {
            if event.r#type() == &HistoryEventType::TaskScheduled {
                let params = event.task_scheduled_event_details().unwrap().parameters();
                let v: serde_json::Value = serde_json::from_str(params).unwrap();
                if let Some(t) = v["Payload"]["task_token"].as_str() {
                    return TaskToken::parse(t).unwrap();
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no TaskScheduled event with a token");
}

#[tokio::test]
async fn start_resume_and_errors_against_the_step_functions_api() {
    let endpoint = selfheal_tests::moto_endpoint();
    let sm_arn = moto_setup(&endpoint).await;
    let config = selfheal::aws::emulator_config(&endpoint).await;
    let client = aws_sdk_sfn::Client::new(&config);
    let orchestrator = StepFunctions::new(client.clone(), &sm_arn);

    let incident =
        IncidentId::parse(format!("Q{}", &uuid::Uuid::new_v4().simple().to_string()[..12].to_uppercase())).unwrap();
    let name = execution_name(&incident, "incident");
    let input = json!({"incident_id": incident.as_str()}).to_string();
    let started = orchestrator.start_execution(&name, &input).await.unwrap();
    assert!(started.execution_id.ends_with(&name), "{}", started.execution_id);

    // Same name, different input: ExecutionAlreadyExists.
    let other = json!({"incident_id": "different"}).to_string();
    let err = orchestrator.start_execution(&name, &other).await.unwrap_err();
    assert!(matches!(err, OrchestratorError::ExecutionAlreadyExists(_)), "{err:?}");

    // A token we never issued.
    let fake = TaskToken::parse("AAAAKgAAAAIAAAAAAAAAAfake").unwrap();
    let err = orchestrator.send_task_success(&fake, &json!({"status": "approved"})).await.unwrap_err();
    assert!(matches!(err, OrchestratorError::InvalidToken), "{err:?}");

    // The real token resumes the execution with our output.
    let token = token_of(&client, &started.execution_id).await;
    orchestrator.send_task_success(&token, &json!({"status": "approved", "decided_by": "UALICE"})).await.unwrap();
    let mut status = String::new();
    for _ in 0..100 {
        let d = client.describe_execution().execution_arn(&started.execution_id).send().await.unwrap();
        status = d.status().as_str().to_string();
        if status == "SUCCEEDED" {
            let output: serde_json::Value = serde_json::from_str(d.output().unwrap()).unwrap();
            assert_eq!(output["status"], "approved");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(status, "SUCCEEDED");

    // A second click: the token is spent. AWS answers TaskTimedOut (→ TaskClosed); moto answers
    // InvalidToken. Either way nothing resumes twice and the caller gets a typed error.
    let err = orchestrator.send_task_success(&token, &json!({"status": "rejected"})).await.unwrap_err();
    assert!(matches!(err, OrchestratorError::TaskClosed | OrchestratorError::InvalidToken), "{err:?}");

    // Failure path on a second execution.
    let name2 = execution_name(&incident, "retry");
    let second = orchestrator.start_execution(&name2, &input).await.unwrap();
    let token2 = token_of(&client, &second.execution_id).await;
    orchestrator.send_task_failure(&token2, "Rejected", "rejected in Slack").await.unwrap();
    let mut failed = false;
    for _ in 0..100 {
        let d = client.describe_execution().execution_arn(&second.execution_id).send().await.unwrap();
        if d.status().as_str() == "FAILED" {
            failed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(failed, "SendTaskFailure must fail the execution");

    // Stop: a missing execution is a typed error.
    let missing = format!("{}:nope", sm_arn.replace(":stateMachine:", ":execution:"));
    let err = orchestrator.stop_execution(&missing, "test").await.unwrap_err();
    assert!(matches!(err, OrchestratorError::ExecutionNotFound(_) | OrchestratorError::Rejected(_)), "{err:?}");
}
