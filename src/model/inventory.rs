//! Servers listed elsewhere (`servers_from`): a file, or the output of a command, holding
//! a list of servers in the plan's own server shape.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::duration::HumanDuration;

/// Where more servers come from: a file, or a command's standard output.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum ServerSource {
    File(FileSource),
    Command(CommandSource),
}

/// A file of servers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSource {
    /// # Inventory file
    ///
    /// A YAML or JSON file holding a list of servers, written like the plan's `servers`;
    /// relative to the folder of the plan it is written in.
    #[schemars(length(min = 1), example = &"inventory.yaml")]
    pub file: String,
}

/// A command whose standard output is a list of servers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandSource {
    /// # Inventory command
    ///
    /// A command run with `sh -c` on the machine running planrun, in the folder of the
    /// plan it is written in, whenever the plan is loaded (`validate`, `plan`, `apply`,
    /// `exec`, `status`). Its standard output is a YAML or JSON list of servers, written
    /// like the plan's `servers`; a non-zero exit, a timeout or output that is not such a
    /// list stops planrun before anything runs.
    #[schemars(length(min = 1), example = &"planrun inventory linode --tag shop-production")]
    pub command: String,

    /// # Inventory command timeout
    ///
    /// How long the command may run before it is killed. Defaults to `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &"30s")]
    pub timeout: Option<HumanDuration>,
}
