//! Cold-start init time of the Lambda binaries: exec the release binary against a minimal Lambda
//! Runtime API emulator on loopback and measure until its first
//! `GET /2018-06-01/runtime/invocation/next` (config, Secrets Manager fetch, client wiring, and
//! for HTTP functions the warm-up read — against moto on loopback). Median of N runs.
//!
//! usage: lambda-init --moto URL [--runs 20] BINARY...

use axum::Router;
use axum::routing::get;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut moto = String::new();
    let mut runs = 20usize;
    let mut binaries = Vec::new();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--moto" => {
                moto = args[i + 1].clone();
                i += 1;
            }
            "--runs" => {
                runs = args[i + 1].parse().expect("runs");
                i += 1;
            }
            b => binaries.push(b.to_string()),
        }
        i += 1;
    }
    assert!(!moto.is_empty(), "--moto URL is required (scripts/bench-lambda.sh starts moto)");

    // The secret and table the functions read at init.
    let config = selfheal::aws::emulator_config(&moto).await;
    let table = format!("selfheal-init-{}", uuid::Uuid::new_v4().simple());
    selfheal::adapters::dynamodb::DynamoTable::create_table(&aws_sdk_dynamodb::Client::new(&config), &table)
        .await
        .expect("table");
    let secret = format!("selfheal/init/{}", uuid::Uuid::new_v4().simple());
    aws_sdk_secretsmanager::Client::new(&config)
        .create_secret()
        .name(&secret)
        // Every integration's keys: init refuses to start a function that lacks what it needs.
        .secret_string(
            serde_json::json!({
                "pagerduty_webhook_secrets": ["x"], "pagerduty_api_token": "t", "pagerduty_from_email": "selfheal@example.com",
                "slack_bot_token": "xoxb-bench", "slack_signing_secret": "y", "senso_api_key": "k",
                "anthropic_api_key": "k", "coder_session_token": "k", "lightpanda_token": ""
            })
            .to_string(),
        )
        .send()
        .await
        .expect("secret");

    // Runtime API emulator: note when `next` is first called, then keep the request pending.
    let first_next: Arc<Mutex<Option<Instant>>> = Arc::default();
    let slot = first_next.clone();
    let app = Router::new().route(
        "/2018-06-01/runtime/invocation/next",
        get(move || {
            let slot = slot.clone();
            async move {
                slot.lock().unwrap().get_or_insert_with(Instant::now);
                tokio::time::sleep(Duration::from_secs(30)).await;
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    println!("| function | binary size | init median | init p90 | runs |");
    println!("|---|---|---|---|---|");
    for bin in &binaries {
        let name = std::path::Path::new(bin).file_name().unwrap().to_string_lossy().to_string();
        let size = std::fs::metadata(bin).map(|m| m.len()).unwrap_or(0);
        let mut times = Vec::new();
        for _ in 0..runs {
            *first_next.lock().unwrap() = None;
            let started = Instant::now();
            let mut child = tokio::process::Command::new(bin)
                .env_clear()
                .env("AWS_LAMBDA_RUNTIME_API", api.to_string())
                .env("AWS_LAMBDA_FUNCTION_NAME", &name)
                .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
                .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
                .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/bench")
                .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
                .env("AWS_REGION", "us-east-1")
                .env("AWS_ACCESS_KEY_ID", "testing")
                .env("AWS_SECRET_ACCESS_KEY", "testing")
                .env("AWS_ENDPOINT_URL", &moto)
                .env("SELFHEAL_TABLE_NAME", &table)
                .env("SELFHEAL_SECRET_IDS", &secret)
                // The settings strict init asks for (a deployed function gets them from the template).
                .env("SELFHEAL_INVESTIGATOR_IDS", "PCLERIC01")
                .env("SELFHEAL_SLACK_CHANNEL", "C0INCIDENTS")
                .env("SELFHEAL_CODER_API_BASE", "http://127.0.0.1:9")
                .env("SELFHEAL_CODER_TEMPLATE_VERSION_ID", "bench")
                .env("SELFHEAL_BROWSER_ENDPOINT", "ws://127.0.0.1:9/")
                .env("SELFHEAL_STATE_MACHINE_ARN", "arn:aws:states:us-east-1:123456789012:stateMachine:bench")
                .env("AWS_LAMBDA_LOG_LEVEL", "ERROR")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("spawn");
            let deadline = Instant::now() + Duration::from_secs(10);
            let at = loop {
                if let Some(t) = *first_next.lock().unwrap() {
                    break Some(t);
                }
                if Instant::now() > deadline {
                    break None;
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            };
            let _ = child.kill().await;
            match at {
                Some(t) => times.push(t.duration_since(started)),
                None => eprintln!("{name}: no call to /invocation/next within 10 s"),
            }
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        if times.is_empty() {
            println!("| {name} | {:.1} MB | failed | | 0 |", size as f64 / 1e6);
            continue;
        }
        println!(
            "| {name} | {:.1} MB | {:.1} ms | {:.1} ms | {} |",
            size as f64 / 1e6,
            ms(times[times.len() / 2]),
            ms(times[(times.len() * 9 / 10).min(times.len() - 1)]),
            times.len()
        );
    }
}
