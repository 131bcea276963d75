use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use super::{RunSummary, SessionKey, SessionRecord, SessionStore, SessionSummary, StoredSession};
use crate::error::Error;
use crate::message::Message;
use crate::run::Transcript;

/// The default session store: in process memory, bounded. When more than `max_sessions` sessions
/// are held, the least recently used one is dropped (O(log n) per operation), so a long-lived
/// service does not grow without bound. Nothing survives a restart.
#[derive(Debug)]
pub struct InMemorySessionStore {
    inner: Mutex<State>,
    max_sessions: usize,
}

/// A session's owned key: (user, id).
type Key = (Option<String>, String);

fn owned(key: SessionKey<'_>) -> Key {
    key.to_owned_parts()
}

#[derive(Debug, Default)]
struct State {
    clock: u64,
    sessions: HashMap<Key, Entry>,
    /// Last use → session key: the eviction order.
    recency: BTreeMap<u64, Key>,
}

impl State {
    /// The session's entry, created if needed, marked as used now.
    fn touch(&mut self, key: SessionKey<'_>) -> &mut Entry {
        self.clock += 1;
        let now = self.clock;
        let key = owned(key);
        let entry = self.sessions.entry(key.clone()).or_insert_with(|| Entry {
            record: SessionRecord { id: key.1.clone(), user_id: key.0.clone(), ..SessionRecord::default() },
            ..Entry::default()
        });
        if entry.last_used != 0 {
            self.recency.remove(&entry.last_used);
        }
        entry.last_used = now;
        entry.updated_at = chrono::Utc::now();
        self.recency.insert(now, key);
        entry
    }

    fn get(&self, key: SessionKey<'_>) -> Option<&Entry> {
        self.sessions.get(&owned(key))
    }

    fn evict(&mut self, max: usize) {
        while self.sessions.len() > max {
            let Some((_, id)) = self.recency.pop_first() else { break };
            self.sessions.remove(&id);
        }
    }
}

#[derive(Debug, Default)]
struct Entry {
    record: SessionRecord,
    history: Vec<Message>,
    /// Runs whose messages are in `history` (appending is idempotent per run).
    appended: std::collections::HashSet<String>,
    runs: Vec<Arc<Transcript>>,
    last_used: u64,
    /// When it was last written.
    updated_at: chrono::DateTime<chrono::Utc>,
    closed: bool,
    /// The summary a compacting run left for the next one.
    summary: Option<SessionSummary>,
}

impl InMemorySessionStore {
    /// A store holding at most 10,000 sessions.
    pub fn new() -> Self {
        Self::with_capacity(10_000)
    }

    /// A store holding at most `max_sessions` sessions.
    pub fn with_capacity(max_sessions: usize) -> Self {
        InMemorySessionStore { inner: Mutex::new(State::default()), max_sessions: max_sessions.max(1) }
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> Result<T, Error> {
        let mut guard = self.inner.lock().map_err(|_| Error::Store("in-memory session store lock poisoned".into()))?;
        Ok(f(&mut guard))
    }
}

impl Default for InMemorySessionStore {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait::async_trait]
impl SessionStore for InMemorySessionStore {
    async fn open_session(&self, record: &SessionRecord) -> Result<SessionRecord, Error> {
        let max = self.max_sessions;
        self.with_state(|s| {
            let entry = s.touch(record.key());
            entry.closed = false;
            for (k, v) in &record.metadata {
                entry.record.metadata.insert(k.clone(), v.clone());
            }
            for (k, v) in &record.extensions {
                entry.record.extensions.insert(k.clone(), v.clone());
            }
            let out = entry.record.clone();
            s.evict(max);
            out
        })
    }

    async fn history(&self, session: SessionKey<'_>) -> Result<Vec<Message>, Error> {
        self.with_state(|s| {
            if s.get(session).is_none() {
                return Vec::new();
            }
            s.touch(session).history.clone()
        })
    }

    async fn get_session(&self, session: SessionKey<'_>) -> Result<Option<SessionRecord>, Error> {
        self.with_state(|s| s.get(session).map(|e| e.record.clone()))
    }

    async fn append_history(&self, session: SessionKey<'_>, run_id: &str, messages: &[Message]) -> Result<(), Error> {
        let max = self.max_sessions;
        self.with_state(|s| {
            let entry = s.touch(session);
            if entry.appended.insert(run_id.to_string()) {
                entry.history.extend_from_slice(messages);
            }
            s.evict(max);
        })
    }

    async fn save_run(&self, transcript: Arc<Transcript>) -> Result<(), Error> {
        let max = self.max_sessions;
        self.with_state(|s| {
            let runs = &mut s.touch(transcript.session_key()).runs;
            match runs.iter_mut().find(|t| t.run_id == transcript.run_id) {
                Some(existing) => *existing = transcript.clone(),
                None => runs.push(transcript.clone()),
            }
            s.evict(max);
        })
    }

    async fn get_run(&self, session: SessionKey<'_>, run_id: &str) -> Result<Option<Arc<Transcript>>, Error> {
        self.with_state(|s| s.get(session).and_then(|e| e.runs.iter().find(|t| t.run_id == run_id).cloned()))
    }

    async fn list_runs(&self, session: SessionKey<'_>) -> Result<Vec<RunSummary>, Error> {
        self.with_state(|s| s.get(session).map(|e| e.runs.iter().map(|t| t.summary()).collect()).unwrap_or_default())
    }

    async fn close_session(&self, session: SessionKey<'_>) -> Result<(), Error> {
        self.with_state(|s| {
            if let Some(e) = s.sessions.get_mut(&owned(session)) {
                e.closed = true;
            }
        })
    }

    async fn save_summary(&self, session: SessionKey<'_>, summary: &SessionSummary) -> Result<(), Error> {
        let max = self.max_sessions;
        self.with_state(|s| {
            s.touch(session).summary = Some(summary.clone());
            s.evict(max);
        })
    }

    async fn summary(&self, session: SessionKey<'_>) -> Result<Option<SessionSummary>, Error> {
        self.with_state(|s| s.get(session).and_then(|e| e.summary.clone()))
    }

    async fn find_sessions(
        &self,
        owner_prefix: &str,
        session_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredSession>, Error> {
        self.with_state(|s| {
            // Most recently used first: the recency index, newest to oldest.
            s.recency
                .values()
                .rev()
                .filter(|(user, id)| {
                    user.as_deref().unwrap_or("").starts_with(owner_prefix)
                        && session_id.is_none_or(|s| s == id.as_str())
                })
                .filter_map(|key| s.sessions.get(key))
                .take(limit)
                .map(|e| StoredSession { record: e.record.clone(), closed: e.closed, updated_at: e.updated_at })
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn evicts_the_least_recently_used_session_one_at_a_time() {
        let store = InMemorySessionStore::with_capacity(3);
        for id in ["a", "b", "c"] {
            store.append_history(SessionKey::new(id), "r", &[Message::user(id)]).await.unwrap();
        }
        // Touch "a": "b" is now the least recently used.
        assert_eq!(store.history(SessionKey::new("a")).await.unwrap().len(), 1);
        store.append_history(SessionKey::new("d"), "r", &[Message::user("d")]).await.unwrap();
        assert!(store.history(SessionKey::new("b")).await.unwrap().is_empty(), "b was evicted");
        for id in ["a", "c", "d"] {
            assert_eq!(store.history(SessionKey::new(id)).await.unwrap().len(), 1, "{id} kept");
        }
        let state = store.inner.lock().unwrap();
        assert_eq!(state.sessions.len(), 3);
        assert_eq!(state.recency.len(), 3, "the recency index matches the sessions");
    }
}
