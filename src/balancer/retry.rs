//! Retries of balancer API calls: only what can pass on another try — a 429, a 5xx, a
//! timeout — with exponential backoff (backon), a 429's `Retry-After` honoured, and each
//! retry announced. A name that does not resolve or a refused connection fails at once:
//! waiting does not fix a wrong `api_url` or a network that is down.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use reqwest::StatusCode;

use crate::text::error_chain;

/// Where a client says what the operator should know while it waits (a retry).
pub type Notices = Arc<dyn Fn(String) + Send + Sync>;

/// Retries of one call after its first attempt.
pub const RETRIES: usize = 5;
/// The first pause between attempts; it doubles each time, up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// Retries of one call stop after this long in total.
const RETRY_TOTAL: Duration = Duration::from_secs(60);

/// Why one attempt failed, and whether another could pass.
#[derive(Debug)]
pub struct Failure {
    pub text: String,
    pub transient: bool,
    /// A 429's `Retry-After`.
    pub retry_after: Option<Duration>,
}

impl Failure {
    pub fn fatal(text: String) -> Self {
        Failure { text, transient: false, retry_after: None }
    }

    /// A request that got no answer. `what` is the call (`GET /nodebalancers`), `host`
    /// where it went.
    pub fn unanswered(error: &reqwest::Error, what: &str, host: &str) -> Self {
        let chain = error_chain(error);
        if error.is_timeout() {
            Failure {
                text: format!("{what}: {host} did not answer in time ({chain})"),
                transient: true,
                retry_after: None,
            }
        } else if error.is_connect() {
            Failure::fatal(format!(
                "{what}: cannot connect to {host}: {chain}; help: check the URL's host and port, and that it can be reached from here"
            ))
        } else {
            Failure::fatal(format!("{what}: {chain}"))
        }
    }

    /// An answer that is not a success: `text` says what was answered.
    pub fn answered(status: StatusCode, text: String, response_headers: &reqwest::header::HeaderMap) -> Self {
        let retry_after = (status == StatusCode::TOO_MANY_REQUESTS)
            .then(|| response_headers.get(reqwest::header::RETRY_AFTER))
            .flatten()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let transient = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
        Failure { text, transient, retry_after }
    }
}

/// Runs `attempt` until it succeeds, fails for good, or the retries are used up; each
/// retry is announced through `notices` as `WHO: WHY; retrying (2/5) in 0.5s…`. The
/// error is the last failure's text.
pub async fn with_retries<T, F, Fut>(who: &str, notices: Option<&Notices>, mut attempt: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let started = Instant::now();
    let attempts = AtomicUsize::new(0);
    let over_budget =
        |failure: &Failure| failure.retry_after.is_some_and(|wait| started.elapsed() + wait > RETRY_TOTAL);
    let backoff = ExponentialBuilder::default()
        .with_min_delay(FIRST_BACKOFF)
        .with_max_delay(MAX_BACKOFF)
        .with_max_times(RETRIES)
        .with_total_delay(Some(RETRY_TOTAL))
        .with_jitter();
    let result = (|| {
        attempts.fetch_add(1, Ordering::Relaxed);
        attempt()
    })
    .retry(backoff)
    .sleep(tokio::time::sleep)
    .when(|failure: &Failure| failure.transient && !over_budget(failure))
    .adjust(|failure: &Failure, delay| delay.map(|d| failure.retry_after.unwrap_or(d)))
    .notify(|failure: &Failure, delay| {
        if let Some(notices) = notices {
            notices(format!(
                "{who}: {}; retrying ({}/{RETRIES}) in {:.1}s…",
                failure.text,
                attempts.load(Ordering::Relaxed),
                delay.as_secs_f64()
            ));
        }
    })
    .await;
    result.map_err(|failure| {
        if over_budget(&failure) {
            format!("{}, and Retry-After asks for longer than the retry budget", failure.text)
        } else if failure.transient {
            format!("{} (gave up after {} attempts)", failure.text, attempts.load(Ordering::Relaxed))
        } else {
            failure.text
        }
    })
}

/// `host:port` of a URL, for messages: where a request went.
pub fn host_of(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => url.to_string(),
        },
        Err(_) => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_and_announced() {
        let said = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = said.clone();
        let notices: Notices = Arc::new(move |text| sink.lock().unwrap().push(text));
        let calls = Cell::new(0);
        let result = with_retries("api", Some(&notices), || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move {
                if n < 3 { Err(Failure { text: "503".into(), transient: true, retry_after: None }) } else { Ok(n) }
            }
        })
        .await;
        assert_eq!(result, Ok(3));
        let said = said.lock().unwrap();
        assert_eq!(said.len(), 2, "{said:?}");
        assert!(said[0].starts_with("api: 503; retrying (1/5) in "), "{said:?}");
        assert!(said[1].starts_with("api: 503; retrying (2/5) in "), "{said:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_fatal_failure_is_not_retried() {
        let calls = Cell::new(0);
        let result: Result<(), String> = with_retries("api", None, || {
            calls.set(calls.get() + 1);
            async { Err(Failure::fatal("refused".into())) }
        })
        .await;
        assert_eq!(result, Err("refused".into()));
        assert_eq!(calls.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_end_and_say_how_many_attempts_were_made() {
        let result: Result<(), String> = with_retries("api", None, || async {
            Err(Failure { text: "503".into(), transient: true, retry_after: None })
        })
        .await;
        assert_eq!(result, Err(format!("503 (gave up after {} attempts)", RETRIES + 1)));
    }
}
