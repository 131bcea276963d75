//! Helpers for the memory tests: a deterministic test embedder (hashed bag of words) and unique
//! ids and paths.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use loom_agent::Error;
use loom_agent::embed::Embedder;

/// A deterministic embedder for tests: each lower-cased word (first 5 letters, a crude stem) is
/// hashed into one of `DIM` buckets; the counts are L2-normalized. Texts that share words are close.
pub struct HashEmbedder;

pub const DIM: usize = 64;

pub fn hash_embed(text: &str) -> Vec<f32> {
    let mut v = vec![0f32; DIM];
    for word in text.split(|c: char| !c.is_alphanumeric()).filter(|w| w.len() > 2) {
        let stem: String = word.to_lowercase().chars().take(5).collect();
        let mut h: u64 = 0xcbf29ce484222325;
        for b in stem.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
        v[(h % DIM as u64) as usize] += 1.0;
    }
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
    v
}

#[async_trait::async_trait]
impl Embedder for HashEmbedder {
    fn model_id(&self) -> &str {
        "test:hash-64"
    }
    fn dimensions(&self) -> usize {
        DIM
    }
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, Error> {
        Ok(texts.iter().map(|t| hash_embed(t)).collect())
    }
}

/// A unique suffix: time, process and a counter.
pub fn unique() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{nanos}_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

pub fn temp_db() -> PathBuf {
    std::env::temp_dir().join(format!("loom-memory-{}.db", unique()))
}

pub fn remove_db(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

pub fn postgres_url() -> Option<String> {
    match std::env::var("LOOM_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!("skipped: LOOM_TEST_POSTGRES_URL not set");
            None
        }
    }
}

/// A random unit vector of [`DIM`] dimensions from a xorshift state (deterministic per seed).
pub fn random_unit(state: &mut u64) -> Vec<f32> {
    let v: Vec<f32> = (0..DIM)
        .map(|_| {
            *state ^= *state >> 12;
            *state ^= *state << 25;
            *state ^= *state >> 27;
            (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}
