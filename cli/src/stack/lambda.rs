//! The Lambda host of `selfheal stack`: every function's real binary runs as its own OS process
//! and polls an emulated Lambda Runtime API, as in a Lambda execution environment; callers reach
//! the functions through [`LambdaHost::invoke`], the Lambda Invoke API served over HTTP, or the
//! Step Functions task dispatcher ([`LambdaTaskDispatcher`]).
//!
//! What the emulation keeps from the real service, because our binaries depend on it:
//! - a cleared environment holding only the template's variables, the platform's and Lambda's
//!   reserved ones (so a missing variable fails here as it would when deployed);
//! - one invocation at a time per execution environment, later ones queued in arrival order;
//! - the function timeout (the process is killed and replaced, `Sandbox.Timedout`), crashes
//!   (`Runtime.ExitError`, replaced) and init failures (`Runtime.InitError`, retried on the next
//!   invoke), all reported as function errors rather than host errors;
//! - the 6 MB synchronous payload limit.
//!
//! Each process gets its own Runtime API listener (a fresh one per restart): a killed process's
//! half-open long poll can then never take an event meant for its successor.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};

use selfheal::engine::{TaskDispatcher, TaskFailure, TaskInvocation, TaskOutcome};

use super::{ACCOUNT, AwsCredentials};

/// Lambda's limit for a synchronous invocation's request and response payloads (6 MB).
pub const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;

/// Lambda gives an on-demand environment 10 s of init before the function timeout starts to
/// count, so the first invocation may wait this long (plus the timeout) for the runtime to poll.
const INIT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long to wait for a killed process to be reaped before moving on.
const REAP_TIMEOUT: Duration = Duration::from_secs(5);

/// Runtime API request bodies are accepted well past the payload limit so that an oversized
/// response is reported the way Lambda reports it (`Function.ResponseSizeTooLarge`), not as a
/// bare transport error the invocation would never hear about.
const RUNTIME_BODY_LIMIT: usize = 4 * MAX_PAYLOAD_BYTES;

/// What the Lambda platform reports as the function's version (we only run `$LATEST`).
const VERSION: &str = "$LATEST";

/// One function of the template, as the host runs it.
#[derive(Debug, Clone)]
pub struct FunctionSpec {
    /// The template's logical id, e.g. `IntakeFunction`.
    pub logical_id: String,
    /// The physical name, e.g. `selfheal-IntakeFunction`.
    pub name: String,
    /// `arn:aws:lambda:us-east-1:123456789012:function:{name}`.
    pub arn: String,
    /// The built function binary (what `bootstrap` is in the deployment package).
    pub binary: PathBuf,
    /// Exactly the template's `Environment.Variables`.
    pub env: BTreeMap<String, String>,
    pub timeout_secs: u64,
    pub memory_mb: u64,
    /// The identity the function's role stands for; without it the process gets no credentials.
    pub credentials: Option<AwsCredentials>,
}

/// The result of an invocation that reached the function.
#[derive(Debug, Clone, PartialEq)]
pub enum Invoked {
    /// The function's JSON result.
    Ok(Value),
    /// The function (or its execution environment) failed; `error_type` is what Lambda reports
    /// as `errorType` and Step Functions matches `Retry`/`Catch` on.
    FunctionError { error_type: String, error_message: String },
}

/// An invocation with the identifiers Lambda returns alongside the result.
#[derive(Debug, Clone, PartialEq)]
pub struct InvokeRecord {
    /// The function's logical id.
    pub function: String,
    /// `x-amzn-RequestId`, also the runtime's `Lambda-Runtime-Aws-Request-Id`.
    pub request_id: String,
    /// `X-Amzn-Trace-Id`, also the runtime's `Lambda-Runtime-Trace-Id`.
    pub trace_id: String,
    pub outcome: Invoked,
}

/// Why the host could not run an invocation (as opposed to the function failing, which is an
/// [`Invoked::FunctionError`]).
#[derive(Debug, thiserror::Error)]
pub enum LambdaHostError {
    /// A loopback listener could not be bound.
    #[error("cannot bind a listener on 127.0.0.1: {0}")]
    Bind(#[source] std::io::Error),
    /// The log directory or a function's log file could not be opened.
    #[error("cannot open log file {}: {source}", path.display())]
    Log { path: PathBuf, source: std::io::Error },
    /// A function's process could not be started.
    #[error("cannot start the process of {function}: {source}")]
    Spawn { function: String, source: std::io::Error },
    /// Two function specs share a name, ARN or logical id.
    #[error("two functions are named {0}")]
    DuplicateFunction(String),
    /// No function with that name, ARN or logical id.
    #[error("Function not found: {0}")]
    UnknownFunction(String),
    /// An HTTP route that API Gateway would reject.
    #[error("invalid HTTP API route: {0}")]
    InvalidRoute(String),
    /// The request payload is over Lambda's synchronous invocation limit.
    #[error("Request must be smaller than {limit} bytes for the InvokeFunction operation (got {size})")]
    PayloadTooLarge { size: usize, limit: usize },
    /// The payload could not be serialised.
    #[error("the payload cannot be serialised: {0}")]
    Payload(#[source] serde_json::Error),
    /// The function answered with bytes that are not JSON.
    #[error("{function} returned a response that is not JSON: {source}")]
    InvalidResponse { function: String, source: serde_json::Error },
    /// The host was shut down.
    #[error("the Lambda host has been shut down")]
    ShutDown,
    /// The task running the invocation ended abnormally (a bug in the host, or runtime shutdown).
    #[error("the invocation was aborted: {0}")]
    Aborted(String),
}

/// Runs the functions' processes and their Runtime API, and serves the Lambda Invoke API.
pub struct LambdaHost {
    functions: Vec<FunctionSpec>,
    slots: Vec<Arc<Slot>>,
    invoke_base_url: String,
    /// Dropping the sender stops the Invoke API server.
    invoke_server: Mutex<Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>>,
    closed: Arc<AtomicBool>,
}

impl fmt::Debug for LambdaHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LambdaHost")
            .field("invoke_base_url", &self.invoke_base_url)
            .field("functions", &self.functions.iter().map(|s| &s.logical_id).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl LambdaHost {
    /// Start one Runtime API endpoint and one process per function, and the Invoke API.
    /// `platform_env` is what the Lambda platform itself adds (`AWS_REGION`, `AWS_ENDPOINT_URL…`,
    /// log format); `log_dir` gets `<logical_id>.log` with each process's stdout and stderr.
    /// Processes start initialising at once (and are not waited for), like provisioned
    /// environments; one that fails init is retried on its first invocation.
    pub async fn start(
        functions: Vec<FunctionSpec>,
        platform_env: BTreeMap<String, String>,
        log_dir: &Path,
    ) -> Result<Arc<LambdaHost>, LambdaHostError> {
        let mut seen = std::collections::HashSet::new();
        for spec in &functions {
            for key in [&spec.logical_id, &spec.name, &spec.arn] {
                if !seen.insert(key.clone()) {
                    return Err(LambdaHostError::DuplicateFunction(key.clone()));
                }
            }
        }
        std::fs::create_dir_all(log_dir)
            .map_err(|source| LambdaHostError::Log { path: log_dir.to_path_buf(), source })?;

        let closed = Arc::new(AtomicBool::new(false));
        let platform_env = Arc::new(platform_env);
        let slots: Vec<Arc<Slot>> = functions
            .iter()
            .map(|spec| {
                Arc::new(Slot {
                    spec: spec.clone(),
                    platform_env: platform_env.clone(),
                    log_path: log_dir.join(format!("{}.log", spec.logical_id)),
                    closed: closed.clone(),
                    turn: tokio::sync::Mutex::new(()),
                    process: Mutex::new(None),
                    generations: AtomicU64::new(0),
                    invocations: AtomicU64::new(0),
                })
            })
            .collect();
        for slot in &slots {
            // Dropping the slots on error kills the processes already started.
            slot.ensure_process()?;
        }

        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.map_err(LambdaHostError::Bind)?;
        let addr = listener.local_addr().map_err(LambdaHostError::Bind)?;
        let invoke_base_url = format!("http://{addr}");
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        // The server holds a Weak reference: the host's Drop must still run (and kill the
        // processes) when the last caller lets go of it.
        let host = Arc::new_cyclic(|weak: &Weak<LambdaHost>| {
            let router = invoke_router(weak.clone());
            let server = tokio::spawn(async move {
                let stop = async move {
                    let _ = stop_rx.await;
                };
                if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(stop).await {
                    tracing::warn!(error = %e, "Lambda Invoke API server failed");
                }
            });
            LambdaHost { functions, slots, invoke_base_url, invoke_server: Mutex::new(Some((stop_tx, server))), closed }
        });
        tracing::info!(
            invoke_api = %host.invoke_base_url,
            functions = host.functions.len(),
            log_dir = %log_dir.display(),
            "Lambda host started"
        );
        Ok(host)
    }

    /// Invoke a function (by name, ARN or logical id) synchronously, as `RequestResponse`.
    pub async fn invoke(&self, function: &str, payload: &Value) -> Result<Invoked, LambdaHostError> {
        self.invoke_detailed(function, payload).await.map(|record| record.outcome)
    }

    /// [`LambdaHost::invoke`], with the request and trace ids Lambda reports.
    pub async fn invoke_detailed(&self, function: &str, payload: &Value) -> Result<InvokeRecord, LambdaHostError> {
        let slot = self.slot(function).ok_or_else(|| LambdaHostError::UnknownFunction(function.to_string()))?;
        // Every attempt counts, as Lambda's Invocations metric does (failed ones included).
        slot.invocations.fetch_add(1, Ordering::SeqCst);
        if self.closed.load(Ordering::SeqCst) {
            return Err(LambdaHostError::ShutDown);
        }
        let bytes = serde_json::to_vec(payload).map_err(LambdaHostError::Payload)?;
        if bytes.len() > MAX_PAYLOAD_BYTES {
            return Err(LambdaHostError::PayloadTooLarge { size: bytes.len(), limit: MAX_PAYLOAD_BYTES });
        }
        // The invocation runs on its own task: a caller that gives up (API Gateway's 29 s, an
        // HTTP client that disconnects) must not abandon it halfway. As in Lambda, the function
        // keeps its environment until it answers or times out, and queued invocations wait.
        let task = tokio::spawn(slot.clone().run(Bytes::from(bytes)));
        task.await.map_err(|e| LambdaHostError::Aborted(e.to_string()))?
    }

    /// How many invocations each function (by logical id) was asked to run.
    pub fn invocations(&self) -> BTreeMap<String, u64> {
        self.slots.iter().map(|s| (s.spec.logical_id.clone(), s.invocations.load(Ordering::SeqCst))).collect()
    }

    /// The base URL of the Lambda Invoke API (`http://127.0.0.1:PORT`), for `AWS_ENDPOINT_URL_LAMBDA`.
    pub fn invoke_base_url(&self) -> &str {
        &self.invoke_base_url
    }

    pub fn functions(&self) -> &[FunctionSpec] {
        &self.functions
    }

    /// How long the current process of `function` took to initialise (spawn to its first
    /// `GET …/invocation/next`), once it has: the cold start, less the first invocation.
    pub fn init_duration(&self, function: &str) -> Option<Duration> {
        let slot = self.slot(function)?;
        let current = lock(&slot.process);
        current.as_ref().and_then(|p| p.api.init.get().copied())
    }

    /// Whether `function` (name, ARN or logical id) is one of ours.
    pub fn has_function(&self, function: &str) -> bool {
        self.slot(function).is_some()
    }

    /// Kill every process and stop the servers; later invocations fail with `ShutDown`.
    pub async fn shutdown(&self) {
        self.closed.store(true, Ordering::SeqCst);
        if let Some((stop, server)) = lock(&self.invoke_server).take() {
            drop(stop);
            server.abort();
        }
        for slot in &self.slots {
            slot.retire_current().await;
        }
        tracing::info!("Lambda host shut down");
    }

    /// Resolve a function name, (partial) ARN, optionally qualified with `$LATEST`, or logical id.
    fn slot(&self, function: &str) -> Option<&Arc<Slot>> {
        let function = function.strip_suffix(":$LATEST").unwrap_or(function);
        self.slots.iter().find(|slot| {
            let spec = &slot.spec;
            match function.rsplit_once(":function:") {
                // A partial ARN (`123456789012:function:name`) or a full one.
                Some((prefix, name)) => spec.arn == function || (prefix == ACCOUNT && spec.name == name),
                None => spec.name == function || spec.logical_id == function,
            }
        })
    }
}

impl Drop for LambdaHost {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::SeqCst);
        if let Some((_stop, server)) = lock(&self.invoke_server).take() {
            server.abort();
        }
        // Dropping a process record kills the process (its supervisor task sees the kill
        // sender go away; `kill_on_drop` covers a runtime that is itself shutting down).
        for slot in &self.slots {
            lock(&slot.process).take();
        }
    }
}

/// Lock a std mutex, recovering the data if a panicking thread poisoned it: every critical
/// section here leaves the data consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// An X-Ray trace header as Lambda passes it to the runtime.
fn new_trace_id() -> String {
    let secs = epoch_ms(SystemTime::now()) / 1000;
    let root = uuid::Uuid::new_v4().simple().to_string();
    let parent = uuid::Uuid::new_v4().simple().to_string();
    format!("Root=1-{secs:08x}-{};Parent={};Sampled=0", &root[..24], &parent[..16])
}

/// Append a platform line (`START`, `END`, `REPORT`, …) to a function's log, as Lambda writes
/// them to CloudWatch next to the function's own output.
fn log_line(path: &Path, line: &str) {
    let written =
        std::fs::OpenOptions::new().create(true).append(true).open(path).and_then(|mut file| writeln!(file, "{line}"));
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), error = %e, "cannot write to function log");
    }
}

// ---------------------------------------------------------------------------------------------
// One function: its queue, its process and the process's Runtime API.
// ---------------------------------------------------------------------------------------------

struct Slot {
    spec: FunctionSpec,
    platform_env: Arc<BTreeMap<String, String>>,
    log_path: PathBuf,
    closed: Arc<AtomicBool>,
    /// Held for a whole invocation: one at a time per execution environment. Tokio's mutex is
    /// fair, so queued invocations run in arrival order.
    turn: tokio::sync::Mutex<()>,
    process: Mutex<Option<Process>>,
    generations: AtomicU64,
    invocations: AtomicU64,
}

/// A running (or just exited) function process. Dropping it kills the process and stops its
/// Runtime API listener.
struct Process {
    generation: u64,
    api: Arc<RuntimeApi>,
    events: mpsc::Sender<Event>,
    exited: watch::Receiver<Option<String>>,
    _kill: oneshot::Sender<()>,
    _stop_server: oneshot::Sender<()>,
}

impl Drop for Process {
    fn drop(&mut self) {
        // Wake a pending long poll so the listener's graceful shutdown can finish.
        self.api.close();
    }
}

/// What an invocation needs of the current process, without holding the slot's lock.
struct Live {
    generation: u64,
    api: Arc<RuntimeApi>,
    events: mpsc::Sender<Event>,
    exited: watch::Receiver<Option<String>>,
}

/// An invocation waiting to be picked up by `GET …/invocation/next`.
struct Event {
    request_id: String,
    trace_id: String,
    payload: Bytes,
    /// Told the deadline when the runtime takes the event: the function's clock starts then.
    picked_up: oneshot::Sender<Instant>,
    reply: oneshot::Sender<Reply>,
}

enum Reply {
    Response(Bytes),
    Error { error_type: String, error_message: String },
}

/// The Runtime API state of one process.
struct RuntimeApi {
    function: String,
    arn: String,
    timeout: Duration,
    events: tokio::sync::Mutex<mpsc::Receiver<Event>>,
    /// Events handed to the runtime, by request id, until it posts the response or error.
    in_flight: Mutex<HashMap<String, oneshot::Sender<Reply>>>,
    /// The runtime has polled `/next` at least once: init is over.
    polled: AtomicBool,
    /// When the process was started, and how long its init took (spawn to first `/next`).
    spawned: std::time::Instant,
    init: std::sync::OnceLock<Duration>,
    /// `POST /runtime/init/error`: (errorType, errorMessage).
    init_error: watch::Sender<Option<(String, String)>>,
    closed: watch::Sender<bool>,
}

impl RuntimeApi {
    fn close(&self) {
        self.closed.send_replace(true);
    }
}

impl Slot {
    fn logical_id(&self) -> &str {
        &self.spec.logical_id
    }

    /// The current process if it is alive and initialised without error, else a fresh one
    /// (first use, or the last one exited or reported an init error).
    fn ensure_process(&self) -> Result<Live, LambdaHostError> {
        let mut current = lock(&self.process);
        if let Some(p) = current.as_ref() {
            let dead = p.exited.borrow().is_some() || p.api.init_error.borrow().is_some();
            if !dead {
                return Ok(p.live());
            }
        }
        // Drop (and so kill) a failed predecessor before starting its replacement.
        *current = None;
        let process = self.spawn_process()?;
        let live = process.live();
        *current = Some(process);
        Ok(live)
    }

    /// Start a process with its own Runtime API listener.
    fn spawn_process(&self) -> Result<Process, LambdaHostError> {
        let spec = &self.spec;
        let generation = self.generations.fetch_add(1, Ordering::SeqCst) + 1;
        let std_listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(LambdaHostError::Bind)?;
        std_listener.set_nonblocking(true).map_err(LambdaHostError::Bind)?;
        let addr = std_listener.local_addr().map_err(LambdaHostError::Bind)?;
        let listener = tokio::net::TcpListener::from_std(std_listener).map_err(LambdaHostError::Bind)?;

        let (events_tx, events_rx) = mpsc::channel(1);
        let api = Arc::new(RuntimeApi {
            function: spec.name.clone(),
            arn: spec.arn.clone(),
            timeout: Duration::from_secs(spec.timeout_secs),
            events: tokio::sync::Mutex::new(events_rx),
            in_flight: Mutex::new(HashMap::new()),
            polled: AtomicBool::new(false),
            spawned: std::time::Instant::now(),
            init: std::sync::OnceLock::new(),
            init_error: watch::Sender::new(None),
            closed: watch::Sender::new(false),
        });

        let log_error = |source| LambdaHostError::Log { path: self.log_path.clone(), source };
        let stdout = std::fs::OpenOptions::new().create(true).append(true).open(&self.log_path).map_err(log_error)?;
        let stderr = stdout.try_clone().map_err(log_error)?;
        let task_root = spec.binary.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
        let mut command = tokio::process::Command::new(&spec.binary);
        command
            .env_clear()
            .envs(self.environment(addr, &task_root))
            .current_dir(&task_root)
            .stdin(std::process::Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            // Its own process group, so that killing the function also kills what it started
            // (the verify function's Lightpanda), as ending a Lambda sandbox does.
            .process_group(0)
            .kill_on_drop(true);
        log_line(&self.log_path, &format!("INIT_START Runtime Version: selfheal-stack Generation: {generation}"));
        let child =
            command.spawn().map_err(|source| LambdaHostError::Spawn { function: spec.logical_id.clone(), source })?;
        let pid = child.id();
        tracing::info!(function = %spec.logical_id, pid, runtime_api = %addr, generation, "function process started");

        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let router = runtime_router(api.clone());
        let function = spec.logical_id.clone();
        tokio::spawn(async move {
            let stop = async move {
                let _ = stop_rx.await;
            };
            if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(stop).await {
                tracing::warn!(function = %function, error = %e, "Runtime API server failed");
            }
        });

        let (kill_tx, kill_rx) = oneshot::channel::<()>();
        let (exit_tx, exit_rx) = watch::channel(None);
        tokio::spawn(supervise(child, kill_rx, exit_tx, api.clone(), spec.logical_id.clone(), self.log_path.clone()));

        Ok(Process { generation, api, events: events_tx, exited: exit_rx, _kill: kill_tx, _stop_server: stop_tx })
    }

    /// The process's environment: nothing from our own, as in a fresh execution environment.
    fn environment(&self, runtime_api: SocketAddr, task_root: &Path) -> BTreeMap<String, String> {
        let spec = &self.spec;
        let mut env = spec.env.clone();
        env.extend(self.platform_env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let stream = format!("{}/[{VERSION}]{}", chrono::Utc::now().format("%Y/%m/%d"), uuid::Uuid::new_v4().simple());
        let reserved = [
            ("AWS_LAMBDA_RUNTIME_API", runtime_api.to_string()),
            ("AWS_LAMBDA_FUNCTION_NAME", spec.name.clone()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", spec.memory_mb.to_string()),
            ("AWS_LAMBDA_FUNCTION_VERSION", VERSION.to_string()),
            ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{}", spec.name)),
            ("AWS_LAMBDA_LOG_STREAM_NAME", stream),
            ("_HANDLER", "bootstrap".to_string()),
            ("LAMBDA_TASK_ROOT", task_root.display().to_string()),
            ("TZ", ":UTC".to_string()),
            ("PATH", "/usr/local/bin:/usr/bin:/bin".to_string()),
        ];
        env.extend(reserved.into_iter().map(|(k, v)| (k.to_string(), v)));
        if let Some(credentials) = &spec.credentials {
            // Long-term keys of the function's IAM identity; no session token, so SDKs sign
            // with these alone.
            env.insert("AWS_ACCESS_KEY_ID".to_string(), credentials.access_key_id.clone());
            env.insert("AWS_SECRET_ACCESS_KEY".to_string(), credentials.secret_access_key.clone());
        }
        env
    }

    /// Kill the process of `generation` if it is still the current one, and wait for it to be
    /// reaped (so a replacement never overlaps it).
    async fn retire(&self, generation: u64) {
        let process = {
            let mut current = lock(&self.process);
            if current.as_ref().is_some_and(|p| p.generation == generation) { current.take() } else { None }
        };
        if let Some(process) = process {
            let mut exited = process.exited.clone();
            drop(process);
            let _ = tokio::time::timeout(REAP_TIMEOUT, exited.wait_for(Option::is_some)).await;
        }
    }

    async fn retire_current(&self) {
        let generation = lock(&self.process).as_ref().map(|p| p.generation);
        if let Some(generation) = generation {
            self.retire(generation).await;
        }
    }

    /// After a timeout or crash, start the replacement right away (fresh init), so the next
    /// invocation finds an environment initialising or ready.
    fn replace(&self) {
        if self.closed.load(Ordering::SeqCst) {
            return;
        }
        if let Err(e) = self.ensure_process() {
            tracing::error!(function = %self.logical_id(), error = %e, "cannot restart function process");
        }
    }

    /// One invocation, from queueing to the function's answer (or its failure).
    async fn run(self: Arc<Self>, payload: Bytes) -> Result<InvokeRecord, LambdaHostError> {
        let _turn = self.turn.lock().await;
        if self.closed.load(Ordering::SeqCst) {
            return Err(LambdaHostError::ShutDown);
        }
        let live = self.ensure_process()?;
        let request_id = uuid::Uuid::new_v4().to_string();
        let trace_id = new_trace_id();
        let (picked_tx, picked_rx) = oneshot::channel();
        let (reply_tx, reply_rx) = oneshot::channel();
        let event = Event {
            request_id: request_id.clone(),
            trace_id: trace_id.clone(),
            payload,
            picked_up: picked_tx,
            reply: reply_tx,
        };
        // The channel holds one event and we hold the turn, so this never waits; the receiver
        // lives as long as `live.api`, so it cannot fail either.
        let outcome = match live.events.send(event).await {
            Ok(()) => self.await_outcome(&live, &request_id, picked_rx, reply_rx).await?,
            Err(_) => failure("Runtime.ExitError", format!("RequestId: {request_id} Error: Runtime is gone")),
        };
        Ok(InvokeRecord { function: self.spec.logical_id.clone(), request_id, trace_id, outcome })
    }

    async fn await_outcome(
        &self,
        live: &Live,
        request_id: &str,
        picked_rx: oneshot::Receiver<Instant>,
        reply_rx: oneshot::Receiver<Reply>,
    ) -> Result<Invoked, LambdaHostError> {
        let timeout = Duration::from_secs(self.spec.timeout_secs);
        let mut exited = live.exited.clone();
        let mut init_reports = live.api.init_error.subscribe();

        // Phase 1: until the runtime takes the event (a cold process initialises first).
        let deadline = tokio::select! {
            biased;
            picked = picked_rx => match picked {
                Ok(deadline) => deadline,
                // The Runtime API dropped the event (it cannot, short of a bug): start afresh.
                Err(_) => return Ok(self.crashed(live, request_id, "the runtime lost the event").await),
            },
            (error_type, error_message) = init_error(&mut init_reports) => {
                tracing::warn!(function = %self.logical_id(), %error_type, %error_message, "function init failed");
                log_line(&self.log_path, &format!("INIT_REPORT Status: error Error Type: {error_type}"));
                // Lambda tears a failed environment down; the next invocation starts afresh.
                self.retire(live.generation).await;
                return Ok(failure("Runtime.InitError", format!("{error_type}: {error_message}")));
            }
            status = exit_status(&mut exited) => {
                if live.api.polled.load(Ordering::SeqCst) {
                    // Initialised earlier, died while idle: a crash like any other.
                    return Ok(self.crashed(live, request_id, &status).await);
                }
                tracing::warn!(function = %self.logical_id(), %status, log = %self.log_path.display(),
                    "function process exited during init");
                log_line(&self.log_path, &format!("INIT_REPORT Status: error Error Type: Runtime.InitError ({status})"));
                self.retire(live.generation).await;
                return Ok(failure(
                    "Runtime.InitError",
                    format!("RequestId: {request_id} Error: Runtime exited before polling for an invocation: {status}"),
                ));
            }
            _ = tokio::time::sleep(INIT_TIMEOUT + timeout) => {
                tracing::warn!(function = %self.logical_id(), "function did not finish init in time");
                return Ok(self.timed_out(live, request_id).await);
            }
        };
        let started = Instant::now();
        log_line(&self.log_path, &format!("START RequestId: {request_id} Version: {VERSION}"));

        // Phase 2: until the runtime answers, the process dies or the timeout passes.
        let outcome = tokio::select! {
            biased;
            reply = reply_rx => match reply {
                Ok(Reply::Response(body)) if body.is_empty() => Invoked::Ok(Value::Null),
                Ok(Reply::Response(body)) => match serde_json::from_slice(&body) {
                    Ok(value) => Invoked::Ok(value),
                    Err(source) => {
                        self.report(request_id, started, Some("Runtime.InvalidResponse"));
                        return Err(LambdaHostError::InvalidResponse { function: self.spec.logical_id.clone(), source });
                    }
                },
                Ok(Reply::Error { error_type, error_message }) => Invoked::FunctionError { error_type, error_message },
                // The Runtime API dropped the reply (it cannot, short of a bug): start afresh.
                Err(_) => return Ok(self.crashed(live, request_id, "the runtime lost the invocation").await),
            },
            status = exit_status(&mut exited) => return Ok(self.crashed(live, request_id, &status).await),
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                return Ok(self.timed_out(live, request_id).await);
            }
        };
        let error_type = match &outcome {
            Invoked::FunctionError { error_type, .. } => Some(error_type.as_str()),
            Invoked::Ok(_) => None,
        };
        self.report(request_id, started, error_type);
        tracing::debug!(function = %self.logical_id(), request_id, ok = error_type.is_none(), "invocation finished");
        Ok(outcome)
    }

    /// `END` and `REPORT` lines, as Lambda logs them after each invocation.
    fn report(&self, request_id: &str, started: Instant, error_type: Option<&str>) {
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        let status = error_type.map(|t| format!("\tStatus: error\tError Type: {t}")).unwrap_or_default();
        log_line(&self.log_path, &format!("END RequestId: {request_id}"));
        log_line(
            &self.log_path,
            &format!(
                "REPORT RequestId: {request_id}\tDuration: {ms:.2} ms\tBilled Duration: {} ms\tMemory Size: {} MB{status}",
                ms.ceil() as u64,
                self.spec.memory_mb
            ),
        );
    }

    /// The function ran past its timeout: kill the process and start a fresh one.
    async fn timed_out(&self, live: &Live, request_id: &str) -> Invoked {
        let secs = self.spec.timeout_secs;
        tracing::warn!(function = %self.logical_id(), request_id, timeout_secs = secs, "function timed out; killing its process");
        log_line(
            &self.log_path,
            &format!("{} {request_id} Task timed out after {secs}.00 seconds", chrono::Utc::now().to_rfc3339()),
        );
        log_line(&self.log_path, &format!("END RequestId: {request_id}"));
        log_line(&self.log_path, &format!("REPORT RequestId: {request_id}\tStatus: timeout"));
        self.retire(live.generation).await;
        self.replace();
        failure("Sandbox.Timedout", format!("Task timed out after {secs} seconds"))
    }

    /// The process died with the invocation in flight (or while idle): replace it.
    async fn crashed(&self, live: &Live, request_id: &str, status: &str) -> Invoked {
        tracing::warn!(function = %self.logical_id(), request_id, %status, log = %self.log_path.display(),
            "function process exited during an invocation; restarting it");
        log_line(&self.log_path, &format!("END RequestId: {request_id}"));
        log_line(
            &self.log_path,
            &format!("REPORT RequestId: {request_id}\tStatus: error\tError Type: Runtime.ExitError"),
        );
        self.retire(live.generation).await;
        self.replace();
        failure("Runtime.ExitError", format!("RequestId: {request_id} Error: Runtime exited with error: {status}"))
    }
}

impl Process {
    fn live(&self) -> Live {
        Live {
            generation: self.generation,
            api: self.api.clone(),
            events: self.events.clone(),
            exited: self.exited.clone(),
        }
    }
}

fn failure(error_type: &str, error_message: String) -> Invoked {
    Invoked::FunctionError { error_type: error_type.to_string(), error_message }
}

/// Wait until the process has exited; its exit status, described.
async fn exit_status(exited: &mut watch::Receiver<Option<String>>) -> String {
    match exited.wait_for(Option::is_some).await {
        Ok(status) => status.clone().unwrap_or_default(),
        // The supervisor always reports before it ends; if it is gone, so is the process.
        Err(_) => "unknown exit status".to_string(),
    }
}

/// Wait until the runtime posts `/runtime/init/error`.
async fn init_error(reports: &mut watch::Receiver<Option<(String, String)>>) -> (String, String) {
    let report = match reports.wait_for(Option::is_some).await {
        Ok(report) => report.clone(),
        Err(_) => None,
    };
    match report {
        Some(report) => report,
        // The sender lives in the RuntimeApi we hold a reference to, so this cannot happen;
        // never resolve rather than invent an init error.
        None => std::future::pending().await,
    }
}

/// SIGKILL the process group a function process leads (it was started with
/// `process_group(0)`, so its group id is its pid).
fn kill_group(pid: Option<u32>, function: &str) {
    let group = pid.and_then(|p| i32::try_from(p).ok()).and_then(rustix::process::Pid::from_raw);
    if let Some(group) = group
        && let Err(e) = rustix::process::kill_process_group(group, rustix::process::Signal::KILL)
    {
        tracing::debug!(function = %function, pid = group.as_raw_nonzero().get(), error = %e, "group kill failed (already gone?)");
    }
}

/// Own the child: wait for it to exit, or kill it when the process record is dropped.
async fn supervise(
    mut child: tokio::process::Child,
    kill: oneshot::Receiver<()>,
    exited: watch::Sender<Option<String>>,
    api: Arc<RuntimeApi>,
    function: String,
    log_path: PathBuf,
) {
    let pid = child.id();
    let (status, killed) = tokio::select! {
        status = child.wait() => {
            // A sandbox whose runtime exits is torn down with whatever it started.
            kill_group(pid, &function);
            (status, false)
        }
        // Sent or dropped: either way the host wants the process gone.
        _ = kill => {
            kill_group(pid, &function);
            if let Err(e) = child.start_kill() {
                tracing::debug!(function = %function, pid, error = %e, "kill failed (already exited?)");
            }
            (child.wait().await, true)
        }
    };
    let status = match status {
        Ok(status) => status.to_string(),
        Err(e) => format!("unknown exit status ({e})"),
    };
    if killed {
        tracing::debug!(function = %function, pid, %status, "function process killed");
    } else {
        tracing::info!(function = %function, pid, %status, log = %log_path.display(), "function process exited");
    }
    api.close();
    exited.send_replace(Some(status));
}

// ---------------------------------------------------------------------------------------------
// Runtime API (what the function process polls).
// ---------------------------------------------------------------------------------------------

fn runtime_router(api: Arc<RuntimeApi>) -> Router {
    Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next_invocation))
        .route("/2018-06-01/runtime/invocation/{request_id}/response", post(invocation_response))
        .route("/2018-06-01/runtime/invocation/{request_id}/error", post(invocation_error))
        .route("/2018-06-01/runtime/init/error", post(init_error_report))
        .fallback(|| async { runtime_error(StatusCode::NOT_FOUND, "NotFound", "unknown Runtime API path") })
        .layer(DefaultBodyLimit::max(RUNTIME_BODY_LIMIT))
        .with_state(api)
}

fn runtime_error(status: StatusCode, error_type: &str, message: &str) -> Response {
    (status, axum::Json(json!({ "errorType": error_type, "errorMessage": message }))).into_response()
}

fn accepted() -> Response {
    (StatusCode::ACCEPTED, axum::Json(json!({ "status": "OK" }))).into_response()
}

/// `GET /2018-06-01/runtime/invocation/next`: long-poll until the next event.
async fn next_invocation(State(api): State<Arc<RuntimeApi>>) -> Response {
    api.polled.store(true, Ordering::SeqCst);
    let _ = api.init.set(api.spawned.elapsed());
    let mut closed = api.closed.subscribe();
    let gone = || runtime_error(StatusCode::GONE, "RuntimeClosed", "this execution environment is shutting down");
    // One long poll at a time: a second concurrent poll waits for the first to be answered.
    let mut events = tokio::select! {
        events = api.events.lock() => events,
        _ = closed.wait_for(|c| *c) => return gone(),
    };
    let event = tokio::select! {
        event = events.recv() => event,
        _ = closed.wait_for(|c| *c) => None,
    };
    drop(events);
    let Some(event) = event else { return gone() };

    let deadline = Instant::now() + api.timeout;
    let deadline_ms = epoch_ms(SystemTime::now()) + api.timeout.as_millis() as u64;
    lock(&api.in_flight).insert(event.request_id.clone(), event.reply);
    let _ = event.picked_up.send(deadline);
    tracing::debug!(function = %api.function, request_id = %event.request_id, "event delivered to the runtime");

    let mut response = Response::new(axum::body::Body::from(event.payload));
    let headers = response.headers_mut();
    let pairs = [
        ("content-type", "application/json".to_string()),
        ("lambda-runtime-aws-request-id", event.request_id),
        ("lambda-runtime-deadline-ms", deadline_ms.to_string()),
        ("lambda-runtime-invoked-function-arn", api.arn.clone()),
        ("lambda-runtime-trace-id", event.trace_id),
    ];
    for (name, value) in pairs {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    response
}

fn take_in_flight(api: &RuntimeApi, request_id: &str) -> Option<oneshot::Sender<Reply>> {
    lock(&api.in_flight).remove(request_id)
}

fn invalid_request_id(request_id: &str) -> Response {
    runtime_error(
        StatusCode::BAD_REQUEST,
        "InvalidRequestID",
        &format!("no invocation {request_id} is in flight in this execution environment"),
    )
}

/// `POST /2018-06-01/runtime/invocation/{id}/response`.
async fn invocation_response(
    State(api): State<Arc<RuntimeApi>>,
    UrlPath(request_id): UrlPath<String>,
    body: Bytes,
) -> Response {
    let Some(reply) = take_in_flight(&api, &request_id) else { return invalid_request_id(&request_id) };
    if body.len() > MAX_PAYLOAD_BYTES {
        let message = format!(
            "Response payload size ({} bytes) exceeded maximum allowed payload size ({MAX_PAYLOAD_BYTES} bytes).",
            body.len()
        );
        let _ = reply.send(Reply::Error {
            error_type: "Function.ResponseSizeTooLarge".to_string(),
            error_message: message.clone(),
        });
        return runtime_error(StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLarge", &message);
    }
    let _ = reply.send(Reply::Response(body));
    accepted()
}

/// `POST /2018-06-01/runtime/invocation/{id}/error`.
async fn invocation_error(
    State(api): State<Arc<RuntimeApi>>,
    UrlPath(request_id): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(reply) = take_in_flight(&api, &request_id) else { return invalid_request_id(&request_id) };
    let (error_type, error_message) = diagnostic(&headers, &body);
    let _ = reply.send(Reply::Error { error_type, error_message });
    accepted()
}

/// `POST /2018-06-01/runtime/init/error`.
async fn init_error_report(State(api): State<Arc<RuntimeApi>>, headers: HeaderMap, body: Bytes) -> Response {
    let report = diagnostic(&headers, &body);
    api.init_error.send_replace(Some(report));
    accepted()
}

/// `{errorType, errorMessage}` from an error post. The body's `errorType` wins (the Rust
/// runtime always sends the header as `unhandled`); the `Lambda-Runtime-Function-Error-Type`
/// header stands in for a body without one.
fn diagnostic(headers: &HeaderMap, body: &[u8]) -> (String, String) {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| parsed.as_ref().and_then(|v| v.get(name)).and_then(Value::as_str).map(str::to_string);
    let header_type = headers
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_string);
    let error_type = field("errorType").or(header_type).unwrap_or_else(|| "Unhandled".to_string());
    let error_message = field("errorMessage").unwrap_or_else(|| match &parsed {
        Some(_) => String::new(),
        None => String::from_utf8_lossy(body).into_owned(),
    });
    (error_type, error_message)
}

// ---------------------------------------------------------------------------------------------
// Lambda Invoke API (what SDK clients and `aws lambda invoke` call).
// ---------------------------------------------------------------------------------------------

fn invoke_router(host: Weak<LambdaHost>) -> Router {
    Router::new()
        .route("/2015-03-31/functions/{function}/invocations", post(invoke_api))
        .fallback(|| async {
            aws_error(StatusCode::NOT_FOUND, "UnknownOperationException", "only Invoke is served here")
        })
        // Past the 6 MB limit, so the handler can answer RequestTooLargeException itself.
        .layer(DefaultBodyLimit::max(2 * MAX_PAYLOAD_BYTES))
        .with_state(host)
}

/// An error the way Lambda's REST-JSON API returns it; SDKs read the type from the header.
fn aws_error(status: StatusCode, error_type: &str, message: &str) -> Response {
    let fault = if status.is_server_error() { "Service" } else { "User" };
    let mut response =
        (status, axum::Json(json!({ "Type": fault, "Message": message, "__type": error_type }))).into_response();
    if let Ok(value) = HeaderValue::from_str(error_type) {
        response.headers_mut().insert(HeaderName::from_static("x-amzn-errortype"), value);
    }
    response
}

fn host_error(error: &LambdaHostError) -> Response {
    match error {
        LambdaHostError::UnknownFunction(_) => {
            aws_error(StatusCode::NOT_FOUND, "ResourceNotFoundException", &error.to_string())
        }
        LambdaHostError::PayloadTooLarge { .. } => {
            aws_error(StatusCode::PAYLOAD_TOO_LARGE, "RequestTooLargeException", &error.to_string())
        }
        LambdaHostError::InvalidResponse { .. } => {
            aws_error(StatusCode::BAD_GATEWAY, "InvalidRuntimeException", &error.to_string())
        }
        _ => aws_error(StatusCode::INTERNAL_SERVER_ERROR, "ServiceException", &error.to_string()),
    }
}

/// `POST /2015-03-31/functions/{FunctionName}/invocations`.
async fn invoke_api(
    State(host): State<Weak<LambdaHost>>,
    UrlPath(function): UrlPath<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(host) = host.upgrade() else {
        return aws_error(StatusCode::SERVICE_UNAVAILABLE, "ServiceException", "the Lambda host has shut down");
    };
    let not_found =
        || aws_error(StatusCode::NOT_FOUND, "ResourceNotFoundException", &format!("Function not found: {function}"));
    if query.get("Qualifier").is_some_and(|q| q != VERSION) || !host.has_function(&function) {
        return not_found();
    }
    if body.len() > MAX_PAYLOAD_BYTES {
        return host_error(&LambdaHostError::PayloadTooLarge { size: body.len(), limit: MAX_PAYLOAD_BYTES });
    }
    // No payload invokes with `{}`, as `aws lambda invoke` without `--payload` does.
    let payload: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(payload) => payload,
            Err(e) => {
                return aws_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidRequestContentException",
                    &format!("Could not parse request body into json: {e}"),
                );
            }
        }
    };
    let invocation_type =
        headers.get("x-amz-invocation-type").and_then(|v| v.to_str().ok()).unwrap_or("RequestResponse");
    match invocation_type {
        "RequestResponse" => {}
        "Event" => {
            // Asynchronous: accepted now, run in the background (no retries or destinations).
            let request_id = uuid::Uuid::new_v4().to_string();
            tokio::spawn(async move {
                if let Err(e) = host.invoke(&function, &payload).await {
                    tracing::warn!(function = %function, error = %e, "asynchronous invocation failed");
                }
            });
            return with_headers(StatusCode::ACCEPTED.into_response(), &[("x-amzn-requestid", &request_id)]);
        }
        "DryRun" => return StatusCode::NO_CONTENT.into_response(),
        other => {
            return aws_error(
                StatusCode::BAD_REQUEST,
                "InvalidParameterValueException",
                &format!("unsupported X-Amz-Invocation-Type {other}"),
            );
        }
    }
    match host.invoke_detailed(&function, &payload).await {
        Ok(record) => {
            let common = [
                ("x-amz-executed-version", VERSION),
                ("x-amzn-requestid", record.request_id.as_str()),
                ("x-amzn-trace-id", record.trace_id.as_str()),
            ];
            match record.outcome {
                Invoked::Ok(value) => with_headers(axum::Json(value).into_response(), &common),
                Invoked::FunctionError { error_type, error_message } => {
                    let body = axum::Json(json!({ "errorType": error_type, "errorMessage": error_message }));
                    let response = with_headers(body.into_response(), &common);
                    with_headers(response, &[("x-amz-function-error", "Unhandled")])
                }
            }
        }
        Err(e) => host_error(&e),
    }
}

fn with_headers(mut response: Response, headers: &[(&'static str, &str)]) -> Response {
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(value) {
            response.headers_mut().insert(HeaderName::from_static(name), value);
        }
    }
    response
}

// ---------------------------------------------------------------------------------------------
// Step Functions task dispatcher.
// ---------------------------------------------------------------------------------------------

/// Runs `lambda:invoke` Task states through the Lambda host: the deployed shape of
/// [`selfheal::engine::inprocess::InProcessDispatcher`], with Step Functions' result wrapping.
pub struct LambdaTaskDispatcher {
    host: Arc<LambdaHost>,
}

impl LambdaTaskDispatcher {
    pub fn new(host: Arc<LambdaHost>) -> Self {
        Self { host }
    }

    async fn dispatch(&self, invocation: TaskInvocation) -> Result<TaskOutcome, TaskFailure> {
        let callback = match invocation.resource.as_str() {
            "arn:aws:states:::lambda:invoke" => false,
            "arn:aws:states:::lambda:invoke.waitForTaskToken" => true,
            other => {
                return Err(TaskFailure::new("States.Runtime", format!("resource {other} is not supported locally")));
            }
        };
        let Some(function) = invocation.parameters.get("FunctionName").and_then(Value::as_str) else {
            return Err(TaskFailure::new(
                "States.Runtime",
                format!("{}: Parameters.FunctionName is missing or not a string", invocation.state),
            ));
        };
        // As the in-process dispatcher does: no Payload invokes with null.
        let payload = invocation.parameters.get("Payload").cloned().unwrap_or(Value::Null);
        let record = match self.host.invoke_detailed(function, &payload).await {
            Ok(record) => record,
            Err(e @ LambdaHostError::UnknownFunction(_)) => {
                return Err(TaskFailure::new("Lambda.ResourceNotFoundException", e.to_string()));
            }
            Err(e @ LambdaHostError::PayloadTooLarge { .. }) => {
                return Err(TaskFailure::new("Lambda.RequestTooLargeException", e.to_string()));
            }
            Err(e) => return Err(TaskFailure::new("Lambda.ServiceException", e.to_string())),
        };
        match record.outcome {
            // The function's own result is ignored: the callback's output is the state's.
            Invoked::Ok(_) if callback => Ok(TaskOutcome::AwaitCallback),
            Invoked::Ok(payload) => {
                Ok(TaskOutcome::Completed(integration_output(&record.request_id, &record.trace_id, payload)))
            }
            // Step Functions matches Retry/Catch on the errorType the function reported; a
            // timeout, crash or failed init is an unhandled error it names `Lambda.Unknown`
            // (AWS Step Functions guide, "Handling Lambda errors"), the runtime's type in the cause.
            Invoked::FunctionError { error_type, error_message } => {
                let cause = json!({ "errorType": error_type, "errorMessage": error_message }).to_string();
                let unhandled =
                    matches!(error_type.as_str(), "Sandbox.Timedout" | "Runtime.ExitError" | "Runtime.InitError");
                Err(TaskFailure::new(if unhandled { "Lambda.Unknown".to_string() } else { error_type }, cause))
            }
        }
    }
}

/// The `lambda:invoke` integration's result: the SDK's Invoke response, as Step Functions
/// serialises it.
fn integration_output(request_id: &str, trace_id: &str, payload: Value) -> Value {
    let length = serde_json::to_vec(&payload).map(|b| b.len()).unwrap_or(0);
    let date = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    json!({
        "ExecutedVersion": VERSION,
        "Payload": payload,
        "SdkHttpMetadata": {
            "HttpHeaders": {
                "Connection": "keep-alive",
                "Content-Length": length.to_string(),
                "Content-Type": "application/json",
                "Date": date,
                "X-Amz-Executed-Version": VERSION,
                "x-amzn-Remapped-Content-Length": "0",
                "x-amzn-RequestId": request_id,
                "X-Amzn-Trace-Id": trace_id,
            },
            "HttpStatusCode": 200,
        },
        "SdkResponseMetadata": { "RequestId": request_id },
        "StatusCode": 200,
    })
}

// `TaskDispatcher` is declared with `#[async_trait]`; this is that macro's expansion written
// out (a boxed `Send` future), which keeps the crate free of a macro dependency for one impl.
impl TaskDispatcher for LambdaTaskDispatcher {
    fn invoke<'life0, 'async_trait>(
        &'life0 self,
        invocation: TaskInvocation,
    ) -> Pin<Box<dyn Future<Output = Result<TaskOutcome, TaskFailure>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.dispatch(invocation))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnostic_prefers_the_body_and_falls_back_to_the_header() {
        let mut headers = HeaderMap::new();
        headers.insert("lambda-runtime-function-error-type", HeaderValue::from_static("unhandled"));
        let body = br#"{"errorType":"CoderBuildFailed","errorMessage":"boom"}"#;
        assert_eq!(diagnostic(&headers, body), ("CoderBuildFailed".to_string(), "boom".to_string()));
        assert_eq!(diagnostic(&headers, b"plain text"), ("unhandled".to_string(), "plain text".to_string()));
        assert_eq!(diagnostic(&HeaderMap::new(), b"{}"), ("Unhandled".to_string(), String::new()));
    }

    #[test]
    fn trace_ids_look_like_xray_headers() {
        let id = new_trace_id();
        assert!(id.starts_with("Root=1-") && id.contains(";Parent=") && id.ends_with(";Sampled=0"), "{id}");
    }
}
