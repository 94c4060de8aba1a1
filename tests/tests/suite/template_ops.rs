//! template.yaml and statemachine/incident.asl.json against the op table
//! (`selfheal::stages::ops`) and the retry budgets (`selfheal::budget`): every task calls a
//! function that runs its op, every function gets the settings, secrets and IAM actions its
//! work needs, every Timeout holds the function's worst case, the longest run fits the state
//! machine's timeout, and every log group is retained.
//!
//! The template is read as the real SAM translator expands it (`scripts/sam_expand.py`, in the
//! `.venv` that `scripts/setup-test-tools.sh` creates); without that venv the tests say so and
//! pass.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::{Value, json};

use selfheal::budget::{self, LAMBDA_MAX_SECS};
use selfheal::config::{Settings, env_map};
use selfheal::stages::{Capability, Function, Op};

/// Functions whose worst case no allowed Timeout can hold; each must run at the platform's
/// limit. Listed here so the gap stays visible; the test fails when one starts to fit.
const OVER_LIMIT: &[(Function, &str)] = &[
    (
        Function::Planner,
        "Anthropic's read_json re-sends a garbled 2xx with a fresh send budget: 3 × (3 × 90 s + 2 × 20 s) + 16 s",
    ),
    (
        Function::Intake,
        "API Gateway answers after 29 s; a trigger's dedupe, re-fire check, store writes and StartExecution are ~30 AWS calls at a 10 s operation timeout",
    ),
    (
        Function::SlackCallback,
        "API Gateway answers after 29 s; the click is acknowledged first, but the decision and the response_url reply after it (up to 100 s) share the invocation",
    ),
];

/// The check load the Verify function's Timeout is sized for (checks are pushed per service at
/// run time): 16 checks at the default 10 s deadline, 8 at a time. Keep in step with the
/// comment on VerifyFunction in template.yaml.
const SIZED_FOR_CHECKS: usize = 16;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The template as CloudFormation JSON, or `None` (with the reason printed) without the venv.
fn expanded() -> Option<&'static Value> {
    static EXPANDED: OnceLock<Option<Value>> = OnceLock::new();
    EXPANDED
        .get_or_init(|| {
            let python = root().join(".venv/bin/python");
            if !python.exists() {
                eprintln!("SKIPPED: {} is missing (run scripts/setup-test-tools.sh)", python.display());
                return None;
            }
            // Another template (a mutated copy, say) can be checked the same way.
            let template = std::env::var("SELFHEAL_TEMPLATE_UNDER_TEST").unwrap_or_else(|_| "template.yaml".into());
            let out = std::process::Command::new(&python)
                .current_dir(root())
                .args(["scripts/sam_expand.py", &template])
                .output()
                .expect("run scripts/sam_expand.py");
            assert!(out.status.success(), "sam_expand.py failed:\n{}", String::from_utf8_lossy(&out.stderr));
            Some(serde_json::from_slice(&out.stdout).expect("sam_expand.py prints JSON"))
        })
        .as_ref()
}

fn asl() -> Value {
    let text = std::fs::read_to_string(root().join("statemachine/incident.asl.json")).expect("read the ASL");
    serde_json::from_str(&text).expect("the ASL is JSON")
}

fn resource<'a>(t: &'a Value, id: &str) -> &'a Value {
    t.pointer(&format!("/Resources/{id}")).unwrap_or_else(|| panic!("template has no resource {id}"))
}

fn props<'a>(t: &'a Value, id: &str) -> &'a Value {
    &resource(t, id)["Properties"]
}

/// Every state, nested Parallel branches and Map iterators included.
fn states(asl: &Value) -> Vec<(String, Value)> {
    fn walk(states: &Value, out: &mut Vec<(String, Value)>) {
        for (name, s) in states.as_object().into_iter().flatten() {
            out.push((name.clone(), s.clone()));
            for branch in s["Branches"].as_array().into_iter().flatten() {
                walk(&branch["States"], out);
            }
            for key in ["Iterator", "ItemProcessor"] {
                walk(&s[key]["States"], out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&asl["States"], &mut out);
    out
}

/// A `${XFunctionArn}` task's function and op.
fn task_target(state: &Value) -> Option<(Function, String)> {
    let params = state.get("Parameters").or_else(|| state.get("Arguments"))?;
    let name = params["FunctionName"].as_str()?;
    let key = name.strip_prefix("${")?.strip_suffix('}')?;
    let function = Function::ALL.into_iter().find(|f| f.substitution() == key)?;
    let op = params["Payload"]["op"].as_str().unwrap_or_default().to_string();
    Some((function, op))
}

/// Whether `value` refers to resource `id` anywhere (Ref, GetAtt, or `${id}` in a Sub).
fn mentions(value: &Value, id: &str) -> bool {
    match value {
        Value::Object(m) => {
            m.get("Ref").and_then(Value::as_str) == Some(id)
                || m.get("Fn::GetAtt").and_then(|g| g.get(0)).and_then(Value::as_str) == Some(id)
                || m.values().any(|v| mentions(v, id))
        }
        Value::Array(a) => a.iter().any(|v| mentions(v, id)),
        Value::String(s) => s.contains(&format!("${{{id}}}")) || s.contains(&format!("${{{id}.")),
        _ => false,
    }
}

/// Resolve parameters (their defaults, or `overrides`) and pseudo parameters in simple values.
fn resolve(t: &Value, value: &Value, overrides: &BTreeMap<&str, String>) -> Option<String> {
    let param = |name: &str| -> Option<String> {
        if let Some(v) = overrides.get(name) {
            return Some(v.clone());
        }
        match name {
            "AWS::StackName" => Some("selfheal".into()),
            "AWS::Region" => Some("us-east-1".into()),
            "AWS::AccountId" => Some("123456789012".into()),
            "AWS::Partition" => Some("aws".into()),
            _ => t.pointer(&format!("/Parameters/{name}/Default")).map(|d| match d {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            }),
        }
    };
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Object(m) if m.contains_key("Ref") => param(m["Ref"].as_str()?),
        Value::Object(m) if m.contains_key("Fn::Sub") => {
            let text = m["Fn::Sub"].as_str()?;
            let mut out = String::new();
            let mut rest = text;
            while let Some(start) = rest.find("${") {
                out.push_str(&rest[..start]);
                let end = rest[start..].find('}')? + start;
                out.push_str(&param(&rest[start + 2..end])?);
                rest = &rest[end + 1..];
            }
            out.push_str(rest);
            Some(out)
        }
        _ => None,
    }
}

fn no_overrides() -> BTreeMap<&'static str, String> {
    BTreeMap::new()
}

fn environment(t: &Value, f: Function) -> &serde_json::Map<String, Value> {
    props(t, f.logical_id())["Environment"]["Variables"]
        .as_object()
        .unwrap_or_else(|| panic!("{} has no environment", f.logical_id()))
}

/// Every (action, statement) the function's role allows.
fn allowed_actions(t: &Value, f: Function) -> Vec<(String, Value)> {
    let role = props(t, &format!("{}Role", f.logical_id()));
    let mut out = Vec::new();
    for policy in role["Policies"].as_array().into_iter().flatten() {
        for statement in policy["PolicyDocument"]["Statement"].as_array().into_iter().flatten() {
            if statement["Effect"] != "Allow" {
                continue;
            }
            let actions = match &statement["Action"] {
                Value::String(a) => vec![a.clone()],
                Value::Array(a) => a.iter().filter_map(Value::as_str).map(str::to_string).collect(),
                _ => vec![],
            };
            out.extend(actions.into_iter().map(|a| (a, statement.clone())));
        }
    }
    out
}

fn grants(allowed: &str, action: &str) -> bool {
    allowed == action || allowed == "*" || allowed.strip_suffix('*').is_some_and(|prefix| action.starts_with(prefix))
}

/// Secrets Manager secrets whose initial document has `key` (one secret per integration).
fn secrets_holding(t: &Value, key: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (id, r) in t["Resources"].as_object().into_iter().flatten() {
        if r["Type"] != "AWS::SecretsManager::Secret" {
            continue;
        }
        let p = &r["Properties"];
        let document = p["SecretString"]
            .as_str()
            .or_else(|| p["GenerateSecretString"]["SecretStringTemplate"].as_str())
            .and_then(|s| serde_json::from_str::<Value>(s).ok());
        if document.is_some_and(|d| d.get(key).is_some()) {
            out.push(id.clone());
        }
    }
    out
}

#[test]
fn every_task_runs_an_op_of_the_function_it_invokes() {
    let asl = asl();
    let mut used = BTreeSet::new();
    let mut problems = Vec::new();
    for (name, state) in states(&asl) {
        if state["Type"] != "Task" {
            continue;
        }
        let Some((function, op)) = task_target(&state) else {
            problems.push(format!("{name}: FunctionName is not a ${{<Function>Arn}} substitution of the op table"));
            continue;
        };
        match Op::parse(&op) {
            Some(op) if op.scheduled() => problems.push(format!("{name}: op {op} is scheduled, not a task")),
            Some(op) if function.ops().contains(&op) => {
                used.insert(op);
            }
            Some(op) => problems.push(format!("{name}: op {op} runs in {:?}, not {function:?}", op.function())),
            None => problems.push(format!("{name}: Payload.op {op:?} is not an op of the table")),
        }
    }
    for op in Op::ALL.into_iter().filter(|op| !op.scheduled()) {
        if !used.contains(&op) {
            problems.push(format!("op {op} ({:?}) is never invoked by the state machine", op.function()));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // The substitutions point each key at the function the table names.
    let Some(t) = expanded() else { return };

    // Each scheduled op is the input of an EventBridge rule that targets its own function.
    for op in Op::ALL.into_iter().filter(|op| op.scheduled()) {
        let scheduled = t["Resources"].as_object().into_iter().flatten().any(|(_, r)| {
            r["Type"] == "AWS::Events::Rule"
                && r["Properties"]["ScheduleExpression"].is_string()
                && r["Properties"]["Targets"].as_array().into_iter().flatten().any(|target| {
                    let input: Value =
                        serde_json::from_str(target["Input"].as_str().unwrap_or("null")).unwrap_or_default();
                    mentions(&target["Arn"], op.function().logical_id()) && input["op"] == op.as_str()
                })
        });
        assert!(scheduled, "op {op}: no Schedule event on {} sends {{\"op\": \"{op}\"}}", op.function().logical_id());
    }
    let substitutions = &props(t, "IncidentStateMachine")["DefinitionSubstitutions"];
    for f in Function::ALL.into_iter().filter(|f| !f.is_http()) {
        let value = &substitutions[f.substitution()];
        assert_eq!(value, &json!({"Fn::GetAtt": [f.logical_id(), "Arn"]}), "{}", f.substitution());
    }
}

#[test]
fn every_function_is_deployed_with_its_binary() {
    let Some(t) = expanded() else { return };
    for f in Function::ALL {
        let r = resource(t, f.logical_id());
        assert_eq!(r["Type"], "AWS::Lambda::Function", "{}", f.logical_id());
        assert_eq!(r["Metadata"]["BuildProperties"]["Binary"], f.binary(), "{}", f.logical_id());
        assert!(root().join("functions").join(f.binary()).join("Cargo.toml").exists(), "{}", f.binary());
        let is_http = props(t, f.logical_id()).to_string().contains("HttpApi")
            || t["Resources"].as_object().into_iter().flatten().any(|(_, r)| {
                r["Type"] == "AWS::Lambda::Permission"
                    && r["Properties"]["Principal"].as_str().is_some_and(|p| p.starts_with("apigateway"))
                    && mentions(&r["Properties"], f.logical_id())
            });
        assert_eq!(is_http, f.is_http(), "{}: behind the HTTP API?", f.logical_id());
    }
}

#[test]
fn environments_provide_what_the_needs_require() {
    let Some(t) = expanded() else { return };
    let mut problems = Vec::new();
    for f in Function::ALL {
        let env = environment(t, f);
        for var in f.env_vars() {
            if !env.contains_key(var) {
                problems.push(format!("{}: needs {var} (for {:?})", f.logical_id(), f.needs()));
            }
        }
        let keys = f.secret_keys();
        if keys.is_empty() {
            continue;
        }
        let ids: Vec<&Value> =
            ["SELFHEAL_SECRET_IDS", "SELFHEAL_SECRET_ID"].iter().filter_map(|k| env.get(*k)).collect();
        if ids.is_empty() {
            problems.push(format!("{}: reads {keys:?} but has no SELFHEAL_SECRET_IDS", f.logical_id()));
            continue;
        }
        for key in keys {
            let holders = secrets_holding(t, key);
            if !holders.is_empty() && !holders.iter().any(|h| ids.iter().any(|v| mentions(v, h))) {
                problems.push(format!("{}: needs {key}, held by {holders:?}, not in its secret ids", f.logical_id()));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn policies_grant_what_the_needs_require() {
    let Some(t) = expanded() else { return };
    let mut problems = Vec::new();
    for f in Function::ALL {
        let allowed = allowed_actions(t, f);
        for action in f.iam_actions() {
            let statements: Vec<&Value> =
                allowed.iter().filter(|(a, _)| grants(a, action)).map(|(_, statement)| statement).collect();
            if statements.is_empty() {
                problems.push(format!("{}: role lacks {action} (needs {:?})", f.logical_id(), f.needs()));
                continue;
            }
            if action == "secretsmanager:GetSecretValue" {
                for key in f.secret_keys() {
                    let holders = secrets_holding(t, key);
                    let granted = holders.iter().any(|h| statements.iter().any(|s| mentions(&s["Resource"], h)));
                    if !holders.is_empty() && !granted {
                        problems.push(format!("{}: may not read {key} (in {holders:?})", f.logical_id()));
                    }
                }
            }
            if action.starts_with("states:") {
                let scoped = statements.iter().any(|s| {
                    mentions(&s["Resource"], "IncidentStateMachine")
                        || resolve(t, &s["Resource"], &no_overrides()).is_some_and(|r| r == state_machine_arn(t))
                });
                if !scoped {
                    problems.push(format!("{}: {action} is not granted on the incident state machine", f.logical_id()));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn state_machine_arn(t: &Value) -> String {
    let name = resolve(t, &props(t, "IncidentStateMachine")["StateMachineName"], &no_overrides())
        .expect("the state machine has an explicit name");
    format!("arn:aws:states:us-east-1:123456789012:stateMachine:{name}")
}

#[test]
fn functions_the_state_machine_invokes_reach_it_without_a_cycle() {
    let Some(t) = expanded() else { return };
    let arn = state_machine_arn(t);
    for f in Function::ALL {
        let needs_arn = f.needs_capability(Capability::StateMachine) || f.needs_capability(Capability::StartExecution);
        let env = environment(t, f);
        if needs_arn {
            let value = env.get("SELFHEAL_STATE_MACHINE_ARN").expect("checked by environments_provide…");
            if !mentions(value, "IncidentStateMachine") {
                assert_eq!(resolve(t, value, &no_overrides()).as_deref(), Some(arn.as_str()), "{}", f.logical_id());
            }
        }
        // CloudFormation refuses a function that refers to the state machine invoking it.
        if !f.is_http() {
            assert!(!mentions(props(t, f.logical_id()), "IncidentStateMachine"), "{}", f.logical_id());
            assert!(
                !mentions(props(t, &format!("{}Role", f.logical_id())), "IncidentStateMachine"),
                "{}",
                f.logical_id()
            );
        }
    }
}

/// The environment a function sees with the template's parameter defaults.
fn settings_of(t: &Value, f: Function) -> Settings {
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in environment(t, f) {
        // Values that are resource references only need to be non-empty here.
        vars.insert(k.clone(), resolve(t, v, &no_overrides()).unwrap_or_else(|| format!("resolved:{k}")));
    }
    if f.needs_capability(Capability::Browser) {
        let checks: Vec<Value> = (0..SIZED_FOR_CHECKS)
            .map(|i| json!({"name": format!("check {i}"), "url": "https://service.example/health"}))
            .collect();
        vars.insert("SELFHEAL_CHECKS_JSON".into(), json!({ "sized-for": checks }).to_string());
    }
    let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Settings::from_sources(None, env_map(&pairs)).unwrap_or_else(|e| panic!("{}: {e}", f.logical_id()))
}

fn timeout_of(t: &Value, f: Function) -> u64 {
    props(t, f.logical_id())["Timeout"].as_u64().unwrap_or_else(|| panic!("{} has no Timeout", f.logical_id()))
}

#[test]
fn timeouts_hold_the_worst_case_retry_budgets() {
    let Some(t) = expanded() else { return };
    let mut problems = Vec::new();
    println!("| function | worst path | budget | limit | Timeout |");
    println!("|---|---|---|---|---|");
    for f in Function::ALL {
        let b = budget::worst_case(f, &settings_of(t, f));
        let timeout = timeout_of(t, f);
        let limit = budget::limit_secs(f);
        println!("| {} | {} | {} s | {limit} s | {timeout} s |", f.binary(), b.path, b.secs());
        let known = OVER_LIMIT.iter().find(|(g, _)| *g == f);
        match (b.fits(), known) {
            (true, None) if timeout < b.secs() => problems.push(format!(
                "{}: Timeout {timeout} s < worst case {} s ({})",
                f.logical_id(),
                b.secs(),
                b.path
            )),
            (true, None) if timeout > limit => {
                problems.push(format!("{}: Timeout {timeout} s > {limit} s", f.logical_id()))
            }
            (true, None) => {}
            (true, Some(_)) => problems.push(format!("{:?} fits now ({} s): remove it from OVER_LIMIT", f, b.secs())),
            (false, None) => problems.push(format!(
                "{}: worst case {} s ({}) exceeds the {limit} s limit; fix the code or list it in OVER_LIMIT",
                f.logical_id(),
                b.secs(),
                b.path
            )),
            (false, Some((_, why))) => {
                println!("  over the limit: {why}");
                if timeout != limit {
                    problems
                        .push(format!("{}: over budget, so its Timeout must be the {limit} s limit", f.logical_id()));
                }
            }
        }
    }
    // API Gateway must wait as long as the HTTP functions may run.
    for (id, r) in t["Resources"].as_object().into_iter().flatten() {
        if r["Type"] != "AWS::ApiGatewayV2::Api" {
            continue;
        }
        for (path, methods) in r["Properties"]["Body"]["paths"].as_object().into_iter().flatten() {
            for (_, op) in methods.as_object().into_iter().flatten() {
                let integration = &op["x-amazon-apigateway-integration"];
                let Some(f) = Function::ALL.into_iter().find(|f| mentions(&integration["uri"], f.logical_id())) else {
                    continue;
                };
                let waits = integration["timeoutInMillis"].as_u64().unwrap_or(30_000);
                if waits < timeout_of(t, f) * 1000 {
                    problems.push(format!(
                        "{id} {path}: waits {waits} ms for {} ({} s)",
                        f.logical_id(),
                        timeout_of(t, f)
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Seconds a `Retry` list may wait between attempts, and the attempts it allows in all.
fn retry_waits(state: &Value) -> (f64, u64) {
    let mut wait = 0.0;
    let mut attempts = 1;
    for r in state["Retry"].as_array().into_iter().flatten() {
        let max = r["MaxAttempts"].as_u64().unwrap_or(3);
        let interval = r["IntervalSeconds"].as_f64().unwrap_or(1.0);
        let rate = r["BackoffRate"].as_f64().unwrap_or(2.0);
        let cap = r["MaxDelaySeconds"].as_f64().unwrap_or(f64::INFINITY);
        for k in 0..max {
            wait += (interval * rate.powi(k as i32)).min(cap);
        }
        attempts += max;
    }
    (wait, attempts)
}

/// States on a cycle of the state graph.
fn looping_states(asl: &Value) -> BTreeSet<String> {
    let all = states(asl);
    let next: BTreeMap<String, Vec<String>> = all
        .iter()
        .map(|(name, s)| {
            let mut n: Vec<String> = Vec::new();
            n.extend(s["Next"].as_str().map(str::to_string));
            n.extend(s["Default"].as_str().map(str::to_string));
            for key in ["Choices", "Catch"] {
                n.extend(
                    s[key].as_array().into_iter().flatten().filter_map(|c| c["Next"].as_str().map(str::to_string)),
                );
            }
            (name.clone(), n)
        })
        .collect();
    let reaches = |from: &str, to: &str| {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<String> = next.get(from).cloned().unwrap_or_default();
        while let Some(s) = stack.pop() {
            if s == to {
                return true;
            }
            if seen.insert(s.clone()) {
                stack.extend(next.get(&s).cloned().unwrap_or_default());
            }
        }
        false
    };
    all.iter().map(|(n, _)| n.clone()).filter(|n| reaches(n, n)).collect()
}

/// The longest an execution can run with the given parameter values: every state at most once,
/// except those on the polling loop (at most `WorkspaceMaxPolls` rounds), each task with all its
/// retries at their longest.
fn longest_run_secs(t: &Value, asl: &Value, parameters: &BTreeMap<&str, String>) -> f64 {
    let number = |name: &str| -> f64 {
        resolve(t, &json!({"Ref": name}), parameters)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("parameter {name} has no numeric value"))
    };
    let config_path = |path: &str| -> f64 {
        match path {
            "$.config.hypothesis_timeout_secs" => number("HypothesisTimeoutSeconds"),
            "$.config.approval_timeout_secs" => number("ApprovalTimeoutSeconds"),
            "$.config.stability_window_secs" => number("StabilityWindowSeconds"),
            "$.config.poll_interval_secs" => number("WorkspacePollSeconds"),
            other => panic!("no parameter behind {other}"),
        }
    };
    let loops = looping_states(asl);
    for (name, s) in states(asl) {
        if s["Type"] == "Choice" && s.to_string().contains("$.config.max_polls") {
            assert!(loops.contains(&name), "{name} bounds a loop it is not on");
        }
    }
    assert!(
        states(asl).iter().any(|(n, s)| loops.contains(n) && s.to_string().contains("$.config.max_polls")),
        "a loop without the max_polls bound: {loops:?}"
    );
    let rounds = number("WorkspaceMaxPolls");
    let mut total = 0.0;
    for (name, s) in states(asl) {
        let secs = match s["Type"].as_str() {
            Some("Wait") => {
                s["Seconds"].as_f64().unwrap_or_else(|| config_path(s["SecondsPath"].as_str().unwrap_or("")))
            }
            Some("Task") => {
                let (wait, attempts) = retry_waits(&s);
                let function_timeout =
                    task_target(&s).map(|(f, _)| timeout_of(t, f) as f64).unwrap_or(LAMBDA_MAX_SECS as f64);
                match (s["TimeoutSeconds"].as_f64(), s["TimeoutSecondsPath"].as_str()) {
                    // A failed invocation ends its attempt; the last one waits for the callback.
                    (_, Some(path)) => config_path(path) + (attempts - 1) as f64 * function_timeout + wait,
                    (Some(timeout), None) => attempts as f64 * timeout.min(function_timeout) + wait,
                    (None, None) => attempts as f64 * function_timeout + wait,
                }
            }
            _ => 0.0,
        };
        total += if loops.contains(&name) { secs * rounds } else { secs };
    }
    total
}

#[test]
fn the_longest_run_fits_the_state_machine_timeout() {
    let Some(t) = expanded() else { return };
    let asl = asl();
    let limit = asl["TimeoutSeconds"].as_f64().expect("the state machine has a TimeoutSeconds");
    // Every parameter the run time depends on must be capped, at values that fit together.
    let mut at_max: BTreeMap<&str, String> = BTreeMap::new();
    for name in [
        "HypothesisTimeoutSeconds",
        "ApprovalTimeoutSeconds",
        "StabilityWindowSeconds",
        "WorkspacePollSeconds",
        "WorkspaceMaxPolls",
    ] {
        let max = t
            .pointer(&format!("/Parameters/{name}/MaxValue"))
            .unwrap_or_else(|| panic!("parameter {name} has no MaxValue"));
        at_max.insert(name, resolve(t, max, &no_overrides()).expect("a number"));
    }
    let longest = longest_run_secs(t, &asl, &at_max);
    let defaults = longest_run_secs(t, &asl, &no_overrides());
    println!(
        "longest run: {longest:.0} s at the parameters' maxima ({defaults:.0} s at their defaults); state machine TimeoutSeconds {limit:.0} s"
    );
    assert!(longest <= limit, "at the parameters' maxima a run may take {longest:.0} s > TimeoutSeconds {limit:.0}");
}

#[test]
fn every_function_logs_to_its_own_retained_group() {
    let Some(t) = expanded() else { return };
    let retention = t.pointer("/Parameters/LogRetentionDays").expect("a LogRetentionDays parameter");
    assert_eq!(retention["Default"].to_string().trim_matches('"'), "30");
    let mut groups = BTreeSet::new();
    for f in Function::ALL {
        let p = props(t, f.logical_id());
        let group = &p["LoggingConfig"]["LogGroup"];
        let id =
            group["Ref"].as_str().unwrap_or_else(|| panic!("{}: LoggingConfig.LogGroup is not a Ref", f.logical_id()));
        assert!(groups.insert(id.to_string()), "{id} is shared");
        let g = resource(t, id);
        assert_eq!(g["Type"], "AWS::Logs::LogGroup", "{id}");
        assert_eq!(g["Properties"]["RetentionInDays"], json!({"Ref": "LogRetentionDays"}), "{id}");
        let function_name = resolve(t, &p["FunctionName"], &no_overrides()).expect("an explicit FunctionName");
        let group_name = resolve(t, &g["Properties"]["LogGroupName"], &no_overrides()).expect("a LogGroupName");
        assert_eq!(group_name, format!("/aws/lambda/{function_name}"), "{id}");
        // The JSON format and levels still come from Globals.
        assert_eq!(p["LoggingConfig"]["LogFormat"], "JSON", "{}", f.logical_id());
    }
    // No log group is kept forever.
    for (id, r) in t["Resources"].as_object().into_iter().flatten() {
        if r["Type"] == "AWS::Logs::LogGroup" {
            assert!(r["Properties"].get("RetentionInDays").is_some(), "{id} has no RetentionInDays");
        }
    }
}

/// The state machine gives up on a task at its TimeoutSeconds; a Lambda Timeout above it only
/// lets the function keep working after the run has moved on (to Escalate).
#[test]
fn task_timeouts_cover_the_function_timeouts() {
    let Some(t) = expanded() else { return };
    let mut problems = Vec::new();
    for (name, s) in states(&asl()) {
        let (Some((f, _)), Some(task)) = (task_target(&s), s["TimeoutSeconds"].as_u64()) else { continue };
        if task < timeout_of(t, f) {
            problems.push(format!("{name}: TimeoutSeconds {task} < {} Timeout {}", f.logical_id(), timeout_of(t, f)));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A Lambda timeout, crash or failed init reaches the state machine as `Lambda.Unknown`; every
/// task that invokes a function retries it like the other transient Lambda errors (the stages
/// are idempotent per incident: provisioning adopts its workspace by name, approvals by plan).
#[test]
fn every_lambda_task_retries_unhandled_function_errors() {
    let mut missing = Vec::new();
    for (name, s) in states(&asl()) {
        if task_target(&s).is_none() {
            continue;
        }
        let retried = s["Retry"].as_array().into_iter().flatten().any(|r| {
            r["ErrorEquals"].as_array().into_iter().flatten().any(|e| e == "Lambda.Unknown")
                && r["MaxAttempts"].as_u64().unwrap_or(3) > 0
        });
        if !retried {
            missing.push(name);
        }
    }
    assert!(missing.is_empty(), "tasks that do not retry Lambda.Unknown: {missing:?}");
}

/// Every alarm on selfheal's own metrics watches a metric the code publishes, and every metric
/// in `telemetry::METRICS` is emitted by library code (a renamed metric would silence an alarm).
#[test]
fn alarms_watch_metrics_the_code_publishes() {
    let Some(t) = expanded() else { return };
    let known: Vec<&str> = selfheal::telemetry::METRICS.iter().map(|(m, _)| *m).collect();
    let mut watched = Vec::new();
    for (id, r) in t["Resources"].as_object().unwrap() {
        if r["Type"] != "AWS::CloudWatch::Alarm" {
            continue;
        }
        let p = &r["Properties"];
        let mut metrics: Vec<(&Value, &Value)> = vec![(&p["Namespace"], &p["MetricName"])];
        for m in p["Metrics"].as_array().into_iter().flatten() {
            let metric = &m["MetricStat"]["Metric"];
            metrics.push((&metric["Namespace"], &metric["MetricName"]));
        }
        for (ns, name) in metrics {
            if ns == "selfheal" {
                let name = name.as_str().unwrap();
                assert!(known.contains(&name), "{id} watches {name}, which selfheal does not publish");
                watched.push(name.to_string());
            }
        }
    }
    for required in ["Escalated", "SignatureRejected", "WebhookSecretMissing", "FixFailed", "BudgetExhausted"] {
        assert!(watched.iter().any(|w| w == required), "no alarm watches {required}");
    }
    let mut source = String::new();
    for dir in ["shared/src/stages", "shared/src"] {
        for entry in std::fs::read_dir(root().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("telemetry.rs") {
                source.push_str(&std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    for m in known {
        assert!(source.contains(&format!("\"{m}\"")), "{m} is listed in telemetry::METRICS but never emitted");
    }
}
