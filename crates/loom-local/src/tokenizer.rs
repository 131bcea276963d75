//! The GGUF's own tokenizer (byte-level BPE), built with candle's GGUF reader and corrected to
//! match llama.cpp's token ids, plus the raw bytes of every token (for streaming and for the
//! constrained-decoding trie).

use candle_core::quantized::gguf_file;
use candle_core::quantized::tokenizer::TokenizerFromGguf;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;

use loom_core::error::Error;

/// A tokenizer over a GGUF vocabulary.
pub struct GgufTokenizer {
    inner: tokenizers::Tokenizer,
    /// Each token's bytes; control tokens hold their text (`<|im_end|>`).
    token_bytes: Vec<Vec<u8>>,
    special: Vec<bool>,
    eos: u32,
    bos: Option<u32>,
}

impl std::fmt::Debug for GgufTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufTokenizer").field("vocab", &self.token_bytes.len()).field("eos", &self.eos).finish()
    }
}

impl GgufTokenizer {
    /// Builds the tokenizer from a GGUF's metadata.
    ///
    /// candle maps `tokenizer.ggml.pre = smollm` (and other names it does not know) to GPT-2's
    /// pre-tokenizer with a prefix space, which gives `ĠWhat` (1812) where llama.cpp gives `What`
    /// (1780). SmolLM's own pre-tokenizer is digits split one by one, then byte-level without a
    /// prefix space; that is what is installed here for byte-level BPE vocabularies.
    pub fn from_gguf(content: &gguf_file::Content) -> Result<GgufTokenizer, Error> {
        let mut inner = tokenizers::Tokenizer::from_gguf(content)
            .map_err(|e| Error::ModelFile(format!("cannot build the tokenizer from the GGUF: {e}")))?;
        let pre = content.metadata.get("tokenizer.ggml.pre").and_then(|v| v.to_string().ok()).cloned();
        if matches!(pre.as_deref(), None | Some("smollm") | Some("default") | Some("gpt2") | Some("gpt-2")) {
            let digits = Digits::new(true);
            let byte_level = ByteLevel::new(false, true, true);
            let seq =
                Sequence::new(vec![PreTokenizerWrapper::Digits(digits), PreTokenizerWrapper::ByteLevel(byte_level)]);
            inner.with_pre_tokenizer(Some(PreTokenizerWrapper::Sequence(seq)));
        }
        let tokens = content
            .metadata
            .get("tokenizer.ggml.tokens")
            .and_then(|v| v.to_vec().ok())
            .ok_or_else(|| Error::ModelFile("the GGUF has no tokenizer.ggml.tokens".into()))?;
        let types: Vec<u32> = content
            .metadata
            .get("tokenizer.ggml.token_type")
            .and_then(|v| v.to_vec().ok())
            .map(|v| v.iter().map(|t| t.to_i32().map(|x| x as u32).or_else(|_| t.to_u32()).unwrap_or(1)).collect())
            .unwrap_or_default();
        let decoder = byte_decoder();
        let mut token_bytes = Vec::with_capacity(tokens.len());
        let mut special = Vec::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            let text = t.to_string().map(String::as_str).unwrap_or("");
            // llama_token_type: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
            let ty = types.get(i).copied().unwrap_or(1);
            let is_special = matches!(ty, 2 | 3 | 5);
            let bytes = if is_special || ty == 4 {
                text.as_bytes().to_vec()
            } else {
                text.chars().map(|c| decoder.get(&c).copied().unwrap_or(b'?')).collect()
            };
            token_bytes.push(bytes);
            special.push(is_special);
        }
        let md = |k: &str| content.metadata.get(k).and_then(|v| v.to_u32().ok());
        let eos = md("tokenizer.ggml.eos_token_id").unwrap_or(0);
        let bos = md("tokenizer.ggml.bos_token_id");
        Ok(GgufTokenizer { inner, token_bytes, special, eos, bos })
    }

    /// Token ids for `text`. Control-token text such as `<|im_start|>` becomes the control token.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, Error> {
        self.inner
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| Error::ModelFile(format!("tokenizing failed: {e}")))
    }

    /// The bytes of a token (empty for an unknown id).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.token_bytes.get(id as usize).map(Vec::as_slice).unwrap_or_default()
    }

    /// Whether a token is a control token (not text).
    pub fn is_special(&self, id: u32) -> bool {
        self.special.get(id as usize).copied().unwrap_or(false)
    }

    /// Text of a token sequence, control tokens left out.
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> =
            ids.iter().filter(|&&i| !self.is_special(i)).flat_map(|&i| self.token_bytes(i).iter().copied()).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.token_bytes.len()
    }

    /// The end-of-sequence token (`<|im_end|>` for ChatML models).
    pub fn eos(&self) -> u32 {
        self.eos
    }

    /// The beginning-of-sequence token, when the vocabulary has one.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// The id of a token by its exact text (for control tokens such as `<|im_end|>`).
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.inner.token_to_id(text)
    }
}

/// GPT-2's byte-to-unicode table, inverted: the character each byte is written as in the vocab.
fn byte_decoder() -> std::collections::HashMap<char, u8> {
    let mut printable: Vec<u32> = (u32::from(b'!')..=u32::from(b'~')).collect();
    printable.extend(0xA1..=0xAC);
    printable.extend(0xAE..=0xFF);
    let mut map = std::collections::HashMap::with_capacity(256);
    let mut extra = 0u32;
    for b in 0u32..256 {
        let c = if printable.contains(&b) {
            b
        } else {
            extra += 1;
            255 + extra
        };
        if let Some(ch) = char::from_u32(c) {
            map.insert(ch, b as u8);
        }
    }
    map
}

/// Turns a stream of token bytes into text pieces on UTF-8 boundaries.
#[derive(Default)]
pub(crate) struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Adds bytes; returns the text that is now complete.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        match std::str::from_utf8(&self.pending) {
            Ok(s) => {
                let out = s.to_string();
                self.pending.clear();
                out
            }
            Err(e) => {
                let valid = e.valid_up_to();
                // An incomplete sequence at the end waits for more bytes; a bad one is replaced.
                if e.error_len().is_none() {
                    let out = String::from_utf8_lossy(self.pending.get(..valid).unwrap_or_default()).into_owned();
                    self.pending.drain(..valid);
                    out
                } else {
                    let out = String::from_utf8_lossy(&self.pending).into_owned();
                    self.pending.clear();
                    out
                }
            }
        }
    }

    /// The rest, replacing an incomplete sequence.
    pub(crate) fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}
