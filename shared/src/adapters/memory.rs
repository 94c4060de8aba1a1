//! A process-local [`DocTable`] beside the SQLite and DynamoDB ones: no durability, for tests,
//! benchmarks that isolate the interpreter's own cost, and throwaway runs.

use async_trait::async_trait;
use serde_json::Value;

use crate::error::StoreError;
use crate::store::{DocTable, StoredDoc};

/// A process-local [`DocTable`] (no durability): for tests, benchmarks that isolate the
/// interpreter's own cost, and throwaway runs.
#[derive(Default)]
pub struct MemoryTable {
    items: std::sync::Mutex<std::collections::BTreeMap<(String, String), StoredDoc>>,
}

impl MemoryTable {
    pub fn new() -> Self {
        Self::default()
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<(String, String), StoredDoc>> {
        match self.items.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
}

#[async_trait]
impl DocTable for MemoryTable {
    async fn get(&self, pk: &str, sk: &str, now: i64) -> Result<Option<StoredDoc>, StoreError> {
        let items = self.lock();
        Ok(items.get(&(pk.to_string(), sk.to_string())).filter(|d| d.expires_at.is_none_or(|e| e >= now)).cloned())
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
        let mut items = self.lock();
        let key = (pk.to_string(), sk.to_string());
        let current = items.get(&key).filter(|d| d.expires_at.is_none_or(|e| e >= now)).map(|d| d.rev);
        if current != expected_rev {
            return Ok(false);
        }
        let rev = expected_rev.map_or(1, |r| r + 1);
        items.insert(key, StoredDoc { doc: doc.clone(), rev, expires_at });
        Ok(true)
    }

    /// Both writes under one lock, moving the documents in (no copies).
    async fn put_if_with_log(
        &self,
        pk: &str,
        sk: &str,
        doc: Value,
        expected_rev: Option<u64>,
        expires_at: Option<i64>,
        log: Vec<(String, Value)>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut items = self.lock();
        let live = |d: &StoredDoc| d.expires_at.is_none_or(|e| e >= now);
        let key = (pk.to_string(), sk.to_string());
        if items.get(&key).filter(|d| live(d)).map(|d| d.rev) != expected_rev {
            return Ok(false);
        }
        items.insert(key, StoredDoc { doc, rev: expected_rev.map_or(1, |r| r + 1), expires_at });
        for (log_sk, log_doc) in log {
            match items.entry((pk.to_string(), log_sk)) {
                std::collections::btree_map::Entry::Occupied(mut e) if !live(e.get()) => {
                    e.insert(StoredDoc { doc: log_doc, rev: 1, expires_at: None });
                }
                std::collections::btree_map::Entry::Occupied(_) => {}
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(StoredDoc { doc: log_doc, rev: 1, expires_at: None });
                }
            }
        }
        Ok(true)
    }

    async fn query(
        &self,
        pk: &str,
        sk_from: &str,
        sk_to: &str,
        now: i64,
    ) -> Result<Vec<(String, StoredDoc)>, StoreError> {
        let items = self.lock();
        let from = (pk.to_string(), sk_from.to_string());
        let to = (pk.to_string(), sk_to.to_string());
        Ok(items
            .range(from..=to)
            .filter(|(_, d)| d.expires_at.is_none_or(|e| e >= now))
            .map(|((_, sk), d)| (sk.clone(), d.clone()))
            .collect())
    }

    /// Copies only the named fields, not whole documents.
    async fn query_fields(
        &self,
        pk: &str,
        sk_from: &str,
        sk_to: &str,
        fields: &[&str],
        now: i64,
    ) -> Result<Vec<(String, Vec<Value>)>, StoreError> {
        let items = self.lock();
        let from = (pk.to_string(), sk_from.to_string());
        let to = (pk.to_string(), sk_to.to_string());
        Ok(items
            .range(from..=to)
            .filter(|(_, d)| d.expires_at.is_none_or(|e| e >= now))
            .map(|((_, sk), d)| {
                (sk.clone(), fields.iter().map(|f| d.doc.get(*f).cloned().unwrap_or_default()).collect())
            })
            .collect())
    }
}
