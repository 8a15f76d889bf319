//! Saved plans: `planrun plan PLAN --out run.plan` writes the rendered execution plan with
//! the hash of every input and the balancers' view; `planrun apply run.plan` runs that
//! plan only if it is still exactly that.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::balancer::Balancers;
use crate::graph::{self, ExecutionPlan};
use crate::journal::Inputs;
use crate::validate::LoadedPlan;

/// The format's version: a saved plan of another version is refused.
pub const SAVED_PLAN_VERSION: u32 = 1;

/// The largest saved plan read back: the rendered plan of a large fleet, with room.
const MAX_SAVED_BYTES: u64 = 256 * 1024 * 1024;

#[derive(Debug, Serialize, Deserialize)]
pub struct SavedPlan {
    /// The format's version; also what tells a saved plan from a plan file.
    pub planrun_saved_plan: u32,
    /// The plan file, absolute, so the saved plan can be applied from anywhere.
    pub plan: PathBuf,
    /// The plan's file as it was named.
    pub named: String,
    /// The plan's and its bases' hashes, each inventory's servers' hash, `--var`,
    /// `--limit`, `--batch-size` and the plan's `vars`, as a run's journal records them.
    pub inputs: Inputs,
    /// The execution plan as `planrun plan --format json` prints it.
    pub execution: serde_json::Value,
    /// The balancers' view of the rollout's nodes when it was saved; `None` when they
    /// could not all be read then (the apply's own pre-flight still runs).
    pub balancers: Option<Vec<NodeRotation>>,
    /// The saved plan's own file, as named to `apply`.
    #[serde(skip)]
    pub file: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRotation {
    pub balancer: String,
    pub node: String,
    pub in_rotation: bool,
}

/// The execution plan as JSON, the form saved and compared.
pub fn execution_json(
    loaded: &LoadedPlan,
    exec: &ExecutionPlan,
    batch_size: Option<&crate::model::BatchSize>,
) -> serde_json::Value {
    let path = loaded.source().display_name();
    let about = crate::preview::About {
        path: &path,
        batch_size: batch_size.unwrap_or(&loaded.plan.rollout.batch_size),
        skipped_balancer: graph::balancer_skipped(loaded),
    };
    let mut text = Vec::new();
    let _ = crate::preview::json(&mut text, exec, &about);
    // Saved and compared masked: a saved plan never holds a secret in clear.
    let text = crate::redact::Redactor::from_plan(&loaded.plan).redact_bytes(&text);
    serde_json::from_slice(&text).unwrap_or(serde_json::Value::Null)
}

/// Reads every balancer's view of the nodes `exec` takes out; `None` when a balancer
/// cannot be set up or a node cannot be read. Read-only, as pre-flight is.
pub fn balancer_view(
    loaded: &LoadedPlan,
    exec: &ExecutionPlan,
    build: &graph::BuildOptions,
) -> Option<Vec<NodeRotation>> {
    if loaded.plan.balancers.is_empty() {
        return Some(Vec::new());
    }
    let balancers = Balancers::new(&loaded.plan.balancers, None).ok()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
    let whole = graph::build(loaded, &graph::BuildOptions { limit: None, ..build.clone() }).ok()?;
    let view = runtime.block_on(crate::preflight::read(exec, &whole, &balancers));
    let size = build.batch_size.as_ref().unwrap_or(&loaded.plan.rollout.batch_size);
    let verdict_unreadable = crate::preflight::judge(&view, exec, size).unreadable;
    if verdict_unreadable {
        return None;
    }
    Some(
        view.rotations()
            .into_iter()
            .map(|(balancer, node, in_rotation)| NodeRotation { balancer, node, in_rotation })
            .collect(),
    )
}

/// The saved plan at `path`, if that file is one (a plan file is YAML, not this JSON).
pub fn read(path: &Path) -> Option<Result<SavedPlan, String>> {
    let bytes = crate::bounded::read(path, MAX_SAVED_BYTES).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let version = value.get("planrun_saved_plan")?;
    if version.as_u64() != Some(SAVED_PLAN_VERSION as u64) {
        return Some(Err(format!(
            "`{}` is a saved plan of format {version}, this planrun reads format {SAVED_PLAN_VERSION}; save it again with `planrun plan PLAN --out FILE`",
            path.display()
        )));
    }
    Some(
        serde_json::from_value::<SavedPlan>(value)
            .map(|saved| SavedPlan { file: path.to_path_buf(), ..saved })
            .map_err(|e| format!("`{}` is not a valid saved plan: {e}", path.display())),
    )
}

impl SavedPlan {
    /// The refusal of `apply FILE` when the plan is not exactly the one saved.
    pub fn check(&self, loaded: &LoadedPlan, exec: &ExecutionPlan) -> Result<(), String> {
        let differences = self.differences(loaded, exec);
        if differences.is_empty() {
            return Ok(());
        }
        Err(format!(
            "error: `{}` is no longer the plan it saved: {}; nothing was executed\n  help: look at `planrun plan {}` and save it again with `--out`",
            self.file.display(),
            differences.join("; "),
            crate::graph::shell::shell_quote(&self.named)
        ))
    }

    /// What differs between this saved plan and the plan as it loads now: inputs (files,
    /// inventories' servers, the plan's `vars`, secrets-free `--var`s), the rendered
    /// execution plan, and nodes that were in rotation and are not any more. Empty when
    /// the plan is exactly the one saved.
    pub fn differences(&self, loaded: &LoadedPlan, exec: &ExecutionPlan) -> Vec<String> {
        let build = self.inputs.build_options();
        let now = Inputs::of(loaded, &build);
        let mut differences = self.inputs.plan_differences(&now);
        if differences.is_empty() && execution_json(loaded, exec, build.batch_size.as_ref()) != self.execution {
            // Same files, another plan: a secret or an environment the templates read.
            differences.push("the rendered execution plan differs".into());
        }
        if let Some(then) = &self.balancers
            && let Some(now) = balancer_view(loaded, exec, &build)
        {
            for node in then.iter().filter(|n| n.in_rotation) {
                if now.iter().any(|m| m.balancer == node.balancer && m.node == node.node && !m.in_rotation) {
                    differences.push(format!(
                        "balancer `{}`: node `{}` was in rotation when the plan was saved and is out now",
                        node.balancer, node.node
                    ));
                }
            }
        } else if self.balancers.is_some() {
            differences.push("the balancers cannot be read now, as they were when the plan was saved".into());
        }
        differences
    }
}
