//! Persistence: the execution record (one conditional write per transition, with that
//! step's history events in the same transaction), the history quota, the execution index.

use super::*;

impl Engine {
    pub(super) async fn load(&self, name: &str) -> Result<Option<(ExecutionRecord, u64)>, EngineError> {
        let now = now_of(self.clock.as_ref()).timestamp();
        let pk = exec_pk(name);
        let Some(stored) = self.table.get(&pk, "META", now).await? else {
            return Ok(None);
        };
        let mut doc = stored.doc;
        // A record written before the head was kept apart carries it in META.
        let head_apart = doc.get("name").is_none();
        if head_apart {
            let head =
                self.table.get(&pk, "HEAD", now).await?.ok_or_else(|| {
                    EngineError::Corrupt(name.to_string(), "execution record without its head".into())
                })?;
            if let (Some(doc), Value::Object(head)) = (doc.as_object_mut(), head.doc) {
                doc.extend(head);
            }
        }
        let mut rec: ExecutionRecord =
            serde_json::from_value(doc).map_err(|e| EngineError::Corrupt(name.to_string(), e.to_string()))?;
        rec.head_stored = head_apart;
        // Records written before the path left the record still carry it; drop it so it is not
        // re-written on every transition.
        rec.path.clear();
        Ok(Some((rec, stored.rev)))
    }

    /// Persist; false when someone else (a stop) changed the record meanwhile. Only what a
    /// transition changes is written (`RecordState`); the head goes with the first save.
    pub(super) async fn save(&self, rec: &mut ExecutionRecord, rev: Option<u64>) -> Result<bool, EngineError> {
        self.enforce_history_quota(rec);
        let corrupt = |name: &str, e: serde_json::Error| EngineError::Corrupt(name.to_string(), e.to_string());
        let doc = JsonText::of(&rec.state()).map_err(|e| corrupt(&rec.name, e))?;
        // History items are append-only and written with the record, so history and state
        // never disagree after a crash.
        let mut log: Vec<(String, JsonText)> = Vec::with_capacity(rec.pending_events.len() + 1);
        if !rec.head_stored {
            log.push(("HEAD".to_string(), JsonText::of(&rec.head()).map_err(|e| corrupt(&rec.name, e))?));
        }
        log.extend(rec.pending_events.drain(..).map(|(id, doc)| (format!("EVT#{id:08}"), doc)));
        let now = now_of(self.clock.as_ref()).timestamp();
        let written = self.table.put_if_with_log(&exec_pk(&rec.name), "META", doc, rev, None, log, now).await?;
        rec.head_stored |= written;
        if written && rec.status != ExecutionStatus::Running {
            // An iteration reports to its parent before it leaves the index of open executions:
            // a crash in between re-reports on resume (the report is idempotent).
            self.report_to_parent(rec).await?;
            self.index(&rec.name, false).await?;
            self.forget_lock(&rec.name);
            // Only `wait_for` listens, and it waits for the end: waking it on every transition
            // cost a record read per transition.
            self.changed.notify_waiters();
        }
        Ok(written)
    }

    /// An execution whose history would pass [`MAX_HISTORY_EVENTS`] fails instead: the step's
    /// events past the quota are dropped and `ExecutionFailed` (`States.Runtime`; the quota page
    /// names no error) becomes the last event, so the history never holds more than the quota.
    pub(super) fn enforce_history_quota(&self, rec: &mut ExecutionRecord) {
        let last_is_terminal = !rec.is_open();
        let over = rec.event_count > MAX_HISTORY_EVENTS || (rec.event_count == MAX_HISTORY_EVENTS && !last_is_terminal);
        if !over {
            return;
        }
        rec.pending_events.retain(|(id, _)| *id < MAX_HISTORY_EVENTS);
        rec.event_count = MAX_HISTORY_EVENTS - 1;
        self.fail_execution(
            rec,
            "States.Runtime",
            &format!("the execution history reached the quota of {MAX_HISTORY_EVENTS} events"),
        );
    }

    /// The execution's AWS-style event history, in order.
    pub async fn history(&self, name: &str) -> Result<Vec<HistoryEvent>, EngineError> {
        let now = now_of(self.clock.as_ref()).timestamp();
        let rows = self.table.query(&exec_pk(name), "EVT#", "EVT#~", now).await?;
        rows.into_iter()
            .map(|(sk, d)| {
                serde_json::from_value(d.doc).map_err(|e| EngineError::Corrupt(format!("{name}/{sk}"), e.to_string()))
            })
            .collect()
    }

    pub(super) async fn index(&self, name: &str, open: bool) -> Result<(), EngineError> {
        let now = now_of(self.clock.as_ref()).timestamp();
        let sk = format!("EXEC#{name}");
        let current = self.table.get(INDEX_PK, &sk, now).await?;
        // Map iterations and Parallel branches are indexed (a restart resumes them) but are not
        // executions of their own: listings leave them out.
        let doc = if name.contains('/') { json!({ "open": open, "child": true }) } else { json!({ "open": open }) };
        self.table.put_if(INDEX_PK, &sk, &doc, current.map(|c| c.rev), None, now).await?;
        Ok(())
    }

    /// The execution as it is now, with its `path` read from the history (one pass over it).
    pub async fn describe(&self, name: &str) -> Result<Option<ExecutionRecord>, EngineError> {
        let Some((mut rec, _)) = self.load(name).await? else { return Ok(None) };
        rec.path = self.entered_states(name).await?;
        Ok(Some(rec))
    }

    /// The states entered, in order: the `*StateEntered` events of the history.
    pub(super) async fn entered_states(&self, name: &str) -> Result<Vec<String>, EngineError> {
        let now = now_of(self.clock.as_ref()).timestamp();
        // Two small fields of each event, not the events: they carry whole state payloads, and
        // reading them all made `wait_for` cost as much as a fifth of the run.
        let rows = self.table.query_fields(&exec_pk(name), "EVT#", "EVT#~", &["type", "state"], now).await?;
        Ok(rows
            .into_iter()
            .filter_map(|(_, fields)| match <[Value; 2]>::try_from(fields) {
                Ok([Value::String(kind), Value::String(state)]) if kind.ends_with("StateEntered") => Some(state),
                _ => None,
            })
            .collect())
    }

    /// Every execution the store knows, open or not (most recent last); not Map iterations or
    /// Parallel branches.
    pub async fn list_executions(&self) -> Result<Vec<(String, bool)>, EngineError> {
        Ok(self
            .indexed_executions()
            .await?
            .into_iter()
            .filter(|(_, _, child)| !child)
            .map(|(name, open, _)| (name, open))
            .collect())
    }

    /// Every indexed record: (name, open, is a Map iteration or Parallel branch).
    pub(super) async fn indexed_executions(&self) -> Result<Vec<(String, bool, bool)>, EngineError> {
        let now = now_of(self.clock.as_ref()).timestamp();
        let rows = self.table.query(INDEX_PK, "EXEC#", "EXEC#~", now).await?;
        Ok(rows
            .into_iter()
            .map(|(sk, d)| {
                (
                    sk.trim_start_matches("EXEC#").to_string(),
                    d.doc["open"].as_bool().unwrap_or(false),
                    d.doc["child"].as_bool().unwrap_or(false),
                )
            })
            .collect())
    }
}
