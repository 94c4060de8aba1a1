//! What people read: Slack Block Kit messages and PagerDuty notes. Bounded to Slack's limits
//! (section text ≤ 3000 chars, button text ≤ 75, value ≤ 2000) and never containing tokens.

use serde_json::{Value, json};

use crate::domain::*;
use crate::ports::ChatMessage;

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Text shown inside a Slack code block: backticks could close it early.
fn code(s: &str, max: usize) -> String {
    format!("```{}```", clip(&s.replace("```", "'''"), max))
}

fn section(text: String) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": clip(&text, 2900)}})
}

fn incident_line(i: &Incident) -> String {
    let title = clip(&i.title, 200);
    match &i.html_url {
        Some(url) => {
            format!("*<{url}|{title}>* · {} · #{}", i.service.name, i.number.map_or("?".into(), |n| n.to_string()))
        }
        None => format!("*{title}* · {}", i.service.name),
    }
}

fn hypothesis_line(i: &Incident) -> String {
    match &i.hypothesis {
        Some(h) => format!(
            "*Hypothesis* ({}): {}",
            h.confidence.map_or("confidence unknown".into(), |c| format!("{:.0}% confidence", c.value() * 100.0)),
            clip(&h.root_cause, 600)
        ),
        None => "*Hypothesis*: none yet".into(),
    }
}

fn runbook_line(i: &Incident) -> String {
    let sources: Vec<String> = i
        .runbooks
        .iter()
        .take(3)
        .map(|r| {
            format!("{} ({:.2})", r.runbook_id.as_ref().map_or(r.title.clone(), |id| id.to_string()), r.score.value())
        })
        .collect();
    format!(
        "*Runbook match*: {} — {}",
        i.match_score.map_or("n/a".into(), |m| format!("{:.2}", m.value())),
        if sources.is_empty() { "no runbook found".into() } else { sources.join(", ") }
    )
}

pub fn plan_lines(i: &Incident, script: Option<&str>) -> Vec<Value> {
    let mut blocks = Vec::new();
    if let Some(plan) = &i.plan {
        let what = match &plan.action {
            PlannedAction::Catalog { runbook_id, action, parameters } => {
                format!("catalog action `{runbook_id}/{action}` {parameters}")
            }
            PlannedAction::Script { language, .. } => format!("free-form {language} script (not from a runbook)"),
        };
        blocks.push(section(format!(
            "*Plan* ({} risk): {}\n*Expected*: {}\n*Rollback*: {}",
            match plan.risk {
                RiskLevel::Low => "low",
                RiskLevel::Medium => "medium",
                RiskLevel::High => "high",
            },
            clip(&what, 500),
            clip(&plan.expected_outcome, 300),
            clip(&plan.rollback, 300)
        )));
        if let Some(s) = script {
            blocks.push(section(format!(
                "*Script* (hash `{}`):\n{}",
                &plan.hash[..12.min(plan.hash.len())],
                code(s, 2500)
            )));
        }
        if !plan.risks.is_empty() {
            blocks.push(section(format!("*Risks*: {}", clip(&plan.risks.join("; "), 800))));
        }
    }
    blocks
}

fn decision_line(i: &Incident) -> String {
    match &i.decision {
        Some(d) => format!("*Policy*: `{}` → {} — {}", d.rule, d.route.as_str(), clip(&d.explanation, 500)),
        None => "*Policy*: no decision".into(),
    }
}

/// The approval request with Approve / Reject buttons carrying only the short approval id.
pub fn approval_request(i: &Incident, approval: &ApprovalId, script: Option<&str>) -> ChatMessage {
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": "Approval needed: selfheal fix"}}),
        section(incident_line(i)),
        section(hypothesis_line(i)),
        section(runbook_line(i)),
    ];
    blocks.extend(plan_lines(i, script));
    blocks.push(section(decision_line(i)));
    blocks.push(json!({
        "type": "actions",
        "block_id": format!("approval-{approval}"),
        "elements": [
            {"type": "button", "action_id": "approve", "style": "primary", "value": approval.as_str(),
             "text": {"type": "plain_text", "text": "Approve"}},
            {"type": "button", "action_id": "reject", "style": "danger", "value": approval.as_str(),
             "text": {"type": "plain_text", "text": "Reject"}}
        ]
    }));
    ChatMessage { text: format!("Approval needed for {}: {}", i.id, clip(&i.title, 200)), blocks: Value::Array(blocks) }
}

/// The approval message after a decision (buttons removed).
pub fn approval_decided(i: &Incident, status: ApprovalStatus, by: &str, at: &str) -> ChatMessage {
    let verb = match status {
        ApprovalStatus::Approved => "Approved",
        ApprovalStatus::Rejected => "Rejected",
        ApprovalStatus::Expired => "Expired",
        ApprovalStatus::Pending => "Pending",
    };
    let line = format!("{verb} by <@{by}> at {at}");
    let blocks = vec![
        section(incident_line(i)),
        section(hypothesis_line(i)),
        section(decision_line(i)),
        section(format!("*{line}*")),
    ];
    ChatMessage { text: format!("{line}: {}", clip(&i.title, 200)), blocks: Value::Array(blocks) }
}

/// A message that is just text (replies, degraded notices).
pub fn plain(text: &str) -> ChatMessage {
    ChatMessage { text: text.to_string(), blocks: json!([section(text.to_string())]) }
}

pub fn shadow_report(i: &Incident, script: Option<&str>) -> ChatMessage {
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": "Shadow mode: nothing was executed"}}),
        section(incident_line(i)),
        section(hypothesis_line(i)),
        section(runbook_line(i)),
    ];
    blocks.extend(plan_lines(i, script));
    blocks.push(section(decision_line(i)));
    ChatMessage { text: format!("Shadow mode report for {}", i.id), blocks: Value::Array(blocks) }
}

pub fn escalation(i: &Incident, reason: &str) -> ChatMessage {
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": "Escalated to a human"}}),
        section(incident_line(i)),
        section(format!("*Why*: {}", clip(reason, 800))),
        section(hypothesis_line(i)),
        section(runbook_line(i)),
    ];
    blocks.extend(plan_lines(i, None));
    if i.decision.is_some() {
        blocks.push(section(decision_line(i)));
    }
    blocks.push(section(verification_lines(i)));
    ChatMessage { text: format!("selfheal escalated {}: {}", i.id, clip(reason, 200)), blocks: Value::Array(blocks) }
}

fn verification_lines(i: &Incident) -> String {
    let mut out = Vec::new();
    for v in &i.verifications {
        let failing: Vec<String> = v
            .checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| format!("{} ({})", c.name, c.failing_step.clone().unwrap_or_default()))
            .collect();
        out.push(format!(
            "{:?}: {}{}",
            v.phase,
            if v.healthy { "healthy" } else { "failing" },
            if failing.is_empty() { String::new() } else { format!(" — {}", failing.join(", ")) }
        ));
    }
    if let Some(r) = &i.remediation {
        out.push(format!(
            "Workspace {}: {} ({}), {}",
            r.workspace_name,
            if r.succeeded { "fix ran" } else { "fix failed" },
            r.lifecycle_state,
            if r.deleted { "deleted" } else { "NOT deleted" }
        ));
    }
    if out.is_empty() { "*Checks*: none ran".into() } else { format!("*Checks*: {}", clip(&out.join("; "), 1500)) }
}

/// The PagerDuty note: plain text (PagerDuty renders notes as text).
pub fn pagerduty_summary(i: &Incident, headline: &str, trail: &[AuditEvent]) -> String {
    let mut out = vec![format!("[selfheal] {headline}"), String::new()];
    if let Some(h) = &i.hypothesis {
        out.push(format!(
            "Hypothesis: {} ({})",
            clip(&h.root_cause, 500),
            h.confidence.map_or("confidence unknown".into(), |c| format!("{:.0}%", c.value() * 100.0))
        ));
    }
    out.push(format!(
        "Runbooks: {}",
        i.runbooks
            .iter()
            .take(3)
            .map(|r| format!("{} ({:.2})", r.title, r.score.value()))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    if let Some(p) = &i.plan {
        let action = match &p.action {
            PlannedAction::Catalog { runbook_id, action, .. } => format!("{runbook_id}/{action}"),
            PlannedAction::Script { .. } => "free-form script".into(),
        };
        out.push(format!("Action: {action} (plan {})", &p.hash[..12.min(p.hash.len())]));
    }
    if let Some(d) = &i.decision {
        out.push(format!("Decision: {} by rule {} — {}", d.route.as_str(), d.rule, clip(&d.explanation, 300)));
    }
    if let Some(a) = &i.approval {
        out.push(format!(
            "Approval: {:?} by {}",
            a.status,
            a.decided_by.as_ref().map_or("nobody".to_string(), |u| u.to_string())
        ));
    }
    out.push(verification_lines(i).replace('*', ""));
    out.push(String::new());
    out.push("Timeline:".into());
    for e in trail.iter().take(60) {
        out.push(format!("{} {} {}", e.at.format("%H:%M:%S"), e.actor, e.kind));
    }
    out.join("\n")
}
