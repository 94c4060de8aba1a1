//! Coder: the workspace lifecycle, whose agent runs the template's start script.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::{Build, CoderMode, Sim, Workspace, header, json_response, lock};

fn coder_error(status: StatusCode, message: &str, detail: &str) -> Response {
    json_response(status, json!({"message": message, "detail": detail}))
}

fn coder_auth(sim: &Sim, h: &HeaderMap) -> bool {
    header(h, "coder-session-token") == Some(sim.creds.coder_token.as_str())
}

/// Coder's gate for every call: injected faults on writes, then the session token.
fn coder_guard(sim: &Sim, h: &HeaderMap, method: &str, path: &str) -> Option<Response> {
    if method == "POST"
        && let Some(r) = coder_fault(sim, path)
    {
        return Some(r);
    }
    if !coder_auth(sim, h) {
        sim.record("coder", method, path, 401);
        return Some(coder_error(StatusCode::UNAUTHORIZED, "You are signed out or your session has expired.", ""));
    }
    None
}

/// Injected overload for the Coder API: 503s first, then 429s with Retry-After.
fn coder_fault(sim: &Sim, path: &str) -> Option<Response> {
    let mut k = lock(&sim.knobs);
    if k.coder_unavailable > 0 {
        k.coder_unavailable -= 1;
        drop(k);
        sim.record("coder", "POST", path, 503);
        return Some(coder_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service unavailable",
            "provisioner daemon restarting",
        ));
    }
    if k.coder_rate_limits > 0 {
        k.coder_rate_limits -= 1;
        drop(k);
        sim.record("coder", "POST", path, 429);
        return Some(
            (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "0"), ("content-type", "application/json")],
                r#"{"message":"rate limit exceeded"}"#,
            )
                .into_response(),
        );
    }
    None
}

const NOT_FOUND: &str = "Resource not found or you do not have access to this resource";

/// A build as `GET /workspacebuilds/{id}` shows it: the job, the workspace status it implies,
/// and the agent (only once a start build succeeded).
fn build_json(w: &Workspace, b: &Build, provisioners: u64) -> Value {
    let status = match (b.transition.as_str(), b.job_status.as_str()) {
        (_, "pending") => "pending",
        ("start", "running") => "starting",
        ("stop", "running") => "stopping",
        ("delete", "running") => "deleting",
        ("start", "succeeded") => "running",
        ("stop", "succeeded") => "stopped",
        ("delete", "succeeded") => "deleted",
        (_, other) => other,
    };
    let agents = if b.transition == "start" && b.job_status == "succeeded" {
        json!([{"id": w.agent_id, "status": w.agent_status, "lifecycle_state": w.lifecycle}])
    } else {
        json!([])
    };
    json!({
        "id": b.id, "build_number": b.number, "transition": b.transition, "status": status,
        "workspace_id": w.id, "workspace_name": w.name,
        "job": {"status": b.job_status, "error": b.error},
        "matched_provisioners": {"count": provisioners, "available": provisioners},
        "resources": [{"name": "runner", "agents": agents}]
    })
}

fn workspace_json(w: &Workspace, owner: &str, provisioners: u64) -> Value {
    let latest = w.latest().map_or(Value::Null, |b| build_json(w, b, provisioners));
    json!({"id": w.id, "name": w.name, "owner_name": owner, "created_at": w.created_at.to_rfc3339(),
           "latest_build": latest, "deleted": w.deleted,
           "health": {"healthy": w.agent_status == "connected", "failing_agents": []}})
}

fn provisioners(sim: &Sim) -> u64 {
    if lock(&sim.knobs).coder == CoderMode::NoProvisioners { 0 } else { 1 }
}

/// The workspace template's start script (`infra/coder/main.tf` runs it with `file()`).
pub const TEMPLATE_RUNNER: &str = include_str!("../../../infra/coder/fix.sh");

/// The template's `coder_agent.runner.env`: each environment variable and the parameter it is
/// set from (`tests/tests/suite/coder_template.rs` holds this table to `main.tf`).
pub const TEMPLATE_ENV: &[(&str, &str)] = &[
    ("SELFHEAL_INCIDENT", "incident_id"),
    ("SELFHEAL_SERVICE", "service"),
    ("SELFHEAL_SEVERITY", "severity"),
    ("SELFHEAL_TARGET", "target"),
    ("SELFHEAL_FIX_SCRIPT_B64", "fix_script_b64"),
    ("SELFHEAL_FIX_SCRIPT_SHA256", "fix_script_sha256"),
];

/// The template's `coder_parameter`s (`infra/coder/main.tf`); Coder refuses any other name.
pub const TEMPLATE_PARAMETERS: &[&str] =
    &["incident_id", "service", "severity", "fix_script_b64", "fix_script_sha256", "target", "target_cidr"];

/// The template's parameter `validation` blocks, as Coder enforces them at create time; and
/// Coder stores values in Postgres text, which cannot hold a NUL.
fn template_parameter_problem(parameters: &BTreeMap<String, String>) -> Option<String> {
    if let Some(unknown) = parameters.keys().find(|k| !TEMPLATE_PARAMETERS.contains(&k.as_str())) {
        return Some(format!("{unknown}: Parameter {unknown:?} is not present in the template"));
    }
    let required = ["incident_id", "service", "fix_script_b64", "fix_script_sha256", "target"];
    if let Some(missing) = required.iter().find(|p| !parameters.contains_key(**p)) {
        return Some(format!("parameter {missing} is required"));
    }
    if let Some((name, _)) = parameters.iter().find(|(_, v)| v.contains('\0')) {
        return Some(format!("parameter {name}: invalid byte sequence (NUL)"));
    }
    let get = |k: &str| parameters.get(k).map(String::as_str).unwrap_or_default();
    let id = get("incident_id");
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Some("incident_id: an incident id is 1 to 64 letters, digits, '-' or '_'".into());
    }
    if !matches!(parameters.get("severity").map(String::as_str), None | Some("high" | "low")) {
        return Some("severity: severity is high or low".into());
    }
    let b64 = get("fix_script_b64");
    if !b64.trim_end_matches('=').chars().all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/') {
        return Some("fix_script_b64: the fix script must be base64".into());
    }
    let sha = get("fix_script_sha256");
    if sha.len() != 64 || !sha.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)) {
        return Some("fix_script_sha256: a lowercase hex SHA-256".into());
    }
    None
}

pub(super) async fn coder_create(
    State(sim): State<Arc<Sim>>,
    Path(user): Path<String>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/api/v2/users/{user}/workspaces");
    if let Some(r) = coder_guard(&sim, &h, "POST", &path) {
        return r;
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let name = v.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
    let template_pinned = v.get("template_version_id").is_some() != v.get("template_id").is_some();
    let params = v.get("rich_parameter_values").and_then(Value::as_array).cloned().unwrap_or_default();
    let all_strings = params
        .iter()
        .all(|p| p.get("name").and_then(Value::as_str).is_some() && p.get("value").is_some_and(Value::is_string));
    if !selfheal::adapters::coder::valid_workspace_name(&name) || !template_pinned || !all_strings {
        sim.record("coder", "POST", &path, 400);
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"message": "Validation failed.", "validations": [{"field": "name", "detail": "invalid workspace name, template or parameters"}]}),
        );
    }
    let mut parameters = BTreeMap::new();
    for p in &params {
        if let (Some(n), Some(val)) = (p.get("name").and_then(Value::as_str), p.get("value").and_then(Value::as_str)) {
            parameters.insert(n.to_string(), val.to_string());
        }
    }
    if let Some(problem) = template_parameter_problem(&parameters) {
        sim.record("coder", "POST", &path, 400);
        let (field, detail) = problem.split_once(": ").unwrap_or(("rich_parameter_values", problem.as_str()));
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"message": "Validation failed.", "validations": [{"field": field, "detail": detail}]}),
        );
    }
    let mode = lock(&sim.knobs).coder;
    let (w, build) = {
        let mut c = lock(&sim.coder);
        // A name stays taken until its workspace's delete build succeeded.
        if c.workspaces.values().any(|w| w.name == name && !w.deleted) {
            drop(c);
            sim.record("coder", "POST", &path, 409);
            return coder_error(StatusCode::CONFLICT, format!("Workspace \"{name}\" already exists.").as_str(), "");
        }
        let build = Build {
            id: uuid::Uuid::new_v4().to_string(),
            number: 1,
            transition: "start".into(),
            job_status: "pending".into(),
            error: String::new(),
        };
        let w = Workspace {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.clone(),
            created_at: chrono::Utc::now(),
            builds: vec![build.clone()],
            agent_id: uuid::Uuid::new_v4().to_string(),
            agent_status: "connecting".into(),
            lifecycle: "created".into(),
            logs: Vec::new(),
            deleted: false,
            parameters,
        };
        c.creates += 1;
        c.workspaces.insert(w.id.clone(), w.clone());
        (w, build)
    };
    let out = workspace_json(&w, &user, provisioners(&sim));
    // Without a matching provisioner the job sits in the queue.
    if mode != CoderMode::NoProvisioners {
        tokio::spawn(run_build(sim.clone(), w.id.clone(), build.id, mode));
    }
    let garbled = {
        let mut k = lock(&sim.knobs);
        let garbled = k.coder_create_garbled > 0;
        k.coder_create_garbled = k.coder_create_garbled.saturating_sub(1);
        garbled
    };
    sim.record("coder", "POST", &path, 201);
    if garbled {
        let text = out.to_string();
        let cut: String = text.chars().take(text.chars().count() / 2).collect();
        return (StatusCode::CREATED, [("content-type", "application/json")], cut).into_response();
    }
    json_response(StatusCode::CREATED, out)
}

/// Move build `build_id`'s job from one of `from` to `to` (and apply `f` to the workspace), if
/// it is still there and in one of those states: a build canceled meanwhile is not revived.
fn advance(sim: &Sim, ws: &str, build_id: &str, from: &[&str], to: &str, f: impl FnOnce(&mut Workspace)) -> bool {
    let mut c = lock(&sim.coder);
    let Some(w) = c.workspaces.get_mut(ws) else { return false };
    let Some(b) = w.builds.iter_mut().find(|b| b.id == build_id) else { return false };
    if !from.contains(&b.job_status.as_str()) {
        return false;
    }
    b.job_status = to.into();
    f(w);
    true
}

fn set_ws(sim: &Sim, id: &str, f: impl FnOnce(&mut Workspace)) -> bool {
    let mut c = lock(&sim.coder);
    match c.workspaces.get_mut(id) {
        Some(w) if !w.deleted => {
            f(w);
            true
        }
        _ => false,
    }
}

/// A build's job: `pending`, then `running`, then its outcome, unless canceled on the way.
/// A start build that succeeds hands over to the agent ([`run_agent`]); a delete build that
/// succeeds removes the workspace; a delete build can fail (`coder_delete_failures`).
async fn run_build(sim: Arc<Sim>, ws: String, build_id: String, mode: CoderMode) {
    let transition = {
        let c = lock(&sim.coder);
        c.workspaces.get(&ws).and_then(|w| w.builds.iter().find(|b| b.id == build_id)).map(|b| b.transition.clone())
    };
    let Some(transition) = transition else { return };
    tokio::time::sleep(Duration::from_millis(60)).await;
    if !advance(&sim, &ws, &build_id, &["pending"], "running", |_| {}) {
        return;
    }
    let running = match transition.as_str() {
        "delete" => lock(&sim.knobs).coder_delete_ms,
        "start" if mode == CoderMode::SlowBuild => 1500,
        _ => 60,
    };
    tokio::time::sleep(Duration::from_millis(running)).await;
    match transition.as_str() {
        "delete" => {
            let fail = {
                let mut k = lock(&sim.knobs);
                let fail = k.coder_delete_failures > 0;
                k.coder_delete_failures = k.coder_delete_failures.saturating_sub(1);
                fail
            };
            if fail {
                let failed = advance(&sim, &ws, &build_id, &["running"], "failed", |w| {
                    if let Some(b) = w.builds.last_mut() {
                        b.error =
                            "terraform destroy: context deadline exceeded while deleting kubernetes_pod.runner".into();
                    }
                });
                if failed {
                    lock(&sim.coder).failed_deletes += 1;
                }
                return;
            }
            let done = advance(&sim, &ws, &build_id, &["running"], "succeeded", |w| {
                w.deleted = true;
                w.lifecycle = "off".into();
                w.agent_status = "disconnected".into();
            });
            if done {
                lock(&sim.coder).deletes += 1;
            }
        }
        "stop" => {
            advance(&sim, &ws, &build_id, &["running"], "succeeded", |w| {
                w.lifecycle = "off".into();
                w.agent_status = "disconnected".into();
            });
        }
        _ if mode == CoderMode::BuildFails => {
            advance(&sim, &ws, &build_id, &["running"], "failed", |w| {
                if let Some(b) = w.builds.last_mut() {
                    b.error = "terraform apply failed: image pull error".into();
                }
            });
        }
        _ => {
            let mut parameters = BTreeMap::new();
            let started = advance(&sim, &ws, &build_id, &["running"], "succeeded", |w| {
                if mode == CoderMode::AgentNeverConnects {
                    return;
                }
                w.agent_status = "connected".into();
                w.lifecycle = "starting".into();
                parameters = w.parameters.clone();
            });
            if started {
                run_agent(sim, ws, mode, parameters).await;
            }
        }
    }
}

/// The agent: it runs the template's start script for real, in a subprocess, with the
/// template's environment (each parameter an environment variable, as `coder_agent.runner.env`
/// sets them): the script decodes the fix, checks its hash and runs it against the target. Then
/// ready / start_error / start_timeout. An agent that never connects times out instead (the
/// template's connection timeout, scaled down).
async fn run_agent(sim: Arc<Sim>, id: String, mode: CoderMode, parameters: BTreeMap<String, String>) {
    if mode == CoderMode::AgentNeverConnects {
        tokio::time::sleep(Duration::from_millis(300)).await;
        set_ws(&sim, &id, |w| w.agent_status = "timeout".into());
        return;
    }
    if mode == CoderMode::StartTimeout {
        tokio::time::sleep(Duration::from_millis(200)).await;
        set_ws(&sim, &id, |w| {
            w.lifecycle = "start_timeout".into();
            w.logs.push("fix script exceeded its timeout".into());
        });
        return;
    }
    let mut command = tokio::process::Command::new("bash");
    command.arg("-c").arg(TEMPLATE_RUNNER).kill_on_drop(true);
    for (var, parameter) in TEMPLATE_ENV {
        command.env(var, parameters.get(*parameter).map(String::as_str).unwrap_or_default());
    }
    // The service's target secret, mounted read-only where the runner looks (main.tf).
    let mounted = parameters.get("service").and_then(|s| lock(&sim.knobs).target_secrets.get(s).cloned());
    if let Some(dir) = mounted {
        command.env("SELFHEAL_TARGET_SECRETS", dir);
    }
    let (state, logs) = match tokio::time::timeout(Duration::from_secs(30), command.output()).await {
        Ok(Ok(out)) => {
            let mut logs: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
            logs.extend(String::from_utf8_lossy(&out.stderr).lines().map(|l| format!("stderr: {l}")));
            logs.push(format!("exit status {}", out.status.code().unwrap_or(-1)));
            (if out.status.success() { "ready" } else { "start_error" }, logs)
        }
        Ok(Err(e)) => ("start_error", vec![format!("could not start the script: {e}")]),
        Err(_) => ("start_timeout", vec!["fix script exceeded its timeout".into()]),
    };
    set_ws(&sim, &id, |w| {
        w.lifecycle = state.into();
        w.logs = logs;
    });
}

/// `GET /workspacebuilds/{id}`: any build, of a deleted workspace too.
pub(super) async fn coder_build(State(sim): State<Arc<Sim>>, Path(id): Path<String>, h: HeaderMap) -> Response {
    if let Some(r) = coder_guard(&sim, &h, "GET", "") {
        return r;
    }
    let found = {
        let c = lock(&sim.coder);
        c.workspaces.values().find_map(|w| w.builds.iter().find(|b| b.id == id).map(|b| (w.clone(), b.clone())))
    };
    sim.record("coder", "GET", &format!("/api/v2/workspacebuilds/{id}"), if found.is_some() { 200 } else { 404 });
    match found {
        Some((w, b)) => json_response(StatusCode::OK, build_json(&w, &b, provisioners(&sim))),
        None => coder_error(StatusCode::NOT_FOUND, NOT_FOUND, ""),
    }
}

/// `GET /workspaces/{id}`: 410 Gone once its delete build succeeded.
pub(super) async fn coder_workspace(State(sim): State<Arc<Sim>>, Path(id): Path<String>, h: HeaderMap) -> Response {
    if let Some(r) = coder_guard(&sim, &h, "GET", "") {
        return r;
    }
    let w = lock(&sim.coder).workspaces.get(&id).cloned();
    let path = format!("/api/v2/workspaces/{id}");
    match w {
        None => {
            sim.record("coder", "GET", &path, 404);
            coder_error(StatusCode::NOT_FOUND, NOT_FOUND, "")
        }
        Some(w) if w.deleted => {
            sim.record("coder", "GET", &path, 410);
            coder_error(
                StatusCode::GONE,
                &format!(
                    "Workspace {:?} was deleted, you can view this workspace by specifying '?deleted=true' and trying again.",
                    w.id
                ),
                "",
            )
        }
        Some(w) => {
            sim.record("coder", "GET", &path, 200);
            json_response(StatusCode::OK, workspace_json(&w, "selfheal", provisioners(&sim)))
        }
    }
}

/// `GET /workspaces?q=owner:<user> name:<text>&limit=&offset=`: `name:` matches a substring,
/// case-insensitively; deleted workspaces are not listed. `{"workspaces": [...], "count": N}`.
pub(super) async fn coder_list(
    State(sim): State<Arc<Sim>>,
    axum::extract::Query(query): axum::extract::Query<BTreeMap<String, String>>,
    h: HeaderMap,
) -> Response {
    if let Some(r) = coder_guard(&sim, &h, "GET", "") {
        return r;
    }
    let q = query.get("q").cloned().unwrap_or_default();
    let mut name_filter = String::new();
    for term in q.split_whitespace() {
        match term.split_once(':') {
            Some(("name", v)) => name_filter = v.to_lowercase(),
            Some(("owner", _)) => {}
            _ => {
                sim.record("coder", "GET", "/api/v2/workspaces", 400);
                return json_response(
                    StatusCode::BAD_REQUEST,
                    json!({"message": "Invalid workspace search query.", "validations": [{"field": "q", "detail": format!("unsupported term {term:?}")}]}),
                );
            }
        }
    }
    let limit = query.get("limit").and_then(|l| l.parse::<usize>().ok()).unwrap_or(25).min(100);
    let offset = query.get("offset").and_then(|o| o.parse::<usize>().ok()).unwrap_or(0);
    let all: Vec<Workspace> = lock(&sim.coder)
        .workspaces
        .values()
        .filter(|w| !w.deleted && w.name.to_lowercase().contains(&name_filter))
        .cloned()
        .collect();
    let page: Vec<Value> =
        all.iter().skip(offset).take(limit).map(|w| workspace_json(w, "selfheal", provisioners(&sim))).collect();
    sim.record("coder", "GET", "/api/v2/workspaces", 200);
    json_response(StatusCode::OK, json!({"workspaces": page, "count": all.len()}))
}

/// `PATCH /workspacebuilds/{id}/cancel`: a pending or running job goes `canceling`, then
/// `canceled`; a job that already completed, or was already canceled, is a 400.
pub(super) async fn coder_cancel(State(sim): State<Arc<Sim>>, Path(id): Path<String>, h: HeaderMap) -> Response {
    let path = format!("/api/v2/workspacebuilds/{id}/cancel");
    if let Some(r) = coder_guard(&sim, &h, "PATCH", &path) {
        return r;
    }
    let outcome = {
        let mut c = lock(&sim.coder);
        c.workspaces.values_mut().find_map(|w| {
            let ws = w.id.clone();
            w.builds.iter_mut().find(|b| b.id == id).map(|b| match b.job_status.as_str() {
                "pending" | "running" => {
                    b.job_status = "canceling".into();
                    Ok(ws)
                }
                "canceling" | "canceled" => Err("Job has already been marked as canceled!"),
                _ => Err("Job has already completed!"),
            })
        })
    };
    match outcome {
        None => {
            sim.record("coder", "PATCH", &path, 404);
            coder_error(StatusCode::NOT_FOUND, NOT_FOUND, "")
        }
        Some(Err(message)) => {
            sim.record("coder", "PATCH", &path, 400);
            coder_error(StatusCode::BAD_REQUEST, message, "")
        }
        Some(Ok(ws)) => {
            let (sim2, build) = (sim.clone(), id.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(60)).await;
                advance(&sim2, &ws, &build, &["canceling"], "canceled", |w| {
                    if let Some(b) = w.builds.last_mut() {
                        b.error = "canceled".into();
                    }
                });
            });
            sim.record("coder", "PATCH", &path, 200);
            json_response(StatusCode::OK, json!({"message": "Job has been marked as canceled..."}))
        }
    }
}

pub(super) async fn coder_by_name(
    State(sim): State<Arc<Sim>>,
    Path((user, name)): Path<(String, String)>,
    h: HeaderMap,
) -> Response {
    if let Some(r) = coder_guard(&sim, &h, "GET", "") {
        return r;
    }
    let w = lock(&sim.coder).workspaces.values().find(|w| w.name == name && !w.deleted).cloned();
    sim.record("coder", "GET", &format!("/api/v2/users/{user}/workspace/{name}"), if w.is_some() { 200 } else { 404 });
    match w {
        Some(w) => json_response(StatusCode::OK, workspace_json(&w, &user, provisioners(&sim))),
        None => coder_error(StatusCode::NOT_FOUND, NOT_FOUND, ""),
    }
}

pub(super) async fn coder_logs(State(sim): State<Arc<Sim>>, Path(id): Path<String>, h: HeaderMap) -> Response {
    if let Some(r) = coder_guard(&sim, &h, "GET", "") {
        return r;
    }
    let w = lock(&sim.coder).workspaces.values().find(|w| w.agent_id == id).cloned();
    sim.record("coder", "GET", &format!("/api/v2/workspaceagents/{id}/logs"), if w.is_some() { 200 } else { 404 });
    match w {
        Some(w) => {
            let logs: Vec<Value> = w
                .logs
                .iter()
                .enumerate()
                .map(|(i, l)| json!({"id": i + 1, "created_at": chrono::Utc::now().to_rfc3339(), "output": l, "level": "info"}))
                .collect();
            json_response(StatusCode::OK, Value::Array(logs))
        }
        None => coder_error(StatusCode::NOT_FOUND, NOT_FOUND, ""),
    }
}

/// `POST /workspaces/{id}/builds`: a new build, refused with 409 while the latest build's job
/// is active (pending, running or canceling), as Coder does. The job then runs ([`run_build`]).
pub(super) async fn coder_transition(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/api/v2/workspaces/{id}/builds");
    if let Some(r) = coder_guard(&sim, &h, "POST", &path) {
        return r;
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Some(transition) =
        v.get("transition").and_then(Value::as_str).filter(|t| matches!(*t, "start" | "stop" | "delete"))
    else {
        sim.record("coder", "POST", &path, 400);
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"message": "Validation failed.", "validations": [{"field": "transition", "detail": "required"}]}),
        );
    };
    let mode = lock(&sim.knobs).coder;
    let mut c = lock(&sim.coder);
    let Some(w) = c.workspaces.get_mut(&id).filter(|w| !w.deleted) else {
        drop(c);
        sim.record("coder", "POST", &path, 404);
        return coder_error(StatusCode::NOT_FOUND, NOT_FOUND, "");
    };
    let racing = transition == "delete" && {
        let mut k = lock(&sim.knobs);
        let racing = k.coder_racing_builds > 0;
        k.coder_racing_builds = k.coder_racing_builds.saturating_sub(1);
        racing
    };
    if racing {
        // Autostop got there first: its stop build is now the active one.
        let stop = Build {
            id: uuid::Uuid::new_v4().to_string(),
            number: w.builds.len() as u32 + 1,
            transition: "stop".into(),
            job_status: "pending".into(),
            error: String::new(),
        };
        w.builds.push(stop.clone());
        tokio::spawn(run_build(sim.clone(), w.id.clone(), stop.id, mode));
    }
    if w.latest().is_some_and(Build::active) {
        c.conflicts += 1;
        drop(c);
        sim.record("coder", "POST", &path, 409);
        return coder_error(StatusCode::CONFLICT, "A workspace build is already active.", "");
    }
    let build = Build {
        id: uuid::Uuid::new_v4().to_string(),
        number: w.builds.len() as u32 + 1,
        transition: transition.into(),
        job_status: "pending".into(),
        error: String::new(),
    };
    w.builds.push(build.clone());
    let out = build_json(w, &build, 1);
    let ws = w.id.clone();
    drop(c);
    tokio::spawn(run_build(sim.clone(), ws, build.id, mode));
    sim.record("coder", "POST", &path, 201);
    json_response(StatusCode::CREATED, out)
}
