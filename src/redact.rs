//! Secrets never leave planrun: their values are replaced by `***` wherever text leaves
//! the process.
//!
//! Two layers, one [`Redactor`]:
//! - events are masked at their source ([`crate::events::Emitter`]), so the log files
//!   and the journal, which consume events, are clean;
//! - every line planrun prints goes through the process-wide redactor ([`install`]):
//!   the crate's `println!`/`eprintln!`/`print!`/`eprint!` (defined here, shadowing
//!   std's in every module of the crate) and [`stdout`]/[`stderr`] write through a
//!   [`Redacting`] writer, so the pre-flight view, error messages, `--output json` and
//!   `planrun plan` cannot print a secret whatever they were built from.

use std::io::{self, Write};
use std::sync::{Arc, Mutex, RwLock};

use aho_corasick::{AhoCorasick, MatchKind};

use crate::model::Plan;

pub const MASK: &str = "***";

/// Values shorter than this cannot be masked: a one- or two-character "secret" would
/// turn every line into asterisks and protects nothing. `apply` refuses them.
pub const MIN_SECRET_LEN: usize = 3;

/// Masks every secret in one pass (Aho-Corasick over all of them, leftmost-longest, so
/// a secret containing another is masked whole). A multi-line secret (a PEM key) is
/// masked whole and line by line: output is split into lines before it is masked.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    matcher: Option<Arc<AhoCorasick>>,
    /// What `matcher` matches, for [`Redactor::redact_cut`].
    patterns: Arc<Vec<String>>,
}

/// A secret the plan names that is too short to be masked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooShort {
    pub name: String,
    pub len: usize,
}

impl Redactor {
    /// The values of the environment variables the plan names as secrets: `secret_env`
    /// and every balancer's `token_env`. Values too short to mask are left out; see
    /// [`too_short`], which `apply` checks first.
    pub fn from_plan(plan: &Plan) -> Self {
        Redactor::new(plan.secret_env_names().iter().filter_map(|n| std::env::var(n).ok()))
    }

    pub fn new(values: impl IntoIterator<Item = String>) -> Self {
        let mut patterns: Vec<String> = Vec::new();
        for value in values {
            // The whole value, and each of its lines: output reaches the redactor line by
            // line, so a multi-line secret is only ever seen a line at a time.
            let lines = value.lines().map(|l| l.trim_end_matches('\r').to_string()).collect::<Vec<_>>();
            patterns.push(value);
            if lines.len() > 1 {
                patterns.extend(lines);
            }
        }
        patterns.retain(|p| p.len() >= MIN_SECRET_LEN);
        patterns.sort();
        patterns.dedup();
        if patterns.is_empty() {
            return Redactor::default();
        }
        let matcher = AhoCorasick::builder().match_kind(MatchKind::LeftmostLongest).build(&patterns).ok().map(Arc::new);
        Redactor { matcher, patterns: Arc::new(patterns) }
    }

    /// Masks `text`, the start of a line that was cut short: also the beginning of a
    /// secret at its very end, whose rest was cut off.
    pub fn redact_cut(&self, text: &str) -> String {
        let mut masked = self.redact(text);
        let cut = self
            .patterns
            .iter()
            .filter_map(|p| (1..p.len()).rev().find(|&k| p.is_char_boundary(k) && masked.ends_with(&p[..k])))
            .max();
        if let Some(len) = cut {
            masked.truncate(masked.len() - len);
            masked.push_str(MASK);
        }
        masked
    }

    pub fn redact(&self, text: &str) -> String {
        match &self.matcher {
            Some(m) if m.is_match(text) => m.replace_all(text, &vec![MASK; m.patterns_len()]),
            _ => text.to_string(),
        }
    }

    /// [`Redactor::redact`] over bytes that need not be UTF-8.
    pub fn redact_bytes(&self, bytes: &[u8]) -> Vec<u8> {
        match &self.matcher {
            Some(m) if m.is_match(bytes) => m.replace_all_bytes(bytes, &vec![MASK.as_bytes(); m.patterns_len()]),
            _ => bytes.to_vec(),
        }
    }

    pub fn redact_in_place(&self, text: &mut String) {
        if let Some(m) = &self.matcher
            && m.is_match(text.as_str())
        {
            *text = self.redact(text);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.matcher.is_none()
    }
}

/// The secrets the plan names whose values are set but shorter than [`MIN_SECRET_LEN`]
/// (in characters): they cannot be masked, so a run that would print them is refused.
pub fn too_short(plan: &Plan) -> Vec<TooShort> {
    let mut short = Vec::new();
    for name in plan.secret_env_names() {
        if let Ok(value) = std::env::var(name)
            && !value.is_empty()
            && value.len() < MIN_SECRET_LEN
        {
            short.push(TooShort { name: name.to_string(), len: value.chars().count() });
        }
    }
    short
}

/// The plan's secrets that can be masked, as (environment variable, value): what a
/// `--var` value is searched for before the journal records it.
pub fn secret_values(plan: &Plan) -> Vec<(String, String)> {
    plan.secret_env_names()
        .into_iter()
        .filter_map(|name| std::env::var(name).ok().map(|value| (name.to_string(), value)))
        .filter(|(_, value)| value.len() >= MIN_SECRET_LEN)
        .collect()
}

/// Every secret value installed so far, and the matcher over them all.
static INSTALLED: Mutex<Vec<String>> = Mutex::new(Vec::new());
static PROCESS: RwLock<Option<Redactor>> = RwLock::new(None);

/// Makes `values` masked in everything the process prints from now on, together with
/// what was installed before (`planrun plan` installs the secrets of every plan it shows).
pub fn install(values: impl IntoIterator<Item = String>) {
    let Ok(mut all) = INSTALLED.lock() else { return };
    all.extend(values);
    let redactor = Redactor::new(all.iter().cloned());
    if let Ok(mut slot) = PROCESS.write() {
        *slot = Some(redactor);
    }
}

/// Installs the secrets of `plan` process-wide; see [`install`].
pub fn install_plan(plan: &Plan) {
    install(plan.secret_env_names().iter().filter_map(|n| std::env::var(n).ok()));
}

/// The process-wide redactor: empty until [`install`].
pub fn process() -> Redactor {
    PROCESS.read().ok().and_then(|r| r.clone()).unwrap_or_default()
}

/// A writer that masks secrets in complete lines before they reach `inner`. A partial
/// line is kept until its newline, [`Write::flush`] or drop, so a secret written in
/// pieces (`write!` formats argument by argument) is still seen whole.
pub struct Redacting<W: Write> {
    inner: W,
    redactor: Redactor,
    pending: Vec<u8>,
}

/// A partial line longer than this is masked and written without waiting for its end.
const MAX_PENDING: usize = 1 << 20;

impl<W: Write> Redacting<W> {
    /// Masks with the process-wide redactor.
    pub fn new(inner: W) -> Self {
        Redacting::with(inner, process())
    }

    pub fn with(inner: W, redactor: Redactor) -> Self {
        Redacting { inner, redactor, pending: Vec::new() }
    }

    fn write_pending(&mut self, upto: usize) -> io::Result<()> {
        if self.redactor.is_empty() {
            self.inner.write_all(&self.pending[..upto])?;
        } else {
            let masked = self.redactor.redact_bytes(&self.pending[..upto]);
            self.inner.write_all(&masked)?;
        }
        self.pending.drain(..upto);
        Ok(())
    }
}

impl<W: Write> Write for Redacting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let searched = self.pending.len();
        self.pending.extend_from_slice(buf);
        if let Some(pos) = memchr_last(&self.pending[searched..]) {
            self.write_pending(searched + pos + 1)?;
        } else if self.pending.len() > MAX_PENDING {
            self.write_pending(self.pending.len())?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            self.write_pending(self.pending.len())?;
        }
        self.inner.flush()
    }
}

impl<W: Write> Drop for Redacting<W> {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

fn memchr_last(bytes: &[u8]) -> Option<usize> {
    bytes.iter().rposition(|&b| b == b'\n')
}

/// Standard output, masked.
pub fn stdout() -> Redacting<io::Stdout> {
    Redacting::new(io::stdout())
}

/// Standard error, masked.
pub fn stderr() -> Redacting<io::Stderr> {
    Redacting::new(io::stderr())
}

/// `println!`, through the process-wide redactor. A failed write (a closed pipe) is
/// ignored: `apply` must never stop halfway because its reader went away.
macro_rules! println {
    () => {{
        use ::std::io::Write as _;
        let mut out = $crate::redact::Redacting::new(::std::io::stdout().lock());
        let _ = ::std::writeln!(out);
    }};
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let mut out = $crate::redact::Redacting::new(::std::io::stdout().lock());
        let _ = ::std::writeln!(out, $($arg)*);
    }};
}

/// `print!`, through the process-wide redactor.
macro_rules! print {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let mut out = $crate::redact::Redacting::new(::std::io::stdout().lock());
        let _ = ::std::write!(out, $($arg)*);
    }};
}

/// `eprintln!`, through the process-wide redactor.
macro_rules! eprintln {
    () => {{
        use ::std::io::Write as _;
        let mut out = $crate::redact::Redacting::new(::std::io::stderr().lock());
        let _ = ::std::writeln!(out);
    }};
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let mut out = $crate::redact::Redacting::new(::std::io::stderr().lock());
        let _ = ::std::writeln!(out, $($arg)*);
    }};
}

/// `eprint!`, through the process-wide redactor.
#[allow(unused_macros)]
macro_rules! eprint {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let mut out = $crate::redact::Redacting::new(::std::io::stderr().lock());
        let _ = ::std::write!(out, $($arg)*);
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_every_occurrence_longest_first() {
        let r = Redactor::new(["hunter2".to_string(), "hunter2-extended".to_string(), "ab".to_string()]);
        assert_eq!(r.redact("token=hunter2-extended, again hunter2, ab"), "token=***, again ***, ab");
    }

    #[test]
    fn masks_each_line_of_a_multi_line_secret() {
        let key = "-----BEGIN KEY-----\nMIIEvQIBADANBgkq\r\nhkiG9w0BAQEFAASC\n-----END KEY-----\n".to_string();
        let r = Redactor::new([key.clone()]);
        for line in key.lines() {
            assert_eq!(r.redact(&format!("| {}", line.trim_end())), "| ***");
        }
        assert_eq!(r.redact(&key), "***");
    }

    #[test]
    fn the_writer_masks_a_secret_written_in_pieces() {
        let r = Redactor::new(["s3cr3t".to_string()]);
        let mut out = Vec::new();
        {
            let mut w = Redacting::with(&mut out, r);
            write!(w, "token=s3").unwrap();
            write!(w, "cr3t\nand s3").unwrap();
            write!(w, "cr3t").unwrap();
        }
        assert_eq!(out, b"token=***\nand ***");
    }
}
