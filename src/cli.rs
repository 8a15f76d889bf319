//! The command line: clap's types end here; everything past `main` sees resolved values.

use std::collections::HashMap;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use crate::apply::ApplyArgs;
use crate::diagnostic::PlanErrors;
use crate::discover::{self, Named};
use crate::exit;
use crate::graph::{self, BuildOptions, ExecutionPlan};
use crate::init::{self, InitError};
use crate::model::{BatchSize, BatchStep};
use crate::preview;
use crate::report::Verbosity;
use crate::validate::schema;
use crate::validate::{self, LoadedPlan};

#[derive(Debug, Parser)]
#[command(name = "planrun", version, about = "Validate, preview and run rolling restarts from a YAML plan.")]
pub struct Cli {
    /// When to color output: `auto` colors a terminal unless `NO_COLOR` is set.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ValidateFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LockAction {
    /// Show who holds the lock.
    Status,
    /// Break the lock (when its holder is gone for good).
    Release,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    /// Batches and steps in the order they run, with every command rendered.
    Text,
    /// The execution plan for programs; the shape is documented in docs/plan-json.md.
    Json,
    /// The step graph for Graphviz: `planrun plan --format dot PLAN | dot -Tsvg > plan.svg`.
    Dot,
    /// The step graph as a Mermaid flowchart, for Markdown that renders Mermaid.
    Mermaid,
}

/// What the command line may change about the step graph; `plan` and `apply` share it.
#[derive(Debug, Clone, Args)]
pub struct GraphArgs {
    /// Hosts out of rotation at once, overriding the plan's `rollout.batch_size`: a count
    /// (`2`), a percentage of the selected hosts (`25%`), or a ramp whose last entry
    /// repeats (`1,50%`).
    #[arg(long, value_name = "N|P%|RAMP", value_parser = parse_batch_size)]
    pub batch_size: Option<BatchSize>,

    /// Overrides the plan variable NAME (`{{vars.NAME}}`); repeat for several.
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,

    /// Only these selected hosts, by name or address, comma-separated.
    #[arg(long, value_name = "HOSTS", value_delimiter = ',')]
    pub limit: Option<Vec<String>>,
}

impl GraphArgs {
    pub fn build_options(&self) -> BuildOptions {
        BuildOptions { batch_size: self.batch_size.clone(), vars: self.vars.clone(), limit: self.limit.clone() }
    }
}

fn parse_batch_size(text: &str) -> Result<BatchSize, String> {
    let steps = text.split(',').map(str::parse::<BatchStep>).collect::<Result<Vec<_>, _>>()?;
    Ok(match <[BatchStep; 1]>::try_from(steps) {
        Ok([one]) => BatchSize::One(one),
        Err(ramp) => BatchSize::Ramp(ramp),
    })
}

fn parse_var(text: &str) -> Result<(String, String), String> {
    let Some((name, value)) = text.split_once('=') else {
        return Err(format!("`{text}` has no `=`: write NAME=VALUE, such as `--var branch=hotfix`"));
    };
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid {
        return Err(format!(
            "`{name}` is not a variable name: use letters, digits, `_` and `-`, starting with a letter, such as `--var branch=hotfix`"
        ));
    }
    Ok((name.to_string(), value.to_string()))
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check plans against the schema and each other; nothing is executed.
    ///
    /// A folder stands for every `*.yaml` in it. A file that other plans of the folder
    /// `extends` is a base: it is checked as part of each of them, not alone (a base has no
    /// servers). Name a base explicitly to check it alone.
    #[command(
        after_help = "Examples:\n  planrun validate plans/\n  planrun validate plans/production.yaml plans/staging.yaml\n  planrun validate --format json plans/ > problems.json"
    )]
    Validate {
        /// Plan files, or folders of plans.
        #[arg(required = true, value_name = "PLAN|DIR")]
        plans: Vec<PathBuf>,
        /// `json` prints one document for all plans, every problem with its file, line and
        /// column, for editors and CI annotations.
        #[arg(long, value_enum, default_value_t = ValidateFormat::Text)]
        format: ValidateFormat,
    },
    /// Run the rollout: connect, then each batch's steps, halting safely on failure.
    #[command(
        after_help = "Examples:\n  planrun apply plans/production.yaml\n  planrun apply examples/localhost.yaml --yes\n  planrun apply plans/production.yaml --dry-run --limit app1\n  planrun apply plans/production.yaml --yes --force"
    )]
    Apply {
        /// The plan file.
        #[arg(value_name = "PLAN")]
        plan: PathBuf,
        /// Do not ask for confirmation (required without a terminal).
        #[arg(long, short)]
        yes: bool,
        /// Render and walk every step, print what would run, change nothing. Balancer
        /// nodes are still resolved and read (read-only), so a wrong label, port or node is
        /// found now.
        #[arg(long)]
        dry_run: bool,
        /// Continue the last failed or interrupted run of this plan from the first step
        /// that did not complete; hosts already done are not touched again.
        #[arg(long)]
        resume: bool,
        /// Override a safety refusal, loudly: pre-flight (nodes already out of rotation
        /// or down leave no room in the batch budget, or the run would take out the last
        /// healthy node), or `--resume` of a plan that changed since that run.
        #[arg(long)]
        force: bool,
        /// `human`: a live view on a terminal, timestamped lines otherwise; `json`: one
        /// JSON object per event per line (shape in the README).
        #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
        output: OutputFormat,
        /// Show only failures and the summary.
        #[arg(long, short, conflicts_with = "verbose")]
        quiet: bool,
        /// Also show every line the commands print.
        #[arg(long, short)]
        verbose: bool,
        #[command(flatten)]
        graph: GraphArgs,
    },
    /// Show the last run of a plan, from its journal, and what `--resume` would do.
    #[command(after_help = "Example:\n  planrun status plans/production.yaml")]
    Status {
        /// The plan file.
        #[arg(value_name = "PLAN")]
        plan: PathBuf,
    },
    /// Show or break the rollout lock of a plan.
    #[command(
        after_help = "Examples:\n  planrun lock status plans/production.yaml\n  planrun lock release plans/production.yaml"
    )]
    Lock {
        #[arg(value_enum)]
        action: LockAction,
        /// The plan file.
        #[arg(value_name = "PLAN")]
        plan: PathBuf,
    },
    /// Show the ordered step graph: batches, hosts and every rendered command; nothing is executed.
    ///
    /// Several plans, or a folder of plans (its bases skipped, as for `validate`), are shown
    /// one after another; `--format json` prints one document per line.
    #[command(
        after_help = "Examples:\n  planrun plan plans/production.yaml\n  planrun plan plans/\n  planrun plan plans/production.yaml --batch-size 1,50% --var branch=hotfix\n  planrun plan plans/production.yaml --format dot | dot -Tsvg > plan.svg"
    )]
    Plan {
        /// Plan files, or folders of plans.
        #[arg(required = true, value_name = "PLAN|DIR")]
        plans: Vec<PathBuf>,
        #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
        format: PlanFormat,
        /// Also show, for each host, the SSH settings planrun will use and where each
        /// came from (server, plan, ssh config or default). Text format only.
        #[arg(long, short)]
        verbose: bool,
        #[command(flatten)]
        graph: GraphArgs,
    },
    /// Print the plan JSON schema (the one checked in at schemas/plan.schema.json).
    #[command(after_help = "Example:\n  planrun schema --output schemas/plan.schema.json")]
    Schema {
        /// Write the schema to this file instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Start a repository of plans: plans/ (a base, production, staging) and the schema
    /// their modeline points at. Never overwrites a file.
    #[command(after_help = "Examples:\n  planrun init\n  planrun init deploy/\n  planrun validate plans/")]
    Init {
        /// The folder to create plans/ and schemas/ in.
        #[arg(value_name = "DIR", default_value = ".")]
        dir: PathBuf,
    },
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  planrun completions bash > ~/.local/share/bash-completion/completions/planrun\n  planrun completions zsh > ~/.zfunc/_planrun\n  planrun completions fish > ~/.config/fish/completions/planrun.fish"
    )]
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), generated from these same definitions.
    #[command(after_help = "Examples:\n  planrun man | man -l -\n  planrun man --output /usr/local/share/man/man1")]
    Man {
        /// Write planrun.1 and a page per command (planrun-validate.1, ...) into this folder.
        #[arg(long, short, value_name = "DIR")]
        output: Option<PathBuf>,
    },
}

/// Runs planrun with the process's arguments and returns the exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => exit::SUCCESS,
                _ => exit::INVALID_INPUT,
            };
        }
    };
    run(cli)
}

pub fn run(cli: Cli) -> i32 {
    let color = use_color(cli.color);
    if !matches!(cli.command, Command::Apply { .. }) {
        // Read-only commands end quietly when their reader goes away (`| head`), as Unix
        // tools do. `apply` keeps SIGPIPE ignored: a closed pipe must never stop a rollout
        // halfway, so it ignores failed writes instead.
        restore_sigpipe();
    }
    match cli.command {
        Command::Validate { plans, format } => validate_plans(&plans, format, color),
        Command::Plan { plans, format, verbose, graph } => show_plans(&plans, format, verbose, &graph, color),
        Command::Schema { output } => write_schema(output),
        Command::Init { dir } => init_dir(&dir),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "planrun", &mut std::io::stdout());
            exit::SUCCESS
        }
        Command::Man { output } => write_man(output),
        Command::Apply { plan, yes, dry_run, resume, force, output, quiet, verbose, graph } => {
            let verbosity = match (quiet, verbose) {
                (true, _) => Verbosity::Quiet,
                (_, true) => Verbosity::Verbose,
                _ => Verbosity::Normal,
            };
            crate::apply::apply(ApplyArgs {
                plan,
                yes,
                dry_run,
                resume,
                force,
                build: graph.build_options(),
                color,
                json: output == OutputFormat::Json,
                verbosity,
            })
        }
        Command::Status { plan } => crate::status::status(&plan, color),
        Command::Lock { action, plan } => crate::status::lock(action, &plan, color),
    }
}

fn use_color(choice: ColorChoice) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
        }
    }
}

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
fn check_all(args: &[PathBuf], options: &BuildOptions) -> CheckedAll {
    let mut unusable = Vec::new();
    let mut plans = Vec::new();
    for named in discover::expand(args) {
        match named {
            Ok(named) => {
                let result = validate::load_plan(&named.path)
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
        for base in files.iter().skip(1) {
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

fn validate_plans(args: &[PathBuf], format: ValidateFormat, color: bool) -> i32 {
    let all = check_all(args, &BuildOptions::default());
    let failed = !all.unusable.is_empty() || all.plans.iter().any(|c| c.result.is_err());
    match format {
        ValidateFormat::Text => {
            for errors in &all.unusable {
                report(errors, color);
            }
            for checked in &all.plans {
                match &checked.result {
                    Ok((loaded, _)) => println!("{}", crate::preview::summary(loaded)),
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
                    Ok((loaded, _)) => (&loaded.files, Some(crate::preview::summary(loaded))),
                    Err(errors) => {
                        problems.extend(errors.to_json());
                        (&errors.files, None)
                    }
                };
                plans.push(serde_json::json!({
                    "plan": checked.named.path.display().to_string(),
                    "valid": checked.result.is_ok(),
                    "bases": files.iter().skip(1).map(|f| f.display_name()).collect::<Vec<_>>(),
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

fn show_plans(args: &[PathBuf], format: PlanFormat, verbose: bool, graph_args: &GraphArgs, color: bool) -> i32 {
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
    let mut out = BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    for (i, checked) in all.plans.iter().enumerate() {
        let (loaded, plan) = match &checked.result {
            Ok(built) => built,
            Err(errors) => {
                report(errors, color);
                code = exit::INVALID_INPUT;
                continue;
            }
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

fn init_dir(dir: &Path) -> i32 {
    match init::init(dir) {
        Ok(written) => {
            for path in &written {
                println!("created {}", path.display());
            }
            let plans = dir.join("plans");
            println!("next: edit the servers in {0}/production.yaml, then `planrun validate {0}/`", plans.display());
            exit::SUCCESS
        }
        Err(InitError::Exists(paths)) => {
            let names: Vec<String> = paths.iter().map(|p| format!("`{}`", p.display())).collect();
            eprintln!(
                "error: {} already {}; nothing was written",
                names.join(", "),
                if names.len() == 1 { "exists" } else { "exist" }
            );
            eprintln!("  help: `planrun init` never overwrites a file: move these away, or run it in another folder");
            exit::INVALID_INPUT
        }
        Err(InitError::Io(path, e)) => {
            eprintln!("error: cannot write `{}`: {e}", path.display());
            eprintln!("  help: check that the folder exists and is writable");
            exit::INVALID_INPUT
        }
    }
}

fn write_man(output: Option<PathBuf>) -> i32 {
    let written = match &output {
        None => clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()),
        Some(dir) => clap_mangen::generate_to(Cli::command(), dir),
    };
    match written {
        Ok(()) => exit::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => exit::SUCCESS,
        Err(e) => {
            let place =
                output.map_or("the manual page".to_string(), |d| format!("the manual pages into `{}`", d.display()));
            eprintln!("error: cannot write {place}: {e}");
            eprintln!(
                "  help: check that the folder exists and is writable, or leave out `--output` to print the page"
            );
            exit::INVALID_INPUT
        }
    }
}

/// The one place plan problems are printed.
pub fn report(errors: &PlanErrors, color: bool) {
    let text = errors.render(color);
    let count = errors.problems.len();
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(text.as_bytes());
    let _ = writeln!(
        stderr,
        "{}: {count} {} found; nothing was executed",
        errors.source().display_name(),
        if count == 1 { "problem" } else { "problems" }
    );
}

fn write_schema(output: Option<PathBuf>) -> i32 {
    let text = schema::plan_schema_text();
    match output {
        None => {
            print!("{text}");
            exit::SUCCESS
        }
        Some(path) => match std::fs::write(&path, text) {
            Ok(()) => exit::SUCCESS,
            Err(e) => {
                eprintln!("error: cannot write `{}`: {e}", path.display());
                eprintln!("  help: check that the folder exists and is writable, or leave out `--output` to print it");
                exit::INVALID_INPUT
            }
        },
    }
}

fn restore_sigpipe() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: called before any other thread exists; SIG_DFL installs no handler code.
    unsafe {
        let _ = signal(Signal::SIGPIPE, SigHandler::SigDfl);
    }
}
