//! The multi-entry append (`Journal::append_all`): held-back entries and the write that carries
//! them, in order, with their events, all or nothing under the lease rule (part of the journal
//! conformance suite: `super` holds the backends and the data).

use super::*;
use loom_agent::store::JournalWrite;

/// A model's result with a tool call, then the call's intent: the pair the runtime writes together.
fn result_and_intent() -> [JournalEntry; 2] {
    let entries = every_entry();
    [entries[0].clone(), entries[3].clone()]
}

pub(crate) async fn append_all_keeps_order_and_events(b: &Backend) {
    let (run, ses, _) = ids("batch");
    let a = long("a");
    let all = events(&run, &ses, 0..8);
    b.journal.begin(&record(&run, &ses, None), &a, &all[..1]).await.unwrap();
    let entries = every_entry();
    b.journal.append(&run, &a, &entries[1], &all[1..2]).await.unwrap();
    let batch = [
        JournalWrite { entry: &entries[0], events: &all[2..4] },
        JournalWrite { entry: &entries[3], events: &all[4..5] },
        JournalWrite { entry: &entries[5], events: &[] },
    ];
    b.journal.append_all(&run, &a, &batch).await.unwrap();
    b.journal.append(&run, &a, &entries[4], &all[5..6]).await.unwrap();
    // A batch of one is an append.
    b.journal.append_all(&run, &a, &[JournalWrite { entry: &entries[6], events: &all[6..8] }]).await.unwrap();
    let loaded = b.journal.load(&run).await.unwrap().unwrap();
    let expected: Vec<JournalEntry> = [1, 0, 3, 5, 4, 6].iter().map(|&i| entries[i].clone()).collect();
    assert_eq!(loaded.entries, expected, "the batch's entries in order, between the appends around it");
    assert_eq!(loaded.events, all, "every event once, in order");
    assert_eq!(loaded.lease_owner.as_deref(), Some("a"));
    b.journal.end(&run, &a, RunState::Completed, &[]).await.unwrap();
    assert!(b.journal.load(&run).await.unwrap().unwrap().finished);
}

pub(crate) async fn append_all_is_fenced(b: &Backend) {
    let (run, ses, _) = ids("batch_fenced");
    let a = long("a");
    b.journal.begin(&record(&run, &ses, None), &a, &events(&run, &ses, 0..1)).await.unwrap();
    let [result, intent] = result_and_intent();
    let evs = events(&run, &ses, 1..4);
    let batch =
        [JournalWrite { entry: &result, events: &evs[..2] }, JournalWrite { entry: &intent, events: &evs[2..] }];
    // Another owner: nothing of the batch is written.
    assert_lease_lost(b.journal.append_all(&run, &long("b"), &batch).await, "another owner's batch");
    // A takeover by the same owner makes its older fencing number stale.
    let fence = b.journal.acquire(&run, &a).await.unwrap();
    assert_lease_lost(b.journal.append_all(&run, &a, &batch).await, "a stale batch");
    let loaded = b.journal.load(&run).await.unwrap().unwrap();
    assert!(loaded.entries.is_empty(), "no entry of a refused batch: {:?}", loaded.entries);
    assert_eq!(loaded.events.len(), 1, "no event of a refused batch");
    let current = a.fenced(fence);
    b.journal.append_all(&run, &current, &batch).await.unwrap();
    let loaded = b.journal.load(&run).await.unwrap().unwrap();
    assert_eq!(loaded.entries, vec![result.clone(), intent.clone()]);
    assert_eq!(loaded.events.len(), 4);
    // A finished run takes no batch.
    b.journal.end(&run, &current, RunState::Completed, &[]).await.unwrap();
    assert!(b.journal.append_all(&run, &current, &batch).await.is_err(), "a finished run's batch");
    assert_eq!(b.journal.load(&run).await.unwrap().unwrap().entries.len(), 2);
}

/// Batches and single appends racing on one run (each writer with its own connection) get
/// distinct seqs: every entry is kept, each batch's entries in their order.
pub(crate) async fn concurrent_batches_get_distinct_seqs(b: &Backend) {
    let (run, ses, _) = ids("batch_race");
    let a = long("a");
    b.journal.begin(&record(&run, &ses, None), &a, &[]).await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..4u32 {
        let journal = b.another_journal().await;
        let (run, a) = (run.clone(), a.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..3u32 {
                let first = JournalEntry::Steered { turn: w, text: format!("{w}.{i}.a") };
                let second = JournalEntry::Steered { turn: w, text: format!("{w}.{i}.b") };
                let batch = [JournalWrite { entry: &first, events: &[] }, JournalWrite { entry: &second, events: &[] }];
                journal.append_all(&run, &a, &batch).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let loaded = b.journal.load(&run).await.unwrap().unwrap();
    assert_eq!(loaded.entries.len(), 24, "every entry of every batch");
    for w in 0..4u32 {
        let texts: Vec<&str> = loaded
            .entries
            .iter()
            .filter_map(|e| match e {
                JournalEntry::Steered { turn, text } if *turn == w => Some(text.as_str()),
                _ => None,
            })
            .collect();
        let expected: Vec<String> = (0..3).flat_map(|i| [format!("{w}.{i}.a"), format!("{w}.{i}.b")]).collect();
        assert_eq!(texts, expected, "writer {w}'s entries in its order");
    }
}
