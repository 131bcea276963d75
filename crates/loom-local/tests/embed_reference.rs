//! The local embedder against the reference vectors in `fixtures/embed_reference.json` (made once by
//! `fixtures/embed_reference.py`): cosine ≥ 0.999 for every sentence. Skipped, with a message, when
//! the embedder has not been pulled (`loom model pull --embedder`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use loom_core::embed::Embedder;
use loom_local::embed::{DIMENSIONS, LocalEmbedder, MODEL_ID, embedder_dir, is_pulled};

fn pulled() -> Option<LocalEmbedder> {
    let dir = embedder_dir().ok()?;
    if !is_pulled(&dir) {
        eprintln!("skipped: the embedder is not in {} (run `loom model pull --embedder`)", dir.display());
        return None;
    }
    Some(LocalEmbedder::from_dir(dir))
}

struct Reference {
    text: String,
    tokens: usize,
    vector: Vec<f32>,
}

fn reference() -> Vec<Reference> {
    let raw: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/embed_reference.json")).expect("the fixture is JSON");
    raw["sentences"]
        .as_array()
        .expect("sentences")
        .iter()
        .map(|s| Reference {
            text: s["text"].as_str().expect("text").to_string(),
            tokens: s["tokens"].as_u64().expect("tokens") as usize,
            vector: s["vector"]
                .as_array()
                .expect("vector")
                .iter()
                .map(|v| v.as_f64().expect("number") as f32)
                .collect(),
        })
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

#[tokio::test]
async fn vectors_match_the_reference_in_one_batch_and_one_by_one() {
    let Some(embedder) = pulled() else { return };
    let reference = reference();
    assert!(reference.len() >= 30, "the fixture has {} sentences", reference.len());
    assert!(reference.iter().any(|r| r.tokens == 256), "the fixture covers truncation");
    let texts: Vec<String> = reference.iter().map(|r| r.text.clone()).collect();
    let batched = embedder.embed(&texts).await.unwrap();
    assert_eq!(batched.len(), texts.len());
    let mut worst = 1.0f32;
    for (r, v) in reference.iter().zip(&batched) {
        assert_eq!(v.len(), DIMENSIONS);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "not unit length ({norm}) for {:?}", r.text);
        let c = cosine(v, &r.vector);
        worst = worst.min(c);
        assert!(c >= 0.999, "cosine {c} < 0.999 for {:?}", r.text);
    }
    eprintln!("worst cosine against the reference (batched): {worst}");
    // One text at a time (no padding at all) gives the same vectors as the padded batch.
    for (r, v) in reference.iter().zip(&batched).step_by(5) {
        let single = embedder.embed(std::slice::from_ref(&r.text)).await.unwrap();
        let c = cosine(&single[0], v);
        assert!(c >= 0.99999, "padding changed the vector of {:?}: cosine {c}", r.text);
    }
}

#[tokio::test]
async fn related_sentences_are_closer_than_unrelated_ones() {
    let Some(embedder) = pulled() else { return };
    let texts: Vec<String> =
        ["I moved to Berlin last year.", "Where does the user live now?", "My favourite food is ramen."]
            .map(String::from)
            .to_vec();
    let v = embedder.embed(&texts).await.unwrap();
    assert!(cosine(&v[0], &v[1]) > cosine(&v[2], &v[1]), "home should be closer to the question than food");
    assert_eq!(embedder.model_id(), MODEL_ID);
    assert_eq!(embedder.dimensions(), 384);
    assert!(embedder.embed(&[]).await.unwrap().is_empty());
}
