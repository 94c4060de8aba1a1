//! `selfheal`: the local engine, simulators and operator verbs.

use selfheal_cli::commands;

use clap::Parser;

/// The local engine keeps every execution's record and history in this process; with glibc's
/// allocator its cost per transition grew with the heap (BENCHMARKS.md, engine on long
/// executions), with mimalloc it stays flat.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = commands::Cli::parse();
    match commands::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("selfheal: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
