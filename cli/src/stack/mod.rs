//! `selfheal stack`: `template.yaml` run as written, on loopback. The SAM translator expands the
//! template; each function's real binary runs as its own process behind a Lambda Runtime API
//! emulator with exactly the environment the template gives it and the credentials of an IAM
//! identity whose policy is that function's role policy (moto enforces it); the local engine
//! serves the Step Functions API and invokes Task states through the Lambda Invoke API; an
//! HTTP API (payload format 2.0) fronts the two HTTP functions.

pub mod apigw;
pub mod iam;
pub mod lambda;
pub mod sfn_api;
pub mod template;

/// The account and region every emulated resource lives in (moto's defaults).
pub const ACCOUNT: &str = "123456789012";
pub const REGION: &str = "us-east-1";

/// Static credentials of one IAM identity.
#[derive(Clone)]
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCredentials").field("access_key_id", &self.access_key_id).finish_non_exhaustive()
    }
}

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use selfheal::adapters::embedded_browser;
use selfheal::adapters::sqlite::SqliteTable;
use selfheal::engine::Engine;
use selfheal::ports::SystemClock;

use lambda::{FunctionSpec, LambdaHost, LambdaTaskDispatcher};
use template::StackModel;

/// The moto launcher with resource-level IAM, shipped inside the binary.
const MOTO_IAM_PY: &str = include_str!("../../../scripts/moto_iam.py");

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error(transparent)]
    Template(#[from] template::TemplateError),
    #[error("moto: {0}")]
    Moto(String),
    #[error("{what}: {detail}")]
    Setup { what: String, detail: String },
    #[error(transparent)]
    Lambda(#[from] lambda::LambdaHostError),
}

fn setup(what: impl Into<String>) -> impl FnOnce(String) -> StackError {
    let what = what.into();
    move |detail| StackError::Setup { what, detail }
}

/// What `selfheal stack` needs to start.
#[derive(Debug, Clone)]
pub struct StackOptions {
    pub template: PathBuf,
    /// samconfig-style `Key=Value` parameter overrides.
    pub parameters: Option<PathBuf>,
    pub stack_name: String,
    /// Where the function binaries are (`cargo build --bins` puts them in target/debug).
    pub bin_dir: PathBuf,
    /// Logs of every function process and of moto; the engine's store.
    pub work_dir: PathBuf,
    /// Values to put into the stack's secrets after creating them (key → JSON value).
    pub secrets: BTreeMap<String, Value>,
    /// The Python with moto and the SAM translator (default: the project's `.venv`).
    pub python: Option<PathBuf>,
    /// Files a container image ships, by their path in the image, as found on this machine
    /// (default: `/opt/lightpanda/lightpanda` → the lightpanda wheel's binary in `.venv`).
    pub image_paths: BTreeMap<String, PathBuf>,
}

impl StackOptions {
    pub fn new(template: impl Into<PathBuf>, work_dir: impl Into<PathBuf>) -> Self {
        let bin_dir = default_bin_dir();
        Self {
            template: template.into(),
            parameters: None,
            stack_name: "selfheal".into(),
            bin_dir,
            work_dir: work_dir.into(),
            secrets: BTreeMap::new(),
            python: None,
            image_paths: BTreeMap::new(),
        }
    }
}

/// Where `cargo build --bins` left the function binaries: `SELFHEAL_FUNCTIONS_DIR`, else next to
/// this executable (target/debug/selfheal), else one folder up (a test binary in
/// target/debug/deps).
pub fn default_bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("SELFHEAL_FUNCTIONS_DIR") {
        return PathBuf::from(dir);
    }
    let exe_dir = std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf)).unwrap_or_default();
    [exe_dir.clone(), exe_dir.parent().map(Path::to_path_buf).unwrap_or_default()]
        .into_iter()
        .find(|d| d.join("intake").exists())
        .unwrap_or(exe_dir)
}

/// The Lightpanda binary of the project's `.venv` (the PyPI wheel the image installs too).
fn local_lightpanda(template: &Path) -> Option<PathBuf> {
    let venv = template.parent()?.join(".venv/lib");
    std::fs::read_dir(&venv)
        .ok()?
        .filter_map(Result::ok)
        .map(|d| d.path().join("site-packages/lightpanda/lightpanda"))
        .find(|p| p.exists())
        // The function runs in its own directory: a relative path would not reach the binary.
        .and_then(|p| std::fs::canonicalize(p).ok())
}

/// A moto server of the stack's own: IAM enforcement is switched on for the whole process, so
/// it cannot be shared with tests that use moto's default credentials.
pub struct Moto {
    pub endpoint: String,
    child: tokio::process::Child,
}

impl Moto {
    /// `python` runs moto through `scripts/moto_iam.py`, which makes moto check IAM policies
    /// against the table or secret a call acts on.
    async fn start(python: &Path, work_dir: &Path) -> Result<Moto, StackError> {
        let script = work_dir.join("moto_iam.py");
        std::fs::write(&script, MOTO_IAM_PY).map_err(|e| StackError::Moto(e.to_string()))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| StackError::Moto(e.to_string()))?
            .port();
        let log = std::fs::File::create(work_dir.join("moto.log")).map_err(|e| StackError::Moto(e.to_string()))?;
        let err = log.try_clone().map_err(|e| StackError::Moto(e.to_string()))?;
        let child = tokio::process::Command::new(python)
            .arg(&script)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(log)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                StackError::Moto(format!(
                    "cannot start moto with {}: {e} (bash scripts/setup-test-tools.sh installs it)",
                    python.display()
                ))
            })?;
        let endpoint = format!("http://127.0.0.1:{port}");
        for _ in 0..200 {
            if reqwest::get(format!("{endpoint}/moto-api/")).await.is_ok_and(|r| r.status().is_success()) {
                return Ok(Moto { endpoint, child });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(StackError::Moto(format!("moto did not answer on {endpoint}; see {}", work_dir.join("moto.log").display())))
    }

    /// From now on every request is authenticated and authorised against IAM.
    async fn enforce_iam(&self) -> Result<(), StackError> {
        let r = reqwest::Client::new()
            .post(format!("{}/moto-api/reset-auth", self.endpoint))
            .body("0")
            .send()
            .await
            .map_err(|e| StackError::Moto(e.to_string()))?;
        if !r.status().is_success() {
            return Err(StackError::Moto(format!("reset-auth answered {}", r.status())));
        }
        Ok(())
    }
}

/// SDK configuration for `credentials` against `endpoint`.
pub async fn sdk_config(endpoint: &str, credentials: &AwsCredentials) -> aws_config::SdkConfig {
    use aws_config::{BehaviorVersion, Region};
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            credentials.access_key_id.clone(),
            credentials.secret_access_key.clone(),
            None,
            None,
            "selfheal-stack",
        ))
        .load()
        .await
}

/// The deployed shape, running.
pub struct Stack {
    pub model: StackModel,
    pub moto: Moto,
    /// An operator identity allowed to do anything (runbooks push, killswitch, reading).
    pub admin: AwsCredentials,
    pub engine: Arc<Engine>,
    pub lambda: Arc<LambdaHost>,
    /// The Step Functions API.
    pub sfn_endpoint: String,
    /// The HTTP API (API Gateway) base URL.
    pub api_base: String,
    pub work_dir: PathBuf,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Stack {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        let _ = self.moto.child.start_kill();
    }
}

impl Stack {
    pub async fn start(options: StackOptions) -> Result<Stack, StackError> {
        std::fs::create_dir_all(&options.work_dir).map_err(|e| setup("work dir")(e.to_string()))?;
        let expanded = template::expand(&options.template, options.parameters.as_deref(), &options.stack_name).await?;
        let python = options.python.clone().unwrap_or_else(|| template::python_for(&options.template));
        let mut options = options;
        if !options.image_paths.contains_key(embedded_browser::DEFAULT_BIN)
            && let Some(bin) = local_lightpanda(&options.template)
        {
            options.image_paths.insert(embedded_browser::DEFAULT_BIN.to_string(), bin);
        }
        let moto = Moto::start(&python, &options.work_dir).await?;
        // Set-up runs as moto's default (unauthenticated) caller, before IAM is enforced.
        let bootstrap = AwsCredentials { access_key_id: "testing".into(), secret_access_key: "testing".into() };
        let boot = sdk_config(&moto.endpoint, &bootstrap).await;

        // Secrets first: their ARNs (random suffix) are what `Ref` gives for them.
        let secrets_client = aws_sdk_secretsmanager::Client::new(&boot);
        let mut secret_arns = BTreeMap::new();
        let secret_models = template::Resolver::new(&expanded, &options.stack_name, &BTreeMap::new())?.secrets()?;
        for (secret, value) in fill_secrets(&secret_models, &options.secrets)? {
            let out = secrets_client
                .create_secret()
                .name(&secret.name)
                .secret_string(value.to_string())
                .send()
                .await
                .map_err(|e| setup(format!("secret {}", secret.name))(format!("{e:?}")))?;
            secret_arns.insert(secret.logical_id.clone(), out.arn().unwrap_or_default().to_string());
        }
        let project_dir = options.template.parent().map(Path::to_path_buf).unwrap_or_default();
        let resolver = template::Resolver::new(&expanded, &options.stack_name, &secret_arns)?.in_project(&project_dir);
        let model = resolver.model()?;

        let dynamodb = aws_sdk_dynamodb::Client::new(&boot);
        for table in &model.tables {
            create_table(&dynamodb, table).await?;
        }

        let iam = aws_sdk_iam::Client::new(&boot);
        let mut policies = iam::Policies::default();
        let admin = create_identity(
            &iam,
            "selfheal-operator",
            &[json!({"Effect": "Allow", "Action": "*", "Resource": "*"})],
            &[],
        )
        .await?;
        policies.admin_keys.push(admin.access_key_id.clone());
        let mut specs = Vec::new();
        for f in &model.functions {
            let binary = options.bin_dir.join(&f.binary);
            if !binary.exists() {
                return Err(setup(format!("function {}", f.logical_id))(format!(
                    "no binary {} (build the functions first: cargo build --workspace --bins)",
                    binary.display()
                )));
            }
            let credentials = create_identity(&iam, &f.name, &f.statements, &f.managed_policy_arns).await?;
            policies.by_access_key.insert(
                credentials.access_key_id.clone(),
                iam::Identity { name: f.name.clone(), statements: f.statements.clone() },
            );
            if let Some(missing) =
                f.image_env.values().find(|v| v.starts_with("/opt/") && !options.image_paths.contains_key(*v))
            {
                return Err(setup(format!("function {}", f.logical_id))(format!(
                    "its image ships {missing}, which this machine lacks (bash scripts/setup-test-tools.sh installs Lightpanda)"
                )));
            }
            // A container image's ENV is part of its environment; paths inside the image map
            // to this machine's copy of what the image ships.
            let mut env: BTreeMap<String, String> = f
                .image_env
                .iter()
                .map(|(k, v)| {
                    (k.clone(), options.image_paths.get(v).map_or_else(|| v.clone(), |p| p.display().to_string()))
                })
                .collect();
            env.extend(f.env.clone());
            specs.push(FunctionSpec {
                logical_id: f.logical_id.clone(),
                name: f.name.clone(),
                arn: f.arn.clone(),
                binary,
                env,
                timeout_secs: f.timeout_secs,
                memory_mb: f.memory_mb,
                credentials: Some(credentials),
            });
        }
        moto.enforce_iam().await?;

        let table = SqliteTable::open(options.work_dir.join("engine.sqlite"))
            .map_err(|e| setup("engine store")(e.to_string()))?;
        let engine = Engine::new(Arc::new(table), Arc::new(SystemClock::real()));
        let sfn = sfn_api::SfnApi::new(engine.clone(), Arc::new(policies));
        let (sfn_endpoint, sfn_task) =
            selfheal_testkit::spawn(sfn.router(), 0).await.map_err(|e| setup("Step Functions API")(e.to_string()))?;

        let mut platform = BTreeMap::new();
        platform.insert("AWS_REGION".to_string(), REGION.to_string());
        platform.insert("AWS_DEFAULT_REGION".to_string(), REGION.to_string());
        // The AWS APIs a Lambda reaches: DynamoDB, Secrets Manager (moto) and Step Functions (ours).
        platform.insert("AWS_ENDPOINT_URL".to_string(), moto.endpoint.clone());
        platform.insert("AWS_ENDPOINT_URL_SFN".to_string(), sfn_endpoint.clone());
        let log_settings: BTreeMap<String, (Option<String>, Option<String>)> = model
            .functions
            .iter()
            .map(|f| (f.logical_id.clone(), (f.log_format.clone(), f.log_level.clone())))
            .collect();
        for spec in &mut specs {
            // LoggingConfig becomes the runtime's log variables, as Lambda sets them.
            if let Some((format, level)) = log_settings.get(&spec.logical_id) {
                if let Some(f) = format {
                    spec.env.entry("AWS_LAMBDA_LOG_FORMAT".into()).or_insert_with(|| f.clone());
                }
                if let Some(l) = level {
                    spec.env.entry("AWS_LAMBDA_LOG_LEVEL".into()).or_insert_with(|| l.clone());
                }
            }
        }
        let host = LambdaHost::start(specs, platform, &options.work_dir).await?;
        engine.set_dispatcher(Arc::new(LambdaTaskDispatcher::new(host.clone())));

        // The state machine goes in through the API, as CloudFormation would create it.
        let admin_config = sdk_config(&sfn_endpoint, &admin).await;
        aws_sdk_sfn::Client::new(&admin_config)
            .create_state_machine()
            .name(&model.state_machine.name)
            .definition(&model.state_machine.definition)
            .role_arn(format!("arn:aws:iam::{ACCOUNT}:role/{}-role", model.state_machine.name))
            .r#type(aws_sdk_sfn::types::StateMachineType::Standard)
            .send()
            .await
            .map_err(|e| setup("CreateStateMachine")(format!("{e:?}")))?;

        let routes = model
            .routes
            .iter()
            .map(|r| apigw::HttpRoute {
                method: r.method.clone(),
                path: r.path.clone(),
                function: r.function_arn.clone(),
            })
            .collect();
        let (api_base, api_task) = apigw::serve(routes, host.clone()).await?;
        Ok(Stack {
            model,
            moto,
            admin,
            engine,
            lambda: host,
            sfn_endpoint,
            api_base,
            work_dir: options.work_dir.clone(),
            tasks: vec![sfn_task, api_task],
        })
    }

    /// The operator's SDK configuration (admin identity) for the stack's AWS APIs.
    pub async fn admin_config(&self) -> aws_config::SdkConfig {
        sdk_config(&self.moto.endpoint, &self.admin).await
    }

    pub fn table_name(&self) -> Option<&str> {
        self.model
            .outputs
            .get("TableName")
            .map(String::as_str)
            .or_else(|| self.model.tables.first().map(|t| t.name.as_str()))
    }

    /// Invocations per function (logical id).
    pub fn invocations(&self) -> BTreeMap<String, u64> {
        self.lambda.invocations()
    }

    /// Endpoints and outputs, for people and scripts.
    pub fn describe(&self) -> Value {
        json!({
            "stack": self.model.stack_name,
            "outputs": self.model.outputs,
            "http_api": self.api_base,
            "webhook_url": format!("{}/webhooks/pagerduty", self.api_base),
            "slack_interactivity_url": format!("{}/slack/interactions", self.api_base),
            "step_functions_endpoint": self.sfn_endpoint,
            "aws_endpoint": self.moto.endpoint,
            "region": REGION,
            "operator_access_key_id": self.admin.access_key_id,
            "functions": self.model.functions.iter().map(|f| json!({"logical_id": f.logical_id, "name": f.name, "binary": f.binary, "timeout_secs": f.timeout_secs})).collect::<Vec<_>>(),
            "work_dir": self.work_dir,
        })
    }

    pub async fn shutdown(&self) {
        self.lambda.shutdown().await;
    }
}

/// Put each provided key into the secret whose initial JSON already names it; with a single
/// secret, everything goes there. A key no secret names is an error (a typo would otherwise
/// leave a credential unset).
fn fill_secrets<'m>(
    models: &'m [template::SecretModel],
    values: &BTreeMap<String, Value>,
) -> Result<Vec<(&'m template::SecretModel, Value)>, StackError> {
    let mut out: Vec<(&template::SecretModel, Value)> = models.iter().map(|m| (m, m.initial.clone())).collect();
    for (key, value) in values {
        let slot = if out.len() == 1 { Some(0) } else { out.iter().position(|(m, _)| m.initial.get(key).is_some()) };
        let i = slot.ok_or_else(|| setup("secrets")(format!("no secret in the template has a key {key}")))?;
        if let Some(obj) = out[i].1.as_object_mut() {
            obj.insert(key.clone(), value.clone());
        }
    }
    Ok(out)
}

async fn create_table(client: &aws_sdk_dynamodb::Client, table: &template::TableModel) -> Result<(), StackError> {
    use aws_sdk_dynamodb::types::{AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType};
    let err = |e: String| StackError::Setup { what: format!("table {}", table.name), detail: e };
    let p = &table.properties;
    let mut req = client.create_table().table_name(&table.name).billing_mode(BillingMode::PayPerRequest);
    for a in p.get("AttributeDefinitions").and_then(Value::as_array).into_iter().flatten() {
        let name = a.get("AttributeName").and_then(Value::as_str).unwrap_or_default();
        let kind = ScalarAttributeType::from(a.get("AttributeType").and_then(Value::as_str).unwrap_or("S"));
        req = req.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(kind)
                .build()
                .map_err(|e| err(e.to_string()))?,
        );
    }
    for k in p.get("KeySchema").and_then(Value::as_array).into_iter().flatten() {
        let name = k.get("AttributeName").and_then(Value::as_str).unwrap_or_default();
        let kind = KeyType::from(k.get("KeyType").and_then(Value::as_str).unwrap_or("HASH"));
        req = req.key_schema(
            KeySchemaElement::builder().attribute_name(name).key_type(kind).build().map_err(|e| err(e.to_string()))?,
        );
    }
    req.send().await.map_err(|e| err(format!("{e:?}")))?;
    if let Some(attr) = p.pointer("/TimeToLiveSpecification/AttributeName").and_then(Value::as_str) {
        let spec = aws_sdk_dynamodb::types::TimeToLiveSpecification::builder()
            .attribute_name(attr)
            .enabled(true)
            .build()
            .map_err(|e| err(e.to_string()))?;
        client
            .update_time_to_live()
            .table_name(&table.name)
            .time_to_live_specification(spec)
            .send()
            .await
            .map_err(|e| err(format!("{e:?}")))?;
    }
    Ok(())
}

/// One IAM user whose inline policy is `statements`; returns its access key.
async fn create_identity(
    iam: &aws_sdk_iam::Client,
    name: &str,
    statements: &[Value],
    managed: &[String],
) -> Result<AwsCredentials, StackError> {
    let err = |e: String| StackError::Setup { what: format!("IAM identity {name}"), detail: e };
    iam.create_user().user_name(name).send().await.map_err(|e| err(format!("{e:?}")))?;
    if !statements.is_empty() {
        let document = json!({"Version": "2012-10-17", "Statement": statements});
        iam.put_user_policy()
            .user_name(name)
            .policy_name("role-policy")
            .policy_document(document.to_string())
            .send()
            .await
            .map_err(|e| err(format!("{e:?}")))?;
    }
    for arn in managed {
        // AWS managed policies (logs, X-Ray) grant nothing this stack emulates; moto may not
        // know every one of them.
        if let Err(e) = iam.attach_user_policy().user_name(name).policy_arn(arn).send().await {
            tracing::debug!(policy = arn, error = ?e, "managed policy not attached");
        }
    }
    let key = iam.create_access_key().user_name(name).send().await.map_err(|e| err(format!("{e:?}")))?;
    let key = key.access_key().ok_or_else(|| err("no access key returned".into()))?;
    Ok(AwsCredentials {
        access_key_id: key.access_key_id().to_string(),
        secret_access_key: key.secret_access_key().to_string(),
    })
}

/// `selfheal stack`: start the stack, print where everything is (also written to
/// `<work_dir>/stack.json`), run until Ctrl-C.
pub async fn serve(options: StackOptions, json: bool, out: &mut dyn std::io::Write) -> Result<(), StackError> {
    let stack = Stack::start(options).await?;
    let description = stack.describe();
    let text = serde_json::to_string_pretty(&description).unwrap_or_default();
    std::fs::write(stack.work_dir.join("stack.json"), &text).map_err(|e| setup("stack.json")(e.to_string()))?;
    // Written before anything is printed, so a script that read the endpoints finds it.
    let credentials = stack.work_dir.join("operator-credentials.env");
    let creds = format!(
        "AWS_ACCESS_KEY_ID={}\nAWS_SECRET_ACCESS_KEY={}\nAWS_REGION={REGION}\nAWS_ENDPOINT_URL={}\nAWS_ENDPOINT_URL_SFN={}\n",
        stack.admin.access_key_id, stack.admin.secret_access_key, stack.moto.endpoint, stack.sfn_endpoint
    );
    write_private(&credentials, &creds).map_err(|e| setup("credentials file")(e.to_string()))?;
    announce(&description, &stack.model.stack_name, &credentials, json, out);
    let _ = tokio::signal::ctrl_c().await;
    stack.shutdown().await;
    Ok(())
}

/// What `selfheal stack` prints once it is up. By default: the description pretty-printed, then a
/// line saying where the operator's credentials are. With `json`: one JSON line, the description
/// plus `credentials_file`, and the line goes to stderr.
fn announce(description: &Value, stack_name: &str, credentials: &Path, json: bool, out: &mut dyn std::io::Write) {
    let up = format!(
        "selfheal stack {stack_name} is up; the operator's secret key is in {} (Ctrl-C stops it)",
        credentials.display()
    );
    if json {
        let mut value = description.clone();
        if let Some(object) = value.as_object_mut() {
            object.insert("credentials_file".into(), json!(credentials.display().to_string()));
        }
        let _ = writeln!(out, "{}", crate::operator::term_json(&value, false));
        eprintln!("{up}");
    } else {
        let _ = writeln!(out, "{}", serde_json::to_string_pretty(description).unwrap_or_default());
        let _ = writeln!(out, "{up}");
    }
}

/// Write a file only its owner can read (it holds a credential).
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `selfheal stack --json` prints one line a script can parse: the endpoints and where the
    /// credentials are. Without it, the pretty description and the "is up" line, as before.
    #[test]
    fn the_announcement_is_one_json_line_with_json() {
        let description = json!({"stack": "s", "webhook_url": "http://127.0.0.1:1/webhooks/pagerduty"});
        let credentials = Path::new("/tmp/x/operator-credentials.env");
        let mut out = Vec::new();
        announce(&description, "s", credentials, true, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["webhook_url"], "http://127.0.0.1:1/webhooks/pagerduty");
        assert_eq!(value["credentials_file"], "/tmp/x/operator-credentials.env");

        let mut out = Vec::new();
        announce(&description, "s", credentials, false, &mut out);
        let text = String::from_utf8(out).unwrap();
        let (pretty, up) = text.trim_end().rsplit_once('\n').unwrap();
        assert_eq!(serde_json::from_str::<Value>(pretty).unwrap(), description);
        assert!(up.starts_with("selfheal stack s is up"), "{up}");
    }
}
