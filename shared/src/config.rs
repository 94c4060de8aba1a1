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

fn d_pagerduty_api() -> String {
    "https://api.pagerduty.com".into()
}
fn d_slack_api() -> String {
    "https://slack.com/api".into()
}
fn d_senso_api() -> String {
    "https://apiv2.senso.ai/api/v1".into()
}
fn d_anthropic_api() -> String {
    "https://api.anthropic.com".into()
}
fn d_model() -> String {
    "claude-sonnet-4-5".into()
}
fn d_max_tokens() -> u32 {
    4096
}
fn d_lightpanda() -> String {
    "ws://127.0.0.1:9222/".into()
}
fn d_me() -> String {
    "me".into()
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
#[serde(deny_unknown_fields)]
pub struct PagerDutySettings {
    #[serde(default = "d_pagerduty_api")]
    pub api_base: String,
    /// PagerDuty user ids whose notes count as investigator hypotheses (Cleric's user first).
    #[serde(default)]
    pub investigator_ids: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackSettings {
    #[serde(default = "d_slack_api")]
    pub api_base: String,
    pub channel: Option<String>,
    /// Slack user ids allowed to approve or reject plans.
    #[serde(default)]
    pub approvers: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensoSettings {
    #[serde(default = "d_senso_api")]
    pub api_base: String,
    #[serde(default = "d_senso_kind")]
    pub api: SensoApi,
}
fn d_senso_kind() -> SensoApi {
    SensoApi::Org
}

/// The investigator note parser.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotesSettings {
    /// Ask Claude for the root cause or confidence when the rules find none; its answer is kept
    /// only where the note's own text supports it (`SELFHEAL_NOTES_MODEL_FALLBACK`; default on).
    #[serde(default = "d_true")]
    pub model_fallback: bool,
}

fn d_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnthropicSettings {
    #[serde(default = "d_anthropic_api")]
    pub api_base: String,
    #[serde(default = "d_model")]
    pub model: String,
    #[serde(default = "d_max_tokens")]
    pub max_tokens: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoderSettings {
    pub api_base: Option<String>,
    #[serde(default = "d_me")]
    pub user: String,
    pub template_id: Option<String>,
    pub template_version_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrowserSettings {
    /// `ws://host:port/` (direct) or `http://host:port` (discovery through `/json/version`).
    #[serde(default = "d_lightpanda")]
    pub endpoint: String,
    #[serde(default = "d_concurrency")]
    pub max_concurrent_checks: usize,
}
fn d_concurrency() -> usize {
    8
}

/// Thresholds and switches of the confidence protocol.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PolicySettings {
    #[serde(default = "d_auto_conf")]
    pub auto_min_confidence: f64,
    #[serde(default = "d_auto_match")]
    pub auto_min_match: f64,
    #[serde(default = "d_low_match")]
    pub low_match: f64,
    #[serde(default = "d_escalate_conf")]
    pub escalate_below_confidence: f64,
    /// Services allowed for auto-execution (PagerDuty service ids or names); empty = none.
    #[serde(default)]
    pub auto_services: Vec<String>,
    #[serde(default = "d_budget")]
    pub autonomous_actions_per_service_per_hour: u32,
    #[serde(default)]
    pub shadow_mode: bool,
}
fn d_auto_conf() -> f64 {
    0.90
}
fn d_auto_match() -> f64 {
    0.85
}
fn d_low_match() -> f64 {
    0.50
}
fn d_escalate_conf() -> f64 {
    0.30
}
fn d_budget() -> u32 {
    3
}

impl Default for PolicySettings {
    fn default() -> Self {
        Self {
            auto_min_confidence: d_auto_conf(),
            auto_min_match: d_auto_match(),
            low_match: d_low_match(),
            escalate_below_confidence: d_escalate_conf(),
            auto_services: Vec::new(),
            autonomous_actions_per_service_per_hour: d_budget(),
            shadow_mode: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutSettings {
    #[serde(default = "d_hyp")]
    pub hypothesis_secs: u64,
    #[serde(default = "d_appr")]
    pub approval_secs: u64,
    #[serde(default = "d_stab")]
    pub stability_window_secs: u64,
    /// Wait between Coder workspace polls, and how many polls before giving up.
    #[serde(default = "d_poll")]
    pub poll_interval_secs: u64,
    #[serde(default = "d_max_polls")]
    pub max_polls: u32,
    /// Per-attempt timeout of every SaaS API call, overriding each client's default (PagerDuty and
    /// Slack 10 s, Coder 15 s, Senso 30 s, Anthropic 90 s).
    #[serde(default)]
    pub api_request_ms: Option<u64>,
}
fn d_poll() -> u64 {
    15
}
fn d_max_polls() -> u32 {
    40
}
fn d_hyp() -> u64 {
    1800
}
fn d_appr() -> u64 {
    3600
}
fn d_stab() -> u64 {
    86_400
}

/// Limits of `selfheal serve`'s HTTP server (API Gateway enforces its own on AWS). They bound
/// what a slow or silent client can hold: a connection slot, a task, a buffer.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// From connection start (or the end of the last response) until the request's headers are
    /// complete; also how long an idle keep-alive connection stays open. PagerDuty and Slack
    /// send their headers at once.
    #[serde(default = "d_header_read_ms")]
    pub header_read_timeout_ms: u64,
    /// From the end of the headers until the whole body has arrived (bodies are at most 256 KB).
    #[serde(default = "d_body_read_ms")]
    pub body_read_timeout_ms: u64,
    /// From the complete request until the answer; a handler still running then gets a 503
    /// (retry later) while it finishes in the background. PagerDuty waits 5 s, Slack 3 s.
    #[serde(default = "d_request_ms")]
    pub request_timeout_ms: u64,
    /// Open connections; one more is answered 503 and closed at once.
    #[serde(default = "d_max_connections")]
    pub max_connections: usize,
}
fn d_header_read_ms() -> u64 {
    5_000
}
fn d_body_read_ms() -> u64 {
    10_000
}
fn d_request_ms() -> u64 {
    10_000
}
fn d_max_connections() -> usize {
    256
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            header_read_timeout_ms: d_header_read_ms(),
            body_read_timeout_ms: d_body_read_ms(),
            request_timeout_ms: d_request_ms(),
            max_connections: d_max_connections(),
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
    #[serde(default = "empty_table")]
    pub pagerduty: PagerDutySettings,
    #[serde(default = "empty_table")]
    pub slack: SlackSettings,
    #[serde(default = "empty_table")]
    pub senso: SensoSettings,
    #[serde(default = "empty_table")]
    pub anthropic: AnthropicSettings,
    #[serde(default = "empty_table")]
    pub notes: NotesSettings,
    #[serde(default = "empty_table")]
    pub coder: CoderSettings,
    #[serde(default = "empty_table")]
    pub browser: BrowserSettings,
    #[serde(default = "empty_table")]
    pub policy: PolicySettings,
    #[serde(default = "empty_table")]
    pub timeouts: TimeoutSettings,
    /// `selfheal serve`'s HTTP limits.
    #[serde(default = "empty_table")]
    pub server: ServerSettings,
    /// Browser checks per service (keyed by PagerDuty service id or name).
    #[serde(default)]
    pub checks: std::collections::BTreeMap<String, Vec<crate::ports::CheckSpec>>,
}

fn empty_table<T: for<'de> Deserialize<'de>>() -> T {
    // Every section type has all-default fields, so an empty table always deserializes.
    T::deserialize(toml::Value::Table(toml::Table::new())).unwrap_or_else(|_| unreachable!("sections default"))
}

/// Environment variable → settings path. Lists are comma-separated.
pub const ENV_VARS: &[(&str, &str)] = &[
    ("SELFHEAL_TABLE_NAME", "table_name"),
    ("SELFHEAL_STATE_MACHINE_ARN", "state_machine_arn"),
    ("SELFHEAL_SECRET_ID", "secret_id"),
    ("SELFHEAL_SECRET_IDS", "secret_ids[]"),
    ("SELFHEAL_SECRETS_TTL_SECS", "secrets_ttl_secs#"),
    ("SELFHEAL_PAGERDUTY_API_BASE", "pagerduty.api_base"),
    ("SELFHEAL_INVESTIGATOR_IDS", "pagerduty.investigator_ids[]"),
    ("SELFHEAL_SLACK_API_BASE", "slack.api_base"),
    ("SELFHEAL_SLACK_CHANNEL", "slack.channel"),
    ("SELFHEAL_SLACK_APPROVERS", "slack.approvers[]"),
    ("SELFHEAL_SENSO_API_BASE", "senso.api_base"),
    ("SELFHEAL_SENSO_API", "senso.api"),
    ("SELFHEAL_ANTHROPIC_API_BASE", "anthropic.api_base"),
    ("SELFHEAL_ANTHROPIC_MODEL", "anthropic.model"),
    ("SELFHEAL_ANTHROPIC_MAX_TOKENS", "anthropic.max_tokens#"),
    ("SELFHEAL_NOTES_MODEL_FALLBACK", "notes.model_fallback?"),
    ("SELFHEAL_CODER_API_BASE", "coder.api_base"),
    ("SELFHEAL_CODER_USER", "coder.user"),
    ("SELFHEAL_CODER_TEMPLATE_ID", "coder.template_id"),
    ("SELFHEAL_CODER_TEMPLATE_VERSION_ID", "coder.template_version_id"),
    ("SELFHEAL_BROWSER_ENDPOINT", "browser.endpoint"),
    ("SELFHEAL_BROWSER_MAX_CONCURRENT_CHECKS", "browser.max_concurrent_checks#"),
    ("SELFHEAL_AUTO_MIN_CONFIDENCE", "policy.auto_min_confidence#"),
    ("SELFHEAL_AUTO_MIN_MATCH", "policy.auto_min_match#"),
    ("SELFHEAL_LOW_MATCH", "policy.low_match#"),
    ("SELFHEAL_ESCALATE_BELOW_CONFIDENCE", "policy.escalate_below_confidence#"),
    ("SELFHEAL_AUTO_SERVICES", "policy.auto_services[]"),
    ("SELFHEAL_AUTONOMOUS_ACTIONS_PER_HOUR", "policy.autonomous_actions_per_service_per_hour#"),
    ("SELFHEAL_SHADOW_MODE", "policy.shadow_mode?"),
    ("SELFHEAL_HYPOTHESIS_TIMEOUT_SECS", "timeouts.hypothesis_secs#"),
    ("SELFHEAL_APPROVAL_TIMEOUT_SECS", "timeouts.approval_secs#"),
    ("SELFHEAL_STABILITY_WINDOW_SECS", "timeouts.stability_window_secs#"),
    ("SELFHEAL_POLL_INTERVAL_SECS", "timeouts.poll_interval_secs#"),
    ("SELFHEAL_MAX_POLLS", "timeouts.max_polls#"),
    ("SELFHEAL_API_REQUEST_TIMEOUT_MS", "timeouts.api_request_ms#"),
    ("SELFHEAL_SERVER_HEADER_READ_TIMEOUT_MS", "server.header_read_timeout_ms#"),
    ("SELFHEAL_SERVER_BODY_READ_TIMEOUT_MS", "server.body_read_timeout_ms#"),
    ("SELFHEAL_SERVER_REQUEST_TIMEOUT_MS", "server.request_timeout_ms#"),
    ("SELFHEAL_SERVER_MAX_CONNECTIONS", "server.max_connections#"),
];

fn env_value(name: &str, raw: &str, kind: char) -> Result<toml::Value, ConfigError> {
    let invalid = |why: &str| ConfigError::Invalid { name: name.to_string(), why: why.to_string() };
    Ok(match kind {
        '[' => toml::Value::Array(
            raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| toml::Value::String(s.into())).collect(),
        ),
        '#' => {
            if let Ok(i) = raw.trim().parse::<i64>() {
                toml::Value::Integer(i)
            } else {
                toml::Value::Float(raw.trim().parse::<f64>().map_err(|_| invalid("expected a number"))?)
            }
        }
        '?' => toml::Value::Boolean(match raw.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => true,
            "0" | "false" | "no" | "off" | "" => false,
            _ => return Err(invalid("expected true or false")),
        }),
        _ => toml::Value::String(raw.to_string()),
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
        for (var, path) in ENV_VARS {
            let Some(raw) = env(var) else { continue };
            let (path, kind) = match path.chars().last() {
                Some(k @ ('[' | ']' | '#' | '?')) => {
                    (path.trim_end_matches(['[', ']', '#', '?']), if k == ']' { '[' } else { k })
                }
                _ => (*path, 's'),
            };
            let value = env_value(var, &raw, kind)?;
            let mut parts = path.split('.').peekable();
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
