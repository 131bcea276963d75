//! `read_file` (a window of lines, under a byte cap, refusing binary files) and `list_files`.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use cap_std::fs::Dir;

use super::confine::{io_error, open_regular};
use crate::tool::ToolError;

/// How much of the start of a file decides whether it is text: NUL bytes or invalid UTF-8 in it
/// mean binary.
pub(super) const SNIFF_BYTES: usize = 8 * 1024;

/// How far past the shown window `read_file` counts lines to tell the total; a bigger file is
/// reported as having "at least" the lines counted.
const COUNT_BYTES: u64 = 64 * 1024 * 1024;

/// What `read_file` was asked for.
#[derive(Clone, Copy, Debug)]
pub(super) struct Window {
    /// The first line to show, 1-based.
    pub offset: u64,
    /// The most lines to show.
    pub limit: u64,
    /// Whether the model asked for a range (an offset or a limit), so the answer always names it.
    pub ranged: bool,
    /// The most bytes of the file the answer holds.
    pub max_bytes: usize,
}

/// Why `bytes` (the start of a file) is not text, if it is not.
pub(super) fn binary_reason(bytes: &[u8]) -> Option<&'static str> {
    if memchr::memchr(0, bytes).is_some() {
        return Some("it contains NUL bytes");
    }
    match std::str::from_utf8(bytes) {
        // A character cut by the end of the sample is not a reason.
        Err(e) if e.error_len().is_some() => Some("it is not valid UTF-8"),
        _ => None,
    }
}

/// The text of `bytes`: UTF-8 (invalid sequences replaced), without a character cut in half at
/// the end.
pub(super) fn text_of(bytes: &[u8]) -> String {
    let end = match std::str::from_utf8(bytes) {
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        _ => bytes.len(),
    };
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Where the reader is in the file.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the window: lines are skipped.
    Skip,
    /// Inside the window: lines are kept.
    Show,
    /// After the window: lines are only counted.
    Count,
}

/// Reads the window of lines `window` asks for from the regular file `path`, with memory bounded
/// by the cap whatever the file's size, and answers with the text (the whole file as it is, or a
/// header naming the lines shown, their total and how to read on, then the lines).
pub(super) fn read_file(dir: &Dir, path: &Path, relative: &str, window: Window) -> Result<String, ToolError> {
    let (file, meta) = open_regular(dir, path, relative)?;
    let size = meta.len();
    let failed = |e: std::io::Error| io_error(relative, &e);
    let mut file = file.into_std();
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    (&mut file).take(SNIFF_BYTES as u64).read_to_end(&mut head).map_err(failed)?;
    if let Some(reason) = binary_reason(&head) {
        return Err(ToolError::new(format!(
            "`{relative}` looks like a binary file ({reason} in its first {} KiB, {size} bytes in all); \
             read_file only reads text",
            SNIFF_BYTES / 1024
        )));
    }
    let mut reader = BufReader::with_capacity(64 * 1024, std::io::Cursor::new(head).chain(file));

    let last_wanted = window.offset.saturating_add(window.limit.max(1) - 1);
    let mut out: Vec<u8> = Vec::with_capacity(window.max_bytes.min(size as usize).saturating_add(1));
    let mut line: u64 = 1; // the line the next byte belongs to
    let mut phase = if window.offset > 1 { Phase::Skip } else { Phase::Show };
    let mut at_line_start = true; // the last byte read was a newline (or nothing was read)
    let mut cut_line: Option<u64> = None; // the byte cap cut this line
    let mut counted: u64 = 0;
    let mut count_capped = false;
    loop {
        let buf = reader.fill_buf().map_err(failed)?;
        if buf.is_empty() {
            break;
        }
        let consumed = match phase {
            Phase::Skip => match memchr::memchr(b'\n', buf) {
                Some(i) => {
                    line += 1;
                    if line >= window.offset {
                        phase = Phase::Show;
                    }
                    i + 1
                }
                None => buf.len(),
            },
            Phase::Show => {
                let (take, ends_line) = match memchr::memchr(b'\n', buf) {
                    Some(i) => (i + 1, true),
                    None => (buf.len(), false),
                };
                let room = window.max_bytes - out.len();
                if take > room {
                    // The cap falls inside this line: keep whole lines only, unless this is the first.
                    if line > window.offset {
                        let keep = out.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                        out.truncate(keep);
                    } else {
                        out.extend_from_slice(&buf[..room]);
                        cut_line = Some(line);
                    }
                    phase = Phase::Count;
                    if cut_line.is_none() {
                        cut_line = Some(0); // whole lines up to the previous one
                    }
                    0
                } else {
                    out.extend_from_slice(&buf[..take]);
                    if ends_line {
                        line += 1;
                        if line > last_wanted {
                            phase = Phase::Count;
                        }
                    }
                    take
                }
            }
            Phase::Count => {
                counted += buf.len() as u64;
                line += memchr::memchr_iter(b'\n', buf).count() as u64;
                if counted > COUNT_BYTES {
                    count_capped = true;
                }
                buf.len()
            }
        };
        if consumed > 0 {
            at_line_start = buf[consumed - 1] == b'\n';
        }
        reader.consume(consumed);
        if count_capped {
            break;
        }
    }
    // Lines in the file: the one the next byte would belong to, unless the file ended with a
    // newline (or is empty).
    let total = if at_line_start { line - 1 } else { line };
    if total == 0 {
        return Ok(format!("[`{relative}` is empty]"));
    }
    if window.offset > total && !count_capped {
        return Err(ToolError::invalid_arguments(format!(
            "offset {} is past the end of `{relative}`, which has {total} line{}",
            window.offset,
            if total == 1 { "" } else { "s" }
        )));
    }
    // The last line shown.
    let shown_last = match cut_line {
        Some(0) => window.offset + out.iter().filter(|&&b| b == b'\n').count() as u64 - 1,
        Some(n) => n,
        None => last_wanted.min(total),
    };
    let whole = window.offset == 1 && cut_line.is_none() && shown_last >= total && !count_capped;
    let text = text_of(&out);
    if whole && !window.ranged {
        return Ok(text);
    }
    let of = if count_capped { format!("at least {total}") } else { total.to_string() };
    let mut header = format!("[lines {}-{shown_last} of {of} in `{relative}`", window.offset);
    if let Some(n) = cut_line.filter(|&n| n > 0) {
        header.push_str(&format!("; line {n} is longer than the output cap and is cut after {} bytes", out.len()));
    } else if cut_line.is_some() {
        header.push_str(&format!("; the output cap of {} bytes was reached", window.max_bytes));
    }
    if count_capped || shown_last < total {
        header.push_str(&format!("; to read on, call read_file with offset={}", shown_last + 1));
    }
    header.push_str("]\n");
    Ok(header + &text)
}

/// The entries of the directory `path`, sorted, directories ending with `/`, at most `max`.
pub(super) fn list_files(dir: &Dir, path: &Path, relative: &str, max: usize) -> Result<String, ToolError> {
    let meta = dir.metadata(path).map_err(|e| io_error(relative, &e))?;
    if !meta.is_dir() {
        return Err(ToolError::new(format!("`{relative}` is not a directory; use read_file to read a file")));
    }
    let entries = dir.read_dir(path).map_err(|e| io_error(relative, &e))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error(relative, &e))?;
        let mut name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().map_err(|e| io_error(relative, &e))?.is_dir() {
            name.push('/');
        }
        names.push(name);
    }
    names.sort();
    let total = names.len();
    if total == 0 {
        return Ok(format!("[`{relative}` is empty]"));
    }
    names.truncate(max);
    let mut out = names.join("\n");
    if total > max {
        out.push_str(&format!("\n[{} more entries not shown]", total - max));
    }
    Ok(out)
}
