//! Servers and how they are reached: a server's roles and options, its transport
//! and SSH settings.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::duration::HumanDuration;
use crate::model::examples::options_example;

/// How planrun reaches servers over SSH. Every field is optional; what is left out comes
/// from the defaults described on each field.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SshSettings {
    /// # SSH user
    ///
    /// The login user. Defaults to the user running planrun.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &"deploy")]
    pub user: Option<String>,

    /// # SSH port
    ///
    /// The SSH port. Defaults to 22.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535), example = 22)]
    pub port: Option<u16>,

    /// # Identity file
    ///
    /// Private key to authenticate with; when set, the only key offered. Without it
    /// planrun offers the ssh-agent's keys, then the ssh config's `IdentityFile`s (or
    /// `~/.ssh/id_ed25519` and `~/.ssh/id_rsa`), as `ssh` does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &"~/.ssh/id_ed25519")]
    pub identity_file: Option<String>,

    /// # Known hosts file
    ///
    /// The known_hosts file host keys are checked against. Defaults to
    /// `~/.ssh/known_hosts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &"~/.ssh/known_hosts")]
    pub known_hosts: Option<String>,

    /// # Host key checking
    ///
    /// What to do with a host key that is not in `known_hosts`: `strict` refuses (the
    /// default), `accept-new` records it, `off` accepts any key and warns on every run.
    /// A changed key is always refused unless `off`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &"strict")]
    pub host_key_checking: Option<HostKeyChecking>,

    /// # Connect timeout
    ///
    /// How long to wait for the TCP connection and the SSH handshake. Defaults to `10s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &"10s")]
    pub connect_timeout: Option<HumanDuration>,

    /// # Jump hosts
    ///
    /// Jump hosts to reach the server through, as `[user@]host[:port]`: one, or a list
    /// for a chain (the first is connected to first). Each jump host is looked up in the
    /// ssh config like a server, and its host key is checked the same way; its user and
    /// port are the spec's, else the ssh config's, else the plan's. Defaults to the
    /// `ProxyJump` of the ssh config, if any; `none` connects directly even so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &"deploy@bastion.example.com:22")]
    pub jump: Option<Jump>,

    /// # SSH config file
    ///
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
    /// # Server address
    ///
    /// The address planrun connects to: an IP address or a host name. Available to
    /// templates as `{{host.address}}`.
    #[schemars(length(min = 1), example = &"10.0.0.2")]
    pub host: String,

    /// # Server name
    ///
    /// A short name for output and `--limit`, available as `{{host.name}}`. Defaults to
    /// `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1), example = &"app1")]
    pub name: Option<String>,

    /// # Server roles
    ///
    /// Roles this server plays; the rollout selects servers by role.
    #[serde(default)]
    #[schemars(example = vec!["web", "app"])]
    pub roles: Vec<String>,

    /// # Server options
    ///
    /// Free-form facts about this server, available as `{{host.options.NAME}}` and matched
    /// by `rollout.select.exclude` and a step's `when`.
    #[serde(default)]
    #[schemars(example = options_example())]
    pub options: IndexMap<String, serde_json::Value>,

    /// # Transport
    ///
    /// How commands reach this server: `ssh` (the default) or `local`, which runs them
    /// on the machine running planrun (for localhost fleets and tests).
    #[serde(default)]
    #[schemars(example = &"ssh")]
    pub transport: TransportKind,

    /// # Server SSH settings
    ///
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

/// A jump host as a plan writes it: `[user@]host[:port]`, with `[v6]:port` for IPv6
/// addresses. Parsed here so validation can point at a bad one before anything connects.
pub fn parse_hop(spec: &str) -> Result<(Option<String>, String, Option<u16>), String> {
    let spec = spec.trim();
    let (user, rest) = match spec.rsplit_once('@') {
        Some((user, rest)) if !user.is_empty() => (Some(user.to_string()), rest),
        Some(_) => return Err("the user before `@` is empty; write `user@host` or just `host`".into()),
        None => (None, spec),
    };
    let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
        let (host, after) =
            inner.split_once(']').ok_or("an IPv6 address opened with `[` is not closed with `]`".to_string())?;
        (host, after.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, Some(p)),
            _ => (rest, None),
        }
    };
    if host.is_empty() {
        return Err("the host is empty; write `[user@]host[:port]`".into());
    }
    let port = match port {
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| format!("`{p}` is not a port (1 to 65535); write `[user@]host[:port]`"))?,
        ),
        None => None,
    };
    Ok((user, host.to_string(), port))
}
