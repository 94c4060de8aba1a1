//! Adapters: the concrete systems behind the ports.

pub mod dynamodb;
pub mod sfn;
pub mod sqlite;
