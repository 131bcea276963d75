//! Run events: one typed enum, serialized as `{type, run_id, session_id, seq, at, payload}`.
//!
//! Every run keeps an append-only log of its events, numbered from 0 by `seq`. The log is the truth
//! of a run: `Run::events` (in `loom-agent`) replays it from the start and then follows it live, and the
//! run's result and transcript are derived from it.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::de::Error as _;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::RunError;
use crate::governance::{DecidedBy, GuardAction, GuardStage, PermissionDecision};
use crate::message::{FinishReason, ToolCall, Usage};
use crate::run::{Artifact, CriterionVerdict, RunContext, RunInput};

/// One event of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// The run.
    pub run_id: Arc<str>,
    /// The run's session.
    pub session_id: Arc<str>,
    /// Position in the run's log, from 0, without gaps.
    pub seq: u64,
    /// When the event happened.
    pub at: DateTime<Utc>,
    /// What happened.
    pub kind: EventKind,
}

impl Event {
    /// The event's type name, such as `tool.result`.
    pub fn type_name(&self) -> &'static str {
        self.kind.type_name()
    }

    /// Whether this event ends its run.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self.kind,
            EventKind::RunCompleted(_)
                | EventKind::RunFailed(_)
                | EventKind::RunCancelled(_)
                | EventKind::RunInterrupted(_)
                | EventKind::RunSuspended(_)
        )
    }
}

macro_rules! event_kinds {
    ($( $(#[$meta:meta])* $variant:ident($payload:ty) = $name:literal, )*) => {
        /// What happened in a run. Each kind has a dotted type name and a payload.
        #[derive(Clone, Debug, PartialEq)]
        #[non_exhaustive]
        // The largest payloads are boxed (`run.started`: its input and context maps, 3× the other
        // payloads with serde_json's `preserve_order`, which llguidance turns on under the `local`
        // feature): every event is as large as the largest kind, and a run keeps all of them.
        #[allow(clippy::large_enum_variant)]
        pub enum EventKind {
            $( $(#[$meta])* $variant($payload), )*
        }

        impl EventKind {
            /// The dotted type name, such as `model.delta`.
            pub fn type_name(&self) -> &'static str {
                match self { $( EventKind::$variant(_) => $name, )* }
            }

            /// Every type name, in declaration order.
            pub const TYPE_NAMES: &'static [&'static str] = &[$($name),*];

            fn serialize_payload<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self { $( EventKind::$variant(p) => p.serialize(s), )* }
            }

            /// Rebuilds a kind from its type name and JSON payload.
            pub fn from_parts(type_name: &str, payload: serde_json::Value) -> Result<Self, serde_json::Error> {
                match type_name {
                    $( $name => Ok(EventKind::$variant(serde_json::from_value(payload)?)), )*
                    other => Err(serde_json::Error::custom(format!("unknown event type `{other}`"))),
                }
            }
        }
    };
}

event_kinds! {
    /// The run began executing (boxed: the largest payload).
    RunStarted(Box<RunStarted>) = "run.started",
    /// A model call is about to be sent.
    ModelRequest(ModelRequestEvent) = "model.request",
    /// A piece of streamed model output.
    ModelDelta(ModelDelta) = "model.delta",
    /// A model call finished.
    ModelResponse(ModelResponseEvent) = "model.response",
    /// A tool call is about to be dispatched.
    ToolCall(ToolCallEvent) = "tool.call",
    /// A tool call finished (successfully or not).
    ToolResult(ToolResultEvent) = "tool.result",
    /// A tool created an artifact.
    ArtifactCreated(ArtifactCreated) = "artifact.created",
    /// The final answer did not fit the output schema; the error went back to the model.
    OutputInvalid(OutputInvalid) = "output.invalid",
    /// A budget limit passed its soft-warning threshold (once per limit and run).
    BudgetWarning(BudgetEvent) = "budget.warning",
    /// A budget limit was reached; the run stops.
    BudgetExceeded(BudgetEvent) = "budget.exceeded",
    /// A permission decision on a tool call (by the policy, an approver or a hook).
    PermissionDecision(PermissionDecisionEvent) = "permission.decision",
    /// A guardrail redacted or blocked something.
    GuardrailTriggered(GuardrailEvent) = "guardrail.triggered",
    /// The rate limiter made the run wait before a model call.
    RateLimited(RateLimitedEvent) = "rate_limit.waited",
    /// The run completed with a final answer.
    RunCompleted(RunCompleted) = "run.completed",
    /// The run failed.
    RunFailed(RunEnded) = "run.failed",
    /// The run was cancelled.
    RunCancelled(RunEnded) = "run.cancelled",
    /// The run was stopped by a limit or policy (max turns, timeout, budget, guardrail).
    RunInterrupted(RunEnded) = "run.interrupted",
    /// The run paused durably, waiting for a decision on a tool call (`Agent::decide` continues it).
    RunSuspended(RunEnded) = "run.suspended",
    /// A resumed run continues on another model than it started on, as its resumer chose.
    ModelChanged(ModelChanged) = "model.changed",
    /// An architecture made a plan (`plan_execute`, `rewoo`): its steps, or a re-plan's.
    PlanCreated(PlanCreated) = "plan.created",
    /// A step of the plan started, completed or failed.
    PlanStep(PlanStepEvent) = "plan.step",
    /// An architecture critiqued an answer (`reflexion`, `self_refine`).
    Critique(CritiqueEvent) = "critique",
    /// A candidate thought was scored (`tree_of_thoughts`).
    ThoughtScored(ThoughtScored) = "thought.scored",
    /// The judge checked the answer against the acceptance criteria (one event per round).
    CriteriaChecked(CriteriaChecked) = "criteria.checked",
    /// The conversation was made to fit the model's context window before a model call.
    ContextCompacted(ContextCompacted) = "context.compacted",
    /// A user message was added to the running run (`Run::steer`); the model sees it at its next turn.
    RunSteered(RunSteered) = "run.steered",
    /// Memory recalled items for this run (they are in the seeded conversation as one system message).
    MemoryRecalled(MemoryRecalled) = "memory.recalled",
    /// The run's context put knowledge before the model (numbered for citation).
    KnowledgeInjected(KnowledgeInjected) = "knowledge.injected",
    /// The run was started by a signal (attention `run` or `interrupt`): the signal is its input.
    SignalReceived(SignalEvent) = "signal.received",
    /// An observed signal was handed to this run: it is in the seeded conversation as context.
    SignalHandled(SignalEvent) = "signal.handled",
    /// A child run started (an agent used as a tool, a supervisor's worker, a workflow's agent node).
    ChildStarted(ChildStarted) = "child.started",
    /// A child run ended.
    ChildFinished(ChildFinished) = "child.finished",
    /// The conversation was handed to another agent (a `transfer_to_<name>` tool).
    Handoff(HandoffEvent) = "handoff",
    /// A workflow node started, completed or was replayed from the journal.
    WorkflowNode(WorkflowNodeEvent) = "workflow.node",
}

/// Payload of `signal.received` and `signal.handled`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignalEvent {
    /// The signal's id.
    pub signal_id: String,
    /// Where it came from.
    pub source: String,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: String,
    /// How urgent it is.
    pub urgency: crate::signal::Urgency,
    /// What the attention policy decided.
    pub attention: crate::signal::Attention,
    /// Its text.
    pub text: String,
}

impl SignalEvent {
    /// The payload for `signal` under `attention`.
    pub fn of(signal: &crate::signal::RuntimeSignal, attention: crate::signal::Attention) -> Self {
        SignalEvent {
            signal_id: signal.id.clone(),
            source: signal.source.clone(),
            kind: signal.kind.clone(),
            urgency: signal.urgency,
            attention,
            text: signal.text.clone(),
        }
    }
}

/// Payload of `child.started`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChildStarted {
    /// The child run.
    pub child_run_id: String,
    /// The agent (or workflow) that runs it.
    pub agent: String,
    /// The tool call that started it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
}

/// Payload of `child.finished`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChildFinished {
    /// The child run.
    pub child_run_id: String,
    /// The agent (or workflow) that ran it.
    pub agent: String,
    /// How it ended.
    pub state: crate::run::RunState,
    /// What it spent (already part of the parent's usage).
    pub usage: Usage,
    /// Its model calls.
    pub turns: u32,
}

/// Payload of `handoff`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HandoffEvent {
    /// The agent handing over.
    pub from: String,
    /// The agent taking over.
    pub to: String,
}

/// Payload of `workflow.node`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkflowNodeEvent {
    /// The node.
    pub node: String,
    /// `started`, `completed`, `failed` or `replayed` (completed before a resume: not run again).
    pub status: String,
    /// How many times this node has run in this workflow, from 1 (loops run a node again).
    pub visit: u32,
}

/// Payload of `plan.created`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanCreated {
    /// 1 for the first plan, then one more per re-plan.
    pub revision: u32,
    /// The steps, in the order given.
    pub steps: Vec<PlanStepInfo>,
}

/// One step of a plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanStepInfo {
    /// The step's id (`1`, `E1`, …).
    pub id: String,
    /// What the step does.
    pub description: String,
    /// Steps that must complete first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// The tool it calls, when the plan names one (`rewoo`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// The tool's arguments, with placeholders for earlier results (`rewoo`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<serde_json::Value>,
}

/// Payload of `plan.step`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanStepEvent {
    /// The plan's revision.
    pub revision: u32,
    /// The step's id.
    pub id: String,
    /// `started`, `completed` or `failed`.
    pub status: PlanStepStatus,
    /// The step's result (or why it failed), once it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

/// Where a plan step is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanStepStatus {
    /// It began.
    Started,
    /// It ended with a result.
    Completed,
    /// It ended without one.
    Failed,
}

/// Payload of `critique`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CritiqueEvent {
    /// The round, from 1.
    pub round: u32,
    /// Whether the answer passed.
    pub passed: bool,
    /// The critic's score, when it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// What to improve (or why it passed).
    pub feedback: String,
}

/// Payload of `thought.scored`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThoughtScored {
    /// The thought's depth in the tree, from 1.
    pub depth: u32,
    /// The thought's id (its path: `1`, `1.2`, …).
    pub id: String,
    /// The thought it extends, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The thought.
    pub thought: String,
    /// Its score.
    pub score: f64,
    /// Whether it stays in the search (among the best `breadth` of its depth).
    pub kept: bool,
}

/// Payload of `criteria.checked`: one round of the criteria gate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CriteriaChecked {
    /// The round, from 1.
    pub round: u32,
    /// One verdict per criterion, in the order the criteria were given.
    pub verdicts: Vec<CriterionVerdict>,
    /// Whether every criterion passed.
    pub passed: bool,
    /// Tokens and cost of the judge's call.
    #[serde(default)]
    pub usage: Usage,
}

/// Payload of `context.compacted`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextCompacted {
    /// The model call the compaction came before.
    pub turn: u32,
    /// The conversation's size before, in tokens (counted or estimated).
    pub tokens_before: u64,
    /// Its size after.
    pub tokens_after: u64,
    /// The threshold it had passed (a share of the window minus the output budget).
    pub threshold: u64,
    /// Tool results shortened.
    pub shortened: u32,
    /// Messages replaced by the summary (0 when shortening was enough).
    pub summarized: u32,
}

/// Payload of `run.steered`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSteered {
    /// The model call that first sees the message.
    pub turn: u32,
    /// The message.
    pub text: String,
}

/// Payload of `memory.recalled`: what memory put before the model for this run, and why.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryRecalled {
    /// The recalled items, best first (working blocks first of all).
    pub items: Vec<RecalledItem>,
}

/// One item memory recalled for a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecalledItem {
    /// The item's id in its memory store (for a working block: `block:NAME`).
    pub id: String,
    /// What it is: `fact`, `episode` or `block`.
    pub kind: String,
    /// The text the model saw.
    pub text: String,
    /// Its fused score (reciprocal rank fusion with recency and importance; 0 for blocks).
    pub score: f32,
}

/// Payload of `knowledge.injected`: the knowledge the run's context put before the model, by the
/// markers the model cites it with.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KnowledgeInjected {
    /// The items, in marker order.
    pub items: Vec<InjectedKnowledge>,
}

/// One knowledge item put before the model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InjectedKnowledge {
    /// Its marker: `1` for `[1]`.
    pub marker: u32,
    /// Where it comes from.
    pub source: String,
    /// Its title (for a knowledge passage: the citation, such as `guide.md:12-30`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// A link to the original.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Its relevance score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
}

impl KnowledgeInjected {
    /// The event for a run context's knowledge (`None` when it has none).
    pub fn of(context: &RunContext) -> Option<Self> {
        if context.knowledge.is_empty() {
            return None;
        }
        let items = context
            .knowledge
            .iter()
            .enumerate()
            .map(|(i, k)| InjectedKnowledge {
                marker: u32::try_from(i + 1).unwrap_or(u32::MAX),
                source: k.source.clone(),
                title: k.title.clone(),
                uri: k.uri.clone(),
                score: k.score,
            })
            .collect();
        Some(KnowledgeInjected { items })
    }
}

/// Payload of `model.changed`: a resume was told to continue the run on another model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelChanged {
    /// The model the run started on (model string or provider:name, and base URL).
    pub from: String,
    /// The model it continues on.
    pub to: String,
}

/// Payload of `run.started`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunStarted {
    /// The run's input.
    pub input: RunInput,
    /// The user the run acts for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The model's name.
    pub model: String,
    /// The run's context (inputs, knowledge, extensions).
    #[serde(default, skip_serializing_if = "is_empty_context")]
    pub context: RunContext,
}

fn is_empty_context(c: &RunContext) -> bool {
    c.inputs.is_empty() && c.knowledge.is_empty() && c.extensions.is_empty()
}

/// Payload of `model.request`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelRequestEvent {
    /// The turn, from 1.
    pub turn: u32,
    /// The model's name.
    pub model: String,
    /// How many messages are sent.
    pub messages: usize,
    /// How many tools are offered.
    pub tools: usize,
}

/// Payload of `model.delta`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelDelta {
    /// The turn, from 1.
    pub turn: u32,
    /// `text` or `thinking`.
    pub kind: DeltaKind,
    /// The new text.
    pub text: String,
}

/// What a delta carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeltaKind {
    /// Visible answer text.
    Text,
    /// Reasoning text.
    Thinking,
}

/// Payload of `model.response`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelResponseEvent {
    /// The turn, from 1.
    pub turn: u32,
    /// The visible text.
    pub text: String,
    /// Tool calls requested.
    #[serde(default)]
    pub tool_calls: Vec<ToolCall>,
    /// Tokens and cost of this call.
    pub usage: Usage,
    /// Why the model stopped.
    pub finish_reason: FinishReason,
}

/// Payload of `tool.call`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolCallEvent {
    /// The turn, from 1.
    pub turn: u32,
    /// The call as the model made it.
    pub call: ToolCall,
}

/// Payload of `tool.result`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolResultEvent {
    /// The turn, from 1.
    pub turn: u32,
    /// The call's id.
    pub call_id: String,
    /// The tool's name.
    pub name: String,
    /// What the model receives.
    pub output: String,
    /// Whether the call failed.
    pub is_error: bool,
    /// For failures: `not_found`, `invalid_arguments`, `failed`, `timeout`, `panicked`, `denied`, `cancelled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<crate::error::ToolErrorKind>,
    /// Whether the output was cut to the configured limit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// How long the call took.
    pub duration_ms: u64,
}

/// Payload of `artifact.created`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArtifactCreated {
    /// The artifact.
    pub artifact: Artifact,
}

/// Payload of `output.invalid`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutputInvalid {
    /// Which attempt failed, from 1.
    pub attempt: u32,
    /// Why it did not validate.
    pub error: String,
}

/// Payload of `budget.warning` and `budget.exceeded`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BudgetEvent {
    /// The limit, such as `max_tokens` or `per_user_max_cost_usd`.
    pub limit: String,
    /// How much was used, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used: Option<f64>,
    /// The limit's value, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

/// Payload of `permission.decision`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PermissionDecisionEvent {
    /// The turn.
    pub turn: u32,
    /// The call.
    pub call_id: String,
    /// The tool.
    pub tool: String,
    /// `allow`, `deny`, `edit` or `defer`.
    pub decision: PermissionDecision,
    /// `policy`, `approver`, `remembered` or `hook`.
    pub by: DecidedBy,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Payload of `guardrail.triggered`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GuardrailEvent {
    /// `input`, `output` or `tool_result`.
    pub stage: GuardStage,
    /// The guardrail's name.
    pub guardrail: String,
    /// `redact` or `block`.
    pub action: GuardAction,
    /// Why (for blocks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Payload of `rate_limit.waited`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RateLimitedEvent {
    /// How long the run waited.
    pub waited_ms: u64,
}

/// Payload of `run.completed`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunCompleted {
    /// The final answer.
    pub output: String,
    /// The parsed structured output, when a schema was set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parsed: Option<serde_json::Value>,
    /// Model calls made.
    pub turns: u32,
    /// Total usage.
    pub usage: Usage,
}

/// Payload of `run.failed`, `run.cancelled` and `run.interrupted`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunEnded {
    /// What happened.
    pub error: RunError,
    /// Model calls made.
    pub turns: u32,
    /// Total usage.
    pub usage: Usage,
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Payload<'a>(&'a EventKind);
        impl Serialize for Payload<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.0.serialize_payload(s)
            }
        }
        let mut map = serializer.serialize_map(Some(6))?;
        map.serialize_entry("type", self.kind.type_name())?;
        map.serialize_entry("run_id", &*self.run_id)?;
        map.serialize_entry("session_id", &*self.session_id)?;
        map.serialize_entry("seq", &self.seq)?;
        map.serialize_entry("at", &self.at)?;
        map.serialize_entry("payload", &Payload(&self.kind))?;
        map.end()
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            #[serde(rename = "type")]
            ty: String,
            run_id: Arc<str>,
            session_id: Arc<str>,
            seq: u64,
            at: DateTime<Utc>,
            payload: serde_json::Value,
        }
        let raw = Raw::deserialize(deserializer)?;
        let kind = EventKind::from_parts(&raw.ty, raw.payload).map_err(D::Error::custom)?;
        Ok(Event { run_id: raw.run_id, session_id: raw.session_id, seq: raw.seq, at: raw.at, kind })
    }
}
