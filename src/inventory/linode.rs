//! `planrun inventory linode --tag T`: the Linode instances carrying a tag, through the
//! API v4 (`GET /linode/instances` with `X-Filter: {"tags": T}`, every page), printed as a
//! `servers_from` list: the label as `name`, an address as `host`, the tags as `roles`,
//! and the private IPv4 address as `options.private_ip`.

use std::net::Ipv4Addr;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::balancer::linode::reasons;
use crate::balancer::retry::{self, Failure, Notices};
use crate::text::error_chain;

pub const DEFAULT_API: &str = "https://api.linode.com/v4";
const PAGE_SIZE: u32 = 500;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Which of an instance's addresses planrun connects to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Address {
    Public,
    Private,
}

pub struct Query {
    pub tag: String,
    pub api_url: String,
    pub token: String,
    pub address: Address,
    /// Roles for every server; without any, an instance's tags are its roles.
    pub roles: Vec<String>,
}

/// The servers, as JSON values in the plan's server shape, in the API's order (by id).
pub async fn servers(query: &Query, notices: Option<&Notices>) -> Result<Vec<Value>, String> {
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| format!("cannot set up an HTTP client: {}", error_chain(&e)))?;
    let base = query.api_url.trim_end_matches('/');
    let filter = json!({ "tags": query.tag }).to_string();
    let mut instances = Vec::new();
    let mut page = 1u64;
    loop {
        let path = format!("/linode/instances?page={page}&page_size={PAGE_SIZE}");
        let url = format!("{base}{path}");
        let answer =
            retry::with_retries("linode", notices, || attempt(&http, &url, &path, &query.token, &filter, base))
                .await
                .map_err(|e| format!("linode: {e}"))?;
        if let Some(data) = answer.get("data").and_then(Value::as_array) {
            instances.extend(data.iter().cloned());
        }
        let pages = answer.get("pages").and_then(Value::as_u64).unwrap_or(1);
        if page >= pages {
            break;
        }
        page += 1;
    }
    let mut servers = Vec::new();
    for instance in &instances {
        let tags: Vec<String> = strings(instance.get("tags"));
        // The filter is the server's business; checked again, a proxy that ignores it
        // cannot hand planrun another fleet.
        if !tags.contains(&query.tag) {
            continue;
        }
        let label = instance.get("label").and_then(Value::as_str).unwrap_or_default();
        let ipv4: Vec<Ipv4Addr> = strings(instance.get("ipv4")).iter().filter_map(|a| a.parse().ok()).collect();
        let private = ipv4.iter().find(|a| a.is_private());
        let public = ipv4.iter().find(|a| !a.is_private());
        let host = match query.address {
            Address::Public => public,
            Address::Private => private,
        };
        let Some(host) = host else {
            let which = if query.address == Address::Public { "public" } else { "private" };
            return Err(format!(
                "linode: instance `{label}` has no {which} IPv4 address; help: {}",
                if query.address == Address::Public {
                    "use `--address private` to connect over the private network"
                } else {
                    "add a private IP to it in the Cloud Manager, or use `--address public`"
                }
            ));
        };
        let roles = if query.roles.is_empty() { tags.clone() } else { query.roles.clone() };
        let mut options = serde_json::Map::new();
        if let Some(private) = private {
            options.insert("private_ip".into(), json!(private.to_string()));
        }
        if let Some(id) = instance.get("id") {
            options.insert("linode_id".into(), id.clone());
        }
        if let Some(region) = instance.get("region") {
            options.insert("region".into(), region.clone());
        }
        servers.push(json!({ "name": label, "host": host.to_string(), "roles": roles, "options": options }));
    }
    Ok(servers)
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map_or_else(Vec::new, |items| items.iter().filter_map(Value::as_str).map(String::from).collect())
}

async fn attempt(
    http: &reqwest::Client,
    url: &str,
    path: &str,
    token: &str,
    filter: &str,
    base: &str,
) -> Result<Value, Failure> {
    let response = http
        .request(Method::GET, url)
        .bearer_auth(token)
        .header("X-Filter", filter)
        .send()
        .await
        .map_err(|e| Failure::unanswered(&e, &format!("GET {path}"), &retry::host_of(base)))?;
    let status = response.status();
    if status.is_success() {
        return response
            .json::<Value>()
            .await
            .map_err(|e| Failure::fatal(format!("GET {path}: unreadable answer: {}", error_chain(&e))));
    }
    let headers = response.headers().clone();
    let reasons = reasons(response.json::<Value>().await.ok());
    let failure = Failure::answered(status, format!("GET {path} answered {status}{reasons}"), &headers);
    Err(if failure.transient {
        failure
    } else {
        let hint = match status.as_u16() {
            401 => "; help: the token was refused: check it is valid and not expired",
            403 => "; help: the token needs read access to Linodes",
            _ => "",
        };
        Failure::fatal(format!("{}{hint}", failure.text))
    })
}
