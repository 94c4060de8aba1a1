//! The one implementation of [`IncidentStore`] over a tiny conditional document table.
//!
//! Every backend (DynamoDB, embedded SQLite) only has to offer [`DocTable`]: get, put-if-revision
//! and a key-range query over `(pk, sk)`. All the state-transition rules (create once, dedupe,
//! the race-safe hypothesis hand-off, approvals decided exactly once, budgets) live here once,
//! as optimistic read-decide-write loops, so both backends behave identically by construction
//! and the same contract suite checks them.

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::domain::*;
use crate::error::StoreError;
use crate::ports::*;

/// A document as JSON text, the form SQLite and DynamoDB store: the engine serialises its record
/// and history events straight to text on every transition, instead of building a `Value` tree
/// that those backends would only print again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonText(String);

impl JsonText {
    pub fn of<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        // Most documents the engine writes are a few hundred bytes: start there rather than
        // growing from empty.
        let mut text = Vec::with_capacity(256);
        serde_json::to_writer(&mut text, value)?;
        // serde_json writes UTF-8 only.
        String::from_utf8(text).map(JsonText).map_err(|e| serde::ser::Error::custom(e.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn into_string(self) -> String {
        self.0
    }
    pub fn parse(&self) -> Result<Value, serde_json::Error> {
        serde_json::from_str(&self.0)
    }
}

/// A stored document with its revision (starts at 1) and optional expiry (epoch seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDoc {
    pub doc: Value,
    pub rev: u64,
    pub expires_at: Option<i64>,
}

/// The minimal conditional table a backend provides. Items whose `expires_at` is in the past
/// are treated as absent by `get`/`query` and may be overwritten by `put_if(None)`, because
/// neither DynamoDB nor emulators delete expired items promptly.
#[async_trait]
pub trait DocTable: Send + Sync {
    async fn get(&self, pk: &str, sk: &str, now: i64) -> Result<Option<StoredDoc>, StoreError>;
    /// Write `doc` with revision `expected_rev + 1` (or 1 when `expected_rev` is None).
    /// Succeeds only if the stored revision equals `expected_rev` (None: absent or expired).
    /// Returns false when the condition failed.
    async fn put_if(
        &self,
        pk: &str,
        sk: &str,
        doc: &Value,
        expected_rev: Option<u64>,
        expires_at: Option<i64>,
        now: i64,
    ) -> Result<bool, StoreError>;
    /// `put_if`, and when it succeeds also create the append-only `log` items of the same
    /// partition (items that exist are left as they are). Backends that can, do both in one
    /// transaction; the default does them in order. The engine writes a record and its events
    /// this way on every transition, so the documents come as JSON text, by value.
    #[allow(clippy::too_many_arguments)]
    async fn put_if_with_log(
        &self,
        pk: &str,
        sk: &str,
        doc: JsonText,
        expected_rev: Option<u64>,
        expires_at: Option<i64>,
        log: Vec<(String, JsonText)>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let parse = |key: &str, text: &JsonText| {
            text.parse().map_err(|e| StoreError::Corrupt { key: format!("{pk}/{key}"), why: e.to_string() })
        };
        if !self.put_if(pk, sk, &parse(sk, &doc)?, expected_rev, expires_at, now).await? {
            return Ok(false);
        }
        for (log_sk, log_doc) in &log {
            self.put_if(pk, log_sk, &parse(log_sk, log_doc)?, None, None, now).await?;
        }
        Ok(true)
    }
    /// Items of `pk` with `sk_from <= sk <= sk_to`, ascending by `sk`, live items only.
    async fn query(
        &self,
        pk: &str,
        sk_from: &str,
        sk_to: &str,
        now: i64,
    ) -> Result<Vec<(String, StoredDoc)>, StoreError>;
    /// `query`, keeping only the named top-level `fields` of each document, in the order
    /// asked (null where a field is absent), as DynamoDB's projection expressions do: for reads
    /// that need a little of many items, such as an execution's path from its history events,
    /// whose documents carry whole state payloads.
    async fn query_fields(
        &self,
        pk: &str,
        sk_from: &str,
        sk_to: &str,
        fields: &[&str],
        now: i64,
    ) -> Result<Vec<(String, Vec<Value>)>, StoreError> {
        Ok(self
            .query(pk, sk_from, sk_to, now)
            .await?
            .into_iter()
            .map(|(sk, mut stored)| {
                (sk, fields.iter().map(|f| stored.doc.get_mut(*f).map(Value::take).unwrap_or_default()).collect())
            })
            .collect())
    }
}

/// Upper bound for prefix queries: every sort key we write uses characters below `~`.
const PREFIX_END: &str = "~";
/// Optimistic loops give up after this many lost races (only reachable under extreme contention).
const MAX_ATTEMPTS: u32 = 200;

enum Step<R> {
    Write { doc: Value, expires_at: Option<i64>, result: R },
    Keep(R),
}

pub struct TableStore<T> {
    table: T,
}

impl<T: DocTable> TableStore<T> {
    pub fn new(table: T) -> Self {
        Self { table }
    }

    pub fn table(&self) -> &T {
        &self.table
    }

    /// Read-decide-write until the write wins or the decision is to keep what is there.
    async fn mutate<R>(
        &self,
        pk: &str,
        sk: &str,
        now: i64,
        mut decide: impl FnMut(Option<&StoredDoc>) -> Result<Step<R>, StoreError>,
    ) -> Result<R, StoreError> {
        for attempt in 0..MAX_ATTEMPTS {
            let current = self.table.get(pk, sk, now).await?;
            match decide(current.as_ref())? {
                Step::Keep(r) => return Ok(r),
                Step::Write { doc, expires_at, result } => {
                    let expected = current.as_ref().map(|c| c.rev);
                    if self.table.put_if(pk, sk, &doc, expected, expires_at, now).await? {
                        return Ok(result);
                    }
                }
            }
            // Lost a race: back off a little, with jitter so racers spread out.
            if attempt > 2 {
                let jitter = rand::random::<u64>() % (1 + u64::from(attempt.min(20)));
                tokio::time::sleep(std::time::Duration::from_millis(jitter)).await;
            } else {
                tokio::task::yield_now().await;
            }
        }
        Err(StoreError::Unavailable(format!("too much contention on {pk}/{sk}")))
    }
}

fn decode<D: DeserializeOwned>(key: &str, doc: &Value) -> Result<D, StoreError> {
    serde_json::from_value(doc.clone()).map_err(|e| StoreError::Corrupt { key: key.to_string(), why: e.to_string() })
}

fn encode<S: Serialize>(value: &S) -> Result<Value, StoreError> {
    serde_json::to_value(value).map_err(|e| StoreError::Corrupt { key: "(encode)".into(), why: e.to_string() })
}

fn ts_key(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Partition-key prefix of an incident's items. Public for operator tools that enumerate
/// incidents with a table scan: [`DocTable`] has no scan, because no stage ever needs one.
pub const INCIDENT_PK_PREFIX: &str = "INC#";
const META: &str = "META";
/// Sort key of an incident's record (see [`INCIDENT_PK_PREFIX`]).
pub const INCIDENT_SK: &str = META;

pub(crate) fn incident_pk(id: &IncidentId) -> String {
    format!("{INCIDENT_PK_PREFIX}{id}")
}
/// All services' settings share one partition so that listing them is a single query; there
/// are tens of services, not millions, and they change at operator speed.
const SERVICES_PK: &str = "SERVICES";
/// The knowledge-base documents of the runbooks (one partition: a catalog is dozens of runbooks).
const KNOWLEDGE_PK: &str = "KNOWLEDGE";
const RUNBOOK_DOC_SK_PREFIX: &str = "RUNBOOK#";
const SERVICE_SK_PREFIX: &str = "SETTINGS#";

/// Sort key of a service's settings. A service name may contain any printable character, but
/// prefix queries rely on every sort key staying below `~`, so everything outside a plain ASCII
/// set is percent-encoded (injective, so two services never share a key).
fn service_sk(service: &str) -> String {
    let mut sk = String::with_capacity(SERVICE_SK_PREFIX.len() + service.len());
    sk.push_str(SERVICE_SK_PREFIX);
    for b in service.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
            sk.push(char::from(b));
        } else {
            sk.push_str(&format!("%{b:02X}"));
        }
    }
    sk
}
const WAIT_HYPOTHESIS: &str = "WAIT#hypothesis";

/// The hypothesis hand-off item.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct HandOffDoc {
    token: Option<TaskToken>,
    note: Option<InvestigatorNote>,
    /// Token the execution was resumed with; a different (newer) token means a retried wait
    /// task whose predecessor died, so it must be resumed again.
    resumed_with: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct WebhookDoc {
    payload_hash: String,
    first_seen: DateTime<Utc>,
    /// Processing finished; until then a duplicate is "in progress", not "done".
    #[serde(default)]
    settled: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct CounterDoc {
    count: u32,
}

/// An `incident.resolved` that arrived before the incident was known.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ResolvedEarlyDoc {
    at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct KillSwitchDoc {
    on: bool,
    by: String,
    at: DateTime<Utc>,
}

fn token_fingerprint(t: &TaskToken) -> String {
    crate::sha256_hex(t.expose().as_bytes())
}

#[async_trait]
impl<T: DocTable> IncidentStore for TableStore<T> {
    async fn create_incident(&self, incident: &Incident) -> Result<Created, StoreError> {
        let pk = incident_pk(&incident.id);
        let mut doc = incident.clone();
        doc.version = 1;
        let now = Utc::now().timestamp();
        let doc = encode(&doc)?;
        if self.table.put_if(&pk, META, &doc, None, None, now).await? {
            Ok(Created::New)
        } else {
            Ok(Created::AlreadyExists)
        }
    }

    async fn get_incident(&self, id: &IncidentId) -> Result<Option<Incident>, StoreError> {
        let pk = incident_pk(id);
        let Some(stored) = self.table.get(&pk, META, Utc::now().timestamp()).await? else {
            return Ok(None);
        };
        let mut incident: Incident = decode(&pk, &stored.doc)?;
        incident.version = stored.rev;
        Ok(Some(incident))
    }

    async fn save_incident(&self, incident: &Incident) -> Result<Incident, StoreError> {
        let pk = incident_pk(&incident.id);
        let mut next = incident.clone();
        next.version = incident.version + 1;
        let doc = encode(&next)?;
        let expected = if incident.version == 0 { None } else { Some(incident.version) };
        if self.table.put_if(&pk, META, &doc, expected, None, Utc::now().timestamp()).await? {
            Ok(next)
        } else {
            Err(StoreError::VersionConflict(pk))
        }
    }

    async fn record_webhook(
        &self,
        id: &WebhookId,
        payload_hash: &str,
        now: DateTime<Utc>,
        ttl_secs: i64,
    ) -> Result<Dedupe, StoreError> {
        let pk = format!("WEBHOOK#{id}");
        let doc = encode(&WebhookDoc { payload_hash: payload_hash.to_string(), first_seen: now, settled: false })?;
        let expires = (now + Duration::seconds(ttl_secs.max(1))).timestamp();
        // Fast path: the first delivery is one conditional put, no read.
        if self.table.put_if(&pk, "SEEN", &doc, None, Some(expires), now.timestamp()).await? {
            return Ok(Dedupe::First);
        }
        match self.table.get(&pk, "SEEN", now.timestamp()).await? {
            Some(stored) => {
                let seen: WebhookDoc = decode(&pk, &stored.doc)?;
                Ok(match (seen.payload_hash == payload_hash, seen.settled) {
                    (false, _) => Dedupe::Conflict,
                    (true, true) => Dedupe::Duplicate,
                    (true, false) => Dedupe::InProgress,
                })
            }
            // Expired between the two calls: try once more as a first delivery.
            None => {
                if self.table.put_if(&pk, "SEEN", &doc, None, Some(expires), now.timestamp()).await? {
                    Ok(Dedupe::First)
                } else {
                    // Another delivery of it just started.
                    Ok(Dedupe::InProgress)
                }
            }
        }
    }

    async fn settle_webhook(&self, id: &WebhookId, now: DateTime<Utc>, keep_secs: i64) -> Result<(), StoreError> {
        let pk = format!("WEBHOOK#{id}");
        // A released id expires one second in the past, which makes the next delivery "first".
        let expires = (now + Duration::seconds(keep_secs.max(-1))).timestamp();
        self.mutate(&pk, "SEEN", now.timestamp(), |current| {
            let Some(current) = current else { return Ok(Step::Keep(())) };
            let mut seen: WebhookDoc = decode(&pk, &current.doc)?;
            seen.settled = keep_secs > 0;
            Ok(Step::Write { doc: encode(&seen)?, expires_at: Some(expires), result: () })
        })
        .await
    }

    async fn append_audit(&self, incident: &IncidentId, event: &AuditEvent) -> Result<(), StoreError> {
        let pk = incident_pk(incident);
        let doc = encode(event)?;
        for _ in 0..8 {
            let sk = format!("AUDIT#{}#{}", ts_key(event.at), uuid::Uuid::new_v4().simple());
            if self.table.put_if(&pk, &sk, &doc, None, None, Utc::now().timestamp()).await? {
                return Ok(());
            }
        }
        Err(StoreError::Unavailable("could not allocate a unique audit key".into()))
    }

    async fn audit_trail(&self, incident: &IncidentId) -> Result<Vec<AuditEvent>, StoreError> {
        let pk = incident_pk(incident);
        let rows = self.table.query(&pk, "AUDIT#", &format!("AUDIT#{PREFIX_END}"), Utc::now().timestamp()).await?;
        rows.iter().map(|(sk, d)| decode(sk, &d.doc)).collect()
    }

    async fn offer_wait_token(
        &self,
        incident: &IncidentId,
        token: &TaskToken,
        expires_at: DateTime<Utc>,
    ) -> Result<HandOff, StoreError> {
        let pk = incident_pk(incident);
        let now = Utc::now().timestamp();
        let fingerprint = token_fingerprint(token);
        self.mutate(&pk, WAIT_HYPOTHESIS, now, |current| {
            let mut doc: HandOffDoc = match current {
                Some(c) => decode(&pk, &c.doc)?,
                None => HandOffDoc::default(),
            };
            if doc.resumed_with.as_deref() == Some(fingerprint.as_str()) {
                return Ok(Step::Keep(HandOff::AlreadyResumed));
            }
            doc.token = Some(token.clone());
            let result = match doc.note.clone() {
                Some(note) => {
                    doc.resumed_with = Some(fingerprint.clone());
                    HandOff::NoteWaiting(note)
                }
                None => HandOff::Stored,
            };
            Ok(Step::Write { doc: encode(&doc)?, expires_at: Some(expires_at.timestamp()), result })
        })
        .await
    }

    async fn offer_note(&self, incident: &IncidentId, note: &InvestigatorNote) -> Result<HandOff, StoreError> {
        let pk = incident_pk(incident);
        let now = Utc::now().timestamp();
        self.mutate(&pk, WAIT_HYPOTHESIS, now, |current| {
            let mut doc: HandOffDoc = match current {
                Some(c) => decode(&pk, &c.doc)?,
                None => HandOffDoc::default(),
            };
            if doc.resumed_with.is_some() {
                // The execution already moved on with an earlier note.
                return Ok(Step::Keep(HandOff::AlreadyResumed));
            }
            // A later note replaces an earlier unconsumed one: it is the investigator's latest word.
            doc.note = Some(note.clone());
            let result = match doc.token.clone() {
                Some(token) => {
                    doc.resumed_with = Some(token_fingerprint(&token));
                    HandOff::TokenWaiting(token)
                }
                None => HandOff::Stored,
            };
            let expires = current.and_then(|c| c.expires_at);
            Ok(Step::Write { doc: encode(&doc)?, expires_at: expires, result })
        })
        .await
    }

    async fn waiting_token(&self, incident: &IncidentId) -> Result<Option<TaskToken>, StoreError> {
        let pk = incident_pk(incident);
        let Some(stored) = self.table.get(&pk, WAIT_HYPOTHESIS, Utc::now().timestamp()).await? else {
            return Ok(None);
        };
        let doc: HandOffDoc = decode(&pk, &stored.doc)?;
        Ok(doc.token.filter(|_| doc.resumed_with.is_none()))
    }

    async fn investigator_note(&self, incident: &IncidentId) -> Result<Option<InvestigatorNote>, StoreError> {
        let pk = incident_pk(incident);
        // The hand-off item may carry a TTL for its token; the note is copied to the incident
        // by the parse stage, so reading it while live is enough.
        let Some(stored) = self.table.get(&pk, WAIT_HYPOTHESIS, Utc::now().timestamp()).await? else {
            return Ok(None);
        };
        let doc: HandOffDoc = decode(&pk, &stored.doc)?;
        Ok(doc.note)
    }

    async fn create_approval(&self, approval: &Approval) -> Result<Created, StoreError> {
        let pk = format!("APPROVAL#{}", approval.id);
        let doc = encode(approval)?;
        // Keep decided approvals a week after expiry for the audit trail and late clicks.
        let ttl = (approval.expires_at + Duration::days(7)).timestamp();
        if self.table.put_if(&pk, META, &doc, None, Some(ttl), Utc::now().timestamp()).await? {
            Ok(Created::New)
        } else {
            Ok(Created::AlreadyExists)
        }
    }

    async fn get_approval(&self, id: &ApprovalId) -> Result<Option<Approval>, StoreError> {
        let pk = format!("APPROVAL#{id}");
        match self.table.get(&pk, META, Utc::now().timestamp()).await? {
            Some(stored) => Ok(Some(decode(&pk, &stored.doc)?)),
            None => Ok(None),
        }
    }

    async fn decide_approval(
        &self,
        id: &ApprovalId,
        decision: ApprovalStatus,
        by: &UserId,
        now: DateTime<Utc>,
    ) -> Result<DecideOutcome, StoreError> {
        if !matches!(decision, ApprovalStatus::Approved | ApprovalStatus::Rejected | ApprovalStatus::Expired) {
            return Err(StoreError::Misconfigured(
                "an approval can only be decided as approved, rejected or expired".into(),
            ));
        }
        let pk = format!("APPROVAL#{id}");
        self.mutate(&pk, META, now.timestamp(), |current| {
            let Some(current) = current else {
                return Ok(Step::Keep(DecideOutcome::NotFound));
            };
            let mut approval: Approval = decode(&pk, &current.doc)?;
            if approval.status != ApprovalStatus::Pending {
                return Ok(Step::Keep(DecideOutcome::AlreadyDecided(approval)));
            }
            if now >= approval.expires_at && decision != ApprovalStatus::Expired {
                return Ok(Step::Keep(DecideOutcome::Expired(approval)));
            }
            approval.status = decision;
            approval.decided_by = Some(by.clone());
            approval.decided_at = Some(now);
            Ok(Step::Write {
                doc: encode(&approval)?,
                expires_at: current.expires_at,
                result: DecideOutcome::Decided(approval),
            })
        })
        .await
    }

    async fn set_approval_message(&self, id: &ApprovalId, channel: &str, ts: &str) -> Result<(), StoreError> {
        let pk = format!("APPROVAL#{id}");
        self.mutate(&pk, META, Utc::now().timestamp(), |current| {
            let Some(current) = current else {
                return Err(StoreError::Corrupt { key: pk.clone(), why: "approval vanished".into() });
            };
            let mut approval: Approval = decode(&pk, &current.doc)?;
            approval.slack_channel = Some(channel.to_string());
            approval.slack_ts = Some(ts.to_string());
            Ok(Step::Write { doc: encode(&approval)?, expires_at: current.expires_at, result: () })
        })
        .await
    }

    async fn rebind_approval_token(&self, id: &ApprovalId, token: &TaskToken) -> Result<Approval, StoreError> {
        let pk = format!("APPROVAL#{id}");
        self.mutate(&pk, META, Utc::now().timestamp(), |current| {
            let Some(current) = current else {
                return Err(StoreError::Corrupt { key: pk.clone(), why: "approval vanished".into() });
            };
            let mut approval: Approval = decode(&pk, &current.doc)?;
            approval.task_token = token.clone();
            Ok(Step::Write { doc: encode(&approval)?, expires_at: current.expires_at, result: approval })
        })
        .await
    }

    async fn record_service_event(&self, event: &ServiceEvent) -> Result<(), StoreError> {
        let pk = format!("SVC#{}", event.service);
        let sk = format!("EVT#{}#{}#{}", ts_key(event.at), event.incident_id, event.kind);
        let doc = encode(event)?;
        // Same event recorded twice (webhook retry) is the same key: idempotent.
        let ttl = (event.at + Duration::days(30)).timestamp();
        self.table.put_if(&pk, &sk, &doc, None, Some(ttl), Utc::now().timestamp()).await?;
        Ok(())
    }

    async fn service_events_since(
        &self,
        service: &ServiceId,
        since: DateTime<Utc>,
    ) -> Result<Vec<ServiceEvent>, StoreError> {
        let pk = format!("SVC#{service}");
        let from = format!("EVT#{}", ts_key(since));
        let rows = self.table.query(&pk, &from, &format!("EVT#{PREFIX_END}"), Utc::now().timestamp()).await?;
        rows.iter().map(|(sk, d)| decode(sk, &d.doc)).collect()
    }

    async fn put_catalog_action(&self, action: &CatalogAction) -> Result<(), StoreError> {
        let pk = format!("RUNBOOK#{}", action.runbook_id);
        let sk = format!("ACTION#{}", action.name);
        self.mutate(&pk, &sk, Utc::now().timestamp(), |current| {
            let mut next = action.clone();
            // Pushing a runbook again must not wipe the outcome history of its actions.
            if let Some(current) = current {
                let old: CatalogAction = decode(&pk, &current.doc)?;
                next.effective_count = old.effective_count;
                next.ineffective_count = old.ineffective_count;
            }
            Ok(Step::Write { doc: encode(&next)?, expires_at: None, result: () })
        })
        .await
    }

    async fn get_catalog_action(
        &self,
        runbook: &RunbookId,
        action: &ActionName,
    ) -> Result<Option<CatalogAction>, StoreError> {
        let pk = format!("RUNBOOK#{runbook}");
        let sk = format!("ACTION#{action}");
        match self.table.get(&pk, &sk, Utc::now().timestamp()).await? {
            Some(stored) => Ok(Some(decode(&sk, &stored.doc)?)),
            None => Ok(None),
        }
    }

    async fn catalog_actions(&self, runbook: &RunbookId) -> Result<Vec<CatalogAction>, StoreError> {
        let pk = format!("RUNBOOK#{runbook}");
        let rows = self.table.query(&pk, "ACTION#", &format!("ACTION#{PREFIX_END}"), Utc::now().timestamp()).await?;
        rows.iter().map(|(sk, d)| decode(sk, &d.doc)).collect()
    }

    async fn put_runbook_document(
        &self,
        runbook_id: &RunbookId,
        content_id: &str,
        now: DateTime<Utc>,
    ) -> Result<RunbookDocument, StoreError> {
        let sk = format!("{RUNBOOK_DOC_SK_PREFIX}{runbook_id}");
        self.mutate(KNOWLEDGE_PK, &sk, now.timestamp(), |current| {
            let mut superseded = match current {
                Some(c) => {
                    let old: RunbookDocument = decode(&sk, &c.doc)?;
                    if old.content_id == content_id {
                        return Ok(Step::Keep(old));
                    }
                    let mut s = old.superseded;
                    s.push(old.content_id);
                    s
                }
                None => Vec::new(),
            };
            let drop = superseded.len().saturating_sub(RunbookDocument::KEEP_SUPERSEDED);
            superseded.drain(..drop);
            let doc = RunbookDocument {
                runbook_id: runbook_id.clone(),
                content_id: content_id.to_string(),
                pushed_at: now,
                superseded,
            };
            Ok(Step::Write { doc: encode(&doc)?, expires_at: None, result: doc })
        })
        .await
    }

    async fn runbook_documents(&self) -> Result<Vec<RunbookDocument>, StoreError> {
        let rows = self
            .table
            .query(
                KNOWLEDGE_PK,
                RUNBOOK_DOC_SK_PREFIX,
                &format!("{RUNBOOK_DOC_SK_PREFIX}{PREFIX_END}"),
                Utc::now().timestamp(),
            )
            .await?;
        rows.iter().map(|(sk, d)| decode(sk, &d.doc)).collect()
    }

    async fn record_action_outcome(
        &self,
        runbook: &RunbookId,
        action: &ActionName,
        effectiveness: Effectiveness,
    ) -> Result<(), StoreError> {
        let pk = format!("RUNBOOK#{runbook}");
        let sk = format!("ACTION#{action}");
        self.mutate(&pk, &sk, Utc::now().timestamp(), |current| {
            let Some(current) = current else {
                return Ok(Step::Keep(()));
            };
            let mut a: CatalogAction = decode(&sk, &current.doc)?;
            match effectiveness {
                Effectiveness::Effective => a.effective_count = a.effective_count.saturating_add(1),
                Effectiveness::Ineffective => a.ineffective_count = a.ineffective_count.saturating_add(1),
            }
            Ok(Step::Write { doc: encode(&a)?, expires_at: None, result: () })
        })
        .await
    }

    async fn set_kill_switch(&self, on: bool, by: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        let doc = encode(&KillSwitchDoc { on, by: by.to_string(), at: now })?;
        self.mutate("CONTROL", "KILLSWITCH", now.timestamp(), |_| {
            Ok(Step::Write { doc: doc.clone(), expires_at: None, result: () })
        })
        .await
    }

    async fn kill_switch(&self) -> Result<bool, StoreError> {
        match self.table.get("CONTROL", "KILLSWITCH", Utc::now().timestamp()).await? {
            Some(stored) => Ok(decode::<KillSwitchDoc>("CONTROL/KILLSWITCH", &stored.doc)?.on),
            None => Ok(false),
        }
    }

    async fn put_service_settings(&self, settings: &ServiceSettings) -> Result<(), StoreError> {
        settings.validate().map_err(|e| StoreError::Misconfigured(format!("invalid service settings: {e}")))?;
        let sk = service_sk(&settings.service);
        let doc = encode(settings)?;
        // Last push wins: the file the operator pushed is the whole truth for the service.
        self.mutate(SERVICES_PK, &sk, Utc::now().timestamp(), |_| {
            Ok(Step::Write { doc: doc.clone(), expires_at: None, result: () })
        })
        .await
    }

    async fn get_service_settings(&self, service: &str) -> Result<Option<ServiceSettings>, StoreError> {
        let sk = service_sk(service);
        match self.table.get(SERVICES_PK, &sk, Utc::now().timestamp()).await? {
            Some(stored) => Ok(Some(decode(&sk, &stored.doc)?)),
            None => Ok(None),
        }
    }

    async fn list_service_settings(&self) -> Result<Vec<ServiceSettings>, StoreError> {
        let rows = self
            .table
            .query(SERVICES_PK, SERVICE_SK_PREFIX, &format!("{SERVICE_SK_PREFIX}{PREFIX_END}"), Utc::now().timestamp())
            .await?;
        let mut all =
            rows.iter().map(|(sk, d)| decode::<ServiceSettings>(sk, &d.doc)).collect::<Result<Vec<_>, _>>()?;
        // Key order is the encoded order; operators read services in their own spelling.
        all.sort_by(|a, b| a.service.cmp(&b.service));
        Ok(all)
    }

    async fn remember_resolved(
        &self,
        incident: &IncidentId,
        at: DateTime<Utc>,
        keep_secs: i64,
    ) -> Result<(), StoreError> {
        let pk = format!("RESOLVED#{incident}");
        let doc = encode(&ResolvedEarlyDoc { at })?;
        let expires = (at + Duration::seconds(keep_secs.max(1))).timestamp();
        // The first report wins (a redelivery must not move it); a later one only extends it.
        self.mutate(&pk, META, Utc::now().timestamp(), |current| {
            let doc = match current {
                Some(c) => c.doc.clone(),
                None => doc.clone(),
            };
            Ok(Step::Write { doc, expires_at: Some(expires), result: () })
        })
        .await
    }

    async fn resolved_early(&self, incident: &IncidentId) -> Result<Option<DateTime<Utc>>, StoreError> {
        let pk = format!("RESOLVED#{incident}");
        match self.table.get(&pk, META, Utc::now().timestamp()).await? {
            Some(stored) => Ok(Some(decode::<ResolvedEarlyDoc>(&pk, &stored.doc)?.at)),
            None => Ok(None),
        }
    }

    async fn take_autonomy_budget(
        &self,
        service: &ServiceId,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<bool, StoreError> {
        let sk = format!("RATE#{service}#{}", now.format("%Y%m%d%H"));
        let expires = (now + Duration::hours(2)).timestamp();
        self.mutate("CONTROL", &sk, now.timestamp(), |current| {
            let counter: CounterDoc = match current {
                Some(c) => decode(&sk, &c.doc)?,
                None => CounterDoc::default(),
            };
            if counter.count >= limit {
                return Ok(Step::Keep(false));
            }
            let next = CounterDoc { count: counter.count + 1 };
            Ok(Step::Write { doc: encode(&next)?, expires_at: Some(expires), result: true })
        })
        .await
    }
}
