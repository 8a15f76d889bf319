//! `planrun exec`: one ad-hoc command on the selected hosts, over the same transports
//! and SSH settings as `apply`. It touches no balancer, journals nothing and takes no
//! lock: it is for read-mostly commands, and a host that fails is reported, not
//! rolled back.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::apply::{check_secrets, resolve_targets};
use super::args::ExecCommand;
use super::print::{self, ApplyError};
use crate::exit;
use crate::graph::{self, BuildOptions, HostRef};
use crate::model::{BatchSize, Sudo};
use crate::transport::{Connector, LocalTransport, OutputLine, SshTarget, Transport};
use crate::validate;

/// What a host's block keeps of its output in memory; `-v` streams every line.
const GROUPED_MAX_BYTES: usize = 1 << 20;

/// What the command line asked of `exec`.
struct ExecArgs {
    plan: PathBuf,
    /// The command as sent to the shell.
    command: String,
    build: BuildOptions,
    fan_out: Option<u32>,
    batch_size: Option<BatchSize>,
    sudo: bool,
    timeout: Duration,
    verbose: bool,
    color: bool,
}

pub fn exec(command: ExecCommand, color: bool) -> i32 {
    let Some(line) = command_line(&command.command) else {
        eprintln!(
            "error: the command after `--` contains a NUL byte, which no shell can receive; nothing was executed"
        );
        return exit::INVALID_INPUT;
    };
    let args = ExecArgs {
        plan: command.plan,
        command: line,
        build: BuildOptions { batch_size: None, vars: command.vars, limit: command.limit },
        fan_out: command.fan_out,
        batch_size: command.batch_size,
        sudo: command.sudo,
        timeout: command.timeout,
        verbose: command.verbose,
        color,
    };
    let prepared = match prepare(&args) {
        Ok(prepared) => prepared,
        Err(e) => return print::apply_error(&e, args.color),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return print::apply_error(&ApplyError::Runtime(e), args.color),
    };
    let (results, interrupted) = runtime.block_on(run(&prepared, &args));
    let mut out = crate::redact::Redacting::new(std::io::stdout().lock());
    // Blocks end with a blank line; streamed lines do not.
    if args.verbose {
        let _ = writeln!(out);
    }
    let _ = out.write_all(summary(&prepared.hosts, &results, crate::report::output_width(false)).as_bytes());
    let _ = out.flush();
    if interrupted {
        exit::INTERRUPTED
    } else if results.iter().all(|r| r.as_ref().is_some_and(|r| r.ended.success())) {
        exit::SUCCESS
    } else {
        exit::ROLLOUT_FAILED
    }
}

/// One word is a shell command line, sent as written (`'tail -n 5 log | grep x'`);
/// several are quoted and joined, so each arrives as the one word it was. `None`: a NUL
/// byte, which no shell can receive.
fn command_line(words: &[String]) -> Option<String> {
    match words {
        [one] if !one.contains('\0') => Some(one.clone()),
        [_] => None,
        words => shlex::try_join(words.iter().map(String::as_str)).ok(),
    }
}

/// Everything checked before anything runs.
struct Prepared {
    hosts: Vec<HostRef>,
    /// As sent to each host, in `hosts` order.
    commands: Vec<String>,
    targets: Vec<Option<SshTarget>>,
    /// Groups of host positions that run one after another; within one, at most
    /// `width` at once.
    waves: Vec<Vec<usize>>,
    width: usize,
}

fn prepare(args: &ExecArgs) -> Result<Prepared, ApplyError> {
    let loaded = validate::load_plan(&args.plan).map_err(ApplyError::Plan)?;
    // From here on, everything printed masks the plan's secrets.
    crate::redact::install_plan(&loaded.plan);
    let sudo = args.sudo.then_some(Sudo::Root);
    let ad_hoc = graph::ad_hoc(&loaded, &args.build, &args.command, sudo.as_ref()).map_err(ApplyError::Plan)?;
    check_secrets(&loaded.plan)?;
    let targets = resolve_targets(&loaded.plan, &ad_hoc.hosts)
        .map_err(|failures| ApplyError::Unresolved { failures, hosts: ad_hoc.hosts.len() })?;
    let n = ad_hoc.hosts.len();
    let (waves, width) = match &args.batch_size {
        Some(size) => {
            let mut next = 0;
            let waves: Vec<Vec<usize>> = graph::batch_sizes(size, n)
                .into_iter()
                .map(|k| {
                    next += k;
                    (next - k..next).collect()
                })
                .collect();
            let width = waves.iter().map(Vec::len).max().unwrap_or(1);
            (waves, width)
        }
        None => {
            let width = args.fan_out.unwrap_or(loaded.plan.rollout.fan_out) as usize;
            (vec![(0..n).collect()], width.max(1))
        }
    };
    Ok(Prepared { hosts: ad_hoc.hosts, commands: ad_hoc.commands, targets, waves, width })
}

/// How a host's command ended.
enum Ended {
    Exit(crate::transport::Exit),
    /// The host could not be reached, the command could not start, or it timed out.
    Failed {
        short: &'static str,
        why: String,
    },
}

impl Ended {
    fn success(&self) -> bool {
        matches!(self, Ended::Exit(exit) if exit.success())
    }

    /// The summary's cell and a block's header.
    fn describe(&self) -> String {
        match self {
            Ended::Exit(exit) if exit.success() => exit.to_string(),
            Ended::Exit(exit) => format!("FAILED: {exit}"),
            Ended::Failed { short, .. } => format!("FAILED: {short}"),
        }
    }
}

struct HostResult {
    ended: Ended,
    took: Duration,
}

/// Runs the waves in order; a wave with a failed host stops the run, and so does Ctrl-C
/// (`true`). `None`: the host's wave never started.
async fn run(prepared: &Prepared, args: &ExecArgs) -> (Vec<Option<HostResult>>, bool) {
    let connector = Arc::new(Connector::with_notices(print::notices()));
    let out = Arc::new(Mutex::new(()));
    let mut results: Vec<Option<HostResult>> = prepared.hosts.iter().map(|_| None).collect();
    for wave in &prepared.waves {
        let limit = Arc::new(tokio::sync::Semaphore::new(prepared.width));
        let mut tasks = tokio::task::JoinSet::new();
        for &h in wave {
            let limit = limit.clone();
            let connector = connector.clone();
            let out = out.clone();
            let name = prepared.hosts[h].name.clone();
            let command = prepared.commands[h].clone();
            let target = prepared.targets[h].clone();
            let (timeout, verbose) = (args.timeout, args.verbose);
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let result = on_host(&name, &command, target, &connector, timeout, verbose, &out).await;
                (h, result)
            });
        }
        let interrupted = tokio::select! {
            () = collect(&mut tasks, &mut results) => false,
            _ = tokio::signal::ctrl_c() => true,
        };
        if interrupted {
            // Dropping a command's future kills it (local: its process group; ssh: a
            // `kill` over the connection) from a background task: give those a moment.
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
            tokio::time::sleep(Duration::from_secs(1)).await;
            for &h in wave {
                if results[h].is_none() {
                    let why = "Ctrl-C: the command was killed".to_string();
                    results[h] =
                        Some(HostResult { ended: Ended::Failed { short: "interrupted", why }, took: Duration::ZERO });
                }
            }
            return (results, true);
        }
        let failed = wave.iter().any(|&h| !results[h].as_ref().is_some_and(|r| r.ended.success()));
        if failed {
            break;
        }
    }
    (results, false)
}

/// Each finished host's result, into its place.
async fn collect(tasks: &mut tokio::task::JoinSet<(usize, HostResult)>, results: &mut [Option<HostResult>]) {
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok((h, result)) => results[h] = Some(result),
            // A task that panicked left its host without a result: it counts as failed
            // (not started), never as a success.
            Err(e) => eprintln!("error: a host's task ended unexpectedly: {e}"),
        }
    }
}

/// Connects to one host, runs the command and prints its block (or, with `-v`, its
/// lines as they come and then its end).
async fn on_host(
    name: &str,
    command: &str,
    target: Option<SshTarget>,
    connector: &Connector,
    timeout: Duration,
    verbose: bool,
    out: &Mutex<()>,
) -> HostResult {
    let started = Instant::now();
    let transport = match target {
        None => Ok(Transport::Local(LocalTransport::new())),
        Some(target) => connector.connect(&target).await.map(Transport::Ssh),
    };
    let mut block = Block::default();
    let ended = match transport {
        Err(e) => Ended::Failed { short: "unreachable", why: e.to_string() },
        Ok(transport) => {
            let mut on_line = HostLines { verbose, name, out, block: &mut block };
            match transport.exec_lines(command, Some(timeout), &mut on_line).await {
                Ok(exit) => Ended::Exit(exit),
                Err(e @ crate::transport::TransportError::Timeout { .. }) => {
                    Ended::Failed { short: "timed out", why: e.to_string() }
                }
                Err(e) => Ended::Failed { short: "could not run", why: e.to_string() },
            }
        }
    };
    let mut text = format!("=== {name}: {}\n", ended.describe());
    if !verbose {
        block.write(&mut text);
    }
    if let Ended::Failed { why, .. } = &ended {
        text.push_str(&format!("error: {why}\n"));
    }
    if !verbose {
        text.push('\n');
    }
    let _guard = out.lock();
    let mut stdout = crate::redact::Redacting::new(std::io::stdout().lock());
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
    HostResult { ended, took: started.elapsed() }
}

/// A host's output, kept up to [`GROUPED_MAX_BYTES`], the rest counted.
/// Where a host's lines go: streamed with its name (`-v`), or into its block.
struct HostLines<'a> {
    verbose: bool,
    name: &'a str,
    out: &'a Mutex<()>,
    block: &'a mut Block,
}

impl crate::transport::OnLine for HostLines<'_> {
    async fn line(&mut self, line: OutputLine) {
        if self.verbose {
            let _guard = self.out.lock();
            let mut stdout = crate::redact::Redacting::new(std::io::stdout().lock());
            let _ = writeln!(stdout, "{} | {}", self.name, line.line);
        } else {
            self.block.push(line.line);
        }
    }
}

#[derive(Default)]
struct Block {
    lines: Vec<String>,
    bytes: usize,
    dropped: usize,
}

impl Block {
    fn push(&mut self, line: String) {
        if self.bytes + line.len() > GROUPED_MAX_BYTES {
            self.dropped += 1;
        } else {
            self.bytes += line.len() + 1;
            self.lines.push(line);
        }
    }

    fn write(&self, text: &mut String) {
        for line in &self.lines {
            text.push_str(line);
            text.push('\n');
        }
        if self.dropped > 0 {
            text.push_str(&format!(
                "… {} not shown (a block keeps 1 MiB; `-v` streams every line)\n",
                crate::text::plural(self.dropped, "more line", "more lines")
            ));
        }
    }
}

/// Hosts × how they ended, in plan order, and one closing line.
fn summary(hosts: &[HostRef], results: &[Option<HostResult>], width: Option<u16>) -> String {
    let mut table = comfy_table::Table::new();
    table.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
    match width {
        Some(width) => {
            table.set_content_arrangement(comfy_table::ContentArrangement::Dynamic).set_width(width);
        }
        None => {
            table.set_content_arrangement(comfy_table::ContentArrangement::Disabled);
        }
    }
    table.set_header(["host", "result", "time"]);
    let (mut failed, mut not_started) = (Vec::new(), Vec::new());
    for (host, result) in hosts.iter().zip(results) {
        let (cell, time) = match result {
            Some(r) => (r.ended.describe(), format!("{:.1}s", r.took.as_secs_f64())),
            None => ("not started".to_string(), String::new()),
        };
        match result {
            None => not_started.push(host.name.as_str()),
            Some(r) if !r.ended.success() => failed.push(host.name.as_str()),
            Some(_) => {}
        }
        table.add_row([host.name.clone(), cell, time]);
    }
    let mut text = table.to_string();
    text.push('\n');
    let hosts_text = crate::text::plural(hosts.len(), "host", "hosts");
    if failed.is_empty() && not_started.is_empty() {
        text.push_str(&format!("exec: ok on {hosts_text}\n"));
    } else {
        text.push_str(&format!("exec FAILED on {} of {hosts_text}: {}", failed.len(), failed.join(", ")));
        if !not_started.is_empty() {
            // A batch failed: the batches after it did not start.
            text.push_str(&format!("; not started: {}", not_started.join(", ")));
        }
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::command_line;

    #[test]
    fn one_word_is_a_command_line_and_several_are_quoted() {
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(command_line(&words(&["ls -l | wc -l"])).as_deref(), Some("ls -l | wc -l"));
        assert_eq!(command_line(&words(&["echo", "a b", "it's"])).as_deref(), Some(r#"echo 'a b' "it's""#));
        assert_eq!(command_line(&words(&["echo", "a\0b"])), None);
        assert_eq!(command_line(&words(&["a\0b"])), None);
    }
}
