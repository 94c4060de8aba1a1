//! Runbooks and their typed action catalog.
//!
//! A runbook is Markdown with TOML front matter between `+++` lines:
//!
//! ```text
//! +++
//! id = "postgres-blocking-query"
//! title = "Postgres: a blocking query holds locks"
//! services = ["checkout-db"]
//! error_tags = ["lock_timeout"]
//!
//! [[actions]]
//! name = "postgres.terminate_backend"
//! description = "Terminate the backend that holds the lock"
//! risk = "low"
//! script = "psql \"$TARGET_DSN\" -c 'SELECT pg_terminate_backend({{pid}})'"
//! [actions.parameters.pid]
//! type = "integer"
//! minimum = 1
//! +++
//! # Markdown body …
//! ```
//!
//! Scripts are rendered from the template with parameters that passed their schema; string
//! values are restricted to a safe character set *and* single-quoted, so model output never
//! becomes shell syntax.

use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::path::Path;

use crate::domain::{ActionName, RiskLevel, RunbookId};
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
    parameters: std::collections::BTreeMap<String, ParamSpec>,
}

fn medium() -> RiskLevel {
    RiskLevel::Medium
}

/// Parameter schema (a JSON Schema subset).
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
        for p in a.parameters.keys() {
            if !placeholders.contains(p) {
                return Err(invalid(format!("action {name}: parameter {p} is not used by the script")));
            }
            if !p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
                return Err(invalid(format!("action {name}: parameter name {p} must be lowercase snake_case")));
            }
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

/// Characters allowed in string parameters (identifiers, hosts, paths, versions).
fn safe_string(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-:/@=+,".contains(c))
}

/// Check `parameters` against the action's schema; returns the values to render.
pub fn validate_parameters(action: &CatalogAction, parameters: &Value) -> Result<Map<String, Value>, String> {
    let given = parameters.as_object().ok_or("parameters must be an object")?;
    let props = action.parameters["properties"].as_object().cloned().unwrap_or_default();
    for k in given.keys() {
        if !props.contains_key(k) {
            return Err(format!("unknown parameter {k}"));
        }
    }
    let mut out = Map::new();
    for (name, spec) in &props {
        let spec: ParamSpec =
            serde_json::from_value(spec.clone()).map_err(|e| format!("bad schema for {name}: {e}"))?;
        let v = given.get(name).ok_or_else(|| format!("missing parameter {name}"))?;
        match spec.kind {
            ParamType::Integer => {
                let n = v.as_i64().ok_or_else(|| format!("{name} must be an integer"))?;
                if spec.minimum.is_some_and(|m| n < m) || spec.maximum.is_some_and(|m| n > m) {
                    return Err(format!("{name}={n} is outside its allowed range"));
                }
            }
            ParamType::Boolean => {
                v.as_bool().ok_or_else(|| format!("{name} must be true or false"))?;
            }
            ParamType::String => {
                let s = v.as_str().ok_or_else(|| format!("{name} must be a string"))?;
                if let Some(allowed) = &spec.allowed
                    && !allowed.iter().any(|a| a == s)
                {
                    return Err(format!("{name} must be one of {}", allowed.join(", ")));
                }
                if s.chars().count() > spec.max_length.unwrap_or(128) {
                    return Err(format!("{name} is too long"));
                }
                if !safe_string(s) {
                    return Err(format!("{name} contains characters that are not allowed"));
                }
            }
        }
        out.insert(name.clone(), v.clone());
    }
    Ok(out)
}

/// Render the action's script with validated parameters (strings single-quoted).
pub fn render_script(action: &CatalogAction, parameters: &Value) -> Result<String, String> {
    let values = validate_parameters(action, parameters)?;
    let mut script = action.script_template.clone();
    for (name, v) in &values {
        let rendered = match v {
            Value::String(s) => format!("'{}'", s.replace('\'', "'\\''")),
            other => other.to_string(),
        };
        // Tolerate `{{ name }}` as well as `{{name}}`.
        script = script.replace(&format!("{{{{{name}}}}}"), &rendered).replace(&format!("{{{{ {name} }}}}"), &rendered);
    }
    Ok(script)
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
[actions.parameters.megabytes]
type = "integer"
minimum = 64
maximum = 65536
+++
# Redis maxmemory
Body text.
"#;

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
    fn rejects_inconsistent_runbooks() {
        let bad = RB.replace("{{megabytes}}", "{{mb}}");
        assert!(parse_runbook("x.md", &bad).is_err());
        assert!(parse_runbook("x.md", "# no front matter").is_err());
        let bad_id = RB.replace("id = \"redis-maxmemory\"", "id = \"../etc\"");
        assert!(parse_runbook("x.md", &bad_id).is_err());
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
/// back to the catalog), write its actions to the store, and wait (bounded) for processing.
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
        let content_id = kb.ingest(&format!("{}: {}", rb.id, rb.title), &rb.knowledge_text()).await?;
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
    }
    Ok(out)
}
