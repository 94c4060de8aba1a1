//! The signing verbs, `verify-signature` and `replay-webhook`, and where their secrets come from.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{Provider, operator};

/// Where a verb's signing secret comes from, in order: `--secret-file`, the deprecated
/// `--secret` (with a warning), the environment variable `env`. Secrets never need to be on
/// the command line, where every user of the machine can read them.
fn signing_secrets(file: Option<&Path>, flags: Vec<String>, env: &str) -> Result<Vec<String>, String> {
    let secrets = if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        warn_if_readable_by_others(path);
        text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect()
    } else if !flags.is_empty() {
        eprintln!(
            "selfheal: warning: --secret puts the secret in the process list and your shell history; \
             use --secret-file FILE or {env} instead"
        );
        flags
    } else {
        std::env::var(env)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    if secrets.is_empty() {
        return Err(format!("no signing secret: give --secret-file FILE or set {env}"));
    }
    Ok(secrets)
}

/// A secrets file others can read is a leak waiting to happen; say so (it still works).
fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
            eprintln!("selfheal: warning: {} is readable by other users; chmod 600 it", path.display());
        }
    }
}

pub(super) async fn replay_webhook(
    file: PathBuf,
    secret_file: Option<PathBuf>,
    secret: Option<String>,
    to: String,
    webhook_id: Option<String>,
    json: bool,
) -> Result<ExitCode, String> {
    let secrets = signing_secrets(secret_file.as_deref(), secret.into_iter().collect(), "SELFHEAL_WEBHOOK_SECRET")?;
    let [secret] = secrets.as_slice() else {
        return Err("replay-webhook signs with one secret; the source holds several".into());
    };
    let body = std::fs::read(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let signature = selfheal::signature::sign_pagerduty(secret.as_bytes(), &body);
    let id = webhook_id.unwrap_or_else(|| format!("replay-{}", uuid::Uuid::new_v4().simple()));
    let resp = reqwest::Client::new()
        .post(&to)
        .header("content-type", "application/json")
        .header("x-pagerduty-signature", signature)
        .header("x-webhook-id", &id)
        .body(body)
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| format!("POST {to} failed: {e}"))?;
    let status = resp.status().as_u16();
    // The endpoint's answer is outside text.
    let text = resp.text().await.unwrap_or_default();
    if json {
        let value = serde_json::json!({ "status": status, "body": text, "webhook_id": id, "url": to });
        crate::say!("{}", operator::term_json(&value, false));
    } else {
        crate::say!("{status} {}", operator::term_line(&text));
    }
    Ok(if (200..300).contains(&status) { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

pub(super) async fn verify_signature(
    provider: Provider,
    secret_file: Option<PathBuf>,
    secrets: Vec<String>,
    signature: String,
    timestamp: Option<String>,
    at: Option<i64>,
    json: bool,
) -> Result<ExitCode, String> {
    let env = match provider {
        Provider::Pagerduty => "SELFHEAL_WEBHOOK_SECRET",
        Provider::Slack => "SELFHEAL_SLACK_SIGNING_SECRET",
    };
    let secrets = signing_secrets(secret_file.as_deref(), secrets, env)?;
    let mut body = Vec::new();
    std::io::stdin().read_to_end(&mut body).map_err(|e| format!("cannot read body from stdin: {e}"))?;
    let result = match provider {
        Provider::Pagerduty => {
            if timestamp.is_some() || at.is_some() {
                return Err("--timestamp and --at apply to --provider slack only".into());
            }
            selfheal::signature::verify_pagerduty(&secrets, Some(&signature), &body)
        }
        Provider::Slack => {
            if secrets.len() != 1 {
                return Err("--provider slack takes exactly one secret".into());
            }
            let now = at.unwrap_or_else(|| chrono::Utc::now().timestamp());
            selfheal::signature::verify_slack(secrets[0].as_bytes(), timestamp.as_deref(), Some(&signature), &body, now)
        }
    };
    // The verdict is the verb's result, not an error: with --json it is printed either way,
    // and the human line on stderr stays as it is without --json.
    let reason = result.as_ref().err().map(ToString::to_string);
    if json {
        let provider = match provider {
            Provider::Pagerduty => "pagerduty",
            Provider::Slack => "slack",
        };
        let verdict = serde_json::json!({ "provider": provider, "valid": reason.is_none(), "reason": reason });
        crate::say!("{}", operator::term_json(&verdict, false));
    }
    match reason {
        None => {
            if !json {
                crate::say!("valid");
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(reason) => {
            eprintln!("invalid: {reason}");
            Ok(ExitCode::from(1))
        }
    }
}
