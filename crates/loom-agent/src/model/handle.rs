//! [`Model`]: the handle users pass to an agent, with a constructor per provider and the model
//! string grammar.

use std::fmt;
use std::sync::Arc;

use super::{EchoModel, LanguageModel, ScriptedModel, ScriptedTurn, SharedModel};
use crate::error::Error;

/// A model, ready to hand to an agent: a cheap-to-clone handle over any [`LanguageModel`].
///
/// Build one with a provider constructor (`Model::openai("gpt-5.1")`, `Model::anthropic(…)`,
/// `Model::gemini(…)`, `Model::ollama(…)`, `Model::compatible(base_url, name)`), or parse a model
/// string with [`Model::parse`]. Provider constructors return the provider's own type, so keys, base
/// URLs, timeouts and retries can be set before it is handed over:
///
/// ```no_run
/// # #[cfg(feature = "providers")] {
/// use loom_agent::{Agent, Model};
///
/// let agent = Agent::builder()
///     .model(Model::openai("gpt-5.1").api_key("sk-…"))
///     .build();
/// # }
/// ```
#[derive(Clone)]
pub struct Model(pub(crate) SharedModel);

/// The model strings this build understands, for error messages and `--help`.
pub const ACCEPTED_MODEL_STRINGS: &str = match (cfg!(feature = "providers"), cfg!(feature = "local")) {
    (true, local) => {
        if local {
            "\"echo\", \"scripted:FILE.json\", \"local\" (the embedded SmolLM2-135M-Instruct), \"local:FILE.gguf\", a \
             model name starting with \"claude-\" (Anthropic), \"gpt-\", \"o1\", \"o3\", \"o4-\" or \"chatgpt-\" (OpenAI), \
             \"gemini-\" (Gemini), or \"PROVIDER:MODEL\" with PROVIDER one of openai, openai-responses, anthropic, \
             gemini, ollama, vllm, llamacpp, lmstudio, deepseek, qwen, mistral, groq, openrouter, together"
        } else {
            "\"echo\", \"scripted:FILE.json\", a model name starting with \"claude-\" (Anthropic), \"gpt-\", \"o1\", \
             \"o3\", \"o4-\" or \"chatgpt-\" (OpenAI), \"gemini-\" (Gemini), or \"PROVIDER:MODEL\" with PROVIDER one of \
             openai, openai-responses, anthropic, gemini, ollama, vllm, llamacpp, lmstudio, deepseek, qwen, mistral, \
             groq, openrouter, together"
        }
    }
    (false, true) => {
        "\"echo\", \"scripted:FILE.json\", \"local\" (the embedded SmolLM2-135M-Instruct), \"local:FILE.gguf\" \
         (model providers need the `providers` feature)"
    }
    (false, false) => "\"echo\", \"scripted:FILE.json\" (model providers need the `providers` feature)",
};

impl Model {
    /// Wraps any model.
    pub fn new(model: impl LanguageModel) -> Self {
        Model(Arc::new(model))
    }

    /// Wraps a shared model.
    pub fn from_shared(model: SharedModel) -> Self {
        Model(model)
    }

    /// The shared model inside.
    pub fn shared(&self) -> &SharedModel {
        &self.0
    }

    /// The model's name.
    pub fn name(&self) -> &str {
        self.0.name()
    }

    /// The model's provider.
    pub fn provider(&self) -> &str {
        self.0.provider()
    }

    /// The echo model: answers with the last user message.
    pub fn echo() -> EchoModel {
        EchoModel::new()
    }

    /// The embedded local model, SmolLM2-135M-Instruct, run in-process (the `local` feature). It
    /// needs no key and no network once cached; the first use fetches it (see
    /// [`local::pull`](super::local::pull)). The model string `"local"`; `"local:FILE.gguf"` runs
    /// another llama-architecture GGUF.
    #[cfg(feature = "local")]
    pub fn local() -> super::LocalModel {
        super::LocalModel::new()
    }

    /// A scripted model.
    pub fn scripted(turns: impl IntoIterator<Item = ScriptedTurn>) -> ScriptedModel {
        ScriptedModel::new(turns)
    }

    /// Resolves a model string (see [`ACCEPTED_MODEL_STRINGS`]): `"echo"`, `"scripted:FILE.json"`,
    /// `"claude-…"`, `"gpt-…"`, `"o1"`, `"o3"`, `"o4-…"`, `"gemini-…"`, or `"provider:model"` such as
    /// `"ollama:qwen3"`, `"deepseek:deepseek-chat"`, `"openai-responses:gpt-5.1"`. An unknown string is
    /// an [`Error::Config`] listing what is accepted.
    pub fn parse(spec: &str) -> Result<Model, Error> {
        Self::parse_with(spec, None)
    }

    /// Like [`Model::parse`], with the base URL overridden (for HTTP providers). A base URL that
    /// is not an absolute `http://` or `https://` URL (given here or in the provider's environment
    /// variable) is an [`Error::Config`].
    pub fn parse_with(spec: &str, base_url: Option<&str>) -> Result<Model, Error> {
        Self::parse_with_key(spec, base_url, None)
    }

    /// Like [`Model::parse_with`], with the API key given (for HTTP providers; ignored by the
    /// echo, scripted and local models) instead of read from the provider's environment variable.
    pub fn parse_with_key(spec: &str, base_url: Option<&str>, api_key: Option<&str>) -> Result<Model, Error> {
        let s = spec.trim();
        if s.is_empty() {
            return Err(Error::Config(format!("the model string is empty; accepted: {ACCEPTED_MODEL_STRINGS}")));
        }
        let unknown = || Error::Config(format!("unknown model \"{s}\"; accepted: {ACCEPTED_MODEL_STRINGS}"));
        if s.eq_ignore_ascii_case("echo") {
            return Ok(Model::new(EchoModel::new()));
        }
        if let Some(path) = s.strip_prefix("scripted:") {
            return Ok(Model::new(ScriptedModel::from_file(path)?));
        }
        #[cfg(feature = "local")]
        if s.eq_ignore_ascii_case("local") {
            return Ok(Model::new(Model::local()));
        }
        #[cfg(feature = "local")]
        if let Some(path) = s.strip_prefix("local:") {
            if path.trim().is_empty() {
                return Err(Error::Config(format!("the model string \"{s}\" names no GGUF file after the colon")));
            }
            return Ok(Model::new(super::LocalModel::from_path(path.trim())));
        }
        #[cfg(feature = "providers")]
        let parsed = providers_parse(s, base_url, api_key).ok_or_else(unknown)?;
        #[cfg(not(feature = "providers"))]
        let parsed = {
            let _ = (base_url, api_key);
            Err(unknown())
        };
        parsed
    }
}

#[cfg(feature = "providers")]
fn providers_parse(s: &str, base_url: Option<&str>, api_key: Option<&str>) -> Option<Result<Model, Error>> {
    use super::providers::{self, Preset};

    /// The model with its base URL (the given one, else its default or environment variable),
    /// checked: a malformed base URL is a configuration error here, not a failing first call.
    fn with_base<W: providers::WireFormat>(
        m: providers::HttpModel<W>,
        base: Option<&str>,
        key: Option<&str>,
    ) -> Result<Model, Error> {
        let m = match base {
            Some(b) => m.base_url(b),
            None => m,
        };
        let m = match key {
            Some(k) => m.api_key(k),
            None => m,
        };
        m.check().map_err(|e| Error::Config(e.to_string()))?;
        Ok(Model::new(m))
    }
    let (provider, name) = match s.split_once(':') {
        Some((p, n)) if !n.is_empty() => (p.to_ascii_lowercase(), n.to_string()),
        Some(_) => return Some(Err(Error::Config(format!("the model string \"{s}\" names no model after the colon")))),
        None => {
            let lower = s.to_ascii_lowercase();
            let provider = if lower.starts_with("claude-") {
                "anthropic"
            } else if lower.starts_with("gpt-")
                || lower.starts_with("chatgpt-")
                || ["o1", "o3", "o4"].iter().any(|p| lower == *p || lower.starts_with(&format!("{p}-")))
            {
                "openai"
            } else if lower.starts_with("gemini-") {
                "gemini"
            } else {
                return None;
            };
            (provider.to_string(), s.to_string())
        }
    };
    let model = match provider.as_str() {
        "openai" => with_base(Model::openai(&name), base_url, api_key),
        "openai-responses" | "responses" => with_base(Model::openai_responses(&name), base_url, api_key),
        "anthropic" | "claude" => with_base(Model::anthropic(&name), base_url, api_key),
        "gemini" | "google" => with_base(Model::gemini(&name), base_url, api_key),
        other => match Preset::named(other) {
            Some(preset) => with_base(preset.model(&name), base_url, api_key),
            None => return None,
        },
    };
    Some(model)
}

#[cfg(feature = "providers")]
impl Model {
    /// OpenAI Chat Completions. Key: `.api_key(…)`, else `OPENAI_API_KEY`; base URL:
    /// `.base_url(…)`, else `OPENAI_BASE_URL`, else `https://api.openai.com/v1`.
    pub fn openai(model: &str) -> super::providers::OpenAIModel {
        super::providers::compatible::openai(model)
    }

    /// The OpenAI Responses API (same key and base URL rules as [`Model::openai`]).
    pub fn openai_responses(model: &str) -> super::providers::OpenAIResponsesModel {
        super::providers::responses::openai_responses(model)
    }

    /// Anthropic Messages. Key: `.api_key(…)`, else `ANTHROPIC_API_KEY`; base URL: `.base_url(…)`,
    /// else `ANTHROPIC_BASE_URL`, else `https://api.anthropic.com`.
    pub fn anthropic(model: &str) -> super::providers::AnthropicModel {
        super::providers::anthropic::anthropic(model)
    }

    /// Google Gemini. Key: `.api_key(…)`, else `GEMINI_API_KEY` (or `GOOGLE_API_KEY`); base URL:
    /// `.base_url(…)`, else `GEMINI_BASE_URL`, else `https://generativelanguage.googleapis.com`.
    pub fn gemini(model: &str) -> super::providers::GeminiModel {
        super::providers::gemini::gemini(model)
    }

    /// A model on a local Ollama server (`OLLAMA_BASE_URL`, else `http://localhost:11434/v1`).
    pub fn ollama(model: &str) -> super::providers::OpenAIModel {
        super::providers::compatible::preset_model("ollama", model)
    }

    /// A model on any OpenAI-compatible server.
    pub fn compatible(base_url: &str, model: &str) -> super::providers::OpenAIModel {
        super::providers::compatible::compatible(base_url, model)
    }

    /// A model on a named OpenAI-compatible preset (`"deepseek"`, `"groq"`, …).
    pub fn preset(provider: &str, model: &str) -> Result<super::providers::OpenAIModel, Error> {
        super::providers::Preset::named(provider).map(|p| p.model(model)).ok_or_else(|| {
            let names: Vec<&str> = super::providers::PRESETS.iter().map(|p| p.name).collect();
            Error::Config(format!("unknown provider \"{provider}\"; presets: {}", names.join(", ")))
        })
    }

    /// Ordered failover across models.
    pub fn fallback<I, M>(models: I) -> Result<super::providers::FallbackModel, Error>
    where
        I: IntoIterator<Item = M>,
        M: super::IntoModel,
    {
        let models = models.into_iter().map(super::resolve_model).collect::<Result<Vec<_>, _>>()?;
        Ok(super::providers::FallbackModel::new(models))
    }
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model").field("name", &self.0.name()).field("provider", &self.0.provider()).finish()
    }
}

impl std::str::FromStr for Model {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Model::parse(s)
    }
}
