//! [`Router`]: one classification call (structured output) picks the agent that answers a
//! request; the chosen agent runs as a child of the router's run.

use std::sync::Arc;

use serde_json::json;

use super::child::run_child;
use crate::agent::{Agent, AgentBuilder, RunRequest};
use crate::architecture::Architecture;
use crate::error::{Error, RunError, RunErrorKind};
use crate::message::Message;
use crate::output::OutputSchema;
use crate::run::{RunInput, RunState};
use crate::runtime::{ModelCall, RunCx};

/// Picks one of several agents per request with one classification call, then runs it as a
/// child run and answers with its answer. The router is an architecture: its runs are runs like
/// any other (events, budget, journal, audit), listed with their child.
///
/// The classification call sees the router's session history (each routed answer joins it); the
/// chosen agent does not: it answers the request alone, in a fresh session (as every child run),
/// so a route that needs the conversation so far should be reached through
/// [`crate::team::Handoffs`] instead.
///
/// ```
/// use loom_agent::prelude::*;
/// use loom_agent::team::Router;
///
/// let billing = Agent::builder().name("billing").model("echo").build()?;
/// let support = Agent::builder().name("support").model("echo").build()?;
/// let router = Router::new()
///     .route("billing", "Invoices, payments, refunds.", billing)
///     .route("support", "Everything else.", support)
///     .build(Agent::builder().name("front_desk").model("echo"))?;
/// assert_eq!(router.name(), "front_desk");
/// # Ok::<(), loom_agent::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct Router {
    routes: Vec<Route>,
}

#[derive(Clone, Debug)]
struct Route {
    name: String,
    description: String,
    agent: Agent,
}

impl Router {
    /// A router without routes.
    pub fn new() -> Self {
        Router::default()
    }

    /// Adds a route: the classifier picks `name` for requests `description` fits.
    pub fn route(mut self, name: impl Into<String>, description: impl Into<String>, agent: Agent) -> Self {
        self.routes.push(Route { name: name.into(), description: description.into(), agent });
        self
    }

    /// Builds the router's agent from `builder` (its model classifies; its journal, budget and
    /// audit apply to the router's runs).
    ///
    /// # Errors
    /// [`Error::Config`] without routes or with two of the same name, or as
    /// [`AgentBuilder::build`].
    pub fn build(self, builder: AgentBuilder) -> Result<Agent, Error> {
        if self.routes.is_empty() {
            return Err(Error::Config("a router needs at least one route".into()));
        }
        for (i, r) in self.routes.iter().enumerate() {
            if self.routes[..i].iter().any(|o| o.name == r.name) {
                return Err(Error::Config(format!("two routes are named `{}`", r.name)));
            }
        }
        let names: Vec<&str> = self.routes.iter().map(|r| r.name.as_str()).collect();
        let schema = OutputSchema::new(
            "route",
            json!({
                "type": "object",
                "properties": {
                    "agent": {"type": "string", "enum": names},
                    "reason": {"type": "string"},
                },
                "required": ["agent"],
            }),
        )?;
        builder.architecture(RouterArchitecture { routes: Arc::from(self.routes), schema }).build()
    }
}

struct RouterArchitecture {
    routes: Arc<[Route]>,
    schema: OutputSchema,
}

#[async_trait::async_trait]
impl Architecture for RouterArchitecture {
    fn name(&self) -> &str {
        "router"
    }

    async fn run(&self, cx: &mut RunCx) -> Result<String, RunError> {
        let mut prompt = String::from(
            "Pick the agent best suited to answer the request above. Answer with JSON: the agent's name in \
             `agent`, and why in `reason`.\nAgents:",
        );
        for r in self.routes.iter() {
            prompt.push_str(&format!("\n- {}: {}", r.name, r.description));
        }
        cx.check_max_turns()?;
        let call = ModelCall::new()
            .message(Message::user(prompt))
            .without_tools()
            .output_schema(self.schema.clone())
            .discard_answer();
        let response = cx.model_call(call).await?;
        let choice = self.schema.parse(&response.text).map_err(|e| {
            RunError::new(RunErrorKind::Model, format!("router: the model's choice is not usable: {e}"))
        })?;
        let name = choice.get("agent").and_then(|v| v.as_str()).unwrap_or_default();
        let Some(route) = self.routes.iter().find(|r| r.name == name) else {
            return Err(RunError::new(RunErrorKind::Model, format!("router: the model chose no known agent ({name})")));
        };
        let input = cx.input_message().map(Message::text).unwrap_or_default();
        let request = Box::new(RunRequest::new(RunInput::Prompt(input)));
        let link = cx.link().clone();
        let outcome =
            run_child(&route.agent, Some(&link), cx.cancellation(), Some("route"), &route.name, request).await;
        let answer = child_answer(&route.name, outcome)?;
        // The answer joins the router's conversation, so the session's history keeps the exchange
        // (a run adds to the history only once it has an answer in it).
        cx.messages.push(Message::assistant(answer.clone()));
        Ok(answer)
    }
}

/// A child's answer, or the parent's error mirroring how the child ended (a child stopped by the
/// budget or cancelled stops the parent the same way).
pub(crate) fn child_answer(name: &str, outcome: super::ChildOutcome) -> Result<String, RunError> {
    if outcome.state == RunState::Completed {
        return Ok(outcome.output);
    }
    let message = outcome.summary(name);
    let mut error = match outcome.error {
        Some(mut e) => {
            e.message = message;
            e
        }
        None => RunError::new(RunErrorKind::Internal, message),
    };
    if outcome.state == RunState::Cancelled {
        error.kind = RunErrorKind::Cancelled;
    }
    Err(error)
}
