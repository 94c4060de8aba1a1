//! Building [`Deps`] from settings and secrets: the same wiring for Lambda, `selfheal serve`
//! and the demo. A capability whose credentials are missing is wired to [`Unconfigured`], which
//! fails with a message naming what to configure (a Lambda only gets the secrets it needs).

use crate::http::ApiAdapter;
use async_trait::async_trait;
use secrecy::SecretString;
use serde_json::Value;
use std::sync::Arc;

use crate::adapters::{anthropic, coder, lightpanda, pagerduty, senso, slack};
use crate::config::{Secrets, Settings};
use crate::domain::*;
use crate::error::{ClientError, OrchestratorError};
use crate::ports::*;
use crate::stages::Deps;

/// Stands in for a capability that is not configured in this process.
pub struct Unconfigured(pub &'static str);

impl Unconfigured {
    fn err(&self) -> ClientError {
        ClientError::Invalid {
            service: self.0,
            detail: format!("{} is not configured in this process (see README: configuration)", self.0),
        }
    }
}

#[async_trait]
impl IncidentSource for Unconfigured {
    async fn list_notes(&self, _: &IncidentId) -> Result<Vec<SourceNote>, ClientError> {
        Err(self.err())
    }
    async fn add_note(&self, _: &IncidentId, _: &str) -> Result<NoteId, ClientError> {
        Err(self.err())
    }
    async fn resolve(&self, _: &IncidentId, _: &str) -> Result<(), ClientError> {
        Err(self.err())
    }
}

#[async_trait]
impl KnowledgeBase for Unconfigured {
    async fn search(&self, _: &str, _: u32) -> Result<SearchResults, ClientError> {
        Err(self.err())
    }
    async fn ingest(&self, _: &str, _: &str) -> Result<String, ClientError> {
        Err(self.err())
    }
    async fn ingest_status(&self, _: &str) -> Result<IngestStatus, ClientError> {
        Err(self.err())
    }
}

#[async_trait]
impl Planner for Unconfigured {
    async fn plan(&self, _: &PlanRequest) -> Result<Plan, ClientError> {
        Err(self.err())
    }
}

#[async_trait]
impl Workspaces for Unconfigured {
    async fn create(&self, _: &WorkspaceRequest) -> Result<WorkspaceHandle, ClientError> {
        Err(self.err())
    }
    async fn progress(&self, _: &WorkspaceHandle) -> Result<WorkspaceProgress, ClientError> {
        Err(self.err())
    }
    async fn agent_logs(&self, _: &str, _: usize) -> Result<String, ClientError> {
        Err(self.err())
    }
    async fn delete(&self, _: &str) -> Result<(), ClientError> {
        Err(self.err())
    }
    async fn find(&self, _: &str) -> Result<Option<WorkspaceHandle>, ClientError> {
        Err(self.err())
    }
}

#[async_trait]
impl ChatOps for Unconfigured {
    async fn post(&self, _: &ChatMessage) -> Result<MessageRef, ClientError> {
        Err(self.err())
    }
    async fn update(&self, _: &MessageRef, _: &ChatMessage) -> Result<(), ClientError> {
        Err(self.err())
    }
    async fn respond(&self, _: &str, _: &ChatMessage, _: bool, _: bool) -> Result<(), ClientError> {
        Err(self.err())
    }
}

#[async_trait]
impl Orchestrator for Unconfigured {
    async fn start_execution(&self, _: &str, _: &str) -> Result<ExecutionRef, OrchestratorError> {
        Err(OrchestratorError::Rejected(self.err().to_string()))
    }
    async fn send_task_success(&self, _: &TaskToken, _: &Value) -> Result<(), OrchestratorError> {
        Err(OrchestratorError::Rejected(self.err().to_string()))
    }
    async fn send_task_failure(&self, _: &TaskToken, _: &str, _: &str) -> Result<(), OrchestratorError> {
        Err(OrchestratorError::Rejected(self.err().to_string()))
    }
    async fn stop_execution(&self, _: &str, _: &str) -> Result<(), OrchestratorError> {
        Err(OrchestratorError::Rejected(self.err().to_string()))
    }
}

fn or_unconfigured<T: ?Sized>(built: Option<Result<Arc<T>, ClientError>>, fallback: Arc<T>, what: &str) -> Arc<T> {
    match built {
        Some(Ok(adapter)) => adapter,
        Some(Err(e)) => {
            tracing::warn!(capability = what, error = %e, "adapter misconfigured; calls will fail");
            fallback
        }
        None => fallback,
    }
}

fn secret(s: &Option<SecretString>) -> Option<SecretString> {
    s.clone()
}

/// Wire every SaaS adapter from settings and secrets.
pub fn build_deps(
    settings: Settings,
    secrets: Secrets,
    store: Arc<dyn IncidentStore>,
    orchestrator: Arc<dyn Orchestrator>,
    clock: Arc<dyn Clock>,
) -> Deps {
    let timeout = settings.timeouts.api_request_ms.map(std::time::Duration::from_millis);
    let pd = secret(&secrets.pagerduty_api_token).map(|token| {
        pagerduty::PagerDutyRest::new(
            &settings.pagerduty.api_base,
            token,
            secrets.pagerduty_from_email.as_deref().unwrap_or(""),
        )
        .map(|a| a.with_request_timeout(timeout))
        .map(|a| Arc::new(a) as Arc<dyn IncidentSource>)
    });
    let kb = secret(&secrets.senso_api_key).map(|key| {
        senso::SensoKb::new(&settings.senso.api_base, key, settings.senso.api.clone())
            .map(|a| a.with_request_timeout(timeout))
            .map(|a| Arc::new(a) as Arc<dyn KnowledgeBase>)
    });
    let planner = secret(&secrets.anthropic_api_key).map(|key| {
        anthropic::AnthropicPlanner::new(
            &settings.anthropic.api_base,
            key,
            &settings.anthropic.model,
            settings.anthropic.max_tokens,
        )
        .map(|a| a.with_request_timeout(timeout))
        .map(|a| Arc::new(a) as Arc<dyn Planner>)
    });
    let template = settings
        .coder
        .template_version_id
        .clone()
        .map(coder::TemplateRef::Version)
        .or_else(|| settings.coder.template_id.clone().map(coder::TemplateRef::Template));
    let workspaces = match (secret(&secrets.coder_session_token), &settings.coder.api_base, template) {
        (Some(token), Some(base), Some(template)) => Some(
            coder::CoderApi::new(base, token, &settings.coder.user, template)
                .map(|a| a.with_request_timeout(timeout))
                .map(|a| Arc::new(a) as Arc<dyn Workspaces>),
        ),
        _ => None,
    };
    let chat = match (secret(&secrets.slack_bot_token), &settings.slack.channel) {
        (Some(token), Some(channel)) => Some(
            slack::SlackApi::new(&settings.slack.api_base, token, channel)
                .map(|a| a.with_request_timeout(timeout))
                .map(|a| Arc::new(a) as Arc<dyn ChatOps>),
        ),
        _ => None,
    };
    let browser: Arc<dyn Browser> =
        match lightpanda::LightpandaBrowser::new(&settings.browser.endpoint, secret(&secrets.lightpanda_token)) {
            Ok(b) => Arc::new(b),
            Err(e) => {
                tracing::warn!(error = %e, "browser endpoint invalid; falling back to plain HTTP checks");
                match lightpanda::HttpChecker::new() {
                    Ok(h) => Arc::new(h),
                    Err(_) => Arc::new(NoBrowser),
                }
            }
        };
    Deps {
        source: or_unconfigured(
            pd,
            Arc::new(Unconfigured("PagerDuty (pagerduty_api_token, pagerduty_from_email)")),
            "pagerduty",
        ),
        kb: or_unconfigured(kb, Arc::new(Unconfigured("Senso (senso_api_key)")), "senso"),
        planner: or_unconfigured(planner, Arc::new(Unconfigured("Anthropic (anthropic_api_key)")), "anthropic"),
        workspaces: or_unconfigured(
            workspaces,
            Arc::new(Unconfigured("Coder (coder_session_token, coder.api_base, coder.template_version_id)")),
            "coder",
        ),
        chat: or_unconfigured(chat, Arc::new(Unconfigured("Slack (slack_bot_token, slack.channel)")), "slack"),
        browser,
        settings,
        secrets,
        store,
        orchestrator,
        clock,
    }
}

/// Used only if even a plain HTTP client cannot be built.
struct NoBrowser;

#[async_trait]
impl Browser for NoBrowser {
    async fn check(&self, _: &CheckSpec) -> Result<CheckResult, ClientError> {
        Err(ClientError::Invalid { service: "browser", detail: "no browser available".into() })
    }
}
