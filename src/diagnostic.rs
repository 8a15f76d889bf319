//! Problems found in a plan, and the one place that turns them into text for people and
//! for machines.
//!
//! Every stage of validation reports `Problem`s against the plan's source; nothing stops
//! at the first one, so an operator fixes a plan in one round trip instead of five.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceCode};
use serde::Serialize;

pub use crate::text::{backticked_list, did_you_mean};
use crate::text::{escape_controls, mask_controls_keeping_offsets};
use crate::yaml::Span;

/// Lines longer than this are not drawn as snippets.
const MAX_SNIPPET_LINE: usize = 2000;

/// A plan file's text, shared by every problem found in it.
#[derive(Debug)]
pub struct SourceFile {
    /// The path as the user gave it, so messages point where they looked.
    pub path: PathBuf,
    pub text: String,
    pub origin: Origin,
}

/// Why planrun read a file: the plan asked for, a base it `extends`, or an inventory of
/// `servers_from` (a file, or a command's output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Plan,
    Base,
    /// `servers_hash` is `sha256:…` of the servers it listed (as JSON), what a resume and
    /// a saved plan compare: an inventory that prints a timestamp has not changed its fleet.
    Inventory {
        command: Option<String>,
        servers_hash: String,
    },
}

impl SourceFile {
    pub fn display_name(&self) -> String {
        match &self.origin {
            Origin::Inventory { command: Some(command), .. } => format!("output of `{command}`"),
            _ => self.path.display().to_string(),
        }
    }
}

/// One thing wrong with a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What is wrong, lowercase, with names in backticks.
    pub message: String,
    /// Where; `None` for problems with the file as a whole (empty, unreadable).
    pub span: Option<Span>,
    /// A short note under the caret.
    pub label: Option<String>,
    /// How to fix it.
    pub help: Option<String>,
    /// Other places that explain this one, such as the first of two duplicates.
    pub related: Vec<(Span, String)>,
}

impl Problem {
    pub fn at(span: Span, message: impl Into<String>) -> Self {
        Problem { message: message.into(), span: Some(span), label: None, help: None, related: vec![] }
    }

    pub fn whole_file(message: impl Into<String>) -> Self {
        Problem { message: message.into(), span: None, label: None, help: None, related: vec![] }
    }

    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn maybe_help(mut self, help: Option<String>) -> Self {
        if help.is_some() {
            self.help = help;
        }
        self
    }

    pub fn related(mut self, span: Span, note: impl Into<String>) -> Self {
        self.related.push((span, note.into()));
        self
    }
}

/// Everything wrong with one plan, which may be read from several files (a plan and the
/// bases it `extends`).
#[derive(Debug)]
pub struct PlanErrors {
    /// The plan first, then its bases; a span's `file` is an index into this.
    pub files: Vec<Arc<SourceFile>>,
    pub problems: Vec<Problem>,
}

impl PlanErrors {
    pub fn new(source: Arc<SourceFile>, problems: Vec<Problem>) -> Self {
        PlanErrors::in_files(vec![source], problems)
    }

    /// Problems of a plan read from several files; `files[0]` is the plan itself.
    /// They are shown in reading order: problems about the whole plan first, then by
    /// file (the plan, then its bases in the order `extends` reaches them) and position
    /// in it; problems at one position keep the order they were found in.
    pub fn in_files(files: Vec<Arc<SourceFile>>, mut problems: Vec<Problem>) -> Self {
        debug_assert!(!files.is_empty());
        problems.sort_by_key(|p| p.span.map(|s| (s.file, s.offset)));
        PlanErrors { files, problems }
    }

    /// For errors before there is any text to point into (missing file, directory).
    pub fn about_path(path: &Path, problem: Problem) -> Self {
        let source = Arc::new(SourceFile { path: path.to_path_buf(), text: String::new(), origin: Origin::Plan });
        PlanErrors { files: vec![source], problems: vec![problem] }
    }

    /// The plan that was asked for (not one of its bases).
    pub fn source(&self) -> &SourceFile {
        &self.files[0]
    }

    /// The file a span points into; the plan itself for a span from nowhere known.
    fn file(&self, span: Option<Span>) -> &SourceFile {
        let id = span.map_or(0, |s| s.file as usize);
        self.files.get(id).unwrap_or(&self.files[0])
    }

    /// `path:line:column` of a span, or just the plan's path.
    pub fn location_of(&self, span: Option<Span>) -> String {
        let file = self.file(span).display_name();
        match span {
            Some(s) => format!("{file}:{}:{}", s.line, s.column),
            None => file,
        }
    }

    /// `path:line:column` of a problem, or just the path.
    pub fn location(&self, problem: &Problem) -> String {
        self.location_of(problem.span)
    }

    /// The problems as people read them: location, snippet, caret, help.
    pub fn render(&self, color: bool) -> String {
        let theme = if color { GraphicalTheme::unicode() } else { GraphicalTheme::unicode_nocolor() };
        let handler = GraphicalReportHandler::new_themed(theme).with_width(100).with_links(false);
        let mut out = String::new();
        for problem in &self.problems {
            // What a plan wrote reaches the terminal only with its control characters
            // made visible: a hostile value cannot rewrite what is shown.
            let problem = &Problem {
                message: escape_controls(&problem.message).into_owned(),
                label: problem.label.as_deref().map(|l| escape_controls(l).into_owned()),
                help: problem.help.as_deref().map(|h| escape_controls(h).into_owned()),
                related: problem.related.iter().map(|(s, n)| (*s, escape_controls(n).into_owned())).collect(),
                span: problem.span,
            };
            let file = self.file(problem.span);
            let report = ProblemReport {
                source: NamedSource::new(file.display_name(), mask_controls_keeping_offsets(&file.text).into_owned()),
                file: problem.span.map_or(0, |s| s.file),
                problem,
            };
            // The one-line form first: editors and terminals make `path:line:col` clickable,
            // and grep finds it.
            out.push_str(&format!("error: {}: {}\n", self.location(problem), problem.message));
            if problem.span.is_some_and(|s| line_len(&file.text, s.offset) > MAX_SNIPPET_LINE) {
                // miette lays out whole lines; a line of megabytes (a minified or hostile
                // file) is no use on a terminal and once made it panic.
                out.push_str("  (the line is too long to show)\n");
                if let Some(help) = &problem.help {
                    out.push_str(&format!("  help: {help}\n"));
                }
            } else if problem.span.is_some() {
                let mut text = String::new();
                if handler.render_report(&mut text, &report).is_ok() {
                    // miette repeats the message above the snippet; the line above already
                    // says it, with the position, so start at the snippet's frame.
                    let frame = text.find('╭').and_then(|i| text[..i].rfind('\n')).map_or(0, |i| i + 1);
                    out.push_str(&text[frame..]);
                }
            } else if let Some(help) = &problem.help {
                out.push_str(&format!("  help: {help}\n"));
            }
            // A snippet shows one file: places in another one (the first of two duplicates,
            // one in a base and one in the plan) are named by their position instead.
            for (span, note) in problem.related.iter().filter(|(s, _)| Some(s.file) != problem.span.map(|p| p.file)) {
                out.push_str(&format!("  note: {}: {note}\n", self.location_of(Some(*span))));
            }
            out.push('\n');
        }
        out
    }

    /// The problems as machines read them (`--format json`).
    pub fn to_json(&self) -> Vec<JsonProblem> {
        self.problems
            .iter()
            .map(|p| JsonProblem {
                plan: self.source().display_name(),
                file: self.file(p.span).display_name(),
                line: p.span.map(|s| s.line),
                column: p.span.map(|s| s.column),
                message: p.message.clone(),
                help: p.help.clone(),
            })
            .collect()
    }
}

fn line_len(text: &str, offset: usize) -> usize {
    let text = text.as_bytes();
    let offset = offset.min(text.len());
    let start = text[..offset].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let end = text[offset..].iter().position(|&b| b == b'\n').map_or(text.len(), |i| offset + i);
    end - start
}

/// The stable JSON shape of one problem.
#[derive(Debug, Serialize)]
pub struct JsonProblem {
    /// The plan being checked when the problem was found.
    pub plan: String,
    /// The file the problem is in: the plan, or a base it extends.
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
    pub help: Option<String>,
}

struct ProblemReport<'a> {
    source: NamedSource<String>,
    /// The file `source` is; related places elsewhere are not drawn in its snippet.
    file: crate::yaml::FileId,
    problem: &'a Problem,
}

impl fmt::Debug for ProblemReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problem.message)
    }
}

impl fmt::Display for ProblemReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problem.message)
    }
}

impl std::error::Error for ProblemReport<'_> {}

impl Diagnostic for ProblemReport<'_> {
    fn source_code(&self) -> Option<&dyn SourceCode> {
        Some(&self.source as &dyn SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let span = self.problem.span?;
        let primary = LabeledSpan::new_primary_with_span(self.problem.label.clone(), (span.offset, span.len.max(1)));
        let related = self
            .problem
            .related
            .iter()
            .filter(|(s, _)| s.file == self.file)
            .map(|(s, note)| LabeledSpan::new_with_span(Some(note.clone()), (s.offset, s.len.max(1))));
        Some(Box::new(std::iter::once(primary).chain(related)))
    }

    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.problem.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_problem_is_drawn_from_its_own_file() {
        let plan = Arc::new(SourceFile {
            path: "prod.yaml".into(),
            text: "extends: base.yaml\nname: b\n".into(),
            origin: Origin::Plan,
        });
        let base = Arc::new(SourceFile {
            path: "base.yaml".into(),
            text: "version: 1\nname: a\n".into(),
            origin: Origin::Base,
        });
        let in_base = Span { file: 1, offset: 11, len: 4, line: 2, column: 1 };
        let in_plan = Span { file: 0, offset: 19, len: 4, line: 2, column: 1 };
        let errors = PlanErrors::in_files(
            vec![plan, base],
            vec![
                Problem::at(in_base, "in the base").help("fix the base"),
                Problem::at(in_plan, "in the plan").related(in_base, "first here").related(in_plan, "and here"),
            ],
        );
        let text = errors.render(false);
        assert!(text.contains("error: base.yaml:2:1: in the base\n"), "{text}");
        assert!(text.contains("╭─[base.yaml:2:1]") && text.contains("2 │ name: a"), "{text}");
        assert!(text.contains("error: prod.yaml:2:1: in the plan\n"), "{text}");
        assert!(text.contains("2 │ name: b"), "{text}");
        // A related place in another file cannot be drawn in this snippet: it is named.
        assert!(text.contains("  note: base.yaml:2:1: first here\n"), "{text}");
        assert!(!text.contains("note: prod.yaml"), "{text}");
        // In reading order: the plan's file first, then its base.
        assert!(text.find("in the plan").unwrap() < text.find("in the base").unwrap(), "{text}");
        let json = errors.to_json();
        assert_eq!(json[0].file, "prod.yaml");
        assert_eq!((json[1].file.as_str(), json[1].plan.as_str()), ("base.yaml", "prod.yaml"));
    }
}
