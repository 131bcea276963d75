//! Tenant isolation of memory (issue 12's property): for random interleavings of users and
//! operations — facts, keyed and named supersession (including naming another user's fact),
//! working blocks, runs that recall and record episodes, forgetting an item (including another
//! user's), a time range or everything, recall and search (full text and vectors) — no recall,
//! search, run or export ever shows another user's item, and every user's valid facts, episodes
//! and block are exactly what a simple model of the operations says (so a superseded or forgotten
//! item is never recalled either).
//!
//! The durable stores are driven through two agents on the same database, so two store instances
//! (two vector caches, as two processes would have) interleave: a write through one must be seen by
//! the next search through the other. Backends: in memory and SQLite (a fresh file per case), and
//! PostgreSQL when `LOOM_TEST_POSTGRES_URL` is set (with the `postgres` feature; else it prints
//! "skipped"), in a schema of its own, dropped at the end, with users unique to each case.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod memory_support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use loom_agent::memory::{Forget, ItemKind, MemoryHandle, MemoryItem, NewFact};
use loom_agent::model::{FnModel, ScriptedTurn};
use loom_agent::{Agent, EventKind, RunRequest, RunState};
use memory_support::*;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    /// A plain fact.
    Fact(usize, u8),
    /// A fact with the key `k{n}`: it supersedes the user's valid fact with that key.
    Keyed(usize, u8, u8),
    /// A fact naming in `supersedes` the newest fact of user `.1` (another user's is ignored).
    Supersede(usize, usize, u8),
    /// Sets the user's `profile` block.
    Block(usize, u8),
    /// A run: recall before it, an episode after it.
    Run(usize, u8),
    /// `Forget::Item` of the newest fact of user `.1` (another user's id: nothing goes).
    ForgetItem(usize, usize),
    /// `Forget::Range` over the whole case: every fact and episode, not the block.
    ForgetRange(usize),
    /// `Forget::All`.
    ForgetAll(usize),
    /// `recall`, `search` and `export`.
    Recall(usize, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..3usize, 0..6u8).prop_map(|(u, w)| Op::Fact(u, w)),
        2 => (0..3usize, 0..3u8, 0..6u8).prop_map(|(u, k, w)| Op::Keyed(u, k, w)),
        1 => (0..3usize, 0..3usize, 0..6u8).prop_map(|(u, t, w)| Op::Supersede(u, t, w)),
        1 => (0..3usize, 0..6u8).prop_map(|(u, w)| Op::Block(u, w)),
        2 => (0..3usize, 0..6u8).prop_map(|(u, w)| Op::Run(u, w)),
        1 => (0..3usize, 0..3usize).prop_map(|(u, t)| Op::ForgetItem(u, t)),
        1 => (0..3usize).prop_map(Op::ForgetRange),
        1 => (0..3usize).prop_map(Op::ForgetAll),
        4 => (0..3usize, 0..6u8).prop_map(|(u, w)| Op::Recall(u, w)),
    ]
}

/// Operations, each through agent 0 or 1 (the same agent for the in-memory store).
fn plan() -> impl Strategy<Value = Vec<(Op, usize)>> {
    proptest::collection::vec((op(), 0..2usize), 1..32)
}

const WORDS: [&str; 6] = ["apple", "river", "violin", "garden", "rocket", "harbor"];
const NAMES: [&str; 3] = ["ann", "bob", "cy"];

/// What one user's memory must hold.
#[derive(Default, Debug)]
struct Expected {
    /// Valid facts: id → key.
    facts: BTreeMap<String, Option<String>>,
    /// The newest fact's id (valid or not).
    newest: Option<String>,
    /// The markers (`[sN]`) of the stored episodes.
    episodes: BTreeSet<String>,
    /// The `profile` block's text.
    block: Option<String>,
}

/// A model call: the user it ran for, and the text of every message it was sent.
type Seen = (String, Vec<String>);

/// The tagging model: answers with the prompt it was given, and logs what it saw.
fn tagger(log: Arc<Mutex<Vec<Seen>>>) -> FnModel {
    FnModel::new("tagger", move |req| {
        let texts = req.messages.iter().map(|m| m.text()).collect();
        log.lock().unwrap().push((req.user_id.unwrap_or_default().to_string(), texts));
        let last = req.messages.last().map(|m| m.text()).unwrap_or_default();
        ScriptedTurn::text(format!("answer {last}"))
    })
}

/// The marker `[sN]` in `text`, if any.
fn marker(text: &str) -> Option<&str> {
    let start = text.find("[s")?;
    let end = start + text[start..].find(']')?;
    Some(&text[start..=end])
}

/// Checks one recalled or found item of `user` against what they must hold.
fn check_item(user: &str, item: &MemoryItem, expected: &Expected) {
    assert!(item.text.contains(&format!("{user}-tag")), "{user} got {item:?}");
    match item.kind {
        ItemKind::Fact => assert!(expected.facts.contains_key(&item.id), "{user}: not a valid fact: {item:?}"),
        ItemKind::Episode => {
            let m = marker(&item.text).unwrap_or_default();
            assert!(expected.episodes.contains(m), "{user}: not a stored episode: {item:?}");
        }
    }
}

/// Runs `plan` on the memory at `url` (two agents on it unless it is `memory`); `users` are the
/// three users' ids, each text an operation stores is tagged `<user>-tag` and marked `[sN]`.
async fn check_isolation(url: &str, users: [String; 3], plan: Vec<(Op, usize)>) {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let instances = if url == "memory" { 1 } else { 2 };
    let agents: Vec<Agent> = (0..instances)
        .map(|_| {
            let builder = Agent::builder().model(tagger(seen.clone()));
            // `pgexact:URL`: PostgreSQL with pgvector turned off (the exact path).
            #[cfg(feature = "postgres")]
            let builder = match url.strip_prefix("pgexact:") {
                Some(url) => {
                    builder.memory_store(loom_agent::memory::PostgresMemoryStore::new(url).unwrap().pgvector(false))
                }
                None => builder.memory(url),
            };
            #[cfg(not(feature = "postgres"))]
            let builder = builder.memory(url);
            builder.embedder(HashEmbedder).auto_extract(false).build().unwrap()
        })
        .collect();
    let memories: Vec<MemoryHandle> = agents.iter().map(|a| a.memory()).collect();
    let started: DateTime<Utc> = Utc::now() - chrono::Duration::minutes(1);
    let mut expected: [Expected; 3] = Default::default();
    for (step, (op, via)) in plan.into_iter().enumerate() {
        let via = via % instances;
        let (agent, m) = (&agents[via], &memories[via]);
        let mark = format!("[s{step}]");
        match op {
            Op::Fact(u, w) => {
                let text = format!("{}-tag likes {} {mark}", users[u], WORDS[w as usize]);
                let fact = m.remember_fact(&users[u], NewFact::new(text)).await.unwrap();
                expected[u].facts.insert(fact.id.clone(), None);
                expected[u].newest = Some(fact.id);
            }
            Op::Keyed(u, k, w) => {
                let key = format!("k{k}");
                let text = format!("{}-tag keeps {} as {key} {mark}", users[u], WORDS[w as usize]);
                let fact = m.remember_fact(&users[u], NewFact::new(text).key(&key)).await.unwrap();
                expected[u].facts.retain(|_, old| old.as_deref() != Some(key.as_str()));
                expected[u].facts.insert(fact.id.clone(), Some(key));
                expected[u].newest = Some(fact.id);
            }
            Op::Supersede(u, t, w) => {
                let named = expected[t].newest.clone();
                let text = format!("{}-tag now prefers {} {mark}", users[u], WORDS[w as usize]);
                let mut new = NewFact::new(text);
                new.supersedes = named.clone();
                let fact = m.remember_fact(&users[u], new).await.unwrap();
                if let (Some(named), true) = (named, u == t) {
                    expected[u].facts.remove(&named);
                }
                expected[u].facts.insert(fact.id.clone(), None);
                expected[u].newest = Some(fact.id);
            }
            Op::Block(u, w) => {
                let text = format!("{}-tag block {} {mark}", users[u], WORDS[w as usize]);
                m.set_block(&users[u], "profile", &text).await.unwrap();
                expected[u].block = Some(text);
            }
            Op::Run(u, w) => {
                // Half the runs go to one session id every user picks: only its first user's run it.
                let session = if w % 2 == 0 { "shared".to_string() } else { format!("own-{}", users[u]) };
                let prompt = format!("{}-tag asks about {} {mark}", users[u], WORDS[w as usize]);
                let result = agent.run(RunRequest::new(prompt).user(&users[u]).session(&session)).await.unwrap();
                for e in result.events.iter() {
                    if let EventKind::MemoryRecalled(r) = &e.kind {
                        for item in &r.items {
                            assert!(item.text.contains(&format!("{}-tag", users[u])), "{} recalled {item:?}", users[u]);
                            if item.kind == "fact" {
                                assert!(expected[u].facts.contains_key(&item.id), "not a valid fact: {item:?}");
                            }
                        }
                    }
                }
                if result.state == RunState::Completed {
                    expected[u].episodes.insert(mark);
                }
            }
            Op::ForgetItem(u, t) => {
                if let Some(id) = expected[t].newest.clone() {
                    let gone = m.forget(&users[u], Forget::Item(id.clone())).await.unwrap();
                    if u == t {
                        expected[u].facts.remove(&id);
                    } else {
                        assert_eq!(gone, 0, "{} forgot {}'s fact", users[u], users[t]);
                    }
                }
            }
            Op::ForgetRange(u) => {
                let to = Utc::now() + chrono::Duration::minutes(1);
                m.forget(&users[u], Forget::Range(started, to)).await.unwrap();
                expected[u].facts.clear();
                expected[u].episodes.clear();
            }
            Op::ForgetAll(u) => {
                m.forget(&users[u], Forget::All).await.unwrap();
                expected[u] = Expected { newest: expected[u].newest.take(), ..Expected::default() };
            }
            Op::Recall(u, w) => {
                let (user, word) = (&users[u], WORDS[w as usize]);
                let r = m.recall(user, word).await.unwrap();
                for (_, item) in &r.items {
                    check_item(user, item, &expected[u]);
                }
                let blocks: Vec<&str> = r.blocks.iter().map(|b| b.text.as_str()).collect();
                assert_eq!(blocks, expected[u].block.iter().map(String::as_str).collect::<Vec<_>>(), "{user}");
                for (_, item) in m.search(user, word, 50).await.unwrap() {
                    check_item(user, &item, &expected[u]);
                }
                let export = m.export(user).await.unwrap().to_string();
                for (o, other) in users.iter().enumerate().filter(|(o, _)| *o != u) {
                    assert!(!export.contains(&format!("{other}-tag")), "{user}'s export holds user {o}'s data");
                }
            }
        }
        // Every user's valid facts and episodes, read through either instance, are the expected ones.
        for m in &memories {
            for (u, user) in users.iter().enumerate() {
                let facts: BTreeSet<String> = m.facts(user).await.unwrap().into_iter().map(|f| f.id).collect();
                assert_eq!(facts, expected[u].facts.keys().cloned().collect(), "{user}'s facts after step {step}");
                let episodes: BTreeSet<String> = m
                    .episodes(user, 1000)
                    .await
                    .unwrap()
                    .iter()
                    .map(|e| marker(&e.prompt).unwrap_or_default().to_string())
                    .collect();
                assert_eq!(episodes, expected[u].episodes, "{user}'s episodes after step {step}");
            }
        }
    }
    for (user, texts) in seen.lock().unwrap().iter() {
        for text in texts {
            for other in users.iter().filter(|o| *o != user) {
                assert!(!text.contains(&format!("{other}-tag")), "{user}'s model call saw {other}'s memory");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn no_recall_returns_another_users_item(plan in plan(), sqlite in any::<bool>()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let path = temp_db();
        let url = if sqlite { format!("sqlite:{}", path.display()) } else { "memory".to_string() };
        rt.block_on(check_isolation(&url, NAMES.map(String::from), plan));
        remove_db(&path);
    }
}

/// The same property on PostgreSQL, on both vector paths — pgvector when the server has it (the
/// default), and the exact scan through the vector cache — in a schema of its own; each case's
/// users are new, so the cases share the schema without meeting.
#[cfg(feature = "postgres")]
#[test]
fn no_recall_returns_another_users_item_on_postgres() {
    use proptest::test_runner::{Config, TestRunner};

    let Some(url) = postgres_url() else { return };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let schema = format!("loom_mem_isolation_{}", unique());
    let admin = rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
        // Where the server has pgvector, create it outside the schema dropped below (a store
        // would create it in the first schema of its search path).
        if client.query_opt("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'", &[]).await.unwrap().is_some()
        {
            let _ = client.batch_execute("CREATE EXTENSION IF NOT EXISTS vector").await;
        }
        client
    });
    let sep = if url.contains('?') { '&' } else { '?' };
    let scoped = format!("{url}{sep}options=-csearch_path%3D{schema}");
    let cases = std::env::var("LOOM_TEST_ISOLATION_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24);
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    let exact = format!("pgexact:{scoped}");
    let outcome = runner.run(&plan(), |plan| {
        for url in [&scoped, &exact] {
            let run = unique();
            rt.block_on(check_isolation(url, NAMES.map(|n| format!("{n}_{run}")), plan.clone()));
        }
        Ok(())
    });
    rt.block_on(admin.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))).unwrap();
    if let Err(e) = outcome {
        panic!("{e}");
    }
}
