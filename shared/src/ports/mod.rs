//! Ports: one small trait per external capability. Stages depend on these, never on a concrete
//! SDK, so the same stage code runs in Lambda (DynamoDB, Step Functions, real SaaS APIs) and in
//! the local engine (SQLite, the in-process interpreter, simulators).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;

use crate::domain::*;
use crate::error::{ClientError, OrchestratorError, StoreError};

// ---------------------------------------------------------------------------------------------
// Store
// ---------------------------------------------------------------------------------------------

/// Result of a create-once write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    New,
    AlreadyExists,
}

/// Result of recording a webhook delivery id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dedupe {
    /// First time we see this id: process it.
    First,
    /// Seen before with the same payload and processed: acknowledge, do nothing.
    Duplicate,
    /// Seen before with the same payload and still being processed (or the process handling it
    /// died): the sender must retry later, never be told it is done.
    InProgress,
    /// Seen before with a *different* payload: refuse and log (a replay or a bug upstream).
    Conflict,
}

/// The hypothesis hand-off item holds the AwaitHypothesis task token and the investigator note;
/// whichever arrives second resumes the execution. Each call reports what the other side left.
#[derive(Debug, Clone, PartialEq)]
pub enum HandOff {
    /// We stored our half first; the other side will resume.
    Stored,
    /// The token was already there: the note-writer must resume the execution with this token.
    TokenWaiting(TaskToken),
    /// The note was already there: the token-writer must resume with this note.
    NoteWaiting(InvestigatorNote),
    /// Both halves were already present and the execution was resumed before: nothing to do.
    AlreadyResumed,
}

/// Result of deciding an approval.
#[derive(Debug, Clone, PartialEq)]
pub enum DecideOutcome {
    /// We moved it from pending to the decision; the caller resumes the execution (once).
    Decided(Approval),
    /// Someone decided first (double click, second approver): report what they decided.
    AlreadyDecided(Approval),
    /// Past its expiry; nothing to resume.
    Expired(Approval),
    NotFound,
}

/// One entry of a service's incident history, for re-fire detection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceEvent {
    pub service: ServiceId,
    pub at: DateTime<Utc>,
    pub incident_id: IncidentId,
    /// `triggered`, `reopened`, `resolved_by_selfheal`, …
    pub kind: String,
}

/// A runbook's catalog action as stored for execution (parameter schema and script template).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogAction {
    pub runbook_id: RunbookId,
    pub name: ActionName,
    pub description: String,
    /// JSON Schema subset (object with typed, bounded properties).
    pub parameters: Value,
    pub script_template: String,
    pub risk: RiskLevel,
    /// Number of times the action's fix did not hold; lowers its future match score.
    #[serde(default)]
    pub ineffective_count: u32,
    #[serde(default)]
    pub effective_count: u32,
}

/// Where a runbook's text lives in the knowledge base: retrieval searches these documents only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunbookDocument {
    pub runbook_id: RunbookId,
    /// The document the latest push created.
    pub content_id: String,
    pub pushed_at: DateTime<Utc>,
    /// Documents earlier pushes created (the knowledge base keeps them; search no longer
    /// looks at them), newest last, at most [`RunbookDocument::KEEP_SUPERSEDED`].
    #[serde(default)]
    pub superseded: Vec<String>,
}

impl RunbookDocument {
    pub const KEEP_SUPERSEDED: usize = 20;
}

/// Durable state for every transition the loop makes. Every method that changes state is a
/// conditional write; the contract suite (`tests/`) runs against every implementation.
#[async_trait]
pub trait IncidentStore: Send + Sync {
    /// Create the incident once. A second create with the same id changes nothing.
    async fn create_incident(&self, incident: &Incident) -> Result<Created, StoreError>;
    async fn get_incident(&self, id: &IncidentId) -> Result<Option<Incident>, StoreError>;
    /// Save with optimistic concurrency: succeeds only if the stored version equals
    /// `incident.version`; returns the incident with its new version.
    async fn save_incident(&self, incident: &Incident) -> Result<Incident, StoreError>;

    /// Record a webhook delivery id (with a hash of its payload) for `ttl_secs`.
    async fn record_webhook(
        &self,
        id: &WebhookId,
        payload_hash: &str,
        now: DateTime<Utc>,
        ttl_secs: i64,
    ) -> Result<Dedupe, StoreError>;

    /// Keep a recorded delivery id for `keep_secs` from `now` (after processing succeeded), or
    /// release it at once with `keep_secs <= 0` (processing failed: the retry must be processed).
    async fn settle_webhook(&self, id: &WebhookId, now: DateTime<Utc>, keep_secs: i64) -> Result<(), StoreError>;

    /// Append an audit event; never overwrites.
    async fn append_audit(&self, incident: &IncidentId, event: &AuditEvent) -> Result<(), StoreError>;
    /// The audit trail in order.
    async fn audit_trail(&self, incident: &IncidentId) -> Result<Vec<AuditEvent>, StoreError>;

    /// AwaitHypothesis side of the hand-off.
    async fn offer_wait_token(
        &self,
        incident: &IncidentId,
        token: &TaskToken,
        expires_at: DateTime<Utc>,
    ) -> Result<HandOff, StoreError>;
    /// Intake side of the hand-off (a note from an accepted investigator).
    async fn offer_note(&self, incident: &IncidentId, note: &InvestigatorNote) -> Result<HandOff, StoreError>;
    /// The hypothesis wait token if the execution is still waiting on it (not yet resumed).
    async fn waiting_token(&self, incident: &IncidentId) -> Result<Option<TaskToken>, StoreError>;
    /// The stored note, if any (for the parse stage).
    async fn investigator_note(&self, incident: &IncidentId) -> Result<Option<InvestigatorNote>, StoreError>;

    async fn create_approval(&self, approval: &Approval) -> Result<Created, StoreError>;
    async fn get_approval(&self, id: &ApprovalId) -> Result<Option<Approval>, StoreError>;
    /// Move pending → `decision` exactly once, if not expired at `now`.
    async fn decide_approval(
        &self,
        id: &ApprovalId,
        decision: ApprovalStatus,
        by: &UserId,
        now: DateTime<Utc>,
    ) -> Result<DecideOutcome, StoreError>;
    /// Remember where the approval message lives (after posting it).
    async fn set_approval_message(&self, id: &ApprovalId, channel: &str, ts: &str) -> Result<(), StoreError>;
    /// Point an approval at the task token of a re-invoked RequestApproval task (the old one is
    /// dead); returns the approval as it now is.
    async fn rebind_approval_token(&self, id: &ApprovalId, token: &TaskToken) -> Result<Approval, StoreError>;

    async fn record_service_event(&self, event: &ServiceEvent) -> Result<(), StoreError>;
    async fn service_events_since(
        &self,
        service: &ServiceId,
        since: DateTime<Utc>,
    ) -> Result<Vec<ServiceEvent>, StoreError>;

    async fn put_catalog_action(&self, action: &CatalogAction) -> Result<(), StoreError>;
    async fn get_catalog_action(
        &self,
        runbook: &RunbookId,
        action: &ActionName,
    ) -> Result<Option<CatalogAction>, StoreError>;
    async fn catalog_actions(&self, runbook: &RunbookId) -> Result<Vec<CatalogAction>, StoreError>;
    /// Record the document a push of `runbook_id` created, keeping the earlier ones as superseded.
    async fn put_runbook_document(
        &self,
        runbook_id: &RunbookId,
        content_id: &str,
        now: DateTime<Utc>,
    ) -> Result<RunbookDocument, StoreError>;
    /// Every runbook's current document, ordered by runbook id.
    async fn runbook_documents(&self) -> Result<Vec<RunbookDocument>, StoreError>;
    /// Count an outcome of a catalog action (effective or not), atomically.
    async fn record_action_outcome(
        &self,
        runbook: &RunbookId,
        action: &ActionName,
        effectiveness: Effectiveness,
    ) -> Result<(), StoreError>;

    async fn set_kill_switch(&self, on: bool, by: &str, now: DateTime<Utc>) -> Result<(), StoreError>;
    async fn kill_switch(&self) -> Result<bool, StoreError>;

    /// Store (replace) a service's settings. Refuses settings that fail
    /// [`ServiceSettings::validate`], so nothing invalid reaches the stages.
    async fn put_service_settings(&self, settings: &ServiceSettings) -> Result<(), StoreError>;
    /// The settings stored under exactly this service id or name.
    async fn get_service_settings(&self, service: &str) -> Result<Option<ServiceSettings>, StoreError>;
    /// Every service's settings, ordered by service.
    async fn list_service_settings(&self) -> Result<Vec<ServiceSettings>, StoreError>;

    /// Remember that PagerDuty reported `incident` resolved before we knew it (its
    /// `incident.resolved` arrived before its `incident.triggered`), for `keep_secs` from `at`.
    async fn remember_resolved(
        &self,
        incident: &IncidentId,
        at: DateTime<Utc>,
        keep_secs: i64,
    ) -> Result<(), StoreError>;
    /// When PagerDuty reported `incident` resolved before it was known, if it did (and that
    /// is still remembered).
    async fn resolved_early(&self, incident: &IncidentId) -> Result<Option<DateTime<Utc>>, StoreError>;

    /// Take one unit of the service's autonomous-action budget for the hour containing `now`.
    /// Returns false (and takes nothing) when `limit` actions already ran that hour.
    async fn take_autonomy_budget(
        &self,
        service: &ServiceId,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<bool, StoreError>;
}

// ---------------------------------------------------------------------------------------------
// Orchestrator
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionRef {
    /// ARN on AWS, `local:<name>` in the local engine.
    pub execution_id: String,
    /// False when the call found an identical execution already running (idempotent retry).
    pub newly_started: bool,
}

/// Starts executions and resumes callback tasks: Step Functions on AWS, the local engine here.
#[async_trait]
pub trait Orchestrator: Send + Sync {
    /// Start (or idempotently find) the execution `name`. `input` must be byte-identical on
    /// retries for the idempotency to hold.
    async fn start_execution(&self, name: &str, input: &str) -> Result<ExecutionRef, OrchestratorError>;
    async fn send_task_success(&self, token: &TaskToken, output: &Value) -> Result<(), OrchestratorError>;
    async fn send_task_failure(&self, token: &TaskToken, error: &str, cause: &str) -> Result<(), OrchestratorError>;
    async fn stop_execution(&self, execution_id: &str, cause: &str) -> Result<(), OrchestratorError>;
}

// ---------------------------------------------------------------------------------------------
// Clock
// ---------------------------------------------------------------------------------------------

/// Time source. Waits go through it so the 24 h stability window can be accelerated.
#[async_trait]
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
    /// Sleep for `duration` of *clock* time.
    async fn sleep(&self, duration: std::time::Duration);
}

/// Wall-clock time, optionally accelerated: `speedup` 3600 makes an hour pass in a second.
#[derive(Debug, Clone)]
pub struct SystemClock {
    speedup: f64,
    origin_real: DateTime<Utc>,
}

impl SystemClock {
    pub fn real() -> Self {
        Self { speedup: 1.0, origin_real: Utc::now() }
    }
    pub fn accelerated(speedup: f64) -> Self {
        Self::accelerated_since(Utc::now(), speedup)
    }
    /// Accelerated time anchored at `origin`: processes that share the origin (stored with the
    /// executions) agree on the time, so a restarted process resumes Waits where they were.
    pub fn accelerated_since(origin: DateTime<Utc>, speedup: f64) -> Self {
        let speedup = if speedup.is_finite() && speedup >= 1.0 { speedup } else { 1.0 };
        Self { speedup, origin_real: origin }
    }
}

#[async_trait]
impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        let real = Utc::now();
        if self.speedup == 1.0 {
            return real;
        }
        let elapsed = (real - self.origin_real).num_microseconds().unwrap_or(i64::MAX / 2) as f64;
        self.origin_real + chrono::Duration::microseconds((elapsed * self.speedup) as i64)
    }
    async fn sleep(&self, duration: std::time::Duration) {
        tokio::time::sleep(duration.div_f64(self.speedup)).await;
    }
}

/// Simulated time for tests and mock runs: `sleep` advances the clock instantly, so a 24 h Wait
/// takes no real time. Only for runs where nothing external needs real time to pass.
#[derive(Debug)]
pub struct VirtualClock {
    now: std::sync::Mutex<DateTime<Utc>>,
}

impl VirtualClock {
    pub fn starting_at(at: DateTime<Utc>) -> Self {
        Self { now: std::sync::Mutex::new(at) }
    }
}

#[async_trait]
impl Clock for VirtualClock {
    fn now(&self) -> DateTime<Utc> {
        match self.now.lock() {
            Ok(n) => *n,
            Err(p) => *p.into_inner(),
        }
    }
    async fn sleep(&self, duration: std::time::Duration) {
        let step = chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::zero());
        if let Ok(mut n) = self.now.lock() {
            *n += step;
        }
        tokio::task::yield_now().await;
    }
}

pub type SharedClock = Arc<dyn Clock>;

// ---------------------------------------------------------------------------------------------
// SaaS capabilities
// ---------------------------------------------------------------------------------------------

/// A PagerDuty note as returned by the REST API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceNote {
    pub id: NoteId,
    pub author_id: Option<String>,
    pub content: String,
}

/// An incident's status as the system of record reports it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceStatus {
    Triggered,
    Acknowledged,
    Resolved,
}

/// A fresh read of an incident (`GET /incidents/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceIncident {
    pub status: SourceStatus,
    /// The alert's dedup key.
    pub incident_key: Option<String>,
}

/// The incident system of record (PagerDuty REST).
#[async_trait]
pub trait IncidentSource: Send + Sync {
    /// The incident as it is now: the execution gate reads it right before anything runs.
    async fn get_incident(&self, incident: &IncidentId) -> Result<SourceIncident, ClientError>;
    async fn list_notes(&self, incident: &IncidentId) -> Result<Vec<SourceNote>, ClientError>;
    async fn add_note(&self, incident: &IncidentId, content: &str) -> Result<NoteId, ClientError>;
    /// Resolve with a short resolution text. Resolving an already resolved incident is success.
    async fn resolve(&self, incident: &IncidentId, resolution: &str) -> Result<(), ClientError>;
    /// The email addresses of the people on call now at the first level of `escalation_policy`.
    async fn first_oncall_emails(&self, _escalation_policy: &str) -> Result<Vec<String>, ClientError> {
        Err(ClientError::Invalid { service: "incidents", detail: "this source has no on-call schedule".into() })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchHit {
    pub content_id: String,
    pub title: String,
    pub score: f64,
    pub chunk_text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchResults {
    pub answer: Option<String>,
    pub hits: Vec<SearchHit>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IngestStatus {
    Queued,
    Processing,
    Complete,
    Failed,
}

/// What a knowledge-base document is. Runbooks and past resolutions are kept apart (separate
/// folders where the knowledge base has them) so that resolutions, which repeat the root-cause
/// words the next query uses, never crowd the runbooks out of retrieval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentKind {
    Runbook,
    Resolution,
}

/// Which documents a search may return.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SearchScope {
    /// Only these documents (the content ids of the pushed runbooks). Empty: the whole base.
    pub content_ids: Vec<String>,
}

/// The runbook knowledge base (Senso).
#[async_trait]
pub trait KnowledgeBase: Send + Sync {
    /// Up to `max_results` hits for `query`, from `scope.content_ids` only when that is not
    /// empty (never anything outside it).
    async fn search(&self, query: &str, max_results: u32, scope: &SearchScope) -> Result<SearchResults, ClientError>;
    /// Ingest a document of `kind` (into that kind's folder); returns its content id.
    /// Processing is asynchronous.
    async fn ingest(&self, kind: DocumentKind, title: &str, text: &str) -> Result<String, ClientError>;
    async fn ingest_status(&self, content_id: &str) -> Result<IngestStatus, ClientError>;
}

/// What the planner sees: all of it untrusted data except the catalog (from our own store).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanRequest {
    pub incident_title: String,
    pub service: String,
    pub hypothesis: Hypothesis,
    pub runbooks: Vec<RunbookMatch>,
    pub catalog: Vec<CatalogAction>,
}

#[cfg(test)]
impl PlanRequest {
    /// A request with only a title, a service and a root cause (no runbooks, no catalog).
    pub(crate) fn bare(incident_title: &str, service: &str, root_cause: &str) -> Self {
        Self {
            incident_title: incident_title.into(),
            service: service.into(),
            hypothesis: Hypothesis {
                root_cause: root_cause.into(),
                confidence: None,
                evidence: vec![],
                alternatives: vec![],
                services: vec![],
            },
            runbooks: vec![],
            catalog: vec![],
        }
    }
}

/// The remediation planner (Claude).
#[async_trait]
pub trait Planner: Send + Sync {
    async fn plan(&self, request: &PlanRequest) -> Result<Plan, ClientError>;
}

/// Reads an investigator note for the fields the rules could not (Claude, forced tool use). Its
/// answer is unchecked: `notes::accept_model_reading` keeps only what the note supports.
#[async_trait]
pub trait NoteReader: Send + Sync {
    async fn read_note(&self, note: &str) -> Result<crate::notes::ModelReading, ClientError>;
}

/// One browser check: a page and what it must show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckSpec {
    pub name: String,
    pub url: String,
    #[serde(default = "default_expected_status")]
    pub expect_status: u16,
    pub expect_text: Option<String>,
    pub expect_selector: Option<String>,
    #[serde(default)]
    pub steps: Vec<JourneyStep>,
    /// Latency ceiling for the main document; slower counts as failing.
    pub max_latency_ms: Option<u64>,
    /// Hard deadline for the whole check.
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
}

fn default_expected_status() -> u16 {
    200
}
fn default_deadline_ms() -> u64 {
    10_000
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum JourneyStep {
    Navigate { url: String },
    Fill { selector: String, value: String },
    Click { selector: String },
    WaitForUrl { contains: String },
    WaitForText { text: String },
}

/// A headless browser (Lightpanda over CDP).
#[async_trait]
pub trait Browser: Send + Sync {
    /// Run one check. Failures of the page are a `CheckResult` with `ok: false`; only a failure
    /// of the browser itself is an error.
    async fn check(&self, spec: &CheckSpec) -> Result<CheckResult, ClientError>;
    /// Get ready before the first check (a browser the function runs itself starts here, during
    /// Lambda init, instead of inside the first check's deadline).
    async fn warm(&self) -> Result<(), ClientError> {
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkspaceRequest {
    pub name: String,
    pub incident_id: IncidentId,
    pub service: String,
    pub severity: String,
    /// The rendered script, base64-encoded for transport as a string parameter.
    pub script_b64: String,
    pub target: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceHandle {
    pub id: String,
    pub name: String,
    pub build_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum WorkspaceProgress {
    /// Still building or starting: poll again.
    Pending { detail: String },
    /// The agent finished its start scripts successfully.
    Ready { agent_id: String },
    /// Build failed, start script failed or timed out.
    Failed { reason: String, agent_id: Option<String> },
}

/// Ephemeral remediation workspaces (Coder).
#[async_trait]
pub trait Workspaces: Send + Sync {
    async fn create(&self, request: &WorkspaceRequest) -> Result<WorkspaceHandle, ClientError>;
    async fn progress(&self, handle: &WorkspaceHandle) -> Result<WorkspaceProgress, ClientError>;
    async fn agent_logs(&self, agent_id: &str, max_bytes: usize) -> Result<String, ClientError>;
    /// Delete the workspace. Deleting an already deleted workspace is success.
    async fn delete(&self, workspace_id: &str) -> Result<(), ClientError>;
    /// The live workspace with this name, if any: lets a retried provisioning adopt a workspace
    /// whose creation succeeded just before a crash instead of leaking it.
    async fn find(&self, name: &str) -> Result<Option<WorkspaceHandle>, ClientError>;
    /// Every workspace of ours whose name starts with `name_prefix`, whatever its state (a
    /// workspace being deleted included; one whose delete finished is gone). Lets cleanup find
    /// workspaces no record points at. An adapter that cannot list says so.
    async fn list(&self, _name_prefix: &str) -> Result<Vec<WorkspaceSummary>, ClientError> {
        Err(ClientError::Invalid { service: "workspaces", detail: "this workspace adapter cannot list".into() })
    }
}

/// One workspace as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceSummary {
    pub id: String,
    pub name: String,
    pub created_at: Option<DateTime<Utc>>,
    /// The latest build's transition (`start`, `stop`, `delete`) and its job's status
    /// (`pending`, `running`, `succeeded`, `failed`, `canceling`, `canceled`).
    pub transition: String,
    pub job_status: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRef {
    pub channel: String,
    pub ts: String,
}

/// A chat message in a portable form: fallback text plus Block Kit blocks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub text: String,
    pub blocks: Value,
}

/// A file shared into the chat channel (a script too long for a message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedFile {
    pub id: String,
    pub title: String,
}

/// Chat operations (Slack).
#[async_trait]
pub trait ChatOps: Send + Sync {
    async fn post(&self, message: &ChatMessage) -> Result<MessageRef, ClientError>;
    async fn update(&self, at: &MessageRef, message: &ChatMessage) -> Result<(), ClientError>;
    /// Reply through an interaction's `response_url`.
    async fn respond(
        &self,
        response_url: &str,
        message: &ChatMessage,
        replace_original: bool,
        ephemeral: bool,
    ) -> Result<(), ClientError>;
    /// A message this app posted since `since` whose blocks carry `marker` (e.g. a block id), for
    /// a step re-run after a crash to find what it already posted instead of posting it again.
    /// `Ok(None)` when there is none or the channel cannot be read back.
    async fn find_posted(&self, _since: DateTime<Utc>, _marker: &str) -> Result<Option<MessageRef>, ClientError> {
        Ok(None)
    }
    /// Reply in the thread under `parent` (Slack: `chat.postMessage` with `thread_ts`). A chat
    /// without threads says so.
    async fn reply_in_thread(&self, _parent: &MessageRef, _message: &ChatMessage) -> Result<MessageRef, ClientError> {
        Err(ClientError::Invalid { service: "chat", detail: "this chat has no threads".into() })
    }
    /// Open a dialog for the person whose click carried `trigger_id` (Slack: `views.open`,
    /// within 3 s of the click). A chat without dialogs says so.
    async fn open_view(&self, _trigger_id: &str, _view: &Value) -> Result<(), ClientError> {
        Err(ClientError::Invalid { service: "chat", detail: "this chat has no dialogs".into() })
    }
    /// The email address of the chat user `user` (Slack: `users.info`, scope `users:read.email`).
    async fn user_email(&self, _user: &str) -> Result<Option<String>, ClientError> {
        Err(ClientError::Invalid { service: "chat", detail: "this chat has no user profiles".into() })
    }
    /// A link people can open to `at` (Slack's `chat.getPermalink`). A chat without links
    /// says so.
    async fn permalink(&self, _at: &MessageRef) -> Result<String, ClientError> {
        Err(ClientError::Invalid { service: "chat", detail: "this chat has no message links".into() })
    }
    /// Share `content` into the channel as a file named `filename`. A chat without file
    /// uploads says so: whatever needed the file (a long script awaiting approval) must then
    /// not go ahead, so the default refuses rather than pretending.
    async fn upload_file(&self, _filename: &str, _title: &str, _content: &str) -> Result<SharedFile, ClientError> {
        Err(ClientError::Invalid { service: "chat", detail: "this chat adapter cannot share files".into() })
    }
}
