//! The `verify-signature` verb, driven as a user would: body on stdin, exit code, one-line reason.

use std::io::Write;
use std::process::{Command, Stdio};

fn run(args: &[&str], body: &[u8]) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_selfheal"))
        .arg("verify-signature")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(body).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

const BODY: &[u8] = br#"{"event":{"id":"01TEST","event_type":"incident.annotated"}}"#;
const SIG_LOCAL: &str = "v1=4a3e86e29ec650029adb6a6c10cc200ad6503212d78595b58302bdc279ff0ab6";
const SIG_OLD: &str = "v1=de3685f2900734012fca787d84e1514269071fb6831f715b1ad6edf2d5fb55f1";

#[test]
fn pagerduty_valid_rotated_and_forged() {
    let (code, out, _) =
        run(&["--provider", "pagerduty", "--secret", "whsec-local-test", "--signature", SIG_LOCAL], BODY);
    assert_eq!((code, out.trim()), (0, "valid"));
    let header = format!("{SIG_LOCAL},{SIG_OLD}");
    let (code, _, _) = run(
        &["--provider", "pagerduty", "--secret", "nope", "--secret", "whsec-old-secret", "--signature", &header],
        BODY,
    );
    assert_eq!(code, 0);
    let (code, _, err) =
        run(&["--provider", "pagerduty", "--secret", "whsec-local-test", "--signature", SIG_OLD], BODY);
    assert_eq!(code, 1);
    // One line of reason (after `--secret`'s warning; see secret_sources.rs for the other forms).
    let reason: Vec<&str> = err.lines().filter(|l| !l.starts_with("selfheal: warning:")).collect();
    assert_eq!(reason, ["invalid: signature does not match"]);
    let (code, _, err) =
        run(&["--provider", "pagerduty", "--secret", "whsec-local-test", "--signature", "v1=xyz"], BODY);
    assert_eq!(code, 1);
    assert!(err.contains("malformed"), "{err}");
}

#[test]
fn slack_official_vector_with_pinned_clock() {
    let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    let sig = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
    let base = [
        "--provider",
        "slack",
        "--secret",
        "8f742231b10e8888abcd99yyyzzz85a5",
        "--timestamp",
        "1531420618",
        "--signature",
        sig,
    ];
    let (code, _, _) = run(&[&base[..], &["--at", "1531420618"]].concat(), body);
    assert_eq!(code, 0);
    // Without --at the real clock is far outside the window.
    let (code, _, err) = run(&base, body);
    assert_eq!(code, 1);
    assert!(err.contains("away from now"), "{err}");
}

#[test]
fn usage_errors_do_not_panic() {
    let (code, _, err) = run(&["--provider", "slack", "--secret", "a", "--secret", "b", "--signature", "v0=00"], b"");
    assert_eq!(code, 2);
    assert!(!err.contains("panicked"), "{err}");
    let (code, _, err) = run(&["--provider", "pagerduty", "--secret", "", "--signature", SIG_LOCAL], BODY);
    assert_eq!(code, 1);
    assert!(err.contains("no signing secret"), "{err}");
}

/// `--json`: the verdict on stdout, valid or not, with the same exit codes; the reason still goes
/// to stderr, and a usage error prints no JSON.
#[test]
fn json_prints_the_verdict_either_way() {
    let verdict = |out: &str| -> serde_json::Value {
        assert_eq!(out.lines().count(), 1, "one JSON object: {out}");
        serde_json::from_str(out).unwrap()
    };
    let args = ["--provider", "pagerduty", "--secret", "whsec-local-test", "--json", "--signature"];
    let (code, out, _) = run(&[&args[..], &[SIG_LOCAL]].concat(), BODY);
    assert_eq!(code, 0);
    assert_eq!(verdict(&out), serde_json::json!({"provider": "pagerduty", "valid": true, "reason": null}));

    let (code, out, err) = run(&[&args[..], &[SIG_OLD]].concat(), BODY);
    assert_eq!(code, 1);
    let v = verdict(&out);
    assert_eq!((v["provider"].as_str(), v["valid"].as_bool()), (Some("pagerduty"), Some(false)), "{v}");
    assert_eq!(v["reason"], "signature does not match");
    assert!(err.lines().any(|l| l == "invalid: signature does not match"), "{err}");

    let slack = ["--provider", "slack", "--secret", "s3cret", "--timestamp", "1531420618", "--json"];
    let (code, out, _) = run(&[&slack[..], &["--signature", "v0=00"]].concat(), b"x");
    assert_eq!(code, 1);
    assert_eq!(verdict(&out)["provider"], "slack");

    // A usage error is an error, not a verdict: stderr and exit 2, nothing on stdout.
    let (code, out, err) =
        run(&["--provider", "slack", "--secret", "a", "--secret", "b", "--json", "--signature", "v0=00"], b"");
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty(), "{out}");
}
