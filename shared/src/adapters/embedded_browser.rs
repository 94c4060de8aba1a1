//! Lightpanda inside the function: the verify function's container image ships the browser
//! (see functions/verify/Dockerfile), and this adapter starts it once per execution
//! environment on loopback, reuses it across invocations, and starts it again if it died.
//! Selected by `browser.endpoint = "embedded"` (the template's default: `BrowserEndpoint`
//! empty).

use async_trait::async_trait;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::lightpanda::LightpandaBrowser;
use crate::domain::CheckResult;
use crate::error::ClientError;
use crate::ports::{Browser, CheckSpec};

const SERVICE: &str = "lightpanda";
/// Where the image puts the binary (`SELFHEAL_LIGHTPANDA_BIN` overrides it).
pub const DEFAULT_BIN: &str = "/opt/lightpanda/lightpanda";
/// The `browser.endpoint` value that selects this adapter.
pub const EMBEDDED: &str = crate::wiring::EMBEDDED_BROWSER;
const START_TIMEOUT: Duration = Duration::from_secs(5);

struct Running {
    child: tokio::process::Child,
    browser: Arc<LightpandaBrowser>,
}

pub struct EmbeddedLightpanda {
    bin: PathBuf,
    max_connections: usize,
    running: tokio::sync::Mutex<Option<Running>>,
}

/// The binary to run: `SELFHEAL_LIGHTPANDA_BIN`, else [`DEFAULT_BIN`].
pub fn configured_bin() -> PathBuf {
    std::env::var_os("SELFHEAL_LIGHTPANDA_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(DEFAULT_BIN))
}

fn unavailable(detail: impl Into<String>) -> ClientError {
    // `run_checks` reports it as "browser: …": a check the browser could not run.
    ClientError::Connect { service: SERVICE, detail: detail.into() }
}

impl EmbeddedLightpanda {
    /// Fails when `bin` is not an executable file: a Lambda without its browser must not
    /// start (the caller turns this into an init error).
    pub fn new(bin: &Path, max_connections: usize) -> Result<Self, ClientError> {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(bin).map_err(|e| ClientError::Invalid {
            service: SERVICE,
            detail: format!(
                "embedded browser {} is missing: {e} (set SELFHEAL_LIGHTPANDA_BIN or BrowserEndpoint)",
                bin.display()
            ),
        })?;
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            return Err(ClientError::Invalid {
                service: SERVICE,
                detail: format!("embedded browser {} is not an executable file", bin.display()),
            });
        }
        Ok(Self {
            bin: bin.to_path_buf(),
            max_connections: max_connections.max(1),
            running: tokio::sync::Mutex::new(None),
        })
    }

    /// The running browser, started (again) if needed.
    async fn browser(&self) -> Result<Arc<LightpandaBrowser>, ClientError> {
        let mut guard = self.running.lock().await;
        if let Some(r) = guard.as_mut() {
            match r.child.try_wait() {
                Ok(None) => return Ok(r.browser.clone()),
                Ok(Some(status)) => {
                    tracing::warn!(service = SERVICE, %status, "embedded browser exited; starting it again")
                }
                Err(e) => {
                    tracing::warn!(service = SERVICE, error = %e, "embedded browser state unknown; starting it again")
                }
            }
        }
        *guard = None;
        let started = Instant::now();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| unavailable(format!("no free loopback port: {e}")))?
            .port();
        let child = tokio::process::Command::new(&self.bin)
            .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--cdp-max-connections", &self.max_connections.to_string(), "--log-level", "error"])
            .env("LIGHTPANDA_DISABLE_TELEMETRY", "true")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| unavailable(format!("cannot start {}: {e}", self.bin.display())))?;
        let version = format!("http://127.0.0.1:{port}/json/version");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(500))
            .build()
            .map_err(|e| unavailable(e.to_string()))?;
        while started.elapsed() < START_TIMEOUT {
            if http.get(&version).send().await.is_ok_and(|r| r.status().is_success()) {
                let browser = Arc::new(LightpandaBrowser::new(&format!("ws://127.0.0.1:{port}/"), None)?);
                tracing::info!(
                    service = SERVICE,
                    port,
                    start_ms = started.elapsed().as_millis() as u64,
                    "embedded browser started"
                );
                *guard = Some(Running { child, browser: browser.clone() });
                return Ok(browser);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(unavailable(format!("{} did not answer within {START_TIMEOUT:?}", self.bin.display())))
    }
}

#[async_trait]
impl Browser for EmbeddedLightpanda {
    async fn check(&self, spec: &CheckSpec) -> Result<CheckResult, ClientError> {
        self.browser().await?.check(spec).await
    }
    /// Start the browser now (Lambda init), so the first check does not pay for it.
    async fn warm(&self) -> Result<(), ClientError> {
        self.browser().await.map(|_| ())
    }
}
