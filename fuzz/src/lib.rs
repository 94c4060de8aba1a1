//! The fuzz oracles: one function per parser that sees outside input. Each takes raw bytes, drives
//! the real code path and asserts what must hold for any input (no panic, bounded values, the
//! right class of HTTP answer). `cargo fuzz run <target>` (nightly) feeds them coverage-guided
//! input; `tests/tests/suite/properties.rs` runs the same oracles on stable in the test command.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use secrecy::SecretString;
use serde_json::{Value, json};

use selfheal::adapters::memory::MemoryTable;
use selfheal::config::{Secrets, Settings};
use selfheal::engine::path::{RefPath, evaluate_expression, merge_result, render_template};
use selfheal::ports::SystemClock;
use selfheal::signature::{
    MAX_SIGNATURE_ENTRIES, MAX_SIGNATURE_HEADER_BYTES, SignatureError, pagerduty_candidates, sign_pagerduty,
    sign_slack, verify_pagerduty, verify_slack,
};
use selfheal::stages::Deps;
use selfheal::stages::http::HttpRequest;
use selfheal::store::TableStore;
use selfheal::wiring::{Unconfigured, build_deps};

pub const WEBHOOK_SECRET: &str = "whsec-fuzz";
pub const SLACK_SECRET: &str = "slack-fuzz";

/// Dependencies for the HTTP entry points: an in-memory store, no SaaS clients, no orchestrator
/// (a call that would reach one fails as a dependency error, which is itself under test).
pub fn parsing_deps() -> Deps {
    let mut settings = Settings::from_sources(None, |_| None).unwrap_or_else(|e| panic!("default settings: {e}"));
    settings.slack.approvers = vec!["UALICE".into()];
    settings.pagerduty.investigator_ids = vec!["PCLERIC".into()];
    let secrets = Secrets {
        pagerduty_webhook_secrets: vec![SecretString::from(WEBHOOK_SECRET.to_string())],
        slack_signing_secret: Some(SecretString::from(SLACK_SECRET.to_string())),
        ..Default::default()
    };
    build_deps(
        settings,
        secrets,
        Arc::new(TableStore::new(MemoryTable::new())),
        Arc::new(Unconfigured("orchestrator")),
        Arc::new(SystemClock::real()),
    )
}

/// One runtime and one set of dependencies for the whole fuzzing process: building them per
/// input (TLS roots, clients) would cost more than the input itself.
fn shared() -> &'static (tokio::runtime::Runtime, Deps) {
    static SHARED: OnceLock<(tokio::runtime::Runtime, Deps)> = OnceLock::new();
    SHARED.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("tokio runtime: {e}"));
        (rt, parsing_deps())
    })
}

/// A fresh delivery id per input, so dedupe never hides the parsing behind it.
fn next_delivery_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("fuzz-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A correctly signed PagerDuty delivery with any body: answered, never a crash, and a 5xx only as
/// the retryable "temporary failure" (a dependency is missing), never for bad input.
pub fn pagerduty_envelope(data: &[u8]) {
    let (rt, deps) = shared();
    let req = HttpRequest::new(
        vec![
            ("x-pagerduty-signature".into(), sign_pagerduty(WEBHOOK_SECRET.as_bytes(), data)),
            ("x-webhook-id".into(), next_delivery_id()),
        ],
        data.to_vec(),
    );
    let resp = rt.block_on(selfheal::stages::intake::handle_webhook(deps, &req));
    assert!(
        resp.status < 500 || (resp.status == 500 && resp.body["message"] == "temporary failure, retry"),
        "{resp:?}"
    );
    assert!(resp.status != 202 || resp.body.get("status").is_some(), "{resp:?}");
}

/// Any signature header text against any body: never a panic, and never accepted unless it
/// carries the right HMAC.
pub fn signature_header(data: &[u8]) {
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let header = String::from_utf8_lossy(&data[..split]);
    let body = data.get(split + 1..).unwrap_or_default();
    let genuine = sign_pagerduty(WEBHOOK_SECRET.as_bytes(), body);
    if verify_pagerduty(&[WEBHOOK_SECRET], Some(&header), body).is_ok() {
        let mac_hex = genuine.trim_start_matches("v1=");
        assert!(header.to_ascii_lowercase().contains(mac_hex), "accepted a header without the right HMAC: {header}");
    }
    // The genuine entry added to any header is found, as long as the header stays within its
    // bounds; past them it is refused before any hashing.
    let with_genuine = format!("{header},{genuine}");
    let entries = with_genuine.split(',').filter(|e| !e.trim().is_empty()).count();
    let verdict = verify_pagerduty(&[WEBHOOK_SECRET], Some(&with_genuine), body);
    if with_genuine.len() > MAX_SIGNATURE_HEADER_BYTES {
        assert_eq!(verdict, Err(SignatureError::HeaderTooLong), "{with_genuine}");
    } else if entries > MAX_SIGNATURE_ENTRIES {
        assert_eq!(verdict, Err(SignatureError::TooManyEntries), "{with_genuine}");
    } else {
        assert!(verdict.is_ok(), "{with_genuine}: {verdict:?}");
    }
    let now = chrono::Utc::now().timestamp();
    let ts_text = header.split(',').next().unwrap_or_default();
    if verify_slack(SLACK_SECRET.as_bytes(), Some(ts_text), Some(&header), body, now).is_ok() {
        let ts = ts_text.trim().parse::<i64>().unwrap_or_default();
        assert_eq!(header.trim(), sign_slack(SLACK_SECRET.as_bytes(), ts, body), "accepted a forged Slack signature");
    }
}

/// The bounds on what an unauthenticated request may make intake do: the first bytes choose an
/// entry count (0–63), padding, a body size around the cap and where the genuine entry goes.
/// Over the header's length or entry cap the header is refused before any MAC is computed, and
/// at most [`MAX_SIGNATURE_ENTRIES`] candidates are ever compared; within them the genuine
/// entry is found. A body over the cap is refused (413) before verification, whatever it carries.
pub fn signature_bounds(data: &[u8]) {
    let byte = |i: usize| data.get(i).copied().unwrap_or(0) as usize;
    let entries = byte(0) % 64;
    let padding = (byte(1) << 8 | byte(2)) % (2 * MAX_SIGNATURE_HEADER_BYTES);
    let genuine_at = byte(3);
    let body_len = selfheal::stages::intake::MAX_BODY - 512 + (byte(4) << 8 | byte(5)) % 1024;
    let seed = data.get(6..).filter(|s| !s.is_empty()).unwrap_or(b"x");
    let body: Vec<u8> = seed.iter().copied().cycle().take(body_len).collect();
    let genuine = sign_pagerduty(WEBHOOK_SECRET.as_bytes(), &body);
    let mut parts: Vec<String> = (0..entries)
        .map(|i| match seed[i % seed.len()] % 4 {
            0 => format!("v1={}", "0".repeat(64)),
            1 => format!("v9={i}"),
            2 => String::from_utf8_lossy(&seed[..seed.len().min(80)]).replace(',', ";"),
            _ => format!("v1={:064x}", i + 1),
        })
        .collect();
    if entries > 0 {
        let at = genuine_at % (entries + 1);
        parts.insert(at, genuine.clone());
    }
    let header = format!("{}{}", parts.join(","), " ".repeat(padding));
    let listed = header.split(',').filter(|e| !e.trim().is_empty()).count();
    let verdict = verify_pagerduty(&[WEBHOOK_SECRET, "whsec-fuzz-previous"], Some(&header), &body);
    if header.len() > MAX_SIGNATURE_HEADER_BYTES {
        assert_eq!(verdict, Err(SignatureError::HeaderTooLong));
    } else if listed > MAX_SIGNATURE_ENTRIES {
        assert_eq!(verdict, Err(SignatureError::TooManyEntries));
    } else if entries > 0 {
        assert_eq!(verdict, Ok(()), "{header}");
    }
    if let Ok(candidates) = pagerduty_candidates(Some(&header)) {
        assert!(candidates.len() <= MAX_SIGNATURE_ENTRIES);
    }
    // Through the handler: the body cap first, then the signature.
    let (rt, deps) = shared();
    let req = HttpRequest::new(
        vec![("x-pagerduty-signature".into(), header), ("x-webhook-id".into(), next_delivery_id())],
        body,
    );
    let resp = rt.block_on(selfheal::stages::intake::handle_webhook(deps, &req));
    if body_len > selfheal::stages::intake::MAX_BODY {
        assert_eq!(resp.status, 413, "{resp:?}");
    } else if verdict.is_err() {
        assert_eq!(resp.status, 401, "{resp:?}");
    } else {
        assert!(resp.status != 401 && resp.status != 413, "{resp:?}");
    }
}

/// A correctly signed Slack interaction with any form body: 200 or 400, nothing else.
pub fn slack_form(data: &[u8]) {
    let (rt, deps) = shared();
    let ts = chrono::Utc::now().timestamp();
    let req = HttpRequest::new(
        vec![
            ("x-slack-request-timestamp".into(), ts.to_string()),
            ("x-slack-signature".into(), sign_slack(SLACK_SECRET.as_bytes(), ts, data)),
        ],
        data.to_vec(),
    );
    let resp = rt.block_on(selfheal::stages::approvals::handle_interaction(deps, &req));
    assert!(resp.status == 200 || resp.status == 400, "{resp:?}");
}

/// Any note text: parsed into bounded values.
pub fn note_parser(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let p = selfheal::notes::parse_note(&text);
    if let Some(c) = p.confidence {
        assert!((0.0..=1.0).contains(&c), "confidence {c}");
    }
    if let Some(r) = &p.root_cause {
        assert!(r.chars().count() <= 1001, "root cause of {} chars", r.chars().count());
    }
    assert!(p.evidence.len() <= 20 && p.alternatives.len() <= 20 && p.services.len() <= 20);
}

/// Any model output, as tool input (JSON) and as text with the `<execution_block>` fallback.
pub fn plan_parser(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(input) = serde_json::from_slice::<Value>(data) {
        let _ = selfheal::adapters::anthropic::plan_from_tool_input(&input);
    }
    let _ = selfheal::adapters::anthropic::plan_from_text(&text);
    let _ = selfheal::adapters::anthropic::plan_from_text(&format!("<execution_block>{text}</execution_block>"));
}

/// ASL reference paths, payload templates, intrinsic functions and ResultPath writes: line one is
/// the path or expression, line two a template, line three the input.
pub fn asl_path(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.splitn(3, '\n');
    let path = lines.next().unwrap_or_default();
    let template = lines.next().and_then(|l| serde_json::from_str::<Value>(l).ok()).unwrap_or(Value::Null);
    let input =
        lines.next().and_then(|l| serde_json::from_str::<Value>(l).ok()).unwrap_or(json!({"a": [1, {"b": "c"}]}));
    let ctx = json!({"Task": {"Token": "t"}, "Execution": {"Name": "n"}});
    if let Ok(p) = RefPath::parse(path) {
        let _ = p.read(&input, &ctx);
    }
    let _ = render_template(&template, &input, &ctx);
    let _ = evaluate_expression(path, &input, &ctx);
    let _ = merge_result(Some(&Value::String(path.to_string())), &input, json!(1));
}
