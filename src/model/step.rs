//! A step and everything it can say: a command, a balancer action or a wait, with
//! its env, sudo and condition.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::duration::HumanDuration;
use crate::model::examples::options_when_example;

/// One step. Exactly one of `run`, `local`, `balancer` or `wait` says what it does.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = step_kind_rule)]
pub struct Step {
    /// # Step name
    ///
    /// The step's name, unique in its list; shown in output and the journal.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.-]+$"), example = &"restart")]
    pub name: String,

    /// # Command on the host
    ///
    /// A command run on the host through its transport (SSH, or `sh -c` for
    /// `transport: local`). A template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1), example = &"/etc/init.d/rainbows_{{application}} restart")]
    pub run: Option<String>,

    /// # Command on this machine
    ///
    /// A command run on the machine running planrun, once per host in the rollout and once
    /// in `before`/`after`. A template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1), example = &"curl -fsS -X POST https://chat.example/hooks/deploys -d 'rolled {{host.name}}'")]
    pub local: Option<String>,

    /// # Balancer action
    ///
    /// Takes this host's node out of, or back into, a load balancer's rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balancer: Option<BalancerStep>,

    /// # Wait for a check
    ///
    /// Waits until a check passes: the app answers, a port opens, a command succeeds, or
    /// the balancer reports the node up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<Wait>,

    /// # Step timeout
    ///
    /// The longest this step may take, retries included. Defaults to `5m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &"2m")]
    pub timeout: Option<HumanDuration>,

    /// # Retries
    ///
    /// How many more times to try a failing step before the host fails. Defaults to `0`.
    #[serde(default)]
    #[schemars(range(max = 100), example = 2)]
    pub retries: u32,

    /// # Condition
    ///
    /// Run this step only on hosts that match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<When>,

    /// # Continue on error
    ///
    /// A failure of this step is reported but does not fail the host.
    #[serde(default)]
    #[schemars(example = false)]
    pub continue_on_error: bool,

    /// # Run through sudo
    ///
    /// Runs the `run` command through `sudo -n` (never prompting): `true` as root, or
    /// `{ user: NAME }` as another user. sudoers must allow it without a password. A
    /// simple command (no `;`, `&&`, pipes, redirections, `$`) is given to sudo as
    /// written, so a sudoers rule naming that command matches; anything else runs as
    /// `sh -c '...'`, and a step with `env` (the plan's too) through `env`, since sudo
    /// clears the environment: sudoers must then allow `sh` or `env`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &true)]
    pub sudo: Option<SudoSetting>,

    /// # Step environment
    ///
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
// The schema names this `Sudo`, as plans have always seen it; in the code `Sudo` is
// what the setting means once read.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "Sudo")]
pub enum SudoSetting {
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
    /// # Sudo user
    ///
    /// The user to run the command as (`sudo -u`).
    #[schemars(length(min = 1), example = &"app")]
    pub user: String,
}

/// Whom a command runs as under `sudo -n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sudo {
    Root,
    As(String),
}

impl SudoSetting {
    /// `None` when the step does not use sudo (`sudo: false`).
    pub fn sudo(&self) -> Option<Sudo> {
        match self {
            SudoSetting::Enabled(false) => None,
            SudoSetting::Enabled(true) => Some(Sudo::Root),
            SudoSetting::As(u) => Some(Sudo::As(u.user.clone())),
        }
    }
}

pub(super) fn env_example() -> IndexMap<String, EnvValue> {
    IndexMap::from([("RAILS_ENV".to_string(), EnvValue::Text("production".to_string()))])
}

/// A condition on the host: every field given must match.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct When {
    /// # Only on roles
    ///
    /// The host has at least one of these roles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = vec!["web"])]
    pub roles: Option<Vec<String>>,

    /// # Only on options
    ///
    /// The host's options have all of these values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = options_when_example())]
    pub options: Option<IndexMap<String, serde_json::Value>>,
}

/// A balancer action on this host's node.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BalancerStep {
    /// # Balancer name
    ///
    /// The name of a balancer under `balancers`.
    #[serde(rename = "use")]
    #[schemars(length(min = 1), example = &"nodebalancer")]
    pub balancer: String,

    /// # Action
    ///
    /// `reject` stops new connections, `drain` lets open ones finish first, `accept` puts
    /// the node back into rotation.
    #[schemars(example = &"reject")]
    pub action: BalancerAction,

    /// # Node
    ///
    /// This host's node in the balancer: `ADDRESS:PORT` for Linode, the server name for
    /// HAProxy, whatever the balancer's templates expect otherwise. A template.
    #[schemars(length(min = 1), example = &"{{host.options.private_ip}}:80")]
    pub node: String,

    /// # Wait until up
    ///
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
#[schemars(transform = wait_kind_rule)]
pub struct Wait {
    /// # Sleep
    ///
    /// Just wait this long. Prefer a check: a sleep is too long when the app is quick and
    /// too short when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &"5s")]
    pub sleep: Option<HumanDuration>,

    /// # HTTP check
    ///
    /// Wait until a GET of this URL answers with `status`. A template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1), example = &"http://{{host.options.private_ip}}/health")]
    pub http: Option<String>,

    /// # TCP check
    ///
    /// Wait until a TCP connection to `HOST:PORT` succeeds. A template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1), example = &"{{host.address}}:8080")]
    pub tcp: Option<String>,

    /// # Command check
    ///
    /// Wait until this command exits 0 on the host. A template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1), example = &"test -S /run/{{application}}.sock")]
    pub command: Option<String>,

    /// # Balancer check
    ///
    /// Wait until this balancer reports `node` up: the balancer's own view, which is
    /// what users' traffic follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1), example = &"nodebalancer")]
    pub balancer_up: Option<String>,

    /// # Node
    ///
    /// For `balancer_up`: this host's node in the balancer. A template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1), example = &"{{host.options.private_ip}}:80")]
    pub node: Option<String>,

    /// # Expected status
    ///
    /// For `http`: the expected status code. Defaults to `200`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 599), example = 200)]
    pub status: Option<u16>,

    /// # Successes in a row
    ///
    /// How many checks in a row must pass. Defaults to `1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1), example = 2)]
    pub successes: Option<u32>,

    /// # Check interval
    ///
    /// Time between two checks. Defaults to `1s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &"2s")]
    pub interval: Option<HumanDuration>,

    /// # Wait timeout
    ///
    /// Give up, failing the host, after this long. Defaults to `60s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &"90s")]
    pub timeout: Option<HumanDuration>,

    /// # Stable for
    ///
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

/// The `$comment` of a schema rule that planrun's own checks make too, with the step's
/// name in the message: the rule is there for editors, and `validate::schema` leaves its
/// errors to those checks.
pub const CHECKED_BY_PLANRUN: &str = "planrun checks this rule itself and names the step";

fn step_kind_rule(schema: &mut schemars::Schema) {
    let kinds = crate::text::backticked_list(&STEP_KINDS);
    exactly_one_of(
        schema,
        &STEP_KINDS,
        &format!("this step does nothing: give it one of {kinds}"),
        &format!("a step does one thing: give it only one of {kinds}, and split it into several steps to do more"),
    );
}

fn wait_kind_rule(schema: &mut schemars::Schema) {
    let kinds = crate::text::backticked_list(&WAIT_KINDS);
    exactly_one_of(
        schema,
        &WAIT_KINDS,
        &format!("this wait checks nothing: give it one of {kinds}"),
        &format!("a wait checks one thing: give it only one of {kinds}, and wait for the others in steps of their own"),
    );
}

/// "Exactly one of `fields`" as a rule editors show: an `anyOf` of `required` sets for
/// "at least one" and, for "at most one", `dependentSchemas` that forbid the others
/// beside each. `errorMessage` is yaml-language-server's keyword for a message of our own;
/// other validators ignore it.
fn exactly_one_of(schema: &mut schemars::Schema, fields: &[&str], none: &str, several: &str) {
    let at_least_one: Vec<serde_json::Value> =
        fields.iter().map(|f| serde_json::json!({ "required": [f], "errorMessage": none })).collect();
    let at_most_one: serde_json::Map<String, serde_json::Value> = fields
        .iter()
        .map(|f| {
            let others: serde_json::Map<String, serde_json::Value> =
                fields.iter().filter(|o| *o != f).map(|o| (o.to_string(), false.into())).collect();
            (f.to_string(), serde_json::json!({ "properties": others, "errorMessage": several }))
        })
        .collect();
    schema.insert(
        "allOf".into(),
        serde_json::json!([{
            "$comment": CHECKED_BY_PLANRUN,
            "anyOf": at_least_one,
            "dependentSchemas": at_most_one,
        }]),
    );
}

impl Step {
    /// Whether the step is about the balancer: a balancer action, or a wait for the
    /// balancer to report the node up. `single_host: skip_balancer` leaves these out.
    pub fn uses_balancer(&self) -> bool {
        self.balancer.is_some() || self.wait.as_ref().is_some_and(|w| w.balancer_up.is_some())
    }

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
