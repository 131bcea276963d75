//! Choosing an embedder: embedder strings ([`parse_embedder`]) and the default one
//! ([`default_embedder`]).

use std::sync::Arc;

use crate::embed::Embedder;
use crate::error::Error;

/// The accepted embedder strings, for error messages.
pub const ACCEPTED_EMBEDDERS: &str = "`local` (all-MiniLM-L6-v2 in process, after `loom model pull --embedder`), \
     `local:DIR` (its files in DIR), `openai:MODEL` (e.g. `openai:text-embedding-3-small`; OPENAI_API_KEY), \
     `PRESET:MODEL` for an OpenAI-compatible server preset (e.g. `ollama:nomic-embed-text`, `vllm:MODEL`), \
     `http(s)://HOST/PATH:MODEL` (any OpenAI-compatible `/embeddings` endpoint, e.g. `http://localhost:11434/v1:nomic-embed-text`)";

/// An embedder from a string:
///
/// - `"local"`: all-MiniLM-L6-v2 in this process (feature `local`); fails with
///   [`Error::ModelNotPulled`] until `loom model pull --embedder` has fetched it;
/// - `"local:DIR"`: the same model from `DIR` (`model.safetensors` and `tokenizer.json`);
/// - `"openai:text-embedding-3-small"`: OpenAI (`OPENAI_API_KEY`, `OPENAI_BASE_URL`; feature
///   `providers`);
/// - `"ollama:nomic-embed-text"`, `"vllm:MODEL"`, …: a preset OpenAI-compatible server, as for
///   model strings;
/// - `"http://localhost:11434/v1:nomic-embed-text"`: any OpenAI-compatible `/embeddings`
///   endpoint; the model follows the first `:` after the URL's path starts.
///
/// Anything else is an [`Error::Config`] listing these forms.
///
/// ```
/// let err = loom_agent::parse_embedder("word2vec").err().unwrap();
/// assert!(err.to_string().contains("openai:MODEL"));
/// ```
pub fn parse_embedder(spec: &str) -> Result<Arc<dyn Embedder>, Error> {
    let spec = spec.trim();
    let bad = |why: &str| Error::Config(format!("bad embedder `{spec}`: {why}; accepted: {ACCEPTED_EMBEDDERS}"));
    if spec == "local" || spec.starts_with("local:") {
        return local(spec.strip_prefix("local:"), &bad);
    }
    if spec.starts_with("http://") || spec.starts_with("https://") {
        let (base, model) = split_url(spec).ok_or_else(|| bad("the model is missing after the URL"))?;
        return http(base, model, &bad);
    }
    let Some((provider, model)) = spec.split_once(':') else {
        return Err(bad("unknown form"));
    };
    if model.trim().is_empty() {
        return Err(bad("the model is missing"));
    }
    preset(provider, model.trim(), &bad)
}

#[cfg(feature = "local")]
fn local(dir: Option<&str>, _bad: &dyn Fn(&str) -> Error) -> Result<Arc<dyn Embedder>, Error> {
    use crate::model::local::embed::{LocalEmbedder, PULL_COMMAND, is_pulled};
    let embedder = match dir {
        Some(dir) => LocalEmbedder::from_dir(dir),
        None => LocalEmbedder::new()?,
    };
    if !is_pulled(embedder.dir()) {
        return Err(Error::ModelNotPulled {
            model: "all-MiniLM-L6-v2 embedder".into(),
            path: embedder.dir().to_path_buf(),
            command: PULL_COMMAND.into(),
        });
    }
    Ok(Arc::new(embedder))
}

#[cfg(not(feature = "local"))]
fn local(_dir: Option<&str>, bad: &dyn Fn(&str) -> Error) -> Result<Arc<dyn Embedder>, Error> {
    Err(bad("the local embedder needs loom-agent's `local` feature"))
}

#[cfg(feature = "providers")]
fn http(base: &str, model: &str, _bad: &dyn Fn(&str) -> Error) -> Result<Arc<dyn Embedder>, Error> {
    Ok(Arc::new(crate::model::providers::HttpEmbedder::compatible(base, model)))
}

#[cfg(feature = "providers")]
fn preset(provider: &str, model: &str, bad: &dyn Fn(&str) -> Error) -> Result<Arc<dyn Embedder>, Error> {
    use crate::model::providers::{HttpEmbedder, PRESETS};
    if provider == "openai" {
        return Ok(Arc::new(HttpEmbedder::openai(model)));
    }
    match PRESETS.iter().find(|p| p.name == provider) {
        Some(p) => Ok(Arc::new(HttpEmbedder::preset(p, model))),
        None => Err(bad(&format!("unknown provider `{provider}`"))),
    }
}

#[cfg(not(feature = "providers"))]
fn http(_base: &str, _model: &str, bad: &dyn Fn(&str) -> Error) -> Result<Arc<dyn Embedder>, Error> {
    Err(bad("embedders over HTTP need loom-agent's `providers` feature"))
}

#[cfg(not(feature = "providers"))]
fn preset(_provider: &str, _model: &str, bad: &dyn Fn(&str) -> Error) -> Result<Arc<dyn Embedder>, Error> {
    Err(bad("embedders over HTTP need loom-agent's `providers` feature"))
}

/// Splits `http://host:port/v1:model` into the base URL and the model: the model follows the first
/// `:` after the path starts, or, for a URL without a path, a `:` after the host that is not a port.
fn split_url(spec: &str) -> Option<(&str, &str)> {
    let after_scheme = spec.find("://")? + 3;
    let rest = spec.get(after_scheme..)?;
    let (base_end, model) = match rest.find('/') {
        Some(slash) => {
            let path = rest.get(slash..)?;
            let colon = path.find(':')?;
            (after_scheme + slash + colon, path.get(colon + 1..)?)
        }
        None => {
            let colon = rest.rfind(':')?;
            let tail = rest.get(colon + 1..)?;
            let host_colons = rest.matches(':').count();
            if host_colons == 1 && tail.chars().all(|c| c.is_ascii_digit()) {
                return None; // only a port
            }
            // `host:port:model` or `host:model`: the model follows the host (and port).
            let first = rest.find(':')?;
            let model_at = if host_colons >= 2 { rest.get(first + 1..)?.find(':')? + first + 1 } else { first };
            (after_scheme + model_at, rest.get(model_at + 1..)?)
        }
    };
    let model = model.trim();
    (!model.is_empty()).then(|| (spec.get(..base_end).unwrap_or_default(), model))
}

/// The embedder an agent with memory uses when none is configured: the local all-MiniLM-L6-v2
/// when loom-agent has the `local` feature and the model has been pulled
/// (`loom model pull --embedder`); otherwise `None`, and recall is full-text only (said once per
/// process in a `tracing` warning).
pub fn default_embedder() -> Option<Arc<dyn Embedder>> {
    #[cfg(feature = "local")]
    if let Some(embedder) = crate::model::local::embed::LocalEmbedder::if_pulled() {
        return Some(Arc::new(embedder));
    }
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        if cfg!(feature = "local") {
            tracing::warn!(
                "memory: no embedder configured and the local embedder is not pulled: recall uses full text only \
                 (run `loom model pull --embedder`, or set one with AgentBuilder::embedder)"
            );
        } else {
            tracing::warn!(
                "memory: no embedder configured: recall uses full text only (set one with AgentBuilder::embedder, \
                 or enable loom-agent's `local` feature for the local embedder)"
            );
        }
    });
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::split_url;

    #[test]
    fn urls_split_at_the_model() {
        let s = |spec| split_url(spec);
        assert_eq!(
            s("http://localhost:11434/v1:nomic-embed-text"),
            Some(("http://localhost:11434/v1", "nomic-embed-text"))
        );
        assert_eq!(s("https://h/v1:nomic-embed-text:latest"), Some(("https://h/v1", "nomic-embed-text:latest")));
        assert_eq!(s("http://h:8000:bge-m3"), Some(("http://h:8000", "bge-m3")));
        assert_eq!(s("http://h:bge-m3"), Some(("http://h", "bge-m3")));
        assert_eq!(s("http://h:8000"), None);
        assert_eq!(s("http://h/v1"), None);
        assert_eq!(s("http://h/v1:"), None);
    }
}
