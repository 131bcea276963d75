//! Queries and their answers: [`KnowledgeQuery`], [`Passage`] and [`KnowledgeBundle`].

use serde::{Deserialize, Serialize};

use super::types::{Chunk, Location};
use crate::run::{IntoKnowledge, KnowledgeItem};

/// What to look up.
///
/// ```
/// use loom_agent::knowledge::KnowledgeQuery;
///
/// let q = KnowledgeQuery::new("how are refunds paid?").top_k(3).tenant("acme");
/// assert_eq!((q.top_k, q.tenant.as_str()), (3, "acme"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnowledgeQuery {
    /// The question or keywords.
    pub text: String,
    /// The most passages returned (default 3).
    pub top_k: usize,
    /// Whose knowledge: the sources of this tenant and the shared ones (default `""`: the shared
    /// ones only).
    pub tenant: String,
    /// Only these sources, by name (default: every source).
    pub sources: Option<Vec<String>>,
}

impl KnowledgeQuery {
    /// A query for the 3 best passages.
    pub fn new(text: impl Into<String>) -> Self {
        KnowledgeQuery { text: text.into(), top_k: 3, tenant: String::new(), sources: None }
    }

    /// The most passages returned.
    pub fn top_k(mut self, k: usize) -> Self {
        self.top_k = k;
        self
    }

    /// Whose knowledge (besides the shared sources).
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = tenant.into();
        self
    }

    /// Only these sources.
    pub fn sources<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.sources = Some(names.into_iter().map(Into::into).collect());
        self
    }
}

/// A passage found for a query, with what it takes to cite it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Passage {
    /// The source's name.
    pub source: String,
    /// The document: a file's path within its directory, an inline document's id, or what a
    /// dynamic source calls it.
    pub document: String,
    /// Where in the document.
    #[serde(default)]
    pub location: Location,
    /// The text.
    pub text: String,
    /// Its score: the fused reciprocal rank score (higher is better).
    #[serde(default)]
    pub score: f32,
    /// A link to the original, if there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
}

impl Passage {
    /// A passage of `document` from `source`.
    pub fn new(source: impl Into<String>, document: impl Into<String>, text: impl Into<String>) -> Self {
        Passage {
            source: source.into(),
            document: document.into(),
            location: Location::default(),
            text: text.into(),
            score: 0.0,
            uri: None,
        }
    }

    /// Where in the document.
    pub fn location(mut self, location: Location) -> Self {
        self.location = location;
        self
    }

    /// A link to the original.
    pub fn uri(mut self, uri: impl Into<String>) -> Self {
        self.uri = Some(uri.into());
        self
    }

    /// How it is cited: the document and the location, such as `guide.md:12-30` or
    /// `manual.pdf p. 3`.
    pub fn citation(&self) -> String {
        format!("{}{}", self.document, self.location.suffix())
    }

    pub(crate) fn of_chunk(source: &str, chunk: Chunk) -> Self {
        Passage {
            source: source.to_string(),
            document: chunk.document,
            location: chunk.location,
            text: chunk.text,
            score: 0.0,
            uri: None,
        }
    }

    /// The key passages are matched by when lists are fused.
    pub(crate) fn key(&self) -> String {
        format!("{}\u{0}{}\u{0}{}\u{0}{}", self.source, self.document, self.location.suffix(), self.text)
    }
}

/// The passages found for a query, best first, ready to cite: give it to
/// `RunContext::new().knowledge(bundle)` and the model sees them numbered `[1]`, `[2]`, …
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KnowledgeBundle {
    /// The query's text.
    pub query: String,
    /// The passages, best first.
    pub passages: Vec<Passage>,
}

impl KnowledgeBundle {
    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.passages.is_empty()
    }

    /// How many passages.
    pub fn len(&self) -> usize {
        self.passages.len()
    }

    /// The passages as run-context knowledge items: the citation as the title, the source as the
    /// source, the fused score as the score.
    pub fn items(&self) -> Vec<KnowledgeItem> {
        self.passages
            .iter()
            .map(|p| KnowledgeItem {
                source: p.source.clone(),
                title: Some(p.citation()),
                content: p.text.clone(),
                uri: p.uri.clone(),
                score: Some(f64::from(p.score)),
            })
            .collect()
    }

    /// The passages as text, each under its marker: `[1] guide.md:3-9 (docs)` and the text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (i, p) in self.passages.iter().enumerate() {
            if i > 0 {
                out.push_str("\n\n");
            }
            out.push_str(&format!("[{}] {} ({})", i + 1, p.citation(), p.source));
            if let Some(uri) = &p.uri {
                out.push_str(&format!(" {uri}"));
            }
            out.push('\n');
            out.push_str(p.text.trim());
        }
        out
    }
}

impl IntoKnowledge for KnowledgeBundle {
    fn into_knowledge(self) -> Vec<KnowledgeItem> {
        self.items()
    }
}

impl IntoKnowledge for &KnowledgeBundle {
    fn into_knowledge(self) -> Vec<KnowledgeItem> {
        self.items()
    }
}
