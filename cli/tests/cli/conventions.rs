//! What every verb does the same way: a closed stdout ends it quietly (no panic), a store that
//! is not there is an error naming the path (never a fresh store nobody reads), and the shell
//! completion script is there to install.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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
