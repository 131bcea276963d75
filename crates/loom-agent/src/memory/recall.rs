//! Recall: hybrid search (full text and vectors) fused by reciprocal rank fusion with recency and
//! importance, cut to a token budget, and rendered as one system message.

use std::collections::HashMap;

use super::MemoryStore;
use super::types::{Block, Embedding, ItemKind, MemoryItem, Owner, clip};
use crate::embed::Embedder;
use crate::error::Error;
use crate::event::RecalledItem;
use crate::message::Message;

/// How recall searches and how much it returns.
#[derive(Clone, Debug, PartialEq)]
pub struct RecallOptions {
    /// The most tokens (estimated as characters / 4) the recalled facts and episodes may take;
    /// working blocks are always included on top. Default 1,000.
    pub token_budget: usize,
    /// Candidates taken from each search (full text, vectors). Default 20.
    pub candidates: usize,
    /// The most recent items taken as a third ranked list. Default 10.
    pub recent: usize,
    /// The weight of the recent list in the fusion (the searches weigh 1). Default 0.1: recency
    /// breaks near-ties between items the searches found, and recent items the searches did not
    /// find come after every item they did (a weight of 0.5 let recent facts push the best vector
    /// match out of the top five: recall@5 0.72 against 0.96, docs/benchmarks.md).
    pub recency_weight: f32,
    /// The reciprocal rank fusion constant `k` in `1 / (k + rank)`. Default 60.
    pub rrf_k: f32,
}

impl Default for RecallOptions {
    fn default() -> Self {
        RecallOptions { token_budget: 1000, candidates: 20, recent: 10, recency_weight: 0.1, rrf_k: 60.0 }
    }
}

/// Estimated tokens of a text: characters / 4, rounded up.
pub fn estimate_tokens(text: &str) -> usize {
    text.chars().count().div_ceil(4)
}

/// What recall found: the owner's working blocks, and the items that fit the budget, best first
/// with their fused scores.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recollection {
    /// Every working block.
    pub blocks: Vec<Block>,
    /// The items, best first.
    pub items: Vec<(f32, MemoryItem)>,
}

impl Recollection {
    /// Whether nothing was recalled.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty() && self.items.is_empty()
    }
}

/// Fuses ranked lists by reciprocal rank fusion: each list adds `weight / (k + rank)` (rank from
/// 1) to an item's score; importance adds up to half of a first place. Best first.
pub fn fuse(lists: &[(&[MemoryItem], f32)], k: f32) -> Vec<(f32, MemoryItem)> {
    let mut scores: HashMap<&str, (f32, &MemoryItem)> = HashMap::new();
    for (list, weight) in lists {
        for (rank, item) in list.iter().enumerate() {
            let entry = scores.entry(item.id.as_str()).or_insert((0.0, item));
            entry.0 += weight / (k + rank as f32 + 1.0);
        }
    }
    let mut fused: Vec<(f32, MemoryItem)> = scores
        .into_values()
        .map(|(score, item)| (score + item.importance.clamp(0.0, 1.0) * 0.5 / (k + 1.0), item.clone()))
        .collect();
    fused.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.recorded_at.cmp(&a.1.recorded_at)).then(a.1.id.cmp(&b.1.id)));
    fused
}

/// Reciprocal rank fusion of ranked lists of any kind: each list adds `weight / (k + rank)` (rank
/// from 1) to the score of each of its items, items being the same when `key` says so. Best first;
/// equal scores keep the order in which items were first seen. Knowledge search fuses its full
/// text, vector and dynamic-source lists with it.
pub fn rrf<'a, T>(lists: &[(&'a [T], f32)], k: f32, key: impl Fn(&T) -> String) -> Vec<(f32, &'a T)> {
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut fused: Vec<(f32, &'a T)> = Vec::new();
    for (list, weight) in lists {
        for (rank, item) in list.iter().enumerate() {
            let add = weight / (k + rank as f32 + 1.0);
            match index.entry(key(item)) {
                std::collections::hash_map::Entry::Occupied(e) => fused[*e.get()].0 += add,
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(fused.len());
                    fused.push((add, item));
                }
            }
        }
    }
    // A stable sort: ties stay in first-seen order.
    fused.sort_by(|a, b| b.0.total_cmp(&a.0));
    fused
}

/// Searches the owner's memory for `query`: full text, vectors (when `embedder` is given; a failing
/// embedder is logged and recall goes on with full text), the most recent items, fused and cut to
/// the budget.
pub async fn recall(
    store: &dyn MemoryStore,
    embedder: Option<&dyn Embedder>,
    owner: &Owner,
    query: &str,
    options: &RecallOptions,
) -> Result<Recollection, Error> {
    let blocks = store.blocks(owner).await?;
    let query_vector = match embedder {
        Some(embedder) if !query.trim().is_empty() => match embedder.embed(&[query.to_string()]).await {
            Ok(mut v) if v.len() == 1 => {
                v.pop().map(|vector| Embedding { model: embedder.model_id().to_string(), vector })
            }
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "memory: embedding the query failed; recalling by full text only");
                None
            }
        },
        _ => None,
    };
    let items = search(store, owner, query, query_vector.as_ref(), options).await?;
    let mut used = 0;
    let mut kept = Vec::new();
    for (score, item) in items {
        let cost = estimate_tokens(&item.text) + 4;
        if used + cost > options.token_budget {
            continue;
        }
        used += cost;
        kept.push((score, item));
    }
    Ok(Recollection { blocks, items: kept })
}

/// The fused candidates for `query` (not cut to a budget).
pub async fn search(
    store: &dyn MemoryStore,
    owner: &Owner,
    query: &str,
    vector: Option<&Embedding>,
    options: &RecallOptions,
) -> Result<Vec<(f32, MemoryItem)>, Error> {
    let text = store.search_text(owner, query, options.candidates).await?;
    let vectors = match vector {
        Some(v) => store.search_vector(owner, v, options.candidates).await?,
        None => Vec::new(),
    };
    let recent = store.recent(owner, options.recent).await?;
    Ok(fuse(&[(&text, 1.0), (&vectors, 1.0), (&recent, options.recency_weight)], options.rrf_k))
}

/// The system message and the event items for a recollection (`None` when it is empty).
pub fn render(recollection: &Recollection) -> Option<(Message, Vec<RecalledItem>)> {
    if recollection.is_empty() {
        return None;
    }
    let mut text = String::from(
        "Memory: what you know about this user from earlier conversations (it may be out of date; \
         newer statements in the conversation win).",
    );
    let mut items = Vec::new();
    if !recollection.blocks.is_empty() {
        text.push_str("\n\n## Working memory");
        for b in &recollection.blocks {
            text.push_str(&format!("\n### {}\n{}", b.name, b.text.trim()));
            items.push(RecalledItem {
                id: format!("block:{}", b.name),
                kind: "block".into(),
                text: b.text.clone(),
                score: 0.0,
            });
        }
    }
    let facts: Vec<_> = recollection.items.iter().filter(|(_, i)| i.kind == ItemKind::Fact).collect();
    if !facts.is_empty() {
        text.push_str("\n\n## Facts");
        for (_, f) in &facts {
            text.push_str(&format!("\n- {}", f.text.trim()));
        }
    }
    let episodes: Vec<_> = recollection.items.iter().filter(|(_, i)| i.kind == ItemKind::Episode).collect();
    if !episodes.is_empty() {
        text.push_str("\n\n## Earlier conversations");
        for (_, e) in &episodes {
            let body = clip(&e.text, 800).replace('\n', " | ");
            text.push_str(&format!("\n- [{}] {}", e.recorded_at.format("%Y-%m-%d"), body));
        }
    }
    for (score, item) in &recollection.items {
        items.push(RecalledItem {
            id: item.id.clone(),
            kind: item.kind.as_str().into(),
            text: item.text.clone(),
            score: *score,
        });
    }
    Some((Message::system(text), items))
}
