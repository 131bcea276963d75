//! The in-process memory store: everything in a map keyed by owner, gone when the process ends.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use super::MemoryStore;
use super::types::{
    Block, Embedding, Episode, Fact, Forget, ItemKind, MemoryItem, NewEpisode, NewFact, Owner, cosine, query_terms,
};
use crate::error::Error;

/// Memory kept in process (`"memory"`): for tests, demos and short-lived agents.
#[derive(Debug, Default)]
pub struct InMemoryStore {
    owners: Mutex<HashMap<Owner, OwnerData>>,
    knowledge: std::sync::Arc<crate::knowledge::InMemoryKnowledgeStore>,
}

#[derive(Debug, Default)]
struct OwnerData {
    episodes: Vec<(Episode, Option<Embedding>)>,
    facts: Vec<(Fact, Option<Embedding>)>,
    blocks: BTreeMap<String, Block>,
}

impl InMemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        InMemoryStore::default()
    }

    fn with<T>(&self, owner: &Owner, f: impl FnOnce(&mut OwnerData) -> T) -> Result<T, Error> {
        let mut owners = self.owners.lock().map_err(|_| Error::Store("in-memory memory store lock poisoned".into()))?;
        let data = owners.entry(owner.clone()).or_default();
        let out = f(data);
        if data.episodes.is_empty() && data.facts.is_empty() && data.blocks.is_empty() {
            owners.remove(owner);
        }
        Ok(out)
    }

    /// Whether the store holds anything at all about `owner` (for erasure checks).
    pub fn holds_anything(&self, owner: &Owner) -> bool {
        self.owners.lock().map(|o| o.contains_key(owner)).unwrap_or(true)
    }
}

fn fact_item(f: &Fact) -> MemoryItem {
    MemoryItem {
        id: f.id.clone(),
        kind: ItemKind::Fact,
        text: f.statement.clone(),
        importance: f.importance,
        recorded_at: f.recorded_at,
    }
}

fn episode_item(e: &Episode) -> MemoryItem {
    MemoryItem {
        id: e.id.clone(),
        kind: ItemKind::Episode,
        text: e.text(),
        importance: 0.3,
        recorded_at: e.recorded_at,
    }
}

impl OwnerData {
    /// Valid items with their vectors.
    fn items(&self) -> impl Iterator<Item = (MemoryItem, Option<&Embedding>)> {
        let facts = self.facts.iter().filter(|(f, _)| f.valid_to.is_none()).map(|(f, e)| (fact_item(f), e.as_ref()));
        let episodes = self.episodes.iter().map(|(ep, e)| (episode_item(ep), e.as_ref()));
        facts.chain(episodes)
    }
}

fn in_range(at: DateTime<Utc>, from: DateTime<Utc>, to: DateTime<Utc>) -> bool {
    at >= from && at < to
}

#[async_trait::async_trait]
impl MemoryStore for InMemoryStore {
    async fn add_episode(
        &self,
        owner: &Owner,
        episode: NewEpisode,
        embedding: Option<Embedding>,
    ) -> Result<Option<Episode>, Error> {
        self.with(owner, |data| {
            if data.episodes.iter().any(|(e, _)| e.run_id == episode.run_id) {
                return None;
            }
            let stored = Episode {
                id: crate::new_id("ep"),
                run_id: episode.run_id,
                session_id: episode.session_id,
                prompt: episode.prompt,
                answer: episode.answer,
                tools: episode.tools,
                recorded_at: Utc::now(),
                extracted: !episode.pending_extraction,
            };
            data.episodes.push((stored.clone(), embedding));
            Some(stored)
        })
    }

    async fn episodes(&self, owner: &Owner, limit: usize) -> Result<Vec<Episode>, Error> {
        self.with(owner, |data| data.episodes.iter().rev().take(limit).map(|(e, _)| e.clone()).collect())
    }

    async fn pending_episodes(&self, owner: &Owner) -> Result<Vec<Episode>, Error> {
        self.with(owner, |data| data.episodes.iter().filter(|(e, _)| !e.extracted).map(|(e, _)| e.clone()).collect())
    }

    async fn mark_extracted(&self, owner: &Owner, episode_id: &str) -> Result<(), Error> {
        self.with(owner, |data| {
            for (e, _) in data.episodes.iter_mut().filter(|(e, _)| e.id == episode_id) {
                e.extracted = true;
            }
        })
    }

    async fn add_fact(&self, owner: &Owner, fact: NewFact, embedding: Option<Embedding>) -> Result<Fact, Error> {
        let fact = fact.normalized()?;
        self.with(owner, |data| {
            let same = |f: &Fact| f.valid_to.is_none() && f.statement.to_lowercase() == fact.statement.to_lowercase();
            if let Some((existing, _)) = data.facts.iter().find(|(f, _)| same(f)) {
                return existing.clone();
            }
            let now = Utc::now();
            let id = crate::new_id("fact");
            let valid_from = fact.valid_from.unwrap_or(now);
            for (old, _) in data.facts.iter_mut() {
                let keyed = fact.key.is_some() && old.key == fact.key;
                let named = fact.supersedes.as_deref() == Some(old.id.as_str());
                if old.valid_to.is_none() && (keyed || named) {
                    old.valid_to = Some(valid_from);
                    old.superseded_by = Some(id.clone());
                }
            }
            let stored = Fact {
                id,
                key: fact.key,
                statement: fact.statement,
                importance: fact.importance,
                valid_from,
                valid_to: None,
                recorded_at: now,
                superseded_by: None,
                source_run: fact.source_run,
            };
            data.facts.push((stored.clone(), embedding));
            stored
        })
    }

    async fn facts(&self, owner: &Owner, history: bool) -> Result<Vec<Fact>, Error> {
        self.with(owner, |data| {
            data.facts.iter().filter(|(f, _)| history || f.valid_to.is_none()).map(|(f, _)| f.clone()).collect()
        })
    }

    async fn search_text(&self, owner: &Owner, query: &str, limit: usize) -> Result<Vec<MemoryItem>, Error> {
        let terms = query_terms(query);
        if terms.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        self.with(owner, |data| {
            let docs: Vec<(MemoryItem, Vec<String>)> = data
                .items()
                .map(|(item, _)| {
                    let words = item.text.split(|c: char| !c.is_alphanumeric()).map(str::to_lowercase).collect();
                    (item, words)
                })
                .collect();
            let n = docs.len() as f32;
            // A small BM25: idf per term, saturating term frequency, length normalization.
            let avg = docs.iter().map(|(_, w)| w.len()).sum::<usize>() as f32 / n.max(1.0);
            let idf: Vec<f32> = terms
                .iter()
                .map(|t| {
                    let df = docs.iter().filter(|(_, w)| w.iter().any(|x| matches(x, t))).count() as f32;
                    ((n - df + 0.5) / (df + 0.5) + 1.0).ln()
                })
                .collect();
            let mut scored: Vec<(f32, MemoryItem)> = docs
                .into_iter()
                .filter_map(|(item, words)| {
                    let len = words.len() as f32;
                    let mut score = 0.0;
                    for (t, idf) in terms.iter().zip(&idf) {
                        let tf = words.iter().filter(|x| matches(x, t)).count() as f32;
                        if tf > 0.0 {
                            score += idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * len / avg.max(1.0)));
                        }
                    }
                    (score > 0.0).then_some((score, item))
                })
                .collect();
            scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.recorded_at.cmp(&a.1.recorded_at)));
            scored.into_iter().take(limit).map(|(_, item)| item).collect()
        })
    }

    async fn search_vector(&self, owner: &Owner, query: &Embedding, limit: usize) -> Result<Vec<MemoryItem>, Error> {
        self.with(owner, |data| {
            let mut scored: Vec<(f32, MemoryItem)> = data
                .items()
                .filter_map(|(item, e)| {
                    let e = e.filter(|e| e.model == query.model)?;
                    Some((cosine(&e.vector, &query.vector), item))
                })
                .collect();
            scored.sort_by(|a, b| b.0.total_cmp(&a.0));
            scored.into_iter().take(limit).map(|(_, item)| item).collect()
        })
    }

    async fn recent(&self, owner: &Owner, limit: usize) -> Result<Vec<MemoryItem>, Error> {
        self.with(owner, |data| {
            let mut items: Vec<MemoryItem> = data.items().map(|(i, _)| i).collect();
            items.sort_by_key(|i| std::cmp::Reverse(i.recorded_at));
            items.truncate(limit);
            items
        })
    }

    async fn blocks(&self, owner: &Owner) -> Result<Vec<Block>, Error> {
        self.with(owner, |data| data.blocks.values().cloned().collect())
    }

    async fn set_block(&self, owner: &Owner, name: &str, text: &str) -> Result<Block, Error> {
        super::types::check_block_name(name)?;
        self.with(owner, |data| {
            let block = Block { name: name.to_string(), text: text.to_string(), updated_at: Utc::now() };
            data.blocks.insert(name.to_string(), block.clone());
            block
        })
    }

    async fn delete_block(&self, owner: &Owner, name: &str) -> Result<bool, Error> {
        self.with(owner, |data| data.blocks.remove(name).is_some())
    }

    async fn forget(&self, owner: &Owner, what: &Forget) -> Result<u64, Error> {
        self.with(owner, |data| {
            let before = data.episodes.len() + data.facts.len() + data.blocks.len();
            match what {
                Forget::Item(id) => {
                    data.episodes.retain(|(e, _)| e.id != *id);
                    data.facts.retain(|(f, _)| f.id != *id);
                }
                Forget::Range(from, to) => {
                    data.episodes.retain(|(e, _)| !in_range(e.recorded_at, *from, *to));
                    data.facts.retain(|(f, _)| !in_range(f.recorded_at, *from, *to));
                }
                Forget::All => *data = OwnerData::default(),
            }
            (before - (data.episodes.len() + data.facts.len() + data.blocks.len())) as u64
        })
    }

    fn knowledge(&self) -> Option<std::sync::Arc<dyn crate::knowledge::KnowledgeStore>> {
        Some(self.knowledge.clone())
    }
}

/// Whether a word matches a query term: equal, or sharing a prefix of at least 4 letters with a
/// short tail (a poor man's stemming: `city` / `cities`, `moved` / `move`).
pub(crate) fn matches(word: &str, term: &str) -> bool {
    if word == term {
        return true;
    }
    let common = word.chars().zip(term.chars()).take_while(|(a, b)| a == b).count();
    let (lw, lt) = (word.chars().count(), term.chars().count());
    common >= 4 && lw.max(lt) - common <= 3
}
