//! A hand-written scanner for `chat.completion.chunk` events: it reads the few fields the decoder
//! uses into the same borrowed structs as serde, and skips everything else without building it.
//!
//! It accepts only what serde accepts and decodes to the same values; whenever it is not sure
//! (malformed JSON, an unexpected type, several choices, duplicate fields, escaped keys, an `error`,
//! deep nesting), it returns `None` and the event goes through serde, which also reports errors.

use std::borrow::Cow;

use super::chunk::{CallDelta, Choice, Delta, Details, FunctionDelta, Usage};

/// Nesting deeper than this in a skipped value is left to serde (whose own limit is 128).
const MAX_DEPTH: u32 = 64;

/// The first choice and the usage of one event, or `None` to decode it with serde.
pub(super) fn chunk(data: &str) -> Option<(Option<Choice<'_>>, Option<Usage>, Spans)> {
    let mut c = Cursor { src: data, s: data.as_bytes(), i: 0, spans: Spans::default() };
    let (mut choice, mut usage) = (None, None);
    let mut seen = [false; 3];
    c.ws();
    c.object(|c, key| {
        match key {
            "choices" => {
                once(&mut seen[0])?;
                choice = c.choices()?;
            }
            "usage" => {
                once(&mut seen[1])?;
                usage = if c.null() { None } else { Some(c.usage()?) };
            }
            // A non-null error is rare: serde decodes it.
            "error" => {
                once(&mut seen[2])?;
                if !c.null() {
                    return None;
                }
            }
            _ => {
                let at = c.i;
                c.skip(0)?;
                if c.s.get(at) == Some(&b'"') {
                    c.spans.padding = Some((at, c.i));
                }
            }
        }
        Some(())
    })?;
    c.ws();
    (c.i == c.s.len()).then_some((choice, usage, c.spans))
}

/// Marks a field as seen; `None` if it was already (serde rejects duplicate fields).
fn once(seen: &mut bool) -> Option<()> {
    if *seen {
        return None;
    }
    *seen = true;
    Some(())
}

/// Bytes that end a run of plain string content.
fn special(b: &u8) -> bool {
    *b == b'"' || *b == b'\\' || *b < 0x20
}

/// The offset of the first `"`, `\` or control byte in `s`, 8 bytes at a time.
pub(super) fn find_special(s: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let mut chunks = s.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let w = u64::from_le_bytes(chunk.try_into().ok()?);
        let quote = w ^ (LO * u64::from(b'"'));
        let backslash = w ^ (LO * u64::from(b'\\'));
        // Each term flags its lowest matching byte exactly (a borrow only spreads upwards).
        let hits = ((quote.wrapping_sub(LO) & !quote)
            | (backslash.wrapping_sub(LO) & !backslash)
            | (w.wrapping_sub(LO * 0x20) & !w))
            & HI;
        if hits != 0 {
            return Some(at + (hits.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    chunks.remainder().iter().position(special).map(|p| at + p)
}

struct Cursor<'a> {
    src: &'a str,
    s: &'a [u8],
    i: usize,
    /// Where the last `delta.content` and `function.arguments` strings were (quotes included).
    spans: Spans,
}

/// Where the text and the argument strings of an event sit, quotes included.
#[derive(Default)]
pub(super) struct Spans {
    pub(super) content: Option<(usize, usize)>,
    pub(super) arguments: Option<(usize, usize)>,
    /// The last string value of a top-level field the decoder does not read (OpenAI's
    /// `obfuscation` padding, which changes with every event).
    pub(super) padding: Option<(usize, usize)>,
}

/// The string at `prefix.len()` in `data` when `data` is `prefix`, one JSON string, then
/// `suffix`; or, with `padding` (a string's span in `suffix`), then `suffix` with any other
/// JSON string in that place. Replacing a string value with another leaves the rest of the
/// document as it was.
pub(super) fn slot<'a>(
    data: &'a str,
    prefix: &str,
    suffix: &str,
    padding: Option<(usize, usize)>,
) -> Option<Cow<'a, str>> {
    if prefix.is_empty() || !data.starts_with(prefix) {
        return None;
    }
    let mut c = Cursor { src: data, s: data.as_bytes(), i: prefix.len(), spans: Spans::default() };
    let text = c.string()?;
    let rest = data.get(c.i..)?;
    if rest == suffix {
        return Some(text);
    }
    let (start, end) = padding?;
    if rest.as_bytes().get(..start) != suffix.as_bytes().get(..start) {
        return None;
    }
    c.i += start;
    c.skip_string()?;
    (data.get(c.i..)? == suffix.get(end..)?).then_some(text)
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    /// JSON whitespace, as serde skips it.
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        if hit {
            self.i += 1;
        }
        hit
    }

    fn literal(&mut self, lit: &[u8]) -> bool {
        let hit = self.s.get(self.i..self.i + lit.len()) == Some(lit);
        if hit {
            self.i += lit.len();
        }
        hit
    }

    fn null(&mut self) -> bool {
        self.literal(b"null")
    }

    /// An object; `field` reads each value (the cursor is on its first byte).
    fn object(&mut self, mut field: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        if !self.eat(b'{') {
            return None;
        }
        self.ws();
        if self.eat(b'}') {
            return Some(());
        }
        loop {
            let key = self.key()?;
            self.ws();
            if !self.eat(b':') {
                return None;
            }
            self.ws();
            field(self, key)?;
            self.ws();
            match self.peek()? {
                b',' => {
                    self.i += 1;
                    self.ws();
                }
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// An array; `item` reads each element (the cursor is on its first byte).
    fn array(&mut self, mut item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        if !self.eat(b'[') {
            return None;
        }
        self.ws();
        if self.eat(b']') {
            return Some(());
        }
        loop {
            item(self)?;
            self.ws();
            match self.peek()? {
                b',' => {
                    self.i += 1;
                    self.ws();
                }
                b']' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A key without escapes (an escaped key is left to serde).
    fn key(&mut self) -> Option<&'a str> {
        if !self.eat(b'"') {
            return None;
        }
        let start = self.i;
        let end = start + find_special(self.s.get(start..)?)?;
        if self.s.get(end) != Some(&b'"') {
            return None;
        }
        self.i = end + 1;
        self.src.get(start..end)
    }

    /// A string, borrowed unless it has escapes.
    fn string(&mut self) -> Option<Cow<'a, str>> {
        if !self.eat(b'"') {
            return None;
        }
        let start = self.i;
        self.i += find_special(self.s.get(start..)?)?;
        if self.eat(b'"') {
            return self.src.get(start..self.i - 1).map(Cow::Borrowed);
        }
        let mut out = String::with_capacity(self.i - start + 16);
        let mut run = start;
        loop {
            match self.peek()? {
                b'"' => {
                    out.push_str(self.src.get(run..self.i)?);
                    self.i += 1;
                    return Some(Cow::Owned(out));
                }
                b'\\' => {
                    out.push_str(self.src.get(run..self.i)?);
                    self.i += 1;
                    out.push(self.escape()?);
                    run = self.i;
                }
                _ => return None,
            }
            self.i += find_special(self.s.get(self.i..)?)?;
        }
    }

    /// Skips a string, checking it as serde does.
    fn skip_string(&mut self) -> Option<()> {
        if !self.eat(b'"') {
            return None;
        }
        loop {
            self.i += find_special(self.s.get(self.i..)?)?;
            match self.peek()? {
                b'"' => {
                    self.i += 1;
                    return Some(());
                }
                b'\\' => {
                    self.i += 1;
                    self.escape()?;
                }
                _ => return None,
            }
        }
    }

    /// One escape, after its backslash. Lone surrogates are left to serde.
    fn escape(&mut self) -> Option<char> {
        let esc = self.peek()?;
        self.i += 1;
        Some(match esc {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hi = self.hex4()?;
                if (0xD800..0xDC00).contains(&hi) {
                    if !self.literal(b"\\u") {
                        return None;
                    }
                    let lo = self.hex4()?;
                    if !(0xDC00..0xE000).contains(&lo) {
                        return None;
                    }
                    char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))?
                } else {
                    char::from_u32(hi)?
                }
            }
            _ => return None,
        })
    }

    fn hex4(&mut self) -> Option<u32> {
        let mut n = 0;
        for &b in self.s.get(self.i..self.i + 4)? {
            n = n * 16 + char::from(b).to_digit(16)?;
        }
        self.i += 4;
        Some(n)
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
    }

    /// A non-negative integer that fits a `u64`, as serde reads one into a `u64`.
    fn u64(&mut self) -> Option<u64> {
        let start = self.i;
        let mut n: u64 = 0;
        while let Some(b @ b'0'..=b'9') = self.peek() {
            n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
            self.i += 1;
        }
        let len = self.i - start;
        if len == 0 || (len > 1 && self.s.get(start) == Some(&b'0')) || matches!(self.peek(), Some(b'.' | b'e' | b'E'))
        {
            return None;
        }
        Some(n)
    }

    fn skip_number(&mut self) -> Option<()> {
        self.eat(b'-');
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.eat(b'.') {
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return None;
            }
            self.digits();
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return None;
            }
            self.digits();
        }
        Some(())
    }

    /// Skips any value, checking it as serde does.
    fn skip(&mut self, depth: u32) -> Option<()> {
        match self.peek()? {
            b'"' => self.skip_string(),
            b'{' if depth < MAX_DEPTH => self.object(|c, _| c.skip(depth + 1)),
            b'[' if depth < MAX_DEPTH => self.array(|c| c.skip(depth + 1)),
            b't' => self.literal(b"true").then_some(()),
            b'f' => self.literal(b"false").then_some(()),
            b'n' => self.null().then_some(()),
            b'-' | b'0'..=b'9' => self.skip_number(),
            _ => None,
        }
    }

    fn opt_string(&mut self) -> Option<Option<Cow<'a, str>>> {
        if self.null() { Some(None) } else { self.string().map(Some) }
    }

    fn opt_u64(&mut self) -> Option<Option<u64>> {
        if self.null() { Some(None) } else { self.u64().map(Some) }
    }

    /// `choices`: none or one (several are left to serde).
    fn choices(&mut self) -> Option<Option<Choice<'a>>> {
        let mut first = None;
        self.array(|c| {
            if first.is_some() {
                return None;
            }
            first = Some(c.choice()?);
            Some(())
        })?;
        Some(first)
    }

    fn choice(&mut self) -> Option<Choice<'a>> {
        let mut out = Choice { delta: None, finish_reason: None };
        let mut seen = [false; 2];
        self.object(|c, key| {
            match key {
                "delta" => {
                    once(&mut seen[0])?;
                    out.delta = if c.null() { None } else { Some(c.delta()?) };
                }
                "finish_reason" => {
                    once(&mut seen[1])?;
                    out.finish_reason = c.opt_string()?;
                }
                _ => c.skip(0)?,
            }
            Some(())
        })?;
        Some(out)
    }

    fn delta(&mut self) -> Option<Delta<'a>> {
        let mut out =
            Delta { content: None, reasoning_content: None, reasoning: None, refusal: None, tool_calls: None };
        let mut seen = [false; 5];
        self.object(|c, key| {
            match key {
                "content" => {
                    once(&mut seen[0])?;
                    let at = c.i;
                    out.content = c.opt_string()?;
                    c.spans.content = out.content.as_ref().map(|_| (at, c.i));
                }
                "reasoning_content" => {
                    once(&mut seen[1])?;
                    out.reasoning_content = c.opt_string()?;
                }
                "reasoning" => {
                    once(&mut seen[2])?;
                    out.reasoning = c.opt_string()?;
                }
                "refusal" => {
                    once(&mut seen[3])?;
                    out.refusal = c.opt_string()?;
                }
                "tool_calls" => {
                    once(&mut seen[4])?;
                    out.tool_calls = if c.null() { None } else { Some(c.calls()?) };
                }
                _ => c.skip(0)?,
            }
            Some(())
        })?;
        Some(out)
    }

    fn calls(&mut self) -> Option<Vec<CallDelta<'a>>> {
        let mut calls = Vec::new();
        self.array(|c| {
            calls.push(c.call()?);
            Some(())
        })?;
        Some(calls)
    }

    fn call(&mut self) -> Option<CallDelta<'a>> {
        let mut out = CallDelta { index: None, id: None, function: None };
        let mut seen = [false; 3];
        self.object(|c, key| {
            match key {
                "index" => {
                    once(&mut seen[0])?;
                    out.index = c.opt_u64()?;
                }
                "id" => {
                    once(&mut seen[1])?;
                    out.id = c.opt_string()?;
                }
                "function" => {
                    once(&mut seen[2])?;
                    out.function = if c.null() { None } else { Some(c.function()?) };
                }
                _ => c.skip(0)?,
            }
            Some(())
        })?;
        Some(out)
    }

    fn function(&mut self) -> Option<FunctionDelta<'a>> {
        let mut out = FunctionDelta { name: None, arguments: None };
        let mut seen = [false; 2];
        self.object(|c, key| {
            match key {
                "name" => {
                    once(&mut seen[0])?;
                    out.name = c.opt_string()?;
                }
                "arguments" => {
                    once(&mut seen[1])?;
                    let at = c.i;
                    out.arguments = c.opt_string()?;
                    c.spans.arguments = out.arguments.as_ref().map(|_| (at, c.i));
                }
                _ => c.skip(0)?,
            }
            Some(())
        })?;
        Some(out)
    }

    fn usage(&mut self) -> Option<Usage> {
        let mut out = Usage {
            prompt_tokens: 0,
            completion_tokens: 0,
            prompt_tokens_details: None,
            prompt_cache_hit_tokens: None,
        };
        let mut seen = [false; 4];
        self.object(|c, key| {
            match key {
                "prompt_tokens" => {
                    once(&mut seen[0])?;
                    out.prompt_tokens = c.u64()?;
                }
                "completion_tokens" => {
                    once(&mut seen[1])?;
                    out.completion_tokens = c.u64()?;
                }
                "prompt_tokens_details" => {
                    once(&mut seen[2])?;
                    out.prompt_tokens_details = if c.null() { None } else { Some(c.details()?) };
                }
                "prompt_cache_hit_tokens" => {
                    once(&mut seen[3])?;
                    out.prompt_cache_hit_tokens = c.opt_u64()?;
                }
                _ => c.skip(0)?,
            }
            Some(())
        })?;
        Some(out)
    }

    fn details(&mut self) -> Option<Details> {
        let mut out = Details { cached_tokens: None };
        let mut seen = false;
        self.object(|c, key| {
            if key == "cached_tokens" {
                once(&mut seen)?;
                out.cached_tokens = c.opt_u64()?;
            } else {
                c.skip(0)?;
            }
            Some(())
        })?;
        Some(out)
    }
}
