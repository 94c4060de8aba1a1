//! `verify-signature` and `replay-webhook` take their secrets from a file (`--secret-file`) or
//! an environment variable, so no secret has to be on a command line (where every user of the
//! machine can read it in the process list). `--secret` still works, with a warning.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;

const BODY: &[u8] = br#"{"event":{"id":"01TEST","event_type":"incident.annotated"}}"#;
const SIG_LOCAL: &str = "v1=4a3e86e29ec650029adb6a6c10cc200ad6503212d78595b58302bdc279ff0ab6";

/// Run `selfheal` with `env` set (and the secret variables otherwise cleared): (exit, stdout,
/// stderr).
fn run(args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_selfheal"));
    cmd.args(args).env_remove("SELFHEAL_WEBHOOK_SECRET").env_remove("SELFHEAL_SLACK_SIGNING_SECRET");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn secret_file(lines: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("selfheal-secret-{}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, lines).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    path
}

#[test]
fn verify_signature_reads_secrets_from_a_file_or_the_environment() {
    let verify = ["verify-signature", "--provider", "pagerduty", "--signature", SIG_LOCAL];
    // A file: one secret per line (a rotation), blank lines ignored.
    let file = secret_file("whsec-old-secret\n\nwhsec-local-test\n");
    let args: Vec<&str> = verify.iter().copied().chain(["--secret-file", file.to_str().unwrap()]).collect();
    let (code, out, err) = run(&args, &[], BODY);
    assert_eq!((code, out.trim()), (0, "valid"), "{err}");
    assert!(err.is_empty(), "no warning for a private file: {err}");
    // The environment: comma-separated during a rotation.
    let (code, out, _) = run(&verify, &[("SELFHEAL_WEBHOOK_SECRET", "nope, whsec-local-test")], BODY);
    assert_eq!((code, out.trim()), (0, "valid"));
    let (code, _, err) = run(&verify, &[("SELFHEAL_WEBHOOK_SECRET", "whsec-wrong")], BODY);
    assert_eq!(code, 1, "{err}");
    // Nowhere: refused with what to do.
    let (code, _, err) = run(&verify, &[], BODY);
    assert_eq!(code, 2);
    assert!(err.contains("--secret-file") && err.contains("SELFHEAL_WEBHOOK_SECRET"), "{err}");
    // The old flag still works, and says why not to use it.
    let args: Vec<&str> = verify.iter().copied().chain(["--secret", "whsec-local-test"]).collect();
    let (code, out, err) = run(&args, &[], BODY);
    assert_eq!((code, out.trim()), (0, "valid"));
    assert!(err.contains("warning") && err.contains("process list"), "{err}");
    // Slack: its own variable.
    let slack_body = b"token=x&payload=%7B%7D";
    let ts = "1531420618";
    let sig = selfheal::signature::sign_slack(b"slack-signing-secret", 1531420618, slack_body);
    let slack = ["verify-signature", "--provider", "slack", "--signature", &sig, "--timestamp", ts, "--at", ts];
    let (code, out, err) = run(&slack, &[("SELFHEAL_SLACK_SIGNING_SECRET", "slack-signing-secret")], slack_body);
    assert_eq!((code, out.trim()), (0, "valid"), "{err}");
    // A readable secrets file works, with a warning.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let args: Vec<&str> = verify.iter().copied().chain(["--secret-file", file.to_str().unwrap()]).collect();
        let (code, _, err) = run(&args, &[], BODY);
        assert_eq!(code, 0);
        assert!(err.contains("readable by other users"), "{err}");
    }
    let _ = std::fs::remove_file(file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_webhook_signs_with_a_secret_from_the_environment_or_a_file() {
    let secrets = selfheal::config::Secrets {
        pagerduty_webhook_secrets: vec![secrecy::SecretString::from("whsec-replay".to_string())],
        ..Default::default()
    };
    let deps = selfheal::wiring::build_deps(
        selfheal::config::Settings::from_sources(None, |_| None).unwrap(),
        secrets,
        Arc::new(selfheal::store::TableStore::new(selfheal::adapters::memory::MemoryTable::new())),
        Arc::new(selfheal::wiring::Unconfigured("orchestrator")),
        Arc::new(selfheal::ports::SystemClock::real()),
    );
    let (base, _server) = selfheal_testkit::spawn(selfheal_cli::server::router(Arc::new(deps)), 0).await.unwrap();
    let payload = std::env::temp_dir().join(format!("selfheal-replay-{}.json", uuid::Uuid::new_v4().simple()));
    std::fs::write(&payload, r#"{"event":{"id":"01REPLAY","event_type":"pagey.ping","resource_type":"pagey","occurred_at":"2026-11-28T10:00:00Z","agent":null,"client":null,"data":{}}}"#).unwrap();
    let file = secret_file("whsec-replay\n");
    let url = format!("{base}/webhooks/pagerduty");
    // (extra arguments, environment, expected status)
    type Case<'a> = (Vec<String>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (vec![], vec![("SELFHEAL_WEBHOOK_SECRET", "whsec-replay")], "202"),
        (vec!["--secret-file".into(), file.display().to_string()], vec![], "202"),
        (vec![], vec![("SELFHEAL_WEBHOOK_SECRET", "whsec-other")], "401"),
    ];
    for (extra, env, want) in cases {
        let mut args = vec!["replay-webhook".to_string(), payload.display().to_string(), "--to".into(), url.clone()];
        args.extend(extra);
        let env: Vec<(String, String)> = env.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let (code, out, err) = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            run(&args, &env, b"")
        })
        .await
        .unwrap();
        assert!(out.starts_with(want), "want {want}, got {code} {out} {err}");
        assert!(!err.contains("warning"), "{err}");
    }
    let _ = std::fs::remove_file(file);
    let _ = std::fs::remove_file(payload);
}
