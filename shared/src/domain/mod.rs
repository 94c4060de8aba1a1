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
    /// PagerDuty's `incident_key` (the alert's dedup key): the same alert firing again carries
    /// the same key, which is how a re-fire is recognised.
    #[serde(default)]
    pub alert_key: Option<String>,
    /// Why the fix was judged ineffective (a re-fire or a reopen), when it was.
    #[serde(default)]
    pub ineffective_because: Option<String>,
    /// The incident that was the same failure firing again, when one was.
    #[serde(default)]
    pub refired_as: Option<IncidentId>,
    /// Optimistic-concurrency version; the store bumps it on every save.
    /// The incident's escalation policy (PagerDuty id), for the on-call approver lookup.
    #[serde(default)]
    pub escalation_policy_id: Option<String>,
    /// The milestones already noted on the PagerDuty incident (`stages::narration`).
    #[serde(default)]
    pub noted: Vec<String>,
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
            alert_key: None,
            ineffective_because: None,
            refired_as: None,
            escalation_policy_id: None,
            noted: Vec::new(),
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
    /// The script exactly as it would run: rendered once, at planning, from the catalog action
    /// and its resolved parameters (or the free-form body). `None` when the plan is invalid.
    #[serde(default)]
    pub script: Option<String>,
    /// Content hash of the catalog action the script was rendered from (template, parameter
    /// schema, declared risk): a `runbooks push` that changes the action changes it.
    #[serde(default)]
    pub catalog_version: Option<String>,
    /// Parameters whose value is free text the model chose (`source = "model"`): allowed only
    /// on the approval route, and shown highlighted to the approver.
    #[serde(default)]
    pub model_chosen: Vec<String>,
    /// What approvals are bound to: [`Plan::binding_hash`] of the action, the rendered script
    /// and the catalog version. (Before planning validates the plan, the adapter's
    /// [`Plan::action_hash`].)
    pub hash: String,
}

/// JSON with object keys sorted at every level, whatever map order the value was built or
/// stored with, so a hash of it is the same after a round trip through any store.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                write_canonical(&m[*k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

impl Plan {
    /// Hash of the proposed action alone (what the model asked for), in canonical form. Also
    /// the stable suffix of the workspace name.
    pub fn action_hash(action: &PlannedAction) -> String {
        let canonical = canonical_json(&serde_json::to_value(action).unwrap_or(Value::Null));
        crate::sha256_hex(canonical.as_bytes())
    }

    /// What an approval binds: the action with its resolved parameters, the exact script that
    /// would run and the catalog version it was rendered from. Any difference in what would
    /// run gives another hash, so it needs another approval.
    pub fn binding_hash(action: &PlannedAction, script: Option<&str>, catalog_version: Option<&str>) -> String {
        let bound = serde_json::json!({
            "action": serde_json::to_value(action).unwrap_or(Value::Null),
            "script": script,
            "catalog_version": catalog_version,
        });
        crate::sha256_hex(canonical_json(&bound).as_bytes())
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
    /// Why the approver rejected the plan, when they said (the "Reject with reason" dialog).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
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
    /// The page could not be reached at all (DNS, refused or reset connection, TLS): nothing
    /// was observed, so this result neither confirms a failure nor a recovery.
    #[serde(default)]
    pub unreachable: bool,
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
        // Canonical (sorted keys): the same inputs hash the same in every build, whatever order
        // its JSON objects keep.
        self.inputs_hash = Some(crate::sha256_hex(canonical_json(inputs).as_bytes()));
        self
    }
}

/// What an operator configures per service (`selfheal services push`): the browser checks that
/// confirm the failure and the fix, the fix target, and whether the service may auto-execute.
/// Stored in the table, so the deployed functions read the current value at run time and a
/// change needs no redeploy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceSettings {
    /// PagerDuty service id or name, matched exactly (id first) against the incident's service.
    pub service: String,
    #[serde(default)]
    pub checks: Vec<crate::ports::CheckSpec>,
    /// The fix target the remediation workspace receives; default: the first check's URL.
    #[serde(default)]
    pub target: Option<String>,
    /// May this service auto-execute (in addition to `policy.auto_services`)?
    #[serde(default)]
    pub auto_execute: bool,
    /// Slack user ids allowed to approve this service's fixes; empty = the global approvers.
    #[serde(default)]
    pub approvers: Vec<String>,
    /// Whoever is on call (first level) for the incident's escalation policy in PagerDuty may
    /// approve too: their Slack account's email must be their PagerDuty email.
    #[serde(default)]
    pub oncall_may_approve: bool,
    /// Values runbook parameters declared `source = "service"` take (`key = "namespace"` reads
    /// `parameters.namespace`): the target of a fix comes from the operator, never from text
    /// the model read.
    #[serde(default)]
    pub parameters: std::collections::BTreeMap<String, String>,
    pub updated_at: DateTime<Utc>,
    pub updated_by: String,
}

/// Why a [`ServiceSettings`] was refused. Messages name the service and the check, never more
/// of the value than needed to find it in the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceSettingsError {
    #[error("service {0:?} is neither a PagerDuty service id nor a service name (1 to 255 printable characters)")]
    BadService(String),
    #[error("service {0}: at least one [[service.check]] is required (nothing could confirm the failure or the fix)")]
    NoChecks(String),
    #[error("service {service}: a check has an empty name")]
    EmptyCheckName { service: String },
    #[error("service {service}: two checks are named {name:?}; names identify checks in results and must be unique")]
    DuplicateCheck { service: String, name: String },
    #[error("service {service}, check {check:?}: {what} {url:?} is not usable: {why}")]
    BadUrl { service: String, check: String, what: &'static str, url: String, why: String },
    #[error("service {service}, check {check:?}: {why}")]
    BadCheck { service: String, check: String, why: String },
    #[error("service {service}: fix target {target:?} is not usable: {why}")]
    BadTarget { service: String, target: String, why: String },
    #[error("service {service}: approver {approver:?} is not a Slack user id")]
    BadApprover { service: String, approver: String },
    #[error(
        "service {service}: parameter {name:?} is not usable: {why} (names are lowercase snake_case; values \
         1 to 128 characters of letters, digits and . _ - : / @ = + ,)"
    )]
    BadParameter { service: String, name: String, why: &'static str },
}

/// Longest accepted check name, URL or target: far above any real one, small enough that a
/// stored item stays well inside DynamoDB's item limit.
const MAX_SETTING_LEN: usize = 2048;

fn http_url(url: &str) -> Result<(), String> {
    if url.len() > MAX_SETTING_LEN {
        return Err(format!("longer than {MAX_SETTING_LEN} bytes"));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| e.to_string())?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("scheme {:?} is not http or https", parsed.scheme()));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("no host".into());
    }
    Ok(())
}

impl ServiceSettings {
    /// The target the remediation workspace receives: the explicit target, else the first
    /// check's URL.
    pub fn fix_target(&self) -> Option<&str> {
        self.target.as_deref().or_else(|| self.checks.first().map(|c| c.url.as_str()))
    }

    /// Everything `selfheal services push` promises: a service key an incident can match, at
    /// least one check, unique check names, http(s) URLs, a shell-safe target, Slack user ids.
    pub fn validate(&self) -> Result<(), ServiceSettingsError> {
        let service = self.service.clone();
        if ServiceId::parse(&self.service).is_err() && ServiceName::parse(&self.service).is_err() {
            return Err(ServiceSettingsError::BadService(self.service.chars().take(80).collect()));
        }
        if self.checks.is_empty() {
            return Err(ServiceSettingsError::NoChecks(service));
        }
        let mut names = std::collections::BTreeSet::new();
        for check in &self.checks {
            let name = check.name.trim();
            if name.is_empty() {
                return Err(ServiceSettingsError::EmptyCheckName { service });
            }
            if name.len() > MAX_SETTING_LEN {
                return Err(ServiceSettingsError::BadCheck {
                    service,
                    check: name.chars().take(80).collect(),
                    why: format!("the name is longer than {MAX_SETTING_LEN} bytes"),
                });
            }
            if !names.insert(name) {
                return Err(ServiceSettingsError::DuplicateCheck { service, name: name.to_string() });
            }
            let bad_url = |what: &'static str, url: &str, why: String| ServiceSettingsError::BadUrl {
                service: service.clone(),
                check: name.to_string(),
                what,
                url: url.chars().take(200).collect(),
                why,
            };
            http_url(&check.url).map_err(|why| bad_url("url", &check.url, why))?;
            for step in &check.steps {
                if let crate::ports::JourneyStep::Navigate { url } = step {
                    http_url(url).map_err(|why| bad_url("navigate step url", url, why))?;
                }
            }
            let bad_check =
                |why: String| ServiceSettingsError::BadCheck { service: service.clone(), check: name.to_string(), why };
            if !(100..=599).contains(&check.expect_status) {
                return Err(bad_check(format!("expect_status {} is not an HTTP status", check.expect_status)));
            }
            if check.deadline_ms == 0 {
                return Err(bad_check("deadline_ms must be above 0".into()));
            }
        }
        if let Some(target) = self.fix_target() {
            let bad = |why: String| ServiceSettingsError::BadTarget {
                service: service.clone(),
                target: target.chars().take(200).collect(),
                why,
            };
            http_url(target).map_err(bad)?;
            // The target reaches the fix script as an environment variable, never as script text;
            // a URL never needs these characters, and refusing them keeps a runbook script that
            // forgets to quote `$SELFHEAL_TARGET` from word-splitting or globbing it.
            if let Some(c) = target.chars().find(|c| c.is_whitespace() || c.is_control() || "'\"`$\\".contains(*c)) {
                return Err(bad(format!(
                    "it contains {c:?}, which has meaning in shell quoting and which a URL never needs"
                )));
            }
        }
        for approver in &self.approvers {
            if UserId::parse(approver).is_err() {
                return Err(ServiceSettingsError::BadApprover {
                    service: service.clone(),
                    approver: approver.chars().take(80).collect(),
                });
            }
        }
        for (name, value) in &self.parameters {
            let bad = |why: &'static str| ServiceSettingsError::BadParameter {
                service: service.clone(),
                name: name.chars().take(64).collect(),
                why,
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
                return Err(bad("the name is not lowercase snake_case"));
            }
            // Rendered into fix scripts (single-quoted): the same charset runbook strings get.
            if !shell_safe_value(value) {
                return Err(bad("the value is empty, too long or has characters a fix script must not receive"));
            }
        }
        Ok(())
    }
}

/// The characters a string may have to be rendered into a fix script (identifiers, hosts,
/// paths, versions), at most 128 of them. Rendering also single-quotes it; this set is what
/// keeps the value meaning one word whatever the script does with it.
pub fn shell_safe_value(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-:/@=+,".contains(c))
}

/// A root cause's fingerprint: its significant words (lowercase, at least three letters, no
/// numbers or ids, common words dropped), sorted and hashed. Two notes that name the same cause
/// in the same words get the same fingerprint whatever the numbers, order or formatting.
pub fn root_cause_fingerprint(root_cause: &str) -> Option<String> {
    const COMMON: &[&str] = &[
        "the", "and", "for", "with", "from", "that", "this", "are", "was", "were", "has", "have", "not", "but", "its",
        "into", "than", "then", "when", "after", "before", "because", "since", "while", "due", "on", "root", "cause",
        "likely", "probably",
    ];
    let mut words: Vec<String> = root_cause
        .to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 3 && w.chars().all(char::is_alphabetic) && !COMMON.contains(w))
        .map(str::to_string)
        .collect();
    words.sort();
    words.dedup();
    if words.is_empty() {
        return None;
    }
    Some(crate::sha256_hex(words.join(" ").as_bytes()))
}

/// Coder workspace names: 1–32 chars, `^[a-zA-Z0-9]+(?:-[a-zA-Z0-9]+)*$`, not `new`/`create`.
pub fn valid_workspace_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name != "new"
        && name != "create"
        && name.split('-').all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// A unique, valid name for an incident's workspace: `fix-<incident>-<suffix>`, shortened.
pub fn workspace_name(incident: &str, suffix: &str) -> String {
    let clean =
        |s: &str| -> String { s.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>().to_lowercase() };
    let suffix: String = clean(suffix).chars().take(8).collect();
    let budget = 32 - "fix--".len() - suffix.len();
    let inc: String = clean(incident).chars().take(budget).collect();
    let name = format!("fix-{inc}-{suffix}");
    if valid_workspace_name(&name) { name } else { format!("fix-{suffix}") }
}
