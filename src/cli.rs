//! The command line: clap's types end here; everything past `main` sees resolved values.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::diagnostic::PlanErrors;
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
        Command::Schema { output } => write_schema(output),
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
