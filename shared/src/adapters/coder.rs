//! Coder REST API v2 as [`Workspaces`]: ephemeral remediation workspaces.
//!
//! The contract relied on (`shared/contracts.md` §3, Coder's `docs/reference/api/builds.md`):
//! - a workspace is created with `POST /users/{user}/workspaces` (any 2xx; 409 when the name is
//!   taken, which here means a previous attempt created it: it is adopted);
//! - every change is a build (`POST /workspaces/{id}/builds` with a `transition`) whose job
//!   moves `pending → running → succeeded | failed`, or `canceling → canceled` after
//!   `PATCH /workspacebuilds/{id}/cancel`; while a build's job is pending or running, Coder
//!   answers a new build with **409** ("A workspace build is already active");
//! - deleting is a `delete` build: the workspace is gone once that build succeeded
//!   (`GET /workspaces/{id}` then answers 410, or 404). A delete build can fail (Terraform
//!   destroy errors); it is then posted again;
//! - `GET /workspaces?q=owner:<user> name:<text>` lists workspaces (`name:` matches a substring,
//!   so the prefix is checked here too), paginated with `limit`/`offset`.
//!
//! [`Workspaces::delete`] therefore cancels an active build, waits for it to settle, posts the
//! delete, waits for the delete build to succeed and confirms the workspace is gone, all under
//! one deadline ([`CoderApi::with_settle_deadline`]); cut short, it fails retryably and the next
//! call resumes from what Coder reports (a delete build already running is waited for, never
//! posted twice).

use async_trait::async_trait;
use reqwest::header::HeaderMap;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

use crate::error::ClientError;
use crate::http::{ApiClient, body_excerpt};
use crate::ports::{WorkspaceHandle, WorkspaceProgress, WorkspaceRequest, WorkspaceSummary, Workspaces};

const SERVICE: &str = "coder";

/// How long one [`Workspaces::delete`] waits for Coder's builds to settle before it gives up
/// retryably (`budget` counts it as the delete's bound).
pub const SETTLE_DEADLINE: Duration = Duration::from_secs(240);

/// Delete builds one [`Workspaces::delete`] posts before it calls the failure persistent.
pub const MAX_DELETE_BUILDS: u32 = 3;

/// Pages of 100 one listing reads at most.
const MAX_LIST_PAGES: usize = 20;

pub struct CoderApi {
    api: ApiClient,
    token: SecretString,
    user: String,
    template: TemplateRef,
    settle_deadline: Duration,
    /// First wait between two reads of a settling build (doubles up to 5 s).
    settle_poll: Duration,
}

#[derive(Debug, Clone)]
pub enum TemplateRef {
    /// Pin a template version (recommended: reproducible fixes).
    Version(String),
    /// The template's active version.
    Template(String),
}

/// Coder errors: `{"message","detail","validations":[{field,detail}]}`; 408/429/5xx are worth
/// retrying. A 409 (the name is taken, or a build is already active) is not: resending the same
/// request changes nothing until the build settles, so each caller handles it.
fn classify(status: u16, _headers: &HeaderMap, body: &[u8]) -> (String, bool) {
    let retryable = matches!(status, 408 | 429) || status >= 500;
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
            settle_deadline: SETTLE_DEADLINE,
            settle_poll: Duration::from_millis(250),
        })
    }

    /// How long one delete waits for builds to settle, and the first pause between reads.
    pub fn with_settle_deadline(mut self, deadline: Duration, first_poll: Duration) -> Self {
        self.settle_deadline = deadline;
        self.settle_poll = first_poll;
        self
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

fn job_status(build: &Value) -> &str {
    build.pointer("/job/status").and_then(Value::as_str).unwrap_or("pending")
}

fn transition(build: &Value) -> &str {
    build.get("transition").and_then(Value::as_str).unwrap_or("start")
}

/// Interpret a workspace build: job status first, then the agent's connection and lifecycle.
pub fn build_progress(build: &Value) -> WorkspaceProgress {
    let job = build.get("job").cloned().unwrap_or(Value::Null);
    let job_status = job_status(build);
    if transition(build) != "start" {
        // Someone (autostop, an operator, our own cleanup) stopped or is deleting it.
        return WorkspaceProgress::Failed {
            reason: format!("the workspace's latest build is a {} ({job_status})", transition(build)),
            agent_id: None,
        };
    }
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
            // The agent never connected within the template's connection timeout: nothing ran.
            if agent.get("status").and_then(Value::as_str) == Some("timeout") {
                return WorkspaceProgress::Failed {
                    reason: "the agent never connected (status timeout): the fix did not run".into(),
                    agent_id: Some(id),
                };
            }
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
        let resp = match self.api.send("create_workspace", |c| self.auth(c.post(&url)).json(&body)).await {
            Ok(resp) => resp,
            // The name is taken: an earlier attempt whose answer was lost created it. Adopt it.
            Err(ClientError::Status { status: 409, message, .. }) => {
                return self.find(&req.name).await?.ok_or_else(|| ClientError::Lifecycle {
                    service: SERVICE,
                    detail: format!("workspace {} exists but cannot be read back yet ({message})", req.name),
                    retryable: true,
                });
            }
            Err(e) => return Err(e),
        };
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
                // A delete that succeeded: gone. One under way: ask again once it is done. (One
                // that failed leaves a live workspace, returned: whoever adopts it sees its
                // latest build is a failed delete, and deletes it.)
                if let Some(latest) = v.get("latest_build").filter(|b| transition(b) == "delete") {
                    match job_status(latest) {
                        "succeeded" => return Ok(None),
                        "pending" | "running" | "canceling" => {
                            return Err(ClientError::Lifecycle {
                                service: SERVICE,
                                detail: format!("workspace {name} is being deleted ({}); retry", job_status(latest)),
                                retryable: true,
                            });
                        }
                        _ => {}
                    }
                }
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

    /// Cancel, settle, delete, confirm: see the module documentation.
    async fn delete(&self, workspace_id: &str) -> Result<(), ClientError> {
        let deadline = Instant::now() + self.settle_deadline;
        let mut pause = self.settle_poll;
        let mut delete_builds = 0u32;
        let mut last_error = String::new();
        loop {
            let Some(workspace) = self.within(deadline, workspace_id, "read", self.workspace(workspace_id)).await?
            else {
                tracing::info!(service = SERVICE, workspace_id, delete_builds, "workspace gone");
                return Ok(());
            };
            let latest = workspace.get("latest_build").cloned().unwrap_or(Value::Null);
            let build_id = latest.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
            let (transition, status) = (transition(&latest).to_string(), job_status(&latest).to_string());
            match (transition.as_str(), status.as_str()) {
                ("delete", "succeeded") => return Ok(()),
                // Ours (or anyone's) delete is under way: wait for it.
                ("delete", "pending" | "running") | (_, "canceling") => {}
                // A start or stop build is active: Coder refuses a new build until it settles.
                (_, "pending" | "running") => {
                    tracing::info!(service = SERVICE, workspace_id, transition, status, "canceling the active build");
                    self.within(deadline, workspace_id, "cancel", self.cancel(&build_id)).await?;
                }
                // Settled (a failed or canceled delete included): post the delete build.
                (_, _) => {
                    if transition == "delete" {
                        last_error = latest
                            .pointer("/job/error")
                            .and_then(Value::as_str)
                            .filter(|e| !e.is_empty())
                            .unwrap_or(status.as_str())
                            .chars()
                            .take(300)
                            .collect();
                    }
                    if delete_builds >= MAX_DELETE_BUILDS {
                        return Err(ClientError::Lifecycle {
                            service: SERVICE,
                            detail: format!(
                                "workspace {workspace_id}: {delete_builds} delete builds did not succeed (last: \
                                 {last_error}); it stays until `selfheal workspaces gc` or an operator removes it"
                            ),
                            retryable: false,
                        });
                    }
                    delete_builds += 1;
                    tracing::info!(
                        service = SERVICE,
                        workspace_id,
                        attempt = delete_builds,
                        "posting the delete build"
                    );
                    if self.within(deadline, workspace_id, "delete", self.post_delete(workspace_id)).await? {
                        return Ok(());
                    }
                    // Posted (or refused with 409 because a build started meanwhile): read again.
                    pause = self.settle_poll;
                    continue;
                }
            }
            if Instant::now() + pause >= deadline {
                return Err(still_settling(
                    workspace_id,
                    &format!("{transition} build {status}"),
                    self.settle_deadline,
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    async fn list(&self, name_prefix: &str) -> Result<Vec<WorkspaceSummary>, ClientError> {
        let url = self.api.url("/api/v2/workspaces");
        let q = format!("owner:{} name:{name_prefix}", self.user);
        let mut out = Vec::new();
        for page in 0..MAX_LIST_PAGES {
            let offset = (page * 100).to_string();
            let query = [("q", q.as_str()), ("limit", "100"), ("offset", offset.as_str())];
            let v: Value = self.api.read_json("list_workspaces", |c| self.auth(c.get(&url)).query(&query)).await?;
            let items = v
                .get("workspaces")
                .and_then(Value::as_array)
                .ok_or_else(|| contract("workspace list has no workspaces array"))?;
            for w in items {
                let (Some(id), Some(name)) =
                    (w.get("id").and_then(Value::as_str), w.get("name").and_then(Value::as_str))
                else {
                    return Err(contract("a listed workspace has no id or name"));
                };
                // `name:` matches anywhere in the name; only the prefix is ours.
                if !name.starts_with(name_prefix) {
                    continue;
                }
                let latest = w.get("latest_build").cloned().unwrap_or(Value::Null);
                out.push(WorkspaceSummary {
                    id: id.to_string(),
                    name: name.to_string(),
                    created_at: w
                        .get("created_at")
                        .and_then(Value::as_str)
                        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                        .map(|t| t.with_timezone(&chrono::Utc)),
                    transition: transition(&latest).to_string(),
                    job_status: job_status(&latest).to_string(),
                });
            }
            let count = v.get("count").and_then(Value::as_u64).unwrap_or(0) as usize;
            if items.len() < 100 || (page + 1) * 100 >= count {
                break;
            }
        }
        Ok(out)
    }
}

fn still_settling(workspace_id: &str, what: &str, waited: Duration) -> ClientError {
    ClientError::Lifecycle {
        service: SERVICE,
        detail: format!(
            "workspace {workspace_id} is not deleted yet ({what} after {} s); the next attempt resumes",
            waited.as_secs()
        ),
        retryable: true,
    }
}

impl CoderApi {
    /// `call` cut short at `deadline`: a slow Coder makes the delete retryable, never unbounded.
    async fn within<T>(
        &self,
        deadline: Instant,
        workspace_id: &str,
        what: &str,
        call: impl std::future::Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, call).await {
            Ok(result) => result,
            Err(_) => Err(still_settling(workspace_id, &format!("{what} call cut short"), self.settle_deadline)),
        }
    }

    /// The workspace, or `None` when it is gone (404, 410 Gone, or marked deleted).
    async fn workspace(&self, workspace_id: &str) -> Result<Option<Value>, ClientError> {
        let url = self.api.url(&format!("/api/v2/workspaces/{workspace_id}"));
        match self.api.read_json::<Value>("get_workspace", |c| self.auth(c.get(&url))).await {
            Ok(v) if v.get("deleted").and_then(Value::as_bool) == Some(true) => Ok(None),
            Ok(v) => Ok(Some(v)),
            Err(ClientError::Status { status: 404 | 410, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Cancel a pending or running build. A build that already finished (400) or is gone (404)
    /// needs no cancel: the caller reads the workspace again either way.
    async fn cancel(&self, build_id: &str) -> Result<(), ClientError> {
        let url = self.api.url(&format!("/api/v2/workspacebuilds/{build_id}/cancel"));
        match self.api.send("cancel_build", |c| self.auth(c.patch(&url))).await {
            Ok(_) | Err(ClientError::Status { status: 400 | 404 | 409, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Post a `delete` build. `Ok(true)`: the workspace is already gone; `Ok(false)`: posted, or
    /// refused because another build became active (409), so read again.
    async fn post_delete(&self, workspace_id: &str) -> Result<bool, ClientError> {
        let url = self.api.url(&format!("/api/v2/workspaces/{workspace_id}/builds"));
        let body = json!({"transition": "delete"});
        match self.api.send("delete_workspace", |c| self.auth(c.post(&url)).json(&body)).await {
            Ok(_) | Err(ClientError::Status { status: 409, .. }) => Ok(false),
            Err(ClientError::Status { status: 404 | 410, .. }) => Ok(true),
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
        // An agent that never connected ran nothing, whatever its lifecycle says.
        let never = json!({"job": {"status": "succeeded"}, "transition": "start",
                           "resources": [{"agents": [{"id": "a1", "status": "timeout", "lifecycle_state": "created"}]}]});
        match build_progress(&never) {
            WorkspaceProgress::Failed { reason, .. } => assert!(reason.contains("never connected"), "{reason}"),
            other => panic!("{other:?}"),
        }
        // A workspace being stopped or deleted under the run is no fix.
        let deleting = json!({"job": {"status": "running"}, "transition": "delete", "resources": []});
        assert!(matches!(build_progress(&deleting), WorkspaceProgress::Failed { .. }));
    }

    #[test]
    fn a_conflict_is_not_blindly_retried() {
        let body = br#"{"message":"A workspace build is already active."}"#;
        let (message, retryable) = classify(409, &HeaderMap::new(), body);
        assert!(!retryable);
        assert!(message.contains("already active"));
        assert!(classify(503, &HeaderMap::new(), b"{}").1);
    }
}
