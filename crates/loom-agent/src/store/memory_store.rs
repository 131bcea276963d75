use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{RunSummary, SessionRecord, SessionStore};
use crate::agent::Transcript;
use crate::error::Error;
use crate::message::Message;

/// The default session store: in process memory, bounded. When more than `max_sessions` sessions
/// are held, the least recently used tenth is dropped, so a long-lived service does not grow without
/// bound. Nothing survives a restart.
#[derive(Debug)]
pub struct InMemorySessionStore {
    inner: Mutex<State>,
    max_sessions: usize,
}

#[derive(Debug, Default)]
struct State {
    clock: u64,
    sessions: HashMap<String, Entry>,
}

#[derive(Debug, Default)]
struct Entry {
    record: SessionRecord,
    history: Vec<Message>,
    runs: Vec<Arc<Transcript>>,
    last_used: u64,
    closed: bool,
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
        guard.clock += 1;
        Ok(f(&mut guard))
    }

    fn evict(state: &mut State, max: usize) {
        if state.sessions.len() <= max {
            return;
        }
        let drop_count = (max / 10).max(1) + state.sessions.len() - max;
        let mut ages: Vec<(u64, String)> = state.sessions.iter().map(|(k, v)| (v.last_used, k.clone())).collect();
        ages.sort_unstable();
        for (_, key) in ages.into_iter().take(drop_count) {
            state.sessions.remove(&key);
        }
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
            let now = s.clock;
            let entry = s.sessions.entry(record.id.clone()).or_insert_with(|| Entry {
                record: SessionRecord { id: record.id.clone(), ..SessionRecord::default() },
                ..Entry::default()
            });
            entry.last_used = now;
            entry.closed = false;
            for (k, v) in &record.metadata {
                entry.record.metadata.insert(k.clone(), v.clone());
            }
            for (k, v) in &record.extensions {
                entry.record.extensions.insert(k.clone(), v.clone());
            }
            let out = entry.record.clone();
            Self::evict(s, max);
            out
        })
    }

    async fn history(&self, session_id: &str) -> Result<Vec<Message>, Error> {
        self.with_state(|s| {
            let now = s.clock;
            s.sessions
                .get_mut(session_id)
                .map(|e| {
                    e.last_used = now;
                    e.history.clone()
                })
                .unwrap_or_default()
        })
    }

    async fn append_history(&self, session_id: &str, messages: &[Message]) -> Result<(), Error> {
        self.with_state(|s| {
            let now = s.clock;
            let entry = s.sessions.entry(session_id.to_string()).or_default();
            entry.record.id = session_id.to_string();
            entry.last_used = now;
            entry.history.extend_from_slice(messages);
        })
    }

    async fn save_run(&self, transcript: Arc<Transcript>) -> Result<(), Error> {
        self.with_state(|s| {
            let now = s.clock;
            let entry = s.sessions.entry(transcript.session_id.clone()).or_default();
            entry.record.id = transcript.session_id.clone();
            entry.last_used = now;
            entry.runs.push(transcript);
        })
    }

    async fn get_run(&self, session_id: &str, run_id: &str) -> Result<Option<Arc<Transcript>>, Error> {
        self.with_state(|s| {
            s.sessions.get(session_id).and_then(|e| e.runs.iter().find(|t| t.run_id == run_id).cloned())
        })
    }

    async fn list_runs(&self, session_id: &str) -> Result<Vec<RunSummary>, Error> {
        self.with_state(|s| {
            s.sessions.get(session_id).map(|e| e.runs.iter().map(|t| t.summary()).collect()).unwrap_or_default()
        })
    }

    async fn close_session(&self, session_id: &str) -> Result<(), Error> {
        self.with_state(|s| {
            if let Some(e) = s.sessions.get_mut(session_id) {
                e.closed = true;
            }
        })
    }
}
