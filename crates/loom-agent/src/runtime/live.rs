//! What changes while an agent lives: its tools and its hooks (`Agent::add_tool`, `remove_tool`,
//! `add_hook`).
//!
//! The agent keeps one [`Live`] value behind an `ArcSwap`. A change builds a new value from the
//! current one (copy-on-write) and swaps it in with a compare-and-swap, retried when another
//! change won the race, so concurrent changes are never lost. A run takes the current value once,
//! when it starts (one atomic load, no lock), and keeps it to the end: runs in flight keep the
//! tools and hooks they started with, runs that start afterwards see the change.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::env::HookSet;
use crate::error::Error;
use crate::governance::Hooks;
use crate::tool::{DynamicTools, Tool, ToolRegistry};

/// An agent's tools and hooks as one run sees them.
pub(crate) struct Live {
    /// The tools offered to the model (the fixed ones, when there are tool sources).
    pub(crate) tools: Arc<ToolRegistry>,
    /// The capabilities' tool sources (MCP servers) with the fixed tools, when there are any:
    /// each run refreshes its tools from them before a model turn.
    pub(crate) dynamic_tools: Option<Arc<DynamicTools>>,
    /// The hooks, in the order added.
    pub(crate) hooks: HookSet,
}

impl Live {
    /// This set with `tool` added. A name already taken is [`Error::Config`].
    fn with_tool(&self, tool: &Arc<dyn Tool>) -> Result<Live, Error> {
        let mut tools = self.tools.tools();
        tools.push(tool.clone());
        self.with_fixed(tools)
    }

    /// This set without the fixed tool `name`; `None` when there is no such tool.
    fn without_tool(&self, name: &str) -> Result<Option<Live>, Error> {
        let mut tools = self.tools.tools();
        let before = tools.len();
        tools.retain(|t| t.name() != name);
        if tools.len() == before {
            return Ok(None);
        }
        self.with_fixed(tools).map(Some)
    }

    fn with_fixed(&self, tools: Vec<Arc<dyn Tool>>) -> Result<Live, Error> {
        let dynamic_tools = match &self.dynamic_tools {
            None => None,
            Some(dynamic) => Some(Arc::new(dynamic.with_fixed(tools.clone())?)),
        };
        Ok(Live { tools: Arc::new(ToolRegistry::new(tools)?), dynamic_tools, hooks: self.hooks.clone() })
    }

    fn with_hook(&self, hook: &Arc<dyn Hooks>) -> Live {
        let mut hooks: Vec<Arc<dyn Hooks>> = self.hooks.hooks.to_vec();
        hooks.push(hook.clone());
        Live {
            tools: self.tools.clone(),
            dynamic_tools: self.dynamic_tools.clone(),
            hooks: HookSet { hooks: Arc::from(hooks), ..self.hooks.clone() },
        }
    }
}

/// Replaces the live value with `change(current)`, retrying when another change swapped it in
/// between. `Ok(None)` from `change` leaves it as it is. Returns whether it changed.
fn update(live: &ArcSwap<Live>, change: impl Fn(&Live) -> Result<Option<Live>, Error>) -> Result<bool, Error> {
    let mut current = live.load_full();
    loop {
        let Some(next) = change(&current)? else { return Ok(false) };
        let previous = live.compare_and_swap(&current, Arc::new(next));
        if Arc::ptr_eq(&previous, &current) {
            return Ok(true);
        }
        current = arc_swap::Guard::into_inner(previous);
    }
}

/// Adds a tool for runs that start from now on.
pub(crate) fn add_tool(live: &ArcSwap<Live>, tool: Arc<dyn Tool>) -> Result<(), Error> {
    update(live, |l| l.with_tool(&tool).map(Some)).map(|_| ())
}

/// Removes a fixed tool for runs that start from now on; `false` when there is none of that name.
pub(crate) fn remove_tool(live: &ArcSwap<Live>, name: &str) -> Result<bool, Error> {
    update(live, |l| l.without_tool(name))
}

/// Adds hooks (after the others) for runs that start from now on.
pub(crate) fn add_hook(live: &ArcSwap<Live>, hook: Arc<dyn Hooks>) {
    // `with_hook` cannot fail.
    let _ = update(live, |l| Ok(Some(l.with_hook(&hook))));
}
