//! Cutting text into overlapping chunks, each with the line range it covers.

use super::types::Location;

/// How documents are cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkOptions {
    /// The most characters in a chunk (default 1,200).
    pub max_chars: usize,
    /// About how many characters of the end of one chunk start the next (default 200; whole
    /// lines, so a little less or more).
    pub overlap: usize,
}

impl Default for ChunkOptions {
    fn default() -> Self {
        ChunkOptions { max_chars: 1200, overlap: 200 }
    }
}

/// One piece of a cut text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextChunk {
    /// The first line (from 1).
    pub line_start: u32,
    /// The last line.
    pub line_end: u32,
    /// The text (lines joined with `\n`).
    pub text: String,
}

impl TextChunk {
    /// Its location (with `page`, for paged documents).
    pub fn location(&self, page: Option<u32>) -> Location {
        Location { page, ..Location::lines(self.line_start, self.line_end) }
    }
}

/// Cuts `text` into chunks of whole lines of at most `max_chars` characters (a longer line is cut
/// into pieces of its own), each starting with the last lines of the one before, up to about
/// `overlap` characters. Blank chunks are dropped.
pub fn chunk_text(text: &str, options: ChunkOptions) -> Vec<TextChunk> {
    let max = options.max_chars.max(16);
    let overlap = options.overlap.min(max / 2);
    // (line number, piece) with every piece at most `max` characters.
    let mut pieces: Vec<(u32, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let line = line.trim_end();
        if line.chars().count() <= max {
            pieces.push((n, line.to_string()));
        } else {
            let chars: Vec<char> = line.chars().collect();
            for part in chars.chunks(max) {
                pieces.push((n, part.iter().collect()));
            }
        }
    }
    let mut out = Vec::new();
    let mut start = 0;
    while start < pieces.len() {
        let mut end = start;
        let mut len = 0;
        while end < pieces.len() {
            let add = pieces[end].1.chars().count() + usize::from(end > start);
            if end > start && len + add > max {
                break;
            }
            len += add;
            end += 1;
        }
        let text = pieces[start..end].iter().map(|(_, p)| p.as_str()).collect::<Vec<_>>().join("\n");
        if !text.trim().is_empty() {
            out.push(TextChunk { line_start: pieces[start].0, line_end: pieces[end - 1].0, text });
        }
        if end >= pieces.len() {
            break;
        }
        // Step back over the last pieces of this chunk, up to `overlap` characters, but always
        // move forward.
        let mut next = end;
        let mut carried = 0;
        while next > start + 1 {
            let len = pieces[next - 1].1.chars().count() + 1;
            if carried + len > overlap {
                break;
            }
            carried += len;
            next -= 1;
        }
        start = next;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_one_chunk_with_its_lines() {
        let chunks = chunk_text("alpha\nbeta\ngamma", ChunkOptions::default());
        assert_eq!(chunks, vec![TextChunk { line_start: 1, line_end: 3, text: "alpha\nbeta\ngamma".into() }]);
    }

    #[test]
    fn long_text_is_cut_with_overlap_and_covers_every_line() {
        let text: String = (1..=100).map(|i| format!("line number {i:03} of the text\n")).collect();
        let chunks = chunk_text(&text, ChunkOptions { max_chars: 200, overlap: 60 });
        assert!(chunks.len() > 10);
        for c in &chunks {
            assert!(c.text.chars().count() <= 200, "{}", c.text.len());
        }
        for pair in chunks.windows(2) {
            assert!(pair[1].line_start <= pair[0].line_end, "chunks overlap: {pair:?}");
            assert!(pair[1].line_start > pair[0].line_start, "chunks move forward");
        }
        assert_eq!(chunks[0].line_start, 1);
        assert_eq!(chunks.last().map(|c| c.line_end), Some(100));
    }

    #[test]
    fn a_huge_line_is_split_and_blank_text_gives_nothing() {
        let line = "x".repeat(1000);
        let chunks = chunk_text(&line, ChunkOptions { max_chars: 300, overlap: 0 });
        assert_eq!(chunks.len(), 4);
        assert!(chunks.iter().all(|c| c.line_start == 1 && c.line_end == 1));
        assert!(chunk_text("\n\n  \n", ChunkOptions::default()).is_empty());
    }
}
