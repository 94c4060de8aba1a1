//! Incident reports, the page a post-incident review starts from: what was believed, decided,
//! approved, executed and observed, with links to PagerDuty and the execution. One model
//! ([`Report`]) is built from the incident record and its audit trail, then rendered to
//! Markdown and to a self-contained HTML page, so both carry the same content.
//!
//! Everything in a report is outside text (titles, notes, model output, workspace logs): the
//! Markdown renderer fences code with a fence longer than any backtick run in it and escapes
//! table cells; the HTML renderer escapes every text node and links only `http(s)` URLs.

use serde_json::Value;
use std::path::{Path, PathBuf};

use selfheal::domain::{
    AuditEvent, CheckResult, Incident, PlannedAction, Verification, VerificationPhase, canonical_json,
};

/// Workspace output kept in a report: the tail, where a script's result is.
pub const MAX_LOG_CHARS: usize = 8_000;

/// One value in a report.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Text(String),
    Code(String),
    Link { text: String, url: String },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// Label/value pairs.
    Fields(Vec<(String, Cell)>),
    /// Preformatted text with the HTML id (anchor) it is found by.
    Pre {
        id: String,
        language: String,
        text: String,
    },
    Table {
        id: String,
        head: Vec<String>,
        rows: Vec<Vec<Cell>>,
    },
    Items(Vec<String>),
    Para(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    /// The HTML id of the section.
    pub id: String,
    pub title: String,
    pub blocks: Vec<Block>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub title: String,
    pub sections: Vec<Section>,
}

fn text(s: impl Into<String>) -> Cell {
    Cell::Text(s.into())
}

fn time(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string()
}

/// The console page of a Step Functions execution ARN; `None` for a local execution name.
fn execution_link(execution: &str) -> Option<String> {
    let mut parts = execution.split(':');
    let (Some("arn"), Some(_partition), Some("states"), Some(region)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    Some(format!(
        "https://{region}.console.aws.amazon.com/states/home?region={region}#/v2/executions/details/{execution}"
    ))
}

fn record_field(record: &Value, key: &str) -> String {
    match record.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    }
}

fn checks_table(id: &str, v: &Verification) -> Block {
    let row = |c: &CheckResult| {
        vec![
            text(c.name.clone()),
            text(if c.unreachable {
                "unreachable"
            } else if c.ok {
                "ok"
            } else {
                "failing"
            }),
            text(c.status.map_or("-".into(), |s| s.to_string())),
            text(format!("{} ms", c.latency_ms)),
            text(c.failing_step.clone().unwrap_or_else(|| "-".into())),
            Cell::Code(c.url.clone()),
        ]
    };
    Block::Table {
        id: id.into(),
        head: ["check", "result", "HTTP status", "time", "failing step", "URL"].map(String::from).to_vec(),
        rows: v.checks.iter().map(row).collect(),
    }
}

/// The tail of the workspace output, cut at a character boundary.
fn bounded_log(log: &str) -> String {
    let chars = log.chars().count();
    if chars <= MAX_LOG_CHARS {
        return log.to_string();
    }
    let tail: String = log.chars().skip(chars - MAX_LOG_CHARS).collect();
    format!("[… {} earlier characters left out …]\n{tail}", chars - MAX_LOG_CHARS)
}

impl Report {
    pub fn build(incident: &Incident, trail: &[AuditEvent], record: &Value) -> Report {
        let mut sections = Vec::new();

        let mut summary = vec![
            ("incident".to_string(), text(incident.id.to_string())),
            ("service".into(), text(format!("{} ({})", incident.service.name, incident.service.id))),
            ("opened".into(), text(time(&incident.created_at))),
            ("outcome".into(), text(record_field(record, "outcome"))),
            ("route".into(), text(record_field(record, "route"))),
            ("effectiveness".into(), text(record_field(record, "effectiveness"))),
            ("time to resolve".into(), text(format!("{} ms", record_field(record, "time_to_resolve_ms")))),
        ];
        if let Some(url) = incident.html_url.as_deref() {
            summary
                .push(("PagerDuty".into(), Cell::Link { text: format!("incident {}", incident.id), url: url.into() }));
        }
        if let Some(execution) = incident.execution_id.as_deref() {
            let cell = match execution_link(execution) {
                Some(url) => Cell::Link { text: execution.into(), url },
                None => Cell::Code(format!("selfheal history {execution}")),
            };
            summary.push(("execution".into(), cell));
        }
        sections.push(Section { id: "summary".into(), title: "Summary".into(), blocks: vec![Block::Fields(summary)] });

        if let Some(h) = &incident.hypothesis {
            let mut blocks = vec![Block::Fields(vec![
                ("root cause".into(), text(h.root_cause.clone())),
                (
                    "confidence".into(),
                    text(h.confidence.map_or("not stated".into(), |c| format!("{:.0}%", c.value() * 100.0))),
                ),
            ])];
            if !h.evidence.is_empty() {
                blocks.push(Block::Items(h.evidence.clone()));
            }
            if !h.alternatives.is_empty() {
                blocks.push(Block::Para(format!("Alternatives considered: {}", h.alternatives.join("; "))));
            }
            sections.push(Section { id: "hypothesis".into(), title: "Hypothesis".into(), blocks });
        }

        if let Some(d) = &incident.decision {
            sections.push(Section {
                id: "decision".into(),
                title: "Decision".into(),
                blocks: vec![
                    Block::Fields(vec![
                        ("route".into(), text(d.route.as_str())),
                        ("rule".into(), Cell::Code(d.rule.clone())),
                        ("why".into(), text(d.explanation.clone())),
                    ]),
                    Block::Pre {
                        id: "decision-inputs".into(),
                        language: "json".into(),
                        text: serde_json::to_string_pretty(&d.inputs).unwrap_or_else(|_| d.inputs.to_string()),
                    },
                ],
            });
        }

        if let Some(a) = &incident.approval {
            sections.push(Section {
                id: "approval".into(),
                title: "Approval".into(),
                blocks: vec![Block::Fields(vec![
                    ("status".into(), text(format!("{:?}", a.status).to_lowercase())),
                    ("by".into(), text(a.decided_by.as_ref().map_or("-".into(), |u| u.to_string()))),
                    ("at".into(), text(a.decided_at.as_ref().map_or("-".into(), time))),
                    ("plan hash approved".into(), Cell::Code(a.plan_hash.clone())),
                ])],
            });
        }

        if let Some(p) = &incident.plan {
            let mut fields = vec![("risk".into(), text(format!("{:?}", p.risk).to_lowercase()))];
            match &p.action {
                PlannedAction::Catalog { runbook_id, action, parameters } => {
                    fields.push(("action".into(), Cell::Code(format!("{runbook_id} / {action}"))));
                    fields.push(("parameters".into(), Cell::Code(canonical_json(parameters))));
                }
                PlannedAction::Script { language, .. } => {
                    fields.push(("action".into(), text(format!("free-form {language} script (never auto-executed)"))));
                }
            }
            fields.push(("plan hash".into(), Cell::Code(p.hash.clone())));
            if let Some(v) = &p.catalog_version {
                fields.push(("catalog version".into(), Cell::Code(v.clone())));
            }
            if let Some(script) = &p.script {
                fields.push(("script sha256".into(), Cell::Code(selfheal::sha256_hex(script.as_bytes()))));
            }
            fields.push(("rollback".into(), text(p.rollback.clone())));
            let mut blocks = vec![Block::Fields(fields), Block::Para(p.analysis.clone())];
            if let Some(script) = &p.script {
                blocks.push(Block::Pre { id: "script".into(), language: "sh".into(), text: script.clone() });
            }
            sections.push(Section { id: "plan".into(), title: "Plan and script".into(), blocks });
        }

        for (phase, id, title) in [
            (VerificationPhase::Preflight, "checks-before", "Checks before the fix"),
            (VerificationPhase::Postflight, "checks-after", "Checks after the fix"),
        ] {
            if let Some(v) = incident.verifications.iter().rev().find(|v| v.phase == phase) {
                sections.push(Section {
                    id: id.into(),
                    title: title.into(),
                    blocks: vec![
                        Block::Para(format!("{} at {}", if v.healthy { "Healthy" } else { "Unhealthy" }, time(&v.at))),
                        checks_table(&format!("{id}-table"), v),
                    ],
                });
            }
        }

        if let Some(r) = &incident.remediation {
            sections.push(Section {
                id: "execution".into(),
                title: "What ran".into(),
                blocks: vec![
                    Block::Fields(vec![
                        ("workspace".into(), Cell::Code(r.workspace_name.clone())),
                        ("build".into(), Cell::Code(r.build_id.clone())),
                        ("result".into(), text(if r.succeeded { "succeeded" } else { "failed" })),
                        ("final state".into(), text(r.lifecycle_state.clone())),
                        ("workspace deleted".into(), text(if r.deleted { "yes" } else { "no" })),
                    ]),
                    Block::Pre {
                        id: "workspace-log".into(),
                        language: "text".into(),
                        text: bounded_log(&r.log_excerpt),
                    },
                ],
            });
        }

        sections.push(Section {
            id: "timeline".into(),
            title: "Timeline".into(),
            blocks: vec![Block::Table {
                id: "timeline-table".into(),
                head: ["time (UTC)", "actor", "event"].map(String::from).to_vec(),
                rows: trail
                    .iter()
                    .map(|e| {
                        vec![text(e.at.format("%H:%M:%S%.3f").to_string()), text(e.actor.clone()), text(e.kind.clone())]
                    })
                    .collect(),
            }],
        });

        Report { title: format!("Incident {} — {}", incident.id, incident.title), sections }
    }

    pub fn markdown(&self) -> String {
        let mut md = format!("# {}\n", md_inline(&self.title));
        for s in &self.sections {
            md.push_str(&format!("\n## {}\n\n", s.title));
            for b in &s.blocks {
                match b {
                    Block::Fields(fields) => {
                        md.push_str("| | |\n|---|---|\n");
                        for (k, v) in fields {
                            md.push_str(&format!("| {} | {} |\n", k, md_cell(v)));
                        }
                    }
                    Block::Pre { language, text, .. } => {
                        let fence = fence_for(text);
                        md.push_str(&format!("{fence}{language}\n{}\n{fence}\n", text.trim_end_matches('\n')));
                    }
                    Block::Table { head, rows, .. } => {
                        md.push_str(&format!("| {} |\n", head.join(" | ")));
                        md.push_str(&format!("|{}\n", "---|".repeat(head.len())));
                        for r in rows {
                            md.push_str(&format!("| {} |\n", r.iter().map(md_cell).collect::<Vec<_>>().join(" | ")));
                        }
                    }
                    Block::Items(items) => {
                        for i in items {
                            md.push_str(&format!("- {}\n", md_inline(i)));
                        }
                    }
                    Block::Para(p) => md.push_str(&format!("{}\n", md_inline(p))),
                }
                md.push('\n');
            }
        }
        md
    }

    pub fn html(&self) -> String {
        let mut body = format!("<h1>{}</h1>", esc(&self.title));
        for s in &self.sections {
            body.push_str(&format!("<section id=\"{}\"><h2>{}</h2>", esc(&s.id), esc(&s.title)));
            for b in &s.blocks {
                match b {
                    Block::Fields(fields) => {
                        body.push_str("<table class=\"fields\">");
                        for (k, v) in fields {
                            body.push_str(&format!("<tr><th>{}</th><td>{}</td></tr>", esc(k), html_cell(v)));
                        }
                        body.push_str("</table>");
                    }
                    Block::Pre { id, language, text } => body.push_str(&format!(
                        "<pre id=\"{}\" data-language=\"{}\">{}</pre>",
                        esc(id),
                        esc(language),
                        esc(text)
                    )),
                    Block::Table { id, head, rows } => {
                        body.push_str(&format!("<table id=\"{}\"><tr>", esc(id)));
                        for h in head {
                            body.push_str(&format!("<th>{}</th>", esc(h)));
                        }
                        body.push_str("</tr>");
                        for r in rows {
                            body.push_str("<tr>");
                            for c in r {
                                body.push_str(&format!("<td>{}</td>", html_cell(c)));
                            }
                            body.push_str("</tr>");
                        }
                        body.push_str("</table>");
                    }
                    Block::Items(items) => {
                        body.push_str("<ul>");
                        for i in items {
                            body.push_str(&format!("<li>{}</li>", esc(i)));
                        }
                        body.push_str("</ul>");
                    }
                    Block::Para(p) => body.push_str(&format!("<p>{}</p>", esc(p))),
                }
            }
            body.push_str("</section>");
        }
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{}</title>\
             <style>body{{font-family:system-ui,sans-serif;max-width:64em;margin:2em auto;padding:0 1em;line-height:1.4}}\
             table{{border-collapse:collapse;margin:.5em 0}}td,th{{padding:.25em .6em;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}}\
             table.fields th{{width:12em;color:#555;font-weight:normal}}\
             pre{{background:#f6f8fa;padding:.8em;overflow-x:auto;white-space:pre-wrap;word-break:break-word}}\
             code{{background:#f6f8fa;padding:0 .2em}}</style></head><body>{body}</body></html>",
            esc(&self.title)
        )
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

fn safe_url(url: &str) -> bool {
    let lower = url.trim().to_ascii_lowercase();
    (lower.starts_with("https://") || lower.starts_with("http://")) && !url.chars().any(char::is_whitespace)
}

fn html_cell(c: &Cell) -> String {
    match c {
        Cell::Text(t) => esc(t),
        Cell::Code(t) => format!("<code>{}</code>", esc(t)),
        Cell::Link { text, url } if safe_url(url) => format!("<a href=\"{}\">{}</a>", esc(url), esc(text)),
        Cell::Link { text, url } => format!("{} (<code>{}</code>)", esc(text), esc(url)),
    }
}

/// Inline Markdown from outside text: one line, and nothing that would start markup.
fn md_inline(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' | '\r' => out.push(' '),
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '#' | '!' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A code span whose delimiter is longer than any backtick run inside it.
fn md_code_span(s: &str) -> String {
    let one_line: String = s.chars().map(|c| if c == '\n' || c == '\r' || c == '|' { ' ' } else { c }).collect();
    let longest = longest_run(&one_line, '`');
    let ticks = "`".repeat(longest + 1);
    format!("{ticks} {one_line} {ticks}")
}

fn md_cell(c: &Cell) -> String {
    match c {
        Cell::Text(t) => md_inline(t),
        Cell::Code(t) => md_code_span(t),
        Cell::Link { text, url } if safe_url(url) => {
            format!("[{}](<{}>)", md_inline(text), url.replace(['<', '>'], ""))
        }
        Cell::Link { text, url } => format!("{} ({})", md_inline(text), md_code_span(url)),
    }
}

fn longest_run(s: &str, ch: char) -> usize {
    let (mut best, mut run) = (0, 0);
    for c in s.chars() {
        run = if c == ch { run + 1 } else { 0 };
        best = best.max(run);
    }
    best
}

/// A code fence longer than any backtick run in the text, so the text cannot close it.
fn fence_for(text: &str) -> String {
    "`".repeat(longest_run(text, '`').max(2) + 1)
}

/// Write `<dir>/<incident>.md` and `.html`; returns the Markdown path.
pub fn write(dir: &Path, incident: &Incident, trail: &[AuditEvent], record: &Value) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let report = Report::build(incident, trail, record);
    let md_path = dir.join(format!("{}.md", incident.id));
    std::fs::write(&md_path, report.markdown()).map_err(|e| format!("cannot write {}: {e}", md_path.display()))?;
    let html_path = dir.join(format!("{}.html", incident.id));
    std::fs::write(&html_path, report.html()).map_err(|e| format!("cannot write {}: {e}", html_path.display()))?;
    Ok(md_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_text_cannot_escape_its_place() {
        let nasty = "a ``` fence | pipe <script>alert(1)</script> [x](javascript:alert(1))";
        assert_eq!(fence_for("no ticks"), "```");
        assert_eq!(fence_for("has ```` four"), "`````");
        let cell = md_cell(&Cell::Text(nasty.into()));
        assert!(!cell.contains("|") || cell.contains("\\|"));
        assert!(!cell.contains("<script>"));
        let link = html_cell(&Cell::Link { text: "x".into(), url: "javascript:alert(1)".into() });
        assert!(!link.contains("<a "), "{link}");
        let ok = html_cell(&Cell::Link { text: "PD".into(), url: "https://example.pagerduty.com/incidents/P1".into() });
        assert!(ok.starts_with("<a href=\"https://"));
        assert!(!esc(nasty).contains('<'));
    }

    #[test]
    fn long_logs_keep_their_tail() {
        let log: String = (0..20_000).map(|i| if i % 100 == 99 { '\n' } else { 'x' }).collect::<String>() + "DONE";
        let kept = bounded_log(&log);
        assert!(kept.ends_with("DONE"));
        assert!(kept.starts_with("[… "));
        assert!(kept.chars().count() < MAX_LOG_CHARS + 100);
    }

    #[test]
    fn execution_links_only_for_arns() {
        assert_eq!(
            execution_link("arn:aws:states:eu-west-1:123456789012:execution:sm:inc-P1").as_deref(),
            Some(
                "https://eu-west-1.console.aws.amazon.com/states/home?region=eu-west-1#/v2/executions/details/arn:aws:states:eu-west-1:123456789012:execution:sm:inc-P1"
            )
        );
        assert_eq!(execution_link("inc-P1-incident"), None);
    }
}
