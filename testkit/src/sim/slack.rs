//! Slack: the Web API, `response_url`, the two-step file upload and signed button clicks.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use selfheal::signature::sign_slack;

use super::{Click, Sim, SlackFile, SlackMessage, header, json_response, lock, slow_until};

impl Sim {
    // ------------------------------------------------------------------ Slack clicks

    /// Click a button on an approval message through the engine's Slack route, signed with the
    /// signing secret. Returns (status, body).
    pub async fn click(&self, approval_id: &str, click: Click, user: &str) -> Result<(u16, Value), String> {
        let action_id = match click {
            Click::Approve => "approve",
            Click::Reject => "reject",
        };
        let response_url = format!("{}/slack/response/{}", lock(&self.base), self.next_id("r"));
        let payload = json!({
            "type": "block_actions",
            "user": {"id": user, "username": user.to_lowercase(), "team_id": "T0SIM"},
            "team": {"id": "T0SIM", "domain": "sim"},
            "api_app_id": "A0SIM",
            "container": {"type": "message", "message_ts": "1", "channel_id": "C0SIM"},
            "channel": {"id": "C0SIM", "name": "incidents"},
            "response_url": response_url,
            "trigger_id": "1.2.3",
            "actions": [{"type": "button", "action_id": action_id, "block_id": format!("approval-{approval_id}"),
                         "value": approval_id, "action_ts": "1"}]
        });
        let body = serde_urlencoded::to_string([("payload", payload.to_string())]).map_err(|e| e.to_string())?;
        let ts = chrono::Utc::now().timestamp();
        let sig = sign_slack(self.creds.slack_signing_secret.as_bytes(), ts, body.as_bytes());
        let url = format!("{}/slack/interactions", lock(&self.engine_base));
        let resp = self
            .http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-slack-request-timestamp", ts.to_string())
            .header("x-slack-signature", sig)
            .body(body)
            .send()
            .await
            .map_err(|e| format!("click failed: {e}"))?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }

    /// The approval id carried by a message's buttons, if it has any.
    pub fn approval_id_of(message: &SlackMessage) -> Option<String> {
        message.blocks.as_array()?.iter().find_map(|b| {
            b.get("elements")?
                .as_array()?
                .iter()
                .find_map(|e| e.get("value").and_then(Value::as_str).map(str::to_string))
        })
    }
}

pub(super) async fn slack_method(
    State(sim): State<Arc<Sim>>,
    Path(method): Path<String>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    let ok_auth = header(&h, "authorization") == Some(&format!("Bearer {}", sim.creds.slack_bot_token));
    let path = format!("/api/{method}");
    if !ok_auth {
        sim.record("slack", "POST", &path, 200);
        return json_response(StatusCode::OK, json!({"ok": false, "error": "invalid_auth"}));
    }
    if method.starts_with("files.") {
        return slack_files_method(&sim, &method, &h, &body);
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let channel = v.get("channel").and_then(Value::as_str).unwrap_or_default().to_string();
    let text = v.get("text").and_then(Value::as_str).unwrap_or_default().to_string();
    if channel.is_empty() || (text.is_empty() && v.get("blocks").is_none()) {
        sim.record("slack", "POST", &path, 200);
        return json_response(StatusCode::OK, json!({"ok": false, "error": "invalid_arguments"}));
    }
    if v.get("blocks").and_then(Value::as_array).is_some_and(|b| b.len() > 50) {
        sim.record("slack", "POST", &path, 200);
        return json_response(StatusCode::OK, json!({"ok": false, "error": "invalid_blocks"}));
    }
    let ts = match method.as_str() {
        "chat.postMessage" => {
            format!("{}.{:06}", chrono::Utc::now().timestamp(), sim.next_id("").parse::<u64>().unwrap_or(0))
        }
        "chat.update" => v.get("ts").and_then(Value::as_str).unwrap_or_default().to_string(),
        _ => {
            sim.record("slack", "POST", &path, 200);
            return json_response(StatusCode::OK, json!({"ok": false, "error": "unknown_method"}));
        }
    };
    let message = SlackMessage {
        channel: channel.clone(),
        ts: ts.clone(),
        text,
        blocks: v.get("blocks").cloned().unwrap_or(Value::Null),
        kind: if method == "chat.update" { "update" } else { "post" },
    };
    let approval = Sim::approval_id_of(&message);
    lock(&sim.slack).push(message);
    sim.record("slack", "POST", &path, 200);
    let auto = lock(&sim.knobs).auto_click.clone();
    if let (Some(approval), Some((click, user))) = (approval, auto) {
        let sim2 = sim.clone();
        tokio::spawn(async move {
            // A person reads the message before clicking, and clicks again when Slack shows an
            // error (the app did not answer).
            for attempt in 0..6u32 {
                tokio::time::sleep(Duration::from_millis(150 << attempt)).await;
                match sim2.click(&approval, click, &user).await {
                    Ok((status, _)) if status < 500 => break,
                    Ok((status, _)) => tracing::warn!(status, "simulated click answered with an error"),
                    Err(e) => tracing::warn!(error = %e, "simulated click failed"),
                }
            }
        });
    }
    json_response(StatusCode::OK, json!({"ok": true, "channel": channel, "ts": ts}))
}

/// The two file-upload methods, form-encoded as documented: `files.getUploadURLExternal`
/// (`filename`, `length` → `upload_url`, `file_id`) and `files.completeUploadExternal` (`files`
/// as a JSON array of `{id, title}`, `channel_id` → `files`). Completing a file whose bytes were
/// never uploaded, or whose size is not the announced `length`, fails as Slack does.
fn slack_files_method(sim: &Arc<Sim>, method: &str, h: &HeaderMap, body: &[u8]) -> Response {
    let path = format!("/api/{method}");
    sim.record("slack", "POST", &path, 200);
    let fail = |error: &str| json_response(StatusCode::OK, json!({"ok": false, "error": error}));
    if !header(h, "content-type").is_some_and(|c| c.starts_with("application/x-www-form-urlencoded")) {
        return fail("invalid_form_data");
    }
    let form: BTreeMap<String, String> = serde_urlencoded::from_bytes(body).unwrap_or_default();
    if lock(&sim.knobs).slack_uploads_disabled {
        return fail("file_uploads_disabled");
    }
    match method {
        "files.getUploadURLExternal" => {
            let (Some(filename), Some(length)) =
                (form.get("filename"), form.get("length").and_then(|l| l.parse::<usize>().ok()))
            else {
                return fail("invalid_arguments");
            };
            if length == 0 {
                return fail("missing_argument");
            }
            let id = sim.next_id("F0SIM");
            lock(&sim.slack_files).push(SlackFile {
                id: id.clone(),
                filename: filename.clone(),
                length,
                content: None,
                title: None,
                channel: None,
            });
            let upload_url = format!("{}/slack/upload/{id}", lock(&sim.base));
            json_response(StatusCode::OK, json!({"ok": true, "upload_url": upload_url, "file_id": id}))
        }
        "files.completeUploadExternal" => {
            let Some(files) = form.get("files").and_then(|f| serde_json::from_str::<Vec<Value>>(f).ok()) else {
                return fail("invalid_arguments");
            };
            let channel = form.get("channel_id").cloned();
            let mut done = Vec::new();
            let mut all = lock(&sim.slack_files);
            for f in &files {
                let id = f.get("id").and_then(Value::as_str).unwrap_or_default();
                let Some(file) = all.iter_mut().find(|x| x.id == id) else { return fail("file_not_found") };
                if file.content.as_ref().is_none_or(|c| c.len() != file.length) {
                    return fail("file_upload_size_mismatch");
                }
                file.title = f.get("title").and_then(Value::as_str).map(str::to_string);
                file.channel.clone_from(&channel);
                done.push(json!({"id": file.id, "title": file.title, "name": file.filename}));
            }
            json_response(StatusCode::OK, json!({"ok": true, "files": done}))
        }
        _ => fail("unknown_method"),
    }
}

/// The upload URL `files.getUploadURLExternal` hands out: raw bytes (or a multipart form) in,
/// HTTP 200 out.
pub(super) async fn slack_upload(State(sim): State<Arc<Sim>>, Path(file_id): Path<String>, body: Bytes) -> Response {
    let mut all = lock(&sim.slack_files);
    let Some(file) = all.iter_mut().find(|f| f.id == file_id) else {
        drop(all);
        sim.record("slack", "POST", "/upload", 404);
        return (StatusCode::NOT_FOUND, "unknown upload").into_response();
    };
    file.content = Some(String::from_utf8_lossy(&body).into_owned());
    drop(all);
    sim.record("slack", "POST", "/upload", 200);
    (StatusCode::OK, format!("OK - {}", body.len())).into_response()
}

/// Read methods: `conversations.history` (newest first, `oldest` inclusive enough for us).
pub(super) async fn slack_read(
    State(sim): State<Arc<Sim>>,
    Path(method): Path<String>,
    axum::extract::Query(query): axum::extract::Query<BTreeMap<String, String>>,
    h: HeaderMap,
) -> Response {
    let path = format!("/api/{method}");
    sim.record("slack", "GET", &path, 200);
    if header(&h, "authorization") != Some(&format!("Bearer {}", sim.creds.slack_bot_token)) {
        return json_response(StatusCode::OK, json!({"ok": false, "error": "invalid_auth"}));
    }
    if method != "conversations.history" {
        return json_response(StatusCode::OK, json!({"ok": false, "error": "unknown_method"}));
    }
    let Some(channel) = query.get("channel") else {
        return json_response(StatusCode::OK, json!({"ok": false, "error": "channel_not_found"}));
    };
    let oldest = query.get("oldest").and_then(|o| o.parse::<f64>().ok()).unwrap_or(0.0);
    let limit = query.get("limit").and_then(|l| l.parse::<usize>().ok()).unwrap_or(100).clamp(1, 999);
    let messages: Vec<Value> = lock(&sim.slack)
        .iter()
        .rev()
        .filter(|m| m.kind == "post" && &m.channel == channel)
        .filter(|m| m.ts.parse::<f64>().is_ok_and(|ts| ts >= oldest))
        .take(limit)
        .map(|m| json!({"type": "message", "bot_id": "B0SELFHEAL", "text": m.text, "ts": m.ts, "blocks": m.blocks}))
        .collect();
    json_response(StatusCode::OK, json!({"ok": true, "messages": messages, "has_more": false}))
}

pub(super) async fn slack_response(State(sim): State<Arc<Sim>>, Path(id): Path<String>, body: Bytes) -> Response {
    let until = lock(&sim.knobs).slack_response_slow_until;
    slow_until(until).await;
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    lock(&sim.slack).push(SlackMessage {
        channel: "response_url".into(),
        ts: id.clone(),
        text: v.get("text").and_then(Value::as_str).unwrap_or_default().to_string(),
        blocks: v.get("blocks").cloned().unwrap_or(Value::Null),
        kind: if v.get("response_type").and_then(Value::as_str) == Some("ephemeral") {
            "ephemeral"
        } else {
            "response"
        },
    });
    sim.record("slack", "POST", &format!("/response/{id}"), 200);
    (StatusCode::OK, "ok").into_response()
}
