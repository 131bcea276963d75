//! The output of one command, capped: the first and the last bytes are kept, the middle is cut
//! with a marker that says how much was cut.

use std::collections::VecDeque;

/// Collects a command's output up to a cap, keeping its head and its tail.
#[derive(Debug)]
pub(super) struct Capture {
    head_cap: usize,
    tail_cap: usize,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: u64,
}

impl Capture {
    /// At most `cap` bytes are kept: the first half and the last half of the output.
    pub(super) fn new(cap: usize) -> Self {
        let head_cap = cap / 2;
        Capture { head_cap, tail_cap: cap - head_cap, head: Vec::new(), tail: VecDeque::new(), total: 0 }
    }

    /// Takes the next bytes of output.
    pub(super) fn push(&mut self, mut bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let room = self.head_cap - self.head.len();
        if room > 0 {
            let n = room.min(bytes.len());
            self.head.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
        }
        if bytes.len() >= self.tail_cap {
            self.tail.clear();
            self.tail.extend(&bytes[bytes.len() - self.tail_cap..]);
            return;
        }
        let overflow = (self.tail.len() + bytes.len()).saturating_sub(self.tail_cap);
        self.tail.drain(..overflow);
        self.tail.extend(bytes);
    }

    /// The kept output as text (invalid UTF-8 replaced), with the marker where bytes were cut.
    pub(super) fn finish(self) -> String {
        let kept = self.head.len() + self.tail.len();
        let tail_bytes: Vec<u8> = self.tail.iter().copied().collect();
        if self.total == kept as u64 {
            let mut all = self.head;
            all.extend_from_slice(&tail_bytes);
            return String::from_utf8_lossy(&all).into_owned();
        }
        let cut = self.total - kept as u64;
        // No character cut in half on either side of the marker.
        let head_end = match std::str::from_utf8(&self.head) {
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            _ => self.head.len(),
        };
        let tail_start = tail_bytes.iter().take(3).take_while(|b| (**b & 0b1100_0000) == 0b1000_0000).count();
        format!(
            "{}\n[… {cut} bytes of output cut: the first {} and the last {} bytes of {} are shown …]\n{}",
            String::from_utf8_lossy(&self.head[..head_end]),
            self.head.len(),
            self.tail.len(),
            self.total,
            String::from_utf8_lossy(&tail_bytes[tail_start..]),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn captured(cap: usize, chunks: &[&[u8]]) -> String {
        let mut capture = Capture::new(cap);
        for chunk in chunks {
            capture.push(chunk);
        }
        capture.finish()
    }

    #[test]
    fn output_under_the_cap_is_kept_whole() {
        assert_eq!(captured(10, &[b"abc", b"defg"]), "abcdefg");
        assert_eq!(captured(10, &[b"0123456789"]), "0123456789");
        assert_eq!(captured(10, &[]), "");
    }

    #[test]
    fn output_over_the_cap_keeps_head_and_tail() {
        let out = captured(10, &[b"01234", b"56789", b"abcdefghij"]);
        assert!(out.starts_with("01234\n[… 10 bytes of output cut"), "{out}");
        assert!(out.ends_with("…]\nfghij"), "{out}");
        // Chunk boundaries do not matter.
        let whole = captured(10, &[b"0123456789abcdefghij"]);
        assert_eq!(out, whole);
        let bytes: Vec<&[u8]> = b"0123456789abcdefghij".chunks(1).collect();
        assert_eq!(out, captured(10, &bytes));
    }

    #[test]
    fn no_character_is_cut_in_half() {
        let text = "ééééééééééé"; // 2 bytes each
        let out = captured(5, &[text.as_bytes()]);
        assert!(!out.contains('\u{FFFD}'), "{out}");
        assert!(out.starts_with("é\n"), "{out}");
        assert!(out.ends_with("\né"), "{out}");
    }
}
