//! Structured logging through `tracing`. JSON by default (one object per line, which CloudWatch
//! Logs Insights parses); `AWS_LAMBDA_LOG_FORMAT=Text` switches to plain text and
//! `AWS_LAMBDA_LOG_LEVEL` (or `RUST_LOG`) sets the level.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// Resolve format and filter from the Lambda variables (falling back to `RUST_LOG`, then `info`).
pub fn log_settings(env: impl Fn(&str) -> Option<String>) -> (LogFormat, String) {
    let format = match env("AWS_LAMBDA_LOG_FORMAT").map(|v| v.to_ascii_lowercase()) {
        Some(v) if v == "text" => LogFormat::Text,
        _ => LogFormat::Json,
    };
    let level = env("AWS_LAMBDA_LOG_LEVEL")
        .map(|l| match l.to_ascii_lowercase().as_str() {
            // Lambda's level names; FATAL has no tracing equivalent.
            "fatal" => "error".to_string(),
            other => other.to_string(),
        })
        .or_else(|| env("RUST_LOG"))
        .unwrap_or_else(|| "info".to_string());
    (format, level)
}

/// Install the global subscriber writing to `writer`. Safe to call more than once (later calls
/// are ignored), so tests and binaries can both call it.
pub fn init_with_writer<W>(writer: W, env: impl Fn(&str) -> Option<String>)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let (format, level) = log_settings(env);
    let filter = EnvFilter::try_new(&level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
}

/// Install the global subscriber on stderr (Lambda and the CLI).
pub fn init() {
    init_with_writer(std::io::stderr, |k| std::env::var(k).ok());
}

/// Lambda's application log levels, least to most severe.
const LAMBDA_LEVELS: [&str; 6] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"];

/// The `level` a metric record carries so that Lambda's log-level filter keeps it.
///
/// With the JSON log format and an application log level (the template's `LogLevel`), Lambda
/// drops every line whose `level` is below the setting. A line without a `level`, or without a
/// valid RFC 3339 `timestamp`, counts as INFO. An EMF record printed without them is therefore
/// dropped at WARN and above, and its metrics never reach CloudWatch. Metrics are not
/// diagnostics and must survive any setting, so a record carries the configured level itself.
/// The level is never below INFO, so the records do not look like debug output.
pub fn metric_level(env: impl Fn(&str) -> Option<String>) -> &'static str {
    let configured = env("AWS_LAMBDA_LOG_LEVEL").map(|l| l.trim().to_ascii_uppercase());
    match configured.as_deref() {
        Some("WARN" | "WARNING") => "WARN",
        Some("ERROR") => "ERROR",
        Some("FATAL") => "FATAL",
        _ => "INFO",
    }
}

/// Whether Lambda's application log-level filter set to `configured` keeps a line at `level`
/// (an unknown level counts as INFO, as Lambda does).
pub fn lambda_keeps(configured: &str, level: &str) -> bool {
    let rank = |l: &str| {
        let l = l.trim().to_ascii_uppercase();
        let l = if l == "WARNING" { "WARN".to_string() } else { l };
        LAMBDA_LEVELS.iter().position(|x| *x == l)
    };
    rank(level).unwrap_or(2) >= rank(configured).unwrap_or(2)
}

/// CloudWatch's metric units; anything else is sent as `None` rather than making CloudWatch
/// reject the whole record.
const EMF_UNITS: &[&str] = &[
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];
/// EMF limits: metrics per directive, dimensions per dimension set, dimension value length.
const EMF_MAX_METRICS: usize = 100;
const EMF_MAX_DIMENSIONS: usize = 30;
const EMF_MAX_DIMENSION_VALUE: usize = 1024;
/// Top-level members of a record that metric and dimension names must not overwrite.
const EMF_RESERVED: &[&str] = &["_aws", "level", "timestamp", "Service"];

/// One CloudWatch embedded-metric-format record in namespace `namespace`, dimensioned by
/// `Service` plus `dimensions`. Besides the EMF members it carries `level` (see
/// [`metric_level`]) and an RFC 3339 `timestamp` for the same instant as `_aws.Timestamp`,
/// because Lambda's log-level filter needs both. Entries that would make CloudWatch reject the
/// whole record are left out: non-finite values, names that collide with reserved members, and
/// anything past the EMF limits. Empty dimension values become `unknown`.
pub fn emf_record(
    namespace: &str,
    service: &str,
    metrics: &[(&str, f64, &str)],
    dimensions: &[(&str, &str)],
    at: chrono::DateTime<chrono::Utc>,
    level: &str,
) -> serde_json::Value {
    use serde_json::{Map, Value, json};
    let dimension_value = |v: &str| {
        let v = v.trim();
        if v.is_empty() { "unknown".to_string() } else { v.chars().take(EMF_MAX_DIMENSION_VALUE).collect() }
    };
    let named = |n: &str| !n.is_empty() && n.len() <= 255 && !EMF_RESERVED.contains(&n);
    let mut root = Map::new();
    root.insert("level".into(), json!(level));
    root.insert("timestamp".into(), json!(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)));
    root.insert("Service".into(), json!(dimension_value(service)));
    let mut dims: Vec<&str> = vec!["Service"];
    for (k, v) in dimensions {
        if named(k) && !dims.contains(k) && dims.len() < EMF_MAX_DIMENSIONS {
            dims.push(k);
            root.insert((*k).into(), json!(dimension_value(v)));
        }
    }
    let mut definitions: Vec<Value> = Vec::new();
    for (name, value, unit) in metrics {
        let taken = root.contains_key(*name);
        if !named(name) || taken || !value.is_finite() || definitions.len() >= EMF_MAX_METRICS {
            tracing::debug!(metric = %name, "metric left out of the EMF record");
            continue;
        }
        let unit = if EMF_UNITS.contains(unit) { *unit } else { "None" };
        definitions.push(json!({"Name": name, "Unit": unit}));
        root.insert((*name).into(), json!(value));
    }
    root.insert(
        "_aws".into(),
        json!({
            "Timestamp": at.timestamp_millis(),
            "CloudWatchMetrics": [{"Namespace": namespace, "Dimensions": dimension_sets(&dims), "Metrics": definitions}]
        }),
    );
    Value::Object(root)
}

/// Every metric selfheal publishes (namespace `selfheal`), with what it counts. The template's
/// alarms may only watch these (`template_ops.rs` checks), and each is emitted by stage code.
pub const METRICS: &[(&str, &str)] = &[
    ("Decided", "a policy decision (dimension Route: auto, approval, escalate, shadow)"),
    ("BudgetExhausted", "a confident plan sent to approval because the service's hourly budget was spent"),
    ("Approved", "an approval granted in Slack"),
    ("Rejected", "a plan rejected in Slack"),
    ("ApprovalLatency", "seconds from the approval request to the decision"),
    ("FixExecuted", "a fix that ran in a Coder workspace (dimension Route; Route=auto is auto-executed)"),
    ("FixFailed", "a fix whose workspace run failed"),
    ("Resolved", "an incident resolved by selfheal (dimension Route)"),
    ("TimeToResolve", "seconds from the trigger to selfheal's resolution"),
    ("Escalated", "a run handed to a person (dimension Reason: the state machine's reason code or error name)"),
    ("EffectiveFix", "a fix that held through its stability window"),
    ("IneffectiveFix", "a fix whose alert fired again or whose incident was reopened"),
    ("SignatureRejected", "a PagerDuty webhook whose signature did not verify"),
    ("WebhookSecretMissing", "a PagerDuty webhook answered 503 because no webhook secret is configured"),
];

/// Each metric is published per service with its extra dimensions, across services with them
/// (`Route` or `Reason` alone), and with none: the stack-wide series the template's alarms watch
/// (an empty dimension set is valid EMF and publishes the metric without dimensions).
fn dimension_sets(dims: &[&str]) -> Vec<Vec<String>> {
    let all: Vec<String> = dims.iter().map(|d| (*d).to_string()).collect();
    let extras: Vec<String> = dims.iter().filter(|d| **d != "Service").map(|d| (*d).to_string()).collect();
    let mut sets = vec![all];
    if !extras.is_empty() {
        sets.push(extras);
    }
    sets.push(Vec::new());
    sets
}

static EMF_TO_STDOUT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Lambda prints EMF records on stdout (CloudWatch turns them into metrics); interactive
/// commands switch that off so the records do not interleave with their output.
pub fn set_metrics_to_stdout(on: bool) {
    EMF_TO_STDOUT.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// CloudWatch embedded-metric-format record (one JSON line on stdout; CloudWatch turns it into
/// metrics, `selfheal stats` reads the same figures from the store). The record carries a
/// `level` and `timestamp` so Lambda's log-level filter keeps it at any `LogLevel`
/// (see [`metric_level`]).
pub fn emit_metric(service: &str, metrics: &[(&str, f64, &str)], dimensions: &[(&str, &str)]) {
    // The Lambda level is fixed for the life of the execution environment: read it once.
    static LEVEL: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();
    let level = *LEVEL.get_or_init(|| metric_level(|k| std::env::var(k).ok()));
    let record = emf_record("selfheal", service, metrics, dimensions, chrono::Utc::now(), level);
    if EMF_TO_STDOUT.load(std::sync::atomic::Ordering::Relaxed) {
        println!("{record}");
    } else {
        tracing::debug!(emf = %record, "metric");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::env_map;

    #[test]
    fn lambda_variables_win() {
        let (f, l) = log_settings(env_map(&[("AWS_LAMBDA_LOG_FORMAT", "Text"), ("AWS_LAMBDA_LOG_LEVEL", "DEBUG")]));
        assert_eq!(f, LogFormat::Text);
        assert_eq!(l, "debug");
        let (f, l) = log_settings(env_map(&[("RUST_LOG", "warn")]));
        assert_eq!(f, LogFormat::Json);
        assert_eq!(l, "warn");
        let (_, l) = log_settings(env_map(&[("AWS_LAMBDA_LOG_LEVEL", "FATAL")]));
        assert_eq!(l, "error");
    }

    #[test]
    fn metric_records_survive_every_lambda_level() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-12-01T10:00:00.250Z").unwrap().to_utc();
        for configured in LAMBDA_LEVELS {
            let level = metric_level(env_map(&[("AWS_LAMBDA_LOG_LEVEL", configured)]));
            assert!(lambda_keeps(configured, level), "{configured}: {level}");
            let r = emf_record("selfheal", "checkout", &[("Resolved", 1.0, "Count")], &[], at, level);
            assert_eq!(r["level"], level);
            assert_eq!(r["timestamp"], "2026-12-01T10:00:00.250Z");
            assert_eq!(r["_aws"]["Timestamp"], at.timestamp_millis());
        }
        assert_eq!(metric_level(env_map(&[])), "INFO");
        assert_eq!(metric_level(env_map(&[("AWS_LAMBDA_LOG_LEVEL", "debug")])), "INFO");
        assert!(!lambda_keeps("WARN", "INFO") && !lambda_keeps("WARN", "bogus") && lambda_keeps("TRACE", "bogus"));
    }

    #[test]
    fn records_leave_out_what_cloudwatch_would_reject() {
        let r = emf_record(
            "selfheal",
            "",
            &[("Good", 2.0, "Seconds"), ("NaN", f64::NAN, "Count"), ("level", 1.0, "Count"), ("Odd", 1.0, "Furlongs")],
            &[("Route", ""), ("timestamp", "x")],
            chrono::Utc::now(),
            "INFO",
        );
        let directive = &r["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Dimensions"], serde_json::json!([["Service", "Route"], ["Route"], []]));
        assert_eq!(
            directive["Metrics"],
            serde_json::json!([{"Name": "Good", "Unit": "Seconds"}, {"Name": "Odd", "Unit": "None"}])
        );
        assert_eq!(
            (r["Service"].as_str(), r["Route"].as_str(), r["level"].as_str()),
            (Some("unknown"), Some("unknown"), Some("INFO"))
        );
        assert!(r.get("NaN").is_none());
    }
}
