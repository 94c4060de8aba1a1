//! The AWS Step Functions API (AWS JSON 1.0 protocol) served from the local engine, so the
//! functions' real SDK clients and the AWS CLI drive it exactly as they drive Step Functions.
//! `POST /` with `X-Amz-Target: AWSStepFunctions.<Operation>`; every call is authorised against
//! the caller's access key before it touches the engine.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use selfheal::domain::TaskToken;
use selfheal::engine::{
    Engine, EngineError, ExecutionRecord, ExecutionStatus, HistoryEvent, MAX_PAYLOAD_BYTES, StateMachine,
};
use selfheal::error::{OrchestratorError, StoreError};

use super::iam::{Authorizer, access_key_of};
use super::{ACCOUNT, REGION};

const CONTENT_TYPE_JSON: &str = "application/x-amz-json-1.0";
const TARGET_PREFIX: &str = "AWSStepFunctions.";
const ERROR_NAMESPACE: &str = "com.amazonaws.swf.service.v2.model";
/// Step Functions' own request size limit (a definition may be up to 1 MB).
const MAX_REQUEST_BYTES: usize = 1024 * 1024;
const DEFAULT_PAGE_SIZE: usize = 100;
const MAX_PAGE_SIZE: usize = 1000;

/// A failed call as the AWS JSON protocol reports it: the SDKs read `code` from `__type` (after
/// the `#`) or from the `x-amzn-errortype` header.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, code, message: message.into() }
    }
    fn validation(message: impl Into<String>) -> Self {
        Self::new("ValidationException", message)
    }
    fn unavailable(message: impl Into<String>) -> Self {
        Self { status: StatusCode::SERVICE_UNAVAILABLE, code: "ServiceUnavailable", message: message.into() }
    }
    fn internal(message: impl Into<String>) -> Self {
        Self { status: StatusCode::INTERNAL_SERVER_ERROR, code: "InternalFailure", message: message.into() }
    }
    fn machine_missing(arn: &str) -> Self {
        Self::new("StateMachineDoesNotExist", format!("State Machine Does Not Exist: '{arn}'"))
    }
    fn execution_missing(arn: &str) -> Self {
        Self::new("ExecutionDoesNotExist", format!("Execution Does Not Exist: '{arn}'"))
    }
    /// `rejected` names the code an `OrchestratorError::Rejected` means for this operation.
    fn from_orchestrator(e: OrchestratorError, rejected: &'static str) -> Self {
        match e {
            OrchestratorError::ExecutionAlreadyExists(name) => {
                Self::new("ExecutionAlreadyExists", format!("Execution Already Exists: '{name}'"))
            }
            OrchestratorError::TaskClosed => {
                Self::new("TaskTimedOut", "Task Timed Out: the task token expired or the task is already closed")
            }
            OrchestratorError::InvalidToken => {
                Self::new("InvalidToken", "Invalid Token: not a task token of this engine")
            }
            OrchestratorError::ExecutionNotFound(name) => Self::execution_missing(&name),
            OrchestratorError::Unavailable(m) => Self::unavailable(m),
            OrchestratorError::Rejected(m) => Self::new(rejected, m),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Store(s @ (StoreError::Unavailable(_) | StoreError::VersionConflict(_))) => {
                Self::unavailable(s.to_string())
            }
            EngineError::UnknownMachine(name) => Self::machine_missing(&SfnApi::state_machine_arn(&name)),
            other => Self::internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(code = self.code, message = %self.message, "Step Functions API call failed");
        }
        let body = json!({ "__type": format!("{ERROR_NAMESPACE}#{}", self.code), "message": self.message });
        (self.status, [(CONTENT_TYPE.as_str(), CONTENT_TYPE_JSON), ("x-amzn-errortype", self.code)], body.to_string())
            .into_response()
    }
}

/// What the engine does not keep about a state machine but the API reports.
#[derive(Debug, Clone)]
struct MachineMeta {
    /// The definition text (None for machines registered on the engine directly).
    definition: Option<String>,
    role_arn: Option<String>,
    created: DateTime<Utc>,
}

/// The Step Functions API over one [`Engine`].
pub struct SfnApi {
    engine: Arc<Engine>,
    authorizer: Arc<dyn Authorizer>,
    region: String,
    account: String,
    machines: Mutex<HashMap<String, MachineMeta>>,
}

// ---- request shapes (field names as in the AWS API reference; unknown fields are ignored) ----

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateStateMachineInput {
    name: String,
    definition: String,
    role_arn: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StateMachineArnInput {
    state_machine_arn: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PageInput {
    max_results: Option<i64>,
    next_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartExecutionInput {
    state_machine_arn: String,
    name: Option<String>,
    input: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExecutionArnInput {
    execution_arn: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListExecutionsInput {
    state_machine_arn: Option<String>,
    status_filter: Option<String>,
    #[serde(flatten)]
    page: PageInput,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HistoryInput {
    execution_arn: String,
    reverse_order: Option<bool>,
    include_execution_data: Option<bool>,
    #[serde(flatten)]
    page: PageInput,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StopExecutionInput {
    execution_arn: String,
    error: Option<String>,
    cause: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TaskInput {
    task_token: String,
    output: Option<String>,
    error: Option<String>,
    cause: Option<String>,
}

impl SfnApi {
    pub fn new(engine: Arc<Engine>, authorizer: Arc<dyn Authorizer>) -> Arc<Self> {
        Arc::new(Self {
            engine,
            authorizer,
            region: REGION.to_string(),
            account: ACCOUNT.to_string(),
            machines: Mutex::new(HashMap::new()),
        })
    }

    pub fn state_machine_arn(name: &str) -> String {
        format!("arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{name}")
    }

    pub fn execution_arn(machine: &str, execution: &str) -> String {
        format!("arn:aws:states:{REGION}:{ACCOUNT}:execution:{machine}:{execution}")
    }

    pub fn router(self: &Arc<Self>) -> Router {
        Router::new().route("/", post(handle)).layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES)).with_state(self.clone())
    }

    /// The one dispatch point: operation name → handler.
    async fn call(&self, operation: &str, caller: Option<&str>, body: &[u8]) -> Result<Value, ApiError> {
        match operation {
            "CreateStateMachine" => self.create_state_machine(caller, parse(body)?),
            "DescribeStateMachine" => self.describe_state_machine(caller, parse(body)?),
            "ListStateMachines" => self.list_state_machines(caller, parse(body)?),
            "StartExecution" => self.start_execution(caller, parse(body)?).await,
            "DescribeExecution" => self.describe_execution(caller, parse(body)?).await,
            "ListExecutions" => self.list_executions(caller, parse(body)?).await,
            "GetExecutionHistory" => self.get_execution_history(caller, parse(body)?).await,
            "StopExecution" => self.stop_execution(caller, parse(body)?).await,
            "SendTaskSuccess" | "SendTaskFailure" | "SendTaskHeartbeat" => {
                self.send_task(operation, caller, parse(body)?).await
            }
            other => Err(ApiError::new("UnknownOperationException", format!("unknown operation {other:?}"))),
        }
    }

    fn authorize(&self, caller: Option<&str>, operation: &str, resource: &str) -> Result<(), ApiError> {
        let action = format!("states:{operation}");
        if self.authorizer.allowed(caller, &action, resource) {
            return Ok(());
        }
        let who = caller.unwrap_or("anonymous");
        Err(ApiError::new(
            "AccessDeniedException",
            format!("User: {who} is not authorized to perform: {action} on resource: {resource}"),
        ))
    }

    // ---- state machines ----

    fn create_state_machine(&self, caller: Option<&str>, req: CreateStateMachineInput) -> Result<Value, ApiError> {
        check_name(&req.name, "state machine")?;
        let arn = Self::state_machine_arn(&req.name);
        self.authorize(caller, "CreateStateMachine", &arn)?;
        if let Some(kind) = req.kind.as_deref().filter(|k| *k != "STANDARD") {
            // Callback tasks, durable history and exactly-once starts are Standard semantics.
            return Err(ApiError::new(
                "StateMachineTypeNotSupported",
                format!("the local engine runs STANDARD state machines only, not {kind}"),
            ));
        }
        let machine =
            StateMachine::parse(&req.definition).map_err(|e| ApiError::new("InvalidDefinition", e.to_string()))?;
        // Held across check and register so two concurrent creates cannot both register.
        let mut metas = self.metas();
        let now = self.engine.clock().now();
        match self.engine.state_machine(&req.name) {
            Some(existing) if *existing != machine => Err(ApiError::new(
                "StateMachineAlreadyExists",
                format!("State Machine Already Exists: '{arn}' (with a different definition)"),
            )),
            Some(_) => {
                // Idempotent; like AWS, a different roleArn does not update the machine.
                let meta = metas.entry(req.name).or_insert_with(|| MachineMeta {
                    definition: None,
                    role_arn: None,
                    created: now,
                });
                meta.definition.get_or_insert(req.definition);
                if meta.role_arn.is_none() {
                    meta.role_arn = req.role_arn;
                }
                Ok(json!({ "stateMachineArn": arn, "creationDate": epoch(meta.created) }))
            }
            None => {
                self.engine.register(&req.name, machine);
                metas.insert(
                    req.name,
                    MachineMeta { definition: Some(req.definition), role_arn: req.role_arn, created: now },
                );
                Ok(json!({ "stateMachineArn": arn, "creationDate": epoch(now) }))
            }
        }
    }

    fn describe_state_machine(&self, caller: Option<&str>, req: StateMachineArnInput) -> Result<Value, ApiError> {
        let name = self.machine_name_of(&req.state_machine_arn)?;
        self.authorize(caller, "DescribeStateMachine", &req.state_machine_arn)?;
        let meta = self.machine_meta(&name).ok_or_else(|| ApiError::machine_missing(&req.state_machine_arn))?;
        Ok(json!({
            "stateMachineArn": Self::state_machine_arn(&name),
            "name": name,
            "status": "ACTIVE",
            "definition": meta.definition,
            "roleArn": meta.role_arn,
            "type": "STANDARD",
            "creationDate": epoch(meta.created),
            "loggingConfiguration": { "level": "OFF", "includeExecutionData": false },
            "tracingConfiguration": { "enabled": false },
        }))
    }

    fn list_state_machines(&self, caller: Option<&str>, req: PageInput) -> Result<Value, ApiError> {
        self.authorize(caller, "ListStateMachines", "*")?;
        let items = self
            .engine
            .machine_names()
            .into_iter()
            .filter_map(|name| {
                let meta = self.machine_meta(&name)?;
                Some(json!({
                    "stateMachineArn": Self::state_machine_arn(&name),
                    "name": name,
                    "type": "STANDARD",
                    "creationDate": epoch(meta.created),
                }))
            })
            .collect();
        let (page, next) = paginate(items, &req)?;
        Ok(json!({ "stateMachines": page, "nextToken": next }))
    }

    // ---- executions ----

    async fn start_execution(&self, caller: Option<&str>, req: StartExecutionInput) -> Result<Value, ApiError> {
        let machine = self.machine_name_of(&req.state_machine_arn)?;
        self.authorize(caller, "StartExecution", &req.state_machine_arn)?;
        if self.engine.state_machine(&machine).is_none() {
            return Err(ApiError::machine_missing(&req.state_machine_arn));
        }
        let name = req.name.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        check_name(&name, "execution")?;
        let input = req.input.unwrap_or_else(|| "{}".to_string());
        if input.len() > MAX_PAYLOAD_BYTES {
            return Err(ApiError::new("InvalidExecutionInput", "the input exceeds 262144 bytes"));
        }
        if let Err(e) = serde_json::from_str::<Value>(&input) {
            return Err(ApiError::new("InvalidExecutionInput", format!("the input is not JSON: {e}")));
        }
        let arn = Self::execution_arn(&machine, &name);
        self.engine.start(&machine, &name, &input).await.map_err(|e| match e {
            OrchestratorError::ExecutionAlreadyExists(_) => {
                ApiError::new("ExecutionAlreadyExists", format!("Execution Already Exists: '{arn}'"))
            }
            // Input was checked above, so what the engine still refuses is the name (it accepts a
            // narrower character set than AWS: ASCII letters, digits, '-' and '_').
            OrchestratorError::Rejected(m) if m.contains("name") => ApiError::new("InvalidName", m),
            other => ApiError::from_orchestrator(other, "InvalidExecutionInput"),
        })?;
        let started =
            self.engine.describe(&name).await?.map(|r| r.started_at).unwrap_or_else(|| self.engine.clock().now());
        Ok(json!({ "executionArn": arn, "startDate": epoch(started) }))
    }

    async fn describe_execution(&self, caller: Option<&str>, req: ExecutionArnInput) -> Result<Value, ApiError> {
        let rec = self.authorized_execution(caller, "DescribeExecution", &req.execution_arn).await?;
        let mut out = execution_summary(&rec);
        let data = [
            ("input", Some(json!(rec.input_text))),
            ("inputDetails", Some(json!({ "included": true }))),
            ("output", rec.output.as_ref().map(|o| json!(o.to_string()))),
            ("outputDetails", rec.output.as_ref().map(|_| json!({ "included": true }))),
            ("error", rec.error.as_ref().filter(|e| !e.is_empty()).map(|e| json!(e))),
            ("cause", rec.cause.as_ref().filter(|c| !c.is_empty()).map(|c| json!(c))),
            ("redriveCount", Some(json!(0))),
        ];
        for (key, value) in data {
            if let Some(v) = value {
                out.insert(key.to_string(), v);
            }
        }
        Ok(Value::Object(out))
    }

    async fn list_executions(&self, caller: Option<&str>, req: ListExecutionsInput) -> Result<Value, ApiError> {
        let arn = req.state_machine_arn.ok_or_else(|| ApiError::validation("stateMachineArn is required"))?;
        let machine = self.machine_name_of(&arn)?;
        self.authorize(caller, "ListExecutions", &arn)?;
        if self.engine.state_machine(&machine).is_none() {
            return Err(ApiError::machine_missing(&arn));
        }
        let wanted = req.status_filter.as_deref().map(parse_status).transpose()?;
        let mut records = Vec::new();
        for (name, _open) in self.engine.list_executions().await? {
            if let Some(rec) = self.engine.describe(&name).await?
                && rec.machine == machine
                && wanted.is_none_or(|s| s == rec.status)
            {
                records.push(rec);
            }
        }
        // AWS lists the most recent first.
        records.sort_by(|a, b| b.started_at.cmp(&a.started_at).then_with(|| a.name.cmp(&b.name)));
        let items = records.iter().map(|r| Value::Object(execution_summary(r))).collect();
        let (page, next) = paginate(items, &req.page)?;
        Ok(json!({ "executions": page, "nextToken": next }))
    }

    async fn get_execution_history(&self, caller: Option<&str>, req: HistoryInput) -> Result<Value, ApiError> {
        let rec = self.authorized_execution(caller, "GetExecutionHistory", &req.execution_arn).await?;
        let events = self.engine.history(&rec.name).await?;
        let mut items = history_events(&events, req.include_execution_data.unwrap_or(true));
        if req.reverse_order.unwrap_or(false) {
            items.reverse();
        }
        let (page, next) = paginate(items, &req.page)?;
        Ok(json!({ "events": page, "nextToken": next }))
    }

    async fn stop_execution(&self, caller: Option<&str>, req: StopExecutionInput) -> Result<Value, ApiError> {
        let rec = self.authorized_execution(caller, "StopExecution", &req.execution_arn).await?;
        // The engine records one cause; an error name given alone is kept as the cause.
        let cause = req.cause.or(req.error).unwrap_or_default();
        self.engine.stop(&rec.name, &cause).await.map_err(|e| ApiError::from_orchestrator(e, "ValidationException"))?;
        let stopped = self.engine.describe(&rec.name).await?.and_then(|r| r.stopped_at);
        Ok(json!({ "stopDate": epoch(stopped.unwrap_or_else(|| self.engine.clock().now())) }))
    }

    // ---- callbacks ----

    async fn send_task(&self, operation: &str, caller: Option<&str>, req: TaskInput) -> Result<Value, ApiError> {
        let token = TaskToken::parse(req.task_token).map_err(|e| ApiError::new("InvalidToken", e.to_string()))?;
        // Authorised against the state machine the token's execution runs on ("*" if unknown,
        // so an unknown token still needs the permission before it learns it is invalid).
        let resource = match self.engine.token_execution(&token).await? {
            Some(execution) => match self.engine.describe(&execution).await? {
                Some(rec) => Self::state_machine_arn(&rec.machine),
                None => "*".to_string(),
            },
            None => "*".to_string(),
        };
        self.authorize(caller, operation, &resource)?;
        let result = match operation {
            "SendTaskSuccess" => {
                let text = req.output.ok_or_else(|| ApiError::validation("output is required"))?;
                if text.len() > MAX_PAYLOAD_BYTES {
                    return Err(ApiError::new("InvalidOutput", "the output exceeds 262144 bytes"));
                }
                let output: Value = serde_json::from_str(&text)
                    .map_err(|e| ApiError::new("InvalidOutput", format!("the output is not JSON: {e}")))?;
                self.engine.send_task_success(&token, &output).await
            }
            "SendTaskFailure" => {
                let error = req.error.unwrap_or_default();
                self.engine.send_task_failure(&token, &error, &req.cause.unwrap_or_default()).await
            }
            _ => self.engine.send_task_heartbeat(&token).await,
        };
        let rejected = if operation == "SendTaskSuccess" { "InvalidOutput" } else { "ValidationException" };
        result.map_err(|e| ApiError::from_orchestrator(e, rejected))?;
        Ok(json!({}))
    }

    // ---- helpers ----

    fn metas(&self) -> MutexGuard<'_, HashMap<String, MachineMeta>> {
        self.machines.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Metadata of a machine the engine knows; machines registered on the engine directly are
    /// dated from the first time the API sees them.
    fn machine_meta(&self, name: &str) -> Option<MachineMeta> {
        self.engine.state_machine(name)?;
        let now = self.engine.clock().now();
        let mut metas = self.metas();
        let meta = metas.entry(name.to_string()).or_insert_with(|| MachineMeta {
            definition: None,
            role_arn: None,
            created: now,
        });
        Some(meta.clone())
    }

    /// The name in `arn:aws:states:<region>:<account>:stateMachine:<name>`.
    fn machine_name_of(&self, arn: &str) -> Result<String, ApiError> {
        match self.arn_parts(arn, "stateMachine")?.as_slice() {
            [name] => Ok(name.to_string()),
            _ => Err(ApiError::new("InvalidArn", format!("Invalid Arn: '{arn}' is not a state machine ARN"))),
        }
    }

    /// (machine, execution) in `arn:aws:states:<region>:<account>:execution:<machine>:<name>`.
    fn execution_of(&self, arn: &str) -> Result<(String, String), ApiError> {
        match self.arn_parts(arn, "execution")?.as_slice() {
            [machine, name] => Ok((machine.to_string(), name.to_string())),
            _ => Err(ApiError::new("InvalidArn", format!("Invalid Arn: '{arn}' is not an execution ARN"))),
        }
    }

    /// The ':'-separated segments after the resource type, if `arn` is a Step Functions ARN of
    /// this region and account (names cannot contain ':', so the split is unambiguous).
    fn arn_parts<'a>(&self, arn: &'a str, resource_type: &str) -> Result<Vec<&'a str>, ApiError> {
        let parts: Vec<&str> = arn.split(':').collect();
        let ok = parts.len() > 6
            && parts[..3] == ["arn", "aws", "states"]
            && parts[3] == self.region
            && parts[4] == self.account
            && parts[5] == resource_type
            && parts[6..].iter().all(|p| !p.is_empty());
        if !ok {
            return Err(ApiError::new(
                "InvalidArn",
                format!("Invalid Arn: '{arn}' is not a {resource_type} ARN in {}/{}", self.region, self.account),
            ));
        }
        Ok(parts[6..].to_vec())
    }

    /// Parse the execution ARN, authorise `operation` on it, and load the execution.
    async fn authorized_execution(
        &self,
        caller: Option<&str>,
        operation: &str,
        arn: &str,
    ) -> Result<ExecutionRecord, ApiError> {
        let (machine, name) = self.execution_of(arn)?;
        self.authorize(caller, operation, arn)?;
        match self.engine.describe(&name).await? {
            Some(rec) if rec.machine == machine => Ok(rec),
            _ => Err(ApiError::execution_missing(arn)),
        }
    }
}

async fn handle(State(api): State<Arc<SfnApi>>, headers: HeaderMap, body: Bytes) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let caller = header(AUTHORIZATION.as_str()).and_then(access_key_of);
    let result = match header("x-amz-target").and_then(|t| t.strip_prefix(TARGET_PREFIX)) {
        Some(operation) => api.call(operation, caller, &body).await,
        None => Err(ApiError::new("UnknownOperationException", "missing or foreign X-Amz-Target header")),
    };
    let request_id = uuid::Uuid::new_v4().to_string();
    let mut response = match result {
        Ok(body) => (StatusCode::OK, [(CONTENT_TYPE.as_str(), CONTENT_TYPE_JSON)], strip_nulls(body).to_string())
            .into_response(),
        Err(e) => e.into_response(),
    };
    if let Ok(v) = request_id.parse() {
        response.headers_mut().insert("x-amzn-requestid", v);
    }
    response
}

/// Decode a request body; an empty body is the empty object (what the CLI sends for no input).
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) { b"{}".as_slice() } else { body };
    serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            ApiError::validation(format!("invalid request: {e}"))
        } else {
            ApiError::new("SerializationException", format!("the request body is not JSON: {e}"))
        }
    })
}

/// AWS's rule for state machine and execution names.
fn check_name(name: &str, what: &str) -> Result<(), ApiError> {
    const FORBIDDEN: &str = "<>{}[]?*\"#%\\^|~`$&,;:/";
    let len = name.chars().count();
    let bad = |c: char| c.is_whitespace() || c.is_control() || FORBIDDEN.contains(c);
    if !(1..=80).contains(&len) || name.chars().any(bad) {
        return Err(ApiError::new("InvalidName", format!("Invalid Name: '{name}' is not a valid {what} name")));
    }
    Ok(())
}

fn status_name(status: ExecutionStatus) -> &'static str {
    match status {
        ExecutionStatus::Running => "RUNNING",
        ExecutionStatus::Succeeded => "SUCCEEDED",
        ExecutionStatus::Failed => "FAILED",
        ExecutionStatus::TimedOut => "TIMED_OUT",
        ExecutionStatus::Aborted => "ABORTED",
    }
}

fn parse_status(s: &str) -> Result<ExecutionStatus, ApiError> {
    [
        ExecutionStatus::Running,
        ExecutionStatus::Succeeded,
        ExecutionStatus::Failed,
        ExecutionStatus::TimedOut,
        ExecutionStatus::Aborted,
    ]
    .into_iter()
    .find(|st| status_name(*st) == s)
    .ok_or_else(|| {
        ApiError::validation(format!("statusFilter {s:?} is not one of RUNNING|SUCCEEDED|FAILED|TIMED_OUT|ABORTED"))
    })
}

/// AWS JSON timestamps: epoch seconds as a number, millisecond precision.
fn epoch(t: DateTime<Utc>) -> Value {
    json!(t.timestamp_millis() as f64 / 1000.0)
}

fn execution_summary(rec: &ExecutionRecord) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("executionArn".into(), json!(SfnApi::execution_arn(&rec.machine, &rec.name)));
    out.insert("stateMachineArn".into(), json!(SfnApi::state_machine_arn(&rec.machine)));
    out.insert("name".into(), json!(rec.name));
    out.insert("status".into(), json!(status_name(rec.status)));
    out.insert("startDate".into(), epoch(rec.started_at));
    if let Some(stopped) = rec.stopped_at {
        out.insert("stopDate".into(), epoch(stopped));
    }
    out
}

/// One page of `items` from the offset in `nextToken`; the token is that offset as text.
fn paginate(mut items: Vec<Value>, req: &PageInput) -> Result<(Vec<Value>, Option<String>), ApiError> {
    let size = match req.max_results {
        None | Some(0) => DEFAULT_PAGE_SIZE,
        Some(n) if (1..=MAX_PAGE_SIZE as i64).contains(&n) => n as usize,
        Some(n) => return Err(ApiError::validation(format!("maxResults {n} is not within 0..=1000"))),
    };
    let start = match req.next_token.as_deref() {
        None => 0,
        Some(t) => t
            .parse::<usize>()
            .ok()
            .filter(|s| *s <= items.len())
            .ok_or_else(|| ApiError::new("InvalidToken", format!("Invalid Token: '{t}' is not a page token")))?,
    };
    let end = (start + size).min(items.len());
    let next = (end < items.len()).then(|| end.to_string());
    Ok((items.drain(start..end).collect(), next))
}

/// `arn:aws:states:::lambda:invoke.waitForTaskToken` → ("lambda", "invoke.waitForTaskToken"),
/// as AWS reports integration resources; anything else keeps its whole ARN.
fn split_resource(resource: &str) -> (String, String) {
    if let Some(rest) = resource.strip_prefix("arn:aws:states:::")
        && let Some((service, action)) = rest.split_once(':')
    {
        return (service.to_string(), action.to_string());
    }
    let service = resource.split(':').nth(2).filter(|s| !s.is_empty()).unwrap_or("unknown");
    (service.to_string(), resource.to_string())
}

/// Our history events in AWS's shape: the engine's `details` become the typed
/// `…EventDetails` object, payloads as JSON text (as AWS sends them).
fn history_events(events: &[HistoryEvent], include_data: bool) -> Vec<Value> {
    // Task results name the resource of the task's last TaskScheduled event.
    let mut scheduled: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut previous = 0;
    events
        .iter()
        .map(|e| {
            let d = &e.details;
            let data = |key: &str| include_data.then(|| d.get(key).map(Value::to_string)).flatten();
            let text = |key: &str| d.get(key).and_then(Value::as_str).map(str::to_string);
            let state = e.state.clone().unwrap_or_default();
            let task = |scheduled: &BTreeMap<String, (String, String)>| {
                scheduled.get(&state).cloned().unwrap_or_else(|| ("unknown".into(), "unknown".into()))
            };
            let details = match e.kind.as_str() {
                "ExecutionStarted" => Some((
                    "executionStartedEventDetails",
                    json!({ "input": data("input"), "inputDetails": { "truncated": false } }),
                )),
                "ExecutionSucceeded" => Some((
                    "executionSucceededEventDetails",
                    json!({ "output": data("output"), "outputDetails": { "truncated": false } }),
                )),
                "ExecutionFailed" => {
                    Some(("executionFailedEventDetails", json!({ "error": text("error"), "cause": text("cause") })))
                }
                "ExecutionTimedOut" => {
                    Some(("executionTimedOutEventDetails", json!({ "error": text("error"), "cause": text("cause") })))
                }
                "ExecutionAborted" => {
                    Some(("executionAbortedEventDetails", json!({ "error": text("error"), "cause": text("cause") })))
                }
                "TaskScheduled" => {
                    let (resource_type, resource) = split_resource(&text("resource").unwrap_or_default());
                    scheduled.insert(state.clone(), (resource_type.clone(), resource.clone()));
                    Some((
                        "taskScheduledEventDetails",
                        json!({ "resourceType": resource_type, "resource": resource, "region": REGION,
                                "parameters": data("parameters") }),
                    ))
                }
                "TaskSucceeded" => {
                    let (resource_type, resource) = task(&scheduled);
                    Some((
                        "taskSucceededEventDetails",
                        json!({ "resourceType": resource_type, "resource": resource, "output": data("output"),
                                "outputDetails": { "truncated": false } }),
                    ))
                }
                "TaskFailed" => {
                    let (resource_type, resource) = task(&scheduled);
                    Some((
                        "taskFailedEventDetails",
                        json!({ "resourceType": resource_type, "resource": resource, "error": text("error"),
                                "cause": text("cause") }),
                    ))
                }
                "TaskTimedOut" => {
                    let (resource_type, resource) = task(&scheduled);
                    Some((
                        "taskTimedOutEventDetails",
                        json!({ "resourceType": resource_type, "resource": resource, "error": "States.Timeout" }),
                    ))
                }
                k if k.ends_with("StateEntered") => Some((
                    "stateEnteredEventDetails",
                    json!({ "name": state, "input": data("input"), "inputDetails": { "truncated": false } }),
                )),
                k if k.ends_with("StateExited") => Some((
                    "stateExitedEventDetails",
                    json!({ "name": state, "output": data("output"), "outputDetails": { "truncated": false } }),
                )),
                _ => None,
            };
            let mut out = Map::new();
            out.insert("id".into(), json!(e.id));
            // The engine writes a linear history, so the previous event is the causal one.
            out.insert("previousEventId".into(), json!(previous));
            out.insert("timestamp".into(), epoch(e.timestamp));
            out.insert("type".into(), json!(e.kind));
            if let Some((key, value)) = details {
                out.insert(key.into(), value);
            }
            previous = e.id;
            Value::Object(out)
        })
        .collect()
}

/// Drop null members: absent optional fields are omitted, as AWS does.
fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            Value::Object(m.into_iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k, strip_nulls(v))).collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(strip_nulls).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_round_trip() {
        let api = SfnApi::new(
            Engine::new(
                Arc::new(selfheal::adapters::sqlite::SqliteTable::in_memory().expect("sqlite")),
                Arc::new(selfheal::ports::SystemClock::real()),
            ),
            Arc::new(super::super::iam::AllowAll),
        );
        let arn = SfnApi::execution_arn("m", "e-1");
        assert_eq!(api.execution_of(&arn), Ok(("m".to_string(), "e-1".to_string())));
        assert_eq!(api.machine_name_of(&SfnApi::state_machine_arn("m")), Ok("m".to_string()));
        assert_eq!(api.machine_name_of(&arn).map_err(|e| e.code), Err("InvalidArn"));
        let other_region = "arn:aws:states:eu-west-1:123456789012:stateMachine:m";
        assert_eq!(api.machine_name_of(other_region).map_err(|e| e.code), Err("InvalidArn"));
    }

    #[test]
    fn names_follow_aws_rules() {
        assert!(check_name("incident-P123_x", "execution").is_ok());
        for bad in ["", "a b", "a:b", "a/b", "a{b", &"x".repeat(81)] {
            assert_eq!(check_name(bad, "execution").map_err(|e| e.code), Err("InvalidName"), "{bad:?}");
        }
    }

    #[test]
    fn integration_resources_split_like_aws() {
        assert_eq!(
            split_resource("arn:aws:states:::lambda:invoke.waitForTaskToken"),
            ("lambda".to_string(), "invoke.waitForTaskToken".to_string())
        );
        let f = "arn:aws:lambda:us-east-1:123456789012:function:f";
        assert_eq!(split_resource(f), ("lambda".to_string(), f.to_string()));
    }

    #[test]
    fn pages_use_offset_tokens() {
        let items: Vec<Value> = (0..5).map(|i| json!(i)).collect();
        let (p, next) = paginate(items.clone(), &PageInput { max_results: Some(2), next_token: None }).expect("page");
        assert_eq!((p.len(), next.as_deref()), (2, Some("2")));
        let (p, next) =
            paginate(items.clone(), &PageInput { max_results: Some(2), next_token: Some("4".into()) }).expect("page");
        assert_eq!((p, next), (vec![json!(4)], None));
        let bad = paginate(items, &PageInput { max_results: None, next_token: Some("x".into()) });
        assert_eq!(bad.map_err(|e| e.code), Err("InvalidToken"));
    }
}
