//! The one table of what runs where: every state-machine operation ([`Op`]), the Lambda
//! function that runs it ([`Function`]), and what each needs from its environment
//! ([`Capability`]). The template, the local engine, Lambda init and the budget all derive from
//! here, and `tests/tests/suite/template_ops.rs` checks `template.yaml` and the state machine against it.

use serde::{Deserialize, Serialize};
use std::sync::LazyLock;

use crate::config::ModelProvider;

/// An operation a state-machine task asks for in `Payload.op`. The serde names (and
/// [`Op::as_str`]) are the names `statemachine/incident.asl.json` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    AwaitHypothesis,
    ParseHypothesis,
    LookupRunbooks,
    IngestResolution,
    PlanRemediation,
    Decide,
    RequestApproval,
    ShadowReport,
    Preflight,
    Postflight,
    ProvisionWorkspace,
    PollWorkspace,
    CollectResult,
    DestroyWorkspace,
    /// Not a state-machine task: an EventBridge schedule invokes it (see [`Op::scheduled`]).
    CleanUpWorkspaces,
    ResolveIncident,
    CheckRefire,
    RecordRejection,
    Escalate,
}

/// What a function's code touches outside itself. Each capability names the settings, secret
/// keys and IAM actions it requires, so a deployment can be checked before it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Capability {
    /// The incident table (DynamoDB GetItem/PutItem/Query through `DocTable`).
    Store,
    /// Task-token callbacks: `SendTaskSuccess` / `SendTaskFailure`.
    StateMachine,
    /// Starting executions (`StartExecution`); only intake starts them.
    StartExecution,
    /// PagerDuty REST: notes and resolutions.
    PagerDuty,
    /// Verifying PagerDuty webhook signatures and recognising the investigator's notes.
    PagerDutyWebhook,
    /// The Slack bot: posting and reading back messages, `response_url` replies.
    Slack,
    /// Approval buttons: the signing secret keys approval ids and verifies clicks; the
    /// approvers (global, or per service in the store) decide.
    SlackApprovals,
    /// The Senso knowledge base.
    Senso,
    /// Anthropic Messages (the planner).
    Anthropic,
    /// Anthropic Messages for the note parser's guarded fallback. Optional: without a key the
    /// function starts and the rules' reading stands (the audit says the model was not asked).
    NoteModel,
    /// Claude on Amazon Bedrock (`InvokeModel` on the chosen model, IAM-signed): the planner when
    /// `planner.provider = "bedrock"`. It stands in for [`Capability::Anthropic`].
    Bedrock,
    /// Claude on Amazon Bedrock for the note parser's fallback; stands in for
    /// [`Capability::NoteModel`] when the planner's provider is Bedrock.
    BedrockNoteModel,
    /// Coder workspaces.
    Coder,
    /// Lightpanda over CDP, for the checks configured per service.
    Browser,
}

/// The Lambda functions: the seven the state machine invokes and the two HTTP entry points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Function {
    Intake,
    SlackCallback,
    Cleric,
    Senso,
    Planner,
    Approval,
    Verify,
    Remediate,
    PagerDuty,
}

/// One row of the table.
struct Spec {
    function: Function,
    /// Cargo binary (`functions/<binary>`) and `BuildProperties.Binary`.
    binary: &'static str,
    /// Logical id of the `AWS::Serverless::Function` in template.yaml.
    logical_id: &'static str,
    /// `DefinitionSubstitutions` key of the function's ARN (`<logical id>Arn`).
    substitution: &'static str,
    /// The function's name for the local engine (`local:<binary>`).
    local_arn: &'static str,
    /// State-machine operations it runs (none for the HTTP functions).
    ops: &'static [Op],
    /// What its HTTP entry point needs (state-machine functions: see [`Op::needs`]).
    http_needs: &'static [Capability],
}

/// `concat!` derives the substitution key and local name, so a row states each fact once.
macro_rules! spec {
    ($function:ident, $binary:literal, $logical_id:literal, ops [$($op:ident),*], http [$($cap:ident),*]) => {
        Spec {
            function: Function::$function,
            binary: $binary,
            logical_id: $logical_id,
            substitution: concat!($logical_id, "Arn"),
            local_arn: concat!("local:", $binary),
            ops: &[$(Op::$op),*],
            http_needs: &[$(Capability::$cap),*],
        }
    };
}

/// In [`Function`] declaration order (a unit test holds it to that).
const TABLE: [Spec; 9] = [
    spec!(Intake, "intake", "IntakeFunction", ops [],
        http [Store, StateMachine, StartExecution, PagerDutyWebhook]),
    spec!(SlackCallback, "slack-callback", "SlackCallbackFunction", ops [],
        http [Store, StateMachine, Slack, SlackApprovals, PagerDuty]),
    spec!(Cleric, "cleric", "ClericFunction", ops [AwaitHypothesis, ParseHypothesis], http []),
    spec!(Senso, "senso", "SensoFunction", ops [LookupRunbooks, IngestResolution], http []),
    spec!(Planner, "planner", "PlannerFunction", ops [PlanRemediation, Decide], http []),
    spec!(Approval, "approval", "ApprovalFunction", ops [RequestApproval, ShadowReport], http []),
    spec!(Verify, "verify", "VerifyFunction", ops [Preflight, Postflight], http []),
    spec!(Remediate, "remediate", "RemediateFunction",
        ops [ProvisionWorkspace, PollWorkspace, CollectResult, DestroyWorkspace, CleanUpWorkspaces], http []),
    spec!(PagerDuty, "pagerduty", "PagerDutyFunction",
        ops [ResolveIncident, CheckRefire, RecordRejection, Escalate], http []),
];

impl Op {
    pub const ALL: [Op; 19] = [
        Op::AwaitHypothesis,
        Op::ParseHypothesis,
        Op::LookupRunbooks,
        Op::IngestResolution,
        Op::PlanRemediation,
        Op::Decide,
        Op::RequestApproval,
        Op::ShadowReport,
        Op::Preflight,
        Op::Postflight,
        Op::ProvisionWorkspace,
        Op::PollWorkspace,
        Op::CollectResult,
        Op::DestroyWorkspace,
        Op::CleanUpWorkspaces,
        Op::ResolveIncident,
        Op::CheckRefire,
        Op::RecordRejection,
        Op::Escalate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Op::AwaitHypothesis => "await_hypothesis",
            Op::ParseHypothesis => "parse_hypothesis",
            Op::LookupRunbooks => "lookup_runbooks",
            Op::IngestResolution => "ingest_resolution",
            Op::PlanRemediation => "plan_remediation",
            Op::Decide => "decide",
            Op::RequestApproval => "request_approval",
            Op::ShadowReport => "shadow_report",
            Op::Preflight => "preflight",
            Op::Postflight => "postflight",
            Op::ProvisionWorkspace => "provision_workspace",
            Op::PollWorkspace => "poll_workspace",
            Op::CollectResult => "collect_result",
            Op::DestroyWorkspace => "destroy_workspace",
            Op::CleanUpWorkspaces => "clean_up_workspaces",
            Op::ResolveIncident => "resolve_incident",
            Op::CheckRefire => "check_refire",
            Op::RecordRejection => "record_rejection",
            Op::Escalate => "escalate",
        }
    }

    pub fn parse(name: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.as_str() == name)
    }

    /// Invoked by an EventBridge `Schedule` event on its function (template.yaml, with
    /// `Input: {"op": …}`), not by the state machine; it concerns no single incident.
    pub fn scheduled(self) -> bool {
        matches!(self, Op::CleanUpWorkspaces)
    }

    /// The function that runs this operation.
    pub fn function(self) -> Function {
        Function::ALL
            .into_iter()
            .find(|f| f.ops().contains(&self))
            .unwrap_or_else(|| unreachable!("every op is in exactly one row (unit-tested)"))
    }

    /// What the operation's code uses with the planner's model at `provider` (read from the
    /// stage functions; `budget` walks the same calls). Every op loads or writes the incident, so
    /// all need the store.
    pub fn needs(self, provider: ModelProvider) -> &'static [Capability] {
        use Capability::*;
        use ModelProvider as P;
        match (self, provider) {
            // The hand-off goes through the store; the state machine skips the wait itself
            // (NoteAlreadyArrived), so no Step Functions call.
            (Op::AwaitHypothesis, _) => &[Store],
            // A note PagerDuty trimmed in its webhook is read in full here (not in intake, which
            // must answer within PagerDuty's 5 s); a note the rules cannot read is offered to the
            // guarded model fallback (`notes.model_fallback`).
            (Op::ParseHypothesis, P::Anthropic) => &[Store, PagerDuty, NoteModel],
            (Op::ParseHypothesis, P::Bedrock) => &[Store, PagerDuty, BedrockNoteModel],
            (Op::LookupRunbooks | Op::IngestResolution, _) => &[Store, Senso],
            (Op::PlanRemediation, P::Anthropic) => &[Store, Anthropic],
            (Op::PlanRemediation, P::Bedrock) => &[Store, Bedrock],
            (Op::Decide, _) => &[Store],
            // The end of the stability window also catches up the run's milestone notes.
            (Op::CheckRefire, _) => &[Store, PagerDuty, Slack],
            // Resumes a plan decided while the step re-ran (SendTaskSuccess); the signing secret
            // keys the approval id; the milestone notes (plan, approval requested with the
            // message's link) go to PagerDuty.
            (Op::RequestApproval, _) => &[Store, StateMachine, Slack, SlackApprovals, PagerDuty],
            (Op::ShadowReport, _) => &[Store, Slack],
            (Op::Preflight | Op::Postflight, _) => &[Store, Browser],
            // The execution gate reads the incident's status from PagerDuty right before it runs
            // anything: a resolved incident is never fixed.
            (Op::ProvisionWorkspace, _) => &[Store, PagerDuty, Coder],
            (Op::CollectResult | Op::DestroyWorkspace, _) => &[Store, Coder],
            // Polling only reads the build from Coder; the scheduled cleanup lists and deletes.
            (Op::PollWorkspace | Op::CleanUpWorkspaces, _) => &[Coder],
            // Resolving also tells the approvers, in the approval message's thread.
            (Op::ResolveIncident, _) => &[Store, PagerDuty, Slack],
            (Op::RecordRejection, _) => &[Store, PagerDuty],
            (Op::Escalate, _) => &[Store, PagerDuty, Slack],
        }
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An op name that is not in the table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown operation {0}")]
pub struct UnknownOp(pub String);

impl TryFrom<&str> for Op {
    type Error = UnknownOp;
    fn try_from(name: &str) -> Result<Self, Self::Error> {
        Op::parse(name).ok_or_else(|| UnknownOp(name.to_string()))
    }
}

impl std::str::FromStr for Op {
    type Err = UnknownOp;
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Op::try_from(name)
    }
}

impl Capability {
    /// Environment variables the deployment must provide for it (values are checked at init).
    pub fn env_vars(self) -> &'static [&'static str] {
        match self {
            Capability::Store => &["SELFHEAL_TABLE_NAME"],
            Capability::StateMachine | Capability::StartExecution => &["SELFHEAL_STATE_MACHINE_ARN"],
            Capability::PagerDutyWebhook => &["SELFHEAL_INVESTIGATOR_IDS"],
            Capability::Slack => &["SELFHEAL_SLACK_CHANNEL"],
            Capability::SlackApprovals => &["SELFHEAL_SLACK_APPROVERS"],
            Capability::Coder => &["SELFHEAL_CODER_API_BASE", "SELFHEAL_CODER_TEMPLATE_VERSION_ID"],
            // The checks themselves are per service in the store (`selfheal services push`).
            Capability::Browser => &["SELFHEAL_BROWSER_ENDPOINT"],
            // The provider's default is Anthropic; the model id has a working default, but the
            // template sets it so the IAM grant and the calls name the same model.
            Capability::Bedrock | Capability::BedrockNoteModel => {
                &["SELFHEAL_PLANNER_PROVIDER", "SELFHEAL_BEDROCK_MODEL_ID"]
            }
            // API bases and the model have working defaults.
            Capability::PagerDuty | Capability::Senso | Capability::Anthropic | Capability::NoteModel => &[],
        }
    }

    /// Keys of the secrets document it reads (`lightpanda_token` is optional: self-hosted
    /// Lightpanda needs none).
    pub fn secret_keys(self) -> &'static [&'static str] {
        match self {
            Capability::PagerDuty => &["pagerduty_api_token", "pagerduty_from_email"],
            Capability::PagerDutyWebhook => &["pagerduty_webhook_secrets"],
            Capability::Slack => &["slack_bot_token"],
            Capability::SlackApprovals => &["slack_signing_secret"],
            Capability::Senso => &["senso_api_key"],
            Capability::Anthropic | Capability::NoteModel => &["anthropic_api_key"],
            Capability::Coder => &["coder_session_token"],
            // IAM-signed: the function's role is the credential.
            Capability::Bedrock | Capability::BedrockNoteModel => &[],
            Capability::Store | Capability::StateMachine | Capability::StartExecution | Capability::Browser => &[],
        }
    }

    /// IAM actions its calls make (SaaS capabilities make none).
    pub fn iam_actions(self) -> &'static [&'static str] {
        match self {
            Capability::Store => &["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query"],
            Capability::StateMachine => &["states:SendTaskSuccess", "states:SendTaskFailure"],
            Capability::StartExecution => &["states:StartExecution"],
            // On the chosen model only (template.yaml scopes the resource).
            Capability::Bedrock | Capability::BedrockNoteModel => &["bedrock:InvokeModel"],
            _ => &[],
        }
    }
}

impl std::fmt::Display for Capability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

impl Function {
    pub const ALL: [Function; 9] = [
        Function::Intake,
        Function::SlackCallback,
        Function::Cleric,
        Function::Senso,
        Function::Planner,
        Function::Approval,
        Function::Verify,
        Function::Remediate,
        Function::PagerDuty,
    ];

    fn spec(self) -> &'static Spec {
        let spec = &TABLE[self as usize];
        debug_assert_eq!(spec.function, self, "TABLE is out of order");
        spec
    }

    /// The state-machine operations this function runs (none for the HTTP functions).
    pub fn ops(self) -> &'static [Op] {
        self.spec().ops
    }

    /// Which function runs `op`; takes an [`Op`] or its name (the local engine routes by name).
    pub fn for_op<O: TryInto<Op>>(op: O) -> Option<Function> {
        op.try_into().ok().map(Op::function)
    }

    /// Served through API Gateway instead of invoked by the state machine.
    pub fn is_http(self) -> bool {
        self.ops().is_empty()
    }

    /// Cargo binary name, e.g. `cleric`.
    pub fn binary(self) -> &'static str {
        self.spec().binary
    }

    /// Logical id in template.yaml, e.g. `ClericFunction`.
    pub fn logical_id(self) -> &'static str {
        self.spec().logical_id
    }

    /// `DefinitionSubstitutions` key of its ARN, e.g. `ClericFunctionArn`.
    pub fn substitution(self) -> &'static str {
        self.spec().substitution
    }

    /// Its name in the local engine, e.g. `local:cleric`.
    pub fn local_arn(self) -> &'static str {
        self.spec().local_arn
    }

    /// Everything its code uses with the planner's model at `provider`: the union of its ops'
    /// needs, or its HTTP entry point's.
    pub fn needs(self, provider: ModelProvider) -> &'static [Capability] {
        static NEEDS: LazyLock<Vec<Vec<Vec<Capability>>>> = LazyLock::new(|| {
            ModelProvider::ALL
                .iter()
                .map(|provider| {
                    Function::ALL
                        .iter()
                        .map(|f| {
                            let mut caps: Vec<Capability> = f.spec().http_needs.to_vec();
                            caps.extend(f.ops().iter().flat_map(|op| op.needs(*provider).iter().copied()));
                            caps.sort();
                            caps.dedup();
                            caps
                        })
                        .collect()
                })
                .collect()
        });
        &NEEDS[provider as usize][self as usize]
    }

    pub fn needs_capability(self, capability: Capability, provider: ModelProvider) -> bool {
        self.needs(provider).contains(&capability)
    }

    /// Environment variables its needs require.
    pub fn env_vars(self, provider: ModelProvider) -> Vec<&'static str> {
        let mut v: Vec<&'static str> = self.needs(provider).iter().flat_map(|c| c.env_vars().iter().copied()).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Secret keys its needs require.
    pub fn secret_keys(self, provider: ModelProvider) -> Vec<&'static str> {
        let mut v: Vec<&'static str> =
            self.needs(provider).iter().flat_map(|c| c.secret_keys().iter().copied()).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// IAM actions its needs require (`secretsmanager:GetSecretValue` when it reads a secret).
    pub fn iam_actions(self, provider: ModelProvider) -> Vec<&'static str> {
        let mut v: Vec<&'static str> =
            self.needs(provider).iter().flat_map(|c| c.iam_actions().iter().copied()).collect();
        if !self.secret_keys(provider).is_empty() {
            v.push("secretsmanager:GetSecretValue");
        }
        v.sort_unstable();
        v.dedup();
        v
    }
}

const fn stage_count() -> usize {
    let mut n = 0;
    let mut i = 0;
    while i < TABLE.len() {
        if !TABLE[i].ops.is_empty() {
            n += 1;
        }
        i += 1;
    }
    n
}

/// Built at compile time so it stays a plain `&[(&str, &str)]` constant for its users.
const fn local_substitutions() -> [(&'static str, &'static str); stage_count()] {
    let mut out = [("", ""); stage_count()];
    let (mut i, mut j) = (0, 0);
    while i < TABLE.len() {
        if !TABLE[i].ops.is_empty() {
            out[j] = (TABLE[i].substitution, TABLE[i].local_arn);
            j += 1;
        }
        i += 1;
    }
    out
}

/// `DefinitionSubstitutions` for the local engine: each state-machine function's ARN becomes
/// `local:<binary>`.
pub const LOCAL_SUBSTITUTIONS: &[(&str, &str)] = &local_substitutions();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_rows_follow_the_enum() {
        for (i, f) in Function::ALL.iter().enumerate() {
            assert_eq!(TABLE[i].function, *f);
            assert_eq!(*f as usize, i);
        }
    }

    #[test]
    fn every_op_belongs_to_exactly_one_function() {
        for op in Op::ALL {
            let owners: Vec<Function> = Function::ALL.into_iter().filter(|f| f.ops().contains(&op)).collect();
            assert_eq!(owners.len(), 1, "{op}: {owners:?}");
            assert_eq!(Function::for_op(op), Some(owners[0]));
            assert_eq!(Function::for_op(op.as_str()), Some(owners[0]));
        }
        let listed: usize = Function::ALL.iter().map(|f| f.ops().len()).sum();
        assert_eq!(listed, Op::ALL.len());
        assert_eq!(Function::for_op("no_such_op"), None);
    }

    #[test]
    fn names_round_trip_through_serde() {
        for op in Op::ALL {
            assert_eq!(serde_json::to_value(op).unwrap(), serde_json::json!(op.as_str()));
            assert_eq!(serde_json::from_value::<Op>(serde_json::json!(op.as_str())).unwrap(), op);
            assert_eq!(op.as_str().parse::<Op>(), Ok(op));
        }
        assert_eq!("Decide".parse::<Op>(), Err(UnknownOp("Decide".into())));
    }

    #[test]
    fn derived_names() {
        assert_eq!(Function::Cleric.logical_id(), "ClericFunction");
        assert_eq!(Function::Cleric.substitution(), "ClericFunctionArn");
        assert_eq!(Function::Cleric.binary(), "cleric");
        assert_eq!(Function::SlackCallback.binary(), "slack-callback");
        assert_eq!(Function::PagerDuty.local_arn(), "local:pagerduty");
        assert_eq!(LOCAL_SUBSTITUTIONS.len(), 7);
        assert!(LOCAL_SUBSTITUTIONS.contains(&("RemediateFunctionArn", "local:remediate")));
        assert!(Function::Intake.is_http() && Function::SlackCallback.is_http() && !Function::Verify.is_http());
    }

    #[test]
    fn needs_are_the_union_of_the_ops() {
        use Capability::*;
        let p = ModelProvider::Anthropic;
        assert_eq!(Function::Cleric.needs(p), &[Store, PagerDuty, NoteModel]);
        assert_eq!(Function::Planner.needs(p), &[Store, Anthropic]);
        assert_eq!(Function::Approval.needs(p), &[Store, StateMachine, PagerDuty, Slack, SlackApprovals]);
        assert_eq!(Function::PagerDuty.needs(p), &[Store, PagerDuty, Slack]);
        assert_eq!(Function::Remediate.needs(p), &[Store, PagerDuty, Coder]);
        assert!(Function::Intake.needs_capability(StartExecution, p));
        assert_eq!(
            Function::Approval.iam_actions(p),
            vec![
                "dynamodb:GetItem",
                "dynamodb:PutItem",
                "dynamodb:Query",
                "secretsmanager:GetSecretValue",
                "states:SendTaskFailure",
                "states:SendTaskSuccess",
            ]
        );
        // Reading a trimmed note in full takes the PagerDuty API token; the note fallback, the
        // Anthropic key.
        assert_eq!(
            Function::Cleric.secret_keys(p),
            vec!["anthropic_api_key", "pagerduty_api_token", "pagerduty_from_email"]
        );
        assert_eq!(Function::Planner.secret_keys(p), vec!["anthropic_api_key"]);
    }

    #[test]
    fn bedrock_replaces_the_anthropic_key_with_an_iam_grant() {
        use Capability::*;
        let p = ModelProvider::Bedrock;
        assert_eq!(Function::Planner.needs(p), &[Store, Bedrock]);
        assert_eq!(Function::Cleric.needs(p), &[Store, PagerDuty, BedrockNoteModel]);
        assert!(Function::Planner.secret_keys(p).is_empty(), "no secret at all");
        assert_eq!(Function::Cleric.secret_keys(p), vec!["pagerduty_api_token", "pagerduty_from_email"]);
        assert_eq!(
            Function::Planner.iam_actions(p),
            vec!["bedrock:InvokeModel", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query"]
        );
        assert!(Function::Cleric.iam_actions(p).contains(&"bedrock:InvokeModel"));
        assert_eq!(
            Function::Planner.env_vars(p),
            vec!["SELFHEAL_BEDROCK_MODEL_ID", "SELFHEAL_PLANNER_PROVIDER", "SELFHEAL_TABLE_NAME"]
        );
        // Only the two model-calling functions change with the provider.
        for f in Function::ALL.into_iter().filter(|f| !matches!(f, Function::Planner | Function::Cleric)) {
            assert_eq!(f.needs(ModelProvider::Anthropic), f.needs(p), "{f:?}");
            assert!(!f.iam_actions(p).contains(&"bedrock:InvokeModel"), "{f:?}");
        }
    }
}
