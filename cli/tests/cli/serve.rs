//! `selfheal serve`: starts on a config file, says where it listens (on stderr, and with
//! `--json` as the first line on stdout), answers signed webhooks, shuts down gracefully.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn serve_answers_webhooks_and_stops_on_sigint() {
    let dir = std::env::temp_dir().join(format!("selfheal-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("selfheal.toml");
    std::fs::write(&config, "[pagerduty]\ninvestigator_ids = [\"PCLERIC\"]\n[browser]\nendpoint = \"plain-http\"\n")
        .unwrap();
    let secrets = dir.join("secrets.toml");
    std::fs::write(&secrets, "pagerduty_webhook_secrets = [\"whsec-serve\"]\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_selfheal"))
        .args(["serve", "--config"])
        .arg(&config)
        .arg("--secrets")
        .arg(&secrets)
        .args(["--listen", "127.0.0.1:0", "--json", "--db"])
        .arg(dir.join("db.sqlite"))
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let url = loop {
        let line = lines.next().expect("serve printed its address").unwrap();
        if let Some(rest) = line.split("serving on ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    // --json: the same address as the first line on stdout (EMF metric records may follow).
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let listening: serde_json::Value = serde_json::from_str(&first).expect("a JSON line");
    assert_eq!(listening["url"], url.as_str(), "{first}");
    assert_eq!(listening["webhook_url"], format!("{url}/webhooks/pagerduty"));
    assert_eq!(listening["slack_interactivity_url"], format!("{url}/slack/interactions"));
    assert_eq!(listening["db"], dir.join("db.sqlite").display().to_string());
    // Keep reading stdout so a metric record never blocks the server on a full pipe.
    let _drain = std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let body = br#"{"event":{"id":"01S","event_type":"pagey.ping","resource_type":"pagey","occurred_at":"2026-11-28T10:00:00Z","agent":null,"client":null,"data":{}}}"#;
    let post = |sig: String| {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-H", "content-type: application/json"])
            .args([
                "-H",
                &format!("x-pagerduty-signature: {sig}"),
                "-H",
                "x-webhook-id: serve-1",
                "--data-binary",
                "@-",
            ])
            .arg(format!("{url}/webhooks/pagerduty"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        let mut out = out;
        out.stdin.take().unwrap().write_all(body).unwrap();
        String::from_utf8(out.wait_with_output().unwrap().stdout).unwrap()
    };
    assert_eq!(post(selfheal::signature::sign_pagerduty(b"whsec-serve", body)), "202");
    assert_eq!(post(selfheal::signature::sign_pagerduty(b"forged", body)), "401");
    // Graceful shutdown on SIGINT.
    let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}
