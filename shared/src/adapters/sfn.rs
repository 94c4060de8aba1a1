//! AWS Step Functions as the [`Orchestrator`].

use async_trait::async_trait;
use aws_sdk_sfn::Client;
use aws_sdk_sfn::error::{ProvideErrorMetadata, SdkError};
use serde_json::Value;

use crate::domain::TaskToken;
use crate::error::OrchestratorError;
use crate::ports::{ExecutionRef, Orchestrator};

#[derive(Clone, Debug)]
pub struct StepFunctions {
    client: Client,
    state_machine_arn: String,
}

impl StepFunctions {
    pub fn new(client: Client, state_machine_arn: impl Into<String>) -> Self {
        Self { client, state_machine_arn: state_machine_arn.into() }
    }
}

/// Map a Step Functions error code to what the caller can act on.
pub fn classify(op: &str, code: Option<&str>, message: Option<&str>, transport: bool) -> OrchestratorError {
    let detail = format!("{op}: {}: {}", code.unwrap_or("error"), message.unwrap_or(""));
    if transport {
        return OrchestratorError::Unavailable(detail);
    }
    match code {
        Some("ExecutionAlreadyExists") => OrchestratorError::ExecutionAlreadyExists(detail),
        // Token expired, task already completed, or its execution ended: "already decided".
        Some("TaskTimedOut") | Some("TaskDoesNotExist") => OrchestratorError::TaskClosed,
        Some("InvalidToken") => OrchestratorError::InvalidToken,
        Some("ExecutionDoesNotExist") => OrchestratorError::ExecutionNotFound(detail),
        Some("ThrottlingException")
        | Some("ServiceUnavailable")
        | Some("InternalFailure")
        | Some("ServiceQuotaExceededException") => OrchestratorError::Unavailable(detail),
        _ => OrchestratorError::Rejected(detail),
    }
}

fn map_err<E: ProvideErrorMetadata, R>(op: &str, e: SdkError<E, R>) -> OrchestratorError {
    match &e {
        SdkError::ServiceError(se) => classify(op, se.err().code(), se.err().message(), false),
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            classify(op, None, Some("transport failure"), true)
        }
        _ => classify(op, None, Some("request could not be built"), false),
    }
}

#[async_trait]
impl Orchestrator for StepFunctions {
    async fn start_execution(&self, name: &str, input: &str) -> Result<ExecutionRef, OrchestratorError> {
        let out = self
            .client
            .start_execution()
            .state_machine_arn(&self.state_machine_arn)
            .name(name)
            .input(input)
            .send()
            .await
            .map_err(|e| map_err("StartExecution", e))?;
        // Step Functions answers a retry with identical input with the same execution; it does
        // not say which case it was, so report it as started.
        Ok(ExecutionRef { execution_id: out.execution_arn().to_string(), newly_started: true })
    }

    async fn send_task_success(&self, token: &TaskToken, output: &Value) -> Result<(), OrchestratorError> {
        self.client
            .send_task_success()
            .task_token(token.expose())
            .output(output.to_string())
            .send()
            .await
            .map_err(|e| map_err("SendTaskSuccess", e))?;
        Ok(())
    }

    async fn send_task_failure(&self, token: &TaskToken, error: &str, cause: &str) -> Result<(), OrchestratorError> {
        // Step Functions limits: error ≤ 256 chars, cause ≤ 32,768 chars.
        let error: String = error.chars().take(256).collect();
        let cause: String = cause.chars().take(32_768).collect();
        self.client
            .send_task_failure()
            .task_token(token.expose())
            .error(error)
            .cause(cause)
            .send()
            .await
            .map_err(|e| map_err("SendTaskFailure", e))?;
        Ok(())
    }

    async fn stop_execution(&self, execution_id: &str, cause: &str) -> Result<(), OrchestratorError> {
        self.client
            .stop_execution()
            .execution_arn(execution_id)
            .error("Stopped")
            .cause(cause.chars().take(32_768).collect::<String>())
            .send()
            .await
            .map_err(|e| map_err("StopExecution", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_errors_map_to_actionable_variants() {
        assert!(matches!(classify("x", Some("TaskTimedOut"), None, false), OrchestratorError::TaskClosed));
        assert!(matches!(classify("x", Some("TaskDoesNotExist"), None, false), OrchestratorError::TaskClosed));
        assert!(matches!(classify("x", Some("InvalidToken"), None, false), OrchestratorError::InvalidToken));
        assert!(matches!(
            classify("x", Some("ExecutionAlreadyExists"), None, false),
            OrchestratorError::ExecutionAlreadyExists(_)
        ));
        assert!(matches!(classify("x", Some("ThrottlingException"), None, false), OrchestratorError::Unavailable(_)));
        assert!(matches!(classify("x", None, None, true), OrchestratorError::Unavailable(_)));
        assert!(matches!(classify("x", Some("InvalidOutput"), None, false), OrchestratorError::Rejected(_)));
    }
}
