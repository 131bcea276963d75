//! Confinement: every path the file tools touch is opened relative to one directory handle on the
//! root (`cap_std::fs::Dir`), so `..`, absolute paths and symbolic links that lead out are refused
//! by the open itself (on Linux with `openat2(RESOLVE_BENEATH)`), and nothing can be swapped in
//! between a check and the use.

use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use cap_std::fs::{Dir, File, Metadata, OpenOptions};

use crate::tool::ToolError;

/// The root every path is confined to: its path (for the directory walks of `glob` and `grep`,
/// whose every result is checked again through the handle) and the handle, opened once.
#[derive(Debug)]
pub(super) struct Root {
    path: PathBuf,
    opened: Mutex<Option<(Arc<Dir>, PathBuf)>>,
}

impl Root {
    /// A root at `path`, opened now if it can be (else at the first call).
    pub(super) fn new(path: PathBuf) -> Root {
        let root = Root { path, opened: Mutex::new(None) };
        let _ = root.open();
        root
    }

    /// The handle on the root directory and its canonical path, opened with ambient authority once
    /// (a root that could not be opened is tried again at the next call).
    fn open(&self) -> Result<(Arc<Dir>, PathBuf), ToolError> {
        let mut opened = self.opened.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((dir, path)) = opened.as_ref() {
            return Ok((dir.clone(), path.clone()));
        }
        let unusable = |e: io::Error| ToolError::new(format!("the allowed directory cannot be opened: {e}"));
        let canonical = self.path.canonicalize().map_err(unusable)?;
        let dir = Arc::new(Dir::open_ambient_dir(&canonical, cap_std::ambient_authority()).map_err(unusable)?);
        *opened = Some((dir.clone(), canonical.clone()));
        Ok((dir, canonical))
    }

    /// The handle on the root directory.
    pub(super) fn dir(&self) -> Result<Arc<Dir>, ToolError> {
        self.open().map(|(dir, _)| dir)
    }

    /// The handle and the root's canonical path (where the walks start).
    pub(super) fn dir_and_path(&self) -> Result<(Arc<Dir>, PathBuf), ToolError> {
        self.open()
    }
}

/// The one answer for a path that does not exist under the root and for a path outside it: the
/// tools must not tell the model what exists outside the root.
pub(super) fn not_found(relative: &str) -> ToolError {
    ToolError::new(format!("`{relative}` does not exist under the allowed directory"))
}

/// A path argument checked for what can be refused without touching the disk: it must be
/// relative. `..` and symbolic links are left to the handle, which refuses any that lead out (a
/// `..` that stays inside, `a/../b`, is fine).
pub(super) fn relative_path(relative: &str) -> Result<PathBuf, ToolError> {
    let trimmed = relative.trim();
    let path = Path::new(if trimmed.is_empty() { "." } else { trimmed });
    if path.has_root() || path.components().any(|c| matches!(c, Component::Prefix(_) | Component::RootDir)) {
        return Err(ToolError::invalid_arguments(format!(
            "`{relative}` is an absolute path; give a path relative to the allowed directory, such as `src/main.rs`"
        )));
    }
    if trimmed.contains('\0') {
        return Err(ToolError::invalid_arguments(format!("`{}` contains a NUL byte", trimmed.replace('\0', "\\0"))));
    }
    Ok(path.to_path_buf())
}

/// Turns an error from an operation through the handle into what the model reads. A missing path,
/// a path that leads out of the root (an escape: `PermissionDenied` from cap-std, `EXDEV` from
/// `openat2`) and a path through something that is not a directory all get [`not_found`], so the
/// answer says nothing about what lies outside.
pub(super) fn io_error(relative: &str, e: &io::Error) -> ToolError {
    #[cfg(unix)]
    if let Some(code) = e.raw_os_error() {
        return match code {
            libc::EACCES => ToolError::new(format!("`{relative}`: permission denied")),
            libc::EISDIR => ToolError::new(format!("`{relative}` is a directory")),
            libc::ENOSPC => ToolError::new(format!("`{relative}`: no space left on the device")),
            libc::EROFS => ToolError::new(format!("`{relative}`: the file system is read-only")),
            libc::ENAMETOOLONG => ToolError::new(format!("`{relative}`: the name is too long")),
            _ => not_found(relative),
        };
    }
    match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied | io::ErrorKind::NotADirectory => not_found(relative),
        io::ErrorKind::IsADirectory => ToolError::new(format!("`{relative}` is a directory")),
        _ => not_found(relative),
    }
}

/// Options that open a file for reading without ever blocking: with `O_NONBLOCK` on unix, so a
/// FIFO (swapped in after a check, or named directly) cannot stall the open.
pub(super) fn read_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use cap_std::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    options
}

/// Opens the regular file at `path` (relative to `dir`) for reading; anything but a regular file
/// (a directory, a FIFO, a socket, a device) is refused after the open, on the opened handle, so
/// what is read is what was checked.
pub(super) fn open_regular(dir: &Dir, path: &Path, relative: &str) -> Result<(File, Metadata), ToolError> {
    let file = dir.open_with(path, &read_options()).map_err(|e| io_error(relative, &e))?;
    let meta = file.metadata().map_err(|e| io_error(relative, &e))?;
    if meta.is_dir() {
        return Err(ToolError::new(format!(
            "`{relative}` is a directory; use list_files, glob or grep for directories"
        )));
    }
    if !meta.is_file() {
        return Err(ToolError::new(format!("`{relative}` is not a regular file; only regular files can be read")));
    }
    Ok((file, meta))
}

/// `path` as the model sees it: `/`-separated, relative to the root.
pub(super) fn display(path: &Path) -> String {
    let mut out = String::new();
    for component in path.components() {
        if let Component::Normal(name) = component {
            if !out.is_empty() {
                out.push('/');
            }
            out.push_str(&name.to_string_lossy());
        }
    }
    if out.is_empty() { ".".to_string() } else { out }
}
