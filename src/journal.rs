//! The journal: every apply appends what it did to `.planrun/journal.jsonl` beside the
//! plan, one JSON object per line, flushed line by line so a killed process still leaves
//! a record of every step it finished. `--resume` and `planrun status` read it back.
//!
//! Records (all with `"v": 1` and the plan's file name):
//! - `run_started`: run id, plan hash, the run it resumes, who and where.
//! - `preflight`: the balancers' view of the rollout's nodes before anything changed.
//! - `step`: run id, phase, step name and index, host, start, end, outcome, exit code.
//! - `paused`: run id, the batch the run paused after and the run's batches.
//! - `guard`: the traffic guard's probe counts per batch and for the run, its halt.
//! - `run_finished`: run id, outcome.
//!
//! Events are redacted before they reach the journal, so it never holds a secret.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::diagnostic::{Origin, SourceFile};
use crate::events::{Event, Outcome, RunOutcome};
use crate::graph::shell::shell_quote;
use crate::graph::{BuildOptions, Phase, StepInstance};
use crate::model::BatchSize;
use crate::validate::LoadedPlan;

pub const JOURNAL_VERSION: u32 = 1;

/// `sha256:…` of the plan's text and of every base it extends: a resume refuses when
/// any of them changed since.
pub fn plan_hash(loaded: &LoadedPlan) -> String {
    let mut hasher = Sha256::new();
    for file in &loaded.files {
        // Length-prefixed, so moving text from one file to the next changes the hash.
        let text = match &file.origin {
            Origin::Inventory { servers_hash, .. } => servers_hash,
            _ => &file.text,
        };
        hasher.update((text.len() as u64).to_le_bytes());
        hasher.update(text.as_bytes());
    }
    let digest = hasher.finalize();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// `.planrun/` beside the plan: the journal and the logs of every run of that plan.
pub fn state_dir(plan: &Path) -> PathBuf {
    plan.parent().map(Path::to_path_buf).unwrap_or_default().join(".planrun")
}

/// The journal names plans by file name: plans in one folder share `.planrun/`.
pub fn plan_key(plan: &Path) -> String {
    plan.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| plan.display().to_string())
}

/// A new run's id, sortable and safe in file names: `2026-11-27T19-01-02Z-1234`.
pub fn new_run_id() -> String {
    let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    format!("{}-{}", now.replace(':', "-"), std::process::id())
}

/// The journal of the plans in `state_dir`.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("journal.jsonl")
}

/// The effective inputs of a run, beyond the plan's text: the command line's overrides,
/// each file's hash, and the plan's own `vars`, so a resume can continue the same
/// rollout and say precisely what differs when it cannot.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(into = "StoredInputs", from = "StoredInputs")]
pub struct Inputs {
    /// `--var NAME=VALUE`, the last of a name winning.
    pub vars: BTreeMap<String, String>,
    /// `--limit`.
    pub limit: Option<Vec<String>>,
    /// `--batch-size`.
    pub batch_size: Option<BatchSize>,
    /// The plan and every base it extends, in the order they were read.
    pub files: Vec<FileHash>,
    /// The plan's `vars` after `extends`, each as JSON text.
    pub plan_vars: BTreeMap<String, String>,
    /// The `--var`s whose values carry a secret, as the journal keeps them.
    pub sealed: BTreeMap<String, Vec<Piece>>,
}

/// A piece of a `--var` value that carries a secret: text as it is, or a secret, kept
/// as the name of the environment variable it is read from (at every run, a resume
/// too), never as its value or a hash of it (a short secret's hash is guessed offline).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Piece {
    Text(String),
    Secret(String),
}

/// [`Inputs`] as the journal holds them: a `--var` that carries a secret is masked in
/// `vars` and kept in `sealed`. Every journal write goes through this, so no secret
/// reaches the disk in clear.
#[derive(Serialize, Deserialize)]
struct StoredInputs {
    #[serde(default)]
    vars: BTreeMap<String, String>,
    #[serde(default)]
    limit: Option<Vec<String>>,
    #[serde(default)]
    batch_size: Option<BatchSize>,
    #[serde(default)]
    files: Vec<FileHash>,
    #[serde(default)]
    plan_vars: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    sealed: BTreeMap<String, Vec<Piece>>,
}

impl From<Inputs> for StoredInputs {
    fn from(inputs: Inputs) -> Self {
        let mut vars = inputs.vars;
        for (name, pieces) in &inputs.sealed {
            let masked = pieces
                .iter()
                .map(|p| match p {
                    Piece::Text(text) => text.as_str(),
                    Piece::Secret(_) => crate::redact::MASK,
                })
                .collect();
            vars.insert(name.clone(), masked);
        }
        StoredInputs {
            vars,
            limit: inputs.limit,
            batch_size: inputs.batch_size,
            files: inputs.files,
            plan_vars: inputs.plan_vars,
            sealed: inputs.sealed,
        }
    }
}

impl From<StoredInputs> for Inputs {
    fn from(stored: StoredInputs) -> Self {
        let mut vars = stored.vars;
        for (name, pieces) in &stored.sealed {
            let value = pieces
                .iter()
                .map(|p| match p {
                    Piece::Text(text) => text.clone(),
                    // Unset, the run is refused for its missing secret before anything runs.
                    Piece::Secret(env) => std::env::var(env).unwrap_or_default(),
                })
                .collect();
            vars.insert(name.clone(), value);
        }
        Inputs {
            vars,
            limit: stored.limit,
            batch_size: stored.batch_size,
            files: stored.files,
            plan_vars: stored.plan_vars,
            sealed: stored.sealed,
        }
    }
}

/// `value` cut into text and the secrets in it (leftmost-longest), or `None` when it
/// carries none. `secrets` are (environment variable, value) pairs.
fn seal(value: &str, secrets: &[(String, String)]) -> Option<Vec<Piece>> {
    use aho_corasick::{AhoCorasick, MatchKind};
    let matcher =
        AhoCorasick::builder().match_kind(MatchKind::LeftmostLongest).build(secrets.iter().map(|(_, v)| v)).ok()?;
    let mut pieces = Vec::new();
    let mut at = 0;
    for found in matcher.find_iter(value) {
        if found.start() > at {
            pieces.push(Piece::Text(value[at..found.start()].to_string()));
        }
        pieces.push(Piece::Secret(secrets[found.pattern().as_usize()].0.clone()));
        at = found.end();
    }
    if pieces.is_empty() {
        return None;
    }
    if at < value.len() {
        pieces.push(Piece::Text(value[at..].to_string()));
    }
    Some(pieces)
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileHash {
    pub path: String,
    pub hash: String,
}

impl Inputs {
    pub fn of(loaded: &LoadedPlan, options: &BuildOptions) -> Self {
        let vars: BTreeMap<String, String> = options.vars.iter().cloned().collect();
        let secrets = crate::redact::secret_values(&loaded.plan);
        let sealed = vars.iter().filter_map(|(name, value)| Some((name.clone(), seal(value, &secrets)?))).collect();
        Inputs {
            vars,
            sealed,
            limit: options.limit.clone(),
            batch_size: options.batch_size.clone(),
            files: loaded.files.iter().map(|f| FileHash { path: f.display_name(), hash: input_hash(f) }).collect(),
            plan_vars: loaded.plan.vars.iter().map(|(k, v)| (k.clone(), v.to_string())).collect(),
        }
    }

    /// The overrides as build options.
    pub fn build_options(&self) -> BuildOptions {
        BuildOptions {
            batch_size: self.batch_size.clone(),
            vars: self.vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            limit: self.limit.clone(),
        }
    }

    /// The command-line arguments that give these overrides, shell-quoted.
    pub fn arguments(&self) -> String {
        let mut args = Vec::new();
        // A var that carries a secret is left out: shown it would read `***`, and a
        // resume reuses it from the journal and the environment anyway.
        for (name, value) in self.vars.iter().filter(|(name, _)| !self.sealed.contains_key(*name)) {
            args.push("--var".to_string());
            args.push(format!("{name}={value}"));
        }
        if let Some(limit) = &self.limit {
            args.push("--limit".into());
            args.push(limit.join(","));
        }
        if let Some(size) = &self.batch_size {
            args.push("--batch-size".into());
            args.push(batch_size_text(size));
        }
        args.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" ")
    }

    /// What a resume given `now` would change about the run it continues; empty when
    /// nothing. Overrides the resume does not give are the recorded ones, so only those
    /// it gives are compared.
    pub fn override_differences(&self, now: &Inputs) -> Vec<String> {
        let mut differences = Vec::new();
        let given: BTreeMap<String, String> = now
            .vars
            .iter()
            .filter(|(k, v)| self.vars.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !given.is_empty() {
            let had = self.vars.iter().filter(|(k, _)| given.contains_key(*k)).map(|(k, v)| (k.clone(), v.clone()));
            differences.push(format!(
                "`--var`: the run had {}, this resume gives {}",
                vars_text(&had.collect()),
                vars_text(&given)
            ));
        }
        if now.limit.is_some() && now.limit != self.limit {
            differences.push(format!(
                "`--limit`: the run had {}, this resume gives {}",
                self.limit.as_ref().map_or("none".into(), |l| format!("`{}`", l.join(","))),
                now.limit.as_ref().map_or("none".into(), |l| format!("`{}`", l.join(",")))
            ));
        }
        if now.batch_size.is_some() && now.batch_size != self.batch_size {
            differences.push(format!(
                "`--batch-size`: the run had {}, this resume gives {}",
                self.batch_size.as_ref().map_or("the plan's".into(), |b| format!("`{}`", batch_size_text(b))),
                now.batch_size.as_ref().map_or("the plan's".into(), |b| format!("`{}`", batch_size_text(b)))
            ));
        }
        differences
    }

    /// Which files, and which of the plan's `vars`, changed since `self` was recorded.
    pub fn plan_differences(&self, now: &Inputs) -> Vec<String> {
        let mut changed = Vec::new();
        for file in &now.files {
            match self.files.iter().find(|f| f.path == file.path) {
                Some(then) if then.hash == file.hash => {}
                Some(_) => changed.push(format!("`{}` changed", file.path)),
                None => changed.push(format!("`{}` is new to the plan", file.path)),
            }
        }
        for file in &self.files {
            if !now.files.iter().any(|f| f.path == file.path) {
                changed.push(format!("`{}` is no longer part of the plan", file.path));
            }
        }
        let names: BTreeSet<&String> = self.plan_vars.keys().chain(now.plan_vars.keys()).collect();
        let vars: Vec<String> = names
            .into_iter()
            .filter(|n| self.plan_vars.get(*n) != now.plan_vars.get(*n))
            .map(|n| format!("`{n}`"))
            .collect();
        if !vars.is_empty() {
            changed.push(format!("`vars` changed: {}", vars.join(", ")));
        }
        changed
    }
}

fn vars_text(vars: &BTreeMap<String, String>) -> String {
    if vars.is_empty() {
        return "none".into();
    }
    vars.iter().map(|(k, v)| format!("`{k}={v}`")).collect::<Vec<_>>().join(", ")
}

fn batch_size_text(size: &BatchSize) -> String {
    match size {
        BatchSize::One(step) => step.to_string(),
        BatchSize::Ramp(steps) => steps.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
    }
}

/// The command that continues a run of `plan` that did not succeed.
pub fn resume_command(plan: &Path, inputs: &Inputs) -> String {
    let args = inputs.arguments();
    let plan = shell_quote(&plan.display().to_string());
    if args.is_empty() {
        format!("planrun apply {plan} --resume")
    } else {
        format!("planrun apply {plan} --resume {args}")
    }
}

/// A file's hash as a run records it: an inventory's is that of the servers it listed.
pub fn input_hash(file: &SourceFile) -> String {
    match &file.origin {
        Origin::Inventory { servers_hash, .. } => servers_hash.clone(),
        _ => text_hash(&file.text),
    }
}

fn text_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    RunStarted {
        v: u32,
        run_id: String,
        plan: String,
        plan_hash: String,
        resume_of: Option<String>,
        user: String,
        machine: String,
        pid: u32,
        at: String,
        /// What the run was asked to roll: a resume continues with exactly these.
        #[serde(default)]
        inputs: Inputs,
        /// An apply, or a `planrun rollback`.
        #[serde(default, skip_serializing_if = "RunKind::is_apply")]
        kind: RunKind,
    },
    /// The balancers' view of the rollout's nodes before anything changed.
    Preflight {
        v: u32,
        run_id: String,
        plan: String,
        nodes: Vec<String>,
        forced: bool,
    },
    Step {
        v: u32,
        run_id: String,
        plan: String,
        phase: Phase,
        index: usize,
        step: String,
        host: Option<String>,
        start: String,
        end: String,
        outcome: Outcome,
        exit_code: Option<u32>,
    },
    /// The run stopped at a pause between batches, every node back in rotation.
    Paused {
        v: u32,
        run_id: String,
        plan: String,
        /// 1-based.
        after_batch: usize,
        batches: usize,
        at: String,
    },
    /// The traffic guard's probe counts: of a batch (0-based `batch`), or of the run.
    Guard {
        v: u32,
        run_id: String,
        plan: String,
        batch: Option<usize>,
        #[serde(flatten)]
        counts: crate::guard::Counts,
        halt: Option<String>,
        at: String,
    },
    RunFinished {
        v: u32,
        run_id: String,
        plan: String,
        outcome: RunOutcome,
        at: String,
    },
}

/// What a run did: rolled the plan's rollout, or went back with its `rollback`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    #[default]
    Apply,
    Rollback,
}

impl RunKind {
    pub fn is_apply(&self) -> bool {
        *self == RunKind::Apply
    }
}

/// Where a run's records go instead of the file: another backend (`state::postgres`).
pub trait Store: Send {
    /// Appends one record durably before returning, or says why it could not.
    fn append(&mut self, record: &Record) -> Result<(), WriteError>;
}

/// Appends the records of one run.
pub struct Writer {
    file: Option<File>,
    /// When set, records go here and not to the file.
    store: Option<Box<dyn Store>>,
    path: PathBuf,
    run_id: String,
    plan: String,
}

/// A journal record that could not be written: the run cannot be resumed past it.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the journal `{path}`: {source}")]
pub struct WriteError {
    pub path: String,
    pub source: std::io::Error,
}

impl Writer {
    /// Opens (creating) the journal. When it cannot be opened the writer records nothing
    /// and the error says why, for the caller to warn about once: refusing to roll back
    /// a half-done rollout for want of a log would be worse.
    pub fn open(state_dir: &Path, run_id: &str, plan: &str) -> (Self, Option<std::io::Error>) {
        let file = std::fs::create_dir_all(state_dir)
            .and_then(|_| OpenOptions::new().create(true).read(true).append(true).open(path(state_dir)))
            .and_then(|mut f| {
                // A crash mid-write leaves a torn last line: the next record starts on a
                // line of its own, so only the torn one is lost.
                if ends_torn(&mut f)? {
                    f.write_all(b"\n")?;
                }
                Ok(f)
            });
        let (file, error) = match file {
            Ok(f) => (Some(f), None),
            Err(e) => (None, Some(e)),
        };
        (Writer { file, store: None, path: path(state_dir), run_id: run_id.into(), plan: plan.into() }, error)
    }

    /// A writer whose records go to `store`.
    pub fn to_store(store: Box<dyn Store>, run_id: &str, plan: &str) -> Self {
        Writer { file: None, store: Some(store), path: PathBuf::new(), run_id: run_id.into(), plan: plan.into() }
    }

    /// Appends one record, durably: one `write` of the whole line (so concurrent
    /// appends never interleave within a line), then `fdatasync`, so a record that is
    /// written survives a crash of the machine. After a failure nothing more is written:
    /// records after a gap would be read as if the gap had not been there.
    pub fn write(&mut self, record: &Record) -> Result<(), WriteError> {
        if let Some(store) = &mut self.store {
            let written = store.append(record);
            if written.is_err() {
                self.store = None;
            }
            return written;
        }
        let Some(file) = &mut self.file else { return Ok(()) };
        let Ok(mut line) = serde_json::to_string(record) else { return Ok(()) };
        line.push('\n');
        let written = file.write_all(line.as_bytes()).and_then(|()| file.sync_data());
        written.map_err(|source| {
            self.file = None;
            WriteError { path: self.path.display().to_string(), source }
        })
    }

    /// The journal's part of the event stream.
    pub fn event(&mut self, event: &Event, at: SystemTime) -> Result<(), WriteError> {
        match event {
            Event::StepFinished { host, step, phase, index, outcome, duration, exit_code, .. } => {
                if *outcome == Outcome::Skipped {
                    return Ok(());
                }
                let start = at.checked_sub(*duration).unwrap_or(at);
                let record = Record::Step {
                    v: JOURNAL_VERSION,
                    run_id: self.run_id.clone(),
                    plan: self.plan.clone(),
                    phase: *phase,
                    index: *index,
                    step: step.clone(),
                    host: host.clone(),
                    start: stamp(start),
                    end: stamp(at),
                    outcome: *outcome,
                    exit_code: *exit_code,
                };
                self.write(&record)
            }
            Event::Paused { after_batch, batches } => {
                let record = Record::Paused {
                    v: JOURNAL_VERSION,
                    run_id: self.run_id.clone(),
                    plan: self.plan.clone(),
                    after_batch: *after_batch,
                    batches: *batches,
                    at: stamp(at),
                };
                self.write(&record)
            }
            Event::Guard { batch, counts, halt } => {
                let record = Record::Guard {
                    v: JOURNAL_VERSION,
                    run_id: self.run_id.clone(),
                    plan: self.plan.clone(),
                    batch: *batch,
                    counts: counts.clone(),
                    halt: halt.clone(),
                    at: stamp(at),
                };
                self.write(&record)
            }
            Event::RunFinished { outcome, .. } => {
                let record = Record::RunFinished {
                    v: JOURNAL_VERSION,
                    run_id: self.run_id.clone(),
                    plan: self.plan.clone(),
                    outcome: *outcome,
                    at: stamp(at),
                };
                self.write(&record)
            }
            _ => Ok(()),
        }
    }
}

pub fn stamp(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// Whether the file's last byte is not a line end.
fn ends_torn(file: &mut File) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    if file.metadata()?.len() == 0 {
        return Ok(false);
    }
    file.seek(SeekFrom::End(-1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] != b'\n')
}

/// The records of one plan, and what could not be read.
pub struct Journal {
    pub records: Vec<Record>,
    /// Lines that are not records: a line torn by a crash mid-write, or damage.
    pub unreadable: usize,
}

/// Reads every record of `plan`; lines that are not records (a line torn by a crash)
/// are counted and skipped.
pub fn read(state_dir: &Path, plan: &str) -> Journal {
    // Not blocking, and a regular file only: a FIFO there must not hang `--resume`. A
    // journal that is not one reads as none; writing to it then fails, refusing the run.
    let Ok(file) = crate::bounded::open(&path(state_dir), u64::MAX) else {
        return Journal { records: vec![], unreadable: 0 };
    };
    let mut unreadable = 0;
    let records = BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter(|line| !line.is_empty())
        .filter_map(|line| {
            let record = serde_json::from_str::<Record>(&line).ok();
            unreadable += usize::from(record.is_none());
            record
        })
        .filter(|r| match r {
            Record::RunStarted { plan: p, .. }
            | Record::Preflight { plan: p, .. }
            | Record::Step { plan: p, .. }
            | Record::Paused { plan: p, .. }
            | Record::Guard { plan: p, .. }
            | Record::RunFinished { plan: p, .. } => p == plan,
        })
        .collect();
    Journal { records, unreadable }
}

/// What a resume continues: the runs since the last fresh (non-resume) run of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Campaign {
    /// The campaign's first run: every resume renders `{{run.*}}` as it did.
    pub first_run: String,
    /// The latest run.
    pub last_run: String,
    pub last_started: String,
    pub plan_hash: String,
    /// The inputs of the campaign's first run, which every resume continues.
    pub inputs: Inputs,
    /// `None` when the run never finished: killed, or the machine went down.
    pub last_outcome: Option<RunOutcome>,
    /// Where the latest run paused: after batch `.0` of `.1` (1-based).
    pub paused_after: Option<(usize, usize)>,
    /// Step instances that completed (ok or failed with `continue_on_error`), as
    /// (phase, step index, host).
    pub done: HashSet<(Phase, usize, Option<String>)>,
    pub runs: usize,
    /// The `planrun rollback` that went back from this campaign, if one did.
    pub rolled_back_by: Option<String>,
}

impl Campaign {
    pub fn is_done(&self, instance: &StepInstance, host: Option<&str>) -> bool {
        self.done.contains(&(instance.phase, instance.index, host.map(String::from)))
    }

    /// Whether there is anything to resume.
    pub fn resumable(&self) -> bool {
        self.last_outcome != Some(RunOutcome::Succeeded) && self.rolled_back_by.is_none()
    }
}

pub fn campaign(records: &[Record]) -> Option<Campaign> {
    let mut current: Option<Campaign> = None;
    for record in records {
        match record {
            Record::RunStarted { run_id, kind: RunKind::Rollback, .. } => {
                // A rollback ends the campaign it went back from: nothing of it to resume.
                if let Some(c) = &mut current {
                    c.rolled_back_by = Some(run_id.clone());
                }
            }
            Record::RunStarted { run_id, plan_hash, resume_of, at, inputs, .. } => {
                let continues = resume_of.is_some() && current.is_some();
                let mut c = if continues {
                    current.take().unwrap_or_else(|| empty(run_id, plan_hash, at, inputs))
                } else {
                    empty(run_id, plan_hash, at, inputs)
                };
                c.last_run = run_id.clone();
                c.last_started = at.clone();
                c.last_outcome = None;
                c.paused_after = None;
                c.runs += usize::from(continues);
                current = Some(c);
            }
            Record::Step { run_id, phase, index, host, outcome, .. } => {
                if let Some(c) = &mut current
                    && &c.last_run == run_id
                {
                    if *phase == Phase::OnFailure {
                        // on_failure undid the host's rollout steps (or tried to): a resume
                        // runs its whole chain again, from taking it out.
                        c.done.retain(|(p, _, h)| !(*p == Phase::Rollout && h == host));
                    } else if matches!(outcome, Outcome::Ok | Outcome::FailedIgnored) {
                        c.done.insert((*phase, *index, host.clone()));
                    }
                }
            }
            Record::Preflight { .. } | Record::Guard { .. } => {}
            Record::Paused { run_id, after_batch, batches, .. } => {
                if let Some(c) = &mut current
                    && &c.last_run == run_id
                {
                    c.paused_after = Some((*after_batch, *batches));
                }
            }
            Record::RunFinished { run_id, outcome, .. } => {
                if let Some(c) = &mut current
                    && &c.last_run == run_id
                {
                    c.last_outcome = Some(*outcome);
                }
            }
        }
    }
    current
}

fn empty(run_id: &str, plan_hash: &str, at: &str, inputs: &Inputs) -> Campaign {
    Campaign {
        first_run: run_id.into(),
        last_run: run_id.into(),
        last_started: at.into(),
        plan_hash: plan_hash.into(),
        inputs: inputs.clone(),
        last_outcome: None,
        paused_after: None,
        done: HashSet::new(),
        runs: 1,
        rolled_back_by: None,
    }
}

/// How long ago an RFC 3339 stamp was, for `planrun status`.
pub fn age(stamp: &str) -> Option<Duration> {
    let at = humantime::parse_rfc3339(stamp).ok()?;
    SystemTime::now().duration_since(at).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(run: &str, resume_of: Option<&str>) -> Record {
        Record::RunStarted {
            v: 1,
            run_id: run.into(),
            plan: "p.yaml".into(),
            plan_hash: "sha256:x".into(),
            resume_of: resume_of.map(String::from),
            user: "u".into(),
            machine: "m".into(),
            pid: 1,
            at: "2026-11-27T00:00:00.000Z".into(),
            inputs: Inputs::default(),
            kind: RunKind::Apply,
        }
    }

    fn step(run: &str, index: usize, host: &str, outcome: Outcome) -> Record {
        Record::Step {
            v: 1,
            run_id: run.into(),
            plan: "p.yaml".into(),
            phase: Phase::Rollout,
            index,
            step: format!("s{index}"),
            host: Some(host.into()),
            start: String::new(),
            end: String::new(),
            outcome,
            exit_code: None,
        }
    }

    #[test]
    fn on_failure_undoes_the_host_s_rollout_steps_for_a_resume_and_a_rollback_ends_the_campaign() {
        let mut on_failure = step("r1", 0, "h2", Outcome::Ok);
        if let Record::Step { phase, .. } = &mut on_failure {
            *phase = Phase::OnFailure;
        }
        let mut records = vec![
            started("r1", None),
            step("r1", 0, "h1", Outcome::Ok),
            step("r1", 0, "h2", Outcome::Ok),
            step("r1", 1, "h2", Outcome::Failed),
            on_failure,
        ];
        let c = campaign(&records).unwrap();
        assert_eq!(c.done, HashSet::from([(Phase::Rollout, 0, Some("h1".to_string()))]));
        assert!(c.resumable());
        let mut rollback = started("b1", None);
        if let Record::RunStarted { kind, .. } = &mut rollback {
            *kind = RunKind::Rollback;
        }
        records.push(rollback);
        let c = campaign(&records).unwrap();
        assert_eq!((c.last_run.as_str(), c.rolled_back_by.as_deref()), ("r1", Some("b1")));
        assert!(!c.resumable());
    }

    #[test]
    fn a_resume_chain_accumulates_and_a_fresh_run_starts_over() {
        let records = vec![
            started("r1", None),
            step("r1", 0, "h1", Outcome::Ok),
            step("r1", 0, "h2", Outcome::Failed),
            Record::RunFinished {
                v: 1,
                run_id: "r1".into(),
                plan: "p.yaml".into(),
                outcome: RunOutcome::Halted,
                at: String::new(),
            },
            started("r2", Some("r1")),
            step("r2", 0, "h2", Outcome::Ok),
        ];
        let c = campaign(&records).unwrap();
        assert_eq!(c.last_run, "r2");
        assert_eq!(c.last_outcome, None, "r2 never finished");
        assert!(c.resumable());
        assert_eq!(c.done.len(), 2);

        let mut fresh = records.clone();
        fresh.push(started("r3", None));
        assert!(campaign(&fresh).unwrap().done.is_empty());
    }
}
