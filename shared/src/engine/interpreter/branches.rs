//! Map (Inline) and Parallel states. Each iteration or branch runs as a child record
//! (`{parent}/{run}/{index}`) with the engine's ordinary durable machinery, so Tasks, callbacks,
//! Waits, Retry and Catch inside a branch behave exactly as at the top level and survive a
//! restart. A child that ends reports once to its parent: one conditional write of the parent's
//! run tally with the child's result as an append-only item. The tally also counts the children
//! let run, so the child that ends lets the next queued one run itself (MaxConcurrency) and wakes
//! the parent only when the last one ends or the first one fails: the parent record, which holds
//! the whole item list, is read a constant number of times per run, not once per item.

use super::*;
use crate::engine::asl::MapState;

/// "In this mode, the Map state supports up to 40 concurrent iterations."
pub const INLINE_MAP_MAX_CONCURRENCY: usize = 40;

/// The parent's tally of one Map or Parallel run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct RunTally {
    done: usize,
    failed: usize,
    /// The first iteration or branch that did not succeed: its error ends the state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    first_failure: Option<(usize, TaskFailure)>,
    /// How many children the run has, and how many have been let run (written by the parent
    /// when it creates them). A tally without them (a run started before they existed) is
    /// driven by the parent, which then wakes for every child that ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    total: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    released: Option<usize>,
}

fn run_sk(run: &str) -> String {
    format!("RUN#{run}")
}
fn done_sk(run: &str, index: usize) -> String {
    format!("DONE#{run}#{index:08}")
}
fn child_name(parent: &str, run: &str, index: usize) -> String {
    format!("{parent}/{run}/{index}")
}

impl Engine {
    /// Enter a Map or Parallel state: create its iterations or branches, let the first
    /// `limit` run, and wait for them.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn start_branches(
        &self,
        mut rec: ExecutionRecord,
        rev: u64,
        machine: &StateMachine,
        state: &State,
        cursor: &Cursor,
        input: Value,
        context: Value,
        // The variables from state entry, as `enter` copied them for the state's paths.
        variables: BTreeMap<String, Value>,
    ) -> Result<Step, EngineError> {
        let now = now_of(self.clock.as_ref());
        let prepared = match &state.kind {
            Kind::Map(map) => self.map_inputs(&rec, map, state, &input, &context, &variables),
            Kind::Parallel(p) => {
                let effective = match (&p.parameters, state.jsonata.as_deref().and_then(|f| f.arguments.as_ref())) {
                    (_, Some(arguments)) => jsonata_eval(&rec, arguments, &input, &context).map_err(|e| {
                        Err(TaskFailure::new(QUERY_EVALUATION_ERROR, format!("{}: Arguments: {e}", state.name)))
                    }),
                    (Some(t), None) => path::render_template(t, &input, path::Env::new(&context, &variables))
                        .map_err(|e| Err(template_failure(&state.name, "Parameters", &e))),
                    (None, None) => Ok(input.clone()),
                };
                effective.map(|v| (vec![v; p.branches.len()], p.branches.len()))
            }
            _ => return Err(EngineError::Corrupt(rec.name.clone(), "not a Map or Parallel state".into())),
        };
        let (inputs, limit) = match prepared {
            Ok(p) => p,
            // Uncatchable (States.Runtime): the execution fails.
            Err(Ok(runtime)) => {
                self.fail_execution(&mut rec, &runtime.error, &runtime.cause);
                return self.commit(rec, rev).await;
            }
            Err(Err(failure)) => return self.state_failed(rec, rev, state, cursor, failure).await,
        };
        rec.push_event(
            now,
            &format!("{}StateStarted", state.type_name()),
            Some(&state.name),
            json!({ "length": inputs.len() }),
        );
        if inputs.is_empty() {
            return self.branches_succeeded(rec, rev, machine, state, cursor, Vec::new()).await;
        }
        // Deterministic per visit of the state (a loop or a retry makes a new run), so a restart
        // before this step is saved re-creates the same children.
        let retries: u32 = cursor.retry_counts.iter().sum();
        let run = format!("{}-{}", rec.transitions, retries);
        let total = inputs.len();
        let released = limit.min(total);
        let mut scope = rec.parent.as_ref().map(|l| l.scope.clone()).unwrap_or_default();
        // Before any child exists (a child may end before the parent is saved). A restart finds
        // it already written and leaves it.
        let tally = RunTally { total: Some(total), released: Some(released), ..RunTally::default() };
        let tally = serde_json::to_value(&tally).map_err(|e| EngineError::Corrupt(rec.name.clone(), e.to_string()))?;
        let pk = exec_pk(&rec.name);
        let released = if self.table.put_if(&pk, &run_sk(&run), &tally, None, None, now.timestamp()).await? {
            released
        } else {
            // Created before a restart: children that ended since may have released more (a
            // release of a child not yet created is lost; creating it released makes up for it).
            let stored = self.table.get(&pk, &run_sk(&run), now.timestamp()).await?;
            let stored = stored.and_then(|s| serde_json::from_value::<RunTally>(s.doc).ok()).and_then(|t| t.released);
            stored.map_or(released, |r| r.clamp(released, total))
        };
        for (index, child_input) in inputs.into_iter().enumerate() {
            let (branch, start_at) = match &state.kind {
                Kind::Map(m) => (0, m.processor.start_at.as_str()),
                Kind::Parallel(p) => (index, p.branches[index].start_at.as_str()),
                _ => return Err(EngineError::Corrupt(rec.name.clone(), "not a Map or Parallel state".into())),
            };
            scope.push((state.name.clone(), branch));
            // `$$.Map.Item` is for ItemSelector only, as on AWS: the iteration's states see the
            // execution's Context object, which is read from the root execution when a state
            // needs it (copying the execution input into every child made a Map over n items
            // cost n times that input).
            let link = ParentLink {
                name: rec.name.clone(),
                run: run.clone(),
                index,
                scope: scope.clone(),
                context: Value::Null,
            };
            scope.pop();
            self.create_child(&rec, state, start_at, link, child_input, index < released).await?;
        }
        for index in 0..released {
            rec.push_event(now, &child_event(state, "Started"), Some(&state.name), json!({ "index": index }));
        }
        let mut waiting = cursor.clone();
        waiting.phase = Phase::AwaitBranches { run: run.clone(), total, released, limit };
        rec.cursor = Some(waiting);
        if !self.save(&mut rec, Some(rev)).await? {
            return Ok(Step::Continue(None));
        }
        for index in 0..released {
            self.spawn_drive(child_name(&rec.name, &run, index));
        }
        // Children that already finished (before a restart) have reported: look once.
        Ok(Step::Continue(Some((rec, rev + 1))))
    }

    /// A Map's iteration inputs and its concurrency. `Err(Ok(_))` is a runtime error that ends
    /// the execution; `Err(Err(_))` a failure that Retry and Catch see.
    #[allow(clippy::type_complexity)]
    fn map_inputs(
        &self,
        rec: &ExecutionRecord,
        map: &MapState,
        state: &State,
        input: &Value,
        context: &Value,
        variables: &BTreeMap<String, Value>,
    ) -> Result<(Vec<Value>, usize), Result<TaskFailure, TaskFailure>> {
        let env = path::Env::new(context, variables);
        let fields = state.jsonata.as_deref();
        let query_failure = |what: &str, e: String| {
            Err(TaskFailure::new(QUERY_EVALUATION_ERROR, format!("{}: {what}: {e}", state.name)))
        };
        let items = match (&map.items_path, fields.and_then(|f| f.items.as_ref())) {
            (_, Some(items)) => jsonata_eval(rec, items, input, context).map_err(|e| query_failure("Items", e))?,
            (Some(p), None) => path::read_path(p, input, env)
                .map_err(|e| Ok(TaskFailure::new("States.Runtime", format!("{}: ItemsPath: {e}", state.name))))?,
            (None, None) => input.clone(),
        };
        // "In Inline mode, the Map state accepts only a JSON array as input."
        if fields.is_some_and(|f| f.items.is_some()) && !items.is_array() {
            return Err(query_failure("Items", format!("must produce a JSON array, not {}", type_name(&items))));
        }
        let Value::Array(items) = items else {
            return Err(Ok(TaskFailure::new(
                "States.Runtime",
                format!("{}: ItemsPath must select a JSON array, not {}", state.name, type_name(&items)),
            )));
        };
        let expression = fields.and_then(|f| f.max_concurrency.as_ref());
        let requested = match (&map.max_concurrency, &map.max_concurrency_path) {
            // JSONata: "MaxConcurrency": "{% ... %}" must give a non-negative integer.
            _ if expression.is_some() => {
                let v = expression.map(|t| jsonata_eval(rec, t, input, context)).transpose();
                match v.map_err(|e| query_failure("MaxConcurrency", e))? {
                    Some(v) => match v.as_u64() {
                        Some(n) => n,
                        None => {
                            let why = format!("must produce a non-negative integer, not {v}");
                            return Err(query_failure("MaxConcurrency", why));
                        }
                    },
                    None => 0,
                }
            }
            (Some(n), _) => *n,
            (None, Some(p)) => path::read_path(p, input, env).ok().and_then(|v| v.as_u64()).ok_or_else(|| {
                Ok(TaskFailure::new(
                    "States.Runtime",
                    format!("{}: MaxConcurrencyPath {p} must select a non-negative integer", state.name),
                ))
            })?,
            (None, None) => 0,
        };
        let limit = match usize::try_from(requested) {
            Ok(0) | Err(_) => INLINE_MAP_MAX_CONCURRENCY,
            Ok(n) => n.min(INLINE_MAP_MAX_CONCURRENCY),
        };
        let mut inputs = Vec::with_capacity(items.len());
        // One copy of the Context object for every item (it carries the execution input):
        // only `Map.Item` changes from one item to the next.
        let mut item_context = context.clone();
        let jsonata_selector = fields.and_then(|f| f.item_selector.as_ref());
        let selecting = jsonata_selector.is_some() || map.item_selector.is_some();
        for (index, item) in items.iter().enumerate() {
            if selecting {
                item_context["Map"] = json!({ "Item": { "Index": index, "Value": item } });
            }
            let child = match (jsonata_selector, &map.item_selector) {
                (Some(s), _) => {
                    jsonata_eval(rec, s, input, &item_context).map_err(|e| query_failure("ItemSelector", e))?
                }
                (None, Some(t)) => path::render_template(t, input, path::Env::new(&item_context, variables))
                    .map_err(|e| Err(template_failure(&state.name, "ItemSelector", &e)))?,
                (None, None) => item.clone(),
            };
            if payload_size(&child) > MAX_PAYLOAD_BYTES {
                return Err(Ok(TaskFailure::new(
                    "States.DataLimitExceeded",
                    format!("the input of iteration {index} of {} exceeds 262144 bytes", state.name),
                )));
            }
            inputs.push(child);
        }
        Ok((inputs, limit))
    }

    /// Create one iteration or branch record (idempotent: an existing one is left alone).
    #[allow(clippy::too_many_arguments)]
    async fn create_child(
        &self,
        parent: &ExecutionRecord,
        state: &State,
        start_at: &str,
        link: ParentLink,
        input: Value,
        released: bool,
    ) -> Result<(), EngineError> {
        let name = child_name(&parent.name, &link.run, link.index);
        let now = now_of(self.clock.as_ref());
        let mut child = ExecutionRecord {
            name: name.clone(),
            execution_id: parent.execution_id.clone(),
            machine: parent.machine.clone(),
            status: ExecutionStatus::Running,
            input_text: input.to_string(),
            started_at: now,
            stopped_at: None,
            deadline: parent.deadline,
            output: None,
            error: None,
            cause: None,
            cursor: Some(Cursor {
                state: start_at.to_string(),
                raw_input: input.clone(),
                entered_at: now,
                phase: if released { Phase::Enter } else { Phase::Queued },
                retry_counts: Vec::new(),
            }),
            path: Vec::new(),
            transitions: 0,
            max_payload_bytes: 0,
            invocations: BTreeMap::new(),
            event_count: 0,
            pending_events: Vec::new(),
            parent: Some(link),
            variables: parent.variables.clone(),
            head_stored: false,
            last_stamp: None,
        };
        child.push_event(now, &child_event(state, "Started"), Some(&state.name), json!({ "input": input }));
        if self.save(&mut child, None).await? {
            self.index(&name, true).await?;
        }
        Ok(())
    }

    /// Let a queued iteration run (idempotent).
    async fn release_child(&self, name: &str) -> Result<(), EngineError> {
        for _ in 0..50 {
            let Some((mut child, rev)) = self.load(name).await? else { return Ok(()) };
            match &mut child.cursor {
                Some(c) if c.phase == Phase::Queued => c.phase = Phase::Enter,
                _ => return Ok(()),
            }
            if self.save(&mut child, Some(rev)).await? {
                self.spawn_drive(name.to_string());
                return Ok(());
            }
        }
        Err(EngineError::Corrupt(name.to_string(), "record contention".into()))
    }

    /// A child ended: add its result to the parent's tally, once, and wake the parent.
    pub(super) async fn report_to_parent(&self, rec: &ExecutionRecord) -> Result<(), EngineError> {
        let Some(link) = &rec.parent else { return Ok(()) };
        let now = now_of(self.clock.as_ref()).timestamp();
        let parent_pk = exec_pk(&link.name);
        let (tally_sk, result_sk) = (run_sk(&link.run), done_sk(&link.run, link.index));
        let succeeded = rec.status == ExecutionStatus::Succeeded;
        let result = json!({
            "index": link.index,
            "succeeded": succeeded,
            "output": rec.output,
            "error": rec.error,
            "cause": rec.cause,
        });
        for _ in 0..MAX_REPORT_ATTEMPTS {
            if self.table.get(&parent_pk, &result_sk, now).await?.is_some() {
                break; // reported before
            }
            let stored = self.table.get(&parent_pk, &tally_sk, now).await?;
            let (mut tally, rev) = match stored {
                Some(s) => (
                    serde_json::from_value::<RunTally>(s.doc)
                        .map_err(|e| EngineError::Corrupt(link.name.clone(), e.to_string()))?,
                    Some(s.rev),
                ),
                None => (RunTally::default(), None),
            };
            tally.done += 1;
            let first_failure = !succeeded && tally.first_failure.is_none();
            if !succeeded {
                tally.failed += 1;
                if tally.first_failure.is_none() {
                    let error = match rec.status {
                        ExecutionStatus::Aborted => "States.Runtime".to_string(),
                        _ => rec.error.clone().unwrap_or_else(|| "States.Runtime".into()),
                    };
                    tally.first_failure =
                        Some((link.index, TaskFailure::new(error, rec.cause.clone().unwrap_or_default())));
                }
            }
            // This child's slot goes to the next queued one, unless the run has failed.
            let next = match (tally.total, tally.released) {
                (Some(total), Some(released)) if released < total && tally.first_failure.is_none() => {
                    tally.released = Some(released + 1);
                    Some(released)
                }
                _ => None,
            };
            let wake_parent = match tally.total {
                Some(total) => tally.done >= total || first_failure,
                None => true,
            };
            let corrupt = |e: serde_json::Error| EngineError::Corrupt(link.name.clone(), e.to_string());
            let doc = JsonText::of(&tally).map_err(corrupt)?;
            let log = vec![(result_sk.clone(), JsonText::of(&result).map_err(corrupt)?)];
            if self.table.put_if_with_log(&parent_pk, &tally_sk, doc, rev, None, log, now).await? {
                // A crash before the release is healed by the queued child itself, which looks
                // at the tally when it is resumed (`resume_if_released`).
                if let Some(index) = next {
                    // Boxed: releasing saves a record, and saving an ended child reports here.
                    Box::pin(self.release_child(&child_name(&link.name, &link.run, index))).await?;
                }
                if wake_parent {
                    self.spawn_drive(link.name.clone());
                }
                return Ok(());
            }
        }
        // Reported before (or given up under contention): the parent looks for itself.
        self.spawn_drive(link.name.clone());
        Ok(())
    }

    /// A queued child that is driven (after a restart) lets itself run if the tally says it was
    /// released: the child that released it may have died between the tally and the release.
    pub(super) async fn resume_if_released(&self, rec: &ExecutionRecord) -> Result<bool, EngineError> {
        let Some(link) = &rec.parent else { return Ok(false) };
        let now = now_of(self.clock.as_ref()).timestamp();
        let Some(stored) = self.table.get(&exec_pk(&link.name), &run_sk(&link.run), now).await? else {
            return Ok(false);
        };
        let tally: RunTally =
            serde_json::from_value(stored.doc).map_err(|e| EngineError::Corrupt(link.name.clone(), e.to_string()))?;
        if tally.released.is_some_and(|released| link.index < released) {
            self.release_child(&rec.name).await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Stop the iterations or branches of the state the record waits in (if any).
    pub(super) async fn abort_branches(&self, rec: &ExecutionRecord) {
        let Some(Cursor { phase: Phase::AwaitBranches { run, total, .. }, .. }) = &rec.cursor else { return };
        for index in 0..*total {
            let name = child_name(&rec.name, run, index);
            if let Err(e) = self.stop(&name, "the state that ran this branch ended").await {
                tracing::warn!(execution = %name, error = %e, "could not stop a branch");
            }
        }
    }

    /// The parent woke: finish the state when every child has ended (or one failed), else let
    /// more iterations run.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn collect_branches(
        &self,
        mut rec: ExecutionRecord,
        rev: u64,
        machine: &StateMachine,
        state: &State,
        cursor: &Cursor,
        run: &str,
        total: usize,
        released: usize,
        limit: usize,
    ) -> Result<Step, EngineError> {
        let now = now_of(self.clock.as_ref());
        let pk = exec_pk(&rec.name);
        let tally = match self.table.get(&pk, &run_sk(run), now.timestamp()).await? {
            Some(s) => serde_json::from_value::<RunTally>(s.doc)
                .map_err(|e| EngineError::Corrupt(rec.name.clone(), e.to_string()))?,
            None => RunTally::default(),
        };
        let name = state.name.clone();
        if let Some((index, failure)) = tally.first_failure {
            // "Any iteration failure causes the Map state to fail. When the Map state fails, all
            // iterations stop." A failing branch likewise fails the Parallel state.
            rec.push_event(
                now,
                &child_event(state, "Failed"),
                Some(&name),
                json!({ "index": index, "error": failure.error }),
            );
            self.abort_branches(&rec).await;
            // Retry and Catch never match States.Runtime or States.DataLimitExceeded, so those
            // end the execution there.
            return self.state_failed(rec, rev, state, cursor, failure).await;
        }
        let parent_releases = tally.total.is_none();
        if tally.done >= total {
            let rows =
                self.table.query(&pk, &format!("DONE#{run}#"), &format!("DONE#{run}#~"), now.timestamp()).await?;
            let mut outputs = Vec::with_capacity(total);
            for (_, row) in rows {
                outputs.push(row.doc.get("output").cloned().unwrap_or(Value::Null));
            }
            if outputs.len() != total {
                return Err(EngineError::Corrupt(rec.name.clone(), format!("{} of {total} results", outputs.len())));
            }
            rec.push_event(now, &child_event(state, "Succeeded"), Some(&name), json!({ "count": total }));
            return self.branches_succeeded(rec, rev, machine, state, cursor, outputs).await;
        }
        if !parent_releases {
            // The children let each other run; the parent waits for the last one.
            return Ok(Step::Stop);
        }
        // A run started before the tally counted releases: let more iterations run as slots
        // free up.
        let running = released.saturating_sub(tally.done);
        let more = limit.saturating_sub(running).min(total - released);
        if more == 0 {
            return Ok(Step::Stop);
        }
        for index in released..released + more {
            self.release_child(&child_name(&rec.name, run, index)).await?;
            rec.push_event(now, &child_event(state, "Started"), Some(&name), json!({ "index": index }));
        }
        let mut waiting = cursor.clone();
        waiting.phase = Phase::AwaitBranches { run: run.to_string(), total, released: released + more, limit };
        rec.cursor = Some(waiting);
        if !self.save(&mut rec, Some(rev)).await? {
            return Ok(Step::Continue(None));
        }
        Ok(Step::Stop)
    }

    /// Every iteration or branch succeeded: ResultSelector, ResultPath, OutputPath, move on.
    async fn branches_succeeded(
        &self,
        mut rec: ExecutionRecord,
        rev: u64,
        machine: &StateMachine,
        state: &State,
        cursor: &Cursor,
        outputs: Vec<Value>,
    ) -> Result<Step, EngineError> {
        let now = now_of(self.clock.as_ref());
        let (result_selector, result_path) = match &state.kind {
            Kind::Map(m) => (&m.result_selector, &m.result_path),
            Kind::Parallel(p) => (&p.result_selector, &p.result_path),
            _ => return Err(EngineError::Corrupt(rec.name.clone(), "not a Map or Parallel state".into())),
        };
        let result = Value::Array(outputs);
        if payload_size(&result) > MAX_PAYLOAD_BYTES {
            self.fail_execution(
                &mut rec,
                "States.DataLimitExceeded",
                &format!("the result of {} exceeds 262144 bytes", state.name),
            );
            return self.commit(rec, rev).await;
        }
        rec.push_event(now, &format!("{}StateSucceeded", state.type_name()), Some(&state.name), Value::Null);
        self.state_result(rec, rev, machine, state, cursor, result, result_selector.as_ref(), result_path.as_ref())
            .await
    }
}

/// Bounds the optimistic loop of a report (only reachable under extreme contention).
const MAX_REPORT_ATTEMPTS: usize = 1_000;

/// The history event of one iteration or branch: `MapIteration…` or `ParallelBranch…`.
fn child_event(state: &State, what: &str) -> String {
    match state.kind {
        Kind::Map(_) => format!("MapIteration{what}"),
        _ => format!("ParallelBranch{what}"),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
