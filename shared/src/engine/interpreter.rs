//! Executes state machines durably. Every transition is persisted (one conditional write of the
//! execution record) before the next begins, so a killed process resumes each open execution
//! from its last state; Waits and retry back-offs resume with their remaining time.

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock, Weak};

use super::asl::{self, Catcher, Kind, State, StateMachine, TaskState, WaitFor};
use super::path::{self, PathError};
use crate::domain::TaskToken;
use crate::error::{OrchestratorError, StoreError};
use crate::ports::{Clock, ExecutionRef, Orchestrator};
use crate::store::DocTable;

/// Step Functions' payload limit for state input/output and callback output.
pub const MAX_PAYLOAD_BYTES: usize = 262_144;

/// Standard workflows' quota of events in one execution history ("If the execution history
/// reaches this quota, the execution will fail", Step Functions service quotas).
pub const MAX_HISTORY_EVENTS: u32 = 25_000;

/// A failed task: the error name ASL matches on, and a cause.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskFailure {
    pub error: String,
    pub cause: String,
}

impl TaskFailure {
    pub fn new(error: impl Into<String>, cause: impl Into<String>) -> Self {
        Self { error: error.into(), cause: cause.into() }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum TaskOutcome {
    /// The task's result (for `lambda:invoke`, the integration response with `Payload`).
    Completed(Value),
    /// A `.waitForTaskToken` task was started; its result arrives through a callback.
    AwaitCallback,
}

/// What a Task state asks the dispatcher to run.
#[derive(Debug, Clone)]
pub struct TaskInvocation {
    pub execution: String,
    pub state: String,
    pub resource: String,
    pub parameters: Value,
    /// How many times this state was invoked before in this execution (retries and loops).
    pub invocation: u32,
    pub token: Option<TaskToken>,
}

/// Runs Task resources: in-process stage handlers, or mocked responses.
#[async_trait]
pub trait TaskDispatcher: Send + Sync {
    async fn invoke(&self, invocation: TaskInvocation) -> Result<TaskOutcome, TaskFailure>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ExecutionStatus {
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Aborted,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEvent {
    pub id: u32,
    pub timestamp: DateTime<Utc>,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Value::is_null", default)]
    pub details: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
enum Phase {
    /// About to run the state (first attempt or a retry whose back-off has elapsed).
    Enter,
    /// Backing off before retry; `retry_counts` already counts it.
    RetryAt { at: DateTime<Utc> },
    /// A Wait state sleeping until `until`, then moving on with `output`.
    WaitUntil { until: DateTime<Utc>, output: Value },
    /// A callback task waiting for its token.
    AwaitToken { token: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Cursor {
    state: String,
    raw_input: Value,
    entered_at: DateTime<Utc>,
    #[serde(flatten)]
    phase: Phase,
    #[serde(default)]
    retry_counts: Vec<u32>,
}

/// An execution as persisted after every transition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionRecord {
    pub name: String,
    pub execution_id: String,
    pub machine: String,
    pub status: ExecutionStatus,
    pub input_text: String,
    pub started_at: DateTime<Utc>,
    pub stopped_at: Option<DateTime<Utc>>,
    pub deadline: Option<DateTime<Utc>>,
    pub output: Option<Value>,
    pub error: Option<String>,
    pub cause: Option<String>,
    cursor: Option<Cursor>,
    /// States entered, in order. Not stored in the record: it grows with every transition, and
    /// re-writing it on each one made the cost per transition grow with the execution's length.
    /// [`Engine::describe`] and [`Engine::wait_for`] fill it from the history's
    /// `*StateEntered` events.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path: Vec<String>,
    pub transitions: u32,
    pub max_payload_bytes: usize,
    #[serde(default)]
    invocations: BTreeMap<String, u32>,
    /// Number of history events written so far (events live in their own items).
    pub event_count: u32,
    /// Events of the current step (already in their stored form), written with the record.
    #[serde(skip)]
    pending_events: Vec<(u32, Value)>,
}

impl ExecutionRecord {
    pub fn is_open(&self) -> bool {
        self.status == ExecutionStatus::Running
    }
    /// The state the execution is in (or last ran), for operators.
    pub fn current_state(&self) -> Option<&str> {
        self.cursor.as_ref().map(|c| c.state.as_str())
    }

    fn push_event(&mut self, at: DateTime<Utc>, kind: &str, state: Option<&str>, details: Value) {
        self.event_count += 1;
        // Built directly as the stored document: events carry state payloads, and copying them
        // once more through a struct was half of the engine's cost per transition.
        let mut doc = serde_json::Map::with_capacity(5);
        doc.insert("id".into(), self.event_count.into());
        doc.insert("timestamp".into(), Value::String(at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)));
        doc.insert("type".into(), Value::String(kind.to_string()));
        if let Some(state) = state {
            doc.insert("state".into(), Value::String(state.to_string()));
        }
        if !details.is_null() {
            doc.insert("details".into(), details);
        }
        self.pending_events.push((self.event_count, Value::Object(doc)));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum TokenStatus {
    Pending,
    Succeeded,
    Failed,
    TimedOut,
    HeartbeatTimedOut,
    Closed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TokenRecord {
    execution: String,
    state: String,
    status: TokenStatus,
    deadline: Option<DateTime<Utc>>,
    heartbeat_secs: Option<u64>,
    heartbeat_deadline: Option<DateTime<Utc>>,
    output: Option<Value>,
    error: Option<String>,
    cause: Option<String>,
    /// Set until the task's handler has returned: an engine that dies in between re-invokes it
    /// on restart (as Step Functions retries a Lambda invocation that died), so the handler must
    /// be idempotent. Without this, a crash mid-handler leaves the execution waiting for a
    /// callback nobody was told to send.
    #[serde(default)]
    undelivered: Option<PendingInvocation>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PendingInvocation {
    resource: String,
    parameters: Value,
    invocation: u32,
}

const EXEC_PK_PREFIX: &str = "EXEC#";
const INDEX_PK: &str = "EXECINDEX";

fn exec_pk(name: &str) -> String {
    format!("{EXEC_PK_PREFIX}{name}")
}
fn token_pk(token: &str) -> String {
    format!("TOKEN#{}", crate::sha256_hex(token.as_bytes()))
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("unknown state machine {0}")]
    UnknownMachine(String),
    #[error("corrupt execution record {0}: {1}")]
    Corrupt(String, String),
    #[error("no task dispatcher configured")]
    NoDispatcher,
}

impl From<EngineError> for OrchestratorError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Store(s) if s.is_retryable() => OrchestratorError::Unavailable(s.to_string()),
            other => OrchestratorError::Rejected(other.to_string()),
        }
    }
}

/// The interpreter. Cheap to share (`Arc<Engine>`); continuations run on spawned tasks.
pub struct Engine {
    table: Arc<dyn DocTable>,
    clock: Arc<dyn Clock>,
    dispatcher: RwLock<Option<Arc<dyn TaskDispatcher>>>,
    machines: RwLock<HashMap<String, Arc<StateMachine>>>,
    default_machine: RwLock<Option<String>>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    changed: tokio::sync::Notify,
    me: Weak<Engine>,
}

#[allow(clippy::large_enum_variant)] // moved once per transition; boxing would add an allocation
enum Step {
    /// Keep driving, with the record as just saved (None: reload it).
    Continue(Option<(ExecutionRecord, u64)>),
    /// Paused (waiting for a callback) or finished.
    Stop,
}

fn now_of(clock: &dyn Clock) -> DateTime<Utc> {
    clock.now()
}

fn payload_size(v: &Value) -> usize {
    serde_json::to_vec(v).map(|b| b.len()).unwrap_or(usize::MAX)
}

/// Errors that States.ALL does not catch: they end the execution.
fn uncatchable(error: &str) -> bool {
    matches!(error, "States.Runtime" | "States.DataLimitExceeded")
}

fn error_matches(list: &[String], error: &str) -> bool {
    if uncatchable(error) {
        return false;
    }
    let timeout = matches!(error, "States.Timeout" | "States.HeartbeatTimeout");
    list.iter().any(|e| {
        e == error
            || e == "States.ALL"
            || (e == "States.TaskFailed" && !timeout)
            || (e == "States.Timeout" && error == "States.HeartbeatTimeout")
    })
}

impl Engine {
    pub fn new(table: Arc<dyn DocTable>, clock: Arc<dyn Clock>) -> Arc<Self> {
        Arc::new_cyclic(|me| Engine {
            table,
            clock,
            dispatcher: RwLock::new(None),
            machines: RwLock::new(HashMap::new()),
            default_machine: RwLock::new(None),
            locks: Mutex::new(HashMap::new()),
            changed: tokio::sync::Notify::new(),
            me: me.clone(),
        })
    }

    pub fn set_dispatcher(&self, dispatcher: Arc<dyn TaskDispatcher>) {
        if let Ok(mut d) = self.dispatcher.write() {
            *d = Some(dispatcher);
        }
    }

    /// Register a state machine under `name`; the first one registered is the default for
    /// [`Orchestrator::start_execution`].
    pub fn register(&self, name: &str, machine: StateMachine) {
        if let Ok(mut m) = self.machines.write() {
            m.insert(name.to_string(), Arc::new(machine));
        }
        if let Ok(mut d) = self.default_machine.write() {
            d.get_or_insert_with(|| name.to_string());
        }
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Names of the registered state machines, sorted (the Step Functions API lists them).
    pub fn machine_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.machines.read().map(|m| m.keys().cloned().collect()).unwrap_or_default();
        names.sort();
        names
    }

    /// The state machine registered under `name`, if any.
    pub fn state_machine(&self, name: &str) -> Option<Arc<StateMachine>> {
        self.machine(name).ok()
    }

    fn machine(&self, name: &str) -> Result<Arc<StateMachine>, EngineError> {
        self.machines
            .read()
            .ok()
            .and_then(|m| m.get(name).cloned())
            .ok_or_else(|| EngineError::UnknownMachine(name.to_string()))
    }

    fn lock_for(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = match self.locks.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        locks.entry(name.to_string()).or_default().clone()
    }

    fn spawn_drive(&self, name: String) {
        if let Some(me) = self.me.upgrade() {
            tokio::spawn(async move {
                if let Err(e) = me.drive(&name).await {
                    tracing::error!(execution = %name, error = %e, "local engine could not advance the execution");
                }
            });
        }
    }

    async fn load(&self, name: &str) -> Result<Option<(ExecutionRecord, u64)>, EngineError> {
        let now = now_of(self.clock.as_ref()).timestamp();
        let Some(stored) = self.table.get(&exec_pk(name), "META", now).await? else {
            return Ok(None);
        };
        let mut rec: ExecutionRecord =
            serde_json::from_value(stored.doc).map_err(|e| EngineError::Corrupt(name.to_string(), e.to_string()))?;
        // Records written before the path left the record still carry it; drop it so it is not
        // re-written on every transition.
        rec.path.clear();
        Ok(Some((rec, stored.rev)))
    }

    /// Persist; false when someone else (a stop) changed the record meanwhile.
    async fn save(&self, rec: &mut ExecutionRecord, rev: Option<u64>) -> Result<bool, EngineError> {
        self.enforce_history_quota(rec);
        let events = std::mem::take(&mut rec.pending_events);
        let doc = serde_json::to_value(&*rec).map_err(|e| EngineError::Corrupt(rec.name.clone(), e.to_string()))?;
        // History items are append-only and written with the record, so history and state
        // never disagree after a crash.
        let log: Vec<(String, Value)> = events.into_iter().map(|(id, doc)| (format!("EVT#{id:08}"), doc)).collect();
        let now = now_of(self.clock.as_ref()).timestamp();
        let written = self.table.put_if_with_log(&exec_pk(&rec.name), "META", &doc, rev, None, &log, now).await?;
        if written {
            if rec.status != ExecutionStatus::Running {
                self.index(&rec.name, false).await?;
                self.forget_lock(&rec.name);
                // Only `wait_for` listens, and it waits for the end: waking it on every
                // transition cost a record read per transition.
                self.changed.notify_waiters();
            }
        }
        Ok(written)
    }

    /// An execution whose history would pass [`MAX_HISTORY_EVENTS`] fails instead: the step's
    /// events past the quota are dropped and `ExecutionFailed` (`States.Runtime`; the quota page
    /// names no error) becomes the last event, so the history never holds more than the quota.
    fn enforce_history_quota(&self, rec: &mut ExecutionRecord) {
        let last_is_terminal = !rec.is_open();
        let over = rec.event_count > MAX_HISTORY_EVENTS || (rec.event_count == MAX_HISTORY_EVENTS && !last_is_terminal);
        if !over {
            return;
        }
        rec.pending_events.retain(|(id, _)| *id < MAX_HISTORY_EVENTS);
        rec.event_count = MAX_HISTORY_EVENTS - 1;
        self.fail_execution(
            rec,
            "States.Runtime",
            &format!("the execution history reached the quota of {MAX_HISTORY_EVENTS} events"),
        );
    }

    /// The execution's AWS-style event history, in order.
    pub async fn history(&self, name: &str) -> Result<Vec<HistoryEvent>, EngineError> {
        let now = now_of(self.clock.as_ref()).timestamp();
        let rows = self.table.query(&exec_pk(name), "EVT#", "EVT#~", now).await?;
        rows.into_iter()
            .map(|(sk, d)| {
                serde_json::from_value(d.doc).map_err(|e| EngineError::Corrupt(format!("{name}/{sk}"), e.to_string()))
            })
            .collect()
    }

    async fn index(&self, name: &str, open: bool) -> Result<(), EngineError> {
        let now = now_of(self.clock.as_ref()).timestamp();
        let sk = format!("EXEC#{name}");
        let current = self.table.get(INDEX_PK, &sk, now).await?;
        self.table.put_if(INDEX_PK, &sk, &json!({ "open": open }), current.map(|c| c.rev), None, now).await?;
        Ok(())
    }

    /// The execution as it is now, with its `path` read from the history (one pass over it).
    pub async fn describe(&self, name: &str) -> Result<Option<ExecutionRecord>, EngineError> {
        let Some((mut rec, _)) = self.load(name).await? else { return Ok(None) };
        rec.path = self.entered_states(name).await?;
        Ok(Some(rec))
    }

    /// The states entered, in order: the `*StateEntered` events of the history.
    async fn entered_states(&self, name: &str) -> Result<Vec<String>, EngineError> {
        let now = now_of(self.clock.as_ref()).timestamp();
        let rows = self.table.query(&exec_pk(name), "EVT#", "EVT#~", now).await?;
        Ok(rows
            .into_iter()
            .filter(|(_, d)| d.doc["type"].as_str().is_some_and(|t| t.ends_with("StateEntered")))
            .filter_map(|(_, d)| d.doc["state"].as_str().map(str::to_string))
            .collect())
    }

    /// The execution a task token was issued to (None: not a token of this engine), so the
    /// Step Functions API can authorise `SendTask*` against that execution's state machine.
    pub async fn token_execution(&self, token: &TaskToken) -> Result<Option<String>, EngineError> {
        let pk = token_pk(token.expose());
        let now = now_of(self.clock.as_ref()).timestamp();
        let Some(stored) = self.table.get(&pk, "META", now).await? else { return Ok(None) };
        let rec: TokenRecord =
            serde_json::from_value(stored.doc).map_err(|e| EngineError::Corrupt(pk, e.to_string()))?;
        Ok(Some(rec.execution))
    }

    /// Every execution the store knows, open or not (most recent last).
    pub async fn list_executions(&self) -> Result<Vec<(String, bool)>, EngineError> {
        let now = now_of(self.clock.as_ref()).timestamp();
        let rows = self.table.query(INDEX_PK, "EXEC#", "EXEC#~", now).await?;
        Ok(rows
            .into_iter()
            .map(|(sk, d)| (sk.trim_start_matches("EXEC#").to_string(), d.doc["open"].as_bool().unwrap_or(false)))
            .collect())
    }

    /// Start `name` on `machine`. Same name + identical input while running = the same
    /// execution; otherwise an existing name is `ExecutionAlreadyExists` (Step Functions rules).
    pub async fn start(&self, machine: &str, name: &str, input_text: &str) -> Result<ExecutionRef, OrchestratorError> {
        let sm = self.machine(machine)?;
        let input: Value = serde_json::from_str(input_text)
            .map_err(|e| OrchestratorError::Rejected(format!("execution input is not JSON: {e}")))?;
        if input_text.len() > MAX_PAYLOAD_BYTES {
            return Err(OrchestratorError::Rejected("execution input exceeds 262144 bytes".into()));
        }
        if name.is_empty()
            || name.len() > 80
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(OrchestratorError::Rejected(format!("invalid execution name {name:?}")));
        }
        let execution_id = format!("local:{machine}:{name}");
        if let Some((existing, _)) = self.load(name).await? {
            if existing.is_open() && existing.input_text == input_text && existing.machine == machine {
                return Ok(ExecutionRef { execution_id, newly_started: false });
            }
            return Err(OrchestratorError::ExecutionAlreadyExists(name.to_string()));
        }
        let now = now_of(self.clock.as_ref());
        let mut rec = ExecutionRecord {
            name: name.to_string(),
            execution_id: execution_id.clone(),
            machine: machine.to_string(),
            status: ExecutionStatus::Running,
            input_text: input_text.to_string(),
            started_at: now,
            stopped_at: None,
            deadline: sm.timeout_seconds.map(|s| now + Duration::seconds(s as i64)),
            output: None,
            error: None,
            cause: None,
            cursor: Some(Cursor {
                state: sm.start_at.clone(),
                raw_input: input.clone(),
                entered_at: now,
                phase: Phase::Enter,
                retry_counts: Vec::new(),
            }),
            path: Vec::new(),
            transitions: 0,
            max_payload_bytes: input_text.len(),
            invocations: BTreeMap::new(),
            event_count: 0,
            pending_events: Vec::new(),
        };
        rec.push_event(now, "ExecutionStarted", None, json!({ "input": input }));
        if !self.save(&mut rec, None).await? {
            // Lost a race with an identical start.
            return match self.load(name).await? {
                Some((existing, _)) if existing.is_open() && existing.input_text == input_text => {
                    Ok(ExecutionRef { execution_id, newly_started: false })
                }
                _ => Err(OrchestratorError::ExecutionAlreadyExists(name.to_string())),
            };
        }
        self.index(name, true).await?;
        self.spawn_drive(name.to_string());
        Ok(ExecutionRef { execution_id, newly_started: true })
    }

    /// Resume every open execution (after a restart).
    pub async fn resume_open_executions(&self) -> Result<usize, EngineError> {
        let mut n = 0;
        for (name, open) in self.list_executions().await? {
            if open {
                n += 1;
                self.spawn_drive(name);
            }
        }
        Ok(n)
    }

    /// Wait until the execution is no longer running (or `timeout` of real time passes) and
    /// return its record as it then is.
    pub async fn wait_for(&self, name: &str, timeout: std::time::Duration) -> Result<ExecutionRecord, EngineError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            // `load`, not `describe`: this wakes on every transition, and reading the path (the
            // whole history) each time would make waiting quadratic in the execution's length.
            let (mut rec, _) = self
                .load(name)
                .await?
                .ok_or_else(|| EngineError::Corrupt(name.to_string(), "no such execution".into()))?;
            let now = tokio::time::Instant::now();
            if !rec.is_open() || now >= deadline {
                rec.path = self.entered_states(name).await?;
                return Ok(rec);
            }
            let nap = (deadline - now).min(std::time::Duration::from_millis(200));
            let _ = tokio::time::timeout(nap, notified).await;
        }
    }

    // -----------------------------------------------------------------------------------------
    // Callbacks
    // -----------------------------------------------------------------------------------------

    async fn complete_token(
        &self,
        token: &str,
        status: TokenStatus,
        output: Option<Value>,
        error: Option<String>,
        cause: Option<String>,
    ) -> Result<String, OrchestratorError> {
        let pk = token_pk(token);
        let now = now_of(self.clock.as_ref()).timestamp();
        for _ in 0..50 {
            let Some(stored) = self.table.get(&pk, "META", now).await.map_err(EngineError::from)? else {
                return Err(OrchestratorError::InvalidToken);
            };
            let mut rec: TokenRecord = serde_json::from_value(stored.doc)
                .map_err(|e| OrchestratorError::Rejected(format!("corrupt token record: {e}")))?;
            if rec.status != TokenStatus::Pending {
                return Err(OrchestratorError::TaskClosed);
            }
            rec.status = status;
            rec.output = output.clone();
            rec.error = error.clone();
            rec.cause = cause.clone();
            let doc = serde_json::to_value(&rec).map_err(|e| OrchestratorError::Rejected(e.to_string()))?;
            if self.table.put_if(&pk, "META", &doc, Some(stored.rev), None, now).await.map_err(EngineError::from)? {
                return Ok(rec.execution);
            }
        }
        Err(OrchestratorError::Unavailable("token record contention".into()))
    }

    pub async fn send_task_success(&self, token: &TaskToken, output: &Value) -> Result<(), OrchestratorError> {
        if payload_size(output) > MAX_PAYLOAD_BYTES {
            return Err(OrchestratorError::Rejected("InvalidOutput: output exceeds 262144 bytes".into()));
        }
        let execution =
            self.complete_token(token.expose(), TokenStatus::Succeeded, Some(output.clone()), None, None).await?;
        self.spawn_drive(execution);
        Ok(())
    }

    pub async fn send_task_failure(
        &self,
        token: &TaskToken,
        error: &str,
        cause: &str,
    ) -> Result<(), OrchestratorError> {
        let execution = self
            .complete_token(token.expose(), TokenStatus::Failed, None, Some(error.to_string()), Some(cause.to_string()))
            .await?;
        self.spawn_drive(execution);
        Ok(())
    }

    /// Push back a callback task's heartbeat deadline.
    pub async fn send_task_heartbeat(&self, token: &TaskToken) -> Result<(), OrchestratorError> {
        let pk = token_pk(token.expose());
        let now = now_of(self.clock.as_ref());
        let stored = self
            .table
            .get(&pk, "META", now.timestamp())
            .await
            .map_err(EngineError::from)?
            .ok_or(OrchestratorError::InvalidToken)?;
        let mut rec: TokenRecord =
            serde_json::from_value(stored.doc).map_err(|e| OrchestratorError::Rejected(e.to_string()))?;
        if rec.status != TokenStatus::Pending {
            return Err(OrchestratorError::TaskClosed);
        }
        if let Some(h) = rec.heartbeat_secs {
            rec.heartbeat_deadline = Some(now + Duration::seconds(h as i64));
        }
        let doc = serde_json::to_value(&rec).map_err(|e| OrchestratorError::Rejected(e.to_string()))?;
        self.table
            .put_if(&pk, "META", &doc, Some(stored.rev), None, now.timestamp())
            .await
            .map_err(EngineError::from)?;
        Ok(())
    }

    pub async fn stop(&self, name: &str, cause: &str) -> Result<(), OrchestratorError> {
        for _ in 0..50 {
            let Some((mut rec, rev)) = self.load(name).await? else {
                return Err(OrchestratorError::ExecutionNotFound(name.to_string()));
            };
            if !rec.is_open() {
                return Ok(());
            }
            let now = now_of(self.clock.as_ref());
            if let Some(Cursor { phase: Phase::AwaitToken { token }, .. }) = &rec.cursor {
                let _ = self.complete_token(token, TokenStatus::Closed, None, None, None).await;
            }
            rec.status = ExecutionStatus::Aborted;
            rec.stopped_at = Some(now);
            rec.cause = Some(cause.to_string());
            rec.push_event(now, "ExecutionAborted", None, json!({ "cause": cause }));
            if self.save(&mut rec, Some(rev)).await? {
                return Ok(());
            }
        }
        Err(OrchestratorError::Unavailable("execution record contention".into()))
    }

    // -----------------------------------------------------------------------------------------
    // Driving
    // -----------------------------------------------------------------------------------------

    /// Advance the execution as far as it can go without waiting for a callback.
    pub async fn drive(&self, name: &str) -> Result<(), EngineError> {
        let lock = self.lock_for(name);
        let _guard = lock.lock().await;
        let mut current = None;
        loop {
            let (rec, rev) = match current.take() {
                Some(saved) => saved,
                None => match self.load(name).await? {
                    Some(loaded) => loaded,
                    None => return Ok(()),
                },
            };
            if !rec.is_open() {
                self.forget_lock(name);
                return Ok(());
            }
            match self.step(rec, rev).await? {
                Step::Continue(next) => current = next,
                Step::Stop => return Ok(()),
            }
        }
    }

    /// Closed executions need no lock any more; keep the map from growing forever.
    fn forget_lock(&self, name: &str) {
        if let Ok(mut locks) = self.locks.lock() {
            locks.remove(name);
        }
    }

    /// Save the record and keep driving with it (or reload it if someone else changed it).
    async fn commit(&self, mut rec: ExecutionRecord, rev: u64) -> Result<Step, EngineError> {
        if !self.save(&mut rec, Some(rev)).await? {
            return Ok(Step::Continue(None));
        }
        if rec.is_open() { Ok(Step::Continue(Some((rec, rev + 1)))) } else { Ok(Step::Stop) }
    }

    fn context(&self, rec: &ExecutionRecord, cursor: &Cursor, token: Option<&str>) -> Value {
        let input: Value = serde_json::from_str(&rec.input_text).unwrap_or(Value::Null);
        let retry: u32 = cursor.retry_counts.iter().sum();
        let mut ctx = json!({
            "Execution": {"Id": rec.execution_id, "Name": rec.name, "StartTime": rec.started_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true), "Input": input},
            "StateMachine": {"Id": format!("local:{}", rec.machine), "Name": rec.machine},
            "State": {"Name": cursor.state, "EnteredTime": cursor.entered_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true), "RetryCount": retry},
        });
        if let Some(t) = token {
            ctx["Task"] = json!({ "Token": t });
        }
        ctx
    }

    /// One step of the execution: run or resume the current state, persist, report.
    async fn step(&self, mut rec: ExecutionRecord, rev: u64) -> Result<Step, EngineError> {
        let machine = self.machine(&rec.machine)?;
        let now = now_of(self.clock.as_ref());
        if let Some(deadline) = rec.deadline
            && now >= deadline
        {
            self.finish(
                &mut rec,
                ExecutionStatus::TimedOut,
                None,
                Some("States.Timeout".into()),
                Some("execution timed out".into()),
            );
            return self.commit(rec, rev).await;
        }
        let Some(cursor) = rec.cursor.clone() else {
            return Err(EngineError::Corrupt(rec.name.clone(), "running execution without a cursor".into()));
        };
        let Some(state) = machine.states.get(&cursor.state) else {
            return Err(EngineError::Corrupt(rec.name.clone(), format!("unknown state {}", cursor.state)));
        };
        match cursor.phase.clone() {
            Phase::RetryAt { at } => {
                self.sleep_until(at).await;
                let mut next = cursor;
                next.phase = Phase::Enter;
                rec.cursor = Some(next);
                self.commit(rec, rev).await
            }
            Phase::WaitUntil { until, output } => {
                self.sleep_until(until).await;
                let now = now_of(self.clock.as_ref());
                rec.push_event(now, "WaitStateExited", Some(&state.name), Value::Null);
                self.transition(&mut rec, &machine, state, output, now);
                self.commit(rec, rev).await
            }
            Phase::AwaitToken { token } => self.resume_callback(rec, rev, &machine, state, &cursor, &token).await,
            Phase::Enter => self.enter(rec, rev, &machine, state, &cursor).await,
        }
    }

    async fn sleep_until(&self, at: DateTime<Utc>) {
        let now = now_of(self.clock.as_ref());
        if at > now {
            let d = (at - now).to_std().unwrap_or_default();
            self.clock.sleep(d).await;
        }
    }

    fn finish(
        &self,
        rec: &mut ExecutionRecord,
        status: ExecutionStatus,
        output: Option<Value>,
        error: Option<String>,
        cause: Option<String>,
    ) {
        let now = now_of(self.clock.as_ref());
        let kind = match status {
            ExecutionStatus::Succeeded => "ExecutionSucceeded",
            ExecutionStatus::Failed => "ExecutionFailed",
            ExecutionStatus::TimedOut => "ExecutionTimedOut",
            ExecutionStatus::Aborted => "ExecutionAborted",
            ExecutionStatus::Running => "ExecutionRunning",
        };
        let details = match (&output, &error) {
            (Some(o), _) => json!({ "output": o }),
            (None, Some(e)) => json!({ "error": e, "cause": cause }),
            _ => Value::Null,
        };
        rec.push_event(now, kind, None, details);
        rec.status = status;
        rec.stopped_at = Some(now);
        rec.output = output;
        rec.error = error;
        rec.cause = cause;
    }

    fn fail_execution(&self, rec: &mut ExecutionRecord, error: &str, cause: &str) {
        self.finish(rec, ExecutionStatus::Failed, None, Some(error.to_string()), Some(cause.to_string()));
    }

    /// Leave `state` with `output`: go to Next or end the execution.
    fn transition(
        &self,
        rec: &mut ExecutionRecord,
        machine: &StateMachine,
        state: &State,
        output: Value,
        now: DateTime<Utc>,
    ) {
        let size = payload_size(&output);
        rec.max_payload_bytes = rec.max_payload_bytes.max(size);
        if size > MAX_PAYLOAD_BYTES {
            self.fail_execution(
                rec,
                "States.DataLimitExceeded",
                &format!("the output of {} exceeds 262144 bytes", state.name),
            );
            return;
        }
        let next = match &state.kind {
            Kind::Succeed => None,
            _ => state.common.next.clone(),
        };
        match next {
            Some(next) if machine.states.contains_key(&next) => {
                rec.cursor = Some(Cursor {
                    state: next,
                    raw_input: output,
                    entered_at: now,
                    phase: Phase::Enter,
                    retry_counts: Vec::new(),
                });
            }
            Some(next) => self.fail_execution(rec, "States.Runtime", &format!("transition to unknown state {next}")),
            None => self.finish(rec, ExecutionStatus::Succeeded, Some(output), None, None),
        }
    }

    async fn enter(
        &self,
        mut rec: ExecutionRecord,
        rev: u64,
        machine: &StateMachine,
        state: &State,
        cursor: &Cursor,
    ) -> Result<Step, EngineError> {
        let now = now_of(self.clock.as_ref());
        let first_attempt = cursor.retry_counts.iter().all(|c| *c == 0);
        if first_attempt {
            rec.transitions += 1;
            rec.push_event(
                now,
                &format!("{}StateEntered", state.type_name()),
                Some(&state.name),
                json!({ "input": cursor.raw_input }),
            );
        }
        let context = self.context(&rec, cursor, None);
        let input = match path::select(state.common.input_path.as_ref(), &cursor.raw_input, &context) {
            Ok(v) => v,
            Err(e) => {
                self.fail_execution(&mut rec, "States.Runtime", &format!("{}: InputPath: {e}", state.name));
                return self.commit(rec, rev).await;
            }
        };
        let exit = |rec: &mut ExecutionRecord, out: Value| -> Result<Value, PathError> {
            let out = path::select(state.common.output_path.as_ref(), &out, &context)?;
            rec.push_event(
                now,
                &format!("{}StateExited", state.type_name()),
                Some(&state.name),
                json!({ "output": out }),
            );
            Ok(out)
        };
        match &state.kind {
            Kind::Pass { result, parameters, result_path } => {
                let produced = match (result, parameters) {
                    (Some(r), _) => Ok(r.clone()),
                    (None, Some(p)) => path::render_template(p, &input, &context),
                    (None, None) => Ok(input.clone()),
                };
                let out = produced
                    .and_then(|r| path::merge_result(result_path.as_ref(), &cursor.raw_input, r))
                    .and_then(|o| exit(&mut rec, o));
                match out {
                    Ok(out) => self.transition(&mut rec, machine, state, out, now),
                    Err(e) => self.fail_execution(&mut rec, "States.Runtime", &format!("{}: {e}", state.name)),
                }
            }
            Kind::Succeed => match exit(&mut rec, input) {
                Ok(out) => self.finish(&mut rec, ExecutionStatus::Succeeded, Some(out), None, None),
                Err(e) => self.fail_execution(&mut rec, "States.Runtime", &format!("{}: {e}", state.name)),
            },
            Kind::Fail { error, cause } => {
                let error = error.clone().unwrap_or_else(|| "States.Fail".into());
                let cause = cause.clone().unwrap_or_default();
                self.fail_execution(&mut rec, &error, &cause);
            }
            Kind::Choice { choices, default } => {
                let mut chosen = None;
                for (rule, next) in choices {
                    match asl::evaluate(rule, &input, &context) {
                        Ok(true) => {
                            chosen = Some(next.clone());
                            break;
                        }
                        Ok(false) => {}
                        Err(e) => {
                            self.fail_execution(&mut rec, "States.Runtime", &format!("{}: {e}", state.name));
                            return self.commit(rec, rev).await;
                        }
                    }
                }
                match chosen.or_else(|| default.clone()) {
                    Some(next) => match exit(&mut rec, input) {
                        Ok(out) => {
                            rec.cursor = Some(Cursor {
                                state: next,
                                raw_input: out,
                                entered_at: now,
                                phase: Phase::Enter,
                                retry_counts: Vec::new(),
                            });
                        }
                        Err(e) => self.fail_execution(&mut rec, "States.Runtime", &format!("{}: {e}", state.name)),
                    },
                    None => self.fail_execution(
                        &mut rec,
                        "States.NoChoiceMatched",
                        &format!("no choice rule of {} matched", state.name),
                    ),
                }
            }
            Kind::Wait(wait) => {
                let until = match wait {
                    WaitFor::Seconds(s) => Ok(now + Duration::seconds(*s as i64)),
                    WaitFor::Timestamp(t) => Ok(*t),
                    WaitFor::SecondsPath(p) => path::read_path(p, &input, &context).and_then(|v| {
                        v.as_u64()
                            .map(|s| now + Duration::seconds(s.min(31_536_000) as i64))
                            .ok_or_else(|| PathError(format!("{p} is not a non-negative integer")))
                    }),
                    WaitFor::TimestampPath(p) => path::read_path(p, &input, &context).and_then(|v| {
                        v.as_str()
                            .and_then(asl::parse_timestamp)
                            .ok_or_else(|| PathError(format!("{p} is not a timestamp")))
                    }),
                };
                match until {
                    Ok(until) => {
                        let out = match path::select(state.common.output_path.as_ref(), &input, &context) {
                            Ok(o) => o,
                            Err(e) => {
                                self.fail_execution(&mut rec, "States.Runtime", &format!("{}: {e}", state.name));
                                return self.commit(rec, rev).await;
                            }
                        };
                        let mut next = cursor.clone();
                        next.phase = Phase::WaitUntil { until, output: out };
                        rec.cursor = Some(next);
                    }
                    Err(e) => self.fail_execution(&mut rec, "States.Runtime", &format!("{}: {e}", state.name)),
                }
            }
            Kind::Task(task) => {
                return self.run_task(rec, rev, machine, state, task, cursor, input, context).await;
            }
        }
        self.commit(rec, rev).await
    }

    fn task_timeout(task: &TaskState, input: &Value, context: &Value) -> Result<(Option<u64>, Option<u64>), PathError> {
        let read = |p: &str| -> Result<u64, PathError> {
            path::read_path(p, input, context)?
                .as_u64()
                .filter(|v| *v > 0)
                .ok_or_else(|| PathError(format!("{p} must be a positive integer")))
        };
        let timeout = match (&task.timeout_seconds, &task.timeout_seconds_path) {
            (Some(t), _) => Some(*t),
            (None, Some(p)) => Some(read(p)?),
            (None, None) => None,
        };
        let heartbeat = match (&task.heartbeat_seconds, &task.heartbeat_seconds_path) {
            (Some(h), _) => Some(*h),
            (None, Some(p)) => Some(read(p)?),
            (None, None) => None,
        };
        Ok((timeout, heartbeat))
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_task(
        &self,
        mut rec: ExecutionRecord,
        rev: u64,
        machine: &StateMachine,
        state: &State,
        task: &TaskState,
        cursor: &Cursor,
        input: Value,
        context: Value,
    ) -> Result<Step, EngineError> {
        let now = now_of(self.clock.as_ref());
        let dispatcher = self.dispatcher.read().ok().and_then(|d| d.clone()).ok_or(EngineError::NoDispatcher)?;
        let (timeout, heartbeat) = match Self::task_timeout(task, &input, &context) {
            Ok(t) => t,
            Err(e) => {
                self.fail_execution(&mut rec, "States.Runtime", &format!("{}: {e}", state.name));
                return self.commit(rec, rev).await;
            }
        };
        let token =
            task.is_callback().then(|| format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple()));
        let context = match &token {
            Some(t) => self.context(&rec, cursor, Some(t)),
            None => context,
        };
        let parameters = match &task.parameters {
            Some(p) => path::render_template(p, &input, &context),
            None => Ok(input.clone()),
        };
        let parameters = match parameters {
            Ok(p) => p,
            Err(e) => {
                let failure = TaskFailure::new("States.ParameterPathFailure", format!("{}: {e}", state.name));
                return self.task_failed(rec, rev, machine, state, task, cursor, failure).await;
            }
        };
        let invocation = rec.invocations.get(&state.name).copied().unwrap_or(0);
        rec.invocations.insert(state.name.clone(), invocation + 1);
        rec.push_event(
            now,
            "TaskScheduled",
            Some(&state.name),
            json!({ "resource": task.resource, "parameters": parameters }),
        );

        let task_token = match &token {
            Some(t) => {
                let deadline = timeout.map(|s| now + Duration::seconds(s as i64));
                let record = TokenRecord {
                    execution: rec.name.clone(),
                    state: state.name.clone(),
                    status: TokenStatus::Pending,
                    deadline,
                    heartbeat_secs: heartbeat,
                    heartbeat_deadline: heartbeat.map(|h| now + Duration::seconds(h as i64)),
                    output: None,
                    error: None,
                    cause: None,
                    undelivered: Some(PendingInvocation {
                        resource: task.resource.clone(),
                        parameters: parameters.clone(),
                        invocation,
                    }),
                };
                let doc =
                    serde_json::to_value(&record).map_err(|e| EngineError::Corrupt(rec.name.clone(), e.to_string()))?;
                self.table.put_if(&token_pk(t), "META", &doc, None, None, now.timestamp()).await?;
                // Persist that we wait on this token *before* dispatching, so a callback that
                // arrives while the handler is still running is never lost.
                let mut waiting = cursor.clone();
                waiting.phase = Phase::AwaitToken { token: t.clone() };
                rec.cursor = Some(waiting);
                if !self.save(&mut rec, Some(rev)).await? {
                    return Ok(Step::Continue(None));
                }
                Some(TaskToken::parse(t.clone()).map_err(|e| EngineError::Corrupt(rec.name.clone(), e.to_string()))?)
            }
            None => None,
        };

        let invocation = TaskInvocation {
            execution: rec.name.clone(),
            state: state.name.clone(),
            resource: task.resource.clone(),
            parameters,
            invocation,
            token: task_token.clone(),
        };
        let outcome = match (timeout, task.is_callback()) {
            // Callback tasks: the timeout covers the wait for the callback, not the invocation.
            (Some(secs), false) => {
                match tokio::time::timeout(std::time::Duration::from_secs(secs), dispatcher.invoke(invocation)).await {
                    Ok(r) => r,
                    Err(_) => Err(TaskFailure::new(
                        "States.Timeout",
                        format!("{} did not finish within {secs} s", state.name),
                    )),
                }
            }
            _ => dispatcher.invoke(invocation).await,
        };

        match (task_token, outcome) {
            (None, Ok(TaskOutcome::Completed(result))) => {
                self.task_succeeded(rec, rev, machine, state, task, cursor, result).await
            }
            (None, Ok(TaskOutcome::AwaitCallback)) => {
                let failure = TaskFailure::new(
                    "States.Runtime",
                    format!("{} is not a callback task but the dispatcher awaited one", state.name),
                );
                self.task_failed(rec, rev, machine, state, task, cursor, failure).await
            }
            (None, Err(f)) => self.task_failed(rec, rev, machine, state, task, cursor, f).await,
            (Some(t), result) => self.callback_dispatched(&rec.name, machine, state, t.expose(), result).await,
        }
    }

    /// A callback task's handler returned: record that, then follow the token.
    async fn callback_dispatched(
        &self,
        execution: &str,
        machine: &StateMachine,
        state: &State,
        token: &str,
        result: Result<TaskOutcome, TaskFailure>,
    ) -> Result<Step, EngineError> {
        self.mark_delivered(token).await?;
        // Reload: the record says AwaitToken (persisted before dispatch).
        let Some((rec, rev)) = self.load(execution).await? else {
            return Ok(Step::Stop);
        };
        if !rec.is_open() {
            return Ok(Step::Stop);
        }
        match result {
            // A mocked callback task completes at once (Step Functions Local semantics).
            Ok(TaskOutcome::Completed(v)) => {
                let _ = self.complete_token(token, TokenStatus::Succeeded, Some(v), None, None).await;
            }
            Ok(TaskOutcome::AwaitCallback) => {}
            Err(f) => {
                let _ = self.complete_token(token, TokenStatus::Failed, None, Some(f.error), Some(f.cause)).await;
            }
        }
        let cursor = rec.cursor.clone().ok_or_else(|| EngineError::Corrupt(rec.name.clone(), "no cursor".into()))?;
        self.resume_callback(rec, rev, machine, state, &cursor, token).await
    }

    /// Clear a token's undelivered invocation (its handler returned).
    async fn mark_delivered(&self, token: &str) -> Result<(), EngineError> {
        let pk = token_pk(token);
        let now = now_of(self.clock.as_ref()).timestamp();
        for _ in 0..50 {
            let Some(stored) = self.table.get(&pk, "META", now).await? else { return Ok(()) };
            let mut rec: TokenRecord =
                serde_json::from_value(stored.doc).map_err(|e| EngineError::Corrupt(pk.clone(), e.to_string()))?;
            if rec.undelivered.is_none() {
                return Ok(());
            }
            rec.undelivered = None;
            let doc = serde_json::to_value(&rec).map_err(|e| EngineError::Corrupt(pk.clone(), e.to_string()))?;
            if self.table.put_if(&pk, "META", &doc, Some(stored.rev), None, now).await? {
                return Ok(());
            }
        }
        Err(EngineError::Corrupt(pk, "token record contention".into()))
    }

    fn arm_token_timer(&self, token: String, deadline: DateTime<Utc>) {
        let Some(me) = self.me.upgrade() else { return };
        tokio::spawn(async move {
            me.sleep_until(deadline).await;
            me.expire_token(&token).await;
        });
    }

    async fn expire_token(&self, token: &str) {
        let pk = token_pk(token);
        let now = now_of(self.clock.as_ref());
        let Ok(Some(stored)) = self.table.get(&pk, "META", now.timestamp()).await else {
            return;
        };
        let Ok(rec) = serde_json::from_value::<TokenRecord>(stored.doc) else {
            return;
        };
        if rec.status != TokenStatus::Pending {
            return;
        }
        let status = if rec.heartbeat_deadline.is_some_and(|h| h <= now) {
            TokenStatus::HeartbeatTimedOut
        } else if rec.deadline.is_some_and(|d| d <= now) {
            TokenStatus::TimedOut
        } else {
            // A heartbeat pushed the deadline: sleep again.
            if let Some(next) = [rec.deadline, rec.heartbeat_deadline].into_iter().flatten().min() {
                self.arm_token_timer(token.to_string(), next);
            }
            return;
        };
        if self.complete_token(token, status, None, None, None).await.is_ok() {
            self.spawn_drive(rec.execution);
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn resume_callback(
        &self,
        rec: ExecutionRecord,
        rev: u64,
        machine: &StateMachine,
        state: &State,
        cursor: &Cursor,
        token: &str,
    ) -> Result<Step, EngineError> {
        let Kind::Task(task) = &state.kind else {
            return Err(EngineError::Corrupt(rec.name.clone(), "awaiting a token outside a Task state".into()));
        };
        let now = now_of(self.clock.as_ref());
        let Some(stored) = self.table.get(&token_pk(token), "META", now.timestamp()).await? else {
            let failure = TaskFailure::new("States.Runtime", "the task token record is missing");
            return self.task_failed(rec, rev, machine, state, task, cursor, failure).await;
        };
        let tok: TokenRecord =
            serde_json::from_value(stored.doc).map_err(|e| EngineError::Corrupt(rec.name.clone(), e.to_string()))?;
        match tok.status {
            TokenStatus::Pending if tok.undelivered.is_some() => {
                // The engine died while the handler ran: invoke it again, same token.
                let Some(pending) = tok.undelivered else { return Ok(Step::Stop) };
                let dispatcher =
                    self.dispatcher.read().ok().and_then(|d| d.clone()).ok_or(EngineError::NoDispatcher)?;
                let parsed = TaskToken::parse(token.to_string())
                    .map_err(|e| EngineError::Corrupt(rec.name.clone(), e.to_string()))?;
                let invocation = TaskInvocation {
                    execution: rec.name.clone(),
                    state: state.name.clone(),
                    resource: pending.resource,
                    parameters: pending.parameters,
                    invocation: pending.invocation,
                    token: Some(parsed),
                };
                let result = dispatcher.invoke(invocation).await;
                Box::pin(self.callback_dispatched(&rec.name, machine, state, token, result)).await
            }
            TokenStatus::Pending => {
                // (Re-)arm the timeout; after a restart this restores the remaining time.
                if let Some(next) = [tok.deadline, tok.heartbeat_deadline].into_iter().flatten().min() {
                    self.arm_token_timer(token.to_string(), next);
                }
                Ok(Step::Stop)
            }
            TokenStatus::Succeeded => {
                let output = tok.output.unwrap_or(Value::Null);
                self.task_succeeded(rec, rev, machine, state, task, cursor, output).await
            }
            TokenStatus::Failed => {
                let failure = TaskFailure::new(
                    tok.error.unwrap_or_else(|| "States.TaskFailed".into()),
                    tok.cause.unwrap_or_default(),
                );
                self.task_failed(rec, rev, machine, state, task, cursor, failure).await
            }
            TokenStatus::TimedOut => {
                let mut rec = rec;
                rec.push_event(now, "TaskTimedOut", Some(&state.name), Value::Null);
                let failure =
                    TaskFailure::new("States.Timeout", format!("{} timed out waiting for its callback", state.name));
                self.task_failed(rec, rev, machine, state, task, cursor, failure).await
            }
            TokenStatus::HeartbeatTimedOut => {
                let failure =
                    TaskFailure::new("States.HeartbeatTimeout", format!("{} missed its heartbeat", state.name));
                self.task_failed(rec, rev, machine, state, task, cursor, failure).await
            }
            TokenStatus::Closed => Ok(Step::Stop),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn task_succeeded(
        &self,
        mut rec: ExecutionRecord,
        rev: u64,
        machine: &StateMachine,
        state: &State,
        task: &TaskState,
        cursor: &Cursor,
        result: Value,
    ) -> Result<Step, EngineError> {
        let now = now_of(self.clock.as_ref());
        rec.push_event(now, "TaskSucceeded", Some(&state.name), json!({ "output": result }));
        let context = self.context(&rec, cursor, None);
        let selected = match &task.result_selector {
            Some(sel) => path::render_template(sel, &result, &context),
            None => Ok(result),
        };
        let selected = match selected {
            Ok(s) => s,
            Err(e) => {
                let failure =
                    TaskFailure::new("States.ParameterPathFailure", format!("{}: ResultSelector: {e}", state.name));
                return self.task_failed(rec, rev, machine, state, task, cursor, failure).await;
            }
        };
        let merged = match path::merge_result(task.result_path.as_ref(), &cursor.raw_input, selected) {
            Ok(m) => m,
            Err(e) => {
                let failure = TaskFailure::new("States.ResultPathMatchFailure", format!("{}: {e}", state.name));
                return self.task_failed(rec, rev, machine, state, task, cursor, failure).await;
            }
        };
        match path::select(state.common.output_path.as_ref(), &merged, &context) {
            Ok(out) => {
                rec.push_event(now, "TaskStateExited", Some(&state.name), json!({ "output": out }));
                self.transition(&mut rec, machine, state, out, now);
            }
            Err(e) => self.fail_execution(&mut rec, "States.Runtime", &format!("{}: OutputPath: {e}", state.name)),
        }
        self.commit(rec, rev).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn task_failed(
        &self,
        mut rec: ExecutionRecord,
        rev: u64,
        _machine: &StateMachine,
        state: &State,
        task: &TaskState,
        cursor: &Cursor,
        failure: TaskFailure,
    ) -> Result<Step, EngineError> {
        let now = now_of(self.clock.as_ref());
        rec.push_event(now, "TaskFailed", Some(&state.name), json!({ "error": failure.error, "cause": failure.cause }));
        // Retry: the first retrier that matches decides; its own counter bounds it.
        if let Some(idx) = task.retry.iter().position(|r| error_matches(&r.error_equals, &failure.error)) {
            let retrier = &task.retry[idx];
            let mut counts = cursor.retry_counts.clone();
            counts.resize(task.retry.len(), 0);
            if counts[idx] < retrier.max_attempts {
                let mut delay = retrier.interval_seconds * retrier.backoff_rate.powi(counts[idx] as i32);
                if let Some(max) = retrier.max_delay_seconds {
                    delay = delay.min(max);
                }
                if retrier.full_jitter {
                    delay *= rand::random::<f64>();
                }
                counts[idx] += 1;
                let at = now + Duration::milliseconds((delay * 1000.0) as i64);
                rec.cursor = Some(Cursor { phase: Phase::RetryAt { at }, retry_counts: counts, ..cursor.clone() });
                return self.commit(rec, rev).await;
            }
        }
        if let Some(catcher) = task.catch.iter().find(|c| error_matches(&c.error_equals, &failure.error)) {
            self.caught(&mut rec, state, cursor, catcher, &failure, now);
        } else {
            self.fail_execution(&mut rec, &failure.error, &failure.cause);
        }
        self.commit(rec, rev).await
    }

    fn caught(
        &self,
        rec: &mut ExecutionRecord,
        state: &State,
        cursor: &Cursor,
        catcher: &Catcher,
        failure: &TaskFailure,
        now: DateTime<Utc>,
    ) {
        let error_output = json!({ "Error": failure.error, "Cause": failure.cause });
        match path::merge_result(catcher.result_path.as_ref(), &cursor.raw_input, error_output) {
            Ok(out) => {
                rec.push_event(
                    now,
                    "TaskStateExited",
                    Some(&state.name),
                    json!({ "output": out, "caught": failure.error }),
                );
                rec.cursor = Some(Cursor {
                    state: catcher.next.clone(),
                    raw_input: out,
                    entered_at: now,
                    phase: Phase::Enter,
                    retry_counts: Vec::new(),
                });
            }
            Err(e) => self.fail_execution(rec, "States.Runtime", &format!("{}: Catch ResultPath: {e}", state.name)),
        }
    }
}

/// The local engine as the [`Orchestrator`] port: what intake and the Slack callback call.
pub struct LocalOrchestrator {
    engine: Weak<Engine>,
    machine: String,
}

impl LocalOrchestrator {
    pub fn new(engine: &Arc<Engine>, machine: &str) -> Self {
        Self { engine: Arc::downgrade(engine), machine: machine.to_string() }
    }
    fn engine(&self) -> Result<Arc<Engine>, OrchestratorError> {
        self.engine.upgrade().ok_or_else(|| OrchestratorError::Unavailable("the local engine has shut down".into()))
    }
}

#[async_trait]
impl Orchestrator for LocalOrchestrator {
    async fn start_execution(&self, name: &str, input: &str) -> Result<ExecutionRef, OrchestratorError> {
        self.engine()?.start(&self.machine, name, input).await
    }
    async fn send_task_success(&self, token: &TaskToken, output: &Value) -> Result<(), OrchestratorError> {
        self.engine()?.send_task_success(token, output).await
    }
    async fn send_task_failure(&self, token: &TaskToken, error: &str, cause: &str) -> Result<(), OrchestratorError> {
        self.engine()?.send_task_failure(token, error, cause).await
    }
    async fn stop_execution(&self, execution_id: &str, cause: &str) -> Result<(), OrchestratorError> {
        let name = execution_id.rsplit(':').next().unwrap_or(execution_id);
        self.engine()?.stop(name, cause).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_matching_follows_aws_rules() {
        let all = vec!["States.ALL".to_string()];
        let tf = vec!["States.TaskFailed".to_string()];
        assert!(error_matches(&all, "Transient"));
        assert!(error_matches(&all, "States.Timeout"));
        assert!(!error_matches(&all, "States.Runtime"));
        assert!(!error_matches(&all, "States.DataLimitExceeded"));
        assert!(error_matches(&tf, "Transient"));
        assert!(!error_matches(&tf, "States.Timeout"));
        assert!(!error_matches(&tf, "States.HeartbeatTimeout"));
        assert!(error_matches(&["States.Timeout".to_string()], "States.HeartbeatTimeout"));
        assert!(error_matches(&["Transient".to_string()], "Transient"));
        assert!(!error_matches(&["Transient".to_string()], "InvalidInput"));
    }
}
