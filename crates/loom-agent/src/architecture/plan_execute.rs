//! Plan and execute: the model writes a plan as structured output (steps with dependencies), each
//! step is carried out with tools in dependency order, a failed step leads to a new plan for the
//! remaining work, and a last call gives the answer.

use std::collections::HashSet;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::support::{react_episode, structured, tool_list};
use super::{Architecture, RunCx};
use crate::error::{RunError, RunErrorKind};
use crate::event::{EventKind, PlanCreated, PlanStepEvent, PlanStepInfo, PlanStepStatus};
use crate::message::Message;
use crate::run::Artifact;
use crate::runtime::ModelCall;

/// Plan, then execute: one planning call (structured output, no tools) makes a plan of steps with
/// dependencies, shown as a `plan.created` event and a `plan-N` artifact. Each step, in dependency
/// order, is a user message on the conversation followed by model turns and tool calls until an
/// answer (`plan.step` events before and after). An answer starting with `FAILED` fails the step;
/// a failed step or an unusable plan leads to a re-plan for the remaining work, up to
/// [`PlanExecute::max_replans`] times, then the run fails (kind `model`). When every step is done,
/// one call without tools gives the final answer.
///
/// ```
/// use loom_agent::architecture::PlanExecute;
/// use loom_agent::prelude::*;
///
/// # fn main() -> Result<(), loom_agent::Error> {
/// let agent = Agent::builder().model("echo").architecture(PlanExecute::new().max_replans(1)).build()?;
/// # let _ = agent;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug)]
pub struct PlanExecute {
    max_replans: u32,
    max_steps: usize,
}

impl Default for PlanExecute {
    fn default() -> Self {
        PlanExecute { max_replans: 2, max_steps: 12 }
    }
}

impl PlanExecute {
    /// Two re-plans at most, twelve steps per plan at most.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many times a failed plan is replaced (default 2).
    pub fn max_replans(mut self, n: u32) -> Self {
        self.max_replans = n;
        self
    }

    /// The most steps one plan may have (default 12); a longer plan is unusable.
    pub fn max_steps(mut self, n: usize) -> Self {
        self.max_steps = n.max(1);
        self
    }
}

/// A plan, as the model writes it.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "Plan")]
pub(crate) struct Plan {
    /// The steps, in a sensible order.
    pub(crate) steps: Vec<Step>,
}

/// One step of a plan.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub(crate) struct Step {
    /// A short unique id, such as "1".
    pub(crate) id: String,
    /// What to do in this step.
    pub(crate) description: String,
    /// Ids of the steps that must be done first.
    #[serde(default)]
    pub(crate) depends_on: Vec<String>,
}

/// A step that is done, and its result.
struct Done {
    id: String,
    description: String,
    result: String,
}

#[async_trait::async_trait]
impl Architecture for PlanExecute {
    fn name(&self) -> &str {
        "plan_execute"
    }

    async fn run(&self, cx: &mut RunCx) -> Result<String, RunError> {
        let mut done: Vec<Done> = Vec::new();
        let mut problem: Option<String> = None;
        let mut revision = 0u32;
        loop {
            revision += 1;
            if revision > self.max_replans + 1 {
                let why = problem.unwrap_or_default();
                return Err(RunError::new(
                    RunErrorKind::Model,
                    format!(
                        "plan_execute: no plan succeeded after {} re-plan(s); the last problem: {why}",
                        self.max_replans
                    ),
                ));
            }
            let prompt = plan_prompt(cx, &done, problem.as_deref());
            let plan = match structured::<Plan>(cx, prompt).await? {
                Ok(plan) => plan,
                Err(e) => {
                    problem = Some(format!("the plan did not match its schema: {e}"));
                    continue;
                }
            };
            let order = match order(&plan, &done, self.max_steps) {
                Ok(order) => order,
                Err(e) => {
                    problem = Some(format!("the plan is not usable: {e}"));
                    continue;
                }
            };
            show_plan(cx, revision, &plan);
            problem = None;
            for index in order {
                let step = &plan.steps[index];
                let started =
                    PlanStepEvent { revision, id: step.id.clone(), status: PlanStepStatus::Started, output: None };
                cx.emit(EventKind::PlanStep(started));
                cx.messages.push(Message::user(format!(
                    "Step {} of the plan: {}\nCarry out this step now, using tools if needed, and reply with its result. \
                     If it cannot be done, reply with `FAILED:` and the reason.",
                    step.id, step.description
                )));
                let answer = react_episode(cx).await?.text;
                let failed = answer.trim_start().get(..6).is_some_and(|p| p.eq_ignore_ascii_case("failed"));
                let status = if failed { PlanStepStatus::Failed } else { PlanStepStatus::Completed };
                cx.emit(EventKind::PlanStep(PlanStepEvent {
                    revision,
                    id: step.id.clone(),
                    status,
                    output: Some(answer.clone()),
                }));
                if failed {
                    problem = Some(format!("step {} ({}) failed: {}", step.id, step.description, answer.trim()));
                    break;
                }
                done.push(Done { id: step.id.clone(), description: step.description.clone(), result: answer });
            }
            if problem.is_none() {
                break;
            }
        }
        cx.check_max_turns()?;
        cx.messages.push(Message::user(
            "Every step of the plan is done. Give the final answer to the original request, using the steps' results.",
        ));
        let answer = cx.model_call(ModelCall::new().without_tools()).await?;
        Ok(answer.text)
    }
}

/// The planning instruction: the first plan, or a re-plan after `problem`.
fn plan_prompt(cx: &RunCx, done: &[Done], problem: Option<&str>) -> String {
    let mut prompt = String::new();
    match problem {
        None => prompt.push_str(
            "Make a plan for the request above: the steps to take, each with a short unique id, a description, \
             and the ids of the steps it depends on. Do not carry out the steps yet.",
        ),
        Some(problem) => {
            prompt.push_str("The plan did not work out: ");
            prompt.push_str(problem);
            prompt.push_str(
                "\nMake a new plan for the remaining work only. Its steps may depend on the ids of completed steps.",
            );
        }
    }
    if !done.is_empty() {
        prompt.push_str("\nCompleted steps:");
        for d in done {
            prompt.push_str(&format!("\n- {} ({}): {}", d.id, d.description, d.result.trim()));
        }
    }
    prompt.push_str("\nTools the steps can use:\n");
    prompt.push_str(&tool_list(cx));
    prompt
}

/// The order to run the plan's steps in: dependencies first, otherwise as written. Fails on an
/// empty or too long plan, a repeated id, an unknown dependency or a cycle.
fn order(plan: &Plan, done: &[Done], max_steps: usize) -> Result<Vec<usize>, String> {
    if plan.steps.is_empty() {
        return Err("it has no steps".to_string());
    }
    if plan.steps.len() > max_steps {
        return Err(format!("it has {} steps; at most {max_steps} are allowed", plan.steps.len()));
    }
    let mut ids = HashSet::new();
    for step in &plan.steps {
        if !ids.insert(step.id.as_str()) {
            return Err(format!("two steps have the id `{}`", step.id));
        }
    }
    let mut satisfied: HashSet<&str> = done.iter().map(|d| d.id.as_str()).collect();
    for step in &plan.steps {
        if let Some(dep) = step.depends_on.iter().find(|d| !ids.contains(d.as_str()) && !satisfied.contains(d.as_str()))
        {
            return Err(format!("step `{}` depends on `{dep}`, which is not a step", step.id));
        }
    }
    let mut order = Vec::with_capacity(plan.steps.len());
    let mut placed = vec![false; plan.steps.len()];
    while order.len() < plan.steps.len() {
        let next = (0..plan.steps.len())
            .find(|&i| !placed[i] && plan.steps[i].depends_on.iter().all(|d| satisfied.contains(d.as_str())));
        let Some(i) = next else {
            return Err("its dependencies form a cycle".to_string());
        };
        placed[i] = true;
        satisfied.insert(plan.steps[i].id.as_str());
        order.push(i);
    }
    Ok(order)
}

/// The plan as an event and an artifact.
fn show_plan(cx: &RunCx, revision: u32, plan: &Plan) {
    let steps = plan
        .steps
        .iter()
        .map(|s| PlanStepInfo {
            id: s.id.clone(),
            description: s.description.clone(),
            depends_on: s.depends_on.clone(),
            tool: None,
            arguments: None,
        })
        .collect();
    cx.emit(EventKind::PlanCreated(PlanCreated { revision, steps }));
    cx.add_artifact(Artifact {
        id: format!("plan-{revision}"),
        name: format!("plan (revision {revision})"),
        media_type: "application/json".to_string(),
        content: serde_json::to_string_pretty(plan).unwrap_or_default(),
        call_id: None,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(steps: &[(&str, &[&str])]) -> Plan {
        Plan {
            steps: steps
                .iter()
                .map(|(id, deps)| Step {
                    id: id.to_string(),
                    description: format!("do {id}"),
                    depends_on: deps.iter().map(|d| d.to_string()).collect(),
                })
                .collect(),
        }
    }

    #[test]
    fn orders_dependencies_first_and_refuses_bad_plans() {
        assert_eq!(order(&plan(&[("a", &["b"]), ("b", &[]), ("c", &["a"])]), &[], 12), Ok(vec![1, 0, 2]));
        assert!(order(&plan(&[("a", &["b"]), ("b", &["a"])]), &[], 12).unwrap_err().contains("cycle"));
        assert!(order(&plan(&[("a", &["zz"])]), &[], 12).unwrap_err().contains("not a step"));
        assert!(order(&plan(&[("a", &[]), ("a", &[])]), &[], 12).unwrap_err().contains("two steps"));
        assert!(order(&plan(&[]), &[], 12).unwrap_err().contains("no steps"));
        assert!(order(&plan(&[("a", &[]), ("b", &[])]), &[], 1).unwrap_err().contains("at most 1"));
        let done = [Done { id: "x".into(), description: String::new(), result: String::new() }];
        assert_eq!(order(&plan(&[("a", &["x"])]), &done, 12), Ok(vec![0]));
    }
}
