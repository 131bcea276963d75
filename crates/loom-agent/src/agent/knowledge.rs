//! The builder's knowledge settings and the agent's knowledge calls.

use std::sync::Arc;
use std::time::Duration;

use super::{Agent, AgentBuilder};
use crate::error::Error;
use crate::knowledge::{
    InMemoryKnowledgeStore, Knowledge, KnowledgeBundle, KnowledgeQuery, KnowledgeSource, KnowledgeStore,
};
use crate::memory::MemorySlot;
use crate::tool::Tool;

/// An agent's knowledge and its `search_knowledge` tool.
pub(super) type AssembledKnowledge = (Arc<Knowledge>, Arc<dyn Tool>);

/// What the builder collects for knowledge.
#[derive(Default)]
pub(crate) struct KnowledgeParts {
    pub(crate) sources: Vec<KnowledgeSource>,
    pub(crate) store: Option<Arc<dyn KnowledgeStore>>,
    pub(crate) refresh: Option<Option<Duration>>,
}

impl AgentBuilder {
    /// Adds a knowledge source: inline documents, a directory, or a dynamic source. The agent
    /// gets [`Agent::resolve_knowledge`] and the model a `search_knowledge` tool. Inline and
    /// directory sources are indexed into the memory store's knowledge tables when the agent has
    /// a memory store (`.memory("sqlite:./bot.db")`), else into an in-process index, at the first
    /// query and again when the index is older than 30 s (see
    /// [`AgentBuilder::knowledge_refresh`]); vectors come from the memory embedder.
    pub fn knowledge(mut self, source: KnowledgeSource) -> Self {
        self.knowledge.sources.push(source);
        self
    }

    /// Where knowledge is indexed, instead of the memory store's tables.
    pub fn knowledge_store(mut self, store: impl KnowledgeStore) -> Self {
        self.knowledge.store = Some(Arc::new(store));
        self
    }

    /// How old the knowledge index may get before a query re-indexes the sources (default 30 s;
    /// `None`: indexed at the first query only).
    pub fn knowledge_refresh(mut self, every: Option<Duration>) -> Self {
        self.knowledge.refresh = Some(every);
        self
    }

    /// The agent's knowledge and its `search_knowledge` tool (none without sources).
    pub(super) fn assemble_knowledge(&mut self) -> Result<Option<AssembledKnowledge>, Error> {
        let parts = std::mem::take(&mut self.knowledge);
        if parts.sources.is_empty() {
            return Ok(None);
        }
        let mut names = std::collections::HashSet::new();
        for s in &parts.sources {
            if s.name().trim().is_empty() {
                return Err(Error::Config("a knowledge source needs a non-empty name".into()));
            }
            if !names.insert((s.tenant_id().to_string(), s.name().to_string())) {
                return Err(Error::Config(format!(
                    "two knowledge sources are named `{}`; rename one with .named(…)",
                    s.name()
                )));
            }
        }
        let store = match (parts.store, &self.memory) {
            (Some(store), _) => store,
            (None, Some(Ok(MemorySlot::Store(memory)))) => {
                memory.knowledge().unwrap_or_else(|| Arc::new(InMemoryKnowledgeStore::new()))
            }
            (None, _) => Arc::new(InMemoryKnowledgeStore::new()),
        };
        let mut knowledge = Knowledge::new(store);
        if let Some(every) = parts.refresh {
            knowledge = knowledge.refresh_every(every);
        }
        let embedder = match &self.memory_parts.embedder {
            Some(Ok(chosen)) => chosen.clone(),
            // A bad embedder string fails `build()` where memory is assembled.
            Some(Err(_)) => None,
            None => crate::memory::default_embedder(),
        };
        if let Some(embedder) = embedder {
            knowledge = knowledge.embedder(embedder);
        }
        for source in parts.sources {
            knowledge = knowledge.source(source);
        }
        let knowledge = Arc::new(knowledge);
        let tool = crate::knowledge::search_tool(knowledge.clone());
        Ok(Some((knowledge, tool)))
    }
}

impl Agent {
    /// The best passages for `query` from the agent's knowledge sources (see
    /// [`Knowledge::resolve`]), to give a run: `RunContext::new().knowledge(bundle)`.
    ///
    /// ```
    /// use loom_agent::knowledge::{KnowledgeQuery, KnowledgeSource};
    /// use loom_agent::prelude::*;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), loom_agent::Error> {
    /// let agent = Agent::builder()
    ///     .model("echo")
    ///     .knowledge(KnowledgeSource::inline("faq").document("refunds", "Refunds are paid within 14 days."))
    ///     .build()?;
    /// let bundle = agent.resolve_knowledge(KnowledgeQuery::new("refunds").top_k(3)).await?;
    /// assert_eq!(bundle.passages[0].citation(), "refunds:1");
    /// let request = RunRequest::new("When are refunds paid?").context(RunContext::new().knowledge(bundle));
    /// agent.run(request).await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// An agent without knowledge sources is [`Error::Config`]; indexing and store failures.
    pub async fn resolve_knowledge(&self, query: KnowledgeQuery) -> Result<KnowledgeBundle, Error> {
        match &self.inner.knowledge {
            Some(knowledge) => knowledge.resolve(&query).await,
            None => Err(Error::Config("this agent has no knowledge sources; add one with .knowledge(source)".into())),
        }
    }

    /// The agent's knowledge (sources, store, indexing), if it has sources.
    pub fn knowledge(&self) -> Option<&Arc<Knowledge>> {
        self.inner.knowledge.as_ref()
    }
}
