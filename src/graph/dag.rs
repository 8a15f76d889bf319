//! The execution plan as a petgraph DAG, for `planrun plan --format dot|mermaid` and
//! for checking the order: phases meet at barrier nodes, so edges stay linear.

use petgraph::graph::{DiGraph, NodeIndex};

use crate::graph::types::{ExecutionPlan, GraphNode, StepInstance, StepRef};

/// The DAG of an execution plan: Start → before → BeforeDone → batch 1 → BatchDone(0) →
/// … → after → End. Edges are linear in the number of instances: phases meet at single
/// barrier nodes, never host × host.
impl ExecutionPlan {
    /// The same instances as a DAG, for `plan --format dot|mermaid`. Built on demand:
    /// nothing else needs it, and at 100,000 hosts it is 400,000 nodes.
    pub fn graph(&self) -> DiGraph<GraphNode, ()> {
        dag(self)
    }
}

pub(crate) fn dag(plan: &ExecutionPlan) -> DiGraph<GraphNode, ()> {
    let instances =
        plan.before.len() + plan.after.len() + plan.batches.iter().map(|b| b.hosts.len() * 4).sum::<usize>();
    let mut g = DiGraph::with_capacity(instances + plan.batches.len() + 3, instances * 2);
    let start = g.add_node(GraphNode::Start);
    let mut gate = chain_list(&mut g, &plan.before, start, plan.hosts.len(), StepRef::Before);
    if !plan.before.is_empty() {
        let done = g.add_node(GraphNode::BeforeDone);
        for n in gate {
            g.add_edge(n, done, ());
        }
        gate = vec![done];
    }
    for batch in &plan.batches {
        let done = g.add_node(GraphNode::BatchDone(batch.index));
        for (hi, host) in batch.hosts.iter().enumerate() {
            let mut prev = gate.clone();
            for si in 0..host.steps.len() {
                let n = g.add_node(GraphNode::Step(StepRef::Rollout(batch.index, hi, si)));
                for p in prev {
                    g.add_edge(p, n, ());
                }
                prev = vec![n];
            }
            for p in prev {
                g.add_edge(p, done, ());
            }
        }
        gate = vec![done];
    }
    let last = chain_list(&mut g, &plan.after, gate[0], plan.hosts.len(), StepRef::After);
    let end = g.add_node(GraphNode::End);
    for n in last {
        g.add_edge(n, end, ());
    }
    g
}

/// Nodes for a `before`/`after` list after `gate`: each host's instances chain in list
/// order; a `local` step waits for every host's chain and gates everything after it.
/// Returns the nodes whose completion ends the list.
fn chain_list(
    g: &mut DiGraph<GraphNode, ()>,
    instances: &[StepInstance],
    gate: NodeIndex,
    hosts: usize,
    at: fn(usize) -> StepRef,
) -> Vec<NodeIndex> {
    let mut gate = gate;
    let mut last: Vec<Option<NodeIndex>> = vec![None; hosts];
    let mut touched: Vec<usize> = Vec::new();
    for (i, instance) in instances.iter().enumerate() {
        let n = g.add_node(GraphNode::Step(at(i)));
        match instance.host {
            Some(h) => {
                let prev = match last[h] {
                    Some(p) => p,
                    None => {
                        touched.push(h);
                        gate
                    }
                };
                g.add_edge(prev, n, ());
                last[h] = Some(n);
            }
            None => {
                if touched.is_empty() {
                    g.add_edge(gate, n, ());
                }
                for h in touched.drain(..) {
                    if let Some(p) = last[h].take() {
                        g.add_edge(p, n, ());
                    }
                }
                gate = n;
            }
        }
    }
    if touched.is_empty() { vec![gate] } else { touched.iter().filter_map(|&h| last[h]).collect() }
}
