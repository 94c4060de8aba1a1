//! The operator verbs: `status`, `killswitch`, `services`, `stats`, `runbooks` and `parse-note`.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use selfheal::engine::Engine;
use selfheal::ports::SystemClock;

use super::{ServicesVerb, SwitchState, load_secrets, load_settings, operator, parse_duration};
use operator::{Backend, StoreArgs};

/// `selfheal services push|list|show`. Their output is JSON either way, so `--json` changes
/// nothing.
pub(super) async fn services(verb: ServicesVerb) -> Result<ExitCode, String> {
    match verb {
        ServicesVerb::Push { file, store, json: _ } => {
            // Validate the whole file before opening the store: a bad file changes nothing.
            let all = operator::parse_services(&file, &operator::operator_name(), chrono::Utc::now())
                .map_err(|e| e.to_string())?;
            let store = store.target().open(operator::Missing::Create).await.map_err(|e| e.to_string())?.store;
            for settings in &all {
                store.put_service_settings(settings).await.map_err(|e| e.to_string())?;
                crate::say!("{}", operator::term_json(&operator::service_summary(settings), false));
            }
        }
        ServicesVerb::List { store, json: _ } => {
            let store = store.target().open(operator::Missing::Refuse).await.map_err(|e| e.to_string())?.store;
            for settings in store.list_service_settings().await.map_err(|e| e.to_string())? {
                crate::say!("{}", operator::term_json(&operator::service_summary(&settings), false));
            }
        }
        ServicesVerb::Show { service, store, json: _ } => {
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

pub(super) async fn runbooks_check(dir: PathBuf) -> Result<ExitCode, String> {
    let runbooks = selfheal::runbooks::load_dir(&dir).map_err(|e| e.to_string())?;
    for rb in &runbooks {
        let line = serde_json::json!({"runbook": rb.id, "title": rb.title, "actions": rb.actions.iter().map(|a| a.name.to_string()).collect::<Vec<_>>()});
        crate::say!("{}", operator::term_json(&line, false));
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn runbooks_push(
    dir: PathBuf,
    config: Option<PathBuf>,
    secrets: Option<PathBuf>,
    store: StoreArgs,
) -> Result<ExitCode, String> {
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
    let pushed =
        selfheal::runbooks::push(deps.kb.as_ref(), store.as_ref(), &runbooks, std::time::Duration::from_secs(60))
            .await
            .map_err(|e| e.to_string())?;
    for p in pushed {
        crate::say!("{}", operator::term_json(&serde_json::to_value(&p).map_err(|e| e.to_string())?, false));
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn status(incident: String, store: StoreArgs, json: bool) -> Result<ExitCode, String> {
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

pub(super) async fn killswitch(state: SwitchState, store: StoreArgs, json: bool) -> Result<ExitCode, String> {
    let store = store.target().open(operator::Missing::Refuse).await.map_err(|e| e.to_string())?.store;
    let who = operator::operator_name();
    match state {
        SwitchState::On => store.set_kill_switch(true, &who, chrono::Utc::now()).await.map_err(|e| e.to_string())?,
        SwitchState::Off => store.set_kill_switch(false, &who, chrono::Utc::now()).await.map_err(|e| e.to_string())?,
        SwitchState::Status => {}
    }
    let on = store.kill_switch().await.map_err(|e| e.to_string())?;
    if json {
        crate::say!("{}", operator::term_json(&serde_json::json!({ "on": on }), false));
    } else {
        crate::say!("kill switch {}", if on { "ON: nothing executes; decisions route to approval" } else { "off" });
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn stats(
    since: Option<String>,
    store: StoreArgs,
    state_machine_arn: Option<String>,
) -> Result<ExitCode, String> {
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
            let arn = state_machine_arn.or_else(|| opened.stack.as_ref().and_then(|s| s.state_machine_arn.clone()));
            let sfn = arn.map(|arn| (aws_sdk_sfn::Client::new(sdk), arn));
            let executions = sfn.as_ref().map(|(client, arn)| (client, arn.as_str()));
            crate::stats::collect_table(client, table, opened.store.as_ref(), since, executions).await?
        }
    };
    crate::say!("{}", operator::term_json(&stats, true));
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn parse_note(
    no_model: bool,
    config: Option<PathBuf>,
    secrets: Option<PathBuf>,
) -> Result<ExitCode, String> {
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text).map_err(|e| format!("cannot read the note from stdin: {e}"))?;
    let parsed = if no_model {
        selfheal::notes::parse_note(&text)
    } else {
        let settings = load_settings(config.as_deref())?;
        let secrets = load_secrets(secrets.as_deref())?;
        let reader = selfheal::wiring::note_reader(&settings, &secrets);
        let read = selfheal::stages::cognition::read_note(reader.as_ref(), settings.notes.model_fallback, &text).await;
        if let Some(error) = read.model.get("error").and_then(|e| e.as_str()) {
            // Without a configured key this is the usual case: say so once, on stderr.
            eprintln!("note model fallback not used: {}", operator::term_line(error));
        }
        read.checked.note
    };
    crate::say!("{}", operator::term_json(&serde_json::to_value(&parsed).map_err(|e| e.to_string())?, false));
    Ok(ExitCode::SUCCESS)
}
