//! selfheal: a self-healing incident engine.
//!
//! The library holds everything with logic in it: the domain, the stage handlers, the ports
//! (traits) they depend on, the adapters behind those ports, the confidence policy, webhook
//! signature verification and the local engine. Lambda binaries and the `selfheal` CLI only
//! wire configuration and clients, then call into this crate.

pub mod adapters;
pub mod aws;
pub mod budget;
pub mod config;
pub mod domain;
#[cfg(feature = "local")]
pub mod engine;
pub mod error;
pub mod http;
pub mod lambda;
pub mod notes;
pub mod policy;
pub mod ports;
pub mod runbooks;
pub mod secrets;
pub mod signature;
pub mod stages;
pub mod store;
pub mod telemetry;
pub mod wiring;

/// Lowercase hex SHA-256 of `bytes` (payload hashes, plan hashes, fingerprints).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
