//! Secrets never leave planrun: their values are replaced by `***` in every event, so
//! the terminal, JSON output, log files and journal, which all consume events, are
//! clean even when a command prints a secret.

use crate::model::Plan;

pub const MASK: &str = "***";

/// Values shorter than this are not masked: a one- or two-character "secret" would turn
/// every line into asterisks and protects nothing.
const MIN_SECRET_LEN: usize = 3;

#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    /// The values of the environment variables the plan names as secrets: `secret_env`
    /// and every balancer's `token_env`.
    pub fn from_plan(plan: &Plan) -> Self {
        Redactor::new(plan.secret_env_names().iter().filter_map(|n| std::env::var(n).ok()))
    }

    pub fn new(values: impl IntoIterator<Item = String>) -> Self {
        let mut secrets: Vec<String> = values.into_iter().filter(|v| v.len() >= MIN_SECRET_LEN).collect();
        // Longest first, so a secret containing another is masked whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Redactor { secrets }
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), MASK);
            }
        }
        out
    }

    pub fn redact_in_place(&self, text: &mut String) {
        if self.secrets.iter().any(|s| text.contains(s.as_str())) {
            *text = self.redact(text);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_every_occurrence_longest_first() {
        let r = Redactor::new(["hunter2".to_string(), "hunter2-extended".to_string(), "ab".to_string()]);
        assert_eq!(r.redact("token=hunter2-extended, again hunter2, ab"), "token=***, again ***, ab");
    }
}
