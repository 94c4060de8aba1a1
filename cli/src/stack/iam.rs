//! IAM for the emulated stack: which identity may call which action on which resource.
//! moto enforces the policies for DynamoDB and Secrets Manager itself; the Step Functions API
//! served by the local engine asks an [`Authorizer`] built from the same role policies.

use serde_json::Value;
use std::collections::BTreeMap;

/// Decides whether the caller (identified by the access key id of its SigV4 signature) may run
/// `action` (e.g. `states:StartExecution`) on `resource` (an ARN).
pub trait Authorizer: Send + Sync {
    fn allowed(&self, access_key_id: Option<&str>, action: &str, resource: &str) -> bool;
}

/// Lets everyone do everything (the plain local engine, tests of the API itself).
pub struct AllowAll;

impl Authorizer for AllowAll {
    fn allowed(&self, _: Option<&str>, _: &str, _: &str) -> bool {
        true
    }
}

/// One identity's policy statements (IAM JSON, already resolved: no intrinsics left).
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub name: String,
    pub statements: Vec<Value>,
}

/// Identity-based policies keyed by access key id; admin keys may do anything. Evaluation
/// follows IAM's order: an explicit Deny wins, then any Allow, else implicit deny.
#[derive(Debug, Default)]
pub struct Policies {
    pub by_access_key: BTreeMap<String, Identity>,
    pub admin_keys: Vec<String>,
}

impl Authorizer for Policies {
    fn allowed(&self, access_key_id: Option<&str>, action: &str, resource: &str) -> bool {
        let Some(key) = access_key_id else { return false };
        if self.admin_keys.iter().any(|k| k == key) {
            return true;
        }
        let Some(identity) = self.by_access_key.get(key) else { return false };
        evaluate(&identity.statements, action, resource)
    }
}

/// IAM evaluation of identity statements (no conditions are used by the template).
pub fn evaluate(statements: &[Value], action: &str, resource: &str) -> bool {
    let matching = |s: &Value| {
        list(s.get("Action")).iter().any(|a| glob(a, action, true))
            && list(s.get("Resource")).iter().any(|r| glob(r, resource, false))
    };
    fn effect(s: &Value) -> &str {
        s.get("Effect").and_then(Value::as_str).unwrap_or("")
    }
    if statements.iter().any(|s| effect(s) == "Deny" && matching(s)) {
        return false;
    }
    statements.iter().any(|s| effect(s) == "Allow" && matching(s))
}

fn list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

/// IAM wildcard match: `*` any run, `?` one character. Actions compare case-insensitively.
pub fn glob(pattern: &str, text: &str, case_insensitive: bool) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = if case_insensitive {
        (pattern.to_ascii_lowercase().chars().collect(), text.to_ascii_lowercase().chars().collect())
    } else {
        (pattern.chars().collect(), text.chars().collect())
    };
    let (mut pi, mut ti, mut star, mut mark) = (0usize, 0usize, None::<usize>, 0usize);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// The access key id in a SigV4 `Authorization` header (`… Credential=AKID/date/region/…`).
pub fn access_key_of(authorization: &str) -> Option<&str> {
    let start = authorization.find("Credential=")? + "Credential=".len();
    authorization[start..].split('/').next().filter(|k| !k.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn statements_allow_only_what_they_name() {
        let s = vec![
            json!({"Effect": "Allow", "Action": ["states:StartExecution"], "Resource": "arn:aws:states:us-east-1:123456789012:stateMachine:sm-*"}),
        ];
        assert!(evaluate(&s, "states:StartExecution", "arn:aws:states:us-east-1:123456789012:stateMachine:sm-1"));
        assert!(evaluate(&s, "States:startexecution", "arn:aws:states:us-east-1:123456789012:stateMachine:sm-1"));
        assert!(!evaluate(&s, "states:SendTaskSuccess", "arn:aws:states:us-east-1:123456789012:stateMachine:sm-1"));
        assert!(!evaluate(&s, "states:StartExecution", "arn:aws:states:us-east-1:123456789012:stateMachine:other"));
        let deny = vec![s[0].clone(), json!({"Effect": "Deny", "Action": "states:*", "Resource": "*"})];
        assert!(!evaluate(&deny, "states:StartExecution", "arn:aws:states:us-east-1:123456789012:stateMachine:sm-1"));
    }

    #[test]
    fn credential_scope_names_the_key() {
        let h = "AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/20261201/us-east-1/states/aws4_request, SignedHeaders=host, Signature=abc";
        assert_eq!(access_key_of(h), Some("AKIAEXAMPLE"));
        assert_eq!(access_key_of("Bearer x"), None);
    }
}
