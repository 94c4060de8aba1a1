//! The `selfheal` binary and the CLI library, tested from outside: one test binary, one link.

mod conventions;
mod crash_safety;
mod example_config;
mod operator_plane;
mod parse_note;
mod replay_webhook;
mod secret_sources;
mod serve;
mod serve_limits;
mod state_machine_verbs;
mod terminal_output;
mod verify_signature;
mod workspaces_gc;
