//! The data of a knowledge index: scopes, documents, chunks and where each chunk comes from.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::memory::Embedding;

/// Which index: a tenant and a collection within it. Every [`super::KnowledgeStore`] call takes
/// one and touches only that scope's rows, so two tenants' knowledge never mixes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KnowledgeScope {
    /// The tenant (`""`: knowledge shared by every tenant).
    pub tenant: String,
    /// The collection (a source's name, such as `docs`; never empty).
    pub collection: String,
}

impl KnowledgeScope {
    /// The collection `collection` of `tenant` (`""`: shared).
    ///
    /// # Errors
    /// An empty collection name is [`Error::Config`].
    pub fn new(tenant: impl Into<String>, collection: impl Into<String>) -> Result<Self, Error> {
        let collection = collection.into();
        if collection.trim().is_empty() {
            return Err(Error::Config("a knowledge collection needs a non-empty name".into()));
        }
        Ok(KnowledgeScope { tenant: tenant.into(), collection })
    }

    /// The shared collection `collection` (tenant `""`).
    ///
    /// # Errors
    /// As [`KnowledgeScope::new`].
    pub fn shared(collection: impl Into<String>) -> Result<Self, Error> {
        KnowledgeScope::new("", collection)
    }
}

/// Where a passage is in its document: a line range (1-based, inclusive) and, for PDFs, a page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// The page (from 1), for paged documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    /// The first line (from 1; within the page for paged documents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line_start: Option<u32>,
    /// The last line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line_end: Option<u32>,
}

impl Location {
    /// Lines `start..=end`.
    pub fn lines(start: u32, end: u32) -> Self {
        Location { page: None, line_start: Some(start), line_end: Some(end.max(start)) }
    }

    /// How a citation shows it after the document: `:12-30`, ` p. 3`, ` p. 3:4-9`, or nothing.
    pub fn suffix(&self) -> String {
        let lines = match (self.line_start, self.line_end) {
            (Some(a), Some(b)) if a == b => format!(":{a}"),
            (Some(a), Some(b)) => format!(":{a}-{b}"),
            (Some(a), None) => format!(":{a}"),
            _ => String::new(),
        };
        match self.page {
            Some(p) if lines.is_empty() => format!(" p. {p}"),
            Some(p) => format!(" p. {p}{lines}"),
            None => lines,
        }
    }
}

/// A document's fingerprint in the index: how it was when it was last indexed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DocumentInfo {
    /// The document's id in its collection: a directory source's path relative to the directory
    /// (with `/`), or an inline document's id.
    pub id: String,
    /// The file's modification time, milliseconds since the epoch (0 for inline documents).
    pub mtime_ms: i64,
    /// The size in bytes.
    pub size: u64,
    /// The SHA-256 of the bytes, hex.
    pub hash: String,
    /// How many chunks it was cut into.
    pub chunks: u32,
    /// When it was indexed.
    pub indexed_at: DateTime<Utc>,
}

/// A chunk to store.
#[derive(Clone, Debug, PartialEq)]
pub struct NewChunk {
    /// Where it is in the document.
    pub location: Location,
    /// The text.
    pub text: String,
    /// Its vector, when an embedder is configured.
    pub embedding: Option<Embedding>,
}

/// A stored chunk, as a search returns it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    /// The document it belongs to ([`DocumentInfo::id`]).
    pub document: String,
    /// Its position in the document, from 0.
    pub ordinal: u32,
    /// Where it is in the document.
    pub location: Location,
    /// The text.
    pub text: String,
}

impl Chunk {
    /// The chunk's id within its collection: `document#ordinal`.
    pub fn id(&self) -> String {
        format!("{}#{}", self.document, self.ordinal)
    }
}
