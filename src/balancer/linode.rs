//! Linode NodeBalancers through the Linode API v4.
//!
//! A node is found as: the NodeBalancer by `label` (`GET /nodebalancers` with an
//! `X-Filter`), its config by `port` (`GET /nodebalancers/{id}/configs`), the node by
//! `address` (`GET …/configs/{cid}/nodes`). Those lookups are made once per run and
//! cached. A node's state is read from the config's node list, shared by every caller
//! for `LISTING_FRESH` and dropped on every change: however many accepts wait for their
//! node at once, the run lists the nodes at most every 400 ms — 150 requests a minute
//! per page, under Linode's published 200 a minute for paginated collections. Actions
//! `PUT` the node's `mode`.
//!
//! The token is sent as a Bearer header only: no message built here contains it, and
//! reqwest's errors show the URL, never headers.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::retry::{self, Failure, Notices};
use super::{NodeState, Rotation};
use crate::events::StepOutput;
use crate::model::{BalancerAction, LinodeBalancer};
use crate::text::error_chain;

const DEFAULT_API: &str = "https://api.linode.com/v4";
/// Linode's default `drain` length when the plan gives no `drain_timeout`.
const DEFAULT_DRAIN: Duration = Duration::from_secs(30);
/// One request never takes longer than this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Linode's largest page.
const PAGE_SIZE: u32 = 500;
/// How long one listing of the nodes answers every `state` call. Shorter than the UP
/// poll, so each poll sees a listing made after the one before.
const LISTING_FRESH: Duration = Duration::from_millis(400);

pub struct Linode {
    name: String,
    http: reqwest::Client,
    base: String,
    token_env: String,
    token: Option<String>,
    label: String,
    port: u16,
    drain: Duration,
    cache: tokio::sync::Mutex<Cache>,
    /// Held while listing, so callers that arrive meanwhile share the answer.
    listing: tokio::sync::Mutex<Option<Listing>>,
    /// Where a retry is announced.
    notices: Option<Notices>,
}

#[derive(Default)]
struct Cache {
    /// NodeBalancer id and config id.
    config: Option<(u64, u64)>,
    /// Node address → node id.
    nodes: Option<HashMap<String, u64>>,
}

/// The config's nodes as last listed, and when.
struct Listing {
    at: Instant,
    nodes: Vec<(String, NodeState)>,
}

impl Linode {
    pub fn new(name: &str, settings: &LinodeBalancer, notices: Option<Notices>) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("cannot set up an HTTP client: {}", error_chain(&e)))?;
        Ok(Linode {
            name: name.to_string(),
            http,
            base: settings.api_url.clone().unwrap_or_else(|| DEFAULT_API.into()).trim_end_matches('/').to_string(),
            token_env: settings.token_env.clone(),
            // Read once; apply refuses to start without it (exit 2), so `None` is only
            // seen by callers that skipped that check.
            token: std::env::var(&settings.token_env).ok().filter(|t| !t.is_empty()),
            label: settings.label.clone(),
            port: settings.port,
            drain: settings.drain_timeout.map_or(DEFAULT_DRAIN, |d| d.get()),
            cache: tokio::sync::Mutex::new(Cache::default()),
            listing: tokio::sync::Mutex::new(None),
            notices,
        })
    }

    fn who(&self) -> String {
        format!("linode `{}`", self.name)
    }

    /// One API call; a 429 (after its `Retry-After`), a 5xx or a timeout is retried
    /// with backoff (`retry`), anything else fails at once.
    async fn call(
        &self,
        method: Method,
        path: &str,
        filter: Option<&Value>,
        body: Option<&Value>,
    ) -> Result<Value, String> {
        let token = self.token.as_deref().ok_or_else(|| {
            format!(
                "{}: the environment variable `{}` is not set; help: export the Linode API token in it",
                self.who(),
                self.token_env
            )
        })?;
        let url = format!("{}{path}", self.base);
        let who = self.who();
        retry::with_retries(&who, self.notices.as_ref(), || self.attempt(&method, &url, path, token, filter, body))
            .await
            .map_err(|e| format!("{who}: {e}"))
    }

    async fn attempt(
        &self,
        method: &Method,
        url: &str,
        path: &str,
        token: &str,
        filter: Option<&Value>,
        body: Option<&Value>,
    ) -> Result<Value, Failure> {
        let mut request = self.http.request(method.clone(), url).bearer_auth(token);
        if let Some(filter) = filter {
            request = request.header("X-Filter", filter.to_string());
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| Failure::unanswered(&e, &format!("{method} {path}"), &retry::host_of(&self.base)))?;
        let status = response.status();
        if status.is_success() {
            return response
                .json::<Value>()
                .await
                .map_err(|e| Failure::fatal(format!("{method} {path}: unreadable answer: {}", error_chain(&e))));
        }
        let headers = response.headers().clone();
        let reasons = reasons(response.json::<Value>().await.ok());
        let failure = Failure::answered(status, format!("{method} {path} answered {status}{reasons}"), &headers);
        Err(if failure.transient { failure } else { Failure::fatal(format!("{}{}", failure.text, hint(status))) })
    }

    /// Every item of a paginated list, following `page` up to `pages`.
    async fn list(&self, path: &str, filter: Option<&Value>) -> Result<Vec<Value>, String> {
        let mut items = Vec::new();
        let mut page = 1u64;
        loop {
            let answer =
                self.call(Method::GET, &format!("{path}?page={page}&page_size={PAGE_SIZE}"), filter, None).await?;
            if let Some(data) = answer.get("data").and_then(Value::as_array) {
                items.extend(data.iter().cloned());
            }
            let pages = answer.get("pages").and_then(Value::as_u64).unwrap_or(1);
            if page >= pages {
                return Ok(items);
            }
            page += 1;
        }
    }

    /// The NodeBalancer and config ids, looked up once.
    async fn config(&self) -> Result<(u64, u64), String> {
        let mut cache = self.cache.lock().await;
        if let Some(ids) = cache.config {
            return Ok(ids);
        }
        let filter = serde_json::json!({ "label": self.label });
        let balancers = self.list("/nodebalancers", Some(&filter)).await?;
        // The filter is the server's business; the label check here keeps a proxy that
        // ignores it from picking another NodeBalancer.
        let Some(nb) = balancers.iter().find(|b| b.get("label").and_then(Value::as_str) == Some(&self.label)) else {
            return Err(format!(
                "{}: no NodeBalancer labelled `{}`; help: check `label` against the Linode Cloud Manager",
                self.who(),
                self.label
            ));
        };
        let nb_id = id_of(nb).ok_or_else(|| format!("{}: the NodeBalancer has no id", self.who()))?;
        let configs = self.list(&format!("/nodebalancers/{nb_id}/configs"), None).await?;
        let Some(config) = configs.iter().find(|c| c.get("port").and_then(Value::as_u64) == Some(self.port as u64))
        else {
            let ports: Vec<String> =
                configs.iter().filter_map(|c| c.get("port").and_then(Value::as_u64)).map(|p| p.to_string()).collect();
            return Err(format!(
                "{}: NodeBalancer `{}` has no config on port {}; help: its configs are on port{} {}",
                self.who(),
                self.label,
                self.port,
                if ports.len() == 1 { "" } else { "s" },
                if ports.is_empty() { "(none)".to_string() } else { ports.join(", ") }
            ));
        };
        let config_id = id_of(config).ok_or_else(|| format!("{}: the config has no id", self.who()))?;
        cache.config = Some((nb_id, config_id));
        Ok((nb_id, config_id))
    }

    fn nodes_path(nb: u64, config: u64) -> String {
        format!("/nodebalancers/{nb}/configs/{config}/nodes")
    }

    /// The node's id for `address` (`ip:port`), from the config's node list read once.
    async fn node(&self, address: &str) -> Result<(u64, u64, u64), String> {
        let (nb, config) = self.config().await?;
        let mut cache = self.cache.lock().await;
        if cache.nodes.is_none() {
            let nodes = self.list(&Self::nodes_path(nb, config), None).await?;
            let map = nodes
                .iter()
                .filter_map(|n| Some((n.get("address")?.as_str()?.to_string(), id_of(n)?)))
                .collect::<HashMap<_, _>>();
            cache.nodes = Some(map);
        }
        let nodes = cache.nodes.as_ref().map(|n| (n.get(address).copied(), n.keys().cloned().collect::<Vec<_>>()));
        match nodes {
            Some((Some(id), _)) => Ok((nb, config, id)),
            Some((None, mut known)) => {
                known.sort();
                Err(format!(
                    "{}: no node `{address}` in the port {} config of NodeBalancer `{}`; help: the step's `node` is the node's `ip:port`; known: {}",
                    self.who(),
                    self.port,
                    self.label,
                    if known.is_empty() { "(none)".to_string() } else { known.join(", ") }
                ))
            }
            None => Err(format!("{}: no node list", self.who())),
        }
    }

    async fn set_mode(&self, address: &str, mode: &str) -> Result<(), String> {
        let (nb, config, id) = self.node(address).await?;
        let path = format!("{}/{id}", Self::nodes_path(nb, config));
        let changed = self.call(Method::PUT, &path, None, Some(&serde_json::json!({ "mode": mode }))).await.map(|_| ());
        // A listing made before this change must not answer for after it.
        *self.listing.lock().await = None;
        changed
    }

    pub async fn set(
        &self,
        address: &str,
        action: BalancerAction,
        timeout: Duration,
        output: &mut StepOutput,
    ) -> Result<(), String> {
        match action {
            BalancerAction::Reject => self.set_mode(address, "reject").await,
            BalancerAction::Accept => self.set_mode(address, "accept").await,
            BalancerAction::Drain => {
                let started = Instant::now();
                self.set_mode(address, "drain").await?;
                // Linode reports no connection count: the drain lasts `drain_timeout`,
                // cut short by the step's timeout (minus time for the final call).
                let left = timeout.saturating_sub(started.elapsed() + Duration::from_secs(5));
                let wait = self.drain.min(left);
                output.note(format!("draining {address} for {}", humantime::format_duration(wait)));
                tokio::time::sleep(wait).await;
                // Like `reject` afterwards, so the node is as far out as after a reject.
                self.set_mode(address, "reject").await
            }
        }
    }

    pub async fn state(&self, address: &str) -> Result<NodeState, String> {
        let mut listing = self.listing.lock().await;
        let fresh = listing.as_ref().is_some_and(|l| l.at.elapsed() < LISTING_FRESH);
        if !fresh {
            *listing = Some(Listing { nodes: self.pool().await?, at: Instant::now() });
        }
        let nodes = listing.as_ref().map(|l| l.nodes.as_slice()).unwrap_or_default();
        match nodes.iter().find(|(a, _)| a == address) {
            Some((_, state)) => Ok(state.clone()),
            None => {
                drop(listing);
                // The standard "no node" error, with the nodes it knows.
                self.node(address).await?;
                Err(format!("{}: node `{address}` is no longer listed by NodeBalancer `{}`", self.who(), self.label))
            }
        }
    }

    pub async fn pool(&self) -> Result<Vec<(String, NodeState)>, String> {
        let (nb, config) = self.config().await?;
        let nodes = self.list(&Self::nodes_path(nb, config), None).await?;
        Ok(nodes.iter().filter_map(|n| Some((n.get("address")?.as_str()?.to_string(), node_state(n)))).collect())
    }
}

fn id_of(v: &Value) -> Option<u64> {
    v.get("id").and_then(Value::as_u64)
}

/// `mode` says whether Linode sends traffic; `status` (`UP`, `DOWN`, `unknown`) whether
/// its checks pass.
fn node_state(node: &Value) -> NodeState {
    let mode = node.get("mode").and_then(Value::as_str).unwrap_or("unknown");
    let status = node.get("status").and_then(Value::as_str).unwrap_or("unknown");
    let rotation = match mode {
        "accept" => Rotation::In,
        "reject" | "drain" | "backup" => Rotation::Out,
        _ => Rotation::Unknown,
    };
    let up = match status {
        "UP" => Some(true),
        "DOWN" => Some(false),
        _ => None,
    };
    NodeState { rotation, up, connections: None, detail: format!("mode {mode}, status {status}") }
}

/// Linode's error shape: `{"errors": [{"reason": "…", "field": "…"}]}`.
pub(crate) fn reasons(body: Option<Value>) -> String {
    let Some(errors) = body.as_ref().and_then(|b| b.get("errors")).and_then(Value::as_array) else {
        return String::new();
    };
    let texts: Vec<String> = errors
        .iter()
        .filter_map(|e| {
            let reason = e.get("reason")?.as_str()?;
            Some(match e.get("field").and_then(Value::as_str) {
                Some(field) => format!("{field}: {reason}"),
                None => reason.to_string(),
            })
        })
        .collect();
    if texts.is_empty() { String::new() } else { format!(": {}", texts.join("; ")) }
}

fn hint(status: StatusCode) -> &'static str {
    match status {
        StatusCode::UNAUTHORIZED => "; help: the token in `token_env` was refused: check it is valid and not expired",
        StatusCode::FORBIDDEN => "; help: the token needs read/write access to NodeBalancers",
        StatusCode::NOT_FOUND => "; help: check `label`, `port` and `api_url`",
        _ => "",
    }
}
