//! The operator verbs against DynamoDB on moto, driven through the real `selfheal` binary:
//! `--table` for a table named directly, `--stack` for a CloudFormation stack whose outputs name
//! the table, the secret and the state machine.
//!
//! Needs moto: `scripts/test.sh` starts it and exports SELFHEAL_MOTO_ENDPOINT. Like every other
//! moto test here, a missing endpoint fails loudly rather than skipping, so CI cannot pass
//! without it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};

use selfheal::adapters::dynamodb::DynamoTable;
use selfheal::domain::*;
use selfheal::ports::IncidentStore;
use selfheal::store::TableStore;

fn moto() -> String {
    std::env::var("SELFHEAL_MOTO_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "SELFHEAL_MOTO_ENDPOINT is not set: run the tests through scripts/test.sh, which starts \
             moto_server on 127.0.0.1 (or start one yourself and export the variable)"
        )
    })
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Output {
    fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "stdout: {}\nstderr: {}", self.stdout, self.stderr);
        &self.stdout
    }
    fn json_lines(&self) -> Vec<Value> {
        self.ok().lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
    }
}

/// Run `selfheal ARGS` as an operator on AWS would: the usual AWS environment, pointed at moto.
/// `SELFHEAL_DB` is exported on purpose: it must not count as a `--db` that conflicts with
/// `--table` / `--stack`.
async fn selfheal(args: &[&str]) -> Output {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_selfheal"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", moto())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("SELFHEAL_DB", std::env::temp_dir().join(format!("{}.sqlite", unique("selfheal-op-unused"))))
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("SELFHEAL_SECRETS_FILE")
        .output()
        .await
        .expect("run the selfheal binary");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn sdk() -> aws_config::SdkConfig {
    selfheal::aws::emulator_config(&moto()).await
}

/// A fresh table with the template's key schema, and the store over it (to check what the
/// binary wrote, and to seed what it reads).
async fn new_table() -> (String, Arc<dyn IncidentStore>) {
    let client = aws_sdk_dynamodb::Client::new(&sdk().await);
    let table = unique("selfheal-op");
    DynamoTable::create_table(&client, &table).await.expect("create the table on moto");
    (table.clone(), Arc::new(TableStore::new(DynamoTable::new(client, table))))
}

fn write_temp(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("{}-{name}", unique("selfheal-op")));
    std::fs::write(&path, text).expect("write a temp file");
    path
}

fn p(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

const SERVICES: &str = r##"
[[service]]
service = "PDEMOCHK"
auto_execute = true
target = "http://127.0.0.1:8081"
approvers = ["U123"]
[[service.check]]
name = "checkout health"
url = "http://127.0.0.1:8081/health"
expect_status = 200
expect_text = "checkout healthy"
deadline_ms = 8000

[[service]]
service = "payments api"
[[service.check]]
name = "payments health"
url = "https://payments.example.com/health"
[[service.check]]
name = "payments journey"
url = "https://payments.example.com/"
steps = [
  { step = "click", selector = "#pay" },
  { step = "wait_for_text", text = "Paid" },
]
"##;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_push_list_and_show_on_a_table() {
    let (table, store) = new_table().await;
    let file = write_temp("services.toml", SERVICES);

    let pushed = selfheal(&["services", "push", p(&file), "--table", &table]).await.json_lines();
    assert_eq!(pushed.len(), 2, "one line per service");
    assert_eq!(pushed[0]["service"], "PDEMOCHK");
    assert_eq!(pushed[0]["checks"], json!(["checkout health"]));
    assert_eq!(pushed[0]["auto_execute"], true);
    assert_eq!(pushed[1]["target"], "https://payments.example.com/health", "defaults to the first check's URL");

    // What the stages will read.
    let stored = store.get_service_settings("PDEMOCHK").await.unwrap().expect("stored");
    assert!(stored.auto_execute);
    assert_eq!(stored.target.as_deref(), Some("http://127.0.0.1:8081"));
    assert_eq!(stored.approvers, ["U123"]);
    assert_eq!(stored.checks[0].expect_text.as_deref(), Some("checkout healthy"));
    assert_eq!(stored.checks[0].deadline_ms, 8000);
    let payments = store.get_service_settings("payments api").await.unwrap().expect("stored");
    assert_eq!(payments.checks[1].steps.len(), 2);

    let shown: Value = serde_json::from_str(selfheal(&["services", "show", "PDEMOCHK", "--table", &table]).await.ok())
        .expect("show prints JSON");
    assert_eq!(shown["checks"][0]["url"], "http://127.0.0.1:8081/health");
    assert_eq!(shown["checks"][0]["expect_status"], 200);

    let listed = selfheal(&["services", "list", "--table", &table]).await.json_lines();
    let names: Vec<&str> = listed.iter().filter_map(|l| l["service"].as_str()).collect();
    assert_eq!(names, ["PDEMOCHK", "payments api"]);

    // A file with one bad service stores nothing, and says which service and why.
    let bad = write_temp(
        "bad.toml",
        "[[service]]\nservice = \"PNEW\"\n[[service.check]]\nname = \"h\"\nurl = \"http://127.0.0.1/\"\n\n\
         [[service]]\nservice = \"PBAD\"\n[[service.check]]\nname = \"h\"\nurl = \"gopher://x/\"\n",
    );
    let refused = selfheal(&["services", "push", p(&bad), "--table", &table]).await;
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(refused.stderr.contains("PBAD") && refused.stderr.contains("not http or https"), "{}", refused.stderr);
    assert!(store.get_service_settings("PNEW").await.unwrap().is_none(), "nothing is stored from a bad file");

    let missing = selfheal(&["services", "show", "PNOPE", "--table", &table]).await;
    assert_eq!(missing.code, 2);
    assert!(missing.stderr.contains("selfheal services push"), "{}", missing.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killswitch_on_status_off_on_a_table() {
    let (table, store) = new_table().await;
    assert_eq!(selfheal(&["killswitch", "status", "--table", &table]).await.ok(), "kill switch off\n");
    assert_eq!(
        selfheal(&["killswitch", "on", "--table", &table]).await.ok(),
        "kill switch ON: nothing executes; decisions route to approval\n"
    );
    assert!(store.kill_switch().await.unwrap(), "the deployed functions see it");
    assert!(selfheal(&["killswitch", "status", "--table", &table]).await.ok().starts_with("kill switch ON"));
    assert_eq!(selfheal(&["killswitch", "off", "--table", &table]).await.ok(), "kill switch off\n");
    assert!(!store.kill_switch().await.unwrap());

    // --json: the switch as it now is, one object per invocation.
    let on = selfheal(&["killswitch", "on", "--table", &table, "--json"]).await.json_lines();
    assert_eq!(on, [json!({"on": true})]);
    assert!(store.kill_switch().await.unwrap());
    assert_eq!(
        selfheal(&["killswitch", "status", "--json", "--table", &table]).await.json_lines(),
        [json!({"on": true})]
    );
    assert_eq!(
        selfheal(&["killswitch", "off", "--json", "--table", &table]).await.json_lines(),
        [json!({"on": false})]
    );
    assert!(!store.kill_switch().await.unwrap());

    // One store per invocation: the flags exclude each other.
    let both = selfheal(&["killswitch", "status", "--db", "x.sqlite", "--table", &table]).await;
    assert_eq!(both.code, 2);
    assert!(both.stderr.contains("cannot be used with"), "{}", both.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_stats_of_an_incident_on_a_table() {
    let (table, store) = new_table().await;
    let id = IncidentId::parse(unique("QOP").replace('-', "")).unwrap();
    let mut incident = Incident::new(
        id.clone(),
        "Checkout /health failing: 504".into(),
        ServiceRef { id: ServiceId::parse("PDEMOCHK").unwrap(), name: ServiceName::parse("checkout").unwrap() },
        Urgency::High,
        chrono::Utc::now(),
    );
    incident.status = IncidentStatus::Escalated;
    incident.outcome = Some(Outcome::Escalated);
    store.create_incident(&incident).await.unwrap();
    store
        .append_audit(&id, &AuditEvent::new(chrono::Utc::now(), "intake", "incident_created", json!({})))
        .await
        .unwrap();
    store
        .append_audit(
            &id,
            &AuditEvent::new(
                chrono::Utc::now(),
                "pagerduty",
                "escalated",
                json!({"reason": "nobody approved in time", "reason_code": "approval_timeout"}),
            ),
        )
        .await
        .unwrap();

    let text = selfheal(&["status", id.as_str(), "--table", &table]).await;
    assert!(text.ok().contains("Checkout /health failing: 504"), "{}", text.stdout);
    assert!(text.stdout.contains("incident_created"), "{}", text.stdout);
    let as_json: Value =
        serde_json::from_str(selfheal(&["status", id.as_str(), "--table", &table, "--json"]).await.ok()).unwrap();
    assert_eq!(as_json["incident"]["id"], id.as_str());
    assert_eq!(as_json["timeline"][0]["kind"], "incident_created");

    let missing = selfheal(&["status", "QNOPE", "--table", &table]).await;
    assert_eq!(missing.code, 2);
    assert!(missing.stderr.contains(&format!("no incident QNOPE in DynamoDB table {table}")), "{}", missing.stderr);

    let stats: Value = serde_json::from_str(selfheal(&["stats", "--table", &table]).await.ok()).unwrap();
    assert_eq!(stats["incidents"], 1, "{stats}");
    assert_eq!(stats["by_outcome"]["escalated"], 1, "{stats}");
    assert_eq!(stats["escalated_by_reason"]["approval_timeout"], 1, "{stats}");
    assert!(stats["executions"].is_null(), "no state machine known: {stats}");
    assert!(stats["executions_note"].as_str().is_some_and(|n| n.contains("left out")), "{stats}");
    let recent: Value = serde_json::from_str(selfheal(&["stats", "--table", &table, "--since", "1s"]).await.ok())
        .expect("stats prints JSON");
    assert!(recent["incidents"].as_u64().is_some_and(|n| n <= 1), "{recent}");
}

/// A stack as `template.yaml` would leave it, reduced to what the operator plane reads: the
/// table, the secret (holding the Senso key) and the state machine, named in the outputs.
async fn create_stack(senso_key: &str) -> (String, String) {
    let sdk = sdk().await;
    let stack = unique("selfheal-op-stack");
    let table = unique("selfheal-op-table");
    // moto's CloudFormation cannot create AWS::SecretsManager::Secret (it drops the resource and
    // every output that refers to it), so the secret is created first and handed to the stack
    // as a parameter; the SensoSecretArn output looks the same to the operator plane.
    let secret_arn = aws_sdk_secretsmanager::Client::new(&sdk)
        .create_secret()
        .name(format!("{stack}-secret"))
        .secret_string(json!({"senso_api_key": senso_key}).to_string())
        .send()
        .await
        .expect("create the secret")
        .arn()
        .expect("the new secret's ARN")
        .to_string();
    let template = json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Parameters": {"SelfhealSecretArn": {"Type": "String"}},
        "Resources": {
            "IncidentTable": {
                "Type": "AWS::DynamoDB::Table",
                "Properties": {
                    "TableName": table,
                    "BillingMode": "PAY_PER_REQUEST",
                    "AttributeDefinitions": [
                        {"AttributeName": "pk", "AttributeType": "S"},
                        {"AttributeName": "sk", "AttributeType": "S"}
                    ],
                    "KeySchema": [
                        {"AttributeName": "pk", "KeyType": "HASH"},
                        {"AttributeName": "sk", "KeyType": "RANGE"}
                    ]
                }
            },
            "IncidentStateMachine": {
                "Type": "AWS::StepFunctions::StateMachine",
                "Properties": {
                    "StateMachineName": format!("{stack}-incident"),
                    "RoleArn": "arn:aws:iam::123456789012:role/selfheal-sfn",
                    "DefinitionString": "{\"StartAt\":\"Done\",\"States\":{\"Done\":{\"Type\":\"Succeed\"}}}"
                }
            }
        },
        "Outputs": {
            "TableName": {"Value": {"Ref": "IncidentTable"}},
            "SensoSecretArn": {"Value": {"Ref": "SelfhealSecretArn"}},
            "StateMachineArn": {"Value": {"Ref": "IncidentStateMachine"}}
        }
    });
    let cfn = aws_sdk_cloudformation::Client::new(&sdk);
    let created = cfn
        .create_stack()
        .stack_name(&stack)
        .template_body(template.to_string())
        .parameters(
            aws_sdk_cloudformation::types::Parameter::builder()
                .parameter_key("SelfhealSecretArn")
                .parameter_value(secret_arn)
                .build(),
        )
        .send()
        .await;
    // The SDK retries a CreateStack whose answer was slow; the name is ours alone, so "already
    // exists" means the first attempt got through.
    if let Err(e) = created {
        let already = e.as_service_error().is_some_and(|s| s.meta().code() == Some("AlreadyExistsException"));
        assert!(already, "create stack: {e:?}");
    }
    // moto creates stacks synchronously, but wait on the status as one would on AWS.
    for _ in 0..100 {
        let out = cfn.describe_stacks().stack_name(&stack).send().await.expect("describe stack");
        let status = out.stacks().first().and_then(|s| s.stack_status()).map(|s| s.as_str().to_string());
        match status.as_deref() {
            Some("CREATE_COMPLETE") => return (stack, table),
            Some("CREATE_IN_PROGRESS") | None => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            Some(other) => panic!("stack {stack} ended {other}"),
        }
    }
    panic!("stack {stack} was not created in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_names_the_table_secret_and_state_machine() {
    use selfheal_testkit::sim::{Knobs, Sim, SimCredentials};
    let creds = SimCredentials::default();
    let sim = Sim::new(creds.clone(), Knobs::default());
    let (sim_base, _sim_task) = selfheal_testkit::spawn(sim.router(), 0).await.expect("start the simulators");
    let (stack, table) = create_stack(&creds.senso_key).await;
    let store: Arc<dyn IncidentStore> =
        Arc::new(TableStore::new(DynamoTable::new(aws_sdk_dynamodb::Client::new(&sdk().await), table.clone())));

    // runbooks push: Senso's key comes from the stack's secret (no --secrets), the catalog
    // actions land in the stack's table.
    let config = write_temp("config.toml", &format!("[senso]\napi_base = \"{sim_base}/senso\"\n"));
    let pushed =
        selfheal(&["runbooks", "push", "infra/runbooks", "--config", p(&config), "--stack", &stack]).await.json_lines();
    assert!(!pushed.is_empty());
    assert!(pushed.iter().all(|l| l["status"] == "complete"), "{pushed:?}");
    assert_eq!(sim.senso_documents().len(), pushed.len(), "Senso accepted the stack's key for every runbook");
    let runbook = RunbookId::parse("postgres-blocking-query").unwrap();
    let actions = store.catalog_actions(&runbook).await.unwrap();
    assert!(!actions.is_empty(), "the catalog actions are in the stack's table");
    let expected: usize = pushed.iter().filter_map(|l| l["actions"].as_u64()).sum::<u64>() as usize;
    let mut stored = 0;
    for l in &pushed {
        let id = RunbookId::parse(l["runbook"].as_str().unwrap()).unwrap();
        stored += store.catalog_actions(&id).await.unwrap().len();
    }
    assert_eq!(stored, expected);

    let file = write_temp("services.toml", SERVICES);
    assert_eq!(selfheal(&["services", "push", p(&file), "--stack", &stack]).await.json_lines().len(), 2);
    assert!(store.get_service_settings("PDEMOCHK").await.unwrap().is_some_and(|s| s.auto_execute));
    assert_eq!(selfheal(&["killswitch", "on", "--stack", &stack]).await.code, 0);
    assert!(store.kill_switch().await.unwrap());

    // With the state machine known, stats counts its executions too.
    let stats: Value = serde_json::from_str(selfheal(&["stats", "--stack", &stack]).await.ok()).unwrap();
    assert_eq!(stats["incidents"], 0, "{stats}");
    assert_eq!(stats["executions"]["total"], 0, "{stats}");
    assert!(stats["executions"]["state_machine_arn"].as_str().is_some_and(|a| a.contains(":stateMachine:")), "{stats}");

    let unknown = selfheal(&["killswitch", "status", "--stack", "no-such-stack"]).await;
    assert_eq!(unknown.code, 2);
    assert!(unknown.stderr.contains("no-such-stack"), "{}", unknown.stderr);
}
