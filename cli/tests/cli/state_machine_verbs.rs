//! `selfheal run-state-machine` and `selfheal history`, driven as a user would.

use std::process::Command;

fn selfheal(args: &[&str], db: &str) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_selfheal"))
        .args(args)
        .env("SELFHEAL_DB", db)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn run_a_mock_case_then_read_its_history() {
    let db = std::env::temp_dir().join(format!("selfheal-cli-{}.sqlite", std::process::id()));
    let db = db.to_str().unwrap();
    let (code, out, err) = selfheal(
        &[
            "run-state-machine",
            "statemachine/incident.asl.json",
            "--mock-config",
            "statemachine/test/MockConfigFile.json",
            "--test-case",
            "PreflightHealthy",
        ],
        db,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 1, "one JSON object: {out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["status"], "SUCCEEDED");
    assert_eq!(v["output"]["outcome"], "escalated");
    assert_eq!(v["path"].as_array().unwrap().last().unwrap(), "Escalated");
    let execution = v["execution"].as_str().unwrap();

    let (code, out, err) = selfheal(&["history", execution], db);
    assert_eq!(code, 0, "{err}");
    let h: serde_json::Value = serde_json::from_str(&out).unwrap();
    let events = h["events"].as_array().unwrap();
    assert_eq!(events.first().unwrap()["type"], "ExecutionStarted");
    assert_eq!(events.last().unwrap()["type"], "ExecutionSucceeded");
    assert!(events.iter().any(|e| e["type"] == "ChoiceStateEntered" && e["state"] == "BaselineShowsFailure"));

    let (code, _, err) = selfheal(&["history", "no-such-execution"], db);
    assert_eq!(code, 2);
    assert!(err.contains("no execution"), "{err}");
}

#[test]
fn custom_input_and_bad_files_are_reported() {
    let db = std::env::temp_dir().join(format!("selfheal-cli2-{}.sqlite", std::process::id()));
    let db = db.to_str().unwrap();
    let input = std::env::temp_dir().join(format!("selfheal-input-{}.json", std::process::id()));
    std::fs::write(&input, r#"{"incident_id": "PCUSTOM", "config": {"hypothesis_timeout_secs": 60}}"#).unwrap();
    let (code, out, err) = selfheal(
        &[
            "run-state-machine",
            "statemachine/incident.asl.json",
            "--mock-config",
            "statemachine/test/MockConfigFile.json",
            "--test-case",
            "NoHypothesisBeforeTimeout",
            "--input",
            input.to_str().unwrap(),
        ],
        db,
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["output"]["incident_id"], "PCUSTOM");

    let (code, _, err) = selfheal(
        &[
            "run-state-machine",
            "does-not-exist.json",
            "--mock-config",
            "statemachine/test/MockConfigFile.json",
            "--test-case",
            "HappyAuto",
        ],
        db,
    );
    assert_eq!(code, 2);
    assert!(err.contains("cannot read does-not-exist.json"), "{err}");
}
