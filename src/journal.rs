//! The journal: every apply appends what it did to `.planrun/journal.jsonl` beside the
//! plan, one JSON object per line, flushed line by line so a killed process still leaves
//! a record of every step it finished. `--resume` and `planrun status` read it back.
//!
//! Records (all with `"v": 1` and the plan's file name):
//! - `run_started`: run id, plan hash, the run it resumes, who and where.
//! - `preflight`: the balancers' view of the rollout's nodes before anything changed.
//! - `step`: run id, phase, step name and index, host, start, end, outcome, exit code.
//! - `run_finished`: run id, outcome.
//!
//! Events are redacted before they reach the journal, so it never holds a secret.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::events::{Event, Outcome, RunOutcome};
use crate::graph::{Phase, StepInstance};

pub const JOURNAL_VERSION: u32 = 1;

/// `sha256:…` of the plan's text and of every base it extends: a resume refuses when
/// any of them changed since.
pub fn plan_hash(loaded: &crate::validate::LoadedPlan) -> String {
    let mut hasher = Sha256::new();
    for file in &loaded.files {
        // Length-prefixed, so moving text from one file to the next changes the hash.
        hasher.update((file.text.len() as u64).to_le_bytes());
        hasher.update(file.text.as_bytes());
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
    RunFinished {
        v: u32,
        run_id: String,
        plan: String,
        outcome: RunOutcome,
        at: String,
    },
}

/// Appends the records of one run.
pub struct Writer {
    file: Option<File>,
    run_id: String,
    plan: String,
}

impl Writer {
    /// Opens (creating) the journal. When it cannot be opened the writer records nothing
    /// and the error says why, for the caller to warn about once: refusing to roll back
    /// a half-done rollout for want of a log would be worse.
    pub fn open(state_dir: &Path, run_id: &str, plan: &str) -> (Self, Option<std::io::Error>) {
        let file = std::fs::create_dir_all(state_dir)
            .and_then(|_| OpenOptions::new().create(true).append(true).open(path(state_dir)));
        let (file, error) = match file {
            Ok(f) => (Some(f), None),
            Err(e) => (None, Some(e)),
        };
        (Writer { file, run_id: run_id.into(), plan: plan.into() }, error)
    }

    pub fn write(&mut self, record: &Record) {
        let Some(file) = &mut self.file else { return };
        if let Ok(mut line) = serde_json::to_string(record) {
            line.push('\n');
            // One write per line, so concurrent appends never interleave within a line.
            let _ = file.write_all(line.as_bytes());
            let _ = file.flush();
        }
    }

    /// The journal's part of the event stream.
    pub fn event(&mut self, event: &Event, at: SystemTime) {
        match event {
            Event::StepFinished { host, step, phase, index, outcome, duration, exit_code, .. } => {
                if *outcome == Outcome::Skipped {
                    return;
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
                self.write(&record);
            }
            Event::RunFinished { outcome, .. } => {
                let record = Record::RunFinished {
                    v: JOURNAL_VERSION,
                    run_id: self.run_id.clone(),
                    plan: self.plan.clone(),
                    outcome: *outcome,
                    at: stamp(at),
                };
                self.write(&record);
            }
            _ => {}
        }
    }
}

pub fn stamp(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// Reads every record of `plan`; unreadable lines (a line cut by a crash) are skipped.
pub fn read(state_dir: &Path, plan: &str) -> Vec<Record> {
    let Ok(file) = File::open(path(state_dir)) else { return vec![] };
    BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| serde_json::from_str::<Record>(&line).ok())
        .filter(|r| match r {
            Record::RunStarted { plan: p, .. }
            | Record::Preflight { plan: p, .. }
            | Record::Step { plan: p, .. }
            | Record::RunFinished { plan: p, .. } => p == plan,
        })
        .collect()
}

/// What a resume continues: the runs since the last fresh (non-resume) run of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Campaign {
    /// The latest run.
    pub last_run: String,
    pub last_started: String,
    pub plan_hash: String,
    /// `None` when the run never finished: killed, or the machine went down.
    pub last_outcome: Option<RunOutcome>,
    /// Step instances that completed (ok or failed with `continue_on_error`), as
    /// (phase, step index, host).
    pub done: HashSet<(Phase, usize, Option<String>)>,
    pub runs: usize,
}

impl Campaign {
    pub fn is_done(&self, instance: &StepInstance, host: Option<&str>) -> bool {
        self.done.contains(&(instance.phase, instance.index, host.map(String::from)))
    }

    /// Whether there is anything to resume.
    pub fn resumable(&self) -> bool {
        self.last_outcome != Some(RunOutcome::Succeeded)
    }
}

pub fn campaign(records: &[Record]) -> Option<Campaign> {
    let mut current: Option<Campaign> = None;
    for record in records {
        match record {
            Record::RunStarted { run_id, plan_hash, resume_of, at, .. } => {
                let continues = resume_of.is_some() && current.is_some();
                let mut c = if continues {
                    current.take().unwrap_or_else(|| empty(run_id, plan_hash, at))
                } else {
                    empty(run_id, plan_hash, at)
                };
                c.last_run = run_id.clone();
                c.last_started = at.clone();
                c.last_outcome = None;
                c.runs += usize::from(continues);
                current = Some(c);
            }
            Record::Step { run_id, phase, index, host, outcome, .. } => {
                if let Some(c) = &mut current
                    && &c.last_run == run_id
                    && matches!(outcome, Outcome::Ok | Outcome::FailedIgnored)
                {
                    c.done.insert((*phase, *index, host.clone()));
                }
            }
            Record::Preflight { .. } => {}
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

fn empty(run_id: &str, plan_hash: &str, at: &str) -> Campaign {
    Campaign {
        last_run: run_id.into(),
        last_started: at.into(),
        plan_hash: plan_hash.into(),
        last_outcome: None,
        done: HashSet::new(),
        runs: 1,
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
