//! Senso knowledge base (current Org API or the legacy Developer API) as [`KnowledgeBase`].

use async_trait::async_trait;
use reqwest::header::HeaderMap;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use std::time::Duration;

use crate::config::SensoApi as Generation;
use crate::error::ClientError;
use crate::http::{ApiClient, body_excerpt};
use crate::ports::{DocumentKind, IngestStatus, KnowledgeBase, SearchHit, SearchResults, SearchScope};

const SERVICE: &str = "senso";

pub struct SensoKb {
    api: ApiClient,
    key: SecretString,
    generation: Generation,
    /// Org API folder node ids per document kind (None: the knowledge base's root).
    runbooks_folder: Option<String>,
    resolutions_folder: Option<String>,
}

/// The most results one search may ask for (the official CLI caps `max_results` at 20).
const MAX_RESULTS: u32 = 20;

/// Senso's error envelope is not pinned down: read `error`, `message`, `detail` or `errors[]`.
fn classify(status: u16, _headers: &HeaderMap, body: &[u8]) -> (String, bool) {
    let retryable = matches!(status, 408 | 429) || status >= 500;
    let msg = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        for k in ["error", "message", "detail"] {
            if let Some(s) = v.get(k).and_then(Value::as_str) {
                return Some(s.to_string());
            }
        }
        v.get("errors")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|e| e.get("message").and_then(Value::as_str)).collect::<Vec<_>>().join("; "))
    });
    (body_excerpt(msg.unwrap_or_else(|| String::from_utf8_lossy(body).into_owned()).as_bytes(), 300), retryable)
}

impl crate::http::ApiAdapter for SensoKb {
    fn api_mut(&mut self) -> &mut ApiClient {
        &mut self.api
    }
}

impl SensoKb {
    pub fn new(api_base: &str, key: SecretString, generation: Generation) -> Result<Self, ClientError> {
        Ok(Self {
            api: ApiClient::new(SERVICE, api_base, Duration::from_secs(30), classify)?.redacting(&key),
            key,
            generation,
            runbooks_folder: None,
            resolutions_folder: None,
        })
    }

    /// File runbooks and resolutions into these folders (Org API `kb_folder_node_id`; empty:
    /// the root). The legacy API has no folders: there the search scope alone keeps them apart.
    pub fn with_folders(mut self, runbooks: &str, resolutions: &str) -> Self {
        let folder = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
        self.runbooks_folder = folder(runbooks);
        self.resolutions_folder = folder(resolutions);
        self
    }

    fn path(&self, org: &str, legacy: &str) -> String {
        self.api.url(match self.generation {
            Generation::Org => org,
            Generation::Legacy => legacy,
        })
    }
}

fn contract(detail: impl Into<String>) -> ClientError {
    ClientError::Contract { service: SERVICE, detail: detail.into() }
}

#[async_trait]
impl KnowledgeBase for SensoKb {
    async fn search(&self, query: &str, max_results: u32, scope: &SearchScope) -> Result<SearchResults, ClientError> {
        let url = self.path("/org/search", "/search");
        let wanted = max_results.clamp(1, MAX_RESULTS) as usize;
        let scoped = !scope.content_ids.is_empty();
        let body = match (&self.generation, scoped) {
            // The Org API scopes on the server: only these documents, no fallback to the rest.
            (Generation::Org, true) => json!({"query": query, "max_results": wanted,
                "content_ids": scope.content_ids, "require_scoped_ids": true}),
            // The legacy API cannot scope by document: ask for the most and keep the scope's.
            (Generation::Legacy, true) => json!({"query": query, "max_results": MAX_RESULTS}),
            (_, false) => json!({"query": query, "max_results": wanted}),
        };
        let v: Value = self
            .api
            .read_json("search", |c| c.post(&url).header("X-API-Key", self.key.expose_secret()).json(&body))
            .await?;
        let results =
            v.get("results").and_then(Value::as_array).ok_or_else(|| contract("search response has no results[]"))?;
        let hits = results
            .iter()
            .filter_map(|r| {
                let score = r.get("score").and_then(Value::as_f64)?;
                Some(SearchHit {
                    content_id: r.get("content_id").and_then(Value::as_str).unwrap_or_default().to_string(),
                    title: r.get("title").and_then(Value::as_str).unwrap_or_default().to_string(),
                    score: if score.is_finite() { score.clamp(0.0, 1.0) } else { 0.0 },
                    chunk_text: r.get("chunk_text").and_then(Value::as_str).unwrap_or_default().to_string(),
                })
            })
            // Never a document outside the scope, whatever the service returned.
            .filter(|h: &SearchHit| !scoped || scope.content_ids.contains(&h.content_id))
            .take(wanted)
            .collect();
        Ok(SearchResults { answer: v.get("answer").and_then(Value::as_str).map(str::to_string), hits })
    }

    async fn ingest(&self, kind: DocumentKind, title: &str, text: &str) -> Result<String, ClientError> {
        let url = self.path("/org/kb/raw", "/content/raw");
        let title: String = title.chars().take(255).collect();
        let mut body = json!({"title": title, "text": text});
        let folder = match kind {
            DocumentKind::Runbook => &self.runbooks_folder,
            DocumentKind::Resolution => &self.resolutions_folder,
        };
        if let (Generation::Org, Some(folder)) = (&self.generation, folder) {
            body["kb_folder_node_id"] = json!(folder);
        }
        let resp =
            self.api.send("ingest", |c| c.post(&url).header("X-API-Key", self.key.expose_secret()).json(&body)).await?;
        let v: Value = resp.json(SERVICE)?;
        ["id", "content_id"]
            .iter()
            .find_map(|k| v.get(*k).and_then(Value::as_str))
            .map(str::to_string)
            .ok_or_else(|| contract("ingest response has no id"))
    }

    async fn ingest_status(&self, content_id: &str) -> Result<IngestStatus, ClientError> {
        if !content_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(ClientError::Invalid {
                service: SERVICE,
                detail: "content id has unexpected characters".into(),
            });
        }
        let url = self.path(&format!("/org/content/{content_id}"), &format!("/content/{content_id}"));
        let v: Value =
            self.api.read_json("ingest_status", |c| c.get(&url).header("X-API-Key", self.key.expose_secret())).await?;
        // The legacy API says `completed`, the current one `complete`: both mean done.
        match v.get("processing_status").and_then(Value::as_str) {
            Some("queued") => Ok(IngestStatus::Queued),
            Some("processing") => Ok(IngestStatus::Processing),
            Some("complete") | Some("completed") => Ok(IngestStatus::Complete),
            Some("failed") => Ok(IngestStatus::Failed),
            other => Err(contract(format!("unknown processing_status {other:?}"))),
        }
    }
}
