//! Errors: which `ErrorEquals` matches which error, Retry back-off and Catch.

use super::*;

/// Errors that States.ALL does not catch: they end the execution.
fn uncatchable(error: &str) -> bool {
    matches!(error, "States.Runtime" | "States.DataLimitExceeded")
}

pub(super) fn error_matches(list: &[String], error: &str) -> bool {
    if uncatchable(error) {
        return false;
    }
    let timeout = matches!(error, "States.Timeout" | "States.HeartbeatTimeout");
    list.iter().any(|e| {
        e == error
            || e == "States.ALL"
            || (e == "States.TaskFailed" && !timeout)
            || (e == "States.Timeout" && error == "States.HeartbeatTimeout")
    })
}

impl Engine {
    /// A Task, Map or Parallel state failed: its Retry, then its Catch, decide; otherwise the
    /// execution fails with the error.
    pub(super) async fn state_failed(
        &self,
        mut rec: ExecutionRecord,
        rev: u64,
        state: &State,
        cursor: &Cursor,
        failure: TaskFailure,
    ) -> Result<Step, EngineError> {
        let now = now_of(self.clock.as_ref());
        // TaskFailed, MapStateFailed, ParallelStateFailed.
        let event = match state.kind {
            Kind::Task(_) => "TaskFailed".to_string(),
            _ => format!("{}StateFailed", state.type_name()),
        };
        rec.push_event(now, &event, Some(&state.name), json!({ "error": failure.error, "cause": failure.cause }));
        let (retry, catch) = state.error_handling().unwrap_or((&[], &[]));
        // Retry: the first retrier that matches decides; its own counter bounds it.
        if let Some(idx) = retry.iter().position(|r| error_matches(&r.error_equals, &failure.error)) {
            let retrier = &retry[idx];
            let mut counts = cursor.retry_counts.clone();
            counts.resize(retry.len(), 0);
            if counts[idx] < retrier.max_attempts {
                let mut delay = retrier.interval_seconds * retrier.backoff_rate.powi(counts[idx] as i32);
                if let Some(max) = retrier.max_delay_seconds {
                    delay = delay.min(max);
                }
                if retrier.full_jitter {
                    delay *= rand::random::<f64>();
                }
                counts[idx] += 1;
                let at = now + Duration::milliseconds((delay * 1000.0) as i64);
                rec.cursor = Some(Cursor { phase: Phase::RetryAt { at }, retry_counts: counts, ..cursor.clone() });
                return self.commit(rec, rev).await;
            }
        }
        if let Some(index) = catch.iter().position(|c| error_matches(&c.error_equals, &failure.error)) {
            self.caught(&mut rec, state, cursor, index, &failure, now);
        } else {
            self.fail_execution(&mut rec, &failure.error, &failure.cause);
        }
        self.commit(rec, rev).await
    }

    pub(super) fn caught(
        &self,
        rec: &mut ExecutionRecord,
        state: &State,
        cursor: &Cursor,
        index: usize,
        failure: &TaskFailure,
        now: DateTime<Utc>,
    ) {
        let Some(catcher) = state.error_handling().and_then(|(_, catch)| catch.get(index)) else {
            self.fail_execution(rec, &failure.error, &failure.cause);
            return;
        };
        let error_output = json!({ "Error": failure.error, "Cause": failure.cause });
        let output = match state.jsonata.as_deref().and_then(|f| f.catch.get(index)) {
            Some((output, assign)) => {
                let context = self.state_context(rec, cursor, state);
                jsonata_exit(
                    rec,
                    output.as_ref(),
                    assign,
                    &cursor.raw_input,
                    &context,
                    None,
                    Some(&error_output),
                    error_output.clone(),
                )
                .map_err(|e| (QUERY_EVALUATION_ERROR, format!("{}: Catch Output: {e}", state.name)))
            }
            None => {
                // A JSONPath catcher's Assign sees the Error Output as "$" (ASL, Using Assign).
                let context =
                    if catcher.assign.is_some() { self.state_context(rec, cursor, state) } else { Value::Null };
                let variables = jsonpath_variables(rec, state);
                let env = path::Env::new(&context, &variables);
                match assign_jsonpath(rec, state, catcher.assign.as_ref(), &error_output, env) {
                    Err(f) => Err(("States.Runtime", format!("{}: Catch Assign: {}", state.name, f.cause))),
                    Ok(()) => path::merge_result(catcher.result_path.as_ref(), &cursor.raw_input, error_output)
                        .map_err(|e| ("States.Runtime", format!("{}: Catch ResultPath: {e}", state.name))),
                }
            }
        };
        match output {
            Ok(out) => {
                rec.push_event(
                    now,
                    &format!("{}StateExited", state.type_name()),
                    Some(&state.name),
                    json!({ "output": out, "caught": failure.error }),
                );
                rec.cursor = Some(Cursor {
                    state: catcher.next.clone(),
                    raw_input: out,
                    entered_at: now,
                    phase: Phase::Enter,
                    retry_counts: Vec::new(),
                });
            }
            Err((error, cause)) => self.fail_execution(rec, error, &cause),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_matching_follows_aws_rules() {
        let all = vec!["States.ALL".to_string()];
        let tf = vec!["States.TaskFailed".to_string()];
        assert!(error_matches(&all, "Transient"));
        assert!(error_matches(&all, "States.Timeout"));
        assert!(!error_matches(&all, "States.Runtime"));
        assert!(!error_matches(&all, "States.DataLimitExceeded"));
        assert!(error_matches(&tf, "Transient"));
        assert!(!error_matches(&tf, "States.Timeout"));
        assert!(!error_matches(&tf, "States.HeartbeatTimeout"));
        assert!(error_matches(&["States.Timeout".to_string()], "States.HeartbeatTimeout"));
        assert!(error_matches(&["Transient".to_string()], "Transient"));
        assert!(!error_matches(&["Transient".to_string()], "InvalidInput"));
    }
}
