//! Adapters: the concrete systems behind the ports.

pub mod anthropic;
#[cfg(feature = "bedrock")]
pub mod bedrock;
pub mod coder;
pub mod dynamodb;
#[cfg(feature = "browser")]
pub mod embedded_browser;
#[cfg(feature = "browser")]
pub mod lightpanda;
pub mod memory;
pub mod pagerduty;
pub mod senso;
#[cfg(feature = "orchestrator")]
pub mod sfn;
pub mod slack;
#[cfg(feature = "local")]
pub mod sqlite;
