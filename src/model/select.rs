//! Which servers a rollout visits.

use serde_json::Value;

use crate::model::{Plan, Server, When};

/// The selected servers, as indices into `plan.servers`, in the plan's order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelectedHosts {
    pub hosts: Vec<usize>,
}

/// Servers with any of the rollout's roles, minus those whose options match `exclude`.
pub fn select(plan: &Plan) -> SelectedHosts {
    let select = &plan.rollout.select;
    let hosts = plan
        .servers
        .iter()
        .enumerate()
        .filter(|(_, s)| s.roles.iter().any(|r| select.roles.contains(r)))
        .filter(|(_, s)| !select.exclude.as_ref().is_some_and(|ex| options_match(s, ex.iter())))
        .map(|(i, _)| i)
        .collect();
    SelectedHosts { hosts }
}

/// Whether every given option has the given value on `server`. An option the server
/// does not set matches `false` and null, so `exclude: { no_release: false }` reads as
/// an operator means it.
pub fn options_match<'a>(server: &Server, wanted: impl IntoIterator<Item = (&'a String, &'a Value)>) -> bool {
    wanted.into_iter().all(|(key, want)| match server.options.get(key) {
        Some(have) => have == want,
        None => matches!(want, Value::Null | Value::Bool(false)),
    })
}

/// `name`, or `host` when the server has none.
pub fn server_name(server: &Server) -> &str {
    server.name.as_deref().unwrap_or(&server.host)
}

/// Whether a step's `when` lets it run on `server`.
pub fn applies(when: Option<&When>, server: &Server) -> bool {
    let Some(when) = when else { return true };
    when.roles.as_ref().is_none_or(|roles| server.roles.iter().any(|r| roles.contains(r)))
        && when.options.as_ref().is_none_or(|options| options_match(server, options.iter()))
}
