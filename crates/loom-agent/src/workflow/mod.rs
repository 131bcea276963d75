//! Workflows: a graph of nodes (an async function, an agent, a sub-workflow) and edges (static,
//! conditional by a router function, fan-out to parallel branches joined when all are done), with
//! loops bounded by a cap and a typed state (serde) passed from node to node.
//!
//! A workflow runs as a run (see [`WorkflowAgent`]): the same events, budget, journal and audit,
//! listed by `loom runs` like any run. Each node's completion is a journal boundary, so a workflow
//! whose process died resumes at the first unfinished node and completed nodes do not run again.
//! An agent node's run is a child run of the workflow's.

mod graph;
mod run;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::agent::Agent;
use crate::error::Error;

pub use run::{WorkflowAgent, final_state};

/// The node name that ends a workflow (an edge to it, or a router answering it).
pub const END: &str = "__end__";

/// What a workflow's state must be: cloned for parallel branches, serialized into the journal at
/// every node's completion.
pub trait WorkflowState: Clone + Serialize + DeserializeOwned + Send + Sync + 'static {}

impl<T: Clone + Serialize + DeserializeOwned + Send + Sync + 'static> WorkflowState for T {}

type NodeFn<S> = dyn Fn(S) -> BoxFuture<'static, Result<S, String>> + Send + Sync;
type PromptFn<S> = dyn Fn(&S) -> String + Send + Sync;
type ApplyFn<S> = dyn Fn(S, String) -> S + Send + Sync;
type RouteFn<S> = dyn Fn(&S) -> String + Send + Sync;
type MergeFn<S> = dyn Fn(S, Vec<S>) -> S + Send + Sync;

pub(crate) enum NodeKind<S> {
    Func(Arc<NodeFn<S>>),
    Agent { agent: Agent, prompt: Arc<PromptFn<S>>, apply: Arc<ApplyFn<S>> },
    Sub(Arc<Workflow<S>>),
}

pub(crate) enum Edge<S> {
    To(String),
    Branch { targets: Vec<String>, route: Arc<RouteFn<S>> },
    FanOut { branches: Vec<String>, join: String, merge: Arc<MergeFn<S>> },
}

/// A workflow: nodes, edges, a start node and a cap on node executions.
///
/// ```
/// use loom_agent::workflow::{END, Workflow};
///
/// let wf = Workflow::<u32>::new("count")
///     .node("inc", |n: u32| async move { Ok(n + 1) })
///     .start("inc")
///     .branch("inc", ["inc", END], |n: &u32| if *n < 3 { "inc".into() } else { END.into() })
///     .build()?;
/// assert!(wf.to_mermaid().contains("inc"));
/// # Ok::<(), loom_agent::Error>(())
/// ```
pub struct Workflow<S> {
    pub(crate) name: String,
    pub(crate) nodes: HashMap<String, NodeKind<S>>,
    pub(crate) order: Vec<String>,
    pub(crate) edges: HashMap<String, Edge<S>>,
    pub(crate) start: Option<String>,
    pub(crate) max_steps: u32,
}

impl<S: WorkflowState> Workflow<S> {
    /// An empty workflow called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Workflow {
            name: name.into(),
            nodes: HashMap::new(),
            order: Vec::new(),
            edges: HashMap::new(),
            start: None,
            max_steps: 100,
        }
    }

    /// The workflow's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn add(mut self, name: impl Into<String>, kind: NodeKind<S>) -> Self {
        let name = name.into();
        if !self.nodes.contains_key(&name) {
            self.order.push(name.clone());
        }
        self.nodes.insert(name, kind);
        self
    }

    /// A node that runs an async function on the state and returns the new state (`Err` fails
    /// the workflow with that message).
    pub fn node<F, Fut>(self, name: impl Into<String>, f: F) -> Self
    where
        F: Fn(S) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<S, String>> + Send + 'static,
    {
        let f: Arc<NodeFn<S>> = Arc::new(move |s| Box::pin(f(s)));
        self.add(name, NodeKind::Func(f))
    }

    /// A node that runs `agent` as a child run on the prompt `prompt` makes from the state, and
    /// folds its answer into the state with `apply`.
    pub fn agent_node(
        self,
        name: impl Into<String>,
        agent: Agent,
        prompt: impl Fn(&S) -> String + Send + Sync + 'static,
        apply: impl Fn(S, String) -> S + Send + Sync + 'static,
    ) -> Self {
        self.add(name, NodeKind::Agent { agent, prompt: Arc::new(prompt), apply: Arc::new(apply) })
    }

    /// A node that runs another workflow on the state (its nodes are journaled under this one).
    pub fn workflow_node(self, name: impl Into<String>, workflow: Workflow<S>) -> Self {
        self.add(name, NodeKind::Sub(Arc::new(workflow)))
    }

    /// The first node.
    pub fn start(mut self, node: impl Into<String>) -> Self {
        self.start = Some(node.into());
        self
    }

    /// After `from`, go to `to` (a node, or [`END`]).
    pub fn edge(mut self, from: impl Into<String>, to: impl Into<String>) -> Self {
        self.edges.insert(from.into(), Edge::To(to.into()));
        self
    }

    /// After `from`, go where `route` says given the state: one of `targets` (nodes or [`END`]).
    /// An edge back to an earlier node makes a loop, bounded by [`Workflow::max_steps`].
    pub fn branch<I, T>(
        mut self,
        from: impl Into<String>,
        targets: I,
        route: impl Fn(&S) -> String + Send + Sync + 'static,
    ) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        let targets = targets.into_iter().map(Into::into).collect();
        self.edges.insert(from.into(), Edge::Branch { targets, route: Arc::new(route) });
        self
    }

    /// After `from`, run `branches` in parallel, each on a copy of the state; when all are done
    /// (AND-join), `merge` folds their states (in the order given) into the state, and the
    /// workflow goes on at `join`.
    ///
    /// A branch is one node; a branch of several nodes is a [`Workflow::workflow_node`], whose
    /// nodes run one after another while the other branches run. Each node of each branch is a
    /// journal boundary: a resumed run does not run again what any branch completed.
    pub fn fan_out<I, T>(
        mut self,
        from: impl Into<String>,
        branches: I,
        join: impl Into<String>,
        merge: impl Fn(S, Vec<S>) -> S + Send + Sync + 'static,
    ) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        let branches = branches.into_iter().map(Into::into).collect();
        self.edges.insert(from.into(), Edge::FanOut { branches, join: join.into(), merge: Arc::new(merge) });
        self
    }

    /// The most node executions in one run (100 by default): a loop that goes on longer stops the
    /// run, interrupted (`max_turns`).
    pub fn max_steps(mut self, max: u32) -> Self {
        self.max_steps = max;
        self
    }

    /// Checks the graph: a start node, every edge from and to a known node (or [`END`]).
    ///
    /// # Errors
    /// [`Error::Config`] saying what is wrong.
    pub fn build(self) -> Result<Self, Error> {
        graph::check(&self)?;
        Ok(self)
    }
}

impl<S> fmt::Debug for Workflow<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Workflow")
            .field("name", &self.name)
            .field("nodes", &self.order)
            .field("start", &self.start)
            .field("max_steps", &self.max_steps)
            .finish_non_exhaustive()
    }
}
