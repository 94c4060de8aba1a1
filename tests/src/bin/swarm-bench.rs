//! Verification swarm benchmark: the same client (selfheal's CDP adapter, one connection per
//! check) against Lightpanda and headless Chromium, N checks at once, measuring wall time and the
//! browser's peak memory (PSS summed over its process tree, sampled every 10 ms).
//!
//! usage: swarm-bench [--counts 10,50,100] [--browsers lightpanda,chromium]
//! (run by `bash scripts/bench-swarm.sh`, which installs what it needs)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use selfheal::adapters::lightpanda::LightpandaBrowser;
use selfheal::ports::CheckSpec;
use selfheal::stages::action::run_checks;
use selfheal_testkit::demo_service::{DemoService, Mode};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// PSS (kB) of `root` and all its descendants.
fn tree_pss_kb(root: u32) -> u64 {
    let mut parents = std::collections::HashMap::<u32, u32>::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
            if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                // The parent pid is the 2nd field after the parenthesised command name.
                if let Some(rest) = stat.rsplit(')').next()
                    && let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok())
                {
                    parents.insert(pid, ppid);
                }
            }
        }
    }
    let in_tree = |mut p: u32| {
        for _ in 0..64 {
            if p == root {
                return true;
            }
            match parents.get(&p) {
                Some(&pp) if pp != 0 => p = pp,
                _ => return false,
            }
        }
        false
    };
    parents
        .keys()
        .copied()
        .filter(|p| in_tree(*p))
        .map(|p| {
            std::fs::read_to_string(format!("/proc/{p}/smaps_rollup"))
                .ok()
                .and_then(|s| {
                    s.lines().find(|l| l.starts_with("Pss:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
                })
                .unwrap_or(0)
        })
        .sum()
}

struct Running {
    child: tokio::process::Child,
    endpoint: String,
}

async fn wait_ready(url: &str) -> bool {
    for _ in 0..200 {
        if reqwest::get(url).await.is_ok_and(|r| r.status().is_success()) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn start(browser: &str) -> Option<Running> {
    if browser == "lightpanda" {
        let (child, endpoint) = selfheal_cli::demo::spawn_lightpanda("lightpanda", 256).await?;
        return Some(Running { child, endpoint });
    }
    if browser != "chromium" {
        return None;
    }
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("swarm-chromium-{port}"));
    let child = tokio::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--remote-debugging-address=127.0.0.1",
        ])
        .arg(format!("--remote-debugging-port={port}"))
        .arg(format!("--user-data-dir={}", dir.display()))
        .arg("about:blank")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .ok()?;
    if !wait_ready(&format!("http://127.0.0.1:{port}/json/version")).await {
        return None;
    }
    // Chromium: discovery through /json/version.
    Some(Running { child, endpoint: format!("http://127.0.0.1:{port}") })
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: &str| selfheal_tests::flag(&args, name, default);
    let counts: Vec<usize> = arg("--counts", "10,50,100").split(',').filter_map(|c| c.parse().ok()).collect();
    let browsers: Vec<String> = arg("--browsers", "lightpanda,chromium").split(',').map(str::to_string).collect();

    let service = DemoService::new(Mode::Healthy);
    let (base, _task) = selfheal_testkit::spawn(service.router(), 0).await.expect("demo service");
    let spec = |i: usize| CheckSpec {
        name: format!("check-{i}"),
        url: format!("{base}/health"),
        expect_status: 200,
        expect_text: Some("checkout healthy".into()),
        expect_selector: None,
        steps: Vec::new(),
        max_latency_ms: None,
        deadline_ms: 60_000,
    };

    println!("| browser | checks | wall | peak memory (PSS) | failed |");
    println!("|---|---|---|---|---|");
    for b in &browsers {
        let Some(running) = start(b).await else {
            println!("| {b} | – | not available on this machine | | |");
            continue;
        };
        let pid = running.child.id().unwrap_or(0);
        let client = LightpandaBrowser::new(&running.endpoint, None).expect("client");
        // Warm up: one check.
        let _ = run_checks(&client, &[spec(0)], 1).await;
        for &n in &counts {
            let specs: Vec<CheckSpec> = (0..n).map(spec).collect();
            let peak = Arc::new(AtomicU64::new(0));
            let done = Arc::new(AtomicBool::new(false));
            let sampler = {
                let (peak, done) = (peak.clone(), done.clone());
                tokio::task::spawn_blocking(move || {
                    while !done.load(Ordering::Relaxed) {
                        peak.fetch_max(tree_pss_kb(pid), Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(10));
                    }
                })
            };
            let started = Instant::now();
            let results = run_checks(&client, &specs, n).await;
            let wall = started.elapsed();
            done.store(true, Ordering::Relaxed);
            let _ = sampler.await;
            let failed = results.iter().filter(|r| !r.ok).count();
            if let Some(f) = results.iter().find(|r| !r.ok) {
                eprintln!("{b}: first failure: {:?}", f.failing_step);
            }
            println!(
                "| {b} | {n} | {:.2} s | {:.0} MB | {failed} |",
                wall.as_secs_f64(),
                peak.load(Ordering::Relaxed) as f64 / 1024.0
            );
        }
        drop(running);
    }
}
