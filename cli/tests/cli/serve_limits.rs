//! `selfheal serve` applies the `[server]` limits of its config file: a client that never
//! finishes its headers is disconnected after `header_read_timeout_ms`, while signed deliveries
//! are still answered. (Before, such connections stayed open indefinitely.)

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Serve(std::process::Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_closes_slow_clients_per_its_config_and_keeps_serving() {
    let dir = std::env::temp_dir().join(format!("selfheal-serve-limits-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("selfheal.toml");
    std::fs::write(
        &config,
        "[browser]\nendpoint = \"plain-http\"\n[server]\nheader_read_timeout_ms = 400\nbody_read_timeout_ms = 400\n",
    )
    .unwrap();
    let secrets = dir.join("secrets.toml");
    std::fs::write(&secrets, "pagerduty_webhook_secrets = [\"whsec-limits\"]\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_selfheal"))
        .args(["serve", "--config"])
        .arg(&config)
        .arg("--secrets")
        .arg(&secrets)
        .args(["--listen", "127.0.0.1:0", "--db"])
        .arg(dir.join("db.sqlite"))
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let serve = Serve(child);
    let addr = loop {
        let line = lines.next().expect("serve printed its address").unwrap();
        if let Some(rest) = line.split("serving on http://").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };

    let started = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..10 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"POST /webhooks/pagerduty HTTP/1.1\r\nhost: selfheal\r\nx-webhook-id: slo").await.unwrap();
        slow.push(s);
    }
    let body = br#"{"event":{"id":"01L","event_type":"pagey.ping","resource_type":"pagey","occurred_at":"2026-11-28T10:00:00Z","agent":null,"client":null,"data":{}}}"#;
    let answer = reqwest::Client::new()
        .post(format!("http://{addr}/webhooks/pagerduty"))
        .header("x-pagerduty-signature", selfheal::signature::sign_pagerduty(b"whsec-limits", body))
        .header("x-webhook-id", "limits-1")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 202, "served while the slow clients hang");
    for (i, s) in slow.iter_mut().enumerate() {
        let mut buf = [0u8; 1024];
        let closed = tokio::time::timeout(Duration::from_secs(3), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "slow client {i} still connected after {:?}", started.elapsed());
    }
    assert!(started.elapsed() < Duration::from_secs(3), "closed after {:?}", started.elapsed());
    drop(serve);
}
