//! The criteria judge: one model call (the agent's model, or its judge) that checks a final answer
//! against acceptance criteria and returns a structured verdict per criterion. Each round is
//! journaled, so a resumed run takes a finished round's verdict from the journal instead of judging
//! again. The gate around it (feedback, rounds, how the run ends) is the driver's.

use serde_json::{Value, json};

use super::context::RunCx;
use crate::error::{RunError, RunErrorKind};
use crate::event::{CriteriaChecked, EventKind};
use crate::message::{Message, Usage};
use crate::model::Generation;
use crate::output::OutputSchema;
use crate::run::CriterionVerdict;
use crate::store::JournalEntry;

/// The judge's instructions.
pub(crate) const JUDGE_PROMPT: &str = "You are a strict reviewer. You receive a task, the answer an AI agent gave, and \
numbered acceptance criteria. For each criterion decide whether the answer meets it, using only what the task and the \
answer show. Give a short reason for each verdict, naming what is missing when a criterion fails.";

/// The verdict's JSON schema.
fn verdict_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "verdicts": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "criterion": {"type": "integer", "description": "the criterion's number, from 1"},
                        "passed": {"type": "boolean"},
                        "reason": {"type": "string"}
                    },
                    "required": ["criterion", "passed", "reason"],
                    "additionalProperties": false
                }
            }
        },
        "required": ["verdicts"],
        "additionalProperties": false
    })
}

/// The judge's request: its instructions (with the schema when the model has no native structured
/// output) and the task, answer and criteria.
pub(crate) fn judge_messages(
    task: &str,
    answer: &str,
    criteria: &[String],
    schema: Option<&OutputSchema>,
) -> [Message; 2] {
    let mut system = JUDGE_PROMPT.to_string();
    if let Some(schema) = schema {
        system.push_str("\n\n");
        system.push_str(&schema.directive());
    }
    let mut user = format!("Task:\n{task}\n\nAnswer:\n{answer}\n\nAcceptance criteria:");
    for (i, c) in criteria.iter().enumerate() {
        user.push_str(&format!("\n{}. {c}", i + 1));
    }
    [Message::system(system), Message::user(user)]
}

/// The verdicts the judge's value gives, one per criterion in order; a criterion the judge left
/// out fails.
fn verdicts_of(value: &Value, criteria: &[String]) -> Vec<CriterionVerdict> {
    let given = value.get("verdicts").and_then(Value::as_array).cloned().unwrap_or_default();
    criteria
        .iter()
        .enumerate()
        .map(|(i, criterion)| {
            let found = given.iter().find(|v| v.get("criterion").and_then(Value::as_u64) == Some(i as u64 + 1));
            match found {
                Some(v) => CriterionVerdict {
                    criterion: criterion.clone(),
                    passed: v.get("passed").and_then(Value::as_bool).unwrap_or(false),
                    reason: v.get("reason").and_then(Value::as_str).unwrap_or_default().to_string(),
                },
                None => CriterionVerdict {
                    criterion: criterion.clone(),
                    passed: false,
                    reason: "the judge gave no verdict on this criterion".into(),
                },
            }
        })
        .collect()
}

impl RunCx {
    /// Judges `answer` against `criteria` as round `round`: the journaled verdict when a resumed
    /// run already judged it, else a judge call. Emits `criteria.checked`.
    pub(crate) async fn judge_criteria(
        &mut self,
        round: u32,
        criteria: &[String],
        answer: &str,
    ) -> Result<Vec<CriterionVerdict>, RunError> {
        let (verdicts, usage, live) = match self.recorder.criteria(round) {
            Some((verdicts, usage)) => (verdicts, usage, false),
            None => {
                let (verdicts, usage) = self.judge(criteria, answer).await?;
                (verdicts, usage, true)
            }
        };
        let passed = verdicts.iter().all(|v| v.passed);
        self.log.emit(EventKind::CriteriaChecked(CriteriaChecked { round, verdicts: verdicts.clone(), passed, usage }));
        if live {
            let entry_verdicts = verdicts.clone();
            self.recorder.record(|| JournalEntry::CriteriaChecked { round, verdicts: entry_verdicts, usage }).await?;
        }
        Ok(verdicts)
    }

    /// One judge call.
    async fn judge(&mut self, criteria: &[String], answer: &str) -> Result<(Vec<CriterionVerdict>, Usage), RunError> {
        let model = self.env.judge.clone().unwrap_or_else(|| self.env.model.clone());
        let schema = OutputSchema::new("criteria_verdict", verdict_schema())
            .map_err(|e| RunError::new(RunErrorKind::Internal, format!("the verdict schema: {e}")))?;
        let native = model.capabilities().native_structured_output;
        let task = self.log.input().to_message().text();
        let messages = judge_messages(&task, answer, criteria, (!native).then_some(&schema));
        let generation = Generation { temperature: Some(0.0), ..Generation::default() };
        let response = self.side_call(&model, &messages, native.then_some(schema.schema()), &generation).await?;
        let value = schema.parse(&response.text).map_err(|problem| {
            let mut e = RunError::new(
                RunErrorKind::Model,
                format!("the criteria judge's answer is not a valid verdict: {problem}"),
            );
            e.raw_output = Some(response.text.clone());
            e
        })?;
        Ok((verdicts_of(&value, criteria), response.usage))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_verdict_fails_and_numbers_map_to_criteria() {
        let criteria = vec!["a".to_string(), "b".to_string()];
        let v = verdicts_of(&json!({"verdicts": [{"criterion": 2, "passed": true, "reason": "ok"}]}), &criteria);
        assert!(!v[0].passed);
        assert_eq!(v[0].criterion, "a");
        assert_eq!(v[1], CriterionVerdict { criterion: "b".into(), passed: true, reason: "ok".into() });
    }
}
