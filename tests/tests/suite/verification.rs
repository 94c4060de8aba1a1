//! Browser verification against the real Lightpanda (started by scripts/test.sh) and a local
//! service that can be healthy, 504, slow or wrong.

use std::sync::Arc;
use std::time::{Duration, Instant};

use selfheal::adapters::lightpanda::LightpandaBrowser;
use selfheal::ports::{Browser, CheckSpec, JourneyStep};
use selfheal::stages::action::run_checks;
use selfheal_testkit::demo_service::{DemoService, Mode};

fn lightpanda() -> String {
    std::env::var("SELFHEAL_LIGHTPANDA_WS")
        .expect("SELFHEAL_LIGHTPANDA_WS is not set: run the tests through scripts/test.sh, which starts Lightpanda")
}

async fn service(mode: Mode) -> (Arc<DemoService>, String) {
    let s = DemoService::new(mode);
    let (base, _task) = selfheal_testkit::spawn(s.router(), 0).await.unwrap();
    (s, base)
}

fn spec(url: String) -> CheckSpec {
    CheckSpec {
        name: "health".into(),
        url,
        expect_status: 200,
        expect_text: Some("checkout healthy".into()),
        expect_selector: Some("#status".into()),
        steps: Vec::new(),
        max_latency_ms: None,
        deadline_ms: 5000,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn healthy_broken_slow_and_wrong_pages() {
    let browser = LightpandaBrowser::new(&lightpanda(), None).unwrap();
    let (svc, base) = service(Mode::Healthy).await;

    let ok = browser.check(&spec(format!("{base}/health"))).await.unwrap();
    assert!(ok.ok, "{ok:?}");
    assert_eq!(ok.status, Some(200));
    assert!(ok.excerpt.contains("checkout healthy"));

    svc.set(Mode::Broken);
    let broken = browser.check(&spec(format!("{base}/health"))).await.unwrap();
    assert!(!broken.ok);
    assert_eq!(broken.status, Some(504), "{broken:?}");
    assert!(broken.failing_step.as_deref().unwrap().contains("504"));
    assert!(broken.excerpt.len() <= 300, "only an excerpt is kept");

    svc.set(Mode::WrongContent);
    let wrong = browser.check(&spec(format!("{base}/health"))).await.unwrap();
    assert!(!wrong.ok);
    assert_eq!(wrong.status, Some(200));
    assert!(wrong.failing_step.as_deref().unwrap().contains("not found"), "{wrong:?}");

    svc.set(Mode::Slow);
    let mut slow_spec = spec(format!("{base}/health"));
    slow_spec.deadline_ms = 1500;
    let started = Instant::now();
    let slow = browser.check(&slow_spec).await.unwrap();
    assert!(!slow.ok);
    assert!(slow.failing_step.as_deref().unwrap().contains("deadline"), "{slow:?}");
    assert!(started.elapsed() < Duration::from_millis(2500), "the deadline holds: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_form_journey() {
    let browser = LightpandaBrowser::new(&lightpanda(), None).unwrap();
    let (_svc, base) = service(Mode::Healthy).await;
    let mut journey = spec(format!("{base}/checkout"));
    journey.expect_text = None;
    journey.expect_selector = Some("#buy".into());
    journey.steps = vec![
        JourneyStep::Fill { selector: "#email".into(), value: "sre@example.com".into() },
        JourneyStep::Click { selector: "#buy".into() },
        JourneyStep::WaitForText { text: "Thank you for your order".into() },
    ];
    let r = browser.check(&journey).await.unwrap();
    assert!(r.ok, "{r:?}");
    assert!(r.excerpt.contains("Thank you"));
    // A step that cannot succeed names itself.
    journey.steps = vec![JourneyStep::Click { selector: "#missing".into() }];
    let r = browser.check(&journey).await.unwrap();
    assert!(!r.ok);
    assert!(r.failing_step.unwrap().starts_with("step 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn discovery_over_http_and_fifty_concurrent_checks() {
    let ws = lightpanda();
    let http = ws.replace("ws://", "http://").trim_end_matches('/').to_string();
    let browser = LightpandaBrowser::new(&http, None).unwrap();
    let (_svc, base) = service(Mode::Healthy).await;
    let specs: Vec<CheckSpec> =
        (0..50).map(|i| CheckSpec { name: format!("c{i}"), ..spec(format!("{base}/health")) }).collect();
    let started = Instant::now();
    let results = run_checks(&browser, &specs, 50).await;
    assert_eq!(results.len(), 50);
    let failed: Vec<_> = results.iter().filter(|r| !r.ok).collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_browser_killed_mid_check_fails_cleanly() {
    let (mut child, ws) = selfheal_cli::demo::spawn_lightpanda("lightpanda", 16)
        .await
        .expect("lightpanda on PATH (scripts/test.sh puts .venv/bin there)");
    let browser = LightpandaBrowser::new(&ws, None).unwrap();
    let (_svc, base) = service(Mode::Slow).await;
    let mut s = spec(format!("{base}/health"));
    s.deadline_ms = 20_000;
    let started = Instant::now();
    let check = tokio::spawn(async move { browser.check(&s).await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    child.kill().await.unwrap();
    let result =
        tokio::time::timeout(Duration::from_secs(10), check).await.expect("no hang after the browser died").unwrap();
    match result {
        Err(e) => assert!(e.is_retryable(), "a dead browser is a retryable failure: {e}"),
        Ok(r) => assert!(!r.ok, "a dead browser cannot pass a check: {r:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}
