//! Handoffs, as in the OpenAI Agents SDK: an agent hands the conversation to another agent by
//! calling its `transfer_to_<name>` tool; the run ends there (completed, with a `handoff` event)
//! and the session continues with the new agent, which answers from the same history.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::{Value, json};

use crate::agent::{Agent, RunRequest};
use crate::error::{Error, ToolError};
use crate::event::EventKind;
use crate::run::{RunInput, RunResult};
use crate::runtime::{HANDOFF_ANSWER, HANDOFF_PREFIX};
use crate::tool::{Tool, ToolContext, ToolOutput};

/// The `transfer_to_<name>` tool: calling it hands the conversation to the agent `name`.
#[derive(Clone, Debug)]
pub struct HandoffTool {
    target: String,
    name: String,
    description: String,
}

impl HandoffTool {
    /// The tool that hands the conversation to `target` (an agent's name), described for the
    /// model by `description` (when to hand over).
    pub fn new(target: impl Into<String>, description: impl Into<String>) -> Self {
        let target = target.into();
        HandoffTool { name: format!("{HANDOFF_PREFIX}{target}"), target, description: description.into() }
    }

    /// The agent it hands over to.
    pub fn target(&self) -> &str {
        &self.target
    }
}

#[async_trait::async_trait]
impl Tool for HandoffTool {
    fn name(&self) -> &str {
        &self.name
    }

    fn description(&self) -> &str {
        &self.description
    }

    fn parameters(&self) -> Value {
        json!({"type": "object", "properties": {}})
    }

    async fn call(&self, _ctx: ToolContext, _args: Value) -> Result<ToolOutput, ToolError> {
        Ok(ToolOutput::text(format!("{HANDOFF_ANSWER}{}", self.target)))
    }
}

/// Agents that hand a session's conversation to each other. Each agent gets a
/// `transfer_to_<name>` tool for every other agent of the team (added to the live agent); a run
/// that calls one ends, and [`Handoffs::run`] continues the session with that agent, which
/// answers from the session's history. The next request of the session starts with the agent
/// that answered last.
///
/// The agents must share their session store (the same `session_store`, or the same journal),
/// so the new agent sees the conversation.
pub struct Handoffs {
    agents: Vec<Agent>,
    max_handoffs: u32,
    current: Mutex<HashMap<(Option<String>, String), usize>>,
}

/// What [`Handoffs::run`] returns: the last run's result, the agent that gave it, and every run
/// of the request in order (one per agent that held the conversation).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HandoffOutcome {
    /// The run that answered.
    pub result: RunResult,
    /// The agent that answered.
    pub agent: String,
    /// Every run of this request, the handing-over ones first.
    pub runs: Vec<RunResult>,
}

impl Handoffs {
    /// A team whose conversations start with `entry`.
    pub fn new(entry: Agent) -> Self {
        Handoffs { agents: vec![entry], max_handoffs: 8, current: Mutex::new(HashMap::new()) }
    }

    /// Adds an agent the others may hand over to (and that may hand back).
    pub fn agent(mut self, agent: Agent) -> Self {
        self.agents.push(agent);
        self
    }

    /// The most handoffs in one request (8 by default); one more ends the request with an error.
    pub fn max_handoffs(mut self, max: u32) -> Self {
        self.max_handoffs = max;
        self
    }

    /// Gives every agent its `transfer_to_<name>` tools.
    ///
    /// # Errors
    /// [`Error::Config`] when two agents share a name, or a tool name collides.
    pub fn build(self) -> Result<Self, Error> {
        for (i, a) in self.agents.iter().enumerate() {
            if self.agents[..i].iter().any(|b| b.name() == a.name()) {
                return Err(Error::Config(format!("two agents of the handoff team are named `{}`", a.name())));
            }
        }
        for a in &self.agents {
            let existing = a.tools();
            for b in self.agents.iter().filter(|b| b.name() != a.name()) {
                let tool = HandoffTool::new(
                    b.name(),
                    format!("Hand the conversation to the agent `{}`, which takes over from here.", b.name()),
                );
                if !existing.iter().any(|t| t.name == tool.name()) {
                    a.add_tool(tool)?;
                }
            }
        }
        Ok(self)
    }

    /// Runs a request in its session (a new one when it names none), starting with the agent
    /// that answered the session last, and following handoffs until an agent answers.
    ///
    /// # Errors
    /// The run's error when a run does not complete; [`Error::Config`] for a handoff to an
    /// unknown agent or past [`Handoffs::max_handoffs`].
    pub async fn run(&self, request: impl Into<RunRequest>) -> Result<HandoffOutcome, Error> {
        let mut request = request.into();
        let session = request.session_id.clone().unwrap_or_else(|| crate::new_id("sess"));
        request.session_id = Some(session.clone());
        let key = (request.user_id.clone(), session);
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner()).get(&key).copied().unwrap_or(0);
        let mut runs = Vec::new();
        for _ in 0..=self.max_handoffs {
            let agent = &self.agents[current];
            let result = agent.run(request.clone()).await?;
            let target = result.events.iter().rev().find_map(|e| match &e.kind {
                EventKind::Handoff(h) => Some(h.to.clone()),
                _ => None,
            });
            runs.push(result);
            let Some(target) = target else {
                self.current.lock().unwrap_or_else(|p| p.into_inner()).insert(key, current);
                let result = runs.last().cloned().ok_or_else(|| Error::Config("no run".into()))?;
                return Ok(HandoffOutcome { result, agent: agent.name().to_string(), runs });
            };
            current = self.agents.iter().position(|a| a.name() == target).ok_or_else(|| {
                Error::Config(format!(
                    "the agent `{}` handed over to `{target}`, which is not in the team",
                    agent.name()
                ))
            })?;
            request.input = Some(RunInput::Prompt(format!(
                "The agent `{}` handed this conversation to you. Answer the user's last request.",
                agent.name()
            )));
        }
        Err(Error::Config(format!("more than {} handoffs in one request", self.max_handoffs)))
    }

    /// The agents, the entry agent first.
    pub fn agents(&self) -> &[Agent] {
        &self.agents
    }
}

impl std::fmt::Debug for Handoffs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.agents.iter().map(Agent::name).collect();
        f.debug_struct("Handoffs").field("agents", &names).finish_non_exhaustive()
    }
}
