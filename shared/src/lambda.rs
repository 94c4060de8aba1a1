//! Lambda entry points: every function's `main` calls one of these.

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;
use std::sync::Arc;

use crate::adapters::dynamodb::DynamoTable;
use crate::config::Settings;
use crate::ports::{Orchestrator, SystemClock};
use crate::stages::{self, Deps, Function};
use crate::store::TableStore;
use crate::wiring::{Unconfigured, build_deps_for};

/// Initialise `function` once per container. A function that lacks anything its work needs
/// (see [`Function::needs`]) does not start: one ERROR line names what to set, and the error
/// goes to the Runtime API, so invocations fail with it instead of degrading mid-incident.
pub async fn init(function: Function) -> Result<Arc<Deps>, lambda_runtime::Error> {
    crate::telemetry::init();
    match wire(function).await {
        Ok(deps) => Ok(deps),
        Err(e) => {
            tracing::error!(function = function.binary(), error = %e, "init failed");
            report_init_error(&e.to_string()).await;
            Err(e)
        }
    }
}

/// `lambda_runtime` (1.5) only reports SnapStart init failures itself; without this report
/// Lambda would only say that the runtime exited.
async fn report_init_error(message: &str) {
    let Ok(api) = std::env::var("AWS_LAMBDA_RUNTIME_API") else { return };
    let body = serde_json::json!({"errorType": "Misconfigured", "errorMessage": message});
    let sent = reqwest::Client::new()
        .post(format!("http://{api}/2018-06-01/runtime/init/error"))
        .header("Lambda-Runtime-Function-Error-Type", "Runtime.InitError")
        .timeout(std::time::Duration::from_secs(2))
        .json(&body)
        .send()
        .await;
    if let Err(e) = sent {
        tracing::warn!(error = %e, "could not report the init error to the Runtime API");
    }
}

/// Read configuration, load the secrets into their cache and wire the clients.
async fn wire(function: Function) -> Result<Arc<Deps>, lambda_runtime::Error> {
    let settings = Settings::from_env()?;
    let sdk = crate::aws::sdk_config(None).await;
    let table = Settings::require(&settings.table_name, "SELFHEAL_TABLE_NAME")?.to_string();
    // This function's secrets (SELFHEAL_SECRET_IDS), cached with a TTL and refreshed on use.
    let secrets = crate::secrets::for_lambda(&settings, &sdk).await?;
    let store = Arc::new(TableStore::new(DynamoTable::new(aws_sdk_dynamodb::Client::new(&sdk), table)));
    let orchestrator: Arc<dyn Orchestrator> = match &settings.state_machine_arn {
        #[cfg(feature = "orchestrator")]
        Some(arn) if !arn.is_empty() => {
            Arc::new(crate::adapters::sfn::StepFunctions::new(aws_sdk_sfn::Client::new(&sdk), arn.clone()))
        }
        _ => Arc::new(Unconfigured("Step Functions (SELFHEAL_STATE_MACHINE_ARN)")),
    };
    let clock = Arc::new(SystemClock::real());
    Ok(Arc::new(build_deps_for(function, settings, secrets, store, orchestrator, clock)?))
}

/// A state-machine task function.
pub async fn run_stage(function: Function) -> Result<(), lambda_runtime::Error> {
    let deps = init(function).await?;
    if function.needs(deps.settings.planner.provider).contains(&stages::Capability::Browser) {
        // A browser the function runs itself starts during init (once per execution
        // environment); a failure here shows in the checks, which then escalate.
        if let Err(e) = deps.browser.warm().await {
            tracing::error!(error = %e, "the browser did not start");
        }
    }
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

impl HttpEntry {
    /// The function serving this entry point.
    pub fn function(self) -> Function {
        match self {
            HttpEntry::PagerDutyWebhook => Function::Intake,
            HttpEntry::SlackInteraction => Function::SlackCallback,
        }
    }
}

/// An API Gateway (HTTP API) function.
pub async fn run_http(entry: HttpEntry) -> Result<(), lambda_runtime::Error> {
    let deps = init(entry.function()).await?;
    // Slack gives us 3 s and PagerDuty 5 s, cold start included: open the DynamoDB connection
    // (TLS handshake) during init instead of on the first request. Failure here is harmless.
    let _ = deps.store.kill_switch().await;
    // Slack's `response_url` update runs after the answer (Slack allows 3 s for the answer, the
    // update may take longer): queued here, run by the runtime layer once the response is posted.
    let after = stages::http::AfterResponse::default();
    let queue = after.clone();
    let handler = lambda_http::service_fn(move |req: lambda_http::Request| {
        let (deps, queue) = (deps.clone(), queue.clone());
        async move {
            let request = stages::http::from_lambda(&req);
            let response = match entry {
                HttpEntry::PagerDutyWebhook => stages::intake::handle_webhook(&deps, &request).await,
                HttpEntry::SlackInteraction => {
                    let ack = stages::approvals::acknowledge_interaction(&deps, &request).await;
                    if let Some(follow_up) = ack.follow_up {
                        queue.defer(async move { follow_up.send(&deps).await });
                    }
                    ack.response
                }
            };
            Ok::<_, std::convert::Infallible>(stages::http::to_lambda(response))
        }
    });
    // What `lambda_http::run` does, plus the after-response layer (inside the tracing span).
    lambda_http::runtime(handler).layer(after.layer()).layer(lambda_runtime::layers::TracingLayer::new()).run().await
}
