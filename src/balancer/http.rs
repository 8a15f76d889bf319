//! `http` balancers: the plan's templated request per action; a 2xx answer is success,
//! and a 2xx answer to `status` means the node is up.

use std::time::Duration;

use super::{NodeState, Rotation};
use crate::graph::HttpCall;
use crate::text::error_chain;

/// One request never takes longer than this; the step's timeout bounds the rest.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Http {
    client: reqwest::Client,
}

impl Http {
    pub fn new() -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| format!("cannot set up an HTTP client: {}", error_chain(&e)))?;
        Ok(Http { client })
    }

    async fn call(&self, request: &HttpCall) -> Result<reqwest::Response, String> {
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| format!("`{}` is not an HTTP method", request.method))?;
        let mut builder = self.client.request(method, &request.url);
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        if let Some(body) = &request.body {
            builder = builder.body(body.clone());
        }
        builder.send().await.map_err(|e| format!("{} {}: {}", request.method, request.url, error_chain(&e)))
    }

    pub async fn send(&self, request: &HttpCall) -> Result<(), String> {
        let response = self.call(request).await?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        let body = body.trim();
        let shown: String = body.chars().take(300).collect();
        Err(format!(
            "{} {} answered {status}{}",
            request.method,
            request.url,
            if shown.is_empty() { String::new() } else { format!(": {shown}") }
        ))
    }

    pub async fn state(&self, request: &HttpCall) -> Result<NodeState, String> {
        let status = self.call(request).await?.status();
        let detail = format!("status answered {}", status.as_u16());
        Ok(if status.is_success() {
            NodeState { rotation: Rotation::In, up: Some(true), connections: None, detail }
        } else {
            NodeState { rotation: Rotation::Out, up: Some(false), connections: None, detail }
        })
    }
}
