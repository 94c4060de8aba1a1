//! Command-line verbs. Each verb parses its arguments and calls into the `selfheal` library.

use clap::{Parser, Subcommand, ValueEnum};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use selfheal::adapters::sqlite::SqliteTable;
use selfheal::engine::{Engine, run_mock_case};
use selfheal::ports::SystemClock;

// Declared here rather than in lib.rs so the operator plane stays one self-contained change.
pub use crate::operator;

use operator::{Backend, StoreArgs};

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
    /// The secret comes from --secret-file, else SELFHEAL_WEBHOOK_SECRET (PagerDuty; several
    /// comma-separated during a rotation) or SELFHEAL_SLACK_SIGNING_SECRET (Slack).
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
        /// Which incident to run (each ends in a known outcome, checked at the end).
        #[arg(long, value_enum, default_value = "auto")]
        scenario: crate::demo::Scenario,
        /// Print the final incident record as one JSON object on the last line.
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
    /// served by the local engine, and the HTTP API. Prints the endpoints; runs until Ctrl-C.
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
    },
    /// Parse an investigator note (stdin) and print {root_cause, confidence, evidence, alternatives,
    /// services, parser}. Where the rules find no root cause or no confidence, Claude is asked
    /// (with `anthropic_api_key` in --secrets and `notes.model_fallback` on), and its answer is
    /// kept only where the note supports it; `parser` says "model" when it supplied a field.
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
    },
    /// Run the engine against real endpoints (or simulators) with the embedded store, serving
    /// `POST /webhooks/pagerduty` and `POST /slack/interactions`.
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
    /// Stop (on) or allow (off) autonomous execution; `status` shows it.
    Killswitch {
        /// on: nothing executes, decisions route to approval; off: the policy decides; status: show it.
        #[arg(value_enum)]
        state: SwitchState,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Per-service settings in the store: browser checks, fix target, auto-execution, approvers.
    Services {
        #[command(subcommand)]
        verb: ServicesVerb,
    },
    /// Sign a PagerDuty webhook payload file the way PagerDuty does and POST it. The secret comes
    /// from --secret-file, else SELFHEAL_WEBHOOK_SECRET.
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
    },
    /// Outcome, route and time-to-resolve figures from the store (and execution counts from
    /// Step Functions when a state machine is known).
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
    },
    /// Print a shell completion script for selfheal (e.g. `selfheal completions bash >
    /// ~/.local/share/bash-completion/completions/selfheal`).
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Remediation workspaces in Coder.
    Workspaces {
        #[command(subcommand)]
        verb: WorkspacesVerb,
    },
    /// Print an execution's event history from the embedded store.
    History {
        /// Execution name (as printed by run-state-machine or the local engine) or id.
        execution_id: String,
        /// Embedded store to read (never created).
        #[arg(long, env = "SELFHEAL_DB", default_value = ".selfheal/selfheal.sqlite")]
        db: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum RunbooksVerb {
    /// Ingest every runbook in DIR into Senso and write its actions to the store.
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
    },
    /// Parse and check every runbook in DIR without pushing.
    Check {
        /// Directory of runbook Markdown files.
        dir: PathBuf,
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
        /// Print the report as one JSON object.
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
    /// Validate FILE and store every service in it, replacing what each had; prints one JSON
    /// line per service. FILE is TOML: [[service]] tables with [[service.check]] tables (see
    /// infra/services.example.toml). Nothing is stored unless the whole file is valid.
    Push {
        /// The services file.
        file: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// One JSON line per service with stored settings.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// The stored settings of one service, as JSON.
    Show {
        /// PagerDuty service id or name, exactly as pushed.
        service: String,
        #[command(flatten)]
        store: StoreArgs,
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

/// `selfheal services push|list|show`.
async fn services(verb: ServicesVerb) -> Result<ExitCode, String> {
    match verb {
        ServicesVerb::Push { file, store } => {
            // Validate the whole file before opening the store: a bad file changes nothing.
            let all = operator::parse_services(&file, &operator::operator_name(), chrono::Utc::now())
                .map_err(|e| e.to_string())?;
            let store = store.target().open(operator::Missing::Create).await.map_err(|e| e.to_string())?.store;
            for settings in &all {
                store.put_service_settings(settings).await.map_err(|e| e.to_string())?;
                crate::say!("{}", operator::term_json(&operator::service_summary(settings), false));
            }
        }
        ServicesVerb::List { store } => {
            let store = store.target().open(operator::Missing::Refuse).await.map_err(|e| e.to_string())?.store;
            for settings in store.list_service_settings().await.map_err(|e| e.to_string())? {
                crate::say!("{}", operator::term_json(&operator::service_summary(&settings), false));
            }
        }
        ServicesVerb::Show { service, store } => {
            let opened = store.target().open(operator::Missing::Refuse).await.map_err(|e| e.to_string())?;
            let settings =
                opened.store.get_service_settings(&service).await.map_err(|e| e.to_string())?.ok_or_else(|| {
                    format!(
                        "no settings for service {service:?} in {}; push them with `selfheal services push FILE`",
                        opened.location()
                    )
                })?;
            let value = serde_json::to_value(&settings).map_err(|e| e.to_string())?;
            crate::say!("{}", operator::term_json(&value, true));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Where a verb's signing secret comes from, in order: `--secret-file`, the deprecated
/// `--secret` (with a warning), the environment variable `env`. Secrets never need to be on
/// the command line, where every user of the machine can read them.
fn signing_secrets(file: Option<&Path>, flags: Vec<String>, env: &str) -> Result<Vec<String>, String> {
    let secrets = if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        warn_if_readable_by_others(path);
        text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect()
    } else if !flags.is_empty() {
        eprintln!(
            "selfheal: warning: --secret puts the secret in the process list and your shell history; \
             use --secret-file FILE or {env} instead"
        );
        flags
    } else {
        std::env::var(env)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    if secrets.is_empty() {
        return Err(format!("no signing secret: give --secret-file FILE or set {env}"));
    }
    Ok(secrets)
}

/// A secrets file others can read is a leak waiting to happen; say so (it still works).
fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
            eprintln!("selfheal: warning: {} is readable by other users; chmod 600 it", path.display());
        }
    }
}

/// Run a verb. Errors may quote outside text (a remote API's message, a stored title), so they
/// reach the terminal with their control characters escaped.
pub async fn run(cli: Cli) -> Result<ExitCode, String> {
    run_verb(cli).await.map_err(|e| operator::term_text(&e))
}

async fn run_verb(cli: Cli) -> Result<ExitCode, String> {
    match cli.command {
        Command::Stack { template, parameters, stack_name, functions_dir, work_dir, secrets_json } => {
            selfheal::telemetry::init();
            let mut options = crate::stack::StackOptions::new(template, work_dir);
            options.parameters = parameters;
            options.stack_name = stack_name;
            if let Some(dir) = functions_dir {
                options.bin_dir = dir;
            }
            if let Some(path) = secrets_json {
                let values: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&read_file(&path)?)
                    .map_err(|e| format!("{} is not a JSON object: {e}", path.display()))?;
                options.secrets = values.into_iter().collect();
            }
            crate::stack::serve(options, &mut std::io::stdout()).await.map_err(|e| e.to_string())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { scenario, json, report_dir, deployed } => {
            selfheal::stages::set_metrics_to_stdout(false);
            let mut stdout = std::io::stdout();
            let run = if deployed {
                crate::demo::run_deployed(scenario, &report_dir, &mut stdout).await?
            } else {
                crate::demo::run(scenario, &report_dir, &mut stdout).await?
            };
            let verdict = crate::demo::check(scenario, &run.record);
            if json {
                crate::say!("{}", operator::term_json(&run.record, false));
            }
            match verdict {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(e) => {
                    eprintln!(
                        "selfheal demo: scenario {} did not reach its outcome: {}",
                        scenario.name(),
                        operator::term_line(&e)
                    );
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Serve { config, secrets, listen, db } => {
            selfheal::telemetry::init();
            let settings = load_settings(Some(&config))?;
            let secrets = load_secrets(secrets.as_deref())?;
            let stack = crate::local::start(settings, secrets, &db, None, Arc::new(SystemClock::real())).await?;
            let listener =
                tokio::net::TcpListener::bind(&listen).await.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            eprintln!(
                "selfheal serving on http://{addr} (POST /webhooks/pagerduty, POST /slack/interactions), store {}",
                db.display()
            );
            let limits = stack.deps.settings.server.clone();
            crate::server::serve(listener, crate::server::router(stack.deps.clone()), limits, async {
                let _ = tokio::signal::ctrl_c().await;
                eprintln!("selfheal: shutting down; open executions resume on the next start");
            })
            .await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Workspaces { verb: WorkspacesVerb::Gc { older_than, dry_run, json, config, secrets } } => {
            let older_than = parse_duration(&older_than)?;
            let min = selfheal::stages::action::MIN_STALE_SECS;
            if older_than.num_seconds() < min {
                return Err(format!(
                    "--older-than must be at least {} h: a live remediation could be deleted",
                    min / 3600
                ));
            }
            let settings = load_settings(config.as_deref())?;
            let secrets = load_secrets(secrets.as_deref())?;
            let workspaces = selfheal::wiring::workspaces(&settings, &secrets);
            let report = selfheal::stages::action::clean_up_workspaces(
                workspaces.as_ref(),
                chrono::Utc::now(),
                older_than,
                dry_run,
                selfheal::stages::action::CLEANUP_DEADLINE,
            )
            .await
            .map_err(|e| e.to_string())?;
            if json {
                let value = serde_json::to_value(&report).map_err(|e| e.to_string())?;
                crate::say!("{}", operator::term_json(&value, false));
            } else {
                for w in &report.stale {
                    let created = w.created_at.map_or_else(|| "unknown".to_string(), |t| t.to_rfc3339());
                    crate::say!(
                        "{}",
                        operator::term_line(&format!(
                            "{}  {}  created {created}  {}  {}",
                            w.name, w.id, w.state, w.result
                        ))
                    );
                }
                crate::say!(
                    "{} remediation workspaces seen, {} stale, {} deleted, {} failed{}{}",
                    report.seen,
                    report.stale.len(),
                    report.deleted,
                    report.failed,
                    if dry_run { " (dry run)" } else { "" },
                    if report.cut_short { "; stopped at the deadline, run again" } else { "" }
                );
            }
            Ok(if report.failed > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
        }
        Command::Runbooks { verb: RunbooksVerb::Check { dir } } => {
            let runbooks = selfheal::runbooks::load_dir(&dir).map_err(|e| e.to_string())?;
            for rb in &runbooks {
                let line = serde_json::json!({"runbook": rb.id, "title": rb.title, "actions": rb.actions.iter().map(|a| a.name.to_string()).collect::<Vec<_>>()});
                crate::say!("{}", operator::term_json(&line, false));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Runbooks { verb: RunbooksVerb::Push { dir, config, secrets, store } } => {
            let settings = load_settings(config.as_deref())?;
            let runbooks = selfheal::runbooks::load_dir(&dir).map_err(|e| e.to_string())?;
            let opened = store.target().open(operator::Missing::Create).await.map_err(|e| e.to_string())?;
            let secrets = opened.secrets(secrets.as_deref()).await.map_err(|e| e.to_string())?;
            let store = opened.store.clone();
            let deps = selfheal::wiring::build_deps(
                settings,
                secrets,
                store.clone(),
                Arc::new(selfheal::wiring::Unconfigured("orchestrator")),
                Arc::new(SystemClock::real()),
            );
            let pushed = selfheal::runbooks::push(
                deps.kb.as_ref(),
                store.as_ref(),
                &runbooks,
                std::time::Duration::from_secs(60),
            )
            .await
            .map_err(|e| e.to_string())?;
            for p in pushed {
                crate::say!("{}", operator::term_json(&serde_json::to_value(&p).map_err(|e| e.to_string())?, false));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { incident, store, json } => {
            let id = selfheal::domain::IncidentId::parse(&incident).map_err(|e| e.to_string())?;
            let opened = store.target().open(operator::Missing::Refuse).await.map_err(|e| e.to_string())?;
            let store = opened.store.clone();
            let inc = store
                .get_incident(&id)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("no incident {id} in {}", opened.location()))?;
            let trail = store.audit_trail(&id).await.map_err(|e| e.to_string())?;
            // The title, service name and actors come from PagerDuty and Slack: escaped.
            if json {
                crate::say!("{}", operator::term_json(&serde_json::json!({"incident": inc, "timeline": trail}), false));
            } else {
                crate::say!("{} — {}", inc.id, operator::term_line(&inc.title));
                crate::say!(
                    "service {} · status {:?} · outcome {:?} · route {} · effectiveness {:?}",
                    operator::term_line(inc.service.name.as_str()),
                    inc.status,
                    inc.outcome,
                    inc.decision.as_ref().map_or("none", |d| d.route.as_str()),
                    inc.effectiveness
                );
                for e in &trail {
                    crate::say!(
                        "  {} {:<14} {}",
                        e.at.format("%Y-%m-%d %H:%M:%S%.3f"),
                        operator::term_line(&e.actor),
                        operator::term_line(&e.kind)
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Killswitch { state, store } => {
            let store = store.target().open(operator::Missing::Refuse).await.map_err(|e| e.to_string())?.store;
            let who = operator::operator_name();
            match state {
                SwitchState::On => {
                    store.set_kill_switch(true, &who, chrono::Utc::now()).await.map_err(|e| e.to_string())?
                }
                SwitchState::Off => {
                    store.set_kill_switch(false, &who, chrono::Utc::now()).await.map_err(|e| e.to_string())?
                }
                SwitchState::Status => {}
            }
            let on = store.kill_switch().await.map_err(|e| e.to_string())?;
            crate::say!("kill switch {}", if on { "ON: nothing executes; decisions route to approval" } else { "off" });
            Ok(ExitCode::SUCCESS)
        }
        Command::ReplayWebhook { file, secret_file, secret, to, webhook_id } => {
            let secrets =
                signing_secrets(secret_file.as_deref(), secret.into_iter().collect(), "SELFHEAL_WEBHOOK_SECRET")?;
            let [secret] = secrets.as_slice() else {
                return Err("replay-webhook signs with one secret; the source holds several".into());
            };
            let body = std::fs::read(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            let signature = selfheal::signature::sign_pagerduty(secret.as_bytes(), &body);
            let id = webhook_id.unwrap_or_else(|| format!("replay-{}", uuid::Uuid::new_v4().simple()));
            let resp = reqwest::Client::new()
                .post(&to)
                .header("content-type", "application/json")
                .header("x-pagerduty-signature", signature)
                .header("x-webhook-id", &id)
                .body(body)
                .timeout(std::time::Duration::from_secs(10))
                .send()
                .await
                .map_err(|e| format!("POST {to} failed: {e}"))?;
            let status = resp.status().as_u16();
            // The endpoint's answer is outside text.
            let text = resp.text().await.unwrap_or_default();
            crate::say!("{status} {}", operator::term_line(&text));
            Ok(if (200..300).contains(&status) { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::Stats { since, store, state_machine_arn } => {
            let since = since.as_deref().map(parse_duration).transpose()?.map(|d| chrono::Utc::now() - d);
            let opened = store.target().open(operator::Missing::Refuse).await.map_err(|e| e.to_string())?;
            let stats = match &opened.backend {
                Backend::Sqlite { table, .. } => {
                    if state_machine_arn.is_some() {
                        return Err("--state-machine-arn counts Step Functions executions: use it with --table".into());
                    }
                    let engine = Engine::new(table.clone(), Arc::new(SystemClock::real()));
                    crate::stats::collect(&engine, opened.store.as_ref(), since).await?
                }
                Backend::Dynamo { table, client, sdk } => {
                    let arn =
                        state_machine_arn.or_else(|| opened.stack.as_ref().and_then(|s| s.state_machine_arn.clone()));
                    let sfn = arn.map(|arn| (aws_sdk_sfn::Client::new(sdk), arn));
                    let executions = sfn.as_ref().map(|(client, arn)| (client, arn.as_str()));
                    crate::stats::collect_table(client, table, opened.store.as_ref(), since, executions).await?
                }
            };
            crate::say!("{}", operator::term_json(&stats, true));
            Ok(ExitCode::SUCCESS)
        }
        Command::Services { verb } => services(verb).await,
        Command::ParseNote { no_model, config, secrets } => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).map_err(|e| format!("cannot read the note from stdin: {e}"))?;
            let parsed = if no_model {
                selfheal::notes::parse_note(&text)
            } else {
                let settings = load_settings(config.as_deref())?;
                let secrets = load_secrets(secrets.as_deref())?;
                let reader = selfheal::wiring::note_reader(&settings, &secrets);
                let read =
                    selfheal::stages::cognition::read_note(reader.as_ref(), settings.notes.model_fallback, &text).await;
                if let Some(error) = read.model.get("error").and_then(|e| e.as_str()) {
                    // Without a configured key this is the usual case: say so once, on stderr.
                    eprintln!("note model fallback not used: {}", operator::term_line(error));
                }
                read.checked.note
            };
            crate::say!("{}", operator::term_json(&serde_json::to_value(&parsed).map_err(|e| e.to_string())?, false));
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
            crate::say!("{}", operator::term_json(&out, false));
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut <Cli as clap::CommandFactory>::command(), "selfheal", &mut script);
            crate::say!("{}", String::from_utf8_lossy(&script).trim_end());
            Ok(ExitCode::SUCCESS)
        }
        Command::History { execution_id, db } => {
            let table = open_existing_table(&db)?;
            let engine = Engine::new(table, Arc::new(SystemClock::real()));
            let name = execution_id.rsplit(':').next().unwrap_or(&execution_id);
            let record = engine
                .describe(name)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("no execution {name} in {}", db.display()))?;
            let events = engine.history(name).await.map_err(|e| e.to_string())?;
            let out = serde_json::json!({ "execution": record.name, "status": record.status, "events": events });
            crate::say!("{}", operator::term_json(&out, true));
            Ok(ExitCode::SUCCESS)
        }
        Command::VerifySignature { provider, secret_file, secrets, signature, timestamp, at } => {
            let env = match provider {
                Provider::Pagerduty => "SELFHEAL_WEBHOOK_SECRET",
                Provider::Slack => "SELFHEAL_SLACK_SIGNING_SECRET",
            };
            let secrets = signing_secrets(secret_file.as_deref(), secrets, env)?;
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
                        return Err("--provider slack takes exactly one secret".into());
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
                    crate::say!("valid");
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
