//! Property tests for every parser that sees outside input (the quick, always-on counterpart of
//! fuzzing): no panics, and the invariants that matter.

use proptest::prelude::*;
use serde_json::{Value, json};

use selfheal::engine::path::{RefPath, evaluate_expression, merge_result, render_template};
use selfheal::signature::{
    MAX_SIGNATURE_ENTRIES, MAX_SIGNATURE_HEADER_BYTES, SignatureError, pagerduty_candidates, sign_pagerduty,
    sign_slack, verify_pagerduty, verify_slack,
};
use selfheal::stages::http::HttpRequest;
use selfheal::stages::intake::MAX_BODY;

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-z_. ]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn deps() -> selfheal::stages::Deps {
    selfheal_fuzz::parsing_deps()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn pagerduty_signatures_roundtrip_and_never_panic(secret in "[ -~]{1,40}", body in prop::collection::vec(any::<u8>(), 0..512), header in "[ -~]{0,200}") {
        let sig = sign_pagerduty(secret.as_bytes(), &body);
        prop_assert!(verify_pagerduty(&[secret.as_str()], Some(&sig), &body).is_ok());
        let _ = verify_pagerduty(&[secret.as_str()], Some(&header), &body);
        if !body.is_empty() {
            let mut tampered = body.clone();
            tampered[0] ^= 1;
            prop_assert!(verify_pagerduty(&[secret.as_str()], Some(&sig), &tampered).is_err());
        }
    }

    #[test]
    fn slack_signatures_roundtrip_and_never_panic(secret in "[ -~]{1,40}", body in prop::collection::vec(any::<u8>(), 0..512), ts in 1_000_000_000i64..2_000_000_000, skew in -300i64..=300, junk in "[ -~]{0,80}") {
        let sig = sign_slack(secret.as_bytes(), ts, &body);
        prop_assert!(verify_slack(secret.as_bytes(), Some(&ts.to_string()), Some(&sig), &body, ts + skew).is_ok());
        prop_assert!(verify_slack(secret.as_bytes(), Some(&ts.to_string()), Some(&sig), &body, ts + 301).is_err());
        let _ = verify_slack(secret.as_bytes(), Some(&junk), Some(&junk), &body, ts);
    }

    #[test]
    fn notes_parse_to_bounded_values(text in "(?s).{0,2000}") {
        let p = selfheal::notes::parse_note(&text);
        if let Some(c) = p.confidence { prop_assert!((0.0..=1.0).contains(&c)); }
        if let Some(r) = &p.root_cause { prop_assert!(r.chars().count() <= 1001); }
        prop_assert!(p.evidence.len() <= 20 && p.alternatives.len() <= 20 && p.services.len() <= 20);
    }

    #[test]
    fn plans_from_arbitrary_tool_input_never_panic(input in arb_json(), text in "(?s).{0,300}") {
        let _ = selfheal::adapters::anthropic::plan_from_tool_input(&input);
        let _ = selfheal::adapters::anthropic::plan_from_text(&format!("<execution_block>{text}</execution_block>"));
    }

    #[test]
    fn asl_paths_and_templates_never_panic(path in "[$@.\\[\\]'a-z0-9*]{0,30}", template in arb_json(), input in arb_json(), expr in "States\\.[A-Za-z]{0,12}\\([$. 'a-z0-9,]{0,30}\\)?") {
        let ctx = json!({"Task": {"Token": "t"}});
        let _ = RefPath::parse(&path).map(|p| p.read(&input, &ctx).cloned());
        let _ = render_template(&template, &input, &ctx);
        let _ = evaluate_expression(&expr, &input, &ctx);
        let _ = merge_result(Some(&Value::String(path.clone())), &input, json!(1));
    }

    #[test]
    fn intake_answers_any_signed_body_without_a_5xx(body in prop_oneof![arb_json().prop_map(|v| v.to_string()), "(?s).{0,300}"], wrap in any::<bool>()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let deps = deps();
        let text = if wrap { json!({"event": serde_json::from_str::<Value>(&body).unwrap_or(Value::String(body.clone()))}).to_string() } else { body };
        let req = HttpRequest::new(vec![("x-pagerduty-signature".into(), sign_pagerduty(selfheal_fuzz::WEBHOOK_SECRET.as_bytes(), text.as_bytes())), ("x-webhook-id".into(), "p1".into())], text.into_bytes());
        let resp = rt.block_on(selfheal::stages::intake::handle_webhook(&deps, &req));
        prop_assert!(resp.status < 500 || resp.status == 500 && resp.body["message"] == "temporary failure, retry", "{resp:?}");
    }

    #[test]
    fn slack_callback_answers_any_signed_form_with_200_or_400(payload in prop_oneof![arb_json().prop_map(|v| v.to_string()), "(?s).{0,200}"], raw in any::<bool>()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let deps = deps();
        let body = if raw { payload.into_bytes() } else { serde_urlencoded::to_string([("payload", payload)]).unwrap().into_bytes() };
        let ts = chrono::Utc::now().timestamp();
        let req = HttpRequest::new(vec![("x-slack-request-timestamp".into(), ts.to_string()), ("x-slack-signature".into(), sign_slack(selfheal_fuzz::SLACK_SECRET.as_bytes(), ts, &body))], body);
        let resp = rt.block_on(selfheal::stages::approvals::handle_interaction(&deps, &req));
        prop_assert!(resp.status == 200 || resp.status == 400, "{resp:?}");
    }

    /// The bounds on a signature header, whatever it holds: past the length or entry cap it is
    /// refused (before any MAC is computed), never more than the cap of candidates is compared,
    /// and within the caps the genuine entry is found wherever it sits.
    #[test]
    fn signature_headers_are_bounded_in_length_and_entries(
        fakes in prop::collection::vec(prop_oneof!["v1=[0-9a-f]{64}", "v[0-9]=[ -+\\--~]{0,70}", "[ -+\\--~]{0,20}"], 0..40),
        at in any::<prop::sample::Index>(),
        padding in 0usize..1500,
        body in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let genuine = sign_pagerduty(b"whsec-prop", &body);
        let mut parts = fakes.clone();
        parts.insert(at.index(parts.len() + 1), genuine);
        let header = format!("{}{}", parts.join(","), " ".repeat(padding));
        let listed = header.split(',').filter(|e| !e.trim().is_empty()).count();
        let verdict = verify_pagerduty(&["whsec-other", "whsec-prop"], Some(&header), &body);
        if header.len() > MAX_SIGNATURE_HEADER_BYTES {
            prop_assert_eq!(verdict, Err(SignatureError::HeaderTooLong));
        } else if listed > MAX_SIGNATURE_ENTRIES {
            prop_assert_eq!(verdict, Err(SignatureError::TooManyEntries));
        } else {
            prop_assert_eq!(verdict, Ok(()));
        }
        if let Ok(candidates) = pagerduty_candidates(Some(&header)) {
            prop_assert!(candidates.len() <= MAX_SIGNATURE_ENTRIES);
        }
    }

    /// Bodies around the cap: over it, 413 whatever the signature (nothing is hashed); at or
    /// under it, the signature decides.
    #[test]
    fn bodies_over_the_cap_are_refused_before_verification(over in -64i64..64, signed in any::<bool>()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let deps = deps();
        let len = (MAX_BODY as i64 + over) as usize;
        let body = vec![b' '; len];
        let sig = if signed { sign_pagerduty(selfheal_fuzz::WEBHOOK_SECRET.as_bytes(), &body) } else { "v1=00".into() };
        let req = HttpRequest::new(vec![("x-pagerduty-signature".into(), sig), ("x-webhook-id".into(), format!("size-{len}"))], body);
        let resp = rt.block_on(selfheal::stages::intake::handle_webhook(&deps, &req));
        let expected = if len > MAX_BODY { 413 } else if signed { 400 } else { 401 };
        prop_assert_eq!(resp.status, expected, "{} bytes: {:?}", len, resp);
    }

    /// Outside text printed to a terminal carries no character the terminal would act on, and
    /// text without any is printed unchanged.
    #[test]
    fn terminal_text_never_carries_control_characters(text in "(?s).{0,200}", plain in "[ -~\u{a0}-\u{5ff}\u{3040}-\u{30ff}]{0,80}") {
        let acts = |c: char| c.is_control() || matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}');
        let line = selfheal_cli::operator::term_line(&text);
        prop_assert!(!line.chars().any(acts), "{:?}", line);
        let multi = selfheal_cli::operator::term_text(&text);
        prop_assert!(!multi.chars().any(|c| c != '\n' && c != '\t' && acts(c)), "{:?}", multi);
        let json = selfheal_cli::operator::term_json(&json!({ "t": text }), false);
        prop_assert!(!json.chars().any(acts), "{:?}", json);
        let back: Value = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back["t"].as_str(), Some(text.as_str()));
        prop_assert_eq!(selfheal_cli::operator::term_line(&plain), plain);
    }

    /// The fuzz targets' own oracles, on arbitrary bytes (the stable, always-on equivalent of
    /// `cargo fuzz run`; see fuzz/).
    #[test]
    fn fuzz_oracles_hold_for_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..600), text in "(?s).{0,400}") {
        for input in [data.as_slice(), text.as_bytes()] {
            selfheal_fuzz::pagerduty_envelope(input);
            selfheal_fuzz::signature_header(input);
            selfheal_fuzz::signature_bounds(input);
            selfheal_fuzz::slack_form(input);
            selfheal_fuzz::note_parser(input);
            selfheal_fuzz::plan_parser(input);
            selfheal_fuzz::asl_path(input);
        }
    }

    #[test]
    fn fuzz_oracles_hold_for_structured_json(v in arb_json()) {
        let text = v.to_string();
        selfheal_fuzz::pagerduty_envelope(json!({"event": v}).to_string().as_bytes());
        selfheal_fuzz::plan_parser(text.as_bytes());
        selfheal_fuzz::asl_path(format!("$.a\n{text}\n{text}").as_bytes());
    }
}
