//! `write_file` and `edit_file`: every write goes to a temporary file in the target's directory
//! (opened through the root's handle), which is synced and then renamed over the target, so a
//! reader sees the old file or the new one, never half of one, and a failed write leaves the old
//! file as it was.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use cap_std::fs::{Dir, OpenOptions, Permissions};

use super::confine::{io_error, not_found, open_regular};
use super::read::binary_reason;
use tokio_util::sync::CancellationToken;

use crate::tool::{ToolError, ToolErrorKind};

/// The file a write goes to: the handle on its directory, its name there, and the permissions of
/// the file it replaces (a new file gets the default ones).
struct Target {
    parent: Dir,
    name: PathBuf,
    existing: Option<(Permissions, u64)>,
}

/// Refuses a path that names no file (`.`, `a/..`, an empty path).
fn split(path: &Path, relative: &str) -> Result<(PathBuf, PathBuf), ToolError> {
    let name = match path.components().next_back() {
        Some(std::path::Component::Normal(name)) => PathBuf::from(name),
        _ => return Err(ToolError::invalid_arguments(format!("`{relative}` does not name a file"))),
    };
    let parent = path.parent().map(Path::to_path_buf).filter(|p| !p.as_os_str().is_empty());
    Ok((parent.unwrap_or_else(|| PathBuf::from(".")), name))
}

/// Finds where a write to `path` goes. A symbolic link as the last component is followed when it
/// points to a file under the root; `create` makes missing parent directories (under the root).
fn target(dir: &Dir, path: &Path, relative: &str, create: bool) -> Result<Target, ToolError> {
    let (parent_path, name) = split(path, relative)?;
    if create {
        dir.create_dir_all(&parent_path).map_err(|e| write_error(relative, &e))?;
    }
    let parent = dir.open_dir(&parent_path).map_err(|e| write_error(relative, &e))?;
    match parent.symlink_metadata(&name) {
        Ok(meta) if meta.is_symlink() => {
            // Resolved through the handle: a link that leads out (or nowhere) is refused.
            let resolved = dir.canonicalize(path).map_err(|e| write_error(relative, &e))?;
            let (parent_path, name) = split(&resolved, relative)?;
            let parent = dir.open_dir(&parent_path).map_err(|e| write_error(relative, &e))?;
            let meta = parent.symlink_metadata(&name).map_err(|e| write_error(relative, &e))?;
            if !meta.is_file() {
                return Err(not_a_file(relative));
            }
            Ok(Target { parent, name, existing: Some((meta.permissions(), meta.len())) })
        }
        Ok(meta) if meta.is_dir() => Err(ToolError::new(format!("`{relative}` is a directory"))),
        Ok(meta) if !meta.is_file() => Err(not_a_file(relative)),
        Ok(meta) => Ok(Target { parent, name, existing: Some((meta.permissions(), meta.len())) }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Target { parent, name, existing: None }),
        Err(e) => Err(write_error(relative, &e)),
    }
}

fn not_a_file(relative: &str) -> ToolError {
    ToolError::new(format!("`{relative}` is not a regular file; only regular files can be written"))
}

/// A failed write as the model reads it: a path that leads out of the root is named as such
/// (whether anything exists out there is never looked at, so nothing about it is told).
fn write_error(relative: &str, e: &io::Error) -> ToolError {
    let error = io_error(relative, e);
    if error.message() == not_found(relative).message() {
        ToolError::new(format!(
            "`{relative}` cannot be written: it is not a path under the allowed directory (paths are relative to \
             it; `..` and symbolic links may not lead out of it)"
        ))
    } else {
        error
    }
}

/// Writes `bytes` to the target atomically: a temporary file beside it, synced, then renamed over
/// it. The temporary file is removed when anything fails. A call cancelled (or timed out) before
/// the rename changes nothing: the model was told it failed, so the file must not change after.
fn replace(target: &Target, bytes: &[u8], relative: &str, cancel: &CancellationToken) -> Result<(), ToolError> {
    let failed = |e: &io::Error| write_error(relative, e);
    let stem: String = target.name.to_string_lossy().chars().take(64).collect();
    let temp = PathBuf::from(format!(".{stem}.{}.loom-tmp", crate::new_id("w")));
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    let mut file = target.parent.open_with(&temp, &options).map_err(|e| failed(&e))?;
    let written = (|| -> io::Result<bool> {
        if let Some((permissions, _)) = &target.existing {
            file.set_permissions(permissions.clone())?;
        }
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        if cancel.is_cancelled() {
            return Ok(false);
        }
        target.parent.rename(&temp, &target.parent, &target.name).map(|()| true)
    })();
    match written {
        Ok(true) => Ok(()),
        Ok(false) => {
            let _ = target.parent.remove_file(&temp);
            Err(ToolError::with_kind(
                ToolErrorKind::Cancelled,
                format!("`{relative}` was not changed: the call was cancelled or timed out before the write finished"),
            ))
        }
        Err(e) => {
            let _ = target.parent.remove_file(&temp);
            Err(failed(&e))
        }
    }
}

/// `write_file`: creates or replaces the file at `path` with `content`.
pub(super) fn write_file(
    dir: &Dir,
    path: &Path,
    relative: &str,
    content: &str,
    cancel: &CancellationToken,
) -> Result<String, ToolError> {
    let target = target(dir, path, relative, true)?;
    replace(&target, content.as_bytes(), relative, cancel)?;
    let lines = content.lines().count();
    Ok(match target.existing {
        Some((_, before)) => format!(
            "Replaced `{relative}` ({before} bytes) with {} bytes ({lines} line{}).",
            content.len(),
            if lines == 1 { "" } else { "s" }
        ),
        None => format!(
            "Created `{relative}` with {} bytes ({lines} line{}).",
            content.len(),
            if lines == 1 { "" } else { "s" }
        ),
    })
}

/// What `edit_file` was asked to do.
pub(super) struct Edit<'a> {
    /// The exact text to replace.
    pub old: &'a str,
    /// What replaces it.
    pub new: &'a str,
    /// Replace every occurrence instead of requiring exactly one.
    pub all: bool,
    /// The largest file edited.
    pub max_bytes: u64,
}

/// `edit_file`: replaces `edit.old` with `edit.new` in the file at `path`, which must hold it
/// exactly once (or at least once, with `edit.all`).
pub(super) fn edit_file(
    dir: &Dir,
    path: &Path,
    relative: &str,
    edit: &Edit<'_>,
    cancel: &CancellationToken,
) -> Result<String, ToolError> {
    if edit.old.is_empty() {
        return Err(ToolError::invalid_arguments(
            "old_string is empty; give the exact text to replace, or use write_file to write a whole file",
        ));
    }
    if edit.old == edit.new {
        return Err(ToolError::invalid_arguments("old_string and new_string are the same; nothing would change"));
    }
    let target = target(dir, path, relative, false)?;
    if target.existing.is_none() {
        return Err(ToolError::new(format!(
            "`{relative}` does not exist under the allowed directory; use write_file to create it"
        )));
    }
    let (file, meta) = open_regular(&target.parent, &target.name, relative)?;
    if meta.len() > edit.max_bytes {
        return Err(ToolError::new(format!(
            "`{relative}` has {} bytes, more than edit_file edits ({}); use write_file to replace it",
            meta.len(),
            edit.max_bytes
        )));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.into_std().take(edit.max_bytes + 1).read_to_end(&mut bytes).map_err(|e| io_error(relative, &e))?;
    if let Some(reason) = binary_reason(&bytes) {
        return Err(ToolError::new(format!("`{relative}` is not a text file ({reason}); edit_file only edits text")));
    }
    let text = String::from_utf8(bytes).map_err(|_| ToolError::new(format!("`{relative}` is not valid UTF-8")))?;
    let count = text.matches(edit.old).count();
    if count == 0 {
        return Err(ToolError::new(format!(
            "old_string was not found in `{relative}`; read the file and copy the exact text, including \
             whitespace and indentation"
        )));
    }
    if count > 1 && !edit.all {
        return Err(ToolError::new(format!(
            "old_string occurs {count} times in `{relative}`; include more of the surrounding text so it \
             occurs once, or set replace_all to true to replace every occurrence"
        )));
    }
    let edited = if edit.all { text.replace(edit.old, edit.new) } else { text.replacen(edit.old, edit.new, 1) };
    replace(&target, edited.as_bytes(), relative, cancel)?;
    Ok(format!(
        "Edited `{relative}`: replaced {count} occurrence{} ({} bytes now).",
        if count == 1 { "" } else { "s" },
        edited.len()
    ))
}
