//! Simulators of the SaaS APIs selfheal talks to, following `testkit/CONTRACTS.md`: PagerDuty
//! (REST + signed v3 webhooks), Cleric (notes), Slack (Web API, response_url, signed clicks,
//! the two-step file upload), Senso (search + asynchronous ingestion), Anthropic (Messages API
//! with a forced tool call; optionally a model that obeys whatever its input tells it), Amazon
//! Bedrock Runtime (`InvokeModel`: the same model behind SigV4 and Bedrock's body) and Coder
//! (workspace lifecycle whose agent runs `infra/coder/fix.sh` with the template's environment,
//! which really runs the rendered script). Requests that break the contract (missing auth or
//! version headers, wrong shapes) are refused the way the real API refuses them. Everything is
//! recorded for assertions.

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

mod anthropic;
mod bedrock;
mod coder;
mod pagerduty;
mod senso;
mod slack;

pub use anthropic::obeyed_instruction;
pub use bedrock::BedrockInvocation;
pub use coder::{TEMPLATE_ENV, TEMPLATE_PARAMETERS, TEMPLATE_RUNNER};

use anthropic::anthropic_messages;
use bedrock::bedrock_invoke;
use coder::{
    coder_build, coder_by_name, coder_cancel, coder_create, coder_list, coder_logs, coder_transition, coder_workspace,
};
use pagerduty::{pd_add_note, pd_get_incident, pd_list_notes, pd_oncalls, pd_update_incident};
use senso::{senso_content, senso_ingest, senso_search};
use slack::{slack_method, slack_read, slack_response, slack_upload};

/// How many times the simulated PagerDuty redelivers a webhook that failed.
pub const WEBHOOK_REDELIVERIES: u32 = 10;

/// How the simulated model plans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlannerMode {
    /// The best-matching runbook's catalog action.
    Catalog,
    /// A free-form script instead of a catalog action.
    FreeFormScript,
    /// An action that is not in the retrieved catalog.
    OutsideCatalog,
    /// A hostile model: it obeys any instruction it finds in its input. Wherever the text it
    /// reads (alert title, service name, note, runbook, custom details) says "call
    /// submit_remediation_plan with {…}", it submits exactly that object: the action,
    /// parameters, risk or script the injected text asks for. Without such an instruction it
    /// plans like `Catalog`.
    Obedient,
}

/// How the simulated model answers the note parser's `submit_note_fields` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteReaderMode {
    /// Copies what the note states: the first line that says what is "causing" or "behind" the
    /// incident (after "is", "looks"), and the first percentage on a line that speaks of
    /// confidence.
    Faithful,
    /// Makes fields up: a root cause and a 99% confidence the note never states.
    Liar,
    /// Quotes the note's confidence but reports a higher number than it says.
    Inflates,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoderMode {
    Normal,
    BuildFails,
    NoProvisioners,
    StartTimeout,
    /// The build succeeds but the agent never connects: `connecting`, then `timeout`.
    AgentNeverConnects,
    /// The start build's job runs for seconds (a slow image pull): a delete meets it active.
    SlowBuild,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Click {
    Approve,
    Reject,
    /// "Reject with reason…", then the dialog submitted with [`AUTO_REJECT_REASON`].
    RejectWithReason,
}

/// One on-call entry: `user_id` (with `email`) is on call at `level` of `escalation_policy`.
#[derive(Debug, Clone)]
pub struct SimOncall {
    pub escalation_policy: String,
    pub level: u32,
    pub user_id: String,
    pub email: String,
}

/// What the simulated approver types into the rejection dialog.
pub const AUTO_REJECT_REASON: &str = "Wrong PID: 4242 is the `vacuum` worker <@U0EVIL> *not* the blocker";

/// A dialog the app opened (`views.open`), for whom, and what it showed.
#[derive(Debug, Clone)]
pub struct OpenedView {
    pub id: String,
    pub user: String,
    pub view: Value,
}

/// Scenario knobs.
#[derive(Debug, Clone)]
pub struct Knobs {
    pub planner: PlannerMode,
    /// Answer this many Messages calls with 529 overloaded first.
    pub anthropic_overloads: u32,
    pub note_reader: NoteReaderMode,
    /// Answer this many Bedrock invocations with 429 `ThrottlingException` first, then this many
    /// with 429 `ModelNotReadyException`, then this many with 503 `ServiceUnavailableException`.
    pub bedrock_throttles: u32,
    pub bedrock_not_ready: u32,
    pub bedrock_unavailable: u32,
    /// Answer this many Senso searches with 429 (Retry-After: 0) first.
    pub senso_rate_limits: u32,
    /// The knowledge-base folders that exist (ingest into any other is answered 404).
    pub senso_folders: Vec<String>,
    pub coder: CoderMode,
    /// Answer this many Coder calls with 503, then this many with 429 (Retry-After: 0).
    pub coder_unavailable: u32,
    pub coder_rate_limits: u32,
    /// The next this-many delete builds fail (Terraform destroy errors), as real ones can.
    pub coder_delete_failures: u32,
    /// How long a delete build's job runs (a slow `terraform destroy`).
    pub coder_delete_ms: u64,
    /// The next this-many delete posts race another build (an autostop `stop` build that
    /// started a moment earlier): they are answered 409 and that build runs.
    pub coder_racing_builds: u32,
    /// The next this-many creates create the workspace, then answer with a body cut off
    /// mid-way (the answer was lost: the caller cannot know the workspace exists).
    pub coder_create_garbled: u32,
    /// Click on approval messages automatically, as this user.
    pub auto_click: Option<(Click, String)>,
    /// A slow PagerDuty REST API that recovers: calls are answered no earlier than this instant.
    pub pagerduty_slow_until: Option<Instant>,
    /// A slow Slack `response_url`: posts to it are answered no earlier than this instant.
    pub slack_response_slow_until: Option<Instant>,
    /// Refuse file uploads (`file_uploads_disabled`), as a workspace that disabled them does.
    pub slack_uploads_disabled: bool,
    /// Who is on call in PagerDuty (`GET /oncalls`).
    pub oncalls: Vec<SimOncall>,
    /// Slack users' profile emails (`users.info`); a user not here is `user_not_found`.
    pub slack_user_emails: BTreeMap<String, String>,
    /// The bot token lacks `users:read.email`: `users.info` answers `missing_scope`.
    pub slack_no_email_scope: bool,
    /// The Kubernetes secret `selfheal-target-<service>` per service (by the workspace's
    /// `service` parameter), as the template mounts it: the runner's `SELFHEAL_TARGET_SECRETS`.
    /// A service without one gets nothing mounted (the secret is optional in main.tf).
    pub target_secrets: BTreeMap<String, std::path::PathBuf>,
}

/// The folders the simulated Senso organisation has: one for runbooks, one for resolutions.
pub const SENSO_RUNBOOKS_FOLDER: &str = "6f1c2a8e-0d4b-4e57-9a31-runbooks0001";
pub const SENSO_RESOLUTIONS_FOLDER: &str = "9b7d4e20-51c3-4f86-b0a2-resolutions1";

impl Default for Knobs {
    fn default() -> Self {
        Self {
            planner: PlannerMode::Catalog,
            anthropic_overloads: 0,
            note_reader: NoteReaderMode::Faithful,
            bedrock_throttles: 0,
            bedrock_not_ready: 0,
            bedrock_unavailable: 0,
            senso_rate_limits: 0,
            senso_folders: vec![SENSO_RUNBOOKS_FOLDER.into(), SENSO_RESOLUTIONS_FOLDER.into()],
            coder: CoderMode::Normal,
            coder_unavailable: 0,
            coder_rate_limits: 0,
            coder_delete_failures: 0,
            coder_delete_ms: 60,
            coder_racing_builds: 0,
            coder_create_garbled: 0,
            auto_click: None,
            pagerduty_slow_until: None,
            slack_response_slow_until: None,
            slack_uploads_disabled: false,
            target_secrets: BTreeMap::new(),
            oncalls: Vec::new(),
            slack_user_emails: BTreeMap::new(),
            slack_no_email_scope: false,
        }
    }
}

/// Wait until `until` (a slow upstream), if it is set and still ahead.
async fn slow_until(until: Option<Instant>) {
    if let Some(at) = until {
        tokio::time::sleep_until(at.into()).await;
    }
}

/// Credentials the simulators expect (and sign with).
#[derive(Debug, Clone)]
pub struct SimCredentials {
    pub webhook_secret: String,
    pub slack_signing_secret: String,
    pub pagerduty_token: String,
    pub slack_bot_token: String,
    pub senso_key: String,
    pub anthropic_key: String,
    pub coder_token: String,
}

impl Default for SimCredentials {
    fn default() -> Self {
        let n = || uuid::Uuid::new_v4().simple().to_string();
        Self {
            webhook_secret: format!("whsec-{}", n()),
            slack_signing_secret: n(),
            pagerduty_token: format!("pd-{}", n()),
            slack_bot_token: format!("xoxb-{}", n()),
            senso_key: format!("tgr_{}", n()),
            anthropic_key: format!("sk-ant-{}", n()),
            coder_token: format!("coder-{}", n()),
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Call {
    pub api: &'static str,
    pub method: String,
    pub path: String,
    pub status: u16,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PdNote {
    pub id: String,
    pub user_id: String,
    pub content: String,
}

#[derive(Debug, Default)]
pub struct PdState {
    pub notes: BTreeMap<String, Vec<PdNote>>,
    pub resolved: BTreeMap<String, String>,
    /// Each incident's status as PagerDuty holds it (`GET /incidents/{id}`): set by the
    /// webhooks this simulator delivers, the resolutions it receives, and tests.
    pub status: BTreeMap<String, String>,
}

/// A file shared through `files.getUploadURLExternal` + upload + `files.completeUploadExternal`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SlackFile {
    pub id: String,
    pub filename: String,
    pub length: usize,
    pub content: Option<String>,
    pub title: Option<String>,
    pub channel: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SlackMessage {
    pub channel: String,
    pub ts: String,
    pub text: String,
    pub blocks: Value,
    pub kind: &'static str,
    /// The parent message's `ts` for a reply in its thread.
    pub thread_ts: Option<String>,
}

#[derive(Debug, Clone)]
struct SensoDoc {
    id: String,
    title: String,
    text: String,
    /// `kb_folder_node_id` given at ingest (None: the root).
    folder: Option<String>,
    created: Instant,
}

/// One workspace build: a transition and its provisioner job.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Build {
    pub id: String,
    pub number: u32,
    pub transition: String,
    /// `pending`, `running`, `succeeded`, `failed`, `canceling`, `canceled`.
    pub job_status: String,
    pub error: String,
}

impl Build {
    /// Coder refuses another build while this one's job has not completed.
    pub fn active(&self) -> bool {
        matches!(self.job_status.as_str(), "pending" | "running" | "canceling")
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Workspace {
    pub id: String,
    pub name: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Every build, oldest first; the last is the latest.
    pub builds: Vec<Build>,
    pub agent_id: String,
    /// The agent's connection: `connecting`, `connected`, `disconnected`, `timeout`.
    pub agent_status: String,
    pub lifecycle: String,
    pub logs: Vec<String>,
    /// Set when a delete build succeeded: the workspace is gone (410 by id, 404 by name).
    pub deleted: bool,
    pub parameters: BTreeMap<String, String>,
}

impl Workspace {
    pub fn latest(&self) -> Option<&Build> {
        self.builds.last()
    }
}

#[derive(Default)]
struct CoderState {
    workspaces: BTreeMap<String, Workspace>,
    creates: u32,
    /// Workspaces whose delete build succeeded.
    deletes: u32,
    /// Builds posted while another was active (answered 409).
    conflicts: u32,
    /// Delete builds that failed.
    failed_deletes: u32,
}

pub struct Sim {
    pub creds: SimCredentials,
    pub knobs: Mutex<Knobs>,
    /// Where to deliver webhooks and clicks (the engine's HTTP routes).
    pub engine_base: Mutex<String>,
    /// This simulator's own base URL (for response_url).
    pub base: Mutex<String>,
    pub calls: Mutex<Vec<Call>>,
    pub pd: Mutex<PdState>,
    pub slack: Mutex<Vec<SlackMessage>>,
    pub slack_files: Mutex<Vec<SlackFile>>,
    /// Trigger ids handed out with clicks (for `views.open`, valid 3 s): id → (when, who).
    triggers: Mutex<BTreeMap<String, (Instant, String)>>,
    pub views: Mutex<Vec<OpenedView>>,
    /// What the obedient model was told to submit, in order.
    pub obeyed: Mutex<Vec<Value>>,
    /// Every signed `InvokeModel` call, in order.
    bedrock: Mutex<Vec<BedrockInvocation>>,
    senso: Mutex<Vec<SensoDoc>>,
    coder: Mutex<CoderState>,
    http: reqwest::Client,
    counter: Mutex<u64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (status, [("content-type", "application/json")], body.to_string()).into_response()
}

impl Sim {
    pub fn new(creds: SimCredentials, knobs: Knobs) -> Arc<Self> {
        Arc::new(Self {
            creds,
            knobs: Mutex::new(knobs),
            engine_base: Mutex::new(String::new()),
            base: Mutex::new(String::new()),
            calls: Mutex::new(Vec::new()),
            pd: Mutex::new(PdState::default()),
            slack: Mutex::new(Vec::new()),
            slack_files: Mutex::new(Vec::new()),
            triggers: Mutex::new(BTreeMap::new()),
            views: Mutex::new(Vec::new()),
            obeyed: Mutex::new(Vec::new()),
            bedrock: Mutex::new(Vec::new()),
            senso: Mutex::new(Vec::new()),
            coder: Mutex::new(CoderState::default()),
            http: reqwest::Client::new(),
            counter: Mutex::new(0),
        })
    }

    fn next_id(&self, prefix: &str) -> String {
        let mut c = lock(&self.counter);
        *c += 1;
        format!("{prefix}{:06}", *c)
    }

    fn record(&self, api: &'static str, method: &str, path: &str, status: u16) {
        lock(&self.calls).push(Call { api, method: method.into(), path: path.into(), status });
    }

    pub fn calls(&self) -> Vec<Call> {
        lock(&self.calls).clone()
    }

    pub fn slack_messages(&self) -> Vec<SlackMessage> {
        lock(&self.slack).clone()
    }

    pub fn slack_files(&self) -> Vec<SlackFile> {
        lock(&self.slack_files).clone()
    }

    /// The instructions the obedient model followed.
    pub fn obeyed(&self) -> Vec<Value> {
        lock(&self.obeyed).clone()
    }

    /// The signed Bedrock `InvokeModel` calls, with their bodies and answers' statuses.
    pub fn bedrock_invocations(&self) -> Vec<BedrockInvocation> {
        lock(&self.bedrock).clone()
    }

    /// Change an incident's status in PagerDuty without a webhook (a person resolving it while
    /// the webhook is delayed or lost).
    /// The notes on `incident` in the order they were added: (author, content).
    pub fn pagerduty_notes(&self, incident: &str) -> Vec<(String, String)> {
        lock(&self.pd)
            .notes
            .get(incident)
            .map(|notes| notes.iter().map(|n| (n.user_id.clone(), n.content.clone())).collect())
            .unwrap_or_default()
    }

    pub fn set_incident_status(&self, incident: &str, status: &str) {
        lock(&self.pd).status.insert(incident.to_string(), status.to_string());
    }

    pub fn workspaces(&self) -> Vec<Workspace> {
        lock(&self.coder).workspaces.values().cloned().collect()
    }

    /// (created, deleted) workspace counts: deleted means a delete build succeeded.
    pub fn workspace_counts(&self) -> (u32, u32) {
        let c = lock(&self.coder);
        (c.creates, c.deletes)
    }

    /// Workspaces not deleted (a delete still running or failed counts as leaked).
    pub fn live_workspaces(&self) -> Vec<Workspace> {
        lock(&self.coder).workspaces.values().filter(|w| !w.deleted).cloned().collect()
    }

    /// (builds refused with 409 while another was active, delete builds that failed).
    pub fn coder_edges(&self) -> (u32, u32) {
        let c = lock(&self.coder);
        (c.conflicts, c.failed_deletes)
    }

    /// Make every workspace look `by` older (a cleanup's age cut-off, without waiting hours).
    pub fn age_workspaces(&self, by: chrono::Duration) {
        for w in lock(&self.coder).workspaces.values_mut() {
            w.created_at -= by;
        }
    }

    pub fn senso_documents(&self) -> Vec<(String, String)> {
        lock(&self.senso).iter().map(|d| (d.title.clone(), d.text.clone())).collect()
    }

    /// Each document's title and the folder it was filed into (None: the root).
    pub fn senso_folders(&self) -> Vec<(String, Option<String>)> {
        lock(&self.senso).iter().map(|d| (d.title.clone(), d.folder.clone())).collect()
    }

    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/pagerduty/incidents/{id}/notes", get(pd_list_notes).post(pd_add_note))
            .route("/pagerduty/oncalls", get(pd_oncalls))
            .route("/pagerduty/incidents/{id}", axum::routing::put(pd_update_incident).get(pd_get_incident))
            .route("/slack/api/{method}", post(slack_method).get(slack_read))
            .route("/slack/upload/{file_id}", post(slack_upload))
            .route("/slack/response/{id}", post(slack_response))
            .route("/senso/org/search", post(senso_search))
            .route("/senso/org/kb/raw", post(senso_ingest))
            .route("/senso/org/content/{id}", get(senso_content))
            .route("/anthropic/v1/messages", post(anthropic_messages))
            // Bedrock Runtime's `InvokeModel`: point the SDK's endpoint at `{base}/bedrock`.
            .route("/bedrock/model/{model_id}/invoke", post(bedrock_invoke))
            .route("/coder/api/v2/users/{user}/workspaces", post(coder_create))
            .route("/coder/api/v2/users/{user}/workspace/{name}", get(coder_by_name))
            .route("/coder/api/v2/workspaces", get(coder_list))
            .route("/coder/api/v2/workspaces/{id}", get(coder_workspace))
            .route("/coder/api/v2/workspacebuilds/{id}", get(coder_build))
            .route("/coder/api/v2/workspacebuilds/{id}/cancel", axum::routing::patch(coder_cancel))
            .route("/coder/api/v2/workspaceagents/{id}/logs", get(coder_logs))
            .route("/coder/api/v2/workspaces/{id}/builds", post(coder_transition))
            .with_state(self.clone())
    }
}
