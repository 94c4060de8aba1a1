//! Command-line verbs. Each verb parses its arguments and calls into the `selfheal` library.

use clap::{Parser, Subcommand, ValueEnum};
use std::io::Read;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "selfheal",
    version,
    about = "Self-healing incident engine: local engine, simulators and operator verbs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Provider {
    Pagerduty,
    Slack,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check a webhook signature over the body read from stdin. Exit 0 when valid, 1 when not.
    VerifySignature {
        #[arg(long, value_enum)]
        provider: Provider,
        /// Signing secret; repeat for PagerDuty secret rotation.
        #[arg(long = "secret", required = true)]
        secrets: Vec<String>,
        /// The signature header value (`v1=…[,v1=…]` or `v0=…`).
        #[arg(long)]
        signature: String,
        /// Slack only: the X-Slack-Request-Timestamp value.
        #[arg(long)]
        timestamp: Option<String>,
        /// Slack only: evaluate the 5-minute window at this Unix time (default: now).
        #[arg(long)]
        at: Option<i64>,
    },
}

pub async fn run(cli: Cli) -> Result<ExitCode, String> {
    match cli.command {
        Command::VerifySignature {
            provider,
            secrets,
            signature,
            timestamp,
            at,
        } => {
            let mut body = Vec::new();
            std::io::stdin()
                .read_to_end(&mut body)
                .map_err(|e| format!("cannot read body from stdin: {e}"))?;
            let result = match provider {
                Provider::Pagerduty => {
                    if timestamp.is_some() || at.is_some() {
                        return Err("--timestamp and --at apply to --provider slack only".into());
                    }
                    selfheal::signature::verify_pagerduty(&secrets, Some(&signature), &body)
                }
                Provider::Slack => {
                    if secrets.len() != 1 {
                        return Err("--provider slack takes exactly one --secret".into());
                    }
                    let now = at.unwrap_or_else(|| chrono::Utc::now().timestamp());
                    selfheal::signature::verify_slack(
                        secrets[0].as_bytes(),
                        timestamp.as_deref(),
                        Some(&signature),
                        &body,
                        now,
                    )
                }
            };
            match result {
                Ok(()) => {
                    println!("valid");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("invalid: {e}");
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}
