//! Executes state machines durably. Every transition is persisted (one conditional write of the
//! execution record) before the next begins, so a killed process resumes each open execution
//! from its last state; Waits and retry back-offs resume with their remaining time.

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock, Weak};

use super::asl::{self, JsonataFields, Kind, State, StateMachine, TaskState, WaitFor};
use super::jsonata::{self, QUERY_EVALUATION_ERROR, Template};
use super::path::{self, PathError};
use crate::domain::TaskToken;
use crate::error::{OrchestratorError, StoreError};
use crate::ports::{Clock, ExecutionRef, Orchestrator};
use crate::store::{DocTable, JsonText};

mod branches;
mod callbacks;
mod orchestrator;
mod retry;
mod states;
mod store;
mod task;

pub use orchestrator::LocalOrchestrator;

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
    /// A Map or Parallel state waiting for its iterations or branches (child executions named
    /// `{name}/{run}/{index}`); `released` of `total` have been let run.
    AwaitBranches { run: String, total: usize, released: usize, limit: usize },
    /// A Map iteration created but not yet let run (MaxConcurrency).
    Queued,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Cursor {
    state: String,
    raw_input: Value,
    #[serde(serialize_with = "rfc3339")]
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
    pending_events: Vec<(u32, JsonText)>,
    /// Set on a Map iteration or Parallel branch: the execution that runs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parent: Option<ParentLink>,
    /// Workflow variables (`Assign`). An iteration or branch starts with its parent's and its
    /// own assignments stay inside it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    variables: BTreeMap<String, Value>,
    /// Whether the store holds this record's [`RecordHead`] (false for a new record, and for
    /// one written before the head was kept apart): the next save writes it.
    #[serde(skip)]
    head_stored: bool,
    /// The last event timestamp and its text: a step's events share one instant.
    #[serde(skip)]
    last_stamp: Option<(DateTime<Utc>, String)>,
}

/// A timestamp as chrono writes it (RFC 3339, as many fraction digits as needed), without
/// going through `Display` one character at a time: this runs on every transition.
fn rfc3339<S: serde::Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

/// What of an execution record never changes after its start, stored once in its own item so
/// that a transition does not re-write the execution input (up to 256 KiB) with every step.
#[derive(Serialize)]
struct RecordHead<'a> {
    name: &'a str,
    execution_id: &'a str,
    machine: &'a str,
    input_text: &'a str,
    started_at: DateTime<Utc>,
    deadline: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent: Option<&'a ParentLink>,
}

/// What of an execution record a transition changes: the item written on every step.
#[derive(Serialize)]
struct RecordState<'a> {
    status: ExecutionStatus,
    stopped_at: Option<DateTime<Utc>>,
    output: &'a Option<Value>,
    error: &'a Option<String>,
    cause: &'a Option<String>,
    cursor: &'a Option<Cursor>,
    transitions: u32,
    max_payload_bytes: usize,
    #[serde(skip_serializing_if = "is_empty_map")]
    invocations: &'a BTreeMap<String, u32>,
    event_count: u32,
    #[serde(skip_serializing_if = "is_empty_map")]
    variables: &'a BTreeMap<String, Value>,
}

fn is_empty_map<V>(m: &&BTreeMap<String, V>) -> bool {
    m.is_empty()
}

impl ExecutionRecord {
    fn head(&self) -> RecordHead<'_> {
        RecordHead {
            name: &self.name,
            execution_id: &self.execution_id,
            machine: &self.machine,
            input_text: &self.input_text,
            started_at: self.started_at,
            deadline: self.deadline,
            parent: self.parent.as_ref(),
        }
    }

    fn state(&self) -> RecordState<'_> {
        RecordState {
            status: self.status,
            stopped_at: self.stopped_at,
            output: &self.output,
            error: &self.error,
            cause: &self.cause,
            cursor: &self.cursor,
            transitions: self.transitions,
            max_payload_bytes: self.max_payload_bytes,
            invocations: &self.invocations,
            event_count: self.event_count,
            variables: &self.variables,
        }
    }
}

/// How a Map iteration or Parallel branch finds its states, its context and its parent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ParentLink {
    /// The record (an execution, or itself an iteration or branch) waiting for this one.
    name: String,
    run: String,
    index: usize,
    /// From the root state machine down to this branch: (Map or Parallel state, branch index).
    scope: Vec<(String, usize)>,
    /// The Context object's `Execution`, `StateMachine` (the root execution's) and, for a Map
    /// iteration, `Map.Item`.
    context: Value,
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
        self.push_event_with(at, kind, state, (!details.is_null()).then_some(&details));
    }

    /// A `…StateEntered` / `…StateExited` event: `{field: payload}` as its details, written
    /// from the borrowed payload (these two events carry the state payload on every transition).
    fn push_payload_event(&mut self, at: DateTime<Utc>, kind: &str, state: &str, field: &'static str, payload: &Value) {
        self.push_event_with(at, kind, Some(state), Some(&OneField(field, payload)));
    }

    /// Events go straight to their stored text (an event is never read back by the step that
    /// writes it).
    fn push_event_with<D: Serialize + ?Sized>(
        &mut self,
        at: DateTime<Utc>,
        kind: &str,
        state: Option<&str>,
        details: Option<&D>,
    ) {
        #[derive(Serialize)]
        struct EventDoc<'a, D: Serialize + ?Sized> {
            id: u32,
            timestamp: &'a str,
            #[serde(rename = "type")]
            kind: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            state: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            details: Option<&'a D>,
        }
        self.event_count += 1;
        let timestamp = match &self.last_stamp {
            Some((t, text)) if *t == at => text.clone(),
            _ => {
                let text = at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
                self.last_stamp = Some((at, text.clone()));
                text
            }
        };
        let doc = EventDoc { id: self.event_count, timestamp: &timestamp, kind, state, details };
        // Serialising JSON values and strings cannot fail; should it, the event still records
        // what happened, without its details.
        let text = JsonText::of(&doc).or_else(|_| {
            JsonText::of(&EventDoc::<Value> { id: doc.id, timestamp: doc.timestamp, kind, state, details: None })
        });
        if let Ok(text) = text {
            self.pending_events.push((self.event_count, text));
        }
    }
}

/// A one-field JSON object whose value is borrowed.
struct OneField<'a>(&'static str, &'a Value);

impl Serialize for OneField<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(self.0, self.1)?;
        map.end()
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

/// A JSONata state's output and variables: `Output` (or `default`) and `Assign`, evaluated with
/// the same `$states` and with the variables as they were before the state.
#[allow(clippy::too_many_arguments)]
fn jsonata_exit(
    rec: &mut ExecutionRecord,
    output: Option<&Template>,
    assign: &[(String, Template)],
    input: &Value,
    context: &Value,
    result: Option<&Value>,
    error_output: Option<&Value>,
    default: Value,
) -> Result<Value, String> {
    let scope = jsonata::Scope { input, context, result, error_output, variables: &rec.variables };
    let out = match output {
        Some(t) => t.eval(&scope)?,
        None => default,
    };
    let assigned = jsonata::assign(assign, &scope)?;
    rec.variables.extend(assigned);
    Ok(out)
}

fn jsonata_eval(rec: &ExecutionRecord, template: &Template, input: &Value, context: &Value) -> Result<Value, String> {
    template.eval(&jsonata::Scope { input, context, result: None, error_output: None, variables: &rec.variables })
}

/// The variables a JSONPath state's paths see: those there were when it was entered, copied
/// only for a state that may read one.
fn jsonpath_variables(rec: &ExecutionRecord, state: &State) -> BTreeMap<String, Value> {
    if state.reads_variables { rec.variables.clone() } else { BTreeMap::new() }
}

/// A JSONPath `Assign` (state, chosen Choice rule or catcher): a payload template over
/// `dollar` (what `$` means there), evaluated with the variables from before the state. Its
/// top-level fields are the new values, which the caller assigns once the state has succeeded.
fn render_assign(
    state: &State,
    template: Option<&Value>,
    dollar: &Value,
    env: path::Env<'_>,
) -> Result<serde_json::Map<String, Value>, TaskFailure> {
    let Some(template) = template else { return Ok(serde_json::Map::new()) };
    match path::render_template(template, dollar, env) {
        Ok(Value::Object(assigned)) => Ok(assigned),
        Ok(_) => Ok(serde_json::Map::new()), // an Assign is an object (checked at load)
        Err(e) => Err(template_failure(&state.name, "Assign", &e)),
    }
}

/// Assign at once: for states whose failure after this point fails the execution anyway.
fn assign_jsonpath(
    rec: &mut ExecutionRecord,
    state: &State,
    template: Option<&Value>,
    dollar: &Value,
    env: path::Env<'_>,
) -> Result<(), TaskFailure> {
    rec.variables.extend(render_assign(state, template, dollar, env)?);
    Ok(())
}

/// The error a failing payload template (Parameters, ItemSelector, ResultSelector) raises.
fn template_failure(state: &str, what: &str, e: &PathError) -> TaskFailure {
    let name = if e.is_intrinsic() { "States.IntrinsicFailure" } else { "States.ParameterPathFailure" };
    TaskFailure::new(name, format!("{state}: {what}: {e}"))
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

/// The payload's size as UTF-8 JSON text, counted without building the text (this runs on every
/// transition).
fn payload_size(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, v) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
    }
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

    /// The states an execution record runs: the root machine's, or a branch's inside it.
    fn machine_of(&self, rec: &ExecutionRecord) -> Result<Arc<StateMachine>, EngineError> {
        let mut machine = self.machine(&rec.machine)?;
        let Some(link) = &rec.parent else { return Ok(machine) };
        for (state, branch) in &link.scope {
            let inner = match machine.states.get(state).map(|s| &s.kind) {
                Some(Kind::Map(m)) => Some(m.processor.clone()),
                Some(Kind::Parallel(p)) => p.branches.get(*branch).cloned(),
                _ => None,
            };
            machine = inner.ok_or_else(|| {
                EngineError::Corrupt(rec.name.clone(), format!("no branch {branch} of state {state}"))
            })?;
        }
        Ok(machine)
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
            parent: None,
            variables: BTreeMap::new(),
            head_stored: false,
            last_stamp: None,
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
        for (name, open, _) in self.indexed_executions().await? {
            if open {
                n += 1;
                self.spawn_drive(name);
            }
        }
        Ok(n)
    }

    /// Wait until the execution is no longer running (or `timeout` of real time passes) and
    /// return its record as it then is, with its `path`.
    pub async fn wait_for(&self, name: &str, timeout: std::time::Duration) -> Result<ExecutionRecord, EngineError> {
        let mut rec = self.wait_until_done(name, timeout).await?;
        rec.path = self.entered_states(name).await?;
        Ok(rec)
    }

    /// [`Engine::wait_for`] without the `path`, which is read from the whole history: for
    /// callers that want the outcome only.
    pub async fn wait_until_done(
        &self,
        name: &str,
        timeout: std::time::Duration,
    ) -> Result<ExecutionRecord, EngineError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            // `load`, not `describe`: this wakes on every transition, and reading the path (the
            // whole history) each time would make waiting quadratic in the execution's length.
            let (rec, _) = self
                .load(name)
                .await?
                .ok_or_else(|| EngineError::Corrupt(name.to_string(), "no such execution".into()))?;
            let now = tokio::time::Instant::now();
            if !rec.is_open() || now >= deadline {
                return Ok(rec);
            }
            let nap = (deadline - now).min(std::time::Duration::from_millis(200));
            let _ = tokio::time::timeout(nap, notified).await;
        }
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
            Box::pin(self.abort_branches(&rec)).await;
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
}
