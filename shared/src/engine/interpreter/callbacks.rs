//! Task tokens: `SendTaskSuccess` / `Failure` / `Heartbeat`, timeouts, re-invoking a handler
//! that died, and resuming the execution when its token completes.

use super::*;

impl Engine {
    /// The execution a task token was issued to (None: not a token of this engine), so the
    /// Step Functions API can authorise `SendTask*` against that execution's state machine.
    pub async fn token_execution(&self, token: &TaskToken) -> Result<Option<String>, EngineError> {
        let pk = token_pk(token.expose());
        let now = now_of(self.clock.as_ref()).timestamp();
        let Some(stored) = self.table.get(&pk, "META", now).await? else { return Ok(None) };
        let rec: TokenRecord =
            serde_json::from_value(stored.doc).map_err(|e| EngineError::Corrupt(pk, e.to_string()))?;
        Ok(Some(rec.execution))
    }

    pub(super) async fn complete_token(
        &self,
        token: &str,
        status: TokenStatus,
        output: Option<Value>,
        error: Option<String>,
        cause: Option<String>,
    ) -> Result<String, OrchestratorError> {
        let pk = token_pk(token);
        let now = now_of(self.clock.as_ref()).timestamp();
        for _ in 0..50 {
            let Some(stored) = self.table.get(&pk, "META", now).await.map_err(EngineError::from)? else {
                return Err(OrchestratorError::InvalidToken);
            };
            let mut rec: TokenRecord = serde_json::from_value(stored.doc)
                .map_err(|e| OrchestratorError::Rejected(format!("corrupt token record: {e}")))?;
            if rec.status != TokenStatus::Pending {
                return Err(OrchestratorError::TaskClosed);
            }
            rec.status = status;
            rec.output = output.clone();
            rec.error = error.clone();
            rec.cause = cause.clone();
            let doc = serde_json::to_value(&rec).map_err(|e| OrchestratorError::Rejected(e.to_string()))?;
            if self.table.put_if(&pk, "META", &doc, Some(stored.rev), None, now).await.map_err(EngineError::from)? {
                return Ok(rec.execution);
            }
        }
        Err(OrchestratorError::Unavailable("token record contention".into()))
    }

    pub async fn send_task_success(&self, token: &TaskToken, output: &Value) -> Result<(), OrchestratorError> {
        if payload_size(output) > MAX_PAYLOAD_BYTES {
            return Err(OrchestratorError::Rejected("InvalidOutput: output exceeds 262144 bytes".into()));
        }
        let execution =
            self.complete_token(token.expose(), TokenStatus::Succeeded, Some(output.clone()), None, None).await?;
        self.spawn_drive(execution);
        Ok(())
    }

    pub async fn send_task_failure(
        &self,
        token: &TaskToken,
        error: &str,
        cause: &str,
    ) -> Result<(), OrchestratorError> {
        let execution = self
            .complete_token(token.expose(), TokenStatus::Failed, None, Some(error.to_string()), Some(cause.to_string()))
            .await?;
        self.spawn_drive(execution);
        Ok(())
    }

    /// Push back a callback task's heartbeat deadline.
    pub async fn send_task_heartbeat(&self, token: &TaskToken) -> Result<(), OrchestratorError> {
        let pk = token_pk(token.expose());
        let now = now_of(self.clock.as_ref());
        let stored = self
            .table
            .get(&pk, "META", now.timestamp())
            .await
            .map_err(EngineError::from)?
            .ok_or(OrchestratorError::InvalidToken)?;
        let mut rec: TokenRecord =
            serde_json::from_value(stored.doc).map_err(|e| OrchestratorError::Rejected(e.to_string()))?;
        if rec.status != TokenStatus::Pending {
            return Err(OrchestratorError::TaskClosed);
        }
        if let Some(h) = rec.heartbeat_secs {
            rec.heartbeat_deadline = Some(now + Duration::seconds(h as i64));
        }
        let doc = serde_json::to_value(&rec).map_err(|e| OrchestratorError::Rejected(e.to_string()))?;
        self.table
            .put_if(&pk, "META", &doc, Some(stored.rev), None, now.timestamp())
            .await
            .map_err(EngineError::from)?;
        Ok(())
    }

    /// A callback task's handler returned: record that, then follow the token.
    pub(super) async fn callback_dispatched(
        &self,
        execution: &str,
        machine: &StateMachine,
        state: &State,
        token: &str,
        result: Result<TaskOutcome, TaskFailure>,
    ) -> Result<Step, EngineError> {
        self.mark_delivered(token).await?;
        // Reload: the record says AwaitToken (persisted before dispatch).
        let Some((mut rec, rev)) = self.load(execution).await? else {
            return Ok(Step::Stop);
        };
        if !rec.is_open() {
            return Ok(Step::Stop);
        }
        self.fill_root_context(&mut rec, state).await?;
        match result {
            // A mocked callback task completes at once (Step Functions Local semantics).
            Ok(TaskOutcome::Completed(v)) => {
                let _ = self.complete_token(token, TokenStatus::Succeeded, Some(v), None, None).await;
            }
            Ok(TaskOutcome::AwaitCallback) => {}
            Err(f) => {
                let _ = self.complete_token(token, TokenStatus::Failed, None, Some(f.error), Some(f.cause)).await;
            }
        }
        let cursor = rec.cursor.clone().ok_or_else(|| EngineError::Corrupt(rec.name.clone(), "no cursor".into()))?;
        self.resume_callback(rec, rev, machine, state, &cursor, token).await
    }

    /// Clear a token's undelivered invocation (its handler returned).
    pub(super) async fn mark_delivered(&self, token: &str) -> Result<(), EngineError> {
        let pk = token_pk(token);
        let now = now_of(self.clock.as_ref()).timestamp();
        for _ in 0..50 {
            let Some(stored) = self.table.get(&pk, "META", now).await? else { return Ok(()) };
            let mut rec: TokenRecord =
                serde_json::from_value(stored.doc).map_err(|e| EngineError::Corrupt(pk.clone(), e.to_string()))?;
            if rec.undelivered.is_none() {
                return Ok(());
            }
            rec.undelivered = None;
            let doc = serde_json::to_value(&rec).map_err(|e| EngineError::Corrupt(pk.clone(), e.to_string()))?;
            if self.table.put_if(&pk, "META", &doc, Some(stored.rev), None, now).await? {
                return Ok(());
            }
        }
        Err(EngineError::Corrupt(pk, "token record contention".into()))
    }

    pub(super) fn arm_token_timer(&self, token: String, deadline: DateTime<Utc>) {
        let Some(me) = self.me.upgrade() else { return };
        tokio::spawn(async move {
            me.sleep_until(deadline).await;
            me.expire_token(&token).await;
        });
    }

    pub(super) async fn expire_token(&self, token: &str) {
        let pk = token_pk(token);
        let now = now_of(self.clock.as_ref());
        let Ok(Some(stored)) = self.table.get(&pk, "META", now.timestamp()).await else {
            return;
        };
        let Ok(rec) = serde_json::from_value::<TokenRecord>(stored.doc) else {
            return;
        };
        if rec.status != TokenStatus::Pending {
            return;
        }
        let status = if rec.heartbeat_deadline.is_some_and(|h| h <= now) {
            TokenStatus::HeartbeatTimedOut
        } else if rec.deadline.is_some_and(|d| d <= now) {
            TokenStatus::TimedOut
        } else {
            // A heartbeat pushed the deadline: sleep again.
            if let Some(next) = [rec.deadline, rec.heartbeat_deadline].into_iter().flatten().min() {
                self.arm_token_timer(token.to_string(), next);
            }
            return;
        };
        if self.complete_token(token, status, None, None, None).await.is_ok() {
            self.spawn_drive(rec.execution);
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn resume_callback(
        &self,
        rec: ExecutionRecord,
        rev: u64,
        machine: &StateMachine,
        state: &State,
        cursor: &Cursor,
        token: &str,
    ) -> Result<Step, EngineError> {
        let Kind::Task(task) = &state.kind else {
            return Err(EngineError::Corrupt(rec.name.clone(), "awaiting a token outside a Task state".into()));
        };
        let now = now_of(self.clock.as_ref());
        let Some(stored) = self.table.get(&token_pk(token), "META", now.timestamp()).await? else {
            let failure = TaskFailure::new("States.Runtime", "the task token record is missing");
            return self.state_failed(rec, rev, state, cursor, failure).await;
        };
        let tok: TokenRecord =
            serde_json::from_value(stored.doc).map_err(|e| EngineError::Corrupt(rec.name.clone(), e.to_string()))?;
        match tok.status {
            TokenStatus::Pending if tok.undelivered.is_some() => {
                // The engine died while the handler ran: invoke it again, same token.
                let Some(pending) = tok.undelivered else { return Ok(Step::Stop) };
                let dispatcher =
                    self.dispatcher.read().ok().and_then(|d| d.clone()).ok_or(EngineError::NoDispatcher)?;
                let parsed = TaskToken::parse(token.to_string())
                    .map_err(|e| EngineError::Corrupt(rec.name.clone(), e.to_string()))?;
                let invocation = TaskInvocation {
                    execution: rec.name.clone(),
                    state: state.name.clone(),
                    resource: pending.resource,
                    parameters: pending.parameters,
                    invocation: pending.invocation,
                    token: Some(parsed),
                };
                let result = dispatcher.invoke(invocation).await;
                Box::pin(self.callback_dispatched(&rec.name, machine, state, token, result)).await
            }
            TokenStatus::Pending => {
                // (Re-)arm the timeout; after a restart this restores the remaining time.
                if let Some(next) = [tok.deadline, tok.heartbeat_deadline].into_iter().flatten().min() {
                    self.arm_token_timer(token.to_string(), next);
                }
                Ok(Step::Stop)
            }
            TokenStatus::Succeeded => {
                let output = tok.output.unwrap_or(Value::Null);
                self.task_succeeded(rec, rev, machine, state, task, cursor, output).await
            }
            TokenStatus::Failed => {
                let failure = TaskFailure::new(
                    tok.error.unwrap_or_else(|| "States.TaskFailed".into()),
                    tok.cause.unwrap_or_default(),
                );
                self.state_failed(rec, rev, state, cursor, failure).await
            }
            TokenStatus::TimedOut => {
                let mut rec = rec;
                rec.push_event(now, "TaskTimedOut", Some(&state.name), Value::Null);
                let failure =
                    TaskFailure::new("States.Timeout", format!("{} timed out waiting for its callback", state.name));
                self.state_failed(rec, rev, state, cursor, failure).await
            }
            TokenStatus::HeartbeatTimedOut => {
                let failure =
                    TaskFailure::new("States.HeartbeatTimeout", format!("{} missed its heartbeat", state.name));
                self.state_failed(rec, rev, state, cursor, failure).await
            }
            TokenStatus::Closed => Ok(Step::Stop),
        }
    }
}
