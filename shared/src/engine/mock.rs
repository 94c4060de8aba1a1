//! AWS Step Functions Local's mock configuration (`MockConfigFile.json`): test cases map state
//! names to mocked responses; each response maps invocation numbers (`"0"`, `"1-2"`) to a
//! `Return` value or a `Throw {Error, Cause}`.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

use super::interpreter::{TaskDispatcher, TaskFailure, TaskInvocation, TaskOutcome};

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MockConfig {
    pub state_machines: BTreeMap<String, MockStateMachine>,
    pub mocked_responses: BTreeMap<String, BTreeMap<String, MockedResponse>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MockStateMachine {
    pub test_cases: BTreeMap<String, BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct MockedResponse {
    #[serde(default)]
    pub r#return: Option<Value>,
    #[serde(default)]
    pub throw: Option<MockedThrow>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MockedThrow {
    pub error: String,
    #[serde(default)]
    pub cause: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MockError {
    #[error("mock config is not valid: {0}")]
    Invalid(String),
    #[error("test case {0} not found (known: {1})")]
    UnknownTestCase(String, String),
}

impl MockConfig {
    pub fn parse(text: &str) -> Result<Self, MockError> {
        let cfg: MockConfig = serde_json::from_str(text).map_err(|e| MockError::Invalid(e.to_string()))?;
        for (name, by_attempt) in &cfg.mocked_responses {
            for (key, resp) in by_attempt {
                parse_range(key).ok_or_else(|| MockError::Invalid(format!("{name}: bad invocation key {key:?}")))?;
                if resp.r#return.is_some() == resp.throw.is_some() {
                    return Err(MockError::Invalid(format!("{name}[{key}]: exactly one of Return and Throw")));
                }
            }
        }
        for (sm, machine) in &cfg.state_machines {
            for (case, states) in &machine.test_cases {
                for (state, response) in states {
                    if !cfg.mocked_responses.contains_key(response) {
                        return Err(MockError::Invalid(format!(
                            "{sm}/{case}: state {state} uses unknown mocked response {response}"
                        )));
                    }
                }
            }
        }
        Ok(cfg)
    }

    /// A dispatcher answering with the mocked responses of one test case.
    pub fn dispatcher(&self, state_machine: &str, test_case: &str) -> Result<MockDispatcher, MockError> {
        let machine = self.state_machines.get(state_machine).ok_or_else(|| {
            MockError::UnknownTestCase(
                format!("{state_machine}/{test_case}"),
                self.state_machines.keys().cloned().collect::<Vec<_>>().join(", "),
            )
        })?;
        let case = machine.test_cases.get(test_case).ok_or_else(|| {
            MockError::UnknownTestCase(
                test_case.to_string(),
                machine.test_cases.keys().cloned().collect::<Vec<_>>().join(", "),
            )
        })?;
        let mut states = BTreeMap::new();
        for (state, response) in case {
            let mocked = self.mocked_responses.get(response).ok_or_else(|| {
                MockError::Invalid(format!("test case {test_case}: state {state} names unknown response {response}"))
            })?;
            states.insert(state.clone(), mocked.clone());
        }
        Ok(MockDispatcher { states })
    }

    /// Every (state machine, test case) pair in the file.
    pub fn test_cases(&self) -> Vec<(String, String)> {
        self.state_machines
            .iter()
            .flat_map(|(sm, m)| m.test_cases.keys().map(move |c| (sm.clone(), c.clone())))
            .collect()
    }
}

fn parse_range(key: &str) -> Option<(u32, u32)> {
    match key.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
            (a <= b).then_some((a, b))
        }
        None => {
            let n = key.trim().parse().ok()?;
            Some((n, n))
        }
    }
}

pub struct MockDispatcher {
    states: BTreeMap<String, BTreeMap<String, MockedResponse>>,
}

#[async_trait]
impl TaskDispatcher for MockDispatcher {
    async fn invoke(&self, invocation: TaskInvocation) -> Result<TaskOutcome, TaskFailure> {
        let Some(responses) = self.states.get(&invocation.state) else {
            return Err(TaskFailure::new(
                "MockConfigError",
                format!("the test case has no mocked response for state {}", invocation.state),
            ));
        };
        let n = invocation.invocation;
        let hit = responses.iter().find(|(k, _)| parse_range(k).is_some_and(|(a, b)| a <= n && n <= b));
        match hit {
            Some((_, MockedResponse { r#return: Some(v), .. })) => Ok(TaskOutcome::Completed(v.clone())),
            Some((_, MockedResponse { throw: Some(t), .. })) => Err(TaskFailure::new(t.error.clone(), t.cause.clone())),
            _ => Err(TaskFailure::new(
                "MockConfigError",
                format!("no mocked response for invocation {n} of state {}", invocation.state),
            )),
        }
    }
}
