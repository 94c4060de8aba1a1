//! Errors at each boundary. Stage errors carry stable names that the state machine's Retry and
//! Catch clauses match on; Rust type names never reach Step Functions.

use crate::domain::InvalidValue;

/// Failure of a stage handler. The variant decides what the orchestrator does with it.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// Worth retrying (timeouts, 429/5xx after our own retries, store throttling).
    #[error("transient failure: {0}")]
    Transient(String),
    /// The stage's input is wrong; retrying with the same input cannot help.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// An upstream API refused the request (4xx other than 408/429); not retryable.
    #[error("upstream rejected the request: {0}")]
    UpstreamRejected(String),
    /// A referenced record does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A conditional write lost a race or the record changed underneath us.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The kill switch is on or a person took over: stop autonomous work.
    #[error("stopped: {0}")]
    Stopped(String),
    /// The investigator's note was already stored when the hypothesis wait began: the state
    /// machine skips the wait (no callback needed, so stage functions need no Step Functions
    /// permissions).
    #[error("the investigator's note arrived before the wait started")]
    NoteAlreadyArrived,
    /// Post-flight verification still fails; the state machine retries with back-off.
    #[error("service still failing: {0}")]
    StillFailing(String),
    /// A bug or broken invariant. The state machine sends it to Fail.
    #[error("internal error: {0}")]
    Internal(String),
}

impl StageError {
    /// The stable error name used in ASL `ErrorEquals` and in the local engine.
    pub fn error_name(&self) -> &'static str {
        match self {
            StageError::Transient(_) => "Transient",
            StageError::InvalidInput(_) => "InvalidInput",
            StageError::UpstreamRejected(_) => "UpstreamRejected",
            StageError::NotFound(_) => "NotFound",
            StageError::Conflict(_) => "Conflict",
            StageError::Stopped(_) => "Stopped",
            StageError::NoteAlreadyArrived => "NoteAlreadyArrived",
            StageError::StillFailing(_) => "StillFailing",
            StageError::Internal(_) => "Internal",
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, StageError::Transient(_) | StageError::Conflict(_))
    }
}

impl From<StageError> for lambda_runtime::Diagnostic {
    fn from(error: StageError) -> Self {
        lambda_runtime::Diagnostic { error_type: error.error_name().to_string(), error_message: error.to_string() }
    }
}

impl From<InvalidValue> for StageError {
    fn from(e: InvalidValue) -> Self {
        StageError::InvalidInput(e.to_string())
    }
}

/// Failure of an [`IncidentStore`](crate::ports::IncidentStore) call.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Throttled, timed out, connection failed: retry later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Optimistic-concurrency check failed: reload and retry.
    #[error("store version conflict on {0}")]
    VersionConflict(String),
    /// A stored item could not be decoded: a bug or manual tampering.
    #[error("corrupt store item {key}: {why}")]
    Corrupt { key: String, why: String },
    /// Table missing, permissions, bad configuration: not retryable.
    #[error("store misconfigured: {0}")]
    Misconfigured(String),
}

impl StoreError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::VersionConflict(_))
    }
}

impl From<StoreError> for StageError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => StageError::Transient(m),
            StoreError::VersionConflict(m) => StageError::Conflict(m),
            other => StageError::Internal(other.to_string()),
        }
    }
}

/// Failure of an [`Orchestrator`](crate::ports::Orchestrator) call.
#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    /// The execution name is taken by an execution with different input, or a closed one.
    #[error("execution already exists: {0}")]
    ExecutionAlreadyExists(String),
    /// The task was already completed, timed out, or its execution ended: "already decided".
    #[error("task already closed")]
    TaskClosed,
    /// The token is not a token we issued.
    #[error("invalid task token")]
    InvalidToken,
    #[error("execution not found: {0}")]
    ExecutionNotFound(String),
    #[error("orchestrator unavailable: {0}")]
    Unavailable(String),
    #[error("orchestrator rejected the request: {0}")]
    Rejected(String),
}

impl From<OrchestratorError> for StageError {
    fn from(e: OrchestratorError) -> Self {
        match e {
            OrchestratorError::Unavailable(m) => StageError::Transient(m),
            OrchestratorError::ExecutionNotFound(m) => StageError::NotFound(m),
            OrchestratorError::TaskClosed => StageError::Conflict("task already closed".into()),
            other => StageError::UpstreamRejected(other.to_string()),
        }
    }
}

/// Failure of an HTTP call to a SaaS API, after the client's own bounded retries.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{service}: request timed out")]
    Timeout { service: &'static str },
    #[error("{service}: connection failed: {detail}")]
    Connect { service: &'static str, detail: String },
    /// Non-success HTTP status. `retryable` reflects the status and the API's own hints.
    #[error("{service}: HTTP {status}: {message}")]
    Status { service: &'static str, status: u16, message: String, retryable: bool },
    /// The API answered 2xx with a body that does not match its contract.
    #[error("{service}: unexpected response: {detail}")]
    Contract { service: &'static str, detail: String },
    /// A request we refused to send (bad configuration, invalid argument).
    #[error("{service}: {detail}")]
    Invalid { service: &'static str, detail: String },
    /// A long-running operation on the remote side (a Coder build) that did not reach the state
    /// we wait for: still running when our own deadline came (`retryable`: ask again later), or
    /// ended in a state a retry here will not change.
    #[error("{service}: {detail}")]
    Lifecycle { service: &'static str, detail: String, retryable: bool },
}

impl ClientError {
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Timeout { .. } | ClientError::Connect { .. } => true,
            ClientError::Status { retryable, .. } | ClientError::Lifecycle { retryable, .. } => *retryable,
            ClientError::Contract { .. } | ClientError::Invalid { .. } => false,
        }
    }
}

impl From<ClientError> for StageError {
    fn from(e: ClientError) -> Self {
        if e.is_retryable() {
            StageError::Transient(e.to_string())
        } else if let ClientError::Status { status: 404, .. } = e {
            StageError::NotFound(e.to_string())
        } else {
            StageError::UpstreamRejected(e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnostics_use_stable_names() {
        let cases = [
            (StageError::Transient("x".into()), "Transient"),
            (StageError::InvalidInput("x".into()), "InvalidInput"),
            (StageError::UpstreamRejected("x".into()), "UpstreamRejected"),
            (StageError::NotFound("x".into()), "NotFound"),
            (StageError::Conflict("x".into()), "Conflict"),
            (StageError::Stopped("x".into()), "Stopped"),
            (StageError::NoteAlreadyArrived, "NoteAlreadyArrived"),
            (StageError::StillFailing("x".into()), "StillFailing"),
            (StageError::Internal("x".into()), "Internal"),
        ];
        for (err, name) in cases {
            let d: lambda_runtime::Diagnostic = err.into();
            assert_eq!(d.error_type, name);
            assert!(!d.error_type.contains("::"));
        }
    }

    #[test]
    fn client_errors_map_by_retryability() {
        let e = ClientError::Status { service: "senso", status: 503, message: "x".into(), retryable: true };
        assert_eq!(StageError::from(e).error_name(), "Transient");
        let e = ClientError::Status { service: "senso", status: 404, message: "x".into(), retryable: false };
        assert_eq!(StageError::from(e).error_name(), "NotFound");
        let e = ClientError::Status { service: "senso", status: 400, message: "x".into(), retryable: false };
        assert_eq!(StageError::from(e).error_name(), "UpstreamRejected");
    }
}
