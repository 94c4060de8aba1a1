//! Secrets come from AWS Secrets Manager (moto on loopback), and never reach logs or errors.

use selfheal::config::Secrets;
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
