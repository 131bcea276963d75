//! Tree of thoughts: a breadth-limited search over lines of reasoning, each level expanded by the
//! model and scored by the model, the best line turned into the answer.

use schemars::JsonSchema;
use serde::Deserialize;

use super::support::{structured, unusable};
use super::{Architecture, RunCx};
use crate::error::RunError;
use crate::event::{EventKind, ThoughtScored};
use crate::message::Message;
use crate::runtime::ModelCall;

/// Tree of thoughts, for problems where the caller asks for a search: at each of
/// [`TreeOfThoughts::depth`] levels, every line of reasoning kept so far is expanded by one call
/// (structured output, no tools) into up to [`TreeOfThoughts::branching`] next thoughts; one call
/// scores all the level's candidates (0 to 10), and the best [`TreeOfThoughts::breadth`] stay
/// (ties keep the earlier candidate). Each candidate is a `thought.scored` event. Last, one call
/// without tools answers the request along the best line. Calls: per level, one per kept line
/// and one to score, then one for the answer; none of them but the answer joins the
/// conversation.
///
/// ```
/// use loom_agent::architecture::TreeOfThoughts;
/// use loom_agent::prelude::*;
///
/// # fn main() -> Result<(), loom_agent::Error> {
/// let search = TreeOfThoughts::new().breadth(2).depth(3).branching(3);
/// let agent = Agent::builder().model("echo").architecture(search).build()?;
/// # let _ = agent;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug)]
pub struct TreeOfThoughts {
    breadth: usize,
    depth: u32,
    branching: usize,
}

impl Default for TreeOfThoughts {
    fn default() -> Self {
        TreeOfThoughts { breadth: 2, depth: 2, branching: 3 }
    }
}

impl TreeOfThoughts {
    /// Breadth 2, depth 2, branching 3.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many lines of reasoning stay after each level (default 2; at least 1).
    pub fn breadth(mut self, n: usize) -> Self {
        self.breadth = n.max(1);
        self
    }

    /// How many levels of thoughts (default 2; at least 1).
    pub fn depth(mut self, n: u32) -> Self {
        self.depth = n.max(1);
        self
    }

    /// How many next thoughts one expansion asks for (default 3; at least 1).
    pub fn branching(mut self, n: usize) -> Self {
        self.branching = n.max(1);
        self
    }
}

/// Next thoughts, as the model writes them.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(title = "Thoughts")]
struct Thoughts {
    /// Different possible next steps of reasoning, each short.
    thoughts: Vec<String>,
}

/// Scores, as the model writes them.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(title = "Scores")]
struct Scores {
    /// One score per candidate, in order, from 0 (useless) to 10 (solves the request).
    scores: Vec<f64>,
}

/// A line of reasoning.
#[derive(Clone, Debug)]
struct Line {
    id: String,
    thoughts: Vec<String>,
    score: f64,
}

fn numbered(thoughts: &[String]) -> String {
    let mut out = String::new();
    for (i, t) in thoughts.iter().enumerate() {
        out.push_str(&format!("\n{}. {}", i + 1, t.trim()));
    }
    out
}

#[async_trait::async_trait]
impl Architecture for TreeOfThoughts {
    fn name(&self) -> &str {
        "tree_of_thoughts"
    }

    async fn run(&self, cx: &mut RunCx) -> Result<String, RunError> {
        let mut frontier = vec![Line { id: String::new(), thoughts: Vec::new(), score: 0.0 }];
        for depth in 1..=self.depth {
            let mut candidates: Vec<(Option<String>, Line)> = Vec::new();
            for line in &frontier {
                let prompt = if line.thoughts.is_empty() {
                    format!(
                        "Think about the request above. Propose up to {} different first steps of reasoning toward \
                         solving it, each one short. Do not answer yet.",
                        self.branching
                    )
                } else {
                    format!(
                        "Think about the request above. The reasoning so far:{}\nPropose up to {} different next \
                         steps of reasoning that continue it, each one short. Do not answer yet.",
                        numbered(&line.thoughts),
                        self.branching
                    )
                };
                let next = structured::<Thoughts>(cx, prompt)
                    .await?
                    .map_err(|e| unusable("tree_of_thoughts", "thoughts", &e))?;
                for (k, thought) in next.thoughts.into_iter().take(self.branching).enumerate() {
                    let id = if line.id.is_empty() { format!("{}", k + 1) } else { format!("{}.{}", line.id, k + 1) };
                    let mut thoughts = line.thoughts.clone();
                    thoughts.push(thought);
                    let parent = (!line.id.is_empty()).then(|| line.id.clone());
                    candidates.push((parent, Line { id, thoughts, score: 0.0 }));
                }
            }
            if candidates.is_empty() {
                break;
            }
            let mut prompt = String::from(
                "Rate how promising each line of reasoning below is for solving the request above, from 0 (useless) \
                 to 10 (solves it). Give one score per candidate, in order.",
            );
            for (i, (_, line)) in candidates.iter().enumerate() {
                prompt.push_str(&format!("\n\nCandidate {}:{}", i + 1, numbered(&line.thoughts)));
            }
            let scores =
                structured::<Scores>(cx, prompt).await?.map_err(|e| unusable("tree_of_thoughts", "scores", &e))?.scores;
            if scores.len() != candidates.len() {
                let problem = format!("{} scores for {} candidates", scores.len(), candidates.len());
                return Err(unusable("tree_of_thoughts", "scores", &problem));
            }
            let mut ranked: Vec<usize> = (0..candidates.len()).collect();
            ranked.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
            ranked.truncate(self.breadth);
            for (i, (parent, line)) in candidates.iter_mut().enumerate() {
                line.score = scores[i];
                cx.emit(EventKind::ThoughtScored(ThoughtScored {
                    depth,
                    id: line.id.clone(),
                    parent: parent.clone(),
                    thought: line.thoughts.last().cloned().unwrap_or_default(),
                    score: scores[i],
                    kept: ranked.contains(&i),
                }));
            }
            frontier = ranked.iter().map(|&i| candidates[i].1.clone()).collect();
        }
        let best = frontier.first().map(|l| l.thoughts.as_slice()).unwrap_or_default();
        let prompt = format!(
            "The most promising line of reasoning for the request above:{}\nFollow it and give the final answer to \
             the request.",
            numbered(best)
        );
        cx.check_max_turns()?;
        let answer = cx.model_call(ModelCall::new().message(Message::user(prompt)).without_tools()).await?;
        Ok(answer.text)
    }
}
