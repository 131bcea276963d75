//! Resolving a journal from a value or a URL.

use std::sync::Arc;

use crate::error::Error;
use crate::store::{IntoJournal, JournalRef, JournalSlot};

/// Resolves what an agent was given as a journal: a value as it is, a URL through
/// [`open_journal`].
pub fn resolve_journal(journal: impl IntoJournal) -> Result<JournalSlot, Error> {
    match journal.into_journal_ref()? {
        JournalRef::Slot(slot) => Ok(slot),
        JournalRef::Url(url) => open_journal(&url),
    }
}

/// Opens a journal from a URL: `memory`, `sqlite:PATH[?synchronous=normal|full|off]`,
/// `postgres://…` / `postgresql://…`.
pub fn open_journal(url: &str) -> Result<JournalSlot, Error> {
    let url = url.trim();
    if url == "memory" || url == "inproc" {
        return Ok(JournalSlot { journal: Arc::new(super::InMemoryJournal::new()), session_store: None });
    }
    if let Some(rest) = url.strip_prefix("sqlite:") {
        #[cfg(feature = "sqlite")]
        {
            let store = Arc::new(super::SqliteStore::open_url(rest)?);
            return Ok(JournalSlot { journal: store.clone(), session_store: Some(store) });
        }
        #[cfg(not(feature = "sqlite"))]
        {
            let _ = rest;
            return Err(Error::Config(
                "the journal URL `sqlite:…` needs loom-agent's `sqlite` feature (on by default)".into(),
            ));
        }
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        #[cfg(feature = "postgres")]
        {
            let store = Arc::new(super::PostgresStore::new(url)?);
            return Ok(JournalSlot { journal: store.clone(), session_store: Some(store) });
        }
        #[cfg(not(feature = "postgres"))]
        return Err(Error::Config("the journal URL `postgres://…` needs loom-agent's `postgres` feature".into()));
    }
    Err(Error::Config(format!(
        "unknown journal `{url}`; accepted: `memory`, `sqlite:PATH` (e.g. `sqlite:./loom.db`, \
         `sqlite:./loom.db?synchronous=full`), `postgres://USER@HOST:PORT/DB`"
    )))
}
