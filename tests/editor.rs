//! The editor experience, proven with the real client: the `yaml-language-server` that
//! VS Code, Neovim and others run, started over stdio, fed a plan with planrun's schema
//! modeline, asked what an editor asks.
//!
//! Needs Node.js and the server from the npm registry (`.ci/run` installs it into
//! `.ci/node`). Without them plain `cargo test` lists the test as ignored with the reason
//! (`build.rs` sets `no_yaml_language_server`); with `CI` set it runs and fails. Nothing reaches the network: the schema store is off, and every HTTP request the
//! server might make goes to a proxy that is a local tripwire, checked at the end.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const TIMEOUT: Duration = Duration::from_secs(30);

/// The server's entry point, installed by `.ci/run`.
fn server_script() -> PathBuf {
    Path::new(REPO).join(".ci/node/node_modules/yaml-language-server/bin/yaml-language-server")
}

/// Fails the test when Node.js or the server is missing: `build.rs` already made plain
/// `cargo test` ignore it then, so getting here without them (under CI, or `--ignored`)
/// is a set-up to fix, not a pass.
fn require_tools() {
    let node = Command::new("node").arg("--version").output();
    let reason = match node {
        Err(_) => "Node.js (`node`) is not installed".to_string(),
        Ok(out) if !out.status.success() => "`node --version` failed".to_string(),
        Ok(_) if !server_script().is_file() => format!(
            "yaml-language-server is not installed at {}: run `.ci/run`, or `npm install --prefix .ci/node yaml-language-server@1.19.2`",
            server_script().display()
        ),
        Ok(_) => return,
    };
    panic!("the editor test cannot run: {reason}");
}

/// A language server over stdio: Content-Length framed JSON-RPC, one reader thread.
struct Server {
    child: Child,
    stdin: ChildStdin,
    incoming: mpsc::Receiver<Value>,
    next_id: i64,
    /// `textDocument/publishDiagnostics` notifications, by document URI, latest last.
    diagnostics: Vec<(String, Value)>,
    settings: Value,
}

impl Server {
    fn start(settings: Value, proxy: &str) -> Server {
        let mut child = Command::new("node")
            .arg(server_script())
            .arg("--stdio")
            .env("HTTP_PROXY", proxy)
            .env("HTTPS_PROXY", proxy)
            .env("http_proxy", proxy)
            .env("https_proxy", proxy)
            .env_remove("NO_PROXY")
            .env_remove("no_proxy")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node starts the yaml-language-server");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, incoming) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            while let Some(message) = read_message(&mut reader) {
                if tx.send(message).is_err() {
                    break;
                }
            }
        });
        Server { child, stdin, incoming, next_id: 0, diagnostics: Vec::new(), settings }
    }

    fn send(&mut self, message: &Value) {
        let body = message.to_string();
        write!(self.stdin, "Content-Length: {}\r\n\r\n{body}", body.len()).expect("write to the server");
        self.stdin.flush().expect("flush to the server");
    }

    fn notify(&mut self, method: &str, params: Value) {
        self.send(&json!({ "jsonrpc": "2.0", "method": method, "params": params }));
    }

    /// Sends a request and waits for its response, answering what the server asks
    /// meanwhile (its configuration, capability registrations).
    fn request(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.send(&json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }));
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let message = self.next_message(deadline, method);
            if message.get("method").is_none() && message["id"] == json!(id) {
                assert!(message.get("error").is_none(), "{method} failed: {message}");
                return message["result"].clone();
            }
            self.handle(message);
        }
    }

    fn next_message(&mut self, deadline: Instant, waiting_for: &str) -> Value {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.incoming.recv_timeout(left) {
            Ok(message) => message,
            Err(_) => panic!("no answer from yaml-language-server to {waiting_for} within {TIMEOUT:?}"),
        }
    }

    fn handle(&mut self, message: Value) {
        let method = message["method"].as_str().unwrap_or_default().to_string();
        if method == "textDocument/publishDiagnostics" {
            let uri = message["params"]["uri"].as_str().unwrap_or_default().to_string();
            self.diagnostics.push((uri, message["params"]["diagnostics"].clone()));
            return;
        }
        let Some(id) = message.get("id").cloned() else { return };
        // A request from the server: answer so it does not wait on us.
        let result = match method.as_str() {
            "workspace/configuration" => {
                let items = message["params"]["items"].as_array().cloned().unwrap_or_default();
                Value::Array(
                    items
                        .iter()
                        .map(|item| {
                            self.settings
                                .get(item["section"].as_str().unwrap_or_default())
                                .cloned()
                                .unwrap_or(json!({}))
                        })
                        .collect(),
                )
            }
            _ => Value::Null,
        };
        self.send(&json!({ "jsonrpc": "2.0", "id": id, "result": result }));
    }

    /// Waits for diagnostics of `uri` that satisfy `done`, and returns them.
    fn diagnostics_for(&mut self, uri: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some((_, d)) = self.diagnostics.iter().rev().find(|(u, _)| u == uri)
                && done(d)
            {
                return d.clone();
            }
            let seen: Vec<&Value> = self.diagnostics.iter().filter(|(u, _)| u == uri).map(|(_, d)| d).collect();
            let message = self.next_message(deadline, &format!("diagnostics of {uri} (so far: {seen:?})"));
            self.handle(message);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_message(reader: &mut impl BufRead) -> Option<Value> {
    let mut length = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some(value) = line.strip_prefix("Content-Length:") {
            length = value.trim().parse::<usize>().ok();
        }
    }
    let mut body = vec![0; length?];
    reader.read_exact(&mut body).ok()?;
    serde_json::from_slice(&body).ok()
}

/// A local listener standing in for every HTTP(S) proxy: it counts who tried to go out.
fn tripwire() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the tripwire");
    let address = format!("http://{}", listener.local_addr().expect("address"));
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (address, hits)
}

fn labels(completion: &Value) -> Vec<String> {
    let items = completion.get("items").unwrap_or(completion);
    items.as_array().into_iter().flatten().filter_map(|i| i["label"].as_str().map(String::from)).collect()
}

/// Where `needle` ends in `text`, as an LSP position.
fn position_after(text: &str, needle: &str) -> Value {
    let offset = text.find(needle).unwrap_or_else(|| panic!("{needle:?} in the document")) + needle.len();
    let before = &text[..offset];
    let line = before.matches('\n').count();
    let character = before.len() - before.rfind('\n').map_or(0, |i| i + 1);
    json!({ "line": line, "character": character })
}

const PLAN: &str = "\
# yaml-language-server: $schema=../schemas/plan.schema.json
version: 1
application: shop
aplication: typo
servers:
  - { host: 10.0.0.2, roles: [app] }
rollout:
  select: { roles: [app] }
  steps:
    - name: restart
      
";

const BASE: &str = "\
# yaml-language-server: $schema=../schemas/plan.schema.json
version: 1
application: shop
rollout:
  select: { roles: [app] }
  stpes: []
  steps:
    - { name: restart, run: restart }
";

#[test]
#[cfg_attr(
    no_yaml_language_server,
    ignore = "needs Node.js and yaml-language-server 1.19.2 in .ci/node: `bash .ci/run` installs both"
)]
fn yaml_language_server_completes_explains_and_checks_plans() {
    require_tools();
    let (proxy, hits) = tripwire();
    let settings = json!({
        "yaml": {
            "validate": true,
            "hover": true,
            "completion": true,
            // The catalog at schemastore.org would be fetched otherwise.
            "schemaStore": { "enable": false },
            // The README's VS Code setting for a repository of plans, relative to the
            // workspace; this test's own documents are the ones it maps.
            "schemas": { "./schemas/plan.schema.json": ["plans/editor-mapped-*.yaml"] },
        },
        "http": { "proxy": proxy, "proxyStrictSSL": false },
    });
    let mut server = Server::start(settings, &proxy);

    // The documents live beside the real plans: the modeline resolves, relative to the
    // document, to the checked-in schemas/plan.schema.json.
    let root = format!("file://{REPO}");
    server.request(
        "initialize",
        json!({
            "processId": std::process::id(),
            "rootUri": root,
            "capabilities": {
                "workspace": { "configuration": true, "didChangeConfiguration": { "dynamicRegistration": true } },
                "textDocument": {
                    "completion": { "completionItem": { "snippetSupport": true } },
                    "hover": { "contentFormat": ["markdown", "plaintext"] },
                    "publishDiagnostics": {},
                },
            },
        }),
    );
    server.notify("initialized", json!({}));

    let uri = format!("{root}/plans/editor-test.yaml");
    server.notify(
        "textDocument/didOpen",
        json!({ "textDocument": { "uri": uri, "languageId": "yaml", "version": 1, "text": PLAN } }),
    );

    // A misspelt field: the schema's `additionalProperties: false`, at the field's line.
    let diagnostics = server.diagnostics_for(&uri, |d| d.to_string().contains("aplication"));
    let typo = diagnostics
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["message"].as_str().is_some_and(|m| m.contains("aplication")))
        .unwrap_or_else(|| panic!("no diagnostic for the misspelt `aplication`: {diagnostics}"));
    assert_eq!(typo["range"]["start"]["line"], 3, "{typo}");

    // Completion at the top level: the plan's fields.
    let at_top = json!({ "line": 11, "character": 0 });
    let top = labels(
        &server.request("textDocument/completion", json!({ "textDocument": { "uri": uri }, "position": at_top })),
    );
    for field in ["extends", "vars", "balancers", "before", "after", "ssh"] {
        assert!(top.contains(&field.to_string()), "top-level completion lacks `{field}`: {top:?}");
    }

    // Completion inside a step: the step kinds.
    let in_step = position_after(PLAN, "    - name: restart\n      ");
    let step = labels(
        &server.request("textDocument/completion", json!({ "textDocument": { "uri": uri }, "position": in_step })),
    );
    for kind in ["run", "local", "balancer", "wait"] {
        assert!(step.contains(&kind.to_string()), "completion in a step lacks `{kind}`: {step:?}");
    }

    // Hover on a field: its description from the Rust doc comment.
    let on_application = json!({ "line": 2, "character": 3 });
    let hover =
        server.request("textDocument/hover", json!({ "textDocument": { "uri": uri }, "position": on_application }));
    let text = hover["contents"]["value"].as_str().map(String::from).unwrap_or_else(|| hover["contents"].to_string());
    assert!(text.contains("The application's name, available to templates as"), "hover: {hover}");

    // A base plan (steps, no servers) is not flagged: the editor schema leaves `servers`
    // to planrun, which checks the merged plan.
    let base_uri = format!("{root}/plans/editor-test-base.yaml");
    server.notify(
        "textDocument/didOpen",
        json!({ "textDocument": { "uri": base_uri, "languageId": "yaml", "version": 1, "text": BASE } }),
    );
    // Its one mistake is found, so validation ran; nothing is said about `servers`.
    let base = server.diagnostics_for(&base_uri, |d| d.to_string().contains("stpes"));
    let messages: Vec<&str> = base.as_array().into_iter().flatten().filter_map(|d| d["message"].as_str()).collect();
    assert_eq!(messages.len(), 1, "{base}");
    assert!(messages[0].contains("stpes"), "{base}");

    // Without a modeline, the `yaml.schemas` setting maps the schema onto the file.
    let mapped_uri = format!("{root}/plans/editor-mapped-test.yaml");
    let mapped = BASE.replace("# yaml-language-server: $schema=../schemas/plan.schema.json\n", "");
    server.notify(
        "textDocument/didOpen",
        json!({ "textDocument": { "uri": mapped_uri, "languageId": "yaml", "version": 1, "text": mapped } }),
    );
    server.diagnostics_for(&mapped_uri, |d| d.to_string().contains("stpes"));

    // The schema's `$id` (https://planrun.dev/..., not reachable) is not fetched: the
    // modeline's file is used as it is.
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the language server tried to reach the network");

    // The tripwire does catch a request: a modeline with a URL goes through it.
    let remote_uri = format!("{root}/plans/editor-test-remote.yaml");
    let remote = BASE.replace("../schemas/plan.schema.json", "https://planrun.dev/schemas/plan.schema.json");
    server.notify(
        "textDocument/didOpen",
        json!({ "textDocument": { "uri": remote_uri, "languageId": "yaml", "version": 1, "text": remote } }),
    );
    // Whether a schema that cannot be fetched yields a diagnostic varies; the attempt
    // reaching the tripwire does not.
    let deadline = Instant::now() + TIMEOUT;
    while hits.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        if let Ok(message) = server.incoming.recv_timeout(Duration::from_millis(50)) {
            server.handle(message);
        }
    }
    assert!(hits.load(Ordering::SeqCst) > 0, "the tripwire saw no request for a remote schema");

    let _ = server.request("shutdown", Value::Null);
    server.notify("exit", Value::Null);
}
