//! What `planrun plan` prints: the execution plan as text for people, JSON for programs
//! (shape documented in docs/plan-json.md), and Graphviz or Mermaid drawings of the DAG.
//!
//! Everything writes to a `Write` as it goes: a plan of 100,000 hosts is printed, not
//! assembled in memory first.

use std::io::{self, Write};

use petgraph::graph::DiGraph;
use petgraph::visit::EdgeRef;
use serde::Serialize;

use crate::graph::describe::describe;
use crate::graph::{Batch, ExecutionPlan, GraphNode, HostRef, StepInstance, StepRef};
use crate::model::{BatchSize, Plan, TransportKind};
use crate::ssh_settings::{Resolved, Resolver};
// The executor names these here; they live with the step they describe.
pub use crate::graph::describe::{action_line, check_line};
use crate::text::plural;
use crate::validate::LoadedPlan;

/// The version of the JSON shape; bumped only when a field changes meaning or goes away.
pub const JSON_VERSION: u32 = 1;

/// What the preview says about the plan besides the execution plan itself.
#[derive(Debug, Clone)]
pub struct About<'a> {
    /// The plan file as the user named it.
    pub path: &'a str,
    /// The batch size in effect (`--batch-size` or the plan's).
    pub batch_size: &'a BatchSize,
    /// `single_host: skip_balancer` left the balancer steps out.
    pub skipped_balancer: bool,
}

/// The JSON document of `planrun plan --format json`.
#[derive(Serialize)]
struct JsonPlan<'a> {
    version: u32,
    plan: &'a str,
    application: &'a str,
    batch_size: &'a BatchSize,
    skipped_balancer: bool,
    hosts: &'a [HostRef],
    before: &'a [StepInstance],
    batches: &'a [Batch],
    after: &'a [StepInstance],
}

pub fn json(out: &mut impl Write, plan: &ExecutionPlan, about: &About) -> io::Result<()> {
    let doc = JsonPlan {
        version: JSON_VERSION,
        plan: about.path,
        application: &plan.application,
        batch_size: about.batch_size,
        skipped_balancer: about.skipped_balancer,
        hosts: &plan.hosts,
        before: &plan.before,
        batches: &plan.batches,
        after: &plan.after,
    };
    serde_json::to_writer(&mut *out, &doc)?;
    writeln!(out)
}

fn batch_size_text(size: &BatchSize) -> String {
    match size {
        BatchSize::One(s) => format!("batch size {s}"),
        BatchSize::Ramp(steps) => {
            let steps: Vec<String> = steps.iter().map(ToString::to_string).collect();
            format!("batch sizes {}, the last repeating", steps.join(", "))
        }
    }
}

/// The text preview: a header, then `before`, each batch and `after`, one line per step
/// instance in the order they run, with every command rendered.
pub fn text(out: &mut impl Write, plan: &ExecutionPlan, about: &About) -> io::Result<()> {
    let hosts = plan.hosts.len();
    let (fewest, most) = plan
        .batches
        .iter()
        .flat_map(|b| b.hosts.iter().map(|h| h.steps.len()))
        .fold((usize::MAX, 0), |(lo, hi), n| (lo.min(n), hi.max(n)));
    let per_host = if fewest == most || fewest == usize::MAX {
        format!("{} per host", plural(most, "step", "steps"))
    } else {
        format!("{fewest} to {most} steps per host")
    };
    let hosts_text = if about.skipped_balancer {
        format!("{}: balancer steps skipped (single_host: skip_balancer)", plural(hosts, "host", "hosts"))
    } else {
        format!(
            "{} in {} ({})",
            plural(hosts, "host", "hosts"),
            plural(plan.batches.len(), "batch", "batches"),
            batch_size_text(about.batch_size)
        )
    };
    writeln!(out, "plan {}: {}, {hosts_text}, {per_host}", about.path, plan.application)?;

    // One width for every line, so steps line up across batches.
    let name_width = plan.hosts.iter().map(|h| h.name.chars().count()).max().unwrap_or(0).max("local".len());
    let all = plan
        .before
        .iter()
        .chain(&plan.after)
        .chain(plan.batches.iter().flat_map(|b| b.hosts.iter()).flat_map(|h| &h.steps));
    let step_width = all.map(|s| s.step.chars().count()).max().unwrap_or(0);
    let line = |out: &mut dyn Write, s: &StepInstance| -> io::Result<()> {
        let who = s.host.map_or("local", |h| plan.hosts[h].name.as_str());
        writeln!(out, "  {who:name_width$}  {:step_width$}  {}", s.step, describe(s))
    };

    if !plan.before.is_empty() {
        writeln!(
            out,
            "\nbefore (once, before the first batch; `run` steps on every host, {} at a time):",
            plan.fan_out
        )?;
        for s in &plan.before {
            line(out, s)?;
        }
    }
    for batch in &plan.batches {
        let names: Vec<&str> = batch.hosts.iter().map(|h| plan.hosts[h.host].name.as_str()).collect();
        let together = if names.len() > 1 { " (at the same time)" } else { "" };
        writeln!(out, "\nbatch {}: {}{together}", batch.index + 1, names.join(", "))?;
        for host in &batch.hosts {
            if host.steps.is_empty() {
                let name = &plan.hosts[host.host].name;
                writeln!(out, "  {name:name_width$}  (no step applies: every step's `when` leaves it out)")?;
            }
            for s in &host.steps {
                line(out, s)?;
            }
        }
    }
    if !plan.after.is_empty() {
        writeln!(out, "\nafter (once, after the last batch; `run` steps on every host, {} at a time):", plan.fan_out)?;
        for s in &plan.after {
            line(out, s)?;
        }
    }
    Ok(())
}

/// Batches shown in full by [`short`]; a longer rollout shows its first and last ones.
const SHORT_BATCHES: usize = 8;
/// Host names shown per batch by [`short`].
const SHORT_HOSTS: usize = 6;

/// The plan in a few lines, for the question before an apply: the steps before and
/// after, each batch with its hosts, and the steps every host goes through.
pub fn short(plan: &ExecutionPlan) -> String {
    let mut out = format!(
        "plan: `{}` on {} in {}, {}\n",
        plan.application,
        plural(plan.hosts.len(), "host", "hosts"),
        plural(plan.batches.len(), "batch", "batches"),
        plural(plan.step_count(), "step", "steps")
    );
    let phase = |steps: &[StepInstance]| {
        let mut names: Vec<&str> = Vec::new();
        for s in steps {
            if !names.contains(&s.step.as_str()) {
                names.push(&s.step);
            }
        }
        names.join(", ")
    };
    if !plan.before.is_empty() {
        out.push_str(&format!("  before: {}\n", phase(&plan.before)));
    }
    let count = plan.batches.len();
    for (position, batch) in plan.batches.iter().enumerate() {
        if count > SHORT_BATCHES && position == SHORT_BATCHES - 2 {
            out.push_str(&format!("  … {}\n", plural(count - (SHORT_BATCHES - 1), "more batch", "more batches")));
        }
        if count > SHORT_BATCHES && (SHORT_BATCHES - 2..count - 1).contains(&position) {
            continue;
        }
        let names: Vec<&str> = batch.hosts.iter().take(SHORT_HOSTS).map(|h| plan.hosts[h.host].name.as_str()).collect();
        let more = match batch.hosts.len() {
            n if n > SHORT_HOSTS => format!(" and {} more", n - SHORT_HOSTS),
            _ => String::new(),
        };
        out.push_str(&format!("  batch {}/{count}: {}{more}\n", position + 1, names.join(", ")));
    }
    let mut steps: Vec<(usize, &str)> = Vec::new();
    let mut fewer = false;
    let hosts: Vec<_> = plan.batches.iter().flat_map(|b| &b.hosts).collect();
    for host in &hosts {
        for s in &host.steps {
            if !steps.iter().any(|(i, _)| *i == s.index) {
                steps.push((s.index, &s.step));
            }
        }
    }
    steps.sort();
    for host in &hosts {
        fewer |= host.steps.len() < steps.len();
    }
    if !steps.is_empty() {
        let names: Vec<&str> = steps.iter().map(|(_, name)| *name).collect();
        out.push_str(&format!(
            "  each host: {}{}\n",
            names.join(" → "),
            if fewer { " (some hosts skip some: `when`, or done by the run resumed)" } else { "" }
        ));
    }
    if !plan.after.is_empty() {
        out.push_str(&format!("  after: {}\n", phase(&plan.after)));
    }
    out
}

/// `plan --verbose`: for each SSH host, the settings planrun will connect with and
/// where each came from, jump hosts included. Reads the ssh config; connects nowhere.
pub fn ssh_settings(out: &mut impl Write, plan: &Plan, exec: &ExecutionPlan) -> io::Result<()> {
    writeln!(out, "\nssh settings (value, then where it comes from):")?;
    let mut resolver = Resolver::new();
    for host in &exec.hosts {
        let server = &plan.servers[host.server];
        if server.transport == TransportKind::Local {
            writeln!(out, "  {}: local transport, no ssh", host.name)?;
            continue;
        }
        match resolver.resolve(plan, server) {
            Ok(resolved) => {
                writeln!(out, "  {} ({}):", host.name, resolved.target.display_name())?;
                settings_lines(out, &resolved, "    ")?;
                for (i, jump) in resolved.jumps.iter().enumerate() {
                    writeln!(out, "    jump host {} ({}):", i + 1, jump.target.display_name())?;
                    settings_lines(out, jump, "      ")?;
                }
            }
            Err(e) => writeln!(out, "  {}: error: {e}", host.name)?,
        }
    }
    Ok(())
}

fn settings_lines(out: &mut impl Write, resolved: &Resolved, indent: &str) -> io::Result<()> {
    let width = resolved.settings.iter().map(|s| s.value.chars().count()).max().unwrap_or(0).min(48);
    for s in &resolved.settings {
        writeln!(out, "{indent}{:17}  {:width$}  {}", s.name, s.value, s.source)?;
    }
    Ok(())
}

/// A short label for a DAG node; `\n` separates lines.
fn node_label(plan: &ExecutionPlan, node: &GraphNode) -> String {
    match node {
        GraphNode::Start => "start".into(),
        GraphNode::End => "end".into(),
        GraphNode::BeforeDone => "before done".into(),
        GraphNode::BatchDone(k) => format!("batch {} done", k + 1),
        GraphNode::Step(at) => {
            let s = plan.instance(*at);
            let who = s.host.map_or("local", |h| plan.hosts[h].name.as_str());
            format!("{who}: {}\n{}", s.step, describe(s))
        }
    }
}

/// Which drawing cluster a node belongs to: before, batch k, after, or none (barriers).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cluster {
    None,
    Before,
    Batch(usize),
    After,
}

fn clusters(plan: &ExecutionPlan, g: &DiGraph<GraphNode, ()>) -> (Vec<usize>, Vec<Vec<usize>>, Vec<usize>, Vec<usize>) {
    let mut before = Vec::new();
    let mut batches = vec![Vec::new(); plan.batches.len()];
    let mut after = Vec::new();
    let mut loose = Vec::new();
    for n in g.node_indices() {
        let cluster = match &g[n] {
            GraphNode::Step(StepRef::Before(_)) => Cluster::Before,
            GraphNode::Step(StepRef::Rollout(b, _, _)) => Cluster::Batch(*b),
            GraphNode::Step(StepRef::After(_)) => Cluster::After,
            _ => Cluster::None,
        };
        match cluster {
            Cluster::Before => before.push(n.index()),
            Cluster::Batch(b) => batches[b].push(n.index()),
            Cluster::After => after.push(n.index()),
            Cluster::None => loose.push(n.index()),
        }
    }
    (before, batches, after, loose)
}

/// A DOT double-quoted string: `\` and `"` escaped, line breaks as `\n`.
fn dot_string(label: &str) -> String {
    let mut out = String::with_capacity(label.len() + 2);
    out.push('"');
    for c in label.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Graphviz: one cluster per batch, plus `before` and `after`.
pub fn dot(out: &mut impl Write, plan: &ExecutionPlan, about: &About) -> io::Result<()> {
    let g = &plan.graph();
    writeln!(out, "digraph plan {{")?;
    writeln!(
        out,
        "  graph [rankdir=TB, fontname=\"Helvetica\", label={}];",
        dot_string(&format!("plan {}", about.path))
    )?;
    writeln!(out, "  node [shape=box, style=rounded, fontname=\"Helvetica\", fontsize=10];")?;
    let node = |out: &mut dyn Write, i: usize, indent: &str| -> io::Result<()> {
        let n = &g[petgraph::graph::NodeIndex::new(i)];
        let shape = match n {
            GraphNode::Step(_) => "",
            GraphNode::Start | GraphNode::End => ", shape=circle",
            _ => ", shape=diamond",
        };
        writeln!(out, "{indent}n{i} [label={}{shape}];", dot_string(&node_label(plan, n)))
    };
    let (before, batches, after, loose) = clusters(plan, g);
    for i in loose {
        node(out, i, "  ")?;
    }
    let cluster = |out: &mut dyn Write, id: &str, label: &str, nodes: &[usize]| -> io::Result<()> {
        if nodes.is_empty() {
            return Ok(());
        }
        writeln!(out, "  subgraph cluster_{id} {{")?;
        writeln!(out, "    label={};", dot_string(label))?;
        for &i in nodes {
            node(out, i, "    ")?;
        }
        writeln!(out, "  }}")
    };
    cluster(out, "before", "before", &before)?;
    for (k, nodes) in batches.iter().enumerate() {
        cluster(out, &format!("batch_{k}"), &format!("batch {}", k + 1), nodes)?;
    }
    cluster(out, "after", "after", &after)?;
    for e in g.edge_references() {
        writeln!(out, "  n{} -> n{};", e.source().index(), e.target().index())?;
    }
    writeln!(out, "}}")
}

/// A Mermaid quoted label: the characters Mermaid reads as markup written as entities.
fn mermaid_string(label: &str) -> String {
    let mut out = String::with_capacity(label.len() + 2);
    out.push('"');
    for c in label.chars() {
        match c {
            '"' => out.push_str("#quot;"),
            '#' => out.push_str("#35;"),
            '&' => out.push_str("#amp;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            '`' => out.push_str("#96;"),
            '\n' => out.push_str("<br/>"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Mermaid flowchart: one subgraph per batch, plus `before` and `after`.
pub fn mermaid(out: &mut impl Write, plan: &ExecutionPlan, _about: &About) -> io::Result<()> {
    let g = &plan.graph();
    writeln!(out, "flowchart TD")?;
    let node = |out: &mut dyn Write, i: usize, indent: &str| -> io::Result<()> {
        let n = &g[petgraph::graph::NodeIndex::new(i)];
        let label = mermaid_string(&node_label(plan, n));
        match n {
            GraphNode::Step(_) => writeln!(out, "{indent}n{i}[{label}]"),
            GraphNode::Start | GraphNode::End => writeln!(out, "{indent}n{i}(({label}))"),
            _ => writeln!(out, "{indent}n{i}{{{label}}}"),
        }
    };
    let (before, batches, after, loose) = clusters(plan, g);
    for i in loose {
        node(out, i, "  ")?;
    }
    let cluster = |out: &mut dyn Write, id: &str, label: &str, nodes: &[usize]| -> io::Result<()> {
        if nodes.is_empty() {
            return Ok(());
        }
        writeln!(out, "  subgraph {id} [{}]", mermaid_string(label))?;
        for &i in nodes {
            node(out, i, "    ")?;
        }
        writeln!(out, "  end")
    };
    cluster(out, "before", "before", &before)?;
    for (k, nodes) in batches.iter().enumerate() {
        cluster(out, &format!("batch_{k}"), &format!("batch {}", k + 1), nodes)?;
    }
    cluster(out, "after", "after", &after)?;
    for e in g.edge_references() {
        writeln!(out, "  n{} --> n{}", e.source().index(), e.target().index())?;
    }
    Ok(())
}

/// A one-line account of what a valid plan holds, for `planrun validate`.
pub fn summary(loaded: &LoadedPlan) -> String {
    let plan = &loaded.plan;
    let mut roles: Vec<&str> = Vec::new();
    for r in plan.servers.iter().flat_map(|s| s.roles.iter()) {
        if !roles.contains(&r.as_str()) {
            roles.push(r);
        }
    }
    format!(
        "{}: valid: {} ({}), {} selected, {} per host, {}",
        loaded.source().display_name(),
        plural(plan.servers.len(), "server", "servers"),
        if roles.is_empty() { "no roles".to_string() } else { format!("roles {}", roles.join(", ")) },
        plural(loaded.selection.hosts.len(), "host", "hosts"),
        plural(plan.rollout.steps.len(), "step", "steps"),
        plural(plan.balancers.len(), "balancer", "balancers"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The question before an apply must stay short on a long rollout: the first
    /// batches, how many are left out, the last one; a batch's first hosts and a count.
    #[test]
    fn the_short_plan_of_a_long_rollout_stays_short() {
        let dir = tempfile::tempdir().unwrap();
        let mut exec = crate::testing::build(dir.path(), crate::testing::ROLLING);
        let steps = exec.batches[0].hosts[0].steps.clone();
        let host = |i: usize| crate::graph::HostSteps { host: i % 3, steps: steps.clone() };
        exec.batches = (0..12).map(|index| Batch { index, hosts: vec![host(index)] }).collect();
        exec.batches[0].hosts = (0..8).map(host).collect();
        let text = short(&exec);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "plan: `shop` on 3 hosts in 12 batches, 57 steps");
        assert_eq!(lines[1], "  batch 1/12: h1, h2, h3, h1, h2, h3 and 2 more");
        assert_eq!(lines[6], "  batch 6/12: h3");
        assert_eq!(lines[7], "  … 5 more batches");
        assert_eq!(lines[8], "  batch 12/12: h3");
        assert_eq!(lines[9], "  each host: reject → restart → accept");
        assert_eq!(lines.len(), 10, "{text}");
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(dot_string("a \"b\" \\c\nd"), r#""a \"b\" \\c\nd""#);
        assert_eq!(
            mermaid_string("say \"hi\" <b> #1 & `x`\nnext"),
            "\"say #quot;hi#quot; #lt;b#gt; #35;1 #amp; #96;x#96;<br/>next\""
        );
    }
}
