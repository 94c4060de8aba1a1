//! The confidence protocol: a pure function from what we know to a route, the rule that fired
//! and a one-line explanation. Rules are checked in order; the first that applies decides.
//!
//! | order | rule | route |
//! |---|---|---|
//! | 1 | `no_hypothesis`: no usable root cause | escalate |
//! | 2 | `confidence_too_low`: c < escalate_below_confidence (0.30) | escalate |
//! | 3 | `plan_rejected`: action outside the retrieved catalog or parameters fail their schema | escalate |
//! | 4 | `shadow_mode` | shadow |
//! | 5 | `kill_switch`: autonomous execution is switched off | approval |
//! | 6 | `free_form_script`: not a catalog action | approval |
//! | 7 | `high_risk`: the effective risk is high | approval |
//! | 8 | `denylist_tripwire`: the rendered script matched a destructive pattern | approval |
//! | 9 | `model_chosen_parameters`: a parameter's value is free text the model chose | approval |
//! | 10 | `fix_in_stability_window`: the same action fixed this service and its window is open | approval |
//! | 11 | `low_runbook_match`: m < low_match (0.50), including the seed rule c > 0.90 ∧ m < 0.50 | approval |
//! | 12 | `auto_high_confidence_catalog`: c > 0.90 ∧ m > 0.85, allowed service, budget left | auto |
//! | 13 | `service_not_allowed` / `budget_exhausted`: would be auto otherwise | approval |
//! | 14 | `between_thresholds` | approval |
//!
//! The effective risk is the higher of the risk the runbook declares for the action and the
//! model's own rating: the model can raise it, never lower it. Every explanation that depends
//! on the risk says which of the two ruled.
//!
//! Comparisons with the auto thresholds are strict (exactly 0.90 is not above 0.90); exactly
//! 0.50 is not below the low-match threshold.

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config::PolicySettings;
use crate::domain::{Decision, RiskLevel, Route};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanKind {
    Catalog,
    Script,
    /// The plan could not be validated (action outside the catalog, bad parameters).
    Invalid,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyInputs {
    /// Investigator confidence; None when the note had a root cause but no confidence.
    pub confidence: Option<f64>,
    pub has_root_cause: bool,
    pub match_score: f64,
    /// The effective risk: the higher of `declared_risk` and `model_risk`.
    pub risk: RiskLevel,
    /// What the runbook declares for the catalog action (none for a free-form script).
    #[serde(default)]
    pub declared_risk: Option<RiskLevel>,
    /// What the model said.
    #[serde(default)]
    pub model_risk: Option<RiskLevel>,
    pub plan_kind: PlanKind,
    /// Why the plan is invalid (for the explanation).
    pub plan_problem: Option<String>,
    pub service_allowed: bool,
    pub budget_left: bool,
    pub kill_switch: bool,
    pub shadow_mode: bool,
    /// Denylist patterns the rendered script matched (a tripwire, never the only defence).
    #[serde(default)]
    pub tripwires: Vec<String>,
    /// Parameters whose value is free text the model chose.
    #[serde(default)]
    pub model_chosen: Vec<String>,
    /// The incident an identical action fixed on this service whose stability window is still
    /// open.
    #[serde(default)]
    pub fix_in_window: Option<String>,
}

impl PolicyInputs {
    /// Which risk ruled, in words: "high (declared by the runbook; the model said low)".
    pub fn risk_ruling(&self) -> String {
        let r = risk_name(self.risk);
        match (self.declared_risk, self.model_risk) {
            (Some(d), Some(m)) if d == m => format!("{r} (declared by the runbook and the model's rating)"),
            (Some(d), Some(m)) if d > m => format!("{r} (declared by the runbook; the model said {})", risk_name(m)),
            (Some(d), Some(_)) => format!("{r} (the model's rating; the runbook declares {})", risk_name(d)),
            (Some(_), None) => format!("{r} (declared by the runbook)"),
            (None, _) => format!("{r} (the model's rating; a free-form script declares none)"),
        }
    }
}

fn decision(route: Route, rule: &str, explanation: String, inputs: &PolicyInputs) -> Decision {
    Decision { route, rule: rule.to_string(), explanation, inputs: json!(inputs) }
}

pub fn decide(policy: &PolicySettings, i: &PolicyInputs) -> Decision {
    let c = i.confidence.unwrap_or(0.0);
    let m = i.match_score;
    if !i.has_root_cause {
        return decision(Route::Escalate, "no_hypothesis", "The investigator gave no usable root cause.".into(), i);
    }
    if c < policy.escalate_below_confidence {
        return decision(
            Route::Escalate,
            "confidence_too_low",
            format!(
                "Investigator confidence {} is below {:.2}: a person should look.",
                fmt_conf(i.confidence),
                policy.escalate_below_confidence
            ),
            i,
        );
    }
    if i.plan_kind == PlanKind::Invalid {
        return decision(
            Route::Escalate,
            "plan_rejected",
            format!("The plan was rejected: {}.", i.plan_problem.as_deref().unwrap_or("it failed validation")),
            i,
        );
    }
    if i.shadow_mode {
        return decision(Route::Shadow, "shadow_mode", "Shadow mode: the plan is reported, nothing runs.".into(), i);
    }
    if i.kill_switch {
        return decision(Route::Approval, "kill_switch", "The kill switch is on: every fix needs a person.".into(), i);
    }
    if i.plan_kind == PlanKind::Script {
        return decision(
            Route::Approval,
            "free_form_script",
            "The plan is a free-form script, not a runbook action: a person must approve it.".into(),
            i,
        );
    }
    if i.risk == RiskLevel::High {
        return decision(
            Route::Approval,
            "high_risk",
            format!("The plan's risk is {}: a person must approve it.", i.risk_ruling()),
            i,
        );
    }
    if !i.tripwires.is_empty() {
        return decision(
            Route::Approval,
            "denylist_tripwire",
            format!("The script matched destructive patterns ({}): a person must approve it.", i.tripwires.join(", ")),
            i,
        );
    }
    if !i.model_chosen.is_empty() {
        return decision(
            Route::Approval,
            "model_chosen_parameters",
            format!(
                "The model chose the value of {} itself (free text the runbook does not fix): a person must confirm it.",
                i.model_chosen.join(", ")
            ),
            i,
        );
    }
    if let Some(earlier) = &i.fix_in_window {
        return decision(
            Route::Approval,
            "fix_in_stability_window",
            format!(
                "The same action fixed incident {earlier} on this service and its stability window is still open: \
                 running it again needs a person."
            ),
            i,
        );
    }
    if m < policy.low_match {
        return decision(
            Route::Approval,
            "low_runbook_match",
            format!("Runbook match {m:.2} is below {:.2}: the fix is not backed by a runbook.", policy.low_match),
            i,
        );
    }
    let confident = c > policy.auto_min_confidence && m > policy.auto_min_match;
    if confident && i.service_allowed && i.budget_left {
        return decision(
            Route::Auto,
            "auto_high_confidence_catalog",
            format!(
                "Confidence {c:.2} > {:.2} and runbook match {m:.2} > {:.2} for a runbook action of risk {}.",
                policy.auto_min_confidence,
                policy.auto_min_match,
                i.risk_ruling()
            ),
            i,
        );
    }
    if confident && !i.service_allowed {
        return decision(
            Route::Approval,
            "service_not_allowed",
            "The service is not on the auto-execution allowlist.".into(),
            i,
        );
    }
    if confident && !i.budget_left {
        return decision(
            Route::Approval,
            "budget_exhausted",
            format!(
                "The service used its {} autonomous actions this hour.",
                policy.autonomous_actions_per_service_per_hour
            ),
            i,
        );
    }
    decision(
        Route::Approval,
        "between_thresholds",
        format!(
            "Confidence {} and runbook match {m:.2} are not both above {:.2} / {:.2}.",
            fmt_conf(i.confidence),
            policy.auto_min_confidence,
            policy.auto_min_match
        ),
        i,
    )
}

fn fmt_conf(c: Option<f64>) -> String {
    c.map_or_else(|| "unknown".to_string(), |c| format!("{c:.2}"))
}

fn risk_name(r: RiskLevel) -> &'static str {
    match r {
        RiskLevel::Low => "low",
        RiskLevel::Medium => "medium",
        RiskLevel::High => "high",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(c: f64, m: f64) -> PolicyInputs {
        PolicyInputs {
            confidence: Some(c),
            has_root_cause: true,
            match_score: m,
            risk: RiskLevel::Low,
            declared_risk: Some(RiskLevel::Low),
            model_risk: Some(RiskLevel::Low),
            plan_kind: PlanKind::Catalog,
            plan_problem: None,
            service_allowed: true,
            budget_left: true,
            kill_switch: false,
            shadow_mode: false,
            tripwires: Vec::new(),
            model_chosen: Vec::new(),
            fix_in_window: None,
        }
    }

    fn route(i: &PolicyInputs) -> (Route, String) {
        let d = decide(&PolicySettings::default(), i);
        (d.route, d.rule)
    }

    #[test]
    fn threshold_table() {
        use Route::*;
        let cases: &[(f64, f64, Route, &str)] = &[
            (0.95, 0.90, Auto, "auto_high_confidence_catalog"),
            (0.90, 0.90, Approval, "between_thresholds"), // exactly 0.90 is not above
            (0.9000001, 0.90, Auto, "auto_high_confidence_catalog"),
            (0.95, 0.85, Approval, "between_thresholds"), // exactly 0.85 is not above
            (0.95, 0.8500001, Auto, "auto_high_confidence_catalog"),
            (0.95, 0.50, Approval, "between_thresholds"), // exactly 0.50 is not below
            (0.95, 0.4999, Approval, "low_runbook_match"), // seed rule
            (0.70, 0.90, Approval, "between_thresholds"),
            (0.30, 0.90, Approval, "between_thresholds"), // exactly 0.30 is not below
            (0.2999, 0.90, Escalate, "confidence_too_low"),
            (0.0, 0.0, Escalate, "confidence_too_low"),
            (1.0, 1.0, Auto, "auto_high_confidence_catalog"),
        ];
        for (c, m, want, rule) in cases {
            let (got, got_rule) = route(&inputs(*c, *m));
            assert_eq!((got, got_rule.as_str()), (*want, *rule), "c={c} m={m}");
        }
    }

    #[test]
    fn gates_override_confidence() {
        let mut i = inputs(0.99, 0.99);
        i.plan_kind = PlanKind::Script;
        assert_eq!(route(&i), (Route::Approval, "free_form_script".into()));
        let mut i = inputs(0.99, 0.99);
        i.risk = RiskLevel::High;
        assert_eq!(route(&i), (Route::Approval, "high_risk".into()));
        let mut i = inputs(0.99, 0.99);
        i.risk = RiskLevel::Medium;
        assert_eq!(route(&i).0, Route::Auto);
        let mut i = inputs(0.99, 0.99);
        i.kill_switch = true;
        assert_eq!(route(&i), (Route::Approval, "kill_switch".into()));
        let mut i = inputs(0.99, 0.99);
        i.service_allowed = false;
        assert_eq!(route(&i), (Route::Approval, "service_not_allowed".into()));
        let mut i = inputs(0.99, 0.99);
        i.budget_left = false;
        assert_eq!(route(&i), (Route::Approval, "budget_exhausted".into()));
        let mut i = inputs(0.99, 0.99);
        i.tripwires = vec!["rm -rf".into()];
        assert_eq!(route(&i), (Route::Approval, "denylist_tripwire".into()));
        let mut i = inputs(0.99, 0.99);
        i.shadow_mode = true;
        assert_eq!(route(&i), (Route::Shadow, "shadow_mode".into()));
        let mut i = inputs(0.99, 0.99);
        i.plan_kind = PlanKind::Invalid;
        i.plan_problem = Some("action x.y is not in the catalog".into());
        let d = decide(&PolicySettings::default(), &i);
        assert_eq!((d.route, d.rule.as_str()), (Route::Escalate, "plan_rejected"));
        assert!(d.explanation.contains("x.y"));
        let mut i = inputs(0.99, 0.99);
        i.has_root_cause = false;
        assert_eq!(route(&i), (Route::Escalate, "no_hypothesis".into()));
        let mut i = inputs(0.99, 0.99);
        i.confidence = None;
        assert_eq!(route(&i).0, Route::Escalate);
    }

    #[test]
    fn the_declared_risk_is_a_floor_and_the_explanation_says_which_ruled() {
        // The runbook says high, the model says low: high rules.
        let mut i = inputs(0.99, 0.99);
        (i.declared_risk, i.model_risk, i.risk) = (Some(RiskLevel::High), Some(RiskLevel::Low), RiskLevel::High);
        let d = decide(&PolicySettings::default(), &i);
        assert_eq!((d.route, d.rule.as_str()), (Route::Approval, "high_risk"));
        assert!(d.explanation.contains("declared by the runbook; the model said low"), "{}", d.explanation);
        // The model raises it: its rating rules.
        (i.declared_risk, i.model_risk) = (Some(RiskLevel::Low), Some(RiskLevel::High));
        let d = decide(&PolicySettings::default(), &i);
        assert!(d.explanation.contains("the model's rating; the runbook declares low"), "{}", d.explanation);
        // An auto decision says which risk it saw.
        let mut i = inputs(0.99, 0.99);
        (i.declared_risk, i.model_risk, i.risk) = (Some(RiskLevel::Medium), Some(RiskLevel::Low), RiskLevel::Medium);
        let d = decide(&PolicySettings::default(), &i);
        assert_eq!(d.route, Route::Auto);
        assert!(d.explanation.contains("medium (declared by the runbook; the model said low)"), "{}", d.explanation);
    }

    #[test]
    fn model_chosen_values_and_an_open_window_need_a_person() {
        let mut i = inputs(0.99, 0.99);
        i.model_chosen = vec!["pid".into()];
        let d = decide(&PolicySettings::default(), &i);
        assert_eq!((d.route, d.rule.as_str()), (Route::Approval, "model_chosen_parameters"));
        assert!(d.explanation.contains("pid"));
        let mut i = inputs(0.99, 0.99);
        i.fix_in_window = Some("QEARLIER".into());
        let d = decide(&PolicySettings::default(), &i);
        assert_eq!((d.route, d.rule.as_str()), (Route::Approval, "fix_in_stability_window"));
        assert!(d.explanation.contains("QEARLIER"));
    }

    #[test]
    fn thresholds_are_configurable_and_recorded() {
        let policy = PolicySettings { auto_min_confidence: 0.5, auto_min_match: 0.5, ..Default::default() };
        let d = decide(&policy, &inputs(0.6, 0.6));
        assert_eq!(d.route, Route::Auto);
        assert_eq!(d.inputs["match_score"], 0.6);
    }
}
