//! Secrets come from AWS Secrets Manager (moto on loopback), and never reach logs or errors.

use selfheal::config::{Secrets, Settings};
use selfheal::signature;

const SECRET_JSON: &str = r#"{
  "pagerduty_webhook_secrets": ["whsec-KNOWN-1", "whsec-KNOWN-2"],
  "pagerduty_api_token": "pd-token-KNOWN-3",
  "pagerduty_from_email": "selfheal@example.com",
  "senso_api_key": "tgr_KNOWN-4",
  "anthropic_api_key": "sk-ant-KNOWN-5",
  "coder_session_token": "coder-KNOWN-6",
  "slack_bot_token": "xoxb-KNOWN-7",
  "slack_signing_secret": "slack-sign-KNOWN-8"
}"#;

#[tokio::test]
async fn secrets_load_from_secrets_manager_and_never_reach_logs() {
    let captured = selfheal_tests::CapturedLogs::default();
    selfheal::telemetry::init_with_writer(captured.clone(), |k| match k {
        "AWS_LAMBDA_LOG_LEVEL" => Some("DEBUG".into()),
        _ => None,
    });

    let config = selfheal::aws::emulator_config(&selfheal_tests::moto_endpoint()).await;
    let client = aws_sdk_secretsmanager::Client::new(&config);
    let name = format!("selfheal/test/{}", uuid::Uuid::new_v4().simple());
    client.create_secret().name(&name).secret_string(SECRET_JSON).send().await.unwrap();

    let secrets = Secrets::from_secrets_manager(&client, &name).await.unwrap();
    assert_eq!(secrets.webhook_secret_bytes(), vec![b"whsec-KNOWN-1".as_slice(), b"whsec-KNOWN-2".as_slice()]);
    assert_eq!(secrets.pagerduty_from_email.as_deref(), Some("selfheal@example.com"));
    let known = secrets.all_values().into_iter().map(str::to_string).collect::<Vec<_>>();
    assert_eq!(known.len(), 8);

    // Everything a careless handler might log.
    tracing::info!(?secrets, "loaded secrets");
    tracing::debug!(secrets = ?secrets.anthropic_api_key, "anthropic key");
    let bad_sig = signature::verify_pagerduty(&secrets.webhook_secret_bytes(), Some("v1=00"), b"{}").unwrap_err();
    tracing::warn!(error = %bad_sig, "signature refused");
    let slack =
        secrets.slack_signing_secret.as_ref().map(|s| secrecy::ExposeSecret::expose_secret(s).as_bytes()).unwrap();
    let stale = signature::verify_slack(slack, Some("1"), Some("v0=00"), b"x", 10_000).unwrap_err();
    tracing::warn!(error = %stale, "slack refused");
    let missing = Secrets::from_secrets_manager(&client, "selfheal/does-not-exist").await.unwrap_err();
    tracing::error!(error = %missing, "missing secret");
    assert!(missing.to_string().contains("ResourceNotFoundException"), "{missing}");
    // A secret document that is not valid JSON must not echo the secret in the error.
    let broken_name = format!("{name}-broken");
    client
        .create_secret()
        .name(&broken_name)
        .secret_string("{\"anthropic_api_key\": sk-ant-KNOWN-5")
        .send()
        .await
        .unwrap();
    let broken = Secrets::from_secrets_manager(&client, &broken_name).await.unwrap_err();
    tracing::error!(error = %broken, "broken secret");

    let logs = captured.text();
    assert!(logs.contains("loaded secrets"), "logs were captured: {logs}");
    assert!(logs.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()), "JSON lines: {logs}");
    for value in &known {
        assert!(!logs.contains(value.as_str()), "secret leaked into logs");
        for err in [missing.to_string(), broken.to_string(), bad_sig.to_string(), stale.to_string()] {
            assert!(!err.contains(value.as_str()), "secret leaked into an error message");
        }
    }
}

/// JSON log lines of everything the current thread logs while the guard lives.
fn capture_logs() -> (selfheal_tests::CapturedLogs, tracing::subscriber::DefaultGuard) {
    let captured = selfheal_tests::CapturedLogs::default();
    let subscriber =
        tracing_subscriber::fmt().json().with_max_level(tracing::Level::DEBUG).with_writer(captured.clone()).finish();
    (captured.clone(), tracing::subscriber::set_default(subscriber))
}

fn pagerduty_doc(webhook_secrets: &[&str]) -> String {
    serde_json::json!({
        "pagerduty_webhook_secrets": webhook_secrets,
        "pagerduty_api_token": "pd-token-KNOWN-R0",
        "pagerduty_from_email": "selfheal@example.com"
    })
    .to_string()
}

fn ping(secret: &str, webhook_id: &str) -> selfheal::stages::http::HttpRequest {
    let body = serde_json::json!({"event": {"id": webhook_id, "event_type": "pagey.ping", "resource_type": "pagey",
        "occurred_at": "2026-12-01T10:00:00Z", "agent": null, "client": null, "data": {}}})
    .to_string()
    .into_bytes();
    selfheal::stages::http::HttpRequest::new(
        vec![
            ("x-pagerduty-signature".into(), signature::sign_pagerduty(secret.as_bytes(), &body)),
            ("x-webhook-id".into(), webhook_id.into()),
        ],
        body,
    )
}

/// The cache against Secrets Manager (moto): values are re-read once the TTL has run out (on an
/// injected clock), a webhook-secret rotation goes through the real intake handler end to end,
/// and a secret that can no longer be read leaves the last good values in use, with a warning
/// that names no value.
#[tokio::test]
async fn secrets_refresh_after_the_ttl_and_a_rotated_webhook_secret_is_honoured() {
    use selfheal::ports::Clock;
    use selfheal::secrets::{DEFAULT_TTL, SecretsCache, SecretsHandle};
    use std::sync::Arc;
    use std::time::Duration;
    let (logs, _guard) = capture_logs();
    let config = selfheal::aws::emulator_config(&selfheal_tests::moto_endpoint()).await;
    let client = aws_sdk_secretsmanager::Client::new(&config);
    let run = uuid::Uuid::new_v4().simple().to_string();
    let (pd, slack) = (format!("selfheal/test/pd-{run}"), format!("selfheal/test/slack-{run}"));
    // As the template creates them: placeholders with every key empty.
    for (name, integration) in [(&pd, "pagerduty"), (&slack, "slack")] {
        let doc = selfheal::config::placeholder_json(integration).unwrap();
        client.create_secret().name(name).secret_string(doc).send().await.unwrap();
    }
    let clock = Arc::new(selfheal::ports::VirtualClock::starting_at(chrono::Utc::now()));
    let cache =
        SecretsCache::load(vec![pd.clone(), slack.clone()], Arc::new(client.clone()), clock.clone(), DEFAULT_TTL)
            .await
            .unwrap();
    // The Slack simulator accepts only its own bot token: it shows which token the adapter holds.
    let creds = selfheal_testkit::sim::SimCredentials::default();
    let sim = selfheal_testkit::sim::Sim::new(creds.clone(), selfheal_testkit::sim::Knobs::default());
    let (sim_base, _server) = selfheal_testkit::spawn(sim.router(), 0).await.unwrap();
    let mut settings = Settings::from_sources(None, |_| None).unwrap();
    settings.slack.api_base = format!("{sim_base}/slack/api");
    settings.slack.channel = Some("C1".into());
    let deps = selfheal::wiring::build_deps(
        settings,
        SecretsHandle::cached(cache.clone()),
        selfheal_tests::sqlite_store().await,
        Arc::new(selfheal::wiring::Unconfigured("orchestrator")),
        Arc::new(selfheal::ports::SystemClock::real()),
    );
    let deps = &deps;
    let deliver = move |secret: &'static str, id: &'static str| async move {
        selfheal::stages::intake::handle_webhook(deps, &ping(secret, id)).await.status
    };
    let put = |name: String, doc: String| {
        let client = client.clone();
        async move { client.put_secret_value().secret_id(name).secret_string(doc).send().await.unwrap() }
    };
    const R1: &str = "whsec-KNOWN-R1";
    const R2: &str = "whsec-KNOWN-R2";

    let message = selfheal::ports::ChatMessage { text: "hello".into(), blocks: serde_json::json!([]) };

    // A fresh stack: nothing to verify with, so PagerDuty is asked to retry.
    assert_eq!(deliver(R1, "rot-1").await, 503);
    assert!(cache.current().await.1.slack_bot_token.is_none());
    let unconfigured = deps.chat.post(&message).await.unwrap_err().to_string();
    assert!(unconfigured.contains("slack_bot_token"), "{unconfigured}");

    // Filled in after deploying: not read again within the TTL…
    put(pd.clone(), pagerduty_doc(&[R1])).await;
    let slack_doc =
        serde_json::json!({"slack_bot_token": creds.slack_bot_token, "slack_signing_secret": "sign-KNOWN-R4"});
    put(slack.clone(), slack_doc.to_string()).await;
    clock.sleep(DEFAULT_TTL - Duration::from_secs(1)).await;
    assert_eq!(deliver(R1, "rot-2").await, 503);
    // …and in use once it has run out, without a restart.
    clock.sleep(Duration::from_secs(2)).await;
    assert_eq!(deliver(R1, "rot-3").await, 202);
    let (generation, now) = cache.current().await;
    assert!(now.slack_bot_token.is_some() && now.slack_signing_secret.is_some());
    // The Slack adapter was built again with the token that is now in the secret.
    deps.chat.post(&message).await.unwrap();

    // Rotation: the new secret first, the old one kept for deliveries signed before the switch.
    put(pd.clone(), pagerduty_doc(&[R2, R1])).await;
    clock.sleep(DEFAULT_TTL).await;
    assert_eq!(deliver(R2, "rot-4").await, 202);
    assert_eq!(deliver(R1, "rot-5").await, 202);
    assert!(cache.current().await.0 > generation);

    // Rotation done: the old secret is refused like any forged signature.
    put(pd.clone(), pagerduty_doc(&[R2])).await;
    clock.sleep(DEFAULT_TTL).await;
    assert_eq!(deliver(R1, "rot-6").await, 401);
    assert_eq!(deliver(R2, "rot-7").await, 202);

    // The secret can no longer be read: the last good values stay in use.
    client.delete_secret().secret_id(&pd).force_delete_without_recovery(true).send().await.unwrap();
    clock.sleep(DEFAULT_TTL).await;
    assert_eq!(deliver(R2, "rot-8").await, 202);

    let text = logs.text();
    assert!(
        text.lines().any(|l| l.contains("secrets refresh failed") && l.contains("ResourceNotFoundException")),
        "{text}"
    );
    for value in [R1, R2, "pd-token-KNOWN-R0", creds.slack_bot_token.as_str(), "sign-KNOWN-R4"] {
        assert!(!text.contains(value), "a secret value reached the logs");
    }
}

/// What Lambda init does: every secret in `SELFHEAL_SECRET_IDS` is read and merged, and the
/// single `SELFHEAL_SECRET_ID` of stacks deployed before the split still works.
#[tokio::test]
async fn a_function_reads_the_secrets_it_lists_and_old_stacks_still_load() {
    let config = selfheal::aws::emulator_config(&selfheal_tests::moto_endpoint()).await;
    let client = aws_sdk_secretsmanager::Client::new(&config);
    let run = uuid::Uuid::new_v4().simple().to_string();
    let (pd, slack, old) =
        (format!("selfheal/test/pd-{run}"), format!("selfheal/test/slack-{run}"), format!("selfheal/test/all-{run}"));
    client.create_secret().name(&pd).secret_string(pagerduty_doc(&["whsec-KNOWN-L1"])).send().await.unwrap();
    client
        .create_secret()
        .name(&slack)
        .secret_string(r#"{"slack_bot_token": "xoxb-KNOWN-L2", "slack_signing_secret": ""}"#)
        .send()
        .await
        .unwrap();
    client.create_secret().name(&old).secret_string(SECRET_JSON).send().await.unwrap();

    let ids = format!("{pd},{slack}");
    let settings = Settings::from_sources(None, selfheal::config::env_map(&[("SELFHEAL_SECRET_IDS", &ids)])).unwrap();
    let handle = selfheal::secrets::for_lambda(&settings, &config).await.unwrap();
    assert!(handle.refreshes());
    let s = handle.current().await;
    assert_eq!(s.webhook_secret_bytes(), vec![b"whsec-KNOWN-L1".as_slice()]);
    assert!(s.slack_bot_token.is_some());
    assert!(s.slack_signing_secret.is_none(), "an empty placeholder is not a secret");
    assert!(s.anthropic_api_key.is_none(), "not listed, not read");

    let settings = Settings::from_sources(None, selfheal::config::env_map(&[("SELFHEAL_SECRET_ID", &old)])).unwrap();
    let s = selfheal::secrets::for_lambda(&settings, &config).await.unwrap().current().await;
    assert_eq!(s.all_values().len(), 8);

    // A listed secret that does not exist fails init, naming the secret and the AWS error only.
    let missing = format!("{pd},selfheal/test/missing-{run}");
    let settings =
        Settings::from_sources(None, selfheal::config::env_map(&[("SELFHEAL_SECRET_IDS", &missing)])).unwrap();
    let err = selfheal::secrets::for_lambda(&settings, &config).await.unwrap_err().to_string();
    assert!(err.contains("ResourceNotFoundException") && err.contains("missing"), "{err}");
    assert!(!err.contains("KNOWN"), "{err}");

    // A function that lists no secret (the cleric function) reads none.
    let settings = Settings::from_sources(None, selfheal::config::env_map(&[])).unwrap();
    let none = selfheal::secrets::for_lambda(&settings, &config).await.unwrap();
    assert!(!none.refreshes() && none.snapshot().all_values().is_empty());
}

/// template.yaml creates one secret per integration, each starting as exactly the placeholder of
/// `SECRET_KEYS`, and names each in an output (`SECRET_OUTPUTS`). The one all-in-one `SecretArn`
/// is gone.
#[test]
fn the_template_has_one_placeholder_secret_and_output_per_integration() {
    let template = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml")).unwrap();
    let mut documents: Vec<serde_json::Value> = template
        .lines()
        .filter_map(|l| l.trim().strip_prefix("SecretString: '")?.strip_suffix('\''))
        .map(|doc| serde_json::from_str(doc).unwrap())
        .collect();
    let mut expected: Vec<serde_json::Value> = selfheal::config::SECRET_KEYS
        .iter()
        .map(|(integration, _)| {
            serde_json::from_str(&selfheal::config::placeholder_json(integration).unwrap()).unwrap()
        })
        .collect();
    let key = |v: &serde_json::Value| v.to_string();
    documents.sort_by_key(key);
    expected.sort_by_key(key);
    assert_eq!(documents, expected);
    for (_, output) in selfheal::config::SECRET_OUTPUTS {
        assert!(template.contains(&format!("\n  {output}:\n")), "output {output}");
    }
    assert!(!template.contains("\n  SecretArn:"));
    assert!(!template.contains("SELFHEAL_SECRET_ID:"), "functions list their secrets in SELFHEAL_SECRET_IDS");
}
