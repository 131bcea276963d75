//! A workflow: function, agent and sub-workflow nodes; a fan-out to parallel branches joined when
//! both are done; a review loop bounded by a cap; typed state passed between nodes. It runs as a
//! durable run (a SQLite journal here): each node's completion is a journal boundary, so a
//! workflow whose process died resumes at its first unfinished node. Prints its Mermaid graph.
//!
//! Runs offline on a scripted model.

use loom_agent::model::{ScriptedModel, ScriptedTurn};
use loom_agent::prelude::*;
use loom_agent::workflow::{END, Workflow};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Article {
    topic: String,
    notes: Vec<String>,
    draft: String,
    revisions: u32,
}

#[tokio::main]
async fn main() -> Result<(), loom_agent::Error> {
    let writer = Agent::builder()
        .name("writer")
        .model(ScriptedModel::new([ScriptedTurn::text("Rust makes systems programming safe.")]))
        .build()?;
    let review = Workflow::<Article>::new("review")
        .node("revise", |mut a: Article| async move {
            a.revisions += 1;
            a.draft.push_str(" (revised)");
            Ok(a)
        })
        .start("revise")
        .branch("revise", ["revise", END], |a: &Article| if a.revisions < 2 { "revise".into() } else { END.into() })
        .build()?;
    let workflow = Workflow::<Article>::new("article")
        .node("outline", |mut a: Article| async move {
            a.notes.push(format!("outline: {}", a.topic));
            Ok(a)
        })
        .node("facts", |mut a: Article| async move {
            a.notes = vec!["fact: no data races".into()];
            Ok(a)
        })
        .node("examples", |mut a: Article| async move {
            a.notes = vec!["example: ownership".into()];
            Ok(a)
        })
        .agent_node(
            "write",
            writer,
            |a: &Article| format!("Write one sentence about {} using {:?}.", a.topic, a.notes),
            |mut a, answer| {
                a.draft = answer;
                a
            },
        )
        .workflow_node("review", review)
        .start("outline")
        .fan_out("outline", ["facts", "examples"], "write", |mut base: Article, branches: Vec<Article>| {
            for b in branches {
                base.notes.extend(b.notes);
            }
            base
        })
        .edge("write", "review")
        .edge("review", END)
        .max_steps(20)
        .build()?;
    println!("{}", workflow.to_mermaid());

    let dir = std::env::temp_dir().join(format!("loom-workflow-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| loom_agent::Error::Config(e.to_string()))?;
    let journal = format!("sqlite:{}", dir.join("loom.db").display());
    let runner = workflow.into_agent(Agent::builder().name("article").journal(journal.as_str()))?;
    let (article, result) = runner.run(Article { topic: "Rust".into(), ..Article::default() }).await?;
    for event in result.events.iter() {
        if let EventKind::WorkflowNode(node) = &event.kind {
            println!("{} #{} {}", node.node, node.visit, node.status);
        }
    }
    println!("notes: {:?}", article.notes);
    println!("draft: {}", article.draft);
    assert_eq!(article.revisions, 2);
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}
