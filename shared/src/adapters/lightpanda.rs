//! Browser checks over CDP with chromiumoxide, shaped for Lightpanda: one WebSocket connection
//! (one browser context, one page) per check, the Handler polled on its own task, our own
//! deadline around everything, and the main document's status read from
//! `Network.responseReceived` rather than guessed.

use async_trait::async_trait;
use chromiumoxide::Browser as CdpBrowser;
use chromiumoxide::cdp::browser_protocol::network::{
    EventLoadingFailed, EventRequestWillBeSent, EventResponseReceived, ResourceType,
};
use chromiumoxide::handler::HandlerConfig;
use futures::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::domain::CheckResult;
use crate::error::ClientError;
use crate::ports::{Browser, CheckSpec, JourneyStep};

const SERVICE: &str = "lightpanda";
const EXCERPT_CHARS: usize = 300;

pub struct LightpandaBrowser {
    endpoint: String,
    token: Option<SecretString>,
    http: reqwest::Client,
}

fn browser_err(detail: impl Into<String>) -> ClientError {
    ClientError::Connect { service: SERVICE, detail: detail.into() }
}

impl LightpandaBrowser {
    /// `endpoint`: `ws://host:port/` (direct), `http://host:port` (discovery through
    /// `/json/version`), or a hosted `wss://` endpoint used with `token`.
    pub fn new(endpoint: &str, token: Option<SecretString>) -> Result<Self, ClientError> {
        let ok = ["ws://", "wss://", "http://", "https://"].iter().any(|p| endpoint.starts_with(p));
        if !ok {
            return Err(ClientError::Invalid { service: SERVICE, detail: format!("unsupported endpoint {endpoint}") });
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| ClientError::Invalid { service: SERVICE, detail: e.to_string() })?;
        Ok(Self { endpoint: endpoint.to_string(), token, http })
    }

    /// The WebSocket URL for one connection. Discovery reads only `webSocketDebuggerUrl`
    /// (Lightpanda's `/json/version` lacks fields chromiumoxide's own discovery requires).
    async fn ws_url(&self) -> Result<String, ClientError> {
        let mut url = if self.endpoint.starts_with("http") {
            let version = format!("{}/json/version", self.endpoint.trim_end_matches('/'));
            let v: serde_json::Value = self
                .http
                .get(&version)
                .send()
                .await
                .map_err(|_| browser_err("cannot reach the browser's /json/version"))?
                .json()
                .await
                .map_err(|_| browser_err("/json/version is not JSON"))?;
            v.get("webSocketDebuggerUrl")
                .and_then(|u| u.as_str())
                .ok_or_else(|| browser_err("/json/version has no webSocketDebuggerUrl"))?
                .to_string()
        } else {
            self.endpoint.clone()
        };
        if let Some(token) = &self.token {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str("token=");
            url.push_str(token.expose_secret());
        }
        Ok(url)
    }

    /// `navigating` is set once the browser handed over a page and navigation starts: before
    /// that point, running out of time is the browser's failure, not the service's.
    async fn run_check(&self, spec: &CheckSpec, navigating: &AtomicBool) -> Result<CheckResult, ClientError> {
        let ws = self.ws_url().await?;
        let config =
            HandlerConfig { request_timeout: Duration::from_millis(spec.deadline_ms.max(1000)), ..Default::default() };
        let (browser, mut handler) = CdpBrowser::connect_with_config(ws, config)
            .await
            .map_err(|_| browser_err("CDP connection refused or failed"))?;
        // The handler must be polled continuously or no command completes. A connection error
        // ends the pump (this connection serves one check, it is never resumed), and a dead
        // browser then fails the check at once instead of waiting for command timeouts.
        let mut pump = tokio::spawn(async move {
            while let Some(event) = handler.next().await {
                // Transport errors mean the browser is gone; others (an event this client
                // cannot decode, which Chromium sends) are not fatal.
                if matches!(event, Err(chromiumoxide::error::CdpError::Ws(_) | chromiumoxide::error::CdpError::Io(_))) {
                    break;
                }
            }
        });
        let result = tokio::select! {
            r = self.drive(&browser, spec, navigating) => r,
            _ = &mut pump => Err(browser_err("the browser connection closed during the check")),
        };
        // Close our page, then drop the connection. Never `Browser.close`: on a shared
        // Chromium-based endpoint that would shut the whole browser down for everyone.
        drop(browser);
        pump.abort();
        result
    }

    async fn drive(
        &self,
        browser: &CdpBrowser,
        spec: &CheckSpec,
        navigating: &AtomicBool,
    ) -> Result<CheckResult, ClientError> {
        let page = browser.new_page("about:blank").await.map_err(|e| browser_err(format!("new page: {e}")))?;
        let documents: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
        let mut events = page
            .event_listener::<EventResponseReceived>()
            .await
            .map_err(|e| browser_err(format!("network events: {e}")))?;
        let sink = documents.clone();
        let collector = tokio::spawn(async move {
            while let Some(ev) = events.next().await {
                if ev.r#type == ResourceType::Document
                    && let Ok(mut d) = sink.lock()
                {
                    d.push((ev.response.url.clone(), ev.response.status));
                }
            }
        });
        // The main document failing to load at all (refused, DNS, TLS) ends the navigation
        // without any response, and `goto` may then wait for a load that never counts. The
        // failure is `Network.loadingFailed` for the document's request: Lightpanda labels it
        // with another resource type, so the document's request is recognised by its id (the
        // one whose request id is its loader id, or typed Document when it was sent).
        let sent = page
            .event_listener::<EventRequestWillBeSent>()
            .await
            .map_err(|e| browser_err(format!("network events: {e}")))?
            .map(|ev| {
                let document =
                    ev.r#type == Some(ResourceType::Document) || ev.request_id.inner() == ev.loader_id.inner();
                NetEvent::Sent { id: ev.request_id.inner().clone(), document }
            });
        let failed = page
            .event_listener::<EventLoadingFailed>()
            .await
            .map_err(|e| browser_err(format!("network events: {e}")))?
            .map(|ev| NetEvent::Failed { id: ev.request_id.inner().clone(), why: ev.error_text.clone() });
        let mut network = futures::stream::select(sent, failed);
        let mut result = failing(spec, 0, String::new());
        result.failing_step = None;
        let started = Instant::now();
        navigating.store(true, Ordering::SeqCst);
        let load_failed = async {
            // The two streams are not ordered with each other: remember either half.
            let mut documents = std::collections::BTreeSet::new();
            let mut failures = std::collections::BTreeMap::new();
            while let Some(ev) = network.next().await {
                match ev {
                    NetEvent::Sent { id, document: true } => {
                        if let Some(why) = failures.remove(&id) {
                            return why;
                        }
                        documents.insert(id);
                    }
                    NetEvent::Sent { .. } => {}
                    NetEvent::Failed { id, why } => {
                        if documents.contains(&id) {
                            return why;
                        }
                        failures.insert(id, why);
                    }
                }
            }
            std::future::pending().await
        };
        let nav = tokio::select! {
            nav = page.goto(spec.url.as_str()) => nav.map(|_| ()).map_err(|e| e.to_string()),
            why = load_failed => Err(why),
        };
        result.latency_ms = started.elapsed().as_millis() as u64;
        // Give the response event a moment to arrive after the load event: without it the page
        // counts as unreached, so waiting a little longer is cheaper than a false escalation.
        for _ in 0..60 {
            if documents.lock().map(|d| !d.is_empty()).unwrap_or(true) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        result.status = documents.lock().ok().and_then(|d| {
            d.iter()
                .find(|(u, _)| same_url(u, &spec.url))
                .or_else(|| d.first())
                .and_then(|(_, s)| u16::try_from(*s).ok())
        });
        // No HTTP response at all (DNS, refused or reset connection, TLS): the page was never
        // reached, so what it shows is unknown. That is not a failure anyone observed.
        if result.status.is_none() {
            result.unreachable = true;
            result.failing_step = Some(match nav {
                Err(e) => format!("unreachable: {e}"),
                Ok(_) => "unreachable: no HTTP response for the page".into(),
            });
            collector.abort();
            return Ok(result);
        }
        if let Err(e) = nav {
            result.failing_step = Some(format!("navigate: {e}"));
            collector.abort();
            return Ok(result);
        }
        let content = page.content().await.unwrap_or_default();
        result.excerpt = excerpt(&content);
        result.ok = true;
        if result.status != Some(spec.expect_status) {
            result.ok = false;
            result.failing_step = Some(format!(
                "status {} (expected {})",
                result.status.map_or("none".into(), |s| s.to_string()),
                spec.expect_status
            ));
        } else if let Some(max) = spec.max_latency_ms.filter(|m| result.latency_ms > *m) {
            result.ok = false;
            result.failing_step = Some(format!("latency {} ms over {max} ms", result.latency_ms));
        } else if let Some(text) = spec.expect_text.as_ref().filter(|t| !content.contains(t.as_str())) {
            result.ok = false;
            result.failing_step = Some(format!("text {text:?} not found"));
        } else if let Some(sel) = &spec.expect_selector
            && page.find_element(sel.as_str()).await.is_err()
        {
            result.ok = false;
            result.failing_step = Some(format!("selector {sel:?} not found"));
        }
        if result.ok {
            for (i, step) in spec.steps.iter().enumerate() {
                if let Err(why) = run_step(&page, step).await {
                    result.ok = false;
                    result.failing_step = Some(format!("step {}: {why}", i + 1));
                    break;
                }
            }
            if spec.steps.iter().len() > 0 {
                result.excerpt = excerpt(&page.content().await.unwrap_or_default());
            }
        }
        collector.abort();
        let _ = tokio::time::timeout(Duration::from_millis(500), page.close()).await;
        Ok(result)
    }
}

/// The network events that tell a page that never answered from one that did.
enum NetEvent {
    Sent { id: String, document: bool },
    Failed { id: String, why: String },
}

/// A check that failed before or without a page to judge.
fn failing(spec: &CheckSpec, latency_ms: u64, why: String) -> CheckResult {
    CheckResult {
        name: spec.name.clone(),
        url: spec.url.clone(),
        status: None,
        latency_ms,
        ok: false,
        failing_step: Some(why),
        excerpt: String::new(),
        unreachable: false,
    }
}

fn same_url(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// Visible text, bounded: tags dropped, whitespace collapsed.
fn excerpt(html: &str) -> String {
    let mut text = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                text.push(' ');
            }
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(EXCERPT_CHARS).collect()
}

async fn run_step(page: &chromiumoxide::Page, step: &JourneyStep) -> Result<(), String> {
    const POLL: Duration = Duration::from_millis(50);
    match step {
        JourneyStep::Navigate { url } => {
            page.goto(url.as_str()).await.map(|_| ()).map_err(|e| format!("navigate: {e}"))
        }
        JourneyStep::Fill { selector, value } => {
            let el = page.find_element(selector.as_str()).await.map_err(|_| format!("{selector} not found"))?;
            el.click().await.map_err(|e| format!("focus {selector}: {e}"))?;
            el.type_str(value).await.map_err(|e| format!("type into {selector}: {e}"))?;
            Ok(())
        }
        JourneyStep::Click { selector } => {
            let el = page.find_element(selector.as_str()).await.map_err(|_| format!("{selector} not found"))?;
            el.click().await.map(|_| ()).map_err(|e| format!("click {selector}: {e}"))
        }
        // Navigations after a click may start late: poll instead of waiting for an event.
        JourneyStep::WaitForUrl { contains } => loop {
            if page.url().await.ok().flatten().is_some_and(|u| u.contains(contains.as_str())) {
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        },
        JourneyStep::WaitForText { text } => loop {
            if page.content().await.is_ok_and(|c| c.contains(text.as_str())) {
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        },
    }
}

#[async_trait]
impl Browser for LightpandaBrowser {
    async fn check(&self, spec: &CheckSpec) -> Result<CheckResult, ClientError> {
        let deadline = Duration::from_millis(spec.deadline_ms.max(100));
        let started = Instant::now();
        let navigating = AtomicBool::new(false);
        match tokio::time::timeout(deadline, self.run_check(spec, &navigating)).await {
            Ok(Ok(r)) => {
                tracing::info!(service = SERVICE, check = %spec.name, ok = r.ok, status = ?r.status, latency_ms = r.latency_ms, "browser check");
                Ok(r)
            }
            Ok(Err(e)) => {
                tracing::warn!(service = SERVICE, check = %spec.name, error = %e, "browser check failed");
                Err(e)
            }
            // A browser that never handed over a page is unavailable: that must not read as a
            // confirmed failure of the service (a fix would run on an unobserved baseline).
            Err(_) if !navigating.load(Ordering::SeqCst) => {
                tracing::warn!(service = SERVICE, check = %spec.name, "browser did not answer before the deadline");
                Err(browser_err(format!("the browser did not answer within {} ms", deadline.as_millis())))
            }
            // Past the deadline during navigation the page counts as failing (slow).
            Err(_) => Ok(failing(
                spec,
                started.elapsed().as_millis() as u64,
                format!("deadline of {} ms exceeded", deadline.as_millis()),
            )),
        }
    }
}

/// Plain HTTP checks for machines without a browser (status, text, latency; no journeys).
pub struct HttpChecker {
    http: reqwest::Client,
}

impl HttpChecker {
    pub fn new() -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| ClientError::Invalid { service: "http-check", detail: e.to_string() })?;
        Ok(Self { http })
    }
}

#[async_trait]
impl Browser for HttpChecker {
    async fn check(&self, spec: &CheckSpec) -> Result<CheckResult, ClientError> {
        let started = Instant::now();
        let mut r = failing(spec, 0, String::new());
        r.failing_step = None;
        let resp = self.http.get(&spec.url).timeout(Duration::from_millis(spec.deadline_ms.max(100))).send().await;
        r.latency_ms = started.elapsed().as_millis() as u64;
        match resp {
            // Connected but no answer in time: the page is slow, which users see.
            Err(e) if e.is_timeout() && !e.is_connect() => r.failing_step = Some("deadline exceeded".into()),
            // Never connected (DNS, refused, TLS): nothing was observed.
            Err(e) => {
                r.unreachable = true;
                r.failing_step = Some(format!(
                    "unreachable: {}",
                    if e.is_connect() { "connection failed" } else { "the request failed before any response" }
                ));
            }
            Ok(resp) => {
                r.status = Some(resp.status().as_u16());
                let body = resp.text().await.unwrap_or_default();
                r.excerpt = excerpt(&body);
                r.ok = r.status == Some(spec.expect_status)
                    && spec.expect_text.as_ref().is_none_or(|t| body.contains(t.as_str()))
                    && spec.max_latency_ms.is_none_or(|m| r.latency_ms <= m);
                if !r.ok {
                    r.failing_step = Some(format!("status {:?}", r.status));
                }
            }
        }
        Ok(r)
    }
}
