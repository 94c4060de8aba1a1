//! The operator plane: which store the operator verbs (`runbooks push`, `killswitch`, `status`,
//! `stats`, `services`) read and write. Locally that is the embedded SQLite file; on AWS it is
//! the deployed DynamoDB table, named directly (`--table`) or found through the CloudFormation
//! stack's outputs (`--stack`, which also yields the secret and the state machine). Opening is
//! done here once, so every verb resolves a target the same way.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_config::SdkConfig;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use selfheal::adapters::dynamodb::DynamoTable;
use selfheal::adapters::sqlite::SqliteTable;
use selfheal::config::Secrets;
use selfheal::domain::{ServiceSettings, ServiceSettingsError};
use selfheal::ports::{CheckSpec, IncidentStore};
use selfheal::store::TableStore;

/// The embedded store's path when neither `--db` nor `SELFHEAL_DB` says otherwise.
pub const DEFAULT_DB: &str = ".selfheal/selfheal.sqlite";

/// Failures of the operator plane, each saying what to fix.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("no AWS region is configured: set AWS_REGION (or a region in the AWS_PROFILE's config)")]
    NoRegion,
    #[error("cannot open the embedded store {path}: {why}")]
    Sqlite { path: String, why: String },
    #[error(
        "no store at {path}: check --db (or SELFHEAL_DB); `selfheal serve --db {path}` creates it, as do `runbooks push` and `services push`"
    )]
    NoStore { path: String },
    #[error("CloudFormation stack {stack}: {why}")]
    Stack { stack: String, why: String },
    #[error(
        "CloudFormation stack {stack} has no {output} output (is it a selfheal stack? see template.yaml; pass --secrets FILE for the secrets)"
    )]
    MissingOutput { stack: String, output: &'static str },
    #[error("{path}: {why}")]
    ServicesFile { path: String, why: String },
    #[error("{path}: {source}")]
    InvalidService {
        path: String,
        #[source]
        source: Box<ServiceSettingsError>,
    },
    #[error("cannot read {path}: {why}")]
    Read { path: String, why: String },
    #[error("secrets: {0}")]
    Secrets(String),
    #[error(transparent)]
    Store(#[from] selfheal::error::StoreError),
}

/// Where the verb reads and writes. At most one of the three may be given; with none, the
/// embedded store at `$SELFHEAL_DB` or `.selfheal/selfheal.sqlite`.
#[derive(clap::Args, Debug, Clone, Default)]
#[group(id = "store_target", multiple = false)]
pub struct StoreArgs {
    /// Embedded SQLite store [default: $SELFHEAL_DB, else .selfheal/selfheal.sqlite].
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// The deployed DynamoDB table, reached with the usual AWS environment (AWS_PROFILE,
    /// AWS_REGION, AWS_ENDPOINT_URL).
    #[arg(long, value_name = "NAME")]
    pub table: Option<String>,
    /// A deployed selfheal CloudFormation stack: its TableName output (and SensoSecretArn,
    /// StateMachineArn where a verb needs them), with the usual AWS environment.
    #[arg(long, value_name = "NAME")]
    pub stack: Option<String>,
}

impl StoreArgs {
    /// The target the flags name. `SELFHEAL_DB` is read here rather than through clap's `env`,
    /// because clap would count an exported `SELFHEAL_DB` as a given `--db` and refuse `--table`.
    pub fn target(&self) -> StoreTarget {
        if let Some(table) = &self.table {
            return StoreTarget::Table(table.clone());
        }
        if let Some(stack) = &self.stack {
            return StoreTarget::Stack(stack.clone());
        }
        let db = self.db.clone().unwrap_or_else(|| {
            std::env::var_os("SELFHEAL_DB")
                .filter(|v| !v.is_empty())
                .map_or_else(|| PathBuf::from(DEFAULT_DB), PathBuf::from)
        });
        StoreTarget::Sqlite(db)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreTarget {
    Sqlite(PathBuf),
    Table(String),
    Stack(String),
}

/// What a deployed stack tells the operator plane (its `Outputs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackOutputs {
    pub stack: String,
    pub table_name: String,
    pub secret_arn: Option<String>,
    pub state_machine_arn: Option<String>,
}

/// The backend behind an opened store, for the verbs that need more than the store port
/// (`stats` enumerates incidents differently on each).
pub enum Backend {
    Sqlite {
        path: PathBuf,
        table: Arc<SqliteTable>,
    },
    /// The SDK configuration is boxed: it is large, and the SQLite variant is common.
    Dynamo {
        table: String,
        client: aws_sdk_dynamodb::Client,
        sdk: Box<SdkConfig>,
    },
}

/// An opened operator store.
pub struct OperatorStore {
    pub store: Arc<dyn IncidentStore>,
    pub backend: Backend,
    /// Set when the target was `--stack`.
    pub stack: Option<StackOutputs>,
}

impl OperatorStore {
    /// Where the data lives, for messages ("no incident X in …").
    pub fn location(&self) -> String {
        match (&self.backend, &self.stack) {
            (Backend::Sqlite { path, .. }, _) => path.display().to_string(),
            (Backend::Dynamo { table, .. }, Some(s)) => format!("DynamoDB table {table} (stack {})", s.stack),
            (Backend::Dynamo { table, .. }, None) => format!("DynamoDB table {table}"),
        }
    }

    /// Secrets for verbs that call SaaS APIs (`runbooks push`): the `--secrets` file when given,
    /// else the stack's secret in Secrets Manager, else none (the verb then reports what is
    /// missing when it needs it).
    pub async fn secrets(&self, file: Option<&Path>) -> Result<Secrets, OperatorError> {
        if let Some(path) = file {
            return Secrets::from_toml(&read(path)?).map_err(|e| OperatorError::Secrets(e.to_string()));
        }
        match (&self.backend, &self.stack) {
            (Backend::Dynamo { sdk, .. }, Some(stack)) => {
                // Asked for the stack's secret and it names none: say so, rather than failing
                // later with a "not configured" that hides where the key was expected.
                let arn = stack.secret_arn.as_deref().ok_or_else(|| OperatorError::MissingOutput {
                    stack: stack.stack.clone(),
                    output: "SensoSecretArn",
                })?;
                let client = aws_sdk_secretsmanager::Client::new(sdk);
                Secrets::from_secrets_manager(&client, arn).await.map_err(|e| OperatorError::Secrets(e.to_string()))
            }
            _ => Ok(Secrets::default()),
        }
    }
}

/// Whether a verb may create a missing embedded store. Only the verbs that load a store's
/// content (`runbooks push`, `services push`) may; everything else, the kill switch included,
/// refuses, so a mistyped `--db` is an error instead of a fresh store nobody reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    Refuse,
    Create,
}

impl StoreTarget {
    pub async fn open(&self, missing: Missing) -> Result<OperatorStore, OperatorError> {
        match self {
            StoreTarget::Sqlite(path) => {
                if !path.exists() {
                    if missing == Missing::Refuse {
                        return Err(OperatorError::NoStore { path: path.display().to_string() });
                    }
                    eprintln!("selfheal: creating a new store at {}", path.display());
                }
                let open = || {
                    SqliteTable::open(path)
                        .map_err(|e| OperatorError::Sqlite { path: path.display().to_string(), why: e.to_string() })
                };
                // Two connections to one file, as `serve` has: the store owns one, the engine
                // (execution index, for `stats`) the other.
                Ok(OperatorStore {
                    store: Arc::new(TableStore::new(open()?)),
                    backend: Backend::Sqlite { path: path.clone(), table: Arc::new(open()?) },
                    stack: None,
                })
            }
            StoreTarget::Table(name) => Ok(dynamo(aws().await?, name.clone(), None)),
            StoreTarget::Stack(stack) => {
                let sdk = aws().await?;
                let outputs = stack_outputs(&aws_sdk_cloudformation::Client::new(&sdk), stack).await?;
                Ok(dynamo(sdk, outputs.table_name.clone(), Some(outputs)))
            }
        }
    }
}

async fn aws() -> Result<SdkConfig, OperatorError> {
    let sdk = selfheal::aws::sdk_config(None).await;
    // Without a region every call fails with an opaque dispatch error; say it up front.
    if sdk.region().is_none() {
        return Err(OperatorError::NoRegion);
    }
    Ok(sdk)
}

fn dynamo(sdk: SdkConfig, table: String, stack: Option<StackOutputs>) -> OperatorStore {
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    OperatorStore {
        store: Arc::new(TableStore::new(DynamoTable::new(client.clone(), table.clone()))),
        backend: Backend::Dynamo { table, client, sdk: Box::new(sdk) },
        stack,
    }
}

/// The stack's `TableName` (required), `SensoSecretArn` (or an older stack's `SecretArn`) and
/// `StateMachineArn` outputs.
pub async fn stack_outputs(cfn: &aws_sdk_cloudformation::Client, stack: &str) -> Result<StackOutputs, OperatorError> {
    use aws_sdk_cloudformation::error::ProvideErrorMetadata;
    let err = |why: String| OperatorError::Stack { stack: stack.to_string(), why };
    let out = cfn.describe_stacks().stack_name(stack).send().await.map_err(|e| {
        let code = e.code().unwrap_or("request failed");
        err(format!("DescribeStacks: {code}: {}", e.message().unwrap_or("")))
    })?;
    let found = out.stacks().first().ok_or_else(|| err("DescribeStacks returned no stack".into()))?;
    let output = |key: &str| {
        found
            .outputs()
            .iter()
            .find(|o| o.output_key() == Some(key))
            .and_then(|o| o.output_value())
            .filter(|v| !v.trim().is_empty())
            .map(str::to_string)
    };
    Ok(StackOutputs {
        stack: stack.to_string(),
        table_name: output("TableName")
            .ok_or(OperatorError::MissingOutput { stack: stack.to_string(), output: "TableName" })?,
        // `runbooks push` needs only Senso's key; stacks before the per-integration split had
        // one `SecretArn` holding everything.
        secret_arn: output("SensoSecretArn").or_else(|| output("SecretArn")),
        state_machine_arn: output("StateMachineArn"),
    })
}

fn read(path: &Path) -> Result<String, OperatorError> {
    std::fs::read_to_string(path)
        .map_err(|e| OperatorError::Read { path: path.display().to_string(), why: e.to_string() })
}

/// One `[[service]]` table of a services file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceEntry {
    service: String,
    #[serde(default)]
    auto_execute: bool,
    target: Option<String>,
    #[serde(default)]
    approvers: Vec<String>,
    /// The first-level on-call of the incident's escalation policy may approve too.
    #[serde(default)]
    oncall_may_approve: bool,
    /// Values for runbook parameters declared `source = "service"` (`[service.parameters]`).
    #[serde(default)]
    parameters: std::collections::BTreeMap<String, String>,
    /// Kept raw so unknown keys can be reported: `CheckSpec` itself ignores them, and a
    /// misspelt `expect_text` must not silently weaken a check.
    #[serde(default)]
    check: Vec<toml::Table>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServicesFile {
    #[serde(default)]
    service: Vec<ServiceEntry>,
}

fn check_spec(service: &str, index: usize, raw: toml::Table) -> Result<CheckSpec, String> {
    let label = raw.get("name").and_then(toml::Value::as_str).map_or(format!("#{}", index + 1), |n| format!("{n:?}"));
    let spec = CheckSpec::deserialize(toml::Value::Table(raw.clone()))
        .map_err(|e| format!("service {service}, check {label}: {}", e.message()))?;
    // Every key that `CheckSpec` knows survives a round trip (TOML has no null, so a given key
    // always has a value); a key that does not is one it ignored.
    let known = toml::Table::try_from(&spec).map_err(|e| format!("service {service}, check {label}: {e}"))?;
    if let Some(unknown) = raw.keys().find(|k| !known.contains_key(*k)) {
        return Err(format!("service {service}, check {label}: unknown key {unknown:?}"));
    }
    Ok(spec)
}

/// Parse and validate a services file (TOML, `[[service]]` tables with `[[service.check]]`
/// tables; see `infra/services.example.toml`). Every service is checked before any is stored,
/// so a bad file changes nothing.
pub fn parse_services(path: &Path, by: &str, now: DateTime<Utc>) -> Result<Vec<ServiceSettings>, OperatorError> {
    let text = read(path)?;
    let shown = path.display().to_string();
    let file_err = |why: String| OperatorError::ServicesFile { path: shown.clone(), why };
    let file: ServicesFile = toml::from_str(&text).map_err(|e| file_err(e.to_string().trim_end().to_string()))?;
    if file.service.is_empty() {
        return Err(file_err("no [[service]] tables: nothing to push".into()));
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(file.service.len());
    for entry in file.service {
        if !seen.insert(entry.service.clone()) {
            return Err(file_err(format!("service {} appears twice; the second would silently win", entry.service)));
        }
        let checks = entry
            .check
            .into_iter()
            .enumerate()
            .map(|(i, raw)| check_spec(&entry.service, i, raw))
            .collect::<Result<Vec<_>, _>>()
            .map_err(file_err)?;
        let settings = ServiceSettings {
            service: entry.service,
            checks,
            target: entry.target,
            auto_execute: entry.auto_execute,
            approvers: entry.approvers,
            oncall_may_approve: entry.oncall_may_approve,
            parameters: entry.parameters,
            updated_at: now,
            updated_by: by.to_string(),
        };
        settings
            .validate()
            .map_err(|source| OperatorError::InvalidService { path: shown.clone(), source: Box::new(source) })?;
        out.push(settings);
    }
    Ok(out)
}

/// Who an operator change is attributed to.
pub fn operator_name() -> String {
    std::env::var("USER").ok().filter(|u| !u.trim().is_empty()).unwrap_or_else(|| "operator".into())
}

/// The one-line summary `services push` and `services list` print per service.
pub fn service_summary(s: &ServiceSettings) -> serde_json::Value {
    serde_json::json!({
        "service": s.service,
        "checks": s.checks.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        "target": s.fix_target(),
        "auto_execute": s.auto_execute,
        "approvers": s.approvers,
        "updated_at": s.updated_at,
        "updated_by": s.updated_by,
    })
}

// ------------------------------------------------------------------ terminal output
//
// Text from outside (PagerDuty titles and notes, Slack ids, remote error messages) reaches the
// operator's terminal through these verbs. A raw ESC starts an escape sequence (retitle the
// window, rewrite earlier lines, on some terminals write files), CR overwrites what was printed,
// BEL and NUL annoy or truncate, and bidirectional overrides reorder what is read. Every such
// character is printed as a visible escape instead.

/// Characters a terminal acts on rather than shows: every Unicode control (C0, DEL, C1), the
/// bidirectional controls, and the line and paragraph separators.
fn acts_on_terminal(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}')
}

fn escape_into(out: &mut String, c: char) {
    use std::fmt::Write;
    let _ = match c {
        '\n' => write!(out, "\\n"),
        '\r' => write!(out, "\\r"),
        '\t' => write!(out, "\\t"),
        c if (c as u32) < 0x80 => write!(out, "\\x{:02x}", c as u32),
        c => write!(out, "\\u{{{:04x}}}", c as u32),
    };
}

/// One line of outside text, safe to print: controls, newlines included, shown as escapes
/// (`\x1b`, `\r`, `\n`, `\u{202e}`).
/// Writes one line to stdout. A closed stdout (`selfheal … | head`) ends the process quietly
/// with success, as coreutils and ripgrep do, where `println!` would panic.
pub fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(line).and_then(|()| out.write_all(b"\n")).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("selfheal: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

pub fn term_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if acts_on_terminal(c) {
            escape_into(&mut out, c);
        } else {
            out.push(c);
        }
    }
    out
}

/// Several lines of outside text (an error with context, a note): as [`term_line`], but line
/// feeds and tabs are kept.
pub fn term_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c != '\n' && c != '\t' && acts_on_terminal(c) {
            escape_into(&mut out, c);
        } else {
            out.push(c);
        }
    }
    out
}

/// JSON for the terminal. serde_json already escapes C0 controls inside strings; DEL, the C1
/// controls and the bidirectional controls it leaves raw become `\uXXXX` escapes too, which is
/// the same JSON value. (Outside strings there is only ASCII: the pretty printer's newlines,
/// kept, and no other control, so every character escaped here is inside a string.)
pub fn term_json(value: &serde_json::Value, pretty: bool) -> String {
    let text = if pretty { serde_json::to_string_pretty(value) } else { serde_json::to_string(value) };
    // Serialising a `Value` cannot fail (its keys are strings); an empty object is the fallback.
    let text = text.unwrap_or_else(|_| "{}".to_string());
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        // serde_json already escapes every C0 control character inside strings, so a literal
        // newline here is the pretty printer's own layout: keep it, or the JSON stops parsing.
        if acts_on_terminal(c) && c != '\n' {
            use std::fmt::Write;
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<ServiceSettings>, String> {
        let path = std::env::temp_dir().join(format!("selfheal-services-{}.toml", uuid::Uuid::new_v4().simple()));
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
        let out = parse_services(&path, "tester", Utc::now()).map_err(|e| e.to_string());
        let _ = std::fs::remove_file(&path);
        out
    }

    const GOOD: &str = r#"
[[service]]
service = "PDEMOCHK"
auto_execute = true
approvers = ["U123"]
[[service.check]]
name = "checkout health"
url = "http://127.0.0.1:8081/health"
expect_text = "checkout healthy"
deadline_ms = 8000
"#;

    #[test]
    fn a_good_file_parses_with_defaults() {
        let s = parse(GOOD).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].service, "PDEMOCHK");
        assert!(s[0].auto_execute);
        assert_eq!(s[0].checks[0].expect_status, 200);
        assert_eq!(s[0].fix_target(), Some("http://127.0.0.1:8081/health"));
        assert_eq!(s[0].updated_by, "tester");
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let cases = [
            (GOOD.replace("expect_text", "expect_txt"), "unknown key \"expect_txt\""),
            (GOOD.replace("http://127.0.0.1:8081/health", "ftp://x/health"), "not http or https"),
            (GOOD.replace("auto_execute", "auto_exec"), "auto_exec"),
            (format!("{GOOD}{}", &GOOD[GOOD.find("[[service.check]]").unwrap()..]), "two checks are named"),
            (format!("{GOOD}{GOOD}"), "appears twice"),
            ("[[service]]\nservice = \"PX\"\n".to_string(), "at least one [[service.check]]"),
            ("".to_string(), "no [[service]] tables"),
            (GOOD.replace("approvers = [\"U123\"]", "target = \"http://x/'; rm -rf /\""), "shell quoting"),
            (GOOD.replace("U123", "not a user"), "not a Slack user id"),
        ];
        for (text, want) in cases {
            let err = parse(&text).unwrap_err();
            assert!(err.contains(want), "{want:?} not in {err:?}");
        }
    }

    #[test]
    fn the_example_file_is_valid() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/services.example.toml"));
        let all = parse_services(path, "tester", Utc::now()).unwrap();
        let names: Vec<&str> = all.iter().map(|s| s.service.as_str()).collect();
        assert_eq!(names, ["PDEMOCHK", "payments"]);
        assert_eq!(all[1].checks[1].steps.len(), 4);
        assert!(all[1].oncall_may_approve && !all[0].oncall_may_approve);
    }

    #[test]
    fn store_flags_resolve_to_one_target() {
        let t = StoreArgs { table: Some("T".into()), ..Default::default() }.target();
        assert_eq!(t, StoreTarget::Table("T".into()));
        let s = StoreArgs { stack: Some("S".into()), ..Default::default() }.target();
        assert_eq!(s, StoreTarget::Stack("S".into()));
        let d = StoreArgs { db: Some("x.sqlite".into()), ..Default::default() }.target();
        assert_eq!(d, StoreTarget::Sqlite("x.sqlite".into()));
    }

    #[test]
    fn terminal_output_shows_controls_as_escapes() {
        let title = "db down\x1b]0;pwned\x07\r\0ok\u{9b}31m\u{202e}txt.exe\nnext\x7f";
        let line = term_line(title);
        assert!(!line.chars().any(acts_on_terminal), "{line:?}");
        assert_eq!(line, "db down\\x1b]0;pwned\\x07\\r\\x00ok\\u{009b}31m\\u{202e}txt.exe\\nnext\\x7f");
        let text = term_text(title);
        assert!(text.contains("txt.exe\nnext") && !text.contains('\x1b') && !text.contains('\r'), "{text:?}");
        // Plain text, accents and emoji pass unchanged.
        assert_eq!(term_line("Café ☕ 504 — checkout"), "Café ☕ 504 — checkout");
        let json = term_json(&serde_json::json!({ "title": title }), false);
        assert!(!json.chars().any(acts_on_terminal), "{json:?}");
        let back: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back["title"], title, "the escaped JSON is the same value");
        let pretty = term_json(&serde_json::json!({ "title": title, "list": [1, 2] }), true);
        assert!(pretty.contains('\n') && !pretty.chars().any(|c| c != '\n' && acts_on_terminal(c)), "{pretty:?}");
        let back: serde_json::Value = serde_json::from_str(&pretty).unwrap();
        assert_eq!(back["title"], title, "pretty output keeps its layout and parses");
    }
}
