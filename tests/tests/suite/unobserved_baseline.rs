//! "The page could not be checked" is not "the page shows the failure": a DNS failure, a refused
//! connection or a TLS error observes nothing, so it never confirms a baseline and no fix runs
//! on it; the run escalates saying so. Against the real Lightpanda (started by scripts/test.sh)
//! and the plain-HTTP checker.

use std::sync::Arc;

use selfheal::adapters::lightpanda::{HttpChecker, LightpandaBrowser};
use selfheal::config::{Secrets, Settings};
use selfheal::domain::*;
use selfheal::ports::{Browser, CheckSpec, IncidentStore, SystemClock};
use selfheal::stages::{self, Function};
use selfheal::wiring::{Unconfigured, build_deps};
use selfheal::{adapters::memory::MemoryTable, store::TableStore};
use selfheal_testkit::demo_service::{DemoService, Mode};
use serde_json::json;

fn lightpanda() -> String {
    std::env::var("SELFHEAL_LIGHTPANDA_WS")
        .expect("SELFHEAL_LIGHTPANDA_WS is not set: run the tests through scripts/test.sh, which starts Lightpanda")
}

fn spec(url: String) -> CheckSpec {
    CheckSpec {
        name: "health".into(),
        url,
        expect_status: 200,
        expect_text: Some("checkout healthy".into()),
        expect_selector: None,
        steps: Vec::new(),
        max_latency_ms: None,
        deadline_ms: 8000,
    }
}

/// A loopback port nothing listens on.
fn closed_port_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("http://127.0.0.1:{port}/health")
}

async fn broken_service() -> String {
    let s = DemoService::new(Mode::Broken);
    let (base, _task) = selfheal_testkit::spawn(s.router(), 0).await.unwrap();
    std::mem::forget(s);
    format!("{base}/health")
}

async fn classify(browser: &dyn Browser, url: String) -> CheckResult {
    browser.check(&spec(url)).await.expect("the browser itself works")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreachable_page_is_told_apart_from_a_failing_one() {
    let broken = broken_service().await;
    let lp = LightpandaBrowser::new(&lightpanda(), None).unwrap();
    let http = HttpChecker::new().unwrap();
    for (name, browser) in [("lightpanda", &lp as &dyn Browser), ("plain http", &http as &dyn Browser)] {
        let seen = classify(browser, broken.clone()).await;
        assert!(!seen.ok && !seen.unreachable, "{name}: a 504 is an observed failure: {seen:?}");
        assert_eq!(seen.status, Some(504), "{name}");
        for url in [closed_port_url(), "http://selfheal-no-such-host.invalid/health".to_string()] {
            let r = classify(browser, url.clone()).await;
            assert!(!r.ok, "{name} {url}: {r:?}");
            assert!(r.unreachable, "{name} {url}: nothing answered, so nothing was observed: {r:?}");
            assert!(r.failing_step.as_deref().unwrap_or_default().starts_with("unreachable"), "{name}: {r:?}");
        }
    }
}

async fn deps_with_check(url: &str) -> (stages::Deps, IncidentId) {
    let mut settings = Settings::from_sources(None, |_| None).unwrap();
    settings.checks.insert("PSVC1".into(), vec![spec(url.to_string())]);
    let store: Arc<dyn IncidentStore> = Arc::new(TableStore::new(MemoryTable::new()));
    let mut deps = build_deps(
        settings,
        Secrets::default(),
        store,
        Arc::new(Unconfigured("orchestrator")),
        Arc::new(SystemClock::real()),
    );
    deps.browser = Arc::new(HttpChecker::new().unwrap());
    let id = IncidentId::parse(format!("QUNR{}", &uuid::Uuid::new_v4().simple().to_string()[..8])).unwrap();
    let incident = Incident::new(
        id.clone(),
        "checkout 504".into(),
        ServiceRef { id: ServiceId::parse("PSVC1").unwrap(), name: ServiceName::parse("checkout").unwrap() },
        Urgency::High,
        chrono::Utc::now(),
    );
    deps.store.create_incident(&incident).await.unwrap();
    (deps, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unobserved_baseline_escalates_with_its_reason_and_nothing_runs() {
    let (deps, id) = deps_with_check(&closed_port_url()).await;
    let err = stages::handle(&deps, Function::Verify, json!({"op": "preflight", "incident_id": id.as_str()}))
        .await
        .expect_err("an unreachable page must not confirm the failure (the state machine would run the fix)");
    // Stopped goes straight to the escalation (no retries), whose reason is this message.
    assert_eq!(err.error_name(), "Stopped", "{err}");
    assert!(err.to_string().contains("could not be checked"), "{err}");
    let trail = deps.store.audit_trail(&id).await.unwrap();
    let audited = trail.iter().find(|e| e.kind == "baseline_unobserved").expect("audited");
    assert!(audited.detail.to_string().contains("unreachable"), "{}", audited.detail);
    let incident = deps.store.get_incident(&id).await.unwrap().unwrap();
    assert!(incident.verifications.is_empty(), "no verification recorded as a confirmed baseline");

    // The same stage against a page that answers 504 confirms the baseline (the control).
    let (deps, id) = deps_with_check(&broken_service().await).await;
    let out =
        stages::handle(&deps, Function::Verify, json!({"op": "preflight", "incident_id": id.as_str()})).await.unwrap();
    assert_eq!(out["healthy"], false);
}
