//! Orient and decide: the investigator's hypothesis, runbooks from the knowledge base, Claude's
//! plan, and the confidence protocol.

use serde_json::{Value, json};

use super::{Deps, audit, audit_decision, load, update};
use crate::domain::*;
use crate::error::StageError;
use crate::policy::{self, PlanKind, PolicyInputs};
use crate::ports::{CatalogAction, HandOff, PlanRequest, SearchHit};
use crate::runbooks;

/// Store the wait token; if the note is already there, skip the wait (the state machine catches
/// `NoteAlreadyArrived` and goes straight to parsing, so this function needs no Step Functions
/// permission).
pub async fn await_hypothesis(deps: &Deps, id: &IncidentId, payload: &Value) -> Result<Value, StageError> {
    let incident = load(deps, id).await?;
    super::ensure_autonomy_allowed(&incident)?;
    let token = super::task_token(payload)?;
    let timeout = deps.settings.timeouts.hypothesis_secs as i64;
    let expires = deps.clock.now() + chrono::Duration::seconds(timeout + 3600);
    match deps.store.offer_wait_token(id, &token, expires).await? {
        HandOff::Stored => {
            audit(deps, id, "cleric", "awaiting_hypothesis", json!({"timeout_secs": timeout})).await?;
            Ok(json!({"waiting": true}))
        }
        HandOff::NoteWaiting(_) | HandOff::AlreadyResumed => Err(StageError::NoteAlreadyArrived),
        HandOff::TokenWaiting(_) => Err(StageError::Internal("hand-off returned a token to the token writer".into())),
    }
}

pub async fn parse_hypothesis(deps: &Deps, id: &IncidentId) -> Result<Value, StageError> {
    let note = deps
        .store
        .investigator_note(id)
        .await?
        .ok_or_else(|| StageError::NotFound(format!("no investigator note for {id}")))?;
    let parsed = crate::notes::parse_note(&note.content);
    let confidence = parsed.confidence.and_then(|c| Confidence::parse(c).ok());
    let hypothesis = parsed.root_cause.clone().map(|root_cause| Hypothesis {
        root_cause,
        confidence,
        evidence: parsed.evidence.clone(),
        alternatives: parsed.alternatives.clone(),
        services: parsed.services.clone(),
    });
    let usable = hypothesis.is_some();
    update(deps, id, |i| {
        i.hypothesis = hypothesis.clone();
        i.stage = "parse_hypothesis".into();
        Ok(())
    })
    .await?;
    audit(deps, id, "cleric", "hypothesis_parsed", json!({"note_id": note.note_id, "parsed": parsed})).await?;
    Ok(json!({"usable": usable, "confidence": confidence.map(Confidence::value)}))
}

/// The runbook id a hit belongs to: the title prefix (`<id>: <title>`, as `runbooks push`
/// ingests it) or a `runbook-id:` line in the chunk.
pub fn runbook_of(hit: &SearchHit) -> Option<RunbookId> {
    if let Some((prefix, _)) = hit.title.split_once(": ")
        && let Ok(id) = RunbookId::parse(prefix.trim())
    {
        return Some(id);
    }
    hit.chunk_text
        .lines()
        .find_map(|l| l.trim().strip_prefix("runbook-id:"))
        .and_then(|v| RunbookId::parse(v.trim()).ok())
}

/// Runbook match `m`: the best knowledge-base score among hits that belong to a runbook in
/// our catalog, discounted by 0.75 for every recorded ineffective outcome of that runbook's
/// actions (a fix that did not hold is trusted less next time).
pub fn match_score(scored: &[(f64, u32)]) -> f64 {
    scored
        .iter()
        .map(|(score, ineffective)| score * 0.75f64.powi(*ineffective as i32))
        .fold(0.0, f64::max)
        .clamp(0.0, 1.0)
}

pub async fn lookup_runbooks(deps: &Deps, id: &IncidentId) -> Result<Value, StageError> {
    let incident = load(deps, id).await?;
    let hypothesis =
        incident.hypothesis.clone().ok_or_else(|| StageError::InvalidInput("no hypothesis to look up".into()))?;
    let mut query = format!("{} (service: {})", hypothesis.root_cause, incident.service.name);
    for e in hypothesis.evidence.iter().take(2) {
        query.push_str("; ");
        query.push_str(e);
    }
    let query: String = query.chars().take(1000).collect();
    let results = deps.kb.search(&query, 5).await?;
    let mut matches = Vec::new();
    let mut scored = Vec::new();
    for hit in &results.hits {
        let runbook_id = runbook_of(hit);
        if let Some(rb) = &runbook_id {
            let actions = deps.store.catalog_actions(rb).await?;
            if !actions.is_empty() {
                scored.push((hit.score, actions.iter().map(|a| a.ineffective_count).sum::<u32>()));
            }
        }
        matches.push(RunbookMatch {
            runbook_id,
            title: hit.title.chars().take(200).collect(),
            content_id: Some(hit.content_id.clone()).filter(|c| !c.is_empty()),
            score: Confidence::clamped(hit.score),
            excerpt: hit.chunk_text.chars().take(4000).collect(),
        });
    }
    let m = match_score(&scored);
    update(deps, id, |i| {
        i.runbooks = matches.clone();
        i.match_score = Some(Confidence::clamped(m));
        i.stage = "lookup_runbooks".into();
        Ok(())
    })
    .await?;
    let sources: Vec<_> =
        matches.iter().map(|r| json!({"runbook": r.runbook_id, "title": r.title, "score": r.score})).collect();
    audit(deps, id, "senso", "runbooks_matched", json!({"match_score": m, "sources": sources})).await?;
    Ok(json!({"match_score": m, "runbooks": matches.len()}))
}

/// The catalog actions of the retrieved runbooks (the only actions the planner may pick).
pub async fn retrieved_catalog(deps: &Deps, incident: &Incident) -> Result<Vec<CatalogAction>, StageError> {
    let mut ids: Vec<RunbookId> = incident.runbooks.iter().filter_map(|r| r.runbook_id.clone()).collect();
    ids.sort();
    ids.dedup();
    let mut catalog = Vec::new();
    for rb in ids {
        catalog.extend(deps.store.catalog_actions(&rb).await?);
    }
    Ok(catalog)
}

/// Check a plan against the retrieved catalog: the action must be one of it and its parameters
/// must pass their schema. Returns the problem, if any.
pub fn validate_plan(plan: &Plan, catalog: &[CatalogAction]) -> Option<String> {
    match &plan.action {
        PlannedAction::Script { body, .. } => {
            if body.trim().is_empty() {
                Some("the script is empty".into())
            } else {
                None
            }
        }
        PlannedAction::Catalog { runbook_id, action, parameters } => {
            match catalog.iter().find(|a| a.runbook_id == *runbook_id && a.name == *action) {
                None => Some(format!("action {runbook_id}/{action} is not in the retrieved runbooks' catalog")),
                Some(a) => {
                    runbooks::validate_parameters(a, parameters).err().map(|e| format!("parameters of {action}: {e}"))
                }
            }
        }
    }
}

pub async fn plan_remediation(deps: &Deps, id: &IncidentId) -> Result<Value, StageError> {
    let incident = load(deps, id).await?;
    super::ensure_autonomy_allowed(&incident)?;
    let hypothesis =
        incident.hypothesis.clone().ok_or_else(|| StageError::InvalidInput("no hypothesis to plan from".into()))?;
    let catalog = retrieved_catalog(deps, &incident).await?;
    let request = PlanRequest {
        incident_title: incident.title.clone(),
        service: incident.service.name.to_string(),
        hypothesis,
        runbooks: incident.runbooks.clone(),
        catalog: catalog.clone(),
    };
    let plan = deps.planner.plan(&request).await?;
    let problem = validate_plan(&plan, &catalog);
    update(deps, id, |i| {
        i.plan = Some(plan.clone());
        i.plan_problem = problem.clone();
        i.stage = "plan_remediation".into();
        Ok(())
    })
    .await?;
    let kind = match (&plan.action, &problem) {
        (_, Some(_)) => "invalid",
        (PlannedAction::Catalog { .. }, None) => "catalog",
        (PlannedAction::Script { .. }, None) => "script",
    };
    audit(
        deps,
        id,
        "planner",
        "plan_proposed",
        json!({"hash": plan.hash, "risk": plan.risk, "kind": kind, "action": plan.action, "problem": problem, "sources": plan.runbook_sources}),
    )
    .await?;
    Ok(json!({"plan_hash": plan.hash, "risk": plan.risk, "kind": kind}))
}

/// The script a plan would run: rendered from the catalog template, or the free-form body.
pub fn script_of(plan: &Plan, catalog: &[CatalogAction]) -> Result<String, String> {
    match &plan.action {
        PlannedAction::Script { body, .. } => Ok(body.clone()),
        PlannedAction::Catalog { runbook_id, action, parameters } => {
            let a = catalog
                .iter()
                .find(|a| a.runbook_id == *runbook_id && a.name == *action)
                .ok_or_else(|| format!("{runbook_id}/{action} is not in the catalog"))?;
            runbooks::render_script(a, parameters)
        }
    }
}

/// The script the incident's plan would run, rendered against the retrieved catalog: `Ok(None)`
/// without a plan, `Ok(Some(Err(why)))` when it cannot be rendered.
pub async fn planned_script(deps: &Deps, incident: &Incident) -> Result<Option<Result<String, String>>, StageError> {
    let Some(plan) = &incident.plan else { return Ok(None) };
    let catalog = retrieved_catalog(deps, incident).await?;
    Ok(Some(script_of(plan, &catalog)))
}

/// The policy's `service_allowed` input: on the `policy.auto_services` list, or opted in by the
/// operator with `auto_execute = true` in the service's stored settings.
async fn service_allowed(deps: &Deps, incident: &Incident) -> Result<bool, StageError> {
    let listed = deps
        .settings
        .policy
        .auto_services
        .iter()
        .any(|s| s == incident.service.id.as_str() || s.eq_ignore_ascii_case(incident.service.name.as_str()));
    if listed {
        return Ok(true);
    }
    Ok(super::action::stored_settings(deps, incident).await?.is_some_and(|s| s.auto_execute))
}

pub async fn decide(deps: &Deps, id: &IncidentId) -> Result<Value, StageError> {
    let incident = load(deps, id).await?;
    super::ensure_autonomy_allowed(&incident)?;
    let plan = incident.plan.clone().ok_or_else(|| StageError::InvalidInput("no plan to decide on".into()))?;
    let tripwires = match planned_script(deps, &incident).await? {
        Some(Ok(script)) => runbooks::tripwires(&script),
        _ => Vec::new(),
    };
    let mut inputs = PolicyInputs {
        confidence: incident.hypothesis.as_ref().and_then(|h| h.confidence).map(Confidence::value),
        has_root_cause: incident.hypothesis.as_ref().is_some_and(|h| !h.root_cause.trim().is_empty()),
        match_score: incident.match_score.map_or(0.0, Confidence::value),
        risk: plan.risk,
        plan_kind: match (&plan.action, &incident.plan_problem) {
            (_, Some(_)) => PlanKind::Invalid,
            (PlannedAction::Catalog { .. }, None) => PlanKind::Catalog,
            (PlannedAction::Script { .. }, None) => PlanKind::Script,
        },
        plan_problem: incident.plan_problem.clone(),
        service_allowed: service_allowed(deps, &incident).await?,
        budget_left: true,
        kill_switch: deps.store.kill_switch().await?,
        shadow_mode: deps.settings.policy.shadow_mode,
        tripwires,
    };
    let mut decision = policy::decide(&deps.settings.policy, &inputs);
    if decision.route == Route::Auto {
        // Only an auto decision spends budget; the counter is a conditional write.
        let limit = deps.settings.policy.autonomous_actions_per_service_per_hour;
        if !deps.store.take_autonomy_budget(&incident.service.id, deps.clock.now(), limit).await? {
            inputs.budget_left = false;
            decision = policy::decide(&deps.settings.policy, &inputs);
        }
    }
    update(deps, id, |i| {
        i.decision = Some(decision.clone());
        i.stage = "decide".into();
        Ok(())
    })
    .await?;
    let inputs_value = json!(inputs);
    audit_decision(
        deps,
        id,
        "policy",
        "decision",
        json!({"route": decision.route, "rule": decision.rule, "explanation": decision.explanation, "inputs": inputs_value, "plan_hash": plan.hash}),
        &inputs_value,
    )
    .await?;
    Ok(json!({"route": decision.route.as_str(), "rule": decision.rule}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_score_discounts_ineffective_fixes() {
        assert_eq!(match_score(&[]), 0.0);
        assert_eq!(match_score(&[(0.9, 0), (0.5, 0)]), 0.9);
        assert!((match_score(&[(0.9, 1)]) - 0.675).abs() < 1e-9);
        assert_eq!(match_score(&[(0.9, 1), (0.8, 0)]), 0.8);
        assert_eq!(match_score(&[(1.5, 0)]), 1.0);
    }

    #[test]
    fn plans_are_checked_against_the_retrieved_catalog() {
        let rb = crate::runbooks::parse_runbook(
            "pg.md",
            "+++\nid = \"pg\"\ntitle = \"pg\"\n[[actions]]\nname = \"pg.cancel\"\ndescription = \"d\"\nscript = \"cancel {{pid}}\"\n[actions.parameters.pid]\ntype = \"integer\"\nminimum = 1\n+++\nbody",
        )
        .unwrap();
        let plan = |action: &str, params: serde_json::Value| {
            let action = PlannedAction::Catalog {
                runbook_id: RunbookId::parse("pg").unwrap(),
                action: ActionName::parse(action).unwrap(),
                parameters: params,
            };
            Plan {
                analysis: String::new(),
                runbook_sources: vec![],
                risks: vec![],
                risk: RiskLevel::Low,
                hash: Plan::action_hash(&action),
                action,
                rollback: String::new(),
                expected_outcome: String::new(),
                verification_hints: vec![],
            }
        };
        assert_eq!(validate_plan(&plan("pg.cancel", json!({"pid": 42})), &rb.actions), None);
        assert!(
            validate_plan(&plan("pg.drop_everything", json!({})), &rb.actions)
                .unwrap()
                .contains("not in the retrieved")
        );
        assert!(validate_plan(&plan("pg.cancel", json!({"pid": 0})), &rb.actions).unwrap().contains("range"));
        assert!(
            validate_plan(&plan("pg.cancel", json!({"pid": "1; rm -rf /"})), &rb.actions).unwrap().contains("integer")
        );
        assert!(validate_plan(&plan("pg.cancel", json!({})), &rb.actions).unwrap().contains("missing"));
        assert_eq!(script_of(&plan("pg.cancel", json!({"pid": 42})), &rb.actions).unwrap(), "cancel 42");
    }

    #[test]
    fn runbook_ids_from_titles_and_chunks() {
        let hit = |title: &str, chunk: &str| SearchHit {
            content_id: "c".into(),
            title: title.into(),
            score: 0.5,
            chunk_text: chunk.into(),
        };
        assert_eq!(runbook_of(&hit("redis-maxmemory: Redis full", "")).unwrap().as_str(), "redis-maxmemory");
        assert_eq!(runbook_of(&hit("Redis", "x\nrunbook-id: redis-maxmemory\n")).unwrap().as_str(), "redis-maxmemory");
        assert!(runbook_of(&hit("Some doc", "no id")).is_none());
    }

    #[tokio::test]
    async fn stored_auto_execute_allows_the_service() {
        use crate::stages::action::tests::{deps_with, settings_for};
        let (deps, _, id) = deps_with(&[]).await;
        let incident = load(&deps, &id).await.unwrap();
        assert!(!service_allowed(&deps, &incident).await.unwrap());
        deps.store.put_service_settings(&settings_for("checkout", "http://x.test/", false)).await.unwrap();
        assert!(!service_allowed(&deps, &incident).await.unwrap(), "settings alone do not opt in");
        deps.store.put_service_settings(&settings_for("PSVC1", "http://x.test/", true)).await.unwrap();
        assert!(service_allowed(&deps, &incident).await.unwrap());
    }
}
