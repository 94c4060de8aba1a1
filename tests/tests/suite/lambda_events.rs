//! The Lambda HTTP path: API Gateway HTTP API (payload v2) events, including Slack's
//! form body that arrives base64-encoded, through `lambda_http` into the same handlers.

use base64::Engine as _;
use secrecy::SecretString;
use serde_json::json;
use std::sync::Arc;

use selfheal::config::{Secrets, Settings};
use selfheal::ports::SystemClock;
use selfheal::signature::{sign_pagerduty, sign_slack};
use selfheal::stages::{approvals, http, intake};
use selfheal::wiring::{Unconfigured, build_deps};

fn event(path: &str, headers: serde_json::Value, body: &[u8], base64: bool) -> lambda_http::Request {
    let body = if base64 {
        base64::engine::general_purpose::STANDARD.encode(body)
    } else {
        String::from_utf8(body.to_vec()).unwrap()
    };
    let e = json!({
        "version": "2.0", "routeKey": format!("POST {path}"), "rawPath": path, "rawQueryString": "",
        "headers": headers,
        "requestContext": {"accountId": "123456789012", "apiId": "api", "domainName": "api.example.com", "domainPrefix": "api",
            "http": {"method": "POST", "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "test"},
            "requestId": "r1", "routeKey": format!("POST {path}"), "stage": "$default", "time": "28/Nov/2026:10:00:00 +0000", "timeEpoch": 1795860000000u64},
        "body": body, "isBase64Encoded": base64
    });
    lambda_http::request::from_str(&e.to_string()).unwrap()
}

async fn deps() -> selfheal::stages::Deps {
    let mut settings = Settings::from_sources(None, |_| None).unwrap();
    settings.slack.approvers = vec!["UALICE".into()];
    let secrets = Secrets {
        pagerduty_webhook_secrets: vec![SecretString::from("whsec-lambda".to_string())],
        slack_signing_secret: Some(SecretString::from("slack-lambda".to_string())),
        ..Default::default()
    };
    build_deps(
        settings,
        secrets,
        selfheal_tests::sqlite_store().await,
        Arc::new(Unconfigured("orchestrator")),
        Arc::new(SystemClock::real()),
    )
}

#[tokio::test]
async fn pagerduty_webhook_through_an_api_gateway_v2_event() {
    let deps = deps().await;
    let body = br#"{"event":{"id":"01PING","event_type":"pagey.ping","resource_type":"pagey","occurred_at":"2026-11-28T10:00:00Z","agent":null,"client":null,"data":{}}}"#;
    let headers = json!({"content-type": "application/json", "x-pagerduty-signature": sign_pagerduty(b"whsec-lambda", body), "x-webhook-id": "wl-1"});
    let req = http::from_lambda(&event("/webhooks/pagerduty", headers, body, false));
    let resp = http::to_lambda(intake::handle_webhook(&deps, &req).await);
    assert_eq!(resp.status(), 202);
    let forged = json!({"content-type": "application/json", "x-pagerduty-signature": sign_pagerduty(b"other", body), "x-webhook-id": "wl-2"});
    let req = http::from_lambda(&event("/webhooks/pagerduty", forged, body, false));
    assert_eq!(http::to_lambda(intake::handle_webhook(&deps, &req).await).status(), 401);
}

#[tokio::test]
async fn slack_form_body_arrives_base64_encoded_and_verifies_on_the_decoded_bytes() {
    let deps = deps().await;
    let payload = json!({"type": "block_actions", "user": {"id": "UALICE"}, "actions": [{"action_id": "approve", "value": "abcdefgh12345678"}]});
    let body = serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap();
    let ts = chrono::Utc::now().timestamp();
    let headers = json!({"content-type": "application/x-www-form-urlencoded", "x-slack-request-timestamp": ts.to_string(),
                         "x-slack-signature": sign_slack(b"slack-lambda", ts, body.as_bytes())});
    let req = http::from_lambda(&event("/slack/interactions", headers.clone(), body.as_bytes(), true));
    assert_eq!(req.body, body.as_bytes(), "the signed bytes are the decoded body");
    let resp = approvals::handle_interaction(&deps, &req).await;
    // Signature valid; the approval id is unknown to this store: a 200 with "unknown".
    assert_eq!((resp.status, resp.body["status"].as_str()), (200, Some("unknown")));
    // Verifying the still-encoded text instead would fail: prove the test can tell.
    let mut wrong = req.clone();
    wrong.body = base64::engine::general_purpose::STANDARD.encode(body.as_bytes()).into_bytes();
    assert_eq!(approvals::handle_interaction(&deps, &wrong).await.status, 401);
}
