//! How planrun reaches one server over SSH, and where each setting came from: the
//! server's `ssh`, the plan's `ssh`, the OpenSSH client config (`~/.ssh/config` or
//! `ssh.config_file`), or the defaults of `ssh`. The plan wins wherever it speaks; the
//! ssh config fills in what it leaves out, so an operator's aliases, bastions and keys
//! work without being repeated in the plan.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ssh2_config::{HostParams, ParseRule, SshConfig};

use crate::bounded;
use crate::model::{self, Plan, Server, SshSettings, parse_hop};
use crate::transport::{HostKeyChecking, SshTarget};

/// A chain of jump hosts longer than this is a `ProxyJump` loop in the ssh config.
const MAX_JUMPS: usize = 8;

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The server's own `ssh`.
    Server,
    /// The plan's `ssh`.
    Plan,
    /// The `[user@]host[:port]` of a jump host in `ssh.jump` or `ProxyJump`.
    JumpSpec,
    /// The ssh config file (ssh2-config does not report lines); shown as `ssh config`,
    /// the `config_file` setting names the file.
    SshConfig(PathBuf),
    /// planrun's default, the same as `ssh`'s.
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Server => f.write_str("server `ssh`"),
            Source::Plan => f.write_str("plan `ssh`"),
            Source::JumpSpec => f.write_str("jump spec"),
            Source::SshConfig(_) => f.write_str("ssh config"),
            Source::Default => f.write_str("default"),
        }
    }
}

/// One setting of a resolved host: its name as the plan spells it, its value, its origin.
#[derive(Debug, Clone)]
pub struct Setting {
    pub name: &'static str,
    pub value: String,
    pub source: Source,
}

/// A server (or jump host) resolved into what the transport needs.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub target: SshTarget,
    /// In a fixed order: address, user, port, identity_file, known_hosts,
    /// host_key_checking, connect_timeout, jump, config_file.
    pub settings: Vec<Setting>,
    /// The jump hosts, first hop first, each resolved the same way.
    pub jumps: Vec<Resolved>,
}

/// Resolves servers, reading each ssh config file once.
#[derive(Default)]
pub struct Resolver {
    configs: HashMap<PathBuf, Result<Arc<SshConfig>, String>>,
    /// Identity and known_hosts files already checked.
    files: HashMap<PathBuf, Result<(), String>>,
}

/// One layer of the plan's settings, most specific first.
struct Layer<'a> {
    settings: &'a SshSettings,
    source: Source,
}

impl Resolver {
    pub fn new() -> Self {
        Resolver::default()
    }

    /// The server's SSH settings over the plan's, over the ssh config, over `ssh`'s
    /// defaults. An error names the server and what to fix.
    pub fn resolve(&mut self, plan: &Plan, server: &Server) -> Result<Resolved, String> {
        let mut layers = Vec::with_capacity(2);
        if let Some(own) = &server.ssh {
            layers.push(Layer { settings: own, source: Source::Server });
        }
        layers.push(Layer { settings: &plan.ssh, source: Source::Plan });
        let config = self.config_for(&layers)?;
        self.resolve_host(&server.host, None, &layers, config.as_ref(), 0)
    }

    /// The ssh config the layers name, or `~/.ssh/config` when that exists.
    fn config_for(&mut self, layers: &[Layer]) -> Result<Option<(Arc<SshConfig>, PathBuf)>, String> {
        let (path, named) = match pick(layers, |s| s.config_file.clone()) {
            Some((file, _)) => (expand_home(&file), true),
            None => (home_dir().join(".ssh").join("config"), false),
        };
        if !named && !path.exists() {
            return Ok(None);
        }
        let parsed = self.configs.entry(path.clone()).or_insert_with(|| parse_config(&path)).clone();
        parsed.map(|config| Some((config, path)))
    }

    /// `name` as the plan (or a jump spec) writes it; `hop` holds a jump spec's user and
    /// port, which win over everything for that hop.
    fn resolve_host(
        &mut self,
        name: &str,
        hop: Option<(Option<String>, Option<u16>)>,
        layers: &[Layer],
        config: Option<&(Arc<SshConfig>, PathBuf)>,
        depth: usize,
    ) -> Result<Resolved, String> {
        let params = config.map(|(c, _)| c.query(name));
        let from_config = || Source::SshConfig(config.map(|(_, p)| p.clone()).unwrap_or_default());
        let is_jump = hop.is_some();
        let (hop_user, hop_port) = hop.unwrap_or_default();
        let mut settings = Vec::new();

        let (address, source) = match params.as_ref().and_then(|p| p.host_name.clone()) {
            Some(host_name) => (host_name.replace("%h", name), from_config()),
            None if is_jump => (name.to_string(), Source::JumpSpec),
            None => (name.to_string(), Source::Server),
        };
        settings.push(Setting { name: "address", value: address.clone(), source });

        // A jump host's user and port are the jump spec's, else the ssh config's for
        // that host: the plan's `user` and `port` are about the servers behind it.
        let config_user = params.as_ref().and_then(|p| p.user.clone());
        let (user, source) = match hop_user {
            Some(u) => (u, Source::JumpSpec),
            None => match (is_jump, config_user) {
                (true, Some(u)) => (u, from_config()),
                (_, config_user) => pick(layers, |s| s.user.clone())
                    .or_else(|| config_user.map(|u| (u, from_config())))
                    .unwrap_or_else(|| (current_user(), Source::Default)),
            },
        };
        settings.push(Setting { name: "user", value: user.clone(), source });

        let mut target = SshTarget::new(address, user);
        let config_port = params.as_ref().and_then(|p| p.port);
        let (port, source) = match hop_port {
            Some(p) => (p, Source::JumpSpec),
            None => match (is_jump, config_port) {
                (true, Some(p)) => (p, from_config()),
                (_, config_port) => pick(layers, |s| s.port)
                    .or_else(|| config_port.map(|p| (p, from_config())))
                    .unwrap_or((22, Source::Default)),
            },
        };
        target.port = port;
        settings.push(Setting { name: "port", value: port.to_string(), source });

        // The plan's key is the only one offered, as before ssh config support: an agent
        // full of keys could use up `MaxAuthTries` before it. The config's keys follow
        // OpenSSH: after the agent's, unless `IdentitiesOnly yes`.
        let config_only = params.as_ref().and_then(|p| unsupported(p, "identitiesonly")).map(|v| yes(&v));
        let source = if let Some((file, source)) = pick(layers, |s| s.identity_file.clone()) {
            target.identity_files = vec![expand_home(&file)];
            target.identities_only = true;
            source
        } else if let Some(files) = params.as_ref().and_then(|p| p.identity_file.clone()).filter(|f| !f.is_empty()) {
            target.identity_files = files;
            target.identities_only = config_only.unwrap_or(false);
            from_config()
        } else {
            target.identities_only = config_only.unwrap_or(false);
            Source::Default
        };
        let keys = if target.identity_files.is_empty() {
            "ssh-agent, then `~/.ssh/id_ed25519`, `~/.ssh/id_rsa`".to_string()
        } else {
            let files: Vec<String> = target.identity_files.iter().map(|f| format!("`{}`", f.display())).collect();
            if target.identities_only { files.join(", ") } else { format!("ssh-agent, then {}", files.join(", ")) }
        };
        for file in &target.identity_files {
            self.check_file(file, "identity_file", &source, bounded::MAX_IDENTITY_BYTES)?;
        }
        settings.push(Setting { name: "identity_file", value: keys, source });

        let (known_hosts, source) = pick(layers, |s| s.known_hosts.clone())
            .map(|(f, s)| (expand_home(&f), s))
            .or_else(|| {
                params
                    .as_ref()
                    .and_then(|p| unsupported(p, "userknownhostsfile"))
                    .map(|f| (expand_home(&f), from_config()))
            })
            .unwrap_or_else(|| (target.known_hosts.clone(), Source::Default));
        self.check_file(&known_hosts, "known_hosts", &source, bounded::MAX_KNOWN_HOSTS_BYTES)?;
        settings.push(Setting { name: "known_hosts", value: known_hosts.display().to_string(), source });
        target.known_hosts = known_hosts;

        let config_checking = match params.as_ref().and_then(|p| unsupported(p, "stricthostkeychecking")) {
            Some(v) => Some(strict_host_key_checking(&v).ok_or_else(|| {
                format!(
                    "`StrictHostKeyChecking {v}` for `{name}` in `{}` is not one of `yes`, `ask`, `accept-new`, `no`, `off`",
                    config.map(|(_, p)| p.display().to_string()).unwrap_or_default()
                )
            })?),
            None => None,
        };
        let (checking, source) = pick(layers, |s| s.host_key_checking)
            .map(|(c, s)| (host_key_checking(c), s))
            .or_else(|| config_checking.map(|c| (c, from_config())))
            .unwrap_or((HostKeyChecking::Strict, Source::Default));
        target.host_key_checking = checking;
        let value = match checking {
            HostKeyChecking::Strict => "strict",
            HostKeyChecking::AcceptNew => "accept-new",
            HostKeyChecking::Off => "off",
        };
        settings.push(Setting { name: "host_key_checking", value: value.into(), source });

        let (timeout, source) = pick(layers, |s| s.connect_timeout.map(|t| t.get()))
            .or_else(|| params.as_ref().and_then(|p| p.connect_timeout).map(|t| (t, from_config())))
            .unwrap_or((target.connect_timeout, Source::Default));
        target.connect_timeout = timeout.max(Duration::from_secs(1));
        settings.push(Setting {
            name: "connect_timeout",
            value: humantime::format_duration(timeout).to_string(),
            source,
        });

        // A jump host's own jump comes from the ssh config only: the plan's `jump` is the
        // chain as a whole, already unrolled by the caller.
        let chain: Option<(Vec<String>, Source)> = if is_jump {
            params.as_ref().and_then(|p| p.proxy_jump.clone()).map(|hops| (hops, from_config()))
        } else {
            pick(layers, |s| s.jump.clone())
                .map(|(j, s)| (j.hops().into_iter().map(str::to_string).collect(), s))
                .or_else(|| params.as_ref().and_then(|p| p.proxy_jump.clone()).map(|hops| (hops, from_config())))
        };
        let mut jumps = Vec::new();
        if let Some((hops, source)) =
            chain.filter(|(hops, _)| !(hops.len() == 1 && hops[0].eq_ignore_ascii_case("none")))
        {
            if depth + hops.len() > MAX_JUMPS {
                return Err(format!(
                    "more than {MAX_JUMPS} jump hosts to reach `{name}`; is there a `ProxyJump` loop in `{}`?",
                    config.map(|(_, p)| p.display().to_string()).unwrap_or_default()
                ));
            }
            let mut previous: Option<Resolved> = None;
            for hop in &hops {
                let (user, host, port) =
                    parse_hop(hop).map_err(|why| format!("jump host `{hop}` ({source}): {why}"))?;
                let mut resolved = self.resolve_host(&host, Some((user, port)), layers, config, depth + 1)?;
                // A hop's own `ProxyJump` from the config is replaced by the chain's
                // previous hop, as `ssh -J a,b` does.
                if let Some(prev) = previous.take() {
                    resolved.target.jump = Some(Box::new(prev.target.clone()));
                    jumps.push(prev);
                }
                previous = Some(resolved);
            }
            if let Some(last) = previous {
                target.jump = Some(Box::new(last.target.clone()));
                jumps.push(last);
            }
            let value = jumps.iter().map(|j| j.target.display_name()).collect::<Vec<_>>().join(" → ");
            settings.push(Setting { name: "jump", value, source });
        } else {
            settings.push(Setting { name: "jump", value: "none".into(), source: Source::Default });
        }

        let (file, source) = match (config, pick(layers, |s| s.config_file.clone())) {
            (Some((_, path)), Some((_, source))) => (path.display().to_string(), source),
            (Some((_, path)), None) => (path.display().to_string(), Source::Default),
            (None, _) => ("none (no `~/.ssh/config`)".to_string(), Source::Default),
        };
        settings.push(Setting { name: "config_file", value: file, source });

        Ok(Resolved { target, settings, jumps })
    }
}

impl Resolver {
    /// A file the transport reads by path, checked now so a FIFO or `/dev/zero` is bad
    /// input found before anything runs, not a hang or gigabytes at connect time. A
    /// missing file is the transport's to judge (known_hosts may be created; a default
    /// key may be absent).
    fn check_file(&mut self, path: &Path, setting: &str, source: &Source, limit: u64) -> Result<(), String> {
        let checked = self.files.entry(path.to_path_buf()).or_insert_with(|| match bounded::check(path, limit) {
            Err(e) if !e.is_missing() => {
                let from = match source {
                    Source::SshConfig(config) => format!("from the ssh config `{}`", config.display()),
                    Source::Default => "the default".to_string(),
                    other => format!("from the {other}"),
                };
                Err(format!("cannot read the {setting} `{}` ({from}): {}", path.display(), e.reason()))
            }
            _ => Ok(()),
        });
        checked.clone()
    }
}

/// The first layer that sets a field, and which layer that was.
fn pick<T>(layers: &[Layer], field: impl Fn(&SshSettings) -> Option<T>) -> Option<(T, Source)> {
    layers.iter().find_map(|l| field(l.settings).map(|v| (v, l.source.clone())))
}

fn parse_config(path: &Path) -> Result<Arc<SshConfig>, String> {
    let text = bounded::read_to_string(path, bounded::MAX_SSH_CONFIG_BYTES).map_err(|e| {
        format!(
            "cannot read the ssh config `{}`: {}; fix `ssh.config_file` or create the file",
            path.display(),
            e.reason()
        )
    })?;
    check_includes(path, &text, 0, &mut Vec::new())?;
    // Options planrun does not use (ControlMaster, ForwardAgent …) are allowed: the file
    // is the operator's, written for `ssh`.
    SshConfig::default()
        .home_dir(home_dir())
        .parse(&mut text.as_bytes(), ParseRule::ALLOW_UNKNOWN_FIELDS | ParseRule::ALLOW_UNSUPPORTED_FIELDS)
        .map(Arc::new)
        .map_err(|e| {
            format!(
                "cannot parse the ssh config `{}`: {}; check it with `ssh -G -F {} HOST`",
                path.display(),
                crate::text::lower_first(&e.to_string()),
                path.display()
            )
        })
}

/// OpenSSH's limit on nested `Include`s (`READCONF_MAX_DEPTH`).
const MAX_INCLUDE_DEPTH: usize = 16;

/// More included files than this is a generated config gone wrong: each is read twice.
const MAX_INCLUDED_FILES: usize = 256;

/// Checks every file an ssh config `Include`s, and theirs, the way the plan's config is
/// read: ssh2-config opens them itself, blocking and unbounded, so a FIFO or
/// `/dev/zero` among them is refused here first. `seen` holds the files checked so far,
/// so an include cycle ends here and ssh2-config reports it.
fn check_includes(path: &Path, text: &str, depth: usize, seen: &mut Vec<PathBuf>) -> Result<(), String> {
    for line in text.lines() {
        let line = without_comment(line).trim();
        let (keyword, rest) = line.split_once(|c: char| c.is_whitespace() || c == '=').unwrap_or((line, ""));
        if !keyword.eq_ignore_ascii_case("include") {
            continue;
        }
        let rest = rest.trim().trim_start_matches('=').trim();
        for arg in shlex::split(rest).unwrap_or_else(|| vec![rest.to_string()]) {
            let pattern = include_pattern(&arg);
            // A pattern glob cannot parse, or a file it cannot list, is ssh2-config's to report.
            let Ok(matches) = glob::glob(&pattern) else { continue };
            for included in matches.flatten() {
                let canonical = included.canonicalize().unwrap_or_else(|_| included.clone());
                if seen.contains(&canonical) {
                    continue;
                }
                if seen.len() >= MAX_INCLUDED_FILES || depth >= MAX_INCLUDE_DEPTH {
                    return Err(format!(
                        "the ssh config `{}` includes more than {MAX_INCLUDED_FILES} files or nests `Include` deeper than {MAX_INCLUDE_DEPTH}; check its `Include` lines",
                        path.display()
                    ));
                }
                seen.push(canonical);
                let text = bounded::read_to_string(&included, bounded::MAX_SSH_CONFIG_BYTES).map_err(|e| {
                    format!(
                        "cannot read `{}`, included by the ssh config `{}`: {}; fix the `Include` line",
                        included.display(),
                        path.display(),
                        e.reason()
                    )
                })?;
                check_includes(&included, &text, depth + 1, seen)?;
            }
        }
    }
    Ok(())
}

/// A line up to a `#` outside quotes, as ssh2-config reads it.
fn without_comment(line: &str) -> &str {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted => return &line[..i],
            _ => {}
        }
    }
    line
}

/// Where ssh2-config (like OpenSSH) looks for an `Include` argument: absolute as
/// written, `~/` in the home directory, any other relative path in `~/.ssh`.
fn include_pattern(arg: &str) -> String {
    let home = glob::Pattern::escape(&home_dir().display().to_string());
    if arg.starts_with('/') || (arg.starts_with('~') && !arg.starts_with("~/") && arg != "~") {
        arg.to_string()
    } else if let Some(rest) = arg.strip_prefix('~') {
        format!("{home}{rest}")
    } else {
        format!("{home}/.ssh/{arg}")
    }
}

/// An option ssh2-config keeps as text: its first argument.
fn unsupported(params: &HostParams, key: &str) -> Option<String> {
    params.unsupported_fields.get(key).and_then(|args| args.first()).cloned()
}

fn yes(value: &str) -> bool {
    value.eq_ignore_ascii_case("yes") || value.eq_ignore_ascii_case("true")
}

/// OpenSSH's values: `ask` cannot ask without planrun prompting mid-rollout, so it is
/// `strict`; `no` accepts changed keys too, which is planrun's `off`.
fn strict_host_key_checking(value: &str) -> Option<HostKeyChecking> {
    match value.to_ascii_lowercase().as_str() {
        "yes" | "ask" | "true" => Some(HostKeyChecking::Strict),
        "accept-new" => Some(HostKeyChecking::AcceptNew),
        "no" | "off" | "false" => Some(HostKeyChecking::Off),
        _ => None,
    }
}

fn host_key_checking(policy: model::HostKeyChecking) -> HostKeyChecking {
    match policy {
        model::HostKeyChecking::Strict => HostKeyChecking::Strict,
        model::HostKeyChecking::AcceptNew => HostKeyChecking::AcceptNew,
        model::HostKeyChecking::Off => HostKeyChecking::Off,
    }
}

/// The login name as OpenSSH finds it: `USER`, then `LOGNAME`, then the password
/// database (cron and CI jobs often set neither variable).
pub fn current_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| nix::unistd::User::from_uid(nix::unistd::getuid()).ok().flatten().map(|u| u.name))
        .unwrap_or_else(|| "unknown".into())
}

fn home_dir() -> PathBuf {
    std::env::home_dir().unwrap_or_else(|| PathBuf::from("/"))
}

fn expand_home(path: impl AsRef<Path>) -> PathBuf {
    let path = path.as_ref();
    match path.strip_prefix("~") {
        Ok(rest) => home_dir().join(rest),
        Err(_) => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(yaml: &str) -> Plan {
        crate::validate::load_plan_bytes(Path::new("test.yaml"), yaml.as_bytes())
            .unwrap_or_else(|e| panic!("{}", e.render(false)))
            .plan
    }

    fn source_of<'a>(r: &'a Resolved, name: &str) -> (&'a str, &'a Source) {
        let s = r.settings.iter().find(|s| s.name == name).expect(name);
        (&s.value, &s.source)
    }

    #[test]
    fn hops_parse_like_ssh_j() {
        assert_eq!(parse_hop("bastion").unwrap(), (None, "bastion".into(), None));
        assert_eq!(parse_hop("ops@bastion:2200").unwrap(), (Some("ops".into()), "bastion".into(), Some(2200)));
        assert_eq!(parse_hop("[::1]:22").unwrap(), (None, "::1".into(), Some(22)));
        assert_eq!(parse_hop("::1").unwrap(), (None, "::1".into(), None));
        assert!(parse_hop("bastion:ssh").unwrap_err().contains("`ssh` is not a port"));
        assert!(parse_hop("@bastion").is_err());
        assert!(parse_hop("ops@").is_err());
    }

    #[test]
    fn ssh_config_fills_in_what_the_plan_leaves_out() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        std::fs::write(
            &config,
            "\
Host app*
  HostName 127.0.0.%h-not-used
Host app1
  HostName 127.1.2.3
  User ops
  Port 2200
  IdentityFile /keys/app
  IdentitiesOnly yes
  ProxyJump jumper@gate:2201,gate2
  StrictHostKeyChecking accept-new
  ConnectTimeout 7
  UserKnownHostsFile /keys/known
Host gate2
  HostName 127.9.9.9
  User gateuser
Host *
  User everyone
  ForwardAgent yes
",
        )
        .unwrap();
        let p = plan(&format!(
            "version: 1\napplication: a\nssh: {{ port: 2222, config_file: {} }}\nservers: [{{ host: app1, roles: [a] }}, {{ host: other, roles: [a], ssh: {{ user: deploy }} }}]\nrollout: {{ select: {{ roles: [a] }}, steps: [{{ name: s, run: x }}] }}\n",
            config.display()
        ));
        let mut resolver = Resolver::new();
        let r = resolver.resolve(&p, &p.servers[0]).unwrap();
        let t = &r.target;
        // The first matching `HostName` wins, as in OpenSSH.
        assert_eq!(t.host, "127.0.0.app1-not-used");
        assert_eq!((t.user.as_str(), t.port), ("ops", 2222));
        assert_eq!(source_of(&r, "port").1, &Source::Plan);
        assert_eq!(source_of(&r, "user").1, &Source::SshConfig(config.clone()));
        assert_eq!(t.identity_files, [PathBuf::from("/keys/app")]);
        assert!(t.identities_only);
        assert_eq!(t.known_hosts, PathBuf::from("/keys/known"));
        assert_eq!(t.host_key_checking, HostKeyChecking::AcceptNew);
        assert_eq!(t.connect_timeout, Duration::from_secs(7));
        let last = t.jump.as_deref().expect("jump");
        // The plan's port is the fallback of a jump host whose spec and config give none.
        assert_eq!(last.display_name(), "gateuser@127.9.9.9:2222");
        assert_eq!(last.jump.as_deref().unwrap().display_name(), "jumper@gate:2201");
        assert_eq!(source_of(&r, "jump").0, "jumper@gate:2201 → gateuser@127.9.9.9:2222");

        let r = resolver.resolve(&p, &p.servers[1]).unwrap();
        assert_eq!(source_of(&r, "user"), ("deploy", &Source::Server));
        assert_eq!(source_of(&r, "address"), ("other", &Source::Server));
        assert_eq!(source_of(&r, "jump").0, "none");
        assert!(r.target.jump.is_none());
    }

    #[test]
    fn included_files_count_and_none_turns_a_proxy_jump_off() {
        let dir = tempfile::tempdir().unwrap();
        let included = dir.path().join("fleet.conf");
        std::fs::write(&included, "Host web*\n  HostName 127.3.3.3\n  ProxyJump gate\n").unwrap();
        let config = dir.path().join("config");
        std::fs::write(&config, format!("Include {}\nHost *\n  User ops\n", included.display())).unwrap();
        let p = plan(&format!(
            "version: 1\napplication: a\nssh: {{ config_file: {} }}\nservers: [{{ host: web1, roles: [a] }}, {{ host: web2, roles: [a], ssh: {{ jump: none }} }}]\nrollout: {{ select: {{ roles: [a] }}, steps: [{{ name: s, run: x }}] }}\n",
            config.display()
        ));
        let mut resolver = Resolver::new();
        let r = resolver.resolve(&p, &p.servers[0]).unwrap();
        assert_eq!(r.target.display_name(), "ops@127.3.3.3:22");
        assert_eq!(r.target.jump.as_deref().map(SshTarget::display_name).as_deref(), Some("ops@gate:22"));
        let r = resolver.resolve(&p, &p.servers[1]).unwrap();
        assert!(r.target.jump.is_none());
    }

    #[test]
    fn the_plans_jump_wins_and_a_missing_config_file_is_an_error() {
        let p = plan(
            "version: 1\napplication: a\nssh: { user: deploy, jump: [ops@b1, b2:2200], config_file: /nonexistent/planrun/config }\nservers: [{ host: 10.0.0.1, roles: [a] }]\nrollout: { select: { roles: [a] }, steps: [{ name: s, run: x }] }\n",
        );
        let err = Resolver::new().resolve(&p, &p.servers[0]).unwrap_err();
        assert!(err.starts_with("cannot read the ssh config `/nonexistent/planrun/config`"), "{err}");

        let mut p = p;
        p.ssh.config_file = None;
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "").unwrap();
        p.ssh.config_file = Some(empty.display().to_string());
        let r = Resolver::new().resolve(&p, &p.servers[0]).unwrap();
        assert_eq!(source_of(&r, "jump"), ("ops@b1:22 → deploy@b2:2200", &Source::Plan));
        assert_eq!(r.jumps.len(), 2);
        assert_eq!(source_of(&r.jumps[1], "port"), ("2200", &Source::JumpSpec));
        // The plan's user is for the servers; with nothing else, a jump host gets it too.
        assert_eq!(source_of(&r.jumps[1], "user"), ("deploy", &Source::Plan));
    }
}
