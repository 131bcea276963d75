//! ReWOO (reasoning without observation): one planning call names every tool call up front, with
//! placeholders `#E1`, `#E2`, … for earlier results; the tools run with no model call in between;
//! one solving call answers from the plan and the evidence.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{HashMap, HashSet};

use super::support::{structured, tool_list, unusable};
use super::{Architecture, RunCx};
use crate::error::RunError;
use crate::event::{EventKind, PlanCreated, PlanStepEvent, PlanStepInfo, PlanStepStatus};
use crate::message::{Message, ToolCall};
use crate::run::Artifact;
use crate::runtime::ModelCall;

/// ReWOO: a planning call (structured output, no tools, kept out of the conversation) lists the
/// tool calls to make, each with an id `E1`, `E2`, … whose arguments may hold `#E1`-style
/// placeholders for earlier results; the plan is a `plan.created` event and a `plan` artifact.
/// The tool calls then run in order through the run's tool pipeline (permissions, hooks, journal,
/// events) with no model call in between, placeholders replaced by the results (`plan.step`
/// events). A failed call's error is its evidence. Last, one call without tools answers the
/// request from the plan and the evidence. Three model calls' worth of turns at least: the plan,
/// the solution, and nothing else.
///
/// ```
/// use loom_agent::architecture::ReWoo;
/// use loom_agent::prelude::*;
///
/// # fn main() -> Result<(), loom_agent::Error> {
/// let agent = Agent::builder().model("echo").architecture(ReWoo::new().max_steps(4)).build()?;
/// # let _ = agent;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug)]
pub struct ReWoo {
    max_steps: usize,
}

impl Default for ReWoo {
    fn default() -> Self {
        ReWoo { max_steps: 8 }
    }
}

impl ReWoo {
    /// Eight tool calls per plan at most.
    pub fn new() -> Self {
        Self::default()
    }

    /// The most tool calls one plan may make (default 8); a longer plan is unusable.
    pub fn max_steps(mut self, n: usize) -> Self {
        self.max_steps = n.max(1);
        self
    }
}

/// A ReWOO plan, as the model writes it.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "ToolPlan")]
struct ToolPlan {
    /// The tool calls, in the order they run.
    steps: Vec<ToolStep>,
}

/// One planned tool call.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
struct ToolStep {
    /// "E1" for the first step, "E2" for the second, …
    id: String,
    /// Why this call: what it finds out.
    plan: String,
    /// The tool's name.
    tool: String,
    /// The tool's arguments; a string may contain "#E1" (and so on) for an earlier step's result.
    #[serde(default)]
    arguments: Value,
}

const PLAN: &str = "Plan how to answer the request above with the tools below, without seeing any result yet. \
                    List the tool calls to make, in order; give each an id E1, E2, …, say why it is made, and \
                    give its arguments. An argument may use the result of an earlier call by writing its id with \
                    a hash, such as #E1. Do not answer the request yet.\nTools:\n";

#[async_trait::async_trait]
impl Architecture for ReWoo {
    fn name(&self) -> &str {
        "rewoo"
    }

    async fn run(&self, cx: &mut RunCx) -> Result<String, RunError> {
        let prompt = format!("{PLAN}{}", tool_list(cx));
        let plan = structured::<ToolPlan>(cx, prompt).await?.map_err(|e| unusable("rewoo", "plan", &e))?;
        check(&plan, self.max_steps).map_err(|e| unusable("rewoo", "plan", &e))?;
        let plan_turn = cx.turn();
        show_plan(cx, &plan);
        let mut evidence: HashMap<String, String> = HashMap::new();
        for step in &plan.steps {
            cx.emit(EventKind::PlanStep(PlanStepEvent {
                revision: 1,
                id: step.id.clone(),
                status: PlanStepStatus::Started,
                output: None,
            }));
            let arguments = substitute(&step.arguments, &evidence);
            // Unique in the run and the same on every execution: a resumed run finds the result.
            let call = ToolCall { id: format!("rewoo_{plan_turn}_{}", step.id), name: step.tool.clone(), arguments };
            let result = cx.call_tools(std::slice::from_ref(&call)).await?;
            let (content, is_error) = result.into_iter().next().map(|r| (r.content, r.is_error)).unwrap_or_default();
            let status = if is_error { PlanStepStatus::Failed } else { PlanStepStatus::Completed };
            cx.emit(EventKind::PlanStep(PlanStepEvent {
                revision: 1,
                id: step.id.clone(),
                status,
                output: Some(content.clone()),
            }));
            evidence.insert(step.id.clone(), content);
        }
        let mut solve = String::from(
            "Here are a plan for the request above and the evidence its tool calls returned. Use them to give the \
             final answer to the request.",
        );
        for step in &plan.steps {
            let found = evidence.get(&step.id).map(String::as_str).unwrap_or_default();
            solve.push_str(&format!(
                "\nPlan: {}\n#{} = {}[{}]\nEvidence: {}",
                step.plan, step.id, step.tool, step.arguments, found
            ));
        }
        cx.check_max_turns()?;
        let answer = cx.model_call(ModelCall::new().message(Message::user(solve)).without_tools()).await?;
        Ok(answer.text)
    }
}

/// Checks the plan: at least one step, not too many, ids unique, placeholders only for earlier
/// steps.
fn check(plan: &ToolPlan, max_steps: usize) -> Result<(), String> {
    if plan.steps.is_empty() {
        return Err("it has no steps".to_string());
    }
    if plan.steps.len() > max_steps {
        return Err(format!("it has {} steps; at most {max_steps} are allowed", plan.steps.len()));
    }
    let mut earlier: HashSet<&str> = HashSet::new();
    for step in &plan.steps {
        let text = step.arguments.to_string();
        for (_, id) in placeholders(&text) {
            if !earlier.contains(id) {
                return Err(format!("step `{}` uses #{id}, which is not an earlier step", step.id));
            }
        }
        if !earlier.insert(step.id.as_str()) {
            return Err(format!("two steps have the id `{}`", step.id));
        }
    }
    Ok(())
}

/// The placeholders in `text`: (byte range of `#En`, `En`). A placeholder is `#E` and digits, not
/// followed by a letter, digit or `_`.
fn placeholders(text: &str) -> Vec<(std::ops::Range<usize>, &str)> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i + 2 < bytes.len() {
        if bytes[i] == b'#' && bytes[i + 1] == b'E' && bytes[i + 2].is_ascii_digit() {
            let mut end = i + 2;
            while end < bytes.len() && bytes[end].is_ascii_digit() {
                end += 1;
            }
            let word = bytes.get(end).is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_');
            if !word {
                found.push((i..end, &text[i + 1..end]));
            }
            i = end;
        } else {
            i += 1;
        }
    }
    found
}

/// `text` with each placeholder replaced by its step's result (unknown ones stay as written).
fn replace_placeholders(text: &str, evidence: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (range, id) in placeholders(text) {
        if let Some(value) = evidence.get(id) {
            out.push_str(&text[last..range.start]);
            out.push_str(value);
            last = range.end;
        }
    }
    out.push_str(&text[last..]);
    out
}

/// The arguments as JSON text with every `#En` in a string replaced by step `En`'s result.
fn substitute(arguments: &Value, evidence: &HashMap<String, String>) -> String {
    fn walk(v: &Value, evidence: &HashMap<String, String>) -> Value {
        match v {
            Value::String(s) => Value::String(replace_placeholders(s, evidence)),
            Value::Array(items) => Value::Array(items.iter().map(|i| walk(i, evidence)).collect()),
            Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), walk(v, evidence))).collect()),
            other => other.clone(),
        }
    }
    let arguments = if arguments.is_null() { Value::Object(Default::default()) } else { walk(arguments, evidence) };
    arguments.to_string()
}

fn show_plan(cx: &RunCx, plan: &ToolPlan) {
    let steps = plan
        .steps
        .iter()
        .map(|s| PlanStepInfo {
            id: s.id.clone(),
            description: s.plan.clone(),
            depends_on: placeholders(&s.arguments.to_string()).into_iter().map(|(_, id)| id.to_string()).collect(),
            tool: Some(s.tool.clone()),
            arguments: Some(s.arguments.clone()),
        })
        .collect();
    cx.emit(EventKind::PlanCreated(PlanCreated { revision: 1, steps }));
    cx.add_artifact(Artifact {
        id: "plan".to_string(),
        name: "plan".to_string(),
        media_type: "application/json".to_string(),
        content: serde_json::to_string_pretty(plan).unwrap_or_default(),
        call_id: None,
    });
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn placeholders_are_replaced_in_strings_only_and_checked() {
        let evidence = HashMap::from([("E1".to_string(), "Paris".to_string()), ("E10".to_string(), "x".to_string())]);
        let args = json!({"q": "weather in #E1", "n": 3, "list": ["#E10", "#E2"]});
        let out: Value = serde_json::from_str(&substitute(&args, &evidence)).unwrap();
        assert_eq!(out, json!({"q": "weather in Paris", "n": 3, "list": ["x", "#E2"]}));
        assert_eq!(replace_placeholders("#E1_ #E1x #E1, #E", &evidence), "#E1_ #E1x Paris, #E");
        let step =
            |id: &str, args: Value| ToolStep { id: id.into(), plan: String::new(), tool: "t".into(), arguments: args };
        let ok = ToolPlan { steps: vec![step("E1", json!({})), step("E2", json!({"q": "#E1"}))] };
        assert!(check(&ok, 8).is_ok());
        let forward = ToolPlan { steps: vec![step("E1", json!({"q": "#E2"})), step("E2", json!({}))] };
        assert!(check(&forward, 8).unwrap_err().contains("not an earlier step"));
        assert!(check(&ok, 1).unwrap_err().contains("at most 1"));
        assert!(check(&ToolPlan { steps: vec![] }, 8).is_err());
    }
}
