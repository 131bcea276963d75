//! Where knowledge comes from: inline documents, a directory, or a dynamic source.

use std::path::PathBuf;
use std::sync::Arc;

use super::chunk::ChunkOptions;
use super::load::DEFAULT_EXTENSIONS;
use super::resolve::{KnowledgeQuery, Passage};
use crate::error::Error;

/// A source that answers queries itself (a search API, a database, another index): it is asked
/// at query time and nothing of it is stored.
///
/// Its passages are fused with the indexed sources' by rank; their scores are its own and are
/// replaced by the fused score.
#[async_trait::async_trait]
pub trait DynamicKnowledge: Send + Sync + 'static {
    /// The best passages for `query`, best first, at most `query.top_k` of them (more are cut).
    /// `query.tenant` says whose knowledge is asked for; a source that holds per-tenant data must
    /// answer for that tenant only.
    async fn search(&self, query: &KnowledgeQuery) -> Result<Vec<Passage>, Error>;
}

/// A dynamic source from an async closure.
struct FnKnowledge<F>(F);

#[async_trait::async_trait]
impl<F, Fut> DynamicKnowledge for FnKnowledge<F>
where
    F: Fn(KnowledgeQuery) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Vec<Passage>, Error>> + Send + 'static,
{
    async fn search(&self, query: &KnowledgeQuery) -> Result<Vec<Passage>, Error> {
        (self.0)(query.clone()).await
    }
}

/// How a directory source reads its files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectoryOptions {
    /// The file name extensions read (lower case, no dot). Default: text, markdown, HTML, PDF and
    /// common text formats ([`DEFAULT_EXTENSIONS`]).
    pub extensions: Vec<String>,
    /// Files larger than this are skipped (default 16 MiB).
    pub max_file_bytes: u64,
}

impl Default for DirectoryOptions {
    fn default() -> Self {
        DirectoryOptions {
            extensions: DEFAULT_EXTENSIONS.iter().map(|e| e.to_string()).collect(),
            max_file_bytes: 16 << 20,
        }
    }
}

/// What a source is.
#[derive(Clone)]
pub(crate) enum SourceKind {
    /// Documents given as text: (id, text).
    Inline(Vec<(String, String)>),
    /// The files of a directory.
    Directory(PathBuf, DirectoryOptions),
    /// Asked at query time.
    Dynamic(Arc<dyn DynamicKnowledge>),
}

/// Where an agent's knowledge comes from: inline documents, a directory (text, markdown, HTML,
/// PDF with the `pdf` feature; re-indexed incrementally when files change) or a dynamic source.
/// Inline and directory sources are indexed into a [`super::KnowledgeStore`] under their tenant and
/// name; a dynamic source is asked at query time.
///
/// ```
/// use loom_agent::knowledge::KnowledgeSource;
///
/// let faq = KnowledgeSource::inline("faq")
///     .document("refunds", "Refunds are paid within 14 days.")
///     .document("shipping", "We ship to the EU and the UK.");
/// let docs = KnowledgeSource::directory("./docs").tenant("acme");
/// assert_eq!(faq.name(), "faq");
/// assert_eq!(docs.name(), "docs");
/// ```
#[derive(Clone)]
pub struct KnowledgeSource {
    pub(crate) name: String,
    pub(crate) tenant: String,
    pub(crate) kind: SourceKind,
    pub(crate) chunking: ChunkOptions,
}

impl std::fmt::Debug for KnowledgeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            SourceKind::Inline(docs) => format!("inline ({} documents)", docs.len()),
            SourceKind::Directory(path, _) => format!("directory {}", path.display()),
            SourceKind::Dynamic(_) => "dynamic".to_string(),
        };
        f.debug_struct("KnowledgeSource")
            .field("name", &self.name)
            .field("tenant", &self.tenant)
            .field("kind", &kind)
            .finish()
    }
}

impl KnowledgeSource {
    fn of(name: impl Into<String>, kind: SourceKind) -> Self {
        KnowledgeSource { name: name.into(), tenant: String::new(), kind, chunking: ChunkOptions::default() }
    }

    /// Documents given as text, added with [`KnowledgeSource::document`].
    pub fn inline(name: impl Into<String>) -> Self {
        KnowledgeSource::of(name, SourceKind::Inline(Vec::new()))
    }

    /// Adds a document to an inline source (replacing one with the same id). No-op on other
    /// sources.
    pub fn document(mut self, id: impl Into<String>, text: impl Into<String>) -> Self {
        if let SourceKind::Inline(docs) = &mut self.kind {
            let id = id.into();
            docs.retain(|(d, _)| *d != id);
            docs.push((id, text.into()));
        }
        self
    }

    /// The files under `path` (recursively; hidden files and `.gitignore`d ones left out). The
    /// source is named after the directory's last component (change it with
    /// [`KnowledgeSource::named`]).
    pub fn directory(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let name = path
            .canonicalize()
            .unwrap_or_else(|_| path.clone())
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "docs".to_string());
        KnowledgeSource::of(name, SourceKind::Directory(path, DirectoryOptions::default()))
    }

    /// A source asked at query time.
    pub fn dynamic(name: impl Into<String>, source: impl DynamicKnowledge) -> Self {
        KnowledgeSource::of(name, SourceKind::Dynamic(Arc::new(source)))
    }

    /// A source asked at query time, from an async closure.
    ///
    /// ```
    /// use loom_agent::knowledge::{KnowledgeSource, Passage};
    ///
    /// let search = KnowledgeSource::from_fn("status", |query| async move {
    ///     Ok(vec![Passage::new("status", "status page", format!("All systems up (asked: {}).", query.text))])
    /// });
    /// assert_eq!(search.name(), "status");
    /// ```
    pub fn from_fn<F, Fut>(name: impl Into<String>, f: F) -> Self
    where
        F: Fn(KnowledgeQuery) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Vec<Passage>, Error>> + Send + 'static,
    {
        KnowledgeSource::dynamic(name, FnKnowledge(f))
    }

    /// Renames the source (its collection in the store, and the `source` of its passages).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The tenant whose knowledge this is (default `""`: shared by every tenant). Queries for
    /// another tenant never see it; a query for a user of this tenant (`acme/alice` for `acme`,
    /// as `loom serve` names users) does.
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = tenant.into();
        self
    }

    /// How documents are cut into chunks.
    pub fn chunking(mut self, options: ChunkOptions) -> Self {
        self.chunking = options;
        self
    }

    /// A directory source's file options (no-op on other sources).
    pub fn directory_options(mut self, options: DirectoryOptions) -> Self {
        if let SourceKind::Directory(_, o) = &mut self.kind {
            *o = options;
        }
        self
    }

    /// The source's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The source's tenant (`""`: shared).
    pub fn tenant_id(&self) -> &str {
        &self.tenant
    }

    /// Whether the source is indexed into a store (inline and directory sources are; dynamic ones
    /// are asked at query time).
    pub fn is_indexed(&self) -> bool {
        !matches!(self.kind, SourceKind::Dynamic(_))
    }
}
