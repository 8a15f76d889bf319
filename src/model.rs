//! The plan as Rust types: the single source of truth for the plan format.
//!
//! The JSON schema in `schemas/plan.schema.json` is generated from these types, so doc
//! comments here are what an operator sees in their editor on hover: they are written for
//! operators, not for readers of the code. Every property carries an example for the same
//! reason.
//!
//! These types are only deserialized after the schema accepted the document, so serde's
//! own error messages never reach a user; the schema's do, with positions.

use std::collections::BTreeMap;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;

/// A planrun plan: which servers exist, which load balancers front them, and the steps of
/// a rolling restart or deploy. One plan per environment, checked into your repository.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "planrun plan", example = plan_example())]
pub struct Plan {
    /// A base plan this plan builds on, as a path relative to this plan's folder. This plan
    /// is laid over the base: maps (`vars`, `ssh`, `balancers`, `rollout`...) merge field by
    /// field, and what this plan sets (a value, a whole list such as `servers` or `steps`)
    /// replaces the base's. A base may extend another base. Keep the steps in the base and
    /// the servers and vars in one plan per environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1), example = &"base.yaml")]
    pub extends: Option<String>,

    /// The plan format version. Always `1`.
    #[schemars(range(min = 1, max = 1), example = 1)]
    pub version: u32,

    /// The application's name, available to templates as `{{application}}`.
    #[schemars(length(min = 1), example = &"shop")]
    pub application: String,

    /// Free-form values for templates, available as `{{vars.NAME}}`.
    /// `planrun apply --var NAME=VALUE` overrides them.
    #[serde(default)]
    #[schemars(example = vars_example())]
    pub vars: IndexMap<String, serde_json::Value>,

    /// Names of environment variables whose values are secrets: they are read at apply time
    /// and replaced by `***` in every output, log and journal. Balancer tokens
    /// (`token_env`) are secrets without being listed here.
    #[serde(default)]
    #[schemars(example = vec!["DEPLOY_WEBHOOK_TOKEN"])]
    pub secret_env: Vec<String>,

    /// SSH defaults for every server; a server's own `ssh` overrides them field by field.
    #[serde(default)]
    pub ssh: SshSettings,

    /// Environment variables for every `run` and `local` command; a step's own `env`
    /// overrides them by name. Values are templates, shell-quoted when sent (servers
    /// usually refuse SSH `setenv`, so they travel in the command).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    #[schemars(example = env_example())]
    pub env: IndexMap<String, EnvValue>,

    /// The servers of this environment, in the order the rollout visits them.
    #[schemars(length(min = 1), example = servers_example())]
    pub servers: Vec<Server>,

    /// Load balancers the steps can drive, by the name steps refer to in `use`.
    #[serde(default)]
    #[schemars(example = balancers_example())]
    pub balancers: IndexMap<String, Balancer>,

    /// Steps that run once, before the rollout: `run` fans out to every selected host in
    /// parallel, `local` runs on the machine running planrun.
    #[serde(default)]
    #[schemars(example = before_example())]
    pub before: Vec<Step>,

    /// The rolling part: which hosts, how many at a time, and the steps each host goes
    /// through while it is out of rotation.
    pub rollout: Rollout,

    /// Where the rollout lock lives, so two operators cannot roll this fleet at once.
    /// Defaults to `/tmp/planrun-APPLICATION.lock` on the first server the rollout
    /// selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<LockSettings>,

    /// Steps that run once, after every host of the rollout finished.
    #[serde(default)]
    #[schemars(example = after_example())]
    pub after: Vec<Step>,
}

/// How planrun reaches servers over SSH. Every field is optional; what is left out comes
/// from the defaults described on each field.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SshSettings {
    /// The login user. Defaults to the user running planrun.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &"deploy")]
    pub user: Option<String>,

    /// The SSH port. Defaults to 22.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535), example = 22)]
    pub port: Option<u16>,

    /// Private key to authenticate with; when set, the only key offered. Without it
    /// planrun offers the ssh-agent's keys, then the ssh config's `IdentityFile`s (or
    /// `~/.ssh/id_ed25519` and `~/.ssh/id_rsa`), as `ssh` does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &"~/.ssh/id_ed25519")]
    pub identity_file: Option<String>,

    /// The known_hosts file host keys are checked against. Defaults to
    /// `~/.ssh/known_hosts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &"~/.ssh/known_hosts")]
    pub known_hosts: Option<String>,

    /// What to do with a host key that is not in `known_hosts`: `strict` refuses (the
    /// default), `accept-new` records it, `off` accepts any key and warns on every run.
    /// A changed key is always refused unless `off`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &"strict")]
    pub host_key_checking: Option<HostKeyChecking>,

    /// How long to wait for the TCP connection and the SSH handshake. Defaults to `10s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &"10s")]
    pub connect_timeout: Option<HumanDuration>,

    /// Jump hosts to reach the server through, as `[user@]host[:port]`: one, or a list
    /// for a chain (the first is connected to first). Each jump host is looked up in the
    /// ssh config like a server, and its host key is checked the same way; its user and
    /// port are the spec's, else the ssh config's, else the plan's. Defaults to the
    /// `ProxyJump` of the ssh config, if any; `none` connects directly even so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &"deploy@bastion.example.com:22")]
    pub jump: Option<Jump>,

    /// An OpenSSH client config file consulted for every setting the plan does not give
    /// (`Host` aliases and patterns, `HostName`, `User`, `Port`, `IdentityFile`,
    /// `IdentitiesOnly`, `ProxyJump`, `UserKnownHostsFile`, `StrictHostKeyChecking`,
    /// `ConnectTimeout`). Defaults to `~/.ssh/config` when it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &"~/.ssh/config")]
    pub config_file: Option<String>,
}

/// One jump host, or a chain of them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Jump {
    /// `[user@]host[:port]`.
    One(#[schemars(length(min = 1))] String),
    /// A chain, first hop first.
    Chain(#[schemars(length(min = 1))] Vec<String>),
}

impl Jump {
    pub fn hops(&self) -> Vec<&str> {
        match self {
            Jump::One(hop) => vec![hop.as_str()],
            Jump::Chain(hops) => hops.iter().map(String::as_str).collect(),
        }
    }
}

/// Host key verification policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum HostKeyChecking {
    /// Refuse hosts whose key is not in known_hosts.
    Strict,
    /// Record the key of a host seen for the first time; refuse a changed key.
    AcceptNew,
    /// Accept any key. Prints a warning on every run.
    Off,
}

/// A server of this environment.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// The address planrun connects to: an IP address or a host name. Available to
    /// templates as `{{host.address}}`.
    #[schemars(length(min = 1), example = &"10.0.0.2")]
    pub host: String,

    /// A short name for output and `--limit`, available as `{{host.name}}`. Defaults to
    /// `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1), example = &"app1")]
    pub name: Option<String>,

    /// Roles this server plays; the rollout selects servers by role.
    #[serde(default)]
    #[schemars(example = vec!["web", "app"])]
    pub roles: Vec<String>,

    /// Free-form facts about this server, available as `{{host.options.NAME}}` and matched
    /// by `rollout.select.exclude` and a step's `when`.
    #[serde(default)]
    #[schemars(example = options_example())]
    pub options: IndexMap<String, serde_json::Value>,

    /// How commands reach this server: `ssh` (the default) or `local`, which runs them
    /// on the machine running planrun (for localhost fleets and tests).
    #[serde(default)]
    #[schemars(example = &"ssh")]
    pub transport: TransportKind,

    /// SSH settings for this server only, overriding the plan's `ssh` field by field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshSettings>,
}

/// How a server's commands are run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TransportKind {
    /// Over SSH.
    #[default]
    Ssh,
    /// On the machine running planrun, through `sh -c`.
    Local,
}

/// A load balancer planrun can take nodes out of and put back into rotation.
// A plan holds a handful of balancers; boxing variants would only make matching clumsy.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Balancer {
    /// A Linode NodeBalancer, driven through the Linode API v4.
    Linode(LinodeBalancer),
    /// HAProxy, driven through its runtime API (stats socket at level admin).
    Haproxy(HaproxyBalancer),
    /// Any balancer with an HTTP API: a templated request per action.
    Http(HttpBalancer),
    /// A command on the machine running planrun per action.
    Command(CommandBalancer),
}

impl Balancer {
    pub fn kind(&self) -> &'static str {
        match self {
            Balancer::Linode(_) => "linode",
            Balancer::Haproxy(_) => "haproxy",
            Balancer::Http(_) => "http",
            Balancer::Command(_) => "command",
        }
    }
}

/// Linode NodeBalancer settings.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LinodeBalancer {
    /// The environment variable holding the Linode API token. It must be set when the plan
    /// is applied; its value is a secret and never printed.
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"), example = &"LINODE_TOKEN")]
    pub token_env: String,

    /// The NodeBalancer's label, as shown in the Linode Cloud Manager.
    #[schemars(length(min = 1), example = &"NodebalancerConfiguration")]
    pub label: String,

    /// The port of the NodeBalancer configuration whose nodes the steps change.
    #[schemars(range(min = 1, max = 65535), example = 80)]
    pub port: u16,

    /// The API's base URL. Defaults to `https://api.linode.com/v4`; set it for a proxy or
    /// a test server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &"https://api.linode.com/v4")]
    pub api_url: Option<String>,

    /// Linode reports no connection counts, so a `drain` lasts this long. Defaults to `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &"30s")]
    pub drain_timeout: Option<HumanDuration>,
}

/// HAProxy runtime API settings.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HaproxyBalancer {
    /// The runtime API socket: `tcp://HOST:PORT` or `unix:///PATH`.
    #[schemars(regex(pattern = r"^(tcp://.+:[0-9]+|unix:///.+)$"), example = &"unix:///run/haproxy/admin.sock")]
    pub socket: String,

    /// The HAProxy backend holding the servers.
    #[schemars(length(min = 1), example = &"app")]
    pub backend: String,
}

/// Per-action HTTP requests for a balancer with an HTTP API.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpBalancer {
    /// The request that stops new connections to `{{node}}`.
    pub reject: HttpRequest,
    /// The request that lets `{{node}}`'s open connections finish. Defaults to `reject`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<HttpRequest>,
    /// The request that puts `{{node}}` back into rotation.
    pub accept: HttpRequest,
    /// A request whose 2xx answer means `{{node}}` is up in the balancer (for
    /// `balancer_up` waits and pre-flight). Without it the balancer's view is unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<HttpRequest>,
}

/// An HTTP request; every string is a template with `{{node}}` in its context.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpRequest {
    /// The HTTP method. Defaults to `POST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &"POST")]
    pub method: Option<String>,
    /// The URL.
    #[schemars(length(min = 1), example = &"http://127.0.0.1:9000/nodes/{{node}}/disable")]
    pub url: String,
    /// Request headers.
    #[serde(default)]
    #[schemars(example = headers_example())]
    pub headers: IndexMap<String, String>,
    /// The request body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &"{\"node\": \"{{node}}\"}")]
    pub body: Option<String>,
}

/// Per-action commands, run on the machine running planrun, with `{{node}}` in their
/// template context.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandBalancer {
    /// The command that stops new connections to `{{node}}`.
    #[schemars(length(min = 1), example = &"lbctl disable {{node}}")]
    pub reject: String,
    /// The command that lets `{{node}}`'s open connections finish. Defaults to `reject`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &"lbctl drain {{node}}")]
    pub drain: Option<String>,
    /// The command that puts `{{node}}` back into rotation.
    #[schemars(length(min = 1), example = &"lbctl enable {{node}}")]
    pub accept: String,
    /// A command that exits 0 when `{{node}}` is up in the balancer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &"lbctl status {{node}} | grep -q UP")]
    pub status: Option<String>,
}

/// Where the rollout lock lives: a directory made with an atomic `mkdir`, holding a file
/// that names who holds it.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LockSettings {
    /// The server holding the lock (its `name` or `host`), or `local` for the machine
    /// running planrun (only when every run starts from that one machine). Defaults to
    /// the first server the rollout selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1), example = &"app1")]
    pub host: Option<String>,

    /// The lock directory's path on that server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1), example = &"/var/lock/planrun-shop")]
    pub path: Option<String>,
}

/// The rolling part of the plan.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    /// Which servers the rollout visits.
    pub select: Selection,

    /// How many hosts are out of rotation at once: a count (`1`), a percentage of the
    /// selected hosts rounded up (`"25%"`), or a ramp (`[1, 2, "50%"]`) whose last entry
    /// repeats, so a canary goes first. Defaults to `1`.
    #[serde(default)]
    #[schemars(example = 1, example = &"25%", example = batch_ramp_example())]
    pub batch_size: BatchSize,

    /// The rollout halts, starting no new host, as soon as more hosts than this have
    /// failed, counted over the whole run. Defaults to `0`: the first failure halts it.
    #[serde(default)]
    #[schemars(example = 0)]
    pub max_failed_hosts: u32,

    /// What to do when only one host is selected: `skip_balancer` (the default) restarts
    /// it without the balancer steps, since there is nothing to roll; `roll` runs every
    /// step anyway.
    #[serde(default)]
    #[schemars(example = &"skip_balancer")]
    pub single_host: SingleHost,

    /// The steps each host goes through, in order, while it is in the rolling window.
    #[schemars(length(min = 1), example = steps_example())]
    pub steps: Vec<Step>,
}

/// Which servers a rollout visits: those with any of `roles`, minus those matching
/// `exclude`, in the order of `servers`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    /// Servers with any of these roles are selected.
    #[schemars(length(min = 1), example = vec!["app"])]
    pub roles: Vec<String>,

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

fn batch_step_schema() -> schemars::Schema {
    schemars::json_schema!({
        "oneOf": [
            { "type": "integer", "minimum": 1, "description": "A number of hosts." },
            { "type": "string", "pattern": "^\\s*([1-9][0-9]?|100)\\s*%\\s*$",
              "description": "A percentage of the selected hosts, rounded up." }
        ]
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
                step.as_value()["oneOf"][0],
                step.as_value()["oneOf"][1],
                { "type": "array", "minItems": 1, "items": step }
            ]
        })
    }
}

/// One step. Exactly one of `run`, `local`, `balancer` or `wait` says what it does.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// The step's name, unique in its list; shown in output and the journal.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.-]+$"), example = &"restart")]
    pub name: String,

    /// A command run on the host through its transport (SSH, or `sh -c` for
    /// `transport: local`). A template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1), example = &"/etc/init.d/rainbows_{{application}} restart")]
    pub run: Option<String>,

    /// A command run on the machine running planrun, once per host in the rollout and once
    /// in `before`/`after`. A template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1), example = &"curl -fsS -X POST https://chat.example/hooks/deploys -d 'rolled {{host.name}}'")]
    pub local: Option<String>,

    /// Takes this host's node out of, or back into, a load balancer's rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balancer: Option<BalancerStep>,

    /// Waits until a check passes: the app answers, a port opens, a command succeeds, or
    /// the balancer reports the node up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<Wait>,

    /// The longest this step may take, retries included. Defaults to `5m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &"2m")]
    pub timeout: Option<HumanDuration>,

    /// How many more times to try a failing step before the host fails. Defaults to `0`.
    #[serde(default)]
    #[schemars(range(max = 100), example = 2)]
    pub retries: u32,

    /// Run this step only on hosts that match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<When>,

    /// A failure of this step is reported but does not fail the host.
    #[serde(default)]
    #[schemars(example = false)]
    pub continue_on_error: bool,

    /// Runs the `run` command through `sudo -n` (never prompting): `true` as root, or
    /// `{ user: NAME }` as another user. sudoers must allow it without a password. A
    /// simple command (no `;`, `&&`, pipes, redirections, `$`) is given to sudo as
    /// written, so a sudoers rule naming that command matches; anything else runs as
    /// `sh -c '...'`, and a step with `env` (the plan's too) through `env`, since sudo
    /// clears the environment: sudoers must then allow `sh` or `env`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &true)]
    pub sudo: Option<Sudo>,

    /// Environment variables for this step's `run` or `local` command, over the plan's
    /// `env`. Values are templates, shell-quoted when sent; names are letters, digits
    /// and `_`.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    #[schemars(example = env_example())]
    pub env: IndexMap<String, EnvValue>,
}

/// The value of an environment variable: text, which is a template, or a number or
/// boolean written bare in YAML (`PORT: 8080`), sent as written.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum EnvValue {
    Text(String),
    Number(serde_json::Number),
    Bool(bool),
}

impl EnvValue {
    /// The value as template source.
    pub fn source(&self) -> std::borrow::Cow<'_, str> {
        match self {
            EnvValue::Text(text) => text.as_str().into(),
            EnvValue::Number(n) => n.to_string().into(),
            EnvValue::Bool(b) => b.to_string().into(),
        }
    }
}

/// How a step uses sudo.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Sudo {
    /// `true` runs the command as root through `sudo -n`, `{ user: NAME }` as another
    /// user; `false` does not use sudo.
    Enabled(bool),
    /// As this user.
    As(SudoUser),
}

/// The user a sudo step runs as.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SudoUser {
    /// The user to run the command as (`sudo -u`).
    #[schemars(length(min = 1), example = &"app")]
    pub user: String,
}

impl Sudo {
    /// `Some(None)` for root, `Some(Some(user))` for another user, `None` for no sudo.
    pub fn user(&self) -> Option<Option<&str>> {
        match self {
            Sudo::Enabled(false) => None,
            Sudo::Enabled(true) => Some(None),
            Sudo::As(u) => Some(Some(&u.user)),
        }
    }
}

fn env_example() -> IndexMap<String, EnvValue> {
    IndexMap::from([("RAILS_ENV".to_string(), EnvValue::Text("production".to_string()))])
}

/// A condition on the host: every field given must match.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct When {
    /// The host has at least one of these roles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = vec!["web"])]
    pub roles: Option<Vec<String>>,

    /// The host's options have all of these values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = options_when_example())]
    pub options: Option<IndexMap<String, serde_json::Value>>,
}

/// A balancer action on this host's node.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BalancerStep {
    /// The name of a balancer under `balancers`.
    #[serde(rename = "use")]
    #[schemars(length(min = 1), example = &"nodebalancer")]
    pub balancer: String,

    /// `reject` stops new connections, `drain` lets open ones finish first, `accept` puts
    /// the node back into rotation.
    #[schemars(example = &"reject")]
    pub action: BalancerAction,

    /// This host's node in the balancer: `ADDRESS:PORT` for Linode, the server name for
    /// HAProxy, whatever the balancer's templates expect otherwise. A template.
    #[schemars(length(min = 1), example = &"{{host.options.private_ip}}:80")]
    pub node: String,

    /// For `accept`: wait until the balancer itself reports the node up, bounded by the
    /// step's timeout. Defaults to `true`: apps answer before balancers re-admit them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = true)]
    pub wait_up: Option<bool>,
}

/// What a balancer step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BalancerAction {
    /// Stop sending new connections to the node.
    Reject,
    /// Stop new connections and wait until open ones finish.
    Drain,
    /// Send connections to the node again.
    Accept,
}

impl BalancerAction {
    pub fn as_str(self) -> &'static str {
        match self {
            BalancerAction::Reject => "reject",
            BalancerAction::Drain => "drain",
            BalancerAction::Accept => "accept",
        }
    }
}

/// A check to wait for. Exactly one of `sleep`, `http`, `tcp`, `command` or
/// `balancer_up`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Wait {
    /// Just wait this long. Prefer a check: a sleep is too long when the app is quick and
    /// too short when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &"5s")]
    pub sleep: Option<HumanDuration>,

    /// Wait until a GET of this URL answers with `status`. A template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1), example = &"http://{{host.options.private_ip}}/health")]
    pub http: Option<String>,

    /// Wait until a TCP connection to `HOST:PORT` succeeds. A template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1), example = &"{{host.address}}:8080")]
    pub tcp: Option<String>,

    /// Wait until this command exits 0 on the host. A template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1), example = &"test -S /run/{{application}}.sock")]
    pub command: Option<String>,

    /// Wait until this balancer reports `node` up: the balancer's own view, which is
    /// what users' traffic follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1), example = &"nodebalancer")]
    pub balancer_up: Option<String>,

    /// For `balancer_up`: this host's node in the balancer. A template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1), example = &"{{host.options.private_ip}}:80")]
    pub node: Option<String>,

    /// For `http`: the expected status code. Defaults to `200`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 599), example = 200)]
    pub status: Option<u16>,

    /// How many checks in a row must pass. Defaults to `1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1), example = 2)]
    pub successes: Option<u32>,

    /// Time between two checks. Defaults to `1s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &"2s")]
    pub interval: Option<HumanDuration>,

    /// Give up, failing the host, after this long. Defaults to `60s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &"90s")]
    pub timeout: Option<HumanDuration>,

    /// Once passing, the check must keep passing this long, so a flapping app does not
    /// let the rollout move on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &"10s")]
    pub stable_for: Option<HumanDuration>,
}

/// The kinds a step can be, in the order the schema documents them.
pub const STEP_KINDS: [&str; 4] = ["run", "local", "balancer", "wait"];
/// The checks a wait can be.
pub const WAIT_KINDS: [&str; 5] = ["sleep", "http", "tcp", "command", "balancer_up"];

impl Step {
    /// The kinds this step sets; a valid step sets exactly one.
    pub fn kinds(&self) -> Vec<&'static str> {
        let set = [self.run.is_some(), self.local.is_some(), self.balancer.is_some(), self.wait.is_some()];
        STEP_KINDS.iter().zip(set).filter(|(_, s)| *s).map(|(k, _)| *k).collect()
    }
}

impl Wait {
    /// The checks this wait sets; a valid wait sets exactly one.
    pub fn kinds(&self) -> Vec<&'static str> {
        let set = [
            self.sleep.is_some(),
            self.http.is_some(),
            self.tcp.is_some(),
            self.command.is_some(),
            self.balancer_up.is_some(),
        ];
        WAIT_KINDS.iter().zip(set).filter(|(_, s)| *s).map(|(k, _)| *k).collect()
    }
}

// Examples for the schema. Functions rather than literals because schemars takes
// expressions, and these read better as YAML-shaped JSON.

fn plan_example() -> serde_json::Value {
    serde_json::json!({
        "version": 1,
        "application": "shop",
        "servers": [{ "host": "10.0.0.2", "roles": ["app"] }],
        "rollout": {
            "select": { "roles": ["app"] },
            "steps": [{ "name": "restart", "run": "/etc/init.d/rainbows_{{application}} restart" }]
        }
    })
}

fn vars_example() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([("branch", "production")])
}

fn servers_example() -> serde_json::Value {
    serde_json::json!([
        { "host": "10.0.0.2", "roles": ["web", "app"], "options": { "private_ip": "192.168.0.1" } },
        { "host": "10.0.0.5", "roles": ["db"], "options": { "no_release": true } }
    ])
}

fn balancers_example() -> serde_json::Value {
    serde_json::json!({
        "nodebalancer": { "kind": "linode", "token_env": "LINODE_TOKEN", "label": "NodebalancerConfiguration", "port": 80 }
    })
}

fn before_example() -> serde_json::Value {
    serde_json::json!([{ "name": "update_code", "run": "cd /srv/{{application}} && git fetch && git checkout {{vars.branch}}" }])
}

fn after_example() -> serde_json::Value {
    serde_json::json!([{ "name": "notify", "local": "echo \"{{application}} rolled on {{rollout.hosts}} hosts\"" }])
}

fn options_example() -> serde_json::Value {
    serde_json::json!({ "private_ip": "192.168.0.1" })
}

fn exclude_example() -> serde_json::Value {
    serde_json::json!({ "no_release": true })
}

fn options_when_example() -> serde_json::Value {
    serde_json::json!({ "primary": true })
}

fn headers_example() -> serde_json::Value {
    serde_json::json!({ "X-Requested-By": "planrun" })
}

fn batch_ramp_example() -> serde_json::Value {
    serde_json::json!([1, 2, "50%"])
}

fn steps_example() -> serde_json::Value {
    serde_json::json!([
        { "name": "reject", "balancer": { "use": "nodebalancer", "action": "reject", "node": "{{host.options.private_ip}}:80" } },
        { "name": "restart", "run": "/etc/init.d/rainbows_{{application}} restart", "timeout": "2m" },
        { "name": "accept", "balancer": { "use": "nodebalancer", "action": "accept", "node": "{{host.options.private_ip}}:80" } },
        { "name": "wait", "wait": { "http": "http://{{host.options.private_ip}}/health", "status": 200, "successes": 2, "interval": "2s", "timeout": "90s" } }
    ])
}
