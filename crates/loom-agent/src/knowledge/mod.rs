//! Knowledge: what an agent can look up, with citations.
//!
//! A [`KnowledgeSource`] is inline documents, a directory (text, markdown, HTML, and PDF with the
//! `pdf` feature) or a dynamic source (a closure or a [`DynamicKnowledge`] value, such as a search
//! API). Inline and directory sources are cut into overlapping chunks (each with its line range,
//! and page for PDFs) and indexed into a [`KnowledgeStore`] — the same stores as memory: the
//! SQLite file and the PostgreSQL database keep knowledge chunk tables beside the memory tables
//! (full text and vectors), and the in-process store keeps them in maps. A directory is
//! re-indexed incrementally: a file whose modification time and size are unchanged is not read,
//! one whose bytes hash the same is not re-chunked, a removed file's chunks are dropped.
//!
//! Every index is scoped by a [`KnowledgeScope`] (tenant and collection), so two tenants'
//! knowledge never mixes. [`Knowledge::resolve`] searches the sources visible to a
//! [`KnowledgeQuery`] (the shared ones and the query's tenant's) by full text and by vectors (when
//! an embedder is configured), fuses the ranked lists by reciprocal rank fusion
//! ([`crate::memory::recall::rrf`]) and returns a [`KnowledgeBundle`] of cited passages (source,
//! document, location, score). `RunContext::new().knowledge(bundle)` puts it before the model,
//! numbered `[1]`, `[2]`, … for citation, and the run emits `knowledge.injected`. An agent built
//! with `.knowledge(source)` has [`crate::Agent::resolve_knowledge`] and gives the model a
//! `search_knowledge` tool.

mod chunk;
mod engine;
mod in_memory;
mod index;
mod load;
mod resolve;
mod source;
mod tool;
mod types;

use std::sync::Arc;

use crate::error::Error;
use crate::memory::Embedding;

pub use chunk::{ChunkOptions, TextChunk, chunk_text};
pub use engine::Knowledge;
pub use in_memory::InMemoryKnowledgeStore;
pub use index::IndexReport;
pub use load::{DEFAULT_EXTENSIONS, Skipped};
pub use resolve::{KnowledgeBundle, KnowledgeQuery, Passage};
pub use source::{DirectoryOptions, DynamicKnowledge, KnowledgeSource};
pub use types::{Chunk, DocumentInfo, KnowledgeScope, Location, NewChunk};

pub(crate) use tool::search_tool;

/// Where knowledge indexes live: one trait for every backend, held to one conformance suite
/// (`tests/knowledge_conformance.rs`). The memory stores implement it on the same database
/// ([`crate::memory::MemoryStore::knowledge`]).
///
/// Every method takes the [`KnowledgeScope`] and touches only that scope's rows.
#[async_trait::async_trait]
pub trait KnowledgeStore: Send + Sync + 'static {
    /// The documents indexed in `scope`, by id.
    async fn documents(&self, scope: &KnowledgeScope) -> Result<Vec<DocumentInfo>, Error>;

    /// Stores a document and its chunks in one step, replacing what was indexed for it before.
    async fn put_document(&self, scope: &KnowledgeScope, doc: &DocumentInfo, chunks: &[NewChunk]) -> Result<(), Error>;

    /// Updates a document's fingerprint without touching its chunks (the file was touched, its
    /// bytes are the same). An unknown document is a no-op.
    async fn touch_document(&self, scope: &KnowledgeScope, doc: &DocumentInfo) -> Result<(), Error>;

    /// Drops a document and its chunks; whether it was there.
    async fn delete_document(&self, scope: &KnowledgeScope, id: &str) -> Result<bool, Error>;

    /// Full-text search over the scope's chunks, best first.
    async fn search_text(&self, scope: &KnowledgeScope, query: &str, limit: usize) -> Result<Vec<Chunk>, Error>;

    /// Vector search (cosine) over the scope's chunks embedded by the same model, best first.
    async fn search_vector(&self, scope: &KnowledgeScope, query: &Embedding, limit: usize)
    -> Result<Vec<Chunk>, Error>;

    /// Drops every document of the scope; how many.
    async fn clear(&self, scope: &KnowledgeScope) -> Result<u64, Error>;
}

/// A shared store is a store.
#[async_trait::async_trait]
impl<S: KnowledgeStore + ?Sized> KnowledgeStore for Arc<S> {
    async fn documents(&self, scope: &KnowledgeScope) -> Result<Vec<DocumentInfo>, Error> {
        (**self).documents(scope).await
    }
    async fn put_document(&self, scope: &KnowledgeScope, doc: &DocumentInfo, chunks: &[NewChunk]) -> Result<(), Error> {
        (**self).put_document(scope, doc, chunks).await
    }
    async fn touch_document(&self, scope: &KnowledgeScope, doc: &DocumentInfo) -> Result<(), Error> {
        (**self).touch_document(scope, doc).await
    }
    async fn delete_document(&self, scope: &KnowledgeScope, id: &str) -> Result<bool, Error> {
        (**self).delete_document(scope, id).await
    }
    async fn search_text(&self, scope: &KnowledgeScope, query: &str, limit: usize) -> Result<Vec<Chunk>, Error> {
        (**self).search_text(scope, query, limit).await
    }
    async fn search_vector(
        &self,
        scope: &KnowledgeScope,
        query: &Embedding,
        limit: usize,
    ) -> Result<Vec<Chunk>, Error> {
        (**self).search_vector(scope, query, limit).await
    }
    async fn clear(&self, scope: &KnowledgeScope) -> Result<u64, Error> {
        (**self).clear(scope).await
    }
}

/// Opens the knowledge store of a memory URL (`memory`, `sqlite:PATH`, `postgres://…`): the
/// knowledge tables of that memory store.
///
/// # Errors
/// As [`crate::memory::open_memory_store`].
pub fn open_knowledge_store(url: &str) -> Result<Arc<dyn KnowledgeStore>, Error> {
    let store = crate::memory::open_memory_store(url)?;
    store.knowledge().ok_or_else(|| Error::Config("this memory store keeps no knowledge index".into()))
}
