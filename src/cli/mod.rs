//! The face of planrun: parses the command line, runs the command, prints, and picks
//! the exit code. Nothing outside `cli` prints (but `report`, the run's own output), and
//! nothing imports `cli` but `main`.

mod apply;
mod args;
mod check;
mod exec;
mod files;
mod inventory;
mod print;
mod rollback;
mod runs;
mod saved;
mod state;
mod status;

use std::io::IsTerminal;

use clap::Parser;

use crate::exit;
use crate::report::Verbosity;
pub use apply::ApplyArgs;
pub use args::{Cli, ColorChoice, Command, LockAction, OutputFormat, PlanFormat, ValidateFormat};

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
    // The live view's bars and the summary's colours follow the same choice.
    console::set_colors_enabled(color);
    console::set_colors_enabled_stderr(color);
    if !matches!(cli.command, Command::Apply { .. } | Command::Rollback(_)) {
        // Read-only commands end quietly when their reader goes away (`| head`), as Unix
        // tools do. `apply` keeps SIGPIPE ignored: a closed pipe must never stop a rollout
        // halfway, so it ignores failed writes instead.
        restore_sigpipe();
    }
    match cli.command {
        Command::Validate { plans, format } => check::validate_plans(&plans, format, color),
        Command::Plan { plans, out: Some(out), graph, .. } => saved::save(&plans, &graph, &out, color),
        Command::Plan { plans, list_hosts: true, graph, .. } => check::list_hosts(&plans, &graph, color),
        Command::Plan { plans, format, verbose, list_hosts: false, rollback, graph, out: None } => {
            check::show_plans(&plans, format, verbose, rollback, &graph, color)
        }
        Command::Exec(command) => exec::exec(command, color),
        Command::Inventory(command) => inventory::inventory(command),
        Command::Schema { output } => files::write_schema(output),
        Command::Init { dir } => files::init_dir(&dir),
        Command::Completions { shell } => files::completions(shell),
        Command::Man { output } => files::write_man(output),
        Command::Apply {
            plan,
            yes,
            dry_run,
            resume,
            force,
            resume_changed,
            pause_after,
            no_pause,
            lock_wait,
            message,
            output,
            quiet,
            verbose,
            graph,
        } => {
            // A saved plan runs with the inputs it was saved with, once checked unchanged.
            let (plan, build, saved) = match saved::resolve(&plan, resume, &graph) {
                Ok(Some((plan, build, saved))) => (plan, build, Some(std::sync::Arc::new(saved))),
                Ok(None) => (plan, graph.build_options(), None),
                Err(code) => return code,
            };
            let verbosity = match (quiet, verbose) {
                (true, _) => Verbosity::Quiet,
                (_, true) => Verbosity::Verbose,
                _ => Verbosity::Normal,
            };
            apply::apply(ApplyArgs {
                plan,
                yes,
                dry_run,
                resume,
                force,
                resume_changed,
                pause_after,
                no_pause,
                lock_wait,
                message: message.unwrap_or_default(),
                build,
                saved,
                rollback: false,
                color,
                json: output == OutputFormat::Json,
                verbosity,
            })
        }
        Command::Rollback(command) => {
            let verbosity = match (command.quiet, command.verbose) {
                (true, _) => Verbosity::Quiet,
                (_, true) => Verbosity::Verbose,
                _ => Verbosity::Normal,
            };
            apply::apply(ApplyArgs {
                plan: command.plan,
                yes: command.yes,
                dry_run: command.dry_run,
                resume: false,
                force: command.force,
                resume_changed: false,
                pause_after: Vec::new(),
                no_pause: true,
                lock_wait: command.lock_wait,
                message: command.message.unwrap_or_default(),
                build: command.graph.build_options(),
                saved: None,
                rollback: true,
                color,
                json: command.output == OutputFormat::Json,
                verbosity,
            })
        }
        Command::Status { plan } => status::status(&plan, color),
        Command::Lock { action, plan } => status::lock(action, &plan, color),
        Command::Runs { plan, last } => runs::runs(&plan, last.map(std::num::NonZeroUsize::get), color),
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

fn restore_sigpipe() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: called before any other thread exists; SIG_DFL installs no handler code.
    unsafe {
        let _ = signal(Signal::SIGPIPE, SigHandler::SigDfl);
    }
}
