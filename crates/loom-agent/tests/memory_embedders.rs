//! Choosing memory's embedder: embedder strings (`parse_embedder`), the builder's
//! `embedder_named` / `no_embedder`, the default (the local embedder once pulled), and an agent
//! whose memory embeds through an OpenAI-compatible server (a mock on 127.0.0.1).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use loom_agent::memory::NewFact;
use loom_agent::{Agent, Error, parse_embedder};
use loom_testkit::{MockServer, Reply};
use serde_json::json;

#[test]
fn bad_embedder_strings_list_the_accepted_forms() {
    for bad in ["word2vec", "openai:", "nope:model", "http://h:8000", "http://h/v1", ""] {
        let err = parse_embedder(bad).err().unwrap_or_else(|| panic!("{bad} was accepted"));
        let Error::Config(message) = &err else { panic!("{bad}: {err:?}") };
        for form in ["`local`", "openai:MODEL", "http(s)://HOST/PATH:MODEL", "ollama:nomic-embed-text"] {
            assert!(message.contains(form), "{bad}: {message}");
        }
    }
}

#[test]
fn http_embedder_strings() {
    let e = parse_embedder("openai:text-embedding-3-small").unwrap();
    assert_eq!(e.model_id(), "openai:text-embedding-3-small");
    assert_eq!(e.dimensions(), 1536);
    let e = parse_embedder("ollama:nomic-embed-text").unwrap();
    assert_eq!(e.model_id(), "ollama:nomic-embed-text");
    let e = parse_embedder("http://127.0.0.1:9/v1:nomic-embed-text:latest").unwrap();
    assert_eq!(e.model_id(), "http://127.0.0.1:9/v1:nomic-embed-text:latest");
}

#[cfg(feature = "local")]
#[test]
fn the_local_embedder_string_needs_the_pulled_model() {
    let missing = std::env::temp_dir().join("loom-no-embedder-here");
    let err = parse_embedder(&format!("local:{}", missing.display())).err().unwrap();
    assert!(
        matches!(&err, Error::ModelNotPulled { command, .. } if command == "loom model pull --embedder"),
        "{err:?}"
    );
    match parse_embedder("local") {
        Ok(e) => {
            assert_eq!(e.model_id(), "local:all-minilm-l6-v2");
            assert_eq!(e.dimensions(), 384);
            assert!(loom_agent::memory::default_embedder().is_some(), "pulled: the local embedder is the default");
        }
        Err(Error::ModelNotPulled { .. }) => {
            eprintln!("the embedder is not pulled: the default is none");
            assert!(loom_agent::memory::default_embedder().is_none());
        }
        Err(other) => panic!("{other:?}"),
    }
}

#[test]
fn a_bad_embedder_fails_build() {
    let err = Agent::builder().model("echo").memory("memory").embedder_named("word2vec").build().err().unwrap();
    assert!(matches!(&err, Error::Config(m) if m.contains("openai:MODEL")), "{err:?}");
}

#[tokio::test]
async fn memory_embeds_through_an_openai_compatible_server() {
    let server = MockServer::start().await;
    server.always(Reply::json(
        200,
        json!({"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.6, 0.8]}], "model": "m"}),
    ));
    let spec = format!("{}/v1:nomic-embed-text", server.url());
    let agent = Agent::builder().model("echo").memory("memory").embedder_named(&spec).build().unwrap();
    agent.memory().remember_fact("ann", NewFact::new("Owns a red bicycle.")).await.unwrap();
    let recollection = agent.memory().recall("ann", "what do I ride").await.unwrap();
    assert_eq!(recollection.items[0].1.text, "Owns a red bicycle.");
    let inputs: Vec<serde_json::Value> = server.requests().iter().map(|r| r.json()["input"].clone()).collect();
    assert_eq!(inputs, vec![json!(["Owns a red bicycle."]), json!(["what do I ride"])]);
    assert!(server.requests().iter().all(|r| r.path == "/v1/embeddings"));

    // Without an embedder nothing is embedded.
    let before = server.requests().len();
    let agent = Agent::builder().model("echo").memory("memory").no_embedder().build().unwrap();
    agent.memory().remember_fact("ann", NewFact::new("Owns a red bicycle.")).await.unwrap();
    agent.memory().recall("ann", "what do I ride").await.unwrap();
    assert_eq!(server.requests().len(), before);
}
