//! `loom`: the command line of Loom, an agent runtime for Rust.
//!
//! `loom run "prompt"` runs an agent on a prompt and streams what it does: the answer on stdout as
//! it arrives, thinking, tool calls and tool results on stderr. `--json` prints every run event as
//! one JSON line instead, then the run's result. The exit code says how the run ended (see
//! `loom run --help`). Logs (warnings, and more with `-v`/`-vv` or `RUST_LOG`) go to stderr.
//!
//! The layout: [`cli`] holds the clap definitions, [`run`] the `run` command, [`audit`] the
//! `audit` command, [`runs`] the `runs` commands (journaled runs), [`tools_cmd`] the `tools` command,
//! [`chat`] the `chat` command, and [`render`] the human view.

mod approval;
mod audit;
mod chat;
mod cli;
mod knowledge_cmd;
mod memory_cmd;
mod model_cmd;
mod queue_cmd;
mod render;
mod run;
mod runs;
mod serve_cmd;
mod signal_cmd;
mod tools_cmd;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_logging(cli.verbose);
    let exit = match cli.command {
        cli::Command::Run(args) => run::main(args),
        cli::Command::Audit(args) => audit::main(args),
        cli::Command::Runs(args) => runs::main(args),
        cli::Command::Model(args) => model_cmd::main(args),
        cli::Command::Tools(args) => tools_cmd::main(args),
        cli::Command::Memory(args) => memory_cmd::main(args),
        cli::Command::Knowledge(args) => knowledge_cmd::main(args),
        cli::Command::Signal(args) => signal_cmd::signal(args),
        cli::Command::Schedule(args) => signal_cmd::schedule(args),
        cli::Command::Worker(args) => signal_cmd::worker(args),
        cli::Command::Serve(args) => serve_cmd::serve(args),
        cli::Command::Keys(args) => serve_cmd::keys(args),
        cli::Command::Chat(args) => chat::main(args),
    };
    ExitCode::from(exit as u8)
}

/// Logs to stderr: warnings by default, `-v` info, `-vv` debug; `RUST_LOG`, when set, decides
/// instead. (Secrets are never logged: the audit key and provider keys appear in no event.)
fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => tracing::Level::WARN,
        1 => tracing::Level::INFO,
        _ => tracing::Level::DEBUG,
    };
    let filter = tracing_subscriber::EnvFilter::builder()
        .with_default_directive(tracing_subscriber::filter::LevelFilter::from_level(level).into())
        .from_env_lossy();
    // Fails only if a subscriber is already set, which nothing here does.
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
