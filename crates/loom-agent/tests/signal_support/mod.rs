//! Shared by the signal tests: unique ids, temporary databases, the PostgreSQL URL, and the three
//! signal stores behind one opener (with a "restart": another handle on the same data).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use loom_agent::signal::SignalStore;
use loom_agent::store::InMemorySignalStore;

pub fn unique() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{nanos}_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

pub fn temp_db() -> PathBuf {
    std::env::temp_dir().join(format!("loom-signals-{}.db", unique()))
}

pub fn remove_db(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

pub fn postgres_url() -> Option<String> {
    match std::env::var("LOOM_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!("skipped: LOOM_TEST_POSTGRES_URL not set");
            None
        }
    }
}

/// Where a backend's data lives.
pub enum Db {
    Memory(Arc<InMemorySignalStore>),
    Sqlite(PathBuf),
    #[cfg(feature = "postgres")]
    Postgres(String),
}

impl Db {
    pub fn name(&self) -> &'static str {
        match self {
            Db::Memory(_) => "memory",
            Db::Sqlite(_) => "sqlite",
            #[cfg(feature = "postgres")]
            Db::Postgres(_) => "postgres",
        }
    }

    /// The journal URL of a durable backend (`None` in memory).
    pub fn url(&self) -> Option<String> {
        match self {
            Db::Memory(_) => None,
            Db::Sqlite(path) => Some(format!("sqlite:{}", path.display())),
            #[cfg(feature = "postgres")]
            Db::Postgres(url) => Some(url.clone()),
        }
    }

    /// A new handle on the same data: a restart for the durable stores.
    pub async fn open(&self) -> Arc<dyn SignalStore> {
        match self {
            Db::Memory(store) => store.clone(),
            Db::Sqlite(path) => Arc::new(loom_agent::store::SqliteStore::open(path).unwrap()),
            #[cfg(feature = "postgres")]
            Db::Postgres(url) => Arc::new(loom_agent::store::PostgresStore::connect(url).await.unwrap()),
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Db::Sqlite(path) = self {
            remove_db(path);
        }
    }
}

/// The backends available here: memory and SQLite always, PostgreSQL with the feature and
/// `LOOM_TEST_POSTGRES_URL`.
#[cfg_attr(not(feature = "postgres"), allow(unused_mut))]
pub async fn backends() -> Vec<Db> {
    let mut all = vec![Db::Memory(Arc::new(InMemorySignalStore::new())), Db::Sqlite(temp_db())];
    #[cfg(feature = "postgres")]
    if let Some(url) = postgres_url() {
        all.push(Db::Postgres(fresh_schema(&url).await));
    }
    #[cfg(not(feature = "postgres"))]
    eprintln!("postgres: skipped (build with --features postgres and set LOOM_TEST_POSTGRES_URL)");
    all
}

/// The durable backends only.
pub async fn durable_backends() -> Vec<Db> {
    backends().await.into_iter().filter(|d| !matches!(d, Db::Memory(_))).collect()
}

/// A schema of its own in the test database (workers see every session of their database, so
/// tests must not share one): `url` with its `search_path` set to it.
#[cfg(feature = "postgres")]
pub async fn fresh_schema(url: &str) -> String {
    let schema = format!("loom_signals_{}", unique());
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-csearch_path%3D{schema}")
}
