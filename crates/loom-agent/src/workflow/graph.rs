//! A workflow's graph: its checks and its Mermaid export.

use std::fmt::Write as _;

use super::{END, Edge, NodeKind, Workflow, WorkflowState};
use crate::error::Error;

/// Checks that the graph has a start node and that every edge joins known nodes.
pub(super) fn check<S>(wf: &Workflow<S>) -> Result<(), Error> {
    let bad = |m: String| Err(Error::Config(format!("workflow `{}`: {m}", wf.name)));
    let Some(start) = &wf.start else { return bad("no start node".into()) };
    if !wf.nodes.contains_key(start) {
        return bad(format!("the start node `{start}` is not a node"));
    }
    if wf.max_steps == 0 {
        return bad("max_steps is 0".into());
    }
    let known = |n: &str| n == END || wf.nodes.contains_key(n);
    for (from, edge) in &wf.edges {
        if !wf.nodes.contains_key(from) {
            return bad(format!("an edge leaves `{from}`, which is not a node"));
        }
        let targets: Vec<&String> = match edge {
            Edge::To(to) => vec![to],
            Edge::Branch { targets, .. } => {
                if targets.is_empty() {
                    return bad(format!("the branch after `{from}` has no targets"));
                }
                targets.iter().collect()
            }
            Edge::FanOut { branches, join, .. } => {
                if branches.is_empty() {
                    return bad(format!("the fan-out after `{from}` has no branches"));
                }
                if branches.iter().any(|b| b == END) {
                    return bad(format!("a branch of the fan-out after `{from}` is the end"));
                }
                branches.iter().chain(std::iter::once(join)).collect()
            }
        };
        if let Some(unknown) = targets.into_iter().find(|t| !known(t)) {
            return bad(format!("an edge from `{from}` goes to `{unknown}`, which is not a node"));
        }
    }
    for kind in wf.nodes.values() {
        if let NodeKind::Sub(sub) = kind {
            check(sub)?;
        }
    }
    Ok(())
}

impl<S: WorkflowState> Workflow<S> {
    /// The graph as a Mermaid flowchart: nodes (agents as rounded boxes, sub-workflows as
    /// subroutines), edges (a router's labelled with its targets, a fan-out's and its join's
    /// dotted).
    pub fn to_mermaid(&self) -> String {
        let mut out = String::from("flowchart TD\n");
        let id = |n: &str| if n == END { "__end__".to_string() } else { format!("n_{}", sanitize(n)) };
        let _ = writeln!(out, "    __start__([start])");
        let _ = writeln!(out, "    __end__([end])");
        for name in &self.order {
            let shape = match self.nodes.get(name) {
                Some(NodeKind::Agent { .. }) => format!("(\"{name}\")"),
                Some(NodeKind::Sub(_)) => format!("[[\"{name}\"]]"),
                _ => format!("[\"{name}\"]"),
            };
            let _ = writeln!(out, "    {}{shape}", id(name));
        }
        if let Some(start) = &self.start {
            let _ = writeln!(out, "    __start__ --> {}", id(start));
        }
        let branch_nodes: Vec<&String> = self
            .edges
            .values()
            .filter_map(|e| match e {
                Edge::FanOut { branches, .. } => Some(branches.iter()),
                _ => None,
            })
            .flatten()
            .collect();
        for from in &self.order {
            match self.edges.get(from) {
                // A fan-out's branch goes on at its join.
                None if branch_nodes.contains(&from) => {}
                None => {
                    let _ = writeln!(out, "    {} --> __end__", id(from));
                }
                Some(Edge::To(to)) => {
                    let _ = writeln!(out, "    {} --> {}", id(from), id(to));
                }
                Some(Edge::Branch { targets, .. }) => {
                    for t in targets {
                        let _ = writeln!(out, "    {} -.->|{}| {}", id(from), label(t), id(t));
                    }
                }
                Some(Edge::FanOut { branches, join, .. }) => {
                    for b in branches {
                        let _ = writeln!(out, "    {} ==> {}", id(from), id(b));
                        let _ = writeln!(out, "    {} ==>|join| {}", id(b), id(join));
                    }
                }
            }
        }
        out
    }
}

fn label(target: &str) -> String {
    if target == END { "end".to_string() } else { target.replace('|', "/") }
}

fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}
