//! The builder's memory settings: the store (by URL or value), the embedder, the extractor,
//! auto-extraction and the memory tools.

use super::AgentBuilder;
use crate::embed::Embedder;
use crate::memory::{MemorySettings, MemorySlot, MemoryStore};
use crate::model::IntoModel;
use crate::store::{IntoMemory, MemoryRef};

impl AgentBuilder {
    /// The memory: a store URL — `"memory"` (in process), `"sqlite:./bot.db"`, `"postgres://…"`
    /// (feature `postgres`) — on which the agent recalls before each run, records each completed
    /// run and extracts facts; or any [`Memory`](crate::store::Memory) value, used as it is. A bad
    /// URL fails [`AgentBuilder::build`] with the accepted forms. Runs without a user id neither
    /// recall nor record. See [`crate::memory`].
    pub fn memory(mut self, memory: impl IntoMemory) -> Self {
        self.memory = Some(match memory.into_memory_ref() {
            MemoryRef::Value(memory) => Ok(MemorySlot::Custom(memory)),
            MemoryRef::Url(url) => crate::memory::open_memory_store(&url).map(MemorySlot::Store),
        });
        self
    }

    /// The memory on a store value (as [`AgentBuilder::memory`] with a URL).
    pub fn memory_store(mut self, store: impl MemoryStore) -> Self {
        self.memory = Some(Ok(MemorySlot::Store(std::sync::Arc::new(store))));
        self
    }

    /// The embedder memory uses for vector recall. Without one the default is used
    /// ([`crate::memory::default_embedder`]: the local all-MiniLM-L6-v2 once pulled, with the
    /// `local` feature), else recall is full text only; [`AgentBuilder::no_embedder`] opts out.
    pub fn embedder(mut self, embedder: impl Embedder) -> Self {
        self.memory_parts.embedder = Some(Ok(Some(std::sync::Arc::new(embedder))));
        self
    }

    /// The embedder memory uses, shared with other users of it.
    pub fn embedder_arc(mut self, embedder: std::sync::Arc<dyn Embedder>) -> Self {
        self.memory_parts.embedder = Some(Ok(Some(embedder)));
        self
    }

    /// The embedder memory uses, by string (`"local"`, `"openai:text-embedding-3-small"`,
    /// `"http://localhost:11434/v1:nomic-embed-text"`, …; see [`crate::parse_embedder`]). A bad
    /// string fails [`AgentBuilder::build`] with the accepted forms.
    pub fn embedder_named(mut self, spec: &str) -> Self {
        self.memory_parts.embedder = Some(crate::memory::parse_embedder(spec).map(Some));
        self
    }

    /// No embedder: recall is full text only, even when the default embedder is available.
    pub fn no_embedder(mut self) -> Self {
        self.memory_parts.embedder = Some(Ok(None));
        self
    }

    /// The model that extracts facts after each run (default: the agent's model).
    pub fn memory_extractor(mut self, model: impl IntoModel) -> Self {
        self.memory_parts.extractor = Some(crate::model::resolve_model(model));
        self
    }

    /// Whether facts are extracted from each completed run, in the background (default `true`).
    pub fn auto_extract(mut self, on: bool) -> Self {
        self.memory_parts.auto_extract = Some(on);
        self
    }

    /// Whether the model gets the memory tools `memory_search`, `memory_block_update` and
    /// `memory_forget` (default `true` when the agent has a memory store).
    pub fn memory_tools(mut self, on: bool) -> Self {
        self.memory_parts.tools = Some(on);
        self
    }

    /// All memory settings at once (recall budget, block size, per-agent memory, …); the
    /// single-setting methods above override them.
    pub fn memory_settings(mut self, settings: MemorySettings) -> Self {
        self.memory_parts.settings = Some(settings);
        self
    }
}
