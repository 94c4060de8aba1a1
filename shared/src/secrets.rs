//! Secrets from AWS Secrets Manager, kept fresh.
//!
//! There is one secret per integration ([`crate::config::SECRET_KEYS`]) and each Lambda function
//! reads only those its work needs (`SELFHEAL_SECRET_IDS`). They go through a process-wide cache
//! with a TTL (`SELFHEAL_SECRETS_TTL_SECS`, default 300 s). Without a refresh, a rotated webhook
//! secret or a credential filled in after deploy would only be seen when Lambda recycled the
//! execution environment, so deliveries signed with the new secret would be refused for hours.
//!
//! [`SecretsHandle`] is what [`crate::stages::Deps`] holds: either fixed values (tests, the local
//! engine) or a [`SecretsCache`]. Handlers read it through [`SecretsHandle::current`], which
//! refreshes first when the TTL has run out. Adapters that hold a credential are wrapped in
//! [`Rebuilt`], which builds them again when the values change. A failed refresh keeps the last
//! good values. Nothing here logs or returns a secret value: errors name secret ids, AWS error
//! codes, keys and JSON positions only.
//!
//! AWS's `aws_secretsmanager_caching` crate was considered and not used. It depends on
//! `aws-sdk-secretsmanager` with default features, which brings back the legacy
//! hyper 0.14 / rustls 0.21 / ring TLS stack that this workspace leaves out. Its TTL also runs on
//! `std::time::Instant`, which a test cannot advance.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::config::{Secrets, Settings, integration_of};
use crate::domain::{CheckResult, IncidentId, NoteId, Plan};
use crate::error::ClientError;
use crate::ports::*;

/// How long values are used before being read again, unless `SELFHEAL_SECRETS_TTL_SECS` says
/// otherwise (`Settings::secrets_ttl_secs`).
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// After a failed refresh, wait this long before trying again. The full TTL would be too long if
/// the failure was a blip. Retrying on every request would add a timeout to each delivery
/// during a Secrets Manager outage.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);
/// A refresh runs on the request path (PagerDuty waits 5 s for an answer, Slack 3 s). If Secrets
/// Manager is slow, the last good values are used instead of making the caller wait.
pub const REFRESH_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretsError {
    /// `code` is the AWS error code (e.g. `ResourceNotFoundException`, `AccessDeniedException`).
    #[error("GetSecretValue {secret_id}: {code}")]
    Fetch { secret_id: String, code: String },
    #[error("secret {secret_id} has no SecretString (binary secrets are not supported)")]
    NotText { secret_id: String },
    /// `why` names a key or a JSON position, never a value.
    #[error("secret {secret_id}: {why}")]
    Invalid { secret_id: String, why: String },
    #[error("reading the secrets took longer than {} s", .0.as_secs())]
    Timeout(Duration),
}

/// Where secret documents come from: Secrets Manager on AWS (moto in tests), anything in unit tests.
#[async_trait]
pub trait SecretSource: Send + Sync {
    /// The current `SecretString` of `secret_id` (an ARN or a name).
    async fn secret_string(&self, secret_id: &str) -> Result<SecretString, SecretsError>;
}

#[async_trait]
impl SecretSource for aws_sdk_secretsmanager::Client {
    async fn secret_string(&self, secret_id: &str) -> Result<SecretString, SecretsError> {
        use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
        let out = self.get_secret_value().secret_id(secret_id).send().await.map_err(|e| SecretsError::Fetch {
            secret_id: secret_id.to_string(),
            code: e.code().unwrap_or("request failed").to_string(),
        })?;
        out.secret_string()
            .map(|s| SecretString::from(s.to_string()))
            .ok_or_else(|| SecretsError::NotText { secret_id: secret_id.to_string() })
    }
}

/// The secrets this process may read: `SELFHEAL_SECRET_IDS`, plus `SELFHEAL_SECRET_ID` as set by
/// stacks deployed before the split, in that order and without repeats.
pub fn secret_ids(settings: &Settings) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for id in settings.secret_ids.iter().chain(settings.secret_id.iter()) {
        let id = id.trim();
        if !id.is_empty() && !ids.iter().any(|known| known == id) {
            ids.push(id.to_string());
        }
    }
    ids
}

/// The cache TTL: `SELFHEAL_SECRETS_TTL_SECS`, else [`DEFAULT_TTL`].
pub fn ttl(settings: &Settings) -> Duration {
    settings.secrets_ttl_secs.map_or(DEFAULT_TTL, Duration::from_secs)
}

/// Merge several secret documents (JSON objects) into one [`Secrets`]. Later documents win for a
/// key set in more than one. That, and a document holding the keys of several integrations,
/// is logged as a warning (with key and integration names only), because each integration's
/// keys belong in its own secret or least privilege is lost.
pub fn merge_documents(documents: &[(&str, &SecretString)]) -> Result<Secrets, SecretsError> {
    let mut merged: Map<String, Value> = Map::new();
    let mut origin: Vec<(String, String)> = Vec::new();
    for (secret_id, text) in documents {
        let object: Map<String, Value> = serde_json::from_str(text.expose_secret()).map_err(|e| {
            // serde_json's messages quote the input; report only the position.
            SecretsError::Invalid {
                secret_id: (*secret_id).to_string(),
                why: format!("not a JSON object (line {}, column {})", e.line(), e.column()),
            }
        })?;
        let mut integrations: Vec<&str> = object.keys().filter_map(|k| integration_of(k)).collect();
        integrations.sort_unstable();
        integrations.dedup();
        if integrations.len() > 1 {
            tracing::warn!(
                secret_id = %secret_id,
                integrations = ?integrations,
                "one secret holds the keys of several integrations; give each integration its own secret"
            );
        }
        for (key, value) in object {
            if integration_of(&key).is_some() {
                if let Some((_, earlier)) = origin.iter().find(|(k, _)| *k == key) {
                    tracing::warn!(key = %key, first = %earlier, then = %secret_id, "secret key set in two secrets; the later one is used");
                }
                origin.retain(|(k, _)| *k != key);
                origin.push((key.clone(), (*secret_id).to_string()));
            }
            merged.insert(key, value);
        }
    }
    let label = documents.iter().map(|(id, _)| *id).collect::<Vec<_>>().join(",");
    Secrets::from_json_object(merged).map_err(|e| SecretsError::Invalid { secret_id: label, why: e.to_string() })
}

struct Loaded {
    secrets: Arc<Secrets>,
    /// SHA-256 over the raw documents: tells a changed value from a re-read of the same one, so
    /// adapters are rebuilt only on a change. Compared, never logged.
    fingerprint: String,
    /// Goes up by one on every change of value.
    generation: u64,
    /// When the next read should go to Secrets Manager.
    refresh_at: DateTime<Utc>,
}

/// The process-wide cache of this function's secrets.
pub struct SecretsCache {
    ids: Vec<String>,
    source: Arc<dyn SecretSource>,
    clock: Arc<dyn Clock>,
    ttl: Duration,
    state: RwLock<Loaded>,
    /// One refresh at a time. Callers that arrive during a refresh wait for it and then use its
    /// result, instead of each calling GetSecretValue.
    refreshing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for SecretsCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsCache").field("ids", &self.ids).field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

fn fingerprint(documents: &[(&str, &SecretString)]) -> String {
    let mut bytes = Vec::new();
    for (id, text) in documents {
        for part in [id.as_bytes(), text.expose_secret().as_bytes()] {
            bytes.extend_from_slice(&(part.len() as u64).to_be_bytes());
            bytes.extend_from_slice(part);
        }
    }
    crate::sha256_hex(&bytes)
}

fn after(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl SecretsCache {
    /// Read every secret now. Fails if any of them cannot be read: at start-up that is a deploy
    /// fault (a missing secret or permission), and failing loudly beats running without credentials.
    pub async fn load(
        ids: Vec<String>,
        source: Arc<dyn SecretSource>,
        clock: Arc<dyn Clock>,
        ttl: Duration,
    ) -> Result<Arc<Self>, SecretsError> {
        let (secrets, fingerprint) = fetch_all(&ids, source.as_ref()).await?;
        let refresh_at = after(clock.now(), ttl);
        let state = RwLock::new(Loaded { secrets: Arc::new(secrets), fingerprint, generation: 0, refresh_at });
        Ok(Arc::new(Self { ids, source, clock, ttl, state, refreshing: tokio::sync::Mutex::new(()) }))
    }

    /// The secrets, refreshed first if the TTL has run out. Never fails: after a failed refresh
    /// it returns the last good values (and logs a warning).
    pub async fn current(&self) -> (u64, Arc<Secrets>) {
        if let Some(fresh) = self.fresh(self.clock.now()) {
            return fresh;
        }
        let _one = self.refreshing.lock().await;
        let now = self.clock.now();
        if let Some(fresh) = self.fresh(now) {
            return fresh;
        }
        let outcome = match tokio::time::timeout(REFRESH_TIMEOUT, fetch_all(&self.ids, self.source.as_ref())).await {
            Ok(result) => result,
            Err(_) => Err(SecretsError::Timeout(REFRESH_TIMEOUT)),
        };
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        match outcome {
            Ok((secrets, fingerprint)) => {
                if fingerprint != state.fingerprint {
                    state.generation += 1;
                    state.secrets = Arc::new(secrets);
                    state.fingerprint = fingerprint;
                    tracing::info!(
                        generation = state.generation,
                        "secrets changed; adapters follow on their next call"
                    );
                }
                state.refresh_at = after(now, self.ttl);
            }
            Err(e) => {
                let retry = RETRY_AFTER_FAILURE.min(self.ttl);
                tracing::warn!(error = %e, retry_in_secs = retry.as_secs(), "secrets refresh failed; keeping the last good values");
                state.refresh_at = after(now, retry);
            }
        }
        (state.generation, state.secrets.clone())
    }

    /// The last loaded secrets, without going to Secrets Manager.
    pub fn snapshot(&self) -> (u64, Arc<Secrets>) {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        (state.generation, state.secrets.clone())
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn fresh(&self, now: DateTime<Utc>) -> Option<(u64, Arc<Secrets>)> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        // A clock that jumped backwards by more than the TTL also counts as stale, so a refresh
        // is never put off indefinitely.
        let ahead = state.refresh_at.signed_duration_since(now);
        let fresh =
            now < state.refresh_at && ahead <= chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::MAX);
        fresh.then(|| (state.generation, state.secrets.clone()))
    }
}

/// Read and merge `ids` once, without a cache (operator commands that run once).
pub async fn read_all(source: &dyn SecretSource, ids: &[String]) -> Result<Secrets, SecretsError> {
    Ok(fetch_all(ids, source).await?.0)
}

async fn fetch_all(ids: &[String], source: &dyn SecretSource) -> Result<(Secrets, String), SecretsError> {
    let texts = futures::future::try_join_all(ids.iter().map(|id| source.secret_string(id))).await?;
    let documents: Vec<(&str, &SecretString)> = ids.iter().map(String::as_str).zip(texts.iter()).collect();
    Ok((merge_documents(&documents)?, fingerprint(&documents)))
}

/// A Lambda function's secrets: every secret in `SELFHEAL_SECRET_IDS` (and the legacy
/// `SELFHEAL_SECRET_ID`), cached for `SELFHEAL_SECRETS_TTL_SECS`. A function with no secret ids
/// reads no secrets (e.g. the cleric function, which only talks to the store).
pub async fn for_lambda(settings: &Settings, sdk: &aws_config::SdkConfig) -> Result<SecretsHandle, SecretsError> {
    let ids = secret_ids(settings);
    if ids.is_empty() {
        tracing::info!("no SELFHEAL_SECRET_IDS: this function reads no secrets");
        return Ok(SecretsHandle::fixed(Secrets::default()));
    }
    let ttl = ttl(settings);
    let client: Arc<dyn SecretSource> = Arc::new(aws_sdk_secretsmanager::Client::new(sdk));
    let cache = SecretsCache::load(ids, client, Arc::new(SystemClock::real()), ttl).await?;
    Ok(SecretsHandle::cached(cache))
}

/// The secrets a process's handlers see: fixed values, or the refreshing cache.
#[derive(Clone)]
pub struct SecretsHandle(Inner);

#[derive(Clone)]
enum Inner {
    Fixed(Arc<Secrets>),
    Cached(Arc<SecretsCache>),
}

impl std::fmt::Debug for SecretsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Inner::Fixed(_) => f.write_str("SecretsHandle(fixed)"),
            Inner::Cached(c) => write!(f, "SecretsHandle({c:?})"),
        }
    }
}

impl SecretsHandle {
    pub fn fixed(secrets: Secrets) -> Self {
        Self(Inner::Fixed(Arc::new(secrets)))
    }

    pub fn cached(cache: Arc<SecretsCache>) -> Self {
        Self(Inner::Cached(cache))
    }

    /// Whether the values can change during the life of the process.
    pub fn refreshes(&self) -> bool {
        matches!(self.0, Inner::Cached(_))
    }

    /// The secrets to use for this request, refreshed first if they are stale.
    pub async fn current(&self) -> Arc<Secrets> {
        self.current_with_generation().await.1
    }

    /// Like [`Self::current`], with a number that changes whenever the values do.
    pub async fn current_with_generation(&self) -> (u64, Arc<Secrets>) {
        match &self.0 {
            Inner::Fixed(s) => (0, s.clone()),
            Inner::Cached(c) => c.current().await,
        }
    }

    /// The last loaded values, without refreshing (for synchronous code and tests).
    pub fn snapshot(&self) -> Arc<Secrets> {
        self.snapshot_with_generation().1
    }

    pub fn snapshot_with_generation(&self) -> (u64, Arc<Secrets>) {
        match &self.0 {
            Inner::Fixed(s) => (0, s.clone()),
            Inner::Cached(c) => c.snapshot(),
        }
    }
}

impl From<Secrets> for SecretsHandle {
    fn from(secrets: Secrets) -> Self {
        Self::fixed(secrets)
    }
}

impl From<Arc<SecretsCache>> for SecretsHandle {
    fn from(cache: Arc<SecretsCache>) -> Self {
        Self::cached(cache)
    }
}

type Build<T> = Box<dyn Fn(&Secrets) -> Arc<T> + Send + Sync>;

/// An adapter built from the current secrets and built again when they change. It implements the
/// same port as the adapter, so stages keep calling `deps.source`, `deps.chat`, … unchanged.
pub struct Rebuilt<T: ?Sized> {
    secrets: SecretsHandle,
    build: Build<T>,
    built: Mutex<(u64, Arc<T>)>,
}

impl<T: ?Sized> Rebuilt<T> {
    pub fn new(secrets: SecretsHandle, build: impl Fn(&Secrets) -> Arc<T> + Send + Sync + 'static) -> Self {
        let (generation, current) = secrets.snapshot_with_generation();
        let adapter = build(&current);
        Self { secrets, build: Box::new(build), built: Mutex::new((generation, adapter)) }
    }

    /// The adapter for the current secrets (refreshing them first if they are stale).
    pub async fn get(&self) -> Arc<T> {
        let (generation, current) = self.secrets.current_with_generation().await;
        let mut built = self.built.lock().unwrap_or_else(|p| p.into_inner());
        if built.0 != generation {
            *built = (generation, (self.build)(&current));
        }
        built.1.clone()
    }
}

#[async_trait]
impl IncidentSource for Rebuilt<dyn IncidentSource> {
    async fn get_incident(&self, incident: &IncidentId) -> Result<SourceIncident, ClientError> {
        self.get().await.get_incident(incident).await
    }
    async fn list_notes(&self, incident: &IncidentId) -> Result<Vec<SourceNote>, ClientError> {
        self.get().await.list_notes(incident).await
    }
    async fn add_note(&self, incident: &IncidentId, content: &str) -> Result<NoteId, ClientError> {
        self.get().await.add_note(incident, content).await
    }
    async fn resolve(&self, incident: &IncidentId, resolution: &str) -> Result<(), ClientError> {
        self.get().await.resolve(incident, resolution).await
    }
    // Delegated explicitly: the default has no schedule.
    async fn first_oncall_emails(&self, escalation_policy: &str) -> Result<Vec<String>, ClientError> {
        self.get().await.first_oncall_emails(escalation_policy).await
    }
}

#[async_trait]
impl KnowledgeBase for Rebuilt<dyn KnowledgeBase> {
    async fn search(&self, query: &str, max_results: u32, scope: &SearchScope) -> Result<SearchResults, ClientError> {
        self.get().await.search(query, max_results, scope).await
    }
    async fn ingest(&self, kind: DocumentKind, title: &str, text: &str) -> Result<String, ClientError> {
        self.get().await.ingest(kind, title, text).await
    }
    async fn ingest_status(&self, content_id: &str) -> Result<IngestStatus, ClientError> {
        self.get().await.ingest_status(content_id).await
    }
}

#[async_trait]
impl Planner for Rebuilt<dyn Planner> {
    async fn plan(&self, request: &PlanRequest) -> Result<Plan, ClientError> {
        self.get().await.plan(request).await
    }
}

#[async_trait]
impl NoteReader for Rebuilt<dyn NoteReader> {
    async fn read_note(&self, note: &str) -> Result<crate::notes::ModelReading, ClientError> {
        self.get().await.read_note(note).await
    }
}

#[async_trait]
impl Browser for Rebuilt<dyn Browser> {
    async fn check(&self, spec: &CheckSpec) -> Result<CheckResult, ClientError> {
        self.get().await.check(spec).await
    }
    async fn warm(&self) -> Result<(), ClientError> {
        self.get().await.warm().await
    }
}

#[async_trait]
impl Workspaces for Rebuilt<dyn Workspaces> {
    async fn create(&self, request: &WorkspaceRequest) -> Result<WorkspaceHandle, ClientError> {
        self.get().await.create(request).await
    }
    async fn progress(&self, handle: &WorkspaceHandle) -> Result<WorkspaceProgress, ClientError> {
        self.get().await.progress(handle).await
    }
    async fn agent_logs(&self, agent_id: &str, max_bytes: usize) -> Result<String, ClientError> {
        self.get().await.agent_logs(agent_id, max_bytes).await
    }
    async fn delete(&self, workspace_id: &str) -> Result<(), ClientError> {
        self.get().await.delete(workspace_id).await
    }
    async fn find(&self, name: &str) -> Result<Option<WorkspaceHandle>, ClientError> {
        self.get().await.find(name).await
    }
    async fn list(&self, name_prefix: &str) -> Result<Vec<WorkspaceSummary>, ClientError> {
        self.get().await.list(name_prefix).await
    }
}

#[async_trait]
impl ChatOps for Rebuilt<dyn ChatOps> {
    async fn post(&self, message: &ChatMessage) -> Result<MessageRef, ClientError> {
        self.get().await.post(message).await
    }
    async fn update(&self, at: &MessageRef, message: &ChatMessage) -> Result<(), ClientError> {
        self.get().await.update(at, message).await
    }
    async fn respond(
        &self,
        response_url: &str,
        message: &ChatMessage,
        replace_original: bool,
        ephemeral: bool,
    ) -> Result<(), ClientError> {
        self.get().await.respond(response_url, message, replace_original, ephemeral).await
    }
    // Delegated explicitly: the trait's default would hide the adapter's read-back.
    async fn find_posted(&self, since: DateTime<Utc>, marker: &str) -> Result<Option<MessageRef>, ClientError> {
        self.get().await.find_posted(since, marker).await
    }
    // Delegated explicitly, like find_posted: the default has no threads.
    async fn reply_in_thread(&self, parent: &MessageRef, message: &ChatMessage) -> Result<MessageRef, ClientError> {
        self.get().await.reply_in_thread(parent, message).await
    }
    // Delegated explicitly, like find_posted: the default has no dialogs.
    async fn open_view(&self, trigger_id: &str, view: &Value) -> Result<(), ClientError> {
        self.get().await.open_view(trigger_id, view).await
    }
    // Delegated explicitly, like find_posted: the default has no profiles.
    async fn user_email(&self, user: &str) -> Result<Option<String>, ClientError> {
        self.get().await.user_email(user).await
    }
    // Delegated explicitly, like find_posted: the default has no links.
    async fn permalink(&self, at: &MessageRef) -> Result<String, ClientError> {
        self.get().await.permalink(at).await
    }
    // Delegated explicitly, like find_posted: the default refuses.
    async fn upload_file(&self, filename: &str, title: &str, content: &str) -> Result<SharedFile, ClientError> {
        self.get().await.upload_file(filename, title, content).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Documents by id, changeable between reads; counts the reads.
    #[derive(Default)]
    struct Docs {
        docs: Mutex<Vec<(String, Result<String, SecretsError>)>>,
        reads: AtomicUsize,
    }

    impl Docs {
        fn set(&self, id: &str, doc: Result<&str, SecretsError>) {
            let mut docs = self.docs.lock().unwrap();
            docs.retain(|(k, _)| k != id);
            docs.push((id.to_string(), doc.map(str::to_string)));
        }
    }

    #[async_trait]
    impl SecretSource for Docs {
        async fn secret_string(&self, secret_id: &str) -> Result<SecretString, SecretsError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            let docs = self.docs.lock().unwrap();
            match docs.iter().find(|(k, _)| k == secret_id) {
                Some((_, Ok(text))) => Ok(SecretString::from(text.clone())),
                Some((_, Err(e))) => Err(e.clone()),
                None => {
                    Err(SecretsError::Fetch { secret_id: secret_id.into(), code: "ResourceNotFoundException".into() })
                }
            }
        }
    }

    fn clock() -> Arc<VirtualClock> {
        Arc::new(VirtualClock::starting_at(Utc::now()))
    }

    fn webhook(s: &Secrets) -> Vec<String> {
        s.pagerduty_webhook_secrets.iter().map(|v| v.expose_secret().to_string()).collect()
    }

    #[tokio::test]
    async fn stale_values_are_reread_and_failures_keep_the_last_good_ones() {
        let docs = Arc::new(Docs::default());
        docs.set("pd", Ok(r#"{"pagerduty_webhook_secrets": ["whsec-1"]}"#));
        docs.set("slack", Ok(r#"{"slack_signing_secret": "sign-1"}"#));
        let clock = clock();
        let cache = SecretsCache::load(vec!["pd".into(), "slack".into()], docs.clone(), clock.clone(), DEFAULT_TTL)
            .await
            .unwrap();
        let (g0, s) = cache.current().await;
        assert_eq!(webhook(&s), ["whsec-1"]);
        assert_eq!(docs.reads.load(Ordering::SeqCst), 2);

        // Within the TTL: no read, even though the secret changed.
        docs.set("pd", Ok(r#"{"pagerduty_webhook_secrets": ["whsec-2", "whsec-1"]}"#));
        clock.sleep(Duration::from_secs(299)).await;
        assert_eq!(webhook(&cache.current().await.1), ["whsec-1"]);
        assert_eq!(docs.reads.load(Ordering::SeqCst), 2);

        // Past the TTL: read again, new generation.
        clock.sleep(Duration::from_secs(2)).await;
        let (g1, s) = cache.current().await;
        assert_eq!(webhook(&s), ["whsec-2", "whsec-1"]);
        assert!(g1 > g0);

        // The same values read again: same generation (adapters are not rebuilt).
        clock.sleep(Duration::from_secs(301)).await;
        assert_eq!(cache.current().await.0, g1);

        // A failed refresh keeps the last good values and is retried after a short pause only.
        docs.set("slack", Err(SecretsError::Fetch { secret_id: "slack".into(), code: "AccessDeniedException".into() }));
        clock.sleep(Duration::from_secs(301)).await;
        let reads = docs.reads.load(Ordering::SeqCst);
        let (g2, s) = cache.current().await;
        assert_eq!((g2, webhook(&s)), (g1, vec!["whsec-2".to_string(), "whsec-1".to_string()]));
        assert_eq!(s.slack_signing_secret.as_ref().map(|v| v.expose_secret().to_string()).as_deref(), Some("sign-1"));
        cache.current().await;
        assert_eq!(docs.reads.load(Ordering::SeqCst), reads + 2, "no new read before the retry pause");
        docs.set("slack", Ok(r#"{"slack_signing_secret": "sign-2"}"#));
        clock.sleep(RETRY_AFTER_FAILURE).await;
        let s = cache.current().await.1;
        assert_eq!(s.slack_signing_secret.as_ref().map(|v| v.expose_secret().to_string()).as_deref(), Some("sign-2"));
    }

    #[tokio::test]
    async fn a_clock_that_jumps_back_does_not_postpone_the_refresh() {
        let docs = Arc::new(Docs::default());
        docs.set("pd", Ok(r#"{"pagerduty_webhook_secrets": ["whsec-1"]}"#));
        let start = Utc::now();
        let clock = Arc::new(VirtualClock::starting_at(start));
        let cache = SecretsCache::load(vec!["pd".into()], docs.clone(), clock, DEFAULT_TTL).await.unwrap();
        // A second cache whose clock is an hour behind the first load sees its state as stale.
        let behind = Arc::new(VirtualClock::starting_at(start - chrono::Duration::hours(1)));
        let cache2 = SecretsCache { clock: behind, ..Arc::into_inner(cache).unwrap() };
        docs.set("pd", Ok(r#"{"pagerduty_webhook_secrets": ["whsec-2"]}"#));
        assert_eq!(webhook(&cache2.current().await.1), ["whsec-2"]);
    }

    #[tokio::test]
    async fn load_fails_loudly_and_errors_never_carry_values() {
        let docs = Arc::new(Docs::default());
        docs.set("pd", Ok(r#"{"pagerduty_api_token": whsec-LEAK}"#));
        let err = SecretsCache::load(vec!["pd".into()], docs.clone(), clock(), DEFAULT_TTL).await.unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        assert!(!err.to_string().contains("LEAK"), "{err}");
        docs.set("pd", Ok(r#"{"pagerduty_webhook_secrets": "whsec-LEAK"}"#));
        let err = SecretsCache::load(vec!["pd".into()], docs.clone(), clock(), DEFAULT_TTL).await.unwrap_err();
        assert!(err.to_string().contains("pagerduty_webhook_secrets must be a list"), "{err}");
        assert!(!err.to_string().contains("LEAK"), "{err}");
        let err = SecretsCache::load(vec!["nope".into()], docs, clock(), DEFAULT_TTL).await.unwrap_err();
        assert_eq!(err.to_string(), "GetSecretValue nope: ResourceNotFoundException");
    }

    #[test]
    fn ids_and_ttl_from_the_environment() {
        let env = crate::config::env_map(&[
            ("SELFHEAL_SECRET_IDS", "arn:pd, arn:slack,,arn:pd"),
            ("SELFHEAL_SECRET_ID", "arn:old"),
        ]);
        let settings = Settings::from_sources(None, env).unwrap();
        assert_eq!(secret_ids(&settings), ["arn:pd", "arn:slack", "arn:old"]);
        let settings = Settings::from_sources(None, crate::config::env_map(&[])).unwrap();
        assert!(secret_ids(&settings).is_empty());
        assert_eq!(ttl(&settings), DEFAULT_TTL);
        let settings =
            Settings::from_sources(None, crate::config::env_map(&[("SELFHEAL_SECRETS_TTL_SECS", "60")])).unwrap();
        assert_eq!(ttl(&settings), Duration::from_secs(60));
        assert!(Settings::from_sources(None, crate::config::env_map(&[("SELFHEAL_SECRETS_TTL_SECS", "5m")])).is_err());
    }

    #[test]
    fn merging_keeps_each_integrations_keys_and_placeholders_are_unconfigured() {
        let pd = SecretString::from(crate::config::placeholder_json("pagerduty").unwrap());
        let slack = SecretString::from(
            r#"{"slack_bot_token": "xoxb-1", "slack_signing_secret": "", "placeholder": "x"}"#.to_string(),
        );
        let s = merge_documents(&[("pd", &pd), ("slack", &slack)]).unwrap();
        assert!(s.pagerduty_webhook_secrets.is_empty());
        assert!(s.pagerduty_api_token.is_none() && s.pagerduty_from_email.is_none());
        assert!(s.slack_signing_secret.is_none(), "an empty value is not a secret");
        assert_eq!(s.all_values(), ["xoxb-1"]);
    }

    #[tokio::test]
    async fn rebuilt_adapters_follow_the_secrets() {
        let docs = Arc::new(Docs::default());
        docs.set("slack", Ok(r#"{"slack_bot_token": "xoxb-1"}"#));
        let clock = clock();
        let cache = SecretsCache::load(vec!["slack".into()], docs.clone(), clock.clone(), DEFAULT_TTL).await.unwrap();
        let builds = Arc::new(AtomicUsize::new(0));
        let counter = builds.clone();
        let token: Rebuilt<str> = Rebuilt::new(SecretsHandle::cached(cache), move |s| {
            counter.fetch_add(1, Ordering::SeqCst);
            Arc::from(s.slack_bot_token.as_ref().map(|t| t.expose_secret().to_string()).unwrap_or_default())
        });
        assert_eq!(&*token.get().await, "xoxb-1");
        assert_eq!(&*token.get().await, "xoxb-1");
        assert_eq!(builds.load(Ordering::SeqCst), 1);
        docs.set("slack", Ok(r#"{"slack_bot_token": "xoxb-2"}"#));
        clock.sleep(DEFAULT_TTL).await;
        assert_eq!(&*token.get().await, "xoxb-2");
        assert_eq!(builds.load(Ordering::SeqCst), 2);
    }
}
