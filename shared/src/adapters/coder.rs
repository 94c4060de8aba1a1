//! Coder REST API v2 as [`Workspaces`]: ephemeral remediation workspaces.

use async_trait::async_trait;
use reqwest::header::HeaderMap;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use std::time::Duration;

use crate::error::ClientError;
use crate::http::{ApiClient, body_excerpt};
use crate::ports::{WorkspaceHandle, WorkspaceProgress, WorkspaceRequest, Workspaces};

const SERVICE: &str = "coder";

pub struct CoderApi {
    api: ApiClient,
    token: SecretString,
    user: String,
    template: TemplateRef,
}

#[derive(Debug, Clone)]
pub enum TemplateRef {
    /// Pin a template version (recommended: reproducible fixes).
    Version(String),
    /// The template's active version.
    Template(String),
}

/// Coder errors: `{"message","detail","validations":[{field,detail}]}`; 409 (a build is in
/// progress) is worth retrying along with 408/429/5xx.
fn classify(status: u16, _headers: &HeaderMap, body: &[u8]) -> (String, bool) {
    let retryable = matches!(status, 408 | 409 | 429) || status >= 500;
    let msg = serde_json::from_slice::<Value>(body)
        .ok()
        .map(|v| {
            let mut m = v.get("message").and_then(Value::as_str).unwrap_or_default().to_string();
            if let Some(d) = v.get("detail").and_then(Value::as_str).filter(|d| !d.is_empty()) {
                m.push_str(&format!(": {d}"));
            }
            if let Some(vals) = v.get("validations").and_then(Value::as_array) {
                for val in vals {
                    m.push_str(&format!(
                        " [{}: {}]",
                        val.get("field").and_then(Value::as_str).unwrap_or("?"),
                        val.get("detail").and_then(Value::as_str).unwrap_or("")
                    ));
                }
            }
            m
        })
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    (body_excerpt(msg.as_bytes(), 300), retryable)
}

// Workspace naming is a domain rule (the name is deterministic per incident and plan, so a
// crashed provisioning step can find its workspace again); re-exported for callers here.
pub use crate::domain::{valid_workspace_name, workspace_name};

fn contract(detail: impl Into<String>) -> ClientError {
    ClientError::Contract { service: SERVICE, detail: detail.into() }
}

impl crate::http::ApiAdapter for CoderApi {
    fn api_mut(&mut self) -> &mut ApiClient {
        &mut self.api
    }
}

impl CoderApi {
    pub fn new(api_base: &str, token: SecretString, user: &str, template: TemplateRef) -> Result<Self, ClientError> {
        Ok(Self {
            api: ApiClient::new(SERVICE, api_base, Duration::from_secs(15), classify)?.redacting(&token),
            token,
            user: user.to_string(),
            template,
        })
    }

    fn auth(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        rb.header("Coder-Session-Token", self.token.expose_secret()).header("Accept", "application/json")
    }
}

fn agents(build: &Value) -> Vec<&Value> {
    build
        .get("resources")
        .and_then(Value::as_array)
        .map(|rs| rs.iter().filter_map(|r| r.get("agents").and_then(Value::as_array)).flatten().collect())
        .unwrap_or_default()
}

/// Interpret a workspace build: job status first, then the agent's lifecycle.
pub fn build_progress(build: &Value) -> WorkspaceProgress {
    let job = build.get("job").cloned().unwrap_or(Value::Null);
    let job_status = job.get("status").and_then(Value::as_str).unwrap_or("pending");
    match job_status {
        "pending" => {
            // No provisioner matches the job's tags: it would sit in the queue forever.
            if build.pointer("/matched_provisioners/count").and_then(Value::as_u64) == Some(0) {
                return WorkspaceProgress::Failed {
                    reason: "no provisioner matches the build (count 0)".into(),
                    agent_id: None,
                };
            }
            WorkspaceProgress::Pending { detail: "build queued".into() }
        }
        "running" => WorkspaceProgress::Pending { detail: "build running".into() },
        "failed" | "canceled" | "canceling" => WorkspaceProgress::Failed {
            reason: format!(
                "build {job_status}: {}",
                job.get("error").and_then(Value::as_str).filter(|e| !e.is_empty()).unwrap_or("no error given")
            ),
            agent_id: None,
        },
        "succeeded" => {
            let agents = agents(build);
            let Some(agent) = agents.first() else {
                return WorkspaceProgress::Failed {
                    reason: "the build has no agent to run the fix".into(),
                    agent_id: None,
                };
            };
            let id = agent.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
            match agent.get("lifecycle_state").and_then(Value::as_str).unwrap_or("created") {
                "ready" => WorkspaceProgress::Ready { agent_id: id },
                "start_error" => WorkspaceProgress::Failed {
                    reason: "the fix script failed (start_error)".into(),
                    agent_id: Some(id),
                },
                // Coder treats start_timeout as a soft issue; for a fix it means "did not finish".
                "start_timeout" => WorkspaceProgress::Failed {
                    reason: "the fix script timed out (start_timeout)".into(),
                    agent_id: Some(id),
                },
                "shutting_down" | "shutdown_timeout" | "shutdown_error" | "off" => WorkspaceProgress::Failed {
                    reason: "the agent shut down before finishing".into(),
                    agent_id: Some(id),
                },
                state => WorkspaceProgress::Pending { detail: format!("agent {state}") },
            }
        }
        other => WorkspaceProgress::Pending { detail: format!("job {other}") },
    }
}

/// The workspace's `rich_parameter_values` (all strings). The template hands each to the
/// runner as an environment variable, never as script text; a NUL cannot be carried by one, so
/// such a value is refused here rather than cut short there. The script's SHA-256 goes along:
/// the runner runs nothing else.
pub fn rich_parameters(req: &WorkspaceRequest) -> Result<Value, ClientError> {
    use base64::Engine as _;
    let script = base64::engine::general_purpose::STANDARD
        .decode(&req.script_b64)
        .map_err(|e| ClientError::Invalid { service: SERVICE, detail: format!("the fix script is not base64: {e}") })?;
    let params = [
        ("incident_id", req.incident_id.as_str()),
        ("service", req.service.as_str()),
        ("severity", req.severity.as_str()),
        ("fix_script_b64", req.script_b64.as_str()),
        ("target", req.target.as_str()),
    ];
    if let Some((name, _)) = params.iter().find(|(_, v)| v.contains('\0')) {
        return Err(ClientError::Invalid {
            service: SERVICE,
            detail: format!("parameter {name} contains a NUL, which no environment variable can carry"),
        });
    }
    let mut out: Vec<Value> = params.iter().map(|(n, v)| json!({"name": n, "value": v})).collect();
    out.push(json!({"name": "fix_script_sha256", "value": crate::sha256_hex(&script)}));
    Ok(Value::Array(out))
}

#[async_trait]
impl Workspaces for CoderApi {
    async fn create(&self, req: &WorkspaceRequest) -> Result<WorkspaceHandle, ClientError> {
        if !valid_workspace_name(&req.name) {
            return Err(ClientError::Invalid {
                service: SERVICE,
                detail: format!("invalid workspace name {:?}", req.name),
            });
        }
        let url = self.api.url(&format!("/api/v2/users/{}/workspaces", self.user));
        let params = rich_parameters(req)?;
        let mut body = json!({"name": req.name, "rich_parameter_values": params, "ttl_ms": 3_600_000});
        match &self.template {
            TemplateRef::Version(v) => body["template_version_id"] = json!(v),
            TemplateRef::Template(t) => body["template_id"] = json!(t),
        }
        // Docs say 200, the SDK expects 201: any 2xx is success.
        let resp = self.api.send("create_workspace", |c| self.auth(c.post(&url)).json(&body)).await?;
        let v: Value = resp.json(SERVICE)?;
        let id = v.get("id").and_then(Value::as_str).ok_or_else(|| contract("workspace has no id"))?;
        let build_id = v
            .pointer("/latest_build/id")
            .and_then(Value::as_str)
            .ok_or_else(|| contract("workspace has no latest_build.id"))?;
        Ok(WorkspaceHandle { id: id.to_string(), name: req.name.clone(), build_id: build_id.to_string() })
    }

    async fn progress(&self, handle: &WorkspaceHandle) -> Result<WorkspaceProgress, ClientError> {
        let url = self.api.url(&format!("/api/v2/workspacebuilds/{}", handle.build_id));
        let build: Value = self.api.read_json("get_build", |c| self.auth(c.get(&url))).await?;
        Ok(build_progress(&build))
    }

    async fn agent_logs(&self, agent_id: &str, max_bytes: usize) -> Result<String, ClientError> {
        let url = self.api.url(&format!("/api/v2/workspaceagents/{agent_id}/logs"));
        let logs: Vec<Value> = self.api.read_json("agent_logs", |c| self.auth(c.get(&url))).await?;
        let text: Vec<&str> = logs.iter().filter_map(|l| l.get("output").and_then(Value::as_str)).collect();
        let joined = text.join("\n");
        // Keep the end: that is where scripts print their result.
        let start = joined.len().saturating_sub(max_bytes);
        let start = (start..joined.len()).find(|i| joined.is_char_boundary(*i)).unwrap_or(joined.len());
        Ok(joined[start..].to_string())
    }

    async fn find(&self, name: &str) -> Result<Option<WorkspaceHandle>, ClientError> {
        if !valid_workspace_name(name) {
            return Ok(None);
        }
        let url = self.api.url(&format!("/api/v2/users/{}/workspace/{name}", self.user));
        match self.api.read_json::<Value>("get_workspace_by_name", |c| self.auth(c.get(&url))).await {
            Ok(v) => {
                let id = v.get("id").and_then(Value::as_str).ok_or_else(|| contract("workspace has no id"))?;
                let build = v
                    .pointer("/latest_build/id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| contract("workspace has no latest_build.id"))?;
                Ok(Some(WorkspaceHandle { id: id.to_string(), name: name.to_string(), build_id: build.to_string() }))
            }
            Err(ClientError::Status { status: 404 | 410, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn delete(&self, workspace_id: &str) -> Result<(), ClientError> {
        let url = self.api.url(&format!("/api/v2/workspaces/{workspace_id}/builds"));
        let body = json!({"transition": "delete"});
        match self.api.send("delete_workspace", |c| self.auth(c.post(&url)).json(&body)).await {
            Ok(_) => Ok(()),
            // Already deleted (or never visible to us): the goal is reached.
            Err(ClientError::Status { status: 404 | 410, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid() {
        for (inc, sfx) in [("Q2J7BKL3D5XKZ9", "9f2c1a"), ("x".repeat(64).as_str(), "abc"), ("__--", "z")] {
            let n = workspace_name(inc, sfx);
            assert!(valid_workspace_name(&n), "{n}");
        }
        assert!(!valid_workspace_name("fix_1"));
        assert!(!valid_workspace_name("-fix"));
        assert!(!valid_workspace_name("fix--1"));
        assert!(!valid_workspace_name("new"));
    }

    #[test]
    fn progress_mapping() {
        let b = |job: &str, lifecycle: &str| {
            json!({"job": {"status": job, "error": "boom"}, "matched_provisioners": {"count": 1},
                   "resources": [{"agents": [{"id": "a1", "lifecycle_state": lifecycle}]}]})
        };
        assert_eq!(build_progress(&b("succeeded", "ready")), WorkspaceProgress::Ready { agent_id: "a1".into() });
        assert!(matches!(build_progress(&b("succeeded", "start_error")), WorkspaceProgress::Failed { .. }));
        assert!(matches!(build_progress(&b("succeeded", "start_timeout")), WorkspaceProgress::Failed { .. }));
        assert!(matches!(build_progress(&b("succeeded", "starting")), WorkspaceProgress::Pending { .. }));
        assert!(matches!(build_progress(&b("failed", "")), WorkspaceProgress::Failed { .. }));
        assert!(matches!(build_progress(&b("running", "")), WorkspaceProgress::Pending { .. }));
        let stuck = json!({"job": {"status": "pending"}, "matched_provisioners": {"count": 0}});
        assert!(matches!(build_progress(&stuck), WorkspaceProgress::Failed { .. }));
    }
}
