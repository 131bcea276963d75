//! `loom knowledge`: index a directory into a memory store's knowledge tables, and search them.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};
use loom_agent::knowledge::{IndexReport, Knowledge, KnowledgeQuery, KnowledgeSource, open_knowledge_store};

use crate::run::{Exit, async_runtime, describe, redact, report};

/// The options of `loom knowledge`.
#[derive(Debug, Args)]
pub struct KnowledgeArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: KnowledgeCommand,
}

/// The subcommands of `loom knowledge`.
#[derive(Debug, Subcommand)]
pub enum KnowledgeCommand {
    /// Index a directory (text, markdown, HTML, PDF), incrementally: files whose modification time
    /// and size are unchanged are not read again, files whose bytes are unchanged are not
    /// re-chunked, removed files are dropped. Prints what was indexed; refused files (links out of
    /// the directory, FIFOs, files over the size cap, binaries) go to stderr.
    ///
    /// Exit codes: 0 indexed; 2 the directory or the store cannot be read.
    Index {
        /// The directory.
        dir: PathBuf,
        /// The store: "sqlite:PATH", "postgres://USER@HOST:PORT/DB" or "memory" (this process only).
        #[arg(long, value_name = "URL")]
        memory: String,
        /// The source's name (its collection) [default: the directory's name].
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// The tenant whose knowledge this is [default: shared by every tenant].
        #[arg(long, value_name = "ID", default_value = "")]
        tenant: String,
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Search an indexed source (full text, and vectors when an embedder is available), best
    /// first, with citations.
    ///
    /// Exit codes: 0 searched; 2 the store cannot be read.
    Search {
        /// What to look for.
        query: String,
        /// The store.
        #[arg(long, value_name = "URL")]
        memory: String,
        /// The source's name (as `loom knowledge index` printed it).
        #[arg(long, value_name = "NAME")]
        name: String,
        /// The tenant [default: shared].
        #[arg(long, value_name = "ID", default_value = "")]
        tenant: String,
        /// At most this many passages.
        #[arg(long, default_value_t = 5)]
        top_k: usize,
    },
}

fn print(text: &str) -> Result<(), String> {
    writeln!(std::io::stdout().lock(), "{text}").map_err(|e| format!("writing the output: {e}"))
}

/// Runs `loom knowledge` to the end.
pub fn main(args: KnowledgeArgs) -> Exit {
    let runtime = match async_runtime() {
        Ok(runtime) => runtime,
        Err(exit) => return exit,
    };
    match runtime.block_on(command(args.command)) {
        Ok(exit) => exit,
        Err(message) => {
            report(&format!("error: {message}"));
            Exit::Usage
        }
    }
}

/// One line about a report: `docs: 3 files indexed (12 chunks), 1 unchanged, 0 removed, 1 skipped`.
pub fn summary(r: &IndexReport) -> String {
    format!(
        "{}: {} files indexed ({} chunks), {} unchanged, {} removed, {} skipped",
        r.source,
        r.indexed,
        r.chunks,
        r.unchanged,
        r.removed,
        r.skipped.len()
    )
}

async fn command(command: KnowledgeCommand) -> Result<Exit, String> {
    match command {
        KnowledgeCommand::Index { dir, memory, name, tenant, json } => {
            let store =
                open_knowledge_store(&memory).map_err(|e| format!("--memory {}: {}", redact(&memory), describe(&e)))?;
            let mut source = KnowledgeSource::directory(&dir).tenant(tenant);
            if let Some(name) = name {
                source = source.named(name);
            }
            let knowledge = with_default_embedder(Knowledge::new(store)).source(source);
            let reports = knowledge.index().await.map_err(|e| describe(&e))?;
            for r in &reports {
                for s in &r.skipped {
                    report(&format!("skipped {}: {}", s.path, s.reason));
                }
                if json {
                    print(&serde_json::to_string(r).map_err(|e| e.to_string())?)?;
                } else {
                    print(&summary(r))?;
                }
            }
            Ok(Exit::Completed)
        }
        KnowledgeCommand::Search { query, memory, name, tenant, top_k } => {
            let store =
                open_knowledge_store(&memory).map_err(|e| format!("--memory {}: {}", redact(&memory), describe(&e)))?;
            // A source of that name with no documents of its own: search() reads the index as it is.
            let source = KnowledgeSource::inline(name).tenant(tenant.clone());
            let knowledge = with_default_embedder(Knowledge::new(store)).source(source);
            let bundle = knowledge.search(&KnowledgeQuery::new(query).top_k(top_k).tenant(tenant)).await;
            let bundle = bundle.map_err(|e| describe(&e))?;
            if !bundle.is_empty() {
                print(&bundle.render())?;
            }
            Ok(Exit::Completed)
        }
    }
}

/// `knowledge` with the default embedder, when there is one.
fn with_default_embedder(knowledge: Knowledge) -> Knowledge {
    match loom_agent::memory::default_embedder() {
        Some(embedder) => knowledge.embedder(Arc::clone(&embedder)),
        None => knowledge,
    }
}
