//! The commands that write files or scripts: `init`, `schema`, `man`, `completions`.

use std::path::{Path, PathBuf};

use clap::CommandFactory;

use super::args::Cli;
use crate::exit;
use crate::init::{self, InitError};
use crate::validate::schema;

pub fn init_dir(dir: &Path) -> i32 {
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

pub fn write_man(output: Option<PathBuf>) -> i32 {
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

pub fn write_schema(output: Option<PathBuf>) -> i32 {
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

pub fn completions(shell: clap_complete::Shell) -> i32 {
    clap_complete::generate(shell, &mut Cli::command(), "planrun", &mut std::io::stdout());
    exit::SUCCESS
}
