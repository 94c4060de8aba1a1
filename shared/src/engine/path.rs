//! The JSONPath subset Amazon States Language uses: reference paths (`$`, `$.a.b`, `$.a[0]`,
//! `$['key']`, `$$.Task.Token`), payload templates (keys ending in `.$`), `ResultPath` writes and
//! the intrinsic functions we support.

use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// What a path reads besides the state's input: the Context object (`$$`) and the workflow
/// variables (`$name`). A bare `&Value` converts to an environment with that Context object
/// and no variables.
#[derive(Debug, Clone, Copy)]
pub struct Env<'a> {
    pub context: &'a Value,
    pub variables: &'a BTreeMap<String, Value>,
}

static NO_VARIABLES: BTreeMap<String, Value> = BTreeMap::new();

impl<'a> From<&'a Value> for Env<'a> {
    fn from(context: &'a Value) -> Self {
        Env { context, variables: &NO_VARIABLES }
    }
}

impl<'a> Env<'a> {
    pub fn new(context: &'a Value, variables: &'a BTreeMap<String, Value>) -> Self {
        Env { context, variables }
    }

    /// The value a path starts from: the input, the Context object or a variable.
    fn root(&self, input: &'a Value, context: bool, variable: Option<&str>) -> Result<&'a Value, PathError> {
        match variable {
            Some(name) => {
                self.variables.get(name).ok_or_else(|| PathError(format!("the variable ${name} has no value")))
            }
            None if context => Ok(self.context),
            None => Ok(input),
        }
    }
}

/// Whether `rest` (the text after a `$`) starts with a workflow variable's name.
pub(crate) fn variable_name_at(rest: &str) -> bool {
    variable_name(rest).is_some()
}

/// A workflow variable's name at the start of `rest` (the text after `$`): a letter or an
/// underscore, then letters, digits and underscores.
fn variable_name(rest: &str) -> Option<&str> {
    if !rest.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        return None;
    }
    let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
    Some(&rest[..end])
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PathError(pub String);

const INTRINSIC_FAILED: &str = "intrinsic function failed: ";

impl PathError {
    /// An intrinsic function failed (States.IntrinsicFailure), as opposed to a path that
    /// selected nothing (States.ParameterPathFailure).
    pub fn is_intrinsic(&self) -> bool {
        self.0.starts_with(INTRINSIC_FAILED)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// A parsed reference path. `context` is true for `$$` paths; `variable` is set for paths
/// that start at a workflow variable (`$name.field`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefPath {
    pub context: bool,
    pub variable: Option<String>,
    pub segments: Vec<Segment>,
}

impl RefPath {
    pub fn parse(text: &str) -> Result<Self, PathError> {
        let (context, rest) = if let Some(r) = text.strip_prefix("$$") {
            (true, r)
        } else if let Some(r) = text.strip_prefix('$') {
            (false, r)
        } else {
            return Err(PathError(format!("path {text:?} must start with '$'")));
        };
        let variable = if context { None } else { variable_name(rest) };
        let rest = &rest[variable.map_or(0, str::len)..];
        let variable = variable.map(str::to_string);
        let mut segments = Vec::new();
        let bytes: Vec<char> = rest.chars().collect();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                '.' => {
                    let start = i + 1;
                    let mut j = start;
                    while j < bytes.len() && bytes[j] != '.' && bytes[j] != '[' {
                        j += 1;
                    }
                    if j == start {
                        return Err(PathError(format!("empty field name in {text:?}")));
                    }
                    let key: String = bytes[start..j].iter().collect();
                    if key == "*" {
                        return Err(PathError(format!("wildcards are not supported in {text:?}")));
                    }
                    segments.push(Segment::Key(key));
                    i = j;
                }
                '[' => {
                    let close = bytes[i..]
                        .iter()
                        .position(|c| *c == ']')
                        .map(|p| p + i)
                        .ok_or_else(|| PathError(format!("unclosed '[' in {text:?}")))?;
                    let inner: String = bytes[i + 1..close].iter().collect();
                    let inner = inner.trim();
                    if let Some(quoted) = inner
                        .strip_prefix('\'')
                        .and_then(|s| s.strip_suffix('\''))
                        .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')))
                    {
                        segments.push(Segment::Key(quoted.to_string()));
                    } else {
                        let idx: usize =
                            inner.parse().map_err(|_| PathError(format!("unsupported index {inner:?} in {text:?}")))?;
                        segments.push(Segment::Index(idx));
                    }
                    i = close + 1;
                }
                c => return Err(PathError(format!("unexpected {c:?} in path {text:?}"))),
            }
        }
        Ok(Self { context, variable, segments })
    }

    /// Read the value at this path (None: nothing there, or a variable without a value).
    pub fn read<'a>(&self, input: &'a Value, env: impl Into<Env<'a>>) -> Option<&'a Value> {
        let mut cur = env.into().root(input, self.context, self.variable.as_deref()).ok()?;
        for seg in &self.segments {
            cur = match (seg, cur) {
                (Segment::Key(k), Value::Object(m)) => m.get(k)?,
                (Segment::Index(i), Value::Array(a)) => a.get(*i)?,
                _ => return None,
            };
        }
        Some(cur)
    }
}

/// Resolve a path: a reference path (one node; a missing value is an error) or, failing that, a
/// JSONPath query (RFC 9535: wildcards, slices, filters, unions, `..`, negative indexes).
pub fn read_path<'a>(text: &str, input: &'a Value, env: impl Into<Env<'a>>) -> Result<Value, PathError> {
    let env = env.into();
    match RefPath::parse(text) {
        Ok(path) => {
            env.root(input, path.context, path.variable.as_deref())?;
            path.read(input, env)
                .cloned()
                .ok_or_else(|| PathError(format!("the path {text:?} matched nothing in the input")))
        }
        Err(reference_error) => match QueryPath::parse(text) {
            Ok(query) => query.read(input, env),
            // Report the reference-path error when the text is not JSONPath either: it is
            // the more specific of the two.
            Err(_) => Err(reference_error),
        },
    }
}

/// A Path that is not a reference path. "If the JsonPath yields multiple values ... the
/// interpreter gathers the texts into an array" (ASL spec, Input and Output Processing); a
/// query that can only select one node (a negative index) yields that node.
pub struct QueryPath {
    text: String,
    context: bool,
    variable: Option<String>,
    query: serde_json_path::JsonPath,
    singular: bool,
}

impl QueryPath {
    pub fn parse(text: &str) -> Result<Self, PathError> {
        let variable = text.strip_prefix('$').and_then(variable_name);
        let (context, rest) = match (text.strip_prefix("$$"), variable) {
            (Some(r), _) => (true, format!("${r}")),
            // A query on a variable is the same query on its value.
            (None, Some(name)) => (false, format!("${}", &text[1 + name.len()..])),
            (None, None) => (false, text.to_string()),
        };
        let query =
            serde_json_path::JsonPath::parse(&rest).map_err(|e| PathError(format!("bad path {text:?}: {e}")))?;
        let variable = variable.map(str::to_string);
        Ok(Self { text: text.to_string(), context, variable, query, singular: is_singular(&rest) })
    }

    pub fn read<'a>(&self, input: &'a Value, env: impl Into<Env<'a>>) -> Result<Value, PathError> {
        let root = env.into().root(input, self.context, self.variable.as_deref())?;
        let nodes = self.query.query(root);
        if self.singular {
            return nodes
                .at_most_one()
                .ok()
                .flatten()
                .cloned()
                .ok_or_else(|| PathError(format!("the path {:?} matched nothing in the input", self.text)));
        }
        Ok(Value::Array(nodes.all().into_iter().cloned().collect()))
    }
}

/// RFC 9535's singular query: only name and index selectors, no wildcard, slice, filter, union
/// or descendant segment. Checked on the text outside quoted names.
fn is_singular(path: &str) -> bool {
    let mut quote = None;
    let mut prev = '\0';
    for c in path.chars() {
        match quote {
            Some(q) if c == q && prev != '\\' => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if matches!(c, '*' | '?' | ':' | ',') => return false,
            None if c == '.' && prev == '.' => return false,
            None => {}
        }
        prev = c;
    }
    true
}

/// Check a Path field of a definition (InputPath, OutputPath, ItemsPath...): a reference path
/// or a JSONPath query.
pub fn check_query_path(text: &str) -> Result<(), PathError> {
    match RefPath::parse(text) {
        Ok(_) => Ok(()),
        Err(reference_error) => QueryPath::parse(text).map(|_| ()).map_err(|_| reference_error),
    }
}

/// Apply `InputPath` / `OutputPath`: absent means `$`, `null` means `{}`.
pub fn select<'a>(path: Option<&Value>, input: &'a Value, env: impl Into<Env<'a>>) -> Result<Value, PathError> {
    match path {
        None => Ok(input.clone()),
        Some(Value::Null) => Ok(Value::Object(Map::new())),
        Some(Value::String(p)) => read_path(p, input, env),
        Some(other) => Err(PathError(format!("path must be a string or null, got {other}"))),
    }
}

/// Apply `ResultPath`: absent means `$` (replace), `null` discards the result.
pub fn merge_result(result_path: Option<&Value>, input: &Value, result: Value) -> Result<Value, PathError> {
    let path = match result_path {
        None => return Ok(result),
        Some(Value::Null) => return Ok(input.clone()),
        Some(Value::String(p)) => RefPath::parse(p)?,
        Some(other) => {
            return Err(PathError(format!("ResultPath must be a string or null, got {other}")));
        }
    };
    if path.context {
        return Err(PathError("ResultPath cannot write into the context object".into()));
    }
    if path.variable.is_some() {
        return Err(PathError("ResultPath cannot write into a variable (use Assign)".into()));
    }
    if path.segments.is_empty() {
        return Ok(result);
    }
    let mut out = input.clone();
    if !out.is_object() {
        return Err(PathError("ResultPath needs an object input to write into".into()));
    }
    let mut cur = &mut out;
    let last = path.segments.len() - 1;
    for (i, seg) in path.segments.iter().enumerate() {
        let Segment::Key(key) = seg else {
            return Err(PathError("ResultPath cannot contain array indexes".into()));
        };
        let map =
            cur.as_object_mut().ok_or_else(|| PathError(format!("ResultPath crosses a non-object at {key:?}")))?;
        if i == last {
            map.insert(key.clone(), result);
            break;
        }
        cur = map.entry(key.clone()).or_insert_with(|| Value::Object(Map::new()));
    }
    Ok(out)
}

/// Evaluate a payload template (`Parameters`, `ResultSelector`, Pass `Parameters`): keys ending
/// in `.$` take the value of a path or intrinsic function; everything else is copied.
pub fn render_template<'a>(template: &Value, input: &'a Value, env: impl Into<Env<'a>>) -> Result<Value, PathError> {
    let env = env.into();
    match template {
        Value::Object(m) => {
            let mut out = Map::with_capacity(m.len());
            for (k, v) in m {
                if let Some(name) = k.strip_suffix(".$") {
                    let expr = v.as_str().ok_or_else(|| PathError(format!("value of {k:?} must be a string")))?;
                    out.insert(name.to_string(), evaluate_expression(expr, input, env)?);
                } else {
                    out.insert(k.clone(), render_template(v, input, env)?);
                }
            }
            Ok(Value::Object(out))
        }
        Value::Array(a) => {
            Ok(Value::Array(a.iter().map(|v| render_template(v, input, env)).collect::<Result<_, _>>()?))
        }
        other => Ok(other.clone()),
    }
}

/// A `.$` value: a path or an intrinsic function call.
pub fn evaluate_expression<'a>(expr: &str, input: &'a Value, env: impl Into<Env<'a>>) -> Result<Value, PathError> {
    let env = env.into();
    let expr = expr.trim();
    if expr.starts_with("States.") {
        let mut parser = Intrinsic { chars: expr.chars().collect(), pos: 0, input, env };
        let evaluated = parser.call().and_then(|v| {
            parser.skip_ws();
            if parser.pos != parser.chars.len() {
                return Err(PathError(format!("trailing text after intrinsic function in {expr:?}")));
            }
            Ok(v)
        });
        return evaluated.map_err(|e| PathError(format!("{INTRINSIC_FAILED}{e}")));
    }
    read_path(expr, input, env)
}

struct Intrinsic<'a> {
    chars: Vec<char>,
    pos: usize,
    input: &'a Value,
    env: Env<'a>,
}

impl Intrinsic<'_> {
    fn skip_ws(&mut self) {
        while self.pos < self.chars.len() && self.chars[self.pos].is_whitespace() {
            self.pos += 1;
        }
    }
    fn err(&self, msg: &str) -> PathError {
        PathError(format!("intrinsic function: {msg} at position {}", self.pos))
    }
    fn call(&mut self) -> Result<Value, PathError> {
        self.skip_ws();
        let start = self.pos;
        while self.pos < self.chars.len() && (self.chars[self.pos].is_alphanumeric() || self.chars[self.pos] == '.') {
            self.pos += 1;
        }
        let name: String = self.chars[start..self.pos].iter().collect();
        self.skip_ws();
        if self.chars.get(self.pos) != Some(&'(') {
            return Err(self.err("expected '('"));
        }
        self.pos += 1;
        let mut args = Vec::new();
        loop {
            self.skip_ws();
            if self.chars.get(self.pos) == Some(&')') {
                self.pos += 1;
                break;
            }
            args.push(self.arg()?);
            self.skip_ws();
            match self.chars.get(self.pos) {
                Some(',') => self.pos += 1,
                Some(')') => {
                    self.pos += 1;
                    break;
                }
                _ => return Err(self.err("expected ',' or ')'")),
            }
        }
        apply_intrinsic(&name, args)
    }
    fn arg(&mut self) -> Result<Value, PathError> {
        self.skip_ws();
        match self.chars.get(self.pos) {
            Some('\'') => {
                self.pos += 1;
                let mut s = String::new();
                while let Some(&c) = self.chars.get(self.pos) {
                    self.pos += 1;
                    match c {
                        '\\' => {
                            if let Some(&n) = self.chars.get(self.pos) {
                                // An escaped brace is literal text for States.Format, not a
                                // placeholder: keep it apart until the function has run.
                                s.push(match n {
                                    '{' => ESCAPED_OPEN,
                                    '}' => ESCAPED_CLOSE,
                                    other => other,
                                });
                                self.pos += 1;
                            }
                        }
                        '\'' => return Ok(Value::String(s)),
                        c => s.push(c),
                    }
                }
                Err(self.err("unterminated string"))
            }
            Some('$') => {
                let start = self.pos;
                while let Some(&c) = self.chars.get(self.pos) {
                    if c == ',' || c == ')' || c.is_whitespace() {
                        break;
                    }
                    self.pos += 1;
                }
                let p: String = self.chars[start..self.pos].iter().collect();
                read_path(&p, self.input, self.env)
            }
            Some('S') => self.call(),
            Some(_) => {
                let start = self.pos;
                while let Some(&c) = self.chars.get(self.pos) {
                    if c == ',' || c == ')' || c.is_whitespace() {
                        break;
                    }
                    self.pos += 1;
                }
                let lit: String = self.chars[start..self.pos].iter().collect();
                serde_json::from_str(&lit).map_err(|_| self.err(&format!("bad literal {lit:?}")))
            }
            None => Err(self.err("unexpected end")),
        }
    }
}

/// Stand-ins for `\\{` and `\\}` inside intrinsic string literals (private-use code points).
const ESCAPED_OPEN: char = '\u{E000}';
const ESCAPED_CLOSE: char = '\u{E001}';

fn unescape_braces(s: &str) -> String {
    s.replace(ESCAPED_OPEN, "{").replace(ESCAPED_CLOSE, "}")
}

/// Largest input of States.Base64Encode/Decode and States.Hash, and the largest array
/// States.ArrayRange builds (the intrinsic functions page).
const MAX_INTRINSIC_STRING: usize = 10_000;
const MAX_ARRAY_RANGE: usize = 1_000;

fn as_integer(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15).map(|f| f as i64))
}

fn apply_intrinsic(name: &str, mut args: Vec<Value>) -> Result<Value, PathError> {
    if name != "States.Format" {
        for a in &mut args {
            if let Value::String(s) = a
                && s.contains([ESCAPED_OPEN, ESCAPED_CLOSE])
            {
                *s = unescape_braces(s);
            }
        }
    }
    call_intrinsic(name, args)
}

/// Run the intrinsic function `name` on evaluated arguments (also the JSONata functions that
/// replace them: `$partition`, `$range`, `$hash`, `$uuid`, `$parse`).
pub(crate) fn call_intrinsic(name: &str, args: Vec<Value>) -> Result<Value, PathError> {
    let bad = |m: &str| PathError(format!("{name}: {m}"));
    match name {
        "States.Format" => {
            let template =
                args.first().and_then(Value::as_str).ok_or_else(|| bad("first argument must be a string"))?;
            let mut out = String::new();
            let mut rest = args[1..].iter();
            let mut chars = template.chars().peekable();
            while let Some(c) = chars.next() {
                if c == '{' && chars.peek() == Some(&'}') {
                    chars.next();
                    let v = rest.next().ok_or_else(|| bad("more {} than arguments"))?;
                    match v {
                        Value::String(s) => out.push_str(s),
                        Value::Object(_) | Value::Array(_) => {
                            return Err(bad("arguments must be scalars"));
                        }
                        other => out.push_str(&other.to_string()),
                    }
                } else if c == '{' || c == '}' {
                    return Err(bad("an unescaped brace that is not part of {}"));
                } else {
                    out.push(c);
                }
            }
            let out = unescape_braces(&out);
            if rest.next().is_some() {
                return Err(bad("more arguments than {}"));
            }
            Ok(Value::String(out))
        }
        "States.JsonToString" => {
            let [v] = args.as_slice() else {
                return Err(bad("takes one argument"));
            };
            Ok(Value::String(v.to_string()))
        }
        "States.StringToJson" => {
            let [Value::String(s)] = args.as_slice() else {
                return Err(bad("takes one string"));
            };
            serde_json::from_str(s).map_err(|_| bad("argument is not JSON"))
        }
        "States.Array" => Ok(Value::Array(args)),
        "States.ArrayLength" => {
            let [Value::Array(a)] = args.as_slice() else {
                return Err(bad("takes one array"));
            };
            Ok(Value::from(a.len()))
        }
        "States.MathAdd" => {
            let [a, b] = args.as_slice() else {
                return Err(bad("takes two numbers"));
            };
            let (Some(a), Some(b)) = (a.as_i64(), b.as_i64()) else {
                return Err(bad("arguments must be integers"));
            };
            Ok(Value::from(a.checked_add(b).ok_or_else(|| bad("overflow"))?))
        }
        "States.UUID" => {
            if !args.is_empty() {
                return Err(bad("takes no arguments"));
            }
            Ok(Value::String(uuid::Uuid::new_v4().to_string()))
        }
        "States.ArrayPartition" => {
            let [Value::Array(a), size] = args.as_slice() else {
                return Err(bad("takes an array and a chunk size"));
            };
            let size =
                as_integer(size).filter(|n| *n > 0).ok_or_else(|| bad("chunk size must be a positive integer"))?;
            let size = usize::try_from(size).map_err(|_| bad("chunk size too large"))?;
            Ok(Value::Array(a.chunks(size).map(|c| Value::Array(c.to_vec())).collect()))
        }
        "States.ArrayContains" => {
            let [Value::Array(a), v] = args.as_slice() else {
                return Err(bad("takes an array and a value"));
            };
            Ok(Value::Bool(a.contains(v)))
        }
        "States.ArrayRange" => {
            let [start, end, step] = args.as_slice() else {
                return Err(bad("takes start, end and step"));
            };
            let (Some(start), Some(end), Some(step)) = (as_integer(start), as_integer(end), as_integer(step)) else {
                return Err(bad("arguments must be integers"));
            };
            if step == 0 {
                return Err(bad("step must not be 0"));
            }
            let mut out = Vec::new();
            let mut i = start;
            while (step > 0 && i <= end) || (step < 0 && i >= end) {
                if out.len() == MAX_ARRAY_RANGE {
                    return Err(bad("the range has more than 1000 items"));
                }
                out.push(Value::from(i));
                i = i.checked_add(step).ok_or_else(|| bad("overflow"))?;
            }
            Ok(Value::Array(out))
        }
        "States.ArrayGetItem" => {
            let [Value::Array(a), index] = args.as_slice() else {
                return Err(bad("takes an array and an index"));
            };
            let index =
                as_integer(index).filter(|i| *i >= 0).ok_or_else(|| bad("index must be a non-negative integer"))?;
            usize::try_from(index).ok().and_then(|i| a.get(i)).cloned().ok_or_else(|| bad("index out of bounds"))
        }
        "States.ArrayUnique" => {
            let [Value::Array(a)] = args.as_slice() else {
                return Err(bad("takes one array"));
            };
            let mut out: Vec<Value> = Vec::with_capacity(a.len());
            for v in a {
                if !out.contains(v) {
                    out.push(v.clone());
                }
            }
            Ok(Value::Array(out))
        }
        "States.Base64Encode" => {
            use base64::Engine as _;
            let [Value::String(s)] = args.as_slice() else {
                return Err(bad("takes one string"));
            };
            if s.chars().count() > MAX_INTRINSIC_STRING {
                return Err(bad("input longer than 10000 characters"));
            }
            Ok(Value::String(base64::engine::general_purpose::STANDARD.encode(s.as_bytes())))
        }
        "States.Base64Decode" => {
            use base64::Engine as _;
            let [Value::String(s)] = args.as_slice() else {
                return Err(bad("takes one string"));
            };
            if s.chars().count() > MAX_INTRINSIC_STRING {
                return Err(bad("input longer than 10000 characters"));
            }
            let bytes = base64::engine::general_purpose::STANDARD.decode(s).map_err(|_| bad("input is not base64"))?;
            String::from_utf8(bytes).map(Value::String).map_err(|_| bad("decoded data is not UTF-8"))
        }
        "States.Hash" => {
            let [data, Value::String(algorithm)] = args.as_slice() else {
                return Err(bad("takes data and an algorithm name"));
            };
            let text = match data {
                Value::String(s) => s.clone(),
                Value::Null => return Err(bad("data must not be null")),
                other => other.to_string(),
            };
            if text.chars().count() > MAX_INTRINSIC_STRING {
                return Err(bad("input longer than 10000 characters"));
            }
            let bytes = text.as_bytes();
            let digest = match algorithm.as_str() {
                "MD5" => hex::encode(<md5::Md5 as md5::Digest>::digest(bytes)),
                "SHA-1" => hex::encode(<sha1::Sha1 as sha1::Digest>::digest(bytes)),
                "SHA-256" => hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes)),
                "SHA-384" => hex::encode(<sha2::Sha384 as sha2::Digest>::digest(bytes)),
                "SHA-512" => hex::encode(<sha2::Sha512 as sha2::Digest>::digest(bytes)),
                _ => return Err(bad("algorithm must be MD5, SHA-1, SHA-256, SHA-384 or SHA-512")),
            };
            Ok(Value::String(digest))
        }
        "States.JsonMerge" => {
            let [Value::Object(a), Value::Object(b), deep] = args.as_slice() else {
                return Err(bad("takes two objects and false"));
            };
            // The docs: "Set the boolean flag to false to specify shallow merge mode";
            // deep merge is not supported by Step Functions either.
            if deep != &Value::Bool(false) {
                return Err(bad("only the shallow mode (false) is supported"));
            }
            let mut out = a.clone();
            for (k, v) in b {
                out.insert(k.clone(), v.clone());
            }
            Ok(Value::Object(out))
        }
        "States.MathRandom" => {
            let (start, end) = match args.as_slice() {
                [a, b] | [a, b, _] => (as_integer(a), as_integer(b)),
                _ => return Err(bad("takes start, end and an optional seed")),
            };
            let (Some(start), Some(end)) = (start, end) else {
                return Err(bad("start and end must be integers"));
            };
            if start >= end {
                return Err(bad("start must be less than end"));
            }
            let value = match args.get(2) {
                Some(seed) => {
                    let seed = as_integer(seed).ok_or_else(|| bad("seed must be an integer"))?;
                    use rand::{Rng, SeedableRng};
                    rand::rngs::StdRng::seed_from_u64(seed as u64).random_range(start..end)
                }
                None => rand::random_range(start..end),
            };
            Ok(Value::from(value))
        }
        "States.StringSplit" => {
            let [Value::String(s), Value::String(delimiters)] = args.as_slice() else {
                return Err(bad("takes a string and a delimiter string"));
            };
            let parts: Vec<Value> = s
                .split(|c: char| delimiters.contains(c))
                .filter(|p| !p.is_empty())
                .map(|p| Value::String(p.to_string()))
                .collect();
            Ok(Value::Array(parts))
        }
        other => Err(PathError(format!("unsupported intrinsic function {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_paths() {
        let input = json!({"a": {"b": [10, {"c": "x"}]}, "odd key": 1});
        let ctx = json!({"Task": {"Token": "tok"}});
        assert_eq!(read_path("$", &input, &ctx).unwrap(), input);
        assert_eq!(read_path("$.a.b[0]", &input, &ctx).unwrap(), json!(10));
        assert_eq!(read_path("$.a.b[1].c", &input, &ctx).unwrap(), json!("x"));
        assert_eq!(read_path("$['odd key']", &input, &ctx).unwrap(), json!(1));
        assert_eq!(read_path("$$.Task.Token", &input, &ctx).unwrap(), json!("tok"));
        assert!(read_path("$.missing", &input, &ctx).is_err());
        assert!(read_path("a.b", &input, &ctx).is_err());
        assert!(read_path("$.a[", &input, &ctx).is_err());
        // Beyond reference paths, JSONPath queries gather their matches into an array
        // (reference paths, as ResultPath needs, still refuse them).
        assert_eq!(read_path("$.a.*", &input, &ctx).unwrap(), json!([[10, {"c": "x"}]]));
        assert_eq!(read_path("$.a.b[-1].c", &input, &ctx).unwrap(), json!("x"));
        assert_eq!(read_path("$.a.b[0:1]", &input, &ctx).unwrap(), json!([10]));
        assert_eq!(read_path("$..c", &input, &ctx).unwrap(), json!(["x"]));
        assert!(read_path("$.a.b[-9]", &input, &ctx).is_err());
        assert!(RefPath::parse("$.a.*").is_err());
    }

    #[test]
    fn result_path_semantics() {
        let input = json!({"x": 1});
        assert_eq!(merge_result(None, &input, json!(2)).unwrap(), json!(2));
        assert_eq!(merge_result(Some(&Value::Null), &input, json!(2)).unwrap(), input);
        assert_eq!(merge_result(Some(&json!("$.r.s")), &input, json!(2)).unwrap(), json!({"x": 1, "r": {"s": 2}}));
        assert_eq!(merge_result(Some(&json!("$.x")), &input, json!(3)).unwrap(), json!({"x": 3}));
        assert!(merge_result(Some(&json!("$.x.y")), &input, json!(3)).is_err());
    }

    #[test]
    fn templates_and_intrinsics() {
        let input = json!({"id": "INC1", "n": 2, "obj": {"k": "v"}});
        let ctx = json!({"Execution": {"Id": "exec-1"}});
        let t = json!({
            "static": {"nested": true},
            "id.$": "$.id",
            "exec.$": "$$.Execution.Id",
            "msg.$": "States.Format('incident {} has {} steps', $.id, $.n)",
            "json.$": "States.JsonToString($.obj)",
            "back.$": "States.StringToJson('{\"a\":1}')",
            "sum.$": "States.MathAdd($.n, 40)",
            "arr.$": "States.Array($.id, 'x', 3)"
        });
        let out = render_template(&t, &input, &ctx).unwrap();
        assert_eq!(out["static"], json!({"nested": true}));
        assert_eq!(out["id"], json!("INC1"));
        assert_eq!(out["exec"], json!("exec-1"));
        assert_eq!(out["msg"], json!("incident INC1 has 2 steps"));
        assert_eq!(out["json"], json!("{\"k\":\"v\"}"));
        assert_eq!(out["back"], json!({"a": 1}));
        assert_eq!(out["sum"], json!(42));
        assert_eq!(out["arr"], json!(["INC1", "x", 3]));
        assert!(render_template(&json!({"x.$": "States.Nope()"}), &input, &ctx).is_err());
        assert!(render_template(&json!({"x.$": "$.absent"}), &input, &ctx).is_err());
    }
}
