//! `loom memory`: what a memory store holds about a user — facts, search, forgetting, export.

use std::io::Write;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use loom_agent::memory::{Forget, MemoryStore, Owner, RecallOptions, open_memory_store, recall};

use crate::run::{Exit, async_runtime, describe, redact, report};

/// The options of `loom memory`.
#[derive(Debug, Args)]
pub struct MemoryArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: MemoryCommand,
}

/// Where and whose memory.
#[derive(Debug, Args)]
pub struct MemoryTarget {
    /// The memory store: "sqlite:PATH", "postgres://USER@HOST:PORT/DB" or "memory".
    #[arg(long, value_name = "URL")]
    pub memory: String,
    /// The user.
    #[arg(long, value_name = "ID")]
    pub user: String,
    /// The agent, for memory kept per agent (default: memory shared by the user's agents).
    #[arg(long, value_name = "NAME", default_value = "")]
    pub agent: String,
}

/// The subcommands of `loom memory`.
#[derive(Debug, Subcommand)]
pub enum MemoryCommand {
    /// List the user's valid facts (with --history, the superseded ones too), one per line.
    ///
    /// Exit codes: 0 listed; 2 the store cannot be opened or read.
    Facts {
        /// Where and whose.
        #[command(flatten)]
        target: MemoryTarget,
        /// Include superseded facts, with when they stopped holding.
        #[arg(long)]
        history: bool,
    },
    /// Search the user's facts and episodes (full text, and vectors when an embedder is
    /// available), best first.
    ///
    /// Exit codes: 0 searched; 2 the store cannot be opened or read.
    Search {
        /// What to look for.
        query: String,
        /// Where and whose.
        #[command(flatten)]
        target: MemoryTarget,
        /// At most this many results.
        #[arg(long, default_value_t = 10)]
        limit: usize,
    },
    /// Forget one item (--id), the items recorded in a time range (--from/--to, RFC 3339), or
    /// everything about the user (--all: facts, episodes, blocks, vectors and index entries).
    ///
    /// Exit codes: 0 done; 1 nothing matched --id; 2 bad flags, or the store cannot be opened.
    Forget {
        /// Where and whose.
        #[command(flatten)]
        target: MemoryTarget,
        /// Everything about the user.
        #[arg(long, conflicts_with_all = ["id", "from", "to"])]
        all: bool,
        /// One fact or episode.
        #[arg(long, value_name = "ID", conflicts_with_all = ["from", "to"])]
        id: Option<String>,
        /// The start of a time range (inclusive).
        #[arg(long, value_name = "TIME", requires = "to")]
        from: Option<DateTime<Utc>>,
        /// The end of a time range (exclusive).
        #[arg(long, value_name = "TIME", requires = "from")]
        to: Option<DateTime<Utc>>,
    },
    /// Print everything about the user as one JSON document.
    ///
    /// Exit codes: 0 printed; 2 the store cannot be opened or read.
    Export {
        /// Where and whose.
        #[command(flatten)]
        target: MemoryTarget,
    },
}

fn open(target: &MemoryTarget) -> Result<(std::sync::Arc<dyn MemoryStore>, Owner), String> {
    let store = open_memory_store(&target.memory)
        .map_err(|e| format!("--memory {}: {}", redact(&target.memory), describe(&e)))?;
    let owner =
        Owner::of(target.user.clone(), target.agent.clone()).map_err(|e| format!("--user: {}", describe(&e)))?;
    Ok((store, owner))
}

fn print(text: &str) -> Result<(), String> {
    writeln!(std::io::stdout().lock(), "{text}").map_err(|e| format!("writing the output: {e}"))
}

/// Runs `loom memory` to the end.
pub fn main(args: MemoryArgs) -> Exit {
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

async fn command(command: MemoryCommand) -> Result<Exit, String> {
    let failed = |e: loom_agent::Error| describe(&e);
    match command {
        MemoryCommand::Facts { target, history } => {
            let (store, owner) = open(&target)?;
            for f in store.facts(&owner, history).await.map_err(failed)? {
                let key = f.key.as_deref().map(|k| format!(" [{k}]")).unwrap_or_default();
                let until = match f.valid_to {
                    Some(to) => {
                        format!(" (until {}, superseded by {})", to.to_rfc3339(), f.superseded_by.unwrap_or_default())
                    }
                    None => String::new(),
                };
                print(&format!("{}{key} {}{until}", f.id, f.statement))?;
            }
            Ok(Exit::Completed)
        }
        MemoryCommand::Search { query, target, limit } => {
            let (store, owner) = open(&target)?;
            let vector = match loom_agent::memory::default_embedder() {
                Some(embedder) => embedder
                    .embed(std::slice::from_ref(&query))
                    .await
                    .ok()
                    .and_then(|mut v| v.pop())
                    .map(|vector| loom_agent::memory::Embedding { model: embedder.model_id().to_string(), vector }),
                None => None,
            };
            let options = RecallOptions { candidates: limit.max(1), ..RecallOptions::default() };
            let found =
                recall::search(store.as_ref(), &owner, &query, vector.as_ref(), &options).await.map_err(failed)?;
            for (score, item) in found.into_iter().take(limit) {
                print(&format!("{score:.4} {} {} {}", item.id, item.kind.as_str(), item.text.replace('\n', " | ")))?;
            }
            Ok(Exit::Completed)
        }
        MemoryCommand::Forget { target, all, id, from, to } => {
            let what = match (all, id, from, to) {
                (true, None, None, None) => Forget::All,
                (false, Some(id), None, None) => Forget::Item(id),
                (false, None, Some(from), Some(to)) => Forget::Range(from, to),
                _ => return Err("say what to forget: --all, --id ID, or --from TIME --to TIME".into()),
            };
            let (store, owner) = open(&target)?;
            let n = store.forget(&owner, &what).await.map_err(failed)?;
            report(&format!("forgot {n} item(s) of user {}", owner.user));
            Ok(if n == 0 && matches!(what, Forget::Item(_)) { Exit::Failed } else { Exit::Completed })
        }
        MemoryCommand::Export { target } => {
            let (store, owner) = open(&target)?;
            let value = store.export(&owner).await.map_err(failed)?;
            print(&serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?)?;
            Ok(Exit::Completed)
        }
    }
}
