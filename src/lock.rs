//! The rollout lock: two operators on two laptops must not roll the same fleet at once,
//! so the lock lives where every operator's run sees it — by default on the rollout's
//! first server, as a directory made with an atomic `mkdir`, holding a file that names
//! the holder.

use std::sync::Arc;
use std::time::SystemTime;

use crate::graph::ExecutionPlan;
use crate::graph::shell::shell_quote;
use crate::model::{Plan, TransportKind};
use crate::ssh_settings::{Resolver, current_user};
use crate::transport::{Connector, Notices, Stream, Transport, Transports};

/// Where the lock is, resolved from the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockPlace {
    /// Index into `plan.servers`, or `None` for the control machine.
    pub server: Option<usize>,
    pub path: String,
    /// For messages: `app1:/tmp/planrun-shop.lock`.
    pub display: String,
}

/// Who holds a lock, as written in its `holder` file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Holder {
    pub user: String,
    /// The host name, for people.
    pub machine: String,
    /// `/etc/machine-id` and the boot id: host names repeat (CI runners, containers), and
    /// a pid is only meaningful within one boot of one machine.
    pub machine_id: String,
    pub pid: u32,
    pub started: String,
    pub plan: String,
    pub run: String,
    /// `apply --message`: why this run holds the lock.
    pub message: String,
}

impl Holder {
    pub fn me(plan: &str, run: &str) -> Self {
        Holder {
            user: current_user(),
            machine: nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "unknown".into()),
            machine_id: machine_id(),
            pid: std::process::id(),
            started: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            plan: plan.into(),
            run: run.into(),
            message: String::new(),
        }
    }

    pub fn with_message(mut self, message: &str) -> Self {
        // One line in the holder file: control characters would end it or forge another.
        self.message = message.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        self
    }

    fn to_file(&self) -> String {
        format!(
            "user={}\nmachine={}\nmachine_id={}\npid={}\nstarted={}\nplan={}\nrun={}\nmessage={}\n",
            self.user, self.machine, self.machine_id, self.pid, self.started, self.plan, self.run, self.message
        )
    }

    fn parse(text: &str) -> Option<Holder> {
        let mut h = Holder::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else { continue };
            let value = value.to_string();
            match key {
                "user" => h.user = value,
                "machine" => h.machine = value,
                "machine_id" => h.machine_id = value,
                "message" => h.message = value,
                "pid" => h.pid = value.parse().ok()?,
                "started" => h.started = value,
                "plan" => h.plan = value,
                "run" => h.run = value,
                _ => {}
            }
        }
        (!h.machine.is_empty()).then_some(h)
    }

    /// `alice on laptop-3 (pid 4242), since 2026-11-27T18:00:00Z, applying plans/production.yaml: "hotfix 12"`
    pub fn describe(&self) -> String {
        let mut text = format!(
            "{} on {} (pid {}), since {}, applying {}",
            self.user, self.machine, self.pid, self.started, self.plan
        );
        if !self.message.is_empty() {
            text.push_str(&format!(": \"{}\"", self.message));
        }
        text
    }

    /// A holder on this machine, in this boot, whose process is gone: its lock can be
    /// taken over. A holder without a machine id (an older planrun) is never provably gone.
    pub fn provably_gone(&self) -> bool {
        !self.machine_id.is_empty() && self.machine_id == machine_id() && !process_alive(self.pid)
    }
}

/// This machine in this boot: `/etc/machine-id` (or D-Bus's copy) and the kernel's boot
/// id. Empty when neither can be read: such a holder is never taken over.
fn machine_id() -> String {
    let read = |path: &str| std::fs::read_to_string(path).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let machine = read("/etc/machine-id").or_else(|| read("/var/lib/dbus/machine-id"));
    let boot = read("/proc/sys/kernel/random/boot_id");
    match (machine, boot) {
        (Some(machine), Some(boot)) => format!("{machine}/{boot}"),
        (Some(one), None) | (None, Some(one)) => one,
        (None, None) => String::new(),
    }
}

/// Alive and not a zombie: PID 1 here reaps slowly, so `kill -0` says a zombie lives.
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X"))
        }
        Err(_) => false,
    }
}

/// Resolves the plan's `lock` setting: the named server (or `local`), else the first
/// server the plan selects — the same for every operator, whatever their `--limit`.
pub fn place(plan: &Plan, selected: &[usize]) -> LockPlace {
    let settings = plan.lock.clone().unwrap_or_default();
    let path = settings.path.unwrap_or_else(|| format!("/tmp/planrun-{}.lock", plan.application));
    let server = match settings.host.as_deref() {
        Some("local") => None,
        Some(name) => plan.servers.iter().position(|s| s.name.as_deref() == Some(name) || s.host == name),
        None => selected.first().copied(),
    };
    let display = match server {
        Some(i) => format!("{}:{path}", crate::graph::server_name(&plan.servers[i])),
        None => format!("local:{path}"),
    };
    LockPlace { server, path, display }
}

pub enum Acquired {
    Taken,
    /// Taken over from a holder that is provably gone.
    TakenOver(Holder),
}

#[derive(Debug)]
pub enum LockError {
    Held(Holder),
    /// The lock exists without a readable holder (a crash between `mkdir` and writing it).
    Unknown(String),
    Failed(String),
}

/// Takes the lock, or says who holds it.
pub async fn acquire(transport: &Transport, place: &LockPlace, me: &Holder) -> Result<Acquired, LockError> {
    match try_mkdir(transport, place, me).await? {
        LockState::Free => Ok(Acquired::Taken),
        LockState::Held(holder) if holder.provably_gone() => {
            remove(transport, place, Some(&holder.run)).await.map_err(LockError::Failed)?;
            match try_mkdir(transport, place, me).await? {
                LockState::Free => Ok(Acquired::TakenOver(holder)),
                LockState::Held(other) => Err(LockError::Held(other)),
                LockState::HeldUnknown => Err(LockError::Unknown(place.display.clone())),
            }
        }
        LockState::Held(holder) => Err(LockError::Held(holder)),
        LockState::HeldUnknown => Err(LockError::Unknown(place.display.clone())),
    }
}

/// What a lock's directory says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockState {
    Free,
    Held(Holder),
    /// The directory exists without a readable holder (a crash between `mkdir` and
    /// writing the holder file).
    HeldUnknown,
}

impl LockState {
    fn held(answer: &str) -> Self {
        Holder::parse(answer).map_or(LockState::HeldUnknown, LockState::Held)
    }
}

/// `Free` here means this run took it.
async fn try_mkdir(transport: &Transport, place: &LockPlace, me: &Holder) -> Result<LockState, LockError> {
    let dir = shell_quote(&place.path);
    // mkdir is atomic on every POSIX file system: of two operators, exactly one wins.
    let script = format!(
        "if mkdir {dir} 2>/dev/null; then \
           if printf %s {holder} > {dir}/holder; then echo PLANRUN-LOCK-ACQUIRED; \
           else rm -rf {dir}; echo PLANRUN-LOCK-UNWRITABLE; fi; \
         else echo PLANRUN-LOCK-HELD; cat {dir}/holder 2>/dev/null; fi; true",
        holder = shell_quote(&me.to_file()),
    );
    let out = run(transport, &script).await.map_err(LockError::Failed)?;
    if out.starts_with("PLANRUN-LOCK-ACQUIRED") {
        Ok(LockState::Free)
    } else if out.starts_with("PLANRUN-LOCK-UNWRITABLE") {
        Err(LockError::Failed(format!(
            "cannot write the holder file in `{}` (is the disk full?); the lock was not taken",
            place.display
        )))
    } else if let Some(rest) = out.strip_prefix("PLANRUN-LOCK-HELD") {
        Ok(LockState::held(rest))
    } else {
        Err(LockError::Failed(format!("unexpected answer while taking the lock `{}`: {out}", place.display)))
    }
}

/// Reads the lock.
pub async fn status(transport: &Transport, place: &LockPlace) -> Result<LockState, String> {
    let dir = shell_quote(&place.path);
    let out = run(
        transport,
        &format!("if [ -d {dir} ]; then echo HELD; cat {dir}/holder 2>/dev/null; else echo FREE; fi; true"),
    )
    .await?;
    Ok(out.strip_prefix("HELD").map_or(LockState::Free, LockState::held))
}

/// Removes the lock; with `run`, only if that run holds it (so a run never frees a lock
/// someone else took after breaking ours).
pub async fn remove(transport: &Transport, place: &LockPlace, run_id: Option<&str>) -> Result<(), String> {
    let dir = shell_quote(&place.path);
    let script = match run_id {
        Some(run) => {
            format!("grep -qx {} {dir}/holder 2>/dev/null && rm -rf {dir}; true", shell_quote(&format!("run={run}")))
        }
        None => format!("rm -rf {dir}"),
    };
    run(transport, &script).await.map(|_| ())
}

async fn run(transport: &Transport, script: &str) -> Result<String, String> {
    // Standard output only: a server's login messages ("Could not chdir to home
    // directory …") come on standard error and must not be read as the lock's answer.
    let mut lines = Vec::new();
    let exit = transport
        .exec_lines(script, Some(std::time::Duration::from_secs(30)), &mut lines)
        .await
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    for line in lines.iter().filter(|line| line.stream == Stream::Stdout) {
        out.push_str(&line.line);
        out.push('\n');
    }
    if exit.success() { Ok(out) } else { Err(format!("the lock command failed ({exit}): {}", out.trim())) }
}

/// The lock's host: the run's own connection to it, the control machine, or a new
/// connection when `--limit` left that host out of the run.
pub async fn transport(
    plan: &Plan,
    place: &LockPlace,
    exec: &ExecutionPlan,
    transports: &Transports,
    notices: Notices,
) -> Result<Arc<Transport>, String> {
    if let Some(host) = connected_host(exec, place)
        && let Some(t) = transports.hosts.get(&host)
    {
        return Ok(t.clone());
    }
    if is_local(plan, place) {
        return Ok(transports.local.clone());
    }
    let server = place.server.map(|s| &plan.servers[s]).ok_or("no lock host")?;
    let target = Resolver::new().resolve(plan, server)?.target;
    Connector::with_notices(notices)
        .connect(&target)
        .await
        .map(|s| Arc::new(Transport::Ssh(s)))
        .map_err(|e| e.to_string())
}

/// Whether the lock lives on the control machine.
fn is_local(plan: &Plan, place: &LockPlace) -> bool {
    place.server.is_none_or(|s| plan.servers[s].transport == TransportKind::Local)
}

/// Index into `exec.hosts` of the lock's server, when the run connects to it anyway.
fn connected_host(exec: &ExecutionPlan, place: &LockPlace) -> Option<usize> {
    let server = place.server?;
    exec.hosts.iter().position(|h| h.server == server)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_round_trips() {
        let h = Holder::me("plans/p.yaml", "run-1");
        assert_eq!(Holder::parse(&h.to_file()), Some(h));
    }

    #[test]
    fn a_dead_pid_on_this_machine_is_gone() {
        let mut h = Holder::me("p", "r");
        assert!(!h.provably_gone(), "this process is alive");
        h.pid = u32::MAX - 1;
        assert!(h.provably_gone());
        h.machine_id = "another-machine/another-boot".into();
        assert!(!h.provably_gone(), "another machine's process cannot be checked, whatever its host name");
        h.machine_id = String::new();
        assert!(!h.provably_gone(), "a holder without a machine id is never taken over");
    }
}
