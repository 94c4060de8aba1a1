//! Command-line verbs. Each verb parses its arguments and calls into the `selfheal` library.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use selfheal::adapters::sqlite::SqliteTable;

// Declared here rather than in lib.rs so the operator plane stays one self-contained change.
pub use crate::operator;

use operator::StoreArgs;

mod engine_verbs;
mod operator_verbs;
mod signing;
mod workspaces;

use operator_verbs::services;

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
    /// Check a webhook signature over the body read from stdin. Exit 0 when valid (prints
    /// `valid`), 1 when not (prints `invalid: <reason>` on stderr). The secret comes from
    /// --secret-file, else SELFHEAL_WEBHOOK_SECRET (PagerDuty; several comma-separated during a
    /// rotation) or SELFHEAL_SLACK_SIGNING_SECRET (Slack).
    VerifySignature {
        /// Whose signature scheme to check.
        #[arg(long, value_enum)]
        provider: Provider,
        /// A file holding the signing secret, one per line (PagerDuty: several during a rotation).
        #[arg(long, value_name = "FILE", conflicts_with = "secrets")]
        secret_file: Option<PathBuf>,
        /// Deprecated: a secret on the command line is visible to every user of the machine (the
        /// process list) and stays in shell history. Repeat for PagerDuty secret rotation.
        #[arg(long = "secret")]
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
        /// Print the verdict as one JSON object, {"provider", "valid", "reason"} (reason: null
        /// when valid), valid or not; the exit code and the stderr line stay the same.
        #[arg(long)]
        json: bool,
    },
    /// Run a state machine definition through the local engine with Step Functions Local mocks.
    /// Its output is JSON: one object {"status", "path", "output", "execution"} (plus "error"
    /// and "cause" when the execution failed); Waits pass in simulated time.
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
        /// Accepted for every verb; the output is the same JSON object with or without it.
        #[arg(long)]
        json: bool,
    },
    /// Run one incident end to end on this machine (simulators, demo service, real Lightpanda
    /// when installed) and print its timeline.
    Demo {
        /// Which incident to run (each ends in a known outcome, checked at the end).
        #[arg(long, value_enum, default_value = "auto")]
        scenario: crate::demo::Scenario,
        /// After the timeline, print the final incident record as one JSON object on the last line.
        #[arg(long)]
        json: bool,
        /// Where to write the incident report (Markdown and HTML).
        #[arg(long, default_value = "reports")]
        report_dir: PathBuf,
        /// Run through `selfheal stack` (template.yaml as deployed: one process per Lambda
        /// function, IAM enforced, the Step Functions API) instead of the local engine. Needs
        /// the function binaries: `cargo build --workspace --bins`.
        #[arg(long)]
        deployed: bool,
    },
    /// Run template.yaml as written on loopback: the SAM translator's expansion, one process per
    /// Lambda function behind a Runtime API emulator with only its template environment and IAM
    /// identity, DynamoDB and Secrets Manager on moto (IAM enforced), the Step Functions API
    /// served by the local engine, and the HTTP API. Prints the endpoints (the JSON of
    /// <work-dir>/stack.json, pretty-printed) and a line saying it is up; runs until Ctrl-C.
    Stack {
        /// The SAM template.
        #[arg(long, default_value = "template.yaml")]
        template: PathBuf,
        /// Parameter overrides, in samconfig.toml's `parameter_overrides` syntax (Key=Value).
        #[arg(long)]
        parameters: Option<PathBuf>,
        /// The stack's name (in resource names and ARNs, as CloudFormation would use it).
        #[arg(long, default_value = "selfheal")]
        stack_name: String,
        /// Where the function binaries are (default: next to this binary).
        #[arg(long)]
        functions_dir: Option<PathBuf>,
        /// Function logs, moto's log, the engine's store, stack.json and the operator's
        /// credentials file.
        #[arg(long, default_value = ".selfheal/stack")]
        work_dir: PathBuf,
        /// A JSON object of secret values (the keys of the secrets JSON) to put into the
        /// stack's secrets after creating them.
        #[arg(long)]
        secrets_json: Option<PathBuf>,
        /// Print only the endpoints, as one JSON line (stack.json's object plus
        /// "credentials_file"), once the stack is up; the "is up" line goes to stderr.
        #[arg(long)]
        json: bool,
    },
    /// Parse an investigator note (stdin) and print one JSON object {root_cause, confidence,
    /// evidence, alternatives, services, parser}. Where the rules find no root cause or no
    /// confidence, Claude is asked (with `anthropic_api_key` in --secrets and
    /// `notes.model_fallback` on), and its answer is kept only where the note supports it;
    /// `parser` says "model" when it supplied a field.
    ParseNote {
        /// Rules only: never ask the model.
        #[arg(long)]
        no_model: bool,
        /// Settings (TOML): the [anthropic] and [notes] sections. SELFHEAL_* variables override it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Secrets (TOML); only `anthropic_api_key` is used.
        #[arg(long, env = "SELFHEAL_SECRETS_FILE")]
        secrets: Option<PathBuf>,
        /// Accepted for every verb; the output is the same JSON object with or without it.
        #[arg(long)]
        json: bool,
    },
    /// Run the engine against real endpoints (or simulators) with the embedded store, serving
    /// `POST /webhooks/pagerduty` and `POST /slack/interactions`. Says where it listens on
    /// stderr; stdout carries the EMF metric records (JSON lines).
    Serve {
        /// Settings (TOML; see selfheal.example.toml). SELFHEAL_* variables override it.
        #[arg(long)]
        config: PathBuf,
        /// Secrets (TOML with the keys of the Secrets Manager JSON).
        #[arg(long, env = "SELFHEAL_SECRETS_FILE")]
        secrets: Option<PathBuf>,
        /// Address to serve the two webhook routes on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Embedded store (created when missing).
        #[arg(long, env = "SELFHEAL_DB", default_value = ".selfheal/selfheal.sqlite")]
        db: PathBuf,
        /// Also print one JSON line on stdout once listening, before any metric record:
        /// {"url", "webhook_url", "slack_interactivity_url", "db"} (useful with --listen
        /// 127.0.0.1:0).
        #[arg(long)]
        json: bool,
    },
    /// Manage runbooks.
    Runbooks {
        #[command(subcommand)]
        verb: RunbooksVerb,
    },
    /// Show an incident and its timeline from the audit trail.
    Status {
        /// The PagerDuty incident id.
        incident: String,
        #[command(flatten)]
        store: StoreArgs,
        /// Print {"incident", "timeline"} as one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Stop (on) or allow (off) autonomous execution; `status` shows it. Prints the switch as
    /// it now is: `kill switch ON: …` or `kill switch off`.
    Killswitch {
        /// on: nothing executes, decisions route to approval; off: the policy decides; status: show it.
        #[arg(value_enum)]
        state: SwitchState,
        #[command(flatten)]
        store: StoreArgs,
        /// Print the switch as it now is as one JSON object, {"on": true|false}.
        #[arg(long)]
        json: bool,
    },
    /// Per-service settings in the store: browser checks, fix target, auto-execution, approvers.
    Services {
        #[command(subcommand)]
        verb: ServicesVerb,
    },
    /// Sign a PagerDuty webhook payload file the way PagerDuty does and POST it; prints the
    /// answer's status and body on one line, and exits 1 unless the status is 2xx. The secret
    /// comes from --secret-file, else SELFHEAL_WEBHOOK_SECRET.
    ReplayWebhook {
        /// The webhook payload (a PagerDuty v3 envelope, sent byte for byte).
        file: PathBuf,
        /// A file holding the webhook secret (its first line).
        #[arg(long, value_name = "FILE", conflicts_with = "secret")]
        secret_file: Option<PathBuf>,
        /// Deprecated: a secret on the command line is visible to every user of the machine (the
        /// process list) and stays in shell history.
        #[arg(long)]
        secret: Option<String>,
        /// The URL to POST to (e.g. http://127.0.0.1:8080/webhooks/pagerduty).
        #[arg(long)]
        to: String,
        /// X-Webhook-Id to send (default: a fresh one).
        #[arg(long)]
        webhook_id: Option<String>,
        /// Print the answer as one JSON object, {"status", "body", "webhook_id", "url"} (status:
        /// the HTTP status code; body: the answer's text); the exit code stays the same.
        #[arg(long)]
        json: bool,
    },
    /// Outcome, route and time-to-resolve figures from the store (and execution counts from
    /// Step Functions when a state machine is known). Its output is JSON: one object,
    /// pretty-printed (the keys are in README.md, "Figures and alarms").
    Stats {
        /// Only incidents created within this long ago (e.g. 24h, 7d, 90m).
        #[arg(long)]
        since: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
        /// With --table: also count this state machine's executions (--stack reads it from the
        /// stack's StateMachineArn output).
        #[arg(long, value_name = "ARN", conflicts_with = "db")]
        state_machine_arn: Option<String>,
        /// Accepted for every verb; the output is the same JSON object with or without it.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script for selfheal (e.g. `selfheal completions bash >
    /// ~/.local/share/bash-completion/completions/selfheal`).
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
        /// Print {"shell", "script"} as one JSON object instead of the bare script.
        #[arg(long)]
        json: bool,
    },
    /// Remediation workspaces in Coder.
    Workspaces {
        #[command(subcommand)]
        verb: WorkspacesVerb,
    },
    /// Print an execution's event history from the embedded store. Its output is JSON: one
    /// object {"execution", "status", "events"}, pretty-printed.
    History {
        /// Execution name (as printed by run-state-machine or the local engine) or id.
        execution_id: String,
        /// Embedded store to read (never created).
        #[arg(long, env = "SELFHEAL_DB", default_value = ".selfheal/selfheal.sqlite")]
        db: PathBuf,
        /// Accepted for every verb; the output is the same JSON object with or without it.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum RunbooksVerb {
    /// Ingest every runbook in DIR into Senso and write its actions to the store. Its output is
    /// JSON lines: one object per runbook pushed, {"runbook", "content_id", "actions",
    /// "status"} (status: Senso's processing state, e.g. "complete").
    Push {
        /// Directory of runbook Markdown files (e.g. infra/runbooks).
        dir: PathBuf,
        /// Settings (TOML; see selfheal.example.toml) for the Senso endpoint; SELFHEAL_*
        /// variables override it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Secrets (TOML with the keys of the Secrets Manager JSON) holding senso_api_key
        /// [default with --stack: the stack's secret].
        #[arg(long, env = "SELFHEAL_SECRETS_FILE")]
        secrets: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
        /// Accepted for every verb; the output is the same JSON lines with or without it.
        #[arg(long)]
        json: bool,
    },
    /// Parse and check every runbook in DIR without pushing. Its output is JSON lines: one
    /// object per runbook, {"runbook", "title", "actions"} (actions: the action names); the
    /// first invalid runbook is an error instead.
    Check {
        /// Directory of runbook Markdown files.
        dir: PathBuf,
        /// Accepted for every verb; the output is the same JSON lines with or without it.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum WorkspacesVerb {
    /// Find remediation workspaces by their name prefix (`fix-`) and delete those older than
    /// --older-than: what a lost record or a delete that kept failing left behind. The deployed
    /// stack runs the same cleanup every hour (template.yaml, `clean_up_workspaces`). Exits 1
    /// when a delete failed.
    Gc {
        /// Only workspaces created at least this long ago (e.g. 6h, 2d; at least 1h, so a live
        /// remediation is never touched).
        #[arg(long, default_value = "6h")]
        older_than: String,
        /// List what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the report as one JSON object, {"dry_run", "older_than_secs", "seen", "stale",
        /// "deleted", "failed", "cut_short"} (stale: {"id", "name", "created_at", "state",
        /// "result"} per workspace).
        #[arg(long)]
        json: bool,
        /// Settings (TOML; see selfheal.example.toml) for the Coder endpoint and user; SELFHEAL_*
        /// variables override it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Secrets (TOML with the keys of the Secrets Manager JSON) holding coder_session_token.
        #[arg(long, env = "SELFHEAL_SECRETS_FILE")]
        secrets: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ServicesVerb {
    /// Validate FILE and store every service in it, replacing what each had. Its output is JSON
    /// lines: one object per service stored, {"service", "checks", "target", "auto_execute",
    /// "approvers", "updated_at", "updated_by"}. FILE is TOML: [[service]] tables with
    /// [[service.check]] tables (see infra/services.example.toml). Nothing is stored unless the
    /// whole file is valid.
    Push {
        /// The services file.
        file: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
        /// Accepted for every verb; the output is the same JSON lines with or without it.
        #[arg(long)]
        json: bool,
    },
    /// Every service with stored settings. Its output is JSON lines: one object per service,
    /// as `services push` prints them.
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// Accepted for every verb; the output is the same JSON lines with or without it.
        #[arg(long)]
        json: bool,
    },
    /// The stored settings of one service. Its output is JSON: one object (the whole stored
    /// settings, checks included), pretty-printed.
    Show {
        /// PagerDuty service id or name, exactly as pushed.
        service: String,
        #[command(flatten)]
        store: StoreArgs,
        /// Accepted for every verb; the output is the same JSON object with or without it.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum SwitchState {
    On,
    Off,
    Status,
}

fn load_settings(config: Option<&Path>) -> Result<selfheal::config::Settings, String> {
    selfheal::config::Settings::load(config).map_err(|e| e.to_string())
}

fn load_secrets(path: Option<&Path>) -> Result<selfheal::config::Secrets, String> {
    match path {
        Some(p) => selfheal::config::Secrets::from_toml(&read_file(p)?).map_err(|e| e.to_string()),
        None => Ok(selfheal::config::Secrets::default()),
    }
}

/// `24h`, `7d`, `90m`, `30s`.
pub fn parse_duration(s: &str) -> Result<chrono::Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num.parse().map_err(|_| format!("bad duration {s:?} (use e.g. 24h, 7d, 90m)"))?;
    Ok(match unit {
        "s" => chrono::Duration::seconds(n),
        "m" => chrono::Duration::minutes(n),
        "h" | "" => chrono::Duration::hours(n),
        "d" => chrono::Duration::days(n),
        _ => return Err(format!("bad duration unit in {s:?}")),
    })
}

fn read_file(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// The embedded store of a read-only verb (`history`): never created here.
fn open_existing_table(db: &Path) -> Result<Arc<SqliteTable>, String> {
    if !db.exists() {
        return Err(operator::OperatorError::NoStore { path: db.display().to_string() }.to_string());
    }
    open_table(db)
}

fn open_table(db: &Path) -> Result<Arc<SqliteTable>, String> {
    SqliteTable::open(db).map(Arc::new).map_err(|e| format!("cannot open {}: {e}", db.display()))
}

/// Run a verb. Errors may quote outside text (a remote API's message, a stored title), so they
/// reach the terminal with their control characters escaped.
pub async fn run(cli: Cli) -> Result<ExitCode, String> {
    run_verb(cli).await.map_err(|e| operator::term_text(&e))
}

async fn run_verb(cli: Cli) -> Result<ExitCode, String> {
    match cli.command {
        Command::Stack { template, parameters, stack_name, functions_dir, work_dir, secrets_json, json } => {
            engine_verbs::stack(template, parameters, stack_name, functions_dir, work_dir, secrets_json, json).await
        }
        Command::Demo { scenario, json, report_dir, deployed } => {
            engine_verbs::demo(scenario, json, report_dir, deployed).await
        }
        Command::Serve { config, secrets, listen, db, json } => {
            engine_verbs::serve(config, secrets, listen, db, json).await
        }
        Command::Workspaces { verb: WorkspacesVerb::Gc { older_than, dry_run, json, config, secrets } } => {
            workspaces::gc(older_than, dry_run, json, config, secrets).await
        }
        // The verbs whose output is JSON either way take `--json` and ignore it.
        Command::Runbooks { verb: RunbooksVerb::Check { dir, json: _ } } => operator_verbs::runbooks_check(dir).await,
        Command::Runbooks { verb: RunbooksVerb::Push { dir, config, secrets, store, json: _ } } => {
            operator_verbs::runbooks_push(dir, config, secrets, store).await
        }
        Command::Status { incident, store, json } => operator_verbs::status(incident, store, json).await,
        Command::Killswitch { state, store, json } => operator_verbs::killswitch(state, store, json).await,
        Command::ReplayWebhook { file, secret_file, secret, to, webhook_id, json } => {
            signing::replay_webhook(file, secret_file, secret, to, webhook_id, json).await
        }
        Command::Stats { since, store, state_machine_arn, json: _ } => {
            operator_verbs::stats(since, store, state_machine_arn).await
        }
        Command::Services { verb } => services(verb).await,
        Command::ParseNote { no_model, config, secrets, json: _ } => {
            operator_verbs::parse_note(no_model, config, secrets).await
        }
        Command::RunStateMachine { definition, mock_config, test_case, input, state_machine, db, json: _ } => {
            engine_verbs::run_state_machine(definition, mock_config, test_case, input, state_machine, db).await
        }
        Command::Completions { shell, json } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut <Cli as clap::CommandFactory>::command(), "selfheal", &mut script);
            let script = String::from_utf8_lossy(&script);
            if json {
                let value = serde_json::json!({ "shell": shell.to_string(), "script": script });
                crate::say!("{}", operator::term_json(&value, false));
            } else {
                crate::say!("{}", script.trim_end());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::History { execution_id, db, json: _ } => engine_verbs::history(execution_id, db).await,
        Command::VerifySignature { provider, secret_file, secrets, signature, timestamp, at, json } => {
            signing::verify_signature(provider, secret_file, secrets, signature, timestamp, at, json).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every verb and every argument says what it is for in `--help`.
    #[test]
    fn every_verb_and_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} --{id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                let sub_path = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() && sub.get_name() != "help" {
                    missing.push(sub_path.clone());
                }
                walk(sub, &sub_path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&<Cli as clap::CommandFactory>::command(), "selfheal", &mut missing);
        assert!(missing.is_empty(), "without help text: {missing:#?}");
    }
}
