//! Embedded store for the local engine: the same single-table layout as DynamoDB, in SQLite.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::error::StoreError;
use crate::store::{DocTable, JsonText, StoredDoc};

/// A SQLite-backed [`DocTable`]. One connection behind a mutex: SQLite serialises writers anyway,
/// and every operation is a single short statement. WAL mode lets other processes (the
/// `selfheal killswitch` verb, `selfheal status`) read and write the same file concurrently.
#[derive(Clone)]
pub struct SqliteTable {
    conn: Arc<Mutex<Connection>>,
}

fn sql_err(e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(code, _)
            if matches!(code.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) =>
        {
            StoreError::Unavailable(format!("sqlite busy: {e}"))
        }
        other => StoreError::Misconfigured(format!("sqlite: {other}")),
    }
}

impl SqliteTable {
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        if let Some(parent) = path.as_ref().parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| StoreError::Misconfigured(format!("cannot create {}: {e}", parent.display())))?;
        }
        let conn = Connection::open(path).map_err(sql_err)?;
        Self::init(conn)
    }

    pub fn in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory().map_err(sql_err)?)
    }

    fn init(conn: Connection) -> Result<Self, StoreError> {
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(sql_err)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=NORMAL;
             CREATE TABLE IF NOT EXISTS items (
                 pk TEXT NOT NULL,
                 sk TEXT NOT NULL,
                 rev INTEGER NOT NULL,
                 doc TEXT NOT NULL,
                 expires_at INTEGER,
                 PRIMARY KEY (pk, sk)
             ) WITHOUT ROWID;",
        )
        .map_err(sql_err)?;
        Ok(Self { conn: Arc::new(Mutex::new(conn)) })
    }

    fn with_conn<R>(&self, f: impl FnOnce(&Connection) -> Result<R, StoreError>) -> Result<R, StoreError> {
        let guard = self.conn.lock().map_err(|_| StoreError::Unavailable("sqlite connection poisoned".into()))?;
        f(&guard)
    }
}

fn parse_doc(pk: &str, sk: &str, rev: i64, doc: String, expires_at: Option<i64>) -> Result<StoredDoc, StoreError> {
    let doc: Value = serde_json::from_str(&doc)
        .map_err(|e| StoreError::Corrupt { key: format!("{pk}/{sk}"), why: e.to_string() })?;
    Ok(StoredDoc { doc, rev: u64::try_from(rev).unwrap_or(0), expires_at })
}

fn put_if_sql(
    c: &Connection,
    pk: &str,
    sk: &str,
    text: &str,
    expected_rev: Option<u64>,
    expires_at: Option<i64>,
    now: i64,
) -> Result<bool, StoreError> {
    let changed = match expected_rev {
        None => c
            .prepare_cached(
                "INSERT INTO items (pk, sk, rev, doc, expires_at) VALUES (?1, ?2, 1, ?3, ?4)
                 ON CONFLICT (pk, sk) DO UPDATE SET rev = 1, doc = excluded.doc, expires_at = excluded.expires_at
                 WHERE items.expires_at IS NOT NULL AND items.expires_at < ?5",
            )
            .and_then(|mut st| st.execute(params![pk, sk, text, expires_at, now]))
            .map_err(sql_err)?,
        Some(rev) => {
            let rev = i64::try_from(rev).map_err(|_| StoreError::Misconfigured("revision overflow".into()))?;
            c.prepare_cached(
                "UPDATE items SET rev = ?3 + 1, doc = ?4, expires_at = ?5
                 WHERE pk = ?1 AND sk = ?2 AND rev = ?3",
            )
            .and_then(|mut st| st.execute(params![pk, sk, rev, text, expires_at]))
            .map_err(sql_err)?
        }
    };
    Ok(changed == 1)
}

#[async_trait]
impl DocTable for SqliteTable {
    async fn get(&self, pk: &str, sk: &str, now: i64) -> Result<Option<StoredDoc>, StoreError> {
        self.with_conn(|c| {
            let row = c
                .prepare_cached(
                    "SELECT rev, doc, expires_at FROM items
                     WHERE pk = ?1 AND sk = ?2 AND (expires_at IS NULL OR expires_at >= ?3)",
                )
                .and_then(|mut st| {
                    st.query_row(params![pk, sk, now], |r| {
                        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, Option<i64>>(2)?))
                    })
                })
                .optional()
                .map_err(sql_err)?;
            row.map(|(rev, doc, exp)| parse_doc(pk, sk, rev, doc, exp)).transpose()
        })
    }

    async fn put_if(
        &self,
        pk: &str,
        sk: &str,
        doc: &Value,
        expected_rev: Option<u64>,
        expires_at: Option<i64>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let text = doc.to_string();
        self.with_conn(|c| put_if_sql(c, pk, sk, &text, expected_rev, expires_at, now))
    }

    async fn put_if_with_log(
        &self,
        pk: &str,
        sk: &str,
        doc: JsonText,
        expected_rev: Option<u64>,
        expires_at: Option<i64>,
        log: Vec<(String, JsonText)>,
        now: i64,
    ) -> Result<bool, StoreError> {
        // One transaction: the record and its log items land together or not at all.
        self.with_conn(|c| {
            let tx = c.unchecked_transaction().map_err(sql_err)?;
            if !put_if_sql(&tx, pk, sk, doc.as_str(), expected_rev, expires_at, now)? {
                return Ok(false); // dropping the transaction rolls it back
            }
            for (log_sk, log_text) in &log {
                put_if_sql(&tx, pk, log_sk, log_text.as_str(), None, None, now)?;
            }
            tx.commit().map_err(sql_err)?;
            Ok(true)
        })
    }

    async fn query(
        &self,
        pk: &str,
        sk_from: &str,
        sk_to: &str,
        now: i64,
    ) -> Result<Vec<(String, StoredDoc)>, StoreError> {
        self.with_conn(|c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT sk, rev, doc, expires_at FROM items
                     WHERE pk = ?1 AND sk >= ?2 AND sk <= ?3 AND (expires_at IS NULL OR expires_at >= ?4)
                     ORDER BY sk",
                )
                .map_err(sql_err)?;
            let rows = stmt
                .query_map(params![pk, sk_from, sk_to, now], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Option<i64>>(3)?,
                    ))
                })
                .map_err(sql_err)?;
            let mut out = Vec::new();
            for row in rows {
                let (sk, rev, doc, exp) = row.map_err(sql_err)?;
                let parsed = parse_doc(pk, &sk, rev, doc, exp)?;
                out.push((sk, parsed));
            }
            Ok(out)
        })
    }

    /// SQLite picks the fields out of each document (`->`), so only they are parsed here.
    async fn query_fields(
        &self,
        pk: &str,
        sk_from: &str,
        sk_to: &str,
        fields: &[&str],
        now: i64,
    ) -> Result<Vec<(String, Vec<Value>)>, StoreError> {
        // Field names go in as JSON path parameters, never into the SQL text.
        let picks: Vec<String> = (0..fields.len()).map(|i| format!("doc -> ?{}", i + 5)).collect();
        let sql = format!(
            "SELECT sk, json_array({}) FROM items
             WHERE pk = ?1 AND sk >= ?2 AND sk <= ?3 AND (expires_at IS NULL OR expires_at >= ?4)
             ORDER BY sk",
            if picks.is_empty() { "null".to_string() } else { picks.join(", ") }
        );
        // Field names are the caller's constants (plain names, no quotes).
        let paths: Vec<String> = fields.iter().map(|f| format!("$.\"{f}\"")).collect();
        self.with_conn(|c| {
            let mut stmt = c.prepare_cached(&sql).map_err(sql_err)?;
            let mut args: Vec<&dyn rusqlite::ToSql> = vec![&pk, &sk_from, &sk_to, &now];
            args.extend(paths.iter().map(|p| p as &dyn rusqlite::ToSql));
            let rows = stmt
                .query_map(args.as_slice(), |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                .map_err(sql_err)?;
            let mut out = Vec::new();
            for row in rows {
                let (sk, picked) = row.map_err(sql_err)?;
                let values: Vec<Value> = serde_json::from_str(&picked)
                    .map_err(|e| StoreError::Corrupt { key: format!("{pk}/{sk}"), why: e.to_string() })?;
                out.push((sk, values));
            }
            Ok(out)
        })
    }
}
