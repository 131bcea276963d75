//! Reading a directory source: which files are documents, and their text.
//!
//! Hostile trees are expected. The walk does not follow symbolic links into other directories; a
//! file link is read only when its target is inside the directory. Anything that is not a regular
//! file (a FIFO, a socket, a device) is refused before it is opened, and files are opened without
//! blocking; a file larger than the cap is skipped; bytes that are not UTF-8 are replaced, and a
//! file with NUL bytes (binary) is skipped. Each refusal is reported, never fatal.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The file name extensions a directory source reads by default.
pub const DEFAULT_EXTENSIONS: &[&str] = &[
    "txt", "text", "md", "markdown", "mdx", "rst", "adoc", "org", "csv", "tsv", "json", "yaml", "yml", "toml", "log",
    "html", "htm", "xhtml", "pdf",
];

/// A file of the directory that may be a document.
#[derive(Clone, Debug)]
pub(crate) struct Candidate {
    /// Its id: the path relative to the directory, with `/`.
    pub(crate) id: String,
    /// The path to read.
    pub(crate) path: PathBuf,
    /// Modification time, ms since the epoch.
    pub(crate) mtime_ms: i64,
    /// Size in bytes.
    pub(crate) size: u64,
}

/// A file the walk or the reader refused, and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    /// The path relative to the directory.
    pub path: String,
    /// Why.
    pub reason: String,
}

/// The documents of `root` with one of `extensions`, sorted by id, and the files refused.
pub(crate) fn walk(
    root: &Path,
    extensions: &[String],
    max_bytes: u64,
) -> std::io::Result<(Vec<Candidate>, Vec<Skipped>)> {
    let root = root.canonicalize()?;
    if !root.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotADirectory,
            format!("{} is not a directory", root.display()),
        ));
    }
    let mut found = Vec::new();
    let mut skipped = Vec::new();
    let walker = ignore::WalkBuilder::new(&root).follow_links(false).hidden(true).require_git(false).build();
    for entry in walker {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                skipped.push(Skipped { path: String::new(), reason: format!("unreadable: {e}") });
                continue;
            }
        };
        let path = entry.path();
        let Ok(rel) = path.strip_prefix(&root) else { continue };
        let id = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
        if id.is_empty() {
            continue;
        }
        let Some(kind) = entry.file_type() else { continue };
        if kind.is_dir() {
            continue;
        }
        let ext = path.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default();
        if !extensions.iter().any(|x| x.eq_ignore_ascii_case(&ext)) {
            continue;
        }
        let skip = |reason: &str| Skipped { path: id.clone(), reason: reason.to_string() };
        // A link is followed only to a target inside the directory.
        let real = if kind.is_symlink() {
            match path.canonicalize() {
                Ok(real) if real.starts_with(&root) => real,
                Ok(_) => {
                    skipped.push(skip("a symbolic link out of the directory"));
                    continue;
                }
                Err(_) => {
                    skipped.push(skip("a broken symbolic link"));
                    continue;
                }
            }
        } else {
            path.to_path_buf()
        };
        let meta = match std::fs::metadata(&real) {
            Ok(m) => m,
            Err(e) => {
                skipped.push(skip(&format!("unreadable: {e}")));
                continue;
            }
        };
        if !meta.is_file() {
            skipped.push(skip("not a regular file (a FIFO, socket, device or directory)"));
            continue;
        }
        if meta.len() > max_bytes {
            skipped.push(skip(&format!("{} bytes, over the cap of {max_bytes}", meta.len())));
            continue;
        }
        let mtime_ms = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        found.push(Candidate { id, path: real, mtime_ms, size: meta.len() });
    }
    found.sort_by(|a, b| a.id.cmp(&b.id));
    Ok((found, skipped))
}

/// Reads at most `max_bytes` of a regular file, without blocking on a FIFO swapped in after the
/// walk looked at it.
pub(crate) fn read_capped(path: &Path, max_bytes: u64) -> std::io::Result<Vec<u8>> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW);
    }
    let file = options.open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut bytes = Vec::new();
    file.take(max_bytes.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max_bytes {
        return Err(std::io::Error::other(format!("grew over the cap of {max_bytes} bytes")));
    }
    Ok(bytes)
}

/// The hex SHA-256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A document's text: one entry per page for PDFs, one entry otherwise.
#[derive(Debug, PartialEq)]
pub(crate) enum DocText {
    /// Plain text (or text rendered from HTML).
    Plain(String),
    /// The text of each page.
    Pages(Vec<String>),
}

/// The text of a document named `id` (its extension decides how it is read). `Err` is why it
/// cannot be indexed.
pub(crate) fn extract_text(id: &str, bytes: &[u8]) -> Result<DocText, String> {
    let ext = id.rsplit_once('.').map(|(_, e)| e.to_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "pdf" => pdf_pages(bytes).map(DocText::Pages),
        "html" | "htm" | "xhtml" => html_text(&decode(bytes)?).map(DocText::Plain),
        _ => decode(bytes).map(DocText::Plain),
    }
}

/// Text bytes as a string: binary (a NUL byte) is refused, bytes that are not UTF-8 are replaced.
fn decode(bytes: &[u8]) -> Result<String, String> {
    if memchr::memchr(0, bytes).is_some() {
        return Err("binary (NUL bytes)".into());
    }
    let text = String::from_utf8_lossy(bytes);
    Ok(text.strip_prefix('\u{feff}').unwrap_or(&text).to_string())
}

#[cfg(feature = "web")]
fn html_text(html: &str) -> Result<String, String> {
    Ok(crate::capability::web::html_to_text(html))
}

#[cfg(not(feature = "web"))]
fn html_text(_html: &str) -> Result<String, String> {
    Err("HTML needs loom-agent's `web` feature".into())
}

#[cfg(feature = "pdf")]
fn pdf_pages(bytes: &[u8]) -> Result<Vec<String>, String> {
    // The PDF reader can panic on malformed files: a panic is this file's failure, not the
    // indexer's.
    let bytes = bytes.to_vec();
    match std::panic::catch_unwind(move || pdf_extract::extract_text_from_mem_by_pages(&bytes)) {
        Ok(Ok(pages)) => Ok(pages),
        Ok(Err(e)) => Err(format!("unreadable PDF: {e}")),
        Err(_) => Err("unreadable PDF (the reader failed)".into()),
    }
}

#[cfg(not(feature = "pdf"))]
fn pdf_pages(_bytes: &[u8]) -> Result<Vec<String>, String> {
    Err("PDF needs loom-agent's `pdf` feature".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_decoded_leniently_and_binary_refused() {
        assert_eq!(extract_text("a.txt", b"caf\xe9 ok"), Ok(DocText::Plain("caf\u{fffd} ok".into())));
        assert!(extract_text("a.md", b"ab\0cd").is_err());
        assert_eq!(extract_text("a.md", "\u{feff}# T".as_bytes()), Ok(DocText::Plain("# T".into())));
    }

    #[cfg(feature = "web")]
    #[test]
    fn html_becomes_text() {
        let Ok(DocText::Plain(text)) =
            extract_text("p.html", b"<html><head><script>bad()</script></head><body><h1>Title</h1><p>Body text</p>")
        else {
            panic!("html not read")
        };
        assert!(text.contains("Title") && text.contains("Body text") && !text.contains("bad()"), "{text}");
    }
}
