//! What an SSH rollout costs against real sshd on loopback, next to plain `ssh`.
//!
//! `cargo bench --bench ssh_rollout` starts 50 sshd "hosts" and measures, as medians of
//! three runs of the release binary:
//! - a bare `ssh host true` loop over 20 hosts, one after another;
//! - `planrun apply` of a 1-step no-op rollout over the same 20 hosts, batch size 1;
//! - the same with 4 no-op steps (connection reuse is what keeps this cheap);
//! - a 0.2 s step on 50 hosts one after another, against the same step fanned out in
//!   `before` (16 at a time).
//!
//! Targets (issue 4): 1-step ≤ 1.5 × the ssh loop; 4-step ≤ 2 × 1-step; fan-out ≤ ¼ of
//! sequential. The numbers are printed, not asserted: a benchmark informs, a test judges.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::Fleet;

const RUNS: usize = 3;

fn main() {
    if support::find_tool("sshd").is_none() || support::find_tool("ssh").is_none() {
        eprintln!("skipping: sshd and ssh are needed (apt-get install openssh-server openssh-client)");
        return;
    }
    let fleet = Fleet::start(50);
    let dir = tempfile::tempdir().expect("temp dir");
    let planrun = env!("CARGO_BIN_EXE_planrun");
    let twenty = &fleet.hosts()[..20];

    let ssh_loop = median(|| {
        let started = Instant::now();
        for host in twenty {
            let ok = Command::new("ssh")
                .args(["-F", "/dev/null", "-i"])
                .arg(&fleet.client_key)
                .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o"])
                .arg(format!("UserKnownHostsFile={}", fleet.known_hosts.display()))
                .args(["-p", &host.port.to_string(), &format!("{}@{}", fleet.user, host.addr), "true"])
                .stdin(Stdio::null())
                .status()
                .expect("ssh runs")
                .success();
            assert!(ok, "ssh to {} failed", host.addr);
        }
        started.elapsed()
    });

    let one_step = write_plan(&fleet, dir.path(), "one.yaml", 20, "", &steps(1), "1");
    let four_steps = write_plan(&fleet, dir.path(), "four.yaml", 20, "", &steps(4), "1");
    let sequential = write_plan(&fleet, dir.path(), "seq.yaml", 50, "", "    - { name: work, run: sleep 0.2 }\n", "1");
    let fanned = write_plan(
        &fleet,
        dir.path(),
        "fan.yaml",
        50,
        "before:\n  - { name: work, run: sleep 0.2 }\n",
        &steps(1),
        "\"100%\"",
    );

    let apply = |plan: &Path| {
        median(|| {
            let started = Instant::now();
            let out = Command::new(planrun)
                .args(["apply", "--yes"])
                .arg(plan)
                .stdin(Stdio::null())
                .output()
                .expect("planrun runs");
            assert!(
                out.status.success(),
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            started.elapsed()
        })
    };
    let one = apply(&one_step);
    let four = apply(&four_steps);
    let seq = apply(&sequential);
    let fan = apply(&fanned);

    println!("ssh rollout benchmark (medians of {RUNS} runs, loopback sshd, release build)");
    println!("  ssh loop, `true` on 20 hosts one by one    {:>7.2} s", ssh_loop.as_secs_f64());
    println!(
        "  apply, 1 no-op step, 20 hosts, batch 1     {:>7.2} s   {:.2} × the ssh loop (target ≤ 1.5)",
        one.as_secs_f64(),
        one.as_secs_f64() / ssh_loop.as_secs_f64()
    );
    println!(
        "  apply, 4 no-op steps, 20 hosts, batch 1    {:>7.2} s   {:.2} × the 1-step run (target ≤ 2)",
        four.as_secs_f64(),
        four.as_secs_f64() / one.as_secs_f64()
    );
    println!("  apply, `sleep 0.2` on 50 hosts one by one  {:>7.2} s", seq.as_secs_f64());
    println!(
        "  apply, `sleep 0.2` fanned out in `before`   {:>7.2} s   {:.2} × sequential (target ≤ 0.25)",
        fan.as_secs_f64(),
        fan.as_secs_f64() / seq.as_secs_f64()
    );
}

fn steps(n: usize) -> String {
    (1..=n).map(|i| format!("    - {{ name: step{i}, run: \"true\" }}\n")).collect()
}

fn write_plan(
    fleet: &Fleet,
    dir: &Path,
    name: &str,
    hosts: usize,
    before: &str,
    steps: &str,
    batch: &str,
) -> std::path::PathBuf {
    let servers: String = fleet.hosts()[..hosts]
        .iter()
        .map(|h| format!("  - {{ host: \"{}\", name: h{}, roles: [app] }}\n", h.addr, h.index))
        .collect();
    let text = format!(
        "version: 1\napplication: bench\nssh:\n  user: {}\n  port: {}\n  identity_file: {}\n  known_hosts: {}\n\
         servers:\n{servers}{before}rollout:\n  select: {{ roles: [app] }}\n  batch_size: {batch}\n  steps:\n{steps}",
        fleet.user,
        fleet.host(1).port,
        fleet.client_key.display(),
        fleet.known_hosts.display(),
    );
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write plan");
    path
}

fn median(mut run: impl FnMut() -> Duration) -> Duration {
    let mut times: Vec<Duration> = (0..RUNS).map(|_| run()).collect();
    times.sort();
    times[RUNS / 2]
}
