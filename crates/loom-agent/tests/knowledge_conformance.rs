//! One conformance suite for every knowledge store: indexing a directory, re-indexing after a
//! change, a touch and a delete, full-text and vector search, tenant isolation and a restart, run
//! against the in-process store and the knowledge tables of the SQLite and PostgreSQL memory
//! stores (the latter with `LOOM_TEST_POSTGRES_URL` and the `postgres` feature; without them it
//! prints "skipped" and passes). Every check uses its own tenant, so checks can share a database.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod memory_support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use loom_agent::knowledge::{
    InMemoryKnowledgeStore, Knowledge, KnowledgeQuery, KnowledgeScope, KnowledgeSource, KnowledgeStore, Location,
};
use loom_agent::memory::{Embedding, MemoryStore};
use memory_support::*;

// ---------------------------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------------------------

enum Db {
    Memory(Arc<InMemoryKnowledgeStore>),
    #[cfg(feature = "sqlite")]
    Sqlite(PathBuf),
    #[cfg(feature = "postgres")]
    Postgres(String),
}

struct Backend {
    db: Db,
    store: Arc<dyn KnowledgeStore>,
}

impl Backend {
    fn memory() -> Backend {
        let store = Arc::new(InMemoryKnowledgeStore::new());
        Backend { db: Db::Memory(store.clone()), store }
    }

    #[cfg(feature = "sqlite")]
    fn sqlite() -> Backend {
        let path = temp_db();
        let store = loom_agent::memory::SqliteMemoryStore::open(&path).unwrap().knowledge().unwrap();
        Backend { db: Db::Sqlite(path), store }
    }

    #[cfg(feature = "postgres")]
    async fn postgres() -> Option<Backend> {
        let url = postgres_url()?;
        let store = loom_agent::memory::PostgresMemoryStore::connect(&url).await.unwrap().knowledge().unwrap();
        Some(Backend { db: Db::Postgres(url), store })
    }

    /// Another handle on the same data (a new connection for the durable stores): a restart.
    async fn reopen(&self) -> Arc<dyn KnowledgeStore> {
        match &self.db {
            Db::Memory(store) => store.clone(),
            #[cfg(feature = "sqlite")]
            Db::Sqlite(path) => loom_agent::memory::SqliteMemoryStore::open(path).unwrap().knowledge().unwrap(),
            #[cfg(feature = "postgres")]
            Db::Postgres(url) => {
                loom_agent::memory::PostgresMemoryStore::connect(url).await.unwrap().knowledge().unwrap()
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

/// A fresh directory with `files` (relative path, text).
fn docs_dir(files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("loom-knowledge-{}", unique()));
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

/// Sets a file's modification time `secs` seconds into the future (so a rewrite within the same
/// millisecond is still seen as a change).
fn bump_mtime(path: &Path, secs: u64) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(secs)).unwrap();
}

const GUIDE: &str = "# Install\n\nRun the installer with --prefix to choose a folder.\n\n\
                     # Upgrade\n\nUpgrades keep your settings; back up the config file first.\n";
const FAQ: &str = "Refunds are paid within fourteen days of the return.\nShipping is free in the EU.\n";

fn knowledge(store: &Arc<dyn KnowledgeStore>, source: KnowledgeSource) -> Knowledge {
    Knowledge::new(store.clone()).embedder(Arc::new(HashEmbedder)).refresh_every(None).source(source)
}

// ---------------------------------------------------------------------------------------------
// The checks
// ---------------------------------------------------------------------------------------------

async fn index_and_search(b: &Backend) {
    let tenant = format!("t_{}", unique());
    let dir = docs_dir(&[("guide.md", GUIDE), ("sub/faq.txt", FAQ)]);
    let k = knowledge(&b.store, KnowledgeSource::directory(&dir).named("docs").tenant(&tenant));
    let reports = k.index().await.unwrap();
    assert_eq!(reports.len(), 1);
    let r = &reports[0];
    assert_eq!((r.documents, r.indexed, r.unchanged, r.removed), (2, 2, 0, 0), "{r:?}");
    assert_eq!(r.chunks, 2);
    let scope = KnowledgeScope::new(&tenant, "docs").unwrap();
    let docs = b.store.documents(&scope).await.unwrap();
    assert_eq!(docs.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["guide.md", "sub/faq.txt"]);
    assert_eq!(docs[1].size, FAQ.len() as u64);
    assert_eq!(docs[1].chunks, 1);

    // Full text finds the passage with its location.
    let hits = b.store.search_text(&scope, "refunds paid", 5).await.unwrap();
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0].document, "sub/faq.txt");
    assert_eq!(hits[0].location, Location::lines(1, 2));
    // Vectors find it too.
    let v = Embedding { model: "test:hash-64".into(), vector: hash_embed("when are refunds paid") };
    let near = b.store.search_vector(&scope, &v, 1).await.unwrap();
    assert_eq!(near[0].document, "sub/faq.txt");
    // A vector of another model matches nothing.
    let other = Embedding { model: "other".into(), vector: v.vector.clone() };
    assert!(b.store.search_vector(&scope, &other, 5).await.unwrap().is_empty());

    // Hybrid, through the query API, with citations.
    let bundle = k.resolve(&KnowledgeQuery::new("how do I back up the config before an upgrade").tenant(&tenant)).await;
    let bundle = bundle.unwrap();
    assert_eq!(bundle.passages[0].citation(), "guide.md:1-7");
    assert_eq!(bundle.passages[0].source, "docs");
    assert!(bundle.passages[0].score > 0.0);
    let _ = std::fs::remove_dir_all(&dir);
}

async fn reindex_after_change_touch_and_delete(b: &Backend) {
    let tenant = format!("t_{}", unique());
    let dir = docs_dir(&[("guide.md", GUIDE), ("faq.txt", FAQ), ("old.md", "Legacy telnet access is supported.")]);
    let k = knowledge(&b.store, KnowledgeSource::directory(&dir).named("docs").tenant(&tenant));
    k.index().await.unwrap();
    let scope = KnowledgeScope::new(&tenant, "docs").unwrap();

    // Nothing changed: nothing is read again.
    let r = &k.index().await.unwrap()[0];
    assert_eq!((r.documents, r.indexed, r.unchanged, r.removed, r.chunks), (3, 0, 3, 0, 0), "{r:?}");

    // A changed file, a touched file, a removed file.
    std::fs::write(dir.join("faq.txt"), "Refunds now take thirty days.\n").unwrap();
    bump_mtime(&dir.join("faq.txt"), 5);
    bump_mtime(&dir.join("guide.md"), 5);
    std::fs::remove_file(dir.join("old.md")).unwrap();
    let r = &k.index().await.unwrap()[0];
    assert_eq!((r.documents, r.indexed, r.unchanged, r.removed, r.chunks), (2, 1, 1, 1, 1), "{r:?}");
    assert!(b.store.search_text(&scope, "fourteen", 5).await.unwrap().is_empty(), "the old text is gone");
    assert_eq!(b.store.search_text(&scope, "thirty", 5).await.unwrap()[0].document, "faq.txt");
    assert!(b.store.search_text(&scope, "telnet", 5).await.unwrap().is_empty(), "the removed file is gone");
    let v = Embedding { model: "test:hash-64".into(), vector: hash_embed("Legacy telnet access is supported.") };
    assert!(b.store.search_vector(&scope, &v, 5).await.unwrap().iter().all(|c| c.document != "old.md"));
    // The touched file's new time is recorded: the next pass reads nothing.
    let r = &k.index().await.unwrap()[0];
    assert_eq!((r.indexed, r.unchanged), (0, 2), "{r:?}");

    // Deleting a document and clearing the scope.
    assert!(b.store.delete_document(&scope, "faq.txt").await.unwrap());
    assert!(!b.store.delete_document(&scope, "faq.txt").await.unwrap());
    assert!(b.store.search_text(&scope, "thirty", 5).await.unwrap().is_empty());
    assert_eq!(b.store.clear(&scope).await.unwrap(), 1);
    assert!(b.store.documents(&scope).await.unwrap().is_empty());
    assert!(b.store.search_text(&scope, "upgrade", 5).await.unwrap().is_empty());

    // A restart keeps what was indexed.
    k.index().await.unwrap();
    let again = knowledge(&b.reopen().await, KnowledgeSource::directory(&dir).named("docs").tenant(&tenant));
    let r = &again.index().await.unwrap()[0];
    assert_eq!((r.indexed, r.unchanged), (0, 2), "{r:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

async fn tenants_never_mix(b: &Backend) {
    let (acme, globex) = (format!("acme_{}", unique()), format!("globex_{}", unique()));
    let a = knowledge(
        &b.store,
        KnowledgeSource::inline("handbook").tenant(&acme).document("vpn", "The acme VPN password rotates monthly."),
    );
    let g = knowledge(
        &b.store,
        KnowledgeSource::inline("handbook").tenant(&globex).document("vpn", "The globex VPN uses hardware keys."),
    );
    a.index().await.unwrap();
    g.index().await.unwrap();
    for (tenant, mine, theirs) in [(&acme, "acme", "globex"), (&globex, "globex", "acme")] {
        let scope = KnowledgeScope::new(tenant, "handbook").unwrap();
        let text = b.store.search_text(&scope, "VPN acme globex", 10).await.unwrap();
        assert_eq!(text.len(), 1, "{text:?}");
        assert!(text[0].text.contains(mine) && !text[0].text.contains(theirs));
        let v = Embedding { model: "test:hash-64".into(), vector: hash_embed("VPN password hardware keys") };
        let near = b.store.search_vector(&scope, &v, 10).await.unwrap();
        assert_eq!(near.len(), 1);
        assert!(near[0].text.contains(mine));
        assert_eq!(b.store.documents(&scope).await.unwrap().len(), 1);
    }
    // The query API sees a tenant's sources only for that tenant, and never the shared scope's
    // documents of another.
    let bundle = a.resolve(&KnowledgeQuery::new("VPN").tenant(&globex)).await.unwrap();
    assert!(bundle.is_empty(), "{bundle:?}");
    let bundle = a.resolve(&KnowledgeQuery::new("VPN").tenant(&acme)).await.unwrap();
    assert_eq!(bundle.len(), 1);
    // Clearing one tenant leaves the other.
    b.store.clear(&KnowledgeScope::new(&acme, "handbook").unwrap()).await.unwrap();
    let scope = KnowledgeScope::new(&globex, "handbook").unwrap();
    assert_eq!(b.store.search_text(&scope, "VPN", 10).await.unwrap().len(), 1);
}

async fn inline_documents_reindex_by_hash(b: &Backend) {
    let tenant = format!("t_{}", unique());
    let source = |text: &str| {
        KnowledgeSource::inline("notes").tenant(&tenant).document("a", "Alpha notes.").document("b", text.to_string())
    };
    let r = &knowledge(&b.store, source("Beta notes.")).index().await.unwrap()[0];
    assert_eq!((r.indexed, r.unchanged), (2, 0));
    let r = &knowledge(&b.store, source("Beta notes, revised.")).index().await.unwrap()[0];
    assert_eq!((r.indexed, r.unchanged), (1, 1));
    let only_a = KnowledgeSource::inline("notes").tenant(&tenant).document("a", "Alpha notes.");
    let r = &knowledge(&b.store, only_a).index().await.unwrap()[0];
    assert_eq!((r.indexed, r.unchanged, r.removed), (0, 1, 1));
}

async fn run_all(b: Backend) {
    index_and_search(&b).await;
    reindex_after_change_touch_and_delete(&b).await;
    tenants_never_mix(&b).await;
    inline_documents_reindex_by_hash(&b).await;
}

#[tokio::test]
async fn in_memory_store_conforms() {
    run_all(Backend::memory()).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_store_conforms() {
    run_all(Backend::sqlite()).await;
}

#[cfg(feature = "sqlite")]
#[test]
fn sqlite_memory_schema_is_at_version_2_and_a_newer_one_is_refused() {
    let path = temp_db();
    loom_agent::memory::SqliteMemoryStore::open(&path).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let v: i64 = conn.query_row("SELECT MAX(version) FROM loom_mem_schema", [], |r| r.get(0)).unwrap();
    assert_eq!(v, 2);
    // A version-1 file (the knowledge tables absent) gains them.
    conn.execute_batch("DROP TABLE loom_kn_chunks; DROP TABLE loom_kn_docs; DROP TABLE loom_kn_fts; DELETE FROM loom_mem_schema WHERE version = 2;").unwrap();
    loom_agent::memory::SqliteMemoryStore::open(&path).unwrap();
    let n: i64 = conn.query_row("SELECT COUNT(*) FROM loom_kn_docs", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 0);
    conn.execute("INSERT INTO loom_mem_schema (version) VALUES (3)", []).unwrap();
    let err = loom_agent::memory::SqliteMemoryStore::open(&path).unwrap_err();
    assert!(matches!(err, loom_agent::Error::SchemaTooNew { found: 3, supported: 2 }), "{err}");
    drop(conn);
    remove_db(&path);
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_store_conforms() {
    let Some(b) = Backend::postgres().await else { return };
    run_all(b).await;
}

#[cfg(not(feature = "postgres"))]
#[test]
fn postgres_store_conforms() {
    eprintln!("skipped: built without the `postgres` feature");
}
