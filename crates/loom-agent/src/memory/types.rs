//! The data memory keeps: episodes, facts and working blocks, each owned by one user (and
//! optionally one agent).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Whose memory: a user, and optionally an agent name within that user (`""`: shared by every
/// agent of the user). Every store call takes one, and every query filters by it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Owner {
    /// The user (never empty).
    pub user: String,
    /// The agent, or `""` for memory every agent of the user shares.
    pub agent: String,
}

impl Owner {
    /// The memory of `user`, shared by all agents.
    ///
    /// # Errors
    /// An empty user id is [`Error::Config`].
    pub fn user(user: impl Into<String>) -> Result<Owner, Error> {
        Owner::of(user, "")
    }

    /// The memory of `user` kept by the agent named `agent` (`""`: shared).
    ///
    /// # Errors
    /// An empty user id is [`Error::Config`].
    pub fn of(user: impl Into<String>, agent: impl Into<String>) -> Result<Owner, Error> {
        let user = user.into();
        if user.trim().is_empty() {
            return Err(Error::Config("a memory owner needs a non-empty user id".into()));
        }
        Ok(Owner { user, agent: agent.into() })
    }
}

/// What kind of item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemKind {
    /// A finished run's exchange.
    Episode,
    /// A statement about the user or the world.
    Fact,
}

impl ItemKind {
    /// `episode` or `fact`.
    pub fn as_str(self) -> &'static str {
        match self {
            ItemKind::Episode => "episode",
            ItemKind::Fact => "fact",
        }
    }

    /// Parses `episode` or `fact`.
    pub fn parse(s: &str) -> Option<ItemKind> {
        match s {
            "episode" => Some(ItemKind::Episode),
            "fact" => Some(ItemKind::Fact),
            _ => None,
        }
    }
}

/// A searchable item (an episode, or a fact that is still valid), as search and recall return it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryItem {
    /// The id.
    pub id: String,
    /// Episode or fact.
    pub kind: ItemKind,
    /// The text that is searched and shown.
    pub text: String,
    /// How much it matters, 0 to 1.
    pub importance: f32,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
}

/// A finished run's exchange.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    /// The id.
    pub id: String,
    /// The run.
    pub run_id: String,
    /// The session.
    pub session_id: String,
    /// What the user asked.
    pub prompt: String,
    /// What the agent answered.
    pub answer: String,
    /// The tools it used, such as `search ×2, read_file`.
    pub tools: String,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
    /// Whether facts were extracted from it (or extraction is off for it).
    pub extracted: bool,
}

impl Episode {
    /// The text that is searched: prompt, answer and tools.
    pub fn text(&self) -> String {
        episode_text(&self.prompt, &self.answer, &self.tools)
    }
}

/// The searchable text of an episode.
pub(crate) fn episode_text(prompt: &str, answer: &str, tools: &str) -> String {
    let mut text = format!("User: {}\nAssistant: {}", clip(prompt, 600), clip(answer, 600));
    if !tools.is_empty() {
        text.push_str(&format!("\nTools: {tools}"));
    }
    text
}

/// `text` cut to at most `max` characters (with `…`).
pub(crate) fn clip(text: &str, max: usize) -> String {
    let text = text.trim();
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// An episode to record.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEpisode {
    /// The run (an owner has at most one episode per run).
    pub run_id: String,
    /// The session.
    pub session_id: String,
    /// What the user asked.
    pub prompt: String,
    /// What the agent answered.
    pub answer: String,
    /// The tools used.
    pub tools: String,
    /// Whether facts still have to be extracted from it (`false`: nothing to do).
    pub pending_extraction: bool,
}

/// A statement about the user or the world, bi-temporal: when it holds (`valid_from` until
/// `valid_to`) and when memory learned it (`recorded_at`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fact {
    /// The id.
    pub id: String,
    /// What it is about (`home_city`, `favourite_language`): a newer fact with the same key
    /// supersedes the older one.
    pub key: Option<String>,
    /// The statement.
    pub statement: String,
    /// How much it matters, 0 to 1.
    pub importance: f32,
    /// Since when it holds.
    pub valid_from: DateTime<Utc>,
    /// Until when it held (`None`: still holds).
    pub valid_to: Option<DateTime<Utc>>,
    /// When memory learned it.
    pub recorded_at: DateTime<Utc>,
    /// The fact that replaced it, if one did.
    pub superseded_by: Option<String>,
    /// The run it was extracted from, if any.
    pub source_run: Option<String>,
}

/// A fact to remember.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NewFact {
    /// What it is about; a valid fact of the same owner with the same key is superseded.
    #[serde(default)]
    pub key: Option<String>,
    /// The statement.
    pub statement: String,
    /// How much it matters, 0 to 1 (default 0.5).
    #[serde(default = "half")]
    pub importance: f32,
    /// The id of a fact this one replaces (it must be the same owner's; another's is ignored).
    #[serde(default)]
    pub supersedes: Option<String>,
    /// Since when it holds (default: now).
    #[serde(default)]
    pub valid_from: Option<DateTime<Utc>>,
    /// The run it came from.
    #[serde(default)]
    pub source_run: Option<String>,
}

fn half() -> f32 {
    0.5
}

impl NewFact {
    /// A fact with this statement (no key, importance 0.5).
    pub fn new(statement: impl Into<String>) -> Self {
        NewFact { statement: statement.into(), importance: 0.5, ..NewFact::default() }
    }

    /// The fact's key (subject).
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Its importance, 0 to 1.
    pub fn importance(mut self, importance: f32) -> Self {
        self.importance = importance;
        self
    }

    /// The fact it replaces.
    pub fn supersedes(mut self, id: impl Into<String>) -> Self {
        self.supersedes = Some(id.into());
        self
    }

    /// Since when it holds.
    pub fn valid_from(mut self, at: DateTime<Utc>) -> Self {
        self.valid_from = Some(at);
        self
    }

    /// Checks and normalizes: a non-empty statement, importance clamped to 0..=1, an empty key
    /// dropped, the key lower-cased.
    pub(crate) fn normalized(mut self) -> Result<NewFact, Error> {
        self.statement = self.statement.trim().to_string();
        if self.statement.is_empty() {
            return Err(Error::Config("a fact needs a non-empty statement".into()));
        }
        self.importance = if self.importance.is_finite() { self.importance.clamp(0.0, 1.0) } else { 0.5 };
        self.key = self.key.map(|k| k.trim().to_lowercase()).filter(|k| !k.is_empty());
        self.supersedes = self.supersedes.filter(|s| !s.is_empty());
        Ok(self)
    }
}

/// A named, size-capped text block that is always in context (a user profile, a scratchpad).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Block {
    /// Its name (letters, digits, `_`, `-`, `.`; at most 64 characters).
    pub name: String,
    /// Its text (at most the store's block limit).
    pub text: String,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// The longest block name.
pub const MAX_BLOCK_NAME: usize = 64;

/// Checks a block name.
pub(crate) fn check_block_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.chars().count() <= MAX_BLOCK_NAME
        && name.chars().all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!("bad block name `{name}`: 1 to {MAX_BLOCK_NAME} letters, digits, `_`, `-` or `.`")))
    }
}

/// What to forget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Forget {
    /// One fact or episode, by id.
    Item(String),
    /// Every fact and episode recorded in `[from, to)`.
    Range(DateTime<Utc>, DateTime<Utc>),
    /// Everything about the owner: episodes, facts (with their history), blocks, vectors and
    /// text-index entries — the right to erasure.
    All,
}

/// A vector and the embedder that made it.
#[derive(Clone, Debug, PartialEq)]
pub struct Embedding {
    /// [`loom_core::embed::Embedder::model_id`].
    pub model: String,
    /// The vector (L2-normalized).
    pub vector: Vec<f32>,
}

/// Cosine similarity of two L2-normalized vectors (their dot product); 0 for lengths that differ.
pub(crate) fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return 0.0;
    }
    let mut sum = [0f32; 8];
    let chunks = a.len() / 8;
    for i in 0..chunks {
        for j in 0..8 {
            sum[j] += a[i * 8 + j] * b[i * 8 + j];
        }
    }
    let mut total: f32 = sum.iter().sum();
    for i in chunks * 8..a.len() {
        total += a[i] * b[i];
    }
    total
}

/// A vector as the bytes the SQL stores keep: little-endian `f32`s.
pub(crate) fn vector_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Bytes back to a vector; `None` when the length is not a multiple of 4.
pub(crate) fn bytes_vector(b: &[u8]) -> Option<Vec<f32>> {
    if !b.len().is_multiple_of(4) {
        return None;
    }
    Some(b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

/// The words of a text for full-text search: lower-cased runs of letters and digits, at most 32.
pub(crate) fn query_terms(text: &str) -> Vec<String> {
    let mut terms: Vec<String> = Vec::new();
    for word in text.split(|c: char| !c.is_alphanumeric()) {
        if word.is_empty() {
            continue;
        }
        let word = word.to_lowercase();
        if STOP_WORDS.contains(&word.as_str()) || terms.contains(&word) {
            continue;
        }
        terms.push(word);
        if terms.len() == 32 {
            break;
        }
    }
    terms
}

/// Words too common to search for.
const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "do", "does", "did", "for", "from", "has", "have", "i", "in",
    "is", "it", "its", "me", "my", "of", "on", "or", "that", "the", "this", "to", "was", "what", "when", "where",
    "which", "who", "why", "how", "with", "you", "your", "we", "our", "can", "could", "would", "should", "will",
    "about", "there", "their", "they", "them", "he", "she", "his", "her", "so", "if", "not", "no", "yes",
];
