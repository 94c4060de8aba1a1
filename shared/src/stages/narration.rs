//! Milestone notes, so the people watching see the loop as it goes. On the PagerDuty incident:
//! the investigation received, the plan and its decision, the approval requested (with a link to
//! the Slack message), the fix started, the verification; the final outcome there is the summary
//! note the closing steps already write. In the thread under the Slack approval message, for the
//! approvers: the fix started, the verification, and the outcome (resolved or escalated).
//!
//! One mechanism: a milestone is reached when its event is in the audit trail, and
//! [`narrate`] catches up on every reached milestone not yet noted, in order. The ops whose
//! functions hold the PagerDuty token call it ([`Op::narration`]): after parsing the
//! hypothesis, after requesting an approval, after starting the fix, and before the closing
//! summary; the Slack thread is written by those of them whose function holds Slack's token
//! (the closing ones). Each note is written at most once: the milestone is claimed on the
//! incident (`noted`, `slack:`-prefixed for the thread) before the note is posted and released when PagerDuty refuses it, so a retry posts
//! it later and a step re-run never posts it twice. Narration never fails the step it follows:
//! it has its own deadline, and what it could not post is caught up by the next call.

use serde_json::{Value, json};
use std::time::Duration;

use super::{Deps, Op, audit, load, messages, update};
use crate::domain::*;
use crate::error::StageError;
use crate::ports::ChatMessage;

/// How long one catch-up may take, counted in each narrating op's budget: a few notes at
/// PagerDuty's usual pace, and no more than the tightest function (cleric) can spare.
pub const NARRATION_DEADLINE: Duration = Duration::from_secs(10);

/// Where an op narrates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Narration {
    No,
    /// After the op succeeded: the milestone it reached, and any missed before.
    After,
    /// Before the op: the milestones up to now, ahead of the op's own closing note.
    Before,
    /// Both: the milestones up to now first, then the one the op itself reaches (the outcome in
    /// the Slack thread).
    Around,
}

/// Where a milestone's note goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    PagerDuty,
    /// A reply under the Slack approval message (only when there is one).
    SlackThread,
}

/// The milestones, in the order they happen and are noted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Milestone {
    InvestigationReceived,
    PlanDecided,
    ApprovalRequested,
    FixStarted,
    Verified,
    Resolved,
    Escalated,
}

impl Milestone {
    pub const ALL: [Milestone; 7] = [
        Milestone::InvestigationReceived,
        Milestone::PlanDecided,
        Milestone::ApprovalRequested,
        Milestone::FixStarted,
        Milestone::Verified,
        Milestone::Resolved,
        Milestone::Escalated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Milestone::InvestigationReceived => "investigation_received",
            Milestone::PlanDecided => "plan_decided",
            Milestone::ApprovalRequested => "approval_requested",
            Milestone::FixStarted => "fix_started",
            Milestone::Verified => "verified",
            Milestone::Resolved => "resolved",
            Milestone::Escalated => "escalated",
        }
    }

    /// The audit events that mark the milestone reached (the latest one is described).
    fn reached_by(self) -> &'static [&'static str] {
        match self {
            Milestone::InvestigationReceived => &["hypothesis_parsed"],
            Milestone::PlanDecided => &["decision"],
            Milestone::ApprovalRequested => &["approval_requested"],
            // A retried provisioning finds the workspace it created and adopts it.
            Milestone::FixStarted => &["workspace_created", "workspace_adopted"],
            Milestone::Verified => &["postflight"],
            Milestone::Resolved => &["incident_resolved"],
            Milestone::Escalated => &["escalated"],
        }
    }

    /// Where its note goes. PagerDuty's own outcome note is the closing summary; the approval
    /// message is its own milestone in Slack, and what came before it is in the message.
    pub fn channels(self) -> &'static [Channel] {
        match self {
            Milestone::InvestigationReceived | Milestone::PlanDecided | Milestone::ApprovalRequested => {
                &[Channel::PagerDuty]
            }
            Milestone::FixStarted | Milestone::Verified => &[Channel::PagerDuty, Channel::SlackThread],
            Milestone::Resolved | Milestone::Escalated => &[Channel::SlackThread],
        }
    }

    /// The name it is claimed under on the incident (`Incident::noted`).
    fn claim(self, channel: Channel) -> String {
        match channel {
            Channel::PagerDuty => self.as_str().to_string(),
            Channel::SlackThread => format!("slack:{}", self.as_str()),
        }
    }
}

/// The note for `milestone`, in PagerDuty's plain-text style: one `[selfheal]` headline, then
/// `Label: value` lines. Outside values are flattened to one line and quoted.
pub fn milestone_note(milestone: Milestone, i: &Incident, event: &AuditEvent, slack_link: Option<&str>) -> String {
    let quoted = |s: &str, max: usize| format!("\"{}\"", messages::clip(&messages::flat(s), max));
    let pct = |c: Option<Confidence>| c.map_or("unknown".to_string(), |c| format!("{:.0}%", c.value() * 100.0));
    let detail = |k: &str| event.detail.get(k).and_then(Value::as_str).map(str::to_string);
    let mut lines = Vec::new();
    match milestone {
        Milestone::InvestigationReceived => {
            lines.push("[selfheal] Investigation received: looking for a runbook".to_string());
            if let Some(h) = &i.hypothesis {
                lines.push(format!("Root cause (investigator): {}", quoted(&h.root_cause, 500)));
                lines.push(format!("Confidence: {}", pct(h.confidence)));
                for e in h.evidence.iter().take(3) {
                    lines.push(format!("Evidence: {}", quoted(e, 200)));
                }
            }
        }
        Milestone::PlanDecided => {
            let route = i.decision.as_ref().map_or("unknown", |d| d.route.as_str());
            lines.push(format!(
                "[selfheal] Plan and decision: {}",
                match route {
                    "auto" => "the fix runs automatically",
                    "approval" => "the fix waits for a person's approval",
                    _ => "a person takes over (nothing runs)",
                }
            ));
            if let Some(p) = &i.plan {
                let action = match &p.action {
                    PlannedAction::Catalog { runbook_id, action, parameters } => {
                        format!(
                            "{runbook_id}/{action} {}",
                            messages::clip(&messages::flat(&parameters.to_string()), 200)
                        )
                    }
                    PlannedAction::Script { .. } => "a free-form script (never runs without approval)".into(),
                };
                lines.push(format!("Action: {action}"));
                lines.push(format!(
                    "Risk: {}",
                    match p.risk {
                        RiskLevel::Low => "low",
                        RiskLevel::Medium => "medium",
                        RiskLevel::High => "high",
                    }
                ));
            }
            if let Some(d) = &i.decision {
                lines.push(format!("Decision: {} by rule {}", d.route.as_str(), d.rule));
                lines.push(format!("Why: {}", messages::clip(&messages::flat(&d.explanation), 400)));
            }
            if let Some(m) = i.match_score {
                lines.push(format!("Runbook match: {:.2}", m.value()));
            }
        }
        Milestone::ApprovalRequested => {
            lines.push("[selfheal] Approval requested in Slack: nothing runs until an approver decides".to_string());
            match slack_link {
                Some(link) => lines.push(format!("Approve or reject: {link}")),
                None => lines.push(format!(
                    "Slack message: channel {}, ts {}",
                    detail("channel").unwrap_or_default(),
                    detail("ts").unwrap_or_default()
                )),
            }
            if let Some(a) = &i.approval {
                lines.push(format!("Approval id: {}", a.approval_id));
            }
        }
        Milestone::FixStarted => {
            lines.push("[selfheal] Fix started in an ephemeral Coder workspace".to_string());
            if let Some(ws) = detail("workspace") {
                lines.push(format!("Workspace: {}", messages::clip(&messages::flat(&ws), 100)));
            }
            if let Some(p) = &i.plan {
                if let Some(script) = &p.script {
                    lines.push(format!("Script sha256: {}", crate::sha256_hex(script.as_bytes())));
                }
                lines.push(format!("Plan: {}", messages::clip(&p.hash, 12)));
            }
        }
        Milestone::Verified => {
            let healthy = event.detail.get("healthy").and_then(Value::as_bool);
            lines.push(format!(
                "[selfheal] Verification after the fix: {}",
                match healthy {
                    Some(true) => "the service is healthy",
                    Some(false) => "the service is still failing",
                    None => "no result",
                }
            ));
            if let Some(v) = last_postflight(i) {
                for c in v.checks.iter().take(5) {
                    lines.push(format!(
                        "Check {}: {} (HTTP {}, {} ms){}",
                        quoted(&c.name, 80),
                        if c.ok { "passed" } else { "failed" },
                        c.status.map_or("none".to_string(), |s| s.to_string()),
                        c.latency_ms,
                        c.failing_step
                            .as_deref()
                            .map(|s| format!(", failing step {}", quoted(s, 80)))
                            .unwrap_or_default()
                    ));
                }
            }
        }
        // Their PagerDuty note is the closing summary (`Milestone::channels`).
        Milestone::Resolved | Milestone::Escalated => lines.push(format!("[selfheal] {}", milestone.as_str())),
    }
    lines.join("\n")
}

fn last_postflight(i: &Incident) -> Option<&Verification> {
    i.verifications.iter().rev().find(|v| v.phase == VerificationPhase::Postflight)
}

/// The reply in the approval message's thread (Slack mrkdwn; outside values as literals).
pub fn thread_reply(milestone: Milestone, i: &Incident, event: &AuditEvent) -> ChatMessage {
    let detail = |k: &str| event.detail.get(k).and_then(Value::as_str).map(str::to_string);
    let at = messages::slack_date(&event.at);
    let text = match milestone {
        Milestone::FixStarted => format!(
            ":hammer_and_wrench: {at} Fix started in Coder workspace {}{}",
            messages::literal(&detail("workspace").unwrap_or_default(), 100),
            i.plan
                .as_ref()
                .and_then(|p| p.script.as_ref())
                .map(|s| format!(", script sha256 `{}`", crate::sha256_hex(s.as_bytes())))
                .unwrap_or_default()
        ),
        Milestone::Verified => {
            let healthy = event.detail.get("healthy").and_then(Value::as_bool) == Some(true);
            let checks: Vec<String> = last_postflight(i)
                .map(|v| {
                    v.checks
                        .iter()
                        .take(5)
                        .map(|c| {
                            format!(
                                "{} {} ({} ms)",
                                if c.ok { "✓" } else { "✗" },
                                messages::literal(&c.name, 80),
                                c.latency_ms
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            format!(
                "{} {at} Verified after the fix: {}{}",
                if healthy { ":white_check_mark:" } else { ":x:" },
                if healthy { "the service is healthy" } else { "the service is still failing" },
                if checks.is_empty() { String::new() } else { format!("\n{}", checks.join("\n")) }
            )
        }
        Milestone::Resolved => format!(":tada: {at} Resolved: the incident is resolved in PagerDuty"),
        Milestone::Escalated => format!(
            ":rotating_light: {at} Escalated to a person: {}",
            messages::literal(&detail("reason").unwrap_or_default(), 300)
        ),
        other => format!("{at} {}", other.as_str()),
    };
    ChatMessage {
        text: messages::flat(&text),
        blocks: json!([{"type": "section", "text": {"type": "mrkdwn", "text": text}}]),
    }
}

/// Post the note of every reached, not yet noted milestone on each of `channels`, in order,
/// within the deadline. Never an error: a failure is logged and audited, and the next call
/// catches up.
pub async fn narrate(deps: &Deps, id: &IncidentId, channels: &[Channel]) {
    let deadline = tokio::time::Instant::now() + NARRATION_DEADLINE;
    // The outer bound only catches a store that hangs past its own timeouts; each post is
    // bounded inside, so a slow PagerDuty or Slack releases its claim instead of keeping it.
    match tokio::time::timeout_at(deadline + STORE_MARGIN, catch_up(deps, id, channels, deadline)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(incident_id = %id, error = %e, "milestone notes: not all written; the next step catches up")
        }
        Err(_) => tracing::warn!(incident_id = %id, "milestone notes: out of time; the next step catches up"),
    }
}

/// What a claim's release and its audit may take after a post gave up.
const STORE_MARGIN: Duration = Duration::from_secs(2);

async fn catch_up(
    deps: &Deps,
    id: &IncidentId,
    channels: &[Channel],
    deadline: tokio::time::Instant,
) -> Result<(), StageError> {
    let incident = load(deps, id).await?;
    let trail = deps.store.audit_trail(id).await?;
    // The thread's parent: the approval message, if the run asked for one.
    let parent = trail.iter().rev().find(|e| e.kind == "approval_requested").and_then(|e| {
        let field = |k: &str| e.detail.get(k).and_then(Value::as_str).map(str::to_string);
        Some(crate::ports::MessageRef { channel: field("channel")?, ts: field("ts")? })
    });
    // A channel that failed is left for the next catch-up (its notes stay in order); the
    // others go on.
    let mut failed: Vec<Channel> = Vec::new();
    for milestone in Milestone::ALL {
        let Some(event) = trail.iter().rev().find(|e| milestone.reached_by().contains(&e.kind.as_str())) else {
            continue;
        };
        for &channel in milestone.channels().iter().filter(|c| channels.contains(c)) {
            let name = milestone.claim(channel);
            let skip = failed.contains(&channel)
                || incident.noted.contains(&name)
                || (channel == Channel::SlackThread && parent.is_none());
            if skip {
                continue;
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(());
            }
            // Claim it first: a re-run of this step (or a concurrent one) then posts nothing.
            let (current, claimed) = update(deps, id, |i| {
                if i.noted.contains(&name) {
                    return Ok(false);
                }
                i.noted.push(name.clone());
                Ok(true)
            })
            .await?;
            if !claimed {
                continue;
            }
            let post = async {
                match (channel, &parent) {
                    (Channel::SlackThread, Some(parent)) => deps
                        .chat
                        .reply_in_thread(parent, &thread_reply(milestone, &current, event))
                        .await
                        .map(|m| json!({"ts": m.ts})),
                    _ => {
                        let link = if milestone == Milestone::ApprovalRequested {
                            slack_link(deps, event).await
                        } else {
                            None
                        };
                        let note = milestone_note(milestone, &current, event, link.as_deref());
                        deps.source.add_note(id, &note).await.map(|note_id| json!({"note_id": note_id}))
                    }
                }
            };
            let channel_name = match channel {
                Channel::PagerDuty => "pagerduty",
                Channel::SlackThread => "slack_thread",
            };
            let posted = match tokio::time::timeout_at(deadline, post).await {
                Ok(posted) => posted,
                Err(_) => Err(crate::error::ClientError::Timeout { service: channel_name }),
            };
            match posted {
                Ok(at) => {
                    let detail = json!({"milestone": milestone.as_str(), "channel": channel_name, "at": at});
                    audit(deps, id, channel_name, "milestone_noted", detail).await?;
                }
                Err(e) => {
                    // Release the claim, so that the next step's catch-up writes it. (A post
                    // that timed out may still have landed: then it is written twice, which
                    // beats never.)
                    update(deps, id, |i| {
                        i.noted.retain(|n| n != &name);
                        Ok(())
                    })
                    .await?;
                    let detail = json!({"milestone": milestone.as_str(), "channel": channel_name,
                        "error": e.to_string(), "retryable": e.is_retryable()});
                    audit(deps, id, channel_name, "milestone_note_failed", detail).await?;
                    tracing::warn!(incident_id = %id, channel = channel_name, error = %e, "milestone note not written");
                    failed.push(channel);
                }
            }
        }
    }
    Ok(())
}

/// The approval message's permalink, when Slack gives one (the function may not hold Slack's
/// token: then the note names the channel and message instead).
async fn slack_link(deps: &Deps, event: &AuditEvent) -> Option<String> {
    let channel = event.detail.get("channel").and_then(Value::as_str)?;
    let ts = event.detail.get("ts").and_then(Value::as_str)?;
    let at = crate::ports::MessageRef { channel: channel.to_string(), ts: ts.to_string() };
    match deps.chat.permalink(&at).await {
        Ok(link) => Some(link),
        Err(e) => {
            tracing::info!(error = %e, "no Slack permalink for the approval message");
            None
        }
    }
}

impl Op {
    /// Where the op writes milestone notes (its function holds the PagerDuty token).
    pub fn narration(self) -> Narration {
        match self {
            Op::ParseHypothesis | Op::RequestApproval | Op::ProvisionWorkspace => Narration::After,
            // The last step of a resolved run catches up what the closing step could not write.
            Op::RecordRejection | Op::CheckRefire => Narration::Before,
            Op::ResolveIncident | Op::Escalate => Narration::Around,
            _ => Narration::No,
        }
    }

    /// The channels the op writes milestone notes to: PagerDuty, and the Slack thread when its
    /// function holds Slack's token.
    pub fn narration_channels(self) -> &'static [Channel] {
        // Which chat an op may use does not depend on the model provider.
        if self.needs(crate::config::ModelProvider::Anthropic).contains(&super::Capability::Slack) {
            &[Channel::PagerDuty, Channel::SlackThread]
        } else {
            &[Channel::PagerDuty]
        }
    }
}
