//! Fencing, the run queue and retention, held to the same rules on every backend (part of the
//! journal conformance suite: `super` holds the backends and the data).

use super::*;
use loom_agent::store::QueuedRun;

/// The run's `finished_at` and `started_at` set to `ms` (the stores stamp them with the clock).
async fn backdate(b: &Backend, run_id: &str, ms: i64) {
    match &b.db {
        // The in-memory journal dates a run by its last event: the events given are old already.
        Db::Memory(_) => {}
        #[cfg(feature = "sqlite")]
        Db::Sqlite(path) => {
            let conn = rusqlite::Connection::open(path).unwrap();
            conn.busy_timeout(Duration::from_secs(10)).unwrap();
            conn.execute(
                "UPDATE loom_runs SET finished_at = ?1, started_at = ?1 WHERE run_id = ?2",
                rusqlite::params![ms, run_id],
            )
            .unwrap();
        }
        #[cfg(feature = "postgres")]
        Db::Postgres(url) => {
            let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            client
                .execute("UPDATE loom_runs SET finished_at = $1, started_at = $1 WHERE run_id = $2", &[&ms, &run_id])
                .await
                .unwrap();
        }
    }
}

fn old_events(run: &str, ses: &str, seqs: std::ops::Range<u64>) -> Vec<Event> {
    let old = DateTime::<Utc>::from_timestamp_millis(946_684_800_000).unwrap(); // 2000-01-01
    events(run, ses, seqs).into_iter().map(|e| Event { at: old, ..e }).collect()
}

/// A writer whose run was taken over since (here by its own owner id, as a second task of one
/// process would) writes nothing: every write carries its fencing number, and the number moved on.
pub(crate) async fn a_stale_writer_is_fenced(b: &Backend) {
    let (run, ses, _) = ids("fenced");
    let a = long("a");
    b.journal.begin(&record(&run, &ses, None), &a, &events(&run, &ses, 0..1)).await.unwrap();
    b.journal.append(&run, &a, &every_entry()[0], &events(&run, &ses, 1..2)).await.unwrap();
    let fence = b.journal.acquire(&run, &a).await.unwrap();
    assert_eq!(fence, 1, "the first takeover's number");
    let entry = &every_entry()[3];
    assert_lease_lost(b.journal.append(&run, &a, entry, &events(&run, &ses, 2..3)).await, "a stale append");
    assert_lease_lost(b.journal.renew(&run, &a).await, "a stale renew");
    assert_lease_lost(b.journal.end(&run, &a, RunState::Completed, &events(&run, &ses, 2..3)).await, "a stale end");
    let loaded = b.journal.load(&run).await.unwrap().unwrap();
    assert_eq!(loaded.entries.len(), 1, "the stale writes left nothing");
    assert_eq!(loaded.events.len(), 2);
    assert!(!loaded.finished);
    assert_eq!(loaded.state, RunState::Running);
    let current = a.fenced(fence);
    b.journal.append(&run, &current, entry, &events(&run, &ses, 2..3)).await.unwrap();
    b.journal.end(&run, &current, RunState::Completed, &events(&run, &ses, 3..4)).await.unwrap();
    let loaded = b.journal.load(&run).await.unwrap().unwrap();
    assert!(loaded.finished);
    assert_eq!(loaded.entries, vec![every_entry()[0].clone(), entry.clone()]);
    assert_eq!(loaded.events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
}

/// Every takeover, by any owner, returns a larger number; only the newest holder writes.
pub(crate) async fn acquire_increments_the_fence(b: &Backend) {
    let (run, ses, _) = ids("fence_inc");
    b.journal.begin(&record(&run, &ses, None), &lease("a", Duration::from_millis(1)), &[]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let first = b.journal.acquire(&run, &lease("b", Duration::from_millis(1))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = b.journal.acquire(&run, &long("c")).await.unwrap();
    let third = b.journal.acquire(&run, &long("c")).await.unwrap();
    assert_eq!((first, second, third), (1, 2, 3));
    let entry = &every_entry()[0];
    let b_lease = lease("b", Duration::from_secs(60)).fenced(first);
    assert_lease_lost(b.journal.append(&run, &b_lease, entry, &[]).await, "b after c took over");
    assert_lease_lost(b.journal.append(&run, &long("c").fenced(second), entry, &[]).await, "c's older number");
    b.journal.append(&run, &long("c").fenced(third), entry, &[]).await.unwrap();
    assert_eq!(b.journal.load(&run).await.unwrap().unwrap().entries.len(), 1);
}

/// `begin` records the lease's number: writes need it, and the next takeover goes past it.
pub(crate) async fn begin_keeps_the_lease_fence(b: &Backend) {
    let (run, ses, _) = ids("fence_begin");
    let a = long("a").fenced(7);
    b.journal.begin(&record(&run, &ses, None), &a, &[]).await.unwrap();
    assert_lease_lost(b.journal.append(&run, &long("a"), &every_entry()[0], &[]).await, "fence 0");
    b.journal.append(&run, &a, &every_entry()[0], &[]).await.unwrap();
    b.journal.renew(&run, &a).await.unwrap();
    assert_eq!(b.journal.acquire(&run, &a).await.unwrap(), 8);
}

/// Two writers that take the run from each other in turn: each is refused once the other took it.
pub(crate) async fn concurrent_takeovers_fence_each_other(b: &Backend) {
    let (run, ses, _) = ids("fence_turns");
    let short = |owner: &str| lease(owner, Duration::from_millis(30));
    let other = b.another_journal().await;
    b.journal.begin(&record(&run, &ses, None), &short("a"), &[]).await.unwrap();
    let entries = every_entry();
    b.journal.append(&run, &short("a"), &entries[0], &[]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    let fb = other.acquire(&run, &short("b")).await.unwrap();
    assert_lease_lost(b.journal.append(&run, &short("a"), &entries[3], &[]).await, "a after b took over");
    other.append(&run, &short("b").fenced(fb), &entries[3], &[]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    let fa = b.journal.acquire(&run, &short("a")).await.unwrap();
    assert!(fa > fb);
    assert_lease_lost(other.append(&run, &short("b").fenced(fb), &entries[5], &[]).await, "b after a took back");
    b.journal.end(&run, &short("a").fenced(fa), RunState::Completed, &[]).await.unwrap();
    let loaded = b.journal.load(&run).await.unwrap().unwrap();
    assert_eq!(loaded.entries, vec![entries[0].clone(), entries[3].clone()]);
    assert!(loaded.finished);
}

/// Retention deletes finished runs older than the cut, with their events and entries, and keeps
/// unfinished and recent ones.
pub(crate) async fn prune_deletes_finished_runs(b: &Backend) {
    let u = unique();
    let run = |x: &str| format!("run_prune_{u}_{x}");
    let ses = format!("ses_prune_{u}");
    let a = long("a");
    let old_ms = 946_684_800_000; // 2000-01-01
    // Old and finished: pruned.
    b.journal.begin(&record(&run("old"), &ses, None), &a, &old_events(&run("old"), &ses, 0..1)).await.unwrap();
    b.journal.append(&run("old"), &a, &every_entry()[0], &old_events(&run("old"), &ses, 1..2)).await.unwrap();
    b.journal.end(&run("old"), &a, RunState::Completed, &old_events(&run("old"), &ses, 2..3)).await.unwrap();
    backdate(b, &run("old"), old_ms).await;
    // Old but unfinished (a crashed run, or one waiting for approval): kept.
    b.journal.begin(&record(&run("open"), &ses, None), &a, &old_events(&run("open"), &ses, 0..1)).await.unwrap();
    backdate(b, &run("open"), old_ms).await;
    // Finished now: kept.
    b.journal.begin(&record(&run("new"), &ses, None), &a, &events(&run("new"), &ses, 0..1)).await.unwrap();
    b.journal.end(&run("new"), &a, RunState::Completed, &events(&run("new"), &ses, 1..2)).await.unwrap();
    let cut = DateTime::<Utc>::from_timestamp_millis(old_ms + 365 * 24 * 3600 * 1000).unwrap();
    let report = b.journal.prune(cut).await.unwrap();
    assert!(report.runs >= 1 && report.events >= 3 && report.entries >= 1, "{report:?}");
    assert!(b.journal.load(&run("old")).await.unwrap().is_none(), "the old run is gone");
    assert!(b.journal.load(&run("open")).await.unwrap().is_some(), "an unfinished run is kept");
    assert_eq!(b.journal.load(&run("new")).await.unwrap().unwrap().events.len(), 2, "a recent run is kept");
    let listed = b.journal.list(&RunFilter { session_id: Some(ses.clone()), ..RunFilter::default() }).await.unwrap();
    let mut ids: Vec<String> = listed.into_iter().map(|r| r.run_id).collect();
    ids.sort();
    assert_eq!(ids, vec![run("new"), run("open")]);
    // A second prune finds nothing of these.
    b.journal.prune(cut).await.unwrap();
    assert!(b.journal.load(&run("open")).await.unwrap().is_some());
}

fn queued(run_id: &str, agent: &str, user: &str, n: i64) -> QueuedRun {
    QueuedRun {
        run_id: run_id.to_string(),
        agent: agent.to_string(),
        session_id: format!("ses_{run_id}"),
        user_id: Some(user.to_string()),
        request: json!({"input": {"prompt": format!("task {n}")}}),
        queued_at: DateTime::<Utc>::from_timestamp_millis(Utc::now().timestamp_millis() + n).unwrap(),
    }
}

/// Queued runs: claimed once across concurrent claimers, begun under the claim's number, taken over
/// (and fenced) when the claimer's lease expires, cancelled durably, listed per tenant.
pub(crate) async fn queued_runs_are_claimed_once(b: &Backend) {
    let Some(queue) = b.journal.run_queue() else { return };
    let u = unique();
    let agent = format!("agent_{u}");
    let user = format!("t{u}/alice");
    let ids: Vec<String> = (0..10).map(|i| format!("run_q_{u}_{i:02}")).collect();
    for (i, id) in ids.iter().enumerate() {
        queue.enqueue(&queued(id, &agent, &user, i as i64)).await.unwrap();
    }
    assert!(queue.enqueue(&queued(&ids[0], &agent, &user, 0)).await.is_err(), "a run id is queued once");
    let status = queue.status(&ids[0]).await.unwrap().unwrap();
    assert_eq!((status.state, status.finished, status.lease_owner.as_deref()), (RunState::Queued, false, None));
    assert!(queue.depth().await.unwrap() >= 10);
    // Four workers claim at once, each up to four runs, until none is left.
    let mut handles = Vec::new();
    for _ in 0..4 {
        handles.push(b.another_journal().await.run_queue().unwrap());
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(handles.len()));
    let tasks: Vec<_> = handles
        .into_iter()
        .enumerate()
        .map(|(i, q)| {
            let (agent, barrier) = (agent.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let mut mine = Vec::new();
                loop {
                    let got = q.claim(&agent, &long(&format!("w{i}")), 4).await.unwrap();
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(got);
                }
            })
        })
        .collect();
    let mut claimed = Vec::new();
    for task in tasks {
        claimed.extend(task.await.unwrap());
    }
    let mut got: Vec<String> = claimed.iter().map(|c| c.run.run_id.clone()).collect();
    got.sort();
    assert_eq!(got, ids, "every run claimed exactly once");
    assert!(claimed.iter().all(|c| c.fence == 1 && !c.begun && !c.cancel_requested));
    let first = claimed.iter().find(|c| c.run.run_id == ids[0]).unwrap();
    assert_eq!(first.run.request, json!({"input": {"prompt": "task 0"}}));
    assert_eq!(first.run.user_id.as_deref(), Some(user.as_str()));
    assert!(queue.claim(&agent, &long("late"), 10).await.unwrap().is_empty(), "held runs are not claimed");
    // The claimer begins the run under its claim; nobody else can.
    let owner = queue.status(&ids[0]).await.unwrap().unwrap().lease_owner.unwrap();
    let mut rec = record(&ids[0], &first.run.session_id, Some(&user));
    assert!(b.journal.begin(&rec, &long("intruder").fenced(1), &[]).await.is_err());
    assert!(b.journal.begin(&rec, &long(&owner), &[]).await.is_err(), "the claim's number is needed");
    rec.started_at = Utc::now();
    b.journal.begin(&rec, &long(&owner).fenced(1), &events(&ids[0], &first.run.session_id, 0..3)).await.unwrap();
    let loaded = b.journal.load(&ids[0]).await.unwrap().unwrap();
    assert_eq!((loaded.state, loaded.lease_owner.as_deref()), (RunState::Running, Some(owner.as_str())));
    let after: Vec<u64> = queue.events_after(&ids[0], Some(0), 10).await.unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(after, vec![1, 2]);
    assert_eq!(queue.events_after(&ids[0], None, 2).await.unwrap().len(), 2);
    // A worker that dies: its claim expires and another worker takes the run, which resumes it.
    let dying = format!("run_q_{u}_dying");
    queue.enqueue(&queued(&dying, &agent, &user, 20)).await.unwrap();
    let w1 = lease("w1", Duration::from_millis(40));
    let c1 = queue.claim(&agent, &w1, 10).await.unwrap();
    assert_eq!(c1.iter().map(|c| c.run.run_id.as_str()).collect::<Vec<_>>(), vec![dying.as_str()]);
    b.journal.begin(&record(&dying, "ses_dying", Some(&user)), &w1.fenced(c1[0].fence), &[]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let c2 = queue.claim(&agent, &long("w2"), 10).await.unwrap();
    assert_eq!(c2.len(), 1);
    assert!(c2[0].begun && c2[0].fence > c1[0].fence, "{:?}", c2[0]);
    assert_lease_lost(b.journal.append(&dying, &w1.fenced(c1[0].fence), &every_entry()[0], &[]).await, "w1 wakes");
    b.journal.append(&dying, &long("w2").fenced(c2[0].fence), &every_entry()[0], &[]).await.unwrap();
    // Cancels are recorded for whoever executes the run.
    assert!(queue.request_cancel(&dying).await.unwrap());
    let asked = queue.cancels_requested(&[dying.clone(), ids[1].clone()]).await.unwrap();
    assert_eq!(asked, vec![dying.clone()]);
    assert!(queue.status(&dying).await.unwrap().unwrap().cancel_requested);
    assert!(!queue.request_cancel(&format!("run_q_{u}_unknown")).await.unwrap());
    // Listed by tenant (a user-id prefix): another tenant sees none of them.
    let mine = queue.runs(&format!("t{u}/"), None, None, None, 100).await.unwrap();
    assert_eq!(mine.len(), 11);
    assert!(mine.windows(2).all(|w| w[0].run_id > w[1].run_id), "newest first");
    assert!(queue.runs(&format!("t{u}x/"), None, None, None, 100).await.unwrap().is_empty());
    let running = queue.runs(&format!("t{u}/"), None, None, Some(RunState::Running), 100).await.unwrap();
    let mut running: Vec<String> = running.into_iter().map(|r| r.run_id).collect();
    running.sort();
    assert_eq!(running, vec![ids[0].clone(), dying.clone()]);
}

/// `request_resume`: a suspended run (or one whose holder died) becomes claimable again, by the
/// agent named (a run started outside the queue included), and is claimed as begun; a run in
/// flight, a finished one, a queued one that never began and an unknown one are not touched.
pub(crate) async fn suspended_runs_are_queued_for_resume(b: &Backend) {
    let Some(queue) = b.journal.run_queue() else { return };
    let u = unique();
    let agent = format!("agent_{u}");
    let user = format!("t{u}/ann");
    // A run started outside the queue (no agent recorded), which suspends.
    let run = format!("run_r_{u}_suspended");
    let a = long("first");
    b.journal.begin(&record(&run, "ses_r", Some(&user)), &a, &[]).await.unwrap();
    // In flight: not resumable.
    assert!(!queue.request_resume(&run, &agent).await.unwrap(), "a held run is not queued");
    b.journal.end(&run, &a, RunState::Suspended, &[]).await.unwrap();
    assert!(queue.claim(&agent, &long("w"), 10).await.unwrap().is_empty(), "a suspended run waits");
    assert!(queue.request_resume(&run, &agent).await.unwrap());
    let s = queue.status(&run).await.unwrap().unwrap();
    assert_eq!((s.state, s.agent.as_deref(), s.finished), (RunState::Queued, Some(agent.as_str()), false));
    let claimed = queue.claim(&agent, &long("w"), 10).await.unwrap();
    assert_eq!(claimed.iter().map(|c| c.run.run_id.as_str()).collect::<Vec<_>>(), vec![run.as_str()]);
    assert!(claimed[0].begun, "the claimer resumes it from its journal");
    // The claimer holds it: a second request changes nothing, and nobody else claims it.
    assert!(!queue.request_resume(&run, &agent).await.unwrap());
    assert!(queue.claim(&agent, &long("w2"), 10).await.unwrap().is_empty());
    // The claimer takes it over (as `Agent::resume` does) and finishes it: not resumable again.
    let fence = b.journal.acquire(&run, &long("w")).await.unwrap();
    b.journal.end(&run, &long("w").fenced(fence), RunState::Completed, &[]).await.unwrap();
    assert!(!queue.request_resume(&run, &agent).await.unwrap(), "a finished run is not resumed");
    // A queued run that never began, and an unknown one.
    let fresh = format!("run_r_{u}_fresh");
    queue.enqueue(&queued(&fresh, &agent, &user, 0)).await.unwrap();
    assert!(!queue.request_resume(&fresh, &agent).await.unwrap());
    assert!(!queue.request_resume(&format!("run_r_{u}_unknown"), &agent).await.unwrap());
    // A run whose holder died (its lease expired) is queued without changing its state.
    let dead = format!("run_r_{u}_dead");
    let short = lease("gone", Duration::from_millis(30));
    b.journal.begin(&record(&dead, "ses_d", Some(&user)), &short, &[]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert!(queue.request_resume(&dead, &agent).await.unwrap());
    assert_eq!(queue.status(&dead).await.unwrap().unwrap().state, RunState::Running);
    let claimed = queue.claim(&agent, &long("w3"), 10).await.unwrap();
    assert!(claimed.iter().any(|c| c.run.run_id == dead && c.begun), "{claimed:?}");
}
