//! Transport-level fault injection: a loopback TCP proxy in front of one dependency (a simulated
//! SaaS API, the Lightpanda CDP endpoint, the DynamoDB endpoint). While a fault is armed, each new
//! connection gets it instead of the upstream; otherwise bytes are piped through untouched. One
//! mechanism covers every dependency and every fault kind, because it works below the protocol:
//! HTTP clients, the AWS SDK and a WebSocket handshake all meet the same misbehaving socket.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The systems selfheal depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dependency {
    PagerDuty,
    Slack,
    Senso,
    Anthropic,
    Coder,
    Browser,
    Store,
}

impl Dependency {
    pub const ALL: [Dependency; 7] = [
        Dependency::PagerDuty,
        Dependency::Slack,
        Dependency::Senso,
        Dependency::Anthropic,
        Dependency::Coder,
        Dependency::Browser,
        Dependency::Store,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Dependency::PagerDuty => "pagerduty",
            Dependency::Slack => "slack",
            Dependency::Senso => "senso",
            Dependency::Anthropic => "anthropic",
            Dependency::Coder => "coder",
            Dependency::Browser => "browser",
            Dependency::Store => "store",
        }
    }
}

/// How a faulty dependency misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// Accepts the request and never answers.
    Timeout,
    /// 500 Internal Server Error with a JSON body.
    ServerError,
    /// 429 Too Many Requests with `Retry-After: 1`.
    RateLimited,
    /// 200 OK whose JSON body is cut off mid-value.
    MalformedBody,
    /// Nothing listens: the connection is refused.
    ConnectionRefused,
    /// 200 OK headers, then one body byte every 250 ms.
    SlowTrickle,
    /// 500 whose body echoes the request head, credentials included (a debugging proxy): the
    /// probe for secrets leaking through error messages. Not one of the six matrix faults.
    EchoingServerError,
}

impl FaultKind {
    pub const ALL: [FaultKind; 6] = [
        FaultKind::Timeout,
        FaultKind::ServerError,
        FaultKind::RateLimited,
        FaultKind::MalformedBody,
        FaultKind::ConnectionRefused,
        FaultKind::SlowTrickle,
    ];
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Timeout => "timeout",
            FaultKind::ServerError => "500",
            FaultKind::RateLimited => "429",
            FaultKind::MalformedBody => "malformed-body",
            FaultKind::ConnectionRefused => "connection-refused",
            FaultKind::SlowTrickle => "slow-trickle",
            FaultKind::EchoingServerError => "echoing-500",
        }
    }
}

/// Fault every new connection until cleared.
pub const UNTIL_CLEARED: u32 = u32::MAX;

struct Armed {
    kind: FaultKind,
    remaining: u32,
}

struct ProxyState {
    upstream: SocketAddr,
    armed: Mutex<Option<Armed>>,
    faulted: AtomicU32,
    /// Bumped on every change, so piped connections opened earlier are closed and the client's
    /// next request opens a connection that meets the new fault (clients pool connections).
    generation: watch::Sender<u64>,
    accept_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// A fault-injecting proxy on 127.0.0.1 in front of `upstream`.
pub struct FaultProxy {
    pub addr: SocketAddr,
    state: Arc<ProxyState>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl FaultProxy {
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(ProxyState {
            upstream,
            armed: Mutex::new(None),
            faulted: AtomicU32::new(0),
            generation: watch::channel(0).0,
            accept_task: Mutex::new(None),
        });
        *lock(&state.accept_task) = Some(tokio::spawn(accept_loop(listener, state.clone())));
        Ok(Self { addr, state })
    }

    /// The proxy's address in `url`'s place: same scheme and path, this host and port.
    pub fn rewrite(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
        let path = rest.find('/').map_or("", |i| &rest[i..]);
        format!("{scheme}://{}{path}", self.addr)
    }

    /// Fault the next `connections` new connections (or [`UNTIL_CLEARED`]).
    pub async fn inject(&self, kind: FaultKind, connections: u32) {
        *lock(&self.state.armed) = Some(Armed { kind, remaining: connections });
        self.state.generation.send_modify(|g| *g += 1);
        if kind == FaultKind::ConnectionRefused {
            // Close the listening socket so the kernel refuses connections.
            let task = lock(&self.state.accept_task).take();
            if let Some(task) = task {
                task.abort();
                let _ = task.await;
            }
        }
    }

    /// Heal: pipe every new connection to the upstream again.
    pub async fn clear(&self) -> std::io::Result<()> {
        *lock(&self.state.armed) = None;
        self.state.generation.send_modify(|g| *g += 1);
        if lock(&self.state.accept_task).is_none() {
            let listener = TcpListener::bind(self.addr).await?;
            *lock(&self.state.accept_task) = Some(tokio::spawn(accept_loop(listener, self.state.clone())));
        }
        Ok(())
    }

    /// Connections that met a fault so far.
    pub fn faulted(&self) -> u32 {
        self.state.faulted.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.state.accept_task).take() {
            task.abort();
        }
        self.state.generation.send_modify(|g| *g += 1);
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<ProxyState>) {
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            // Out of descriptors or similar: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let fault = {
            let mut armed = lock(&state.armed);
            match armed.as_mut() {
                Some(a) if a.remaining > 0 => {
                    if a.remaining != UNTIL_CLEARED {
                        a.remaining -= 1;
                    }
                    Some(a.kind)
                }
                _ => None,
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            match fault {
                Some(kind) => {
                    state.faulted.fetch_add(1, Ordering::SeqCst);
                    misbehave(socket, kind).await;
                }
                None => pipe(socket, &state).await,
            }
        });
    }
}

async fn pipe(mut client: TcpStream, state: &ProxyState) {
    let mut changed = state.generation.subscribe();
    let Ok(mut upstream) = TcpStream::connect(state.upstream).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
        _ = changed.changed() => {}
    }
}

/// Read the request head (so the client is past writing it), bounded in size and time.
async fn read_head(socket: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65_536 {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
    String::from_utf8_lossy(&head).into_owned()
}

fn response(status: &str, extra_headers: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{extra_headers}\r\n{body}",
        body.len()
    )
}

/// Read and discard until the peer closes (or `limit` passes).
async fn drain(socket: &mut TcpStream, limit: Duration) {
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(limit, async {
        while let Ok(n) = socket.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

async fn misbehave(mut socket: TcpStream, kind: FaultKind) {
    match kind {
        FaultKind::Timeout => {
            // Swallow whatever arrives, answer nothing, until the client gives up.
            drain(&mut socket, Duration::from_secs(300)).await;
        }
        FaultKind::ServerError | FaultKind::RateLimited | FaultKind::MalformedBody | FaultKind::EchoingServerError => {
            let head = read_head(&mut socket).await;
            let text = match kind {
                FaultKind::EchoingServerError => {
                    let message = format!("upstream failed for request: {}", head.replace("\r\n", " | "));
                    let body = serde_json::json!({"message": message, "error": {"message": message}});
                    response("500 Internal Server Error", "", &body.to_string())
                }
                FaultKind::ServerError => response(
                    "500 Internal Server Error",
                    "",
                    r#"{"message":"injected fault: internal error","error":{"message":"internal error"}}"#,
                ),
                FaultKind::RateLimited => response(
                    "429 Too Many Requests",
                    "retry-after: 1\r\n",
                    r#"{"message":"injected fault: rate limited","error":{"message":"rate limited"}}"#,
                ),
                _ => response("200 OK", "", r#"{"ok": tru"#),
            };
            let _ = socket.write_all(text.as_bytes()).await;
            let _ = socket.shutdown().await;
            // Drain any request body until the client hangs up: closing with unread bytes would
            // turn the answer into a reset.
            drain(&mut socket, Duration::from_secs(2)).await;
        }
        FaultKind::SlowTrickle => {
            read_head(&mut socket).await;
            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 4096\r\nconnection: close\r\n\r\n{";
            if socket.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            for _ in 0..4095 {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if socket.write_all(b" ").await.is_err() {
                    return;
                }
            }
        }
        // Never reached: an armed refusal closes the listener instead.
        FaultKind::ConnectionRefused => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn upstream() -> SocketAddr {
        let app = axum::Router::new().route("/ok", axum::routing::get(|| async { "fine" }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    }

    #[tokio::test]
    async fn faults_then_heals() {
        let proxy = FaultProxy::start(upstream().await).await.unwrap();
        let url = proxy.rewrite("http://example.invalid/ok");
        // One connection per request, so each meets the fault armed at that moment.
        let client =
            reqwest::Client::builder().timeout(Duration::from_millis(600)).pool_max_idle_per_host(0).build().unwrap();
        assert_eq!(client.get(&url).send().await.unwrap().text().await.unwrap(), "fine");

        proxy.inject(FaultKind::ServerError, 1).await;
        assert_eq!(client.get(&url).send().await.unwrap().status(), 500);
        assert_eq!(client.get(&url).send().await.unwrap().status(), 200, "the budget was one connection");

        proxy.inject(FaultKind::RateLimited, UNTIL_CLEARED).await;
        let r = client.get(&url).send().await.unwrap();
        assert_eq!((r.status().as_u16(), r.headers()["retry-after"].to_str().unwrap()), (429, "1"));

        proxy.inject(FaultKind::MalformedBody, UNTIL_CLEARED).await;
        let body = client.get(&url).send().await.unwrap().text().await.unwrap();
        assert!(serde_json::from_str::<serde_json::Value>(&body).is_err());

        proxy.inject(FaultKind::Timeout, UNTIL_CLEARED).await;
        assert!(client.get(&url).send().await.unwrap_err().is_timeout());

        proxy.inject(FaultKind::SlowTrickle, UNTIL_CLEARED).await;
        let r = client.get(&url).send().await.unwrap();
        assert!(r.text().await.unwrap_err().is_timeout(), "the body never finishes in time");

        proxy.inject(FaultKind::ConnectionRefused, UNTIL_CLEARED).await;
        assert!(client.get(&url).send().await.unwrap_err().is_connect());

        proxy.clear().await.unwrap();
        assert_eq!(client.get(&url).send().await.unwrap().text().await.unwrap(), "fine");
        assert_eq!(proxy.faulted(), 5, "refused connections never reach the proxy");
    }
}
