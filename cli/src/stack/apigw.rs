//! An API Gateway HTTP API (payload format 2.0) in front of the Lambda host: requests become
//! the v2 event API Gateway sends a Lambda proxy integration, and the function's result becomes
//! the HTTP response, with API Gateway's own error answers (404 no route, 500 function error,
//! 503 integration timeout).
//!
//! What our functions depend on, and so what this keeps exact: header names lower-cased and
//! repeated headers joined with `,`; cookies moved to `cookies`; the body base64-encoded unless
//! its content type is textual (Slack's `application/x-www-form-urlencoded` arrives base64, see
//! contracts §2.2), because signatures are checked over the exact bytes.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version, request::Parts};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value, json};

use super::ACCOUNT;
use super::lambda::{Invoked, LambdaHost, LambdaHostError};

/// API Gateway's maximum integration timeout for HTTP APIs.
pub const INTEGRATION_TIMEOUT: Duration = Duration::from_secs(29);

/// API Gateway's request payload limit (10 MB).
pub const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;

/// One route of the HTTP API: `method` (`POST`, …, or `ANY`) and `path` (`/webhooks/pagerduty`,
/// with `{param}` / `{proxy+}` segments, or `$default`), integrated with a Lambda function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRoute {
    pub method: String,
    pub path: String,
    /// Function name or ARN.
    pub function: String,
}

/// Serve an HTTP API (payload format 2.0) on 127.0.0.1:0; returns the base URL and the server
/// task (abort it to stop serving).
pub async fn serve(
    routes: Vec<HttpRoute>,
    host: Arc<LambdaHost>,
) -> Result<(String, tokio::task::JoinHandle<()>), LambdaHostError> {
    serve_with_timeout(routes, host, INTEGRATION_TIMEOUT).await
}

/// [`serve`] with another integration timeout (API Gateway allows 50 ms to 29 s; tests use a
/// short one).
pub async fn serve_with_timeout(
    routes: Vec<HttpRoute>,
    host: Arc<LambdaHost>,
    timeout: Duration,
) -> Result<(String, tokio::task::JoinHandle<()>), LambdaHostError> {
    let routes = routes
        .into_iter()
        .map(|route| {
            if !host.has_function(&route.function) {
                return Err(LambdaHostError::UnknownFunction(route.function));
            }
            CompiledRoute::new(route)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.map_err(LambdaHostError::Bind)?;
    let addr = listener.local_addr().map_err(LambdaHostError::Bind)?;
    // An API id as API Gateway makes them: ten lower-case alphanumerics.
    let api_id = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
    let gateway = Arc::new(Gateway { routes, host, timeout, api_id, port: addr.port() });
    let router = Router::new().fallback(handle).with_state(gateway);
    let base_url = format!("http://{addr}");
    tracing::info!(url = %base_url, "HTTP API serving");
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>()).await {
            tracing::warn!(error = %e, "HTTP API server failed");
        }
    });
    Ok((base_url, task))
}

struct Gateway {
    routes: Vec<CompiledRoute>,
    host: Arc<LambdaHost>,
    timeout: Duration,
    api_id: String,
    port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
    /// `{name+}`: the rest of the path, one segment or more.
    Greedy(String),
}

#[derive(Debug)]
struct CompiledRoute {
    /// Upper-cased; `ANY` matches every method.
    method: String,
    /// None: the `$default` route.
    segments: Option<Vec<Segment>>,
    route_key: String,
    function: String,
}

/// How specific a match is: (exact path 2 / greedy 1 / `$default` 0, literal segments, method
/// named rather than `ANY`); the highest wins.
type Rank = (u8, usize, bool);

/// A route that matched, with its path parameters.
#[derive(Debug)]
struct Matched<'a> {
    route: &'a CompiledRoute,
    path_parameters: BTreeMap<String, String>,
}

impl CompiledRoute {
    fn new(route: HttpRoute) -> Result<Self, LambdaHostError> {
        let method = route.method.to_ascii_uppercase();
        if route.path == "$default" {
            return Ok(Self { method, segments: None, route_key: "$default".into(), function: route.function });
        }
        let invalid = || LambdaHostError::InvalidRoute(format!("{} {}", route.method, route.path));
        let Some(rest) = route.path.strip_prefix('/') else { return Err(invalid()) };
        let parts: Vec<&str> = rest.split('/').collect();
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let segment = match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(name) => match name.strip_suffix('+') {
                    // A greedy variable must be the last segment.
                    Some(name) if i + 1 == parts.len() && !name.is_empty() => Segment::Greedy(name.to_string()),
                    Some(_) => return Err(invalid()),
                    None if !name.is_empty() => Segment::Param(name.to_string()),
                    None => return Err(invalid()),
                },
                None => Segment::Literal(part.to_string()),
            };
            segments.push(segment);
        }
        let route_key = format!("{method} {}", route.path);
        Ok(Self { method, segments: Some(segments), route_key, function: route.function })
    }

    /// Path parameters if `method path` matches, and how specific the match is (API Gateway
    /// prefers the most specific route: literals over variables over greedy, and `$default`
    /// last).
    fn matches(&self, method: &str, path: &str) -> Option<(Rank, BTreeMap<String, String>)> {
        if self.method != "ANY" && self.method != method {
            return None;
        }
        let exact_method = self.method != "ANY";
        let Some(segments) = &self.segments else { return Some(((0, 0, exact_method), BTreeMap::new())) };
        let parts: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
        let mut params = BTreeMap::new();
        let mut literals = 0;
        for (i, segment) in segments.iter().enumerate() {
            match segment {
                Segment::Literal(lit) => {
                    if parts.get(i) != Some(&lit.as_str()) {
                        return None;
                    }
                    literals += 1;
                }
                Segment::Param(name) => {
                    let value = parts.get(i).filter(|p| !p.is_empty())?;
                    params.insert(name.clone(), (*value).to_string());
                }
                Segment::Greedy(name) => {
                    let rest = parts.get(i..).map(|r| r.join("/")).filter(|r| !r.is_empty())?;
                    params.insert(name.clone(), rest);
                    return Some(((1, literals, exact_method), params));
                }
            }
        }
        (parts.len() == segments.len()).then_some(((2, literals, exact_method), params))
    }
}

impl Gateway {
    fn route(&self, method: &str, path: &str) -> Option<Matched<'_>> {
        self.routes
            .iter()
            .filter_map(|route| route.matches(method, path).map(|(rank, params)| (rank, route, params)))
            .max_by_key(|(rank, _, _)| *rank)
            .map(|(_, route, path_parameters)| Matched { route, path_parameters })
    }
}

/// API Gateway's own answers: `{"message": …}`.
fn message(status: StatusCode, message: &str, request_id: &str) -> Response {
    with_request_id((status, axum::Json(json!({ "message": message }))).into_response(), request_id)
}

fn with_request_id(mut response: Response, request_id: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert(HeaderName::from_static("apigw-requestid"), value);
    }
    response
}

async fn handle(
    State(gateway): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    // API Gateway's request ids look like `JKJaXmPLvHcESHA=`.
    let request_id = BASE64.encode(&uuid::Uuid::new_v4().as_bytes()[..11]);
    let (parts, body) = request.into_parts();
    let Some(matched) = gateway.route(parts.method.as_str(), parts.uri.path()) else {
        return message(StatusCode::NOT_FOUND, "Not Found", &request_id);
    };
    let body = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(_) => return message(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large", &request_id),
    };
    let context = EventContext {
        api_id: &gateway.api_id,
        request_id: &request_id,
        port: gateway.port,
        peer: peer.ip(),
        now: chrono::Utc::now(),
    };
    let event = build_event(&matched, &parts, &body, &context);
    let function = &matched.route.function;
    let started = std::time::Instant::now();
    // The invocation carries on if we stop waiting (the host runs it on its own task), as a
    // Lambda function does after API Gateway has given up on it.
    let result = tokio::time::timeout(gateway.timeout, gateway.host.invoke(function, &event)).await;
    tracing::debug!(
        route = %matched.route.route_key,
        function = %function,
        ms = started.elapsed().as_millis() as u64,
        "HTTP API request"
    );
    match result {
        Err(_) => {
            tracing::warn!(route = %matched.route.route_key, function = %function, "integration timed out");
            message(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable", &request_id)
        }
        Ok(Ok(Invoked::Ok(result))) => match to_http_response(&result) {
            Ok(response) => with_request_id(response, &request_id),
            Err(why) => {
                tracing::warn!(function = %function, %why, "malformed Lambda proxy response");
                message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error", &request_id)
            }
        },
        Ok(Ok(Invoked::FunctionError { error_type, error_message })) => {
            tracing::warn!(function = %function, %error_type, %error_message, "function error behind the HTTP API");
            message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error", &request_id)
        }
        Ok(Err(LambdaHostError::PayloadTooLarge { .. })) => {
            message(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large", &request_id)
        }
        Ok(Err(e)) => {
            tracing::warn!(function = %function, error = %e, "cannot invoke the integration");
            message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error", &request_id)
        }
    }
}

/// What the event needs besides the request itself.
struct EventContext<'a> {
    api_id: &'a str,
    request_id: &'a str,
    /// The port the API listens on (`x-forwarded-port`).
    port: u16,
    peer: IpAddr,
    now: chrono::DateTime<chrono::Utc>,
}

/// Whether API Gateway passes a body of this content type as a string rather than base64:
/// text/*, JSON, XML and JavaScript (verified against AWS, contracts §2.2); everything else,
/// including forms and a missing content type, is base64.
fn is_text(content_type: Option<&str>) -> bool {
    let Some(content_type) = content_type else { return false };
    let mime = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    mime.starts_with("text/")
        || matches!(mime.as_str(), "application/json" | "application/xml" | "application/javascript")
}

fn header_text(value: &HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes()).into_owned()
}

/// The payload format 2.0 event for one request.
fn build_event(matched: &Matched<'_>, parts: &Parts, body: &[u8], context: &EventContext<'_>) -> Value {
    let headers = &parts.headers;
    let path = parts.uri.path();
    let raw_query = parts.uri.query().unwrap_or_default();

    // Cookie headers become `cookies`, one entry per cookie.
    let cookies: Vec<String> = headers
        .get_all("cookie")
        .iter()
        .flat_map(|v| header_text(v).split(';').map(|c| c.trim().to_string()).collect::<Vec<_>>())
        .filter(|c| !c.is_empty())
        .collect();

    // Header names are already lower-case in `HeaderMap`; repeated headers are joined with ",".
    let mut event_headers = Map::new();
    for name in headers.keys() {
        if name == "cookie" {
            continue;
        }
        let joined = headers.get_all(name).iter().map(header_text).collect::<Vec<_>>().join(",");
        event_headers.insert(name.as_str().to_string(), Value::String(joined));
    }
    // What API Gateway adds on its way to the integration.
    let peer = context.peer.to_string();
    let forwarded_for = match event_headers.get("x-forwarded-for").and_then(Value::as_str) {
        Some(chain) => format!("{chain}, {peer}"),
        None => peer.clone(),
    };
    event_headers.insert("x-forwarded-for".into(), forwarded_for.into());
    event_headers.insert("x-forwarded-port".into(), context.port.to_string().into());
    event_headers.insert("x-forwarded-proto".into(), "http".into());
    event_headers.entry("x-amzn-trace-id").or_insert_with(|| {
        format!("Root=1-{:08x}-{}", context.now.timestamp(), &uuid::Uuid::new_v4().simple().to_string()[..24]).into()
    });

    // Repeated query parameters are joined with "," as well.
    let mut query: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if let Ok(pairs) = serde_urlencoded::from_str::<Vec<(String, String)>>(raw_query) {
        for (key, value) in pairs {
            query.entry(key).or_default().push(value);
        }
    }

    let domain_name = headers
        .get("host")
        .map(header_text)
        .unwrap_or_else(|| format!("{}.execute-api.{}.amazonaws.com", context.api_id, super::REGION));
    let protocol = match parts.version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    };
    let user_agent = headers.get("user-agent").map(header_text).unwrap_or_default();

    let mut event = json!({
        "version": "2.0",
        "routeKey": matched.route.route_key,
        "rawPath": path,
        "rawQueryString": raw_query,
        "headers": event_headers,
        "requestContext": {
            "accountId": ACCOUNT,
            "apiId": context.api_id,
            "domainName": domain_name,
            "domainPrefix": domain_name.split('.').next().unwrap_or_default(),
            "http": {
                "method": parts.method.as_str(),
                "path": path,
                "protocol": protocol,
                "sourceIp": peer,
                "userAgent": user_agent,
            },
            "requestId": context.request_id,
            "routeKey": matched.route.route_key,
            "stage": "$default",
            "time": context.now.format("%d/%b/%Y:%H:%M:%S %z").to_string(),
            "timeEpoch": context.now.timestamp_millis(),
        },
        "isBase64Encoded": false,
    });
    // Absent rather than empty, as API Gateway sends them.
    if !cookies.is_empty() {
        event["cookies"] = json!(cookies);
    }
    if !query.is_empty() {
        let joined: Map<String, Value> = query.into_iter().map(|(k, v)| (k, Value::String(v.join(",")))).collect();
        event["queryStringParameters"] = Value::Object(joined);
    }
    if !matched.path_parameters.is_empty() {
        event["pathParameters"] = json!(matched.path_parameters);
    }
    if !body.is_empty() {
        let content_type = headers.get("content-type").and_then(|v| v.to_str().ok());
        match std::str::from_utf8(body) {
            Ok(text) if is_text(content_type) => event["body"] = Value::String(text.to_string()),
            // Binary, form-encoded, unlabelled, or "text" that is not UTF-8: the bytes survive
            // only as base64.
            _ => {
                event["body"] = Value::String(BASE64.encode(body));
                event["isBase64Encoded"] = Value::Bool(true);
            }
        }
    }
    event
}

/// The function's result as the HTTP response: the v2 response object (`statusCode`, `headers`,
/// `cookies`, `body`, `isBase64Encoded`), or, for any other JSON (the format's shorthand), a 200
/// with that JSON as the body. `Err` says why the result is malformed (API Gateway answers 500).
fn to_http_response(result: &Value) -> Result<Response, String> {
    let Some(object) = result.as_object().filter(|o| o.contains_key("statusCode")) else {
        let mut response = Response::new(Body::from(result.to_string()));
        response.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
        return Ok(response);
    };
    let status = object
        .get("statusCode")
        .and_then(Value::as_u64)
        .and_then(|code| u16::try_from(code).ok())
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or_else(|| format!("statusCode {} is not an HTTP status", object["statusCode"]))?;

    let mut headers = HeaderMap::new();
    for (name, value) in object.get("headers").and_then(Value::as_object).into_iter().flatten() {
        let value = match value {
            Value::String(s) => s.clone(),
            Value::Null => continue,
            other => other.to_string(),
        };
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| format!("header name {name:?}: {e}"))?;
        let value = HeaderValue::from_str(&value).map_err(|e| format!("header {name} value: {e}"))?;
        headers.insert(name, value);
    }
    for cookie in object.get("cookies").and_then(Value::as_array).into_iter().flatten() {
        let Some(cookie) = cookie.as_str() else { return Err(format!("cookie {cookie} is not a string")) };
        let value = HeaderValue::from_str(cookie).map_err(|e| format!("cookie value: {e}"))?;
        headers.append("set-cookie", value);
    }

    let base64 = object.get("isBase64Encoded").and_then(Value::as_bool).unwrap_or(false);
    let body = match object.get("body") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(text)) if base64 => BASE64.decode(text).map_err(|e| format!("body is not base64: {e}"))?,
        Some(Value::String(text)) => text.clone().into_bytes(),
        Some(other) => other.to_string().into_bytes(),
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: &str, path: &str) -> CompiledRoute {
        CompiledRoute::new(HttpRoute { method: method.into(), path: path.into(), function: "f".into() })
            .expect("valid route")
    }

    fn context() -> EventContext<'static> {
        EventContext {
            api_id: "abcdefghij",
            request_id: "JKJaXmPLvHcESHA=",
            port: 8080,
            peer: IpAddr::V4(Ipv4Addr::LOCALHOST),
            now: chrono::DateTime::from_timestamp(1_583_348_638, 0).unwrap(),
        }
    }

    #[test]
    fn the_most_specific_route_wins() {
        let gateway_routes = [
            route("POST", "/items/{id}"),
            route("POST", "/items/special"),
            route("ANY", "/{proxy+}"),
            route("ANY", "$default"),
        ];
        let pick = |method: &str, path: &str| {
            gateway_routes
                .iter()
                .filter_map(|r| r.matches(method, path).map(|(rank, params)| (rank, r.route_key.clone(), params)))
                .max_by_key(|(rank, _, _)| *rank)
                .map(|(_, key, params)| (key, params))
        };
        assert_eq!(pick("POST", "/items/special").map(|m| m.0), Some("POST /items/special".to_string()));
        let (key, params) = pick("POST", "/items/42").unwrap();
        assert_eq!((key.as_str(), params.get("id").map(String::as_str)), ("POST /items/{id}", Some("42")));
        let (key, params) = pick("GET", "/a/b/c").unwrap();
        assert_eq!((key.as_str(), params.get("proxy").map(String::as_str)), ("ANY /{proxy+}", Some("a/b/c")));
        assert_eq!(pick("GET", "/").map(|m| m.0), Some("$default".to_string()));
        assert!(
            CompiledRoute::new(HttpRoute { method: "GET".into(), path: "/{a+}/b".into(), function: "f".into() })
                .is_err()
        );
        assert!(
            CompiledRoute::new(HttpRoute { method: "GET".into(), path: "nope".into(), function: "f".into() }).is_err()
        );
    }

    #[test]
    fn events_follow_payload_format_2() {
        let r = route("POST", "/slack/interactions");
        let matched = Matched { route: &r, path_parameters: BTreeMap::new() };
        let (parts, ()) = axum::http::Request::builder()
            .method("POST")
            .uri("/slack/interactions?a=1&a=2&b=x")
            .header("Host", "127.0.0.1:8080")
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("X-Multi", "one")
            .header("X-Multi", "two")
            .header("Cookie", "c1=v1; c2=v2")
            .body(())
            .unwrap()
            .into_parts();
        let body = b"payload=%7B%22type%22%3A%22block_actions%22%7D";
        let event = build_event(&matched, &parts, body, &context());
        assert_eq!(event["version"], "2.0");
        assert_eq!(event["routeKey"], "POST /slack/interactions");
        assert_eq!(event["rawPath"], "/slack/interactions");
        assert_eq!(event["rawQueryString"], "a=1&a=2&b=x");
        assert_eq!(event["queryStringParameters"], json!({"a": "1,2", "b": "x"}));
        assert_eq!(event["headers"]["x-multi"], "one,two");
        assert_eq!(event["headers"]["content-type"], "application/x-www-form-urlencoded");
        assert!(event["headers"].get("cookie").is_none());
        assert_eq!(event["cookies"], json!(["c1=v1", "c2=v2"]));
        assert_eq!(event["isBase64Encoded"], true);
        assert_eq!(BASE64.decode(event["body"].as_str().unwrap()).unwrap(), body.to_vec());
        assert_eq!(event["requestContext"]["stage"], "$default");
        assert_eq!(event["requestContext"]["http"]["method"], "POST");
        assert_eq!(event["requestContext"]["http"]["sourceIp"], "127.0.0.1");
        assert_eq!(event["requestContext"]["time"], "04/Mar/2020:19:03:58 +0000");
        assert_eq!(event["requestContext"]["timeEpoch"], 1_583_348_638_000i64);
    }

    #[test]
    fn json_bodies_stay_text() {
        let r = route("POST", "/webhooks/pagerduty");
        let matched = Matched { route: &r, path_parameters: BTreeMap::new() };
        let (parts, ()) = axum::http::Request::builder()
            .method("POST")
            .uri("/webhooks/pagerduty")
            .header("content-type", "application/json; charset=utf-8")
            .body(())
            .unwrap()
            .into_parts();
        let event = build_event(&matched, &parts, br#"{"a":1}"#, &context());
        assert_eq!((event["body"].as_str(), &event["isBase64Encoded"]), (Some(r#"{"a":1}"#), &json!(false)));
        assert!(event.get("cookies").is_none() && event.get("queryStringParameters").is_none());
    }

    #[test]
    fn results_map_to_responses() {
        let shorthand = to_http_response(&json!({"ok": true})).unwrap();
        assert_eq!(shorthand.status(), StatusCode::OK);
        let structured = to_http_response(&json!({
            "statusCode": 201,
            "headers": {"x-a": "1", "content-type": "text/plain"},
            "cookies": ["s=1", "t=2"],
            "body": BASE64.encode("hi"),
            "isBase64Encoded": true,
        }))
        .unwrap();
        assert_eq!(structured.status(), StatusCode::CREATED);
        assert_eq!(structured.headers().get_all("set-cookie").iter().count(), 2);
        assert_eq!(structured.headers().get("x-a").map(|v| v.as_bytes()), Some(&b"1"[..]));
        assert!(to_http_response(&json!({"statusCode": 99999})).is_err());
        assert!(to_http_response(&json!({"statusCode": 200, "body": "%%", "isBase64Encoded": true})).is_err());
    }
}
