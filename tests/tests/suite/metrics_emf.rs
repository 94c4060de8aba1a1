//! Custom metrics survive Lambda's log-level filter and stay valid embedded metric format.
//!
//! With the JSON log format (the template's `LoggingConfig`) Lambda filters application log lines
//! by their `level` key. A line without one, or without a valid RFC 3339 `timestamp`, counts as
//! INFO, so at `LogLevel` WARN an EMF record without them is dropped and its metrics are lost.
//! These tests hold every record to both rules, at every level, and to the EMF specification.

use selfheal::telemetry::{emf_record, lambda_keeps, metric_level};
use serde_json::Value;

const LEVELS: [&str; 6] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"];

/// Lambda's application log-level filter, as AWS documents it for custom runtimes.
fn lambda_delivers(line: &str, configured: &str) -> bool {
    let Ok(Value::Object(o)) = serde_json::from_str::<Value>(line) else { return lambda_keeps(configured, "INFO") };
    let timestamp_ok =
        o.get("timestamp").and_then(Value::as_str).is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok());
    let level = match o.get("level").and_then(Value::as_str) {
        Some(l) if timestamp_ok => l,
        _ => "INFO",
    };
    lambda_keeps(configured, level)
}

/// The EMF specification's structural rules (CloudWatch drops a record that breaks one).
fn assert_valid_emf(r: &Value) {
    let aws = &r["_aws"];
    assert!(aws["Timestamp"].as_i64().is_some_and(|t| t > 0), "_aws.Timestamp is epoch milliseconds: {r}");
    let directives = aws["CloudWatchMetrics"].as_array().expect("CloudWatchMetrics is an array");
    assert!(!directives.is_empty());
    for d in directives {
        let ns = d["Namespace"].as_str().expect("Namespace");
        assert!(!ns.is_empty() && ns.len() <= 255);
        for set in d["Dimensions"].as_array().expect("Dimensions is an array of arrays") {
            let set = set.as_array().expect("a dimension set is an array");
            assert!(set.len() <= 30);
            for name in set {
                let value = r[name.as_str().expect("dimension names are strings")].as_str();
                assert!(value.is_some_and(|v| !v.is_empty() && v.len() <= 1024), "dimension {name} has a value: {r}");
            }
        }
        let metrics = d["Metrics"].as_array().expect("Metrics is an array");
        assert!(metrics.len() <= 100);
        for m in metrics {
            let name = m["Name"].as_str().expect("Name");
            assert!(r[name].is_number(), "metric {name} has a numeric member: {r}");
        }
    }
    // The instant is stated once for CloudWatch and once for Lambda: they must agree.
    let rfc = chrono::DateTime::parse_from_rfc3339(r["timestamp"].as_str().unwrap()).unwrap();
    assert_eq!(rfc.timestamp_millis(), aws["Timestamp"].as_i64().unwrap());
}

#[test]
fn metric_records_are_delivered_at_every_log_level_and_stay_valid_emf() {
    let at = chrono::Utc::now();
    for configured in LEVELS {
        let level = metric_level(|k| (k == "AWS_LAMBDA_LOG_LEVEL").then(|| configured.to_string()));
        let record = emf_record(
            "selfheal",
            "checkout",
            &[("TimeToResolve", 312.5, "Seconds"), ("Resolved", 1.0, "Count")],
            &[("Route", "auto")],
            at,
            level,
        );
        let line = record.to_string();
        assert!(!line.contains('\n'), "one record per line");
        assert!(lambda_delivers(&line, configured), "dropped at {configured}: {line}");
        assert_valid_emf(&record);
        assert_eq!(record["Resolved"], 1.0);
        assert_eq!(
            record["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            serde_json::json!([["Service", "Route"], ["Route"], []])
        );

        // The test can tell: the same record without `level`, or without a usable `timestamp`,
        // is lost once the level is above INFO.
        for strip in ["level", "timestamp"] {
            let mut bare = record.clone();
            bare.as_object_mut().unwrap().remove(strip);
            let kept = lambda_delivers(&bare.to_string(), configured);
            assert_eq!(kept, lambda_keeps(configured, "INFO"), "{configured} without {strip}");
        }
    }
    assert!(!lambda_delivers(r#"{"_aws":{}}"#, "WARN"), "the old records were dropped at WARN");
}

#[test]
fn unusable_entries_are_left_out_rather_than_voiding_the_record() {
    let record = emf_record(
        "selfheal",
        "",
        &[("Inf", f64::INFINITY, "Count"), ("level", 1.0, "Count"), ("Escalated", 1.0, "Count")],
        &[("Route", ""), ("_aws", "x")],
        chrono::Utc::now(),
        "WARN",
    );
    assert_valid_emf(&record);
    assert_eq!(record["level"], "WARN");
    assert_eq!(
        record["_aws"]["CloudWatchMetrics"][0]["Metrics"],
        serde_json::json!([{"Name": "Escalated", "Unit": "Count"}])
    );
}
