//! Validated newtypes. Every constructor that takes outside data is `parse`, returns
//! `Result<_, InvalidValue>` and never panics.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A value from outside that failed validation. Carries what was wrong, never the value itself
/// (it may be a token or a secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: {why}")]
pub struct InvalidValue {
    pub what: &'static str,
    pub why: String,
}

impl InvalidValue {
    pub fn new(what: &'static str, why: impl Into<String>) -> Self {
        Self { what, why: why.into() }
    }
}

fn check_len(what: &'static str, s: &str, min: usize, max: usize) -> Result<(), InvalidValue> {
    let n = s.chars().count();
    if n < min || n > max {
        return Err(InvalidValue::new(what, format!("length {n} outside {min}..={max}")));
    }
    Ok(())
}

macro_rules! string_newtype {
    ($(#[$m:meta])* $name:ident, $what:literal, $validate:expr) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn parse(value: impl Into<String>) -> Result<Self, InvalidValue> {
                let value = value.into();
                let validate: fn(&str) -> Result<(), InvalidValue> = $validate;
                validate(&value)?;
                Ok(Self(value))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(s).map_err(serde::de::Error::custom)
            }
        }

        impl std::str::FromStr for $name {
            type Err = InvalidValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
    };
}

fn id_chars(what: &'static str, s: &str, max: usize) -> Result<(), InvalidValue> {
    check_len(what, s, 1, max)?;
    if !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(InvalidValue::new(what, "only ASCII letters, digits, '-' and '_' are allowed"));
    }
    Ok(())
}

fn printable(what: &'static str, s: &str, max: usize) -> Result<(), InvalidValue> {
    check_len(what, s, 1, max)?;
    if s.trim().is_empty() {
        return Err(InvalidValue::new(what, "blank"));
    }
    if s.chars().any(char::is_control) {
        return Err(InvalidValue::new(what, "contains control characters"));
    }
    Ok(())
}

string_newtype!(
    /// PagerDuty incident id (e.g. `Q2J7BKL3D5XKZ9`). Also the root of the execution name.
    IncidentId, "incident id", |s| id_chars("incident id", s, 64)
);
string_newtype!(
    /// Stable service key: the PagerDuty service id (names can be renamed, ids cannot).
    ServiceId, "service id", |s| id_chars("service id", s, 64)
);
string_newtype!(
    /// Human-readable service name (PagerDuty `service.summary`).
    ServiceName, "service name", |s| printable("service name", s, 255)
);
string_newtype!(
    /// `X-Webhook-Id` (same on every retry of one delivery) or the event id as a fallback.
    WebhookId, "webhook id", |s| {
        check_len("webhook id", s, 1, 256)?;
        if !s.chars().all(|c| c.is_ascii_graphic()) {
            return Err(InvalidValue::new("webhook id", "only visible ASCII is allowed"));
        }
        Ok(())
    }
);
string_newtype!(
    /// PagerDuty user id of a note author or approver (`P…`) or Slack user id (`U…`).
    UserId, "user id", |s| id_chars("user id", s, 64)
);
string_newtype!(
    /// PagerDuty note id.
    NoteId, "note id", |s| id_chars("note id", s, 64)
);
string_newtype!(
    /// Runbook id from the runbook front matter (`postgres-blocking-query`).
    RunbookId, "runbook id", |s| {
        id_chars("runbook id", s, 64)?;
        if s.starts_with(['-', '_']) {
            return Err(InvalidValue::new("runbook id", "must start with a letter or digit"));
        }
        Ok(())
    }
);
string_newtype!(
    /// Catalog action name (`postgres.terminate_backend`).
    ActionName, "action name", |s| {
        check_len("action name", s, 1, 64)?;
        if !s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.') {
            return Err(InvalidValue::new("action name", "only lowercase letters, digits, '_' and '.' are allowed"));
        }
        Ok(())
    }
);
string_newtype!(
    /// Short id that goes into Slack button values instead of the task token.
    ApprovalId, "approval id", |s| {
        check_len("approval id", s, 8, 32)?;
        if !s.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(InvalidValue::new("approval id", "only ASCII letters and digits are allowed"));
        }
        Ok(())
    }
);

/// Approval ids avoid look-alike characters (l/1, O/0) people might read out.
const APPROVAL_ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";

impl ApprovalId {
    /// The approval id of one plan of one incident: the same on every re-invocation of the
    /// approval step (so it is posted once), and an HMAC under a server secret so that it stays
    /// unguessable. 16 characters of the same alphabet as [`ApprovalId::generate`].
    pub fn for_plan(key: &[u8], incident: &IncidentId, plan_hash: &str) -> Self {
        use hmac::{Hmac, KeyInit, Mac};
        let mut mac = match Hmac::<sha2::Sha256>::new_from_slice(key) {
            Ok(mac) => mac,
            // HMAC takes keys of any length; this arm cannot be reached.
            Err(_) => return Self::generate(),
        };
        mac.update(format!("approval\n{incident}\n{plan_hash}").as_bytes());
        let digest = mac.finalize().into_bytes();
        Self(
            digest
                .iter()
                .take(16)
                .map(|b| APPROVAL_ALPHABET[usize::from(*b) % APPROVAL_ALPHABET.len()] as char)
                .collect(),
        )
    }

    /// A fresh random 16-character id (about 95 bits), unguessable enough for a button value
    /// that is also bound to a signed Slack request and an approver allowlist.
    pub fn generate() -> Self {
        use rand::Rng;
        let mut rng = rand::rng();
        Self((0..16).map(|_| APPROVAL_ALPHABET[rng.random_range(0..APPROVAL_ALPHABET.len())] as char).collect())
    }
}

/// A Step Functions task token (1..=2048 characters). Its Debug form is redacted: tokens grant
/// the power to resume an execution and must not reach logs.
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct TaskToken(String);

impl TaskToken {
    pub fn parse(value: impl Into<String>) -> Result<Self, InvalidValue> {
        let value = value.into();
        check_len("task token", &value, 1, 2048)?;
        if value.chars().any(char::is_control) {
            return Err(InvalidValue::new("task token", "contains control characters"));
        }
        Ok(Self(value))
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TaskToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskToken(<{} chars redacted>)", self.0.len())
    }
}

impl<'de> Deserialize<'de> for TaskToken {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(s).map_err(serde::de::Error::custom)
    }
}

/// A probability-like score in `0.0..=1.0` (investigator confidence, runbook match).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize)]
#[serde(transparent)]
pub struct Confidence(f64);

impl Confidence {
    pub fn parse(value: f64) -> Result<Self, InvalidValue> {
        if !value.is_finite() || !(0.0..=1.0).contains(&value) {
            return Err(InvalidValue::new("confidence", "must be a finite number in 0..=1"));
        }
        Ok(Self(value))
    }
    /// Clamp an arbitrary score into range (NaN becomes 0): for derived scores only.
    pub fn clamped(value: f64) -> Self {
        if value.is_nan() { Self(0.0) } else { Self(value.clamp(0.0, 1.0)) }
    }
    pub fn value(self) -> f64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Confidence {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = f64::deserialize(d)?;
        Self::parse(v).map_err(serde::de::Error::custom)
    }
}

/// Step Functions execution names: 1..=80 chars, no whitespace, brackets, wildcards or the
/// specials `" # % \ ^ | ~ $ & , ; : /` and backtick. We keep to `[A-Za-z0-9_-]`.
pub fn execution_name(incident: &IncidentId, kind: &str) -> String {
    let raw = format!("inc-{}-{}", incident.as_str(), kind);
    let cleaned: String =
        raw.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' }).collect();
    if cleaned.len() <= 80 {
        return cleaned;
    }
    // Too long: keep a readable prefix and make it unique with a hash of the full name.
    let digest = crate::sha256_hex(raw.as_bytes());
    format!("{}-{}", &cleaned[..80 - 17], &digest[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incident_id_rejects_bad_characters_and_lengths() {
        assert!(IncidentId::parse("Q2J7BKL3D5XKZ9").is_ok());
        assert!(IncidentId::parse("").is_err());
        assert!(IncidentId::parse("a b").is_err());
        assert!(IncidentId::parse("x".repeat(65)).is_err());
        assert!(IncidentId::parse("../etc").is_err());
    }

    #[test]
    fn task_token_bounds_and_redaction() {
        assert!(TaskToken::parse("").is_err());
        assert!(TaskToken::parse("t".repeat(2048)).is_ok());
        assert!(TaskToken::parse("t".repeat(2049)).is_err());
        let t = TaskToken::parse("super-secret-token").unwrap();
        assert!(!format!("{t:?}").contains("super-secret"));
    }

    #[test]
    fn confidence_range() {
        assert!(Confidence::parse(0.0).is_ok());
        assert!(Confidence::parse(1.0).is_ok());
        assert!(Confidence::parse(1.0001).is_err());
        assert!(Confidence::parse(-0.1).is_err());
        assert!(Confidence::parse(f64::NAN).is_err());
        assert!(serde_json::from_str::<Confidence>("1.5").is_err());
        assert_eq!(Confidence::clamped(f64::NAN).value(), 0.0);
    }

    #[test]
    fn approval_ids_are_valid_and_distinct() {
        let a = ApprovalId::generate();
        let b = ApprovalId::generate();
        assert_ne!(a, b);
        assert!(ApprovalId::parse(a.as_str()).is_ok());
        assert!(ApprovalId::parse("short").is_err());
    }

    #[test]
    fn plan_approval_ids_are_stable_per_plan_and_keyed() {
        let inc = IncidentId::parse("Q2J7BKL3D5XKZ9").unwrap();
        let a = ApprovalId::for_plan(b"signing-secret", &inc, "plan-1");
        assert_eq!(a, ApprovalId::for_plan(b"signing-secret", &inc, "plan-1"), "stable across re-runs");
        assert_ne!(a, ApprovalId::for_plan(b"signing-secret", &inc, "plan-2"), "another plan, another approval");
        assert_ne!(a, ApprovalId::for_plan(b"other-secret", &inc, "plan-1"), "not derivable without the key");
        assert!(ApprovalId::parse(a.as_str()).is_ok());
        assert_eq!(a.as_str().len(), 16);
    }

    #[test]
    fn execution_names_are_valid_and_bounded() {
        let id = IncidentId::parse("Q2J7BKL3D5XKZ9").unwrap();
        assert_eq!(execution_name(&id, "incident"), "inc-Q2J7BKL3D5XKZ9-incident");
        let long = IncidentId::parse("A".repeat(64)).unwrap();
        let name = execution_name(&long, "incident");
        assert!(name.len() <= 80);
        assert_ne!(name, execution_name(&IncidentId::parse("A".repeat(63)).unwrap(), "incident"));
    }

    #[test]
    fn deserialize_validates() {
        assert!(serde_json::from_str::<IncidentId>("\"ok-1\"").is_ok());
        assert!(serde_json::from_str::<IncidentId>("\"not ok\"").is_err());
        assert!(serde_json::from_str::<ActionName>("\"postgres.terminate_backend\"").is_ok());
        assert!(serde_json::from_str::<ActionName>("\"rm -rf\"").is_err());
    }
}
