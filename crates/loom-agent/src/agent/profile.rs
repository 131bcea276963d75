//! [`Runtime`]: a run profile (the seed's name for it), a named bundle of run policy with
//! documented effects, and [`RuntimeBuilder`] for custom ones.
//!
//! | profile | turns | criteria | context management | approvals |
//! |---|---|---|---|---|
//! | [`Runtime::sdk`] | 32 | in the prompt only, not judged | off | the agent's permissions |
//! | [`Runtime::long_running`] | 128 | judged after each final answer, up to 3 rounds | on | the agent's permissions |
//! | [`Runtime::supervised`] | 80 | judged when given, up to 3 rounds | on | every tool not flagged `read_only` asks the approval handler |

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A runtime profile: a named bundle of run policy.
///
/// Effects, each applied by the agent built with [`crate::AgentBuilder::runtime`]:
/// - `max_turns` and `timeout` apply when the agent (and the request) set none;
/// - `criteria` are added to the instructions (under "Acceptance criteria for every answer:") and,
///   when [`CriteriaGate::enabled`], judged after each final answer (see [`CriteriaGate`]);
///   a [`crate::RuntimeTask`]'s own criteria are judged by the same gate;
/// - `context` keeps what the model receives under its context window (see [`ContextPolicy`]);
/// - `approval` can require a person's approval for every tool that is not read-only
///   ([`ApprovalRule::EveryNonReadOnly`]).
///
/// ```
/// use loom_agent::Runtime;
/// use std::time::Duration;
///
/// let custom = Runtime::builder("nightly")
///     .max_turns(200)
///     .timeout(Duration::from_secs(3600))
///     .criteria(["the report lists every failing test"])
///     .criteria_rounds(5)
///     .best_effort()
///     .context_threshold(0.7)
///     .build();
/// assert!(custom.gate.enabled && custom.gate.best_effort && custom.context.enabled);
/// assert_eq!(Runtime::long_running(["tests pass"]).max_turns, 128);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Runtime {
    /// The profile's name.
    pub name: String,
    /// Criteria every answer should meet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub criteria: Vec<String>,
    /// The turn limit for runs under this profile.
    pub max_turns: u32,
    /// The time limit for runs under this profile, when the agent and the request set none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Whether and how the criteria are judged.
    #[serde(default)]
    pub gate: CriteriaGate,
    /// How the conversation is kept within the model's context window.
    #[serde(default)]
    pub context: ContextPolicy,
    /// Which tool calls need a person's approval beyond the agent's permissions.
    #[serde(default)]
    pub approval: ApprovalRule,
    // The attention policy slot (signals: which ones start or interrupt a run) is added by the
    // signals work as `Runtime::attention` / `RuntimeBuilder::attention`.
}

/// The criteria gate: after the model's final answer, an evaluator call (the agent's model, or the
/// one set with [`crate::AgentBuilder::judge`]) returns a verdict per criterion (pass or fail, and a
/// reason) as structured output. The failed ones go back to the model as a user message and the run
/// continues, up to `max_rounds` judgements, within the run's turn limit and budget. The run's
/// result lists the last verdicts ([`crate::RunResult::criteria`]); a run whose last round still
/// fails a criterion ends `interrupted` with reason `criteria: …` (the failed criteria), unless
/// `best_effort`, when it completes with the failures listed. Each round emits `criteria.checked`
/// and is journaled: a resumed run does not judge a finished round again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CriteriaGate {
    /// Whether criteria are judged (off: they are only in the prompt).
    pub enabled: bool,
    /// The most judgements per run (at least 1).
    pub max_rounds: u32,
    /// Complete the run when criteria still fail after the last round, instead of interrupting it.
    #[serde(default)]
    pub best_effort: bool,
}

impl Default for CriteriaGate {
    fn default() -> Self {
        CriteriaGate { enabled: false, max_rounds: 3, best_effort: false }
    }
}

impl CriteriaGate {
    /// A gate that judges, with `max_rounds` rounds.
    pub fn rounds(max_rounds: u32) -> Self {
        CriteriaGate { enabled: true, max_rounds: max_rounds.max(1), best_effort: false }
    }
}

/// Context management: before each model call, when the conversation would pass `threshold` of the
/// model's context window minus the output budget, old tool results are shortened first (to
/// `tool_result_keep_chars`); if that is not enough, the older turns are summarized by a model call
/// into one message that keeps decisions, facts and open tasks. A tool call is never separated
/// from its result; the last `keep_recent` messages are never summarized. The summary is stored in
/// the session store, so the session's next run starts from it rather than from the whole history
/// (which stays stored in full). Each compaction emits `context.compacted` with the token counts
/// before and after, and is journaled.
///
/// Tokens are counted with the model's own tokenizer when it has one (OpenAI models: the o200k /
/// cl100k BPE; the local model: its GGUF tokenizer), otherwise estimated (about 4 bytes a token)
/// and corrected from the input tokens the provider reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContextPolicy {
    /// Whether the conversation is managed (off: every message is sent as it is).
    pub enabled: bool,
    /// The share of (window − output budget) that triggers compaction (default 0.8).
    pub threshold: f32,
    /// The context window in tokens; `None`: the model's (from the price table), else 32,768.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<u32>,
    /// Tokens kept for the answer; `None`: the generation's `max_output_tokens`, else 4,096 (at most
    /// a quarter of the window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_reserve: Option<u32>,
    /// The most recent messages never summarized nor shortened.
    pub keep_recent: usize,
    /// Characters kept of an old tool result when it is shortened.
    pub tool_result_keep_chars: usize,
}

impl Default for ContextPolicy {
    fn default() -> Self {
        ContextPolicy {
            enabled: false,
            threshold: 0.8,
            window: None,
            output_reserve: None,
            keep_recent: 6,
            tool_result_keep_chars: 400,
        }
    }
}

impl ContextPolicy {
    /// Context management on, with the defaults.
    pub fn on() -> Self {
        ContextPolicy { enabled: true, ..Self::default() }
    }
}

/// Which tool calls need a person's approval beyond what the agent's permissions say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalRule {
    /// The agent's permissions decide alone.
    #[default]
    Permissions,
    /// Every call of a tool not flagged `read_only` that the permissions would allow asks the
    /// approval handler (without one, it is denied); denials stay denials.
    EveryNonReadOnly,
}

impl Runtime {
    /// For SDK-style request/response use: 32 turns; criteria only in the prompt (not judged);
    /// no context management.
    pub fn sdk() -> Self {
        Runtime {
            name: "sdk".into(),
            criteria: Vec::new(),
            max_turns: 32,
            timeout: None,
            gate: CriteriaGate::default(),
            context: ContextPolicy::default(),
            approval: ApprovalRule::Permissions,
        }
    }

    /// For long tasks held to criteria: 128 turns; the criteria judged after each final answer (up
    /// to 3 rounds, interrupted when they still fail); context management on, so a session goes on
    /// across context renewals, each run starting from the stored summary.
    pub fn long_running<I, S>(criteria: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Runtime {
            name: "long_running".into(),
            criteria: criteria.into_iter().map(Into::into).collect(),
            max_turns: 128,
            timeout: None,
            gate: CriteriaGate::rounds(3),
            context: ContextPolicy::on(),
            approval: ApprovalRule::Permissions,
        }
    }

    /// For supervised work: 80 turns; every call of a tool that is not read-only needs the approval
    /// handler's yes (through the agent's approval machinery: `permission.decision` events, audit
    /// entries, and deferred decisions on journaled runs); criteria (add them with
    /// [`Runtime::with_criteria`]) judged; context management on.
    pub fn supervised() -> Self {
        Runtime {
            name: "supervised".into(),
            criteria: Vec::new(),
            max_turns: 80,
            timeout: None,
            gate: CriteriaGate::rounds(3),
            context: ContextPolicy::on(),
            approval: ApprovalRule::EveryNonReadOnly,
        }
    }

    /// A custom profile, from the [`Runtime::sdk`] defaults.
    pub fn builder(name: impl Into<String>) -> RuntimeBuilder {
        RuntimeBuilder { runtime: Runtime { name: name.into(), ..Runtime::sdk() } }
    }

    /// Sets max_turns.
    pub fn with_max_turns(mut self, max_turns: u32) -> Self {
        self.max_turns = max_turns;
        self
    }

    /// Adds criteria.
    pub fn with_criteria<I, S>(mut self, criteria: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.criteria.extend(criteria.into_iter().map(Into::into));
        self
    }
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime::sdk()
    }
}

/// Builds a custom [`Runtime`]: turn and time limits, the criteria gate, the context policy, the
/// approval rule. Starts from [`Runtime::sdk`]'s settings.
#[derive(Clone, Debug)]
pub struct RuntimeBuilder {
    runtime: Runtime,
}

impl RuntimeBuilder {
    /// The turn limit.
    pub fn max_turns(mut self, max_turns: u32) -> Self {
        self.runtime.max_turns = max_turns;
        self
    }

    /// The time limit of one run.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.runtime.timeout = Some(timeout);
        self
    }

    /// Adds criteria and turns the gate on.
    pub fn criteria<I, S>(mut self, criteria: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.runtime.criteria.extend(criteria.into_iter().map(Into::into));
        self.runtime.gate.enabled = true;
        self
    }

    /// The criteria gate as a whole.
    pub fn gate(mut self, gate: CriteriaGate) -> Self {
        self.runtime.gate = gate;
        self
    }

    /// How many judgements a run may have (at least 1); turns the gate on.
    pub fn criteria_rounds(mut self, rounds: u32) -> Self {
        self.runtime.gate.max_rounds = rounds.max(1);
        self.runtime.gate.enabled = true;
        self
    }

    /// Complete runs whose criteria still fail after the last round (listing the failures).
    pub fn best_effort(mut self) -> Self {
        self.runtime.gate.best_effort = true;
        self
    }

    /// The context policy as a whole.
    pub fn context(mut self, policy: ContextPolicy) -> Self {
        self.runtime.context = policy;
        self
    }

    /// Context management on, compacting past `threshold` (0–1) of the usable window.
    pub fn context_threshold(mut self, threshold: f32) -> Self {
        self.runtime.context.enabled = true;
        self.runtime.context.threshold = threshold.clamp(0.05, 1.0);
        self
    }

    /// Context management on, with this context window (instead of the model's).
    pub fn context_window(mut self, tokens: u32) -> Self {
        self.runtime.context.enabled = true;
        self.runtime.context.window = Some(tokens);
        self
    }

    /// Which tool calls need approval.
    pub fn approval(mut self, rule: ApprovalRule) -> Self {
        self.runtime.approval = rule;
        self
    }

    /// The profile.
    pub fn build(self) -> Runtime {
        self.runtime
    }
}

/// The context settings of an agent with `policy`, on `model`: the window from the policy, else
/// the model's, else 32,768 tokens; the output reserve from the policy, else the generation's
/// `max_output_tokens`, else 4,096.
pub(crate) fn context_settings(
    policy: &ContextPolicy,
    model: &crate::model::SharedModel,
    generation: &crate::model::Generation,
) -> Option<crate::runtime::ContextSettings> {
    if !policy.enabled {
        return None;
    }
    let window = policy.window.or(model.capabilities().context_window).unwrap_or(DEFAULT_WINDOW);
    let reserve = policy.output_reserve.or(generation.max_output_tokens).unwrap_or(4_096);
    Some(crate::runtime::ContextSettings::new(
        window,
        reserve,
        policy.threshold,
        policy.keep_recent,
        policy.tool_result_keep_chars,
        model.token_counter(),
    ))
}

/// The context window assumed for a model that does not say (and is not in the price table).
pub const DEFAULT_WINDOW: u32 = 32_768;
