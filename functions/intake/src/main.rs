//! Lambda: PagerDuty v3 webhooks (API Gateway HTTP API).

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    selfheal::lambda::run_http(selfheal::lambda::HttpEntry::PagerDutyWebhook).await
}
