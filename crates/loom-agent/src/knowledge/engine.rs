//! [`Knowledge`]: sources on a store with an embedder — indexing and hybrid search.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::index::{IndexReport, index_source};
use super::resolve::{KnowledgeBundle, KnowledgeQuery, Passage};
use super::source::{KnowledgeSource, SourceKind};
use super::types::KnowledgeScope;
use super::{InMemoryKnowledgeStore, KnowledgeStore};
use crate::embed::Embedder;
use crate::error::Error;
use crate::memory::Embedding;
use crate::memory::recall::rrf;

/// Knowledge sources on a [`KnowledgeStore`], with an optional embedder: indexes the inline and
/// directory sources (incrementally) and answers [`KnowledgeQuery`]s with cited passages. Cheap
/// to share (`Arc`); an agent built with `.knowledge(source)` holds one.
///
/// ```
/// use loom_agent::knowledge::{Knowledge, KnowledgeQuery, KnowledgeSource};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), loom_agent::Error> {
/// let knowledge = Knowledge::in_memory().source(
///     KnowledgeSource::inline("faq").document("refunds", "Refunds are paid within 14 days."),
/// );
/// let bundle = knowledge.resolve(&KnowledgeQuery::new("when are refunds paid").top_k(1)).await?;
/// assert_eq!(bundle.passages[0].citation(), "refunds:1");
/// # Ok(())
/// # }
/// ```
pub struct Knowledge {
    store: Arc<dyn KnowledgeStore>,
    embedder: Option<Arc<dyn Embedder>>,
    sources: Vec<KnowledgeSource>,
    refresh: Option<Duration>,
    candidates: usize,
    rrf_k: f32,
    /// When the indexed sources were last indexed (`None`: never).
    indexed: tokio::sync::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Knowledge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Knowledge")
            .field("sources", &self.sources)
            .field("embedder", &self.embedder.as_ref().map(|e| e.model_id().to_string()))
            .finish_non_exhaustive()
    }
}

impl Knowledge {
    /// Knowledge on `store`, with no sources yet.
    pub fn new(store: Arc<dyn KnowledgeStore>) -> Self {
        Knowledge {
            store,
            embedder: None,
            sources: Vec::new(),
            refresh: Some(Duration::from_secs(30)),
            candidates: 20,
            rrf_k: 60.0,
            indexed: tokio::sync::Mutex::new(None),
        }
    }

    /// Knowledge on a new in-process store.
    pub fn in_memory() -> Self {
        Knowledge::new(Arc::new(InMemoryKnowledgeStore::new()))
    }

    /// Adds a source.
    pub fn source(mut self, source: KnowledgeSource) -> Self {
        self.sources.push(source);
        self
    }

    /// The embedder for vector search (without one, search is full text only).
    pub fn embedder(mut self, embedder: Arc<dyn Embedder>) -> Self {
        self.embedder = Some(embedder);
        self
    }

    /// How old the index may get before a query re-indexes the sources first (default 30 s;
    /// `None`: only the first query, and explicit [`Knowledge::index`] calls, index).
    pub fn refresh_every(mut self, every: Option<Duration>) -> Self {
        self.refresh = every;
        self
    }

    /// The sources.
    pub fn sources(&self) -> &[KnowledgeSource] {
        &self.sources
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn KnowledgeStore> {
        &self.store
    }

    /// Indexes every inline and directory source now, incrementally; one report per source.
    ///
    /// # Errors
    /// A directory that cannot be read is [`Error::Config`]; a store failure is [`Error::Store`].
    /// Files that cannot be read are reported in [`IndexReport::skipped`], not errors.
    pub async fn index(&self) -> Result<Vec<IndexReport>, Error> {
        let mut indexed = self.indexed.lock().await;
        let reports = self.index_all().await?;
        *indexed = Some(Instant::now());
        Ok(reports)
    }

    async fn index_all(&self) -> Result<Vec<IndexReport>, Error> {
        let mut reports = Vec::new();
        for source in self.sources.iter().filter(|s| s.is_indexed()) {
            reports.push(index_source(self.store.as_ref(), self.embedder.as_deref(), source).await?);
        }
        Ok(reports)
    }

    /// Indexes when never indexed, or when the last indexing is older than the refresh interval.
    async fn ensure_fresh(&self) -> Result<(), Error> {
        if !self.sources.iter().any(KnowledgeSource::is_indexed) {
            return Ok(());
        }
        let mut indexed = self.indexed.lock().await;
        let stale = match (*indexed, self.refresh) {
            (None, _) => true,
            (Some(at), Some(every)) => at.elapsed() >= every,
            (Some(_), None) => false,
        };
        if stale {
            self.index_all().await?;
            *indexed = Some(Instant::now());
        }
        Ok(())
    }

    /// The best passages for `query` from the sources it may see (the shared ones and its
    /// tenant's; only those named, if it names any): full-text and vector search of each indexed
    /// source and the dynamic sources' answers, fused by reciprocal rank fusion, best first, at
    /// most `query.top_k`. Indexes first when the index is older than the refresh interval.
    ///
    /// # Errors
    /// Indexing or store failures. A dynamic source that fails is logged and left out.
    pub async fn resolve(&self, query: &KnowledgeQuery) -> Result<KnowledgeBundle, Error> {
        if query.top_k == 0 || query.text.trim().is_empty() {
            return Ok(KnowledgeBundle { query: query.text.clone(), passages: Vec::new() });
        }
        self.ensure_fresh().await?;
        self.search(query).await
    }

    /// As [`Knowledge::resolve`], on the index as it is (never indexing first): the inline and
    /// directory sources are searched by their tenant and name in the store.
    ///
    /// # Errors
    /// Store failures. A dynamic source that fails is logged and left out.
    pub async fn search(&self, query: &KnowledgeQuery) -> Result<KnowledgeBundle, Error> {
        let mut bundle = KnowledgeBundle { query: query.text.clone(), passages: Vec::new() };
        if query.top_k == 0 || query.text.trim().is_empty() {
            return Ok(bundle);
        }
        let vector = self.embed_query(&query.text).await;
        let candidates = self.candidates.max(query.top_k);
        let mut lists: Vec<Vec<Passage>> = Vec::new();
        for source in self.sources.iter().filter(|s| visible(s, query)) {
            match &source.kind {
                SourceKind::Dynamic(dynamic) => match dynamic.search(query).await {
                    Ok(mut found) => {
                        found.truncate(candidates);
                        for p in &mut found {
                            p.source = source.name.clone();
                        }
                        lists.push(found);
                    }
                    Err(e) => tracing::warn!(source = %source.name, error = %e, "knowledge: a dynamic source failed"),
                },
                SourceKind::Inline(_) | SourceKind::Directory(..) => {
                    let scope = KnowledgeScope::new(source.tenant.clone(), source.name.clone())?;
                    let text = self.store.search_text(&scope, &query.text, candidates).await?;
                    lists.push(text.into_iter().map(|c| Passage::of_chunk(&source.name, c)).collect());
                    if let Some(v) = &vector {
                        let near = self.store.search_vector(&scope, v, candidates).await?;
                        lists.push(near.into_iter().map(|c| Passage::of_chunk(&source.name, c)).collect());
                    }
                }
            }
        }
        let weighted: Vec<(&[Passage], f32)> = lists.iter().map(|l| (l.as_slice(), 1.0)).collect();
        bundle.passages = rrf(&weighted, self.rrf_k, Passage::key)
            .into_iter()
            .take(query.top_k)
            .map(|(score, p)| Passage { score, ..p.clone() })
            .collect();
        Ok(bundle)
    }

    async fn embed_query(&self, text: &str) -> Option<Embedding> {
        let embedder = self.embedder.as_ref()?;
        match embedder.embed(&[text.to_string()]).await {
            Ok(mut v) if v.len() == 1 => {
                v.pop().map(|vector| Embedding { model: embedder.model_id().to_string(), vector })
            }
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "knowledge: embedding the query failed; searching by full text only");
                None
            }
        }
    }
}

/// Whether `query` may see `source`: a shared source or the query's tenant's, and named if the
/// query names sources. Tenants nest with `/`: a source of tenant `acme` is also the knowledge of
/// `acme/alice` (how `loom serve` names the users of its tenants), never of `acme2` or `acme2/x`.
fn visible(source: &KnowledgeSource, query: &KnowledgeQuery) -> bool {
    let tenant_ok = source.tenant.is_empty()
        || source.tenant == query.tenant
        || query.tenant.strip_prefix(source.tenant.as_str()).is_some_and(|rest| rest.starts_with('/'));
    tenant_ok && query.sources.as_ref().is_none_or(|names| names.contains(&source.name))
}
