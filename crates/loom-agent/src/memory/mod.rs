//! Memory: what an agent remembers about each user, across runs and sessions.
//!
//! Three tiers, all owned by one user (and optionally one agent, see [`Owner`]):
//! - **episodes** ([`Episode`]): each completed run's prompt, answer and tool use, recorded
//!   automatically when the run ends;
//! - **facts** ([`Fact`]): short statements, bi-temporal (valid from / valid to, recorded at). A new
//!   fact with the same key as a valid one, or naming it in `supersedes`, closes it instead of
//!   piling up; an identical valid statement is not stored twice;
//! - **working blocks** ([`Block`]): named, size-capped text that is always in context.
//!
//! The data lives in a [`MemoryStore`]: [`InMemoryStore`], [`SqliteMemoryStore`] (FTS5 for text,
//! vectors as BLOBs beside it with an exact cosine scan) or `PostgresMemoryStore` (feature
//! `postgres`: `tsvector` for text, vectors in a `real[]` column with an exact scan). They are
//! opened by URL with [`open_memory_store`]: `"memory"`, `"sqlite:./bot.db"`, `"postgres://…"`.
//!
//! An agent with a memory store (`AgentBuilder::memory("sqlite:./bot.db")`) recalls before each
//! run: full-text and vector search (when an embedder is configured) fused by reciprocal rank
//! fusion with recency and importance, cut to a token budget, working blocks always first. The
//! recalled items go into the seeded conversation as one system message and into the run's
//! `memory.recalled` event. After each completed run the episode is stored and, unless switched
//! off, facts are extracted from it in the background by a model call with a JSON schema
//! ([`extract`]). Runs without a user id neither recall nor record: memory is partitioned by user.

mod embedders;
mod engine;
pub mod extract;
mod in_memory;
#[cfg(feature = "postgres")]
mod postgres;
pub mod recall;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod rows;
#[cfg(feature = "sqlite")]
mod sqlite;
mod tools;
mod types;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod vector_cache;

use std::sync::Arc;

use crate::error::Error;

pub use embedders::{ACCEPTED_EMBEDDERS, default_embedder, parse_embedder};
pub use engine::{MemoryHandle, MemorySettings};
pub(crate) use engine::{MemoryParts, MemorySlot, assemble};
pub use in_memory::InMemoryStore;
pub(crate) use in_memory::matches as word_matches;
#[cfg(feature = "postgres")]
pub use postgres::{PostgresMemoryStore, VectorPath};
pub use recall::{RecallOptions, Recollection};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteMemoryStore;
pub use types::{
    Block, Embedding, Episode, Fact, Forget, ItemKind, MAX_BLOCK_NAME, MemoryItem, NewEpisode, NewFact, Owner,
};
pub(crate) use types::{cosine, query_terms};

/// The accepted memory URLs, for error messages.
pub const ACCEPTED_MEMORY_URLS: &str =
    "`memory` (in process), `sqlite:PATH` (e.g. `sqlite:./bot.db`), `postgres://USER@HOST:PORT/DB`";

/// Where memory lives: one trait for every backend, held to one conformance suite
/// (`tests/memory_conformance.rs`).
///
/// Every method takes the [`Owner`] and touches only that owner's rows: another owner's item is
/// "not found", never data. Searches return valid items only (episodes, and facts not superseded).
#[async_trait::async_trait]
pub trait MemoryStore: Send + Sync + 'static {
    /// Records an episode. `None` when the owner already has one for that run (a resumed run).
    async fn add_episode(
        &self,
        owner: &Owner,
        episode: NewEpisode,
        embedding: Option<Embedding>,
    ) -> Result<Option<Episode>, Error>;

    /// The owner's episodes, newest first, at most `limit`.
    async fn episodes(&self, owner: &Owner, limit: usize) -> Result<Vec<Episode>, Error>;

    /// The owner's episodes whose facts have not been extracted yet, oldest first.
    async fn pending_episodes(&self, owner: &Owner) -> Result<Vec<Episode>, Error>;

    /// Marks an episode's facts as extracted. An unknown id (or another owner's) is a no-op.
    async fn mark_extracted(&self, owner: &Owner, episode_id: &str) -> Result<(), Error>;

    /// Remembers a fact, in one step: an identical valid statement is returned instead of a copy;
    /// otherwise every valid fact with the same key, and the fact named by `supersedes` (if it is
    /// the owner's and valid), is closed (`valid_to` = the new fact's `valid_from`,
    /// `superseded_by` = its id) and the new fact is stored.
    async fn add_fact(&self, owner: &Owner, fact: NewFact, embedding: Option<Embedding>) -> Result<Fact, Error>;

    /// The owner's facts, oldest first: the valid ones, or with `history` the superseded too.
    async fn facts(&self, owner: &Owner, history: bool) -> Result<Vec<Fact>, Error>;

    /// Full-text search over the owner's valid items, best first.
    async fn search_text(&self, owner: &Owner, query: &str, limit: usize) -> Result<Vec<MemoryItem>, Error>;

    /// Vector search (cosine) over the owner's valid items embedded by the same model, best first.
    async fn search_vector(&self, owner: &Owner, query: &Embedding, limit: usize) -> Result<Vec<MemoryItem>, Error>;

    /// The owner's most recent valid items, newest first.
    async fn recent(&self, owner: &Owner, limit: usize) -> Result<Vec<MemoryItem>, Error>;

    /// The owner's working blocks, by name.
    async fn blocks(&self, owner: &Owner) -> Result<Vec<Block>, Error>;

    /// Creates or replaces a working block (the caller checks its size).
    async fn set_block(&self, owner: &Owner, name: &str, text: &str) -> Result<Block, Error>;

    /// Deletes a working block; whether it existed.
    async fn delete_block(&self, owner: &Owner, name: &str) -> Result<bool, Error>;

    /// Forgets items (with their vectors and text-index entries); how many rows went.
    async fn forget(&self, owner: &Owner, what: &Forget) -> Result<u64, Error>;

    /// The knowledge index kept in the same store (the same database), if the backend keeps one.
    /// The in-process, SQLite and PostgreSQL stores do.
    fn knowledge(&self) -> Option<Arc<dyn crate::knowledge::KnowledgeStore>> {
        None
    }

    /// Everything about the owner as JSON: `{user, agent, facts (with history), episodes, blocks}`.
    async fn export(&self, owner: &Owner) -> Result<serde_json::Value, Error> {
        let facts = self.facts(owner, true).await?;
        let episodes = self.episodes(owner, usize::MAX).await?;
        let blocks = self.blocks(owner).await?;
        Ok(serde_json::json!({
            "user": owner.user, "agent": owner.agent, "facts": facts, "episodes": episodes, "blocks": blocks,
        }))
    }
}

/// A shared store is a store.
#[async_trait::async_trait]
impl<S: MemoryStore + ?Sized> MemoryStore for Arc<S> {
    async fn add_episode(
        &self,
        owner: &Owner,
        episode: NewEpisode,
        embedding: Option<Embedding>,
    ) -> Result<Option<Episode>, Error> {
        (**self).add_episode(owner, episode, embedding).await
    }
    async fn episodes(&self, owner: &Owner, limit: usize) -> Result<Vec<Episode>, Error> {
        (**self).episodes(owner, limit).await
    }
    async fn pending_episodes(&self, owner: &Owner) -> Result<Vec<Episode>, Error> {
        (**self).pending_episodes(owner).await
    }
    async fn mark_extracted(&self, owner: &Owner, episode_id: &str) -> Result<(), Error> {
        (**self).mark_extracted(owner, episode_id).await
    }
    async fn add_fact(&self, owner: &Owner, fact: NewFact, embedding: Option<Embedding>) -> Result<Fact, Error> {
        (**self).add_fact(owner, fact, embedding).await
    }
    async fn facts(&self, owner: &Owner, history: bool) -> Result<Vec<Fact>, Error> {
        (**self).facts(owner, history).await
    }
    async fn search_text(&self, owner: &Owner, query: &str, limit: usize) -> Result<Vec<MemoryItem>, Error> {
        (**self).search_text(owner, query, limit).await
    }
    async fn search_vector(&self, owner: &Owner, query: &Embedding, limit: usize) -> Result<Vec<MemoryItem>, Error> {
        (**self).search_vector(owner, query, limit).await
    }
    async fn recent(&self, owner: &Owner, limit: usize) -> Result<Vec<MemoryItem>, Error> {
        (**self).recent(owner, limit).await
    }
    async fn blocks(&self, owner: &Owner) -> Result<Vec<Block>, Error> {
        (**self).blocks(owner).await
    }
    async fn set_block(&self, owner: &Owner, name: &str, text: &str) -> Result<Block, Error> {
        (**self).set_block(owner, name, text).await
    }
    async fn delete_block(&self, owner: &Owner, name: &str) -> Result<bool, Error> {
        (**self).delete_block(owner, name).await
    }
    async fn forget(&self, owner: &Owner, what: &Forget) -> Result<u64, Error> {
        (**self).forget(owner, what).await
    }
    async fn export(&self, owner: &Owner) -> Result<serde_json::Value, Error> {
        (**self).export(owner).await
    }
    fn knowledge(&self) -> Option<Arc<dyn crate::knowledge::KnowledgeStore>> {
        (**self).knowledge()
    }
}

/// Opens a memory store from a URL: `memory`, `sqlite:PATH`, `postgres://…` /
/// `postgresql://…`. Anything else is an [`Error::Config`] that lists the accepted forms.
pub fn open_memory_store(url: &str) -> Result<Arc<dyn MemoryStore>, Error> {
    let url = url.trim();
    if url == "memory" || url == "inproc" {
        return Ok(Arc::new(InMemoryStore::new()));
    }
    if let Some(rest) = url.strip_prefix("sqlite:") {
        #[cfg(feature = "sqlite")]
        {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() || path.contains('?') {
                return Err(Error::Config(format!(
                    "bad memory URL `{url}`: `sqlite:` needs a path and takes no options; accepted: {ACCEPTED_MEMORY_URLS}"
                )));
            }
            return Ok(Arc::new(SqliteMemoryStore::open(path)?));
        }
        #[cfg(not(feature = "sqlite"))]
        {
            let _ = rest;
            return Err(Error::Config("the memory URL `sqlite:…` needs loom-agent's `sqlite` feature".into()));
        }
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        #[cfg(feature = "postgres")]
        return Ok(Arc::new(PostgresMemoryStore::new(url)?));
        #[cfg(not(feature = "postgres"))]
        return Err(Error::Config("the memory URL `postgres://…` needs loom-agent's `postgres` feature".into()));
    }
    let shown = if url.contains('@') { "(a URL with credentials)" } else { url };
    Err(Error::Config(format!("unknown memory URL `{shown}`; accepted: {ACCEPTED_MEMORY_URLS}")))
}
