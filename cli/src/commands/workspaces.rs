//! `selfheal workspaces gc`.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{load_secrets, load_settings, operator, parse_duration};

pub(super) async fn gc(
    older_than: String,
    dry_run: bool,
    json: bool,
    config: Option<PathBuf>,
    secrets: Option<PathBuf>,
) -> Result<ExitCode, String> {
    let older_than = parse_duration(&older_than)?;
    let min = selfheal::stages::action::MIN_STALE_SECS;
    if older_than.num_seconds() < min {
        return Err(format!("--older-than must be at least {} h: a live remediation could be deleted", min / 3600));
    }
    let settings = load_settings(config.as_deref())?;
    let secrets = load_secrets(secrets.as_deref())?;
    let workspaces = selfheal::wiring::workspaces(&settings, &secrets);
    let report = selfheal::stages::action::clean_up_workspaces(
        workspaces.as_ref(),
        chrono::Utc::now(),
        older_than,
        dry_run,
        selfheal::stages::action::CLEANUP_DEADLINE,
    )
    .await
    .map_err(|e| e.to_string())?;
    if json {
        let value = serde_json::to_value(&report).map_err(|e| e.to_string())?;
        crate::say!("{}", operator::term_json(&value, false));
    } else {
        for w in &report.stale {
            let created = w.created_at.map_or_else(|| "unknown".to_string(), |t| t.to_rfc3339());
            crate::say!(
                "{}",
                operator::term_line(&format!("{}  {}  created {created}  {}  {}", w.name, w.id, w.state, w.result))
            );
        }
        crate::say!(
            "{} remediation workspaces seen, {} stale, {} deleted, {} failed{}{}",
            report.seen,
            report.stale.len(),
            report.deleted,
            report.failed,
            if dry_run { " (dry run)" } else { "" },
            if report.cut_short { "; stopped at the deadline, run again" } else { "" }
        );
    }
    Ok(if report.failed > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
