//! `/memory/…`: facts, search, blocks, forget, export — per user of the caller's tenant.

use serde_json::json;

use crate::start;

#[tokio::test]
async fn facts_blocks_search_export_and_forget() {
    let s = start().await;
    let a = &s.key_a;
    let (status, f) = s
        .post(
            a,
            "/memory/facts",
            json!({"user_id": "ana", "statement": "Ana lives in Porto", "key": "home_city", "importance": 0.9}),
        )
        .await;
    assert_eq!(status, 201, "{f}");
    assert_eq!(f["fact"]["statement"], "Ana lives in Porto");
    let porto = f["fact"]["id"].as_str().unwrap().to_string();
    // The same key supersedes it.
    let (_, f2) = s
        .post(a, "/memory/facts", json!({"user_id": "ana", "statement": "Ana lives in Braga", "key": "home_city"}))
        .await;
    let braga = f2["fact"]["id"].as_str().unwrap().to_string();
    let (status, facts) = s.get(a, "/memory/facts?user_id=ana").await;
    assert_eq!(status, 200, "{facts}");
    let list = facts["facts"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{facts}");
    assert_eq!(list[0]["id"], braga.as_str());
    let (_, history) = s.get(a, "/memory/facts?user_id=ana&history=true").await;
    let list = history["facts"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list.iter().find(|f| f["id"] == porto.as_str()).unwrap()["superseded_by"], braga.as_str());

    // A run of the user records an episode, found by search with the fact.
    let (status, run) =
        s.post(a, "/runs", json!({"input": "I like Braga's gardens", "user_id": "ana", "wait": true})).await;
    assert_eq!(status, 200, "{run}");
    s.agent.memory().flush().await.unwrap();
    let (status, found) = s.get(a, "/memory/search?user_id=ana&q=Braga").await;
    assert_eq!(status, 200, "{found}");
    let results = found["results"].as_array().unwrap();
    assert!(results.iter().any(|r| r["kind"] == "fact" && r["id"] == braga.as_str()), "{found}");
    assert!(results.iter().all(|r| r["score"].as_f64().unwrap() > 0.0));
    let mut episode = false;
    for _ in 0..100 {
        let (_, found) = s.get(a, "/memory/search?user_id=ana&q=gardens").await;
        if found["results"].as_array().unwrap().iter().any(|r| r["kind"] == "episode") {
            episode = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(episode, "the run's episode is found");
    let (_, one) = s.get(a, "/memory/search?user_id=ana&q=Braga&limit=1").await;
    assert_eq!(one["results"].as_array().unwrap().len(), 1);

    // Blocks.
    let (status, b) =
        s.put(a, "/memory/blocks/profile", json!({"user_id": "ana", "text": "Prefers short answers."})).await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(b["block"]["name"], "profile");
    let (_, blocks) = s.get(a, "/memory/blocks?user_id=ana").await;
    assert_eq!(blocks["blocks"][0]["text"], "Prefers short answers.");
    let (status, _) = s.put(a, "/memory/blocks/bad%20name", json!({"user_id": "ana", "text": "x"})).await;
    assert_eq!(status, 400);

    // Export: everything, under the client's user id.
    let (status, export) = s.get(a, "/memory/export?user_id=ana").await;
    assert_eq!(status, 200, "{export}");
    assert_eq!(export["user"], "ana");
    assert_eq!(export["facts"].as_array().unwrap().len(), 2);
    assert_eq!(export["episodes"].as_array().unwrap().len(), 1);
    assert_eq!(export["blocks"].as_array().unwrap().len(), 1);
    assert!(!export.to_string().contains("acme/"), "no tenant-scoped ids: {export}");

    // Forget one item, then a range, then everything.
    let (status, gone) = s.delete(a, &format!("/memory?user_id=ana&item_id={braga}")).await;
    assert_eq!((status, gone["forgotten"].as_u64()), (200, Some(1)), "{gone}");
    let (_, facts) = s.get(a, "/memory/facts?user_id=ana").await;
    assert_eq!(facts["facts"], json!([]));
    let (status, _) = s.delete(a, &format!("/memory?user_id=ana&item_id={braga}")).await;
    assert_eq!(status, 404, "already gone");
    let (status, range) = s.delete(a, "/memory?user_id=ana&from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z").await;
    assert_eq!(status, 200, "{range}");
    assert!(range["forgotten"].as_u64().unwrap() >= 1, "the episode and the old fact: {range}");
    let (status, all) = s.delete(a, "/memory?user_id=ana&all=true").await;
    assert_eq!(status, 200, "{all}");
    let (_, export) = s.get(a, "/memory/export?user_id=ana").await;
    assert_eq!((export["facts"].as_array().unwrap().len(), export["blocks"].as_array().unwrap().len()), (0, 0));

    // Bad requests.
    assert_eq!(s.delete(a, "/memory?user_id=ana").await.0, 400, "nothing named");
    assert_eq!(s.delete(a, "/memory?user_id=ana&all=true&item_id=x").await.0, 400, "two selectors");
    assert_eq!(s.delete(a, "/memory?from=2030-01-01T00:00:00Z&to=2020-01-01T00:00:00Z").await.0, 400);
    assert_eq!(s.delete(a, "/memory?from=yesterday&to=today").await.0, 400);
    assert_eq!(s.get(a, "/memory/search?user_id=ana").await.0, 400, "no q");
    assert_eq!(s.get(a, "/memory/search?user_id=ana&q=%20").await.0, 400, "empty q");
    assert_eq!(s.get(a, "/memory/facts?user_id=ana&colour=red").await.0, 400, "unknown query field");
    assert_eq!(s.get(a, "/memory/facts?user_id=").await.0, 400, "empty user");
    let (status, e) = s.post(a, "/memory/facts", json!({"user_id": "ana", "statement": "x", "colour": "red"})).await;
    assert_eq!((status, e["error"]["code"].as_str()), (422, Some("invalid_body")));
    assert_eq!(s.post(a, "/memory/facts", json!({"user_id": "ana"})).await.0, 422, "no statement");
    assert_eq!(s.post(a, "/memory/facts", json!({"user_id": "ana", "statement": " "})).await.0, 400);
    assert_eq!(s.raw("post", a, "/memory/facts", "{").await.0, 400);
    assert_eq!(s.raw("put", a, "/memory/blocks/p", "{\"text\": ").await.0, 400);
    assert_eq!(s.put(a, "/memory/blocks/p", json!({"text": "x", "size": 1})).await.0, 422);
}

#[tokio::test]
async fn another_tenant_sees_no_memory_of_the_same_user_name() {
    let s = start().await;
    let (a, b) = (&s.key_a, &s.key_b);
    let (_, f) =
        s.post(a, "/memory/facts", json!({"user_id": "ana", "statement": "acme secret: Ana's badge is 7731"})).await;
    let fact_id = f["fact"]["id"].as_str().unwrap().to_string();
    s.put(a, "/memory/blocks/profile", json!({"user_id": "ana", "text": "acme secret profile"})).await;

    for path in [
        "/memory/facts?user_id=ana",
        "/memory/facts?user_id=ana&history=true",
        "/memory/search?user_id=ana&q=badge",
        "/memory/blocks?user_id=ana",
        "/memory/export?user_id=ana",
    ] {
        let (status, body) = s.get(b, path).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(!body.to_string().contains("acme secret"), "{path}: {body}");
    }
    let (_, facts) = s.get(b, "/memory/facts?user_id=ana").await;
    assert_eq!(facts["facts"], json!([]));
    // B cannot forget or supersede A's items.
    let (status, _) = s.delete(b, &format!("/memory?user_id=ana&item_id={fact_id}")).await;
    assert_eq!(status, 404);
    let (status, _) = s.delete(b, "/memory/blocks/profile?user_id=ana").await;
    assert_eq!(status, 404);
    let (status, _) = s.delete(b, "/memory?user_id=ana&all=true").await;
    assert_eq!(status, 200);
    let (_, _) =
        s.post(b, "/memory/facts", json!({"user_id": "ana", "statement": "globex", "supersedes": fact_id})).await;
    let (_, facts) = s.get(a, "/memory/facts?user_id=ana").await;
    assert_eq!(facts["facts"].as_array().unwrap().len(), 1, "A's fact is still valid: {facts}");
    assert_eq!(facts["facts"][0]["id"], fact_id.as_str());
    let (_, blocks) = s.get(a, "/memory/blocks?user_id=ana").await;
    assert_eq!(blocks["blocks"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn an_agent_without_memory_or_knowledge_answers_404_with_a_code() {
    let s = crate::support::start().await;
    for path in ["/memory/facts?user_id=u", "/memory/search?q=x", "/memory/blocks", "/memory/export"] {
        let (status, body) = s.get(&s.key_a, path).await;
        assert_eq!((status, body["error"]["code"].as_str()), (404, Some("memory_not_configured")), "{path}");
    }
    let (status, body) = s.post(&s.key_a, "/memory/facts", json!({"statement": "x"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("memory_not_configured")));
    let (status, body) = s.get(&s.key_a, "/knowledge/search?q=x").await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("knowledge_not_configured")));
    let (status, body) = s.post(&s.key_a, "/knowledge/index", json!({})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("knowledge_not_configured")));
}
