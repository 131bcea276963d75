//! `/knowledge/search` and `/knowledge/index`: the agent's sources, shared and per tenant.

use serde_json::json;

use crate::start;

#[tokio::test]
async fn search_finds_cited_passages_and_tenant_sources_stay_with_their_tenant() {
    let s = start().await;
    let (a, b) = (&s.key_a, &s.key_b);
    let (status, r) = s.get(b, "/knowledge/search?q=refunds%20paid&top_k=2").await;
    assert_eq!(status, 200, "{r}");
    let passages = r["passages"].as_array().unwrap();
    assert!(!passages.is_empty() && passages.len() <= 2, "{r}");
    assert_eq!(passages[0]["source"], "faq");
    assert_eq!(passages[0]["document"], "refunds");
    assert!(passages[0]["citation"].as_str().unwrap().starts_with("refunds"));
    assert!(passages[0]["text"].as_str().unwrap().contains("14 days"));
    // Acme's own source is searched for acme only.
    let (_, mine) = s.get(a, "/knowledge/search?q=discount%20code&top_k=5").await;
    assert!(mine["passages"].as_array().unwrap().iter().any(|p| p["source"] == "acme-notes"), "{mine}");
    let (_, theirs) = s.get(b, "/knowledge/search?q=discount%20code&top_k=5").await;
    assert!(!theirs.to_string().contains("ZEBRA"), "{theirs}");
    // Only the named sources.
    let (_, only) = s.get(a, "/knowledge/search?q=refunds&top_k=5&sources=acme-notes").await;
    assert!(only["passages"].as_array().unwrap().iter().all(|p| p["source"] == "acme-notes"), "{only}");

    // Re-indexing reports the shared sources and the caller's own only.
    let (status, idx) = s.post(b, "/knowledge/index", json!({})).await;
    assert_eq!(status, 200, "{idx}");
    let names: Vec<&str> = idx["sources"].as_array().unwrap().iter().map(|r| r["source"].as_str().unwrap()).collect();
    assert_eq!(names, ["faq"]);
    assert_eq!(idx["sources"][0]["documents"], 2);
    let (_, idx) = s.post(a, "/knowledge/index", json!({})).await;
    assert_eq!(idx["sources"].as_array().unwrap().len(), 2, "{idx}");

    // Bad queries and bodies.
    assert_eq!(s.get(a, "/knowledge/search").await.0, 400, "no q");
    assert_eq!(s.get(a, "/knowledge/search?q=%20").await.0, 400);
    assert_eq!(s.get(a, "/knowledge/search?q=x&top_k=0").await.0, 400);
    assert_eq!(s.get(a, "/knowledge/search?q=x&top_k=1000").await.0, 400);
    assert_eq!(s.get(a, "/knowledge/search?q=x&top_k=many").await.0, 400);
    assert_eq!(s.get(a, "/knowledge/search?q=x&colour=red").await.0, 400);
    assert_eq!(s.post(a, "/knowledge/index", json!({"force": true})).await.0, 422);
    assert_eq!(s.raw("post", a, "/knowledge/index", "{").await.0, 400);
}
