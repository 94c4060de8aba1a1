//! Senso: search and asynchronous ingestion.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{SensoDoc, Sim, header, json_response, lock};

fn senso_auth(sim: &Sim, h: &HeaderMap) -> bool {
    header(h, "x-api-key") == Some(sim.creds.senso_key.as_str())
}

const STOPWORDS: &[&str] = &[
    "the", "and", "for", "with", "from", "that", "this", "are", "was", "were", "has", "have", "not", "but", "its",
    "into", "than", "then", "when", "service", "after", "before", "because",
];

fn tokens(text: &str) -> std::collections::BTreeSet<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|t| t.len() >= 3 && !STOPWORDS.contains(t))
        .map(str::to_string)
        .collect()
}

/// Score: the share of the query's terms the document contains (0..1), best first. Documents
/// are searchable only once processed; `scope` keeps only those content ids.
fn score(sim: &Sim, q: &std::collections::BTreeSet<String>, scope: Option<&[String]>) -> Vec<(f64, SensoDoc)> {
    let mut scored: Vec<(f64, SensoDoc)> = lock(&sim.senso)
        .iter()
        .filter(|d| d.created.elapsed() >= Duration::from_millis(50))
        .filter(|d| scope.is_none_or(|ids| ids.contains(&d.id)))
        .map(|d| {
            let dt = tokens(&format!("{} {}", d.title, d.text));
            let hit = q.iter().filter(|t| dt.contains(*t)).count();
            ((hit as f64 / q.len().max(1) as f64).min(1.0), d.clone())
        })
        .filter(|(s, _)| *s > 0.0)
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored
}

pub(super) async fn senso_search(State(sim): State<Arc<Sim>>, h: HeaderMap, body: Bytes) -> Response {
    if !senso_auth(&sim, &h) {
        sim.record("senso", "POST", "/org/search", 401);
        return json_response(StatusCode::UNAUTHORIZED, json!({"error": "invalid API key"}));
    }
    {
        let mut knobs = lock(&sim.knobs);
        if knobs.senso_rate_limits > 0 {
            knobs.senso_rate_limits -= 1;
            drop(knobs);
            sim.record("senso", "POST", "/org/search", 429);
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "0")],
                json!({"error": "rate limited"}).to_string(),
            )
                .into_response();
        }
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Some(query) = v.get("query").and_then(Value::as_str).filter(|q| !q.trim().is_empty()) else {
        sim.record("senso", "POST", "/org/search", 400);
        return json_response(StatusCode::BAD_REQUEST, json!({"error": "query is required"}));
    };
    let max = v.get("max_results").and_then(Value::as_u64).unwrap_or(5).clamp(1, 20) as usize;
    // `content_ids` scopes the search; without `require_scoped_ids` Senso may fall back to all
    // content when the scoped ones match nothing (the official CLI's help).
    let scope: Option<Vec<String>> = match v.get("content_ids") {
        None | Some(Value::Null) => None,
        Some(Value::Array(ids)) if ids.iter().all(Value::is_string) => {
            Some(ids.iter().filter_map(Value::as_str).map(str::to_string).collect())
        }
        Some(_) => {
            sim.record("senso", "POST", "/org/search", 422);
            return json_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"errors": [{"field": "content_ids", "message": "must be an array of content ids"}]}),
            );
        }
    };
    let required = v.get("require_scoped_ids").and_then(Value::as_bool).unwrap_or(false);
    let q = tokens(query);
    let mut scored = score(&sim, &q, scope.as_deref());
    if scored.is_empty() && scope.is_some() && !required {
        scored = score(&sim, &q, None);
    }
    scored.truncate(max);
    let results: Vec<Value> = scored
        .iter()
        .map(|(s, d)| json!({"content_id": d.id, "version_id": format!("{}-v1", d.id), "chunk_index": 0,
                              "chunk_text": d.text.chars().take(1500).collect::<String>(), "score": (s * 1000.0).round() / 1000.0,
                              "title": d.title, "vector_id": format!("vec-{}", d.id)}))
        .collect();
    let answer = if results.is_empty() {
        "No results found for your query.".to_string()
    } else {
        format!("Found {} runbooks.", results.len())
    };
    sim.record("senso", "POST", "/org/search", 200);
    json_response(
        StatusCode::OK,
        json!({"query": query, "answer": answer, "results": results, "total_results": scored.len(), "max_results": max, "processing_time_ms": 3}),
    )
}

pub(super) async fn senso_ingest(State(sim): State<Arc<Sim>>, h: HeaderMap, body: Bytes) -> Response {
    if !senso_auth(&sim, &h) {
        sim.record("senso", "POST", "/org/kb/raw", 401);
        return json_response(StatusCode::UNAUTHORIZED, json!({"error": "invalid API key"}));
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (Some(title), Some(text)) = (v.get("title").and_then(Value::as_str), v.get("text").and_then(Value::as_str))
    else {
        sim.record("senso", "POST", "/org/kb/raw", 400);
        return json_response(StatusCode::BAD_REQUEST, json!({"error": "title and text are required"}));
    };
    if title.is_empty() || title.chars().count() > 255 {
        sim.record("senso", "POST", "/org/kb/raw", 400);
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"errors": [{"field": "title", "message": "1-255 characters"}]}),
        );
    }
    let folder = match v.get("kb_folder_node_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(f)) if lock(&sim.knobs).senso_folders.contains(f) => Some(f.clone()),
        Some(Value::String(_)) => {
            sim.record("senso", "POST", "/org/kb/raw", 404);
            return json_response(StatusCode::NOT_FOUND, json!({"error": "folder not found"}));
        }
        Some(_) => {
            sim.record("senso", "POST", "/org/kb/raw", 422);
            return json_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"errors": [{"field": "kb_folder_node_id", "message": "must be a folder node id"}]}),
            );
        }
    };
    let id = uuid::Uuid::new_v4().to_string();
    lock(&sim.senso).push(SensoDoc {
        id: id.clone(),
        title: title.into(),
        text: text.into(),
        folder,
        created: Instant::now(),
    });
    sim.record("senso", "POST", "/org/kb/raw", 202);
    json_response(
        StatusCode::ACCEPTED,
        json!({"id": id, "title": title, "processing_status": "queued", "type": "raw", "version_num": 1}),
    )
}

pub(super) async fn senso_content(State(sim): State<Arc<Sim>>, Path(id): Path<String>, h: HeaderMap) -> Response {
    if !senso_auth(&sim, &h) {
        return json_response(StatusCode::UNAUTHORIZED, json!({"error": "invalid API key"}));
    }
    let doc = lock(&sim.senso).iter().find(|d| d.id == id).cloned();
    sim.record("senso", "GET", &format!("/org/content/{id}"), if doc.is_some() { 200 } else { 404 });
    match doc {
        None => json_response(StatusCode::NOT_FOUND, json!({"error": "content not found"})),
        Some(d) => {
            let status = if d.created.elapsed() >= Duration::from_millis(50) { "complete" } else { "processing" };
            json_response(StatusCode::OK, json!({"id": d.id, "title": d.title, "processing_status": status}))
        }
    }
}
