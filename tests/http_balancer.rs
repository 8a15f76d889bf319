//! `http` balancers against a small HTTP server in the test: templated method, URL,
//! headers and body per action, 2xx as success, `status` answering 2xx as "up".

mod common;
mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use common::{TempDir, planrun_in};

struct Server {
    url: String,
    /// `METHOD /path x-app-header body`, in order.
    log: Arc<Mutex<Vec<String>>>,
}

/// Nodes named in `in_rotation` start in rotation. `PUT /nodes/N` with body `off` takes
/// N out, `POST /nodes/N/on` puts it back, `GET /nodes/N` answers 200 while in rotation
/// and 503 otherwise; a node named `broken` answers 500 to everything, and one named
/// `flaky` answers 503 to its first two `PUT`s.
fn start(in_rotation: &[&str]) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let log = Arc::new(Mutex::new(Vec::new()));
    let pool: Arc<Mutex<BTreeSet<String>>> = Arc::new(Mutex::new(in_rotation.iter().map(|s| s.to_string()).collect()));
    let shared = log.clone();
    let mut flaky_puts = 0;
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let mut parts = line.split_whitespace();
            let (method, path) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
            let (mut length, mut app) = (0usize, String::new());
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                    break;
                }
                let (k, v) = h.split_once(':').unwrap_or(("", ""));
                match k.to_ascii_lowercase().as_str() {
                    "content-length" => length = v.trim().parse().unwrap_or(0),
                    "x-app" => app = v.trim().to_string(),
                    _ => {}
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let body = String::from_utf8_lossy(&body).to_string();
            shared.lock().unwrap().push(format!("{method} {path} {app} {body}").trim_end().to_string());
            let node = path.trim_start_matches("/nodes/").split('/').next().unwrap_or("").to_string();
            let mut pool = pool.lock().unwrap();
            let status = match (method.as_str(), path.ends_with("/on")) {
                _ if node == "broken" => "500 Internal Server Error",
                ("PUT", _) if node == "flaky" && flaky_puts < 2 => {
                    flaky_puts += 1;
                    "503 Service Unavailable"
                }
                ("PUT", _) if body == "off" => {
                    pool.remove(&node);
                    "200 OK"
                }
                ("POST", true) => {
                    pool.insert(node);
                    "200 OK"
                }
                ("GET", _) if pool.contains(&node) => "200 OK",
                ("GET", _) => "503 Service Unavailable",
                _ => "400 Bad Request",
            };
            let reply = "no such luck";
            let mut out = stream;
            let _ =
                write!(out, "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}", reply.len());
        }
    });
    Server { url, log }
}

fn plan(url: &str, hosts: &[&str]) -> String {
    let servers: String = hosts
        .iter()
        .map(|h| format!("  - {{ host: 127.0.0.1, name: {h}, transport: local, roles: [app] }}\n"))
        .collect();
    format!(
        r#"version: 1
application: shop
{lock}servers:
{servers}balancers:
  hook:
    kind: http
    reject: {{ method: PUT, url: "{url}/nodes/{{{{node}}}}", headers: {{ X-App: "{{{{application}}}}" }}, body: "off" }}
    accept: {{ url: "{url}/nodes/{{{{node}}}}/on" }}
    status: {{ method: GET, url: "{url}/nodes/{{{{node}}}}" }}
rollout:
  select: {{ roles: [app] }}
  batch_size: 1
  steps:
    - {{ name: reject, balancer: {{ use: hook, action: reject, node: "{{{{host.name}}}}" }} }}
    - {{ name: restart, run: "true" }}
    - {{ name: accept, balancer: {{ use: hook, action: accept, node: "{{{{host.name}}}}" }} }}
    - {{ name: up, wait: {{ balancer_up: hook, node: "{{{{host.name}}}}" }} }}
"#,
        lock = support::lock_line()
    )
}

#[test]
fn http_balancer_sends_the_rendered_requests_in_order() {
    let server = start(&["web1", "web2"]);
    let dir = TempDir::new("http-balancer");
    dir.write("plan.yaml", plan(&server.url, &["web1", "web2"]));
    let out = planrun_in(dir.path(), &["apply", "plan.yaml", "--yes"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let mut log = server.log.lock().unwrap().clone();
    // Pre-flight reads both nodes (read-only, side by side, so in either order), and so does
    // the budget check before each batch; then per host: reject, accept, and the status
    // reads of `wait_up` and of the `balancer_up` wait.
    log[..2].sort();
    log[2..4].sort();
    log[8..10].sort();
    assert_eq!(
        log,
        [
            "GET /nodes/web1",
            "GET /nodes/web2",
            "GET /nodes/web1",
            "GET /nodes/web2",
            "PUT /nodes/web1 shop off",
            "POST /nodes/web1/on",
            "GET /nodes/web1",
            "GET /nodes/web1",
            "GET /nodes/web1",
            "GET /nodes/web2",
            "PUT /nodes/web2 shop off",
            "POST /nodes/web2/on",
            "GET /nodes/web2",
            "GET /nodes/web2"
        ],
        "{log:#?}"
    );
}

#[test]
fn a_non_2xx_answer_fails_the_host_with_the_answer() {
    let server = start(&["broken", "web2"]);
    let dir = TempDir::new("http-balancer-500");
    dir.write("plan.yaml", plan(&server.url, &["broken", "web2"]));
    // `broken` cannot report its state either: pre-flight refuses; --force goes on to
    // show what the step says.
    let out = planrun_in(dir.path(), &["apply", "plan.yaml", "--yes"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("hook: broken: OUT of rotation (status answered 500)"), "{}", out.stderr);
    let forced = planrun_in(dir.path(), &["apply", "plan.yaml", "--yes", "--force"]);
    assert_eq!(forced.code, 1, "{}{}", forced.stdout, forced.stderr);
    let expected = format!(
        "broken failed at `reject`: PUT {}/nodes/broken answered 500 Internal Server Error: no such luck",
        server.url
    );
    assert!(forced.stdout.contains(&expected), "{}", forced.stdout);
    assert!(!server.log.lock().unwrap().iter().any(|l| l.contains("web2") && !l.starts_with("GET")));
}

/// Issue 17: a 503 can pass on another try; it is retried with backoff, and said so.
#[test]
fn a_503_is_retried_and_said_so() {
    // Two hosts: a plan of one skips its balancer steps.
    let server = start(&["flaky", "web2"]);
    let dir = TempDir::new("http-balancer-503");
    dir.write("plan.yaml", plan(&server.url, &["flaky", "web2"]));
    let out = planrun_in(dir.path(), &["apply", "plan.yaml", "--yes"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("http `hook`: PUT"), "{}", out.stderr);
    assert!(out.stderr.contains("answered 503 Service Unavailable: no such luck; retrying (1/5)"), "{}", out.stderr);
    assert!(out.stderr.contains("retrying (2/5)"), "{}", out.stderr);
    let puts = server.log.lock().unwrap().iter().filter(|l| l.starts_with("PUT /nodes/flaky")).count();
    assert_eq!(puts, 3);
}

/// A refused connection cannot pass on another try: the host fails at once, named.
#[test]
fn a_refused_connection_fails_the_step_at_once() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let dir = TempDir::new("http-balancer-refused");
    dir.write("plan.yaml", plan(&url, &["web1", "web2"]));
    let started = std::time::Instant::now();
    let out = planrun_in(dir.path(), &["apply", "plan.yaml", "--yes", "--force"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains(&format!("cannot connect to 127.0.0.1:{port}")), "{}", out.stdout);
    assert!(!out.stderr.contains("retrying"), "{}", out.stderr);
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "took {:?}", started.elapsed());
}
