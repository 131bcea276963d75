//! Multi-agent patterns: an agent as another agent's tool (a child run), handoffs between agents,
//! a supervisor delegating to named workers, and a router picking one agent per request. Every
//! agent these patterns start on a run's behalf is a child run of it: its own id and events,
//! `parent_run_id` on its record, its usage in the parent's, its budget drawn from the parent's,
//! cancelled with the parent.

mod agent_tool;
mod child;
mod handoff;
mod router;
mod supervisor;

pub use agent_tool::AgentTool;
pub use child::ChildOutcome;
pub use handoff::{HandoffOutcome, HandoffTool, Handoffs};
pub use router::Router;
pub use supervisor::{Supervisor, SupervisorBuilder, SupervisorOutcome};

pub(crate) use child::run_child;
pub(crate) use router::child_answer;
