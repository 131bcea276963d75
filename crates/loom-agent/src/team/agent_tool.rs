//! [`AgentTool`]: an agent offered to another agent's model as a tool (`Agent::as_tool`). Each
//! call runs the agent as a child run of the calling run.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde_json::{Value, json};

use super::child::{link_of, run_child};
use crate::agent::{Agent, RunRequest};
use crate::error::ToolError;
use crate::tool::{Tool, ToolContext, ToolFlags, ToolOutput};

/// An agent as a tool: the model calls it with `{"input": "..."}` and reads its final answer.
///
/// Each call is a child run of the calling run: its own run id (`{parent}.{call id}`) and events,
/// `parent_run_id` on its record, its usage rolled up into the parent's, its budget drawn from the
/// parent's (a limit of the parent's reached inside the child stops both), cancelled with the
/// parent, acting for the parent's user; the parent's log shows `child.started` and
/// `child.finished`. A child that did not complete is a tool error saying how it ended.
///
/// ```
/// use loom_agent::prelude::*;
///
/// let researcher = Agent::builder().name("researcher").model("echo").build()?;
/// let tool = researcher.as_tool("research", "Researches a question and answers it.");
/// assert_eq!(tool.name(), "research");
/// let lead = Agent::builder().model("echo").tool(tool).build()?;
/// assert_eq!(lead.tools()[0].name, "research");
/// # Ok::<(), loom_agent::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct AgentTool {
    agent: Agent,
    name: String,
    description: String,
    timeout: Duration,
}

impl AgentTool {
    /// The agent behind the tool.
    pub fn agent(&self) -> &Agent {
        &self.agent
    }

    /// How long one call (the whole child run) may take; one hour by default.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl Agent {
    /// This agent as a tool another agent's model can call: each call runs this agent as a child
    /// run (see [`AgentTool`]).
    pub fn as_tool(&self, name: impl Into<String>, description: impl Into<String>) -> AgentTool {
        AgentTool {
            agent: self.clone(),
            name: name.into(),
            description: description.into(),
            timeout: Duration::from_secs(3600),
        }
    }
}

#[async_trait::async_trait]
impl Tool for AgentTool {
    fn name(&self) -> &str {
        &self.name
    }

    fn description(&self) -> &str {
        &self.description
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {"input": {"type": "string", "description": "The task or question for the agent."}},
            "required": ["input"],
        })
    }

    /// Calls of one turn run in parallel; a resumed parent runs an unfinished call again, which
    /// finds its child in the journal (resuming it, or taking its answer).
    fn flags(&self) -> ToolFlags {
        ToolFlags { concurrency_safe: true, rerun_on_resume: true, ..ToolFlags::default() }
    }

    fn timeout(&self) -> Option<Duration> {
        Some(self.timeout)
    }

    /// Written without `async fn`: an `async fn`'s parameters are fields of its future for its
    /// whole life, and this future lives as long as the child run. The context and arguments are
    /// read here, and the future keeps only what the child run needs.
    fn call<'life0, 'async_trait>(
        &'life0 self,
        ctx: ToolContext,
        args: Value,
    ) -> Pin<Box<dyn Future<Output = Result<ToolOutput, ToolError>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        let mut args = args;
        let input = match args.get_mut("input").map(Value::take) {
            Some(Value::String(input)) => input,
            _ => {
                return Box::pin(std::future::ready(Err(ToolError::invalid_arguments(
                    "`input` (a string) is required",
                ))));
            }
        };
        drop(args);
        let link = link_of(&ctx);
        let cancel = ctx.cancellation().clone();
        let key = ctx.call_id().to_string();
        drop(ctx);
        let request = Box::new(RunRequest::new(input));
        Box::pin(async move {
            let outcome = run_child(&self.agent, link.as_ref(), cancel, Some(&key), &self.name, request).await;
            if outcome.is_completed() {
                Ok(ToolOutput::text(outcome.output))
            } else {
                Err(ToolError::new(outcome.summary(&self.name)))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::agent::Agent;
    use crate::tool::{Tool, ToolContext};

    /// The call's future lives as long as the child run, once per in-flight child: it keeps
    /// neither the tool context nor the arguments, nor room for a plain run's result, only what
    /// the child needs.
    #[test]
    fn call_future_stays_small() {
        let agent = Agent::builder().model("echo").build().expect("agent");
        let tool = agent.as_tool("child", "Does one task.");
        let future = tool.call(ToolContext::detached("run_1", "sess_1"), json!({"input": "task"}));
        let size = std::mem::size_of_val(&*future);
        println!("agent tool call future: {size} B");
        assert!(size <= CALL_FUTURE_MAX, "the agent tool's call future grew to {size} B");
    }

    /// 328 B (dev and release) on 2026-12-06, evening; it was 856 B while `run_child`'s future kept
    /// room for an unlinked run's `RunResult`.
    const CALL_FUTURE_MAX: usize = 512;
}
