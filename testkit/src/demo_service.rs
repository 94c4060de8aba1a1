//! A small checkout service that really breaks and really heals: `/health` answers 504 while
//! its upstream fault flag is set; `POST /admin/clear-fault` clears it (the runbook's fix).
//! Test modes: slow responses, wrong content, and a stubborn fault that refuses to clear.

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

#[derive(Debug)]
pub struct DemoService {
    mode: Mutex<Mode>,
    pub clears: Mutex<u32>,
}

impl DemoService {
    pub fn new(mode: Mode) -> Arc<Self> {
        Arc::new(Self { mode: Mutex::new(mode), clears: Mutex::new(0) })
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

async fn page(State(s): State<Arc<DemoService>>) -> Response {
    match s.mode() {
        Mode::Healthy => Html(
            "<html><head><title>Checkout</title></head><body><h1 id=\"status\">OK: checkout healthy</h1></body></html>",
        )
        .into_response(),
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
