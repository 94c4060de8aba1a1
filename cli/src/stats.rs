//! `selfheal stats`: the figures the EMF metrics carry, computed from the store.
//!
//! Locally the engine's execution index names every incident. On DynamoDB the incidents are
//! found with a table scan (an operator command may afford one; no stage ever needs it), and the
//! execution counts come from Step Functions only when a state machine ARN is known.

use serde_json::{Map, Value, json};
use std::collections::BTreeSet;

use selfheal::domain::{IncidentId, Outcome};
use selfheal::engine::Engine;
use selfheal::ports::IncidentStore;
use selfheal::store::{INCIDENT_PK_PREFIX, INCIDENT_SK};

type Since = Option<chrono::DateTime<chrono::Utc>>;

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

/// Figures over the incidents of the embedded store (found through the local engine's
/// executions).
pub async fn collect(engine: &Engine, store: &dyn IncidentStore, since: Since) -> Result<Value, String> {
    let mut ids = BTreeSet::new();
    for (name, _) in engine.list_executions().await.map_err(|e| e.to_string())? {
        let Some(raw) = name.strip_prefix("inc-").and_then(|n| n.strip_suffix("-incident")) else { continue };
        let Ok(id) = IncidentId::parse(raw) else { continue };
        ids.insert(id);
    }
    Ok(Value::Object(incident_figures(store, &ids, since).await?))
}

/// Figures over the incidents of a DynamoDB table, plus the execution counts of
/// `executions` (a Step Functions client and state machine ARN) when given. Without one the
/// output says the execution figures were left out, rather than printing zeros.
pub async fn collect_table(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
    store: &dyn IncidentStore,
    since: Since,
    executions: Option<(&aws_sdk_sfn::Client, &str)>,
) -> Result<Value, String> {
    let ids = scan_incident_ids(dynamodb, table).await?;
    let mut out = incident_figures(store, &ids, since).await?;
    out.insert("incidents_source".into(), json!(format!("DynamoDB table {table} (scan)")));
    match executions {
        Some((sfn, arn)) => {
            out.insert("executions".into(), execution_figures(sfn, arn, since).await?);
        }
        None => {
            out.insert("executions".into(), Value::Null);
            out.insert(
                "executions_note".into(),
                json!(
                    "execution figures left out: no state machine ARN is known (use --stack, or --state-machine-arn with --table)"
                ),
            );
        }
    }
    Ok(Value::Object(out))
}

/// Every incident id in the table: items `INC#<id>` / `META`. Paginated; strongly consistent
/// so an incident created a moment ago is counted.
async fn scan_incident_ids(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<BTreeSet<IncidentId>, String> {
    use aws_sdk_dynamodb::error::ProvideErrorMetadata;
    use aws_sdk_dynamodb::types::AttributeValue;
    let mut ids = BTreeSet::new();
    let mut start = None;
    loop {
        let page = client
            .scan()
            .table_name(table)
            .consistent_read(true)
            .projection_expression("pk")
            .filter_expression("sk = :meta AND begins_with(pk, :inc)")
            .expression_attribute_values(":meta", AttributeValue::S(INCIDENT_SK.into()))
            .expression_attribute_values(":inc", AttributeValue::S(INCIDENT_PK_PREFIX.into()))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "DynamoDB Scan {table}: {}: {}",
                    e.code().unwrap_or("request failed"),
                    e.message().unwrap_or("")
                )
            })?;
        for item in page.items() {
            let raw = item.get("pk").and_then(|v| v.as_s().ok()).and_then(|pk| pk.strip_prefix(INCIDENT_PK_PREFIX));
            // An item that does not parse is not an incident record; skip rather than fail the
            // whole report.
            if let Some(id) = raw.and_then(|r| IncidentId::parse(r).ok()) {
                ids.insert(id);
            }
        }
        match page.last_evaluated_key() {
            Some(key) if !key.is_empty() => start = Some(key.clone()),
            _ => break,
        }
    }
    Ok(ids)
}

/// Executions of the state machine by status (started within `since` when given).
async fn execution_figures(client: &aws_sdk_sfn::Client, arn: &str, since: Since) -> Result<Value, String> {
    use aws_sdk_sfn::error::ProvideErrorMetadata;
    let mut by_status = std::collections::BTreeMap::<String, u64>::new();
    let mut total = 0u64;
    let mut token = None;
    loop {
        let page = client
            .list_executions()
            .state_machine_arn(arn)
            .max_results(1000)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "Step Functions ListExecutions {arn}: {}: {}",
                    e.code().unwrap_or("request failed"),
                    e.message().unwrap_or("")
                )
            })?;
        for ex in page.executions() {
            if since.is_some_and(|s| ex.start_date().secs() < s.timestamp()) {
                continue;
            }
            total += 1;
            *by_status.entry(ex.status().as_str().to_ascii_lowercase()).or_default() += 1;
        }
        match page.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => break,
        }
    }
    Ok(json!({"state_machine_arn": arn, "total": total, "by_status": by_status}))
}

async fn incident_figures(
    store: &dyn IncidentStore,
    ids: &BTreeSet<IncidentId>,
    since: Since,
) -> Result<Map<String, Value>, String> {
    let mut by_outcome = std::collections::BTreeMap::<String, u64>::new();
    let mut by_route = std::collections::BTreeMap::<String, u64>::new();
    let (mut ttr, mut approval_latency) = (Vec::new(), Vec::new());
    let (mut verification_failures, mut remediation_failures, mut total) = (0u64, 0u64, 0u64);
    let mut escalated_by_reason = std::collections::BTreeMap::<String, u64>::new();
    let mut ineffective_by_runbook = std::collections::BTreeMap::<String, u64>::new();
    let mut approvals = std::collections::BTreeMap::<String, u64>::new();
    let (mut auto_executed, mut budget_exhausted) = (0u64, 0u64);
    for id in ids {
        let Some(inc) = store.get_incident(id).await.map_err(|e| e.to_string())? else { continue };
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
            budget_exhausted += u64::from(d.rule == "budget_exhausted");
            auto_executed += u64::from(d.route == selfheal::domain::Route::Auto && inc.remediation.is_some());
        }
        if let Some(a) = &inc.approval {
            let status = serde_json::to_value(a.status).ok().and_then(|v| v.as_str().map(str::to_string));
            *approvals.entry(status.unwrap_or_default()).or_default() += 1;
        }
        if inc.effectiveness == Some(selfheal::domain::Effectiveness::Ineffective) {
            let runbook = match inc.plan.as_ref().map(|p| &p.action) {
                Some(selfheal::domain::PlannedAction::Catalog { runbook_id, .. }) => runbook_id.to_string(),
                _ => "free-form script".to_string(),
            };
            *ineffective_by_runbook.entry(runbook).or_default() += 1;
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
        let trail = store.audit_trail(id).await.map_err(|e| e.to_string())?;
        if let Some(e) = trail.iter().rev().find(|e| e.kind == "escalated") {
            let code = e.detail["reason_code"].as_str().unwrap_or("unrecorded").to_string();
            *escalated_by_reason.entry(code).or_default() += 1;
        }
        let asked = trail.iter().find(|e| e.kind == "approval_requested").map(|e| e.at);
        let decided = trail.iter().find(|e| e.kind == "approval_decided").map(|e| e.at);
        if let (Some(a), Some(d)) = (asked, decided) {
            approval_latency.push((d - a).num_milliseconds() as f64 / 1000.0);
        }
    }
    let figures = json!({
        "incidents": total,
        "by_outcome": by_outcome,
        "by_route": by_route,
        "time_to_resolve_seconds": {"median": median(ttr.clone()), "count": ttr.len()},
        "approval_latency_seconds": {"median": median(approval_latency.clone()), "count": approval_latency.len()},
        "postflight_verification_failures": verification_failures,
        "remediation_failures": remediation_failures,
        "auto_executed": auto_executed,
        "approvals": approvals,
        "escalated_by_reason": escalated_by_reason,
        "ineffective_by_runbook": ineffective_by_runbook,
        "budget_exhausted": budget_exhausted,
    });
    match figures {
        Value::Object(map) => Ok(map),
        _ => Err("internal: figures are not an object".into()),
    }
}
