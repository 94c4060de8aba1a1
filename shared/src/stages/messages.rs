//! What people read: Slack Block Kit messages and PagerDuty notes. Bounded to Slack's limits
//! (section text ≤ 3000 chars, button text ≤ 75, value ≤ 2000) and never containing tokens.
//!
//! Outside text (alert titles, service names, the investigator's note, runbook titles, the
//! model's prose and parameters) is data, escaped for the medium it reaches:
//! - Slack mrkdwn: `&`, `<` and `>` become entities (contracts.md §10), so nothing can open a
//!   link, a mention (`<!channel>`) or a look-alike button; short values are shown literally in
//!   a code span (newlines flattened, backticks replaced) so `*`, `_` and `~` format nothing;
//! - PagerDuty notes (plain text): control characters and newlines become spaces, so a value
//!   cannot forge the note's own lines.
//!
//! An approver sees the whole script that would run, byte for byte, with its hash: inline when
//! it fits a section, otherwise attached as a file. A script that cannot be shown faithfully
//! (invisible or direction-changing characters) cannot be approved.

use serde_json::{Value, json};

use super::Deps;
use crate::domain::*;
use crate::error::StageError;
use crate::ports::{ChatMessage, SharedFile};

/// Longest section text we build (Slack's limit is 3000).
const SECTION_MAX: usize = 2900;

pub fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Slack's escaping for mrkdwn text: the three characters it gives meaning to.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A value from outside shown literally on one line: in a code span (no bold, italics,
/// strike-through or links inside), with line breaks flattened and backticks replaced so it
/// cannot close the span, clipped, escaped.
pub fn literal(s: &str, max: usize) -> String {
    let flat: String = s
        .chars()
        .map(|c| match c {
            '`' => 'ˋ',
            c if c.is_control() || is_invisible(c) => ' ',
            c => c,
        })
        .collect();
    let flat = clip(flat.trim(), max);
    if flat.is_empty() { "`(empty)`".into() } else { format!("`{}`", escape(&flat)) }
}

/// Characters a reader cannot see or that reorder what they see (zero-width, bidi controls).
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{00AD}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

fn section(text: String) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": clip(&text, SECTION_MAX)}})
}

/// The PagerDuty web link of the incident, built from its validated id and the account host of
/// the link PagerDuty sent, when that host is PagerDuty's; otherwise no link.
pub fn incident_link(i: &Incident) -> Option<String> {
    let url = i.html_url.as_deref()?;
    let rest = url.strip_prefix("https://")?;
    let (host, path) = rest.split_once('/')?;
    let account = host.strip_suffix(".eu.pagerduty.com").or_else(|| host.strip_suffix(".pagerduty.com"))?;
    let account_ok = !account.is_empty()
        && account.len() <= 63
        && account.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !account_ok || path != format!("incidents/{}", i.id) {
        return None;
    }
    Some(format!("https://{host}/incidents/{}", i.id))
}

fn incident_line(i: &Incident) -> String {
    let label = i.number.map_or_else(|| i.id.to_string(), |n| format!("#{n}"));
    let head = match incident_link(i) {
        Some(url) => format!("*<{url}|{label}>*"),
        None => format!("*{label}* ({})", i.id),
    };
    format!("{head} · service {} · {}", literal(i.service.name.as_str(), 120), literal(&i.title, 300))
}

fn hypothesis_line(i: &Incident) -> String {
    match &i.hypothesis {
        Some(h) => format!(
            "*Hypothesis* ({}): {}",
            h.confidence.map_or("confidence unknown".into(), |c| format!("{:.0}% confidence", c.value() * 100.0)),
            literal(&h.root_cause, 600)
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
            let name = r.runbook_id.as_ref().map_or_else(|| literal(&r.title, 80), |id| format!("`{id}`"));
            format!("{name} ({:.2})", r.score.value())
        })
        .collect();
    format!(
        "*Runbook match*: {} — {}",
        i.match_score.map_or("n/a".into(), |m| format!("{:.2}", m.value())),
        if sources.is_empty() { "no runbook found".into() } else { sources.join(", ") }
    )
}

fn risk_name(r: RiskLevel) -> &'static str {
    match r {
        RiskLevel::Low => "low",
        RiskLevel::Medium => "medium",
        RiskLevel::High => "high",
    }
}

/// The action and its parameters, model-chosen values called out.
fn action_lines(plan: &Plan) -> Vec<String> {
    match &plan.action {
        PlannedAction::Catalog { runbook_id, action, parameters } => {
            let mut lines = vec![format!("*Action*: runbook action `{runbook_id}/{action}`")];
            let mut from_runbook = Vec::new();
            let mut from_model = Vec::new();
            if let Some(params) = parameters.as_object() {
                for (name, value) in params {
                    let shown = match value {
                        Value::String(s) => literal(s, 200),
                        other => literal(&other.to_string(), 200),
                    };
                    let entry = format!("{} = {shown}", literal(name, 64));
                    if plan.model_chosen.contains(name) { from_model.push(entry) } else { from_runbook.push(entry) }
                }
            }
            if !from_runbook.is_empty() {
                lines.push(format!("Parameters (runbook, service settings or incident): {}", from_runbook.join(", ")));
            }
            if !from_model.is_empty() {
                lines.push(format!(
                    ":warning: *Chosen by the model — free text nothing else fixed, check it*: {}",
                    from_model.join(", ")
                ));
            }
            lines
        }
        PlannedAction::Script { language, .. } => vec![format!(
            ":warning: *Action*: a free-form {} script written by the model, not a runbook action",
            literal(language, 20)
        )],
    }
}

pub fn plan_lines(i: &Incident) -> Vec<Value> {
    let mut blocks = Vec::new();
    if let Some(plan) = &i.plan {
        let mut lines = action_lines(plan);
        lines.push(format!("*Risk* (model's rating): {}", risk_name(plan.risk)));
        lines.push(format!("*Expected*: {}", literal(&plan.expected_outcome, 300)));
        lines.push(format!("*Rollback*: {}", literal(&plan.rollback, 300)));
        blocks.push(section(lines.join("\n")));
        if !plan.risks.is_empty() {
            let risks: Vec<String> = plan.risks.iter().take(5).map(|r| literal(r, 150)).collect();
            blocks.push(section(format!("*Risks*: {}", risks.join(" · "))));
        }
    }
    blocks
}

/// How the script is shown to the approver.
#[derive(Debug, Clone, PartialEq)]
pub enum ScriptShown {
    /// In the message, whole.
    Inline,
    /// Attached as a file in the channel, whole.
    File(SharedFile),
}

/// Why a script cannot be shown to a person as it would run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unshowable {
    #[error("the plan has no script to show")]
    NoScript,
    #[error(
        "the script contains {0} invisible or direction-changing characters (U+200B…, U+202E…), so what a person \
         reads would differ from what runs; it cannot be approved"
    )]
    Invisible(usize),
}

/// The script inside a code block, if it fits one section whole. `None` when it does not (too
/// long, or it contains ``` which would end the block early): then it goes as a file.
fn inline_script(script: &str) -> Option<String> {
    if script.contains("```") {
        return None;
    }
    // Slack decodes the entities inside code blocks too, so the reader sees the exact bytes.
    let block = format!("```\n{}\n```", escape(script));
    (block.chars().count() <= SECTION_MAX - 100).then_some(block)
}

/// Checks a script can be shown faithfully at all.
pub fn showable(script: &str) -> Result<(), Unshowable> {
    let hidden = script.chars().filter(|c| is_invisible(*c) || (c.is_control() && !matches!(c, '\n' | '\t'))).count();
    if hidden > 0 { Err(Unshowable::Invisible(hidden)) } else { Ok(()) }
}

/// The script's blocks, and whether they show the whole script.
fn script_blocks(plan: &Plan, shown: &ScriptShown) -> (Vec<Value>, bool) {
    let script = plan.script.as_deref().unwrap_or_default();
    let hash = crate::sha256_hex(script.as_bytes());
    let version =
        plan.catalog_version.as_deref().map_or(String::new(), |v| format!(", catalog version `{}`", clip(v, 12)));
    let head = format!(
        "*Script that will run* ({} lines, {} bytes, sha256 `{hash}`{version}; approving approves exactly this, plan `{}`):",
        script.lines().count(),
        script.len(),
        clip(&plan.hash, 16)
    );
    let whole = plan.script.is_some() && showable(script).is_ok();
    match shown {
        ScriptShown::Inline => match inline_script(script) {
            Some(block) if whole => (vec![section(head), section(block)], true),
            _ => (vec![section(head), section("The script cannot be shown here in full.".into())], false),
        },
        ScriptShown::File(f) => (
            vec![
                section(head),
                section(format!(
                    "The whole script is attached in this channel as file {} ({}): read it there before approving.",
                    literal(&f.id, 40),
                    literal(&f.title, 160)
                )),
            ],
            whole,
        ),
    }
}

fn decision_line(i: &Incident) -> String {
    match &i.decision {
        Some(d) => format!("*Policy*: `{}` → {} — {}", d.rule, d.route.as_str(), escape(&clip(&d.explanation, 600))),
        None => "*Policy*: no decision".into(),
    }
}

/// The approval request with Approve / Reject buttons carrying only the short approval id.
/// `shown` must hold the whole script (see [`approval_message`], which decides).
pub fn approval_request(i: &Incident, approval: &ApprovalId, shown: &ScriptShown) -> ChatMessage {
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": "Approval needed: selfheal fix"}}),
        section(incident_line(i)),
        section(hypothesis_line(i)),
        section(runbook_line(i)),
    ];
    blocks.extend(plan_lines(i));
    let (script, whole) = match &i.plan {
        Some(plan) => script_blocks(plan, shown),
        None => (Vec::new(), false),
    };
    blocks.extend(script);
    blocks.push(section(decision_line(i)));
    if !whole {
        // What a person cannot read in full, they cannot approve: no buttons.
        blocks.push(section("*This plan cannot be approved here*: its script could not be shown in full.".into()));
        return ChatMessage {
            text: format!("Plan for {} cannot be approved: its script could not be shown", i.id),
            blocks: Value::Array(blocks),
        };
    }
    blocks.push(json!({
        "type": "actions",
        "block_id": format!("approval-{approval}"),
        "elements": [
            {"type": "button", "action_id": "approve", "style": "primary", "value": approval.as_str(),
             "text": {"type": "plain_text", "text": "Approve"},
             // Approving changes production: Slack asks once more before sending the click.
             "confirm": {
                 "title": {"type": "plain_text", "text": "Run this fix?"},
                 "text": {"type": "mrkdwn", "text": confirm_text(i)},
                 "confirm": {"type": "plain_text", "text": "Approve and run"},
                 "deny": {"type": "plain_text", "text": "Cancel"},
                 "style": "primary"
             }},
            {"type": "button", "action_id": "reject", "style": "danger", "value": approval.as_str(),
             "text": {"type": "plain_text", "text": "Reject"}},
            // Rejects too, after a dialog that asks why (optional): the reason goes into the
            // audit trail and the PagerDuty note.
            {"type": "button", "action_id": REJECT_WITH_REASON, "value": approval.as_str(),
             "text": {"type": "plain_text", "text": "Reject with reason…"}}
        ]
    }));
    ChatMessage {
        text: format!("Approval needed for {}: {}", i.id, escape(&clip(&flat(&i.title), 200))),
        blocks: Value::Array(blocks),
    }
}

/// The approval request for the incident's plan, with the whole script in it or attached to
/// the channel as a file. Refuses (so nothing can be approved) when a person could not read
/// the whole script exactly as it would run.
pub async fn approval_message(deps: &Deps, i: &Incident, approval: &ApprovalId) -> Result<ChatMessage, StageError> {
    let plan = i.plan.as_ref().ok_or_else(|| StageError::InvalidInput("no plan to approve".into()))?;
    let script = plan.script.as_deref().ok_or_else(|| StageError::InvalidInput(Unshowable::NoScript.to_string()))?;
    showable(script).map_err(|e| StageError::InvalidInput(e.to_string()))?;
    if inline_script(script).is_some() {
        return Ok(approval_request(i, approval, &ScriptShown::Inline));
    }
    let hash = crate::sha256_hex(script.as_bytes());
    let filename = format!("selfheal-{}-{}.sh", i.id, &hash[..12]);
    let title = format!("Script awaiting approval for {} (sha256 {hash})", i.id);
    let file = deps.chat.upload_file(&filename, &title, script).await.map_err(|e| {
        let why = format!(
            "the script ({} bytes) is too long for a message and could not be attached as a file ({e}); a plan a person \
             cannot read in full cannot be approved",
            script.len()
        );
        if e.is_retryable() { StageError::Transient(why) } else { StageError::UpstreamRejected(why) }
    })?;
    Ok(approval_request(i, approval, &ScriptShown::File(file)))
}

/// The approval message after a decision (buttons removed).
/// The confirm dialog's text (Slack allows 300 characters): what will run, where.
fn confirm_text(i: &Incident) -> String {
    let what = match i.plan.as_ref().map(|p| &p.action) {
        Some(PlannedAction::Catalog { runbook_id, action, .. }) => {
            format!("`{}` from runbook `{}`", literal(action.as_str(), 60), literal(runbook_id.as_str(), 60))
        }
        _ => "the script shown above".to_string(),
    };
    clip(
        &format!(
            "This runs {what} against *{}* in a Coder workspace, for incident {}.",
            escape(&clip(&flat(i.service.name.as_str()), 60)),
            i.id
        ),
        300,
    )
}

/// The button that asks for a rejection reason, and the dialog it opens.
pub const REJECT_WITH_REASON: &str = "reject_with_reason";
pub const REJECT_VIEW: &str = "selfheal_reject_reason";
/// The reason's input (`view.state.values.<block>.<action>.value`).
pub const REASON_BLOCK: &str = "reason";
pub const REASON_MAX: usize = 500;

/// The "Reject with reason" dialog for `approval` (Slack limits: title, submit and close text 24
/// characters). The approval id rides in `private_metadata`; the submission decides.
pub fn reject_view(i: &Incident, approval: &ApprovalId) -> Value {
    json!({
        "type": "modal",
        "callback_id": REJECT_VIEW,
        "private_metadata": approval.as_str(),
        "title": {"type": "plain_text", "text": "Reject the fix"},
        "submit": {"type": "plain_text", "text": "Reject"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            section(format!(
                "Reject the plan for {}? Nothing will run, and the incident goes to a person.",
                literal(&i.title, 150)
            )),
            {"type": "input", "block_id": REASON_BLOCK, "optional": true,
             "label": {"type": "plain_text", "text": "Why (recorded in the audit trail and on the PagerDuty incident)"},
             "element": {"type": "plain_text_input", "action_id": REASON_BLOCK, "multiline": true,
                         "max_length": REASON_MAX}}
        ]
    })
}

/// A time as Slack shows it to each reader in their own time zone (`<!date^…>`), with the UTC
/// text as the fallback for clients that cannot.
pub fn slack_date(at: &chrono::DateTime<chrono::Utc>) -> String {
    format!("<!date^{}^{{date_short_pretty}} at {{time_secs}}|{}>", at.timestamp(), at.format("%Y-%m-%d %H:%M:%S UTC"))
}

pub fn approval_decided(
    i: &Incident,
    status: ApprovalStatus,
    by: &str,
    at: &chrono::DateTime<chrono::Utc>,
) -> ChatMessage {
    let verb = match status {
        ApprovalStatus::Approved => "Approved",
        ApprovalStatus::Rejected => "Rejected",
        ApprovalStatus::Expired => "Expired",
        ApprovalStatus::Pending => "Pending",
    };
    // A Slack user id becomes a mention; anything else is shown as text.
    let who = if UserId::parse(by).is_ok() { format!("<@{by}>") } else { literal(by, 64) };
    let line = format!("{verb} by {who} at {}", slack_date(at));
    let mut blocks = vec![
        section(incident_line(i)),
        section(hypothesis_line(i)),
        section(decision_line(i)),
        section(format!("*{line}*")),
    ];
    if let Some(reason) = i.approval.as_ref().and_then(|a| a.reason.as_deref()) {
        blocks.push(section(format!("Reason: {}", literal(reason, REASON_MAX))));
    }
    // The notification text is plain: no date token there, the UTC time instead.
    let plain_line = format!("{verb} by {who} at {}", at.format("%Y-%m-%d %H:%M:%S UTC"));
    ChatMessage { text: format!("{plain_line}: {}", escape(&clip(&flat(&i.title), 200))), blocks: Value::Array(blocks) }
}

/// A message that is just text (replies, degraded notices), escaped: it may quote outside text.
pub fn plain(text: &str) -> ChatMessage {
    ChatMessage { text: escape(text), blocks: json!([section(escape(text))]) }
}

pub fn shadow_report(i: &Incident, script: Option<&str>) -> ChatMessage {
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": "Shadow mode: nothing was executed"}}),
        section(incident_line(i)),
        section(hypothesis_line(i)),
        section(runbook_line(i)),
    ];
    blocks.extend(plan_lines(i));
    if let Some(s) = script {
        // Nothing runs in shadow mode, so a long script is shown in part, and says so.
        let shown = match inline_script(s) {
            Some(block) => block,
            None => format!(
                "(first 2000 of {} characters)\n```\n{}\n```",
                s.chars().count(),
                escape(&s.chars().take(2000).collect::<String>().replace("```", "'''"))
            ),
        };
        blocks.push(section(format!("*Script* (sha256 `{}`):\n{shown}", crate::sha256_hex(s.as_bytes()))));
    }
    blocks.push(section(decision_line(i)));
    ChatMessage { text: format!("Shadow mode report for {}", i.id), blocks: Value::Array(blocks) }
}

pub fn escalation(i: &Incident, reason: &str) -> ChatMessage {
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": "Escalated to a human"}}),
        section(incident_line(i)),
        section(format!("*Why*: {}", escape(&clip(reason, 800)))),
        section(hypothesis_line(i)),
        section(runbook_line(i)),
    ];
    blocks.extend(plan_lines(i));
    if i.decision.is_some() {
        blocks.push(section(decision_line(i)));
    }
    blocks.push(section(escape(&verification_lines(i))));
    ChatMessage {
        text: format!("selfheal escalated {}: {}", i.id, escape(&clip(&flat(reason), 200))),
        blocks: Value::Array(blocks),
    }
}

fn verification_lines(i: &Incident) -> String {
    let mut out = Vec::new();
    for v in &i.verifications {
        let failing: Vec<String> = v
            .checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| format!("{} ({})", flat(&c.name), flat(c.failing_step.as_deref().unwrap_or_default())))
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
            flat(&r.lifecycle_state),
            if r.deleted { "deleted" } else { "NOT deleted" }
        ));
    }
    if out.is_empty() { "Checks: none ran".into() } else { format!("Checks: {}", clip(&out.join("; "), 1500)) }
}

/// One line of plain text from outside text: control characters (line breaks included) and
/// invisible characters become spaces.
pub fn flat(s: &str) -> String {
    s.chars().map(|c| if c.is_control() || is_invisible(c) { ' ' } else { c }).collect()
}

/// The PagerDuty note: plain text (PagerDuty renders notes as text). Outside values are
/// flattened to one line each and quoted, so they cannot pass for the note's own lines.
pub fn pagerduty_summary(i: &Incident, headline: &str, trail: &[AuditEvent]) -> String {
    let quoted = |s: &str, max: usize| format!("\"{}\"", clip(&flat(s), max));
    let mut out = vec![format!("[selfheal] {}", clip(&flat(headline), 1000)), String::new()];
    if let Some(h) = &i.hypothesis {
        out.push(format!(
            "Hypothesis (investigator): {} ({})",
            quoted(&h.root_cause, 500),
            h.confidence.map_or("confidence unknown".into(), |c| format!("{:.0}%", c.value() * 100.0))
        ));
    }
    out.push(format!(
        "Runbooks: {}",
        i.runbooks
            .iter()
            .take(3)
            .map(|r| format!("{} ({:.2})", quoted(&r.title, 120), r.score.value()))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    if let Some(p) = &i.plan {
        let action = match &p.action {
            PlannedAction::Catalog { runbook_id, action, .. } => format!("{runbook_id}/{action}"),
            PlannedAction::Script { .. } => "free-form script".into(),
        };
        let script = p.script.as_deref().map_or("none".to_string(), |s| crate::sha256_hex(s.as_bytes()));
        out.push(format!("Action: {action} (plan {}, script sha256 {script})", clip(&p.hash, 12)));
    }
    if let Some(d) = &i.decision {
        out.push(format!("Decision: {} by rule {} — {}", d.route.as_str(), d.rule, clip(&flat(&d.explanation), 300)));
    }
    if let Some(a) = &i.approval {
        out.push(format!(
            "Approval: {:?} by {}",
            a.status,
            a.decided_by.as_ref().map_or("nobody".to_string(), |u| u.to_string())
        ));
    }
    out.push(verification_lines(i));
    out.push(String::new());
    out.push("Timeline:".into());
    for e in trail.iter().take(60) {
        out.push(format!("{} {} {}", e.at.format("%H:%M:%S"), flat(&e.actor), flat(&e.kind)));
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str =
        "<!channel> *URGENT* <https://evil.example/approve|Approve> & `x` ~y~\n[selfheal] Decision: auto";

    fn incident() -> Incident {
        let mut i = Incident::new(
            IncidentId::parse("QMSG1").unwrap(),
            HOSTILE.into(),
            ServiceRef {
                id: ServiceId::parse("PSVC1").unwrap(),
                name: ServiceName::parse("checkout <!here> `rm`").unwrap(),
            },
            Urgency::High,
            chrono::Utc::now(),
        );
        i.number = Some(42);
        i.html_url = Some("https://evil.example/incidents/QMSG1".into());
        i.hypothesis = Some(Hypothesis {
            root_cause: HOSTILE.into(),
            confidence: None,
            evidence: vec![],
            alternatives: vec![],
            services: vec![],
        });
        let action = PlannedAction::Catalog {
            runbook_id: RunbookId::parse("pg").unwrap(),
            action: ActionName::parse("pg.cancel").unwrap(),
            parameters: json!({"pid": 42, "db": "orders"}),
        };
        i.plan = Some(Plan {
            analysis: HOSTILE.into(),
            runbook_sources: vec![],
            risks: vec![HOSTILE.into()],
            risk: RiskLevel::Low,
            hash: Plan::binding_hash(&action, Some("cancel 42 'orders' && echo <done> &"), None),
            action,
            rollback: HOSTILE.into(),
            expected_outcome: HOSTILE.into(),
            verification_hints: vec![],
            script: Some("cancel 42 'orders' && echo <done> &".into()),
            catalog_version: Some("abc".into()),
            model_chosen: vec!["pid".into()],
        });
        i
    }

    fn has_buttons(m: &ChatMessage) -> bool {
        m.blocks.as_array().unwrap().iter().any(|b| b["type"] == "actions")
    }

    fn texts(m: &ChatMessage) -> Vec<String> {
        let mut out = vec![m.text.clone()];
        for b in m.blocks.as_array().unwrap() {
            if let Some(t) = b.pointer("/text/text").and_then(Value::as_str) {
                out.push(t.to_string());
            }
        }
        out
    }

    #[test]
    fn approve_asks_for_confirmation_and_times_are_localised() {
        let i = incident();
        let id = ApprovalId::parse("abcdefgh12345678").unwrap();
        let m = approval_request(&i, &id, &ScriptShown::Inline);
        let buttons = m.blocks.as_array().unwrap().iter().find(|b| b["type"] == "actions").unwrap();
        let approve = &buttons["elements"][0];
        assert_eq!(approve["action_id"], "approve");
        let confirm = &approve["confirm"];
        assert_eq!(confirm["confirm"]["text"], "Approve and run");
        assert!(confirm["text"]["text"].as_str().unwrap().chars().count() <= 300);
        assert!(confirm["text"]["text"].as_str().unwrap().contains(i.id.as_str()));
        assert!(buttons["elements"][1]["confirm"].is_null(), "rejecting changes nothing: no dialog");
        let at = chrono::DateTime::parse_from_rfc3339("2026-12-01T10:00:05Z").unwrap().with_timezone(&chrono::Utc);
        let decided = approval_decided(&i, ApprovalStatus::Approved, "UALICE", &at);
        let shown = decided.blocks.to_string();
        assert!(
            shown.contains("<!date^1796119205^{date_short_pretty} at {time_secs}|2026-12-01 10:00:05 UTC>"),
            "{shown}"
        );
        assert!(!decided.text.contains("<!date"), "notification text stays plain: {}", decided.text);
    }

    #[test]
    fn outside_text_cannot_mention_link_or_format() {
        let i = incident();
        let id = ApprovalId::parse("abcdefgh12345678").unwrap();
        for m in [
            approval_request(&i, &id, &ScriptShown::Inline),
            escalation(&i, HOSTILE),
            approval_decided(&i, ApprovalStatus::Approved, "<!channel>", &chrono::Utc::now()),
            shadow_report(&i, Some("echo hi")),
            plain(HOSTILE),
        ] {
            for t in texts(&m) {
                assert!(!t.contains("<!channel>") && !t.contains("<!here>"), "a mention got through: {t}");
                assert!(!t.contains("<https://evil"), "a link got through: {t}");
                assert!(!t.contains("evil.example/incidents"), "a link from outside got through: {t}");
                // Every `<` left is one of ours: a link to PagerDuty, a user mention or a date.
                for (pos, _) in t.match_indices('<') {
                    let rest = &t[pos..];
                    assert!(
                        rest.starts_with("<https://") || rest.starts_with("<@") || rest.starts_with("<!date^"),
                        "stray `<` in {t}"
                    );
                }
            }
        }
        // Titles and root causes are shown literally, in a code span, on one line.
        let line = incident_line(&i);
        assert!(line.contains("`&lt;!channel&gt; *URGENT*"), "{line}");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn the_link_is_built_from_the_validated_id() {
        let mut i = incident();
        assert_eq!(incident_link(&i), None, "not PagerDuty's host");
        i.html_url = Some("https://acme.pagerduty.com/incidents/QMSG1".into());
        assert_eq!(incident_link(&i).as_deref(), Some("https://acme.pagerduty.com/incidents/QMSG1"));
        i.html_url = Some("https://acme.pagerduty.com/incidents/OTHER".into());
        assert_eq!(incident_link(&i), None, "another incident's link");
        i.html_url = Some("https://acme.pagerduty.com.evil.example/incidents/QMSG1".into());
        assert_eq!(incident_link(&i), None);
        i.html_url = Some("https://a|b.pagerduty.com/incidents/QMSG1".into());
        assert_eq!(incident_link(&i), None);
    }

    #[test]
    fn the_approver_sees_the_whole_script_its_hash_and_what_the_model_chose() {
        let i = incident();
        let id = ApprovalId::parse("abcdefgh12345678").unwrap();
        let m = approval_request(&i, &id, &ScriptShown::Inline);
        let all = texts(&m).join("\n");
        let script = i.plan.as_ref().unwrap().script.clone().unwrap();
        assert!(all.contains(&escape(&script)), "{all}");
        assert!(all.contains(&crate::sha256_hex(script.as_bytes())));
        assert!(all.contains("Chosen by the model") && all.contains("`pid` = `42`"), "{all}");
        // Long scripts go as files; a script with ``` cannot be inline either.
        assert!(inline_script(&"x".repeat(5000)).is_none());
        assert!(inline_script("echo ```").is_none());
        let file = SharedFile { id: "F123".into(), title: "script".into() };
        let m = approval_request(&i, &id, &ScriptShown::File(file));
        assert!(texts(&m).join("\n").contains("file `F123`"));
        assert!(has_buttons(&m));
        // Told to show a long script inline, the message shows no buttons.
        let mut long = i.clone();
        if let Some(p) = long.plan.as_mut() {
            p.script = Some("echo x\n".repeat(1000));
        }
        assert!(!has_buttons(&approval_request(&long, &id, &ScriptShown::Inline)));
        // Invisible characters cannot be shown faithfully.
        assert_eq!(showable("echo a\u{202E}b"), Err(Unshowable::Invisible(1)));
        assert_eq!(showable("echo a\0b"), Err(Unshowable::Invisible(1)));
        assert!(showable("echo 'a'\n\tb").is_ok());
    }

    #[test]
    fn pagerduty_notes_keep_outside_text_on_its_own_line() {
        let i = incident();
        let note = pagerduty_summary(&i, "Escalated", &[]);
        let forged = note.lines().filter(|l| l.starts_with("[selfheal]")).count();
        assert_eq!(forged, 1, "{note}");
        assert!(note.contains("Hypothesis (investigator): \"<!channel>"));
    }
}
