//! What `planrun rollback` goes back from, read from the journal: the last apply (with
//! the resumes that continued it), the hosts it changed, and what rollbacks since have
//! already done. Pure, over the journal's records.

use std::collections::{BTreeMap, HashSet};

use crate::events::Outcome;
use crate::graph::Phase;
use crate::journal::{Record, RunKind};

/// The run a rollback goes back from.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The apply's first run: `{{run.*}}` of the rollback are its values.
    pub run: String,
    /// The hosts with at least one rollout step completed, in the order they were.
    pub hosts: Vec<String>,
    /// The `--var`s the apply ran with: the rollback renders its steps with them.
    pub vars: BTreeMap<String, String>,
    /// Rollback steps that earlier rollbacks of this run completed, as (phase, step
    /// index, host): a rollback that stopped halfway is continued, not started over.
    pub done: HashSet<(Phase, usize, Option<String>)>,
    /// The rollbacks of this run so far.
    pub rollbacks: Vec<String>,
}

/// The last apply of the plan whose records these are, or `None` when there is none.
pub fn target(records: &[Record]) -> Option<Target> {
    let mut target: Option<Target> = None;
    let mut applies: HashSet<String> = HashSet::new();
    for record in records {
        match record {
            Record::RunStarted { run_id, kind: RunKind::Rollback, .. } => {
                if let Some(t) = &mut target {
                    t.rollbacks.push(run_id.clone());
                }
            }
            Record::RunStarted { run_id, resume_of, inputs, .. } => {
                let continues = resume_of.is_some() && target.as_ref().is_some_and(|t| t.rollbacks.is_empty());
                if !continues {
                    applies.clear();
                    target = Some(Target {
                        run: run_id.clone(),
                        hosts: Vec::new(),
                        vars: inputs.vars.clone(),
                        done: HashSet::new(),
                        rollbacks: Vec::new(),
                    });
                }
                applies.insert(run_id.clone());
            }
            Record::Step {
                run_id,
                phase,
                index,
                host: Some(host),
                outcome: Outcome::Ok | Outcome::FailedIgnored,
                ..
            } => {
                let Some(t) = &mut target else { continue };
                if *phase == Phase::Rollout && applies.contains(run_id) {
                    if !t.hosts.contains(host) {
                        t.hosts.push(host.clone());
                    }
                } else if *phase == Phase::Rollback && t.rollbacks.contains(run_id) {
                    t.done.insert((*phase, *index, Some(host.clone())));
                }
            }
            _ => {}
        }
    }
    target
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Inputs;

    fn started(run: &str, resume_of: Option<&str>, kind: RunKind) -> Record {
        Record::RunStarted {
            v: 1,
            run_id: run.into(),
            plan: "p.yaml".into(),
            plan_hash: "sha256:x".into(),
            resume_of: resume_of.map(String::from),
            user: "u".into(),
            machine: "m".into(),
            pid: 1,
            at: String::new(),
            inputs: Inputs::default(),
            kind,
        }
    }

    fn step(run: &str, phase: Phase, index: usize, host: &str, outcome: Outcome) -> Record {
        Record::Step {
            v: 1,
            run_id: run.into(),
            plan: "p.yaml".into(),
            phase,
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
    fn the_hosts_of_the_last_apply_and_its_resumes_are_the_target() {
        let records = vec![
            started("r0", None, RunKind::Apply),
            step("r0", Phase::Rollout, 0, "h9", Outcome::Ok),
            started("r1", None, RunKind::Apply),
            step("r1", Phase::Before, 0, "h3", Outcome::Ok),
            step("r1", Phase::Rollout, 0, "h1", Outcome::Ok),
            step("r1", Phase::Rollout, 0, "h2", Outcome::Failed),
            started("r2", Some("r1"), RunKind::Apply),
            step("r2", Phase::Rollout, 0, "h2", Outcome::Ok),
            started("b1", None, RunKind::Rollback),
            step("b1", Phase::Rollback, 0, "h1", Outcome::Ok),
            step("b1", Phase::Rollback, 1, "h1", Outcome::Failed),
        ];
        let t = target(&records).unwrap();
        assert_eq!(t.run, "r1");
        assert_eq!(t.hosts, ["h1", "h2"], "`before` changes no host's release; r0 is an older run");
        assert_eq!(t.rollbacks, ["b1"]);
        assert_eq!(t.done, HashSet::from([(Phase::Rollback, 0, Some("h1".to_string()))]));
        assert_eq!(target(&records[..1]).unwrap().hosts, Vec::<String>::new());
        assert!(target(&[]).is_none());
    }
}
