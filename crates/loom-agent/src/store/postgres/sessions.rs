//! The PostgreSQL store as a [`SessionStore`]: sessions, history and finished runs' transcripts.

use std::sync::Arc;

use tokio_postgres::Client;

use super::{PostgresStore, get, insert_events, load_events, pg, snapshot};
use crate::error::Error;
use crate::message::Message;
use crate::run::Transcript;
use crate::store::sql::{
    RunRow, decode_history, decode_input, decode_session, decode_transcript, encode_history, from_millis, json,
    merge_session, now_ms, parse_state,
};
use crate::store::{RunSummary, SessionKey, SessionRecord, SessionStore};
use loom_core::store::may_lock_session;

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

async fn get_session_tx(client: &mut Client, key: SessionKey<'_>) -> Result<Option<SessionRecord>, Error> {
    let row = client
        .query_opt(
            "SELECT metadata, extensions FROM loom_sessions WHERE owner = $1 AND id = $2",
            &[&key.owner(), &key.session_id],
        )
        .await
        .map_err(|e| pg("reading the session", e))?;
    row.map(|row| decode_session(key, get(&row, 0)?, get(&row, 1)?)).transpose()
}

async fn history_tx(client: &mut Client, key: SessionKey<'_>) -> Result<Vec<Message>, Error> {
    let rows = client
        .query(
            "SELECT id, message FROM loom_history WHERE session_id = $1 AND owner = $2 ORDER BY id",
            &[&key.session_id, &key.owner()],
        )
        .await
        .map_err(|e| pg("reading the history", e))?;
    rows.iter().map(|row| decode_history(key.session_id, get(row, 0)?, get(row, 1)?)).collect()
}

async fn append_history_tx(
    client: &mut Client,
    key: SessionKey<'_>,
    run_id: &str,
    rows: &[String],
) -> Result<(), Error> {
    let tx = client.transaction().await.map_err(|e| pg("beginning", e))?;
    let stmt = tx
        .prepare(
            "INSERT INTO loom_history (owner, session_id, run_id, idx, message) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (session_id, run_id, idx) DO NOTHING",
        )
        .await
        .map_err(|e| pg("preparing", e))?;
    // One row at a time, so the ids (the history's order) follow the messages' order.
    for (i, message) in rows.iter().enumerate() {
        let idx = i64::try_from(i).unwrap_or(i64::MAX);
        tx.execute(&stmt, &[&key.owner(), &key.session_id, &run_id, &idx, message])
            .await
            .map_err(|e| pg("appending to the history", e))?;
    }
    tx.commit().await.map_err(|e| pg("committing", e))
}

async fn save_run_tx(client: &mut Client, run: &RunRow) -> Result<(), Error> {
    let tx = client.transaction().await.map_err(|e| pg("beginning", e))?;
    let row = tx
        .query_one(
            "INSERT INTO loom_runs (run_id, session_id, user_id, state, finished, input, transcript, started_at,
            finished_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (run_id) DO UPDATE SET state = EXCLUDED.state, input = EXCLUDED.input,
            transcript = EXCLUDED.transcript, finished_at = EXCLUDED.finished_at,
            finished = CASE WHEN loom_runs.record IS NULL THEN EXCLUDED.finished ELSE loom_runs.finished END
         RETURNING record IS NOT NULL",
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
            ],
        )
        .await
        .map_err(|e| pg("saving the run", e))?;
    // A journaled run's events are written by the journal (at its boundaries and final commit),
    // so a resumed run finds exactly the events its journal covers.
    let journaled: bool = get(&row, 0)?;
    if !journaled {
        let events: (Vec<i64>, Vec<String>) = run.events.iter().cloned().unzip();
        insert_events(&tx, &run.run_id, &events).await?;
    }
    tx.commit().await.map_err(|e| pg("committing", e))
}

async fn get_run_tx(client: &mut Client, key: SessionKey<'_>, run_id: &str) -> Result<Option<Arc<Transcript>>, Error> {
    let tx = snapshot(client).await?;
    let row = tx
        .query_opt(
            "SELECT transcript FROM loom_runs
             WHERE run_id = $1 AND session_id = $2 AND user_id IS NOT DISTINCT FROM $3::TEXT",
            &[&run_id, &key.session_id, &key.user_id],
        )
        .await
        .map_err(|e| pg("reading the run", e))?;
    let Some(row) = row else { return Ok(None) };
    let Some(text) = get::<Option<&str>>(&row, 0)? else { return Ok(None) };
    let mut t: Transcript = decode_transcript(run_id, text)?;
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
        with_conn!(self, |client| lock_session_tx(client, session, holder, until_ms))
    }

    async fn unlock_session(&self, session: SessionKey<'_>, holder: &str) -> Result<(), Error> {
        with_conn!(self, |client| async move {
            client
                .execute(
                    "UPDATE loom_sessions SET lock_holder = NULL, lock_expires = NULL
                     WHERE owner = $1 AND id = $2 AND lock_holder = $3",
                    &[&session.owner(), &session.session_id, &holder],
                )
                .await
                .map(|_| ())
                .map_err(|e| pg("releasing the session lock", e))
        })
    }

    async fn open_session(&self, record: &SessionRecord) -> Result<SessionRecord, Error> {
        with_conn!(self, |client| open_session_tx(client, record))
    }

    async fn history(&self, session: SessionKey<'_>) -> Result<Vec<Message>, Error> {
        with_conn!(self, |client| history_tx(client, session))
    }

    async fn get_session(&self, session: SessionKey<'_>) -> Result<Option<SessionRecord>, Error> {
        with_conn!(self, |client| get_session_tx(client, session))
    }

    async fn append_history(&self, session: SessionKey<'_>, run_id: &str, messages: &[Message]) -> Result<(), Error> {
        let rows = encode_history(messages)?;
        with_conn!(self, |client| append_history_tx(client, session, run_id, &rows))
    }

    async fn save_run(&self, transcript: Arc<Transcript>) -> Result<(), Error> {
        let run = RunRow::new(&transcript)?;
        with_conn!(self, |client| save_run_tx(client, &run))
    }

    async fn get_run(&self, session: SessionKey<'_>, run_id: &str) -> Result<Option<Arc<Transcript>>, Error> {
        with_conn!(self, |client| get_run_tx(client, session, run_id))
    }

    async fn list_runs(&self, session: SessionKey<'_>) -> Result<Vec<RunSummary>, Error> {
        with_conn!(self, |client| list_runs_tx(client, session))
    }

    async fn close_session(&self, session: SessionKey<'_>) -> Result<(), Error> {
        with_conn!(self, |client| close_session_tx(client, session))
    }
}
