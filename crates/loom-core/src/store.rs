//! The store protocols: where sessions, history and transcripts live ([`SessionStore`]), and the
//! memory slot ([`Memory`]).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::message::Message;
use crate::run::{RunInput, RunState, Scope, Transcript};

/// Which session: its id, within the user who owns it.
///
/// A session belongs to the user who opened it, or to no user. The same id under two users names
/// two different sessions, with their own history and runs: stores key every lookup by both.
///
/// ```
/// use loom_core::store::SessionKey;
///
/// let alice = SessionKey::of_user("alice", "chat-1");
/// let bob = SessionKey::of_user("bob", "chat-1");
/// assert_ne!(alice, bob);
/// assert_eq!(SessionKey::new("chat-1").user_id, None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey<'a> {
    /// The owner, if the session has one.
    pub user_id: Option<&'a str>,
    /// The session id, unique within its owner.
    pub session_id: &'a str,
}

impl<'a> SessionKey<'a> {
    /// The session `session_id` of no user.
    pub fn new(session_id: &'a str) -> Self {
        SessionKey { user_id: None, session_id }
    }

    /// The session `session_id` of the user `user_id`.
    pub fn of_user(user_id: &'a str, session_id: &'a str) -> Self {
        SessionKey { user_id: Some(user_id), session_id }
    }

    /// The session `session_id` of `user_id`, if any.
    pub fn scoped(user_id: Option<&'a str>, session_id: &'a str) -> Self {
        SessionKey { user_id, session_id }
    }

    /// The key as owned strings (user, id), to keep or to move into a store's call.
    pub fn to_owned_parts(&self) -> (Option<String>, String) {
        (self.user_id.map(str::to_string), self.session_id.to_string())
    }

    /// The owner as the SQL stores keep it: the user id, or `""` for no user (user ids are never
    /// empty: the agent refuses an empty one).
    pub fn owner(&self) -> &'a str {
        self.user_id.unwrap_or("")
    }
}

/// A session as stored.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The id (unique within its user).
    pub id: String,
    /// The user who owns the session, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Business metadata (merged on each open).
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Extension fields.
    #[serde(default)]
    pub extensions: serde_json::Map<String, serde_json::Value>,
}

impl SessionRecord {
    /// The session's key: its id within its user.
    pub fn key(&self) -> SessionKey<'_> {
        SessionKey { user_id: self.user_id.as_deref(), session_id: &self.id }
    }
}

/// A session as a search of the store finds it ([`SessionStore::find_sessions`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredSession {
    /// The session (its owner in `user_id`).
    pub record: SessionRecord,
    /// Whether it was closed.
    pub closed: bool,
    /// When it was last opened or written.
    pub updated_at: DateTime<Utc>,
}

/// A line of a session's run list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// The run.
    pub run_id: String,
    /// The session.
    pub session_id: String,
    /// The user.
    pub user_id: Option<String>,
    /// The state.
    pub state: RunState,
    /// The input.
    pub input: RunInput,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended, if it has.
    pub finished_at: Option<DateTime<Utc>>,
}

/// A summary of the start of a session's conversation, written when a run compacted its context:
/// the session's next run starts from it instead of the first `covers` messages of the history.
/// The history itself stays whole.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSummary {
    /// The summary (decisions, facts, open tasks), as the model receives it.
    pub text: String,
    /// How many messages at the start of the session's history it stands for.
    pub covers: usize,
    /// The run that wrote it.
    pub run_id: String,
    /// When it was written.
    pub created_at: DateTime<Utc>,
}

/// Where sessions, their conversation history and their runs' transcripts are kept.
///
/// Every session is named by a [`SessionKey`] (its id within its user): a store never returns one
/// user's session, history or runs for another user's key, even when the ids are the same.
#[async_trait::async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Creates the session, or merges `record`'s metadata and extensions into the stored one.
    async fn open_session(&self, record: &SessionRecord) -> Result<SessionRecord, Error>;

    /// The conversation so far: every earlier run's messages, oldest first.
    async fn history(&self, session: SessionKey<'_>) -> Result<Vec<Message>, Error>;

    /// The stored session, if any.
    async fn get_session(&self, session: SessionKey<'_>) -> Result<Option<SessionRecord>, Error>;

    /// Appends one run's messages to the conversation. Idempotent per run: a second call for the
    /// same run (a resumed run persisting again) adds nothing.
    async fn append_history(&self, session: SessionKey<'_>, run_id: &str, messages: &[Message]) -> Result<(), Error>;

    /// Saves a run's transcript (replacing an earlier save of the same run).
    async fn save_run(&self, transcript: Arc<Transcript>) -> Result<(), Error>;

    /// Saves a run that ended: its transcript and, when given, the messages it adds to the
    /// session's conversation, in one step where the store can (the SQL stores: one transaction).
    /// By default: [`SessionStore::save_run`], then [`SessionStore::append_history`].
    async fn save_finished_run(&self, transcript: Arc<Transcript>, history: Option<&[Message]>) -> Result<(), Error> {
        let owner = transcript.clone();
        // Each part is attempted even if the other fails; the first error is returned.
        let saved = self.save_run(transcript).await;
        let appended = match history {
            Some(messages) => self.append_history(owner.session_key(), &owner.run_id, messages).await,
            None => Ok(()),
        };
        saved.and(appended)
    }

    /// A run's transcript: `None` for a run of another session (or of the same id under another
    /// user).
    async fn get_run(&self, session: SessionKey<'_>, run_id: &str) -> Result<Option<Arc<Transcript>>, Error>;

    /// Several runs' transcripts at once, for a listing: each `(session, run_id)` as
    /// [`SessionStore::get_run`] reads it (a run of another session or user is left out), in no
    /// particular order; their `events` may be left empty (the SQL stores read the transcripts in
    /// one query and no events). By default: one [`SessionStore::get_run`] per run.
    async fn get_runs(&self, runs: &[(SessionKey<'_>, &str)]) -> Result<Vec<Arc<Transcript>>, Error> {
        let mut out = Vec::with_capacity(runs.len());
        for (key, run_id) in runs {
            if let Some(t) = self.get_run(*key, run_id).await? {
                out.push(t);
            }
        }
        Ok(out)
    }

    /// The session's finished runs, oldest first.
    async fn list_runs(&self, session: SessionKey<'_>) -> Result<Vec<RunSummary>, Error>;

    /// Marks the session closed; its data stays readable.
    async fn close_session(&self, session: SessionKey<'_>) -> Result<(), Error>;

    /// Takes the session's run lock for `holder` until `until_ms` (milliseconds since the epoch),
    /// or renews it when `holder` has it: `Ok(false)` while another holder has it (unexpired, and
    /// not a process on this machine that is gone, see [`crate::journal::owner_is_gone`]).
    ///
    /// A session's runs run one after another: within one process the agent queues them; a store
    /// shared by processes serializes them across processes with this lock, so each run sees the
    /// earlier runs' history. The default (a store only one process uses) always grants it.
    async fn lock_session(&self, session: SessionKey<'_>, holder: &str, until_ms: i64) -> Result<bool, Error> {
        let _ = (session, holder, until_ms);
        Ok(true)
    }

    /// Releases the session's run lock if `holder` has it.
    async fn unlock_session(&self, session: SessionKey<'_>, holder: &str) -> Result<(), Error> {
        let _ = (session, holder);
        Ok(())
    }

    /// Takes the run lock of `record`'s session for `holder` (as [`SessionStore::lock_session`])
    /// and, when it is granted, opens the session with `record` (as
    /// [`SessionStore::open_session`]), in one step where the store can (the SQL stores: one
    /// transaction). By default: the two calls.
    async fn lock_and_open(&self, record: &SessionRecord, holder: &str, until_ms: i64) -> Result<bool, Error> {
        if !self.lock_session(record.key(), holder, until_ms).await? {
            return Ok(false);
        }
        self.open_session(record).await?;
        Ok(true)
    }

    /// Keeps `summary` as the session's summary, replacing an earlier one. The default (a store
    /// without summaries) keeps nothing, and its sessions' runs replay the whole history.
    async fn save_summary(&self, session: SessionKey<'_>, summary: &SessionSummary) -> Result<(), Error> {
        let _ = (session, summary);
        Ok(())
    }

    /// The session's summary, if a run wrote one (`None` for another user's session).
    async fn summary(&self, session: SessionKey<'_>) -> Result<Option<SessionSummary>, Error> {
        let _ = session;
        Ok(None)
    }

    /// An id of the database handle this store writes through, when a journal can share it (see
    /// [`crate::journal::Journal::database_id`]): the same id means a journal's final commit may
    /// save this store's transcripts and history in its own transaction. `None` by default.
    fn session_database_id(&self) -> Option<usize> {
        None
    }

    /// The sessions whose owner's id starts with `owner_prefix` (a service's tenant, `acme/`),
    /// of id `session_id` when given, most recently written first, at most `limit`: how a
    /// service finds a tenant's session without knowing its user. The default (a store that cannot
    /// search) finds nothing.
    async fn find_sessions(
        &self,
        owner_prefix: &str,
        session_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredSession>, Error> {
        let _ = (owner_prefix, session_id, limit);
        Ok(Vec::new())
    }
}

/// A shared session store is a session store (keep a handle to read it while the agent writes).
#[async_trait::async_trait]
impl<T: SessionStore + ?Sized> SessionStore for Arc<T> {
    async fn open_session(&self, record: &SessionRecord) -> Result<SessionRecord, Error> {
        (**self).open_session(record).await
    }
    async fn history(&self, session: SessionKey<'_>) -> Result<Vec<Message>, Error> {
        (**self).history(session).await
    }
    async fn get_session(&self, session: SessionKey<'_>) -> Result<Option<SessionRecord>, Error> {
        (**self).get_session(session).await
    }
    async fn append_history(&self, session: SessionKey<'_>, run_id: &str, messages: &[Message]) -> Result<(), Error> {
        (**self).append_history(session, run_id, messages).await
    }
    async fn save_run(&self, transcript: Arc<Transcript>) -> Result<(), Error> {
        (**self).save_run(transcript).await
    }
    async fn save_finished_run(&self, transcript: Arc<Transcript>, history: Option<&[Message]>) -> Result<(), Error> {
        (**self).save_finished_run(transcript, history).await
    }
    async fn get_run(&self, session: SessionKey<'_>, run_id: &str) -> Result<Option<Arc<Transcript>>, Error> {
        (**self).get_run(session, run_id).await
    }
    async fn get_runs(&self, runs: &[(SessionKey<'_>, &str)]) -> Result<Vec<Arc<Transcript>>, Error> {
        (**self).get_runs(runs).await
    }
    async fn list_runs(&self, session: SessionKey<'_>) -> Result<Vec<RunSummary>, Error> {
        (**self).list_runs(session).await
    }
    async fn close_session(&self, session: SessionKey<'_>) -> Result<(), Error> {
        (**self).close_session(session).await
    }
    async fn lock_session(&self, session: SessionKey<'_>, holder: &str, until_ms: i64) -> Result<bool, Error> {
        (**self).lock_session(session, holder, until_ms).await
    }
    async fn unlock_session(&self, session: SessionKey<'_>, holder: &str) -> Result<(), Error> {
        (**self).unlock_session(session, holder).await
    }
    async fn lock_and_open(&self, record: &SessionRecord, holder: &str, until_ms: i64) -> Result<bool, Error> {
        (**self).lock_and_open(record, holder, until_ms).await
    }
    async fn save_summary(&self, session: SessionKey<'_>, summary: &SessionSummary) -> Result<(), Error> {
        (**self).save_summary(session, summary).await
    }
    async fn summary(&self, session: SessionKey<'_>) -> Result<Option<SessionSummary>, Error> {
        (**self).summary(session).await
    }
    fn session_database_id(&self) -> Option<usize> {
        (**self).session_database_id()
    }

    async fn find_sessions(
        &self,
        owner_prefix: &str,
        session_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredSession>, Error> {
        (**self).find_sessions(owner_prefix, session_id, limit).await
    }
}

/// Whether a session lock held by `holder` until `expires_ms` may be taken by `claimant` at
/// `now_ms`: it is free, expired, the claimant's own, or its holder's process is gone. Holders
/// are `LEASE_OWNER#RUN_ID`.
pub fn may_lock_session(holder: Option<&str>, expires_ms: Option<i64>, claimant: &str, now_ms: i64) -> bool {
    match (holder, expires_ms) {
        (Some(holder), Some(expires)) if expires > now_ms && holder != claimant => {
            let owner = holder.split_once('#').map_or(holder, |(owner, _)| owner);
            crate::journal::owner_is_gone(owner)
        }
        _ => true,
    }
}

/// The memory slot: what a run recalls before it starts and records when it ends.
#[async_trait::async_trait]
pub trait Memory: Send + Sync + 'static {
    /// Messages to add after the context and before the history (for example, known facts), and
    /// the items they hold (for the run's `memory.recalled` event).
    async fn recall(&self, scope: &Scope, input: &RunInput) -> Result<Recalled, Error>;

    /// Records a finished run. Background work it starts (fact extraction) must not delay it.
    async fn remember(&self, scope: &Scope, transcript: &Transcript) -> Result<(), Error>;

    /// Waits for the background work started by [`Memory::remember`]. Nothing by default.
    async fn flush(&self) -> Result<(), Error> {
        Ok(())
    }
}

/// A shared memory is a memory.
#[async_trait::async_trait]
impl<M: Memory + ?Sized> Memory for Arc<M> {
    async fn recall(&self, scope: &Scope, input: &RunInput) -> Result<Recalled, Error> {
        (**self).recall(scope, input).await
    }
    async fn remember(&self, scope: &Scope, transcript: &Transcript) -> Result<(), Error> {
        (**self).remember(scope, transcript).await
    }
    async fn flush(&self) -> Result<(), Error> {
        (**self).flush().await
    }
}

/// What [`Memory::recall`] returns: the messages to seed, and the items behind them. A plain list
/// of messages converts into one (with no items).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recalled {
    /// Messages to add after the context and before the history.
    pub messages: Vec<Message>,
    /// The recalled items, for the `memory.recalled` event (none: no event).
    pub items: Vec<crate::event::RecalledItem>,
}

/// What an agent was given as its memory: a [`Memory`] value, or a memory store URL.
pub enum MemoryRef {
    /// A memory value, used as it is.
    Value(Arc<dyn Memory>),
    /// A store URL: `"memory"`, `"sqlite:./bot.db"`, `"postgres://…"`.
    Url(String),
}

impl std::fmt::Debug for MemoryRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MemoryRef::Value(_) => f.write_str("MemoryRef::Value(..)"),
            MemoryRef::Url(url) => f.debug_tuple("MemoryRef::Url").field(&url.split('@').next_back()).finish(),
        }
    }
}

/// Something that resolves into an agent's memory: any [`Memory`], or a store URL —
/// `"memory"` (in process), `"sqlite:./bot.db"`, `"postgres://…"`.
pub trait IntoMemory {
    /// The memory, or the URL naming its store.
    fn into_memory_ref(self) -> MemoryRef;
}

impl<M: Memory> IntoMemory for M {
    fn into_memory_ref(self) -> MemoryRef {
        MemoryRef::Value(Arc::new(self))
    }
}

impl IntoMemory for &str {
    fn into_memory_ref(self) -> MemoryRef {
        MemoryRef::Url(self.to_string())
    }
}

impl IntoMemory for String {
    fn into_memory_ref(self) -> MemoryRef {
        MemoryRef::Url(self)
    }
}

impl From<Vec<Message>> for Recalled {
    fn from(messages: Vec<Message>) -> Self {
        Recalled { messages, items: Vec::new() }
    }
}
