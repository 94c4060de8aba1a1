//! Lambda entry points: every function's `main` calls one of these.

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;
use std::sync::Arc;

use crate::adapters::dynamodb::DynamoTable;
use crate::adapters::sfn::StepFunctions;
use crate::config::{Secrets, Settings};
use crate::ports::{Orchestrator, SystemClock};
use crate::stages::{self, Deps, Function};
use crate::store::TableStore;
use crate::wiring::{Unconfigured, build_deps};

/// Read configuration and secrets once per container and wire the clients.
pub async fn init() -> Result<Arc<Deps>, lambda_runtime::Error> {
    crate::telemetry::init();
    let settings = Settings::from_env()?;
    let sdk = crate::aws::sdk_config(None).await;
    let secret_id = Settings::require(&settings.secret_id, "SELFHEAL_SECRET_ID")?.to_string();
    let table = Settings::require(&settings.table_name, "SELFHEAL_TABLE_NAME")?.to_string();
    let secrets = Secrets::from_secrets_manager(&aws_sdk_secretsmanager::Client::new(&sdk), &secret_id).await?;
    let store = Arc::new(TableStore::new(DynamoTable::new(aws_sdk_dynamodb::Client::new(&sdk), table)));
    let orchestrator: Arc<dyn Orchestrator> = match &settings.state_machine_arn {
        Some(arn) if !arn.is_empty() => Arc::new(StepFunctions::new(aws_sdk_sfn::Client::new(&sdk), arn.clone())),
        _ => Arc::new(Unconfigured("Step Functions (SELFHEAL_STATE_MACHINE_ARN)")),
    };
    Ok(Arc::new(build_deps(settings, secrets, store, orchestrator, Arc::new(SystemClock::real()))))
}

/// A state-machine task function.
pub async fn run_stage(function: Function) -> Result<(), lambda_runtime::Error> {
    let deps = init().await?;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let deps = deps.clone();
        async move { stages::handle(&deps, function, event.payload).await }
    }))
    .await
}

#[derive(Debug, Clone, Copy)]
pub enum HttpEntry {
    PagerDutyWebhook,
    SlackInteraction,
}

/// An API Gateway (HTTP API) function.
pub async fn run_http(entry: HttpEntry) -> Result<(), lambda_runtime::Error> {
    let deps = init().await?;
    // Slack gives us 3 s and PagerDuty 5 s, cold start included: open the DynamoDB connection
    // (TLS handshake) during init instead of on the first request. Failure here is harmless.
    let _ = deps.store.kill_switch().await;
    lambda_http::run(lambda_http::service_fn(move |req: lambda_http::Request| {
        let deps = deps.clone();
        async move {
            let request = stages::http::from_lambda(&req);
            let response = match entry {
                HttpEntry::PagerDutyWebhook => stages::intake::handle_webhook(&deps, &request).await,
                HttpEntry::SlackInteraction => stages::approvals::handle_interaction(&deps, &request).await,
            };
            Ok::<_, std::convert::Infallible>(stages::http::to_lambda(response))
        }
    }))
    .await
}
