//! `loom`: the command line of Loom, an agent runtime for Rust.
//!
//! `loom run "prompt"` runs an agent on a prompt and streams what it does: the answer on stdout as
//! it arrives, thinking, tool calls and tool results on stderr. `--json` prints every run event as
//! one JSON line instead, then the run's result. The exit code says how the run ended (see
//! `loom run --help`).
//!
//! The layout: [`cli`] holds the clap definitions, [`run`] the `run` command, [`audit`] the
//! `audit` command, [`runs`] the `runs` commands (journaled runs), and [`render`] the human view.

mod approval;
mod audit;
mod cli;
mod model_cmd;
mod render;
mod run;
mod runs;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let exit = match cli.command {
        cli::Command::Run(args) => run::main(args),
        cli::Command::Audit(args) => audit::main(args),
        cli::Command::Runs(args) => runs::main(args),
        cli::Command::Model(args) => model_cmd::main(args),
    };
    ExitCode::from(exit as u8)
}
