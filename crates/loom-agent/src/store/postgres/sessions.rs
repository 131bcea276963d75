//! The PostgreSQL store as a [`SessionStore`]: sessions, history and finished runs' transcripts.

use std::sync::Arc;

use tokio_postgres::Client;

use super::{PooledConn, PostgresStore, get, load_events, pg, snapshot};
use crate::error::Error;
use crate::message::Message;
use crate::run::Transcript;
use crate::store::sql::{
    RunRow, decode, decode_history, decode_input, decode_session, decode_transcript, encode_history, expand,
    from_millis, json, merge_session, now_ms, parse_state,
};
use crate::store::{RunSummary, SessionKey, SessionRecord, SessionStore, SessionSummary, StoredSession};
use loom_core::store::may_lock_session;

/// A new session in one statement: `None` when it exists (then [`open_session_tx`] merges).
const OPEN_NEW: &str = "
    INSERT INTO loom_sessions (owner, id, metadata, extensions, closed, updated_at)
    VALUES ($1::TEXT, $2::TEXT, $3::TEXT, $4::TEXT, FALSE, $5::BIGINT) ON CONFLICT (owner, id) DO NOTHING RETURNING 1";

const GET_SESSION: &str = "SELECT metadata, extensions FROM loom_sessions WHERE owner = $1::TEXT AND id = $2::TEXT";

const HISTORY: &str =
    "SELECT id, message, run_id FROM loom_history WHERE session_id = $1::TEXT AND owner = $2::TEXT ORDER BY id";

/// A run's messages in one statement, their ids (the history's order) in the messages' order.
const APPEND_HISTORY: &str = "
    INSERT INTO loom_history (owner, session_id, run_id, idx, message)
    SELECT $1::TEXT, $2::TEXT, $3::TEXT, m.n - 1, m.message
    FROM UNNEST($4::TEXT[]) WITH ORDINALITY AS m(message, n) ORDER BY m.n
    ON CONFLICT (session_id, run_id, idx) DO NOTHING";

/// A finished run in one statement (one transaction): the transcript, its events unless the
/// journal writes them (a journaled run's row has a record), and its messages in the history.
const SAVE_FINISHED_RUN: &str = "
    WITH r AS (
        INSERT INTO loom_runs (run_id, session_id, user_id, state, finished, input, transcript, started_at,
            finished_at)
        VALUES ($1::TEXT, $2::TEXT, $3::TEXT, $4::TEXT, $5::BOOLEAN, $6::TEXT, $7::TEXT, $8::BIGINT, $9::BIGINT)
        ON CONFLICT (run_id) DO UPDATE SET state = EXCLUDED.state, input = EXCLUDED.input,
            transcript = EXCLUDED.transcript, finished_at = EXCLUDED.finished_at,
            finished = CASE WHEN loom_runs.record IS NULL THEN EXCLUDED.finished ELSE loom_runs.finished END
        RETURNING run_id, record IS NOT NULL AS journaled),
    ev AS (
        INSERT INTO loom_events (run_id, seq, event)
        SELECT r.run_id, e.seq, e.event FROM r, UNNEST($10::BIGINT[], $11::TEXT[]) AS e(seq, event)
        WHERE NOT r.journaled
        ON CONFLICT (run_id, seq) DO NOTHING),
    h AS (
        INSERT INTO loom_history (owner, session_id, run_id, idx, message)
        SELECT $12::TEXT, $2::TEXT, $1::TEXT, m.n - 1, m.message
        FROM UNNEST($13::TEXT[]) WITH ORDINALITY AS m(message, n) ORDER BY m.n
        ON CONFLICT (session_id, run_id, idx) DO NOTHING)
    SELECT COUNT(*) FROM r";

/// The session's run lock in one statement where the rule grants it without asking whether a holder
/// is gone (no holder, an expired one, or `holder` itself); `None` otherwise ([`lock_session_tx`]
/// decides).
const LOCK_SESSION: &str = "
    INSERT INTO loom_sessions AS s (owner, id, metadata, extensions, closed, updated_at, lock_holder, lock_expires)
    VALUES ($1::TEXT, $2::TEXT, '{}', '{}', FALSE, $3::BIGINT, $4::TEXT, $5::BIGINT)
    ON CONFLICT (owner, id) DO UPDATE SET lock_holder = EXCLUDED.lock_holder, lock_expires = EXCLUDED.lock_expires
    WHERE s.lock_holder IS NULL OR s.lock_expires IS NULL OR s.lock_expires <= $3::BIGINT
        OR s.lock_holder = EXCLUDED.lock_holder
    RETURNING 1";

/// The session's run lock and the session's opening in one statement, where the rule grants the
/// lock without asking whether a holder is gone; `None` otherwise ([`lock_session_tx`] decides,
/// then [`open_session_tx`] merges). The metadata and extensions merge as `open_session` merges
/// them: the record's top-level keys replace the stored ones.
const LOCK_AND_OPEN: &str = "
    INSERT INTO loom_sessions AS s (owner, id, metadata, extensions, closed, updated_at, lock_holder, lock_expires)
    VALUES ($1::TEXT, $2::TEXT, $6::TEXT, $7::TEXT, FALSE, $3::BIGINT, $4::TEXT, $5::BIGINT)
    ON CONFLICT (owner, id) DO UPDATE SET lock_holder = EXCLUDED.lock_holder, lock_expires = EXCLUDED.lock_expires,
        metadata = (s.metadata::JSONB || EXCLUDED.metadata::JSONB)::TEXT,
        extensions = (s.extensions::JSONB || EXCLUDED.extensions::JSONB)::TEXT,
        closed = FALSE, updated_at = EXCLUDED.updated_at
    WHERE s.lock_holder IS NULL OR s.lock_expires IS NULL OR s.lock_expires <= $3::BIGINT
        OR s.lock_holder = EXCLUDED.lock_holder
    RETURNING 1";

const UNLOCK_SESSION: &str = "
    UPDATE loom_sessions SET lock_holder = NULL, lock_expires = NULL
    WHERE owner = $1::TEXT AND id = $2::TEXT AND lock_holder = $3::TEXT";

/// One statement for a new session; [`open_session_tx`] for an existing one.
async fn open_session_one(conn: &mut PooledConn, record: &SessionRecord) -> Result<SessionRecord, Error> {
    let key = record.key();
    let merged = merge_session(Some(decode_session(key, "{}", "{}")?), record);
    let statement = conn.prepared(OPEN_NEW).await?;
    let created = conn
        .client
        .query_opt(
            &statement,
            &[&key.owner(), &record.id, &json(&merged.metadata)?, &json(&merged.extensions)?, &now_ms()],
        )
        .await
        .map_err(|e| pg("creating the session", e))?;
    if created.is_some() {
        return Ok(merged);
    }
    open_session_tx(&mut conn.client, record).await
}

/// The slow path of [`open_session_one`]: merges into the stored session under its row lock.
async fn open_session_tx(client: &mut Client, record: &SessionRecord) -> Result<SessionRecord, Error> {
    let now = now_ms();
    let tx = client.transaction().await.map_err(|e| pg("beginning", e))?;
    let owner = record.key().owner();
    // Create the row first, then lock it: concurrent opens merge one after the other.
    tx.execute(
        "INSERT INTO loom_sessions (owner, id, metadata, extensions, closed, updated_at)
         VALUES ($1, $2, '{}', '{}', FALSE, $3) ON CONFLICT (owner, id) DO NOTHING",
        &[&owner, &record.id, &now],
    )
    .await
    .map_err(|e| pg("creating the session", e))?;
    let row = tx
        .query_one(
            "SELECT metadata, extensions FROM loom_sessions WHERE owner = $1 AND id = $2 FOR UPDATE",
            &[&owner, &record.id],
        )
        .await
        .map_err(|e| pg("reading the session", e))?;
    let merged = merge_session(Some(decode_session(record.key(), get(&row, 0)?, get(&row, 1)?)?), record);
    tx.execute(
        "UPDATE loom_sessions SET metadata = $3, extensions = $4, closed = FALSE, updated_at = $5
         WHERE owner = $1 AND id = $2",
        &[&owner, &merged.id, &json(&merged.metadata)?, &json(&merged.extensions)?, &now],
    )
    .await
    .map_err(|e| pg("updating the session", e))?;
    tx.commit().await.map_err(|e| pg("committing", e))?;
    Ok(merged)
}

async fn get_session_one(conn: &mut PooledConn, key: SessionKey<'_>) -> Result<Option<SessionRecord>, Error> {
    let statement = conn.prepared(GET_SESSION).await?;
    let row = conn
        .client
        .query_opt(&statement, &[&key.owner(), &key.session_id])
        .await
        .map_err(|e| pg("reading the session", e))?;
    row.map(|row| decode_session(key, get(&row, 0)?, get(&row, 1)?)).transpose()
}

async fn history_one(conn: &mut PooledConn, key: SessionKey<'_>) -> Result<Vec<Message>, Error> {
    let statement = conn.prepared(HISTORY).await?;
    let rows = conn
        .client
        .query(&statement, &[&key.session_id, &key.owner()])
        .await
        .map_err(|e| pg("reading the history", e))?;
    // Rows that store a large prompt once get it from their run's `input` column.
    let mut once: Vec<String> = Vec::new();
    for row in &rows {
        if get::<&str>(row, 1)?.starts_with('@') {
            once.push(get(row, 2)?);
        }
    }
    let mut inputs: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    if !once.is_empty() {
        let found = conn
            .client
            .query("SELECT run_id, input FROM loom_runs WHERE run_id = ANY($1)", &[&once])
            .await
            .map_err(|e| pg("reading the runs' inputs", e))?;
        for row in found {
            if let Some(input) = get::<Option<String>>(&row, 1)? {
                inputs.insert(get(&row, 0)?, input);
            }
        }
    }
    rows.iter()
        .map(|row| {
            let id: i64 = get(row, 0)?;
            let run_id: &str = get(row, 2)?;
            let what = || format!("session {}: history row {id}", key.session_id);
            let text = expand(get(row, 1)?, || Ok(inputs.get(run_id).cloned()), what)?;
            decode_history(key.session_id, id, &text)
        })
        .collect()
}

async fn append_history_one(
    conn: &mut PooledConn,
    key: SessionKey<'_>,
    run_id: &str,
    rows: &[String],
) -> Result<(), Error> {
    let statement = conn.prepared(APPEND_HISTORY).await?;
    conn.client
        .execute(&statement, &[&key.owner(), &key.session_id, &run_id, &rows])
        .await
        .map_err(|e| pg("appending to the history", e))?;
    Ok(())
}

async fn save_finished_run_one(conn: &mut PooledConn, run: &RunRow, history: &[String]) -> Result<(), Error> {
    let events: (Vec<i64>, Vec<String>) = run.events.iter().cloned().unzip();
    let owner = run.user_id.as_deref().unwrap_or("");
    let statement = conn.prepared(SAVE_FINISHED_RUN).await?;
    conn.client
        .query_one(
            &statement,
            &[
                &run.run_id,
                &run.session_id,
                &run.user_id,
                &run.state.as_str(),
                &run.finished,
                &run.input,
                &run.transcript,
                &run.started,
                &run.finished_at,
                &events.0,
                &events.1,
                &owner,
                &history,
            ],
        )
        .await
        .map_err(|e| pg("saving the run", e))?;
    Ok(())
}

async fn get_run_tx(client: &mut Client, key: SessionKey<'_>, run_id: &str) -> Result<Option<Arc<Transcript>>, Error> {
    let tx = snapshot(client).await?;
    let row = tx
        .query_opt(
            "SELECT transcript, input FROM loom_runs
             WHERE run_id = $1 AND session_id = $2 AND user_id IS NOT DISTINCT FROM $3::TEXT",
            &[&run_id, &key.session_id, &key.user_id],
        )
        .await
        .map_err(|e| pg("reading the run", e))?;
    let Some(row) = row else { return Ok(None) };
    let Some(text) = get::<Option<&str>>(&row, 0)? else { return Ok(None) };
    let text = expand(text, || get::<Option<String>>(&row, 1), || format!("run {run_id}: transcript"))?;
    let mut t: Transcript = decode_transcript(run_id, &text)?;
    t.events = Arc::from(load_events(&tx, run_id).await?);
    tx.commit().await.map_err(|e| pg("ending the read", e))?;
    Ok(Some(Arc::new(t)))
}

async fn list_runs_tx(client: &mut Client, key: SessionKey<'_>) -> Result<Vec<RunSummary>, Error> {
    let session_id = key.session_id;
    let rows = client
        .query(
            "SELECT run_id, user_id, state, input, started_at, finished_at FROM loom_runs
             WHERE session_id = $1 AND user_id IS NOT DISTINCT FROM $2::TEXT AND transcript IS NOT NULL
             ORDER BY run_id COLLATE \"C\"",
            &[&session_id, &key.user_id],
        )
        .await
        .map_err(|e| pg("listing runs", e))?;
    rows.iter()
        .map(|row| {
            let run_id: String = get(row, 0)?;
            let input = decode_input(&run_id, get::<Option<&str>>(row, 3)?)?;
            Ok(RunSummary {
                state: parse_state(get(row, 2)?, &run_id)?,
                session_id: session_id.to_string(),
                user_id: get(row, 1)?,
                input,
                started_at: from_millis(get(row, 4)?),
                finished_at: get::<Option<i64>>(row, 5)?.map(from_millis),
                run_id,
            })
        })
        .collect()
}

async fn close_session_tx(client: &mut Client, key: SessionKey<'_>) -> Result<(), Error> {
    client
        .execute(
            "UPDATE loom_sessions SET closed = TRUE WHERE owner = $1 AND id = $2",
            &[&key.owner(), &key.session_id],
        )
        .await
        .map_err(|e| pg("closing the session", e))?;
    Ok(())
}

/// One statement where the lock is free, expired or `holder`'s; otherwise [`lock_session_tx`].
async fn lock_session_one(conn: &mut PooledConn, key: SessionKey<'_>, holder: &str, until: i64) -> Result<bool, Error> {
    let statement = conn.prepared(LOCK_SESSION).await?;
    let taken = conn
        .client
        .query_opt(&statement, &[&key.owner(), &key.session_id, &now_ms(), &holder, &until])
        .await
        .map_err(|e| pg("taking the session lock", e))?;
    if taken.is_some() {
        return Ok(true);
    }
    lock_session_tx(&mut conn.client, key, holder, until).await
}

/// The slow path of [`lock_session_one`]: the rule, with its question whether the holder is gone.
async fn lock_session_tx(client: &mut Client, key: SessionKey<'_>, holder: &str, until: i64) -> Result<bool, Error> {
    let now = now_ms();
    let tx = client.transaction().await.map_err(|e| pg("beginning", e))?;
    tx.execute(
        "INSERT INTO loom_sessions (owner, id, metadata, extensions, closed, updated_at)
         VALUES ($1, $2, '{}', '{}', FALSE, $3) ON CONFLICT (owner, id) DO NOTHING",
        &[&key.owner(), &key.session_id, &now],
    )
    .await
    .map_err(|e| pg("creating the session", e))?;
    let row = tx
        .query_one(
            "SELECT lock_holder, lock_expires FROM loom_sessions WHERE owner = $1 AND id = $2 FOR UPDATE",
            &[&key.owner(), &key.session_id],
        )
        .await
        .map_err(|e| pg("reading the session lock", e))?;
    let current: Option<String> = get(&row, 0)?;
    if !may_lock_session(current.as_deref(), get(&row, 1)?, holder, now) {
        return Ok(false);
    }
    tx.execute(
        "UPDATE loom_sessions SET lock_holder = $3, lock_expires = $4 WHERE owner = $1 AND id = $2",
        &[&key.owner(), &key.session_id, &holder, &until],
    )
    .await
    .map_err(|e| pg("taking the session lock", e))?;
    tx.commit().await.map_err(|e| pg("committing", e))?;
    Ok(true)
}

#[async_trait::async_trait]
impl SessionStore for PostgresStore {
    async fn lock_session(&self, session: SessionKey<'_>, holder: &str, until_ms: i64) -> Result<bool, Error> {
        with_conn!(self, |conn: conn| lock_session_one(conn, session, holder, until_ms))
    }

    async fn lock_and_open(&self, record: &SessionRecord, holder: &str, until_ms: i64) -> Result<bool, Error> {
        let key = record.key();
        let (metadata, extensions) = (json(&record.metadata)?, json(&record.extensions)?);
        with_conn!(self, |conn: conn| async move {
            let statement = conn.prepared(LOCK_AND_OPEN).await?;
            let taken = conn
                .client
                .query_opt(
                    &statement,
                    &[&key.owner(), &key.session_id, &now_ms(), &holder, &until_ms, &metadata, &extensions],
                )
                .await
                .map_err(|e| pg("taking the session lock", e))?;
            if taken.is_some() {
                return Ok(true);
            }
            if !lock_session_tx(&mut conn.client, key, holder, until_ms).await? {
                return Ok(false);
            }
            open_session_tx(&mut conn.client, record).await.map(|_| true)
        })
    }

    async fn unlock_session(&self, session: SessionKey<'_>, holder: &str) -> Result<(), Error> {
        with_conn!(self, |conn: conn| async move {
            let statement = conn.prepared(UNLOCK_SESSION).await?;
            conn.client
                .execute(&statement, &[&session.owner(), &session.session_id, &holder])
                .await
                .map(|_| ())
                .map_err(|e| pg("releasing the session lock", e))
        })
    }

    async fn save_summary(&self, session: SessionKey<'_>, summary: &SessionSummary) -> Result<(), Error> {
        let text = json(summary)?;
        with_conn!(self, |client| async move {
            client
                .execute(
                    "INSERT INTO loom_session_summaries (owner, session_id, summary, updated_at)
                     VALUES ($1::TEXT, $2::TEXT, $3::TEXT, $4::BIGINT)
                     ON CONFLICT (owner, session_id) DO UPDATE SET summary = $3, updated_at = $4",
                    &[&session.owner(), &session.session_id, &text, &now_ms()],
                )
                .await
                .map(|_| ())
                .map_err(|e| pg("saving the session's summary", e))
        })
    }

    async fn summary(&self, session: SessionKey<'_>) -> Result<Option<SessionSummary>, Error> {
        with_conn!(self, |client| async move {
            let row = client
                .query_opt(
                    "SELECT summary FROM loom_session_summaries WHERE owner = $1::TEXT AND session_id = $2::TEXT",
                    &[&session.owner(), &session.session_id],
                )
                .await
                .map_err(|e| pg("reading the session's summary", e))?;
            match row {
                None => Ok(None),
                Some(row) => {
                    let text: String = get(&row, 0)?;
                    decode(&text, || format!("session {}: summary", session.session_id)).map(Some)
                }
            }
        })
    }

    async fn open_session(&self, record: &SessionRecord) -> Result<SessionRecord, Error> {
        with_conn!(self, |conn: conn| open_session_one(conn, record))
    }

    async fn history(&self, session: SessionKey<'_>) -> Result<Vec<Message>, Error> {
        with_conn!(self, |conn: conn| history_one(conn, session))
    }

    async fn get_session(&self, session: SessionKey<'_>) -> Result<Option<SessionRecord>, Error> {
        with_conn!(self, |conn: conn| get_session_one(conn, session))
    }

    async fn append_history(&self, session: SessionKey<'_>, run_id: &str, messages: &[Message]) -> Result<(), Error> {
        let rows = encode_history(messages, None)?;
        with_conn!(self, |conn: conn| append_history_one(conn, session, run_id, &rows))
    }

    async fn save_run(&self, transcript: Arc<Transcript>) -> Result<(), Error> {
        self.save_finished_run(transcript, None).await
    }

    async fn save_finished_run(&self, transcript: Arc<Transcript>, history: Option<&[Message]>) -> Result<(), Error> {
        let run = RunRow::new(&transcript)?;
        let history = history.map(|h| encode_history(h, run.literal())).transpose()?.unwrap_or_default();
        with_conn!(self, |conn: conn| save_finished_run_one(conn, &run, &history))
    }

    async fn get_run(&self, session: SessionKey<'_>, run_id: &str) -> Result<Option<Arc<Transcript>>, Error> {
        with_conn!(self, |client| get_run_tx(client, session, run_id))
    }

    async fn get_runs(&self, runs: &[(SessionKey<'_>, &str)]) -> Result<Vec<Arc<Transcript>>, Error> {
        let wanted: std::collections::HashMap<&str, (Option<&str>, &str)> =
            runs.iter().map(|(key, id)| (*id, (key.user_id, key.session_id))).collect();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = wanted.keys().copied().collect();
        let rows = with_conn!(self, |client| async {
            client
                .query(
                    "SELECT run_id, session_id, user_id, transcript, input FROM loom_runs
                     WHERE run_id = ANY($1) AND transcript IS NOT NULL",
                    &[&ids],
                )
                .await
                .map_err(|e| pg("reading runs", e))
        })?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let run_id: &str = get(row, 0)?;
            let (session_id, user_id): (&str, Option<&str>) = (get(row, 1)?, get(row, 2)?);
            // Only the run of the session and user asked for (as `get_run`).
            if wanted.get(run_id) != Some(&(user_id, session_id)) {
                continue;
            }
            let text: &str = get(row, 3)?;
            let text = expand(text, || get::<Option<String>>(row, 4), || format!("run {run_id}: transcript"))?;
            out.push(Arc::new(decode_transcript(run_id, &text)?));
        }
        Ok(out)
    }

    async fn list_runs(&self, session: SessionKey<'_>) -> Result<Vec<RunSummary>, Error> {
        with_conn!(self, |client| list_runs_tx(client, session))
    }

    fn session_database_id(&self) -> Option<usize> {
        Some(self.database_id())
    }

    async fn close_session(&self, session: SessionKey<'_>) -> Result<(), Error> {
        with_conn!(self, |client| close_session_tx(client, session))
    }

    async fn find_sessions(
        &self,
        owner_prefix: &str,
        session_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredSession>, Error> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = with_conn!(self, |client| async {
            client
                .query(
                    "SELECT owner, id, metadata, extensions, closed, updated_at FROM loom_sessions
                     WHERE left(owner, length($1::TEXT)) = $1::TEXT AND ($2::TEXT IS NULL OR id = $2::TEXT)
                     ORDER BY updated_at DESC, id LIMIT $3::BIGINT",
                    &[&owner_prefix, &session_id, &limit],
                )
                .await
                .map_err(|e| pg("finding sessions", e))
        })?;
        rows.iter()
            .map(|row| {
                let (owner, id): (String, String) = (get(row, 0)?, get(row, 1)?);
                let user = (!owner.is_empty()).then_some(owner.as_str());
                let record = decode_session(SessionKey::scoped(user, &id), get(row, 2)?, get(row, 3)?)?;
                Ok(StoredSession { record, closed: get(row, 4)?, updated_at: from_millis(get(row, 5)?) })
            })
            .collect()
    }
}
