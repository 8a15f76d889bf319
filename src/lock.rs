//! The rollout lock: two operators on two laptops must not roll the same fleet at once,
//! so the lock lives where every operator's run sees it — by default on the rollout's
//! first server, as a directory made with an atomic `mkdir`, holding a file that names
//! the holder.

use std::time::SystemTime;

use tokio::sync::mpsc;

use crate::graph::ExecutionPlan;
use crate::graph::shell::shell_quote;
use crate::model::{Plan, TransportKind};
use crate::transport::Transport;

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
    pub machine: String,
    pub pid: u32,
    pub started: String,
    pub plan: String,
    pub run: String,
}

impl Holder {
    pub fn me(plan: &str, run: &str) -> Self {
        Holder {
            user: current_user(),
            machine: nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "unknown".into()),
            pid: std::process::id(),
            started: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            plan: plan.into(),
            run: run.into(),
        }
    }

    fn to_file(&self) -> String {
        format!(
            "user={}\nmachine={}\npid={}\nstarted={}\nplan={}\nrun={}\n",
            self.user, self.machine, self.pid, self.started, self.plan, self.run
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
                "pid" => h.pid = value.parse().ok()?,
                "started" => h.started = value,
                "plan" => h.plan = value,
                "run" => h.run = value,
                _ => {}
            }
        }
        (!h.machine.is_empty()).then_some(h)
    }

    /// `alice on laptop-3 (pid 4242), since 2026-11-27T18:00:00Z, applying plans/production.yaml`
    pub fn describe(&self) -> String {
        format!("{} on {} (pid {}), since {}, applying {}", self.user, self.machine, self.pid, self.started, self.plan)
    }

    /// A holder on this machine whose process is gone: its lock can be taken over.
    fn provably_gone(&self) -> bool {
        let here = Holder::me("", "").machine;
        self.machine == here && !process_alive(self.pid)
    }
}

/// The login name, from the password database when the environment does not say (as
/// under cron or CI).
pub fn current_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| nix::unistd::User::from_uid(nix::unistd::getuid()).ok().flatten().map(|u| u.name))
        .unwrap_or_else(|| "unknown".into())
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
        None => Ok(Acquired::Taken),
        Some(Some(holder)) if holder.provably_gone() => {
            remove(transport, place, Some(&holder.run)).await.map_err(LockError::Failed)?;
            match try_mkdir(transport, place, me).await? {
                None => Ok(Acquired::TakenOver(holder)),
                Some(Some(other)) => Err(LockError::Held(other)),
                Some(None) => Err(LockError::Unknown(place.display.clone())),
            }
        }
        Some(Some(holder)) => Err(LockError::Held(holder)),
        Some(None) => Err(LockError::Unknown(place.display.clone())),
    }
}

/// `None`: acquired. `Some(holder)`: held by someone else (holder unreadable: `None`).
async fn try_mkdir(transport: &Transport, place: &LockPlace, me: &Holder) -> Result<Option<Option<Holder>>, LockError> {
    let dir = shell_quote(&place.path);
    // mkdir is atomic on every POSIX file system: of two operators, exactly one wins.
    let script = format!(
        "if mkdir {dir} 2>/dev/null; then printf %s {holder} > {dir}/holder && echo PLANRUN-LOCK-ACQUIRED; \
         else echo PLANRUN-LOCK-HELD; cat {dir}/holder 2>/dev/null; fi",
        holder = shell_quote(&me.to_file()),
    );
    let out = run(transport, &script).await.map_err(LockError::Failed)?;
    if out.starts_with("PLANRUN-LOCK-ACQUIRED") {
        Ok(None)
    } else if let Some(rest) = out.strip_prefix("PLANRUN-LOCK-HELD") {
        Ok(Some(Holder::parse(rest)))
    } else {
        Err(LockError::Failed(format!("unexpected answer while taking the lock `{}`: {out}", place.display)))
    }
}

/// Reads the lock: `Ok(None)` when free.
pub async fn status(transport: &Transport, place: &LockPlace) -> Result<Option<Option<Holder>>, String> {
    let dir = shell_quote(&place.path);
    let out =
        run(transport, &format!("if [ -d {dir} ]; then echo HELD; cat {dir}/holder 2>/dev/null; else echo FREE; fi"))
            .await?;
    Ok(out.strip_prefix("HELD").map(Holder::parse))
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
    let (tx, mut rx) = mpsc::unbounded_channel();
    let exit = transport.exec(script, Some(std::time::Duration::from_secs(30)), tx).await.map_err(|e| e.to_string())?;
    // Standard output only: a server's login messages ("Could not chdir to home
    // directory …") come on standard error and must not be read as the lock's answer.
    let mut out = String::new();
    while let Ok(line) = rx.try_recv() {
        if line.stream == crate::transport::Stream::Stdout {
            out.push_str(&line.line);
            out.push('\n');
        }
    }
    if exit.success() { Ok(out) } else { Err(format!("the lock command failed ({exit}): {}", out.trim())) }
}

/// The transport to reach the lock: the host's own when the run already connected to it.
pub fn is_local(plan: &Plan, place: &LockPlace) -> bool {
    place.server.is_none_or(|s| plan.servers[s].transport == TransportKind::Local)
}

/// Index into `exec.hosts` of the lock's server, when the run connects to it anyway.
pub fn connected_host(exec: &ExecutionPlan, place: &LockPlace) -> Option<usize> {
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
        h.machine = "another-machine".into();
        assert!(!h.provably_gone(), "another machine's process cannot be checked");
    }
}
