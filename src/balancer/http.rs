//! `http` balancers: the plan's templated request per action; a 2xx answer is success,
//! and a 2xx answer to `status` means the node is up.

use std::time::Duration;

use super::retry::{self, Failure, Notices};
use super::{NodeState, Rotation};
use crate::graph::HttpCall;
use crate::text::error_chain;

/// One request never takes longer than this; the step's timeout bounds the rest.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Http {
    name: String,
    client: reqwest::Client,
    /// Where a retry is announced.
    notices: Option<Notices>,
}

impl Http {
    pub fn new(name: &str, notices: Option<Notices>) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| format!("cannot set up an HTTP client: {}", error_chain(&e)))?;
        Ok(Http { name: name.to_string(), client, notices })
    }

    async fn call(&self, request: &HttpCall) -> Result<reqwest::Response, Failure> {
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| Failure::fatal(format!("`{}` is not an HTTP method", request.method)))?;
        let mut builder = self.client.request(method, &request.url);
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        if let Some(body) = &request.body {
            builder = builder.body(body.clone());
        }
        let what = format!("{} {}", request.method, request.url);
        builder.send().await.map_err(|e| Failure::unanswered(&e, &what, &retry::host_of(&request.url)))
    }

    /// The action's request; a 429, a 5xx or a timeout is retried with backoff.
    pub async fn send(&self, request: &HttpCall) -> Result<(), String> {
        let who = format!("http `{}`", self.name);
        retry::with_retries(&who, self.notices.as_ref(), || self.send_once(request)).await
    }

    async fn send_once(&self, request: &HttpCall) -> Result<(), Failure> {
        let response = self.call(request).await?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let headers = response.headers().clone();
        let body = response.text().await.unwrap_or_default();
        let body = body.trim();
        let shown: String = body.chars().take(300).collect();
        let text = format!(
            "{} {} answered {status}{}",
            request.method,
            request.url,
            if shown.is_empty() { String::new() } else { format!(": {shown}") }
        );
        Err(Failure::answered(status, text, &headers))
    }

    /// A status request is asked once: a poll asks again soon anyway.
    pub async fn state(&self, request: &HttpCall) -> Result<NodeState, String> {
        let status = self.call(request).await.map_err(|f| f.text)?.status();
        let detail = format!("status answered {}", status.as_u16());
        Ok(if status.is_success() {
            NodeState { rotation: Rotation::In, up: Some(true), connections: None, detail }
        } else {
            NodeState { rotation: Rotation::Out, up: Some(false), connections: None, detail }
        })
    }
}
