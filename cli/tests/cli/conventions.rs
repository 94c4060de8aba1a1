//! What every verb does the same way: a closed stdout ends it quietly (no panic), a store that
//! is not there is an error naming the path (never a fresh store nobody reads), every verb takes
//! `--json` (and a verb whose output is JSON anyway prints the same with it), and the shell
//! completion script is there to install.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_selfheal");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fresh_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("selfheal-{tag}-{}", uuid::Uuid::new_v4().simple())).join("typo.sqlite")
}

/// `selfheal runbooks check infra/runbooks | head -0`: the reader is gone before the first line.
#[test]
fn a_closed_stdout_ends_a_verb_quietly() {
    for args in [vec!["runbooks", "check", "infra/runbooks"], vec!["completions", "bash"], vec!["parse-note"]] {
        let mut child = Command::new(BIN)
            .args(&args)
            .current_dir(repo())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Close our end of stdout first, then give the verb its input (parse-note reads stdin).
        drop(child.stdout.take());
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write;
            let _ = stdin.write_all(b"Root cause: pool exhausted\nConfidence: 80%\n");
        }
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?} panicked on a closed stdout: {stderr}");
        assert!(out.status.success(), "{args:?}: {:?} {stderr}", out.status);
    }
}

#[test]
fn read_only_verbs_and_the_kill_switch_never_create_a_store() {
    let typo = fresh_path("missing");
    let path = typo.to_str().unwrap();
    for args in [
        vec!["status", "PX1", "--db", path],
        vec!["status", "PX1", "--db", path, "--json"],
        vec!["services", "list", "--db", path],
        vec!["services", "show", "PSVC1", "--db", path],
        vec!["stats", "--db", path],
        vec!["killswitch", "status", "--db", path],
        vec!["killswitch", "on", "--db", path],
        vec!["history", "inc-PX1-incident", "--db", path],
    ] {
        let out = Command::new(BIN).args(&args).env_remove("SELFHEAL_DB").output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded on a missing store");
        assert!(stderr.contains(&format!("no store at {path}")), "{args:?}: {stderr}");
        assert!(!typo.exists() && !typo.parent().unwrap().exists(), "{args:?} created {path}");
    }
    // SELFHEAL_DB names the store the same way as --db.
    let out = Command::new(BIN).args(["killswitch", "on"]).env("SELFHEAL_DB", path).output().unwrap();
    assert!(!out.status.success() && !typo.exists(), "killswitch on via SELFHEAL_DB");
}

/// The verbs that load a store's content may start one, and say so.
#[test]
fn services_push_creates_a_store_and_says_so() {
    let fresh = fresh_path("created");
    std::fs::create_dir_all(fresh.parent().unwrap()).unwrap();
    let path = fresh.to_str().unwrap();
    let services = repo().join("infra/services.example.toml");
    let out = Command::new(BIN).args(["services", "push"]).arg(&services).args(["--db", path]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("creating a new store at {path}")), "{stderr}");
    // ...which the read-only verbs then read.
    let listed = Command::new(BIN).args(["services", "list", "--db", path]).output().unwrap();
    assert!(listed.status.success());
    assert!(!listed.stdout.is_empty());
    let on = Command::new(BIN).args(["killswitch", "on", "--db", path]).output().unwrap();
    assert!(on.status.success(), "{}", String::from_utf8_lossy(&on.stderr));
    let _ = std::fs::remove_dir_all(fresh.parent().unwrap());
}

#[test]
fn completion_scripts_name_every_verb() {
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let out = Command::new(BIN).args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        for verb in ["demo", "serve", "status", "killswitch", "services", "runbooks", "stats", "history"] {
            assert!(script.contains(verb), "{shell} completion lacks {verb}");
        }
    }
    let bad = Command::new(BIN).args(["completions", "tcsh"]).output().unwrap();
    assert!(!bad.status.success());
}

/// The output convention: every verb (every leaf of the command tree) takes `--json`, and says
/// in its `--json` help what it prints.
#[test]
fn every_verb_takes_json() {
    fn leaves(cmd: &clap::Command, path: &str, out: &mut Vec<(String, clap::Command)>) {
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let sub_path = format!("{path} {}", sub.get_name());
            if sub.has_subcommands() {
                leaves(sub, &sub_path, out);
            } else {
                out.push((sub_path, sub.clone()));
            }
        }
    }
    let mut all = Vec::new();
    leaves(&<selfheal_cli::commands::Cli as clap::CommandFactory>::command(), "selfheal", &mut all);
    assert!(all.len() >= 18, "the walk found the verbs: {:?}", all.iter().map(|(p, _)| p).collect::<Vec<_>>());
    let mut without = Vec::new();
    for (path, cmd) in &all {
        let json = cmd.get_arguments().find(|a| a.get_long() == Some("json"));
        match json {
            Some(arg) if !arg.get_action().takes_values() && arg.get_help().is_some() => {}
            _ => without.push(path.clone()),
        }
    }
    assert!(without.is_empty(), "verbs without a documented `--json` flag: {without:#?}");
}

/// `selfheal ARGS` in the repository, with `stdin`: (exit code, stdout, stderr).
fn run(args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(repo())
        .env_remove("SELFHEAL_DB")
        .env_remove("SELFHEAL_SECRETS_FILE")
        .env_remove("SELFHEAL_NOTES_MODEL_FALLBACK")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(stdin).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The verbs whose output was JSON before `--json` existed keep printing it by default, and print
/// exactly the same with `--json`; their help says the output is JSON.
#[test]
fn verbs_whose_output_is_json_print_the_same_with_json() {
    let store = fresh_path("json-verbs");
    std::fs::create_dir_all(store.parent().unwrap()).unwrap();
    let db = store.to_str().unwrap();
    let mock = [
        "run-state-machine",
        "statemachine/incident.asl.json",
        "--mock-config",
        "statemachine/test/MockConfigFile.json",
        "--test-case",
        "PreflightHealthy",
        "--db",
        db,
    ];
    // A store with an execution and the example services in it.
    let (code, first, err) = run(&mock, b"");
    assert_eq!(code, 0, "{err}");
    let execution = serde_json::from_str::<Value>(&first).unwrap()["execution"].as_str().unwrap().to_string();
    let (code, _, err) = run(&["services", "push", "infra/services.example.toml", "--db", db], b"");
    assert_eq!(code, 0, "{err}");

    let note = b"Root cause: pool exhausted on checkout-db\nConfidence: 80%\n";
    let cases: [(&[&str], &[u8]); 7] = [
        (&["parse-note", "--no-model"], note),
        (&["runbooks", "check", "infra/runbooks"], b""),
        (&["services", "push", "infra/services.example.toml", "--db", db], b""),
        (&["services", "list", "--db", db], b""),
        (&["services", "show", "PDEMOCHK", "--db", db], b""),
        (&["stats", "--db", db], b""),
        (&["history", &execution, "--db", db], b""),
    ];
    for (args, stdin) in cases {
        let (code, plain, err) = run(args, stdin);
        assert_eq!(code, 0, "{args:?}: {err}");
        let with_json: Vec<&str> = args.iter().copied().chain(["--json"]).collect();
        let (code, json, err) = run(&with_json, stdin);
        assert_eq!(code, 0, "{with_json:?}: {err}");
        // `services push` stamps each service with the time of the push.
        let strip = |text: &str| -> Vec<Value> {
            let docs: Vec<Value> = serde_json::Deserializer::from_str(text).into_iter().map(Result::unwrap).collect();
            docs.into_iter()
                .map(|mut v| {
                    if args[..2] == ["services", "push"] {
                        v["updated_at"] = Value::Null;
                    }
                    v
                })
                .collect()
        };
        if args[..2] == ["services", "push"] {
            assert_eq!(strip(&plain), strip(&json), "{args:?}");
        } else {
            assert_eq!(plain, json, "{args:?}: the same output with --json");
        }
        assert!(!plain.trim().is_empty(), "{args:?} printed nothing");
    }
    // run-state-machine names each run afresh; everything else is the same.
    let mock_json: Vec<&str> = mock.iter().copied().chain(["--json"]).collect();
    let (code, second, err) = run(&mock_json, b"");
    assert_eq!(code, 0, "{err}");
    let (mut a, mut b): (Value, Value) =
        (serde_json::from_str(&first).unwrap(), serde_json::from_str(&second).unwrap());
    assert_eq!(second.lines().count(), 1);
    a["execution"] = Value::Null;
    b["execution"] = Value::Null;
    assert_eq!(a, b);

    // Their help says so.
    for verb in [
        &["parse-note"][..],
        &["run-state-machine"],
        &["runbooks", "check"],
        &["runbooks", "push"],
        &["services", "push"],
        &["services", "list"],
        &["services", "show"],
        &["stats"],
        &["history"],
    ] {
        let help: Vec<&str> = verb.iter().copied().chain(["--help"]).collect();
        let (code, text, _) = run(&help, b"");
        assert_eq!(code, 0);
        let about = text.split("Usage:").next().unwrap_or_default();
        assert!(about.contains("JSON"), "{verb:?} --help does not say its output is JSON:\n{text}");
    }
    let _ = std::fs::remove_dir_all(store.parent().unwrap());
}

/// `completions SHELL --json`: the same script, inside one JSON object.
#[test]
fn completions_as_json_carry_the_same_script() {
    let (code, plain, _) = run(&["completions", "zsh"], b"");
    assert_eq!(code, 0);
    let (code, json, err) = run(&["completions", "zsh", "--json"], b"");
    assert_eq!(code, 0, "{err}");
    assert_eq!(json.lines().count(), 1, "one line");
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["shell"], "zsh");
    assert_eq!(v["script"].as_str().unwrap().trim_end(), plain.trim_end());
}
