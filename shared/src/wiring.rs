//! Building [`Deps`] from settings and secrets: the same wiring for Lambda, `selfheal serve`
//! and the demo. A capability whose credentials are missing is wired to [`Unconfigured`], which
//! fails with a message naming what to configure (a Lambda only gets the secrets it needs).

use crate::http::ApiAdapter;
use async_trait::async_trait;
use secrecy::SecretString;
use serde_json::Value;
use std::sync::Arc;

#[cfg(feature = "bedrock")]
use crate::adapters::bedrock;
use crate::adapters::{anthropic, coder, pagerduty, senso, slack};
#[cfg(feature = "browser")]
use crate::adapters::{embedded_browser, lightpanda};
use crate::config::{ModelProvider, Secrets, Settings};
use crate::domain::*;
use crate::error::{ClientError, OrchestratorError};
use crate::ports::*;
use crate::secrets::{Rebuilt, SecretsHandle};
use crate::stages::{Capability, Deps, Function};

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
    async fn get_incident(&self, _: &IncidentId) -> Result<SourceIncident, ClientError> {
        Err(self.err())
    }
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
    async fn search(&self, _: &str, _: u32, _: &SearchScope) -> Result<SearchResults, ClientError> {
        Err(self.err())
    }
    async fn ingest(&self, _: DocumentKind, _: &str, _: &str) -> Result<String, ClientError> {
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
impl NoteReader for Unconfigured {
    async fn read_note(&self, _: &str) -> Result<crate::notes::ModelReading, ClientError> {
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
    async fn list(&self, _: &str) -> Result<Vec<WorkspaceSummary>, ClientError> {
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

fn request_timeout(settings: &Settings) -> Option<std::time::Duration> {
    settings.timeouts.api_request_ms.map(std::time::Duration::from_millis)
}

// One builder per capability that holds a credential: called once with fixed secrets, and again
// by [`Rebuilt`] whenever refreshed secrets change.

fn incident_source(settings: &Settings, secrets: &Secrets) -> Arc<dyn IncidentSource> {
    let timeout = request_timeout(settings);
    let pd = secret(&secrets.pagerduty_api_token).map(|token| {
        pagerduty::PagerDutyRest::new(
            &settings.pagerduty.api_base,
            token,
            secrets.pagerduty_from_email.as_deref().unwrap_or(""),
        )
        .map(|a| a.with_request_timeout(timeout))
        .map(|a| Arc::new(a) as Arc<dyn IncidentSource>)
    });
    or_unconfigured(pd, Arc::new(Unconfigured("PagerDuty (pagerduty_api_token, pagerduty_from_email)")), "pagerduty")
}

fn knowledge_base(settings: &Settings, secrets: &Secrets) -> Arc<dyn KnowledgeBase> {
    let timeout = request_timeout(settings);
    let kb = secret(&secrets.senso_api_key).map(|key| {
        senso::SensoKb::new(&settings.senso.api_base, key, settings.senso.api.clone())
            .map(|a| a.with_folders(&settings.senso.runbooks_folder, &settings.senso.resolutions_folder))
            .map(|a| a.with_request_timeout(timeout))
            .map(|a| Arc::new(a) as Arc<dyn KnowledgeBase>)
    });
    or_unconfigured(kb, Arc::new(Unconfigured("Senso (senso_api_key)")), "senso")
}

fn planner(settings: &Settings, secrets: &Secrets) -> Arc<dyn Planner> {
    if settings.planner.provider == ModelProvider::Bedrock {
        return bedrock_planner(settings);
    }
    let timeout = request_timeout(settings);
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
    or_unconfigured(planner, Arc::new(Unconfigured("Anthropic (anthropic_api_key)")), "anthropic")
}

/// The note parser's model fallback: Claude from the planner's provider, with the planner's
/// key, model and API base (or Bedrock model). Off (`notes.model_fallback = false`) or without a
/// key, it is `Unconfigured` and the rules stand.
pub fn note_reader(settings: &Settings, secrets: &Secrets) -> Arc<dyn NoteReader> {
    if !settings.notes.model_fallback {
        return Arc::new(Unconfigured("the note model fallback (notes.model_fallback is off)"));
    }
    if settings.planner.provider == ModelProvider::Bedrock {
        return bedrock_note_reader(settings);
    }
    let timeout = request_timeout(settings);
    let reader = secret(&secrets.anthropic_api_key).map(|key| {
        anthropic::AnthropicNoteReader::new(&settings.anthropic.api_base, key, &settings.anthropic.model)
            .map(|a| a.with_request_timeout(timeout))
            .map(|a| Arc::new(a) as Arc<dyn NoteReader>)
    });
    or_unconfigured(reader, Arc::new(Unconfigured("Anthropic (anthropic_api_key)")), "anthropic")
}

/// The Bedrock Runtime client the settings describe, loaded from the environment on first use.
#[cfg(feature = "bedrock")]
fn bedrock_runtime(settings: &Settings) -> Result<Arc<bedrock::BedrockRuntime>, ClientError> {
    bedrock::BedrockRuntime::from_environment(settings.bedrock.region(), settings.bedrock.endpoint_url()).map(Arc::new)
}

/// Claude on Bedrock as the planner. It holds no secret (the SDK signs with the role's
/// credentials and refreshes them itself), so it is built once and never `Rebuilt`.
#[cfg(feature = "bedrock")]
fn bedrock_planner(settings: &Settings) -> Arc<dyn Planner> {
    let b = &settings.bedrock;
    let planner = bedrock_runtime(settings)
        .and_then(|runtime| bedrock::BedrockPlanner::new(runtime, &b.model_id, b.max_tokens))
        .map(|a| Arc::new(a.with_request_timeout(request_timeout(settings))) as Arc<dyn Planner>);
    or_unconfigured(Some(planner), Arc::new(Unconfigured("Amazon Bedrock (bedrock.model_id)")), "bedrock")
}

#[cfg(feature = "bedrock")]
fn bedrock_note_reader(settings: &Settings) -> Arc<dyn NoteReader> {
    let reader = bedrock_runtime(settings)
        .and_then(|runtime| bedrock::BedrockNoteReader::new(runtime, &settings.bedrock.model_id))
        .map(|a| Arc::new(a.with_request_timeout(request_timeout(settings))) as Arc<dyn NoteReader>);
    or_unconfigured(Some(reader), Arc::new(Unconfigured("Amazon Bedrock (bedrock.model_id)")), "bedrock")
}

/// Built without the `bedrock` feature: only functions that call no model are.
#[cfg(not(feature = "bedrock"))]
const NO_BEDROCK: Unconfigured = Unconfigured("Amazon Bedrock (this binary was built without the bedrock feature)");

#[cfg(not(feature = "bedrock"))]
fn bedrock_planner(_: &Settings) -> Arc<dyn Planner> {
    Arc::new(NO_BEDROCK)
}

#[cfg(not(feature = "bedrock"))]
fn bedrock_note_reader(_: &Settings) -> Arc<dyn NoteReader> {
    Arc::new(NO_BEDROCK)
}

/// The Coder adapter the settings and secrets describe (or `Unconfigured`, naming what is missing).
pub fn workspaces(settings: &Settings, secrets: &Secrets) -> Arc<dyn Workspaces> {
    let timeout = request_timeout(settings);
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
    or_unconfigured(
        workspaces,
        Arc::new(Unconfigured("Coder (coder_session_token, coder.api_base, coder.template_version_id)")),
        "coder",
    )
}

fn chat(settings: &Settings, secrets: &Secrets) -> Arc<dyn ChatOps> {
    let timeout = request_timeout(settings);
    let chat = match (secret(&secrets.slack_bot_token), &settings.slack.channel) {
        (Some(token), Some(channel)) => Some(
            slack::SlackApi::new(&settings.slack.api_base, token, channel)
                .map(|a| a.with_request_timeout(timeout))
                .map(|a| Arc::new(a) as Arc<dyn ChatOps>),
        ),
        _ => None,
    };
    or_unconfigured(chat, Arc::new(Unconfigured("Slack (slack_bot_token, slack.channel)")), "slack")
}

/// The `browser.endpoint` value that selects the browser the function runs itself.
pub const EMBEDDED_BROWSER: &str = "embedded";

/// Is the browser the function's own (`browser.endpoint` empty or "embedded")?
pub fn embedded_browser(settings: &Settings) -> bool {
    let endpoint = settings.browser.endpoint.trim();
    endpoint.is_empty() || endpoint == EMBEDDED_BROWSER
}

#[cfg(not(feature = "browser"))]
fn browser(_: &Settings, _: &Secrets) -> Arc<dyn Browser> {
    // Built without the `browser` feature: only functions that run no checks are.
    Arc::new(NoBrowser)
}

#[cfg(feature = "browser")]
fn browser(settings: &Settings, secrets: &Secrets) -> Arc<dyn Browser> {
    if embedded_browser(settings) {
        let bin = embedded_browser::configured_bin();
        // Twice the check concurrency: a connection per check, with room for a straggler.
        match embedded_browser::EmbeddedLightpanda::new(&bin, settings.browser.max_concurrent_checks * 2) {
            Ok(b) => return Arc::new(b),
            Err(e) => tracing::warn!(error = %e, "embedded browser unavailable; falling back to plain HTTP checks"),
        }
        return match lightpanda::HttpChecker::new() {
            Ok(h) => Arc::new(h),
            Err(_) => Arc::new(NoBrowser),
        };
    }
    match lightpanda::LightpandaBrowser::new(&settings.browser.endpoint, secret(&secrets.lightpanda_token)) {
        Ok(b) => Arc::new(b),
        Err(e) => {
            tracing::warn!(error = %e, "browser endpoint invalid; falling back to plain HTTP checks");
            match lightpanda::HttpChecker::new() {
                Ok(h) => Arc::new(h),
                Err(_) => Arc::new(NoBrowser),
            }
        }
    }
}

/// Wire every SaaS adapter from settings and secrets: fixed [`Secrets`] (tests, the local
/// engine) or a refreshing [`SecretsHandle`] (Lambda), whose adapters follow the values.
pub fn build_deps(
    settings: Settings,
    secrets: impl Into<SecretsHandle>,
    store: Arc<dyn IncidentStore>,
    orchestrator: Arc<dyn Orchestrator>,
    clock: Arc<dyn Clock>,
) -> Deps {
    let secrets: SecretsHandle = secrets.into();
    let shared = Arc::new(settings.clone());
    let snapshot = secrets.snapshot();
    // Fixed secrets build each adapter once; refreshing ones wrap it in `Rebuilt`.
    macro_rules! adapter {
        ($build:ident) => {
            if secrets.refreshes() {
                let settings = shared.clone();
                Arc::new(Rebuilt::new(secrets.clone(), move |s| $build(&settings, s)))
            } else {
                $build(&settings, &snapshot)
            }
        };
    }
    // The Bedrock adapters hold no secret: built once, not rebuilt when the secrets change.
    let on_bedrock = settings.planner.provider == ModelProvider::Bedrock;
    Deps {
        source: adapter!(incident_source),
        kb: adapter!(knowledge_base),
        planner: if on_bedrock { planner(&settings, &snapshot) } else { adapter!(planner) },
        note_reader: if on_bedrock { note_reader(&settings, &snapshot) } else { adapter!(note_reader) },
        workspaces: adapter!(workspaces),
        chat: adapter!(chat),
        browser: adapter!(browser),
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

// ---------------------------------------------------------------- strict wiring (Lambda init)
//
// `build_deps` degrades quietly (an `Unconfigured` adapter, plain HTTP instead of the browser)
// because the local engine and tests run with whatever they have. A deployed function must not:
// a missing credential would only surface mid-incident, as an escalation. `build_deps_for`
// checks everything the function's work needs first and refuses to start without it.

/// What a deployed function lacks; the message names the variable or secret key to set.
#[derive(Debug, thiserror::Error)]
pub enum WiringError {
    #[error("the {function} function needs {capability}: set {variable}")]
    MissingSetting { function: &'static str, capability: Capability, variable: &'static str },
    #[error("the {function} function needs {capability}: the secret key {key} is missing or empty")]
    MissingSecret { function: &'static str, capability: Capability, key: &'static str },
    #[error("the {function} function needs {capability}: {name} is invalid: {detail}")]
    Invalid { function: &'static str, capability: Capability, name: &'static str, detail: String },
}

impl WiringError {
    /// The environment variable or secret key to fix.
    pub fn name(&self) -> &'static str {
        match self {
            WiringError::MissingSetting { variable, .. } => variable,
            WiringError::MissingSecret { key, .. } => key,
            WiringError::Invalid { name, .. } => name,
        }
    }
}

fn present(s: &Option<SecretString>) -> Option<SecretString> {
    use secrecy::ExposeSecret;
    s.as_ref().filter(|v| !v.expose_secret().trim().is_empty()).cloned()
}

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// Check that `function` has every setting and secret its [`Function::needs`] require, and that
/// the adapters build from them (URLs, the browser endpoint, the `From` address).
pub fn check_needs(function: Function, settings: &Settings, secrets: &Secrets) -> Result<(), WiringError> {
    function
        .needs(settings.planner.provider)
        .iter()
        .try_for_each(|capability| check_capability(function, *capability, settings, secrets))
}

fn check_capability(
    function: Function,
    capability: Capability,
    settings: &Settings,
    secrets: &Secrets,
) -> Result<(), WiringError> {
    let f = function.binary();
    let setting = |variable| WiringError::MissingSetting { function: f, capability, variable };
    let secret_key = |key| WiringError::MissingSecret { function: f, capability, key };
    let invalid = |name, e: ClientError| WiringError::Invalid { function: f, capability, name, detail: e.to_string() };
    match capability {
        Capability::Store => {
            non_empty(&settings.table_name).ok_or_else(|| setting("SELFHEAL_TABLE_NAME"))?;
        }
        Capability::StateMachine | Capability::StartExecution => {
            non_empty(&settings.state_machine_arn).ok_or_else(|| setting("SELFHEAL_STATE_MACHINE_ARN"))?;
        }
        Capability::PagerDuty => {
            let token = present(&secrets.pagerduty_api_token).ok_or_else(|| secret_key("pagerduty_api_token"))?;
            let from = non_empty(&secrets.pagerduty_from_email).ok_or_else(|| secret_key("pagerduty_from_email"))?;
            if !from.contains('@') {
                return Err(WiringError::Invalid {
                    function: f,
                    capability,
                    name: "pagerduty_from_email",
                    detail: "must be a PagerDuty user's email".into(),
                });
            }
            pagerduty::PagerDutyRest::new(&settings.pagerduty.api_base, token, from)
                .map_err(|e| invalid("SELFHEAL_PAGERDUTY_API_BASE", e))?;
        }
        Capability::PagerDutyWebhook => {
            use secrecy::ExposeSecret;
            if !secrets.pagerduty_webhook_secrets.iter().any(|s| !s.expose_secret().trim().is_empty()) {
                // Not fatal: intake answers every delivery 503 (PagerDuty retries for 48 h)
                // and the secrets cache picks the value up once someone fills it in. A failed
                // init would only trade that clear answer for API Gateway's bare 500.
                tracing::error!(
                    function = f,
                    missing_secret_key = "pagerduty_webhook_secrets",
                    "no webhook secret yet: deliveries are answered 503 until it is set"
                );
            }
            // Without investigator ids no note ever counts as a hypothesis.
            if settings.pagerduty.investigator_ids.iter().all(|id| id.trim().is_empty()) {
                return Err(setting("SELFHEAL_INVESTIGATOR_IDS"));
            }
        }
        Capability::Slack => {
            let token = present(&secrets.slack_bot_token).ok_or_else(|| secret_key("slack_bot_token"))?;
            let channel = non_empty(&settings.slack.channel).ok_or_else(|| setting("SELFHEAL_SLACK_CHANNEL"))?;
            slack::SlackApi::new(&settings.slack.api_base, token, channel)
                .map_err(|e| invalid("SELFHEAL_SLACK_API_BASE", e))?;
        }
        Capability::SlackApprovals => {
            // Approvers may come from each service's stored settings, so an empty global list is
            // not a misconfiguration by itself.
            if present(&secrets.slack_signing_secret).is_none() {
                // The callback has a 503 answer for this (see PagerDutyWebhook); the approval
                // step cannot work without it (the secret keys approval ids).
                if function != Function::SlackCallback {
                    return Err(secret_key("slack_signing_secret"));
                }
                tracing::error!(
                    function = f,
                    missing_secret_key = "slack_signing_secret",
                    "no signing secret yet: clicks are answered 503 until it is set"
                );
            }
        }
        Capability::Senso => {
            let key = present(&secrets.senso_api_key).ok_or_else(|| secret_key("senso_api_key"))?;
            senso::SensoKb::new(&settings.senso.api_base, key, settings.senso.api.clone())
                .map_err(|e| invalid("SELFHEAL_SENSO_API_BASE", e))?;
        }
        Capability::Anthropic => {
            let key = present(&secrets.anthropic_api_key).ok_or_else(|| secret_key("anthropic_api_key"))?;
            let a = &settings.anthropic;
            anthropic::AnthropicPlanner::new(&a.api_base, key, &a.model, a.max_tokens)
                .map_err(|e| invalid("SELFHEAL_ANTHROPIC_API_BASE", e))?;
        }
        // Optional: a missing key leaves the rules' reading (the reader is `Unconfigured`); a
        // key with an unusable API base is still a configuration error.
        Capability::NoteModel => {
            if let Some(key) = present(&secrets.anthropic_api_key) {
                let a = &settings.anthropic;
                anthropic::AnthropicNoteReader::new(&a.api_base, key, &a.model)
                    .map_err(|e| invalid("SELFHEAL_ANTHROPIC_API_BASE", e))?;
            }
        }
        // Switched off, the fallback calls nothing.
        Capability::BedrockNoteModel if !settings.notes.model_fallback => {}
        // IAM-signed: nothing secret to check, but the model the grant names must be set. Not
        // optional for the note fallback: it needs no key on Bedrock, so it is on unless
        // `notes.model_fallback` turns it off.
        Capability::Bedrock | Capability::BedrockNoteModel => check_bedrock(settings).map_err(|e| match e {
            BedrockSetting::ModelId => setting("SELFHEAL_BEDROCK_MODEL_ID"),
            BedrockSetting::Invalid(name, e) => invalid(name, e),
        })?,
        Capability::Coder => {
            let token = present(&secrets.coder_session_token).ok_or_else(|| secret_key("coder_session_token"))?;
            let base = non_empty(&settings.coder.api_base).ok_or_else(|| setting("SELFHEAL_CODER_API_BASE"))?;
            let template = non_empty(&settings.coder.template_version_id)
                .map(|v| coder::TemplateRef::Version(v.to_string()))
                .or_else(|| non_empty(&settings.coder.template_id).map(|t| coder::TemplateRef::Template(t.to_string())))
                .ok_or_else(|| setting("SELFHEAL_CODER_TEMPLATE_VERSION_ID"))?;
            coder::CoderApi::new(base, token, &settings.coder.user, template)
                .map_err(|e| invalid("SELFHEAL_CODER_API_BASE", e))?;
        }
        #[cfg(feature = "browser")]
        Capability::Browser if embedded_browser(settings) => {
            embedded_browser::EmbeddedLightpanda::new(&embedded_browser::configured_bin(), 1)
                .map_err(|e| invalid("SELFHEAL_LIGHTPANDA_BIN", e))?;
        }
        #[cfg(feature = "browser")]
        Capability::Browser => {
            lightpanda::LightpandaBrowser::new(&settings.browser.endpoint, present(&secrets.lightpanda_token))
                .map_err(|e| invalid("SELFHEAL_BROWSER_ENDPOINT", e))?;
        }
        #[cfg(not(feature = "browser"))]
        Capability::Browser => {
            return Err(invalid(
                "SELFHEAL_BROWSER_ENDPOINT",
                ClientError::Invalid {
                    service: "browser",
                    detail: "this binary was built without the browser feature".into(),
                },
            ));
        }
    }
    Ok(())
}

/// What is wrong with the Bedrock settings.
enum BedrockSetting {
    ModelId,
    Invalid(&'static str, ClientError),
}

fn check_bedrock(settings: &Settings) -> Result<(), BedrockSetting> {
    if settings.bedrock.model_id.trim().is_empty() {
        return Err(BedrockSetting::ModelId);
    }
    bedrock_adapters_build(settings)
}

#[cfg(feature = "bedrock")]
fn bedrock_adapters_build(settings: &Settings) -> Result<(), BedrockSetting> {
    let b = &settings.bedrock;
    let runtime = bedrock_runtime(settings).map_err(|e| BedrockSetting::Invalid("SELFHEAL_BEDROCK_ENDPOINT_URL", e))?;
    bedrock::BedrockPlanner::new(runtime, &b.model_id, b.max_tokens)
        .map_err(|e| BedrockSetting::Invalid("SELFHEAL_BEDROCK_MODEL_ID", e))?;
    Ok(())
}

#[cfg(not(feature = "bedrock"))]
fn bedrock_adapters_build(_: &Settings) -> Result<(), BedrockSetting> {
    Err(BedrockSetting::Invalid(
        "SELFHEAL_PLANNER_PROVIDER",
        ClientError::Invalid { service: "bedrock", detail: "this binary was built without the bedrock feature".into() },
    ))
}

/// [`build_deps`] for a deployed function: fails, naming what to set, when the settings or the
/// secrets lack anything [`Function::needs`] requires.
pub fn build_deps_for(
    function: Function,
    settings: Settings,
    secrets: impl Into<SecretsHandle>,
    store: Arc<dyn IncidentStore>,
    orchestrator: Arc<dyn Orchestrator>,
    clock: Arc<dyn Clock>,
) -> Result<Deps, WiringError> {
    let secrets: SecretsHandle = secrets.into();
    check_needs(function, &settings, &secrets.snapshot())?;
    Ok(build_deps(settings, secrets, store, orchestrator, clock))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::env_map;

    const ENV: &[(&str, &str)] = &[
        ("SELFHEAL_TABLE_NAME", "incidents"),
        ("SELFHEAL_STATE_MACHINE_ARN", "arn:aws:states:us-east-1:123456789012:stateMachine:selfheal-incident"),
        ("SELFHEAL_INVESTIGATOR_IDS", "PCLERIC"),
        ("SELFHEAL_SLACK_CHANNEL", "C123"),
        ("SELFHEAL_SLACK_APPROVERS", "U1"),
        ("SELFHEAL_CODER_API_BASE", "https://coder.example.com"),
        ("SELFHEAL_CODER_TEMPLATE_VERSION_ID", "tv-1"),
        ("SELFHEAL_BROWSER_ENDPOINT", "ws://127.0.0.1:9222/"),
    ];

    fn settings(overrides: &[(&'static str, &'static str)]) -> Settings {
        let mut env: Vec<(&str, &str)> =
            ENV.iter().filter(|(k, _)| !overrides.iter().any(|(o, _)| o == k)).copied().collect();
        env.extend(overrides.iter().filter(|(_, v)| !v.is_empty()).copied());
        Settings::from_sources(None, env_map(&env)).unwrap()
    }

    fn secrets() -> Secrets {
        Secrets::from_json(
            r#"{"pagerduty_webhook_secrets": ["whsec"], "pagerduty_api_token": "pd", "pagerduty_from_email": "sh@example.com",
                "senso_api_key": "senso", "anthropic_api_key": "sk-ant", "coder_session_token": "coder",
                "slack_bot_token": "xoxb", "slack_signing_secret": "sign"}"#,
        )
        .unwrap()
    }

    #[test]
    fn a_complete_deployment_passes_for_every_function() {
        for f in Function::ALL {
            check_needs(f, &settings(&[]), &secrets()).unwrap_or_else(|e| panic!("{f:?}: {e}"));
        }
    }

    #[test]
    fn a_missing_secret_is_named() {
        let mut s = secrets();
        s.anthropic_api_key = None;
        let err = check_needs(Function::Planner, &settings(&[]), &s).unwrap_err();
        assert_eq!(err.name(), "anthropic_api_key");
        assert_eq!(
            err.to_string(),
            "the planner function needs Anthropic: the secret key anthropic_api_key is missing or empty"
        );
        // The note parser's fallback is optional: cleric starts without the key.
        check_needs(Function::Cleric, &settings(&[]), &s).unwrap();
        // An empty value counts as missing: the approval step cannot key approval ids without
        // it, while the Slack callback starts and answers clicks 503 until it is set.
        s.slack_signing_secret = Some(SecretString::from(" ".to_string()));
        assert_eq!(check_needs(Function::Approval, &settings(&[]), &s).unwrap_err().name(), "slack_signing_secret");
        check_needs(Function::SlackCallback, &settings(&[]), &s).unwrap();
        // Likewise intake without a webhook secret: 503 to PagerDuty (retried), not a failed init.
        let mut s = secrets();
        s.pagerduty_webhook_secrets.clear();
        check_needs(Function::Intake, &settings(&[]), &s).unwrap();
        let mut s = secrets();
        s.pagerduty_from_email = Some("not-an-email".into());
        assert_eq!(check_needs(Function::PagerDuty, &settings(&[]), &s).unwrap_err().name(), "pagerduty_from_email");
    }

    #[test]
    fn with_bedrock_no_anthropic_key_is_needed_but_a_model_id_is() {
        let bedrock = |extra: &[(&'static str, &'static str)]| {
            let mut overrides = vec![("SELFHEAL_PLANNER_PROVIDER", "bedrock")];
            overrides.extend_from_slice(extra);
            settings(&overrides)
        };
        let mut s = secrets();
        s.anthropic_api_key = None;
        for f in Function::ALL {
            check_needs(f, &bedrock(&[]), &s).unwrap_or_else(|e| panic!("{f:?}: {e}"));
        }
        // The model the IAM grant names must be set; blank counts as missing.
        let err = check_needs(Function::Planner, &bedrock(&[("SELFHEAL_BEDROCK_MODEL_ID", " ")]), &s).unwrap_err();
        assert_eq!(err.name(), "SELFHEAL_BEDROCK_MODEL_ID");
        assert_eq!(err.to_string(), "the planner function needs Bedrock: set SELFHEAL_BEDROCK_MODEL_ID");
        // The note fallback needs no key on Bedrock, so it is checked like the planner.
        let err = check_needs(Function::Cleric, &bedrock(&[("SELFHEAL_BEDROCK_MODEL_ID", " ")]), &s).unwrap_err();
        assert_eq!(err.name(), "SELFHEAL_BEDROCK_MODEL_ID");
        let off = bedrock(&[("SELFHEAL_BEDROCK_MODEL_ID", " "), ("SELFHEAL_NOTES_MODEL_FALLBACK", "false")]);
        check_needs(Function::Cleric, &off, &s).unwrap();
        let err = check_needs(Function::Planner, &bedrock(&[("SELFHEAL_BEDROCK_ENDPOINT_URL", "bedrock:443")]), &s)
            .unwrap_err();
        assert!(matches!(err, WiringError::Invalid { name: "SELFHEAL_BEDROCK_ENDPOINT_URL", .. }), "{err}");
        // An empty endpoint (the template's default) is the Region's own.
        check_needs(Function::Planner, &bedrock(&[("SELFHEAL_BEDROCK_ENDPOINT_URL", "")]), &s).unwrap();
        let err = Settings::from_sources(None, env_map(&[("SELFHEAL_PLANNER_PROVIDER", "openai")])).unwrap_err();
        assert!(err.to_string().contains("openai"), "{err}");
    }

    #[test]
    fn an_invalid_browser_endpoint_fails_only_where_the_browser_is_needed() {
        let s = settings(&[("SELFHEAL_BROWSER_ENDPOINT", "lightpanda:9222")]);
        let err = check_needs(Function::Verify, &s, &secrets()).unwrap_err();
        assert!(matches!(err, WiringError::Invalid { name: "SELFHEAL_BROWSER_ENDPOINT", .. }), "{err}");
        assert!(err.to_string().contains("unsupported endpoint lightpanda:9222"), "{err}");
        check_needs(Function::Remediate, &s, &secrets()).unwrap();
    }

    #[test]
    fn missing_settings_are_named() {
        let cases: &[(Function, &'static str)] = &[
            (Function::Approval, "SELFHEAL_STATE_MACHINE_ARN"),
            (Function::Intake, "SELFHEAL_STATE_MACHINE_ARN"),
            (Function::Cleric, "SELFHEAL_TABLE_NAME"),
            (Function::Remediate, "SELFHEAL_CODER_TEMPLATE_VERSION_ID"),
            (Function::Remediate, "SELFHEAL_CODER_API_BASE"),
            (Function::PagerDuty, "SELFHEAL_SLACK_CHANNEL"),
            (Function::Intake, "SELFHEAL_INVESTIGATOR_IDS"),
        ];
        for (f, var) in cases {
            let err = check_needs(*f, &settings(&[(*var, "")]), &secrets()).unwrap_err();
            assert_eq!(err.name(), *var, "{f:?}: {err}");
            assert!(err.to_string().ends_with(&format!("set {var}")), "{err}");
        }
    }

    #[tokio::test]
    async fn strict_wiring_refuses_and_lenient_wiring_degrades() {
        let store: Arc<dyn IncidentStore> =
            Arc::new(crate::store::TableStore::new(crate::adapters::memory::MemoryTable::new()));
        let clock: Arc<dyn Clock> = Arc::new(SystemClock::real());
        let orchestrator: Arc<dyn Orchestrator> = Arc::new(Unconfigured("orchestrator"));
        let mut s = secrets();
        s.anthropic_api_key = None;
        let strict = build_deps_for(
            Function::Planner,
            settings(&[]),
            s.clone(),
            store.clone(),
            orchestrator.clone(),
            clock.clone(),
        );
        assert_eq!(strict.err().map(|e| e.name()), Some("anthropic_api_key"));
        // The local engine keeps running and says what is missing when the planner is called.
        let deps = build_deps(settings(&[]), s, store, orchestrator, clock);
        let request = PlanRequest::bare("t", "s", "r");
        let err = deps.planner.plan(&request).await.unwrap_err();
        assert!(err.to_string().contains("anthropic_api_key"), "{err}");
    }
}
