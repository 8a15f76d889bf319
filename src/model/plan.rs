//! The plan's top level: the one type a plan file deserializes into, and what is
//! asked of the plan as a whole.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::balancer::Balancer;
use crate::model::examples::{
    after_example, balancers_example, before_example, plan_example, plan_snippets, servers_example,
    servers_from_example, vars_example,
};
use crate::model::guard::Guard;
use crate::model::inventory::ServerSource;
use crate::model::rollback::Rollback;
use crate::model::rollout::Rollout;
use crate::model::server::{Server, SshSettings};
use crate::model::step::{EnvValue, Step, env_example};

/// A planrun plan: which servers exist, which load balancers front them, and the steps of
/// a rolling restart or deploy. One plan per environment, checked into your repository.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "planrun plan", example = plan_example(), extend("defaultSnippets" = plan_snippets()))]
pub struct Plan {
    /// # Base plan
    ///
    /// A base plan this plan builds on, as a path relative to this plan's folder. This plan
    /// is laid over the base: maps (`vars`, `ssh`, `balancers`, `rollout`...) merge field by
    /// field, and what this plan sets (a value, a whole list such as `servers` or `steps`)
    /// replaces the base's. A base may extend another base. Keep the steps in the base and
    /// the servers and vars in one plan per environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1), example = &"base.yaml")]
    pub extends: Option<String>,

    /// # Format version
    ///
    /// The plan format version. Always `1`.
    #[schemars(range(min = 1, max = 1), example = 1)]
    pub version: u32,

    /// # Application name
    ///
    /// The application's name, available to templates as `{{application}}`.
    #[schemars(length(min = 1), example = &"shop")]
    pub application: String,

    /// # Template variables
    ///
    /// Free-form values for templates, available as `{{vars.NAME}}`.
    /// `planrun apply --var NAME=VALUE` overrides them.
    #[serde(default)]
    #[schemars(example = vars_example())]
    pub vars: IndexMap<String, serde_json::Value>,

    /// # Secret environment variables
    ///
    /// Names of environment variables whose values are secrets: they are read at apply time
    /// and replaced by `***` in every output, log and journal. Balancer tokens
    /// (`token_env`) and the database URL (`state.postgres.url_env`) are secrets without
    /// being listed here.
    #[serde(default)]
    #[schemars(example = vec!["DEPLOY_WEBHOOK_TOKEN"])]
    pub secret_env: Vec<String>,

    /// # SSH defaults
    ///
    /// SSH defaults for every server; a server's own `ssh` overrides them field by field.
    #[serde(default)]
    pub ssh: SshSettings,

    /// # Command environment
    ///
    /// Environment variables for every `run` and `local` command; a step's own `env`
    /// overrides them by name. Values are templates, shell-quoted when sent (servers
    /// usually refuse SSH `setenv`, so they travel in the command).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    #[schemars(example = env_example())]
    pub env: IndexMap<String, EnvValue>,

    /// # Servers
    ///
    /// The servers of this environment, in the order the rollout visits them.
    #[schemars(length(min = 1), example = servers_example())]
    pub servers: Vec<Server>,

    /// # Servers from elsewhere
    ///
    /// Files and commands that list more servers, in the shape of `servers`: each
    /// `{ file: inventory.yaml }` or `{ command: "…" }`. Their servers follow the plan's
    /// own `servers`, in this order, and are checked like them (names unique across all
    /// sources, roles, values), with positions in the file or the command's output.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(example = servers_from_example())]
    pub servers_from: Vec<ServerSource>,

    /// # Load balancers
    ///
    /// Load balancers the steps can drive, by the name steps refer to in `use`.
    #[serde(default)]
    #[schemars(example = balancers_example())]
    pub balancers: IndexMap<String, Balancer>,

    /// # Steps before the rollout
    ///
    /// Steps that run once, before the rollout: `run` fans out to every selected host in
    /// parallel, `local` runs on the machine running planrun.
    #[serde(default)]
    #[schemars(example = before_example())]
    pub before: Vec<Step>,

    /// # Rollout
    ///
    /// The rolling part: which hosts, how many at a time, and the steps each host goes
    /// through while it is out of rotation.
    pub rollout: Rollout,

    /// # Traffic guard
    ///
    /// Watches the service while the rollout runs and halts it on failed requests: an
    /// HTTP probe through the balancer (`http`), and for HAProxy the rolled nodes' error
    /// rate against the rest of the pool (`balancer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<Guard>,

    /// # Rollout lock
    ///
    /// Where the rollout lock lives, so two operators cannot roll this fleet at once.
    /// Defaults to `/tmp/planrun-APPLICATION.lock` on the first server the rollout
    /// selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<LockSettings>,

    /// # Run state
    ///
    /// Where the journal and the lock live: by default the journal in `.planrun/` beside
    /// the plan and the lock on the fleet; with `postgres`, both in a database every
    /// operator shares. Usually set in a base plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = crate::model::state_example())]
    pub state: Option<crate::model::StateSettings>,

    /// # Steps after the rollout
    ///
    /// Steps that run once, after every host of the rollout finished.
    #[serde(default)]
    #[schemars(example = after_example())]
    pub after: Vec<Step>,

    /// # Rollback
    ///
    /// What `planrun rollback PLAN` runs to go back from the last run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<Rollback>,
}

/// Where the rollout lock lives: a directory made with an atomic `mkdir`, holding a file
/// that names who holds it.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LockSettings {
    /// # Lock host
    ///
    /// The server holding the lock (its `name` or `host`), or `local` for the machine
    /// running planrun (only when every run starts from that one machine). Defaults to
    /// the first server the rollout selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1), example = &"app1")]
    pub host: Option<String>,

    /// # Lock path
    ///
    /// The lock directory's path on that server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1), example = &"/var/lock/planrun-shop")]
    pub path: Option<String>,
}

/// Whether the list at `pointer` runs inside a host's rolling window, where balancer
/// steps belong: `rollout.steps`, `rollout.on_failure`, `rollback.steps`.
pub fn in_window(pointer: &str) -> bool {
    matches!(pointer, "/rollout/steps" | "/rollout/on_failure" | "/rollback/steps")
}

impl Plan {
    /// Every list of steps with its JSON pointer, in the plan's order: checks that apply
    /// to every step visit them all.
    pub fn step_lists(&self) -> Vec<(&'static str, &[Step])> {
        let mut lists: Vec<(&'static str, &[Step])> = vec![
            ("/before", &self.before),
            ("/rollout/steps", &self.rollout.steps),
            ("/rollout/on_failure", &self.rollout.on_failure),
            ("/after", &self.after),
        ];
        if let Some(rollback) = &self.rollback {
            lists.push(("/rollback/steps", &rollback.steps));
        }
        lists
    }

    /// The environment variables the plan reads secrets from: `secret_env`, every Linode
    /// balancer's `token_env`, then `state.postgres.url_env`. The check before a run and
    /// the redaction of its output must agree on this list, so it is made in one place.
    pub fn secret_env_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.secret_env.iter().map(String::as_str).collect();
        for balancer in self.balancers.values() {
            if let Balancer::Linode(l) = balancer {
                names.push(&l.token_env);
            }
        }
        // The database URL may hold a password.
        if let Some(state) = &self.state {
            names.push(&state.postgres.url_env);
        }
        names
    }
}
