//! Lambda: the cleric stage of the incident state machine (see `selfheal::stages`).

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    selfheal::lambda::run_stage(selfheal::stages::Function::Cleric).await
}
