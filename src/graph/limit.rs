//! `--limit`: which of the rollout's selected hosts a command works on. Entries are
//! names or addresses, globs (`web*`, `app[1-3]`) or roles (`role:app`), comma-separated;
//! `!` before an entry leaves its hosts out. Every entry must match a selected host: a
//! typo in an exclusion would otherwise roll the very host it meant to spare.

use crate::diagnostic::Problem;
use crate::model::Plan;
use crate::model::select::server_name;
use crate::text::{backticked_list, did_you_mean, few};

/// What one entry matches.
enum Matcher {
    /// A server's name or address, exactly.
    Exact(String),
    Glob(glob::Pattern),
    Role(String),
}

impl Matcher {
    fn matches(&self, server: &crate::model::Server) -> bool {
        match self {
            Matcher::Exact(text) => server.host == *text || server_name(server) == text,
            Matcher::Glob(pattern) => pattern.matches(&server.host) || pattern.matches(server_name(server)),
            Matcher::Role(role) => server.roles.iter().any(|r| r == role),
        }
    }
}

struct Entry<'a> {
    /// As written, for messages.
    text: &'a str,
    exclude: bool,
    matcher: Matcher,
}

/// The characters that make an entry a glob rather than a name.
const GLOB_CHARS: &[char] = &['*', '?', '['];

fn parse(text: &str) -> Result<Entry<'_>, Box<Problem>> {
    let (exclude, body) = match text.strip_prefix('!') {
        Some(rest) => (true, rest.trim()),
        None => (false, text),
    };
    if body.is_empty() {
        let what = if text.is_empty() { "an empty entry".to_string() } else { format!("`{text}`, an empty entry") };
        return Err(Box::new(Problem::whole_file(format!("`--limit` has {what}")).help(
            "write names, addresses, globs (`web*`) or roles (`role:app`) separated by single commas; `!` before one leaves it out",
        )));
    }
    let matcher = if let Some(role) = body.strip_prefix("role:") {
        if role.trim().is_empty() {
            return Err(Box::new(
                Problem::whole_file(format!("`--limit` entry `{text}` names no role"))
                    .help("write the role after the colon, such as `role:app`"),
            ));
        }
        Matcher::Role(role.trim().to_string())
    } else if body.contains(GLOB_CHARS) {
        let pattern = glob::Pattern::new(body).map_err(|e| {
            Box::new(
                Problem::whole_file(format!(
                    "`--limit` entry `{text}` is not a glob: {} (at character {})",
                    e.msg,
                    e.pos + 1
                ))
                .help("a glob has `*` (any characters), `?` (one character) and `[1-3]` or `[!x]` (one of a set)"),
            )
        })?;
        Matcher::Glob(pattern)
    } else {
        Matcher::Exact(body.to_string())
    };
    Ok(Entry { text, exclude, matcher })
}

/// The selected servers (indices into `plan.servers`, in rollout order) that `limit`
/// keeps, in the same order; every problem of the limit at once.
pub(super) fn limit(plan: &Plan, selected: &[usize], limit: Option<&[String]>) -> Result<Vec<usize>, Vec<Problem>> {
    let Some(limit) = limit else { return Ok(selected.to_vec()) };
    let mut problems = Vec::new();
    let mut entries = Vec::with_capacity(limit.len());
    for text in limit.iter().map(|w| w.trim()) {
        match parse(text) {
            Ok(entry) => entries.push(entry),
            Err(problem) => problems.push(*problem),
        }
    }
    for entry in &entries {
        if !selected.iter().any(|&i| entry.matcher.matches(&plan.servers[i])) {
            problems.push(unmatched(plan, selected, entry));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let any_included = entries.iter().any(|e| !e.exclude);
    let kept: Vec<usize> = selected
        .iter()
        .copied()
        .filter(|&i| {
            let server = &plan.servers[i];
            let included = !any_included || entries.iter().any(|e| !e.exclude && e.matcher.matches(server));
            included && !entries.iter().any(|e| e.exclude && e.matcher.matches(server))
        })
        .collect();
    if kept.is_empty() {
        let problem = Problem::whole_file(format!("`--limit {}` selects no host", limit.join(",")))
            .help("its exclusions (`!…`) leave out every host the other entries choose");
        return Err(vec![problem]);
    }
    Ok(kept)
}

/// Why an entry that matches no selected host is refused, with the closest name.
fn unmatched(plan: &Plan, selected: &[usize], entry: &Entry<'_>) -> Problem {
    let selected_names: Vec<&str> = selected.iter().map(|&i| server_name(&plan.servers[i])).collect();
    let text = entry.text;
    if plan.servers.iter().any(|s| entry.matcher.matches(s)) {
        let what = match entry.matcher {
            Matcher::Exact(_) => format!("`--limit` names `{text}`, which the rollout does not select"),
            _ => format!("`--limit` entry `{text}` matches only servers the rollout does not select"),
        };
        return Problem::whole_file(what).help(format!(
            "`rollout.select` leaves {} out (by role or `exclude`); the selected hosts are {}",
            if matches!(entry.matcher, Matcher::Exact(_)) { "it" } else { "them" },
            few(&selected_names)
        ));
    }
    let bang = if entry.exclude { "!" } else { "" };
    match &entry.matcher {
        Matcher::Role(role) => {
            let mut roles: Vec<&str> = Vec::new();
            for &i in selected {
                for r in &plan.servers[i].roles {
                    if !roles.contains(&r.as_str()) {
                        roles.push(r);
                    }
                }
            }
            let help = match did_you_mean(role, roles.iter().copied()) {
                Some(best) => format!("did you mean `{bang}role:{best}`?"),
                None => format!("the roles of the selected hosts are {}", backticked_list(&roles)),
            };
            Problem::whole_file(format!("`--limit` entry `{text}` names a role no server of this plan has")).help(help)
        }
        Matcher::Glob(pattern) => {
            // A typo is most likely in the glob's literal start: `wbe*` for `web*`.
            let glob = pattern.as_str();
            let split = glob.find(GLOB_CHARS).unwrap_or(glob.len());
            let (prefix, rest) = glob.split_at(split);
            let stems: Vec<String> =
                selected_names.iter().map(|n| n.chars().take(prefix.chars().count()).collect()).collect();
            let help = match did_you_mean(prefix, stems.iter().map(String::as_str)) {
                Some(best) if !prefix.is_empty() && best != prefix => {
                    format!("did you mean `{bang}{best}{rest}`? the selected hosts are {}", few(&selected_names))
                }
                _ => format!("the selected hosts are {}", few(&selected_names)),
            };
            Problem::whole_file(format!("`--limit` entry `{text}` matches no server of this plan")).help(help)
        }
        Matcher::Exact(name) => {
            let help = match did_you_mean(name, selected_names.iter().copied()) {
                Some(best) => format!("did you mean `{bang}{best}`?"),
                None => format!("the selected hosts are {}", few(&selected_names)),
            };
            Problem::whole_file(format!("`--limit` names `{text}`, which is not a server of this plan")).help(help)
        }
    }
}
