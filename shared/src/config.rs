//! Typed configuration: non-secret settings from a TOML file and/or `SELFHEAL_*` environment
//! variables (read once at init), secrets from AWS Secrets Manager or a local TOML file.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("missing configuration: set {0}")]
    Missing(&'static str),
    #[error("invalid configuration {name}: {why}")]
    Invalid { name: String, why: String },
    #[error("cannot read {path}: {why}")]
    File { path: String, why: String },
    #[error("cannot load secrets: {0}")]
    Secrets(String),
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SensoApi {
    /// Current "Org API": `/org/search`, `/org/kb/raw`, `/org/content/{id}`.
    Org,
    /// Legacy "Developer API": `/search`, `/content/raw`, `/content/{id}`.
    Legacy,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PagerDutySettings {
    pub api_base: String,
    /// PagerDuty user ids whose notes count as investigator hypotheses (Cleric's user first).
    pub investigator_ids: Vec<String>,
}

impl Default for PagerDutySettings {
    fn default() -> Self {
        Self { api_base: "https://api.pagerduty.com".into(), investigator_ids: Vec::new() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlackSettings {
    pub api_base: String,
    pub channel: Option<String>,
    /// Slack user ids allowed to approve or reject plans.
    pub approvers: Vec<String>,
}

impl Default for SlackSettings {
    fn default() -> Self {
        Self { api_base: "https://slack.com/api".into(), channel: None, approvers: Vec::new() }
    }
}

/// The investigator note parser.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotesSettings {
    /// Ask Claude for the root cause or confidence when the rules find none; its answer is kept
    /// only where the note's own text supports it (`SELFHEAL_NOTES_MODEL_FALLBACK`; default on).
    pub model_fallback: bool,
}

impl Default for NotesSettings {
    fn default() -> Self {
        Self { model_fallback: true }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SensoSettings {
    pub api_base: String,
    pub api: SensoApi,
    /// The knowledge-base folder (Org API node id) runbooks are pushed into; empty: the root.
    pub runbooks_folder: String,
    /// The folder past resolutions are ingested into; empty: the root. Keep it apart from the
    /// runbooks' folder so people browsing the knowledge base see the two apart too.
    pub resolutions_folder: String,
}

impl Default for SensoSettings {
    fn default() -> Self {
        Self {
            api_base: "https://apiv2.senso.ai/api/v1".into(),
            api: SensoApi::Org,
            runbooks_folder: String::new(),
            resolutions_folder: String::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnthropicSettings {
    pub api_base: String,
    pub model: String,
    pub max_tokens: u32,
}

impl Default for AnthropicSettings {
    fn default() -> Self {
        Self { api_base: "https://api.anthropic.com".into(), model: "claude-sonnet-4-5".into(), max_tokens: 4096 }
    }
}

/// Where the planner and the note parser's model fallback reach Claude.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum ModelProvider {
    /// Anthropic's Messages API with an API key (the `anthropic` secret).
    #[default]
    Anthropic,
    /// Claude on Amazon Bedrock (`InvokeModel`), signed with the function's IAM role: no key.
    Bedrock,
}

impl ModelProvider {
    pub const ALL: [ModelProvider; 2] = [ModelProvider::Anthropic, ModelProvider::Bedrock];
}

/// The planner's model, also used by the note parser's fallback.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlannerSettings {
    /// `anthropic` (default) or `bedrock` (`SELFHEAL_PLANNER_PROVIDER`).
    pub provider: ModelProvider,
}

/// Claude on Amazon Bedrock, used when `planner.provider = "bedrock"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BedrockSettings {
    /// A Claude model id (`anthropic.claude-…`) or a cross-Region inference profile id
    /// (`us.anthropic.claude-…`, `eu.…`, `global.…`); the IAM grant is scoped to it.
    pub model_id: String,
    /// The Region to call; empty uses the SDK's own (`AWS_REGION` on Lambda).
    pub region: Option<String>,
    /// Another Bedrock Runtime endpoint (a VPC endpoint, a simulator); empty uses the Region's.
    pub endpoint_url: Option<String>,
    pub max_tokens: u32,
}

impl Default for BedrockSettings {
    fn default() -> Self {
        Self {
            model_id: "us.anthropic.claude-sonnet-4-5-20250929-v1:0".into(),
            region: None,
            endpoint_url: None,
            max_tokens: 4096,
        }
    }
}

impl BedrockSettings {
    /// The Region override, if one is set (blank counts as none).
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref().map(str::trim).filter(|r| !r.is_empty())
    }

    /// The endpoint override, if one is set (blank counts as none: the template passes its
    /// parameter's empty default through).
    pub fn endpoint_url(&self) -> Option<&str> {
        self.endpoint_url.as_deref().map(str::trim).filter(|u| !u.is_empty())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoderSettings {
    pub api_base: Option<String>,
    pub user: String,
    pub template_id: Option<String>,
    pub template_version_id: Option<String>,
}

impl Default for CoderSettings {
    fn default() -> Self {
        Self { api_base: None, user: "me".into(), template_id: None, template_version_id: None }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrowserSettings {
    /// `ws://host:port/` (direct) or `http://host:port` (discovery through `/json/version`).
    pub endpoint: String,
    pub max_concurrent_checks: usize,
}

impl Default for BrowserSettings {
    fn default() -> Self {
        Self { endpoint: "ws://127.0.0.1:9222/".into(), max_concurrent_checks: 8 }
    }
}

/// Thresholds and switches of the confidence protocol.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PolicySettings {
    pub auto_min_confidence: f64,
    pub auto_min_match: f64,
    pub low_match: f64,
    pub escalate_below_confidence: f64,
    /// Services allowed for auto-execution (PagerDuty service ids or names); empty = none.
    pub auto_services: Vec<String>,
    pub autonomous_actions_per_service_per_hour: u32,
    pub shadow_mode: bool,
}

impl Default for PolicySettings {
    fn default() -> Self {
        Self {
            auto_min_confidence: 0.90,
            auto_min_match: 0.85,
            low_match: 0.50,
            escalate_below_confidence: 0.30,
            auto_services: Vec::new(),
            autonomous_actions_per_service_per_hour: 3,
            shadow_mode: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeoutSettings {
    pub hypothesis_secs: u64,
    pub approval_secs: u64,
    pub stability_window_secs: u64,
    /// Wait between Coder workspace polls, and how many polls before giving up.
    pub poll_interval_secs: u64,
    pub max_polls: u32,
    /// Per-attempt timeout of every SaaS API call, overriding each client's default (PagerDuty and
    /// Slack 10 s, Coder 15 s, Senso 30 s, Anthropic and Bedrock 90 s).
    pub api_request_ms: Option<u64>,
}

impl Default for TimeoutSettings {
    fn default() -> Self {
        Self {
            hypothesis_secs: 1800,
            approval_secs: 3600,
            stability_window_secs: 86_400,
            poll_interval_secs: 15,
            max_polls: 40,
            api_request_ms: None,
        }
    }
}

/// Limits of `selfheal serve`'s HTTP server (API Gateway enforces its own on AWS). They bound
/// what a slow or silent client can hold: a connection slot, a task, a buffer.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// From connection start (or the end of the last response) until the request's headers are
    /// complete; also how long an idle keep-alive connection stays open. PagerDuty and Slack
    /// send their headers at once.
    pub header_read_timeout_ms: u64,
    /// From the end of the headers until the whole body has arrived (bodies are at most 256 KB).
    pub body_read_timeout_ms: u64,
    /// From the complete request until the answer; a handler still running then gets a 503
    /// (retry later) while it finishes in the background. PagerDuty waits 5 s, Slack 3 s.
    pub request_timeout_ms: u64,
    /// Open connections; one more is answered 503 and closed at once.
    pub max_connections: usize,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            header_read_timeout_ms: 5_000,
            body_read_timeout_ms: 10_000,
            request_timeout_ms: 10_000,
            max_connections: 256,
        }
    }
}

/// Every non-secret setting. Each field has a default except the deployment-specific ones, which
/// the code that needs them asks for through [`Settings::require`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub table_name: Option<String>,
    pub state_machine_arn: Option<String>,
    /// The one secret of stacks deployed before the per-integration split (`SELFHEAL_SECRET_ID`);
    /// still read, together with `secret_ids`.
    pub secret_id: Option<String>,
    /// The Secrets Manager secrets this process may read (`SELFHEAL_SECRET_IDS`, comma-separated
    /// ARNs or names): one per integration, and only those the function's work needs.
    #[serde(default)]
    pub secret_ids: Vec<String>,
    /// How long secrets read from Secrets Manager are used before being read again
    /// (`SELFHEAL_SECRETS_TTL_SECS`; default 300; 0 reads them on every use, for tests only).
    pub secrets_ttl_secs: Option<u64>,
    #[serde(default)]
    pub pagerduty: PagerDutySettings,
    #[serde(default)]
    pub slack: SlackSettings,
    #[serde(default)]
    pub senso: SensoSettings,
    #[serde(default)]
    pub planner: PlannerSettings,
    #[serde(default)]
    pub anthropic: AnthropicSettings,
    #[serde(default)]
    pub bedrock: BedrockSettings,
    #[serde(default)]
    pub notes: NotesSettings,
    #[serde(default)]
    pub coder: CoderSettings,
    #[serde(default)]
    pub browser: BrowserSettings,
    #[serde(default)]
    pub policy: PolicySettings,
    #[serde(default)]
    pub timeouts: TimeoutSettings,
    /// `selfheal serve`'s HTTP limits.
    #[serde(default)]
    pub server: ServerSettings,
    /// Browser checks per service (keyed by PagerDuty service id or name).
    #[serde(default)]
    pub checks: std::collections::BTreeMap<String, Vec<crate::ports::CheckSpec>>,
}

/// How an environment variable's text becomes a setting's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvKind {
    /// Taken as it is.
    Text,
    /// An integer or a decimal number.
    Number,
    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`; empty is false).
    Flag,
    /// Comma-separated; blanks around and between items are dropped.
    List,
}

/// One environment variable and the setting it overrides, named by its path in the TOML file
/// (`section.key`), so the file and the environment describe one shape.
#[derive(Debug, Clone, Copy)]
pub struct EnvVar {
    pub name: &'static str,
    pub setting: &'static str,
    pub kind: EnvKind,
}

impl EnvVar {
    const fn new(name: &'static str, setting: &'static str, kind: EnvKind) -> Self {
        Self { name, setting, kind }
    }
}

/// Every environment variable selfheal reads as a setting (Lambda has no settings file).
pub const ENV_VARS: &[EnvVar] = &[
    EnvVar::new("SELFHEAL_TABLE_NAME", "table_name", EnvKind::Text),
    EnvVar::new("SELFHEAL_STATE_MACHINE_ARN", "state_machine_arn", EnvKind::Text),
    EnvVar::new("SELFHEAL_SECRET_ID", "secret_id", EnvKind::Text),
    EnvVar::new("SELFHEAL_SECRET_IDS", "secret_ids", EnvKind::List),
    EnvVar::new("SELFHEAL_SECRETS_TTL_SECS", "secrets_ttl_secs", EnvKind::Number),
    EnvVar::new("SELFHEAL_PAGERDUTY_API_BASE", "pagerduty.api_base", EnvKind::Text),
    EnvVar::new("SELFHEAL_INVESTIGATOR_IDS", "pagerduty.investigator_ids", EnvKind::List),
    EnvVar::new("SELFHEAL_SLACK_API_BASE", "slack.api_base", EnvKind::Text),
    EnvVar::new("SELFHEAL_SLACK_CHANNEL", "slack.channel", EnvKind::Text),
    EnvVar::new("SELFHEAL_SLACK_APPROVERS", "slack.approvers", EnvKind::List),
    EnvVar::new("SELFHEAL_SENSO_API_BASE", "senso.api_base", EnvKind::Text),
    EnvVar::new("SELFHEAL_SENSO_API", "senso.api", EnvKind::Text),
    EnvVar::new("SELFHEAL_SENSO_RUNBOOKS_FOLDER", "senso.runbooks_folder", EnvKind::Text),
    EnvVar::new("SELFHEAL_SENSO_RESOLUTIONS_FOLDER", "senso.resolutions_folder", EnvKind::Text),
    EnvVar::new("SELFHEAL_PLANNER_PROVIDER", "planner.provider", EnvKind::Text),
    EnvVar::new("SELFHEAL_ANTHROPIC_API_BASE", "anthropic.api_base", EnvKind::Text),
    EnvVar::new("SELFHEAL_ANTHROPIC_MODEL", "anthropic.model", EnvKind::Text),
    EnvVar::new("SELFHEAL_ANTHROPIC_MAX_TOKENS", "anthropic.max_tokens", EnvKind::Number),
    EnvVar::new("SELFHEAL_BEDROCK_MODEL_ID", "bedrock.model_id", EnvKind::Text),
    EnvVar::new("SELFHEAL_BEDROCK_REGION", "bedrock.region", EnvKind::Text),
    EnvVar::new("SELFHEAL_BEDROCK_ENDPOINT_URL", "bedrock.endpoint_url", EnvKind::Text),
    EnvVar::new("SELFHEAL_BEDROCK_MAX_TOKENS", "bedrock.max_tokens", EnvKind::Number),
    EnvVar::new("SELFHEAL_NOTES_MODEL_FALLBACK", "notes.model_fallback", EnvKind::Flag),
    EnvVar::new("SELFHEAL_CODER_API_BASE", "coder.api_base", EnvKind::Text),
    EnvVar::new("SELFHEAL_CODER_USER", "coder.user", EnvKind::Text),
    EnvVar::new("SELFHEAL_CODER_TEMPLATE_ID", "coder.template_id", EnvKind::Text),
    EnvVar::new("SELFHEAL_CODER_TEMPLATE_VERSION_ID", "coder.template_version_id", EnvKind::Text),
    EnvVar::new("SELFHEAL_BROWSER_ENDPOINT", "browser.endpoint", EnvKind::Text),
    EnvVar::new("SELFHEAL_BROWSER_MAX_CONCURRENT_CHECKS", "browser.max_concurrent_checks", EnvKind::Number),
    EnvVar::new("SELFHEAL_AUTO_MIN_CONFIDENCE", "policy.auto_min_confidence", EnvKind::Number),
    EnvVar::new("SELFHEAL_AUTO_MIN_MATCH", "policy.auto_min_match", EnvKind::Number),
    EnvVar::new("SELFHEAL_LOW_MATCH", "policy.low_match", EnvKind::Number),
    EnvVar::new("SELFHEAL_ESCALATE_BELOW_CONFIDENCE", "policy.escalate_below_confidence", EnvKind::Number),
    EnvVar::new("SELFHEAL_AUTO_SERVICES", "policy.auto_services", EnvKind::List),
    EnvVar::new(
        "SELFHEAL_AUTONOMOUS_ACTIONS_PER_HOUR",
        "policy.autonomous_actions_per_service_per_hour",
        EnvKind::Number,
    ),
    EnvVar::new("SELFHEAL_SHADOW_MODE", "policy.shadow_mode", EnvKind::Flag),
    EnvVar::new("SELFHEAL_HYPOTHESIS_TIMEOUT_SECS", "timeouts.hypothesis_secs", EnvKind::Number),
    EnvVar::new("SELFHEAL_APPROVAL_TIMEOUT_SECS", "timeouts.approval_secs", EnvKind::Number),
    EnvVar::new("SELFHEAL_STABILITY_WINDOW_SECS", "timeouts.stability_window_secs", EnvKind::Number),
    EnvVar::new("SELFHEAL_POLL_INTERVAL_SECS", "timeouts.poll_interval_secs", EnvKind::Number),
    EnvVar::new("SELFHEAL_MAX_POLLS", "timeouts.max_polls", EnvKind::Number),
    EnvVar::new("SELFHEAL_API_REQUEST_TIMEOUT_MS", "timeouts.api_request_ms", EnvKind::Number),
    EnvVar::new("SELFHEAL_SERVER_HEADER_READ_TIMEOUT_MS", "server.header_read_timeout_ms", EnvKind::Number),
    EnvVar::new("SELFHEAL_SERVER_BODY_READ_TIMEOUT_MS", "server.body_read_timeout_ms", EnvKind::Number),
    EnvVar::new("SELFHEAL_SERVER_REQUEST_TIMEOUT_MS", "server.request_timeout_ms", EnvKind::Number),
    EnvVar::new("SELFHEAL_SERVER_MAX_CONNECTIONS", "server.max_connections", EnvKind::Number),
];

fn env_value(var: &EnvVar, raw: &str) -> Result<toml::Value, ConfigError> {
    let invalid = |why: &str| ConfigError::Invalid { name: var.name.to_string(), why: why.to_string() };
    Ok(match var.kind {
        EnvKind::List => toml::Value::Array(
            raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| toml::Value::String(s.into())).collect(),
        ),
        EnvKind::Number => {
            if let Ok(i) = raw.trim().parse::<i64>() {
                toml::Value::Integer(i)
            } else {
                toml::Value::Float(raw.trim().parse::<f64>().map_err(|_| invalid("expected a number"))?)
            }
        }
        EnvKind::Flag => toml::Value::Boolean(match raw.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => true,
            "0" | "false" | "no" | "off" | "" => false,
            _ => return Err(invalid("expected true or false")),
        }),
        EnvKind::Text => toml::Value::String(raw.to_string()),
    })
}

impl Settings {
    /// Settings from environment variables only (Lambda).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_sources(None, |k| std::env::var(k).ok())
    }

    /// A TOML file (optional) overlaid by environment variables (local engine).
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError::File { path: path.display().to_string(), why: e.to_string() })?;
                let value: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::File {
                    path: path.display().to_string(),
                    why: e.to_string(),
                })?;
                Some(value)
            }
            None => None,
        };
        Self::from_sources(table, |k| std::env::var(k).ok())
    }

    pub fn from_sources(file: Option<toml::Table>, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut root = file.unwrap_or_default();
        for var in ENV_VARS {
            let Some(raw) = env(var.name) else { continue };
            let value = env_value(var, &raw)?;
            let mut parts = var.setting.split('.').peekable();
            let mut table = &mut root;
            while let Some(part) = parts.next() {
                if parts.peek().is_none() {
                    table.insert(part.to_string(), value.clone());
                    break;
                }
                let entry = table.entry(part.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
                table = entry
                    .as_table_mut()
                    .ok_or_else(|| ConfigError::Invalid { name: part.to_string(), why: "expected a table".into() })?;
            }
        }
        if let Some(raw) = env("SELFHEAL_CHECKS_JSON").filter(|r| !r.trim().is_empty()) {
            let json: serde_json::Value = serde_json::from_str(&raw).map_err(|e| ConfigError::Invalid {
                name: "SELFHEAL_CHECKS_JSON".into(),
                why: format!("not JSON: {e}"),
            })?;
            let value = toml::Value::try_from(json)
                .map_err(|e| ConfigError::Invalid { name: "SELFHEAL_CHECKS_JSON".into(), why: e.to_string() })?;
            root.insert("checks".into(), value);
        }
        let settings = Settings::deserialize(toml::Value::Table(root))
            .map_err(|e| ConfigError::Invalid { name: "settings".into(), why: e.to_string() })?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let p = &self.policy;
        for (name, v) in [
            ("policy.auto_min_confidence", p.auto_min_confidence),
            ("policy.auto_min_match", p.auto_min_match),
            ("policy.low_match", p.low_match),
            ("policy.escalate_below_confidence", p.escalate_below_confidence),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(ConfigError::Invalid { name: name.into(), why: "must be within 0..=1".into() });
            }
        }
        if p.low_match > p.auto_min_match {
            return Err(ConfigError::Invalid {
                name: "policy.low_match".into(),
                why: "must not exceed policy.auto_min_match".into(),
            });
        }
        let srv = &self.server;
        for (name, v) in [
            ("server.header_read_timeout_ms", srv.header_read_timeout_ms),
            ("server.body_read_timeout_ms", srv.body_read_timeout_ms),
            ("server.request_timeout_ms", srv.request_timeout_ms),
            ("server.max_connections", srv.max_connections as u64),
        ] {
            // Zero would refuse every request (or, for a timeout, wait forever in some readers).
            if v == 0 {
                return Err(ConfigError::Invalid { name: name.into(), why: "must be at least 1".into() });
            }
        }
        if self.browser.max_concurrent_checks == 0 {
            return Err(ConfigError::Invalid {
                name: "browser.max_concurrent_checks".into(),
                why: "must be at least 1".into(),
            });
        }
        Ok(())
    }

    /// A deployment-specific setting that this process needs; the error names the variable.
    pub fn require<'a>(value: &'a Option<String>, env_name: &'static str) -> Result<&'a str, ConfigError> {
        value.as_deref().filter(|v| !v.trim().is_empty()).ok_or(ConfigError::Missing(env_name))
    }
}

/// Which secret keys belong to which integration. On AWS every integration has its own Secrets
/// Manager secret (template.yaml `<Integration>Secret`, a JSON object with these keys), so each
/// function is granted only the integrations its work calls; whoever fills the secrets reads this
/// table (or the README) to know which key goes where. Locally, one TOML file holds them all.
pub const SECRET_KEYS: &[(&str, &[&str])] = &[
    ("pagerduty", &["pagerduty_webhook_secrets", "pagerduty_api_token", "pagerduty_from_email"]),
    ("slack", &["slack_bot_token", "slack_signing_secret"]),
    ("senso", &["senso_api_key"]),
    ("anthropic", &["anthropic_api_key"]),
    ("coder", &["coder_session_token"]),
    ("lightpanda", &["lightpanda_token"]),
];

/// The template.yaml output naming each integration's secret (`<Integration>SecretArn`), for
/// tools that find a deployed stack's secrets.
pub const SECRET_OUTPUTS: &[(&str, &str)] = &[
    ("pagerduty", "PagerDutySecretArn"),
    ("slack", "SlackSecretArn"),
    ("senso", "SensoSecretArn"),
    ("anthropic", "AnthropicSecretArn"),
    ("coder", "CoderSecretArn"),
    ("lightpanda", "LightpandaSecretArn"),
];

/// The integration a secret key belongs to (`None` for keys selfheal does not read).
pub fn integration_of(key: &str) -> Option<&'static str> {
    SECRET_KEYS.iter().find(|(_, keys)| keys.contains(&key)).map(|(integration, _)| *integration)
}

/// The JSON document an integration's secret starts with: every key present and empty, so the
/// person filling it sees what belongs there (empty values count as not configured).
pub fn placeholder_json(integration: &str) -> Option<String> {
    let (_, keys) = SECRET_KEYS.iter().find(|(i, _)| *i == integration)?;
    let object: serde_json::Map<String, serde_json::Value> = keys
        .iter()
        .map(|k| {
            let empty = if *k == "pagerduty_webhook_secrets" { serde_json::json!([]) } else { serde_json::json!("") };
            ((*k).to_string(), empty)
        })
        .collect();
    Some(serde_json::Value::Object(object).to_string())
}

/// Every secret, merged from the integration secrets (Secrets Manager) or one TOML table
/// (local). Values are wrapped so `Debug` prints `[REDACTED]` and nothing can log them by
/// accident. Unknown keys are ignored (not refused), so a secret can carry extra keys such as the
/// one CloudFormation's GenerateSecretString adds. Empty values count as absent: the placeholder
/// documents start that way. [`SECRET_KEYS`] says which integration each field belongs to.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct Secrets {
    /// Every valid webhook subscription secret (several during rotation).
    #[serde(default)]
    pub pagerduty_webhook_secrets: Vec<SecretString>,
    pub pagerduty_api_token: Option<SecretString>,
    /// The `From` header on PagerDuty writes (not secret, but deployment-specific).
    pub pagerduty_from_email: Option<String>,
    pub senso_api_key: Option<SecretString>,
    pub anthropic_api_key: Option<SecretString>,
    pub coder_session_token: Option<SecretString>,
    pub slack_bot_token: Option<SecretString>,
    pub slack_signing_secret: Option<SecretString>,
    pub lightpanda_token: Option<SecretString>,
}

fn blank_to_none(s: &mut Option<SecretString>) {
    if s.as_ref().is_some_and(|v| v.expose_secret().trim().is_empty()) {
        *s = None;
    }
}

impl Secrets {
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        // serde_json errors quote input fragments; report only the position, never the text.
        serde_json::from_str::<Self>(text).map(Self::normalized).map_err(|e| {
            ConfigError::Secrets(format!(
                "secret is not the expected JSON object (line {}, column {})",
                e.line(),
                e.column()
            ))
        })
    }

    /// From an already parsed JSON object (several secrets merged into one). A value of the wrong
    /// type is reported by its key, never by its content.
    pub fn from_json_object(object: serde_json::Map<String, serde_json::Value>) -> Result<Self, ConfigError> {
        let bad_key = |object: &serde_json::Map<String, serde_json::Value>| {
            object
                .iter()
                .find(|(k, v)| {
                    let one = serde_json::Map::from_iter([((*k).clone(), (*v).clone())]);
                    serde_json::from_value::<Self>(serde_json::Value::Object(one)).is_err()
                })
                .map(|(k, _)| k.clone())
        };
        match serde_json::from_value::<Self>(serde_json::Value::Object(object.clone())) {
            Ok(s) => Ok(s.normalized()),
            Err(_) => Err(ConfigError::Secrets(match bad_key(&object) {
                Some(key) if key == "pagerduty_webhook_secrets" => {
                    "pagerduty_webhook_secrets must be a list of strings".to_string()
                }
                Some(key) => format!("{key} must be a string"),
                None => "secrets do not have the expected shape (see README)".to_string(),
            })),
        }
    }

    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let table: toml::Table =
            text.parse().map_err(|_| ConfigError::Secrets("secrets file is not valid TOML".into()))?;
        Self::deserialize(toml::Value::Table(table))
            .map(Self::normalized)
            .map_err(|_| ConfigError::Secrets("secrets file does not have the expected keys (see README)".into()))
    }

    /// Fetch one secret from AWS Secrets Manager, once (no cache; Lambda functions read theirs
    /// through [`crate::secrets::SecretsCache`]).
    pub async fn from_secrets_manager(
        client: &aws_sdk_secretsmanager::Client,
        secret_id: &str,
    ) -> Result<Self, ConfigError> {
        use crate::secrets::SecretSource;
        let text = client.secret_string(secret_id).await.map_err(|e| ConfigError::Secrets(e.to_string()))?;
        Self::from_json(text.expose_secret())
    }

    /// Empty strings (the placeholder documents) and blank list entries mean "not configured".
    fn normalized(mut self) -> Self {
        self.pagerduty_webhook_secrets.retain(|s| !s.expose_secret().trim().is_empty());
        for s in [
            &mut self.pagerduty_api_token,
            &mut self.senso_api_key,
            &mut self.anthropic_api_key,
            &mut self.coder_session_token,
            &mut self.slack_bot_token,
            &mut self.slack_signing_secret,
            &mut self.lightpanda_token,
        ] {
            blank_to_none(s);
        }
        if self.pagerduty_from_email.as_deref().is_some_and(|e| e.trim().is_empty()) {
            self.pagerduty_from_email = None;
        }
        self
    }

    /// Every configured secret value, for redaction checks.
    pub fn all_values(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.pagerduty_webhook_secrets.iter().map(|s| s.expose_secret()).collect();
        for s in [
            &self.pagerduty_api_token,
            &self.senso_api_key,
            &self.anthropic_api_key,
            &self.coder_session_token,
            &self.slack_bot_token,
            &self.slack_signing_secret,
            &self.lightpanda_token,
        ]
        .into_iter()
        .flatten()
        {
            v.push(s.expose_secret());
        }
        v.retain(|s| !s.is_empty());
        v
    }

    /// The webhook secrets to verify with; blank entries are not secrets and are left out.
    pub fn webhook_secret_bytes(&self) -> Vec<&[u8]> {
        self.pagerduty_webhook_secrets
            .iter()
            .map(|s| s.expose_secret())
            .filter(|s| !s.trim().is_empty())
            .map(str::as_bytes)
            .collect()
    }
}

/// A map of environment variables, for tests of [`Settings::from_sources`].
pub fn env_map(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    move |k| map.get(k).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_anything() {
        let s = Settings::from_sources(None, env_map(&[])).unwrap();
        assert_eq!(s.policy, PolicySettings::default());
        assert_eq!(s.timeouts.stability_window_secs, 86_400);
        assert_eq!(s.anthropic.model, "claude-sonnet-4-5");
        let err = Settings::require(&s.table_name, "SELFHEAL_TABLE_NAME").unwrap_err();
        assert_eq!(err.to_string(), "missing configuration: set SELFHEAL_TABLE_NAME");
    }

    #[test]
    fn env_overrides_file_and_parses_types() {
        let file: toml::Table = "table_name = \"from-file\"\n[policy]\nauto_min_match = 0.8\n".parse().unwrap();
        let env = env_map(&[
            ("SELFHEAL_TABLE_NAME", "from-env"),
            ("SELFHEAL_INVESTIGATOR_IDS", "PCLERIC1, PBOT2"),
            ("SELFHEAL_SHADOW_MODE", "true"),
            ("SELFHEAL_AUTO_MIN_CONFIDENCE", "0.95"),
            ("SELFHEAL_STABILITY_WINDOW_SECS", "60"),
        ]);
        let s = Settings::from_sources(Some(file), env).unwrap();
        assert_eq!(s.table_name.as_deref(), Some("from-env"));
        assert_eq!(s.pagerduty.investigator_ids, vec!["PCLERIC1", "PBOT2"]);
        assert!(s.policy.shadow_mode);
        assert_eq!(s.policy.auto_min_confidence, 0.95);
        assert_eq!(s.policy.auto_min_match, 0.8);
        assert_eq!(s.timeouts.stability_window_secs, 60);
    }

    #[test]
    fn server_limits_have_defaults_and_refuse_zero() {
        let s = Settings::from_sources(None, env_map(&[])).unwrap();
        assert_eq!(s.server, ServerSettings::default());
        let file: toml::Table = "[server]\nheader_read_timeout_ms = 750\nmax_connections = 8\n".parse().unwrap();
        let s = Settings::from_sources(Some(file), env_map(&[("SELFHEAL_SERVER_REQUEST_TIMEOUT_MS", "1500")])).unwrap();
        assert_eq!((s.server.header_read_timeout_ms, s.server.max_connections), (750, 8));
        assert_eq!((s.server.request_timeout_ms, s.server.body_read_timeout_ms), (1500, 10_000));
        let err = Settings::from_sources(None, env_map(&[("SELFHEAL_SERVER_MAX_CONNECTIONS", "0")])).unwrap_err();
        assert!(err.to_string().contains("server.max_connections"), "{err}");
        let file: toml::Table = "[server]\nslowloris = true\n".parse().unwrap();
        assert!(Settings::from_sources(Some(file), env_map(&[])).is_err());
    }

    #[test]
    fn invalid_values_name_the_variable() {
        let err = Settings::from_sources(None, env_map(&[("SELFHEAL_SHADOW_MODE", "perhaps")])).unwrap_err();
        assert!(err.to_string().contains("SELFHEAL_SHADOW_MODE"), "{err}");
        let err = Settings::from_sources(None, env_map(&[("SELFHEAL_AUTO_MIN_MATCH", "1.5")])).unwrap_err();
        assert!(err.to_string().contains("policy.auto_min_match"), "{err}");
        let file: toml::Table = "unknown_key = 1".parse().unwrap();
        assert!(Settings::from_sources(Some(file), env_map(&[])).is_err());
    }

    #[test]
    fn every_secret_key_belongs_to_exactly_one_integration() {
        let keys: Vec<&str> = SECRET_KEYS.iter().flat_map(|(_, k)| k.iter().copied()).collect();
        let mut unique = keys.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), keys.len(), "a key listed twice");
        // Every key of the table fills a field, and every field has a key in the table.
        let doc: serde_json::Map<String, serde_json::Value> = keys
            .iter()
            .map(|k| {
                let v =
                    if *k == "pagerduty_webhook_secrets" { serde_json::json!(["v"]) } else { serde_json::json!("v") };
                ((*k).to_string(), v)
            })
            .collect();
        let s = Secrets::from_json_object(doc).unwrap();
        assert_eq!(s.all_values().len(), 8);
        assert!(s.pagerduty_from_email.is_some());
        assert_eq!(integration_of("slack_signing_secret"), Some("slack"));
        assert_eq!(integration_of("placeholder"), None);
        for (integration, keys) in SECRET_KEYS {
            let placeholder: serde_json::Value = serde_json::from_str(&placeholder_json(integration).unwrap()).unwrap();
            assert_eq!(placeholder.as_object().unwrap().len(), keys.len());
            let s = Secrets::from_json(&placeholder.to_string()).unwrap();
            assert!(
                s.all_values().is_empty() && s.pagerduty_from_email.is_none(),
                "{integration}: placeholders are empty"
            );
        }
    }

    #[test]
    fn secrets_never_print() {
        let s = Secrets::from_json(
            r#"{"pagerduty_webhook_secrets":["whsec-AAAA"],"anthropic_api_key":"sk-ant-BBBB","slack_signing_secret":"CCCC"}"#,
        )
        .unwrap();
        let debug = format!("{s:?}");
        for v in ["whsec-AAAA", "sk-ant-BBBB", "CCCC"] {
            assert!(!debug.contains(v), "{debug}");
        }
        assert_eq!(s.all_values().len(), 3);
        // A malformed secret document must not echo its content in the error.
        let err = Secrets::from_json(r#"{"anthropic_api_key": sk-ant-LEAK}"#).unwrap_err().to_string();
        assert!(!err.contains("LEAK"), "{err}");
        // Extra keys (e.g. from GenerateSecretString) are ignored.
        assert!(Secrets::from_json(r#"{"generated": "x", "slack_bot_token": "xoxb-1"}"#).is_ok());
    }
}
