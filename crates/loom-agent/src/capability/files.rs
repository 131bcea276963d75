//! Read-only file tools confined to one directory: `read_file` and `list_files`.

use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};

use super::Capability;
use crate::tool::{FunctionTool, Tool, ToolError, ToolOutput};

/// Read-only access to the files under one root directory.
///
/// Paths are relative to the root. Absolute paths, `..` that climbs out, and symbolic links that
/// resolve outside the root are refused; a path outside the root gets the same answer as a path
/// that does not exist, so the tools reveal nothing about what lies outside. Only regular files
/// are read (a FIFO, a socket or a device is refused, never opened for a blocking read), and a
/// read takes at most the cap from the file (256 KiB by default), however large the file is.
///
/// Both tools are read-only and idempotent: a resumed run whose process stopped during one of
/// their calls runs the call again.
///
/// ```
/// use loom_agent::capability::Files;
///
/// let files = Files::read_only(".").max_read_bytes(64 * 1024);
/// # let _ = files;
/// ```
#[derive(Clone, Debug)]
pub struct Files {
    root: PathBuf,
    max_read_bytes: usize,
    max_entries: usize,
}

impl Files {
    /// Read-only access under `root`.
    pub fn read_only(root: impl Into<PathBuf>) -> Self {
        Files { root: root.into(), max_read_bytes: 256 * 1024, max_entries: 1000 }
    }

    /// The most bytes one read returns (and reads from the file).
    pub fn max_read_bytes(mut self, n: usize) -> Self {
        self.max_read_bytes = n;
        self
    }

    /// The most entries one listing returns.
    pub fn max_entries(mut self, n: usize) -> Self {
        self.max_entries = n;
        self
    }
}

/// The one answer for a path that does not exist under the root and for a path outside it: the
/// tools must not tell the model what exists outside the root.
fn not_found(relative: &str) -> ToolError {
    ToolError::new(format!("`{relative}` does not exist under the allowed directory"))
}

/// Resolves `relative` under `root`, refusing anything that ends up outside it. A path that cannot
/// be resolved and a path outside the root get the same error.
pub(crate) fn confine(root: &Path, relative: &str) -> Result<PathBuf, ToolError> {
    let rel = Path::new(relative.trim());
    if rel.is_absolute() || rel.components().any(|c| matches!(c, Component::Prefix(_) | Component::RootDir)) {
        return Err(ToolError::new(format!("`{relative}` is absolute; give a path relative to the root")));
    }
    let root = root.canonicalize().map_err(|e| ToolError::new(format!("the root directory is not usable: {e}")))?;
    let resolved = root.join(rel).canonicalize().map_err(|_| not_found(relative))?;
    if !resolved.starts_with(&root) {
        return Err(not_found(relative));
    }
    Ok(resolved)
}

fn path_arg(args: &Value) -> &str {
    args.get("path").and_then(Value::as_str).unwrap_or(".")
}

/// Opens `path` for reading without ever blocking on it: on unix with `O_NONBLOCK`, so a FIFO
/// swapped in after the check cannot stall the open.
fn open_nonblocking(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    options.open(path)
}

/// What one read found: at most the cap of the file's bytes, and its size.
struct Capped {
    bytes: Vec<u8>,
    size: u64,
    truncated: bool,
}

/// Reads at most `max` bytes of the regular file at `path` (already confined). Anything but a
/// regular file is refused before it is opened, and again after (the path may have been swapped
/// between the check and the open).
fn read_capped(path: &Path, relative: &str, max: usize) -> Result<Capped, ToolError> {
    let not_regular = || ToolError::new(format!("`{relative}` is not a regular file; only regular files can be read"));
    let meta = std::fs::metadata(path).map_err(|_| not_found(relative))?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    let file = open_nonblocking(path).map_err(|e| ToolError::new(format!("`{relative}`: {e}")))?;
    let meta = file.metadata().map_err(|e| ToolError::new(format!("`{relative}`: {e}")))?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    // One byte past the cap tells a file of exactly `max` bytes from a longer one (the size in the
    // metadata may change while we read).
    let mut bytes = Vec::with_capacity(max.min(meta.len() as usize).saturating_add(1));
    file.take(max as u64 + 1).read_to_end(&mut bytes).map_err(|e| ToolError::new(format!("`{relative}`: {e}")))?;
    let truncated = bytes.len() > max;
    bytes.truncate(max);
    Ok(Capped { size: meta.len().max(bytes.len() as u64), bytes, truncated })
}

/// The text of `bytes`: UTF-8 (invalid sequences replaced), without a character cut in half at
/// the end of a truncated read.
fn text_of(bytes: &[u8], truncated: bool) -> String {
    let end = match std::str::from_utf8(bytes) {
        Err(e) if truncated && e.error_len().is_none() => e.valid_up_to(),
        _ => bytes.len(),
    };
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

impl Capability for Files {
    fn name(&self) -> &str {
        "files"
    }

    fn tools(&self) -> Vec<Arc<dyn Tool>> {
        let (root, max) = (self.root.clone(), self.max_read_bytes);
        let read = FunctionTool::new(
            "read_file",
            "Read a text file. The path is relative to the project root.",
            json!({"type": "object", "properties": {"path": {"type": "string", "description": "File path relative to the root"}},
                   "required": ["path"], "additionalProperties": false}),
            move |_ctx, args| {
                let root = root.clone();
                async move {
                    let relative = path_arg(&args).to_string();
                    let read = tokio::task::spawn_blocking(move || {
                        let path = confine(&root, &relative)?;
                        read_capped(&path, &relative, max)
                    })
                    .await
                    .map_err(|e| ToolError::new(e.to_string()))??;
                    let mut text = text_of(&read.bytes, read.truncated);
                    if read.truncated {
                        text.push_str(&format!("\n[file truncated: {} of {} bytes shown]", read.bytes.len(), read.size));
                    }
                    Ok(ToolOutput::text(text))
                }
            },
        )
        .read_only()
        .idempotent()
        .concurrency_safe();
        let (root, max_entries) = (self.root.clone(), self.max_entries);
        let list = FunctionTool::new(
            "list_files",
            "List the entries of a directory (relative to the project root); directories end with /.",
            json!({"type": "object", "properties": {"path": {"type": "string", "description": "Directory relative to the root; . for the root"}},
                   "additionalProperties": false}),
            move |_ctx, args| {
                let root = root.clone();
                async move {
                    let relative = path_arg(&args).to_string();
                    let mut names = tokio::task::spawn_blocking(move || -> Result<Vec<String>, ToolError> {
                        let dir = confine(&root, &relative)?;
                        // Only directories are listed; nothing else is opened.
                        let meta = std::fs::metadata(&dir).map_err(|_| not_found(&relative))?;
                        if !meta.is_dir() {
                            return Err(ToolError::new(format!("`{relative}` is not a directory")));
                        }
                        let mut names = Vec::new();
                        for entry in std::fs::read_dir(&dir)? {
                            let entry = entry?;
                            let mut name = entry.file_name().to_string_lossy().into_owned();
                            if entry.file_type()?.is_dir() {
                                name.push('/');
                            }
                            names.push(name);
                        }
                        Ok(names)
                    })
                    .await
                    .map_err(|e| ToolError::new(e.to_string()))??;
                    names.sort();
                    let total = names.len();
                    names.truncate(max_entries);
                    let mut out = names.join("\n");
                    if total > max_entries {
                        out.push_str(&format!("\n[{} more entries not shown]", total - max_entries));
                    }
                    Ok(ToolOutput::text(out))
                }
            },
        )
        .read_only()
        .idempotent()
        .concurrency_safe();
        vec![Arc::new(read), Arc::new(list)]
    }

    fn instructions(&self) -> Option<String> {
        Some(
            "You can read files under the project root with read_file and list_files (paths relative to the root)."
                .into(),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::tool::ToolContext;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("loom-files-{name}-{}", crate::new_id("t")));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    async fn read(files: &Files, path: &str) -> Result<ToolOutput, ToolError> {
        let tools = files.tools();
        let call = tools[0].call(ToolContext::detached("run_1", "sess_1"), json!({"path": path}));
        // Every read answers quickly: a read that blocks fails the test instead of hanging it.
        tokio::time::timeout(Duration::from_secs(10), call).await.expect("read_file did not answer within 10 s")
    }

    #[tokio::test]
    async fn reads_inside_the_root_and_refuses_escapes() {
        let dir = scratch("root");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/a.txt"), "hello").unwrap();
        let outside = std::env::temp_dir().join(format!("loom-outside-{}", crate::new_id("t")));
        std::fs::write(&outside, "secret").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(&outside, dir.join("link")).unwrap();
        let files = Files::read_only(&dir);
        let tools = files.tools();
        let list = &tools[1];
        let ctx = ToolContext::detached("run_1", "sess_1");
        let ok = read(&files, "sub/a.txt").await.unwrap();
        assert_eq!(ok.content, "hello");
        for bad in ["../x", "/etc/passwd", "sub/../../etc/passwd"] {
            let err = read(&files, bad).await.unwrap_err();
            assert!(!err.message().is_empty(), "{bad}");
        }
        #[cfg(unix)]
        {
            let err = read(&files, "link").await.unwrap_err();
            assert_eq!(err.message(), "`link` does not exist under the allowed directory");
        }
        let listing = list.call(ctx.clone(), json!({})).await.unwrap();
        assert!(listing.content.contains("sub/"), "{}", listing.content);
        let err = list.call(ctx.clone(), json!({"path": "sub/a.txt"})).await.unwrap_err();
        assert!(err.message().contains("not a directory"), "{}", err.message());
        std::fs::remove_dir_all(&dir).ok();
        std::fs::remove_file(&outside).ok();
    }

    #[tokio::test]
    async fn a_missing_path_and_a_path_outside_the_root_get_the_same_answer() {
        let parent = scratch("oracle");
        let root = parent.join("root");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(parent.join("exists.txt"), "outside").unwrap();
        let files = Files::read_only(&root);
        let tools = files.tools();
        let answer = |path: &'static str| {
            let tools = tools.clone();
            let files = files.clone();
            async move {
                let read = read(&files, path).await.unwrap_err().message().replace(path, "P");
                let list = tools[1]
                    .call(ToolContext::detached("run_1", "sess_1"), json!({"path": path}))
                    .await
                    .unwrap_err()
                    .message()
                    .replace(path, "P");
                (read, list)
            }
        };
        // Outside and existing, outside and missing, inside and missing: one answer.
        let outside = answer("../exists.txt").await;
        assert_eq!(outside, answer("../missing.txt").await);
        assert_eq!(outside, answer("missing.txt").await);
        assert_eq!(outside.0, "`P` does not exist under the allowed directory");
        assert_eq!(outside.0, outside.1);
        std::fs::remove_dir_all(&parent).ok();
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_fifo_or_a_device_is_refused_without_blocking() {
        let dir = scratch("fifo");
        let status = std::process::Command::new("mkfifo").arg(dir.join("pipe")).status().unwrap();
        assert!(status.success());
        let started = Instant::now();
        let err = read(&Files::read_only(&dir), "pipe").await.unwrap_err();
        assert!(err.message().contains("not a regular file"), "{}", err.message());
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        // Devices: /dev/zero never ends, /dev/null is empty; neither is read.
        let dev = Files::read_only("/dev");
        for device in ["zero", "null"] {
            let err = read(&dev, device).await.unwrap_err();
            assert!(err.message().contains("not a regular file"), "{device}: {}", err.message());
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_swapped_in_after_the_check_does_not_block_the_open() {
        let dir = scratch("swap");
        let pipe = dir.join("pipe");
        assert!(std::process::Command::new("mkfifo").arg(&pipe).status().unwrap().success());
        // No writer: a plain open for reading would wait for one forever.
        let file = open_nonblocking(&pipe).unwrap();
        assert!(!file.metadata().unwrap().is_file());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn the_cap_never_cuts_a_character_in_half() {
        let bytes = "aé".as_bytes();
        assert_eq!(text_of(&bytes[..2], true), "a");
        assert_eq!(text_of(bytes, false), "aé");
    }

    #[test]
    fn the_file_tools_are_safe_to_run_again() {
        for tool in Files::read_only(".").tools() {
            let flags = tool.flags();
            assert!(flags.read_only && flags.idempotent, "{}: {flags:?}", tool.name());
        }
    }
}
