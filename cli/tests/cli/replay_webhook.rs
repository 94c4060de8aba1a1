//! `selfheal replay-webhook` signs a payload like PagerDuty and posts it to a live endpoint.

use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replays_a_signed_payload_against_the_local_server() {
    let mut out = Vec::new();
    let h = selfheal_cli::demo::harness(selfheal_cli::demo::Scenario::Auto, &mut out).await.unwrap();
    let file = std::env::temp_dir().join(format!("ping-{}.json", std::process::id()));
    std::fs::write(&file, r#"{"event":{"id":"01REPLAY","event_type":"pagey.ping","resource_type":"pagey","occurred_at":"2026-11-28T10:00:00Z","agent":null,"client":null,"data":{}}}"#).unwrap();
    let url = format!("{}/webhooks/pagerduty", h.engine_base);
    let bin = env!("CARGO_BIN_EXE_selfheal");
    let run = |secret: &str| {
        let (bin, file, url, secret) = (bin.to_string(), file.clone(), url.clone(), secret.to_string());
        tokio::task::spawn_blocking(move || {
            Command::new(bin)
                .arg("replay-webhook")
                .arg(&file)
                .args(["--secret", &secret, "--to", &url])
                .output()
                .unwrap()
        })
    };
    let ok = run(&h.creds.webhook_secret).await.unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).starts_with("202"));
    let bad = run("not-the-secret").await.unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stdout).starts_with("401"));
}
