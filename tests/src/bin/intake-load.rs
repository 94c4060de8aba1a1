//! Intake under load, against the local server (the same routes and handlers as API Gateway),
//! on loopback, bounded in count and time:
//!
//! 1. latency p50/p99 of signed `pagey.ping` deliveries at a fixed open-loop rate (100 and 500
//!    requests/s, 10 s each): signature, parse, dedupe write, answer;
//! 2. a storm of 10,000 `incident.triggered` deliveries, 30 % of them duplicates (same
//!    X-Webhook-Id and bytes), shuffled, 64 at a time: every unique incident must be created
//!    exactly once (one execution each) and no delivery may get a 5xx.
//!
//! 3. what an unauthenticated request costs next to a valid one, over HTTP: deliveries with a
//!    body just under the 256 KB cap at a fixed rate, valid ones, then unsigned ones whose
//!    header carries as many entries as allowed, then valid pings while the unsigned ones run.
//!
//! usage: intake-load [--rates 100,500] [--seconds 10] [--storm 10000] [--cap-rate 50]

use rand::seq::SliceRandom;
use std::sync::Arc;
use std::time::{Duration, Instant};

use selfheal::signature::sign_pagerduty;
use selfheal_cli::demo::{Scenario, harness};
use selfheal_testkit::sim::Sim;

fn percentile(sorted: &[u128], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx] as f64 / 1000.0
}

async fn post(client: &reqwest::Client, url: &str, secret: &str, body: &[u8], id: &str) -> (u16, Duration) {
    post_with(client, url, sign_pagerduty(secret.as_bytes(), body), body, id).await
}

async fn post_with(client: &reqwest::Client, url: &str, signature: String, body: &[u8], id: &str) -> (u16, Duration) {
    let started = Instant::now();
    let status = client
        .post(url)
        .header("content-type", "application/json")
        .header("x-pagerduty-signature", signature)
        .header("x-webhook-id", id)
        .body(body.to_vec())
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    (status, started.elapsed())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: &str| selfheal_tests::flag(&args, name, default);
    let rates: Vec<u64> = arg("--rates", "100,500").split(',').filter_map(|r| r.parse().ok()).collect();
    let seconds: u64 = arg("--seconds", "10").parse().unwrap_or(10);
    let storm: usize = arg("--storm", "10000").parse().unwrap_or(10_000);
    let cap_rate: u64 = arg("--cap-rate", "50").parse().unwrap_or(50);

    let mut sink = Vec::new();
    let h = harness(Scenario::Auto, &mut sink).await.expect("local stack");
    let url = format!("{}/webhooks/pagerduty", h.engine_base);
    let secret = h.creds.webhook_secret.clone();
    let client = reqwest::Client::builder().pool_max_idle_per_host(256).build().expect("client");

    println!("| load | requests | p50 | p99 | max | non-2xx |");
    println!("|---|---|---|---|---|---|");
    for rate in rates {
        let total = rate * seconds;
        let interval = Duration::from_secs_f64(1.0 / rate as f64);
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(total as usize);
        for i in 0..total {
            // Open loop: each request leaves on schedule, whatever the previous ones do.
            let due = started + interval * i as u32;
            tokio::time::sleep_until(due.into()).await;
            let (client, url, secret) = (client.clone(), url.clone(), secret.clone());
            tasks.push(tokio::spawn(async move {
                let body = format!(
                    r#"{{"event":{{"id":"01PING{rate}x{i}","event_type":"pagey.ping","resource_type":"pagey","occurred_at":"2026-11-28T10:00:00Z","agent":null,"client":null,"data":{{}}}}}}"#
                );
                post(&client, &url, &secret, body.as_bytes(), &format!("ping-{rate}-{i}")).await
            }));
        }
        let mut lat = Vec::with_capacity(tasks.len());
        let mut bad = 0;
        for t in tasks {
            let (status, d) = t.await.expect("task");
            if !(200..300).contains(&status) {
                bad += 1;
            }
            lat.push(d.as_micros());
        }
        lat.sort_unstable();
        println!(
            "| {rate} req/s for {seconds} s | {} | {:.2} ms | {:.2} ms | {:.2} ms | {bad} |",
            lat.len(),
            percentile(&lat, 0.50),
            percentile(&lat, 0.99),
            percentile(&lat, 1.0)
        );
    }

    if cap_rate > 0 {
        at_the_body_cap(&client, &url, &secret, cap_rate, seconds).await;
    }

    if storm > 0 {
        let unique = storm * 7 / 10;
        let mut deliveries: Vec<(String, Vec<u8>)> = (0..unique)
            .map(|i| {
                let id = format!("QSTORM{i:06}");
                let body = serde_json::json!({"event": {"id": format!("01EV{i:06}"), "event_type": "incident.triggered",
                    "resource_type": "incident", "occurred_at": "2026-11-28T10:00:00.000Z", "agent": null, "client": null,
                    "data": Sim::incident_data(&id, i as u64, "storm", "PSTORM", "storm-service")}})
                .to_string()
                .into_bytes();
                (format!("storm-{i}"), body)
            })
            .collect();
        let dups: Vec<(String, Vec<u8>)> = (0..storm - unique).map(|i| deliveries[i % unique].clone()).collect();
        deliveries.extend(dups);
        deliveries.shuffle(&mut rand::rng());
        let queue = Arc::new(tokio::sync::Mutex::new(deliveries));
        let started = Instant::now();
        let retry_later = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let workers: Vec<_> = (0..64)
            .map(|_| {
                let (queue, client, url, secret) = (queue.clone(), client.clone(), url.clone(), secret.clone());
                let retry_later = retry_later.clone();
                tokio::spawn(async move {
                    let mut statuses = Vec::new();
                    loop {
                        let next = queue.lock().await.pop();
                        let Some((id, body)) = next else { break };
                        // A duplicate racing its first delivery is told 503 "retry later";
                        // PagerDuty redelivers, and so does this load.
                        let mut status = post(&client, &url, &secret, &body, &id).await.0;
                        while status == 503 {
                            retry_later.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                            status = post(&client, &url, &secret, &body, &id).await.0;
                        }
                        statuses.push(status);
                    }
                    statuses
                })
            })
            .collect();
        let mut statuses = Vec::new();
        for w in workers {
            statuses.extend(w.await.expect("worker"));
        }
        let wall = started.elapsed();
        let five_xx = statuses.iter().filter(|s| **s >= 500 || **s == 0).count();
        let created = h
            .stack
            .engine
            .list_executions()
            .await
            .expect("executions")
            .iter()
            .filter(|(name, _)| name.starts_with("inc-QSTORM"))
            .count();
        println!();
        println!(
            "| storm | deliveries | unique incidents | executions created | final 5xx | 503 retry-later (redelivered) | wall | throughput |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        println!(
            "| 30 % duplicates, shuffled, 64 concurrent | {} | {unique} | {created} | {five_xx} | {} | {:.1} s | {:.0} deliveries/s |",
            statuses.len(),
            retry_later.load(std::sync::atomic::Ordering::Relaxed),
            wall.as_secs_f64(),
            statuses.len() as f64 / wall.as_secs_f64()
        );
        if created != unique || five_xx != 0 {
            eprintln!("storm FAILED: {created} executions for {unique} incidents, {five_xx} 5xx");
            std::process::exit(1);
        }
    }
}

/// Open-loop deliveries of `make(i)` (signature, body) at `rate` for `seconds`: (latencies in µs,
/// sorted; statuses other than `want`).
async fn open_loop(
    client: &reqwest::Client,
    url: &str,
    rate: u64,
    seconds: u64,
    want: u16,
    make: impl Fn(u64) -> (String, Vec<u8>),
) -> (Vec<u128>, usize) {
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..rate * seconds {
        tokio::time::sleep_until((started + interval * i as u32).into()).await;
        let (client, url, (sig, body)) = (client.clone(), url.to_string(), make(i));
        tasks.push(tokio::spawn(async move {
            post_with(&client, &url, sig, &body, &format!("cap-{}", uuid::Uuid::new_v4().simple())).await
        }));
    }
    let (mut lat, mut other) = (Vec::new(), 0);
    for t in tasks {
        let (status, d) = t.await.expect("task");
        other += usize::from(status != want);
        lat.push(d.as_micros());
    }
    lat.sort_unstable();
    (lat, other)
}

/// Valid and unsigned deliveries at the body cap, and valid pings while unsigned ones run.
async fn at_the_body_cap(client: &reqwest::Client, url: &str, secret: &str, rate: u64, seconds: u64) {
    let head =
        r#"{"event":{"id":"01LOADCAP","event_type":"pagey.ping","resource_type":"pagey","agent":null,"data":{"pad":""#;
    let tail = r#""}}}"#;
    let size = selfheal::stages::intake::MAX_BODY - 64;
    let body = format!("{head}{}{tail}", "x".repeat(size - head.len() - tail.len())).into_bytes();
    let forged = (0..selfheal::signature::MAX_SIGNATURE_ENTRIES)
        .map(|i| format!("v1={:064x}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let valid = sign_pagerduty(secret.as_bytes(), &body);
    println!();
    println!(
        "| at the body cap ({} KB), {rate} req/s for {seconds} s | requests | p50 | p99 | max | unexpected status |",
        size / 1024
    );
    println!("|---|---|---|---|---|---|");
    let row = |name: &str, (lat, other): (Vec<u128>, usize)| {
        println!(
            "| {name} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {other} |",
            lat.len(),
            percentile(&lat, 0.50),
            percentile(&lat, 0.99),
            percentile(&lat, 1.0)
        );
    };
    row("valid (202)", open_loop(client, url, rate, seconds, 202, |_| (valid.clone(), body.clone())).await);
    row(
        &format!("unsigned, {} entries (401)", selfheal::signature::MAX_SIGNATURE_ENTRIES),
        open_loop(client, url, rate, seconds, 401, |_| (forged.clone(), body.clone())).await,
    );
    // Valid pings at the same rate while the unsigned load runs.
    let attack = {
        let (client, url, forged, body) = (client.clone(), url.to_string(), forged.clone(), body.clone());
        tokio::spawn(
            async move { open_loop(&client, &url, rate, seconds, 401, |_| (forged.clone(), body.clone())).await },
        )
    };
    let pings = open_loop(client, url, rate, seconds, 202, |i| {
        let body = format!(
            r#"{{"event":{{"id":"01UNDER{i}","event_type":"pagey.ping","resource_type":"pagey","occurred_at":"2026-11-28T10:00:00Z","agent":null,"client":null,"data":{{}}}}}}"#
        )
        .into_bytes();
        (sign_pagerduty(secret.as_bytes(), &body), body)
    })
    .await;
    let _ = attack.await;
    row("valid pings while the unsigned load runs (202)", pings);
}
