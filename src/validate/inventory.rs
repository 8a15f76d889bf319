//! `servers_from`: the servers of each inventory (a file, or a command's output) read,
//! parsed with positions into that file or output, and appended to the plan's `servers`
//! in the tree, so every check after this one sees ordinary servers and points into the
//! text each server came from.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::bounded::{self, Refusal};
use crate::diagnostic::{Origin, Problem, SourceFile};
use crate::inventory::{self, DEFAULT_TIMEOUT};
use crate::validate::read::{MAX_PLAN_BYTES, MAX_PLAN_VALUES, limits, load_problem};
use crate::yaml::{self, FileId, Key, Limits, Node, Span, Value};

/// One source as written, when the schema will accept it; anything else is left to the
/// schema to report.
enum Source {
    File { name: String, at: Span },
    Command { command: String, timeout: Duration, at: Span },
}

fn source(entry: &Node) -> Option<Source> {
    let Value::Map(fields) = &entry.value else { return None };
    let text = |name: &str| {
        fields.iter().find(|(k, _)| k.name == name).and_then(|(_, v)| match &v.value {
            Value::String(s) if !s.is_empty() => Some((s.clone(), v.span)),
            _ => None,
        })
    };
    match (text("file"), text("command")) {
        (Some((name, at)), None) => Some(Source::File { name, at }),
        (None, Some((command, at))) => {
            let timeout = match text("timeout") {
                Some((t, _)) => humantime::parse_duration(t.trim()).ok()?,
                None => DEFAULT_TIMEOUT,
            };
            Some(Source::Command { command, timeout, at })
        }
        _ => None,
    }
}

/// Reads every `servers_from` source of `root` and appends its servers to `servers`.
/// Each source read is pushed onto `files`; a source that cannot be read or is not a list
/// of servers is a problem (the others are still read, so all are reported at once).
pub(crate) fn merge(root: &mut Node, files: &mut Vec<Arc<SourceFile>>) -> Vec<Problem> {
    let Some(Node { value: Value::Seq(entries), span: list_span }) = root.pointer("/servers_from") else {
        return Vec::new();
    };
    let (entries, list_span) = (entries.clone(), *list_span);
    let mut problems = Vec::new();
    let mut added: Vec<Node> = Vec::new();
    let mut values = root.count();
    for entry in &entries {
        let Some(source) = source(entry) else { continue };
        // Relative to the file the entry is written in: a base's inventory is beside the base.
        let dir = files[entry.span.file as usize].path.parent().unwrap_or(Path::new("")).to_path_buf();
        let (bytes, command, at) = match &source {
            Source::File { name, at } => match read_file(&dir.join(name), *at) {
                Ok(bytes) => (bytes, None, *at),
                Err(problem) => {
                    problems.push(*problem);
                    continue;
                }
            },
            Source::Command { command, timeout, at } => {
                let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir.as_path() };
                match inventory::run_command(command, dir, *timeout, MAX_PLAN_BYTES) {
                    Ok(bytes) => (bytes, Some(command.clone()), *at),
                    Err(failure) => {
                        let mut problem = Problem::at(*at, format!("the inventory command {}", failure.reason()))
                            .label("this command");
                        problem = match failure.stderr() {
                            Some(stderr) => {
                                // The last lines, where the reason usually is, on one line.
                                let lines: Vec<&str> =
                                    stderr.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
                                let tail = lines[lines.len().saturating_sub(3)..].join(" / ");
                                // The plan's secrets are not installed yet (it did not load),
                                // and a failing command may well print its token.
                                let tail = crate::redact::Redactor::new(secret_values(root)).redact(&tail);
                                problem.help(format!("its standard error ends with: {tail}"))
                            }
                            None => problem.help(
                                "run it by hand in the plan's folder: it must print a list of servers and exit 0",
                            ),
                        };
                        problems.push(problem);
                        continue;
                    }
                }
            }
        };
        let path = match &source {
            Source::File { name, .. } => dir.join(name),
            Source::Command { .. } => dir.clone(),
        };
        let id = files.len() as FileId;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let origin = Origin::Inventory { command: command.clone(), servers_hash: String::new() };
        files.push(Arc::new(SourceFile { path: path.clone(), text: text.clone(), origin }));
        let what = if command.is_some() { "the inventory command's output" } else { "the inventory file" };
        let limits = Limits { max_nodes: MAX_PLAN_VALUES.saturating_sub(values), ..limits() };
        let list = match yaml::load_file(&bytes, &limits, id) {
            Ok(list) => list,
            Err(yaml::LoadError::Empty) => {
                problems.push(
                    Problem::at(at, format!("{what} is empty"))
                        .label("nothing read from here")
                        .help("an inventory holds a list of servers, like the plan's `servers`; `[]` for none"),
                );
                continue;
            }
            Err(e) => {
                problems.push(load_problem(&e));
                continue;
            }
        };
        let Value::Seq(servers) = &list.value else {
            problems.push(
                Problem::at(list.span, format!("{what} is not a list of servers"))
                    .label("expected a list")
                    .help("write it like the plan's `servers`: `- host: 10.0.0.2` (YAML) or `[{\"host\": \"10.0.0.2\"}]` (JSON)")
                    .related(at, "read from here"),
            );
            continue;
        };
        values += list.count();
        let digest = Sha256::digest(list.to_json().to_string().as_bytes());
        let hash = format!("sha256:{}", digest.iter().map(|b| format!("{b:02x}")).collect::<String>());
        files[id as usize] =
            Arc::new(SourceFile { path, text, origin: Origin::Inventory { command, servers_hash: hash } });
        added.extend(servers.iter().cloned());
    }
    append_servers(root, added, list_span);
    problems
}

/// The values of the environment variables the plan names as secrets (`secret_env`, a
/// balancer's `token_env`), read from the tree: the plan is not deserialized yet.
fn secret_values(root: &Node) -> Vec<String> {
    let mut names: Vec<&str> = Vec::new();
    if let Some(Node { value: Value::Seq(items), .. }) = root.pointer("/secret_env") {
        names.extend(items.iter().filter_map(|n| match &n.value {
            Value::String(s) => Some(s.as_str()),
            _ => None,
        }));
    }
    if let Some(Node { value: Value::Map(balancers), .. }) = root.pointer("/balancers") {
        for (_, balancer) in balancers {
            if let Some(Node { value: Value::String(name), .. }) = balancer.pointer("/token_env") {
                names.push(name);
            }
        }
    }
    names.iter().filter_map(|n| std::env::var(n).ok()).filter(|v| !v.is_empty()).collect()
}

/// Appends `added` to the plan's `servers`, creating it (at `servers_from`) when the plan
/// has none. A `servers` that is not a list is the schema's to report.
fn append_servers(root: &mut Node, added: Vec<Node>, at: Span) {
    let Value::Map(fields) = &mut root.value else { return };
    match fields.iter_mut().find(|(k, _)| k.name == "servers") {
        Some((_, Node { value: Value::Seq(servers), .. })) => servers.extend(added),
        Some(_) => {}
        None => fields.push((Key { name: "servers".into(), span: at }, Node { value: Value::Seq(added), span: at })),
    }
}

fn read_file(path: &Path, at: Span) -> Result<Vec<u8>, Box<Problem>> {
    bounded::read(path, MAX_PLAN_BYTES as u64).map_err(|e| {
        let shown = path.display();
        let (message, help) = match e.refusal {
            Refusal::Missing => (
                format!("the inventory file `{shown}` does not exist"),
                "`file` is relative to the folder of the plan it is written in; check the file name",
            ),
            _ => {
                (format!("cannot read the inventory file `{shown}`: {}", e.reason()), "name a regular file of servers")
            }
        };
        Box::new(Problem::at(at, message).label("inventory file").help(help))
    })
}
