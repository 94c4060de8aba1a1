//! Command-line verbs. Each verb parses its arguments and calls into the `selfheal` library.

use clap::{Parser, Subcommand, ValueEnum};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use selfheal::adapters::sqlite::SqliteTable;
use selfheal::engine::{Engine, run_mock_case};
use selfheal::ports::SystemClock;

/// Execution input used by `run-state-machine` when `--input` is not given: what intake starts
/// executions with.
const SAMPLE_INPUT: &str = include_str!("../../statemachine/test/input.json");

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
    /// Run a state machine definition through the local engine with Step Functions Local mocks.
    /// Prints {"status", "path", "output", "execution"}; Waits pass in simulated time.
    RunStateMachine {
        /// The ASL definition (e.g. statemachine/incident.asl.json).
        definition: PathBuf,
        /// A Step Functions Local MockConfigFile.json.
        #[arg(long)]
        mock_config: PathBuf,
        /// The test case to run.
        #[arg(long)]
        test_case: String,
        /// Execution input (default: a sample incident input).
        #[arg(long)]
        input: Option<PathBuf>,
        /// The state machine's name in the mock file (default: the definition file name up to
        /// the first dot, e.g. "incident").
        #[arg(long)]
        state_machine: Option<String>,
        /// Embedded store (executions are kept for `selfheal history`).
        #[arg(long, env = "SELFHEAL_DB", default_value = ".selfheal/selfheal.sqlite")]
        db: PathBuf,
    },
    /// Run one incident end to end on this machine (simulators, demo service, real Lightpanda
    /// when installed) and print its timeline.
    Demo {
        #[arg(long, value_enum, default_value = "auto")]
        scenario: crate::demo::Scenario,
        /// Print the final incident record as one JSON object on the last line.
        #[arg(long)]
        json: bool,
        /// Where to write the incident report (Markdown and HTML).
        #[arg(long, default_value = "reports")]
        report_dir: PathBuf,
    },
    /// Parse an investigator note (stdin) and print {root_cause, confidence, evidence, alternatives, services}.
    ParseNote,
    /// Print an execution's event history from the embedded store.
    History {
        /// Execution name (as printed by run-state-machine or the local engine) or id.
        execution_id: String,
        #[arg(long, env = "SELFHEAL_DB", default_value = ".selfheal/selfheal.sqlite")]
        db: PathBuf,
    },
}

fn read_file(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn open_table(db: &Path) -> Result<Arc<SqliteTable>, String> {
    SqliteTable::open(db).map(Arc::new).map_err(|e| format!("cannot open {}: {e}", db.display()))
}

pub async fn run(cli: Cli) -> Result<ExitCode, String> {
    match cli.command {
        Command::Demo { scenario, json, report_dir } => {
            selfheal::stages::set_metrics_to_stdout(false);
            let mut stdout = std::io::stdout();
            let run = crate::demo::run(scenario, &report_dir, &mut stdout).await?;
            let verdict = crate::demo::check(scenario, &run.record);
            if json {
                println!("{}", run.record);
            }
            match verdict {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(e) => {
                    eprintln!("selfheal demo: scenario {} did not reach its outcome: {e}", scenario.name());
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::ParseNote => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).map_err(|e| format!("cannot read the note from stdin: {e}"))?;
            let parsed = selfheal::notes::parse_note(&text);
            println!("{}", serde_json::to_string(&parsed).map_err(|e| e.to_string())?);
            Ok(ExitCode::SUCCESS)
        }
        Command::RunStateMachine { definition, mock_config, test_case, input, state_machine, db } => {
            let definition_text = read_file(&definition)?;
            let mocks = read_file(&mock_config)?;
            let input = match input {
                Some(p) => read_file(&p)?,
                None => SAMPLE_INPUT.to_string(),
            };
            let machine = state_machine.unwrap_or_else(|| {
                definition
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.split('.').next())
                    .unwrap_or("incident")
                    .to_string()
            });
            let table = open_table(&db)?;
            let report = run_mock_case(&definition_text, &mocks, &machine, &test_case, &input, Some(table))
                .await
                .map_err(|e| e.to_string())?;
            let mut out = serde_json::json!({
                "status": report.status,
                "path": report.path,
                "output": report.output,
                "execution": report.execution,
            });
            if let Some(error) = report.error {
                out["error"] = error.into();
                out["cause"] = report.cause.unwrap_or_default().into();
            }
            println!("{out}");
            Ok(ExitCode::SUCCESS)
        }
        Command::History { execution_id, db } => {
            let table = open_table(&db)?;
            let engine = Engine::new(table, Arc::new(SystemClock::real()));
            let name = execution_id.rsplit(':').next().unwrap_or(&execution_id);
            let record = engine
                .describe(name)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("no execution {name} in {}", db.display()))?;
            let events = engine.history(name).await.map_err(|e| e.to_string())?;
            let out = serde_json::json!({ "execution": record.name, "status": record.status, "events": events });
            println!("{}", serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?);
            Ok(ExitCode::SUCCESS)
        }
        Command::VerifySignature { provider, secrets, signature, timestamp, at } => {
            let mut body = Vec::new();
            std::io::stdin().read_to_end(&mut body).map_err(|e| format!("cannot read body from stdin: {e}"))?;
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
