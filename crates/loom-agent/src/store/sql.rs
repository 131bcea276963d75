//! Row encoding and decoding shared by the SQL stores (SQLite and PostgreSQL): how runs, events,
//! journal entries, history and sessions become column values and come back, and the errors that
//! name the row that could not be read. The two backends differ only in their driver calls.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, RunError};
use crate::event::{Event, EventKind, RunEnded};
use crate::message::Message;
use crate::run::{RunInput, RunState, Transcript};
use crate::store::{JournalEntry, RunRecord, SessionKey, SessionRecord};

/// Stored data that cannot be read back: what it was, and the decoding error as the source.
pub(crate) fn corrupt(what: impl std::fmt::Display, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::corrupt(format!("{what}: {e}"), e)
}

/// A value as the JSON text a column holds.
pub(crate) fn json<T: Serialize>(value: &T) -> Result<String, Error> {
    serde_json::to_string(value).map_err(|e| Error::store(format!("serializing: {e}"), e))
}

/// A column's JSON text decoded; `what` names the row for the error.
pub(crate) fn decode<T: DeserializeOwned>(text: &str, what: impl FnOnce() -> String) -> Result<T, Error> {
    serde_json::from_str(text).map_err(|e| corrupt(what(), e))
}

/// A large prompt is stored once, in its run row's `input` column: every other row of the run that
/// holds it verbatim (the record's input and seeded message, the transcript's input and message,
/// `run.started`, the history's user message) holds this token instead, and starts with
/// [`STORED_ONCE`] so that only such rows are expanded. (The token is the JSON of the string
/// `"\0loom:input\0"`; a row that already holds it is stored as it is.)
const INPUT_TOKEN: &str = r#""\u0000loom:input\u0000""#;

/// The first character of a row stored with [`INPUT_TOKEN`] (JSON never starts with it).
const STORED_ONCE: char = '@';

/// Prompts from this size on (as JSON) are stored once.
const STORE_ONCE_AT: usize = 64 * 1024;

/// The JSON string literal of a prompt worth storing once, from the input column's JSON
/// (`{"prompt":"…"}`).
pub(crate) fn prompt_literal(input_json: &str) -> Option<&str> {
    if input_json.len() < STORE_ONCE_AT {
        return None;
    }
    input_json.strip_prefix(r#"{"prompt":"#)?.strip_suffix('}').filter(|l| l.starts_with('"'))
}

/// `text`, with the prompt replaced by the token when it holds it.
pub(crate) fn store_once(text: String, literal: Option<&str>) -> String {
    match literal {
        Some(literal) if text.contains(literal) && !text.contains(INPUT_TOKEN) => {
            let mut out = String::with_capacity(text.len().saturating_sub(literal.len()) + 64);
            out.push(STORED_ONCE);
            out.push_str(&text.replace(literal, INPUT_TOKEN));
            out
        }
        _ => text,
    }
}

/// Events as stored, with a large prompt stored once.
pub(crate) fn events_once(events: Vec<(i64, String)>, literal: Option<&str>) -> Vec<(i64, String)> {
    match literal {
        None => events,
        Some(_) => events.into_iter().map(|(seq, text)| (seq, store_once(text, literal))).collect(),
    }
}

/// A stored row's JSON as written: a row stored with the prompt once gets it back from
/// `input_json` (the run row's `input` column, read only for such rows).
pub(crate) fn expand<'a>(
    text: &'a str,
    input_json: impl FnOnce() -> Result<Option<String>, Error>,
    what: impl FnOnce() -> String,
) -> Result<std::borrow::Cow<'a, str>, Error> {
    let Some(rest) = text.strip_prefix(STORED_ONCE) else { return Ok(std::borrow::Cow::Borrowed(text)) };
    let input = input_json()?;
    let literal = input.as_deref().and_then(prompt_literal).ok_or_else(|| {
        Error::Corrupt(format!("{}: refers to its run's input, which is missing or not a prompt", what()).into())
    })?;
    Ok(std::borrow::Cow::Owned(rest.replace(INPUT_TOKEN, literal)))
}

/// A time as stored: milliseconds since the epoch.
pub(crate) fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// The time now, as stored.
pub(crate) fn now_ms() -> i64 {
    millis(Utc::now())
}

/// A stored time read back (the epoch for an out-of-range value).
pub(crate) fn from_millis(ms: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default()
}

/// A stored run state read back.
pub(crate) fn parse_state(s: &str, run_id: &str) -> Result<RunState, Error> {
    Ok(match s {
        "queued" => RunState::Queued,
        "running" => RunState::Running,
        "completed" => RunState::Completed,
        "failed" => RunState::Failed,
        "cancelled" => RunState::Cancelled,
        "interrupted" => RunState::Interrupted,
        "suspended" => RunState::Suspended,
        other => {
            return serde_json::from_value(serde_json::Value::String(other.to_string()))
                .map_err(|e| corrupt(format!("run {run_id} state"), e));
        }
    })
}

/// Whether a run in `state` has finished for good (a suspended run has not).
pub(crate) fn is_finished(state: RunState) -> bool {
    state.is_terminal() && state != RunState::Suspended
}

/// Events as stored: (seq, JSON).
pub(crate) fn encode_events(events: &[Event]) -> Result<Vec<(i64, String)>, Error> {
    events
        .iter()
        .map(|e| {
            let seq =
                i64::try_from(e.seq).map_err(|_| Error::Store(format!("event seq {} out of range", e.seq).into()))?;
            Ok((seq, json(e)?))
        })
        .collect()
}

/// The `run.failed` event that ends a claimed run that cannot start ([`loom_core::journal::RunQueue::fail_claimed`]),
/// as stored at `seq` (the next of the run's log): its JSON.
pub(crate) fn claim_failed_event(run_id: &str, session_id: &str, seq: i64, error: &RunError) -> Result<String, Error> {
    let event = Event {
        run_id: Arc::from(run_id),
        session_id: Arc::from(session_id),
        seq: u64::try_from(seq).unwrap_or_default(),
        at: Utc::now(),
        kind: EventKind::RunFailed(RunEnded { error: error.clone(), turns: 0, usage: Default::default() }),
    };
    json(&event)
}

/// A queued request read back from its column when a claim takes it: an unreadable one is `null`,
/// with the reason (the claimer then ends the run `failed` instead of starting it).
pub(crate) fn claimed_request(run_id: &str, text: Option<&str>) -> (serde_json::Value, Option<String>) {
    match text.map(|t| decode::<serde_json::Value>(t, || format!("run {run_id}: queued request"))) {
        None => (serde_json::Value::Null, None),
        Some(Ok(v)) => (v, None),
        Some(Err(e)) => (serde_json::Value::Null, Some(e.to_string())),
    }
}

/// One stored event read back.
pub(crate) fn decode_event(run_id: &str, seq: i64, text: &str) -> Result<Event, Error> {
    decode(text, || format!("run {run_id}: event {seq}"))
}

/// One stored journal entry read back.
pub(crate) fn decode_entry(run_id: &str, seq: i64, text: &str) -> Result<JournalEntry, Error> {
    decode(text, || format!("run {run_id}: journal entry {seq}"))
}

/// A stored run record read back.
pub(crate) fn decode_record(run_id: &str, text: &str) -> Result<RunRecord, Error> {
    decode(text, || format!("run {run_id}: record"))
}

/// A stored transcript read back (its events are stored apart).
pub(crate) fn decode_transcript(run_id: &str, text: &str) -> Result<Transcript, Error> {
    decode(text, || format!("run {run_id}: transcript"))
}

/// A run's stored input read back (a run stored without one had an empty prompt).
pub(crate) fn decode_input(run_id: &str, text: Option<&str>) -> Result<RunInput, Error> {
    match text {
        Some(text) => decode(text, || format!("run {run_id}: input")),
        None => Ok(RunInput::Prompt(String::new())),
    }
}

/// One stored history message read back.
pub(crate) fn decode_history(session_id: &str, row: i64, text: &str) -> Result<Message, Error> {
    decode(text, || format!("session {session_id}: history row {row}"))
}

/// Messages as stored history rows (`literal`: the run's large prompt, stored once).
pub(crate) fn encode_history(messages: &[Message], literal: Option<&str>) -> Result<Vec<String>, Error> {
    messages.iter().map(|m| Ok(store_once(json(m)?, literal))).collect()
}

/// A stored session read back.
pub(crate) fn decode_session(key: SessionKey<'_>, metadata: &str, extensions: &str) -> Result<SessionRecord, Error> {
    let id = key.session_id;
    Ok(SessionRecord {
        id: id.to_string(),
        user_id: key.user_id.map(str::to_string),
        metadata: decode(metadata, || format!("session {id}: metadata"))?,
        extensions: decode(extensions, || format!("session {id}: extensions"))?,
    })
}

/// The session to store when `record` is opened over what is stored: metadata and extensions merged.
pub(crate) fn merge_session(existing: Option<SessionRecord>, record: &SessionRecord) -> SessionRecord {
    let mut merged = existing.unwrap_or_else(|| SessionRecord {
        id: record.id.clone(),
        user_id: record.user_id.clone(),
        ..Default::default()
    });
    merged.metadata.extend(record.metadata.clone());
    merged.extensions.extend(record.extensions.clone());
    merged
}

/// A run's columns as a journal's `begin` stores them.
pub(crate) struct RecordRow {
    pub(crate) input: String,
    pub(crate) record: String,
    pub(crate) started: i64,
}

impl RecordRow {
    pub(crate) fn new(record: &RunRecord) -> Result<Self, Error> {
        let input = json(&record.input)?;
        let record_json = store_once(json(record)?, prompt_literal(&input));
        Ok(RecordRow { record: record_json, input, started: millis(record.started_at) })
    }

    /// The run's large prompt, if it is stored once.
    pub(crate) fn literal(&self) -> Option<&str> {
        prompt_literal(&self.input)
    }
}

impl RunRow {
    /// The run's large prompt, if it is stored once.
    pub(crate) fn literal(&self) -> Option<&str> {
        prompt_literal(&self.input)
    }
}

/// A finished run's transcript as stored: the row's columns, and its events apart.
pub(crate) struct RunRow {
    pub(crate) run_id: String,
    pub(crate) session_id: String,
    pub(crate) user_id: Option<String>,
    pub(crate) state: RunState,
    pub(crate) finished: bool,
    pub(crate) input: String,
    pub(crate) transcript: String,
    pub(crate) started: i64,
    pub(crate) finished_at: Option<i64>,
    pub(crate) events: Vec<(i64, String)>,
}

impl RunRow {
    pub(crate) fn new(transcript: &Transcript) -> Result<Self, Error> {
        Self::encode(transcript, true)
    }

    /// The row of a journaled run, without its events (the journal writes those).
    pub(crate) fn journaled(transcript: &Transcript) -> Result<Self, Error> {
        Self::encode(transcript, false)
    }

    fn encode(transcript: &Transcript, with_events: bool) -> Result<Self, Error> {
        let input = json(&transcript.input)?;
        let literal = prompt_literal(&input);
        let events = if with_events { events_once(encode_events(&transcript.events)?, literal) } else { Vec::new() };
        let mut bare = transcript.clone();
        bare.events = Arc::from(Vec::new());
        Ok(RunRow {
            transcript: store_once(json(&bare)?, literal),
            input,
            started: millis(bare.started_at.or(bare.finished_at).unwrap_or_else(Utc::now)),
            finished_at: bare.finished_at.map(millis),
            finished: is_finished(bare.state),
            state: bare.state,
            run_id: bare.run_id,
            session_id: bare.session_id,
            user_id: bare.user_id,
            events,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_corrupt_row_keeps_its_decoding_error_as_the_source() {
        let err = decode_entry("run_1", 3, "{not json").unwrap_err();
        assert!(matches!(&err, Error::Corrupt(m) if m.contains("run run_1: journal entry 3")), "{err}");
        let source = std::error::Error::source(&err).and_then(std::error::Error::source);
        assert!(source.is_some_and(|s| s.is::<serde_json::Error>()), "{err:?}");
    }

    #[test]
    fn states_and_times_round_trip() {
        for state in [
            RunState::Queued,
            RunState::Running,
            RunState::Completed,
            RunState::Failed,
            RunState::Cancelled,
            RunState::Interrupted,
            RunState::Suspended,
        ] {
            assert_eq!(parse_state(state.as_str(), "r").ok(), Some(state));
        }
        assert!(matches!(parse_state("sleeping", "r"), Err(Error::Corrupt(_))));
        let t = from_millis(1_700_000_000_123);
        assert_eq!(millis(t), 1_700_000_000_123);
        assert!(!is_finished(RunState::Suspended) && is_finished(RunState::Cancelled));
    }
}
