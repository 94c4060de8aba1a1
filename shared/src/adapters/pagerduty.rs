//! PagerDuty REST API v2 as the [`IncidentSource`].

use async_trait::async_trait;
use reqwest::header::HeaderMap;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;

use crate::domain::{IncidentId, NoteId};
use crate::error::ClientError;
use crate::http::{ApiClient, body_excerpt};
use crate::ports::{IncidentSource, SourceIncident, SourceNote, SourceStatus};

const SERVICE: &str = "pagerduty";
const ACCEPT: &str = "application/vnd.pagerduty+json;version=2";

pub struct PagerDutyRest {
    api: ApiClient,
    token: SecretString,
    from: String,
}

/// `{"error":{"message","code","errors"}}` → "code N: message (details)"; 408/429/5xx retry.
fn classify(status: u16, _headers: &HeaderMap, body: &[u8]) -> (String, bool) {
    #[derive(Deserialize)]
    struct Envelope {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        message: Option<String>,
        code: Option<i64>,
        #[serde(default)]
        errors: Vec<String>,
    }
    let retryable = matches!(status, 408 | 429) || status >= 500;
    match serde_json::from_slice::<Envelope>(body) {
        Ok(e) => {
            let mut msg = format!("code {}: {}", e.error.code.unwrap_or(0), e.error.message.unwrap_or_default());
            if !e.error.errors.is_empty() {
                msg.push_str(&format!(" ({})", e.error.errors.join("; ")));
            }
            (body_excerpt(msg.as_bytes(), 300), retryable || e.error.code == Some(2020))
        }
        Err(_) => (body_excerpt(body, 200), retryable),
    }
}

impl crate::http::ApiAdapter for PagerDutyRest {
    fn api_mut(&mut self) -> &mut ApiClient {
        &mut self.api
    }
}

impl PagerDutyRest {
    pub fn new(api_base: &str, token: SecretString, from_email: &str) -> Result<Self, ClientError> {
        if from_email.trim().is_empty() || !from_email.contains('@') {
            return Err(ClientError::Invalid {
                service: SERVICE,
                detail: "pagerduty_from_email must be a user's email".into(),
            });
        }
        Ok(Self {
            api: ApiClient::new(SERVICE, api_base, Duration::from_secs(10), classify)?.redacting(&token),
            token,
            from: from_email.to_string(),
        })
    }

    fn auth(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        rb.header("Authorization", format!("Token token={}", self.token.expose_secret()))
            .header("Accept", ACCEPT)
            .header("Content-Type", "application/json")
    }
}

/// On-call pages read at most (100 entries each): a policy's first level is a few people.
pub const MAX_ONCALL_PAGES: u32 = 5;

#[derive(Deserialize)]
struct OncallsPage {
    #[serde(default)]
    oncalls: Vec<Oncall>,
    #[serde(default)]
    more: bool,
}

#[derive(Deserialize)]
struct Oncall {
    escalation_level: Option<u32>,
    /// With `include[]=users` the full user, else a reference (no email).
    user: Option<OncallUser>,
}

#[derive(Deserialize)]
struct OncallUser {
    email: Option<String>,
}

#[derive(Deserialize)]
struct NotesResponse {
    notes: Vec<RestNote>,
}

#[derive(Deserialize)]
struct RestNote {
    id: String,
    #[serde(default)]
    user: Option<RestRef>,
    #[serde(default)]
    content: String,
}

#[derive(Deserialize)]
struct RestRef {
    id: Option<String>,
}

#[derive(Deserialize)]
struct NoteResponse {
    note: RestNote,
}

#[derive(Deserialize)]
struct IncidentResponse {
    incident: RestIncident,
}

#[derive(Deserialize)]
struct RestIncident {
    status: String,
    #[serde(default)]
    incident_key: Option<String>,
}

#[async_trait]
impl IncidentSource for PagerDutyRest {
    /// `GET /incidents/{id}`. Made with `send` (one parse, no re-read of a malformed body): the
    /// execution gate is its only caller, and an answer it cannot read refuses the fix rather
    /// than spending the remediate function's time budget re-asking.
    async fn get_incident(&self, incident: &IncidentId) -> Result<SourceIncident, ClientError> {
        let url = self.api.url(&format!("/incidents/{incident}"));
        let resp = self.api.send("get_incident", |c| self.auth(c.get(&url))).await?;
        let body: IncidentResponse = resp.json(SERVICE)?;
        let status = match body.incident.status.as_str() {
            "triggered" => SourceStatus::Triggered,
            "acknowledged" => SourceStatus::Acknowledged,
            "resolved" => SourceStatus::Resolved,
            other => {
                return Err(ClientError::Contract {
                    service: SERVICE,
                    detail: format!(
                        "incident status {:?} is not triggered/acknowledged/resolved",
                        other.chars().take(40).collect::<String>()
                    ),
                });
            }
        };
        Ok(SourceIncident { status, incident_key: body.incident.incident_key })
    }

    async fn list_notes(&self, incident: &IncidentId) -> Result<Vec<SourceNote>, ClientError> {
        let url = self.api.url(&format!("/incidents/{incident}/notes"));
        let body: NotesResponse = self.api.read_json("list_notes", |c| self.auth(c.get(&url))).await?;
        body.notes
            .into_iter()
            .map(|n| {
                Ok(SourceNote {
                    id: NoteId::parse(n.id)
                        .map_err(|e| ClientError::Contract { service: SERVICE, detail: e.to_string() })?,
                    author_id: n.user.and_then(|u| u.id),
                    content: n.content,
                })
            })
            .collect()
    }

    async fn add_note(&self, incident: &IncidentId, content: &str) -> Result<NoteId, ClientError> {
        let url = self.api.url(&format!("/incidents/{incident}/notes"));
        // PagerDuty notes are limited in size; keep the summary readable and bounded.
        let content: String = content.chars().take(24_000).collect();
        let body = json!({"note": {"content": content}});
        let resp =
            self.api.send("add_note", |c| self.auth(c.post(&url)).header("From", &self.from).json(&body)).await?;
        let note: NoteResponse = resp.json(SERVICE)?;
        NoteId::parse(note.note.id).map_err(|e| ClientError::Contract { service: SERVICE, detail: e.to_string() })
    }

    /// `GET /oncalls?escalation_policy_ids[]=…&include[]=users&earliest=true`, every page
    /// (classic `offset`/`limit`/`more` pagination, at most [`MAX_ONCALL_PAGES`]); the emails of
    /// the level-1 users on call now.
    async fn first_oncall_emails(&self, escalation_policy: &str) -> Result<Vec<String>, ClientError> {
        if escalation_policy.is_empty() || !escalation_policy.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(ClientError::Invalid {
                service: SERVICE,
                detail: "escalation policy id is not a PagerDuty id".into(),
            });
        }
        let url = self.api.url("/oncalls");
        let mut emails = Vec::new();
        let mut offset = 0u32;
        for _ in 0..MAX_ONCALL_PAGES {
            let page: OncallsPage = self
                .api
                .read_json("list_oncalls", |c| {
                    self.auth(c.get(&url)).query(&[
                        ("escalation_policy_ids[]", escalation_policy),
                        ("include[]", "users"),
                        ("earliest", "true"),
                        ("limit", "100"),
                        ("offset", &offset.to_string()),
                    ])
                })
                .await?;
            let n = page.oncalls.len() as u32;
            emails.extend(
                page.oncalls
                    .into_iter()
                    .filter(|o| o.escalation_level == Some(1))
                    .filter_map(|o| o.user.and_then(|u| u.email))
                    .map(|e| e.trim().to_lowercase())
                    .filter(|e| e.contains('@')),
            );
            if !page.more || n == 0 {
                emails.sort();
                emails.dedup();
                return Ok(emails);
            }
            offset += n;
        }
        Err(ClientError::Contract {
            service: SERVICE,
            detail: format!("more than {MAX_ONCALL_PAGES} pages of on-calls"),
        })
    }

    async fn resolve(&self, incident: &IncidentId, resolution: &str) -> Result<(), ClientError> {
        let url = self.api.url(&format!("/incidents/{incident}"));
        let resolution: String = resolution.chars().take(1000).collect();
        let body = json!({"incident": {"type": "incident_reference", "status": "resolved", "resolution": resolution}});
        match self.api.send("resolve", |c| self.auth(c.put(&url)).header("From", &self.from).json(&body)).await {
            Ok(_) => Ok(()),
            // 1001 Incident Already Resolved: the goal is reached.
            Err(ClientError::Status { message, .. }) if message.starts_with("code 1001") => Ok(()),
            Err(e) => Err(e),
        }
    }
}
