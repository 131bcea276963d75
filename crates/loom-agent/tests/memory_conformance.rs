//! One conformance suite for every memory store: the same checks run against `InMemoryStore`,
//! `SqliteMemoryStore` and `PostgresMemoryStore` (the latter with `LOOM_TEST_POSTGRES_URL` and the
//! `postgres` feature; without them it prints "skipped" and passes). Every check uses its own user
//! ids, so checks can share a database.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod memory_support;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use loom_agent::Error;
use loom_agent::memory::{
    Embedding, Forget, InMemoryStore, ItemKind, MemoryStore, NewEpisode, NewFact, Owner, open_memory_store,
};
use memory_support::*;

// ---------------------------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------------------------

enum Db {
    Memory(Arc<InMemoryStore>),
    #[cfg(feature = "sqlite")]
    Sqlite(std::path::PathBuf),
    /// The URL, and whether the store searches through pgvector.
    #[cfg(feature = "postgres")]
    Postgres(String, bool),
}

struct Backend {
    db: Db,
    store: Arc<dyn MemoryStore>,
}

impl Backend {
    fn memory() -> Backend {
        let store = Arc::new(InMemoryStore::new());
        Backend { db: Db::Memory(store.clone()), store }
    }

    #[cfg(feature = "sqlite")]
    fn sqlite() -> Backend {
        let path = temp_db();
        let store = Arc::new(loom_agent::memory::SqliteMemoryStore::open(&path).unwrap());
        Backend { db: Db::Sqlite(path), store }
    }

    /// PostgreSQL through pgvector when the server has it (else the exact path).
    #[cfg(feature = "postgres")]
    async fn postgres() -> Option<Backend> {
        Self::postgres_with(true).await
    }

    /// PostgreSQL with pgvector turned off: the exact scan through the vector cache.
    #[cfg(feature = "postgres")]
    async fn postgres_exact() -> Option<Backend> {
        Self::postgres_with(false).await
    }

    #[cfg(feature = "postgres")]
    async fn postgres_with(pgvector: bool) -> Option<Backend> {
        let url = postgres_url()?;
        let store = loom_agent::memory::PostgresMemoryStore::new(&url).unwrap().pgvector(pgvector);
        let path = store.vector_path().await.unwrap();
        let on_pgvector = matches!(path, loom_agent::memory::VectorPath::Pgvector { .. });
        Some(Backend { db: Db::Postgres(url, on_pgvector), store: Arc::new(store) })
    }

    /// Another handle on the same data (its own connection for the durable stores): a restart.
    async fn reopen(&self) -> Arc<dyn MemoryStore> {
        match &self.db {
            Db::Memory(store) => store.clone(),
            #[cfg(feature = "sqlite")]
            Db::Sqlite(path) => Arc::new(loom_agent::memory::SqliteMemoryStore::open(path).unwrap()),
            #[cfg(feature = "postgres")]
            Db::Postgres(url, pgvector) => {
                let store = loom_agent::memory::PostgresMemoryStore::new(url).unwrap().pgvector(*pgvector);
                store.vector_path().await.unwrap();
                Arc::new(store)
            }
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        #[cfg(feature = "sqlite")]
        if let Db::Sqlite(path) = &self.db {
            remove_db(path);
        }
    }
}

fn owner(tag: &str) -> Owner {
    Owner::user(format!("{tag}_{}", unique())).unwrap()
}

fn episode(run: &str, prompt: &str, answer: &str) -> NewEpisode {
    NewEpisode {
        run_id: run.into(),
        session_id: "s1".into(),
        prompt: prompt.into(),
        answer: answer.into(),
        tools: String::new(),
        pending_extraction: true,
    }
}

fn emb(text: &str) -> Option<Embedding> {
    Some(Embedding { model: "test:hash-64".into(), vector: hash_embed(text) })
}

// ---------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------

async fn episodes_round_trip_once_per_run(b: &Backend) {
    let o = owner("ep");
    let first = b.store.add_episode(&o, episode("r1", "Where is Lyon?", "In France."), None).await.unwrap().unwrap();
    assert_eq!(first.run_id, "r1");
    assert!(!first.extracted);
    assert!(b.store.add_episode(&o, episode("r1", "again", "again"), None).await.unwrap().is_none(), "one per run");
    b.store.add_episode(&o, episode("r2", "Second", "Two"), None).await.unwrap().unwrap();
    let eps = b.store.episodes(&o, 10).await.unwrap();
    assert_eq!(eps.iter().map(|e| e.run_id.as_str()).collect::<Vec<_>>(), ["r2", "r1"], "newest first");
    assert_eq!(eps[1].prompt, "Where is Lyon?");
    assert_eq!(eps[1].answer, "In France.");
    assert_eq!(b.store.episodes(&o, 1).await.unwrap().len(), 1);
    let pending = b.store.pending_episodes(&o).await.unwrap();
    assert_eq!(pending.len(), 2);
    b.store.mark_extracted(&o, &first.id).await.unwrap();
    let pending = b.store.pending_episodes(&o).await.unwrap();
    assert_eq!(pending.iter().map(|e| e.run_id.as_str()).collect::<Vec<_>>(), ["r2"]);
}

async fn facts_supersede_by_key_and_by_id(b: &Backend) {
    let o = owner("sup");
    let paris = b.store.add_fact(&o, NewFact::new("Lives in Paris.").key("home_city"), None).await.unwrap();
    let cat = b.store.add_fact(&o, NewFact::new("Has a cat named Miso."), None).await.unwrap();
    let berlin = b.store.add_fact(&o, NewFact::new("Moved to Berlin.").key("Home_City"), None).await.unwrap();
    let valid = b.store.facts(&o, false).await.unwrap();
    assert_eq!(
        valid.iter().map(|f| f.statement.as_str()).collect::<Vec<_>>(),
        ["Has a cat named Miso.", "Moved to Berlin."]
    );
    let all = b.store.facts(&o, true).await.unwrap();
    assert_eq!(all.len(), 3);
    let old = all.iter().find(|f| f.id == paris.id).unwrap();
    assert_eq!(old.superseded_by.as_deref(), Some(berlin.id.as_str()));
    assert_eq!(old.valid_to, Some(berlin.valid_from), "bi-temporal: the old fact held until the new one");
    assert!(old.recorded_at <= berlin.recorded_at);
    assert_eq!(berlin.key.as_deref(), Some("home_city"));
    // By id: the extractor names the fact a new one contradicts.
    let dog = b
        .store
        .add_fact(&o, NewFact::new("The cat Miso died; now has a dog.").supersedes(&cat.id), None)
        .await
        .unwrap();
    let valid = b.store.facts(&o, false).await.unwrap();
    assert_eq!(valid.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(), [berlin.id.as_str(), dog.id.as_str()]);
    // A superseded fact is no longer found.
    assert!(b.store.search_text(&o, "Paris", 10).await.unwrap().is_empty(), "superseded facts are not recalled");
    assert_eq!(b.store.search_text(&o, "Berlin", 10).await.unwrap()[0].id, berlin.id);
}

async fn another_owners_fact_is_never_superseded(b: &Backend) {
    let (a, z) = (owner("victim"), owner("attacker"));
    let victim = b.store.add_fact(&a, NewFact::new("Prefers tea.").key("drink"), None).await.unwrap();
    b.store.add_fact(&z, NewFact::new("Prefers coffee.").key("drink").supersedes(&victim.id), None).await.unwrap();
    assert_eq!(b.store.facts(&a, false).await.unwrap()[0].id, victim.id);
    assert_eq!(b.store.facts(&a, true).await.unwrap().len(), 1);
}

async fn identical_facts_are_stored_once(b: &Backend) {
    let o = owner("dup");
    let one = b.store.add_fact(&o, NewFact::new("Speaks Japanese."), None).await.unwrap();
    let two = b.store.add_fact(&o, NewFact::new("  speaks japanese.  "), None).await.unwrap();
    assert_eq!(one.id, two.id);
    assert_eq!(b.store.facts(&o, true).await.unwrap().len(), 1);
    assert!(matches!(b.store.add_fact(&o, NewFact::new("   "), None).await, Err(Error::Config(_))));
}

async fn text_search_ranks_matches(b: &Backend) {
    let o = owner("fts");
    b.store.add_fact(&o, NewFact::new("Works as a nurse at the city hospital."), None).await.unwrap();
    let rust = b.store.add_fact(&o, NewFact::new("Favourite programming language is Rust."), None).await.unwrap();
    b.store
        .add_episode(&o, episode("r1", "Recommend a book on gardening", "Try 'The Well-Tempered Garden'."), None)
        .await
        .unwrap();
    let found = b.store.search_text(&o, "Which programming languages does she like?", 5).await.unwrap();
    assert_eq!(found.first().map(|i| i.id.as_str()), Some(rust.id.as_str()), "{found:?}");
    assert_eq!(found[0].kind, ItemKind::Fact);
    let garden = b.store.search_text(&o, "gardening books", 5).await.unwrap();
    assert_eq!(garden.len(), 1);
    assert_eq!(garden[0].kind, ItemKind::Episode);
    assert!(b.store.search_text(&o, "the of and", 5).await.unwrap().is_empty(), "stop words alone find nothing");
    assert!(
        b.store.search_text(&o, "\"quotes\" OR (NEAR", 5).await.unwrap().is_empty(),
        "query syntax is not injected"
    );
}

async fn vector_search_ranks_by_cosine(b: &Backend) {
    let o = owner("vec");
    let texts =
        ["Allergic to peanuts and shellfish.", "Drives a blue bicycle to work.", "Plays violin in an orchestra."];
    let mut ids = Vec::new();
    for t in texts {
        ids.push(b.store.add_fact(&o, NewFact::new(t), emb(t)).await.unwrap().id);
    }
    b.store.add_fact(&o, NewFact::new("No vector here about bicycles."), None).await.unwrap();
    let q = Embedding { model: "test:hash-64".into(), vector: hash_embed("what bicycle does he drive to work") };
    let found = b.store.search_vector(&o, &q, 2).await.unwrap();
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].id, ids[1]);
    let other_model = Embedding { model: "other".into(), vector: q.vector.clone() };
    assert!(
        b.store.search_vector(&o, &other_model, 5).await.unwrap().is_empty(),
        "vectors of another model are not compared"
    );
}

async fn recent_is_newest_first(b: &Backend) {
    let o = owner("recent");
    for i in 0..4 {
        b.store.add_fact(&o, NewFact::new(format!("Fact number {i}.")), None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let recent = b.store.recent(&o, 2).await.unwrap();
    assert_eq!(recent.iter().map(|i| i.text.as_str()).collect::<Vec<_>>(), ["Fact number 3.", "Fact number 2."]);
}

async fn blocks_are_set_replaced_and_deleted(b: &Backend) {
    let o = owner("blocks");
    b.store.set_block(&o, "profile", "Name: Ada").await.unwrap();
    b.store.set_block(&o, "scratch", "todo").await.unwrap();
    b.store.set_block(&o, "profile", "Name: Ada Lovelace").await.unwrap();
    let blocks = b.store.blocks(&o).await.unwrap();
    assert_eq!(
        blocks.iter().map(|b| (b.name.as_str(), b.text.as_str())).collect::<Vec<_>>(),
        [("profile", "Name: Ada Lovelace"), ("scratch", "todo")]
    );
    assert!(b.store.delete_block(&o, "scratch").await.unwrap());
    assert!(!b.store.delete_block(&o, "scratch").await.unwrap());
    assert!(matches!(b.store.set_block(&o, "bad name!", "x").await, Err(Error::Config(_))));
}

async fn forget_an_item_and_a_range(b: &Backend) {
    let o = owner("forget");
    let a = b.store.add_fact(&o, NewFact::new("Alpha fact."), emb("Alpha fact.")).await.unwrap();
    assert_eq!(b.store.forget(&o, &Forget::Item(a.id.clone())).await.unwrap(), 1);
    assert_eq!(b.store.forget(&o, &Forget::Item(a.id.clone())).await.unwrap(), 0);
    assert!(b.store.search_text(&o, "alpha", 5).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(5)).await;
    let from = Utc::now();
    b.store.add_fact(&o, NewFact::new("Beta fact."), None).await.unwrap();
    b.store.add_episode(&o, episode("r9", "Gamma?", "Gamma."), None).await.unwrap();
    let to = Utc::now() + chrono::Duration::milliseconds(1);
    tokio::time::sleep(Duration::from_millis(5)).await;
    b.store.add_fact(&o, NewFact::new("Delta fact."), None).await.unwrap();
    assert_eq!(b.store.forget(&o, &Forget::Range(from, to)).await.unwrap(), 2);
    let left = b.store.facts(&o, true).await.unwrap();
    assert_eq!(left.iter().map(|f| f.statement.as_str()).collect::<Vec<_>>(), ["Delta fact."]);
    assert!(b.store.episodes(&o, 10).await.unwrap().is_empty());
}

/// Fills an owner with every kind of row, for erasure checks. The secret word appears in each.
async fn fill(store: &dyn MemoryStore, o: &Owner, secret: &str) {
    let text = format!("The code word is {secret}.");
    store.add_fact(o, NewFact::new(&text).key("code"), emb(&text)).await.unwrap();
    store.add_fact(o, NewFact::new(format!("Replaced: {secret} again.")).key("code"), emb(&text)).await.unwrap();
    store.add_episode(o, episode(&unique(), &format!("Remember {secret}"), "Noted."), emb(&text)).await.unwrap();
    store.set_block(o, "profile", &format!("Secret: {secret}")).await.unwrap();
}

async fn forget_all_is_per_owner(b: &Backend) {
    let (a, z) = (owner("erase"), owner("keep"));
    fill(b.store.as_ref(), &a, "zanzibar").await;
    fill(b.store.as_ref(), &z, "zanzibar").await;
    let n = b.store.forget(&a, &Forget::All).await.unwrap();
    assert_eq!(n, 4, "three items and a block");
    let export = b.store.export(&a).await.unwrap();
    assert_eq!(export["facts"], serde_json::json!([]));
    assert_eq!(export["episodes"], serde_json::json!([]));
    assert_eq!(export["blocks"], serde_json::json!([]));
    assert!(b.store.search_text(&a, "zanzibar", 5).await.unwrap().is_empty());
    assert!(b.store.recent(&a, 5).await.unwrap().is_empty());
    // The other owner keeps everything.
    assert_eq!(b.store.facts(&z, true).await.unwrap().len(), 2);
    assert_eq!(b.store.search_text(&z, "zanzibar", 5).await.unwrap().len(), 2);
    if let Db::Memory(store) = &b.db {
        assert!(!store.holds_anything(&a));
    }
}

async fn export_holds_everything(b: &Backend) {
    let o = owner("export");
    fill(b.store.as_ref(), &o, "quokka").await;
    let export = b.store.export(&o).await.unwrap();
    assert_eq!(export["user"], o.user.as_str());
    assert_eq!(export["facts"].as_array().unwrap().len(), 2, "with the superseded fact");
    assert!(export["facts"][0]["superseded_by"].is_string());
    assert_eq!(export["episodes"].as_array().unwrap().len(), 1);
    assert_eq!(export["blocks"][0]["name"], "profile");
}

async fn owners_are_isolated(b: &Backend) {
    let user = format!("iso_{}", unique());
    let shared = Owner::user(&user).unwrap();
    let per_agent = Owner::of(&user, "helper").unwrap();
    let other = owner("other");
    b.store.add_fact(&shared, NewFact::new("Shared fact about kiwis.").key("fruit"), emb("kiwis")).await.unwrap();
    b.store.add_fact(&per_agent, NewFact::new("Agent fact about kiwis.").key("fruit"), emb("kiwis")).await.unwrap();
    b.store.add_episode(&other, episode("same-run", "kiwis?", "kiwis!"), emb("kiwis")).await.unwrap();
    // The same run id under another owner is another episode.
    assert!(b.store.add_episode(&shared, episode("same-run", "x", "y"), None).await.unwrap().is_some());
    for (o, want) in [(&shared, "Shared fact about kiwis."), (&per_agent, "Agent fact about kiwis.")] {
        let facts = b.store.facts(o, true).await.unwrap();
        assert_eq!(facts.len(), 1, "{o:?}");
        assert_eq!(facts[0].statement, want);
        let text = b.store.search_text(o, "kiwis", 10).await.unwrap();
        assert!(
            text.iter().all(|i| i.text == want || i.kind == ItemKind::Episode && i.text.contains("User: x")),
            "{text:?}"
        );
        let q = Embedding { model: "test:hash-64".into(), vector: hash_embed("kiwis") };
        let vec = b.store.search_vector(o, &q, 10).await.unwrap();
        assert_eq!(vec.iter().map(|i| i.text.as_str()).collect::<Vec<_>>(), [want]);
    }
    let facts_other = b.store.facts(&other, true).await.unwrap();
    assert!(facts_other.is_empty());
}

async fn concurrent_writers(b: &Backend) {
    let o = owner("conc");
    let mut handles = Vec::new();
    for w in 0..4 {
        let store = b.reopen().await;
        let o = o.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..10 {
                store
                    .add_fact(&o, NewFact::new(format!("Writer {w} lives in city {i}.")).key("home"), None)
                    .await
                    .unwrap();
                store.add_fact(&o, NewFact::new(format!("Writer {w} note {i}.")), None).await.unwrap();
                store.add_episode(&o, episode(&format!("run-{w}-{i}"), "q", "a"), None).await.unwrap();
                store.add_episode(&o, episode(&format!("run-{i}"), "q", "a"), None).await.unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let valid = b.store.facts(&o, false).await.unwrap();
    let homes: Vec<_> = valid.iter().filter(|f| f.key.as_deref() == Some("home")).collect();
    assert_eq!(homes.len(), 1, "exactly one valid fact per key: {homes:?}");
    assert_eq!(valid.len(), 41);
    assert_eq!(b.store.facts(&o, true).await.unwrap().len(), 80);
    assert_eq!(
        b.store.episodes(&o, usize::MAX).await.unwrap().len(),
        50,
        "40 distinct runs + 10 shared ones, once each"
    );
}

async fn data_survives_a_restart(b: &Backend) {
    let o = owner("restart");
    fill(b.store.as_ref(), &o, "marmot").await;
    let reopened = b.reopen().await;
    assert_eq!(reopened.facts(&o, true).await.unwrap().len(), 2);
    assert_eq!(reopened.blocks(&o).await.unwrap()[0].text, "Secret: marmot");
    assert_eq!(reopened.search_text(&o, "marmot", 5).await.unwrap().len(), 2);
    let q = Embedding { model: "test:hash-64".into(), vector: hash_embed("The code word is marmot.") };
    assert_eq!(reopened.search_vector(&o, &q, 5).await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_bad_url_lists_the_accepted_forms() {
    for url in ["mysql://x", "sqlite:", "redis://localhost", ""] {
        match open_memory_store(url) {
            Err(Error::Config(msg)) => assert!(msg.contains("sqlite:PATH") && msg.contains("postgres://"), "{msg}"),
            Err(other) => panic!("{url}: expected Config, got {other:?}"),
            Ok(_) => panic!("{url}: expected Config, got a store"),
        }
    }
    let err = open_memory_store("mysql://user:hunter2@db/x").err().unwrap().to_string();
    assert!(!err.contains("hunter2"), "{err}");
    assert!(open_memory_store("memory").is_ok());
}

// ---------------------------------------------------------------------------------------------
// The suites
// ---------------------------------------------------------------------------------------------

macro_rules! suite {
    ($make:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let Some(backend) = $make.await else { return };
                super::$check(&backend).await;
            }
        )*
    };
}

mod memory {
    use super::Backend;
    suite!(async { Some(Backend::memory()) };
        episodes_round_trip_once_per_run, facts_supersede_by_key_and_by_id, another_owners_fact_is_never_superseded,
        identical_facts_are_stored_once, text_search_ranks_matches, vector_search_ranks_by_cosine, recent_is_newest_first,
        blocks_are_set_replaced_and_deleted, forget_an_item_and_a_range, forget_all_is_per_owner, export_holds_everything,
        owners_are_isolated, concurrent_writers, data_survives_a_restart,
    );
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;
    suite!(async { Some(Backend::sqlite()) };
        episodes_round_trip_once_per_run, facts_supersede_by_key_and_by_id, another_owners_fact_is_never_superseded,
        identical_facts_are_stored_once, text_search_ranks_matches, vector_search_ranks_by_cosine, recent_is_newest_first,
        blocks_are_set_replaced_and_deleted, forget_an_item_and_a_range, forget_all_is_per_owner, export_holds_everything,
        owners_are_isolated, concurrent_writers, data_survives_a_restart,
    );

    /// Text search on both sides of the small-owner threshold (2,000 items: at most, the match is
    /// confined to the owner's token inside the index; above, the owner is filtered in the join):
    /// each owner finds its own matching items, and only those.
    #[tokio::test]
    async fn text_search_of_small_and_large_owners_stays_with_the_owner() {
        let b = Backend::sqlite();
        let big = owner("bigfts");
        let small = owner("smallfts");
        let Db::Sqlite(path) = &b.db else { unreachable!() };
        {
            // 2,050 items of `big` in one transaction (through the store: 2,050 commits, slow in debug).
            b.store.add_fact(&big, NewFact::new("seed lantern"), None).await.unwrap();
            let mut conn = rusqlite::Connection::open(path).unwrap();
            let tx = conn.transaction().unwrap();
            for i in 0..2_050 {
                tx.execute(
                    "INSERT INTO loom_mem_items (id, user_id, agent, kind, key, text, data, importance, run_id, active,
                         extracted, valid_from, valid_to, recorded_at, superseded_by, source_run, embed_model, embedding)
                     SELECT ?1, user_id, agent, kind, NULL, ?2, data, importance, run_id, 1, extracted, valid_from,
                         NULL, recorded_at, NULL, NULL, NULL, NULL FROM loom_mem_items WHERE user_id = ?3 LIMIT 1",
                    rusqlite::params![format!("bulk{i}"), format!("lantern number {i}"), big.user],
                )
                .unwrap();
                tx.execute(
                    "INSERT INTO loom_mem_fts (rowid, text, okey)
                     SELECT seq, text, (SELECT okey FROM loom_mem_fts WHERE rowid =
                         (SELECT MIN(seq) FROM loom_mem_items WHERE user_id = ?1)) FROM loom_mem_items WHERE id = ?2",
                    rusqlite::params![big.user, format!("bulk{i}")],
                )
                .unwrap();
            }
            tx.commit().unwrap();
        }
        for i in 0..3 {
            let text = format!("lantern of the small user {i}");
            b.store.add_fact(&small, NewFact::new(&text), None).await.unwrap();
        }
        let found = b.store.search_text(&small, "lantern", 50).await.unwrap();
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found.iter().all(|i| i.text.contains("small user")));
        let found = b.store.search_text(&big, "lantern", 50).await.unwrap();
        assert_eq!(found.len(), 50);
        assert!(found.iter().all(|i| !i.text.contains("small user")));
        assert!(
            b.store.search_text(&big, "small user", 50).await.unwrap().iter().all(|i| !i.text.contains("small user"))
        );
    }

    fn count(conn: &rusqlite::Connection, sql: &str, user: &str) -> i64 {
        conn.query_row(sql, [user], |r| r.get(0)).unwrap()
    }

    /// The right to erasure, checked in the file: no row of the user in any table, and the secret
    /// word in no table nor in the full-text index's vocabulary, and in no byte of the file.
    #[tokio::test]
    async fn forget_all_leaves_nothing_in_any_table_or_index() {
        let b = Backend::sqlite();
        let o = owner("erasure");
        fill(b.store.as_ref(), &o, "xylophonist").await;
        let keep = owner("bystander");
        fill(b.store.as_ref(), &keep, "bystanderword").await;
        b.store.forget(&o, &Forget::All).await.unwrap();
        let Db::Sqlite(path) = &b.db else { unreachable!() };
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.execute_batch("CREATE VIRTUAL TABLE temp.vocab USING fts5vocab(main, loom_mem_fts, 'row')").unwrap();
        assert_eq!(count(&conn, "SELECT COUNT(*) FROM loom_mem_items WHERE user_id = ?1", &o.user), 0);
        assert_eq!(count(&conn, "SELECT COUNT(*) FROM loom_mem_blocks WHERE user_id = ?1", &o.user), 0);
        assert_eq!(
            count(&conn, "SELECT COUNT(*) FROM temp.vocab WHERE term = ?1", "xylophonist"),
            0,
            "the index forgot the word"
        );
        assert_eq!(
            count(&conn, "SELECT COUNT(*) FROM temp.vocab WHERE term = ?1", "bystanderword"),
            1,
            "the other user's word stays"
        );
        // Every table, every text column: the word is nowhere.
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'loom_mem%'")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(tables.len() >= 5, "{tables:?}");
        for table in &tables {
            let mut stmt = conn.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
            let cols = stmt.column_count();
            let mut rows = stmt.query([]).unwrap();
            while let Some(row) = rows.next().unwrap() {
                for c in 0..cols {
                    let v = row.get_ref(c).unwrap();
                    let bytes = match v {
                        rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => t,
                        _ => continue,
                    };
                    assert!(!String::from_utf8_lossy(bytes).contains("xylophonist"), "found in {table}");
                    assert!(!String::from_utf8_lossy(bytes).contains(&o.user), "user id found in {table}");
                }
            }
        }
        drop(conn);
        // secure_delete: the freed pages were overwritten, so not even the file holds the word.
        let bytes = [std::fs::read(path).unwrap(), std::fs::read(path.with_extension("db-wal")).unwrap_or_default()];
        for b in bytes {
            assert!(!b.windows(11).any(|w| w == b"xylophonist"), "the word is still in the file's bytes");
        }
    }

    #[tokio::test]
    async fn a_corrupt_row_is_a_typed_error() {
        let b = Backend::sqlite();
        let o = owner("corrupt");
        let fact = b.store.add_fact(&o, NewFact::new("Fine fact about owls."), emb("owls")).await.unwrap();
        let ep = b.store.add_episode(&o, episode("r1", "owls?", "owls."), None).await.unwrap().unwrap();
        let Db::Sqlite(path) = &b.db else { unreachable!() };
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.execute("UPDATE loom_mem_items SET kind = 'bogus' WHERE id = ?1", [&fact.id]).unwrap();
        conn.execute("UPDATE loom_mem_items SET data = '{nope' WHERE id = ?1", [&ep.id]).unwrap();
        assert!(matches!(b.store.search_text(&o, "owls", 5).await, Err(Error::Corrupt(_))), "search");
        assert!(matches!(b.store.recent(&o, 5).await, Err(Error::Corrupt(_))), "recent");
        assert!(matches!(b.store.episodes(&o, 5).await, Err(Error::Corrupt(_))), "episodes");
        conn.execute(
            "UPDATE loom_mem_items SET kind = 'fact', valid_from = 9223372036854775807 WHERE id = ?1",
            [&fact.id],
        )
        .unwrap();
        assert!(matches!(b.store.facts(&o, false).await, Err(Error::Corrupt(_))), "facts");
        conn.execute("UPDATE loom_mem_items SET kind = 'fact', embedding = x'0102030405' WHERE id = ?1", [&fact.id])
            .unwrap();
        let q = Embedding { model: "test:hash-64".into(), vector: hash_embed("owls") };
        assert!(matches!(b.store.search_vector(&o, &q, 5).await, Err(Error::Corrupt(_))), "vector");
        conn.execute("UPDATE loom_mem_items SET importance = 7 WHERE id = ?1", [&fact.id]).unwrap();
        assert!(matches!(b.store.facts(&o, false).await, Err(Error::Corrupt(_))), "importance");
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused_and_the_journal_can_share_the_file() {
        let path = temp_db();
        let journal = loom_agent::store::SqliteStore::open(&path).unwrap();
        let memory = loom_agent::memory::SqliteMemoryStore::open(&path).unwrap();
        drop((journal, memory));
        let _again = loom_agent::store::SqliteStore::open(&path).unwrap();
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute("INSERT INTO loom_mem_schema (version) VALUES (99)", []).unwrap();
        let result = loom_agent::memory::SqliteMemoryStore::open(&path);
        remove_db(&path);
        assert!(matches!(result, Err(Error::SchemaTooNew { found: 99, .. })), "{result:?}");
    }
}

/// The PostgreSQL suite with pgvector turned off (the exact scan through the vector cache), so that
/// both vector paths are checked where the server has pgvector.
#[cfg(feature = "postgres")]
mod postgres_exact {
    use super::Backend;
    suite!(Backend::postgres_exact();
        episodes_round_trip_once_per_run, facts_supersede_by_key_and_by_id, another_owners_fact_is_never_superseded,
        identical_facts_are_stored_once, text_search_ranks_matches, vector_search_ranks_by_cosine, recent_is_newest_first,
        blocks_are_set_replaced_and_deleted, forget_an_item_and_a_range, forget_all_is_per_owner, export_holds_everything,
        owners_are_isolated, concurrent_writers, data_survives_a_restart,
    );
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use tokio_postgres::NoTls;

    suite!(Backend::postgres();
        episodes_round_trip_once_per_run, facts_supersede_by_key_and_by_id, another_owners_fact_is_never_superseded,
        identical_facts_are_stored_once, text_search_ranks_matches, vector_search_ranks_by_cosine, recent_is_newest_first,
        blocks_are_set_replaced_and_deleted, forget_an_item_and_a_range, forget_all_is_per_owner, export_holds_everything,
        owners_are_isolated, concurrent_writers, data_survives_a_restart,
    );

    async fn raw_client(url: &str) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn forget_all_leaves_no_row() {
        let Some(b) = Backend::postgres().await else { return };
        let Db::Postgres(url, _) = &b.db else { unreachable!() };
        let o = owner("erasure");
        fill(b.store.as_ref(), &o, "xylophonist").await;
        b.store.forget(&o, &Forget::All).await.unwrap();
        let client = raw_client(url).await;
        for table in ["loom_mem_items", "loom_mem_blocks", "loom_mem_owner_writes"] {
            let n: i64 = client
                .query_one(&format!("SELECT COUNT(*) FROM {table} WHERE user_id = $1"), &[&o.user])
                .await
                .unwrap()
                .get(0);
            assert_eq!(n, 0, "{table}");
        }
        let n: i64 = client
            .query_one("SELECT COUNT(*) FROM loom_mem_items WHERE text LIKE '%xylophonist%' OR tsv @@ to_tsquery('english', 'xylophonist')", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_corrupt_row_is_a_typed_error() {
        for pgvector in [true, false] {
            let Some(b) = Backend::postgres_with(pgvector).await else { return };
            corrupt_rows(&b).await;
        }
    }

    async fn corrupt_rows(b: &Backend) {
        let Db::Postgres(url, on_pgvector) = &b.db else { unreachable!() };
        let o = owner("corrupt");
        let fact = b.store.add_fact(&o, NewFact::new("Fine fact about owls."), emb("owls")).await.unwrap();
        let client = raw_client(url).await;
        client.execute("UPDATE loom_mem_items SET kind = 'bogus' WHERE id = $1", &[&fact.id]).await.unwrap();
        assert!(matches!(b.store.search_text(&o, "owls", 5).await, Err(Error::Corrupt(_))), "search");
        client
            .execute(
                "UPDATE loom_mem_items SET kind = 'fact', valid_from = 9223372036854775807 WHERE id = $1",
                &[&fact.id],
            )
            .await
            .unwrap();
        assert!(matches!(b.store.facts(&o, false).await, Err(Error::Corrupt(_))), "facts");
        client
            .execute(
                "UPDATE loom_mem_items SET kind = 'fact', embedding = ARRAY[NULL]::real[] WHERE id = $1",
                &[&fact.id],
            )
            .await
            .unwrap();
        let q = Embedding { model: "test:hash-64".into(), vector: hash_embed("owls") };
        match b.store.search_vector(&o, &q, 5).await {
            Err(Error::Corrupt(_)) => {}
            // pgvector's generated column is NULL for a vector it cannot hold: the row is not
            // found there (the exact path reads the `real[]` and reports it).
            Ok(found) if *on_pgvector => {
                assert!(found.iter().all(|i| i.id != fact.id), "vector: {found:?}")
            }
            other => panic!("vector: {other:?}"),
        }
    }
}
