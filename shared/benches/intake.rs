//! Intake hot path on one core: signature verification over the raw body, envelope parsing and
//! the dedupe decision (a conditional write), through the real webhook handler, for a
//! `pagey.ping` (no orchestration) on the in-memory table.
//! Run: `cargo bench -p selfheal --bench intake`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use secrecy::SecretString;
use std::sync::Arc;

use selfheal::config::{Secrets, Settings};
use selfheal::ports::SystemClock;
use selfheal::signature::sign_pagerduty;
use selfheal::stages::http::HttpRequest;
use selfheal::store::{MemoryTable, TableStore};
use selfheal::wiring::{Unconfigured, build_deps};

fn intake(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let secrets = Secrets {
        pagerduty_webhook_secrets: vec![SecretString::from("whsec-bench".to_string())],
        ..Default::default()
    };
    let deps = build_deps(
        Settings::from_sources(None, |_| None).unwrap(),
        secrets,
        Arc::new(TableStore::new(MemoryTable::new())),
        Arc::new(Unconfigured("orchestrator")),
        Arc::new(SystemClock::real()),
    );
    // A realistic 1.6 KB envelope (the size of PagerDuty's own test vector).
    let body = include_str!("../tests/fixtures/pagerduty_priority_updated.json")
        .replace("incident.priority_updated", "pagey.ping")
        .into_bytes();
    let sig = sign_pagerduty(b"whsec-bench", &body);
    let mut n = 0u64;
    let mut group = c.benchmark_group("intake");
    group.throughput(Throughput::Elements(1));
    group.bench_function("verify_parse_dedupe", |b| {
        b.iter(|| {
            n += 1;
            let req = HttpRequest::new(
                vec![("x-pagerduty-signature".into(), sig.clone()), ("x-webhook-id".into(), format!("bench-{n}"))],
                body.clone(),
            );
            let resp = rt.block_on(selfheal::stages::intake::handle_webhook(&deps, &req));
            assert_eq!(resp.status, 202);
        })
    });
    group.finish();
}

criterion_group!(benches, intake);
criterion_main!(benches);
