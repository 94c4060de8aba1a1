//! Intake hot path on one core: signature verification over the raw body, envelope parsing and
//! the dedupe decision (a conditional write), through the real webhook handler, for a
//! `pagey.ping` (no orchestration) on the in-memory table.
//!
//! `intake_at_the_body_cap`: what an unauthenticated request can cost next to a valid one. Two
//! webhook secrets are configured (a rotation, the most verification does), the body is just
//! under the 256 KB cap, and the forged header carries as many entries as allowed; a header
//! with 1,000 entries is there to show it is refused before any hashing.
//! Run: `cargo bench -p selfheal --bench intake`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use secrecy::SecretString;
use std::sync::Arc;

use selfheal::config::{Secrets, Settings};
use selfheal::ports::SystemClock;
use selfheal::signature::sign_pagerduty;
use selfheal::stages::http::HttpRequest;
use selfheal::wiring::{Unconfigured, build_deps};
use selfheal::{adapters::memory::MemoryTable, store::TableStore};

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

fn intake_at_the_body_cap(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let secrets = Secrets {
        pagerduty_webhook_secrets: vec![
            SecretString::from("whsec-bench".to_string()),
            SecretString::from("whsec-bench-previous".to_string()),
        ],
        ..Default::default()
    };
    let deps = build_deps(
        Settings::from_sources(None, |_| None).unwrap(),
        secrets,
        Arc::new(TableStore::new(MemoryTable::new())),
        Arc::new(Unconfigured("orchestrator")),
        Arc::new(SystemClock::real()),
    );
    // A `pagey.ping` padded to 64 bytes under the cap: the most intake hashes.
    let head =
        r#"{"event":{"id":"01BENCHCAP","event_type":"pagey.ping","resource_type":"pagey","agent":null,"data":{"pad":""#;
    let tail = r#""}}}"#;
    let size = selfheal::stages::intake::MAX_BODY - 64;
    let body = format!("{head}{}{tail}", "x".repeat(size - head.len() - tail.len())).into_bytes();
    let valid = sign_pagerduty(b"whsec-bench", &body);
    let forged = |n: usize| (0..n).map(|i| format!("v1={:064x}", i + 1)).collect::<Vec<_>>().join(",");
    let mut n = 0u64;
    let mut group = c.benchmark_group("intake_at_the_body_cap");
    group.throughput(Throughput::Elements(1));
    let mut run = |name: &str, header: String, status: u16| {
        group.bench_function(name, |b| {
            b.iter(|| {
                n += 1;
                let req = HttpRequest::new(
                    vec![("x-pagerduty-signature".into(), header.clone()), ("x-webhook-id".into(), format!("cap-{n}"))],
                    body.clone(),
                );
                let resp = rt.block_on(selfheal::stages::intake::handle_webhook(&deps, &req));
                assert_eq!(resp.status, status);
            })
        });
    };
    run("valid", valid, 202);
    run("unsigned_entries_at_the_cap", forged(selfheal::signature::MAX_SIGNATURE_ENTRIES), 401);
    run("unsigned_1000_entries", forged(1000), 401);
    group.finish();
}

criterion_group!(benches, intake, intake_at_the_body_cap);
criterion_main!(benches);
