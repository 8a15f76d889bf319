//! `command` balancers: a local command per action; `status` exits 0 when the node is up.

use std::time::Duration;

use super::{NodeState, Rotation};
use crate::events::StepOutput;
use crate::transport::{LocalTransport, Transport};

/// How long a status command may take before the read counts as failed.
const STATUS_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Command {
    local: Transport,
}

impl Command {
    pub fn new() -> Self {
        Command { local: Transport::Local(LocalTransport::new()) }
    }

    pub async fn run(&self, command: &str, timeout: Duration, output: &mut StepOutput) -> Result<(), String> {
        let exit = self.local.exec_lines(command, Some(timeout), output).await;
        match exit {
            Ok(exit) if exit.success() => Ok(()),
            Ok(exit) => Err(exit.failure(command)),
            Err(e) => Err(e.to_string()),
        }
    }

    pub async fn state(&self, command: &str) -> Result<NodeState, String> {
        // The status command's output is noise; its exit status is the answer.
        let exit = self.local.exec_lines(command, Some(STATUS_TIMEOUT), &mut ()).await.map_err(|e| e.to_string())?;
        Ok(if exit.success() {
            NodeState { rotation: Rotation::In, up: Some(true), connections: None, detail: "status exits 0".into() }
        } else {
            // A failing status says "not up", not why: out of rotation or down look alike.
            NodeState { rotation: Rotation::Out, up: Some(false), connections: None, detail: format!("status: {exit}") }
        })
    }
}
