//! `selfheal`: the local engine, simulators and operator verbs.

use selfheal_cli::commands;

use clap::Parser;

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
