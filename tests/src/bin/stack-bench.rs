//! The verify function's cold start in the deployed shape: `selfheal stack` (release function
//! binaries: SELFHEAL_FUNCTIONS_DIR=target/release), the verify function running the Lightpanda
//! its image ships, a service with N browser checks. Per run (a fresh stack each time):
//! init (process start to its first `/next`: config, secrets, clients, the browser's start),
//! the first preflight (cold browser connections) and a second one (warm).
//!
//! usage: stack-bench [--runs 5] [--checks 10]

use selfheal_cli::demo::{self, Scenario};
use selfheal_tests::flag;
use serde_json::json;
use std::time::{Duration, Instant};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runs: usize = flag(&args, "--runs", "5").parse().expect("--runs N");
    let checks: usize = flag(&args, "--checks", "10").parse().expect("--checks N");
    let (mut inits, mut firsts, mut seconds) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        let mut out = Vec::new();
        let h = selfheal_cli::demo_deployed::harness(Scenario::Auto, &mut out)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", String::from_utf8_lossy(&out)));
        // N checks against the (broken) demo service.
        let mut service = h.store.get_service_settings(demo::SERVICE_ID).await.expect("store").expect("service pushed");
        let template = service.checks[0].clone();
        service.checks = (0..checks)
            .map(|i| {
                let mut c = template.clone();
                c.name = format!("check {i}");
                c
            })
            .collect();
        h.store.put_service_settings(&service).await.expect("10 checks stored");
        let incident = format!("QBENCH{run}{}", &uuid::Uuid::new_v4().simple().to_string()[..6].to_uppercase());
        let data = selfheal_testkit::sim::Sim::incident_data(&incident, 7, "bench", demo::SERVICE_ID, "checkout");
        assert_eq!(h.sim.deliver_webhook("incident.triggered", data, None).await.expect("delivered"), 202);

        let started = Instant::now();
        let init = loop {
            if let Some(d) = h.stack.lambda.init_duration("VerifyFunction") {
                break d;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "verify never finished its init");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let payload = json!({"op": "preflight", "incident_id": incident});
        let time_preflight = async || {
            let t = Instant::now();
            let r = h.stack.lambda.invoke("VerifyFunction", &payload).await.expect("invoked");
            assert!(matches!(r, selfheal_cli::stack::lambda::Invoked::Ok(_)), "preflight failed: {r:?}");
            t.elapsed().as_secs_f64() * 1000.0
        };
        let first = time_preflight().await;
        let second = time_preflight().await;
        println!(
            "run {run}: init {:.1} ms, first preflight ({checks} checks) {first:.1} ms, second {second:.1} ms",
            init.as_secs_f64() * 1000.0
        );
        inits.push(init.as_secs_f64() * 1000.0);
        firsts.push(first);
        seconds.push(second);
        h.stack.shutdown().await;
    }
    println!(
        "median of {runs}: init {:.1} ms (embedded Lightpanda started), cold start to a {checks}-check preflight {:.1} ms, warm preflight {:.1} ms",
        median(inits.clone()),
        median(inits.iter().zip(&firsts).map(|(a, b)| a + b).collect()),
        median(seconds),
    );
}
