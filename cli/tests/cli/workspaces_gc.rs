//! `selfheal workspaces gc`, driven as an operator would, against the Coder simulator: only
//! workspaces with the remediation prefix and older than the cut-off are deleted (Coder's
//! lifecycle: an active build is canceled first), a dry run deletes nothing, a cut-off that could
//! catch a live remediation is refused.

use std::process::Command;
use std::time::Duration;

use secrecy::SecretString;
use selfheal::adapters::coder::{CoderApi, TemplateRef};
use selfheal::domain::IncidentId;
use selfheal::ports::{WorkspaceRequest, Workspaces};
use selfheal_testkit::sim::{Knobs, Sim, SimCredentials};

fn request(name: &str) -> WorkspaceRequest {
    use base64::Engine as _;
    WorkspaceRequest {
        name: name.into(),
        incident_id: IncidentId::parse("PGC1").unwrap(),
        service: "checkout".into(),
        severity: "high".into(),
        script_b64: base64::engine::general_purpose::STANDARD.encode("true"),
        target: "http://127.0.0.1:9/health".into(),
    }
}

async fn gc(args: &[&str], dir: &std::path::Path) -> (i32, String, String) {
    let mut all = vec!["workspaces", "gc"];
    all.extend_from_slice(args);
    let config = dir.join("selfheal.toml");
    let secrets = dir.join("secrets.toml");
    let mut command = Command::new(env!("CARGO_BIN_EXE_selfheal"));
    command.args(&all).arg("--config").arg(&config).arg("--secrets").arg(&secrets);
    let out = tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_deletes_only_stale_remediation_workspaces() {
    let sim = Sim::new(SimCredentials::default(), Knobs::default());
    let (base, _task) = selfheal_testkit::spawn(sim.router(), 0).await.unwrap();
    *sim.base.lock().unwrap() = base.clone();
    let coder = CoderApi::new(
        &format!("{base}/coder"),
        SecretString::from(sim.creds.coder_token.clone()),
        "me",
        TemplateRef::Version("tv-1".into()),
    )
    .unwrap();
    // Old: a remediation workspace and someone's own workspace that merely contains "fix-".
    coder.create(&request("fix-pold1-aaaa")).await.unwrap();
    coder.create(&request("my-fix-box")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    sim.age_workspaces(chrono::Duration::hours(7));
    // Young: a remediation that may still be running (its build still active).
    coder.create(&request("fix-pnew1-bbbb")).await.unwrap();

    let dir = std::env::temp_dir().join(format!("selfheal-gc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("selfheal.toml"),
        format!("[coder]\napi_base = \"{base}/coder\"\nuser = \"me\"\ntemplate_version_id = \"tv-1\"\n"),
    )
    .unwrap();
    std::fs::write(dir.join("secrets.toml"), format!("coder_session_token = \"{}\"\n", sim.creds.coder_token)).unwrap();

    let (code, out, err) = gc(&["--older-than", "6h", "--dry-run", "--json"], &dir).await;
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let stale: Vec<&str> = report["stale"].as_array().unwrap().iter().filter_map(|w| w["name"].as_str()).collect();
    assert_eq!(stale, ["fix-pold1-aaaa"], "{report}");
    assert_eq!(report["seen"], 2, "the prefix, not the substring: {report}");
    assert_eq!(report["deleted"], 0);
    assert_eq!(sim.live_workspaces().len(), 3, "a dry run deletes nothing");

    let (code, out, err) = gc(&["--older-than", "6h"], &dir).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("fix-pold1-aaaa") && out.contains("deleted"), "{out}");
    let mut live: Vec<String> = sim.live_workspaces().into_iter().map(|w| w.name).collect();
    live.sort();
    assert_eq!(live, ["fix-pnew1-bbbb", "my-fix-box"]);

    let (code, _, err) = gc(&["--older-than", "10m"], &dir).await;
    assert_ne!(code, 0);
    assert!(err.contains("at least 1 h"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
