//! The traffic guard: from the pre-flight to the end of a run, it probes the service as
//! users reach it (`guard.http`) and, for HAProxy, compares the error rate of the nodes
//! rolled so far with the rest of the pool (`guard.balancer`). It runs as background
//! tasks and only keeps counts and a verdict; the executor asks it before each batch
//! (`halts`) and reports its numbers as `guard` events.
//!
//! Invariants:
//! - A tripped guard stays tripped: the first reason is the one the run halts with.
//! - Nothing is printed here: the executor emits the events, `cli/apply` shows a refusal.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::balancer::Balancers;
use crate::balancer::Responses;
use crate::model::Guard as Settings;

/// How often the guard probes and reads the balancer unless the plan says.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(200);
/// How long a probe may take unless the plan says.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// The rolled nodes' error rate allowed above the rest's unless the plan says: 1%.
const DEFAULT_MAX_ERROR_RATE: f64 = 0.01;
/// How many failed probes the guard describes.
const EXAMPLES: usize = 3;

/// A running guard; clones share it. Stops when [`Guard::stop`] is called.
#[derive(Clone)]
pub struct Guard {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    state: Mutex<State>,
    stop: CancellationToken,
}

#[derive(Default)]
struct State {
    probes: u64,
    failed: u64,
    /// The first failures, described: `HTTP 500`, `timed out after 2s`.
    examples: Vec<String>,
    /// Set once the first batch started: a failure before it refuses the run.
    rolling: bool,
    tripped: Option<Trip>,
    /// The probe counts when the current batch started.
    batch_mark: (u64, u64),
    analysis: Option<Analysis>,
    /// Why the last read of the balancer's counters failed, until one succeeds.
    read_error: Option<String>,
}

/// Why the guard halts the run; the first one found stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trip {
    /// A probe failed before the first batch.
    AlreadyFailing,
    /// More probes failed than the limit.
    Probes,
    /// The rolled nodes' error rate is over the rest's plus `max_error_rate`.
    ErrorRate,
    /// The balancer's counters could not be read at the last try: not knowing is no
    /// verdict to go on with.
    Unreadable,
}

/// The balancer analysis: each node's counters when the guard started, or when it came
/// back from its window, and the latest.
#[derive(Default)]
struct Analysis {
    baseline: HashMap<String, Responses>,
    latest: HashMap<String, Responses>,
    rolled: HashSet<String>,
}

// The counts travel in events, so they live with them (events is below the guard).
pub use crate::events::{BalancerCounts, Counts};

impl Guard {
    /// Starts the guard: one probe and one balancer read at once, then the background
    /// tasks. `Err`: the service is already failing (or its balancer cannot be read),
    /// and the run must not start.
    pub async fn start(settings: &Settings, balancers: &Balancers) -> Result<Guard, String> {
        let guard = Guard {
            inner: Arc::new(Inner {
                settings: settings.clone(),
                state: Mutex::new(State::default()),
                stop: CancellationToken::new(),
            }),
        };
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(guard.timeout())
            .build()
            .map_err(|e| format!("the guard cannot make an HTTP client: {e}"))?;
        if let Some(url) = &settings.http {
            if let Err(why) = probe(&client, url).await {
                guard.count(Err(why.clone()));
                return Err(format!(
                    "the service is already failing: the guard's probe of {url} failed ({why}); nothing was changed"
                ));
            }
            guard.count(Ok(()));
        }
        if let Some(name) = &settings.balancer {
            match balancers.responses(name).await {
                Some(Ok(servers)) => guard.sample(servers),
                Some(Err(why)) => {
                    return Err(format!("the guard cannot read the balancer `{name}`: {why}; nothing was changed"));
                }
                None => {
                    return Err(format!("the balancer `{name}` reports no per-node responses; nothing was changed"));
                }
            }
        }
        if let Some(url) = settings.http.clone() {
            tokio::spawn(guard.clone().probing(client, url));
        }
        if let Some(name) = settings.balancer.clone() {
            tokio::spawn(guard.clone().reading(balancers.clone(), name));
        }
        Ok(guard)
    }

    fn interval(&self) -> Duration {
        self.inner.settings.interval.map_or(DEFAULT_INTERVAL, |d| d.get())
    }

    fn timeout(&self) -> Duration {
        self.inner.settings.timeout.map_or(DEFAULT_TIMEOUT, |d| d.get())
    }

    /// Ends the background tasks: the run is over.
    pub fn stop(&self) {
        self.inner.stop.cancel();
    }

    async fn probing(self, client: reqwest::Client, url: String) {
        let mut tick = tokio::time::interval(self.interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.inner.stop.cancelled() => return,
            }
            let result = tokio::select! {
                result = probe(&client, &url) => result,
                () = self.inner.stop.cancelled() => return,
            };
            self.count(result);
        }
    }

    async fn reading(self, balancers: Balancers, name: String) {
        let mut tick = tokio::time::interval(self.interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.inner.stop.cancelled() => return,
            }
            match balancers.responses(&name).await {
                Some(Ok(servers)) => self.sample(servers),
                Some(Err(why)) => self.lock().read_error = Some(why),
                None => {}
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn count(&self, result: Result<(), String>) {
        let mut state = self.lock();
        state.probes += 1;
        if let Err(why) = result {
            state.failed += 1;
            if state.examples.len() < EXAMPLES && !state.examples.contains(&why) {
                state.examples.push(why);
            }
        }
        if state.rolling && state.tripped.is_none() && self.over_limit(&state) {
            state.tripped = Some(Trip::Probes);
        }
    }

    fn sample(&self, servers: Vec<(String, Responses)>) {
        let mut state = self.lock();
        state.read_error = None;
        let analysis = state.analysis.get_or_insert_with(Analysis::default);
        for (name, responses) in servers {
            analysis.baseline.entry(name.clone()).or_insert(responses);
            analysis.latest.insert(name, responses);
        }
        if state.tripped.is_none() && self.error_rate_too_high(&state) {
            state.tripped = Some(Trip::ErrorRate);
        }
    }

    /// A node of the analysed balancer is back in rotation after its window: its
    /// responses count as the rolled nodes' from its latest counters on.
    pub fn came_back(&self, balancer: &str, node: &str) {
        if self.inner.settings.balancer.as_deref() != Some(balancer) {
            return;
        }
        let mut state = self.lock();
        let Some(analysis) = state.analysis.as_mut() else { return };
        let latest = analysis.latest.get(node).copied().unwrap_or_default();
        analysis.baseline.insert(node.to_string(), latest);
        analysis.rolled.insert(node.to_string());
    }

    /// Before a batch: why the run must not start it, with the numbers as they are
    /// now. Before the first batch any failed probe refuses the run: the service was
    /// failing before anything changed.
    pub fn halts(&self, first_batch: bool) -> Option<String> {
        let mut state = self.lock();
        if first_batch && !state.rolling {
            state.rolling = true;
            if state.failed > 0 && state.tripped.is_none() {
                state.tripped = Some(Trip::AlreadyFailing);
            }
        }
        if state.tripped.is_none() {
            if self.over_limit(&state) {
                state.tripped = Some(Trip::Probes);
            } else if self.error_rate_too_high(&state) {
                state.tripped = Some(Trip::ErrorRate);
            } else if state.read_error.is_some() {
                state.tripped = Some(Trip::Unreadable);
            }
        }
        let trip = state.tripped?;
        Some(self.reason(trip, &state))
    }

    fn reason(&self, trip: Trip, state: &State) -> String {
        let failures = state.examples.join("; ");
        match trip {
            Trip::AlreadyFailing => format!(
                "the service is already failing: {} before the first batch ({failures}); no host was rolled",
                self.probe_numbers(state)
            ),
            Trip::Probes => format!(
                "the guard halted the rollout: {}, more than `{}` ({failures}); no new batch was started",
                self.probe_numbers(state),
                self.limit()
            ),
            Trip::Unreadable => format!(
                "the guard halted the rollout: it cannot read the balancer `{}`: {}; no new batch was started",
                self.inner.settings.balancer.as_deref().unwrap_or_default(),
                state.read_error.as_deref().unwrap_or("the last read failed")
            ),
            Trip::ErrorRate => {
                let counts = self.balancer_counts(state).unwrap_or_default();
                let max = self.max_error_rate();
                format!(
                    "the guard halted the rollout: on `{}`, the rolled nodes ({}) answered {} (more than the rest's {} plus `max_error_rate: {}`); no new batch was started",
                    counts.balancer,
                    counts.rolled.join(", "),
                    errors_of(counts.rolled_errors, counts.rolled_responses),
                    percent(rate(counts.rest_errors, counts.rest_responses)),
                    crate::model::Rate(max * 100.0),
                )
            }
        }
    }

    /// Marks where a batch's probes start counting.
    pub fn batch_started(&self) {
        let mut state = self.lock();
        state.batch_mark = (state.probes, state.failed);
    }

    /// The numbers since the batch started (`batch`), or of the whole run.
    pub fn counts(&self, batch: bool) -> Counts {
        let state = self.lock();
        let (probes, failed) = if batch {
            (state.probes - state.batch_mark.0, state.failed - state.batch_mark.1)
        } else {
            (state.probes, state.failed)
        };
        Counts {
            probes,
            failed,
            total_probes: state.probes,
            total_failed: state.failed,
            balancer: self.balancer_counts(&state),
        }
    }

    /// `"3 of 120 probes of URL failed"`.
    fn probe_numbers(&self, state: &State) -> String {
        let url = self.inner.settings.http.as_deref().unwrap_or("the service");
        format!("{} of {} probes of {url} failed", grouped(state.failed), grouped(state.probes))
    }

    fn limit(&self) -> String {
        let settings = &self.inner.settings;
        match settings.max_failed_rate {
            Some(rate) => format!("max_failed_rate: {rate}"),
            None => format!("max_failed: {}", settings.max_failed.unwrap_or(0)),
        }
    }

    fn over_limit(&self, state: &State) -> bool {
        let settings = &self.inner.settings;
        if settings.http.is_none() {
            return false;
        }
        match settings.max_failed_rate {
            Some(rate) => state.probes > 0 && state.failed as f64 / state.probes as f64 > rate.fraction(),
            None => state.failed > u64::from(settings.max_failed.unwrap_or(0)),
        }
    }

    fn max_error_rate(&self) -> f64 {
        self.inner.settings.max_error_rate.map_or(DEFAULT_MAX_ERROR_RATE, |r| r.fraction())
    }

    fn balancer_counts(&self, state: &State) -> Option<BalancerCounts> {
        let name = self.inner.settings.balancer.as_ref()?;
        let analysis = state.analysis.as_ref()?;
        let mut counts = BalancerCounts { balancer: name.clone(), ..BalancerCounts::default() };
        let mut nodes: Vec<&String> = analysis.latest.keys().collect();
        nodes.sort();
        for node in nodes {
            let latest = analysis.latest[node];
            let since = latest.since(analysis.baseline.get(node).copied().unwrap_or_default());
            if analysis.rolled.contains(node) {
                counts.rolled.push(node.clone());
                counts.rolled_responses += since.total;
                counts.rolled_errors += since.errors;
            } else {
                counts.rest_responses += since.total;
                counts.rest_errors += since.errors;
            }
        }
        Some(counts)
    }

    fn error_rate_too_high(&self, state: &State) -> bool {
        let Some(counts) = self.balancer_counts(state) else { return false };
        let rolled = rate(counts.rolled_errors, counts.rolled_responses);
        let rest = rate(counts.rest_errors, counts.rest_responses);
        counts.rolled_responses > 0 && rolled > rest + self.max_error_rate()
    }
}

/// One probe: a `GET`, answered 2xx within the client's timeout.
async fn probe(client: &reqwest::Client, url: &str) -> Result<(), String> {
    match client.get(url).send().await {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => Err(format!("HTTP {}", response.status())),
        Err(e) if e.is_timeout() => Err("timed out".into()),
        Err(e) if e.is_connect() => Err("cannot connect".into()),
        Err(e) => Err(crate::text::error_chain(&e)),
    }
}

fn rate(errors: u64, total: u64) -> f64 {
    if total == 0 { 0.0 } else { errors as f64 / total as f64 }
}

fn percent(rate: f64) -> String {
    format!("{:.1}%", rate * 100.0)
}

/// `"12 errors in 40 responses (30.0%)"`.
fn errors_of(errors: u64, total: u64) -> String {
    format!(
        "{} {} in {} {} ({})",
        grouped(errors),
        if errors == 1 { "error" } else { "errors" },
        grouped(total),
        if total == 1 { "response" } else { "responses" },
        percent(rate(errors, total))
    )
}

/// The summary's lines about the guard: `guard: 0 failed of 1,834 probes`.
pub fn summary_lines(counts: &Counts) -> Vec<String> {
    let mut lines = Vec::new();
    // A guard that probes has probed once at least, at the pre-flight.
    if counts.total_probes > 0 || counts.balancer.is_none() {
        lines.push(format!(
            "guard: {} failed of {} probes",
            grouped(counts.total_failed),
            grouped(counts.total_probes)
        ));
    }
    if let Some(b) = &counts.balancer {
        let rolled = if b.rolled.is_empty() {
            "no node rolled yet".to_string()
        } else {
            format!("the rolled nodes answered {}", errors_of(b.rolled_errors, b.rolled_responses))
        };
        lines.push(format!(
            "guard: on `{}`, {rolled}; the rest {}",
            b.balancer,
            errors_of(b.rest_errors, b.rest_responses)
        ));
    }
    lines
}

/// `1834` → `1,834`: counts as the summary shows them.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_grouped_by_thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1834), "1,834");
        assert_eq!(grouped(1_234_567), "1,234,567");
    }

    fn analysed(max_error_rate: &str) -> Guard {
        let settings: Settings =
            serde_json::from_value(serde_json::json!({"balancer": "edge", "max_error_rate": max_error_rate})).unwrap();
        Guard {
            inner: Arc::new(Inner { settings, state: Mutex::new(State::default()), stop: CancellationToken::new() }),
        }
    }

    fn servers(counts: &[(&str, u64, u64)]) -> Vec<(String, Responses)> {
        counts.iter().map(|(n, total, errors)| (n.to_string(), Responses { total: *total, errors: *errors })).collect()
    }

    #[test]
    fn the_analysis_compares_rolled_nodes_since_they_came_back_with_the_rest() {
        let guard = analysed("1%");
        // Errors before the run, on every node, are not the rollout's.
        guard.sample(servers(&[("h1", 100, 50), ("h2", 100, 50), ("h3", 100, 50)]));
        assert_eq!(guard.halts(true), None);
        guard.came_back("edge", "h1");
        guard.sample(servers(&[("h1", 150, 50), ("h2", 150, 50), ("h3", 150, 51)]));
        assert_eq!(guard.halts(false), None, "h1 answered no error since it came back");
        guard.sample(servers(&[("h1", 200, 60), ("h2", 200, 50), ("h3", 200, 51)]));
        let reason = guard.halts(false).expect("h1: 10 errors in 100 responses, the rest 1 in 200");
        assert!(reason.contains("the rolled nodes (h1) answered 10 errors in 100 responses (10.0%)"), "{reason}");
        let counts = guard.counts(false).balancer.unwrap();
        assert_eq!(
            (counts.rolled_responses, counts.rolled_errors, counts.rest_responses, counts.rest_errors),
            (100, 10, 200, 1)
        );
    }

    fn probing(guard: serde_json::Value) -> Guard {
        let settings: Settings = serde_json::from_value(guard).unwrap();
        Guard {
            inner: Arc::new(Inner { settings, state: Mutex::new(State::default()), stop: CancellationToken::new() }),
        }
    }

    #[test]
    fn a_failed_probe_before_the_first_batch_refuses_whatever_the_limit() {
        let guard = probing(serde_json::json!({"http": "http://127.0.0.1:1/", "max_failed": 5}));
        guard.count(Ok(()));
        guard.count(Err("HTTP 503 Service Unavailable".into()));
        let reason = guard.halts(true).expect("refused");
        assert!(reason.starts_with("the service is already failing: 1 of 2 probes"), "{reason}");
        assert!(reason.contains("(HTTP 503 Service Unavailable)"), "{reason}");
    }

    #[test]
    fn the_limits_count_over_the_run() {
        let guard = probing(serde_json::json!({"http": "http://127.0.0.1:1/", "max_failed": 1}));
        assert_eq!(guard.halts(true), None);
        guard.count(Err("timed out".into()));
        assert_eq!(guard.halts(false), None, "one failure is within `max_failed: 1`");
        guard.count(Err("timed out".into()));
        let reason = guard.halts(false).expect("two are not");
        assert!(
            reason.contains("2 of 2 probes of http://127.0.0.1:1/ failed, more than `max_failed: 1` (timed out)"),
            "{reason}"
        );

        let guard = probing(serde_json::json!({"http": "http://127.0.0.1:1/", "max_failed_rate": "10%"}));
        assert_eq!(guard.halts(true), None);
        for _ in 0..9 {
            guard.count(Ok(()));
        }
        guard.count(Err("cannot connect".into()));
        assert_eq!(guard.halts(false), None, "1 in 10 is not more than 10%");
        guard.count(Err("cannot connect".into()));
        assert!(guard.halts(false).unwrap().contains("more than `max_failed_rate: 10%`"));
        // Tripped stays tripped, whatever comes after.
        for _ in 0..100 {
            guard.count(Ok(()));
        }
        assert!(guard.halts(false).is_some());
        assert_eq!(guard.counts(false).total_probes, 111);
    }

    #[test]
    fn a_balancer_that_cannot_be_read_before_a_batch_halts() {
        let guard = analysed("1%");
        guard.sample(servers(&[("h1", 0, 0)]));
        guard.lock().read_error = Some("connection refused".into());
        guard.sample(servers(&[("h1", 5, 0)]));
        assert_eq!(guard.halts(true), None, "a read that succeeded since clears it");
        guard.lock().read_error = Some("connection refused".into());
        let reason = guard.halts(false).expect("halted");
        assert!(reason.contains("it cannot read the balancer `edge`: connection refused"), "{reason}");
    }

    #[test]
    fn a_pool_failing_everywhere_is_not_the_rolled_nodes_fault() {
        let guard = analysed("1%");
        guard.sample(servers(&[("h1", 0, 0), ("h2", 0, 0)]));
        guard.came_back("edge", "h1");
        guard.sample(servers(&[("h1", 100, 20), ("h2", 100, 20)]));
        assert_eq!(guard.halts(false), None);
    }
}
