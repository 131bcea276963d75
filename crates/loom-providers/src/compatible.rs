//! OpenAI-compatible servers: presets with their default base URL and key variable.

use crate::http::HttpModel;
use crate::openai::ChatCompletions;

/// A known OpenAI-compatible server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Preset {
    /// The name used in model strings (`"ollama:qwen3"`).
    pub name: &'static str,
    /// The default base URL.
    pub base_url: &'static str,
    /// The variable that overrides the base URL.
    pub base_url_env: &'static str,
    /// The variable holding the key (`""`: no key).
    pub key_env: &'static str,
    /// Whether calls fail without a key.
    pub key_required: bool,
}

/// Every preset.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "ollama",
        base_url: "http://localhost:11434/v1",
        base_url_env: "OLLAMA_BASE_URL",
        key_env: "",
        key_required: false,
    },
    Preset {
        name: "vllm",
        base_url: "http://localhost:8000/v1",
        base_url_env: "VLLM_BASE_URL",
        key_env: "VLLM_API_KEY",
        key_required: false,
    },
    Preset {
        name: "llamacpp",
        base_url: "http://localhost:8080/v1",
        base_url_env: "LLAMACPP_BASE_URL",
        key_env: "",
        key_required: false,
    },
    Preset {
        name: "lmstudio",
        base_url: "http://localhost:1234/v1",
        base_url_env: "LMSTUDIO_BASE_URL",
        key_env: "",
        key_required: false,
    },
    Preset {
        name: "deepseek",
        base_url: "https://api.deepseek.com/v1",
        base_url_env: "DEEPSEEK_BASE_URL",
        key_env: "DEEPSEEK_API_KEY",
        key_required: true,
    },
    Preset {
        name: "qwen",
        base_url: "https://dashscope-intl.aliyuncs.com/compatible-mode/v1",
        base_url_env: "DASHSCOPE_BASE_URL",
        key_env: "DASHSCOPE_API_KEY",
        key_required: true,
    },
    Preset {
        name: "mistral",
        base_url: "https://api.mistral.ai/v1",
        base_url_env: "MISTRAL_BASE_URL",
        key_env: "MISTRAL_API_KEY",
        key_required: true,
    },
    Preset {
        name: "groq",
        base_url: "https://api.groq.com/openai/v1",
        base_url_env: "GROQ_BASE_URL",
        key_env: "GROQ_API_KEY",
        key_required: true,
    },
    Preset {
        name: "openrouter",
        base_url: "https://openrouter.ai/api/v1",
        base_url_env: "OPENROUTER_BASE_URL",
        key_env: "OPENROUTER_API_KEY",
        key_required: true,
    },
    Preset {
        name: "together",
        base_url: "https://api.together.xyz/v1",
        base_url_env: "TOGETHER_BASE_URL",
        key_env: "TOGETHER_API_KEY",
        key_required: true,
    },
];

impl Preset {
    /// The preset with this name (`"llama.cpp"` and `"lm-studio"` are accepted too).
    pub fn named(name: &str) -> Option<&'static Preset> {
        let n = name.to_ascii_lowercase().replace(['.', '-', '_'], "");
        PRESETS.iter().find(|p| p.name == n)
    }

    /// A model on this server.
    pub fn model(&self, model: &str) -> HttpModel<ChatCompletions> {
        HttpModel::new(ChatCompletions {
            provider: self.name.to_string(),
            model: model.to_string(),
            base_url: crate::base_url_from_env(self.base_url_env, self.base_url),
            key_env: self.key_env,
            key_required: self.key_required,
            extra_headers: Vec::new(),
            native_structured_output: false,
            context_window: None,
        })
    }
}

/// A model on a preset by name (the name must be one of [`PRESETS`]).
pub fn preset_model(name: &str, model: &str) -> HttpModel<ChatCompletions> {
    match Preset::named(name) {
        Some(p) => p.model(model),
        None => compatible("http://localhost", model),
    }
}

/// A model on any OpenAI-compatible server, by base URL. The key, when the server needs one, comes
/// from `.api_key(…)`.
pub fn compatible(base_url: &str, model: &str) -> HttpModel<ChatCompletions> {
    HttpModel::new(ChatCompletions {
        provider: "compatible".to_string(),
        model: model.to_string(),
        base_url: base_url.trim_end_matches('/').to_string(),
        key_env: "",
        key_required: false,
        extra_headers: Vec::new(),
        native_structured_output: false,
        context_window: None,
    })
}

/// OpenAI itself: `OPENAI_API_KEY`, `OPENAI_BASE_URL`.
pub fn openai(model: &str) -> HttpModel<ChatCompletions> {
    HttpModel::new(ChatCompletions {
        provider: "openai".to_string(),
        model: model.to_string(),
        base_url: crate::base_url_from_env("OPENAI_BASE_URL", "https://api.openai.com/v1"),
        key_env: "OPENAI_API_KEY",
        key_required: true,
        extra_headers: Vec::new(),
        native_structured_output: true,
        context_window: None,
    })
}
