//! `selfheal stats`: the figures the EMF metrics carry, computed from the store.

use serde_json::{Value, json};

use selfheal::domain::{IncidentId, Outcome};
use selfheal::engine::Engine;
use selfheal::ports::IncidentStore;

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

pub async fn collect(
    engine: &Engine,
    store: &dyn IncidentStore,
    since: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<Value, String> {
    let mut by_outcome = std::collections::BTreeMap::<String, u64>::new();
    let mut by_route = std::collections::BTreeMap::<String, u64>::new();
    let (mut ttr, mut approval_latency) = (Vec::new(), Vec::new());
    let (mut verification_failures, mut remediation_failures, mut total) = (0u64, 0u64, 0u64);
    for (name, _) in engine.list_executions().await.map_err(|e| e.to_string())? {
        let Some(raw) = name.strip_prefix("inc-").and_then(|n| n.strip_suffix("-incident")) else { continue };
        let Ok(id) = IncidentId::parse(raw) else { continue };
        let Some(inc) = store.get_incident(&id).await.map_err(|e| e.to_string())? else { continue };
        if since.is_some_and(|s| inc.created_at < s) {
            continue;
        }
        total += 1;
        let outcome = inc.outcome.map_or("open".to_string(), |o| {
            serde_json::to_value(o).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
        });
        *by_outcome.entry(outcome).or_default() += 1;
        if let Some(d) = &inc.decision {
            *by_route.entry(d.route.as_str().to_string()).or_default() += 1;
        }
        if let (Some(Outcome::Resolved), Some(r)) = (inc.outcome, inc.resolved_at) {
            ttr.push((r - inc.created_at).num_milliseconds() as f64 / 1000.0);
        }
        verification_failures += inc
            .verifications
            .iter()
            .filter(|v| !v.healthy && v.phase == selfheal::domain::VerificationPhase::Postflight)
            .count() as u64;
        remediation_failures += u64::from(inc.remediation.as_ref().is_some_and(|r| !r.succeeded));
        let trail = store.audit_trail(&id).await.map_err(|e| e.to_string())?;
        let asked = trail.iter().find(|e| e.kind == "approval_requested").map(|e| e.at);
        let decided = trail.iter().find(|e| e.kind == "approval_decided").map(|e| e.at);
        if let (Some(a), Some(d)) = (asked, decided) {
            approval_latency.push((d - a).num_milliseconds() as f64 / 1000.0);
        }
    }
    Ok(json!({
        "incidents": total,
        "by_outcome": by_outcome,
        "by_route": by_route,
        "time_to_resolve_seconds": {"median": median(ttr.clone()), "count": ttr.len()},
        "approval_latency_seconds": {"median": median(approval_latency.clone()), "count": approval_latency.len()},
        "postflight_verification_failures": verification_failures,
        "remediation_failures": remediation_failures,
    }))
}
