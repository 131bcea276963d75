//! The in-process knowledge store: every scope's documents in a map, gone when the process ends.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use super::KnowledgeStore;
use super::types::{Chunk, DocumentInfo, KnowledgeScope, NewChunk};
use crate::error::Error;
use crate::memory::Embedding;
use crate::memory::{cosine, query_terms, word_matches};

/// Knowledge kept in process: for tests, demos, the CLI's `loom run --knowledge DIR` without a
/// memory store, and [`crate::memory::InMemoryStore`]'s knowledge tables. Full text is matched
/// word by word (lower-cased; the most query words matched first), vectors by an exact scan.
#[derive(Debug, Default)]
pub struct InMemoryKnowledgeStore {
    scopes: Mutex<HashMap<KnowledgeScope, BTreeMap<String, Document>>>,
}

#[derive(Debug)]
struct Document {
    info: DocumentInfo,
    chunks: Vec<(Chunk, HashSet<String>, Option<Embedding>)>,
}

impl InMemoryKnowledgeStore {
    /// An empty store.
    pub fn new() -> Self {
        InMemoryKnowledgeStore::default()
    }

    fn with<T>(
        &self,
        scope: &KnowledgeScope,
        f: impl FnOnce(&mut BTreeMap<String, Document>) -> T,
    ) -> Result<T, Error> {
        let mut scopes =
            self.scopes.lock().map_err(|_| Error::Store("in-memory knowledge store lock poisoned".into()))?;
        let docs = scopes.entry(scope.clone()).or_default();
        let out = f(docs);
        if docs.is_empty() {
            scopes.remove(scope);
        }
        Ok(out)
    }
}

fn words(text: &str) -> HashSet<String> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect()
}

#[async_trait::async_trait]
impl KnowledgeStore for InMemoryKnowledgeStore {
    async fn documents(&self, scope: &KnowledgeScope) -> Result<Vec<DocumentInfo>, Error> {
        self.with(scope, |docs| docs.values().map(|d| d.info.clone()).collect())
    }

    async fn put_document(&self, scope: &KnowledgeScope, doc: &DocumentInfo, chunks: &[NewChunk]) -> Result<(), Error> {
        let stored = chunks
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let chunk = Chunk {
                    document: doc.id.clone(),
                    ordinal: u32::try_from(i).unwrap_or(u32::MAX),
                    location: c.location,
                    text: c.text.clone(),
                };
                (chunk, words(&c.text), c.embedding.clone())
            })
            .collect();
        let mut info = doc.clone();
        info.chunks = u32::try_from(chunks.len()).unwrap_or(u32::MAX);
        self.with(scope, |docs| {
            docs.insert(doc.id.clone(), Document { info, chunks: stored });
        })
    }

    async fn touch_document(&self, scope: &KnowledgeScope, doc: &DocumentInfo) -> Result<(), Error> {
        self.with(scope, |docs| {
            if let Some(d) = docs.get_mut(&doc.id) {
                d.info = DocumentInfo { chunks: d.info.chunks, ..doc.clone() };
            }
        })
    }

    async fn delete_document(&self, scope: &KnowledgeScope, id: &str) -> Result<bool, Error> {
        self.with(scope, |docs| docs.remove(id).is_some())
    }

    async fn search_text(&self, scope: &KnowledgeScope, query: &str, limit: usize) -> Result<Vec<Chunk>, Error> {
        let terms = query_terms(query);
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        self.with(scope, |docs| {
            let mut hits: Vec<(usize, &Chunk)> = docs
                .values()
                .flat_map(|d| d.chunks.iter())
                .filter_map(|(chunk, words, _)| {
                    let n =
                        terms.iter().filter(|t| words.contains(*t) || words.iter().any(|w| word_matches(w, t))).count();
                    (n > 0).then_some((n, chunk))
                })
                .collect();
            // Most terms first; shorter chunks (denser matches) before longer ones.
            hits.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.text.len().cmp(&b.1.text.len())));
            hits.into_iter().take(limit).map(|(_, c)| c.clone()).collect()
        })
    }

    async fn search_vector(
        &self,
        scope: &KnowledgeScope,
        query: &Embedding,
        limit: usize,
    ) -> Result<Vec<Chunk>, Error> {
        self.with(scope, |docs| {
            let mut hits: Vec<(f32, &Chunk)> = docs
                .values()
                .flat_map(|d| d.chunks.iter())
                .filter_map(|(chunk, _, e)| {
                    let e = e.as_ref().filter(|e| e.model == query.model && e.vector.len() == query.vector.len())?;
                    Some((cosine(&e.vector, &query.vector), chunk))
                })
                .collect();
            hits.sort_by(|a, b| b.0.total_cmp(&a.0));
            hits.into_iter().take(limit).map(|(_, c)| c.clone()).collect()
        })
    }

    async fn clear(&self, scope: &KnowledgeScope) -> Result<u64, Error> {
        self.with(scope, |docs| {
            let n = docs.len() as u64;
            docs.clear();
            n
        })
    }
}
