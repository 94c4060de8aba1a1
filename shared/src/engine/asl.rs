//! Amazon States Language: the definition model for the subset selfheal uses, with load-time
//! validation (unknown state types, dangling `Next`, unsupported fields are refused up front).

use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::jsonata::{Template, parse_assign};
use super::path::{PathError, RefPath, read_path};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid state machine definition: {0}")]
pub struct DefinitionError(pub String);

#[derive(Debug, Clone, PartialEq)]
pub struct Retrier {
    pub error_equals: Vec<String>,
    pub interval_seconds: f64,
    pub max_attempts: u32,
    pub backoff_rate: f64,
    pub max_delay_seconds: Option<f64>,
    pub full_jitter: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Catcher {
    pub error_equals: Vec<String>,
    pub result_path: Option<Value>,
    pub next: String,
    /// JSONPath: the catcher's `Assign` (a payload template over the Error Output).
    pub assign: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Common {
    pub input_path: Option<Value>,
    pub output_path: Option<Value>,
    pub next: Option<String>,
    pub end: bool,
    /// JSONPath: the state's `Assign`, a payload template whose top-level fields name the
    /// variables (JSONata states keep theirs in [`JsonataFields`]).
    pub assign: Option<Value>,
    /// JSONPath Choice: each top-level rule's own `Assign`, in order.
    pub rule_assign: Vec<Option<Value>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TaskState {
    pub resource: String,
    pub parameters: Option<Value>,
    pub result_selector: Option<Value>,
    pub result_path: Option<Value>,
    pub timeout_seconds: Option<u64>,
    pub timeout_seconds_path: Option<String>,
    pub heartbeat_seconds: Option<u64>,
    pub heartbeat_seconds_path: Option<String>,
    pub retry: Vec<Retrier>,
    pub catch: Vec<Catcher>,
}

impl TaskState {
    /// `.waitForTaskToken` resources pause until a callback arrives.
    pub fn is_callback(&self) -> bool {
        self.resource.ends_with(".waitForTaskToken")
    }
}

/// The fields a failing state consults: Task, Map and Parallel have them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ErrorHandling {
    pub retry: Vec<Retrier>,
    pub catch: Vec<Catcher>,
}

/// An Inline `Map` state: runs `processor` once per item of the array `items_path` selects.
#[derive(Debug, Clone, PartialEq)]
pub struct MapState {
    /// A reference path into the effective input (`$` when absent).
    pub items_path: Option<String>,
    /// `ItemSelector` (or the deprecated `Parameters`): each iteration's input.
    pub item_selector: Option<Value>,
    pub processor: Arc<StateMachine>,
    /// `MaxConcurrency` (0 or absent: as many as the inline mode allows).
    pub max_concurrency: Option<u64>,
    pub max_concurrency_path: Option<String>,
    pub result_selector: Option<Value>,
    pub result_path: Option<Value>,
    pub handling: ErrorHandling,
}

/// A `Parallel` state: runs every branch on the same input; the output is their outputs, in
/// branch order.
#[derive(Debug, Clone, PartialEq)]
pub struct ParallelState {
    pub branches: Vec<Arc<StateMachine>>,
    pub parameters: Option<Value>,
    pub result_selector: Option<Value>,
    pub result_path: Option<Value>,
    pub handling: ErrorHandling,
}

#[derive(Debug, Clone, PartialEq)]
pub enum WaitFor {
    /// A JSONata `Seconds` or `Timestamp` expression (in the state's `JsonataFields::wait`).
    Expression,
    Seconds(u64),
    SecondsPath(String),
    Timestamp(DateTime<Utc>),
    TimestampPath(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Task(TaskState),
    Choice {
        choices: Vec<(ChoiceRule, String)>,
        default: Option<String>,
    },
    Wait(WaitFor),
    Pass {
        result: Option<Value>,
        parameters: Option<Value>,
        result_path: Option<Value>,
    },
    Succeed,
    Map(MapState),
    Parallel(ParallelState),
    /// `error_path` / `cause_path`: a reference path or an intrinsic function that yields a string.
    Fail {
        error: Option<String>,
        cause: Option<String>,
        error_path: Option<String>,
        cause_path: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct State {
    pub name: String,
    pub kind: Kind,
    pub common: Common,
    /// Set on a state whose query language is JSONata: its expressions, compiled.
    pub jsonata: Option<Box<JsonataFields>>,
    /// Whether anything in the state can read the Context object (`$$`, `$states.context`),
    /// or hands it on (Map, Parallel). Building it costs more than the rest of a Pass or Choice
    /// state, so a state that cannot read it runs without.
    pub reads_context: bool,
    /// JSONPath: whether a path in the state may read a workflow variable (`$name`); the
    /// variables are handed to its paths only then.
    pub reads_variables: bool,
}

/// A JSONata state's fields (the JSONPath-only fields are refused on such a state).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JsonataFields {
    /// Task and Parallel: what the task or the branches receive (default: the state input).
    pub arguments: Option<Template>,
    /// The state output (default: the result for Task, Map and Parallel, else the input).
    pub output: Option<Template>,
    pub assign: Vec<(String, Template)>,
    /// Map: the items (default: the state input).
    pub items: Option<Template>,
    /// Map: each iteration's input, with `$states.context.Map.Item`.
    pub item_selector: Option<Template>,
    /// Choice: one `Condition` per rule, in order.
    pub conditions: Vec<Template>,
    /// Choice: each rule's own `Output` and `Assign`, in order (used when that rule is chosen,
    /// instead of the state's).
    pub rule_exits: Vec<(Option<Template>, Assignments)>,
    /// Wait: `Seconds` (true) or `Timestamp` (false) as an expression.
    pub wait: Option<(bool, Template)>,
    /// Fail: `Error` and `Cause` as expressions.
    pub error: Option<Template>,
    pub cause: Option<Template>,
    /// Catch: each catcher's `Output` and `Assign`, in order.
    pub catch: Vec<(Option<Template>, Assignments)>,
    /// Task `TimeoutSeconds` / `HeartbeatSeconds` and Map `MaxConcurrency` given as
    /// expressions (a number is kept in the state's own field).
    pub timeout_seconds: Option<Template>,
    pub heartbeat_seconds: Option<Template>,
    pub max_concurrency: Option<Template>,
}

/// An `Assign` field: variable name and value template, in order.
pub type Assignments = Vec<(String, Template)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryLanguage {
    JsonPath,
    Jsonata,
}

impl QueryLanguage {
    fn of(obj: &serde_json::Map<String, Value>, default: Self, owner: &str) -> Result<Self, DefinitionError> {
        match obj.get("QueryLanguage") {
            None => Ok(default),
            Some(v) if v == "JSONata" => Ok(QueryLanguage::Jsonata),
            Some(v) if v == "JSONPath" => {
                // "If the top-level QueryLanguage is JSONata, ... states cannot use JSONPath."
                if default == QueryLanguage::Jsonata {
                    return Err(err(format!(
                        "{owner}: a JSONPath state cannot be used when the state machine uses JSONata"
                    )));
                }
                Ok(QueryLanguage::JsonPath)
            }
            Some(other) => Err(err(format!("{owner}: unknown QueryLanguage {other}"))),
        }
    }
}

impl State {
    /// The history events of entering and leaving this state (`PassStateEntered`, ...).
    fn entered_and_exited(&self) -> (&'static str, &'static str) {
        match self.kind {
            Kind::Task(_) => ("TaskStateEntered", "TaskStateExited"),
            Kind::Choice { .. } => ("ChoiceStateEntered", "ChoiceStateExited"),
            Kind::Wait(_) => ("WaitStateEntered", "WaitStateExited"),
            Kind::Pass { .. } => ("PassStateEntered", "PassStateExited"),
            Kind::Succeed => ("SucceedStateEntered", "SucceedStateExited"),
            Kind::Fail { .. } => ("FailStateEntered", "FailStateExited"),
            Kind::Map(_) => ("MapStateEntered", "MapStateExited"),
            Kind::Parallel(_) => ("ParallelStateEntered", "ParallelStateExited"),
        }
    }

    pub fn entered_event(&self) -> &'static str {
        self.entered_and_exited().0
    }

    pub fn exited_event(&self) -> &'static str {
        self.entered_and_exited().1
    }

    pub fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Task(_) => "Task",
            Kind::Choice { .. } => "Choice",
            Kind::Wait(_) => "Wait",
            Kind::Pass { .. } => "Pass",
            Kind::Succeed => "Succeed",
            Kind::Fail { .. } => "Fail",
            Kind::Map(_) => "Map",
            Kind::Parallel(_) => "Parallel",
        }
    }

    pub fn is_jsonata(&self) -> bool {
        self.jsonata.is_some()
    }

    /// Retry and Catch, for the states that have them.
    pub fn error_handling(&self) -> Option<(&[Retrier], &[Catcher])> {
        match &self.kind {
            Kind::Task(t) => Some((&t.retry, &t.catch)),
            Kind::Map(m) => Some((&m.handling.retry, &m.handling.catch)),
            Kind::Parallel(p) => Some((&p.handling.retry, &p.handling.catch)),
            _ => None,
        }
    }

    /// The states this one can move to (Next, Catch, Choice rules, Default).
    fn transitions(&self) -> Vec<&str> {
        let mut targets: Vec<&str> = self.common.next.iter().map(String::as_str).collect();
        if let Some((_, catch)) = self.error_handling() {
            targets.extend(catch.iter().map(|c| c.next.as_str()));
        }
        if let Kind::Choice { choices, default } = &self.kind {
            targets.extend(choices.iter().map(|(_, n)| n.as_str()));
            targets.extend(default.iter().map(String::as_str));
        }
        targets
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StateMachine {
    pub start_at: String,
    pub timeout_seconds: Option<u64>,
    pub states: BTreeMap<String, State>,
}

/// A comparison operator of a Choice rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Lt,
    Gt,
    Le,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Literal(Value),
    Path(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeTest {
    Null,
    Present,
    Numeric,
    String,
    Boolean,
    Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ChoiceRule {
    And(Vec<ChoiceRule>),
    Or(Vec<ChoiceRule>),
    Not(Box<ChoiceRule>),
    String {
        variable: String,
        cmp: Cmp,
        operand: Operand,
    },
    StringMatches {
        variable: String,
        pattern: String,
    },
    Numeric {
        variable: String,
        cmp: Cmp,
        operand: Operand,
    },
    Boolean {
        variable: String,
        operand: Operand,
    },
    Timestamp {
        variable: String,
        cmp: Cmp,
        operand: Operand,
    },
    Is {
        variable: String,
        test: TypeTest,
        expected: bool,
    },
    /// A JSONata `Condition` (index into the state's `JsonataFields::conditions`).
    Condition(usize),
}

fn err(msg: impl Into<String>) -> DefinitionError {
    DefinitionError(msg.into())
}

fn get_str(obj: &serde_json::Map<String, Value>, key: &str, state: &str) -> Result<Option<String>, DefinitionError> {
    match obj.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(err(format!("{state}: {key} must be a string"))),
    }
}

fn get_u64(obj: &serde_json::Map<String, Value>, key: &str, state: &str) -> Result<Option<u64>, DefinitionError> {
    match obj.get(key) {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| err(format!("{state}: {key} must be a non-negative integer"))),
    }
}

fn get_f64(obj: &serde_json::Map<String, Value>, key: &str, state: &str) -> Result<Option<f64>, DefinitionError> {
    match obj.get(key) {
        None => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or_else(|| err(format!("{state}: {key} must be a number"))),
    }
}

fn check_path(p: &str, state: &str) -> Result<(), DefinitionError> {
    RefPath::parse(p).map(|_| ()).map_err(|e| err(format!("{state}: {e}")))
}

fn path_or_null(
    obj: &serde_json::Map<String, Value>,
    key: &str,
    state: &str,
) -> Result<Option<Value>, DefinitionError> {
    match obj.get(key) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(Value::Null)),
        Some(Value::String(p)) => {
            // InputPath and OutputPath are Paths (JSONPath); ResultPath is a Reference Path.
            if key == "ResultPath" {
                check_path(p, state)?;
            } else {
                super::path::check_query_path(p).map_err(|e| err(format!("{state}: {key}: {e}")))?;
            }
            Ok(Some(Value::String(p.clone())))
        }
        Some(_) => Err(err(format!("{state}: {key} must be a path or null"))),
    }
}

fn allowed_fields(obj: &serde_json::Map<String, Value>, state: &str, allowed: &[&str]) -> Result<(), DefinitionError> {
    for k in obj.keys() {
        if !allowed.contains(&k.as_str()) && k != "Type" && k != "Comment" {
            return Err(err(format!("{state}: field {k} is not supported here")));
        }
    }
    Ok(())
}

fn error_list(v: Option<&Value>, state: &str) -> Result<Vec<String>, DefinitionError> {
    let list =
        v.and_then(Value::as_array).ok_or_else(|| err(format!("{state}: ErrorEquals must be a non-empty array")))?;
    let names: Vec<String> = list.iter().filter_map(|e| e.as_str().map(str::to_string)).collect();
    if names.is_empty() || names.len() != list.len() {
        return Err(err(format!("{state}: ErrorEquals must be a non-empty array of strings")));
    }
    if names.iter().any(|n| n == "States.ALL") && names.len() != 1 {
        return Err(err(format!("{state}: States.ALL must appear alone in ErrorEquals")));
    }
    Ok(names)
}

fn parse_retry(v: Option<&Value>, state: &str) -> Result<Vec<Retrier>, DefinitionError> {
    let Some(list) = v else { return Ok(Vec::new()) };
    let list = list.as_array().ok_or_else(|| err(format!("{state}: Retry must be an array")))?;
    let mut out = Vec::new();
    for (i, r) in list.iter().enumerate() {
        let o = r.as_object().ok_or_else(|| err(format!("{state}: Retry[{i}] must be an object")))?;
        allowed_fields(
            o,
            state,
            &["ErrorEquals", "IntervalSeconds", "MaxAttempts", "BackoffRate", "MaxDelaySeconds", "JitterStrategy"],
        )?;
        let backoff = get_f64(o, "BackoffRate", state)?.unwrap_or(2.0);
        if backoff < 1.0 {
            return Err(err(format!("{state}: BackoffRate must be >= 1.0")));
        }
        let jitter = match get_str(o, "JitterStrategy", state)?.as_deref() {
            None | Some("NONE") => false,
            Some("FULL") => true,
            Some(other) => return Err(err(format!("{state}: unknown JitterStrategy {other}"))),
        };
        let max_attempts = get_u64(o, "MaxAttempts", state)?.unwrap_or(3);
        out.push(Retrier {
            error_equals: error_list(o.get("ErrorEquals"), state)?,
            interval_seconds: get_f64(o, "IntervalSeconds", state)?.unwrap_or(1.0).max(0.0),
            max_attempts: u32::try_from(max_attempts).map_err(|_| err(format!("{state}: MaxAttempts too large")))?,
            backoff_rate: backoff,
            max_delay_seconds: get_f64(o, "MaxDelaySeconds", state)?,
            full_jitter: jitter,
        });
    }
    all_only_last(out.iter().map(|r| r.error_equals.as_slice()), "retrier", "Retry", state)?;
    Ok(out)
}

/// "It must appear alone in the ErrorEquals array and must appear in the last retrier in the
/// Retry array" (the same for catchers).
fn all_only_last<'a>(
    lists: impl ExactSizeIterator<Item = &'a [String]>,
    what: &str,
    field: &str,
    state: &str,
) -> Result<(), DefinitionError> {
    let n = lists.len();
    for (i, list) in lists.enumerate() {
        if i + 1 < n && list.iter().any(|e| e == "States.ALL") {
            return Err(err(format!("{state}: States.ALL must appear in the last {what} of {field}")));
        }
    }
    Ok(())
}

fn parse_catch(v: Option<&Value>, state: &str) -> Result<Vec<Catcher>, DefinitionError> {
    let Some(list) = v else { return Ok(Vec::new()) };
    let list = list.as_array().ok_or_else(|| err(format!("{state}: Catch must be an array")))?;
    let mut out = Vec::new();
    for (i, c) in list.iter().enumerate() {
        let o = c.as_object().ok_or_else(|| err(format!("{state}: Catch[{i}] must be an object")))?;
        allowed_fields(o, state, &["ErrorEquals", "ResultPath", "Next", "Assign"])?;
        out.push(Catcher {
            error_equals: error_list(o.get("ErrorEquals"), state)?,
            result_path: path_or_null(o, "ResultPath", state)?,
            next: get_str(o, "Next", state)?.ok_or_else(|| err(format!("{state}: Catch[{i}] needs Next")))?,
            assign: o.get("Assign").map(|a| jsonpath_assign(a, state)).transpose()?,
        });
    }
    all_only_last(out.iter().map(|c| c.error_equals.as_slice()), "catcher", "Catch", state)?;
    Ok(out)
}

const COMPARISONS: &[(&str, char, Cmp)] = &[
    ("StringEquals", 's', Cmp::Eq),
    ("StringLessThan", 's', Cmp::Lt),
    ("StringGreaterThan", 's', Cmp::Gt),
    ("StringLessThanEquals", 's', Cmp::Le),
    ("StringGreaterThanEquals", 's', Cmp::Ge),
    ("NumericEquals", 'n', Cmp::Eq),
    ("NumericLessThan", 'n', Cmp::Lt),
    ("NumericGreaterThan", 'n', Cmp::Gt),
    ("NumericLessThanEquals", 'n', Cmp::Le),
    ("NumericGreaterThanEquals", 'n', Cmp::Ge),
    ("BooleanEquals", 'b', Cmp::Eq),
    ("TimestampEquals", 't', Cmp::Eq),
    ("TimestampLessThan", 't', Cmp::Lt),
    ("TimestampGreaterThan", 't', Cmp::Gt),
    ("TimestampLessThanEquals", 't', Cmp::Le),
    ("TimestampGreaterThanEquals", 't', Cmp::Ge),
];

fn parse_rule(v: &Value, state: &str, top_level: bool) -> Result<ChoiceRule, DefinitionError> {
    let o = v.as_object().ok_or_else(|| err(format!("{state}: a choice rule must be an object")))?;
    let allowed_extra: &[&str] = if top_level { &["Next", "Comment"] } else { &["Comment"] };
    if let Some(list) = o.get("And").or_else(|| o.get("Or")) {
        let rules = list
            .as_array()
            .ok_or_else(|| err(format!("{state}: And/Or must be an array")))?
            .iter()
            .map(|r| parse_rule(r, state, false))
            .collect::<Result<Vec<_>, _>>()?;
        if rules.is_empty() {
            return Err(err(format!("{state}: And/Or needs at least one rule")));
        }
        for k in o.keys() {
            if k != "And" && k != "Or" && !allowed_extra.contains(&k.as_str()) {
                return Err(err(format!("{state}: unexpected field {k} next to And/Or")));
            }
        }
        return Ok(if o.contains_key("And") { ChoiceRule::And(rules) } else { ChoiceRule::Or(rules) });
    }
    if let Some(inner) = o.get("Not") {
        return Ok(ChoiceRule::Not(Box::new(parse_rule(inner, state, false)?)));
    }
    let variable = get_str(o, "Variable", state)?.ok_or_else(|| err(format!("{state}: choice rule needs Variable")))?;
    check_path(&variable, state)?;
    let mut found = None;
    for (k, val) in o {
        if k == "Variable" || allowed_extra.contains(&k.as_str()) {
            continue;
        }
        if found.is_some() {
            return Err(err(format!("{state}: a choice rule has exactly one comparison")));
        }
        found = Some((k.as_str(), val));
    }
    let (op, val) = found.ok_or_else(|| err(format!("{state}: choice rule has no comparison")))?;
    let is_test = |t: TypeTest| -> Result<ChoiceRule, DefinitionError> {
        let expected = val.as_bool().ok_or_else(|| err(format!("{state}: {op} takes true or false")))?;
        Ok(ChoiceRule::Is { variable: variable.clone(), test: t, expected })
    };
    match op {
        "IsNull" => return is_test(TypeTest::Null),
        "IsPresent" => return is_test(TypeTest::Present),
        "IsNumeric" => return is_test(TypeTest::Numeric),
        "IsString" => return is_test(TypeTest::String),
        "IsBoolean" => return is_test(TypeTest::Boolean),
        "IsTimestamp" => return is_test(TypeTest::Timestamp),
        "StringMatches" => {
            let pattern = val.as_str().ok_or_else(|| err(format!("{state}: StringMatches takes a string")))?;
            return Ok(ChoiceRule::StringMatches { variable, pattern: pattern.to_string() });
        }
        _ => {}
    }
    let (base, is_path) = match op.strip_suffix("Path") {
        Some(b) => (b, true),
        None => (op, false),
    };
    let (_, kind, cmp) = COMPARISONS
        .iter()
        .find(|(name, _, _)| *name == base)
        .ok_or_else(|| err(format!("{state}: unsupported comparison {op}")))?;
    let operand = if is_path {
        let p = val.as_str().ok_or_else(|| err(format!("{state}: {op} takes a path")))?;
        check_path(p, state)?;
        Operand::Path(p.to_string())
    } else {
        let ok = match kind {
            's' => val.is_string(),
            'n' => val.is_number(),
            'b' => val.is_boolean(),
            _ => val.as_str().and_then(parse_timestamp).is_some(),
        };
        if !ok {
            return Err(err(format!("{state}: {op} has an operand of the wrong type")));
        }
        Operand::Literal(val.clone())
    };
    Ok(match kind {
        's' => ChoiceRule::String { variable, cmp: *cmp, operand },
        'n' => ChoiceRule::Numeric { variable, cmp: *cmp, operand },
        'b' => ChoiceRule::Boolean { variable, operand },
        _ => ChoiceRule::Timestamp { variable, cmp: *cmp, operand },
    })
}

pub fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    // ASL timestamps are RFC 3339 with an uppercase T and Z or an offset.
    if !s.contains('T') {
        return None;
    }
    DateTime::parse_from_rfc3339(s).ok().map(|d| d.with_timezone(&Utc))
}

impl StateMachine {
    pub fn parse(text: &str) -> Result<Self, DefinitionError> {
        let v: Value = serde_json::from_str(text).map_err(|e| err(format!("not JSON: {e}")))?;
        Self::from_value(&v)
    }

    pub fn from_value(v: &Value) -> Result<Self, DefinitionError> {
        let root = v.as_object().ok_or_else(|| err("the definition must be an object"))?;
        allowed_fields(root, "(root)", &["StartAt", "States", "TimeoutSeconds", "Version", "QueryLanguage"])?;
        let language = QueryLanguage::of(root, QueryLanguage::JsonPath, "(root)")?;
        let mut sm = Self::states_of(root, "(root)", language)?;
        sm.timeout_seconds = get_u64(root, "TimeoutSeconds", "(root)")?;
        // "State names must be unique within the scope of the whole state machine", branches
        // and Map processors included.
        let mut seen = std::collections::BTreeSet::new();
        sm.check_unique_names(&mut seen)?;
        sm.check_variable_scopes(&std::collections::BTreeSet::new())?;
        Ok(sm)
    }

    /// A Parallel branch or a Map processor: `StartAt` and `States` (plus the fields `extra`
    /// allows), whose states transition only among themselves.
    fn branch(v: &Value, owner: &str, extra: &[&str], language: QueryLanguage) -> Result<Arc<Self>, DefinitionError> {
        let obj = v.as_object().ok_or_else(|| err(format!("{owner}: a branch must be an object")))?;
        let mut allowed = vec!["StartAt", "States"];
        allowed.extend_from_slice(extra);
        allowed_fields(obj, owner, &allowed)?;
        Ok(Arc::new(Self::states_of(obj, owner, language)?))
    }

    fn states_of(
        obj: &serde_json::Map<String, Value>,
        owner: &str,
        language: QueryLanguage,
    ) -> Result<Self, DefinitionError> {
        let start_at = get_str(obj, "StartAt", owner)?.ok_or_else(|| err(format!("{owner}: StartAt is required")))?;
        let states_obj =
            obj.get("States").and_then(Value::as_object).ok_or_else(|| err(format!("{owner}: States is required")))?;
        if states_obj.is_empty() {
            return Err(err(format!("{owner}: States must not be empty")));
        }
        let mut states = BTreeMap::new();
        for (name, sv) in states_obj {
            if name.is_empty() || name.chars().count() > 80 {
                return Err(err(format!("state name {name:?} must be 1..=80 characters")));
            }
            let mut state = parse_state(name, sv, language)?;
            state.reads_context = matches!(state.kind, Kind::Map(_) | Kind::Parallel(_)) || mentions_context(sv);
            state.reads_variables = state.jsonata.is_none() && mentions_variable(sv);
            states.insert(name.clone(), state);
        }
        let sm = StateMachine { start_at, timeout_seconds: None, states };
        sm.check_references(owner)?;
        Ok(sm)
    }

    fn check_unique_names<'a>(&'a self, seen: &mut std::collections::BTreeSet<&'a str>) -> Result<(), DefinitionError> {
        for (name, state) in &self.states {
            if !seen.insert(name.as_str()) {
                return Err(err(format!("state name {name} is used more than once in the state machine")));
            }
            match &state.kind {
                Kind::Map(m) => m.processor.check_unique_names(seen)?,
                Kind::Parallel(p) => {
                    for b in &p.branches {
                        b.check_unique_names(seen)?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The variables this machine's own states assign (not its branches').
    fn assigned_here(&self) -> std::collections::BTreeSet<&str> {
        let mut names = std::collections::BTreeSet::new();
        for state in self.states.values() {
            let jsonpath = state.common.assign.iter().chain(state.common.rule_assign.iter().flatten());
            let jsonpath = jsonpath.chain(
                state.error_handling().into_iter().flat_map(|(_, c)| c.iter().filter_map(|c| c.assign.as_ref())),
            );
            names.extend(
                jsonpath.filter_map(Value::as_object).flat_map(|o| o.keys()).map(|k| k.strip_suffix(".$").unwrap_or(k)),
            );
            if let Some(f) = &state.jsonata {
                names.extend(f.assign.iter().map(|(n, _)| n.as_str()));
                names.extend(f.catch.iter().flat_map(|(_, a)| a.iter().map(|(n, _)| n.as_str())));
                names.extend(f.rule_exits.iter().flat_map(|(_, a)| a.iter().map(|(n, _)| n.as_str())));
            }
        }
        names
    }

    /// "You can't assign a value to a variable in an outer scope": a branch may read the
    /// variables of the scopes around it, not assign them.
    fn check_variable_scopes(&self, outer: &std::collections::BTreeSet<&str>) -> Result<(), DefinitionError> {
        let here = self.assigned_here();
        if let Some(clash) = here.iter().find(|n| outer.contains(*n)) {
            return Err(err(format!(
                "variable {clash} is assigned in an outer scope and cannot be assigned inside a Map or Parallel"
            )));
        }
        let mut visible = outer.clone();
        visible.extend(here);
        for state in self.states.values() {
            match &state.kind {
                Kind::Map(m) => m.processor.check_variable_scopes(&visible)?,
                Kind::Parallel(p) => {
                    for b in &p.branches {
                        b.check_variable_scopes(&visible)?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn check_references(&self, owner: &str) -> Result<(), DefinitionError> {
        let exists = |n: &str| self.states.contains_key(n);
        if !exists(&self.start_at) {
            return Err(err(format!("{owner}: StartAt {} names no state", self.start_at)));
        }
        for s in self.states.values() {
            for t in s.transitions() {
                if !exists(t) {
                    // Inside a branch this also refuses a jump out of the branch: "States in a
                    // branch can transition only to other states in the same branch."
                    return Err(err(format!("{}: transition to unknown state {t}", s.name)));
                }
            }
        }
        // Every state must be reachable (an unreachable state is almost always a typo).
        let mut seen = std::collections::BTreeSet::new();
        let mut stack = vec![self.start_at.as_str()];
        while let Some(n) = stack.pop() {
            if !seen.insert(n) {
                continue;
            }
            stack.extend(self.states[n].transitions());
        }
        if let Some(unreachable) = self.states.keys().find(|k| !seen.contains(k.as_str())) {
            return Err(err(format!("state {unreachable} is unreachable")));
        }
        Ok(())
    }
}

/// A JSONPath `Assign`: an object whose top-level fields name the variables (a `.$` suffix
/// takes a path or intrinsic function); names follow the same rule as in JSONata.
fn jsonpath_assign(value: &Value, state: &str) -> Result<Value, DefinitionError> {
    let obj = value.as_object().ok_or_else(|| err(format!("{state}: Assign must be an object")))?;
    for (name, v) in obj {
        super::jsonata::check_variable_name(name, state)?;
        if name.ends_with(".$") && !v.is_string() {
            return Err(err(format!("{state}: Assign: the value of {name:?} must be a path or intrinsic function")));
        }
    }
    Ok(value.clone())
}

/// Whether any string in a JSONPath state's definition may reference a workflow variable
/// (`$name`, not `$.`, `$[` or `$$`). Errs on the side of yes.
fn mentions_variable(v: &Value) -> bool {
    match v {
        Value::String(s) => s.match_indices('$').any(|(at, _)| super::path::variable_name_at(&s[at + 1..])),
        Value::Array(items) => items.iter().any(mentions_variable),
        Value::Object(fields) => fields.values().any(mentions_variable),
        _ => false,
    }
}

/// Whether any string in a state's definition can reach the Context object: a JSONPath `$$`,
/// or a JSONata `$states` other than `$states.input`, `.result` and `.errorOutput`. Errs on the
/// side of yes.
fn mentions_context(v: &Value) -> bool {
    match v {
        Value::String(s) => {
            if s.contains("$$") {
                return true;
            }
            s.match_indices("$states").any(|(at, found)| {
                let rest = &s[at + found.len()..];
                !["input", "result", "errorOutput"].iter().any(|field| {
                    rest.strip_prefix('.')
                        .and_then(|r| r.strip_prefix(field))
                        .is_some_and(|after| !after.starts_with(|c: char| c.is_alphanumeric() || c == '_'))
                })
            })
        }
        Value::Array(items) => items.iter().any(mentions_context),
        Value::Object(fields) => fields.values().any(mentions_context),
        _ => false,
    }
}

fn parse_state(name: &str, v: &Value, default_language: QueryLanguage) -> Result<State, DefinitionError> {
    let o = v.as_object().ok_or_else(|| err(format!("{name}: a state must be an object")))?;
    let language = QueryLanguage::of(o, default_language, name)?;
    if language == QueryLanguage::Jsonata {
        return parse_jsonata_state(name, o, default_language);
    }
    let mut o = o.clone();
    o.remove("QueryLanguage");
    let assign = o.remove("Assign").map(|a| jsonpath_assign(&a, name)).transpose()?;
    let o = &o;
    let ty = get_str(o, "Type", name)?.ok_or_else(|| err(format!("{name}: Type is required")))?;
    if assign.is_some() && matches!(ty.as_str(), "Succeed" | "Fail") {
        return Err(err(format!("{name}: a {ty} state cannot have Assign")));
    }
    let next = get_str(o, "Next", name)?;
    let end = o.get("End").and_then(Value::as_bool).unwrap_or(false);
    let mut common = Common {
        input_path: path_or_null(o, "InputPath", name)?,
        output_path: path_or_null(o, "OutputPath", name)?,
        next,
        end,
        assign,
        rule_assign: Vec::new(),
    };
    let needs_transition = |c: &Common| -> Result<(), DefinitionError> {
        if c.next.is_some() == c.end {
            return Err(err(format!("{name}: exactly one of Next and End is required")));
        }
        Ok(())
    };
    let kind = match ty.as_str() {
        "Task" => {
            allowed_fields(
                o,
                name,
                &[
                    "Resource",
                    "Parameters",
                    "ResultSelector",
                    "ResultPath",
                    "InputPath",
                    "OutputPath",
                    "Next",
                    "End",
                    "TimeoutSeconds",
                    "TimeoutSecondsPath",
                    "HeartbeatSeconds",
                    "HeartbeatSecondsPath",
                    "Retry",
                    "Catch",
                ],
            )?;
            needs_transition(&common)?;
            let resource = get_str(o, "Resource", name)?.ok_or_else(|| err(format!("{name}: Resource is required")))?;
            let t = TaskState {
                resource,
                parameters: o.get("Parameters").cloned(),
                result_selector: o.get("ResultSelector").cloned(),
                result_path: path_or_null(o, "ResultPath", name)?,
                timeout_seconds: get_u64(o, "TimeoutSeconds", name)?,
                timeout_seconds_path: get_str(o, "TimeoutSecondsPath", name)?,
                heartbeat_seconds: get_u64(o, "HeartbeatSeconds", name)?,
                heartbeat_seconds_path: get_str(o, "HeartbeatSecondsPath", name)?,
                retry: parse_retry(o.get("Retry"), name)?,
                catch: parse_catch(o.get("Catch"), name)?,
            };
            if t.timeout_seconds.is_some() && t.timeout_seconds_path.is_some() {
                return Err(err(format!("{name}: TimeoutSeconds and TimeoutSecondsPath are exclusive")));
            }
            if t.heartbeat_seconds.is_some() && t.heartbeat_seconds_path.is_some() {
                return Err(err(format!("{name}: HeartbeatSeconds and HeartbeatSecondsPath are exclusive")));
            }
            if let (Some(h), Some(to)) = (t.heartbeat_seconds, t.timeout_seconds)
                && h >= to
            {
                return Err(err(format!("{name}: HeartbeatSeconds must be smaller than TimeoutSeconds")));
            }
            for p in t.timeout_seconds_path.iter().chain(t.heartbeat_seconds_path.iter()) {
                check_path(p, name)?;
            }
            Kind::Task(t)
        }
        "Choice" => {
            allowed_fields(o, name, &["Choices", "Default", "InputPath", "OutputPath"])?;
            if common.end || common.next.is_some() {
                return Err(err(format!("{name}: a Choice state has no Next or End")));
            }
            let list = o
                .get("Choices")
                .and_then(Value::as_array)
                .ok_or_else(|| err(format!("{name}: Choices is required")))?;
            if list.is_empty() {
                return Err(err(format!("{name}: Choices must not be empty")));
            }
            let mut choices = Vec::new();
            for c in list {
                let next = c
                    .get("Next")
                    .and_then(Value::as_str)
                    .ok_or_else(|| err(format!("{name}: every top-level choice rule needs Next")))?;
                // A top-level rule may assign variables when it is chosen.
                let mut rule = c.clone();
                let assign = rule.as_object_mut().and_then(|r| r.remove("Assign"));
                common.rule_assign.push(assign.map(|a| jsonpath_assign(&a, name)).transpose()?);
                choices.push((parse_rule(&rule, name, true)?, next.to_string()));
            }
            Kind::Choice { choices, default: get_str(o, "Default", name)? }
        }
        "Wait" => {
            allowed_fields(
                o,
                name,
                &["Seconds", "SecondsPath", "Timestamp", "TimestampPath", "InputPath", "OutputPath", "Next", "End"],
            )?;
            needs_transition(&common)?;
            let mut found = Vec::new();
            if let Some(s) = get_u64(o, "Seconds", name)? {
                found.push(WaitFor::Seconds(s));
            }
            if let Some(p) = get_str(o, "SecondsPath", name)? {
                check_path(&p, name)?;
                found.push(WaitFor::SecondsPath(p));
            }
            if let Some(t) = get_str(o, "Timestamp", name)? {
                found.push(WaitFor::Timestamp(
                    parse_timestamp(&t).ok_or_else(|| err(format!("{name}: bad Timestamp")))?,
                ));
            }
            if let Some(p) = get_str(o, "TimestampPath", name)? {
                check_path(&p, name)?;
                found.push(WaitFor::TimestampPath(p));
            }
            if found.len() != 1 {
                return Err(err(format!("{name}: exactly one of Seconds, SecondsPath, Timestamp, TimestampPath")));
            }
            Kind::Wait(found.remove(0))
        }
        "Pass" => {
            allowed_fields(o, name, &["Result", "Parameters", "ResultPath", "InputPath", "OutputPath", "Next", "End"])?;
            needs_transition(&common)?;
            Kind::Pass {
                result: o.get("Result").cloned(),
                parameters: o.get("Parameters").cloned(),
                result_path: path_or_null(o, "ResultPath", name)?,
            }
        }
        "Succeed" => {
            allowed_fields(o, name, &["InputPath", "OutputPath"])?;
            Kind::Succeed
        }
        "Fail" => {
            allowed_fields(o, name, &["Error", "Cause", "ErrorPath", "CausePath"])?;
            let dynamic = |key: &str| -> Result<Option<String>, DefinitionError> {
                let Some(p) = get_str(o, key, name)? else { return Ok(None) };
                // "You can also specify CausePath using an intrinsic function that returns a
                // string": States.Format, JsonToString, ArrayGetItem, Base64Encode/Decode, Hash, UUID.
                const STRING_INTRINSICS: &[&str] = &[
                    "States.Format(",
                    "States.JsonToString(",
                    "States.ArrayGetItem(",
                    "States.Base64Encode(",
                    "States.Base64Decode(",
                    "States.Hash(",
                    "States.UUID(",
                ];
                if p.starts_with("States.") {
                    if !STRING_INTRINSICS.iter().any(|f| p.starts_with(f)) {
                        return Err(err(format!("{name}: {key} allows only intrinsic functions that return a string")));
                    }
                } else {
                    check_path(&p, name)?;
                }
                Ok(Some(p))
            };
            let (error, error_path) = (get_str(o, "Error", name)?, dynamic("ErrorPath")?);
            let (cause, cause_path) = (get_str(o, "Cause", name)?, dynamic("CausePath")?);
            if error.is_some() && error_path.is_some() {
                return Err(err(format!("{name}: specify either Error or ErrorPath, not both")));
            }
            if cause.is_some() && cause_path.is_some() {
                return Err(err(format!("{name}: specify either Cause or CausePath, not both")));
            }
            Kind::Fail { error, cause, error_path, cause_path }
        }
        "Map" => {
            allowed_fields(
                o,
                name,
                &[
                    "ItemProcessor",
                    "Iterator",
                    "ItemsPath",
                    "ItemSelector",
                    "Parameters",
                    "MaxConcurrency",
                    "MaxConcurrencyPath",
                    "ResultSelector",
                    "ResultPath",
                    "InputPath",
                    "OutputPath",
                    "Next",
                    "End",
                    "Retry",
                    "Catch",
                    // Refused below with a reason rather than as unknown fields.
                    "ItemReader",
                    "ItemBatcher",
                    "ResultWriter",
                    "Label",
                    "ToleratedFailurePercentage",
                    "ToleratedFailurePercentagePath",
                    "ToleratedFailureCount",
                    "ToleratedFailureCountPath",
                ],
            )?;
            needs_transition(&common)?;
            let processor_value = match (o.get("ItemProcessor"), o.get("Iterator")) {
                (Some(p), None) | (None, Some(p)) => p,
                (Some(_), Some(_)) => {
                    return Err(err(format!("{name}: specify either ItemProcessor or the deprecated Iterator")));
                }
                (None, None) => return Err(err(format!("{name}: a Map state needs ItemProcessor"))),
            };
            let mode = processor_value
                .get("ProcessorConfig")
                .map(|c| {
                    let c = c.as_object().ok_or_else(|| err(format!("{name}: ProcessorConfig must be an object")))?;
                    allowed_fields(c, name, &["Mode", "ExecutionType"])?;
                    Ok::<_, DefinitionError>(get_str(c, "Mode", name)?.unwrap_or_else(|| "INLINE".into()))
                })
                .transpose()?
                .unwrap_or_else(|| "INLINE".into());
            match mode.as_str() {
                "INLINE" => {}
                // Distributed Map reads items from S3 and runs child executions in the cloud:
                // nothing the local engine can stand in for faithfully.
                "DISTRIBUTED" => {
                    return Err(err(format!(
                        "{name}: Map in DISTRIBUTED mode is not supported by the local engine (INLINE only)"
                    )));
                }
                other => return Err(err(format!("{name}: unknown ProcessorConfig Mode {other}"))),
            }
            for distributed_only in [
                "ItemReader",
                "ItemBatcher",
                "ResultWriter",
                "Label",
                "ToleratedFailurePercentage",
                "ToleratedFailurePercentagePath",
                "ToleratedFailureCount",
                "ToleratedFailureCountPath",
            ] {
                if o.contains_key(distributed_only) {
                    // "In this mode, any iteration failure causes the Map state to fail": the
                    // tolerated-failure fields, like the reader and writer, belong to
                    // Distributed mode.
                    return Err(err(format!("{name}: {distributed_only} is only valid in a DISTRIBUTED Map")));
                }
            }
            let processor = StateMachine::branch(processor_value, name, &["ProcessorConfig"], default_language)?;
            if o.contains_key("ItemSelector") && o.contains_key("Parameters") {
                return Err(err(format!("{name}: specify either ItemSelector or the deprecated Parameters")));
            }
            let items_path = get_str(o, "ItemsPath", name)?;
            if let Some(p) = &items_path {
                check_path(p, name)?;
            }
            let max_concurrency = match o.get("MaxConcurrency") {
                None => None,
                Some(v) => Some(
                    v.as_u64().ok_or_else(|| err(format!("{name}: MaxConcurrency must be a non-negative integer")))?,
                ),
            };
            let max_concurrency_path = get_str(o, "MaxConcurrencyPath", name)?;
            if max_concurrency.is_some() && max_concurrency_path.is_some() {
                return Err(err(format!("{name}: MaxConcurrency and MaxConcurrencyPath are exclusive")));
            }
            if let Some(p) = &max_concurrency_path {
                check_path(p, name)?;
            }
            Kind::Map(MapState {
                items_path,
                item_selector: o.get("ItemSelector").or_else(|| o.get("Parameters")).cloned(),
                processor,
                max_concurrency,
                max_concurrency_path,
                result_selector: o.get("ResultSelector").cloned(),
                result_path: path_or_null(o, "ResultPath", name)?,
                handling: ErrorHandling {
                    retry: parse_retry(o.get("Retry"), name)?,
                    catch: parse_catch(o.get("Catch"), name)?,
                },
            })
        }
        "Parallel" => {
            allowed_fields(
                o,
                name,
                &[
                    "Branches",
                    "Parameters",
                    "ResultSelector",
                    "ResultPath",
                    "InputPath",
                    "OutputPath",
                    "Next",
                    "End",
                    "Retry",
                    "Catch",
                ],
            )?;
            needs_transition(&common)?;
            let list = o
                .get("Branches")
                .and_then(Value::as_array)
                .ok_or_else(|| err(format!("{name}: a Parallel state needs Branches (an array)")))?;
            if list.is_empty() {
                return Err(err(format!("{name}: Branches must not be empty")));
            }
            let branches = list
                .iter()
                .map(|b| StateMachine::branch(b, name, &[], default_language))
                .collect::<Result<Vec<_>, _>>()?;
            Kind::Parallel(ParallelState {
                branches,
                parameters: o.get("Parameters").cloned(),
                result_selector: o.get("ResultSelector").cloned(),
                result_path: path_or_null(o, "ResultPath", name)?,
                handling: ErrorHandling {
                    retry: parse_retry(o.get("Retry"), name)?,
                    catch: parse_catch(o.get("Catch"), name)?,
                },
            })
        }
        other => {
            return Err(err(format!("{name}: state type {other} is not supported by the local engine")));
        }
    };
    Ok(State { name: name.to_string(), kind, common, jsonata: None, reads_context: true, reads_variables: false })
}

/// A state in the JSONata query language: `Arguments` and `Output` instead of the five JSONPath
/// fields, `Assign`, `Condition`, `Items`, and `{% %}` expressions in value fields.
fn parse_jsonata_state(
    name: &str,
    o: &serde_json::Map<String, Value>,
    machine_language: QueryLanguage,
) -> Result<State, DefinitionError> {
    let ty = get_str(o, "Type", name)?.ok_or_else(|| err(format!("{name}: Type is required")))?;
    for jsonpath_only in ["InputPath", "OutputPath", "Parameters", "ResultSelector", "ResultPath", "ItemsPath"] {
        if o.contains_key(jsonpath_only) {
            return Err(err(format!(
                "{name}: {jsonpath_only} is a JSONPath field; a JSONata state uses Arguments and Output"
            )));
        }
    }
    let template = |key: &str| -> Result<Option<Template>, DefinitionError> {
        o.get(key).map(|v| Template::parse(v, &format!("{name}: {key}"))).transpose()
    };
    // A number field that may instead be a `{% %}` expression: (the number, the expression).
    let number_or_expression = |key: &str| -> Result<(Option<u64>, Option<Template>), DefinitionError> {
        match o.get(key) {
            Some(Value::String(s)) if super::jsonata::expression_text(s).is_some() => Ok((None, template(key)?)),
            _ => Ok((get_u64(o, key, name)?, None)),
        }
    };
    let mut fields = JsonataFields {
        output: template("Output")?,
        assign: match o.get("Assign") {
            Some(a) => parse_assign(a, name)?,
            None => Vec::new(),
        },
        ..JsonataFields::default()
    };
    let next = get_str(o, "Next", name)?;
    let end = o.get("End").and_then(Value::as_bool).unwrap_or(false);
    let common = Common { input_path: None, output_path: None, next, end, assign: None, rule_assign: Vec::new() };
    let needs_transition = |c: &Common| -> Result<(), DefinitionError> {
        if c.next.is_some() == c.end {
            return Err(err(format!("{name}: exactly one of Next and End is required")));
        }
        Ok(())
    };
    const COMMON: &[&str] = &["QueryLanguage", "Output", "Assign", "Next", "End"];
    let allow = |extra: &[&str]| -> Result<(), DefinitionError> {
        let mut all = COMMON.to_vec();
        all.extend_from_slice(extra);
        allowed_fields(o, name, &all)
    };
    let catch = |fields: &mut JsonataFields| -> Result<Vec<Catcher>, DefinitionError> {
        let Some(list) = o.get("Catch") else { return Ok(Vec::new()) };
        let list = list.as_array().ok_or_else(|| err(format!("{name}: Catch must be an array")))?;
        let mut out = Vec::new();
        for (i, c) in list.iter().enumerate() {
            let co = c.as_object().ok_or_else(|| err(format!("{name}: Catch[{i}] must be an object")))?;
            allowed_fields(co, name, &["ErrorEquals", "Next", "Output", "Assign"])?;
            out.push(Catcher {
                error_equals: error_list(co.get("ErrorEquals"), name)?,
                result_path: None,
                next: get_str(co, "Next", name)?.ok_or_else(|| err(format!("{name}: Catch[{i}] needs Next")))?,
                assign: None,
            });
            fields.catch.push((
                co.get("Output").map(|v| Template::parse(v, &format!("{name}: Catch Output"))).transpose()?,
                match co.get("Assign") {
                    Some(a) => parse_assign(a, name)?,
                    None => Vec::new(),
                },
            ));
        }
        all_only_last(out.iter().map(|c| c.error_equals.as_slice()), "catcher", "Catch", name)?;
        Ok(out)
    };
    let kind = match ty.as_str() {
        "Pass" => {
            allow(&[])?;
            needs_transition(&common)?;
            Kind::Pass { result: None, parameters: None, result_path: None }
        }
        "Succeed" => {
            allowed_fields(o, name, &["QueryLanguage", "Output"])?;
            Kind::Succeed
        }
        "Fail" => {
            allowed_fields(o, name, &["QueryLanguage", "Error", "Cause"])?;
            let literal_or_expression = |key: &str| -> Result<(Option<String>, Option<Template>), DefinitionError> {
                match o.get(key) {
                    None => Ok((None, None)),
                    Some(Value::String(s)) if super::jsonata::expression_text(s).is_none() => {
                        Ok((Some(s.clone()), None))
                    }
                    Some(v @ Value::String(_)) => Ok((None, Some(Template::parse(v, &format!("{name}: {key}"))?))),
                    Some(_) => Err(err(format!("{name}: {key} must be a string"))),
                }
            };
            let (error, error_t) = literal_or_expression("Error")?;
            let (cause, cause_t) = literal_or_expression("Cause")?;
            fields.error = error_t;
            fields.cause = cause_t;
            Kind::Fail { error, cause, error_path: None, cause_path: None }
        }
        "Wait" => {
            allow(&["Seconds", "Timestamp"])?;
            needs_transition(&common)?;
            let wait = match (o.get("Seconds"), o.get("Timestamp")) {
                (Some(Value::String(s)), None) => {
                    fields.wait =
                        Some((true, Template::parse(&Value::String(s.clone()), &format!("{name}: Seconds"))?));
                    WaitFor::Expression
                }
                (Some(v), None) => WaitFor::Seconds(
                    v.as_u64().ok_or_else(|| err(format!("{name}: Seconds must be a non-negative integer")))?,
                ),
                (None, Some(Value::String(t))) if super::jsonata::expression_text(t).is_some() => {
                    fields.wait =
                        Some((false, Template::parse(&Value::String(t.clone()), &format!("{name}: Timestamp"))?));
                    WaitFor::Expression
                }
                (None, Some(Value::String(t))) => {
                    WaitFor::Timestamp(parse_timestamp(t).ok_or_else(|| err(format!("{name}: bad Timestamp")))?)
                }
                _ => return Err(err(format!("{name}: exactly one of Seconds and Timestamp"))),
            };
            Kind::Wait(wait)
        }
        "Choice" => {
            allowed_fields(o, name, &["QueryLanguage", "Choices", "Default", "Output", "Assign"])?;
            if common.end || common.next.is_some() {
                return Err(err(format!("{name}: a Choice state has no Next or End")));
            }
            let list = o
                .get("Choices")
                .and_then(Value::as_array)
                .filter(|l| !l.is_empty())
                .ok_or_else(|| err(format!("{name}: Choices must be a non-empty array")))?;
            let mut choices = Vec::new();
            for (i, c) in list.iter().enumerate() {
                let co = c.as_object().ok_or_else(|| err(format!("{name}: a choice rule must be an object")))?;
                allowed_fields(co, name, &["Condition", "Next", "Output", "Assign"])?;
                let condition =
                    co.get("Condition").ok_or_else(|| err(format!("{name}: a JSONata choice rule needs Condition")))?;
                fields.conditions.push(Template::parse(condition, &format!("{name}: Condition"))?);
                let output = co.get("Output").map(|v| Template::parse(v, &format!("{name}: Output"))).transpose()?;
                let assign = co.get("Assign").map(|v| parse_assign(v, name)).transpose()?.unwrap_or_default();
                fields.rule_exits.push((output, assign));
                let next =
                    get_str(co, "Next", name)?.ok_or_else(|| err(format!("{name}: every choice rule needs Next")))?;
                choices.push((ChoiceRule::Condition(i), next));
            }
            Kind::Choice { choices, default: get_str(o, "Default", name)? }
        }
        "Task" => {
            allow(&["Resource", "Arguments", "TimeoutSeconds", "HeartbeatSeconds", "Retry", "Catch"])?;
            needs_transition(&common)?;
            fields.arguments = template("Arguments")?;
            let t = TaskState {
                resource: get_str(o, "Resource", name)?.ok_or_else(|| err(format!("{name}: Resource is required")))?,
                parameters: None,
                result_selector: None,
                result_path: None,
                timeout_seconds: {
                    let (number, expression) = number_or_expression("TimeoutSeconds")?;
                    fields.timeout_seconds = expression;
                    number
                },
                timeout_seconds_path: None,
                heartbeat_seconds: {
                    let (number, expression) = number_or_expression("HeartbeatSeconds")?;
                    fields.heartbeat_seconds = expression;
                    number
                },
                heartbeat_seconds_path: None,
                retry: parse_retry(o.get("Retry"), name)?,
                catch: catch(&mut fields)?,
            };
            if let (Some(h), Some(to)) = (t.heartbeat_seconds, t.timeout_seconds)
                && h >= to
            {
                return Err(err(format!("{name}: HeartbeatSeconds must be smaller than TimeoutSeconds")));
            }
            Kind::Task(t)
        }
        "Map" => {
            allow(&["ItemProcessor", "Items", "ItemSelector", "MaxConcurrency", "Retry", "Catch"])?;
            needs_transition(&common)?;
            let processor_value =
                o.get("ItemProcessor").ok_or_else(|| err(format!("{name}: a Map state needs ItemProcessor")))?;
            if let Some(mode) = processor_value.get("ProcessorConfig").and_then(|c| c.get("Mode"))
                && mode != "INLINE"
            {
                return Err(err(format!(
                    "{name}: Map in {mode} mode is not supported by the local engine (INLINE only)"
                )));
            }
            fields.items = template("Items")?;
            fields.item_selector = template("ItemSelector")?;
            let processor = StateMachine::branch(processor_value, name, &["ProcessorConfig"], machine_language)?;
            let (max_concurrency, expression) = number_or_expression("MaxConcurrency")?;
            fields.max_concurrency = expression;
            Kind::Map(MapState {
                items_path: None,
                item_selector: None,
                processor,
                max_concurrency,
                max_concurrency_path: None,
                result_selector: None,
                result_path: None,
                handling: ErrorHandling { retry: parse_retry(o.get("Retry"), name)?, catch: catch(&mut fields)? },
            })
        }
        "Parallel" => {
            allow(&["Branches", "Arguments", "Retry", "Catch"])?;
            needs_transition(&common)?;
            fields.arguments = template("Arguments")?;
            let list = o
                .get("Branches")
                .and_then(Value::as_array)
                .filter(|l| !l.is_empty())
                .ok_or_else(|| err(format!("{name}: Branches must be a non-empty array")))?;
            let branches = list
                .iter()
                .map(|b| StateMachine::branch(b, name, &[], machine_language))
                .collect::<Result<Vec<_>, _>>()?;
            Kind::Parallel(ParallelState {
                branches,
                parameters: None,
                result_selector: None,
                result_path: None,
                handling: ErrorHandling { retry: parse_retry(o.get("Retry"), name)?, catch: catch(&mut fields)? },
            })
        }
        other => return Err(err(format!("{name}: state type {other} is not supported by the local engine"))),
    };
    // "$states.result" exists only in a Task, Map or Parallel's Output and Assign, and
    // "$states.errorOutput" only in a Catch's.
    let has_result = matches!(kind, Kind::Task(_) | Kind::Map(_) | Kind::Parallel(_));
    let inputs = [
        &fields.arguments,
        &fields.items,
        &fields.item_selector,
        &fields.error,
        &fields.cause,
        &fields.timeout_seconds,
        &fields.heartbeat_seconds,
        &fields.max_concurrency,
    ];
    let rule_exits = fields.rule_exits.iter().flat_map(|(o, a)| o.iter().chain(a.iter().map(|(_, t)| t)));
    let exits = fields.output.iter().chain(fields.assign.iter().map(|(_, t)| t)).chain(rule_exits);
    let catches = fields.catch.iter().flat_map(|(o, a)| o.iter().chain(a.iter().map(|(_, t)| t)));
    for t in inputs.into_iter().flatten().chain(fields.conditions.iter()).chain(fields.wait.iter().map(|(_, t)| t)) {
        if t.mentions("result") || t.mentions("errorOutput") {
            return Err(err(format!("{name}: $states.result and $states.errorOutput are not available in this field")));
        }
    }
    for t in exits {
        if t.mentions("errorOutput") || (!has_result && t.mentions("result")) {
            return Err(err(format!(
                "{name}: Output and Assign of this state cannot use $states.errorOutput{}",
                if has_result { "" } else { " or $states.result" }
            )));
        }
    }
    for t in catches {
        if t.mentions("result") {
            return Err(err(format!("{name}: a Catch cannot use $states.result")));
        }
    }
    Ok(State {
        name: name.to_string(),
        kind,
        common,
        jsonata: Some(Box::new(fields)),
        reads_context: true,
        reads_variables: false,
    })
}

/// Evaluate a choice rule. Type mismatches compare false (as AWS does); a missing variable is an
/// error except under `IsPresent`.
pub fn evaluate<'a>(
    rule: &ChoiceRule,
    input: &'a Value,
    env: impl Into<super::path::Env<'a>>,
) -> Result<bool, PathError> {
    let context = env.into();
    let var = |p: &str| read_path(p, input, context);
    let operand = |o: &Operand| -> Result<Value, PathError> {
        match o {
            Operand::Literal(v) => Ok(v.clone()),
            Operand::Path(p) => read_path(p, input, context),
        }
    };
    let ord = |cmp: Cmp, o: std::cmp::Ordering| match cmp {
        Cmp::Eq => o.is_eq(),
        Cmp::Lt => o.is_lt(),
        Cmp::Gt => o.is_gt(),
        Cmp::Le => o.is_le(),
        Cmp::Ge => o.is_ge(),
    };
    Ok(match rule {
        ChoiceRule::And(rules) => {
            for r in rules {
                if !evaluate(r, input, context)? {
                    return Ok(false);
                }
            }
            true
        }
        ChoiceRule::Or(rules) => {
            for r in rules {
                if evaluate(r, input, context)? {
                    return Ok(true);
                }
            }
            false
        }
        ChoiceRule::Not(r) => !evaluate(r, input, context)?,
        ChoiceRule::String { variable, cmp, operand: o } => match (var(variable)?, operand(o)?) {
            (Value::String(a), Value::String(b)) => ord(*cmp, a.cmp(&b)),
            _ => false,
        },
        ChoiceRule::StringMatches { variable, pattern } => match var(variable)? {
            Value::String(s) => wildcard_match(pattern, &s),
            _ => false,
        },
        ChoiceRule::Numeric { variable, cmp, operand: o } => match (var(variable)?.as_f64(), operand(o)?.as_f64()) {
            (Some(a), Some(b)) => a.partial_cmp(&b).is_some_and(|c| ord(*cmp, c)),
            _ => false,
        },
        ChoiceRule::Boolean { variable, operand: o } => match (var(variable)?, operand(o)?) {
            (Value::Bool(a), Value::Bool(b)) => a == b,
            _ => false,
        },
        ChoiceRule::Timestamp { variable, cmp, operand: o } => {
            let a = var(variable)?;
            let b = operand(o)?;
            match (a.as_str().and_then(parse_timestamp), b.as_str().and_then(parse_timestamp)) {
                (Some(a), Some(b)) => ord(*cmp, a.cmp(&b)),
                _ => false,
            }
        }
        ChoiceRule::Is { variable, test, expected } => {
            let value = RefPath::parse(variable)?.read(input, context).cloned();
            let actual = match (test, &value) {
                (TypeTest::Present, v) => v.is_some(),
                (_, None) => {
                    return Err(PathError(format!("the path {variable:?} matched nothing in the input")));
                }
                (TypeTest::Null, Some(v)) => v.is_null(),
                (TypeTest::Numeric, Some(v)) => v.is_number(),
                (TypeTest::String, Some(v)) => v.is_string(),
                (TypeTest::Boolean, Some(v)) => v.is_boolean(),
                (TypeTest::Timestamp, Some(v)) => v.as_str().and_then(parse_timestamp).is_some(),
            };
            actual == *expected
        }
        ChoiceRule::Condition(_) => {
            return Err(PathError("a JSONata Condition is evaluated with the state's variables".into()));
        }
    })
}

/// `StringMatches`: `*` matches any run of characters; `\*` and `\\` are literals.
fn wildcard_match(pattern: &str, s: &str) -> bool {
    let mut tokens: Vec<Option<char>> = Vec::new(); // None = wildcard
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => tokens.push(Some(chars.next().unwrap_or('\\'))),
            '*' => tokens.push(None),
            c => tokens.push(Some(c)),
        }
    }
    let s: Vec<char> = s.chars().collect();
    // Classic DP over (token index, string index).
    let mut dp = vec![vec![false; s.len() + 1]; tokens.len() + 1];
    dp[0][0] = true;
    for i in 1..=tokens.len() {
        if tokens[i - 1].is_none() {
            dp[i][0] = dp[i - 1][0];
        }
        for j in 1..=s.len() {
            dp[i][j] = match tokens[i - 1] {
                None => dp[i - 1][j] || dp[i][j - 1],
                Some(c) => dp[i - 1][j - 1] && s[j - 1] == c,
            };
        }
    }
    dp[tokens.len()][s.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(v: Value) -> ChoiceRule {
        parse_rule(&v, "t", false).unwrap()
    }

    #[test]
    fn comparisons() {
        let input = json!({"s": "abc", "n": 5, "b": true, "t": "2026-11-28T10:00:00Z", "limit": 5, "nul": null});
        let ctx = json!({});
        let yes = |v: Value| assert!(evaluate(&rule(v.clone()), &input, &ctx).unwrap(), "{v}");
        let no = |v: Value| assert!(!evaluate(&rule(v.clone()), &input, &ctx).unwrap(), "{v}");
        yes(json!({"Variable": "$.s", "StringEquals": "abc"}));
        yes(json!({"Variable": "$.s", "StringLessThan": "abd"}));
        yes(json!({"Variable": "$.s", "StringMatches": "a*c"}));
        no(json!({"Variable": "$.s", "StringMatches": "a*d"}));
        yes(json!({"Variable": "$.n", "NumericEquals": 5}));
        yes(json!({"Variable": "$.n", "NumericGreaterThanEqualsPath": "$.limit"}));
        no(json!({"Variable": "$.n", "NumericLessThanPath": "$.limit"}));
        yes(json!({"Variable": "$.b", "BooleanEquals": true}));
        yes(json!({"Variable": "$.t", "TimestampLessThan": "2026-11-28T11:00:00Z"}));
        yes(json!({"Variable": "$.nul", "IsNull": true}));
        yes(json!({"Variable": "$.absent", "IsPresent": false}));
        yes(json!({"Variable": "$.n", "IsNumeric": true}));
        yes(json!({"Variable": "$.t", "IsTimestamp": true}));
        // Type mismatch is false, not an error.
        no(json!({"Variable": "$.s", "NumericEquals": 5}));
        yes(
            json!({"And": [{"Variable": "$.b", "BooleanEquals": true}, {"Not": {"Variable": "$.n", "NumericEquals": 6}}]}),
        );
        yes(json!({"Or": [{"Variable": "$.b", "BooleanEquals": false}, {"Variable": "$.s", "StringEquals": "abc"}]}));
        // Missing variable is an error outside IsPresent.
        assert!(evaluate(&rule(json!({"Variable": "$.absent", "StringEquals": "x"})), &input, &ctx).is_err());
    }

    #[test]
    fn refuses_bad_definitions() {
        let bad = [
            json!({"StartAt": "A", "States": {"A": {"Type": "Pass", "Next": "B"}}}),
            json!({"StartAt": "A", "States": {"A": {"Type": "Pass"}}}),
            json!({"StartAt": "A", "States": {"A": {"Type": "Parallel", "End": true}}}),
            json!({"StartAt": "A", "States": {"A": {"Type": "Parallel", "Branches": [], "End": true}}}),
            json!({"StartAt": "A", "States": {"A": {"Type": "Pass", "End": true}, "B": {"Type": "Succeed"}}}),
            json!({"StartAt": "A", "States": {"A": {"Type": "Task", "Resource": "x", "End": true, "Bogus": 1}}}),
            json!({"StartAt": "A", "States": {"A": {"Type": "Wait", "Seconds": 1, "SecondsPath": "$.x", "End": true}}}),
            json!({"StartAt": "A", "States": {"A": {"Type": "Task", "Resource": "x", "End": true,
                "Retry": [{"ErrorEquals": ["States.ALL", "X"]}]}}}),
        ];
        for b in bad {
            assert!(StateMachine::from_value(&b).is_err(), "{b}");
        }
    }

    #[test]
    fn loads_the_shipped_definition() {
        let text = include_str!("../../../statemachine/incident.asl.json");
        let sm = StateMachine::parse(text).unwrap();
        assert_eq!(sm.start_at, "AwaitHypothesis");
        assert!(sm.states.len() >= 30);
    }
}
