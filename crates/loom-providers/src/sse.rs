//! An incremental server-sent-events parser: bytes in (in chunks of any size), events out.
//!
//! It follows the HTML living standard's parsing rules for the fields providers use: `event`,
//! `data` (multi-line data joined with `\n`), comments (lines starting with `:`) ignored, `id` and
//! `retry` ignored, and LF, CRLF or CR line ends. An event is dispatched at a blank line.

/// One server-sent event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, empty when absent.
    pub event: String,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

/// Parses an SSE byte stream incrementally.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    event: String,
    data: String,
    has_data: bool,
    /// The previous chunk ended with `\r`: a `\n` at the start of the next one belongs to it.
    skip_lf: bool,
    max_event_bytes: usize,
}

/// The stream broke the protocol or a limit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// One event grew past the limit.
    #[error("a server-sent event exceeded {0} bytes")]
    TooLarge(usize),
    /// Bytes that are not UTF-8.
    #[error("a server-sent event is not valid UTF-8")]
    NotUtf8,
}

impl SseParser {
    /// A parser with a 16 MiB limit per event.
    pub fn new() -> Self {
        Self::with_limit(16 * 1024 * 1024)
    }

    /// A parser with a limit per event, in bytes.
    pub fn with_limit(max_event_bytes: usize) -> Self {
        SseParser { max_event_bytes, ..Self::default() }
    }

    /// Feeds bytes; every event completed by them is passed to `on_event`.
    pub fn feed(&mut self, mut bytes: &[u8], mut on_event: impl FnMut(SseEvent)) -> Result<(), SseError> {
        if bytes.is_empty() {
            // Nothing to see, and a pending `\r` must still swallow the `\n` that may come next.
            return Ok(());
        }
        if self.skip_lf {
            if let Some(rest) = bytes.strip_prefix(b"\n") {
                bytes = rest;
            }
            self.skip_lf = false;
        }
        if !self.buf.is_empty() {
            // The buffer holds the start of a line (never a line end): look for its end in the new
            // bytes only, so a long line fed in small pieces is scanned once, not once per piece.
            let Some(end) = memchr2(b'\n', b'\r', bytes) else {
                if self.buf.len() + bytes.len() + self.data.len() > self.max_event_bytes {
                    return Err(SseError::TooLarge(self.max_event_bytes));
                }
                self.buf.extend_from_slice(bytes);
                return Ok(());
            };
            self.buf.extend_from_slice(&bytes[..end]);
            let line = std::mem::take(&mut self.buf);
            let result = self.field(&line);
            self.buf = line;
            self.buf.clear();
            result?;
            if self.data.len() > self.max_event_bytes {
                return Err(SseError::TooLarge(self.max_event_bytes));
            }
            let mut next = end + 1;
            if bytes[end] == b'\r' {
                match bytes.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    None => self.skip_lf = true,
                }
            }
            bytes = &bytes[next..];
        }
        // Parse straight from the input, keep only the unfinished tail.
        let consumed = self.parse_lines(bytes, &mut on_event)?;
        let tail = &bytes[consumed..];
        if tail.len() + self.data.len() > self.max_event_bytes {
            return Err(SseError::TooLarge(self.max_event_bytes));
        }
        self.buf.extend_from_slice(tail);
        Ok(())
    }

    /// Ends the stream: a final event without its blank line is still dispatched (providers
    /// sometimes close right after the last `data:` line).
    pub fn finish(&mut self, mut on_event: impl FnMut(SseEvent)) -> Result<(), SseError> {
        if !self.buf.is_empty() {
            let line = std::mem::take(&mut self.buf);
            self.field(&line)?;
        }
        self.dispatch(&mut on_event);
        Ok(())
    }

    /// Parses complete lines of `input`; returns how many bytes were consumed.
    fn parse_lines(&mut self, input: &[u8], on_event: &mut impl FnMut(SseEvent)) -> Result<usize, SseError> {
        let mut start = 0;
        while let Some(offset) = memchr2(b'\n', b'\r', &input[start..]) {
            let end = start + offset;
            let line = &input[start..end];
            let mut next = end + 1;
            if input[end] == b'\r' {
                match input.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    // A `\r` at the very end: its `\n` may come in the next chunk.
                    None => self.skip_lf = true,
                }
            }
            if line.is_empty() {
                self.dispatch(on_event);
            } else {
                self.field(line)?;
                if self.data.len() > self.max_event_bytes {
                    return Err(SseError::TooLarge(self.max_event_bytes));
                }
            }
            start = next;
        }
        Ok(start)
    }

    fn field(&mut self, line: &[u8]) -> Result<(), SseError> {
        if line.first() == Some(&b':') {
            return Ok(());
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"data" => {
                let value = std::str::from_utf8(value).map_err(|_| SseError::NotUtf8)?;
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            b"event" => {
                let value = std::str::from_utf8(value).map_err(|_| SseError::NotUtf8)?;
                self.event.clear();
                self.event.push_str(value);
            }
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, on_event: &mut impl FnMut(SseEvent)) {
        if !self.has_data {
            self.event.clear();
            return;
        }
        let event = SseEvent { event: std::mem::take(&mut self.event), data: std::mem::take(&mut self.data) };
        self.has_data = false;
        on_event(event);
    }
}

/// The position of the first `a` or `b` in `haystack`, eight bytes at a time.
fn memchr2(a: u8, b: u8, haystack: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let (va, vb) = (LO * u64::from(a), LO * u64::from(b));
    let words = haystack.chunks_exact(8);
    let tail = words.remainder();
    for (i, word) in words.enumerate() {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        let w = u64::from_le_bytes(bytes);
        let (x, y) = (w ^ va, w ^ vb);
        // A byte of x (or y) is zero where w matches; the lowest flagged byte is always a true
        // match (false flags only appear above a true one).
        let found = ((x.wrapping_sub(LO) & !x) | (y.wrapping_sub(LO) & !y)) & HI;
        if found != 0 {
            return Some(i * 8 + (found.trailing_zeros() / 8) as usize);
        }
    }
    let base = haystack.len() - tail.len();
    tail.iter().position(|&x| x == a || x == b).map(|p| base + p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, |e| out.push(e)).unwrap();
        }
        p.finish(|e| out.push(e)).unwrap();
        out
    }

    #[test]
    fn parses_events_split_anywhere() {
        let text =
            b"event: message_start\ndata: {\"a\":1}\n\n: ping comment\n\ndata: line1\ndata: line2\n\ndata: [DONE]\n\n";
        let whole = parse_all(&[text]);
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[0], SseEvent { event: "message_start".into(), data: "{\"a\":1}".into() });
        assert_eq!(whole[1].data, "line1\nline2");
        assert_eq!(whole[2].data, "[DONE]");
        for split in 1..text.len() {
            assert_eq!(parse_all(&[&text[..split], &text[split..]]), whole, "split at {split}");
        }
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(parse_all(&bytes), whole);
    }

    #[test]
    fn handles_crlf_and_cr_line_ends() {
        let events = parse_all(&[b"data: a\r", b"\n\r\ndata: b\r\rdata:c\n\n"]);
        assert_eq!(events.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
    }

    #[test]
    fn a_final_event_without_blank_line_is_dispatched() {
        assert_eq!(parse_all(&[b"data: last"])[0].data, "last");
    }

    #[test]
    fn an_empty_chunk_between_cr_and_lf_changes_nothing() {
        // "a\r" + "" + "\n..." is one line end, not two (which would dispatch "a" early).
        let events = parse_all(&[b"data: a\r", b"", b"\ndata: b\n\n"]);
        assert_eq!(events, [SseEvent { event: String::new(), data: "a\nb".into() }]);
    }

    #[test]
    fn a_long_line_in_small_pieces_is_parsed_once_and_limited() {
        let line = format!("data: {}\n\n", "x".repeat(100_000));
        let pieces: Vec<&[u8]> = line.as_bytes().chunks(7).collect();
        assert_eq!(parse_all(&pieces)[0].data.len(), 100_000);
        let mut p = SseParser::with_limit(50_000);
        let result = pieces.iter().try_for_each(|c| p.feed(c, |_| {}));
        assert_eq!(result, Err(SseError::TooLarge(50_000)));
    }

    /// One event of a generated stream: its name, its data lines, a comment before it, and the
    /// line end after each of its lines.
    type GenEvent = (Option<String>, Vec<String>, bool, Vec<u8>);

    fn serialize(events: &[GenEvent]) -> (Vec<u8>, Vec<SseEvent>) {
        const ENDS: [&[u8]; 3] = [b"\n", b"\r\n", b"\r"];
        let mut out = Vec::new();
        let mut expected = Vec::new();
        let mut i = 0usize;
        for (name, data, comment, ends) in events {
            let mut lines: Vec<Vec<u8>> = Vec::new();
            if *comment {
                lines.push(b": keep-alive".to_vec());
                lines.push(b"id: 7".to_vec());
            }
            if let Some(n) = name {
                lines.push(format!("event: {n}").into_bytes());
            }
            lines.extend(data.iter().map(|d| format!("data: {d}").into_bytes()));
            lines.push(Vec::new());
            for line in lines {
                let mut end = ENDS[ends[i % ends.len()] as usize % 3];
                // After a lone CR, an empty line ended by LF would read as one CRLF.
                if line.is_empty() && out.last() == Some(&b'\r') && end == b"\n" {
                    end = b"\r\n";
                }
                out.extend_from_slice(&line);
                out.extend_from_slice(end);
                i += 1;
            }
            expected.push(SseEvent { event: name.clone().unwrap_or_default(), data: data.join("\n") });
        }
        (out, expected)
    }

    #[test]
    fn memchr2_finds_the_first_of_either_byte() {
        let hay: Vec<u8> = (0..64u8).map(|i| b'a' + i % 26).collect();
        assert_eq!(memchr2(b'\n', b'\r', &hay), None);
        for len in 0..hay.len() {
            for at in 0..len {
                for (mark, other) in [(b'\n', b'\r'), (b'\r', b'\n')] {
                    let mut h = hay[..len].to_vec();
                    h[at] = mark;
                    if at + 1 < len {
                        h[at + 1] = other;
                    }
                    // A 0x0a/0x0d-adjacent byte above the match must not be reported first.
                    if at + 2 < len {
                        h[at + 2] = mark ^ 0x80;
                    }
                    assert_eq!(memchr2(b'\n', b'\r', &h), Some(at), "len {len} at {at}");
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn any_split_yields_the_same_events(
            events in proptest::collection::vec(
                (
                    proptest::option::of("[a-z_]{1,12}"),
                    proptest::collection::vec("[^\r\n]{0,24}", 1..4),
                    proptest::bool::ANY,
                    proptest::collection::vec(0u8..3, 1..5),
                ),
                1..8,
            ),
            cuts in proptest::collection::vec(proptest::num::usize::ANY, 0..12),
        ) {
            let (bytes, expected) = serialize(&events);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            // Cut anywhere, even inside a UTF-8 character or a CRLF, with empty pieces allowed.
            let mut pieces: Vec<&[u8]> = Vec::new();
            let mut start = 0;
            for c in cuts {
                pieces.push(&bytes[start..c]);
                start = c;
            }
            pieces.push(&bytes[start..]);
            proptest::prop_assert_eq!(parse_all(&[&bytes]), expected.clone());
            proptest::prop_assert_eq!(parse_all(&pieces), expected);
        }
    }

    #[test]
    fn limits_event_size_and_rejects_bad_utf8() {
        let mut p = SseParser::with_limit(8);
        assert_eq!(p.feed(b"data: 0123456789\n", |_| {}), Err(SseError::TooLarge(8)));
        let mut p = SseParser::with_limit(8);
        assert_eq!(p.feed(b"data: 0123456789", |_| {}), Err(SseError::TooLarge(8)));
        let mut p = SseParser::new();
        assert_eq!(p.feed(b"data: \xff\n\n", |_| {}), Err(SseError::NotUtf8));
    }
}
