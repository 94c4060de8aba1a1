//! Amazon Bedrock Runtime: `InvokeModel` with Anthropic's Messages body (Claude on Bedrock), the
//! planner's and the note fallback's second provider. Behind it plays the same simulated model as
//! the Anthropic simulator ([`super::anthropic`]): the same knobs decide its answers.
//!
//! Hard edges, in the order the simulator checks them (`testkit/CONTRACTS.md`, "Amazon Bedrock Runtime"):
//! - SigV4 only: no `Authorization` header is 403 `MissingAuthenticationTokenException`; a header
//!   that is not a whole `AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…` or a
//!   request without `X-Amz-Date` is 400 `IncompleteSignatureException`; a credential scoped to
//!   another service than `bedrock` is 403 `InvalidSignatureException`. The signature itself is
//!   not verified (any access key is accepted).
//! - The model id (path, percent-encoded; a bare id or an ARN): an id Bedrock does not know is
//!   400 `ValidationException` "The provided model identifier is invalid."; a Claude model that
//!   is served only through an inference profile, called by its bare id, is 400
//!   `ValidationException` (on-demand throughput isn't supported); an end-of-life model is 404
//!   `ResourceNotFoundException`.
//! - The body: `Content-Type: application/json`; JSON; `anthropic_version` =
//!   `bedrock-2023-05-31`, `max_tokens` and `messages` required; keys outside Bedrock's
//!   documented request (`model`, say) and `tool_choice` keys other than `type` and `name` are
//!   400 `ValidationException` "Malformed input request: … extraneous key [...] is not
//!   permitted"; `temperature` with `top_p` on the 4.5 models, thinking with a forced tool and a
//!   forced tool that is not declared are 400 `ValidationException`.
//! - Load: [`Knobs::bedrock_throttles`](super::Knobs) calls are answered 429
//!   `ThrottlingException`, then `bedrock_not_ready` with 429 `ModelNotReadyException`, then
//!   `bedrock_unavailable` with 503 `ServiceUnavailableException`.
//! - Errors: the name in `x-amzn-ErrorType` (with Bedrock's `:http://internal.amazon.com/…`
//!   suffix), `{"message": …}` in the body, `x-amzn-RequestId` on every answer.
//! - The answer: 200, `application/json`, the Messages answer (`content` with one `tool_use`
//!   block, `stop_reason: "tool_use"`, `usage`) and Bedrock's `X-Amzn-Bedrock-Input-Token-Count`,
//!   `-Output-Token-Count` and `-Invocation-Latency` headers.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::Arc;

use super::anthropic::{NOTE_TOOL, note_input, plan_input, tool_use_message};
use super::{Sim, header, lock};

/// The `anthropic_version` Bedrock requires in a Claude body.
const ANTHROPIC_VERSION: &str = "bedrock-2023-05-31";

/// The request keys Bedrock documents for Claude's Messages body; any other is refused.
const REQUEST_KEYS: &[&str] = &[
    "anthropic_version",
    "anthropic_beta",
    "max_tokens",
    "system",
    "messages",
    "temperature",
    "top_p",
    "top_k",
    "tools",
    "tool_choice",
    "stop_sequences",
    "thinking",
];

/// Claude models invocable by their bare id (on-demand throughput).
const ON_DEMAND_MODELS: &[&str] =
    &["anthropic.claude-3-haiku-20240307-v1:0", "anthropic.claude-3-5-sonnet-20240620-v1:0"];

/// Claude models served only through a cross-Region inference profile (`us.`, `eu.`, `apac.`,
/// `global.` + the id).
const PROFILE_ONLY_MODELS: &[&str] = &[
    "anthropic.claude-sonnet-4-5-20250929-v1:0",
    "anthropic.claude-haiku-4-5-20251001-v1:0",
    "anthropic.claude-sonnet-4-20250514-v1:0",
    "anthropic.claude-opus-4-1-20250805-v1:0",
];

const PROFILE_PREFIXES: &[&str] = &["us.", "eu.", "apac.", "global."];

/// Models past their end of life.
const RETIRED_MODELS: &[&str] = &["anthropic.claude-v2", "anthropic.claude-instant-v1"];

/// One `InvokeModel` call as the simulator received it (after the signature check).
#[derive(Debug, Clone, serde::Serialize)]
pub struct BedrockInvocation {
    /// The path's model id, decoded.
    pub model_id: String,
    /// The request body, if it was JSON.
    pub body: Value,
    /// The `Authorization` header's credential scope (`AKID/date/region/service/aws4_request`).
    pub credential_scope: String,
    pub status: u16,
}

/// An error answer as Bedrock sends it.
struct Refusal {
    status: StatusCode,
    name: &'static str,
    message: String,
}

fn refusal(status: StatusCode, name: &'static str, message: impl Into<String>) -> Refusal {
    Refusal { status, name, message: message.into() }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (
            self.status,
            [
                ("content-type", "application/json".to_string()),
                // Bedrock appends its internal namespace; clients keep what precedes the ':'.
                ("x-amzn-errortype", format!("{}:http://internal.amazon.com/coral/com.amazon.bedrock/", self.name)),
                ("x-amzn-requestid", uuid::Uuid::new_v4().to_string()),
            ],
            json!({ "message": self.message }).to_string(),
        )
            .into_response()
    }
}

fn malformed(what: &str) -> Refusal {
    refusal(
        StatusCode::BAD_REQUEST,
        "ValidationException",
        format!("Malformed input request: {what}, please reformat your input and try again."),
    )
}

/// The SigV4 `Authorization` header's credential scope, or Bedrock's refusal.
fn signed_scope(h: &HeaderMap) -> Result<String, Refusal> {
    let Some(auth) = header(h, "authorization") else {
        return Err(refusal(
            StatusCode::FORBIDDEN,
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        ));
    };
    let incomplete = |why: &str| refusal(StatusCode::BAD_REQUEST, "IncompleteSignatureException", why);
    let Some(fields) = auth.strip_prefix("AWS4-HMAC-SHA256 ") else {
        return Err(incomplete("Authorization header requires the AWS4-HMAC-SHA256 algorithm."));
    };
    let field = |name: &str| {
        fields.split(',').map(str::trim).find_map(|f| f.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
    };
    let (Some(credential), Some(signed), Some(signature)) =
        (field("Credential"), field("SignedHeaders"), field("Signature"))
    else {
        return Err(incomplete(
            "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters.",
        ));
    };
    let scope: Vec<&str> = credential.split('/').collect();
    let signed: Vec<&str> = signed.split(';').collect();
    if scope.len() != 5
        || scope[4] != "aws4_request"
        || signature.len() != 64
        || !signature.chars().all(|c| c.is_ascii_hexdigit())
        || !signed.contains(&"host")
        || !signed.contains(&"x-amz-date")
        || header(h, "x-amz-date").is_none()
    {
        return Err(incomplete(
            "The request signature is incomplete: a credential scope, the host and X-Amz-Date signed, a signature.",
        ));
    }
    if scope[3] != "bedrock" {
        return Err(refusal(
            StatusCode::FORBIDDEN,
            "InvalidSignatureException",
            format!("Credential should be scoped to correct service: 'bedrock'. (got '{}')", scope[3]),
        ));
    }
    Ok(credential.to_string())
}

/// The model behind a path's model id (a bare id, an inference profile id, or an ARN of either),
/// or Bedrock's refusal.
fn resolve_model(model_id: &str) -> Result<String, Refusal> {
    let id = model_id.rsplit('/').next().unwrap_or(model_id);
    if RETIRED_MODELS.contains(&id) {
        return Err(refusal(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            "This model version has reached the end of its life. Please refer to the AWS documentation for more details.",
        ));
    }
    if ON_DEMAND_MODELS.contains(&id) {
        return Ok(id.to_string());
    }
    if PROFILE_ONLY_MODELS.contains(&id) {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            "ValidationException",
            format!(
                "Invocation of model ID {id} with on-demand throughput isn't supported. Retry your request with the ID or ARN of an inference profile that contains this model."
            ),
        ));
    }
    let profiled = PROFILE_PREFIXES.iter().find_map(|p| id.strip_prefix(p)).filter(|m| PROFILE_ONLY_MODELS.contains(m));
    profiled.map(str::to_string).ok_or_else(|| {
        refusal(StatusCode::BAD_REQUEST, "ValidationException", "The provided model identifier is invalid.")
    })
}

/// A Claude Messages body as Bedrock's schema takes it, or the refusal.
fn check_body(model: &str, v: &Value) -> Result<(), Refusal> {
    let Some(object) = v.as_object() else { return Err(malformed("#: expected type: JSONObject")) };
    if let Some(extra) = object.keys().find(|k| !REQUEST_KEYS.contains(&k.as_str())) {
        return Err(malformed(&format!("#: extraneous key [{extra}] is not permitted")));
    }
    for required in ["anthropic_version", "max_tokens", "messages"] {
        if !object.contains_key(required) {
            return Err(malformed(&format!("#: required key [{required}] not found")));
        }
    }
    if v["anthropic_version"] != ANTHROPIC_VERSION {
        return Err(refusal(StatusCode::BAD_REQUEST, "ValidationException", "Invalid API version"));
    }
    if v["max_tokens"].as_u64().is_none_or(|n| n < 1) {
        return Err(malformed("#/max_tokens: expected minimum value: 1"));
    }
    let has_messages = v["messages"].as_array().is_some_and(|m| {
        !m.is_empty()
            && m.iter().all(|m| matches!(m["role"].as_str(), Some("user" | "assistant")) && !m["content"].is_null())
    });
    if !has_messages {
        return Err(malformed("#/messages: expected at least one message with role user or assistant and content"));
    }
    if let Some(choice) = v.get("tool_choice") {
        let Some(choice) = choice.as_object() else {
            return Err(malformed("#/tool_choice: expected type: JSONObject"));
        };
        if let Some(extra) = choice.keys().find(|k| !matches!(k.as_str(), "type" | "name")) {
            return Err(malformed(&format!("#/tool_choice: extraneous key [{extra}] is not permitted")));
        }
        if choice.get("type").and_then(Value::as_str) == Some("tool") {
            let name = choice.get("name").and_then(Value::as_str).unwrap_or_default();
            let declared = v["tools"].as_array().is_some_and(|t| t.iter().any(|t| t["name"] == name));
            if !declared {
                return Err(refusal(
                    StatusCode::BAD_REQUEST,
                    "ValidationException",
                    format!("tool_choice names the tool {name:?}, which is not in tools"),
                ));
            }
            if v.get("thinking").is_some() {
                return Err(refusal(
                    StatusCode::BAD_REQUEST,
                    "ValidationException",
                    "Thinking may not be enabled when tool_choice forces tool use.",
                ));
            }
        }
    }
    let four_five = model.contains("sonnet-4-5") || model.contains("haiku-4-5");
    if four_five && object.contains_key("temperature") && object.contains_key("top_p") {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            "ValidationException",
            "`temperature` and `top_p` cannot both be specified for this model. Please use only one.",
        ));
    }
    Ok(())
}

/// The next scripted load refusal, if any knob still has one.
fn load_refusal(sim: &Sim) -> Option<Refusal> {
    let mut knobs = lock(&sim.knobs);
    if knobs.bedrock_throttles > 0 {
        knobs.bedrock_throttles -= 1;
        return Some(refusal(
            StatusCode::TOO_MANY_REQUESTS,
            "ThrottlingException",
            "Too many requests, please wait before trying again.",
        ));
    }
    if knobs.bedrock_not_ready > 0 {
        knobs.bedrock_not_ready -= 1;
        return Some(refusal(
            StatusCode::TOO_MANY_REQUESTS,
            "ModelNotReadyException",
            "Model is not ready to serve inference requests. The AWS SDK will automatically retry the operation.",
        ));
    }
    if knobs.bedrock_unavailable > 0 {
        knobs.bedrock_unavailable -= 1;
        return Some(refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailableException",
            "Bedrock is unable to process your request.",
        ));
    }
    None
}

/// `POST /model/{modelId}/invoke`: the contract of the module doc, checked in that order; then
/// the simulated model answers the forced tool call (`submit_remediation_plan` as
/// [`super::PlannerMode`] decides, `submit_note_fields` as [`super::NoteReaderMode`] decides).
pub(super) async fn bedrock_invoke(
    State(sim): State<Arc<Sim>>,
    Path(model_id): Path<String>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/model/{model_id}/invoke");
    let scope = match signed_scope(&h) {
        Ok(scope) => scope,
        Err(refused) => {
            sim.record("bedrock", "POST", &path, refused.status.as_u16());
            return refused.into_response();
        }
    };
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let answer = answer(&sim, &model_id, &h, parsed.as_ref()).unwrap_or_else(IntoResponse::into_response);
    let status = answer.status().as_u16();
    sim.record("bedrock", "POST", &path, status);
    lock(&sim.bedrock).push(BedrockInvocation {
        model_id,
        body: parsed.unwrap_or(Value::Null),
        credential_scope: scope,
        status,
    });
    answer
}

fn answer(sim: &Sim, model_id: &str, h: &HeaderMap, body: Option<&Value>) -> Result<Response, Refusal> {
    let model = resolve_model(model_id)?;
    if !header(h, "content-type").is_some_and(|c| c.starts_with("application/json")) {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            "ValidationException",
            "Claude models take Content-Type application/json.",
        ));
    }
    let Some(v) = body else { return Err(malformed("#: the body is not JSON")) };
    check_body(&model, v)?;
    if let Some(refused) = load_refusal(sim) {
        return Err(refused);
    }
    let prompt = v.pointer("/messages/0/content").and_then(Value::as_str).unwrap_or_default();
    let (tool, input, output_tokens) = if v.pointer("/tool_choice/name").and_then(Value::as_str) == Some(NOTE_TOOL) {
        (NOTE_TOOL, note_input(sim, prompt), 60)
    } else {
        ("submit_remediation_plan", plan_input(sim, v, prompt), 180)
    };
    let message = tool_use_message(&model, tool, input, prompt, output_tokens);
    let tokens = |k: &str| message.pointer(&format!("/usage/{k}")).and_then(Value::as_u64).unwrap_or(0).to_string();
    Ok((
        StatusCode::OK,
        [
            ("content-type", "application/json".to_string()),
            ("x-amzn-requestid", uuid::Uuid::new_v4().to_string()),
            ("x-amzn-bedrock-input-token-count", tokens("input_tokens")),
            ("x-amzn-bedrock-output-token-count", tokens("output_tokens")),
            ("x-amzn-bedrock-invocation-latency", "412".to_string()),
        ],
        message.to_string(),
    )
        .into_response())
}
