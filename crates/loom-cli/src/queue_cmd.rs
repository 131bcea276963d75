//! `loom worker --config agent.toml`: claims and runs the runs `loom serve` queued
//! (`[server] execution = "queue"`) in the configuration's journal database, and applies its
//! retention policy.

use std::path::Path;
use std::time::Duration;

use loom_agent::QueueWorker;
use loom_agent::config::{AgentConfig, ToolRegistry};

use crate::run::{Exit, async_runtime, describe, report};

/// Runs the queue worker until interrupted (Ctrl-C): it stops claiming, lets its runs end, prints
/// what it did on stderr and exits 0.
pub fn worker(config: &Path, concurrency: Option<usize>) -> Exit {
    let config = match AgentConfig::from_file(config) {
        Ok(c) => c,
        Err(e) => {
            report(&format!("error: {e}"));
            return Exit::Usage;
        }
    };
    let runtime = match async_runtime() {
        Ok(r) => r,
        Err(exit) => return exit,
    };
    let settings = config.server.clone().unwrap_or_default();
    runtime.block_on(async {
        let agents = match config.build_all(&ToolRegistry::new()) {
            Ok(a) => a,
            Err(e) => {
                report(&format!("error: {}", describe(&e)));
                return Exit::Usage;
            }
        };
        let journal = agents.values().find_map(|a| a.journal().cloned());
        let worker = match QueueWorker::new(agents) {
            Ok(w) => w.concurrency(concurrency.or(settings.worker_concurrency).unwrap_or(64)),
            Err(e) => {
                report(&format!("error: {}", describe(&e)));
                return Exit::Usage;
            }
        };
        // Tenant budgets: the runs this worker drives count for their tenants in the journal's
        // database, as a server counts the runs it executes.
        let url = config.agent_configs().iter().find_map(|(_, a)| a.journal_url().ok().flatten());
        let worker = match (&settings.tenant_budget, url) {
            (Some(_), Some(url)) => match loom_agent::store::open_tenant_usage(&url).await {
                Ok(store) => worker.tenant_usage(store),
                Err(e) => {
                    report(&format!("error: {}", describe(&e)));
                    return Exit::Usage;
                }
            },
            _ => worker,
        };
        let (stop, stopping) = tokio::sync::watch::channel(false);
        if let (Some(keep), Some(journal)) = (settings.retention, journal) {
            let mut rx = stopping.clone();
            let stopped = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            tokio::spawn(loom_agent::prune_periodically(journal, keep, Duration::from_secs(3600), stopped));
        }
        eprintln!("loom worker: claiming queued runs");
        let mut rx = stopping;
        let shutdown = async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = rx.wait_for(|s| *s) => {}
            }
        };
        let done = worker.run(shutdown).await;
        let _ = stop.send(true);
        let ended: Vec<String> = done.ended.iter().map(|(state, n)| format!("{n} {state}")).collect();
        report(&format!(
            "worker: {} run(s) started ({} taken over), {} cancel(s) honoured; ended: {}",
            done.started,
            done.resumed,
            done.cancelled,
            if ended.is_empty() { "none".to_string() } else { ended.join(", ") }
        ));
        Exit::Completed
    })
}
