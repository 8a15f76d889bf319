//! The commands that write files or scripts: `init`, `schema`, `man`, `completions`.

use std::io::Write;
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

/// `planrun man`: one page with every command to standard output (for `man -l -`), or
/// a page per command into a folder, made if missing (for `MANPATH`).
pub fn write_man(output: Option<PathBuf>) -> i32 {
    // No `help` command in the manual: its page would only say to read the others.
    let mut command = Cli::command().disable_help_subcommand(true);
    command.build();
    let written = match &output {
        None => whole_manual(&command, &mut std::io::stdout().lock()),
        Some(dir) => std::fs::create_dir_all(dir).and_then(|()| clap_mangen::generate_to(command, dir)),
    };
    match written {
        Ok(()) => exit::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => exit::SUCCESS,
        Err(e) => {
            let place =
                output.map_or("the manual page".to_string(), |d| format!("the manual pages into `{}`", d.display()));
            eprintln!("error: cannot write {place}: {e}");
            eprintln!(
                "  help: check that the folder can be created and written, or leave out `--output` to print the page"
            );
            exit::INVALID_INPUT
        }
    }
}

/// The top page with a section per command, since a page read
/// from standard input cannot point to pages that are not installed.
fn whole_manual(command: &clap::Command, out: &mut dyn Write) -> std::io::Result<()> {
    let top = clap_mangen::Man::new(command.clone());
    top.render_title(out)?;
    top.render_name_section(out)?;
    top.render_synopsis_section(out)?;
    top.render_description_section(out)?;
    top.render_options_section(out)?;
    top.render_extra_section(out)?;
    let visible = |c: &clap::Command| c.get_subcommands().filter(|s| !s.is_hide_set()).cloned().collect::<Vec<_>>();
    let mut stack: Vec<clap::Command> = visible(command).into_iter().rev().collect();
    while let Some(sub) = stack.pop() {
        stack.extend(visible(&sub).into_iter().rev());
        let sub = &sub;
        let name = sub.get_display_name().unwrap_or(sub.get_name()).replace('-', " ");
        writeln!(out, ".SH \"{}\"", name.to_uppercase())?;
        let page = clap_mangen::Man::new(sub.clone());
        let mut text = Vec::new();
        page.render_description_section(&mut text)?;
        page.render_synopsis_section(&mut text)?;
        if sub.get_arguments().any(|a| !a.is_hide_set()) {
            page.render_options_section(&mut text)?;
        }
        if sub.get_after_help().is_some() {
            page.render_extra_section(&mut text)?;
        }
        // The command's own sections become subsections of its section.
        let text = String::from_utf8_lossy(&text).replace("\n.SH ", "\n.SS ");
        let text = text.strip_prefix(".SH ").map_or(text.clone(), |rest| format!(".SS {rest}"));
        out.write_all(text.as_bytes())?;
    }
    Ok(())
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
