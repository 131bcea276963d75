//! Row decoding shared by the SQL memory stores (SQLite and PostgreSQL): both read the same
//! columns into an [`ItemRow`], and a row that cannot be read is [`Error::Corrupt`] naming it.

use chrono::{DateTime, Utc};
use loom_core::error::StoreError;
use serde::{Deserialize, Serialize};

use super::types::{Episode, Fact, ItemKind, MemoryItem};
use crate::error::Error;

/// The columns every item query selects, in this order.
pub(crate) const ITEM_COLUMNS: &str = "id, kind, key, text, data, importance, run_id, extracted, valid_from, \
     valid_to, recorded_at, superseded_by, source_run";

/// One row of `loom_mem_items`, as the driver read it.
pub(crate) struct ItemRow {
    pub(crate) id: String,
    pub(crate) kind: String,
    pub(crate) key: Option<String>,
    pub(crate) text: String,
    pub(crate) data: String,
    pub(crate) importance: f64,
    pub(crate) run_id: Option<String>,
    pub(crate) extracted: bool,
    pub(crate) valid_from: i64,
    pub(crate) valid_to: Option<i64>,
    pub(crate) recorded_at: i64,
    pub(crate) superseded_by: Option<String>,
    pub(crate) source_run: Option<String>,
}

/// An episode's columns beyond the text, kept as JSON in `data`.
#[derive(Serialize, Deserialize)]
pub(crate) struct EpisodeData {
    pub(crate) session_id: String,
    pub(crate) prompt: String,
    pub(crate) answer: String,
    pub(crate) tools: String,
}

/// A corrupt row's error.
pub(crate) fn corrupt_row(id: &str, what: impl std::fmt::Display) -> Error {
    Error::Corrupt(StoreError::new(format!("memory item `{id}`: {what}")))
}

/// Milliseconds since the epoch, as a time.
pub(crate) fn time(id: &str, ms: i64) -> Result<DateTime<Utc>, Error> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| corrupt_row(id, format!("bad time {ms}")))
}

/// A time as milliseconds since the epoch.
pub(crate) fn ms(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

impl ItemRow {
    fn kind(&self) -> Result<ItemKind, Error> {
        ItemKind::parse(&self.kind).ok_or_else(|| corrupt_row(&self.id, format!("unknown kind `{}`", self.kind)))
    }

    fn importance(&self) -> Result<f32, Error> {
        let v = self.importance as f32;
        if v.is_finite() && (0.0..=1.0).contains(&v) {
            Ok(v)
        } else {
            Err(corrupt_row(&self.id, format!("importance {} out of 0..1", self.importance)))
        }
    }

    /// The row as a search result.
    pub(crate) fn into_item(self) -> Result<MemoryItem, Error> {
        let kind = self.kind()?;
        if kind == ItemKind::Episode {
            // The episode's details must decode too: a search never returns half a row.
            self.episode_data()?;
        }
        Ok(MemoryItem {
            importance: self.importance()?,
            recorded_at: time(&self.id, self.recorded_at)?,
            kind,
            text: self.text,
            id: self.id,
        })
    }

    fn episode_data(&self) -> Result<EpisodeData, Error> {
        serde_json::from_str(&self.data).map_err(|e| corrupt_row(&self.id, format!("episode data: {e}")))
    }

    /// The row as an episode.
    pub(crate) fn into_episode(self) -> Result<Episode, Error> {
        if self.kind()? != ItemKind::Episode {
            return Err(corrupt_row(&self.id, "expected an episode"));
        }
        let data = self.episode_data()?;
        Ok(Episode {
            recorded_at: time(&self.id, self.recorded_at)?,
            run_id: self.run_id.clone().ok_or_else(|| corrupt_row(&self.id, "episode without a run id"))?,
            session_id: data.session_id,
            prompt: data.prompt,
            answer: data.answer,
            tools: data.tools,
            extracted: self.extracted,
            id: self.id,
        })
    }

    /// The row as a fact.
    pub(crate) fn into_fact(self) -> Result<Fact, Error> {
        if self.kind()? != ItemKind::Fact {
            return Err(corrupt_row(&self.id, "expected a fact"));
        }
        Ok(Fact {
            importance: self.importance()?,
            valid_from: time(&self.id, self.valid_from)?,
            valid_to: self.valid_to.map(|t| time(&self.id, t)).transpose()?,
            recorded_at: time(&self.id, self.recorded_at)?,
            key: self.key,
            statement: self.text,
            superseded_by: self.superseded_by,
            source_run: self.source_run,
            id: self.id,
        })
    }
}

/// An owner's key in a text index: a fixed token derived from (user, agent), so a full-text query
/// can be confined to the owner inside the index itself.
pub(crate) fn owner_token(user: &str, agent: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(user.as_bytes());
    h.update([0u8]);
    h.update(agent.as_bytes());
    let digest = h.finalize();
    format!("o{}", hex::encode(&digest[..12]))
}

/// Keeps the `k` best (highest score) of a stream of scored values.
pub(crate) struct TopK<T> {
    k: usize,
    items: Vec<(f32, T)>,
}

impl<T> TopK<T> {
    pub(crate) fn new(k: usize) -> Self {
        TopK { k, items: Vec::with_capacity(k.min(1024) + 1) }
    }

    /// Offers a value; kept if it is among the best `k` so far.
    pub(crate) fn push(&mut self, score: f32, value: T) {
        if self.k == 0 || !score.is_finite() {
            return;
        }
        if self.items.len() == self.k {
            match self.items.last() {
                Some((worst, _)) if score <= *worst => return,
                _ => {}
            }
            self.items.pop();
        }
        let at = self.items.partition_point(|(s, _)| *s >= score);
        self.items.insert(at, (score, value));
    }

    /// The kept values, best first.
    pub(crate) fn into_sorted(self) -> Vec<(f32, T)> {
        self.items
    }
}
