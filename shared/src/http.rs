//! One resilient HTTP mechanism for every SaaS client: a timeout on every attempt, bounded
//! retries with jittered exponential back-off on connection failures, 408, 429 and 5xx, and the
//! server's own wait hints (`retry-after-ms`, `Retry-After` in seconds or as an HTTP date,
//! PagerDuty's `ratelimit-reset`, Anthropic's `x-should-retry`). Each call is logged as one
//! structured line without headers or bodies, so credentials never reach the logs.

use reqwest::header::HeaderMap;
use std::time::{Duration, Instant};

use crate::error::ClientError;

/// How a service turns a failed response into a message and a retry decision.
pub type Classifier = fn(status: u16, headers: &HeaderMap, body: &[u8]) -> (String, bool);

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Longest server-requested wait we honour in-process; longer hints are returned to the
    /// caller as a retryable error so the orchestrator retries later instead of a Lambda sleeping.
    pub max_honoured_wait: Duration,
}

impl RetryPolicy {
    /// The wait before retry number `attempt + 1`: exponential back-off from `base_delay`, capped
    /// at `max_delay`, with jitter (which spreads concurrent retries apart).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let backoff = self.base_delay.saturating_mul(2u32.saturating_pow(attempt)).min(self.max_delay);
        backoff.mul_f64(0.5 + rand::random::<f64>() * 0.5)
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 3,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
            max_honoured_wait: Duration::from_secs(20),
        }
    }
}

#[derive(Clone)]
pub struct ApiClient {
    pub service: &'static str,
    pub base: String,
    client: reqwest::Client,
    /// Per attempt, applied to each request (so tuning it never rebuilds the client).
    timeout: Duration,
    retry: RetryPolicy,
    classify: Classifier,
    /// Credential values scrubbed from every error message this client builds: an upstream (or
    /// a proxy in between) may echo the request, headers included, into an error body.
    redact: Vec<secrecy::SecretString>,
}

#[derive(Debug)]
pub struct ApiResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
}

impl ApiResponse {
    pub fn json<T: serde::de::DeserializeOwned>(&self, service: &'static str) -> Result<T, ClientError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| ClientError::Contract { service, detail: format!("unexpected body: {e}") })
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The default classification: 408, 429 and 5xx are retryable; the message is the start of
/// the body with control characters removed.
pub fn default_classifier(status: u16, _headers: &HeaderMap, body: &[u8]) -> (String, bool) {
    (body_excerpt(body, 300), matches!(status, 408 | 429) || status >= 500)
}

/// A bounded, printable excerpt of a response body for error messages.
pub fn body_excerpt(body: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text.chars().filter(|c| !c.is_control()).take(max).collect();
    if text.chars().count() > max {
        out.push('…');
    }
    out
}

/// Parse the server's wait hint, if any.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(ms) = get("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        return Some(Duration::from_secs_f64((ms / 1000.0).max(0.0)));
    }
    if let Some(v) = get("retry-after") {
        if let Ok(secs) = v.parse::<f64>() {
            return Some(Duration::from_secs_f64(secs.max(0.0)));
        }
        if let Ok(at) = chrono::DateTime::parse_from_rfc2822(v) {
            let wait = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
            return Some(wait.to_std().unwrap_or_default());
        }
    }
    // PagerDuty: seconds until the rate-limit window resets.
    if let Some(secs) = get("ratelimit-reset").and_then(|v| v.parse::<f64>().ok()) {
        return Some(Duration::from_secs_f64(secs.max(0.0)));
    }
    None
}

/// An adapter whose calls go through one [`ApiClient`], so settings can tune it uniformly.
pub trait ApiAdapter: Sized {
    fn api_mut(&mut self) -> &mut ApiClient;

    /// Override the per-attempt timeout of every call this adapter makes.
    fn with_request_timeout(mut self, timeout: Option<Duration>) -> Self {
        if let Some(timeout) = timeout {
            self.api_mut().timeout = timeout;
        }
        self
    }
}

impl ApiClient {
    pub fn new(
        service: &'static str,
        base: &str,
        timeout: Duration,
        classify: Classifier,
    ) -> Result<Self, ClientError> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("selfheal/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Invalid { service, detail: format!("cannot build HTTP client: {e}") })?;
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(ClientError::Invalid { service, detail: format!("base URL must be http(s): {base}") });
        }
        Ok(Self { service, base, client, timeout, retry: RetryPolicy::default(), classify, redact: Vec::new() })
    }

    /// Never let `secret` appear in an error message from this client.
    pub fn redacting(mut self, secret: &secrecy::SecretString) -> Self {
        self.redact.push(secret.clone());
        self
    }

    /// `text` with every registered credential replaced.
    pub fn scrub(&self, text: String) -> String {
        use secrecy::ExposeSecret;
        self.redact.iter().fold(text, |t, s| {
            let value = s.expose_secret();
            if value.len() >= 4 && t.contains(value) { t.replace(value, "[redacted]") } else { t }
        })
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Send the request built by `build` (called once per attempt) until it succeeds or the
    /// retry budget is spent. `op` names the operation in logs and errors.
    pub async fn send(
        &self,
        op: &str,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<ApiResponse, ClientError> {
        let mut attempt = 0u32;
        loop {
            let started = Instant::now();
            // The connection phase is bounded by the smaller of this and the client's 5 s.
            let result = build(&self.client).timeout(self.timeout).send().await;
            let (error, hint) = match self.outcome(op, attempt, started, result).await {
                Ok(response) => return Ok(response),
                Err(failure) => failure,
            };
            if !error.is_retryable() || attempt >= self.retry.max_retries {
                return Err(error);
            }
            let wait = match hint {
                Some(h) if h > self.retry.max_honoured_wait => return Err(error),
                Some(h) => h,
                None => self.backoff(attempt),
            };
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }
}

impl ApiClient {
    /// For calls without side effects (reads, searches, a model's answer): a 2xx whose body does
    /// not parse — cut off by a proxy, truncated mid-stream — is retried like a 5xx, within the
    /// same budget. Calls with effects use [`ApiClient::send`] and treat such a body as an
    /// unexpected response: retrying them blindly could repeat the effect.
    pub async fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        op: &str,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let mut attempt = 0u32;
        loop {
            let resp = self.send(op, &build).await?;
            match resp.json::<T>(self.service) {
                Ok(v) => return Ok(v),
                Err(e) if attempt < self.retry.max_retries => {
                    tracing::warn!(service = self.service, op, attempt, error = %e, "unparseable 2xx body, retrying");
                    tokio::time::sleep(self.backoff(attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        self.retry.backoff(attempt)
    }

    /// One attempt's result: the response, or the error with the server's wait hint.
    async fn outcome(
        &self,
        op: &str,
        attempt: u32,
        started: Instant,
        result: reqwest::Result<reqwest::Response>,
    ) -> Result<ApiResponse, (ClientError, Option<Duration>)> {
        let service = self.service;
        let resp = match result {
            Ok(resp) => resp,
            Err(e) => {
                let err = if e.is_timeout() {
                    ClientError::Timeout { service }
                } else {
                    // reqwest's message can include the URL (credentials travel in headers, not
                    // the URL), so keep only the kind of failure.
                    ClientError::Connect {
                        service,
                        detail: if e.is_connect() { "connection failed".into() } else { "request failed".into() },
                    }
                };
                let elapsed_ms = started.elapsed().as_millis() as u64;
                tracing::warn!(service, op, attempt, elapsed_ms, error = %err, "api call failed");
                return Err((err, None));
            }
        };
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let request_id = headers
            .get("request-id")
            .or_else(|| headers.get("x-request-id"))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = resp.bytes().await.map_err(|e| {
            let err = if e.is_timeout() {
                ClientError::Timeout { service }
            } else {
                ClientError::Connect { service, detail: "response body interrupted".into() }
            };
            tracing::warn!(service, op, status, attempt, "response body failed");
            (err, None)
        })?;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        if (200..300).contains(&status) {
            tracing::info!(service, op, status, attempt, elapsed_ms, request_id, "api call");
            return Ok(ApiResponse { status, headers, body });
        }
        let (message, mut retryable) = (self.classify)(status, &headers, &body);
        let message = self.scrub(message);
        if let Some(v) = headers.get("x-should-retry").and_then(|v| v.to_str().ok()) {
            retryable = v == "true";
        }
        tracing::warn!(service, op, status, attempt, elapsed_ms, request_id, retryable, "api call failed");
        let hint = retry_after(&headers);
        Err((ClientError::Status { service, status, message, retryable }, hint))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn wait_hints() {
        assert_eq!(retry_after(&headers(&[("retry-after", "2")])), Some(Duration::from_secs(2)));
        assert_eq!(retry_after(&headers(&[("retry-after-ms", "1500")])), Some(Duration::from_millis(1500)));
        assert_eq!(retry_after(&headers(&[("ratelimit-reset", "7")])), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(&headers(&[])), None);
        let date = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        let d = retry_after(&headers(&[("retry-after", &date)])).unwrap();
        assert!(d <= Duration::from_secs(30) && d >= Duration::from_secs(28), "{d:?}");
    }

    #[test]
    fn registered_credentials_are_scrubbed_from_messages() {
        let client = ApiClient::new("svc", "http://127.0.0.1:1", Duration::from_secs(1), default_classifier)
            .unwrap()
            .redacting(&secrecy::SecretString::from("tok-123456".to_string()));
        assert_eq!(
            client.scrub("401: bad header authorization: Bearer tok-123456 (tok-123456)".into()),
            "401: bad header authorization: Bearer [redacted] ([redacted])"
        );
        assert_eq!(client.scrub("nothing here".into()), "nothing here");
    }

    #[test]
    fn excerpts_are_bounded_and_printable() {
        assert_eq!(body_excerpt(b"a\nb\x07c", 10), "abc");
        assert_eq!(body_excerpt("x".repeat(20).as_bytes(), 5), "xxxxx…");
    }
}
