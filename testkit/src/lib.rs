//! The world selfheal is tested against, as one crate: simulators of the SaaS APIs (`sim`,
//! following `CONTRACTS.md` beside this crate, hard edges included), a transport-level fault
//! proxy (`faults`) and a checkout service that really breaks and heals (`demo_service`). The
//! `selfheal` binary's `demo` and `simulate` verbs and the test crates use it; nothing shipped to
//! Lambda does.

pub mod demo_service;
pub mod faults;
pub mod sim;
pub mod targets;

/// Serves a router on 127.0.0.1 (`port` 0 picks a free one), without limits: for simulators
/// and tests. Returns the base URL.
pub async fn spawn(router: axum::Router, port: u16) -> std::io::Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    let handle = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "server stopped");
        }
    });
    Ok((format!("http://{addr}"), handle))
}
