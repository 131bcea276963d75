//! The SQLite store as a [`SessionStore`]: sessions, history and finished runs' transcripts.

use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, params};

use super::{Immediate, SqliteStore, db, insert_events, load_events, run_input};
use crate::error::Error;
use crate::message::Message;
use crate::run::Transcript;
use crate::store::sql::{
    RunRow, decode, decode_history, decode_input, decode_session, decode_transcript, encode_history, expand,
    from_millis, json, merge_session, now_ms, parse_state,
};
use crate::store::{RunSummary, SessionKey, SessionRecord, SessionStore, SessionSummary, StoredSession};
use loom_core::store::may_lock_session;

/// A session's history, oldest first.
pub(super) const HISTORY: &str =
    "SELECT id, message, run_id FROM loom_history WHERE session_id = ?1 AND owner = ?2 ORDER BY id";

#[async_trait::async_trait]
impl SessionStore for SqliteStore {
    async fn open_session(&self, record: &SessionRecord) -> Result<SessionRecord, Error> {
        let record = record.clone();
        self.call(move |conn| {
            let tx = Immediate::begin(conn)?;
            let merged = open(&tx, &record)?;
            tx.commit()?;
            Ok(merged)
        })
        .await
    }

    async fn get_session(&self, session: SessionKey<'_>) -> Result<Option<SessionRecord>, Error> {
        let (user, id) = session.to_owned_parts();
        self.call(move |conn| read_session(conn, SessionKey::scoped(user.as_deref(), &id))).await
    }

    async fn history(&self, session: SessionKey<'_>) -> Result<Vec<Message>, Error> {
        let (owner, id) = (session.owner().to_string(), session.session_id.to_string());
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(HISTORY).map_err(db)?;
            let rows = stmt
                .query_map([&id, &owner], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))
                .map_err(db)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db)?;
            rows.into_iter()
                .map(|(row, text, run_id)| {
                    let what = || format!("session {id}: history row {row}");
                    let text = expand(&text, || run_input(conn, &run_id), what)?;
                    decode_history(&id, row, &text)
                })
                .collect()
        })
        .await
    }

    async fn append_history(&self, session: SessionKey<'_>, run_id: &str, messages: &[Message]) -> Result<(), Error> {
        let (owner, id) = (session.owner().to_string(), session.session_id.to_string());
        let run_id = run_id.to_string();
        let rows = encode_history(messages, None)?;
        self.call(move |conn| {
            let tx = Immediate::begin(conn)?;
            write_history(&tx, &owner, &id, &run_id, &rows)?;
            tx.commit()
        })
        .await
    }

    async fn save_run(&self, transcript: Arc<Transcript>) -> Result<(), Error> {
        self.save_finished_run(transcript, None).await
    }

    async fn save_finished_run(&self, transcript: Arc<Transcript>, history: Option<&[Message]>) -> Result<(), Error> {
        let row = RunRow::new(&transcript)?;
        let history = history.map(|h| encode_history(h, row.literal())).transpose()?;
        self.call(move |conn| {
            let tx = Immediate::begin(conn)?;
            write_run(&tx, &row, None)?;
            if let Some(rows) = &history {
                write_history(&tx, row.user_id.as_deref().unwrap_or(""), &row.session_id, &row.run_id, rows)?;
            }
            tx.commit()
        })
        .await
    }

    async fn get_run(&self, session: SessionKey<'_>, run_id: &str) -> Result<Option<Arc<Transcript>>, Error> {
        let (user, session_id) = session.to_owned_parts();
        let run_id = run_id.to_string();
        self.call(move |conn| {
            let text: Option<Option<String>> = conn
                .query_row(
                    "SELECT transcript FROM loom_runs WHERE run_id = ?1 AND session_id = ?2 AND user_id IS ?3",
                    params![run_id, session_id, user],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)?;
            let Some(Some(text)) = text else { return Ok(None) };
            let text = expand(&text, || run_input(conn, &run_id), || format!("run {run_id}: transcript"))?;
            let mut t: Transcript = decode_transcript(&run_id, &text)?;
            t.events = Arc::from(load_events(conn, &run_id)?);
            Ok(Some(Arc::new(t)))
        })
        .await
    }

    async fn get_runs(&self, runs: &[(SessionKey<'_>, &str)]) -> Result<Vec<Arc<Transcript>>, Error> {
        let wanted: std::collections::HashMap<String, (Option<String>, String)> =
            runs.iter().map(|(key, id)| (id.to_string(), key.to_owned_parts())).collect();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        self.call(move |conn| {
            let ids: Vec<&String> = wanted.keys().collect();
            let mut out = Vec::with_capacity(ids.len());
            // One statement per 500 runs (a listing page is at most 1,000).
            for chunk in ids.chunks(500) {
                let marks = vec!["?"; chunk.len()].join(", ");
                let mut stmt = conn
                    .prepare(&format!(
                        "SELECT run_id, session_id, user_id, transcript, input FROM loom_runs
                         WHERE run_id IN ({marks}) AND transcript IS NOT NULL"
                    ))
                    .map_err(db)?;
                let rows = stmt
                    .query_map(rusqlite::params_from_iter(chunk.iter()), |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, Option<String>>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, Option<String>>(4)?,
                        ))
                    })
                    .map_err(db)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(db)?;
                for (run_id, session_id, user_id, text, input) in rows {
                    // Only the run of the session and user asked for (as `get_run`).
                    if wanted.get(&run_id) != Some(&(user_id, session_id)) {
                        continue;
                    }
                    let text = expand(&text, || Ok(input), || format!("run {run_id}: transcript"))?;
                    out.push(Arc::new(decode_transcript(&run_id, &text)?));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn list_runs(&self, session: SessionKey<'_>) -> Result<Vec<RunSummary>, Error> {
        let (user, session_id) = session.to_owned_parts();
        self.call(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT run_id, user_id, state, input, started_at, finished_at FROM loom_runs
                     WHERE session_id = ?1 AND user_id IS ?2 AND transcript IS NOT NULL ORDER BY run_id",
                )
                .map_err(db)?;
            let rows = stmt
                .query_map(params![session_id, user], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, Option<i64>>(5)?,
                    ))
                })
                .map_err(db)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db)?;
            rows.into_iter()
                .map(|(run_id, user_id, state, input, started, finished)| {
                    let input = decode_input(&run_id, input.as_deref())?;
                    Ok(RunSummary {
                        state: parse_state(&state, &run_id)?,
                        run_id,
                        session_id: session_id.clone(),
                        user_id,
                        input,
                        started_at: from_millis(started),
                        finished_at: finished.map(from_millis),
                    })
                })
                .collect()
        })
        .await
    }

    async fn lock_session(&self, session: SessionKey<'_>, holder: &str, until_ms: i64) -> Result<bool, Error> {
        let (owner, id, holder) = (session.owner().to_string(), session.session_id.to_string(), holder.to_string());
        self.call(move |conn| {
            let tx = Immediate::begin(conn)?;
            let row: Option<(Option<String>, Option<i64>)> = tx
                .prepare_cached("SELECT lock_holder, lock_expires FROM loom_sessions WHERE owner = ?1 AND id = ?2")
                .map_err(db)?
                .query_row([&owner, &id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
                .map_err(db)?;
            let (current, expires) = row.unwrap_or((None, None));
            if !may_lock_session(current.as_deref(), expires, &holder, now_ms()) {
                return Ok(false);
            }
            tx.prepare_cached(
                "INSERT INTO loom_sessions (owner, id, metadata, extensions, closed, updated_at, lock_holder, lock_expires)
                 VALUES (?1, ?2, '{}', '{}', 0, ?5, ?3, ?4)
                 ON CONFLICT (owner, id) DO UPDATE SET lock_holder = ?3, lock_expires = ?4",
            )
            .map_err(db)?
            .execute(params![owner, id, holder, until_ms, now_ms()])
            .map_err(db)?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn lock_and_open(&self, record: &SessionRecord, holder: &str, until_ms: i64) -> Result<bool, Error> {
        let (record, holder) = (record.clone(), holder.to_string());
        self.call(move |conn| {
            let tx = Immediate::begin(conn)?;
            let key = record.key();
            let row: Option<(Option<String>, Option<i64>)> = tx
                .prepare_cached("SELECT lock_holder, lock_expires FROM loom_sessions WHERE owner = ?1 AND id = ?2")
                .map_err(db)?
                .query_row([key.owner(), key.session_id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
                .map_err(db)?;
            let (current, expires) = row.clone().unwrap_or((None, None));
            if !may_lock_session(current.as_deref(), expires, &holder, now_ms()) {
                return Ok(false);
            }
            let existing = if row.is_some() { read_session(&tx, key)? } else { None };
            let merged = merge_session(existing, &record);
            tx.prepare_cached(
                "INSERT INTO loom_sessions (owner, id, metadata, extensions, closed, updated_at, lock_holder, lock_expires)
                 VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6, ?7)
                 ON CONFLICT (owner, id) DO UPDATE SET metadata = ?3, extensions = ?4, closed = 0, updated_at = ?5,
                    lock_holder = ?6, lock_expires = ?7",
            )
            .map_err(db)?
            .execute(params![
                key.owner(),
                key.session_id,
                json(&merged.metadata)?,
                json(&merged.extensions)?,
                now_ms(),
                holder,
                until_ms
            ])
            .map_err(db)?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn save_summary(&self, session: SessionKey<'_>, summary: &SessionSummary) -> Result<(), Error> {
        let (owner, id) = (session.owner().to_string(), session.session_id.to_string());
        let text = json(summary)?;
        self.call(move |conn| {
            conn.prepare_cached(
                "INSERT INTO loom_session_summaries (owner, session_id, summary, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (owner, session_id) DO UPDATE SET summary = ?3, updated_at = ?4",
            )
            .map_err(db)?
            .execute(params![owner, id, text, now_ms()])
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn summary(&self, session: SessionKey<'_>) -> Result<Option<SessionSummary>, Error> {
        let (owner, id) = (session.owner().to_string(), session.session_id.to_string());
        self.call(move |conn| {
            let text: Option<String> = conn
                .prepare_cached("SELECT summary FROM loom_session_summaries WHERE owner = ?1 AND session_id = ?2")
                .map_err(db)?
                .query_row([&owner, &id], |r| r.get(0))
                .optional()
                .map_err(db)?;
            text.map(|t| decode(&t, || format!("session {id}: summary"))).transpose()
        })
        .await
    }

    async fn unlock_session(&self, session: SessionKey<'_>, holder: &str) -> Result<(), Error> {
        let (owner, id, holder) = (session.owner().to_string(), session.session_id.to_string(), holder.to_string());
        self.call(move |conn| unlock(conn, &owner, &id, &holder)).await
    }

    async fn close_session(&self, session: SessionKey<'_>) -> Result<(), Error> {
        let (owner, id) = (session.owner().to_string(), session.session_id.to_string());
        self.call(move |conn| {
            conn.execute("UPDATE loom_sessions SET closed = 1 WHERE owner = ?1 AND id = ?2", [&owner, &id])
                .map_err(db)?;
            Ok(())
        })
        .await
    }

    fn session_database_id(&self) -> Option<usize> {
        Some(self.database_id())
    }

    async fn find_sessions(
        &self,
        owner_prefix: &str,
        session_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredSession>, Error> {
        let (prefix, id) = (owner_prefix.to_string(), session_id.map(str::to_string));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.call(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT owner, id, metadata, extensions, closed, updated_at FROM loom_sessions
                     WHERE substr(owner, 1, length(?1)) = ?1 AND (?2 IS NULL OR id = ?2)
                     ORDER BY updated_at DESC, id LIMIT ?3",
                )
                .map_err(db)?;
            let rows = stmt
                .query_map(params![prefix, id, limit], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, bool>(4)?,
                        r.get::<_, i64>(5)?,
                    ))
                })
                .map_err(db)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db)?;
            rows.into_iter()
                .map(|(owner, id, metadata, extensions, closed, updated_at)| {
                    let user = (!owner.is_empty()).then_some(owner.as_str());
                    let record = decode_session(SessionKey::scoped(user, &id), &metadata, &extensions)?;
                    Ok(StoredSession { record, closed, updated_at: from_millis(updated_at) })
                })
                .collect()
        })
        .await
    }
}

/// Releases the session's run lock if `holder` has it.
pub(super) fn unlock(conn: &Connection, owner: &str, id: &str, holder: &str) -> Result<(), Error> {
    conn.prepare_cached(
        "UPDATE loom_sessions SET lock_holder = NULL, lock_expires = NULL
         WHERE owner = ?1 AND id = ?2 AND lock_holder = ?3",
    )
    .map_err(db)?
    .execute([owner, id, holder])
    .map_err(db)?;
    Ok(())
}

/// Writes a finished run's row: its transcript, state and input (and, for a run the journal does
/// not cover, its events). `journaled` says whether the journal registered the run (its final
/// commit knows it: `Some(true)`); `None` reads it from the row. No `RETURNING` here: SQLite
/// collects a `RETURNING` clause's rows in a temporary table, and opening one (its pager, page
/// cache and a 64 KiB statement journal) cost every run's final commit.
pub(super) fn write_run(tx: &rusqlite::Connection, row: &RunRow, journaled: Option<bool>) -> Result<(), Error> {
    tx.prepare_cached(
        "INSERT INTO loom_runs (run_id, session_id, user_id, state, finished, input, transcript, started_at,
            finished_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (run_id) DO UPDATE SET state = ?4, input = ?6, transcript = ?7, finished_at = ?9,
            finished = CASE WHEN record IS NULL THEN ?5 ELSE finished END",
    )
    .map_err(db)?
    .execute(params![
        row.run_id,
        row.session_id,
        row.user_id,
        row.state.as_str(),
        row.finished,
        row.input,
        row.transcript,
        row.started,
        row.finished_at
    ])
    .map_err(db)?;
    let journaled = match journaled {
        Some(journaled) => journaled,
        None => tx
            .prepare_cached("SELECT record IS NOT NULL FROM loom_runs WHERE run_id = ?1")
            .map_err(db)?
            .query_row([&row.run_id], |r| r.get(0))
            .map_err(db)?,
    };
    // A journaled run's events are written by the journal, at its boundaries and final
    // commit, so a resumed run finds exactly the events its journal covers.
    if !journaled {
        insert_events(tx, &row.run_id, &row.events)?;
    }
    Ok(())
}

pub(super) fn write_history(
    tx: &rusqlite::Connection,
    owner: &str,
    session_id: &str,
    run_id: &str,
    rows: &[String],
) -> Result<(), Error> {
    let mut stmt = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO loom_history (owner, session_id, run_id, idx, message) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(db)?;
    for (i, m) in rows.iter().enumerate() {
        stmt.execute(params![owner, session_id, run_id, i as i64, m]).map_err(db)?;
    }
    Ok(())
}

fn read_session(conn: &Connection, key: SessionKey<'_>) -> Result<Option<SessionRecord>, Error> {
    let row: Option<(String, String)> = conn
        .prepare_cached("SELECT metadata, extensions FROM loom_sessions WHERE owner = ?1 AND id = ?2")
        .map_err(db)?
        .query_row([key.owner(), key.session_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(db)?;
    let Some((metadata, extensions)) = row else { return Ok(None) };
    decode_session(key, &metadata, &extensions).map(Some)
}

/// Creates the session, or merges `record`'s metadata and extensions into the stored one (the
/// caller's transaction holds the write lock).
pub(super) fn open(tx: &rusqlite::Connection, record: &SessionRecord) -> Result<SessionRecord, Error> {
    let merged = merge_session(read_session(tx, record.key())?, record);
    tx.prepare_cached(
        "INSERT INTO loom_sessions (owner, id, metadata, extensions, closed, updated_at)
         VALUES (?1, ?2, ?3, ?4, 0, ?5)
         ON CONFLICT (owner, id) DO UPDATE SET metadata = ?3, extensions = ?4, closed = 0, updated_at = ?5",
    )
    .map_err(db)?
    .execute(params![merged.key().owner(), merged.id, json(&merged.metadata)?, json(&merged.extensions)?, now_ms()])
    .map_err(db)?;
    Ok(merged)
}
