//! The safe rolling restart against its floor and against a shell loop (issue 16).
//!
//! `cargo bench --bench safe_rollout` starts real sshd hosts on loopback, each with its
//! app, behind a real HAProxy (health checks `inter 500ms rise 2`, `GET /ready`), and a
//! bounded load through the frontend for every run. Each scenario rolls the fleet the
//! safe way — out of rotation, restart, back in rotation and wait until HAProxy's own
//! checks report the node UP — three times with planrun, three times with a
//! reference: a bash loop with `ssh`, HAProxy's runtime socket and a 50 ms poll, the
//! batch's hosts side by side, and three times with Capistrano doing the same
//! (`on roles(:app), in: :groups, limit: BATCH`; skipped, saying why, without `cap`). It
//! prints medians and three ratios:
//!
//! - planrun / reference, planrun / Capistrano;
//! - planrun / floor, where the floor is what no tool can beat: per batch, the slowest
//!   host's restart (its restart script's begin → the app started, from the apps'
//!   record) plus HAProxy's own
//!   re-admission (leaving maintenance → UP, from HAProxy's log), summed over batches,
//!   measured on planrun's own runs.
//!
//! Every run must lose no request through the frontend; the benchmark fails loudly
//! otherwise. Scenarios: `SAFE_ROLLOUT=20:1,200:20` (hosts:batch size, the default).
//! Then one command on every host of the largest scenario, 16 and 64 at a time, with
//! `planrun exec` and with `xargs -P … ssh`; `SAFE_ROLLOUT=200:0` measures only that.
//! Numbers are printed, not asserted: a benchmark informs, a test judges.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::Fleet;
use support::apps::{Apps, Load};
use support::haproxy::Haproxy;

const RUNS: usize = 3;
const APP_PORT: u16 = 8080;

fn main() {
    for tool in ["sshd", "ssh", "haproxy", "python3", "bash"] {
        if support::find_tool(tool).is_none() {
            eprintln!("skipping: `{tool}` is needed (bash .ci/run installs every tool)");
            return;
        }
    }
    let scenarios: Vec<(usize, usize)> = std::env::var("SAFE_ROLLOUT")
        .unwrap_or_else(|_| "20:1,200:20".into())
        .split(',')
        .map(|s| {
            let (n, b) = s.split_once(':').expect("SAFE_ROLLOUT is hosts:batch,…");
            (n.trim().parse().expect("hosts"), b.trim().parse().expect("batch size"))
        })
        .collect();
    let capistrano = find_capistrano();
    if let Err(why) = &capistrano {
        eprintln!("skipping Capistrano: {why}");
    }
    let most = scenarios.iter().map(|s| s.0).max().unwrap_or(20);
    let started = Instant::now();
    let fleet = Fleet::start(most);
    let work = tempfile::tempdir().expect("temp dir");
    let addrs: Vec<String> = fleet.hosts().iter().map(|h| h.addr.clone()).collect();
    let dirs: Vec<PathBuf> = fleet.hosts().iter().map(|h| h.dir.clone()).collect();
    let apps = Apps::start(dirs.clone(), addrs.clone(), APP_PORT, work.path().join("record"));
    for (i, d) in dirs.iter().enumerate() {
        std::fs::write(d.join("www/ready"), "ok\n").unwrap();
        // The restart both tools run: the app's own restart, stamped where it begins so
        // the floor counts all of it (stopping included) but no tool's overhead.
        let restart = d.join("restart");
        std::fs::write(
            &restart,
            format!(
                "#!/bin/sh\necho \"begin h{} $(date +%Y-%m-%dT%H:%M:%S.%6N%:z)\" >> {}\nexec {}/app restart\n",
                i + 1,
                apps.record.display(),
                d.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&restart, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    eprintln!("{most} hosts up in {:.1} s", started.elapsed().as_secs_f64());

    println!(
        "safe rolling restart (medians of {RUNS} runs, release build, loopback sshd + HAProxy, load through the frontend)"
    );
    for (hosts, batch) in scenarios.into_iter().filter(|s| s.1 > 0) {
        let backends: Vec<(String, String, u16)> =
            addrs[..hosts].iter().enumerate().map(|(i, a)| (format!("h{}", i + 1), a.clone(), APP_PORT)).collect();
        let haproxy = Haproxy::start_with(&backends, "  option httpchk GET /ready\n");
        haproxy.wait_all_up(Duration::from_secs(60));
        let plan = write_plan(&fleet, work.path(), hosts, batch, &haproxy.socket());
        let script = write_reference(&fleet, work.path(), hosts, batch, haproxy.admin_port);
        let capfile =
            capistrano.is_ok().then(|| write_capistrano(&fleet, work.path(), hosts, batch, haproxy.admin_port));

        let mut steps = Vec::new();
        let (mut ours, mut theirs, mut floors, mut readies, mut requests) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), 0);
        let mut caps = Vec::new();
        let mut batches: Vec<Batch> = Vec::new();
        for _ in 0..RUNS {
            let log_from = haproxy.log().len();
            let _ = std::fs::remove_file(&apps.record);
            let mut ready = 0.0;
            let mut events = Vec::new();
            let (took, sent) = under_load(&haproxy, || {
                let (took, first_batch) = apply(&plan, work.path(), &mut steps, &mut events);
                ready = first_batch;
                took
            });
            ours.push(took);
            readies.push(ready);
            requests += sent;
            let timeline = Timeline::read(&haproxy.log()[log_from..], &apps.record, &events);
            floors.push(timeline.floor(hosts, batch));
            batches.extend(timeline.batches(hosts, batch));
            haproxy.wait_all_up(Duration::from_secs(30));
            let (took, sent) = under_load(&haproxy, || run(Command::new("bash").arg(&script)));
            theirs.push(took);
            requests += sent;
            haproxy.wait_all_up(Duration::from_secs(30));
            if let (Ok(cap), Some(project)) = (&capistrano, &capfile) {
                let (took, sent) = under_load(&haproxy, || {
                    run(Command::new(cap).args(["bench", "roll"]).current_dir(project).stdout(Stdio::null()))
                });
                caps.push(took);
                requests += sent;
                haproxy.wait_all_up(Duration::from_secs(30));
            }
        }
        let (ours, theirs, floor) = (median(ours), median(theirs), median(floors));
        println!("  N={hosts}, batch {batch}:");
        println!("    planrun apply                          {:>7.2} s", ours);
        println!(
            "    reference (bash, ssh, socket, 50 ms)   {:>7.2} s   planrun {:.2} × the reference",
            theirs,
            ours / theirs
        );
        match &capistrano {
            Ok(_) => {
                let cap = median(caps);
                let label = format!("Capistrano (in: :groups, limit: {batch})");
                println!("    {label:<38} {:>7.2} s   planrun {:.2} × Capistrano", cap, ours / cap);
            }
            Err(why) => println!("    Capistrano: skipped, {why}"),
        }
        println!(
            "    floor (restart + HAProxy re-admission) {:>7.2} s   planrun {:.2} × the floor",
            floor,
            ours / floor
        );
        println!("    of which connections, lock and pre-flight {:>7.2} s", median(readies));
        let mut names: Vec<&str> = steps.iter().map(|(s, _)| s.as_str()).collect();
        names.dedup();
        names.sort();
        names.dedup();
        let per_host: Vec<String> = names
            .iter()
            .map(|name| {
                let took: Vec<f64> = steps.iter().filter(|(s, _)| s == name).map(|(_, t)| *t).collect();
                format!("{name} {:.3} s", took.iter().sum::<f64>() / took.len() as f64)
            })
            .collect();
        println!("    a host's steps (means): {}", per_host.join(", "));
        let mean = |f: fn(&Batch) -> f64| batches.iter().map(f).sum::<f64>() / batches.len().max(1) as f64;
        println!(
            "    a batch (means over {} batches, its last host to finish): {:.3} s = to its restart {:.3} + restart {:.3} \
             + to leaving maint {:.3} + HAProxy re-admission {:.3} + noticing UP {:.3} + to the next batch {:.3}",
            batches.len(),
            mean(|b| b.total),
            mean(|b| b.dispatch),
            mean(|b| b.restart),
            mean(|b| b.hand_back),
            mean(|b| b.readmission),
            mean(|b| b.notice),
            mean(|b| b.gap),
        );
        println!("    requests through the frontend: {requests}, failed: 0");
    }
    fan_out(&fleet, work.path(), most);
    drop(apps);
}

/// One command on every host, 16 at a time: `planrun exec` against `xargs -P 16 ssh`
/// with the cheap key exchange (issue 16 d). Both open a connection per host and run
/// `true`; the sshd side (a fork and exec per connection) is the same for both.
fn fan_out(fleet: &Fleet, dir: &Path, hosts: usize) {
    let plan = write_plan(fleet, dir, hosts, 1, "tcp://127.0.0.1:9");
    let list: String = fleet.hosts()[..hosts].iter().map(|h| format!("{}\n", h.addr)).collect();
    std::fs::write(dir.join("addresses"), list).unwrap();
    let xargs = format!(
        "xargs -P 16 -I HOST ssh -F /dev/null -i {key} -o BatchMode=yes -o StrictHostKeyChecking=yes \
         -o UserKnownHostsFile={known} -o KexAlgorithms=curve25519-sha256 -p {port} {user}@HOST true < {list}",
        key = fleet.client_key.display(),
        known = fleet.known_hosts.display(),
        port = fleet.host(1).port,
        user = fleet.user,
        list = dir.join("addresses").display(),
    );
    println!("fan-out: `true` on {hosts} hosts (medians of {RUNS} runs), a connection per host:");
    for width in [16, 64] {
        let xargs = xargs.replace("xargs -P 16", &format!("xargs -P {width}"));
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..RUNS {
            ours.push(run(Command::new(env!("CARGO_BIN_EXE_planrun"))
                .args(["exec", "--fan-out", &width.to_string()])
                .arg(&plan)
                .args(["--", "true"])
                .current_dir(dir)
                .stdout(Stdio::null())));
            theirs.push(run(Command::new("sh").args(["-c", &xargs]).stdout(Stdio::null())));
        }
        let (ours, theirs) = (median(ours), median(theirs));
        println!("    planrun exec --fan-out {width:<3}            {:>7.2} s", ours);
        println!(
            "    xargs -P {width:<3} ssh (curve25519)         {:>7.2} s   planrun {:.2} × xargs",
            theirs,
            ours / theirs
        );
    }
}

/// Runs `rollout` with a bounded load through HAProxy; panics when a request failed.
fn under_load(haproxy: &Haproxy, rollout: impl FnOnce() -> f64) -> (f64, u64) {
    let load = Load::start(haproxy.frontend_port, "/health", 2, 200_000, Duration::from_secs(600));
    std::thread::sleep(Duration::from_millis(200));
    let took = rollout();
    let result = load.finish();
    assert_eq!(result.failed, 0, "requests failed during the rollout: {:?}", result.examples);
    (took, result.sent)
}

/// `planrun apply` of `plan`: its wall time, and the time until its first batch started
/// (every connection open, the lock taken, the pre-flight done), from its JSON events.
fn apply(plan: &Path, dir: &Path, steps: &mut Vec<(String, f64)>, events: &mut Vec<serde_json::Value>) -> (f64, f64) {
    use std::io::BufRead;
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_planrun"))
        .args(["apply", "--yes", "--output", "json"])
        .arg(plan)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("apply.err")).unwrap())
        .spawn()
        .expect("planrun starts");
    let mut first_batch = None;
    let mut lines = Vec::new();
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap_or_default();
        if first_batch.is_none() && line.contains(r#""event":"batch_started""#) {
            first_batch = Some(started.elapsed().as_secs_f64());
        }
        if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) {
            if event["event"] == "step_finished"
                && let (Some(step), Some(took)) = (event["step"].as_str(), event["duration"].as_f64())
            {
                steps.push((step.to_string(), took));
            }
            events.push(event);
        }
        lines.push(line);
    }
    let status = child.wait().expect("planrun ends");
    let took = started.elapsed().as_secs_f64();
    let stderr = std::fs::read_to_string(dir.join("apply.err")).unwrap_or_default();
    assert!(status.success(), "planrun failed:\n{}\n{stderr}", lines.join("\n"));
    (took, first_batch.expect("a batch started"))
}

fn run(command: &mut Command) -> f64 {
    let started = Instant::now();
    let out = command.stdin(Stdio::null()).output().expect("the rollout starts");
    let took = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "the rollout failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn write_plan(fleet: &Fleet, dir: &Path, hosts: usize, batch: usize, socket: &str) -> PathBuf {
    let servers: String = fleet.hosts()[..hosts]
        .iter()
        .map(|h| {
            format!(
                "  - {{ host: \"{}\", name: h{}, roles: [app], options: {{ dir: \"{}\" }} }}\n",
                h.addr,
                h.index,
                h.dir.display()
            )
        })
        .collect();
    let text = format!(
        r#"version: 1
application: bench
{ssh}servers:
{servers}balancers:
  edge: {{ kind: haproxy, socket: "{socket}", backend: app }}
rollout:
  select: {{ roles: [app] }}
  batch_size: {batch}
  steps:
    - name: reject
      balancer: {{ use: edge, action: reject, node: "{{{{host.name}}}}" }}
    - name: restart
      run: "{{{{host.options.dir}}}}/restart"
      timeout: 30s
    - name: accept
      balancer: {{ use: edge, action: accept, node: "{{{{host.name}}}}" }}
      timeout: 20s
"#,
        ssh = fleet.ssh_yaml()
    );
    let path = dir.join(format!("plan-{hosts}-{batch}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// The reference: what a careful operator writes by hand. The same three moves as the
/// plan (HAProxy `maint` and waiting for its sessions to end; `drain` → `health down` →
/// `ready` and waiting for UP), one `ssh` per host with the cheap key exchange.
fn write_reference(fleet: &Fleet, dir: &Path, hosts: usize, batch: usize, admin_port: u16) -> PathBuf {
    let mut list = String::new();
    for h in &fleet.hosts()[..hosts] {
        list.push_str(&format!("h{} {} {}\n", h.index, h.addr, h.dir.display()));
    }
    let text = format!(
        r#"set -eu
hap() {{ exec 3<>/dev/tcp/127.0.0.1/{admin_port}; printf '%s\n' "$1" >&3; cat <&3; exec 3<&-; }}
field() {{ hap "show stat" | awk -F, -v s="$1" -v f="$2" '$1=="app" && $2==s {{ print $f }}'; }}
roll() {{
  hap "set server app/$1 state maint" >/dev/null
  while [ "$(field "$1" 5)" != 0 ]; do sleep 0.05; done
  ssh -F /dev/null -i {key} -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile={known} \
    -o KexAlgorithms=curve25519-sha256 -p {port} {user}@"$2" "$3/restart" </dev/null
  hap "set server app/$1 state drain" >/dev/null
  hap "set server app/$1 health down" >/dev/null
  hap "set server app/$1 state ready" >/dev/null
  while [ "$(field "$1" 18)" != UP ]; do sleep 0.05; done
}}
n=0
while read -r name addr dir; do
  roll "$name" "$addr" "$dir" &
  n=$((n + 1))
  if [ $((n % {batch})) = 0 ]; then wait; fi
done <<'HOSTS'
{list}HOSTS
wait
"#,
        key = fleet.client_key.display(),
        known = fleet.known_hosts.display(),
        port = fleet.host(1).port,
        user = fleet.user,
    );
    let path = dir.join(format!("reference-{hosts}-{batch}.sh"));
    std::fs::write(&path, text).unwrap();
    path
}

/// `cap`, when Capistrano is installed and runs; otherwise why it is left out.
fn find_capistrano() -> Result<PathBuf, String> {
    let cap = support::find_tool("cap").ok_or("`cap` is not installed (apt-get install capistrano)")?;
    match Command::new(&cap).arg("--version").stdin(Stdio::null()).output() {
        Ok(out) if out.status.success() => Ok(cap),
        Ok(out) => Err(format!("`cap --version` failed: {}", String::from_utf8_lossy(&out.stderr).trim())),
        Err(e) => Err(format!("`cap` does not start: {e}")),
    }
}

/// Capistrano doing the reference's work, as its users write it: a stage of the fleet's
/// hosts (the same user, key, port and known_hosts as the reference; ECDH on nistp256,
/// as net-ssh has no curve25519 without the x25519 gem, which Debian does not package) and one task `on roles(:app), in: :groups, limit: BATCH`: HAProxy
/// `maint` and waiting for the node's sessions to end, the restart over SSH, `drain` →
/// `health down` → `ready` and a 50 ms poll until UP. The runtime API is spoken from
/// Ruby (a TCP connection per command, as the reference's `/dev/tcp`), which spares
/// Capistrano a process per HAProxy command. `wait: 0`: SSHKit's group runner sleeps 2 s
/// between groups by default, a pause rather than work, so it is not counted against it.
fn write_capistrano(fleet: &Fleet, dir: &Path, hosts: usize, batch: usize, admin_port: u16) -> PathBuf {
    let project = dir.join(format!("capistrano-{hosts}-{batch}"));
    std::fs::create_dir_all(project.join("config/deploy")).unwrap();
    let capfile = format!(
        r##"require "capistrano/setup"
require "socket"

def hap(command)
  socket = TCPSocket.new("127.0.0.1", {admin_port})
  socket.write("#{{command}}\n")
  socket.read
ensure
  socket&.close
end

# Field `column` (1-based, as awk counts) of server `node` in backend `app`.
def field(node, column)
  hap("show stat").each_line do |line|
    fields = line.chomp.split(",")
    return fields[column - 1] if fields[0] == "app" && fields[1] == node
  end
  nil
end

task :roll do
  on roles(:app), in: :groups, limit: {batch}, wait: 0 do |host|
    node = host.properties.fetch(:node)
    hap("set server app/#{{node}} state maint")
    sleep 0.05 until field(node, 5) == "0"
    execute "#{{host.properties.fetch(:dir)}}/restart </dev/null"
    hap("set server app/#{{node}} state drain")
    hap("set server app/#{{node}} health down")
    hap("set server app/#{{node}} state ready")
    sleep 0.05 until field(node, 18) == "UP"
  end
end
"##
    );
    std::fs::write(project.join("Capfile"), capfile).unwrap();
    let deploy = format!(
        r#"set :application, "bench"
set :scm, nil
set :ssh_options, {{
  user: "{user}",
  port: {port},
  keys: ["{key}"],
  keys_only: true,
  auth_methods: %w[publickey],
  kex: %w[ecdh-sha2-nistp256],
  config: false,
  non_interactive: true,
  verify_host_key: :always,
  user_known_hosts_file: "{known}",
  global_known_hosts_file: [],
}}
"#,
        user = fleet.user,
        port = fleet.host(1).port,
        key = fleet.client_key.display(),
        known = fleet.known_hosts.display(),
    );
    std::fs::write(project.join("config/deploy.rb"), deploy).unwrap();
    let servers: String = fleet.hosts()[..hosts]
        .iter()
        .map(|h| {
            format!("server \"{}\", roles: %w[app], node: \"h{}\", dir: \"{}\"\n", h.addr, h.index, h.dir.display())
        })
        .collect();
    std::fs::write(project.join("config/deploy/bench.rb"), servers).unwrap();
    project
}

/// Seconds since midnight of an ISO timestamp (`2026-12-02T01:02:03.456789+00:00`).
fn seconds(stamp: &str) -> Option<f64> {
    let time = stamp.split('T').nth(1)?;
    let hms = time.get(..time.find(['+', '-', 'Z']).unwrap_or(time.len()))?;
    let mut parts = hms.split(':');
    let (h, m, s): (f64, f64, f64) =
        (parts.next()?.parse().ok()?, parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
    Some(h * 3600.0 + m * 60.0 + s)
}

/// When each host's restart began and its app started (the apps' record), when it left
/// maintenance and came UP (HAProxy's log), and planrun's batches and accepts (its JSON
/// events), in seconds since midnight (the machine's clock is UTC).
struct Timeline {
    restart: HashMap<String, (f64, f64)>,
    readmit: HashMap<String, (f64, f64)>,
    batch_started: Vec<f64>,
    run_finished: f64,
    accepted: HashMap<String, f64>,
}

/// Where one batch's time went, along its last host to finish.
struct Batch {
    total: f64,
    dispatch: f64,
    restart: f64,
    hand_back: f64,
    readmission: f64,
    notice: f64,
    gap: f64,
}

impl Timeline {
    fn read(haproxy_log: &str, record: &Path, events: &[serde_json::Value]) -> Timeline {
        let mut restart: HashMap<String, (f64, f64)> = HashMap::new();
        for line in std::fs::read_to_string(record).unwrap_or_default().lines() {
            let mut f = line.split(' ');
            let (Some(event), Some(host), Some(stamp)) = (f.next(), f.next(), f.next()) else { continue };
            let Some(at) = seconds(stamp) else { continue };
            let entry = restart.entry(host.to_string()).or_insert((f64::NAN, f64::NAN));
            match event {
                "begin" => entry.0 = at,
                "start" => entry.1 = at,
                _ => {}
            }
        }
        let mut readmit: HashMap<String, (f64, f64)> = HashMap::new();
        for line in haproxy_log.lines() {
            let Some((stamp, text)) = line.split_once(' ') else { continue };
            let Some(rest) = text.strip_prefix("Server app/") else { continue };
            let Some((server, what)) = rest.split_once(' ') else { continue };
            let Some(at) = seconds(stamp) else { continue };
            let entry = readmit.entry(server.to_string()).or_insert((f64::NAN, f64::NAN));
            if what.starts_with("is UP/DRAIN") || what.starts_with("enters drain state") || what.contains("leaving") {
                entry.0 = at;
            } else if what.starts_with("is UP") && !entry.0.is_nan() {
                entry.1 = at;
            }
        }
        let at = |e: &serde_json::Value| e["ts"].as_str().and_then(seconds).unwrap_or(f64::NAN);
        let mut timeline =
            Timeline { restart, readmit, batch_started: Vec::new(), run_finished: f64::NAN, accepted: HashMap::new() };
        for e in events {
            match e["event"].as_str() {
                Some("batch_started") => timeline.batch_started.push(at(e)),
                Some("run_finished") => timeline.run_finished = at(e),
                Some("step_finished") if e["step"] == "accept" => {
                    timeline.accepted.insert(e["host"].as_str().unwrap_or_default().to_string(), at(e));
                }
                _ => {}
            }
        }
        timeline
    }

    /// The floor of one run: per batch, the slowest host's restart (its restart script's
    /// start → the app started) plus HAProxy's re-admission (leaving maintenance → UP),
    /// summed over the batches.
    fn floor(&self, hosts: usize, batch: usize) -> f64 {
        let window = |i: usize| {
            let name = format!("h{i}");
            let (stop, start) = self.restart.get(&name).copied().unwrap_or((0.0, 0.0));
            let (left, up) = self.readmit.get(&name).copied().unwrap_or((0.0, 0.0));
            let total = (start - stop) + (up - left);
            assert!(total.is_finite() && total > 0.0, "no restart or re-admission recorded for {name}");
            total
        };
        (1..=hosts).collect::<Vec<_>>().chunks(batch).map(|b| b.iter().map(|&i| window(i)).fold(0.0, f64::max)).sum()
    }

    /// Each batch of planrun's run, split along the host whose accept finished last.
    fn batches(&self, hosts: usize, batch: usize) -> Vec<Batch> {
        let groups: Vec<Vec<usize>> = (1..=hosts).collect::<Vec<_>>().chunks(batch).map(|c| c.to_vec()).collect();
        let mut out = Vec::new();
        for (n, group) in groups.iter().enumerate() {
            let (Some(&started), Some(last)) = (
                self.batch_started.get(n),
                group.iter().map(|i| format!("h{i}")).max_by(|a, b| {
                    let t = |h: &String| self.accepted.get(h).copied().unwrap_or(f64::NAN);
                    t(a).total_cmp(&t(b))
                }),
            ) else {
                continue;
            };
            let next = self.batch_started.get(n + 1).copied().unwrap_or(self.run_finished);
            let (begin, app_started) = self.restart.get(&last).copied().unwrap_or((f64::NAN, f64::NAN));
            let (left, up) = self.readmit.get(&last).copied().unwrap_or((f64::NAN, f64::NAN));
            let accepted = self.accepted.get(&last).copied().unwrap_or(f64::NAN);
            let b = Batch {
                total: next - started,
                dispatch: begin - started,
                restart: app_started - begin,
                hand_back: left - app_started,
                readmission: up - left,
                notice: accepted - up,
                gap: next - accepted,
            };
            if b.total.is_finite() && b.notice.is_finite() && b.dispatch.is_finite() {
                out.push(b);
            }
        }
        out
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
