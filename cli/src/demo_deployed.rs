//! The demo in the deployed shape: the same simulators, demo service and browser as
//! `selfheal demo`, with the engine replaced by `selfheal stack` — `template.yaml` run as
//! written, one process per Lambda function, IAM enforced, the Step Functions API.

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use selfheal::adapters::dynamodb::DynamoTable;
use selfheal::config::ModelProvider;
use selfheal::ports::{IncidentStore, SystemClock};
use selfheal::store::TableStore;

use crate::demo::{self, Scenario};
use crate::stack::{Stack, StackOptions};
use selfheal_testkit::demo_service::DemoService;
use selfheal_testkit::sim::{Sim, SimCredentials};

pub struct DeployedHarness {
    pub demo: Arc<DemoService>,
    pub broken: demo::BrokenService,
    pub sim: Arc<Sim>,
    pub creds: SimCredentials,
    pub stack: Stack,
    /// The incident store as an operator reads it (DynamoDB, operator identity).
    pub store: Arc<dyn IncidentStore>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for DeployedHarness {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// `template.yaml` of this checkout: the working directory's, else the one this binary was
/// built from.
pub fn template_path() -> PathBuf {
    let here = PathBuf::from("template.yaml");
    if here.exists() {
        return here;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../template.yaml")
}

/// The Bedrock model the deployed demo chooses with `PlannerProvider=bedrock`: an inference
/// profile, as newer Claude models on Bedrock require.
pub const BEDROCK_MODEL_ID: &str = "us.anthropic.claude-sonnet-4-5-20250929-v1:0";

/// The parameter overrides a user would give `sam deploy`, pointed at the simulators.
fn parameters(sim_base: &str, scenario: Scenario, provider: ModelProvider) -> String {
    let stability = if scenario == Scenario::Refire { 3 } else { 1 };
    let model = match provider {
        ModelProvider::Anthropic => vec![],
        ModelProvider::Bedrock => vec![
            "PlannerProvider=bedrock".to_string(),
            format!("BedrockModelId={BEDROCK_MODEL_ID}"),
            format!("BedrockEndpointUrl={sim_base}/bedrock"),
        ],
    };
    [
        format!("InvestigatorIds={}", demo::INVESTIGATOR),
        "SlackChannel=C0INCIDENTS".to_string(),
        format!("SlackApprovers={}", demo::APPROVER),
        format!("PagerDutyApiBase={sim_base}/pagerduty"),
        format!("SlackApiBase={sim_base}/slack/api"),
        format!("SensoApiBase={sim_base}/senso"),
        format!("SensoResolutionsFolderId={}", selfheal_testkit::sim::SENSO_RESOLUTIONS_FOLDER),
        format!("AnthropicApiBase={sim_base}/anthropic"),
        format!("CoderApiBase={sim_base}/coder"),
        "CoderTemplateVersionId=0b5c3c7e-selfheal-runner".to_string(),
        // BrowserEndpoint stays empty, its default: the verify function runs the Lightpanda
        // its container image ships (here: the same PyPI wheel's binary).
        format!("AutoServices={}", demo::SERVICE_ID),
        "HypothesisTimeoutSeconds=60".to_string(),
        "ApprovalTimeoutSeconds=120".to_string(),
        format!("StabilityWindowSeconds={stability}"),
        "WorkspacePollSeconds=1".to_string(),
        "WorkspaceMaxPolls=30".to_string(),
    ]
    .into_iter()
    .chain(model)
    .collect::<Vec<_>>()
    .join("\n")
}

/// The secrets JSON an operator would put into the stack's secret(s).
fn secret_values(c: &SimCredentials) -> BTreeMap<String, Value> {
    BTreeMap::from([
        ("pagerduty_webhook_secrets".to_string(), json!([c.webhook_secret])),
        ("pagerduty_api_token".to_string(), json!(c.pagerduty_token)),
        ("pagerduty_from_email".to_string(), json!("selfheal@example.com")),
        ("senso_api_key".to_string(), json!(c.senso_key)),
        ("anthropic_api_key".to_string(), json!(c.anthropic_key)),
        ("coder_session_token".to_string(), json!(c.coder_token)),
        ("slack_bot_token".to_string(), json!(c.slack_bot_token)),
        ("slack_signing_secret".to_string(), json!(c.slack_signing_secret)),
    ])
}

pub async fn harness(scenario: Scenario, out: &mut dyn Write) -> Result<DeployedHarness, String> {
    harness_on(scenario, ModelProvider::Anthropic, out).await
}

/// [`harness`] with the planner and the note fallback on `provider` (`PlannerProvider`): with
/// Bedrock, the functions sign `InvokeModel` with the identities the stack gives them, and the
/// simulator's Bedrock Runtime answers.
pub async fn harness_on(
    scenario: Scenario,
    provider: ModelProvider,
    out: &mut dyn Write,
) -> Result<DeployedHarness, String> {
    let creds = SimCredentials::default();
    let sim = Sim::new(creds.clone(), demo::knobs_for(scenario));
    let (sim_base, sim_task) = selfheal_testkit::spawn(sim.router(), 0).await.map_err(|e| e.to_string())?;
    *sim.base.lock().map_err(|_| "lock")? = sim_base.clone();
    let broken = demo::broken_service(scenario, &sim).await?;
    let demo = broken.demo.clone();
    let (demo_base, demo_task) = selfheal_testkit::spawn(demo.router(), 0).await.map_err(|e| e.to_string())?;

    let work_dir = std::env::temp_dir().join(format!("selfheal-stack-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&work_dir).map_err(|e| e.to_string())?;
    let params = work_dir.join("parameters.env");
    std::fs::write(&params, parameters(&sim_base, scenario, provider)).map_err(|e| e.to_string())?;
    let mut options = StackOptions::new(template_path(), &work_dir);
    options.parameters = Some(params);
    options.secrets = secret_values(&creds);
    let stack = Stack::start(options).await.map_err(|e| format!("selfheal stack: {e}"))?;
    *sim.engine_base.lock().map_err(|_| "lock")? = stack.api_base.clone();

    // The operator plane: runbooks into Senso and the catalog, the service's checks into the
    // table, with the operator's identity.
    let config = stack.admin_config().await;
    let table = stack.table_name().ok_or("the stack has no table")?.to_string();
    let store: Arc<dyn IncidentStore> =
        Arc::new(TableStore::new(DynamoTable::new(aws_sdk_dynamodb::Client::new(&config), table)));
    let settings = demo::settings_for(&sim_base, &demo_base, selfheal::adapters::embedded_browser::EMBEDDED, scenario)?;
    let checks = settings.checks.get(demo::SERVICE_ID).cloned().unwrap_or_default();
    let deps = selfheal::wiring::build_deps(
        settings,
        demo::secrets_for(&creds),
        store.clone(),
        Arc::new(selfheal::wiring::Unconfigured("orchestrator")),
        Arc::new(SystemClock::real()),
    );
    let mut runbooks = Vec::new();
    for (file, text) in demo::RUNBOOKS {
        runbooks.push(selfheal::runbooks::parse_runbook(file, text).map_err(|e| e.to_string())?);
    }
    if scenario == Scenario::Injection {
        runbooks
            .push(selfheal::runbooks::parse_runbook("poisoned.md", demo::POISONED_RUNBOOK).map_err(|e| e.to_string())?);
    }
    let pushed = selfheal::runbooks::push(deps.kb.as_ref(), store.as_ref(), &runbooks, Duration::from_secs(5))
        .await
        .map_err(|e| e.to_string())?;
    let service = demo::service_settings(checks, broken.parameters.clone());
    store.put_service_settings(&service).await.map_err(|e| e.to_string())?;

    let _ = writeln!(out, "selfheal demo — scenario {} (deployed shape)", scenario.name());
    let _ = writeln!(out, "  checkout service {demo_base} (broken: {})", demo::broken_how(&broken));
    let _ = writeln!(
        out,
        "  http api {}  step functions {}  aws apis (moto, IAM enforced) {}",
        stack.api_base, stack.sfn_endpoint, stack.moto.endpoint
    );
    let _ = writeln!(
        out,
        "  {} functions, one process each (logs in {})  simulators {sim_base}  browser: Lightpanda inside the verify function",
        stack.model.functions.len(),
        work_dir.display()
    );
    let _ = writeln!(
        out,
        "  {} runbooks pushed ({} catalog actions); checks for {} in the table",
        pushed.len(),
        pushed.iter().map(|p| p.actions).sum::<usize>(),
        demo::SERVICE_ID
    );
    Ok(DeployedHarness { demo, broken, sim, creds, stack, store, tasks: vec![demo_task, sim_task] })
}
