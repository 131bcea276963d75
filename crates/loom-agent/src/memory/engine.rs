//! The agent's memory: a [`MemoryStore`] with an embedder and an extractor, plugged into the run
//! pipeline as the [`Memory`] slot, and the application's handle on it ([`MemoryHandle`]).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use super::recall::{self, RecallOptions, Recollection};
use super::types::{Block, Embedding, Episode, Fact, Forget, MemoryItem, NewEpisode, NewFact, Owner};
use super::{MemoryStore, extract};
use crate::embed::Embedder;
use crate::error::Error;
use crate::event::EventKind;
use crate::model::SharedModel;
use crate::run::{RunInput, RunState, Scope, Transcript};
use crate::store::{Memory, Recalled};

/// How an agent uses its memory store.
#[derive(Clone, Debug, PartialEq)]
pub struct MemorySettings {
    /// Extract facts from each completed run in the background (default `true`).
    pub auto_extract: bool,
    /// Offer the memory tools (`memory_search`, `memory_block_update`, `memory_forget`) to the
    /// model (default `true`).
    pub tools: bool,
    /// Keep each agent's memory apart (owner = user and agent name) instead of sharing it between
    /// every agent of a user (default `false`: shared).
    pub per_agent: bool,
    /// How recall searches and how much it returns.
    pub recall: RecallOptions,
    /// The most characters a working block holds (default 2,000).
    pub block_limit: usize,
}

impl Default for MemorySettings {
    fn default() -> Self {
        MemorySettings {
            auto_extract: true,
            tools: true,
            per_agent: false,
            recall: RecallOptions::default(),
            block_limit: 2000,
        }
    }
}

/// What the builder resolved the memory slot to.
pub(crate) enum MemorySlot {
    /// A memory value the application wrote itself.
    Custom(Arc<dyn Memory>),
    /// A memory store the agent runs its own memory on.
    Store(Arc<dyn MemoryStore>),
}

/// The agent's own memory on a store.
pub(crate) struct MemoryEngine {
    store: Arc<dyn MemoryStore>,
    embedder: Option<Arc<dyn Embedder>>,
    /// The extraction model; `None` when auto-extraction is off.
    extractor: Option<SharedModel>,
    /// The agent name in owners (`""`: shared by the user's agents).
    agent: String,
    settings: MemorySettings,
    /// Extractions started and not yet awaited.
    pending: Mutex<Vec<tokio::task::JoinHandle<Result<(), Error>>>>,
    /// Episodes being extracted in this process (never twice at once).
    in_flight: Arc<Mutex<HashSet<String>>>,
}

impl MemoryEngine {
    pub(crate) fn new(
        store: Arc<dyn MemoryStore>,
        embedder: Option<Arc<dyn Embedder>>,
        extractor: Option<SharedModel>,
        agent_name: &str,
        settings: MemorySettings,
    ) -> Self {
        let agent = if settings.per_agent { agent_name.to_string() } else { String::new() };
        let extractor = extractor.filter(|_| settings.auto_extract);
        MemoryEngine {
            store,
            embedder,
            extractor,
            agent,
            settings,
            pending: Mutex::new(Vec::new()),
            in_flight: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    pub(crate) fn settings(&self) -> &MemorySettings {
        &self.settings
    }

    pub(crate) fn owner(&self, user: &str) -> Result<Owner, Error> {
        Owner::of(user, self.agent.clone())
    }

    /// The embedding of `text`, or `None` without an embedder (or when it fails: logged).
    pub(crate) async fn embed(&self, text: &str) -> Option<Embedding> {
        let embedder = self.embedder.as_ref()?;
        match embedder.embed(&[text.to_string()]).await {
            Ok(mut v) if v.len() == 1 => {
                v.pop().map(|vector| Embedding { model: embedder.model_id().to_string(), vector })
            }
            Ok(v) => {
                tracing::warn!(got = v.len(), "memory: the embedder returned the wrong number of vectors");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "memory: embedding failed; the item is stored without a vector");
                None
            }
        }
    }

    pub(crate) async fn recollect(&self, owner: &Owner, query: &str) -> Result<Recollection, Error> {
        recall::recall(self.store.as_ref(), self.embedder.as_deref(), owner, query, &self.settings.recall).await
    }

    pub(crate) async fn search(
        &self,
        owner: &Owner,
        query: &str,
        limit: usize,
    ) -> Result<Vec<(f32, MemoryItem)>, Error> {
        let vector = self.embed(query).await;
        let options = RecallOptions { candidates: limit.max(1), ..self.settings.recall.clone() };
        let mut found = recall::search(self.store.as_ref(), owner, query, vector.as_ref(), &options).await?;
        found.truncate(limit);
        Ok(found)
    }

    pub(crate) async fn add_fact(&self, owner: &Owner, fact: NewFact) -> Result<Fact, Error> {
        let fact = fact.normalized()?;
        let embedding = self.embed(&fact.statement).await;
        self.store.add_fact(owner, fact, embedding).await
    }

    pub(crate) async fn set_block(&self, owner: &Owner, name: &str, text: &str) -> Result<Block, Error> {
        let len = text.chars().count();
        if len > self.settings.block_limit {
            return Err(Error::Config(format!(
                "the block `{name}` would hold {len} characters; the limit is {}",
                self.settings.block_limit
            )));
        }
        self.store.set_block(owner, name, text).await
    }

    pub(crate) fn store(&self) -> &Arc<dyn MemoryStore> {
        &self.store
    }

    /// Starts extracting facts from `episode` in the background (not twice at once in this process).
    fn spawn_extraction(self: &Arc<Self>, owner: Owner, episode: Episode) {
        let Some(model) = self.extractor.clone() else { return };
        {
            let Ok(mut in_flight) = self.in_flight.lock() else { return };
            if !in_flight.insert(episode.id.clone()) {
                return;
            }
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("memory: no tokio runtime to extract facts on; the episode stays pending");
            return;
        };
        let engine = self.clone();
        let handle = runtime.spawn(async move {
            let result = engine.extract(&owner, &model, &episode).await;
            if let Ok(mut in_flight) = engine.in_flight.lock() {
                in_flight.remove(&episode.id);
            }
            if let Err(e) = &result {
                tracing::warn!(run_id = %episode.run_id, error = %e, "memory: fact extraction failed; the episode stays pending");
            }
            result
        });
        if let Ok(mut pending) = self.pending.lock() {
            pending.retain(|h| !h.is_finished());
            pending.push(handle);
        }
    }

    async fn extract(&self, owner: &Owner, model: &SharedModel, episode: &Episode) -> Result<(), Error> {
        let known = self.store.facts(owner, false).await?;
        let facts = extract::extract_facts(model.as_ref(), episode, &known, &owner.user).await?;
        for fact in facts {
            match fact.normalized() {
                Ok(fact) => {
                    self.add_fact(owner, fact).await?;
                }
                Err(e) => tracing::debug!(error = %e, "memory: an extracted fact was dropped"),
            }
        }
        self.store.mark_extracted(owner, &episode.id).await
    }

    /// Starts extraction for every pending episode of `owner` (after a crash, or a failed call).
    pub(crate) async fn extract_pending(self: &Arc<Self>, owner: &Owner) -> Result<usize, Error> {
        if self.extractor.is_none() {
            return Ok(0);
        }
        let pending = self.store.pending_episodes(owner).await?;
        let n = pending.len();
        for episode in pending {
            self.spawn_extraction(owner.clone(), episode);
        }
        Ok(n)
    }

    /// Waits for every extraction started so far; the first failure is returned (its episode stays
    /// pending, to be extracted again by [`MemoryHandle::extract_pending`]).
    pub(crate) async fn flush(&self) -> Result<(), Error> {
        let mut first = None;
        loop {
            let handles: Vec<_> = match self.pending.lock() {
                Ok(mut pending) => pending.drain(..).collect(),
                Err(_) => return Err(Error::Store("memory: pending extraction list poisoned".into())),
            };
            if handles.is_empty() {
                break;
            }
            for handle in handles {
                let outcome = match handle.await {
                    Ok(result) => result,
                    Err(e) => Err(Error::Store(format!("memory: an extraction task died: {e}").into())),
                };
                if let Err(e) = outcome {
                    first.get_or_insert(e);
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    fn pending_count(&self) -> usize {
        self.pending.lock().map(|p| p.iter().filter(|h| !h.is_finished()).count()).unwrap_or(0)
    }
}

impl Drop for MemoryEngine {
    fn drop(&mut self) {
        let n = self.pending_count();
        if n > 0 {
            // The tasks go on while the runtime lives; their episodes stay pending in the store
            // until extracted, so a durable store loses nothing.
            tracing::warn!(
                pending = n,
                "memory: the agent was dropped with fact extractions in flight; call agent.memory().flush() first"
            );
        }
    }
}

/// The tools used in a run, as `name ×N` in first-use order.
fn tools_summary(transcript: &Transcript) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for event in transcript.events.iter() {
        if let EventKind::ToolCall(call) = &event.kind {
            match counts.iter_mut().find(|(n, _)| *n == call.call.name) {
                Some((_, c)) => *c += 1,
                None => counts.push((call.call.name.clone(), 1)),
            }
        }
    }
    counts.into_iter().map(|(n, c)| if c > 1 { format!("{n} ×{c}") } else { n }).collect::<Vec<_>>().join(", ")
}

/// The memory slot on an engine (an `Arc`, so extractions can outlive the call).
pub(crate) struct EngineMemory(pub(crate) Arc<MemoryEngine>);

#[async_trait::async_trait]
impl Memory for EngineMemory {
    async fn recall(&self, scope: &Scope, input: &RunInput) -> Result<Recalled, Error> {
        let Some(user) = scope.user_id.as_deref() else { return Ok(Recalled::default()) };
        let owner = self.0.owner(user)?;
        let recollection = self.0.recollect(&owner, input.summary()).await?;
        Ok(match recall::render(&recollection) {
            Some((message, items)) => Recalled { messages: vec![message], items },
            None => Recalled::default(),
        })
    }

    async fn remember(&self, scope: &Scope, transcript: &Transcript) -> Result<(), Error> {
        let Some(user) = scope.user_id.as_deref() else { return Ok(()) };
        if transcript.state != RunState::Completed {
            return Ok(());
        }
        let engine = &self.0;
        let owner = engine.owner(user)?;
        let episode = NewEpisode {
            run_id: transcript.run_id.clone(),
            session_id: transcript.session_id.clone(),
            prompt: transcript.input.summary().to_string(),
            answer: transcript.output.clone(),
            tools: tools_summary(transcript),
            pending_extraction: engine.extractor.is_some(),
        };
        let text = super::types::episode_text(&episode.prompt, &episode.answer, &episode.tools);
        let embedding = engine.embed(&text).await;
        match engine.store.add_episode(&owner, episode, embedding).await? {
            Some(stored) if !stored.extracted => engine.spawn_extraction(owner, stored),
            Some(_) => {}
            // Already recorded (a resumed run): extract only if that never finished.
            None => {
                let pending = engine.store.pending_episodes(&owner).await?;
                if let Some(stored) = pending.into_iter().find(|e| e.run_id == transcript.run_id) {
                    engine.spawn_extraction(owner, stored);
                }
            }
        }
        Ok(())
    }

    async fn flush(&self) -> Result<(), Error> {
        self.0.flush().await
    }
}

/// The application's handle on an agent's memory (`agent.memory()`): facts, recall, blocks,
/// forgetting and export, per user. Cheap to clone.
///
/// On an agent without a memory store every call but [`MemoryHandle::flush`] is an
/// [`Error::Config`].
#[derive(Clone, Default)]
pub struct MemoryHandle {
    pub(crate) engine: Option<Arc<MemoryEngine>>,
    pub(crate) slot: Option<Arc<dyn Memory>>,
}

impl std::fmt::Debug for MemoryHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryHandle").field("store", &self.engine.is_some()).finish_non_exhaustive()
    }
}

impl MemoryHandle {
    fn engine(&self) -> Result<&Arc<MemoryEngine>, Error> {
        self.engine.as_ref().ok_or_else(|| {
            Error::Config(format!(
                "this agent has no memory store; configure one with .memory(URL), URL one of {}",
                super::ACCEPTED_MEMORY_URLS
            ))
        })
    }

    fn owner(&self, user: &str) -> Result<(&Arc<MemoryEngine>, Owner), Error> {
        let engine = self.engine()?;
        Ok((engine, engine.owner(user)?))
    }

    /// Whether the agent has a memory store.
    pub fn is_enabled(&self) -> bool {
        self.engine.is_some()
    }

    /// The memory store, if any.
    pub fn store(&self) -> Option<&Arc<dyn MemoryStore>> {
        self.engine.as_ref().map(|e| e.store())
    }

    /// Remembers a fact about `user` (superseding a valid fact with the same key).
    pub async fn remember_fact(&self, user: &str, fact: NewFact) -> Result<Fact, Error> {
        let (engine, owner) = self.owner(user)?;
        engine.add_fact(&owner, fact).await
    }

    /// What a run for `user` with this prompt would recall: the working blocks and the best items
    /// within the token budget.
    pub async fn recall(&self, user: &str, query: &str) -> Result<Recollection, Error> {
        let (engine, owner) = self.owner(user)?;
        engine.recollect(&owner, query).await
    }

    /// Searches `user`'s facts and episodes (hybrid, fused), best first, at most `limit`.
    pub async fn search(&self, user: &str, query: &str, limit: usize) -> Result<Vec<(f32, MemoryItem)>, Error> {
        let (engine, owner) = self.owner(user)?;
        engine.search(&owner, query, limit).await
    }

    /// `user`'s valid facts, oldest first.
    pub async fn facts(&self, user: &str) -> Result<Vec<Fact>, Error> {
        let (engine, owner) = self.owner(user)?;
        engine.store.facts(&owner, false).await
    }

    /// `user`'s facts including superseded ones, oldest first.
    pub async fn fact_history(&self, user: &str) -> Result<Vec<Fact>, Error> {
        let (engine, owner) = self.owner(user)?;
        engine.store.facts(&owner, true).await
    }

    /// `user`'s episodes, newest first.
    pub async fn episodes(&self, user: &str, limit: usize) -> Result<Vec<Episode>, Error> {
        let (engine, owner) = self.owner(user)?;
        engine.store.episodes(&owner, limit).await
    }

    /// `user`'s working blocks.
    pub async fn blocks(&self, user: &str) -> Result<Vec<Block>, Error> {
        let (engine, owner) = self.owner(user)?;
        engine.store.blocks(&owner).await
    }

    /// Creates or replaces one of `user`'s working blocks (at most the block limit in characters).
    pub async fn set_block(&self, user: &str, name: &str, text: &str) -> Result<Block, Error> {
        let (engine, owner) = self.owner(user)?;
        engine.set_block(&owner, name, text).await
    }

    /// Deletes one of `user`'s working blocks; whether it existed.
    pub async fn delete_block(&self, user: &str, name: &str) -> Result<bool, Error> {
        let (engine, owner) = self.owner(user)?;
        engine.store.delete_block(&owner, name).await
    }

    /// Forgets an item, a time range, or everything about `user`; how many rows went.
    pub async fn forget(&self, user: &str, what: Forget) -> Result<u64, Error> {
        let (engine, owner) = self.owner(user)?;
        engine.store.forget(&owner, &what).await
    }

    /// Everything about `user` as JSON.
    pub async fn export(&self, user: &str) -> Result<serde_json::Value, Error> {
        let (engine, owner) = self.owner(user)?;
        engine.store.export(&owner).await
    }

    /// Starts fact extraction for `user`'s episodes that never got it (a crash, a failed call);
    /// how many. [`MemoryHandle::flush`] waits for them.
    pub async fn extract_pending(&self, user: &str) -> Result<usize, Error> {
        let (engine, owner) = self.owner(user)?;
        engine.extract_pending(&owner).await
    }

    /// Waits for the background work of finished runs (fact extraction). Call it before the
    /// process exits; the CLI does. The first failure is returned.
    pub async fn flush(&self) -> Result<(), Error> {
        match (&self.engine, &self.slot) {
            (Some(engine), _) => engine.flush().await,
            (None, Some(slot)) => slot.flush().await,
            (None, None) => Ok(()),
        }
    }
}

/// What the builder collects for memory beyond the slot itself.
#[derive(Default)]
pub(crate) struct MemoryParts {
    /// `Some(Ok(None))`: explicitly none (full text only).
    pub(crate) embedder: Option<Result<Option<Arc<dyn Embedder>>, Error>>,
    pub(crate) extractor: Option<Result<SharedModel, Error>>,
    pub(crate) settings: Option<MemorySettings>,
    pub(crate) auto_extract: Option<bool>,
    pub(crate) tools: Option<bool>,
}

/// What an agent's memory becomes at build time.
pub(crate) struct AssembledMemory {
    /// The slot the runtime calls.
    pub(crate) slot: Option<Arc<dyn Memory>>,
    /// The application's handle.
    pub(crate) handle: MemoryHandle,
    /// The memory tools to offer.
    pub(crate) tools: Vec<Arc<dyn crate::tool::Tool>>,
}

/// Builds the agent's memory: a custom slot as it is; a store with the embedder (the configured
/// one, else [`super::default_embedder`]), the extractor (the configured model, else the agent's)
/// and the tools.
pub(crate) fn assemble(
    slot: Option<MemorySlot>,
    parts: MemoryParts,
    model: &SharedModel,
    agent_name: &str,
) -> Result<AssembledMemory, Error> {
    let extractor = parts.extractor.transpose()?;
    let configured = parts.embedder.transpose()?;
    let store = match slot {
        None => return Ok(AssembledMemory { slot: None, handle: MemoryHandle::default(), tools: Vec::new() }),
        Some(MemorySlot::Custom(memory)) => {
            let handle = MemoryHandle { engine: None, slot: Some(memory.clone()) };
            return Ok(AssembledMemory { slot: Some(memory), handle, tools: Vec::new() });
        }
        Some(MemorySlot::Store(store)) => store,
    };
    let mut settings = parts.settings.unwrap_or_default();
    if let Some(auto) = parts.auto_extract {
        settings.auto_extract = auto;
    }
    if let Some(tools) = parts.tools {
        settings.tools = tools;
    }
    let embedder = match configured {
        Some(chosen) => chosen,
        None => super::default_embedder(),
    };
    let extractor = extractor.unwrap_or_else(|| model.clone());
    let engine = Arc::new(MemoryEngine::new(store, embedder, Some(extractor), agent_name, settings));
    let tools = if engine.settings().tools { super::tools::memory_tools(&engine) } else { Vec::new() };
    let slot: Arc<dyn Memory> = Arc::new(EngineMemory(engine.clone()));
    Ok(AssembledMemory {
        handle: MemoryHandle { engine: Some(engine), slot: Some(slot.clone()) },
        slot: Some(slot),
        tools,
    })
}
