//! A local server speaking the Linode API v4 NodeBalancer endpoints the way Linode
//! documents them, since the real API cannot be reached from the tests:
//!
//! - `GET /v4/nodebalancers` with `X-Filter: {"label": …}`, paginated (`page`, `pages`,
//!   `results`; this server returns at most `PAGE` items per page whatever `page_size`
//!   asks, so clients must follow pages);
//! - `GET /v4/nodebalancers/{id}/configs`, `GET …/configs/{cid}/nodes`,
//!   `GET …/nodes/{nid}`, `PUT …/nodes/{nid}` with `{"mode": …}`;
//! - Bearer auth (401 otherwise), errors as `{"errors": [{"reason": …}]}`;
//! - `GET /v4/linode/instances` with `X-Filter: {"tags": …}` (an instance matches when its
//!   `tags` hold the value), paginated the same way;
//! - injected faults: answer the next requests with a 429 (with `Retry-After`) or a 503.
//!
//! It binds 127.0.0.1:0 and answers one request per connection (`Connection: close`).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

/// Items per page, small so that pagination is exercised.
pub const PAGE: usize = 2;

pub struct Node {
    pub id: u64,
    pub address: String,
    pub mode: String,
    pub status: String,
}

pub struct State {
    pub token: String,
    /// (id, label); the NodeBalancer with id `nb_id` holds the configs below.
    pub balancers: Vec<(u64, String)>,
    pub nb_id: u64,
    /// (config id, port)
    pub configs: Vec<(u64, u16)>,
    /// Nodes of the config on port 80.
    pub nodes: Vec<Node>,
    /// Every request: `METHOD /path?query`.
    pub requests: Vec<String>,
    /// Every accepted mode change: `address mode`.
    pub changes: Vec<String>,
    /// Faults to answer the next requests with: (status, Retry-After).
    pub faults: VecDeque<(u16, Option<u64>)>,
    /// Every Authorization header seen, to check the token went only there.
    pub auth_headers: Vec<String>,
    /// A file to append each accepted mode change to, as `mode address`, so a test can
    /// read it in order with what its hosts record in the same file.
    pub record: Option<std::path::PathBuf>,
    /// Error reasons echo the token the request presented, as some APIs do.
    pub echo_token: bool,
    /// Every `PUT` is refused (400).
    pub refuse_puts: bool,
    /// Linode instances, as the API shows them (`id`, `label`, `tags`, `ipv4`, `region`).
    pub instances: Vec<Value>,
    /// Every `X-Filter` header seen, with its request: `PATH FILTER`.
    pub filters: Vec<String>,
}

pub struct Linode {
    pub state: Arc<Mutex<State>>,
    pub url: String,
}

pub const CONFIG_80: u64 = 7001;

impl Linode {
    /// A NodeBalancer `label` (among four others, so finding it takes pagination) with
    /// configs on ports 443 and 80, and a node `addr` in mode `accept`, status `UP`,
    /// per address on port 80.
    pub fn start(token: &str, label: &str, addresses: &[String]) -> Linode {
        let mut balancers: Vec<(u64, String)> = (1..=4).map(|i| (100 + i, format!("other-{i}"))).collect();
        balancers.push((4242, label.to_string()));
        let nodes = addresses
            .iter()
            .enumerate()
            .map(|(i, a)| Node { id: 9000 + i as u64, address: a.clone(), mode: "accept".into(), status: "UP".into() })
            .collect();
        let state = Arc::new(Mutex::new(State {
            token: token.into(),
            balancers,
            nb_id: 4242,
            configs: vec![(7000, 443), (CONFIG_80, 80)],
            nodes,
            requests: Vec::new(),
            changes: Vec::new(),
            faults: VecDeque::new(),
            auth_headers: Vec::new(),
            record: None,
            echo_token: false,
            refuse_puts: false,
            instances: Vec::new(),
            filters: Vec::new(),
        }));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the mock");
        let url = format!("http://{}/v4", listener.local_addr().unwrap());
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = shared.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &state);
                });
            }
        });
        Linode { state, url }
    }

    pub fn changes(&self) -> Vec<String> {
        self.state.lock().unwrap().changes.clone()
    }

    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn fault(&self, status: u16, retry_after: Option<u64>) {
        self.state.lock().unwrap().faults.push_back((status, retry_after));
    }

    pub fn record_to(&self, path: std::path::PathBuf) {
        self.state.lock().unwrap().record = Some(path);
    }

    /// Error reasons echo the presented token; with `refuse_puts`, every mode change
    /// is refused with such a reason.
    pub fn echo_token_in_errors(&self, refuse_puts: bool) {
        let mut s = self.state.lock().unwrap();
        s.echo_token = true;
        s.refuse_puts = refuse_puts;
    }

    /// Adds a Linode instance with these tags and IPv4 addresses; its id follows the last one's.
    pub fn add_instance(&self, label: &str, tags: &[&str], ipv4: &[&str]) {
        let mut s = self.state.lock().unwrap();
        let id = 31000 + s.instances.len() as u64;
        s.instances.push(json!({ "id": id, "label": label, "tags": tags, "ipv4": ipv4, "region": "eu-central",
                                 "status": "running", "type": "g6-standard-1" }));
    }

    pub fn set_mode(&self, address: &str, mode: &str) {
        let mut s = self.state.lock().unwrap();
        s.nodes.iter_mut().find(|n| n.address == address).expect("a node").mode = mode.into();
    }
}

fn serve(stream: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end().to_string();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let length: usize = header("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let (status, extra, answer) = respond(state, &method, &target, header("authorization"), header("x-filter"), &body);
    let text = answer.to_string();
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        503 => "Service Unavailable",
        _ => "Bad Request",
    };
    let mut out = stream;
    write!(
        out,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{text}",
        text.len()
    )?;
    out.flush()
}

fn error(status: u16, reason: &str) -> (u16, String, Value) {
    (status, String::new(), json!({ "errors": [{ "reason": reason }] }))
}

fn page(items: Vec<Value>, query: &str) -> Value {
    let page: usize =
        query.split('&').find_map(|kv| kv.strip_prefix("page=")).and_then(|p| p.parse().ok()).unwrap_or(1).max(1);
    let pages = items.len().div_ceil(PAGE).max(1);
    let data: Vec<Value> = items.iter().skip((page - 1) * PAGE).take(PAGE).cloned().collect();
    json!({ "data": data, "page": page, "pages": pages, "results": items.len() })
}

fn node_json(n: &Node) -> Value {
    json!({ "id": n.id, "address": n.address, "label": format!("node-{}", n.id), "mode": n.mode,
            "status": n.status, "weight": 100, "config_id": CONFIG_80, "nodebalancer_id": 4242 })
}

fn respond(
    state: &Mutex<State>,
    method: &str,
    target: &str,
    auth: Option<String>,
    filter: Option<String>,
    body: &[u8],
) -> (u16, String, Value) {
    let mut s = state.lock().unwrap();
    s.requests.push(format!("{method} {target}"));
    s.auth_headers.push(auth.clone().unwrap_or_default());
    if let Some(filter) = &filter {
        s.filters.push(format!("{target} {filter}"));
    }
    if let Some((status, retry)) = s.faults.pop_front() {
        let extra = retry.map(|r| format!("Retry-After: {r}\r\n")).unwrap_or_default();
        let reason = if status == 429 { "Too many requests" } else { "Service temporarily unavailable" };
        return (status, extra, json!({ "errors": [{ "reason": reason }] }));
    }
    let presented = auth.as_deref().unwrap_or("").trim_start_matches("Bearer ").to_string();
    if auth.as_deref() != Some(&format!("Bearer {}", s.token)) {
        return match s.echo_token {
            true => error(401, &format!("Invalid Token: {presented}")),
            false => error(401, "Invalid Token"),
        };
    }
    if s.refuse_puts && method == "PUT" {
        return error(400, &format!("Node updates are disabled for token {presented}"));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let segments: Vec<&str> = path.trim_start_matches("/v4/").split('/').collect();
    let nb = s.nb_id;
    match (method, segments.as_slice()) {
        ("GET", ["nodebalancers"]) => {
            let label = filter
                .and_then(|f| serde_json::from_str::<Value>(&f).ok())
                .and_then(|f| f.get("label").and_then(Value::as_str).map(String::from));
            let items = s
                .balancers
                .iter()
                .filter(|(_, l)| label.as_deref().is_none_or(|want| want == l))
                .map(|(id, l)| json!({ "id": id, "label": l, "region": "us-east" }))
                .collect();
            (200, String::new(), page(items, query))
        }
        ("GET", ["linode", "instances"]) => {
            let filter = filter.and_then(|f| serde_json::from_str::<Value>(&f).ok());
            let tag = filter.as_ref().and_then(|f| f.get("tags")).and_then(Value::as_str).map(String::from);
            let items = s
                .instances
                .iter()
                .filter(|i| {
                    tag.as_deref().is_none_or(|want| {
                        i["tags"].as_array().is_some_and(|tags| tags.iter().any(|t| t.as_str() == Some(want)))
                    })
                })
                .cloned()
                .collect();
            (200, String::new(), page(items, query))
        }
        ("GET", ["nodebalancers", id, "configs"]) if *id == nb.to_string() => {
            let items =
                s.configs.iter().map(|(id, port)| json!({ "id": id, "port": port, "protocol": "http" })).collect();
            (200, String::new(), page(items, query))
        }
        ("GET", ["nodebalancers", id, "configs", cid, "nodes"])
            if *id == nb.to_string() && *cid == CONFIG_80.to_string() =>
        {
            let items = s.nodes.iter().map(node_json).collect();
            (200, String::new(), page(items, query))
        }
        (m, ["nodebalancers", id, "configs", cid, "nodes", nid])
            if *id == nb.to_string() && *cid == CONFIG_80.to_string() =>
        {
            let Some(i) = s.nodes.iter().position(|n| n.id.to_string() == *nid) else {
                return error(404, "Not found");
            };
            if m == "PUT" {
                let Some(mode) = serde_json::from_slice::<Value>(body)
                    .ok()
                    .and_then(|b| b.get("mode").and_then(Value::as_str).map(String::from))
                    .filter(|m| matches!(m.as_str(), "accept" | "reject" | "drain" | "backup"))
                else {
                    return (
                        400,
                        String::new(),
                        json!({ "errors": [{ "field": "mode", "reason": "Must be one of accept, reject, drain, backup" }] }),
                    );
                };
                let change = format!("{} {mode}", s.nodes[i].address);
                if let Some(path) = &s.record {
                    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
                    let _ = writeln!(f, "{mode} {}", s.nodes[i].address);
                }
                s.changes.push(change);
                s.nodes[i].mode = mode;
            }
            (200, String::new(), node_json(&s.nodes[i]))
        }
        _ => error(404, "Not found"),
    }
}
