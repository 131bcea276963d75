//! Base URLs: checked once, and joined with an endpoint's path without losing the base's query.

use loom_core::error::ModelError;
use reqwest::Url;

/// Parses a base URL: an absolute `http://` or `https://` URL with a host. Anything else is a
/// [`ModelError::Configuration`] (never retried: no request could reach a server).
pub(crate) fn parse_base(base: &str) -> Result<Url, ModelError> {
    let invalid = |why: &str| {
        ModelError::Configuration(format!(
            "invalid base URL `{base}`: {why}; expected an http:// or https:// URL such as https://api.example.com/v1"
        ))
    };
    let url = Url::parse(base.trim()).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(&format!("the scheme `{}` is not http or https", url.scheme())));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("it has no host"));
    }
    Ok(url)
}

/// The URL of an endpoint under `base`: `path` is appended to the base's path, the base's query
/// is kept and `query` is added to it (`https://h/v1?api-version=1` + `/chat/completions` is
/// `https://h/v1/chat/completions?api-version=1`).
pub(crate) fn endpoint(base: &str, path: &str, query: &[(&str, &str)]) -> Result<Url, ModelError> {
    let same = |e: &Recent| {
        e.base == base && e.path == path && e.query.iter().map(|(k, v)| (&**k, &**v)).eq(query.iter().copied())
    };
    if let Some(url) = RECENT.with_borrow(|recent| recent.iter().find(|e| same(e)).map(|e| e.url.clone())) {
        return Ok(url);
    }
    let url = build(base, path, query)?;
    RECENT.with_borrow_mut(|recent| {
        if recent.len() == RECENT_MAX {
            recent.remove(0);
        }
        let query = query.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        recent.push(Recent { base: base.to_string(), path: path.to_string(), query, url: url.clone() });
    });
    Ok(url)
}

/// An endpoint URL built on this thread, with what it was built from.
struct Recent {
    base: String,
    path: String,
    query: Vec<(String, String)>,
    url: Url,
}

/// How many endpoints a thread remembers.
const RECENT_MAX: usize = 8;

thread_local! {
    /// The endpoints built last on this thread: a model builds the same URL for every call, and
    /// parsing its base URL again each time was about 2 % of a plain run's CPU (`http_runs`).
    static RECENT: std::cell::RefCell<Vec<Recent>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// [`endpoint`] without the cache.
fn build(base: &str, path: &str, query: &[(&str, &str)]) -> Result<Url, ModelError> {
    let mut url = parse_base(base)?;
    let joined = format!("{}/{}", url.path().trim_end_matches('/'), path.trim_start_matches('/'));
    url.set_path(&joined);
    url.set_fragment(None);
    if !query.is_empty() {
        let mut pairs = url.query_pairs_mut();
        for (k, v) in query {
            pairs.append_pair(k, v);
        }
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn remembered_endpoints_answer_for_their_own_inputs_only() {
        for _ in 0..2 {
            assert_eq!(endpoint("https://a/v1", "/x", &[]).unwrap().as_str(), "https://a/v1/x");
            assert_eq!(endpoint("https://a/v1", "/x", &[("alt", "sse")]).unwrap().as_str(), "https://a/v1/x?alt=sse");
            assert_eq!(endpoint("https://a/v1", "/y", &[]).unwrap().as_str(), "https://a/v1/y");
            assert_eq!(endpoint("https://b/v1", "/x", &[]).unwrap().as_str(), "https://b/v1/x");
            assert!(endpoint("ftp://a/v1", "/x", &[]).is_err());
        }
        // More bases than a thread remembers: the oldest are built again, still right.
        for round in 0..2 {
            for i in 0..(RECENT_MAX + 3) {
                let url = endpoint(&format!("https://h{i}/v1"), "/x", &[]).unwrap();
                assert_eq!(url.as_str(), format!("https://h{i}/v1/x"), "round {round}");
            }
        }
    }

    #[test]
    fn paths_join_and_queries_survive() {
        let e = |b: &str, p: &str| String::from(endpoint(b, p, &[]).unwrap());
        assert_eq!(e("https://h/v1", "/chat/completions"), "https://h/v1/chat/completions");
        assert_eq!(e("https://h/v1/", "/chat/completions"), "https://h/v1/chat/completions");
        assert_eq!(e("https://h", "/v1/messages"), "https://h/v1/messages");
        assert_eq!(e("http://127.0.0.1:8080", "/v1/messages"), "http://127.0.0.1:8080/v1/messages");
        assert_eq!(
            e("https://h/openai/v1?api-version=2024-10-21", "/chat/completions"),
            "https://h/openai/v1/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(
            endpoint("https://h/?tenant=a", "/v1beta/models/m:streamGenerateContent", &[("alt", "sse")])
                .unwrap()
                .as_str(),
            "https://h/v1beta/models/m:streamGenerateContent?tenant=a&alt=sse"
        );
    }

    #[test]
    fn malformed_bases_are_configuration_errors() {
        for bad in ["localhost:8080/v1", "api.openai.com/v1", "ftp://h/v1", "http://", "", "not a url"] {
            let err = parse_base(bad).unwrap_err();
            assert!(matches!(err, ModelError::Configuration(_)), "{bad}: {err:?}");
            assert!(!err.is_retryable());
            assert!(err.to_string().contains("invalid base URL"), "{bad}: {err}");
        }
    }
}
