//! The command line: clap's types end here; everything past `main` sees resolved values.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::apply::ApplyArgs;
use crate::diagnostic::PlanErrors;
use crate::graph::BuildOptions;
use crate::model::{BatchSize, BatchStep};
use crate::exit;
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
    #[command(after_help = "Examples:\n  planrun apply plans/production.yaml\n  planrun apply examples/localhost.yaml --yes\n  \
                            planrun apply plans/production.yaml --dry-run --limit app1")]
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
    /// Print the plan JSON schema (the one checked in at schemas/plan.schema.json).
    #[command(after_help = "Example:\n  planrun schema --output schemas/plan.schema.json")]
    Schema {
        /// Write the schema to this file instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

/// Options that change the step graph, shared by `plan` and `apply`.
#[derive(Debug, Clone, clap::Args)]
pub struct GraphArgs {
    /// Only these selected hosts, by name or address (comma-separated or repeated).
    #[arg(long, value_name = "HOSTS", value_delimiter = ',')]
    pub limit: Vec<String>,
    /// Override `rollout.batch_size`: a count, a percentage, or a ramp such as `1,50%`.
    #[arg(long, value_name = "N|P%", value_parser = parse_batch_size)]
    pub batch_size: Option<BatchSize>,
    /// Override a plan variable (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,
}

impl GraphArgs {
    pub fn build_options(&self) -> BuildOptions {
        BuildOptions {
            batch_size: self.batch_size.clone(),
            vars: self.vars.clone(),
            limit: if self.limit.is_empty() { None } else { Some(self.limit.clone()) },
        }
    }
}

fn parse_batch_size(text: &str) -> Result<BatchSize, String> {
    let steps = text.split(',').map(|s| s.parse::<BatchStep>()).collect::<Result<Vec<_>, _>>()?;
    Ok(match steps.as_slice() {
        [one] => BatchSize::One(*one),
        _ => BatchSize::Ramp(steps),
    })
}

fn parse_var(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(format!("`{text}` is not `NAME=VALUE`")),
    }
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
        match validate::load_plan(path) {
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

/// The one place plan problems are printed.
pub fn report(errors: &PlanErrors, color: bool) {
    let text = errors.render(color);
    let count = errors.problems.len();
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(text.as_bytes());
    let _ = writeln!(
        stderr,
        "{}: {count} {} found; nothing was executed",
        errors.source.display_name(),
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
