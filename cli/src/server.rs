//! The local stand-in for API Gateway: the same routes, handled by the same handlers.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use std::sync::Arc;

use selfheal::stages::Deps;
use selfheal::stages::http::{HttpRequest, HttpResponse};

fn request(headers: &HeaderMap, body: Bytes) -> HttpRequest {
    HttpRequest::new(
        headers.iter().filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_string(), v.to_string()))),
        body.to_vec(),
    )
}

fn respond(r: HttpResponse) -> axum::response::Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [("content-type", "application/json")], r.body.to_string()).into_response()
}

async fn pagerduty(State(deps): State<Arc<Deps>>, headers: HeaderMap, body: Bytes) -> axum::response::Response {
    respond(selfheal::stages::intake::handle_webhook(&deps, &request(&headers, body)).await)
}

async fn slack(State(deps): State<Arc<Deps>>, headers: HeaderMap, body: Bytes) -> axum::response::Response {
    respond(selfheal::stages::approvals::handle_interaction(&deps, &request(&headers, body)).await)
}

pub fn router(deps: Arc<Deps>) -> Router {
    Router::new()
        .route("/webhooks/pagerduty", post(pagerduty))
        .route("/slack/interactions", post(slack))
        // Bodies up to 1 MiB reach the handlers, which answer 413 above 256 KiB themselves.
        .layer(DefaultBodyLimit::max(1024 * 1024))
        .with_state(deps)
}

/// Bind on loopback and serve in the background; returns the base URL.
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
