//! A transport-neutral HTTP request/response, so the same handlers serve API Gateway (through
//! `lambda_http`) and the local server (axum).

use serde_json::{Value, json};

#[derive(Debug, Clone, Default)]
pub struct HttpRequest {
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The raw body bytes, exactly as signed (base64 already decoded).
    pub body: Vec<u8>,
}

impl HttpRequest {
    pub fn new(headers: impl IntoIterator<Item = (String, String)>, body: Vec<u8>) -> Self {
        Self { headers: headers.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect(), body }
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpResponse {
    pub status: u16,
    pub body: Value,
}

impl HttpResponse {
    pub fn json(status: u16, body: Value) -> Self {
        Self { status, body }
    }
    pub fn message(status: u16, message: &str) -> Self {
        Self { status, body: json!({ "message": message }) }
    }
}

/// Convert an API Gateway (HTTP API, payload v2) request: `lambda_http` already decodes
/// base64 bodies into binary, so the bytes here are the signed bytes.
pub fn from_lambda(req: &lambda_http::Request) -> HttpRequest {
    let headers = req
        .headers()
        .iter()
        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_string(), v.to_string())))
        .collect::<Vec<_>>();
    let body = match req.body() {
        lambda_http::Body::Empty => Vec::new(),
        lambda_http::Body::Text(t) => t.as_bytes().to_vec(),
        lambda_http::Body::Binary(b) => b.clone(),
        _ => Vec::new(),
    };
    HttpRequest::new(headers, body)
}

pub fn to_lambda(resp: HttpResponse) -> lambda_http::Response<lambda_http::Body> {
    lambda_http::Response::builder()
        .status(resp.status)
        .header("content-type", "application/json")
        .body(lambda_http::Body::Text(resp.body.to_string()))
        .unwrap_or_else(|_| lambda_http::Response::new(lambda_http::Body::Text("{}".into())))
}
