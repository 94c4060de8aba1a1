//! A transport-neutral HTTP request/response, so the same handlers serve API Gateway (through
//! `lambda_http`) and the local server (axum), and [`AfterResponse`]: work a handler leaves for
//! after its answer.

use serde_json::{Value, json};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Default)]
pub struct HttpRequest {
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The raw body bytes, exactly as signed (base64 already decoded).
    pub body: Vec<u8>,
}

impl HttpRequest {
    pub fn new(headers: impl IntoIterator<Item = (String, String)>, body: Vec<u8>) -> Self {
        Self { headers: headers.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect(), body }
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpResponse {
    pub status: u16,
    pub body: Value,
}

impl HttpResponse {
    pub fn json(status: u16, body: Value) -> Self {
        Self { status, body }
    }
    pub fn message(status: u16, message: &str) -> Self {
        Self { status, body: json!({ "message": message }) }
    }
}

/// Convert an API Gateway (HTTP API, payload v2) request: `lambda_http` already decodes
/// base64 bodies into binary, so the bytes here are the signed bytes.
pub fn from_lambda(req: &lambda_http::Request) -> HttpRequest {
    let headers = req
        .headers()
        .iter()
        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_string(), v.to_string())))
        .collect::<Vec<_>>();
    let body = match req.body() {
        lambda_http::Body::Empty => Vec::new(),
        lambda_http::Body::Text(t) => t.as_bytes().to_vec(),
        lambda_http::Body::Binary(b) => b.clone(),
        _ => Vec::new(),
    };
    HttpRequest::new(headers, body)
}

pub fn to_lambda(resp: HttpResponse) -> lambda_http::Response<lambda_http::Body> {
    lambda_http::Response::builder()
        .status(resp.status)
        .header("content-type", "application/json")
        .body(lambda_http::Body::Text(resp.body.to_string()))
        .unwrap_or_else(|_| lambda_http::Response::new(lambda_http::Body::Text("{}".into())))
}

/// Work deferred until the answer is on its way (a Slack `response_url` update).
pub type Deferred = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Work handlers defer until after the HTTP answer, on Lambda. Lambda freezes the execution
/// environment as soon as the runtime asks for the next event, so a spawned task would stall
/// mid-call; `lambda_runtime`'s documented place for work after the response is a
/// [`Runtime::layer`](lambda_runtime::Runtime::layer): its service runs after the response was
/// posted to the Runtime API (API Gateway has the answer then) and before the next `/next`.
/// [`AfterResponse::layer`] is that layer; it runs what the handler [`defer`](Self::defer)red,
/// in order, bounded by the invocation's deadline. (`selfheal serve` spawns the work instead.)
#[derive(Clone, Default)]
pub struct AfterResponse {
    queue: Arc<Mutex<Vec<Deferred>>>,
}

impl std::fmt::Debug for AfterResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfterResponse").field("queued", &self.take_len()).finish()
    }
}

/// What is left of an invocation's time after this margin goes to the deferred work; the rest
/// lets the runtime ask for the next event before Lambda's timeout would kill the environment.
const DEADLINE_MARGIN: Duration = Duration::from_millis(500);

impl AfterResponse {
    /// Run `work` after the current invocation's answer has been sent.
    pub fn defer(&self, work: impl Future<Output = ()> + Send + 'static) {
        self.lock().push(Box::pin(work));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Deferred>> {
        self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn take_len(&self) -> usize {
        self.lock().len()
    }

    /// Run everything deferred so far, giving up at `deadline` (what is cut off is logged).
    pub async fn drain(&self, deadline: Option<std::time::Instant>) {
        let work: Vec<Deferred> = std::mem::take(&mut *self.lock());
        if work.is_empty() {
            return;
        }
        let all = async {
            for w in work {
                w.await;
            }
        };
        match deadline {
            Some(at) => {
                let left = at.saturating_duration_since(std::time::Instant::now()).saturating_sub(DEADLINE_MARGIN);
                if tokio::time::timeout(left, all).await.is_err() {
                    tracing::warn!("deferred work cut off at the invocation's deadline");
                }
            }
            None => all.await,
        }
    }

    /// The `lambda_runtime` layer that runs the deferred work after each response.
    pub fn layer(&self) -> AfterResponseLayer {
        AfterResponseLayer { after: self.clone() }
    }
}

/// See [`AfterResponse::layer`].
#[derive(Clone, Debug)]
pub struct AfterResponseLayer {
    after: AfterResponse,
}

impl<S> lambda_runtime::tower::Layer<S> for AfterResponseLayer {
    type Service = AfterResponseService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AfterResponseService { inner, after: self.after.clone() }
    }
}

/// See [`AfterResponse::layer`].
#[derive(Clone, Debug)]
pub struct AfterResponseService<S> {
    inner: S,
    after: AfterResponse,
}

impl<S> lambda_runtime::Service<lambda_runtime::LambdaInvocation> for AfterResponseService<S>
where
    S: lambda_runtime::Service<lambda_runtime::LambdaInvocation, Response = (), Error = lambda_runtime::Error>,
    S::Future: 'static,
{
    type Response = ();
    type Error = lambda_runtime::Error;
    // Not `Send`: the runtime polls invocations one at a time on its own task, and the
    // response future `lambda_http` builds is not `Send`.
    type Future = Pin<Box<dyn Future<Output = Result<(), lambda_runtime::Error>>>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, invocation: lambda_runtime::LambdaInvocation) -> Self::Future {
        // The Runtime API's deadline (epoch ms), as a local instant.
        let now_ms = chrono::Utc::now().timestamp_millis();
        let left = u64::try_from(invocation.context.deadline as i64 - now_ms).unwrap_or(0);
        let deadline = std::time::Instant::now() + Duration::from_millis(left);
        let respond = self.inner.call(invocation);
        let after = self.after.clone();
        Box::pin(async move {
            // The inner service posts the response to the Runtime API before it returns.
            let result = respond.await;
            after.drain(Some(deadline)).await;
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn deferred_work_runs_in_order_once_and_stops_at_the_deadline() {
        let after = AfterResponse::default();
        let log = Arc::new(Mutex::new(Vec::new()));
        for i in 0..3 {
            let log = log.clone();
            after.defer(async move { log.lock().unwrap().push(i) });
        }
        after.drain(None).await;
        after.drain(None).await;
        assert_eq!(*log.lock().unwrap(), vec![0, 1, 2], "in order, and only once");

        // Work that would outlast the invocation is cut off before its deadline.
        let finished = Arc::new(AtomicUsize::new(0));
        let done = finished.clone();
        after.defer(async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            done.fetch_add(1, Ordering::SeqCst);
        });
        let started = std::time::Instant::now();
        after.drain(Some(started + Duration::from_millis(800))).await;
        assert!(started.elapsed() < Duration::from_millis(800), "{:?}", started.elapsed());
        assert_eq!(finished.load(Ordering::SeqCst), 0);
    }
}
