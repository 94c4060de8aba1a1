//! Investigator note parser. Cleric's note format is not documented (contracts.md §1.8), so this
//! reads the structure people and agents actually write, through a CommonMark parser
//! (`pulldown-cmark`) rather than line prefixes: headings (Markdown, setext, bold-only lines,
//! emoji-prefixed), block quotes, bullet and numbered lists, tables (key/value or one hypothesis
//! per row), `Key: value` lines whose key may carry a qualifier ("Root cause (probable): …"),
//! inline confidences ("Top hypothesis (confidence 38%): …", "… — 85% confidence"), JSON (bare or
//! fenced), YAML in a fence, dotted leaders and HTML fragments. Labels are recognised in
//! English, Spanish, French, German, Portuguese, Italian, Chinese and Japanese ([`field_for`]).
//!
//! Confidence: percentages, fractions, `N/100`, `N out of 10`, decimals (`0.87`, `0,87`) and
//! words through [`DEFAULT_CONFIDENCE_WORDS`]. The first confidence a block states wins, so text
//! appended later (a quoted log, an injected "Confidence: 100%") never raises it.
//!
//! Several hypotheses are ranked: the most confident (the first listed on ties) is the root
//! cause and the others become alternatives. A summary, a symptom, an impact statement or a
//! question is never a root cause, and neither is a placeholder ("TBD", "not yet identified"): a
//! progress note yields no root cause (keep waiting).
//!
//! [`accept_model_reading`] is the check applied to what a model says it read in the note (the
//! guarded fallback of `stages::cognition::parse_hypothesis`): a field is taken only where the
//! rules found nothing, and only when its text appears in the note.
//!
//! The note is untrusted text: it is only ever *data* here. Nothing in it is executed or changes
//! policy; it reaches the planner inside delimiters.

use pulldown_cmark::{CodeBlockKind, Event, Options, Parser, Tag, TagEnd};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Which parser produced a value: the deterministic rules of this module, or the model fallback
/// (checked against the note by [`accept_model_reading`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParserKind {
    #[default]
    Rules,
    Model,
}

/// What `selfheal parse-note` prints: these field names, plus `parser` ("model" when the model
/// fallback supplied the root cause or the confidence).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ParsedNote {
    pub root_cause: Option<String>,
    pub confidence: Option<f64>,
    pub evidence: Vec<String>,
    pub alternatives: Vec<String>,
    pub services: Vec<String>,
    #[serde(default)]
    pub parser: ParserKind,
}

/// Confidence words → numbers. Documented defaults; configurable by passing another table. A
/// longer phrase wins over a shorter one it contains ("very high" over "high").
///
/// | words | value |
/// |---|---|
/// | certain, extremely high | 0.97 |
/// | very high | 0.95 |
/// | high, alta, alto, élevée, elevee, hoch, 高 | 0.85 |
/// | likely, probable | 0.75 |
/// | medium, moderate, media, moyenne, mittel, 中 | 0.6 |
/// | possible | 0.45 |
/// | low, baja, bajo, faible, niedrig, 低 | 0.3 |
/// | unlikely | 0.2 |
/// | very low | 0.1 |
pub const DEFAULT_CONFIDENCE_WORDS: &[(&str, f64)] = &[
    ("very high", 0.95),
    ("extremely high", 0.97),
    ("certain", 0.97),
    ("high", 0.85),
    ("alta", 0.85),
    ("alto", 0.85),
    ("élevée", 0.85),
    ("elevee", 0.85),
    ("hoch", 0.85),
    ("高", 0.85),
    ("likely", 0.75),
    ("probable", 0.75),
    ("medium", 0.6),
    ("moderate", 0.6),
    ("media", 0.6),
    ("moyenne", 0.6),
    ("mittel", 0.6),
    ("中", 0.6),
    ("possible", 0.45),
    ("low", 0.3),
    ("baja", 0.3),
    ("bajo", 0.3),
    ("faible", 0.3),
    ("niedrig", 0.3),
    ("低", 0.3),
    ("very low", 0.1),
    ("unlikely", 0.2),
];

const MAX_INPUT: usize = 64 * 1024;
const MAX_FIELD: usize = 1000;
const MAX_ITEMS: usize = 20;

/// What a label or heading introduces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    RootCause,
    Confidence,
    Evidence,
    Alternatives,
    Services,
    /// A list of ranked hypotheses: each item or row is a candidate.
    Hypotheses,
    /// Summary, symptoms, impact, questions, next steps, logs…: never a root cause.
    Ignore,
}

fn norm_key(label: &str) -> String {
    let key: String = label.chars().filter(|c| c.is_alphanumeric()).collect::<String>().to_lowercase();
    key.trim_end_matches(|c: char| c.is_ascii_digit()).to_string()
}

/// The field a label names (case, punctuation, emoji and a trailing number are ignored).
fn field_for(label: &str) -> Option<Field> {
    let key = norm_key(label);
    Some(match key.as_str() {
        "rootcause" | "probablerootcause" | "likelyrootcause" | "suspectedrootcause" | "mostlikelyrootcause"
        | "primaryrootcause" | "identifiedrootcause" | "rootcausehypothesis" | "rootcausesummary" | "probablecause"
        | "likelycause" | "mostlikelycause" | "suspectedcause" | "cause" | "hypothesis" | "tophypothesis"
        | "primaryhypothesis" | "mainhypothesis" | "leadinghypothesis" | "besthypothesis" | "workinghypothesis"
        | "diagnosis" | "finding" | "conclusion" | "verdict" | "rootcauseanalysis" | "rca"
        // es / pt / fr / de / it / zh / ja
        | "causaraíz" | "causaraiz" | "causaprincipal" | "causaprobable" | "hipótesis" | "hipotesis"
        | "causaprovável" | "hipótese" | "causeracine" | "causeprofonde" | "causeprobable" | "hypothèse"
        | "grundursache" | "ursache" | "hauptursache" | "vermuteteursache" | "hypothese" | "causaradice"
        | "causaprincipale" | "ipotesi" | "根本原因" | "根因" | "原因" | "根本原因分析" | "推定原因" => Field::RootCause,
        "confidence" | "confidencelevel" | "confidencescore" | "overallconfidence" | "certainty" | "likelihood"
        | "probability" | "confianza" | "niveldeconfianza" | "confiance" | "niveaudeconfiance" | "konfidenz"
        | "sicherheit" | "zuversicht" | "confiança" | "fiducia" | "affidabilità" | "置信度" | "信心" | "确信度"
        | "信頼度" | "確信度" | "확신도" | "신뢰도" => Field::Confidence,
        "evidence" | "supportingevidence" | "keyevidence" | "signals" | "observations" | "findings" | "data"
        | "indicators" | "supportingdata" | "evidencia" | "evidencias" | "pruebas" | "preuves" | "indices"
        | "belege" | "beweise" | "hinweise" | "evidências" | "evidenze" | "证据" | "根拠" | "証拠" => Field::Evidence,
        "alternatives" | "alternativehypotheses" | "otherhypotheses" | "alsoconsidered" | "ruledout"
        | "otherpossibilities" | "alternativecauses" | "othercandidates" | "lesslikely" | "alternativas"
        | "hipótesisalternativas" | "autreshypothèses" | "alternativen" | "其他假设" | "他の仮説" => {
            Field::Alternatives
        }
        "hypotheses" | "candidates" | "candidatecauses" | "possiblecauses" | "likelycauses" | "rankedhypotheses"
        | "tophypotheses" | "hypothesesranked" | "hipótesisposibles" | "hypothèses" | "hypothesen" | "假设" => {
            Field::Hypotheses
        }
        "service" | "services" | "affectedservice" | "affectedservices" | "impactedservice" | "impactedservices"
        | "component" | "components" | "servicio" | "servicios" | "serviço" | "serviços" | "dienst" | "dienste"
        | "servizio" | "servizi" | "服务" | "サービス" => Field::Services,
        "summary" | "tldr" | "overview" | "symptom" | "symptoms" | "impact" | "customerimpact" | "userimpact"
        | "question" | "questions" | "openquestions" | "openquestion" | "nextsteps" | "nextstep" | "actions"
        | "actionitems" | "recommendation" | "recommendations" | "suggestedfix" | "remediation" | "mitigation"
        | "fix" | "timeline" | "status" | "logs" | "logexcerpt" | "stacktrace" | "detection" | "alert" | "trigger"
        | "context" | "background" | "resumen" | "síntomas" | "sintomas" | "impacto" | "résumé" | "symptômes"
        | "zusammenfassung" | "symptome" | "auswirkung" | "摘要" | "症状" | "概要" | "影响" => Field::Ignore,
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
            if matches!(name.as_str(), "br" | "p" | "div" | "tr" | "ul" | "ol" | "table") {
                out.push('\n');
            } else if matches!(name.as_str(), "h1" | "h2" | "h3" | "h4") {
                out.push_str(if tag.starts_with('/') { "\n" } else { "\n## " });
            } else if name == "li" {
                out.push_str(if tag.starts_with('/') { "\n" } else { "\n- " });
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

/// Does the note carry HTML markup (rather than a stray `<` in prose)?
fn looks_like_html(text: &str) -> bool {
    let l = text.to_ascii_lowercase();
    ["<br", "<b>", "</b>", "<p>", "</p>", "<li>", "<ul>", "<div", "<strong>", "<table", "<td", "<h2", "<h3"]
        .iter()
        .any(|t| l.contains(t))
}

fn clean(s: &str) -> String {
    let s = s.trim().trim_matches(|c: char| c == '*' || c == '_' || c == '`' || c == '"' || c == '>').trim();
    let mut out: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if out.chars().count() > MAX_FIELD {
        out = out.chars().take(MAX_FIELD).collect::<String>() + "…";
    }
    out
}

/// One number in a confidence expression, and how it was written.
enum Num {
    /// `%`, `percent`, `/N`, `out of N`, or a decimal `0.x`: unambiguous.
    Strong(Option<f64>),
    /// A bare integer ("85"); read as a percentage only when it leads the expression.
    Bare(f64, bool),
}

/// Parse a confidence expression: `94%`, `89.5 %`, `87,5 %`, `97/100`, `8 out of 10`, `0.91`,
/// `9/10`, `high`, `High (0.92)`, `85`. A number written as a percentage, fraction or decimal
/// wins over a word; a bare integer counts only when it leads ("85", not "based on 3 signals").
pub fn parse_confidence(text: &str, words: &[(&str, f64)]) -> Option<f64> {
    let lower = text.trim().to_lowercase();
    let chars: Vec<char> = lower.chars().collect();
    let mut nums = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let starts =
            chars[i].is_ascii_digit() || (chars[i] == '.' && chars.get(i + 1).is_some_and(|c| c.is_ascii_digit()));
        // "p99", "v2.3": a number glued to a word is not a confidence.
        if !starts || (i > 0 && chars[i - 1].is_alphanumeric()) {
            i += 1;
            continue;
        }
        let leading = chars[..i].iter().all(|c| !c.is_alphanumeric());
        let start = i;
        let mut dot = false;
        while i < chars.len() {
            let c = chars[i];
            let sep = (c == '.' || c == ',') && !dot && chars.get(i + 1).is_some_and(|n| n.is_ascii_digit());
            if c.is_ascii_digit() {
                i += 1;
            } else if sep
                && !(c == ','
                    && chars.get(i + 2).is_some_and(|n| n.is_ascii_digit())
                    && chars.get(i + 3).is_some_and(|n| n.is_ascii_digit()))
            {
                // A decimal point or a decimal comma ("87,5"), not a thousands separator.
                dot = true;
                i += 1;
            } else {
                break;
            }
        }
        let num: String = chars[start..i].iter().map(|c| if *c == ',' { '.' } else { *c }).collect();
        let Ok(value) = num.parse::<f64>() else { continue };
        // A bounded look-ahead keeps a long line of numbers linear.
        let rest: String = chars[i..(i + 24).min(chars.len())].iter().collect();
        let rest = rest.trim_start();
        let denominator = |r: &str| -> Option<f64> {
            let d: String = r.trim_start().chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
            d.parse::<f64>().ok().filter(|d| *d > 0.0)
        };
        let n = if rest.starts_with('%') || rest.starts_with("percent") || rest.starts_with("pct") {
            Num::Strong(Some(value / 100.0))
        } else if let Some(den) = rest.strip_prefix('/') {
            Num::Strong(denominator(den).map(|d| value / d))
        } else if let Some(den) = rest.strip_prefix("out of") {
            Num::Strong(denominator(den).map(|d| value / d))
        } else if dot && value <= 1.0 {
            Num::Strong(Some(value))
        } else {
            Num::Bare(value, leading)
        };
        nums.push(n);
    }
    if let Some(Num::Strong(v)) = nums.iter().find(|n| matches!(n, Num::Strong(_))) {
        return v.filter(|v| (0.0..=1.0).contains(v));
    }
    // Longest matching word first ("very high" before "high").
    let mut sorted: Vec<&(&str, f64)> = words.iter().collect();
    sorted.sort_by_key(|(w, _)| std::cmp::Reverse(w.chars().count()));
    if let Some((_, v)) = sorted.iter().find(|(w, _)| contains_word(&lower, w)) {
        return Some(*v);
    }
    match nums.first() {
        Some(Num::Bare(v, true)) if *v <= 1.0 => Some(*v),
        // "Confidence: 85" reads as a percentage.
        Some(Num::Bare(v, true)) if *v <= 100.0 => Some(v / 100.0),
        _ => None,
    }
}

fn contains_word(haystack: &str, word: &str) -> bool {
    // CJK words stand alone without spaces around them.
    let cjk = word.chars().all(|c| c as u32 >= 0x3000);
    haystack.match_indices(word).any(|(i, _)| {
        if cjk {
            return true;
        }
        let before = haystack[..i].chars().last();
        let after = haystack[i + word.len()..].chars().next();
        before.is_none_or(|c| !c.is_alphanumeric()) && after.is_none_or(|c| !c.is_alphanumeric())
    })
}

fn split_list(value: &str) -> Vec<String> {
    value.split([',', ';', '、']).map(clean).filter(|s| !s.is_empty()).take(MAX_ITEMS).collect()
}

/// A label split: the label without its qualifier, the qualifier in parentheses (if any), and
/// the value. `Key: value`, `Key (qualifier): value`, `Key ..... value`, `Key - value`,
/// `Key = value`, `Key：value`. The separator is the first one outside parentheses.
fn split_label(line: &str) -> Option<(String, Option<String>, String)> {
    let l = line.trim().trim_start_matches(['-', '*', '+', '>', '#', ' ', '•']).trim();
    // Dotted leaders: "Confidence ........ 92%".
    if let Some(pos) = l.find("...").or_else(|| l.find('…')) {
        let label = l[..pos].trim();
        let value = l[pos..].trim_start_matches(['.', ' ', '…']).trim();
        if !label.is_empty() && !value.is_empty() && label.chars().count() <= 40 && !label.contains(':') {
            let (base, qualifier) = split_qualifier(label);
            return Some((base, qualifier, value.to_string()));
        }
    }
    let mut depth = 0i32;
    let mut best: Option<(usize, usize)> = None;
    for (i, c) in l.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            _ => {}
        }
        if depth != 0 {
            continue;
        }
        let rest = &l[i..];
        let sep = [":", "：", " - ", " — ", " – ", "="].iter().find(|s| rest.starts_with(**s));
        if let Some(sep) = sep {
            best = Some((i, sep.len()));
            break;
        }
    }
    let (pos, len) = best?;
    let label = l[..pos].trim().trim_matches(['*', '_']).trim();
    let value = l[pos + len..].trim().trim_start_matches(['*', '_']).trim();
    let (base, qualifier) = split_qualifier(label);
    if base.is_empty() || base.chars().count() > 40 || base.split_whitespace().count() > 4 {
        return None;
    }
    Some((base, qualifier, value.to_string()))
}

/// "Root cause (probable)" → ("Root cause", Some("probable")).
fn split_qualifier(label: &str) -> (String, Option<String>) {
    match (label.find('('), label.rfind(')')) {
        (Some(open), Some(close)) if close > open => {
            let base = format!("{} {}", &label[..open], &label[close + 1..]);
            (clean(&base), Some(label[open + 1..close].trim().to_string()))
        }
        _ => (clean(label), None),
    }
}

/// A confidence stated inside text: a qualifier ("confidence 38%"), a parenthetical
/// ("(85%)", "(confidence: high)") or a trailing clause ("— 85% confidence").
/// Without a cue word only a lone percentage ("85%") or decimal ("0.85") counts, and only where
/// `bare_ok` (a ranked list of hypotheses): "disk full (100%)" after a root-cause label states a
/// symptom, not a confidence.
fn stated_confidence(text: &str, words: &[(&str, f64)], bare_ok: bool) -> Option<f64> {
    let lower = text.to_lowercase();
    if confidence_cue(&lower) {
        return parse_confidence(text, words);
    }
    let t = lower.trim();
    let lone_number = !t.chars().any(char::is_alphabetic) && t.chars().any(|c| c.is_ascii_digit());
    let percent = lone_number && t.contains('%') && !t.contains('/');
    let decimal = t.parse::<f64>().is_ok_and(|v| v <= 1.0) && t.contains('.');
    if bare_ok && (percent || decimal) { parse_confidence(text, &[]) } else { None }
}

/// Words that say a number is a confidence.
fn confidence_cue(lower: &str) -> bool {
    [
        "confidence",
        "conf.",
        "conf ",
        "conf:",
        "confident",
        "certainty",
        "likelihood",
        "probability",
        "sure",
        "confianza",
        "confiance",
        "konfidenz",
        "sicherheit",
        "confiança",
        "fiducia",
        "置信",
        "信頼",
        "确信",
        "p=",
    ]
    .iter()
    .any(|c| lower.contains(c))
}

/// Split an inline confidence off a hypothesis: "Redis maxmemory reached (85%)",
/// "Redis maxmemory reached — confidence: high", "pool exhausted, 70% confidence".
fn split_inline_confidence(value: &str, words: &[(&str, f64)], bare_ok: bool) -> (String, Option<f64>) {
    let v = value.trim();
    // A trailing parenthetical or bracket.
    for (open, close) in [('(', ')'), ('[', ']')] {
        if v.ends_with(close)
            && let Some(start) = v.rfind(open)
        {
            let inner = &v[start + 1..v.len() - 1];
            if let Some(c) = stated_confidence(inner, words, bare_ok) {
                return (clean(&v[..start]), Some(c));
            }
        }
    }
    // A trailing clause after a separator that states a confidence. (Positions come from `v`
    // itself: lowercasing may change byte lengths.)
    for sep in [" — ", " – ", " - ", ", ", "; ", " | ", ": "] {
        if let Some(pos) = v.rfind(sep) {
            let tail = &v[pos + sep.len()..];
            if tail.split_whitespace().count() <= 5
                && confidence_cue(&tail.to_lowercase())
                && let Some(c) = stated_confidence(tail, words, bare_ok)
            {
                return (clean(&v[..pos]), Some(c));
            }
        }
    }
    // A leading confidence: "85% — Redis maxmemory reached".
    (clean(v), None)
}

/// One structural line of the note, as the Markdown parser saw it.
#[derive(Debug, Clone, PartialEq)]
enum Kind {
    /// A Markdown heading (its level), or a line that is only bold text (level 7).
    Heading(u8),
    Para,
    /// The first line of a list item, at its nesting depth (1 = top level).
    Item(usize),
    /// A table row: its cells, and whether it is the header row.
    Row(Vec<String>, bool),
    /// A line of a code block, with the fence's language.
    Code(String),
}

#[derive(Debug, Clone)]
struct Line {
    kind: Kind,
    text: String,
    /// The table a row belongs to (rows of one table share it).
    table: usize,
}

/// Walk the Markdown events into lines. Soft breaks split lines: `Key: value` lines written
/// one under the other are one Markdown paragraph.
fn lines_of(text: &str) -> Vec<Line> {
    let mut opts = Options::empty();
    opts.insert(Options::ENABLE_TABLES);
    opts.insert(Options::ENABLE_STRIKETHROUGH);
    opts.insert(Options::ENABLE_TASKLISTS);
    let mut out: Vec<Line> = Vec::new();
    let mut buf = String::new();
    let mut heading: Option<u8> = None;
    let mut items = 0usize;
    let mut item_first_line = false;
    let mut code: Option<String> = None;
    let mut cells: Vec<String> = Vec::new();
    let mut in_cell = false;
    let mut table = 0usize;
    let mut in_head = false;
    // Bold-only lines: alphanumeric text outside `**…**` on the current line, and whether any
    // bold text was seen.
    let mut strong = 0usize;
    let mut outside = 0usize;
    let mut saw_strong = false;

    fn flush(
        out: &mut Vec<Line>,
        buf: &mut String,
        kind: Kind,
        table: usize,
        outside: &mut usize,
        saw_strong: &mut bool,
    ) {
        let text = buf.trim().to_string();
        buf.clear();
        let bold_only = *saw_strong && *outside == 0;
        *outside = 0;
        *saw_strong = false;
        if text.is_empty() {
            return;
        }
        let kind = if bold_only && matches!(kind, Kind::Para) { Kind::Heading(7) } else { kind };
        out.push(Line { kind, text, table });
    }

    for event in Parser::new_ext(text, opts) {
        let kind_now = |heading: Option<u8>, item_first: bool, items: usize| match heading {
            Some(l) => Kind::Heading(l),
            None if item_first && items > 0 => Kind::Item(items),
            None => Kind::Para,
        };
        match event {
            Event::Start(Tag::Heading { level, .. }) => {
                flush(&mut out, &mut buf, kind_now(None, item_first_line, items), table, &mut outside, &mut saw_strong);
                heading = Some(level as u8);
            }
            Event::End(TagEnd::Heading(_)) => {
                flush(&mut out, &mut buf, kind_now(heading, false, items), table, &mut outside, &mut saw_strong);
                heading = None;
            }
            Event::Start(Tag::Item) => {
                flush(&mut out, &mut buf, kind_now(None, item_first_line, items), table, &mut outside, &mut saw_strong);
                items += 1;
                item_first_line = true;
            }
            Event::End(TagEnd::Item) => {
                flush(&mut out, &mut buf, kind_now(None, item_first_line, items), table, &mut outside, &mut saw_strong);
                items = items.saturating_sub(1);
                item_first_line = false;
            }
            // A nested list ends its parent item's first line.
            Event::Start(Tag::List(_)) if item_first_line && !buf.trim().is_empty() => {
                flush(&mut out, &mut buf, Kind::Item(items), table, &mut outside, &mut saw_strong);
                item_first_line = false;
            }
            Event::End(TagEnd::Paragraph) | Event::End(TagEnd::BlockQuote(_)) => {
                let was_first = item_first_line;
                flush(&mut out, &mut buf, kind_now(None, item_first_line, items), table, &mut outside, &mut saw_strong);
                if was_first {
                    item_first_line = false;
                }
            }
            Event::SoftBreak | Event::HardBreak => {
                if code.is_some() {
                    buf.push('\n');
                } else {
                    let k = kind_now(heading, item_first_line, items);
                    let emitted = !buf.trim().is_empty();
                    flush(&mut out, &mut buf, k, table, &mut outside, &mut saw_strong);
                    if emitted {
                        item_first_line = false;
                    }
                }
            }
            Event::Start(Tag::CodeBlock(kind)) => {
                flush(&mut out, &mut buf, kind_now(None, item_first_line, items), table, &mut outside, &mut saw_strong);
                code = Some(match kind {
                    CodeBlockKind::Fenced(lang) => lang.trim().to_lowercase(),
                    CodeBlockKind::Indented => "indented".into(),
                });
            }
            Event::End(TagEnd::CodeBlock) => {
                let lang = code.take().unwrap_or_default();
                for l in buf.lines() {
                    if !l.trim().is_empty() {
                        out.push(Line { kind: Kind::Code(lang.clone()), text: l.to_string(), table });
                    }
                }
                buf.clear();
                outside = 0;
                saw_strong = false;
            }
            Event::Start(Tag::Table(_)) => {
                flush(&mut out, &mut buf, kind_now(None, item_first_line, items), table, &mut outside, &mut saw_strong);
                table += 1;
            }
            Event::Start(Tag::TableHead) => in_head = true,
            Event::End(TagEnd::TableHead) | Event::End(TagEnd::TableRow) => {
                let row = std::mem::take(&mut cells);
                let text = row.join(" | ");
                if !text.trim().is_empty() {
                    out.push(Line { kind: Kind::Row(row, in_head), text, table });
                }
                in_head = false;
            }
            Event::Start(Tag::TableCell) => {
                in_cell = true;
                buf.clear();
            }
            Event::End(TagEnd::TableCell) => {
                in_cell = false;
                cells.push(clean(&buf));
                buf.clear();
                outside = 0;
                saw_strong = false;
            }
            Event::Start(Tag::Strong) => {
                strong += 1;
                saw_strong = true;
            }
            Event::End(TagEnd::Strong) => strong = strong.saturating_sub(1),
            Event::Text(t) | Event::Code(t) => {
                if strong == 0 && code.is_none() && !in_cell {
                    outside += t.chars().filter(|c| c.is_alphanumeric()).count();
                }
                buf.push_str(&t);
            }
            Event::Html(t) | Event::InlineHtml(t) => buf.push_str(&strip_html(&t)),
            Event::TaskListMarker(_) | Event::Rule => {}
            _ => {}
        }
    }
    flush(&mut out, &mut buf, Kind::Para, table, &mut outside, &mut saw_strong);
    out
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
        let field = field_for(k);
        // A nested object under a root-cause key: {"root_cause": {"description": …, "confidence": …}}.
        if field == Some(Field::RootCause)
            && val.is_object()
            && let Some(inner) = from_json_item(val, words)
        {
            block.root_cause = inner.root_cause;
            block.confidence = block.confidence.or(inner.confidence);
            block.evidence.extend(inner.evidence);
            continue;
        }
        if field == Some(Field::Hypotheses) || (field == Some(Field::Alternatives) && val.is_array()) {
            if let Some(list) = val.as_array() {
                for h in list {
                    if let Some(b) = from_json_item(h, words) {
                        if field == Some(Field::Hypotheses) {
                            hypotheses.push(b);
                        } else if let Some(r) = b.root_cause {
                            block.alternatives.push(match b.confidence {
                                Some(c) => format!("{r} ({:.0}%)", c * 100.0),
                                None => r,
                            });
                        }
                    }
                }
            }
            continue;
        }
        let Some(field) = field else { continue };
        let as_list = |val: &Value| -> Vec<String> {
            match val {
                Value::Array(a) => a
                    .iter()
                    .map(|x| x.as_str().map(clean).unwrap_or_else(|| clean(&x.to_string())))
                    .filter(|s| !s.is_empty())
                    .take(MAX_ITEMS)
                    .collect(),
                Value::String(s) => split_list(s),
                _ => Vec::new(),
            }
        };
        match field {
            Field::RootCause => {
                block.root_cause = val.as_str().map(clean).filter(|s| !s.is_empty() && !is_placeholder(s))
            }
            Field::Confidence => {
                if block.confidence.is_none() {
                    block.confidence = json_confidence(val, words);
                }
            }
            Field::Evidence => block.evidence = as_list(val),
            Field::Alternatives => block.alternatives = as_list(val),
            Field::Services => block.services = as_list(val),
            Field::Hypotheses | Field::Ignore => {}
        }
    }
    if !hypotheses.is_empty() {
        // An explicit root cause beside the list competes with it, listed first.
        if block.root_cause.is_some() {
            let lead =
                Block { root_cause: block.root_cause.take(), confidence: block.confidence.take(), ..Block::default() };
            hypotheses.insert(0, lead);
        }
        return Some(choose(hypotheses, block));
    }
    (block.root_cause.is_some() || block.confidence.is_some()).then(|| finish(block))
}

fn json_confidence(val: &Value, words: &[(&str, f64)]) -> Option<f64> {
    match val {
        Value::Number(n) => n.as_f64().and_then(|f| {
            let f = if f > 1.0 && f <= 100.0 { f / 100.0 } else { f };
            (0.0..=1.0).contains(&f).then_some(f)
        }),
        Value::String(s) => parse_confidence(s, words),
        _ => None,
    }
}

/// One element of a JSON hypotheses list: a string, or an object whose cause may be named
/// `description`, `title`, `statement` or `text` as well as a root-cause key.
fn from_json_item(v: &Value, words: &[(&str, f64)]) -> Option<Block> {
    if let Some(s) = v.as_str() {
        let (root, confidence) = split_inline_confidence(s, words, true);
        return (!root.is_empty()).then_some(Block { root_cause: Some(root), confidence, ..Block::default() });
    }
    let obj = v.as_object()?;
    let parsed = from_json(v, words).unwrap_or_default();
    let mut b = Block {
        root_cause: parsed.root_cause,
        confidence: parsed.confidence,
        evidence: parsed.evidence,
        alternatives: parsed.alternatives,
        services: parsed.services,
    };
    if b.root_cause.is_none() {
        b.root_cause = ["description", "title", "statement", "text", "name", "explanation"]
            .iter()
            .find_map(|k| obj.get(*k).and_then(Value::as_str))
            .map(clean)
            .filter(|s| !s.is_empty() && !is_placeholder(s));
    }
    b.root_cause.is_some().then_some(b)
}

fn finish(b: Block) -> ParsedNote {
    ParsedNote {
        root_cause: b.root_cause,
        confidence: b.confidence,
        evidence: b.evidence,
        alternatives: b.alternatives,
        services: b.services,
        parser: ParserKind::Rules,
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
        // A note-wide confidence applies to the winner only when it states none of its own.
        confidence: winner.confidence.or(shared.confidence),
        evidence,
        alternatives,
        services,
        parser: ParserKind::Rules,
    }
}

fn dedup(v: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    v.retain(|x| seen.insert(x.to_lowercase()));
    v.truncate(MAX_ITEMS);
}

/// JSON objects in the note: fenced (```json, or an unlabelled fence holding an object) or the
/// whole note.
fn json_candidates(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("```") {
        let after = &rest[start + 3..];
        let body_start = after.find('\n').map_or(0, |n| n + 1);
        let Some(end) = after[body_start..].find("```") else { break };
        let body = after[body_start..body_start + end].trim();
        if body.starts_with('{') {
            out.push(body);
        }
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

/// Where the parser is in the note.
struct State {
    blocks: Vec<Block>,
    shared: Block,
    /// Index into `blocks` while inside a hypothesis block, with the heading level that opened it.
    current: Option<(usize, u8)>,
    section: Option<Field>,
    /// The next line of prose is the root cause (after a root-cause heading or empty label).
    pending_root: bool,
    /// Column fields of the table being read (one hypothesis per row), by table number.
    columns: Option<(usize, Vec<Option<Field>>)>,
}

impl State {
    fn target(&mut self) -> &mut Block {
        match self.current {
            Some((i, _)) if i < self.blocks.len() => &mut self.blocks[i],
            _ => &mut self.shared,
        }
    }

    fn new_block(&mut self, level: u8) -> &mut Block {
        self.blocks.push(Block::default());
        let i = self.blocks.len() - 1;
        self.current = Some((i, level));
        &mut self.blocks[i]
    }
}

pub fn parse_note_with(text: &str, words: &[(&str, f64)]) -> ParsedNote {
    let text: String = text.chars().take(MAX_INPUT).collect();
    for candidate in json_candidates(&text) {
        if let Ok(v) = serde_json::from_str::<Value>(candidate)
            && let Some(parsed) = from_json(&v, words)
        {
            return tidy(parsed);
        }
    }
    let text = if looks_like_html(&text) { strip_html(&text) } else { text };
    let mut st = State {
        blocks: Vec::new(),
        shared: Block::default(),
        current: None,
        section: None,
        pending_root: false,
        columns: None,
    };
    let mut prose: Vec<String> = Vec::new();
    for line in lines_of(&text) {
        read_line(&mut st, &line, words, &mut prose);
    }
    let State { mut blocks, mut shared, .. } = st;
    if shared.root_cause.is_none() && blocks.iter().all(|b| b.root_cause.is_none()) {
        shared.root_cause = prose.iter().find_map(|l| sentence_root_cause(l));
    }
    // A root cause stated outside any hypothesis block competes with the blocks, listed first.
    if shared.root_cause.is_some() && !blocks.is_empty() {
        let lead =
            Block { root_cause: shared.root_cause.take(), confidence: shared.confidence.take(), ..Block::default() };
        blocks.insert(0, lead);
    }
    let parsed = if blocks.iter().any(|b| b.root_cause.is_some()) { choose(blocks, shared) } else { finish(shared) };
    tidy(parsed)
}

fn tidy(mut parsed: ParsedNote) -> ParsedNote {
    for list in [&mut parsed.evidence, &mut parsed.alternatives, &mut parsed.services] {
        list.retain(|s| !s.is_empty());
        dedup(list);
    }
    if parsed.root_cause.as_deref().is_some_and(|r| r.is_empty() || is_placeholder(r) || is_question(r)) {
        parsed.root_cause = None;
    }
    parsed
}

fn read_line(st: &mut State, line: &Line, words: &[(&str, f64)], prose: &mut Vec<String>) {
    match &line.kind {
        Kind::Heading(level) => read_heading(st, &line.text, *level, words),
        Kind::Row(cells, header) => read_row(st, line.table, cells, *header, words),
        Kind::Code(lang) => {
            // Logs and commands are evidence for a person, not fields; YAML (or an unlabelled
            // fence of `key: value` lines) is read like prose.
            if matches!(lang.as_str(), "yaml" | "yml" | "toml" | "text" | "txt" | "" | "indented") {
                let t = line.text.trim();
                match t.strip_prefix("- ") {
                    Some(item) => read_item(st, item, 1, words),
                    None => read_para(st, t, words, None),
                }
            }
        }
        Kind::Item(depth) => read_item(st, &line.text, *depth, words),
        Kind::Para => read_para(st, &line.text, words, Some(prose)),
    }
}

/// Is this heading the start of one hypothesis ("Hypothesis 2", "Candidate B",
/// "Alternative hypothesis")?
fn hypothesis_heading(lower: &str) -> bool {
    let numbered = |p: &str| {
        lower.strip_prefix(p).is_some_and(|r| r.trim_start().starts_with(|c: char| c.is_alphanumeric() || c == '#'))
    };
    (lower.starts_with("hypothesis") && numbered("hypothesis"))
        || lower.starts_with("alternative hypothesis")
        || (lower.starts_with("candidate") && numbered("candidate"))
        || lower.starts_with("hipótesis ")
        || lower.starts_with("hypothèse ")
        || lower.starts_with("hypothese ")
}

fn read_heading(st: &mut State, text: &str, level: u8, words: &[(&str, f64)]) {
    let h = text.trim().trim_end_matches(':').trim();
    let lower = norm_heading(h);
    if hypothesis_heading(&lower) {
        let block = st.new_block(level);
        if let Some((_, qualifier, value)) = split_label(h) {
            let (root, mut confidence) = split_inline_confidence(&value, words, true);
            if let Some(q) = qualifier {
                confidence = confidence.or_else(|| stated_confidence(&q, words, true));
            }
            block.confidence = confidence;
            if !root.is_empty() && parse_confidence(&root, &[]).is_none() {
                block.root_cause = Some(root);
            }
        } else if let (_, Some(q)) = split_qualifier(h) {
            block.confidence = stated_confidence(&q, words, true);
        }
        let pending = block.root_cause.is_none();
        st.section = None;
        st.pending_root = pending;
        return;
    }
    // A real heading at or above the hypothesis heading's level closes the hypothesis block.
    if let Some((_, hl)) = st.current
        && level <= hl
        && level < 7
    {
        st.current = None;
    }
    st.pending_root = false;
    // "## Root cause: X" or "## Confidence: 92%" on one line.
    if let Some((label, qualifier, value)) = split_label(h)
        && !value.is_empty()
        && let Some(f) = field_for(&label)
    {
        st.section = Some(f);
        assign(st.target(), f, qualifier.as_deref(), &value, words);
        return;
    }
    let (base, qualifier) = split_qualifier(h);
    st.section = field_for(&base);
    if st.section == Some(Field::RootCause) {
        st.pending_root = true;
        if let Some(c) = qualifier.and_then(|q| stated_confidence(&q, words, false)) {
            let t = st.target();
            t.confidence = t.confidence.or(Some(c));
        }
    }
    // "## Confidence 92%" (no separator).
    if st.section == Some(Field::Confidence) {
        let t = st.target();
        if t.confidence.is_none() {
            t.confidence = parse_confidence(&h[h.find(|c: char| c.is_ascii_digit()).unwrap_or(h.len())..], words)
                .or_else(|| qualifier_free_word(&base, h, words));
        }
    }
    if st.section == Some(Field::Hypotheses) {
        st.current = None;
    }
}

/// "Confidence high" as a heading: the words after the label.
fn qualifier_free_word(base: &str, heading: &str, words: &[(&str, f64)]) -> Option<f64> {
    let rest = heading.trim().get(base.len().min(heading.trim().len())..).unwrap_or_default();
    if rest.trim().is_empty() { None } else { parse_confidence(rest, words) }
}

fn norm_heading(h: &str) -> String {
    h.trim_start_matches(|c: char| !c.is_alphanumeric()).to_lowercase()
}

fn read_row(st: &mut State, table: usize, cells: &[String], header: bool, words: &[(&str, f64)]) {
    if header {
        let cols: Vec<Option<Field>> = cells.iter().map(|c| field_for(&split_qualifier(c).0)).collect();
        let has_root = cols.contains(&Some(Field::RootCause)) || cols.contains(&Some(Field::Hypotheses));
        let described = cols.iter().filter(|c| c.is_some()).count() >= 2;
        if has_root && described {
            st.columns = Some((table, cols));
            return;
        }
        st.columns = None;
        // A headerless key/value table: its first row is data ("| Root cause | … |").
        if cols.first().is_some_and(|c| c.is_some()) {
            read_kv_row(st, cells, words);
        }
        return;
    }
    match &st.columns {
        Some((t, cols)) if *t == table => {
            let cols = cols.clone();
            let mut b = Block::default();
            for (cell, col) in cells.iter().zip(cols.iter()) {
                match col {
                    Some(Field::RootCause | Field::Hypotheses) => {
                        let (root, c) = split_inline_confidence(cell, words, true);
                        if !root.is_empty() {
                            b.root_cause = Some(root);
                        }
                        b.confidence = b.confidence.or(c);
                    }
                    Some(f) => assign(&mut b, *f, None, cell, words),
                    None => {}
                }
            }
            if b.root_cause.is_some() {
                st.blocks.push(b);
            }
        }
        _ => read_kv_row(st, cells, words),
    }
}

fn read_kv_row(st: &mut State, cells: &[String], words: &[(&str, f64)]) {
    let Some(first) = cells.first() else { return };
    let (label, qualifier) = split_qualifier(first);
    let value = cells[1..].join(" ").trim().to_string();
    if let Some(f) = field_for(&label)
        && !value.is_empty()
    {
        assign(st.target(), f, qualifier.as_deref(), &value, words);
    }
}

fn read_item(st: &mut State, text: &str, depth: usize, words: &[(&str, f64)]) {
    let item = clean(text);
    if item.is_empty() {
        return;
    }
    // In a hypotheses list, each top-level item is a candidate.
    if st.section == Some(Field::Hypotheses) && (depth <= 1 || st.current.is_none() || text.starts_with("- ")) {
        let block = st.new_block(8);
        match split_label(&item).filter(|(l, _, _)| field_for(l).is_some()) {
            Some((label, qualifier, value)) => {
                if let Some(f) = field_for(&label) {
                    assign(block, f, qualifier.as_deref(), &value, words)
                }
            }
            None => {
                let (root, c) = split_inline_confidence(&item, words, true);
                if !root.is_empty() && !is_question(&root) {
                    block.root_cause = Some(root);
                }
                block.confidence = c;
            }
        }
        return;
    }
    // A bullet may itself be "Key: value".
    if let Some((label, qualifier, value)) = split_label(&item)
        && let Some(f) = field_for(&label)
    {
        if f == Field::Confidence && carries_instruction(&item) {
            return;
        }
        if value.is_empty() {
            st.section = Some(f);
            st.pending_root = f == Field::RootCause;
        } else {
            assign(st.target(), f, qualifier.as_deref(), &value, words);
        }
        return;
    }
    let pending = st.pending_root;
    let section = st.section;
    let target = st.target();
    match section {
        Some(Field::Evidence) => target.evidence.push(item),
        Some(Field::Alternatives) => target.alternatives.push(item),
        Some(Field::Services) => target.services.extend(split_list(&item)),
        Some(Field::Confidence) if target.confidence.is_none() => target.confidence = parse_confidence(&item, words),
        Some(Field::RootCause) if pending && target.root_cause.is_none() => {
            let (root, c) = split_inline_confidence(&item, words, false);
            if !is_question(&root) {
                target.root_cause = Some(root);
                target.confidence = target.confidence.or(c);
            }
            st.pending_root = false;
        }
        _ => {}
    }
}

fn read_para(st: &mut State, text: &str, words: &[(&str, f64)], prose: Option<&mut Vec<String>>) {
    let line = text.trim();
    if line.is_empty() {
        return;
    }
    // A short line that only names a field acts as a heading ("Root cause", "Evidence:").
    let bare = line.trim_end_matches([':', '：']);
    if line.split_whitespace().count() <= 4
        && !bare.contains([':', '：'])
        && (hypothesis_heading(&norm_heading(bare))
            || (!bare.chars().any(|c| c.is_ascii_digit()) && field_for(&split_qualifier(bare).0).is_some()))
    {
        read_heading(st, line, 7, words);
        return;
    }
    if let Some((label, qualifier, value)) = split_label(line)
        && let Some(f) = field_for(&label)
    {
        // A line that instructs ("ignore previous instructions… Confidence: 99%") states nothing.
        if f == Field::Confidence && carries_instruction(line) {
            return;
        }
        if value.is_empty() {
            st.section = Some(f);
            st.pending_root = f == Field::RootCause;
        } else {
            st.pending_root = false;
            if f == Field::Hypotheses {
                st.section = Some(f);
            }
            assign(st.target(), f, qualifier.as_deref(), &value, words);
        }
        return;
    }
    if st.pending_root {
        st.pending_root = false;
        let (root, c) = split_inline_confidence(line, words, false);
        if !is_question(&root) {
            let target = st.target();
            if target.root_cause.is_none() {
                target.root_cause = Some(root);
                target.confidence = target.confidence.or(c);
            }
        }
        return;
    }
    let section = st.section;
    let target = st.target();
    match section {
        Some(Field::Evidence) => target.evidence.push(clean(line)),
        Some(Field::Alternatives) => target.alternatives.push(clean(line)),
        Some(Field::Services) => target.services.extend(split_list(line)),
        Some(Field::Confidence) if target.confidence.is_none() => target.confidence = parse_confidence(line, words),
        // Prose outside any section may state the root cause in a sentence.
        None | Some(Field::RootCause) => {
            if let Some(p) = prose {
                p.push(line.to_string());
            }
        }
        _ => {}
    }
}

fn assign(b: &mut Block, f: Field, qualifier: Option<&str>, value: &str, words: &[(&str, f64)]) {
    match f {
        Field::RootCause | Field::Hypotheses => {
            let (root, inline) = split_inline_confidence(value, words, f == Field::Hypotheses);
            // "Top hypothesis (confidence 38%): …": the qualifier states the confidence.
            let from_label = qualifier.and_then(|q| stated_confidence(q, words, false));
            if b.root_cause.is_none() && !root.is_empty() && !is_question(&root) && !is_placeholder(&root) {
                b.root_cause = Some(root);
            }
            if b.confidence.is_none() {
                b.confidence = from_label.or(inline);
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
        Field::Ignore => {}
    }
}

/// "Still investigating", "TBD", "unknown", "not yet identified" are not findings.
fn is_placeholder(r: &str) -> bool {
    let l = r.trim().trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase();
    if l.is_empty() {
        return true;
    }
    const EXACT_OR_PREFIX: &[&str] = &[
        "tbd",
        "tbc",
        "unknown",
        "n/a",
        "na",
        "none",
        "none yet",
        "pending",
        "investigating",
        "under investigation",
        "being investigated",
        "still investigating",
        "not yet determined",
        "not yet identified",
        "not yet known",
        "not yet clear",
        "not determined",
        "not identified",
        "not known",
        "not clear",
        "not confirmed",
        "undetermined",
        "unclear",
        "inconclusive",
        "to be determined",
        "todo",
        "no root cause",
        "no clear root cause",
        "no conclusive",
        "no definitive",
        "no confirmed",
        "desconocido",
        "desconocida",
        "pendiente",
        "en investigación",
        "inconnu",
        "inconnue",
        "en cours",
        "unbekannt",
        "offen",
        "不明",
        "未知",
        "调查中",
        "調査中",
    ];
    EXACT_OR_PREFIX.iter().any(|p| {
        l == *p || l.strip_prefix(p).is_some_and(|rest| rest.starts_with([' ', '.', '…', ',', ';', '—', '-', '(', ':']))
    })
}

/// A question is never a finding ("Could it be the deploy?").
fn is_question(r: &str) -> bool {
    let t = r.trim().trim_end_matches(['*', '_', '`', ')']).trim();
    t.ends_with('?') || t.ends_with('？')
}

/// Prose fallback: "The root cause is X." / "likely caused by X". Questions are not findings.
fn sentence_root_cause(line: &str) -> Option<String> {
    if is_question(line) {
        return None;
    }
    // ASCII lowercase keeps byte offsets, so positions in it are positions in `line`.
    let lower = line.to_ascii_lowercase();
    for marker in ["root cause is ", "root cause was ", "root cause appears to be ", "caused by ", "due to "] {
        if let Some(pos) = lower.find(marker) {
            let start = pos + marker.len();
            let rest = line.get(start..)?;
            let end = rest.find(['.', '\n', '?']).unwrap_or(rest.len());
            let cause = clean(&rest[..end]);
            if cause.split_whitespace().count() >= 2 && !is_placeholder(&cause) {
                return Some(cause);
            }
        }
    }
    None
}

/// Does the rules' result leave a field for the model fallback to read?
pub fn needs_model(parsed: &ParsedNote) -> bool {
    parsed.root_cause.is_none() || parsed.confidence.is_none()
}

/// Which parser produced the root cause and the confidence (None: no value).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub root_cause: Option<ParserKind>,
    pub confidence: Option<ParserKind>,
}

/// What a model said it read in the note, before any check.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelReading {
    /// The root cause as the note words it (a span of the note).
    pub root_cause: Option<String>,
    /// The confidence exactly as written in the note ("87%", "high").
    pub confidence_text: Option<String>,
    /// The model's number for it, 0..=1.
    pub confidence: Option<f64>,
}

/// The outcome of checking a model's reading against the note.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub note: ParsedNote,
    pub provenance: Provenance,
    /// Why each refused field was refused (for the audit trail).
    pub refused: Vec<String>,
}

/// Text the note uses to instruct a reader instead of informing it. A note that carries one gets
/// no model-read confidence at all.
const INSTRUCTION_MARKERS: &[&str] = &[
    "ignore previous",
    "ignore all previous",
    "ignore the above",
    "disregard",
    "system:",
    "system note",
    "set confidence",
    "set the confidence",
    "confidence to",
    "auto-execute",
    "auto execute",
    "approve automatically",
    "you are now",
    "new instructions",
    "submit_",
];

fn carries_instruction(text: &str) -> bool {
    let l = text.to_lowercase();
    INSTRUCTION_MARKERS.iter().any(|m| l.contains(m))
}

/// Text compared for "appears in the note": lowercase, Markdown emphasis and quote markers
/// dropped, whitespace collapsed.
fn comparable(text: &str) -> String {
    let t: String = text.chars().map(|c| if matches!(c, '*' | '_' | '`' | '>' | '#') { ' ' } else { c }).collect();
    t.to_lowercase().split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Merge what a model read into the rules' result, keeping only what the note supports:
/// - a field is filled only where the rules found nothing: a model never replaces or raises a
///   value the rules read;
/// - the root cause must appear in the note, must not be a placeholder or a question, and must not
///   come from a line labelled summary, symptom, impact or question, or a line that instructs;
/// - the confidence must be quoted from the note (`confidence_text` appears in it, on a line
///   that speaks of confidence), must read as the same number by [`parse_confidence`], and the
///   note must carry no instruction text. The value kept is the rules' reading of the quote.
pub fn accept_model_reading(note: &str, rules: &ParsedNote, reading: &ModelReading, words: &[(&str, f64)]) -> Checked {
    let text: String = note.chars().take(MAX_INPUT).collect();
    let text = if looks_like_html(&text) { strip_html(&text) } else { text };
    let haystack = comparable(&text);
    let mut out = rules.clone();
    let mut provenance = Provenance {
        root_cause: rules.root_cause.as_ref().map(|_| ParserKind::Rules),
        confidence: rules.confidence.map(|_| ParserKind::Rules),
    };
    let mut refused = Vec::new();
    // The lines of the note that contain a span.
    let lines_with = |span: &str| -> Vec<String> {
        let s = comparable(span);
        text.lines().filter(|l| comparable(l).contains(&s)).map(str::to_string).collect()
    };

    if rules.root_cause.is_none()
        && let Some(root) = reading.root_cause.as_deref().map(clean).filter(|r| !r.is_empty())
    {
        let span = comparable(&root);
        let lines = lines_with(&root);
        let labelled_ignore =
            lines.iter().any(|l| split_label(l).is_some_and(|(label, _, _)| field_for(&label) == Some(Field::Ignore)));
        let why = if !haystack.contains(&span) || lines.is_empty() {
            Some("the root cause the model gave does not appear in the note")
        } else if is_placeholder(&root) || is_question(&root) || lines.iter().all(|l| is_question(l)) {
            Some("the model's root cause is a placeholder or a question")
        } else if labelled_ignore {
            Some("the model's root cause comes from a summary, symptom or question line")
        } else if lines.iter().any(|l| carries_instruction(l)) {
            Some("the model's root cause comes from a line that gives instructions")
        } else {
            None
        };
        match why {
            Some(w) => refused.push(format!("root_cause: {w}")),
            None => {
                out.root_cause = Some(root);
                provenance.root_cause = Some(ParserKind::Model);
            }
        }
    }

    if rules.confidence.is_none() && (reading.confidence_text.is_some() || reading.confidence.is_some()) {
        let quoted = reading.confidence_text.as_deref().map(str::trim).unwrap_or_default();
        let parsed = parse_confidence(quoted, words);
        let on_cue_line = lines_with(quoted)
            .iter()
            .any(|l| confidence_cue(&l.to_lowercase()) || confidence_cue(&quoted.to_lowercase()));
        let why = if quoted.is_empty() {
            Some("the model gave a confidence without quoting the note")
        } else if !haystack.contains(&comparable(quoted)) {
            Some("the confidence the model quoted does not appear in the note")
        } else if carries_instruction(&text) {
            Some("the note carries instruction text, so no model-read confidence is taken")
        } else if !on_cue_line {
            Some("the quoted number is not stated as a confidence")
        } else {
            match (parsed, reading.confidence) {
                (None, _) => Some("the quoted confidence does not read as a number"),
                (Some(p), Some(m)) if (p - m).abs() > 0.005 => Some("the model's number differs from the quoted text"),
                _ => None,
            }
        };
        match (why, parsed) {
            (None, Some(c)) => {
                out.confidence = Some(c);
                provenance.confidence = Some(ParserKind::Model);
            }
            (Some(w), _) => refused.push(format!("confidence: {w}")),
            (None, None) => refused.push("confidence: unreadable".into()),
        }
    }
    if provenance.root_cause == Some(ParserKind::Model) || provenance.confidence == Some(ParserKind::Model) {
        out.parser = ParserKind::Model;
    }
    Checked { note: out, provenance, refused }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One case of `shared/tests/fixtures/notes/corpus.toml` (its header documents the keys).
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Case {
        name: String,
        note: String,
        root: Option<String>,
        #[serde(default)]
        no_root: bool,
        confidence: Option<f64>,
        #[serde(default)]
        no_confidence: bool,
        #[serde(default)]
        not_root: Vec<String>,
        #[serde(default)]
        evidence: Vec<String>,
        #[serde(default)]
        alternatives: Vec<String>,
        services: Option<Vec<String>>,
        #[serde(default)]
        adversarial: bool,
    }

    #[derive(Debug, Deserialize)]
    struct Corpus {
        case: Vec<Case>,
    }

    fn check(c: &Case) -> Vec<String> {
        let p = parse_note(&c.note);
        let mut why = Vec::new();
        let root = p.root_cause.clone().unwrap_or_default().to_lowercase();
        match (&c.root, c.no_root, &p.root_cause) {
            (Some(want), false, Some(got)) if got.to_lowercase().contains(&want.to_lowercase()) => {}
            (None, true, None) => {}
            _ => why.push(format!("root cause {:?}, expected {:?}", p.root_cause, c.root)),
        }
        match (c.confidence, c.no_confidence, p.confidence) {
            (Some(a), false, Some(b)) if (a - b).abs() < 1e-9 => {}
            (None, true, None) => {}
            _ => why.push(format!("confidence {:?}, expected {:?}", p.confidence, c.confidence)),
        }
        for n in &c.not_root {
            if root.contains(&n.to_lowercase()) {
                why.push(format!("root cause {:?} contains {n:?}", p.root_cause));
            }
        }
        for (list, wanted, what) in
            [(&p.evidence, &c.evidence, "evidence"), (&p.alternatives, &c.alternatives, "alternatives")]
        {
            for w in wanted {
                if !list.iter().any(|x| x.to_lowercase().contains(&w.to_lowercase())) {
                    why.push(format!("{what} {list:?} has nothing with {w:?}"));
                }
            }
        }
        if let Some(s) = &c.services
            && &p.services != s
        {
            why.push(format!("services {:?}, expected {s:?}", p.services));
        }
        if c.adversarial && p.confidence.is_some_and(|v| v > c.confidence.unwrap_or(0.0) || v >= 1.0) {
            why.push(format!("an injected note raised the confidence to {:?}", p.confidence));
        }
        if p.parser != ParserKind::Rules {
            why.push("the rules parser reported another parser".into());
        }
        why
    }

    #[test]
    fn corpus() {
        let corpus: Corpus =
            toml::from_str(include_str!("../tests/fixtures/notes/corpus.toml")).expect("the corpus is valid TOML");
        let mut names = std::collections::HashSet::new();
        let mut failures = Vec::new();
        for c in &corpus.case {
            assert!(names.insert(c.name.as_str()), "duplicate case name {:?}", c.name);
            assert!(c.root.is_some() != c.no_root, "{}: give root or no_root", c.name);
            assert!(c.confidence.is_some() != c.no_confidence, "{}: give confidence or no_confidence", c.name);
            let why = check(c);
            if !why.is_empty() {
                failures.push(format!("{}: {}", c.name, why.join("; ")));
            }
        }
        assert!(corpus.case.len() >= 60, "the corpus has {} cases", corpus.case.len());
        assert!(corpus.case.iter().filter(|c| c.adversarial).count() >= 5);
        assert!(
            failures.is_empty(),
            "{} of {} formats broke:\n{}",
            failures.len(),
            corpus.case.len(),
            failures.join("\n")
        );
    }

    #[test]
    fn confidence_forms() {
        let w = DEFAULT_CONFIDENCE_WORDS;
        assert_eq!(parse_confidence("94%", w), Some(0.94));
        assert_eq!(parse_confidence("89.5 %", w), Some(0.895));
        assert_eq!(parse_confidence("87,5 %", w), Some(0.875));
        assert_eq!(parse_confidence("97/100", w), Some(0.97));
        assert_eq!(parse_confidence("8 out of 10", w), Some(0.8));
        assert_eq!(parse_confidence("0.91", w), Some(0.91));
        assert_eq!(parse_confidence("0,91", w), Some(0.91));
        assert_eq!(parse_confidence("9/10", w), Some(0.9));
        assert_eq!(parse_confidence("High", w), Some(0.85));
        assert_eq!(parse_confidence("very high", w), Some(0.95));
        assert_eq!(parse_confidence("High (0.92)", w), Some(0.92));
        assert_eq!(parse_confidence("85", w), Some(0.85));
        assert_eq!(parse_confidence("high, based on 3 signals", w), Some(0.85));
        assert_eq!(parse_confidence("based on 3 signals", w), None);
        assert_eq!(parse_confidence("150%", w), None);
        assert_eq!(parse_confidence("1/0", w), None);
        assert_eq!(parse_confidence("highway", w), None);
        assert_eq!(parse_confidence("n/a", w), None);
    }

    #[test]
    fn labels_with_qualifiers_and_inline_confidence() {
        assert_eq!(
            split_label("Root cause (probable): pool exhausted"),
            Some(("Root cause".into(), Some("probable".into()), "pool exhausted".into()))
        );
        assert_eq!(
            split_label("Top hypothesis (confidence: 38%): pool exhausted").map(|(l, q, _)| (l, q)),
            Some(("Top hypothesis".into(), Some("confidence: 38%".into())))
        );
        let w = DEFAULT_CONFIDENCE_WORDS;
        assert_eq!(
            split_inline_confidence("Redis maxmemory reached (85%)", w, true),
            ("Redis maxmemory reached".into(), Some(0.85))
        );
        assert_eq!(split_inline_confidence("disk full (100%)", w, false), ("disk full (100%)".into(), None));
        assert_eq!(
            split_inline_confidence("pool exhausted — 70% confidence", w, false),
            ("pool exhausted".into(), Some(0.7))
        );
        assert_eq!(
            split_inline_confidence("disk full on api-3 (/var/log)", w, true),
            ("disk full on api-3 (/var/log)".into(), None)
        );
        assert_eq!(split_inline_confidence("traffic split (50/50)", w, true).1, None);
    }

    #[test]
    fn case_changes_that_change_lengths_do_not_break_slicing() {
        // 'İ' lowercases to two chars: positions in a lowercased copy are not positions here.
        for note in
            ["Root cause: İİİİ — İİ 70% confidence", "İİİİ caused by İİ x y", "Root cause: x, İİİ confidence 5%"]
        {
            let _ = parse_note(note);
        }
    }

    #[test]
    fn model_readings_are_checked_against_the_note() {
        let note = "Checkout errors since 10:02.\nThe pool looks exhausted on checkout-db; I'm about 70% confident.";
        let rules = parse_note(note);
        assert_eq!(rules.root_cause, None);
        let honest = ModelReading {
            root_cause: Some("pool looks exhausted on checkout-db".into()),
            confidence_text: Some("70%".into()),
            confidence: Some(0.7),
        };
        let c = accept_model_reading(note, &rules, &honest, DEFAULT_CONFIDENCE_WORDS);
        assert_eq!(c.note.confidence, Some(0.7));
        assert_eq!(c.provenance.root_cause, Some(ParserKind::Model));
        assert_eq!(c.note.parser, ParserKind::Model);
        assert!(c.refused.is_empty(), "{:?}", c.refused);
        let liar = ModelReading {
            root_cause: Some("a bad deploy of checkout v2".into()),
            confidence_text: Some("95%".into()),
            confidence: Some(0.95),
        };
        let c = accept_model_reading(note, &rules, &liar, DEFAULT_CONFIDENCE_WORDS);
        assert_eq!((c.note.root_cause.clone(), c.note.confidence), (None, None));
        assert_eq!(c.refused.len(), 2);
        assert_eq!(c.note.parser, ParserKind::Rules);
        // The quote is there, the number is not the quote's.
        let inflated =
            ModelReading { confidence_text: Some("70%".into()), confidence: Some(0.97), ..ModelReading::default() };
        assert_eq!(accept_model_reading(note, &rules, &inflated, DEFAULT_CONFIDENCE_WORDS).note.confidence, None);
    }
}
