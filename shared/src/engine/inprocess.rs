//! Dispatch `lambda:invoke` tasks to the in-process stage handlers: exactly what the Lambda
//! functions run, with their response and error shapes.

use async_trait::async_trait;
use serde_json::{Value, json};
use std::sync::Arc;

use super::interpreter::{TaskDispatcher, TaskFailure, TaskInvocation, TaskOutcome};
use crate::stages::{self, Deps, Function};

/// `DefinitionSubstitutions` for the local engine: each function ARN becomes `local:<name>`
/// (generated from the table in [`crate::stages::ops`]).
pub const LOCAL_SUBSTITUTIONS: &[(&str, &str)] = stages::ops::LOCAL_SUBSTITUTIONS;

/// Replace `${Name}` placeholders, as SAM's DefinitionSubstitutions do.
pub fn substitute(definition: &str, substitutions: &[(&str, &str)]) -> String {
    substitutions.iter().fold(definition.to_string(), |acc, (k, v)| acc.replace(&format!("${{{k}}}"), v))
}

fn function_named(name: &str) -> Option<Function> {
    // Only state-machine functions have a local ARN the definition can name.
    Function::ALL.into_iter().find(|f| !f.is_http() && f.local_arn() == name)
}

pub struct InProcessDispatcher {
    deps: Arc<Deps>,
}

impl InProcessDispatcher {
    pub fn new(deps: Arc<Deps>) -> Self {
        Self { deps }
    }
}

#[async_trait]
impl TaskDispatcher for InProcessDispatcher {
    async fn invoke(&self, invocation: TaskInvocation) -> Result<TaskOutcome, TaskFailure> {
        let callback = match invocation.resource.as_str() {
            "arn:aws:states:::lambda:invoke" => false,
            "arn:aws:states:::lambda:invoke.waitForTaskToken" => true,
            other => {
                return Err(TaskFailure::new("States.Runtime", format!("resource {other} is not supported locally")));
            }
        };
        let name = invocation.parameters.get("FunctionName").and_then(Value::as_str).unwrap_or_default();
        let function = function_named(name)
            .ok_or_else(|| TaskFailure::new("Lambda.ResourceNotFoundException", format!("no local function {name}")))?;
        let payload = invocation.parameters.get("Payload").cloned().unwrap_or(Value::Null);
        match stages::handle(&self.deps, function, payload).await {
            Ok(_) if callback => Ok(TaskOutcome::AwaitCallback),
            Ok(out) => {
                Ok(TaskOutcome::Completed(json!({"StatusCode": 200, "Payload": out, "ExecutedVersion": "$LATEST"})))
            }
            // The same shape Lambda reports: errorType is the stable name.
            Err(e) => Err(TaskFailure::new(
                e.error_name(),
                json!({"errorType": e.error_name(), "errorMessage": e.to_string()}).to_string(),
            )),
        }
    }
}
