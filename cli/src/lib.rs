//! The `selfheal` binary's library: local engine assembly, simulators, the demo and the verbs.

pub mod commands;
pub mod demo;
pub mod demo_deployed;
pub mod demo_service;
pub mod faults;
pub mod local;
pub mod operator;
pub mod report;
pub mod server;
pub mod sim;
pub mod stack;
pub mod stats;
