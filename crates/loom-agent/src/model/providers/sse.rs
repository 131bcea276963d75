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
        if self.skip_lf {
            if let Some(rest) = bytes.strip_prefix(b"\n") {
                bytes = rest;
            }
            self.skip_lf = false;
        }
        if self.buf.is_empty() {
            // Fast path: parse straight from the input, keep only the unfinished tail.
            let consumed = self.parse_lines(bytes, &mut on_event)?;
            self.buf.extend_from_slice(&bytes[consumed..]);
        } else {
            self.buf.extend_from_slice(bytes);
            let buf = std::mem::take(&mut self.buf);
            let consumed = self.parse_lines(&buf, &mut on_event)?;
            self.buf = buf;
            self.buf.drain(..consumed);
        }
        if self.buf.len() + self.data.len() > self.max_event_bytes {
            return Err(SseError::TooLarge(self.max_event_bytes));
        }
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

/// The position of the first `a` or `b` in `haystack`.
fn memchr2(a: u8, b: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&x| x == a || x == b)
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
    fn limits_event_size_and_rejects_bad_utf8() {
        let mut p = SseParser::with_limit(8);
        assert_eq!(p.feed(b"data: 0123456789\n", |_| {}), Err(SseError::TooLarge(8)));
        let mut p = SseParser::with_limit(8);
        assert_eq!(p.feed(b"data: 0123456789", |_| {}), Err(SseError::TooLarge(8)));
        let mut p = SseParser::new();
        assert_eq!(p.feed(b"data: \xff\n\n", |_| {}), Err(SseError::NotUtf8));
    }
}
