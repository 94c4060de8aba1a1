//! Adapters: the concrete systems behind the ports.

pub mod anthropic;
pub mod coder;
pub mod dynamodb;
pub mod embedded_browser;
pub mod lightpanda;
pub mod pagerduty;
pub mod senso;
pub mod sfn;
pub mod slack;
pub mod sqlite;
