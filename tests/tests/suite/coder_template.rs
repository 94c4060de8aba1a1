//! The remediation workspace runs nothing but the declared script, whatever the values it is
//! given. `infra/coder/main.tf` is rendered the way Terraform renders it (heredocs interpolate
//! `${…}`, `file()` does not) and its start script is run with bash, with the agent's
//! environment, against hostile service names, targets and incident data: quotes, `$(…)`,
//! backticks, newlines, 10 KB values. Then the same through the Coder simulator, which runs the
//! template's start script with the template's environment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use secrecy::SecretString;
use selfheal::adapters::coder::{CoderApi, TemplateRef, rich_parameters};
use selfheal::domain::IncidentId;
use selfheal::ports::{WorkspaceProgress, WorkspaceRequest, Workspaces};
use selfheal_testkit::sim::{Knobs, Sim, SimCredentials, TEMPLATE_ENV, TEMPLATE_RUNNER};
use serde_json::{Value, json};

fn infra() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/coder")
}

/// The body of `resource "<kind>" "<name>" { … }` in the template (braces balanced).
fn block<'a>(tf: &'a str, header: &str) -> &'a str {
    let start = tf.find(header).unwrap_or_else(|| panic!("{header} not in main.tf"));
    let open = start + tf[start..].find('{').expect("block opens");
    let mut depth = 0;
    for (i, c) in tf[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return &tf[open + 1..open + i];
                }
            }
            _ => {}
        }
    }
    panic!("{header}: unbalanced braces")
}

/// What Terraform makes of `coder_script.fix.script`: a heredoc is a template (each
/// `${data.coder_parameter.X.value}` replaced by the value, `$${` an escaped `${`); `file()`
/// reads the file as it is.
fn rendered_script(tf: &str, params: &BTreeMap<&str, String>) -> String {
    let body = block(tf, "resource \"coder_script\" \"fix\"");
    let line = body.lines().find(|l| l.trim_start().starts_with("script")).expect("a script attribute");
    let value = line.split_once('=').expect("script = …").1.trim();
    if let Some(path) = value.strip_prefix("file(\"${path.module}/").and_then(|v| v.strip_suffix("\")")) {
        return std::fs::read_to_string(infra().join(path)).expect("the script file");
    }
    let marker = value.strip_prefix("<<-").expect("a heredoc or file()");
    let after = &body[body.find(line).unwrap() + line.len()..];
    let lines: Vec<&str> = after.lines().skip(1).take_while(|l| l.trim() != marker).collect();
    let indent =
        lines.iter().filter(|l| !l.trim().is_empty()).map(|l| l.len() - l.trim_start().len()).min().unwrap_or(0);
    let mut text: String = lines.iter().map(|l| l.get(indent..).unwrap_or("")).collect::<Vec<_>>().join("\n");
    for (name, v) in params {
        text = text.replace(&format!("${{data.coder_parameter.{name}.value}}"), v);
    }
    text.replace("$${", "${")
}

/// `coder_agent.runner.env`: environment variable → parameter.
fn agent_env(tf: &str) -> BTreeMap<String, String> {
    let body = block(tf, "resource \"coder_agent\" \"runner\"");
    let Some(at) = body.find("env") else { return BTreeMap::new() };
    let env = &body[at..];
    let env = &env[env.find('{').unwrap() + 1..env.find('}').unwrap()];
    env.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let param = v.trim().strip_prefix("data.coder_parameter.").and_then(|v| v.strip_suffix(".value"));
            (k.trim().to_string(), param.expect("env values are parameters").to_string())
        })
        .collect()
}

struct Run {
    pwned: bool,
    fix_ran: Option<String>,
    stdout: String,
    status: i32,
}

/// Run the template's start script with bash as the agent would: the rendered script, the
/// agent's environment from the parameters. The fix writes what it received to `fix-ran`;
/// every hostile value tries to create `pwned`.
fn run_template(params: &BTreeMap<&str, String>, dir: &Path) -> Run {
    let tf = std::fs::read_to_string(infra().join("main.tf")).unwrap();
    let script = rendered_script(&tf, params);
    let mut cmd = std::process::Command::new("bash");
    cmd.arg("-c").arg(script).current_dir(dir);
    for (var, param) in agent_env(&tf) {
        cmd.env(var, params.get(param.as_str()).cloned().unwrap_or_default());
    }
    let out = cmd.output().unwrap();
    Run {
        pwned: dir.join("pwned").exists(),
        fix_ran: std::fs::read_to_string(dir.join("fix-ran")).ok(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        status: out.status.code().unwrap_or(-1),
    }
}

fn params_for(dir: &Path, service: &str, target: &str) -> BTreeMap<&'static str, String> {
    // The declared script: it records the service and target it was handed, as data.
    let fix =
        format!("printf '%s|%s' \"$SELFHEAL_SERVICE\" \"$SELFHEAL_TARGET\" > '{}'\n", dir.join("fix-ran").display());
    let b64 = base64::engine::general_purpose::STANDARD.encode(&fix);
    BTreeMap::from([
        ("incident_id", "Q1HOSTILE".to_string()),
        ("service", service.to_string()),
        ("severity", "high".to_string()),
        ("target", target.to_string()),
        ("fix_script_b64", b64),
        ("fix_script_sha256", selfheal::sha256_hex(fix.as_bytes())),
    ])
}

/// Each hostile value tries to create `<dir>/pwned`.
fn hostile(dir: &Path) -> Vec<String> {
    let p = dir.join("pwned").display().to_string();
    vec![
        format!("checkout'; touch '{p}'; echo '"),
        format!("checkout\"; touch \"{p}\"; echo \""),
        format!("$(touch {p})"),
        format!("`touch {p}`"),
        format!("checkout\ntouch {p}\n"),
        format!("checkout'\ntouch {p}\n'"),
        format!("${{IFS}}$(touch${{IFS}}{p})"),
        format!("a'$(touch {p})'b").repeat(10_240 / 20),
    ]
}

#[test]
fn the_template_runs_only_the_declared_script_whatever_the_values() {
    for (i, value) in hostile(Path::new("/nonexistent")).iter().enumerate() {
        let dir = tempdir(&format!("tpl-{i}"));
        let value = value.replace("/nonexistent", &dir.display().to_string());
        for (what, service, target) in
            [("service", value.as_str(), "http://svc.test/health"), ("target", "checkout", value.as_str())]
        {
            let _ = std::fs::remove_file(dir.join("fix-ran"));
            let run = run_template(&params_for(&dir, service, target), &dir);
            assert!(!run.pwned, "a hostile {what} ran code outside the declared script: {value:?}");
            assert_eq!(run.status, 0, "a hostile {what} broke the fix: {value:?}\n{}", run.stdout);
            assert_eq!(
                run.fix_ran.as_deref(),
                Some(format!("{service}|{target}").as_str()),
                "the fix received the values as data"
            );
        }
    }
}

#[test]
fn the_runner_refuses_a_script_that_is_not_the_approved_one() {
    let dir = tempdir("tpl-hash");
    let mut params = params_for(&dir, "checkout", "http://svc.test/health");
    params.insert("fix_script_sha256", selfheal::sha256_hex(b"something else"));
    let run = run_template(&params, &dir);
    assert_ne!(run.status, 0);
    assert!(run.fix_ran.is_none(), "nothing ran");
}

#[test]
fn the_simulator_runs_what_the_template_runs() {
    let tf = std::fs::read_to_string(infra().join("main.tf")).unwrap();
    let env: BTreeMap<String, String> =
        TEMPLATE_ENV.iter().map(|(var, param)| (var.to_string(), param.to_string())).collect();
    assert_eq!(agent_env(&tf), env, "sim::TEMPLATE_ENV must be main.tf's coder_agent env");
    assert_eq!(rendered_script(&tf, &BTreeMap::new()), TEMPLATE_RUNNER, "the sim runs main.tf's start script");
    // No parameter value is ever template text: nothing but the agent's env reads them.
    let script_block = block(&tf, "resource \"coder_script\" \"fix\"");
    assert!(!script_block.contains("data.coder_parameter"), "{script_block}");
}

#[test]
fn values_an_environment_cannot_carry_are_refused_before_coder() {
    let req = |service: &str| WorkspaceRequest {
        name: "fix-q1-abc".into(),
        incident_id: IncidentId::parse("Q1").unwrap(),
        service: service.into(),
        severity: "high".into(),
        script_b64: base64::engine::general_purpose::STANDARD.encode("true"),
        target: "http://svc.test/".into(),
    };
    assert!(rich_parameters(&req("check\0out")).is_err(), "a NUL cannot be carried");
    let params = rich_parameters(&req("checkout")).unwrap();
    let names: Vec<&str> = params.as_array().unwrap().iter().filter_map(|p| p["name"].as_str()).collect();
    assert!(names.contains(&"fix_script_sha256"));
    assert!(!names.iter().any(|n| n.contains("title")), "the alert title never reaches the workspace");
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("selfheal-{name}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn settle(coder: &CoderApi, handle: &selfheal::ports::WorkspaceHandle) -> WorkspaceProgress {
    for _ in 0..200 {
        let p = coder.progress(handle).await.unwrap();
        if !matches!(p, WorkspaceProgress::Pending { .. }) {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the workspace never settled")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_values_through_the_coder_simulator_run_nothing_but_the_script() {
    let sim = Sim::new(SimCredentials::default(), Knobs::default());
    let (base, _task) = selfheal_testkit::spawn(sim.router(), 0).await.unwrap();
    let coder = CoderApi::new(
        &format!("{base}/coder"),
        SecretString::from(sim.creds.coder_token.clone()),
        "me",
        TemplateRef::Version("v".into()),
    )
    .unwrap();
    for (i, value) in hostile(Path::new("/nonexistent")).iter().enumerate() {
        let dir = tempdir(&format!("sim-{i}"));
        let value = value.replace("/nonexistent", &dir.display().to_string());
        let fix = format!("printf '%s' \"$SELFHEAL_SERVICE\" > '{}'\n", dir.join("fix-ran").display());
        let request = WorkspaceRequest {
            name: format!("fix-hostile-{i}"),
            incident_id: IncidentId::parse(format!("QHOSTILE{i}")).unwrap(),
            service: value.clone(),
            severity: "high".into(),
            script_b64: base64::engine::general_purpose::STANDARD.encode(&fix),
            target: "http://svc.test/health".into(),
        };
        let handle = coder.create(&request).await.unwrap();
        let state = settle(&coder, &handle).await;
        assert!(matches!(state, WorkspaceProgress::Ready { .. }), "{value:?}: {state:?}");
        assert!(!dir.join("pwned").exists(), "a hostile service name ran code: {value:?}");
        assert_eq!(std::fs::read_to_string(dir.join("fix-ran")).unwrap(), value, "the name arrived as data");
        coder.delete(&handle.id).await.unwrap();
    }
    // Coder refuses what its template's validations refuse: a NUL, a hash that is no hash.
    let bad = |params: Value| {
        let http = reqwest::Client::new();
        let url = format!("{base}/coder/api/v2/users/me/workspaces");
        let token = sim.creds.coder_token.clone();
        async move {
            http.post(url)
                .header("Coder-Session-Token", token)
                .json(&json!({"name": "fix-bad", "template_version_id": "v", "rich_parameter_values": params}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let with = |service: &str, sha: &str| {
        json!([
            {"name": "incident_id", "value": "Q1"}, {"name": "service", "value": service},
            {"name": "severity", "value": "high"}, {"name": "target", "value": "http://x.test/"},
            {"name": "fix_script_b64", "value": "dHJ1ZQ=="}, {"name": "fix_script_sha256", "value": sha},
        ])
    };
    let good_sha = selfheal::sha256_hex(b"true");
    assert_eq!(bad(with("check\0out", &good_sha)).await, 400);
    assert_eq!(bad(with("checkout", "$(reboot)")).await, 400);
    // A script whose hash is not the approved one is refused by the runner: nothing runs.
    let dir = tempdir("sim-hash");
    let fix = format!("touch '{}'\n", dir.join("fix-ran").display());
    let params = json!([
        {"name": "incident_id", "value": "Q2"}, {"name": "service", "value": "checkout"},
        {"name": "severity", "value": "high"}, {"name": "target", "value": "http://x.test/"},
        {"name": "fix_script_b64", "value": base64::engine::general_purpose::STANDARD.encode(&fix)},
        {"name": "fix_script_sha256", "value": good_sha},
    ]);
    let http = reqwest::Client::new();
    let created: Value = http
        .post(format!("{base}/coder/api/v2/users/me/workspaces"))
        .header("Coder-Session-Token", sim.creds.coder_token.clone())
        .json(&json!({"name": "fix-wrong-hash", "template_version_id": "v", "rich_parameter_values": params}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let handle = selfheal::ports::WorkspaceHandle {
        id: created["id"].as_str().unwrap().into(),
        name: "fix-wrong-hash".into(),
        build_id: created["latest_build"]["id"].as_str().unwrap().into(),
    };
    assert!(matches!(settle(&coder, &handle).await, WorkspaceProgress::Failed { .. }));
    assert!(!dir.join("fix-ran").exists(), "a script with another hash never runs");
}
