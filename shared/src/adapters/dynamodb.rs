//! DynamoDB backend of the single table (`pk` / `sk`, TTL on `expires_at`).

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    TimeToLiveSpecification,
};
use serde_json::Value;
use std::collections::HashMap;

use crate::error::StoreError;
use crate::store::{DocTable, StoredDoc};

#[derive(Clone, Debug)]
pub struct DynamoTable {
    client: Client,
    table: String,
}

/// Map SDK failures to what a caller can act on: retry later, or fix configuration.
fn sdk_err<E: ProvideErrorMetadata + std::fmt::Debug>(op: &str, e: SdkError<E, HttpResponse>) -> StoreError {
    match &e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            StoreError::Unavailable(format!("dynamodb {op}: {}", e_kind(&e)))
        }
        SdkError::ServiceError(se) => {
            let code = se.err().code().unwrap_or("Unknown");
            // Any 5xx or 429 is the service's trouble, whatever its body says (a gateway in
            // between may answer with no DynamoDB error code at all).
            let status = se.raw().status().as_u16();
            let retryable = status >= 500
                || status == 429
                || matches!(
                    code,
                    "ProvisionedThroughputExceededException"
                        | "ThrottlingException"
                        | "RequestLimitExceeded"
                        | "InternalServerError"
                        | "ServiceUnavailable"
                        | "TransactionConflictException"
                );
            let msg = format!("dynamodb {op}: {code}: {}", se.err().message().unwrap_or(""));
            if retryable { StoreError::Unavailable(msg) } else { StoreError::Misconfigured(msg) }
        }
        _ => StoreError::Misconfigured(format!("dynamodb {op}: {}", e_kind(&e))),
    }
}

fn e_kind<E, R>(e: &SdkError<E, R>) -> &'static str {
    match e {
        SdkError::ConstructionFailure(_) => "request construction failed",
        SdkError::TimeoutError(_) => "timed out",
        SdkError::DispatchFailure(_) => "dispatch failed",
        SdkError::ResponseError(_) => "unreadable response",
        SdkError::ServiceError(_) => "service error",
        _ => "unknown error",
    }
}

fn is_conditional_failure<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    matches!(e, SdkError::ServiceError(se) if se.err().code() == Some("ConditionalCheckFailedException"))
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}
fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn parse_item(item: &HashMap<String, AttributeValue>) -> Result<(String, StoredDoc), StoreError> {
    let key = || {
        format!(
            "{}/{}",
            item.get("pk").and_then(|v| v.as_s().ok()).map(String::as_str).unwrap_or("?"),
            item.get("sk").and_then(|v| v.as_s().ok()).map(String::as_str).unwrap_or("?")
        )
    };
    let corrupt = |why: &str| StoreError::Corrupt { key: key(), why: why.to_string() };
    let sk = item.get("sk").and_then(|v| v.as_s().ok()).ok_or_else(|| corrupt("missing sk"))?.clone();
    let rev = item
        .get("rev")
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| corrupt("missing or bad rev"))?;
    let doc_text = item.get("doc").and_then(|v| v.as_s().ok()).ok_or_else(|| corrupt("missing doc"))?;
    let doc: Value = serde_json::from_str(doc_text).map_err(|e| corrupt(&e.to_string()))?;
    let expires_at = item.get("expires_at").and_then(|v| v.as_n().ok()).and_then(|v| v.parse::<i64>().ok());
    Ok((sk, StoredDoc { doc, rev, expires_at }))
}

fn live(doc: &StoredDoc, now: i64) -> bool {
    doc.expires_at.is_none_or(|e| e >= now)
}

impl DynamoTable {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    pub fn table_name(&self) -> &str {
        &self.table
    }

    /// Create the table with the key schema `template.yaml` declares (for tests and local
    /// set-ups; the deployed stack creates it through CloudFormation).
    pub async fn create_table(client: &Client, table: &str) -> Result<(), StoreError> {
        client
            .create_table()
            .table_name(table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("pk")
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .map_err(|e| StoreError::Misconfigured(e.to_string()))?,
            )
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("sk")
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .map_err(|e| StoreError::Misconfigured(e.to_string()))?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("pk")
                    .key_type(KeyType::Hash)
                    .build()
                    .map_err(|e| StoreError::Misconfigured(e.to_string()))?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("sk")
                    .key_type(KeyType::Range)
                    .build()
                    .map_err(|e| StoreError::Misconfigured(e.to_string()))?,
            )
            .send()
            .await
            .map_err(|e| sdk_err("CreateTable", e))?;
        client
            .update_time_to_live()
            .table_name(table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name("expires_at")
                    .enabled(true)
                    .build()
                    .map_err(|e| StoreError::Misconfigured(e.to_string()))?,
            )
            .send()
            .await
            .map_err(|e| sdk_err("UpdateTimeToLive", e))?;
        Ok(())
    }
}

#[async_trait]
impl DocTable for DynamoTable {
    async fn get(&self, pk: &str, sk: &str, now: i64) -> Result<Option<StoredDoc>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_err("GetItem", e))?;
        match out.item() {
            Some(item) => {
                let (_, doc) = parse_item(item)?;
                Ok(live(&doc, now).then_some(doc))
            }
            None => Ok(None),
        }
    }

    async fn put_if(
        &self,
        pk: &str,
        sk: &str,
        doc: &Value,
        expected_rev: Option<u64>,
        expires_at: Option<i64>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let rev = expected_rev.map_or(1, |r| r + 1);
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(pk))
            .item("sk", s(sk))
            .item("rev", n(rev))
            .item("doc", s(doc.to_string()));
        if let Some(exp) = expires_at {
            req = req.item("expires_at", n(exp));
        }
        req = match expected_rev {
            None => req
                .condition_expression(
                    "attribute_not_exists(pk) OR (attribute_exists(expires_at) AND expires_at < :now)",
                )
                .expression_attribute_values(":now", n(now)),
            Some(r) => req.condition_expression("rev = :rev").expression_attribute_values(":rev", n(r)),
        };
        match req.send().await {
            Ok(_) => Ok(true),
            Err(e) if is_conditional_failure(&e) => Ok(false),
            Err(e) => Err(sdk_err("PutItem", e)),
        }
    }

    async fn query(
        &self,
        pk: &str,
        sk_from: &str,
        sk_to: &str,
        now: i64,
    ) -> Result<Vec<(String, StoredDoc)>, StoreError> {
        let mut out = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :a AND :b")
                .expression_attribute_values(":pk", s(pk))
                .expression_attribute_values(":a", s(sk_from))
                .expression_attribute_values(":b", s(sk_to))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_err("Query", e))?;
            for item in page.items() {
                let (sk, doc) = parse_item(item)?;
                if live(&doc, now) {
                    out.push((sk, doc));
                }
            }
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        Ok(out)
    }
}
