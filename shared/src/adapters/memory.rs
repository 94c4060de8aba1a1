//! A process-local [`DocTable`] beside the SQLite and DynamoDB ones: no durability, for tests,
//! benchmarks that isolate the interpreter's own cost, and throwaway runs.

use async_trait::async_trait;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

use crate::error::StoreError;
use crate::store::{DocTable, JsonText, StoredDoc};

/// A document as it was written: a value (`put_if`) or JSON text (`put_if_with_log`, the
/// engine's per-transition writes), kept as text and parsed only when read.
enum Doc {
    Value(Value),
    Text(JsonText),
}

struct Item {
    doc: Doc,
    rev: u64,
    expires_at: Option<i64>,
}

impl Item {
    fn live(&self, now: i64) -> bool {
        self.expires_at.is_none_or(|e| e >= now)
    }

    fn value(&self, pk: &str, sk: &str) -> Result<Value, StoreError> {
        match &self.doc {
            Doc::Value(v) => Ok(v.clone()),
            Doc::Text(t) => {
                t.parse().map_err(|e| StoreError::Corrupt { key: format!("{pk}/{sk}"), why: e.to_string() })
            }
        }
    }

    fn stored(&self, pk: &str, sk: &str) -> Result<StoredDoc, StoreError> {
        Ok(StoredDoc { doc: self.value(pk, sk)?, rev: self.rev, expires_at: self.expires_at })
    }
}

/// Items by partition, then by sort key: a write or a range read compares sort keys only.
type Partitions = HashMap<String, BTreeMap<String, Item>>;

/// A process-local [`DocTable`] (no durability): for tests, benchmarks that isolate the
/// interpreter's own cost, and throwaway runs.
#[derive(Default)]
pub struct MemoryTable {
    items: std::sync::Mutex<Partitions>,
}

impl MemoryTable {
    pub fn new() -> Self {
        Self::default()
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, Partitions> {
        match self.items.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
}

/// Write `item` at `sk` if the live item there has revision `expected_rev` (None: no live
/// item); the new revision is one more.
fn put(
    partition: &mut BTreeMap<String, Item>,
    sk: &str,
    doc: Doc,
    expected_rev: Option<u64>,
    expires_at: Option<i64>,
    now: i64,
) -> bool {
    let current = partition.get(sk).filter(|i| i.live(now)).map(|i| i.rev);
    if current != expected_rev {
        return false;
    }
    let item = Item { doc, rev: expected_rev.map_or(1, |r| r + 1), expires_at };
    match partition.get_mut(sk) {
        Some(slot) => *slot = item,
        None => {
            partition.insert(sk.to_string(), item);
        }
    }
    true
}

#[async_trait]
impl DocTable for MemoryTable {
    async fn get(&self, pk: &str, sk: &str, now: i64) -> Result<Option<StoredDoc>, StoreError> {
        let items = self.lock();
        items.get(pk).and_then(|p| p.get(sk)).filter(|i| i.live(now)).map(|i| i.stored(pk, sk)).transpose()
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
        let partition = items.entry(pk.to_string()).or_default();
        Ok(put(partition, sk, Doc::Value(doc.clone()), expected_rev, expires_at, now))
    }

    /// Both writes under one lock, moving the documents in (no copies).
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
        let mut items = self.lock();
        let partition = match items.get_mut(pk) {
            Some(p) => p,
            None => items.entry(pk.to_string()).or_default(),
        };
        if !put(partition, sk, Doc::Text(doc), expected_rev, expires_at, now) {
            return Ok(false);
        }
        for (log_sk, log_doc) in log {
            // Existing live log items are left as they are.
            if partition.get(&log_sk).is_none_or(|i| !i.live(now)) {
                partition.insert(log_sk, Item { doc: Doc::Text(log_doc), rev: 1, expires_at: None });
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
        let Some(partition) = items.get(pk) else { return Ok(Vec::new()) };
        partition
            .range::<str, _>((std::ops::Bound::Included(sk_from), std::ops::Bound::Included(sk_to)))
            .filter(|(_, i)| i.live(now))
            .map(|(sk, i)| Ok((sk.clone(), i.stored(pk, sk)?)))
            .collect()
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
        let Some(partition) = items.get(pk) else { return Ok(Vec::new()) };
        let pick = |doc: &Value| fields.iter().map(|f| doc.get(*f).cloned().unwrap_or_default()).collect();
        partition
            .range::<str, _>((std::ops::Bound::Included(sk_from), std::ops::Bound::Included(sk_to)))
            .filter(|(_, i)| i.live(now))
            .map(|(sk, i)| match &i.doc {
                Doc::Value(v) => Ok((sk.clone(), pick(v))),
                Doc::Text(_) => Ok((sk.clone(), pick(&i.value(pk, sk)?))),
            })
            .collect()
    }
}
