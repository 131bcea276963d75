//! Embeddings: text to vectors, for memory and knowledge recall.
//!
//! An [`Embedder`] turns texts into fixed-size vectors whose cosine similarity measures how close
//! their meanings are. Memory and knowledge stores keep [`Embedder::model_id`] beside every vector,
//! so vectors made by one model are never compared with another model's.

use crate::error::Error;

/// Turns texts into vectors.
///
/// ```
/// use loom_core::embed::Embedder;
/// use loom_core::Error;
///
/// /// Counts vowels and consonants: a toy, for the example only.
/// struct Letters;
///
/// #[async_trait::async_trait]
/// impl Embedder for Letters {
///     fn model_id(&self) -> &str { "letters" }
///     fn dimensions(&self) -> usize { 2 }
///     async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, Error> {
///         Ok(texts
///             .iter()
///             .map(|t| {
///                 let v = t.chars().filter(|c| "aeiou".contains(*c)).count() as f32;
///                 let c = t.chars().filter(|c| c.is_alphabetic()).count() as f32 - v;
///                 let n = (v * v + c * c).sqrt().max(f32::MIN_POSITIVE);
///                 vec![v / n, c / n]
///             })
///             .collect())
///     }
/// }
/// ```
#[async_trait::async_trait]
pub trait Embedder: Send + Sync + 'static {
    /// Identifies the model and its settings (for example `local:all-minilm-l6-v2` or
    /// `openai:text-embedding-3-small`). Stored beside each vector.
    fn model_id(&self) -> &str;

    /// The length of every vector this embedder returns.
    fn dimensions(&self) -> usize;

    /// Embeds `texts`: one L2-normalized vector of [`Embedder::dimensions`] per text, in order.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, Error>;
}

#[async_trait::async_trait]
impl<E: Embedder + ?Sized> Embedder for std::sync::Arc<E> {
    fn model_id(&self) -> &str {
        (**self).model_id()
    }
    fn dimensions(&self) -> usize {
        (**self).dimensions()
    }
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, Error> {
        (**self).embed(texts).await
    }
}
