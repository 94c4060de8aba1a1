//! Runbooks and their typed action catalog.
//!
//! A runbook is Markdown with TOML front matter between `+++` lines:
//!
//! ```text
//! +++
//! id = "k8s-rollback"
//! title = "Kubernetes: roll back a bad deploy"
//! services = ["checkout"]
//! error_tags = ["OOMKilled"]
//!
//! [[actions]]
//! name = "k8s.rollout_undo"
//! description = "Roll the deployment back"
//! risk = "medium"
//! script = "kubectl -n {{namespace}} rollout undo deployment/{{deployment}}"
//! [actions.parameters.namespace]
//! type = "string"
//! source = "service"          # from the service's settings: parameters.namespace
//! key = "namespace"
//! [actions.parameters.deployment]
//! type = "string"
//! source = "service"
//! key = "deployment"
//! +++
//! # Markdown body …
//! ```
//!
//! Every parameter declares where its value comes from (`source`):
//! - `choice`: the model picks from a closed set the runbook declares (a string `enum`, an
//!   integer between `minimum` and `maximum`, a boolean);
//! - `service`: the operator's value in the service's settings (`parameters.<key>`);
//! - `incident`: the incident's PagerDuty metadata (`key` is one of [`INCIDENT_FIELDS`]);
//! - `model`: free text (or an integer) the model chose. Text the model read can steer it, so a
//!   plan with such a value only ever goes to a person, who sees it highlighted.
//!
//! The script is rendered once, at planning, from the template and the resolved values
//! ([`resolve_and_render`]); string values are restricted to a safe character set *and*
//! single-quoted, so no value ever becomes shell syntax. The execution gate renders again from
//! the catalog as it is then and refuses any difference.

use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::path::Path;

use crate::domain::{ActionName, Incident, RiskLevel, RunbookId, Urgency, canonical_json, shell_safe_value};
use crate::ports::CatalogAction;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RunbookError {
    #[error("{file}: {why}")]
    Invalid { file: String, why: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FrontMatter {
    id: String,
    title: String,
    #[serde(default)]
    services: Vec<String>,
    #[serde(default)]
    error_tags: Vec<String>,
    #[serde(default)]
    actions: Vec<ActionSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionSpec {
    name: String,
    description: String,
    #[serde(default = "medium")]
    risk: RiskLevel,
    script: String,
    #[serde(default)]
    parameters: BTreeMap<String, ParamSpec>,
}

fn medium() -> RiskLevel {
    RiskLevel::Medium
}

/// Where a parameter's value comes from.
#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ParamSource {
    /// The model picks from the closed set the runbook declares.
    Choice,
    /// The service's settings, `parameters.<key>`.
    Service,
    /// The incident's PagerDuty metadata, field `<key>`.
    Incident,
    /// Free text (or a number) the model chose: approval only.
    Model,
}

impl ParamSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ParamSource::Choice => "choice",
            ParamSource::Service => "service",
            ParamSource::Incident => "incident",
            ParamSource::Model => "model",
        }
    }
}

/// The incident metadata a parameter may take (`source = "incident"`, `key = …`). The title is
/// not among them: it is free text from the alert.
pub const INCIDENT_FIELDS: &[&str] = &["incident_id", "incident_number", "service_id", "service_name", "urgency"];

/// Parameter schema (a JSON Schema subset plus where the value comes from).
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    #[serde(rename = "type")]
    pub kind: ParamType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "maxLength")]
    pub max_length: Option<usize>,
    #[serde(default, rename = "enum", skip_serializing_if = "Option::is_none")]
    pub allowed: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Where the value comes from. A schema stored without one (written before sources
    /// existed) counts as `model`, the least trusted; runbook files must declare it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<ParamSource>,
    /// The setting (`service`) or incident field (`incident`) the value is read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl ParamSpec {
    pub fn source(&self) -> ParamSource {
        self.source.unwrap_or(ParamSource::Model)
    }

    /// Why this declaration cannot be used, if it cannot.
    fn check(&self, name: &str) -> Result<(), String> {
        let source = self
            .source
            .ok_or_else(|| format!("parameter {name} declares no source (choice, service, incident or model)"))?;
        let key_ok = |k: &Option<String>| {
            k.as_deref().is_some_and(|k| {
                !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            })
        };
        match source {
            ParamSource::Choice => match self.kind {
                ParamType::String if self.allowed.as_ref().is_none_or(Vec::is_empty) => {
                    return Err(format!("parameter {name}: a string choice needs an enum of allowed values"));
                }
                ParamType::Integer if self.minimum.is_none() || self.maximum.is_none() => {
                    return Err(format!("parameter {name}: an integer choice needs a minimum and a maximum"));
                }
                _ => {}
            },
            ParamSource::Service if !key_ok(&self.key) => {
                return Err(format!("parameter {name}: source service needs key = \"<setting name>\" (snake_case)"));
            }
            ParamSource::Incident if !self.key.as_deref().is_some_and(|k| INCIDENT_FIELDS.contains(&k)) => {
                return Err(format!(
                    "parameter {name}: source incident needs key = one of {}",
                    INCIDENT_FIELDS.join(", ")
                ));
            }
            ParamSource::Model | ParamSource::Service | ParamSource::Incident => {}
        }
        if source != ParamSource::Choice && self.allowed.is_some() {
            return Err(format!("parameter {name}: an enum makes it source = \"choice\""));
        }
        if let Some(allowed) = &self.allowed
            && let Some(bad) = allowed.iter().find(|a| !shell_safe_value(a))
        {
            return Err(format!("parameter {name}: enum value {bad:?} has characters a script must not receive"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    Integer,
    String,
    Boolean,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Runbook {
    pub id: RunbookId,
    pub title: String,
    pub services: Vec<String>,
    pub error_tags: Vec<String>,
    pub body: String,
    pub actions: Vec<CatalogAction>,
}

impl Runbook {
    /// The text ingested into the knowledge base: metadata rendered into the text so search
    /// sees it, then the body. `runbook-id:` lets search hits be mapped back to the catalog.
    pub fn knowledge_text(&self) -> String {
        let actions: Vec<String> = self.actions.iter().map(|a| format!("- `{}`: {}", a.name, a.description)).collect();
        format!(
            "runbook-id: {}\nservices: {}\nerror tags: {}\n\n# {}\n\n{}\n\n## Actions\n{}\n",
            self.id,
            self.services.join(", "),
            self.error_tags.join(", "),
            self.title,
            self.body.trim(),
            actions.join("\n")
        )
    }
}

pub fn parse_runbook(file: &str, text: &str) -> Result<Runbook, RunbookError> {
    let invalid = |why: String| RunbookError::Invalid { file: file.to_string(), why };
    let rest = text.trim_start_matches('\u{feff}').trim_start();
    let rest = rest.strip_prefix("+++").ok_or_else(|| invalid("must start with TOML front matter (+++)".into()))?;
    let end = rest.find("\n+++").ok_or_else(|| invalid("front matter is not closed with +++".into()))?;
    let front: FrontMatter = toml::from_str(&rest[..end]).map_err(|e| invalid(format!("front matter: {e}")))?;
    let body = rest[end + 4..].trim_start_matches(['\r', '\n']).to_string();
    let id = RunbookId::parse(&front.id).map_err(|e| invalid(e.to_string()))?;
    let mut actions = Vec::new();
    for a in front.actions {
        let name = ActionName::parse(&a.name).map_err(|e| invalid(e.to_string()))?;
        // Every placeholder must be a declared parameter and vice versa.
        let placeholders = placeholders(&a.script);
        for p in &placeholders {
            if !a.parameters.contains_key(p) {
                return Err(invalid(format!("action {name}: {{{{{p}}}}} is not a declared parameter")));
            }
        }
        for (p, spec) in &a.parameters {
            if !placeholders.contains(p) {
                return Err(invalid(format!("action {name}: parameter {p} is not used by the script")));
            }
            if !p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
                return Err(invalid(format!("action {name}: parameter name {p} must be lowercase snake_case")));
            }
            spec.check(p).map_err(|why| invalid(format!("action {name}: {why}")))?;
        }
        let mut properties = Map::new();
        for (k, spec) in &a.parameters {
            properties.insert(k.clone(), serde_json::to_value(spec).unwrap_or(Value::Null));
        }
        let required: Vec<&String> = a.parameters.keys().collect();
        actions.push(CatalogAction {
            runbook_id: id.clone(),
            name,
            description: a.description,
            parameters: json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false}),
            script_template: a.script,
            risk: a.risk,
            ineffective_count: 0,
            effective_count: 0,
        });
    }
    Ok(Runbook { id, title: front.title, services: front.services, error_tags: front.error_tags, body, actions })
}

/// Every runbook (`*.md`) in a directory, sorted by file name.
pub fn load_dir(dir: &Path) -> Result<Vec<Runbook>, RunbookError> {
    let invalid = |why: String| RunbookError::Invalid { file: dir.display().to_string(), why };
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| invalid(e.to_string()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).map_err(|e| invalid(e.to_string()))?;
            parse_runbook(&p.display().to_string(), &text)
        })
        .collect()
}

fn placeholders(template: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        let name = after[..end].trim().to_string();
        if !out.contains(&name) {
            out.push(name);
        }
        rest = &after[end + 2..];
    }
    out
}

/// The version of a catalog action: a hash of everything that decides what its script does
/// (template, parameter declarations, declared risk). Outcome counters are not part of it.
pub fn catalog_version(action: &CatalogAction) -> String {
    let versioned = json!({
        "runbook": action.runbook_id,
        "action": action.name,
        "script": action.script_template,
        "parameters": action.parameters,
        "risk": action.risk,
    });
    crate::sha256_hex(canonical_json(&versioned).as_bytes())
}

/// The parameter declarations of an action, by name.
pub fn param_specs(action: &CatalogAction) -> Result<BTreeMap<String, ParamSpec>, ParamError> {
    let props = action.parameters.get("properties").and_then(Value::as_object).cloned().unwrap_or_default();
    props
        .into_iter()
        .map(|(name, spec)| {
            let parsed: ParamSpec = serde_json::from_value(spec)
                .map_err(|e| ParamError::BadSchema { name: name.clone(), why: e.to_string() })?;
            Ok((name, parsed))
        })
        .collect()
}

/// The parameters the model is asked for (choice and model ones), as the JSON Schema the
/// planner sees: values read from the service or the incident are ours to fill in.
pub fn model_parameters_schema(action: &CatalogAction) -> Value {
    let mut properties = Map::new();
    for (name, spec) in param_specs(action).unwrap_or_default() {
        if matches!(spec.source(), ParamSource::Choice | ParamSource::Model) {
            let mut shown = serde_json::to_value(&spec).unwrap_or(Value::Null);
            if let Some(o) = shown.as_object_mut() {
                o.remove("key");
            }
            properties.insert(name, shown);
        }
    }
    let required: Vec<String> = properties.keys().cloned().collect();
    json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false})
}

/// The values of `parameters` the model chose (`choice` and `model` sources): what a resolved
/// plan's proposal was, so it can be resolved again against the settings as they are now.
pub fn model_values(action: &CatalogAction, parameters: &Value) -> Value {
    let specs = param_specs(action).unwrap_or_default();
    let Some(given) = parameters.as_object() else { return parameters.clone() };
    let kept: Map<String, Value> = given
        .iter()
        .filter(|(k, _)| specs.get(*k).is_none_or(|s| matches!(s.source(), ParamSource::Choice | ParamSource::Model)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Value::Object(kept)
}

/// Why parameters cannot be resolved. Names are the runbook's (or the model's, clipped);
/// values never appear, since they may be hostile text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("parameters must be a JSON object")]
    NotAnObject,
    #[error("unknown parameter {0:?}")]
    Unknown(String),
    #[error("missing parameter {0}")]
    Missing(String),
    #[error("{name} must be {expected}")]
    WrongType { name: String, expected: &'static str },
    #[error("{name} is outside its allowed range")]
    OutOfRange { name: String },
    #[error("{name} must be one of {allowed}")]
    NotAllowed { name: String, allowed: String },
    #[error("{name} is empty, longer than {max} characters, or has characters a script must not receive")]
    Unsafe { name: String, max: usize },
    #[error(
        "{name} comes from the service's settings (parameters.{key}), which service {service} does not have: add it \
         with `selfheal services push`"
    )]
    NoServiceSetting { name: String, key: String, service: String },
    #[error("{name} comes from the {origin} and may not be chosen by the model (it proposed another value)")]
    NotTheModels { name: String, origin: &'static str },
    #[error("bad schema for {name}: {why}")]
    BadSchema { name: String, why: String },
}

/// What a parameter of `source = "service"` or `"incident"` is read from.
#[derive(Debug, Clone, Copy)]
pub struct ParamContext<'a> {
    pub incident: &'a Incident,
    /// The service's `parameters` (empty when it has no stored settings).
    pub service_parameters: &'a BTreeMap<String, String>,
}

/// A catalog action ready to run: the resolved values, the exact script and what it was
/// rendered from.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub parameters: Map<String, Value>,
    pub script: String,
    pub catalog_version: String,
    /// Parameters whose value is free text the model chose.
    pub model_chosen: Vec<String>,
}

fn clip_name(name: &str) -> String {
    name.chars().filter(|c| !c.is_control()).take(64).collect()
}

fn incident_field(incident: &Incident, field: &str) -> Option<Value> {
    match field {
        "incident_id" => Some(json!(incident.id.as_str())),
        "incident_number" => incident.number.map(|n| json!(n)),
        "service_id" => Some(json!(incident.service.id.as_str())),
        "service_name" => Some(json!(incident.service.name.as_str())),
        "urgency" => Some(json!(match incident.urgency {
            Urgency::High => "high",
            Urgency::Low => "low",
        })),
        _ => None,
    }
}

/// Check one value against its declaration.
fn check_value(name: &str, spec: &ParamSpec, v: &Value) -> Result<(), ParamError> {
    match spec.kind {
        ParamType::Integer => {
            let n = v.as_i64().ok_or_else(|| ParamError::WrongType { name: name.into(), expected: "an integer" })?;
            if spec.minimum.is_some_and(|m| n < m) || spec.maximum.is_some_and(|m| n > m) {
                return Err(ParamError::OutOfRange { name: name.into() });
            }
        }
        ParamType::Boolean => {
            v.as_bool().ok_or_else(|| ParamError::WrongType { name: name.into(), expected: "true or false" })?;
        }
        ParamType::String => {
            let s = v.as_str().ok_or_else(|| ParamError::WrongType { name: name.into(), expected: "a string" })?;
            if let Some(allowed) = &spec.allowed
                && !allowed.iter().any(|a| a == s)
            {
                return Err(ParamError::NotAllowed { name: name.into(), allowed: allowed.join(", ") });
            }
            let max = spec.max_length.unwrap_or(128).min(128);
            if s.chars().count() > max || !shell_safe_value(s) {
                return Err(ParamError::Unsafe { name: name.into(), max });
            }
        }
    }
    Ok(())
}

/// Resolve every parameter from where its declaration says it comes from, check it, and render
/// the script. `proposed` is what the model proposed; it may only supply `choice` and `model`
/// values (repeating a service or incident value exactly is tolerated, anything else refused).
pub fn resolve_and_render(
    action: &CatalogAction,
    proposed: &Value,
    ctx: &ParamContext<'_>,
) -> Result<Rendered, ParamError> {
    let given = proposed.as_object().ok_or(ParamError::NotAnObject)?;
    let specs = param_specs(action)?;
    if let Some(unknown) = given.keys().find(|k| !specs.contains_key(*k)) {
        return Err(ParamError::Unknown(clip_name(unknown)));
    }
    let mut values = Map::new();
    let mut model_chosen = Vec::new();
    for (name, spec) in &specs {
        let source = spec.source();
        let value = match source {
            ParamSource::Choice | ParamSource::Model => {
                given.get(name).cloned().ok_or_else(|| ParamError::Missing(name.clone()))?
            }
            ParamSource::Service => {
                let key = spec.key.clone().unwrap_or_default();
                let raw = ctx.service_parameters.get(&key).ok_or_else(|| ParamError::NoServiceSetting {
                    name: name.clone(),
                    key: key.clone(),
                    service: ctx.incident.service.name.to_string(),
                })?;
                match spec.kind {
                    ParamType::Integer => raw
                        .parse::<i64>()
                        .map(|n| json!(n))
                        .map_err(|_| ParamError::WrongType { name: name.clone(), expected: "an integer" })?,
                    ParamType::Boolean => raw
                        .parse::<bool>()
                        .map(|b| json!(b))
                        .map_err(|_| ParamError::WrongType { name: name.clone(), expected: "true or false" })?,
                    ParamType::String => json!(raw),
                }
            }
            ParamSource::Incident => {
                let key = spec.key.clone().unwrap_or_default();
                incident_field(ctx.incident, &key).ok_or_else(|| ParamError::Missing(name.clone()))?
            }
        };
        if matches!(source, ParamSource::Service | ParamSource::Incident)
            && let Some(said) = given.get(name)
            && *said != value
        {
            // The model asked for another target than the one the operator configured: the
            // text it read tried to steer it. Refused, never quietly replaced.
            return Err(ParamError::NotTheModels {
                name: name.clone(),
                origin: if source == ParamSource::Service { "service's settings" } else { "incident" },
            });
        }
        check_value(name, spec, &value)?;
        if source == ParamSource::Model {
            model_chosen.push(name.clone());
        }
        values.insert(name.clone(), value);
    }
    let script = render(&action.script_template, &values);
    Ok(Rendered { parameters: values, script, catalog_version: catalog_version(action), model_chosen })
}

/// Substitute checked values into a template (strings single-quoted). The one place a script
/// is put together.
fn render(template: &str, values: &Map<String, Value>) -> String {
    let mut script = template.to_string();
    for (name, v) in values {
        let rendered = match v {
            Value::String(s) => format!("'{}'", s.replace('\'', "'\\''")),
            other => other.to_string(),
        };
        // Tolerate `{{ name }}` as well as `{{name}}`.
        script = script.replace(&format!("{{{{{name}}}}}"), &rendered).replace(&format!("{{{{ {name} }}}}"), &rendered);
    }
    script
}

/// Check `parameters` against the action's schema (types, ranges, enums, the safe charset),
/// whatever their declared source; returns the values to render.
pub fn validate_parameters(action: &CatalogAction, parameters: &Value) -> Result<Map<String, Value>, String> {
    let given = parameters.as_object().ok_or_else(|| ParamError::NotAnObject.to_string())?;
    let specs = param_specs(action).map_err(|e| e.to_string())?;
    if let Some(unknown) = given.keys().find(|k| !specs.contains_key(*k)) {
        return Err(ParamError::Unknown(clip_name(unknown)).to_string());
    }
    let mut out = Map::new();
    for (name, spec) in &specs {
        let v = given.get(name).ok_or_else(|| ParamError::Missing(name.clone()).to_string())?;
        check_value(name, spec, v).map_err(|e| e.to_string())?;
        out.insert(name.clone(), v.clone());
    }
    Ok(out)
}

/// Render the action's script with the given values, checked against the schema (strings
/// single-quoted). For tools and tests; the loop uses [`resolve_and_render`].
pub fn render_script(action: &CatalogAction, parameters: &Value) -> Result<String, String> {
    let values = validate_parameters(action, parameters)?;
    Ok(render(&action.script_template, &values))
}

/// A tripwire for destructive or obfuscated shell. Never the only defence: scripts run only in
/// an ephemeral workspace, only after the policy gate.
pub fn tripwires(script: &str) -> Vec<String> {
    let l = script.to_lowercase();
    let compact: String = l.split_whitespace().collect::<Vec<_>>().join(" ");
    const PATTERNS: &[(&str, &str)] = &[
        ("rm -rf", "rm -rf"),
        ("rm -fr", "rm -rf"),
        ("mkfs", "mkfs"),
        ("dd if=", "dd"),
        (":(){", "fork bomb"),
        ("drop table", "DROP TABLE"),
        ("drop database", "DROP DATABASE"),
        ("truncate table", "TRUNCATE"),
        ("delete from", "DELETE without review"),
        ("shutdown", "shutdown"),
        ("reboot", "reboot"),
        ("chmod 777", "chmod 777"),
        ("chmod -r 777", "chmod 777"),
        ("base64 -d", "decoded payload"),
        ("base64 --decode", "decoded payload"),
        ("| sh", "piped to a shell"),
        ("| bash", "piped to a shell"),
        ("eval ", "eval"),
        ("curl http", "remote download"),
        ("wget ", "remote download"),
        ("kubectl delete namespace", "namespace deletion"),
        ("flushall", "FLUSHALL"),
        ("flushdb", "FLUSHDB"),
        ("/dev/tcp/", "reverse shell"),
        ("nc -e", "reverse shell"),
    ];
    let mut hits: Vec<String> =
        PATTERNS.iter().filter(|(p, _)| compact.contains(p)).map(|(_, name)| name.to_string()).collect();
    hits.sort();
    hits.dedup();
    hits
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ServiceId, ServiceName, ServiceRef};

    const RB: &str = r#"+++
id = "redis-maxmemory"
title = "Redis: maxmemory reached"
services = ["cart"]
error_tags = ["OOM command not allowed"]

[[actions]]
name = "redis.raise_maxmemory"
description = "Raise maxmemory"
risk = "low"
script = "redis-cli -h {{host}} CONFIG SET maxmemory {{megabytes}}mb"
[actions.parameters.host]
type = "string"
maxLength = 64
source = "service"
key = "redis_host"
[actions.parameters.megabytes]
type = "integer"
minimum = 64
maximum = 65536
source = "choice"
+++
# Redis maxmemory
Body text.
"#;

    fn incident(service_name: &str) -> Incident {
        Incident::new(
            crate::domain::IncidentId::parse("QRB1").unwrap(),
            "t".into(),
            ServiceRef { id: ServiceId::parse("PSVC1").unwrap(), name: ServiceName::parse(service_name).unwrap() },
            Urgency::High,
            chrono::Utc::now(),
        )
    }

    #[test]
    fn parses_and_renders_safely() {
        let rb = parse_runbook("redis.md", RB).unwrap();
        assert_eq!(rb.id.as_str(), "redis-maxmemory");
        let a = &rb.actions[0];
        assert_eq!(a.risk, RiskLevel::Low);
        let s = render_script(a, &json!({"host": "cache-1.internal", "megabytes": 2048})).unwrap();
        assert_eq!(s, "redis-cli -h 'cache-1.internal' CONFIG SET maxmemory 2048mb");
        assert!(render_script(a, &json!({"host": "x; rm -rf /", "megabytes": 2048})).is_err());
        assert!(render_script(a, &json!({"host": "$(reboot)", "megabytes": 2048})).is_err());
        assert!(render_script(a, &json!({"host": "h", "megabytes": 10})).is_err());
        assert!(render_script(a, &json!({"host": "h", "megabytes": "2048"})).is_err());
        assert!(render_script(a, &json!({"host": "h"})).is_err());
        assert!(render_script(a, &json!({"host": "h", "megabytes": 100, "extra": 1})).is_err());
        assert!(rb.knowledge_text().contains("runbook-id: redis-maxmemory"));
    }

    #[test]
    fn values_come_from_where_the_runbook_says() {
        let rb = parse_runbook("redis.md", RB).unwrap();
        let a = &rb.actions[0];
        let inc = incident("cart");
        let settings = BTreeMap::from([("redis_host".to_string(), "cache-1.internal".to_string())]);
        let ctx = ParamContext { incident: &inc, service_parameters: &settings };
        // The host is the operator's; the model only picks the size.
        let r = resolve_and_render(a, &json!({"megabytes": 2048}), &ctx).unwrap();
        assert_eq!(r.script, "redis-cli -h 'cache-1.internal' CONFIG SET maxmemory 2048mb");
        assert!(r.model_chosen.is_empty());
        assert_eq!(r.catalog_version, catalog_version(a));
        // Repeating the operator's value is tolerated; choosing another target is refused.
        assert!(resolve_and_render(a, &json!({"megabytes": 2048, "host": "cache-1.internal"}), &ctx).is_ok());
        let steer = resolve_and_render(a, &json!({"megabytes": 2048, "host": "attacker.example"}), &ctx);
        assert!(matches!(steer, Err(ParamError::NotTheModels { .. })), "{steer:?}");
        // No setting: the error says what to configure.
        let empty = BTreeMap::new();
        let err = resolve_and_render(
            a,
            &json!({"megabytes": 2048}),
            &ParamContext { incident: &inc, service_parameters: &empty },
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("parameters.redis_host") && err.to_string().contains("services push"),
            "{err}"
        );
        // A choice outside its range, a value the model may not invent.
        assert!(matches!(resolve_and_render(a, &json!({"megabytes": 1}), &ctx), Err(ParamError::OutOfRange { .. })));
        assert!(matches!(
            resolve_and_render(a, &json!({"megabytes": 64, "x\n": 1}), &ctx),
            Err(ParamError::Unknown(n)) if !n.contains('\n')
        ));
    }

    #[test]
    fn model_chosen_text_and_incident_fields() {
        let text = RB
            .replace("source = \"service\"\nkey = \"redis_host\"", "source = \"model\"")
            .replace("{{megabytes}}mb", "{{megabytes}}mb # {{svc}}")
            .replace("+++\n# Redis", "[actions.parameters.svc]\ntype = \"string\"\nsource = \"incident\"\nkey = \"service_id\"\n+++\n# Redis");
        let rb = parse_runbook("redis.md", &text).unwrap();
        let inc = incident("cart");
        let none = BTreeMap::new();
        let ctx = ParamContext { incident: &inc, service_parameters: &none };
        let r = resolve_and_render(&rb.actions[0], &json!({"host": "h1", "megabytes": 128}), &ctx).unwrap();
        assert_eq!(r.model_chosen, vec!["host".to_string()]);
        assert!(r.script.ends_with("# 'PSVC1'"), "{}", r.script);
        // Hostile text is refused whatever the source.
        for hostile in ["a'b", "$(id)", "`id`", "a\nb", "a\0b", "a b", &"x".repeat(10_000)] {
            let out = resolve_and_render(&rb.actions[0], &json!({"host": hostile, "megabytes": 128}), &ctx);
            assert!(matches!(out, Err(ParamError::Unsafe { .. })), "{hostile:?}: {out:?}");
        }
        // An incident field that is not safe text (a service name with a space) is refused too.
        let spaced = text.replace("key = \"service_id\"", "key = \"service_name\"");
        let rb = parse_runbook("redis.md", &spaced).unwrap();
        let inc = incident("cart $(reboot)");
        let out = resolve_and_render(
            &rb.actions[0],
            &json!({"host": "h1", "megabytes": 128}),
            &ParamContext { incident: &inc, service_parameters: &none },
        );
        assert!(matches!(out, Err(ParamError::Unsafe { .. })), "{out:?}");
    }

    #[test]
    fn every_parameter_declares_its_source() {
        let missing = RB.replace("source = \"choice\"\n", "");
        let err = parse_runbook("x.md", &missing).unwrap_err().to_string();
        assert!(err.contains("declares no source"), "{err}");
        let open_choice = RB.replace("minimum = 64\n", "");
        assert!(parse_runbook("x.md", &open_choice).unwrap_err().to_string().contains("minimum and a maximum"));
        let keyless = RB.replace("key = \"redis_host\"\n", "");
        assert!(parse_runbook("x.md", &keyless).unwrap_err().to_string().contains("needs key"));
        let title = RB.replace("source = \"service\"\nkey = \"redis_host\"", "source = \"incident\"\nkey = \"title\"");
        assert!(parse_runbook("x.md", &title).unwrap_err().to_string().contains("one of incident_id"));
        // The model is only shown what it may choose.
        let rb = parse_runbook("redis.md", RB).unwrap();
        let shown = model_parameters_schema(&rb.actions[0]);
        assert!(shown["properties"].get("host").is_none());
        assert!(shown["properties"].get("megabytes").is_some());
    }

    #[test]
    fn the_catalog_version_follows_what_the_script_does() {
        let a = parse_runbook("redis.md", RB).unwrap().actions.remove(0);
        let mut counted = a.clone();
        counted.effective_count = 7;
        assert_eq!(catalog_version(&a), catalog_version(&counted), "outcome counters are not a new version");
        let mut changed = a.clone();
        changed.script_template.push_str(" && reboot");
        assert_ne!(catalog_version(&a), catalog_version(&changed));
        let mut riskier = a.clone();
        riskier.risk = RiskLevel::High;
        assert_ne!(catalog_version(&a), catalog_version(&riskier));
    }

    #[test]
    fn rejects_inconsistent_runbooks() {
        let bad = RB.replace("{{megabytes}}", "{{mb}}");
        assert!(parse_runbook("x.md", &bad).is_err());
        assert!(parse_runbook("x.md", "# no front matter").is_err());
        let bad_id = RB.replace("id = \"redis-maxmemory\"", "id = \"../etc\"");
        assert!(parse_runbook("x.md", &bad_id).is_err());
    }

    #[test]
    fn the_shipped_runbooks_declare_every_source() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/runbooks");
        let mut runbooks = load_dir(&root).unwrap();
        runbooks.extend(load_dir(&root.join("kubernetes")).unwrap());
        assert!(runbooks.len() >= 6);
        for rb in &runbooks {
            for a in &rb.actions {
                for (name, spec) in param_specs(a).unwrap() {
                    assert!(spec.source.is_some(), "{}/{}: {name}", rb.id, a.name);
                }
            }
        }
    }

    /// The shipped library (`infra/runbooks`, what `runbooks push infra/runbooks` pushes) holds
    /// only runbooks whose scripts the tests run against a real target. A runbook added there
    /// without such a test fails here; the Kubernetes ones wait in `infra/runbooks/kubernetes`
    /// until a real cluster can run them in CI.
    #[test]
    fn every_shipped_runbook_runs_against_a_real_target_in_the_tests() {
        const REAL_TARGET_TESTS: &[(&str, &str)] = &[
            ("demo-service-fault", "tests/tests/suite/scenarios.rs: the demo service, every scenario"),
            (
                "postgres-blocking-query",
                "scripts/runbook-targets.sh and scenarios::a_blocking_postgres_session_is_really_ended_by_its_runbook",
            ),
            (
                "redis-maxmemory",
                "scripts/runbook-targets.sh and scenarios::a_full_redis_is_really_fixed_by_its_runbook",
            ),
        ];
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut shipped: Vec<String> =
            load_dir(&root.join("infra/runbooks")).unwrap().iter().map(|rb| rb.id.to_string()).collect();
        shipped.sort();
        let tested: Vec<String> = REAL_TARGET_TESTS.iter().map(|(id, _)| id.to_string()).collect();
        assert_eq!(shipped, tested, "a shipped runbook without a real-target test (or a test list out of date)");
        // The script-level checks name each database and cache runbook they run.
        let script = std::fs::read_to_string(root.join("scripts/runbook-targets.sh")).unwrap();
        for id in ["postgres-blocking-query", "redis-maxmemory"] {
            assert!(script.contains(&format!("infra/runbooks/{id}.md")), "{id} is not run by runbook-targets.sh");
        }
    }

    #[test]
    fn tripwires_fire_on_destructive_shell() {
        assert_eq!(tripwires("echo hello"), Vec::<String>::new());
        assert_eq!(tripwires("sudo  RM   -RF /var"), vec!["rm -rf"]);
        assert!(tripwires("echo cm0gLXJmIC8= | base64 -d | sh").contains(&"decoded payload".to_string()));
        assert!(tripwires("psql -c 'DROP TABLE users'").contains(&"DROP TABLE".to_string()));
    }
}

/// What `selfheal runbooks push` did for one runbook.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Pushed {
    pub runbook: String,
    pub content_id: String,
    pub actions: usize,
    pub status: crate::ports::IngestStatus,
}

/// Ingest each runbook's text into the knowledge base (title `<id>: <title>`, so search hits map
/// back to the catalog; into the runbooks' folder), write its actions and the document's id to
/// the store (retrieval is scoped to those documents), and wait (bounded) for processing.
pub async fn push(
    kb: &dyn crate::ports::KnowledgeBase,
    store: &dyn crate::ports::IncidentStore,
    runbooks: &[Runbook],
    wait: std::time::Duration,
) -> Result<Vec<Pushed>, crate::error::StageError> {
    use crate::ports::IngestStatus;
    let mut out = Vec::new();
    for rb in runbooks {
        for action in &rb.actions {
            store.put_catalog_action(action).await?;
        }
        let content_id = kb
            .ingest(crate::ports::DocumentKind::Runbook, &format!("{}: {}", rb.id, rb.title), &rb.knowledge_text())
            .await?;
        out.push(Pushed {
            runbook: rb.id.to_string(),
            content_id,
            actions: rb.actions.len(),
            status: IngestStatus::Queued,
        });
    }
    let deadline = std::time::Instant::now() + wait;
    for p in &mut out {
        loop {
            p.status = kb.ingest_status(&p.content_id).await?;
            if matches!(p.status, IngestStatus::Complete | IngestStatus::Failed)
                || std::time::Instant::now() >= deadline
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        // Retrieval searches only the documents recorded here (never a past resolution). A
        // document is recorded once Senso can search it; until then the runbook's previous one
        // stays in scope, and a push that has not finished says so (`status`): push again.
        if p.status == IngestStatus::Complete
            && let Ok(id) = crate::domain::RunbookId::parse(&p.runbook)
        {
            store.put_runbook_document(&id, &p.content_id, chrono::Utc::now()).await?;
        }
    }
    Ok(out)
}
