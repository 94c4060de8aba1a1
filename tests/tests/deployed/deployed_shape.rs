//! The deployed shape, run as written: every demo scenario through `selfheal stack` — the SAM
//! translator's expansion of template.yaml, one process per Lambda function with only its
//! template environment and IAM identity (moto enforcing IAM), the Step Functions API served by
//! the local engine, and an HTTP API in front of the two HTTP functions.

use selfheal_cli::demo::{self, Scenario};
use serde_json::Value;

async fn run(scenario: Scenario) -> demo::DemoRun {
    let dir = std::env::temp_dir().join("selfheal-test-reports-deployed");
    let mut out = Vec::new();
    let result = demo::run_deployed(scenario, &dir, &mut out).await;
    let printed = String::from_utf8_lossy(&out).to_string();
    let run = result.unwrap_or_else(|e| panic!("{}: {e}\n{printed}", scenario.name()));
    if let Err(e) = demo::check(scenario, &run.record) {
        panic!(
            "{}: {e}\n{printed}\n{}",
            scenario.name(),
            serde_json::to_string_pretty(&run.record).unwrap_or_default()
        );
    }
    assert_eq!(run.record["shape"], "deployed");
    run
}

fn invocations(run: &demo::DemoRun, function: &str) -> u64 {
    run.record.pointer(&format!("/invocations/{function}")).and_then(Value::as_u64).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_scenario_reaches_its_outcome_in_the_deployed_shape() {
    for scenario in [
        Scenario::Auto,
        Scenario::Approval,
        Scenario::Rejection,
        Scenario::LowConfidence,
        Scenario::Injection,
        Scenario::FailedFix,
        Scenario::Refire,
        Scenario::RedisMaxmemory,
        Scenario::PostgresBlockingQuery,
    ] {
        let run = run(scenario).await;
        // Every incident came in through the HTTP API and ran its stages as Lambda invocations.
        assert!(invocations(&run, "IntakeFunction") >= 2, "{}: {}", scenario.name(), run.record["invocations"]);
        assert!(invocations(&run, "ClericFunction") >= 1, "{}", scenario.name());
        match scenario {
            Scenario::Auto | Scenario::Approval | Scenario::Refire => {
                assert!(invocations(&run, "RemediateFunction") >= 3, "{}", scenario.name());
                assert!(invocations(&run, "VerifyFunction") >= 2, "{}", scenario.name());
            }
            _ => {}
        }
        // Each function holds what its notes need: the milestone notes reach PagerDuty and, after
        // an approval, the Slack thread; a rejection's reason travels through the dialog.
        let notes: Vec<String> = run
            .sim
            .pagerduty_notes(run.incident.id.as_str())
            .into_iter()
            .map(|(_, n)| n.lines().next().unwrap_or_default().to_string())
            .filter(|n| n.starts_with("[selfheal] ") && !n.contains("Plan rejected") && !n.contains("Escalated"))
            .collect();
        let thread = run.sim.slack_messages().iter().filter(|m| m.thread_ts.is_some()).count();
        match scenario {
            Scenario::Approval => {
                assert_eq!(notes.len(), 5 + 1, "{}: five milestones and the summary: {notes:#?}", scenario.name());
                assert_eq!(thread, 3, "{}", scenario.name());
            }
            Scenario::Auto => assert_eq!(notes.len(), 4 + 1, "{}: {notes:#?}", scenario.name()),
            Scenario::Rejection => {
                assert_eq!(run.sim.opened_views().len(), 1, "{}", scenario.name());
                let reason = run.incident.approval.as_ref().and_then(|a| a.reason.as_deref());
                assert_eq!(reason, Some(selfheal_testkit::sim::AUTO_REJECT_REASON));
            }
            _ => {}
        }
        match scenario {
            // The real Redis and PostgreSQL behind the service are fixed, as the servers say.
            Scenario::RedisMaxmemory | Scenario::PostgresBlockingQuery => {
                assert!(invocations(&run, "RemediateFunction") >= 3, "{}", scenario.name());
                let target = &run.record["target"];
                let fixed = target["write"] == "OK" || target["blocker_alive"] == false;
                assert!(fixed, "{}: {target}", scenario.name());
            }
            Scenario::Rejection | Scenario::Injection => {
                assert!(invocations(&run, "SlackCallbackFunction") >= 1, "{}", scenario.name());
                assert_eq!(invocations(&run, "RemediateFunction"), 0, "{}", scenario.name());
            }
            _ => {}
        }
    }
}

/// `PlannerProvider=bedrock` as a user deploys it: the planner function, with only its template
/// environment (no Anthropic secret) and its own identity, signs `InvokeModel` for the chosen
/// inference profile, and the run reaches the same outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_planner_calls_claude_on_bedrock_when_the_template_says_so() {
    use selfheal::config::ModelProvider;
    let dir = std::env::temp_dir().join("selfheal-test-reports-deployed");
    let mut out = Vec::new();
    let result = demo::run_deployed_on(Scenario::Auto, ModelProvider::Bedrock, &dir, &mut out).await;
    let printed = String::from_utf8_lossy(&out).to_string();
    let run = result.unwrap_or_else(|e| panic!("{e}\n{printed}"));
    demo::check(Scenario::Auto, &run.record).unwrap_or_else(|e| panic!("{e}\n{printed}"));
    assert!(invocations(&run, "PlannerFunction") >= 1, "{}", run.record["invocations"]);
    let calls = run.sim.bedrock_invocations();
    assert!(!calls.is_empty(), "the planner reached Bedrock\n{printed}");
    for call in &calls {
        assert_eq!(call.status, 200, "{call:?}");
        assert_eq!(call.model_id, selfheal_cli::demo_deployed::BEDROCK_MODEL_ID);
        // Signed with the function's own credentials, for the stack's Region and Bedrock.
        assert!(call.credential_scope.ends_with("/bedrock/aws4_request"), "{}", call.credential_scope);
    }
    assert_eq!(run.sim.calls().iter().filter(|c| c.api == "anthropic").count(), 0, "no Anthropic call");
}

/// Each function's identity can do what its role policy says and nothing else: moto enforces
/// the table and secret statements, the Step Functions API the `states:` ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_function_holds_only_its_role_policy() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use selfheal_cli::stack::sdk_config;

    let mut out = Vec::new();
    let h = selfheal_cli::demo_deployed::harness(Scenario::Auto, &mut out)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", String::from_utf8_lossy(&out)));
    let table = h.stack.table_name().expect("table").to_string();
    let key = |pk: &str| {
        std::collections::HashMap::from([
            ("pk".to_string(), AttributeValue::S(pk.to_string())),
            ("sk".to_string(), AttributeValue::S("META".to_string())),
        ])
    };
    for spec in h.stack.lambda.functions() {
        let creds = spec.credentials.clone().expect("every function has an identity");
        let aws = sdk_config(&h.stack.moto.endpoint, &creds).await;
        let ddb = aws_sdk_dynamodb::Client::new(&aws);
        let got = ddb.get_item().table_name(&table).set_key(Some(key("KILLSWITCH"))).send().await;
        assert!(got.is_ok(), "{}: GetItem on its table must be allowed: {got:?}", spec.logical_id);
        let deleted = ddb.delete_item().table_name(&table).set_key(Some(key("KILLSWITCH"))).send().await;
        assert!(deleted.is_err(), "{}: DeleteItem is not in any role policy", spec.logical_id);
        let other = ddb.get_item().table_name("someone-elses-table").set_key(Some(key("X"))).send().await;
        assert!(other.is_err(), "{}: another table must be denied", spec.logical_id);

        // Secrets: exactly the ones the template lists for the function (least privilege).
        let own: Vec<&str> = spec.env.get("SELFHEAL_SECRET_IDS").map(|v| v.split(',').collect()).unwrap_or_default();
        let secrets = aws_sdk_secretsmanager::Client::new(&aws);
        let admin = aws_sdk_secretsmanager::Client::new(&h.stack.admin_config().await);
        let all = admin.list_secrets().send().await.expect("operator lists secrets");
        assert!(all.secret_list().len() >= 6, "one secret per integration");
        for secret in all.secret_list() {
            let arn = secret.arn().unwrap_or_default();
            let read = secrets.get_secret_value().secret_id(arn).send().await;
            assert_eq!(
                read.is_ok(),
                own.contains(&arn),
                "{} reading {}: {:?}",
                spec.logical_id,
                secret.name().unwrap_or_default(),
                read.err()
            );
        }

        // Step Functions: only intake starts executions.
        let sfn_config = sdk_config(&h.stack.sfn_endpoint, &creds).await;
        let sfn = aws_sdk_sfn::Client::new(&sfn_config);
        let started = sfn
            .start_execution()
            .state_machine_arn(&h.stack.model.state_machine.arn)
            .name(format!("iam-probe-{}", spec.logical_id))
            .input("{}")
            .send()
            .await;
        if spec.logical_id == "IntakeFunction" {
            // Allowed, so it runs; stop it again.
            let arn = started.expect("intake may start executions").execution_arn().to_string();
            let admin = aws_sdk_sfn::Client::new(&sdk_config(&h.stack.sfn_endpoint, &h.stack.admin).await);
            admin.stop_execution().execution_arn(arn).send().await.expect("operator stops it");
        } else {
            let err = started.expect_err("only intake may start executions");
            let code = aws_sdk_sfn::error::ProvideErrorMetadata::code(&err).map(str::to_string);
            assert_eq!(code.as_deref(), Some("AccessDeniedException"), "{}: {err:?}", spec.logical_id);
        }
    }
    h.stack.shutdown().await;
}
