//! The final commit that carries a run's transcript, history, held-back entries and the release of
//! its session's run lock in one step (`Journal::end_with`), and the lease check that writes
//! nothing (`Journal::check_lease`), held to the same rules on every backend (part of the journal
//! conformance suite: `super` holds the backends and the data).

use super::*;
use loom_agent::store::FinalCommit;

/// The final answer, held back by the runtime until the final commit.
fn answer() -> JournalEntry {
    JournalEntry::ModelResult {
        turn: 2,
        response: ModelResponse {
            text: "sunny".into(),
            thinking: Vec::new(),
            tool_calls: Vec::new(),
            usage: Usage { input_tokens: 5, output_tokens: 1, ..Usage::default() },
            finish_reason: FinishReason::Stop,
        },
    }
}

pub(crate) async fn final_commit_is_one_step(b: &Backend) {
    let (run, ses, user) = ids("final");
    let a = long("a");
    let key = SessionKey { user_id: Some(&user), session_id: &ses };
    let mut rec = record(&run, &ses, Some(&user));
    rec.user_id = Some(user.clone());
    let all = events(&run, &ses, 0..4);
    b.journal.begin(&rec, &a, &all[..1]).await.unwrap();
    let first = every_entry().remove(0);
    b.journal.append(&run, &a, &first, &all[1..2]).await.unwrap();
    assert!(b.sessions.lock_session(key, "a#run", Utc::now().timestamp_millis() + 60_000).await.unwrap());
    let mut t = transcript(&run, &ses, RunState::Completed, "sunny", all.clone());
    t.user_id = Some(user.clone());
    let history = t.messages.clone();
    let entries = [answer()];
    let commit = FinalCommit {
        state: RunState::Completed,
        entries: &entries,
        events: &all[2..],
        transcript: &t,
        history: Some(&history),
        unlock: Some((key, "a#run")),
    };
    let shared = b.journal.database_id().is_some() && b.journal.database_id() == b.sessions.session_database_id();
    let done = b.journal.end_with(&run, &a, &commit).await.unwrap();
    assert_eq!(done, b.durable(), "the SQL stores commit it together (their session store shares the database)");
    assert_eq!(shared, b.durable());
    if !done {
        // A journal that cannot wrote nothing: the run is still open under its lease.
        let loaded = b.journal.load(&run).await.unwrap().unwrap();
        assert_eq!(loaded.entries, vec![first]);
        assert!(!loaded.finished);
        return;
    }
    let loaded = b.journal.load(&run).await.unwrap().unwrap();
    assert_eq!(loaded.entries, vec![first, answer()], "the held-back entry follows the written ones");
    assert_eq!(loaded.events, all, "every event, once");
    assert!(loaded.finished);
    assert_eq!(loaded.state, RunState::Completed);
    assert_eq!(loaded.lease_owner, None);
    let saved = b.sessions.get_run(key, &run).await.unwrap().expect("the transcript is saved");
    assert_eq!(saved.output, "sunny");
    assert_eq!(saved.events.len(), 4, "the transcript's events are the journal's");
    assert_eq!(b.sessions.history(key).await.unwrap(), history);
    assert!(
        b.sessions.lock_session(key, "b#run", Utc::now().timestamp_millis() + 60_000).await.unwrap(),
        "the session's run lock was released"
    );
    // The run is over: a second final commit finds no lease.
    assert_lease_lost(b.journal.end_with(&run, &a, &commit).await.map(|_| ()), "a second final commit");
}

pub(crate) async fn final_commit_needs_the_lease(b: &Backend) {
    if !b.durable() {
        return;
    }
    let (run, ses, user) = ids("final_lost");
    let a = long("a");
    let key = SessionKey { user_id: Some(&user), session_id: &ses };
    let mut rec = record(&run, &ses, Some(&user));
    rec.user_id = Some(user.clone());
    b.journal.begin(&rec, &a, &events(&run, &ses, 0..1)).await.unwrap();
    assert!(b.sessions.lock_session(key, "a#run", Utc::now().timestamp_millis() + 60_000).await.unwrap());
    let all = events(&run, &ses, 0..3);
    let mut t = transcript(&run, &ses, RunState::Completed, "sunny", all.clone());
    t.user_id = Some(user.clone());
    let history = t.messages.clone();
    let entries = [answer()];
    let commit = FinalCommit {
        state: RunState::Completed,
        entries: &entries,
        events: &all[1..],
        transcript: &t,
        history: Some(&history),
        unlock: Some((key, "a#run")),
    };
    assert_lease_lost(b.journal.end_with(&run, &long("b"), &commit).await.map(|_| ()), "another owner");
    assert_lease_lost(b.journal.end_with(&run, &a.fenced(3), &commit).await.map(|_| ()), "a stale fence");
    match b.journal.end_with("run_nobody", &a, &commit).await {
        Err(Error::RunNotFound(_)) => {}
        other => panic!("an unknown run: expected RunNotFound, got {other:?}"),
    }
    // Nothing of a refused commit is kept.
    let loaded = b.journal.load(&run).await.unwrap().unwrap();
    assert!(loaded.entries.is_empty());
    assert_eq!(loaded.events.len(), 1);
    assert!(!loaded.finished);
    assert_eq!(loaded.lease_owner.as_deref(), Some("a"));
    assert!(b.sessions.get_run(key, &run).await.unwrap().is_none(), "no transcript");
    assert!(b.sessions.history(key).await.unwrap().is_empty(), "no history");
    assert!(
        !b.sessions.lock_session(key, "b#run", Utc::now().timestamp_millis() + 60_000).await.unwrap(),
        "the lock is still a's"
    );
}

pub(crate) async fn check_lease_writes_nothing(b: &Backend) {
    let (run, ses, _) = ids("check");
    let a = long("a");
    b.journal.begin(&record(&run, &ses, None), &a, &[]).await.unwrap();
    let expires = b.journal.load(&run).await.unwrap().unwrap().lease_expires_at;
    b.journal.check_lease(&run, &a).await.unwrap();
    assert_lease_lost(b.journal.check_lease(&run, &long("b")).await, "another owner");
    assert_lease_lost(b.journal.check_lease(&run, &a.fenced(2)).await, "a stale fence");
    match b.journal.check_lease("run_nobody", &a).await {
        Err(Error::RunNotFound(_)) => {}
        other => panic!("an unknown run: expected RunNotFound, got {other:?}"),
    }
    if b.durable() {
        let after = b.journal.load(&run).await.unwrap().unwrap().lease_expires_at;
        assert_eq!(after, expires, "the SQL stores check without renewing");
    }
    b.journal.end(&run, &a, RunState::Completed, &[]).await.unwrap();
    assert_lease_lost(b.journal.check_lease(&run, &a).await, "after the end");
}

pub(crate) async fn begin_opens_the_session(b: &Backend) {
    let (run, ses, user) = ids("begin_with");
    let a = long("a");
    let key = SessionKey { user_id: Some(&user), session_id: &ses };
    let session = |metadata: Value| SessionRecord {
        id: ses.clone(),
        user_id: Some(user.clone()),
        metadata: obj(metadata),
        extensions: obj(json!({"x": 1})),
    };
    b.sessions.open_session(&session(json!({"kept": true, "over": 1}))).await.unwrap();
    let mut rec = record(&run, &ses, Some(&user));
    rec.user_id = Some(user.clone());
    let done = b.journal.begin_with(&rec, &a, &events(&run, &ses, 0..2), &session(json!({"over": 2}))).await.unwrap();
    assert_eq!(done, b.durable(), "the SQL stores open the session in begin's transaction");
    if !done {
        assert!(b.journal.load(&run).await.unwrap().is_none(), "a journal that cannot wrote nothing");
        return;
    }
    let loaded = b.journal.load(&run).await.unwrap().unwrap();
    assert_eq!(loaded.record, rec);
    assert_eq!(loaded.events.len(), 2);
    let stored = b.sessions.get_session(key).await.unwrap().unwrap();
    assert_eq!(stored.metadata, obj(json!({"kept": true, "over": 2})), "merged as open_session merges");
    assert_eq!(stored.extensions, obj(json!({"x": 1})));
    // A second begin of the run fails and leaves the session alone.
    let again = b.journal.begin_with(&rec, &a, &[], &session(json!({"over": 3}))).await;
    assert!(again.is_err(), "a journaled run is not begun twice");
    let stored = b.sessions.get_session(key).await.unwrap().unwrap();
    assert_eq!(stored.metadata, obj(json!({"kept": true, "over": 2})));
    // A new session is created.
    let (run2, ses2, _) = ids("begin_with_new");
    let fresh =
        SessionRecord { id: ses2.clone(), user_id: None, metadata: obj(json!({"n": 1})), extensions: Map::new() };
    assert!(b.journal.begin_with(&record(&run2, &ses2, None), &a, &[], &fresh).await.unwrap());
    let stored = b.sessions.get_session(SessionKey { user_id: None, session_id: &ses2 }).await.unwrap().unwrap();
    assert_eq!(stored.metadata, obj(json!({"n": 1})));
}

pub(crate) async fn lock_and_open_is_one_step(b: &Backend) {
    if !b.durable() {
        return; // the in-memory store has no run lock (one process)
    }
    let (_, ses, user) = ids("lock_open");
    let key = SessionKey { user_id: Some(&user), session_id: &ses };
    let later = Utc::now().timestamp_millis() + 60_000;
    let session = |metadata: Value| SessionRecord {
        id: ses.clone(),
        user_id: Some(user.clone()),
        metadata: obj(metadata),
        extensions: Map::new(),
    };
    assert!(b.sessions.lock_and_open(&session(json!({"a": 1, "b": 1})), "a#1", later).await.unwrap());
    let stored = b.sessions.get_session(key).await.unwrap().unwrap();
    assert_eq!(stored.metadata, obj(json!({"a": 1, "b": 1})), "created with its metadata");
    assert!(!b.sessions.lock_and_open(&session(json!({"b": 2})), "b#1", later).await.unwrap(), "held by a");
    assert_eq!(
        b.sessions.get_session(key).await.unwrap().unwrap().metadata,
        obj(json!({"a": 1, "b": 1})),
        "a refused lock opens nothing"
    );
    assert!(b.sessions.lock_and_open(&session(json!({"b": 3})), "a#1", later).await.unwrap(), "a renews");
    assert_eq!(b.sessions.get_session(key).await.unwrap().unwrap().metadata, obj(json!({"a": 1, "b": 3})), "merged");
    b.sessions.unlock_session(key, "a#1").await.unwrap();
    assert!(b.sessions.lock_and_open(&session(json!({})), "b#1", later).await.unwrap(), "released");
}
