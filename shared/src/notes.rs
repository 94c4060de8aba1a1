//! Investigator note parser. Cleric's note format is not documented, so this reads what people
//! and agents actually write: Markdown headings and bold labels, `Key: value` lines and dotted
//! leaders, tables, JSON (bare or in code fences), HTML fragments, percentages, `97/100`,
//! decimals and confidence words. Several hypotheses → the most confident one wins and the rest
//! become alternatives. A progress note without a finding yields no root cause (keep waiting).
//!
//! The note is untrusted text: it is only ever *data* here. Nothing in it is executed or changes
//! policy; it reaches the planner inside delimiters.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What `selfheal parse-note` prints (exactly these field names).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ParsedNote {
    pub root_cause: Option<String>,
    pub confidence: Option<f64>,
    pub evidence: Vec<String>,
    pub alternatives: Vec<String>,
    pub services: Vec<String>,
}

/// Confidence words → numbers. Documented defaults; configurable by passing another table.
pub const DEFAULT_CONFIDENCE_WORDS: &[(&str, f64)] = &[
    ("very high", 0.95),
    ("extremely high", 0.97),
    ("certain", 0.97),
    ("high", 0.85),
    ("likely", 0.75),
    ("medium", 0.6),
    ("moderate", 0.6),
    ("possible", 0.45),
    ("low", 0.3),
    ("very low", 0.1),
    ("unlikely", 0.2),
];

const MAX_INPUT: usize = 64 * 1024;
const MAX_FIELD: usize = 1000;
const MAX_ITEMS: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    RootCause,
    Confidence,
    Evidence,
    Alternatives,
    Services,
}

fn field_for(label: &str) -> Option<Field> {
    let key: String = label.chars().filter(|c| c.is_alphanumeric()).collect::<String>().to_lowercase();
    let key = key.trim_end_matches(|c: char| c.is_ascii_digit());
    Some(match key {
        "rootcause" | "probablerootcause" | "likelyrootcause" | "probablecause" | "likelycause" | "cause"
        | "hypothesis" | "tophypothesis" | "primaryhypothesis" | "mainhypothesis" | "diagnosis" | "finding"
        | "conclusion" | "rootcauseanalysis" | "rca" | "summary" => Field::RootCause,
        "confidence" | "confidencelevel" | "confidencescore" | "certainty" | "likelihood" | "probability" | "score" => {
            Field::Confidence
        }
        "evidence" | "supportingevidence" | "signals" | "observations" | "keyevidence" | "findings" | "data" => {
            Field::Evidence
        }
        "alternatives"
        | "alternativehypotheses"
        | "otherhypotheses"
        | "alsoconsidered"
        | "ruledout"
        | "otherpossibilities"
        | "alternativecauses" => Field::Alternatives,
        "service" | "services" | "affectedservice" | "affectedservices" | "impactedservice" | "impactedservices"
        | "component" | "components" => Field::Services,
        _ => return None,
    })
}

/// Remove HTML tags (keeping line breaks) and decode the common entities.
fn strip_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '<' {
            let mut tag = String::new();
            for t in chars.by_ref() {
                if t == '>' {
                    break;
                }
                tag.push(t);
            }
            let name: String = tag
                .trim_start_matches('/')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect::<String>()
                .to_lowercase();
            if matches!(name.as_str(), "br" | "p" | "div" | "li" | "tr" | "h1" | "h2" | "h3" | "h4") {
                out.push('\n');
            } else if matches!(name.as_str(), "td" | "th") {
                out.push_str(" | ");
            }
        } else {
            out.push(c);
        }
    }
    out.replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

fn clean(s: &str) -> String {
    let s = s.trim().trim_matches(|c: char| c == '*' || c == '_' || c == '`' || c == '"').trim();
    let mut out: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if out.chars().count() > MAX_FIELD {
        out = out.chars().take(MAX_FIELD).collect::<String>() + "…";
    }
    out
}

/// Parse a confidence expression: `94%`, `89.5 %`, `97/100`, `0.91`, `9/10`, `high`, `High (0.92)`.
pub fn parse_confidence(text: &str, words: &[(&str, f64)]) -> Option<f64> {
    let t = text.trim().to_lowercase();
    // Numbers first: a number beats a word in "high (0.92)".
    let bytes: Vec<char> = t.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() || (bytes[i] == '.' && bytes.get(i + 1).is_some_and(|c| c.is_ascii_digit())) {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == '.') {
                i += 1;
            }
            let num: String = bytes[start..i].iter().collect();
            let Ok(value) = num.parse::<f64>() else { continue };
            let rest: String = bytes[i..].iter().collect::<String>();
            let rest = rest.trim_start();
            let v = if rest.starts_with('%') || rest.starts_with("percent") {
                value / 100.0
            } else if let Some(den) = rest.strip_prefix('/') {
                let den: String = den.trim_start().chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
                match den.parse::<f64>() {
                    Ok(d) if d > 0.0 => value / d,
                    _ => return None,
                }
            } else if value <= 1.0 {
                value
            } else if value <= 100.0 {
                // "Confidence: 85" reads as a percentage.
                value / 100.0
            } else {
                return None;
            };
            return (0.0..=1.0).contains(&v).then_some(v);
        }
        i += 1;
    }
    // Longest matching word first ("very high" before "high").
    let mut sorted: Vec<&(&str, f64)> = words.iter().collect();
    sorted.sort_by_key(|(w, _)| std::cmp::Reverse(w.len()));
    sorted.iter().find(|(w, _)| contains_word(&t, w)).map(|(_, v)| *v)
}

fn contains_word(haystack: &str, word: &str) -> bool {
    haystack.match_indices(word).any(|(i, _)| {
        let before = haystack[..i].chars().last();
        let after = haystack[i + word.len()..].chars().next();
        before.is_none_or(|c| !c.is_alphanumeric()) && after.is_none_or(|c| !c.is_alphanumeric())
    })
}

fn split_list(value: &str) -> Vec<String> {
    value.split([',', ';']).map(clean).filter(|s| !s.is_empty()).take(MAX_ITEMS).collect()
}

/// A label/value split of one line: `Key: value`, `**Key**: value`, `Key ..... value`,
/// `| Key | value |`, `Key - value`.
fn split_label(line: &str) -> Option<(String, String)> {
    let l = line.trim();
    if l.starts_with('|') {
        let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
        if cells.len() >= 2 && !cells[0].chars().all(|c| c == '-' || c == ':' || c == ' ') {
            return Some((cells[0].to_string(), cells[1..].join(" ").trim().to_string()));
        }
        return None;
    }
    let l = l.trim_start_matches(['-', '*', '+', '>', '#', ' ']).trim();
    let l = l.trim_start_matches(|c: char| c.is_ascii_digit()).trim_start_matches(['.', ')']).trim();
    // Dotted leaders: "Confidence ........ 92%".
    if let Some(pos) = l.find("...") {
        let label = l[..pos].trim();
        let value = l[pos..].trim_start_matches(['.', ' ', '…']).trim();
        if !label.is_empty() && !value.is_empty() && label.len() <= 40 {
            return Some((label.to_string(), value.to_string()));
        }
    }
    for sep in [":", " - ", " — ", "="] {
        if let Some(pos) = l.find(sep) {
            let label = l[..pos].trim().trim_matches(['*', '_']).trim();
            let value = l[pos + sep.len()..].trim().trim_start_matches(['*', '_']).trim();
            if !label.is_empty() && label.len() <= 40 && label.split_whitespace().count() <= 4 {
                return Some((label.to_string(), value.to_string()));
            }
        }
    }
    None
}

fn heading_text(line: &str) -> Option<String> {
    let l = line.trim();
    if l.starts_with('#') {
        return Some(l.trim_start_matches('#').trim().trim_matches(['*', '_', ':']).trim().to_string());
    }
    // A line that is only bold text ("**Evidence**" or "**Evidence:**") acts as a heading.
    if l.starts_with("**") && l.ends_with("**") && l.len() > 4 {
        return Some(l.trim_matches('*').trim().trim_end_matches(':').trim().to_string());
    }
    // "Evidence:" alone on a line.
    if let Some(label) = l.strip_suffix(':')
        && !label.is_empty()
        && label.split_whitespace().count() <= 4
        && !label.contains(':')
    {
        return Some(label.trim_matches(['*', '_']).trim().to_string());
    }
    None
}

fn is_bullet(line: &str) -> Option<String> {
    let l = line.trim_start();
    for p in ["- ", "* ", "+ ", "• "] {
        if let Some(rest) = l.strip_prefix(p) {
            return Some(clean(rest));
        }
    }
    let digits: String = l.chars().take_while(|c| c.is_ascii_digit()).collect();
    if !digits.is_empty() {
        let rest = &l[digits.len()..];
        if let Some(r) = rest.strip_prefix(". ").or_else(|| rest.strip_prefix(") ")) {
            return Some(clean(r));
        }
    }
    None
}

/// One hypothesis block's fields, before choosing among several.
#[derive(Debug, Default, Clone)]
struct Block {
    root_cause: Option<String>,
    confidence: Option<f64>,
    evidence: Vec<String>,
    alternatives: Vec<String>,
    services: Vec<String>,
}

fn from_json(v: &Value, words: &[(&str, f64)]) -> Option<ParsedNote> {
    let obj = v.as_object()?;
    let mut block = Block::default();
    let mut hypotheses: Vec<Block> = Vec::new();
    for (k, val) in obj {
        let norm: String = k.chars().filter(|c| c.is_alphanumeric()).collect::<String>().to_lowercase();
        if matches!(norm.as_str(), "hypotheses" | "candidates") {
            if let Some(list) = val.as_array() {
                for h in list {
                    if let Some(p) = from_json(h, words) {
                        hypotheses.push(Block {
                            root_cause: p.root_cause,
                            confidence: p.confidence,
                            evidence: p.evidence,
                            alternatives: p.alternatives,
                            services: p.services,
                        });
                    }
                }
            }
            continue;
        }
        let Some(field) = field_for(k) else { continue };
        let as_list = |val: &Value| -> Vec<String> {
            match val {
                Value::Array(a) => a
                    .iter()
                    .filter_map(|x| x.as_str().map(clean).or_else(|| Some(clean(&x.to_string()))))
                    .take(MAX_ITEMS)
                    .collect(),
                Value::String(s) => split_list(s),
                _ => Vec::new(),
            }
        };
        match field {
            Field::RootCause => block.root_cause = val.as_str().map(clean).filter(|s| !s.is_empty()),
            Field::Confidence => {
                block.confidence = match val {
                    Value::Number(n) => n.as_f64().and_then(|f| {
                        let f = if f > 1.0 && f <= 100.0 { f / 100.0 } else { f };
                        (0.0..=1.0).contains(&f).then_some(f)
                    }),
                    Value::String(s) => parse_confidence(s, words),
                    _ => None,
                }
            }
            Field::Evidence => block.evidence = as_list(val),
            Field::Alternatives => block.alternatives = as_list(val),
            Field::Services => block.services = as_list(val),
        }
    }
    if !hypotheses.is_empty() && block.root_cause.is_none() {
        return Some(choose(hypotheses, block));
    }
    (block.root_cause.is_some() || block.confidence.is_some()).then(|| finish(block))
}

fn finish(b: Block) -> ParsedNote {
    ParsedNote {
        root_cause: b.root_cause,
        confidence: b.confidence,
        evidence: b.evidence,
        alternatives: b.alternatives,
        services: b.services,
    }
}

/// Several hypotheses: the most confident (first on ties) wins; the others become alternatives.
fn choose(mut blocks: Vec<Block>, shared: Block) -> ParsedNote {
    blocks.retain(|b| b.root_cause.is_some());
    if blocks.is_empty() {
        return finish(shared);
    }
    let best = blocks
        .iter()
        .enumerate()
        .max_by(|(ia, a), (ib, b)| {
            a.confidence.unwrap_or(-1.0).total_cmp(&b.confidence.unwrap_or(-1.0)).then(ib.cmp(ia))
        })
        .map(|(i, _)| i)
        .unwrap_or(0);
    let winner = blocks.remove(best);
    let mut alternatives: Vec<String> = blocks
        .iter()
        .filter_map(|b| {
            b.root_cause.as_ref().map(|r| match b.confidence {
                Some(c) => format!("{r} ({:.0}%)", c * 100.0),
                None => r.clone(),
            })
        })
        .collect();
    alternatives.extend(winner.alternatives.iter().cloned());
    alternatives.extend(shared.alternatives.iter().cloned());
    let mut services = winner.services.clone();
    services.extend(shared.services.iter().cloned());
    let mut evidence = winner.evidence.clone();
    evidence.extend(shared.evidence.iter().cloned());
    dedup(&mut alternatives);
    dedup(&mut services);
    dedup(&mut evidence);
    ParsedNote {
        root_cause: winner.root_cause,
        confidence: winner.confidence.or(shared.confidence),
        evidence,
        alternatives,
        services,
    }
}

fn dedup(v: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    v.retain(|x| seen.insert(x.to_lowercase()));
    v.truncate(MAX_ITEMS);
}

fn json_candidates(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("```") {
        let after = &rest[start + 3..];
        let body_start = after.find('\n').map_or(0, |n| n + 1);
        let Some(end) = after[body_start..].find("```") else { break };
        out.push(after[body_start..body_start + end].trim());
        rest = &after[body_start + end + 3..];
    }
    let t = text.trim();
    if t.starts_with('{') && t.ends_with('}') {
        out.push(t);
    }
    out
}

/// Parse a note with the default confidence words.
pub fn parse_note(text: &str) -> ParsedNote {
    parse_note_with(text, DEFAULT_CONFIDENCE_WORDS)
}

pub fn parse_note_with(text: &str, words: &[(&str, f64)]) -> ParsedNote {
    let text: String = text.chars().take(MAX_INPUT).collect();
    for candidate in json_candidates(&text) {
        if let Ok(v) = serde_json::from_str::<Value>(candidate)
            && let Some(parsed) = from_json(&v, words)
        {
            return parsed;
        }
    }
    let text = strip_html(&text);
    let mut blocks: Vec<Block> = Vec::new();
    let mut shared = Block::default();
    let mut current: Option<usize> = None; // index into blocks when inside "Hypothesis N"
    let mut section: Option<Field> = None;
    let mut pending_paragraph_for_root = false;

    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() {
            pending_paragraph_for_root = false;
            continue;
        }
        let target: &mut Block = match current {
            Some(i) => &mut blocks[i],
            None => &mut shared,
        };
        if let Some(h) = heading_text(line) {
            let lower = h.to_lowercase();
            // "Hypothesis 2 (confidence 40%): …" or "## Hypothesis 1" starts a new candidate.
            if lower.starts_with("hypothesis") && lower.chars().any(|c| c.is_ascii_digit())
                || lower.starts_with("alternative hypothesis")
                || lower.starts_with("candidate")
            {
                blocks.push(Block::default());
                current = Some(blocks.len() - 1);
                section = None;
                if let Some((_, v)) = split_label(&h) {
                    let last = blocks.len() - 1;
                    let b = &mut blocks[last];
                    if let Some(c) = parse_confidence(&v, words).filter(|_| v.contains('%') || v.contains('/')) {
                        b.confidence = Some(c);
                    }
                    let rc = clean(v.split('(').next().unwrap_or(&v));
                    if !rc.is_empty() && parse_confidence(&rc, &[]).is_none() {
                        b.root_cause = Some(rc);
                    }
                }
                pending_paragraph_for_root = blocks[blocks.len() - 1].root_cause.is_none();
                continue;
            }
            section = field_for(&h);
            pending_paragraph_for_root = section == Some(Field::RootCause);
            if let Some(Field::Confidence) = section {
                // "## Confidence: 92%" on one line.
                if let Some(c) = h.split_once(':').and_then(|(_, v)| parse_confidence(v, words)) {
                    target.confidence = Some(c);
                }
            }
            continue;
        }
        if let Some(item) = is_bullet(line) {
            // A bullet may itself be "Key: value".
            if let Some((label, value)) = split_label(&item)
                && let Some(f) = field_for(&label)
            {
                assign(target, f, &value, words);
                continue;
            }
            match section {
                Some(Field::Evidence) => target.evidence.push(item),
                Some(Field::Alternatives) => target.alternatives.push(item),
                Some(Field::Services) => target.services.push(item),
                Some(Field::RootCause) if target.root_cause.is_none() => target.root_cause = Some(item),
                _ => {}
            }
            continue;
        }
        if let Some((label, value)) = split_label(line)
            && let Some(f) = field_for(&label)
        {
            if value.is_empty() {
                section = Some(f);
                pending_paragraph_for_root = f == Field::RootCause;
            } else {
                assign(target, f, &value, words);
            }
            continue;
        }
        if pending_paragraph_for_root && target.root_cause.is_none() {
            target.root_cause = Some(clean(line));
            pending_paragraph_for_root = false;
            continue;
        }
        match section {
            Some(Field::Evidence) => target.evidence.push(clean(line)),
            Some(Field::Alternatives) => target.alternatives.push(clean(line)),
            Some(Field::Services) => target.services.extend(split_list(line)),
            Some(Field::Confidence) if target.confidence.is_none() => target.confidence = parse_confidence(line, words),
            _ => {}
        }
    }

    if shared.root_cause.is_none() && blocks.is_empty() {
        shared.root_cause = sentence_root_cause(&text);
    }
    let mut parsed =
        if blocks.iter().any(|b| b.root_cause.is_some()) { choose(blocks, shared) } else { finish(shared) };
    for list in [&mut parsed.evidence, &mut parsed.alternatives, &mut parsed.services] {
        list.retain(|s| !s.is_empty());
        dedup(list);
    }
    if parsed.root_cause.as_deref().is_some_and(|r| r.is_empty() || is_placeholder(r)) {
        parsed.root_cause = None;
    }
    parsed
}

fn assign(b: &mut Block, f: Field, value: &str, words: &[(&str, f64)]) {
    match f {
        Field::RootCause => {
            if b.root_cause.is_none() {
                let v = clean(value);
                if !v.is_empty() {
                    b.root_cause = Some(v);
                }
            }
        }
        // The first confidence stated wins: text appended later (a quoted log, an injected
        // "Confidence: 100%") cannot raise it.
        Field::Confidence => {
            if b.confidence.is_none() {
                b.confidence = parse_confidence(value, words);
            }
        }
        Field::Evidence => b.evidence.extend(split_list(value)),
        Field::Alternatives => b.alternatives.extend(split_list(value)),
        Field::Services => b.services.extend(split_list(value)),
    }
}

/// "Still investigating", "TBD", "unknown" are not findings.
fn is_placeholder(r: &str) -> bool {
    let l = r.to_lowercase();
    ["tbd", "unknown", "n/a", "none", "pending", "investigating", "not yet determined", "still investigating", "todo"]
        .iter()
        .any(|p| {
            l == *p
                || l.starts_with(&format!("{p} "))
                || l.starts_with(&format!("{p}."))
                || l.starts_with(&format!("{p}…"))
        })
}

/// Prose fallback: "The root cause is X." / "likely caused by X".
fn sentence_root_cause(text: &str) -> Option<String> {
    let lower = text.to_lowercase();
    for marker in ["root cause is ", "root cause was ", "root cause appears to be ", "caused by ", "due to "] {
        if let Some(pos) = lower.find(marker) {
            let start = pos + marker.len();
            let rest = &text[start..];
            let end = rest.find(['.', '\n']).unwrap_or(rest.len());
            let cause = clean(&rest[..end]);
            if cause.split_whitespace().count() >= 2 {
                return Some(cause);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confidence_forms() {
        let w = DEFAULT_CONFIDENCE_WORDS;
        assert_eq!(parse_confidence("94%", w), Some(0.94));
        assert_eq!(parse_confidence("89.5 %", w), Some(0.895));
        assert_eq!(parse_confidence("97/100", w), Some(0.97));
        assert_eq!(parse_confidence("0.91", w), Some(0.91));
        assert_eq!(parse_confidence("9/10", w), Some(0.9));
        assert_eq!(parse_confidence("High", w), Some(0.85));
        assert_eq!(parse_confidence("very high", w), Some(0.95));
        assert_eq!(parse_confidence("High (0.92)", w), Some(0.92));
        assert_eq!(parse_confidence("85", w), Some(0.85));
        assert_eq!(parse_confidence("150%", w), None);
        assert_eq!(parse_confidence("1/0", w), None);
        assert_eq!(parse_confidence("highway", w), None);
        assert_eq!(parse_confidence("n/a", w), None);
    }
}
