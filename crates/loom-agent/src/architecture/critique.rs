//! Answer, critique, revise: [`SelfRefine`] (the critic's feedback revises the last answer) and
//! [`Reflexion`] (a failed attempt leaves a lesson; the task is tried again with every lesson so
//! far). The critique is structured output, shown as a `critique` event.

use schemars::JsonSchema;
use serde::Deserialize;

use super::support::{react_episode, structured, unusable};
use super::{Architecture, RunCx};
use crate::error::RunError;
use crate::event::{CritiqueEvent, EventKind};
use crate::message::Message;

/// Self-refine: an answer (model turns and tools, as ReAct), then up to
/// [`SelfRefine::max_rounds`] rounds of a critique (structured output, no tools, kept out of the
/// conversation) and, when it does not pass, a revision with the feedback as a user message. The
/// run ends with the first answer that passes, or with the last revision when the rounds run out
/// (its `critique` event says it did not pass).
///
/// ```
/// use loom_agent::architecture::SelfRefine;
/// use loom_agent::prelude::*;
///
/// # fn main() -> Result<(), loom_agent::Error> {
/// let agent = Agent::builder().model("echo").architecture(SelfRefine::new().max_rounds(2)).build()?;
/// # let _ = agent;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug)]
pub struct SelfRefine {
    max_rounds: u32,
}

impl Default for SelfRefine {
    fn default() -> Self {
        SelfRefine { max_rounds: 3 }
    }
}

impl SelfRefine {
    /// Three critiques at most.
    pub fn new() -> Self {
        Self::default()
    }

    /// The most critiques (default 3; at least 1): one per answer, so at most `n - 1` revisions.
    pub fn max_rounds(mut self, n: u32) -> Self {
        self.max_rounds = n.max(1);
        self
    }
}

/// Reflexion: an attempt at the task (model turns and tools, as ReAct), then an evaluation
/// (structured output, no tools, kept out of the conversation) that either passes it or gives
/// feedback and a lesson for the next attempt. Lessons accumulate: each new attempt gets every
/// lesson so far. Up to [`Reflexion::max_trials`] attempts; the last one is the answer when none
/// passes (its `critique` event says so).
///
/// ```
/// use loom_agent::architecture::Reflexion;
/// use loom_agent::prelude::*;
///
/// # fn main() -> Result<(), loom_agent::Error> {
/// let agent = Agent::builder().model("echo").architecture(Reflexion::new().max_trials(2)).build()?;
/// # let _ = agent;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Reflexion {
    max_trials: u32,
}

impl Default for Reflexion {
    fn default() -> Self {
        Reflexion { max_trials: 3 }
    }
}

impl Reflexion {
    /// Three attempts at most.
    pub fn new() -> Self {
        Self::default()
    }

    /// The most attempts (default 3; at least 1).
    pub fn max_trials(mut self, n: u32) -> Self {
        self.max_trials = n.max(1);
        self
    }
}

/// A critique, as the model writes it.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(title = "Critique")]
struct Critique {
    /// True only when the answer needs no change.
    passed: bool,
    /// A score from 0 (useless) to 10 (perfect).
    #[serde(default)]
    score: Option<f64>,
    /// What is wrong or missing, concretely (or why it passes).
    feedback: String,
}

/// An evaluation of an attempt, with a lesson for the next one.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(title = "Evaluation")]
struct Evaluation {
    /// True only when the answer solves the task.
    passed: bool,
    /// A score from 0 (useless) to 10 (perfect).
    #[serde(default)]
    score: Option<f64>,
    /// What is wrong or missing, concretely (or why it passes).
    feedback: String,
    /// One lesson to apply in the next attempt (empty when it passes).
    #[serde(default)]
    reflection: String,
}

const CRITIQUE: &str = "Critique the last answer above: is it correct, complete and clear for the request? Give \
                        concrete feedback. Set `passed` to true only if it needs no change.";

const EVALUATE: &str = "Evaluate the last attempt above: does it fully and correctly solve the request? Give \
                        concrete feedback, and one lesson (`reflection`) the next attempt should apply. Set \
                        `passed` to true only if it solves the request.";

fn show(cx: &RunCx, round: u32, passed: bool, score: Option<f64>, feedback: &str) {
    cx.emit(EventKind::Critique(CritiqueEvent { round, passed, score, feedback: feedback.to_string() }));
}

#[async_trait::async_trait]
impl Architecture for SelfRefine {
    fn name(&self) -> &str {
        "self_refine"
    }

    async fn run(&self, cx: &mut RunCx) -> Result<String, RunError> {
        let mut answer = react_episode(cx).await?.text;
        for round in 1..=self.max_rounds {
            let critique = structured::<Critique>(cx, CRITIQUE.to_string())
                .await?
                .map_err(|e| unusable("self_refine", "critique", &e))?;
            show(cx, round, critique.passed, critique.score, &critique.feedback);
            if critique.passed || round == self.max_rounds {
                break;
            }
            cx.messages.push(Message::user(format!(
                "Feedback on your answer:\n{}\nRevise your answer accordingly, and reply with the complete revised answer.",
                critique.feedback.trim()
            )));
            answer = react_episode(cx).await?.text;
        }
        Ok(answer)
    }
}

#[async_trait::async_trait]
impl Architecture for Reflexion {
    fn name(&self) -> &str {
        "reflexion"
    }

    async fn run(&self, cx: &mut RunCx) -> Result<String, RunError> {
        let mut lessons: Vec<String> = Vec::new();
        let mut trial = 1;
        loop {
            let answer = react_episode(cx).await?.text;
            let evaluation = structured::<Evaluation>(cx, EVALUATE.to_string())
                .await?
                .map_err(|e| unusable("reflexion", "evaluation", &e))?;
            show(cx, trial, evaluation.passed, evaluation.score, &evaluation.feedback);
            if evaluation.passed || trial == self.max_trials {
                return Ok(answer);
            }
            let lesson = evaluation.reflection.trim();
            lessons.push(if lesson.is_empty() { evaluation.feedback.trim().to_string() } else { lesson.to_string() });
            let mut retry = format!(
                "Your attempt did not pass: {}\nLessons from your attempts so far:",
                evaluation.feedback.trim()
            );
            for (i, lesson) in lessons.iter().enumerate() {
                retry.push_str(&format!("\n{}. {lesson}", i + 1));
            }
            retry.push_str("\nTry the request again from the start, applying these lessons, and reply with the complete new answer.");
            cx.messages.push(Message::user(retry));
            trial += 1;
        }
    }
}
