//! HAProxy through its runtime API (a stats socket at `level admin`), over TCP or a unix
//! socket. One command per connection: the socket's non-interactive mode answers and
//! closes, so no prompt parsing is needed.
//!
//! Actions: `reject` = state `maint`, then up to 2 s for the requests already on the
//! node to finish; `drain` = state `drain`, then wait until `scur` is 0
//! (bounded by the step's timeout), then `maint`, so that after a drain the node is as
//! far out as after a reject and its restart raises no "server DOWN" alerts.
//!
//! `accept` is three commands, because HAProxy does not health-check a server in
//! maintenance: leaving `maint`, it reports the server UP at once on the strength of its
//! last check from before the restart, and sends requests to an app that may not listen
//! yet (measured: 503s under load). So `accept` = state `drain` (checks resume, still no
//! new connections), `health down` (forget the stale result), state `ready`: HAProxy
//! itself re-admits the node once `rise` checks pass, and `wait_up` waits for that.
//! Servers without checks (`no check`) are simply set `ready`.
//!
//! A `reject` and the `drain` of an `accept` read the node's own row on the connection
//! that changed it (`set server …; show stat BACKEND 4 SID`, HAProxy runs `;`-separated
//! commands in order): the state right after the change, without re-reading the whole
//! backend, so 20 rejects at once are 20 exchanges, not 20 listings of 200 servers one
//! after the other. The server ids (`sid`) come from the last listing of the backend.
//!
//! Other reads of a node's state come from `show stat` of the backend's servers, and one
//! answer serves every caller for `LISTING_FRESH`: a batch of 20 accepts polling every
//! 25 ms makes at most one read per 10 ms, not 800 a second. A listing read before a
//! node's last change does not answer for that node, so no caller sees a state from
//! before a change it made; it still answers for the others.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{NodeState, Rotation};
use crate::events::StepOutput;
use crate::model::{BalancerAction, HaproxyBalancer};

/// One runtime API exchange never takes longer than this.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a drain reads the node's open connections.
const DRAIN_POLL: Duration = Duration::from_millis(250);
/// How long a `reject` waits for the requests already on the node, and how often it looks.
const REJECT_GRACE: Duration = Duration::from_secs(2);
const REJECT_POLL: Duration = Duration::from_millis(50);
/// How long one `show stat` answers every `state` call.
const LISTING_FRESH: Duration = Duration::from_millis(10);
/// Runtime API answers are small; a bigger one is not HAProxy.
const MAX_ANSWER: u64 = 16 * 1024 * 1024;

enum Socket {
    Tcp(String),
    Unix(String),
}

pub struct Haproxy {
    name: String,
    socket: Socket,
    backend: String,
    /// The last `show stat` of the backend and when its read began; held while reading,
    /// so callers that arrive meanwhile share the answer.
    listing: tokio::sync::Mutex<Option<(Instant, Vec<Row>)>>,
    /// When each node's last change was answered: a listing read before it is out of date
    /// for that node.
    changed: std::sync::Mutex<HashMap<String, Instant>>,
    /// Each server's id in the backend, from the last listing.
    ids: std::sync::Mutex<HashMap<String, u32>>,
}

/// One server's row of `show stat`.
#[derive(Debug, Clone)]
struct Row {
    name: String,
    /// `sid`: the server's id in its backend.
    id: Option<u32>,
    /// Whether HAProxy health-checks it: `chkfail` is reported only for servers whose
    /// checks are enabled, whatever their state (the status says `no check` only while
    /// the server is ready, `DRAIN` and `MAINT` hide it).
    checked: bool,
    /// `tracked`: it follows another server's checks, and its health cannot be set.
    tracking: bool,
    state: NodeState,
}

impl Haproxy {
    pub fn new(name: &str, settings: &HaproxyBalancer) -> Result<Self, String> {
        let socket = if let Some(addr) = settings.socket.strip_prefix("tcp://") {
            Socket::Tcp(addr.to_string())
        } else if let Some(path) = settings.socket.strip_prefix("unix://") {
            Socket::Unix(path.to_string())
        } else {
            return Err(format!("`socket` is `{}`; help: write `tcp://HOST:PORT` or `unix:///PATH`", settings.socket));
        };
        check_name("backend", &settings.backend)?;
        Ok(Haproxy {
            name: name.to_string(),
            socket,
            backend: settings.backend.clone(),
            listing: tokio::sync::Mutex::new(None),
            changed: std::sync::Mutex::new(HashMap::new()),
            ids: std::sync::Mutex::new(HashMap::new()),
        })
    }

    async fn exchange(&self, command: &str) -> Result<String, String> {
        let run = async {
            let mut answer = String::new();
            let line = format!("{command}\n");
            match &self.socket {
                Socket::Tcp(addr) => {
                    let mut s = tokio::net::TcpStream::connect(addr.as_str()).await?;
                    s.write_all(line.as_bytes()).await?;
                    s.take(MAX_ANSWER).read_to_string(&mut answer).await?;
                }
                Socket::Unix(path) => {
                    let mut s = tokio::net::UnixStream::connect(path.as_str()).await?;
                    s.write_all(line.as_bytes()).await?;
                    s.take(MAX_ANSWER).read_to_string(&mut answer).await?;
                }
            }
            Ok::<_, std::io::Error>(answer)
        };
        let where_ = match &self.socket {
            Socket::Tcp(a) => format!("tcp://{a}"),
            Socket::Unix(p) => format!("unix://{p}"),
        };
        match tokio::time::timeout(EXCHANGE_TIMEOUT, run).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(format!(
                "haproxy `{}`: runtime API at {where_}: {e}; help: check `socket` and that haproxy's `stats socket` is at `level admin`",
                self.name
            )),
            Err(_) => Err(format!("haproxy `{}`: runtime API at {where_} did not answer within 10s", self.name)),
        }
    }

    async fn set_state(&self, node: &str, state: &str) -> Result<(), String> {
        check_name("node", node)?;
        self.commands_ok(node, &[format!("set server {}/{node} state {state}", self.backend)]).await
    }

    /// `set` commands on `node`, on one connection: success is an empty answer to each;
    /// anything else is HAProxy saying why not (the first such answer is the error).
    async fn commands_ok(&self, node: &str, commands: &[String]) -> Result<(), String> {
        let answer = self.exchange(&commands.join("; ")).await;
        self.note_change(node);
        self.answers_ok(commands, &answer?)
    }

    /// HAProxy answers `;`-separated commands one after the other, each answer ending
    /// with an empty line (a `set` that worked answers nothing but that line).
    fn answers_ok(&self, commands: &[String], answer: &str) -> Result<(), String> {
        let mut lines = answer.lines();
        for command in commands {
            let said: Vec<&str> = lines.by_ref().take_while(|l| !l.trim().is_empty()).collect();
            let said = said.join("\n");
            let said = said.trim();
            if !said.is_empty() {
                return Err(format!(
                    "haproxy `{}`: `{command}`: {said}; help: the step's `node` is the server's name in backend `{}`",
                    self.name, self.backend
                ));
            }
        }
        Ok(())
    }

    /// An answer read before this moment no longer answers for `node`.
    fn note_change(&self, node: &str) {
        if let Ok(mut changed) = self.changed.lock() {
            changed.insert(node.to_string(), Instant::now());
        }
    }

    /// `set server … state STATE` and the node's row right after it, on one connection.
    async fn set_and_read(&self, node: &str, state: &str) -> Result<Row, String> {
        check_name("node", node)?;
        let command = format!("set server {}/{node} state {state}", self.backend);
        let Some(id) = self.id_of(node).await else {
            // Not in the last listing: the change alone, whose answer says what is wrong.
            self.commands_ok(node, std::slice::from_ref(&command)).await?;
            return self.row(node).await;
        };
        let answer = self.exchange(&format!("{command}; show stat {} 4 {id}", self.backend)).await;
        self.note_change(node);
        let answer = answer?;
        let (said, csv) = match answer.find("# pxname") {
            Some(at) => answer.split_at(at),
            None => (answer.as_str(), ""),
        };
        self.answers_ok(std::slice::from_ref(&command), said)?;
        match self.parse_rows(csv).ok().and_then(|rows| rows.into_iter().find(|r| r.name == node)) {
            Some(row) => Ok(row),
            // The id is now another server's (servers added or removed at run time).
            None => self.row(node).await,
        }
    }

    /// The server id of `node`, from the last listing (one is read if there was none).
    async fn id_of(&self, node: &str) -> Option<u32> {
        let known = |ids: &std::sync::Mutex<HashMap<String, u32>>| ids.lock().ok().and_then(|i| i.get(node).copied());
        if let Some(id) = known(&self.ids) {
            return Some(id);
        }
        let listed = self.ids.lock().map(|i| !i.is_empty()).unwrap_or(false);
        if !listed {
            let _ = self.rows().await;
        }
        known(&self.ids)
    }

    pub async fn set(
        &self,
        node: &str,
        action: BalancerAction,
        timeout: Duration,
        output: &mut StepOutput,
    ) -> Result<(), String> {
        match action {
            BalancerAction::Reject => {
                let started = std::time::Instant::now();
                let mut open = self.set_and_read(node, "maint").await?.state.connections.unwrap_or(0);
                // Requests already sent to the node still run; the next step usually stops
                // the app, which would cut them. Give them a moment (not a drain: a
                // long-lived connection does not hold a reject up).
                let grace = timeout.min(REJECT_GRACE);
                while open > 0 && started.elapsed() + REJECT_POLL < grace {
                    tokio::time::sleep(REJECT_POLL).await;
                    open = self.row(node).await?.state.connections.unwrap_or(0);
                }
                Ok(())
            }
            BalancerAction::Accept => {
                let row = self.set_and_read(node, "drain").await?;
                let ready = format!("set server {}/{node} state ready", self.backend);
                if !row.checked {
                    return self.commands_ok(node, &[ready]).await;
                }
                let health = format!("set server {}/{node} health down", self.backend);
                if row.tracking {
                    // HAProxy refuses the health of a tracking server: said before `ready`.
                    self.commands_ok(node, &[health]).await?;
                    return self.commands_ok(node, &[ready]).await;
                }
                self.commands_ok(node, &[health, ready]).await
            }
            BalancerAction::Drain => {
                self.set_state(node, "drain").await?;
                let started = std::time::Instant::now();
                let mut said = None;
                loop {
                    let state = self.state(node).await?;
                    let open = state.connections.unwrap_or(0);
                    if open == 0 {
                        break;
                    }
                    if said != Some(open) {
                        output.note(format!("draining {node}: {open} connection(s) open"));
                        said = Some(open);
                    }
                    if started.elapsed() + DRAIN_POLL >= timeout {
                        return Err(format!(
                            "haproxy `{}`: {node} still had {open} connection(s) after {}; it is left in state drain",
                            self.name,
                            humantime::format_duration(timeout)
                        ));
                    }
                    tokio::time::sleep(DRAIN_POLL).await;
                }
                self.set_state(node, "maint").await
            }
        }
    }

    pub async fn state(&self, node: &str) -> Result<NodeState, String> {
        Ok(self.row(node).await?.state)
    }

    /// `node`'s row, from a listing read since its last change and at most
    /// `LISTING_FRESH` ago.
    async fn row(&self, node: &str) -> Result<Row, String> {
        check_name("node", node)?;
        let changed = self.changed.lock().ok().and_then(|c| c.get(node).copied());
        let mut listing = self.listing.lock().await;
        let usable = |read: Instant| read.elapsed() < LISTING_FRESH && changed.is_none_or(|c| read >= c);
        if listing.as_ref().is_none_or(|(read, _)| !usable(*read)) {
            let read = Instant::now();
            *listing = Some((read, self.rows().await?));
        }
        let rows = listing.as_ref().map(|(_, rows)| rows.as_slice()).unwrap_or_default();
        match rows.iter().find(|r| r.name == node) {
            Some(row) => Ok(row.clone()),
            None => Err(format!(
                "haproxy `{}` has no server `{node}` in backend `{}`; help: the step's `node` is the server's name in the backend",
                self.name, self.backend
            )),
        }
    }

    /// Every server of the backend, from `show stat BACKEND 4 -1`.
    pub async fn pool(&self) -> Result<Vec<(String, NodeState)>, String> {
        Ok(self.rows().await?.into_iter().map(|r| (r.name, r.state)).collect())
    }

    /// Every server's row, from `show stat BACKEND 4 -1` (its servers only); keeps their ids.
    async fn rows(&self) -> Result<Vec<Row>, String> {
        let answer = self.exchange(&format!("show stat {} 4 -1", self.backend)).await?;
        let rows = self.parse_rows(&answer)?;
        if let Ok(mut ids) = self.ids.lock() {
            *ids = rows.iter().filter_map(|r| Some((r.name.clone(), r.id?))).collect();
        }
        Ok(rows)
    }

    /// `show stat` CSV with its `# pxname,svname,…` header.
    fn parse_rows(&self, answer: &str) -> Result<Vec<Row>, String> {
        if answer.trim_start().starts_with("No such proxy") {
            return Err(format!("haproxy `{}` has no backend `{}`; help: check `backend`", self.name, self.backend));
        }
        let mut lines = answer.lines();
        let header = lines
            .next()
            .and_then(|h| h.strip_prefix("# "))
            .ok_or_else(|| format!("haproxy `{}`: `show stat` answered something else than CSV", self.name))?;
        let columns: Vec<&str> = header.split(',').collect();
        let col = |name: &str| columns.iter().position(|c| *c == name);
        let (Some(px), Some(sv), Some(scur), Some(status)) = (col("pxname"), col("svname"), col("scur"), col("status"))
        else {
            return Err(format!("haproxy `{}`: `show stat` lacks pxname, svname, scur or status", self.name));
        };
        let (sid, chkfail, tracked) = (col("sid"), col("chkfail"), col("tracked"));
        let mut rows = Vec::new();
        for line in lines {
            let fields: Vec<&str> = line.split(',').collect();
            if fields.get(px) != Some(&self.backend.as_str()) {
                continue;
            }
            let Some(name) = fields.get(sv) else { continue };
            if matches!(*name, "FRONTEND" | "BACKEND") {
                continue;
            }
            let field = |i: Option<usize>| i.and_then(|i| fields.get(i)).copied().unwrap_or("");
            let status = field(Some(status));
            let connections = field(Some(scur)).parse().ok();
            rows.push(Row {
                name: name.to_string(),
                id: field(sid).parse().ok(),
                // Without the column (not HAProxy 1.5+), the status is all there is to go by.
                checked: match chkfail {
                    Some(_) => !field(chkfail).is_empty(),
                    None => status != "no check",
                },
                tracking: !field(tracked).is_empty(),
                state: parse_status(status, connections),
            });
        }
        Ok(rows)
    }
}

/// The responses one server sent, from `show stat`'s `hrsp_*` counters (HTTP mode only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Responses {
    /// Every response: `hrsp_1xx` to `hrsp_5xx` and `hrsp_other`.
    pub total: u64,
    /// `hrsp_5xx`.
    pub errors: u64,
}

impl Responses {
    /// What was sent since `earlier` (a counter reset by a reload counts from zero).
    pub fn since(self, earlier: Responses) -> Responses {
        if self.total < earlier.total || self.errors < earlier.errors {
            return self;
        }
        Responses { total: self.total - earlier.total, errors: self.errors - earlier.errors }
    }
}

impl Haproxy {
    /// Every server of the backend with the responses it sent. A backend whose servers
    /// have no `hrsp_*` values (not `mode http`) is an error: there is nothing to compare.
    pub async fn responses(&self) -> Result<Vec<(String, Responses)>, String> {
        let answer = self.exchange(&format!("show stat {} 4 -1", self.backend)).await?;
        parse_responses(&self.name, &self.backend, &answer)
    }
}

fn parse_responses(balancer: &str, backend: &str, answer: &str) -> Result<Vec<(String, Responses)>, String> {
    if answer.trim_start().starts_with("No such proxy") {
        return Err(format!("haproxy `{balancer}` has no backend `{backend}`; help: check `backend`"));
    }
    let mut lines = answer.lines();
    let header = lines
        .next()
        .and_then(|h| h.strip_prefix("# "))
        .ok_or_else(|| format!("haproxy `{balancer}`: `show stat` answered something else than CSV"))?;
    let columns: Vec<&str> = header.split(',').collect();
    let col = |name: &str| columns.iter().position(|c| *c == name);
    let (Some(px), Some(sv)) = (col("pxname"), col("svname")) else {
        return Err(format!("haproxy `{balancer}`: `show stat` lacks pxname or svname"));
    };
    let counted: Vec<usize> = ["hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other"]
        .iter()
        .filter_map(|c| col(c))
        .collect();
    let errors = col("hrsp_5xx");
    let mut servers = Vec::new();
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        let Some(name) = fields.get(sv) else { continue };
        if fields.get(px) != Some(&backend) || matches!(*name, "FRONTEND" | "BACKEND") {
            continue;
        }
        let number = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
        let (Some(errors), true) = (errors.and_then(number), counted.iter().all(|i| number(*i).is_some())) else {
            return Err(format!(
                "haproxy `{balancer}` reports no HTTP responses for server `{name}` of `{backend}` (its `hrsp_*` counters are empty): the analysis needs `mode http`"
            ));
        };
        let total = counted.iter().filter_map(|i| number(*i)).sum();
        servers.push((name.to_string(), Responses { total, errors }));
    }
    Ok(servers)
}

/// HAProxy's `status` column: `UP`, `DOWN`, `MAINT`, `DRAIN`, `no check`, with
/// transitions as `UP 1/2` (going down) and `DOWN 1/2` (coming up), and
/// `MAINT (via b/s)` for tracked servers.
fn parse_status(status: &str, connections: Option<u64>) -> NodeState {
    let detail = status.to_string();
    let (rotation, up) = if status.starts_with("MAINT") || status.starts_with("DRAIN") {
        (Rotation::Out, None)
    } else if status.starts_with("UP") {
        (Rotation::In, Some(true))
    } else if status.starts_with("DOWN") || status.starts_with("NOLB") {
        (Rotation::In, Some(false))
    } else if status == "no check" {
        (Rotation::In, None)
    } else {
        (Rotation::Unknown, None)
    };
    NodeState { rotation, up, connections, detail }
}

/// Names go into a runtime API command line: a space or newline there would be another
/// command.
fn check_name(what: &str, name: &str) -> Result<(), String> {
    if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')) {
        Ok(())
    } else {
        Err(format!(
            "haproxy {what} `{name}` is not a valid name; help: HAProxy names use letters, digits, `_`, `-`, `.` and `:`"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `show stat` as HAProxy 2.x writes it, cut to the columns that matter here.
    #[test]
    fn responses_sum_every_hrsp_counter_and_count_5xx_as_errors() {
        let answer = "# pxname,svname,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,status\n\
                      app,h1,0,90,2,3,5,0,UP\n\
                      app,h2,0,100,0,0,0,0,UP\n\
                      app,BACKEND,0,190,2,3,5,0,UP\n";
        let servers = parse_responses("edge", "app", answer).unwrap();
        assert_eq!(
            servers,
            [
                ("h1".to_string(), Responses { total: 100, errors: 5 }),
                ("h2".to_string(), Responses { total: 100, errors: 0 })
            ]
        );
        assert_eq!(
            Responses { total: 150, errors: 9 }.since(Responses { total: 100, errors: 5 }),
            Responses { total: 50, errors: 4 }
        );
        // A reload resets the counters: what came after counts from zero.
        assert_eq!(
            Responses { total: 7, errors: 1 }.since(Responses { total: 100, errors: 5 }),
            Responses { total: 7, errors: 1 }
        );
    }

    /// `mode tcp` leaves the `hrsp_*` columns empty: nothing to compare, said as such.
    #[test]
    fn a_tcp_backend_reports_no_responses() {
        let answer =
            "# pxname,svname,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,status\napp,h1,,,,,,,UP\n";
        let error = parse_responses("edge", "app", answer).unwrap_err();
        assert!(error.contains("the analysis needs `mode http`"), "{error}");
    }

    #[test]
    fn statuses_map_to_rotation() {
        assert_eq!(parse_status("MAINT", Some(0)).rotation, Rotation::Out);
        assert_eq!(parse_status("DRAIN", Some(3)).connections, Some(3));
        assert_eq!(parse_status("UP 1/2", None).up, Some(true));
        assert_eq!(parse_status("DOWN 1/2", None).up, Some(false));
        assert_eq!(parse_status("no check", None).rotation, Rotation::In);
    }

    fn edge() -> Haproxy {
        let settings = HaproxyBalancer { socket: "tcp://127.0.0.1:9".into(), backend: "app".into() };
        Haproxy::new("edge", &settings).unwrap()
    }

    /// Rows as HAProxy 2.6 writes them: `chkfail` is empty for a server without health
    /// checks in every state, while its status says `no check` only when it is ready.
    #[test]
    fn rows_tell_checked_servers_whatever_their_state() {
        let answer = "# pxname,svname,scur,status,chkfail,sid,tracked\n\
                      app,h1,0,MAINT,1,1,\n\
                      app,h2,2,DRAIN,,2,\n\
                      app,h3,0,no check,,3,\n\
                      app,BACKEND,2,UP,,0,\n";
        let rows = edge().parse_rows(answer).unwrap();
        let seen: Vec<(&str, Option<u32>, bool, Option<u64>)> =
            rows.iter().map(|r| (r.name.as_str(), r.id, r.checked, r.state.connections)).collect();
        assert_eq!(
            seen,
            [("h1", Some(1), true, Some(0)), ("h2", Some(2), false, Some(2)), ("h3", Some(3), false, Some(0))]
        );
    }

    /// `;`-separated commands answer one after the other, each answer ending with an
    /// empty line: an error is the answer of the command that gave it.
    #[test]
    fn answers_of_commands_on_one_line_are_told_apart() {
        let commands = ["set server app/h1 health down".to_string(), "set server app/h1 state ready".to_string()];
        assert!(edge().answers_ok(&commands, "\n\n").is_ok());
        let error = edge().answers_ok(&commands, "\nNo such server.\n\n").unwrap_err();
        assert!(error.contains("`set server app/h1 state ready`: No such server.;"), "{error}");
    }

    #[test]
    fn names_cannot_smuggle_commands() {
        assert!(check_name("node", "h1").is_ok());
        assert!(check_name("node", "h1\nshutdown frontend fe").is_err());
        assert!(check_name("node", "a b").is_err());
    }
}
