//! Slack: the Web API, `response_url`, the two-step file upload and signed button clicks.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use selfheal::signature::sign_slack;

use super::{Click, OpenedView, Sim, SlackFile, SlackMessage, header, json_response, lock, slow_until};

impl Sim {
    // ------------------------------------------------------------------ Slack clicks

    /// Click a button on an approval message through the engine's Slack route, signed with the
    /// signing secret. Returns (status, body).
    pub async fn click(&self, approval_id: &str, click: Click, user: &str) -> Result<(u16, Value), String> {
        let action_id = match click {
            Click::Approve => "approve",
            Click::Reject => "reject",
            Click::RejectWithReason => "reject_with_reason",
        };
        let response_url = format!("{}/slack/response/{}", lock(&self.base), self.next_id("r"));
        // Every click carries a fresh trigger id, good for one `views.open` within 3 s.
        let trigger_id = format!("{}.{}.sim", chrono::Utc::now().timestamp(), self.next_id(""));
        lock(&self.triggers).insert(trigger_id.clone(), (Instant::now(), user.to_string()));
        let payload = json!({
            "type": "block_actions",
            "user": {"id": user, "username": user.to_lowercase(), "team_id": "T0SIM"},
            "team": {"id": "T0SIM", "domain": "sim"},
            "api_app_id": "A0SIM",
            "container": {"type": "message", "message_ts": "1", "channel_id": "C0SIM"},
            "channel": {"id": "C0SIM", "name": "incidents"},
            "response_url": response_url,
            "trigger_id": trigger_id,
            "actions": [{"type": "button", "action_id": action_id, "block_id": format!("approval-{approval_id}"),
                         "value": approval_id, "action_ts": "1"}]
        });
        self.post_interaction(&payload).await
    }

    /// Submit the dialog `view_id` as `user` typed `reason` into it (`view_submission`).
    pub async fn submit_view(&self, view_id: &str, user: &str, reason: Option<&str>) -> Result<(u16, Value), String> {
        let opened = lock(&self.views).iter().find(|v| v.id == view_id).cloned().ok_or("no such view")?;
        let state = match reason {
            Some(r) => json!({"values": {"reason": {"reason": {"type": "plain_text_input", "value": r}}}}),
            None => json!({"values": {"reason": {"reason": {"type": "plain_text_input", "value": null}}}}),
        };
        let payload = json!({
            "type": "view_submission",
            "team": {"id": "T0SIM", "domain": "sim"},
            "user": {"id": user, "username": user.to_lowercase(), "team_id": "T0SIM"},
            "api_app_id": "A0SIM",
            "trigger_id": format!("{}.{}.sim", chrono::Utc::now().timestamp(), self.next_id("")),
            "view": {
                "id": opened.id, "type": "modal", "team_id": "T0SIM",
                "callback_id": opened.view.get("callback_id").cloned().unwrap_or(Value::Null),
                "private_metadata": opened.view.get("private_metadata").cloned().unwrap_or(Value::Null),
                "state": state, "hash": "1.abc", "app_id": "A0SIM", "bot_id": "B0SELFHEAL"
            }
        });
        self.post_interaction(&payload).await
    }

    /// A trigger id as Slack hands one out with a click by `user`, issued `age` ago (for tests
    /// that deliver clicks themselves).
    pub fn issue_trigger(&self, user: &str, age: Duration) -> String {
        let trigger_id = format!("{}.{}.sim", chrono::Utc::now().timestamp(), self.next_id(""));
        let issued = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
        lock(&self.triggers).insert(trigger_id.clone(), (issued, user.to_string()));
        trigger_id
    }

    /// The dialogs opened so far.
    pub fn opened_views(&self) -> Vec<OpenedView> {
        lock(&self.views).clone()
    }

    /// POST an interaction payload to the engine, signed with the signing secret.
    async fn post_interaction(&self, payload: &Value) -> Result<(u16, Value), String> {
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
    if method == "views.open" {
        return views_open(&sim, &body);
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
    // A reply names its parent by `thread_ts`; a parent that is not in the channel is refused
    // (assumed: Slack documents `thread_not_found` only for some methods).
    let thread_ts = v.get("thread_ts").and_then(Value::as_str).map(str::to_string);
    if let Some(parent) = &thread_ts
        && !lock(&sim.slack).iter().any(|m| m.kind == "post" && m.channel == channel && &m.ts == parent)
    {
        sim.record("slack", "POST", &path, 200);
        return json_response(StatusCode::OK, json!({"ok": false, "error": "thread_not_found"}));
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
        thread_ts,
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
            if click == Click::RejectWithReason {
                // The dialog opens; the person types why and submits.
                for _ in 0..50 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let view = sim2.opened_views().into_iter().find(|v| v.user == user);
                    if let Some(view) = view {
                        if let Err(e) = sim2.submit_view(&view.id, &user, Some(super::AUTO_REJECT_REASON)).await {
                            tracing::warn!(error = %e, "simulated dialog submission failed");
                        }
                        break;
                    }
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
/// `views.open`: needs a trigger id from a click less than 3 s old (`expired_trigger_id`,
/// `invalid_trigger_id`), and a modal within Slack's limits (title, submit and close 24
/// characters, at most 100 blocks, `private_metadata` 3,000, `callback_id` 255).
fn views_open(sim: &Arc<Sim>, body: &[u8]) -> Response {
    let path = "/api/views.open";
    let fail = |error: &str| {
        sim.record("slack", "POST", path, 200);
        json_response(StatusCode::OK, json!({"ok": false, "error": error}))
    };
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let Some(trigger) = v.get("trigger_id").and_then(Value::as_str) else { return fail("invalid_arguments") };
    let Some((issued, user)) = lock(&sim.triggers).get(trigger).cloned() else { return fail("invalid_trigger_id") };
    if issued.elapsed() > Duration::from_secs(3) {
        return fail("expired_trigger_id");
    }
    let Some(view) = v.get("view").filter(|view| view.get("type").and_then(Value::as_str) == Some("modal")) else {
        return fail("invalid_arguments");
    };
    let text_len =
        |k: &str| view.pointer(&format!("/{k}/text")).and_then(Value::as_str).map_or(0, |t| t.chars().count());
    let too_long = text_len("title") == 0
        || text_len("title") > 24
        || text_len("submit") > 24
        || text_len("close") > 24
        || view.get("blocks").and_then(Value::as_array).is_none_or(|b| b.is_empty() || b.len() > 100)
        || view.get("private_metadata").and_then(Value::as_str).is_some_and(|m| m.len() > 3000)
        || view.get("callback_id").and_then(Value::as_str).is_some_and(|c| c.len() > 255);
    if too_long {
        return fail("invalid_arguments");
    }
    let id = format!("V{}", sim.next_id(""));
    lock(&sim.views).push(OpenedView { id: id.clone(), user, view: view.clone() });
    sim.record("slack", "POST", path, 200);
    json_response(StatusCode::OK, json!({"ok": true, "view": {"id": id, "type": "modal"}}))
}

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
    if method == "users.info" {
        let knobs = lock(&sim.knobs);
        if knobs.slack_no_email_scope {
            return json_response(
                StatusCode::OK,
                json!({"ok": false, "error": "missing_scope", "needed": "users:read.email"}),
            );
        }
        let Some(user) = query.get("user") else {
            return json_response(StatusCode::OK, json!({"ok": false, "error": "invalid_arguments"}));
        };
        return match knobs.slack_user_emails.get(user) {
            Some(email) => json_response(
                StatusCode::OK,
                json!({"ok": true, "user": {"id": user, "name": user.to_lowercase(), "deleted": false, "is_bot": false,
                        "is_email_confirmed": true, "profile": {"email": email}}}),
            ),
            None => json_response(StatusCode::OK, json!({"ok": false, "error": "user_not_found"})),
        };
    }
    if method == "chat.getPermalink" {
        // Only messages that exist have links (`message_not_found` otherwise).
        let (Some(channel), Some(ts)) = (query.get("channel"), query.get("message_ts")) else {
            return json_response(StatusCode::OK, json!({"ok": false, "error": "invalid_arguments"}));
        };
        let exists = lock(&sim.slack).iter().any(|m| m.kind == "post" && &m.channel == channel && &m.ts == ts);
        if !exists {
            return json_response(StatusCode::OK, json!({"ok": false, "error": "message_not_found"}));
        }
        let link = format!("https://selfheal-sim.slack.com/archives/{channel}/p{}", ts.replace('.', ""));
        return json_response(StatusCode::OK, json!({"ok": true, "channel": channel, "permalink": link}));
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
        thread_ts: None,
    });
    sim.record("slack", "POST", &format!("/response/{id}"), 200);
    (StatusCode::OK, "ok").into_response()
}
