//! `selfheal parse-note` prints exactly the documented fields.

use std::io::Write;
use std::process::{Command, Stdio};

#[test]
fn prints_exactly_these_fields() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_selfheal"))
        .arg("parse-note")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"**Root cause:** Redis maxmemory reached\n**Confidence:** 0.91\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["alternatives", "confidence", "evidence", "root_cause", "services"]);
    assert_eq!(v["confidence"], 0.91);
    assert_eq!(v["root_cause"], "Redis maxmemory reached");
}

#[test]
fn a_progress_note_has_no_root_cause() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_selfheal"))
        .arg("parse-note")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"Still investigating, will update.").unwrap();
    let out = child.wait_with_output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["root_cause"].is_null());
}
