//! The ASL conformance suite: every case in `shared/tests/conformance/*.json` runs through the
//! local engine (or its definition validator), and each case cites the AWS documentation sentence
//! it checks (`doc.url` + `doc.quote`) or says why the docs are silent (`docs_silent`).
//! Run: `cargo test -p selfheal --features full --test conformance` (prints every failed case).
//!
//! A case is one of:
//! - `"expression"` (+ `"input"`): a payload-template value (path or intrinsic) evaluated by a
//!   Pass state's Parameters; `expect` has `value`, `value_is` (`"uuid_v4"`), `value_in_range`
//!   (`[lo, hi)`), or `error` (the execution's error name).
//! - `"definition"` (+ `"input"`, `"tasks"`): a whole state machine; Task states are answered
//!   from `tasks[state]` (one response per invocation, the last one repeated): `{"Return": v}` or
//!   `{"Throw": {"Error", "Cause"}}`, `{"Echo": true}` (the parameters back) or
//!   `{"ReturnBytes": n}` (a result of about n bytes). `expect` has `status`, `output`, `error`, `cause`,
//!   `cause_contains`, `path`, `invocations` (state → count), `elapsed_seconds` (simulated time),
//!   or `definition_error` (a substring of the validation error; "" for any).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};

use selfheal::adapters::memory::MemoryTable;
use selfheal::engine::{
    Engine, ExecutionStatus, StateMachine, TaskDispatcher, TaskFailure, TaskInvocation, TaskOutcome,
};
use selfheal::ports::VirtualClock;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Suite {
    topic: String,
    /// Where the quotes come from, when one page serves the whole file.
    #[serde(default)]
    #[allow(dead_code)]
    source: Option<String>,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    url: String,
    quote: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default)]
    doc: Option<Doc>,
    #[serde(default)]
    docs_silent: Option<String>,
    #[serde(default)]
    expression: Option<String>,
    #[serde(default)]
    definition: Option<Value>,
    #[serde(default)]
    input: Option<Value>,
    #[serde(default)]
    tasks: BTreeMap<String, Vec<Value>>,
    expect: Value,
}

/// Answers Task states from the case's script and counts invocations per state.
struct Scripted {
    script: BTreeMap<String, Vec<Value>>,
    calls: Mutex<HashMap<String, usize>>,
}

#[async_trait]
impl TaskDispatcher for Scripted {
    async fn invoke(&self, invocation: TaskInvocation) -> Result<TaskOutcome, TaskFailure> {
        let n = {
            let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
            let c = calls.entry(invocation.state.clone()).or_default();
            *c += 1;
            *c - 1
        };
        let Some(responses) = self.script.get(&invocation.state).filter(|r| !r.is_empty()) else {
            // No script: echo the parameters, as a pass-through service would.
            return Ok(TaskOutcome::Completed(invocation.parameters));
        };
        let r = &responses[n.min(responses.len() - 1)];
        if r.get("Echo") == Some(&Value::Bool(true)) {
            return Ok(TaskOutcome::Completed(invocation.parameters));
        }
        if let Some(v) = r.get("Return") {
            return Ok(TaskOutcome::Completed(v.clone()));
        }
        if let Some(t) = r.get("Throw") {
            return Err(TaskFailure::new(
                t["Error"].as_str().unwrap_or("Unknown"),
                t["Cause"].as_str().unwrap_or_default(),
            ));
        }
        if let Some(size) = r.get("ReturnBytes").and_then(Value::as_u64) {
            // A string payload of about `size` bytes (for the payload quota cases).
            return Ok(TaskOutcome::Completed(json!({ "blob": "x".repeat(size as usize) })));
        }
        Err(TaskFailure::new("Conformance.BadScript", format!("bad scripted response {r}")))
    }
}

async fn run_case(case: &Case) -> Result<(), String> {
    let definition = match (&case.expression, &case.definition) {
        (Some(expr), None) => json!({
            "StartAt": "Eval",
            "States": {"Eval": {"Type": "Pass", "Parameters": {"value.$": expr}, "OutputPath": "$.value", "End": true}}
        }),
        (None, Some(d)) => d.clone(),
        _ => return Err("a case has exactly one of expression and definition".into()),
    };
    let expect = &case.expect;
    let parsed = StateMachine::from_value(&definition);
    if let Some(want) = expect.get("definition_error") {
        let want = want.as_str().ok_or("definition_error must be a string")?;
        return match parsed {
            Ok(_) => Err("the definition was accepted; expected a validation error".into()),
            Err(e) if e.to_string().contains(want) => Ok(()),
            Err(e) => Err(format!("validation error {e:?} does not contain {want:?}")),
        };
    }
    let machine = parsed.map_err(|e| format!("definition refused: {e}"))?;
    let start = chrono::Utc::now();
    let engine = Engine::new(Arc::new(MemoryTable::new()), Arc::new(VirtualClock::starting_at(start)));
    engine.register("case", machine);
    let dispatcher = Arc::new(Scripted { script: case.tasks.clone(), calls: Mutex::new(HashMap::new()) });
    engine.set_dispatcher(dispatcher.clone());
    let input = case.input.clone().unwrap_or_else(|| json!({}));
    engine.start("case", "case", &input.to_string()).await.map_err(|e| format!("start: {e}"))?;
    let rec = engine.wait_for("case", Duration::from_secs(20)).await.map_err(|e| format!("wait: {e}"))?;
    let status = match rec.status {
        ExecutionStatus::Succeeded => "SUCCEEDED",
        ExecutionStatus::Failed => "FAILED",
        ExecutionStatus::TimedOut => "TIMED_OUT",
        ExecutionStatus::Aborted => "ABORTED",
        ExecutionStatus::Running => "RUNNING",
    };
    let got = json!({"status": status, "output": rec.output, "error": rec.error, "cause": rec.cause});
    let mismatch = |what: &str, want: &Value, have: &Value| format!("{what}: expected {want}, got {have} (run: {got})");

    if case.expression.is_some() {
        if let Some(err) = expect.get("error") {
            if status != "FAILED" || rec.error.as_deref() != err.as_str() {
                return Err(mismatch("error", err, &json!(rec.error)));
            }
            return Ok(());
        }
        if status != "SUCCEEDED" {
            return Err(format!("expected a value, the evaluation failed: {got}"));
        }
        let value = rec.output.clone().unwrap_or(Value::Null);
        if let Some(want) = expect.get("value")
            && want != &value
        {
            return Err(mismatch("value", want, &value));
        }
        if let Some(kind) = expect.get("value_is").and_then(Value::as_str) {
            let ok = match kind {
                "uuid_v4" => {
                    value.as_str().and_then(|s| uuid::Uuid::parse_str(s).ok()).is_some_and(|u| u.get_version_num() == 4)
                }
                other => return Err(format!("unknown value_is {other}")),
            };
            if !ok {
                return Err(mismatch("value_is", &json!(kind), &value));
            }
        }
        if let Some(range) = expect.get("value_in_range").and_then(Value::as_array) {
            let (lo, hi) = (range[0].as_i64().unwrap_or(0), range[1].as_i64().unwrap_or(0));
            if !value.as_i64().is_some_and(|v| v >= lo && v < hi) {
                return Err(mismatch("value_in_range", &json!(range), &value));
            }
        }
        return Ok(());
    }

    if let Some(want) = expect.get("status")
        && want.as_str() != Some(status)
    {
        return Err(mismatch("status", want, &json!(status)));
    }
    if let Some(want) = expect.get("output")
        && Some(want) != rec.output.as_ref()
    {
        return Err(mismatch("output", want, &json!(rec.output)));
    }
    if let Some(want) = expect.get("error")
        && want.as_str() != rec.error.as_deref()
    {
        return Err(mismatch("error", want, &json!(rec.error)));
    }
    if let Some(want) = expect.get("cause")
        && want.as_str() != rec.cause.as_deref()
    {
        return Err(mismatch("cause", want, &json!(rec.cause)));
    }
    if let Some(want) = expect.get("cause_contains").and_then(Value::as_str)
        && !rec.cause.as_deref().unwrap_or_default().contains(want)
    {
        return Err(mismatch("cause_contains", &json!(want), &json!(rec.cause)));
    }
    if let Some(want) = expect.get("path")
        && want != &json!(rec.path)
    {
        return Err(mismatch("path", want, &json!(rec.path)));
    }
    if let Some(want) = expect.get("invocations").and_then(Value::as_object) {
        let calls = dispatcher.calls.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for (state, n) in want {
            let have = calls.get(state).copied().unwrap_or(0);
            if n.as_u64() != Some(have as u64) {
                return Err(mismatch(&format!("invocations of {state}"), n, &json!(have)));
            }
        }
    }
    if let Some(want) = expect.get("elapsed_seconds").and_then(Value::as_f64) {
        let stopped = rec.stopped_at.ok_or("the execution has no stop time")?;
        let have = (stopped - rec.started_at).num_milliseconds() as f64 / 1000.0;
        if (have - want).abs() > 0.01 {
            return Err(mismatch("elapsed_seconds", &json!(want), &json!(have)));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/conformance exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let (mut total, mut failed) = (0usize, Vec::new());
    let mut names = std::collections::HashSet::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable");
        let suite: Suite = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for case in &suite.cases {
            total += 1;
            let id = format!("{}/{}", suite.topic, case.name);
            assert!(names.insert(id.clone()), "duplicate case name {id}");
            // Every case says where its expectation comes from.
            let cited = match (&case.doc, &case.docs_silent) {
                (Some(d), None) => d.url.starts_with("https://") && !d.quote.trim().is_empty(),
                (None, Some(why)) => !why.trim().is_empty(),
                _ => false,
            };
            if !cited {
                failed.push(format!("{id}: needs exactly one of doc {{url, quote}} and docs_silent"));
                continue;
            }
            if let Err(e) = run_case(case).await {
                failed.push(format!("{id}: {e}"));
            }
        }
    }
    for f in &failed {
        eprintln!("FAILED {f}");
    }
    eprintln!("conformance: {} cases in {} files, {} failed", total, files.len(), failed.len());
    assert!(total >= 100, "the suite shrank to {total} cases");
    assert!(failed.is_empty(), "{} of {total} conformance cases failed (listed above)", failed.len());
}
