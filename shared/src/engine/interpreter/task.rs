//! Task states: timeouts, Parameters, dispatch, and ResultSelector / ResultPath / OutputPath
//! on success.

use super::*;

impl Engine {
    pub(super) fn task_timeout(
        task: &TaskState,
        input: &Value,
        context: path::Env<'_>,
    ) -> Result<(Option<u64>, Option<u64>), PathError> {
        let read = |p: &str| -> Result<u64, PathError> {
            path::read_path(p, input, context)?
                .as_u64()
                .filter(|v| *v > 0)
                .ok_or_else(|| PathError(format!("{p} must be a positive integer")))
        };
        let timeout = match (&task.timeout_seconds, &task.timeout_seconds_path) {
            (Some(t), _) => Some(*t),
            (None, Some(p)) => Some(read(p)?),
            (None, None) => None,
        };
        let heartbeat = match (&task.heartbeat_seconds, &task.heartbeat_seconds_path) {
            (Some(h), _) => Some(*h),
            (None, Some(p)) => Some(read(p)?),
            (None, None) => None,
        };
        Ok((timeout, heartbeat))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn run_task(
        &self,
        mut rec: ExecutionRecord,
        rev: u64,
        machine: &StateMachine,
        state: &State,
        task: &TaskState,
        cursor: &Cursor,
        input: Value,
        context: Value,
        // The variables from state entry, as `enter` copied them for the state's paths.
        variables: BTreeMap<String, Value>,
    ) -> Result<Step, EngineError> {
        let now = now_of(self.clock.as_ref());
        let dispatcher = self.dispatcher.read().ok().and_then(|d| d.clone()).ok_or(EngineError::NoDispatcher)?;
        let (timeout, heartbeat) = match Self::task_timeout(task, &input, path::Env::new(&context, &variables)) {
            Ok(t) => t,
            Err(e) => {
                self.fail_execution(&mut rec, "States.Runtime", &format!("{}: {e}", state.name));
                return self.commit(rec, rev).await;
            }
        };
        // JSONata: "TimeoutSeconds": "{% ... %}" must give a positive integer, else
        // States.QueryEvaluationError, which Retry and Catch see (ASL, JSONata Runtime Errors).
        let (timeout, heartbeat) = match state.jsonata.as_deref() {
            None => (timeout, heartbeat),
            Some(fields) => {
                let seconds = |what: &str, t: Option<&jsonata::Template>, number: Option<u64>| match t {
                    None => Ok(number),
                    Some(t) => match jsonata_eval(&rec, t, &input, &context) {
                        Ok(v) => v
                            .as_u64()
                            .filter(|n| *n > 0)
                            .map(Some)
                            .ok_or_else(|| format!("{}: {what} must be a positive integer, not {v}", state.name)),
                        Err(e) => Err(format!("{}: {what}: {e}", state.name)),
                    },
                };
                let timeout = seconds("TimeoutSeconds", fields.timeout_seconds.as_ref(), timeout);
                let heartbeat = seconds("HeartbeatSeconds", fields.heartbeat_seconds.as_ref(), heartbeat);
                let checked = timeout.and_then(|t| heartbeat.map(|h| (t, h))).and_then(|(t, h)| match (t, h) {
                    (Some(t), Some(h)) if h >= t => {
                        Err(format!("{}: HeartbeatSeconds must be smaller than TimeoutSeconds", state.name))
                    }
                    pair => Ok(pair),
                });
                match checked {
                    Ok(pair) => pair,
                    Err(cause) => {
                        let failure = TaskFailure::new(QUERY_EVALUATION_ERROR, cause);
                        return self.state_failed(rec, rev, state, cursor, failure).await;
                    }
                }
            }
        };
        let token =
            task.is_callback().then(|| format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple()));
        let context = match &token {
            Some(t) => self.context(&rec, cursor, Some(t)),
            None => context,
        };
        let parameters = match (&task.parameters, state.jsonata.as_deref().and_then(|f| f.arguments.as_ref())) {
            (_, Some(arguments)) => jsonata_eval(&rec, arguments, &input, &context)
                .map_err(|e| TaskFailure::new(QUERY_EVALUATION_ERROR, format!("{}: Arguments: {e}", state.name))),
            (Some(p), None) => path::render_template(p, &input, path::Env::new(&context, &variables)).map_err(|e| {
                let name = if e.is_intrinsic() { "States.IntrinsicFailure" } else { "States.ParameterPathFailure" };
                TaskFailure::new(name, format!("{}: {e}", state.name))
            }),
            (None, None) => Ok(input.clone()),
        };
        let parameters = match parameters {
            Ok(p) => p,
            Err(failure) => return self.state_failed(rec, rev, state, cursor, failure).await,
        };
        // "States.DataLimitExceeded: ... the input of a state is larger than the payload size
        // quota, after Parameters processing." Terminal: no Retry or Catch applies.
        if payload_size(&parameters) > MAX_PAYLOAD_BYTES {
            self.fail_execution(
                &mut rec,
                "States.DataLimitExceeded",
                &format!("the input of {} exceeds 262144 bytes after Parameters", state.name),
            );
            return self.commit(rec, rev).await;
        }
        let invocation = rec.invocations.get(&state.name).copied().unwrap_or(0);
        rec.invocations.insert(state.name.clone(), invocation + 1);
        rec.push_event(
            now,
            "TaskScheduled",
            Some(&state.name),
            json!({ "resource": task.resource, "parameters": parameters }),
        );

        let task_token = match &token {
            Some(t) => {
                let deadline = timeout.map(|s| now + Duration::seconds(s as i64));
                let record = TokenRecord {
                    execution: rec.name.clone(),
                    state: state.name.clone(),
                    status: TokenStatus::Pending,
                    deadline,
                    heartbeat_secs: heartbeat,
                    heartbeat_deadline: heartbeat.map(|h| now + Duration::seconds(h as i64)),
                    output: None,
                    error: None,
                    cause: None,
                    undelivered: Some(PendingInvocation {
                        resource: task.resource.clone(),
                        parameters: parameters.clone(),
                        invocation,
                    }),
                };
                let doc =
                    serde_json::to_value(&record).map_err(|e| EngineError::Corrupt(rec.name.clone(), e.to_string()))?;
                self.table.put_if(&token_pk(t), "META", &doc, None, None, now.timestamp()).await?;
                // Persist that we wait on this token *before* dispatching, so a callback that
                // arrives while the handler is still running is never lost.
                let mut waiting = cursor.clone();
                waiting.phase = Phase::AwaitToken { token: t.clone() };
                rec.cursor = Some(waiting);
                if !self.save(&mut rec, Some(rev)).await? {
                    return Ok(Step::Continue(None));
                }
                Some(TaskToken::parse(t.clone()).map_err(|e| EngineError::Corrupt(rec.name.clone(), e.to_string()))?)
            }
            None => None,
        };

        let invocation = TaskInvocation {
            execution: rec.name.clone(),
            state: state.name.clone(),
            resource: task.resource.clone(),
            parameters,
            invocation,
            token: task_token.clone(),
        };
        let outcome = match (timeout, task.is_callback()) {
            // Callback tasks: the timeout covers the wait for the callback, not the invocation.
            (Some(secs), false) => {
                match tokio::time::timeout(std::time::Duration::from_secs(secs), dispatcher.invoke(invocation)).await {
                    Ok(r) => r,
                    Err(_) => Err(TaskFailure::new(
                        "States.Timeout",
                        format!("{} did not finish within {secs} s", state.name),
                    )),
                }
            }
            _ => dispatcher.invoke(invocation).await,
        };

        match (task_token, outcome) {
            (None, Ok(TaskOutcome::Completed(result))) => {
                self.task_succeeded(rec, rev, machine, state, task, cursor, result).await
            }
            (None, Ok(TaskOutcome::AwaitCallback)) => {
                let failure = TaskFailure::new(
                    "States.Runtime",
                    format!("{} is not a callback task but the dispatcher awaited one", state.name),
                );
                self.state_failed(rec, rev, state, cursor, failure).await
            }
            (None, Err(f)) => self.state_failed(rec, rev, state, cursor, f).await,
            (Some(t), result) => self.callback_dispatched(&rec.name, machine, state, t.expose(), result).await,
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn task_succeeded(
        &self,
        mut rec: ExecutionRecord,
        rev: u64,
        machine: &StateMachine,
        state: &State,
        task: &TaskState,
        cursor: &Cursor,
        result: Value,
    ) -> Result<Step, EngineError> {
        let now = now_of(self.clock.as_ref());
        // "States.DataLimitExceeded: ... the output of a connector is larger than the payload size
        // quota." Checked before the result is written anywhere.
        if payload_size(&result) > MAX_PAYLOAD_BYTES {
            self.fail_execution(
                &mut rec,
                "States.DataLimitExceeded",
                &format!("the result of {} exceeds 262144 bytes", state.name),
            );
            return self.commit(rec, rev).await;
        }
        rec.push_event(now, "TaskSucceeded", Some(&state.name), json!({ "output": result }));
        self.state_result(
            rec,
            rev,
            machine,
            state,
            cursor,
            result,
            task.result_selector.as_ref(),
            task.result_path.as_ref(),
        )
        .await
    }
}
