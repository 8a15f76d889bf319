//! Going back: the steps that undo a run on one host, for `planrun rollback`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::step::Step;

/// How `planrun rollback PLAN` goes back from the last run.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = rollback_example())]
pub struct Rollback {
    /// # Rollback steps
    ///
    /// The steps `planrun rollback PLAN` runs on every host the last run changed (a host
    /// with at least one rollout step completed), in the plan's batches and inside each
    /// host's rolling window, like `rollout.steps`: take the node out, switch back,
    /// restart, wait, put it back. `{{run.id}}` and `{{run.started}}` are those of the run
    /// being gone back from, so a step can name the release to leave.
    #[schemars(length(min = 1), example = rollback_steps_example())]
    pub steps: Vec<Step>,
}

fn rollback_example() -> serde_json::Value {
    serde_json::json!({ "steps": rollback_steps_example() })
}

fn rollback_steps_example() -> serde_json::Value {
    serde_json::json!([
        { "name": "reject", "balancer": { "use": "nodebalancer", "action": "reject", "node": "{{host.options.private_ip}}:80" } },
        { "name": "switch-back", "run": "cd /srv/shop && ln -sfn \"$(ls releases | sort | awk -v r={{run.started}} '$0 < r' | tail -n 1)\" current" },
        { "name": "restart", "run": "systemctl restart shop" },
        { "name": "accept", "balancer": { "use": "nodebalancer", "action": "accept", "node": "{{host.options.private_ip}}:80" } }
    ])
}
