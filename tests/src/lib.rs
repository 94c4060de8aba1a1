//! Test harness: real components on loopback, started by `scripts/test.sh`.
//!
//! External services are found through environment variables set by the test script; a test that
//! needs one fails loudly (never skips) when it is missing, so CI cannot pass without them.

use std::sync::Arc;

use selfheal::adapters::sqlite::SqliteTable;
use selfheal::ports::IncidentStore;
use selfheal::store::TableStore;

/// The endpoint of the moto server the test script started.
pub fn moto_endpoint() -> String {
    std::env::var("SELFHEAL_MOTO_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "SELFHEAL_MOTO_ENDPOINT is not set: run the tests through scripts/test.sh, which starts \
             moto_server on 127.0.0.1 (or start one yourself and export the variable)"
        )
    })
}

/// A fresh DynamoDB table (unique name, so tests never share state) behind the store.
pub async fn dynamodb_store() -> Arc<dyn IncidentStore> {
    selfheal_cli::demo::dynamodb_store(&moto_endpoint()).await.expect("create table on moto")
}

/// A fresh embedded store (a file, so WAL and locking behave as in `selfheal serve`).
pub async fn sqlite_store() -> Arc<dyn IncidentStore> {
    let dir = std::env::temp_dir().join("selfheal-tests");
    let path = dir.join(format!("{}.sqlite", uuid::Uuid::new_v4().simple()));
    Arc::new(TableStore::new(SqliteTable::open(path).expect("open sqlite")))
}

/// Trigger an incident on the demo harness's checkout service and post Cleric's confident note.
pub async fn start_demo_incident(h: &selfheal_cli::demo::Harness, id: &str) {
    use selfheal_testkit::sim::Sim;
    let data = Sim::incident_data(
        id,
        1,
        "Checkout /health failing: 504 Gateway Timeout",
        selfheal_cli::demo::SERVICE_ID,
        "checkout",
    );
    assert_eq!(h.sim.deliver_webhook("incident.triggered", data, None).await.unwrap(), 202);
    let note = selfheal_cli::demo::investigator_note("94%");
    h.sim.post_note(id, selfheal_cli::demo::INVESTIGATOR, &note).await.unwrap();
}

/// `--name value` from a command line, or `default` (for the benchmark binaries).
pub fn flag(args: &[String], name: &str, default: &str) -> String {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned()).unwrap_or_else(|| default.to_string())
}

/// Log output captured in memory (for `telemetry::init_with_writer`), to search it for secrets.
#[derive(Clone, Default)]
pub struct CapturedLogs(Arc<std::sync::Mutex<Vec<u8>>>);

impl CapturedLogs {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLogs {
    type Writer = CapturedLogs;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
