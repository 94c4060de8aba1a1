//! Incident reports (Markdown and HTML) from the incident record and its audit trail.

use serde_json::Value;
use std::path::{Path, PathBuf};

use selfheal::domain::{AuditEvent, Incident};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

pub fn markdown(incident: &Incident, trail: &[AuditEvent], record: &Value) -> String {
    let mut md = format!("# Incident {} — {}\n\n", incident.id, incident.title);
    let field = |k: &str| record.get(k).map(|v| v.to_string().trim_matches('"').to_string()).unwrap_or_default();
    md.push_str(&format!(
        "| | |\n|---|---|\n| service | {} ({}) |\n| outcome | {} |\n| route | {} |\n| rule | {} |\n| effectiveness | {} |\n| time to resolve | {} ms |\n\n",
        incident.service.name, incident.service.id, field("outcome"), field("route"), field("rule"), field("effectiveness"), field("time_to_resolve_ms")
    ));
    if let Some(h) = &incident.hypothesis {
        md.push_str(&format!(
            "## Hypothesis\n\n{} (confidence {})\n\n",
            h.root_cause,
            h.confidence.map_or("unknown".into(), |c| format!("{:.0}%", c.value() * 100.0))
        ));
        for e in &h.evidence {
            md.push_str(&format!("- {e}\n"));
        }
        md.push('\n');
    }
    if let Some(p) = &incident.plan {
        md.push_str(&format!(
            "## Plan ({:?} risk, hash `{}`)\n\n{}\n\n",
            p.risk,
            &p.hash[..12.min(p.hash.len())],
            p.analysis
        ));
    }
    if let Some(d) = &incident.decision {
        md.push_str(&format!("## Decision\n\n`{}` → **{}**: {}\n\n", d.rule, d.route.as_str(), d.explanation));
    }
    md.push_str("## Timeline\n\n| time (UTC) | actor | event |\n|---|---|---|\n");
    for e in trail {
        md.push_str(&format!("| {} | {} | {} |\n", e.at.format("%H:%M:%S%.3f"), e.actor, e.kind));
    }
    md
}

pub fn html(md_title: &str, incident: &Incident, trail: &[AuditEvent], record: &Value) -> String {
    let rows: String = trail
        .iter()
        .map(|e| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                e.at.format("%H:%M:%S%.3f"),
                esc(&e.actor),
                esc(&e.kind)
            )
        })
        .collect();
    let field = |k: &str| esc(&record.get(k).map(|v| v.to_string().trim_matches('"').to_string()).unwrap_or_default());
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{}</title>\
         <style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}td,th{{padding:.2em .6em;border-bottom:1px solid #ddd;text-align:left}}</style></head>\
         <body><h1>{}</h1><p>Service <b>{}</b> · outcome <b>{}</b> · route <b>{}</b> · rule <code>{}</code> · effectiveness <b>{}</b></p>\
         <h2>Hypothesis</h2><p>{}</p><h2>Timeline</h2><table><tr><th>time</th><th>actor</th><th>event</th></tr>{rows}</table></body></html>",
        esc(md_title),
        esc(md_title),
        esc(incident.service.name.as_str()),
        field("outcome"),
        field("route"),
        field("rule"),
        field("effectiveness"),
        esc(incident.hypothesis.as_ref().map_or("none", |h| h.root_cause.as_str())),
    )
}

/// Write `<dir>/<incident>.md` and `.html`; returns the Markdown path.
pub fn write(dir: &Path, incident: &Incident, trail: &[AuditEvent], record: &Value) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let md_path = dir.join(format!("{}.md", incident.id));
    let title = format!("Incident {} — {}", incident.id, incident.title);
    std::fs::write(&md_path, markdown(incident, trail, record)).map_err(|e| e.to_string())?;
    std::fs::write(dir.join(format!("{}.html", incident.id)), html(&title, incident, trail, record))
        .map_err(|e| e.to_string())?;
    Ok(md_path)
}
