//! `planrun validate` and `planrun plan`: the read-only commands over one or many plans.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use super::args::{GraphArgs, PlanFormat, ValidateFormat};
use super::print::report;
use crate::diagnostic::{Origin, PlanErrors};
use crate::discover::{self, Named};
use crate::exit;
use crate::graph::{self, BuildOptions, ExecutionPlan};
use crate::preview;
use crate::validate::{self, LoadedPlan};

/// One plan named on the command line, checked: the plan and its graph, or its problems.
struct Checked {
    named: Named,
    result: Result<(LoadedPlan, ExecutionPlan), PlanErrors>,
}

/// What checking the plans a command line names found.
struct CheckedAll {
    /// Problems with the arguments themselves (a folder without plans).
    unusable: Vec<PlanErrors>,
    plans: Vec<Checked>,
    /// Plans found in a folder that other plans there extend, with the plans extending
    /// them: checked through those, not alone.
    bases: Vec<(Named, Vec<String>)>,
}

/// Loads every plan `args` name and builds its graph: templates are rendered for every
/// host while the graph is built, so a variable that does not resolve is found too.
///
/// What it returns is leaked: the commands that call it print and exit, and freeing a
/// 100,000-server plan allocation by allocation (its tree, its types, 400,000 step
/// instances) took a quarter of `validate`'s time. The process gives it all back at once.
fn check_all(args: &[PathBuf], options: &BuildOptions) -> &'static CheckedAll {
    Box::leak(Box::new(check_each(args, options)))
}

fn check_each(args: &[PathBuf], options: &BuildOptions) -> CheckedAll {
    let mut unusable = Vec::new();
    let mut plans = Vec::new();
    for named in discover::expand(args) {
        match named {
            Ok(named) => {
                let result = validate::load_plan(&named.path)
                    // What is shown of a plan masks the secrets it names.
                    .inspect(|loaded| crate::redact::install_plan(&loaded.plan))
                    .and_then(|loaded| graph::build(&loaded, options).map(|plan| (loaded, plan)));
                plans.push(Checked { named, result });
            }
            Err(errors) => unusable.push(errors),
        }
    }
    // Which files are extended, and by what: read back from what each load opened.
    let mut extended_by: HashMap<PathBuf, Vec<String>> = HashMap::new();
    for checked in &plans {
        let files = match &checked.result {
            Ok((loaded, _)) => &loaded.files,
            Err(errors) => &errors.files,
        };
        for base in files.iter().filter(|f| f.origin == Origin::Base) {
            extended_by
                .entry(discover::identity(&base.path))
                .or_default()
                .push(checked.named.path.display().to_string());
        }
    }
    let mut bases = Vec::new();
    if !extended_by.is_empty() {
        let mut kept = Vec::with_capacity(plans.len());
        for checked in plans {
            let by =
                if checked.named.from_dir { extended_by.get(&discover::identity(&checked.named.path)) } else { None };
            match by {
                Some(by) => bases.push((checked.named, by.clone())),
                None => kept.push(checked),
            }
        }
        plans = kept;
    }
    CheckedAll { unusable, plans, bases }
}

pub fn validate_plans(args: &[PathBuf], format: ValidateFormat, color: bool) -> i32 {
    let all = check_all(args, &BuildOptions::default());
    let failed = !all.unusable.is_empty() || all.plans.iter().any(|c| c.result.is_err());
    match format {
        ValidateFormat::Text => {
            for errors in &all.unusable {
                report(errors, color);
            }
            for checked in &all.plans {
                match &checked.result {
                    Ok((loaded, _)) => println!("{}", preview::summary(loaded)),
                    Err(errors) => report(errors, color),
                }
            }
            for (base, by) in &all.bases {
                println!("{}: base of {}: checked as part of them", base.path.display(), by.join(", "));
            }
        }
        ValidateFormat::Json => {
            let mut problems = Vec::new();
            for errors in &all.unusable {
                problems.extend(errors.to_json());
            }
            let mut plans = Vec::new();
            for checked in &all.plans {
                let (files, summary) = match &checked.result {
                    Ok((loaded, _)) => (&loaded.files, Some(preview::summary(loaded))),
                    Err(errors) => {
                        problems.extend(errors.to_json());
                        (&errors.files, None)
                    }
                };
                plans.push(serde_json::json!({
                    "plan": checked.named.path.display().to_string(),
                    "valid": checked.result.is_ok(),
                    "bases": files.iter().filter(|f| f.origin == Origin::Base).map(|f| f.display_name()).collect::<Vec<_>>(),
                    "summary": summary,
                }));
            }
            let bases: Vec<_> = all
                .bases
                .iter()
                .map(|(base, by)| serde_json::json!({ "file": base.path.display().to_string(), "extended_by": by }))
                .collect();
            let out = serde_json::json!({ "valid": !failed, "plans": plans, "bases": bases, "problems": problems });
            println!("{out}");
        }
    }
    if failed { exit::INVALID_INPUT } else { exit::SUCCESS }
}

pub fn show_plans(
    args: &[PathBuf],
    format: PlanFormat,
    verbose: bool,
    rollback: bool,
    graph_args: &GraphArgs,
    color: bool,
) -> i32 {
    if verbose && format != PlanFormat::Text {
        eprintln!("error: `--verbose` adds the SSH settings to the text plan only; drop `--format` or `--verbose`");
        return exit::INVALID_INPUT;
    }
    let options = graph_args.build_options();
    let all = check_all(args, &options);
    let mut code = exit::SUCCESS;
    for errors in &all.unusable {
        report(errors, color);
        code = exit::INVALID_INPUT;
    }
    let mut out = BufWriter::with_capacity(1 << 16, crate::redact::Redacting::new(std::io::stdout().lock()));
    for (i, checked) in all.plans.iter().enumerate() {
        let (loaded, plan) = match &checked.result {
            Ok(built) => built,
            Err(errors) => {
                report(errors, color);
                code = exit::INVALID_INPUT;
                continue;
            }
        };
        // `--rollback`: what `planrun rollback` would run, from the journal.
        let rolled_back;
        let plan = if rollback {
            match super::rollback::preview(&checked.named.path, loaded, &options) {
                Ok((exec, heading)) => {
                    if format == PlanFormat::Text {
                        let _ = writeln!(out, "{heading}");
                    }
                    rolled_back = exec;
                    &rolled_back
                }
                Err(e) => {
                    code = super::print::apply_error(&e, color);
                    continue;
                }
            }
        } else {
            plan
        };
        let path = loaded.source().display_name();
        let about = preview::About {
            path: &path,
            batch_size: options.batch_size.as_ref().unwrap_or(&loaded.plan.rollout.batch_size),
            skipped_balancer: graph::balancer_skipped(loaded),
        };
        // Text and drawings of several plans are told apart by a blank line; JSON is one
        // document per line already.
        let separate =
            |out: &mut BufWriter<_>| if i > 0 && format != PlanFormat::Json { writeln!(out) } else { Ok(()) };
        let written = separate(&mut out).and_then(|()| match format {
            PlanFormat::Text if verbose => {
                preview::text(&mut out, plan, &about).and_then(|()| preview::ssh_settings(&mut out, &loaded.plan, plan))
            }
            PlanFormat::Text => preview::text(&mut out, plan, &about),
            PlanFormat::Json => preview::json(&mut out, plan, &about),
            PlanFormat::Dot => preview::dot(&mut out, plan, &about),
            PlanFormat::Mermaid => preview::mermaid(&mut out, plan, &about),
        });
        match written {
            Ok(()) => {}
            // `planrun plan ... | head` closes the pipe early; that is not a failure.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return code,
            Err(e) => {
                eprintln!("error: cannot write the plan: {e}");
                return exit::INVALID_INPUT;
            }
        }
    }
    match out.flush() {
        Ok(()) => code,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => code,
        Err(e) => {
            eprintln!("error: cannot write the plan: {e}");
            exit::INVALID_INPUT
        }
    }
}

/// `plan --list-hosts`: the hosts each plan selects after `--limit`, one name a line and
/// nothing else, for scripts.
pub fn list_hosts(args: &[PathBuf], graph_args: &GraphArgs, color: bool) -> i32 {
    let all = check_all(args, &graph_args.build_options());
    let mut code = exit::SUCCESS;
    for errors in &all.unusable {
        report(errors, color);
        code = exit::INVALID_INPUT;
    }
    let mut out = BufWriter::new(crate::redact::Redacting::new(std::io::stdout().lock()));
    for checked in &all.plans {
        match &checked.result {
            Ok((_, plan)) => {
                for host in &plan.hosts {
                    if writeln!(out, "{}", host.name).is_err() {
                        return code;
                    }
                }
            }
            Err(errors) => {
                report(errors, color);
                code = exit::INVALID_INPUT;
            }
        }
    }
    match out.flush() {
        Ok(()) => code,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => code,
        Err(e) => {
            eprintln!("error: cannot write the hosts: {e}");
            exit::INVALID_INPUT
        }
    }
}
