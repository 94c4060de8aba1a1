//! Orient and decide: the investigator's hypothesis, runbooks from the knowledge base, Claude's
//! plan, and the confidence protocol.

use serde_json::{Value, json};

use super::{Deps, audit, audit_decision, emit_metric, load, update};
use crate::domain::*;
use crate::error::StageError;
use crate::notes::{self, Checked, ParsedNote, Provenance};
use crate::policy::{self, PlanKind, PolicyInputs};
use crate::ports::{CatalogAction, HandOff, NoteReader, PlanRequest, SearchHit, SearchScope};
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

/// A note read by the rules and, where they found no root cause or no confidence, by the model
/// fallback, checked against the note.
#[derive(Debug, Clone)]
pub struct NoteRead {
    pub checked: Checked,
    /// What happened with the model: `{"asked": false}`, or what it answered and what was refused
    /// (for the audit trail; the note text itself is not repeated).
    pub model: Value,
}

/// The rules first; the model only for the fields they missed, and only when `model_fallback`.
/// A model that fails or is not configured leaves the rules' result as it is: the fallback can
/// add a field the note states, never block or change the rules' reading.
pub async fn read_note(reader: &dyn NoteReader, model_fallback: bool, content: &str) -> NoteRead {
    let rules = notes::parse_note(content);
    let unchanged = |rules: ParsedNote, model: Value| NoteRead {
        checked: Checked {
            provenance: Provenance {
                root_cause: rules.root_cause.as_ref().map(|_| notes::ParserKind::Rules),
                confidence: rules.confidence.map(|_| notes::ParserKind::Rules),
            },
            note: rules,
            refused: Vec::new(),
        },
        model,
    };
    if !model_fallback || !notes::needs_model(&rules) || content.trim().is_empty() {
        return unchanged(rules, json!({"asked": false}));
    }
    match reader.read_note(content).await {
        Ok(reading) => {
            let checked = notes::accept_model_reading(content, &rules, &reading, notes::DEFAULT_CONFIDENCE_WORDS);
            let model = json!({"asked": true, "answer": reading, "refused": checked.refused});
            NoteRead { checked, model }
        }
        Err(e) => unchanged(rules, json!({"asked": true, "error": e.to_string()})),
    }
}

pub async fn parse_hypothesis(deps: &Deps, id: &IncidentId) -> Result<Value, StageError> {
    let note = deps
        .store
        .investigator_note(id)
        .await?
        .ok_or_else(|| StageError::NotFound(format!("no investigator note for {id}")))?;
    let trail = deps.store.audit_trail(id).await?;
    let content = if was_trimmed(&trail, &note.note_id) {
        full_note(deps, id, &note.note_id).await?
    } else {
        note.content.clone()
    };
    let read = read_note(deps.note_reader.as_ref(), deps.settings.notes.model_fallback, &content).await;
    let parsed = read.checked.note.clone();
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
    // Which parser produced each field ("rules" or "model"), and what the model said.
    audit(
        deps,
        id,
        "cleric",
        "hypothesis_parsed",
        json!({"note_id": note.note_id, "parsed": parsed, "sources": read.checked.provenance, "model": read.model}),
    )
    .await?;
    Ok(json!({"usable": usable, "confidence": confidence.map(Confidence::value)}))
}

/// Whether intake handed this note off as PagerDuty trimmed it (its hand-off record says so).
fn was_trimmed(trail: &[AuditEvent], note_id: &NoteId) -> bool {
    trail
        .iter()
        .rev()
        .find(|e| e.kind == "hypothesis_received" && e.detail["note_id"] == note_id.as_str())
        .is_some_and(|e| e.detail["trimmed"] == true)
}

/// The full text of a note the webhook carried trimmed (`GET /incidents/{id}/notes`). Fetched
/// here rather than in intake, so a slow PagerDuty delays this step (retried by the state
/// machine) instead of the webhook's answer. A refusal (401/403: a bad or under-privileged token)
/// is not retried: the run escalates saying which credential to fix.
async fn full_note(deps: &Deps, id: &IncidentId, note_id: &NoteId) -> Result<String, StageError> {
    let notes = match deps.source.list_notes(id).await {
        Ok(notes) => notes,
        Err(e) => {
            let refused = matches!(e, crate::error::ClientError::Status { status: 401 | 403, .. });
            audit(deps, id, "cleric", "note_unavailable", json!({"note_id": note_id, "error": e.to_string()})).await?;
            return Err(if refused {
                StageError::UpstreamRejected(format!(
                    "PagerDuty refused to list the notes of {id}, so the investigator's note {note_id} (trimmed in \
                     its webhook) could not be read: {e}; check pagerduty_api_token and its access to this service"
                ))
            } else {
                e.into()
            });
        }
    };
    notes.into_iter().find(|n| n.id == *note_id).map(|n| n.content).ok_or_else(|| {
        // PagerDuty lists a note a moment after announcing it: worth the state machine's retries.
        StageError::Transient(format!("note {note_id} is not (yet) listed for {id}"))
    })
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

/// How many runbook hits a lookup keeps (and shows the planner).
const RUNBOOK_HITS: u32 = 5;

/// A past resolution (as `ingest_resolution` writes them), not a runbook: it must never stand
/// in for one, whatever folder it sits in.
pub fn is_resolution(hit: &SearchHit) -> bool {
    hit.title.starts_with("Resolution ")
        || hit.chunk_text.lines().next().is_some_and(|l| l.trim() == "type: incident-resolution")
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
    // Search the pushed runbooks' documents only. Without any recorded (a catalog pushed by an
    // older version), search everything but still never take a past resolution for a runbook.
    let documents = deps.store.runbook_documents().await?;
    let scope = SearchScope { content_ids: documents.iter().map(|d| d.content_id.clone()).collect() };
    let scoped = !scope.content_ids.is_empty();
    let results = deps.kb.search(&query, if scoped { RUNBOOK_HITS } else { 20 }, &scope).await?;
    let (resolutions, hits): (Vec<&SearchHit>, Vec<&SearchHit>) = results.hits.iter().partition(|h| is_resolution(h));
    let mut matches = Vec::new();
    let mut scored = Vec::new();
    for hit in hits.into_iter().take(RUNBOOK_HITS as usize) {
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
    let searched = if scoped {
        json!({"runbook_documents": scope.content_ids.len()})
    } else {
        json!("the whole knowledge base: no runbook documents are recorded (run `selfheal runbooks push`)")
    };
    audit(
        deps,
        id,
        "senso",
        "runbooks_matched",
        json!({"match_score": m, "sources": sources, "searched": searched, "resolutions_skipped": resolutions.len()}),
    )
    .await?;
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

/// What a plan would run, rendered from the catalog and the incident's context as they are now.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// The action with its resolved parameters (service and incident values filled in).
    pub action: PlannedAction,
    pub script: String,
    pub catalog_version: Option<String>,
    pub model_chosen: Vec<String>,
    /// The risk the runbook declares for the action (`None` for a free-form script).
    pub declared_risk: Option<RiskLevel>,
}

impl Prepared {
    pub fn hash(&self) -> String {
        Plan::binding_hash(&self.action, Some(&self.script), self.catalog_version.as_deref())
    }
}

/// Render what `action` would run: a catalog action must be one of `catalog` and its
/// parameters resolve from where the runbook declares; a free-form script is its body. The
/// one rendering: planning stores its result, the execution gate repeats it and compares.
/// `Err` is the problem, in words for the audit trail and the escalation.
pub fn prepare(
    action: &PlannedAction,
    catalog: &[CatalogAction],
    ctx: &runbooks::ParamContext<'_>,
) -> Result<Prepared, String> {
    match action {
        PlannedAction::Script { body, .. } => {
            if body.trim().is_empty() {
                return Err("the script is empty".into());
            }
            Ok(Prepared {
                action: action.clone(),
                script: body.clone(),
                catalog_version: None,
                model_chosen: Vec::new(),
                declared_risk: None,
            })
        }
        PlannedAction::Catalog { runbook_id, action: name, parameters } => {
            let a = catalog
                .iter()
                .find(|a| a.runbook_id == *runbook_id && a.name == *name)
                .ok_or_else(|| format!("action {runbook_id}/{name} is not in the retrieved runbooks' catalog"))?;
            let rendered =
                runbooks::resolve_and_render(a, parameters, ctx).map_err(|e| format!("parameters of {name}: {e}"))?;
            Ok(Prepared {
                action: PlannedAction::Catalog {
                    runbook_id: runbook_id.clone(),
                    action: name.clone(),
                    parameters: Value::Object(rendered.parameters),
                },
                script: rendered.script,
                catalog_version: Some(rendered.catalog_version),
                model_chosen: rendered.model_chosen,
                declared_risk: Some(a.risk),
            })
        }
    }
}

/// The service's `parameters` from its stored settings (empty without settings).
pub async fn service_parameters(
    deps: &Deps,
    incident: &Incident,
) -> Result<std::collections::BTreeMap<String, String>, StageError> {
    Ok(super::action::stored_settings(deps, incident).await?.map(|s| s.parameters).unwrap_or_default())
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
    let mut plan = deps.planner.plan(&request).await?;
    let proposed = plan.action.clone();
    let settings = service_parameters(deps, &incident).await?;
    let ctx = runbooks::ParamContext { incident: &incident, service_parameters: &settings };
    let problem = match prepare(&plan.action, &catalog, &ctx) {
        Ok(prepared) => {
            plan.action = prepared.action;
            plan.script = Some(prepared.script);
            plan.catalog_version = prepared.catalog_version;
            plan.model_chosen = prepared.model_chosen;
            None
        }
        Err(problem) => {
            plan.script = None;
            plan.catalog_version = None;
            plan.model_chosen = Vec::new();
            Some(problem)
        }
    };
    // Approvals bind this: the action, the exact script and the catalog version.
    plan.hash = Plan::binding_hash(&plan.action, plan.script.as_deref(), plan.catalog_version.as_deref());
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
        json!({
            "hash": plan.hash, "risk": plan.risk, "kind": kind, "proposed": proposed, "action": plan.action,
            "problem": problem, "sources": plan.runbook_sources, "catalog_version": plan.catalog_version,
            "script_sha256": plan.script.as_deref().map(|s| crate::sha256_hex(s.as_bytes())),
            "model_chosen": plan.model_chosen,
        }),
    )
    .await?;
    Ok(json!({"plan_hash": plan.hash, "risk": plan.risk, "kind": kind}))
}

/// The script the incident's plan would run, as planning rendered it: `Ok(None)` without a
/// plan, `Ok(Some(Err(why)))` when it could not be rendered.
pub async fn planned_script(_deps: &Deps, incident: &Incident) -> Result<Option<Result<String, String>>, StageError> {
    let Some(plan) = &incident.plan else { return Ok(None) };
    Ok(Some(
        plan.script
            .clone()
            .ok_or_else(|| incident.plan_problem.clone().unwrap_or_else(|| "the plan has no rendered script".into())),
    ))
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

/// The risk the runbook declares for the plan's catalog action, as the catalog holds it now.
async fn declared_risk(deps: &Deps, plan: &Plan) -> Result<Option<RiskLevel>, StageError> {
    match &plan.action {
        PlannedAction::Catalog { runbook_id, action, .. } => {
            Ok(deps.store.get_catalog_action(runbook_id, action).await?.map(|a| a.risk))
        }
        PlannedAction::Script { .. } => Ok(None),
    }
}

pub async fn decide(deps: &Deps, id: &IncidentId) -> Result<Value, StageError> {
    let incident = load(deps, id).await?;
    super::ensure_autonomy_allowed(&incident)?;
    // Its root cause is known: the same cause on the same service means an earlier fix inside
    // its stability window did not hold. (Here rather than at lookup: the planner function has
    // the time budget for the reads; the senso function does not.)
    super::closing::refire_by_fingerprint(deps, &incident).await?;
    let plan = incident.plan.clone().ok_or_else(|| StageError::InvalidInput("no plan to decide on".into()))?;
    let tripwires = plan.script.as_deref().map(runbooks::tripwires).unwrap_or_default();
    let declared = declared_risk(deps, &plan).await?;
    let mut inputs = PolicyInputs {
        confidence: incident.hypothesis.as_ref().and_then(|h| h.confidence).map(Confidence::value),
        has_root_cause: incident.hypothesis.as_ref().is_some_and(|h| !h.root_cause.trim().is_empty()),
        match_score: incident.match_score.map_or(0.0, Confidence::value),
        // The runbook's word is the floor: a model cannot talk an action down.
        risk: declared.map_or(plan.risk, |d| d.max(plan.risk)),
        declared_risk: declared,
        model_risk: Some(plan.risk),
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
        model_chosen: plan.model_chosen.clone(),
        fix_in_window: super::closing::same_fix_in_window(deps, &incident).await?.map(|i| i.to_string()),
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
    let mut counts = vec![("Decided", 1.0, "Count")];
    // The hourly budget stopped an auto-execution: a sign the service keeps failing.
    if decision.rule == "budget_exhausted" {
        counts.push(("BudgetExhausted", 1.0, "Count"));
    }
    emit_metric(incident.service.name.as_str(), &counts, &[("Route", decision.route.as_str())]);
    Ok(json!({"route": decision.route.as_str(), "rule": decision.rule}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ClientError;
    use crate::notes::{ModelReading, ParserKind};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A model that answers `reading` (or fails) and counts its calls.
    struct FakeReader(Option<ModelReading>, AtomicUsize);

    #[async_trait::async_trait]
    impl NoteReader for FakeReader {
        async fn read_note(&self, _: &str) -> Result<ModelReading, ClientError> {
            self.1.fetch_add(1, Ordering::SeqCst);
            self.0.clone().ok_or(ClientError::Invalid { service: "anthropic", detail: "down".into() })
        }
    }

    const PROSE: &str =
        "Checkout errors since 10:02.\nThe pool looks exhausted on checkout-db; I'm about 70% confident.";

    #[tokio::test]
    async fn the_note_fallback_fills_gaps_and_records_its_source() {
        let honest = ModelReading {
            root_cause: Some("pool looks exhausted on checkout-db".into()),
            confidence_text: Some("70%".into()),
            confidence: Some(0.7),
        };
        let reader = FakeReader(Some(honest.clone()), AtomicUsize::new(0));
        let read = read_note(&reader, true, PROSE).await;
        assert_eq!(read.checked.provenance.root_cause, Some(ParserKind::Model));
        assert_eq!(read.checked.provenance.confidence, Some(ParserKind::Model));
        assert_eq!(read.checked.note.confidence, Some(0.7));
        assert_eq!(read.model["asked"], true);

        // Off: never asked.
        let read = read_note(&reader, false, PROSE).await;
        assert_eq!((read.checked.note.root_cause, reader.1.load(Ordering::SeqCst)), (None, 1));

        // The rules found both: never asked, both "rules".
        let read = read_note(&reader, true, "Root cause: disk full on api-3\nConfidence: 60%").await;
        assert_eq!(reader.1.load(Ordering::SeqCst), 1);
        assert_eq!(read.checked.provenance.confidence, Some(ParserKind::Rules));

        // The rules found the root cause only: the model may add the confidence, not replace
        // the root cause.
        let note = "Root cause: disk full on api-3\nWe are 80% confident.";
        let other = ModelReading {
            root_cause: Some("api-3".into()),
            confidence_text: Some("80%".into()),
            confidence: Some(0.8),
        };
        let read = read_note(&FakeReader(Some(other), AtomicUsize::new(0)), true, note).await;
        assert_eq!(read.checked.note.root_cause.as_deref(), Some("disk full on api-3"));
        assert_eq!(read.checked.provenance.root_cause, Some(ParserKind::Rules));
        assert_eq!(read.checked.provenance.confidence, Some(ParserKind::Model));

        // A failing model leaves the rules' reading and says why.
        let read = read_note(&FakeReader(None, AtomicUsize::new(0)), true, PROSE).await;
        assert_eq!(read.checked.note.parser, ParserKind::Rules);
        assert!(read.model["error"].as_str().is_some_and(|e| e.contains("down")));
    }

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
            "+++\nid = \"pg\"\ntitle = \"pg\"\n[[actions]]\nname = \"pg.cancel\"\ndescription = \"d\"\nscript = \"cancel {{pid}}\"\n[actions.parameters.pid]\ntype = \"integer\"\nminimum = 1\nmaximum = 99999\nsource = \"model\"\n+++\nbody",
        )
        .unwrap();
        let action = |name: &str, params: serde_json::Value| PlannedAction::Catalog {
            runbook_id: RunbookId::parse("pg").unwrap(),
            action: ActionName::parse(name).unwrap(),
            parameters: params,
        };
        let incident = Incident::new(
            IncidentId::parse("QPREP1").unwrap(),
            "t".into(),
            ServiceRef { id: ServiceId::parse("PSVC1").unwrap(), name: ServiceName::parse("checkout").unwrap() },
            Urgency::High,
            chrono::Utc::now(),
        );
        let none = std::collections::BTreeMap::new();
        let ctx = runbooks::ParamContext { incident: &incident, service_parameters: &none };
        let ok = prepare(&action("pg.cancel", json!({"pid": 42})), &rb.actions, &ctx).unwrap();
        assert_eq!(ok.script, "cancel 42");
        assert_eq!(ok.model_chosen, vec!["pid".to_string()]);
        assert_eq!(ok.declared_risk, Some(RiskLevel::Medium));
        assert!(
            prepare(&action("pg.drop_everything", json!({})), &rb.actions, &ctx)
                .unwrap_err()
                .contains("not in the retrieved")
        );
        assert!(prepare(&action("pg.cancel", json!({"pid": 0})), &rb.actions, &ctx).unwrap_err().contains("range"));
        assert!(
            prepare(&action("pg.cancel", json!({"pid": "1; rm -rf /"})), &rb.actions, &ctx)
                .unwrap_err()
                .contains("integer")
        );
        assert!(prepare(&action("pg.cancel", json!({})), &rb.actions, &ctx).unwrap_err().contains("missing"));
        let script = PlannedAction::Script { language: "bash".into(), body: "echo hi".into() };
        assert_eq!(prepare(&script, &[], &ctx).unwrap().hash(), Plan::binding_hash(&script, Some("echo hi"), None));
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
