//! Indexing a source into a store, incrementally: unchanged files are not read (same modification
//! time and size) or not re-chunked (same SHA-256), removed files are dropped.

use std::collections::HashMap;

use chrono::Utc;
use serde::Serialize;

use super::KnowledgeStore;
use super::chunk::{ChunkOptions, chunk_text};
use super::load::{self, DocText, Skipped};
use super::source::{DirectoryOptions, KnowledgeSource, SourceKind};
use super::types::{DocumentInfo, KnowledgeScope, NewChunk};
use crate::embed::Embedder;
use crate::error::Error;
use crate::memory::Embedding;

/// What indexing a source did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct IndexReport {
    /// The source's name.
    pub source: String,
    /// Its tenant (`""`: shared).
    pub tenant: String,
    /// The documents found (files read or known unchanged, inline documents).
    pub documents: usize,
    /// The documents (re-)indexed: new or changed.
    pub indexed: usize,
    /// The documents left as they were (the same bytes as last time).
    pub unchanged: usize,
    /// The documents dropped from the index (removed, or no longer readable).
    pub removed: usize,
    /// The chunks written.
    pub chunks: usize,
    /// The files refused, and why.
    pub skipped: Vec<Skipped>,
}

/// How many texts go to the embedder at once.
const EMBED_BATCH: usize = 32;

/// Indexes `source` into `store` under its scope. A dynamic source has nothing to index.
pub(crate) async fn index_source(
    store: &dyn KnowledgeStore,
    embedder: Option<&dyn Embedder>,
    source: &KnowledgeSource,
) -> Result<IndexReport, Error> {
    let mut report = IndexReport { source: source.name.clone(), tenant: source.tenant.clone(), ..Default::default() };
    let scope = KnowledgeScope::new(source.tenant.clone(), source.name.clone())?;
    match &source.kind {
        SourceKind::Dynamic(_) => Ok(report),
        SourceKind::Inline(docs) => {
            let known: HashMap<String, DocumentInfo> =
                store.documents(&scope).await?.into_iter().map(|d| (d.id.clone(), d)).collect();
            for (id, text) in docs {
                report.documents += 1;
                let hash = load::sha256_hex(text.as_bytes());
                if known.get(id).is_some_and(|d| d.hash == hash) {
                    report.unchanged += 1;
                    continue;
                }
                let info = DocumentInfo {
                    id: id.clone(),
                    mtime_ms: 0,
                    size: text.len() as u64,
                    hash,
                    chunks: 0,
                    indexed_at: Utc::now(),
                };
                let chunks = embed_chunks(embedder, chunks_of(&DocText::Plain(text.clone()), source.chunking)).await;
                report.chunks += chunks.len();
                report.indexed += 1;
                store.put_document(&scope, &info, &chunks).await?;
            }
            for id in known.keys() {
                if !docs.iter().any(|(d, _)| d == id) {
                    store.delete_document(&scope, id).await?;
                    report.removed += 1;
                }
            }
            Ok(report)
        }
        SourceKind::Directory(root, options) => {
            index_directory(store, embedder, &scope, root, options, source.chunking, &mut report).await?;
            Ok(report)
        }
    }
}

async fn index_directory(
    store: &dyn KnowledgeStore,
    embedder: Option<&dyn Embedder>,
    scope: &KnowledgeScope,
    root: &std::path::Path,
    options: &DirectoryOptions,
    chunking: ChunkOptions,
    report: &mut IndexReport,
) -> Result<(), Error> {
    let (root_owned, extensions, max) = (root.to_path_buf(), options.extensions.clone(), options.max_file_bytes);
    let (found, skipped) = tokio::task::spawn_blocking(move || load::walk(&root_owned, &extensions, max))
        .await
        .map_err(|e| Error::Store(format!("knowledge: the directory walk died: {e}").into()))?
        .map_err(|e| Error::Config(format!("knowledge source `{}`: {}: {e}", scope.collection, root.display())))?;
    report.skipped = skipped;
    let mut known: HashMap<String, DocumentInfo> =
        store.documents(scope).await?.into_iter().map(|d| (d.id.clone(), d)).collect();
    for file in found {
        let before = known.remove(&file.id);
        if let Some(b) = &before
            && b.mtime_ms == file.mtime_ms
            && b.size == file.size
        {
            report.documents += 1;
            report.unchanged += 1;
            continue;
        }
        let (path, id) = (file.path.clone(), file.id.clone());
        let read = tokio::task::spawn_blocking(move || -> Result<(Vec<u8>, Result<DocText, String>), String> {
            let bytes = load::read_capped(&path, max).map_err(|e| format!("unreadable: {e}"))?;
            let text = load::extract_text(&id, &bytes);
            Ok((bytes, text))
        })
        .await
        .map_err(|e| format!("the reader failed: {e}"))
        .and_then(|r| r);
        let (bytes, text) = match read {
            Ok(read) => read,
            Err(reason) => {
                drop_stale(store, scope, before.as_ref(), report).await?;
                report.skipped.push(Skipped { path: file.id, reason });
                continue;
            }
        };
        let hash = load::sha256_hex(&bytes);
        let info = DocumentInfo {
            id: file.id.clone(),
            mtime_ms: file.mtime_ms,
            size: file.size,
            hash,
            chunks: 0,
            indexed_at: Utc::now(),
        };
        if before.as_ref().is_some_and(|b| b.hash == info.hash) {
            store.touch_document(scope, &info).await?;
            report.documents += 1;
            report.unchanged += 1;
            continue;
        }
        let text = match text {
            Ok(text) => text,
            Err(reason) => {
                drop_stale(store, scope, before.as_ref(), report).await?;
                report.skipped.push(Skipped { path: file.id, reason });
                continue;
            }
        };
        let chunks = embed_chunks(embedder, chunks_of(&text, chunking)).await;
        report.documents += 1;
        report.indexed += 1;
        report.chunks += chunks.len();
        store.put_document(scope, &info, &chunks).await?;
    }
    // What is left was not found (or was refused) this time.
    for id in known.keys() {
        if store.delete_document(scope, id).await? {
            report.removed += 1;
        }
    }
    Ok(())
}

/// Drops a document that can no longer be read, so its old text is not served as current.
async fn drop_stale(
    store: &dyn KnowledgeStore,
    scope: &KnowledgeScope,
    before: Option<&DocumentInfo>,
    report: &mut IndexReport,
) -> Result<(), Error> {
    if let Some(b) = before
        && store.delete_document(scope, &b.id).await?
    {
        report.removed += 1;
    }
    Ok(())
}

/// The chunks of a document's text (pages cut one by one).
fn chunks_of(text: &DocText, options: ChunkOptions) -> Vec<NewChunk> {
    let pieces: Vec<(Option<u32>, &str)> = match text {
        DocText::Plain(t) => vec![(None, t.as_str())],
        DocText::Pages(pages) => pages
            .iter()
            .enumerate()
            .map(|(i, p)| (Some(u32::try_from(i + 1).unwrap_or(u32::MAX)), p.as_str()))
            .collect(),
    };
    let mut out = Vec::new();
    for (page, text) in pieces {
        for c in chunk_text(text, options) {
            out.push(NewChunk { location: c.location(page), text: c.text, embedding: None });
        }
    }
    out
}

/// Embeds the chunks' texts in batches (without an embedder, or when it fails — logged — the
/// chunks are stored without vectors and found by full text only).
async fn embed_chunks(embedder: Option<&dyn Embedder>, mut chunks: Vec<NewChunk>) -> Vec<NewChunk> {
    let Some(embedder) = embedder else { return chunks };
    for batch in chunks.chunks_mut(EMBED_BATCH) {
        let texts: Vec<String> = batch.iter().map(|c| c.text.clone()).collect();
        match embedder.embed(&texts).await {
            Ok(vectors) if vectors.len() == batch.len() => {
                for (chunk, vector) in batch.iter_mut().zip(vectors) {
                    chunk.embedding = Some(Embedding { model: embedder.model_id().to_string(), vector });
                }
            }
            Ok(v) => {
                tracing::warn!(
                    got = v.len(),
                    want = batch.len(),
                    "knowledge: the embedder returned the wrong number of vectors"
                );
            }
            Err(e) => tracing::warn!(error = %e, "knowledge: embedding failed; the chunks are stored without vectors"),
        }
    }
    chunks
}
