//! Architectures drive the turns of a run. [`ReAct`] is the default; others implement
//! [`Architecture`] with the same building blocks.
//!
//! Every side effect goes through [`RunCx`] (the runtime layer): [`RunCx::model_turn`] and
//! [`RunCx::run_tools`] apply hooks, budget, permissions, the journal, the audit log and events in
//! one place, so an architecture only decides what to do next. [`RunCx::model_call`] (a
//! [`ModelCall`]: its own messages, no tools, an output schema, an answer kept out of the
//! conversation) and [`RunCx::call_tools`] (tool calls the architecture makes itself) go through
//! the same pipeline. Because every model call is journaled by its turn and every tool call by
//! its id, a resumed run replays an architecture that decides only from the results it got.
//!
//! | name | value | what it does |
//! |---|---|---|
//! | `react` | [`ReAct`] | model turns and tool calls until an answer |
//! | `plan_execute` | [`PlanExecute`] | a plan with dependencies, steps executed with tools, re-plans on failure |
//! | `reflexion` | [`Reflexion`] | attempts, each evaluated; lessons carried into the next attempt |
//! | `self_refine` | [`SelfRefine`] | an answer, critiqued and revised until the critique passes |
//! | `rewoo` | [`ReWoo`] | every tool call planned up front with `#E1` placeholders, then one solving call |
//! | `tree_of_thoughts` | [`TreeOfThoughts`] | a breadth-limited search over scored lines of reasoning |

mod critique;
mod plan_execute;
mod react;
mod rewoo;
pub(crate) mod support;
mod tree_of_thoughts;

use std::sync::Arc;

pub use crate::runtime::{ModelCall, RunCx, ToolCallResult};
pub use critique::{Reflexion, SelfRefine};
pub use plan_execute::PlanExecute;
pub use react::ReAct;
pub use rewoo::ReWoo;
pub use tree_of_thoughts::TreeOfThoughts;

use crate::error::{Error, RunError};

/// A loop strategy: given the seeded conversation, drive model and tool calls until a final answer.
#[async_trait::async_trait]
pub trait Architecture: Send + Sync + 'static {
    /// The architecture's name.
    fn name(&self) -> &str;

    /// Drives the run and returns the final answer's text. Return the error from a [`RunCx`]
    /// method as it is: it carries how the run must end (cancelled, interrupted, failed).
    async fn run(&self, cx: &mut RunCx) -> Result<String, RunError>;
}

/// The architectures known by name, each with its default settings.
pub const ARCHITECTURE_NAMES: &[&str] =
    &["react", "plan_execute", "reflexion", "self_refine", "rewoo", "tree_of_thoughts"];

/// The architecture called `name` (case and surrounding space ignored), with its default settings.
///
/// # Errors
/// [`Error::Config`] naming the known architectures when `name` is none of them.
pub fn by_name(name: &str) -> Result<Arc<dyn Architecture>, Error> {
    match name.trim().to_ascii_lowercase().as_str() {
        "react" => Ok(Arc::new(ReAct)),
        "plan_execute" => Ok(Arc::new(PlanExecute::new())),
        "reflexion" => Ok(Arc::new(Reflexion::new())),
        "self_refine" => Ok(Arc::new(SelfRefine::new())),
        "rewoo" => Ok(Arc::new(ReWoo::new())),
        "tree_of_thoughts" => Ok(Arc::new(TreeOfThoughts::new())),
        other => {
            Err(Error::Config(format!("unknown architecture `{other}`; known: {}", ARCHITECTURE_NAMES.join(", "))))
        }
    }
}
