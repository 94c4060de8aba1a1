//! The deployed shape, run as written: every demo scenario through `selfheal stack` — the SAM
//! translator's expansion of template.yaml, one process per Lambda function with only its
//! template environment and IAM identity (moto enforcing IAM), the Step Functions API served by
//! the local engine, and an HTTP API in front of the two HTTP functions.

use selfheal_cli::demo::{self, Scenario};
use serde_json::Value;

async fn run(scenario: Scenario) -> demo::DemoRun {
    let dir = std::env::temp_dir().join("selfheal-test-reports-deployed");
    let mut out = Vec::new();
    let result = demo::run_deployed(scenario, &dir, &mut out).await;
    let printed = String::from_utf8_lossy(&out).to_string();
    let run = result.unwrap_or_else(|e| panic!("{}: {e}\n{printed}", scenario.name()));
    if let Err(e) = demo::check(scenario, &run.record) {
        panic!("{}: {e}\n{printed}\n{}", scenario.name(), serde_json::to_string_pretty(&run.record).unwrap_or_default());
    }
    assert_eq!(run.record["shape"], "deployed");
    run
}

fn invocations(run: &demo::DemoRun, function: &str) -> u64 {
    run.record.pointer(&format!("/invocations/{function}")).and_then(Value::as_u64).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_scenario_reaches_its_outcome_in_the_deployed_shape() {
    for scenario in [
        Scenario::Auto,
        Scenario::Approval,
        Scenario::Rejection,
        Scenario::LowConfidence,
        Scenario::Injection,
        Scenario::FailedFix,
        Scenario::Refire,
    ] {
        let run = run(scenario).await;
        // Every incident came in through the HTTP API and ran its stages as Lambda invocations.
        assert!(invocations(&run, "IntakeFunction") >= 2, "{}: {}", scenario.name(), run.record["invocations"]);
        assert!(invocations(&run, "ClericFunction") >= 1, "{}", scenario.name());
        match scenario {
            Scenario::Auto | Scenario::Approval | Scenario::Refire => {
                assert!(invocations(&run, "RemediateFunction") >= 3, "{}", scenario.name());
                assert!(invocations(&run, "VerifyFunction") >= 2, "{}", scenario.name());
            }
            Scenario::Rejection | Scenario::Injection => {
                assert!(invocations(&run, "SlackCallbackFunction") >= 1, "{}", scenario.name());
                assert_eq!(invocations(&run, "RemediateFunction"), 0, "{}", scenario.name());
            }
            _ => {}
        }
    }
}
