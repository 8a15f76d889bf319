//! The rolling part of a plan: which servers, and how many at once.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::examples::{batch_ramp_example, exclude_example, steps_example};
use crate::model::step::Step;

/// The rolling part of the plan.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    /// # Selected servers
    ///
    /// Which servers the rollout visits.
    pub select: Selection,

    /// # Batch size
    ///
    /// How many hosts are out of rotation at once: a count (`1`), a percentage of the
    /// selected hosts rounded up (`"25%"`), or a ramp (`[1, 2, "50%"]`) whose last entry
    /// repeats, so a canary goes first. Defaults to `1`.
    #[serde(default)]
    #[schemars(example = 1, example = &"25%", example = batch_ramp_example())]
    pub batch_size: BatchSize,

    /// # Failed hosts allowed
    ///
    /// The rollout halts, starting no new host, as soon as more hosts than this have
    /// failed, counted over the whole run. Defaults to `0`: the first failure halts it.
    #[serde(default)]
    #[schemars(example = 0)]
    pub max_failed_hosts: u32,

    /// # Pause after batches
    ///
    /// Batch numbers (1-based) after which the rollout pauses: on a terminal it asks
    /// whether to go on; without one it stops with every node back in rotation, exits 3,
    /// and `planrun apply PLAN --resume` promotes it. `--no-pause` runs through.
    #[serde(default)]
    #[schemars(example = vec![1])]
    pub pause_after: Vec<std::num::NonZeroU32>,

    /// # Fan-out width
    ///
    /// How many hosts a `before` or `after` step runs on at once (a `run` step there
    /// fans out to every selected host). Defaults to `16`.
    #[serde(default = "default_fan_out")]
    #[schemars(range(min = 1, max = 1024), example = 16)]
    pub fan_out: u32,

    /// # Single host
    ///
    /// What to do when only one host is selected: `skip_balancer` (the default) restarts
    /// it without the balancer steps, since there is nothing to roll; `roll` runs every
    /// step anyway.
    #[serde(default)]
    #[schemars(example = &"skip_balancer")]
    pub single_host: SingleHost,

    /// # Rollout steps
    ///
    /// The steps each host goes through, in order, while it is in the rolling window.
    #[schemars(length(min = 1), example = steps_example())]
    pub steps: Vec<Step>,

    /// # Steps when a host fails
    ///
    /// Steps that run on a host whose rollout steps failed, right away and inside its
    /// rolling window, before the rollout halts: switch back to what ran before,
    /// restart, then `accept` and wait, so the host serves again. When they succeed and
    /// put its nodes back, the host is back in rotation (the summary says "restored by
    /// on_failure"); it still counts as failed for `max_failed_hosts`. When one fails, the
    /// host stays out of rotation where it failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(example = on_failure_example())]
    pub on_failure: Vec<Step>,
}

fn on_failure_example() -> serde_json::Value {
    serde_json::json!([
        { "name": "switch-back", "run": "cd /srv/shop && ln -sfn \"$(cat previous)\" current" },
        { "name": "restart-previous", "run": "systemctl restart shop" },
        { "name": "accept", "balancer": { "use": "nodebalancer", "action": "accept", "node": "{{host.options.private_ip}}:80" } }
    ])
}

/// Wide enough to hide SSH round trips, narrow enough that a fleet's sshds and the
/// control machine's CPU are not all hit at the same instant.
pub const DEFAULT_FAN_OUT: u32 = 16;

fn default_fan_out() -> u32 {
    DEFAULT_FAN_OUT
}

/// Which servers a rollout visits: those with any of `roles`, minus those matching
/// `exclude`, in the order of `servers`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    /// # Roles
    ///
    /// Servers with any of these roles are selected.
    #[schemars(length(min = 1), example = vec!["app"])]
    pub roles: Vec<String>,

    /// # Exclude
    ///
    /// Servers whose options have all of these values are left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = exclude_example())]
    pub exclude: Option<IndexMap<String, serde_json::Value>>,
}

/// With a single selected host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SingleHost {
    /// Leave out the balancer steps: restart the host directly.
    #[default]
    SkipBalancer,
    /// Run every step as for several hosts.
    Roll,
}

/// How many hosts are out of rotation at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum BatchSize {
    One(BatchStep),
    Ramp(Vec<BatchStep>),
}

impl Default for BatchSize {
    fn default() -> Self {
        BatchSize::One(BatchStep::Count(1))
    }
}

/// One batch size: a count or a percentage of the selected hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchStep {
    Count(u32),
    /// Whole percent, 1 to 100.
    Percent(u32),
}

impl BatchStep {
    /// The number of hosts this entry allows for `selected` hosts: percentages round up
    /// and never reach 0, so `"1%"` of 3 hosts is 1.
    pub fn hosts(self, selected: usize) -> usize {
        match self {
            BatchStep::Count(n) => n as usize,
            BatchStep::Percent(p) => (selected * p as usize).div_ceil(100).max(1),
        }
    }
}

impl std::fmt::Display for BatchStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchStep::Count(n) => write!(f, "{n}"),
            BatchStep::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl std::str::FromStr for BatchStep {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let invalid = || format!("`{s}` is not a batch size: write a count such as `2` or a percentage such as `25%`");
        if let Some(p) = s.strip_suffix('%') {
            let p: u32 = p.trim().parse().map_err(|_| invalid())?;
            if p == 0 || p > 100 {
                return Err(format!("`{s}` is not a batch size: a percentage must be from 1% to 100%"));
            }
            Ok(BatchStep::Percent(p))
        } else {
            let n: u32 = s.parse().map_err(|_| invalid())?;
            if n == 0 {
                return Err("a batch size of 0 would never roll a host: use 1 or more".into());
            }
            Ok(BatchStep::Count(n))
        }
    }
}

impl Serialize for BatchStep {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            BatchStep::Count(n) => s.serialize_u32(*n),
            BatchStep::Percent(_) => s.serialize_str(&self.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for BatchStep {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(u32),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Count(n) => format!("{n}").parse(),
            Raw::Text(s) => s.parse(),
        }
        .map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for BatchSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Ramp(Vec<BatchStep>),
            One(BatchStep),
        }
        Ok(match Raw::deserialize(d)? {
            Raw::Ramp(v) => BatchSize::Ramp(v),
            Raw::One(s) => BatchSize::One(s),
        })
    }
}

/// What editors say about a batch size that is neither a count nor a percentage.
const BATCH_STEP_MESSAGE: &str = "a count of hosts such as `2`, or a percentage of the selected hosts such as `25%`";

/// One entry: a count or a percentage, as one schema with both types rather than two
/// branches, so that yaml-language-server reports the message below instead of
/// `Incorrect type. Expected "integer | array"` (a type list's mismatch keeps its message).
fn batch_step_schema() -> schemars::Schema {
    schemars::json_schema!({
        "type": ["integer", "string"],
        "minimum": 1,
        "pattern": "^\\s*([1-9][0-9]?|100)\\s*%\\s*$",
        "description": "A number of hosts, or a percentage of the selected hosts rounded up.",
        "errorMessage": BATCH_STEP_MESSAGE,
        "patternErrorMessage": BATCH_STEP_MESSAGE
    })
}

impl JsonSchema for BatchSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "BatchSize".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let step = batch_step_schema();
        schemars::json_schema!({
            "description": "A count, a percentage such as \"25%\", or a ramp such as [1, 2, \"50%\"] whose last entry repeats.",
            "oneOf": [
                step,
                {
                    "type": "array",
                    "minItems": 1,
                    "items": step,
                    "description": "A ramp: one batch size per batch, the last one repeating."
                }
            ]
        })
    }
}
