//! The local stand-in for API Gateway: the same routes, handled by the same handlers, and the
//! limits API Gateway enforces on AWS, from the `[server]` settings (`config::ServerSettings`):
//!
//! - a header read timeout (hyper's, which also closes idle keep-alive connections) and a body
//!   read timeout, so a client that trickles its request cannot hold a connection;
//! - a request timeout: a handler still running is answered 503 (retry later) and finishes in
//!   the background, since every handler is idempotent and deduplicated;
//! - a connection cap: one connection more is answered 503 and closed at once;
//! - the 256 KB body cap, checked on `Content-Length` before reading and while reading, and a
//!   16 KB cap on the request head (431 above it).
//!
//! A Slack click's `response_url` update runs in a spawned task after the answer (Slack allows
//! 3 s for the answer; `response_url` may take longer).

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::StreamExt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use selfheal::config::ServerSettings;
use selfheal::stages::Deps;
use selfheal::stages::http::{HttpRequest, HttpResponse};
use selfheal::stages::intake::MAX_BODY;

fn request(headers: &HeaderMap, body: Vec<u8>) -> HttpRequest {
    HttpRequest::new(
        headers.iter().filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_string(), v.to_string()))),
        body,
    )
}

fn respond(r: HttpResponse) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [("content-type", "application/json")], r.body.to_string()).into_response()
}

/// An error answer after which the connection is closed (the rest of a request that was cut
/// short must not be read as the next one).
fn closing(status: u16, message: &str) -> Response {
    let mut r = respond(HttpResponse::message(status, message));
    r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// Read the body within the body read timeout and the size cap. `Err` is the answer to send.
async fn read_body(headers: &HeaderMap, body: Body, limits: &ServerSettings) -> Result<Vec<u8>, Response> {
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(closing(413, "payload too large"));
    }
    let read = async {
        let mut stream = body.into_data_stream();
        let mut bytes = Vec::with_capacity(declared.unwrap_or(0).min(MAX_BODY as u64) as usize);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| closing(400, "the request body could not be read"))?;
            if bytes.len() + chunk.len() > MAX_BODY {
                return Err(closing(413, "payload too large"));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    };
    match tokio::time::timeout(Duration::from_millis(limits.body_read_timeout_ms), read).await {
        Ok(result) => result,
        Err(_) => {
            tracing::debug!("request body not received within the body read timeout");
            Err(closing(408, "the request body did not arrive in time"))
        }
    }
}

/// Run `handler` within the request timeout. Past it the client is told to retry and the handler
/// finishes in the background: dropping it halfway would be a crash in miniature, and letting
/// it finish means the retry usually finds the work done (deduplicated) instead of redoing it.
async fn within_request_timeout(
    limits: &ServerSettings,
    handler: impl Future<Output = HttpResponse> + Send + 'static,
) -> Response {
    let mut task = tokio::spawn(handler);
    match tokio::time::timeout(Duration::from_millis(limits.request_timeout_ms), &mut task).await {
        Ok(Ok(answer)) => respond(answer),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "request handler failed");
            respond(HttpResponse::message(500, "temporary failure, retry"))
        }
        Err(_) => {
            tracing::warn!(timeout_ms = limits.request_timeout_ms, "request timeout: answered 503, still finishing");
            let mut r = respond(HttpResponse::message(503, "this request is taking too long; retry later"));
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            r
        }
    }
}

async fn pagerduty(State(deps): State<Arc<Deps>>, req: Request) -> Response {
    let limits = deps.settings.server.clone();
    let (parts, body) = req.into_parts();
    let body = match read_body(&parts.headers, body, &limits).await {
        Ok(b) => b,
        Err(answer) => return answer,
    };
    let request = request(&parts.headers, body);
    within_request_timeout(&limits, async move { selfheal::stages::intake::handle_webhook(&deps, &request).await })
        .await
}

async fn slack(State(deps): State<Arc<Deps>>, req: Request) -> Response {
    let limits = deps.settings.server.clone();
    let (parts, body) = req.into_parts();
    let body = match read_body(&parts.headers, body, &limits).await {
        Ok(b) => b,
        Err(answer) => return answer,
    };
    let request = request(&parts.headers, body);
    within_request_timeout(&limits, async move {
        let ack = selfheal::stages::approvals::acknowledge_interaction(&deps, &request).await;
        if let Some(follow_up) = ack.follow_up {
            // After the answer: Slack shows an error unless it has one within 3 s.
            tokio::spawn(async move { follow_up.send(&deps).await });
        }
        ack.response
    })
    .await
}

pub fn router(deps: Arc<Deps>) -> Router {
    Router::new()
        .route("/webhooks/pagerduty", post(pagerduty))
        .route("/slack/interactions", post(slack))
        .with_state(deps)
}

/// Bind on loopback and serve in the background (simulators, the demo service, test servers);
/// returns the base URL. `selfheal serve` uses [`serve`], with the limits.
pub async fn spawn(router: Router, port: u16) -> std::io::Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    let handle = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "server stopped");
        }
    });
    Ok((format!("http://{addr}"), handle))
}

/// [`spawn`] with [`serve`]'s limits.
pub async fn spawn_limited(
    router: Router,
    port: u16,
    limits: ServerSettings,
) -> std::io::Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    let handle = tokio::spawn(serve(listener, router, limits, std::future::pending()));
    Ok((format!("http://{addr}"), handle))
}

/// The longest request head (request line and headers) accepted; a longer one is answered 431
/// and the connection closed. PagerDuty's and Slack's heads are about 1 KB.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// hyper's read buffer per connection (its default, about 400 KB, times the connection cap is
/// more memory than a webhook receiver should hand to strangers).
pub const MAX_READ_BUFFER: usize = 64 * 1024;

/// The answer to a connection over the cap, written without reading the request.
const OVER_CAPACITY: &str = r#"{"message":"too many connections, retry in a moment"}"#;

fn over_capacity() -> String {
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{OVER_CAPACITY}",
        OVER_CAPACITY.len()
    )
}

/// Tell a connection over the cap to come back, and close it. Bounded in time: this must not
/// become the slow path it protects against.
async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        stream.write_all(over_capacity().as_bytes()).await?;
        stream.shutdown().await?;
        // Drain what the client already sent, so the close is a FIN it can read the answer
        // before, not a reset.
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// Serve `router` on `listener` with `limits` until `shutdown` completes, then let open
/// connections finish (up to the request timeout).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerSettings,
    shutdown: impl Future<Output = ()> + Send,
) {
    // Clamped so that any configured cap is a valid semaphore size (and fits `acquire_many`).
    let cap = limits.max_connections.min(tokio::sync::Semaphore::MAX_PERMITS).min(u32::MAX as usize);
    let slots = Arc::new(tokio::sync::Semaphore::new(cap));
    let (closing_tx, closing_rx) = tokio::sync::watch::channel(false);
    let header_timeout = Duration::from_millis(limits.header_read_timeout_ms);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(max_connections = cap, "connection cap reached: refused");
            tokio::spawn(refuse(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let mut closing = closing_rx.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_header_size(MAX_HEAD_BYTES)
                .max_buf_size(MAX_READ_BUFFER);
            let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    // Header timeouts and clients going away end up here; they are routine.
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended");
                    }
                }
                _ = async { closing.wait_for(|c| *c).await.is_ok() } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    let _ = closing_tx.send(true);
    let grace = Duration::from_millis(limits.request_timeout_ms);
    let all = u32::try_from(cap).unwrap_or(u32::MAX);
    if tokio::time::timeout(grace, slots.acquire_many(all)).await.is_err() {
        tracing::warn!("connections still open at shutdown were dropped");
    }
}
