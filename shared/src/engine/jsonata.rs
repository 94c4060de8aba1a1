//! JSONata states (`"QueryLanguage": "JSONata"`): every string of the form `{% expression %}` in
//! a state's `Arguments`, `Output`, `Assign`, `Items`, `ItemSelector`, `Condition`, Wait
//! `Seconds` / `Timestamp` and Fail `Error` / `Cause` is a JSONata expression, evaluated by
//! jlens-core (a complete JSONata 2.x engine) with the reserved variable `$states` (`input`,
//! `context`, `result`, `errorOutput`) and the execution's variables bound. Expressions are
//! compiled once, when the definition is loaded, so a syntax error is a definition error.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use jlens_core::{Bindings, Expression, HostFunction};
use serde_json::{Map, Value, json};

use super::asl::DefinitionError;
use super::path;

/// The error a failing JSONata expression raises ("States.QueryEvaluationError").
pub const QUERY_EVALUATION_ERROR: &str = "States.QueryEvaluationError";

/// One compiled `{% %}` expression.
pub struct Compiled {
    source: String,
    expression: Expression,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{{% {} %}}", self.source)
    }
}

/// A JSON value whose strings may be JSONata expressions.
#[derive(Debug, Clone)]
pub enum Template {
    Literal(Value),
    Expression(Arc<Compiled>),
    Object(Vec<(String, Template)>),
    Array(Vec<Template>),
}

impl PartialEq for Template {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Template::Literal(a), Template::Literal(b)) => a == b,
            (Template::Expression(a), Template::Expression(b)) => a.source == b.source,
            (Template::Object(a), Template::Object(b)) => a == b,
            (Template::Array(a), Template::Array(b)) => a == b,
            _ => false,
        }
    }
}

/// What an expression can see.
pub struct Scope<'a> {
    pub input: &'a Value,
    pub context: &'a Value,
    pub result: Option<&'a Value>,
    pub error_output: Option<&'a Value>,
    pub variables: &'a BTreeMap<String, Value>,
}

/// The text inside `{% %}`, if `s` is an expression.
pub fn expression_text(s: &str) -> Option<&str> {
    s.strip_prefix("{%").and_then(|r| r.strip_suffix("%}"))
}

impl Template {
    /// Whether any expression of this template mentions `$states.<name>` (for the load-time
    /// rule that `result` and `errorOutput` exist only in some fields).
    pub fn mentions(&self, name: &str) -> bool {
        let needle = format!("$states.{name}");
        match self {
            Template::Literal(_) => false,
            Template::Expression(c) => c.source.contains(&needle),
            Template::Object(fields) => fields.iter().any(|(_, t)| t.mentions(name)),
            Template::Array(items) => items.iter().any(|t| t.mentions(name)),
        }
    }

    /// Compile every `{% %}` string of `value`; `what` names the field for error messages.
    pub fn parse(value: &Value, what: &str) -> Result<Self, DefinitionError> {
        Ok(match value {
            Value::String(s) if s.starts_with("{%") && !s.ends_with("%}") => {
                return Err(DefinitionError(format!(
                    "{what}: {s:?} opens a JSONata expression with {{% but does not close it with %}}"
                )));
            }
            Value::String(s) => match expression_text(s) {
                Some(text) => {
                    let expression = Expression::compile(text).map_err(|e| {
                        DefinitionError(format!("{what}: the JSONata expression {s:?} does not compile: {e}"))
                    })?;
                    Template::Expression(Arc::new(Compiled { source: text.trim().to_string(), expression }))
                }
                None => Template::Literal(value.clone()),
            },
            Value::Object(m) => Template::Object(
                m.iter().map(|(k, v)| Ok((k.clone(), Template::parse(v, what)?))).collect::<Result<_, _>>()?,
            ),
            Value::Array(a) => Template::Array(a.iter().map(|v| Template::parse(v, what)).collect::<Result<_, _>>()?),
            other => Template::Literal(other.clone()),
        })
    }

    /// Evaluate against `scope`. An expression that yields nothing (JSONata's `undefined`) is an
    /// error wherever it stands ("returned nothing (undefined)").
    pub fn eval(&self, scope: &Scope<'_>) -> Result<Value, String> {
        let bindings = bindings(scope);
        self.eval_with(&bindings)?.ok_or_else(|| "the JSONata expression produced no value".to_string())
    }

    fn eval_with(&self, bindings: &Bindings) -> Result<Option<Value>, String> {
        Ok(match self {
            Template::Literal(v) => Some(v.clone()),
            Template::Expression(c) => c
                .expression
                .evaluate(None, bindings)
                .map_err(|e| format!("the JSONata expression {{% {} %}} failed: {e}", c.source))?,
            Template::Object(fields) => {
                let mut out = Map::with_capacity(fields.len());
                for (k, t) in fields {
                    match t.eval_with(bindings)? {
                        Some(v) => {
                            out.insert(k.clone(), v);
                        }
                        None => {
                            return Err(format!(
                                "the JSONata expression for the field {k:?} returned nothing (undefined)"
                            ));
                        }
                    }
                }
                Some(Value::Object(out))
            }
            Template::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for t in items {
                    match t.eval_with(bindings)? {
                        Some(v) => out.push(v),
                        None => return Err("an array element's JSONata expression produced no value".into()),
                    }
                }
                Some(Value::Array(out))
            }
        })
    }
}

fn bindings(scope: &Scope<'_>) -> Bindings {
    let mut states = json!({ "input": scope.input, "context": scope.context });
    if let Some(r) = scope.result {
        states["result"] = r.clone();
    }
    if let Some(e) = scope.error_output {
        states["errorOutput"] = e.clone();
    }
    // The functions are shared (cloning the bindings clones a pointer to them).
    let mut b = step_functions_functions().clone().var("states", states);
    for (name, value) in scope.variables {
        b = b.var(name.clone(), value.clone());
    }
    b
}

/// The JSONata functions Step Functions adds to the language, and `$eval`, which it leaves out
/// ("use $parse() instead"). Each of the first five does what the intrinsic function it
/// replaces does in JSONPath states, so both share one implementation and one set of limits.
fn step_functions_functions() -> &'static Bindings {
    static FUNCTIONS: OnceLock<Bindings> = OnceLock::new();
    FUNCTIONS.get_or_init(|| {
        let intrinsic = |function: &'static str, intrinsic: &'static str, arity: usize| {
            HostFunction::new(arity, move |args, _| {
                // JSONata's undefined (a missing field) reaches the function as null, which
                // every one of them refuses with its own message.
                let args = args.iter().map(|a| a.clone().unwrap_or(Value::Null)).collect();
                path::call_intrinsic(intrinsic, args)
                    .map(Some)
                    .map_err(|e| function_error(&e.0.replacen(intrinsic, &format!("${function}"), 1)))
            })
            .without_input()
        };
        let random = HostFunction::new(1, |args, _| {
            use rand::{Rng, SeedableRng};
            let value: f64 = match args.first().cloned().flatten() {
                None => rand::random(),
                Some(seed) => {
                    let seed = seed
                        .as_i64()
                        .or_else(|| seed.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
                        .ok_or_else(|| function_error("$random: the seed must be an integer"))?;
                    rand::rngs::StdRng::seed_from_u64(seed as u64).random()
                }
            };
            Ok(Some(json!(value)))
        })
        .without_input();
        let eval = HostFunction::new(1, |_, _| {
            Err(function_error("$eval is not available in Step Functions: use $parse() to deserialize JSON strings"))
        })
        .without_input();
        Bindings::new()
            .function("partition", intrinsic("partition", "States.ArrayPartition", 2))
            .function("range", intrinsic("range", "States.ArrayRange", 3))
            .function("hash", intrinsic("hash", "States.Hash", 2))
            .function("uuid", intrinsic("uuid", "States.UUID", 0))
            .function("parse", intrinsic("parse", "States.StringToJson", 1))
            .function("random", random)
            .function("eval", eval)
    })
}

fn function_error(message: &str) -> jlens_core::Error {
    jlens_core::Error::new("StepFunctions").with("message", message)
}

/// A state's `Assign`: variable name → value template. All values are evaluated with the
/// variables as they were before the state ("the values ... are evaluated before any are
/// assigned"), then assigned together.
pub fn assign(templates: &[(String, Template)], scope: &Scope<'_>) -> Result<Vec<(String, Value)>, String> {
    let mut assigned = Vec::with_capacity(templates.len());
    for (name, t) in templates {
        assigned.push((name.clone(), t.eval(scope)?));
    }
    Ok(assigned)
}

/// An `Assign` key (a `.$` suffix allowed, for JSONPath) names a variable by the documented
/// rule: a letter or underscore first, then letters, digits and underscores; `states` is
/// reserved.
pub(crate) fn check_variable_name(name: &str, state: &str) -> Result<(), DefinitionError> {
    let plain = name.strip_suffix(".$").unwrap_or(name);
    let valid = plain.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && plain.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid || plain == "states" {
        return Err(DefinitionError(format!("{state}: Assign: {name:?} is not a valid variable name")));
    }
    Ok(())
}

/// Parse an `Assign` object (JSONata: values may be `{% %}`; JSONPath: keys ending in `.$` take
/// a path, which the caller evaluates). Variable names follow the documented rule: a letter or
/// underscore first, then letters, digits and underscores; `states` is reserved.
pub fn parse_assign(value: &Value, state: &str) -> Result<Vec<(String, Template)>, DefinitionError> {
    let obj = value.as_object().ok_or_else(|| DefinitionError(format!("{state}: Assign must be an object")))?;
    let mut out = Vec::with_capacity(obj.len());
    for (name, v) in obj {
        check_variable_name(name, state)?;
        out.push((name.clone(), Template::parse(v, &format!("{state}: Assign"))?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_see_states_and_variables() {
        let t = Template::parse(&json!({"sum": "{% $states.input.a + $x %}", "plain": "$x"}), "t").unwrap();
        let vars = BTreeMap::from([("x".to_string(), json!(2))]);
        let scope =
            Scope { input: &json!({"a": 1}), context: &json!({}), result: None, error_output: None, variables: &vars };
        assert_eq!(t.eval(&scope).unwrap(), json!({"sum": 3, "plain": "$x"}));
    }

    #[test]
    fn a_syntax_error_is_a_definition_error() {
        assert!(Template::parse(&json!("{% $states.input. %}"), "t").is_err());
    }
}
