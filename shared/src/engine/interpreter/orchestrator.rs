//! The local engine as the [`Orchestrator`] port.

use super::*;

/// The local engine as the [`Orchestrator`] port: what intake and the Slack callback call.
pub struct LocalOrchestrator {
    engine: Weak<Engine>,
    machine: String,
}

impl LocalOrchestrator {
    pub fn new(engine: &Arc<Engine>, machine: &str) -> Self {
        Self { engine: Arc::downgrade(engine), machine: machine.to_string() }
    }
    fn engine(&self) -> Result<Arc<Engine>, OrchestratorError> {
        self.engine.upgrade().ok_or_else(|| OrchestratorError::Unavailable("the local engine has shut down".into()))
    }
}

#[async_trait]
impl Orchestrator for LocalOrchestrator {
    async fn start_execution(&self, name: &str, input: &str) -> Result<ExecutionRef, OrchestratorError> {
        self.engine()?.start(&self.machine, name, input).await
    }
    async fn send_task_success(&self, token: &TaskToken, output: &Value) -> Result<(), OrchestratorError> {
        self.engine()?.send_task_success(token, output).await
    }
    async fn send_task_failure(&self, token: &TaskToken, error: &str, cause: &str) -> Result<(), OrchestratorError> {
        self.engine()?.send_task_failure(token, error, cause).await
    }
    async fn stop_execution(&self, execution_id: &str, cause: &str) -> Result<(), OrchestratorError> {
        let name = execution_id.rsplit(':').next().unwrap_or(execution_id);
        self.engine()?.stop(name, cause).await
    }
}
