//! A tiny Lambda function for the Lambda host tests (`tests/tests/lambda_host.rs`): a real
//! `lambda_runtime` client, so the host is tested against the same client our functions use.
//!
//! Event mode (default), by payload:
//! - `{"sleep_ms": N}` sleeps first (combines with the others);
//! - `{"exit": code}` exits the process mid-invocation;
//! - `{"fail": "SomeError"}` returns an error whose `errorType` is `SomeError`;
//! - `{"env": true}` returns the whole environment;
//! - `{"whoami": true}` returns pid, request id, deadline, ARN, trace id and timings;
//! - anything else is echoed back.
//!
//! HTTP mode (`TEST_LAMBDA_MODE=http`): answers API Gateway v2 events through `lambda_http`
//! (the parser our HTTP functions use) with a JSON echo of method, path, query, headers and the
//! decoded body. Query `status=N` sets the status, `cookie=…` adds a Set-Cookie, `fail=1` makes
//! the handler fail, `sleep_ms=N` sleeps.
//!
//! Init behaviour: `TEST_LAMBDA_INIT_COUNTER=<file>` counts process starts in that file and
//! `TEST_LAMBDA_FAILING_INITS=N` makes the first N starts exit before polling;
//! `TEST_LAMBDA_POST_INIT_ERROR=1` reports an init error through the Runtime API and then hangs.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_http::RequestExt;
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use serde_json::{Value, json};

/// A handler error with a chosen `errorType`, the way our functions name theirs.
#[derive(Debug)]
struct Failure {
    error_type: String,
    message: String,
}

impl From<Failure> for Diagnostic {
    fn from(failure: Failure) -> Self {
        Diagnostic { error_type: failure.error_type, error_message: failure.message }
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    eprintln!("test-lambda: pid {} starting", std::process::id());
    if let Ok(counter) = std::env::var("TEST_LAMBDA_INIT_COUNTER") {
        // The host runs one process per function at a time, so read-modify-write is safe.
        let starts = std::fs::read_to_string(&counter).ok().and_then(|s| s.trim().parse::<u64>().ok()).unwrap_or(0) + 1;
        std::fs::write(&counter, starts.to_string())?;
        let failing: u64 = std::env::var("TEST_LAMBDA_FAILING_INITS").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
        if starts <= failing {
            eprintln!("test-lambda: init {starts} of {failing} failing: exiting before polling");
            std::process::exit(2);
        }
    }
    if std::env::var("TEST_LAMBDA_POST_INIT_ERROR").is_ok() {
        post_init_error()?;
        // A runtime would exit now; hang instead so only the init/error report can tell.
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    match std::env::var("TEST_LAMBDA_MODE").as_deref() {
        Ok("http") => lambda_http::run(lambda_http::service_fn(http)).await,
        _ => lambda_runtime::run(service_fn(event)).await,
    }
}

/// `POST /runtime/init/error` by hand (the runtime crate only does it for SnapStart hooks).
fn post_init_error() -> std::io::Result<()> {
    let api = std::env::var("AWS_LAMBDA_RUNTIME_API").map_err(std::io::Error::other)?;
    let body = r#"{"errorType":"TestInitFailure","errorMessage":"configured to fail init"}"#;
    let mut stream = std::net::TcpStream::connect(&api)?;
    write!(
        stream,
        "POST /2018-06-01/runtime/init/error HTTP/1.1\r\nHost: {api}\r\nContent-Type: application/json\r\n\
         Lambda-Runtime-Function-Error-Type: Runtime.InitError\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    eprintln!("test-lambda: init/error answered {}", answer.lines().next().unwrap_or_default());
    Ok(())
}

async fn event(event: LambdaEvent<Value>) -> Result<Value, Failure> {
    let (payload, context) = event.into_parts();
    let started_ms = now_ms();
    println!("test-lambda: handling {}", context.request_id);
    if let Some(ms) = payload.get("sleep_ms").and_then(Value::as_u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(code) = payload.get("exit").and_then(Value::as_i64) {
        eprintln!("test-lambda: exiting with {code}");
        std::process::exit(code as i32);
    }
    if let Some(error_type) = payload.get("fail").and_then(Value::as_str) {
        return Err(Failure {
            error_type: error_type.to_string(),
            message: format!("asked to fail with {error_type}"),
        });
    }
    if payload.get("env") == Some(&Value::Bool(true)) {
        let env: BTreeMap<String, String> = std::env::vars_os()
            .map(|(k, v)| (k.to_string_lossy().into_owned(), v.to_string_lossy().into_owned()))
            .collect();
        return Ok(json!(env));
    }
    if payload.get("whoami") == Some(&Value::Bool(true)) {
        return Ok(json!({
            "pid": std::process::id(),
            "request_id": context.request_id,
            "deadline_ms": context.deadline,
            "invoked_function_arn": context.invoked_function_arn,
            "trace_id": context.xray_trace_id,
            "function_name": context.env_config.function_name,
            "memory": context.env_config.memory,
            "started_ms": started_ms,
            "finished_ms": now_ms(),
        }));
    }
    Ok(payload)
}

async fn http(request: lambda_http::Request) -> Result<lambda_http::Response<lambda_http::Body>, Failure> {
    let query = request.query_string_parameters();
    if let Some(ms) = query.first("sleep_ms").and_then(|s| s.parse::<u64>().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if query.first("fail").is_some() {
        return Err(Failure { error_type: "HttpHandlerFailed".into(), message: "asked to fail".into() });
    }
    let headers: BTreeMap<String, String> = request
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let (body_kind, body) = match request.body() {
        lambda_http::Body::Empty => ("empty", String::new()),
        lambda_http::Body::Text(text) => ("text", text.clone()),
        // lambda_http decodes `isBase64Encoded` bodies into Binary.
        lambda_http::Body::Binary(bytes) => ("binary", String::from_utf8_lossy(bytes).into_owned()),
        _ => ("other", String::new()),
    };
    let context = serde_json::to_value(request.request_context()).unwrap_or(Value::Null);
    let echo = json!({
        "method": request.method().as_str(),
        "path": request.raw_http_path(),
        "query": request.uri().query().unwrap_or_default(),
        "path_parameters": request.path_parameters().iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
        "headers": headers,
        "body_kind": body_kind,
        "body": body,
        "request_context": context,
    });
    let status = query.first("status").and_then(|s| s.parse::<u16>().ok()).unwrap_or(200);
    let mut response = lambda_http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-test-lambda", "http");
    if let Some(cookie) = query.first("cookie") {
        response = response.header("set-cookie", cookie);
    }
    response
        .body(lambda_http::Body::Text(echo.to_string()))
        .map_err(|e| Failure { error_type: "ResponseBuildFailed".into(), message: e.to_string() })
}
