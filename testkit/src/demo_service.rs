//! A small checkout service that really breaks and really heals: `/health` answers 504 while
//! its upstream fault flag is set; `POST /admin/clear-fault` clears it (the runbook's fix).
//! Test modes: slow responses, wrong content, and a stubborn fault that refuses to clear. With a
//! real dependency behind it (`Backend`: Redis or PostgreSQL from `targets`), `/health` does real
//! work against it instead, and fails the way the dependency fails.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Healthy,
    /// `/health` → 504 until the fault is cleared.
    Broken,
    /// Like Broken, but clearing fails (the fix does not work).
    Stubborn,
    /// Answers 200 after a long delay.
    Slow,
    /// Answers 200 with a maintenance page instead of the expected content.
    WrongContent,
}

/// A real dependency the checkout service needs on every request.
#[derive(Debug, Clone)]
pub enum Backend {
    /// The cart cache: each check writes a cart (refused with OOM at `maxmemory`).
    Redis { port: u16, password: String },
    /// The orders database: each check inserts an order, waiting at most 1 s for its lock.
    Postgres { port: u16 },
}

#[derive(Debug)]
pub struct DemoService {
    mode: Mutex<Mode>,
    backend: Mutex<Option<Backend>>,
    pub clears: Mutex<u32>,
}

impl DemoService {
    pub fn new(mode: Mode) -> Arc<Self> {
        Arc::new(Self { mode: Mutex::new(mode), backend: Mutex::new(None), clears: Mutex::new(0) })
    }
    /// Serve from `backend`: healthy exactly when the dependency does its work.
    pub fn with_backend(mode: Mode, backend: Backend) -> Arc<Self> {
        Arc::new(Self { mode: Mutex::new(mode), backend: Mutex::new(Some(backend)), clears: Mutex::new(0) })
    }
    fn backend(&self) -> Option<Backend> {
        self.backend.lock().ok().and_then(|b| b.clone())
    }
    pub fn set(&self, mode: Mode) {
        if let Ok(mut m) = self.mode.lock() {
            *m = mode;
        }
    }
    pub fn mode(&self) -> Mode {
        self.mode.lock().map(|m| *m).unwrap_or(Mode::Healthy)
    }
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/", get(page))
            .route("/health", get(page))
            .route("/checkout", get(checkout_form))
            .route("/checkout/done", get(checkout_done))
            .route("/admin/clear-fault", post(clear))
            .route("/admin/break", post(breaks))
            .with_state(self.clone())
    }
}

const HEALTHY_PAGE: &str =
    "<html><head><title>Checkout</title></head><body><h1 id=\"status\">OK: checkout healthy</h1></body></html>";

/// The dependency's answer to one request's worth of work: `Err` carries its error text.
async fn use_backend(backend: &Backend) -> Result<(), String> {
    match backend {
        Backend::Redis { port, password } => {
            let cart = "item:sku-1042;qty:1;".repeat(50);
            let reply = crate::targets::cli(*port, password, &["SET", "cart:health", &cart]).await?;
            if reply == "OK" { Ok(()) } else { Err(reply) }
        }
        Backend::Postgres { port } => {
            crate::targets::psql(*port, "SET lock_timeout = '1s'; INSERT INTO orders DEFAULT VALUES").await.map(|_| ())
        }
    }
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

async fn page(State(s): State<Arc<DemoService>>) -> Response {
    if let Some(backend) = s.backend() {
        return match use_backend(&backend).await {
            Ok(()) => Html(HEALTHY_PAGE).into_response(),
            Err(e) => (
                StatusCode::SERVICE_UNAVAILABLE,
                Html(format!(
                    "<html><body><h1>503 Service Unavailable</h1><p>dependency error: {}</p></body></html>",
                    escape_html(&e)
                )),
            )
                .into_response(),
        };
    }
    match s.mode() {
        Mode::Healthy => Html(HEALTHY_PAGE).into_response(),
        Mode::Broken | Mode::Stubborn => (
            StatusCode::GATEWAY_TIMEOUT,
            Html("<html><body><h1>504 Gateway Timeout</h1><p>upstream timed out</p></body></html>"),
        )
            .into_response(),
        Mode::Slow => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Html("<html><body><h1 id=\"status\">OK: checkout healthy</h1></body></html>").into_response()
        }
        Mode::WrongContent => Html("<html><body><h1>Down for maintenance</h1></body></html>").into_response(),
    }
}

async fn checkout_form() -> Html<&'static str> {
    Html(
        "<html><body><form action=\"/checkout/done\" method=\"get\"><input id=\"email\" name=\"email\">\
         <button id=\"buy\" type=\"submit\">Buy</button></form></body></html>",
    )
}

async fn checkout_done() -> Html<&'static str> {
    Html("<html><body><h1>Thank you for your order</h1></body></html>")
}

async fn clear(State(s): State<Arc<DemoService>>) -> Response {
    if let Ok(mut c) = s.clears.lock() {
        *c += 1;
    }
    match s.mode() {
        Mode::Stubborn => {
            (StatusCode::INTERNAL_SERVER_ERROR, "fault flag is locked by another process\n").into_response()
        }
        _ => {
            s.set(Mode::Healthy);
            (StatusCode::OK, "fault cleared\n").into_response()
        }
    }
}

async fn breaks(State(s): State<Arc<DemoService>>) -> &'static str {
    s.set(Mode::Broken);
    "broken\n"
}
