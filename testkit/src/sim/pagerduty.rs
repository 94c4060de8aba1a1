//! PagerDuty: the REST API (notes, incidents) and signed v3 webhook delivery, which also
//! carries Cleric's notes.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

use selfheal::signature::sign_pagerduty;

use super::{PdNote, Sim, WEBHOOK_REDELIVERIES, header, json_response, lock, slow_until};

impl Sim {
    // ------------------------------------------------------------------ PagerDuty webhooks

    /// Sign and deliver one v3 webhook to the engine, as PagerDuty does. Returns the status.
    pub async fn deliver_webhook(&self, event_type: &str, data: Value, agent: Option<Value>) -> Result<u16, String> {
        let body = json!({"event": {
            "id": self.next_id("01EVT"),
            "event_type": event_type,
            "resource_type": event_type.split('.').next().unwrap_or("incident"),
            "occurred_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "agent": agent,
            "client": null,
            "data": data,
        }})
        .to_string();
        self.deliver_until_accepted(body.as_bytes(), &self.next_id("whk-")).await
    }

    /// Deliver as PagerDuty does: a timeout, 5xx, 429 or connection failure is redelivered later
    /// with the same webhook id (for up to 48 h there; here for about 45 s); other answers
    /// are final. Returns the last status.
    pub async fn deliver_until_accepted(&self, body: &[u8], webhook_id: &str) -> Result<u16, String> {
        let mut last = Err("not delivered".to_string());
        for redelivery in 0..=WEBHOOK_REDELIVERIES {
            if redelivery > 0 {
                // 0.2 s doubling to 8 s: about 45 s of redeliveries in all.
                tokio::time::sleep(Duration::from_millis((100u64 << redelivery).min(8_000))).await;
            }
            last = self.post_signed_webhook(body, webhook_id).await;
            if matches!(last, Ok(status) if status < 500 && status != 429) {
                break;
            }
        }
        last
    }

    pub async fn post_signed_webhook(&self, body: &[u8], webhook_id: &str) -> Result<u16, String> {
        self.track_status(body);
        let url = format!("{}/webhooks/pagerduty", lock(&self.engine_base));
        let sig = sign_pagerduty(self.creds.webhook_secret.as_bytes(), body);
        let resp = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("x-pagerduty-signature", sig)
            .header("x-webhook-id", webhook_id)
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| format!("webhook delivery failed: {e}"))?;
        Ok(resp.status().as_u16())
    }

    /// What PagerDuty's own record says after the event it is delivering.
    fn track_status(&self, body: &[u8]) {
        let Ok(v) = serde_json::from_slice::<Value>(body) else { return };
        let id = v.pointer("/event/data/id").and_then(Value::as_str);
        let status = match v.pointer("/event/event_type").and_then(Value::as_str) {
            Some("incident.triggered" | "incident.reopened" | "incident.unacknowledged") => "triggered",
            Some("incident.acknowledged") => "acknowledged",
            Some("incident.resolved") => "resolved",
            _ => return,
        };
        if let Some(id) = id {
            lock(&self.pd).status.insert(id.to_string(), status.to_string());
        }
    }

    pub fn incident_data(id: &str, number: u64, title: &str, service_id: &str, service_name: &str) -> Value {
        json!({
            "id": id, "type": "incident", "self": format!("https://api.pagerduty.com/incidents/{id}"),
            "html_url": format!("https://acme.pagerduty.com/incidents/{id}"), "number": number,
            "status": "triggered", "incident_key": id, "created_at": chrono::Utc::now().to_rfc3339(),
            "title": title, "urgency": "high",
            "service": {"id": service_id, "type": "service_reference", "summary": service_name,
                        "self": format!("https://api.pagerduty.com/services/{service_id}"), "html_url": "https://acme.pagerduty.com/services"},
            "assignees": [], "escalation_policy": {"id": "PEP1", "type": "escalation_policy_reference", "summary": "Default"},
            "teams": [], "priority": null, "conference_bridge": null, "resolve_reason": null
        })
    }

    /// The investigator posts a note: stored in PagerDuty, delivered as `incident.annotated`
    /// (trimmed when long, as PagerDuty does, so intake must fetch the full note).
    pub async fn post_note(&self, incident: &str, author: &str, content: &str) -> Result<u16, String> {
        let note_id = self.next_id("PN");
        lock(&self.pd).notes.entry(incident.to_string()).or_default().push(PdNote {
            id: note_id.clone(),
            user_id: author.to_string(),
            content: content.to_string(),
        });
        let trimmed = content.chars().count() > 160;
        let shown: String = content.chars().take(160).collect();
        let data = json!({
            "incident": {"id": incident, "type": "incident_reference", "summary": "incident"},
            "id": note_id, "content": shown, "trimmed": trimmed, "type": "incident_note"
        });
        let agent = json!({"id": author, "type": "user_reference", "summary": "Cleric"});
        self.deliver_webhook("incident.annotated", data, Some(agent)).await
    }
}

fn pd_error(status: StatusCode, code: i64, message: &str, errors: &[&str]) -> Response {
    json_response(status, json!({"error": {"message": message, "code": code, "errors": errors}}))
}

/// PagerDuty REST contract: token auth and the versioned Accept header on every call.
fn pd_check(sim: &Sim, h: &HeaderMap, write: bool) -> Option<Response> {
    if header(h, "authorization") != Some(&format!("Token token={}", sim.creds.pagerduty_token)) {
        return Some(pd_error(StatusCode::UNAUTHORIZED, 2006, "Unauthorized", &[]));
    }
    if header(h, "accept") != Some("application/vnd.pagerduty+json;version=2") {
        return Some(pd_error(
            StatusCode::BAD_REQUEST,
            2001,
            "Invalid Input Provided",
            &["Accept header must pin version=2"],
        ));
    }
    if write && header(h, "from").is_none_or(|f| !f.contains('@')) {
        return Some(pd_error(
            StatusCode::BAD_REQUEST,
            2011,
            "You must specify a requester_id",
            &["From header is required"],
        ));
    }
    None
}

pub(super) async fn pd_list_notes(State(sim): State<Arc<Sim>>, Path(id): Path<String>, h: HeaderMap) -> Response {
    let until = lock(&sim.knobs).pagerduty_slow_until;
    slow_until(until).await;
    if let Some(r) = pd_check(&sim, &h, false) {
        sim.record("pagerduty", "GET", &format!("/incidents/{id}/notes"), r.status().as_u16());
        return r;
    }
    let notes: Vec<Value> = lock(&sim.pd)
        .notes
        .get(&id)
        .map(|ns| {
            ns.iter()
                .map(|n| json!({"id": n.id, "user": {"id": n.user_id, "type": "user_reference", "summary": "Cleric"}, "content": n.content,
                                "channel": {"summary": "API"}, "created_at": chrono::Utc::now().to_rfc3339()}))
                .collect()
        })
        .unwrap_or_default();
    sim.record("pagerduty", "GET", &format!("/incidents/{id}/notes"), 200);
    json_response(StatusCode::OK, json!({"notes": notes}))
}

pub(super) async fn pd_add_note(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    let until = lock(&sim.knobs).pagerduty_slow_until;
    slow_until(until).await;
    let path = format!("/incidents/{id}/notes");
    if let Some(r) = pd_check(&sim, &h, true) {
        sim.record("pagerduty", "POST", &path, r.status().as_u16());
        return r;
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Some(content) = v.pointer("/note/content").and_then(Value::as_str) else {
        sim.record("pagerduty", "POST", &path, 400);
        return pd_error(StatusCode::BAD_REQUEST, 2001, "Invalid Input Provided", &["note.content is required"]);
    };
    let note = PdNote { id: sim.next_id("PN"), user_id: "PSELFHEAL".into(), content: content.to_string() };
    let out = json!({"note": {"id": note.id, "user": {"id": "PSELFHEAL", "type": "user_reference"}, "content": note.content}});
    lock(&sim.pd).notes.entry(id).or_default().push(note);
    sim.record("pagerduty", "POST", &path, 200);
    // PagerDuty answers 200 (not 201) here.
    json_response(StatusCode::OK, out)
}

/// `GET /incidents/{id}`: the incident as PagerDuty holds it; 404 (code 2100) for one it does
/// not know.
pub(super) async fn pd_get_incident(State(sim): State<Arc<Sim>>, Path(id): Path<String>, h: HeaderMap) -> Response {
    let path = format!("/incidents/{id}");
    if let Some(r) = pd_check(&sim, &h, false) {
        sim.record("pagerduty", "GET", &path, r.status().as_u16());
        return r;
    }
    let status = lock(&sim.pd).status.get(&id).cloned();
    match status {
        Some(status) => {
            sim.record("pagerduty", "GET", &path, 200);
            json_response(
                StatusCode::OK,
                json!({"incident": {"id": id, "type": "incident", "incident_number": 1, "status": status,
                                    "incident_key": id, "title": "incident"}}),
            )
        }
        None => {
            sim.record("pagerduty", "GET", &path, 404);
            pd_error(StatusCode::NOT_FOUND, 2100, "Not Found", &[])
        }
    }
}

pub(super) async fn pd_update_incident(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    let until = lock(&sim.knobs).pagerduty_slow_until;
    slow_until(until).await;
    let path = format!("/incidents/{id}");
    if let Some(r) = pd_check(&sim, &h, true) {
        sim.record("pagerduty", "PUT", &path, r.status().as_u16());
        return r;
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let kind = v.pointer("/incident/type").and_then(Value::as_str);
    let status = v.pointer("/incident/status").and_then(Value::as_str);
    if !matches!(kind, Some("incident" | "incident_reference"))
        || !matches!(status, Some("resolved" | "acknowledged" | "triggered"))
    {
        sim.record("pagerduty", "PUT", &path, 400);
        return pd_error(
            StatusCode::BAD_REQUEST,
            2001,
            "Invalid Input Provided",
            &["incident.type and incident.status are required"],
        );
    }
    let mut pd = lock(&sim.pd);
    if pd.resolved.contains_key(&id) && status == Some("resolved") {
        drop(pd);
        sim.record("pagerduty", "PUT", &path, 400);
        return pd_error(StatusCode::BAD_REQUEST, 1001, "Incident Already Resolved", &[]);
    }
    pd.resolved
        .insert(id.clone(), v.pointer("/incident/resolution").and_then(Value::as_str).unwrap_or_default().to_string());
    pd.status.insert(id.clone(), status.unwrap_or("resolved").to_string());
    drop(pd);
    sim.record("pagerduty", "PUT", &path, 200);
    json_response(StatusCode::OK, json!({"incident": {"id": id, "type": "incident", "status": status}}))
}

/// `GET /oncalls`: filtered by `escalation_policy_ids[]`, classic pagination (`limit` default
/// 25, at most 100; `offset`; `more`), full users (with `email`) only with `include[]=users`.
pub(super) async fn pd_oncalls(
    State(sim): State<Arc<Sim>>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    h: HeaderMap,
) -> Response {
    let path = "/oncalls";
    if let Some(r) = pd_check(&sim, &h, false) {
        sim.record("pagerduty", "GET", path, r.status().as_u16());
        return r;
    }
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query.as_deref().unwrap_or_default()).unwrap_or_default();
    let all = |k: &str| pairs.iter().filter(|(key, _)| key == k).map(|(_, v)| v.clone()).collect::<Vec<_>>();
    let one = |k: &str| pairs.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    let limit = match one("limit").map(|l| l.parse::<usize>()) {
        None => 25,
        Some(Ok(l)) if (1..=100).contains(&l) => l,
        Some(_) => {
            sim.record("pagerduty", "GET", path, 400);
            return pd_error(StatusCode::BAD_REQUEST, 2001, "Invalid Input Provided", &["limit must be 1 to 100"]);
        }
    };
    let offset = one("offset").and_then(|o| o.parse::<usize>().ok()).unwrap_or(0);
    let policies = all("escalation_policy_ids[]");
    let with_users = all("include[]").iter().any(|i| i == "users");
    let matching: Vec<super::SimOncall> = lock(&sim.knobs)
        .oncalls
        .iter()
        .filter(|o| policies.is_empty() || policies.contains(&o.escalation_policy))
        .cloned()
        .collect();
    let page: Vec<Value> = matching
        .iter()
        .skip(offset)
        .take(limit)
        .map(|o| {
            let user = if with_users {
                json!({"id": o.user_id, "type": "user", "name": o.user_id, "email": o.email})
            } else {
                json!({"id": o.user_id, "type": "user_reference", "summary": o.user_id})
            };
            json!({"escalation_policy": {"id": o.escalation_policy, "type": "escalation_policy_reference"},
                   "escalation_level": o.level, "schedule": null, "user": user, "start": null, "end": null})
        })
        .collect();
    let more = offset + page.len() < matching.len();
    sim.record("pagerduty", "GET", path, 200);
    json_response(
        StatusCode::OK,
        json!({"oncalls": page, "limit": limit, "offset": offset, "more": more, "total": null}),
    )
}
