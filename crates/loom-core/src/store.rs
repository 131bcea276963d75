//! The store protocols: where sessions, history and transcripts live ([`SessionStore`]), and the
//! memory slot ([`Memory`]).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::message::Message;
use crate::run::{RunInput, RunState, Scope, Transcript};

/// A session as stored.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The id.
    pub id: String,
    /// Business metadata (merged on each open).
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Extension fields.
    #[serde(default)]
    pub extensions: serde_json::Map<String, serde_json::Value>,
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

/// Where sessions, their conversation history and their runs' transcripts are kept.
#[async_trait::async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Creates the session, or merges `record`'s metadata and extensions into the stored one.
    async fn open_session(&self, record: &SessionRecord) -> Result<SessionRecord, Error>;

    /// The conversation so far: every earlier run's messages, oldest first.
    async fn history(&self, session_id: &str) -> Result<Vec<Message>, Error>;

    /// The stored session, if any.
    async fn get_session(&self, session_id: &str) -> Result<Option<SessionRecord>, Error>;

    /// Appends one run's messages to the conversation. Idempotent per run: a second call for the
    /// same run (a resumed run persisting again) adds nothing.
    async fn append_history(&self, session_id: &str, run_id: &str, messages: &[Message]) -> Result<(), Error>;

    /// Saves a run's transcript (replacing an earlier save of the same run).
    async fn save_run(&self, transcript: Arc<Transcript>) -> Result<(), Error>;

    /// Saves a run that ended: its transcript and, when given, the messages it adds to the
    /// session's conversation, in one step where the store can (the SQL stores: one transaction).
    /// By default: [`SessionStore::save_run`], then [`SessionStore::append_history`].
    async fn save_finished_run(&self, transcript: Arc<Transcript>, history: Option<&[Message]>) -> Result<(), Error> {
        let (session_id, run_id) = (transcript.session_id.clone(), transcript.run_id.clone());
        // Each part is attempted even if the other fails; the first error is returned.
        let saved = self.save_run(transcript).await;
        let appended = match history {
            Some(messages) => self.append_history(&session_id, &run_id, messages).await,
            None => Ok(()),
        };
        saved.and(appended)
    }

    /// A run's transcript.
    async fn get_run(&self, session_id: &str, run_id: &str) -> Result<Option<Arc<Transcript>>, Error>;

    /// The session's finished runs, oldest first.
    async fn list_runs(&self, session_id: &str) -> Result<Vec<RunSummary>, Error>;

    /// Marks the session closed; its data stays readable.
    async fn close_session(&self, session_id: &str) -> Result<(), Error>;
}

/// The memory slot: what a run recalls before it starts and records when it ends.
#[async_trait::async_trait]
pub trait Memory: Send + Sync + 'static {
    /// Messages to add after the context and before the history (for example, known facts).
    async fn recall(&self, scope: &Scope, input: &RunInput) -> Result<Vec<Message>, Error>;

    /// Records a finished run.
    async fn remember(&self, scope: &Scope, transcript: &Transcript) -> Result<(), Error>;
}
