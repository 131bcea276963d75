//! `loom serve agent.toml` (agents as an HTTP service) and `loom keys` (its API keys).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use loom_agent::config::{AgentConfig, ToolRegistry};

use crate::run::{Exit, async_runtime, report};

/// The options of `loom serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The agent configuration (TOML: one agent, or several in [agents.NAME] tables).
    pub config: PathBuf,
    /// The address to listen on (default: the file's [server] bind, else 127.0.0.1:8080).
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<SocketAddr>,
}

/// The options of `loom keys`.
#[derive(Debug, Args)]
pub struct KeysArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: KeysCommand,
}

/// The subcommands of `loom keys`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make an API key for a tenant, stored (as a SHA-256 hash) in the journal's database of the
    /// configuration. The key is printed once, on the last line of stdout.
    ///
    /// Exit codes: 0 made; 2 bad configuration or tenant name, or the database cannot be opened.
    Create {
        /// The tenant the key acts for.
        #[arg(long)]
        tenant: String,
        /// The agent configuration whose journal database keeps the keys.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// List the keys (id, tenant, created, revoked; never the keys).
    List {
        /// Only this tenant's keys.
        #[arg(long)]
        tenant: Option<String>,
        /// The agent configuration.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Revoke a key by its id.
    Revoke {
        /// The key's id (`key_…`).
        id: String,
        /// The agent configuration.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

fn load(path: &PathBuf) -> Result<AgentConfig, Exit> {
    AgentConfig::from_file(path).map_err(|e| {
        report(&format!("error: {e}"));
        Exit::Usage
    })
}

/// `loom serve`.
pub fn serve(args: ServeArgs) -> Exit {
    let config = match load(&args.config) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let rt = match async_runtime() {
        Ok(rt) => rt,
        Err(e) => return e,
    };
    rt.block_on(async {
        let server = match loom_server::Server::from_config(&config, &ToolRegistry::new()).await {
            Ok(s) => s,
            Err(e) => {
                report(&format!("error: {e}"));
                return Exit::Usage;
            }
        };
        let addr = match args.bind.map(Ok).unwrap_or_else(|| server.bind_addr()) {
            Ok(a) => a,
            Err(e) => {
                report(&format!("error: {e}"));
                return Exit::Usage;
            }
        };
        let listener = match loom_server::listen(addr) {
            Ok(l) => l,
            Err(e) => {
                report(&format!("error: {e}"));
                return Exit::Usage;
            }
        };
        let shown = listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| addr.to_string());
        eprintln!("loom serve: listening on {shown}");
        match server.serve_on(listener).await {
            Ok(()) => Exit::Completed,
            Err(e) => {
                report(&format!("error: {e}"));
                Exit::Failed
            }
        }
    })
}

/// `loom keys`.
pub fn keys(args: KeysArgs) -> Exit {
    let rt = match async_runtime() {
        Ok(rt) => rt,
        Err(e) => return e,
    };
    rt.block_on(async {
        let (KeysCommand::Create { config, .. }
        | KeysCommand::List { config, .. }
        | KeysCommand::Revoke { config, .. }) = &args.command;
        let config = match load(config) {
            Ok(c) => c,
            Err(e) => return e,
        };
        let store = match loom_server::key_store(&config).await {
            Ok(s) => s,
            Err(e) => {
                report(&format!("error: {e}"));
                return Exit::Usage;
            }
        };
        let result = match &args.command {
            KeysCommand::Create { tenant, .. } => {
                loom_server::create_key(store.as_ref(), tenant).await.map(|(r, key)| {
                    println!("made key {} for tenant {} (shown once; store it now):", r.id, r.tenant);
                    println!("{key}");
                })
            }
            KeysCommand::List { tenant, .. } => store.list_api_keys(tenant.as_deref()).await.map(|keys| {
                for k in keys {
                    let made = chrono::DateTime::from_timestamp_millis(k.created_at_ms)
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_default();
                    let revoked = if k.revoked { " revoked" } else { "" };
                    println!("{}\t{}\t{made}{revoked}", k.id, k.tenant);
                }
            }),
            KeysCommand::Revoke { id, .. } => store.revoke_api_key(id).await.and_then(|found| {
                if found {
                    println!("revoked {id}");
                    Ok(())
                } else {
                    Err(loom_agent::Error::Config(format!("no key {id}")))
                }
            }),
        };
        match result {
            Ok(()) => Exit::Completed,
            Err(e) => {
                report(&format!("error: {e}"));
                Exit::Usage
            }
        }
    })
}
