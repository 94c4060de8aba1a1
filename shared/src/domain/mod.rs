//! Domain records the loop passes around. They are plain data (serde) so the same values travel
//! through DynamoDB, the embedded store, Step Functions state and the local engine.

mod ids;

pub use ids::*;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRef {
    pub id: ServiceId,
    pub name: ServiceName,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Urgency {
    High,
    Low,
}

/// Where an incident is in its life. `Open` until the loop decides; terminal states are the
/// ones with an [`Outcome`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentStatus {
    Open,
    Remediating,
    Resolved,
    Escalated,
    /// A person resolved it in PagerDuty before we executed anything.
    ResolvedByHuman,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub id: IncidentId,
    pub number: Option<u64>,
    pub title: String,
    pub service: ServiceRef,
    pub urgency: Urgency,
    pub html_url: Option<String>,
    pub status: IncidentStatus,
    /// Last stage that touched the incident (for operators).
    pub stage: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub execution_id: Option<String>,
    pub hypothesis: Option<Hypothesis>,
    #[serde(default)]
    pub runbooks: Vec<RunbookMatch>,
    pub match_score: Option<Confidence>,
    pub plan: Option<Plan>,
    pub decision: Option<Decision>,
    pub approval: Option<ApprovalDecision>,
    #[serde(default)]
    pub verifications: Vec<Verification>,
    pub remediation: Option<RemediationResult>,
    pub outcome: Option<Outcome>,
    pub effectiveness: Option<Effectiveness>,
    /// When selfheal resolved it (start of the stability window).
    #[serde(default)]
    pub resolved_at: Option<DateTime<Utc>>,
    /// Why the plan failed validation, if it did.
    #[serde(default)]
    pub plan_problem: Option<String>,
    /// Optimistic-concurrency version; the store bumps it on every save.
    #[serde(default)]
    pub version: u64,
}

impl Incident {
    pub fn new(id: IncidentId, title: String, service: ServiceRef, urgency: Urgency, now: DateTime<Utc>) -> Self {
        Self {
            id,
            number: None,
            title,
            service,
            urgency,
            html_url: None,
            status: IncidentStatus::Open,
            stage: "intake".into(),
            created_at: now,
            updated_at: now,
            execution_id: None,
            hypothesis: None,
            runbooks: Vec::new(),
            match_score: None,
            plan: None,
            decision: None,
            approval: None,
            verifications: Vec::new(),
            remediation: None,
            outcome: None,
            effectiveness: None,
            resolved_at: None,
            plan_problem: None,
            version: 0,
        }
    }
}

/// The investigator's finding, parsed from its note.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hypothesis {
    pub root_cause: String,
    pub confidence: Option<Confidence>,
    #[serde(default)]
    pub evidence: Vec<String>,
    #[serde(default)]
    pub alternatives: Vec<String>,
    #[serde(default)]
    pub services: Vec<String>,
}

/// A note as received from PagerDuty (full text, after re-fetching a trimmed one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvestigatorNote {
    pub note_id: NoteId,
    pub author: UserId,
    pub content: String,
    pub received_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunbookMatch {
    pub runbook_id: Option<RunbookId>,
    pub title: String,
    pub content_id: Option<String>,
    pub score: Confidence,
    pub excerpt: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskLevel {
    Low,
    Medium,
    High,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PlannedAction {
    /// A named action from a retrieved runbook; the script is rendered from the runbook's template.
    Catalog { runbook_id: RunbookId, action: ActionName, parameters: Value },
    /// Model-written script: never auto-executed.
    Script { language: String, body: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub analysis: String,
    #[serde(default)]
    pub runbook_sources: Vec<String>,
    #[serde(default)]
    pub risks: Vec<String>,
    pub risk: RiskLevel,
    pub action: PlannedAction,
    pub rollback: String,
    pub expected_outcome: String,
    #[serde(default)]
    pub verification_hints: Vec<String>,
    /// SHA-256 of the canonical action (what would run); approvals are bound to it.
    pub hash: String,
}

impl Plan {
    /// Hash of what would execute. Computed from serde_json's canonical (sorted-key) form so the
    /// same action always hashes the same.
    pub fn action_hash(action: &PlannedAction) -> String {
        let canonical = serde_json::to_value(action).unwrap_or(Value::Null).to_string();
        crate::sha256_hex(canonical.as_bytes())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    Auto,
    Approval,
    Escalate,
    Shadow,
}

impl Route {
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Auto => "auto",
            Route::Approval => "approval",
            Route::Escalate => "escalate",
            Route::Shadow => "shadow",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub route: Route,
    /// Stable name of the policy rule that fired (e.g. `auto_high_confidence_catalog`).
    pub rule: String,
    pub explanation: String,
    /// The inputs the rule saw, for the audit trail.
    pub inputs: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    Pending,
    Approved,
    Rejected,
    Expired,
}

/// What a human decided on a plan, bound to the plan hash they saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalDecision {
    pub approval_id: ApprovalId,
    pub status: ApprovalStatus,
    pub decided_by: Option<UserId>,
    pub decided_at: Option<DateTime<Utc>>,
    pub plan_hash: String,
}

/// A pending approval as stored (the task token lives only here, never in Slack).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    pub id: ApprovalId,
    pub incident_id: IncidentId,
    pub task_token: TaskToken,
    pub plan_hash: String,
    pub status: ApprovalStatus,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub decided_by: Option<UserId>,
    pub decided_at: Option<DateTime<Utc>>,
    /// Where the Slack message lives, to update it later.
    pub slack_channel: Option<String>,
    pub slack_ts: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerificationPhase {
    Preflight,
    Postflight,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    pub url: String,
    pub status: Option<u16>,
    pub latency_ms: u64,
    pub ok: bool,
    pub failing_step: Option<String>,
    /// A short excerpt of what the page showed (bounded; never the whole page).
    pub excerpt: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    pub phase: VerificationPhase,
    pub healthy: bool,
    pub at: DateTime<Utc>,
    pub checks: Vec<CheckResult>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemediationResult {
    pub workspace_id: String,
    pub workspace_name: String,
    #[serde(default)]
    pub build_id: String,
    pub succeeded: bool,
    pub lifecycle_state: String,
    pub log_excerpt: String,
    pub deleted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Resolved,
    Escalated,
    Rejected,
    Shadowed,
    ResolvedByHuman,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effectiveness {
    Effective,
    Ineffective,
}

/// One append-only entry of an incident's audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub at: DateTime<Utc>,
    /// Who or what acted: a stage name, `policy`, `slack:U123`, `pagerduty:P123`.
    pub actor: String,
    /// Stable event kind (`incident_created`, `decision`, `approval_decided`, …).
    pub kind: String,
    pub detail: Value,
    /// SHA-256 of the inputs that led to this event, when it is a decision.
    pub inputs_hash: Option<String>,
}

impl AuditEvent {
    pub fn new(at: DateTime<Utc>, actor: impl Into<String>, kind: impl Into<String>, detail: Value) -> Self {
        Self { at, actor: actor.into(), kind: kind.into(), detail, inputs_hash: None }
    }
    pub fn with_inputs_hash(mut self, inputs: &Value) -> Self {
        self.inputs_hash = Some(crate::sha256_hex(inputs.to_string().as_bytes()));
        self
    }
}
