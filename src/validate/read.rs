//! Bounded reading: a plan file, or a base it extends, is read only up to a size, and
//! parsed only up to a number of values, so a wrong or hostile file costs little.

use std::path::Path;

use crate::bounded::{self, Refusal};
use crate::diagnostic::Problem;
use crate::yaml::{self, Limits, Span};

/// The largest plan file planrun reads. A real plan of 100,000 servers is ~11 MB; past
/// this, something is wrong with the file, and reading it would only cost memory: the
/// worst 16 MiB file (millions of one-character keys) peaks near 350 MB.
pub const MAX_PLAN_BYTES: usize = 16 * 1024 * 1024;

/// The most YAML values a plan may expand to. The YAML loader's default (1,000,000) is
/// reached by a plain plan of ~77,000 servers (13 values each: the map, `host`, `name`,
/// two roles, an option, and their keys); 3,000,000 takes 100,000 servers with room for
/// richer entries, while an alias bomb still stops at a few hundred MB of tree.
pub const MAX_PLAN_VALUES: usize = 3_000_000;

/// The longest chain of `extends` (a plan, its base, the base's base...). Two levels
/// cover every layout seen in practice; the bound keeps a generated chain from reading
/// thousands of files.
pub const MAX_EXTENDS: usize = 16;

pub fn limits() -> Limits {
    Limits { max_bytes: MAX_PLAN_BYTES, max_nodes: MAX_PLAN_VALUES, ..Limits::default() }
}

/// Reads a file of at most `limit` bytes. `at` is the `extends` that names it, for a base:
/// a problem with a base file is reported there, where the user can fix the name.
pub(crate) fn read_bounded(path: &Path, limit: usize, at: Option<Span>) -> Result<Vec<u8>, Box<Problem>> {
    let about = |message: String, help: &str| {
        let problem = match at {
            Some(span) => Problem::at(span, message).label("base plan"),
            None => Problem::whole_file(message),
        };
        Box::new(problem.help(help))
    };
    let what = if at.is_some() { "base plan" } else { "plan file" };
    let too_large = "a plan file holds servers and steps; check that this is the right file";
    bounded::read(path, limit as u64).map_err(|e| {
        let shown = path.display();
        let (message, help) = match e.refusal {
            Refusal::Missing => {
                let help = if at.is_some() {
                    "`extends` is relative to the folder of the plan it is written in; check the file name"
                } else {
                    "check the path to the plan file"
                };
                (format!("the {what} `{shown}` does not exist"), help)
            }
            Refusal::Directory => {
                let help = if at.is_some() {
                    "name a base plan file, such as `extends: base.yaml`"
                } else {
                    "name a plan file, such as `plans/production.yaml`"
                };
                (format!("`{shown}` is a directory, not a {what}"), help)
            }
            Refusal::NotRegular => (
                format!("`{shown}` is not a regular file"),
                "planrun reads plans from regular files only, not from a FIFO, a socket or a device",
            ),
            Refusal::TooLarge { size: Some(size) } => {
                (format!("`{shown}` is {size} bytes, more than the {limit} a plan may have"), too_large)
            }
            Refusal::TooLarge { size: None } => {
                (format!("`{shown}` is more than the {limit} bytes a plan may have"), too_large)
            }
            Refusal::Io(e) => (format!("cannot read `{shown}`: {e}"), "check the file's permissions"),
        };
        about(message, help)
    })
}

pub(crate) fn load_problem(e: &yaml::LoadError) -> Problem {
    use yaml::LoadError as E;
    match e {
        E::Syntax { message, span } => Problem::at(*span, format!("invalid YAML: {message}"))
            .label("here")
            .help("check the indentation and quoting around this position"),
        E::TooLarge { size, limit } => {
            Problem::whole_file(format!("the plan is {size} bytes, more than the {limit} allowed"))
                .help("a plan file holds servers and steps; check that this is the right file")
        }
        E::TooDeep { limit, span } => Problem::at(*span, format!("the plan nests deeper than {limit} levels"))
            .label("too deep")
            .help("a plan needs a handful of levels; check for runaway brackets or indentation"),
        E::TooManyNodes { limit, span } => Problem::at(*span, format!("the plan expands to more than {limit} values"))
            .label("expanding this alias went past the limit")
            .help("aliases that refer to aliases multiply; a plan that large is almost certainly an alias bomb"),
        E::DuplicateKey { key, span, first } => Problem::at(*span, format!("duplicate key `{key}`"))
            .label("second definition")
            .related(*first, "first defined here")
            .help("remove one of them: YAML keeps only one, silently"),
        E::NonScalarKey { span } => Problem::at(*span, "a key must be a plain name, not a list or a map")
            .label("complex key")
            .help("write keys as plain words, such as `host:`"),
        E::UnknownAnchor { span } => Problem::at(*span, "this alias refers to an anchor that is not defined before it")
            .label("unknown anchor")
            .help("define the anchor with `&name` before using `*name`"),
        E::MultipleDocuments { span } => {
            Problem::at(*span, "a plan file holds one YAML document, this is a second one")
                .label("second document")
                .help("remove the `---` separator or move the second document into its own file")
        }
        E::NotUtf8 { file, offset, line, column } => Problem::at(
            Span { file: *file, offset: *offset, len: 1, line: *line, column: *column },
            "the plan is not valid UTF-8",
        )
        .label("invalid byte")
        .help("save the file as UTF-8"),
        E::InvalidMerge { span } => Problem::at(*span, "a `<<` merge key takes a map or a list of maps")
            .label("not a map")
            .help("merge an anchored map, such as `<<: *defaults`"),
        E::UnsupportedTag { tag, span } => Problem::at(*span, format!("the tag `{tag}` is not supported"))
            .label("unsupported tag")
            .help("remove it: a plan needs plain values, and allows only core tags such as `!!str`"),
        E::TagMismatch { tag, span } => Problem::at(*span, format!("the value does not match its tag `{tag}`"))
            .label(format!("not a `{tag}`"))
            .help("fix the value, or remove the tag"),
        E::Empty => Problem::whole_file("the plan is empty")
            .help("start from `planrun init`, or write at least `version`, `application`, `servers` and `rollout`"),
        #[allow(unreachable_patterns)]
        other => Problem::whole_file(other.to_string()),
    }
}
