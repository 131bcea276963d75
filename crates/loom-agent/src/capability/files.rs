//! Read-only file tools confined to one directory: `read_file` and `list_files`.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};

use super::Capability;
use crate::tool::{FunctionTool, Tool, ToolError, ToolOutput};

/// Read-only access to the files under one root directory.
///
/// Paths are relative to the root. Absolute paths, `..` that climbs out, and symbolic links that
/// resolve outside the root are refused. Reads are capped (256 KiB by default).
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

    /// The most bytes one read returns.
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

/// Resolves `relative` under `root`, refusing anything that ends up outside it.
pub(crate) fn confine(root: &Path, relative: &str) -> Result<PathBuf, ToolError> {
    let rel = Path::new(relative.trim());
    if rel.is_absolute() || rel.components().any(|c| matches!(c, Component::Prefix(_) | Component::RootDir)) {
        return Err(ToolError::new(format!("`{relative}` is absolute; give a path relative to the root")));
    }
    let root = root.canonicalize().map_err(|e| ToolError::new(format!("the root directory is not usable: {e}")))?;
    let joined = root.join(rel);
    let resolved = joined.canonicalize().map_err(|e| ToolError::new(format!("`{relative}`: {e}")))?;
    if !resolved.starts_with(&root) {
        return Err(ToolError::new(format!("`{relative}` is outside the allowed directory")));
    }
    Ok(resolved)
}

fn path_arg(args: &Value) -> &str {
    args.get("path").and_then(Value::as_str).unwrap_or(".")
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
                    let path = confine(&root, path_arg(&args))?;
                    let bytes = tokio::task::spawn_blocking(move || std::fs::read(&path))
                        .await
                        .map_err(|e| ToolError::new(e.to_string()))??;
                    let total = bytes.len();
                    let shown = &bytes[..total.min(max)];
                    let mut text = String::from_utf8_lossy(shown).into_owned();
                    if total > max {
                        text.push_str(&format!("\n[file truncated: {max} of {total} bytes shown]"));
                    }
                    Ok(ToolOutput::text(text))
                }
            },
        )
        .read_only()
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
                    let dir = confine(&root, path_arg(&args))?;
                    let mut names = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<String>> {
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
    use super::*;
    use crate::tool::ToolContext;

    #[tokio::test]
    async fn reads_inside_the_root_and_refuses_escapes() {
        let dir = std::env::temp_dir().join(format!("loom-files-{}", crate::new_id("t")));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/a.txt"), "hello").unwrap();
        let outside = std::env::temp_dir().join(format!("loom-outside-{}", crate::new_id("t")));
        std::fs::write(&outside, "secret").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(&outside, dir.join("link")).unwrap();
        let tools = Files::read_only(&dir).tools();
        let read = &tools[0];
        let list = &tools[1];
        let ctx = ToolContext::detached("run_1", "sess_1");
        let ok = read.call(ctx.clone(), json!({"path": "sub/a.txt"})).await.unwrap();
        assert_eq!(ok.content, "hello");
        for bad in ["../x", "/etc/passwd", "sub/../../etc/passwd"] {
            let err = read.call(ctx.clone(), json!({"path": bad})).await.unwrap_err();
            assert!(!err.message().is_empty(), "{bad}");
        }
        #[cfg(unix)]
        {
            let err = read.call(ctx.clone(), json!({"path": "link"})).await.unwrap_err();
            assert!(err.message().contains("outside"), "{}", err.message());
        }
        let listing = list.call(ctx.clone(), json!({})).await.unwrap();
        assert!(listing.content.contains("sub/"), "{}", listing.content);
        std::fs::remove_dir_all(&dir).ok();
        std::fs::remove_file(&outside).ok();
    }
}
