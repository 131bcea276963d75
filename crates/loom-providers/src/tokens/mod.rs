//! Token counting for the providers that publish their tokenizer: OpenAI's models use the o200k
//! (GPT-4o, GPT-4.1, GPT-5, o-series) and cl100k (GPT-4, GPT-3.5) byte-pair encodings, which
//! `bpe-openai` embeds in the crate (nothing is downloaded at run time) and counts in linear time,
//! with the same results as tiktoken. Other providers (Anthropic, Gemini) publish no tokenizer:
//! the runtime estimates for them and corrects the estimate from the usage they report.
//!
//! Counting takes a fast path for ASCII text (`fast`): the same pieces and counts as tiktoken,
//! about four times as fast as `bpe-openai`'s own `count` on mixed prose and code
//! (`benches/tokens.rs`).

use std::sync::Arc;

#[cfg(feature = "bpe")]
mod fast;

use loom_core::model::TokenCounter;

/// Which OpenAI encoding a model uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// `o200k_base`: GPT-4o, GPT-4.1, GPT-5, o1, o3, o4.
    O200k,
    /// `cl100k_base`: GPT-4, GPT-3.5, the `text-embedding-3` models.
    Cl100k,
}

impl Encoding {
    /// The encoding of an OpenAI model, by name (gateway prefixes such as `openai/` are ignored);
    /// `None` for models that are not OpenAI's.
    pub fn for_model(model: &str) -> Option<Encoding> {
        let name = model.rsplit('/').next().unwrap_or(model).to_ascii_lowercase();
        let o200k = ["gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "gpt-6", "o1", "o3", "o4", "chatgpt-4o", "gpt-oss"];
        let cl100k = ["gpt-4", "gpt-3.5", "text-embedding-3", "text-embedding-ada"];
        let starts = |p: &&str| name.starts_with(*p);
        if o200k.iter().any(starts) {
            Some(Encoding::O200k)
        } else if cl100k.iter().any(starts) {
            Some(Encoding::Cl100k)
        } else {
            None
        }
    }

    /// The encoding's name.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::O200k => "o200k_base",
            Encoding::Cl100k => "cl100k_base",
        }
    }
}

/// A tiktoken-compatible counter for one OpenAI encoding (feature `bpe`, on by default).
///
/// ```
/// use loom_core::model::TokenCounter;
/// use loom_providers::tokens::{Encoding, OpenAiBpe};
///
/// let counter = OpenAiBpe::new(Encoding::O200k);
/// assert_eq!(counter.count("hello world"), 2);
/// ```
#[cfg(feature = "bpe")]
#[derive(Clone, Copy, Debug)]
pub struct OpenAiBpe {
    encoding: Encoding,
}

#[cfg(feature = "bpe")]
impl OpenAiBpe {
    /// A counter for `encoding`. The encoding's tables are loaded once per process, on first use.
    pub fn new(encoding: Encoding) -> Self {
        OpenAiBpe { encoding }
    }

    /// The encoding.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }
}

#[cfg(feature = "bpe")]
impl TokenCounter for OpenAiBpe {
    fn name(&self) -> &str {
        self.encoding.name()
    }

    fn count(&self, text: &str) -> usize {
        match self.encoding {
            Encoding::O200k => fast::o200k().count(text),
            Encoding::Cl100k => fast::cl100k().count(text),
        }
    }
}

/// The exact counter for `model`, when its tokenizer is known and compiled in (OpenAI models with
/// the `bpe` feature); `None` otherwise.
pub fn for_model(model: &str) -> Option<Arc<dyn TokenCounter>> {
    #[cfg(feature = "bpe")]
    {
        Encoding::for_model(model).map(|e| Arc::new(OpenAiBpe::new(e)) as Arc<dyn TokenCounter>)
    }
    #[cfg(not(feature = "bpe"))]
    {
        let _ = model;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_map_to_their_encoding() {
        assert_eq!(Encoding::for_model("gpt-4o-mini"), Some(Encoding::O200k));
        assert_eq!(Encoding::for_model("openai/gpt-5"), Some(Encoding::O200k));
        assert_eq!(Encoding::for_model("o3-mini"), Some(Encoding::O200k));
        assert_eq!(Encoding::for_model("gpt-4-turbo"), Some(Encoding::Cl100k));
        assert_eq!(Encoding::for_model("gpt-3.5-turbo"), Some(Encoding::Cl100k));
        assert_eq!(Encoding::for_model("claude-sonnet-4"), None);
        assert_eq!(Encoding::for_model("llama3"), None);
    }

    #[cfg(feature = "bpe")]
    #[test]
    fn counts_match_tiktoken() {
        let texts = [
            "",
            "hello world",
            "tiktoken is great!",
            "  leading spaces\n\n\ttabs and newlines\r\n",
            "fn main() { println!(\"{}\", 1 + 2); } // code",
            "Ünïcödé, 日本語のテキスト, emojis 🎉🚀 and numbers 1234567890",
            "{\"role\":\"tool\",\"content\":\"[1, 2, 3]\"}",
        ];
        let long = "The quick brown fox jumps over the lazy dog. ".repeat(200);
        let reference_o200k = tiktoken_rs::o200k_base().unwrap();
        let reference_cl100k = tiktoken_rs::cl100k_base().unwrap();
        for text in texts.iter().copied().chain([long.as_str()]) {
            let o200k = OpenAiBpe::new(Encoding::O200k).count(text);
            let cl100k = OpenAiBpe::new(Encoding::Cl100k).count(text);
            assert_eq!(o200k, reference_o200k.encode_ordinary(text).len(), "o200k: {text:?}");
            assert_eq!(cl100k, reference_cl100k.encode_ordinary(text).len(), "cl100k: {text:?}");
        }
        assert_eq!(OpenAiBpe::new(Encoding::O200k).count("hello world"), 2);
        assert!(for_model("gpt-4o").is_some() && for_model("gemini-2.5-pro").is_none());
    }
}
