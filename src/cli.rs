//! The command line: clap's types end here; everything past `main` sees resolved values.

use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::apply::ApplyArgs;
use crate::diagnostic::PlanErrors;
use crate::exit;
use crate::graph::{self, BuildOptions};
use crate::model::{BatchSize, BatchStep};
use crate::preview;
use crate::schema;
use crate::validate;

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
    #[command(after_help = "Example:\n  planrun validate plans/production.yaml plans/staging.yaml")]
    Validate {
        /// Plan files to check.
        #[arg(required = true, value_name = "PLAN")]
        plans: Vec<PathBuf>,
        /// `json` prints one object per problem, for editors and CI annotations.
        #[arg(long, value_enum, default_value_t = ValidateFormat::Text)]
        format: ValidateFormat,
    },
    /// Run the rollout: connect, then each batch's steps, halting safely on failure.
    #[command(
        after_help = "Examples:\n  planrun apply plans/production.yaml\n  planrun apply examples/localhost.yaml --yes\n  planrun apply plans/production.yaml --dry-run --limit app1"
    )]
    Apply {
        /// The plan file.
        #[arg(value_name = "PLAN")]
        plan: PathBuf,
        /// Do not ask for confirmation (required without a terminal).
        #[arg(long, short)]
        yes: bool,
        /// Render and walk every step, print what would run, change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        graph: GraphArgs,
    },
    /// Show the ordered step graph: batches, hosts and every rendered command; nothing is executed.
    #[command(
        after_help = "Examples:\n  planrun plan plans/production.yaml\n  planrun plan plans/production.yaml --batch-size 1,50% --var branch=hotfix\n  planrun plan plans/production.yaml --format dot | dot -Tsvg > plan.svg"
    )]
    Plan {
        /// The plan file.
        #[arg(value_name = "PLAN")]
        plan: PathBuf,
        #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
        format: PlanFormat,
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
    match cli.command {
        Command::Validate { plans, format } => validate_plans(&plans, format, color),
        Command::Plan { plan, format, graph } => show_plan(&plan, format, &graph, color),
        Command::Schema { output } => write_schema(output),
        Command::Apply { plan, yes, dry_run, graph } => {
            crate::apply::apply(ApplyArgs { plan, yes, dry_run, build: graph.build_options(), color })
        }
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

fn validate_plans(plans: &[PathBuf], format: ValidateFormat, color: bool) -> i32 {
    let mut failed = false;
    let mut json = Vec::new();
    for path in plans {
        // Templates are rendered for every host while the graph is built, so a variable
        // that does not resolve is a validation error too.
        match validate::load_plan(path).and_then(|loaded| {
            graph::build(&loaded, &BuildOptions::default())?;
            Ok(loaded)
        }) {
            Ok(loaded) => {
                if format == ValidateFormat::Text {
                    println!("{}", validate::summary(&loaded));
                }
            }
            Err(errors) => {
                failed = true;
                match format {
                    ValidateFormat::Text => report(&errors, color),
                    ValidateFormat::Json => json.extend(errors.to_json()),
                }
            }
        }
    }
    if format == ValidateFormat::Json {
        let out = serde_json::json!({ "valid": !failed, "problems": json });
        println!("{out}");
    }
    if failed { exit::INVALID_INPUT } else { exit::SUCCESS }
}

fn show_plan(path: &std::path::Path, format: PlanFormat, args: &GraphArgs, color: bool) -> i32 {
    let options = args.build_options();
    let built = validate::load_plan(path).and_then(|loaded| graph::build(&loaded, &options).map(|p| (loaded, p)));
    let (loaded, plan) = match built {
        Ok(built) => built,
        Err(errors) => {
            report(&errors, color);
            return exit::INVALID_INPUT;
        }
    };
    let path = loaded.source().display_name();
    let about = preview::About {
        path: &path,
        batch_size: options.batch_size.as_ref().unwrap_or(&loaded.plan.rollout.batch_size),
        skipped_balancer: graph::balancer_skipped(&loaded),
    };
    let mut out = BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let written = match format {
        PlanFormat::Text => preview::text(&mut out, &plan, &about),
        PlanFormat::Json => preview::json(&mut out, &plan, &about),
        PlanFormat::Dot => preview::dot(&mut out, &plan, &about),
        PlanFormat::Mermaid => preview::mermaid(&mut out, &plan, &about),
    };
    match written.and_then(|()| out.flush()) {
        Ok(()) => exit::SUCCESS,
        // `planrun plan ... | head` closes the pipe early; that is not a failure.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => exit::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot write the plan: {e}");
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
                exit::INVALID_INPUT
            }
        },
    }
}
