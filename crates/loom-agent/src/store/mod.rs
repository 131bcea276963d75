//! Stores: where sessions, run transcripts and conversation history live ([`SessionStore`]), and
//! the journal and memory slots.
//!
//! The in-memory session store is the default. The journal and memory slots are empty by default
//! and cost nothing then; durable implementations plug in through the same traits.

pub mod api_keys;
mod journal;
mod memory_journal;
mod memory_signals;
mod memory_store;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod signal_rows;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;
pub mod tenant_usage;

pub use api_keys::{ApiKeyRecord, ApiKeyStore, InMemoryApiKeys, hash_api_key, open_api_keys};
pub use journal::{open_journal, resolve_journal};
pub use loom_core::journal::{
    ClaimedRun, Compaction, FinalCommit, IntoJournal, Journal, JournalEntry, JournalRef, JournalRunSummary,
    JournalSlot, JournalWrite, JournaledRun, Lease, PruneReport, QueuedRun, RecordedModel, RunFilter, RunQueue,
    RunRecord, RunStatus,
};
pub use loom_core::signal::SignalStore;
pub use loom_core::store::{
    IntoMemory, Memory, MemoryRef, Recalled, RunSummary, SessionKey, SessionRecord, SessionStore, SessionSummary,
    StoredSession,
};
pub use memory_journal::InMemoryJournal;
pub use memory_signals::InMemorySignalStore;
pub use memory_store::InMemorySessionStore;
#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteStore, Synchronous};
pub use tenant_usage::{TenantDayUsage, TenantUsageStore, open_tenant_usage};
