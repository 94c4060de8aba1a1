//! One test binary for the black-box tests that share no process-wide state (one link instead
//! of one per file). The four files beside this folder stay binaries of their own: they set a
//! panic hook, the process environment or capture every log line, which would see the others.
//! `../deployed/` holds the tests that start a whole emulated stack, and `../intake_approvals.rs`
//! the webhook load tests (a thousand deliveries at 32-way against the shared moto), which
//! must not share the two cores with the suite's CPU-heavy tests.

mod adapters;
mod adversarial;
mod bedrock;
mod coder_template;
mod durability;
mod edge_limits;
mod engine_callbacks;
mod execution_gate;
mod faults;
mod knowledge;
mod lambda_events;
mod metrics_emf;
mod narration;
mod notes;
mod properties;
mod report;
mod scenarios;
mod sfn_api;
mod state_machine_mocks;
mod step_functions_adapter;
mod store_contract;
mod template_ops;
mod unobserved_baseline;
mod verification;
