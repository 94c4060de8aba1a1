//! Worst-case running time of each Lambda function's handler, from the clients' real retry
//! settings, so the template's `Timeout`s can be checked against what the code may take.
//!
//! The model: a function's budget is its slowest path, the sum of the calls that path makes in
//! sequence (read from the stage code in `stages/`):
//! - an AWS SDK call (DynamoDB, Step Functions) is bounded by the SDK's operation timeout, which
//!   includes the SDK's own retries (`aws::sdk_config`);
//! - a SaaS call through [`ApiClient::send`](crate::http::ApiClient::send) makes `retries + 1`
//!   attempts of at most the per-attempt timeout, each retry after at most the longest wait it
//!   honours (a server hint up to `max_honoured_wait`, else back-off capped at `max_delay`);
//! - [`ApiClient::read_json`](crate::http::ApiClient::read_json) re-sends a 2xx whose body does
//!   not parse, each time with a full `send` budget: `(retries + 1) × send + retries × max_delay`;
//! - a Bedrock `InvokeModel` call runs the adapter's own loop (`adapters::bedrock`): `retries + 1`
//!   attempts of at most the per-attempt timeout, each retry after a back-off capped at
//!   `max_delay` (Bedrock sends no wait hint; an answer that does not parse counts as an attempt);
//! - only the paths of the configured model provider count (`planner.provider`: a deployment
//!   calls either Anthropic or Bedrock);
//! - one pass of browser checks: each check is bounded by its own deadline, at most
//!   `max_concurrent_checks` at a time;
//! - with refreshing secrets, a call may first refresh them (bounded by
//!   [`REFRESH_TIMEOUT`](crate::secrets::REFRESH_TIMEOUT)).
//!
//! Not counted: lost optimistic-concurrency races (each extra round only happens after another
//! writer succeeded, so it is bounded by contention, not by timeouts), more than one page per
//! DynamoDB query (incident partitions are far below 1 MB), and CPU time.

use std::time::Duration;

use crate::config::{ModelProvider, Settings};
use crate::http::RetryPolicy;
use crate::ports::CheckSpec;
use crate::stages::{Function, Op};

/// Bound of one AWS SDK operation, retries included (`operation_timeout` in `aws::sdk_config`).
pub const AWS_OPERATION_TIMEOUT: Duration = Duration::from_secs(10);

/// Lambda's maximum function timeout.
pub const LAMBDA_MAX_SECS: u64 = 900;

/// API Gateway HTTP APIs stop waiting for a Lambda integration after 30 s; the template keeps
/// the HTTP functions at 29 s.
pub const HTTP_API_MAX_SECS: u64 = 29;

/// Runbooks a lookup keeps (the search asks for 5 hits; each may name a runbook whose catalog
/// is read, and planning reads the catalog of each distinct one).
const MAX_RUNBOOKS: u32 = 5;

/// A SaaS client, with the per-attempt timeout and retry count its adapter constructs it with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    PagerDuty,
    Slack,
    Senso,
    Anthropic,
    /// The note parser's model fallback: the same API with its own, shorter timeout.
    AnthropicNotes,
    /// Claude on Amazon Bedrock as the planner (`InvokeModel`, `adapters::bedrock`).
    Bedrock,
    /// Claude on Amazon Bedrock as the note parser's fallback.
    BedrockNotes,
    Coder,
}

impl Client {
    pub const ALL: [Client; 8] = [
        Client::PagerDuty,
        Client::Slack,
        Client::Senso,
        Client::Anthropic,
        Client::AnthropicNotes,
        Client::Bedrock,
        Client::BedrockNotes,
        Client::Coder,
    ];

    /// The model provider this client belongs to (`None`: every deployment calls it).
    pub fn provider(self) -> Option<ModelProvider> {
        match self {
            Client::Anthropic | Client::AnthropicNotes => Some(ModelProvider::Anthropic),
            Client::Bedrock | Client::BedrockNotes => Some(ModelProvider::Bedrock),
            Client::PagerDuty | Client::Slack | Client::Senso | Client::Coder => None,
        }
    }

    /// The adapter's per-attempt timeout (`ApiClient::new` in `adapters/<client>.rs`; a unit test
    /// reads it from there).
    pub fn default_timeout(self) -> Duration {
        Duration::from_secs(match self {
            Client::PagerDuty | Client::Slack => 10,
            Client::Coder => 15,
            Client::Senso | Client::AnthropicNotes | Client::BedrockNotes => 30,
            Client::Anthropic | Client::Bedrock => 90,
        })
    }

    /// Retries after the first attempt: the default policy, except the model clients
    /// (`max_retries: 2`).
    pub fn retry_policy(self) -> RetryPolicy {
        match self {
            Client::Anthropic | Client::AnthropicNotes | Client::Bedrock | Client::BedrockNotes => {
                RetryPolicy { max_retries: 2, ..RetryPolicy::default() }
            }
            _ => RetryPolicy::default(),
        }
    }

    /// `SELFHEAL_API_REQUEST_TIMEOUT_MS` overrides every client's per-attempt timeout.
    pub fn timeout(self, settings: &Settings) -> Duration {
        settings.timeouts.api_request_ms.map_or(self.default_timeout(), Duration::from_millis)
    }

    /// Worst case of one `ApiClient::send`.
    pub fn send_worst(self, settings: &Settings) -> Duration {
        let p = self.retry_policy();
        let wait = p.max_honoured_wait.max(p.max_delay);
        self.timeout(settings) * (p.max_retries + 1) + wait * p.max_retries
    }

    /// Worst case of one `ApiClient::read_json`: every parse retry starts a fresh `send`.
    pub fn read_worst(self, settings: &Settings) -> Duration {
        let p = self.retry_policy();
        self.send_worst(settings) * (p.max_retries + 1) + p.max_delay * p.max_retries
    }

    /// Worst case of one Bedrock invocation: every attempt at its timeout, every back-off at its
    /// cap (no server wait hints).
    pub fn invoke_worst(self, settings: &Settings) -> Duration {
        let p = self.retry_policy();
        self.timeout(settings) * (p.max_retries + 1) + p.max_delay * p.max_retries
    }
}

/// How a SaaS call goes through `ApiClient`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// `send`: calls with effects (posts, creates, deletes).
    Send,
    /// `read_json`: reads, searches, the model's answer.
    Read,
    /// One attempt, no client retries: the state machine retries the step instead (the file
    /// upload of a long script awaiting approval).
    Once,
    /// A Bedrock `InvokeModel` through the adapter's own retry loop (`adapters::bedrock`).
    Invoke,
}

/// One step of a handler's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// This many AWS SDK operations in sequence (DynamoDB reads and writes, Step Functions).
    Aws(u32),
    Api(Client, Call),
    /// One pass of the incident's service checks.
    Checks,
    /// A SaaS lifecycle (many calls and waits) that runs under its own deadline, in seconds: a
    /// Coder delete that waits for builds to settle, the scheduled cleanup.
    Bounded(u64),
}

/// A handler's path through the code, as the calls it makes in sequence.
#[derive(Debug, Clone, Copy)]
pub struct Path {
    pub label: &'static str,
    pub steps: &'static [Step],
}

use Call::{Invoke, Once, Read, Send};
use Client::{Anthropic, AnthropicNotes, Bedrock, BedrockNotes, Coder, PagerDuty, Senso, Slack};
use Step::{Api, Aws, Bounded, Checks};

/// A struct literal (not a call), so the tables below are promoted to `'static`.
macro_rules! path {
    ($label:expr, $steps:expr) => {
        Path { label: $label, steps: $steps }
    };
}

/// The slowest paths of an operation (alternatives where it is not obvious which is slowest).
/// Counts: `load` = 1 get; `update` = get + conditional put; `audit` = 1 put; a store `mutate`
/// (hand-offs, approvals, counters) = get + put; catalogs = 1 query per runbook.
pub fn op_paths(op: Op) -> &'static [Path] {
    const R: u32 = MAX_RUNBOOKS;
    const F: u32 = crate::stages::closing::MAX_FIXES_IN_WINDOW as u32;
    const T: u32 = crate::stages::closing::MAX_TRIGGERS_CHECKED as u32;
    const SETTLE: u64 = crate::adapters::coder::SETTLE_DEADLINE.as_secs();
    const CLEANUP: u64 = crate::stages::action::CLEANUP_DEADLINE.as_secs();
    // The milestone notes of the ops that write them (`stages::narration`), under their deadline.
    const NOTES: u64 = crate::stages::narration::NARRATION_DEADLINE.as_secs();
    const READ_BACK: u64 = crate::stages::closing::READ_BACK_DEADLINE.as_secs();
    match op {
        // load, offer_wait_token (mutate), audit
        Op::AwaitHypothesis => &[path!("await_hypothesis", &[Aws(4)])],
        // investigator_note, audit trail, the full note (trimmed in its webhook), the model
        // fallback for a field the rules could not read, update, audit
        Op::ParseHypothesis => &[
            path!(
                "parse_hypothesis (trimmed note, model fallback)",
                &[Aws(2), Api(PagerDuty, Read), Api(AnthropicNotes, Read), Aws(3), Bounded(NOTES)]
            ),
            path!(
                "parse_hypothesis (trimmed note, model fallback on Bedrock)",
                &[Aws(2), Api(PagerDuty, Read), Api(BedrockNotes, Invoke), Aws(3), Bounded(NOTES)]
            ),
        ],
        // load, the recorded runbook documents, search, a catalog per hit, update, audit
        Op::LookupRunbooks => &[path!("lookup_runbooks", &[Aws(2), Api(Senso, Read), Aws(R + 3)])],
        // load, ingest, audit
        Op::IngestResolution => &[path!("ingest_resolution", &[Aws(1), Api(Senso, Send), Aws(1)])],
        // load, catalogs, the plan, the service's stored settings (by id, then name: the values
        // its parameters take), update, audit
        Op::PlanRemediation => &[
            path!("plan_remediation", &[Aws(1 + R), Api(Anthropic, Read), Aws(2 + 3)]),
            path!("plan_remediation (Bedrock)", &[Aws(1 + R), Api(Bedrock, Invoke), Aws(2 + 3)]),
        ],
        // load, re-fire by root cause (service events, the last fixes, mark one: update, action
        // outcome, two audits), the action's declared risk, the service's stored settings (by
        // id, then name), kill switch, fixes in the stability window (events, the last fixes),
        // autonomy budget (mutate), update, audit
        Op::Decide => &[path!("decide", &[Aws(1 + (1 + F + 6) + 1 + 2 + 1 + (1 + F) + 2 + 3)])],
        Op::RequestApproval => &[
            // load, create_approval, a long script as a file (upload URL, bytes, complete: one
            // attempt each), then post, record the message, update, audit
            path!(
                "request_approval (first run)",
                &[
                    Aws(2),
                    Api(Slack, Once),
                    Api(Slack, Once),
                    Api(Slack, Once),
                    Api(Slack, Send),
                    Aws(2 + 3),
                    Bounded(NOTES),
                ]
            ),
            // re-run: rebind the token, read the channel back (not found), then as above
            path!(
                "request_approval (re-run, message not found)",
                &[
                    Aws(2 + 2),
                    Api(Slack, Read),
                    Api(Slack, Once),
                    Api(Slack, Once),
                    Api(Slack, Once),
                    Api(Slack, Send),
                    Aws(2 + 3),
                    Bounded(NOTES),
                ]
            ),
            // re-run after a decision: rebind, SendTaskSuccess
            path!("request_approval (already decided)", &[Aws(4 + 1), Bounded(NOTES)]),
        ],
        // load, catalogs, post, update, audit
        Op::ShadowReport => &[path!("shadow_report", &[Aws(1 + R), Api(Slack, Send), Aws(3)])],
        // load, the service's stored settings (by id, then name), the checks, update, audit
        Op::Preflight => &[path!("preflight", &[Aws(3), Checks, Aws(3)])],
        Op::Postflight => &[path!("postflight", &[Aws(3), Checks, Aws(3)])],
        // load, stored settings (parameters and target), kill switch, catalogs, the incident's
        // status from PagerDuty (one send: the gate refuses on an unreadable answer), find
        // (adopt), create, update, audit
        Op::ProvisionWorkspace => &[path!(
            "provision_workspace",
            &[Aws(2 + 2 + R), Api(PagerDuty, Send), Api(Coder, Read), Api(Coder, Send), Aws(3), Bounded(NOTES)]
        )],
        Op::PollWorkspace => &[path!("poll_workspace", &[Api(Coder, Read)])],
        // agent logs, update, audit
        Op::CollectResult => &[path!("collect_result", &[Api(Coder, Read), Aws(3)])],
        // load, find by the plan's name (no record), the delete lifecycle (cancel, settle,
        // delete, confirm) under its deadline, update, audit
        Op::DestroyWorkspace => {
            &[path!("destroy_workspace (found by name)", &[Aws(1), Api(Coder, Read), Bounded(SETTLE), Aws(3)])]
        }
        // list, then deletes, all under the cleanup's deadline
        Op::CleanUpWorkspaces => &[path!("clean_up_workspaces", &[Bounded(CLEANUP)])],
        Op::ResolveIncident => {
            // milestone notes (PagerDuty, the Slack thread), update, audit trail, the notes read
            // back (a re-run), note, resolve, service event, audit, the outcome in the thread
            &[path!(
                "resolve_incident",
                &[
                    Bounded(NOTES),
                    Aws(3),
                    Bounded(READ_BACK),
                    Api(PagerDuty, Send),
                    Api(PagerDuty, Send),
                    Aws(2),
                    Bounded(NOTES)
                ]
            )]
        }
        // load, service events, the later triggers, mark a re-fire (update, action outcome, two
        // audits), update, action outcome (mutate), audit
        Op::CheckRefire => &[path!("check_refire", &[Bounded(NOTES), Aws(2 + T + 6 + 2 + 2 + 1)])],
        // update, audit trail, note, audit
        Op::RecordRejection => &[path!("record_rejection", &[Bounded(NOTES), Aws(3), Api(PagerDuty, Send), Aws(1)])],
        Op::Escalate => &[
            // load, update, audit trail, note, Slack post, audit
            path!(
                "escalate",
                &[Bounded(NOTES), Aws(4), Api(PagerDuty, Send), Api(Slack, Send), Aws(1), Bounded(NOTES)]
            ),
            // the store is down: the load times out, then both channels anyway
            path!(
                "escalate (store down)",
                &[Bounded(NOTES), Aws(1), Api(PagerDuty, Send), Api(Slack, Send), Bounded(NOTES)]
            ),
        ],
    }
}

/// The HTTP entry points' slowest paths. Every delivery is deduplicated first (put, get, put
/// at worst) and settled last (mutate); a PagerDuty delivery twice over, by `X-Webhook-Id` and
/// by the signed `event.id` (the `E` below).
fn http_paths(function: Function) -> &'static [Path] {
    const E: u32 = 3 + 2;
    const F: u32 = crate::stages::closing::MAX_FIXES_IN_WINDOW as u32;
    match function {
        Function::Intake => &[
            // get_incident ×2, audit, offer_note, SendTaskSuccess (a trimmed note is read later,
            // by ParseHypothesis)
            path!("incident.annotated", &[Aws(3 + 2 + 1 + 2 + 1 + 2 + E)]),
            // get, update, audit, waiting token, SendTaskFailure, decide approval, SendTaskFailure
            path!("incident.resolved", &[Aws(3 + 1 + 2 + 1 + 1 + 1 + 2 + 1 + 2 + E)]),
            // resolved early?, create, audit, service event, re-fire (service events, the last
            // fixes, mark one: update, action outcome, two audits), load, StartExecution,
            // update, audit
            path!("incident.triggered", &[Aws(3 + 1 + 4 + (1 + F + 6) + 1 + 3 + 2 + E)]),
        ],
        Function::SlackCallback => &[
            // the approval, its incident and the service's approvers (by id, then name), decide
            // (mutate), update, audit, SendTaskSuccess, respond
            path!("approver's click", &[Aws(1 + 1 + 2 + 2 + 2 + 1 + 1), Api(Slack, Send)]),
            // a click by someone not on the list, for a service whose on-call may approve: the
            // incident and its settings, their Slack email, the on-call pages (at most
            // MAX_ONCALL_PAGES), audit, then as a click
            path!(
                "on-call approver's click",
                &[
                    Aws(1 + 2),
                    Api(Slack, Read),
                    Api(PagerDuty, Read),
                    Api(PagerDuty, Read),
                    Api(PagerDuty, Read),
                    Api(PagerDuty, Read),
                    Api(PagerDuty, Read),
                    Aws(1 + 1 + 1 + 2 + 2 + 2 + 1 + 1),
                    Api(Slack, Send)
                ]
            ),
            // "Reject with reason…": the approval, its incident and the service's approvers, the
            // incident for the dialog, views.open
            path!("rejection dialog opened", &[Aws(1 + 1 + 2 + 1), Api(Slack, Send)]),
            // the dialog submitted: as a click, then chat.update of the approval message
            path!("rejection dialog submitted", &[Aws(1 + 1 + 2 + 2 + 2 + 1 + 1), Api(Slack, Send)]),
        ],
        _ => &[],
    }
}

/// Every path a function's handler can take with the planner's model at `provider`.
pub fn paths(function: Function, provider: ModelProvider) -> Vec<Path> {
    if function.is_http() {
        return http_paths(function).to_vec();
    }
    let calls_provider = |p: &Path| {
        p.steps.iter().all(|step| match step {
            Api(client, _) => client.provider().is_none_or(|own| own == provider),
            _ => true,
        })
    };
    function.ops().iter().flat_map(|op| op_paths(*op).iter().copied()).filter(calls_provider).collect()
}

/// One pass of checks for the service with the slowest configuration in `settings.checks`.
/// Deployed functions read each service's checks from the store at run time (`selfheal services
/// push`), so to size a deployment put the largest check set it should handle there. Each check is bounded by
/// its deadline (`LightpandaBrowser::check` and `HttpChecker` enforce at least 100 ms), at most
/// `max_concurrent_checks` at a time (greedy scheduling: at most sum / c + longest).
pub fn checks_worst(settings: &Settings) -> Duration {
    let concurrency = settings.browser.max_concurrent_checks.max(1) as u32;
    settings
        .checks
        .values()
        .map(|specs| {
            let deadline = |s: &CheckSpec| Duration::from_millis(s.deadline_ms.max(100));
            let longest = specs.iter().map(deadline).max().unwrap_or_default();
            let sum: Duration = specs.iter().map(deadline).sum();
            if specs.len() as u32 <= concurrency { longest } else { sum / concurrency + longest }
        })
        .max()
        .unwrap_or_default()
}

/// The worst case of one path.
pub fn path_worst(function: Function, p: &Path, settings: &Settings) -> Duration {
    let refresh = if function.secret_keys(settings.planner.provider).is_empty() {
        Duration::ZERO
    } else {
        crate::secrets::REFRESH_TIMEOUT
    };
    let mut total = Duration::ZERO;
    let mut saas_calls = 0u32;
    for step in p.steps {
        total += match *step {
            Aws(n) => AWS_OPERATION_TIMEOUT * n,
            Api(client, Send) => client.send_worst(settings),
            Api(client, Read) => client.read_worst(settings),
            Api(client, Once) => client.timeout(settings),
            Api(client, Invoke) => client.invoke_worst(settings),
            Checks => checks_worst(settings),
            Bounded(secs) => Duration::from_secs(secs),
        };
        // A Bedrock adapter holds no secret, so its calls never refresh them.
        if matches!(step, Api(_, Send | Read | Once) | Bounded(..)) {
            saas_calls += 1;
        }
    }
    // Each SaaS call, and the handler's own first read, may find the cached secrets stale.
    total + refresh * (saas_calls + 1)
}

/// A function's worst case, with the path that reaches it.
#[derive(Debug, Clone)]
pub struct Budget {
    pub function: Function,
    pub path: &'static str,
    pub worst: Duration,
}

impl Budget {
    /// Whole seconds, rounded up.
    pub fn secs(&self) -> u64 {
        self.worst.as_secs() + u64::from(self.worst.subsec_nanos() > 0)
    }

    /// Whether any Timeout the platform allows can hold it.
    pub fn fits(&self) -> bool {
        self.secs() <= limit_secs(self.function)
    }
}

/// The longest `Timeout` that is useful for `function`.
pub fn limit_secs(function: Function) -> u64 {
    if function.is_http() { HTTP_API_MAX_SECS } else { LAMBDA_MAX_SECS }
}

pub fn worst_case(function: Function, settings: &Settings) -> Budget {
    paths(function, settings.planner.provider)
        .iter()
        .map(|p| Budget { function, path: p.label, worst: path_worst(function, p, settings) })
        .max_by_key(|b| b.worst)
        .unwrap_or(Budget { function, path: "(no paths)", worst: Duration::ZERO })
}

/// Worst-case seconds of `function`'s handler (see the module documentation for the model).
pub fn worst_case_secs(function: Function, settings: &Settings) -> u64 {
    worst_case(function, settings).secs()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Settings, env_map};

    fn defaults() -> Settings {
        Settings::from_sources(None, env_map(&[])).unwrap()
    }

    /// The figures above restate constructor arguments that live in other files (the clients'
    /// fields are private): read them back from the source so a change there fails here.
    #[test]
    fn client_settings_match_the_adapters() {
        let sources = [
            (Client::PagerDuty, include_str!("adapters/pagerduty.rs")),
            (Client::Slack, include_str!("adapters/slack.rs")),
            (Client::Senso, include_str!("adapters/senso.rs")),
            (Client::Anthropic, include_str!("adapters/anthropic.rs")),
            (Client::Coder, include_str!("adapters/coder.rs")),
        ];
        for (client, source) in sources {
            let marker = "ApiClient::new(SERVICE, api_base, Duration::from_secs(";
            let at = source.find(marker).unwrap_or_else(|| panic!("{client:?}: constructor not found")) + marker.len();
            let secs: u64 = source[at..].split(')').next().unwrap().parse().unwrap();
            assert_eq!(Duration::from_secs(secs), client.default_timeout(), "{client:?}");
            let custom = source.contains(".with_retry(");
            // Slack's file upload makes one attempt per call (`Call::Once`), checked below.
            let expected = matches!(client, Client::Anthropic | Client::Slack);
            assert_eq!(custom, expected, "{client:?}: retry policy changed");
        }
        assert!(include_str!("adapters/slack.rs").contains("RetryPolicy { max_retries: 0, ..Default::default() }"));
        assert!(
            include_str!("adapters/anthropic.rs").contains("RetryPolicy { max_retries: 2, ..RetryPolicy::default() }")
        );
        // The note reader, the second Anthropic client: 30 s per attempt, two retries.
        let anthropic = include_str!("adapters/anthropic.rs");
        let reader = &anthropic[anthropic.find("impl AnthropicNoteReader").expect("the note reader")..];
        let marker = "ApiClient::new(SERVICE, api_base, Duration::from_secs(";
        let at = reader.find(marker).expect("its constructor") + marker.len();
        let secs: u64 = reader[at..].split(')').next().unwrap().parse().unwrap();
        assert_eq!(Duration::from_secs(secs), Client::AnthropicNotes.default_timeout());
        assert!(reader.contains("RetryPolicy { max_retries: 2, ..RetryPolicy::default() }"));
        // The Bedrock adapters: each constructor states its per-attempt timeout and retries (read
        // without whitespace: rustfmt may wrap the call).
        let bedrock = include_str!("adapters/bedrock.rs");
        for (client, constructor) in
            [(Client::Bedrock, "impl BedrockPlanner {"), (Client::BedrockNotes, "impl BedrockNoteReader {")]
        {
            let from = bedrock.find(constructor).unwrap_or_else(|| panic!("{constructor}"));
            let block = &bedrock[from..from + bedrock[from..].find("\n}\n").expect("the impl block ends")];
            let block: String = block.chars().filter(|c| !c.is_whitespace()).collect();
            let marker = "Invocation::new(Duration::from_secs(";
            let at = block.find(marker).expect("its invocation settings") + marker.len();
            let secs: u64 = block[at..].split(')').next().unwrap().parse().unwrap();
            assert_eq!(Duration::from_secs(secs), client.default_timeout(), "{client:?}");
            assert!(
                block.contains("RetryPolicy{max_retries:2,..RetryPolicy::default()}"),
                "{client:?}: retries changed"
            );
        }
        assert!(include_str!("aws.rs").contains(".operation_timeout(Duration::from_secs(10))"));
        assert_eq!(AWS_OPERATION_TIMEOUT, Duration::from_secs(10));
    }

    #[test]
    fn saas_call_bounds() {
        let s = defaults();
        // Anthropic: 3 attempts of 90 s, two waits of up to 20 s.
        assert_eq!(Client::Anthropic.send_worst(&s), Duration::from_secs(310));
        assert_eq!(Client::Anthropic.read_worst(&s), Duration::from_secs(3 * 310 + 2 * 8));
        assert_eq!(Client::PagerDuty.send_worst(&s), Duration::from_secs(4 * 10 + 3 * 20));
        let fast = Settings::from_sources(None, env_map(&[("SELFHEAL_API_REQUEST_TIMEOUT_MS", "2000")])).unwrap();
        assert_eq!(Client::Anthropic.send_worst(&fast), Duration::from_secs(3 * 2 + 2 * 20));
        // Bedrock: 3 attempts of 90 s, two back-offs of up to 8 s; no wait hints, no re-sends.
        assert_eq!(Client::Bedrock.invoke_worst(&s), Duration::from_secs(3 * 90 + 2 * 8));
        assert_eq!(Client::BedrockNotes.invoke_worst(&s), Duration::from_secs(3 * 30 + 2 * 8));
        assert_eq!(Client::Bedrock.invoke_worst(&fast), Duration::from_secs(3 * 2 + 2 * 8));
    }

    #[test]
    fn only_the_configured_providers_calls_count() {
        let anthropic = defaults();
        let bedrock = Settings::from_sources(None, env_map(&[("SELFHEAL_PLANNER_PROVIDER", "bedrock")])).unwrap();
        assert_eq!(worst_case(Function::Planner, &anthropic).path, "plan_remediation");
        let b = worst_case(Function::Planner, &bedrock);
        assert_eq!(b.path, "plan_remediation (Bedrock)");
        // Store calls around one invocation, and no secret to refresh: the planner then fits
        // Lambda's 900 s, which it does not with Anthropic's read_json.
        assert_eq!(b.secs(), 10 * (1 + 5) + (3 * 90 + 2 * 8) + 10 * 5);
        assert!(b.fits() && !worst_case(Function::Planner, &anthropic).fits());
        // The cleric function still reads PagerDuty (its secret may refresh) before the fallback.
        // And writes its milestone note, under the narration deadline.
        assert_eq!(worst_case_secs(Function::Cleric, &bedrock), 5 * 10 + 424 + (3 * 30 + 2 * 8) + 2 * 2 + 12);
        for f in Function::ALL.into_iter().filter(|f| !matches!(f, Function::Planner | Function::Cleric)) {
            assert_eq!(worst_case_secs(f, &anthropic), worst_case_secs(f, &bedrock), "{f:?}");
        }
    }

    #[test]
    fn every_function_has_a_budget() {
        let s = defaults();
        for f in Function::ALL {
            let b = worst_case(f, &s);
            assert!(b.secs() > 0, "{f:?}");
        }
        // Cleric: store calls, one PagerDuty read (a trimmed note) and the note fallback's
        // Anthropic read (3 × (3 × 30 s + 2 × 20 s) + 2 × 8 s), then its milestone note (the
        // 10 s narration deadline and a secret refresh); the planner is dominated by Anthropic.
        assert_eq!(worst_case_secs(Function::Cleric, &s), 5 * 10 + 424 + (3 * 130 + 16) + 3 * 2 + 12);
        assert_eq!(worst_case(Function::Planner, &s).path, "plan_remediation");
    }

    #[test]
    fn checks_are_bounded_by_deadlines_and_concurrency() {
        let mut s = defaults();
        assert_eq!(checks_worst(&s), Duration::ZERO);
        let spec = |ms: u64| CheckSpec {
            name: "c".into(),
            url: "https://example.com".into(),
            expect_status: 200,
            expect_text: None,
            expect_selector: None,
            max_latency_ms: None,
            steps: vec![],
            deadline_ms: ms,
        };
        s.checks.insert("svc".into(), vec![spec(10_000), spec(5_000)]);
        assert_eq!(checks_worst(&s), Duration::from_secs(10));
        s.browser.max_concurrent_checks = 1;
        assert_eq!(checks_worst(&s), Duration::from_secs(15 + 10));
    }
}
