//! Driving an execution: one step at a time, each state type's semantics, transitions and
//! the end of the execution.

use super::*;

impl Engine {
    /// Advance the execution as far as it can go without waiting for a callback.
    pub async fn drive(&self, name: &str) -> Result<(), EngineError> {
        let lock = self.lock_for(name);
        let _guard = lock.lock().await;
        let mut current = None;
        loop {
            let (rec, rev) = match current.take() {
                Some(saved) => saved,
                None => match self.load(name).await? {
                    Some(loaded) => loaded,
                    None => return Ok(()),
                },
            };
            if !rec.is_open() {
                // Resumed after a crash between an iteration's end and its report.
                self.report_to_parent(&rec).await?;
                self.forget_lock(name);
                return Ok(());
            }
            match self.step(rec, rev).await? {
                Step::Continue(next) => current = next,
                Step::Stop => return Ok(()),
            }
        }
    }

    /// Closed executions need no lock any more; keep the map from growing forever.
    pub(super) fn forget_lock(&self, name: &str) {
        if let Ok(mut locks) = self.locks.lock() {
            locks.remove(name);
        }
    }

    /// Save the record and keep driving with it (or reload it if someone else changed it).
    pub(super) async fn commit(&self, mut rec: ExecutionRecord, rev: u64) -> Result<Step, EngineError> {
        if !self.save(&mut rec, Some(rev)).await? {
            return Ok(Step::Continue(None));
        }
        if rec.is_open() { Ok(Step::Continue(Some((rec, rev + 1)))) } else { Ok(Step::Stop) }
    }

    /// A Map iteration or Parallel branch reads its Context object from its root execution
    /// when a state that can read it runs (it is not copied into every child). Every path that
    /// loads a child record and then evaluates its state calls this first.
    pub(super) async fn fill_root_context(&self, rec: &mut ExecutionRecord, state: &State) -> Result<(), EngineError> {
        if state.reads_context
            && let Some(link) = rec.parent.as_mut()
            && link.context.is_null()
        {
            link.context = self.root_context(&rec.name).await?;
        }
        Ok(())
    }

    /// The Context object's `Execution` and `StateMachine` of the execution a Map iteration or
    /// Parallel branch (`root/run/index/...`) belongs to.
    async fn root_context(&self, child: &str) -> Result<Value, EngineError> {
        let root = child.split('/').next().unwrap_or(child);
        let (rec, _) = self
            .load(root)
            .await?
            .ok_or_else(|| EngineError::Corrupt(child.to_string(), format!("its execution {root} is gone")))?;
        let mut ctx = self.execution_context(&rec);
        ctx.remove("State");
        Ok(Value::Object(ctx))
    }

    /// The Context object for `state`, or null when nothing in the state can read it.
    pub(super) fn state_context(&self, rec: &ExecutionRecord, cursor: &Cursor, state: &State) -> Value {
        if state.reads_context { self.context(rec, cursor, None) } else { Value::Null }
    }

    pub(super) fn context(&self, rec: &ExecutionRecord, cursor: &Cursor, token: Option<&str>) -> Value {
        let retry: u32 = cursor.retry_counts.iter().sum();
        if let Some(link) = &rec.parent {
            // An iteration or branch sees the execution it belongs to, and its own state.
            let mut ctx = link.context.clone();
            ctx["State"] = json!({"Name": cursor.state, "EnteredTime": cursor.entered_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true), "RetryCount": retry});
            if let Some(t) = token {
                ctx["Task"] = json!({ "Token": t });
            }
            return ctx;
        }
        let mut ctx = self.execution_context(rec);
        ctx.insert(
            "State".into(),
            json!({"Name": cursor.state, "EnteredTime": cursor.entered_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true), "RetryCount": retry}),
        );
        if let Some(t) = token {
            ctx.insert("Task".into(), json!({ "Token": t }));
        }
        Value::Object(ctx)
    }

    /// `Execution` and `StateMachine` of a top-level execution's Context object.
    fn execution_context(&self, rec: &ExecutionRecord) -> serde_json::Map<String, Value> {
        let input: Value = serde_json::from_str(&rec.input_text).unwrap_or(Value::Null);
        let mut ctx = serde_json::Map::with_capacity(4);
        ctx.insert(
            "Execution".into(),
            json!({"Id": rec.execution_id, "Name": rec.name, "StartTime": rec.started_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true), "Input": input}),
        );
        ctx.insert("StateMachine".into(), json!({"Id": format!("local:{}", rec.machine), "Name": rec.machine}));
        ctx
    }

    /// One step of the execution: run or resume the current state, persist, report.
    pub(super) async fn step(&self, mut rec: ExecutionRecord, rev: u64) -> Result<Step, EngineError> {
        let machine = self.machine_of(&rec)?;
        let now = now_of(self.clock.as_ref());
        if let Some(deadline) = rec.deadline
            && now >= deadline
        {
            self.abort_branches(&rec).await;
            self.finish(
                &mut rec,
                ExecutionStatus::TimedOut,
                None,
                Some("States.Timeout".into()),
                Some("execution timed out".into()),
            );
            return self.commit(rec, rev).await;
        }
        let Some(cursor) = rec.cursor.clone() else {
            return Err(EngineError::Corrupt(rec.name.clone(), "running execution without a cursor".into()));
        };
        let Some(state) = machine.states.get(&cursor.state) else {
            return Err(EngineError::Corrupt(rec.name.clone(), format!("unknown state {}", cursor.state)));
        };
        self.fill_root_context(&mut rec, state).await?;
        match cursor.phase.clone() {
            Phase::RetryAt { at } => {
                self.sleep_until(at).await;
                let mut next = cursor;
                next.phase = Phase::Enter;
                rec.cursor = Some(next);
                self.commit(rec, rev).await
            }
            Phase::WaitUntil { until, output } => {
                self.sleep_until(until).await;
                let now = now_of(self.clock.as_ref());
                rec.push_event(now, "WaitStateExited", Some(&state.name), Value::Null);
                self.transition(&mut rec, &machine, state, output, now);
                self.commit(rec, rev).await
            }
            Phase::AwaitToken { token } => self.resume_callback(rec, rev, &machine, state, &cursor, &token).await,
            Phase::AwaitBranches { run, total, released, limit } => {
                self.collect_branches(rec, rev, &machine, state, &cursor, &run, total, released, limit).await
            }
            // Released when a MaxConcurrency slot frees up (or now, if that was lost in a crash).
            Phase::Queued => {
                self.resume_if_released(&rec).await?;
                Ok(Step::Stop)
            }
            Phase::Enter => self.enter(rec, rev, &machine, state, &cursor).await,
        }
    }

    pub(super) async fn sleep_until(&self, at: DateTime<Utc>) {
        let now = now_of(self.clock.as_ref());
        if at > now {
            let d = (at - now).to_std().unwrap_or_default();
            self.clock.sleep(d).await;
        }
    }

    pub(super) fn finish(
        &self,
        rec: &mut ExecutionRecord,
        status: ExecutionStatus,
        output: Option<Value>,
        error: Option<String>,
        cause: Option<String>,
    ) {
        let now = now_of(self.clock.as_ref());
        let kind = match status {
            ExecutionStatus::Succeeded => "ExecutionSucceeded",
            ExecutionStatus::Failed => "ExecutionFailed",
            ExecutionStatus::TimedOut => "ExecutionTimedOut",
            ExecutionStatus::Aborted => "ExecutionAborted",
            ExecutionStatus::Running => "ExecutionRunning",
        };
        let details = match (&output, &error) {
            (Some(o), _) => json!({ "output": o }),
            (None, Some(e)) => json!({ "error": e, "cause": cause }),
            _ => Value::Null,
        };
        rec.push_event(now, kind, None, details);
        rec.status = status;
        rec.stopped_at = Some(now);
        rec.output = output;
        rec.error = error;
        rec.cause = cause;
    }

    pub(super) fn fail_execution(&self, rec: &mut ExecutionRecord, error: &str, cause: &str) {
        self.finish(rec, ExecutionStatus::Failed, None, Some(error.to_string()), Some(cause.to_string()));
    }

    /// Leave `state` with `output`: go to Next or end the execution.
    pub(super) fn transition(
        &self,
        rec: &mut ExecutionRecord,
        machine: &StateMachine,
        state: &State,
        output: Value,
        now: DateTime<Utc>,
    ) {
        let size = payload_size(&output);
        rec.max_payload_bytes = rec.max_payload_bytes.max(size);
        if size > MAX_PAYLOAD_BYTES {
            self.fail_execution(
                rec,
                "States.DataLimitExceeded",
                &format!("the output of {} exceeds 262144 bytes", state.name),
            );
            return;
        }
        let next = match &state.kind {
            Kind::Succeed => None,
            _ => state.common.next.clone(),
        };
        match next {
            Some(next) if machine.states.contains_key(&next) => {
                rec.cursor = Some(Cursor {
                    state: next,
                    raw_input: output,
                    entered_at: now,
                    phase: Phase::Enter,
                    retry_counts: Vec::new(),
                });
            }
            Some(next) => self.fail_execution(rec, "States.Runtime", &format!("transition to unknown state {next}")),
            None => self.finish(rec, ExecutionStatus::Succeeded, Some(output), None, None),
        }
    }

    /// Leave `state` with `out`: its `…StateExited` event, then Next or the end.
    pub(super) fn leave(
        &self,
        rec: &mut ExecutionRecord,
        machine: &StateMachine,
        state: &State,
        out: Value,
        now: DateTime<Utc>,
    ) {
        rec.push_payload_event(now, state.exited_event(), &state.name, "output", &out);
        self.transition(rec, machine, state, out, now);
    }

    /// A Task, Map or Parallel state produced `result`: ResultSelector, ResultPath and
    /// OutputPath (in JSONata, Output and Assign), then leave the state. A failure goes through
    /// the state's Retry and Catch, except OutputPath's (States.Runtime).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn state_result(
        &self,
        mut rec: ExecutionRecord,
        rev: u64,
        machine: &StateMachine,
        state: &State,
        cursor: &Cursor,
        result: Value,
        result_selector: Option<&Value>,
        result_path: Option<&Value>,
    ) -> Result<Step, EngineError> {
        let now = now_of(self.clock.as_ref());
        let context = self.state_context(&rec, cursor, state);
        let out = if let Some(fields) = state.jsonata.as_deref() {
            let (output, assign) = (fields.output.as_ref(), &fields.assign);
            let raw = &cursor.raw_input;
            match jsonata_exit(&mut rec, output, assign, raw, &context, Some(&result), None, result.clone()) {
                Ok(out) => out,
                Err(e) => {
                    let failure = TaskFailure::new(QUERY_EVALUATION_ERROR, format!("{}: Output: {e}", state.name));
                    return self.state_failed(rec, rev, state, cursor, failure).await;
                }
            }
        } else {
            let variables = jsonpath_variables(&rec, state);
            let env = path::Env::new(&context, &variables);
            // "In Task, Map, and Parallel States, "$" refers to the result in a state's
            // top-level "Assign"" (ASL, Using Assign). Assigned only if the state succeeds: a
            // Retry or Catch after a failing ResultSelector sees the variables as they were.
            let assigned = match render_assign(state, state.common.assign.as_ref(), &result, env) {
                Ok(assigned) => assigned,
                Err(failure) => return self.state_failed(rec, rev, state, cursor, failure).await,
            };
            let selected = match result_selector {
                Some(sel) => match path::render_template(sel, &result, env) {
                    Ok(s) => s,
                    Err(e) => {
                        let failure = template_failure(&state.name, "ResultSelector", &e);
                        return self.state_failed(rec, rev, state, cursor, failure).await;
                    }
                },
                None => result,
            };
            let merged = match path::merge_result(result_path, &cursor.raw_input, selected) {
                Ok(m) => m,
                Err(e) => {
                    let failure = TaskFailure::new("States.ResultPathMatchFailure", format!("{}: {e}", state.name));
                    return self.state_failed(rec, rev, state, cursor, failure).await;
                }
            };
            match path::select(state.common.output_path.as_ref(), &merged, env) {
                Ok(out) => {
                    rec.variables.extend(assigned);
                    out
                }
                Err(e) => {
                    self.fail_execution(&mut rec, "States.Runtime", &format!("{}: OutputPath: {e}", state.name));
                    return self.commit(rec, rev).await;
                }
            }
        };
        self.leave(&mut rec, machine, state, out, now);
        self.commit(rec, rev).await
    }

    pub(super) async fn enter(
        &self,
        mut rec: ExecutionRecord,
        rev: u64,
        machine: &StateMachine,
        state: &State,
        cursor: &Cursor,
    ) -> Result<Step, EngineError> {
        let now = now_of(self.clock.as_ref());
        let first_attempt = cursor.retry_counts.iter().all(|c| *c == 0);
        if first_attempt {
            rec.transitions += 1;
            rec.push_payload_event(now, state.entered_event(), &state.name, "input", &cursor.raw_input);
        }
        let context = self.state_context(&rec, cursor, state);
        if let Some(fields) = state.jsonata.as_deref()
            && !matches!(state.kind, Kind::Task(_) | Kind::Map(_) | Kind::Parallel(_))
        {
            self.enter_jsonata(&mut rec, machine, state, fields, cursor, &context, now);
            return self.commit(rec, rev).await;
        }
        // The variables as they were when the state was entered (Assign takes effect after).
        let variables = jsonpath_variables(&rec, state);
        let env = path::Env::new(&context, &variables);
        // Borrowed when there is no InputPath: most states have none, and copying the payload
        // was a good part of a Pass or Choice state's cost.
        let input = match state.common.input_path.as_ref() {
            None => Ok(std::borrow::Cow::Borrowed(&cursor.raw_input)),
            Some(p) => path::select(Some(p), &cursor.raw_input, env).map(std::borrow::Cow::Owned),
        };
        let input = match input {
            Ok(v) => v,
            Err(e) => {
                self.fail_execution(&mut rec, "States.Runtime", &format!("{}: InputPath: {e}", state.name));
                return self.commit(rec, rev).await;
            }
        };
        let exit = |rec: &mut ExecutionRecord, out: Value| -> Result<Value, PathError> {
            let out = match state.common.output_path.as_ref() {
                None => out,
                path => path::select(path, &out, env)?,
            };
            rec.push_payload_event(now, state.exited_event(), &state.name, "output", &out);
            Ok(out)
        };
        match &state.kind {
            Kind::Pass { result, parameters, result_path } => {
                // Each stage fails with the error the ASL names for it: Parameters
                // (States.ParameterPathFailure, or States.IntrinsicFailure), ResultPath
                // (States.ResultPathMatchFailure), OutputPath (States.Runtime).
                let produced = match (result, parameters) {
                    (Some(r), _) => Ok(r.clone()),
                    (None, Some(p)) => path::render_template(p, &input, env).map_err(|e| {
                        let name =
                            if e.is_intrinsic() { "States.IntrinsicFailure" } else { "States.ParameterPathFailure" };
                        (name, e)
                    }),
                    (None, None) => Ok(input.into_owned()),
                };
                // "For Pass State, "$" refers to the result" in Assign (ASL, Using Assign).
                let assigned = produced.and_then(|r| {
                    match assign_jsonpath(&mut rec, state, state.common.assign.as_ref(), &r, env) {
                        Ok(()) => Ok(r),
                        Err(f) => Err((
                            if f.error == "States.IntrinsicFailure" {
                                "States.IntrinsicFailure"
                            } else {
                                "States.ParameterPathFailure"
                            },
                            PathError(f.cause),
                        )),
                    }
                });
                let out = assigned
                    .and_then(|r| {
                        path::merge_result(result_path.as_ref(), &cursor.raw_input, r)
                            .map_err(|e| ("States.ResultPathMatchFailure", e))
                    })
                    .and_then(|o| exit(&mut rec, o).map_err(|e| ("States.Runtime", e)));
                match out {
                    Ok(out) => self.transition(&mut rec, machine, state, out, now),
                    Err((error, e)) => self.fail_execution(&mut rec, error, &format!("{}: {e}", state.name)),
                }
            }
            Kind::Succeed => match exit(&mut rec, input.into_owned()) {
                Ok(out) if payload_size(&out) > MAX_PAYLOAD_BYTES => self.fail_execution(
                    &mut rec,
                    "States.DataLimitExceeded",
                    &format!("the output of {} exceeds 262144 bytes", state.name),
                ),
                Ok(out) => self.finish(&mut rec, ExecutionStatus::Succeeded, Some(out), None, None),
                Err(e) => self.fail_execution(&mut rec, "States.Runtime", &format!("{}: {e}", state.name)),
            },
            Kind::Fail { error, cause, error_path, cause_path } => {
                // ErrorPath / CausePath read the state input; "When resolved, the reference path
                // must select a field that contains a string value."
                let dynamic = |literal: &Option<String>, expr: &Option<String>| -> Result<Option<String>, PathError> {
                    match expr {
                        None => Ok(literal.clone()),
                        Some(e) => match path::evaluate_expression(e, &cursor.raw_input, env)? {
                            Value::String(s) => Ok(Some(s)),
                            _ => Err(PathError(format!("{e} does not select a string"))),
                        },
                    }
                };
                match (dynamic(error, error_path), dynamic(cause, cause_path)) {
                    (Ok(error), Ok(cause)) => {
                        let error = error.unwrap_or_else(|| "States.Fail".into());
                        self.fail_execution(&mut rec, &error, &cause.unwrap_or_default());
                    }
                    (Err(e), _) | (_, Err(e)) => {
                        self.fail_execution(&mut rec, "States.Runtime", &format!("{}: {e}", state.name))
                    }
                }
            }
            Kind::Choice { choices, default } => {
                let mut chosen = None;
                for (i, (rule, next)) in choices.iter().enumerate() {
                    match asl::evaluate(rule, &input, env) {
                        Ok(true) => {
                            chosen = Some((i, next.clone()));
                            break;
                        }
                        Ok(false) => {}
                        Err(e) => {
                            self.fail_execution(&mut rec, "States.Runtime", &format!("{}: {e}", state.name));
                            return self.commit(rec, rev).await;
                        }
                    }
                }
                // A chosen rule's Assign replaces the state's, which is for the Default; "$" is
                // the effective input (ASL, Choice State and Using Assign).
                let assign = match &chosen {
                    Some((i, _)) => state.common.rule_assign.get(*i).and_then(Option::as_ref),
                    None => state.common.assign.as_ref(),
                };
                let chosen = chosen.map(|(_, next)| next);
                if (chosen.is_some() || default.is_some())
                    && let Err(f) = assign_jsonpath(&mut rec, state, assign, &input, env)
                {
                    self.fail_execution(&mut rec, &f.error, &f.cause);
                    return self.commit(rec, rev).await;
                }
                match chosen.or_else(|| default.clone()) {
                    Some(next) => match exit(&mut rec, input.into_owned()) {
                        Ok(out) if payload_size(&out) > MAX_PAYLOAD_BYTES => self.fail_execution(
                            &mut rec,
                            "States.DataLimitExceeded",
                            &format!("the output of {} exceeds 262144 bytes", state.name),
                        ),
                        Ok(out) => {
                            rec.cursor = Some(Cursor {
                                state: next,
                                raw_input: out,
                                entered_at: now,
                                phase: Phase::Enter,
                                retry_counts: Vec::new(),
                            });
                        }
                        Err(e) => self.fail_execution(&mut rec, "States.Runtime", &format!("{}: {e}", state.name)),
                    },
                    None => self.fail_execution(
                        &mut rec,
                        "States.NoChoiceMatched",
                        &format!("no choice rule of {} matched", state.name),
                    ),
                }
            }
            Kind::Wait(wait) => {
                let until = match wait {
                    // Only JSONata states have expression waits, and they go through enter_jsonata.
                    WaitFor::Expression => Err(PathError("a JSONata Wait in a JSONPath state".into())),
                    WaitFor::Seconds(s) => Ok(now + Duration::seconds(*s as i64)),
                    WaitFor::Timestamp(t) => Ok(*t),
                    WaitFor::SecondsPath(p) => path::read_path(p, &input, env).and_then(|v| {
                        v.as_u64()
                            .map(|s| now + Duration::seconds(s.min(31_536_000) as i64))
                            .ok_or_else(|| PathError(format!("{p} is not a non-negative integer")))
                    }),
                    WaitFor::TimestampPath(p) => path::read_path(p, &input, env).and_then(|v| {
                        v.as_str()
                            .and_then(asl::parse_timestamp)
                            .ok_or_else(|| PathError(format!("{p} is not a timestamp")))
                    }),
                };
                if until.is_ok()
                    && let Err(f) = assign_jsonpath(&mut rec, state, state.common.assign.as_ref(), &input, env)
                {
                    self.fail_execution(&mut rec, &f.error, &f.cause);
                    return self.commit(rec, rev).await;
                }
                match until {
                    Ok(until) => {
                        let out = match path::select(state.common.output_path.as_ref(), &input, env) {
                            Ok(o) => o,
                            Err(e) => {
                                self.fail_execution(&mut rec, "States.Runtime", &format!("{}: {e}", state.name));
                                return self.commit(rec, rev).await;
                            }
                        };
                        let mut next = cursor.clone();
                        next.phase = Phase::WaitUntil { until, output: out };
                        rec.cursor = Some(next);
                    }
                    Err(e) => self.fail_execution(&mut rec, "States.Runtime", &format!("{}: {e}", state.name)),
                }
            }
            Kind::Task(task) => {
                let input = input.into_owned();
                return self.run_task(rec, rev, machine, state, task, cursor, input, context, variables).await;
            }
            Kind::Map(_) | Kind::Parallel(_) => {
                let input = input.into_owned();
                return self.start_branches(rec, rev, machine, state, cursor, input, context, variables).await;
            }
        }
        self.commit(rec, rev).await
    }

    /// Pass, Succeed, Fail, Choice and Wait in the JSONata query language. A failing expression
    /// fails the execution with States.QueryEvaluationError (these states have no Catch).
    #[allow(clippy::too_many_arguments)]
    fn enter_jsonata(
        &self,
        rec: &mut ExecutionRecord,
        machine: &StateMachine,
        state: &State,
        fields: &JsonataFields,
        cursor: &Cursor,
        context: &Value,
        now: DateTime<Utc>,
    ) {
        let input = &cursor.raw_input;
        let query_failed = |engine: &Self, rec: &mut ExecutionRecord, what: &str, e: String| {
            engine.fail_execution(rec, QUERY_EVALUATION_ERROR, &format!("{}: {what}: {e}", state.name));
        };
        // Pass, Succeed, Choice and Wait: the output is the input unless Output says otherwise.
        let pass_through = |rec: &mut ExecutionRecord, assign: &[(String, Template)]| {
            jsonata_exit(rec, fields.output.as_ref(), assign, input, context, None, None, input.clone())
        };
        let exited = |rec: &mut ExecutionRecord, out: &Value| {
            rec.push_payload_event(now, state.exited_event(), &state.name, "output", out);
        };
        match &state.kind {
            Kind::Pass { .. } => match pass_through(rec, &fields.assign) {
                Ok(out) => self.leave(rec, machine, state, out, now),
                Err(e) => query_failed(self, rec, "Output", e),
            },
            Kind::Succeed => match pass_through(rec, &[]) {
                Ok(out) if payload_size(&out) > MAX_PAYLOAD_BYTES => self.fail_execution(
                    rec,
                    "States.DataLimitExceeded",
                    &format!("the output of {} exceeds 262144 bytes", state.name),
                ),
                Ok(out) => {
                    exited(rec, &out);
                    self.finish(rec, ExecutionStatus::Succeeded, Some(out), None, None);
                }
                Err(e) => query_failed(self, rec, "Output", e),
            },
            Kind::Fail { error, cause, .. } => {
                let text = |literal: &Option<String>, template: &Option<Template>| -> Result<Option<String>, String> {
                    match template {
                        None => Ok(literal.clone()),
                        Some(t) => match jsonata_eval(rec, t, input, context)? {
                            Value::String(s) => Ok(Some(s)),
                            other => Err(format!("must produce a string, not {other}")),
                        },
                    }
                };
                match (text(error, &fields.error), text(cause, &fields.cause)) {
                    (Ok(error), Ok(cause)) => self.fail_execution(
                        rec,
                        &error.unwrap_or_else(|| "States.Fail".into()),
                        &cause.unwrap_or_default(),
                    ),
                    (Err(e), _) | (_, Err(e)) => query_failed(self, rec, "Error/Cause", e),
                }
            }
            Kind::Choice { choices, default } => {
                let mut chosen = None;
                for (rule, next) in choices {
                    let asl::ChoiceRule::Condition(i) = rule else { continue };
                    let Some(condition) = fields.conditions.get(*i) else { continue };
                    match jsonata_eval(rec, condition, input, context) {
                        Ok(Value::Bool(true)) => {
                            chosen = Some((*i, next.clone()));
                            break;
                        }
                        Ok(Value::Bool(false)) => {}
                        Ok(other) => {
                            return query_failed(
                                self,
                                rec,
                                "Condition",
                                format!("must produce a boolean, not {other}"),
                            );
                        }
                        Err(e) => return query_failed(self, rec, "Condition", e),
                    }
                }
                // "If a Choice Rule is chosen, the interpreter evaluates the Choice Rule's
                // "Assign" field, if any, and does not evaluate the state's top-level "Assign"
                // field", and its "Output" (else the input) becomes the state output; the
                // top-level Output and Assign are for the Default (ASL, Choice State).
                let (next, output, assign) = match chosen {
                    Some((i, next)) => match fields.rule_exits.get(i) {
                        Some((output, assign)) => (next, output.as_ref(), assign.as_slice()),
                        None => (next, None, &[][..]),
                    },
                    None => match default {
                        Some(next) => (next.clone(), fields.output.as_ref(), fields.assign.as_slice()),
                        None => {
                            return self.fail_execution(
                                rec,
                                "States.NoChoiceMatched",
                                &format!("no choice rule of {} matched", state.name),
                            );
                        }
                    },
                };
                match jsonata_exit(rec, output, assign, input, context, None, None, input.clone()) {
                    Ok(out) => {
                        exited(rec, &out);
                        rec.cursor = Some(Cursor {
                            state: next,
                            raw_input: out,
                            entered_at: now,
                            phase: Phase::Enter,
                            retry_counts: Vec::new(),
                        });
                    }
                    Err(e) => query_failed(self, rec, "Output", e),
                }
            }
            Kind::Wait(wait) => {
                let until = match (wait, &fields.wait) {
                    (WaitFor::Expression, Some((true, t))) => jsonata_eval(rec, t, input, context).and_then(|v| {
                        v.as_u64()
                            .map(|s| now + Duration::seconds(s.min(31_536_000) as i64))
                            .ok_or_else(|| format!("Seconds must be a non-negative integer, not {v}"))
                    }),
                    (WaitFor::Expression, Some((false, t))) => jsonata_eval(rec, t, input, context).and_then(|v| {
                        v.as_str()
                            .and_then(asl::parse_timestamp)
                            .ok_or_else(|| format!("Timestamp must be a timestamp, not {v}"))
                    }),
                    (WaitFor::Seconds(s), _) => Ok(now + Duration::seconds(*s as i64)),
                    (WaitFor::Timestamp(t), _) => Ok(*t),
                    _ => Err("a JSONata Wait needs Seconds or Timestamp".to_string()),
                };
                let until = match until {
                    Ok(u) => u,
                    Err(e) => return query_failed(self, rec, "Wait", e),
                };
                match pass_through(rec, &fields.assign) {
                    Ok(out) => {
                        let mut next = cursor.clone();
                        next.phase = Phase::WaitUntil { until, output: out };
                        rec.cursor = Some(next);
                    }
                    Err(e) => query_failed(self, rec, "Output", e),
                }
            }
            _ => {}
        }
    }
}
