//! Lambda: Slack interactivity callbacks (API Gateway HTTP API).

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    selfheal::lambda::run_http(selfheal::lambda::HttpEntry::SlackInteraction).await
}
