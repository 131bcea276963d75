//! Tools that change while the agent lives: the agent's fixed tools plus its capabilities'
//! [`ToolSource`]s (MCP servers), rebuilt into a new registry when a source's generation moves.
//!
//! Agents without a source never build one of these: their runs use the registry made at build
//! time and pay nothing per turn.

use std::sync::{Arc, Mutex};

use loom_core::capability::ToolSource;

use super::{Tool, ToolRegistry};
use crate::error::Error;

/// A registry together with the source generations it was built from.
pub(crate) struct ToolSnapshot {
    /// The generation of each source (in source order) when its tools were loaded.
    pub(crate) generations: Vec<u64>,
    /// The tools.
    pub(crate) registry: Arc<ToolRegistry>,
    /// The tools the sources gave (without the fixed ones).
    loaded: Vec<Arc<dyn Tool>>,
}

impl ToolSnapshot {
    fn is_current(&self, sources: &[(String, Arc<dyn ToolSource>)]) -> bool {
        self.generations.len() == sources.len()
            && sources.iter().zip(&self.generations).all(|((_, s), g)| s.generation() == *g)
    }
}

/// The agent's fixed tools and its tool sources, with the last registry built from them.
pub(crate) struct DynamicTools {
    fixed: Vec<Arc<dyn Tool>>,
    sources: Vec<(String, Arc<dyn ToolSource>)>,
    latest: Mutex<Option<Arc<ToolSnapshot>>>,
    /// Serializes loads, so concurrent runs that see a change load it once.
    loading: tokio::sync::Mutex<()>,
}

impl DynamicTools {
    /// `fixed` are the tools that never change; `sources` are (capability name, source).
    pub(crate) fn new(fixed: Vec<Arc<dyn Tool>>, sources: Vec<(String, Arc<dyn ToolSource>)>) -> Self {
        DynamicTools { fixed, sources, latest: Mutex::new(None), loading: tokio::sync::Mutex::new(()) }
    }

    /// Whether `held` (the snapshot a run uses) is still current: one atomic load per source.
    pub(crate) fn is_current(&self, held: Option<&ToolSnapshot>) -> bool {
        held.is_some_and(|s| s.is_current(&self.sources))
    }

    /// The same sources with other fixed tools (a live agent's `add_tool` / `remove_tool`). The
    /// sources' tools loaded so far are kept, so the change does not reload them.
    pub(crate) fn with_fixed(&self, fixed: Vec<Arc<dyn Tool>>) -> Result<DynamicTools, Error> {
        let latest = match self.latest() {
            None => None,
            Some(s) => {
                let mut tools = fixed.clone();
                tools.extend(s.loaded.iter().cloned());
                Some(Arc::new(ToolSnapshot {
                    generations: s.generations.clone(),
                    registry: Arc::new(ToolRegistry::new(tools)?),
                    loaded: s.loaded.clone(),
                }))
            }
        };
        Ok(DynamicTools {
            fixed,
            sources: self.sources.clone(),
            latest: Mutex::new(latest),
            loading: tokio::sync::Mutex::new(()),
        })
    }

    fn latest(&self) -> Option<Arc<ToolSnapshot>> {
        self.latest.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The current snapshot: the cached one when no generation moved, else loaded anew. A load
    /// that fails with no earlier snapshot is an error (the run cannot know its tools); with one,
    /// the earlier tools stay and the failure is logged.
    pub(crate) async fn current(&self) -> Result<Arc<ToolSnapshot>, Error> {
        if let Some(s) = self.latest().filter(|s| s.is_current(&self.sources)) {
            return Ok(s);
        }
        let _guard = self.loading.lock().await;
        let previous = self.latest();
        if let Some(s) = previous.as_ref().filter(|s| s.is_current(&self.sources)) {
            return Ok(s.clone());
        }
        // Generations are read before loading: a change during the load is seen next turn.
        let generations: Vec<u64> = self.sources.iter().map(|(_, s)| s.generation()).collect();
        let mut loaded = Vec::new();
        let mut failure = None;
        for (name, source) in &self.sources {
            match source.load().await {
                Ok(tools) => loaded.extend(tools),
                Err(e) => {
                    failure = Some(format!("the tools of `{name}` could not be loaded: {e}"));
                    break;
                }
            }
        }
        let snapshot = match (failure, previous) {
            (None, _) => {
                let mut tools = self.fixed.clone();
                tools.extend(loaded.iter().cloned());
                Arc::new(ToolSnapshot { generations, registry: Arc::new(ToolRegistry::new(tools)?), loaded })
            }
            (Some(message), None) => return Err(Error::Config(message)),
            (Some(message), Some(previous)) => {
                tracing::warn!(error = %message, "keeping the earlier tools");
                // Not retried until a generation moves again.
                Arc::new(ToolSnapshot {
                    generations,
                    registry: previous.registry.clone(),
                    loaded: previous.loaded.clone(),
                })
            }
        };
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(snapshot.clone());
        Ok(snapshot)
    }
}
