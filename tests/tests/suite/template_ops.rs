//! template.yaml and statemachine/incident.asl.json against the op table
//! (`selfheal::stages::ops`) and the retry budgets (`selfheal::budget`): every task calls a
//! function that runs its op, every function gets the settings, secrets and IAM actions its
//! work needs, every Timeout holds the function's worst case, the longest run fits the state
//! machine's timeout, and every log group is retained. The checks run once per model provider
//! (`PlannerProvider`): the template as CloudFormation would create it with each one's parameters.
//! With Bedrock, the planner and cleric functions may invoke the chosen model only and read no
//! Anthropic secret (`bedrock_is_granted_on_the_chosen_model_only`).
//!
//! The template is read as the real SAM translator expands it (`scripts/sam_expand.py`, in the
//! `.venv` that `scripts/setup-test-tools.sh` creates); without that venv the tests say so and
//! pass.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::{Value, json};

use selfheal::budget::{self, LAMBDA_MAX_SECS};
use selfheal::config::{ModelProvider, Settings, env_map};
use selfheal::stages::{Capability, Function, Op};

/// Functions whose worst case no allowed Timeout can hold (with that model provider only, or
/// with any); each must run at the platform's limit. Listed here so the gap stays visible; the
/// test fails when one starts to fit.
const OVER_LIMIT: &[(Function, Option<ModelProvider>, &str)] = &[
    (
        Function::Planner,
        Some(ModelProvider::Anthropic),
        "Anthropic's read_json re-sends a garbled 2xx with a fresh send budget: 3 × (3 × 90 s + 2 × 20 s) + 16 s",
    ),
    (
        Function::Intake,
        None,
        "API Gateway answers after 29 s; a trigger's dedupe, re-fire check, store writes and StartExecution are ~30 AWS calls at a 10 s operation timeout",
    ),
    (
        Function::SlackCallback,
        None,
        "API Gateway answers after 29 s; the click is acknowledged first, but the decision and the response_url reply after it (up to 100 s) share the invocation",
    ),
];

/// A Claude model Bedrock serves on demand, by its own id.
const FOUNDATION_MODEL: &str = "anthropic.claude-3-haiku-20240307-v1:0";
/// A cross-Region inference profile (a global one: its model ARNs have no Region).
const INFERENCE_PROFILE: &str = "global.anthropic.claude-sonnet-4-5-20250929-v1:0";

/// One way to deploy the template: a model provider and the parameters that choose it.
struct Deployment {
    label: &'static str,
    provider: ModelProvider,
    parameters: BTreeMap<&'static str, String>,
}

fn deployments() -> Vec<Deployment> {
    let bedrock = |model: &str| {
        BTreeMap::from([("PlannerProvider", "bedrock".to_string()), ("BedrockModelId", model.to_string())])
    };
    vec![
        Deployment { label: "defaults (Anthropic)", provider: ModelProvider::Anthropic, parameters: BTreeMap::new() },
        Deployment {
            label: "Bedrock, foundation model",
            provider: ModelProvider::Bedrock,
            parameters: bedrock(FOUNDATION_MODEL),
        },
        Deployment {
            label: "Bedrock, inference profile",
            provider: ModelProvider::Bedrock,
            parameters: bedrock(INFERENCE_PROFILE),
        },
    ]
}

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

/// A parameter's value (`overrides`, else its default) or a pseudo parameter's.
fn parameter(t: &Value, name: &str, overrides: &BTreeMap<&str, String>) -> Option<String> {
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
}

/// Evaluate the intrinsic functions of `value` that do not depend on created resources (Ref to
/// parameters, Fn::Sub, Select, Split, Join, If and the condition functions); `None` for what
/// only CloudFormation knows (a resource's Ref or attributes).
fn eval(t: &Value, value: &Value, overrides: &BTreeMap<&str, String>) -> Option<Value> {
    let text = |v: &Value| match eval(t, v, overrides)? {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let Value::Object(m) = value else { return Some(value.clone()) };
    let (function, args) = m.iter().next().filter(|_| m.len() == 1)?;
    let list = args.as_array();
    let arg = |i: usize| list.and_then(|a| a.get(i)).unwrap_or(&Value::Null);
    Some(match function.as_str() {
        "Ref" => Value::String(parameter(t, args.as_str()?, overrides)?),
        "Fn::Sub" => {
            let (template, vars) = match args {
                Value::String(s) => (s.as_str(), None),
                _ => (arg(0).as_str()?, arg(1).as_object()),
            };
            let mut out = String::new();
            let mut rest = template;
            while let Some(start) = rest.find("${") {
                out.push_str(&rest[..start]);
                let end = rest[start..].find('}')? + start;
                let name = &rest[start + 2..end];
                match vars.and_then(|v| v.get(name)) {
                    Some(v) => out.push_str(&text(v)?),
                    None => out.push_str(&parameter(t, name, overrides)?),
                }
                rest = &rest[end + 1..];
            }
            out.push_str(rest);
            Value::String(out)
        }
        "Fn::Select" => {
            let index: usize = text(arg(0))?.parse().ok()?;
            eval(t, arg(1), overrides)?.as_array()?.get(index)?.clone()
        }
        "Fn::Split" => {
            let on = arg(0).as_str()?;
            Value::Array(text(arg(1))?.split(on).map(|p| Value::String(p.to_string())).collect())
        }
        "Fn::Join" => {
            let parts = arg(1).as_array()?.iter().map(text).collect::<Option<Vec<_>>>()?;
            Value::String(parts.join(arg(0).as_str()?))
        }
        "Fn::If" => {
            let chosen = if condition(t, arg(0).as_str()?, overrides) { arg(1) } else { arg(2) };
            eval(t, chosen, overrides)?
        }
        "Fn::Equals" => Value::Bool(eval(t, arg(0), overrides)? == eval(t, arg(1), overrides)?),
        "Fn::Not" => Value::Bool(!eval(t, arg(0), overrides)?.as_bool()?),
        "Fn::And" | "Fn::Or" => {
            let values = list?.iter().map(|c| eval(t, c, overrides)?.as_bool()).collect::<Option<Vec<bool>>>()?;
            Value::Bool(if function == "Fn::And" { values.iter().all(|b| *b) } else { values.iter().any(|b| *b) })
        }
        "Condition" => Value::Bool(condition(t, args.as_str()?, overrides)),
        _ => return None,
    })
}

/// A template condition's value with these parameters.
fn condition(t: &Value, name: &str, overrides: &BTreeMap<&str, String>) -> bool {
    let definition = t.pointer(&format!("/Conditions/{name}")).unwrap_or_else(|| panic!("no condition {name}"));
    eval(t, definition, overrides)
        .and_then(|v| v.as_bool())
        .unwrap_or_else(|| panic!("condition {name} does not evaluate"))
}

/// A simple value (a parameter, a Sub of parameters…) as text, or `None`.
fn resolve(t: &Value, value: &Value, overrides: &BTreeMap<&str, String>) -> Option<String> {
    match eval(t, value, overrides)? {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The template as CloudFormation creates it with these parameters: each `Fn::If` replaced by
/// the branch its condition picks, each `AWS::NoValue` removed with its key or list item.
fn as_deployed(t: &Value, overrides: &BTreeMap<&str, String>) -> Value {
    fn walk(t: &Value, v: &Value, overrides: &BTreeMap<&str, String>) -> Option<Value> {
        match v {
            Value::Object(m) if m.len() == 1 && m.get("Ref").and_then(Value::as_str) == Some("AWS::NoValue") => None,
            Value::Object(m) if m.len() == 1 && m.contains_key("Fn::If") => {
                let a = &m["Fn::If"];
                let name = a[0].as_str().expect("Fn::If names a condition");
                walk(t, if condition(t, name, overrides) { &a[1] } else { &a[2] }, overrides)
            }
            Value::Object(m) => {
                Some(Value::Object(m.iter().filter_map(|(k, v)| Some((k.clone(), walk(t, v, overrides)?))).collect()))
            }
            Value::Array(a) => Some(Value::Array(a.iter().filter_map(|v| walk(t, v, overrides)).collect())),
            other => Some(other.clone()),
        }
    }
    walk(t, t, overrides).expect("the template itself is not AWS::NoValue")
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
    let Some(raw) = expanded() else { return };
    let mut problems = Vec::new();
    for d in deployments() {
        let t = &as_deployed(raw, &d.parameters);
        problems.extend(environment_problems(t, d.provider).into_iter().map(|p| format!("{}: {p}", d.label)));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn environment_problems(t: &Value, provider: ModelProvider) -> Vec<String> {
    let mut problems = Vec::new();
    for f in Function::ALL {
        let env = environment(t, f);
        for var in f.env_vars(provider) {
            if !env.contains_key(var) {
                problems.push(format!("{}: needs {var} (for {:?})", f.logical_id(), f.needs(provider)));
            }
        }
        let keys = f.secret_keys(provider);
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
    problems
}

#[test]
fn policies_grant_what_the_needs_require() {
    let Some(raw) = expanded() else { return };
    let mut problems = Vec::new();
    for d in deployments() {
        let t = &as_deployed(raw, &d.parameters);
        problems.extend(policy_problems(t, d.provider).into_iter().map(|p| format!("{}: {p}", d.label)));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn policy_problems(t: &Value, provider: ModelProvider) -> Vec<String> {
    let mut problems = Vec::new();
    for f in Function::ALL {
        let allowed = allowed_actions(t, f);
        for action in f.iam_actions(provider) {
            let statements: Vec<&Value> =
                allowed.iter().filter(|(a, _)| grants(a, action)).map(|(_, statement)| statement).collect();
            if statements.is_empty() {
                problems.push(format!("{}: role lacks {action} (needs {:?})", f.logical_id(), f.needs(provider)));
                continue;
            }
            if action == "secretsmanager:GetSecretValue" {
                for key in f.secret_keys(provider) {
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
    problems
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
        let provider = ModelProvider::default();
        let needs_arn = f.needs_capability(Capability::StateMachine, provider)
            || f.needs_capability(Capability::StartExecution, provider);
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

/// The environment a function sees with the parameters `d` sets (the defaults for the rest).
fn settings_of(t: &Value, f: Function, d: &Deployment) -> Settings {
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in environment(t, f) {
        // Values that are resource references only need to be non-empty here.
        vars.insert(k.clone(), resolve(t, v, &d.parameters).unwrap_or_else(|| format!("resolved:{k}")));
    }
    if f.needs_capability(Capability::Browser, d.provider) {
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
    let Some(raw) = expanded() else { return };
    let mut problems = Vec::new();
    for d in deployments() {
        let t = &as_deployed(raw, &d.parameters);
        println!("{}:", d.label);
        problems.extend(timeout_problems(t, &d).into_iter().map(|p| format!("{}: {p}", d.label)));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn timeout_problems(t: &Value, d: &Deployment) -> Vec<String> {
    let mut problems = Vec::new();
    println!("| function | worst path | budget | limit | Timeout |");
    println!("|---|---|---|---|---|");
    for f in Function::ALL {
        let settings = settings_of(t, f, d);
        // A function whose work depends on the provider is told which one the template chose.
        if f.needs(d.provider) != f.needs(ModelProvider::default()) {
            assert_eq!(settings.planner.provider, d.provider, "{}: SELFHEAL_PLANNER_PROVIDER", f.logical_id());
        }
        let b = budget::worst_case(f, &settings);
        let timeout = timeout_of(t, f);
        let limit = budget::limit_secs(f);
        println!("| {} | {} | {} s | {limit} s | {timeout} s |", f.binary(), b.path, b.secs());
        let known = OVER_LIMIT
            .iter()
            .find(|(g, provider, _)| *g == f && provider.is_none_or(|p| p == d.provider))
            .map(|(g, _, why)| (g, why));
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
    problems
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

/// Whether an IAM resource pattern (`*` any run of characters, `?` one) matches `arn`.
fn arn_matches(pattern: &str, arn: &str) -> bool {
    fn go(p: &[u8], a: &[u8]) -> bool {
        match (p.first(), a.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], a) || (!a.is_empty() && go(p, &a[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &a[1..]),
            (Some(x), Some(y)) if x == y => go(&p[1..], &a[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), arn.as_bytes())
}

/// The Bedrock grant of `f`'s role: each `bedrock:` statement's resources (resolved) and its
/// condition on the inference profile, if any.
fn bedrock_grants(t: &Value, f: Function, d: &Deployment) -> Vec<(Vec<String>, Option<String>)> {
    let mut out = Vec::new();
    for (action, statement) in allowed_actions(t, f) {
        if !action.starts_with("bedrock:") {
            continue;
        }
        assert_eq!(action, "bedrock:InvokeModel", "{}: only InvokeModel is granted", f.logical_id());
        let resources = match &statement["Resource"] {
            Value::Array(a) => a.clone(),
            one => vec![one.clone()],
        };
        let resources = resources
            .iter()
            .map(|r| {
                resolve(t, r, &d.parameters).unwrap_or_else(|| panic!("{}: unresolved resource {r}", f.logical_id()))
            })
            .collect();
        let condition = statement.pointer("/Condition/ArnEquals/bedrock:InferenceProfileArn").map(|c| {
            resolve(t, c, &d.parameters).unwrap_or_else(|| panic!("{}: unresolved condition {c}", f.logical_id()))
        });
        out.push((resources, condition));
    }
    out
}

/// With `PlannerProvider=bedrock` the two functions that call the model may invoke the chosen
/// model only (a foundation model by its ARN; an inference profile by its ARN, and the model it
/// routes to only through that profile), no other function may invoke any, and nothing reads or
/// may read the Anthropic secret. With Anthropic, nothing is granted on Bedrock.
#[test]
fn bedrock_is_granted_on_the_chosen_model_only() {
    let Some(raw) = expanded() else { return };
    let region_arn = |kind: &str, id: &str| format!("arn:aws:bedrock:us-east-1:123456789012:{kind}/{id}");
    let model_arn = |region: &str, id: &str| format!("arn:aws:bedrock:{region}::foundation-model/{id}");
    let other = "anthropic.claude-3-5-sonnet-20240620-v1:0";
    for d in deployments() {
        let t = &as_deployed(raw, &d.parameters);
        for f in Function::ALL {
            let grants = bedrock_grants(t, f, &d);
            let calls_model = matches!(f, Function::Planner | Function::Cleric);
            let reads_anthropic = environment(t, f).values().any(|v| mentions(v, "AnthropicSecret"))
                || allowed_actions(t, f).iter().any(|(_, s)| mentions(&s["Resource"], "AnthropicSecret"));
            match d.provider {
                ModelProvider::Anthropic => {
                    assert!(grants.is_empty(), "{}: {}: {grants:?}", d.label, f.logical_id());
                    assert_eq!(reads_anthropic, calls_model, "{}: {}", d.label, f.logical_id());
                    continue;
                }
                ModelProvider::Bedrock => {
                    assert!(!reads_anthropic, "{}: {} reads the Anthropic secret", d.label, f.logical_id());
                    if !calls_model {
                        assert!(grants.is_empty(), "{}: {}: {grants:?}", d.label, f.logical_id());
                        continue;
                    }
                }
            }
            let model_id = &d.parameters["BedrockModelId"];
            // Every ARN the role's statements allow, with the profile a call must come through.
            let allows = |arn: &str, through: Option<&str>| {
                grants.iter().any(|(resources, condition)| {
                    resources.iter().any(|r| arn_matches(r, arn))
                        && condition.as_deref().is_none_or(|c| Some(c) == through)
                })
            };
            if model_id == FOUNDATION_MODEL {
                assert_eq!(
                    grants,
                    vec![(vec![model_arn("us-east-1", FOUNDATION_MODEL)], None)],
                    "{}: {}",
                    d.label,
                    f.logical_id()
                );
            } else {
                let profile = region_arn("inference-profile", INFERENCE_PROFILE);
                let model = INFERENCE_PROFILE.trim_start_matches("global.");
                assert!(allows(&profile, None), "{}: {} may not invoke {profile}", d.label, f.logical_id());
                // The profile routes to its model in any Region; a global one's ARN has none.
                for region in ["us-east-1", "eu-west-1", ""] {
                    let arn = model_arn(region, model);
                    assert!(allows(&arn, Some(&profile)), "{}: {}: {arn} through the profile", d.label, f.logical_id());
                    assert!(!allows(&arn, None), "{}: {}: {arn} without the profile", d.label, f.logical_id());
                }
                assert!(!allows(&region_arn("inference-profile", "us.anthropic.claude-opus-4-1-20250805-v1:0"), None));
            }
            // Nothing else: another model, another profile, another account's.
            for arn in [
                model_arn("us-east-1", other),
                region_arn("inference-profile", &format!("us.{other}")),
                region_arn("application-inference-profile", "abc123"),
                format!("arn:aws:bedrock:us-east-1:999999999999:inference-profile/{model_id}"),
            ] {
                assert!(!allows(&arn, None), "{}: {} may invoke {arn}", d.label, f.logical_id());
            }
        }
    }
}

#[test]
fn the_provider_conditions_read_the_model_id() {
    let Some(t) = expanded() else { return };
    let with = |provider: &str, model: &str| {
        BTreeMap::from([("PlannerProvider", provider.to_string()), ("BedrockModelId", model.to_string())])
    };
    assert!(!condition(t, "UseBedrock", &no_overrides()), "Anthropic is the default");
    for (model, profile) in [
        ("anthropic.claude-3-haiku-20240307-v1:0", false),
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", true),
        ("eu.anthropic.claude-sonnet-4-5-20250929-v1:0", true),
        ("us-gov.anthropic.claude-3-5-sonnet-20240620-v1:0", true),
        ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", true),
    ] {
        let p = with("bedrock", model);
        assert!(condition(t, "UseBedrock", &p));
        assert_eq!(condition(t, "BedrockModelIsInferenceProfile", &p), profile, "{model}");
        assert_eq!(condition(t, "UseBedrockInferenceProfile", &p), profile, "{model}");
        assert!(!condition(t, "UseBedrockInferenceProfile", &with("anthropic", model)), "{model}");
    }
    // The template's default model is the settings' default.
    let default = t.pointer("/Parameters/BedrockModelId/Default").and_then(Value::as_str);
    assert_eq!(default, Some(selfheal::config::BedrockSettings::default().model_id.as_str()));
}
