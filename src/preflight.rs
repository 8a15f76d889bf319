//! Pre-flight: before anything changes, read every balancer's view of the nodes the
//! rollout will take out, and refuse a run that would leave too few nodes serving.
//!
//! The budget: while batch k is out, the nodes out of rotation are batch k's, plus those
//! already out (or down) before the run that no earlier batch put back, plus the pool's
//! other nodes that are out. That must not exceed batch k's size, and at least one node
//! of the pool must stay in rotation and up. `read` asks the balancers; `judge` applies
//! these rules and prints nothing: the caller shows the verdict, refuses (exit 1, like a
//! pre-flight connection failure: the plan is valid, the fleet is not ready for it) or,
//! with `--force`, goes on loudly.
//!
//! Every read is read-only, so `--dry-run` runs this too: a wrong label, port or node
//! is found before a real run.

use std::collections::{BTreeSet, HashMap};

use indexmap::IndexMap;

use crate::balancer::{Balancers, NodeRef, NodeState, Rotation, Status};
use crate::graph::{Action, ExecutionPlan};
use crate::model::{BatchSize, BatchStep};

/// What the balancers said about the rollout's nodes, before anything changed.
pub struct View {
    balancers: Vec<BalancerView>,
}

struct BalancerView {
    name: String,
    /// Node → (index of the batch that takes it out, how to read it).
    nodes: IndexMap<String, (usize, NodeRef)>,
    /// In `nodes` order; `None` when the read did not finish.
    states: Vec<Option<Result<NodeState, String>>>,
    /// The whole pool, where the balancer can list it.
    pool: Option<Result<Vec<(String, NodeState)>, String>>,
}

/// What pre-flight found: the lines of the balancers' view (for the operator and the
/// journal), and why the run must not go on (empty when it may).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Nodes the view covers; 0 when the plan has no balancer steps.
    pub nodes: usize,
    pub lines: Vec<String>,
    pub problems: Vec<String>,
    /// A balancer could not be read: the refusal is about reaching it, not the budget.
    pub unreadable: bool,
}

/// Reads every balancer's view of the nodes the rollout's balancer steps name, and of the
/// rest of their pools. Read-only. `whole` is the plan before `--limit` and a resume
/// trimmed it: for kinds that cannot list their pool (`command`, `http`), the pool is
/// every node the whole plan names.
pub async fn read(exec: &ExecutionPlan, whole: &ExecutionPlan, balancers: &Balancers) -> View {
    let used = balancer_nodes(exec);
    let mut view = View { balancers: Vec::with_capacity(used.len()) };
    let mut named_by_whole = balancer_nodes(whole);
    for (name, nodes) in used {
        // One listing answers for every node it names (one `show stat` before each batch,
        // not one per node); only the nodes it does not name are read one by one.
        let listed = balancers.pool(&name).await;
        let from_listing: Vec<Option<NodeState>> = match &listed {
            Some(Ok(list)) => nodes.keys().map(|n| list.iter().find(|(l, _)| l == n).map(|(_, s)| s.clone())).collect(),
            _ => vec![None; nodes.len()],
        };
        let states: Vec<Option<Result<NodeState, String>>> = match &listed {
            // A balancer that cannot list its pool cannot be read node by node either: the
            // listing's error stands for every node, said once by `judge`.
            Some(Err(e)) => vec![Some(Err(e.clone())); nodes.len()],
            _ => {
                let unlisted: Vec<NodeRef> = nodes
                    .values()
                    .zip(&from_listing)
                    .filter(|(_, s)| s.is_none())
                    .map(|((_, n), _)| n.clone())
                    .collect();
                let mut read = read_states(balancers, &name, unlisted).await.into_iter();
                from_listing.into_iter().map(|s| s.map(Ok).or_else(|| read.next().flatten())).collect()
            }
        };
        let pool = match listed {
            Some(pool) => Some(pool),
            None => {
                let others: Vec<NodeRef> = named_by_whole
                    .swap_remove(&name)
                    .unwrap_or_default()
                    .into_values()
                    .map(|(_, n)| n)
                    .filter(|n| !nodes.contains_key(&n.node))
                    .collect();
                if others.is_empty() {
                    None
                } else {
                    let names: Vec<String> = others.iter().map(|n| n.node.clone()).collect();
                    let read = read_states(balancers, &name, others).await;
                    let mut pool = Vec::with_capacity(read.len());
                    let mut failure = None;
                    for (node, state) in names.into_iter().zip(read) {
                        match state {
                            Some(Ok(state)) => pool.push((node, state)),
                            Some(Err(e)) => failure = Some(format!("{node}: {e}")),
                            None => failure = Some(format!("{node}: the read did not finish")),
                        }
                    }
                    Some(failure.map_or(Ok(pool), Err))
                }
            }
        };
        view.balancers.push(BalancerView { name, nodes, states, pool });
    }
    view
}

/// Each node's state, read side by side (a fleet of hundreds must not take minutes),
/// in the order given.
async fn read_states(balancers: &Balancers, name: &str, nodes: Vec<NodeRef>) -> Vec<Option<Result<NodeState, String>>> {
    let mut reads = tokio::task::JoinSet::new();
    let count = nodes.len();
    for (i, node) in nodes.into_iter().enumerate() {
        let (balancers, name) = (balancers.clone(), name.to_string());
        reads.spawn(async move { (i, balancers.state(&name, &Status::of(&node)).await) });
    }
    let mut states: Vec<Option<Result<NodeState, String>>> = vec![None; count];
    while let Some(Ok((i, state))) = reads.join_next().await {
        states[i] = Some(state);
    }
    states
}

/// Per balancer: every node a balancer step names → (the batch that takes it out, how to
/// read it).
fn balancer_nodes(exec: &ExecutionPlan) -> IndexMap<String, IndexMap<String, (usize, NodeRef)>> {
    let mut used: IndexMap<String, IndexMap<String, (usize, NodeRef)>> = IndexMap::new();
    for batch in &exec.batches {
        for host in &batch.hosts {
            for step in &host.steps {
                if let Action::Balancer { balancer, node, status_command, status_request, .. } = &step.action {
                    let entry = used.entry(balancer.clone()).or_default();
                    entry.entry(node.clone()).or_insert_with(|| {
                        let node_ref = NodeRef {
                            balancer: balancer.clone(),
                            node: node.clone(),
                            host: Some(exec.hosts[host.host].name.clone()),
                            status_command: status_command.clone(),
                            status_request: status_request.as_deref().cloned(),
                        };
                        (batch.index, node_ref)
                    });
                }
            }
        }
    }
    used
}

/// Judges the view against the batch budget. Pure: the rules live here, tested alone.
pub fn judge(view: &View, exec: &ExecutionPlan, size: &BatchSize) -> Verdict {
    let mut verdict = Verdict { nodes: view.balancers.iter().map(|b| b.nodes.len()).sum(), ..Verdict::default() };
    let (lines, problems) = (&mut verdict.lines, &mut verdict.problems);
    for BalancerView { name: balancer, nodes, states, pool } in &view.balancers {
        let mut out_before: HashMap<&str, usize> = HashMap::new();
        let mut healthy: BTreeSet<String> = BTreeSet::new();
        for ((node, (batch, _)), state) in nodes.iter().zip(states) {
            let label = name_of(nodes, node);
            match state {
                Some(Ok(state)) => {
                    lines.push(format!("  {balancer}: {label}: {}", state.describe()));
                    if state.serves_no_traffic() {
                        out_before.insert(node.as_str(), *batch);
                    } else {
                        healthy.insert(node.clone());
                    }
                }
                Some(Err(e)) if matches!(pool, Some(Err(listing)) if listing == e) => {
                    lines.push(format!("  {balancer}: {label}: cannot read (the pool cannot be listed)"));
                }
                Some(Err(e)) => {
                    lines.push(format!("  {balancer}: {label}: cannot read: {e}"));
                    problems.push(format!("cannot read `{balancer}`'s view of {label}: {e}"));
                    verdict.unreadable = true;
                }
                None => {
                    problems.push(format!("the read of {label} from `{balancer}` did not finish"));
                    verdict.unreadable = true;
                }
            }
        }
        // Nodes of the pool the rollout does not visit still count: out ones use up room,
        // healthy ones keep serving.
        let mut others_out = Vec::new();
        match pool {
            Some(Ok(pool)) => {
                for (node, state) in pool {
                    if nodes.contains_key(node) {
                        continue;
                    }
                    if state.serves_no_traffic() {
                        lines.push(format!("  {balancer}: {node} (not in this rollout): {}", state.describe()));
                        others_out.push(node.clone());
                    } else {
                        healthy.insert(node.clone());
                    }
                }
            }
            Some(Err(e)) => {
                problems.push(format!("cannot list `{balancer}`'s nodes: {e}"));
                verdict.unreadable = true;
            }
            None => {}
        }

        for batch in &exec.batches {
            let cap = capacity(size, batch.index, exec.hosts.len()).max(batch.hosts.len());
            let in_batch: BTreeSet<&str> =
                nodes.iter().filter(|(_, (b, _))| *b == batch.index).map(|(n, _)| n.as_str()).collect();
            // Already-out nodes of earlier batches were put back by their own batch.
            let still_out: BTreeSet<&str> = out_before
                .iter()
                .filter(|(n, b)| **b >= batch.index && !in_batch.contains(*n))
                .map(|(n, _)| *n)
                .collect();
            let out = in_batch.len() + still_out.len() + others_out.len();
            let already: Vec<String> =
                still_out.iter().map(|n| name_of(nodes, n)).chain(others_out.iter().cloned()).collect();
            if out > cap && !already.is_empty() {
                problems.push(format!(
                    "`{balancer}`: batch {} would have {out} nodes out of rotation, more than its batch size {cap}, \
                     because {} {} already out of rotation or down",
                    batch.index + 1,
                    already.join(", "),
                    if already.len() == 1 { "is" } else { "are" }
                ));
                break;
            }
            if !healthy.is_empty() && healthy.iter().all(|n| in_batch.contains(n.as_str())) {
                let names: Vec<String> = in_batch.iter().map(|n| name_of(nodes, n)).collect();
                problems.push(format!(
                    "`{balancer}`: batch {} would take out the last healthy node{} ({}), leaving none to serve",
                    batch.index + 1,
                    if names.len() == 1 { "" } else { "s" },
                    names.join(", ")
                ));
                break;
            }
        }
        if healthy.is_empty() && !nodes.is_empty() && states.iter().all(|s| matches!(s, Some(Ok(_)))) {
            let all_unknown = states.iter().flatten().flatten().all(|s| s.rotation == Rotation::Unknown);
            if !all_unknown {
                problems.push(format!("`{balancer}`: no node is in rotation and up"));
            }
        }
    }
    verdict
}

/// The budget rule at run time, before batch `index` starts: every node of each balancer
/// that serves no traffic now — left out by a failed host, out before the run, fallen
/// over since — plus the batch's own nodes must fit the batch's size. `Some(why)` when
/// the batch must not start, naming the nodes.
pub fn judge_batch(view: &View, exec: &ExecutionPlan, size: &BatchSize, index: usize) -> Option<String> {
    let batch = exec.batches.iter().find(|b| b.index == index)?;
    let cap = capacity(size, batch.index, exec.hosts.len()).max(batch.hosts.len());
    for BalancerView { name: balancer, nodes, states, pool } in &view.balancers {
        let mut not_serving: BTreeSet<String> = BTreeSet::new();
        for ((node, _), state) in nodes.iter().zip(states) {
            match state {
                Some(Ok(state)) if state.serves_no_traffic() => {
                    not_serving.insert(name_of(nodes, node));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    return Some(format!(
                        "before batch {}: cannot read `{balancer}`'s view of {}: {e}",
                        index + 1,
                        name_of(nodes, node)
                    ));
                }
                None => {
                    return Some(format!(
                        "before batch {}: the read of {} from `{balancer}` did not finish",
                        index + 1,
                        name_of(nodes, node)
                    ));
                }
            }
        }
        match pool {
            Some(Ok(pool)) => {
                for (node, state) in pool {
                    if !nodes.contains_key(node) && state.serves_no_traffic() {
                        not_serving.insert(format!("{node} (not in this rollout)"));
                    }
                }
            }
            Some(Err(e)) => return Some(format!("before batch {}: cannot list `{balancer}`'s nodes: {e}", index + 1)),
            None => {}
        }
        let in_batch: BTreeSet<String> =
            nodes.iter().filter(|(_, (b, _))| *b == index).map(|(n, _)| name_of(nodes, n)).collect();
        let already: Vec<&String> = not_serving.difference(&in_batch).collect();
        let out = in_batch.len() + already.len();
        if out > cap {
            let names: Vec<&str> = already.iter().map(|s| s.as_str()).collect();
            return Some(format!(
                "batch {} of {} not started: it would have {out} nodes of `{balancer}` out of rotation, more than its \
                 batch size {cap}, because {} {} out of rotation or down",
                index + 1,
                exec.batches.len(),
                names.join(", "),
                if names.len() == 1 { "is" } else { "are" }
            ));
        }
    }
    None
}

fn name_of(nodes: &IndexMap<String, (usize, NodeRef)>, node: &str) -> String {
    match nodes.get(node).and_then(|(_, r)| r.host.as_deref()) {
        Some(host) if host != node => format!("{host} ({node})"),
        Some(host) => host.to_string(),
        None => node.to_string(),
    }
}

/// How many nodes batch `index` may have out: its ramp entry, before the last batch's
/// rounding down to what is left.
pub fn capacity(size: &BatchSize, index: usize, hosts: usize) -> usize {
    let ramp: &[BatchStep] = match size {
        BatchSize::One(step) => std::slice::from_ref(step),
        BatchSize::Ramp(steps) => steps,
    };
    ramp.get(index.min(ramp.len().saturating_sub(1))).map_or(1, |s| s.hosts(hosts)).max(1)
}

/// How long the summary waits for each node's state.
const SUMMARY_READ: std::time::Duration = std::time::Duration::from_secs(2);

/// For the summary of a run that did not succeed: every node a balancer step touched,
/// as its balancer sees it now, so nobody has to guess which are still out.
pub async fn touched_states(balancers: &Balancers) -> String {
    let touched = balancers.touched();
    if touched.is_empty() {
        return String::new();
    }
    let mut out = String::from("  balancer state of the nodes this run touched:\n");
    for node in &touched {
        let label = match node.host.as_deref() {
            Some(h) if h != node.node => format!("{h} ({})", node.node),
            Some(h) => h.to_string(),
            None => node.node.clone(),
        };
        // A balancer that stopped answering must not hold the summary up for long.
        let state = match tokio::time::timeout(SUMMARY_READ, balancers.state(&node.balancer, &Status::of(node))).await {
            Ok(Ok(s)) => s.describe(),
            Ok(Err(e)) => format!("cannot read: {e}"),
            Err(_) => format!("cannot read: no answer within {}", humantime::format_duration(SUMMARY_READ)),
        };
        out.push_str(&format!("    {}: {label}: {state}\n", node.balancer));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{ROLLING, build};

    fn node(host: &str) -> NodeRef {
        NodeRef {
            balancer: "pool".into(),
            node: host.into(),
            host: Some(host.into()),
            status_command: None,
            status_request: None,
        }
    }

    fn state(serving: bool) -> Option<Result<NodeState, String>> {
        let rotation = if serving { Rotation::In } else { Rotation::Out };
        Some(Ok(NodeState { rotation, up: Some(serving), connections: None, detail: "test".into() }))
    }

    /// The pool of `build`'s plan: h1, h2, h3 in batches 1, 2, 3, serving as given, and
    /// the rest of the pool (nodes outside the rollout) as listed.
    fn view(serving: [bool; 3], others: Option<Vec<(&str, bool)>>) -> View {
        let nodes: IndexMap<String, (usize, NodeRef)> =
            ["h1", "h2", "h3"].iter().enumerate().map(|(i, h)| (h.to_string(), (i, node(h)))).collect();
        let pool = others.map(|others| {
            Ok(others
                .into_iter()
                .map(|(n, serving)| (n.to_string(), state(serving).unwrap().unwrap()))
                .chain(nodes.keys().zip(serving).map(|(n, s)| (n.clone(), state(s).unwrap().unwrap())))
                .collect())
        });
        View {
            balancers: vec![BalancerView {
                name: "pool".into(),
                nodes,
                states: serving.iter().map(|s| state(*s)).collect(),
                pool,
            }],
        }
    }

    fn one() -> BatchSize {
        BatchSize::One("1".parse().unwrap())
    }

    #[test]
    fn a_healthy_pool_passes() {
        let dir = tempfile::tempdir().unwrap();
        let exec = build(dir.path(), ROLLING);
        let verdict = judge(&view([true; 3], None), &exec, &one());
        assert_eq!(verdict.problems, Vec::<String>::new());
        assert_eq!(verdict.nodes, 3);
        assert_eq!(verdict.lines[0], "  pool: h1: in rotation (test)");
    }

    #[test]
    fn a_node_already_out_leaves_no_room_in_a_batch_of_one() {
        let dir = tempfile::tempdir().unwrap();
        let exec = build(dir.path(), ROLLING);
        let verdict = judge(&view([true, true, false], None), &exec, &one());
        assert_eq!(
            verdict.problems,
            [
                "`pool`: batch 1 would have 2 nodes out of rotation, more than its batch size 1, because h3 is already out of rotation or down"
            ]
        );
    }

    #[test]
    fn the_last_healthy_node_is_never_taken_out() {
        let dir = tempfile::tempdir().unwrap();
        let exec = build(dir.path(), ROLLING);
        let verdict = judge(&view([true, false, false], None), &exec, &BatchSize::One("3".parse().unwrap()));
        assert_eq!(
            verdict.problems,
            ["`pool`: batch 1 would take out the last healthy node (h1), leaving none to serve"]
        );
    }

    #[test]
    fn a_failed_host_left_out_stops_the_next_batch() {
        let dir = tempfile::tempdir().unwrap();
        let exec = build(dir.path(), ROLLING);
        // h1 failed and stayed out; batch 2 would take h2 out beside it.
        let refused = judge_batch(&view([false, true, true], None), &exec, &one(), 1);
        assert_eq!(
            refused.as_deref(),
            Some(
                "batch 2 of 3 not started: it would have 2 nodes of `pool` out of rotation, more than its batch size 1, because h1 is out of rotation or down"
            )
        );
        // Its own node being out already (a resumed host) is not counted twice.
        assert_eq!(judge_batch(&view([true, false, true], None), &exec, &one(), 1), None);
    }

    #[test]
    fn a_pool_node_outside_the_rollout_that_fell_over_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let exec = build(dir.path(), ROLLING);
        let down = view([true; 3], Some(vec![("other", false)]));
        let refused = judge_batch(&down, &exec, &one(), 2).unwrap();
        assert!(refused.contains("because other (not in this rollout) is out of rotation or down"), "{refused}");
        assert_eq!(judge_batch(&view([true; 3], Some(vec![("other", true)])), &exec, &one(), 2), None);
    }
}
