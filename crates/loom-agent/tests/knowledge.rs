//! Knowledge in agents: resolved bundles before the model with citation markers (and the
//! `knowledge.injected` event), the `search_knowledge` tool per tenant, dynamic sources, indexing
//! into the memory store's file, PDF pages, and hostile directories (links out, FIFOs, huge and
//! binary files, bytes that are not UTF-8).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod memory_support;

use std::path::PathBuf;

use common::{scripted, within};
use loom_agent::knowledge::{DirectoryOptions, Knowledge, KnowledgeQuery, KnowledgeSource, Location, Passage};
use loom_agent::message::Message;
use loom_agent::model::ScriptedTurn;
use loom_agent::{Agent, Error, EventKind, RunContext, RunRequest};
use memory_support::*;
use serde_json::json;

fn docs_dir(files: &[(&str, &[u8])]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("loom-knowledge-{}", unique()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    dir
}

const GUIDE: &str = "# Install\nRun the installer with --prefix to choose a folder.\n\n# Upgrade\n\
                     Upgrades keep your settings.\nBack up the config file before an upgrade.\n";

#[tokio::test]
async fn a_resolved_bundle_reaches_the_model_with_citation_markers_and_an_event() {
    let dir = docs_dir(&[("guide.md", GUIDE.as_bytes()), ("faq.txt", b"Refunds are paid within 14 days.\n")]);
    let (model, shared) = scripted([ScriptedTurn::text("Back it up first [1].")]);
    let agent = Agent::builder()
        .instructions("Sys.")
        .model(shared)
        .embedder(HashEmbedder)
        .knowledge(KnowledgeSource::directory(&dir).named("docs"))
        .build()
        .unwrap();
    let bundle = agent.resolve_knowledge(KnowledgeQuery::new("backup before upgrade").top_k(1)).await.unwrap();
    assert_eq!(bundle.len(), 1);
    let p = &bundle.passages[0];
    assert_eq!((p.source.as_str(), p.citation().as_str()), ("docs", "guide.md:1-6"));
    let result =
        agent.run(RunRequest::new("How do I upgrade?").context(RunContext::new().knowledge(&bundle))).await.unwrap();

    let sent = &model.requests()[0].messages;
    assert_eq!(sent.len(), 3, "{sent:?}");
    let context = sent[1].text();
    let expected = format!(
        "Context for this run.\n\nKnowledge (cite it by the numbers in brackets, such as [1]):\n[1] guide.md:1-6 (docs)\n{}",
        GUIDE.trim_end()
    );
    assert_eq!(context, expected);
    assert_eq!(sent[2], Message::user("How do I upgrade?"));

    let kinds: Vec<&str> = result.events.iter().map(|e| e.type_name()).collect();
    assert_eq!(&kinds[..2], ["run.started", "knowledge.injected"]);
    let EventKind::KnowledgeInjected(event) = &result.events[1].kind else { panic!() };
    assert_eq!(event.items.len(), 1);
    assert_eq!(event.items[0].marker, 1);
    assert_eq!(event.items[0].title.as_deref(), Some("guide.md:1-6"));
    assert_eq!(event.items[0].source, "docs");
    assert!(event.items[0].score.unwrap() > 0.0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_search_tool_answers_with_cited_passages_for_the_runs_tenant_only() {
    let (model, shared) = scripted([
        ScriptedTurn::tool_call("search_knowledge", json!({"query": "VPN password"})),
        ScriptedTurn::text("Monthly [1]."),
        ScriptedTurn::tool_call("search_knowledge", json!({"query": "VPN password"})),
        ScriptedTurn::text("Nothing found."),
    ]);
    let agent = Agent::builder()
        .model(shared)
        .knowledge(
            KnowledgeSource::inline("handbook").tenant("acme").document("vpn.md", "The VPN password rotates monthly."),
        )
        .knowledge(KnowledgeSource::inline("public").document("hours.md", "The office opens at nine."))
        .build()
        .unwrap();
    assert!(agent.tools().iter().any(|t| t.name == "search_knowledge"));
    agent.run(RunRequest::new("VPN?").user("acme")).await.unwrap();
    agent.run(RunRequest::new("VPN?").user("globex")).await.unwrap();
    let requests = model.requests();
    let tool_result = |i: usize| requests[i].messages.last().unwrap().text();
    let acme = tool_result(1);
    assert!(acme.contains("[1] vpn.md:1 (handbook)\nThe VPN password rotates monthly."), "{acme}");
    let globex = tool_result(3);
    assert!(!globex.contains("rotates"), "another tenant's knowledge: {globex}");
}

#[tokio::test]
async fn a_tenants_knowledge_is_its_users_knowledge_and_no_one_elses() {
    let knowledge = Knowledge::in_memory().source(
        KnowledgeSource::inline("handbook").tenant("acme").document("vpn.md", "The VPN password rotates monthly."),
    );
    let hits = |tenant: &'static str| {
        let k = &knowledge;
        async move { k.resolve(&KnowledgeQuery::new("VPN password").top_k(5).tenant(tenant)).await.unwrap().len() }
    };
    assert_eq!(hits("acme").await, 1);
    assert_eq!(hits("acme/alice").await, 1, "a user of the tenant, as loom serve names them");
    for other in ["acme2", "acme2/alice", "acm", "", "globex/acme", "acme-x/y"] {
        assert_eq!(hits(other).await, 0, "`{other}` saw acme's knowledge");
    }
}

#[tokio::test]
async fn dynamic_sources_are_fused_with_indexed_ones() {
    let knowledge = Knowledge::in_memory()
        .source(KnowledgeSource::inline("faq").document("refunds", "Refunds are paid within 14 days."))
        .source(KnowledgeSource::from_fn("status", |query: KnowledgeQuery| async move {
            if query.tenant == "acme" {
                Ok(vec![
                    Passage::new("ignored", "status page", "Refunds are delayed today.")
                        .uri("https://status.example/1")
                        .location(Location { page: Some(2), ..Location::default() }),
                ])
            } else {
                Ok(Vec::new())
            }
        }))
        .source(KnowledgeSource::from_fn("broken", |_q: KnowledgeQuery| async move {
            Err::<Vec<Passage>, _>(Error::Config("down".into()))
        }));
    let bundle = knowledge.resolve(&KnowledgeQuery::new("refunds").top_k(5).tenant("acme")).await.unwrap();
    let cited: Vec<String> = bundle.passages.iter().map(|p| format!("{} {}", p.source, p.citation())).collect();
    assert_eq!(cited.len(), 2, "{cited:?}");
    assert!(cited.contains(&"status status page p. 2".to_string()), "{cited:?}");
    assert!(cited.contains(&"faq refunds:1".to_string()), "{cited:?}");
    let rendered = bundle.render();
    assert!(rendered.contains("(status) https://status.example/1\nRefunds are delayed today."), "{rendered}");
    let only = knowledge.resolve(&KnowledgeQuery::new("refunds").top_k(5).sources(["faq"])).await.unwrap();
    assert_eq!(only.len(), 1);
    assert!(knowledge.resolve(&KnowledgeQuery::new("refunds").top_k(0)).await.unwrap().is_empty());
}

#[tokio::test]
async fn knowledge_is_indexed_into_the_memory_stores_file() {
    let db = temp_db();
    let agent = Agent::builder()
        .model("echo")
        .memory(format!("sqlite:{}", db.display()))
        .knowledge(KnowledgeSource::inline("faq").document("refunds", "Refunds are paid within 14 days."))
        .build()
        .unwrap();
    let reports = agent.knowledge().unwrap().index().await.unwrap();
    assert_eq!((reports[0].indexed, reports[0].chunks), (1, 1));
    let conn = rusqlite::Connection::open(&db).unwrap();
    let n: i64 =
        conn.query_row("SELECT COUNT(*) FROM loom_kn_chunks WHERE collection = 'faq'", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 1);
    drop(conn);
    remove_db(&db);
}

#[tokio::test]
async fn configuration_errors_are_reported() {
    let agent = Agent::builder().model("echo").build().unwrap();
    assert!(agent.knowledge().is_none());
    let err = agent.resolve_knowledge(KnowledgeQuery::new("x")).await.unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    let err = Agent::builder()
        .model("echo")
        .knowledge(KnowledgeSource::inline("faq"))
        .knowledge(KnowledgeSource::inline("faq"))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("two knowledge sources are named `faq`"), "{err}");
    // A directory that does not exist fails the query, naming the source.
    let missing = Knowledge::in_memory().source(KnowledgeSource::directory("/nonexistent/loom-docs").named("gone"));
    let err = missing.resolve(&KnowledgeQuery::new("x")).await.unwrap_err();
    assert!(err.to_string().contains("gone"), "{err}");
}

#[cfg(unix)]
#[tokio::test]
async fn hostile_directories_are_read_safely() {
    let outside = docs_dir(&[("secret.txt", b"TOPSECRET outside the tree")]);
    let dir = docs_dir(&[
        ("ok.md", b"Plain notes about kites."),
        ("latin1.txt", b"caf\xe9 au lait, kites"),
        ("binary.txt", b"kites\0\x01\x02"),
        ("huge.txt", &vec![b'k'; 5000]),
    ]);
    std::os::unix::fs::symlink(outside.join("secret.txt"), dir.join("link.txt")).unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("linkdir")).unwrap();
    std::os::unix::fs::symlink(dir.join("ok.md"), dir.join("inside.md")).unwrap();
    let status = std::process::Command::new("mkfifo").arg(dir.join("pipe.txt")).status().unwrap();
    assert!(status.success());
    let source = KnowledgeSource::directory(&dir)
        .named("notes")
        .directory_options(DirectoryOptions { max_file_bytes: 1000, ..DirectoryOptions::default() });
    let knowledge = Knowledge::in_memory().source(source);
    let reports = within(20, "indexing a hostile directory", knowledge.index()).await.unwrap();
    let r = &reports[0];
    let reason = |path: &str| r.skipped.iter().find(|s| s.path == path).map(|s| s.reason.clone());
    assert!(reason("link.txt").unwrap().contains("out of the directory"), "{r:?}");
    assert!(reason("pipe.txt").unwrap().contains("not a regular file"), "{r:?}");
    assert!(reason("huge.txt").unwrap().contains("over the cap"), "{r:?}");
    assert!(reason("binary.txt").unwrap().contains("binary"), "{r:?}");
    assert_eq!(r.indexed, 3, "ok.md, latin1.txt and the link inside the tree: {r:?}");
    let bundle = knowledge.resolve(&KnowledgeQuery::new("kites TOPSECRET").top_k(10)).await.unwrap();
    let docs: Vec<&str> = bundle.passages.iter().map(|p| p.document.as_str()).collect();
    assert!(docs.contains(&"latin1.txt") && docs.contains(&"ok.md") && docs.contains(&"inside.md"), "{docs:?}");
    assert!(bundle.passages.iter().all(|p| !p.text.contains("TOPSECRET")), "{bundle:?}");
    let latin = bundle.passages.iter().find(|p| p.document == "latin1.txt").unwrap();
    assert_eq!(latin.text, "caf\u{fffd} au lait, kites");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&outside);
}

/// A minimal PDF with one page per text (Helvetica, one line each), with a correct cross-reference
/// table.
#[cfg(feature = "pdf")]
fn tiny_pdf(pages: &[&str]) -> Vec<u8> {
    let n = pages.len();
    // Objects: 1 catalog, 2 pages, 3 font, then per page: page, contents.
    let mut objects: Vec<String> = Vec::new();
    objects.push("<< /Type /Catalog /Pages 2 0 R >>".into());
    let kids: Vec<String> = (0..n).map(|i| format!("{} 0 R", 4 + 2 * i)).collect();
    objects.push(format!("<< /Type /Pages /Kids [{}] /Count {n} >>", kids.join(" ")));
    objects.push("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>".into());
    for (i, text) in pages.iter().enumerate() {
        objects.push(format!(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> /Contents {} 0 R >>",
            5 + 2 * i
        ));
        let stream = format!("BT /F1 12 Tf 72 720 Td ({text}) Tj ET");
        objects.push(format!("<< /Length {} >>\nstream\n{stream}\nendstream", stream.len()));
    }
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{body}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes());
    for o in offsets {
        out.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!("trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n", objects.len() + 1).as_bytes(),
    );
    out
}

#[cfg(feature = "pdf")]
#[tokio::test]
async fn pdf_pages_are_indexed_and_cited_by_page() {
    let pdf = tiny_pdf(&["Welcome to the manual.", "The reset button is behind the panel."]);
    let dir = docs_dir(&[("manual.pdf", &pdf), ("broken.pdf", b"%PDF-1.4 not really")]);
    let knowledge = Knowledge::in_memory().source(KnowledgeSource::directory(&dir).named("manuals"));
    let r = &knowledge.index().await.unwrap()[0];
    assert_eq!(r.indexed, 1, "{r:?}");
    assert!(r.skipped.iter().any(|s| s.path == "broken.pdf" && s.reason.contains("PDF")), "{r:?}");
    let bundle = knowledge.resolve(&KnowledgeQuery::new("reset button").top_k(1)).await.unwrap();
    let p = &bundle.passages[0];
    assert!(p.text.contains("reset button"), "{p:?}");
    assert_eq!(p.location.page, Some(2));
    assert!(p.citation().starts_with("manual.pdf p. 2"), "{}", p.citation());
    let _ = std::fs::remove_dir_all(&dir);
}
