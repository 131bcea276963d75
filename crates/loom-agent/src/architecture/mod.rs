//! Architectures drive the turns of a run. [`ReAct`] is the default; others implement
//! [`Architecture`] with the same building blocks.
//!
//! Every side effect goes through [`RunCx`] (the runtime layer): [`RunCx::model_turn`] and
//! [`RunCx::run_tools`] apply hooks, budget, permissions, the journal, the audit log and events in
//! one place, so an architecture only decides what to do next.

mod react;

use std::sync::Arc;

pub use crate::runtime::RunCx;
pub use react::ReAct;

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

/// The architectures known by name.
pub const ARCHITECTURE_NAMES: &[&str] = &["react"];

pub(crate) fn by_name(name: &str) -> Result<Arc<dyn Architecture>, Error> {
    match name.trim().to_ascii_lowercase().as_str() {
        "react" => Ok(Arc::new(ReAct)),
        other => {
            Err(Error::Config(format!("unknown architecture `{other}`; known: {}", ARCHITECTURE_NAMES.join(", "))))
        }
    }
}
