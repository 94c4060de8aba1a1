//! The engine verbs: `stack`, `demo`, `serve`, `run-state-machine` and `history`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use selfheal::engine::{Engine, run_mock_case};
use selfheal::ports::SystemClock;

use super::{load_secrets, load_settings, open_existing_table, open_table, operator, read_file};

/// Execution input used by `run-state-machine` when `--input` is not given: what intake starts
/// executions with.
const SAMPLE_INPUT: &str = include_str!("../../../statemachine/test/input.json");

pub(super) async fn stack(
    template: PathBuf,
    parameters: Option<PathBuf>,
    stack_name: String,
    functions_dir: Option<PathBuf>,
    work_dir: PathBuf,
    secrets_json: Option<PathBuf>,
    json: bool,
) -> Result<ExitCode, String> {
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
    crate::stack::serve(options, json, &mut std::io::stdout()).await.map_err(|e| e.to_string())?;
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn demo(
    scenario: crate::demo::Scenario,
    json: bool,
    report_dir: PathBuf,
    deployed: bool,
) -> Result<ExitCode, String> {
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

pub(super) async fn serve(
    config: PathBuf,
    secrets: Option<PathBuf>,
    listen: String,
    db: PathBuf,
    json: bool,
) -> Result<ExitCode, String> {
    selfheal::telemetry::init();
    let settings = load_settings(Some(&config))?;
    let secrets = load_secrets(secrets.as_deref())?;
    // Bound before the engine starts: with --json the address is the first line on stdout, ahead
    // of any metric record an execution resumed by `start` may print. Connections wait in the
    // backlog until the router serves them.
    let listener =
        tokio::net::TcpListener::bind(&listen).await.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    if json {
        let url = format!("http://{addr}");
        let listening = serde_json::json!({
            "url": url,
            "webhook_url": format!("{url}/webhooks/pagerduty"),
            "slack_interactivity_url": format!("{url}/slack/interactions"),
            "db": db.display().to_string(),
        });
        crate::say!("{}", operator::term_json(&listening, false));
    }
    let stack = crate::local::start(settings, secrets, &db, None, Arc::new(SystemClock::real())).await?;
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

pub(super) async fn run_state_machine(
    definition: PathBuf,
    mock_config: PathBuf,
    test_case: String,
    input: Option<PathBuf>,
    state_machine: Option<String>,
    db: PathBuf,
) -> Result<ExitCode, String> {
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

pub(super) async fn history(execution_id: String, db: PathBuf) -> Result<ExitCode, String> {
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
