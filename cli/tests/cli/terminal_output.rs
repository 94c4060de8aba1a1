//! Outside text never reaches the operator's terminal raw: an incident title from PagerDuty with
//! ESC, BEL, NUL, CR, an 8-bit CSI and a bidirectional override, printed by `selfheal status`
//! (text and `--json`), `services show`, and `replay-webhook` (the endpoint's answer, text and
//! `--json`).

use serde_json::json;
use std::process::Command;
use std::sync::Arc;

use selfheal::adapters::sqlite::SqliteTable;
use selfheal::domain::{AuditEvent, Incident, IncidentId, ServiceId, ServiceName, ServiceRef, Urgency};
use selfheal::ports::IncidentStore;
use selfheal::store::TableStore;

/// Everything a terminal would act on instead of showing (line feeds are the output's own).
fn acts_on_terminal(c: char) -> bool {
    (c.is_control() && c != '\n')
        || matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

const HOSTILE: &str = "checkout down\u{1b}]0;owned\u{7}\u{1b}[2J\r\0\u{9b}31m\u{202e}gpj.exe";

fn selfheal(args: &[&str]) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_selfheal")).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn assert_safe(what: &str, printed: &str) {
    let bad: Vec<String> = printed.chars().filter(|c| acts_on_terminal(*c)).map(|c| format!("{:?}", c)).collect();
    assert!(bad.is_empty(), "{what} printed {bad:?} raw:\n{printed}");
}

#[tokio::test]
async fn status_and_services_show_escape_outside_text() {
    let db = std::env::temp_dir().join(format!("selfheal-term-{}.sqlite", uuid::Uuid::new_v4().simple()));
    let store = Arc::new(TableStore::new(SqliteTable::open(&db).unwrap()));
    let id = IncidentId::parse("PTERM1").unwrap();
    let service = ServiceRef { id: ServiceId::parse("PSVC1").unwrap(), name: ServiceName::parse("checkout").unwrap() };
    let now = chrono::Utc::now();
    store.create_incident(&Incident::new(id.clone(), HOSTILE.to_string(), service, Urgency::High, now)).await.unwrap();
    store
        .append_audit(
            &id,
            &AuditEvent::new(now, "slack:U1\u{1b}[31m", "approval\u{9b}decided", json!({"title": HOSTILE})),
        )
        .await
        .unwrap();
    let settings: selfheal::domain::ServiceSettings = serde_json::from_value(json!({
        "service": "PSVC1",
        "checks": [{"name": format!("health {HOSTILE}"), "url": "http://127.0.0.1:9/health"}],
        "updated_at": now,
        "updated_by": "op\u{1b}[2J\u{85}",
    }))
    .unwrap();
    store.put_service_settings(&settings).await.unwrap();
    let db = db.to_str().unwrap();

    let (text, _) = selfheal(&["status", "PTERM1", "--db", db]);
    assert_safe("status", &text);
    assert!(text.contains("checkout down\\x1b]0;owned\\x07"), "escaped, still readable:\n{text}");
    let (json_out, _) = selfheal(&["status", "PTERM1", "--db", db, "--json"]);
    assert_safe("status --json", &json_out);
    let parsed: serde_json::Value = serde_json::from_str(json_out.trim()).unwrap();
    assert_eq!(parsed["incident"]["title"], HOSTILE, "the JSON still carries the exact title");
    let (shown, _) = selfheal(&["services", "show", "PSVC1", "--db", db]);
    assert_safe("services show", &shown);
    let parsed: serde_json::Value = serde_json::from_str(shown.trim()).expect("pretty JSON that still parses");
    assert_eq!(parsed["checks"][0]["name"], format!("health {HOSTILE}"));
    let _ = std::fs::remove_file(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_webhook_escapes_the_endpoints_answer() {
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(|| async { (axum::http::StatusCode::BAD_GATEWAY, HOSTILE.to_string()) }));
    let (base, _server) = selfheal_testkit::spawn(app, 0).await.unwrap();
    let dir = std::env::temp_dir().join(format!("selfheal-term-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let (payload, secret) = (dir.join("ping.json"), dir.join("secret"));
    std::fs::write(&payload, r#"{"event":{"id":"01T","event_type":"pagey.ping"}}"#).unwrap();
    std::fs::write(&secret, "whsec-term\n").unwrap();
    let url = format!("{base}/hook");
    let replay = |extra: &[&str]| {
        let mut args = vec![
            "replay-webhook".to_string(),
            payload.display().to_string(),
            "--secret-file".into(),
            secret.display().to_string(),
            "--to".into(),
            url.clone(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        tokio::task::spawn_blocking(move || Command::new(env!("CARGO_BIN_EXE_selfheal")).args(&args).output().unwrap())
    };
    let out = replay(&[]).await.unwrap();
    assert_eq!(out.status.code(), Some(1), "a 502 is a failure");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.starts_with("502 "), "{printed}");
    assert_safe("replay-webhook", &printed);

    // The same answer as JSON: escaped for the terminal, and still exactly what was answered.
    let out = replay(&["--json", "--webhook-id", "replay-term-1"]).await.unwrap();
    assert_eq!(out.status.code(), Some(1), "the same exit code with --json");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_safe("replay-webhook --json", &printed);
    assert_eq!(printed.lines().count(), 1, "{printed}");
    let answer: serde_json::Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(
        answer,
        json!({"status": 502, "body": HOSTILE, "webhook_id": "replay-term-1", "url": format!("{base}/hook")})
    );
}
