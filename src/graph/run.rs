//! `{{run.id}}` and `{{run.started}}`: the values that name one run, and so one release,
//! in templates.

/// What `{{run.*}}` resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunValues {
    /// The run's id, as the journal records it (`2026-12-02T03-15-00Z-4242`).
    pub id: String,
    /// When it started, UTC, for a directory name: `20261202T031500Z`.
    pub started: String,
}

impl RunValues {
    /// What `planrun plan` and `validate` show: the values' shapes, since no run exists
    /// yet. A real time there would change from one preview to the next and look like
    /// the release an apply will write, which it is not.
    pub fn placeholder() -> Self {
        RunValues { id: "YYYY-MM-DDTHH-MM-SSZ-PID".into(), started: "YYYYMMDDTHHMMSSZ".into() }
    }

    /// The values of the run `id`. `started` is read from the id itself, so a resume (or
    /// a rollback) that has only the id from the journal renders the very same release.
    pub fn of(id: &str) -> Self {
        RunValues { id: id.to_string(), started: started_of(id) }
    }
}

impl Default for RunValues {
    fn default() -> Self {
        Self::placeholder()
    }
}

/// `2026-12-02T03-15-00Z-4242` → `20261202T031500Z`. An id of another shape keeps its
/// letters and digits: still the same for every host, and a file name.
fn started_of(id: &str) -> String {
    let stamp = id.split_once('Z').map_or(id, |(time, _)| time);
    let compact: String = stamp.chars().filter(char::is_ascii_alphanumeric).collect();
    if id.contains('Z') && compact.len() == 15 && compact.as_bytes()[8] == b'T' {
        format!("{compact}Z")
    } else {
        id.chars().filter(char::is_ascii_alphanumeric).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn started_comes_from_the_run_id() {
        assert_eq!(RunValues::of("2026-12-02T03-15-00Z-4242").started, "20261202T031500Z");
        assert_eq!(RunValues::of("weird/id").started, "weirdid");
    }
}
