//! A fast path for counting with the o200k and cl100k encodings, with exactly tiktoken's counts.
//!
//! Counting is pre-tokenization (a regular expression cuts the text into pieces: words with their
//! leading space, runs of digits, punctuation, whitespace) and then byte-pair encoding of each
//! piece. `bpe-openai` runs one anchored regex search per piece and a backtracking encoder per
//! piece; for ordinary text a piece is about four bytes, so the per-piece set-up dominates.
//! Here:
//!
//! - pieces made of ASCII are cut by a hand-written scanner that follows the regex's
//!   leftmost-first semantics for ASCII characters ([`o200k_piece`], [`cl100k_piece`]); whenever
//!   the scanner would have to classify a non-ASCII character (a letter? a digit? whitespace?),
//!   it gives up on that piece and the regex cuts it, so the pieces are always the regex's;
//! - a piece that is itself a token counts one, as in tiktoken (which looks the whole piece up
//!   before merging); only other pieces go through the byte-pair encoder.
//!
//! The scanner is checked against the regex on random text mixing ASCII with the Unicode cases
//! that matter (letters of every case class, marks, digits, Unicode whitespace, `ſ` which folds
//! to `s`), and the counts against tiktoken (`tests` below).

use std::sync::LazyLock;

use bpe_openai::Tokenizer;
use rustc_hash::FxHashSet;

/// Character classes of ASCII bytes (bit flags), for the scanner.
const LOWER: u8 = 1;
const UPPER: u8 = 2;
const DIGIT: u8 = 4;
/// `\s`: tab, line feed, vertical tab, form feed, carriage return, space.
const SPACE: u8 = 8;
/// Carriage return or line feed (also `SPACE`).
const NEWLINE: u8 = 16;
/// Past the end of the text.
const END: u8 = 32;
const LETTER: u8 = LOWER | UPPER;

static CLASSES: [u8; 128] = {
    let mut t = [0u8; 128];
    let mut i = 0;
    while i < 128 {
        let b = i as u8;
        t[i] = if b.is_ascii_lowercase() {
            LOWER
        } else if b.is_ascii_uppercase() {
            UPPER
        } else if b.is_ascii_digit() {
            DIGIT
        } else if b == b'\r' || b == b'\n' {
            SPACE | NEWLINE
        } else if b == b' ' || b == b'\t' || b == 0x0b || b == 0x0c {
            SPACE
        } else {
            0
        };
        i += 1;
    }
    t
};

/// The class of the byte at `i` (`END` past the end); `None` for a non-ASCII byte, which the
/// scanner does not classify.
#[inline(always)]
fn class(b: &[u8], i: usize) -> Option<u8> {
    match b.get(i) {
        None => Some(END),
        Some(&x) if x < 128 => CLASSES.get(x as usize).copied(),
        Some(_) => None,
    }
}

/// Whether the class is "anything but a letter, a digit, whitespace" (the end is no character).
#[inline(always)]
fn is_other(c: u8) -> bool {
    c & (LETTER | DIGIT | SPACE | END) == 0
}

/// Whether a character of class `c` may be the optional prefix `[^\r\n\p{L}\p{N}]` of a word.
#[inline(always)]
fn is_word_prefix(c: u8) -> bool {
    c & (LETTER | DIGIT | NEWLINE | END) == 0
}

/// The end of the run of characters whose class intersects `mask`, from `i`.
#[inline(always)]
fn run(b: &[u8], mut i: usize, mask: u8) -> Option<usize> {
    while class(b, i)? & mask != 0 {
        i += 1;
    }
    Some(i)
}

/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)` at `i`: its end, or `i` when there is none.
#[inline]
fn contraction(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) != Some(&b'\'') {
        return Some(i);
    }
    // A non-ASCII character after the apostrophe may fold to one of these letters (`ſ` is `s`).
    class(b, i + 1)?;
    let lower = |j: usize| b.get(j).map(u8::to_ascii_lowercase);
    Some(match lower(i + 1) {
        Some(b's' | b't' | b'm' | b'd') => i + 2,
        Some(first @ (b'r' | b'v' | b'l')) => {
            class(b, i + 2)?;
            let second = if first == b'l' { b'l' } else { b'e' };
            if lower(i + 2) == Some(second) { i + 3 } else { i }
        }
        _ => i,
    })
}

/// The whitespace alternatives shared by both encodings, at `p` (a whitespace character):
/// `\s*[\r\n]+`, `\s+$`, then `\s+\s` without its last character, then `\s+`.
#[inline]
fn whitespace(b: &[u8], p: usize) -> Option<usize> {
    let end = run(b, p, SPACE)?;
    if let Some(last) = b.get(p..end)?.iter().rposition(|&x| x == b'\r' || x == b'\n') {
        return Some(p + last + 1);
    }
    if end == b.len() || end - p == 1 {
        return Some(end);
    }
    Some(end - 1)
}

/// ` ?[^\s\p{L}\p{N}]+[\r\n/]*` (o200k, `slash`) or ` ?[^\s\p{L}\p{N}]+[\r\n]*` (cl100k) at
/// `p`, if it matches.
#[inline]
fn punctuation(b: &[u8], p: usize, c0: u8, slash: bool) -> Option<Option<usize>> {
    let start = if b.get(p) == Some(&b' ') { p + 1 } else { p };
    if start == p && !is_other(c0) {
        return Some(None);
    }
    let mut end = start;
    while is_other(class(b, end)?) {
        end += 1;
    }
    if end == start {
        return Some(None);
    }
    while matches!(b.get(end), Some(b'\r' | b'\n')) || (slash && b.get(end) == Some(&b'/')) {
        end += 1;
    }
    Some(Some(end))
}

/// The end of the o200k piece starting at `p` (`p < b.len()`), or `None` when deciding it needs
/// a non-ASCII character classified.
///
/// The pattern, tried in this order at `p` (leftmost-first):
/// `[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|…)?`,
/// `[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|…)?`,
/// `\p{N}{1,3}`, ` ?[^\s\p{L}\p{N}]+[\r\n/]*`, `\s*[\r\n]+`, `\s+$`, `\s+(?!\S)`, `\s+`.
/// In ASCII the first two are "optional prefix, upper case run, lower case run": the first
/// needs a lower case letter, the second an upper case one.
pub(super) fn o200k_piece(b: &[u8], p: usize) -> Option<usize> {
    let c0 = class(b, p)?;
    let start = if is_word_prefix(c0) { p + 1 } else { p };
    let upper = run(b, start, UPPER)?;
    let lower = run(b, upper, LOWER)?;
    if lower > start {
        return contraction(b, lower);
    }
    if c0 & DIGIT != 0 {
        return digits(b, p);
    }
    if let Some(end) = punctuation(b, p, c0, true)? {
        return Some(end);
    }
    if c0 & SPACE != 0 {
        return whitespace(b, p);
    }
    None
}

/// The end of the cl100k piece starting at `p` (`p < b.len()`), or `None` when deciding it
/// needs a non-ASCII character classified.
///
/// The pattern: `(?i:'s|'t|'re|'ve|'m|'ll|'d)`, `[^\r\n\p{L}\p{N}]?\p{L}+`, `\p{N}{1,3}`,
/// ` ?[^\s\p{L}\p{N}]+[\r\n]*`, `\s*[\r\n]+`, `\s+$`, `\s+(?!\S)`, `\s+`.
pub(super) fn cl100k_piece(b: &[u8], p: usize) -> Option<usize> {
    let c0 = class(b, p)?;
    let end = contraction(b, p)?;
    if end > p {
        return Some(end);
    }
    let start = if is_word_prefix(c0) { p + 1 } else { p };
    let end = run(b, start, LETTER)?;
    if end > start {
        return Some(end);
    }
    if c0 & DIGIT != 0 {
        return digits(b, p);
    }
    if let Some(end) = punctuation(b, p, c0, false)? {
        return Some(end);
    }
    if c0 & SPACE != 0 {
        return whitespace(b, p);
    }
    None
}

/// `\p{N}{1,3}` at `p` (an ASCII digit).
#[inline]
fn digits(b: &[u8], p: usize) -> Option<usize> {
    let mut end = p + 1;
    while end < p + 3 && class(b, end)? & DIGIT != 0 {
        end += 1;
    }
    Some(end)
}

/// One encoding's counter: its tokenizer, the set of its tokens' bytes, and its scanner.
pub(super) struct FastCounter {
    tokenizer: &'static Tokenizer,
    tokens: FxHashSet<&'static [u8]>,
    piece: fn(&[u8], usize) -> Option<usize>,
}

impl FastCounter {
    fn new(tokenizer: &'static Tokenizer, piece: fn(&[u8], usize) -> Option<usize>) -> Self {
        let bpe = &tokenizer.bpe;
        let mut tokens = FxHashSet::default();
        tokens.reserve(bpe.num_tokens());
        for id in 0..bpe.num_tokens() {
            // Token ids are below 2^32 (200k tokens at most here).
            if let Ok(id) = u32::try_from(id) {
                tokens.insert(bpe.token_bytes(id));
            }
        }
        FastCounter { tokenizer, tokens, piece }
    }

    /// The number of tokens of `text`.
    pub(super) fn count(&self, text: &str) -> usize {
        let bytes = text.as_bytes();
        let mut count = 0;
        let mut p = 0;
        while p < bytes.len() {
            let end = match (self.piece)(bytes, p) {
                Some(end) => end,
                None => match self.regex_piece(text, p) {
                    Some(end) => end,
                    // The regex matches every non-empty text; should it not, count the rest as
                    // one piece rather than loop.
                    None => bytes.len(),
                },
            };
            let piece = bytes.get(p..end).unwrap_or_default();
            count += if self.tokens.contains(piece) { 1 } else { self.tokenizer.bpe.count(piece) };
            p = end.max(p + 1);
        }
        count
    }

    /// The end of the piece at `p` as the encoding's regex cuts it (`p` is a character boundary).
    fn regex_piece(&self, text: &str, p: usize) -> Option<usize> {
        let rest = text.get(p..)?;
        let piece = self.tokenizer.split(rest).next()?;
        Some(p + piece.len())
    }

    /// The pieces of `text` (for the tests: the fast path's cut against the regex's).
    #[cfg(test)]
    pub(super) fn pieces<'a>(&self, text: &'a str) -> Vec<&'a str> {
        let mut out = Vec::new();
        let mut p = 0;
        while p < text.len() {
            let end = (self.piece)(text.as_bytes(), p).or_else(|| self.regex_piece(text, p)).unwrap_or(text.len());
            out.push(&text[p..end]);
            p = end;
        }
        out
    }
}

static O200K: LazyLock<FastCounter> = LazyLock::new(|| FastCounter::new(bpe_openai::o200k_base(), o200k_piece));
static CL100K: LazyLock<FastCounter> = LazyLock::new(|| FastCounter::new(bpe_openai::cl100k_base(), cl100k_piece));

/// The o200k counter (built on first use).
pub(super) fn o200k() -> &'static FastCounter {
    &O200K
}

/// The cl100k counter (built on first use).
pub(super) fn cl100k() -> &'static FastCounter {
    &CL100K
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Characters that exercise every branch: ASCII of each class, contractions, and the
    /// non-ASCII characters the scanner must hand to the regex.
    const ALPHABET: &[&str] = &[
        "a", "b", "s", "t", "e", "r", "v", "l", "m", "d", "S", "T", "E", "R", "L", "D", "A", "Z", "x", "Q", "0", "1",
        "9", " ", " ", " ", "  ", "\t", "\n", "\r", "\r\n", "\x0b", "\x0c", "'", "'", "/", ".", ",", "!", "\"", "{",
        "}", "(", "-", "_", "#", "\x01", "\x1f", "\x7f", "é", "É", "ſ", "ǅ", "ʰ", "\u{301}", "日", "本", "²", "٣",
        "\u{a0}", "\u{2003}", "\u{3000}", "\u{85}", "€", "🎉", "ß", "İ", "K",
    ];

    fn text() -> impl Strategy<Value = String> {
        proptest::collection::vec(proptest::sample::select(ALPHABET), 0..40).prop_map(|parts| parts.concat())
    }

    fn regex_pieces<'a>(tokenizer: &'a Tokenizer, text: &'a str) -> Vec<&'a str> {
        tokenizer.split(text).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn o200k_pieces_are_the_regex_pieces(text in text()) {
            prop_assert_eq!(o200k().pieces(&text), regex_pieces(bpe_openai::o200k_base(), &text));
        }

        #[test]
        fn cl100k_pieces_are_the_regex_pieces(text in text()) {
            prop_assert_eq!(cl100k().pieces(&text), regex_pieces(bpe_openai::cl100k_base(), &text));
        }

        #[test]
        fn counts_are_bpe_openai_counts(text in text()) {
            prop_assert_eq!(o200k().count(&text), bpe_openai::o200k_base().count(text.as_str()));
            prop_assert_eq!(cl100k().count(&text), bpe_openai::cl100k_base().count(text.as_str()));
        }
    }

    #[test]
    fn tricky_cases_cut_like_the_regex() {
        let cases = [
            "HTTPServer's HELLO'S don't I'LL we're 'sup 're",
            "  \n\n  x\ty  \t\n z   ",
            "a  b   c\u{a0}d \u{3000}e",
            "12345 1.5e10 ²³ ٣٤٥ 7٣",
            "path/to/file.rs:12 // comment\r\n/* x */\n",
            "café naïve ÉCOLE Straße ǅemal ʰa e\u{301} 日本語 'ſ 'ſa",
            "{\"a\": [1, 2], \"b\": null}!!!\n\n\n",
            " ",
            "  ",
            "\n",
            "'",
            "' ",
            "x'",
            "X'LL",
            "\x01\x02a",
            "!a",
            "!A",
            "!1",
            "!\n",
        ];
        for text in cases {
            assert_eq!(o200k().pieces(text), regex_pieces(bpe_openai::o200k_base(), text), "o200k: {text:?}");
            assert_eq!(cl100k().pieces(text), regex_pieces(bpe_openai::cl100k_base(), text), "cl100k: {text:?}");
        }
    }

    #[test]
    fn counts_match_tiktoken_on_mixed_text() {
        let reference_o200k = tiktoken_rs::o200k_base().unwrap();
        let reference_cl100k = tiktoken_rs::cl100k_base().unwrap();
        let mut text = String::new();
        for i in 0..200 {
            text.push_str(&format!(
                "Item {i}: The QUICK brown fox's 'jumps' over {{\"id\": {i}, \"ok\": true}}; café 日本語 🎉\r\n\t  "
            ));
        }
        for t in [text.as_str(), &text[..1000], "  trailing spaces   ", "x\n\n\n"] {
            assert_eq!(o200k().count(t), reference_o200k.encode_ordinary(t).len());
            assert_eq!(cl100k().count(t), reference_cl100k.encode_ordinary(t).len());
        }
    }
}
