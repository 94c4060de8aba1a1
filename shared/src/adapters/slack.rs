//! Slack Web API (`chat.postMessage`, `chat.update`, `conversations.history`, the two-step file
//! upload `files.getUploadURLExternal` + `files.completeUploadExternal`) and `response_url`
//! replies as [`ChatOps`].

use async_trait::async_trait;
use reqwest::header::HeaderMap;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;

use crate::error::ClientError;
use crate::http::{ApiClient, default_classifier};
use crate::ports::{ChatMessage, ChatOps, MessageRef, SharedFile};

const SERVICE: &str = "slack";

pub struct SlackApi {
    api: ApiClient,
    token: SecretString,
    channel: String,
}

fn classify(status: u16, headers: &HeaderMap, body: &[u8]) -> (String, bool) {
    default_classifier(status, headers, body)
}

#[derive(Deserialize)]
struct SlackReply {
    ok: bool,
    error: Option<String>,
    channel: Option<String>,
    ts: Option<String>,
    /// `conversations.history`.
    #[serde(default)]
    messages: Vec<serde_json::Value>,
    /// `chat.getPermalink`.
    permalink: Option<String>,
    /// `users.info`.
    user: Option<serde_json::Value>,
    /// `files.getUploadURLExternal`.
    upload_url: Option<String>,
    file_id: Option<String>,
    /// `files.completeUploadExternal`.
    #[serde(default)]
    files: Vec<serde_json::Value>,
}

impl crate::http::ApiAdapter for SlackApi {
    fn api_mut(&mut self) -> &mut ApiClient {
        &mut self.api
    }
}

impl SlackApi {
    pub fn new(api_base: &str, token: SecretString, channel: &str) -> Result<Self, ClientError> {
        if channel.trim().is_empty() {
            return Err(ClientError::Invalid { service: SERVICE, detail: "no Slack channel configured".into() });
        }
        Ok(Self {
            api: ApiClient::new(SERVICE, api_base, Duration::from_secs(10), classify)?.redacting(&token),
            token,
            channel: channel.into(),
        })
    }

    /// Slack answers most failures with HTTP 200 and `ok: false`.
    fn check(&self, reply: SlackReply) -> Result<SlackReply, ClientError> {
        if reply.ok {
            return Ok(reply);
        }
        let error = self.api.scrub(reply.error.unwrap_or_else(|| "unknown_error".into()));
        let retryable =
            matches!(error.as_str(), "ratelimited" | "service_unavailable" | "internal_error" | "fatal_error");
        Err(ClientError::Status { service: SERVICE, status: 200, message: error, retryable })
    }

    /// `chat.postMessage` into `channel`, in the thread of `thread_ts` when given.
    async fn post_message(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        message: &ChatMessage,
    ) -> Result<MessageRef, ClientError> {
        let mut body = json!({"channel": channel, "text": message.text, "blocks": message.blocks});
        if let Some(ts) = thread_ts {
            body["thread_ts"] = json!(ts);
        }
        let reply = self.call("chat.postMessage", &body).await?;
        match (reply.channel, reply.ts) {
            (Some(channel), Some(ts)) => Ok(MessageRef { channel, ts }),
            _ => Err(ClientError::Contract {
                service: SERVICE,
                detail: "chat.postMessage returned no channel/ts".into(),
            }),
        }
    }

    /// The client for the file upload: one attempt per call. The approval step that uploads is
    /// retried whole by the state machine, and three calls with full client retries would not
    /// fit the approval function's time budget (`selfheal::budget`).
    fn once(&self) -> ApiClient {
        self.api.clone().with_retry(crate::http::RetryPolicy { max_retries: 0, ..Default::default() })
    }

    /// A form-encoded Web API call, one attempt (the file-upload methods document form
    /// arguments).
    async fn call_form(&self, method: &str, form: &[(&str, &str)]) -> Result<SlackReply, ClientError> {
        let url = self.api.url(&format!("/{method}"));
        let body = serde_urlencoded::to_string(form)
            .map_err(|e| ClientError::Invalid { service: SERVICE, detail: format!("{method}: {e}") })?;
        let resp = self
            .once()
            .send(method, |c| {
                c.post(&url)
                    .bearer_auth(self.token.expose_secret())
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .body(body.clone())
            })
            .await?;
        self.check(resp.json(SERVICE)?)
    }

    async fn call(&self, method: &str, body: &serde_json::Value) -> Result<SlackReply, ClientError> {
        let url = self.api.url(&format!("/{method}"));
        let resp = self
            .api
            .send(method, |c| {
                c.post(&url)
                    .bearer_auth(self.token.expose_secret())
                    .header("Content-Type", "application/json; charset=utf-8")
                    .json(body)
            })
            .await?;
        self.check(resp.json(SERVICE)?)
    }
}

#[async_trait]
impl ChatOps for SlackApi {
    async fn post(&self, message: &ChatMessage) -> Result<MessageRef, ClientError> {
        self.post_message(&self.channel, None, message).await
    }

    async fn update(&self, at: &MessageRef, message: &ChatMessage) -> Result<(), ClientError> {
        self.call(
            "chat.update",
            &json!({"channel": at.channel, "ts": at.ts, "text": message.text, "blocks": message.blocks}),
        )
        .await?;
        Ok(())
    }

    async fn respond(
        &self,
        response_url: &str,
        message: &ChatMessage,
        replace_original: bool,
        ephemeral: bool,
    ) -> Result<(), ClientError> {
        let mut body = json!({"text": message.text, "blocks": message.blocks, "replace_original": replace_original});
        if ephemeral {
            body["response_type"] = json!("ephemeral");
        }
        let url = response_url.to_string();
        self.api.send("response_url", |c| c.post(&url).json(&body)).await?;
        Ok(())
    }

    /// The two-step upload (needs `files:write`): `files.getUploadURLExternal` for an upload URL
    /// and a file id, the bytes to that URL, then `files.completeUploadExternal` shares the file
    /// into the channel.
    async fn upload_file(&self, filename: &str, title: &str, content: &str) -> Result<SharedFile, ClientError> {
        let length = content.len().to_string();
        let reply =
            self.call_form("files.getUploadURLExternal", &[("filename", filename), ("length", &length)]).await?;
        let (Some(upload_url), Some(file_id)) = (reply.upload_url, reply.file_id) else {
            return Err(ClientError::Contract {
                service: SERVICE,
                detail: "files.getUploadURLExternal returned no upload_url/file_id".into(),
            });
        };
        let bytes = content.to_string();
        self.once()
            .send("file upload", |c| {
                c.post(&upload_url).header("Content-Type", "text/plain; charset=utf-8").body(bytes.clone())
            })
            .await?;
        let files = json!([{"id": file_id, "title": title}]).to_string();
        let done =
            self.call_form("files.completeUploadExternal", &[("files", &files), ("channel_id", &self.channel)]).await?;
        let shared = done
            .files
            .iter()
            .find(|f| f.get("id").and_then(serde_json::Value::as_str) == Some(file_id.as_str()))
            .ok_or_else(|| ClientError::Contract {
                service: SERVICE,
                detail: "files.completeUploadExternal did not return the uploaded file".into(),
            })?;
        Ok(SharedFile {
            id: file_id.clone(),
            title: shared.get("title").and_then(serde_json::Value::as_str).unwrap_or(title).to_string(),
        })
    }

    /// `chat.postMessage` with `thread_ts`: a reply under `parent`, in its channel.
    async fn reply_in_thread(&self, parent: &MessageRef, message: &ChatMessage) -> Result<MessageRef, ClientError> {
        self.post_message(&parent.channel, Some(&parent.ts), message).await
    }

    /// `users.info`: the user's profile email (needs `users:read.email`; without it Slack
    /// answers `missing_scope`, returned as the error). `Ok(None)`: the profile has no email.
    async fn user_email(&self, user: &str) -> Result<Option<String>, ClientError> {
        let url = self.api.url("/users.info");
        let reply = self
            .api
            .read_json("users.info", |c| c.get(&url).bearer_auth(self.token.expose_secret()).query(&[("user", user)]))
            .await?;
        let reply = self.check(reply)?;
        // Only a live person whose email Slack confirmed: a deactivated account, a bot or an
        // unconfirmed address proves nothing about who is on call.
        let user = reply.user.as_ref().filter(|u| {
            let flag = |k: &str| u.get(k).and_then(serde_json::Value::as_bool);
            flag("deleted") != Some(true) && flag("is_bot") != Some(true) && flag("is_email_confirmed") == Some(true)
        });
        Ok(user
            .and_then(|u| u.pointer("/profile/email"))
            .and_then(serde_json::Value::as_str)
            .map(|e| e.trim().to_lowercase())
            .filter(|e| e.contains('@')))
    }

    /// `views.open`: a modal for the clicker (the click's `trigger_id` expires after 3 s).
    async fn open_view(&self, trigger_id: &str, view: &serde_json::Value) -> Result<(), ClientError> {
        self.call("views.open", &json!({"trigger_id": trigger_id, "view": view})).await.map(|_| ())
    }

    /// `chat.getPermalink` (any bot token may call it; the link opens the message in Slack).
    async fn permalink(&self, at: &MessageRef) -> Result<String, ClientError> {
        let url = self.api.url("/chat.getPermalink");
        let reply = self
            .api
            .read_json("chat.getPermalink", |c| {
                c.get(&url)
                    .bearer_auth(self.token.expose_secret())
                    .query(&[("channel", at.channel.as_str()), ("message_ts", at.ts.as_str())])
            })
            .await?;
        let link = self.check(reply)?.permalink.unwrap_or_default();
        // Only a Slack web link goes into a note: anything else is not what Slack documents.
        if !link.starts_with("https://") || link.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ClientError::Contract {
                service: SERVICE,
                detail: "chat.getPermalink returned no https link".into(),
            });
        }
        Ok(link)
    }

    /// `conversations.history` from `since` (needs `channels:history`, or `groups:history` for a
    /// private channel; without it Slack answers `missing_scope` and this returns the error).
    async fn find_posted(
        &self,
        since: chrono::DateTime<chrono::Utc>,
        marker: &str,
    ) -> Result<Option<MessageRef>, ClientError> {
        let url = self.api.url("/conversations.history");
        // A second of slack for clock skew between us and Slack.
        let oldest = format!("{}.000000", since.timestamp() - 1);
        let history = self
            .api
            .read_json("conversations.history", |c| {
                c.get(&url).bearer_auth(self.token.expose_secret()).query(&[
                    ("channel", self.channel.as_str()),
                    ("oldest", oldest.as_str()),
                    ("limit", "100"),
                ])
            })
            .await?;
        let history = self.check(history)?;
        Ok(history
            .messages
            .iter()
            .find(|m| m.get("blocks").is_some_and(|b| b.to_string().contains(marker)))
            .and_then(|m| m.get("ts").and_then(serde_json::Value::as_str))
            .map(|ts| MessageRef { channel: self.channel.clone(), ts: ts.to_string() }))
    }
}
